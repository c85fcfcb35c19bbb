namespace NativeContrast.Tests.Data;

using NativeContrast.Data;
using NativeContrast.Tests.Support;

/// <summary>The loader's pinned buffers and asynchronous copies to a CUDA backend.</summary>
public class LoaderGpuTests : GpuTestBase
{
    [Test]
    public void AsynchronousCopiesFromPinnedBuffersAreNotOverwrittenBeforeTheyRun()
    {
        using var data = BuiltinShapes.Create(20 * 33, 32, seed: 4);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(32), new LoaderOptions { BatchSize = 33, Seed = 2, Workers = 4, Prefetch = 2 }, Gpu);
        // One device tensor per batch and view, filled without any synchronisation: the loader must wait for each
        // copy before it refills the pinned buffer the copy reads.
        var device = new List<(NativeContrast.Tensors.Tensor Tensor, float[] Expected)>();
        try
        {
            foreach (var batch in loader.Epoch(0))
            {
                for (var v = 0; v < batch.ViewCount; v++)
                {
                    var tensor = Gpu.Allocate(batch.ViewShape(v), $"batch{batch.Number}.view{v}");
                    batch.CopyTo(Gpu, v, tensor);
                    device.Add((tensor, batch.View(v).ToArray()));
                }
            }
            Assert.That(device, Has.Count.EqualTo(40));
            foreach (var (tensor, expected) in device)
            {
                Assert.That(Numerics.ToArray(Gpu, tensor), Is.EqualTo(expected), tensor.Describe());
            }
        }
        finally
        {
            foreach (var (tensor, _) in device)
            {
                tensor.Dispose();
            }
        }
    }

    [Test]
    public void PinnedAndManagedLoadersProduceTheSameBatches()
    {
        using var data = BuiltinShapes.Create(64, 16, seed: 5);
        var options = new LoaderOptions { BatchSize = 16, Seed = 8, Workers = 3 };
        using var pinned = new ContrastiveLoader(data, AugmentationPresets.Swav(16, 2), options, Gpu);
        using var managed = new ContrastiveLoader(data, AugmentationPresets.Swav(16, 2), options);
        var a = pinned.Epoch(1).Select(b => Enumerable.Range(0, b.ViewCount).Select(v => b.View(v).ToArray()).ToArray()).ToList();
        var b = managed.Epoch(1).Select(b => Enumerable.Range(0, b.ViewCount).Select(v => b.View(v).ToArray()).ToArray()).ToList();
        Assert.That(a, Is.EqualTo(b));
    }
}
