namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The CPU twin of InfoNCE with a key queue against a float64 reference, finite differences and the unfused composition.</summary>
public class InfoNceCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(1, 5, 1, 0.2f)]
    [TestCase(7, 33, 50, 0.07f)]
    [TestCase(33, 72, 1000, 0.2f)]
    [TestCase(16, 64, 257, 0.05f)]
    public void MatchesFloat64Reference(int batch, int dim, int queueLength, float tau)
    {
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: batch + queueLength);
        var (stats, dq) = RunFused(q, k, keys, batch, dim, queueLength, tau, gradScale: 1f);
        var expected = ContrastiveReference.InfoNce(ContrastiveReference.ToDouble(q), ContrastiveReference.ToDouble(k), ContrastiveReference.ToDouble(keys), batch, dim, queueLength, tau);
        NtXentCpuTests.AssertStats(stats, expected, Numerics.Fp32Tolerance);
        Numerics.AssertClose(dq, expected.Gradient, Numerics.Fp32Tolerance, "dq");
    }

    [Test]
    public void GradientMatchesFiniteDifferences()
    {
        const int batch = 3, dim = 4, queueLength = 9;
        const double tau = 0.2;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 8);
        var parameters = ContrastiveReference.ToDouble(q);
        var (kd, keysd) = (ContrastiveReference.ToDouble(k), ContrastiveReference.ToDouble(keys));
        var numeric = Numerics.FiniteDifferenceGradient(parameters, () => ContrastiveReference.InfoNce(parameters, kd, keysd, batch, dim, queueLength, tau).Loss);
        var analytic = ContrastiveReference.InfoNce(parameters, kd, keysd, batch, dim, queueLength, tau).Gradient;
        Assert.That(Numerics.RelativeError(ContrastiveReference.ToFloat(analytic), numeric), Is.LessThan(1e-6), "the float64 reference's own gradient");

        var (_, dq) = RunFused(q, k, keys, batch, dim, queueLength, (float)tau, gradScale: 1f);
        Numerics.AssertClose(dq, numeric, Numerics.Fp32Tolerance, "dq against finite differences");
    }

    [Test]
    public void FusedMatchesUnfusedComposition()
    {
        const int batch = 9, dim = 20, queueLength = 130;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 2);
        var (stats, dq) = RunFused(q, k, keys, batch, dim, queueLength, 0.1f, gradScale: 2f);

        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim));
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim));
        using var keyTensor = _cpu.FromArray(keys, new TensorShape(queueLength, dim));
        using var queue = _cpu.CreateKeyQueue(queueLength, dim);
        _cpu.EnqueueKeys(queue, keyTensor);
        using var unfused = new UnfusedInfoNce(_cpu, batch, dim, queueLength, 0.1f);
        using var unfusedDq = _cpu.Allocate(new TensorShape(batch, dim));
        unfused.Compute(qt, kt, queue, unfusedDq, gradScale: 2f);
        var reference = ContrastiveStats.Read(_cpu, unfused.Stats);
        Assert.That(stats.Loss, Is.EqualTo(reference.Loss).Within(1e-5 * Math.Abs(reference.Loss)));
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(reference.PositiveSimilarity).Within(1e-5));
        Assert.That(stats.Top1Accuracy, Is.EqualTo(reference.Top1Accuracy));
        Numerics.AssertClose(dq, unfusedDq.Span, Numerics.Fp32Tolerance, "fused dq against the unfused composition");
    }

    [Test]
    public void WithoutDqOnlyStatisticsAreComputed()
    {
        const int batch = 4, dim = 6, queueLength = 10;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 4);
        using var loss = Loss(keys, batch, dim, queueLength, 0.2f);
        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim));
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim));
        loss.Compute(qt, kt, dq: null);
        var expected = ContrastiveReference.InfoNce(ContrastiveReference.ToDouble(q), ContrastiveReference.ToDouble(k), ContrastiveReference.ToDouble(keys), batch, dim, queueLength, 0.2);
        NtXentCpuTests.AssertStats(loss.ReadStats(), expected, Numerics.Fp32Tolerance);
    }

    [Test]
    public void EnqueueNormalisesAndWrapsAround()
    {
        const int capacity = 10, dim = 3;
        using var queue = _cpu.CreateKeyQueue(capacity, dim);
        var written = new float[capacity * dim];
        var position = 0;
        for (var step = 0; step < 4; step++)
        {
            var keys = Numerics.RandomArray(4 * dim, seed: 100 + step, scale: 5f);
            using var batch = _cpu.FromArray(keys, new TensorShape(4, dim));
            _cpu.EnqueueKeys(queue, batch);
            for (var r = 0; r < 4; r++)
            {
                var norm = MathF.Sqrt(Enumerable.Range(0, dim).Sum(f => keys[(r * dim) + f] * keys[(r * dim) + f]));
                for (var f = 0; f < dim; f++)
                {
                    written[((position + r) % capacity * dim) + f] = keys[(r * dim) + f] / norm;
                }
            }
            position = (position + 4) % capacity;
            Assert.That(queue.Position, Is.EqualTo(position), $"position after enqueue {step}");
        }
        Numerics.AssertClose(queue.Keys.Span, written, 1e-6, "queue contents after wrapping around");
    }

    [Test]
    public void EnqueueOfMoreKeysThanCapacityKeepsTheLastOnes()
    {
        const int capacity = 4, dim = 2;
        using var queue = _cpu.CreateKeyQueue(capacity, dim);
        var keys = Enumerable.Range(0, 6).SelectMany(r => new[] { 1f, r }).ToArray();
        using var batch = _cpu.FromArray(keys, new TensorShape(6, dim));
        _cpu.EnqueueKeys(queue, batch);
        Assert.That(queue.Position, Is.EqualTo(2));
        // Keys 2..5 land on rows 2, 3, 0, 1: the queue reads 4, 5, 2, 3 (second coordinate before normalising).
        var second = Enumerable.Range(0, capacity).Select(r => queue.Keys.Span[(r * dim) + 1] / queue.Keys.Span[r * dim]).ToArray();
        Assert.That(second, Is.EqualTo(new float[] { 4, 5, 2, 3 }).Within(1e-5));
    }

    private (ContrastiveStats Stats, float[] Dq) RunFused(float[] q, float[] k, float[] keys, int batch, int dim, int queueLength, float tau, float gradScale)
    {
        using var loss = Loss(keys, batch, dim, queueLength, tau);
        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim), "q");
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim), "k");
        using var dq = _cpu.Allocate(new TensorShape(batch, dim), "dq");
        loss.Compute(qt, kt, dq, gradScale);
        return (loss.ReadStats(), dq.Span.ToArray());
    }

    private InfoNceLoss Loss(float[] keys, int batch, int dim, int queueLength, float tau)
    {
        var loss = new InfoNceLoss(_cpu, batch, dim, queueLength, tau, MatmulPrecision.Fp32);
        using var keyTensor = _cpu.FromArray(keys, new TensorShape(queueLength, dim));
        loss.Enqueue(keyTensor);
        return loss;
    }

    private static (float[] Q, float[] K, float[] Keys) Inputs(int batch, int dim, int queueLength, int seed) =>
        (Numerics.RandomArray(batch * dim, seed, 2f), Numerics.RandomArray(batch * dim, seed + 1), Numerics.RandomArray(queueLength * dim, seed + 2));
}
