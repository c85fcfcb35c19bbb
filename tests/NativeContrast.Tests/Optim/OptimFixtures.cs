namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Nn;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>Arenas for the optimiser tests and float64 references of every update, written from the papers' formulas.</summary>
internal static class OptimFixtures
{
    /// <summary>Awkward view sizes (1, 7, 33, 231, 1000: none a multiple of a vector width or a chunk), every kind, a buffer in the middle of the declarations.</summary>
    public static ArenaLayout SmallLayout()
    {
        var layout = new ArenaLayout();
        layout.Add("stem.weight", new TensorShape(1), ParameterKind.Weight);
        layout.Add("conv.weight", new TensorShape(10, 100), ParameterKind.Weight);
        layout.Add("conv.bias", new TensorShape(7), ParameterKind.Bias);
        layout.Add("bn.running_mean", new TensorShape(33), ParameterKind.Buffer);
        layout.Add("bn.weight", new TensorShape(33), ParameterKind.NormScale);
        layout.Add("bn.bias", new TensorShape(33), ParameterKind.NormShift);
        layout.Add("fc.weight", new TensorShape(7, 33), ParameterKind.Weight);
        layout.Add("bn.running_var", new TensorShape(33), ParameterKind.Buffer);
        return layout;
    }

    /// <summary>ResNet-50 + a 1000-class fc, from the engine's own model: torchvision's 161 trainable tensors, 25,557,032 floats, plus BN buffers.</summary>
    public static ArenaLayout ResNet50Layout()
    {
        var layout = new ArenaLayout();
        using var encoder = new ResNet(layout, ResNetOptions.ResNet50);
        using var classifier = LinearHead.Classifier(layout, encoder.FeatureDim, 1000);
        return layout;
    }

    /// <summary>Random values (buffers included) and gradients written view by view, so the padding between views stays zero.</summary>
    public static void Randomise(ParameterArena arena, int seed, float valueScale = 1f, float gradientScale = 1f)
    {
        foreach (var view in arena.Views)
        {
            var n = checked((int)view.Length);
            arena.Backend.CopyFromHost(Numerics.RandomArray(n, seed + (2 * view.Index), valueScale), arena.Value(view));
            if (view.IsTrainable)
            {
                arena.Backend.CopyFromHost(Numerics.RandomArray(n, seed + (2 * view.Index) + 1, gradientScale), arena.Gradient(view));
            }
        }
    }

    /// <summary>Overwrites every trainable view's gradient with fresh random values (a new step's gradients).</summary>
    public static void RandomGradients(ParameterArena arena, int seed, float scale = 1f)
    {
        foreach (var view in arena.Views.Where(v => v.IsTrainable))
        {
            arena.Backend.CopyFromHost(Numerics.RandomArray(checked((int)view.Length), seed + view.Index, scale), arena.Gradient(view));
        }
    }

    public static float[] Read(ParameterArena arena, Tensor t) => Numerics.ToArray(arena.Backend, t);

    public static double[] ToDouble(float[] values) => Array.ConvertAll(values, v => (double)v);

    /// <summary>A trainable view as the references see it.</summary>
    public readonly record struct Segment(int Offset, int Length, bool Excluded, string Name);

    public static Segment[] Segments(ParameterArena arena, bool decayBiasAndNorm = false) =>
        arena.Views.Where(v => v.IsTrainable)
            .Select(v => new Segment((int)v.Offset, (int)v.Length, !decayBiasAndNorm && v.IsExcludedFromDecay, v.Name))
            .ToArray();

    /// <summary>min(1, maxNorm / (‖g‖ + 1e-6)) over the trainable views, as torch.nn.utils.clip_grad_norm_; 1 when maxNorm is 0.</summary>
    public static double ClipScale(Segment[] segments, double[] g, double maxNorm)
    {
        var norm = Math.Sqrt(segments.Sum(s => SumSquares(g, s)));
        return maxNorm > 0 ? Math.Min(1, maxNorm / (norm + 1e-6)) : 1;
    }

    public static double SumSquares(double[] x, Segment s)
    {
        double sum = 0;
        for (var i = s.Offset; i < s.Offset + s.Length; i++)
        {
            sum += x[i] * x[i];
        }
        return sum;
    }

    /// <summary>PyTorch's SGD (dampening 0) in float64, in place.</summary>
    public static void Sgd(Segment[] segments, double[] w, double[] g, double[] b, double lr, double mu, double wd, bool nesterov, double clip = 1)
    {
        foreach (var s in segments)
        {
            for (var i = s.Offset; i < s.Offset + s.Length; i++)
            {
                var d = (clip * g[i]) + (s.Excluded ? 0 : wd * w[i]);
                b[i] = (mu * b[i]) + d;
                w[i] -= lr * (nesterov ? d + (mu * b[i]) : b[i]);
            }
        }
    }

    /// <summary>SimCLR's trust ratios η‖w‖/‖c·g + wd·w‖ of every segment (1 when excluded or a norm is 0), in float64.</summary>
    public static double[] TrustRatios(Segment[] segments, double[] w, double[] g, double eta, double wd, double clip = 1)
    {
        return segments.Select(s =>
        {
            var wn = Math.Sqrt(SumSquares(w, s));
            double dn = 0;
            for (var i = s.Offset; i < s.Offset + s.Length; i++)
            {
                var d = (clip * g[i]) + (s.Excluded ? 0 : wd * w[i]);
                dn += d * d;
            }
            dn = Math.Sqrt(dn);
            return s.Excluded || wn == 0 || dn == 0 ? 1 : eta * wn / dn;
        }).ToArray();
    }

