namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// The data-parallel NT-Xent kernels (a shard's anchor rows against the gathered z) against the CPU twin, ranks played
/// by one workspace per shard whose log-sum-exps are copied across as the all-gather would: per-shard statistics and
/// every shard's dz, on awkward sizes, per precision with its tolerance.
/// </summary>
public class NtXentShardGpuTests : GpuTestBase
{
    [TestCase(2, 6, 72, MatmulPrecision.Fp32)]
    [TestCase(3, 130, 128, MatmulPrecision.Fp32)]
    [TestCase(2, 258, 64, MatmulPrecision.Tf32)]
    [TestCase(4, 34, 256, MatmulPrecision.Bf16)]
    [TestCase(5, 2, 128, MatmulPrecision.Fp32)]
    public void ShardsMatchTheCpuTwin(int shards, int shardRows, int dim, MatmulPrecision precision)
    {
        const float tau = 0.2f;
        var rows = shards * shardRows;
        var z = Numerics.RandomArray(rows * dim, seed: rows + dim, scale: 3f);
        var (cpuStats, cpuDz) = RunShards(Cpu, z, shards, shardRows, dim, tau, MatmulPrecision.Fp32);
        var (gpuStats, gpuDz) = RunShards(Gpu, z, shards, shardRows, dim, tau, precision);

        var tolerance = precision switch { MatmulPrecision.Fp32 => Numerics.Fp32Tolerance, MatmulPrecision.Tf32 => Numerics.Tf32Tolerance, _ => Numerics.Bf16Tolerance };
        for (var r = 0; r < shards; r++)
        {
            Assert.That(gpuStats[r][0], Is.EqualTo(cpuStats[r][0]).Within(tolerance * Math.Max(1, cpuStats[r][0])), $"shard {r} loss");
            Assert.That(gpuStats[r][1], Is.EqualTo(cpuStats[r][1]).Within(tolerance), $"shard {r} positive cosine");
        }
        Numerics.AssertClose(gpuDz, cpuDz, tolerance, "every shard's dz");
    }

    private static (float[][] Stats, float[] Dz) RunShards(IBackend backend, float[] z, int shards, int shardRows, int dim, float tau, MatmulPrecision precision)
    {
        var rows = shards * shardRows;
        using var input = backend.Allocate(new TensorShape(rows, dim), "gathered z");
        backend.CopyFromHost(z, input);
        using var stats = backend.Allocate(new TensorShape(3), "stats");
        using var dz = backend.Allocate(new TensorShape(shardRows, dim), "dz");
        var owned = Enumerable.Range(0, shards).Select(r => new NtXentShard(r * shardRows, shardRows)).ToArray();
        var workspaces = owned.Select(s => backend.Allocate(new TensorShape(checked((int)backend.NtXentWorkspaceLength(rows, dim, precision, s))), "workspace")).ToArray();
        try
        {
            var shardStats = new float[shards][];
            for (var r = 0; r < shards; r++)
            {
                backend.NtXentForward(input, tau, precision, workspaces[r], stats, owned[r]);
                shardStats[r] = Numerics.ToArray(backend, stats);
            }
            // The all-gather: every shard's log-sum-exps into every workspace.
            for (var r = 0; r < shards; r++)
            {
                var target = backend.NtXentLogSumExps(workspaces[r], rows, dim, precision);
                foreach (var s in owned.Where(s => s != owned[r]))
                {
                    var source = backend.NtXentLogSumExps(workspaces[s.Offset / shardRows], rows, dim, precision);
                    backend.Copy(source.View(s.Offset, new TensorShape(s.Rows)), target.View(s.Offset, new TensorShape(s.Rows)));
                }
            }
            var gradient = new float[rows * dim];
            for (var r = 0; r < shards; r++)
            {
                backend.NtXentBackward(input, tau, precision, workspaces[r], dz, 1f, owned[r]);
                Numerics.ToArray(backend, dz).CopyTo(gradient, r * shardRows * dim);
            }
            return (shardStats, gradient);
        }
        finally
        {
            foreach (var workspace in workspaces)
            {
                workspace.Dispose();
            }
        }
    }
}
