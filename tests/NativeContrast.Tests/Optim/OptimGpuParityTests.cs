namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static NativeContrast.Tests.Optim.OptimFixtures;

/// <summary>
/// native/optim.cu against the CPU twins: EMA bit-exact (fp32), element-wise steps bit-exact where no reduction is
/// involved, and within 1e-6 relative where norms are (LARS trust ratios, clipping), on awkward views and on a
/// ResNet-50-sized arena.
/// </summary>
public class OptimGpuParityTests : GpuTestBase
{
    /// <summary>Relative L2 error allowed where device and host sum norms in different orders.</summary>
    private const double NormTolerance = 1e-6;

    public enum Kind
    {
        Sgd,
        Lars,
        AdamW,
    }

    public enum Layout
    {
        Small,
        ResNet50,
    }

    private static ArenaLayout Make(Layout layout) => layout == Layout.Small ? SmallLayout() : ResNet50Layout();

    /// <summary>The same random arena on the CPU and the GPU (padding zero on both).</summary>
    private (ParameterArena Cpu, ParameterArena Gpu) Pair(Layout layout, int slots, int seed, float valueScale = 1f)
    {
        var cpu = new ParameterArena(Cpu, Make(layout), slots);
        var gpu = new ParameterArena(Gpu, Make(layout), slots);
        Randomise(cpu, seed, valueScale);
        Gpu.CopyFromHost(cpu.Values.Span, gpu.Values);
        Gpu.CopyFromHost(cpu.Gradients.Span, gpu.Gradients);
        return (cpu, gpu);
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(1000)]
    [TestCase((1 << 20) + 3)]
    public void EmaIsBitExact(int n)
    {
        var teacher = Numerics.RandomArray(n, 1);
        var student = Numerics.RandomArray(n, 2);
        using var t = Numerics.RandomTensor(Gpu, new TensorShape(n), 1);
        using var s = Numerics.RandomTensor(Gpu, new TensorShape(n), 2);
        Gpu.EmaUpdate(t, s, 0.996f);
        AssertBitwiseEqual(Numerics.ToArray(Gpu, t), EmaTests.EmaReference(teacher, student, 0.996f), $"EMA of {n}");
    }

    [Test]
    public void EmaIsBitExactOnUnalignedViews()
    {
        // Offsets 1 and 2 floats: no float4 path, every element through the scalar loop.
        const int n = 4099;
        using var t = Numerics.RandomTensor(Gpu, new TensorShape(n + 1), 3);
        using var s = Numerics.RandomTensor(Gpu, new TensorShape(n + 2), 4);
        var (tv, sv) = (t.View(1, new TensorShape(n)), s.View(2, new TensorShape(n)));
        var expected = EmaTests.EmaReference(Numerics.ToArray(Gpu, tv), Numerics.ToArray(Gpu, sv), 0.9f);
        Gpu.EmaUpdate(tv, sv, 0.9f);
        AssertBitwiseEqual(Numerics.ToArray(Gpu, tv), expected, "unaligned EMA");
    }

    [Test]
    public void EmaOverAResNet50ArenaIsBitExact()
    {
        var (cpuStudent, gpuStudent) = Pair(Layout.ResNet50, 0, seed: 5);
        var (cpuTeacher, gpuTeacher) = Pair(Layout.ResNet50, 0, seed: 6);
        using (cpuStudent)
        using (gpuStudent)
        using (cpuTeacher)
        using (gpuTeacher)
        {
            Assert.That(cpuStudent.TrainableLength, Is.GreaterThanOrEqualTo(25_557_032));
            new Ema(cpuTeacher, cpuStudent, 0.996f, includeBuffers: true).Update(0);
            new Ema(gpuTeacher, gpuStudent, 0.996f, includeBuffers: true).Update(0);
            AssertBitwiseEqual(Read(gpuTeacher, gpuTeacher.Values), Read(cpuTeacher, cpuTeacher.Values), "ResNet-50 EMA");
        }
    }

    private static Optimizer Create(Kind kind, ParameterArena arena, bool nesterov) => kind switch
    {
        Kind.Sgd => new Sgd(arena, 0.1f, momentum: 0.9f, weightDecay: 1e-2f, nesterov: nesterov),
        // η = 1 keeps trust ratios near ‖w‖/‖g‖ = 0.1, so updates stay large next to the weights' rounding.
        Kind.Lars => new Lars(arena, 0.4f, momentum: 0.9f, weightDecay: 1e-2f, trustCoefficient: 1f, nesterov: nesterov),
        _ => new AdamW(arena, 0.01f, weightDecay: 0.05f),
    };

