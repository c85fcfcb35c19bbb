namespace NativeContrast.Backends;

using System.Buffers;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

public sealed partial class CpuBackend
{
    /// <summary>Values each float accumulator lane sums before its sum moves to a double accumulator.</summary>
    private const int ReductionBlockRows = 64;

    /// <summary>
    /// Floats per tile. The [rows, C] passes take whole rows a tile at a time as one flat span, against per-channel
    /// coefficients repeated to the tile's length, so that narrow layers (C = 16 at width 0.25) pay one vectorised
    /// call per tile rather than per row.
    /// </summary>
    private const int TileFloats = 4096;

    /// <summary>The CPU keeps its reduction scratch in pooled arrays; it needs no workspace.</summary>
    public long BatchNormWorkspaceElements(int rows, int channels) => 0;

    public void BatchNormForward(Tensor x, Tensor? residual, Tensor y, BatchNormParameters parameters, Tensor savedMean, Tensor savedInvStd, BatchNormMode mode, Tensor workspace, BatchNormSync? sync = null)
    {
        var (rows, channels) = NormChecks.Forward(x, residual, y, parameters, savedMean, savedInvStd, mode, synced: sync is not null);
        NormChecks.Sync(sync, channels);
        var xs = CpuArray(x);
        var mean = Cpu(savedMean);
        var invStd = Cpu(savedInvStd);
        var tileRows = TileRows(channels);
        var tileLength = tileRows * channels;
        // scale = gamma·invstd and shift = beta, then the mean: three per-channel rows repeated to a tile's length.
        var tiles = ArrayPool<float>.Shared.Rent(3 * tileLength);
        var sums = ArrayPool<double>.Shared.Rent(channels);
        try
        {
            var meanTile = new ArraySegment<float>(tiles, 2 * tileLength, tileLength);
            if (mode.Training)
            {
                // Two passes (mean, then squared deviations) with double accumulators: the oracle favours accuracy.
                ReduceColumns(rows, channels, 1, (first, length, acc, _) => TensorPrimitives.Add(acc[..length], xs.AsSpan(first, length), acc[..length]), sums);
                // SyncBN: the sums and the row count of every rank's rows (the count is exact in fp32 below 2^24).
                double count = sync is null ? rows : SumAcrossRanks(sync, sums, channels, rows);
                for (var c = 0; c < channels; c++)
                {
                    mean[c] = (float)(sums[c] / count);
                }
                Repeat(mean, meanTile);
                ReduceColumns(rows, channels, 1, (first, length, acc, scratch) =>
                {
                    var deviation = scratch[..length];
                    TensorPrimitives.Subtract(xs.AsSpan(first, length), meanTile.AsSpan(0, length), deviation);
                    TensorPrimitives.MultiplyAdd(deviation, deviation, acc[..length], acc[..length]);
                }, sums);
                if (sync is not null)
                {
                    SumAcrossRanks(sync, sums, channels, rows: null);
                }
                var runningMean = Cpu(parameters.RunningMean);
                var runningVar = Cpu(parameters.RunningVar);
                var momentum = mode.Momentum;
                for (var c = 0; c < channels; c++)
                {
                    var variance = sums[c] / count;
                    invStd[c] = (float)(1.0 / Math.Sqrt(variance + mode.Epsilon));
                    runningMean[c] = ((1f - momentum) * runningMean[c]) + (momentum * mean[c]);
                    runningVar[c] = ((1f - momentum) * runningVar[c]) + (momentum * (float)(variance * count / (count - 1)));
                }
                if (parameters.BatchesTracked is { } tracked)
                {
                    Cpu(tracked)[0] += 1f;
                }
            }
            else
            {
                Cpu(parameters.RunningMean).CopyTo(mean);
                var runningVar = Cpu(parameters.RunningVar);
                for (var c = 0; c < channels; c++)
                {
                    invStd[c] = 1f / MathF.Sqrt(runningVar[c] + mode.Epsilon);
                }
                Repeat(mean, meanTile);
            }

            // y = (x − mean)·scale + shift [+ residual], then ReLU.
            var scaleTile = new ArraySegment<float>(tiles, 0, tileLength);
            var shiftTile = new ArraySegment<float>(tiles, tileLength, tileLength);
            for (var c = 0; c < channels; c++)
            {
                scaleTile[c] = invStd[c] * (parameters.Weight is { } w ? Cpu(w)[c] : 1f);
                shiftTile[c] = parameters.Bias is { } b ? Cpu(b)[c] : 0f;
            }
            Repeat(scaleTile.AsSpan(0, channels), scaleTile);
            Repeat(shiftTile.AsSpan(0, channels), shiftTile);
            var ys = CpuArray(y);
            var res = residual is null ? default : CpuArray(residual);
            var hasResidual = residual is not null;
            var relu = mode.Relu;
            ForEachTile(rows, channels, 4, (first, length) =>
            {
                var output = ys.AsSpan(first, length);
                TensorPrimitives.Subtract(xs.AsSpan(first, length), meanTile.AsSpan(0, length), output);
                TensorPrimitives.MultiplyAdd(output, scaleTile.AsSpan(0, length), shiftTile.AsSpan(0, length), output);
                if (hasResidual)
                {
                    TensorPrimitives.Add(output, res.AsSpan(first, length), output);
                }
                if (relu)
                {
                    TensorPrimitives.Max(output, 0f, output);
                }
            });
        }
        finally
        {
            ArrayPool<float>.Shared.Return(tiles);
            ArrayPool<double>.Shared.Return(sums);
        }
    }

