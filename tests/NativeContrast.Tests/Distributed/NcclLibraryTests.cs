namespace NativeContrast.Tests.Distributed;

using NativeContrast.Distributed;

/// <summary>Finding NCCL, with or without a GPU.</summary>
public class NcclLibraryTests
{
    [Test]
    public void AMissingNcclIsExplainedInOneLine()
    {
        var why = NcclCommunicator.WhyUnavailable();
        if (why is null)
        {
            Assert.Ignore($"NCCL {NcclCommunicator.LoadedVersion()} loads here ({NcclCommunicator.LibraryFile})");
        }
        Assert.That(why, Is.EqualTo(
            "NCCL was not found (tried libnccl.so.2): GPU ranks need NCCL 2 (PyTorch's wheels ship it in site-packages/nvidia/nccl/lib; put that folder on LD_LIBRARY_PATH, and across nodes pass it on with mpirun -x LD_LIBRARY_PATH)"));
    }
}
