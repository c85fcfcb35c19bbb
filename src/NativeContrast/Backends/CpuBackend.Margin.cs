namespace NativeContrast.Backends;

using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

// The CPU twin of native/margin.cu: row by row over the other rows, fp32 cosines, the hinge in double, gradient rows
// summed in fp32 chunks that join a double accumulator. Rows are split across cores; stats are summed in row order.
public sealed partial class CpuBackend
{
    /// <summary>The clamp of the squared distance, as in native/margin.cu.</summary>
    private const double MarginDistanceFloor = 1e-12;

    /// <summary>The CPU computes the margin loss row by row and needs no workspace.</summary>
    public long MarginLossWorkspaceLength(int rows, int dim) => 0;

    public void MarginLoss(Tensor u, float margin, Tensor workspace, Tensor stats, Tensor? du, float gradScale = 1f)
    {
        var (rows, dim) = ContrastiveCheck.Margin(u, margin, du);
        ContrastiveCheck.Workspace(workspace, MarginLossWorkspaceLength(rows, dim));
        ContrastiveCheck.Stats(stats);
        var us = CpuArray(u);
        var dus = du is null ? default : CpuArray(du);
        var negativeScale = rows > 2 ? 1.0 / (rows - 2) : 0.0;
        var positiveFactor = 2.0 * gradScale / rows;
        var negativeFactor = positiveFactor * negativeScale;
        var perRow = ArrayPool<double>.Shared.Rent(3 * rows);
        try
        {
            CpuParallel.For(rows, 2L * rows * dim, (start, end) =>
            {
                var gradient = ArrayPool<double>.Shared.Rent(dim);
                var chunk = ArrayPool<float>.Shared.Rent(dim);
                try
                {
                    for (var i = start; i < end; i++)
                    {
                        var g = gradient.AsSpan(0, dim);
                        var c = chunk.AsSpan(0, dim);
                        var ui = us.AsSpan(i * dim, dim);
                        var partner = Partner(i, rows);
                        var bestNegative = double.NegativeInfinity;
                        var hinges = 0.0;
                        g.Clear();
                        for (var j0 = 0; j0 < rows; j0 += GradientChunk)
                        {
                            c.Clear();
                            for (var j = j0; j < Math.Min(rows, j0 + GradientChunk); j++)
                            {
                                if (j == i || j == partner)
                                {
                                    continue;
                                }
                                var uj = us.AsSpan(j * dim, dim);
                                var cosine = TensorPrimitives.Dot<float>(ui, uj);
                                bestNegative = Math.Max(bestNegative, cosine);
                                var (hinge, weight) = MarginHinge(cosine, margin);
                                hinges += 0.5 * hinge * hinge;
                                if (weight != 0 && du is not null)
                                {
                                    TensorPrimitives.MultiplyAdd(uj, (float)weight, c, c);
                                }
                            }
                            AddTo(g, c);
                        }
                        var up = us.AsSpan(partner * dim, dim);
                        var positive = TensorPrimitives.Dot<float>(ui, up);
                        perRow[i] = (1.0 - positive) + (hinges * negativeScale);
                        perRow[rows + i] = positive;
                        perRow[(2 * rows) + i] = positive >= bestNegative ? 1 : 0;
                        if (du is null)
                        {
                            continue;
                        }
                        var dui = dus.AsSpan(i * dim, dim);
                        for (var f = 0; f < dim; f++)
                        {
                            dui[f] = (float)((negativeFactor * g[f]) - (positiveFactor * up[f]));
                        }
                    }
                }
                finally
                {
                    ArrayPool<double>.Shared.Return(gradient);
                    ArrayPool<float>.Shared.Return(chunk);
                }
            });
            WriteStats(perRow, rows, stats);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(perRow);
        }
    }

    /// <summary>
    /// (margin − d, (margin − d)/d) for a negative of cosine c, d = sqrt(max(2 − 2c, 1e-12)); (0, 0) beyond the margin.
    /// The weight is −∂(½(margin − d)²)/∂c; it is 0 where the clamp holds d constant.
    /// </summary>
    private static (double Hinge, double Weight) MarginHinge(float cosine, float margin)
    {
        var squared = 2.0 - (2.0 * cosine);
        var distance = Math.Sqrt(Math.Max(squared, MarginDistanceFloor));
        if (distance >= margin)
        {
            return (0, 0);
        }
        var hinge = margin - distance;
        return (hinge, squared < MarginDistanceFloor ? 0 : hinge / distance);
    }
}
