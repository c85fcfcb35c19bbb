namespace NativeContrast.Tests.Support;

using NativeContrast.Backends;
using NativeContrast.Cuda;

/// <summary>
/// Base of every GPU parity test: opens the CUDA backend once per fixture next to the CPU oracle, and ignores the
/// whole fixture with the one-line reason when there is no driver, device, cuBLAS or kernel module; with
/// NATIVECONTRAST_REQUIRE_GPU=1 (tests/run-gpu.sh on a GPU machine) that reason fails the fixture instead.
/// </summary>
[Category("Gpu")]
public abstract class GpuTestBase
{
    protected CudaBackend Gpu { get; private set; } = null!;

    protected CpuBackend Cpu { get; private set; } = null!;

    [OneTimeSetUp]
    public void OpenDevice()
    {
        if (CudaProbe.WhyUnavailable() is { } why)
        {
            SkipUnlessRequired("GPU", why);
        }
        Gpu = new CudaBackend();
        Cpu = new CpuBackend();
    }

    /// <summary>The variable that turns a missing GPU (or NCCL) from a skip into a failure.</summary>
    public const string RequireVariable = "NATIVECONTRAST_REQUIRE_GPU";

    /// <summary>Ignores the fixture with <paramref name="why"/>, or fails it when <see cref="RequireVariable"/> is 1.</summary>
    protected static void SkipUnlessRequired(string what, string why)
    {
        if (Environment.GetEnvironmentVariable(RequireVariable) == "1")
        {
            Assert.Fail($"{what} tests required ({RequireVariable}=1) but {why}");
        }
        Assert.Ignore($"{what} tests skipped: {why}");
    }

    [OneTimeTearDown]
    public void CloseDevice()
    {
        Gpu?.Dispose();
        Cpu?.Dispose();
    }
}
