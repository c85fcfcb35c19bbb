namespace NativeContrast.Distributed;

/// <summary>The GPU that --device auto and cuda mean on this rank, or why this rank cannot have its --device (one line).</summary>
public readonly record struct RankDeviceChoice(int Gpu, string? Error);

/// <summary>
/// Which GPU each rank of a launch takes: the GPU of its local rank, so that the ranks of a node never share one
/// (NCCL refuses two ranks on one GPU), or the one GPU a rank sees when the launcher binds a GPU to each rank
/// (srun --gpus-per-task=1, a CUDA_VISIBLE_DEVICES=$LOCAL_RANK wrapper). A pure choice, tested without a GPU; the CLI
/// opens what it chooses.
/// </summary>
public static class RankDevice
{
    /// <summary>
    /// A single process, and --device cpu, keep GPU 0 (cuda:N keeps N). Under a launcher, auto and cuda take the GPU of
    /// the local rank; cuda:N is refused, since the command line is the same on every rank and would put them all on
    /// GPU N. A rank that sees a single GPU takes it: that is how a launcher that binds one GPU per rank shows it (and
    /// if two ranks do share it, NCCL's initialisation says so). With several GPUs visible, a local rank beyond them is
    /// refused (auto included: ranks on the CPU and ranks on GPUs cannot share collectives). <paramref name="gpuCount"/> is asked only then, so a CPU run never loads the driver;
    /// 0 GPUs leaves auto to fall back to the CPU and cuda to say why there is no GPU, as in a single process.
    /// </summary>
    public static RankDeviceChoice Choose(string device, LaunchEnvironment launch, Func<int> gpuCount)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(launch);
        ArgumentNullException.ThrowIfNull(gpuCount);
        var spec = device.Trim().ToLowerInvariant();
        if (!launch.IsMultiRank || spec == "cpu")
        {
            return new RankDeviceChoice(0, null);
        }
        if (spec.StartsWith("cuda:", StringComparison.Ordinal))
        {
            return new RankDeviceChoice(0,
                $"--device {device.Trim()}: under a launcher each rank takes the GPU of its local rank (rank {launch.Rank}: GPU {launch.LocalRank}); " +
                "pass --device cuda, and CUDA_VISIBLE_DEVICES to choose a node's GPUs");
        }
        var count = gpuCount();
        if (count == 1)
        {
            return new RankDeviceChoice(0, null);
        }
        if (count > 1 && launch.LocalRank >= count)
        {
            return new RankDeviceChoice(0,
                $"--device {device.Trim()}: rank {launch.Rank} has local rank {launch.LocalRank}, but its node has {count} GPU(s): " +
                $"each rank takes the GPU of its local rank, so launch at most {count} rank(s) per node (or bind one GPU to each rank)");
        }
        return new RankDeviceChoice(launch.LocalRank, null);
    }
}
