namespace NativeContrast.Cuda;

/// <summary>What the driver reports about one GPU.</summary>
public sealed record CudaDeviceInfo(
    int Ordinal,
    string Name,
    int ComputeMajor,
    int ComputeMinor,
    long TotalMemoryBytes,
    int Multiprocessors,
    int MaxSharedMemoryPerBlockOptIn,
    int L2CacheBytes,
    int DriverVersion)
{
    public string ComputeCapability => $"{ComputeMajor}.{ComputeMinor}";

    /// <summary>Driver version as major.minor, from the integer the driver reports (e.g. 12080 → 12.8).</summary>
    public string DriverVersionText => $"{DriverVersion / 1000}.{DriverVersion % 1000 / 10}";

    internal static unsafe CudaDeviceInfo Query(int ordinal)
    {
        CudaCheck.Driver(DriverApi.cuDeviceGet(out var device, ordinal), "cuDeviceGet");
        var name = stackalloc byte[256];
        CudaCheck.Driver(DriverApi.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        CudaCheck.Driver(DriverApi.cuDeviceTotalMem(out var total, device), "cuDeviceTotalMem");
        CudaCheck.Driver(DriverApi.cuDriverGetVersion(out var driver), "cuDriverGetVersion");
        return new CudaDeviceInfo(
            ordinal,
            new string((sbyte*)name),
            Attribute(device, DriverApi.AttrComputeCapabilityMajor),
            Attribute(device, DriverApi.AttrComputeCapabilityMinor),
            (long)total,
            Attribute(device, DriverApi.AttrMultiprocessorCount),
            Attribute(device, DriverApi.AttrMaxSharedMemoryPerBlockOptin),
            Attribute(device, DriverApi.AttrL2CacheSize),
            driver);
    }

    internal static int Attribute(int device, int attribute)
    {
        CudaCheck.Driver(DriverApi.cuDeviceGetAttribute(out var value, attribute, device), "cuDeviceGetAttribute");
        return value;
    }
}
