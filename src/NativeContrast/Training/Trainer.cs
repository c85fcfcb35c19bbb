namespace NativeContrast.Training;

using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Data;
using NativeContrast.Eval;
using NativeContrast.Losses;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// Owns a training run (self-supervised, or on labels): the backbone (declared under "backbone.", torchvision's names
/// after the prefix), the method's heads, one parameter arena sized for the optimiser, the loader and its view tensors,
/// the optimiser with its warm-up + cosine schedule, the kNN monitor, the method's classifier on the test split (when
/// it has one), metrics, checkpoints and the encoder export. With <see cref="TrainingOptions.Labels"/> it trains on a
/// class-balanced labelled subset of the train split. Each step: loader → views on the backend (grouped by size) →
/// <see cref="Method.TrainingStep"/> → the loss read and checked → optimiser step → metrics. A run resumes exactly
/// (bit for bit on the CPU) from any checkpoint it wrote, at an epoch's end or mid-epoch after a cancellation.
/// </summary>
public sealed class Trainer : IDisposable
{
    public const string CheckpointFileName = "checkpoint.safetensors";
    public const string EncoderFileName = "encoder.safetensors";
    public const string BackbonePrefix = "backbone.";

    /// <summary>The checkpoint section holding the method's host counters (<see cref="Method.HostState"/>).</summary>
    public const string MethodStateSection = "method_state";

    private readonly IBackend _backend;
    private readonly Method _method;
    private readonly IImageDataset _train;
    private readonly IImageDataset? _test;
    private readonly ParameterArena _arena;
    private readonly Optimizer _optimizer;
    private readonly ContrastiveLoader _loader;
    private readonly Tensor[] _groups;
    private readonly int[] _groupViews;
    private readonly int[] _batchIndices;
    private readonly int[] _batchLabels;
    private readonly FeatureExtractor _features;
    private long _step;
    private int _epoch;
    private int _batchInEpoch;

    public Trainer(IBackend backend, Method method, string arch, ResNetOptions backboneOptions, IImageDataset train, IImageDataset? test, TrainingOptions options, string datasetName)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var split = train;
        if (options.Labels is { } budget)
        {
            train = LabelledSubset.Draw(split, budget, options.LabelsSeed);
        }
        if (train.Count < options.BatchSize)
        {
            throw new ArgumentException($"{train.Name} has {train.Count} images, fewer than one batch of {options.BatchSize} (--batch)", nameof(options));
        }
        _backend = backend;
        _method = method;
        _train = train;
        _test = test;
        Options = options;
        var stats = train.Stats;
        var imageSize = Math.Min(train.Shape.Height, train.Shape.Width);
        var preset = method.Augmentations(AugmentationPresets.CropSizeFor(train.Shape));
        if (options.CropScaleMin is { } scaleMin)
        {
            // The large crops only (those that may cover the whole image); SwAV's small crops keep their range.
            preset = preset with { Name = $"{preset.Name}, crop scale from {scaleMin.ToString(CultureInfo.InvariantCulture)}", Views = [.. preset.Views.Select(v => v.ScaleMax >= 1f ? v with { ScaleMin = scaleMin } : v)] };
        }

        var layout = new ArenaLayout();
        Backbone = new ResNet(layout, backboneOptions with { InputChannels = train.Shape.Channels }, "backbone");
        method.Build(layout, Backbone);
        _arena = new ParameterArena(backend, layout, options.OptimizerStateSlots);
        Backbone.Bind(_arena);
        method.Bind(_arena);
        Backbone.Initialize(options.Seed);
        method.Initialize(options.Seed);

        _loader = new ContrastiveLoader(train, preset, new LoaderOptions { BatchSize = options.BatchSize, Seed = options.Seed, Workers = options.Workers, Normalization = stats }, backend);
        (_groups, _groupViews) = AllocateGroups(backend, _loader, preset);
        _batchIndices = new int[options.BatchSize];
        _batchLabels = new int[options.BatchSize];
        StepsPerEpoch = _loader.BatchesPerEpoch;
        TotalSteps = (long)StepsPerEpoch * options.Epochs;
        method.Prepare(new MethodContext(backend, Backbone, preset, options.BatchSize, train.Shape.Channels, options.Seed, StepsPerEpoch, TotalSteps, train.Count, train));
        var peak = options.LearningRate ?? method.BaseLearningRate(options.Optimizer) * options.BatchSize / 256f;
        var warmupEpochs = options.WarmupEpochs ?? Math.Min(10, options.Epochs / 10.0);
        var warmup = Math.Min(TotalSteps, (long)Math.Round(warmupEpochs * StepsPerEpoch));
        WeightDecay = options.WeightDecay ?? method.DefaultWeightDecay(options.Optimizer);
        _optimizer = CreateOptimizer(options, _arena, peak, WeightDecay);
        _optimizer.Schedule = new LearningRateSchedule(peak, TotalSteps, warmup);
        _features = new FeatureExtractor(Backbone, stats, options.EvalBatchSize);

