namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Globalization;
using NativeContrast.Data;
using NativeContrast.Methods;
using NativeContrast.Training;
using Spectre.Console;

/// <summary>
/// `nativecontrast finetune`: SimCLR v2's semi-supervised fine-tuning. The self-supervised run's backbone and the first
/// --from-head-layer layers of its projection head (SimCLR v2: 1 of its 3), a new linear classifier (zero at the start),
/// all trained with cross-entropy on a class-balanced --labels subset of the train split; the test top-1 of the
/// classifier after every epoch, checkpoints (--resume continues bit for bit on the CPU) and the encoder export.
/// The recipe for small images on a CPU: momentum SGD 0.9 at 0.1 × batch / 256 with a cosine decay, no warm-up and no
/// weight decay (SimCLR's fine-tuning), batch 64, 30 epochs (SimCLR v2 fine-tunes 30 epochs on 10% of the labels, 60 on 1%).
/// </summary>
public static class FinetuneCommand
{
    public static class Defaults
    {
        public const string Labels = "10%";
        public const int Epochs = 30;
        public const int Batch = 64;
    }

    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "The self-supervised run to fine-tune: its checkpoint, or its output directory.", Required = true };
        var labels = new Option<string>("--labels") { Description = "The labelled subset: a percentage of the train split (1%, 10%) or images per class (100), class-balanced.", DefaultValueFactory = _ => Defaults.Labels };
        var labelsSeed = new Option<ulong>("--labels-seed") { Description = "Seed of the subset's draw (the same seed gives the same images on any machine).", DefaultValueFactory = _ => 0 };
        var fromHeadLayer = new Option<int?>("--from-head-layer") { Description = "Fine-tune from this layer of the projection head: 0 is the backbone's output, 1 the first layer's (SimCLR v2's choice; the default when there is a head)." };
        var common = new SupervisedRunOptions(Defaults.Epochs, Defaults.Batch, "finetune", warmupDefault: 0, knnEvery: 1);
        var command = new Command("finetune", "Fine-tune a self-supervised run on a labelled subset (SimCLR v2): backbone + head layers + a new linear classifier.")
        {
            checkpoint, labels, labelsSeed, fromHeadLayer,
        };
        common.AddTo(command);
        command.SetAction(parse => Run(
            parse.GetRequiredValue(checkpoint),
            parse.GetRequiredValue(labels),
            parse.GetRequiredValue(labelsSeed),
            parse.GetValue(fromHeadLayer),
            common.Read(parse),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error));
        return command;
    }

    private static int Run(string checkpoint, string labels, ulong labelsSeed, int? fromHeadLayer, SupervisedRunOptions.Values run, TextWriter output, TextWriter error)
    {
        if (DeviceOption.Open(run.Device, error) is not { } choice)
        {
            return Program.Failure;
        }
        var console = CliConsole.For(output);
        using var backend = choice.Backend;
        backend.GemmPrecision = TrainCommand.Precision(run.Precision);
        console.WriteLine($"backend    {choice.Reason}");
        using var session = new TrainingSession();
        try
        {
            var budget = LabelBudget.Parse(labels);
            var pretrained = PretrainedRun.Read(checkpoint);
            var spec = pretrained.Spec;
            var layers = fromHeadLayer ?? (pretrained.Projector is null ? 0 : 1);
            var head = pretrained.HeadLayers(layers);
            console.WriteLine($"pretrained {pretrained.Path}");
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"           {spec.Method}, {spec.Arch} x{spec.Width} {spec.Stem} stem on {spec.Dataset}; fine-tuning from head layer {layers}{(pretrained.Projector is { } p ? $" of {p.Layers}" : "")}"));
            var dataOptions = spec.DatasetOptions(spec.Dataset, run.DataDir) with { Log = line => console.WriteLine(line) };
            using var train = DatasetCatalog.Open(spec.Dataset, DatasetSplit.Train, dataOptions);
            using var test = TrainCommand.OpenTest(spec.Dataset, dataOptions);
            if (train.Shape.Channels != spec.InputChannels)
            {
                throw new ArgumentException($"{train.Name} has {train.Shape.Channels}-channel images; the encoder in {pretrained.Path} reads {spec.InputChannels}");
            }
            var smallImages = Math.Min(train.Shape.Height, train.Shape.Width) <= 64;
            var method = new Supervised(new SupervisedOptions
            {
                Classes = TrainingSession.Classes(train),
                Head = head,
                Pretrained = pretrained.Path,
                Augmentations = run.Views ?? (smallImages ? "supervised-cifar" : "supervised"),
            });
            var options = run.TrainingOptions(method, smallImages) with
            {
                DataSeed = spec.DataSeed ?? spec.Seed,
                Labels = budget,
                LabelsSeed = labelsSeed,
            };
            using var trainer = new Trainer(backend, method, spec.Arch, spec.BackboneOptions, train, test, options, spec.Dataset);
            if (run.Resume is { } resume)
            {
                trainer.Resume(TrainedBackbone.Resolve(resume));
            }
            else
            {
                pretrained.Load(trainer.Arena);
            }
            if (session.Run(console, output, trainer, options.OutputDirectory!, $"finetune {spec.Arch} x{spec.Width.ToString(CultureInfo.InvariantCulture)} on {trainer.Train.Name}") is not (var result, var plot))
            {
                return TrainCommand.Interrupted;
            }
            var table = TrainingSession.Summary(trainer, result);
            table.AddRow("pretrained", Markup.Escape($"{pretrained.Path} ({spec.Method}), head layers {layers}"));
            if (result.Classifier is { } accuracy)
            {
                table.AddRow("test top-1 (fine-tuned)", TrainingSession.Percent(accuracy));
            }
            if (result.Knn is { } knn)
            {
                table.AddRow("kNN top-1 (encoder, labelled bank)", TrainingSession.Percent(knn));
            }
            TrainingSession.AddFiles(table, trainer, result, plot);
            console.Write(table);
            return Program.Success;
        }
        catch (Exception e) when (Program.IsExplained(e))
        {
            return Program.Explain(error, e);
        }
    }
}
