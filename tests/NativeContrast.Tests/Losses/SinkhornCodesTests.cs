namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The CPU twin of the Sinkhorn-Knopp codes against float64 references of SwAV's distributed_sinkhorn.</summary>
public class SinkhornCodesTests
{
    private const float Epsilon = 0.05f;

    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    private float[] Codes(float[] scores, int rows, int cols, int iterations, SinkhornOutput output, float epsilon = Epsilon)
    {
        using var s = _cpu.FromArray(scores, new TensorShape(rows, cols), "scores");
        using var q = _cpu.Allocate(new TensorShape(rows, cols), "codes");
        using var w = _cpu.Allocate(new TensorShape(checked((int)_cpu.SinkhornWorkspaceLength(rows, cols))), "workspace");
        _cpu.SinkhornCodes(s, q, w, epsilon, iterations, output);
        return q.Span.ToArray();
    }

    [TestCase(1, 3)]
    [TestCase(7, 10)]
    [TestCase(33, 300)]
    [TestCase(100, 64)]
    [TestCase(257, 31)]
    public void CodesMatchSwavFloat64Reference(int rows, int cols)
    {
        // Scores in [-1, 1], the range of the cosine scores SwAV feeds in, so exp(S/ε) spans e^±20.
        var scores = Numerics.RandomArray(rows * cols, seed: rows + cols);
        foreach (var output in new[] { SinkhornOutput.Assignments, SinkhornOutput.Marginals })
        {
            var expected = SinkhornReference.Swav(scores, rows, cols, Epsilon, 3, output == SinkhornOutput.Assignments);
            Numerics.AssertClose(Codes(scores, rows, cols, 3, output), expected, Numerics.Fp32Tolerance, $"{rows}x{cols} {output}");
        }
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(10)]
    public void CodesMatchSwavFloat64ReferenceForAnyIterationCount(int iterations)
    {
        var scores = SinkhornReference.CosineScores(65, 40, 16, seed: 3);
        var expected = SinkhornReference.Swav(scores, 65, 40, Epsilon, iterations, rescale: true);
        Numerics.AssertClose(Codes(scores, 65, 40, iterations, SinkhornOutput.Assignments), expected, Numerics.Fp32Tolerance, $"{iterations} iterations");
    }

    [Test]
    public void PlanRowsSumToOneOverBAndColumnsMatchSwavAfterThreeIterations()
    {
        const int rows = 257, cols = 31;
        var scores = SinkhornReference.CosineScores(rows, cols, 16, seed: 5);
        var (rowSums, colSums) = SinkhornReference.Marginals(Codes(scores, rows, cols, 3, SinkhornOutput.Marginals), rows, cols);
        var reference = SinkhornReference.Swav(scores, rows, cols, Epsilon, 3, rescale: false);
        var referenceCols = new double[cols];
        for (var i = 0; i < reference.Length; i++)
        {
            referenceCols[i % cols] += reference[i];
        }
        // The last step normalises samples, so rows are exact; three iterations leave the prototype sums where
        // SwAV leaves them (about 30% off 1/K for these scores), and we must be at the same place.
        Assert.That(SinkhornReference.MaxRelativeDeviation(rowSums, 1.0 / rows), Is.LessThanOrEqualTo(1e-5));
        Numerics.AssertClose(colSums.Select(c => (float)c).ToArray(), referenceCols, Numerics.Fp32Tolerance, "column sums");
    }

    [Test]
    public void AssignmentRowsSumToOne()
    {
        const int rows = 100, cols = 64;
        var (rowSums, _) = SinkhornReference.Marginals(Codes(Numerics.RandomArray(rows * cols, 11), rows, cols, 3, SinkhornOutput.Assignments), rows, cols);
        Assert.That(SinkhornReference.MaxRelativeDeviation(rowSums, 1.0), Is.LessThanOrEqualTo(1e-5));
    }

    [Test]
    public void MildScoresReachBothMarginalsWithinOneInAThousandInThreeIterations()
    {
        // |S/ε| ≤ 1: the kernel exp(S/ε) is close to rank one and three iterations suffice.
        const int rows = 500, cols = 40;
        var scores = Numerics.RandomArray(rows * cols, 13, scale: Epsilon);
        var (rowSums, colSums) = SinkhornReference.Marginals(Codes(scores, rows, cols, 3, SinkhornOutput.Marginals), rows, cols);
        Assert.That(SinkhornReference.MaxRelativeDeviation(rowSums, 1.0 / rows), Is.LessThanOrEqualTo(1e-3));
        Assert.That(SinkhornReference.MaxRelativeDeviation(colSums, 1.0 / cols), Is.LessThanOrEqualTo(1e-3));
    }

