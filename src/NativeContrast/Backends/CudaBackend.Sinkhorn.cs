namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Which implementation <see cref="CudaBackend.SinkhornCodes"/> runs.</summary>
public enum SinkhornPath
{
    /// <summary>
    /// The fused cooperative kernel when it can run (K small enough for a few rows per block on chip), else multi-pass;
    /// also multi-pass from the first time the driver refuses the cooperative launch (MPS, other contexts' work).
    /// </summary>
    Auto,

    /// <summary>One cooperative launch; throws when the device or K does not allow it.</summary>
    Fused,

    /// <summary>One launch per half-step: 3n launches, 2n reads of the scores; works for any K.</summary>
    MultiPass,
}

/// <summary>Launchers of native/sinkhorn.cu (the design is described at the top of that file).</summary>
public sealed partial class CudaBackend
{
    /// <summary>Rows the fused kernel reduces together (kGroupRows in sinkhorn.cu).</summary>
    private const int SinkhornGroupRows = 4;

    /// <summary>Most multi-pass column chunks: enough blocks to fill the GPU, few enough that partials stay small.</summary>
    private const int SinkhornMaxChunks = 64;

    private SinkhornPlan? _sinkhornPlan;
    private bool? _cooperativeLaunch;

    /// <summary>Implementation choice for <see cref="SinkhornCodes"/>; <see cref="SinkhornPath.Auto"/> unless a test or benchmark pins one.</summary>
    public SinkhornPath SinkhornPath { get; set; } = SinkhornPath.Auto;

    /// <summary>Caps the rows per block the fused kernel keeps on chip (the rest stream), so tests can force streaming.</summary>
    internal int? SinkhornCachedRowsLimit { get; set; }

    /// <summary>What the fused kernel will run with for B × K, or null when it cannot run (then multi-pass runs).</summary>
    internal sealed record SinkhornPlan(int Rows, int Cols, int? CachedRowsLimit, int Blocks, int Threads, int CachedRows, int SharedBytes)
    {
        public override string ToString() =>
            $"fused: {Blocks} blocks x {Threads} threads, {CachedRows} rows/block on chip ({Math.Min(Rows, (long)Blocks * CachedRows)} of {Rows}), {SharedBytes / 1024} KiB shared";
    }

    /// <summary>smax [K], lr [K], row max [B], row log part [B] and column partials for the larger of the two paths.</summary>
    public long SinkhornWorkspaceLength(int samples, int prototypes)
    {
        long fusedBlocks = Math.Min(samples, 2L * Info.Multiprocessors);
        long parts = Math.Max(fusedBlocks, SinkhornChunks(samples).Chunks);
        return (2L * prototypes) + (2L * samples) + (2 * parts * prototypes);
    }

