namespace NativeContrast.Data;

/// <summary>
/// CIFAR-10 and CIFAR-100 in their binary versions (Krizhevsky's "suitable for C programs" files). A CIFAR-10 record
/// is 1 label byte and 3072 pixel bytes (the red, green and blue 32x32 planes, row-major); a CIFAR-100 record has a
/// coarse and a fine label byte first (the fine label, 0..99, is the one used).
/// </summary>
public static class CifarDataset
{
    public const int Side = 32;
    public const int PixelBytes = 3 * Side * Side;

    public static readonly IReadOnlyList<string> Cifar10Classes =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    /// <summary>The commonly used CIFAR-10 train statistics (torchvision / solo-learn).</summary>
    public static readonly ChannelStats Cifar10Stats = new([0.4914f, 0.4822f, 0.4465f], [0.2470f, 0.2435f, 0.2616f]);

    public static readonly ChannelStats Cifar100Stats = new([0.5071f, 0.4865f, 0.4409f], [0.2673f, 0.2564f, 0.2762f]);

    /// <summary>The files of a split, relative to the folder holding them.</summary>
    public static IReadOnlyList<string> FileNames(bool cifar100, DatasetSplit split) => (cifar100, split) switch
    {
        (false, DatasetSplit.Train) => ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"],
        (false, DatasetSplit.Test) => ["test_batch.bin"],
        (true, DatasetSplit.Train) => ["train.bin"],
        (true, DatasetSplit.Test) => ["test.bin"],
        _ => throw new ArgumentException($"CIFAR has train and test splits, not {split}", nameof(split)),
    };

    /// <summary>The folder the archive extracts to.</summary>
    public static string FolderName(bool cifar100) => cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";

