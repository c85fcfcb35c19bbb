namespace NativeContrast.Cuda;

using System.Runtime.InteropServices;

/// <summary>A CUDA driver or cuBLAS call that failed: names the call and the error.</summary>
public class CudaException : Exception
{
    public CudaException(string call, int code, string errorName, string detail)
        : base($"{call} failed: {errorName} ({code}){(string.IsNullOrEmpty(detail) ? string.Empty : ": " + detail)}")
    {
        Call = call;
        Code = code;
        ErrorName = errorName;
    }

    public string Call { get; }

    public int Code { get; }

    public string ErrorName { get; }
}

/// <summary>A kernel launch that failed, or whose asynchronous error surfaced when checked: names the kernel.</summary>
public sealed class KernelLaunchException : CudaException
{
    public KernelLaunchException(string kernel, string launch, int code, string errorName, string detail)
        : base($"launch of kernel '{kernel}' {launch}", code, errorName, detail)
    {
        Kernel = kernel;
    }

    public string Kernel { get; }
}

/// <summary>Turns return codes into exceptions. Every driver and cuBLAS call goes through here.</summary>
internal static class CudaCheck
{
    private static volatile bool _contextLossReported;

    /// <summary>True once an error that lost a context has been thrown (later frees fail the same way and stay quiet).</summary>
    public static bool ContextLossReported => _contextLossReported;

    /// <summary>
    /// Errors after which the context is unusable (the driver's "sticky" errors: a fault inside a kernel, an ECC
    /// error): every later call on it returns the same error, and only a new process recovers.
    /// </summary>
    public static bool IsContextLost(int result) =>
        result is 214 /* ECC_UNCORRECTABLE */ or 700 /* ILLEGAL_ADDRESS */ or 702 /* LAUNCH_TIMEOUT */
            or 714 /* HARDWARE_STACK_ERROR */ or 715 /* ILLEGAL_INSTRUCTION */ or 716 /* MISALIGNED_ADDRESS */
            or 717 /* INVALID_ADDRESS_SPACE */ or 718 /* INVALID_PC */ or 719 /* LAUNCH_FAILED */;

    /// <summary>
    /// Whether a failed cuMemFree is news: it is, unless the context was lost and that was already reported (then every
    /// free fails the same way, and throwing from each Dispose would bury the report of the fault itself).
    /// </summary>
    public static bool FreeFailureToReport(int result, bool contextLossReported) =>
        result != DriverApi.Success && !(IsContextLost(result) && contextLossReported);

    /// <summary>
    /// What an error on a stream says beyond the driver's text: when it lost the context, that it did, which kernels
    /// the stream ran last (an asynchronous fault surfaces at a later call, not at the kernel that caused it) and how
    /// to have it reported at that kernel.
    /// </summary>
    public static string StreamErrorDetail(string text, int result, IReadOnlyList<string> recentKernels, bool synchronizedLaunches)
    {
        if (!IsContextLost(result))
        {
            return text;
        }
        var parts = new List<string>();
        if (!string.IsNullOrEmpty(text))
        {
            parts.Add(text);
        }
        parts.Add("the CUDA context is lost: every later CUDA call on this device fails until the process restarts");
        if (recentKernels.Count > 0)
        {
            parts.Add($"the last kernels launched on the stream, oldest first: {string.Join(", ", recentKernels)}");
        }
        if (!synchronizedLaunches)
        {
            parts.Add("rerun with NATIVECONTRAST_SYNC_LAUNCH=1 to have the fault reported by the kernel that caused it");
        }
        return string.Join("; ", parts);
    }

    /// <summary>Like <see cref="Driver"/> for a call whose error may be an earlier kernel's fault surfacing on <paramref name="stream"/>.</summary>
    public static void Stream(int result, string call, CudaStream stream)
    {
        if (result != DriverApi.Success)
        {
            var (name, description) = DriverError(result);
            throw new CudaException(call, result, name, StreamFailure(description, result, stream));
        }
    }

    /// <summary>The detail of a failure on a stream; notes a lost context so that later frees stay quiet.</summary>
    public static string StreamFailure(string description, int result, CudaStream stream)
    {
        if (IsContextLost(result))
        {
            _contextLossReported = true;
        }
        return StreamErrorDetail(description, result, stream.Launches.Recent(), CudaKernel.SynchronizeEachLaunch);
    }

    public static void Driver(int result, string call)
    {
        if (result != DriverApi.Success)
        {
            var (name, description) = DriverError(result);
            throw new CudaException(call, result, name, ContextLoss(description, result));
        }
    }

    /// <summary>
    /// A failed cuBLAS call; when it failed because the context is lost (a kernel's fault surfacing in the GEMM), the
    /// detail says so, as a stream's failure does, and later frees stay quiet.
    /// </summary>
    public static void Cublas(int status, string call)
    {
        if (status != CublasApi.Success)
        {
            var detail = string.Empty;
            if (status is 13 /* EXECUTION_FAILED */ or 14 /* INTERNAL_ERROR */)
            {
                // The failure path only: the driver's sticky error, if any, comes back from any call on the context.
                var driver = DriverApi.cuCtxSynchronize();
                if (IsContextLost(driver))
                {
                    var (name, description) = DriverError(driver);
                    detail = ContextLoss($"{name}: {description}", driver);
                }
            }
            throw new CudaException(call, status, CublasStatusName(status), detail);
        }
    }

    /// <summary>A driver error's detail, marked (and remembered, so that later frees stay quiet) when it lost the context.</summary>
    private static string ContextLoss(string description, int result)
    {
        if (!IsContextLost(result))
        {
            return description;
        }
        _contextLossReported = true;
        return StreamErrorDetail(description, result, [], CudaKernel.SynchronizeEachLaunch);
    }

    public static (string Name, string Description) DriverError(int result)
    {
        try
        {
            var name = DriverApi.cuGetErrorName(result, out var namePtr) == DriverApi.Success ? Marshal.PtrToStringUTF8(namePtr) : null;
            var text = DriverApi.cuGetErrorString(result, out var textPtr) == DriverApi.Success ? Marshal.PtrToStringUTF8(textPtr) : null;
            return (name ?? $"CUDA_ERROR_{result}", text ?? string.Empty);
        }
        catch (DllNotFoundException)
        {
            return ($"CUDA_ERROR_{result}", string.Empty);
        }
    }

    private static string CublasStatusName(int status)
    {
        try
        {
            return Marshal.PtrToStringUTF8(CublasApi.cublasGetStatusName(status)) ?? $"CUBLAS_STATUS_{status}";
        }
        catch (EntryPointNotFoundException)
        {
            return $"CUBLAS_STATUS_{status}";
        }
    }
}
