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

public class MocoTests
{
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("moco");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    /// <summary>Backbone + MoCo bound to one arena on the CPU, as the trainer assembles them.</summary>
    private sealed class Assembly : IDisposable
    {
        public Assembly(MocoOptions options, int batch, int queue)
        {
            Backend = new CpuBackend();
            var layout = new ArenaLayout();
            Backbone = new ResNet(layout, TinyRun.Backbone, "backbone");
            Moco = new Moco(options);
            Moco.Build(layout, Backbone);
            Arena = new ParameterArena(Backend, layout, optimizerStateSlots: 1);
            Backbone.Bind(Arena);
            Moco.Bind(Arena);
            Backbone.Initialize(1);
            Moco.Initialize(1);
            Moco.Prepare(new MethodContext(Backend, Backbone, AugmentationPresets.SimClrCifar(16), batch, 3, 1, StepsPerEpoch: 4, TotalSteps: 8, DatasetImages: queue));
            Views = Numerics.RandomTensor(Backend, new TensorShape(2 * batch, 16, 16, 3), seed: 7);
            Views.Layout = ImageLayout.Nhwc;
            Optimizer = new Sgd(Arena, learningRate: 0.05f, momentum: 0.9f);
        }

        public CpuBackend Backend { get; }

        public ResNet Backbone { get; }

        public Moco Moco { get; }

        public ParameterArena Arena { get; }

        public Tensor Views { get; }

        public Sgd Optimizer { get; }

        public float Step(int batch, long step)
        {
            Optimizer.ZeroGradients();
            var loss = ContrastiveStats.Read(Backend, Moco.TrainingStep(new ViewGroups([Views], [2], batch, step))).Loss;
            Optimizer.Step(Moco.Teacher);
            return loss;
        }

