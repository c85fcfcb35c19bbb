namespace NativeContrast.Bench;

using System.Diagnostics;
using NativeContrast.Data;

/// <summary>
/// The data pipeline on the CPU: SimCLR views (RandomResizedCrop, flip, colour jitter p 0.8, grayscale p 0.2,
/// blur p 0.5, normalise to float32 CHW) on one thread, in images (views) per second per core, for 32x32 views of
/// 32x32 images and 224x224 views of 256x256 images; then the loader with every core, 32x32, batch 512, two views.
/// bench/reference/augment.py times torchvision's transforms on the same cases with torch.set_num_threads(1).
/// </summary>
public sealed class AugmentBench : IBenchSuite
{
    public string Name => "augment";

    public string Description => "SimCLR augmentation throughput per core (32x32, 224x224) and the loader on every core";

    public string ResultsName => "augment";

    public bool NeedsGpu => false;

    public void Run(BenchContext context)
    {
        PerCore(context, "augment-32", imageSize: 32, viewSize: 32, images: context.Quick ? 256 : 2048);
        PerCore(context, "augment-224", imageSize: 256, viewSize: 224, images: context.Quick ? 16 : 128);
        Loader(context, batches: context.Quick ? 4 : 40);
    }

    private static void PerCore(BenchContext context, string kernel, int imageSize, int viewSize, int images)
    {
        using var data = BuiltinShapes.Create(images, imageSize, seed: 1);
        var preset = AugmentationPresets.SimClr(viewSize);
        var recipe = preset.Views[0];
        var augmenter = new ViewAugmenter();
        var planes = new float[3 * viewSize * viewSize];
        var repeats = context.Quick ? 3 : 7;
        var perView = new double[repeats];
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
        Pass();
        for (var r = 0; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            Pass();
            perView[r] = clock.Elapsed.TotalMilliseconds / data.Count;
        }
        Array.Sort(perView);
        var median = perView[repeats / 2];
        context.Add(new BenchRecord
        {
            Kernel = kernel,
            Case = $"simclr {imageSize}->{viewSize} 1 thread",
            Impl = "ours",
            MedianMs = median,
            Gpu = context.DeviceName,
            Throughput = 1000.0 / median,
            ThroughputUnit = "images/s/core",
            Note = $"one image = one SimCLR view normalised to float32 CHW; {Environment.ProcessorCount} cores on {Environment.MachineName}",
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
            Note = $"per core {2 * images / busy:F0} views/s ({images / busy:F0} image pairs/s); per batch ms in median_ms",
        });
    }
}
