namespace NativeContrast.Tests.Support;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// Ranks played by threads of one process, for collectives inside an op (SyncBN's all-reduce): each rank hands in its
/// values, then every rank receives their sum, added in rank order on the host. Each rank may have its own backend.
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
