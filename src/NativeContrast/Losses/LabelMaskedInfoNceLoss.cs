namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// PiCO's contrastive term: InfoNCE whose positives are every column sharing the query's (pseudo-)label, over the
/// columns [q | k | queue] (see <see cref="IBackend.LabelMaskedInfoNce"/> for the definition and its gradient). The
/// loss owns the queue of keys, their labels (−1 for slots never written, which are never positives), its workspace
/// and its statistics. A step is <see cref="Compute"/> then <see cref="EnqueueComputed"/> (or, after a step on another
/// loss, <see cref="Enqueue"/>) of the keys with their labels, as in PiCO. With queueLength 0 there is no queue (supervised contrast over the batch's two views).
/// <para>
/// Data-parallel (a communicator of several ranks): <see cref="Compute"/> all-gathers q, k and the labels and runs this
/// rank's rows against every rank's columns (<see cref="LabelMaskedShard"/>), so that the ranks' mean gradient is that
/// of one process over the global batch; <see cref="Enqueue"/> all-gathers the keys and labels and enqueues every
/// rank's in rank order, so every rank's queue is that process's; <see cref="EnqueueComputed"/> enqueues what Compute
/// gathered, with no collective.
/// </para>
/// </summary>
public sealed class LabelMaskedInfoNceLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _workspace;
    private readonly ICommunicator? _ranks;
    private readonly LabelMaskedShard? _shard;
    private readonly Tensor? _allQueries;
    private readonly Tensor? _allKeys;
    private readonly Tensor? _allLabels;
    private float _temperature;

    // The keys and labels of the last Compute (gathered, when data-parallel) until EnqueueComputed takes them.
    private (Tensor Keys, Tensor Labels)? _computed;

    /// <param name="batch">This rank's queries.</param>
    /// <param name="communicator">The ranks sharing the batch; null or one rank: this batch alone.</param>
    public LabelMaskedInfoNceLoss(IBackend backend, int batch, int dim, int queueLength, float temperature, ICommunicator? communicator = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(queueLength);
        _backend = backend;
        Batch = batch;
        Dim = dim;
        Temperature = temperature;
        _ranks = communicator is { Size: > 1 } ranks ? ranks : null;
        var allRows = checked(batch * (_ranks?.Size ?? 1));
        var length = backend.LabelMaskedInfoNceWorkspaceLength(allRows, dim, queueLength);
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
            if (_ranks is not null)
            {
                _allQueries = backend.Allocate(new TensorShape(allRows, dim), "masked infonce gathered q");
                _allKeys = backend.Allocate(new TensorShape(allRows, dim), "masked infonce gathered k");
                _allLabels = backend.Allocate(new TensorShape(allRows), "masked infonce gathered labels");
                var rowState = backend.Allocate(new TensorShape(LabelMaskedShard.FloatsPerRow * batch), "masked infonce row states");
                var allRowStates = backend.Allocate(new TensorShape(LabelMaskedShard.FloatsPerRow * allRows), "masked infonce gathered row states");
                _shard = new LabelMaskedShard(_ranks.Rank * batch, batch, rowState, allRowStates, _ranks.AllGather);
            }
        }
        catch
        {
            // Out of device memory: what was allocated goes back.
            DisposeGathered();
            Stats?.Dispose();
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
        if (_ranks is null || _shard is null)
        {
            _backend.LabelMaskedInfoNce(q, k, labels, Queue, QueueLabels, Temperature, _workspace, Stats, dq, gradScale);
            _computed = (k, labels);
            return;
        }
        _ranks.AllGather(q, _allQueries!);
        _ranks.AllGather(k, _allKeys!);
        _ranks.AllGather(labels, _allLabels!);
        _backend.LabelMaskedInfoNce(_allQueries!, _allKeys!, _allLabels!, Queue, QueueLabels, Temperature, _workspace, Stats, dq, gradScale, _shard);
        _computed = (_allKeys!, _allLabels!);
    }

    /// <summary>
    /// <see cref="Enqueue"/> of the keys and labels the last <see cref="Compute"/> read, which must not have changed
    /// since; data-parallel, every rank's as Compute gathered them, so this moves nothing between ranks.
    /// </summary>
    public void EnqueueComputed()
    {
        if (Queue is null)
        {
            throw new InvalidOperationException("this loss has no queue (queueLength 0)");
        }
        if (_computed is not { } computed)
        {
            throw new InvalidOperationException("EnqueueComputed needs a Compute since the last enqueue");
        }
        _computed = null;
        _backend.EnqueueLabeledKeys(Queue, QueueLabels!, computed.Keys, computed.Labels);
    }

    /// <summary>Pushes the keys (normalised) and their labels over the oldest entries of the queue, at the same rows.</summary>
    public void Enqueue(Tensor keys, Tensor labels)
    {
        if (Queue is null)
        {
            throw new InvalidOperationException("this loss has no queue (queueLength 0)");
        }
        _computed = null;
        if (_ranks is null)
        {
            _backend.EnqueueLabeledKeys(Queue, QueueLabels!, keys, labels);
            return;
        }
        _ranks.AllGather(keys, _allKeys!);
        _ranks.AllGather(labels, _allLabels!);
        _backend.EnqueueLabeledKeys(Queue, QueueLabels!, _allKeys!, _allLabels!);
    }

    /// <summary>The statistics of the last <see cref="Compute"/>, copied to the host (waits for the device).</summary>
    public ContrastiveStats ReadStats() => ContrastiveStats.Read(_backend, Stats);

    public void Dispose()
    {
        DisposeGathered();
        _workspace.Dispose();
        Stats.Dispose();
        QueueLabels?.Dispose();
        Queue?.Dispose();
    }

    private void DisposeGathered()
    {
        _allQueries?.Dispose();
        _allKeys?.Dispose();
        _allLabels?.Dispose();
        _shard?.RowState.Dispose();
        _shard?.AllRowStates.Dispose();
    }
}
