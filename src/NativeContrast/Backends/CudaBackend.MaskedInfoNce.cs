namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>
/// Launchers of native/masked_infonce.cu (the design is described at the top of that file): normalise, sweep (rows x
/// column splits), combine, the q-column gradient pass, then nc_contrastive_stats. The split count is planned from
/// the device's SM count and the sweep's occupancy, by a pure function the tests run for any GPU.
/// </summary>
public sealed partial class CudaBackend
{
    /// <summary>Rows per block of the sweep and gradient kernels: one warp each (kWarps in masked_infonce.cu).</summary>
    private const int MaskedInfoNceWarps = 4;

    /// <summary>Columns a warp sums in fp32 before they join its fp64 running values (kChunk): the sweep's column tile.</summary>
    internal const int MaskedInfoNceChunk = 256;

    /// <summary>Floats of a sweep partial per (split, row) (kFields).</summary>
    private const int MaskedInfoNcePartialFields = 8;

    /// <summary>Widest rows: 32 features per lane of a warp (the largest K in masked_infonce.cu), held in registers.</summary>
    internal const int MaskedInfoNceMaxDim = 1024;

    /// <summary>Most column splits: each writes two [batch, dim] partials, so this bounds the workspace by the batch.</summary>
    internal const int MaxMaskedInfoNceSplits = 32;

    public long LabelMaskedInfoNceWorkspaceLength(int batch, int dim, int queueLength) => PlanMaskedInfoNce(batch, dim, queueLength).Length;

    public unsafe void LabelMaskedInfoNce(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, float temperature, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f, LabelMaskedShard? shard = null)
    {
        var keyQueue = queue is null ? null : Own(queue);
        var (batch, dim, queueLength) = ContrastiveCheck.LabelMaskedInfoNce(q, k, labels, queue, queueLabels, temperature, dq, shard);
        // A shard's anchors are rows [rowOffset, rowOffset + anchorRows) of the gathered batch (every row without one);
        // the plan is the whole batch's (the workspace is sized for it), so a shard uses a part of each section.
        int rowOffset = shard?.Offset ?? 0, anchorRows = shard?.Rows ?? batch;
        var plan = PlanMaskedInfoNce(batch, dim, queueLength);
        ContrastiveCheck.Workspace(workspace, plan.Length);
        ContrastiveCheck.Stats(stats);
        var ws = workspace.DevicePointer();
        // The sections start 256 bytes apart from here; the per-row softmax pairs are read as float2.
        ContrastiveCheck.Aligned(ws, 2 * sizeof(float), workspace.Describe());
        Context.MakeCurrent();
        ulong qn = ws + plan.Qn, kn = ws + plan.Kn, invNorm = ws + plan.InvNorm, partial = ws + plan.Partial;
        ulong rowSoftmax = ws + plan.RowSoftmax, rowStats = ws + plan.RowStats;
        var withGradient = dq is not null;
        ulong weighted = withGradient ? ws + plan.Weighted : 0UL, positives = withGradient ? ws + plan.Positives : 0UL;
        ulong anchor = withGradient ? ws + plan.Anchor : 0UL;
        ulong qPointer = q.DevicePointer(), kPointer = k.DevicePointer(), labelPointer = labels.DevicePointer();
        ulong keys = keyQueue?.Keys.DevicePointer() ?? 0UL, queueLabelPointer = queueLabels?.DevicePointer() ?? 0UL;

        ulong rowState = shard is not null && withGradient ? shard.RowState.DevicePointer() : 0UL;
        ulong allRowStates = shard is not null && withGradient ? shard.AllRowStates.DevicePointer() : 0UL;

        void** normalize = stackalloc void*[] { &qPointer, &kPointer, &batch, &dim, &qn, &kn, &invNorm };
        Kernel("nc_masked_infonce_normalize").Launch(Grid(2L * batch * 32, WarpRowsThreads), WarpRowsThreads, 0, Stream, normalize);

        int splits = plan.Splits, columnsPerSplit = plan.ColumnsPerSplit;
        var logitScale = LogitScale(temperature);
        void** sweep = stackalloc void*[] { &qn, &kn, &keys, &labelPointer, &queueLabelPointer, &batch, &dim, &queueLength, &rowOffset, &anchorRows, &columnsPerSplit, &logitScale, &partial, &weighted, &positives };
        var sweepShared = withGradient ? MaskedInfoNceSweepSharedBytes(plan.Width) : 0;
        Kernel($"nc_masked_infonce_sweep_d{plan.Width}").Launch(new Dim3(Blocks(anchorRows, MaskedInfoNceWarps), (uint)splits), MaskedInfoNceWarps * 32, sweepShared, Stream, sweep);

        void** combine = stackalloc void*[] { &qn, &kn, &batch, &dim, &rowOffset, &anchorRows, &partial, &weighted, &positives, &splits, &logitScale, &anchor, &rowSoftmax, &rowStats, &rowState };
        Kernel("nc_masked_infonce_combine").Launch(Grid(anchorRows * 32L, WarpRowsThreads), WarpRowsThreads, 0, Stream, combine);

        if (withGradient)
        {
            if (shard is not null)
            {
                // As the CPU twin: every rank's anchors' (log-sum-exp, |P|) in rank order, then rowSoftmax [batch] from
                // them, which the gradient pass reads by column (this shard's rows come back through the gather too).
                shard.GatherAcrossRanks(shard.RowState, shard.AllRowStates);
                Context.MakeCurrent();
                void** states = stackalloc void*[] { &allRowStates, &batch, &rowSoftmax };
                Kernel("nc_masked_infonce_row_states").Launch(Grid(batch, 256), 256, 0, Stream, states);
            }
            ulong dqPointer = dq!.DevicePointer();
            var gradFactor = gradScale / (anchorRows * temperature);
            void** gradient = stackalloc void*[] { &qn, &labelPointer, &batch, &dim, &rowOffset, &anchorRows, &invNorm, &rowSoftmax, &anchor, &logitScale, &gradFactor, &dqPointer };
            Kernel($"nc_masked_infonce_gradient_d{plan.Width}").Launch(new Dim3(Blocks(anchorRows, MaskedInfoNceWarps)), MaskedInfoNceWarps * 32, MaskedInfoNceGradientSharedBytes(plan.Width), Stream, gradient);
        }
        LaunchStats(rowStats, anchorRows, stats.DevicePointer());
    }

