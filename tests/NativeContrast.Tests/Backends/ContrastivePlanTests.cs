namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// The fused contrastive kernels' host planners, run for devices that are not here: every SM count from 1 to 200,
/// several occupancies, and sizes up to 2N = 1,048,576. They check what a GPU would otherwise find the hard way:
/// the workspace stays a few times N x d, every launch covers its column tiles exactly as the kernels' launch check
/// demands, and every workspace section suits cp.async.
/// </summary>
public class ContrastivePlanTests
{
    private static readonly int[] Rows = [2, 130, 256, 4098, 32768, 65536, 100002, 262144, 1048576];
    private static readonly int[] Dims = [16, 72, 128, 256];
    private static readonly int[] Occupancies = [1, 2, 4];
    private static readonly MatmulPrecision[] Precisions = [MatmulPrecision.Fp32, MatmulPrecision.Tf32, MatmulPrecision.Bf16];

    /// <summary>
    /// Operand (at most rowsPadded x dpad floats), forward partials (at most 2 x 32 floats per row, no more than a
    /// padded row), one gradient partial per backward split, and the per-row vectors: 11 x rowsPadded x dpad covers it.
    /// </summary>
    private const long WorkspaceOperandMultiple = 11;

    [Test]
    public void NtXentWorkspaceStaysWithinAFewOperandsOnEveryDevice()
    {
        var failures = new List<string>();
        for (var multiprocessors = 1; multiprocessors <= 200; multiprocessors++)
        {
            foreach (var occupancy in Occupancies)
            {
                foreach (var rows in Rows)
                {
                    foreach (var dim in Dims)
                    {
                        foreach (var precision in Precisions)
                        {
                            var plan = CudaBackend.PlanNtXent(rows, dim, precision, multiprocessors, (_, _) => occupancy);
                            var where = $"{multiprocessors} SMs x {occupancy} blocks, 2N = {rows}, d = {dim}, {precision}";
                            var bound = WorkspaceOperandMultiple * plan.RowsPadded * plan.Tiling.PaddedDim;
                            if (plan.Length > bound || plan.Length > int.MaxValue)
                            {
                                failures.Add($"{where}: workspace {plan.Length} floats, bound {Math.Min(bound, int.MaxValue)}");
                            }
                            var columnTiles = (rows + plan.Tiling.ColumnTile - 1) / plan.Tiling.ColumnTile;
                            CheckCover(failures, $"{where} forward", plan.ForwardSplits, plan.ForwardTilesPerSplit, columnTiles, CudaBackend.MaxForwardSplits);
                            CheckCover(failures, $"{where} backward", plan.BackwardSplits, plan.BackwardTilesPerSplit, columnTiles, CudaBackend.MaxBackwardSplits);
                            CheckAligned(failures, where, plan.Operand, plan.InvNorm, plan.Lse2, plan.Positive, plan.RowStats, plan.Partial, plan.GradPartial);
                        }
                    }
                }
            }
        }
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
    }

    /// <summary>
    /// A data-parallel shard's plan: its anchor rows tile the grid, every column of the gathered z is covered, the
    /// anchors get their own aligned operand, and the log-sum-exps sit where the unsharded plan has them (the section
    /// a sharded loss gathers into through NtXentLogSumExps, which plans without the shard).
    /// </summary>
    [Test]
    public void NtXentShardPlansCoverEveryColumnOnEveryDevice()
    {
        var failures = new List<string>();
        for (var multiprocessors = 1; multiprocessors <= 200; multiprocessors += 7)
        {
            foreach (var (shards, shardRows) in new[] { (2, 2), (2, 130), (3, 34), (8, 512), (64, 1026) })
            {
                foreach (var dim in Dims)
                {
                    foreach (var precision in Precisions)
                    {
                        var rows = shards * shardRows;
                        var plan = CudaBackend.PlanNtXent(rows, dim, precision, multiprocessors, (_, _) => 2, shardRows);
                        var whole = CudaBackend.PlanNtXent(rows, dim, precision, multiprocessors, (_, _) => 2);
                        var where = $"{multiprocessors} SMs, {shards} shards of {shardRows} rows, d = {dim}, {precision}";
                        var columnTiles = (rows + plan.Tiling.ColumnTile - 1) / plan.Tiling.ColumnTile;
                        CheckCover(failures, $"{where} forward", plan.ForwardSplits, plan.ForwardTilesPerSplit, columnTiles, CudaBackend.MaxForwardSplits);
                        CheckCover(failures, $"{where} backward", plan.BackwardSplits, plan.BackwardTilesPerSplit, columnTiles, CudaBackend.MaxBackwardSplits);
                        CheckAligned(failures, where, plan.Operand, plan.InvNorm, plan.Lse2, plan.RowOperand, plan.RowInvNorm, plan.Positive, plan.RowStats, plan.Partial, plan.GradPartial);
                        if (plan.AnchorRowsPadded % plan.Tiling.BlockRows != 0 || plan.AnchorRowsPadded < shardRows || plan.RowOperand == plan.Operand)
                        {
                            failures.Add($"{where}: anchors padded to {plan.AnchorRowsPadded} with their operand at {plan.RowOperand} (columns' at {plan.Operand})");
                        }
                        if (plan.Lse2 != whole.Lse2)
                        {
                            failures.Add($"{where}: log-sum-exps at byte {plan.Lse2}, unsharded at {whole.Lse2}");
                        }
                    }
                }
            }
        }
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
    }

