namespace NativeContrast.Tests.Distributed;

using NativeContrast.Backends;
using NativeContrast.Distributed;

/// <summary>The factory's choice when the job has one rank (several ranks run under mpirun: MpiCollectivesTests).</summary>
public class CommunicatorsTests
{
    [Test]
    public void WithoutALauncherItPicksTheSingleProcessCommunicator()
    {
        using var cpu = new CpuBackend();
        var choice = Communicators.Create(cpu, LaunchEnvironment.From(_ => null));
        using var communicator = choice.Communicator;
        Assert.That(communicator, Is.InstanceOf<SingleProcessCommunicator>());
        Assert.That(choice.Reason, Is.EqualTo(
            "single process: no launcher (none of OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_STEP_NUM_TASKS, PMIX_RANK is set)"));
    }

    [Test]
    public void UnderALauncherOfOneRankItNeedsNoMpi()
    {
        using var cpu = new CpuBackend();
        var launch = LaunchEnvironment.From(name => name switch { "OMPI_COMM_WORLD_SIZE" => "1", "OMPI_COMM_WORLD_RANK" => "0", _ => null });
        using var communicator = Communicators.Create(cpu, launch).Communicator;
        Assert.That(communicator, Is.InstanceOf<SingleProcessCommunicator>());
    }
}
