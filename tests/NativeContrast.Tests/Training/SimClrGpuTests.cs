namespace NativeContrast.Tests.Training;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Losses;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>One whole SimCLR step (backbone + projector forward, fused NT-Xent, backward, LARS) on the GPU against the CPU oracle.</summary>
public class SimClrGpuTests : GpuTestBase
{
    private sealed class Side(IBackend backend) : IDisposable
    {
        private readonly ArenaLayout _layout = new();

        public ResNet Backbone { get; private set; } = null!;

        public SimClr Method { get; private set; } = null!;

        public ParameterArena Arena { get; private set; } = null!;

        public Lars Lars { get; private set; } = null!;

        public Side Build()
        {
            Backbone = new ResNet(_layout, ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar, WidthMultiplier = 0.25 }, "backbone");
            Method = new SimClr(SimClrOptions.V1 with { Precision = MatmulPrecision.Fp32 });
            Method.Build(_layout, Backbone);
            Arena = new ParameterArena(backend, _layout, optimizerStateSlots: 1);
            Backbone.Bind(Arena);
            Method.Bind(Arena);
            Backbone.Initialize(5);
            Method.Initialize(5);
            Method.Prepare(new MethodContext(backend, Backbone, AugmentationPresets.SimClrCifar(20), 13, 3, 5));
            Lars = new Lars(Arena, learningRate: 0.3f);
            return this;
        }

        public void Dispose()
        {
            Lars.Dispose();
            Method.Dispose();
            Backbone.Dispose();
            Arena.Dispose();
        }
    }

    [Test]
    public void OneSimClrStepMatchesTheCpu()
    {
        Gpu.GemmPrecision = MatmulPrecision.Fp32;
        using var cpu = new Side(Cpu).Build();
        using var gpu = new Side(Gpu).Build();
        // 13 images (26 views) of 20 px: sizes that are not multiples of any tile.
        var images = Numerics.RandomArray(26 * 20 * 20 * 3, seed: 9);
        using var cpuViews = Cpu.AllocateImages(new TensorShape(26, 20, 20, 3));
        using var gpuViews = Gpu.AllocateImages(new TensorShape(26, 20, 20, 3));
        Cpu.CopyFromHost(images, cpuViews);
        Gpu.CopyFromHost(images, gpuViews);
        var cpuStats = ContrastiveStats.Read(Cpu, cpu.Method.TrainingStep(new ViewGroups([cpuViews], [2], 13)));
        var gpuStats = ContrastiveStats.Read(Gpu, gpu.Method.TrainingStep(new ViewGroups([gpuViews], [2], 13)));
        Assert.That(gpuStats.Loss, Is.EqualTo(cpuStats.Loss).Within(1e-4).Percent);
        // As GpuParityTests' whole-network step: a ReLU decision near zero may go the other way on the GPU and move a
        // column of a weight gradient, so the arena's gradients are held to 5e-3 (a wrong kernel is off by far more).
        Numerics.AssertClose(Numerics.ToArray(Gpu, gpu.Arena.Gradients), Numerics.ToArray(Cpu, cpu.Arena.Gradients), 5e-3, "gradients of the whole arena");
        cpu.Lars.Step();
        gpu.Lars.Step();
        Numerics.AssertClose(Numerics.ToArray(Gpu, gpu.Arena.Values), Numerics.ToArray(Cpu, cpu.Arena.Values), 1e-5, "values after the LARS step");
    }
}