    [Test]
    public void InfoNceSweepCoversTheQueueOnEveryDevice()
    {
        var failures = new List<string>();
        for (var multiprocessors = 1; multiprocessors <= 200; multiprocessors++)
        {
            foreach (var (batch, queue) in new[] { (1, 1), (256, 65536), (300, 4097), (4096, 65536), (65536, 16384) })
            {
                foreach (var dim in Dims)
                {
                    foreach (var precision in Precisions)
                    {
                        var plan = CudaBackend.PlanInfoNce(batch, dim, queue, precision, multiprocessors, (_, _) => 2);
                        var where = $"{multiprocessors} SMs, B = {batch}, K = {queue}, d = {dim}, {precision}";
                        var columnTiles = (queue + plan.Tiling.SweepColumnTile - 1) / plan.Tiling.SweepColumnTile;
                        CheckCover(failures, where, plan.Splits, plan.TilesPerSplit, columnTiles, CudaBackend.MaxSweepSplits);
                        CheckAligned(failures, where, plan.Queries, plan.InvNorm, plan.Partial, plan.Weighted, plan.RowStats);
                    }
                }
            }
        }
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
    }

    /// <summary>The case review predicted at 3.2 GiB (132 SMs, 2N = 32768) and the GPU test's 1 GiB budget at 2N = 262144.</summary>
    [TestCase(32768, 128L << 20)]
    [TestCase(262144, 1L << 30)]
    public void NtXentWorkspaceOnAnH100FitsItsBudget(int rows, long budgetBytes)
    {
        foreach (var precision in Precisions)
        {
            foreach (var occupancy in Occupancies)
            {
                var plan = CudaBackend.PlanNtXent(rows, 128, precision, 132, (_, _) => occupancy);
                Assert.That(plan.Length * sizeof(float), Is.LessThan(budgetBytes), $"{precision}, {occupancy} blocks per SM");
            }
        }
    }

    [Test]
    public void SplitsOnlyFillTheDevice()
    {
        // 4 row tiles on 264 slots: 66 splits would fill one wave; the backward's cap allows 8, and without the cap
        // 64 splits of 16 tiles take as long as 66 splits would (tiles per split set the makespan).
        Assert.That(CudaBackend.PlanSplits(264, 4, 1024, CudaBackend.MaxBackwardSplits), Is.EqualTo((8, 128)));
        Assert.That(CudaBackend.PlanSplits(264, 4, 1024, CudaBackend.MaxSweepSplits), Is.EqualTo((64, 16)));
        // More row tiles than slots: nothing to fill, so no partials to merge.
        Assert.That(CudaBackend.PlanSplits(264, 2048, 8192, CudaBackend.MaxBackwardSplits), Is.EqualTo((1, 8192)));
        // Fewer column tiles than the cap: one tile per split at most.
        Assert.That(CudaBackend.PlanSplits(264, 1, 3, CudaBackend.MaxSweepSplits), Is.EqualTo((3, 1)));
    }

    /// <summary>The kernels trap unless grid.y x tilesPerSplit covers the tiles and the last split is not empty.</summary>
    private static void CheckCover(List<string> failures, string where, int splits, int tilesPerSplit, int columnTiles, int maxSplits)
    {
        if (splits < 1 || splits > maxSplits || tilesPerSplit < 1
            || (long)splits * tilesPerSplit < columnTiles || (long)(splits - 1) * tilesPerSplit >= columnTiles)
        {
            failures.Add($"{where}: {splits} splits x {tilesPerSplit} tiles for {columnTiles} column tiles (at most {maxSplits} splits)");
        }
    }

    private static void CheckAligned(List<string> failures, string where, params ulong[] offsets)
    {
        foreach (var offset in offsets)
        {
            if (offset % CudaBackend.OperandAlignmentBytes != 0)
            {
                failures.Add($"{where}: a section at byte {offset} is not {CudaBackend.OperandAlignmentBytes}-byte aligned");
            }
        }
    }
}
