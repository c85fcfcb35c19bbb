namespace NativeContrast.Tests.Checkpoints;

using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using static CheckpointFixtures;

/// <summary>
/// Exact resume end to end on the CPU: a small ResNet + classifier trained with a real optimiser and a warm-up/cosine
/// schedule on batches that take Philox noise. Six uninterrupted steps must equal three steps, a
/// <see cref="TrainingCheckpoint"/>, a fresh process-like rebuild (new backend, model, arena, optimiser, initialised
/// with another seed), a load, and three more steps: every value, buffer (BN running statistics and counters),
/// gradient and optimiser-state element bit for bit.
/// </summary>
public class ResumeTests : CheckpointTestBase
{
    private const int Steps = 6;
    private const int Interrupt = 3;
    private const int Batch = 8;
    private const int Size = 16;
    private const int Classes = 5;
    private const ulong DataSeed = 0x5EED;

    [TestCase("sgd")]
    [TestCase("adamw")]
    [TestCase("lars")]
    public void ResumedRunEqualsUninterruptedRunBitExactly(string optimizer)
    {
        using var straight = new Run(optimizer, initSeed: 7);
        straight.Train(Steps);

        var path = PathTo("resume.safetensors");
        using (var first = new Run(optimizer, initSeed: 7))
        {
            first.Train(Interrupt);
            first.Save(path);
        }

        using var resumed = new Run(optimizer, initSeed: 99);
        resumed.Load(path);
        Assert.That(resumed.Optimizer.StepCount, Is.EqualTo(Interrupt), "the step count comes back from the checkpoint");
        resumed.Train(Steps - Interrupt);

        Assert.Multiple(() =>
        {
            Assert.That(resumed.Optimizer.StepCount, Is.EqualTo(straight.Optimizer.StepCount));
            Assert.That(resumed.PhiloxOffset, Is.EqualTo(straight.PhiloxOffset));
            Assert.That(resumed.Losses, Is.EqualTo(straight.Losses.Skip(Interrupt)), "the resumed run sees the same losses");
            foreach (var view in straight.Arena.Views)
            {
                Assert.That(Bits(resumed.Backend, resumed.Arena.Value(view)), Is.EqualTo(Bits(straight.Backend, straight.Arena.Value(view))), view.Name);
            }
            Assert.That(Bits(resumed.Backend, resumed.Arena.Values), Is.EqualTo(Bits(straight.Backend, straight.Arena.Values)), "the whole value buffer");
            Assert.That(Bits(resumed.Backend, resumed.Arena.OptimizerState), Is.EqualTo(Bits(straight.Backend, straight.Arena.OptimizerState)), "the optimiser state");
            Assert.That(Bits(resumed.Backend, resumed.Arena.Gradients), Is.EqualTo(Bits(straight.Backend, straight.Arena.Gradients)), "the last step's gradients");
        });
        var tracked = straight.Arena.Views.Where(v => v.Name.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
        Assert.That(tracked, Is.Not.Empty);
        Assert.That(tracked.Select(v => Support.Numerics.ToArray(straight.Backend, straight.Arena.Value(v))[0]), Is.All.EqualTo((float)Steps), "every BatchNorm counted every training forward");
    }

    [Test]
    public void FullResNet18ArenaRoundTripsBitExactlyWithOneInt64CounterPerBatchNorm()
    {
        var layout = new ArenaLayout();
        using var encoder = new ResNet(layout, ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar });
        using var fc = LinearHead.Classifier(layout, encoder.FeatureDim, 10);
        using var saved = new ParameterArena(Cpu, layout, optimizerStateSlots: 1);
        FillRandom(Cpu, saved.Values, seed: 3);
        FillRandom(Cpu, saved.OptimizerState, seed: 4);
        var counters = saved.Views.Where(v => ModelCheckpoint.IsBatchNormCounter(saved, v)).ToList();
        foreach (var (view, i) in counters.Select((v, i) => (v, i)))
        {
            Cpu.CopyFromHost(new[] { (float)(1000 + i) }, saved.Value(view));
        }
        var state = new TrainingState { Step = 1000, Seed = 42, PhiloxOffset = 77 };
        var path = PathTo("resnet18.safetensors");
        TrainingCheckpoint.Save(path, saved, state);

        var file = new IndependentSafetensors(path);
        var batchNorms = saved.Views.Count(v => v.Name.EndsWith(".running_mean", StringComparison.Ordinal));
        Assert.That(batchNorms, Is.EqualTo(20), "torchvision's ResNet-18 has 20 BatchNorms");
        var trackedEntries = file.Entries.Where(e => e.Name.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
        Assert.That(trackedEntries, Has.Count.EqualTo(batchNorms), "one num_batches_tracked per BatchNorm");
        Assert.That(trackedEntries.Select(e => (e.DType, e.Shape.Length)), Is.All.EqualTo(("I64", 0)), "PyTorch's int64 scalar");
        Assert.That(counters.Select(v => file.Int64(v.Name)[0]), Is.EqualTo(Enumerable.Range(1000, counters.Count).Select(n => (long)n)), "the arena's counters, not the step");

        using var resumed = new ParameterArena(Cpu, layout, optimizerStateSlots: 1);
        FillRandom(Cpu, resumed.Values, seed: 5);
        FillRandom(Cpu, resumed.OptimizerState, seed: 6);
        Assert.That(TrainingCheckpoint.Load(path, resumed), Is.EqualTo(state).Using<TrainingState>((a, b) => a.Step == b.Step && a.Seed == b.Seed && a.PhiloxOffset == b.PhiloxOffset));
        // View by view: the random fill also wrote the alignment padding, which a load zeroes.
        foreach (var view in saved.Views)
        {
            Assert.That(Bits(Cpu, resumed.Value(view)), Is.EqualTo(Bits(Cpu, saved.Value(view))), view.Name);
            if (view.IsTrainable)
            {
                Assert.That(Bits(Cpu, resumed.State(0, view)), Is.EqualTo(Bits(Cpu, saved.State(0, view))), $"{view.Name} state 0");
            }
        }

        // The weights-only file loads strictly too, counters included.
        var weights = PathTo("resnet18.weights.safetensors");
        ModelCheckpoint.Save(weights, saved);
        using var reloaded = new ParameterArena(Cpu, layout, optimizerStateSlots: 0);
        var report = ModelCheckpoint.Load(weights, reloaded);
        Assert.That((report.Missing, report.Unexpected, report.Ignored), Is.EqualTo((Array.Empty<string>(), Array.Empty<string>(), Array.Empty<string>())));
        Assert.That(saved.Views.Select(v => Bits(Cpu, reloaded.Value(v))), Is.EqualTo(saved.Views.Select(v => Bits(Cpu, saved.Value(v)))), "weights file");
    }

    /// <summary>One training process: its own backend, model, arena and optimiser, fed the batches of a fixed recipe.</summary>
    private sealed class Run : IDisposable
    {
        private static readonly LearningRateSchedule Recipe = new(baseLearningRate: 0.1f, totalSteps: Steps, warmupSteps: 2, warmupStartLearningRate: 0.01f);

        private readonly ResNet _encoder;
        private readonly LinearHead _classifier;
        private readonly Sequential _model;
        private readonly SoftmaxCrossEntropy _loss;
        private readonly Tensor _images;
        private readonly Tensor _noise;
        private readonly Tensor _labels;

        public Run(string optimizer, ulong initSeed)
        {
            Backend = new CpuBackend();
            var layout = new ArenaLayout();
            _encoder = new ResNet(layout, new ResNetOptions { Bottleneck = false, Layers = [1, 1, 1, 1], Stem = ResNetStem.Cifar, WidthMultiplier = 0.25 });
            _classifier = LinearHead.Classifier(layout, _encoder.FeatureDim, Classes);
            _model = new Sequential(_encoder, _classifier);
            Arena = new ParameterArena(Backend, layout, optimizerStateSlots: optimizer == "adamw" ? 2 : 1);
            _model.Bind(Arena);
            _model.Initialize(initSeed);
            Optimizer = optimizer switch
            {
                "sgd" => new Sgd(Arena, learningRate: 0f, momentum: 0.9f, weightDecay: 5e-4f),
                "adamw" => new AdamW(Arena, learningRate: 0f, weightDecay: 0.05f),
                "lars" => new Lars(Arena, learningRate: 0f, momentum: 0.9f, weightDecay: 1e-6f),
                _ => throw new ArgumentException(optimizer, nameof(optimizer)),
            };
            Optimizer.Schedule = Recipe;
            _loss = new SoftmaxCrossEntropy(Backend, Batch, Classes);
            _images = Backend.Allocate(new TensorShape(Batch, Size, Size, 3), "images");
            _noise = Backend.Allocate(new TensorShape(Batch, Size, Size, 3), "noise");
            _labels = Backend.Allocate(new TensorShape(Batch), "labels");
        }

        public CpuBackend Backend { get; }

        public ParameterArena Arena { get; }

        public Optimizer Optimizer { get; }

        /// <summary>The Philox offset of the next step's noise: the random state a resume must restore.</summary>
        public ulong PhiloxOffset { get; private set; }

        public List<float> Losses { get; } = [];

        /// <summary>Steps StepCount .. StepCount + count − 1 of the recipe; batch s depends only on s and the Philox offset.</summary>
        public void Train(int count)
        {
            var plan = _model.PlanFor(_images.Shape);
            for (var i = 0; i < count; i++)
            {
                var (images, labels) = MakeBatch(Optimizer.StepCount);
                Backend.CopyFromHost(images, _images);
                Backend.CopyFromHost(labels, _labels);
                Backend.RandomNormal(_noise, DataSeed, PhiloxOffset++, std: 0.3f);
                Backend.Add(_images, _noise, _images);
                Optimizer.ZeroGradients();
                var logits = plan.Forward(_images, training: true);
                Losses.Add(Support.Numerics.ToArray(Backend, _loss.Forward(logits, _labels))[0]);
                plan.Backward(_loss.Backward(logits, _labels));
                Optimizer.Step();
            }
        }

        public void Save(string path)
        {
            var state = new TrainingState
            {
                Step = Optimizer.StepCount,
                Seed = DataSeed,
                PhiloxOffset = PhiloxOffset,
                Sections = new Dictionary<string, string>
                {
                    ["optimizer"] = JsonSerializer.Serialize(Optimizer.GetHyperparameters()),
                    ["schedule"] = JsonSerializer.Serialize(new[] { Recipe.BaseLearningRate, Recipe.TotalSteps, Recipe.WarmupSteps, Recipe.FinalLearningRate, Recipe.WarmupStartLearningRate }),
                },
            };
            TrainingCheckpoint.Save(path, Arena, state);
        }

        public void Load(string path)
        {
            var state = TrainingCheckpoint.Load(path, Arena);
            Assert.That(state.Seed, Is.EqualTo(DataSeed));
            Optimizer.SetHyperparameters(JsonSerializer.Deserialize<Dictionary<string, string>>(state.Sections["optimizer"])!);
            var schedule = JsonSerializer.Deserialize<double[]>(state.Sections["schedule"])!;
            Optimizer.Schedule = new LearningRateSchedule((float)schedule[0], (long)schedule[1], (long)schedule[2], (float)schedule[3], (float)schedule[4]);
            Assert.That(Optimizer.Schedule, Is.EqualTo(Recipe), "the schedule rebuilt from the checkpoint is the recipe's");
            Assert.That(Optimizer.StepCount, Is.EqualTo(state.Step));
            PhiloxOffset = state.PhiloxOffset;
        }

        /// <summary>Class-dependent stripes, different for every step, from a generator seeded by the step alone.</summary>
        private static (float[] Images, float[] Labels) MakeBatch(long step)
        {
            var rng = new Random(unchecked((int)(1000 + step)));
            var images = new float[Batch * Size * Size * 3];
            var labels = new float[Batch];
            for (var n = 0; n < Batch; n++)
            {
                var label = rng.Next(Classes);
                labels[n] = label;
                var phase = rng.Next(Size);
                for (var p = 0; p < Size * Size * 3; p++)
                {
                    var (h, w) = (p / (Size * 3), p / 3 % Size);
                    images[(n * Size * Size * 3) + p] = MathF.Sin((((label + 1) * (h + w)) + phase) * 0.4f) + (0.1f * (p % 3));
                }
            }
            return (images, labels);
        }

        public void Dispose()
        {
            _images.Dispose();
            _noise.Dispose();
            _labels.Dispose();
            _loss.Dispose();
            _model.Dispose();
            Optimizer.Dispose();
            Arena.Dispose();
            Backend.Dispose();
        }
    }
}
