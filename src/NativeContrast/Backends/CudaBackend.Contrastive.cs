namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

// Launchers for native/contrastive.cu. The tiled kernels exist per (operand format, padded dim); the constants
// below mirror nc_contrastive::Tiling. Workspaces are carved into 256-byte aligned sections; the number of column
// splits (grid.y) is chosen per call from the device's SM count and the kernel's occupancy, and the workspace
// length accounts for it, so a workspace sized by *WorkspaceLength on this backend always fits. The planners are
// pure functions of the device's numbers (PlanNtXent, PlanInfoNce, PlanSplits), so the tests run them for any GPU.
public sealed partial class CudaBackend
{
    private const int ContrastiveThreads = 128;
    /// <summary>Operand buffers (and row tiles) are padded to a multiple of this many rows (kMaxBlockRows).</summary>
    private const int ContrastivePadRows = 128;
    private const int WarpRowsThreads = 256;
    private const int MaxFusedDim = 256;

    /// <summary>Most splits of the NT-Xent forward: its partials are two floats per row and split, so at most 64 per row.</summary>
    internal const int MaxForwardSplits = 32;

    /// <summary>
    /// Most splits of the NT-Xent backward: every split writes a gradient partial as large as the operand, so this
    /// bounds the workspace to a few times N x d whatever the device.
    /// </summary>
    internal const int MaxBackwardSplits = 8;

    /// <summary>Most splits of the InfoNCE sweep, whose partials scale with the batch, not with the queue it sweeps.</summary>
    internal const int MaxSweepSplits = 256;

    /// <summary>cp.async copies 16 bytes at a time from the operand sections; the partials are written as float2.</summary>
    internal const int OperandAlignmentBytes = 16;

    private static readonly string[] FormatNames = ["fp32", "tf32", "bf16"];
    private static readonly int[] PaddedDims = [64, 128, 256];
    private static readonly string[,] NtXentForwardKernels = KernelNames("nc_contrastive_ntxent_forward");
    private static readonly string[,] NtXentBackwardKernels = KernelNames("nc_contrastive_ntxent_backward");
    private static readonly string[,] InfoNceSweepKernels = KernelNames("nc_contrastive_infonce_sweep");

    private readonly Dictionary<string, int> _residentBlocks = [];

    /// <summary>A shard's anchor rows take a second operand buffer of their own, so its workspace is larger.</summary>
    public long NtXentWorkspaceLength(int rows, int dim, MatmulPrecision precision, NtXentShard? shard = null) => PlanNtXent(rows, dim, precision, shard).Length;

    public unsafe void NtXentForward(Tensor z, float temperature, MatmulPrecision precision, Tensor workspace, Tensor stats, NtXentShard? shard = null)
    {
        var (rows, dim) = ContrastiveCheck.NtXent(z, temperature);
        var owned = ContrastiveCheck.Shard(z, shard);
        var plan = PlanNtXent(rows, dim, precision, owned);
        ContrastiveCheck.Workspace(workspace, plan.Length);
        ContrastiveCheck.Stats(stats);
        var ws = AlignedWorkspace(workspace);
        Context.MakeCurrent();
        ulong operand = ws + plan.Operand, invNorm = ws + plan.InvNorm, lse2 = ws + plan.Lse2, positive = ws + plan.Positive;
        ulong rowOperand = ws + plan.RowOperand, rowInvNorm = ws + plan.RowInvNorm;
        ulong rowStats = ws + plan.RowStats, partial = ws + plan.Partial, statsPointer = stats.DevicePointer();
        PrepareOperand(z.DevicePointer(), rows, plan.RowsPadded, dim, normalize: true, plan.Tiling, operand, invNorm);
        if (rowOperand != operand)
        {
            PrepareOperand(z.SliceRows(owned.Offset, owned.Rows).DevicePointer(), owned.Rows, plan.AnchorRowsPadded, dim, normalize: true, plan.Tiling, rowOperand, rowInvNorm);
        }

        int anchors = owned.Rows, rowOffset = owned.Offset, splits = plan.ForwardSplits, tilesPerSplit = plan.ForwardTilesPerSplit;
        var logitScale = LogitScale(temperature);
        void** forward = stackalloc void*[] { &rowOperand, &operand, &anchors, &rows, &rowOffset, &logitScale, &tilesPerSplit, &partial, &positive };
        Kernel(plan.Tiling.Name(NtXentForwardKernels)).Launch(new Dim3((uint)(plan.AnchorRowsPadded / plan.Tiling.BlockRows), (uint)splits), ContrastiveThreads, plan.Tiling.SharedBytes(plan.Tiling.ColumnTile), Stream, forward);

        void** combine = stackalloc void*[] { &partial, &positive, &anchors, &rowOffset, &splits, &logitScale, &lse2, &rowStats };
        Kernel("nc_contrastive_ntxent_combine").Launch(Grid(anchors, 256), 256, 0, Stream, combine);
        LaunchStats(rowStats, anchors, statsPointer);
    }

