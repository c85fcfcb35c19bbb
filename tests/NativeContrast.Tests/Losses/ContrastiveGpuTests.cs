namespace NativeContrast.Tests.Losses;

using System.Collections.Concurrent;
using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>
/// Parity of native/contrastive.cu with the CPU twins on fresh random inputs of awkward sizes, per precision with
/// its tolerance (fp32 1e-5, tf32 1e-3, bf16 1e-2 relative). Top-1 accuracy may differ only on rows whose positive
/// is within the precision's error of the best negative.
/// </summary>
public class ContrastiveGpuTests : GpuTestBase
{
    private static readonly float[] Temperatures = [0.05f, 0.1f, 0.2f, 0.5f];
    private static readonly int[] Dims = [64, 72, 128, 256];
    private static readonly MatmulPrecision[] Precisions = [MatmulPrecision.Fp32, MatmulPrecision.Tf32, MatmulPrecision.Bf16];

    /// <summary>CPU results by case, shared across precisions (the large ones take seconds).</summary>
    private static readonly ConcurrentDictionary<string, Oracle> Oracles = new();

    public static IEnumerable<TestCaseData> NtXentCases()
    {
        foreach (var rows in new[] { 2, 6, 34, 130, 1000 })
        {
            foreach (var dim in Dims)
            {
                foreach (var tau in Temperatures)
                {
                    foreach (var precision in Precisions)
                    {
                        yield return new TestCaseData(rows, dim, tau, precision);
                    }
                }
            }
        }
        for (var d = 0; d < Dims.Length; d++)
        {
            foreach (var precision in Precisions)
            {
                yield return new TestCaseData(4098, Dims[d], Temperatures[d], precision);
            }
        }
        foreach (var precision in Precisions)
        {
            yield return new TestCaseData(32768, 128, 0.1f, precision);
        }
    }

    public static IEnumerable<TestCaseData> InfoNceCases()
    {
        var t = 0;
        foreach (var batch in new[] { 1, 7, 64, 257 })
        {
            foreach (var queueLength in new[] { 1, 63, 1000, 4097 })
            {
                foreach (var dim in Dims)
                {
                    var tau = Temperatures[t++ % Temperatures.Length];
                    foreach (var precision in Precisions)
                    {
                        yield return new TestCaseData(batch, dim, queueLength, tau, precision);
                    }
                }
            }
        }
        foreach (var precision in Precisions)
        {
            yield return new TestCaseData(256, 128, 65536, 0.2f, precision);
        }
    }

    [TestCaseSource(nameof(NtXentCases))]
    public void NtXentMatchesCpuTwin(int rows, int dim, float tau, MatmulPrecision precision)
    {
        var seed = (rows * 31) + dim;
        var z = Numerics.RandomArray(rows * dim, seed, scale: 3f);
        var oracle = Oracles.GetOrAdd($"ntxent {rows} {dim} {tau}", _ => NtXentOracle(z, rows, dim, tau));

        using var input = Gpu.Allocate(new TensorShape(rows, dim), "z");
        Gpu.CopyFromHost(z, input);
        using var dz = Gpu.Allocate(new TensorShape(rows, dim), "dz");
        using var loss = new NtXentLoss(Gpu, rows, dim, tau, precision);
        loss.Forward(input);
        loss.Backward(input, dz);
        // Two rows have no negatives: the gradient is zero, its two terms cancel, and the GPU's (its weighted sum of
        // the operand copy against the positive term in fp32) cancel only to the operand's precision.
        var floor = rows == 2 ? PositiveTermNorm(z, rows, dim, tau) : 0;
        AssertMatches(loss.ReadStats(), Numerics.ToArray(Gpu, dz), oracle, rows, precision, "dz", floor);
    }

    /// <summary>‖the positive's term of dz‖: 2 / (rows·τ·‖z_i‖) per row, the size of what cancels without negatives.</summary>
    private static double PositiveTermNorm(float[] z, int rows, int dim, float tau)
    {
        double sum = 0;
        for (var i = 0; i < rows; i++)
        {
            var norm = Math.Sqrt(z.AsSpan(i * dim, dim).ToArray().Sum(v => (double)v * v));
            var term = 2 / (rows * tau * norm);
            sum += term * term;
        }
        return Math.Sqrt(sum);
    }

