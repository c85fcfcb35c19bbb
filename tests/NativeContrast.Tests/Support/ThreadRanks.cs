namespace NativeContrast.Tests.Support;

using System.Diagnostics.CodeAnalysis;
using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// Ranks played by threads of one process, for collectives inside an op (SyncBN's all-reduce, distributed Sinkhorn's
/// all-gather): each rank hands in its values, then every rank receives their sum, added in rank order on the host,
/// or their concatenation in rank order. Each rank may have its own backend.
/// </summary>
public sealed class ThreadRanks(int size) : IDisposable
{
    private readonly Barrier _barrier = new(size);
    private readonly float[][] _contributions = new float[size][];

    public int Size => size;

    /// <summary>values ← Σ over ranks of values (an all-reduce); every rank must call it, each from its own thread.</summary>
    public void Sum(int rank, IBackend backend, Tensor values)
    {
        _contributions[rank] = Numerics.ToArray(backend, values);
        _barrier.SignalAndWait();
        var total = new float[values.Length];
        for (var i = 0; i < total.Length; i++)
        {
            for (var r = 0; r < size; r++)
            {
                total[i] += _contributions[r][i];
            }
        }
        backend.CopyFromHost(total, values);
        _barrier.SignalAndWait();
    }

    /// <summary>output ← every rank's input in rank order (an all-gather); every rank must call it, each from its own thread.</summary>
    public void Gather(int rank, IBackend backend, Tensor input, Tensor output)
    {
        _contributions[rank] = Numerics.ToArray(backend, input);
        _barrier.SignalAndWait();
        backend.CopyFromHost(_contributions.SelectMany(c => c).ToArray(), output);
        _barrier.SignalAndWait();
    }

    /// <summary>Rank <paramref name="rank"/>'s communicator over these threads (all-reduce and all-gather; the rest throws).</summary>
    public ICommunicator Communicator(int rank, IBackend backend) => new ThreadCommunicator(this, rank, backend);

    /// <summary>Runs <paramref name="body"/>(rank) on one thread per rank and waits for them all.</summary>
    public void Run(Action<int> body)
    {
        var failures = new Exception?[size];
        var threads = Enumerable.Range(0, size).Select(r => new Thread(() =>
        {
            try
            {
                body(r);
            }
            catch (Exception e)
            {
                failures[r] = e;
                _barrier.RemoveParticipant();
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (failures.FirstOrDefault(f => f is not null) is { } failure)
        {
            throw new AggregateException(failure);
        }
    }

    public void Dispose() => _barrier.Dispose();
}

/// <summary>The collectives that ops and methods call inside a step, over <see cref="ThreadRanks"/>.</summary>
internal sealed class ThreadCommunicator(ThreadRanks ranks, int rank, IBackend backend) : ICommunicator
{
    public int Rank => rank;

    public int Size => ranks.Size;

    public string Name => "threads";

    public Device Device => backend.Device;

    public void AllReduce(Tensor tensor) => ranks.Sum(rank, backend, tensor);

    public void AllReduceMean(Tensor tensor)
    {
        ranks.Sum(rank, backend, tensor);
        backend.Scale(tensor, 1f / ranks.Size, tensor);
    }

    public void AllGather(Tensor input, Tensor output) => ranks.Gather(rank, backend, input, output);

    public void ReduceScatter(Tensor input, Tensor output) => throw new NotSupportedException();

    public void Broadcast(Tensor tensor, int root) => throw new NotSupportedException();

    public void Broadcast(Span<byte> bytes, int root) => throw new NotSupportedException();

    public void Barrier() => throw new NotSupportedException();

    [DoesNotReturn]
    public void Abort(string message) => throw new CommunicatorAbortedException(message);

    public void Dispose()
    {
    }
}
