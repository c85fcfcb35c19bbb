namespace NativeContrast.Tests.Nn;

using NativeContrast.Backends;
using NativeContrast.Tests.Support;

/// <summary>
/// SyncBN in native/norm.cu: two ranks, each a CUDA backend of its own on one thread, normalise and back-propagate as
/// the CPU twin's one batch norm over all their rows (y, dx, running statistics; weight and bias gradients summed).
/// </summary>
public class SyncBatchNormGpuTests : GpuTestBase
{
    [TestCase(3, 5, true, false)]
    [TestCase(17, 33, false, true)]
    [TestCase(1000, 64, true, true)]
    public void TwoGpuRanksNormaliseAsOneBatch(int rowsPerRank, int channels, bool relu, bool residual)
    {
        using var second = new CudaBackend();
        SyncBatchNormCpuTests.AssertRanksNormaliseAsOneBatch(Cpu, [Gpu, second], rowsPerRank, channels, relu, residual);
    }
}