    [TestCaseSource(nameof(InfoNceCases))]
    public void InfoNceMatchesCpuTwin(int batch, int dim, int queueLength, float tau, MatmulPrecision precision)
    {
        var seed = (batch * 131) + (queueLength * 7) + dim;
        var q = Numerics.RandomArray(batch * dim, seed, scale: 2f);
        var k = Numerics.RandomArray(batch * dim, seed + 1);
        var keys = Numerics.RandomArray(queueLength * dim, seed + 2);
        var oracle = Oracles.GetOrAdd($"infonce {batch} {dim} {queueLength} {tau}", _ => InfoNceOracle(q, k, keys, batch, dim, queueLength, tau));

        using var loss = new InfoNceLoss(Gpu, batch, dim, queueLength, tau, precision);
        using var keyTensor = Upload(Gpu, keys, queueLength, dim);
        loss.Enqueue(keyTensor);
        using var qt = Upload(Gpu, q, batch, dim);
        using var kt = Upload(Gpu, k, batch, dim);
        using var dq = Gpu.Allocate(new TensorShape(batch, dim), "dq");
        loss.Compute(qt, kt, dq);
        AssertMatches(loss.ReadStats(), Numerics.ToArray(Gpu, dq), oracle, batch, precision, "dq");
    }

    /// <summary>
    /// Rows on C orthogonal axes (row i on axis i mod C, with varying norms), so the loss and gradient are known in
    /// closed form and exact in every precision: at 2N = 262144 this checks that every column tile is visited.
    /// </summary>
    [TestCase(4098, 72, 3)]
    [TestCase(262144, 128, 128)]
    public void NtXentOnOrthogonalClustersMatchesClosedForm(int rows, int dim, int clusters)
    {
        const float tau = 0.1f;
        Assume.That(rows / 2 % clusters, Is.Zero, "partners must share a cluster");
        var z = new float[(long)rows * dim];
        for (var i = 0; i < rows; i++)
        {
            z[((long)i * dim) + (i % clusters)] = 1 + (i % 7);
        }
        var perCluster = rows / clusters;
        var partition = ((perCluster - 1) * Math.Exp(1 / tau)) + (rows - perCluster);
        var expectedLoss = Math.Log(partition) - (1 / tau);
        var offAxis = 2 * perCluster / partition / (rows * (double)tau);
        var expectedDz = new double[z.Length];
        for (var i = 0; i < rows; i++)
        {
            for (var c = 0; c < clusters; c++)
            {
                expectedDz[((long)i * dim) + c] = c == i % clusters ? 0 : offAxis / (1 + (i % 7));
            }
        }

        foreach (var precision in Precisions)
        {
            Assert.That(Gpu.NtXentWorkspaceLength(rows, dim, precision) * sizeof(float), Is.LessThan(1L << 30), $"{precision} workspace");
            using var input = Upload(Gpu, z, rows, dim);
            using var dz = Gpu.Allocate(new TensorShape(rows, dim), "dz");
            using var loss = new NtXentLoss(Gpu, rows, dim, tau, precision);
            loss.Forward(input);
            loss.Backward(input, dz);
            var stats = loss.ReadStats();
            var tolerance = Tolerance(precision);
            Assert.That(stats.Loss, Is.EqualTo(expectedLoss).Within(tolerance * expectedLoss), $"{precision} loss");
            Assert.That(stats.PositiveSimilarity, Is.EqualTo(1f).Within(tolerance), $"{precision} positive cosine");
            Assert.That(stats.Top1Accuracy, Is.EqualTo(1f), $"{precision} top-1 (ties count)");
            Numerics.AssertClose(Numerics.ToArray(Gpu, dz), expectedDz, tolerance, $"{precision} dz");
        }
    }

