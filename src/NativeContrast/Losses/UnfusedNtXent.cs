namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// NT-Xent composed from separate backend ops the way SimCLR's PyTorch implementations write it: normalise, one
/// GEMM for the full 2N × 2N similarity matrix, mask the diagonal, log-sum-exp, gather the positives; backward
/// through softmax and two GEMMs. It materialises two 2N × 2N matrices: the baseline the fused kernels are
/// measured against, and a second oracle for them in tests.
/// </summary>
public sealed class UnfusedNtXent : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _normalized, _norms, _logits, _probabilities, _lse, _positives, _hits, _rowLoss, _dNormalized;
    private readonly Tensor _lossSlot, _similaritySlot, _top1Slot;

    public UnfusedNtXent(IBackend backend, int rows, int dim, float temperature, MatmulPrecision precision = MatmulPrecision.Tf32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(temperature);
        _backend = backend;
        (Rows, Dim, Temperature, Precision) = (rows, dim, temperature, precision);
        _normalized = backend.Allocate(new TensorShape(rows, dim), "zn");
        _norms = backend.Allocate(new TensorShape(rows), "norms");
        _logits = backend.Allocate(new TensorShape(rows, rows), "logits");
        _probabilities = backend.Allocate(new TensorShape(rows, rows), "probabilities");
        _lse = backend.Allocate(new TensorShape(rows), "lse");
        _positives = backend.Allocate(new TensorShape(rows), "positive logits");
        _hits = backend.Allocate(new TensorShape(rows), "hits");
        _rowLoss = backend.Allocate(new TensorShape(rows), "row loss");
        _dNormalized = backend.Allocate(new TensorShape(rows, dim), "dzn");
        Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "unfused nt-xent stats");
        _lossSlot = Stats.View(0, new TensorShape(1));
        _similaritySlot = Stats.View(1, new TensorShape(1));
        _top1Slot = Stats.View(2, new TensorShape(1));
    }

    public int Rows { get; }

    public int Dim { get; }

    public float Temperature { get; }

    /// <summary>Precision of the GEMMs (cuBLAS compute type).</summary>
    public MatmulPrecision Precision { get; set; }

    /// <summary>[loss, mean positive cosine, top-1 accuracy], as the fused op reports them.</summary>
    public Tensor Stats { get; }

    /// <summary>Bytes of the buffers this composition holds (the 2N × 2N matrices dominate).</summary>
    public long BufferBytes => sizeof(float) * (_normalized.Length + _norms.Length + _logits.Length + _probabilities.Length
        + _lse.Length + _positives.Length + _hits.Length + _rowLoss.Length + _dNormalized.Length + Stats.Length);

    public void Forward(Tensor z)
    {
        Check.Rows(z, Rows, Dim);
        var saved = _backend.GemmPrecision;
        _backend.GemmPrecision = Precision;
        try
        {
            _backend.L2NormalizeRows(z, _normalized, _norms);
            _backend.Gemm(_normalized, false, _normalized, true, _logits, alpha: 1f / Temperature);
            _backend.MaskSelfSimilarity(_logits);
            _backend.LogSumExpRows(_logits, _lse);
            _backend.PositiveLogits(_logits, PositivePairing.OtherView, _positives, _hits);
            _backend.Copy(_lse, _rowLoss);
            _backend.Axpy(-1f, _positives, _rowLoss);
            _backend.Sum(_rowLoss, _lossSlot);
            _backend.Scale(_lossSlot, 1f / Rows, _lossSlot);
            _backend.Sum(_positives, _similaritySlot);
            _backend.Scale(_similaritySlot, Temperature / Rows, _similaritySlot);
            _backend.Sum(_hits, _top1Slot);
            _backend.Scale(_top1Slot, 1f / Rows, _top1Slot);
        }
        finally
        {
            _backend.GemmPrecision = saved;
        }
    }

    /// <summary>dz ← gradScale · ∂loss/∂z: dS = (softmax − onehot) / (2N tau), dzn = (dS + dSᵀ) zn.</summary>
    public void Backward(Tensor dz, float gradScale = 1f)
    {
        Check.Rows(dz, Rows, Dim);
        var saved = _backend.GemmPrecision;
        _backend.GemmPrecision = Precision;
        try
        {
            var factor = gradScale / (Rows * Temperature);
            _backend.SoftmaxRows(_logits, _probabilities);
            _backend.AddAtPositives(_probabilities, PositivePairing.OtherView, -1f);
            _backend.Gemm(_probabilities, false, _normalized, false, _dNormalized, alpha: factor);
            _backend.Gemm(_probabilities, true, _normalized, false, _dNormalized, alpha: factor, beta: 1f);
            _backend.L2NormalizeRowsBackward(_normalized, _norms, _dNormalized, dz);
        }
        finally
        {
            _backend.GemmPrecision = saved;
        }
    }

    public void Dispose()
    {
        foreach (var t in new[] { _normalized, _norms, _logits, _probabilities, _lse, _positives, _hits, _rowLoss, _dNormalized, Stats })
        {
            t.Dispose();
        }
    }
}
