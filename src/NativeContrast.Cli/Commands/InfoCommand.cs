namespace NativeContrast.Cli.Commands;

using System.CommandLine;
using System.Globalization;
using System.Numerics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NativeContrast.Backends;
using NativeContrast.Cpu;
using NativeContrast.Cuda;
using Spectre.Console;

/// <summary>`nativecontrast info`: the runtime, the machine, the backend a run would use and why, and the GPU.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var device = DeviceOption.Create();
        var command = new Command("info", "Show the .NET runtime, the CPU, the backend --device selects and why, and the GPU (or why there is none).")
        {
            device,
        };
        command.SetAction(parse => Run(parse.GetRequiredValue(device), parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error));
        return command;
    }

    private static int Run(string device, TextWriter output, TextWriter error)
    {
        var console = CliConsole.For(output);
        var rows = new List<(string Label, string Value)>
        {
            ("NativeContrast", EngineVersion()),
            (".NET", $"{RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})"),
            ("OS", $"{RuntimeInformation.OSDescription} ({RuntimeInformation.OSArchitecture})"),
            ("CPU", $"{Environment.ProcessorCount} logical cores, {Simd()}, {Gib(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes)} memory"),
        };

        BackendChoice choice;
        try
        {
            choice = BackendSelector.Create(device);
        }
        catch (CudaUnavailableException e)
        {
            Write(console, rows);
            error.WriteLine($"error: --device {device}: {e.Message}");
            return Program.Failure;
        }
        using (choice.Backend)
        {
            rows.Add(("backend", choice.Reason));
            // The CPU backend's libraries matter with or without a GPU: it is the oracle and the fallback.
            rows.Add(("CPU libraries", CpuLibraries.Default.Description));
            if (choice.Backend is CudaBackend gpu)
            {
                DescribeGpu(rows, gpu);
            }
            else
            {
                // The CPU was chosen; still say whether a GPU could have been used, and if not, why.
                var why = CudaProbe.WhyUnavailable();
                rows.Add(("GPU", why is null ? "available (--device cuda to use it)" : $"none: {why}"));
            }
        }
        Write(console, rows);
        return Program.Success;
    }

    private static void DescribeGpu(List<(string Label, string Value)> rows, CudaBackend gpu)
    {
        var info = gpu.Info;
        var (free, total) = gpu.Context.MemoryInfo();
        rows.Add(("GPU", $"{info.Name} (cuda:{info.Ordinal})"));
        rows.Add(("  compute capability", info.ComputeCapability));
        rows.Add(("  memory", $"{Gib(total)} total, {Gib(free)} free"));
        rows.Add(("  multiprocessors", info.Multiprocessors.ToString(CultureInfo.InvariantCulture)));
        rows.Add(("  L2 cache", $"{info.L2CacheBytes / (1 << 20)} MiB"));
        rows.Add(("  shared memory", $"{info.MaxSharedMemoryPerBlockOptIn / 1024} KiB per block (opt-in)"));
        rows.Add(("  driver", $"CUDA {info.DriverVersionText} ({CudaProbe.DriverLibraryFile ?? "?"})"));
        rows.Add(("  cuBLAS", $"{gpu.Blas.Version} ({Cublas.LibraryFile ?? "?"})"));
        rows.Add(("  kernels", gpu.Module.Path));
    }

    /// <summary>Label and value per line, labels padded to one column (no table: lines stay greppable and unpadded).</summary>
    private static void Write(IAnsiConsole console, List<(string Label, string Value)> rows)
    {
        var width = rows.Max(r => r.Label.Length) + 2;
        foreach (var (label, value) in rows)
        {
            console.MarkupLine($"[bold]{Markup.Escape(label.PadRight(width))}[/]{Markup.Escape(value)}");
        }
    }

    private static string EngineVersion()
    {
        var assembly = typeof(IBackend).Assembly;
        return assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
            ?? assembly.GetName().Version?.ToString()
            ?? "unknown";
    }

    /// <summary>The widest SIMD the CPU backend's vector code runs with.</summary>
    private static string Simd()
    {
        var isa = Vector512.IsHardwareAccelerated ? "AVX-512"
            : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "AVX2"
            : System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported ? "NEON"
            : Vector.IsHardwareAccelerated ? "SIMD" : "no SIMD";
        return $"{isa} ({Vector<float>.Count} floats per Vector<T>)";
    }

    private static string Gib(long bytes) => $"{bytes / (double)(1L << 30):F1} GiB";
}
