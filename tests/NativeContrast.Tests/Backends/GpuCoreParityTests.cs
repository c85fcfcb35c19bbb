namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// Every CUDA core kernel and the cuBLAS GEMMs against the CPU oracle on the same random inputs, at sizes that are not
/// multiples of any block, warp or vector width; "misaligned" inputs start one float into their allocation so the
/// kernels take their scalar paths instead of the float4 ones.
/// </summary>
public class GpuCoreParityTests : GpuTestBase
{
    private static readonly int[] Lengths = [1, 7, 33, 1000, 100_003];

    // Narrow rows (a warp each), rows just past the warp limit of 1024 (a block each), tall and wide matrices.
    private static readonly int[][] Matrices = [[1, 1], [7, 33], [33, 7], [1000, 7], [3, 1000], [5, 1025], [2, 5000], [1000, 33], [3000, 3], [64, 2048]];

    private static IEnumerable<TestCaseData> LengthCases() =>
        from n in Lengths from misaligned in new[] { false, true } select new TestCaseData(n, misaligned);

    private static IEnumerable<TestCaseData> MatrixCases() =>
        from m in Matrices from misaligned in new[] { false, true } select new TestCaseData(m[0], m[1], misaligned);

    [TestCaseSource(nameof(LengthCases))]
    public void ElementwiseOpsMatchTheCpu(int n, bool misaligned)
    {
        var shape = new TensorShape(n);
        using var x = Pair(shape, 1, misaligned, scale: 3f);
        using var z = Pair(shape, 2, misaligned, scale: 3f);
        using var y = Pair(shape, 3, misaligned);

        Compare(y, b => b.Add(x.On(b), z.On(b), y.On(b)), "add");
        Compare(y, b => b.Scale(x.On(b), -1.75f, y.On(b)), "scale");
        Compare(y, b => b.Axpy(0.25f, x.On(b), y.On(b)), "axpy");
        Compare(y, b => b.Relu(x.On(b), y.On(b)), "relu");
        Compare(z, b => b.ReluBackward(y.On(b), x.On(b), z.On(b)), "relu backward");
        Compare(x, b => b.Relu(x.On(b), x.On(b)), "relu in place");
    }

    [TestCaseSource(nameof(LengthCases))]
    public void SumOfAllElementsMatchesTheCpuAndRepeatsExactly(int n, bool misaligned)
    {
        using var x = Pair(new TensorShape(n), 10, misaligned, offset: 1.5f);
        using var result = Pair(new TensorShape(1), 11, misaligned: false);
        Compare(result, b => b.Sum(x.On(b), result.On(b)), "sum");
        AssertSumIsExact(x, result);

        var first = Numerics.ToArray(Gpu, result.Device);
        Gpu.Sum(x.Device, result.Device);
        Assert.That(Numerics.ToArray(Gpu, result.Device), Is.EqualTo(first), "a second sum gives the same bits");
    }

    [Test]
    public void SumOfManyElementsUsesEveryPartial()
    {
        // More elements than 1024 blocks × 256 threads × 16 cover in one sweep, so the grid-stride loop wraps.
        // Checked against float64 only: the CPU's running float sums drift by ~1e-5 over this many elements.
        using var x = Pair(new TensorShape(5_000_011), 12, misaligned: false, offset: 1.5f);
        using var result = Pair(new TensorShape(1), 13, misaligned: false);
        Gpu.Sum(x.Device, result.Device);
        AssertSumIsExact(x, result);
    }

    /// <summary>The GPU's sum against the float64 sum of the same values.</summary>
    private void AssertSumIsExact(TensorPair x, TensorPair result)
    {
        double expected = 0;
        foreach (var v in x.Host.Span)
        {
            expected += v;
        }
        Numerics.AssertClose(Numerics.ToArray(Gpu, result.Device), [expected], Numerics.Fp32Tolerance, "sum against float64");
    }

    [TestCaseSource(nameof(MatrixCases))]
    public void RowAndColumnSumsMatchTheCpu(int rows, int cols, bool misaligned)
    {
        using var x = Pair(new TensorShape(rows, cols), 20, misaligned);
        using var rowSums = Pair(new TensorShape(rows), 21, misaligned);
        using var columnSums = Pair(new TensorShape(cols), 22, misaligned);
        Compare(rowSums, b => b.SumRows(x.On(b), rowSums.On(b)), "row sums");
        Compare(columnSums, b => b.SumColumns(x.On(b), columnSums.On(b)), "column sums");
    }