    /// <summary>
    /// SimCLR's LARS (google-research/simclr lars_optimizer.py, classic momentum) in float64, in place: g' = c·g + wd·w,
    /// v ← μ·v + lr·trust·g', w ← w − (Nesterov ? μ·v + lr·trust·g' : v). Returns the trust ratios it used.
    /// </summary>
    public static double[] Lars(Segment[] segments, double[] w, double[] g, double[] v, double lr, double mu, double wd, double eta, bool nesterov, double clip = 1)
    {
        var trust = TrustRatios(segments, w, g, eta, wd, clip);
        for (var k = 0; k < segments.Length; k++)
        {
            var s = segments[k];
            var scaledLr = lr * trust[k];
            for (var i = s.Offset; i < s.Offset + s.Length; i++)
            {
                var d = (clip * g[i]) + (s.Excluded ? 0 : wd * w[i]);
                v[i] = (mu * v[i]) + (scaledLr * d);
                w[i] -= nesterov ? (mu * v[i]) + (scaledLr * d) : v[i];
            }
        }
        return trust;
    }

    /// <summary>
    /// solo-learn's LARS (solo/utils/lars.py, dampening 0) in float64, in place: r = η·‖w‖/(‖c·g‖ + ‖w‖·wd + ε), with clip_lr
    /// r ← min(r/lr, 1), d = r·(c·g + wd·w) when the view is adapted, else d = c·g (excluded, or ‖w‖ or ‖c·g‖ zero);
    /// b ← μ·b + d; w ← w − lr·(Nesterov ? d + μ·b : b). Returns the ratios (1 where skipped) and the decay each view got.
    /// </summary>
    public static (double[] Trust, double[] Decay) SoloLearnLars(
        Segment[] segments, double[] w, double[] g, double[] b, double lr, double mu, double wd, double eta, double eps, bool clipLr, bool nesterov, double clip = 1)
    {
        var trust = new double[segments.Length];
        var decay = new double[segments.Length];
        for (var k = 0; k < segments.Length; k++)
        {
            var s = segments[k];
            var wn = Math.Sqrt(SumSquares(w, s));
            var gn = clip * Math.Sqrt(SumSquares(g, s));
            var adapted = !s.Excluded && wn != 0 && gn != 0;
            trust[k] = 1;
            if (adapted)
            {
                trust[k] = eta * wn / (gn + (wn * wd) + eps);
                if (clipLr)
                {
                    trust[k] = Math.Min(trust[k] / lr, 1);
                }
                decay[k] = wd;
            }
            for (var i = s.Offset; i < s.Offset + s.Length; i++)
            {
                var d = trust[k] * ((clip * g[i]) + (decay[k] * w[i]));
                b[i] = (mu * b[i]) + d;
                w[i] -= lr * (nesterov ? d + (mu * b[i]) : b[i]);
            }
        }
        return (trust, decay);
    }

    /// <summary>torch.optim.AdamW in float64, in place; t is the 1-based step.</summary>
    public static void AdamW(Segment[] segments, double[] w, double[] g, double[] m, double[] v, double lr, double b1, double b2, double eps, double wd, long t, double clip = 1)
    {
        var bc1 = 1 - Math.Pow(b1, t);
        var bc2 = 1 - Math.Pow(b2, t);
        foreach (var s in segments)
        {
            for (var i = s.Offset; i < s.Offset + s.Length; i++)
            {
                var gi = clip * g[i];
                if (!s.Excluded)
                {
                    w[i] *= 1 - (lr * wd);
                }
                m[i] = (b1 * m[i]) + ((1 - b1) * gi);
                v[i] = (b2 * v[i]) + ((1 - b2) * gi * gi);
                w[i] -= lr / bc1 * m[i] / ((Math.Sqrt(v[i]) / Math.Sqrt(bc2)) + eps);
            }
        }
    }

    /// <summary>
    /// Compares the update a step made (after − before) with the reference's, so the check measures the optimiser and
    /// not the weights it is added to; elements outside the segments (padding) must not have moved at all.
    /// </summary>
    public static void AssertUpdateClose(Segment[] segments, float[] before, float[] after, double[] expectedAfter, double tolerance, string what)
    {
        var inside = new bool[before.Length];
        var actual = new List<float>();
        var expected = new List<double>();
        foreach (var s in segments)
        {
            for (var i = s.Offset; i < s.Offset + s.Length; i++)
            {
                inside[i] = true;
                actual.Add((float)((double)after[i] - before[i]));
                expected.Add(expectedAfter[i] - before[i]);
            }
        }
        for (var i = 0; i < before.Length; i++)
        {
            if (!inside[i])
            {
                Assert.That(after[i], Is.EqualTo(before[i]), $"{what}: padding element {i} changed");
            }
        }
        Numerics.AssertClose(actual.ToArray(), expected.ToArray(), tolerance, what);
    }

    /// <summary>Bitwise equality, reporting the first differing element.</summary>
    public static void AssertBitwiseEqual(float[] actual, float[] expected, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), $"{what}: lengths differ");
        for (var i = 0; i < actual.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(expected[i]))
            {
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {expected[i]:R} bit for bit");
            }
        }
    }
}
