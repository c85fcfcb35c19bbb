namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>native/sinkhorn.cu against the CPU twin: both Sinkhorn paths on awkward sizes, the distributed multi-pass path on GPU ranks, and the swapped loss.</summary>
public class SinkhornGpuTests : GpuTestBase
{
    private const float Epsilon = 0.05f;

    private static readonly int[] Rows = [1, 7, 33, 1000, 4100];
    private static readonly int[] Cols = [3, 10, 300, 3000, 3001];
    private static readonly SinkhornPath[] Paths = [SinkhornPath.Fused, SinkhornPath.MultiPass];

    [TearDown]
    public void ResetPath()
    {
        Gpu.SinkhornPath = SinkhornPath.Auto;
        Gpu.SinkhornCachedRowsLimit = null;
    }

    private (float[] Gpu, float[] Cpu) Codes(float[] scores, int rows, int cols, int iterations, SinkhornOutput output)
    {
        var shape = new TensorShape(rows, cols);
        using var cs = Cpu.FromArray(scores, shape, "scores");
        using var cq = Cpu.Allocate(shape, "codes");
        using var cw = Cpu.Allocate(new TensorShape(checked((int)Cpu.SinkhornWorkspaceLength(rows, cols))), "workspace");
        Cpu.SinkhornCodes(cs, cq, cw, Epsilon, iterations, output);
        using var gs = Gpu.Allocate(shape, "scores");
        using var gq = Gpu.Allocate(shape, "codes");
        using var gw = Gpu.Allocate(new TensorShape(checked((int)Gpu.SinkhornWorkspaceLength(rows, cols))), "workspace");
        Gpu.CopyFromHost(scores, gs);
        Gpu.Fill(gq, float.NaN);  // every element must be written
        Gpu.SinkhornCodes(gs, gq, gw, Epsilon, iterations, output);
        return (Numerics.ToArray(Gpu, gq), cq.Span.ToArray());
    }

    /// <summary>The cooperative kernel has no point between its grid barriers for a collective: pinned, it says so.</summary>
    [Test]
    public void TheFusedPathRefusesADistributedCall()
    {
        Gpu.SinkhornPath = SinkhornPath.Fused;
        var shape = new TensorShape(4, 6);
        using var scores = Gpu.Allocate(shape, "scores");
        using var codes = Gpu.Allocate(shape, "codes");
        using var workspace = Gpu.Allocate(new TensorShape(checked((int)Gpu.SinkhornWorkspaceLength(4, 6))), "workspace");
        using var gathered = Gpu.Allocate(new TensorShape(SinkhornSync.GatheredLength(2, 6)), "gathered");
        var sync = new SinkhornSync(8, gathered, (_, _) => { }, _ => { });
        Assert.That(() => Gpu.SinkhornCodes(scores, codes, workspace, Epsilon, 3, SinkhornOutput.Assignments, sync), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("fused"));
    }

    /// <summary>
    /// One rank with its collectives called (a gather and a sum over one thread): the multi-pass kernels' distributed
    /// order (rank pair, merge, column totals, update) against the CPU twin's distributed path with the same collectives.
    /// </summary>
    [Test]
    public void OneDistributedRankMatchesCpuTwin(
        [Values(1, 33, 1000)] int rows, [Values(3, 300, 3001)] int cols, [Values(SinkhornPath.Auto, SinkhornPath.MultiPass)] SinkhornPath path)
    {
        Gpu.SinkhornPath = path;
        var scores = SinkhornReference.CosineScores(rows, cols, 16, seed: rows + cols);
        var shape = new TensorShape(rows, cols);
        using var one = new ThreadRanks(1);
        float[] Run(IBackend backend)
        {
            using var communicator = one.Communicator(0, backend);
            using var s = backend.Allocate(shape, "scores");
            using var q = backend.Allocate(shape, "codes");
            using var w = backend.Allocate(new TensorShape(checked((int)backend.SinkhornWorkspaceLength(rows, cols))), "workspace");
            using var gathered = backend.Allocate(new TensorShape(SinkhornSync.GatheredLength(1, cols)), "gathered");
            backend.CopyFromHost(scores, s);
            backend.Fill(q, float.NaN);  // every element must be written
            var sync = new SinkhornSync(rows, gathered, communicator.AllGather, communicator.AllReduce);
            backend.SinkhornCodes(s, q, w, Epsilon, 3, SinkhornOutput.Marginals, sync);
            return Numerics.ToArray(backend, q);
        }
        Numerics.AssertClose(Run(Gpu), Run(Cpu), Numerics.Fp32Tolerance, $"{rows}x{cols} {path}, one rank");
    }