    /// <remarks>
    /// With <paramref name="sync"/> (SwAV on several ranks) the multi-pass path runs, calling the collectives between
    /// its launches in the CPU twin's order; <see cref="SinkhornPath.Auto"/> picks it, and <see cref="SinkhornPath.Fused"/>
    /// refuses the call: the cooperative kernel has no point between its grid barriers where a collective could run.
    /// </remarks>
    public unsafe void SinkhornCodes(Tensor scores, Tensor codes, Tensor workspace, float epsilon, int iterations, SinkhornOutput output, SinkhornSync? sync = null)
    {
        SinkhornMath.CheckCodes(scores, codes, workspace, epsilon, iterations, SinkhornWorkspaceLength(scores.Rows, scores.Cols));
        int rows = scores.Rows, cols = scores.Cols;
        if (sync is not null)
        {
            if (SinkhornPath == SinkhornPath.Fused)
            {
                throw new NotSupportedException("the fused (cooperative) Sinkhorn kernel cannot run a distributed Sinkhorn (SwAV on several ranks): the collectives run between launches; use SinkhornPath.Auto or MultiPass");
            }
            SinkhornMath.CheckSync(sync, rows, cols);
            SinkhornMath.NoOverlap(sync.Gathered, workspace);
            SinkhornMath.NoOverlap(sync.Gathered, scores);
            SinkhornMath.NoOverlap(sync.Gathered, codes);
        }
        Context.MakeCurrent();
        var plan = SinkhornPath == SinkhornPath.MultiPass || sync is not null ? null : PlanSinkhorn(rows, cols);
        if (plan is null && SinkhornPath == SinkhornPath.Fused)
        {
            throw new NotSupportedException($"the fused Sinkhorn kernel cannot run {scores.Describe()} on {Info.Name} (too many prototypes for shared memory, or no cooperative launch); use SinkhornPath.Auto or MultiPass");
        }
        ulong s = scores.DevicePointer(), q = codes.DevicePointer();
        ulong smax = workspace.DevicePointer();
        ulong lr = smax + ((ulong)cols * sizeof(float));
        ulong lcMax = lr + ((ulong)cols * sizeof(float));
        ulong lcLog = lcMax + ((ulong)rows * sizeof(float));
        ulong partials = lcLog + ((ulong)rows * sizeof(float));
        float scale = SinkhornMath.Log2Scale(epsilon);
        var allRows = sync?.Samples ?? rows;
        float negLog2Rows = SinkhornMath.NegativeLog2(allRows), negLog2Cols = SinkhornMath.NegativeLog2(cols);
        float outputOffset = SinkhornMath.OutputOffset(output, allRows);
        if (plan is not null)
        {
            int cached = plan.CachedRows;
            void** args = stackalloc void*[] { &s, &q, &smax, &lr, &partials, &rows, &cols, &scale, &iterations, &cached, &negLog2Rows, &negLog2Cols, &outputOffset };
            try
            {
                Kernel("nc_sinkhorn_fused").LaunchCooperative(plan.Blocks, plan.Threads, plan.SharedBytes, Stream, args);
                return;
            }
            catch (KernelLaunchException e) when (SinkhornPath == SinkhornPath.Auto && CooperativeLaunchRefused(e.Code))
            {
                // The occupancy query cannot see MPS limits or other contexts' blocks; once the driver refuses the
                // grid, this backend stays on the multi-pass path.
                _cooperativeLaunch = false;
                _sinkhornPlan = null;
            }
        }
        SinkhornMultiPass(s, q, smax, lr, lcMax, lcLog, partials, rows, cols, scale, iterations, negLog2Rows, negLog2Cols, outputOffset, workspace, sync);
    }

