namespace NativeContrast.Training;

using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Data;
using NativeContrast.Distributed;
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
/// <para>
/// Data-parallel, with a communicator of more than one rank (a method that <see cref="Method.SupportsDataParallel"/>):
/// rank 0's initial parameters are broadcast; every rank takes its shard of each global batch of ranks × BatchSize
/// images (the same images and views as one process of that batch); after the backward one all-reduce averages the
/// gradient arena, so the optimiser steps agree on every rank; the step's statistics (and whether any rank was asked to
/// stop) are all-reduced, so the logged loss is the global batch's. Rank 0 alone writes metrics, checkpoints and the
/// encoder, and runs the evaluation taps while the others wait. Checkpoints hold global state only (the step counts
/// global batches), so a run resumes on any number of ranks with the same global batch. With
/// <see cref="TrainingOptions.SyncBatchNorm"/> every batch norm computes its training statistics over the global batch.
/// </para>
/// </summary>
public sealed class Trainer : IDisposable
{
    public const string CheckpointFileName = "checkpoint.safetensors";
    public const string EncoderFileName = "encoder.safetensors";
    public const string BackbonePrefix = "backbone.";

    /// <summary>The checkpoint section holding the method's host counters (<see cref="Method.HostState"/>).</summary>
    public const string MethodStateSection = "method_state";

    /// <summary>The checkpoint section holding the optimiser's recipe (its name, peak rate, warm-up, length, decay).</summary>
    public const string ScheduleSection = "schedule";

    /// <summary>Floats of the data-parallel step summary: the three statistics and the stop flag.</summary>
    private const int StepSummaryLength = 4;

    private readonly IBackend _backend;
    private readonly Method _method;
    private readonly IImageDataset _train;
    private readonly IImageDataset? _test;
    private readonly ParameterArena _arena;
    private readonly Optimizer _optimizer;
    private readonly string _scheduleJson;
    private readonly ContrastiveLoader _loader;
    private readonly Tensor[] _groups;
    private readonly int[] _groupViews;
    private readonly int[] _batchIndices;
    private readonly int[] _batchLabels;
    private readonly FeatureExtractor _features;
    private readonly ICommunicator? _ranks;
    private readonly Tensor? _stepSummary;
    private long _step;
    private int _epoch;
    private int _batchInEpoch;