    [Test]
    public void ColumnMarginalsConvergeWithMoreIterations()
    {
        const int rows = 100, cols = 64;
        var scores = SinkhornReference.CosineScores(rows, cols, 16, seed: 1);
        var deviations = new[] { 1, 3, 10, 30, 100 }.Select(n =>
        {
            var (_, colSums) = SinkhornReference.Marginals(Codes(scores, rows, cols, n, SinkhornOutput.Marginals), rows, cols);
            return SinkhornReference.MaxRelativeDeviation(colSums, 1.0 / cols);
        }).ToArray();
        for (var i = 1; i < deviations.Length; i++)
        {
            Assert.That(deviations[i], Is.LessThan(deviations[i - 1]), $"deviations {string.Join(", ", deviations)}");
        }
        Assert.That(deviations[3], Is.LessThanOrEqualTo(1e-3), "30 iterations");
        Assert.That(deviations[4], Is.LessThanOrEqualTo(1e-5), "100 iterations");
    }

    [TestCase(1f)]
    [TestCase(1e3f)]
    [TestCase(1e6f)]
    public void IdenticalRowsGiveUniformCodesAtAnyScale(float scale)
    {
        // Every prototype column is constant, so the first prototype step already makes Q uniform, whatever S is.
        const int rows = 33, cols = 10;
        var row = Numerics.RandomArray(cols, 17, scale);
        var scores = Enumerable.Range(0, rows).SelectMany(_ => row).ToArray();
        var codes = Codes(scores, rows, cols, 3, SinkhornOutput.Assignments);
        Numerics.AssertClose(codes, Enumerable.Repeat(1.0 / cols, codes.Length).ToArray(), 1e-6, $"scale {scale}");
    }

    [Test]
    public void EqualScoresGiveUniformCodes()
    {
        var codes = Codes(new float[7 * 300], 7, 300, 3, SinkhornOutput.Marginals);
        Numerics.AssertClose(codes, Enumerable.Repeat(1.0 / (7 * 300), codes.Length).ToArray(), 1e-6, "zero scores");
    }

    [TestCase(0.5f)]
    [TestCase(1e4f)]
    public void DiagonalScoresMatchTheClosedForm(float diagonal)
    {
        // S = c·I: rows and columns are permutations of each other, so Q = exp(S/ε) / (e^(c/ε) + n − 1) exactly,
        // written as 1 / (1 + (n−1)·e^(−c/ε)) on the diagonal so that it holds for huge c too.
        const int n = 12;
        var scores = new float[n * n];
        for (var i = 0; i < n; i++)
        {
            scores[(i * n) + i] = diagonal;
        }
        var tail = Math.Exp(-diagonal / (double)Epsilon);
        var expected = new double[n * n];
        for (var i = 0; i < n * n; i++)
        {
            expected[i] = (i / n == i % n ? 1 : tail) / (1 + ((n - 1) * tail));
        }
        Numerics.AssertClose(Codes(scores, n, n, 3, SinkhornOutput.Assignments), expected, Numerics.Fp32Tolerance, $"c = {diagonal}");
    }

    [Test]
    public void HugeScoresStayFiniteAndMatchTheLogDomainReference()
    {
        // |S/ε| up to 2·10^5: exp overflows even in float64, so SwAV's own code would return NaN here.
        const int rows = 40, cols = 25;
        var scores = Numerics.RandomArray(rows * cols, 19, scale: 1e4f);
        var codes = Codes(scores, rows, cols, 3, SinkhornOutput.Assignments);
        var (rowSums, _) = SinkhornReference.Marginals(codes, rows, cols);
        Assert.That(SinkhornReference.MaxRelativeDeviation(rowSums, 1.0), Is.LessThanOrEqualTo(1e-5));
        Numerics.AssertClose(codes, SinkhornReference.LogDomain(scores, rows, cols, Epsilon, 3, rescale: true), Numerics.Fp32Tolerance, "huge scores");
    }

