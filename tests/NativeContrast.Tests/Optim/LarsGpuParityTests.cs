namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static NativeContrast.Tests.Optim.OptimFixtures;

/// <summary>
/// Both LARS forms of native/optim.cu against their CPU twins over a warm-up + cosine schedule, with and without
/// gradient clipping and clip_lr, on awkward views and on a ResNet-50 arena; and the skip of a zero-gradient view.
/// Norms are summed in different orders on the two backends, so results agree within <see cref="NormTolerance"/>.
/// </summary>
public class LarsGpuParityTests : GpuTestBase
{
    private const double NormTolerance = 1e-6;

    private static readonly LearningRateSchedule WarmupCosine = new(0.4f, totalSteps: 5, warmupSteps: 2, warmupStartLearningRate: 0f);

    public enum Layout
    {
        Small,
        ResNet50,
    }

    private (ParameterArena Cpu, ParameterArena Gpu) Pair(Layout layout, int seed)
    {
        var cpu = new ParameterArena(Cpu, layout == Layout.Small ? SmallLayout() : ResNet50Layout(), 1);
        var gpu = new ParameterArena(Gpu, layout == Layout.Small ? SmallLayout() : ResNet50Layout(), 1);
        Randomise(cpu, seed, valueScale: 0.1f);
        Gpu.CopyFromHost(cpu.Values.Span, gpu.Values);
        Gpu.CopyFromHost(cpu.Gradients.Span, gpu.Gradients);
        return (cpu, gpu);
    }

    private static Lars Create(ParameterArena arena, LarsVariant variant, bool clipGradients)
    {
        var trainable = Segments(arena).Sum(s => (double)s.Length);
        return new Lars(arena, 0f, momentum: 0.9f, weightDecay: 1e-2f, trustCoefficient: 0.1f, nesterov: clipGradients, variant: variant)
        {
            Schedule = WarmupCosine,
            ClipLearningRate = variant == LarsVariant.SoloLearn && clipGradients,
            // Half the expected norm of U(-1, 1) gradients: it clips, and the update stays large next to the weights' rounding.
            Clipping = clipGradients ? new GradientClipping((float)(0.5 * Math.Sqrt(trainable / 3))) : null,
        };
    }

    [Test]
    public void StepsMatchTheCpuTwin([Values] LarsVariant variant, [Values] Layout layout, [Values] bool clipGradients)
    {
        var (cpu, gpu) = Pair(layout, seed: 31);
        using (cpu)
        using (gpu)
        {
            using var cpuLars = Create(cpu, variant, clipGradients);
            using var gpuLars = Create(gpu, variant, clipGradients);
            var before = Read(cpu, cpu.TrainableValues);
            for (var step = 0; step < WarmupCosine.TotalSteps; step++)
            {
                RandomGradients(cpu, seed: 900 + step);
                Gpu.CopyFromHost(cpu.Gradients.Span, gpu.Gradients);
                cpuLars.Step();
                gpuLars.Step();
                Numerics.AssertClose(Read(gpu, gpuLars.Plan.TrustRatios), Read(cpu, cpuLars.Plan.TrustRatios), NormTolerance, $"trust ratios of step {step}");
                AssertBitwiseEqual(Read(gpu, gpuLars.Plan.AppliedWeightDecay), Read(cpu, cpuLars.Plan.AppliedWeightDecay), $"applied decay of step {step}");
            }
            AssertUpdateClose(Segments(cpu), before, Read(gpu, gpu.TrainableValues), ToDouble(Read(cpu, cpu.TrainableValues)), NormTolerance, "weights");
            Numerics.AssertClose(Read(gpu, gpu.OptimizerState), Read(cpu, cpu.OptimizerState), NormTolerance, "velocity / momentum buffer");
        }
    }

    [Test]
    public void AZeroGradientViewIsSkippedOnTheDeviceAsOnTheCpu([Values] LarsVariant variant)
    {
        var (cpu, gpu) = Pair(Layout.Small, seed: 32);
        using (cpu)
        using (gpu)
        {
            Cpu.Fill(cpu.Gradient(cpu["conv.weight"]), 0f);
            Gpu.Fill(gpu.Gradient(gpu["conv.weight"]), 0f);
            using var cpuLars = new Lars(cpu, 0.5f, weightDecay: 0.01f, trustCoefficient: 0.002f, variant: variant);
            using var gpuLars = new Lars(gpu, 0.5f, weightDecay: 0.01f, trustCoefficient: 0.002f, variant: variant);
            cpuLars.Step();
            gpuLars.Step();
            AssertBitwiseEqual(Read(gpu, gpuLars.Plan.AppliedWeightDecay), Read(cpu, cpuLars.Plan.AppliedWeightDecay), "applied decay");
            Numerics.AssertClose(Read(gpu, gpuLars.Plan.TrustRatios), Read(cpu, cpuLars.Plan.TrustRatios), NormTolerance, "trust ratios");
            var view = cpu["conv.weight"];
            Numerics.AssertClose(Read(gpu, gpu.Value(gpu["conv.weight"])), ToDouble(Read(cpu, cpu.Value(view))), NormTolerance, "the zero-gradient view");
        }
    }
}
