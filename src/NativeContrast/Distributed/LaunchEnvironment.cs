namespace NativeContrast.Distributed;

using System.Globalization;

/// <summary>
/// What the launcher told this process through its environment: how many ranks the job has, which one this is, its
/// rank on this node (to choose a GPU) and which variables said so. Read in this order, the first launcher found wins:
/// <list type="bullet">
/// <item>Open MPI's mpirun: OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK;</item>
/// <item>PMI-2 launchers (MPICH's Hydra, srun --mpi=pmi2): PMI_SIZE, PMI_RANK, MPI_LOCALRANKID;</item>
/// <item>Slurm's srun: SLURM_STEP_NUM_TASKS, SLURM_PROCID, SLURM_LOCALID. Not SLURM_NTASKS: a batch script has it
/// (and SLURM_PROCID=0) too, and would take itself for rank 0 of the allocation; only srun's tasks have a step;</item>
/// <item>other PMIx launchers (PRRTE's prterun): PMIX_RANK, without a size (MPI tells it).</item>
/// </list>
/// When the launcher found does not set its own local-rank variable (srun --mpi=pmi2 sets PMI_RANK but not
/// MPI_LOCALRANKID), the local rank is the first of the others that is set, else 0.
/// Nothing of these, or a size of 1: a single process, which needs neither MPI nor NCCL.
/// </summary>
public sealed record LaunchEnvironment
{
    /// <summary>Ranks in the job as the launcher announced them; null when it said only that there is a launcher (PMIx).</summary>
    public int? Size { get; private init; }

    public int Rank { get; private init; }

    /// <summary>This rank's index among the ranks on its node (0 when the launcher does not say): the GPU it should take.</summary>
    public int LocalRank { get; private init; }

    /// <summary>Which launcher and variables were read, e.g. "OMPI_COMM_WORLD_SIZE=2, OMPI_COMM_WORLD_RANK=1 (Open MPI's mpirun)", or why none.</summary>
    public string Description { get; private init; } = "";

    /// <summary>True when the job has (or may have) more than one rank, so that MPI must be initialised.</summary>
    public bool IsMultiRank => Size is null or > 1;

    /// <summary>This process's environment.</summary>
    public static LaunchEnvironment Read() => From(Environment.GetEnvironmentVariable);

    /// <summary>The launch described by <paramref name="variable"/> (null for a variable that is not set).</summary>
    public static LaunchEnvironment From(Func<string, string?> variable)
    {
        ArgumentNullException.ThrowIfNull(variable);
        (string Size, string Rank, string Local, string Launcher)[] launchers =
        [
            ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI's mpirun"),
            ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "a PMI-2 launcher"),
            ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "Slurm's srun"),
        ];
        string[] localNames = [.. launchers.Select(l => l.Local)];
        foreach (var (sizeName, rankName, localName, launcher) in launchers)
        {
            if (variable(sizeName) is null)
            {
                continue;
            }
            var size = Number(variable, sizeName, 1);
            var rank = Number(variable, rankName, 0);
            if (rank >= size)
            {
                throw new CommunicatorException($"{rankName}={rank} is not a rank of a job of {sizeName}={size}");
            }
            return new LaunchEnvironment
            {
                Size = size,
                Rank = rank,
                LocalRank = FirstLocalRank(variable, [localName, .. localNames.Where(n => n != localName)]),
                Description = $"{sizeName}={size}, {rankName}={rank} ({launcher})",
            };
        }
        if (variable("PMIX_RANK") is not null)
        {
            var rank = Number(variable, "PMIX_RANK", 0);
            return new LaunchEnvironment
            {
                Size = null,
                Rank = rank,
                LocalRank = FirstLocalRank(variable, localNames),
                Description = $"PMIX_RANK={rank} (a PMIx launcher; MPI tells the size)",
            };
        }
        return new LaunchEnvironment
        {
            Size = 1,
            Description = "no launcher (none of OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_STEP_NUM_TASKS, PMIX_RANK is set)",
        };
    }

    /// <summary>The first of <paramref name="names"/> that is set (a whole number), else 0.</summary>
    private static int FirstLocalRank(Func<string, string?> variable, IEnumerable<string> names) =>
        names.FirstOrDefault(n => variable(n) is not null) is { } name ? Number(variable, name, 0) : 0;

    /// <summary>A variable that must hold a whole number of at least <paramref name="minimum"/> (a missing one is an error too).</summary>
    private static int Number(Func<string, string?> variable, string name, int minimum)
    {
        var text = variable(name);
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value < minimum)
        {
            throw new CommunicatorException(
                text is null ? $"{name} is not set, though the launcher set the other variables of a job" : $"{name}='{text}': expected a whole number of at least {minimum}");
        }
        return value;
    }
}
