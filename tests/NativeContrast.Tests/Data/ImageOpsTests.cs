namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

/// <summary>
/// The transforms against torchvision's formulas: exact values where the formula gives them (the planes hold
/// what torchvision's uint8 tensor would), and float64 references within rounding where it sums.
/// </summary>
public class ImageOpsTests
{
    /// <summary>Planes of a 1 x n RGB image from (r, g, b) triples.</summary>
    private static float[] Rgb(params (int R, int G, int B)[] pixels)
    {
        var n = pixels.Length;
        var planes = new float[3 * n];
        for (var i = 0; i < n; i++)
        {
            (planes[i], planes[n + i], planes[(2 * n) + i]) = (pixels[i].R, pixels[i].G, pixels[i].B);
        }
        return planes;
    }

    private static (int R, int G, int B) Pixel(float[] planes, int i)
    {
        var n = planes.Length / 3;
        return ((int)planes[i], (int)planes[n + i], (int)planes[(2 * n) + i]);
    }

    [Test]
    public void GrayscaleUsesTorchvisionWeightsAndTruncates()
    {
        // 0.2989·255 + 0.587·255 + 0.114·255 = 254.97: torchvision maps white to 254.
        var planes = Rgb((255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (0, 0, 0));
        ImageOps.Grayscale(planes, 3);
        int[] expected = [254, 76, 149, 29, 18, 0];
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.That(Pixel(planes, i), Is.EqualTo((expected[i], expected[i], expected[i])), $"pixel {i}");
        }
    }

    [Test]
    public void BrightnessScalesClampsAndTruncates()
    {
        float[] up = [0, 10, 100, 200, 255];
        ImageOps.AdjustBrightness(up, 1.5f);
        Assert.That(up, Is.EqualTo(new float[] { 0, 15, 150, 255, 255 }));
        float[] down = [0, 10, 101, 200, 255];
        ImageOps.AdjustBrightness(down, 0.5f);
        Assert.That(down, Is.EqualTo(new float[] { 0, 5, 50, 100, 127 }));
    }

    [Test]
    public void ContrastBlendsWithTheMeanOfTheImage()
    {
        // One channel: mean 100, x·0.5 + 0.5·100.
        float[] gray = [0, 50, 100, 250];
        ImageOps.AdjustContrast(gray, 1, 0.5f);
        Assert.That(gray, Is.EqualTo(new float[] { 50, 75, 100, 175 }));

        // RGB: the mean is over the truncated luma (76 for red, 29 for blue): factor 0 leaves trunc(52.5) everywhere.
        var rgb = Rgb((255, 0, 0), (0, 0, 255));
        ImageOps.AdjustContrast(rgb, 3, 0f);
        Assert.That(rgb, Is.All.EqualTo(52f));

        // Factor 2 pushes away from the mean and clamps: 2·x − 52.5.
        var rgb2 = Rgb((255, 0, 0), (0, 0, 255));
        ImageOps.AdjustContrast(rgb2, 3, 2f);
        Assert.That(Pixel(rgb2, 0), Is.EqualTo((255, 0, 0)));
        Assert.That(Pixel(rgb2, 1), Is.EqualTo((0, 0, 255)));
    }

    [Test]
    public void SaturationBlendsEachPixelWithItsLuma()
    {
        var planes = Rgb((200, 100, 50), (255, 0, 0), (7, 7, 7));
        var gray = (float[])planes.Clone();
        ImageOps.AdjustSaturation(gray, 3, 0f);
        Assert.That(Pixel(gray, 0), Is.EqualTo((124, 124, 124)));
        Assert.That(Pixel(gray, 1), Is.EqualTo((76, 76, 76)));

        // luma(200, 100, 50) = trunc(124.18) = 124: 2·x − 124, clamped.
        ImageOps.AdjustSaturation(planes, 3, 2f);
        Assert.That(Pixel(planes, 0), Is.EqualTo((255, 76, 0)));

        float[] single = [3, 99, 250];
        ImageOps.AdjustSaturation(single, 1, 0f);
        Assert.That(single, Is.EqualTo(new float[] { 3, 99, 250 }), "a gray image has no saturation to change");
    }