    /// <summary>
    /// Three steps (fresh gradients each) on both backends; with clipping and a fused teacher when asked. Without norms
    /// (SGD, AdamW unclipped) the results must be bit-identical; otherwise within <see cref="NormTolerance"/>.
    /// </summary>
    [Test]
    public void StepsMatchTheCpuTwin(
        [Values] Kind kind,
        [Values] Layout layout,
        [Values(false, true)] bool clipAndTeacher)
    {
        var slots = kind == Kind.AdamW ? 2 : 1;
        var (cpu, gpu) = Pair(layout, slots, seed: 7, valueScale: 0.1f);
        var (cpuTeacher, gpuTeacher) = Pair(layout, 0, seed: 8, valueScale: 0.1f);
        using (cpu)
        using (gpu)
        using (cpuTeacher)
        using (gpuTeacher)
        {
            using var cpuOptimizer = Create(kind, cpu, nesterov: clipAndTeacher);
            using var gpuOptimizer = Create(kind, gpu, nesterov: clipAndTeacher);
            var (cpuEma, gpuEma) = (new Ema(cpuTeacher, cpu, 0.99f, cosineSteps: 5), new Ema(gpuTeacher, gpu, 0.99f, cosineSteps: 5));
            if (clipAndTeacher)
            {
                // Half the expected norm of U(-1, 1) gradients: it clips, yet keeps the update large next to the weights'
                // rounding, so the comparison measures the kernels.
                var trainable = Segments(cpu).Sum(s => (double)s.Length);
                cpuOptimizer.Clipping = gpuOptimizer.Clipping = new GradientClipping((float)(0.5 * Math.Sqrt(trainable / 3)));
            }
            var before = Read(cpu, cpu.TrainableValues);
            for (var step = 0; step < 3; step++)
            {
                RandomGradients(cpu, seed: 600 + step);
                Gpu.CopyFromHost(cpu.Gradients.Span, gpu.Gradients);
                cpuOptimizer.Step(clipAndTeacher ? cpuEma : null);
                gpuOptimizer.Step(clipAndTeacher ? gpuEma : null);
            }
            var (cpuValues, gpuValues) = (Read(cpu, cpu.TrainableValues), Read(gpu, gpu.TrainableValues));
            if (kind != Kind.Lars && !clipAndTeacher)
            {
                AssertBitwiseEqual(gpuValues, cpuValues, "weights");
                AssertBitwiseEqual(Read(gpu, gpu.OptimizerState), Read(cpu, cpu.OptimizerState), "optimizer state");
                return;
            }
            var segments = Segments(cpu);
            AssertUpdateClose(segments, before, gpuValues, ToDouble(cpuValues), NormTolerance, "weights");
            Numerics.AssertClose(Read(gpu, gpu.OptimizerState), Read(cpu, cpu.OptimizerState), NormTolerance, "optimizer state");
            if (clipAndTeacher)
            {
                Numerics.AssertClose(Read(gpuTeacher, gpuTeacher.Values), Read(cpuTeacher, cpuTeacher.Values), NormTolerance, "teacher");
                Numerics.AssertClose(Read(gpu, gpuOptimizer.GradientNorm), Read(cpu, cpuOptimizer.GradientNorm), NormTolerance, "gradient norm");
            }
            if (kind == Kind.Lars)
            {
                Numerics.AssertClose(Read(gpu, gpuOptimizer.Plan.TrustRatios), Read(cpu, cpuOptimizer.Plan.TrustRatios), NormTolerance, "trust ratios");
            }
        }
    }

