namespace NativeContrast.Tests.Distributed;

using NativeContrast.Distributed;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// NCCL as a job of one rank on the CUDA backend's stream (no MPI: the unique id is made locally): the binding's
/// calls, their checks and the device rules. Skipped without a GPU, and with the reason when NCCL does not load.
/// </summary>
public class NcclCommunicatorTests : GpuTestBase
{
    private NcclCommunicator _nccl = null!;

    [OneTimeSetUp]
    public void OpenNccl()
    {
        if (NcclCommunicator.WhyUnavailable() is { } why)
        {
            SkipUnlessRequired("NCCL", why);
        }
        _nccl = new NcclCommunicator(Gpu);
    }

    [OneTimeTearDown]
    public void CloseNccl() => _nccl?.Dispose();

    private Tensor Upload(float[] values, string name)
    {
        var tensor = Gpu.Allocate(new TensorShape(values.Length), name);
        Gpu.CopyFromHost(values, tensor);
        return tensor;
    }

    private float[] Download(Tensor tensor)
    {
        var host = new float[tensor.Length];
        Gpu.CopyToHost(tensor, host);
        return host;
    }

    [Test]
    public void ItIsRankZeroOfOneNamingNcclsVersion()
    {
        Assert.That((_nccl.Rank, _nccl.Size, _nccl.Device), Is.EqualTo((0, 1, Device.Cuda)));
        Assert.That(_nccl.Name, Does.Match(@"^nccl 2\.\d+\.\d+ \(one rank\)$"));
    }

    [TestCase(7)]
    [TestCase(1_000_003)]
    public void EveryCollectiveOfOneRankGivesItsInputBack(int length)
    {
        var values = Enumerable.Range(0, length).Select(i => (i % 97) + 0.25f).ToArray();
        using var x = Upload(values, "x");
        _nccl.AllReduce(x);
        _nccl.AllReduceMean(x);
        _nccl.Broadcast(x, root: 0);
        Assert.That(Download(x), Is.EqualTo(values));

        using var gathered = Gpu.Allocate(new TensorShape(length), "gathered");
        _nccl.AllGather(x, gathered);
        Assert.That(Download(gathered), Is.EqualTo(values));

        using var block = Gpu.Allocate(new TensorShape(length), "block");
        _nccl.ReduceScatter(x, block);
        Assert.That(Download(block), Is.EqualTo(values));

        var bytes = new byte[] { 9, 8, 7 };
        _nccl.Broadcast(bytes, root: 0);
        Assert.That(bytes, Is.EqualTo(new byte[] { 9, 8, 7 }));
        _nccl.Barrier();
    }

    [Test]
    public void HostTensorsAreRejectedNamingWhereTheyLive()
    {
        using var host = Cpu.Allocate(new TensorShape(4), "features");
        Assert.That(() => _nccl.AllReduce(host), Throws.ArgumentException.With.Message.EqualTo(
            $"{_nccl.Name} AllReduce: features [4] lives on cpu, this communicator moves tensors on cuda:{Gpu.DeviceOrdinal}"));
    }

    [Test]
    public void AbortOfOneRankThrowsTheLineNamingIt()
    {
        using var own = new NcclCommunicator(Gpu);
        Assert.That(() => own.Abort("out of memory"), Throws.InstanceOf<CommunicatorAbortedException>().With.Message.EqualTo("rank 0 of 1 aborted the job: out of memory"));
        using var x = Gpu.Allocate(new TensorShape(1), "x");
        Assert.That(() => own.AllReduce(x), Throws.InstanceOf<ObjectDisposedException>(), "an aborted communicator is closed");
    }

    [Test]
    public void ShapesAreCheckedBeforeNcclIsCalled()
    {
        using var x = Gpu.Allocate(new TensorShape(4, 3), "x");
        using var wrong = Gpu.Allocate(new TensorShape(8, 3), "gathered");
        Assert.That(() => _nccl.AllGather(x, wrong), Throws.ArgumentException.With.Message.Contain("must stack 1 rank(s) of x [4, 3]"));
    }
}
