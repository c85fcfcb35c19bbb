namespace NativeContrast.Tests.Training;

using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Cli;
using NativeContrast.Data;
using NativeContrast.Losses;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using NativeContrast.Training;

public class PicoTests
{
    private const int Batch = 12;
    private const int Dim = 128;
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("pico");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    /// <summary>Backbone + PiCO on the CPU over the first images of a small built-in set, as the trainer assembles them.</summary>
    private sealed class Assembly : IDisposable
    {
        public Assembly(double partialRate, int stepsPerEpoch = 2)
        {
            Backend = new CpuBackend();
            Data = BuiltinShapes.Create(48, 16, seed: 1);
            var layout = new ArenaLayout();
            Backbone = new ResNet(layout, TinyRun.Backbone, "backbone");
            Pico = new Pico(new PicoOptions { Classes = Data.ClassNames.Count, PartialRate = partialRate, QueueLength = 30, Momentum = 0.9f, Augmentations = "simclr-cifar" });
            Pico.Build(layout, Backbone);
            Arena = new ParameterArena(Backend, layout, optimizerStateSlots: 1);
            Backbone.Bind(Arena);
            Pico.Bind(Arena);
            Backbone.Initialize(1);
            Pico.Initialize(1);
            Pico.Prepare(new MethodContext(Backend, Backbone, AugmentationPresets.SimClrCifar(16), Batch, 3, 1, stepsPerEpoch, 4L * stepsPerEpoch, Data.Count, Data));
            Views = Numerics.RandomTensor(Backend, new TensorShape(2 * Batch, 16, 16, 3), seed: 7);
            Views.Layout = ImageLayout.Nhwc;
            Indices = [.. Enumerable.Range(0, Batch).Select(i => (i * 4) + 1)];
            TrueLabels = [.. Indices.Select(Data.GetLabel)];
            Optimizer = new Sgd(Arena, learningRate: 0.05f, momentum: 0.9f);
        }

        public CpuBackend Backend { get; }

        public PackedImageDataset Data { get; }

        public ResNet Backbone { get; }

        public Pico Pico { get; }

        public ParameterArena Arena { get; }

        public Tensor Views { get; }

        public int[] Indices { get; }

        public int[] TrueLabels { get; }

        public Sgd Optimizer { get; }

        public ContrastiveStats Step(long step)
        {
            Optimizer.ZeroGradients();
            var stats = ContrastiveStats.Read(Backend, Pico.TrainingStep(new ViewGroups([Views], [2], Batch, step, Indices, TrueLabels)));
            Optimizer.Step(Pico.Teacher);
            return stats;
        }

        public void Dispose()
        {
            Optimizer.Dispose();
            Views.Dispose();
            Pico.Dispose();
            Backbone.Dispose();
            Arena.Dispose();
            Data.Dispose();
            Backend.Dispose();
        }
    }

    [Test]
    public void WithQZeroPicoIsSupervisedCrossEntropyPlusItsContrastiveTerm()
    {
        using var pico = new Assembly(partialRate: 0);
        for (long step = 0; step < 6; step++)
        {
            var stats = pico.Step(step);
            // Candidate sets of one label: the pseudo-labels are the true labels and the targets stay one-hot.
            Assert.That(pico.Pico.LastPseudoLabels.ToArray(), Is.EqualTo(pico.TrueLabels.Select(l => (float)l)), $"step {step}");
            var classes = pico.Data.ClassNames.Count;
            double crossEntropy = 0;
            for (var row = 0; row < Batch; row++)
            {
                var confidence = pico.Pico.Confidence.Slice(pico.Indices[row] * classes, classes).ToArray();
                Assert.That(confidence, Is.EqualTo(Enumerable.Range(0, classes).Select(c => c == pico.TrueLabels[row] ? 1f : 0f)), $"step {step} row {row}");
                var logits = pico.Pico.LastLogits.Slice(row * classes, classes).ToArray().Select(v => (double)v).ToArray();
                var max = logits.Max();
                crossEntropy += max + Math.Log(logits.Sum(v => Math.Exp(v - max))) - logits[pico.TrueLabels[row]];
            }
            var contrastive = ContrastiveStats.Read(pico.Backend, pico.Pico.Loss.Stats).Loss;
            Assert.That(stats.Loss, Is.EqualTo((crossEntropy / Batch) + (0.5 * contrastive)).Within(1e-4), $"step {step}: the loss is the supervised cross-entropy + λ · contrastive");
        }
    }