    [TestCaseSource(nameof(MatrixCases))]
    public void SoftmaxAndLogSumExpMatchTheCpu(int rows, int cols, bool misaligned)
    {
        using var x = Pair(new TensorShape(rows, cols), 30, misaligned, scale: 8f);
        using var y = Pair(new TensorShape(rows, cols), 31, misaligned);
        using var lse = Pair(new TensorShape(rows), 32, misaligned);
        Compare(y, b => b.SoftmaxRows(x.On(b), y.On(b)), "softmax");
        Compare(lse, b => b.LogSumExpRows(x.On(b), lse.On(b)), "log-sum-exp");
        Compare(x, b => b.SoftmaxRows(x.On(b), x.On(b)), "softmax in place");
    }

    [Test]
    public void SoftmaxAndLogSumExpStayFiniteOnLogitsNear1000([Values(37, 1500)] int cols)
    {
        const int rows = 3;
        var values = Numerics.RandomArray(rows * cols, 33, scale: 4f);
        for (var j = 0; j < cols; j++)
        {
            values[j] += 1000f;
            values[cols + j] -= 1000f;
        }
        values[(2 * cols) + 5] = 1000f;
        using var x = Pair(values, new TensorShape(rows, cols), misaligned: false);
        using var y = Pair(new TensorShape(rows, cols), 34, misaligned: false);
        using var lse = Pair(new TensorShape(rows), 35, misaligned: false);
        Compare(y, b => b.SoftmaxRows(x.On(b), y.On(b)), "softmax");
        Compare(lse, b => b.LogSumExpRows(x.On(b), lse.On(b)), "log-sum-exp");
    }

    [TestCaseSource(nameof(MatrixCases))]
    public void L2NormalizeForwardAndBackwardMatchTheCpu(int rows, int cols, bool misaligned)
    {
        var shape = new TensorShape(rows, cols);
        using var x = Pair(shape, 40, misaligned, scale: 2f);
        using var y = Pair(shape, 41, misaligned);
        using var norms = Pair(new TensorShape(rows), 42, misaligned);
        using var dy = Pair(shape, 43, misaligned);
        using var dx = Pair(shape, 44, misaligned);
        Compare([y, norms], b => b.L2NormalizeRows(x.On(b), y.On(b), norms.On(b)), "l2 normalize");
        Compare(dx, b => b.L2NormalizeRowsBackward(y.On(b), norms.On(b), dy.On(b), dx.On(b)), "l2 normalize backward");
        Compare(dy, b => b.L2NormalizeRowsBackward(y.On(b), norms.On(b), dy.On(b), dy.On(b)), "backward in place");
        Compare([x, norms], b => b.L2NormalizeRows(x.On(b), x.On(b), norms.On(b)), "l2 normalize in place");
    }

    [TestCaseSource(nameof(LengthCases))]
    public void PhiloxUniformIsBitIdenticalAndNormalAgreesTo1e6(int n, bool misaligned)
    {
        using var t = Pair(new TensorShape(n), 50, misaligned);
        Cpu.RandomUniform(t.Host, 0x1234_5678_9abc_def0UL, 77);
        Gpu.RandomUniform(t.Device, 0x1234_5678_9abc_def0UL, 77);
        Assert.That(Numerics.ToArray(Gpu, t.Device), Is.EqualTo(t.Host.Span.ToArray()), "uniform, bit for bit");

        Cpu.RandomNormal(t.Host, 99, 1UL << 40, mean: 0.5f, std: 2f);
        Gpu.RandomNormal(t.Device, 99, 1UL << 40, mean: 0.5f, std: 2f);
        Numerics.AssertClose(Numerics.ToArray(Gpu, t.Device), t.Host.Span, 1e-6, "normal");
    }

    private static IEnumerable<TestCaseData> GemmCases()
    {
        int[][] sizes = [[1, 1, 1], [7, 33, 5], [33, 7, 100], [100, 130, 33], [1, 257, 7], [129, 1000, 65], [6, 0, 9]];
        foreach (var precision in Enum.GetValues<MatmulPrecision>())
        {
            foreach (var s in sizes)
            {
                foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
                {
                    yield return new TestCaseData(precision, s[0], s[1], s[2], ta, tb);
                }
            }
        }
    }

    [TestCaseSource(nameof(GemmCases))]
    public void GemmMatchesTheCpu(MatmulPrecision precision, int m, int k, int n, bool transposeA, bool transposeB)
    {
        using var a = Pair(transposeA ? new TensorShape(k, m) : new TensorShape(m, k), 60, misaligned: false);
        using var b = Pair(transposeB ? new TensorShape(n, k) : new TensorShape(k, n), 61, misaligned: false);
        using var c = Pair(new TensorShape(m, n), 62, misaligned: false);
        var tolerance = Tolerance(precision);
        WithPrecision(precision, () =>
        {
            Compare(c, be => be.Gemm(a.On(be), transposeA, b.On(be), transposeB, c.On(be), alpha: 0.5f, beta: -1f), $"{precision} GEMM", tolerance);
            Compare(c, be => be.Gemm(a.On(be), transposeA, b.On(be), transposeB, c.On(be)), $"{precision} GEMM beta 0", tolerance);
        });
    }