    [Test]
    public void HueShiftRotatesPureColours()
    {
        var planes = Rgb((255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128));
        ImageOps.AdjustHue(planes, 3, 1f / 3f);
        Assert.That(Pixel(planes, 0), Is.EqualTo((0, 255, 0)), "red + 120° is green");
        Assert.That(Pixel(planes, 1), Is.EqualTo((0, 0, 255)), "green + 120° is blue");
        Assert.That(Pixel(planes, 2), Is.EqualTo((255, 0, 0)), "blue + 120° is red");
        Assert.That(Pixel(planes, 3), Is.EqualTo((128, 128, 128)), "gray has no hue");

        var half = Rgb((255, 0, 0), (0, 0, 255));
        ImageOps.AdjustHue(half, 3, 0.5f);
        Assert.That(Pixel(half, 0), Is.EqualTo((0, 255, 255)), "red + 180° is cyan");
        Assert.That(Pixel(half, 1), Is.EqualTo((255, 255, 0)), "blue + 180° is yellow");

        var back = Rgb((255, 0, 0));
        ImageOps.AdjustHue(back, 3, -1f / 6f);
        Assert.That(Pixel(back, 0), Is.EqualTo((255, 0, 255)), "red − 60° is magenta (Python's modulo wraps the negative hue)");
    }

    [Test]
    public void HueVectorPathMatchesTheLiteralFormulaBitForBit()
    {
        // 37 x 23 pixels: full vectors and a scalar tail.
        var rng = new Random(5);
        var n = 37 * 23;
        foreach (var factor in new[] { -0.5f, -0.23f, 0f, 0.07f, 0.4999f, 0.5f })
        {
            var planes = new float[3 * n];
            for (var i = 0; i < planes.Length; i++)
            {
                planes[i] = rng.Next(256);
            }
            // Some gray and some saturated pixels exercise the equal-max branches.
            planes[0] = planes[n] = planes[2 * n] = 77;
            planes[1] = planes[n + 1] = 255;
            planes[(2 * n) + 1] = 0;
            var expected = new float[3 * n];
            for (var i = 0; i < n; i++)
            {
                var (r, g, b) = HueKernels.ShiftPixel(planes[i] / 255f, planes[n + i] / 255f, planes[(2 * n) + i] / 255f, factor);
                const float scale = (float)(255.0 + 1.0 - 1e-3);
                (expected[i], expected[n + i], expected[(2 * n) + i]) = (MathF.Truncate(r * scale), MathF.Truncate(g * scale), MathF.Truncate(b * scale));
            }
            ImageOps.AdjustHue(planes, 3, factor);
            Assert.That(planes, Is.EqualTo(expected), $"hue factor {factor}");
        }
    }

    [Test]
    public void HueAgreesWithAFloat64HsvRotationWithinOneLevel()
    {
        var rng = new Random(9);
        const int n = 500;
        var planes = new float[3 * n];
        for (var i = 0; i < planes.Length; i++)
        {
            planes[i] = rng.Next(256);
        }
        var source = (float[])planes.Clone();
        const double factor = 0.15;
        ImageOps.AdjustHue(planes, 3, (float)factor);
        for (var i = 0; i < n; i++)
        {
            var (r, g, b) = (source[i] / 255.0, source[n + i] / 255.0, source[(2 * n) + i] / 255.0);
            var max = Math.Max(r, Math.Max(g, b));
            var min = Math.Min(r, Math.Min(g, b));
            var delta = max - min;
            double h = delta == 0 ? 0 : max == r ? ((g - b) / delta) % 6 : max == g ? ((b - r) / delta) + 2 : ((r - g) / delta) + 4;
            h = (((h / 6) + factor) % 1 + 1) % 1;
            var s = max == 0 ? 0 : delta / max;
            var k = new Func<double, double>(m => { var kk = (m + (h * 6)) % 6; return max - (max * s * Math.Max(0, Math.Min(Math.Min(kk, 4 - kk), 1))); });
            double[] expected = [k(5) * 255.999, k(3) * 255.999, k(1) * 255.999];
            for (var c = 0; c < 3; c++)
            {
                Assert.That(planes[(c * n) + i], Is.EqualTo(Math.Truncate(expected[c])).Within(1), $"pixel {i} channel {c} from ({source[i]}, {source[n + i]}, {source[2 * n + i]})");
            }
        }
    }