    public unsafe void NtXentBackward(Tensor z, float temperature, MatmulPrecision precision, Tensor workspace, Tensor dz, float gradScale = 1f, NtXentShard? shard = null)
    {
        var (rows, dim) = ContrastiveCheck.NtXent(z, temperature);
        var owned = ContrastiveCheck.Shard(z, shard);
        var plan = PlanNtXent(rows, dim, precision, owned);
        ContrastiveCheck.Workspace(workspace, plan.Length);
        ContrastiveCheck.Gradient(z, dz, owned);
        var ws = AlignedWorkspace(workspace);
        Context.MakeCurrent();
        ulong operand = ws + plan.Operand, lse2 = ws + plan.Lse2, gradPartial = ws + plan.GradPartial;
        ulong rowOperand = ws + plan.RowOperand, rowInvNorm = ws + plan.RowInvNorm;
        ulong zPointer = z.SliceRows(owned.Offset, owned.Rows).DevicePointer(), dzPointer = dz.DevicePointer();
        int anchors = owned.Rows, anchorsPadded = plan.AnchorRowsPadded, rowOffset = owned.Offset;
        int splits = plan.BackwardSplits, tilesPerSplit = plan.BackwardTilesPerSplit, dpad = plan.Tiling.PaddedDim;
        var logitScale = LogitScale(temperature);
        void** backward = stackalloc void*[] { &rowOperand, &operand, &lse2, &anchors, &anchorsPadded, &rows, &rowOffset, &logitScale, &tilesPerSplit, &gradPartial };
        Kernel(plan.Tiling.Name(NtXentBackwardKernels)).Launch(new Dim3((uint)(anchorsPadded / plan.Tiling.BlockRows), (uint)splits), ContrastiveThreads, plan.Tiling.SharedBytes(plan.Tiling.ColumnTile), Stream, backward);

        var gradFactor = gradScale / (anchors * temperature);
        void** finalize = stackalloc void*[] { &zPointer, &anchors, &dim, &rowInvNorm, &gradPartial, &splits, &anchorsPadded, &dpad, &gradFactor, &dzPointer };
        Kernel("nc_contrastive_ntxent_finalize").Launch(Grid((long)anchors * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, finalize);
    }

    /// <summary>The base-2 log-sum-exps (lse2) section of the workspace, at the same place with a shard or without.</summary>
    public Tensor NtXentLogSumExps(Tensor workspace, int rows, int dim, MatmulPrecision precision)
    {
        var plan = PlanNtXent(rows, dim, precision);
        return workspace.View((long)plan.Lse2 / sizeof(float), new TensorShape(rows), "nt-xent lse2");
    }

    /// <summary>
    /// A queue of any width: the label-masked InfoNCE and the unfused losses read its keys alone. The fused sweep's
    /// operand copies exist up to the fused kernels' width (above it, PaddedDim is 0 and asking for one throws).
    /// </summary>
    public KeyQueue CreateKeyQueue(int capacity, int dim)
    {
        var paddedDim = dim <= MaxFusedDim ? ContrastiveTiling.For(dim, MatmulPrecision.Fp32).PaddedDim : 0;
        return new CudaKeyQueue(this, capacity, dim, paddedDim);
    }

    public unsafe void EnqueueKeys(KeyQueue queue, Tensor keys)
    {
        var keyQueue = Own(queue);
        ContrastiveCheck.Keys(queue, keys);
        var count = keys.Rows;
        var skipped = Math.Max(0, count - queue.Capacity);
        if (skipped > 0)
        {
            keys = keys.SliceRows(skipped, queue.Capacity);
        }
        Context.MakeCurrent();
        var kept = count - skipped;
        int dim = queue.Dim, capacity = queue.Capacity, dpad = keyQueue.PaddedDim;
        var position = (int)((queue.Position + (long)skipped) % capacity);
        ulong source = keys.DevicePointer(), canonical = keyQueue.Keys.DevicePointer();
        ulong fp32 = keyQueue.ShadowPointer(MatmulPrecision.Fp32), tf32 = keyQueue.ShadowPointer(MatmulPrecision.Tf32), bf16 = keyQueue.ShadowPointer(MatmulPrecision.Bf16);
        void** args = stackalloc void*[] { &source, &kept, &dim, &capacity, &position, &canonical, &dpad, &fp32, &tf32, &bf16 };
        Kernel("nc_contrastive_enqueue").Launch(Grid((long)kept * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, args);
        queue.Position = (int)((queue.Position + (long)count) % capacity);
    }

    public long InfoNceWorkspaceLength(int batch, int dim, int queueLength, MatmulPrecision precision) =>
        PlanInfoNce(batch, dim, queueLength, precision).Length;

    public unsafe void InfoNce(Tensor q, Tensor k, KeyQueue queue, float temperature, MatmulPrecision precision, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f)
    {
        var keyQueue = Own(queue);
        var (batch, dim) = ContrastiveCheck.InfoNce(q, k, queue, temperature, dq);
        var plan = PlanInfoNce(batch, dim, queue.Capacity, precision);
        ContrastiveCheck.Workspace(workspace, plan.Length);
        ContrastiveCheck.Stats(stats);
        var ws = AlignedWorkspace(workspace);
        Context.MakeCurrent();
        ulong queries = ws + plan.Queries, invNormQ = ws + plan.InvNorm, partial = ws + plan.Partial, weighted = ws + plan.Weighted;
        ulong rowStats = ws + plan.RowStats, qPointer = q.DevicePointer(), kPointer = k.DevicePointer();
        ulong dqPointer = dq?.DevicePointer() ?? 0UL, statsPointer = stats.DevicePointer();
        ulong keys = keyQueue.Operand(precision);
        ContrastiveCheck.Aligned(keys, OperandAlignmentBytes, "the key queue's operand");
        PrepareOperand(qPointer, batch, plan.RowsPadded, dim, normalize: true, plan.Tiling, queries, invNormQ);

        int queueLength = queue.Capacity, splits = plan.Splits, tilesPerSplit = plan.TilesPerSplit, dpad = plan.Tiling.PaddedDim;
        var logitScale = LogitScale(temperature);
        void** sweep = stackalloc void*[] { &queries, &keys, &batch, &queueLength, &logitScale, &tilesPerSplit, &partial, &weighted };
        Kernel(plan.Tiling.Name(InfoNceSweepKernels)).Launch(new Dim3((uint)(plan.RowsPadded / plan.Tiling.BlockRows), (uint)splits), ContrastiveThreads, plan.Tiling.SharedBytes(plan.Tiling.SweepColumnTile), Stream, sweep);

        var gradFactor = gradScale / (batch * temperature);
        void** combine = stackalloc void*[] { &qPointer, &kPointer, &batch, &dim, &invNormQ, &partial, &weighted, &splits, &dpad, &logitScale, &gradFactor, &dqPointer, &rowStats };
        Kernel("nc_contrastive_infonce_combine").Launch(Grid((long)batch * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, combine);
        LaunchStats(rowStats, batch, statsPointer);
    }

    public unsafe void MaskSelfSimilarity(Tensor logits)
    {
        Context.MakeCurrent();
        ulong x = logits.DevicePointer();
        int rows = logits.Rows, cols = logits.Cols;
        void** args = stackalloc void*[] { &x, &rows, &cols };
        Kernel("nc_contrastive_mask_self").Launch(Grid(Math.Min(rows, cols), 256), 256, 0, Stream, args);
    }

    public unsafe void PositiveLogits(Tensor logits, PositivePairing pairing, Tensor positives, Tensor hits)
    {
        ContrastiveCheck.Pairing(logits, pairing);
        Check.Length(positives.Length, logits.Rows, positives.Describe());
        Check.Length(hits.Length, logits.Rows, hits.Describe());
        Context.MakeCurrent();
        ulong x = logits.DevicePointer(), p = positives.DevicePointer(), h = hits.DevicePointer();
        int rows = logits.Rows, cols = logits.Cols, mode = (int)pairing;
        void** args = stackalloc void*[] { &x, &rows, &cols, &mode, &p, &h };
        Kernel("nc_contrastive_positive_logits").Launch(Grid((long)rows * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, args);
    }

    public unsafe void AddAtPositives(Tensor x, PositivePairing pairing, float value)
    {
        ContrastiveCheck.Pairing(x, pairing);
        Context.MakeCurrent();
        ulong pointer = x.DevicePointer();
        int rows = x.Rows, cols = x.Cols, mode = (int)pairing;
        void** args = stackalloc void*[] { &pointer, &rows, &cols, &mode, &value };
        Kernel("nc_contrastive_add_at_positives").Launch(Grid(rows, 256), 256, 0, Stream, args);
    }

    public unsafe void RowDot(Tensor a, Tensor b, float alpha, Tensor result)
    {
        Check.SameShape(a, b);
        Check.Length(result.Length, a.Rows, result.Describe());
        Context.MakeCurrent();
        ulong x = a.DevicePointer(), y = b.DevicePointer(), r = result.DevicePointer();
        int rows = a.Rows, cols = a.Cols;
        void** args = stackalloc void*[] { &x, &y, &rows, &cols, &alpha, &r };
        Kernel("nc_contrastive_row_dot").Launch(Grid((long)rows * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, args);
    }

    public void ConcatColumns(Tensor left, Tensor right, Tensor result) => MoveColumns(left, right, result, toParts: 0);

    public void SplitColumns(Tensor source, Tensor left, Tensor right) => MoveColumns(left, right, source, toParts: 1);

    public unsafe void AddScaledRows(Tensor x, Tensor rowScale, Tensor y)
    {
        Check.SameShape(x, y);
        Check.Length(rowScale.Length, x.Rows, rowScale.Describe());
        Context.MakeCurrent();
        ulong xs = x.DevicePointer(), s = rowScale.DevicePointer(), ys = y.DevicePointer();
        int rows = x.Rows, cols = x.Cols;
        void** args = stackalloc void*[] { &xs, &s, &rows, &cols, &ys };
        Kernel("nc_contrastive_add_scaled_rows").Launch(GridStride(x.Length), 256, 0, Stream, args);
    }

    private unsafe void MoveColumns(Tensor left, Tensor right, Tensor whole, int toParts)
    {
        if (left.Rows != whole.Rows || right.Rows != whole.Rows || left.Cols + right.Cols != whole.Cols)
        {
            throw new ArgumentException($"{whole.Describe()} is not {left.Describe()} and {right.Describe()} side by side");
        }
        Context.MakeCurrent();
        ulong l = left.DevicePointer(), r = right.DevicePointer(), w = whole.DevicePointer();
        int leftCols = left.Cols, rightCols = right.Cols, rows = whole.Rows;
        void** args = stackalloc void*[] { &l, &leftCols, &r, &rightCols, &rows, &w, &toParts };
        Kernel("nc_contrastive_concat_columns").Launch(GridStride(whole.Length), 256, 0, Stream, args);
    }

    /// <summary>x → operand buffer [rowsPadded, dpad] of the tiling's format (zero padding), optionally normalised.</summary>
    private unsafe void PrepareOperand(ulong x, int rows, int rowsPadded, int dim, bool normalize, ContrastiveTiling tiling, ulong operand, ulong invNorm)
    {
        int doNormalize = normalize ? 1 : 0, format = tiling.Format, dpad = tiling.PaddedDim;
        void** args = stackalloc void*[] { &x, &rows, &rowsPadded, &dim, &doNormalize, &format, &dpad, &operand, &invNorm };
        Kernel("nc_contrastive_prepare_operand").Launch(Grid((long)rowsPadded * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, args);
    }

    private unsafe void LaunchStats(ulong rowStats, int rows, ulong stats)
    {
        void** args = stackalloc void*[] { &rowStats, &rows, &stats };
        Kernel("nc_contrastive_stats").Launch(1, 512, 0, Stream, args);
    }

    private static Dim3 Grid(long count, int threads) => new(Blocks(count, threads));

    /// <summary>Blocks for a grid-stride loop: enough to fill the device, no more.</summary>
    private Dim3 GridStride(long count) => new((uint)Math.Min(Blocks(count, 256), (long)Info.Multiprocessors * 16));

    /// <summary>log2(e) / tau: the kernels keep logits in base-2 units.</summary>
    private static float LogitScale(float temperature) => (float)(1.0 / (Math.Log(2.0) * temperature));

    private static CudaKeyQueue Own(KeyQueue queue) =>
        queue as CudaKeyQueue ?? throw new ArgumentException($"the key queue lives on {queue.Keys.Device}; the CUDA backend needs one it created");

    private static string[,] KernelNames(string prefix)
    {
        var names = new string[FormatNames.Length, PaddedDims.Length];
        for (var f = 0; f < FormatNames.Length; f++)
        {
            for (var d = 0; d < PaddedDims.Length; d++)
            {
                names[f, d] = $"{prefix}_{FormatNames[f]}_d{PaddedDims[d]}";
            }
        }
        return names;
    }

    /// <summary>
    /// Column splits for a grid of rowTiles x splits blocks on a device that holds <paramref name="slots"/> blocks at
    /// once. Splitting only serves to fill the device, and every split writes a partial result to store and merge, so
    /// the count is at most what one full wave needs and at most <paramref name="maxSplits"/>; among those, the one
    /// whose estimated makespan (waves x column tiles per block) is smallest, the fewest among equals.
    /// </summary>
    internal static (int Splits, int TilesPerSplit) PlanSplits(long slots, int rowTiles, int columnTiles, int maxSplits)
    {
        var fill = Math.Max(1, (slots + rowTiles - 1) / rowTiles);
        var limit = (int)Math.Min(Math.Min(columnTiles, maxSplits), fill);
        var (best, bestCost) = (1, long.MaxValue);
        for (var splits = 1; splits <= limit; splits++)
        {
            var tilesPerSplit = (columnTiles + splits - 1) / splits;
            if ((columnTiles + tilesPerSplit - 1) / tilesPerSplit != splits)
            {
                continue;
            }
            var waves = ((long)rowTiles * splits + slots - 1) / slots;
            var cost = waves * tilesPerSplit;
            if (cost < bestCost)
            {
                (best, bestCost) = (splits, cost);
            }
        }
        return (best, (columnTiles + best - 1) / best);
    }

    private int ResidentBlocks(string kernel, int sharedBytes)
    {
        if (_residentBlocks.TryGetValue(kernel, out var blocks))
        {
            return blocks;
        }
        if (sharedBytes > Info.MaxSharedMemoryPerBlockOptIn)
        {
            throw new NotSupportedException($"{kernel} needs {sharedBytes} bytes of shared memory per block; {Info.Name} allows {Info.MaxSharedMemoryPerBlockOptIn} (use a smaller dim, bf16, or the unfused composition)");
        }
        Context.MakeCurrent();
        blocks = Math.Max(1, Kernel(kernel).MaxActiveBlocksPerMultiprocessor(ContrastiveThreads, sharedBytes));
        _residentBlocks[kernel] = blocks;
        return blocks;
    }

    /// <summary>The workspace's device address, which must suit cp.async (the sections within are 256-byte aligned).</summary>
    private static ulong AlignedWorkspace(Tensor workspace)
    {
        var address = workspace.DevicePointer();
        ContrastiveCheck.Aligned(address, OperandAlignmentBytes, workspace.Describe());
        return address;
    }

    private NtXentPlan PlanNtXent(int rows, int dim, MatmulPrecision precision, NtXentShard? shard = null) =>
        PlanNtXent(rows, dim, precision, Info.Multiprocessors, ResidentBlocks, shard is { } s && s.Rows != rows ? s.Rows : null);

    private InfoNcePlan PlanInfoNce(int batch, int dim, int queueLength, MatmulPrecision precision) =>
        PlanInfoNce(batch, dim, queueLength, precision, Info.Multiprocessors, ResidentBlocks);

    /// <param name="residentBlocks">Blocks of a kernel (by name, with its dynamic shared bytes) one multiprocessor holds.</param>
    /// <param name="shardRows">The anchor rows of a data-parallel shard (null: every row of z is an anchor).</param>
    internal static NtXentPlan PlanNtXent(int rows, int dim, MatmulPrecision precision, int multiprocessors, Func<string, int, int> residentBlocks, int? shardRows = null)
    {
        var tiling = ContrastiveTiling.For(dim, precision);
        var rowsPadded = RoundUp(rows, ContrastivePadRows);
        var anchors = shardRows ?? rows;
        var anchorsPadded = RoundUp(anchors, ContrastivePadRows);
        var rowTiles = anchorsPadded / tiling.BlockRows;
        var columnTiles = (rows + tiling.ColumnTile - 1) / tiling.ColumnTile;
        var sharedBytes = tiling.SharedBytes(tiling.ColumnTile);
        var forwardKernel = tiling.Name(NtXentForwardKernels);
        var backwardKernel = tiling.Name(NtXentBackwardKernels);
        var (forwardSplits, forwardTiles) = PlanSplits((long)multiprocessors * residentBlocks(forwardKernel, sharedBytes), rowTiles, columnTiles, MaxForwardSplits);
        var (backwardSplits, backwardTiles) = PlanSplits((long)multiprocessors * residentBlocks(backwardKernel, sharedBytes), rowTiles, columnTiles, MaxBackwardSplits);
        var layout = new WorkspaceLayout();
        var operand = layout.Take(tiling.OperandFloats(rowsPadded));
        var invNorm = layout.Take(rowsPadded);
        var lse2 = layout.Take(rowsPadded);
        // A shard's anchor rows start at any row of z, and the kernels stage whole tiles of padded rows: they get an
        // operand buffer of their own. Without a shard the anchors are the columns' operand.
        var sharded = shardRows is not null;
        var rowOperand = sharded ? layout.Take(tiling.OperandFloats(anchorsPadded)) : operand;
        var rowInvNorm = sharded ? layout.Take(anchorsPadded) : invNorm;
        return new NtXentPlan(
            tiling, rowsPadded, anchorsPadded, forwardSplits, forwardTiles, backwardSplits, backwardTiles,
            Operand: operand,
            InvNorm: invNorm,
            Lse2: lse2,
            RowOperand: rowOperand,
            RowInvNorm: rowInvNorm,
            Positive: layout.Take(anchors),
            RowStats: layout.Take(3L * anchors),
            Partial: layout.Take(2L * forwardSplits * anchors),
            GradPartial: layout.Take((long)backwardSplits * anchorsPadded * tiling.PaddedDim),
            Length: layout.Floats);
    }

    internal static InfoNcePlan PlanInfoNce(int batch, int dim, int queueLength, MatmulPrecision precision, int multiprocessors, Func<string, int, int> residentBlocks)
    {
        var tiling = ContrastiveTiling.For(dim, precision);
        var rowsPadded = RoundUp(batch, ContrastivePadRows);
        var columnTiles = (queueLength + tiling.SweepColumnTile - 1) / tiling.SweepColumnTile;
        var kernel = tiling.Name(InfoNceSweepKernels);
        var slots = (long)multiprocessors * residentBlocks(kernel, tiling.SharedBytes(tiling.SweepColumnTile));
        var (splits, tilesPerSplit) = PlanSplits(slots, rowsPadded / tiling.BlockRows, columnTiles, MaxSweepSplits);
        var layout = new WorkspaceLayout();
        return new InfoNcePlan(
            tiling, rowsPadded, splits, tilesPerSplit,
            Queries: layout.Take(tiling.OperandFloats(rowsPadded)),
            InvNorm: layout.Take(rowsPadded),
            Partial: layout.Take(2L * splits * batch),
            Weighted: layout.Take((long)splits * batch * tiling.PaddedDim),
            RowStats: layout.Take(3L * batch),
            Length: layout.Floats);
    }

    private static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;

    /// <summary>Sections of a workspace, each starting on a 256-byte boundary; offsets are returned in bytes.</summary>
    private sealed class WorkspaceLayout
    {
        private const long AlignFloats = 64;

        public long Floats { get; private set; }

        public ulong Take(long floats)
        {
            var offset = Floats;
            Floats += (floats + AlignFloats - 1) / AlignFloats * AlignFloats;
            return (ulong)offset * sizeof(float);
        }
    }

    internal readonly record struct NtXentPlan(
        ContrastiveTiling Tiling, int RowsPadded, int AnchorRowsPadded, int ForwardSplits, int ForwardTilesPerSplit, int BackwardSplits, int BackwardTilesPerSplit,
        ulong Operand, ulong InvNorm, ulong Lse2, ulong RowOperand, ulong RowInvNorm, ulong Positive, ulong RowStats, ulong Partial, ulong GradPartial, long Length);

    internal readonly record struct InfoNcePlan(
        ContrastiveTiling Tiling, int RowsPadded, int Splits, int TilesPerSplit,
        ulong Queries, ulong InvNorm, ulong Partial, ulong Weighted, ulong RowStats, long Length);

    /// <summary>Geometry of the tiled kernels for one (format, padded dim); mirrors nc_contrastive::Tiling.</summary>
    internal readonly record struct ContrastiveTiling(int Format, int DimIndex)
    {
        public int PaddedDim => PaddedDims[DimIndex];

        /// <summary>m16 tiles per warp: 32 rows per warp, 16 at 256 features.</summary>
        public int WarpTiles => PaddedDim == 256 ? 1 : 2;

        /// <summary>Rows per block: four warps.</summary>
        public int BlockRows => 4 * 16 * WarpTiles;

        /// <summary>Column tile of the NT-Xent kernels.</summary>
        public int ColumnTile => PaddedDim == 64 ? 64 : 32;

        /// <summary>Column tile of the InfoNCE sweep, narrower where the accumulator or the split operands need registers.</summary>
        public int SweepColumnTile => Format == (int)MatmulPrecision.Fp32
            ? PaddedDim switch { 256 => 8, 128 => 16, _ => ColumnTile }
            : PaddedDim == 256 ? 16 : ColumnTile;

        public int ElementBytes => Format == (int)MatmulPrecision.Bf16 ? 2 : 4;

        public int Stride => PaddedDim + (Format == (int)MatmulPrecision.Bf16 ? 8 : 4);

        public static ContrastiveTiling For(int dim, MatmulPrecision precision)
        {
            if (dim > MaxFusedDim)
            {
                throw new NotSupportedException($"the fused contrastive kernels hold rows of up to {MaxFusedDim} features; got {dim} (use the unfused composition)");
            }
            if (precision is not (MatmulPrecision.Fp32 or MatmulPrecision.Tf32 or MatmulPrecision.Bf16))
            {
                throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown precision");
            }
            return new ContrastiveTiling((int)precision, dim <= 64 ? 0 : dim <= 128 ? 1 : 2);
        }

        public string Name(string[,] kernels) => kernels[Format, DimIndex];

        /// <summary>The resident row tile and two column tiles (double buffering).</summary>
        public int SharedBytes(int columnTile) => (BlockRows + (2 * columnTile)) * Stride * ElementBytes;

        public long OperandFloats(long rows) => rows * PaddedDim * ElementBytes / sizeof(float);
    }

    /// <summary>
    /// The queue on the device: canonical fp32 keys [capacity, dim] plus, created on first use of a precision and
    /// kept in step by every enqueue, operand copies [capacity rounded up to 64, dpad] in that precision's format
    /// (fp32 needs its own copy only when dim is not already a padded width).
    /// </summary>
    private sealed class CudaKeyQueue : KeyQueue
    {
        private readonly CudaBackend _backend;
        private readonly Tensor _canonical;
        private readonly CudaStorage?[] _shadows = new CudaStorage?[3];

        public CudaKeyQueue(CudaBackend backend, int capacity, int dim, int paddedDim)
            : base(capacity, dim)
        {
            _backend = backend;
            PaddedDim = paddedDim;
            RowsPadded = RoundUp(capacity, ContrastivePadRows);
            _canonical = backend.Allocate(new TensorShape(RowsPadded, dim), "key queue");
            Keys = _canonical.SliceRows(0, capacity);
        }

        public override Tensor Keys { get; }

        public int PaddedDim { get; }

        public int RowsPadded { get; }

        /// <summary>The operand buffer the sweep reads for this precision, created from the canonical keys if needed.</summary>
        public ulong Operand(MatmulPrecision precision)
        {
            if (precision == MatmulPrecision.Fp32 && Dim == PaddedDim)
            {
                return _canonical.DevicePointer();
            }
            var shadow = _shadows[(int)precision];
            if (shadow is null)
            {
                var tiling = ContrastiveTiling.For(Dim, precision);
                shadow = new CudaStorage(tiling.OperandFloats(RowsPadded), _backend.Context);
                _shadows[(int)precision] = shadow;
                _backend.PrepareOperand(_canonical.DevicePointer(), Capacity, RowsPadded, Dim, normalize: false, tiling, shadow.Pointer, 0UL);
            }
            return shadow.Pointer;
        }

        /// <summary>The operand copy of a precision, or 0 when it has not been created (the enqueue kernel skips it).</summary>
        public ulong ShadowPointer(MatmulPrecision precision) => _shadows[(int)precision]?.Pointer ?? 0UL;

        public override void Dispose()
        {
            foreach (var shadow in _shadows)
            {
                shadow?.Dispose();
            }
            _canonical.Dispose();
        }
    }
}
