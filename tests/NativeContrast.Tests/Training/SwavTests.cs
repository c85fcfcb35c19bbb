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

public class SwavTests
{
    private const int Batch = 8;
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("swav");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    /// <summary>Backbone + a method bound to one arena on the CPU with fixed views, as the trainer assembles them.</summary>
    private sealed class Assembly : IDisposable
    {
        public Assembly(Method method, AugmentationPreset preset, int stepsPerEpoch = 4)
        {
            Backend = new CpuBackend();
            var layout = new ArenaLayout();
            Backbone = new ResNet(layout, TinyRun.Backbone, "backbone");
            Method = method;
            method.Build(layout, Backbone);
            Arena = new ParameterArena(Backend, layout, optimizerStateSlots: 1);
            Backbone.Bind(Arena);
            method.Bind(Arena);
            Backbone.Initialize(1);
            method.Initialize(1);
            method.Prepare(new MethodContext(Backend, Backbone, preset, Batch, 3, 1, stepsPerEpoch, 4L * stepsPerEpoch, 64));
            var groups = new List<Tensor>();
            var counts = new List<int>();
            foreach (var size in preset.Views.Select(v => v.Size).Distinct())
            {
                var count = preset.Views.Count(v => v.Size == size);
                var views = Numerics.RandomTensor(Backend, new TensorShape(count * Batch, size, size, 3), seed: 7 + size);
                views.Layout = ImageLayout.Nhwc;
                groups.Add(views);
                counts.Add(count);
            }
            (Groups, Counts) = (groups, counts);
            Optimizer = new Sgd(Arena, learningRate: 0.05f, momentum: 0.9f);
        }

        public CpuBackend Backend { get; }

        public ResNet Backbone { get; }

        public Method Method { get; }

        public ParameterArena Arena { get; }

        public List<Tensor> Groups { get; }

        public List<int> Counts { get; }

        public Sgd Optimizer { get; }

        public float Step(long step)
        {
            Optimizer.ZeroGradients();
            var loss = ContrastiveStats.Read(Backend, Method.TrainingStep(new ViewGroups(Groups, Counts, Batch, step))).Loss;
            Method.BeforeOptimizerStep(step);
            Optimizer.Step(Method.Teacher);
            Method.AfterOptimizerStep(step);
            return loss;
        }

        public void Dispose()
        {
            Optimizer.Dispose();
            foreach (var group in Groups)
            {
                group.Dispose();
            }
            Method.Dispose();
            Backbone.Dispose();
            Arena.Dispose();
            Backend.Dispose();
        }
    }

    [Test]
    public void TheSinkhornEpsilonSettingReachesTheMethodAndItsDescription()
    {
        using var sharp = (Swav)MethodCatalog.Create("swav", new MethodSettings { SmallImages = true, SinkhornEpsilon = 0.03f });
        Assert.That(sharp.Options.Epsilon, Is.EqualTo(0.03f));
        Assert.That(sharp.DescribeOptions(), Does.Contain("\"epsilon\":0.03,"));
        using var plain = (Swav)MethodCatalog.Create("swav", new MethodSettings { SmallImages = true });
        Assert.That(plain.Options.Epsilon, Is.EqualTo(0.05f), "SwAV's ε by default");
    }

    [Test]
    public void ASwavStepLowersTheLossOnAFixedBatchAndItsTopOneIsNotReported()
    {
        using var swav = new Assembly(new Swav(new SwavOptions { Prototypes = 30, SmallCrops = 2, FreezePrototypesEpochs = 0, Augmentations = "swav-cifar" }), AugmentationPresets.SwavCifar(16, 2));
        var losses = Enumerable.Range(0, 10).Select(s => swav.Step(s)).ToList();
        Assert.That(losses[^1], Is.LessThan(losses[0] - 0.1f), $"losses {string.Join(", ", losses)}");
        var stats = ContrastiveStats.Read(swav.Backend, swav.Method.TrainingStep(new ViewGroups(swav.Groups, swav.Counts, Batch, 10)));
        Assert.That(float.IsNaN(stats.Top1Accuracy) && float.IsNaN(stats.PositiveSimilarity), Is.True, "SwAV has no positive pair to report");
    }

