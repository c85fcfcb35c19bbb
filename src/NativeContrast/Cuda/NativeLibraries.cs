namespace NativeContrast.Cuda;

using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeContrast.Cpu;

/// <summary>
/// Maps the logical library names used by [LibraryImport] ("cuda", "cublas", the CPU backend's "openblas" and "dnnl", and the
/// communicators' "mpi" and "nccl") to the files each platform ships, trying newer cuBLAS majors first. A library that cannot be found surfaces as
/// <see cref="DllNotFoundException"/>, which <see cref="CudaProbe"/> and <see cref="Cpu.CpuLibraries"/> turn into
/// one readable line. (One resolver per assembly is allowed, so the CPU libraries are mapped here too.) cuBLAS is
/// chosen by <see cref="SelectCublas"/> before its entry points are bound: the newest one whose cublasCreate works,
/// since a library can load and still fail to initialise (a cuBLAS newer than the driver supports).
/// </summary>
internal static class NativeLibraries
{
    private static readonly Lock CublasGate = new();

    /// <summary>The cuBLAS the entry points bind to, once chosen (by <see cref="SelectCublas"/> or the first binding).</summary>
    private static IntPtr _cublas;

    public const string Driver = "cuda";
    public const string Cublas = "cublas";
    public const string OpenBlas = "openblas";
    public const string Dnnl = "dnnl";
    public const string Mpi = "mpi";
    public const string Nccl = "nccl";

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

    /// <summary>
    /// Open MPI 3 to 5 (Debian's libopenmpi3): the binding reads Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, ...),
    /// which are addresses of its exported globals, so another MPI's libmpi would not do.
    /// </summary>
    public static readonly string[] MpiCandidates = ["libmpi.so.40"];

    /// <summary>NCCL 2, Linux only: the CUDA repositories' libnccl2 and PyTorch's wheels (nvidia/nccl/lib) ship it.</summary>
    public static readonly string[] NcclCandidates = ["libnccl.so.2"];

    /// <summary>The file each logical name resolved to, for `nativecontrast info`.</summary>
    public static string? ResolvedCublas { get; private set; }

    public static string? ResolvedDriver { get; private set; }

    public static string? ResolvedOpenBlas { get; private set; }

    public static string? ResolvedDnnl { get; private set; }

    public static string? ResolvedMpi { get; private set; }

    public static string? ResolvedNccl { get; private set; }

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

    /// <summary>
    /// Chooses the cuBLAS to bind: the first candidate that loads and for which <paramref name="whyNot"/> (given the
    /// library's handle) returns null. Returns null on success, else one line naming every candidate and why it
    /// failed. Once a cuBLAS entry point is bound, the choice is fixed and only that library is checked.
    /// </summary>
    public static string? SelectCublas(Func<IntPtr, string?> whyNot)
    {
        lock (CublasGate)
        {
            if (_cublas != IntPtr.Zero)
            {
                var why = whyNot(_cublas);
                return why is null ? null : $"{ResolvedCublas}: {why}";
            }
            var (chosen, handle, reasons) = FirstWorking(CublasCandidates, TryLoad, whyNot);
            if (chosen < 0)
            {
                return $"no cuBLAS initialises here ({reasons})";
            }
            _cublas = handle;
            ResolvedCublas = CublasCandidates[chosen];
            return null;
        }
    }

    /// <summary>
    /// The index and handle of the first candidate that loads and passes <paramref name="whyNot"/>, or -1, with the
    /// reasons of those before it ("file: why", semicolon-separated). A candidate that fails stays loaded, unused:
    /// unloading a CUDA library after it initialised is not safe (its exit handlers would point into unmapped code).
    /// </summary>
    internal static (int Chosen, IntPtr Handle, string Reasons) FirstWorking(
        IReadOnlyList<string> candidates, Func<string, IntPtr> load, Func<IntPtr, string?> whyNot)
    {
        var reasons = new List<string>();
        for (var i = 0; i < candidates.Count; i++)
        {
            var handle = load(candidates[i]);
            if (handle == IntPtr.Zero)
            {
                reasons.Add($"{candidates[i]}: not found");
                continue;
            }
            var why = whyNot(handle);
            if (why is null)
            {
                return (i, handle, string.Join("; ", reasons));
            }
            reasons.Add($"{candidates[i]}: {why}");
        }
        return (-1, IntPtr.Zero, string.Join("; ", reasons));
    }

    /// <summary>
    /// Null when some cuBLAS candidate loads and exports <paramref name="entryPoint"/>, else why none does; binds no
    /// entry point (what it loads stays loaded, as the resolver would have left it).
    /// </summary>
    public static string? WhyNoCublasLoads(string entryPoint)
    {
        var found = false;
        foreach (var file in CublasCandidates)
        {
            var handle = TryLoad(file);
            if (handle == IntPtr.Zero)
            {
                continue;
            }
            found = true;
            if (NativeLibrary.TryGetExport(handle, entryPoint, out _))
            {
                return null;
            }
        }
        return found
            ? $"cuBLAS is too old (11 or later needed): no {entryPoint} in {string.Join(", ", CublasCandidates)}"
            : $"cuBLAS was not found (tried {string.Join(", ", CublasCandidates)})";
    }

    /// <summary>
    /// The handle of a logical library, loaded as its entry points would be (or already were): for the exports that
    /// are data rather than functions, such as Open MPI's handles. Throws <see cref="DllNotFoundException"/> with the
    /// one-line reason when it cannot be found.
    /// </summary>
    public static IntPtr Load(string name) => Resolve(name, typeof(NativeLibraries).Assembly, null);

    private static IntPtr TryLoad(string file) =>
        NativeLibrary.TryLoad(file, typeof(NativeLibraries).Assembly, null, out var handle) ? handle : IntPtr.Zero;

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name == Cublas)
        {
            lock (CublasGate)
            {
                if (_cublas != IntPtr.Zero)
                {
                    return _cublas;
                }
            }
        }
        var candidates = name switch
        {
            Driver => DriverCandidates,
            Cublas => CublasCandidates,
            OpenBlas => OpenBlasCandidates,
            Dnnl => DnnlCandidates,
            Mpi => MpiCandidates,
            Nccl => NcclCandidates,
            _ => null,
        };
        if (candidates is null)
        {
            return IntPtr.Zero;
        }
        foreach (var file in candidates)
        {
            // Open MPI loads its components (mca_pml_ob1.so, ...) at MPI_Init, and they expect libmpi's symbols to be global.
            var handle = name == Mpi ? LibC.OpenGlobal(file)
                : NativeLibrary.TryLoad(file, assembly, searchPath, out var loaded) ? loaded : IntPtr.Zero;
            if (handle != IntPtr.Zero)
            {
                switch (name)
                {
                    case Driver:
                        ResolvedDriver = file;
                        break;
                    case Cublas:
                        lock (CublasGate)
                        {
                            ResolvedCublas = file;
                            _cublas = handle;
                        }
                        break;
                    case OpenBlas:
                        ResolvedOpenBlas = file;
                        break;
                    case Dnnl:
                        ResolvedDnnl = file;
                        break;
                    case Mpi:
                        ResolvedMpi = file;
                        break;
                    default:
                        ResolvedNccl = file;
                        break;
                }
                return handle;
            }
        }
        var what = name switch
        {
            Driver => "the CUDA driver", Cublas => "cuBLAS", OpenBlas => "OpenBLAS", Dnnl => "oneDNN", Mpi => "Open MPI", _ => "NCCL",
        };
        throw new DllNotFoundException($"{what} was not found (tried {string.Join(", ", candidates)})");
    }
}