    [Test]
    public void SolarizeInvertsAtAndAboveTheThreshold()
    {
        float[] planes = [0, 127, 128, 200, 255, 1, 2, 3, 129];
        ImageOps.Solarize(planes, 128);
        Assert.That(planes, Is.EqualTo(new float[] { 0, 127, 127, 55, 0, 1, 2, 3, 126 }));
    }

    [Test]
    public void HorizontalFlipMirrorsEveryRowOfEveryPlane()
    {
        float[] planes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        ImageOps.HorizontalFlip(planes, 3);
        Assert.That(planes, Is.EqualTo(new float[] { 3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10 }));
    }

    [Test]
    public void NormalizeIsToTensorThenNormalize()
    {
        float[] planes = [0, 255, 51, 102];
        ImageOps.Normalize(planes, new ChannelStats([0.5f, 0.2f], [0.25f, 0.5f]));
        Assert.That(planes[0], Is.EqualTo(-2f));
        Assert.That(planes[1], Is.EqualTo(2f));
        Assert.That(planes[2], Is.EqualTo(((51f / 255f) - 0.2f) / 0.5f));
        Assert.That(planes[3], Is.EqualTo(((102f / 255f) - 0.2f) / 0.5f));
    }

    [Test]
    public void GaussianKernelMatchesTorchvision()
    {
        Span<float> k = stackalloc float[3];
        ImageOps.GaussianKernel(3, 1f, k);
        // torchvision.transforms.functional._get_gaussian_kernel1d(3, 1.0)
        Assert.That(k[0], Is.EqualTo(0.27406862f).Within(1e-7f));
        Assert.That(k[1], Is.EqualTo(0.45186276f).Within(1e-7f));
        Assert.That(k[2], Is.EqualTo(0.27406862f).Within(1e-7f));
        Span<float> wide = stackalloc float[23];
        ImageOps.GaussianKernel(23, 2f, wide);
        var sum = 0f;
        for (var i = 0; i < 23; i++)
        {
            sum += wide[i];
            Assert.That(wide[i], Is.EqualTo(wide[22 - i]), "symmetric");
        }
        Assert.That(sum, Is.EqualTo(1f).Within(1e-6f));
    }

    [TestCase(7, 7, 5, 1.0f, 3, 3)]
    [TestCase(9, 12, 5, 0.7f, 0, 0)]
    [TestCase(16, 5, 9, 2.0f, 15, 4)]
    [TestCase(31, 31, 23, 1.6f, 2, 29)]
    public void BlurOfAnImpulseIsTheReflectPaddedGaussian(int height, int width, int kernel, float sigma, int y0, int x0)
    {
        var planes = new float[height * width];
        planes[(y0 * width) + x0] = 255;
        ImageOps.GaussianBlur(planes, 1, height, width, kernel, sigma, new ResampleScratch());

        // float64 reference: convolution of the reflect-padded impulse with the outer product of the 1-D kernel.
        var r = kernel / 2;
        var k = new double[kernel];
        for (var i = 0; i < kernel; i++)
        {
            k[i] = Math.Exp(-0.5 * Math.Pow((i - r) / (double)sigma, 2));
        }
        var total = k.Sum();
        double sumOut = 0;
        for (var y = 0; y < height; y++)
        {
            for (var x = 0; x < width; x++)
            {
                double expected = 0;
                for (var i = 0; i < kernel; i++)
                {
                    for (var j = 0; j < kernel; j++)
                    {
                        if (ImageOps.Reflect(y - r + i, height) == y0 && ImageOps.Reflect(x - r + j, width) == x0)
                        {
                            expected += 255 * k[i] * k[j] / (total * total);
                        }
                    }
                }
                Assert.That(planes[(y * width) + x], Is.EqualTo(Math.Round(expected)).Within(Math.Abs(expected - Math.Floor(expected) - 0.5) < 1e-3 ? 1 : 0), $"({y}, {x})");
                sumOut += planes[(y * width) + x];
            }
        }
        Assert.That(sumOut, Is.GreaterThan(0));
    }