    /// <summary>Reads the given record files (in order) into one data set.</summary>
    public static PackedImageDataset Load(IReadOnlyList<string> files, bool cifar100, string name, IReadOnlyList<string>? classNames = null)
    {
        var labelBytes = cifar100 ? 2 : 1;
        var recordBytes = labelBytes + PixelBytes;
        var counts = new int[files.Count];
        for (var f = 0; f < files.Count; f++)
        {
            if (!File.Exists(files[f]))
            {
                throw new FileNotFoundException($"{files[f]}: no such file", files[f]);
            }
            var length = new FileInfo(files[f]).Length;
            if (length == 0 || length % recordBytes != 0)
            {
                throw new DataFormatException(files[f], $"length {length} is not a whole number of {recordBytes}-byte CIFAR-{(cifar100 ? 100 : 10)} records (truncated or not a CIFAR binary file)");
            }
            counts[f] = checked((int)(length / recordBytes));
        }
        var classCount = cifar100 ? 100 : 10;
        var names = classNames ?? (cifar100 ? Enumerable.Range(0, 100).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray() : Cifar10Classes);
        var store = ImageStore.Allocate(counts.Sum(), new ImageShape(Side, Side, 3));
        try
        {
            var labels = new int[store.Count];
            var record = new byte[recordBytes];
            var index = 0;
            for (var f = 0; f < files.Count; f++)
            {
                using var stream = new FileStream(files[f], FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
                for (var r = 0; r < counts[f]; r++, index++)
                {
                    DataFiles.ReadExactly(stream, record, files[f], $"record {r}");
                    var label = record[labelBytes - 1];
                    if (label >= classCount)
                    {
                        throw new DataFormatException(files[f], $"label {label} of record {r} is outside 0..{classCount - 1}");
                    }
                    labels[index] = label;
                    PlanarToInterleaved(record.AsSpan(labelBytes), store.Writable(index), Side * Side, 3);
                }
            }
            return new PackedImageDataset(name, store, labels, names, cifar100 ? Cifar100Stats : Cifar10Stats);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>CHW planes to HWC interleaved pixels.</summary>
    internal static void PlanarToInterleaved(ReadOnlySpan<byte> planes, Span<byte> pixels, int planeSize, int channels)
    {
        for (var c = 0; c < channels; c++)
        {
            var plane = planes.Slice(c * planeSize, planeSize);
            for (var i = 0; i < planeSize; i++)
            {
                pixels[(i * channels) + c] = plane[i];
            }
        }
    }
}

/// <summary>
/// STL-10's binary version: *_X.bin holds 3x96x96 images with each channel stored column-major (MATLAB order, so
/// byte (c, column, row) at c·9216 + column·96 + row), transposed here to HxWxC; *_y.bin holds labels 1..10.
/// The unlabelled split (100,000 images, 2.8 GB) lives in native memory, not a managed array.
/// </summary>
public static class Stl10Dataset
{
    public const int Side = 96;
    public const int ImageBytes = 3 * Side * Side;

    public static readonly IReadOnlyList<string> Classes =
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

    /// <summary>Statistics of STL-10's train + unlabelled images.</summary>
    public static readonly ChannelStats Stats = new([0.4467f, 0.4398f, 0.4066f], [0.2603f, 0.2566f, 0.2713f]);

    public const string FolderName = "stl10_binary";

    /// <summary>Reads a split from the folder holding the .bin files.</summary>
    public static PackedImageDataset Load(string folder, DatasetSplit split, string name)
    {
        var parts = split switch
        {
            DatasetSplit.Train => new (string, string?)[] { ("train_X.bin", "train_y.bin") },
            DatasetSplit.Test => [("test_X.bin", "test_y.bin")],
            DatasetSplit.Unlabeled => [("unlabeled_X.bin", (string?)null)],
            DatasetSplit.TrainAndUnlabeled => [("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", null)],
            _ => throw new ArgumentOutOfRangeException(nameof(split)),
        };
        var counts = new int[parts.Length];
        for (var p = 0; p < parts.Length; p++)
        {
            var path = Path.Combine(folder, parts[p].Item1);
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"{path}: no such file", path);
            }
            var length = new FileInfo(path).Length;
            if (length == 0 || length % ImageBytes != 0)
            {
                throw new DataFormatException(path, $"length {length} is not a whole number of {ImageBytes}-byte STL-10 images (truncated or not an STL-10 binary file)");
            }
            counts[p] = checked((int)(length / ImageBytes));
        }
        var store = ImageStore.Allocate(counts.Sum(), new ImageShape(Side, Side, 3));
        try
        {
            var labels = new int[store.Count];
            var labelled = false;
            var start = 0;
            for (var p = 0; p < parts.Length; p++)
            {
                var (imagesFile, labelsFile) = parts[p];
                ReadImages(Path.Combine(folder, imagesFile), store, start, counts[p]);
                if (labelsFile is null)
                {
                    labels.AsSpan(start, counts[p]).Fill(-1);
                }
                else
                {
                    var path = Path.Combine(folder, labelsFile);
                    var raw = File.Exists(path) ? File.ReadAllBytes(path) : throw new FileNotFoundException($"{path}: no such file", path);
                    if (raw.Length != counts[p])
                    {
                        throw new DataFormatException(path, $"holds {raw.Length} labels but {Path.Combine(folder, imagesFile)} holds {counts[p]} images");
                    }
                    Labels.Check(raw, 1, 10, path).CopyTo(labels, start);
                    labelled = true;
                }
                start += counts[p];
            }
            return new PackedImageDataset(name, store, labelled ? labels : null, labelled ? Classes : [], Stats);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    private static void ReadImages(string path, ImageStore store, int start, int count)
    {
        const int chunk = 512;
        var buffer = new byte[chunk * ImageBytes];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        for (var first = 0; first < count; first += chunk)
        {
            var n = Math.Min(chunk, count - first);
            DataFiles.ReadExactly(stream, buffer.AsSpan(0, n * ImageBytes), path, $"images {first}..{first + n - 1}");
            Parallel.For(0, n, i => ColumnMajorToInterleaved(buffer.AsSpan(i * ImageBytes, ImageBytes), store.Writable(start + first + i)));
        }
    }

    /// <summary>Per channel column-major planes (byte c·S² + x·S + y) to row-major HxWxC.</summary>
    internal static void ColumnMajorToInterleaved(ReadOnlySpan<byte> planes, Span<byte> pixels)
    {
        const int plane = Side * Side;
        for (var c = 0; c < 3; c++)
        {
            var source = planes.Slice(c * plane, plane);
            for (var x = 0; x < Side; x++)
            {
                var column = source.Slice(x * Side, Side);
                for (var y = 0; y < Side; y++)
                {
                    pixels[(((y * Side) + x) * 3) + c] = column[y];
                }
            }
        }
    }
}
