namespace NativeContrast.Methods;

/// <summary>Creates a method by the name the CLI and checkpoints use.</summary>
public static class MethodCatalog
{
    public static readonly IReadOnlyList<string> Names = ["simclr", "simclr-v2"];

    /// <summary>solo-learn's SimCLR temperature for CIFAR-size images.</summary>
    public const float SmallImageTemperature = 0.2f;

    /// <param name="temperature">Overrides the method's τ when set.</param>
    /// <param name="smallImages">
    /// Images of 64 px or less: the CIFAR-scale recipe (SimCLR's CIFAR views: colour strength 0.5, no blur; solo-learn's
    /// CIFAR temperature 0.2, which learns several times faster than 0.5 in a short run).
    /// </param>
    /// <param name="augmentations">Overrides the augmentation preset (see <see cref="Data.AugmentationPresets"/>) when set.</param>
    public static Method Create(string name, float? temperature = null, bool smallImages = false, string? augmentations = null)
    {
        augmentations ??= smallImages ? "simclr-cifar" : "simclr";
        return name.ToLowerInvariant() switch
        {
            "simclr" => new SimClr(SimClrOptions.V1 with { Temperature = temperature ?? (smallImages ? SmallImageTemperature : SimClrOptions.V1.Temperature), Augmentations = augmentations }),
            "simclr-v2" => new SimClr(SimClrOptions.V2 with { Temperature = temperature ?? (smallImages ? SmallImageTemperature : SimClrOptions.V2.Temperature), Augmentations = augmentations }),
            _ => throw new ArgumentException($"unknown method '{name}'; choose one of {string.Join(", ", Names)}", nameof(name)),
        };
    }
}
