namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// The data-parallel NT-Xent on the CPU twin: z gathered from every rank ([rank 0's views a, b | rank 1's views a, b | ...]),
/// each shard's rows as anchors against all rows. The shards' statistics average to the whole batch's and their
/// gradients (each the gradient of the sum of every shard's mean loss) are the whole batch's times the number of shards.
/// </summary>
public class NtXentShardCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(2, 2, 3, 0.5f)]
    [TestCase(2, 34, 33, 0.1f)]
    [TestCase(3, 6, 7, 0.2f)]
    [TestCase(4, 10, 64, 0.07f)]
    public void ShardsTogetherAreTheWholeBatch(int shards, int rowsPerShard, int dim, float tau)
    {
        var rows = shards * rowsPerShard;
        var z = Numerics.RandomArray(rows * dim, seed: (rows * 31) + dim, scale: 2f);
        var (losses, cosines, hits, dz) = RunShards(z, shards, rowsPerShard, dim, tau);

        var expected = ContrastiveReference.NtXent(ContrastiveReference.ToDouble(ToBatchOrder(z, shards, rowsPerShard, dim)), rows, dim, tau);
        Assert.That(losses.Average(), Is.EqualTo(expected.Loss).Within(Numerics.Fp32Tolerance * Math.Max(1, expected.Loss)), "mean of the shards' losses");
        Assert.That(cosines.Average(), Is.EqualTo(expected.PositiveSimilarity).Within(Numerics.Fp32Tolerance), "mean positive cosine");
        Assert.That(hits.Average(), Is.EqualTo(expected.Top1).Within(1e-6), "top-1");
        var gathered = FromBatchOrder(expected.Gradient, shards, rowsPerShard, dim).Select(g => g * shards).ToArray();
        Numerics.AssertClose(dz, gathered, Numerics.Fp32Tolerance, "the shards' dz against the whole batch's × shards");
    }

    [Test]
    public void ShardGradientMatchesFiniteDifferences()
    {
        const int shards = 2, rowsPerShard = 4, dim = 3;
        const double tau = 0.3;
        var z = Numerics.RandomArray(shards * rowsPerShard * dim, seed: 17);
        var parameters = ContrastiveReference.ToDouble(z);
        // Σ over shards of each shard's mean loss = shards × the whole batch's mean loss.
        var numeric = Numerics.FiniteDifferenceGradient(
            parameters,
            () => shards * ContrastiveReference.NtXent(ToBatchOrder(parameters, shards, rowsPerShard, dim), shards * rowsPerShard, dim, tau).Loss);
        var (_, _, _, dz) = RunShards(z, shards, rowsPerShard, dim, (float)tau);
        Numerics.AssertClose(dz, numeric, Numerics.Fp32Tolerance, "dz of every shard against finite differences");
    }

    [Test]
    public void TheWholeBatchAsOneShardIsTheUnshardedLoss()
    {
        const int rows = 12, dim = 5;
        using var z = _cpu.FromArray(Numerics.RandomArray(rows * dim, seed: 3), new TensorShape(rows, dim), "z");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.NtXentWorkspaceLength(rows, dim, MatmulPrecision.Fp32))));
        using var stats = _cpu.Allocate(new TensorShape(3));
        using var dz = _cpu.Allocate(new TensorShape(rows, dim));
        using var shardDz = _cpu.Allocate(new TensorShape(rows, dim));
        _cpu.NtXentForward(z, 0.2f, MatmulPrecision.Fp32, workspace, stats);
        var whole = stats.Span.ToArray();
        _cpu.NtXentBackward(z, 0.2f, MatmulPrecision.Fp32, workspace, dz);
        _cpu.NtXentForward(z, 0.2f, MatmulPrecision.Fp32, workspace, stats, new NtXentShard(0, rows));
        _cpu.NtXentBackward(z, 0.2f, MatmulPrecision.Fp32, workspace, shardDz, 1f, new NtXentShard(0, rows));
        Assert.That(stats.Span.ToArray(), Is.EqualTo(whole));
        Assert.That(shardDz.Span.ToArray(), Is.EqualTo(dz.Span.ToArray()));
    }

    [TestCase(1, 3, "even number of rows")]
    [TestCase(6, 4, "inside z")]
    [TestCase(-2, 4, "inside z")]
    public void RejectsAShardThatIsNotPairsInsideZ(int offset, int rows, string message)
    {
        using var z = _cpu.Allocate(new TensorShape(8, 4), "z");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.NtXentWorkspaceLength(8, 4, MatmulPrecision.Fp32))));
        using var stats = _cpu.Allocate(new TensorShape(3));
        Assert.That(() => _cpu.NtXentForward(z, 0.1f, MatmulPrecision.Fp32, workspace, stats, new NtXentShard(offset, rows)), Throws.ArgumentException.With.Message.Contains(message));
    }

    [Test]
    public void RejectsAGradientShapedLikeTheGatheredZ()
    {
        using var z = _cpu.Allocate(new TensorShape(8, 4), "z");
        using var dz = _cpu.Allocate(new TensorShape(8, 4), "dz");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.NtXentWorkspaceLength(8, 4, MatmulPrecision.Fp32))));
        Assert.That(() => _cpu.NtXentBackward(z, 0.1f, MatmulPrecision.Fp32, workspace, dz, 1f, new NtXentShard(4, 4)), Throws.ArgumentException.With.Message.Contains("[4, 4]"));
    }

    /// <summary>
    /// Every shard's forward over one workspace (each writes its rows' log-sum-exps, as the all-gather would), then every
    /// shard's backward: per-shard statistics and the shards' dz in gathered order.
    /// </summary>
    private (double[] Losses, double[] Cosines, double[] Hits, float[] Dz) RunShards(float[] z, int shards, int rowsPerShard, int dim, float tau)
    {
        var rows = shards * rowsPerShard;
        using var input = _cpu.FromArray(z, new TensorShape(rows, dim), "gathered z");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.NtXentWorkspaceLength(rows, dim, MatmulPrecision.Fp32))));
        using var stats = _cpu.Allocate(new TensorShape(3));
        using var dz = _cpu.Allocate(new TensorShape(rowsPerShard, dim));
        var (losses, cosines, hits) = (new double[shards], new double[shards], new double[shards]);
        for (var r = 0; r < shards; r++)
        {
            _cpu.NtXentForward(input, tau, MatmulPrecision.Fp32, workspace, stats, new NtXentShard(r * rowsPerShard, rowsPerShard));
            (losses[r], cosines[r], hits[r]) = (stats.Span[0], stats.Span[1], stats.Span[2]);
        }
        var gradient = new float[rows * dim];
        for (var r = 0; r < shards; r++)
        {
            _cpu.NtXentBackward(input, tau, MatmulPrecision.Fp32, workspace, dz, 1f, new NtXentShard(r * rowsPerShard, rowsPerShard));
            dz.Span.CopyTo(gradient.AsSpan(r * rowsPerShard * dim));
        }
        return (losses, cosines, hits, gradient);
    }

    /// <summary>Gathered row of shard r, position i, in the whole batch's order [all views a | all views b].</summary>
    private static int BatchRow(int gathered, int shards, int rowsPerShard)
    {
        var half = rowsPerShard / 2;
        var (shard, i) = (gathered / rowsPerShard, gathered % rowsPerShard);
        return ((i / half) * shards * half) + (shard * half) + (i % half);
    }

    private static T[] ToBatchOrder<T>(T[] gathered, int shards, int rowsPerShard, int dim)
    {
        var batch = new T[gathered.Length];
        for (var g = 0; g < shards * rowsPerShard; g++)
        {
            Array.Copy(gathered, g * dim, batch, BatchRow(g, shards, rowsPerShard) * dim, dim);
        }
        return batch;
    }

    private static double[] FromBatchOrder(double[] batch, int shards, int rowsPerShard, int dim)
    {
        var gathered = new double[batch.Length];
        for (var g = 0; g < shards * rowsPerShard; g++)
        {
            Array.Copy(batch, BatchRow(g, shards, rowsPerShard) * dim, gathered, g * dim, dim);
        }
        return gathered;
    }
}
