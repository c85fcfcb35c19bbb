namespace NativeContrast.Bench;

using NativeContrast.Backends;
using NativeContrast.Cuda;

/// <summary>A family of benchmarks; its records go to bench/results/&lt;ResultsName&gt;-&lt;gpu or host&gt;.json.</summary>
public interface IBenchSuite
{
    string Name { get; }

    string Description { get; }

    /// <summary>"kernels" for kernel and model-step suites, "augment" for the data pipeline, "cpu" for CPU training steps.</summary>
    string ResultsName { get; }

    /// <summary>True when the suite measures GPU work and is skipped without a device.</summary>
    bool NeedsGpu { get; }

    void Run(BenchContext context);
}

/// <summary>What a suite runs on and where its records go.</summary>
public sealed class BenchContext(CpuBackend cpu, CudaBackend? gpu, bool quick, bool profile = false)
{
    public CpuBackend Cpu { get; } = cpu;

    public CudaBackend? Gpu { get; } = gpu;

    /// <summary>Smaller sizes and fewer repetitions, for a smoke run on a CPU-only machine.</summary>
    public bool Quick { get; } = quick;

    /// <summary>Also print where the time goes, op by op (suites that support it: cpu).</summary>
    public bool Profile { get; } = profile;

    /// <summary>The device name recorded in each record's "gpu" field ("cpu-only" without one).</summary>
    public string DeviceName => Gpu?.Info.Name ?? "cpu-only";

    public List<BenchRecord> Records { get; } = [];

    public void Add(BenchRecord record)
    {
        Records.Add(record);
        var floor = record.FloorMs is { } f ? $"  floor {f,9:F4} ms ({record.MedianMs / f:F2}x)" : string.Empty;
        Console.WriteLine($"{record.Kernel,-16} {record.Case,-34} {record.Impl,-14} {record.MedianMs,10:F4} ms{floor}  peak {record.PeakBytes / (1 << 20),6} MiB");
    }
}

public static class Program
{
    /// <summary>Every suite; a new family adds its suite here.</summary>
    private static readonly IBenchSuite[] Suites =
    [
        new CoreBench(),
        new ContrastiveBench(),
        new SinkhornBench(),
        new OptimBench(),
        new ResNetBench(),
        new AugmentBench(),
        new CpuBench(),
    ];

    public static int Main(string[] args)
    {
        var quick = args.Contains("--quick");
        var profile = args.Contains("--profile");
        var resultsDir = ArgValue(args, "--results") ?? Path.Combine(FindRepoRoot(), "bench", "results");
        var names = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal) && a != ArgValue(args, "--results")).ToList();
        if (names.Count == 0 || names.Contains("list"))
        {
            Console.WriteLine("usage: NativeContrast.Bench <suite...|all|gpu> [--quick] [--profile] [--results DIR]   (gpu: every suite that needs a GPU)");
            foreach (var s in Suites)
            {
                Console.WriteLine($"  {s.Name,-12} {s.Description}");
            }
            return names.Count == 0 ? 2 : 0;
        }
        var selected = names.Contains("all") ? Suites : Suites.Where(s => names.Contains(s.Name) || (s.NeedsGpu && names.Contains("gpu"))).ToArray();
        var unknown = names.Where(n => n != "all" && n != "gpu" && Suites.All(s => s.Name != n)).ToList();
        if (unknown.Count > 0)
        {
            Console.Error.WriteLine($"unknown suite(s): {string.Join(", ", unknown)}; run with 'list' to see them");
            return 2;
        }

        using var cpu = new CpuBackend();
        var why = CudaProbe.WhyUnavailable();
        using var gpu = why is null ? new CudaBackend() : null;
        Console.WriteLine(gpu is null ? $"device: none ({why})" : $"device: {gpu.Name}");
        foreach (var suite in selected)
        {
            if (suite.NeedsGpu && gpu is null)
            {
                Console.WriteLine($"== {suite.Name}: skipped, needs a GPU");
                continue;
            }
            Console.WriteLine($"== {suite.Name}");
            var context = new BenchContext(cpu, gpu, quick, profile);
            suite.Run(context);
            var host = suite.NeedsGpu ? ResultsFile.Slug(context.DeviceName) : ResultsFile.CpuHost();
            var path = Path.Combine(resultsDir, $"{suite.ResultsName}-{host}.json");
            ResultsFile.Append(path, context.Records);
            Console.WriteLine($"   {context.Records.Count} records appended to {path}");
        }
        return 0;
    }

    private static string? ArgValue(string[] args, string flag)
    {
        var i = Array.IndexOf(args, flag);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "NativeContrast.sln")))
            {
                return dir.FullName;
            }
        }
        return Directory.GetCurrentDirectory();
    }
}
