namespace NativeContrast.Tensors;

/// <summary>
/// A row-major float32 view (offset + shape) over a <see cref="TensorStorage"/> on the CPU or a device.
/// Data never moves implicitly: copies between host and device go through the backend.
/// A tensor made by a backend owns its storage; views and reshapes share it and own nothing.
/// </summary>
public sealed class Tensor : IDisposable
{
    private readonly bool _ownsStorage;

    public Tensor(TensorStorage storage, TensorShape shape, long offset = 0, bool ownsStorage = true, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(storage);
        if (offset < 0 || offset + shape.Length > storage.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"view {shape} at offset {offset} does not fit a storage of {storage.Length} elements");
        }
        Storage = storage;
        Shape = shape;
        Offset = offset;
        Name = name;
        _ownsStorage = ownsStorage;
    }

    public TensorStorage Storage { get; }

    public TensorShape Shape { get; }

    /// <summary>Offset of the first element in the storage, in elements.</summary>
    public long Offset { get; }

    /// <summary>Optional name used in error messages (a parameter's name, a buffer's role).</summary>
    public string? Name { get; }

    /// <summary>
    /// How an image batch's elements are ordered, when the producer knows it. Views and reshapes keep it, so an NCHW
    /// batch reshaped to an NHWC shape is still known to be NCHW and a model that reads NHWC rejects it.
    /// </summary>
    public ImageLayout Layout { get; set; }

    /// <summary>A view of this tensor's elements tagged as ordered by <paramref name="layout"/> (nothing is copied; the view owns nothing).</summary>
    public Tensor WithLayout(ImageLayout layout) => new(Storage, Shape, Offset, ownsStorage: false, Name) { Layout = layout };

    public DType DType => DType.Float32;

    public Device Device => Storage.Device;

    public long Length => Shape.Length;

    public int Rows => Shape.Rows;

    public int Cols => Shape.Cols;

    public string Describe() => $"{Name ?? "tensor"} {Shape}{(Layout == ImageLayout.Unspecified ? "" : $" ({Layout})")}";

    /// <summary>The host elements of a CPU tensor. A device tensor must be copied to the host first.</summary>
    public Span<float> Span
    {
        get
        {
            if (Storage is not CpuStorage cpu)
            {
                throw new InvalidOperationException($"{Describe()} lives on {Device}; copy it to the host before reading its elements");
            }
            ObjectDisposedException.ThrowIf(cpu.IsDisposed, this);
            return cpu.Data.AsSpan(checked((int)Offset), checked((int)Length));
        }
    }

    /// <summary>A view of <paramref name="length"/> elements starting at <paramref name="offset"/>, with the given shape.</summary>
    public Tensor View(long offset, TensorShape shape, string? name = null)
    {
        if (offset < 0 || offset + shape.Length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"view {shape} at offset {offset} does not fit {Describe()}");
        }
        return new Tensor(Storage, shape, Offset + offset, ownsStorage: false, name ?? Name) { Layout = Layout };
    }

    public Tensor Reshape(params int[] dims)
    {
        var shape = new TensorShape(dims);
        if (shape.Length != Length)
        {
            throw new ArgumentException($"cannot reshape {Describe()} ({Length} elements) to {shape} ({shape.Length} elements)", nameof(dims));
        }
        return new Tensor(Storage, shape, Offset, ownsStorage: false, Name) { Layout = Layout };
    }

    /// <summary>Rows [start, start+count) of a tensor read as a matrix.</summary>
    public Tensor SliceRows(int start, int count)
    {
        var dims = Shape.Dims.ToArray();
        if (dims.Length == 0 || start < 0 || count < 0 || start + count > dims[0])
        {
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) are outside {Describe()}");
        }
        var rowLength = dims[0] == 0 ? 0 : Length / dims[0];
        dims[0] = count;
        return View(start * rowLength, new TensorShape(dims));
    }

    public void Dispose()
    {
        if (_ownsStorage)
        {
            Storage.Dispose();
        }
    }

    public override string ToString() => $"Tensor({Describe()}, {Device})";
}

/// <summary>The order of an image batch's elements: NHWC is what the engine's models read (see Nn/Conv2d).</summary>
public enum ImageLayout
{
    /// <summary>Not an image batch, or its producer did not say.</summary>
    Unspecified,

    /// <summary>[N, H, W, C]: channels interleaved, the engine's layout.</summary>
    Nhwc,

    /// <summary>[N, C, H, W]: channel planes, PyTorch's layout.</summary>
    Nchw,
}
