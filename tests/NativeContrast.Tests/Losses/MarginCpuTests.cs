namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The CPU twin of the margin loss against a float64 reference, finite differences through the normalisation, and its argument checks.</summary>
public class MarginCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [Test]
    public void MatchesFloat64Reference([Values(2, 6, 34, 130)] int rows, [Values(3, 17, 128)] int dim, [Values(0.5f, 1.5f)] float margin)
    {
        var u = UnitRows(Numerics.RandomArray(rows * dim, seed: rows + dim, scale: 2f), rows, dim);
        var (stats, du) = Run(u, rows, dim, margin, gradScale: 1f);
        var expected = ContrastiveReference.Margin(ContrastiveReference.ToDouble(u), rows, dim, margin);
        NtXentCpuTests.AssertStats(stats, expected, Numerics.Fp32Tolerance);
        Numerics.AssertClose(du, expected.Gradient, Numerics.Fp32Tolerance, "du");
    }

    [TestCase(1.2f)]
    [TestCase(1.5f)]
    public void GradientThroughTheNormalisationMatchesFiniteDifferences(float margin)
    {
        const int rows = 6, dim = 5;
        var z = Numerics.RandomArray(rows * dim, seed: 11);
        var parameters = ContrastiveReference.ToDouble(z);
        var expected = ContrastiveReference.MarginOfNormalized(parameters, rows, dim, margin);
        var inside = NegativesInside(parameters, rows, dim, margin);
        Assert.That(inside, Is.InRange(rows, (rows * (rows - 2)) - rows), "negative pairs (both orderings) inside the margin: some, not all");
        var numeric = Numerics.FiniteDifferenceGradient(parameters, () => ContrastiveReference.MarginOfNormalized(parameters, rows, dim, margin).Loss);
        Assert.That(RelativeError(expected.Gradient, numeric), Is.LessThan(1e-7), "the float64 reference's own gradient");

        // The engine's path: u = normalize(z), the op's du, dz from L2NormalizeRowsBackward.
        using var zt = _cpu.FromArray(z, new TensorShape(rows, dim), "z");
        using var u = _cpu.Allocate(new TensorShape(rows, dim), "u");
        using var norms = _cpu.Allocate(new TensorShape(rows), "norms");
        using var du = _cpu.Allocate(new TensorShape(rows, dim), "du");
        using var dz = _cpu.Allocate(new TensorShape(rows, dim), "dz");
        using var loss = new MarginLoss(_cpu, rows, dim, margin);
        _cpu.L2NormalizeRows(zt, u, norms);
        loss.Compute(u, du);
        _cpu.L2NormalizeRowsBackward(u, norms, du, dz);
        Assert.That(loss.ReadStats().Loss, Is.EqualTo(expected.Loss).Within(Numerics.Fp32Tolerance * expected.Loss), "loss");
        Numerics.AssertClose(dz.Span, numeric, Numerics.Fp32Tolerance, "dz against finite differences");
    }

    /// <summary>
    /// Row i on axis i mod N: positives coincide and negatives are orthogonal, at distance √2, so every negative pays
    /// ½(m − √2)² inside a margin of 1.5 and nothing outside one of 1.4; du_i = −(2/R)u_p + (2/(R(R − 2)))·w·Σ_neg u_j.
    /// </summary>
    [TestCase(10, 7, 1.5f)]
    [TestCase(10, 7, 1.4f)]
    public void OrthogonalSamplesMatchClosedForm(int rows, int dim, float margin)
    {
        var half = rows / 2;
        var u = new float[rows * dim];
        for (var i = 0; i < rows; i++)
        {
            u[(i * dim) + (i % half)] = 1f;
        }
        var (stats, du) = Run(u, rows, dim, margin, gradScale: 1f);

        var hinge = Math.Max(0, margin - Math.Sqrt(2));
        var weight = hinge / Math.Sqrt(2);
        var expectedDu = new double[rows * dim];
        for (var i = 0; i < rows; i++)
        {
            for (var axis = 0; axis < half; axis++)
            {
                // The other samples' two views each contribute w·e_axis; the partner's own axis gets −(2/R).
                expectedDu[(i * dim) + axis] = axis == i % half ? -2.0 / rows : 2.0 * 2 * weight / (rows * (rows - 2.0));
            }
        }
        Assert.That(stats.Loss, Is.EqualTo(0.5 * hinge * hinge).Within(1e-7), "loss: positives coincide, every negative pays the same");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(1f));
        Assert.That(stats.Top1Accuracy, Is.EqualTo(1f));
        Numerics.AssertClose(du, expectedDu, Numerics.Fp32Tolerance, "du");
    }

    [Test]
    public void OnePairHasNoNegatives()
    {
        var u = UnitRows([1f, 2f, 2f, 0f, 3f, 4f], 2, 3);
        var (stats, du) = Run(u, 2, 3, 1.5f, gradScale: 1f);
        var cosine = (u[0] * u[3]) + (u[1] * u[4]) + (u[2] * u[5]);
        Assert.That(stats.Loss, Is.EqualTo(1 - cosine).Within(1e-6), "only ½d² of the pair");
        Assert.That(stats.Top1Accuracy, Is.EqualTo(1f), "the partner is the only other row");
        Numerics.AssertClose(du, [-u[3], -u[4], -u[5], -u[0], -u[1], -u[2]], Numerics.Fp32Tolerance, "du = −(2/R)·u_p with R = 2");
    }

    [Test]
    public void GradScaleScalesTheGradientAndNoGradientKeepsTheStats()
    {
        const int rows = 12, dim = 9;
        var u = UnitRows(Numerics.RandomArray(rows * dim, seed: 5), rows, dim);
        var (stats, du) = Run(u, rows, dim, 1.2f, gradScale: 1f);
        var (_, scaled) = Run(u, rows, dim, 1.2f, gradScale: -2.5f);
        Numerics.AssertClose(scaled, du.Select(v => -2.5f * v).ToArray(), Numerics.Fp32Tolerance, "du scaled by -2.5");

        using var input = _cpu.FromArray(u, new TensorShape(rows, dim), "u");
        using var loss = new MarginLoss(_cpu, rows, dim, 1.2f);
        loss.Compute(input, du: null);
        Assert.That(loss.ReadStats(), Is.EqualTo(stats), "the statistics do not depend on whether du is computed");
    }

    [Test]
    public void RejectsBadArgumentsNamingTheTensor()
    {
        using var odd = _cpu.Allocate(new TensorShape(5, 4), "u");
        using var u = _cpu.Allocate(new TensorShape(4, 4), "u");
        using var stats = _cpu.Allocate(new TensorShape(3), "stats");
        using var workspace = _cpu.Allocate(new TensorShape(1), "workspace");
        Assert.That(() => _cpu.MarginLoss(odd, 1f, workspace, stats, null), Throws.ArgumentException.With.Message.Contains("u [5, 4]").And.Message.Contains("[2N, dim]"));
        using var vector = _cpu.Allocate(new TensorShape(4), "u");
        Assert.That(() => _cpu.MarginLoss(vector, 1f, workspace, stats, null), Throws.ArgumentException.With.Message.Contains("u [4]"));

        foreach (var margin in new[] { 0f, -1f, float.NaN, float.PositiveInfinity })
        {
            Assert.That(() => _cpu.MarginLoss(u, margin, workspace, stats, null), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("margin"), $"margin {margin}");
        }

        using var wideStats = _cpu.Allocate(new TensorShape(4), "stats");
        Assert.That(() => _cpu.MarginLoss(u, 1f, workspace, wideStats, null), Throws.ArgumentException.With.Message.Contains("stats [4]"));

        using var wrongShape = _cpu.Allocate(new TensorShape(4, 3), "du");
        Assert.That(() => _cpu.MarginLoss(u, 1f, workspace, stats, wrongShape), Throws.ArgumentException.With.Message.Contains("du [4, 3]"));
    }

    [TestCase(0, TestName = "du is u")]
    [TestCase(5, TestName = "du overlaps u by all but five elements")]
    public void RejectsAGradientOverlappingU(int shift)
    {
        const int rows = 4, dim = 3;
        using var storage = _cpu.FromArray(Numerics.RandomArray((2 * rows * dim) + shift, seed: 3), new TensorShape((2 * rows * dim) + shift));
        var u = storage.View(0, new TensorShape(rows, dim), "u");
        var du = storage.View(shift, new TensorShape(rows, dim), "du");
        using var workspace = _cpu.Allocate(new TensorShape(1));
        using var stats = _cpu.Allocate(new TensorShape(3));
        var e = Assert.Throws<ArgumentException>(() => _cpu.MarginLoss(u, 1f, workspace, stats, du));
        Assert.That(e!.Message, Does.Contain("du [4, 3]").And.Contain("overlaps u [4, 3]"));

        var after = storage.View(rows * dim, new TensorShape(rows, dim), "du");
        Assert.DoesNotThrow(() => _cpu.MarginLoss(u, 1f, workspace, stats, after), "the rows right after u are free");
    }

    [Test]
    public void LossRejectsABadMarginAndAnotherShape()
    {
        Assert.That(() => new MarginLoss(_cpu, 4, 3, 0f), Throws.InstanceOf<ArgumentOutOfRangeException>());
        using var loss = new MarginLoss(_cpu, 4, 3, 1f);
        Assert.That(() => loss.Margin = float.NaN, Throws.InstanceOf<ArgumentOutOfRangeException>());
        using var u = _cpu.Allocate(new TensorShape(6, 3), "u");
        Assert.That(() => loss.Compute(u, null), Throws.ArgumentException.With.Message.Contains("u [6, 3]"));
    }

    [TestCase(1, "nc_margin_loss_d32")]
    [TestCase(32, "nc_margin_loss_d32")]
    [TestCase(33, "nc_margin_loss_d64")]
    [TestCase(128, "nc_margin_loss_d128")]
    [TestCase(1000, "nc_margin_loss_d1024")]
    [TestCase(1024, "nc_margin_loss_d1024")]
    public void CudaPicksTheNarrowestKernelThatHoldsTheRow(int dim, string kernel)
    {
        using var u = _cpu.Allocate(new TensorShape(2, dim), "u");
        Assert.That(CudaBackend.MarginKernel(dim, u), Is.EqualTo(kernel));
    }

    [Test]
    public void CudaRejectsRowsWiderThanItsKernels()
    {
        using var u = _cpu.Allocate(new TensorShape(2, CudaBackend.MarginMaxDim + 1), "u");
        Assert.That(() => CudaBackend.MarginKernel(u.Cols, u), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("u [2, 1025]").And.Message.Contains("1024"));
    }

    private (ContrastiveStats Stats, float[] Du) Run(float[] u, int rows, int dim, float margin, float gradScale)
    {
        using var input = _cpu.FromArray(u, new TensorShape(rows, dim), "u");
        using var du = _cpu.Allocate(new TensorShape(rows, dim), "du");
        using var loss = new MarginLoss(_cpu, rows, dim, margin);
        loss.Compute(input, du, gradScale);
        return (loss.ReadStats(), du.Span.ToArray());
    }

    /// <summary>The rows of z normalised by the backend, as a caller of the op does.</summary>
    private float[] UnitRows(float[] z, int rows, int dim)
    {
        using var input = _cpu.FromArray(z, new TensorShape(rows, dim));
        using var u = _cpu.Allocate(new TensorShape(rows, dim));
        using var norms = _cpu.Allocate(new TensorShape(rows));
        _cpu.L2NormalizeRows(input, u, norms);
        return u.Span.ToArray();
    }

    /// <summary>Ordered negative pairs (i, j) of the normalised rows of z closer than the margin.</summary>
    private static int NegativesInside(double[] z, int rows, int dim, double margin)
    {
        var norms = Enumerable.Range(0, rows).Select(i => Math.Sqrt(Enumerable.Range(0, dim).Sum(f => z[(i * dim) + f] * z[(i * dim) + f]))).ToArray();
        var inside = 0;
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < rows; j++)
            {
                if (j != i && j != (i + (rows / 2)) % rows)
                {
                    var cosine = Enumerable.Range(0, dim).Sum(f => z[(i * dim) + f] * z[(j * dim) + f]) / (norms[i] * norms[j]);
                    inside += Math.Sqrt(2 - (2 * cosine)) < margin ? 1 : 0;
                }
            }
        }
        return inside;
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