    [Test]
    public void QueueWrapsAroundAndKeepsEveryOperandCopyInStep()
    {
        const int batch = 64, dim = 72, capacity = 1000;
        const float tau = 0.07f;
        using var gpuLoss = new InfoNceLoss(Gpu, batch, dim, capacity, tau);
        using var cpuLoss = new InfoNceLoss(Cpu, batch, dim, capacity, tau, MatmulPrecision.Fp32);
        var initial = Numerics.RandomArray(capacity * dim, seed: 1);
        using (var g = Upload(Gpu, initial, capacity, dim))
        using (var c = Cpu.FromArray(initial, new TensorShape(capacity, dim)))
        {
            gpuLoss.Enqueue(g);
            cpuLoss.Enqueue(c);
        }
        for (var step = 0; step < 20; step++)
        {
            var q = Numerics.RandomArray(batch * dim, seed: 1000 + step);
            var k = Numerics.RandomArray(batch * dim, seed: 2000 + step);
            using var gq = Upload(Gpu, q, batch, dim);
            using var gk = Upload(Gpu, k, batch, dim);
            using var cq = Cpu.FromArray(q, new TensorShape(batch, dim));
            using var ck = Cpu.FromArray(k, new TensorShape(batch, dim));
            using var gdq = Gpu.Allocate(new TensorShape(batch, dim));
            using var cdq = Cpu.Allocate(new TensorShape(batch, dim));
            cpuLoss.Compute(cq, ck, cdq);
            var expected = cpuLoss.ReadStats();
            foreach (var precision in Precisions)
            {
                // Every precision reads its own operand copy of the queue; each must follow the enqueues.
                gpuLoss.Precision = precision;
                gpuLoss.Compute(gq, gk, gdq);
                var stats = gpuLoss.ReadStats();
                Assert.That(stats.Loss, Is.EqualTo(expected.Loss).Within(Tolerance(precision) * expected.Loss), $"step {step} {precision} loss");
                Numerics.AssertClose(Numerics.ToArray(Gpu, gdq), cdq.Span, Tolerance(precision), $"step {step} {precision} dq");
            }
            gpuLoss.Enqueue(gk);
            cpuLoss.Enqueue(ck);
            Assert.That(gpuLoss.Queue.Position, Is.EqualTo(cpuLoss.Queue.Position));
        }
        Numerics.AssertClose(Numerics.ToArray(Gpu, gpuLoss.Queue.Keys), cpuLoss.Queue.Keys.Span, Numerics.Fp32Tolerance, "queue contents");
    }

    [Test]
    public void EnqueueOfMoreKeysThanCapacityMatchesCpu()
    {
        const int capacity = 37, dim = 64, count = 100;
        var keys = Numerics.RandomArray(count * dim, seed: 5);
        using var gpuQueue = Gpu.CreateKeyQueue(capacity, dim);
        using var cpuQueue = Cpu.CreateKeyQueue(capacity, dim);
        using var g = Upload(Gpu, keys, count, dim);
        using var c = Cpu.FromArray(keys, new TensorShape(count, dim));
        Gpu.EnqueueKeys(gpuQueue, g);
        Cpu.EnqueueKeys(cpuQueue, c);
        Assert.That(gpuQueue.Position, Is.EqualTo(cpuQueue.Position));
        Numerics.AssertClose(Numerics.ToArray(Gpu, gpuQueue.Keys), cpuQueue.Keys.Span, Numerics.Fp32Tolerance, "queue");
    }

    [TestCase(130, 72, 0.1f)]
    [TestCase(1000, 128, 0.2f)]
    public void UnfusedNtXentMatchesCpu(int rows, int dim, float tau)
    {
        var z = Numerics.RandomArray(rows * dim, seed: 77);
        (ContrastiveStats, float[]) Run(IBackend backend)
        {
            using var input = backend.Allocate(new TensorShape(rows, dim));
            backend.CopyFromHost(z, input);
            using var dz = backend.Allocate(new TensorShape(rows, dim));
            using var loss = new UnfusedNtXent(backend, rows, dim, tau, MatmulPrecision.Fp32);
            loss.Forward(input);
            loss.Backward(dz);
            return (ContrastiveStats.Read(backend, loss.Stats), Numerics.ToArray(backend, dz));
        }
        var (gpuStats, gpuDz) = Run(Gpu);
        var (cpuStats, cpuDz) = Run(Cpu);
        Assert.That(gpuStats.Loss, Is.EqualTo(cpuStats.Loss).Within(Numerics.Fp32Tolerance * cpuStats.Loss));
        Numerics.AssertClose(gpuDz, cpuDz, Numerics.Fp32Tolerance, "unfused dz");
    }

    [TestCase(7, 33, 1000)]
    public void UnfusedInfoNceMatchesCpu(int batch, int dim, int queueLength)
    {
        var (q, k, keys) = (Numerics.RandomArray(batch * dim, 1), Numerics.RandomArray(batch * dim, 2), Numerics.RandomArray(queueLength * dim, 3));
        (ContrastiveStats, float[]) Run(IBackend backend)
        {
            using var qt = backend.Allocate(new TensorShape(batch, dim));
            using var kt = backend.Allocate(new TensorShape(batch, dim));
            using var keyTensor = backend.Allocate(new TensorShape(queueLength, dim));
            backend.CopyFromHost(q, qt);
            backend.CopyFromHost(k, kt);
            backend.CopyFromHost(keys, keyTensor);
            using var queue = backend.CreateKeyQueue(queueLength, dim);
            backend.EnqueueKeys(queue, keyTensor);
            using var dq = backend.Allocate(new TensorShape(batch, dim));
            using var loss = new UnfusedInfoNce(backend, batch, dim, queueLength, 0.1f, MatmulPrecision.Fp32);
            loss.Compute(qt, kt, queue, dq);
            return (ContrastiveStats.Read(backend, loss.Stats), Numerics.ToArray(backend, dq));
        }
        var (gpuStats, gpuDq) = Run(Gpu);
        var (cpuStats, cpuDq) = Run(Cpu);
        Assert.That(gpuStats.Loss, Is.EqualTo(cpuStats.Loss).Within(Numerics.Fp32Tolerance * cpuStats.Loss));
        Numerics.AssertClose(gpuDq, cpuDq, Numerics.Fp32Tolerance, "unfused dq");
    }

