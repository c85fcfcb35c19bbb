namespace NativeContrast.Backends;

using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

/// <summary>
/// CPU twins of native/sinkhorn.cu, in the same log2 scaling form as the kernels (see the comment at the top of
/// sinkhorn.cu): smax and lr per prototype, (row max, log part) per sample, Q written once at the end. Column sums
/// are taken per fixed chunk of rows and combined in chunk order, so results do not depend on the core count.
/// </summary>
public sealed partial class CpuBackend
{
    /// <summary>Rows per partial column sum.</summary>
    private const int SinkhornRowsPerChunk = 32;

    private static int SinkhornChunks(int samples) => (samples + SinkhornRowsPerChunk - 1) / SinkhornRowsPerChunk;

    /// <summary>smax [K], lr [K], row max [B], row log part [B], and (max, sum) column partials [2, chunks, K].</summary>
    public long SinkhornWorkspaceLength(int samples, int prototypes) =>
        (2L * prototypes) + (2L * samples) + (2L * SinkhornChunks(samples) * prototypes);

    public void SinkhornCodes(Tensor scores, Tensor codes, Tensor workspace, float epsilon, int iterations, SinkhornOutput output, SinkhornSync? sync = null)
    {
        SinkhornMath.CheckCodes(scores, codes, workspace, epsilon, iterations, SinkhornWorkspaceLength(scores.Rows, scores.Cols));
        int rows = scores.Rows, cols = scores.Cols, chunks = SinkhornChunks(rows);
        if (sync is not null)
        {
            SinkhornMath.CheckSync(sync, rows, cols);
        }
        var allRows = sync?.Samples ?? rows;
        var scale = SinkhornMath.Log2Scale(epsilon);
        var negLog2Rows = SinkhornMath.NegativeLog2(allRows);
        var negLog2Cols = SinkhornMath.NegativeLog2(cols);
        var outputOffset = SinkhornMath.OutputOffset(output, allRows);
        var s = CpuArray(scores);
        var q = CpuArray(codes);
        var w = CpuArray(workspace);
        var columns = new SinkhornColumns(w.Slice(0, cols), w.Slice(cols, cols));
        var samples = new SinkhornSamples(w.Slice(2 * cols, rows), w.Slice((2 * cols) + rows, rows));
        var partials = w.Slice((2 * cols) + (2 * rows), 2 * chunks * cols);

        // Pass 0: smax[k] = max_b S, lr[k] = -log2 K - log2 Σ_b 2^((S - smax)·scale), from per-chunk (max, sum) pairs.
        CpuParallel.For(chunks, SinkhornRowsPerChunk * cols * 4L, (start, end) =>
        {
            var buffer = ArrayPool<float>.Shared.Rent(cols);
            try
            {
                var shifted = buffer.AsSpan(0, cols);
                for (var c = start; c < end; c++)
                {
                    var max = partials.AsSpan(c * cols, cols);
                    var sum = partials.AsSpan((chunks + c) * cols, cols);
                    int b0 = c * SinkhornRowsPerChunk, b1 = Math.Min(rows, b0 + SinkhornRowsPerChunk);
                    max.Fill(float.NegativeInfinity);
                    for (var b = b0; b < b1; b++)
                    {
                        TensorPrimitives.Max(max, s.AsSpan(b * cols, cols), max);
                    }
                    sum.Clear();
                    for (var b = b0; b < b1; b++)
                    {
                        TensorPrimitives.Subtract(s.AsSpan(b * cols, cols), max, shifted);
                        TensorPrimitives.Multiply(shifted, scale, shifted);
                        TensorPrimitives.Exp2(shifted, shifted);
                        TensorPrimitives.Add(sum, shifted, sum);
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        });
        CpuParallel.For(cols, chunks * 4L, (start, end) =>
        {
            for (var k = start; k < end; k++)
            {
                float m = float.NegativeInfinity, total = 0f;
                for (var c = 0; c < chunks; c++)
                {
                    MergeScaledSums(ref m, ref total, partials[(c * cols) + k], partials[((chunks + c) * cols) + k], scale);
                }
                columns.Max.AsSpan()[k] = m;
                // Distributed: this rank's (max, sum) pair, merged with the other ranks' below.
                columns.Lr.AsSpan()[k] = sync is null ? negLog2Cols - MathF.Log2(total) : total;
            }
        });
        if (sync is not null)
        {
            // Max then Lr: the workspace's first 2·K floats are this rank's pairs, gathered in rank order.
            sync.GatherAcrossRanks(workspace.View(0, new TensorShape(2 * cols)), sync.Gathered);
            var pairs = CpuArray(sync.Gathered);
            var ranks = (int)(sync.Gathered.Length / (2 * cols));
            for (var k = 0; k < cols; k++)
            {
                float m = float.NegativeInfinity, total = 0f;
                for (var r = 0; r < ranks; r++)
                {
                    MergeScaledSums(ref m, ref total, pairs[(2 * r * cols) + k], pairs[(((2 * r) + 1) * cols) + k], scale);
                }
                columns.Max.AsSpan()[k] = m;
                columns.Lr.AsSpan()[k] = negLog2Cols - MathF.Log2(total);
            }
        }

        for (var pass = 1; pass <= iterations; pass++)
        {
            var last = pass == iterations;
            SinkhornSampleStep(s, columns, samples, last ? q : default, rows, cols, scale, last ? outputOffset : negLog2Rows);
            if (!last)
            {
                SinkhornPrototypeStep(s, columns, samples, partials, rows, cols, chunks, scale, negLog2Cols, sync is null ? null : workspace.View(columns.Max.Count + columns.Lr.Count + (2L * rows), new TensorShape(cols)), sync?.SumAcrossRanks);
            }
        }
    }

    /// <summary>Per prototype: the column max of the scores and the log2 scaling lr.</summary>
    private readonly record struct SinkhornColumns(ArraySegment<float> Max, ArraySegment<float> Lr);

    /// <summary>Per sample: the row max of y = (S − smax)·scale + lr and the log2 part of the scaling.</summary>
    private readonly record struct SinkhornSamples(ArraySegment<float> Max, ArraySegment<float> Log);

    /// <summary>y[k] = (S[k] − smax[k])·scale + lr[k], with one rounding for the multiply-add, as the kernels do.</summary>
    private static void SinkhornExponents(ReadOnlySpan<float> scores, SinkhornColumns columns, float scale, Span<float> y)
    {
        TensorPrimitives.Subtract(scores, columns.Max, y);
        TensorPrimitives.FusedMultiplyAdd(y, scale, columns.Lr, y);
    }

    /// <summary>Sample step: row max and log part of each row; with codes, also codes = 2^((y − max) + log part).</summary>
    private static void SinkhornSampleStep(
        ArraySegment<float> s, SinkhornColumns columns, SinkhornSamples samples, ArraySegment<float> codes,
        int rows, int cols, float scale, float offset)
    {
        var writeCodes = codes.Array is not null;
        CpuParallel.For(rows, cols * 6L, (start, end) =>
        {
            var buffer = ArrayPool<float>.Shared.Rent(2 * cols);
            try
            {
                var y = buffer.AsSpan(0, cols);
                var e = buffer.AsSpan(cols, cols);
                for (var b = start; b < end; b++)
                {
                    SinkhornExponents(s.AsSpan(b * cols, cols), columns, scale, y);
                    var max = TensorPrimitives.Max<float>(y);
                    TensorPrimitives.Subtract(y, max, y);
                    TensorPrimitives.Exp2(y, e);
                    var log = offset - MathF.Log2(TensorPrimitives.Sum<float>(e));
                    samples.Max.AsSpan()[b] = max;
                    samples.Log.AsSpan()[b] = log;
                    if (writeCodes)
                    {
                        var output = codes.AsSpan(b * cols, cols);
                        TensorPrimitives.Add(y, log, output);
                        TensorPrimitives.Exp2(output, output);
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        });
    }

    /// <summary>
    /// Prototype step: lr[k] += −log2 K − log2 Σ_b 2^((y − max_b) + log_b). Plain sums are safe after a sample step
    /// (entries lie in [1/(K·B²), 1/B]).
    /// </summary>
    private static void SinkhornPrototypeStep(
        ArraySegment<float> s, SinkhornColumns columns, SinkhornSamples samples, ArraySegment<float> partials,
        int rows, int cols, int chunks, float scale, float negLog2Cols, Tensor? columnSums, Action<Tensor>? sumAcrossRanks)
    {
        CpuParallel.For(chunks, SinkhornRowsPerChunk * cols * 5L, (start, end) =>
        {
            var buffer = ArrayPool<float>.Shared.Rent(cols);
            try
            {
                var y = buffer.AsSpan(0, cols);
                for (var c = start; c < end; c++)
                {
                    var sum = partials.AsSpan(c * cols, cols);
                    sum.Clear();
                    int b0 = c * SinkhornRowsPerChunk, b1 = Math.Min(rows, b0 + SinkhornRowsPerChunk);
                    for (var b = b0; b < b1; b++)
                    {
                        SinkhornExponents(s.AsSpan(b * cols, cols), columns, scale, y);
                        TensorPrimitives.Subtract(y, samples.Max[b], y);
                        TensorPrimitives.Add(y, samples.Log[b], y);
                        TensorPrimitives.Exp2(y, y);
                        TensorPrimitives.Add(sum, y, sum);
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        });
        CpuParallel.For(cols, chunks, (start, end) =>
        {
            for (var k = start; k < end; k++)
            {
                var total = 0f;
                for (var c = 0; c < chunks; c++)
                {
                    total += partials[(c * cols) + k];
                }
                if (columnSums is null)
                {
                    columns.Lr.AsSpan()[k] += negLog2Cols - MathF.Log2(total);
                }
                else
                {
                    // Chunk 0's slot of column k, read above and free now: this rank's column sums, contiguous.
                    partials[k] = total;
                }
            }
        });
        if (columnSums is not null)
        {
            sumAcrossRanks!(columnSums);
            for (var k = 0; k < cols; k++)
            {
                columns.Lr.AsSpan()[k] += negLog2Cols - MathF.Log2(partials[k]);
            }
        }
    }

    /// <summary>(m, s) ← (m, s) merged with (m2, s2), sums of 2^(v·scale) in the form s·2^(m·scale); empty states stay empty.</summary>
    private static void MergeScaledSums(ref float m, ref float s, float m2, float s2, float scale)
    {
        var top = MathF.Max(m, m2);
        if (float.IsNegativeInfinity(top))
        {
            return;
        }
        s = (s * float.Exp2((m - top) * scale)) + (s2 * float.Exp2((m2 - top) * scale));
        m = top;
    }

    public void SwappedPredictionLoss(
        Tensor scores, Tensor codes, float temperature, Tensor loss, Tensor perSample, Tensor? scoresGradient,
        float weight = 1f, bool accumulateLoss = false, bool accumulateGradient = false)
    {
        SinkhornMath.CheckSwapped(scores, codes, temperature, loss, perSample, scoresGradient);
        int rows = scores.Rows, cols = scores.Cols;
        var inverseTemperature = 1f / temperature;
        var gradientScale = weight / (rows * temperature);
        var p = CpuArray(scores);
        var q = CpuArray(codes);
        var losses = CpuArray(perSample);
        var gradient = scoresGradient is null ? default : CpuArray(scoresGradient);
        CpuParallel.For(rows, cols * 8L, (start, end) =>
        {
            var buffer = ArrayPool<float>.Shared.Rent(2 * cols);
            try
            {
                var z = buffer.AsSpan(0, cols);
                var e = buffer.AsSpan(cols, cols);
                for (var b = start; b < end; b++)
                {
                    var qRow = q.AsSpan(b * cols, cols);
                    TensorPrimitives.Multiply(p.AsSpan(b * cols, cols), inverseTemperature, z);
                    var max = TensorPrimitives.Max<float>(z);
                    TensorPrimitives.Subtract(z, max, e);
                    TensorPrimitives.Exp(e, e);
                    var sum = TensorPrimitives.Sum<float>(e);
                    var logSumExp = max + MathF.Log(sum);
                    var codeSum = TensorPrimitives.Sum<float>(qRow);
                    // −Σ q·log softmax = Σ q·(lse − z): every term is non-negative, so nothing cancels.
                    TensorPrimitives.Subtract(logSumExp, z, z);
                    losses[b] = TensorPrimitives.Dot<float>(qRow, z);
                    if (gradient.Array is not null)
                    {
                        // weight/(B τ)·(softmax·Σq − q)
                        var gRow = gradient.AsSpan(b * cols, cols);
                        TensorPrimitives.Multiply(e, codeSum / sum, e);
                        TensorPrimitives.Subtract(e, qRow, e);
                        if (accumulateGradient)
                        {
                            TensorPrimitives.MultiplyAdd(e, gradientScale, gRow, gRow);
                        }
                        else
                        {
                            TensorPrimitives.Multiply(e, gradientScale, gRow);
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        });
        var mean = TensorPrimitives.Sum<float>(losses) / rows;
        var l = Cpu(loss);
        l[0] = (accumulateLoss ? l[0] : 0f) + (weight * mean);
    }
}