    public void BatchNormBackward(Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient, Tensor? weight, Tensor savedMean, Tensor savedInvStd, Tensor? weightGradient, Tensor? biasGradient, BatchNormMode mode, Tensor workspace, BatchNormSync? sync = null)
    {
        var (rows, channels) = NormChecks.Backward(x, y, dy, dx, residualGradient, weight, savedMean, savedInvStd, weightGradient, biasGradient, mode, synced: sync is not null);
        NormChecks.Sync(sync, channels);
        var xs = CpuArray(x);
        var ys = CpuArray(y);
        var dys = CpuArray(dy);
        var dxs = CpuArray(dx);
        var relu = mode.Relu;
        var tileLength = TileRows(channels) * channels;

        // Tiles of the mean and of the three dx coefficients a, k1, k0 (below).
        var tiles = ArrayPool<float>.Shared.Rent(4 * tileLength);
        var sums = ArrayPool<double>.Shared.Rent(2 * channels);
        try
        {
            var meanTile = new ArraySegment<float>(tiles, 0, tileLength);
            Repeat(Cpu(savedMean), meanTile);

            // One pass: g = dy masked by the fused ReLU, written where it is wanted (the shortcut's gradient, or dx,
            // which holds it until the last pass), while Σ g and Σ g·(x − mean) accumulate per channel.
            var gradient = residualGradient is null ? dxs : CpuArray(residualGradient);
            ReduceColumns(rows, channels, 2, (first, length, acc, scratch) =>
            {
                var g = gradient.AsSpan(first, length);
                if (relu)
                {
                    MaskByPositive(ys.AsSpan(first, length), dys.AsSpan(first, length), g);
                }
                else
                {
                    dys.AsSpan(first, length).CopyTo(g);
                }
                var sumG = acc.Slice(0, length);
                var sumGx = acc.Slice(acc.Length / 2, length);
                TensorPrimitives.Add(sumG, g, sumG);
                var deviation = scratch[..length];
                TensorPrimitives.Subtract(xs.AsSpan(first, length), meanTile.AsSpan(0, length), deviation);
                TensorPrimitives.MultiplyAdd(g, deviation, sumGx, sumGx);
            }, sums);

            var invStd = Cpu(savedInvStd);
            var gamma = weight is null ? default : Cpu(weight);
            var aTile = new ArraySegment<float>(tiles, tileLength, tileLength);
            var k1Tile = new ArraySegment<float>(tiles, 2 * tileLength, tileLength);
            var k0Tile = new ArraySegment<float>(tiles, 3 * tileLength, tileLength);
            for (var c = 0; c < channels; c++)
            {
                if (biasGradient is not null)
                {
                    Cpu(biasGradient)[c] += (float)sums[c];
                }
                if (weightGradient is not null)
                {
                    Cpu(weightGradient)[c] += (float)(sums[channels + c] * invStd[c]);
                }
            }
            // SyncBN: dx goes through the statistics of every rank's rows, so it needs their sums; the parameter
            // gradients above stay this rank's, which the gradient all-reduce combines.
            double count = sync is not null && mode.Training ? SumAcrossRanks(sync, sums, 2 * channels, rows) : rows;
            for (var c = 0; c < channels; c++)
            {
                var sumG = sums[c];
                var sumGx = sums[channels + c];
                // dx = a·g + k1·(x − mean) + k0; the batch-statistics terms vanish in evaluation mode.
                double a = (weight is null ? 1f : gamma[c]) * invStd[c];
                aTile[c] = (float)a;
                k1Tile[c] = mode.Training ? (float)(-a * invStd[c] * invStd[c] * sumGx / count) : 0f;
                k0Tile[c] = mode.Training ? (float)(-a * sumG / count) : 0f;
            }
            Repeat(aTile.AsSpan(0, channels), aTile);
            Repeat(k1Tile.AsSpan(0, channels), k1Tile);
            Repeat(k0Tile.AsSpan(0, channels), k0Tile);
            ForEachTile(rows, channels, 4, (first, length) =>
            {
                // dx's rows are written in place of the g they may hold: each element is read before it is written.
                var output = dxs.AsSpan(first, length);
                var deviation = ArrayPool<float>.Shared.Rent(length);
                try
                {
                    var d = deviation.AsSpan(0, length);
                    TensorPrimitives.Subtract(xs.AsSpan(first, length), meanTile.AsSpan(0, length), d);
                    TensorPrimitives.MultiplyAdd(d, k1Tile.AsSpan(0, length), k0Tile.AsSpan(0, length), d);
                    TensorPrimitives.MultiplyAdd(gradient.AsSpan(first, length), aTile.AsSpan(0, length), d, output);
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(deviation);
                }
            });
        }
        finally
        {
            ArrayPool<float>.Shared.Return(tiles);
            ArrayPool<double>.Shared.Return(sums);
        }
    }

