namespace NativeContrast.Bench;

using System.Runtime.InteropServices;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Losses;
using NativeContrast.Tensors;

/// <summary>
/// The fused contrastive kernels against the unfused composition (cuBLAS GEMM + separate ops, what PyTorch does):
/// NT-Xent forward + backward at 2N = 8192 and 262144 (d = 128), InfoNCE with dq at B = 256, K = 65536, d = 128,
/// each in TF32 and BF16. Floors come from the same run: FLOPs over the rate cuBLAS reaches on a large square GEMM
/// of that precision (BF16: bf16 operands, as the peer's torch.matmul), bytes over the bandwidth of a device-to-device
/// copy. Peak memory is the drop in free device memory while the case's tensors, workspaces and lazily created buffers
/// exist.
/// </summary>
public sealed class ContrastiveBench : IBenchSuite
{
    private const int Dim = 128;
    private const float Temperature = 0.1f;
    private static readonly MatmulPrecision[] Precisions = [MatmulPrecision.Tf32, MatmulPrecision.Bf16];

    public string Name => "contrastive";

    public string Description => "fused NT-Xent / InfoNCE kernels vs the unfused composition, with floors";

    public string ResultsName => "kernels";

    public bool NeedsGpu => true;

    public void Run(BenchContext context)
    {
        var gpu = context.Gpu ?? throw new InvalidOperationException("the contrastive suite needs a GPU");
        using var timer = new GpuTimer(gpu.Stream);
        var repetitions = context.Quick ? 5 : 30;
        var bandwidth = CopyBandwidth(gpu, timer, context.Quick);
        Console.WriteLine($"   device-to-device copy: {bandwidth / 1e9:F0} GB/s");
        var gemmRates = Precisions.ToDictionary(p => p, p => GemmRate(gpu, timer, p, context.Quick));
        foreach (var (precision, rate) in gemmRates)
        {
            Console.WriteLine($"   cuBLAS {precision} GEMM: {rate / 1e12:F0} TFLOP/s");
        }

        var rowCounts = context.Quick ? new[] { 2048, 16384 } : [8192, 262144];
        foreach (var rows in rowCounts)
        {
            foreach (var precision in Precisions)
            {
                NtXent(context, gpu, timer, rows, precision, bandwidth, gemmRates[precision], repetitions);
            }
        }
        var queueLength = context.Quick ? 8192 : 65536;
        foreach (var precision in Precisions)
        {
            InfoNce(context, gpu, timer, 256, queueLength, precision, bandwidth, gemmRates[precision], repetitions);
        }
    }

    private static void NtXent(BenchContext context, CudaBackend gpu, GpuTimer timer, int rows, MatmulPrecision precision, double bandwidth, double gemmRate, int repetitions)
    {
        var name = $"2N={rows} d={Dim} {Label(precision)} fwd+bwd";
        var flops = 3.0 * 2.0 * rows * (double)rows * Dim;
        var bytes = 3.0 * rows * Dim * sizeof(float);
        var floor = Floor(flops, gemmRate, bytes, bandwidth);
        var reps = rows > 65536 ? Math.Min(repetitions, 5) : repetitions;

        var free = gpu.Context.MemoryInfo().FreeBytes;
        using (var z = Random(gpu, rows, Dim, seed: 1))
        using (var dz = gpu.Allocate(new TensorShape(rows, Dim), "dz"))
        using (var loss = new NtXentLoss(gpu, rows, Dim, Temperature, precision))
        {
            var ms = timer.MedianMs(() => { loss.Forward(z); loss.Backward(z, dz); }, warmup: 2, repetitions: reps);
            var peak = free - gpu.Context.MemoryInfo().FreeBytes;
            context.Add(Record("ntxent", name, "ours-fused", ms, peak, context, flops, floor,
                $"workspace {loss.WorkspaceBytes / (1 << 20)} MiB; {loss.ReadStats()}"));
        }

        // The composition holds two 2N x 2N fp32 matrices: beyond what fits, only the fused kernel runs.
        var unfusedBytes = 2.0 * rows * rows * sizeof(float);
        if (unfusedBytes > 0.8 * gpu.Context.MemoryInfo().FreeBytes)
        {
            Console.WriteLine($"   {name}: ours-unfused skipped, needs {unfusedBytes / (1L << 30):F0} GiB for the similarity matrices");
            return;
        }
        free = gpu.Context.MemoryInfo().FreeBytes;
        using (var z = Random(gpu, rows, Dim, seed: 1))
        using (var dz = gpu.Allocate(new TensorShape(rows, Dim), "dz"))
        using (var unfused = new UnfusedNtXent(gpu, rows, Dim, Temperature, precision))
        {
            var ms = timer.MedianMs(() => { unfused.Forward(z); unfused.Backward(dz); }, warmup: 2, repetitions: reps);
            var peak = free - gpu.Context.MemoryInfo().FreeBytes;
            context.Add(Record("ntxent", name, "ours-unfused", ms, peak, context, flops, floor, "cuBLAS GEMMs + separate row ops"));
        }
    }