    [Test]
    public void GemmBatchedMatchesTheCpu([Values] MatmulPrecision precision, [Values] bool transposeA, [Values] bool transposeB)
    {
        const int batch = 3, m = 33, k = 70, n = 7;
        using var a = Pair(transposeA ? new TensorShape(batch, k, m) : new TensorShape(batch, m, k), 63, misaligned: false);
        using var b = Pair(transposeB ? new TensorShape(batch, n, k) : new TensorShape(batch, k, n), 64, misaligned: false);
        using var c = Pair(new TensorShape(batch, m, n), 65, misaligned: false);
        var tolerance = Tolerance(precision);
        WithPrecision(precision, () =>
            Compare(c, be => be.GemmBatched(a.On(be), transposeA, b.On(be), transposeB, c.On(be)), $"{precision} batched GEMM", tolerance));
    }

    [Test]
    public void GpuOpsRejectHostTensorsNamingThem()
    {
        using var host = Cpu.Allocate(new TensorShape(8), "host features");
        using var device = Gpu.Allocate(new TensorShape(8), "device features");
        var e = Assert.Throws<ArgumentException>(() => Gpu.Relu(host, device));
        Assert.That(e!.Message, Does.Contain("host features [8]"));
        using var matrix = Gpu.Allocate(new TensorShape(2, 4), "probabilities");
        var shapes = Assert.Throws<ArgumentException>(() => Gpu.SoftmaxRows(device, matrix));
        Assert.That(shapes!.Message, Does.Contain("probabilities [2, 4]"));
    }

    private static double Tolerance(MatmulPrecision precision) => precision switch
    {
        MatmulPrecision.Fp32 => Numerics.Fp32Tolerance,
        MatmulPrecision.Tf32 => Numerics.Tf32Tolerance,
        _ => Numerics.Bf16Tolerance,
    };

    private void WithPrecision(MatmulPrecision precision, Action body)
    {
        var saved = Gpu.GemmPrecision;
        Gpu.GemmPrecision = precision;
        try
        {
            body();
        }
        finally
        {
            Gpu.GemmPrecision = saved;
        }
    }

    /// <summary>Runs the op on both backends, then compares each output's GPU result with its CPU result.</summary>
    private void Compare(TensorPair output, Action<IBackend> op, string what, double tolerance = Numerics.Fp32Tolerance) =>
        Compare([output], op, what, tolerance);

    private void Compare(TensorPair[] outputs, Action<IBackend> op, string what, double tolerance = Numerics.Fp32Tolerance)
    {
        op(Cpu);
        op(Gpu);
        foreach (var output in outputs)
        {
            Numerics.AssertClose(Numerics.ToArray(Gpu, output.Device), output.Host.Span, tolerance, $"{what}: {output.Host.Describe()}");
        }
    }

    private TensorPair Pair(TensorShape shape, int seed, bool misaligned, float scale = 1f, float offset = 0f)
    {
        var values = Numerics.RandomArray(checked((int)shape.Length), seed, scale);
        for (var i = 0; i < values.Length; i++)
        {
            values[i] += offset;
        }
        return Pair(values, shape, misaligned);
    }

    private TensorPair Pair(float[] values, TensorShape shape, bool misaligned)
    {
        var host = Cpu.FromArray(values, shape, "x");
        // A misaligned device tensor is a view one float into a larger allocation: 4 bytes off every 16-byte boundary.
        var storage = Gpu.Allocate(new TensorShape(checked((int)shape.Length + 1)));
        var device = storage.View(misaligned ? 1 : 0, shape);
        Gpu.CopyFromHost(values, device);
        return new TensorPair(host, device, storage);
    }

    /// <summary>The same values on the CPU and on the GPU; <see cref="On"/> picks the one a backend computes on.</summary>
    private sealed class TensorPair(Tensor host, Tensor device, Tensor deviceStorage) : IDisposable
    {
        public Tensor Host { get; } = host;

        public Tensor Device { get; } = device;

        public Tensor On(IBackend backend) => backend is CpuBackend ? Host : Device;

        public void Dispose()
        {
            Host.Dispose();
            deviceStorage.Dispose();
        }
    }
}
