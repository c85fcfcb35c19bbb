namespace NativeContrast.Distributed;

using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>
/// GPU ranks through NCCL 2 (libnccl.so.2), one device each: the collectives are queued on the CUDA backend's stream
/// like its kernels, on tensors of its device. Over an <see cref="MpiCommunicator"/>, rank 0 makes NCCL's unique id
/// and MPI broadcasts it; MPI also carries host bytes, the barrier and the abort. Without one, it is a job of one
/// rank whose unique id is made locally, so that a single GPU tests the binding. Every ncclResult_t is checked; a
/// failure names the call, the rank, NCCL's error and its last message.
/// </summary>
public sealed unsafe class NcclCommunicator : ICommunicator
{
    private readonly CudaBackend _backend;
    private readonly MpiCommunicator? _host;
    private IntPtr _comm;

    /// <summary>
    /// Joins the ranks of <paramref name="host"/> (or makes a job of one rank without it) on the backend's device.
    /// Takes ownership of <paramref name="host"/>, which is disposed after NCCL's communicator. Collective: every rank
    /// of <paramref name="host"/> must call it, and one that fails must abort the job (the others wait for the id).
    /// </summary>
    public NcclCommunicator(CudaBackend backend, MpiCommunicator? host = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        _backend = backend;
        _host = host;
        Rank = host?.Rank ?? 0;
        Size = host?.Size ?? 1;
        var version = LoadedVersion();
        var id = default(NcclUniqueId);
        if (Rank == 0)
        {
            Check(NcclApi.ncclGetUniqueId(&id), "ncclGetUniqueId");
        }
        host?.Broadcast(new Span<byte>(id.Internal, NcclApi.UniqueIdBytes), root: 0);
        // NCCL takes the device of the current context: the backend's primary context is the runtime's context too.
        backend.Context.MakeCurrent();
        Check(NcclApi.ncclCommInitRank(out _comm, Size, id, Rank), $"ncclCommInitRank({Size} ranks, cuda:{backend.DeviceOrdinal})");
        Name = host is null ? $"nccl {version} (one rank)" : $"nccl {version} over {host.Name}";
    }

    public int Rank { get; }

    public int Size { get; }

    public string Name { get; }

    public Device Device => Device.Cuda;

    /// <summary>The loaded libnccl, for reports.</summary>
    public static string? LibraryFile => NativeLibraries.LoadedPath(NativeLibraries.ResolvedNccl);

    /// <summary>Null when NCCL loads, else the one-line reason (not found, or not NCCL 2).</summary>
    public static string? WhyUnavailable()
    {
        try
        {
            _ = LoadedVersion();
            return null;
        }
        catch (CommunicatorException e)
        {
            return e.Message;
        }
    }

    /// <summary>The loaded NCCL's version, "2.21.5"; throws <see cref="CommunicatorException"/> with the reason when none loads.</summary>
    public static string LoadedVersion()
    {
        int code;
        try
        {
            if (NcclApi.ncclGetVersion(out code) != NcclApi.Success)
            {
                throw new CommunicatorException($"ncclGetVersion failed in {NativeLibraries.ResolvedNccl}");
            }
        }
        catch (DllNotFoundException e)
        {
            throw new CommunicatorException(
                $"{e.Message}: GPU ranks need NCCL 2 (PyTorch's wheels ship it in site-packages/nvidia/nccl/lib; put that folder on LD_LIBRARY_PATH, and across nodes pass it on with mpirun -x LD_LIBRARY_PATH)");
        }
        catch (EntryPointNotFoundException e)
        {
            throw new CommunicatorException($"{NativeLibraries.ResolvedNccl} is not NCCL 2: {e.Message}");
        }
        // NCCL_VERSION_CODE: major·10000 + minor·100 + patch since 2.9, major·1000 + minor·100 + patch before.
        return code >= 10000 ? $"{code / 10000}.{code % 10000 / 100}.{code % 100}" : $"{code / 1000}.{code % 1000 / 100}.{code % 100}";
    }

    public void AllReduce(Tensor tensor)
    {
        var p = Pointer(nameof(AllReduce), tensor);
        Check(
            NcclApi.ncclAllReduce(p, p, (nuint)tensor.Length, NcclApi.Float32, NcclApi.Sum, _comm, _backend.Stream.Handle),
            $"ncclAllReduce({tensor.Describe()})");
    }

    public void AllReduceMean(Tensor tensor)
    {
        AllReduce(tensor);
        _backend.Scale(tensor, 1f / Size, tensor);
    }

    public void AllGather(Tensor input, Tensor output)
    {
        var send = Pointer(nameof(AllGather), input);
        var receive = Pointer(nameof(AllGather), output);
        CollectiveCheck.Stacked(nameof(AllGather), input, output, Size);
        Check(
            NcclApi.ncclAllGather(send, receive, (nuint)input.Length, NcclApi.Float32, _comm, _backend.Stream.Handle),
            $"ncclAllGather({input.Describe()} -> {output.Describe()})");
    }

    public void ReduceScatter(Tensor input, Tensor output)
    {
        var send = Pointer(nameof(ReduceScatter), input);
        var receive = Pointer(nameof(ReduceScatter), output);
        CollectiveCheck.Stacked(nameof(ReduceScatter), output, input, Size);
        Check(
            NcclApi.ncclReduceScatter(send, receive, (nuint)output.Length, NcclApi.Float32, NcclApi.Sum, _comm, _backend.Stream.Handle),
            $"ncclReduceScatter({input.Describe()} -> {output.Describe()})");
    }