    /// <summary>
    /// One step with the teacher's EMA fused in. Without clipping SGD and AdamW follow the same roundings on both
    /// backends (bit-exact); LARS reduces norms in different orders, so its student and teacher updates are compared
    /// within <see cref="NormTolerance"/>, with its trust ratios.
    /// </summary>
    [Test]
    public void FusedTeacherUpdateMatchesTheCpuTwin([Values] Kind kind)
    {
        var slots = kind == Kind.AdamW ? 2 : 1;
        var (cpu, gpu) = Pair(Layout.Small, slots, seed: 9);
        var (cpuTeacher, gpuTeacher) = Pair(Layout.Small, 0, seed: 10);
        using (cpu)
        using (gpu)
        using (cpuTeacher)
        using (gpuTeacher)
        {
            using var cpuOptimizer = Create(kind, cpu, nesterov: true);
            using var gpuOptimizer = Create(kind, gpu, nesterov: true);
            var (studentBefore, teacherBefore) = (Read(cpu, cpu.TrainableValues), Read(cpuTeacher, cpuTeacher.TrainableValues));
            cpuOptimizer.Step(new Ema(cpuTeacher, cpu, 0.99f, includeBuffers: true));
            gpuOptimizer.Step(new Ema(gpuTeacher, gpu, 0.99f, includeBuffers: true));
            if (kind != Kind.Lars)
            {
                AssertBitwiseEqual(Read(gpuTeacher, gpuTeacher.Values), Read(cpuTeacher, cpuTeacher.Values), "teacher");
                AssertBitwiseEqual(Read(gpu, gpu.Values), Read(cpu, cpu.Values), "student");
                return;
            }
            var segments = Segments(cpu);
            AssertUpdateClose(segments, studentBefore, Read(gpu, gpu.TrainableValues), ToDouble(Read(cpu, cpu.TrainableValues)), NormTolerance, "student");
            AssertUpdateClose(segments, teacherBefore, Read(gpuTeacher, gpuTeacher.TrainableValues), ToDouble(Read(cpuTeacher, cpuTeacher.TrainableValues)), NormTolerance, "teacher");
            Numerics.AssertClose(Read(gpu, gpuOptimizer.Plan.TrustRatios), Read(cpu, cpuOptimizer.Plan.TrustRatios), NormTolerance, "trust ratios");
            var buffers = (int)cpu.TrainableLength;
            AssertBitwiseEqual(Read(gpuTeacher, gpuTeacher.Values)[buffers..], Read(cpuTeacher, cpuTeacher.Values)[buffers..], "teacher buffers (plain EMA)");
        }
    }

    [Test]
    public void PerViewLaunchesEqualTheArenaLaunch([Values] Kind kind)
    {
        float[] Run(bool perView)
        {
            var slots = kind == Kind.AdamW ? 2 : 1;
            var (cpu, gpu) = Pair(Layout.Small, slots, seed: 11);
            using (cpu)
            using (gpu)
            {
                using var plan = new OptimizerPlan(gpu, chunkLength: 64);
                var options = new StepOptions(MaxGradientNorm: 1f);
                switch (kind)
                {
                    case Kind.Sgd:
                        Gpu.SgdStep(plan, gpu.TrainableValues, gpu.Gradients, gpu.StateSlot(0), new SgdStepArgs(0.1f, 0.9f, 0.01f, true), options, perView);
                        break;
                    case Kind.Lars:
                        Gpu.LarsStep(plan, gpu.TrainableValues, gpu.Gradients, gpu.StateSlot(0), new LarsStepArgs(0.1f, 0.9f, 0.01f, 0.001f, false), options, perView);
                        break;
                    default:
                        Gpu.AdamWStep(plan, gpu.TrainableValues, gpu.Gradients, gpu.StateSlot(0), gpu.StateSlot(1), new AdamWStepArgs(0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, 1), options, perView);
                        break;
                }
                return Read(gpu, gpu.Values);
            }
        }
        AssertBitwiseEqual(Run(perView: true), Run(perView: false), "per-view launches");
    }

    [Test]
    public void GradientNormMatchesTheCpuTwinOnAResNet50Arena()
    {
        var (cpu, gpu) = Pair(Layout.ResNet50, 1, seed: 12);
        using (cpu)
        using (gpu)
        {
            using var cpuPlan = new OptimizerPlan(cpu);
            using var gpuPlan = new OptimizerPlan(gpu);
            Cpu.GradientNorm(cpuPlan, cpu.Gradients, 1f);
            Gpu.GradientNorm(gpuPlan, gpu.Gradients, 1f);
            var g = ToDouble(Read(cpu, cpu.Gradients));
            var norm = Math.Sqrt(g.Sum(x => x * x));
            Numerics.AssertClose(Read(gpu, gpuPlan.GradientNorm), [norm], NormTolerance, "gradient norm vs float64");
            Numerics.AssertClose(Read(gpu, gpuPlan.ClipScale), Read(cpu, cpuPlan.ClipScale), NormTolerance, "clip scale");
        }
    }
}