    private static void InfoNce(BenchContext context, CudaBackend gpu, GpuTimer timer, int batch, int queueLength, MatmulPrecision precision, double bandwidth, double gemmRate, int repetitions)
    {
        var name = $"B={batch} K={queueLength} d={Dim} {Label(precision)} loss+dq";
        var flops = 2.0 * 2.0 * batch * (double)queueLength * Dim;
        var queueBytes = (double)queueLength * Dim * sizeof(float);
        var floor = Floor(flops, gemmRate, queueBytes, bandwidth);
        var queueRead = queueBytes / bandwidth * 1e3;

        var free = gpu.Context.MemoryInfo().FreeBytes;
        using (var q = Random(gpu, batch, Dim, seed: 2))
        using (var k = Random(gpu, batch, Dim, seed: 3))
        using (var keys = Random(gpu, queueLength, Dim, seed: 4))
        using (var dq = gpu.Allocate(new TensorShape(batch, Dim), "dq"))
        using (var loss = new InfoNceLoss(gpu, batch, Dim, queueLength, Temperature, precision))
        {
            loss.Enqueue(keys);
            var ms = timer.MedianMs(() => loss.Compute(q, k, dq), warmup: 3, repetitions: repetitions);
            var peak = free - gpu.Context.MemoryInfo().FreeBytes;
            context.Add(Record("infonce", name, "ours-fused", ms, peak, context, flops, floor,
                $"reading the fp32 queue once: {queueRead:F4} ms ({ms / queueRead:F2}x); {loss.ReadStats()}"));
        }

        free = gpu.Context.MemoryInfo().FreeBytes;
        using (var q = Random(gpu, batch, Dim, seed: 2))
        using (var k = Random(gpu, batch, Dim, seed: 3))
        using (var keys = Random(gpu, queueLength, Dim, seed: 4))
        using (var dq = gpu.Allocate(new TensorShape(batch, Dim), "dq"))
        using (var queue = gpu.CreateKeyQueue(queueLength, Dim))
        using (var unfused = new UnfusedInfoNce(gpu, batch, Dim, queueLength, Temperature, precision))
        {
            gpu.EnqueueKeys(queue, keys);
            var ms = timer.MedianMs(() => unfused.Compute(q, k, queue, dq), warmup: 3, repetitions: repetitions);
            var peak = free - gpu.Context.MemoryInfo().FreeBytes;
            context.Add(Record("infonce", name, "ours-unfused", ms, peak, context, flops, floor,
                $"reading the fp32 queue once: {queueRead:F4} ms ({ms / queueRead:F2}x)"));
        }
    }

    private static BenchRecord Record(string kernel, string name, string impl, double ms, long peak, BenchContext context, double flops, double floor, string note) => new()
    {
        Kernel = kernel,
        Case = name,
        Impl = impl,
        MedianMs = ms,
        PeakBytes = peak,
        Gpu = context.DeviceName,
        FloorMs = floor,
        Tflops = flops / (ms * 1e-3) / 1e12,
        Note = note,
    };

    /// <summary>max(FLOPs / GEMM rate, bytes / bandwidth) in milliseconds.</summary>
    private static double Floor(double flops, double flopsPerSecond, double bytes, double bytesPerSecond) =>
        Math.Max(flops / flopsPerSecond, bytes / bytesPerSecond) * 1e3;

    private static string Label(MatmulPrecision precision) => precision.ToString().ToLowerInvariant();

