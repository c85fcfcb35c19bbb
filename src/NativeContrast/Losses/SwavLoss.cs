namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// SwAV's multi-crop swapped-prediction loss (main_swav.py, without the feature queue). For every assignment crop c
/// the codes q_c = Sinkhorn(scores of crop c) are constants; every other crop v predicts them:
/// loss = 1/|assign| Σ_c 1/(V−1) Σ_{v≠c} mean_b −Σ_k q_c[b,k]·log softmax(scores_v[b,:]/τ)[k].
/// Owns its codes, per-sample and Sinkhorn buffers (grow-only), so repeated calls of one size allocate no device memory.
/// </summary>
public sealed class SwavLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly SinkhornKnopp _sinkhorn;
    private readonly int[] _assignmentCrops;
    private Tensor? _perSample;
    private bool[] _gradientWritten = [];

    /// <param name="backend">Where scores, codes and gradients live.</param>
    /// <param name="temperature">Softmax temperature τ of the predictions (SwAV: 0.1).</param>
    /// <param name="epsilon">Sinkhorn regularisation ε (SwAV: 0.05).</param>
    /// <param name="sinkhornIterations">Sinkhorn iterations (SwAV: 3).</param>
    /// <param name="assignmentCrops">Crops whose codes are computed and predicted (SwAV's crops_for_assign: 0 and 1).</param>
    public SwavLoss(IBackend backend, float temperature = 0.1f, float epsilon = 0.05f, int sinkhornIterations = 3, IReadOnlyList<int>? assignmentCrops = null)
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
        _sinkhorn = new SinkhornKnopp(backend, epsilon, sinkhornIterations, SinkhornOutput.Assignments);
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
    public void Compute(Tensor scores, int crops, Tensor loss, Tensor? scoresGradient)
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
        for (var i = 0; i < _assignmentCrops.Length; i++)
        {
            _sinkhorn.Compute(scores.SliceRows(_assignmentCrops[i] * batch, batch), codes.SliceRows(i, 1).Reshape(batch, prototypes));
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
        Codes = null;
    }
}
