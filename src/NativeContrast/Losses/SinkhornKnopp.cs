namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// SwAV's Sinkhorn-Knopp codes (distributed_sinkhorn) on a backend, owning its workspace: the first call for a size
/// allocates it, later calls of the same or a smaller size allocate nothing. With a communicator of several ranks,
/// each rank passes its own samples (the same count on every rank) and gets their rows of the codes of every rank's
/// samples together: the prototype normalisations are reduced across ranks (see <see cref="SinkhornSync"/>).
/// </summary>
public sealed class SinkhornKnopp : IDisposable
{
    private readonly IBackend _backend;
    private readonly ICommunicator? _ranks;
    private Tensor? _workspace;
    private SinkhornSync? _sync;

    /// <param name="backend">Where the scores live and the codes are computed.</param>
    /// <param name="epsilon">Entropic regularisation: Q ∝ exp(scores/ε) before the normalisations (SwAV: 0.05).</param>
    /// <param name="iterations">Sinkhorn iterations, each a prototype then a sample normalisation (SwAV: 3).</param>
    /// <param name="output">Codes scaled as SwAV returns them (rows sum to 1) or as the transport plan (rows sum to 1/B).</param>
    /// <param name="communicator">The ranks whose samples share the normalisations; null or one rank: this process's alone.</param>
    public SinkhornKnopp(IBackend backend, float epsilon = 0.05f, int iterations = 3, SinkhornOutput output = SinkhornOutput.Assignments, ICommunicator? communicator = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (!(epsilon > 0f) || !float.IsFinite(epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be a positive finite number");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        _backend = backend;
        _ranks = communicator is { Size: > 1 } ranks ? ranks : null;
        Epsilon = epsilon;
        Iterations = iterations;
        Output = output;
    }

    public float Epsilon { get; }

    public int Iterations { get; }

    public SinkhornOutput Output { get; }

    /// <summary>codes [B, K] ← Sinkhorn-Knopp codes of scores [B, K] (samples × prototypes; this rank's, with several).</summary>
    public void Compute(Tensor scores, Tensor codes)
    {
        var needed = _backend.SinkhornWorkspaceLength(scores.Rows, scores.Cols);
        if (_workspace is null || _workspace.Length < needed)
        {
            _workspace?.Dispose();
            _workspace = _backend.Allocate(new TensorShape(checked((int)needed)), "sinkhorn workspace");
        }
        _backend.SinkhornCodes(scores, codes, _workspace, Epsilon, Iterations, Output, Sync(scores.Rows, scores.Cols));
    }

    public void Dispose()
    {
        _workspace?.Dispose();
        _workspace = null;
        _sync?.Gathered.Dispose();
        _sync = null;
    }

    /// <summary>The collectives for <paramref name="rows"/> samples per rank and <paramref name="prototypes"/>, kept while the size holds.</summary>
    private SinkhornSync? Sync(int rows, int prototypes)
    {
        if (_ranks is null)
        {
            return null;
        }
        var samples = checked(_ranks.Size * rows);
        if (_sync is null || _sync.Samples != samples || _sync.Gathered.Length != SinkhornSync.GatheredLength(_ranks.Size, prototypes))
        {
            _sync?.Gathered.Dispose();
            _sync = null;
            var gathered = _backend.Allocate(new TensorShape(SinkhornSync.GatheredLength(_ranks.Size, prototypes)), "sinkhorn gathered column sums");
            _sync = new SinkhornSync(samples, gathered, _ranks.AllGather, _ranks.AllReduce);
        }
        return _sync;
    }
}