    /// <summary>Bytes per second of a device-to-device copy (read + write).</summary>
    private static double CopyBandwidth(CudaBackend gpu, GpuTimer timer, bool quick)
    {
        var length = quick ? 16 << 20 : 128 << 20;
        using var source = gpu.Allocate(new TensorShape(length));
        using var destination = gpu.Allocate(new TensorShape(length));
        var ms = timer.MedianMs(() => gpu.Copy(source, destination), warmup: 3, repetitions: quick ? 5 : 20);
        return 2.0 * length * sizeof(float) / (ms * 1e-3);
    }

    /// <summary>
    /// FLOPs per second cuBLAS reaches on a square GEMM of this precision: the attainable tensor-core rate. TF32: fp32
    /// operands, fp32 out, CUBLAS_COMPUTE_32F_FAST_TF32 (the engine's Gemm). BF16: bf16 operands and a bf16 result with
    /// fp32 accumulation (cublasGemmEx, CUDA_R_16BF, CUBLAS_COMPUTE_32F), what torch.matmul of bf16 tensors runs in the
    /// peer, rather than the engine's Gemm at Bf16, which takes fp32 operands (CUBLAS_COMPUTE_32F_FAST_16BF) and
    /// converts them on the way.
    /// </summary>
    private static double GemmRate(CudaBackend gpu, GpuTimer timer, MatmulPrecision precision, bool quick)
    {
        var n = quick ? 2048 : 8192;
        if (precision == MatmulPrecision.Bf16)
        {
            return Bf16GemmRate(gpu, timer, n, quick);
        }
        using var a = Random(gpu, n, n, seed: 5);
        using var b = Random(gpu, n, n, seed: 6);
        using var c = gpu.Allocate(new TensorShape(n, n));
        var saved = gpu.GemmPrecision;
        gpu.GemmPrecision = precision;
        try
        {
            var ms = timer.MedianMs(() => gpu.Gemm(a, false, b, false, c), warmup: 3, repetitions: quick ? 5 : 20);
            return 2.0 * n * (double)n * n / (ms * 1e-3);
        }
        finally
        {
            gpu.GemmPrecision = saved;
        }
    }

    /// <summary>FLOPs per second of an n×n×n GEMM of bf16 operands into bf16 with fp32 accumulation, on the backend's cuBLAS handle and stream.</summary>
    private static unsafe double Bf16GemmRate(CudaBackend gpu, GpuTimer timer, int n, bool quick)
    {
        using var a = RandomBf16(gpu, n * n, seed: 5);
        using var b = RandomBf16(gpu, n * n, seed: 6);
        using var c = gpu.Allocate(new TensorShape(n * n / 2), "bf16 product");  // n² bf16 values in n²/2 floats
        ulong pa = a.DevicePointer(), pb = b.DevicePointer(), pc = c.DevicePointer();
        var handle = gpu.Blas.Handle;
        void Gemm()
        {
            float alpha = 1f, beta = 0f;
            gpu.Context.MakeCurrent();
            CudaCheck.Cublas(
                CublasApi.cublasGemmEx(
                    handle, CublasApi.OpN, CublasApi.OpN, n, n, n,
                    &alpha, pb, CublasApi.DataBFloat16, n, pa, CublasApi.DataBFloat16, n,
                    &beta, pc, CublasApi.DataBFloat16, n, CublasApi.Compute32F, CublasApi.GemmDefault),
                $"cublasGemmEx(bf16, n={n})");
        }
        var ms = timer.MedianMs(Gemm, warmup: 3, repetitions: quick ? 5 : 20);
        return 2.0 * n * (double)n * n / (ms * 1e-3);
    }

    /// <summary>count bf16 values, uniform in [-1, 1) (the top half of each fp32 value), packed two to a float of a device tensor.</summary>
    private static Tensor RandomBf16(CudaBackend gpu, int count, int seed)
    {
        var values = new ushort[count];
        var rng = new Random(seed);
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = (ushort)(BitConverter.SingleToUInt32Bits((float)((rng.NextDouble() * 2) - 1)) >> 16);
        }
        var t = gpu.Allocate(new TensorShape(count / 2), "bf16 operand");
        gpu.CopyFromHost(MemoryMarshal.Cast<ushort, float>(values), t);
        return t;
    }

    private static Tensor Random(CudaBackend gpu, int rows, int cols, int seed)
    {
        var values = new float[(long)rows * cols];
        var rng = new Random(seed);
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = (float)((rng.NextDouble() * 2) - 1);
        }
        var t = gpu.Allocate(new TensorShape(rows, cols));
        gpu.CopyFromHost(values, t);
        return t;
    }
}