    [Test]
    public void BlurLeavesAConstantImageUnchanged()
    {
        var planes = Enumerable.Repeat(200f, 3 * 11 * 13).ToArray();
        ImageOps.GaussianBlur(planes, 3, 11, 13, 9, 1.9f, new ResampleScratch());
        Assert.That(planes, Is.All.EqualTo(200f));
    }

    /// <summary>float64 reference of torch's antialiased bilinear weights along one axis.</summary>
    private static double[] ResampleReference(double[] input, int outSize)
    {
        var inSize = input.Length;
        var scale = (double)inSize / outSize;
        var support = Math.Max(scale, 1.0);
        var output = new double[outSize];
        for (var i = 0; i < outSize; i++)
        {
            var center = scale * (i + 0.5);
            var min = Math.Max((int)(center - support + 0.5), 0);
            var max = Math.Min((int)(center + support + 0.5), inSize);
            double sum = 0, weights = 0;
            for (var j = min; j < max; j++)
            {
                var w = Math.Max(0, 1 - Math.Abs((j - center + 0.5) / Math.Max(scale, 1.0)));
                sum += w * input[j];
                weights += w;
            }
            output[i] = sum / weights;
        }
        return output;
    }

    [TestCase(32, 16)]
    [TestCase(32, 7)]
    [TestCase(8, 32)]
    [TestCase(13, 13)]
    [TestCase(100, 224)]
    public void ResizedCropOfAGradientMatchesTheAntialiasedBilinearFilter(int inWidth, int outWidth)
    {
        // A horizontal gradient in every row; three channels with different slopes.
        var shape = new ImageShape(4, inWidth, 3);
        var image = new byte[shape.Bytes];
        var rows = new double[3][];
        for (var c = 0; c < 3; c++)
        {
            rows[c] = new double[inWidth];
            for (var x = 0; x < inWidth; x++)
            {
                rows[c][x] = (int)(255.0 * x / Math.Max(1, inWidth - 1) / (c + 1));
                for (var y = 0; y < 4; y++)
                {
                    image[(((y * inWidth) + x) * 3) + c] = (byte)rows[c][x];
                }
            }
        }
        var planes = new float[3 * 3 * outWidth];
        ImageOps.ResizedCrop(image, shape, new CropBox(1, 0, 3, inWidth), planes, 3, outWidth, flip: false, new ResampleScratch());
        var flipped = new float[planes.Length];
        ImageOps.ResizedCrop(image, shape, new CropBox(1, 0, 3, inWidth), flipped, 3, outWidth, flip: true, new ResampleScratch());
        for (var c = 0; c < 3; c++)
        {
            var expected = ResampleReference(rows[c], outWidth);
            for (var y = 0; y < 3; y++)
            {
                for (var x = 0; x < outWidth; x++)
                {
                    var e = expected[x];
                    var tie = Math.Abs(e - Math.Floor(e) - 0.5) < 1e-3;
                    var at = (((c * 3) + y) * outWidth) + x;
                    Assert.That(planes[at], Is.EqualTo(Math.Round(e)).Within(tie ? 1 : 0), $"channel {c} row {y} column {x}");
                    Assert.That(flipped[(((c * 3) + y) * outWidth) + (outWidth - 1 - x)], Is.EqualTo(planes[at]), "flip mirrors the resized crop");
                }
            }
        }
    }

