namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Globalization;
using NativeContrast.Data;

/// <summary>
/// `nativecontrast preview`: a PNG grid of original images (first column) and their augmented views, to see what
/// a recipe does to a data set before training on it.
/// </summary>
public static class PreviewCommand
{
    private const int Success = 0;
    private const int Failure = 1;
    private const int BadArguments = 2;

    public static Command Create()
    {
        var dataset = new Option<string>("--dataset") { Description = "Data set to preview.", DefaultValueFactory = _ => "builtin" };
        dataset.AcceptOnlyFromAmong([.. DatasetCatalog.Names]);
        var dataDir = new Option<string?>("--data-dir") { Description = "Folder holding the data set's files (for 'folder': the image folder, one subfolder per class or flat)." };
        var split = new Option<string>("--split") { Description = "Split to preview.", DefaultValueFactory = _ => "train" };
        split.AcceptOnlyFromAmong("train", "test", "unlabeled", "train+unlabeled");
        var preset = new Option<string>("--preset") { Description = "Augmentation recipe.", DefaultValueFactory = _ => "simclr" };
        preset.AcceptOnlyFromAmong([.. AugmentationPresets.Names]);
        var count = new Option<int>("--count") { Description = "Images (rows) to show.", DefaultValueFactory = _ => 8 };
        var views = new Option<int?>("--views") { Description = "Views per image (columns after the original); by default the preset's number of views." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the augmentations (and of the built-in set's rendering).", DefaultValueFactory = _ => 0 };
        var size = new Option<int?>("--size") { Description = "Large crop size; by default the images' shorter side, at most 224." };
        var imageSize = new Option<int?>("--image-size") { Description = "Side of the built-in images (default 32) or of a folder's cached images (default 96)." };
        var output = new Option<string>("--out") { Description = "Image file to write: PNG, or JPEG when it ends in .jpg or .jpeg.", DefaultValueFactory = _ => "preview.png" };
        var command = new Command("preview", "Write a PNG grid of images and their augmented views for a data set and an augmentation preset.")
        {
            dataset, dataDir, split, preset, count, views, seed, size, imageSize, output,
        };
        command.SetAction(parse => Run(
            new Request(
                parse.GetRequiredValue(dataset),
                parse.GetValue(dataDir),
                parse.GetRequiredValue(split),
                parse.GetRequiredValue(preset),
                parse.GetRequiredValue(count),
                parse.GetValue(views),
                parse.GetRequiredValue(seed),
                parse.GetValue(size),
                parse.GetValue(imageSize),
                parse.GetRequiredValue(output)),
            parse.InvocationConfiguration.Output,
            parse.InvocationConfiguration.Error));
        return command;
    }

    private sealed record Request(string Dataset, string? DataDir, string Split, string Preset, int Count, int? Views, ulong Seed, int? Size, int? ImageSize, string Out);

    private static int Run(Request request, TextWriter output, TextWriter error)
    {
        if (request.Count < 1 || request.Views is < 1 || request.Size is < 1 || request.ImageSize is < 8)
        {
            error.WriteLine($"error: --count ({request.Count}), --views, --size must be positive and --image-size at least 8");
            return BadArguments;
        }
        var split = request.Split switch
        {
            "test" => DatasetSplit.Test,
            "unlabeled" => DatasetSplit.Unlabeled,
            "train+unlabeled" => DatasetSplit.TrainAndUnlabeled,
            _ => DatasetSplit.Train,
        };
        try
        {
            var options = new DatasetOptions
            {
                DataDirectory = request.DataDir,
                ImageSize = request.ImageSize,
                Seed = request.Seed,
                BuiltinCount = Math.Max(request.Count, 1000),
                Log = line => error.WriteLine(line),
            };
            using var data = DatasetCatalog.Open(request.Dataset, split, options);
            var cropSize = request.Size ?? AugmentationPresets.CropSizeFor(data.Shape);
            var recipe = AugmentationPresets.Create(request.Preset, cropSize);
            var viewCount = request.Views ?? recipe.ViewCount;
            var (height, width) = AugmentationPreview.Write(request.Out, data, recipe, request.Count, viewCount, request.Seed);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{data}"));
            output.WriteLine(recipe);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"wrote {request.Out} ({width}x{height}): {Math.Min(request.Count, data.Count)} images, original then {viewCount} views each"));
            return Success;
        }
        catch (Exception e) when (e is IOException or DllNotFoundException or ArgumentException or UnauthorizedAccessException)
        {
            error.WriteLine($"error: {e.Message}");
            return Failure;
        }
    }
}
