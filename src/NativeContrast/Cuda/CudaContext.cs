namespace NativeContrast.Cuda;

/// <summary>
/// The primary context of one device, made current on whichever thread uses it (the driver's current context
/// is per thread). Owned by a <see cref="Backends.CudaBackend"/>.
/// </summary>
public sealed class CudaContext : IDisposable
{
    [ThreadStatic]
    private static IntPtr _currentOnThisThread;

    private IntPtr _handle;

    public CudaContext(int ordinal)
    {
        var why = CudaProbe.InitializeDriver();
        if (why is not null)
        {
            throw new CudaUnavailableException(why);
        }
        CudaCheck.Driver(DriverApi.cuDeviceGetCount(out var count), "cuDeviceGetCount");
        if (ordinal < 0 || ordinal >= count)
        {
            throw new CudaUnavailableException($"no CUDA device {ordinal}: the driver reports {count} device(s)");
        }
        Info = CudaDeviceInfo.Query(ordinal);
        CudaCheck.Driver(DriverApi.cuDeviceGet(out var device, ordinal), "cuDeviceGet");
        Device = device;
        CudaCheck.Driver(DriverApi.cuDevicePrimaryCtxRetain(out _handle, device), "cuDevicePrimaryCtxRetain");
        MakeCurrent();
    }

    public CudaDeviceInfo Info { get; }

    internal int Device { get; }

    /// <summary>Makes this context current on the calling thread (a no-op when it already is).</summary>
    public void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(_handle == IntPtr.Zero, this);
        if (_currentOnThisThread != _handle)
        {
            CudaCheck.Driver(DriverApi.cuCtxSetCurrent(_handle), "cuCtxSetCurrent");
            _currentOnThisThread = _handle;
        }
    }

    /// <summary>
    /// Frees device memory allocated in this context, making it current first. A failure throws, except after a
    /// fault that lost the context was already reported (every free then fails the same way, and says nothing new).
    /// Memory still held when the context is disposed went with it: there is nothing left to free.
    /// </summary>
    internal void Free(ulong pointer, nuint bytes)
    {
        if (_handle == IntPtr.Zero)
        {
            return;
        }
        MakeCurrent();
        var result = DriverApi.cuMemFree(pointer);
        if (CudaCheck.FreeFailureToReport(result, CudaCheck.ContextLossReported))
        {
            var (name, text) = CudaCheck.DriverError(result);
            throw new CudaException($"cuMemFree({bytes} bytes on cuda:{Info.Ordinal})", result, name, text);
        }
    }

    public (long FreeBytes, long TotalBytes) MemoryInfo()
    {
        MakeCurrent();
        CudaCheck.Driver(DriverApi.cuMemGetInfo(out var free, out var total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    public void Dispose()
    {
        if (_handle != IntPtr.Zero)
        {
            _ = DriverApi.cuDevicePrimaryCtxRelease(Device);
            _handle = IntPtr.Zero;
            _currentOnThisThread = IntPtr.Zero;
        }
    }
}

/// <summary>The CUDA backend cannot run here; the message is the one-line reason.</summary>
public sealed class CudaUnavailableException(string reason) : Exception(reason);
