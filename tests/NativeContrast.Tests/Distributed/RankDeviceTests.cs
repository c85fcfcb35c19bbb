namespace NativeContrast.Tests.Distributed;

using NativeContrast.Distributed;

/// <summary>Which GPU each rank of a launch takes (its local rank's), decided without a GPU.</summary>
public class RankDeviceTests
{
    private static readonly LaunchEnvironment Single = LaunchEnvironment.From(_ => null);

    /// <summary>Rank <paramref name="rank"/> of a job of 4 under mpirun, with local rank <paramref name="local"/>.</summary>
    private static LaunchEnvironment Rank(int rank, int local)
    {
        var set = new Dictionary<string, string>
        {
            ["OMPI_COMM_WORLD_SIZE"] = "4",
            ["OMPI_COMM_WORLD_RANK"] = $"{rank}",
            ["OMPI_COMM_WORLD_LOCAL_RANK"] = $"{local}",
        };
        return LaunchEnvironment.From(name => set.GetValueOrDefault(name));
    }

    private static Func<int> Gpus(int count) => () => count;

    private static Func<int> NotAsked => () => throw new AssertionException("the GPU count was asked");

    [TestCase("auto")]
    [TestCase("cuda")]
    [TestCase("cpu")]
    public void ASingleProcessKeepsGpuZeroWithoutCountingGpus(string device) =>
        Assert.That(RankDevice.Choose(device, Single, NotAsked), Is.EqualTo(new RankDeviceChoice(0, null)));

    [Test]
    public void ASingleProcessKeepsCudaN() =>
        Assert.That(RankDevice.Choose("cuda:3", Single, NotAsked).Error, Is.Null, "BackendSelector opens cuda:3 itself");

    [Test]
    public void CpuRanksStayOnTheCpuWithoutCountingGpus() =>
        Assert.That(RankDevice.Choose(" CPU ", Rank(3, 1), NotAsked), Is.EqualTo(new RankDeviceChoice(0, null)));

    [TestCase("cuda")]
    [TestCase("auto")]
    public void EachRankTakesTheGpuOfItsLocalRank(string device)
    {
        Assert.That(RankDevice.Choose(device, Rank(3, 1), Gpus(2)), Is.EqualTo(new RankDeviceChoice(1, null)));
        Assert.That(RankDevice.Choose(device, Rank(2, 0), Gpus(2)), Is.EqualTo(new RankDeviceChoice(0, null)));
    }

    [Test]
    public void CudaNUnderALauncherIsRefusedNamingTheRanksGpu() =>
        Assert.That(RankDevice.Choose("cuda:0", Rank(3, 1), NotAsked).Error, Is.EqualTo(
            "--device cuda:0: under a launcher each rank takes the GPU of its local rank (rank 3: GPU 1); " +
            "pass --device cuda, and CUDA_VISIBLE_DEVICES to choose a node's GPUs"));

    [TestCase("cuda")]
    [TestCase("auto")]
    public void ALocalRankBeyondTheGpusIsRefusedNamingTheRankAndTheCount(string device) =>
        Assert.That(RankDevice.Choose(device, Rank(3, 2), Gpus(2)).Error, Is.EqualTo(
            $"--device {device}: rank 3 has local rank 2, but its node has 2 GPU(s): " +
            "each rank takes the GPU of its local rank, so launch at most 2 rank(s) per node (or bind one GPU to each rank)"));

    [TestCase("cuda")]
    [TestCase("auto")]
    public void ARankThatSeesOneGpuTakesIt(string device)
    {
        // srun --gpus-per-task=1 or a CUDA_VISIBLE_DEVICES=$LOCAL_RANK wrapper: every rank sees its own GPU as GPU 0.
        Assert.That(RankDevice.Choose(device, Rank(3, 3), Gpus(1)), Is.EqualTo(new RankDeviceChoice(0, null)));
        Assert.That(RankDevice.Choose(device, Rank(0, 0), Gpus(1)), Is.EqualTo(new RankDeviceChoice(0, null)));
    }

    [Test]
    public void NoGpuLeavesAutoToFallBackToTheCpuAndCudaToSayWhy()
    {
        // BackendSelector then falls back (auto) or throws the driver's reason (cuda), as in a single process.
        Assert.That(RankDevice.Choose("auto", Rank(3, 1), Gpus(0)).Error, Is.Null);
        Assert.That(RankDevice.Choose("cuda", Rank(3, 1), Gpus(0)).Error, Is.Null);
    }
}
