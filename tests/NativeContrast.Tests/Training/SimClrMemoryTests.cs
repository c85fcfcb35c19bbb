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

/// <summary>SimCLR v2's memory: momentum keys queued as extra negatives on the fused InfoNCE beside NT-Xent.</summary>
public class SimClrMemoryTests
{
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("simclr-memory");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    private static Method Create(int queue) =>
        MethodCatalog.Create("simclr-v2", new MethodSettings { SmallImages = true, QueueLength = queue });

    [Test]
    public void AStepWithTheMemoryLowersTheLossOnAFixedBatchAndFillsTheQueueWithTheKeys()
    {
        const int batch = 6;
        using var backend = new CpuBackend();
        var layout = new ArenaLayout();
        using var backbone = new ResNet(layout, TinyRun.Backbone, "backbone");
        using var simclr = (SimClr)Create(queue: 40);
        simclr.Build(layout, backbone);
        using var arena = new ParameterArena(backend, layout, optimizerStateSlots: 1);
        backbone.Bind(arena);
        simclr.Bind(arena);
        backbone.Initialize(1);
        simclr.Initialize(1);
        simclr.Prepare(new MethodContext(backend, backbone, AugmentationPresets.SimClrCifar(16), batch, 3, 1, StepsPerEpoch: 4, TotalSteps: 8, DatasetImages: 40));
        using var views = Numerics.RandomTensor(backend, new TensorShape(2 * batch, 16, 16, 3), seed: 7);
        views.Layout = ImageLayout.Nhwc;
        using var optimizer = new Sgd(arena, learningRate: 0.05f, momentum: 0.9f);

        Assert.That(simclr.TeacherArena!.Values.Span.ToArray(), Is.EqualTo(arena.Values.Span[..simclr.TeacherArena.Values.Span.Length].ToArray()), "the key encoder starts as a copy of the student");
        var queueBefore = simclr.QueueLoss!.Queue.Keys.Span.ToArray();
        var losses = new List<float>();
        for (var step = 0; step < 6; step++)
        {
            optimizer.ZeroGradients();
            losses.Add(ContrastiveStats.Read(backend, simclr.TrainingStep(new ViewGroups([views], [2], batch, step))).Loss);
            optimizer.Step(simclr.Teacher);
        }

        Assert.That(losses.All(float.IsFinite), Is.True, string.Join(", ", losses));
        Assert.That(losses[^1], Is.LessThan(losses[0]), string.Join(", ", losses));
        // 6 steps of 12 keys into 40 slots: the position wrapped to 72 mod 40 and every slot was written.
        var queue = simclr.QueueLoss.Queue;
        Assert.That(queue.Position, Is.EqualTo(72 % 40));
        var keys = queue.Keys.Span.ToArray();
        var dim = 128;
        for (var row = 0; row < 40; row++)
        {
            var norm = Math.Sqrt(keys.AsSpan(row * dim, dim).ToArray().Sum(v => (double)v * v));
            Assert.That(norm, Is.EqualTo(1).Within(1e-4), $"queue row {row} is a unit key");
        }
        Assert.That(keys, Is.Not.EqualTo(queueBefore));
        Assert.That(simclr.TeacherArena.Values.Span.ToArray(), Is.Not.EqualTo(arena.Values.Span[..simclr.TeacherArena.Values.Span.Length].ToArray()), "the EMA lags the student");
    }

    [Test]
    public void ResumingMidEpochEqualsTheUninterruptedRunBitForBit()
    {
        ExactResume.Check(_folder, () => Create(queue: 40), trainer =>
        {
            var simclr = trainer.Method as SimClr ?? throw new InvalidOperationException("not a SimCLR run");
            return new Dictionary<string, float[]>
            {
                ["the momentum encoder"] = simclr.TeacherArena!.Values.Span.ToArray(),
                ["the queue"] = simclr.QueueLoss!.Queue.Keys.Span.ToArray(),
            };
        });

        using var file = SafetensorsFile.Open(Path.Combine(_folder, Trainer.CheckpointFileName));
        Assert.That(file.Contains("method.teacher.backbone.conv1.weight") && file.Contains("method.queue"), Is.True);
    }

    [Test]
    public void TheCliTrainsSimClrV2WithItsMemoryOnTinySettings()
    {
        var run = Path.Combine(_folder, "simclr-v2");
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(
            ["train", "--method", "simclr-v2", "--queue", "48", "--momentum-cosine", "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", "64", "--batch", "16", "--epochs", "1", "--workers", "1", "--device", "cpu", "--out", run],
            output,
            error);
        Assert.That(code, Is.EqualTo(Program.Success), error.ToString() + output);
        Assert.That(output.ToString(), Does.Contain("kNN top-1 (encoder)").And.Contain("simclr-v2 on"));
        using var file = SafetensorsFile.Open(Path.Combine(run, Trainer.CheckpointFileName));
        Assert.That(file.Contains("method.queue"), Is.True, "the queue is in the checkpoint");
    }
}
