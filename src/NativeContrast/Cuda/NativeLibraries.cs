namespace NativeContrast.Cuda;

using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

/// <summary>
/// Maps the logical library names used by [LibraryImport] ("cuda", "cublas", and the CPU backend's "openblas" and "dnnl") to
/// the files each platform ships, trying newer cuBLAS majors first. A library that cannot be found surfaces as
/// <see cref="DllNotFoundException"/>, which <see cref="CudaProbe"/> and <see cref="Cpu.CpuLibraries"/> turn into
/// one readable line. (One resolver per assembly is allowed, so the CPU libraries are mapped here too.)
/// </summary>
internal static class NativeLibraries
{
    public const string Driver = "cuda";
    public const string Cublas = "cublas";
    public const string OpenBlas = "openblas";
    public const string Dnnl = "dnnl";

    private static readonly string[] DriverCandidates = OperatingSystem.IsWindows() ? ["nvcuda.dll"] : ["libcuda.so.1", "libcuda.so"];

    private static readonly string[] CublasCandidates = OperatingSystem.IsWindows()
        ? ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"]
        : ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"];

    /// <summary>Debian and Ubuntu ship the pthreads build as libopenblas.so.0; MSYS2/vcpkg and Homebrew name it differently.</summary>
    public static readonly string[] OpenBlasCandidates = OperatingSystem.IsWindows() ? ["libopenblas.dll", "openblas.dll"]
        : OperatingSystem.IsMacOS() ? ["libopenblas.0.dylib", "libopenblas.dylib"]
        : ["libopenblas.so.0", "libopenblas.so"];

    /// <summary>oneDNN v2 (the C API the CPU convolutions bind; v3 changed it): Debian's libdnnl2.</summary>
    public static readonly string[] DnnlCandidates = OperatingSystem.IsWindows() ? ["dnnl.dll"]
        : OperatingSystem.IsMacOS() ? ["libdnnl.2.dylib"]
        : ["libdnnl.so.2"];

    /// <summary>The file each logical name resolved to, for `nativecontrast info`.</summary>
    public static string? ResolvedCublas { get; private set; }

    public static string? ResolvedDriver { get; private set; }

    public static string? ResolvedOpenBlas { get; private set; }

    public static string? ResolvedDnnl { get; private set; }

    /// <summary>
    /// Where a loaded library lives: on Linux the full path the loader mapped (from /proc/self/maps, following the
    /// soname to the versioned file), elsewhere the name it was loaded by.
    /// </summary>
    public static string? LoadedPath(string? fileName)
    {
        if (fileName is null || !OperatingSystem.IsLinux())
        {
            return fileName;
        }
        // "libcublas.so.12" is a link to "libcublas.so.12.8.4.1": match on the stem up to ".so".
        var so = fileName.IndexOf(".so", StringComparison.Ordinal);
        var stem = so < 0 ? fileName : fileName[..(so + 3)];
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                var slash = line.IndexOf('/', StringComparison.Ordinal);
                if (slash < 0)
                {
                    continue;
                }
                var name = Path.GetFileName(line.AsSpan(slash));
                if (name.StartsWith(stem, StringComparison.Ordinal) && (name.Length == stem.Length || name[stem.Length] == '.'))
                {
                    return line[slash..];
                }
            }
        }
        catch (IOException)
        {
        }
        return fileName;
    }

#pragma warning disable CA2255 // A module initializer is the documented place to install a DllImport resolver.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Install() => NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        var candidates = name switch
        {
            Driver => DriverCandidates,
            Cublas => CublasCandidates,
            OpenBlas => OpenBlasCandidates,
            Dnnl => DnnlCandidates,
            _ => null,
        };
        if (candidates is null)
        {
            return IntPtr.Zero;
        }
        foreach (var file in candidates)
        {
            if (NativeLibrary.TryLoad(file, assembly, searchPath, out var handle))
            {
                switch (name)
                {
                    case Driver:
                        ResolvedDriver = file;
                        break;
                    case Cublas:
                        ResolvedCublas = file;
                        break;
                    case OpenBlas:
                        ResolvedOpenBlas = file;
                        break;
                    default:
                        ResolvedDnnl = file;
                        break;
                }
                return handle;
            }
        }
        var what = name switch { Driver => "the CUDA driver", Cublas => "cuBLAS", OpenBlas => "OpenBLAS", _ => "oneDNN" };
        throw new DllNotFoundException($"{what} was not found (tried {string.Join(", ", candidates)})");
    }
}
