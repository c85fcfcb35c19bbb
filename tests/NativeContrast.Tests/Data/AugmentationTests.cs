namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

public class AugmentationTests
{
    [Test]
    public void PresetsFollowThePapers()
    {
        var simclr = AugmentationPresets.Create("simclr", 224);
        Assert.That(simclr.Views, Has.Count.EqualTo(2));
        Assert.That(simclr.Views[0].Jitter, Is.EqualTo(new ColorJitter(0.8f, 0.8f, 0.8f, 0.2f)));
        Assert.That((simclr.Views[0].JitterProbability, simclr.Views[0].GrayscaleProbability, simclr.Views[0].BlurProbability), Is.EqualTo((0.8f, 0.2f, 0.5f)));
        Assert.That(simclr.Views[0].EffectiveBlurKernel, Is.EqualTo(23));

        var cifar = AugmentationPresets.Create("simclr-cifar", 32);
        Assert.That(cifar.Views[0].Jitter, Is.EqualTo(new ColorJitter(0.4f, 0.4f, 0.4f, 0.1f)));
        Assert.That(cifar.Views[0].BlurProbability, Is.Zero);

        var moco = AugmentationPresets.Create("mocov2", 224);
        Assert.That((moco.Views[0].ScaleMin, moco.Views[0].Jitter), Is.EqualTo((0.2f, new ColorJitter(0.4f, 0.4f, 0.4f, 0.1f))));

        var mocov1 = AugmentationPresets.Create("mocov1", 224);
        Assert.That((mocov1.Views[0].ScaleMin, mocov1.Views[0].Jitter, mocov1.Views[0].JitterProbability, mocov1.Views[0].BlurProbability), Is.EqualTo((0.2f, new ColorJitter(0.4f, 0.4f, 0.4f, 0.4f), 1f, 0f)));
        var swavCifar = AugmentationPresets.Create("swav-cifar", 32, smallCrops: 2);
        Assert.That(swavCifar.Views.Select(v => (v.Size, v.BlurProbability)), Is.EqualTo(new[] { (32, 0f), (32, 0f), (16, 0f), (16, 0f) }));

        var byol = AugmentationPresets.Create("byol", 96);
        Assert.That(byol.Views.Select(v => (v.BlurProbability, v.SolarizeProbability)), Is.EqualTo(new[] { (1f, 0f), (0.1f, 0.2f) }));
        Assert.That(byol.Views[0].EffectiveBlurKernel, Is.EqualTo(9));

        var swav = AugmentationPresets.Create("swav", 224, smallCrops: 6);
        Assert.That(swav.Views.Select(v => v.Size), Is.EqualTo(new[] { 224, 224, 96, 96, 96, 96, 96, 96 }));
        Assert.That(swav.Views[0].ScaleMin, Is.EqualTo(0.14f));
        Assert.That((swav.Views[7].ScaleMin, swav.Views[7].ScaleMax), Is.EqualTo((0.05f, 0.14f)));
        Assert.That(AugmentationPresets.SmallCropSize(32), Is.EqualTo(16));
        Assert.That(AugmentationPresets.SmallCropSize(96), Is.EqualTo(40));

        var e = Assert.Throws<ArgumentException>(() => AugmentationPresets.Create("dino", 32));
        Assert.That(e!.Message, Does.Contain("simclr, simclr-cifar, mocov1, mocov2, byol, swav, swav-cifar"));
    }

    [Test]
    public void AViewDependsOnlyOnItsSeedEpochIndexAndView()
    {
        using var data = BuiltinShapes.Create(4, 24, seed: 3);
        var recipe = AugmentationPresets.SimClr(24).Views[0];
        float[] Make(ulong seed, int epoch, int index, int view)
        {
            var planes = new float[3 * 24 * 24];
            var rng = SampleRandom.ForView(seed, epoch, index, view);
            new ViewAugmenter().Augment(data.GetImage(index), data.Shape, recipe, ref rng, planes);
            return planes;
        }
        var reference = Make(1, 2, 3, 0);
        Assert.That(Make(1, 2, 3, 0), Is.EqualTo(reference));
        Assert.That(Make(1, 2, 3, 1), Is.Not.EqualTo(reference));
        Assert.That(Make(1, 3, 3, 0), Is.Not.EqualTo(reference));
        Assert.That(Make(2, 2, 3, 0), Is.Not.EqualTo(reference));
        Assert.That(reference, Is.All.InRange(0f, 255f));
        Assert.That(reference.All(v => v == MathF.Truncate(v)), Is.True, "views hold uint8 values");
    }

