namespace NativeContrast.Bench;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// The core kernels (elementwise, sums, softmax/LSE, L2 normalise, Philox): all memory-bound, so each time is printed
/// beside its floor, the bytes the op must move over the device-to-device copy bandwidth measured in the same run.
/// bench/reference/core.py times the same cases in PyTorch.
/// </summary>
public sealed class CoreBench : IBenchSuite
{
    public string Name => "core";

    public string Description => "elementwise, sums, softmax/LSE, L2 normalise, Philox: time vs bytes / copy bandwidth";

    public string ResultsName => "kernels";

    public bool NeedsGpu => true;

    public void Run(BenchContext context)
    {
        var gpu = context.Gpu!;
        using var timer = new GpuTimer(gpu.Stream);
        var quick = context.Quick;
        var repetitions = quick ? 5 : 50;
        long n = quick ? 1 << 20 : 1 << 26;
        var (tallRows, tallCols) = quick ? (4096, 256) : (65536, 1024);
        var (wideRows, wideCols) = quick ? (16, 8192) : (256, 65536);
        var (logitRows, logitCols) = quick ? (512, 512) : (8192, 8192);
        var (embedRows, embedCols) = quick ? (1024, 128) : (8192, 128);

        var bandwidth = MeasureCopyBandwidth(gpu, timer, n, repetitions);
        Console.WriteLine($"   device-to-device copy: {bandwidth / 1e9:F0} GB/s (the floor of every row below)");

        void Record(string kernel, string @case, double ms, long bytes) => context.Add(new BenchRecord
        {
            Kernel = kernel,
            Case = @case,
            Impl = "ours",
            MedianMs = ms,
            PeakBytes = bytes,
            Gpu = context.DeviceName,
            FloorMs = bytes / bandwidth * 1e3,
            Gbps = bytes / (ms * 1e-3) / 1e9,
        });

        var vector = new TensorShape(checked((int)n));
        using (var x = gpu.Allocate(vector))
        using (var y = gpu.Allocate(vector))
        using (var z = gpu.Allocate(vector))
        using (var sum = gpu.Allocate(new TensorShape(1)))
        {
            gpu.RandomNormal(x, 1, 0);
            gpu.RandomNormal(y, 2, 0);
            var bytes = n * sizeof(float);
            var @case = $"n={n}";
            Record("add", @case, timer.MedianMs(() => gpu.Add(x, y, z), repetitions: repetitions), 3 * bytes);
            Record("axpy", @case, timer.MedianMs(() => gpu.Axpy(1e-3f, x, y), repetitions: repetitions), 3 * bytes);
            Record("relu", @case, timer.MedianMs(() => gpu.Relu(x, z), repetitions: repetitions), 2 * bytes);
            Record("relu_backward", @case, timer.MedianMs(() => gpu.ReluBackward(z, y, x), repetitions: repetitions), 3 * bytes);
            Record("sum", @case, timer.MedianMs(() => gpu.Sum(y, sum), repetitions: repetitions), bytes);
            Record("philox_uniform", @case, timer.MedianMs(() => gpu.RandomUniform(z, 7, 0), repetitions: repetitions), bytes);
            Record("philox_normal", @case, timer.MedianMs(() => gpu.RandomNormal(z, 7, 0), repetitions: repetitions), bytes);
        }

        foreach (var (rows, cols) in new[] { (tallRows, tallCols), (wideRows, wideCols) })
        {
            using var x = gpu.Allocate(new TensorShape(rows, cols));
            using var rowSums = gpu.Allocate(new TensorShape(rows));
            using var columnSums = gpu.Allocate(new TensorShape(cols));
            gpu.RandomNormal(x, 3, 0);
            var bytes = (long)rows * cols * sizeof(float);
            Record("sum_rows", $"{rows}x{cols}", timer.MedianMs(() => gpu.SumRows(x, rowSums), repetitions: repetitions), bytes + (rows * sizeof(float)));
            Record("sum_columns", $"{rows}x{cols}", timer.MedianMs(() => gpu.SumColumns(x, columnSums), repetitions: repetitions), bytes + (cols * sizeof(float)));
        }

        foreach (var (rows, cols) in new[] { (logitRows, logitCols), (embedRows, 1000) })
        {
            using var x = gpu.Allocate(new TensorShape(rows, cols));
            using var y = gpu.Allocate(new TensorShape(rows, cols));
            using var lse = gpu.Allocate(new TensorShape(rows));
            gpu.RandomNormal(x, 4, 0, std: 5f);
            var bytes = (long)rows * cols * sizeof(float);
            Record("softmax_rows", $"{rows}x{cols}", timer.MedianMs(() => gpu.SoftmaxRows(x, y), repetitions: repetitions), 2 * bytes);
            Record("logsumexp_rows", $"{rows}x{cols}", timer.MedianMs(() => gpu.LogSumExpRows(x, lse), repetitions: repetitions), bytes + (rows * sizeof(float)));
        }

        foreach (var (rows, cols) in new[] { (embedRows, embedCols), (tallRows, 2048) })
        {
            using var x = gpu.Allocate(new TensorShape(rows, cols));
            using var y = gpu.Allocate(new TensorShape(rows, cols));
            using var dy = gpu.Allocate(new TensorShape(rows, cols));
            using var dx = gpu.Allocate(new TensorShape(rows, cols));
            using var norms = gpu.Allocate(new TensorShape(rows));
            gpu.RandomNormal(x, 5, 0);
            gpu.RandomNormal(dy, 6, 0);
            var bytes = (long)rows * cols * sizeof(float);
            Record("l2_normalize", $"{rows}x{cols}", timer.MedianMs(() => gpu.L2NormalizeRows(x, y, norms), repetitions: repetitions), 2 * bytes);
            Record("l2_normalize_backward", $"{rows}x{cols}", timer.MedianMs(() => gpu.L2NormalizeRowsBackward(y, norms, dy, dx), repetitions: repetitions), 3 * bytes);
        }
    }

    /// <summary>Bytes per second of a device-to-device copy (read + write) of n floats: the practical bandwidth ceiling.</summary>
    private static double MeasureCopyBandwidth(CudaBackend gpu, GpuTimer timer, long n, int repetitions)
    {
        using var source = gpu.Allocate(new TensorShape(checked((int)n)));
        using var destination = gpu.Allocate(new TensorShape(checked((int)n)));
        var ms = timer.MedianMs(() => gpu.Copy(source, destination), repetitions: repetitions);
        return 2.0 * n * sizeof(float) / (ms * 1e-3);
    }
}
