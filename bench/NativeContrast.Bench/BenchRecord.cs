namespace NativeContrast.Bench;

using System.Text.Json;
using System.Text.Json.Serialization;

/// <summary>
/// One measured result, the schema shared with the PyTorch references in bench/reference/ (they write the same
/// fields). floor_ms is the napkin-math bound (bytes / bandwidth or FLOPs / peak) printed next to every timing.
/// </summary>
public sealed record BenchRecord
{
    [JsonPropertyName("kernel")] public required string Kernel { get; init; }
    [JsonPropertyName("case")] public required string Case { get; init; }
    [JsonPropertyName("impl")] public required string Impl { get; init; }
    [JsonPropertyName("median_ms")] public required double MedianMs { get; init; }
    [JsonPropertyName("peak_bytes")] public long PeakBytes { get; init; }
    [JsonPropertyName("gpu")] public required string Gpu { get; init; }
    [JsonPropertyName("floor_ms")] public double? FloorMs { get; init; }
    [JsonPropertyName("tflops")] public double? Tflops { get; init; }
    [JsonPropertyName("gbps")] public double? Gbps { get; init; }
    [JsonPropertyName("throughput")] public double? Throughput { get; init; }
    [JsonPropertyName("throughput_unit")] public string? ThroughputUnit { get; init; }
    [JsonPropertyName("note")] public string? Note { get; init; }
    [JsonPropertyName("timestamp")] public string Timestamp { get; init; } = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Reads and appends records in bench/results/&lt;name&gt;.json (a JSON list), writing through a temporary file.</summary>
public static class ResultsFile
{
    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    public static List<BenchRecord> Read(string path) =>
        File.Exists(path) ? JsonSerializer.Deserialize<List<BenchRecord>>(File.ReadAllText(path), Options) ?? [] : [];

    public static void Append(string path, IEnumerable<BenchRecord> records)
    {
        var all = Read(path);
        all.AddRange(records);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(all, Options));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>
    /// The CPU host of CPU-only records: the machine's name and its widest vector ISA ("vm-avx512", "vm-avx2"), since a
    /// shared VM's name stays while the CPU under it changes. The scripts' Python peers name the host the same way.
    /// </summary>
    public static string CpuHost() =>
        Slug(Environment.MachineName) + (System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? "-avx512" : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "-avx2" : "");

    /// <summary>A file-name-safe GPU name ("NVIDIA H100 80GB HBM3" → "nvidia-h100-80gb-hbm3").</summary>
    public static string Slug(string name) =>
        string.Join('-', name.ToLowerInvariant().Split([' ', '/', '(', ')', '_'], StringSplitOptions.RemoveEmptyEntries));
}
