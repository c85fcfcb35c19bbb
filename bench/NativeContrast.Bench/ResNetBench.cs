namespace NativeContrast.Bench;

using NativeContrast.Backends;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// A whole training step of a torchvision ResNet with a classifier: zero the gradients, forward (training mode),
/// softmax cross-entropy, backward, and an SGD step (θ ← θ − lr·∇θ, one Axpy over the arena).
/// ResNet-18 with the CIFAR stem on 32×32×3 at batch 512; ResNet-50 on 224×224×3 at batch 128.
/// Reported: images/s, peak device memory of the model (arena, packed weights, plan), and the floor: the step's
/// FLOPs over the throughput of a large GEMM at the same precision measured in the same run.
/// Peer: bench/reference/resnet.py (PyTorch eager TF32 / bf16 AMP / torch.compile, channels_last).
/// </summary>
public sealed class ResNetBench : IBenchSuite
{
    public string Name => "resnet";

    public string Description => "ResNet-18 (CIFAR, b512) and ResNet-50 (224, b128) training steps: images/s, peak memory";

    public string ResultsName => "kernels";

    public bool NeedsGpu => true;

    public void Run(BenchContext context)
    {
        var gpu = context.Gpu!;
        var quick = context.Quick;
        (string Kernel, ResNetOptions Options, int Size, int Batch, int Classes)[] cases =
        [
            ("resnet18-step", ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar }, 32, quick ? 64 : 512, 10),
            ("resnet50-step", ResNetOptions.ResNet50, 224, quick ? 16 : 128, 1000),
        ];
        foreach (var precision in new[] { MatmulPrecision.Tf32, MatmulPrecision.Fp32 })
        {
            gpu.GemmPrecision = precision;
            var gemmTflops = MeasureGemmTflops(gpu, quick ? 4096 : 8192);
            foreach (var (kernel, options, size, batch, classes) in cases)
            {
                var record = Step(gpu, kernel, options, size, batch, classes, quick, gemmTflops);
                context.Add(record with
                {
                    Impl = precision == MatmulPrecision.Tf32 ? "ours-fused" : "ours-fused-fp32",
                    Note = $"{precision}; BN+ReLU(+residual) fused, im2col + cuBLAS; floor = FLOPs at {gemmTflops:F0} TFLOP/s (measured GEMM)",
                });
            }
        }
        gpu.GemmPrecision = MatmulPrecision.Tf32;
    }

    private static BenchRecord Step(CudaBackend gpu, string kernel, ResNetOptions options, int size, int batch, int classes, bool quick, double gemmTflops)
    {
        gpu.Synchronize();
        var (freeBefore, _) = gpu.Context.MemoryInfo();
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, options);
        var fc = LinearHead.Classifier(layout, encoder.FeatureDim, classes);
        using var model = new Sequential(encoder, fc);
        using var arena = new ParameterArena(gpu, layout, optimizerStateSlots: 0);
        model.Bind(arena);
        model.Initialize(seed: 0);
        var input = new TensorShape(batch, size, size, 3);
        using var plan = model.Plan(input);
        using var images = gpu.Allocate(input, "images");
        using var labels = gpu.Allocate(new TensorShape(batch), "labels");
        using var xent = new SoftmaxCrossEntropy(gpu, batch, classes);
        gpu.RandomNormal(images, seed: 1, offset: 0);
        var rng = new Random(2);
        gpu.CopyFromHost([.. Enumerable.Range(0, batch).Select(_ => (float)rng.Next(classes))], labels);

        void TrainingStep()
        {
            gpu.Fill(arena.Gradients, 0f);
            var logits = plan.Forward(images, training: true);
            xent.Forward(logits, labels);
            plan.Backward(xent.Backward(logits, labels));
            gpu.Axpy(-0.01f, arena.Gradients, arena.TrainableValues);
        }

        TrainingStep();
        gpu.Synchronize();
        var (freeAfter, _) = gpu.Context.MemoryInfo();
        using var timer = new GpuTimer(gpu.Stream);
        var ms = timer.MedianMs(TrainingStep, warmup: 3, repetitions: quick ? 5 : 20);
        var flops = StepFlops.Of(encoder, plan, batch, (double)fc.Linear.InFeatures * fc.Linear.OutFeatures);
        return new BenchRecord
        {
            Kernel = kernel,
            Case = $"{(options.Stem == ResNetStem.Cifar ? "cifar" : "imagenet")}-{size}x{size}x3-b{batch}",
            Impl = "ours-fused",
            MedianMs = ms,
            PeakBytes = freeBefore - freeAfter,
            Gpu = gpu.Info.Name,
            FloorMs = flops / (gemmTflops * 1e9),
            Tflops = flops / (ms * 1e9),
            Throughput = batch / (ms / 1000),
            ThroughputUnit = "images/s",
        };
    }

    /// <summary>TFLOP/s of an n×n×n GEMM at the backend's precision: the attainable peak the floor divides by.</summary>
    private static double MeasureGemmTflops(CudaBackend gpu, int n)
    {
        using var a = gpu.Allocate(new TensorShape(n, n));
        using var b = gpu.Allocate(new TensorShape(n, n));
        using var c = gpu.Allocate(new TensorShape(n, n));
        gpu.RandomNormal(a, 3, 0);
        gpu.RandomNormal(b, 4, 0);
        using var timer = new GpuTimer(gpu.Stream);
        var ms = timer.MedianMs(() => gpu.Gemm(a, false, b, false, c), warmup: 3, repetitions: 10);
        return 2.0 * n * n * n / (ms * 1e9);
    }
}
