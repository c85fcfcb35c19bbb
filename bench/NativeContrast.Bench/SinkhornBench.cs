namespace NativeContrast.Bench;

using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>
/// Sinkhorn-Knopp codes: the fused cooperative kernel (ours-fused) against the multi-pass launches (ours-unfused),
/// and the fused swapped-prediction loss with its gradient. floor_ms is one read of the inputs and one write of the
/// outputs at the device-to-device copy bandwidth measured in the same run. The PyTorch peer is
/// bench/reference/sinkhorn.py (same kernel and case names).
/// </summary>
public sealed class SinkhornBench : IBenchSuite
{
    private const float Epsilon = 0.05f;
    private const float Temperature = 0.1f;

    /// <summary>SwAV's size (B = 4096, K = 3000), one that fits on chip, a bigger batch, and DINOv2-like K (multi-pass only).</summary>
    private static readonly (int Rows, int Cols, int Iterations)[] Cases = [(4096, 3000, 3), (1024, 3000, 3), (8192, 3000, 3), (1024, 65536, 3)];

    private static readonly (int Rows, int Cols, int Iterations)[] QuickCases = [(1024, 3000, 3)];

    public string Name => "sinkhorn";

    public string Description => "Sinkhorn-Knopp codes (fused cooperative vs multi-pass) and the swapped loss, vs bytes / bandwidth";

    public string ResultsName => "kernels";

    public bool NeedsGpu => true;

    public static string CaseName(int rows, int cols, int iterations) => $"B{rows} K{cols} it{iterations}";

    public void Run(BenchContext context)
    {
        var gpu = context.Gpu!;
        var repetitions = context.Quick ? 10 : 50;
        using var timer = new GpuTimer(gpu.Stream);
        var bandwidth = MeasureCopyBandwidth(gpu, timer, repetitions);
        Console.WriteLine($"   device-to-device copy: {bandwidth / 1e9:F0} GB/s");
        foreach (var (rows, cols, iterations) in context.Quick ? QuickCases : Cases)
        {
            RunCodes(context, gpu, timer, bandwidth, rows, cols, iterations, repetitions);
        }
        var (lossRows, lossCols) = context.Quick ? (1024, 3000) : (4096, 3000);
        RunSwappedLoss(context, gpu, timer, bandwidth, lossRows, lossCols, repetitions);
    }

    /// <summary>Bytes per second of a large device-to-device copy (read + write counted).</summary>
    private static double MeasureCopyBandwidth(CudaBackend gpu, GpuTimer timer, int repetitions)
    {
        const int length = 64 << 20;  // 256 MiB per buffer: far beyond L2
        using var source = gpu.Allocate(new TensorShape(length), "copy source");
        using var destination = gpu.Allocate(new TensorShape(length), "copy destination");
        var ms = timer.MedianMs(() => gpu.Copy(source, destination), repetitions: repetitions);
        return 2.0 * length * sizeof(float) / (ms * 1e-3);
    }

    private static void RunCodes(BenchContext context, CudaBackend gpu, GpuTimer timer, double bandwidth, int rows, int cols, int iterations, int repetitions)
    {
        var shape = new TensorShape(rows, cols);
        using var scores = gpu.Allocate(shape, "scores");
        using var codes = gpu.Allocate(shape, "codes");
        using var workspace = gpu.Allocate(new TensorShape(checked((int)gpu.SinkhornWorkspaceLength(rows, cols))), "workspace");
        gpu.CopyFromHost(Uniform(scores.Length, seed: 1, low: -1f, high: 1f), scores);  // the range of cosine scores
        var matrixBytes = (long)rows * cols * sizeof(float);
        var floorMs = 2.0 * matrixBytes / bandwidth * 1e3;
        var peak = (2 * matrixBytes) + (workspace.Length * sizeof(float));
        var name = CaseName(rows, cols, iterations);

        var plan = gpu.PlanSinkhorn(rows, cols);
        if (plan is not null)
        {
            gpu.SinkhornPath = SinkhornPath.Fused;
            var ms = timer.MedianMs(() => gpu.SinkhornCodes(scores, codes, workspace, Epsilon, iterations, SinkhornOutput.Assignments), repetitions: repetitions);
            context.Add(Record(context, name, "ours-fused", ms, peak, floorMs, matrixBytes, plan.ToString()));
        }
        gpu.SinkhornPath = SinkhornPath.MultiPass;
        var unfusedMs = timer.MedianMs(() => gpu.SinkhornCodes(scores, codes, workspace, Epsilon, iterations, SinkhornOutput.Assignments), repetitions: repetitions);
        context.Add(Record(context, name, "ours-unfused", unfusedMs, peak, floorMs, matrixBytes, $"multi-pass: {3 * iterations} launches, {2 * iterations} reads of the scores (the last row step re-reads its row, from L2, to write the codes)"));
        gpu.SinkhornPath = SinkhornPath.Auto;
    }

    private static void RunSwappedLoss(BenchContext context, CudaBackend gpu, GpuTimer timer, double bandwidth, int rows, int cols, int repetitions)
    {
        var shape = new TensorShape(rows, cols);
        using var scores = gpu.Allocate(shape, "scores");
        using var codes = gpu.Allocate(shape, "codes");
        using var gradient = gpu.Allocate(shape, "gradient");
        using var loss = gpu.Allocate(new TensorShape(1), "loss");
        using var perSample = gpu.Allocate(new TensorShape(rows), "per-sample");
        gpu.CopyFromHost(Uniform(scores.Length, seed: 2, low: -1f, high: 1f), scores);
        gpu.CopyFromHost(Uniform(codes.Length, seed: 3, low: 0f, high: 2f / cols), codes);
        var matrixBytes = (long)rows * cols * sizeof(float);
        // Reads scores and codes, writes the gradient.
        var floorMs = 3.0 * matrixBytes / bandwidth * 1e3;
        var ms = timer.MedianMs(() => gpu.SwappedPredictionLoss(scores, codes, Temperature, loss, perSample, gradient), repetitions: repetitions);
        var peak = (3 * matrixBytes) + ((rows + 1L) * sizeof(float));
        context.Add(new BenchRecord
        {
            Kernel = "swapped-loss",
            Case = $"B{rows} K{cols}",
            Impl = "ours-fused",
            MedianMs = ms,
            PeakBytes = peak,
            Gpu = context.DeviceName,
            FloorMs = floorMs,
            Gbps = 3.0 * matrixBytes / (ms * 1e-3) / 1e9,
            Note = "loss + gradient w.r.t. the scores, one block per row",
        });
    }

    private static float[] Uniform(long length, int seed, float low, float high)
    {
        var rng = new Random(seed);
        var values = new float[length];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = low + ((high - low) * rng.NextSingle());
        }
        return values;
    }

    private static BenchRecord Record(BenchContext context, string name, string impl, double ms, long peak, double floorMs, long matrixBytes, string note) => new()
    {
        Kernel = "sinkhorn",
        Case = name,
        Impl = impl,
        MedianMs = ms,
        PeakBytes = peak,
        Gpu = context.DeviceName,
        FloorMs = floorMs,
        Gbps = 2.0 * matrixBytes / (ms * 1e-3) / 1e9,
        Note = note,
    };
}
