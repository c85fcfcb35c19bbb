namespace NativeContrast.Tests.Training;

using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Data;
using NativeContrast.Losses;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using NativeContrast.Training;

public class TrainerTests
{
    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("train");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    [Test]
    public void ASimClrStepOnTheCpuLowersTheLossOnAFixedBatch()
    {
        using var cpu = new CpuBackend();
        var layout = new ArenaLayout();
        using var backbone = new ResNet(layout, TinyRun.Backbone, "backbone");
        using var simclr = new SimClr(SimClrOptions.V1 with { Augmentations = "simclr-cifar" });
        simclr.Build(layout, backbone);
        using var arena = new ParameterArena(cpu, layout, optimizerStateSlots: 1);
        backbone.Bind(arena);
        simclr.Bind(arena);
        backbone.Initialize(1);
        simclr.Initialize(1);
        simclr.Prepare(new MethodContext(cpu, backbone, AugmentationPresets.SimClrCifar(16), 8, 3, 1));
        using var views = Numerics.RandomTensor(cpu, new TensorShape(16, 16, 16, 3), seed: 7);
        views.Layout = ImageLayout.Nhwc;
        using var sgd = new Sgd(arena, learningRate: 0.05f, momentum: 0.9f);
        var losses = new List<float>();
        for (var step = 0; step < 8; step++)
        {
            sgd.ZeroGradients();
            losses.Add(ContrastiveStats.Read(cpu, simclr.TrainingStep(new ViewGroups([views], [2], 8))).Loss);
            sgd.Step();
        }
        Assert.That(losses[0], Is.EqualTo(Math.Log(15)).Within(0.3), "an untrained projector is near chance: ln(2N - 1)");
        Assert.That(losses[^1], Is.LessThan(losses[0] - 0.2f), $"losses {string.Join(", ", losses)}");
    }

    [Test]
    public void AFewTrainerStepsOnTheBuiltinSetWriteMetricsCheckpointsAndTheEncoder()
    {
        using var run = new TinyRun(_folder, epochs: 2);
        using var trainer = run.CreateTrainer();
        var observer = new RecordingObserver();
        var result = trainer.Run(observer);

        Assert.That(trainer.StepsPerEpoch, Is.EqualTo(4));
        Assert.That(result.Steps, Is.EqualTo(8));
        Assert.That(result.Interrupted, Is.False);
        Assert.That(observer.Steps.Select(s => s.Step), Is.EqualTo(Enumerable.Range(0, 8).Select(i => (long)i)));
        Assert.That(observer.Steps.All(s => float.IsFinite(s.Loss) && s.ImagesPerSecond > 0 && s.Top1 is >= 0 and <= 1), Is.True);
        Assert.That(observer.Steps[0].LearningRate, Is.Zero, "the warm-up starts at 0");
        Assert.That(observer.Steps.Max(s => s.LearningRate), Is.EqualTo(0.3f * 16 / 256).Within(1e-6), "peak = 0.3 x batch / 256");
        Assert.That(observer.Epochs, Has.Count.EqualTo(2));
        Assert.That(result.Knn, Is.Not.Null);
        Assert.That(result.Knn!.Value.Count, Is.EqualTo(24), "every test image is classified");

        var lines = File.ReadAllLines(Path.Combine(_folder, MetricsLog.FileName));
        Assert.That(lines.Count(l => l.Contains("\"type\":\"step\"")), Is.EqualTo(8));
        Assert.That(lines.Count(l => l.Contains("\"type\":\"epoch\"") && l.Contains("knn_top1")), Is.EqualTo(2));
        var state = TrainingCheckpoint.ReadState(result.CheckpointPath!);
        Assert.That((state.Step, state.Epoch, state.BatchInEpoch), Is.EqualTo((8L, 2, 0L)));
        Assert.That(RunSpec.FromJson(state.Sections[RunSpec.SectionName], "test").FeatureDim, Is.EqualTo(trainer.Backbone.FeatureDim));

        // The exported encoder has torchvision's names and nothing of the projector or the optimiser.
        using var encoder = SafetensorsFile.Open(result.EncoderPath!);
        var names = encoder.Tensors.Select(t => t.Name).ToList();
        Assert.That(names, Does.Contain("conv1.weight").And.Contain("layer4.0.downsample.1.running_var"));
        Assert.That(names, Has.None.StartsWith("backbone.").And.None.StartsWith("projector").And.None.StartsWith("optimizer"));
    }

