namespace NativeContrast.Cuda;

using NativeContrast.Backends;

/// <summary>
/// A cuBLAS handle bound to one stream. Row-major products are issued as their column-major transposes:
/// C = op(A)·op(B) (row-major) is Cᵀ = op(B)ᵀ·op(A)ᵀ (column-major), so the operands swap places.
/// </summary>
public sealed unsafe class Cublas : IDisposable
{
    private IntPtr _handle;

    public Cublas(CudaStream stream)
    {
        CudaCheck.Cublas(CublasApi.cublasCreate(out _handle), "cublasCreate");
        CudaCheck.Cublas(CublasApi.cublasSetStream(_handle, stream.Handle), "cublasSetStream");
        Version = LoadedVersion();
    }

    /// <summary>The loaded cuBLAS library's version (major.minor.patch).</summary>
    public Version Version { get; }

    /// <summary>The version of the cuBLAS library this process loads, read from its properties (no handle needed).</summary>
    /// <remarks>Asked part by part: the packing of cublasGetVersion's single integer has changed between releases.</remarks>
    public static Version LoadedVersion()
    {
        CudaCheck.Cublas(CublasApi.cublasGetProperty(CublasApi.PropertyMajor, out var major), "cublasGetProperty(MAJOR_VERSION)");
        CudaCheck.Cublas(CublasApi.cublasGetProperty(CublasApi.PropertyMinor, out var minor), "cublasGetProperty(MINOR_VERSION)");
        CudaCheck.Cublas(CublasApi.cublasGetProperty(CublasApi.PropertyPatch, out var patch), "cublasGetProperty(PATCH_LEVEL)");
        return new Version(major, minor, patch);
    }

    /// <summary>The file the cuBLAS library was loaded from (after the first cuBLAS call), for `nativecontrast info`.</summary>
    public static string? LibraryFile => NativeLibraries.LoadedPath(NativeLibraries.ResolvedCublas);

    /// <summary>Null when cuBLAS can be loaded, else the one-line reason.</summary>
    public static string? WhyUnavailable()
    {
        try
        {
            _ = CublasApi.cublasGetStatusName(0);
            return null;
        }
        catch (DllNotFoundException e)
        {
            return $"no cuBLAS: {e.Message}";
        }
        catch (EntryPointNotFoundException e)
        {
            return $"cuBLAS is too old (11 or later needed): {e.Message}";
        }
    }

    /// <summary>Gives cuBLAS a fixed workspace so that GEMMs allocate nothing (required inside graph capture).</summary>
    public void SetWorkspace(ulong pointer, long bytes) =>
        CudaCheck.Cublas(CublasApi.cublasSetWorkspace_v2(Handle, pointer, (nuint)bytes), "cublasSetWorkspace");

    public IntPtr Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle == IntPtr.Zero, this);
            return _handle;
        }
    }

    /// <summary>Row-major C[m, n] ← alpha·op(A)[m, k]·op(B)[k, n] + beta·C, fp32 in and out.</summary>
    public void Gemm(ulong a, bool transposeA, ulong b, bool transposeB, ulong c, int m, int n, int k, float alpha, float beta, MatmulPrecision precision)
    {
        var (lda, ldb) = LeadingDimensions(transposeA, transposeB, m, n, k);
        CudaCheck.Cublas(
            CublasApi.cublasGemmEx(
                Handle, transposeB ? CublasApi.OpT : CublasApi.OpN, transposeA ? CublasApi.OpT : CublasApi.OpN, n, m, k,
                &alpha, b, CublasApi.DataFloat32, ldb, a, CublasApi.DataFloat32, lda,
                &beta, c, CublasApi.DataFloat32, n, ComputeType(precision), CublasApi.GemmDefault),
            $"cublasGemmEx(m={m}, n={n}, k={k}, transA={transposeA}, transB={transposeB})");
    }

    /// <summary>The same as <see cref="Gemm"/> for <paramref name="batch"/> matrices laid out back to back.</summary>
    public void GemmStridedBatched(ulong a, bool transposeA, ulong b, bool transposeB, ulong c, int m, int n, int k, int batch, float alpha, float beta, MatmulPrecision precision)
    {
        var (lda, ldb) = LeadingDimensions(transposeA, transposeB, m, n, k);
        CudaCheck.Cublas(
            CublasApi.cublasGemmStridedBatchedEx(
                Handle, transposeB ? CublasApi.OpT : CublasApi.OpN, transposeA ? CublasApi.OpT : CublasApi.OpN, n, m, k,
                &alpha, b, CublasApi.DataFloat32, ldb, (long)k * n, a, CublasApi.DataFloat32, lda, (long)m * k,
                &beta, c, CublasApi.DataFloat32, n, (long)m * n, batch, ComputeType(precision), CublasApi.GemmDefault),
            $"cublasGemmStridedBatchedEx(m={m}, n={n}, k={k}, batch={batch})");
    }

    /// <summary>Row lengths of the row-major operands; cuBLAS rejects a leading dimension below 1 even when k is 0.</summary>
    private static (int Lda, int Ldb) LeadingDimensions(bool transposeA, bool transposeB, int m, int n, int k) =>
        (Math.Max(1, transposeA ? m : k), Math.Max(1, transposeB ? k : n));

    private static int ComputeType(MatmulPrecision precision) => precision switch
    {
        MatmulPrecision.Fp32 => CublasApi.Compute32FPedantic,
        MatmulPrecision.Tf32 => CublasApi.Compute32FFastTf32,
        MatmulPrecision.Bf16 => CublasApi.Compute32FFast16BF,
        _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown precision"),
    };

    public void Dispose()
    {
        if (_handle != IntPtr.Zero)
        {
            _ = CublasApi.cublasDestroy(_handle);
            _handle = IntPtr.Zero;
        }
    }
}
