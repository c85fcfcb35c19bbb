namespace NativeContrast.Tests.Backends;

/// <summary>Float64 references of the core ops, written plainly (loops, no tricks) for the oracle tests to compare against.</summary>
internal static class Reference
{
    /// <summary>C = alpha·op(A)·op(B) + beta·C for row-major A [m,k] (or [k,m] transposed), B [k,n] (or [n,k]).</summary>
    public static double[] Gemm(float[] a, bool transposeA, float[] b, bool transposeB, float[] c, int m, int k, int n, double alpha, double beta)
    {
        var result = new double[m * n];
        for (var i = 0; i < m; i++)
        {
            for (var j = 0; j < n; j++)
            {
                double dot = 0;
                for (var p = 0; p < k; p++)
                {
                    var av = transposeA ? a[(p * m) + i] : a[(i * k) + p];
                    var bv = transposeB ? b[(j * k) + p] : b[(p * n) + j];
                    dot += (double)av * bv;
                }
                result[(i * n) + j] = (alpha * dot) + (beta == 0 ? 0 : beta * c[(i * n) + j]);
            }
        }
        return result;
    }

    public static double[] SumRows(float[] x, int rows, int cols)
    {
        var result = new double[rows];
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < cols; j++)
            {
                result[i] += x[(i * cols) + j];
            }
        }
        return result;
    }

    public static double[] SumColumns(float[] x, int rows, int cols)
    {
        var result = new double[cols];
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < cols; j++)
            {
                result[j] += x[(i * cols) + j];
            }
        }
        return result;
    }

    public static double[] Softmax(float[] x, int rows, int cols)
    {
        var result = new double[rows * cols];
        for (var i = 0; i < rows; i++)
        {
            var lse = LogSumExp(x.AsSpan(i * cols, cols));
            for (var j = 0; j < cols; j++)
            {
                result[(i * cols) + j] = Math.Exp(x[(i * cols) + j] - lse);
            }
        }
        return result;
    }

    public static double[] LogSumExp(float[] x, int rows, int cols)
    {
        var result = new double[rows];
        for (var i = 0; i < rows; i++)
        {
            result[i] = LogSumExp(x.AsSpan(i * cols, cols));
        }
        return result;
    }

    public static (double[] Y, double[] Norms) L2Normalize(float[] x, int rows, int cols, double eps)
    {
        var y = new double[rows * cols];
        var norms = new double[rows];
        for (var i = 0; i < rows; i++)
        {
            double squares = 0;
            for (var j = 0; j < cols; j++)
            {
                squares += (double)x[(i * cols) + j] * x[(i * cols) + j];
            }
            norms[i] = Math.Sqrt(squares);
            for (var j = 0; j < cols; j++)
            {
                y[(i * cols) + j] = x[(i * cols) + j] / Math.Max(norms[i], eps);
            }
        }
        return (y, norms);
    }

    private static double LogSumExp(ReadOnlySpan<float> row)
    {
        double max = double.NegativeInfinity;
        foreach (var v in row)
        {
            max = Math.Max(max, v);
        }
        double sum = 0;
        foreach (var v in row)
        {
            sum += Math.Exp(v - max);
        }
        return max + Math.Log(sum);
    }
}
