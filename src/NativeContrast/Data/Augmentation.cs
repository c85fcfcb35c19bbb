namespace NativeContrast.Data;

/// <summary>ColorJitter's strengths: brightness, contrast and saturation factors are drawn from [max(0, 1 − x), 1 + x], hue from [−h, h]; 0 skips that adjustment.</summary>
public sealed record ColorJitter(float Brightness, float Contrast, float Saturation, float Hue)
{
    /// <summary>SimCLR's colour distortion of strength s: (0.8s, 0.8s, 0.8s, 0.2s).</summary>
    public static ColorJitter SimClr(float strength) => new(0.8f * strength, 0.8f * strength, 0.8f * strength, 0.2f * strength);
}

/// <summary>
/// One view's recipe, applied in this order (torchvision's order in SimCLR, MoCo v2, BYOL and SwAV; horizontal flip
/// commutes with every later step): RandomResizedCrop(Size, Scale, Ratio) → RandomHorizontalFlip →
/// RandomApply(ColorJitter, p) with its four adjustments in random order → RandomGrayscale(p) →
/// RandomApply(GaussianBlur(kernel, sigma), p) → RandomSolarize(128, p) → Normalize.
/// </summary>
public sealed record ViewRecipe
{
    /// <summary>Output side in pixels (square views).</summary>
    public required int Size { get; init; }

    public float ScaleMin { get; init; } = 0.08f;

    public float ScaleMax { get; init; } = 1f;

    public float RatioMin { get; init; } = 3f / 4f;

    public float RatioMax { get; init; } = 4f / 3f;

    public float FlipProbability { get; init; } = 0.5f;

    public ColorJitter? Jitter { get; init; }

    public float JitterProbability { get; init; } = 0.8f;

    public float GrayscaleProbability { get; init; }

    public float BlurProbability { get; init; }

    /// <summary>Odd blur kernel size; 0 picks about 10% of <see cref="Size"/>, made odd (23 for 224, 9 for 96, 3 for 32).</summary>
    public int BlurKernel { get; init; }

    public float SigmaMin { get; init; } = 0.1f;

    public float SigmaMax { get; init; } = 2f;

    public float SolarizeProbability { get; init; }

    public int SolarizeThreshold { get; init; } = 128;

    public int EffectiveBlurKernel
    {
        get
        {
            if (BlurKernel > 0)
            {
                return BlurKernel;
            }
            var k = Math.Max(3, (int)(0.1 * Size));
            return k % 2 == 0 ? k + 1 : k;
        }
    }

    public override string ToString()
    {
        var parts = new List<string> { $"crop {Size} scale ({ScaleMin:0.###}, {ScaleMax:0.###})", $"flip {FlipProbability:0.##}" };
        if (Jitter is { } j && JitterProbability > 0)
        {
            parts.Add($"jitter ({j.Brightness:0.##}, {j.Contrast:0.##}, {j.Saturation:0.##}, {j.Hue:0.##}) p {JitterProbability:0.##}");
        }
        if (GrayscaleProbability > 0)
        {
            parts.Add($"gray p {GrayscaleProbability:0.##}");
        }
        if (BlurProbability > 0)
        {
            parts.Add($"blur k {EffectiveBlurKernel} sigma ({SigmaMin:0.##}, {SigmaMax:0.##}) p {BlurProbability:0.##}");
        }
        if (SolarizeProbability > 0)
        {
            parts.Add($"solarize p {SolarizeProbability:0.##}");
        }
        return string.Join(", ", parts);
    }
}

/// <summary>A method's set of views per image: two for SimCLR, MoCo and BYOL, 2 + V for SwAV's multi-crop, one for supervised training.</summary>
public sealed record AugmentationPreset(string Name, IReadOnlyList<ViewRecipe> Views)
{
    public int ViewCount => Views.Count;

    public override string ToString() => $"{Name}: " + string.Join("; ", Views.Select((v, i) => $"view {i}: {v}"));
}

/// <summary>
/// The recipes of the methods, with sizes scaled to the data set: <c>size</c> is the large crop (the image side for
/// 32x32, 28x28 and 96x96 sets, 224 for ImageNet-size images).
/// </summary>
public static class AugmentationPresets
{
    public static readonly IReadOnlyList<string> Names = ["simclr", "simclr-cifar", "mocov1", "mocov2", "byol", "swav", "swav-cifar", "supervised", "supervised-cifar"];

    /// <summary>The preset named <paramref name="name"/> (see <see cref="Names"/>) with large crops of <paramref name="size"/>.</summary>
    public static AugmentationPreset Create(string name, int size, int smallCrops = 6) => name.ToLowerInvariant() switch
    {
        "simclr" => SimClr(size),
        "simclr-cifar" => SimClrCifar(size),
        "mocov1" => MocoV1(size),
        "mocov2" => MocoV2(size),
        "byol" => Byol(size),
        "swav" => Swav(size, smallCrops),
        "swav-cifar" => SwavCifar(size, smallCrops),
        "supervised" => Supervised(size),
        "supervised-cifar" => SupervisedCifar(size),
        _ => throw new ArgumentException($"unknown augmentation preset '{name}'; choose one of {string.Join(", ", Names)}", nameof(name)),
    };

    /// <summary>The large crop size for images of <paramref name="shape"/>: their shorter side, at most 224.</summary>
    public static int CropSizeFor(ImageShape shape) => Math.Min(224, Math.Min(shape.Height, shape.Width));