    [Test]
    public void RandomDecisionsHaveTheirProbabilitiesAndRanges()
    {
        using var data = BuiltinShapes.Create(1, 16, seed: 3);
        var recipe = AugmentationPresets.SimClr(16).Views[0];
        var augmenter = new ViewAugmenter();
        var planes = new float[3 * 16 * 16];
        const int n = 4000;
        int flips = 0, jitters = 0, grays = 0, blurs = 0;
        var orders = new HashSet<int>();
        for (var i = 0; i < n; i++)
        {
            var rng = SampleRandom.ForView(8, 0, i, 0);
            var d = augmenter.Augment(data.GetImage(0), data.Shape, recipe, ref rng, planes);
            flips += d.Flipped ? 1 : 0;
            grays += d.Gray ? 1 : 0;
            blurs += d.BlurSigma > 0 ? 1 : 0;
            if (d.Jittered)
            {
                jitters++;
                orders.Add(d.JitterOrder);
                Assert.That(d.Brightness, Is.InRange(0.2f, 1.8f));
                Assert.That(d.Contrast, Is.InRange(0.2f, 1.8f));
                Assert.That(d.Saturation, Is.InRange(0.2f, 1.8f));
                Assert.That(d.Hue, Is.InRange(-0.2f, 0.2f));
            }
            if (d.BlurSigma > 0)
            {
                Assert.That(d.BlurSigma, Is.InRange(0.1f, 2f));
            }
            Assert.That(d.Solarized, Is.False);
        }
        // Four standard deviations of a binomial proportion over 4000 draws.
        Assert.That(flips / (double)n, Is.EqualTo(0.5).Within(0.032));
        Assert.That(jitters / (double)n, Is.EqualTo(0.8).Within(0.026));
        Assert.That(grays / (double)n, Is.EqualTo(0.2).Within(0.026));
        Assert.That(blurs / (double)n, Is.EqualTo(0.5).Within(0.032));
        Assert.That(orders, Has.Count.EqualTo(24), "all 4! orders of the jitter adjustments occur");
    }

    [Test]
    public void GrayImagesGoThroughEveryPreset()
    {
        // One channel (Fashion-MNIST): saturation, hue and grayscale leave it unchanged, the rest applies.
        var shape = new ImageShape(28, 28, 1);
        var image = Enumerable.Range(0, shape.Bytes).Select(i => (byte)(i % 256)).ToArray();
        foreach (var name in AugmentationPresets.Names)
        {
            var preset = AugmentationPresets.Create(name, 28, smallCrops: 2);
            for (var v = 0; v < preset.ViewCount; v++)
            {
                var size = preset.Views[v].Size;
                var planes = new float[size * size];
                var rng = SampleRandom.ForView(1, 0, 0, v);
                new ViewAugmenter().Augment(image, shape, preset.Views[v], ref rng, planes);
                Assert.That(planes, Is.All.InRange(0f, 255f), $"{name} view {v}");
            }
        }
    }

    [Test]
    public void PhiloxStreamsAreUniformAndIndependentOfEachOther()
    {
        var a = new SampleRandom(1, 10, 0);
        var b = new SampleRandom(1, 10, 1);
        double sum = 0;
        var same = 0;
        for (var i = 0; i < 10_000; i++)
        {
            var x = a.NextFloat();
            sum += x;
            same += x == b.NextFloat() ? 1 : 0;
            Assert.That(x, Is.InRange(0f, 1f));
        }
        Assert.That(sum / 10_000, Is.EqualTo(0.5).Within(0.012));
        Assert.That(same, Is.LessThan(5));
        var ints = new int[7];
        var c = new SampleRandom(2, 0, 0);
        for (var i = 0; i < 7000; i++)
        {
            ints[c.NextInt(7)]++;
        }
        Assert.That(ints, Is.All.InRange(850, 1150));
    }
}