    /// <summary>
    /// SyncBN: sums[0, length) and, when given, <paramref name="rows"/> over every rank, through the sync's fp32 buffer;
    /// returns the summed row count (0 when none was asked for).
    /// </summary>
    private static double SumAcrossRanks(BatchNormSync sync, double[] sums, int length, int? rows)
    {
        var values = sync.Buffer.View(0, new TensorShape(length + (rows is null ? 0 : 1)), "batch-norm sync sums");
        var buffer = Cpu(values);
        for (var i = 0; i < length; i++)
        {
            buffer[i] = (float)sums[i];
        }
        if (rows is { } count)
        {
            buffer[length] = count;
        }
        sync.SumAcrossRanks(values);
        for (var i = 0; i < length; i++)
        {
            sums[i] = buffer[i];
        }
        return rows is null ? 0 : buffer[length];
    }

    /// <summary>Rows per tile for rows of <paramref name="channels"/> floats.</summary>
    private static int TileRows(int channels) => Math.Max(1, TileFloats / Math.Max(1, channels));

    /// <summary>Fills <paramref name="tile"/> with copies of the per-channel <paramref name="row"/>.</summary>
    private static void Repeat(ReadOnlySpan<float> row, Span<float> tile)
    {
        for (var offset = 0; offset < tile.Length; offset += row.Length)
        {
            row.CopyTo(tile[offset..]);
        }
    }

