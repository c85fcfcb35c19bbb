namespace NativeContrast.Training;

using System.Text.Json;
using System.Text.Json.Serialization;
using NativeContrast.Data;
using NativeContrast.Nn;

/// <summary>
/// What a checkpoint needs besides its tensors to be used on its own: the backbone's architecture (to rebuild it for
/// <c>eval</c> and <c>embed</c>), the data set, image size and the training split's normalisation (the evaluation
/// transform), and the method with its options. Stored as the "run" section of a training checkpoint.
/// </summary>
public sealed record RunSpec
{
    public const string SectionName = "run";

    public required string Method { get; init; }

    public required string Arch { get; init; }

    public double Width { get; init; } = 1.0;

    public required string Stem { get; init; }

    public int InputChannels { get; init; } = 3;

    public int ImageSize { get; init; }

    public int FeatureDim { get; init; }

    public required string Dataset { get; init; }

    /// <summary>Images in the built-in set's train split (it is rendered, so its size is part of the recipe); 0 for other sets.</summary>
    public int BuiltinImages { get; init; }

    public required float[] Mean { get; init; }

    public required float[] Std { get; init; }

    public int BatchSize { get; init; }

    public int Epochs { get; init; }

    public ulong Seed { get; init; }

    /// <summary>The seed the data set was made with (the built-in set's rendering) when it is not <see cref="Seed"/>; absent otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ulong? DataSeed { get; init; }

    /// <summary>The labelled subset the run trained on ("10%", or images per class; see <see cref="LabelBudget"/>); absent for the whole split.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Labels { get; init; }

    /// <summary>The seed of the <see cref="Labels"/> subset's draw.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ulong? LabelsSeed { get; init; }

    /// <summary>The smallest area fraction of the large crops when --crop-scale overrode the views' recipe; absent otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public float? CropScaleMin { get; init; }

    public ResNetOptions BackboneOptions => ResNetOptions.FromName(Arch) with
    {
        WidthMultiplier = Width,
        Stem = Stem == "cifar" ? ResNetStem.Cifar : ResNetStem.ImageNet,
        InputChannels = InputChannels,
    };

    public ChannelStats Normalization => new(Mean, Std);

    /// <summary>The options that open the run's data set <paramref name="name"/> as it trained on it (the built-in set as rendered, a folder's cache at its size).</summary>
    public DatasetOptions DatasetOptions(string name, string? dataDirectory) => new()
    {
        DataDirectory = dataDirectory,
        ImageSize = name is "builtin" or "folder" ? ImageSize : null,
        BuiltinCount = BuiltinImages > 0 ? BuiltinImages : new DatasetOptions().BuiltinCount,
        Seed = DataSeed ?? Seed,
    };

    /// <summary>"field: this vs other" for every field that differs, or that only one of them has (empty when the runs agree).</summary>
    public IReadOnlyList<string> Differences(RunSpec other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return JsonFields.Differences(ToJson(), other.ToJson());
    }

    public string ToJson() => JsonSerializer.Serialize(this, TrainingJson.Default.RunSpec);

    public static RunSpec FromJson(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize(json, TrainingJson.Default.RunSpec) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new FormatException($"{source}: the run description is not valid ({e.Message})", e);
        }
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(RunSpec))]
[JsonSerializable(typeof(Dictionary<string, string>))]
[JsonSerializable(typeof(Dictionary<string, long>))]
internal sealed partial class TrainingJson : JsonSerializerContext;