    /// <summary>
    /// The multi-pass launches. With <paramref name="sync"/>, the CPU twin's collectives in its order: pass 0 writes
    /// this rank's (max, sum) pair per prototype into smax and lr (the workspace's first 2K floats), which are
    /// all-gathered and merged in rank order; each later prototype step writes this rank's column sums into the pass-0
    /// sum half of the partials (free by then), which are all-reduced before lr is updated from them.
    /// </summary>
    private unsafe void SinkhornMultiPass(
        ulong s, ulong q, ulong smax, ulong lr, ulong lcMax, ulong lcLog, ulong partials, int rows, int cols, float scale, int iterations,
        float negLog2Rows, float negLog2Cols, float outputOffset, Tensor workspace, SinkhornSync? sync)
    {
        const int columnThreads = 256;
        var (chunks, rowsPerChunk) = SinkhornChunks(rows);
        var columnGrid = new Dim3(Blocks(cols, columnThreads), (uint)chunks);
        var combineGrid = new Dim3(Blocks(cols, columnThreads));
        var rowThreads = cols >= 8192 ? 1024 : 256;
        int lse = sync is null ? 1 : 2, plain = 0, one = 1;
        ulong destination = 0;
        var offset = 0f;
        // Distributed: this rank's column sums, K floats right after the partials' first `chunks` rows (the pass-0 sums'
        // half, at least `chunks` rows of K: the workspace holds 2·parts·K partials with parts ≥ chunks).
        long totalsOffset = (2L * cols) + (2L * rows) + ((long)chunks * cols);
        ulong totals = partials + ((ulong)chunks * (ulong)cols * sizeof(float));
        ulong gathered = sync?.Gathered.DevicePointer() ?? 0;
        var ranks = sync is null ? 0 : (int)(sync.Gathered.Length / (2L * cols));
        void** lsePartial = stackalloc void*[] { &s, &partials, &rows, &cols, &scale, &rowsPerChunk };
        void** lseCombine = stackalloc void*[] { &partials, &smax, &lr, &cols, &chunks, &lse, &scale, &negLog2Cols };
        void** rankMerge = stackalloc void*[] { &gathered, &smax, &lr, &cols, &ranks, &scale, &negLog2Cols };
        void** rowStep = stackalloc void*[] { &s, &smax, &lr, &lcMax, &lcLog, &destination, &cols, &scale, &offset };
        void** sumPartial = stackalloc void*[] { &s, &smax, &lr, &lcMax, &lcLog, &partials, &rows, &cols, &scale, &rowsPerChunk };
        void** sumCombine = stackalloc void*[] { &partials, &smax, &lr, &cols, &chunks, &plain, &scale, &negLog2Cols };
        void** columnTotal = stackalloc void*[] { &partials, &totals, &cols, &chunks };
        void** totalCombine = stackalloc void*[] { &totals, &smax, &lr, &cols, &one, &plain, &scale, &negLog2Cols };
        Kernel("nc_sinkhorn_column_lse_partial").Launch(columnGrid, columnThreads, 0, Stream, lsePartial);
        Kernel("nc_sinkhorn_column_combine").Launch(combineGrid, columnThreads, 0, Stream, lseCombine);
        if (sync is not null)
        {
            // Max then sum: the workspace's first 2·K floats are this rank's pairs, gathered in rank order.
            sync.GatherAcrossRanks(workspace.View(0, new TensorShape(2 * cols)), sync.Gathered);
            Kernel("nc_sinkhorn_rank_merge").Launch(combineGrid, columnThreads, 0, Stream, rankMerge);
        }
        for (var pass = 1; pass <= iterations; pass++)
        {
            var last = pass == iterations;
            offset = last ? outputOffset : negLog2Rows;
            destination = last ? q : 0;
            Kernel("nc_sinkhorn_row_step").Launch(new Dim3((uint)rows), rowThreads, 0, Stream, rowStep);
            if (last)
            {
                continue;
            }
            Kernel("nc_sinkhorn_column_sum_partial").Launch(columnGrid, columnThreads, 0, Stream, sumPartial);
            if (sync is null)
            {
                Kernel("nc_sinkhorn_column_combine").Launch(combineGrid, columnThreads, 0, Stream, sumCombine);
            }
            else
            {
                Kernel("nc_sinkhorn_column_total").Launch(combineGrid, columnThreads, 0, Stream, columnTotal);
                sync.SumAcrossRanks(workspace.View(totalsOffset, new TensorShape(cols)));
                Kernel("nc_sinkhorn_column_combine").Launch(combineGrid, columnThreads, 0, Stream, totalCombine);
            }
        }
    }

    /// <summary>Column chunks of the multi-pass path: at most <see cref="SinkhornMaxChunks"/>, at least 16 rows each.</summary>
    private static (int Chunks, int RowsPerChunk) SinkhornChunks(int rows)
    {
        var chunks = Math.Clamp((rows + 15) / 16, 1, SinkhornMaxChunks);
        var rowsPerChunk = (rows + chunks - 1) / chunks;
        return ((rows + rowsPerChunk - 1) / rowsPerChunk, rowsPerChunk);
    }

