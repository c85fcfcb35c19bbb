namespace NativeContrast.Cuda;

/// <summary>
/// Answers "can the CUDA backend run here, and if not, why" in one line, without throwing:
/// no driver library, cuInit's CUDA_ERROR_NO_DEVICE (a driver without a GPU), no device at that ordinal,
/// no cuBLAS, or no kernel module.
/// </summary>
public static class CudaProbe
{
    private static readonly Lock Gate = new();
    private static bool _initialized;

    /// <summary>Initialises the driver once; returns null when it is usable, else the reason it is not.</summary>
    public static string? InitializeDriver()
    {
        lock (Gate)
        {
            if (_initialized)
            {
                return null;
            }
            try
            {
                var result = DriverApi.cuInit(0);
                if (result == DriverApi.ErrorNoDevice)
                {
                    return "no CUDA device: the driver is installed but cuInit reports CUDA_ERROR_NO_DEVICE (100)";
                }
                if (result != DriverApi.Success)
                {
                    var (name, text) = CudaCheck.DriverError(result);
                    return $"the CUDA driver failed to initialise: cuInit returned {name} ({result}) {text}".TrimEnd();
                }
                _initialized = true;
                return null;
            }
            catch (DllNotFoundException e)
            {
                return $"no CUDA driver: {e.Message}";
            }
            catch (EntryPointNotFoundException e)
            {
                return $"the CUDA driver is too old: {e.Message}";
            }
        }
    }

    /// <summary>The CUDA driver library this process loaded (after <see cref="InitializeDriver"/>), or null.</summary>
    public static string? DriverLibraryFile => NativeLibraries.LoadedPath(NativeLibraries.ResolvedDriver);

    /// <summary>How many CUDA devices the driver reports; 0 without a usable driver.</summary>
    public static int DeviceCount() =>
        InitializeDriver() is null && DriverApi.cuDeviceGetCount(out var count) == DriverApi.Success ? count : 0;

    /// <summary>Oldest compute capability the fatbin has code for (Ampere: TF32 and BF16 tensor cores).</summary>
    public const int MinimumComputeMajor = 8;

    /// <summary>Null when device <paramref name="ordinal"/> can run the engine's CUDA backend, else the one-line reason.</summary>
    public static string? WhyUnavailable(int ordinal = 0)
    {
        var driver = InitializeDriver();
        if (driver is not null)
        {
            return driver;
        }
        try
        {
            CudaCheck.Driver(DriverApi.cuDeviceGetCount(out var count), "cuDeviceGetCount");
            if (count == 0)
            {
                return "no CUDA device: the driver reports 0 devices";
            }
            if (ordinal < 0 || ordinal >= count)
            {
                return $"no CUDA device {ordinal}: the driver reports {count} device(s)";
            }
            CudaCheck.Driver(DriverApi.cuDeviceGet(out var device, ordinal), "cuDeviceGet");
            var major = CudaDeviceInfo.Attribute(device, DriverApi.AttrComputeCapabilityMajor);
            if (major < MinimumComputeMajor)
            {
                var minor = CudaDeviceInfo.Attribute(device, DriverApi.AttrComputeCapabilityMinor);
                return $"CUDA device {ordinal} has compute capability {major}.{minor}; the kernels need {MinimumComputeMajor}.0 or later";
            }
        }
        catch (CudaException e)
        {
            return $"the CUDA driver cannot describe device {ordinal}: {e.Message}";
        }
        return Cublas.WhyUnavailable() ?? KernelModule.WhyNotFound();
    }
}
