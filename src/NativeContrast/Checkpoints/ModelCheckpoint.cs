namespace NativeContrast.Checkpoints;

using NativeContrast.Tensors;

public sealed record ModelSaveOptions
{
    public TensorScope Scope { get; init; } = TensorScope.All;

    /// <summary>
    /// Written as the <c>num_batches_tracked</c> of every BatchNorm that keeps no counter in the arena (PyTorch counts
    /// train-mode forwards; it only matters for momentum=None). Pass the number of training steps taken.
    /// </summary>
    public long BatchNormSteps { get; init; }

    /// <summary>Extra "__metadata__" strings (e.g. arch, stem); keys starting with "nativecontrast." are reserved.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
}

public sealed record ModelLoadOptions
{
    public TensorScope Scope { get; init; } = TensorScope.All;

    /// <summary>Like PyTorch's load_state_dict(strict): fail unless the scope's parameters and the file's tensors match one to one.</summary>
    public bool Strict { get; init; } = true;
}

/// <summary>What a load did. Names in <see cref="Loaded"/> and <see cref="Missing"/> are the arena's; the others are the file's.</summary>
public sealed record CheckpointLoadReport(
    string FilePath,
    IReadOnlyList<string> Loaded,
    IReadOnlyList<string> Missing,
    IReadOnlyList<string> Unexpected,
    IReadOnlyList<string> Ignored,
    IReadOnlyDictionary<string, string> Metadata)
{
    public bool IsComplete => Missing.Count == 0 && Unexpected.Count == 0;
}

/// <summary>
/// A model's weights and buffers as a safetensors file under PyTorch's names ("conv1.weight",
/// "layer1.0.bn1.running_mean", ...), which <c>model.load_state_dict(file_tensors, strict=True)</c> accepts for
/// the matching torchvision module: every BatchNorm (found by its "running_mean" buffer) gets exactly one int64
/// scalar "num_batches_tracked", as PyTorch expects (the arena's float counter converted, when it keeps one).
/// Loading accepts F32/F16/BF16/F64 files (PyTorch exports), loads int64 counters into the arena's float ones
/// and ignores them for BatchNorms without one, checks every shape and dtype before writing anything into the arena, and
/// reports missing and unexpected tensors (strict mode throws, naming the file and the tensors).
/// Metadata: "format" = "pt" (the safetensors convention for PyTorch files), "nativecontrast.kind" = "model",
/// "nativecontrast.version" = "1", plus <see cref="ModelSaveOptions.Metadata"/>.
/// </summary>
public static class ModelCheckpoint
{
    public const string KindKey = "nativecontrast.kind";
    public const string VersionKey = "nativecontrast.version";
    public const string FormatVersion = "1";
    public const string RunningMeanSuffix = ".running_mean";
    public const string NumBatchesTrackedSuffix = ".num_batches_tracked";

    public static void Save(string path, ParameterArena arena, ModelSaveOptions? options = null) =>
        CreateWriter(arena, options ?? new ModelSaveOptions()).Save(path);

    /// <summary>The writer <see cref="Save"/> uses, for callers that add tensors or write to their own stream.</summary>
    public static SafetensorsWriter CreateWriter(ParameterArena arena, ModelSaveOptions options)
    {
        ArgumentNullException.ThrowIfNull(arena);
        ArgumentNullException.ThrowIfNull(options);
        var writer = new SafetensorsWriter();
        writer.AddMetadata("format", "pt");
        writer.AddMetadata(KindKey, "model");
        writer.AddMetadata(VersionKey, FormatVersion);
        AddUserMetadata(writer, options.Metadata);
        AddModel(writer, arena, options.Scope, options.BatchNormSteps);
        return writer;
    }

    public static CheckpointLoadReport Load(string path, ParameterArena arena, ModelLoadOptions? options = null)
    {
        using var file = SafetensorsFile.Open(path);
        return Load(file, arena, options);
    }

