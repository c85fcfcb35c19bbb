namespace NativeContrast.Bench;

using System.Diagnostics;
using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// Whole training steps on the CPU backend, fp32, timed by the wall clock (both sides use every core: the engine
/// through OpenBLAS's and .NET's threads, the peer through torch.set_num_threads(cores)):
/// <list type="bullet">
/// <item>resnet18-step: ResNet-18, CIFAR stem, 32×32×3, 10 classes, batch 32 and 128: zero the gradients, forward,
/// softmax cross-entropy, backward, SGD (momentum 0.9);</item>
/// <item>resnet18w025-step: the same at width 0.25 (the quality runs' backbone), batch 128;</item>
/// <item>simclr-step: two views of a batch of 64 through ResNet-18 width 0.25 + a 2-layer projector (128→512→128),
/// NT-Xent (τ 0.5), LARS;</item>
/// <item>infonce-queue: MoCo v2's loss alone, 128 queries (both views of a symmetric step at batch 64) against a queue of
/// 16,384 unit keys, d 128, τ 0.2: the loss and dq (the peer: the logits' matmul, cross-entropy and autograd);</item>
/// <item>masked-infonce: PiCO's label-masked InfoNCE alone at its defaults, 256 queries and their keys against a queue of
/// 8,192 labelled keys, 10 classes, d 128, τ 0.07: the loss and dq (the peer: PiCO's SupConLoss with autograd).</item>
/// </list>
/// Reported: median ms per step over several steps after a warm-up, images/s (a SimCLR step counts both views),
/// and the floor: the step's convolution and linear FLOPs at the sgemm throughput measured in the same run.
/// Peer: bench/reference/cpu.py; `bash bench/run-cpu.sh` runs both back to back. With --profile each case is timed
/// layer by layer (<see cref="CpuProfile"/>) and the layers are listed by their share of the step.
/// </summary>
public sealed class CpuBench : IBenchSuite
{
    public string Name => "cpu";

    public string Description => "CPU training steps (ResNet-18 CIFAR b32/b128, width-0.25 b128, SimCLR step) and the queue losses of MoCo and PiCO against PyTorch CPU";

    public string ResultsName => "cpu";

    public bool NeedsGpu => false;

