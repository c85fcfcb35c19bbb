namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// SwAV's multi-crop swapped-prediction loss (main_swav.py; the feature queue through the queued scores). For every assignment crop c
/// the codes q_c = Sinkhorn(scores of crop c) are constants; every other crop v predicts them:
/// loss = 1/|assign| Σ_c 1/(V−1) Σ_{v≠c} mean_b −Σ_k q_c[b,k]·log softmax(scores_v[b,:]/τ)[k].
/// Owns its codes, per-sample and Sinkhorn buffers (grow-only), so repeated calls of one size allocate no device memory.
/// Data-parallel (a communicator of several ranks), the scores are this rank's samples: the codes are Sinkhorn's over
/// every rank's samples of the crop, and the loss is the mean over this rank's, so the ranks' mean is the global batch's.
/// </summary>
public sealed class SwavLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly SinkhornKnopp _sinkhorn;
    private readonly int[] _assignmentCrops;
    private Tensor? _perSample;
    private Tensor? _joinedScores;
    private Tensor? _joinedCodes;
    private bool[] _gradientWritten = [];

    /// <param name="backend">Where scores, codes and gradients live.</param>
    /// <param name="temperature">Softmax temperature τ of the predictions (SwAV: 0.1).</param>
    /// <param name="epsilon">Sinkhorn regularisation ε (SwAV: 0.05).</param>
    /// <param name="sinkhornIterations">Sinkhorn iterations (SwAV: 3).</param>
    /// <param name="assignmentCrops">Crops whose codes are computed and predicted (SwAV's crops_for_assign: 0 and 1).</param>
    /// <param name="communicator">The ranks sharing the batch (codes over all their samples); null or one rank: this batch alone.</param>
    public SwavLoss(IBackend backend, float temperature = 0.1f, float epsilon = 0.05f, int sinkhornIterations = 3, IReadOnlyList<int>? assignmentCrops = null, ICommunicator? communicator = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (!(temperature > 0f) || !float.IsFinite(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a positive finite number");
        }
        _assignmentCrops = assignmentCrops?.ToArray() ?? [0, 1];
        if (_assignmentCrops.Length == 0 || _assignmentCrops.Any(c => c < 0) || _assignmentCrops.Distinct().Count() != _assignmentCrops.Length)
        {
            throw new ArgumentException($"assignment crops [{string.Join(", ", _assignmentCrops)}] must be distinct non-negative crop indices", nameof(assignmentCrops));
        }
        _backend = backend;
        _sinkhorn = new SinkhornKnopp(backend, epsilon, sinkhornIterations, SinkhornOutput.Assignments, communicator);
        Temperature = temperature;
    }

    public float Temperature { get; }

    public IReadOnlyList<int> AssignmentCrops => _assignmentCrops;

    /// <summary>The codes of the last <see cref="Compute"/>: [assignment crops, batch, prototypes] (each row sums to 1).</summary>
    public Tensor? Codes { get; private set; }

    /// <summary>
    /// loss[0] ← SwAV loss of <paramref name="scores"/> [crops·batch, K] (crop-major: rows [v·batch, (v+1)·batch) are
    /// crop v's prototype scores); <paramref name="scoresGradient"/> (same shape), when given, ← ∂loss/∂scores.
    /// </summary>
    public void Compute(Tensor scores, int crops, Tensor loss, Tensor? scoresGradient) => Compute(scores, crops, loss, scoresGradient, null);

    /// <summary>
    /// As <see cref="Compute(Tensor, int, Tensor, Tensor?)"/>, with SwAV's feature queue: the codes of assignment crop i
    /// come from Sinkhorn over [queuedScores[i]; the crop's scores] (the queued features' scores against the current
    /// prototypes, [Q, K]), of which the batch's rows are kept. The queue only widens the equipartition; it is not predicted.
    /// </summary>
    public void Compute(Tensor scores, int crops, Tensor loss, Tensor? scoresGradient, IReadOnlyList<Tensor>? queuedScores)
    {
        if (crops < 2 || scores.Shape.Rank != 2 || scores.Rows % crops != 0)
        {
            throw new ArgumentException($"{scores.Describe()}: expected [crops·batch, prototypes] with at least 2 crops, got {crops} crops");
        }
        if (_assignmentCrops.Max() >= crops)
        {
            throw new ArgumentException($"assignment crop {_assignmentCrops.Max()} does not exist among {crops} crops");
        }
        int batch = scores.Rows / crops, prototypes = scores.Cols;
        EnsureBuffers(batch, prototypes, crops);
        var codes = Codes!;
        if (queuedScores is not null && queuedScores.Count != _assignmentCrops.Length)
        {
            throw new ArgumentException($"{queuedScores.Count} queued score matrices for {_assignmentCrops.Length} assignment crops", nameof(queuedScores));
        }
        for (var i = 0; i < _assignmentCrops.Length; i++)
        {
            var cropScores = scores.SliceRows(_assignmentCrops[i] * batch, batch);
            var cropCodes = codes.SliceRows(i, 1).Reshape(batch, prototypes);
            if (queuedScores is null)
            {
                _sinkhorn.Compute(cropScores, cropCodes);
                continue;
            }
            var queued = queuedScores[i];
            if (queued.Shape.Rank != 2 || queued.Cols != prototypes)
            {
                throw new ArgumentException($"{queued.Describe()}: queued scores must be [queue, {prototypes}]", nameof(queuedScores));
            }
            var (joined, joinedCodes) = JoinedBuffers(queued.Rows + batch, prototypes);
            _backend.Copy(queued, joined.SliceRows(0, queued.Rows));
            _backend.Copy(cropScores, joined.SliceRows(queued.Rows, batch));
            _sinkhorn.Compute(joined, joinedCodes);
            _backend.Copy(joinedCodes.SliceRows(queued.Rows, batch), cropCodes);
        }
        Array.Clear(_gradientWritten);
        var weight = 1f / ((crops - 1) * _assignmentCrops.Length);
        var first = true;
        for (var i = 0; i < _assignmentCrops.Length; i++)
        {
            var target = codes.SliceRows(i, 1).Reshape(batch, prototypes);
            for (var v = 0; v < crops; v++)
            {
                if (v == _assignmentCrops[i])
                {
                    continue;
                }
                _backend.SwappedPredictionLoss(
                    scores.SliceRows(v * batch, batch), target, Temperature, loss, _perSample!,
                    scoresGradient?.SliceRows(v * batch, batch), weight,
                    accumulateLoss: !first, accumulateGradient: _gradientWritten[v]);
                first = false;
                _gradientWritten[v] = true;
            }
        }
        if (scoresGradient is not null)
        {
            // A crop that is only ever a target (the single assignment crop) has no gradient: its codes are constants.
            for (var v = 0; v < crops; v++)
            {
                if (!_gradientWritten[v])
                {
                    _backend.Fill(scoresGradient.SliceRows(v * batch, batch), 0f);
                }
            }
        }
    }

    private (Tensor Scores, Tensor Codes) JoinedBuffers(int rows, int prototypes)
    {
        var shape = new TensorShape(rows, prototypes);
        if (_joinedScores is null || _joinedScores.Shape != shape)
        {
            _joinedScores?.Dispose();
            _joinedCodes?.Dispose();
            _joinedScores = _backend.Allocate(shape, "swav queue + batch scores");
            _joinedCodes = _backend.Allocate(shape, "swav queue + batch codes");
        }
        return (_joinedScores, _joinedCodes!);
    }

    private void EnsureBuffers(int batch, int prototypes, int crops)
    {
        if (Codes is null || Codes.Shape != new TensorShape(_assignmentCrops.Length, batch, prototypes))
        {
            Codes?.Dispose();
            _perSample?.Dispose();
            Codes = _backend.Allocate(new TensorShape(_assignmentCrops.Length, batch, prototypes), "swav codes");
            _perSample = _backend.Allocate(new TensorShape(batch), "swav per-sample loss");
        }
        if (_gradientWritten.Length != crops)
        {
            _gradientWritten = new bool[crops];
        }
    }

    public void Dispose()
    {
        _sinkhorn.Dispose();
        Codes?.Dispose();
        _perSample?.Dispose();
        _perSample = null;
        _joinedScores?.Dispose();
        _joinedCodes?.Dispose();
        _joinedScores = null;
        _joinedCodes = null;
        Codes = null;
    }
}
