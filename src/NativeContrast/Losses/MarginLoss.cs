namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// The margin (pairwise) contrastive loss of Hadsell, Chopra and LeCun (2006) on L2-normalised rows u [2N, dim]:
/// positives (rows i and (i + N) mod 2N) are pulled together by ½d², every other pair pushed apart by
/// ½max(0, margin − d)² (see <see cref="IBackend.MarginLoss"/> for the definition and its gradient). The loss owns its
/// workspace and statistics; <see cref="Compute"/> never allocates or waits for the device. A step normalises z
/// with <see cref="IBackend.L2NormalizeRows"/>, computes, and maps du back with <see cref="IBackend.L2NormalizeRowsBackward"/>.
/// </summary>
public sealed class MarginLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _workspace;
    private float _margin;

    public MarginLoss(IBackend backend, int rows, int dim, float margin)
    {
        ArgumentNullException.ThrowIfNull(backend);
        _backend = backend;
        Rows = rows;
        Dim = dim;
        Margin = margin;
        _workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, backend.MarginLossWorkspaceLength(rows, dim)))), "margin workspace");
        try
        {
            Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "margin stats");
        }
        catch
        {
            _workspace.Dispose();
            throw;
        }
    }

    public int Rows { get; }

    public int Dim { get; }

    /// <summary>m: negatives closer than this distance (of unit vectors, so in (0, 2] to matter) are pushed apart.</summary>
    public float Margin
    {
        get => _margin;
        set
        {
            ContrastiveCheck.Margin(value);
            _margin = value;
        }
    }

    /// <summary>[loss, mean positive cosine, top-1 accuracy] of the last <see cref="Compute"/>, on the backend.</summary>
    public Tensor Stats { get; }

    /// <summary>Loss and statistics of u [Rows, Dim] (unit rows) into <see cref="Stats"/>; du ← gradScale · ∂loss/∂u when given.</summary>
    public void Compute(Tensor u, Tensor? du, float gradScale = 1f)
    {
        Check.Rows(u, Rows, Dim);
        _backend.MarginLoss(u, Margin, _workspace, Stats, du, gradScale);
    }

    /// <summary>The statistics of the last <see cref="Compute"/>, copied to the host (waits for the device).</summary>
    public ContrastiveStats ReadStats() => ContrastiveStats.Read(_backend, Stats);

    public void Dispose()
    {
        _workspace.Dispose();
        Stats.Dispose();
    }
}
