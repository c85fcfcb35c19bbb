namespace NativeContrast.Cpu;

using System.Runtime.InteropServices;
using NativeContrast.Cuda;

/// <summary>
/// The oneDNN v2 C API entry points the CPU backend's convolutions use (oneapi/dnnl/dnnl.h, dnnl_types.h).
/// Memory and operation descriptors are plain structs in v2, filled in place by the *_init functions: callers pass
/// buffers of at least <see cref="MemoryDescBytes"/> / <see cref="OpDescBytes"/> bytes (v2.6's structs are 696
/// and 5976 bytes; the margins cover other 2.x minors). Handles are opaque pointers.
/// </summary>
internal static unsafe partial class DnnlApi
{
    public const int MemoryDescBytes = 1024;
    public const int OpDescBytes = 8192;

    public const int Success = 0;      // dnnl_success
    public const int EngineCpu = 1;    // dnnl_cpu
    public const uint StreamInOrder = 1; // dnnl_stream_in_order (the default)
    public const int F32 = 3;          // dnnl_f32

    // dnnl_format_tag_t
    public const int FormatAny = 1;
    public const int Oihw = 5;
    public const int Nhwc = 20;

    // dnnl_prop_kind_t and dnnl_alg_kind_t
    public const int ForwardTraining = 64;
    public const int ConvolutionDirect = 1;

    // DNNL_ARG_*
    public const int ArgSrc = 1;
    public const int ArgDst = 17;
    public const int ArgWeights = 33;
    public const int ArgDiffSrc = 129;
    public const int ArgDiffDst = 145;
    public const int ArgDiffWeights = 161;
    public const int ArgFrom = ArgSrc;
    public const int ArgTo = ArgDst;

    // dnnl_query_t
    public const int QueryImplInfoString = 8;
    public const int QueryWeightsMd = 131;
    public const int QueryDiffWeightsMd = 132;

    /// <summary>DNNL_MEMORY_ALLOCATE: the library allocates (and frees with the memory object) the buffer.</summary>
    public static readonly IntPtr MemoryAllocate = -1;

    [StructLayout(LayoutKind.Sequential)]
    public struct ExecArg
    {
        public int Arg;
        public IntPtr Memory;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Version
    {
        public int Major;
        public int Minor;
        public int Patch;
        public IntPtr Hash;
        public uint CpuRuntime;
        public uint GpuRuntime;
    }

    /// <summary>dnnl_cpu_runtime values of <see cref="Version.CpuRuntime"/> (DNNL_RUNTIME_*).</summary>
    public static string RuntimeName(uint runtime) => runtime switch
    {
        1 => "sequential",
        2 => "OpenMP",
        4 => "TBB",
        8 => "threadpool",
        _ => $"runtime {runtime}",
    };

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial Version* dnnl_version();

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_engine_create(out IntPtr engine, int kind, nuint index);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_engine_destroy(IntPtr engine);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_stream_create(out IntPtr stream, IntPtr engine, uint flags);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_stream_wait(IntPtr stream);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_stream_destroy(IntPtr stream);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_memory_desc_init_by_tag(void* memoryDesc, int ndims, long* dims, int dataType, int tag);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_memory_desc_equal(void* lhs, void* rhs);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_convolution_forward_desc_init(
        void* convDesc, int propKind, int algKind, void* srcDesc, void* weightsDesc, void* biasDesc, void* dstDesc,
        long* strides, long* paddingLeft, long* paddingRight);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_convolution_backward_data_desc_init(
        void* convDesc, int algKind, void* diffSrcDesc, void* weightsDesc, void* diffDstDesc,
        long* strides, long* paddingLeft, long* paddingRight);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_convolution_backward_weights_desc_init(
        void* convDesc, int algKind, void* srcDesc, void* diffWeightsDesc, void* diffBiasDesc, void* diffDstDesc,
        long* strides, long* paddingLeft, long* paddingRight);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_desc_create(out IntPtr primitiveDesc, void* opDesc, IntPtr attr, IntPtr engine, IntPtr hintForward);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_reorder_primitive_desc_create(out IntPtr primitiveDesc, void* srcDesc, IntPtr srcEngine, void* dstDesc, IntPtr dstEngine, IntPtr attr);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial void* dnnl_primitive_desc_query_md(IntPtr primitiveDesc, int what, int index);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_desc_query(IntPtr primitiveDesc, int what, int index, void* result);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_desc_destroy(IntPtr primitiveDesc);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_create(out IntPtr primitive, IntPtr primitiveDesc);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_execute(IntPtr primitive, IntPtr stream, int nargs, ExecArg* args);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_destroy(IntPtr primitive);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_memory_create(out IntPtr memory, void* memoryDesc, IntPtr engine, IntPtr handle);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_memory_set_data_handle(IntPtr memory, void* handle);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_memory_destroy(IntPtr memory);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_attr_create(out IntPtr attr);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_attr_destroy(IntPtr attr);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_primitive_attr_set_post_ops(IntPtr attr, IntPtr postOps);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_post_ops_create(out IntPtr postOps);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_post_ops_append_sum(IntPtr postOps, float scale);

    [LibraryImport(NativeLibraries.Dnnl)]
    public static partial int dnnl_post_ops_destroy(IntPtr postOps);

    /// <summary>Throws naming the call and oneDNN's status when <paramref name="status"/> is not dnnl_success.</summary>
    public static void Check(int status, string call, string what)
    {
        if (status != Success)
        {
            var name = status switch
            {
                1 => "dnnl_out_of_memory",
                2 => "dnnl_invalid_arguments",
                3 => "dnnl_unimplemented",
                5 => "dnnl_runtime_error",
                6 => "dnnl_not_required",
                _ => $"status {status}",
            };
            throw new InvalidOperationException($"oneDNN {call} failed with {name} for {what}");
        }
    }
}