    [Test]
    public void ResumingMidEpochEqualsTheUninterruptedRunBitForBit()
    {
        float[] uninterruptedValues;
        float[] uninterruptedState;
        List<float> uninterruptedLosses;
        using (var run = new TinyRun(null, epochs: 3))
        using (var trainer = run.CreateTrainer())
        {
            var observer = new RecordingObserver();
            trainer.Run(observer);
            uninterruptedValues = trainer.Arena.Values.Span.ToArray();
            uninterruptedState = trainer.Arena.OptimizerState.Span.ToArray();
            uninterruptedLosses = [.. observer.Steps.Select(s => s.Loss)];
        }

        using var cancel = new CancellationTokenSource();
        using (var run = new TinyRun(_folder, epochs: 3))
        using (var trainer = run.CreateTrainer())
        {
            // Cancelled after step 5: the checkpoint sits mid-epoch (epoch 1, 2 batches in).
            var result = trainer.Run(new RecordingObserver(5, cancel.Cancel), cancel.Token);
            Assert.That(result.Interrupted, Is.True);
            Assert.That(result.Steps, Is.EqualTo(6));
        }
        var state = TrainingCheckpoint.ReadState(Path.Combine(_folder, Trainer.CheckpointFileName));
        Assert.That((state.Step, state.Epoch, state.BatchInEpoch), Is.EqualTo((6L, 1, 2L)));

        using (var run = new TinyRun(_folder, epochs: 3, seed: 3))
        using (var trainer = run.CreateTrainer())
        {
            trainer.Resume(Path.Combine(_folder, Trainer.CheckpointFileName));
            var observer = new RecordingObserver();
            var result = trainer.Run(observer);
            Assert.That(result.Steps, Is.EqualTo(12));
            Assert.That(observer.Steps.Select(s => s.Loss), Is.EqualTo(uninterruptedLosses.Skip(6)), "the resumed steps' losses");
            Assert.That(trainer.Arena.Values.Span.ToArray(), Is.EqualTo(uninterruptedValues), "every weight and running statistic, bit for bit");
            Assert.That(trainer.Arena.OptimizerState.Span.ToArray(), Is.EqualTo(uninterruptedState), "the LARS momentum, bit for bit");
        }
        var log = File.ReadAllLines(Path.Combine(_folder, MetricsLog.FileName));
        Assert.That(log.Count(l => l.Contains("\"type\":\"step\"")), Is.EqualTo(12), "the metrics describe one run of 12 steps, none repeated");
    }

    [Test]
    public void AnInterruptDuringTheKnnMonitorKeepsTheFinishedEpoch()
    {
        using var run = new TinyRun(_folder, epochs: 3);
        using var cancel = new CancellationTokenSource();
        // The test images are first read by epoch 0's kNN monitor: cancel there.
        using var trainer = run.CreateTrainer(test: new TouchedDataset(run.Test, cancel.Cancel));
        var result = trainer.Run(new RecordingObserver(), cancel.Token);
        Assert.That(result.Interrupted, Is.True);
        Assert.That(result.Steps, Is.EqualTo(4));
        var state = TrainingCheckpoint.ReadState(Path.Combine(_folder, Trainer.CheckpointFileName));
        Assert.That((state.Step, state.Epoch, state.BatchInEpoch), Is.EqualTo((4L, 1, 0L)), "the finished epoch is checkpointed, the next not started");
    }

    [Test]
    public void ResumingWithAnotherRecipeIsRefusedWithTheDifference()
    {
        using (var run = new TinyRun(_folder, epochs: 1))
        using (var trainer = run.CreateTrainer())
        {
            trainer.Run();
        }
        using var other = new TinyRun(_folder, epochs: 1);
        other.Options = other.Options with { BatchSize = 8 };
        using var mismatched = other.CreateTrainer();
        var e = Assert.Throws<CheckpointException>(() => mismatched.Resume(Path.Combine(_folder, Trainer.CheckpointFileName)));
        Assert.That(e!.Message, Does.Contain("batch_size 8 here, 16 in the checkpoint"));
    }

    [Test]
    public void ANonFiniteLossStopsTheRunAndKeepsTheLastGoodCheckpoint()
    {
        using var run = new TinyRun(_folder, epochs: 3);
        using var trainer = run.CreateTrainer();
        // After step 5 (in epoch 1, after epoch 0's checkpoint) a weight becomes NaN: the next loss is NaN.
        var observer = new RecordingObserver(5, () => trainer.Arena.Values.Span[0] = float.NaN);
        var e = Assert.Throws<NonFiniteLossException>(() => trainer.Run(observer));
        Assert.That(e!.Step, Is.EqualTo(6));
        Assert.That(e.Message, Does.Contain("step 6").And.Contain(Trainer.CheckpointFileName));
        Assert.That(trainer.Optimizer.StepCount, Is.EqualTo(6), "the NaN step was not applied");

        var checkpoint = Path.Combine(_folder, Trainer.CheckpointFileName);
        using var fresh = new TinyRun(_folder, epochs: 3);
        using var restored = fresh.CreateTrainer();
        restored.Resume(checkpoint);
        Assert.That(restored.Step, Is.EqualTo(4), "the epoch-end checkpoint before the NaN");
        Assert.That(restored.Arena.Values.Span.ToArray(), Has.All.Matches<float>(float.IsFinite));
    }

    [Test]
    public void TheArenaIsSizedForTheOptimiserThatRuns()
    {
        using var run = new TinyRun(null, epochs: 1);
        using (var lars = run.CreateTrainer())
        {
            Assert.That(lars.Arena.StateSlots, Is.EqualTo(1));
        }
        run.Options = run.Options with { Optimizer = "adamw" };
        using var adamw = run.CreateTrainer();
        Assert.That(adamw.Arena.StateSlots, Is.EqualTo(2));

        // Without --wd each optimiser gets its recipe's decay; an explicit value wins.
        run.Options = run.Options with { Optimizer = "lars-solo" };
        using (var solo = run.CreateTrainer())
        {
            Assert.That(solo.Optimizer.WeightDecay, Is.EqualTo(1e-5f));
        }
        run.Options = run.Options with { WeightDecay = 3e-4f };
        using var explicitDecay = run.CreateTrainer();
        Assert.That(explicitDecay.Optimizer.WeightDecay, Is.EqualTo(3e-4f));
    }
}