    [Test]
    public void PrototypesStayNormalisedAndDoNotMoveWhileFrozen()
    {
        var options = new SwavOptions { Prototypes = 30, SmallCrops = 2, FreezePrototypesEpochs = 0.5, Augmentations = "swav-cifar" };
        using var swav = new Assembly(new Swav(options), AugmentationPresets.SwavCifar(16, 2), stepsPerEpoch: 6);
        var prototypes = ((Swav)swav.Method).Prototypes.Linear.Weight;
        var initial = prototypes.Span.ToArray();
        AssertRowsAreUnit(initial, options.OutputDim);
        for (var step = 0; step < 3; step++)
        {
            swav.Step(step);
            Assert.That(prototypes.Span.ToArray(), Is.EqualTo(initial), $"frozen at step {step} (the first half epoch of 6 steps)");
        }
        var view = swav.Arena["prototypes.weight"];
        Assert.That(swav.Arena.State(0, view).Span.ToArray(), Is.All.Zero, "no momentum builds up while frozen");
        swav.Step(3);
        var moved = prototypes.Span.ToArray();
        Assert.That(moved, Is.Not.EqualTo(initial), "released after the frozen steps");
        AssertRowsAreUnit(moved, options.OutputDim);
    }

    [Test]
    public void TheQueueJoinsTheCodesOnceFullAndKeepsTheLatestEmbeddings()
    {
        // A queue of 16 = two batches, filling from the start: unused for two steps, used from the third.
        var options = new SwavOptions { Prototypes = 30, SmallCrops = 2, FreezePrototypesEpochs = 0, QueueLength = 16, Augmentations = "swav-cifar" };
        using var swav = new Assembly(new Swav(options), AugmentationPresets.SwavCifar(16, 2));
        var method = (Swav)swav.Method;
        swav.Step(0);
        Assert.That(method.QueueFill, Is.EqualTo(8));
        swav.Step(1);
        Assert.That(method.QueueFill, Is.EqualTo(16));
        Assert.That(method.HostState["queue_position"], Is.Zero, "wrapped");
        var queue0 = method.StateTensors.Single(s => s.Name == "queue0").Tensor;
        var before = queue0.Span.ToArray();
        swav.Step(2);
        // The third step enqueued its crop-0 embeddings over the oldest 8 rows (rows 0..7), leaving rows 8..15.
        var after = queue0.Span.ToArray();
        Assert.That(after.AsSpan(8 * options.OutputDim).ToArray(), Is.EqualTo(before.AsSpan(8 * options.OutputDim).ToArray()));
        Assert.That(after.AsSpan(0, 8 * options.OutputDim).ToArray(), Is.Not.EqualTo(before.AsSpan(0, 8 * options.OutputDim).ToArray()));
        AssertRowsAreUnit(after, options.OutputDim);
    }

