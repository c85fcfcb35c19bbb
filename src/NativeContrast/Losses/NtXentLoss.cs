namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// SimCLR's NT-Xent loss on the fused kernels. z [2N, dim] holds the projections of view a (rows 0..N-1) then view
/// b; the positive of row i is row (i + N) mod 2N and each row's cross-entropy runs over the other 2N − 1 rows.
/// The loss owns its workspace (O(N·dim), sized for every precision so <see cref="Precision"/> may change
/// between steps) and its statistics tensor; Forward and Backward never allocate or wait for the device.
/// <para>
/// Data-parallel (a communicator of more than one rank): the loss runs over the global batch. Forward all-gathers
/// every rank's z (rank r's rows land at [r·Rows, (r + 1)·Rows), its views a then b), computes this rank's rows
/// against all gathered rows, and all-gathers the rows' log-sum-exps (one float per row); Backward then gives this
/// rank's rows their whole gradient, what every rank's rows send them included, since the similarity is symmetric
/// (see <see cref="IBackend.NtXentBackward"/>). That replaces a reduce-scatter of a [ranks·Rows, dim] gradient by an
/// all-gather of ranks·Rows floats. <see cref="Stats"/> are this rank's rows' means; their mean over ranks (the
/// trainer's all-reduce) is the global batch's, the loss a single process computes on the whole batch.
/// </para>
/// </summary>
public sealed class NtXentLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _workspace;
    private readonly ICommunicator? _ranks;
    private readonly NtXentShard? _shard;
    private readonly Tensor? _gathered;
    private readonly Tensor? _ownLogSumExps;

    // Per precision, the workspace's log-sum-exps of every gathered row and this rank's slice of them: views made on
    // the first step in that precision, so that later steps allocate nothing.
    private readonly Dictionary<MatmulPrecision, (Tensor All, Tensor Own)> _logSumExps = [];
    private MatmulPrecision? _forwardPrecision;
    private float _temperature;

    /// <param name="rows">This rank's rows of z (2 × its images).</param>
    /// <param name="communicator">The ranks sharing the global batch; null or a single rank: the batch is this z.</param>
    public NtXentLoss(IBackend backend, int rows, int dim, float temperature, MatmulPrecision precision = MatmulPrecision.Tf32, ICommunicator? communicator = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        _backend = backend;
        Rows = rows;
        Dim = dim;
        Temperature = temperature;
        Precision = precision;
        var allRows = rows;
        if (communicator is { Size: > 1 })
        {
            _ranks = communicator;
            _shard = new NtXentShard(communicator.Rank * rows, rows);
            allRows = checked(communicator.Size * rows);
        }
        // The requested precision must run here (this throws with the reason if not); the others are sized for when they can.
        var length = Math.Max(backend.NtXentWorkspaceLength(allRows, dim, precision, _shard), ContrastiveWorkspace.LargestSupported(p => backend.NtXentWorkspaceLength(allRows, dim, p, _shard)));
        _workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, length))), "nt-xent workspace");
        try
        {
            Stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "nt-xent stats");
            if (_ranks is not null)
            {
                _gathered = backend.Allocate(new TensorShape(allRows, dim), "nt-xent gathered z");
                _ownLogSumExps = backend.Allocate(new TensorShape(rows), "nt-xent own log-sum-exps");
            }
        }
        catch
        {
            // Out of device memory: the workspace, the large part, goes back.
            _workspace.Dispose();
            Stats?.Dispose();
            _gathered?.Dispose();
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

    /// <summary>Computes the loss and statistics of z [Rows, Dim] (this rank's rows) into <see cref="Stats"/>.</summary>
    public void Forward(Tensor z)
    {
        Check.Rows(z, Rows, Dim);
        if (_ranks is null || _gathered is null || _ownLogSumExps is null || _shard is not { } shard)
        {
            _backend.NtXentForward(z, Temperature, Precision, _workspace, Stats);
        }
        else
        {
            _ranks.AllGather(z, _gathered);
            _backend.NtXentForward(_gathered, Temperature, Precision, _workspace, Stats, shard);
            if (!_logSumExps.TryGetValue(Precision, out var logSumExps))
            {
                var all = _backend.NtXentLogSumExps(_workspace, _gathered.Rows, Dim, Precision);
                logSumExps = (all, all.View(shard.Offset, new TensorShape(shard.Rows)));
                _logSumExps.Add(Precision, logSumExps);
            }
            _backend.Copy(logSumExps.Own, _ownLogSumExps);
            _ranks.AllGather(_ownLogSumExps, logSumExps.All);
        }
        _forwardPrecision = Precision;
    }

    /// <summary>
    /// dz ← gradScale · ∂loss/∂z for the z of the last <see cref="Forward"/>; data-parallel, the gradient of the sum of
    /// every rank's loss with respect to this rank's rows (so that the ranks' mean parameter gradient is the global loss's).
    /// </summary>
    public void Backward(Tensor z, Tensor dz, float gradScale = 1f)
    {
        if (_forwardPrecision is not { } precision)
        {
            throw new InvalidOperationException("NtXentLoss.Backward needs a Forward on the same z first");
        }
        Check.Rows(z, Rows, Dim);
        if (_gathered is null)
        {
            _backend.NtXentBackward(z, Temperature, precision, _workspace, dz, gradScale);
        }
        else
        {
            _backend.NtXentBackward(_gathered, Temperature, precision, _workspace, dz, gradScale, _shard);
        }
    }

    /// <summary>The statistics of the last forward, copied to the host (waits for the device).</summary>
    public ContrastiveStats ReadStats() => ContrastiveStats.Read(_backend, Stats);

    public void Dispose()
    {
        _workspace.Dispose();
        Stats.Dispose();
        _gathered?.Dispose();
        _ownLogSumExps?.Dispose();
    }
}
