namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// InfoNCE composed from separate backend ops as MoCo's PyTorch code writes it: normalise q and k, l_pos by a row
/// dot, l_neg by one GEMM against the queue, concatenate, cross-entropy with the positive first; backward through
/// softmax and a second GEMM against the queue. The baseline for the fused sweep and a second oracle in tests.
/// </summary>
public sealed class UnfusedInfoNce : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _qn, _normsQ, _kn, _normsK, _negatives, _positiveColumn, _logits, _lse, _positives, _hits, _rowLoss;
    private readonly Tensor _probabilities, _positiveWeight, _queueWeights, _dqn;
    private readonly Tensor _lossSlot, _similaritySlot, _top1Slot;

    public UnfusedInfoNce(IBackend backend, int batch, int dim, int queueLength, float temperature, MatmulPrecision precision = MatmulPrecision.Tf32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(temperature);
        _backend = backend;
        (Batch, Dim, QueueLength, Temperature, Precision) = (batch, dim, queueLength, temperature, precision);
        _qn = backend.Allocate(new TensorShape(batch, dim), "qn");
        _normsQ = backend.Allocate(new TensorShape(batch), "|q|");
        _kn = backend.Allocate(new TensorShape(batch, dim), "kn");
        _normsK = backend.Allocate(new TensorShape(batch), "|k|");
        _negatives = backend.Allocate(new TensorShape(batch, queueLength), "l_neg");
        _positiveColumn = backend.Allocate(new TensorShape(batch, 1), "l_pos");
        _logits = backend.Allocate(new TensorShape(batch, queueLength + 1), "logits");
        _lse = backend.Allocate(new TensorShape(batch), "lse");
        _positives = backend.Allocate(new TensorShape(batch), "positive logits");
        _hits = backend.Allocate(new TensorShape(batch), "hits");
        _rowLoss = backend.Allocate(new TensorShape(batch), "row loss");
        _probabilities = backend.Allocate(new TensorShape(batch, queueLength + 1), "probabilities");
        _positiveWeight = backend.Allocate(new TensorShape(batch, 1), "dl_pos");
        _queueWeights = backend.Allocate(new TensorShape(batch, queueLength), "dl_neg");
        _dqn = backend.Allocate(new TensorShape(batch, dim), "dqn");
        Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "unfused infonce stats");
        _lossSlot = Stats.View(0, new TensorShape(1));
        _similaritySlot = Stats.View(1, new TensorShape(1));
        _top1Slot = Stats.View(2, new TensorShape(1));
    }

    public int Batch { get; }

    public int Dim { get; }

    public int QueueLength { get; }

    public float Temperature { get; }

    public MatmulPrecision Precision { get; set; }

    public Tensor Stats { get; }

    public long BufferBytes => sizeof(float) * new[] { _qn, _normsQ, _kn, _normsK, _negatives, _positiveColumn, _logits, _lse, _positives, _hits, _rowLoss, _probabilities, _positiveWeight, _queueWeights, _dqn, Stats }.Sum(t => t.Length);

    /// <summary>Loss and statistics into <see cref="Stats"/>; dq ← gradScale · ∂loss/∂q when given.</summary>
    public void Compute(Tensor q, Tensor k, KeyQueue queue, Tensor? dq, float gradScale = 1f)
    {
        Check.Rows(q, Batch, Dim);
        Check.Rows(k, Batch, Dim);
        Check.Rows(queue.Keys, QueueLength, Dim);
        var saved = _backend.GemmPrecision;
        _backend.GemmPrecision = Precision;
        try
        {
            _backend.L2NormalizeRows(q, _qn, _normsQ);
            _backend.L2NormalizeRows(k, _kn, _normsK);
            _backend.RowDot(_qn, _kn, 1f / Temperature, _positiveColumn);
            _backend.Gemm(_qn, false, queue.Keys, true, _negatives, alpha: 1f / Temperature);
            _backend.ConcatColumns(_positiveColumn, _negatives, _logits);
            _backend.LogSumExpRows(_logits, _lse);
            _backend.PositiveLogits(_logits, PositivePairing.FirstColumn, _positives, _hits);
            _backend.Copy(_lse, _rowLoss);
            _backend.Axpy(-1f, _positives, _rowLoss);
            _backend.Sum(_rowLoss, _lossSlot);
            _backend.Scale(_lossSlot, 1f / Batch, _lossSlot);
            _backend.Sum(_positives, _similaritySlot);
            _backend.Scale(_similaritySlot, Temperature / Batch, _similaritySlot);
            _backend.Sum(_hits, _top1Slot);
            _backend.Scale(_top1Slot, 1f / Batch, _top1Slot);
            if (dq is null)
            {
                return;
            }

            // dlogits = (softmax - onehot(0)) / (B tau); dqn = dl_pos * kn + dl_neg . queue.
            var factor = gradScale / (Batch * Temperature);
            _backend.SoftmaxRows(_logits, _probabilities);
            _backend.AddAtPositives(_probabilities, PositivePairing.FirstColumn, -1f);
            _backend.SplitColumns(_probabilities, _positiveWeight, _queueWeights);
            _backend.Gemm(_queueWeights, false, queue.Keys, false, _dqn, alpha: factor);
            _backend.Scale(_positiveWeight, factor, _positiveWeight);
            _backend.AddScaledRows(_kn, _positiveWeight, _dqn);
            _backend.L2NormalizeRowsBackward(_qn, _normsQ, _dqn, dq);
        }
        finally
        {
            _backend.GemmPrecision = saved;
        }
    }

    public void Dispose()
    {
        foreach (var t in new[] { _qn, _normsQ, _kn, _normsK, _negatives, _positiveColumn, _logits, _lse, _positives, _hits, _rowLoss, _probabilities, _positiveWeight, _queueWeights, _dqn, Stats })
        {
            t.Dispose();
        }
    }
}