    [Test]
    public void PseudoLabelsAndConfidenceStayInsideTheCandidateSetsAndPrototypesStayNormalised()
    {
        using var pico = new Assembly(partialRate: 0.5);
        var sets = pico.Pico.PartialLabels;
        var classes = pico.Data.ClassNames.Count;
        Assert.That(pico.Indices.Any(i => sets.Candidates(i).ToArray().Count(c => c) > 1), Is.True, "the batch has ambiguous images");
        for (long step = 0; step < 6; step++)
        {
            pico.Step(step);
            for (var row = 0; row < Batch; row++)
            {
                var index = pico.Indices[row];
                Assert.That(sets.Contains(index, (int)pico.Pico.LastPseudoLabels[row]), Is.True, $"step {step}: pseudo-label of image {index} outside its set");
                var confidence = pico.Pico.Confidence.Slice(index * classes, classes).ToArray();
                Assert.That(confidence.Sum(), Is.EqualTo(1).Within(1e-5));
                for (var c = 0; c < classes; c++)
                {
                    if (!sets.Contains(index, c))
                    {
                        Assert.That(confidence[c], Is.Zero, $"step {step}: image {index} has confidence in class {c}, not a candidate");
                    }
                }
            }
            var prototypes = pico.Pico.Prototypes.ToArray();
            var seen = pico.Pico.LastPseudoLabels.ToArray().Select(l => (int)l).Distinct();
            foreach (var c in seen)
            {
                var norm = Math.Sqrt(prototypes.AsSpan(c * Dim, Dim).ToArray().Sum(v => (double)v * v));
                Assert.That(norm, Is.EqualTo(1).Within(1e-5), $"prototype {c} after step {step}");
            }
        }
        // From epoch 1 (step 2 here) the confidence moved away from uniform for ambiguous images.
        var ambiguous = pico.Indices.First(i => sets.Candidates(i).ToArray().Count(c => c) > 1);
        var row0 = pico.Pico.Confidence.Slice(ambiguous * classes, classes).ToArray();
        Assert.That(row0.Where(v => v > 0).Distinct().Count(), Is.GreaterThan(1), "the scores of an ambiguous image were disambiguated");
    }

    [Test]
    public void APicoStepLowersItsLossOnAFixedBatch()
    {
        using var pico = new Assembly(partialRate: 0.3, stepsPerEpoch: 100);
        var losses = Enumerable.Range(0, 8).Select(step => pico.Step(step).Loss).ToList();
        Assert.That(losses.All(float.IsFinite), Is.True, string.Join(", ", losses));
        Assert.That(losses[^1], Is.LessThan(losses[0]), string.Join(", ", losses));
    }

    [Test]
    public void ResumingMidEpochEqualsTheUninterruptedRunBitForBit()
    {
        static Method Create() => MethodCatalog.Create("pico", new MethodSettings { SmallImages = true, Classes = 10, QueueLength = 40, PartialRate = 0.3, PrototypeStartEpoch = 1 });
        ExactResume.Check(_folder, Create, trainer =>
        {
            var pico = trainer.Method as Pico ?? throw new InvalidOperationException("not a PiCO run");
            return new Dictionary<string, float[]>
            {
                ["the queue"] = pico.Queue.Keys.Span.ToArray(),
                ["the queue's pseudo-labels"] = pico.QueueLabels.Span.ToArray(),
                ["the confidence table"] = pico.Confidence.ToArray(),
                ["the prototypes"] = pico.Prototypes.ToArray(),
            };
        });

        using var file = SafetensorsFile.Open(Path.Combine(_folder, Trainer.CheckpointFileName));
        Assert.That(new[] { "method.teacher.classifier.weight", "method.queue_labels", "method.confidence", "method.prototypes" }.All(file.Contains), Is.True);
    }

    [Test]
    public void TheCliTrainsPicoOnTinySettings()
    {
        var run = Path.Combine(_folder, "pico");
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(
            ["train", "--method", "pico", "--partial-rate", "0.3", "--queue", "48", "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", "64", "--batch", "16", "--epochs", "2", "--workers", "1", "--device", "cpu", "--out", run],
            output,
            error);
        Assert.That(code, Is.EqualTo(Program.Success), error.ToString() + output);
        Assert.That(output.ToString(), Does.Contain("pico on").And.Contain("sgd lr").And.Contain("test top-1"), "PiCO's classifier is scored on the test split");
        Assert.That(File.Exists(Path.Combine(run, Trainer.EncoderFileName)), Is.True);

        // The trained classifier teaches a student: backbone and classifier come out of the PiCO checkpoint alone.
        using var distillOutput = new StringWriter();
        using var distillError = new StringWriter();
        code = Program.Run(
            ["distill", "--teacher", run, "--epochs", "1", "--batch", "16", "--workers", "1", "--device", "cpu", "--out", Path.Combine(_folder, "student")],
            distillOutput,
            distillError);
        Assert.That(code, Is.EqualTo(Program.Success), distillError.ToString() + distillOutput);
        Assert.That(distillOutput.ToString(), Does.Contain("test top-1 (teacher)"));
    }
}