    public void Run(BenchContext context)
    {
        var cpu = context.Cpu;
        var quick = context.Quick;
        var repetitions = quick ? 2 : 5;
        var gflops = MeasureGemmGflops(cpu, quick ? 512 : 1024);
        Console.WriteLine($"   {cpu.Libraries.Description}; sgemm {gflops:F0} GFLOP/s on {Environment.ProcessorCount} cores; load {LoadAverage()}");
        var resnet18 = ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar };
        var small = resnet18 with { WidthMultiplier = 0.25 };
        (string Kernel, ResNetOptions Options, int Batch)[] classifierCases =
        [
            ("resnet18-step", resnet18, 32),
            ("resnet18-step", resnet18, quick ? 64 : 128),
            ("resnet18w025-step", small, quick ? 64 : 128),
        ];
        foreach (var (kernel, options, batch) in classifierCases)
        {
            context.Add(Record(kernel, $"cifar-32x32x3-b{batch}", ClassifierStep(cpu, options, batch, repetitions, context.Profile), batch, gflops));
        }
        var viewBatch = quick ? 32 : 64;
        context.Add(Record("simclr-step", $"r18w025-32x32x3-2x{viewBatch}", SimClrStep(cpu, small, viewBatch, repetitions, context.Profile), 2 * viewBatch, gflops));
        context.Add(InfoNceQueue(cpu, queries: 128, queueLength: 16384, dim: 128, repetitions, gflops));
        context.Add(MaskedInfoNce(cpu, queries: 256, queueLength: 8192, dim: 128, classes: 10, repetitions, gflops));
    }

    private static BenchRecord MaskedInfoNce(CpuBackend cpu, int queries, int queueLength, int dim, int classes, int repetitions, double gflops)
    {
        using var q = cpu.Allocate(new TensorShape(queries, dim), "q");
        using var k = cpu.Allocate(new TensorShape(queries, dim), "k");
        using var keys = cpu.Allocate(new TensorShape(queueLength, dim), "keys");
        using var labels = cpu.Allocate(new TensorShape(queries), "labels");
        using var keyLabels = cpu.Allocate(new TensorShape(queueLength), "key labels");
        using var dq = cpu.Allocate(new TensorShape(queries, dim), "dq");
        cpu.RandomNormal(q, seed: 2, offset: 0);
        cpu.RandomNormal(k, seed: 3, offset: 0);
        cpu.RandomNormal(keys, seed: 4, offset: 0);
        var rng = new Random(5);
        cpu.CopyFromHost([.. Enumerable.Range(0, queries).Select(_ => (float)rng.Next(classes))], labels);
        cpu.CopyFromHost([.. Enumerable.Range(0, queueLength).Select(_ => (float)rng.Next(classes))], keyLabels);
        using var loss = new LabelMaskedInfoNceLoss(cpu, queries, dim, queueLength, temperature: 0.07f);
        loss.Enqueue(keys, keyLabels);
        var ms = MedianMs(() => loss.Compute(q, k, labels, dq), repetitions);
        var flops = 2.0 * 2.0 * queries * (2.0 * queries + queueLength) * dim;
        return QueueLossRecord("masked-infonce", $"B={queries} K={queueLength} d={dim} classes={classes} loss+dq", ms, flops, queries, gflops, "four", loss.WorkspaceBytes);
    }

    private static BenchRecord InfoNceQueue(CpuBackend cpu, int queries, int queueLength, int dim, int repetitions, double gflops)
    {
        using var q = cpu.Allocate(new TensorShape(queries, dim), "q");
        using var k = cpu.Allocate(new TensorShape(queries, dim), "k");
        using var keys = cpu.Allocate(new TensorShape(queueLength, dim), "keys");
        using var dq = cpu.Allocate(new TensorShape(queries, dim), "dq");
        cpu.RandomNormal(q, seed: 2, offset: 0);
        cpu.RandomNormal(k, seed: 3, offset: 0);
        cpu.RandomNormal(keys, seed: 4, offset: 0);
        using var loss = new InfoNceLoss(cpu, queries, dim, queueLength, temperature: 0.2f, MatmulPrecision.Fp32);
        loss.Enqueue(keys);
        var ms = MedianMs(() => loss.Compute(q, k, dq), repetitions);
        var flops = 2.0 * 2.0 * queries * (double)queueLength * dim;
        return QueueLossRecord("infonce-queue", $"B={queries} K={queueLength} d={dim} loss+dq", ms, flops, queries, gflops, "two", loss.WorkspaceBytes);
    }

    /// <summary>A queue loss's record: queries/s, and its floor, the GEMMs' FLOPs at the measured sgemm rate.</summary>
    private static BenchRecord QueueLossRecord(string kernel, string @case, double ms, double flops, int queries, double gflops, string gemms, long workspaceBytes) => new()
    {
        Kernel = kernel,
        Case = @case,
        Impl = "ours",
        MedianMs = ms,
        Gpu = "cpu-only",
        FloorMs = flops / (gflops * 1e6),
        Tflops = flops / (ms * 1e9),
        Throughput = queries / (ms / 1000),
        ThroughputUnit = "queries/s",
        Note = $"{Environment.ProcessorCount} cores, load {LoadAverage()}; floor = the {gemms} GEMMs' FLOPs at {gflops:F0} GFLOP/s (measured sgemm); workspace {workspaceBytes >> 20} MiB",
    };

    private static BenchRecord Record(string kernel, string @case, (double Ms, double Flops) step, int images, double gflops) => new()
    {
        Kernel = kernel,
        Case = @case,
        Impl = "ours",
        MedianMs = step.Ms,
        Gpu = "cpu-only",
        FloorMs = step.Flops / (gflops * 1e6),
        Tflops = step.Flops / (step.Ms * 1e9),
        Throughput = images / (step.Ms / 1000),
        ThroughputUnit = "images/s",
        Note = $"{Environment.ProcessorCount} cores, load {LoadAverage()}; floor = conv+linear FLOPs at {gflops:F0} GFLOP/s (measured sgemm)",
    };

    private static (double Ms, double Flops) ClassifierStep(CpuBackend cpu, ResNetOptions options, int batch, int repetitions, bool profile)
    {
        const int classes = 10;
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, options);
        var fc = LinearHead.Classifier(layout, encoder.FeatureDim, classes);
        using var model = new Sequential(encoder, fc);
        using var arena = new ParameterArena(cpu, layout, optimizerStateSlots: 1);
        model.Bind(arena);
        model.Initialize(seed: 0);
        using var sgd = new Sgd(arena, learningRate: 0.01f, momentum: 0.9f);
        var input = new TensorShape(batch, 32, 32, 3);
        using var plan = model.Plan(input);
        using var images = cpu.Allocate(input, "images");
        using var labels = cpu.Allocate(new TensorShape(batch), "labels");
        using var xent = new SoftmaxCrossEntropy(cpu, batch, classes);
        cpu.RandomNormal(images, seed: 1, offset: 0);
        var rng = new Random(2);
        cpu.CopyFromHost([.. Enumerable.Range(0, batch).Select(_ => (float)rng.Next(classes))], labels);

        void Step()
        {
            sgd.ZeroGradients();
            var logits = plan.Forward(images, training: true);
            xent.Forward(logits, labels);
            plan.Backward(xent.Backward(logits, labels));
            sgd.Step();
        }

        var ms = MedianMs(Step, repetitions);
        if (profile)
        {
            CpuProfile.Print($"resnet18 w{options.WidthMultiplier} b{batch}", cpu, encoder, plan, ms, ("sgd step", sgd.Step), ("zero gradients", sgd.ZeroGradients));
        }
        return (ms, StepFlops.Of(encoder, plan, batch, (double)encoder.FeatureDim * classes));
    }

    private static (double Ms, double Flops) SimClrStep(CpuBackend cpu, ResNetOptions options, int viewBatch, int repetitions, bool profile)
    {
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, options);
        var headOptions = new MlpHeadOptions(encoder.FeatureDim, 512, 128);
        var head = new MlpHead(layout, headOptions);
        using var model = new Sequential(encoder, head);
        using var arena = new ParameterArena(cpu, layout, optimizerStateSlots: 1);
        model.Bind(arena);
        model.Initialize(seed: 0);
        using var lars = new Lars(arena, learningRate: 0.3f, momentum: 0.9f, weightDecay: 1e-6f);
        var rows = 2 * viewBatch;
        var input = new TensorShape(rows, 32, 32, 3);
        using var plan = model.Plan(input);
        using var views = cpu.Allocate(input, "views");
        using var dz = cpu.Allocate(new TensorShape(rows, headOptions.OutputDim), "dz");
        using var loss = new NtXentLoss(cpu, rows, headOptions.OutputDim, temperature: 0.5f);
        cpu.RandomNormal(views, seed: 1, offset: 0);

        void Step()
        {
            lars.ZeroGradients();
            var z = plan.Forward(views, training: true);
            loss.Forward(z);
            loss.Backward(z, dz);
            plan.Backward(dz);
            lars.Step();
        }

        var ms = MedianMs(Step, repetitions);
        if (profile)
        {
            CpuProfile.Print($"simclr 2x{viewBatch}", cpu, encoder, plan, ms, ("lars step", lars.Step), ("zero gradients", lars.ZeroGradients), ("nt-xent forward + backward", () =>
            {
                var z = plan.Output;
                loss.Forward(z);
                loss.Backward(z, dz);
            }));
        }
        var headMacs = (double)(headOptions.InputDim * headOptions.HiddenDim) + (headOptions.HiddenDim * headOptions.OutputDim);
        return (ms, StepFlops.Of(encoder, plan, rows, headMacs));
    }

    /// <summary>Median wall-clock milliseconds of <paramref name="repetitions"/> steps after two untimed ones.</summary>
    private static double MedianMs(Action step, int repetitions)
    {
        step();
        step();
        var times = new double[repetitions];
        for (var r = 0; r < repetitions; r++)
        {
            var clock = Stopwatch.StartNew();
            step();
            times[r] = clock.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times[repetitions / 2];
    }

    /// <summary>GFLOP/s of an n×n×n sgemm on this backend: the attainable peak the floor divides by.</summary>
    private static double MeasureGemmGflops(CpuBackend cpu, int n)
    {
        using var a = cpu.Allocate(new TensorShape(n, n));
        using var b = cpu.Allocate(new TensorShape(n, n));
        using var c = cpu.Allocate(new TensorShape(n, n));
        cpu.RandomNormal(a, 3, 0);
        cpu.RandomNormal(b, 4, 0);
        var ms = MedianMs(() => cpu.Gemm(a, false, b, false, c), 5);
        return 2.0 * n * n * n / (ms * 1e6);
    }

    /// <summary>The 1-minute load average (Linux), so a record says how busy the shared host was.</summary>
    internal static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";
}
