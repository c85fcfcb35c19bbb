namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// SimCLR's NT-Xent loss on the fused kernels. z [2N, dim] holds the projections of view a (rows 0..N-1) then view
/// b; the positive of row i is row (i + N) mod 2N and each row's cross-entropy runs over the other 2N − 1 rows.
/// The loss owns its workspace (O(N·dim), sized for every precision so <see cref="Precision"/> may change
/// between steps) and its statistics tensor; Forward and Backward never allocate or wait for the device.
/// </summary>
public sealed class NtXentLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _workspace;
    private MatmulPrecision? _forwardPrecision;
    private float _temperature;

    public NtXentLoss(IBackend backend, int rows, int dim, float temperature, MatmulPrecision precision = MatmulPrecision.Tf32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        _backend = backend;
        Rows = rows;
        Dim = dim;
        Temperature = temperature;
        Precision = precision;
        // The requested precision must run here (this throws with the reason if not); the others are sized for when they can.
        var length = Math.Max(backend.NtXentWorkspaceLength(rows, dim, precision), ContrastiveWorkspace.LargestSupported(p => backend.NtXentWorkspaceLength(rows, dim, p)));
        _workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, length))), "nt-xent workspace");
        try
        {
            Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "nt-xent stats");
        }
        catch
        {
            // Out of device memory: the workspace, the large part, goes back.
            _workspace.Dispose();
            throw;
        }
    }

    public int Rows { get; }

    public int Dim { get; }

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

    /// <summary>Operand precision of the similarity products on tensor cores (the CPU computes every mode in fp32).</summary>
    public MatmulPrecision Precision { get; set; }

    /// <summary>[loss, mean positive cosine, top-1 accuracy] of the last <see cref="Forward"/>, on the backend.</summary>
    public Tensor Stats { get; }

    public long WorkspaceBytes => _workspace.Length * sizeof(float);

    /// <summary>Computes the loss and statistics of z [Rows, Dim] into <see cref="Stats"/>.</summary>
    public void Forward(Tensor z)
    {
        Check.Rows(z, Rows, Dim);
        _backend.NtXentForward(z, Temperature, Precision, _workspace, Stats);
        _forwardPrecision = Precision;
    }

    /// <summary>dz ← gradScale · ∂loss/∂z for the z of the last <see cref="Forward"/>.</summary>
    public void Backward(Tensor z, Tensor dz, float gradScale = 1f)
    {
        if (_forwardPrecision is not { } precision)
        {
            throw new InvalidOperationException("NtXentLoss.Backward needs a Forward on the same z first");
        }
        Check.Rows(z, Rows, Dim);
        _backend.NtXentBackward(z, Temperature, precision, _workspace, dz, gradScale);
    }

    /// <summary>The statistics of the last forward, copied to the host (waits for the device).</summary>
    public ContrastiveStats ReadStats() => ContrastiveStats.Read(_backend, Stats);

    public void Dispose()
    {
        _workspace.Dispose();
        Stats.Dispose();
    }
}
