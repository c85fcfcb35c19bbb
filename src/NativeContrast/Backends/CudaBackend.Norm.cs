namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/norm.cu: deterministic two-level column reductions, then one elementwise pass.</summary>
public sealed partial class CudaBackend
{
    /// <summary>Partial sums [2, splits, C] for the reductions, then the backward coefficients [3, C].</summary>
    public long BatchNormWorkspaceElements(int rows, int channels) => (2L * NormSplits(rows, channels) * channels) + (3L * channels);

    public unsafe void BatchNormForward(Tensor x, Tensor? residual, Tensor y, BatchNormParameters parameters, Tensor savedMean, Tensor savedInvStd, BatchNormMode mode, Tensor workspace, BatchNormSync? sync = null)
    {
        var (rows, channels) = NormChecks.Forward(x, residual, y, parameters, savedMean, savedInvStd, mode, synced: sync is not null);
        NormChecks.Sync(sync, channels);
        Check.Length(Math.Min(workspace.Length, BatchNormWorkspaceElements(rows, channels)), BatchNormWorkspaceElements(rows, channels), workspace.Describe() + " (batch-norm workspace)");
        if (rows == 0 || channels == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong xp = x.DevicePointer(), mean = savedMean.DevicePointer(), invStd = savedInvStd.DevicePointer();
        ulong runningMean = parameters.RunningMean.DevicePointer(), runningVar = parameters.RunningVar.DevicePointer();
        var eps = mode.Epsilon;
        if (mode.Training)
        {
            var splits = NormSplits(rows, channels);
            long rowCount = rows, rowsPerSplit = (rows + splits - 1) / splits;
            ulong partial = workspace.DevicePointer(), tracked = PointerOrNull(parameters.BatchesTracked);
            var momentum = mode.Momentum;
            var reductionGrid = new Dim3((uint)((channels + 31) / 32), (uint)splits);
            ulong firstRowShift = 0;
            void** partialArgs = stackalloc void*[] { &xp, &rowCount, &channels, &rowsPerSplit, &firstRowShift, &partial };
            Kernel("nc_norm_stats_partial").Launch(reductionGrid, new Dim3(32, 8), 0, Stream, partialArgs);
            if (sync is null)
            {
                void** finalizeArgs = stackalloc void*[] { &partial, &splits, &xp, &rowCount, &channels, &mean, &invStd, &runningMean, &runningVar, &tracked, &momentum, &eps };
                Kernel("nc_norm_stats_finalize").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, finalizeArgs);
            }
            else
            {
                // SyncBN, two passes as on the CPU: (Σx, rows) across ranks, the mean; then Σ(x − mean)² across ranks.
                ulong sums = sync.Buffer.DevicePointer(), noFirstRow = 0;
                int sumTerm = 0, squareTerm = 1, withRows = 1, withoutRows = 0;
                void** sumArgs = stackalloc void*[] { &partial, &splits, &channels, &sumTerm, &xp, &rowCount, &withRows, &sums };
                Kernel("nc_norm_sync_sums").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, sumArgs);
                sync.SumAcrossRanks(sync.Buffer.View(0, new TensorShape(channels + 1)));
                void** meanArgs = stackalloc void*[] { &sums, &channels, &mean };
                Kernel("nc_norm_sync_mean").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, meanArgs);
                void** shiftedArgs = stackalloc void*[] { &xp, &rowCount, &channels, &rowsPerSplit, &mean, &partial };
                Kernel("nc_norm_stats_partial").Launch(reductionGrid, new Dim3(32, 8), 0, Stream, shiftedArgs);
                void** squareArgs = stackalloc void*[] { &partial, &splits, &channels, &squareTerm, &noFirstRow, &rowCount, &withoutRows, &sums };
                Kernel("nc_norm_sync_sums").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, squareArgs);
                sync.SumAcrossRanks(sync.Buffer.View(0, new TensorShape(channels)));
                void** finalizeArgs = stackalloc void*[] { &sums, &channels, &mean, &invStd, &runningMean, &runningVar, &tracked, &momentum, &eps };
                Kernel("nc_norm_sync_finalize").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, finalizeArgs);
            }
        }
        else
        {
            void** evalArgs = stackalloc void*[] { &runningMean, &runningVar, &channels, &eps, &mean, &invStd };
            Kernel("nc_norm_stats_eval").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, evalArgs);
        }

        ulong res = PointerOrNull(residual), yp = y.DevicePointer();
        ulong gamma = PointerOrNull(parameters.Weight), beta = PointerOrNull(parameters.Bias);
        long total = x.Length;
        var relu = mode.Relu ? 1 : 0;
        var vector = channels % 4 == 0 && Aligned16(xp) && Aligned16(yp) && Aligned16(res);
        void** applyArgs = stackalloc void*[] { &xp, &res, &yp, &mean, &invStd, &gamma, &beta, &channels, &total, &relu };
        Kernel(vector ? "nc_norm_apply_vec4" : "nc_norm_apply").Launch(StrideGrid(vector ? total / 4 : total, 256), 256, 0, Stream, applyArgs);
    }

    public unsafe void BatchNormBackward(Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient, Tensor? weight, Tensor savedMean, Tensor savedInvStd, Tensor? weightGradient, Tensor? biasGradient, BatchNormMode mode, Tensor workspace, BatchNormSync? sync = null)
    {
        var (rows, channels) = NormChecks.Backward(x, y, dy, dx, residualGradient, weight, savedMean, savedInvStd, weightGradient, biasGradient, mode, synced: sync is not null);
        NormChecks.Sync(sync, channels);
        var needed = BatchNormWorkspaceElements(rows, channels);
        Check.Length(Math.Min(workspace.Length, needed), needed, workspace.Describe() + " (batch-norm workspace)");
        if (rows == 0 || channels == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong xp = x.DevicePointer(), yp = y.DevicePointer(), dyp = dy.DevicePointer(), dxp = dx.DevicePointer();
        ulong mean = savedMean.DevicePointer(), invStd = savedInvStd.DevicePointer();
        ulong gamma = PointerOrNull(weight), gammaGrad = PointerOrNull(weightGradient), betaGrad = PointerOrNull(biasGradient);
        ulong residualGrad = PointerOrNull(residualGradient);
        var splits = NormSplits(rows, channels);
        long rowCount = rows, rowsPerSplit = (rows + splits - 1) / splits;
        var relu = mode.Relu ? 1 : 0;
        var training = mode.Training ? 1 : 0;
        ulong partial = workspace.DevicePointer();
        ulong coefficients = partial + (ulong)(2L * splits * channels * sizeof(float));

        void** partialArgs = stackalloc void*[] { &xp, &yp, &dyp, &mean, &rowCount, &channels, &rowsPerSplit, &relu, &partial };
        Kernel("nc_norm_backward_partial").Launch(new Dim3((uint)((channels + 31) / 32), (uint)splits), new Dim3(32, 8), 0, Stream, partialArgs);
        void** finalizeArgs = stackalloc void*[] { &partial, &splits, &rowCount, &channels, &gamma, &invStd, &gammaGrad, &betaGrad, &coefficients, &training };
        Kernel("nc_norm_backward_finalize").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, finalizeArgs);
        if (sync is not null && mode.Training)
        {
            // SyncBN: the parameter gradients above stay this rank's; dx's batch-statistics coefficients take
            // (Σg, Σg·(x − mean), rows) of every rank.
            ulong sums = sync.Buffer.DevicePointer(), upperSums = sums + (ulong)(channels * sizeof(float)), noFirstRow = 0;
            int sumTerm = 0, productTerm = 1, withRows = 1, withoutRows = 0;
            void** gradientSumArgs = stackalloc void*[] { &partial, &splits, &channels, &sumTerm, &noFirstRow, &rowCount, &withoutRows, &sums };
            Kernel("nc_norm_sync_sums").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, gradientSumArgs);
            void** productSumArgs = stackalloc void*[] { &partial, &splits, &channels, &productTerm, &noFirstRow, &rowCount, &withRows, &upperSums };
            Kernel("nc_norm_sync_sums").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, productSumArgs);
            sync.SumAcrossRanks(sync.Buffer.View(0, new TensorShape(BatchNormSync.BufferLength(channels))));
            void** coefficientArgs = stackalloc void*[] { &sums, &channels, &gamma, &invStd, &coefficients };
            Kernel("nc_norm_sync_coefficients").Launch(new Dim3(Blocks(channels, 128)), 128, 0, Stream, coefficientArgs);
        }

        long total = x.Length;
        var vector = channels % 4 == 0 && Aligned16(xp) && Aligned16(yp) && Aligned16(dyp) && Aligned16(dxp) && Aligned16(residualGrad);
        void** applyArgs = stackalloc void*[] { &xp, &yp, &dyp, &mean, &coefficients, &dxp, &residualGrad, &channels, &total, &relu };
        Kernel(vector ? "nc_norm_backward_apply_vec4" : "nc_norm_backward_apply").Launch(StrideGrid(vector ? total / 4 : total, 256), 256, 0, Stream, applyArgs);
    }

    /// <summary>
    /// Row splits of the reductions: about four blocks per multiprocessor over all column tiles, at least 64 rows
    /// (8 per row lane) in each. A function of the shape and the device only, so results are reproducible.
    /// </summary>
    private int NormSplits(long rows, int channels)
    {
        var tiles = Math.Max(1, (channels + 31) / 32);
        var target = Math.Max(1, ((4L * Info.Multiprocessors) + tiles - 1) / tiles);
        var byRows = Math.Max(1, (rows + 63) / 64);
        return (int)Math.Min(Math.Min(target, byRows), 65535);
    }
}
