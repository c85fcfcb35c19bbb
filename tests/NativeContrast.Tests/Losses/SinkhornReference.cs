namespace NativeContrast.Tests.Losses;

/// <summary>Float64 references written from SwAV's main_swav.py (distributed_sinkhorn and the swapped loss).</summary>
internal static class SinkhornReference
{
    /// <summary>
    /// distributed_sinkhorn on one process, step by step as SwAV writes it (Q is [K, B]), in float64; returned as
    /// [B, K]. exp(S/ε) is shifted by the global maximum, a scalar that "Q /= sum(Q)" undoes exactly.
    /// </summary>
    public static double[] Swav(float[] scores, int rows, int cols, double epsilon, int iterations, bool rescale)
    {
        var max = double.NegativeInfinity;
        foreach (var v in scores)
        {
            max = Math.Max(max, v / epsilon);
        }
        var q = new double[cols * rows];
        double total = 0;
        for (var b = 0; b < rows; b++)
        {
            for (var k = 0; k < cols; k++)
            {
                q[(k * rows) + b] = Math.Exp((scores[(b * cols) + k] / epsilon) - max);
                total += q[(k * rows) + b];
            }
        }
        for (var i = 0; i < q.Length; i++)
        {
            q[i] /= total;
        }
        for (var it = 0; it < iterations; it++)
        {
            for (var k = 0; k < cols; k++)
            {
                double sum = 0;
                for (var b = 0; b < rows; b++)
                {
                    sum += q[(k * rows) + b];
                }
                for (var b = 0; b < rows; b++)
                {
                    q[(k * rows) + b] = q[(k * rows) + b] / sum / cols;
                }
            }
            for (var b = 0; b < rows; b++)
            {
                double sum = 0;
                for (var k = 0; k < cols; k++)
                {
                    sum += q[(k * rows) + b];
                }
                for (var k = 0; k < cols; k++)
                {
                    q[(k * rows) + b] = q[(k * rows) + b] / sum / rows;
                }
            }
        }
        var codes = new double[rows * cols];
        for (var b = 0; b < rows; b++)
        {
            for (var k = 0; k < cols; k++)
            {
                codes[(b * cols) + k] = q[(k * rows) + b] * (rescale ? rows : 1);
            }
        }
        return codes;
    }

    /// <summary>
    /// The same iterates in the log domain (float64 log-sum-exps), for scores whose exp(S/ε) over- or underflows even
    /// in float64: log Q[b,k] = S/ε + lr[k] + lc[b].
    /// </summary>
    public static double[] LogDomain(float[] scores, int rows, int cols, double epsilon, int iterations, bool rescale)
    {
        var x = scores.Select(v => v / epsilon).ToArray();
        var lr = new double[cols];
        var lc = new double[rows];
        var column = new double[rows];
        var row = new double[cols];
        for (var k = 0; k < cols; k++)
        {
            for (var b = 0; b < rows; b++)
            {
                column[b] = x[(b * cols) + k];
            }
            lr[k] = -Math.Log(cols) - LogSumExp(column);
        }
        for (var it = 0; it < iterations; it++)
        {
            if (it > 0)
            {
                for (var k = 0; k < cols; k++)
                {
                    for (var b = 0; b < rows; b++)
                    {
                        column[b] = x[(b * cols) + k] + lr[k] + lc[b];
                    }
                    lr[k] += -Math.Log(cols) - LogSumExp(column);
                }
            }
            for (var b = 0; b < rows; b++)
            {
                for (var k = 0; k < cols; k++)
                {
                    row[k] = x[(b * cols) + k] + lr[k];
                }
                lc[b] = -Math.Log(rows) - LogSumExp(row);
            }
        }
        var codes = new double[rows * cols];
        for (var b = 0; b < rows; b++)
        {
            for (var k = 0; k < cols; k++)
            {
                codes[(b * cols) + k] = Math.Exp(x[(b * cols) + k] + lr[k] + lc[b] + (rescale ? Math.Log(rows) : 0));
            }
        }
        return codes;
    }

    public static double LogSumExp(ReadOnlySpan<double> values)
    {
        var max = double.NegativeInfinity;
        foreach (var v in values)
        {
            max = Math.Max(max, v);
        }
        double sum = 0;
        foreach (var v in values)
        {
            sum += Math.Exp(v - max);
        }
        return max + Math.Log(sum);
    }

    /// <summary>−Σ_k q[b,k]·log softmax(p[b,:]/τ)[k] per sample, and their mean.</summary>
    public static (double Mean, double[] PerSample) SwappedLoss(double[] scores, double[] codes, int rows, int cols, double temperature)
    {
        var perSample = new double[rows];
        var z = new double[cols];
        for (var b = 0; b < rows; b++)
        {
            for (var k = 0; k < cols; k++)
            {
                z[k] = scores[(b * cols) + k] / temperature;
            }
            var lse = LogSumExp(z);
            double loss = 0;
            for (var k = 0; k < cols; k++)
            {
                loss -= codes[(b * cols) + k] * (z[k] - lse);
            }
            perSample[b] = loss;
        }
        return (perSample.Average(), perSample);
    }

    /// <summary>Row sums and column sums of a [rows, cols] matrix.</summary>
    public static (double[] Rows, double[] Cols) Marginals(ReadOnlySpan<float> codes, int rows, int cols)
    {
        var r = new double[rows];
        var c = new double[cols];
        for (var b = 0; b < rows; b++)
        {
            for (var k = 0; k < cols; k++)
            {
                r[b] += codes[(b * cols) + k];
                c[k] += codes[(b * cols) + k];
            }
        }
        return (r, c);
    }

    /// <summary>max |v − target| / target.</summary>
    public static double MaxRelativeDeviation(double[] values, double target) =>
        values.Max(v => Math.Abs(v - target)) / target;

    /// <summary>
    /// Cosine scores as SwAV sees them: L2-normalised random features [rows, dim] times L2-normalised prototypes [cols, dim].
    /// </summary>
    public static float[] CosineScores(int rows, int cols, int dim, int seed)
    {
        var rng = new Random(seed);
        var features = UnitRows(rows, dim, rng);
        var prototypes = UnitRows(cols, dim, rng);
        var scores = new float[rows * cols];
        for (var b = 0; b < rows; b++)
        {
            for (var k = 0; k < cols; k++)
            {
                double dot = 0;
                for (var d = 0; d < dim; d++)
                {
                    dot += features[(b * dim) + d] * prototypes[(k * dim) + d];
                }
                scores[(b * cols) + k] = (float)dot;
            }
        }
        return scores;
    }

    private static double[] UnitRows(int rows, int dim, Random rng)
    {
        var values = new double[rows * dim];
        for (var i = 0; i < rows; i++)
        {
            double norm = 0;
            for (var d = 0; d < dim; d++)
            {
                // Box-Muller: isotropic directions.
                var g = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                values[(i * dim) + d] = g;
                norm += g * g;
            }
            norm = Math.Sqrt(norm);
            for (var d = 0; d < dim; d++)
            {
                values[(i * dim) + d] /= norm;
            }
        }
        return values;
    }
}
