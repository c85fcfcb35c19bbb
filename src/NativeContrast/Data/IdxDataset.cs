namespace NativeContrast.Data;

using System.Buffers.Binary;

/// <summary>
/// MNIST-format IDX files (LeCun's format, used by MNIST and Fashion-MNIST), gzip-compressed or not: an image file
/// with magic 0x00000803 and dimensions (count, rows, columns), a label file with magic 0x00000801 and (count).
/// </summary>
public static class IdxDataset
{
    public const int ImageMagic = 0x0803;
    public const int LabelMagic = 0x0801;

    public static readonly IReadOnlyList<string> FashionClasses =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    public static readonly IReadOnlyList<string> DigitClasses = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// <summary>Fashion-MNIST's published statistics (train split).</summary>
    public static readonly ChannelStats FashionStats = new([0.2860f], [0.3530f]);

    /// <summary>MNIST's published statistics (train split).</summary>
    public static readonly ChannelStats MnistStats = new([0.1307f], [0.3081f]);

    /// <summary>Reads an image file and its label file; labels must lie in [0, classNames.Count).</summary>
    public static PackedImageDataset Load(string imagesPath, string labelsPath, string name, IReadOnlyList<string> classNames, ChannelStats? stats = null)
    {
        var store = ReadImages(imagesPath);
        try
        {
            var labels = ReadLabels(labelsPath, classNames.Count);
            if (labels.Length != store.Count)
            {
                throw new DataFormatException(labelsPath, $"holds {labels.Length} labels but {imagesPath} holds {store.Count} images");
            }
            return new PackedImageDataset(name, store, labels, classNames, stats);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    public static ImageStore ReadImages(string path)
    {
        using var stream = DataFiles.OpenMaybeGzip(path);
        Span<byte> header = stackalloc byte[16];
        DataFiles.ReadExactly(stream, header[..4], path, "the IDX magic number");
        var magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != ImageMagic)
        {
            throw new DataFormatException(path, $"wrong magic number 0x{magic:x8}: an IDX image file starts with 0x{ImageMagic:x8} (ubyte, 3 dimensions)");
        }
        DataFiles.ReadExactly(stream, header[4..], path, "the IDX image header");
        var count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        var rows = BinaryPrimitives.ReadInt32BigEndian(header[8..]);
        var columns = BinaryPrimitives.ReadInt32BigEndian(header[12..]);
        if (count < 0 || rows <= 0 || columns <= 0 || rows > 1 << 14 || columns > 1 << 14)
        {
            throw new DataFormatException(path, $"impossible IDX dimensions {count} x {rows} x {columns}");
        }
        DataFiles.CheckDeclaredSize(stream, path, header.Length + ((long)count * rows * columns), $"{count} images of {rows} x {columns}");
        var store = ImageStore.Allocate(count, new ImageShape(rows, columns, 1));
        try
        {
            for (var i = 0; i < count; i++)
            {
                DataFiles.ReadExactly(stream, store.Writable(i), path, $"image {i} of {count}");
            }
            DataFiles.ExpectEnd(stream, path, $"{count} images");
            return store;
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    public static int[] ReadLabels(string path, int classCount)
    {
        using var stream = DataFiles.OpenMaybeGzip(path);
        Span<byte> header = stackalloc byte[8];
        DataFiles.ReadExactly(stream, header[..4], path, "the IDX magic number");
        var magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != LabelMagic)
        {
            throw new DataFormatException(path, $"wrong magic number 0x{magic:x8}: an IDX label file starts with 0x{LabelMagic:x8} (ubyte, 1 dimension)");
        }
        DataFiles.ReadExactly(stream, header[4..], path, "the IDX label header");
        var count = BinaryPrimitives.ReadInt32BigEndian(header[4..]);
        if (count < 0)
        {
            throw new DataFormatException(path, $"negative label count {count}");
        }
        DataFiles.CheckDeclaredSize(stream, path, header.Length + (long)count, $"{count} labels");
        var bytes = new byte[count];
        DataFiles.ReadExactly(stream, bytes, path, $"{count} labels");
        DataFiles.ExpectEnd(stream, path, $"{count} labels");
        return Labels.Check(bytes, 0, classCount, path);
    }
}

/// <summary>Label validation shared by the readers.</summary>
internal static class Labels
{
    /// <summary>Converts raw label bytes (minus <paramref name="offset"/>) to ints, naming the first label outside [0, classCount).</summary>
    public static int[] Check(ReadOnlySpan<byte> raw, int offset, int classCount, string path)
    {
        var labels = new int[raw.Length];
        for (var i = 0; i < raw.Length; i++)
        {
            var label = raw[i] - offset;
            if (label < 0 || label >= classCount)
            {
                throw new DataFormatException(path, $"label {raw[i]} of item {i} is outside {offset}..{offset + classCount - 1}");
            }
            labels[i] = label;
        }
        return labels;
    }
}
