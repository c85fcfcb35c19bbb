namespace NativeContrast.Tests.Distributed;

using NativeContrast.Checkpoints;
using NativeContrast.Cli;
using NativeContrast.Tests.Support;
using NativeContrast.Tests.Training;
using NativeContrast.Training;

/// <summary>
/// MoCo, SwAV (with and without its feature queue), PiCO and SimCLR's momentum queue data-parallel on two CPU ranks under mpirun, on tiny settings: two ranks of
/// batch 8 step as one process of batch 16 (SyncBN on): the same loss at every step and, after the steps, the same
/// checkpoint (parameters, optimiser state, the key encoder's arena and the queue, SwAV's prototypes, PiCO's confidence
/// table and class prototypes). MoCo's shuffle-BN runs to the end.
/// </summary>
[Category("Mpi")]
[NonParallelizable]
public class MpiMethodsTests
{
    private string _mpirun = "";
    private string _folder = "";

    [OneTimeSetUp]
    public void FindMpirun() => _mpirun = MpiJob.FindMpirun();

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("mpi-methods");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    /// <summary>32 images of 16 px on resnet10 ×0.125, one epoch: two steps of a global batch of 16 (or 16 images, two epochs).</summary>
    private static string[] Tiny(string method, int batch, string output, params string[] options) =>
        ["train", "--method", method, "--backbone", "resnet10", "--width", "0.125", "--image-size", "16",
         .. (options.Contains("--train-images") ? Array.Empty<string>() : ["--train-images", "32", "--epochs", "1"]),
         "--batch", $"{batch}", "--workers", "1", "--device", "cpu", "--seed", "5", "--knn-every", "0", "--out", output, .. options];

    /// <summary>A queue of 24 keys (of 32 images): the second step's 16 keys wrap around it, so the order they land in counts.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void MocoTwoRanksOfBatch8StepAsOneProcessOfBatch16(bool symmetric)
    {
        string[] options = symmetric ? ["--queue", "24", "--symmetric"] : ["--queue", "24"];
        AssertTwoRanksStepAsOneProcess("mocov2", options, ["method.queue", "method.teacher.backbone.conv1.weight", "method.teacher.backbone.bn1.running_mean"]);
    }

    [Test]
    public void SimclrWithTheMomentumQueueTwoRanksOfBatch8StepAsOneProcessOfBatch16() =>
        AssertTwoRanksStepAsOneProcess("simclr", ["--queue", "24"], ["method.queue", "method.teacher.projector.0.weight"]);

    /// <summary>30 prototypes, two small crops; the prototypes are frozen for the first step and move in the second.</summary>
    [Test]
    public void SwavTwoRanksOfBatch8StepAsOneProcessOfBatch16() =>
        AssertTwoRanksStepAsOneProcess("swav", ["--prototypes", "30", "--small-crops", "2", "--freeze-prototypes-epochs", "0.5"], ["prototypes.weight"]);

    /// <summary>
    /// 16 images, two epochs of one step: MoCo's InfoNCE in the first (the warm-up), then the disambiguation (pseudo-labels,
    /// prototypes, confidence) and the label-masked InfoNCE over the global batch in the second.
    /// </summary>
    [Test]
    public void PicoTwoRanksOfBatch8StepAsOneProcessOfBatch16() =>
        AssertTwoRanksStepAsOneProcess("pico", ["--train-images", "16", "--epochs", "2", "--partial-rate", "0.3", "--queue", "24"], ["method.queue", "method.queue_labels", "method.confidence", "method.prototypes", "method.teacher.backbone.conv1.weight"]);

    [Test]
    public void MocoWithShuffleBnAcrossRanksTrainsToTheEnd()
    {
        var run = Path.Combine(_folder, "shuffled");
        var job = MpiJob.Run(_mpirun, 2, [], Tiny("mocov2", 8, run, "--queue", "24", "--shuffle-bn", "--sync-bn", "false"));

        Assert.That(job.ExitCode, Is.Zero, job.Log);
        Assert.That(job.Stdout, Does.Contain("batch 16 (2 ranks × 8)"), job.Log);
        var (steps, _) = MetricsLog.Read(Path.Combine(run, MetricsLog.FileName));
        Assert.That(steps.Select(s => s.Step), Is.EqualTo(new long[] { 0, 1 }));
        Assert.That(steps.All(s => double.IsFinite(s.Loss)), Is.True, "finite losses");
    }

    /// <summary>A queue of 16 features per assignment crop: filled by step 0, it joins the codes at step 1, each rank Sinkhorn's over its half.</summary>
    [Test]
    public void SwavWithAFeatureQueueTwoRanksOfBatch8StepAsOneProcessOfBatch16() =>
        AssertTwoRanksStepAsOneProcess("swav", ["--prototypes", "30", "--small-crops", "2", "--freeze-prototypes-epochs", "0.5", "--queue", "16"], ["method.queue0", "method.queue1", "prototypes.weight"]);

    [Test]
    public void SwavWithAQueueThatDoesNotSplitOverTheRanksIsRefusedNamingWhy()
    {
        var job = MpiJob.Run(_mpirun, 2, ["-q"], Tiny("swav", 8, Path.Combine(_folder, "queued"), "--prototypes", "30", "--small-crops", "2", "--queue", "17"));

        Assert.That(job.ExitCode, Is.Not.Zero, job.Log);
        Assert.That(job.Stderr, Does.Contain("SwAV's queue of 17 features does not split evenly over 2 ranks"), job.Log);
    }

    private void AssertTwoRanksStepAsOneProcess(string method, string[] options, string[] mustCompare)
    {
        var two = Path.Combine(_folder, "two");
        var one = Path.Combine(_folder, "one");
        var job = MpiJob.Run(_mpirun, 2, [], Tiny(method, 8, two, options));
        var single = MpiJob.RunInProcess(Tiny(method, 16, one, options));

        Assert.That(job.ExitCode, Is.Zero, job.Log);
        Assert.That(single.Code, Is.EqualTo(Program.Success), single.Error + single.Output);
        Assert.That(job.Stdout, Does.Contain("batch 16 (2 ranks × 8, SyncBN)"), job.Log);

        var compared = MpiJob.AssertSameRun(two, one, steps: 2);
        Assert.That(compared, Is.SupersetOf(mustCompare), "the method's own state compared");
    }
}
