namespace NativeContrast.Tests.Support;

using NativeContrast.Backends;
using NativeContrast.Cuda;

/// <summary>
/// Base of every GPU parity test: opens the CUDA backend once per fixture next to the CPU oracle, and ignores the
/// whole fixture with the one-line reason when there is no driver, device, cuBLAS or kernel module.
/// </summary>
[Category("Gpu")]
public abstract class GpuTestBase
{
    protected CudaBackend Gpu { get; private set; } = null!;

    protected CpuBackend Cpu { get; private set; } = null!;

    [OneTimeSetUp]
    public void OpenDevice()
    {
        var why = CudaProbe.WhyUnavailable();
        if (why is not null)
        {
            Assert.Ignore($"GPU tests skipped: {why}");
        }
        Gpu = new CudaBackend();
        Cpu = new CpuBackend();
    }

    [OneTimeTearDown]
    public void CloseDevice()
    {
        Gpu?.Dispose();
        Cpu?.Dispose();
    }
}
