namespace NativeContrast.Distributed;

using System.Runtime.InteropServices;
using NativeContrast.Cuda;

/// <summary>
/// The NCCL 2 entry points the engine uses (nccl.h). A communicator is an opaque pointer; buffers are device
/// pointers (ulong, as in <see cref="DriverApi"/>); streams are the driver's CUstream, which is the runtime's cudaStream_t.
/// </summary>
internal static unsafe partial class NcclApi
{
    public const int Success = 0;          // ncclSuccess
    public const int Float32 = 7;          // ncclFloat32
    public const int Sum = 0;              // ncclSum
    public const int UniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES

    /// <summary>ncclResult_t's names, by value.</summary>
    public static readonly string[] ResultNames =
    [
        "ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError",
        "ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress",
    ];

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclGetVersion(out int version);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclGetUniqueId(NcclUniqueId* uniqueId);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclCommInitRank(out IntPtr comm, int ranks, NcclUniqueId uniqueId, int rank);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclCommDestroy(IntPtr comm);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclCommAbort(IntPtr comm);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclCommGetAsyncError(IntPtr comm, out int asyncError);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial IntPtr ncclGetErrorString(int result);

    /// <summary>NCCL 2.13 and later: the last error's detail on a communicator.</summary>
    [LibraryImport(NativeLibraries.Nccl)]
    public static partial IntPtr ncclGetLastError(IntPtr comm);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclAllReduce(ulong send, ulong receive, nuint count, int datatype, int op, IntPtr comm, IntPtr stream);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclAllGather(ulong send, ulong receive, nuint sendCount, int datatype, IntPtr comm, IntPtr stream);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclReduceScatter(ulong send, ulong receive, nuint receiveCount, int datatype, int op, IntPtr comm, IntPtr stream);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclBroadcast(ulong send, ulong receive, nuint count, int datatype, int root, IntPtr comm, IntPtr stream);
}

/// <summary>ncclUniqueId: 128 opaque bytes that rank 0 makes and every rank passes to ncclCommInitRank (by value).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NcclUniqueId
{
    public fixed byte Internal[NcclApi.UniqueIdBytes];
}