    public static CheckpointLoadReport Load(SafetensorsFile file, ParameterArena arena, ModelLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(arena);
        options ??= new ModelLoadOptions();
        var isTraining = file.Metadata.GetValueOrDefault(KindKey) == TrainingCheckpoint.Kind;
        var plan = Plan(file, arena, options.Scope, name => isTraining && name.StartsWith(TrainingCheckpoint.OptimizerPrefix, StringComparison.Ordinal));
        if (options.Strict)
        {
            ThrowUnlessComplete(file.FilePath, plan, $"strict load (scope {options.Scope})");
        }
        Apply(file, arena, plan);
        return new CheckpointLoadReport(file.FilePath, [.. plan.Copies.Concat(plan.Counters).Select(c => c.View.Name)], plan.Missing, plan.Unexpected, plan.Ignored, file.Metadata);
    }

    /// <summary>The BatchNorm prefixes of an arena: "bn1" for a buffer "bn1.running_mean".</summary>
    public static IEnumerable<string> BatchNormPrefixes(ParameterArena arena) =>
        arena.Views.Where(v => v.Kind == ParameterKind.Buffer && v.Name.EndsWith(RunningMeanSuffix, StringComparison.Ordinal))
            .Select(v => v.Name[..^RunningMeanSuffix.Length]);

    internal static void AddUserMetadata(SafetensorsWriter writer, IReadOnlyDictionary<string, string>? metadata)
    {
        foreach (var (key, value) in metadata ?? new Dictionary<string, string>())
        {
            if (key.StartsWith("nativecontrast.", StringComparison.Ordinal) || key == "format")
            {
                throw new ArgumentException($"metadata key '{key}' is reserved", nameof(metadata));
            }
            writer.AddMetadata(key, value);
        }
    }

    /// <summary>
    /// Every view the scope covers, in declaration order, plus num_batches_tracked for each BatchNorm, always as
    /// PyTorch's I64 scalar: an arena that keeps the counter as a float buffer (the engine's BatchNorm does) gets it
    /// converted, so the file has exactly one num_batches_tracked per BatchNorm whichever way the arena keeps it.
    /// Counters in the arena are read now (one element each); the other counters are <paramref name="batchNormSteps"/>.
    /// </summary>
    internal static void AddModel(SafetensorsWriter writer, ParameterArena arena, TensorScope scope, long batchNormSteps)
    {
        Span<float> counter = stackalloc float[1];
        foreach (var view in arena.Views.Where(v => scope.Covers(v.Name)))
        {
            if (IsBatchNormCounter(arena, view))
            {
                arena.Backend.CopyToHost(arena.Value(view), counter);
                writer.AddInt64(scope.ToFileName(view.Name), new TensorShape(), new[] { CounterToInt64(view, counter[0]) });
            }
            else
            {
                writer.Add(scope.ToFileName(view.Name), arena.Backend, arena.Value(view));
            }
        }
        foreach (var prefix in BatchNormPrefixes(arena))
        {
            var arenaName = prefix + NumBatchesTrackedSuffix;
            if (scope.Covers(arenaName) && !arena.Contains(arenaName))
            {
                writer.AddInt64(scope.ToFileName(arenaName), new TensorShape(), new[] { batchNormSteps });
            }
        }
    }

    /// <summary>A one-element buffer "&lt;bn&gt;.num_batches_tracked" beside "&lt;bn&gt;.running_mean": a BatchNorm's counter kept in the arena.</summary>
    public static bool IsBatchNormCounter(ParameterArena arena, ParameterView view) =>
        view.Kind == ParameterKind.Buffer
        && view.Shape.Length == 1
        && view.Name.EndsWith(NumBatchesTrackedSuffix, StringComparison.Ordinal)
        && arena.Contains(view.Name[..^NumBatchesTrackedSuffix.Length] + RunningMeanSuffix);

    private static long CounterToInt64(ParameterView view, float value) =>
        float.IsFinite(value) && value >= 0f && value == MathF.Floor(value)
            ? (long)value
            : throw new InvalidOperationException($"'{view.Name}' holds {value}, not a batch count (a non-negative integer)");

