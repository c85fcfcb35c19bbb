namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// SwAV's Sinkhorn-Knopp codes (distributed_sinkhorn on one process) on a backend, owning its workspace: the first
/// call for a size allocates it, later calls of the same or a smaller size allocate nothing.
/// </summary>
public sealed class SinkhornKnopp : IDisposable
{
    private readonly IBackend _backend;
    private Tensor? _workspace;

    /// <param name="backend">Where the scores live and the codes are computed.</param>
    /// <param name="epsilon">Entropic regularisation: Q ∝ exp(scores/ε) before the normalisations (SwAV: 0.05).</param>
    /// <param name="iterations">Sinkhorn iterations, each a prototype then a sample normalisation (SwAV: 3).</param>
    /// <param name="output">Codes scaled as SwAV returns them (rows sum to 1) or as the transport plan (rows sum to 1/B).</param>
    public SinkhornKnopp(IBackend backend, float epsilon = 0.05f, int iterations = 3, SinkhornOutput output = SinkhornOutput.Assignments)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (!(epsilon > 0f) || !float.IsFinite(epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be a positive finite number");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        _backend = backend;
        Epsilon = epsilon;
        Iterations = iterations;
        Output = output;
    }

    public float Epsilon { get; }

    public int Iterations { get; }

    public SinkhornOutput Output { get; }

    /// <summary>codes [B, K] ← Sinkhorn-Knopp codes of scores [B, K] (samples × prototypes).</summary>
    public void Compute(Tensor scores, Tensor codes)
    {
        var needed = _backend.SinkhornWorkspaceLength(scores.Rows, scores.Cols);
        if (_workspace is null || _workspace.Length < needed)
        {
            _workspace?.Dispose();
            _workspace = _backend.Allocate(new TensorShape(checked((int)needed)), "sinkhorn workspace");
        }
        _backend.SinkhornCodes(scores, codes, _workspace, Epsilon, Iterations, Output);
    }

    public void Dispose()
    {
        _workspace?.Dispose();
        _workspace = null;
    }
}
