namespace NativeContrast.Tests.Distributed;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>A job of one rank: every collective is the identity, and arguments are checked as a real job checks them.</summary>
public class SingleProcessCommunicatorTests
{
    private CpuBackend _cpu = null!;
    private SingleProcessCommunicator _single = null!;

    [OneTimeSetUp]
    public void Open()
    {
        _cpu = new CpuBackend();
        _single = new SingleProcessCommunicator(_cpu);
    }

    [OneTimeTearDown]
    public void Close()
    {
        _single.Dispose();
        _cpu.Dispose();
    }

    private Tensor Values(int length, float offset = 0f, params int[] shape) =>
        _cpu.FromArray(Enumerable.Range(0, length).Select(i => offset + i).ToArray(), shape.Length == 0 ? new TensorShape(length) : new TensorShape(shape), "x");

    [Test]
    public void ItIsRankZeroOfOneOnTheBackendsDevice()
    {
        Assert.That((_single.Rank, _single.Size, _single.Device, _single.Name), Is.EqualTo((0, 1, Device.Cpu, "single process")));
    }

    [TestCase(7)]
    [TestCase(1_000_003)]
    public void AllReduceAndBroadcastLeaveTheTensorAsItIs(int length)
    {
        using var x = Values(length);
        var before = x.Span.ToArray();
        _single.AllReduce(x);
        _single.AllReduceMean(x);
        _single.Broadcast(x, root: 0);
        Assert.That(x.Span.ToArray(), Is.EqualTo(before));
    }

    [TestCase(7)]
    [TestCase(1_000_003)]
    public void AllGatherAndReduceScatterCopyTheInputToTheOutput(int length)
    {
        using var x = Values(length, 0.5f);
        using var gathered = _cpu.Allocate(new TensorShape(length), "gathered");
        _single.AllGather(x, gathered);
        Assert.That(gathered.Span.ToArray(), Is.EqualTo(x.Span.ToArray()));

        using var block = _cpu.Allocate(new TensorShape(length), "block");
        _single.ReduceScatter(x, block);
        Assert.That(block.Span.ToArray(), Is.EqualTo(x.Span.ToArray()));
    }

    [Test]
    public void RowsStackAlongTheFirstAxisWhateverTheTrailingAxes()
    {
        using var x = Values(12, 0f, 4, 3);
        using var gathered = _cpu.Allocate(new TensorShape(4, 3), "gathered");
        _single.AllGather(x, gathered);
        Assert.That(gathered.Span.ToArray(), Is.EqualTo(x.Span.ToArray()));
    }

    [Test]
    public void AnOutputThatDoesNotStackTheInputIsRejectedNamingBoth()
    {
        using var x = Values(12, 0f, 4, 3);
        using var wrongRows = _cpu.Allocate(new TensorShape(5, 3), "wrong rows");
        using var wrongCols = _cpu.Allocate(new TensorShape(3, 4), "wrong cols");
        Assert.That(() => _single.AllGather(x, wrongRows), Throws.ArgumentException.With.Message.EqualTo(
            "AllGather: wrong rows [5, 3] must stack 1 rank(s) of x [4, 3] along the first axis: expected [4, 3]"));
        Assert.That(() => _single.ReduceScatter(wrongCols, x), Throws.ArgumentException.With.Message.Contain("ReduceScatter: wrong cols [3, 4] must stack 1 rank(s) of x [4, 3]"));
    }

    [Test]
    public void AScalarHasNoAxisToStackAlong()
    {
        using var scalar = _cpu.Allocate(new TensorShape(), "loss");
        using var output = _cpu.Allocate(new TensorShape(1), "gathered");
        Assert.That(() => _single.AllGather(scalar, output), Throws.ArgumentException.With.Message.Contain("loss [] has no axis to stack ranks along"));
    }

    [Test]
    public void AnOutputOverlappingItsInputIsRejected()
    {
        using var x = Values(8);
        using var first = x.View(0, new TensorShape(4), "first");
        using var shifted = x.View(2, new TensorShape(4), "shifted");
        Assert.That(() => _single.AllGather(first, shifted), Throws.ArgumentException.With.Message.Contain("shifted [4] overlaps first [4]"));
    }

    [Test]
    public void ARootThatIsNotARankIsRejected()
    {
        using var x = Values(3);
        Assert.That(() => _single.Broadcast(x, root: 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contain("Broadcast: root 1 is not a rank of this job (0 to 0)"));
        Assert.That(() => _single.Broadcast(new byte[4], root: -1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contain("root -1"));
    }

    [Test]
    public void HostBytesFromRankZeroStayAsTheyAre()
    {
        var bytes = new byte[] { 1, 2, 3 };
        _single.Broadcast(bytes, root: 0);
        Assert.That(bytes, Is.EqualTo(new byte[] { 1, 2, 3 }));
        _single.Barrier();
    }

    [Test]
    public void ATensorOnAnotherDeviceIsRejectedNamingWhereItLives()
    {
        using var storage = new ElsewhereStorage(4);
        using var x = new Tensor(storage, new TensorShape(4), name: "features");
        Assert.That(() => _single.AllReduce(x), Throws.ArgumentException.With.Message.EqualTo(
            "single process AllReduce: features [4] lives on cuda:1, this communicator moves tensors on cpu"));
    }

    [Test]
    public void AbortThrowsOneLineThatNamesTheRank()
    {
        Assert.That(() => _single.Abort("the loss is NaN at step 12\nsee metrics.jsonl"), Throws.InstanceOf<CommunicatorAbortedException>().With.Message.EqualTo(
            "rank 0 of 1 aborted the job: the loss is NaN at step 12 see metrics.jsonl"));
    }

    /// <summary>Storage that claims to live on a GPU, so that device checks can be tested without one.</summary>
    private sealed class ElsewhereStorage(long length) : TensorStorage(length)
    {
        public override Device Device => Device.Cuda;

        public override int DeviceOrdinal => 1;

        protected override void Release()
        {
        }
    }
}