    /// <summary>SimCLR (Chen et al. 2020, appendix A) at s = 1: crop (0.08, 1), flip, jitter (0.8, 0.8, 0.8, 0.2) p 0.8, gray p 0.2, blur p 0.5.</summary>
    public static AugmentationPreset SimClr(int size)
    {
        var view = new ViewRecipe
        {
            Size = size,
            Jitter = ColorJitter.SimClr(1f),
            JitterProbability = 0.8f,
            GrayscaleProbability = 0.2f,
            BlurProbability = 0.5f,
        };
        return new AugmentationPreset("simclr", [view, view]);
    }

    /// <summary>SimCLR's CIFAR-10 recipe: colour strength s = 0.5 and no blur (the images are too small for it).</summary>
    public static AugmentationPreset SimClrCifar(int size)
    {
        var view = new ViewRecipe
        {
            Size = size,
            Jitter = ColorJitter.SimClr(0.5f),
            JitterProbability = 0.8f,
            GrayscaleProbability = 0.2f,
        };
        return new AugmentationPreset("simclr-cifar", [view, view]);
    }

    /// <summary>MoCo v1 (He et al. 2020, main_moco.py): crop (0.2, 1), gray p 0.2, jitter (0.4, 0.4, 0.4, 0.4) always, flip; no blur (jitter runs before grayscale here, in the order of the other recipes).</summary>
    public static AugmentationPreset MocoV1(int size)
    {
        var view = new ViewRecipe
        {
            Size = size,
            ScaleMin = 0.2f,
            Jitter = new ColorJitter(0.4f, 0.4f, 0.4f, 0.4f),
            JitterProbability = 1f,
            GrayscaleProbability = 0.2f,
        };
        return new AugmentationPreset("mocov1", [view, view]);
    }

    /// <summary>MoCo v2 (Chen et al. 2020): crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p 0.8, gray p 0.2, blur σ ∈ (0.1, 2) p 0.5, flip.</summary>
    public static AugmentationPreset MocoV2(int size)
    {
        var view = new ViewRecipe
        {
            Size = size,
            ScaleMin = 0.2f,
            Jitter = new ColorJitter(0.4f, 0.4f, 0.4f, 0.1f),
            JitterProbability = 0.8f,
            GrayscaleProbability = 0.2f,
            BlurProbability = 0.5f,
        };
        return new AugmentationPreset("mocov2", [view, view]);
    }

    /// <summary>BYOL (Grill et al. 2020, table 6): jitter (0.4, 0.4, 0.2, 0.1) p 0.8, gray p 0.2; blur p 1.0 / 0.1 and solarize p 0 / 0.2 for the two views.</summary>
    public static AugmentationPreset Byol(int size)
    {
        var first = new ViewRecipe
        {
            Size = size,
            Jitter = new ColorJitter(0.4f, 0.4f, 0.2f, 0.1f),
            JitterProbability = 0.8f,
            GrayscaleProbability = 0.2f,
            BlurProbability = 1f,
        };
        var second = first with { BlurProbability = 0.1f, SolarizeProbability = 0.2f };
        return new AugmentationPreset("byol", [first, second]);
    }

    /// <summary>
    /// SwAV multi-crop (Caron et al. 2020): 2 crops of <paramref name="size"/> at scale (0.14, 1) and
    /// <paramref name="smallCrops"/> crops of <see cref="SmallCropSize"/> at scale (0.05, 0.14), each with SimCLR's
    /// colour distortion (s = 1), gray p 0.2 and blur p 0.5.
    /// </summary>
    public static AugmentationPreset Swav(int size, int smallCrops = 6)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(smallCrops);
        var large = new ViewRecipe
        {
            Size = size,
            ScaleMin = 0.14f,
            Jitter = ColorJitter.SimClr(1f),
            JitterProbability = 0.8f,
            GrayscaleProbability = 0.2f,
            BlurProbability = 0.5f,
        };
        var small = large with { Size = SmallCropSize(size), ScaleMin = 0.05f, ScaleMax = 0.14f };
        var views = new List<ViewRecipe> { large, large };
        views.AddRange(Enumerable.Repeat(small, smallCrops));
        return new AugmentationPreset("swav", views);
    }

    /// <summary>
    /// SwAV's multi-crop for CIFAR-size images: SimCLR's CIFAR colour strength (s = 0.5) and no blur, as
    /// <see cref="SimClrCifar"/>; the crop scales of <see cref="Swav"/>.
    /// </summary>
    public static AugmentationPreset SwavCifar(int size, int smallCrops = 6)
    {
        var views = Swav(size, smallCrops).Views
            .Select(v => v with { Jitter = ColorJitter.SimClr(0.5f), BlurProbability = 0f })
            .ToList();
        return new AugmentationPreset("swav-cifar", views);
    }

    /// <summary>
    /// One view per image for supervised training, fine-tuning and distillation: torchvision's ImageNet training transform
    /// (RandomResizedCrop at scale (0.08, 1), flip), which SimCLR also fine-tunes with; no colour distortion.
    /// </summary>
    public static AugmentationPreset Supervised(int size) => new("supervised", [new ViewRecipe { Size = size }]);

    /// <summary>
    /// <see cref="Supervised"/> for small images: crops of at least a quarter of the image (scale (0.25, 1)) and flip,
    /// standing in for CIFAR's pad-4 random crop, which the view recipe does not have.
    /// </summary>
    public static AugmentationPreset SupervisedCifar(int size) => new("supervised-cifar", [new ViewRecipe { Size = size, ScaleMin = 0.25f }]);

    /// <summary>
    /// SwAV's small crop keeps ImageNet's 96/224 ratio, rounded to a multiple of 8 (at least 8) so that convolution
    /// tiles stay whole: 224 → 96, 96 → 40, 64 → 24, 32 → 16, 28 → 16.
    /// </summary>
    public static int SmallCropSize(int size) => Math.Max(8, (int)Math.Round(size * 96.0 / 224.0 / 8.0) * 8);
}