    public void Broadcast(Tensor tensor, int root)
    {
        var p = Pointer(nameof(Broadcast), tensor);
        CollectiveCheck.Root(nameof(Broadcast), root, Size);
        Check(
            NcclApi.ncclBroadcast(p, p, (nuint)tensor.Length, NcclApi.Float32, root, _comm, _backend.Stream.Handle),
            $"ncclBroadcast({tensor.Describe()}, root {root})");
    }

    /// <summary>Host bytes go over MPI (with one rank there is nothing to send).</summary>
    public void Broadcast(Span<byte> bytes, int root)
    {
        ObjectDisposedException.ThrowIf(_comm == IntPtr.Zero, this);
        CollectiveCheck.Root(nameof(Broadcast), root, Size);
        _host?.Broadcast(bytes, root);
    }

    /// <summary>
    /// Waits for this rank's stream, then meets the other ranks over MPI. The wait polls NCCL's asynchronous error
    /// beside the stream: a collective whose peer has died never completes, and NCCL reports it only there (then the
    /// communicator is aborted, so that its kernels stop waiting, and the error is thrown).
    /// </summary>
    public void Barrier()
    {
        ObjectDisposedException.ThrowIf(_comm == IntPtr.Zero, this);
        _backend.Context.MakeCurrent();
        var spins = 0;
        while (true)
        {
            var idle = _backend.Stream.IsIdle();
            ThrowOnAsyncError();
            if (idle)
            {
                break;
            }
            // Collectives of a step take microseconds to milliseconds: spin briefly, then stop burning a core.
            if (++spins < 1000)
            {
                Thread.SpinWait(64);
            }
            else
            {
                Thread.Sleep(1);
            }
        }
        _host?.Barrier();
    }

    /// <summary>Throws NCCL's asynchronous error, if it has one, after aborting the communicator (it cannot go on).</summary>
    private void ThrowOnAsyncError()
    {
        Check(NcclApi.ncclCommGetAsyncError(_comm, out var asyncError), "ncclCommGetAsyncError");
        if (asyncError == NcclApi.Success)
        {
            return;
        }
        var message = Failure(asyncError, "an earlier collective (ncclCommGetAsyncError)");
        _ = NcclApi.ncclCommAbort(_comm);
        _comm = IntPtr.Zero;
        throw new CommunicatorException(message);
    }

    /// <summary>Aborts NCCL's communicator (its kernels stop waiting for peers), then the job through MPI, or throws with one rank.</summary>
    [DoesNotReturn]
    public void Abort(string message)
    {
        if (_comm != IntPtr.Zero)
        {
            _ = NcclApi.ncclCommAbort(_comm);
            _comm = IntPtr.Zero;
        }
        if (_host is not null)
        {
            _host.Abort(message);
        }
        throw new CommunicatorAbortedException(CollectiveCheck.AbortLine(Rank, Size, message));
    }

    /// <summary>
    /// Destroys NCCL's communicator (aborts it when that fails), then disposes the MPI communicator. Throws nothing:
    /// it runs while an earlier failure (a lost context, a dead peer) may be unwinding, which must stay the one reported.
    /// </summary>
    public void Dispose()
    {
        try
        {
            if (_comm != IntPtr.Zero)
            {
                var comm = _comm;
                _comm = IntPtr.Zero;
                // ncclCommDestroy finalises the communicator first, which flushes the collectives still queued.
                _backend.Context.MakeCurrent();
                if (NcclApi.ncclCommDestroy(comm) != NcclApi.Success)
                {
                    _ = NcclApi.ncclCommAbort(comm);
                }
            }
        }
        catch (CudaException)
        {
            // The context is gone with the device's fault, which its own exception reports.
        }
        finally
        {
            _host?.Dispose();
        }
    }

    /// <summary>The device address of a tensor of the backend's device, with that device's context current.</summary>
    private ulong Pointer(string collective, Tensor tensor)
    {
        ObjectDisposedException.ThrowIf(_comm == IntPtr.Zero, this);
        CollectiveCheck.Device(Name, collective, tensor, Device.Cuda, _backend.DeviceOrdinal);
        _backend.Context.MakeCurrent();
        return tensor.DevicePointer();
    }

    private void Check(int result, string call)
    {
        if (result != NcclApi.Success)
        {
            throw new CommunicatorException(Failure(result, call));
        }
    }

    private string Failure(int result, string call)
    {
        var name = result >= 0 && result < NcclApi.ResultNames.Length ? NcclApi.ResultNames[result] : "ncclResult";
        var text = Marshal.PtrToStringUTF8(NcclApi.ncclGetErrorString(result));
        return $"{call} failed on rank {Rank} of {Size}: {name} ({result}): {text}{LastError()}; NCCL_DEBUG=WARN prints NCCL's own report";
    }

    /// <summary>"; " and NCCL's last error message, when this NCCL has ncclGetLastError (2.13 and later) and one is set.</summary>
    private static string LastError()
    {
        try
        {
            // Its communicator argument is unused (nccl.h): the message is the process's last.
            var last = Marshal.PtrToStringUTF8(NcclApi.ncclGetLastError(IntPtr.Zero));
            return string.IsNullOrWhiteSpace(last) ? string.Empty : $"; {last.Trim()}";
        }
        catch (EntryPointNotFoundException)
        {
            return string.Empty;
        }
    }
}
