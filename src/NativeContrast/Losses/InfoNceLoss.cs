namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// MoCo v2's InfoNCE against a queue of keys (also PiCO's): per row, cross-entropy over [q·k, q·queueᵀ] / tau with
/// the positive first, q and k L2-normalised. The loss owns the queue (a device ring buffer; the write position is
/// kept on the host), its workspace and its statistics. A step is <see cref="Compute"/> (loss, statistics and dq
/// in one sweep over the queue) then <see cref="Enqueue"/> of the keys, as in MoCo.
/// </summary>
public sealed class InfoNceLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _workspace;
    private float _temperature;

    public InfoNceLoss(IBackend backend, int batch, int dim, int queueLength, float temperature, MatmulPrecision precision = MatmulPrecision.Tf32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        _backend = backend;
        Batch = batch;
        Temperature = temperature;
        Precision = precision;
        // The requested precision must run here (this throws with the reason if not); the others are sized for when they can.
        var length = Math.Max(backend.InfoNceWorkspaceLength(batch, dim, queueLength, precision), ContrastiveWorkspace.LargestSupported(p => backend.InfoNceWorkspaceLength(batch, dim, queueLength, p)));
        _workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, length))), "infonce workspace");
        try
        {
            Queue = backend.CreateKeyQueue(queueLength, dim);
            try
            {
                Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "infonce stats");
            }
            catch
            {
                Queue.Dispose();
                throw;
            }
        }
        catch
        {
            // Out of device memory: what was allocated goes back.
            _workspace.Dispose();
            throw;
        }
    }

    public int Batch { get; }

    public int Dim => Queue.Dim;

    public KeyQueue Queue { get; }

    /// <summary>tau: logits are cosine / tau.</summary>
    public float Temperature
    {
        get => _temperature;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _temperature = value;
        }
    }

    public MatmulPrecision Precision { get; set; }

    /// <summary>[loss, mean positive cosine, top-1 accuracy] of the last <see cref="Compute"/>, on the backend.</summary>
    public Tensor Stats { get; }

    public long WorkspaceBytes => _workspace.Length * sizeof(float);

    /// <summary>Fills the queue with random unit vectors, as MoCo initialises it, and rewinds its position.</summary>
    public void InitializeQueue(ulong seed)
    {
        using var random = _backend.Allocate(new TensorShape(Queue.Capacity, Queue.Dim), "random keys");
        _backend.RandomNormal(random, seed, 0);
        Queue.Position = 0;
        _backend.EnqueueKeys(Queue, random);
    }

    /// <summary>Loss and statistics of (q, k) against the queue into <see cref="Stats"/>; dq ← gradScale · ∂loss/∂q when given.</summary>
    public void Compute(Tensor q, Tensor k, Tensor? dq, float gradScale = 1f)
    {
        Check.Rows(q, Batch, Dim);
        _backend.InfoNce(q, k, Queue, Temperature, Precision, _workspace, Stats, dq, gradScale);
    }

    /// <summary>Pushes the keys (normalised) into the queue over its oldest entries.</summary>
    public void Enqueue(Tensor k) => _backend.EnqueueKeys(Queue, k);

    /// <summary>
    /// Pushes every rank's keys in the order one process of the global batch pushes its own: <paramref name="allKeys"/>
    /// holds them rank-major (rank r's <paramref name="views"/> views of n images each at [r·views·n, (r + 1)·views·n)),
    /// and they go in view by view, each view's images in global order (rank 0's, then rank 1's, ...).
    /// </summary>
    public void EnqueueFromRanks(Tensor allKeys, int ranks, int views)
    {
        var images = allKeys.Rows / (ranks * views);
        for (var view = 0; view < views; view++)
        {
            for (var rank = 0; rank < ranks; rank++)
            {
                _backend.EnqueueKeys(Queue, allKeys.SliceRows(((rank * views) + view) * images, images));
            }
        }
    }

    public ContrastiveStats ReadStats() => ContrastiveStats.Read(_backend, Stats);

    public void Dispose()
    {
        _workspace.Dispose();
        Stats.Dispose();
        Queue.Dispose();
    }
}
