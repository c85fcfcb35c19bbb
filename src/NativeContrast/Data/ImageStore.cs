namespace NativeContrast.Data;

using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

/// <summary>
/// Fixed-size uint8 images packed back to back in native memory or in a memory-mapped file, so that a set larger
/// than 2 GiB (STL-10's unlabelled split is 2.8 GB) needs no managed array and a cached folder is never decoded again.
/// </summary>
public sealed unsafe class ImageStore : IDisposable
{
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;

    private ImageStore(int count, ImageShape shape, byte* pointer, MemoryMappedFile? file, MemoryMappedViewAccessor? view)
    {
        Count = count;
        Shape = shape;
        _base = pointer;
        _file = file;
        _view = view;
    }

    public int Count { get; }

    public ImageShape Shape { get; }

    public long Bytes => (long)Count * Shape.Bytes;

    public bool IsMapped => _file is not null;

    /// <summary>Zero-filled native memory for <paramref name="count"/> images.</summary>
    public static ImageStore Allocate(int count, ImageShape shape)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var bytes = (nuint)Math.Max(1, (long)count * shape.Bytes);
        return new ImageStore(count, shape, (byte*)NativeMemory.AllocZeroed(bytes), null, null);
    }

    /// <summary>Maps <paramref name="count"/> images stored from byte <paramref name="offset"/> of a file, read-only.</summary>
    public static ImageStore Map(string path, long offset, int count, ImageShape shape)
    {
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, mapName: null, 0, MemoryMappedFileAccess.Read);
        try
        {
            var view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            return new ImageStore(count, shape, pointer + view.PointerOffset + offset, file, view);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    public ReadOnlySpan<byte> this[int index] => Image(index);

    public ReadOnlySpan<byte> Image(int index)
    {
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), $"image {index} is outside a store of {Count} images");
        }
        ObjectDisposedException.ThrowIf(_base == null, this);
        return new ReadOnlySpan<byte>(_base + ((long)index * Shape.Bytes), Shape.Bytes);
    }

    /// <summary>The bytes of image <paramref name="index"/> for filling a store in native memory.</summary>
    public Span<byte> Writable(int index)
    {
        if (IsMapped)
        {
            throw new InvalidOperationException("a memory-mapped image store is read-only");
        }
        if ((uint)index >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), $"image {index} is outside a store of {Count} images");
        }
        ObjectDisposedException.ThrowIf(_base == null, this);
        return new Span<byte>(_base + ((long)index * Shape.Bytes), Shape.Bytes);
    }

    public void Dispose()
    {
        if (_base == null)
        {
            return;
        }
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _file!.Dispose();
        }
        else
        {
            NativeMemory.Free(_base);
        }
        _base = null;
    }
}

/// <summary>An <see cref="IImageDataset"/> over an <see cref="ImageStore"/> and a label array: every reader produces one.</summary>
public sealed class PackedImageDataset : IImageDataset
{
    private readonly ImageStore _store;
    private readonly int[]? _labels;

    /// <param name="labels">One label per image in [0, classNames.Count) or -1 for an unlabelled image; null for an unlabelled set.</param>
    public PackedImageDataset(string name, ImageStore store, int[]? labels, IReadOnlyList<string> classNames, ChannelStats? stats = null)
    {
        if (labels is not null && labels.Length != store.Count)
        {
            throw new ArgumentException($"{name}: {labels.Length} labels for {store.Count} images", nameof(labels));
        }
        Name = name;
        _store = store;
        _labels = labels;
        ClassNames = classNames;
        Stats = stats ?? ChannelStats.Measure(this);
        if (Stats.Channels != store.Shape.Channels)
        {
            throw new ArgumentException($"{name}: statistics for {Stats.Channels} channels on {store.Shape.Channels}-channel images", nameof(stats));
        }
    }

    public string Name { get; }

    public int Count => _store.Count;

    public ImageShape Shape => _store.Shape;

    public IReadOnlyList<string> ClassNames { get; }

    public bool HasLabels => _labels is not null;

    public ChannelStats Stats { get; }

    public ImageStore Store => _store;

    public ReadOnlySpan<byte> GetImage(int index) => _store.Image(index);

    public int GetLabel(int index) => _labels is null ? -1 : _labels[index];

    public void Dispose() => _store.Dispose();

    public override string ToString() => $"{Name}: {Count} images {Shape}{(HasLabels ? $", {ClassNames.Count} classes" : ", unlabelled")}";
}
