namespace NativeContrast.Backends;

using System.Buffers;
using System.Numerics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Cpu;
using NativeContrast.Tensors;

/// <summary>
/// The CPU backend: fp32, GEMMs on OpenBLAS when it is installed (else a managed GEMM), everything else managed,
/// vectorised with System.Numerics.Tensors and Vector&lt;T&gt; and multi-threaded over rows.
/// It is the oracle every CUDA kernel is checked against, so clarity wins over the last few percent of speed.
/// The class is split by op family over several files (CpuBackend.*.cs).
/// </summary>
public sealed partial class CpuBackend : IBackend
{
    /// <summary>A backend on the libraries this process found (<see cref="CpuLibraries.Default"/>).</summary>
    public CpuBackend()
        : this(CpuLibraries.Default)
    {
    }

    /// <summary>A backend on the given libraries; <see cref="CpuLibraries.ManagedOnly"/> keeps every op managed.</summary>
    public CpuBackend(CpuLibraries libraries)
    {
        ArgumentNullException.ThrowIfNull(libraries);
        Libraries = libraries;
    }

    public string Name => "cpu";

    /// <summary>Which GEMM runs and why.</summary>
    public CpuLibraries Libraries { get; }

    public Device Device => Device.Cpu;

    /// <summary>Ignored on the CPU, which always computes in fp32; kept so code can set it on any backend.</summary>
    public MatmulPrecision GemmPrecision { get; set; } = MatmulPrecision.Fp32;

    public Tensor Allocate(TensorShape shape, string? name = null) =>
        new(new CpuStorage(shape.Length), shape, 0, ownsStorage: true, name);

    /// <summary>A CPU tensor holding a copy of <paramref name="values"/>.</summary>
    public Tensor FromArray(ReadOnlySpan<float> values, TensorShape shape, string? name = null)
    {
        Check.Length(values.Length, shape.Length, name ?? "values");
        var t = Allocate(shape, name);
        values.CopyTo(t.Span);
        return t;
    }

    public void CopyFromHost(ReadOnlySpan<float> source, Tensor destination)
    {
        Check.Length(source.Length, destination.Length, destination.Describe());
        source.CopyTo(Cpu(destination));
    }

    public void CopyToHost(Tensor source, Span<float> destination)
    {
        Check.Length(destination.Length, source.Length, source.Describe());
        Cpu(source).CopyTo(destination);
    }

    public void Copy(Tensor source, Tensor destination)
    {
        Check.SameLength(source, destination);
        Cpu(source).CopyTo(Cpu(destination));
    }

    public void Fill(Tensor tensor, float value) => Cpu(tensor).Fill(value);

    public void Synchronize()
    {
    }

    public void Gemm(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1f, float beta = 0f)
    {
        var (m, k, n) = Check.GemmShapes(a, transposeA, b, transposeB, c);
        GemmAny(CpuArray(a), transposeA, CpuArray(b), transposeB, CpuArray(c), m, k, n, alpha, beta);
    }

    public void GemmBatched(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1f, float beta = 0f)
    {
        var (batch, m, k, n) = Check.BatchedGemmShapes(a, transposeA, b, transposeB, c);
        long aStride = (long)m * k, bStride = (long)k * n, cStride = (long)m * n;
        for (var i = 0; i < batch; i++)
        {
            GemmAny(
                CpuArray(a).Slice((int)(i * aStride), (int)aStride), transposeA,
                CpuArray(b).Slice((int)(i * bStride), (int)bStride), transposeB,
                CpuArray(c).Slice((int)(i * cStride), (int)cStride), m, k, n, alpha, beta);
        }
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        Check.SameLength(a, y);
        Check.SameLength(b, y);
        TensorPrimitives.Add(Cpu(a), Cpu(b), Cpu(y));
    }

    public void Scale(Tensor x, float alpha, Tensor y)
    {
        Check.SameLength(x, y);
        TensorPrimitives.Multiply(Cpu(x), alpha, Cpu(y));
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        Check.SameLength(x, y);
        TensorPrimitives.MultiplyAdd(Cpu(x), alpha, Cpu(y), Cpu(y));
    }

