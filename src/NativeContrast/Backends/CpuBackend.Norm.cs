namespace NativeContrast.Backends;

using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

public sealed partial class CpuBackend
{
    /// <summary>Rows summed in float before the block sum is added to a double accumulator.</summary>
    private const int ReductionBlockRows = 64;

    /// <summary>The CPU keeps its reduction scratch in pooled arrays; it needs no workspace.</summary>
    public long BatchNormWorkspaceElements(int rows, int channels) => 0;

    public void BatchNormForward(Tensor x, Tensor? residual, Tensor y, BatchNormParameters parameters, Tensor savedMean, Tensor savedInvStd, BatchNormMode mode, Tensor workspace)
    {
        var (rows, channels) = NormChecks.Forward(x, residual, y, parameters, savedMean, savedInvStd, mode);
        var xs = CpuArray(x);
        var mean = Cpu(savedMean);
        var invStd = Cpu(savedInvStd);
        if (mode.Training)
        {
            // Two passes (mean, then squared deviations) with double accumulators: the oracle favours accuracy.
            var sums = ArrayPool<double>.Shared.Rent(channels);
            try
            {
                ReduceColumns(rows, channels, 1, (r, acc, _) => TensorPrimitives.Add(acc, xs.AsSpan(r * channels, channels), acc), sums);
                for (var c = 0; c < channels; c++)
                {
                    mean[c] = (float)(sums[c] / rows);
                }
                var meanArray = CpuArray(savedMean);
                ReduceColumns(rows, channels, 1, (r, acc, scratch) =>
                {
                    TensorPrimitives.Subtract(xs.AsSpan(r * channels, channels), meanArray, scratch);
                    TensorPrimitives.MultiplyAdd(scratch, scratch, acc, acc);
                }, sums);
                var runningMean = Cpu(parameters.RunningMean);
                var runningVar = Cpu(parameters.RunningVar);
                var momentum = mode.Momentum;
                for (var c = 0; c < channels; c++)
                {
                    var variance = sums[c] / rows;
                    invStd[c] = (float)(1.0 / Math.Sqrt(variance + mode.Epsilon));
                    runningMean[c] = ((1f - momentum) * runningMean[c]) + (momentum * mean[c]);
                    runningVar[c] = ((1f - momentum) * runningVar[c]) + (momentum * (float)(variance * rows / (rows - 1)));
                }
                if (parameters.BatchesTracked is { } tracked)
                {
                    Cpu(tracked)[0] += 1f;
                }
            }
            finally
            {
                ArrayPool<double>.Shared.Return(sums);
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
        }

        // scale = gamma·invstd; y = (x − mean)·scale + beta [+ residual], then ReLU.
        var scale = ArrayPool<float>.Shared.Rent(channels);
        var shift = ArrayPool<float>.Shared.Rent(channels);
        try
        {
            for (var c = 0; c < channels; c++)
            {
                scale[c] = invStd[c] * (parameters.Weight is { } w ? Cpu(w)[c] : 1f);
                shift[c] = parameters.Bias is { } b ? Cpu(b)[c] : 0f;
            }
            var ys = CpuArray(y);
            var means = CpuArray(savedMean);
            var res = residual is null ? default : CpuArray(residual);
            var hasResidual = residual is not null;
            var relu = mode.Relu;
            CpuParallel.For(rows, channels * 4L, (start, end) =>
            {
                for (var r = start; r < end; r++)
                {
                    var output = ys.AsSpan(r * channels, channels);
                    TensorPrimitives.Subtract(xs.AsSpan(r * channels, channels), means, output);
                    TensorPrimitives.MultiplyAdd(output, scale.AsSpan(0, channels), shift.AsSpan(0, channels), output);
                    if (hasResidual)
                    {
                        TensorPrimitives.Add(output, res.AsSpan(r * channels, channels), output);
                    }
                    if (relu)
                    {
                        TensorPrimitives.Max(output, 0f, output);
                    }
                }
            });
        }
        finally
        {
            ArrayPool<float>.Shared.Return(scale);
            ArrayPool<float>.Shared.Return(shift);
        }
    }

    public void BatchNormBackward(Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient, Tensor? weight, Tensor savedMean, Tensor savedInvStd, Tensor? weightGradient, Tensor? biasGradient, BatchNormMode mode, Tensor workspace)
    {
        var (rows, channels) = NormChecks.Backward(x, y, dy, dx, residualGradient, weight, savedMean, savedInvStd, weightGradient, biasGradient);
        var xs = CpuArray(x);
        var ys = CpuArray(y);
        var dys = CpuArray(dy);
        var dxs = CpuArray(dx);
        var means = CpuArray(savedMean);
        var relu = mode.Relu;

        // g = dy masked by the fused ReLU; dx reuses its rows as the home of g until the last pass.
        var gradient = residualGradient is null ? dxs : CpuArray(residualGradient);
        CpuParallel.For(rows, channels * 2L, (start, end) =>
        {
            for (var r = start; r < end; r++)
            {
                var g = gradient.AsSpan(r * channels, channels);
                if (relu)
                {
                    MaskByPositive(ys.AsSpan(r * channels, channels), dys.AsSpan(r * channels, channels), g);
                }
                else
                {
                    dys.AsSpan(r * channels, channels).CopyTo(g);
                }
            }
        });

        // Σ g and Σ g·(x − mean) per channel.
        var sums = ArrayPool<double>.Shared.Rent(2 * channels);
        var coefficients = ArrayPool<float>.Shared.Rent(3 * channels);
        try
        {
            ReduceColumns(rows, channels, 2, (r, acc, scratch) =>
            {
                var g = gradient.AsSpan(r * channels, channels);
                TensorPrimitives.Add(acc[..channels], g, acc[..channels]);
                TensorPrimitives.Subtract(xs.AsSpan(r * channels, channels), means, scratch);
                TensorPrimitives.MultiplyAdd(g, scratch, acc[channels..], acc[channels..]);
            }, sums);
            var invStd = Cpu(savedInvStd);
            var gamma = weight is null ? default : Cpu(weight);
            for (var c = 0; c < channels; c++)
            {
                var sumG = sums[c];
                var sumGx = sums[channels + c];
                if (biasGradient is not null)
                {
                    Cpu(biasGradient)[c] += (float)sumG;
                }
                if (weightGradient is not null)
                {
                    Cpu(weightGradient)[c] += (float)(sumGx * invStd[c]);
                }
                // dx = a·g + k1·(x − mean) + k0; the batch-statistics terms vanish in evaluation mode.
                double a = (weight is null ? 1f : gamma[c]) * invStd[c];
                coefficients[c] = (float)a;
                coefficients[channels + c] = mode.Training ? (float)(-a * invStd[c] * invStd[c] * sumGx / rows) : 0f;
                coefficients[(2 * channels) + c] = mode.Training ? (float)(-a * sumG / rows) : 0f;
            }
            CpuParallel.For(rows, channels * 4L, (start, end) =>
            {
                var scratch = ArrayPool<float>.Shared.Rent(channels);
                try
                {
                    var deviation = scratch.AsSpan(0, channels);
                    var a = coefficients.AsSpan(0, channels);
                    var k1 = coefficients.AsSpan(channels, channels);
                    var k0 = coefficients.AsSpan(2 * channels, channels);
                    for (var r = start; r < end; r++)
                    {
                        var output = dxs.AsSpan(r * channels, channels);
                        TensorPrimitives.Subtract(xs.AsSpan(r * channels, channels), means, deviation);
                        TensorPrimitives.MultiplyAdd(deviation, k1, k0, deviation);
                        TensorPrimitives.MultiplyAdd(gradient.AsSpan(r * channels, channels), a, deviation, output);
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(scratch);
                }
            });
        }
        finally
        {
            ArrayPool<double>.Shared.Return(sums);
            ArrayPool<float>.Shared.Return(coefficients);
        }
    }

    /// <summary>Adds one row's contribution to <c>terms</c> float accumulators of <c>cols</c> each; scratch holds <c>cols</c> floats.</summary>
    private delegate void RowAccumulator(int row, Span<float> accumulators, Span<float> scratch);

    /// <summary>
    /// Column reductions over [rows, cols]: each core sums blocks of <see cref="ReductionBlockRows"/> rows in float
    /// and adds every block sum into double accumulators; the per-core results are added in a fixed order.
    /// result receives terms·cols sums.
    /// </summary>
    private static void ReduceColumns(int rows, int cols, int terms, RowAccumulator accumulate, double[] result)
    {
        var width = terms * cols;
        var blocks = (rows + ReductionBlockRows - 1) / ReductionBlockRows;
        var chunks = Math.Max(1, Math.Min(blocks, CpuParallel.Workers));
        var partials = ArrayPool<double>.Shared.Rent(chunks * width);
        try
        {
            Array.Clear(partials, 0, chunks * width);
            CpuParallel.For(chunks, (long)rows * width / chunks, (chunkStart, chunkEnd) =>
            {
                var block = ArrayPool<float>.Shared.Rent(width);
                var scratch = ArrayPool<float>.Shared.Rent(cols);
                try
                {
                    for (var chunk = chunkStart; chunk < chunkEnd; chunk++)
                    {
                        var first = (int)((long)blocks * chunk / chunks) * ReductionBlockRows;
                        var last = Math.Min(rows, (int)((long)blocks * (chunk + 1) / chunks) * ReductionBlockRows);
                        var partial = partials.AsSpan(chunk * width, width);
                        for (var r0 = first; r0 < last; r0 += ReductionBlockRows)
                        {
                            var acc = block.AsSpan(0, width);
                            acc.Clear();
                            for (var r = r0; r < Math.Min(last, r0 + ReductionBlockRows); r++)
                            {
                                accumulate(r, acc, scratch.AsSpan(0, cols));
                            }
                            for (var j = 0; j < width; j++)
                            {
                                partial[j] += acc[j];
                            }
                        }
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(block);
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
        ReduceColumns(rows, cols, 1, (r, acc, _) => TensorPrimitives.Add(acc, m.AsSpan(r * cols, cols), acc), result);

    /// <summary>g ← dy where y &gt; 0, else 0.</summary>
    private static void MaskByPositive(ReadOnlySpan<float> y, ReadOnlySpan<float> dy, Span<float> g)
    {
        for (var i = 0; i < g.Length; i++)
        {
            g[i] = y[i] > 0f ? dy[i] : 0f;
        }
    }
}

/// <summary>Shape checks shared by the batch-norm ops of both backends.</summary>
internal static class NormChecks
{
    public static (int Rows, int Channels) Forward(Tensor x, Tensor? residual, Tensor y, BatchNormParameters p, Tensor savedMean, Tensor savedInvStd, BatchNormMode mode)
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
        if (mode.Training && rows < 2)
        {
            throw new ArgumentException($"batch norm in training mode needs more than one value per channel; {x.Describe()} has {rows} row(s)");
        }
        return (rows, channels);
    }

    public static (int Rows, int Channels) Backward(Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient, Tensor? weight, Tensor savedMean, Tensor savedInvStd, Tensor? weightGradient, Tensor? biasGradient)
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
        return (rows, channels);
    }
}
