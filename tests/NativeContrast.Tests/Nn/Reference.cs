namespace NativeContrast.Tests.Nn;

/// <summary>Naive float64 references of the Nn layers over NHWC arrays, written for clarity, not speed.</summary>
internal static class Reference
{
    /// <summary>y[n, oh, ow, o] = Σ x[n, ih, iw, i]·w[o, i, kh, kw] + b[o] (PyTorch's weight layout, NHWC activations).</summary>
    public static double[] Conv2d(double[] x, double[] w, double[]? b, int n, int h, int wd, int cin, int cout, int k, int s, int p)
    {
        int oh = ((h + (2 * p) - k) / s) + 1, ow = ((wd + (2 * p) - k) / s) + 1;
        var y = new double[n * oh * ow * cout];
        for (var ni = 0; ni < n; ni++)
        {
            for (var yo = 0; yo < oh; yo++)
            {
                for (var xo = 0; xo < ow; xo++)
                {
                    for (var o = 0; o < cout; o++)
                    {
                        var acc = b is null ? 0.0 : b[o];
                        for (var kh = 0; kh < k; kh++)
                        {
                            var ih = (yo * s) - p + kh;
                            if (ih < 0 || ih >= h)
                            {
                                continue;
                            }
                            for (var kw = 0; kw < k; kw++)
                            {
                                var iw = (xo * s) - p + kw;
                                if (iw < 0 || iw >= wd)
                                {
                                    continue;
                                }
                                for (var i = 0; i < cin; i++)
                                {
                                    acc += x[((((ni * h) + ih) * wd) + iw) * cin + i] * w[((((o * cin) + i) * k) + kh) * k + kw];
                                }
                            }
                        }
                        y[((((ni * oh) + yo) * ow) + xo) * cout + o] = acc;
                    }
                }
            }
        }
        return y;
    }

    /// <summary>Training-mode batch norm over [rows, C] (biased variance), + residual, then ReLU when asked.</summary>
    public static double[] BatchNormTrain(double[] x, double[]? gamma, double[]? beta, double[]? residual, bool relu, int rows, int c, double eps, out double[] mean, out double[] variance)
    {
        mean = new double[c];
        variance = new double[c];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < c; j++)
            {
                mean[j] += x[(r * c) + j] / rows;
            }
        }
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < c; j++)
            {
                var d = x[(r * c) + j] - mean[j];
                variance[j] += d * d / rows;
            }
        }
        var invStd = new double[c];
        for (var j = 0; j < c; j++)
        {
            invStd[j] = 1.0 / Math.Sqrt(variance[j] + eps);
        }
        return Normalize(x, mean, invStd, gamma, beta, residual, relu, rows, c);
    }

    /// <summary>Evaluation-mode batch norm with given running statistics.</summary>
    public static double[] BatchNormEval(double[] x, double[] runningMean, double[] runningVar, double[]? gamma, double[]? beta, double[]? residual, bool relu, int rows, int c, double eps)
    {
        var invStd = runningVar.Select(v => 1.0 / Math.Sqrt(v + eps)).ToArray();
        return Normalize(x, runningMean, invStd, gamma, beta, residual, relu, rows, c);
    }

    public static double[] MaxPool(double[] x, int n, int h, int w, int c, int k, int s, int p)
    {
        int oh = ((h + (2 * p) - k) / s) + 1, ow = ((w + (2 * p) - k) / s) + 1;
        var y = new double[n * oh * ow * c];
        for (var ni = 0; ni < n; ni++)
        {
            for (var yo = 0; yo < oh; yo++)
            {
                for (var xo = 0; xo < ow; xo++)
                {
                    for (var j = 0; j < c; j++)
                    {
                        var best = double.NegativeInfinity;
                        for (var kh = 0; kh < k; kh++)
                        {
                            for (var kw = 0; kw < k; kw++)
                            {
                                int ih = (yo * s) - p + kh, iw = (xo * s) - p + kw;
                                if (ih >= 0 && ih < h && iw >= 0 && iw < w)
                                {
                                    best = Math.Max(best, x[((((ni * h) + ih) * w) + iw) * c + j]);
                                }
                            }
                        }
                        y[((((ni * oh) + yo) * ow) + xo) * c + j] = best;
                    }
                }
            }
        }
        return y;
    }

    public static double[] AvgPool(double[] x, int n, int positions, int c)
    {
        var y = new double[n * c];
        for (var ni = 0; ni < n; ni++)
        {
            for (var q = 0; q < positions; q++)
            {
                for (var j = 0; j < c; j++)
                {
                    y[(ni * c) + j] += x[(((ni * positions) + q) * c) + j] / positions;
                }
            }
        }
        return y;
    }

    /// <summary>y = x·Wᵀ + b for x [rows, in], W [out, in].</summary>
    public static double[] Linear(double[] x, double[] w, double[]? b, int rows, int inF, int outF)
    {
        var y = new double[rows * outF];
        for (var r = 0; r < rows; r++)
        {
            for (var o = 0; o < outF; o++)
            {
                var acc = b is null ? 0.0 : b[o];
                for (var i = 0; i < inF; i++)
                {
                    acc += x[(r * inF) + i] * w[(o * inF) + i];
                }
                y[(r * outF) + o] = acc;
            }
        }
        return y;
    }

    /// <summary>Per-row log Σ exp(x) − x[label].</summary>
    public static double[] CrossEntropy(double[] logits, int[] labels, int rows, int cols)
    {
        var losses = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            var row = logits.AsSpan(r * cols, cols);
            var max = double.NegativeInfinity;
            foreach (var v in row)
            {
                max = Math.Max(max, v);
            }
            var sum = 0.0;
            foreach (var v in row)
            {
                sum += Math.Exp(v - max);
            }
            losses[r] = max + Math.Log(sum) - row[labels[r]];
        }
        return losses;
    }

    /// <summary>Σ a·b: the scalar loss whose gradient with respect to a is b.</summary>
    public static double Dot(double[] a, double[] b)
    {
        var s = 0.0;
        for (var i = 0; i < a.Length; i++)
        {
            s += a[i] * b[i];
        }
        return s;
    }

    public static double[] ToDouble(float[] a) => [.. a.Select(v => (double)v)];

    public static float[] ToFloat(double[] a) => [.. a.Select(v => (float)v)];

    private static double[] Normalize(double[] x, double[] mean, double[] invStd, double[]? gamma, double[]? beta, double[]? residual, bool relu, int rows, int c)
    {
        var y = new double[rows * c];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < c; j++)
            {
                var i = (r * c) + j;
                var v = ((x[i] - mean[j]) * invStd[j] * (gamma?[j] ?? 1.0)) + (beta?[j] ?? 0.0) + (residual?[i] ?? 0.0);
                y[i] = relu ? Math.Max(v, 0.0) : v;
            }
        }
        return y;
    }
}