    /// <summary>Runs body(firstElement, length) over whole-row tiles of a [rows, cols] matrix, tiles spread over cores.</summary>
    private static void ForEachTile(int rows, int cols, long workPerElement, Action<int, int> body)
    {
        var tileRows = TileRows(cols);
        var tiles = (rows + tileRows - 1) / tileRows;
        CpuParallel.For(tiles, (long)tileRows * cols * workPerElement, (start, end) =>
        {
            for (var t = start; t < end; t++)
            {
                var first = t * tileRows;
                var count = Math.Min(tileRows, rows - first);
                body(first * cols, count * cols);
            }
        });
    }

    /// <summary>
    /// Adds one tile's contribution to <c>terms</c> float accumulators: elements [first, first + length) of the
    /// matrix (whole rows), accumulators and scratch laid out like the tile (accumulator term t starts at
    /// t·accumulators.Length/terms).
    /// </summary>
    private delegate void TileAccumulator(int first, int length, Span<float> accumulators, Span<float> scratch);

    /// <summary>
    /// Column reductions over [rows, cols]: each core sums its tiles into float lanes (one lane per row position and
    /// column of a tile), moves them into double accumulators every <see cref="ReductionBlockRows"/> tiles, and the
    /// per-core results are added in a fixed order. result receives terms·cols sums.
    /// </summary>
    private static void ReduceColumns(int rows, int cols, int terms, TileAccumulator accumulate, double[] result)
    {
        var tileRows = TileRows(cols);
        var tileLength = tileRows * cols;
        var width = terms * cols;
        var tiles = (rows + tileRows - 1) / tileRows;
        var chunks = Math.Max(1, Math.Min(tiles, CpuParallel.Workers));
        var partials = ArrayPool<double>.Shared.Rent(chunks * width);
        try
        {
            Array.Clear(partials, 0, chunks * width);
            CpuParallel.For(chunks, (long)rows * width / chunks, (chunkStart, chunkEnd) =>
            {
                var lanes = ArrayPool<float>.Shared.Rent(terms * tileLength);
                var scratch = ArrayPool<float>.Shared.Rent(tileLength);
                try
                {
                    var acc = lanes.AsSpan(0, terms * tileLength);
                    for (var chunk = chunkStart; chunk < chunkEnd; chunk++)
                    {
                        var firstTile = (int)((long)tiles * chunk / chunks);
                        var lastTile = (int)((long)tiles * (chunk + 1) / chunks);
                        var partial = partials.AsSpan(chunk * width, width);
                        for (var t0 = firstTile; t0 < lastTile; t0 += ReductionBlockRows)
                        {
                            acc.Clear();
                            for (var t = t0; t < Math.Min(lastTile, t0 + ReductionBlockRows); t++)
                            {
                                var first = t * tileRows;
                                var count = Math.Min(tileRows, rows - first);
                                accumulate(first * cols, count * cols, acc, scratch.AsSpan(0, tileLength));
                            }
                            for (var term = 0; term < terms; term++)
                            {
                                for (var lane = 0; lane < tileLength; lane++)
                                {
                                    partial[(term * cols) + (lane % cols)] += acc[(term * tileLength) + lane];
                                }
                            }
                        }
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(lanes);
                    ArrayPool<float>.Shared.Return(scratch);
                }
            });
            Array.Clear(result, 0, width);
            for (var chunk = 0; chunk < chunks; chunk++)
            {
                for (var j = 0; j < width; j++)
                {
                    result[j] += partials[(chunk * width) + j];
                }
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(partials);
        }
    }

    /// <summary>Σ_r m[r, c] in double, for column sums outside batch norm.</summary>
    private static void ColumnSums(ArraySegment<float> m, int rows, int cols, double[] result) =>
        ReduceColumns(rows, cols, 1, (first, length, acc, _) => TensorPrimitives.Add(acc[..length], m.AsSpan(first, length), acc[..length]), result);

    /// <summary>g ← dy where y &gt; 0, else 0 (ReLU's backward), 16 lanes at a time where the CPU has AVX-512.</summary>
    private static void MaskByPositive(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> g)
    {
        var i = 0;
        ref var y0 = ref MemoryMarshal.GetReference(y);
        ref var dy0 = ref MemoryMarshal.GetReference(dy);
        ref var g0 = ref MemoryMarshal.GetReference(g);
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= g.Length - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var positive = Vector512.GreaterThan(Vector512.LoadUnsafe(ref y0, (nuint)i), Vector512<float>.Zero);
                (positive & Vector512.LoadUnsafe(ref dy0, (nuint)i)).StoreUnsafe(ref g0, (nuint)i);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= g.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var positive = Vector256.GreaterThan(Vector256.LoadUnsafe(ref y0, (nuint)i), Vector256<float>.Zero);
                (positive & Vector256.LoadUnsafe(ref dy0, (nuint)i)).StoreUnsafe(ref g0, (nuint)i);
            }
        }
        for (; i < g.Length; i++)
        {
            g[i] = y[i] > 0f ? dy[i] : 0f;
        }
    }
}

