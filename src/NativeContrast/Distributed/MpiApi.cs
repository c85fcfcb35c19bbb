namespace NativeContrast.Distributed;

using System.Runtime.InteropServices;
using NativeContrast.Cuda;

/// <summary>
/// The MPI entry points the engine uses, from Open MPI's mpi.h. Handles (MPI_Comm, MPI_Datatype, MPI_Op,
/// MPI_Errhandler) are pointers: Open MPI defines each predefined one as the address of an exported global
/// (MPI_COMM_WORLD is &amp;ompi_mpi_comm_world), read by <see cref="MpiHandles"/>.
/// </summary>
internal static unsafe partial class MpiApi
{
    public const int Success = 0;

    /// <summary>MPI_THREAD_SERIALIZED: any thread may call MPI, one at a time (the communicator holds a lock).</summary>
    public const int ThreadSerialized = 2;

    public const int MaxErrorString = 256;          // MPI_MAX_ERROR_STRING
    public const int MaxLibraryVersionString = 256; // MPI_MAX_LIBRARY_VERSION_STRING

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Initialized(out int flag);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Finalized(out int flag);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Init_thread(int* argc, byte*** argv, int required, out int provided);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Finalize();

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Abort(IntPtr comm, int errorCode);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Comm_rank(IntPtr comm, out int rank);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Comm_size(IntPtr comm, out int size);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Comm_set_errhandler(IntPtr comm, IntPtr errorHandler);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Error_string(int errorCode, byte* text, out int length);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Get_library_version(byte* version, out int length);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Allreduce(void* send, void* receive, int count, IntPtr datatype, IntPtr op, IntPtr comm);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Allgather(void* send, int sendCount, IntPtr sendType, void* receive, int receiveCount, IntPtr receiveType, IntPtr comm);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Reduce_scatter_block(void* send, void* receive, int receiveCount, IntPtr datatype, IntPtr op, IntPtr comm);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Bcast(void* buffer, int count, IntPtr datatype, int root, IntPtr comm);

    [LibraryImport(NativeLibraries.Mpi)]
    public static partial int MPI_Barrier(IntPtr comm);
}

/// <summary>Open MPI's predefined handles: the addresses of the globals its mpi.h names them after.</summary>
internal sealed class MpiHandles
{
    /// <summary>MPI_IN_PLACE: ((void *) 1) in Open MPI's mpi.h.</summary>
    public static unsafe void* InPlace => (void*)1;

    private MpiHandles(IntPtr library)
    {
        CommWorld = Export(library, "ompi_mpi_comm_world");
        Float = Export(library, "ompi_mpi_float");
        Byte = Export(library, "ompi_mpi_byte");
        Sum = Export(library, "ompi_mpi_op_sum");
        ErrorsReturn = Export(library, "ompi_mpi_errors_return");
    }

    public IntPtr CommWorld { get; }

    public IntPtr Float { get; }

    public IntPtr Byte { get; }

    public IntPtr Sum { get; }

    public IntPtr ErrorsReturn { get; }

    /// <summary>The handles of the loaded libmpi; throws <see cref="DllNotFoundException"/> or <see cref="CommunicatorException"/> with the reason.</summary>
    public static MpiHandles Load() => new(NativeLibraries.Load(NativeLibraries.Mpi));

    private static IntPtr Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out var address)
            ? address
            : throw new CommunicatorException($"{NativeLibraries.ResolvedMpi} exports no {name}: it is not Open MPI's libmpi, which the MPI binding needs");
}