    /// <summary>
    /// SwAV on several GPU ranks: threads, each with a CUDA backend of its own on one GPU (rank 0 this fixture's), as
    /// SyncBatchNormGpuTests does; each rank's codes are its rows of the CPU twin's Sinkhorn over every rank's samples.
    /// </summary>
    [TestCase(2, 1, 3, 1)]
    [TestCase(2, 37, 31, 3)]
    [TestCase(3, 33, 300, 3)]
    [TestCase(3, 5, 10, 5)]
    [TestCase(2, 1000, 3001, 3)]
    public void GpuRanksGetTheirRowsOfOneSinkhornOverAllSamples(int ranks, int rowsPerRank, int prototypes, int iterations)
    {
        var rows = ranks * rowsPerRank;
        var scores = SinkhornReference.CosineScores(rows, prototypes, 16, seed: rows + prototypes);
        var backends = new IBackend[ranks];
        backends[0] = Gpu;
        for (var r = 1; r < ranks; r++)
        {
            backends[r] = new CudaBackend();
        }
        try
        {
            foreach (var output in new[] { SinkhornOutput.Assignments, SinkhornOutput.Marginals })
            {
                var expected = Codes(Cpu, scores, rows, prototypes, iterations, output, null);
                var actual = new float[ranks][];
                using var threads = new ThreadRanks(ranks);
                threads.Run(rank =>
                {
                    using var communicator = threads.Communicator(rank, backends[rank]);
                    var own = scores.AsSpan(rank * rowsPerRank * prototypes, rowsPerRank * prototypes).ToArray();
                    actual[rank] = Codes(backends[rank], own, rowsPerRank, prototypes, iterations, output, communicator);
                });
                for (var rank = 0; rank < ranks; rank++)
                {
                    var own = expected.AsSpan(rank * rowsPerRank * prototypes, rowsPerRank * prototypes);
                    Numerics.AssertClose(actual[rank], own, Numerics.Fp32Tolerance, $"rank {rank} of {ranks}, {rowsPerRank}x{prototypes}, {output}");
                }
            }
        }
        finally
        {
            for (var r = 1; r < ranks; r++)
            {
                backends[r].Dispose();
            }
        }
    }

    private static float[] Codes(IBackend backend, float[] scores, int rows, int prototypes, int iterations, SinkhornOutput output, ICommunicator? communicator)
    {
        using var sinkhorn = new SinkhornKnopp(backend, Epsilon, iterations, output, communicator);
        var shape = new TensorShape(rows, prototypes);
        using var s = backend.Allocate(shape, "scores");
        using var q = backend.Allocate(shape, "codes");
        backend.CopyFromHost(scores, s);
        sinkhorn.Compute(s, q);
        // A second call reuses the collectives' buffers and gives the same codes.
        sinkhorn.Compute(s, q);
        return Numerics.ToArray(backend, q);
    }

    [Test]
    public void CodesMatchCpuTwin(
        [ValueSource(nameof(Rows))] int rows, [ValueSource(nameof(Cols))] int cols, [ValueSource(nameof(Paths))] SinkhornPath path)
    {
        Gpu.SinkhornPath = path;
        var scores = Numerics.RandomArray(rows * cols, rows ^ cols);
        var (gpu, cpu) = Codes(scores, rows, cols, 3, SinkhornOutput.Assignments);
        Numerics.AssertClose(gpu, cpu, Numerics.Fp32Tolerance, $"{rows}x{cols} {path}");
    }

    [Test]
    public void StreamedRowsMatchCpuTwin([Values(0, 1, 5)] int cachedRowsLimit, [Values(33, 1000, 4100)] int rows, [Values(300, 3001)] int cols)
    {
        // Caps the rows each block keeps on chip, so the fused kernel streams the others through its scratch slots.
        Gpu.SinkhornPath = SinkhornPath.Fused;
        Gpu.SinkhornCachedRowsLimit = cachedRowsLimit;
        var scores = SinkhornReference.CosineScores(rows, cols, 16, seed: rows + cols);
        var (gpu, cpu) = Codes(scores, rows, cols, 3, SinkhornOutput.Assignments);
        Numerics.AssertClose(gpu, cpu, Numerics.Fp32Tolerance, $"{rows}x{cols}, at most {cachedRowsLimit} rows per block on chip");
    }

    [Test]
    public void OutputFormsAndIterationCountsMatchCpuTwin(
        [Values(1, 2, 10)] int iterations, [Values] SinkhornOutput output, [ValueSource(nameof(Paths))] SinkhornPath path)
    {
        Gpu.SinkhornPath = path;
        var scores = SinkhornReference.CosineScores(1000, 300, 16, seed: 7);
        var (gpu, cpu) = Codes(scores, 1000, 300, iterations, output);
        Numerics.AssertClose(gpu, cpu, Numerics.Fp32Tolerance, $"{iterations} iterations, {output}, {path}");
    }