/// <summary>Shape checks shared by the batch-norm ops of both backends.</summary>
internal static class NormChecks
{
    /// <param name="synced">SyncBN: the statistics are over every rank's rows, so one row here is enough.</param>
    public static (int Rows, int Channels) Forward(Tensor x, Tensor? residual, Tensor y, BatchNormParameters p, Tensor savedMean, Tensor savedInvStd, BatchNormMode mode, bool synced = false)
    {
        int rows = x.Rows, channels = x.Cols;
        Check.SameShape(x, y);
        if (residual is not null)
        {
            Check.SameShape(x, residual);
        }
        foreach (var t in new[] { p.Weight, p.Bias, p.RunningMean, p.RunningVar, savedMean, savedInvStd })
        {
            if (t is not null)
            {
                Check.Length(t.Length, channels, $"{t.Describe()} (one value per channel of {x.Describe()})");
            }
        }
        TrainingRows(x, mode, synced);
        return (rows, channels);
    }

    /// <summary>Batch statistics need two rows here, or one under SyncBN (the other ranks' rows count too).</summary>
    private static void TrainingRows(Tensor x, BatchNormMode mode, bool synced)
    {
        if (mode.Training && x.Rows < (synced ? 1 : 2))
        {
            throw new ArgumentException($"batch norm in training mode needs more than one value per channel; {x.Describe()} has {x.Rows} row(s)");
        }
    }

    public static void Sync(BatchNormSync? sync, int channels)
    {
        if (sync is not null && sync.Buffer.Length < BatchNormSync.BufferLength(channels))
        {
            throw new ArgumentException($"{sync.Buffer.Describe()}: SyncBN over {channels} channels needs a buffer of {BatchNormSync.BufferLength(channels)} floats");
        }
    }

    /// <param name="synced">SyncBN: refused without rows in training mode, as in <see cref="Forward"/>, so that no rank
    /// returns before the all-reduce the others wait in.</param>
    public static (int Rows, int Channels) Backward(Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient, Tensor? weight, Tensor savedMean, Tensor savedInvStd, Tensor? weightGradient, Tensor? biasGradient, BatchNormMode mode, bool synced = false)
    {
        int rows = x.Rows, channels = x.Cols;
        Check.SameShape(x, y);
        Check.SameShape(x, dy);
        Check.SameShape(x, dx);
        if (residualGradient is not null)
        {
            Check.SameShape(x, residualGradient);
        }
        foreach (var t in new[] { weight, savedMean, savedInvStd, weightGradient, biasGradient })
        {
            if (t is not null)
            {
                Check.Length(t.Length, channels, $"{t.Describe()} (one value per channel of {x.Describe()})");
            }
        }
        TrainingRows(x, mode, synced);
        return (rows, channels);
    }
}
