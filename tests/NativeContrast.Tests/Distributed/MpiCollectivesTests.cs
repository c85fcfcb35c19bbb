namespace NativeContrast.Tests.Distributed;

using NativeContrast.Tests.Support;

/// <summary>
/// Two CPU ranks under Open MPI's mpirun, running `nativecontrast collectives-check` (the CLI built next to this
/// assembly): every collective's result on both ranks, and a failing rank ending the job without a hang. mpirun is
/// required (CI installs openmpi-bin); NATIVECONTRAST_SKIP_MPI=1 skips these tests where it cannot be installed.
/// </summary>
[Category("Mpi")]
[NonParallelizable]
public class MpiCollectivesTests
{
    private string _mpirun = "";

    [OneTimeSetUp]
    public void FindMpirun() => _mpirun = MpiJob.FindMpirun();

    [Test]
    public void EveryCollectiveGivesTheExpectedValuesOnBothRanks()
    {
        var (exit, stdout, _, log) = Job([], "--sizes", "7", "1000003");

        Assert.That(exit, Is.Zero, log);
        // Rank 0 prints every rank's line, in rank order.
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.That(lines, Has.Length.EqualTo(2), log);
        foreach (var rank in new[] { 0, 1 })
        {
            Assert.That(lines[rank], Does.StartWith($"rank {rank} of 2, mpi (Open MPI v").And.Contain("on cpu: ")
                .And.Contain("all-reduce 7 OK, 1000003 OK;")
                .And.Contain("all-reduce-mean 7 OK, 1000003 OK;")
                .And.Contain("all-gather 7 OK, 1000003 OK;")
                .And.Contain("reduce-scatter 7 OK, 1000003 OK;")
                .And.Contain("broadcast from rank 1 7 OK, 1000003 OK;")
                .And.Contain("broadcast of 33 host bytes from rank 0 OK;")
                .And.EndWith("barrier OK")
                .And.Not.Contain("FAILED"), log);
        }
    }

    [Test]
    public void ARankThatAbortsEndsTheJobWithOneLineNamingIt()
    {
        // mpirun -q leaves out Open MPI's own banner about MPI_ABORT: what remains is the rank's line.
        var (exit, stdout, stderr, log) = Job(["-q"], "--sizes", "7", "--fail-rank", "1");

        Assert.That(exit, Is.EqualTo(1), log);
        Assert.That(stdout, Is.Empty, log);
        Assert.That(stderr.TrimEnd(), Is.EqualTo("error: rank 1 of 2 aborted the job: collectives-check: injected failure (--fail-rank 1)"), log);
    }

    [Test]
    public void ARankThatExitsEndsTheJobWithoutAHang()
    {
        var (exit, stdout, _, log) = Job([], "--sizes", "7", "--fail-rank", "1", "--fail-mode", "exit");

        Assert.That(exit, Is.EqualTo(3), $"mpirun ends with the code of the rank that exited\n{log}");
        Assert.That(stdout, Does.Not.Contain("rank 1 of 2"), log);
    }

    /// <summary>mpirun -np 2 (with <paramref name="options"/>) of the check: its exit code, its outputs, and all of it for messages.</summary>
    private (int ExitCode, string Stdout, string Stderr, string Log) Job(string[] options, params string[] arguments) =>
        MpiJob.Run(_mpirun, 2, options, ["collectives-check", .. arguments]);
}