    [Test]
    public void ExtremeScoresStayFiniteOnBothPaths([ValueSource(nameof(Paths))] SinkhornPath path)
    {
        Gpu.SinkhornPath = path;
        const int rows = 1000, cols = 300;
        var row = Numerics.RandomArray(cols, 3, scale: 1e6f);
        var identical = Enumerable.Range(0, rows).SelectMany(_ => row).ToArray();
        var (uniform, _) = Codes(identical, rows, cols, 3, SinkhornOutput.Assignments);
        Numerics.AssertClose(uniform, Enumerable.Repeat(1.0 / cols, uniform.Length).ToArray(), 1e-6, "identical rows at 1e6");

        var huge = Numerics.RandomArray(rows * cols, 5, scale: 1e4f);
        var (gpu, cpu) = Codes(huge, rows, cols, 3, SinkhornOutput.Assignments);
        // Both sides round S − max S (up to 2·10^4) in float32: the forward-error bound max|S/ε|·2^-24 applies.
        Numerics.AssertClose(gpu, cpu, Numerics.Fp32Tolerance + (1e4 / Epsilon * Math.Pow(2, -24)), "scores up to 1e4");
    }

    [Test]
    public void FusedCodesAreBitwiseReproducible()
    {
        Gpu.SinkhornPath = SinkhornPath.Fused;
        var scores = Numerics.RandomArray(4100 * 3001, 9);
        var (first, _) = Codes(scores, 4100, 3001, 3, SinkhornOutput.Assignments);
        var (second, _) = Codes(scores, 4100, 3001, 3, SinkhornOutput.Assignments);
        Assert.That(second, Is.EqualTo(first));
    }

    [Test]
    public void MatrixThatFitsIsHeldOnChip()
    {
        Assume.That(Gpu.Info.MaxSharedMemoryPerBlockOptIn, Is.GreaterThanOrEqualTo(200 * 1024), "needs Hopper/Ampere-class shared memory");
        var plan = Gpu.PlanSinkhorn(1000, 3000);
        Assert.That(plan, Is.Not.Null);
        Assert.That((long)plan!.Blocks * plan.CachedRows, Is.GreaterThanOrEqualTo(1000), plan.ToString());
    }

    [Test]
    public void SwappedLossMatchesCpuTwin([Values(1, 7, 33, 1000)] int rows, [Values(3, 300, 3001, 9000)] int cols)
    {
        var shape = new TensorShape(rows, cols);
        var scores = Numerics.RandomArray(rows * cols, rows + cols);
        var codes = Numerics.RandomArray(rows * cols, cols, scale: 0.5f).Select(v => v + 0.5f).ToArray();
        var initialGradient = Numerics.RandomArray(rows * cols, 1, scale: 1f / (rows * cols));
        const float temperature = 0.1f, weight = 0.25f;

        using var cp = Cpu.FromArray(scores, shape, "scores");
        using var cq = Cpu.FromArray(codes, shape, "codes");
        using var cl = Cpu.FromArray([2f], new TensorShape(1), "loss");
        using var cr = Cpu.Allocate(new TensorShape(rows), "per-sample");
        using var cg = Cpu.FromArray(initialGradient, shape, "gradient");
        Cpu.SwappedPredictionLoss(cp, cq, temperature, cl, cr, cg, weight, accumulateLoss: true, accumulateGradient: true);

        using var gp = Gpu.Allocate(shape, "scores");
        using var gq = Gpu.Allocate(shape, "codes");
        using var gl = Gpu.Allocate(new TensorShape(1), "loss");
        using var gr = Gpu.Allocate(new TensorShape(rows), "per-sample");
        using var gg = Gpu.Allocate(shape, "gradient");
        Gpu.CopyFromHost(scores, gp);
        Gpu.CopyFromHost(codes, gq);
        Gpu.CopyFromHost([2f], gl);
        Gpu.CopyFromHost(initialGradient, gg);
        Gpu.SwappedPredictionLoss(gp, gq, temperature, gl, gr, gg, weight, accumulateLoss: true, accumulateGradient: true);

        // Compare what was added, so the initial values cannot hide an error in the increments.
        static float[] Added(float[] after, float[] before) => after.Select((v, i) => v - before[i]).ToArray();
        Numerics.AssertClose(Numerics.ToArray(Gpu, gr), cr.Span, Numerics.Fp32Tolerance, "per-sample loss");
        Numerics.AssertClose(Added(Numerics.ToArray(Gpu, gl), [2f]), Added(cl.Span.ToArray(), [2f]), Numerics.Fp32Tolerance, "added loss");
        Numerics.AssertClose(Added(Numerics.ToArray(Gpu, gg), initialGradient), Added(cg.Span.ToArray(), initialGradient), Numerics.Fp32Tolerance, "added gradient");

        Gpu.SwappedPredictionLoss(gp, gq, temperature, gl, gr, null);
        Cpu.SwappedPredictionLoss(cp, cq, temperature, cl, cr, null);
        Numerics.AssertClose(Numerics.ToArray(Gpu, gl), cl.Span, Numerics.Fp32Tolerance, "loss without gradient");
    }
}
