namespace NativeContrast.Tests.Distributed;

using NativeContrast.Distributed;

/// <summary>Which launcher's variables say how many ranks the job has and which one this process is.</summary>
public class LaunchEnvironmentTests
{
    private static LaunchEnvironment Launch(params (string Name, string Value)[] variables)
    {
        var set = variables.ToDictionary(v => v.Name, v => v.Value);
        return LaunchEnvironment.From(name => set.GetValueOrDefault(name));
    }

    [Test]
    public void NoLauncherIsASingleProcess()
    {
        var launch = Launch();
        Assert.That((launch.Size, launch.Rank, launch.LocalRank, launch.IsMultiRank), Is.EqualTo(((int?)1, 0, 0, false)));
    }

    [Test]
    public void OpenMpisMpirunGivesSizeRankAndLocalRank()
    {
        var launch = Launch(("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"));
        Assert.That((launch.Size, launch.Rank, launch.LocalRank, launch.IsMultiRank), Is.EqualTo(((int?)4, 3, 1, true)));
        Assert.That(launch.Description, Is.EqualTo("OMPI_COMM_WORLD_SIZE=4, OMPI_COMM_WORLD_RANK=3 (Open MPI's mpirun)"));
    }

    [Test]
    public void MpirunInsideASlurmAllocationIsReadAsMpirun()
    {
        var launch = Launch(
            ("OMPI_COMM_WORLD_SIZE", "8"), ("OMPI_COMM_WORLD_RANK", "5"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("SLURM_STEP_NUM_TASKS", "2"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8"));
        Assert.That((launch.Size, launch.Rank, launch.LocalRank), Is.EqualTo(((int?)8, 5, 1)));
    }

    [Test]
    public void PmiTwoLaunchersGiveSizeRankAndLocalRank()
    {
        var launch = Launch(("PMI_SIZE", "2"), ("PMI_RANK", "1"), ("MPI_LOCALRANKID", "1"));
        Assert.That((launch.Size, launch.Rank, launch.LocalRank), Is.EqualTo(((int?)2, 1, 1)));
    }

    [Test]
    public void SrunWithPmiTwoTakesTheLocalRankFromSlurm()
    {
        // Slurm's pmi2 plugin sets PMI_SIZE and PMI_RANK but not MPI_LOCALRANKID: its tasks' local rank is SLURM_LOCALID.
        var launch = Launch(("PMI_SIZE", "8"), ("PMI_RANK", "5"), ("SLURM_STEP_NUM_TASKS", "8"), ("SLURM_PROCID", "5"), ("SLURM_LOCALID", "1"));
        Assert.That((launch.Size, launch.Rank, launch.LocalRank), Is.EqualTo(((int?)8, 5, 1)));
        Assert.That(Launch(("PMI_SIZE", "8"), ("PMI_RANK", "5")).LocalRank, Is.Zero, "no local rank anywhere: 0");
    }

    [Test]
    public void SrunTasksAreReadFromTheirStep()
    {
        var launch = Launch(("SLURM_STEP_NUM_TASKS", "16"), ("SLURM_PROCID", "9"), ("SLURM_LOCALID", "1"), ("SLURM_NTASKS", "16"));
        Assert.That((launch.Size, launch.Rank, launch.LocalRank, launch.IsMultiRank), Is.EqualTo(((int?)16, 9, 1, true)));
    }

    [Test]
    public void ABatchScriptOutsideSrunIsASingleProcess()
    {
        // sbatch sets SLURM_NTASKS (and SLURM_PROCID=0) for the script itself; only srun's tasks have a step.
        var launch = Launch(("SLURM_NTASKS", "16"), ("SLURM_PROCID", "0"), ("SLURM_JOB_ID", "200505"));
        Assert.That(launch.IsMultiRank, Is.False);
    }

    [Test]
    public void APmixRankAloneLeavesTheSizeToMpi()
    {
        var launch = Launch(("PMIX_RANK", "2"));
        Assert.That((launch.Size, launch.Rank, launch.IsMultiRank), Is.EqualTo(((int?)null, 2, true)));
    }

    [Test]
    public void APmixRankUnderSrunTakesTheLocalRankFromSlurm() =>
        Assert.That(Launch(("PMIX_RANK", "3"), ("SLURM_LOCALID", "2")).LocalRank, Is.EqualTo(2));

    [Test]
    public void ALauncherOfOneRankIsASingleProcess()
    {
        Assert.That(Launch(("OMPI_COMM_WORLD_SIZE", "1"), ("OMPI_COMM_WORLD_RANK", "0")).IsMultiRank, Is.False);
    }

    [Test]
    public void ValuesThatAreNotRanksNameTheVariable()
    {
        Assert.That(() => Launch(("OMPI_COMM_WORLD_SIZE", "two"), ("OMPI_COMM_WORLD_RANK", "0")),
            Throws.InstanceOf<CommunicatorException>().With.Message.EqualTo("OMPI_COMM_WORLD_SIZE='two': expected a whole number of at least 1"));
        Assert.That(() => Launch(("PMI_SIZE", "2"), ("PMI_RANK", "2")),
            Throws.InstanceOf<CommunicatorException>().With.Message.EqualTo("PMI_RANK=2 is not a rank of a job of PMI_SIZE=2"));
        Assert.That(() => Launch(("SLURM_STEP_NUM_TASKS", "2")),
            Throws.InstanceOf<CommunicatorException>().With.Message.EqualTo("SLURM_PROCID is not set, though the launcher set the other variables of a job"));
    }
}
