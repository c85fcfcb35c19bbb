namespace NativeContrast.Distributed;

using NativeContrast.Backends;
using NativeContrast.Cuda;

/// <summary>The communicator a run uses and, in one line, why.</summary>
public sealed record CommunicatorChoice(ICommunicator Communicator, string Reason);

/// <summary>
/// Picks the communicator from the launcher's environment (<see cref="LaunchEnvironment"/>): a job of more than one
/// rank gets MPI for CPU backends and NCCL over MPI for the CUDA backend; anything else a
/// <see cref="SingleProcessCommunicator"/>, with neither library loaded. A rank that cannot set up NCCL once MPI
/// runs aborts the job, naming itself, since the other ranks would wait for it.
/// </summary>
public static class Communicators
{
    public static CommunicatorChoice Create(IBackend backend) => Create(backend, LaunchEnvironment.Read());

    public static CommunicatorChoice Create(IBackend backend, LaunchEnvironment launch)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(launch);
        if (!launch.IsMultiRank)
        {
            return new CommunicatorChoice(new SingleProcessCommunicator(backend), $"single process: {launch.Description}");
        }
        var mpi = new MpiCommunicator(launch);
        var where = $"rank {mpi.Rank} of {mpi.Size} ({launch.Description})";
        if (backend is not CudaBackend gpu)
        {
            return new CommunicatorChoice(mpi, $"{mpi.Name}, {where}");
        }
        try
        {
            var nccl = new NcclCommunicator(gpu, mpi);
            return new CommunicatorChoice(nccl, $"{nccl.Name} on {gpu.Name}, {where}");
        }
        catch (Exception e) when (e is CommunicatorException or CudaException)
        {
            mpi.Abort($"cannot set up NCCL on {gpu.Name}: {e.Message}");
            throw; // not reached: the compiler does not read Abort's [DoesNotReturn]
        }
    }
}
