namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Cuda;

/// <summary>
/// Device selection on whatever machine runs the tests: without a usable GPU, "auto" falls back to the CPU with the
/// probe's one-line reason and "cuda" fails with it; with one, both open it. Each test branches on the probe.
/// </summary>
public class BackendSelectionTests
{
    [Test]
    public void TheProbeAnswersInOneLineOrTheGpuOpens()
    {
        var why = CudaProbe.WhyUnavailable();
        if (why is null)
        {
            // "Usable" must mean what it says: the backend opens device 0, which the kernels support, with its module.
            using var gpu = new CudaBackend();
            Assert.That(gpu.Name, Does.StartWith("cuda:0 ("));
            Assert.That(gpu.Info.ComputeMajor, Is.GreaterThanOrEqualTo(CudaProbe.MinimumComputeMajor));
            Assert.That(gpu.Module.Path, Does.EndWith(KernelModule.FileName));
            return;
        }
        Assert.That(why, Is.Not.Empty);
        Assert.That(why, Does.Not.Contain('\n').And.Not.Contain('\r'));
    }

    [Test]
    public void AutoTakesTheGpuOrFallsBackToTheCpuSayingWhy()
    {
        var why = CudaProbe.WhyUnavailable();
        var choice = BackendSelector.Create("auto");
        using (choice.Backend)
        {
            if (why is null)
            {
                Assert.That(choice.Backend, Is.InstanceOf<CudaBackend>());
                Assert.That(choice.Reason, Does.StartWith("cuda:0").And.Contain("auto-detected"));
            }
            else
            {
                Assert.That(choice.Backend, Is.InstanceOf<CpuBackend>());
                Assert.That(choice.Reason, Does.StartWith("cpu:").And.Contain(why));
            }
        }
    }

    [TestCase("cuda")]
    [TestCase("cuda:0")]
    [TestCase(" CUDA ")]
    public void CudaOpensTheGpuOrThrowsTheProbesReason(string device)
    {
        var why = CudaProbe.WhyUnavailable();
        if (why is null)
        {
            var choice = BackendSelector.Create(device);
            using (choice.Backend)
            {
                Assert.That(choice.Backend, Is.InstanceOf<CudaBackend>());
                Assert.That(choice.Reason, Does.Contain("requested with --device"));
            }
            return;
        }
        var e = Assert.Throws<CudaUnavailableException>(() => BackendSelector.Create(device));
        Assert.That(e!.Message, Is.EqualTo(why));
    }

    [Test]
    public void ADeviceNumberPastTheLastIsUnavailable()
    {
        var e = Assert.Throws<CudaUnavailableException>(() => BackendSelector.Create("cuda:4096"));
        Assert.That(e!.Message, Is.Not.Empty.And.Not.Contain('\n'));
        Assert.That(CudaProbe.WhyUnavailable(4096), Is.Not.Null);
    }

    [Test]
    public void CpuIsAlwaysTheCpu()
    {
        var choice = BackendSelector.Create("cpu");
        using (choice.Backend)
        {
            Assert.That(choice.Backend, Is.InstanceOf<CpuBackend>());
            Assert.That(choice.Reason, Does.Contain("--device cpu"));
        }
    }

    [TestCase("bogus", "expected auto, cpu, cuda or cuda:N")]
    [TestCase("", "expected auto, cpu, cuda or cuda:N")]
    [TestCase("cuda:", "expected cuda:N")]
    [TestCase("cuda:-1", "expected cuda:N")]
    [TestCase("cuda:one", "expected cuda:N")]
    public void MalformedDevicesAreRejectedNamingTheValue(string device, string expected)
    {
        Assert.That(BackendSelector.Validate(device), Does.Contain(expected).And.Contain($"'{device}'"));
        var e = Assert.Throws<ArgumentException>(() => BackendSelector.Create(device));
        Assert.That(e!.Message, Does.StartWith("--device").And.Contain(expected));
    }

    [TestCase("auto")]
    [TestCase("cpu")]
    [TestCase("cuda")]
    [TestCase("cuda:3")]
    public void WellFormedDevicesValidate(string device) => Assert.That(BackendSelector.Validate(device), Is.Null);
}
