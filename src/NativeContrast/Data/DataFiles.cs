namespace NativeContrast.Data;

using System.IO.Compression;

/// <summary>Opening and reading data files with errors that name the file and say what is wrong.</summary>
internal static class DataFiles
{
    /// <summary>Opens a file for reading, transparently gunzipping a gzip file (by its magic bytes, whatever its name).</summary>
    public static Stream OpenMaybeGzip(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such file", path);
        }
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Span<byte> magic = stackalloc byte[2];
        var n = file.ReadAtLeast(magic, 2, throwOnEndOfStream: false);
        file.Position = 0;
        return n == 2 && magic[0] == 0x1f && magic[1] == 0x8b ? new GZipStream(file, CompressionMode.Decompress) : file;
    }

    /// <summary>Deflate's largest compression ratio: a gzip stream of n bytes never decompresses to more than 1032 n.</summary>
    private const long MaxDeflateRatio = 1032;

    /// <summary>
    /// Rejects a header that declares more content than the file can hold (its length, or deflate's limit for gzip),
    /// before anything that size is allocated; <paramref name="declaredBytes"/> counts from the start of the content.
    /// </summary>
    public static void CheckDeclaredSize(Stream stream, string path, long declaredBytes, string what)
    {
        var compressed = stream as GZipStream;
        var fileBytes = (compressed?.BaseStream ?? stream).Length;
        var capacity = compressed is null ? fileBytes : fileBytes * MaxDeflateRatio;
        if (declaredBytes > capacity)
        {
            var limit = compressed is null ? string.Empty : $", which cannot decompress to more than {capacity} bytes";
            throw new DataFormatException(path, $"truncated or a corrupt header: it declares {what} ({declaredBytes} bytes) but the file holds {fileBytes} bytes{limit}");
        }
    }

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="stream"/>; a short read or a corrupt gzip stream names the file.</summary>
    public static void ReadExactly(Stream stream, Span<byte> buffer, string path, string what)
    {
        int read;
        try
        {
            read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        }
        catch (InvalidDataException e)
        {
            throw new DataFormatException(path, $"corrupt gzip data while reading {what} ({e.Message})");
        }
        if (read < buffer.Length)
        {
            throw new DataFormatException(path, $"truncated: the file ends {buffer.Length - read} bytes into {what}");
        }
    }

    /// <summary>Throws when the stream has bytes left, which means the header's counts do not describe the file.</summary>
    public static void ExpectEnd(Stream stream, string path, string what)
    {
        Span<byte> probe = stackalloc byte[1];
        int extra;
        try
        {
            extra = stream.Read(probe);
        }
        catch (InvalidDataException e)
        {
            throw new DataFormatException(path, $"corrupt gzip data after {what} ({e.Message})");
        }
        if (extra != 0)
        {
            throw new DataFormatException(path, $"has bytes after {what}: the header's counts do not match the file's length");
        }
    }

    /// <summary>The first existing path among <paramref name="candidates"/>, else null.</summary>
    public static string? FirstExisting(IEnumerable<string> candidates) => candidates.FirstOrDefault(File.Exists);

    /// <summary>The engine's cache folder: $NATIVECONTRAST_CACHE, else $XDG_CACHE_HOME/nativecontrast, else ~/.cache/nativecontrast.</summary>
    public static string CacheRoot()
    {
        var explicitRoot = Environment.GetEnvironmentVariable("NATIVECONTRAST_CACHE");
        if (!string.IsNullOrEmpty(explicitRoot))
        {
            return explicitRoot;
        }
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "nativecontrast");
    }
}
