namespace NativeContrast.Tests.Data;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Tensors;

public class ContrastiveLoaderTests
{
    private static PackedImageDataset Shapes(int count, int size = 16) => BuiltinShapes.Create(count, size, seed: 11);

    /// <summary>Every batch of an epoch, copied out: (indices, labels, views).</summary>
    private static List<(int[] Indices, int[] Labels, float[][] Views)> Collect(ContrastiveLoader loader, int epoch) =>
        [.. loader.Epoch(epoch).Select(b => (b.Indices.ToArray(), b.Labels.ToArray(), Enumerable.Range(0, b.ViewCount).Select(v => b.View(v).ToArray()).ToArray()))];

    [Test]
    public void AnEpochVisitsEachImageOnceInBatchesAndDropsTheRest()
    {
        using var data = Shapes(103);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClrCifar(16), new LoaderOptions { BatchSize = 10, Seed = 1, Workers = 2 });
        Assert.That(loader.BatchesPerEpoch, Is.EqualTo(10));
        var batches = Collect(loader, 0);
        Assert.That(batches, Has.Count.EqualTo(10));
        var seen = batches.SelectMany(b => b.Indices).ToArray();
        Assert.That(seen, Is.Unique);
        Assert.That(seen, Has.Length.EqualTo(100));
        Assert.That(seen.Order().SequenceEqual(Enumerable.Range(0, 100)), Is.False, "shuffled: the first 100 of a permutation are not 0..99 in general");
        Assert.That(loader.EpochOrder(0)[..100], Is.EqualTo(seen));
        foreach (var (indices, labels, views) in batches)
        {
            Assert.That(labels, Is.EqualTo(indices.Select(i => i % 10).ToArray()));
            Assert.That(views, Has.Length.EqualTo(2));
            Assert.That(views[0], Has.Length.EqualTo(10 * 3 * 16 * 16));
        }
        Assert.That(loader.Stats.Images, Is.EqualTo(100));
        Assert.That(loader.Stats.Views, Is.EqualTo(200));
    }

    [Test]
    public void RanksTogetherSeeTheImagesAndViewsOfOneLoaderOfTheGlobalBatch()
    {
        using var data = Shapes(50);
        var preset = AugmentationPresets.SimClrCifar(16);
        using var whole = new ContrastiveLoader(data, preset, new LoaderOptions { BatchSize = 12, Seed = 4, Workers = 2 });
        var expected = Collect(whole, 1);
        var shards = Enumerable.Range(0, 3).Select(rank =>
        {
            using var loader = new ContrastiveLoader(data, preset, new LoaderOptions { BatchSize = 4, Seed = 4, Workers = 2, Ranks = 3, Rank = rank });
            Assert.That(loader.BatchesPerEpoch, Is.EqualTo(whole.BatchesPerEpoch), "global batches per epoch");
            return Collect(loader, 1);
        }).ToList();

        Assert.That(shards.Select(s => s.Count), Is.All.EqualTo(expected.Count));
        for (var b = 0; b < expected.Count; b++)
        {
            Assert.That(shards.SelectMany(s => s[b].Indices), Is.EqualTo(expected[b].Indices), $"batch {b}: rank r takes rows [4r, 4r + 4)");
            Assert.That(shards.SelectMany(s => s[b].Labels), Is.EqualTo(expected[b].Labels));
            for (var v = 0; v < preset.ViewCount; v++)
            {
                Assert.That(shards.SelectMany(s => s[b].Views[v]), Is.EqualTo(expected[b].Views[v]), $"batch {b}, view {v}: the same augmentations");
            }
        }
    }

    [Test]
    public void AShardNeedsDropLastAndARankOfTheJob()
    {
        using var data = Shapes(20);
        var preset = AugmentationPresets.SimClrCifar(16);
        Assert.That(() => new ContrastiveLoader(data, preset, new LoaderOptions { BatchSize = 4, Ranks = 2, Rank = 2 }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new ContrastiveLoader(data, preset, new LoaderOptions { BatchSize = 4, Ranks = 2, DropLast = false }), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void KeepingTheLastBatchGivesAShortBatch()
    {
        using var data = Shapes(23);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(16), new LoaderOptions { BatchSize = 8, Seed = 2, DropLast = false, Shuffle = false, Workers = 2 });
        var batches = Collect(loader, 0);
        Assert.That(batches.Select(b => b.Indices.Length), Is.EqualTo(new[] { 8, 8, 7 }));
        Assert.That(batches.SelectMany(b => b.Indices), Is.EqualTo(Enumerable.Range(0, 23)), "unshuffled order");
        Assert.That(batches[2].Views[1], Has.Length.EqualTo(7 * 3 * 16 * 16));
    }

    [Test]
    public void BatchesDoNotDependOnWorkersPrefetchOrChunking()
    {
        using var data = Shapes(40);
        var preset = AugmentationPresets.Swav(16, smallCrops: 2);
        List<(int[] Indices, int[] Labels, float[][] Views)>? reference = null;
        foreach (var (workers, prefetch, chunk) in new[] { (1, 1, 64), (3, 2, 1), (4, 3, 5) })
        {
            using var loader = new ContrastiveLoader(data, preset, new LoaderOptions { BatchSize = 12, Seed = 9, Workers = workers, Prefetch = prefetch, ChunkSize = chunk });
            var batches = Collect(loader, 3);
            if (reference is null)
            {
                reference = batches;
                continue;
            }
            Assert.That(batches, Has.Count.EqualTo(reference.Count));
            for (var b = 0; b < batches.Count; b++)
            {
                Assert.That(batches[b].Indices, Is.EqualTo(reference[b].Indices));
                for (var v = 0; v < preset.ViewCount; v++)
                {
                    Assert.That(batches[b].Views[v], Is.EqualTo(reference[b].Views[v]), $"workers {workers}, prefetch {prefetch}, chunk {chunk}: batch {b} view {v}");
                }
            }
        }
    }

    [Test]
    public void EpochsShuffleAndAugmentDifferentlyAndRepeatForTheSameEpoch()
    {
        using var data = Shapes(32);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(16), new LoaderOptions { BatchSize = 16, Seed = 5, Workers = 2 });
        var first = Collect(loader, 0);
        var second = Collect(loader, 1);
        var again = Collect(loader, 0);
        Assert.That(second[0].Indices, Is.Not.EqualTo(first[0].Indices));
        Assert.That(again[0].Indices, Is.EqualTo(first[0].Indices));
        Assert.That(again[1].Views[1], Is.EqualTo(first[1].Views[1]));
        using var otherSeed = new ContrastiveLoader(data, AugmentationPresets.SimClr(16), new LoaderOptions { BatchSize = 16, Seed = 6, Workers = 2 });
        Assert.That(Collect(otherSeed, 0)[0].Indices, Is.Not.EqualTo(first[0].Indices));
    }

    [Test]
    public void ViewsAreTheAugmenterOutputNormalisedWithTheDatasetStatistics()
    {
        using var data = Shapes(12);
        var preset = AugmentationPresets.Byol(16);
        using var loader = new ContrastiveLoader(data, preset, new LoaderOptions { BatchSize = 4, Seed = 21, Workers = 2 });
        var batch = Collect(loader, 2)[1];
        var augmenter = new ViewAugmenter();
        for (var row = 0; row < 4; row++)
        {
            var index = batch.Indices[row];
            for (var v = 0; v < 2; v++)
            {
                var planes = new float[3 * 16 * 16];
                var rng = SampleRandom.ForView(21, 2, index, v);
                augmenter.Augment(data.GetImage(index), data.Shape, preset.Views[v], ref rng, planes);
                ImageOps.Normalize(planes, data.Stats);
                // The loader hands the models NHWC rows: the planes interleaved, pixel by pixel.
                var interleaved = new float[planes.Length];
                for (var p = 0; p < 16 * 16; p++)
                {
                    for (var c = 0; c < 3; c++)
                    {
                        interleaved[(p * 3) + c] = planes[(c * 16 * 16) + p];
                    }
                }
                Assert.That(batch.Views[v].AsSpan(row * planes.Length, planes.Length).ToArray(), Is.EqualTo(interleaved), $"row {row} view {v}");
            }
        }
        var all = batch.Views[0];
        Assert.That(all.Average(), Is.InRange(-1.5, 1.5), "normalised values are centred");
    }

    [Test]
    public void CopyToPutsAViewIntoABackendTensor()
    {
        using var data = Shapes(10);
        using var cpu = new CpuBackend();
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(16), new LoaderOptions { BatchSize = 4, Seed = 3, Workers = 1, DropLast = false }, cpu);
        var tensors = loader.AllocateViews(cpu);
        try
        {
            Assert.That(tensors[1].Shape, Is.EqualTo(new TensorShape(4, 16, 16, 3)));
            Assert.That(tensors[1].Layout, Is.EqualTo(ImageLayout.Nhwc));
            foreach (var batch in loader.Epoch(0))
            {
                batch.CopyTo(cpu, 1, tensors[1]);
                Assert.That(tensors[1].Span[..batch.View(1).Length].ToArray(), Is.EqualTo(batch.View(1).ToArray()), $"batch {batch.Number} of {batch.Count}");
                Assert.That(batch.ViewShape(1), Is.EqualTo(new TensorShape(batch.Count, 16, 16, 3)));
            }
            using var wrong = cpu.Allocate(new TensorShape(3, 3, 8, 8), "wrong");
            var first = loader.Epoch(1).First();
            var e = Assert.Throws<ArgumentException>(() => first.CopyTo(cpu, 0, wrong));
            Assert.That(e!.Message, Does.StartWith("wrong ").And.Contain("does not hold 1 view(s)"));
        }
        finally
        {
            foreach (var t in tensors)
            {
                t.Dispose();
            }
        }
    }

    [Test]
    public void LeavingAnEpochEarlyStopsTheWorkersAndTheNextEpochRuns()
    {
        using var data = Shapes(64);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(16), new LoaderOptions { BatchSize = 4, Seed = 1, Workers = 3, Prefetch = 2 });
        var taken = loader.Epoch(0).Take(2).Select(b => b.Number).ToArray();
        Assert.That(taken, Is.EqualTo(new[] { 0, 1 }));
        Assert.That(loader.Epoch(1).Count(), Is.EqualTo(16));
    }

    [Test]
    public void AFailingImageSurfacesInTheConsumerWithItsCause()
    {
        using var inner = Shapes(20);
        using var data = new FailingDataset(inner, failAt: 13);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClr(16), new LoaderOptions { BatchSize = 5, Seed = 1, Workers = 2, Shuffle = false });
        var e = Assert.Throws<InvalidOperationException>(() => loader.Epoch(0).Count());
        Assert.That(e!.Message, Is.EqualTo("the loader failed on failing: image 13 of epoch 0: image 13 is unreadable"));
    }

    private sealed class FailingDataset(IImageDataset inner, int failAt) : IImageDataset
    {
        public string Name => "failing";

        public int Count => inner.Count;

        public ImageShape Shape => inner.Shape;

        public IReadOnlyList<string> ClassNames => inner.ClassNames;

        public bool HasLabels => inner.HasLabels;

        public ChannelStats Stats => inner.Stats;

        public ReadOnlySpan<byte> GetImage(int index) => index == failAt ? throw new IOException($"image {index} is unreadable") : inner.GetImage(index);

        public int GetLabel(int index) => inner.GetLabel(index);

        public void Dispose()
        {
        }
    }

    [Test]
    public void ViewsOfOneSizeCopyIntoOneTensorBackToBackForFullAndPartialBatches()
    {
        using var data = Shapes(10);
        using var cpu = new CpuBackend();
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClrCifar(16), new LoaderOptions { BatchSize = 4, Seed = 5, Workers = 1, DropLast = false }, cpu);
        using var both = cpu.AllocateImages(new TensorShape(8, 16, 16, 3), "both views");
        foreach (var batch in loader.Epoch(0))
        {
            both.Span.Fill(float.NaN);
            batch.CopyTo(cpu, 0, 2, both);
            var perView = batch.View(0).Length;
            Assert.That(both.Span[..perView].ToArray(), Is.EqualTo(batch.View(0).ToArray()), $"view 0 of batch {batch.Number} ({batch.Count} images)");
            Assert.That(both.Span.Slice(perView, perView).ToArray(), Is.EqualTo(batch.View(1).ToArray()), $"view 1 follows view 0 directly in batch {batch.Number}");
        }
    }

    [Test]
    public void AnEpochStartedAtABatchIsTheTailOfTheWholeEpoch()
    {
        using var data = Shapes(40);
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClrCifar(16), new LoaderOptions { BatchSize = 8, Seed = 9, Workers = 2 });
        var whole = Collect(loader, 3);
        var tail = loader.Epoch(3, firstBatch: 2).Select(b => (b.Number, b.Indices.ToArray(), b.View(1).ToArray())).ToList();
        Assert.That(tail.Select(t => t.Number), Is.EqualTo(new[] { 2, 3, 4 }));
        for (var i = 0; i < tail.Count; i++)
        {
            Assert.That(tail[i].Item2, Is.EqualTo(whole[i + 2].Indices));
            Assert.That(tail[i].Item3, Is.EqualTo(whole[i + 2].Views[1]), "a resumed epoch's batches are the uninterrupted ones, bit for bit");
        }
    }

    [Test]
    public void AnNchwTaggedTensorIsRefusedByTheLoaderAndByAPlan()
    {
        using var data = Shapes(8);
        using var cpu = new CpuBackend();
        using var loader = new ContrastiveLoader(data, AugmentationPresets.SimClrCifar(16), new LoaderOptions { BatchSize = 4, Seed = 1, Workers = 1 }, cpu);
        using var nchw = cpu.Allocate(new TensorShape(4, 3, 16, 16), "torch batch");
        nchw.Layout = ImageLayout.Nchw;
        var first = loader.Epoch(0).First();
        var e = Assert.Throws<ArgumentException>(() => first.CopyTo(cpu, 0, nchw));
        Assert.That(e!.Message, Does.Contain("NCHW"));

        // A reshape keeps the tag, so NCHW data forced into an NHWC shape cannot reach a model.
        var layout = new ArenaLayout();
        using var net = new NativeContrast.Nn.ResNet(layout, NativeContrast.Nn.ResNetOptions.ResNet10 with { Stem = NativeContrast.Nn.ResNetStem.Cifar, WidthMultiplier = 0.125 });
        using var arena = new ParameterArena(cpu, layout, optimizerStateSlots: 0);
        net.Bind(arena);
        net.Initialize(1);
        var reshaped = nchw.Reshape(4, 16, 16, 3);
        var plan = net.PlanFor(reshaped.Shape);
        var refused = Assert.Throws<ArgumentException>(() => plan.Forward(reshaped, training: false));
        Assert.That(refused!.Message, Does.Contain("NCHW").And.Contain("reads NHWC"));
        using var nhwc = cpu.AllocateImages(reshaped.Shape, "nhwc");
        Assert.DoesNotThrow(() => plan.Forward(nhwc, training: false));
    }
}
