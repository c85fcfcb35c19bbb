namespace NativeContrast.Tests.Training;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Training;

/// <summary>A tiny run that trains in a second on the CPU: 64 built-in 16 px images, ResNet-10 at width 1/8, batch 16.</summary>
internal sealed class TinyRun : IDisposable
{
    public TinyRun(string? folder, int epochs = 2, ulong seed = 3, int trainImages = 64)
    {
        Backend = new CpuBackend();
        Train = BuiltinShapes.Create(trainImages, 16, seed: 1);
        Test = BuiltinShapes.Create(24, 16, seed: 1, DatasetSplit.Test);
        Options = new TrainingOptions
        {
            Epochs = epochs,
            BatchSize = 16,
            Seed = seed,
            Workers = 2,
            OutputDirectory = folder,
            EvalBatchSize = 20,
            WarmupEpochs = 0.5,
        };
    }

    public CpuBackend Backend { get; }

    public PackedImageDataset Train { get; }

    public PackedImageDataset Test { get; }

    public TrainingOptions Options { get; set; }

    public static ResNetOptions Backbone => ResNetOptions.ResNet10 with { Stem = ResNetStem.Cifar, WidthMultiplier = 0.125 };

    public Trainer CreateTrainer(Method? method = null, IImageDataset? test = null) =>
        new(Backend, method ?? MethodCatalog.Create("simclr", smallImages: true), "resnet10", Backbone, Train, test ?? Test, Options, "builtin");

    public void Dispose()
    {
        Train.Dispose();
        Test.Dispose();
        Backend.Dispose();
    }
}

/// <summary>Records what the trainer reports; can run an action after a given step (cancel, corrupt a weight).</summary>
internal sealed class RecordingObserver(long? actAfterStep = null, Action? action = null) : ITrainingObserver
{
    public List<StepMetrics> Steps { get; } = [];

    public List<EpochMetrics> Epochs { get; } = [];

    public List<string> Messages { get; } = [];

    public TrainingStart? Start { get; private set; }

    public void Started(TrainingStart start) => Start = start;

    public void StepCompleted(StepMetrics metrics)
    {
        Steps.Add(metrics);
        if (metrics.Step == actAfterStep)
        {
            action?.Invoke();
        }
    }

    public void EpochCompleted(EpochMetrics metrics) => Epochs.Add(metrics);

    public void Message(string line) => Messages.Add(line);
}

internal static class TempFolder
{
    public static string Create(string prefix)
    {
        var path = Path.Combine(Path.GetTempPath(), $"nc-{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }

    public static void Delete(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
    }
}

/// <summary>A data set that runs an action the first time an image is read (to interrupt an evaluation pass).</summary>
internal sealed class TouchedDataset(IImageDataset inner, Action onRead) : IImageDataset
{
    private int _reads;

    public string Name => inner.Name;

    public int Count => inner.Count;

    public ImageShape Shape => inner.Shape;

    public IReadOnlyList<string> ClassNames => inner.ClassNames;

    public bool HasLabels => inner.HasLabels;

    public ChannelStats Stats => inner.Stats;

    public ReadOnlySpan<byte> GetImage(int index)
    {
        if (Interlocked.Increment(ref _reads) == 1)
        {
            onRead();
        }
        return inner.GetImage(index);
    }

    public int GetLabel(int index) => inner.GetLabel(index);

    public void Dispose()
    {
    }
}

/// <summary>
/// The exact-resume check every method shares: a 3-epoch tiny run trains uninterrupted; the same run is then stopped
/// by cancellation after step 6 in <paramref name="folder"/> and resumed from its checkpoint. The resumed steps'
/// losses, the arena's values and optimiser state, and every piece of the method's own state that
/// <paramref name="methodState"/> reads (named, read through the method's fields rather than its checkpoint tensors)
/// must equal the uninterrupted run's bit for bit.
/// </summary>
internal static class ExactResume
{
    public static void Check(string folder, Func<Method> create, Func<Trainer, IReadOnlyDictionary<string, float[]>> methodState)
    {
        List<float> losses;
        Dictionary<string, float[]> expected;
        using (var run = new TinyRun(null, epochs: 3))
        using (var trainer = run.CreateTrainer(create()))
        {
            var observer = new RecordingObserver();
            trainer.Run(observer);
            losses = [.. observer.Steps.Select(s => s.Loss)];
            expected = State(trainer, methodState);
        }

        using var cancel = new CancellationTokenSource();
        using (var run = new TinyRun(folder, epochs: 3))
        using (var trainer = run.CreateTrainer(create()))
        {
            Assert.That(trainer.Run(new RecordingObserver(6, cancel.Cancel), cancel.Token).Interrupted, Is.True);
        }
        using (var run = new TinyRun(folder, epochs: 3))
        using (var trainer = run.CreateTrainer(create()))
        {
            trainer.Resume(Path.Combine(folder, Trainer.CheckpointFileName));
            var observer = new RecordingObserver();
            trainer.Run(observer);
            Assert.That(observer.Steps.Select(s => s.Loss), Is.EqualTo(losses.Skip(7)), "the resumed steps' losses");
            foreach (var (name, values) in State(trainer, methodState))
            {
                Assert.That(values, Is.EqualTo(expected[name]), $"{name}, bit for bit");
            }
        }
    }

    private static Dictionary<string, float[]> State(Trainer trainer, Func<Trainer, IReadOnlyDictionary<string, float[]>> methodState)
    {
        var state = new Dictionary<string, float[]>
        {
            ["the arena's values"] = trainer.Arena.Values.Span.ToArray(),
            ["the optimiser's state"] = trainer.Arena.OptimizerState.Span.ToArray(),
        };
        foreach (var (name, values) in methodState(trainer))
        {
            state.Add(name, values);
        }
        return state;
    }
}
