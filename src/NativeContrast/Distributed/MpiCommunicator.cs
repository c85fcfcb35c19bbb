namespace NativeContrast.Distributed;

using System.Diagnostics.CodeAnalysis;
using System.Text;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

/// <summary>
/// The ranks of MPI_COMM_WORLD through Open MPI's C API (libmpi.so.40): the collectives of CPU ranks, and the
/// launch and host-byte transport under <see cref="NcclCommunicator"/>. Tensors are CPU tensors, pinned while MPI
/// reads or writes them. MPI runs at MPI_THREAD_SERIALIZED: any thread may use the communicator, one call at a time.
/// Every MPI call is checked (MPI_ERRORS_RETURN on the communicator) and a failure names the call, the rank and
/// MPI's own text. One per process: MPI can be initialised once, and <see cref="Dispose"/> finalises it.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    private static readonly Lock InitGate = new();

    private readonly Lock _gate = new();
    private readonly MpiHandles _mpi;
    private readonly bool _initializedHere;
    private bool _disposed;

    /// <summary>
    /// Initialises MPI unless it already is and joins MPI_COMM_WORLD. When <paramref name="launch"/> announces a
    /// size, MPI's must match it: a launcher whose processes MPI does not see as one job (srun of an Open MPI built
    /// without its PMI) would otherwise give N jobs of one rank.
    /// </summary>
    public MpiCommunicator(LaunchEnvironment? launch = null)
    {
        try
        {
            _mpi = MpiHandles.Load();
        }
        catch (DllNotFoundException e)
        {
            throw new CommunicatorException($"{e.Message}: ranks launched by mpirun or srun need Open MPI (Debian: openmpi-bin)");
        }
        lock (InitGate)
        {
            Check(MpiApi.MPI_Finalized(out var finalized), "MPI_Finalized");
            if (finalized != 0)
            {
                throw new CommunicatorException("MPI was already finalised in this process: MPI can be initialised only once per process");
            }
            Check(MpiApi.MPI_Initialized(out var initialized), "MPI_Initialized");
            if (initialized == 0)
            {
                // Open MPI installs its stack-trace signal handlers only where none is installed, so the .NET
                // runtime's (which turn null dereferences into NullReferenceException) stay.
                Check(MpiApi.MPI_Init_thread(null, null, MpiApi.ThreadSerialized, out var provided), "MPI_Init_thread");
                _initializedHere = true;
                if (provided < MpiApi.ThreadSerialized)
                {
                    throw new CommunicatorException(
                        $"MPI_Init_thread provided thread level {provided}; the engine needs MPI_THREAD_SERIALIZED ({MpiApi.ThreadSerialized}) since .NET may call MPI from any thread");
                }
            }
        }
        Check(MpiApi.MPI_Comm_set_errhandler(_mpi.CommWorld, _mpi.ErrorsReturn), "MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)");
        Check(MpiApi.MPI_Comm_rank(_mpi.CommWorld, out var rank), "MPI_Comm_rank");
        Check(MpiApi.MPI_Comm_size(_mpi.CommWorld, out var size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        Name = $"mpi ({LibraryVersion()})";
        if (launch?.Size is { } announced && announced != size)
        {
            throw new CommunicatorException(
                $"the launcher announced {announced} ranks ({launch.Description}) but MPI_COMM_WORLD has {size}: with srun, pass --mpi=pmix (or pmi2) so that Open MPI sees one job");
        }
    }

    public int Rank { get; }

    public int Size { get; }

    public string Name { get; }

    public Device Device => Device.Cpu;

    public void AllReduce(Tensor tensor)
    {
        var data = Host(nameof(AllReduce), tensor);
        fixed (float* p = data)
        {
            lock (_gate)
            {
                Check(MpiApi.MPI_Allreduce(MpiHandles.InPlace, p, data.Length, _mpi.Float, _mpi.Sum, _mpi.CommWorld), $"MPI_Allreduce({tensor.Describe()})");
            }
        }
    }

    public void AllReduceMean(Tensor tensor)
    {
        AllReduce(tensor);
        TensorPrimitives.Multiply(tensor.Span, 1f / Size, tensor.Span);
    }

    public void AllGather(Tensor input, Tensor output)
    {
        var send = Host(nameof(AllGather), input);
        var receive = Host(nameof(AllGather), output);
        CollectiveCheck.Stacked(nameof(AllGather), input, output, Size);
        fixed (float* s = send)
        fixed (float* r = receive)
        {
            lock (_gate)
            {
                Check(
                    MpiApi.MPI_Allgather(s, send.Length, _mpi.Float, r, send.Length, _mpi.Float, _mpi.CommWorld),
                    $"MPI_Allgather({input.Describe()} -> {output.Describe()})");
            }
        }
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        var send = Host(nameof(ReduceScatter), input);
        var receive = Host(nameof(ReduceScatter), output);
        CollectiveCheck.Stacked(nameof(ReduceScatter), output, input, Size);
        fixed (float* s = send)
        fixed (float* r = receive)
        {
            lock (_gate)
            {
                Check(
                    MpiApi.MPI_Reduce_scatter_block(s, r, receive.Length, _mpi.Float, _mpi.Sum, _mpi.CommWorld),
                    $"MPI_Reduce_scatter_block({input.Describe()} -> {output.Describe()})");
            }
        }
    }

    public void Broadcast(Tensor tensor, int root)
    {
        var data = Host(nameof(Broadcast), tensor);
        CollectiveCheck.Root(nameof(Broadcast), root, Size);
        fixed (float* p = data)
        {
            lock (_gate)
            {
                Check(MpiApi.MPI_Bcast(p, data.Length, _mpi.Float, root, _mpi.CommWorld), $"MPI_Bcast({tensor.Describe()}, root {root})");
            }
        }
    }

    public void Broadcast(Span<byte> bytes, int root)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CollectiveCheck.Root(nameof(Broadcast), root, Size);
        fixed (byte* p = bytes)
        {
            lock (_gate)
            {
                Check(MpiApi.MPI_Bcast(p, bytes.Length, _mpi.Byte, root, _mpi.CommWorld), $"MPI_Bcast({bytes.Length} bytes, root {root})");
            }
        }
    }

    public void Barrier()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_gate)
        {
            Check(MpiApi.MPI_Barrier(_mpi.CommWorld), "MPI_Barrier");
        }
    }

    /// <summary>Writes the abort line to standard error and calls MPI_Abort, which kills every rank (mpirun exits with code 1).</summary>
    /// <remarks>Takes no lock: it must work while another thread waits in a collective.</remarks>
    [DoesNotReturn]
    public void Abort(string message)
    {
        Console.Error.WriteLine($"error: {CollectiveCheck.AbortLine(Rank, Size, message)}");
        _ = MpiApi.MPI_Abort(_mpi.CommWorld, 1);
        // Open MPI's MPI_Abort does not return; if another MPI's did, this rank must still not go on.
        Environment.Exit(1);
    }

    /// <summary>Finalises MPI if this communicator initialised it; MPI_Finalize waits for every rank to finalise.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (_initializedHere)
        {
            lock (_gate)
            {
                Check(MpiApi.MPI_Finalize(), "MPI_Finalize");
            }
        }
    }

    /// <summary>The elements of a CPU tensor, after checking that this communicator is open and the tensor is on the host.</summary>
    private Span<float> Host(string collective, Tensor tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CollectiveCheck.Device(Name, collective, tensor, Device.Cpu);
        return tensor.Span;
    }

    /// <summary>"Open MPI v4.1.4" from MPI_Get_library_version's "Open MPI v4.1.4, package: ..., ident: ...".</summary>
    private string LibraryVersion()
    {
        var text = stackalloc byte[MpiApi.MaxLibraryVersionString];
        Check(MpiApi.MPI_Get_library_version(text, out var length), "MPI_Get_library_version");
        var version = Encoding.UTF8.GetString(text, Math.Clamp(length, 0, MpiApi.MaxLibraryVersionString)).TrimEnd('\0', '\n', ' ');
        var comma = version.IndexOf(',', StringComparison.Ordinal);
        return comma < 0 ? version : version[..comma];
    }

    private void Check(int result, string call)
    {
        if (result != MpiApi.Success)
        {
            var where = Size > 0 ? $" on rank {Rank} of {Size}" : string.Empty;
            throw new CommunicatorException($"{call} failed{where}: {ErrorText(result)} (MPI error {result})");
        }
    }

    private static string ErrorText(int result)
    {
        var text = stackalloc byte[MpiApi.MaxErrorString];
        return MpiApi.MPI_Error_string(result, text, out var length) == MpiApi.Success
            ? Encoding.UTF8.GetString(text, Math.Clamp(length, 0, MpiApi.MaxErrorString))
            : "no text for this error";
    }
}