    [Test]
    public void ResizeRoundsHalfToEvenLikeTorchRound()
    {
        // Upscaling [0, 2] to 4 columns gives exactly 0.5 and 1.5 in the middle: torch.round makes them 0 and 2.
        var planes = new float[4];
        ImageOps.ResizedCrop([0, 2], new ImageShape(1, 2, 1), new CropBox(0, 0, 1, 2), planes, 1, 4, flip: false, new ResampleScratch());
        Assert.That(planes, Is.EqualTo(new float[] { 0, 0, 2, 2 }));
    }

    [Test]
    public void ResizedCropAtTheSameSizeCopiesTheCropAndPlanarisesIt()
    {
        var shape = new ImageShape(12, 10, 3);
        var image = new byte[shape.Bytes];
        for (var i = 0; i < image.Length; i++)
        {
            image[i] = (byte)((i * 7) % 251);
        }
        var box = new CropBox(2, 3, 6, 5);
        var planes = new float[3 * 6 * 5];
        ImageOps.ResizedCrop(image, shape, box, planes, 6, 5, flip: false, new ResampleScratch());
        for (var c = 0; c < 3; c++)
        {
            for (var y = 0; y < 6; y++)
            {
                for (var x = 0; x < 5; x++)
                {
                    Assert.That(planes[(((c * 6) + y) * 5) + x], Is.EqualTo(image[((((box.Top + y) * 10) + box.Left + x) * 3) + c]));
                }
            }
        }
    }

    [Test]
    public void ResizedCropRejectsABoxOutsideTheImage()
    {
        var shape = new ImageShape(4, 4, 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ImageOps.ResizedCrop(new byte[16], shape, new CropBox(2, 2, 3, 2), new float[4], 2, 2, false, new ResampleScratch()));
        Assert.That(e!.Message, Does.Contain("outside a 4x4x1 image"));
    }

    [Test]
    public void CropSamplingFallsBackToTheCentralCropWhenNoTryFits()
    {
        // Area 100 at aspect 2 needs a 14-wide crop of a 10-wide image: every try fails.
        var rng = new SampleRandom(1, 2, 3);
        var box = ImageOps.SampleResizedCrop(10, 10, 1f, 1f, 2f, 2f, ref rng);
        Assert.That(box, Is.EqualTo(new CropBox(2, 0, 5, 10)), "w = 10, h = round(10 / 2), centred");
        var wide = ImageOps.SampleResizedCrop(10, 100, 1f, 1f, 0.5f, 1f, ref rng);
        Assert.That(wide, Is.EqualTo(new CropBox(0, 45, 10, 10)), "too wide: h = 10, w = round(10 · 1), centred");
    }

    [Test]
    public void CropSamplingStaysInsideTheImageWithinScaleAndRatio()
    {
        var areas = new List<double>();
        for (var i = 0; i < 3000; i++)
        {
            var rng = new SampleRandom(7, (ulong)i, 0);
            var box = ImageOps.SampleResizedCrop(90, 120, 0.08f, 1f, 3f / 4f, 4f / 3f, ref rng);
            Assert.That(box.Top >= 0 && box.Left >= 0 && box.Top + box.Height <= 90 && box.Left + box.Width <= 120, Is.True, $"{box}");
            var area = (double)box.Height * box.Width / (90 * 120);
            // Rounding each side to an integer moves the area and the ratio a little past the bounds.
            Assert.That(area, Is.InRange(0.08 * 0.95, 1.0), $"{box}");
            Assert.That((double)box.Width / box.Height, Is.InRange(0.75 * 0.95, (4.0 / 3.0) * 1.05), $"{box}");
            areas.Add(area);
        }
        // Uniform scale in (0.08, 1) with the tries that do not fit a 90x120 image redrawn: a Monte Carlo run of
        // torchvision's get_params in Python (200,000 draws) gives a mean area fraction of 0.436; 3000 draws have a
        // standard error of about 0.005.
        Assert.That(areas.Average(), Is.EqualTo(0.436).Within(0.02));
    }
}