    public void Relu(Tensor x, Tensor y)
    {
        Check.SameLength(x, y);
        TensorPrimitives.Max(Cpu(x), 0f, Cpu(y));
    }

    public void ReluBackward(Tensor y, Tensor dy, Tensor dx)
    {
        Check.SameLength(y, dx);
        Check.SameLength(dy, dx);
        MaskByPositive(Cpu(y), Cpu(dy), Cpu(dx));
    }

    public void Sum(Tensor x, Tensor result)
    {
        Check.Length(result.Length, 1, result.Describe());
        Cpu(result)[0] = TensorPrimitives.Sum<float>(Cpu(x));
    }

    public void SumRows(Tensor x, Tensor result)
    {
        int rows = x.Rows, cols = x.Cols;
        Check.Length(result.Length, rows, result.Describe());
        var xs = CpuArray(x);
        var rs = CpuArray(result);
        CpuParallel.For(rows, cols, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                rs[i] = TensorPrimitives.Sum<float>(xs.AsSpan(i * cols, cols));
            }
        });
    }

    public void SumColumns(Tensor x, Tensor result)
    {
        int rows = x.Rows, cols = x.Cols;
        Check.Length(result.Length, cols, result.Describe());
        var xs = Cpu(x);
        var rs = Cpu(result);
        rs.Clear();
        for (var i = 0; i < rows; i++)
        {
            TensorPrimitives.Add(rs, xs.Slice(i * cols, cols), rs);
        }
    }

    public void SoftmaxRows(Tensor x, Tensor y)
    {
        Check.SameShape(x, y);
        int rows = x.Rows, cols = x.Cols;
        var xs = CpuArray(x);
        var ys = CpuArray(y);
        if (cols == 0)
        {
            return;
        }
        CpuParallel.For(rows, cols * 4L, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var row = xs.AsSpan(i * cols, cols);
                var output = ys.AsSpan(i * cols, cols);
                var max = TensorPrimitives.Max<float>(row);
                TensorPrimitives.Subtract(row, max, output);
                TensorPrimitives.Exp(output, output);
                TensorPrimitives.Divide(output, TensorPrimitives.Sum<float>(output), output);
            }
        });
    }

    public void LogSumExpRows(Tensor x, Tensor result)
    {
        int rows = x.Rows, cols = x.Cols;
        Check.Length(result.Length, rows, result.Describe());
        var xs = CpuArray(x);
        var rs = CpuArray(result);
        if (cols == 0)
        {
            rs.AsSpan().Fill(float.NegativeInfinity);
            return;
        }
        CpuParallel.For(rows, cols * 4L, (start, end) =>
        {
            var scratch = ArrayPool<float>.Shared.Rent(cols);
            try
            {
                for (var i = start; i < end; i++)
                {
                    var row = xs.AsSpan(i * cols, cols);
                    var shifted = scratch.AsSpan(0, cols);
                    var max = TensorPrimitives.Max<float>(row);
                    TensorPrimitives.Subtract(row, max, shifted);
                    TensorPrimitives.Exp(shifted, shifted);
                    rs[i] = max + MathF.Log(TensorPrimitives.Sum<float>(shifted));
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scratch);
            }
        });
    }

    public void L2NormalizeRows(Tensor x, Tensor y, Tensor norms, float eps = 1e-12f)
    {
        Check.SameShape(x, y);
        int rows = x.Rows, cols = x.Cols;
        Check.Length(norms.Length, rows, norms.Describe());
        var xs = CpuArray(x);
        var ys = CpuArray(y);
        var ns = CpuArray(norms);
        CpuParallel.For(rows, cols * 2L, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var row = xs.AsSpan(i * cols, cols);
                var norm = TensorPrimitives.Norm<float>(row);
                ns[i] = norm;
                TensorPrimitives.Multiply(row, 1f / MathF.Max(norm, eps), ys.AsSpan(i * cols, cols));
            }
        });
    }

    public void L2NormalizeRowsBackward(Tensor y, Tensor norms, Tensor dy, Tensor dx, float eps = 1e-12f)
    {
        Check.SameShape(y, dy);
        Check.SameShape(y, dx);
        int rows = y.Rows, cols = y.Cols;
        Check.Length(norms.Length, rows, norms.Describe());
        var ys = CpuArray(y);
        var dys = CpuArray(dy);
        var dxs = CpuArray(dx);
        var ns = CpuArray(norms);
        CpuParallel.For(rows, cols * 3L, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var yRow = ys.AsSpan(i * cols, cols);
                var dyRow = dys.AsSpan(i * cols, cols);
                var dxRow = dxs.AsSpan(i * cols, cols);
                var projection = TensorPrimitives.Dot<float>(yRow, dyRow);
                var inverseNorm = 1f / MathF.Max(ns[i], eps);
                // dx = (dy - y <y, dy>) / ||x||, written as dy·s + y·(-<y,dy>·s).
                TensorPrimitives.Multiply(yRow, -projection * inverseNorm, dxRow);
                TensorPrimitives.MultiplyAdd(dyRow, inverseNorm, dxRow, dxRow);
            }
        });
    }

    public void RandomUniform(Tensor tensor, ulong seed, ulong offset)
    {
        var ts = CpuArray(tensor);
        CpuParallel.For(checked((int)tensor.Length), 40, (start, end) =>
            Philox.FillUniform(ts.AsSpan(start, end - start), seed, offset, start));
    }

    public void RandomNormal(Tensor tensor, ulong seed, ulong offset, float mean = 0f, float std = 1f)
    {
        var ts = CpuArray(tensor);
        CpuParallel.For(checked((int)tensor.Length), 60, (start, end) =>
            Philox.FillNormal(ts.AsSpan(start, end - start), seed, offset, mean, std, start));
    }

    public void Dispose()
    {
    }

    /// <summary>The host elements of a tensor, with an error naming it when it lives elsewhere.</summary>
    internal static Span<float> Cpu(Tensor t) => CpuArray(t).AsSpan();

    /// <summary>The backing array and offset of a CPU tensor, for lambdas that cannot capture spans.</summary>
    internal static ArraySegment<float> CpuArray(Tensor t)
    {
        if (t.Storage is not CpuStorage storage)
        {
            throw new ArgumentException($"{t.Describe()} lives on {t.Device}; the CPU backend needs a CPU tensor");
        }
        ObjectDisposedException.ThrowIf(storage.IsDisposed, t);
        return new ArraySegment<float>(storage.Data, checked((int)t.Offset), checked((int)t.Length));
    }

    /// <summary>C ← alpha·op(A)·op(B) + beta·C on OpenBLAS when this backend uses it, else <see cref="GemmCore"/>.</summary>
    private void GemmAny(
        ArraySegment<float> a, bool transposeA, ArraySegment<float> b, bool transposeB, ArraySegment<float> c,
        int m, int k, int n, float alpha, float beta)
    {
        // k = 0 (C ← beta·C) stays managed: cblas leaves that corner to each implementation.
        if (Libraries.UsesOpenBlas && m > 0 && n > 0 && k > 0)
        {
            OpenBlasGemm(a, transposeA, b, transposeB, c, m, k, n, alpha, beta);
        }
        else
        {
            GemmCore(a, transposeA, b, transposeB, c, m, k, n, alpha, beta);
        }
    }

    /// <summary>Row-major cblas_sgemm on the segments, pinned for the call; OpenBLAS threads it itself.</summary>
    private static unsafe void OpenBlasGemm(
        ArraySegment<float> a, bool transposeA, ArraySegment<float> b, bool transposeB, ArraySegment<float> c,
        int m, int k, int n, float alpha, float beta)
    {
        fixed (float* pa = a.AsSpan(), pb = b.AsSpan(), pc = c.AsSpan())
        {
            OpenBlasApi.cblas_sgemm(
                OpenBlasApi.RowMajor,
                transposeA ? OpenBlasApi.Trans : OpenBlasApi.NoTrans,
                transposeB ? OpenBlasApi.Trans : OpenBlasApi.NoTrans,
                m, n, k, alpha, pa, transposeA ? m : k, pb, transposeB ? k : n, beta, pc, n);
        }
    }

    /// <summary>
    /// The managed GEMM: C ← alpha·op(A)·op(B) + beta·C on array segments. Rows of C are split across cores. With B not transposed,
    /// each block of four C rows accumulates a strip of columns with FMAs over B's rows (B is streamed once per
    /// four rows); with B transposed, every element is a dot product of two contiguous rows.
    /// </summary>
    internal static void GemmCore(
        ArraySegment<float> a, bool transposeA, ArraySegment<float> b, bool transposeB, ArraySegment<float> c,
        int m, int k, int n, float alpha, float beta)
    {
        if (m == 0 || n == 0)
        {
            return;
        }
        // op(A) as contiguous rows; a transposed A is packed once (O(mk), small next to O(mnk)).
        float[]? packedA = null;
        if (transposeA)
        {
            packedA = ArrayPool<float>.Shared.Rent(m * k);
            for (var p = 0; p < k; p++)
            {
                for (var i = 0; i < m; i++)
                {
                    packedA[(i * k) + p] = a[(p * m) + i];
                }
            }
            a = new ArraySegment<float>(packedA, 0, m * k);
        }
        try
        {
            if (transposeB)
            {
                CpuParallel.For(m, (long)n * k, (start, end) =>
                {
                    for (var i = start; i < end; i++)
                    {
                        var aRow = a.AsSpan(i * k, k);
                        var cRow = c.AsSpan(i * n, n);
                        for (var j = 0; j < n; j++)
                        {
                            var dot = TensorPrimitives.Dot<float>(aRow, b.AsSpan(j * k, k));
                            cRow[j] = (alpha * dot) + (beta == 0f ? 0f : beta * cRow[j]);
                        }
                    }
                });
            }
            else
            {
                var blocks = (m + 3) / 4;
                CpuParallel.For(blocks, 4L * n * k, (start, end) =>
                {
                    var accumulator = ArrayPool<float>.Shared.Rent(4 * StripWidth);
                    try
                    {
                        for (var block = start; block < end; block++)
                        {
                            GemmRowBlock(a, b, c, accumulator, block * 4, Math.Min(4, m - (block * 4)), k, n, alpha, beta);
                        }
                    }
                    finally
                    {
                        ArrayPool<float>.Shared.Return(accumulator);
                    }
                });
            }
        }
        finally
        {
            if (packedA is not null)
            {
                ArrayPool<float>.Shared.Return(packedA);
            }
        }
    }

    /// <summary>Columns of C accumulated together: 4 rows × 256 floats stay in L1 while B's rows stream by.</summary>
    private const int StripWidth = 256;

    private static void GemmRowBlock(ArraySegment<float> a, ArraySegment<float> b, ArraySegment<float> c, float[] accumulator, int row0, int rowCount, int k, int n, float alpha, float beta)
    {
        for (var j0 = 0; j0 < n; j0 += StripWidth)
        {
            var width = Math.Min(StripWidth, n - j0);
            var acc = accumulator.AsSpan(0, 4 * StripWidth);
            acc.Clear();
            for (var p = 0; p < k; p++)
            {
                var bRow = b.AsSpan((p * n) + j0, width);
                for (var r = 0; r < rowCount; r++)
                {
                    var accRow = acc.Slice(r * StripWidth, width);
                    TensorPrimitives.MultiplyAdd(bRow, a[((row0 + r) * k) + p], accRow, accRow);
                }
            }
            for (var r = 0; r < rowCount; r++)
            {
                var cRow = c.AsSpan(((row0 + r) * n) + j0, width);
                var accRow = acc.Slice(r * StripWidth, width);
                if (beta == 0f)
                {
                    TensorPrimitives.Multiply(accRow, alpha, cRow);
                }
                else
                {
                    TensorPrimitives.Multiply(cRow, beta, cRow);
                    TensorPrimitives.MultiplyAdd(accRow, alpha, cRow, cRow);
                }
            }
        }
    }
}
