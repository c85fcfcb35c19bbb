namespace NativeContrast.Checkpoints;

using System.Buffers.Binary;
using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Tensors;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>One tensor of a safetensors file: dtype, shape, and its byte range in the data section.</summary>
public sealed record SafetensorsTensorInfo(string Name, SafetensorsDType DType, IReadOnlyList<long> Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;

    public long ElementCount => Shape.Aggregate(1L, (n, d) => n * d);

    public string ShapeText => $"[{string.Join(", ", Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)))}]";

    public bool HasShape(TensorShape shape) => Shape.Count == shape.Rank && Shape.Select((d, i) => d == shape[i]).All(same => same);
}

/// <summary>
/// A memory-mapped, fully validated safetensors file. Opening checks everything a reader relies on before any
/// byte of data is touched: the header length against the file length, the JSON, every dtype and shape, and
/// that the tensors' byte ranges tile the data section exactly (no overlap, no gap, nothing past the end), as the
/// reference implementation requires. Every error names the file and, where one is concerned, the tensor.
/// F32, F16, BF16 and F64 load into float32 tensors; I64 reads as integers.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    public const string MetadataKey = "__metadata__";

    /// <summary>The reference implementation's bound: larger headers are refused as corrupt before being read.</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const int ChunkElements = 1 << 20;

    private readonly Dictionary<string, SafetensorsTensorInfo> _byName;
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _data;
    private float[]? _scratch;
    private bool _disposed;

    private SafetensorsFile(string path, long fileLength, long headerLength, IReadOnlyDictionary<string, string> metadata, List<SafetensorsTensorInfo> tensors, FileStream stream)
    {
        FilePath = path;
        FileLength = fileLength;
        HeaderLength = headerLength;
        Metadata = metadata;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name);
        _map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        _data = pointer + _view.PointerOffset + 8 + headerLength;
    }

    public string FilePath { get; }

    public long FileLength { get; }

    /// <summary>N, the JSON header's length in bytes (padding included).</summary>
    public long HeaderLength { get; }

    /// <summary>Offset of the data section in the file: 8 + N.</summary>
    public long DataStart => 8 + HeaderLength;

    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Every tensor, in the order of its data in the file.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors stores little-endian data; this host is big-endian");
        }
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            var fileLength = stream.Length;
            if (fileLength < 8)
            {
                throw new CheckpointException(path, null, $"truncated: the file has {fileLength} bytes, fewer than the 8-byte header length that starts a safetensors file");
            }
            Span<byte> prefix = stackalloc byte[8];
            stream.ReadExactly(prefix);
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > MaxHeaderLength)
            {
                throw new CheckpointException(path, null, $"corrupt header: it claims {headerLength} bytes, more than the format's limit of {MaxHeaderLength} (not a safetensors file?)");
            }
            if (8 + (long)headerLength > fileLength)
            {
                throw new CheckpointException(path, null, $"truncated: the header length is {headerLength} bytes but the file has only {fileLength - 8} bytes after the 8-byte length");
            }
            var header = new byte[headerLength];
            stream.ReadExactly(header);
            var dataLength = fileLength - 8 - (long)headerLength;
            var (metadata, tensors) = ParseHeader(path, header, dataLength);
            return new SafetensorsFile(path, fileLength, (long)headerLength, metadata, tensors, stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafetensorsTensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var info) ? info : throw new CheckpointException(FilePath, name, "missing: the file has no tensor of that name");

    /// <summary>A float tensor (F32, F16, BF16, F64) converted to float32.</summary>
    public float[] ReadFloat32(string name)
    {
        var info = RequireFloat(Info(name));
        var values = new float[checked((int)info.ElementCount)];
        ConvertToSingle(info, 0, values);
        return values;
    }

    /// <summary>An I64 tensor's values.</summary>
    public long[] ReadInt64(string name)
    {
        var info = Info(name);
        if (info.DType != SafetensorsDType.I64)
        {
            throw new CheckpointException(FilePath, name, $"wrong dtype: expected I64, found {info.DType.HeaderName()}");
        }
        ObjectDisposedException.ThrowIf(_disposed, this);
        return MemoryMarshal.Cast<byte, long>(new ReadOnlySpan<byte>(_data + info.Begin, checked((int)info.ByteLength))).ToArray();
    }

    /// <summary>
    /// Loads a float tensor into <paramref name="destination"/> (any backend), converting to float32 in chunks
    /// and copying each through CopyFromHost. The file's shape must equal the destination's exactly.
    /// </summary>
    public void ReadInto(string name, IBackend backend, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(destination);
        var info = CheckLoadable(name, destination.Shape, destination.Name ?? name);
        // One staging buffer per file, sized for the largest float tensor up to a chunk, reused by every load.
        var scratch = _scratch ??= GC.AllocateUninitializedArray<float>((int)Math.Clamp(
            Tensors.Where(t => t.DType.IsFloatLoadable()).Max(t => (long?)t.ElementCount) ?? 1, 1, ChunkElements));
        for (long start = 0; start < info.ElementCount; start += scratch.Length)
        {
            var count = (int)Math.Min(scratch.Length, info.ElementCount - start);
            var chunk = scratch.AsSpan(0, count);
            ConvertToSingle(info, start, chunk);
            backend.CopyFromHost(chunk, destination.View(start, new TensorShape(count)));
        }
    }

    /// <summary>Checks that <paramref name="name"/> exists, is a float tensor and has <paramref name="expected"/> shape; touches no data.</summary>
    public SafetensorsTensorInfo CheckLoadable(string name, TensorShape expected, string destination)
    {
        var info = RequireFloat(Info(name));
        if (!info.HasShape(expected))
        {
            throw new CheckpointException(FilePath, name, $"wrong shape: '{destination}' expects {expected}, the file has {info.ShapeText}");
        }
        return info;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    private SafetensorsTensorInfo RequireFloat(SafetensorsTensorInfo info)
    {
        if (!info.DType.IsFloatLoadable())
        {
            throw new CheckpointException(FilePath, info.Name, $"wrong dtype: expected a float tensor (F32, F16, BF16 or F64) to load as float32, found {info.DType.HeaderName()}");
        }
        return info;
    }

    /// <summary>Elements [first, first + destination.Length) of a float tensor, widened or narrowed to float32.</summary>
    private void ConvertToSingle(SafetensorsTensorInfo info, long first, Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var size = info.DType.SizeInBytes();
        var source = new ReadOnlySpan<byte>(_data + info.Begin + (first * size), destination.Length * size);
        switch (info.DType)
        {
            case SafetensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                break;
            case SafetensorsDType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), destination);
                break;
            case SafetensorsDType.BF16:
                // bfloat16 is the top half of a float32: widening is exact.
                var bf16 = MemoryMarshal.Cast<byte, ushort>(source);
                for (var i = 0; i < destination.Length; i++)
                {
                    destination[i] = BitConverter.UInt32BitsToSingle((uint)bf16[i] << 16);
                }
                break;
            case SafetensorsDType.F64:
                var f64 = MemoryMarshal.Cast<byte, double>(source);
                for (var i = 0; i < destination.Length; i++)
                {
                    destination[i] = (float)f64[i];
                }
                break;
            default:
                throw new CheckpointException(FilePath, info.Name, $"wrong dtype: {info.DType.HeaderName()} does not convert to float32");
        }
    }

    private static (IReadOnlyDictionary<string, string> Metadata, List<SafetensorsTensorInfo> Tensors) ParseHeader(string path, byte[] header, long dataLength)
    {
        if (header.Length == 0 || header[0] != (byte)'{')
        {
            throw new CheckpointException(path, null, "corrupt header: it does not start with '{'");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new CheckpointException(path, null, $"corrupt header: not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new CheckpointException(path, null, $"corrupt header: expected a JSON object, found {document.RootElement.ValueKind}");
            }
            var metadata = new Dictionary<string, string>();
            var tensors = new List<SafetensorsTensorInfo>();
            var seen = new HashSet<string>();
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                {
                    throw new CheckpointException(path, property.Name, "corrupt header: the name appears twice");
                }
                if (property.Name == MetadataKey)
                {
                    ParseMetadata(path, property.Value, metadata);
                }
                else
                {
                    tensors.Add(ParseTensor(path, property.Name, property.Value, dataLength));
                }
            }
            CheckTiling(path, tensors, dataLength);
            return (metadata, tensors);
        }
    }

    private static void ParseMetadata(string path, JsonElement element, Dictionary<string, string> metadata)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new CheckpointException(path, null, $"corrupt header: '{MetadataKey}' must be an object of strings, found {element.ValueKind}");
        }
        foreach (var entry in element.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
            {
                throw new CheckpointException(path, null, $"corrupt header: metadata '{entry.Name}' must be a string, found {entry.Value.ValueKind}");
            }
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
            {
                throw new CheckpointException(path, null, $"corrupt header: metadata '{entry.Name}' appears twice");
            }
        }
    }

    private static SafetensorsTensorInfo ParseTensor(string path, string name, JsonElement element, long dataLength)
    {
        CheckpointException Corrupt(string problem) => new(path, name, $"corrupt header: {problem}");
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw Corrupt($"expected an object with dtype, shape and data_offsets, found {element.ValueKind}");
        }
        if (!element.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw Corrupt("no string 'dtype'");
        }
        if (!SafetensorsDTypeExtensions.TryParse(dtypeElement.GetString()!, out var dtype))
        {
            throw Corrupt($"unknown dtype '{dtypeElement.GetString()}'");
        }
        var shape = ReadNonNegativeIntegers(element, "shape") ?? throw Corrupt("'shape' must be an array of non-negative integers");
        var offsets = ReadNonNegativeIntegers(element, "data_offsets");
        if (offsets is not { Length: 2 })
        {
            throw Corrupt("'data_offsets' must be two non-negative integers [begin, end]");
        }
        var (begin, end) = (offsets[0], offsets[1]);
        var info = new SafetensorsTensorInfo(name, dtype, shape, begin, end);
        if (end < begin)
        {
            throw Corrupt($"data_offsets [{begin}, {end}] end before they begin");
        }
        long expectedBytes;
        try
        {
            expectedBytes = checked(shape.Aggregate(1L, (n, d) => n * d) * dtype.SizeInBytes());
        }
        catch (OverflowException)
        {
            throw Corrupt($"shape {info.ShapeText} overflows a 64-bit byte count");
        }
        if (end - begin != expectedBytes)
        {
            throw Corrupt($"data_offsets [{begin}, {end}] hold {end - begin} bytes, but shape {info.ShapeText} of {dtype.HeaderName()} needs {expectedBytes}");
        }
        if (end > dataLength)
        {
            throw new CheckpointException(path, name, $"truncated or out of range: data_offsets [{begin}, {end}] run past the end of the data section, which has {dataLength} bytes");
        }
        return info;
    }

    private static long[]? ReadNonNegativeIntegers(JsonElement element, string property)
    {
        if (!element.TryGetProperty(property, out var array) || array.ValueKind != JsonValueKind.Array)
        {
            return null;
        }
        var values = new long[array.GetArrayLength()];
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out var value) || value < 0)
            {
                return null;
            }
            values[i++] = value;
        }
        return values;
    }

    /// <summary>Byte ranges sorted by offset must cover [0, dataLength) exactly once.</summary>
    private static void CheckTiling(string path, List<SafetensorsTensorInfo> tensors, long dataLength)
    {
        tensors.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long covered = 0;
        SafetensorsTensorInfo? previous = null;
        foreach (var t in tensors)
        {
            if (t.Begin < covered)
            {
                throw new CheckpointException(path, t.Name, $"corrupt header: data_offsets [{t.Begin}, {t.End}] overlap tensor '{previous!.Name}' at [{previous.Begin}, {previous.End}]");
            }
            if (t.Begin > covered)
            {
                throw new CheckpointException(path, t.Name, $"corrupt header: data_offsets [{t.Begin}, {t.End}] leave bytes [{covered}, {t.Begin}) of the data section unused");
            }
            covered = t.End;
            previous = t;
        }
        if (covered != dataLength)
        {
            throw new CheckpointException(path, null, $"corrupt: the tensors cover {covered} bytes of data but the data section has {dataLength}");
        }
    }
}
