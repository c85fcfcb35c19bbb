namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// Every core op of the CPU backend (the oracle) against the float64 references in <see cref="Reference"/>, on the
/// libraries this machine has (OpenBLAS's sgemm when installed) and on the managed fallback.
/// </summary>
[TestFixture(CpuPath.Libraries)]
[TestFixture(CpuPath.Managed)]
public class CpuCoreOpsTests(CpuPath path)
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = path.Create();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    // m, k, n: ones, primes, sizes just past the CPU GEMM's 4-row blocks and 256-column strips.
    private static readonly int[][] GemmSizes = [[1, 1, 1], [7, 33, 5], [33, 7, 100], [100, 130, 33], [5, 17, 300], [1, 257, 7], [6, 0, 9]];

    private static IEnumerable<TestCaseData> GemmCases()
    {
        foreach (var size in GemmSizes)
        {
            foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
            {
                yield return new TestCaseData(size[0], size[1], size[2], ta, tb).SetArgDisplayNames($"m{size[0]} k{size[1]} n{size[2]}{(ta ? " Aᵀ" : string.Empty)}{(tb ? " Bᵀ" : string.Empty)}");
            }
        }
    }

    [TestCaseSource(nameof(GemmCases))]
    public void GemmMatchesFloat64Reference(int m, int k, int n, bool transposeA, bool transposeB)
    {
        var a = Numerics.RandomArray(m * k, 1);
        var b = Numerics.RandomArray(k * n, 2);
        var c0 = Numerics.RandomArray(m * n, 3);
        using var ta = _cpu.FromArray(a, transposeA ? new TensorShape(k, m) : new TensorShape(m, k), "A");
        using var tb = _cpu.FromArray(b, transposeB ? new TensorShape(n, k) : new TensorShape(k, n), "B");
        using var tc = _cpu.FromArray(c0, new TensorShape(m, n), "C");

        _cpu.Gemm(ta, transposeA, tb, transposeB, tc);
        Numerics.AssertClose(tc.Span, Reference.Gemm(a, transposeA, b, transposeB, c0, m, k, n, 1, 0), Numerics.Fp32Tolerance, "C = op(A)op(B)");

        // alpha and beta, on the C just computed.
        var c1 = tc.Span.ToArray();
        _cpu.Gemm(ta, transposeA, tb, transposeB, tc, alpha: -0.5f, beta: 2f);
        Numerics.AssertClose(tc.Span, Reference.Gemm(a, transposeA, b, transposeB, c1, m, k, n, -0.5, 2), Numerics.Fp32Tolerance, "C = -0.5 op(A)op(B) + 2C");
    }

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(true, true)]
    public void GemmBatchedMatchesEachProduct(bool transposeA, bool transposeB)
    {
        const int batch = 3, m = 7, k = 33, n = 5;
        var a = Numerics.RandomArray(batch * m * k, 4);
        var b = Numerics.RandomArray(batch * k * n, 5);
        using var ta = _cpu.FromArray(a, transposeA ? new TensorShape(batch, k, m) : new TensorShape(batch, m, k), "A");
        using var tb = _cpu.FromArray(b, transposeB ? new TensorShape(batch, n, k) : new TensorShape(batch, k, n), "B");
        using var tc = _cpu.Allocate(new TensorShape(batch, m, n), "C");

        _cpu.GemmBatched(ta, transposeA, tb, transposeB, tc);

        var expected = new double[batch * m * n];
        for (var i = 0; i < batch; i++)
        {
            var product = Reference.Gemm(a[(i * m * k)..((i + 1) * m * k)], transposeA, b[(i * k * n)..((i + 1) * k * n)], transposeB, new float[m * n], m, k, n, 1, 0);
            product.CopyTo(expected, i * m * n);
        }
        Numerics.AssertClose(tc.Span, expected, Numerics.Fp32Tolerance, "batched C");
    }

    [Test]
    public void GemmRejectsMismatchedShapesNamingTheTensors()
    {
        using var a = _cpu.Allocate(new TensorShape(4, 5), "weights");
        using var b = _cpu.Allocate(new TensorShape(6, 3), "inputs");
        using var c = _cpu.Allocate(new TensorShape(4, 3), "out");
        var e = Assert.Throws<ArgumentException>(() => _cpu.Gemm(a, false, b, false, c));
        Assert.That(e!.Message, Does.Contain("weights [4, 5]").And.Contain("inputs [6, 3]"));
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(1000)]
    public void ElementwiseOpsMatchFloat64Reference(int n)
    {
        var x = Numerics.RandomArray(n, 10, scale: 3f);
        var z = Numerics.RandomArray(n, 11, scale: 3f);
        using var tx = _cpu.FromArray(x, new TensorShape(n), "x");
        using var tz = _cpu.FromArray(z, new TensorShape(n), "z");
        using var y = _cpu.Allocate(new TensorShape(n), "y");

        _cpu.Add(tx, tz, y);
        Numerics.AssertClose(y.Span, Expect(n, i => (double)x[i] + z[i]), Numerics.Fp32Tolerance, "add");

        _cpu.Scale(tx, -1.75f, y);
        Numerics.AssertClose(y.Span, Expect(n, i => -1.75 * x[i]), Numerics.Fp32Tolerance, "scale");

        _cpu.Copy(tz, y);
        _cpu.Axpy(0.25f, tx, y);
        Numerics.AssertClose(y.Span, Expect(n, i => z[i] + (0.25 * x[i])), Numerics.Fp32Tolerance, "axpy");

        _cpu.Relu(tx, y);
        Numerics.AssertClose(y.Span, Expect(n, i => Math.Max(x[i], 0.0)), Numerics.Fp32Tolerance, "relu");

        _cpu.ReluBackward(y, tz, tx);
        Numerics.AssertClose(tx.Span, Expect(n, i => x[i] > 0 ? z[i] : 0.0), Numerics.Fp32Tolerance, "relu backward");
    }

    [Test]
    public void ElementwiseOpsRejectMismatchedLengths()
    {
        using var a = _cpu.Allocate(new TensorShape(5), "a");
        using var b = _cpu.Allocate(new TensorShape(6), "b");
        var e = Assert.Throws<ArgumentException>(() => _cpu.Add(a, b, a));
        Assert.That(e!.Message, Does.Contain("a [5]").And.Contain("b [6]"));
    }

    [Test]
    public void SumOfAllElementsMatchesFloat64Reference([Values(1, 7, 33, 1000, 100_003)] int n)
    {
        // Positive values: a sum with heavy cancellation has no meaningful relative error.
        var x = Numerics.RandomArray(n, 20).Select(v => v + 1.5f).ToArray();
        using var tx = _cpu.FromArray(x, new TensorShape(n), "x");
        using var result = _cpu.Allocate(new TensorShape(1), "sum");
        _cpu.Sum(tx, result);
        Numerics.AssertClose(result.Span, [x.Sum(v => (double)v)], Numerics.Fp32Tolerance, "sum");
    }

    [TestCase(1, 1)]
    [TestCase(7, 33)]
    [TestCase(33, 7)]
    [TestCase(1000, 5)]
    [TestCase(3, 1000)]
    public void RowAndColumnSumsMatchFloat64Reference(int rows, int cols)
    {
        var x = Numerics.RandomArray(rows * cols, 21);
        using var tx = _cpu.FromArray(x, new TensorShape(rows, cols), "x");
        using var rowSums = _cpu.Allocate(new TensorShape(rows), "row sums");
        using var columnSums = _cpu.Allocate(new TensorShape(cols), "column sums");
        _cpu.SumRows(tx, rowSums);
        _cpu.SumColumns(tx, columnSums);
        Numerics.AssertClose(rowSums.Span, Reference.SumRows(x, rows, cols), Numerics.Fp32Tolerance, "row sums");
        Numerics.AssertClose(columnSums.Span, Reference.SumColumns(x, rows, cols), Numerics.Fp32Tolerance, "column sums");
    }

    [Test]
    public void SumsRejectAResultOfTheWrongLengthNamingIt()
    {
        using var x = _cpu.Allocate(new TensorShape(4, 3), "x");
        using var wrong = _cpu.Allocate(new TensorShape(3), "row sums");
        var e = Assert.Throws<ArgumentException>(() => _cpu.SumRows(x, wrong));
        Assert.That(e!.Message, Does.Contain("row sums [3]").And.Contain("expected 4"));
    }

    [TestCase(1, 1)]
    [TestCase(7, 33)]
    [TestCase(33, 7)]
    [TestCase(4, 1000)]
    public void SoftmaxAndLogSumExpMatchFloat64Reference(int rows, int cols)
    {
        var x = Numerics.RandomArray(rows * cols, 30, scale: 5f);
        AssertSoftmaxAndLse(x, rows, cols);
    }

    [Test]
    public void SoftmaxAndLogSumExpDoNotOverflowOnLargeLogits()
    {
        // exp(1000) overflows float and double alike: only the max shift keeps these finite.
        const int rows = 3, cols = 37;
        var x = Numerics.RandomArray(rows * cols, 31, scale: 4f);
        for (var j = 0; j < cols; j++)
        {
            x[j] += 1000f;                  // row 0: everything near +1000
            x[cols + j] -= 1000f;           // row 1: everything near -1000 (exp underflows without the shift)
        }
        x[(2 * cols) + 5] = 1000f;          // row 2: one huge logit among small ones
        AssertSoftmaxAndLse(x, rows, cols);

        using var tx = _cpu.FromArray(x, new TensorShape(rows, cols), "x");
        using var y = _cpu.Allocate(new TensorShape(rows, cols), "y");
        _cpu.SoftmaxRows(tx, y);
        Assert.That(y.Span[(2 * cols) + 5], Is.EqualTo(1f).Within(1e-6f), "the dominant logit takes all the mass");
    }

    [Test]
    public void SoftmaxRowsSumToOne()
    {
        const int rows = 9, cols = 50;
        using var x = Numerics.RandomTensor(_cpu, new TensorShape(rows, cols), 32, scale: 10f);
        using var y = _cpu.Allocate(new TensorShape(rows, cols));
        using var sums = _cpu.Allocate(new TensorShape(rows));
        _cpu.SoftmaxRows(x, y);
        _cpu.SumRows(y, sums);
        Assert.That(sums.Span.ToArray(), Is.All.EqualTo(1f).Within(1e-6f));
    }

    [TestCase(1, 1)]
    [TestCase(7, 33)]
    [TestCase(33, 7)]
    [TestCase(3, 1000)]
    public void L2NormalizeMatchesFloat64Reference(int rows, int cols)
    {
        var x = Numerics.RandomArray(rows * cols, 40, scale: 2f);
        using var tx = _cpu.FromArray(x, new TensorShape(rows, cols), "x");
        using var y = _cpu.Allocate(new TensorShape(rows, cols), "y");
        using var norms = _cpu.Allocate(new TensorShape(rows), "norms");
        _cpu.L2NormalizeRows(tx, y, norms);
        var (expectedY, expectedNorms) = Reference.L2Normalize(x, rows, cols, 1e-12);
        Numerics.AssertClose(y.Span, expectedY, Numerics.Fp32Tolerance, "y");
        Numerics.AssertClose(norms.Span, expectedNorms, Numerics.Fp32Tolerance, "norms");
    }

    [Test]
    public void L2NormalizeLeavesAZeroRowAtZero()
    {
        using var x = _cpu.FromArray([0, 0, 0, 3, 4, 0], new TensorShape(2, 3), "x");
        using var y = _cpu.Allocate(new TensorShape(2, 3), "y");
        using var norms = _cpu.Allocate(new TensorShape(2), "norms");
        _cpu.L2NormalizeRows(x, y, norms);
        Assert.That(y.Span.ToArray(), Is.EqualTo(new[] { 0f, 0f, 0f, 0.6f, 0.8f, 0f }).Within(1e-7f));
        Assert.That(norms.Span.ToArray(), Is.EqualTo(new[] { 0f, 5f }));
    }

    [Test]
    public void CpuOpsRejectTensorsOfAnotherDeviceNamingThem()
    {
        using var x = new Tensor(new FakeDeviceStorage(4), new TensorShape(4), name: "features");
        using var y = _cpu.Allocate(new TensorShape(4), "y");
        var e = Assert.Throws<ArgumentException>(() => _cpu.Relu(x, y));
        Assert.That(e!.Message, Does.Contain("features [4]").And.Contain("Cuda"));
    }

    private void AssertSoftmaxAndLse(float[] x, int rows, int cols)
    {
        using var tx = _cpu.FromArray(x, new TensorShape(rows, cols), "x");
        using var y = _cpu.Allocate(new TensorShape(rows, cols), "y");
        using var lse = _cpu.Allocate(new TensorShape(rows), "lse");
        _cpu.SoftmaxRows(tx, y);
        _cpu.LogSumExpRows(tx, lse);
        Numerics.AssertClose(y.Span, Reference.Softmax(x, rows, cols), Numerics.Fp32Tolerance, "softmax");
        Numerics.AssertClose(lse.Span, Reference.LogSumExp(x, rows, cols), Numerics.Fp32Tolerance, "log-sum-exp");
    }

    private static double[] Expect(int n, Func<int, double> f) => Enumerable.Range(0, n).Select(f).ToArray();

    /// <summary>A storage that claims to live on the GPU, to check that the CPU backend refuses it.</summary>
    private sealed class FakeDeviceStorage(long length) : TensorStorage(length)
    {
        public override Device Device => Device.Cuda;

        protected override void Release()
        {
        }
    }
}
