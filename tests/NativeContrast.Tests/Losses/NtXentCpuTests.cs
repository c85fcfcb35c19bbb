namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The CPU twin of the fused NT-Xent against a float64 reference, finite differences and the unfused composition.</summary>
public class NtXentCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(2, 3, 0.5f)]
    [TestCase(6, 7, 0.2f)]
    [TestCase(34, 33, 0.1f)]
    [TestCase(130, 64, 0.05f)]
    [TestCase(64, 72, 0.07f)]
    public void MatchesFloat64Reference(int rows, int dim, float tau)
    {
        var z = Numerics.RandomArray(rows * dim, seed: rows + dim, scale: 2f);
        var (stats, dz) = RunFused(z, rows, dim, tau, gradScale: 1f);
        var expected = ContrastiveReference.NtXent(ContrastiveReference.ToDouble(z), rows, dim, tau);
        AssertStats(stats, expected, Numerics.Fp32Tolerance);
        Numerics.AssertClose(dz, expected.Gradient, Numerics.Fp32Tolerance, "dz");
    }

    [Test]
    public void GradientMatchesFiniteDifferences()
    {
        const int rows = 6, dim = 5;
        const double tau = 0.2;
        var z = Numerics.RandomArray(rows * dim, seed: 11);
        var parameters = ContrastiveReference.ToDouble(z);
        var numeric = Numerics.FiniteDifferenceGradient(parameters, () => ContrastiveReference.NtXent(parameters, rows, dim, tau).Loss);
        var analytic = ContrastiveReference.NtXent(parameters, rows, dim, tau).Gradient;
        Assert.That(RelativeError(analytic, numeric), Is.LessThan(1e-7), "the float64 reference's own gradient");

        var (_, dz) = RunFused(z, rows, dim, (float)tau, gradScale: 1f);
        Numerics.AssertClose(dz, numeric, Numerics.Fp32Tolerance, "dz against finite differences");
    }

    [Test]
    public void GradScaleScalesTheGradient()
    {
        const int rows = 8, dim = 6;
        var z = Numerics.RandomArray(rows * dim, seed: 5);
        var (_, dz) = RunFused(z, rows, dim, 0.3f, gradScale: 1f);
        var (_, scaled) = RunFused(z, rows, dim, 0.3f, gradScale: -2.5f);
        Numerics.AssertClose(scaled, dz.Select(v => -2.5f * v).ToArray(), Numerics.Fp32Tolerance, "dz scaled by -2.5");
    }

    [Test]
    public void IdenticalRowsGiveUniformSoftmaxAndNoGradient()
    {
        const int rows = 10, dim = 4;
        var z = Enumerable.Range(0, rows * dim).Select(i => (float)((i % dim) + 1)).ToArray();
        var (stats, dz) = RunFused(z, rows, dim, 0.05f, gradScale: 1f);
        Assert.That(stats.Loss, Is.EqualTo(Math.Log(rows - 1)).Within(1e-5), "every candidate ties with the positive");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(1f).Within(1e-6));
        Assert.That(stats.Top1Accuracy, Is.EqualTo(1f), "a tie counts as a hit");
        Assert.That(dz.Max(Math.Abs), Is.LessThan(1e-5f));
    }

    [Test]
    public void OrthogonalRowsGiveLogOfCandidates()
    {
        const int rows = 8, dim = 8;
        var z = new float[rows * dim];
        for (var i = 0; i < rows; i++)
        {
            z[(i * dim) + i] = 3f;
        }
        var (stats, dz) = RunFused(z, rows, dim, 0.1f, gradScale: 1f);
        var expected = ContrastiveReference.NtXent(ContrastiveReference.ToDouble(z), rows, dim, 0.1);
        Assert.That(stats.Loss, Is.EqualTo(Math.Log(rows - 1)).Within(1e-5));
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(0f).Within(1e-7));
        Numerics.AssertClose(dz, expected.Gradient, Numerics.Fp32Tolerance, "dz");
    }

    [TestCase(0.3f)]
    [TestCase(0.01f)]
    public void SharpTemperatureStaysFinite(float noise)
    {
        // Positives close together, negatives spread: logits up to 1/0.05 = 20, losses near zero.
        const int rows = 16, dim = 12;
        var z = Numerics.RandomArray(rows * dim, seed: 3, scale: noise);
        var basis = Numerics.RandomArray((rows / 2) * dim, seed: 4);
        for (var i = 0; i < rows; i++)
        {
            for (var f = 0; f < dim; f++)
            {
                z[(i * dim) + f] += basis[((i % (rows / 2)) * dim) + f];
            }
        }
        var (stats, dz) = RunFused(z, rows, dim, 0.05f, gradScale: 1f);
        var expected = ContrastiveReference.NtXent(ContrastiveReference.ToDouble(z), rows, dim, 0.05);
        Assert.That(float.IsFinite(stats.Loss) && dz.All(float.IsFinite), Is.True);
        AssertStats(stats, expected, Numerics.Fp32Tolerance);
        // With planted positives P_ip is close to 1 and dz_i is a small difference of O(1) terms
        // (sum_j W_ij zn_j against 2 zn_p, each of size 2 / (rows tau |z_i|)); rounding zn to fp32 alone moves it
        // by 1e-5 of those terms, so the error is measured against their size, not against dz's.
        double error = 0, scale = 0;
        for (var i = 0; i < rows; i++)
        {
            var norm = Math.Sqrt(Enumerable.Range(0, dim).Sum(f => (double)z[(i * dim) + f] * z[(i * dim) + f]));
            scale += Math.Pow(2 / (rows * 0.05 * norm), 2);
            for (var f = 0; f < dim; f++)
            {
                error += Math.Pow(dz[(i * dim) + f] - expected.Gradient[(i * dim) + f], 2);
            }
        }
        Assert.That(Math.Sqrt(error / scale), Is.LessThan(Numerics.Fp32Tolerance), "dz error relative to the size of its terms");
    }

    [Test]
    public void SharpTemperatureOnRandomRowsMatchesReference()
    {
        const int rows = 40, dim = 6;
        var z = Numerics.RandomArray(rows * dim, seed: 9);
        var (stats, dz) = RunFused(z, rows, dim, 0.05f, gradScale: 1f);
        var expected = ContrastiveReference.NtXent(ContrastiveReference.ToDouble(z), rows, dim, 0.05);
        AssertStats(stats, expected, Numerics.Fp32Tolerance);
        Numerics.AssertClose(dz, expected.Gradient, Numerics.Fp32Tolerance, "dz");
    }

    [TestCase(6, 5, 0.2f)]
    [TestCase(130, 33, 0.1f)]
    public void FusedMatchesUnfusedComposition(int rows, int dim, float tau)
    {
        var z = Numerics.RandomArray(rows * dim, seed: 21);
        var (stats, dz) = RunFused(z, rows, dim, tau, gradScale: 0.5f);
        using var input = _cpu.FromArray(z, new TensorShape(rows, dim));
        using var unfused = new UnfusedNtXent(_cpu, rows, dim, tau);
        using var unfusedDz = _cpu.Allocate(new TensorShape(rows, dim));
        unfused.Forward(input);
        unfused.Backward(unfusedDz, gradScale: 0.5f);
        var reference = ContrastiveStats.Read(_cpu, unfused.Stats);
        Assert.That(stats.Loss, Is.EqualTo(reference.Loss).Within(1e-5 * Math.Abs(reference.Loss)));
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(reference.PositiveSimilarity).Within(1e-5));
        Assert.That(stats.Top1Accuracy, Is.EqualTo(reference.Top1Accuracy));
        Numerics.AssertClose(dz, unfusedDz.Span, Numerics.Fp32Tolerance, "fused dz against the unfused composition");
    }

    [Test]
    public void RejectsOddRowsAndBadTemperature()
    {
        using var odd = _cpu.Allocate(new TensorShape(5, 4), "z");
        using var even = _cpu.Allocate(new TensorShape(4, 4), "z");
        using var workspace = _cpu.Allocate(new TensorShape(64));
        using var stats = _cpu.Allocate(new TensorShape(3));
        Assert.That(() => _cpu.NtXentForward(odd, 0.1f, MatmulPrecision.Fp32, workspace, stats), Throws.ArgumentException.With.Message.Contains("z [5, 4]"));
        Assert.That(() => _cpu.NtXentForward(even, 0f, MatmulPrecision.Fp32, workspace, stats), Throws.InstanceOf<ArgumentOutOfRangeException>());
        using var small = _cpu.Allocate(new TensorShape(3));
        Assert.That(() => _cpu.NtXentForward(even, 0.1f, MatmulPrecision.Fp32, small, stats), Throws.ArgumentException.With.Message.Contains("workspace"));
    }

    [Test]
    public void BackwardBeforeForwardIsAnError()
    {
        using var loss = new NtXentLoss(_cpu, 4, 3, 0.1f);
        using var z = _cpu.Allocate(new TensorShape(4, 3));
        using var dz = _cpu.Allocate(new TensorShape(4, 3));
        Assert.That(() => loss.Backward(z, dz), Throws.InvalidOperationException);
    }

    private (ContrastiveStats Stats, float[] Dz) RunFused(float[] z, int rows, int dim, float tau, float gradScale)
    {
        using var input = _cpu.FromArray(z, new TensorShape(rows, dim), "z");
        using var dz = _cpu.Allocate(new TensorShape(rows, dim), "dz");
        using var loss = new NtXentLoss(_cpu, rows, dim, tau, MatmulPrecision.Fp32);
        loss.Forward(input);
        loss.Backward(input, dz, gradScale);
        return (loss.ReadStats(), dz.Span.ToArray());
    }

    internal static void AssertStats(ContrastiveStats actual, ContrastiveReference.Result expected, double tolerance)
    {
        Assert.That(actual.Loss, Is.EqualTo(expected.Loss).Within(tolerance * Math.Max(1, Math.Abs(expected.Loss))), "loss");
        Assert.That(actual.PositiveSimilarity, Is.EqualTo(expected.PositiveSimilarity).Within(tolerance), "mean positive cosine");
        Assert.That(actual.Top1Accuracy, Is.EqualTo(expected.Top1).Within(1e-6), "top-1 accuracy");
    }

    private static double RelativeError(double[] actual, double[] expected)
    {
        double diff = 0, norm = 0;
        for (var i = 0; i < actual.Length; i++)
        {
            diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
            norm += expected[i] * expected[i];
        }
        return Math.Sqrt(diff / norm);
    }
}
