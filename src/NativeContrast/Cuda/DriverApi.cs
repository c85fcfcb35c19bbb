namespace NativeContrast.Cuda;

using System.Runtime.InteropServices;

/// <summary>The CUDA driver API entry points the engine uses (cuda.h). Handles are opaque pointers.</summary>
internal static unsafe partial class DriverApi
{
    public const int Success = 0;
    public const int ErrorNoDevice = 100;
    public const int ErrorNotReady = 600;
    public const int ErrorCooperativeLaunchTooLarge = 720;
    public const int ErrorNotPermitted = 800;
    public const int ErrorNotSupported = 801;

    public const int StreamNonBlocking = 0x1;
    public const int EventDefault = 0x0;
    public const int EventDisableTiming = 0x2;
    public const int MemHostAllocPortable = 0x1;
    public const int StreamCaptureModeGlobal = 0;
    public const int StreamCaptureModeThreadLocal = 1;
    public const int FuncAttributeMaxDynamicSharedSizeBytes = 8;

    // CUdevice_attribute values used by `info` and launch sizing.
    public const int AttrMaxThreadsPerBlock = 1;
    public const int AttrMaxSharedMemoryPerBlock = 8;
    public const int AttrClockRate = 13;
    public const int AttrMultiprocessorCount = 16;
    public const int AttrMemoryClockRate = 36;
    public const int AttrGlobalMemoryBusWidth = 37;
    public const int AttrL2CacheSize = 38;
    public const int AttrComputeCapabilityMajor = 75;
    public const int AttrComputeCapabilityMinor = 76;
    public const int AttrMaxSharedMemoryPerBlockOptin = 97;
    public const int AttrCooperativeLaunch = 95;

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuInit(uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDriverGetVersion(out int version);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGetErrorName(int error, out IntPtr name);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGetErrorString(int error, out IntPtr description);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGetCount(out int count);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGet(out int device, int ordinal);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGetName(byte* name, int length, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGetAttribute(out int value, int attribute, int device);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceTotalMem_v2")]
    public static partial int cuDeviceTotalMem(out nuint bytes, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDevicePrimaryCtxRetain(out IntPtr context, int device);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    public static partial int cuDevicePrimaryCtxRelease(int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuCtxSetCurrent(IntPtr context);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuCtxSynchronize();

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemGetInfo_v2")]
    public static partial int cuMemGetInfo(out nuint free, out nuint total);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemAlloc_v2")]
    public static partial int cuMemAlloc(out ulong pointer, nuint bytes);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemFree_v2")]
    public static partial int cuMemFree(ulong pointer);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuMemHostAlloc(out IntPtr pointer, nuint bytes, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuMemFreeHost(IntPtr pointer);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyHtoD_v2")]
    public static partial int cuMemcpyHtoD(ulong destination, void* source, nuint bytes);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoH_v2")]
    public static partial int cuMemcpyDtoH(void* destination, ulong source, nuint bytes);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyHtoDAsync_v2")]
    public static partial int cuMemcpyHtoDAsync(ulong destination, void* source, nuint bytes, IntPtr stream);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoHAsync_v2")]
    public static partial int cuMemcpyDtoHAsync(void* destination, ulong source, nuint bytes, IntPtr stream);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoDAsync_v2")]
    public static partial int cuMemcpyDtoDAsync(ulong destination, ulong source, nuint bytes, IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuMemsetD32Async(ulong destination, uint value, nuint count, IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuModuleLoadData(out IntPtr module, void* image);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuModuleUnload(IntPtr module);

    [LibraryImport(NativeLibraries.Driver, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int cuModuleGetFunction(out IntPtr function, IntPtr module, string name);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuFuncSetAttribute(IntPtr function, int attribute, int value);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuOccupancyMaxActiveBlocksPerMultiprocessor(out int blocks, IntPtr function, int blockSize, nuint dynamicSharedBytes);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuLaunchKernel(
        IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, IntPtr stream, void** parameters, void** extra);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuLaunchCooperativeKernel(
        IntPtr function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedBytes, IntPtr stream, void** parameters);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamCreate(out IntPtr stream, uint flags);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamDestroy_v2")]
    public static partial int cuStreamDestroy(IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamSynchronize(IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamWaitEvent(IntPtr stream, IntPtr ev, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamQuery(IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventCreate(out IntPtr ev, uint flags);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventDestroy_v2")]
    public static partial int cuEventDestroy(IntPtr ev);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventRecord(IntPtr ev, IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventSynchronize(IntPtr ev);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventElapsedTime(out float milliseconds, IntPtr start, IntPtr end);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamBeginCapture_v2")]
    public static partial int cuStreamBeginCapture(IntPtr stream, int mode);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamEndCapture(IntPtr stream, out IntPtr graph);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGraphInstantiateWithFlags(out IntPtr graphExec, IntPtr graph, ulong flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGraphLaunch(IntPtr graphExec, IntPtr stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGraphExecDestroy(IntPtr graphExec);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGraphDestroy(IntPtr graph);
}
