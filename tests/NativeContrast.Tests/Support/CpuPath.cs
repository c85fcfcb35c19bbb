namespace NativeContrast.Tests.Support;

using NativeContrast.Backends;
using NativeContrast.Cpu;

/// <summary>
/// Which CPU backend a fixture runs on: every library found on this machine (oneDNN convolutions, OpenBLAS GEMMs),
/// OpenBLAS with im2col convolutions, or the managed fallback. Where a library is missing, its path runs managed.
/// </summary>
public enum CpuPath
{
    Libraries,
    OpenBlas,
    Managed,
}

public static class CpuPaths
{
    public static CpuBackend Create(this CpuPath path) => path switch
    {
        CpuPath.Managed => new CpuBackend(CpuLibraries.ManagedOnly),
        CpuPath.OpenBlas => new CpuBackend(CpuLibraries.OpenBlasOnly),
        _ => new CpuBackend(),
    };
}
