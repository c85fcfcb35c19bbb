namespace NativeContrast.Data;

/// <summary>Where to look for data and what to make when there is none.</summary>
public sealed record DatasetOptions
{
    /// <summary>A folder holding the data set's files (or, for "folder", the image folder itself).</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Downloads and folder caches go here; by default $NATIVECONTRAST_CACHE, $XDG_CACHE_HOME/nativecontrast or ~/.cache/nativecontrast.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>Fetch missing files from their official location (checked against the published MD5).</summary>
    public bool Download { get; init; } = true;

    /// <summary>Images of the built-in set's train split (its test split has a quarter as many).</summary>
    public int BuiltinCount { get; init; } = 20_000;

    /// <summary>Side of the built-in images and of a folder's cached images; by default 32 and 96.</summary>
    public int? ImageSize { get; init; }

    /// <summary>Seed of the built-in set's rendering.</summary>
    public ulong Seed { get; init; }

    public Action<string>? Log { get; init; }
}

/// <summary>Opens a data set by name: builtin, fashion-mnist, mnist, cifar10, cifar100, stl10 or folder.</summary>
public static class DatasetCatalog
{
    public static readonly IReadOnlyList<string> Names = ["builtin", "fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "folder"];

    /// <summary>Debian's Fashion-MNIST package installs the four gzip files here.</summary>
    public const string DebianFashionMnist = "/usr/share/datasets/fashion-mnist";

    public static IImageDataset Open(string name, DatasetSplit split, DatasetOptions options) => name.ToLowerInvariant() switch
    {
        "builtin" => BuiltinShapes.Create(split == DatasetSplit.Test ? Math.Max(1, options.BuiltinCount / 4) : options.BuiltinCount, options.ImageSize ?? 32, options.Seed, split == DatasetSplit.Test ? DatasetSplit.Test : DatasetSplit.Train),
        "fashion-mnist" => OpenIdx(fashion: true, split, options),
        "mnist" => OpenIdx(fashion: false, split, options),
        "cifar10" => OpenCifar(cifar100: false, split, options),
        "cifar100" => OpenCifar(cifar100: true, split, options),
        "stl10" => OpenStl(split, options),
        "folder" => OpenFolder(options),
        _ => throw new ArgumentException($"unknown data set '{name}'; choose one of {string.Join(", ", Names)}", nameof(name)),
    };

    private static PackedImageDataset OpenFolder(DatasetOptions options)
    {
        var folder = options.DataDirectory ?? throw new ArgumentException("the folder data set needs --data-dir: a folder of images, or of one subfolder per class");
        var import = ImageFolderDataset.Open(folder, options.ImageSize ?? 96, options.CacheDirectory is null ? null : Path.Combine(options.CacheDirectory, "folders"), options.Log);
        if (import.Skipped.Count > 0)
        {
            options.Log?.Invoke($"{folder}: skipped {import.Skipped.Count} undecodable image(s), listed in {import.CachePath}.skipped.txt (first: {import.Skipped[0].Path}: {import.Skipped[0].Reason})");
        }
        options.Log?.Invoke($"{folder}: {(import.ReusedCache ? "mapped the cache" : "imported into")} {import.CachePath}");
        return import.Dataset;
    }

    private static string CacheRoot(DatasetOptions options) => options.CacheDirectory ?? DataFiles.CacheRoot();

    private static PackedImageDataset OpenIdx(bool fashion, DatasetSplit split, DatasetOptions options)
    {
        var prefix = split switch
        {
            DatasetSplit.Train => "train",
            DatasetSplit.Test => "t10k",
            _ => throw new ArgumentException($"{(fashion ? "Fashion-MNIST" : "MNIST")} has train and test splits, not {split}"),
        };
        var folderName = fashion ? "fashion-mnist" : "mnist";
        var cache = Path.Combine(CacheRoot(options), folderName);
        var folders = new List<string>();
        if (options.DataDirectory is { } dir)
        {
            folders.AddRange([dir, Path.Combine(dir, folderName), Path.Combine(dir, fashion ? "FashionMNIST" : "MNIST", "raw")]);
        }
        if (fashion)
        {
            folders.Add(DebianFashionMnist);
        }
        folders.Add(cache);
        var name = $"{folderName}/{split.ToString().ToLowerInvariant()}";
        var classes = fashion ? IdxDataset.FashionClasses : IdxDataset.DigitClasses;
        var stats = fashion ? IdxDataset.FashionStats : IdxDataset.MnistStats;
        foreach (var folder in folders)
        {
            var images = DataFiles.FirstExisting([Path.Combine(folder, $"{prefix}-images-idx3-ubyte.gz"), Path.Combine(folder, $"{prefix}-images-idx3-ubyte")]);
            var labels = DataFiles.FirstExisting([Path.Combine(folder, $"{prefix}-labels-idx1-ubyte.gz"), Path.Combine(folder, $"{prefix}-labels-idx1-ubyte")]);
            if (images is not null && labels is not null)
            {
                return IdxDataset.Load(images, labels, name, classes, stats);
            }
        }
        var resources = fashion ? Downloads.FashionMnist : Downloads.Mnist;
        var files = $"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz";
        var hint = fashion
            ? $"install Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist) or put {files} into --data-dir"
            : $"put {files} into --data-dir";
        if (!options.Download)
        {
            throw new FileNotFoundException($"{name} not found in {string.Join(", ", folders)}: {hint}");
        }
        try
        {
            var images = Downloads.Fetch(resources.First(r => r.FileName.StartsWith($"{prefix}-images", StringComparison.Ordinal)), cache, options.Log);
            var labels = Downloads.Fetch(resources.First(r => r.FileName.StartsWith($"{prefix}-labels", StringComparison.Ordinal)), cache, options.Log);
            return IdxDataset.Load(images, labels, name, classes, stats);
        }
        catch (IOException e) when (e is not DataFormatException)
        {
            throw new FileNotFoundException($"{name} not found in {string.Join(", ", folders)} and {e.Message}: offline, {hint}", e);
        }
    }

    private static PackedImageDataset OpenCifar(bool cifar100, DatasetSplit split, DatasetOptions options)
    {
        var fileNames = CifarDataset.FileNames(cifar100, split);
        var sub = CifarDataset.FolderName(cifar100);
        var cacheRoot = Path.Combine(CacheRoot(options), "cifar");
        var folders = new List<string>();
        if (options.DataDirectory is { } dir)
        {
            folders.AddRange([dir, Path.Combine(dir, sub)]);
        }
        folders.Add(Path.Combine(cacheRoot, sub));
        var name = $"{(cifar100 ? "cifar100" : "cifar10")}/{split.ToString().ToLowerInvariant()}";
        var resource = cifar100 ? Downloads.Cifar100 : Downloads.Cifar10;
        var folder = folders.FirstOrDefault(f => fileNames.All(n => File.Exists(Path.Combine(f, n))))
            ?? FetchArchive(resource, cacheRoot, sub, folders, $"{string.Join(", ", fileNames)} (from {resource.FileName})", options);
        IReadOnlyList<string>? classNames = null;
        var namesFile = Path.Combine(folder, cifar100 ? "fine_label_names.txt" : "batches.meta.txt");
        if (File.Exists(namesFile))
        {
            var lines = File.ReadAllLines(namesFile).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
            if (lines.Length == (cifar100 ? 100 : 10))
            {
                classNames = lines;
            }
        }
        return CifarDataset.Load([.. fileNames.Select(n => Path.Combine(folder, n))], cifar100, name, classNames);
    }

    private static PackedImageDataset OpenStl(DatasetSplit split, DatasetOptions options)
    {
        var needed = split switch
        {
            DatasetSplit.Train => new[] { "train_X.bin", "train_y.bin" },
            DatasetSplit.Test => ["test_X.bin", "test_y.bin"],
            DatasetSplit.Unlabeled => ["unlabeled_X.bin"],
            _ => ["train_X.bin", "train_y.bin", "unlabeled_X.bin"],
        };
        var cacheRoot = Path.Combine(CacheRoot(options), "stl10");
        var folders = new List<string>();
        if (options.DataDirectory is { } dir)
        {
            folders.AddRange([dir, Path.Combine(dir, Stl10Dataset.FolderName)]);
        }
        folders.Add(Path.Combine(cacheRoot, Stl10Dataset.FolderName));
        var folder = folders.FirstOrDefault(f => needed.All(n => File.Exists(Path.Combine(f, n))))
            ?? FetchArchive(Downloads.Stl10, cacheRoot, Stl10Dataset.FolderName, folders, $"{string.Join(", ", needed)} (from {Downloads.Stl10.FileName})", options);
        var splitName = split switch
        {
            DatasetSplit.TrainAndUnlabeled => "train+unlabeled",
            _ => split.ToString().ToLowerInvariant(),
        };
        return Stl10Dataset.Load(folder, split, $"stl10/{splitName}");
    }

    private static string FetchArchive(DataResource resource, string cacheRoot, string folderInArchive, List<string> searched, string what, DatasetOptions options)
    {
        var hint = $"download {resource.Urls[0]} (MD5 {resource.Md5}) and extract it into --data-dir";
        if (!options.Download)
        {
            throw new FileNotFoundException($"{what} not found in {string.Join(", ", searched)}: {hint}");
        }
        try
        {
            var archive = Downloads.Fetch(resource, cacheRoot, options.Log);
            Downloads.ExtractTarGz(archive, cacheRoot, folderInArchive, options.Log);
            return Path.Combine(cacheRoot, folderInArchive);
        }
        catch (IOException e) when (e is not DataFormatException)
        {
            throw new FileNotFoundException($"{what} not found in {string.Join(", ", searched)} and {e.Message}: offline, {hint}", e);
        }
    }
}
