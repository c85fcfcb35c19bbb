namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// SwAV's distributed Sinkhorn on the CPU twin, with ranks played by threads: each rank's codes are its rows of the
/// codes of one Sinkhorn over every rank's samples (the prototype normalisations all-gathered, then all-reduced).
/// </summary>
public class DistributedSinkhornCpuTests
{
    private const float Epsilon = 0.05f;

    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(2, 5, 7, 3)]
    [TestCase(2, 37, 31, 3)]
    [TestCase(3, 4, 300, 3)]
    [TestCase(2, 1, 3, 1)]
    [TestCase(3, 33, 10, 5)]
    public void RanksGetTheirRowsOfOneSinkhornOverAllSamples(int ranks, int rowsPerRank, int prototypes, int iterations)
    {
        var rows = ranks * rowsPerRank;
        var scores = SinkhornReference.CosineScores(rows, prototypes, 16, seed: rows + prototypes);
        foreach (var output in new[] { SinkhornOutput.Assignments, SinkhornOutput.Marginals })
        {
            var expected = Codes(scores, rows, prototypes, iterations, output, null, 0);
            var actual = new float[ranks][];
            using var threads = new ThreadRanks(ranks);
            threads.Run(rank =>
            {
                using var communicator = threads.Communicator(rank, _cpu);
                actual[rank] = Codes(scores.AsSpan(rank * rowsPerRank * prototypes, rowsPerRank * prototypes).ToArray(), rowsPerRank, prototypes, iterations, output, communicator, rank);
            });
            for (var rank = 0; rank < ranks; rank++)
            {
                var own = expected.AsSpan(rank * rowsPerRank * prototypes, rowsPerRank * prototypes);
                Assert.That(Numerics.RelativeError(actual[rank], own), Is.LessThan(Numerics.Fp32Tolerance), $"rank {rank} of {ranks}, {output}");
            }
        }
    }

    [Test]
    public void TooFewSamplesOverEveryRankOrAGatherOfTheWrongSizeAreRefused()
    {
        using var s = Numerics.RandomTensor(_cpu, new TensorShape(4, 6), seed: 1);
        using var q = _cpu.Allocate(new TensorShape(4, 6));
        using var w = _cpu.Allocate(new TensorShape(checked((int)_cpu.SinkhornWorkspaceLength(4, 6))));
        using var gathered = _cpu.Allocate(new TensorShape(SinkhornSync.GatheredLength(2, 6)));
        using var wrong = _cpu.Allocate(new TensorShape(13));
        Assert.That(() => _cpu.SinkhornCodes(s, q, w, Epsilon, 3, SinkhornOutput.Assignments, new SinkhornSync(3, gathered, (_, _) => { }, _ => { })), Throws.ArgumentException.With.Message.Contains("3 samples"));
        Assert.That(() => _cpu.SinkhornCodes(s, q, w, Epsilon, 3, SinkhornOutput.Assignments, new SinkhornSync(8, wrong, (_, _) => { }, _ => { })), Throws.ArgumentException.With.Message.Contains("2 × 6"));
    }

    private float[] Codes(float[] scores, int rows, int prototypes, int iterations, SinkhornOutput output, ICommunicator? communicator, int rank)
    {
        using var sinkhorn = new SinkhornKnopp(_cpu, Epsilon, iterations, output, communicator);
        using var s = _cpu.FromArray(scores, new TensorShape(rows, prototypes), $"scores of rank {rank}");
        using var q = _cpu.Allocate(new TensorShape(rows, prototypes), $"codes of rank {rank}");
        sinkhorn.Compute(s, q);
        // A second call reuses the collectives' buffers and gives the same codes.
        sinkhorn.Compute(s, q);
        return q.Span.ToArray();
    }
}
