namespace NativeContrast.Data;

/// <summary>The size of every image of a data set: rows, columns and interleaved channels (1 = gray, 3 = RGB).</summary>
public readonly record struct ImageShape(int Height, int Width, int Channels)
{
    /// <summary>Bytes of one HxWxC uint8 image.</summary>
    public int Bytes => Height * Width * Channels;

    public override string ToString() => $"{Height}x{Width}x{Channels}";
}

/// <summary>
/// Per-channel mean and standard deviation of pixel values scaled to [0, 1], the constants of torchvision's Normalize.
/// </summary>
public sealed record ChannelStats(float[] Mean, float[] Std)
{
    public int Channels => Mean.Length;

    public override string ToString() =>
        $"mean ({string.Join(", ", Mean.Select(m => m.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))}) " +
        $"std ({string.Join(", ", Std.Select(s => s.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)))})";

    /// <summary>Measures the statistics over the first <paramref name="maxImages"/> images (all pixels, in parallel).</summary>
    public static ChannelStats Measure(IImageDataset dataset, int maxImages = 20_000)
    {
        var shape = dataset.Shape;
        var count = Math.Min(dataset.Count, maxImages);
        var c = shape.Channels;
        var sums = new double[2 * c];
        var gate = new object();
        Parallel.For(0, Math.Max(1, (count + 255) / 256), () => new long[2 * c], (chunk, _, local) =>
        {
            for (var i = chunk * 256; i < Math.Min(count, (chunk + 1) * 256); i++)
            {
                var image = dataset.GetImage(i);
                for (var p = 0; p < image.Length; p++)
                {
                    var v = image[p];
                    local[p % c] += v;
                    local[c + (p % c)] += v * v;
                }
            }
            return local;
        }, local =>
        {
            lock (gate)
            {
                for (var k = 0; k < local.Length; k++)
                {
                    sums[k] += local[k];
                }
            }
        });
        var n = (double)count * shape.Height * shape.Width;
        var mean = new float[c];
        var std = new float[c];
        for (var k = 0; k < c; k++)
        {
            var m = sums[k] / Math.Max(1, n) / 255.0;
            var variance = (sums[c + k] / Math.Max(1, n) / (255.0 * 255.0)) - (m * m);
            mean[k] = (float)m;
            std[k] = (float)Math.Max(Math.Sqrt(Math.Max(variance, 0)), 1e-3);
        }
        return new ChannelStats(mean, std);
    }
}

/// <summary>
/// A data set of fixed-size uint8 images (HxWxC, row-major, interleaved channels) with labels when it has them.
/// Reads are thread-safe: the loader's workers call <see cref="GetImage"/> concurrently.
/// </summary>
public interface IImageDataset : IDisposable
{
    /// <summary>What the data set is, for logs ("cifar10/train", "folder:/data/pets").</summary>
    string Name { get; }

    int Count { get; }

    ImageShape Shape { get; }

    /// <summary>One name per class, label i naming class i; empty for an unlabelled set.</summary>
    IReadOnlyList<string> ClassNames { get; }

    bool HasLabels { get; }

    /// <summary>The normalisation constants the loader uses by default.</summary>
    ChannelStats Stats { get; }

    /// <summary>The pixels of image <paramref name="index"/>, valid while the data set is open.</summary>
    ReadOnlySpan<byte> GetImage(int index);

    /// <summary>The class of image <paramref name="index"/>, or -1 when the set is unlabelled.</summary>
    int GetLabel(int index);
}

/// <summary>Which part of a data set to open.</summary>
public enum DatasetSplit
{
    Train,
    Test,

    /// <summary>STL-10's 100,000 unlabelled images.</summary>
    Unlabeled,

    /// <summary>STL-10's train and unlabelled images together (the usual pre-training set; labels -1 for the unlabelled).</summary>
    TrainAndUnlabeled,
}

/// <summary>A data file that cannot be read: the message names the file and what is wrong with it.</summary>
public sealed class DataFormatException(string path, string problem) : IOException($"{path}: {problem}")
{
    public string PathName { get; } = path;

    public string Problem { get; } = problem;
}
