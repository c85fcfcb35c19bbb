namespace NativeContrast.Tests.Cuda;

using System.Reflection;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>The host logic of the interop layer that decides what a GPU failure looks like, run without a GPU.</summary>
public class InteropTests
{
    [Test]
    public void LaunchHistoryKeepsTheLastLaunchesOldestFirst()
    {
        var history = new LaunchHistory(3);
        Assert.That(history.Recent(), Is.Empty);
        for (var i = 1; i <= 5; i++)
        {
            history.Record($"k{i}", new Dim3((uint)i, 2));
        }
        Assert.That(history.Recent(), Is.EqualTo(new[] { "k3 grid (3, 2, 1)", "k4 grid (4, 2, 1)", "k5 grid (5, 2, 1)" }));
    }

    [Test]
    public void AFaultThatLosesTheContextSaysSoNamesTheLastKernelsAndHowToFindTheCulprit()
    {
        string[] recent = ["nc_contrastive_prepare_operand grid (64, 1, 1)", "nc_contrastive_ntxent_backward_fp32_d128 grid (8, 4, 1)"];
        var detail = CudaCheck.StreamErrorDetail("an illegal memory access was encountered", 700, recent, synchronizedLaunches: false);
        Assert.That(detail, Does.StartWith("an illegal memory access was encountered; the CUDA context is lost"));
        Assert.That(detail, Does.Contain("oldest first: nc_contrastive_prepare_operand grid (64, 1, 1), nc_contrastive_ntxent_backward_fp32_d128 grid (8, 4, 1)"));
        Assert.That(detail, Does.Contain("NATIVECONTRAST_SYNC_LAUNCH=1").And.Not.Contain("\n"));

        var synchronized = CudaCheck.StreamErrorDetail("unspecified launch failure", 719, recent, synchronizedLaunches: true);
        Assert.That(synchronized, Does.Contain("the CUDA context is lost").And.Not.Contain("NATIVECONTRAST_SYNC_LAUNCH"), "with synchronised launches the exception already names the kernel");
    }

    [TestCase(1, TestName = "invalid value")]
    [TestCase(2, TestName = "out of memory")]
    [TestCase(720, TestName = "cooperative launch too large")]
    public void AnErrorThatKeepsTheContextIsReportedAsTheDriverSaysIt(int result)
    {
        Assert.That(CudaCheck.IsContextLost(result), Is.False);
        Assert.That(CudaCheck.StreamErrorDetail("the driver's text", result, ["k grid (1, 1, 1)"], synchronizedLaunches: false), Is.EqualTo("the driver's text"));
    }

    [TestCase(700)]
    [TestCase(715)]
    [TestCase(716)]
    [TestCase(719)]
    public void KernelFaultsLoseTheContext(int result) => Assert.That(CudaCheck.IsContextLost(result), Is.True);

    [TestCase(0, false, false, TestName = "a free that worked")]
    [TestCase(1, false, true, TestName = "a free of a bad pointer is reported")]
    [TestCase(700, false, true, TestName = "a free is the first call to see a lost context: reported")]
    [TestCase(700, true, false, TestName = "a free after the lost context was reported: quiet")]
    public void AFailedFreeIsReportedUnlessItRepeatsAReportedLoss(int result, bool lossReported, bool reported) =>
        Assert.That(CudaCheck.FreeFailureToReport(result, lossReported), Is.EqualTo(reported));

    [TestCase(720, true, TestName = "too large for the SMs left to this context")]
    [TestCase(801, true, TestName = "not supported (MPS)")]
    [TestCase(800, true, TestName = "not permitted")]
    [TestCase(700, false, TestName = "a fault is not a refusal")]
    [TestCase(1, false, TestName = "invalid value is a bug, not a refusal")]
    public void SinkhornFallsBackToMultiPassOnlyWhenTheCooperativeLaunchIsRefused(int result, bool refused) =>
        Assert.That(CudaBackend.CooperativeLaunchRefused(result), Is.EqualTo(refused));

    [Test]
    public void CublasFallsBackToTheNextVersionWhenCreateFails()
    {
        // libcublas.so.13 loads but its cublasCreate fails (a driver too old for it); .12 is missing; .11 works.
        string[] candidates = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"];
        var handles = new Dictionary<string, IntPtr> { ["libcublas.so.13"] = 13, ["libcublas.so.11"] = 11 };
        var (chosen, handle, reasons) = NativeLibraries.FirstWorking(
            candidates,
            file => handles.GetValueOrDefault(file),
            library => library == 13 ? "cublasCreate returned status 1" : null);
        Assert.That((chosen, handle), Is.EqualTo((2, (IntPtr)11)));
        Assert.That(reasons, Is.EqualTo("libcublas.so.13: cublasCreate returned status 1; libcublas.so.12: not found"));
    }

    [Test]
    public void CublasNamesEveryCandidateWhenNoneInitialises()
    {
        var (chosen, handle, reasons) = NativeLibraries.FirstWorking(
            ["libcublas.so.13", "libcublas.so.12"], _ => 1, _ => "cublasCreate returned status 3");
        Assert.That((chosen, handle), Is.EqualTo((-1, IntPtr.Zero)));
        Assert.That(reasons, Is.EqualTo("libcublas.so.13: cublasCreate returned status 3; libcublas.so.12: cublasCreate returned status 3"));
    }

    [Test]
    public void CheckDeviceComparesTheOrdinal()
    {
        var onGpu1 = new Tensor(new FakeDeviceStorage(4, ordinal: 1), new TensorShape(4), name: "weights");
        var gpu0 = FakeGpuBackend.Create(ordinal: 0);
        var e = Assert.Throws<ArgumentException>(() => Check.Device(onGpu1, gpu0));
        Assert.That(e!.Message, Does.Contain("weights [4] lives on cuda:1, this backend computes on cuda:0"));
        Assert.DoesNotThrow(() => Check.Device(onGpu1, FakeGpuBackend.Create(ordinal: 1)));

        using var cpu = new CpuBackend();
        e = Assert.Throws<ArgumentException>(() => Check.Device(onGpu1, cpu));
        Assert.That(e!.Message, Does.Contain("lives on cuda:1, this backend computes on cpu"));
    }

    private sealed class FakeDeviceStorage(long length, int ordinal) : TensorStorage(length)
    {
        public override Device Device => Device.Cuda;

        public override int DeviceOrdinal => ordinal;

        protected override void Release()
        {
        }
    }

    /// <summary>An IBackend that only says where it computes.</summary>
    public class FakeGpuBackend : DispatchProxy
    {
        private int _ordinal;

        public static IBackend Create(int ordinal)
        {
            var backend = Create<IBackend, FakeGpuBackend>();
            ((FakeGpuBackend)(object)backend)._ordinal = ordinal;
            return backend;
        }

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args) => targetMethod?.Name switch
        {
            "get_Device" => Device.Cuda,
            "get_DeviceOrdinal" => _ordinal,
            _ => throw new NotSupportedException(targetMethod?.Name),
        };
    }
}