        Spec = new RunSpec
        {
            Method = method.Name,
            Arch = arch,
            Width = backboneOptions.WidthMultiplier,
            Stem = backboneOptions.Stem == ResNetStem.Cifar ? "cifar" : "imagenet",
            InputChannels = train.Shape.Channels,
            ImageSize = imageSize,
            FeatureDim = Backbone.FeatureDim,
            Dataset = datasetName,
            BuiltinImages = datasetName == "builtin" ? split.Count : 0,
            DataSeed = options.DataSeed is { } dataSeed && dataSeed != options.Seed ? dataSeed : null,
            Labels = options.Labels?.ToString(),
            LabelsSeed = options.Labels is null ? null : options.LabelsSeed,
            CropScaleMin = options.CropScaleMin,
            Mean = stats.Mean,
            Std = stats.Std,
            BatchSize = options.BatchSize,
            Epochs = options.Epochs,
            Seed = options.Seed,
        };
        Description = $"{method.Name} on {train.Name} ({train.Count} images, {preset.Views[0].Size}px, {preset.Name} views), {arch} ×{backboneOptions.WidthMultiplier.ToString(CultureInfo.InvariantCulture)} " +
            $"{Spec.Stem} stem ({Backbone.FeatureDim}-d features, {_arena.Views.Where(v => v.IsTrainable).Sum(v => v.Length):N0} parameters), batch {options.BatchSize}, {options.Optimizer} lr {peak.ToString("G4", CultureInfo.InvariantCulture)} " +
            $"(warm-up {warmup} steps, cosine), wd {WeightDecay.ToString(CultureInfo.InvariantCulture)}, {options.Epochs} epochs × {StepsPerEpoch} steps on {backend.Name}";
    }

    public TrainingOptions Options { get; }

    public ResNet Backbone { get; }

    public Method Method => _method;

    /// <summary>The images the run trains on: the train split, or its labelled subset.</summary>
    public IImageDataset Train => _train;

    /// <summary>The weight decay that runs: the options' or the method's recipe's.</summary>
    public float WeightDecay { get; }

    public ParameterArena Arena => _arena;

    public Optimizer Optimizer => _optimizer;

    public RunSpec Spec { get; }

    public string Description { get; }

    public int StepsPerEpoch { get; }

    public long TotalSteps { get; }

    /// <summary>Optimiser steps taken; the next step is number Step.</summary>
    public long Step => _step;

    /// <summary>The epoch the next step belongs to.</summary>
    public int Epoch => _epoch;

    public string? CheckpointPath => Options.OutputDirectory is { } dir ? Path.Combine(dir, CheckpointFileName) : null;

    /// <summary>Restores a checkpoint this trainer's recipe wrote: weights, optimiser state, counters, the method's buffers.</summary>
    public void Resume(string path)
    {
        var saved = TrainingCheckpoint.ReadState(path);
        if (!saved.Sections.TryGetValue(RunSpec.SectionName, out var runJson))
        {
            throw new CheckpointException(path, null, "the checkpoint has no run description (was it written by the trainer?)");
        }
        var differences = Spec.Differences(RunSpec.FromJson(runJson, path));
        if (differences.Count > 0)
        {
            throw new CheckpointException(path, null, $"the checkpoint is from another recipe: {string.Join("; ", differences)} (resume with the original run's options)");
        }
        var state = TrainingCheckpoint.Load(path, _arena, _method.StateTensors);
        if (state.Sections.TryGetValue("optimizer", out var optimizerJson))
        {
            var values = JsonSerializer.Deserialize(optimizerJson, TrainingJson.Default.DictionaryStringString)
                ?? throw new CheckpointException(path, null, "the optimizer section is empty");
            _optimizer.SetHyperparameters(values);
        }
        if (_optimizer.StepCount != state.Step || state.Epoch > Options.Epochs)
        {
            throw new CheckpointException(path, null, $"inconsistent counters: step {state.Step}, optimizer step {_optimizer.StepCount}, epoch {state.Epoch} of {Options.Epochs}");
        }
        if (state.Sections.TryGetValue(MethodStateSection, out var methodJson))
        {
            var counters = JsonSerializer.Deserialize(methodJson, TrainingJson.Default.DictionaryStringInt64)
                ?? throw new CheckpointException(path, null, $"the {MethodStateSection} section is empty");
            try
            {
                _method.RestoreHostState(counters);
            }
            catch (Exception e) when (e is KeyNotFoundException or ArgumentException)
            {
                throw new CheckpointException(path, null, $"the {MethodStateSection} section does not fit {_method.Name}: {e.Message}", e);
            }
        }
        else if (_method.HostState.Count > 0)
        {
            throw new CheckpointException(path, null, $"the checkpoint has no {MethodStateSection} section, which {_method.Name} needs ({string.Join(", ", _method.HostState.Keys)})");
        }
        _step = state.Step;
        _epoch = state.Epoch;
        _batchInEpoch = checked((int)state.BatchInEpoch);
    }

    /// <summary>
    /// Trains until the last epoch or until <paramref name="cancel"/> fires (then a checkpoint of the exact position is
    /// written and the result says Interrupted). A non-finite loss throws <see cref="NonFiniteLossException"/> before
    /// the step is applied, leaving the last checkpoint as it was.
    /// </summary>
    public TrainingResult Run(ITrainingObserver? observer = null, CancellationToken cancel = default)
    {
        using var metrics = Options.OutputDirectory is { } dir ? new MetricsLog(dir, _step) : null;
        observer?.Started(new TrainingStart(_step, TotalSteps, StepsPerEpoch, _epoch, Options.Epochs, Description));
        var clock = Stopwatch.StartNew();
        var startStep = _step;
        Accuracy? lastKnn = null;
        Accuracy? lastClassifier = null;
        string? lastCheckpoint = CheckpointPath is { } existing && File.Exists(existing) ? existing : null;
        var window = new Queue<(long Ticks, int Images)>();
        while (_epoch < Options.Epochs)
        {
            var epochClock = Stopwatch.StartNew();
            var epochStartStep = _step;
            double lossSum = 0;
            var last = Stopwatch.GetTimestamp();
            foreach (var batch in _loader.Epoch(_epoch, _batchInEpoch))
            {
                CopyViews(batch);
                _optimizer.ZeroGradients();
                batch.Indices.CopyTo(_batchIndices);
                batch.Labels.CopyTo(_batchLabels);
                var groups = new ViewGroups(_groups, _groupViews, batch.Count, _step, _batchIndices.AsMemory(0, batch.Count), _batchLabels.AsMemory(0, batch.Count));
                var stats = ContrastiveStats.Read(_backend, _method.TrainingStep(groups));
                if (!float.IsFinite(stats.Loss))
                {
                    throw new NonFiniteLossException(_step, _epoch, stats.Loss, lastCheckpoint);
                }
                var learningRate = _optimizer.CurrentLearningRate;
                _method.BeforeOptimizerStep(_step);
                _optimizer.Step(_method.Teacher);
                _method.AfterOptimizerStep(_step);
                lossSum += stats.Loss;
                var now = Stopwatch.GetTimestamp();
                var step = new StepMetrics(_step, _epoch, _batchInEpoch, stats.Loss, learningRate, stats.PositiveSimilarity, stats.Top1Accuracy, Throughput(window, now - last, batch.Count));
                last = now;
                _step++;
                _batchInEpoch++;
                metrics?.Write(step);
                observer?.StepCompleted(step);
                if (cancel.IsCancellationRequested)
                {
                    lastCheckpoint = SaveCheckpoint(observer);
                    return Finish(clock, startStep, interrupted: true, lastKnn, lastClassifier, lastCheckpoint, encoder: null);
                }
            }
            _epoch++;
            _batchInEpoch = 0;
            var lastEpoch = _epoch == Options.Epochs;
            // The epoch's time and throughput are its training steps'; the monitor's pass is timed in its own message.
            var seconds = epochClock.Elapsed.TotalSeconds;
            Accuracy? knn = null, classifier = null;
            try
            {
                (knn, classifier) = Monitor(observer, lastEpoch, cancel);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                // Interrupted during the monitor: the epoch's training is done and is checkpointed below.
            }
            lastKnn = knn ?? lastKnn;
            lastClassifier = classifier ?? lastClassifier;
            var epochMetrics = new EpochMetrics(_epoch - 1, _step, lossSum / Math.Max(1, _step - epochStartStep), knn, seconds, (_step - epochStartStep) * (double)Options.BatchSize / Math.Max(seconds, 1e-9), classifier);
            metrics?.Write(epochMetrics);
            observer?.EpochCompleted(epochMetrics);
            if (Due(Options.CheckpointEveryEpochs, lastEpoch) || cancel.IsCancellationRequested)
            {
                lastCheckpoint = SaveCheckpoint(observer) ?? lastCheckpoint;
            }
            if (cancel.IsCancellationRequested && !lastEpoch)
            {
                return Finish(clock, startStep, interrupted: true, lastKnn, lastClassifier, lastCheckpoint, encoder: null);
            }
        }
        return Finish(clock, startStep, interrupted: false, lastKnn, lastClassifier, lastCheckpoint, ExportEncoder(observer));
    }

    /// <summary>
    /// The kNN monitor: backbone features of the training images (the bank) and the test images, clean.
    /// <paramref name="queries"/>: the test images' features when they are at hand.
    /// </summary>
    public Accuracy? EvaluateKnn(ITrainingObserver? observer = null, CancellationToken cancel = default, FeatureSet? queries = null)
    {
        if (_test is null || !_train.HasLabels || !_test.HasLabels)
        {
            return null;
        }
        var clock = Stopwatch.StartNew();
        var bank = _features.Extract(_train, Options.KnnBankImages, cancel);
        queries ??= _features.Extract(_test, cancel: cancel);
        var accuracy = new KnnClassifier(Options.KnnNeighbours, Options.KnnTemperature).Evaluate(bank, queries);
        observer?.Message($"kNN (k {Options.KnnNeighbours}, T {Options.KnnTemperature.ToString(CultureInfo.InvariantCulture)}) on {_test.Name}: {accuracy} in {clock.Elapsed.TotalSeconds:F1} s");
        return accuracy;
    }

    /// <summary>
    /// The method's <see cref="Method.Classifier"/> on the test split: backbone features of the clean test images, then
    /// the classifier, both in eval mode; null when the method has none or the test split has no labels.
    /// <paramref name="queries"/>: the test images' features when they are at hand.
    /// </summary>
    public Accuracy? EvaluateClassifier(ITrainingObserver? observer = null, CancellationToken cancel = default, FeatureSet? queries = null)
    {
        if (_method.Classifier is not { } classifier || _test is null || !_test.HasLabels)
        {
            return null;
        }
        var clock = Stopwatch.StartNew();
        queries ??= _features.Extract(_test, cancel: cancel);
        var accuracy = ClassifierAccuracy.Evaluate(classifier, queries, Options.EvalBatchSize, cancel);
        observer?.Message($"classifier on {_test.Name}: {accuracy} in {clock.Elapsed.TotalSeconds:F1} s");
        return accuracy;
    }

    /// <summary>Writes the training checkpoint (atomically) and returns its path; null without an output directory.</summary>
    public string? SaveCheckpoint(ITrainingObserver? observer = null)
    {
        if (CheckpointPath is not { } path)
        {
            return null;
        }
        var optimizer = JsonSerializer.Serialize(new Dictionary<string, string>(_optimizer.GetHyperparameters()), TrainingJson.Default.DictionaryStringString);
        var state = new TrainingState
        {
            Step = _step,
            Epoch = _epoch,
            BatchInEpoch = _batchInEpoch,
            Seed = Options.Seed,
            Sections = new Dictionary<string, string>
            {
                [RunSpec.SectionName] = Spec.ToJson(),
                ["optimizer"] = optimizer,
                ["method"] = _method.DescribeOptions(),
                [MethodStateSection] = JsonSerializer.Serialize(new Dictionary<string, long>(_method.HostState), TrainingJson.Default.DictionaryStringInt64),
            },
        };
        TrainingCheckpoint.Save(path, _arena, state, SpecMetadata(), _method.StateTensors);
        observer?.Message($"checkpoint {path} (step {_step}, epoch {_epoch}{(_batchInEpoch > 0 ? $" + {_batchInEpoch} batches" : "")})");
        return path;
    }

    /// <summary>The backbone alone under torchvision's names ("conv1.weight", "layer1.0.bn1.running_mean", ...).</summary>
    public string? ExportEncoder(ITrainingObserver? observer = null)
    {
        if (Options.OutputDirectory is not { } dir)
        {
            return null;
        }
        var path = Path.Combine(dir, EncoderFileName);
        ModelCheckpoint.Save(path, _arena, new ModelSaveOptions { Scope = TensorScope.Under(BackbonePrefix), BatchNormSteps = _step, Metadata = SpecMetadata() });
        observer?.Message($"encoder {path} (torchvision names, {Spec.Arch} {Spec.Stem} stem)");
        return path;
    }

    public void Dispose()
    {
        _method.Dispose();
        _optimizer.Dispose();
        foreach (var group in _groups)
        {
            group.Dispose();
        }
        _loader.Dispose();
        Backbone.Dispose();
        _arena.Dispose();
    }

    private Dictionary<string, string> SpecMetadata() => new()
    {
        ["arch"] = Spec.Arch,
        ["stem"] = Spec.Stem,
        ["width"] = Spec.Width.ToString(CultureInfo.InvariantCulture),
        ["method"] = Spec.Method,
        ["dataset"] = Spec.Dataset,
    };

    /// <summary>Whether an every-N-epochs task runs now that <see cref="Epoch"/> epochs are done (always after the last).</summary>
    private bool Due(int every, bool last) => last || (every > 0 && _epoch % every == 0);

    /// <summary>The evaluation taps due after an epoch: the kNN monitor and the method's classifier, sharing one pass over the test images.</summary>
    private (Accuracy? Knn, Accuracy? Classifier) Monitor(ITrainingObserver? observer, bool lastEpoch, CancellationToken cancel)
    {
        var knnDue = Due(Options.KnnEveryEpochs, lastEpoch) && _train.HasLabels;
        var classifierDue = Due(Options.ClassifierEveryEpochs, lastEpoch) && _method.Classifier is not null;
        if (_test is null || !_test.HasLabels || !(knnDue || classifierDue))
        {
            return (null, null);
        }
        var queries = _features.Extract(_test, cancel: cancel);
        return (knnDue ? EvaluateKnn(observer, cancel, queries) : null, classifierDue ? EvaluateClassifier(observer, cancel, queries) : null);
    }

    private TrainingResult Finish(Stopwatch clock, long startStep, bool interrupted, Accuracy? knn, Accuracy? classifier, string? checkpoint, string? encoder)
    {
        var seconds = clock.Elapsed.TotalSeconds;
        return new TrainingResult(_epoch, _step, interrupted, knn, seconds, (_step - startStep) * (double)Options.BatchSize / Math.Max(seconds, 1e-9), checkpoint, encoder, classifier);
    }

    /// <summary>Images per second over the last 20 steps (loader waits included).</summary>
    private static double Throughput(Queue<(long Ticks, int Images)> window, long ticks, int images)
    {
        window.Enqueue((ticks, images));
        if (window.Count > 20)
        {
            window.Dequeue();
        }
        var total = window.Sum(w => w.Ticks);
        return window.Sum(w => w.Images) * (double)Stopwatch.Frequency / Math.Max(total, 1);
    }

    private void CopyViews(ViewBatch batch)
    {
        var view = 0;
        for (var g = 0; g < _groups.Length; g++)
        {
            batch.CopyTo(_backend, view, _groupViews[g], _groups[g]);
            view += _groupViews[g];
        }
    }

    /// <summary>One tensor per run of consecutive same-size views, [views · batch, S, S, C].</summary>
    private static (Tensor[] Groups, int[] Views) AllocateGroups(IBackend backend, ContrastiveLoader loader, AugmentationPreset preset)
    {
        var groups = new List<Tensor>();
        var counts = new List<int>();
        var channels = loader.Dataset.Shape.Channels;
        for (var v = 0; v < preset.ViewCount;)
        {
            var size = preset.Views[v].Size;
            var count = 1;
            while (v + count < preset.ViewCount && preset.Views[v + count].Size == size)
            {
                count++;
            }
            var shape = new TensorShape(count * loader.Options.BatchSize, size, size, channels);
            groups.Add(backend.AllocateImages(shape, $"views {v}..{v + count - 1}"));
            counts.Add(count);
            v += count;
        }
        return ([.. groups], [.. counts]);
    }

    private static Optimizer CreateOptimizer(TrainingOptions options, ParameterArena arena, float learningRate, float weightDecay) => options.Optimizer switch
    {
        "sgd" => new Sgd(arena, learningRate, options.Momentum, weightDecay),
        "adamw" => new AdamW(arena, learningRate, weightDecay: weightDecay),
        "lars-solo" => new Lars(arena, learningRate, options.Momentum, weightDecay, trustCoefficient: 0.02f, variant: LarsVariant.SoloLearn) { ClipLearningRate = true },
        _ => new Lars(arena, learningRate, options.Momentum, weightDecay),
    };
}
