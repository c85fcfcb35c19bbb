namespace NativeContrast.Tests.Distributed;

using NativeContrast.Checkpoints;
using NativeContrast.Cli;
using NativeContrast.Tests.Support;
using NativeContrast.Tests.Training;
using NativeContrast.Training;

/// <summary>
/// `nativecontrast train` data-parallel on two CPU ranks under mpirun, on tiny settings: two ranks of batch B step as
/// one process of batch 2B (SimCLR with SyncBN: the same loss and, after the steps, the same arena), rank 0 alone
/// prints and writes the run's files, and a failing rank ends the job with one line naming it (a killed one: with
/// mpirun's line naming it) while the last checkpoint stays loadable, by a run on another number of ranks.
/// </summary>
[Category("Mpi")]
[NonParallelizable]
public class MpiTrainingTests
{
    private string _mpirun = "";
    private string _folder = "";

    [OneTimeSetUp]
    public void FindMpirun() => _mpirun = MpiJob.FindMpirun();

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("mpi-train");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    /// <summary>32 images of 16 px, SimCLR on resnet10 ×0.125, one epoch: two steps of a global batch of 16.</summary>
    private static string[] Tiny(int batch, string output, int epochs = 1, int trainImages = 32) =>
        ["train", "--method", "simclr", "--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", $"{trainImages}",
         "--batch", $"{batch}", "--epochs", $"{epochs}", "--workers", "1", "--device", "cpu", "--seed", "3", "--knn-every", "0", "--out", output];

    [Test]
    public void TwoRanksOfBatch8StepAsOneProcessOfBatch16()
    {
        var two = Path.Combine(_folder, "two");
        var one = Path.Combine(_folder, "one");
        var job = MpiJob.Run(_mpirun, 2, [], Tiny(8, two));
        var single = MpiJob.RunInProcess(Tiny(16, one));

        Assert.That(job.ExitCode, Is.Zero, job.Log);
        Assert.That(single.Code, Is.EqualTo(Program.Success), single.Error + single.Output);
        // Rank 0 alone prints: one backend line, the ranks, one summary.
        Assert.That(job.Stdout.Split('\n').Count(l => l.StartsWith("backend", StringComparison.Ordinal)), Is.EqualTo(1), job.Log);
        Assert.That(job.Stdout, Does.Contain("ranks      mpi (Open MPI").And.Contain("rank 0 of 2").And.Contain("batch 16 (2 ranks × 8, SyncBN)"), job.Log);
        Assert.That(job.Stdout.Split('\n').Count(l => l.Contains("kNN top-1 (encoder)", StringComparison.Ordinal)), Is.EqualTo(1), job.Log);
        foreach (var file in new[] { Trainer.CheckpointFileName, Trainer.EncoderFileName, MetricsLog.FileName, "training.png" })
        {
            Assert.That(File.Exists(Path.Combine(two, file)), Is.True, file);
        }

        MpiJob.AssertSameRun(two, one, steps: 2);
    }

    [Test]
    public void AFailingRankEndsTheJobWithOneLineAndTheLastCheckpointResumesOnOneRank()
    {
        var run = Path.Combine(_folder, "run");
        // One step per epoch; rank 1 fails once epoch 1's step (step 1) is done, after rank 0 checkpointed epoch 0.
        var job = MpiJob.Run(_mpirun, 2, ["-q"], [.. Tiny(8, run, epochs: 3, trainImages: 16), "--fail-rank", "1", "--fail-step", "1"]);

        Assert.That(job.ExitCode, Is.EqualTo(1), job.Log);
        Assert.That(job.Stderr.TrimEnd(), Is.EqualTo("error: rank 1 of 2 aborted the job: train: injected failure after step 1 (--fail-step 1)"), job.Log);
        var state = TrainingCheckpoint.ReadState(Path.Combine(run, Trainer.CheckpointFileName));
        Assert.That((state.Step, state.Epoch), Is.EqualTo((1L, 1)), "the checkpoint of epoch 0's end");

        // The checkpoint holds global state only: one process of the same global batch takes over.
        var resumed = MpiJob.RunInProcess([.. Tiny(16, run, epochs: 3, trainImages: 16), "--resume", run]);
        Assert.That(resumed.Code, Is.EqualTo(Program.Success), resumed.Error + resumed.Output);
        Assert.That(TrainingCheckpoint.ReadState(Path.Combine(run, Trainer.CheckpointFileName)).Step, Is.EqualTo(3));
    }

    [Test]
    public void AKilledRankEndsTheJobNamingItAndTheLastCheckpointResumesOnOneRank()
    {
        var run = Path.Combine(_folder, "run");
        // As above, but rank 1 dies of SIGKILL without a word: rank 0 waits for it in epoch 1's collectives until
        // mpirun, seeing a rank die, kills the job.
        var job = MpiJob.Run(_mpirun, 2, [], [.. Tiny(8, run, epochs: 3, trainImages: 16), "--fail-rank", "1", "--fail-step", "1", "--fail-mode", "kill"]);

        Assert.That(job.ExitCode, Is.Not.Zero, job.Log);
        Assert.That(job.Stderr, Does.Contain("process rank 1 ").And.Contain("exited on signal 9"), job.Log);
        var state = TrainingCheckpoint.ReadState(Path.Combine(run, Trainer.CheckpointFileName));
        Assert.That((state.Step, state.Epoch), Is.EqualTo((1L, 1)), "the checkpoint of epoch 0's end");

        var resumed = MpiJob.RunInProcess([.. Tiny(16, run, epochs: 3, trainImages: 16), "--resume", run]);
        Assert.That(resumed.Code, Is.EqualTo(Program.Success), resumed.Error + resumed.Output);
        Assert.That(TrainingCheckpoint.ReadState(Path.Combine(run, Trainer.CheckpointFileName)).Step, Is.EqualTo(3));
    }
}