    [Test]
    public void ASampleFarFromEveryPrototypeStillGetsCodes()
    {
        // Row 0 sits 10^4 below every prototype's best sample: exp underflows for the whole row, a 0/0 for the
        // linear-domain algorithm; in the log domain it is an ordinary row.
        const int rows = 20, cols = 8;
        var scores = Numerics.RandomArray(rows * cols, 23);
        for (var k = 0; k < cols; k++)
        {
            scores[k] -= 1e4f;
        }
        var codes = Codes(scores, rows, cols, 3, SinkhornOutput.Assignments);
        var (rowSums, _) = SinkhornReference.Marginals(codes, rows, cols);
        Assert.That(SinkhornReference.MaxRelativeDeviation(rowSums, 1.0), Is.LessThanOrEqualTo(1e-5));
        // Row 0's codes hang on differences of S − max_b S ≈ −10^4 rounded in float32 (half an ulp is 5·10^-4, i.e.
        // 10^-2 after dividing by ε): the forward-error bound is max|S/ε|·2^-24 on top of the usual fp32 tolerance.
        var tolerance = Numerics.Fp32Tolerance + (scores.Max(Math.Abs) / Epsilon * Math.Pow(2, -24));
        Numerics.AssertClose(codes, SinkhornReference.LogDomain(scores, rows, cols, Epsilon, 3, rescale: true), tolerance, "far sample");
    }

    [Test]
    public void TinyEpsilonStaysFinite()
    {
        const int rows = 33, cols = 10;
        var scores = Numerics.RandomArray(rows * cols, 29);
        var codes = Codes(scores, rows, cols, 3, SinkhornOutput.Assignments, epsilon: 1e-6f);
        Numerics.AssertClose(codes, SinkhornReference.LogDomain(scores, rows, cols, 1e-6, 3, rescale: true), Numerics.Fp32Tolerance, "ε = 1e-6");
    }

    [Test]
    public void ResultsAreBitwiseReproducible()
    {
        var scores = Numerics.RandomArray(300 * 50, 31);
        var first = Codes(scores, 300, 50, 3, SinkhornOutput.Assignments);
        var second = Codes(scores, 300, 50, 3, SinkhornOutput.Assignments);
        Assert.That(second, Is.EqualTo(first));
    }

    [Test]
    public void BadArgumentsAreRejectedWithTheTensorNamed()
    {
        using var s = _cpu.Allocate(new TensorShape(4, 3), "scores");
        using var q = _cpu.Allocate(new TensorShape(4, 3), "codes");
        using var wrong = _cpu.Allocate(new TensorShape(3, 4), "codes");
        using var w = _cpu.Allocate(new TensorShape((int)_cpu.SinkhornWorkspaceLength(4, 3)), "workspace");
        using var small = _cpu.Allocate(new TensorShape(5), "workspace");
        Assert.Multiple(() =>
        {
            Assert.That(() => _cpu.SinkhornCodes(s, wrong, w, Epsilon, 3, SinkhornOutput.Assignments), Throws.ArgumentException.With.Message.Contains("codes"));
            Assert.That(() => _cpu.SinkhornCodes(s, q, small, Epsilon, 3, SinkhornOutput.Assignments), Throws.ArgumentException.With.Message.Contains("workspace"));
            Assert.That(() => _cpu.SinkhornCodes(s, q, w, 0f, 3, SinkhornOutput.Assignments), Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => _cpu.SinkhornCodes(s, q, w, Epsilon, 0, SinkhornOutput.Assignments), Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => _cpu.SinkhornCodes(s, s, w, Epsilon, 3, SinkhornOutput.Assignments), Throws.ArgumentException.With.Message.Contains("overlap"));
        });
    }

    [Test]
    public void SinkhornKnoppOwnsAWorkspaceThatFitsEverySize()
    {
        using var sinkhorn = new SinkhornKnopp(_cpu);
        foreach (var (rows, cols) in new[] { (7, 10), (100, 64), (7, 10) })
        {
            var scores = Numerics.RandomArray(rows * cols, rows);
            using var s = _cpu.FromArray(scores, new TensorShape(rows, cols));
            using var q = _cpu.Allocate(new TensorShape(rows, cols));
            sinkhorn.Compute(s, q);
            Numerics.AssertClose(q.Span, SinkhornReference.Swav(scores, rows, cols, Epsilon, 3, rescale: true), Numerics.Fp32Tolerance, $"{rows}x{cols}");
        }
    }
}
