namespace NativeContrast.Cpu;

/// <summary>
/// oneDNN's CPU engine, created once per process (engines are thread-safe and cheap to share); each convolution
/// makes its own stream. Lives as long as the process, like the library itself.
/// </summary>
internal sealed class DnnlEngine
{
    private DnnlEngine(IntPtr handle, string version)
    {
        Handle = handle;
        Version = version;
    }

    public IntPtr Handle { get; }

    /// <summary>"oneDNN 2.6.3 (OpenMP)".</summary>
    public string Version { get; }

    /// <summary>The engine, or throws <see cref="DllNotFoundException"/> / <see cref="InvalidOperationException"/> saying why not.</summary>
    public static unsafe DnnlEngine Create()
    {
        var version = DnnlApi.dnnl_version();
        if (version->Major != 2)
        {
            throw new InvalidOperationException($"oneDNN {version->Major}.{version->Minor}.{version->Patch} found; the engine binds the v2 C API");
        }
        DnnlApi.Check(DnnlApi.dnnl_engine_create(out var engine, DnnlApi.EngineCpu, 0), "dnnl_engine_create", "the CPU engine");
        return new DnnlEngine(engine, $"oneDNN {version->Major}.{version->Minor}.{version->Patch} ({DnnlApi.RuntimeName(version->CpuRuntime)})");
    }
}
