namespace NativeContrast.Bench;

using System.Diagnostics;
using NativeContrast.Data;

/// <summary>
/// The data pipeline on the CPU: SimCLR views from uint8 HWC images to normalised float32 CHW on one thread, in
/// images (views) per second per core: SimCLR's CIFAR recipe for 32x32 views of 32x32 images (RandomResizedCrop,
/// flip, colour jitter s 0.5 p 0.8, grayscale p 0.2, no blur) and its ImageNet recipe for 224x224 views of 256x256
/// images (jitter s 1, blur p 0.5); then the loader with every core, 32x32, batch 512, two views.
/// bench/reference/augment.py times torchvision's transforms on the same cases with torch.set_num_threads(1).
/// Per-core throughput divides by the thread's CPU time (Python's time.thread_time in the reference), so that a
/// busy shared host measures the code rather than the scheduler; median_ms is wall time per view.
/// </summary>
public sealed partial class AugmentBench : IBenchSuite
{
    public string Name => "augment";

    public string Description => "SimCLR augmentation throughput per core (32x32, 224x224) and the loader on every core";

    public string ResultsName => "augment";

    public bool NeedsGpu => false;

    public void Run(BenchContext context)
    {
        PerCore(context, "augment-32", AugmentationPresets.SimClrCifar(32), imageSize: 32, images: context.Quick ? 256 : 2048);
        PerCore(context, "augment-224", AugmentationPresets.SimClr(224), imageSize: 256, images: context.Quick ? 16 : 128);
        Loader(context, batches: context.Quick ? 4 : 40);
    }

    private static void PerCore(BenchContext context, string kernel, AugmentationPreset preset, int imageSize, int images)
    {
        using var data = BuiltinShapes.Create(images, imageSize, seed: 1);
        var recipe = preset.Views[0];
        var viewSize = recipe.Size;
        var augmenter = new ViewAugmenter();
        var planes = new float[3 * viewSize * viewSize];
        var repeats = context.Quick ? 3 : 7;
        var perView = new double[repeats];
        var cpuPerView = new double[repeats];
        var epoch = 0;
        void Pass()
        {
            for (var i = 0; i < data.Count; i++)
            {
                var rng = SampleRandom.ForView(1, epoch, i, 0);
                augmenter.Augment(data.GetImage(i), data.Shape, recipe, ref rng, planes);
                ImageOps.Normalize(planes, data.Stats);
            }
            epoch++;
        }
        // Warm up for a second, not one pass: a short pass ends before tiered JIT has promoted the hot loops to
        // tier 1, and the quick run then measured a third of the steady-state throughput.
        var warmUp = Stopwatch.StartNew();
        do
        {
            Pass();
        }
        while (warmUp.Elapsed < TimeSpan.FromSeconds(1));
        for (var r = 0; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            var cpu = ThreadCpuSeconds();
            Pass();
            cpuPerView[r] = (ThreadCpuSeconds() - cpu) * 1000 / data.Count;
            perView[r] = clock.Elapsed.TotalMilliseconds / data.Count;
        }
        Array.Sort(perView);
        Array.Sort(cpuPerView);
        var median = perView[repeats / 2];
        var cpuMedian = cpuPerView[repeats / 2] > 0 ? cpuPerView[repeats / 2] : median;
        context.Add(new BenchRecord
        {
            Kernel = kernel,
            Case = $"{preset.Name} {imageSize}->{viewSize} 1 thread",
            Impl = "ours",
            MedianMs = median,
            Gpu = context.DeviceName,
            Throughput = 1000.0 / cpuMedian,
            ThroughputUnit = "images/s/core",
            Note = $"one image = one SimCLR view normalised to float32 CHW; per thread CPU second ({1000.0 / median:F0} per wall second); {Environment.ProcessorCount} cores on {Environment.MachineName}",
        });
    }

    private static void Loader(BenchContext context, int batches)
    {
        const int batch = 512;
        using var data = BuiltinShapes.Create(batch * batches, 32, seed: 2);
        var options = new LoaderOptions { BatchSize = batch, Seed = 3, Workers = Environment.ProcessorCount };
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(32), options);
        foreach (var _ in loader.Epoch(0))
        {
            // Warm-up epoch: JIT and buffers.
        }
        var warm = loader.Stats;
        var clock = Stopwatch.StartNew();
        foreach (var _ in loader.Epoch(1))
        {
        }
        var seconds = clock.Elapsed.TotalSeconds;
        var stats = loader.Stats;
        var images = stats.Images - warm.Images;
        var busy = stats.WorkerBusySeconds - warm.WorkerBusySeconds;
        context.Add(new BenchRecord
        {
            Kernel = "loader-32",
            Case = $"simclr 2 views, batch {batch}, {options.Workers} workers",
            Impl = "ours",
            MedianMs = 1000.0 * seconds / batches,
            Gpu = context.DeviceName,
            Throughput = images / seconds,
            ThroughputUnit = "images/s",
            Note = $"per worker busy second {2 * images / busy:F0} views/s ({images / busy:F0} image pairs/s); per batch ms in median_ms",
        });
    }

    /// <summary>CPU seconds of the calling thread (CLOCK_THREAD_CPUTIME_ID on Linux; 0 elsewhere, where wall time is used).</summary>
    private static double ThreadCpuSeconds()
    {
        if (!OperatingSystem.IsLinux())
        {
            return 0;
        }
        Span<long> time = stackalloc long[2];
        return clock_gettime(3, ref time[0]) == 0 ? time[0] + (time[1] * 1e-9) : 0;
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int clock_gettime(int clock, ref long timespec);
}
