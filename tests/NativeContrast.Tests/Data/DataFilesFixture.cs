namespace NativeContrast.Tests.Data;

using System.Buffers.Binary;
using System.IO.Compression;

/// <summary>A temporary folder per test, and writers for tiny data files in each format.</summary>
public abstract class TemporaryFolderTest
{
    protected string Folder { get; private set; } = null!;

    [SetUp]
    public void CreateFolder()
    {
        Folder = Path.Combine(Path.GetTempPath(), $"nc-data-{TestContext.CurrentContext.Test.Name.GetHashCode():x8}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Folder);
    }

    [TearDown]
    public void DeleteFolder()
    {
        if (Directory.Exists(Folder))
        {
            Directory.Delete(Folder, recursive: true);
        }
    }

    protected string PathOf(string name) => Path.Combine(Folder, name);

    protected static void WriteMaybeGzip(string path, byte[] bytes, bool gzip)
    {
        if (!gzip)
        {
            File.WriteAllBytes(path, bytes);
            return;
        }
        using var file = File.Create(path);
        using var zip = new GZipStream(file, CompressionLevel.Fastest);
        zip.Write(bytes);
    }

    /// <summary>An IDX image file: magic 0x803, count, rows, columns (big-endian), then the pixels.</summary>
    protected static byte[] IdxImages(int count, int rows, int columns, Func<int, int, byte> pixel, int magic = 0x803)
    {
        var bytes = new byte[16 + (count * rows * columns)];
        BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(8), rows);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), columns);
        for (var i = 0; i < count; i++)
        {
            for (var p = 0; p < rows * columns; p++)
            {
                bytes[16 + (i * rows * columns) + p] = pixel(i, p);
            }
        }
        return bytes;
    }

    protected static byte[] IdxLabels(byte[] labels, int magic = 0x801)
    {
        var bytes = new byte[8 + labels.Length];
        BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), labels.Length);
        labels.CopyTo(bytes, 8);
        return bytes;
    }
}
