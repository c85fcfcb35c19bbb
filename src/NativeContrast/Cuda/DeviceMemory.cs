namespace NativeContrast.Cuda;

using NativeContrast.Tensors;

/// <summary>Float32 device memory backing tensors of the CUDA backend, allocated in and freed through its context.</summary>
public sealed class CudaStorage : TensorStorage
{
    private readonly CudaContext _context;
    private readonly nuint _bytes;

    public CudaStorage(long length, CudaContext context)
        : base(length)
    {
        _context = context;
        context.MakeCurrent();
        var bytes = (nuint)Math.Max(4, length * sizeof(float));
        _bytes = bytes;
        var result = DriverApi.cuMemAlloc(out var pointer, bytes);
        if (result != DriverApi.Success)
        {
            var (name, text) = CudaCheck.DriverError(result);
            var free = DriverApi.cuMemGetInfo(out var freeBytes, out var totalBytes) == DriverApi.Success
                ? $"; {freeBytes / (1 << 20)} MiB free of {totalBytes / (1 << 20)} MiB"
                : string.Empty;
            throw new CudaException($"cuMemAlloc({bytes} bytes)", result, name, text + free);
        }
        Pointer = pointer;
    }

    public ulong Pointer { get; private set; }

    public override Device Device => Device.Cuda;

    public override int DeviceOrdinal => _context.Info.Ordinal;

    /// <summary>Frees the memory with its own context current (the calling thread may have another); a failed free throws.</summary>
    protected override void Release()
    {
        if (Pointer != 0)
        {
            var pointer = Pointer;
            Pointer = 0;
            _context.Free(pointer, _bytes);
        }
    }
}

/// <summary>Page-locked host memory: the only kind the GPU copies from asynchronously.</summary>
public sealed unsafe class PinnedHostBuffer : IDisposable
{
    private IntPtr _pointer;

    public PinnedHostBuffer(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        CudaCheck.Driver(DriverApi.cuMemHostAlloc(out _pointer, (nuint)Math.Max(4, length * sizeof(float)), DriverApi.MemHostAllocPortable), $"cuMemHostAlloc({length * sizeof(float)} bytes)");
    }

    public long Length { get; }

    public Span<float> Span
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == IntPtr.Zero, this);
            return new Span<float>((void*)_pointer, checked((int)Length));
        }
    }

    public IntPtr Pointer => _pointer;

    public void Dispose()
    {
        if (_pointer != IntPtr.Zero)
        {
            _ = DriverApi.cuMemFreeHost(_pointer);
            _pointer = IntPtr.Zero;
        }
    }
}

public static class CudaTensorExtensions
{
    /// <summary>The device address of a CUDA tensor's first element; an error names a tensor that is not on the GPU.</summary>
    public static ulong DevicePointer(this Tensor tensor)
    {
        if (tensor.Storage is not CudaStorage storage)
        {
            throw new ArgumentException($"{tensor.Describe()} lives on {tensor.Device}; the CUDA backend needs a device tensor");
        }
        ObjectDisposedException.ThrowIf(storage.IsDisposed, tensor);
        return storage.Pointer + ((ulong)tensor.Offset * sizeof(float));
    }
}
