namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using NativeContrast.Eval;
using Spectre.Console;

/// <summary>
/// `nativecontrast embed`: the backbone features of every image of a split, as NumPy files: DIR/features.npy
/// (float32 [N, D]) and DIR/labels.npy (int64 [N], -1 where unlabelled), row i for image i.
/// </summary>
public static class EmbedCommand
{
    public const string FeaturesFileName = "features.npy";
    public const string LabelsFileName = "labels.npy";

    public static Command Create()
    {
        var checkpoint = CheckpointOptions.Checkpoint();
        var dataset = CheckpointOptions.Dataset();
        var dataDir = new Option<string?>("--data-dir") { Description = "Folder holding the data set's files." };
        var split = new Option<string>("--split") { Description = "Split to embed.", DefaultValueFactory = _ => "test" };
        split.AcceptOnlyFromAmong("train", "test");
        var device = DeviceOption.Create();
        var output = new Option<string>("--out") { Description = "Directory for features.npy and labels.npy.", Required = true };
        var command = new Command("embed", "Write the encoder's features of a data set split as NumPy files (features.npy, labels.npy).")
        {
            checkpoint, dataset, dataDir, split, device, output,
        };
        command.SetAction(parse => Run(
            parse.GetRequiredValue(checkpoint), parse.GetValue(dataset), parse.GetValue(dataDir), parse.GetRequiredValue(split),
            parse.GetRequiredValue(device), parse.GetRequiredValue(output), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error));
        return command;
    }

    private static int Run(string checkpoint, string? dataset, string? dataDir, string split, string device, string directory, TextWriter output, TextWriter error) =>
        CheckpointOptions.WithBackbone(checkpoint, dataset, dataDir, device, output, error, (_, trained, train, test, console) =>
        {
            var clock = Stopwatch.StartNew();
            var features = new FeatureExtractor(trained.Backbone, trained.Spec.Normalization).Extract(split == "train" ? train : test);
            Directory.CreateDirectory(directory);
            var featuresPath = Path.Combine(directory, FeaturesFileName);
            var labelsPath = Path.Combine(directory, LabelsFileName);
            NpyFile.WriteFloat32(featuresPath, features.Values, features.Count, features.Dim);
            NpyFile.WriteInt64(labelsPath, features.Labels.Select(l => (long)l).ToArray(), features.Count);
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"wrote      {featuresPath} (float32 [{features.Count}, {features.Dim}]) and {labelsPath} (int64 [{features.Count}]) in {clock.Elapsed.TotalSeconds:F1} s"));
            return Program.Success;
        });
}
