namespace NativeContrast.Distributed;

using System.Diagnostics.CodeAnalysis;
using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// The communicator of a job of one rank: every collective is the identity (AllGather and ReduceScatter copy input
/// to output through the backend), so code written for N ranks runs unchanged in one process, with neither MPI nor
/// NCCL. Tensors must live on the backend's device, as they would for the communicator of a real job.
/// </summary>
public sealed class SingleProcessCommunicator(IBackend backend) : ICommunicator
{
    private readonly IBackend _backend = backend ?? throw new ArgumentNullException(nameof(backend));

    public int Rank => 0;

    public int Size => 1;

    public string Name => "single process";

    public Device Device => _backend.Device;

    public void AllReduce(Tensor tensor) => CheckDevice(nameof(AllReduce), tensor);

    public void AllReduceMean(Tensor tensor) => CheckDevice(nameof(AllReduceMean), tensor);

    public void AllGather(Tensor input, Tensor output)
    {
        CheckDevice(nameof(AllGather), input);
        CheckDevice(nameof(AllGather), output);
        CollectiveCheck.Stacked(nameof(AllGather), input, output, Size);
        _backend.Copy(input, output);
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        CheckDevice(nameof(ReduceScatter), input);
        CheckDevice(nameof(ReduceScatter), output);
        CollectiveCheck.Stacked(nameof(ReduceScatter), output, input, Size);
        _backend.Copy(input, output);
    }

    public void Broadcast(Tensor tensor, int root)
    {
        CheckDevice(nameof(Broadcast), tensor);
        CollectiveCheck.Root(nameof(Broadcast), root, Size);
    }

    public void Broadcast(Span<byte> bytes, int root) => CollectiveCheck.Root(nameof(Broadcast), root, Size);

    public void Barrier() => _backend.Synchronize();

    [DoesNotReturn]
    public void Abort(string message) => throw new CommunicatorAbortedException(CollectiveCheck.AbortLine(Rank, Size, message));

    /// <summary>The backend belongs to the caller.</summary>
    public void Dispose()
    {
    }

    private void CheckDevice(string collective, Tensor tensor) =>
        CollectiveCheck.Device(Name, collective, tensor, _backend.Device, _backend.DeviceOrdinal);
}
