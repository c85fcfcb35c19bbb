namespace NativeContrast.Methods;

using System.Globalization;

/// <summary>What a user may change of a method's recipe by name (the CLI's options); null keeps the recipe's value.</summary>
public sealed record MethodSettings
{
    /// <summary>Images of 64 px or less: the methods' CIFAR-scale recipes (views, temperatures, learning rates).</summary>
    public bool SmallImages { get; init; }

    public float? Temperature { get; init; }

    /// <summary>An augmentation preset (see <see cref="Data.AugmentationPresets"/>) instead of the method's.</summary>
    public string? Augmentations { get; init; }

    /// <summary>Hidden width of the projection head (solo-learn's proj_hidden_dim); null: the backbone's feature width.</summary>
    public int? HiddenDim { get; init; }

    /// <summary>MoCo's key queue, SwAV's feature queue (0: none for SwAV).</summary>
    public int? QueueLength { get; init; }

    /// <summary>m of MoCo's key encoder.</summary>
    public float? Momentum { get; init; }

    /// <summary>Raise MoCo's m to 1 by a cosine over the run.</summary>
    public bool MomentumCosine { get; init; }

    /// <summary>MoCo with both views as queries (solo-learn's mocov2plus).</summary>
    public bool Symmetric { get; init; }

    /// <summary>MoCo under several ranks: shuffle-BN across them for the key encoder.</summary>
    public bool ShuffleBn { get; init; }

    /// <summary>SwAV's prototypes.</summary>
    public int? Prototypes { get; init; }

    /// <summary>SwAV's ε: the entropic regularisation of its Sinkhorn codes.</summary>
    public float? SinkhornEpsilon { get; init; }

    /// <summary>SwAV's small crops besides the two large ones.</summary>
    public int? SmallCrops { get; init; }

    /// <summary>The epoch from which SwAV's feature queue fills (it is used once full).</summary>
    public int? QueueStartEpoch { get; init; }

    /// <summary>Epochs during which SwAV's prototypes stay frozen.</summary>
    public double? FreezePrototypesEpochs { get; init; }

    /// <summary>The margin of the margin (pairwise) loss.</summary>
    public float? Margin { get; init; }

    /// <summary>Classes of the labels, for the methods that train a classifier (supervised, PiCO): the data set's.</summary>
    public int? Classes { get; init; }

    /// <summary>PiCO's q: the probability that a wrong class joins a candidate set.</summary>
    public double? PartialRate { get; init; }

    /// <summary>PiCO's λ, the weight of the contrastive term.</summary>
    public float? LossWeight { get; init; }

    /// <summary>PiCO's prot_start: the epoch from which labels are disambiguated.</summary>
    public int? PrototypeStartEpoch { get; init; }
}

/// <summary>Creates a method by the name the CLI and checkpoints use.</summary>
public static class MethodCatalog
{
    public static readonly IReadOnlyList<string> Names = ["simclr", "simclr-v2", "moco", "mocov2", "swav", "margin", "pico", "supervised"];

    /// <summary>solo-learn's SimCLR temperature for CIFAR-size images.</summary>
    public const float SmallImageTemperature = 0.2f;

    /// <summary>solo-learn's MoCo momentum for CIFAR-size data sets (0.999 is ImageNet's).</summary>
    public const float SmallDatasetMomentum = 0.99f;

    /// <param name="temperature">Overrides the method's τ when set.</param>
    /// <param name="smallImages">
    /// Images of 64 px or less: the CIFAR-scale recipe (SimCLR's CIFAR views: colour strength 0.5, no blur; solo-learn's
    /// CIFAR temperature 0.2, which learns several times faster than 0.5 in a short run).
    /// </param>
    /// <param name="augmentations">Overrides the augmentation preset (see <see cref="Data.AugmentationPresets"/>) when set.</param>
    public static Method Create(string name, float? temperature = null, bool smallImages = false, string? augmentations = null) =>
        Create(name, new MethodSettings { Temperature = temperature, SmallImages = smallImages, Augmentations = augmentations });

