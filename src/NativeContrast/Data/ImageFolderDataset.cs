namespace NativeContrast.Data;

using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

/// <summary>An image file the folder import could not use, and why.</summary>
public sealed record SkippedImage(string Path, string Reason);

/// <summary>The result of <see cref="ImageFolderDataset.Open"/>: the data set, where its cache lives and what was left out.</summary>
public sealed record FolderImport(PackedImageDataset Dataset, string CachePath, bool ReusedCache, IReadOnlyList<SkippedImage> Skipped);

/// <summary>
/// Image folders, decoded once through ImageSharp (<see cref="ImageCodec"/>) into a packed cache file that training memory-maps, so later runs
/// and epochs never decode again. A folder with subfolders is labelled (one class per subfolder, sorted by ordinal
/// name, files at the top level ignored, as torchvision's ImageFolder); a folder without is one unlabelled set.
/// Each image is resized so its shorter side is <c>size</c> (bilinear, antialiased) and centre-cropped to size x size:
/// torchvision's Resize(size) + CenterCrop(size). Undecodable files are skipped and listed.
/// </summary>
/// <remarks>
/// Cache file layout (little-endian): "NCIMGv1\0", int32 count, height, width, channels, classCount, reserved;
/// int64 imagesOffset, labelsOffset (0 when unlabelled); float32 mean[4], std[4]; 32-byte SHA-256 fingerprint of the
/// source (relative paths, lengths, modification times, size); int32 byte length + UTF-8 class names joined by '\n';
/// images from imagesOffset (4096-aligned), count·H·W·C bytes; int32 labels from labelsOffset to the end of the file.
/// </remarks>
public static class ImageFolderDataset
{
    /// <summary>The formats <see cref="ImageCodec"/> decodes.</summary>
    public static readonly IReadOnlySet<string> Extensions = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pbm", ".pnm", ".tif", ".tiff", ".webp",
    };

    private static readonly byte[] Magic = "NCIMGv1\0"u8.ToArray();
    private const int HeaderBytes = 116;
    private const int Alignment = 4096;

    /// <summary>
    /// Opens <paramref name="folder"/> at <paramref name="size"/> x <paramref name="size"/>: reuses the cache whose
    /// fingerprint matches the folder's current contents, else imports it into <paramref name="cacheDirectory"/>
    /// (default: the engine's cache folder, under "folders").
    /// </summary>
    public static FolderImport Open(string folder, int size, string? cacheDirectory = null, Action<string>? log = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        var root = Path.GetFullPath(folder);
        if (!Directory.Exists(root))
        {
            throw new DirectoryNotFoundException($"{root}: no such folder");
        }
        var (files, labels, classes) = Scan(root);
        if (files.Count == 0)
        {
            throw new DataFormatException(root, $"holds no images ({string.Join(", ", Extensions.Order())}), neither at the top level nor one level down");
        }
        var fingerprint = Fingerprint(root, files, size);
        var directory = cacheDirectory ?? Path.Combine(DataFiles.CacheRoot(), "folders");
        Directory.CreateDirectory(directory);
        var cachePath = Path.Combine(directory, $"{Sanitize(Path.GetFileName(root.TrimEnd(Path.DirectorySeparatorChar)))}-{size}-{Convert.ToHexStringLower(fingerprint)[..16]}.ncimg");
        var listPath = cachePath + ".skipped.txt";
        if (File.Exists(cachePath))
        {
            try
            {
                var cached = OpenCache(cachePath, out var cachedFingerprint);
                if (cachedFingerprint.AsSpan().SequenceEqual(fingerprint))
                {
                    return new FolderImport(cached, cachePath, true, ReadSkipped(listPath));
                }
                cached.Dispose();
            }
            catch (DataFormatException e)
            {
                // A damaged cache (an interrupted copy, a full disk) is rebuilt from the folder.
                log?.Invoke($"{e.Message}; importing {root} again");
            }
        }
        var skipped = Import(root, files, labels, classes, size, fingerprint, cachePath, log);
        File.WriteAllLines(listPath, skipped.Select(s => $"{s.Path}\t{s.Reason}"));
        return new FolderImport(OpenCache(cachePath, out _), cachePath, false, skipped);
    }

    /// <summary>Memory-maps a cache file written by <see cref="Open"/>.</summary>
    public static PackedImageDataset OpenCache(string cachePath) => OpenCache(cachePath, out _);

    private static PackedImageDataset OpenCache(string path, out byte[] fingerprint)
    {
        var length = new FileInfo(path).Length;
        var header = new byte[HeaderBytes];
        string[] classes;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            DataFiles.ReadExactly(stream, header, path, "the cache header");
            if (!header.AsSpan(0, 8).SequenceEqual(Magic))
            {
                throw new DataFormatException(path, "wrong magic number: not a NativeContrast image cache (NCIMGv1)");
            }
            var namesLength = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(HeaderBytes - 4));
            if (namesLength < 0 || HeaderBytes + namesLength > length)
            {
                throw new DataFormatException(path, $"class-name block of {namesLength} bytes does not fit a {length}-byte file");
            }
            var names = new byte[namesLength];
            DataFiles.ReadExactly(stream, names, path, "the class names");
            classes = namesLength == 0 ? [] : Encoding.UTF8.GetString(names).Split('\n');
        }
        var h = header.AsSpan();
        var count = BinaryPrimitives.ReadInt32LittleEndian(h[8..]);
        var shape = new ImageShape(BinaryPrimitives.ReadInt32LittleEndian(h[12..]), BinaryPrimitives.ReadInt32LittleEndian(h[16..]), BinaryPrimitives.ReadInt32LittleEndian(h[20..]));
        var classCount = BinaryPrimitives.ReadInt32LittleEndian(h[24..]);
        var imagesOffset = BinaryPrimitives.ReadInt64LittleEndian(h[32..]);
        var labelsOffset = BinaryPrimitives.ReadInt64LittleEndian(h[40..]);
        if (count < 0 || shape.Height <= 0 || shape.Width <= 0 || shape.Channels is < 1 or > 4 || classCount != classes.Length)
        {
            throw new DataFormatException(path, $"impossible header: {count} images of {shape}, {classCount} classes with {classes.Length} names");
        }
        var imagesEnd = imagesOffset + ((long)count * shape.Bytes);
        var expectedLength = labelsOffset == 0 ? imagesEnd : labelsOffset + (4L * count);
        if (imagesOffset < HeaderBytes || (labelsOffset != 0 && labelsOffset < imagesEnd) || expectedLength != length)
        {
            throw new DataFormatException(path, $"truncated or inconsistent: {count} images of {shape} at {imagesOffset} and labels at {labelsOffset} need {expectedLength} bytes, the file has {length}");
        }
        var stats = new ChannelStats(new float[shape.Channels], new float[shape.Channels]);
        for (var c = 0; c < shape.Channels; c++)
        {
            stats.Mean[c] = BinaryPrimitives.ReadSingleLittleEndian(h[(48 + (4 * c))..]);
            stats.Std[c] = BinaryPrimitives.ReadSingleLittleEndian(h[(64 + (4 * c))..]);
        }
        fingerprint = h.Slice(80, 32).ToArray();
        int[]? labels = null;
        if (labelsOffset != 0)
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            stream.Position = labelsOffset;
            var raw = new byte[4 * count];
            DataFiles.ReadExactly(stream, raw, path, "the labels");
            labels = new int[count];
            for (var i = 0; i < count; i++)
            {
                labels[i] = BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(4 * i));
                if ((uint)labels[i] >= (uint)classCount)
                {
                    throw new DataFormatException(path, $"label {labels[i]} of image {i} is outside 0..{classCount - 1}");
                }
            }
        }
        var store = ImageStore.Map(path, imagesOffset, count, shape);
        return new PackedImageDataset($"folder:{path}", store, labels, classes, stats);
    }

    private static (List<string> Files, List<int>? Labels, string[] Classes) Scan(string root)
    {
        static IEnumerable<string> Images(string dir) =>
            Directory.EnumerateFiles(dir).Where(f => Extensions.Contains(Path.GetExtension(f))).Order(StringComparer.Ordinal);

        var classDirs = Directory.EnumerateDirectories(root)
            .Where(d => !Path.GetFileName(d).StartsWith('.') && Images(d).Any())
            .Order(StringComparer.Ordinal)
            .ToArray();
        if (classDirs.Length == 0)
        {
            return (Images(root).ToList(), null, []);
        }
        var files = new List<string>();
        var labels = new List<int>();
        for (var c = 0; c < classDirs.Length; c++)
        {
            foreach (var f in Images(classDirs[c]))
            {
                files.Add(f);
                labels.Add(c);
            }
        }
        return (files, labels, classDirs.Select(d => Path.GetFileName(d)).ToArray());
    }

    private static byte[] Fingerprint(string root, List<string> files, int size)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes($"size={size}\n"));
        // JPEG decoders differ in chroma upsampling: a cache another decoder filled is not reused.
        hash.AppendData(Encoding.UTF8.GetBytes($"decoder={ImageCodec.DecoderName}\n"));
        foreach (var f in files)
        {
            var info = new FileInfo(f);
            hash.AppendData(Encoding.UTF8.GetBytes($"{Path.GetRelativePath(root, f)}\t{info.Length}\t{info.LastWriteTimeUtc.Ticks}\n"));
        }
        return hash.GetHashAndReset();
    }

    private static List<SkippedImage> Import(string root, List<string> files, List<int>? labels, string[] classes, int size, byte[] fingerprint, string cachePath, Action<string>? log)
    {
        var shape = new ImageShape(size, size, 3);
        var names = Encoding.UTF8.GetBytes(string.Join('\n', classes));
        var imagesOffset = (HeaderBytes + names.Length + Alignment - 1) / Alignment * Alignment;
        var temporary = cachePath + $".{Environment.ProcessId}.tmp";
        var skipped = new List<SkippedImage>();
        var keptLabels = new List<int>();
        var kept = 0;
        var stats = new double[6];
        try
        {
            using (var output = new FileStream(temporary, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 20))
            {
                output.Position = imagesOffset;
                var batch = Math.Max(64, 16 * Environment.ProcessorCount);
                var results = new byte[batch][];
                var errors = new string?[batch];
                for (var first = 0; first < files.Count; first += batch)
                {
                    var n = Math.Min(batch, files.Count - first);
                    Parallel.For(0, n, () => new ResampleScratch(), (i, _, scratch) =>
                    {
                        (results[i], errors[i]) = DecodeResized(files[first + i], size, scratch);
                        return scratch;
                    }, _ => { });
                    for (var i = 0; i < n; i++)
                    {
                        if (errors[i] is { } error)
                        {
                            skipped.Add(new SkippedImage(files[first + i], error));
                            continue;
                        }
                        output.Write(results[i]);
                        Accumulate(results[i], stats);
                        keptLabels.Add(labels?[first + i] ?? -1);
                        kept++;
                    }
                    log?.Invoke($"{Path.GetFileName(root)}: decoded {first + n}/{files.Count}, skipped {skipped.Count}");
                }
                if (kept == 0)
                {
                    throw new DataFormatException(root, $"none of its {files.Count} images could be decoded (first: {skipped[0].Path}: {skipped[0].Reason})");
                }
                long labelsOffset = 0;
                if (labels is not null)
                {
                    labelsOffset = output.Position;
                    var raw = new byte[4 * kept];
                    for (var i = 0; i < kept; i++)
                    {
                        BinaryPrimitives.WriteInt32LittleEndian(raw.AsSpan(4 * i), keptLabels[i]);
                    }
                    output.Write(raw);
                }
                var header = new byte[HeaderBytes];
                var h = header.AsSpan();
                Magic.CopyTo(h);
                BinaryPrimitives.WriteInt32LittleEndian(h[8..], kept);
                BinaryPrimitives.WriteInt32LittleEndian(h[12..], shape.Height);
                BinaryPrimitives.WriteInt32LittleEndian(h[16..], shape.Width);
                BinaryPrimitives.WriteInt32LittleEndian(h[20..], shape.Channels);
                BinaryPrimitives.WriteInt32LittleEndian(h[24..], classes.Length);
                BinaryPrimitives.WriteInt64LittleEndian(h[32..], imagesOffset);
                BinaryPrimitives.WriteInt64LittleEndian(h[40..], labelsOffset);
                var pixels = (double)kept * size * size;
                for (var c = 0; c < 3; c++)
                {
                    var mean = stats[c] / pixels / 255.0;
                    var variance = (stats[3 + c] / pixels / (255.0 * 255.0)) - (mean * mean);
                    BinaryPrimitives.WriteSingleLittleEndian(h[(48 + (4 * c))..], (float)mean);
                    BinaryPrimitives.WriteSingleLittleEndian(h[(64 + (4 * c))..], (float)Math.Max(Math.Sqrt(Math.Max(variance, 0)), 1e-3));
                }
                fingerprint.CopyTo(h[80..]);
                BinaryPrimitives.WriteInt32LittleEndian(h[(HeaderBytes - 4)..], names.Length);
                output.Position = 0;
                output.Write(header);
                output.Write(names);
            }
            File.Move(temporary, cachePath, overwrite: true);
            return skipped;
        }
        finally
        {
            if (File.Exists(temporary))
            {
                File.Delete(temporary);
            }
        }
    }

    /// <summary>Decodes one file to RGB and applies Resize(size) + CenterCrop(size); an error says why it was skipped.</summary>
    private static (byte[] Pixels, string? Error) DecodeResized(string path, int size, ResampleScratch scratch)
    {
        byte[] encoded;
        try
        {
            encoded = File.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            return ([], $"unreadable ({e.Message})");
        }
        catch (UnauthorizedAccessException e)
        {
            return ([], $"unreadable ({e.Message})");
        }
        var pixels = ImageCodec.DecodeRgb(encoded, out var height, out var width, out var error);
        if (pixels is null)
        {
            return ([], $"undecodable ({error})");
        }
        var source = new ImageShape(height, width, 3);
        // torchvision's Resize(size): the shorter side becomes size, the longer int(size · long / short).
        var (rh, rw) = height <= width ? (size, (int)((long)size * width / height)) : ((int)((long)size * height / width), size);
        var resized = scratch.Floats(3 * rh * rw, 2);
        ImageOps.ResizedCrop(pixels, source, new CropBox(0, 0, height, width), resized, rh, rw, flip: false, scratch);
        // CenterCrop: top = int(round((h − size) / 2)).
        var top = (int)Math.Round((rh - size) / 2.0);
        var left = (int)Math.Round((rw - size) / 2.0);
        var result = new byte[size * size * 3];
        for (var c = 0; c < 3; c++)
        {
            for (var y = 0; y < size; y++)
            {
                var row = resized.Slice((c * rh * rw) + ((top + y) * rw) + left, size);
                for (var x = 0; x < size; x++)
                {
                    result[(((y * size) + x) * 3) + c] = (byte)row[x];
                }
            }
        }
        return (result, null);
    }

    private static void Accumulate(byte[] pixels, double[] stats)
    {
        long s0 = 0, s1 = 0, s2 = 0, q0 = 0, q1 = 0, q2 = 0;
        for (var p = 0; p < pixels.Length; p += 3)
        {
            int r = pixels[p], g = pixels[p + 1], b = pixels[p + 2];
            s0 += r;
            s1 += g;
            s2 += b;
            q0 += r * r;
            q1 += g * g;
            q2 += b * b;
        }
        stats[0] += s0;
        stats[1] += s1;
        stats[2] += s2;
        stats[3] += q0;
        stats[4] += q1;
        stats[5] += q2;
    }

    private static List<SkippedImage> ReadSkipped(string listPath) =>
        File.Exists(listPath)
            ? File.ReadAllLines(listPath).Where(l => l.Length > 0).Select(l => l.Split('\t', 2)).Select(p => new SkippedImage(p[0], p.Length > 1 ? p[1] : "skipped")).ToList()
            : [];

    private static string Sanitize(string name)
    {
        var chars = name.Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' ? ch : '_').ToArray();
        return chars.Length == 0 ? "folder" : new string(chars);
    }
}
