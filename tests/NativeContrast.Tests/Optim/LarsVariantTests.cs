namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static NativeContrast.Tests.Optim.OptimFixtures;

/// <summary>
/// The two named LARS forms on the CPU twin, each against a float64 reference of its own code (SimCLR's TensorFlow
/// optimiser, solo-learn's PyTorch LARS) over a warm-up + cosine schedule, and the behaviours where they part ways.
/// </summary>
public class LarsVariantTests
{
    private const int SmallChunks = 64;

    /// <summary>3 warm-up steps from lr 0, then 5 cosine steps down towards 0: the learning rate changes every step.</summary>
    private static readonly LearningRateSchedule WarmupCosine = new(0.4f, totalSteps: 8, warmupSteps: 3, warmupStartLearningRate: 0f);

    private CpuBackend _cpu = null!;

    [SetUp]
    public void CreateBackend() => _cpu = new CpuBackend();

    [TearDown]
    public void DisposeBackend() => _cpu.Dispose();

    [Test]
    public void SimClrFormMatchesItsReferenceOverWarmupAndCosine([Values] bool nesterov, [Values] bool clipGradients)
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 21);
        // η = 0.5, wd = 0.05 keep the update large next to the weights, so its rounding is measured, not the weights'.
        using var lars = new Lars(arena, 0f, momentum: 0.9f, weightDecay: 0.05f, trustCoefficient: 0.5f, nesterov: nesterov, chunkLength: SmallChunks, variant: LarsVariant.SimClr)
        {
            Schedule = WarmupCosine,
            Clipping = clipGradients ? new GradientClipping(5f) : null,
        };
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var w = ToDouble(before);
        var v = new double[w.Length];
        for (var step = 0; step < WarmupCosine.TotalSteps; step++)
        {
            RandomGradients(arena, seed: 700 + step);
            var g = ToDouble(Read(arena, arena.Gradients));
            var clip = clipGradients ? ClipScale(segments, g, 5) : 1;
            var trust = Lars(segments, w, g, v, WarmupCosine.At(step), 0.9, 0.05, 0.5, nesterov, clip);
            lars.Step();
            Numerics.AssertClose(Read(arena, lars.Plan.TrustRatios), trust, Numerics.Fp32Tolerance, $"trust ratios of step {step}");
        }
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "weights");
        Numerics.AssertClose(Read(arena, arena.StateSlot(0)), v, Numerics.Fp32Tolerance, "velocity (lr inside)");
    }

    [Test]
    public void SoloLearnFormMatchesItsReferenceOverWarmupAndCosine([Values] bool nesterov, [Values] bool clipLearningRate, [Values] bool clipGradients)
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 22);
        // η = 0.1 gives ratios near 0.1: with clip_lr they clip to 1 at lr 0 (step 0) and on the last cosine step, not in between.
        using var lars = new Lars(arena, 0f, momentum: 0.9f, weightDecay: 0.05f, trustCoefficient: 0.1f, nesterov: nesterov, chunkLength: SmallChunks, variant: LarsVariant.SoloLearn)
        {
            Epsilon = 1e-8f,
            ClipLearningRate = clipLearningRate,
            Schedule = WarmupCosine,
            Clipping = clipGradients ? new GradientClipping(5f) : null,
        };
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var w = ToDouble(before);
        var b = new double[w.Length];
        for (var step = 0; step < WarmupCosine.TotalSteps; step++)
        {
            RandomGradients(arena, seed: 800 + step);
            var g = ToDouble(Read(arena, arena.Gradients));
            var clip = clipGradients ? ClipScale(segments, g, 5) : 1;
            var (trust, decay) = SoloLearnLars(segments, w, g, b, WarmupCosine.At(step), 0.9, 0.05, 0.1, 1e-8, clipLearningRate, nesterov, clip);
            lars.Step();
            Numerics.AssertClose(Read(arena, lars.Plan.TrustRatios), trust, Numerics.Fp32Tolerance, $"trust ratios of step {step}");
            Assert.That(Read(arena, lars.Plan.AppliedWeightDecay), Is.EqualTo(decay.Select(d => (float)d)), $"applied decay of step {step}");
        }
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "weights");
        Numerics.AssertClose(Read(arena, arena.StateSlot(0)), b, Numerics.Fp32Tolerance, "momentum buffer (lr outside)");
    }

    [Test]
    public void ClipLearningRateCapsTheRatioAtOneWhereTheLearningRateIsBelowIt()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 23);
        // lr 1e-4 is far below η·‖w‖/(‖g‖ + wd‖w‖) ≈ 0.5 on every adapted view, so clip_lr makes every ratio exactly 1.
        using var lars = new Lars(arena, 1e-4f, weightDecay: 0.05f, trustCoefficient: 0.5f, chunkLength: SmallChunks, variant: LarsVariant.SoloLearn) { ClipLearningRate = true };
        lars.Step();
        Assert.That(Read(arena, lars.Plan.TrustRatios), Is.All.EqualTo(1f));
        Assert.That(Read(arena, lars.Plan.AppliedWeightDecay), Is.EqualTo(Segments(arena).Select(s => s.Excluded ? 0f : 0.05f)), "clipped views are still decayed");
    }

    [Test]
    public void AZeroGradientViewIsSkippedBySoloLearnAndDecayedBySimClr()
    {
        float[] StepWithZeroGradient(LarsVariant variant, out float trust, out float decay)
        {
            using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
            Randomise(arena, seed: 24);
            var view = arena["conv.weight"];
            _cpu.Fill(arena.Gradient(view), 0f);
            using var lars = new Lars(arena, 0.5f, momentum: 0.9f, weightDecay: 0.01f, trustCoefficient: 0.002f, chunkLength: SmallChunks, variant: variant);
            lars.Step();
            var segment = lars.Plan.Segments.ToList().IndexOf(view);
            trust = Read(arena, lars.Plan.TrustRatios)[segment];
            decay = Read(arena, lars.Plan.AppliedWeightDecay)[segment];
            return Read(arena, arena.Value(view));
        }
        using var probe = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(probe, seed: 24);
        var before = Read(probe, probe.Value(probe["conv.weight"]));

        // solo-learn: ‖g‖ = 0 skips the view (ratio 1, no decay), so from a zero buffer nothing moves.
        Assert.That(StepWithZeroGradient(LarsVariant.SoloLearn, out var soloTrust, out var soloDecay), Is.EqualTo(before));
        Assert.That((soloTrust, soloDecay), Is.EqualTo((1f, 0f)));

        // SimCLR: g' = wd·w is not zero, so trust = η‖w‖/(wd‖w‖) = η/wd and w ← w − lr·(η/wd)·wd·w = w·(1 − lr·η).
        var simclr = StepWithZeroGradient(LarsVariant.SimClr, out var simclrTrust, out var simclrDecay);
        Assert.That(simclrTrust, Is.EqualTo(0.002 / 0.01).Within(1e-5).Percent);
        Assert.That(simclrDecay, Is.EqualTo(0.01f));
        Numerics.AssertClose(simclr, before.Select(x => x * (1 - (0.5 * 0.002))).ToArray(), Numerics.Fp32Tolerance, "SimCLR decays a view with a zero gradient");
    }

    [Test]
    public void AZeroWeightViewTakesAPlainSgdStepInSoloLearn()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 25);
        var view = arena["fc.weight"];
        _cpu.Fill(arena.Value(view), 0f);
        var g = Read(arena, arena.Gradient(view));
        using var lars = new Lars(arena, 0.3f, weightDecay: 0.05f, trustCoefficient: 0.02f, chunkLength: SmallChunks, variant: LarsVariant.SoloLearn);
        lars.Step();
        // ‖w‖ = 0: ratio 1 and no decay, so the first step from a zero buffer is w = −lr·g exactly.
        Assert.That(Read(arena, arena.Value(view)), Is.EqualTo(g.Select(x => -0.3f * x)));
    }

    [Test]
    public void TheFormsPartUnderWarmupBecauseOnlySimClrKeepsTheLearningRateInItsVelocity()
    {
        // On a bias (excluded: ratio 1, no decay in both forms) with the same gradient every step, SimCLR's velocity
        // remembers the smaller warm-up rates it was built with; solo-learn's buffer has no rate in it.
        float[] Bias(LarsVariant variant)
        {
            using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
            Randomise(arena, seed: 26);
            using var lars = new Lars(arena, 0f, momentum: 0.9f, chunkLength: SmallChunks, variant: variant) { Schedule = new LearningRateSchedule(0.3f, totalSteps: 10, warmupSteps: 3, warmupStartLearningRate: 0.1f) };
            var before = Read(arena, arena.Value(arena["conv.bias"]));
            for (var step = 0; step < 3; step++)
            {
                lars.Step();
            }
            var after = Read(arena, arena.Value(arena["conv.bias"]));
            return [.. after.Select((a, i) => a - before[i])];
        }
        using var probe = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(probe, seed: 26);
        var g = ToDouble(Read(probe, probe.Gradient(probe["conv.bias"])));
        // lr = 0.1, 0.1667, 0.2333. SimCLR: v1 = 0.1g, v2 = 0.09g + 0.1667g, v3 = 0.9·v2 + 0.2333g; Δw = −(v1 + v2 + v3).
        // solo-learn: b1 = g, b2 = 1.9g, b3 = 2.71g; Δw = −(0.1·1 + 0.1667·1.9 + 0.2333·2.71)g.
        double lr0 = 0.1, lr1 = 0.1 + (0.2 / 3), lr2 = 0.1 + (0.4 / 3);
        var v2 = (0.9 * lr0) + lr1;
        var simclr = lr0 + v2 + ((0.9 * v2) + lr2);
        var solo = lr0 + (lr1 * 1.9) + (lr2 * 2.71);
        Assert.That(solo / simclr, Is.GreaterThan(1.1), "the two forms differ by more than 10% here");
        Numerics.AssertClose(Bias(LarsVariant.SimClr), g.Select(x => -simclr * x).ToArray(), Numerics.Fp32Tolerance, "SimCLR");
        Numerics.AssertClose(Bias(LarsVariant.SoloLearn), g.Select(x => -solo * x).ToArray(), Numerics.Fp32Tolerance, "solo-learn");
    }

    [Test]
    public void EachRecipeDefaultsToItsPapersHyperparameters()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        using var simclr = NativeContrast.Optim.Lars.SimClr(arena, 4.8f);
        Assert.That(
            (simclr.Variant, simclr.LearningRate, simclr.Momentum, simclr.WeightDecay, simclr.TrustCoefficient, simclr.Nesterov, simclr.DecayBiasAndNorm),
            Is.EqualTo((LarsVariant.SimClr, 4.8f, 0.9f, 1e-6f, 0.001f, false, false)));
        using var solo = NativeContrast.Optim.Lars.SoloLearn(arena, 0.4f);
        Assert.That(
            (solo.Variant, solo.LearningRate, solo.Momentum, solo.WeightDecay, solo.TrustCoefficient, solo.Epsilon, solo.ClipLearningRate, solo.Nesterov, solo.DecayBiasAndNorm),
            Is.EqualTo((LarsVariant.SoloLearn, 0.4f, 0.9f, 1e-4f, 0.02f, 1e-8f, true, false, false)));
    }

    [Test]
    public void HyperparametersCarryTheVariantAndRefuseTheOtherForm()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        using var solo = NativeContrast.Optim.Lars.SoloLearn(arena, 0.4f);
        solo.Epsilon = 1e-6f;
        var saved = solo.GetHyperparameters();
        Assert.That(saved["variant"], Is.EqualTo("solo-learn"));
        using var restored = new Lars(arena, 1f, variant: LarsVariant.SoloLearn);
        restored.SetHyperparameters(saved);
        Assert.That((restored.Epsilon, restored.ClipLearningRate, restored.TrustCoefficient, restored.WeightDecay), Is.EqualTo((1e-6f, true, 0.02f, 1e-4f)));
        using var simclr = NativeContrast.Optim.Lars.SimClr(arena, 1f);
        Assert.That(() => simclr.SetHyperparameters(saved), Throws.ArgumentException.With.Message.Contains("solo-learn"));
    }

    [Test]
    public void StepRefusesAnUndefinedVariantOrANegativeEpsilon()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        using var plan = new OptimizerPlan(arena);
        var (w, g, v) = (arena.TrainableValues, arena.Gradients, arena.StateSlot(0));
        Assert.That(() => _cpu.LarsStep(plan, w, g, v, new LarsStepArgs(0.1f, 0.9f, 0f, 0.001f, false, (LarsVariant)7)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("variant 7"));
        Assert.That(() => _cpu.LarsStep(plan, w, g, v, new LarsStepArgs(0.1f, 0.9f, 0f, 0.001f, false, LarsVariant.SoloLearn, Epsilon: -1f)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("epsilon"));
    }
}