    public unsafe void EnqueueLabeledKeys(KeyQueue queue, Tensor queueLabels, Tensor keys, Tensor labels)
    {
        _ = Own(queue);
        ContrastiveCheck.LabeledKeys(queue, queueLabels, keys, labels);
        var count = keys.Rows;
        var skipped = Math.Max(0, count - queue.Capacity);
        int kept = count - skipped, capacity = queue.Capacity;
        var position = (int)((queue.Position + (long)skipped) % capacity);
        Context.MakeCurrent();
        ulong source = labels.DevicePointer() + ((ulong)skipped * sizeof(float)), destination = queueLabels.DevicePointer();
        void** args = stackalloc void*[] { &source, &kept, &capacity, &position, &destination };
        Kernel("nc_masked_infonce_enqueue_labels").Launch(Grid(kept, 256), 256, 0, Stream, args);
        EnqueueKeys(queue, keys);
    }

    /// <summary>The kernel width (32 K features, K per lane) that holds rows of <paramref name="dim"/> features in the fewest registers.</summary>
    internal static int MaskedInfoNceWidth(int dim)
    {
        if (dim > MaskedInfoNceMaxDim)
        {
            throw new NotSupportedException($"the label-masked InfoNCE kernels hold rows of up to {MaskedInfoNceMaxDim} features in registers; got {dim}");
        }
        var width = 32;
        while (width < dim)
        {
            width *= 2;
        }
        return width;
    }

    /// <summary>The sweep's fp64 running sums W and V: two rows of the kernel width per warp (only with a gradient).</summary>
    internal static int MaskedInfoNceSweepSharedBytes(int width) => MaskedInfoNceWarps * 2 * width * sizeof(double);

    /// <summary>The gradient pass's fp64 running sum: one row of the kernel width per warp.</summary>
    internal static int MaskedInfoNceGradientSharedBytes(int width) => MaskedInfoNceWarps * width * sizeof(double);

    private MaskedInfoNcePlan PlanMaskedInfoNce(int batch, int dim, int queueLength) =>
        PlanMaskedInfoNce(batch, dim, queueLength, Info.Multiprocessors, ResidentBlocks);

    /// <param name="residentBlocks">Blocks of a kernel (by name, with its dynamic shared bytes) one multiprocessor holds.</param>
    internal static MaskedInfoNcePlan PlanMaskedInfoNce(int batch, int dim, int queueLength, int multiprocessors, Func<string, int, int> residentBlocks)
    {
        var width = MaskedInfoNceWidth(dim);
        var columns = (2L * batch) + queueLength;
        var columnTiles = (int)((columns + MaskedInfoNceChunk - 1) / MaskedInfoNceChunk);
        var rowBlocks = (int)Blocks(batch, MaskedInfoNceWarps);
        // The plan does not depend on whether dq is asked for (the statistics stay the same bit for bit either way), so
        // occupancy is that of the sweep with its shared running sums.
        var slots = (long)multiprocessors * residentBlocks($"nc_masked_infonce_sweep_d{width}", MaskedInfoNceSweepSharedBytes(width));
        var (splits, tilesPerSplit) = PlanSplits(slots, rowBlocks, columnTiles, MaxMaskedInfoNceSplits);
        var layout = new WorkspaceLayout();
        var rowsByDim = (long)batch * dim;
        return new MaskedInfoNcePlan(
            width, splits, tilesPerSplit * MaskedInfoNceChunk,
            Qn: layout.Take(rowsByDim),
            Kn: layout.Take(rowsByDim),
            InvNorm: layout.Take(batch),
            Partial: layout.Take((long)splits * batch * MaskedInfoNcePartialFields),
            Weighted: layout.Take(splits * rowsByDim),
            Positives: layout.Take(splits * rowsByDim),
            Anchor: layout.Take(rowsByDim),
            RowSoftmax: layout.Take(2L * batch),
            RowStats: layout.Take(3L * batch),
            Length: layout.Floats);
    }

    /// <summary>Sections are byte offsets into the workspace; ColumnsPerSplit is a multiple of the chunk.</summary>
    internal readonly record struct MaskedInfoNcePlan(
        int Width, int Splits, int ColumnsPerSplit,
        ulong Qn, ulong Kn, ulong InvNorm, ulong Partial, ulong Weighted, ulong Positives, ulong Anchor, ulong RowSoftmax, ulong RowStats, long Length);
}
