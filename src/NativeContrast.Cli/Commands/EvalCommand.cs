namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Eval;
using NativeContrast.Training;
using Spectre.Console;

/// <summary>
/// `nativecontrast eval knn | linear`: evaluates a trained backbone on frozen features of clean images (normalised with
/// the training split's statistics, as the checkpoint records them) and prints the raw-pixel baseline beside it.
/// </summary>
public static class EvalCommand
{
    public static Command Create() => new("eval", "Evaluate a trained encoder: weighted kNN or a linear probe on frozen features, beside raw pixels.")
    {
        Protocol("knn", "Weighted kNN (k, temperature) of the test images against the training images."),
        Protocol("linear", "A linear classifier trained on frozen training features, scored on the test images."),
    };

    private static Command Protocol(string name, string description)
    {
        var checkpoint = CheckpointOptions.Checkpoint();
        var dataset = CheckpointOptions.Dataset();
        var dataDir = new Option<string?>("--data-dir") { Description = "Folder holding the data set's files." };
        var device = DeviceOption.Create();
        var k = new Option<int>("--k") { Description = "Neighbours that vote (kNN).", DefaultValueFactory = _ => 200 };
        var temperature = new Option<float>("--temperature") { Description = "Vote weight exp(similarity / T) (kNN).", DefaultValueFactory = _ => 0.1f };
        var epochs = new Option<int>("--epochs") { Description = "Epochs of the linear probe.", DefaultValueFactory = _ => 100 };
        var command = new Command(name, description) { checkpoint, dataset, dataDir, device };
        if (name == "knn")
        {
            command.Options.Add(k);
            command.Options.Add(temperature);
        }
        else
        {
            command.Options.Add(epochs);
        }
        command.SetAction(parse => Run(
            name,
            parse.GetRequiredValue(checkpoint),
            parse.GetValue(dataset),
            parse.GetValue(dataDir),
            parse.GetRequiredValue(device),
            name == "knn" ? parse.GetRequiredValue(k) : 0,
            name == "knn" ? parse.GetRequiredValue(temperature) : 0,
            name == "linear" ? parse.GetRequiredValue(epochs) : 0,
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error));
        return command;
    }

    private static int Run(string protocol, string checkpoint, string? datasetName, string? dataDir, string device, int k, float temperature, int epochs, TextWriter output, TextWriter error)
    {
        if (protocol == "knn" && (k < 1 || !(temperature > 0)))
        {
            error.WriteLine($"error: --k ({k}) must be at least 1 and --temperature ({temperature}) positive");
            return Program.BadArguments;
        }
        if (protocol == "linear" && epochs < 1)
        {
            error.WriteLine($"error: --epochs ({epochs}) must be at least 1");
            return Program.BadArguments;
        }
        return CheckpointOptions.WithBackbone(checkpoint, datasetName, dataDir, device, output, error, (backend, trained, train, test, console) =>
        {
            var extractor = new FeatureExtractor(trained.Backbone, trained.Spec.Normalization);
            var clock = Stopwatch.StartNew();
            var trainFeatures = extractor.Extract(train);
            var testFeatures = extractor.Extract(test);
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"features   {trainFeatures.Count} + {testFeatures.Count} images x {trainFeatures.Dim} in {clock.Elapsed.TotalSeconds:F1} s"));
            var trainPixels = FeatureSet.FromPixels(train, trained.Spec.Normalization);
            var testPixels = FeatureSet.FromPixels(test, trained.Spec.Normalization);
            var table = new Table().AddColumn("features").AddColumn("top-1").AddColumn("top-5").AddColumn("detail");
            if (protocol == "knn")
            {
                var knn = new KnnClassifier(k, temperature);
                Add(table, "encoder", knn.Evaluate(trainFeatures, testFeatures), $"k {k}, T {temperature.ToString(CultureInfo.InvariantCulture)}");
                Add(table, "raw pixels", knn.Evaluate(trainPixels, testPixels), $"k {k}, T {temperature.ToString(CultureInfo.InvariantCulture)}");
            }
            else
            {
                var options = new LinearProbeOptions { Epochs = epochs };
                var probe = LinearProbe.Train(trainFeatures, testFeatures, options);
                Add(table, "encoder", probe.Test, string.Create(CultureInfo.InvariantCulture, $"{epochs} epochs, final train loss {probe.TrainLoss:F4}"));
                var raw = LinearProbe.Train(trainPixels, testPixels, options);
                Add(table, "raw pixels", raw.Test, string.Create(CultureInfo.InvariantCulture, $"{epochs} epochs, final train loss {raw.TrainLoss:F4}"));
            }
            console.Write(table);
            return Program.Success;
        });
    }

    private static void Add(Table table, string name, Accuracy accuracy, string detail) =>
        table.AddRow(name, string.Create(CultureInfo.InvariantCulture, $"{100 * accuracy.Top1:F2}%"), string.Create(CultureInfo.InvariantCulture, $"{100 * accuracy.Top5:F2}%"), Markup.Escape(detail));
}

/// <summary>The options and the set-up that eval and embed share: a checkpoint's backbone on a backend, and the data sets it was trained for.</summary>
internal static class CheckpointOptions
{
    public static Option<string> Checkpoint() => new("--checkpoint")
    {
        Description = "A training checkpoint, or the run directory holding checkpoint.safetensors.",
        Required = true,
    };

    public static Option<string?> Dataset()
    {
        var option = new Option<string?>("--dataset") { Description = "Data set; by default the one the checkpoint was trained on." };
        option.AcceptOnlyFromAmong([.. DatasetCatalog.Names]);
        return option;
    }

    public delegate int Body(IBackend backend, TrainedBackbone trained, IImageDataset train, IImageDataset test, IAnsiConsole console);

    public static int WithBackbone(string checkpoint, string? datasetName, string? dataDir, string device, TextWriter output, TextWriter error, Body body)
    {
        if (DeviceOption.Open(device, error) is not { } choice)
        {
            return Program.Failure;
        }
        var console = CliConsole.For(output);
        using var backend = choice.Backend;
        console.WriteLine($"backend    {choice.Reason}");
        try
        {
            using var trained = TrainedBackbone.Load(checkpoint, backend);
            var spec = trained.Spec;
            var name = datasetName ?? spec.Dataset;
            var options = spec.DatasetOptions(name, dataDir);
            using var train = DatasetCatalog.Open(name, DatasetSplit.Train, options);
            using var test = DatasetCatalog.Open(name, DatasetSplit.Test, options);
            if (train.Shape.Channels != spec.InputChannels)
            {
                error.WriteLine($"error: {train.Name} has {train.Shape.Channels}-channel images; the encoder in {trained.Path} reads {spec.InputChannels}");
                return Program.BadArguments;
            }
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"encoder    {trained.Path}: {spec.Method}, {spec.Arch} x{spec.Width} {spec.Stem} stem, {spec.FeatureDim}-d features, trained on {spec.Dataset}"));
            return body(backend, trained, train, test, console);
        }
        catch (Exception e) when (Program.IsExplained(e))
        {
            return Program.Explain(error, e);
        }
    }
}