    /// <summary>
    /// The fused kernel's launch for B × K, or null. Two shapes are tried: two blocks of 512 threads per SM (more
    /// latency hiding across the block-wide reductions) and one block of 1024 (one set of column buffers, so more rows
    /// on chip). Each block owns ceil(B / blocks) rows; if they all fit in its shared memory the scores are read from
    /// global memory once, else all but <see cref="SinkhornGroupRows"/> slots cache rows and the rest stream each pass.
    /// The shape that keeps more rows on chip wins; ties go to two blocks per SM.
    /// </summary>
    internal SinkhornPlan? PlanSinkhorn(int rows, int cols)
    {
        if (_sinkhornPlan is { } known && known.Rows == rows && known.Cols == cols && known.CachedRowsLimit == SinkhornCachedRowsLimit)
        {
            return known;
        }
        _cooperativeLaunch ??= SupportsCooperativeLaunch();
        if (_cooperativeLaunch != true)
        {
            return null;
        }
        var kernel = Kernel("nc_sinkhorn_fused");
        int sms = Info.Multiprocessors, optIn = Info.MaxSharedMemoryPerBlockOptIn;
        SinkhornPlan? best = null;
        foreach (var (blocksPerSm, threads) in new[] { (2, 512), (1, 1024) })
        {
            // One block may take the opt-in maximum; two share the multiprocessor's memory, 1 KiB reserved each.
            long budget = blocksPerSm == 1 ? optIn : Math.Min(optIn, ((optIn + 1024) / 2) - 1024);
            long fixedFloats = (3L * cols) + (2L * threads);
            var capacity = (int)Math.Min(int.MaxValue, Math.Max(-1, ((budget / sizeof(float)) - fixedFloats) / cols));
            var blocks = Math.Min(rows, blocksPerSm * sms);
            var owned = (rows + blocks - 1) / blocks;
            var limit = SinkhornCachedRowsLimit ?? int.MaxValue;
            int cached, slots;
            if (owned <= capacity && owned <= limit)
            {
                cached = owned;
                slots = owned;
            }
            else if (capacity >= SinkhornGroupRows)
            {
                cached = Math.Max(0, Math.Min(capacity - SinkhornGroupRows, limit));
                slots = cached + SinkhornGroupRows;
            }
            else
            {
                continue;
            }
            var shared = checked((int)((fixedFloats + ((long)slots * cols)) * sizeof(float)));
            if (kernel.MaxActiveBlocksPerMultiprocessor(threads, shared) < blocksPerSm)
            {
                continue;
            }
            var plan = new SinkhornPlan(rows, cols, SinkhornCachedRowsLimit, blocks, threads, cached, shared);
            if (best is null || Math.Min(rows, (long)blocks * cached) > Math.Min(rows, (long)best.Blocks * best.CachedRows))
            {
                best = plan;
            }
        }
        _sinkhornPlan = best;
        return best;
    }

    /// <summary>
    /// Whether a cooperative launch failed because the driver would not co-schedule the grid (too large while other
    /// work holds multiprocessors, or not allowed under MPS), which the multi-pass path does not need; any other
    /// error is a real failure.
    /// </summary>
    internal static bool CooperativeLaunchRefused(int result) =>
        result is DriverApi.ErrorCooperativeLaunchTooLarge or DriverApi.ErrorNotSupported or DriverApi.ErrorNotPermitted;

    private bool SupportsCooperativeLaunch()
    {
        CudaCheck.Driver(DriverApi.cuDeviceGet(out var device, Info.Ordinal), "cuDeviceGet");
        return CudaDeviceInfo.Attribute(device, DriverApi.AttrCooperativeLaunch) != 0;
    }

    public unsafe void SwappedPredictionLoss(
        Tensor scores, Tensor codes, float temperature, Tensor loss, Tensor perSample, Tensor? scoresGradient,
        float weight = 1f, bool accumulateLoss = false, bool accumulateGradient = false)
    {
        SinkhornMath.CheckSwapped(scores, codes, temperature, loss, perSample, scoresGradient);
        Context.MakeCurrent();
        int rows = scores.Rows, cols = scores.Cols;
        ulong p = scores.DevicePointer(), q = codes.DevicePointer(), perRow = perSample.DevicePointer(), l = loss.DevicePointer();
        ulong g = scoresGradient?.DevicePointer() ?? 0;
        var scale2 = (float)(1.0 / (temperature * Math.Log(2.0)));
        var gradientScale = weight / (rows * temperature);
        int accumulateG = accumulateGradient ? 1 : 0, accumulateL = accumulateLoss ? 1 : 0;
        void** rowArgs = stackalloc void*[] { &p, &q, &perRow, &g, &cols, &scale2, &gradientScale, &accumulateG };
        Kernel("nc_sinkhorn_swapped_rows").Launch(new Dim3((uint)rows), cols >= 8192 ? 1024 : 256, 0, Stream, rowArgs);
        void** meanArgs = stackalloc void*[] { &perRow, &l, &rows, &weight, &accumulateL };
        Kernel("nc_sinkhorn_swapped_mean").Launch(1, 1024, 0, Stream, meanArgs);
    }
}