    public static Method Create(string name, MethodSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.ShuffleBn && name.ToLowerInvariant() is not ("moco" or "mocov2"))
        {
            throw new ArgumentException($"--shuffle-bn is MoCo's (moco, mocov2): {name} does not shuffle its keys across ranks", "--shuffle-bn");
        }
        if (settings.HiddenDim is { } hidden && (hidden < 1 || name.ToLowerInvariant() is "pico" or "supervised"))
        {
            throw new ArgumentException(hidden < 1
                ? $"--proj-hidden must be at least 1 (got {hidden})"
                : $"--proj-hidden sets the projection head of simclr, simclr-v2, moco, mocov2, swav and margin: {name}'s head keeps its recipe's width", "--proj-hidden");
        }
        if (settings.SinkhornEpsilon is { } epsilon && (!(epsilon > 0f) || !float.IsFinite(epsilon) || !name.Equals("swav", StringComparison.OrdinalIgnoreCase)))
        {
            throw new ArgumentException(name.Equals("swav", StringComparison.OrdinalIgnoreCase)
                ? $"--sinkhorn-epsilon must be a positive finite number (got {epsilon.ToString(CultureInfo.InvariantCulture)})"
                : $"--sinkhorn-epsilon is SwAV's: {name} computes no Sinkhorn codes", "--sinkhorn-epsilon");
        }
        var small = settings.SmallImages;
        string Views(string large) => settings.Augmentations ?? (small ? "simclr-cifar" : large);
        switch (name.ToLowerInvariant())
        {
            case "simclr":
            case "simclr-v2":
                var simclr = name.Equals("simclr", StringComparison.OrdinalIgnoreCase) ? SimClrOptions.V1 : SimClrOptions.V2;
                return new SimClr(simclr with
                {
                    HiddenDim = settings.HiddenDim ?? simclr.HiddenDim,
                    Temperature = settings.Temperature ?? (small ? SmallImageTemperature : simclr.Temperature),
                    Augmentations = Views("simclr"),
                    QueueLength = settings.QueueLength ?? simclr.QueueLength,
                    Momentum = settings.Momentum ?? (small ? SmallDatasetMomentum : simclr.Momentum),
                    MomentumCosine = settings.MomentumCosine,
                });
            case "moco":
            case "mocov2":
                var moco = name.Equals("moco", StringComparison.OrdinalIgnoreCase) ? MocoOptions.V1 : MocoOptions.V2;
                return new Moco(moco with
                {
                    HiddenDim = settings.HiddenDim ?? moco.HiddenDim,
                    Temperature = settings.Temperature ?? moco.Temperature,
                    Augmentations = Views(moco.Augmentations),
                    QueueLength = settings.QueueLength ?? moco.QueueLength,
                    Momentum = settings.Momentum ?? (small ? SmallDatasetMomentum : moco.Momentum),
                    MomentumCosine = settings.MomentumCosine,
                    Symmetric = settings.Symmetric,
                    ShuffleBn = settings.ShuffleBn,
                    SmallImages = small,
                });
            case "swav":
                var swav = new SwavOptions();
                return new Swav(swav with
                {
                    HiddenDim = settings.HiddenDim ?? swav.HiddenDim,
                    Temperature = settings.Temperature ?? swav.Temperature,
                    Augmentations = settings.Augmentations ?? (small ? "swav-cifar" : swav.Augmentations),
                    Prototypes = settings.Prototypes ?? swav.Prototypes,
                    Epsilon = settings.SinkhornEpsilon ?? swav.Epsilon,
                    SmallCrops = settings.SmallCrops ?? swav.SmallCrops,
                    QueueLength = settings.QueueLength ?? swav.QueueLength,
                    QueueStartEpoch = settings.QueueStartEpoch ?? swav.QueueStartEpoch,
                    FreezePrototypesEpochs = settings.FreezePrototypesEpochs ?? swav.FreezePrototypesEpochs,
                });
            case "margin":
                return new MarginContrastive(new MarginOptions { HiddenDim = settings.HiddenDim, Margin = settings.Margin ?? 1f, Augmentations = Views("simclr") });
            case "pico":
                var pico = new PicoOptions();
                return new Pico(pico with
                {
                    Classes = settings.Classes ?? throw new ArgumentException("PiCO needs the number of classes (a labelled data set)", nameof(settings)),
                    PartialRate = settings.PartialRate ?? pico.PartialRate,
                    Temperature = settings.Temperature ?? pico.Temperature,
                    LossWeight = settings.LossWeight ?? pico.LossWeight,
                    QueueLength = settings.QueueLength ?? pico.QueueLength,
                    Momentum = settings.Momentum ?? pico.Momentum,
                    PrototypeStartEpoch = settings.PrototypeStartEpoch ?? pico.PrototypeStartEpoch,
                    Augmentations = Views(pico.Augmentations),
                });
            case "supervised":
                return new Supervised(new SupervisedOptions
                {
                    Classes = settings.Classes ?? throw new ArgumentException("supervised training needs the number of classes (a labelled data set)", nameof(settings)),
                    Augmentations = settings.Augmentations ?? (small ? "supervised-cifar" : "supervised"),
                });
            default:
                throw new ArgumentException($"unknown method '{name}'; choose one of {string.Join(", ", Names)}", nameof(name));
        }
    }
}
