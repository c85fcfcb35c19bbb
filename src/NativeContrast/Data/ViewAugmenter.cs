namespace NativeContrast.Data;

/// <summary>What one view's random draws decided (for the preview's captions and for tests).</summary>
public readonly record struct ViewDecisions(
    CropBox Crop,
    bool Flipped,
    bool Jittered,
    float Brightness,
    float Contrast,
    float Saturation,
    float Hue,
    int JitterOrder,
    bool Gray,
    float BlurSigma,
    bool Solarized);

/// <summary>
/// Applies a <see cref="ViewRecipe"/> to one uint8 HxWxC image with the random stream of one (seed, epoch, index,
/// view), producing the view as uint8-valued float32 planes C x Size x Size (see <see cref="ImageOps"/>); the loader
/// then normalises them in place in its batch buffer. Not thread-safe: each loader worker owns one, with its
/// scratch buffers, so that a warm augmenter allocates nothing.
/// Random draws, in order: the crop (as RandomResizedCrop.get_params), flip, jitter's apply draw, its order (a
/// Fisher–Yates permutation of 4) and factors (brightness, contrast, saturation, hue), grayscale, blur's apply draw
/// and sigma, solarize.
/// </summary>
public sealed class ViewAugmenter
{
    private readonly ResampleScratch _scratch = new();

    /// <summary>Writes the view of <paramref name="image"/> into <paramref name="view"/> (C x Size x Size floats holding 0..255).</summary>
    public ViewDecisions Augment(ReadOnlySpan<byte> image, ImageShape shape, ViewRecipe recipe, ref SampleRandom rng, Span<float> view)
    {
        var c = shape.Channels;
        var crop = ImageOps.SampleResizedCrop(shape.Height, shape.Width, recipe.ScaleMin, recipe.ScaleMax, recipe.RatioMin, recipe.RatioMax, ref rng);
        var flip = rng.Chance(recipe.FlipProbability);
        ImageOps.ResizedCrop(image, shape, crop, view, recipe.Size, recipe.Size, flip, _scratch);

        float brightness = 1, contrast = 1, saturation = 1, hue = 0;
        var order = 0;
        var jittered = recipe.Jitter is { } jitter && rng.Chance(recipe.JitterProbability);
        if (jittered)
        {
            var j = recipe.Jitter!;
            Span<int> steps = [0, 1, 2, 3];
            for (var i = 3; i > 0; i--)
            {
                var k = rng.NextInt(i + 1);
                (steps[i], steps[k]) = (steps[k], steps[i]);
            }
            order = (steps[0] * 1000) + (steps[1] * 100) + (steps[2] * 10) + steps[3];
            brightness = j.Brightness > 0 ? rng.Uniform(MathF.Max(0, 1 - j.Brightness), 1 + j.Brightness) : 1;
            contrast = j.Contrast > 0 ? rng.Uniform(MathF.Max(0, 1 - j.Contrast), 1 + j.Contrast) : 1;
            saturation = j.Saturation > 0 ? rng.Uniform(MathF.Max(0, 1 - j.Saturation), 1 + j.Saturation) : 1;
            hue = j.Hue > 0 ? rng.Uniform(-j.Hue, j.Hue) : 0;
            foreach (var step in steps)
            {
                switch (step)
                {
                    case 0 when j.Brightness > 0:
                        ImageOps.AdjustBrightness(view, brightness);
                        break;
                    case 1 when j.Contrast > 0:
                        ImageOps.AdjustContrast(view, c, contrast);
                        break;
                    case 2 when j.Saturation > 0:
                        ImageOps.AdjustSaturation(view, c, saturation);
                        break;
                    case 3 when j.Hue > 0:
                        ImageOps.AdjustHue(view, c, hue);
                        break;
                }
            }
        }

        var gray = rng.Chance(recipe.GrayscaleProbability);
        if (gray)
        {
            ImageOps.Grayscale(view, c);
        }

        var sigma = 0f;
        if (rng.Chance(recipe.BlurProbability))
        {
            sigma = rng.Uniform(recipe.SigmaMin, recipe.SigmaMax);
            // Reflect padding needs the half-kernel inside the image: a tiny view gets a kernel that fits.
            var kernel = Math.Min(recipe.EffectiveBlurKernel, (2 * recipe.Size) - 1);
            ImageOps.GaussianBlur(view, c, recipe.Size, recipe.Size, kernel, sigma, _scratch);
        }

        var solarized = rng.Chance(recipe.SolarizeProbability);
        if (solarized)
        {
            ImageOps.Solarize(view, recipe.SolarizeThreshold);
        }
        return new ViewDecisions(crop, flip, jittered, brightness, contrast, saturation, hue, order, gray, sigma, solarized);
    }
}