        public void Dispose()
        {
            Optimizer.Dispose();
            Views.Dispose();
            Moco.Dispose();
            Backbone.Dispose();
            Arena.Dispose();
            Backend.Dispose();
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void AMocoStepOnTheCpuLowersTheLossOnAFixedBatch(bool symmetric)
    {
        using var moco = new Assembly(MocoOptions.V2 with { Symmetric = symmetric, Momentum = 0.9f, Augmentations = "simclr-cifar" }, batch: 8, queue: 40);
        Assert.That(moco.Arena.Values.Span.ToArray(), Is.EqualTo(moco.Moco.TeacherArena.Values.Span.ToArray()), "the key encoder starts as a copy");
        var losses = new List<float>();
        for (var step = 0; step < 10; step++)
        {
            losses.Add(moco.Step(8, step));
        }
        // Untrained, every image maps near one direction: the positive beats the random initial queue easily, and the
        // loss rises to about ln(1 + K) while the queue fills with real keys. From there on the step must lower it.
        var full = (40 + (symmetric ? 16 : 8) - 1) / (symmetric ? 16 : 8);
        Assert.That(losses[full], Is.EqualTo(Math.Log(41)).Within(0.9), $"losses {string.Join(", ", losses)}");
        Assert.That(losses[^1], Is.LessThan(losses[full] - 0.3f), $"losses {string.Join(", ", losses)}");
        var student = moco.Arena.TrainableValues.Span.ToArray();
        var teacher = moco.Moco.TeacherArena.TrainableValues.Span.ToArray();
        Assert.That(teacher, Is.Not.EqualTo(student), "the key encoder lags behind the query encoder");
    }

    [Test]
    public void TheKeyEncoderIsTheEmaOfTheQueryEncoderAndTheQueueHoldsTheLatestKeys()
    {
        const int batch = 8;
        using var moco = new Assembly(MocoOptions.V2 with { Momentum = 0.75f, Augmentations = "simclr-cifar" }, batch, queue: 20);
        var queue = moco.Moco.Loss.Queue;
        Assert.That(queue.Capacity, Is.EqualTo(20), "the queue is capped by the data set's size");
        for (var step = 0; step < 2; step++)
        {
            moco.Step(batch, step);
        }
        var teacherBefore = moco.Moco.TeacherArena.TrainableValues.Span.ToArray();
        moco.Optimizer.ZeroGradients();
        moco.Moco.TrainingStep(new ViewGroups([moco.Views], [2], batch, 2));
        // The keys this step computed, with the key encoder as it was before the step.
        var keys = KeyEncoderOutput(moco);
        moco.Optimizer.Step(moco.Moco.Teacher);
        var student = moco.Arena.TrainableValues.Span.ToArray();
        var teacher = moco.Moco.TeacherArena.TrainableValues.Span.ToArray();
        for (var i = 0; i < teacher.Length; i++)
        {
            Assert.That(teacher[i], Is.EqualTo((0.75f * teacherBefore[i]) + (0.25f * student[i])).Within(1e-6f), $"element {i}");
        }

        // Three batches of 8 through a queue of 20: it wrapped, and the newest 8 keys sit just before the position.
        Assert.That(queue.Position, Is.EqualTo(24 % 20));
        var stored = queue.Keys.Span.ToArray();
        for (var row = 0; row < batch; row++)
        {
            var slot = (queue.Position - batch + row + 20) % 20;
            var expected = Normalized(keys, row, queue.Dim);
            Assert.That(stored.AsSpan(slot * queue.Dim, queue.Dim).ToArray(), Is.EqualTo(expected).Within(1e-5f), $"key {row} in slot {slot}");
        }
    }

    [Test]
    public void ResumingMidEpochEqualsTheUninterruptedRunBitForBit()
    {
        static Method Create() => MethodCatalog.Create("mocov2", new MethodSettings { SmallImages = true, QueueLength = 40 });
        ExactResume.Check(_folder, Create, trainer =>
        {
            var moco = trainer.Method as Moco ?? throw new InvalidOperationException("not a MoCo run");
            return new Dictionary<string, float[]>
            {
                ["the key encoder"] = moco.TeacherArena.Values.Span.ToArray(),
                ["the queue"] = moco.Loss.Queue.Keys.Span.ToArray(),
            };
        });

        // The checkpoint names the key encoder's tensors after the query encoder's, under method.teacher.
        using var file = SafetensorsFile.Open(Path.Combine(_folder, Trainer.CheckpointFileName));
        Assert.That(file.Contains("method.teacher.backbone.conv1.weight") && file.Contains("method.teacher.projector.2.weight") && file.Contains("method.queue"), Is.True);
    }

    [Test]
    public void TheCliTrainsMocoAndMocoV2OnTinySettings()
    {
        foreach (var method in new[] { "moco", "mocov2" })
        {
            var run = Path.Combine(_folder, method);
            using var output = new StringWriter();
            using var error = new StringWriter();
            var code = Program.Run(
                ["train", "--method", method, "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", "64", "--batch", "16", "--epochs", "1", "--workers", "1", "--device", "cpu", "--out", run, "--symmetric"],
                output,
                error);
            Assert.That(code, Is.EqualTo(Program.Success), error.ToString() + output);
            Assert.That(output.ToString(), Does.Contain("kNN top-1 (encoder)").And.Contain($"{method} on").And.Contain("sgd lr"));
            Assert.That(File.Exists(Path.Combine(run, Trainer.EncoderFileName)), Is.True);
        }
    }

    /// <summary>The key encoder's output of view b for the last step (its plan's output, read before the EMA moves it).</summary>
    private static float[] KeyEncoderOutput(Assembly moco) => moco.Moco.LastKeys.Span.ToArray();

    private static float[] Normalized(float[] rows, int row, int dim)
    {
        var values = rows.AsSpan(row * dim, dim).ToArray();
        var norm = Math.Sqrt(values.Sum(v => (double)v * v));
        return [.. values.Select(v => (float)(v / norm))];
    }
}