    [TestCase(6, PositivePairing.OtherView)]
    [TestCase(130, PositivePairing.OtherView)]
    [TestCase(33, PositivePairing.FirstColumn)]
    public void GlueOpsMatchCpu(int rows, PositivePairing pairing)
    {
        var cols = pairing == PositivePairing.OtherView ? rows : 1001;
        // Coarse values so that ties occur and the hit rule (ties count) is exercised.
        var logits = Numerics.RandomArray(rows * cols, seed: rows).Select(v => MathF.Round(v * 4) / 4).ToArray();
        using var gx = Upload(Gpu, logits, rows, cols);
        using var cx = Cpu.FromArray(logits, new TensorShape(rows, cols));
        if (pairing == PositivePairing.OtherView)
        {
            Gpu.MaskSelfSimilarity(gx);
            Cpu.MaskSelfSimilarity(cx);
        }
        using var gp = Gpu.Allocate(new TensorShape(rows));
        using var gh = Gpu.Allocate(new TensorShape(rows));
        using var cp = Cpu.Allocate(new TensorShape(rows));
        using var ch = Cpu.Allocate(new TensorShape(rows));
        Gpu.PositiveLogits(gx, pairing, gp, gh);
        Cpu.PositiveLogits(cx, pairing, cp, ch);
        Assert.That(Numerics.ToArray(Gpu, gp), Is.EqualTo(cp.Span.ToArray()));
        Assert.That(Numerics.ToArray(Gpu, gh), Is.EqualTo(ch.Span.ToArray()));
        Gpu.AddAtPositives(gx, pairing, -1.5f);
        Cpu.AddAtPositives(cx, pairing, -1.5f);
        Assert.That(Numerics.ToArray(Gpu, gx), Is.EqualTo(cx.Span.ToArray()));

        // Concatenate, split back, row dots and scaled row sums on [rows, 5] blocks.
        var a = Numerics.RandomArray(rows * 5, seed: 1);
        var b = Numerics.RandomArray(rows * 3, seed: 2);
        using var ga = Upload(Gpu, a, rows, 5);
        using var gb = Upload(Gpu, b, rows, 3);
        using var gab = Gpu.Allocate(new TensorShape(rows, 8));
        using var cab = Cpu.Allocate(new TensorShape(rows, 8));
        using var ca = Cpu.FromArray(a, new TensorShape(rows, 5));
        using var cb = Cpu.FromArray(b, new TensorShape(rows, 3));
        Gpu.ConcatColumns(ga, gb, gab);
        Cpu.ConcatColumns(ca, cb, cab);
        Assert.That(Numerics.ToArray(Gpu, gab), Is.EqualTo(cab.Span.ToArray()));
        using var ga2 = Gpu.Allocate(new TensorShape(rows, 5));
        using var gb2 = Gpu.Allocate(new TensorShape(rows, 3));
        Gpu.SplitColumns(gab, ga2, gb2);
        Assert.That(Numerics.ToArray(Gpu, ga2), Is.EqualTo(a));
        Assert.That(Numerics.ToArray(Gpu, gb2), Is.EqualTo(b));

        using var gdot = Gpu.Allocate(new TensorShape(rows));
        using var cdot = Cpu.Allocate(new TensorShape(rows));
        Gpu.RowDot(ga, ga2, 0.5f, gdot);
        Cpu.RowDot(ca, ca, 0.5f, cdot);
        Numerics.AssertClose(Numerics.ToArray(Gpu, gdot), cdot.Span, Numerics.Fp32Tolerance, "row dot");
        Gpu.AddScaledRows(ga, gdot, ga2);
        Cpu.AddScaledRows(ca, cdot, ca);
        Numerics.AssertClose(Numerics.ToArray(Gpu, ga2), ca.Span, Numerics.Fp32Tolerance, "scaled rows");
    }

    private sealed record Oracle(ContrastiveStats Stats, float[] Gradient, double[] Margins);

