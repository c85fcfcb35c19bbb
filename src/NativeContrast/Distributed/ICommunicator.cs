namespace NativeContrast.Distributed;

using System.Diagnostics.CodeAnalysis;
using NativeContrast.Tensors;

/// <summary>
/// The collectives a data-parallel step needs, over the ranks of one job: <see cref="SingleProcessCommunicator"/>
/// (one rank, every collective the identity), <see cref="MpiCommunicator"/> (CPU ranks, Open MPI) and
/// <see cref="NcclCommunicator"/> (GPU ranks, NCCL on the CUDA backend's stream, MPI for launch and host bytes).
/// <see cref="Communicators.Create(Backends.IBackend)"/> picks one from the launcher's environment.
/// Every rank must call the same collectives in the same order with the same lengths and root; tensors must live
/// where the implementation computes (<see cref="Device"/>), which each call checks. On a device, collectives are
/// queued on the backend's stream like its other ops. A rank that cannot go on must call <see cref="Abort"/>:
/// the others would otherwise wait in their next collective (or in MPI_Finalize, which waits for every rank).
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This process's rank, 0 to <see cref="Size"/> - 1.</summary>
    int Rank { get; }

    /// <summary>How many ranks the job has.</summary>
    int Size { get; }

    /// <summary>What carries the collectives, e.g. "mpi (Open MPI v4.1.4)" or "single process".</summary>
    string Name { get; }

    /// <summary>Where the tensors of every collective must live.</summary>
    Device Device { get; }

    /// <summary>tensor ← Σ over ranks of tensor, in place; every rank gets the same result.</summary>
    void AllReduce(Tensor tensor);

    /// <summary>tensor ← (Σ over ranks of tensor) · (1 / <see cref="Size"/>), in place: the sum, then one multiplication.</summary>
    void AllReduceMean(Tensor tensor);

    /// <summary>
    /// output ← every rank's input, concatenated in rank order along the first axis: input [n, ...] on each rank,
    /// output [<see cref="Size"/>·n, ...] with rank r's rows at [r·n, (r + 1)·n).
    /// </summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary>
    /// output ← rank <see cref="Rank"/>'s block of rows of the sum over ranks of input: input
    /// [<see cref="Size"/>·n, ...], output [n, ...] = Σ over ranks of input rows [Rank·n, (Rank + 1)·n).
    /// </summary>
    void ReduceScatter(Tensor input, Tensor output);

    /// <summary>tensor ← rank <paramref name="root"/>'s tensor, in place.</summary>
    void Broadcast(Tensor tensor, int root);

    /// <summary>bytes ← rank <paramref name="root"/>'s bytes (host memory on every implementation; same length on every rank).</summary>
    void Broadcast(Span<byte> bytes, int root);

    /// <summary>Returns once every rank has called it (and, on a device, once this rank's queued work is done).</summary>
    void Barrier();

    /// <summary>
    /// Ends every rank of the job with one line that names this rank and <paramref name="message"/>: under MPI,
    /// "error: rank R of N aborted the job: message" on standard error, then every process is killed; in a single
    /// process, a <see cref="CommunicatorAbortedException"/> whose message is that line without "error: ", so that its
    /// caller decides how to exit (the CLI prints it as the same line).
    /// </summary>
    [DoesNotReturn]
    void Abort(string message);
}

/// <summary>A collective, or setting up a communicator, failed; the message names the library call and why.</summary>
public class CommunicatorException(string message) : Exception(message);

/// <summary>A single-process job was aborted through <see cref="ICommunicator.Abort"/>; the message names the rank.</summary>
public sealed class CommunicatorAbortedException(string message) : CommunicatorException(message);
