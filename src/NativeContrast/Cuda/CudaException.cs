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
    public static void Driver(int result, string call)
    {
        if (result != DriverApi.Success)
        {
            var (name, description) = DriverError(result);
            throw new CudaException(call, result, name, description);
        }
    }

    public static void Cublas(int status, string call)
    {
        if (status != CublasApi.Success)
        {
            throw new CudaException(call, status, CublasStatusName(status), string.Empty);
        }
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
