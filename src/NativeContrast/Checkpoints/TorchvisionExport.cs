namespace NativeContrast.Checkpoints;

using System.Globalization;
using NativeContrast.Tensors;

/// <summary>Which torchvision module an exported encoder is, so that a PyTorch script can rebuild it.</summary>
/// <param name="Arch">torchvision constructor: "resnet18", "resnet34", "resnet50", "resnet101" or "resnet152".</param>
/// <param name="CifarStem">conv1 = 3×3 stride 1 padding 1 and maxpool = Identity (the SimCLR CIFAR variant) instead of 7×7 stride 2 + maxpool.</param>
/// <param name="InChannels">Input channels of conv1.</param>
public sealed record TorchvisionModelSpec(string Arch, bool CifarStem = false, int InChannels = 3)
{
    public static IReadOnlyList<string> SupportedArchs { get; } = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

    public string Stem => CifarStem ? "cifar" : "imagenet";

    public int Conv1KernelSize => CifarStem ? 3 : 7;
}

/// <summary>
/// Writes what bench/reference/torchvision_roundtrip.py needs to prove that an encoder trained here is a
/// torchvision ResNet: <c>encoder.safetensors</c> (the weights, <see cref="ModelCheckpoint"/> format) and
/// <c>io.safetensors</c> with an input batch and the engine's outputs for it, computed in eval mode:
/// tensors "input" [N, C, H, W], "features" [N, D] (after the global average pool) and optionally "logits"
/// [N, classes] (after fc); metadata "arch", "stem" ("cifar" | "imagenet"), "in_channels", "num_classes"
/// ("0" without logits), "precision" (the engine's matmul precision, which sets the script's tolerance),
/// "engine" (the backend's name). Both files carry the arch, stem and in_channels.
/// </summary>
public static class TorchvisionExport
{
    public const string EncoderFileName = "encoder.safetensors";
    public const string IoFileName = "io.safetensors";

    /// <param name="scope">Selects the encoder in the arena (e.g. excluding the projection head) and maps it to torchvision's names.</param>
    /// <param name="precision">"fp32", "tf32" or "bf16": how the engine computed <paramref name="features"/>.</param>
    public static void Write(
        string directory,
        ParameterArena arena,
        TorchvisionModelSpec spec,
        Tensor input,
        Tensor features,
        Tensor? logits = null,
        TensorScope? scope = null,
        long batchNormSteps = 0,
        string precision = "fp32")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentNullException.ThrowIfNull(arena);
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(features);
        scope ??= TensorScope.All;
        Validate(arena, spec, input, features, logits, scope, precision);

        var model = new Dictionary<string, string>
        {
            ["arch"] = spec.Arch,
            ["stem"] = spec.Stem,
            ["in_channels"] = spec.InChannels.ToString(CultureInfo.InvariantCulture),
        };
        Directory.CreateDirectory(directory);
        ModelCheckpoint.Save(Path.Combine(directory, EncoderFileName), arena, new ModelSaveOptions { Scope = scope, BatchNormSteps = batchNormSteps, Metadata = model });

        var io = new SafetensorsWriter();
        io.AddMetadata(model);
        io.AddMetadata("num_classes", (logits?.Shape[1] ?? 0).ToString(CultureInfo.InvariantCulture));
        io.AddMetadata("precision", precision);
        io.AddMetadata("engine", arena.Backend.Name);
        io.Add("input", arena.Backend, input);
        io.Add("features", arena.Backend, features);
        if (logits is not null)
        {
            io.Add("logits", arena.Backend, logits);
        }
        io.Save(Path.Combine(directory, IoFileName));
    }

    /// <summary>Catches what would only fail later in PyTorch, with the engine's names in the message.</summary>
    private static void Validate(ParameterArena arena, TorchvisionModelSpec spec, Tensor input, Tensor features, Tensor? logits, TensorScope scope, string precision)
    {
        if (!TorchvisionModelSpec.SupportedArchs.Contains(spec.Arch))
        {
            throw new ArgumentException($"arch '{spec.Arch}' is not one of {string.Join(", ", TorchvisionModelSpec.SupportedArchs)}", nameof(spec));
        }
        if (precision is not ("fp32" or "tf32" or "bf16"))
        {
            throw new ArgumentException($"precision '{precision}' is not fp32, tf32 or bf16", nameof(precision));
        }
        if (scope.FilePrefix.Length > 0)
        {
            throw new ArgumentException($"scope {scope} would prefix the file's names with '{scope.FilePrefix}'; torchvision expects them bare", nameof(scope));
        }
        var conv1Name = ArenaName(arena, scope, "conv1.weight") ?? throw new ArgumentException($"the arena has no 'conv1.weight' in scope {scope}: not a torchvision ResNet", nameof(arena));
        var conv1 = arena[conv1Name].Shape;
        var k = spec.Conv1KernelSize;
        if (conv1 != new TensorShape(64, spec.InChannels, k, k))
        {
            throw new ArgumentException($"'{conv1Name}' is {conv1}, but a {spec.Stem}-stem {spec.Arch} with {spec.InChannels} input channels has [64, {spec.InChannels}, {k}, {k}]", nameof(spec));
        }
        if (input.Shape.Rank != 4 || input.Shape[1] != spec.InChannels)
        {
            throw new ArgumentException($"{input.Describe()}: expected an NCHW batch with {spec.InChannels} channels", nameof(input));
        }
        var batch = input.Shape[0];
        if (features.Shape.Rank != 2 || features.Shape[0] != batch)
        {
            throw new ArgumentException($"{features.Describe()}: expected [{batch}, D] features for an input batch of {batch}", nameof(features));
        }
        var fcName = ArenaName(arena, scope, "fc.weight");
        if (logits is null)
        {
            return;
        }
        if (fcName is null)
        {
            throw new ArgumentException($"logits were given but the arena has no 'fc.weight' in scope {scope}", nameof(logits));
        }
        var fc = arena[fcName].Shape;
        if (logits.Shape.Rank != 2 || logits.Shape[0] != batch || fc.Rank != 2 || logits.Shape[1] != fc[0] || fc[1] != features.Shape[1])
        {
            throw new ArgumentException($"{logits.Describe()} does not follow from {features.Describe()} through '{fcName}' {fc}", nameof(logits));
        }
    }

    /// <summary>The arena name the scope maps a torchvision name to, if the arena has it.</summary>
    private static string? ArenaName(ParameterArena arena, TensorScope scope, string torchvisionName)
    {
        var name = scope.ToArenaName(torchvisionName);
        return name is not null && arena.Contains(name) ? name : null;
    }
}
