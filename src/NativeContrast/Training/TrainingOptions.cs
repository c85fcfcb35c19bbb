namespace NativeContrast.Training;

/// <summary>
/// The trainer's recipe: epochs, batch, optimiser and schedule, evaluation and checkpoint cadence. The learning rate
/// follows the method's recipe unless set: base × batch / 256 (SimCLR's linear scaling), with a linear warm-up then a
/// cosine decay to 0; weight decay skips biases and BatchNorm parameters.
/// </summary>
public sealed record TrainingOptions
{
    public int Epochs { get; init; } = 100;

    public int BatchSize { get; init; } = 256;

    /// <summary>
    /// "lars" (SimCLR's form: trust η‖w‖ / ‖g + wd·w‖, η 0.001), "lars-solo" (solo-learn's form and CIFAR recipe:
    /// η 0.02, clip_lr), "sgd" or "adamw".
    /// </summary>
    public string Optimizer { get; init; } = "lars";

    public static IReadOnlyList<string> Optimizers { get; } = ["lars", "lars-solo", "sgd", "adamw"];

    /// <summary>The peak learning rate; null: the method's base rate × batch / 256.</summary>
    public float? LearningRate { get; init; }

    /// <summary>Weight decay (not on biases and BatchNorm parameters); null: the method's recipe for the optimiser (<see cref="Methods.Method.DefaultWeightDecay"/>).</summary>
    public float? WeightDecay { get; init; }

    public float Momentum { get; init; } = 0.9f;

    /// <summary>Epochs of linear warm-up; null: 10 (SimCLR's), at most a tenth of the run.</summary>
    public double? WarmupEpochs { get; init; }

    /// <summary>The smallest area fraction of the large random crops, instead of the method's preset (0.08 for SimCLR); null keeps the preset's.</summary>
    public float? CropScaleMin { get; init; }

    /// <summary>Seeds the initialisation, the shuffles and every augmentation.</summary>
    public ulong Seed { get; init; }

    /// <summary>The seed the data set was made with (the built-in set's rendering), when it is not <see cref="Seed"/>; recorded in the run description.</summary>
    public ulong? DataSeed { get; init; }

    /// <summary>Train on a class-balanced labelled subset of the train split (<see cref="Data.LabelledSubset"/>); null: the whole split.</summary>
    public Data.LabelBudget? Labels { get; init; }

    /// <summary>Seeds the draw of <see cref="Labels"/>' subset, apart from <see cref="Seed"/> so that runs of several seeds share one subset.</summary>
    public ulong LabelsSeed { get; init; }

    /// <summary>Augmentation threads; by default every core but one.</summary>
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);

    /// <summary>Where checkpoints, metrics, the plot and the exported encoder go; null keeps nothing on disk.</summary>
    public string? OutputDirectory { get; init; }

    /// <summary>Run the kNN monitor every this many epochs (and after the last); 0 never.</summary>
    public int KnnEveryEpochs { get; init; } = 1;

    public int KnnNeighbours { get; init; } = 200;

    public float KnnTemperature { get; init; } = 0.1f;

    /// <summary>Score the method's classifier (when it has one) on the test split every this many epochs (and after the last); 0 only at the end.</summary>
    public int ClassifierEveryEpochs { get; init; } = 1;

    /// <summary>Training images in the kNN monitor's bank; null: all of them.</summary>
    public int? KnnBankImages { get; init; }

    /// <summary>Batch of the evaluation passes (any size: the last partial batch is padded).</summary>
    public int EvalBatchSize { get; init; } = 256;

    /// <summary>
    /// Data-parallel runs: every BatchNorm's training statistics over the global batch (SyncBN, as SimCLR trains), so
    /// that N ranks of batch B step as one process of batch N·B; false normalises each rank's batch alone (no
    /// all-reduce per layer). No effect in a single process.
    /// </summary>
    public bool SyncBatchNorm { get; init; } = true;

    /// <summary>Write the training checkpoint every this many epochs (and after the last); 0 only at the end.</summary>
    public int CheckpointEveryEpochs { get; init; } = 1;

    public void Validate()
    {
        static void Positive(long value, string name)
        {
            if (value <= 0)
            {
                throw new ArgumentOutOfRangeException(name, $"{name} is {value}; it must be positive");
            }
        }
        Positive(Epochs, "--epochs");
        Positive(BatchSize, "--batch");
        Positive(Workers, "workers");
        Positive(EvalBatchSize, "eval batch size");
        Positive(KnnNeighbours, "kNN k");
        if (BatchSize < 2)
        {
            throw new ArgumentOutOfRangeException("--batch", $"--batch is {BatchSize}; contrastive training needs at least 2 images per batch");
        }
        if (!Optimizers.Contains(Optimizer))
        {
            throw new ArgumentException($"optimizer '{Optimizer}' is not one of {string.Join(", ", Optimizers)}", "--optimizer");
        }
        if (CropScaleMin is { } crop && !(crop > 0f && crop <= 1f))
        {
            throw new ArgumentOutOfRangeException("--crop-scale", $"--crop-scale is {crop}; it must be in (0, 1]");
        }
        if (LearningRate is { } lr && (!(lr > 0) || !float.IsFinite(lr)))
        {
            throw new ArgumentOutOfRangeException("--lr", $"--lr is {lr}; it must be finite and positive");
        }
        if (WeightDecay is { } wd && !(wd >= 0) || !(KnnTemperature > 0) || WarmupEpochs is < 0 || KnnEveryEpochs < 0 || ClassifierEveryEpochs < 0 || CheckpointEveryEpochs < 0 || KnnBankImages is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(TrainingOptions), "weight decay, warm-up and cadences must be >= 0, the kNN temperature and bank size > 0");
        }
    }

    /// <summary>Optimiser state slots per parameter: one momentum for SGD and LARS, two moments for AdamW.</summary>
    public int OptimizerStateSlots => Optimizer == "adamw" ? 2 : 1;
}
