namespace NativeContrast.Cuda;

using NativeContrast.Tensors;

/// <summary>Float32 device memory backing tensors of the CUDA backend.</summary>
public sealed class CudaStorage : TensorStorage
{
    public CudaStorage(long length)
        : base(length)
    {
        var bytes = (nuint)Math.Max(4, length * sizeof(float));
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

    protected override void Release()
    {
        if (Pointer != 0)
        {
            _ = DriverApi.cuMemFree(Pointer);
            Pointer = 0;
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
