namespace NativeContrast.Cuda;

using System.Runtime.InteropServices;
using NativeContrast.Backends;

/// <summary>
/// A cuBLAS handle bound to one stream. Row-major products are issued as their column-major transposes:
/// C = op(A)·op(B) (row-major) is Cᵀ = op(B)ᵀ·op(A)ᵀ (column-major), so the operands swap places.
/// </summary>
public sealed unsafe class Cublas : IDisposable
{
    private IntPtr _handle;

    /// <summary>A handle on the current context's device; throws <see cref="CudaUnavailableException"/> when no cuBLAS initialises.</summary>
    public Cublas(CudaStream stream)
    {
        var why = NativeLibraries.SelectCublas(WhyCreateFails);
        if (why is not null)
        {
            throw new CudaUnavailableException(why);
        }
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

    /// <summary>Null when some cuBLAS can be loaded, else the one-line reason; binds no entry point, so the constructor still chooses.</summary>
    public static string? WhyUnavailable() => NativeLibraries.WhyNoCublasLoads("cublasGetStatusName") is { } why ? $"no cuBLAS: {why}" : null;

    /// <summary>Null when cublasCreate of this library works in the current context, else what it returned (called through the library's own exports).</summary>
    private static string? WhyCreateFails(IntPtr library)
    {
        if (!NativeLibrary.TryGetExport(library, "cublasCreate_v2", out var create) || !NativeLibrary.TryGetExport(library, "cublasDestroy_v2", out var destroy)
            || !NativeLibrary.TryGetExport(library, "cublasGetStatusName", out _))
        {
            return "too old (cuBLAS 11 or later needed)";
        }
        IntPtr handle;
        var status = ((delegate* unmanaged<IntPtr*, int>)create)(&handle);
        if (status != CublasApi.Success)
        {
            return $"cublasCreate returned status {status}";
        }
        _ = ((delegate* unmanaged<IntPtr, int>)destroy)(handle);
        return null;
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