    [Test]
    public void QueuedCodesAreTheBatchRowsOfSinkhornOverQueueAndBatch()
    {
        using var cpu = new CpuBackend();
        const int batch = 6, queued = 10, prototypes = 7;
        using var scores = Numerics.RandomTensor(cpu, new TensorShape(2 * batch, prototypes), seed: 3);
        using var queueScores0 = Numerics.RandomTensor(cpu, new TensorShape(queued, prototypes), seed: 4);
        using var queueScores1 = Numerics.RandomTensor(cpu, new TensorShape(queued, prototypes), seed: 5);
        using var loss = cpu.Allocate(new TensorShape(1));
        using var swav = new SwavLoss(cpu);
        swav.Compute(scores, 2, loss, null, [queueScores0, queueScores1]);
        var codes = swav.Codes!.Span.ToArray();

        using var sinkhorn = new SinkhornKnopp(cpu);
        foreach (var (crop, queue) in new[] { (0, queueScores0), (1, queueScores1) })
        {
            using var joined = cpu.Allocate(new TensorShape(queued + batch, prototypes));
            using var joinedCodes = cpu.Allocate(new TensorShape(queued + batch, prototypes));
            cpu.Copy(queue, joined.SliceRows(0, queued));
            cpu.Copy(scores.SliceRows(crop * batch, batch), joined.SliceRows(queued, batch));
            sinkhorn.Compute(joined, joinedCodes);
            var expected = joinedCodes.Span.ToArray().AsSpan(queued * prototypes).ToArray();
            Assert.That(codes.AsSpan(crop * batch * prototypes, batch * prototypes).ToArray(), Is.EqualTo(expected), $"crop {crop}");
        }
    }

    [Test]
    public void ResumingMidEpochWithTheQueueEqualsTheUninterruptedRunBitForBit()
    {
        static Method Create() => MethodCatalog.Create("swav", new MethodSettings { SmallImages = true, Prototypes = 20, SmallCrops = 2, QueueLength = 32, FreezePrototypesEpochs = 0.5 });
        ExactResume.Check(_folder, Create, trainer => new Dictionary<string, float[]> { ["the feature queues"] = Queues(trainer) });
    }

    [Test]
    public void AMarginStepLowersTheLossOnAFixedBatch()
    {
        using var margin = new Assembly(new MarginContrastive(new MarginOptions { Margin = 1.2f, Augmentations = "simclr-cifar" }), AugmentationPresets.SimClrCifar(16));
        var losses = Enumerable.Range(0, 8).Select(s => margin.Step(s)).ToList();
        Assert.That(losses[^1], Is.LessThan(losses[0] * 0.7f), $"losses {string.Join(", ", losses)}");
        var stats = ContrastiveStats.Read(margin.Backend, margin.Method.TrainingStep(new ViewGroups(margin.Groups, margin.Counts, Batch, 8)));
        Assert.That(stats.PositiveSimilarity, Is.InRange(-1f, 1f));
        Assert.That(stats.Top1Accuracy, Is.InRange(0f, 1f));
    }

    [TestCase("swav")]
    [TestCase("margin")]
    public void TheCliTrainsOnTinySettings(string method)
    {
        var run = Path.Combine(_folder, method);
        using var output = new StringWriter();
        using var error = new StringWriter();
        string[] extra = method == "swav" ? ["--prototypes", "20", "--small-crops", "2", "--queue", "32"] : ["--margin", "1.2"];
        var code = Program.Run(
            ["train", "--method", method, "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", "64", "--batch", "16", "--epochs", "2", "--workers", "1", "--device", "cpu", "--out", run, .. extra],
            output,
            error);
        Assert.That(code, Is.EqualTo(Program.Success), error.ToString() + output);
        Assert.That(output.ToString(), Does.Contain("kNN top-1 (encoder)").And.Contain($"{method} on"));
        var log = File.ReadAllLines(Path.Combine(run, MetricsLog.FileName));
        Assert.That(log.Count(l => l.Contains("\"type\":\"step\"")), Is.EqualTo(8));
        Assert.That(log.Any(l => l.Contains("NaN")), Is.False, "statistics a method does not have are left out, not written as NaN");
    }

    private static float[] Queues(Trainer trainer) => [.. trainer.Method.StateTensors.SelectMany(s => s.Tensor.Span.ToArray())];

    private static void AssertRowsAreUnit(float[] values, int dim)
    {
        for (var row = 0; row < values.Length / dim; row++)
        {
            var norm = Math.Sqrt(values.AsSpan(row * dim, dim).ToArray().Sum(v => (double)v * v));
            Assert.That(norm, Is.EqualTo(1).Within(1e-5), $"row {row}");
        }
    }
}
