namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

public class BuiltinShapesTests
{
    [Test]
    public void RenderingIsDeterministicPerSeedAndIndexAndBalanced()
    {
        using var a = BuiltinShapes.Create(200, 32, seed: 4);
        using var b = BuiltinShapes.Create(120, 32, seed: 4);
        using var c = BuiltinShapes.Create(50, 32, seed: 5);
        using var test = BuiltinShapes.Create(50, 32, seed: 4, DatasetSplit.Test);
        Assert.That(a.Shape, Is.EqualTo(new ImageShape(32, 32, 3)));
        Assert.That(a.ClassNames, Has.Count.EqualTo(10));
        for (var i = 0; i < 50; i++)
        {
            Assert.That(b.GetImage(i).SequenceEqual(a.GetImage(i)), Is.True, $"image {i} depends only on (seed, split, index)");
            Assert.That(c.GetImage(i).SequenceEqual(a.GetImage(i)), Is.False, $"image {i} changes with the seed");
            Assert.That(test.GetImage(i).SequenceEqual(a.GetImage(i)), Is.False, $"image {i} of the test split differs from train");
            Assert.That(a.GetLabel(i), Is.EqualTo(i % 10));
        }
    }

    [Test]
    public void ShapesStandOutFromTheirBackgroundInGray()
    {
        // The outline must survive grayscale: the luma inside the shape (image centre region of a big set) varies.
        using var data = BuiltinShapes.Create(100, 48, seed: 1);
        for (var i = 0; i < data.Count; i++)
        {
            var image = data.GetImage(i);
            var lumas = new List<float>();
            for (var p = 0; p < image.Length; p += 3)
            {
                lumas.Add(ImageOps.Gray(image[p], image[p + 1], image[p + 2]));
            }
            lumas.Sort();
            // Shape and background each cover at least a tenth of the image and differ by at least 0.2 in luma.
            var dark = lumas[lumas.Count / 20];
            var light = lumas[lumas.Count * 19 / 20];
            Assert.That(light - dark, Is.GreaterThan(0.2f * 255), $"image {i} ({data.ClassNames[data.GetLabel(i)]})");
        }
    }

    [Test]
    public void StatisticsAreMeasuredFromTheImages()
    {
        using var data = BuiltinShapes.Create(300, 16, seed: 2);
        Assert.That(data.Stats.Channels, Is.EqualTo(3));
        for (var c = 0; c < 3; c++)
        {
            double sum = 0;
            for (var i = 0; i < data.Count; i++)
            {
                var image = data.GetImage(i);
                for (var p = c; p < image.Length; p += 3)
                {
                    sum += image[p];
                }
            }
            Assert.That(data.Stats.Mean[c], Is.EqualTo(sum / (300.0 * 256 * 255)).Within(1e-5));
            Assert.That(data.Stats.Std[c], Is.InRange(0.05f, 0.5f));
        }
    }
}