    /// <param name="communicator">The ranks of a data-parallel run; null (or a single rank) trains in this process alone.</param>
    public Trainer(IBackend backend, Method method, string arch, ResNetOptions backboneOptions, IImageDataset train, IImageDataset? test, TrainingOptions options, string datasetName, ICommunicator? communicator = null)
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
        _ranks = communicator is { Size: > 1 } ranks ? ranks : null;
        var rankCount = _ranks?.Size ?? 1;
        GlobalBatchSize = checked(options.BatchSize * rankCount);
        if (_ranks is not null && !method.SupportsDataParallel)
        {
            throw new ArgumentException($"{method.Name} does not train data-parallel yet (SimCLR, MoCo, SwAV and PiCO do): run it as one process", nameof(method));
        }
        if (train.Count < GlobalBatchSize)
        {
            throw new ArgumentException(
                rankCount == 1
                    ? $"{train.Name} has {train.Count} images, fewer than one batch of {options.BatchSize} (--batch)"
                    : $"{train.Name} has {train.Count} images, fewer than one global batch of {GlobalBatchSize} ({rankCount} ranks × --batch {options.BatchSize})",
                nameof(options));
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
        if (_ranks is not null)
        {
            if (options.SyncBatchNorm)
            {
                foreach (var norm in Backbone.BatchNorms.Concat(method.BatchNorms))
                {
                    norm.SyncRanks = _ranks;
                }
            }
            // The step's statistics [loss, positive cosine, top-1] and a stop flag, all-reduced in one call.
            _stepSummary = backend.Allocate(new TensorShape(StepSummaryLength), "step summary");
        }

        var loaderOptions = new LoaderOptions { BatchSize = options.BatchSize, Seed = options.Seed, Workers = options.Workers, Normalization = stats, Ranks = rankCount, Rank = _ranks?.Rank ?? 0 };
        _loader = new ContrastiveLoader(train, preset, loaderOptions, backend);
        (_groups, _groupViews) = AllocateGroups(backend, _loader, preset);
        _batchIndices = new int[options.BatchSize];
        _batchLabels = new int[options.BatchSize];
        StepsPerEpoch = _loader.BatchesPerEpoch;
        TotalSteps = (long)StepsPerEpoch * options.Epochs;
        method.Prepare(new MethodContext(backend, Backbone, preset, options.BatchSize, train.Shape.Channels, options.Seed, StepsPerEpoch, TotalSteps, train.Count, train, _ranks));
        if (_ranks is not null)
        {
            // Every rank starts from rank 0's values, whatever its initialisation did; the method's buffers (queues)
            // exist once it is prepared.
            _ranks.Broadcast(_arena.Values, root: 0);
            method.CopyHostTablesToStateTensors();
            foreach (var (_, tensor) in method.StateTensors)
            {
                _ranks.Broadcast(tensor, root: 0);
            }
            // A method that keeps tables on the host (PiCO) reads them back from the broadcast tensors, as after a resume.
            method.RestoreHostState(method.HostState);
        }
        var peak = options.LearningRate ?? method.BaseLearningRate(options.Optimizer) * GlobalBatchSize / 256f;
        var warmupEpochs = options.WarmupEpochs ?? Math.Min(10, options.Epochs / 10.0);
        var warmup = Math.Min(TotalSteps, (long)Math.Round(warmupEpochs * StepsPerEpoch));
        WeightDecay = options.WeightDecay ?? method.DefaultWeightDecay(options.Optimizer);
        _optimizer = CreateOptimizer(options, _arena, peak, WeightDecay);
        _optimizer.Schedule = new LearningRateSchedule(peak, TotalSteps, warmup);
        _scheduleJson = string.Create(
            CultureInfo.InvariantCulture,
            $"{{\"optimizer\":\"{options.Optimizer}\",\"peak_lr\":{peak:R},\"warmup_steps\":{warmup},\"total_steps\":{TotalSteps},\"weight_decay\":{WeightDecay:R},\"momentum\":{options.Momentum:R}}}");
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
            BatchSize = GlobalBatchSize,
            Epochs = options.Epochs,
            Seed = options.Seed,
        };
        Description = $"{method.Name} on {train.Name} ({train.Count} images, {preset.Views[0].Size}px, {preset.Name} views), {arch} ×{backboneOptions.WidthMultiplier.ToString(CultureInfo.InvariantCulture)} " +
            $"{Spec.Stem} stem ({Backbone.FeatureDim}-d features, {_arena.Views.Where(v => v.IsTrainable).Sum(v => v.Length):N0} parameters), batch {GlobalBatchSize}{RanksDescription(options)}, {options.Optimizer} lr {peak.ToString("G4", CultureInfo.InvariantCulture)} " +
            $"(warm-up {warmup} steps, cosine), wd {WeightDecay.ToString(CultureInfo.InvariantCulture)}, {options.Epochs} epochs × {StepsPerEpoch} steps on {backend.Name}";
    }

    public TrainingOptions Options { get; }

    /// <summary>Images per optimiser step over every rank: <see cref="TrainingOptions.BatchSize"/> × ranks.</summary>
    public int GlobalBatchSize { get; }

    /// <summary>Whether this process writes the run's files and reports (rank 0, or the only process).</summary>
    public bool IsRoot => _ranks is null || _ranks.Rank == 0;

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
        // The method's options (temperature, queue, momentum, head widths...) and the optimiser's are the recipe too.
        if (saved.Sections.TryGetValue("method", out var methodOptions) && JsonFields.Differences(_method.DescribeOptions(), methodOptions) is { Count: > 0 } methodDifferences)
        {
            throw new CheckpointException(path, null, $"the checkpoint is from another {_method.Name} recipe: {string.Join("; ", methodDifferences)} (resume with the original run's options)");
        }
        if (saved.Sections.TryGetValue(ScheduleSection, out var schedule) && JsonFields.Differences(_scheduleJson, schedule) is { Count: > 0 } scheduleDifferences)
        {
            throw new CheckpointException(path, null, $"the checkpoint is from another optimiser recipe: {string.Join("; ", scheduleDifferences)} (resume with the original run's --optimizer, --lr, --wd and --warmup-epochs)");
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
        using var metrics = IsRoot && Options.OutputDirectory is { } dir ? new MetricsLog(dir, _step) : null;
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
                var statistics = _method.TrainingStep(groups);
                var stopping = false;
                ContrastiveStats stats;
                if (_ranks is null)
                {
                    stats = ContrastiveStats.Read(_backend, statistics);
                }
                else
                {
                    // One all-reduce over the whole gradient arena. Buckets overlapped with the backward pay off where
                    // the reduction runs beside the compute (NCCL on its own stream); CPU ranks compute and reduce on
                    // the same cores, so there is nothing to overlap and no gain to measure.
                    _ranks.AllReduceMean(_arena.Gradients);
                    (stats, stopping) = GlobalSummary(statistics, cancel.IsCancellationRequested);
                }
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
                var step = new StepMetrics(_step, _epoch, _batchInEpoch, stats.Loss, learningRate, stats.PositiveSimilarity, stats.Top1Accuracy, Throughput(window, now - last, batch.Count * (_ranks?.Size ?? 1)));
                last = now;
                _step++;
                _batchInEpoch++;
                metrics?.Write(step);
                observer?.StepCompleted(step);
                if (_ranks is null ? cancel.IsCancellationRequested : stopping)
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
            // The ranks wait here for rank 0's evaluation, and agree whether to stop.
            var stop = _ranks is null ? cancel.IsCancellationRequested : GlobalSummary(null, cancel.IsCancellationRequested).Stop;
            var epochMetrics = new EpochMetrics(_epoch - 1, _step, lossSum / Math.Max(1, _step - epochStartStep), knn, seconds, (_step - epochStartStep) * (double)GlobalBatchSize / Math.Max(seconds, 1e-9), classifier);
            metrics?.Write(epochMetrics);
            observer?.EpochCompleted(epochMetrics);
            if (Due(Options.CheckpointEveryEpochs, lastEpoch) || stop)
            {
                lastCheckpoint = SaveCheckpoint(observer) ?? lastCheckpoint;
            }
            if (stop && !lastEpoch)
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

    /// <summary>Writes the training checkpoint (atomically) and returns its path; null without an output directory, or on a rank other than 0.</summary>
    public string? SaveCheckpoint(ITrainingObserver? observer = null)
    {
        if (CheckpointPath is not { } path || !IsRoot)
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
                [ScheduleSection] = _scheduleJson,
                [MethodStateSection] = JsonSerializer.Serialize(new Dictionary<string, long>(_method.HostState), TrainingJson.Default.DictionaryStringInt64),
            },
        };
        _method.CopyHostTablesToStateTensors();
        TrainingCheckpoint.Save(path, _arena, state, SpecMetadata(), _method.StateTensors);
        observer?.Message($"checkpoint {path} (step {_step}, epoch {_epoch}{(_batchInEpoch > 0 ? $" + {_batchInEpoch} batches" : "")})");
        return path;
    }

    /// <summary>The backbone alone under torchvision's names ("conv1.weight", "layer1.0.bn1.running_mean", ...); rank 0 only.</summary>
    public string? ExportEncoder(ITrainingObserver? observer = null)
    {
        if (Options.OutputDirectory is not { } dir || !IsRoot)
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
        _stepSummary?.Dispose();
    }

    /// <summary>
    /// Data-parallel: the mean over ranks of this step's <paramref name="statistics"/> (none between epochs) and
    /// whether any rank was asked to stop, in one all-reduce, so every rank logs the same loss and stops at the same step.
    /// </summary>
    private (ContrastiveStats Stats, bool Stop) GlobalSummary(Tensor? statistics, bool stopHere)
    {
        var summary = _stepSummary!;
        var statisticsView = summary.View(0, new TensorShape(StepSummaryLength - 1));
        if (statistics is null)
        {
            _backend.Fill(statisticsView, 0f);
        }
        else
        {
            _backend.Copy(statistics, statisticsView);
        }
        _backend.Fill(summary.View(StepSummaryLength - 1, new TensorShape(1)), stopHere ? 1f : 0f);
        _ranks!.AllReduce(summary);
        Span<float> values = stackalloc float[StepSummaryLength];
        _backend.CopyToHost(summary, values);
        var ranks = (float)_ranks.Size;
        return (new ContrastiveStats(values[0] / ranks, values[1] / ranks, values[2] / ranks), values[3] > 0f);
    }

    private string RanksDescription(TrainingOptions options) => _ranks is null
        ? ""
        : $" ({_ranks.Size} ranks × {options.BatchSize}{(options.SyncBatchNorm ? ", SyncBN" : "")})";

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
        if (!IsRoot)
        {
            return (null, null);
        }
        var queries = _features.Extract(_test, cancel: cancel);
        return (knnDue ? EvaluateKnn(observer, cancel, queries) : null, classifierDue ? EvaluateClassifier(observer, cancel, queries) : null);
    }

    private TrainingResult Finish(Stopwatch clock, long startStep, bool interrupted, Accuracy? knn, Accuracy? classifier, string? checkpoint, string? encoder)
    {
        var seconds = clock.Elapsed.TotalSeconds;
        return new TrainingResult(_epoch, _step, interrupted, knn, seconds, (_step - startStep) * (double)GlobalBatchSize / Math.Max(seconds, 1e-9), checkpoint, encoder, classifier);
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
