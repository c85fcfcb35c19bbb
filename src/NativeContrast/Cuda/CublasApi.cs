namespace NativeContrast.Cuda;

using System.Runtime.InteropServices;

/// <summary>The cuBLAS v2 entry points the engine uses (cublas_api.h). cuBLAS is column-major.</summary>
internal static unsafe partial class CublasApi
{
    public const int Success = 0;

    public const int OpN = 0;
    public const int OpT = 1;

    public const int DefaultMath = 0;
    public const int PedanticMath = 2;
    public const int Tf32TensorOpMath = 3;

    public const int DataFloat32 = 0;   // CUDA_R_32F
    public const int DataBFloat16 = 14; // CUDA_R_16BF

    public const int Compute32F = 68;          // CUBLAS_COMPUTE_32F
    public const int Compute32FPedantic = 69;  // CUBLAS_COMPUTE_32F_PEDANTIC
    public const int Compute32FFast16BF = 75;  // CUBLAS_COMPUTE_32F_FAST_16BF
    public const int Compute32FFastTf32 = 77;  // CUBLAS_COMPUTE_32F_FAST_TF32

    public const int GemmDefault = -1;

    // libraryPropertyType (library_types.h)
    public const int PropertyMajor = 0;
    public const int PropertyMinor = 1;
    public const int PropertyPatch = 2;

    [LibraryImport(NativeLibraries.Cublas, EntryPoint = "cublasCreate_v2")]
    public static partial int cublasCreate(out IntPtr handle);

    [LibraryImport(NativeLibraries.Cublas, EntryPoint = "cublasDestroy_v2")]
    public static partial int cublasDestroy(IntPtr handle);

    [LibraryImport(NativeLibraries.Cublas, EntryPoint = "cublasSetStream_v2")]
    public static partial int cublasSetStream(IntPtr handle, IntPtr stream);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial int cublasSetMathMode(IntPtr handle, int mode);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial int cublasSetWorkspace_v2(IntPtr handle, ulong workspace, nuint bytes);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial int cublasGetProperty(int type, out int value);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial IntPtr cublasGetStatusName(int status);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial int cublasGemmEx(
        IntPtr handle, int transA, int transB, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda,
        ulong b, int bType, int ldb,
        void* beta, ulong c, int cType, int ldc,
        int computeType, int algorithm);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial int cublasGemmStridedBatchedEx(
        IntPtr handle, int transA, int transB, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, long strideA,
        ulong b, int bType, int ldb, long strideB,
        void* beta, ulong c, int cType, int ldc, long strideC,
        int batchCount, int computeType, int algorithm);
}
