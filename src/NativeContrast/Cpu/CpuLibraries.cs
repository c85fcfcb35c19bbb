namespace NativeContrast.Cpu;

using System.Runtime.InteropServices;
using NativeContrast.Cuda;

/// <summary>
/// Which libraries run the CPU backend's GEMMs and convolutions, and why: OpenBLAS's sgemm when it loads (else the
/// managed GEMM), and oneDNN's direct convolutions when it loads (else im2col + GEMM).
/// <c>NATIVECONTRAST_CPU_LIBS</c> narrows the choice: <c>openblas</c> keeps im2col + OpenBLAS for convolutions,
/// <c>managed</c> uses neither library (to compare against them, or to test the fallbacks without uninstalling
/// anything); tests choose per backend with <see cref="ManagedOnly"/> and <see cref="OpenBlasOnly"/>.
/// </summary>
public sealed class CpuLibraries
{
    public const string EnvironmentVariable = "NATIVECONTRAST_CPU_LIBS";

    private static readonly Lazy<CpuLibraries> Detected = new(() => Detect(Environment.GetEnvironmentVariable(EnvironmentVariable)));

    private static readonly Lazy<CpuLibraries> OpenBlasDetected = new(() => Detect("openblas"));

    private CpuLibraries(bool usesOpenBlas, DnnlEngine? dnnl, string description)
    {
        UsesOpenBlas = usesOpenBlas;
        Dnnl = dnnl;
        Description = description;
    }

    /// <summary>What this process uses: probed once, honouring <see cref="EnvironmentVariable"/>.</summary>
    public static CpuLibraries Default => Detected.Value;

    /// <summary>The managed GEMM and im2col convolutions regardless of what is installed.</summary>
    public static CpuLibraries ManagedOnly { get; } = new(false, null, "managed GEMM, im2col convolutions: requested by the caller");

    /// <summary>OpenBLAS (when it loads) with im2col convolutions: oneDNN left out.</summary>
    public static CpuLibraries OpenBlasOnly => OpenBlasDetected.Value;

    public bool UsesOpenBlas { get; }

    /// <summary>oneDNN's engine when convolutions run on it, else null (im2col + GEMM).</summary>
    internal DnnlEngine? Dnnl { get; }

    public bool UsesDnnl => Dnnl is not null;

    /// <summary>
    /// One line for `nativecontrast info`, e.g. "OpenBLAS 0.3.21 (pthreads, Cooperlake kernels, 2 threads; ...) GEMMs,
    /// oneDNN 2.6.3 (OpenMP) convolutions", or which managed path runs and why.
    /// </summary>
    public string Description { get; }

    private static CpuLibraries Detect(string? setting)
    {
        var requested = setting?.Trim().ToLowerInvariant();
        if (requested == "managed")
        {
            return new CpuLibraries(false, null, $"managed GEMM, im2col convolutions: {EnvironmentVariable}=managed");
        }
        if (!string.IsNullOrEmpty(requested) && requested != "openblas" && requested != "auto")
        {
            throw new InvalidOperationException($"{EnvironmentVariable}='{requested}': expected 'auto', 'openblas' or 'managed'");
        }
        PreferSleepingWorkers();
        var (usesOpenBlas, blas) = DetectOpenBlas();
        if (requested == "openblas")
        {
            return new CpuLibraries(usesOpenBlas, null, $"{blas}, im2col convolutions: {EnvironmentVariable}=openblas");
        }
        var (dnnl, convolutions) = DetectDnnl();
        return new CpuLibraries(usesOpenBlas, dnnl, $"{blas}, {convolutions}");
    }

    /// <summary>
    /// A step alternates oneDNN's OpenMP team, OpenBLAS's thread pool and .NET's workers on the same cores. By default
    /// the first two spin after each call (OpenMP for a while, OpenBLAS for about 2^28 cycles), taking the cores from
    /// whichever pool runs next, which costs a small network several times its compute, and much more on a busy host.
    /// So, before either library loads, ask both to sleep as soon as they are idle, unless the user has set these.
    /// </summary>
    private static void PreferSleepingWorkers()
    {
        LibC.SetDefault("OMP_WAIT_POLICY", "PASSIVE");
        LibC.SetDefault("OPENBLAS_THREAD_TIMEOUT", "4");
    }

    private static (DnnlEngine? Engine, string Description) DetectDnnl()
    {
        try
        {
            var engine = DnnlEngine.Create();
            return (engine, $"{engine.Version} convolutions");
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or InvalidOperationException)
        {
            return (null, $"im2col convolutions: {e.Message}");
        }
    }

    private static (bool Uses, string Description) DetectOpenBlas()
    {
        try
        {
            var config = Marshal.PtrToStringUTF8(OpenBlasApi.openblas_get_config()) ?? "OpenBLAS";
            // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": the first two words are the name and version.
            var version = string.Join(' ', config.Split(' ', StringSplitOptions.RemoveEmptyEntries).Take(2));
            var threading = OpenBlasApi.openblas_get_parallel() switch
            {
                OpenBlasApi.ParallelPthreads => "pthreads",
                OpenBlasApi.ParallelOpenMp => "OpenMP",
                _ => "sequential",
            };
            var core = Marshal.PtrToStringUTF8(OpenBlasApi.openblas_get_corename()) ?? "?";
            var threads = OpenBlasApi.openblas_get_num_threads();
            var file = NativeLibraries.LoadedPath(NativeLibraries.ResolvedOpenBlas);
            return (true, $"{version} ({threading}, {core} kernels, {threads} threads; {file}) GEMMs");
        }
        catch (DllNotFoundException e)
        {
            return (false, $"managed GEMM: {e.Message}");
        }
        catch (EntryPointNotFoundException e)
        {
            return (false, $"managed GEMM: {NativeLibraries.ResolvedOpenBlas} lacks an OpenBLAS entry point ({e.Message})");
        }
    }
}
