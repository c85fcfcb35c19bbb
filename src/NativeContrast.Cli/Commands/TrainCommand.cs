namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Distributed;
using NativeContrast.Eval;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Training;
using Spectre.Console;

/// <summary>
/// `nativecontrast train`: a self-supervised run (or a supervised one, --method supervised, optionally on a
/// class-balanced --labels subset) with a progress bar, metrics (metrics.jsonl), a plot (training.png), a checkpoint
/// every epoch, the encoder exported with torchvision's names, and a summary that puts the kNN accuracy beside the
/// raw-pixel baseline (and a classifier's test accuracy when the method has one). The defaults train on the built-in set in a few minutes
/// on a CPU. Ctrl+C writes a checkpoint of the exact position; --resume continues from it.
/// Under mpirun (or srun) the run is data-parallel: --batch images per rank, rank 0 alone prints and writes files, and
/// a rank that fails ends every rank with one line naming it (the last checkpoint stays as it was written).
/// </summary>
public static class TrainCommand
{
    public const int Interrupted = 130;

    public static Command Create()
    {
        var method = new Option<string>("--method") { Description = "Training method: self-supervised, or supervised (cross-entropy on the labels; the baseline for fine-tuning).", DefaultValueFactory = _ => "simclr" };
        method.AcceptOnlyFromAmong([.. MethodCatalog.Names]);
        var backbone = new Option<string>("--backbone") { Description = "ResNet architecture.", DefaultValueFactory = _ => Defaults.Backbone };
        backbone.AcceptOnlyFromAmong([.. ResNetOptions.Names]);
        var width = new Option<double>("--width") { Description = "Width multiplier of every ResNet stage (SimCLR v2's wider ResNets: 2, 3).", DefaultValueFactory = _ => Defaults.Width };
        var stem = new Option<string>("--stem") { Description = "ResNet stem: cifar (3x3, no pool) or imagenet (7x7 + pool); auto picks cifar for images of 64 px or less.", DefaultValueFactory = _ => "auto" };
        stem.AcceptOnlyFromAmong("auto", "cifar", "imagenet");
        var dataset = new Option<string>("--dataset") { Description = "Data set to train on.", DefaultValueFactory = _ => "builtin" };
        dataset.AcceptOnlyFromAmong([.. DatasetCatalog.Names]);
        var dataDir = new Option<string?>("--data-dir") { Description = "Folder holding the data set's files." };
        var imageSize = new Option<int?>("--image-size") { Description = $"Side of the built-in images (default {Defaults.BuiltinImageSize}) or of a folder's cached images (default 96)." };
        var trainImages = new Option<int?>("--train-images") { Description = $"Images of the built-in set's train split (default {Defaults.BuiltinImages}; its test split has a quarter as many)." };
        var epochs = new Option<int>("--epochs") { Description = "Epochs to train.", DefaultValueFactory = _ => Defaults.Epochs };
        var batch = new Option<int>("--batch") { Description = "Images per batch (each gives two views).", DefaultValueFactory = _ => Defaults.Batch };
        var lr = new Option<float?>("--lr") { Description = "Peak learning rate; by default the method's base rate x batch / 256 (SimCLR: 0.3)." };
        var optimizer = new Option<string>("--optimizer")
        {
            Description = "Optimiser: lars (SimCLR's: eta 0.001, lr 0.3 x batch/256, wd 1e-6), lars-solo (solo-learn's CIFAR recipe: eta 0.02, clip_lr, lr 0.4 x batch/256, wd 1e-5), sgd, adamw; auto takes lars-solo for images of 64 px or less, else lars.",
            DefaultValueFactory = _ => "auto",
        };
        optimizer.AcceptOnlyFromAmong(["auto", .. TrainingOptions.Optimizers]);
        var weightDecay = new Option<float?>("--wd") { Description = "Weight decay (not on biases and BatchNorm parameters); by default the optimiser recipe's (1e-6 for lars, 1e-5 for lars-solo)." };
        var warmup = new Option<double?>("--warmup-epochs") { Description = "Epochs of linear warm-up; by default 10, at most a tenth of the run." };
        var views = new Option<string?>("--views") { Description = "Augmentation preset; by default simclr, or simclr-cifar (colour strength 0.5, no blur) for images of 64 px or less." };
        views.AcceptOnlyFromAmong([.. AugmentationPresets.Names]);
        var temperature = new Option<float?>("--temperature") { Description = "Softmax temperature tau; by default the method's (SimCLR: 0.5, or solo-learn's 0.2 for images of 64 px or less)." };
        var device = DeviceOption.Create();
        var precision = new Option<string>("--precision") { Description = "Tensor-core precision of the GEMMs and fused losses on a GPU (the CPU always computes fp32).", DefaultValueFactory = _ => "tf32" };
        precision.AcceptOnlyFromAmong("fp32", "tf32", "bf16");
        var output = new Option<string?>("--out") { Description = "Output directory: checkpoint, metrics.jsonl, training.png, encoder.safetensors (default runs/METHOD)." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the initialisation, shuffles and augmentations.", DefaultValueFactory = _ => 0 };
        var resume = new Option<string?>("--resume") { Description = "Continue from a training checkpoint (or a run directory holding one), with the same options." };
        var knnEvery = new Option<int>("--knn-every") { Description = "Run the kNN monitor every N epochs (0: only after the last).", DefaultValueFactory = _ => 1 };
        var knnBank = new Option<int?>("--knn-bank") { Description = "Training images in the kNN bank; by default all." };
        var workers = new Option<int>("--workers") { Description = "Augmentation threads.", DefaultValueFactory = _ => Math.Max(1, Environment.ProcessorCount - 1) };
        var projectorHidden = new Option<int?>("--proj-hidden") { Description = "Hidden width of the projection head (simclr, moco, swav, margin; solo-learn's proj_hidden_dim, 2048 in its CIFAR recipes); by default the backbone's feature width." };
        var queue = new Option<int?>("--queue") { Description = "MoCo: keys in the queue (default 65536, at most the data set's size). SimCLR: momentum keys queued as extra negatives (SimCLR v2's memory; default 0: none). SwAV: features in the queue used for the codes (default 0: none)." };
        var momentum = new Option<float?>("--momentum") { Description = "MoCo and SimCLR's memory: m of the key encoder's EMA (default 0.999, or 0.99 for images of 64 px or less)." };
        var momentumCosine = new Option<bool>("--momentum-cosine") { Description = "MoCo and SimCLR's memory: raise m to 1 by a cosine over the run (BYOL's schedule)." };
        var symmetric = new Option<bool>("--symmetric") { Description = "MoCo: both views as queries against the other's keys (solo-learn's mocov2plus)." };
        var shuffleBn = new Option<bool>("--shuffle-bn") { Description = "MoCo under mpirun: the key encoder runs on a shard of a permutation of the global key batch (MoCo's shuffle-BN), its batch norms per rank; use with --sync-bn false for MoCo's recipe." };
        var prototypes = new Option<int?>("--prototypes") { Description = "SwAV: prototypes (default 3000)." };
        var sinkhornEpsilon = new Option<float?>("--sinkhorn-epsilon") { Description = "SwAV: epsilon, the entropic regularisation of the Sinkhorn codes (default 0.05; smaller gives sharper codes)." };
        var smallCrops = new Option<int?>("--small-crops") { Description = "SwAV: small crops besides the two large ones (default 6)." };
        var queueStart = new Option<int?>("--queue-start-epoch") { Description = "SwAV: the epoch from which the feature queue fills (default 0); it is used once full." };
        var freezePrototypes = new Option<double?>("--freeze-prototypes-epochs") { Description = "SwAV: epochs during which the prototypes stay frozen (default 1)." };
        var cropScale = new Option<float?>("--crop-scale") { Description = "Smallest area fraction of the large random crops (default: the views' recipe, 0.08 for SimCLR, 0.2 for MoCo, 0.14 for SwAV)." };
        var margin = new Option<float?>("--margin") { Description = "margin: distance beyond which negatives are not pushed (unit vectors; default 1)." };
        var partialRate = new Option<double?>("--partial-rate") { Description = "pico: q, the probability that a wrong class joins an image's candidate label set (default 0.1)." };
        var lossWeight = new Option<float?>("--loss-weight") { Description = "pico: lambda, the weight of the contrastive term (default 0.5)." };
        var prototypeStart = new Option<int?>("--prototype-start-epoch") { Description = "pico: the epoch from which labels are disambiguated by the prototypes (default 1); MoCo's loss before it." };
        var labels = new Option<string?>("--labels") { Description = "Train on a class-balanced labelled subset of the train split: a percentage (1%, 10%) or images per class (100)." };
        var labelsSeed = new Option<ulong>("--labels-seed") { Description = "Seed of the --labels subset's draw (the same seed gives the same images on any machine).", DefaultValueFactory = _ => 0 };
        var syncBn = new Option<bool>("--sync-bn") { Description = "Under mpirun: BatchNorm statistics over the global batch (SyncBN), so N ranks of --batch B train as one process of batch N x B; false normalises each rank's batch alone.", DefaultValueFactory = _ => true };
        var failRank = new Option<int?>("--fail-rank") { Description = "Make this rank fail after step --fail-step (tests of the abort path).", Hidden = true };
        var failStep = new Option<long>("--fail-step") { Description = "The step after which --fail-rank fails.", DefaultValueFactory = _ => 0, Hidden = true };
        var failMode = new Option<string>("--fail-mode") { Description = "How --fail-rank fails: throw (it aborts the job) or kill (SIGKILL, no abort).", DefaultValueFactory = _ => "throw", Hidden = true };
        failMode.AcceptOnlyFromAmong("throw", "kill");
        var command = new Command("train", "Train an encoder without labels (SimCLR, MoCo, SwAV), with partial labels (PiCO) or with labels (supervised), with a kNN monitor, checkpoints and metrics.")
        {
            method, backbone, width, stem, dataset, dataDir, imageSize, trainImages, epochs, batch, lr, optimizer, weightDecay, warmup, views, temperature,
            device, precision, output, seed, resume, knnEvery, knnBank, workers,
            projectorHidden, queue, momentum, momentumCosine, symmetric, shuffleBn, prototypes, sinkhornEpsilon, smallCrops, queueStart, freezePrototypes, margin, cropScale, labels, labelsSeed,
            partialRate, lossWeight, prototypeStart, syncBn, failRank, failStep, failMode,
        };
        command.SetAction(parse => Run(
            new Request(
                parse.GetRequiredValue(method), parse.GetRequiredValue(backbone), parse.GetRequiredValue(width), parse.GetRequiredValue(stem),
                parse.GetRequiredValue(dataset), parse.GetValue(dataDir), parse.GetValue(imageSize), parse.GetValue(trainImages),
                parse.GetRequiredValue(epochs), parse.GetRequiredValue(batch), parse.GetValue(lr), parse.GetRequiredValue(optimizer),
                parse.GetValue(weightDecay), parse.GetValue(warmup), parse.GetValue(views), parse.GetValue(temperature), parse.GetRequiredValue(device),
                parse.GetRequiredValue(precision), parse.GetValue(output), parse.GetRequiredValue(seed), parse.GetValue(resume),
                parse.GetRequiredValue(knnEvery), parse.GetValue(knnBank), parse.GetRequiredValue(workers), parse.GetValue(cropScale),
                parse.GetValue(labels), parse.GetRequiredValue(labelsSeed), parse.GetRequiredValue(syncBn),
                parse.GetValue(failRank) is { } rank ? new InjectedFailure(rank, parse.GetRequiredValue(failStep), parse.GetRequiredValue(failMode) == "kill") : null,
                new MethodSettings
                {
                    Temperature = parse.GetValue(temperature),
                    Augmentations = parse.GetValue(views),
                    HiddenDim = parse.GetValue(projectorHidden),
                    QueueLength = parse.GetValue(queue),
                    Momentum = parse.GetValue(momentum),
                    MomentumCosine = parse.GetValue(momentumCosine),
                    Symmetric = parse.GetValue(symmetric),
                    ShuffleBn = parse.GetValue(shuffleBn),
                    Prototypes = parse.GetValue(prototypes),
                    SinkhornEpsilon = parse.GetValue(sinkhornEpsilon),
                    SmallCrops = parse.GetValue(smallCrops),
                    QueueStartEpoch = parse.GetValue(queueStart),
                    FreezePrototypesEpochs = parse.GetValue(freezePrototypes),
                    Margin = parse.GetValue(margin),
                    PartialRate = parse.GetValue(partialRate),
                    LossWeight = parse.GetValue(lossWeight),
                    PrototypeStartEpoch = parse.GetValue(prototypeStart),
                }),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error));
        return command;
    }

    /// <summary>The default run: the built-in set, sized to finish in a few minutes on a 2-core CPU and to beat raw pixels.</summary>
    public static class Defaults
    {
        public const string Backbone = "resnet10";
        public const double Width = 0.25;
        public const int BuiltinImageSize = 32;
        public const int BuiltinImages = 20_000;
        public const int Epochs = 5;
        public const int Batch = 128;
    }

    private sealed record Request(
        string Method, string Backbone, double Width, string Stem, string Dataset, string? DataDir, int? ImageSize, int? TrainImages,
        int Epochs, int Batch, float? Lr, string Optimizer, float? WeightDecay, double? WarmupEpochs, string? Views, float? Temperature, string Device,
        string Precision, string? Out, ulong Seed, string? Resume, int KnnEvery, int? KnnBank, int Workers, float? CropScale, string? Labels, ulong LabelsSeed,
        bool SyncBatchNorm, InjectedFailure? Failure, MethodSettings Settings);

    /// <summary>
    /// A rank that throws, or kills itself, once it has completed a step (hidden options for the tests of a failing rank
    /// and of a killed one).
    /// </summary>
    private sealed record InjectedFailure(int Rank, long Step, bool Kill);

    private static int Run(Request request, TextWriter output, TextWriter error)
    {
        if (!(request.Width > 0) || request.ImageSize is < 8 || request.TrainImages is < 2 || request.Temperature is <= 0 || request.Workers < 1)
        {
            error.WriteLine("error: --width and --temperature must be > 0, --image-size at least 8, --train-images at least 2 and --workers at least 1");
            return Program.BadArguments;
        }
        var launch = LaunchEnvironment.Read();
        if (DeviceOption.Open(request.Device, launch, error) is not { } choice)
        {
            return Program.Failure;
        }
        using var backend = choice.Backend;
        backend.GemmPrecision = Precision(request.Precision);
        var ranks = Communicators.Create(backend, launch);
        using var communicator = ranks.Communicator;
        // Rank 0 speaks for the job: the other ranks' lines would repeat (or interleave with) its own.
        var console = CliConsole.For(communicator.Rank == 0 ? output : TextWriter.Null);
        console.WriteLine($"backend    {choice.Reason}");
        if (communicator.Size > 1)
        {
            console.WriteLine($"ranks      {ranks.Reason}");
        }
        using var session = new TrainingSession();
        try
        {
            var dataOptions = new DatasetOptions
            {
                DataDirectory = request.DataDir,
                ImageSize = request.ImageSize ?? (request.Dataset == "builtin" ? Defaults.BuiltinImageSize : null),
                BuiltinCount = request.TrainImages ?? Defaults.BuiltinImages,
                Seed = request.Seed,
                Log = line => console.WriteLine(line),
            };
            using var train = DatasetCatalog.Open(request.Dataset, DatasetSplit.Train, dataOptions);
            using var test = OpenTest(request.Dataset, dataOptions);
            var smallImages = Math.Min(train.Shape.Height, train.Shape.Width) <= 64;
            var backboneOptions = ResNetOptions.FromName(request.Backbone) with
            {
                WidthMultiplier = request.Width,
                Stem = request.Stem == "imagenet" || (request.Stem == "auto" && !smallImages) ? ResNetStem.ImageNet : ResNetStem.Cifar,
            };
            var method = MethodCatalog.Create(request.Method, request.Settings with { SmallImages = smallImages, Classes = train.HasLabels ? TrainingSession.Classes(train) : null });
            var optimizerName = request.Optimizer == "auto" ? method.DefaultOptimizer(smallImages) : request.Optimizer;
            var outputDirectory = request.Out ?? Path.Combine("runs", request.Method);
            var options = new TrainingOptions
            {
                Epochs = request.Epochs,
                BatchSize = request.Batch,
                Optimizer = optimizerName,
                LearningRate = request.Lr,
                WeightDecay = request.WeightDecay,
                WarmupEpochs = request.WarmupEpochs,
                Seed = request.Seed,
                Workers = request.Workers,
                OutputDirectory = outputDirectory,
                KnnEveryEpochs = request.KnnEvery,
                KnnBankImages = request.KnnBank,
                CropScaleMin = request.CropScale,
                Labels = request.Labels is { } budget ? LabelBudget.Parse(budget) : null,
                LabelsSeed = request.LabelsSeed,
                SyncBatchNorm = request.SyncBatchNorm,
            };
            using var trainer = new Trainer(backend, method, request.Backbone, backboneOptions, train, test, options, request.Dataset, communicator);
            if (request.Resume is { } resume)
            {
                trainer.Resume(TrainedBackbone.Resolve(resume));
            }
            var failure = request.Failure is { } injected && injected.Rank == communicator.Rank ? injected : null;
            var title = $"{trainer.Spec.Method} {request.Backbone} x{request.Width.ToString(CultureInfo.InvariantCulture)} on {request.Dataset}";
            if (session.Run(console, output, trainer, outputDirectory, title, failure is null ? null : reporter => new FailingObserver(reporter, failure)) is not (var result, var plot))
            {
                return Interrupted;
            }
            if (trainer.IsRoot)
            {
                Summarize(console, trainer, result, test, plot);
            }
            return Program.Success;
        }
        catch (Exception e) when (communicator.Size > 1 && e is not (CommunicatorAbortedException or OperationCanceledException))
        {
            // The other ranks would wait for this one in their next collective: end them all, naming this rank.
            communicator.Abort($"train: {e.Message}");
            throw; // not reached: the compiler does not read Abort's [DoesNotReturn]
        }
        catch (Exception e) when (Program.IsExplained(e))
        {
            return Program.Explain(error, e);
        }
    }

    /// <summary>Passes every event on, then throws (or kills this process) once the failure's step has completed.</summary>
    private sealed class FailingObserver(ITrainingObserver inner, InjectedFailure failure) : ITrainingObserver
    {
        public void Started(TrainingStart start) => inner.Started(start);

        public void StepCompleted(StepMetrics metrics)
        {
            inner.StepCompleted(metrics);
            if (metrics.Step < failure.Step)
            {
                return;
            }
            if (failure.Kill)
            {
                // SIGKILL, as the OOM killer or a lost node would: no abort line, no MPI_Abort, no finally blocks.
                using var self = Process.GetCurrentProcess();
                self.Kill();
                // The signal may land a moment after Kill returns: this rank must not take another step meanwhile.
                Thread.Sleep(Timeout.Infinite);
            }
            throw new InvalidOperationException($"injected failure after step {metrics.Step} (--fail-step {failure.Step})");
        }

        public void EpochCompleted(EpochMetrics metrics) => inner.EpochCompleted(metrics);

        public void Message(string line) => inner.Message(line);
    }

    internal static IImageDataset? OpenTest(string dataset, DatasetOptions options) =>
        dataset is "folder" or "stl10" && options.DataDirectory is null ? null : DatasetCatalog.Open(dataset, DatasetSplit.Test, options);

    internal static MatmulPrecision Precision(string name) => name switch
    {
        "fp32" => MatmulPrecision.Fp32,
        "bf16" => MatmulPrecision.Bf16,
        _ => MatmulPrecision.Tf32,
    };

    /// <summary>The end-of-run table: the run, the classifier's test accuracy, the kNN monitor, and the raw-pixel kNN on the same bank and test images.</summary>
    private static void Summarize(IAnsiConsole console, Trainer trainer, TrainingResult result, IImageDataset? test, string plot)
    {
        var table = TrainingSession.Summary(trainer, result);
        if (result.Classifier is { } classifier)
        {
            table.AddRow("test top-1 (classifier)", TrainingSession.Percent(classifier));
        }
        if (result.Knn is { } knn && test is not null)
        {
            var clock = Stopwatch.StartNew();
            var train = trainer.Train;
            var stats = train.Stats;
            var raw = new KnnClassifier(trainer.Options.KnnNeighbours, trainer.Options.KnnTemperature)
                .Evaluate(FeatureSet.FromPixels(train, stats, trainer.Options.KnnBankImages), FeatureSet.FromPixels(test, stats));
            table.AddRow("kNN top-1 (encoder)", string.Create(CultureInfo.InvariantCulture, $"{100 * knn.Top1:F2}%  (top-5 {100 * knn.Top5:F2}%)"));
            table.AddRow("kNN top-1 (raw pixels)", string.Create(CultureInfo.InvariantCulture, $"{100 * raw.Top1:F2}%  (top-5 {100 * raw.Top5:F2}%, {clock.Elapsed.TotalSeconds:F1} s)"));
            table.AddRow("encoder vs pixels", string.Create(CultureInfo.InvariantCulture, $"{100 * (knn.Top1 - raw.Top1):+0.00;-0.00} points"));
        }
        TrainingSession.AddFiles(table, trainer, result, plot);
        console.Write(table);
    }
}
