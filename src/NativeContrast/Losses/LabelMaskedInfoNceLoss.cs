namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// PiCO's contrastive term: InfoNCE whose positives are every column sharing the query's (pseudo-)label, over the
/// columns [q | k | queue] (see <see cref="IBackend.LabelMaskedInfoNce"/> for the definition and its gradient). The
/// loss owns the queue of keys, their labels (−1 for slots never written, which are never positives), its workspace
/// and its statistics. A step is <see cref="Compute"/> then <see cref="Enqueue"/> of the keys with their labels, as in
/// PiCO. With queueLength 0 there is no queue (supervised contrast over the batch's two views).
/// </summary>
public sealed class LabelMaskedInfoNceLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _workspace;
    private float _temperature;

    public LabelMaskedInfoNceLoss(IBackend backend, int batch, int dim, int queueLength, float temperature)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(queueLength);
        _backend = backend;
        Batch = batch;
        Dim = dim;
        Temperature = temperature;
        var length = backend.LabelMaskedInfoNceWorkspaceLength(batch, dim, queueLength);
        _workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, length))), "masked infonce workspace");
        try
        {
            if (queueLength > 0)
            {
                Queue = backend.CreateKeyQueue(queueLength, dim);
                QueueLabels = backend.Allocate(new TensorShape(queueLength), "queue labels");
                backend.Fill(QueueLabels, -1f);
            }
            Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "masked infonce stats");
        }
        catch
        {
            // Out of device memory: what was allocated goes back.
            QueueLabels?.Dispose();
            Queue?.Dispose();
            _workspace.Dispose();
            throw;
        }
    }

    public int Batch { get; }

    public int Dim { get; }

    public int QueueLength => Queue?.Capacity ?? 0;

    /// <summary>The keys (normalised), or null without a queue.</summary>
    public KeyQueue? Queue { get; }

    /// <summary>The label of every queue row [QueueLength], −1 where no key was written; null without a queue.</summary>
    public Tensor? QueueLabels { get; }

    /// <summary>tau: logits are cosine / tau (PiCO's temperature, equal to its base temperature).</summary>
    public float Temperature
    {
        get => _temperature;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _temperature = value;
        }
    }

    /// <summary>[loss, mean cosine of q_i with k_i, top-1: a positive is the most similar column] of the last <see cref="Compute"/>, on the backend.</summary>
    public Tensor Stats { get; }

    public long WorkspaceBytes => _workspace.Length * sizeof(float);

    /// <summary>
    /// Fills the queue with random unit vectors, as MoCo and PiCO initialise it, labels them −1 (no class, so never a
    /// positive; PiCO draws random floats that no label equals) and rewinds its position.
    /// </summary>
    public void InitializeQueue(ulong seed)
    {
        if (Queue is null)
        {
            return;
        }
        using var random = _backend.Allocate(new TensorShape(Queue.Capacity, Queue.Dim), "random keys");
        _backend.RandomNormal(random, seed, 0);
        Queue.Position = 0;
        _backend.EnqueueKeys(Queue, random);
        _backend.Fill(QueueLabels!, -1f);
    }

    /// <summary>
    /// Loss and statistics of (q, k) with the queries' labels [Batch] against the queue into <see cref="Stats"/>;
    /// dq ← gradScale · ∂loss/∂q when given (overwritten).
    /// </summary>
    public void Compute(Tensor q, Tensor k, Tensor labels, Tensor? dq, float gradScale = 1f)
    {
        Check.Rows(q, Batch, Dim);
        _backend.LabelMaskedInfoNce(q, k, labels, Queue, QueueLabels, Temperature, _workspace, Stats, dq, gradScale);
    }

    /// <summary>Pushes the keys (normalised) and their labels over the oldest entries of the queue, at the same rows.</summary>
    public void Enqueue(Tensor keys, Tensor labels)
    {
        if (Queue is null)
        {
            throw new InvalidOperationException("this loss has no queue (queueLength 0)");
        }
        _backend.EnqueueLabeledKeys(Queue, QueueLabels!, keys, labels);
    }

    /// <summary>The statistics of the last <see cref="Compute"/>, copied to the host (waits for the device).</summary>
    public ContrastiveStats ReadStats() => ContrastiveStats.Read(_backend, Stats);

    public void Dispose()
    {
        _workspace.Dispose();
        Stats.Dispose();
        QueueLabels?.Dispose();
        Queue?.Dispose();
    }
}
