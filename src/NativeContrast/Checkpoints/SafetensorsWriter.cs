namespace NativeContrast.Checkpoints;

using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// Writes a safetensors file (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
/// JSON header padded with spaces to a multiple of 8 (so the data starts 8-byte aligned), then the tensors' raw
/// little-endian bytes, contiguous, in the header's order. Tensors are laid out by decreasing element size (I64
/// scalars first, then F32 in the order added), as the reference writer does, so every tensor is naturally aligned.
/// Tensor data is read only while <see cref="WriteTo"/> runs, streamed through the backend's CopyToHost in
/// chunks: a device arena is never copied to the host whole.
/// </summary>
public sealed class SafetensorsWriter
{
    public const int HeaderAlignment = 8;

    /// <summary>4 MiB of float32 per device-to-host copy: large enough to amortise the copy, small next to an arena.</summary>
    public const int DefaultChunkElements = 1 << 20;

    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly List<Entry> _entries = [];
    private readonly HashSet<string> _names = [];
    private readonly List<KeyValuePair<string, string>> _metadata = [];
    private readonly HashSet<string> _metadataKeys = [];
    private readonly int _chunkElements;

    public SafetensorsWriter(int chunkElements = DefaultChunkElements)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkElements, 1);
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors stores little-endian data; this host is big-endian");
        }
        _chunkElements = chunkElements;
    }

    /// <summary>A free-form string pair stored under "__metadata__".</summary>
    public void AddMetadata(string key, string value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        if (!_metadataKeys.Add(key))
        {
            throw new ArgumentException($"metadata key '{key}' is set twice", nameof(key));
        }
        _metadata.Add(new(key, value));
    }

    public void AddMetadata(IEnumerable<KeyValuePair<string, string>> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        foreach (var (key, value) in entries)
        {
            AddMetadata(key, value);
        }
    }

    /// <summary>A float32 tensor of <paramref name="backend"/>, read when the file is written; it must stay alive and unchanged until then.</summary>
    public void Add(string name, IBackend backend, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(tensor);
        AddEntry(new Entry(name, SafetensorsDType.F32, tensor.Shape, tensor.Length * sizeof(float), (stream, scratch) => WriteTensor(stream, backend, tensor, scratch)));
    }

    /// <summary>An int64 tensor from host values, e.g. a BatchNorm's <c>num_batches_tracked</c> scalar (shape []).</summary>
    public void AddInt64(string name, TensorShape shape, ReadOnlyMemory<long> values)
    {
        if (values.Length != shape.Length)
        {
            throw new ArgumentException($"tensor '{name}': shape {shape} needs {shape.Length} values, got {values.Length}", nameof(values));
        }
        AddEntry(new Entry(name, SafetensorsDType.I64, shape, values.Length * sizeof(long), (stream, _) => stream.Write(MemoryMarshal.AsBytes(values.Span))));
    }

    /// <summary>Writes the whole file to <paramref name="stream"/>.</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var ordered = Ordered();
        var header = BuildHeader(ordered, _metadata);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        // One chunk-sized staging buffer per file: saving happens between steps, never inside one.
        var largest = ordered.Count == 0 ? 1 : ordered.Max(e => e.Shape.Length);
        var scratch = GC.AllocateUninitializedArray<float>((int)Math.Clamp(largest, 1, _chunkElements));
        foreach (var entry in ordered)
        {
            entry.Write(stream, scratch);
        }
    }

    /// <summary>Writes the file atomically (see <see cref="AtomicFile"/>): a failure leaves any previous file intact.</summary>
    public void Save(string path) => AtomicFile.Write(path, WriteTo);

    /// <summary>The JSON header, space-padded so that 8 + its length is a multiple of <see cref="HeaderAlignment"/>.</summary>
    internal static byte[] BuildHeader(IReadOnlyList<Entry> ordered, IReadOnlyList<KeyValuePair<string, string>> metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, JsonOptions))
        {
            json.WriteStartObject();
            if (metadata.Count > 0)
            {
                json.WriteStartObject(SafetensorsFile.MetadataKey);
                foreach (var (key, value) in metadata)
                {
                    json.WriteString(key, value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var entry in ordered)
            {
                json.WriteStartObject(entry.Name);
                json.WriteString("dtype", entry.DType.HeaderName());
                json.WriteStartArray("shape");
                foreach (var dim in entry.Shape.Dims)
                {
                    json.WriteNumberValue(dim);
                }
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + entry.ByteLength);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += entry.ByteLength;
            }
            json.WriteEndObject();
        }
        var padded = (buffer.WrittenCount + HeaderAlignment - 1) / HeaderAlignment * HeaderAlignment;
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }

    private List<Entry> Ordered() => [.. _entries.OrderByDescending(e => e.DType.SizeInBytes())];

    private void AddEntry(Entry entry)
    {
        ArgumentException.ThrowIfNullOrEmpty(entry.Name, "name");
        if (entry.Name == SafetensorsFile.MetadataKey)
        {
            throw new ArgumentException($"'{SafetensorsFile.MetadataKey}' is reserved for metadata and cannot name a tensor", "name");
        }
        if (!_names.Add(entry.Name))
        {
            throw new ArgumentException($"tensor '{entry.Name}' is added twice", "name");
        }
        _entries.Add(entry);
    }

    private static void WriteTensor(Stream stream, IBackend backend, Tensor tensor, float[] scratch)
    {
        for (long start = 0; start < tensor.Length; start += scratch.Length)
        {
            var count = (int)Math.Min(scratch.Length, tensor.Length - start);
            var host = scratch.AsSpan(0, count);
            backend.CopyToHost(tensor.View(start, new TensorShape(count)), host);
            stream.Write(MemoryMarshal.AsBytes(host));
        }
    }

    /// <summary>One tensor: its header fields and how to stream its bytes (given a float scratch buffer).</summary>
    internal sealed record Entry(string Name, SafetensorsDType DType, TensorShape Shape, long ByteLength, Action<Stream, float[]> Write);
}