    private static double Tolerance(MatmulPrecision precision) => precision switch
    {
        MatmulPrecision.Fp32 => Numerics.Fp32Tolerance,
        MatmulPrecision.Tf32 => Numerics.Tf32Tolerance,
        _ => Numerics.Bf16Tolerance,
    };

    /// <summary>Cosine error a precision may make: rows whose positive is this close to the best negative may flip.</summary>
    private static double TieMargin(MatmulPrecision precision) => 2 * Tolerance(precision);

    private static void AssertMatches(ContrastiveStats stats, float[] gradient, Oracle oracle, int rows, MatmulPrecision precision, string what, double gradientFloor = 0)
    {
        var tolerance = Tolerance(precision);
        Assert.That(stats.Loss, Is.EqualTo(oracle.Stats.Loss).Within(tolerance * Math.Max(1, Math.Abs(oracle.Stats.Loss))), "loss");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(oracle.Stats.PositiveSimilarity).Within(tolerance), "mean positive cosine");
        var flips = oracle.Margins.Count(m => Math.Abs(m) < TieMargin(precision));
        Assert.That(Math.Abs(stats.Top1Accuracy - oracle.Stats.Top1Accuracy) * rows, Is.LessThanOrEqualTo(flips + 1e-3), "top-1 beyond near-ties");
        Numerics.AssertClose(gradient, oracle.Gradient, tolerance, what, gradientFloor);
    }

    private Oracle NtXentOracle(float[] z, int rows, int dim, float tau)
    {
        using var input = Cpu.FromArray(z, new TensorShape(rows, dim));
        using var dz = Cpu.Allocate(new TensorShape(rows, dim));
        using var loss = new NtXentLoss(Cpu, rows, dim, tau, MatmulPrecision.Fp32);
        loss.Forward(input);
        loss.Backward(input, dz);
        var zn = Normalize(z, rows, dim);
        var margins = new double[rows];
        Parallel.For(0, rows, i =>
        {
            var p = (i + (rows / 2)) % rows;
            var best = double.NegativeInfinity;
            for (var j = 0; j < rows; j++)
            {
                if (j != i && j != p)
                {
                    best = Math.Max(best, TensorPrimitives.Dot<float>(zn.AsSpan(i * dim, dim), zn.AsSpan(j * dim, dim)));
                }
            }
            margins[i] = TensorPrimitives.Dot<float>(zn.AsSpan(i * dim, dim), zn.AsSpan(p * dim, dim)) - best;
        });
        return new Oracle(loss.ReadStats(), dz.Span.ToArray(), margins);
    }

    private Oracle InfoNceOracle(float[] q, float[] k, float[] keys, int batch, int dim, int queueLength, float tau)
    {
        using var loss = new InfoNceLoss(Cpu, batch, dim, queueLength, tau, MatmulPrecision.Fp32);
        using var keyTensor = Cpu.FromArray(keys, new TensorShape(queueLength, dim));
        loss.Enqueue(keyTensor);
        using var qt = Cpu.FromArray(q, new TensorShape(batch, dim));
        using var kt = Cpu.FromArray(k, new TensorShape(batch, dim));
        using var dq = Cpu.Allocate(new TensorShape(batch, dim));
        loss.Compute(qt, kt, dq);
        var (qn, kn, kq) = (Normalize(q, batch, dim), Normalize(k, batch, dim), Normalize(keys, queueLength, dim));
        var margins = new double[batch];
        Parallel.For(0, batch, i =>
        {
            var best = double.NegativeInfinity;
            for (var j = 0; j < queueLength; j++)
            {
                best = Math.Max(best, TensorPrimitives.Dot<float>(qn.AsSpan(i * dim, dim), kq.AsSpan(j * dim, dim)));
            }
            margins[i] = TensorPrimitives.Dot<float>(qn.AsSpan(i * dim, dim), kn.AsSpan(i * dim, dim)) - best;
        });
        return new Oracle(loss.ReadStats(), dq.Span.ToArray(), margins);
    }

    private static float[] Normalize(float[] x, int rows, int dim)
    {
        var y = new float[x.Length];
        for (var i = 0; i < rows; i++)
        {
            var row = x.AsSpan(i * dim, dim);
            TensorPrimitives.Multiply(row, 1f / MathF.Max(TensorPrimitives.Norm<float>(row), 1e-12f), y.AsSpan(i * dim, dim));
        }
        return y;
    }

    private static Tensor Upload(IBackend backend, float[] values, int rows, int cols)
    {
        var t = backend.Allocate(new TensorShape(rows, cols));
        backend.CopyFromHost(values, t);
        return t;
    }
}
