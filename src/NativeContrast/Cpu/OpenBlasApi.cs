namespace NativeContrast.Cpu;

using System.Runtime.InteropServices;
using NativeContrast.Cuda;

/// <summary>The OpenBLAS entry points the CPU backend uses (cblas.h and OpenBLAS's own extensions).</summary>
internal static unsafe partial class OpenBlasApi
{
    public const int RowMajor = 101;   // CblasRowMajor
    public const int NoTrans = 111;    // CblasNoTrans
    public const int Trans = 112;      // CblasTrans

    /// <summary>openblas_get_parallel: 0 sequential, 1 pthreads, 2 OpenMP.</summary>
    public const int ParallelPthreads = 1;
    public const int ParallelOpenMp = 2;

    [LibraryImport(NativeLibraries.OpenBlas)]
    public static partial void cblas_sgemm(
        int order, int transA, int transB, int m, int n, int k,
        float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc);

    [LibraryImport(NativeLibraries.OpenBlas)]
    public static partial IntPtr openblas_get_config();

    [LibraryImport(NativeLibraries.OpenBlas)]
    public static partial IntPtr openblas_get_corename();

    [LibraryImport(NativeLibraries.OpenBlas)]
    public static partial int openblas_get_num_threads();

    [LibraryImport(NativeLibraries.OpenBlas)]
    public static partial int openblas_get_parallel();
}
