namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using NativeContrast.Methods;
using NativeContrast.Training;

/// <summary>The options finetune and distill share (those of train that a labelled run keeps), with each command's defaults.</summary>
internal sealed class SupervisedRunOptions
{
    private readonly Option<int> _epochs;
    private readonly Option<int> _batch;
    private readonly Option<float?> _lr;
    private readonly Option<string> _optimizer;
    private readonly Option<float?> _weightDecay;
    private readonly Option<double?> _warmup;
    private readonly Option<string?> _views;
    private readonly Option<string> _device = DeviceOption.Create();
    private readonly Option<string> _precision;
    private readonly Option<string?> _out;
    private readonly Option<ulong> _seed;
    private readonly Option<string?> _resume;
    private readonly Option<int> _knnEvery;
    private readonly Option<int?> _knnBank;
    private readonly Option<int> _evalEvery;
    private readonly Option<int> _workers;
    private readonly Option<string?> _dataDir;
    private readonly string _name;
    private readonly double? _warmupDefault;

    /// <param name="warmupDefault">Epochs of warm-up unless --warmup-epochs says otherwise; null: the trainer's (a tenth of the run, at most 10).</param>
    public SupervisedRunOptions(int epochs, int batch, string name, double? warmupDefault, int knnEvery)
    {
        _name = name;
        _warmupDefault = warmupDefault;
        _epochs = new Option<int>("--epochs") { Description = "Epochs to train.", DefaultValueFactory = _ => epochs };
        _batch = new Option<int>("--batch") { Description = "Images per batch.", DefaultValueFactory = _ => batch };
        _lr = new Option<float?>("--lr") { Description = "Peak learning rate; by default the recipe's base rate x batch / 256 (momentum SGD: 0.1 fine-tuning, 0.2 from scratch)." };
        _optimizer = new Option<string>("--optimizer") { Description = "Optimiser: sgd (momentum 0.9; auto), lars, lars-solo or adamw.", DefaultValueFactory = _ => "auto" };
        _optimizer.AcceptOnlyFromAmong(["auto", .. Training.TrainingOptions.Optimizers]);
        _weightDecay = new Option<float?>("--wd") { Description = "Weight decay (not on biases and BatchNorm parameters); by default none for fine-tuning, 5e-4 with SGD from scratch." };
        _warmup = new Option<double?>("--warmup-epochs") { Description = warmupDefault is { } w ? $"Epochs of linear warm-up (default {w})." : "Epochs of linear warm-up; by default a tenth of the run, at most 10." };
        _views = new Option<string?>("--views") { Description = "Augmentation preset; by default supervised (random resized crop + flip), or supervised-cifar for images of 64 px or less." };
        _views.AcceptOnlyFromAmong("supervised", "supervised-cifar");
        _precision = new Option<string>("--precision") { Description = "Tensor-core precision of the GEMMs on a GPU (the CPU always computes fp32).", DefaultValueFactory = _ => "tf32" };
        _precision.AcceptOnlyFromAmong("fp32", "tf32", "bf16");
        _out = new Option<string?>("--out") { Description = $"Output directory: checkpoint, metrics.jsonl, training.png, encoder.safetensors (default runs/{name})." };
        _seed = new Option<ulong>("--seed") { Description = "Seed of the initialisation, shuffles and augmentations.", DefaultValueFactory = _ => 0 };
        _resume = new Option<string?>("--resume") { Description = "Continue from a checkpoint of this command (or a run directory holding one), with the same options." };
        _knnEvery = new Option<int>("--knn-every") { Description = "Run the kNN monitor every N epochs (0: only after the last).", DefaultValueFactory = _ => knnEvery };
        _knnBank = new Option<int?>("--knn-bank") { Description = "Training images in the kNN bank; by default all." };
        _evalEvery = new Option<int>("--eval-every") { Description = "Score the classifier on the test split every N epochs (0: only after the last).", DefaultValueFactory = _ => 1 };
        _workers = new Option<int>("--workers") { Description = "Augmentation threads.", DefaultValueFactory = _ => Math.Max(1, Environment.ProcessorCount - 1) };
        _dataDir = new Option<string?>("--data-dir") { Description = "Folder holding the data set's files (the data set is the one the checkpoint was trained on)." };
    }

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { _epochs, _batch, _lr, _optimizer, _weightDecay, _warmup, _views, _device, _precision, _out, _seed, _resume, _knnEvery, _knnBank, _evalEvery, _workers, _dataDir })
        {
            command.Options.Add(option);
        }
    }

    public Values Read(ParseResult parse) => new(
        parse.GetRequiredValue(_epochs), parse.GetRequiredValue(_batch), parse.GetValue(_lr), parse.GetRequiredValue(_optimizer), parse.GetValue(_weightDecay),
        parse.GetValue(_warmup) ?? _warmupDefault, parse.GetValue(_views), parse.GetRequiredValue(_device), parse.GetRequiredValue(_precision),
        parse.GetValue(_out) ?? Path.Combine("runs", _name), parse.GetRequiredValue(_seed), parse.GetValue(_resume), parse.GetRequiredValue(_knnEvery),
        parse.GetValue(_knnBank), parse.GetRequiredValue(_evalEvery), parse.GetRequiredValue(_workers), parse.GetValue(_dataDir));

    public sealed record Values(
        int Epochs, int Batch, float? Lr, string Optimizer, float? WeightDecay, double? WarmupEpochs, string? Views, string Device, string Precision,
        string Out, ulong Seed, string? Resume, int KnnEvery, int? KnnBank, int EvalEvery, int Workers, string? DataDir)
    {
        /// <summary>The trainer's options for <paramref name="method"/> ("auto" is the method's optimiser).</summary>
        public TrainingOptions TrainingOptions(Method method, bool smallImages) => new()
        {
            Epochs = Epochs,
            BatchSize = Batch,
            Optimizer = Optimizer == "auto" ? method.DefaultOptimizer(smallImages) : Optimizer,
            LearningRate = Lr,
            WeightDecay = WeightDecay,
            WarmupEpochs = WarmupEpochs,
            Seed = Seed,
            Workers = Workers,
            OutputDirectory = Out,
            KnnEveryEpochs = KnnEvery,
            KnnBankImages = KnnBank,
            ClassifierEveryEpochs = EvalEvery,
        };
    }
}
