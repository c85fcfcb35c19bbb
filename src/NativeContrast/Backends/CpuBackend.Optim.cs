namespace NativeContrast.Backends;

using System.Numerics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

// The CPU twins of native/optim.cu: the same chunks, the same element-wise expressions with the same roundings
// (Vector.FusedMultiplyAdd / MathF.FusedMultiplyAdd where the kernels use __fmaf_rn), vectorised and spread over
// cores chunk by chunk. Norms are summed in a different order than on the device (per chunk in float, across
// chunks in double), which is the only place the two backends may differ.
public sealed partial class CpuBackend
{
    /// <summary>Elements per parallel work item of the EMA: large enough to amortise scheduling, small enough to balance.</summary>
    private const int EmaBlock = 1 << 14;

    public void EmaUpdate(Tensor teacher, Tensor student, float momentum)
    {
        Check.SameLength(teacher, student);
        OptimChecks.Momentum(momentum, nameof(momentum));
        var ts = CpuArray(teacher);
        var ss = CpuArray(student);
        var blocks = (ts.Count + EmaBlock - 1) / EmaBlock;
        CpuParallel.For(blocks, EmaBlock, (start, end) =>
        {
            var from = start * EmaBlock;
            var to = Math.Min(ts.Count, end * EmaBlock);
            Ema(ts.AsSpan(from, to - from), ss.AsSpan(from, to - from), momentum);
        });
    }

    public void GradientNorm(OptimizerPlan plan, Tensor gradients, float maxNorm = 0f)
    {
        OptimChecks.Step(plan, this, new StepOptions(MaxGradientNorm: maxNorm), gradients);
        ComputeNorms(plan, null, CpuArray(gradients), maxNorm, lars: null, honourExclusion: true);
    }

