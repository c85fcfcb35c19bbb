namespace NativeContrast.Tests.Training;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Losses;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// Two whole steps of MoCo v2, SwAV, SimCLR v2's memory, the margin baseline and PiCO on the GPU against the CPU oracle: forward of every
/// crop, the fused losses, backward, SGD with the fused EMA, the methods' hooks (frozen then normalised
/// prototypes), the key queue. Awkward sizes: 13 images of 20 px (small crops of 8 px).
/// </summary>
public class MethodGpuTests : GpuTestBase
{
    private const int Batch = 13;

    private static Method Create(string name) => name switch
    {
        "mocov2" => new Moco(MocoOptions.V2 with { Precision = MatmulPrecision.Fp32, Momentum = 0.9f, Augmentations = "simclr-cifar" }),
        "mocov2-symmetric" => new Moco(MocoOptions.V2 with { Precision = MatmulPrecision.Fp32, Momentum = 0.9f, Symmetric = true, Augmentations = "simclr-cifar" }),
        "swav" => new Swav(new SwavOptions { Prototypes = 37, SmallCrops = 2, QueueLength = 26, FreezePrototypesEpochs = 0.5, Augmentations = "swav-cifar" }),
        "simclr-v2-memory" => new SimClr(SimClrOptions.V2 with { Precision = MatmulPrecision.Fp32, Temperature = 0.2f, QueueLength = 45, Momentum = 0.9f, Augmentations = "simclr-cifar" }),
        "margin" => new MarginContrastive(new MarginOptions { Margin = 1.2f, Augmentations = "simclr-cifar" }),
        "pico" => new Pico(new PicoOptions { Classes = 10, PartialRate = 0.4, QueueLength = 31, Momentum = 0.9f, Augmentations = "simclr-cifar" }),
        _ => throw new ArgumentException(name),
    };

    private sealed class Side(IBackend backend, string name) : IDisposable
    {
        private readonly ArenaLayout _layout = new();
        private readonly List<Tensor> _views = [];

        // PiCO reads the training set's labels; one epoch a step, so step 0 is its warm-up and step 1 disambiguates.
        private readonly PackedImageDataset _data = BuiltinShapes.Create(40, 20, seed: 2);
        private readonly int[] _indices = [.. Enumerable.Range(0, Batch).Select(i => (i * 3) + 1)];

        public ResNet Backbone { get; private set; } = null!;

        public Method Method { get; private set; } = null!;

        public ParameterArena Arena { get; private set; } = null!;

        public Sgd Sgd { get; private set; } = null!;

        public AugmentationPreset Preset { get; private set; } = null!;

        public Side Build()
        {
            Backbone = new ResNet(_layout, ResNetOptions.ResNet10 with { Stem = ResNetStem.Cifar, WidthMultiplier = 0.25 }, "backbone");
            Method = Create(name);
            Method.Build(_layout, Backbone);
            Arena = new ParameterArena(backend, _layout, optimizerStateSlots: 1);
            Backbone.Bind(Arena);
            Method.Bind(Arena);
            Backbone.Initialize(5);
            Method.Initialize(5);
            Preset = Method.Augmentations(20);
            var stepsPerEpoch = name == "pico" ? 1 : 2;
            Method.Prepare(new MethodContext(backend, Backbone, Preset, Batch, 3, 5, stepsPerEpoch, TotalSteps: 8, DatasetImages: 40, Dataset: _data));
            Sgd = new Sgd(Arena, learningRate: 0.1f, momentum: 0.9f, weightDecay: 1e-4f);
            return this;
        }

        public ContrastiveStats Step(long step, int seed)
        {
            var groups = new List<Tensor>();
            var counts = new List<int>();
            foreach (var size in Preset.Views.Select(v => v.Size).Distinct())
            {
                var count = Preset.Views.Count(v => v.Size == size);
                var shape = new TensorShape(count * Batch, size, size, 3);
                var views = backend.AllocateImages(shape);
                backend.CopyFromHost(Numerics.RandomArray((int)shape.Length, seed: seed + size), views);
                _views.Add(views);
                groups.Add(views);
                counts.Add(count);
            }
            Sgd.ZeroGradients();
            var labels = _indices.Select(_data.GetLabel).ToArray();
            var stats = ContrastiveStats.Read(backend, Method.TrainingStep(new ViewGroups(groups, counts, Batch, step, _indices, labels)));
            Method.BeforeOptimizerStep(step);
            Sgd.Step(Method.Teacher);
            Method.AfterOptimizerStep(step);
            return stats;
        }

        public void Dispose()
        {
            foreach (var views in _views)
            {
                views.Dispose();
            }
            Sgd.Dispose();
            Method.Dispose();
            Backbone.Dispose();
            Arena.Dispose();
            _data.Dispose();
        }
    }

    [TestCase("mocov2")]
    [TestCase("mocov2-symmetric")]
    [TestCase("swav")]
    [TestCase("simclr-v2-memory")]
    [TestCase("margin")]
    [TestCase("pico")]
    public void TwoStepsMatchTheCpu(string name)
    {
        Gpu.GemmPrecision = MatmulPrecision.Fp32;
        using var cpu = new Side(Cpu, name).Build();
        using var gpu = new Side(Gpu, name).Build();
        for (var step = 0; step < 2; step++)
        {
            var cpuStats = cpu.Step(step, 9 + step);
            var gpuStats = gpu.Step(step, 9 + step);
            Assert.That(gpuStats.Loss, Is.EqualTo(cpuStats.Loss).Within(1e-3).Percent, $"loss of step {step}");
            Numerics.AssertClose(Numerics.ToArray(Gpu, gpu.Arena.Values), Numerics.ToArray(Cpu, cpu.Arena.Values), 1e-4, $"values after step {step}");
            gpu.Method.CopyHostTablesToStateTensors();
            cpu.Method.CopyHostTablesToStateTensors();
            foreach (var ((stateName, gpuState), (_, cpuState)) in gpu.Method.StateTensors.Zip(cpu.Method.StateTensors))
            {
                Numerics.AssertClose(Numerics.ToArray(Gpu, gpuState), Numerics.ToArray(Cpu, cpuState), 1e-4, $"{stateName} after step {step}");
            }
            Assert.That(gpu.Method.HostState, Is.EqualTo(cpu.Method.HostState));
        }
    }
}
