namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static NativeContrast.Tests.Optim.OptimFixtures;

/// <summary>The CPU twins of the optimiser steps against float64 references, over an arena of awkward views cut into many chunks.</summary>
public class OptimizerTests
{
    /// <summary>Small chunks so that views span several chunks and chunk boundaries fall inside views.</summary>
    private const int SmallChunks = 64;

    private CpuBackend _cpu = null!;

    [SetUp]
    public void CreateBackend() => _cpu = new CpuBackend();

    [TearDown]
    public void DisposeBackend() => _cpu.Dispose();

    [TestCase(false)]
    [TestCase(true)]
    public void SgdMatchesReferenceOverThreeSteps(bool nesterov)
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 1);
        using var sgd = new Sgd(arena, learningRate: 0.1f, momentum: 0.9f, weightDecay: 0.05f, nesterov: nesterov, chunkLength: SmallChunks);
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var w = ToDouble(before);
        var b = new double[w.Length];
        for (var step = 0; step < 3; step++)
        {
            RandomGradients(arena, seed: 100 + step);
            Sgd(segments, w, ToDouble(Read(arena, arena.Gradients)), b, 0.1, 0.9, 0.05, nesterov);
            sgd.Step();
        }
        Assert.That(sgd.StepCount, Is.EqualTo(3));
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "weights");
        Numerics.AssertClose(Read(arena, arena.StateSlot(0)), b, Numerics.Fp32Tolerance, "momentum buffer");
    }

    [Test]
    public void NesterovLooksAheadAlongTheMomentum()
    {
        float[] Displacement(bool nesterov)
        {
            using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
            Randomise(arena, seed: 2);
            using var sgd = new Sgd(arena, learningRate: 0.1f, momentum: 0.9f, nesterov: nesterov, chunkLength: SmallChunks);
            var before = Read(arena, arena.TrainableValues);
            sgd.Step();
            sgd.Step();
            var after = Read(arena, arena.TrainableValues);
            return [.. after.Select((a, i) => a - before[i])];
        }
        using var probe = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(probe, seed: 2);
        var g = Read(probe, probe.Gradients);
        var segments = Segments(probe);
        // The same gradient g twice: heavy ball moves w by −lr·(1 + 1.9)·g, Nesterov by −lr·(1.9 + 2.71)·g.
        foreach (var (nesterov, factor) in new[] { (false, 2.9), (true, 4.61) })
        {
            var expected = new double[g.Length];
            foreach (var s in segments)
            {
                for (var i = s.Offset; i < s.Offset + s.Length; i++)
                {
                    expected[i] = -0.1 * factor * g[i];
                }
            }
            Numerics.AssertClose(Displacement(nesterov), expected, 1e-5, nesterov ? "Nesterov" : "heavy ball");
        }
    }

    [Test]
    public void SgdSkipsDecayOnBiasAndNormViewsOnly()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 3);
        _cpu.Fill(arena.Gradients, 0f);
        using var sgd = new Sgd(arena, learningRate: 0.5f, momentum: 0f, weightDecay: 0.1f, chunkLength: SmallChunks);
        var before = Read(arena, arena.Values);
        sgd.Step();
        var after = Read(arena, arena.Values);
        foreach (var view in arena.Views)
        {
            for (var i = (int)view.Offset; i < view.Offset + view.Length; i++)
            {
                // Only decay moves anything when the gradients are zero: w·(1 − lr·wd) for weights, nothing for the rest.
                var expected = view.Kind == ParameterKind.Weight ? MathF.FusedMultiplyAdd(-0.5f, 0.1f * before[i], before[i]) : before[i];
                Assert.That(after[i], Is.EqualTo(expected), $"{view.Name}[{i - view.Offset}] ({view.Kind})");
            }
        }
    }

    [Test]
    public void DecayBiasAndNormDecaysEveryTrainableView()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 4);
        _cpu.Fill(arena.Gradients, 0f);
        using var sgd = new Sgd(arena, learningRate: 0.5f, momentum: 0f, weightDecay: 0.1f) { DecayBiasAndNorm = true };
        var before = Read(arena, arena.Values);
        sgd.Step();
        var after = Read(arena, arena.Values);
        foreach (var view in arena.Views)
        {
            var i = (int)view.Offset;
            Assert.That(after[i] != before[i], Is.EqualTo(view.IsTrainable), $"{view.Name} ({view.Kind})");
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void LarsMatchesReferenceOverThreeSteps(bool nesterov)
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 5);
        // η = 0.5 keeps the update large next to the weights, so its rounding error is measured, not the weights'.
        using var lars = new Lars(arena, learningRate: 0.4f, momentum: 0.9f, weightDecay: 0.05f, trustCoefficient: 0.5f, nesterov: nesterov, chunkLength: SmallChunks);
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var w = ToDouble(before);
        var v = new double[w.Length];
        for (var step = 0; step < 3; step++)
        {
            RandomGradients(arena, seed: 200 + step);
            var trust = Lars(segments, w, ToDouble(Read(arena, arena.Gradients)), v, 0.4, 0.9, 0.05, 0.5, nesterov);
            lars.Step();
            Numerics.AssertClose(Read(arena, lars.Plan.TrustRatios), trust, Numerics.Fp32Tolerance, $"trust ratios of step {step}");
        }
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "weights");
        Numerics.AssertClose(Read(arena, arena.StateSlot(0)), v, Numerics.Fp32Tolerance, "velocity");
    }

    [Test]
    public void LarsTrustRatiosPerViewWithSimClrCoefficient()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 6, valueScale: 0.3f, gradientScale: 2f);
        using var lars = new Lars(arena, learningRate: 1f, weightDecay: 1e-6f, trustCoefficient: 0.001f, chunkLength: SmallChunks);
        var segments = Segments(arena);
        var expected = TrustRatios(segments, ToDouble(Read(arena, arena.TrainableValues)), ToDouble(Read(arena, arena.Gradients)), 0.001, 1e-6);
        lars.Step();
        var actual = Read(arena, lars.Plan.TrustRatios);
        for (var k = 0; k < segments.Length; k++)
        {
            Assert.That(lars.Plan.Segments[k].Name, Is.EqualTo(segments[k].Name));
            Assert.That(actual[k], Is.EqualTo(expected[k]).Within(1e-4).Percent, $"trust ratio of {segments[k].Name}");
            if (segments[k].Excluded)
            {
                Assert.That(actual[k], Is.EqualTo(1f), $"{segments[k].Name} is excluded from adaptation");
            }
            else
            {
                Assert.That(actual[k], Is.LessThan(0.01f), $"{segments[k].Name} is adapted");
            }
        }
    }

    [Test]
    public void LarsLeavesExcludedViewsUnadaptedAndUndecayed()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 7);
        using var lars = new Lars(arena, learningRate: 0.25f, momentum: 0.9f, weightDecay: 0.5f, trustCoefficient: 0.001f, chunkLength: SmallChunks);
        var before = Read(arena, arena.Values);
        var g = Read(arena, arena.Gradients);
        lars.Step();
        var after = Read(arena, arena.Values);
        foreach (var view in arena.Views.Where(v => v.IsExcludedFromDecay))
        {
            for (var i = (int)view.Offset; i < view.Offset + view.Length; i++)
            {
                // First step from zero velocity, trust 1, no decay: v = lr·g and w − v, exactly.
                Assert.That(after[i], Is.EqualTo(before[i] - (0.25f * g[i])), $"{view.Name}[{i - view.Offset}]");
            }
        }
        var weight = arena["conv.weight"];
        var o = (int)weight.Offset;
        Assert.That(Math.Abs(after[o] - before[o]), Is.LessThan(0.25f * Math.Abs(g[o] + (0.5f * before[o])) / 10), "weights are scaled by a small trust ratio");
    }

    [Test]
    public void AdamWMatchesReferenceOverThreeSteps()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
        Randomise(arena, seed: 8, valueScale: 0.1f);
        using var adam = new AdamW(arena, learningRate: 0.05f, beta1: 0.9f, beta2: 0.99f, epsilon: 1e-6f, weightDecay: 0.1f, chunkLength: SmallChunks);
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var w = ToDouble(before);
        var (m, v) = (new double[w.Length], new double[w.Length]);
        for (var step = 1; step <= 3; step++)
        {
            RandomGradients(arena, seed: 300 + step);
            AdamW(segments, w, ToDouble(Read(arena, arena.Gradients)), m, v, 0.05, 0.9, 0.99, 1e-6, 0.1, step);
            adam.Step();
        }
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "weights");
        Numerics.AssertClose(Read(arena, arena.StateSlot(0)), m, Numerics.Fp32Tolerance, "first moment");
        Numerics.AssertClose(Read(arena, arena.StateSlot(1)), v, Numerics.Fp32Tolerance, "second moment");
    }

    [Test]
    public void AdamWBiasCorrectionMakesTheFirstStepLearningRateSized()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
        Randomise(arena, seed: 9);
        using var adam = new AdamW(arena, learningRate: 0.01f, epsilon: 1e-8f, weightDecay: 0f);
        var before = Read(arena, arena.TrainableValues);
        var g = Read(arena, arena.Gradients);
        adam.Step();
        var after = Read(arena, arena.TrainableValues);
        foreach (var view in arena.Views.Where(v => v.IsTrainable))
        {
            for (var i = (int)view.Offset; i < view.Offset + view.Length; i++)
            {
                // m̂ = g and v̂ = g² after bias correction, so the step is lr·g/(|g| + ε) ≈ lr·sign(g); without it, it would be 0.1/√0.001 ≈ 3.2x that.
                var expected = before[i] - (0.01 * g[i] / (Math.Abs(g[i]) + 1e-8));
                Assert.That(after[i], Is.EqualTo(expected).Within(2e-7 + (1e-6 * Math.Abs(expected))), $"{view.Name}[{i - view.Offset}]");
            }
        }
    }

    [Test]
    public void AdamWDecaysOnlyWeightsDecoupledFromTheGradient()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
        Randomise(arena, seed: 10);
        _cpu.Fill(arena.Gradients, 0f);
        using var adam = new AdamW(arena, learningRate: 0.1f, weightDecay: 0.5f, chunkLength: SmallChunks);
        var before = Read(arena, arena.Values);
        adam.Step();
        var after = Read(arena, arena.Values);
        var factor = (float)(1.0 - ((double)0.1f * 0.5f));
        foreach (var view in arena.Views)
        {
            var i = (int)view.Offset;
            Assert.That(after[i], Is.EqualTo(view.Kind == ParameterKind.Weight ? before[i] * factor : before[i]), $"{view.Name} ({view.Kind})");
        }
    }

    [Test]
    public void ClippingScalesGradientsToTheMaxNormOnTheDevicePath()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 11);
        using var sgd = new Sgd(arena, learningRate: 0.1f, momentum: 0.9f, weightDecay: 0.01f, chunkLength: SmallChunks) { Clipping = new GradientClipping(5f) };
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var g = ToDouble(Read(arena, arena.Gradients));
        var norm = Math.Sqrt(segments.Sum(s => SumSquares(g, s)));
        Assert.That(norm, Is.GreaterThan(10), "the test needs a norm well above the clip");
        var w = ToDouble(before);
        Sgd(segments, w, g, new double[w.Length], 0.1, 0.9, 0.01, false, ClipScale(segments, g, 5));
        sgd.Step();
        Assert.That(Read(arena, sgd.GradientNorm)[0], Is.EqualTo(norm).Within(1e-4).Percent, "gradient norm");
        Assert.That(Read(arena, sgd.Plan.ClipScale)[0], Is.EqualTo(5 / (norm + 1e-6)).Within(1e-4).Percent, "clip scale");
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "clipped update");
    }

    [Test]
    public void ClippingAboveTheNormChangesNothing()
    {
        float[] Run(GradientClipping? clipping)
        {
            using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
            Randomise(arena, seed: 12);
            using var adam = new AdamW(arena, learningRate: 0.01f, chunkLength: SmallChunks) { Clipping = clipping };
            adam.Step();
            return Read(arena, arena.Values);
        }
        AssertBitwiseEqual(Run(new GradientClipping(1e6f)), Run(null), "a clip above the norm");
    }

    [Test]
    public void ClippingANonFiniteNormPoisonsTheWholeStepAsPyTorchDoes()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 15);
        _cpu.CopyFromHost([float.NaN], arena.Gradient(arena["stem.weight"]));
        using var sgd = new Sgd(arena, learningRate: 0.1f, chunkLength: SmallChunks) { Clipping = new GradientClipping(1f) };
        sgd.Step();
        Assert.That(Read(arena, sgd.Plan.ClipScale)[0], Is.NaN);
        var bias = Read(arena, arena.Value(arena["conv.bias"]));
        Assert.That(bias, Is.All.NaN, "a view with finite gradients is not silently stepped with scale 1");
    }

    [Test]
    public void LarsTrustRatiosUseTheClippedGradientNorm()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(arena, seed: 13);
        using var lars = new Lars(arena, learningRate: 0.4f, weightDecay: 0.05f, trustCoefficient: 0.5f, chunkLength: SmallChunks) { Clipping = new GradientClipping(1f) };
        var segments = Segments(arena);
        var before = Read(arena, arena.TrainableValues);
        var g = ToDouble(Read(arena, arena.Gradients));
        var w = ToDouble(before);
        var trust = Lars(segments, w, g, new double[w.Length], 0.4, 0.9, 0.05, 0.5, false, ClipScale(segments, g, 1));
        lars.Step();
        Numerics.AssertClose(Read(arena, lars.Plan.TrustRatios), trust, Numerics.Fp32Tolerance, "trust ratios");
        AssertUpdateClose(segments, before, Read(arena, arena.TrainableValues), w, Numerics.Fp32Tolerance, "weights");
    }

    [Test]
    public void ResumingFromStateAndHyperparametersContinuesBitForBit()
    {
        var schedule = new LearningRateSchedule(0.05f, totalSteps: 4, warmupSteps: 1, warmupStartLearningRate: 0.01f);

        using var straight = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
        Randomise(straight, seed: 14);
        using var first = new AdamW(straight, 0f, weightDecay: 0.1f, chunkLength: SmallChunks) { Schedule = schedule, Clipping = new GradientClipping(3f) };
        var initial = Read(straight, straight.Values);
        float[] Gradients(int step) => Numerics.RandomArray(checked((int)straight.TrainableLength), 400 + step);
        for (var step = 0; step < 3; step++)
        {
            _cpu.CopyFromHost(Gradients(step), straight.Gradients);
            first.Step();
        }

        using var interrupted = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
        _cpu.CopyFromHost(initial, interrupted.Values);
        using var second = new AdamW(interrupted, 0f, weightDecay: 0.1f, chunkLength: SmallChunks) { Schedule = schedule, Clipping = new GradientClipping(3f) };
        for (var step = 0; step < 2; step++)
        {
            _cpu.CopyFromHost(Gradients(step), interrupted.Gradients);
            second.Step();
        }
        var (values, state, hyperparameters) = (Read(interrupted, interrupted.Values), Read(interrupted, interrupted.OptimizerState), second.GetHyperparameters());

        using var resumed = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
        _cpu.CopyFromHost(values, resumed.Values);
        _cpu.CopyFromHost(state, resumed.OptimizerState);
        using var third = new AdamW(resumed, 0f, weightDecay: 0f, chunkLength: SmallChunks) { Schedule = schedule };
        third.SetHyperparameters(hyperparameters);
        Assert.That(third.StepCount, Is.EqualTo(2));
        Assert.That(third.Clipping?.MaxNorm, Is.EqualTo(3f));
        _cpu.CopyFromHost(Gradients(2), resumed.Gradients);
        third.Step();

        AssertBitwiseEqual(Read(resumed, resumed.Values), Read(straight, straight.Values), "resumed weights");
        AssertBitwiseEqual(Read(resumed, resumed.OptimizerState), Read(straight, straight.OptimizerState), "resumed state");
    }

    [Test]
    public void HyperparametersRoundTripAndRefuseAnotherOptimizer()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        using var lars = new Lars(arena, learningRate: 0.3f, momentum: 0.8f, weightDecay: 1e-6f, trustCoefficient: 0.002f, nesterov: true) { StepCount = 17, DecayBiasAndNorm = true };
        var saved = lars.GetHyperparameters();
        using var restored = new Lars(arena, learningRate: 1f);
        restored.SetHyperparameters(saved);
        Assert.That(
            (restored.StepCount, restored.LearningRate, restored.Momentum, restored.WeightDecay, restored.TrustCoefficient, restored.Nesterov, restored.DecayBiasAndNorm, restored.Clipping),
            Is.EqualTo((17L, 0.3f, 0.8f, 1e-6f, 0.002f, true, true, (GradientClipping?)null)));
        using var sgd = new Sgd(arena, learningRate: 0.1f);
        Assert.That(() => sgd.SetHyperparameters(saved), Throws.ArgumentException.With.Message.Contains("lars"));
    }

    [Test]
    public void OptimizerRefusesAnArenaWithTooFewStateSlots()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Assert.That(() => new AdamW(arena, 0.1f), Throws.ArgumentException.With.Message.Contains("optimizerStateSlots: 2"));
    }

    [Test]
    public void PlanChunksCoverEveryTrainableViewExactlyOnce()
    {
        using var arena = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        using var plan = new OptimizerPlan(arena, chunkLength: SmallChunks);
        var covered = new int[arena.TrainableLength];
        for (var c = 0; c < plan.ChunkCount; c++)
        {
            var (offset, length, segment) = ((int)plan.ChunkOffset(c), plan.Chunks[(4 * c) + 1], plan.Chunks[(4 * c) + 2]);
            Assert.That(length, Is.InRange(1, SmallChunks));
            Assert.That(offset % ArenaLayout.AlignmentElements, Is.Zero, "chunks start on a 32-float boundary");
            var view = plan.Segments[segment];
            Assert.That(offset >= view.Offset && offset + length <= view.Offset + view.Length, Is.True, $"chunk {c} leaves {view.Name}");
            for (var i = offset; i < offset + length; i++)
            {
                covered[i]++;
            }
        }
        foreach (var view in arena.Views.Where(v => v.IsTrainable))
        {
            Assert.That(covered.Skip((int)view.Offset).Take((int)view.Length), Is.All.EqualTo(1), view.Name);
        }
        Assert.That(covered.Sum(), Is.EqualTo(arena.Views.Where(v => v.IsTrainable).Sum(v => v.Length)), "padding is never covered");
    }

    [Test]
    public void ChunkOffsetsReachBeyondTwoToTheThirtyOneElements()
    {
        // Arenas beyond 2^31 floats (8 GiB) are claimed; the tables hold offsets in 32-element units.
        const int chunkLength = 1 << 24;
        var views = new[]
        {
            new ParameterView("small.weight", new TensorShape(64), 0, ParameterKind.Weight, 0),
            new ParameterView("large.weight", new TensorShape(1 << 20, 1 << 10), 3L << 30, ParameterKind.Weight, 1),
            new ParameterView("last.bias", new TensorShape(40), (1L << 37) - 64, ParameterKind.Bias, 2),
        };
        var (chunks, segments) = OptimizerPlan.BuildTables(views, chunkLength);
        long Offset(int chunk) => (long)(uint)chunks[chunk * OptimizerPlan.EntryInts] * OptimizerPlan.OffsetUnit;
        Assert.That(segments[(1 * OptimizerPlan.EntryInts) + 1], Is.EqualTo(64), "2^30 elements in chunks of 2^24");
        for (var c = 1; c <= 64; c++)
        {
            Assert.That(Offset(c), Is.EqualTo((3L << 30) + ((long)(c - 1) * chunkLength)), $"chunk {c}");
        }
        Assert.That(Offset(65), Is.EqualTo((1L << 37) - 64), "the last bias, near the 2^37 limit");

        var beyond = new[] { new ParameterView("far.weight", new TensorShape(32), 1L << 37, ParameterKind.Weight, 0) };
        Assert.That(() => OptimizerPlan.BuildTables(beyond, chunkLength), Throws.TypeOf<OverflowException>());
    }

    [Test]
    public void ResNet50FixtureHasTorchvisionsParameters()
    {
        var (views, trainableLength, _) = ResNet50Layout().Place();
        var trainable = views.Where(v => v.IsTrainable).ToArray();
        Assert.That(trainable, Has.Length.EqualTo(161));
        Assert.That(trainable.Sum(v => v.Length), Is.EqualTo(25_557_032));
        Assert.That(trainableLength, Is.GreaterThanOrEqualTo(25_557_032).And.LessThan(25_557_032 + (161 * ArenaLayout.AlignmentElements)));
    }
}