    public void SgdStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor momentumBuffer, SgdStepArgs args, StepOptions options = default)
    {
        OptimChecks.Step(plan, this, options, values, gradients, momentumBuffer);
        var (w, g, b, t) = (CpuArray(values), CpuArray(gradients), CpuArray(momentumBuffer), Teacher(options));
        var scale = options.MaxGradientNorm > 0f ? ComputeNorms(plan, null, g, options.MaxGradientNorm, null, true) : 1f;
        var (tm, oneMinusTm) = (options.TeacherMomentum, 1f - options.TeacherMomentum);
        ForEachChunk(plan, !options.DecayBiasAndNorm, (offset, length, _, excluded) =>
        {
            var decay = !excluded && args.WeightDecay != 0f;
            SgdChunk(w.AsSpan(offset, length), g.AsSpan(offset, length), b.AsSpan(offset, length), scale, args.LearningRate, args.Momentum, args.WeightDecay, decay, args.Nesterov);
            if (t.Array is not null)
            {
                Ema(t.AsSpan(offset, length), w.AsSpan(offset, length), tm, oneMinusTm);
            }
        });
    }

    public void LarsStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor velocity, LarsStepArgs args, StepOptions options = default)
    {
        OptimChecks.Step(plan, this, options, values, gradients, velocity);
        OptimChecks.Lars(args);
        var (w, g, v, t) = (CpuArray(values), CpuArray(gradients), CpuArray(velocity), Teacher(options));
        var scale = ComputeNorms(plan, w, g, options.MaxGradientNorm, args, !options.DecayBiasAndNorm);
        var (trust, decay) = (CpuArray(plan.TrustRatios), CpuArray(plan.AppliedWeightDecay));
        var (tm, oneMinusTm) = (options.TeacherMomentum, 1f - options.TeacherMomentum);
        ForEachChunk(plan, honourExclusion: false, (offset, length, segment, _) =>
        {
            Span<float> ws = w.AsSpan(offset, length), vs = v.AsSpan(offset, length);
            ReadOnlySpan<float> gs = g.AsSpan(offset, length);
            if (args.Variant == LarsVariant.SimClr)
            {
                LarsChunk(ws, gs, vs, scale, args.LearningRate * trust[segment], args.Momentum, decay[segment], args.Nesterov);
            }
            else
            {
                SoloLarsChunk(ws, gs, vs, scale, trust[segment], args.LearningRate, args.Momentum, decay[segment], args.Nesterov);
            }
            if (t.Array is not null)
            {
                Ema(t.AsSpan(offset, length), w.AsSpan(offset, length), tm, oneMinusTm);
            }
        });
    }

    public void AdamWStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor firstMoment, Tensor secondMoment, AdamWStepArgs args, StepOptions options = default)
    {
        OptimChecks.Step(plan, this, options, values, gradients, firstMoment, secondMoment);
        OptimChecks.Adam(args);
        var (w, g, m, v, t) = (CpuArray(values), CpuArray(gradients), CpuArray(firstMoment), CpuArray(secondMoment), Teacher(options));
        var scale = options.MaxGradientNorm > 0f ? ComputeNorms(plan, null, g, options.MaxGradientNorm, null, true) : 1f;
        var (stepSize, inverseSqrtBiasCorrection2, decayFactor) = args.KernelScalars();
        var (tm, oneMinusTm) = (options.TeacherMomentum, 1f - options.TeacherMomentum);
        var adam = new AdamScalars(scale, decayFactor, args.Beta1, 1f - args.Beta1, args.Beta2, 1f - args.Beta2, args.Epsilon, stepSize, inverseSqrtBiasCorrection2);
        ForEachChunk(plan, !options.DecayBiasAndNorm, (offset, length, _, excluded) =>
        {
            AdamWChunk(w.AsSpan(offset, length), g.AsSpan(offset, length), m.AsSpan(offset, length), v.AsSpan(offset, length), adam, !excluded && decayFactor != 1f);
            if (t.Array is not null)
            {
                Ema(t.AsSpan(offset, length), w.AsSpan(offset, length), tm, oneMinusTm);
            }
        });
    }

    private static ArraySegment<float> Teacher(StepOptions options) => options.Teacher is { } t ? CpuArray(t) : default;

    /// <summary>Runs body(offset, length, segment, excluded) for every chunk of the plan, chunks spread over cores.</summary>
    private static void ForEachChunk(OptimizerPlan plan, bool honourExclusion, Action<int, int, int, bool> body)
    {
        var chunks = plan.Chunks;
        CpuParallel.For(plan.ChunkCount, plan.ChunkLength * 8L, (start, end) =>
        {
            for (var c = start; c < end; c++)
            {
                var e = c * OptimizerPlan.EntryInts;
                var excluded = honourExclusion && (chunks[e + 3] & OptimizerPlan.ExcludedFromDecay) != 0;
                body(checked((int)plan.ChunkOffset(c)), chunks[e + 1], chunks[e + 2], excluded);
            }
        });
    }

    /// <summary>
    /// The norm passes: per-chunk sums of squares, the global gradient norm and clip scale (into the plan's tensors),
    /// and, for LARS, one trust ratio and one applied weight decay per segment. Returns the clip scale (1 when maxNorm is 0).
    /// </summary>
    private static float ComputeNorms(OptimizerPlan plan, ArraySegment<float>? weights, ArraySegment<float> gradients, float maxNorm, LarsStepArgs? lars, bool honourExclusion)
    {
        var chunks = plan.Chunks;
        var pw = CpuArray(plan.WeightPartials);
        var pg = CpuArray(plan.GradientPartials);
        var pgw = CpuArray(plan.GradientWeightPartials);
        var withDot = lars is { Variant: LarsVariant.SimClr };
        CpuParallel.For(plan.ChunkCount, plan.ChunkLength * 2L, (start, end) =>
        {
            for (var c = start; c < end; c++)
            {
                var (offset, length) = (checked((int)plan.ChunkOffset(c)), chunks[(c * OptimizerPlan.EntryInts) + 1]);
                pg[c] = TensorPrimitives.SumOfSquares<float>(gradients.AsSpan(offset, length));
                if (weights is { } w)
                {
                    pw[c] = TensorPrimitives.SumOfSquares<float>(w.AsSpan(offset, length));
                    if (withDot)
                    {
                        pgw[c] = TensorPrimitives.Dot<float>(gradients.AsSpan(offset, length), w.AsSpan(offset, length));
                    }
                }
            }
        });
        double total = 0;
        for (var c = 0; c < plan.ChunkCount; c++)
        {
            total += pg[c];
        }
        var norm = (float)Math.Sqrt(total);
        var ratio = maxNorm > 0f ? maxNorm / (norm + 1e-6f) : 1f;
        var scale = ratio >= 1f ? 1f : ratio;
        Cpu(plan.GradientNorm)[0] = norm;
        Cpu(plan.ClipScale)[0] = scale;
        if (lars is { } args)
        {
            Span<float> trust = Cpu(plan.TrustRatios), decay = Cpu(plan.AppliedWeightDecay);
            for (var s = 0; s < plan.Segments.Count; s++)
            {
                var (first, count) = plan.ChunksOf(s);
                double sw = 0, sg = 0, sgw = 0;
                for (var c = first; c < first + count; c++)
                {
                    sw += pw[c];
                    sg += pg[c];
                    sgw += withDot ? pgw[c] : 0f;
                }
                var excluded = honourExclusion && (plan.SegmentTable[(s * OptimizerPlan.EntryInts) + 2] & OptimizerPlan.ExcludedFromDecay) != 0;
                (trust[s], decay[s]) = args.Variant == LarsVariant.SimClr
                    ? SimClrTrust(args, excluded, scale, (float)sw, (float)sg, (float)sgw)
                    : SoloLearnTrust(args, excluded, scale, (float)sw, (float)sg);
            }
        }
        return scale;
    }

    /// <summary>
    /// SimCLR's ratio η‖w‖/‖c·g + wd·w‖, the denominator expanded as c²Σg² + 2c·wd·Σgw + wd²Σw² (clamped at 0) so that
    /// one pass over the arena serves any clip scale. The decay is wd unless excluded; the ratio is 1 when excluded or a norm is 0.
    /// Mirrors nc_optim_finalize_norms expression for expression.
    /// </summary>
    private static (float Trust, float Decay) SimClrTrust(LarsStepArgs args, bool excluded, float scale, float sw, float sg, float sgw)
    {
        var wd = excluded ? 0f : args.WeightDecay;
        var weightNorm = MathF.Sqrt(sw);
        var decayedSquares = MathF.FusedMultiplyAdd(scale, MathF.FusedMultiplyAdd(scale, sg, 2f * wd * sgw), wd * wd * sw);
        var decayedNorm = MathF.Sqrt(MathF.Max(decayedSquares, 0f));
        var trust = excluded || !(weightNorm > 0f) || !(decayedNorm > 0f) ? 1f : args.TrustCoefficient * weightNorm / decayedNorm;
        return (trust, wd);
    }

    /// <summary>
    /// solo-learn's ratio η·‖w‖/(‖c·g‖ + wd‖w‖ + ε) (min(r/lr, 1) with clip_lr); a view that is excluded or has a zero
    /// norm is skipped: ratio 1 and no decay. Mirrors nc_optim_finalize_norms expression for expression.
    /// </summary>
    private static (float Trust, float Decay) SoloLearnTrust(LarsStepArgs args, bool excluded, float scale, float sw, float sg)
    {
        var weightNorm = MathF.Sqrt(sw);
        var gradientNorm = scale * MathF.Sqrt(sg);
        if (excluded || !(weightNorm > 0f) || !(gradientNorm > 0f))
        {
            return (1f, 0f);
        }
        var trust = args.TrustCoefficient * (weightNorm / (MathF.FusedMultiplyAdd(weightNorm, args.WeightDecay, gradientNorm) + args.Epsilon));
        if (args.ClipLearningRate)
        {
            // r / 0 is +inf, so a zero learning rate clips to 1, as in the reference.
            trust = MathF.Min(trust / args.LearningRate, 1f);
        }
        return (trust, args.WeightDecay);
    }

    /// <summary>teacher ← fma(m, teacher, (1 − m)·student).</summary>
    private static void Ema(Span<float> teacher, ReadOnlySpan<float> student, float momentum) =>
        Ema(teacher, student, momentum, 1f - momentum);

    private static void Ema(Span<float> teacher, ReadOnlySpan<float> student, float m, float oneMinusM)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var (mv, av) = (new Vector<float>(m), new Vector<float>(oneMinusM));
            for (; i <= teacher.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                Vector.FusedMultiplyAdd(mv, new Vector<float>(teacher[i..]), av * new Vector<float>(student[i..])).CopyTo(teacher[i..]);
            }
        }
        for (; i < teacher.Length; i++)
        {
            teacher[i] = MathF.FusedMultiplyAdd(m, teacher[i], oneMinusM * student[i]);
        }
    }

    private static void SgdChunk(Span<float> w, ReadOnlySpan<float> g, Span<float> b, float scale, float lr, float mu, float wd, bool decay, bool nesterov)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var (scaleV, lrV, muV, wdV) = (new Vector<float>(scale), new Vector<float>(-lr), new Vector<float>(mu), new Vector<float>(wd));
            for (; i <= w.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var wi = new Vector<float>(w[i..]);
                var gi = new Vector<float>(g[i..]) * scaleV;
                if (decay)
                {
                    gi = Vector.FusedMultiplyAdd(wdV, wi, gi);
                }
                var bi = Vector.FusedMultiplyAdd(muV, new Vector<float>(b[i..]), gi);
                var d = nesterov ? Vector.FusedMultiplyAdd(muV, bi, gi) : bi;
                Vector.FusedMultiplyAdd(lrV, d, wi).CopyTo(w[i..]);
                bi.CopyTo(b[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            var gi = g[i] * scale;
            if (decay)
            {
                gi = MathF.FusedMultiplyAdd(wd, w[i], gi);
            }
            b[i] = MathF.FusedMultiplyAdd(mu, b[i], gi);
            var d = nesterov ? MathF.FusedMultiplyAdd(mu, b[i], gi) : b[i];
            w[i] = MathF.FusedMultiplyAdd(-lr, d, w[i]);
        }
    }

    /// <summary>SimCLR's form: g' = c·g (+ wd·w), v ← μ·v + (lr·trust)·g', w ← w − (Nesterov ? μ·v + (lr·trust)·g' : v).</summary>
    private static void LarsChunk(Span<float> w, ReadOnlySpan<float> g, Span<float> v, float scale, float scaledLr, float mu, float wd, bool nesterov)
    {
        var decay = wd != 0f;
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var (scaleV, lrV, muV, wdV) = (new Vector<float>(scale), new Vector<float>(scaledLr), new Vector<float>(mu), new Vector<float>(wd));
            for (; i <= w.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var wi = new Vector<float>(w[i..]);
                var gi = new Vector<float>(g[i..]) * scaleV;
                if (decay)
                {
                    gi = Vector.FusedMultiplyAdd(wdV, wi, gi);
                }
                var step = lrV * gi;
                var vi = Vector.FusedMultiplyAdd(muV, new Vector<float>(v[i..]), step);
                var update = nesterov ? Vector.FusedMultiplyAdd(muV, vi, step) : vi;
                (wi - update).CopyTo(w[i..]);
                vi.CopyTo(v[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            var gi = g[i] * scale;
            if (decay)
            {
                gi = MathF.FusedMultiplyAdd(wd, w[i], gi);
            }
            var step = scaledLr * gi;
            v[i] = MathF.FusedMultiplyAdd(mu, v[i], step);
            var update = nesterov ? MathF.FusedMultiplyAdd(mu, v[i], step) : v[i];
            w[i] -= update;
        }
    }

    /// <summary>solo-learn's form: d = trust·(c·g (+ wd·w)), b ← μ·b + d, w ← w − lr·(Nesterov ? d + μ·b : b).</summary>
    private static void SoloLarsChunk(Span<float> w, ReadOnlySpan<float> g, Span<float> b, float scale, float trust, float lr, float mu, float wd, bool nesterov)
    {
        var decay = wd != 0f;
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var (scaleV, trustV, lrV, muV, wdV) = (new Vector<float>(scale), new Vector<float>(trust), new Vector<float>(-lr), new Vector<float>(mu), new Vector<float>(wd));
            for (; i <= w.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var wi = new Vector<float>(w[i..]);
                var d = new Vector<float>(g[i..]) * scaleV;
                if (decay)
                {
                    d = Vector.FusedMultiplyAdd(wdV, wi, d);
                }
                d *= trustV;
                var bi = Vector.FusedMultiplyAdd(muV, new Vector<float>(b[i..]), d);
                var direction = nesterov ? Vector.FusedMultiplyAdd(muV, bi, d) : bi;
                Vector.FusedMultiplyAdd(lrV, direction, wi).CopyTo(w[i..]);
                bi.CopyTo(b[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            var d = g[i] * scale;
            if (decay)
            {
                d = MathF.FusedMultiplyAdd(wd, w[i], d);
            }
            d *= trust;
            b[i] = MathF.FusedMultiplyAdd(mu, b[i], d);
            var direction = nesterov ? MathF.FusedMultiplyAdd(mu, b[i], d) : b[i];
            w[i] = MathF.FusedMultiplyAdd(-lr, direction, w[i]);
        }
    }

    private readonly record struct AdamScalars(float Scale, float DecayFactor, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float Epsilon, float StepSize, float InverseSqrtBiasCorrection2);

    private static void AdamWChunk(Span<float> w, ReadOnlySpan<float> g, Span<float> m, Span<float> v, AdamScalars a, bool decay)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var scale = new Vector<float>(a.Scale);
            var decayFactor = new Vector<float>(a.DecayFactor);
            var (b1, c1, b2, c2) = (new Vector<float>(a.Beta1), new Vector<float>(a.OneMinusBeta1), new Vector<float>(a.Beta2), new Vector<float>(a.OneMinusBeta2));
            var (eps, step, inv) = (new Vector<float>(a.Epsilon), new Vector<float>(-a.StepSize), new Vector<float>(a.InverseSqrtBiasCorrection2));
            for (; i <= w.Length - Vector<float>.Count; i += Vector<float>.Count)
            {
                var gi = new Vector<float>(g[i..]) * scale;
                var wi = new Vector<float>(w[i..]);
                if (decay)
                {
                    wi *= decayFactor;
                }
                var mi = Vector.FusedMultiplyAdd(b1, new Vector<float>(m[i..]), c1 * gi);
                var vi = Vector.FusedMultiplyAdd(b2, new Vector<float>(v[i..]), c2 * gi * gi);
                var denominator = Vector.FusedMultiplyAdd(Vector.SquareRoot(vi), inv, eps);
                Vector.FusedMultiplyAdd(step, mi / denominator, wi).CopyTo(w[i..]);
                mi.CopyTo(m[i..]);
                vi.CopyTo(v[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            var gi = g[i] * a.Scale;
            var wi = decay ? w[i] * a.DecayFactor : w[i];
            m[i] = MathF.FusedMultiplyAdd(a.Beta1, m[i], a.OneMinusBeta1 * gi);
            v[i] = MathF.FusedMultiplyAdd(a.Beta2, v[i], a.OneMinusBeta2 * gi * gi);
            var denominator = MathF.FusedMultiplyAdd(MathF.Sqrt(v[i]), a.InverseSqrtBiasCorrection2, a.Epsilon);
            w[i] = MathF.FusedMultiplyAdd(-a.StepSize, m[i] / denominator, wi);
        }
    }
}