    /// <summary>
    /// Matches the file's tensors to the arena's views and checks dtypes and shapes, touching no data:
    /// a load either fails here or writes every matched tensor.
    /// </summary>
    internal static LoadPlan Plan(SafetensorsFile file, ParameterArena arena, TensorScope scope, Func<string, bool> ignore)
    {
        var copies = new List<(SafetensorsTensorInfo Info, ParameterView View)>();
        var counters = new List<(SafetensorsTensorInfo Info, ParameterView View)>();
        var unexpected = new List<string>();
        var ignored = new List<string>();
        var matched = new HashSet<string>();
        foreach (var info in file.Tensors)
        {
            var arenaName = scope.ToArenaName(info.Name);
            if (arenaName is null || ignore(info.Name))
            {
                ignored.Add(info.Name);
            }
            else if (arena.Contains(arenaName) && info.DType == SafetensorsDType.I64 && IsBatchNormCounter(arena, arena[arenaName]))
            {
                if (!info.HasShape(arena[arenaName].Shape))
                {
                    throw new CheckpointException(file.FilePath, info.Name, $"wrong shape: the counter '{arenaName}' is {arena[arenaName].Shape}, the file has {info.ShapeText}");
                }
                counters.Add((info, arena[arenaName]));
                matched.Add(arenaName);
            }
            else if (arena.Contains(arenaName))
            {
                var view = arena[arenaName];
                file.CheckLoadable(info.Name, view.Shape, view.Name);
                copies.Add((info, view));
                matched.Add(arenaName);
            }
            else if (arenaName.EndsWith(NumBatchesTrackedSuffix, StringComparison.Ordinal)
                && arena.Contains(arenaName[..^NumBatchesTrackedSuffix.Length] + RunningMeanSuffix))
            {
                ignored.Add(info.Name);
            }
            else
            {
                unexpected.Add(info.Name);
            }
        }
        var missing = arena.Views.Where(v => scope.Covers(v.Name) && !matched.Contains(v.Name)).Select(v => v.Name).ToList();
        return new LoadPlan(copies, counters, missing, unexpected, ignored);
    }

    internal static void ThrowUnlessComplete(string path, LoadPlan plan, string what)
    {
        if (plan.Missing.Count == 0 && plan.Unexpected.Count == 0)
        {
            return;
        }
        var parts = new List<string>();
        if (plan.Missing.Count > 0)
        {
            parts.Add($"{plan.Missing.Count} missing from the file ({List(plan.Missing)})");
        }
        if (plan.Unexpected.Count > 0)
        {
            parts.Add($"{plan.Unexpected.Count} unexpected in the file ({List(plan.Unexpected)})");
        }
        var first = plan.Missing.Count > 0 ? plan.Missing[0] : plan.Unexpected[0];
        throw new CheckpointException(path, first, $"{what} failed: {string.Join("; ", parts)}");
    }

    internal static void Apply(SafetensorsFile file, ParameterArena arena, LoadPlan plan)
    {
        foreach (var (info, view) in plan.Copies)
        {
            file.ReadInto(info.Name, arena.Backend, arena.Value(view));
        }
        foreach (var (info, view) in plan.Counters)
        {
            // Exact up to 2^24 batches, the float counter's range (see BatchNorm).
            arena.Backend.CopyFromHost(new[] { (float)file.ReadInt64(info.Name)[0] }, arena.Value(view));
        }
    }

    private static string List(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(8).Select(n => $"'{n}'")) + (names.Count > 8 ? $", and {names.Count - 8} more" : "");

    internal sealed record LoadPlan(
        List<(SafetensorsTensorInfo Info, ParameterView View)> Copies,
        List<(SafetensorsTensorInfo Info, ParameterView View)> Counters,
        List<string> Missing,
        List<string> Unexpected,
        List<string> Ignored);
}
