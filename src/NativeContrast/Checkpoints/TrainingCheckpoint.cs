namespace NativeContrast.Checkpoints;

using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using NativeContrast.Tensors;

/// <summary>
/// Everything besides the arena that the next training step depends on. The optimiser's per-element state lives
/// in the arena; what is here is the scalar state: the step count (schedules, Adam bias correction), the
/// position in the data (epoch and batches consumed in it), and the random streams (Philox seed and offset).
/// Components with more state (optimiser hyperparameters, schedule, loader, queues' heads) put it in
/// <see cref="Sections"/> as JSON documents under their own names.
/// </summary>
public sealed record TrainingState
{
    /// <summary>Optimiser steps taken so far; the next step is number Step (0-based).</summary>
    public long Step { get; init; }

    public int Epoch { get; init; }

    /// <summary>Batches of <see cref="Epoch"/> already consumed.</summary>
    public long BatchInEpoch { get; init; }

    public ulong Seed { get; init; }

    /// <summary>The Philox offset the next step starts from (see Backends/Philox).</summary>
    public ulong PhiloxOffset { get; init; }

    /// <summary>Named JSON documents, e.g. "optimizer" → {"name":"lars","lr":4.8,...}; stored and returned verbatim.</summary>
    public IReadOnlyDictionary<string, string> Sections { get; init; } = new Dictionary<string, string>();
}

/// <summary>
/// A full training checkpoint for exact resume: one safetensors file holding
/// <list type="bullet">
/// <item>the model exactly as <see cref="ModelCheckpoint"/> writes it (every value and buffer under its PyTorch
/// name, num_batches_tracked = Step), so the file also serves as a weights file;</item>
/// <item>the optimiser state as one F32 tensor per trainable parameter and slot,
/// "optimizer.state{slot}.{name}" with the parameter's shape (slot meanings are the optimiser's: SGD/LARS
/// momentum in slot 0; AdamW exp_avg in 0, exp_avg_sq in 1). Per-parameter tensors rather than one flat copy of
/// the arena, so a checkpoint survives a change of arena layout (alignment, declaration order) and reads like a
/// PyTorch optimizer state_dict;</item>
/// <item>__metadata__: "format" = "pt", "nativecontrast.kind" = "training", "nativecontrast.version" = "1",
/// "nativecontrast.training" = JSON {"step", "epoch", "batch_in_epoch", "seed", "philox_offset",
/// "optimizer_slots", "sections": {name: document}}, plus user strings.</item>
/// </list>
/// Values round-trip bit-exactly. The arena's alignment padding is not stored: loading zeroes it, as a fresh arena
/// has it, and zeroes the gradients. Loading is always strict and validates everything before writing.
/// </summary>
public static class TrainingCheckpoint
{
    public const string Kind = "training";
    public const string StateKey = "nativecontrast.training";
    public const string OptimizerPrefix = "optimizer.";

    /// <summary>Prefix of the buffers a method owns besides the arena (a queue of keys, its write position).</summary>
    public const string MethodStatePrefix = "method.";

    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string StateName(int slot, string parameterName) => $"{OptimizerPrefix}state{slot}.{parameterName}";

    /// <param name="methodState">Buffers outside the arena (queues and their positions), stored as "method.{name}".</param>
    public static void Save(string path, ParameterArena arena, TrainingState state, IReadOnlyDictionary<string, string>? metadata = null, IReadOnlyList<(string Name, Tensor Tensor)>? methodState = null)
    {
        ArgumentNullException.ThrowIfNull(arena);
        ArgumentNullException.ThrowIfNull(state);
        var writer = new SafetensorsWriter();
        writer.AddMetadata("format", "pt");
        writer.AddMetadata(ModelCheckpoint.KindKey, Kind);
        writer.AddMetadata(ModelCheckpoint.VersionKey, ModelCheckpoint.FormatVersion);
        writer.AddMetadata(StateKey, SerializeState(state, arena.StateSlots));
        ModelCheckpoint.AddUserMetadata(writer, metadata);
        ModelCheckpoint.AddModel(writer, arena, TensorScope.All, state.Step);
        for (var slot = 0; slot < arena.StateSlots; slot++)
        {
            foreach (var view in arena.Views.Where(v => v.IsTrainable))
            {
                writer.Add(StateName(slot, view.Name), arena.Backend, arena.State(slot, view));
            }
        }
        foreach (var (name, tensor) in methodState ?? [])
        {
            writer.Add(MethodStatePrefix + name, arena.Backend, tensor);
        }
        writer.Save(path);
    }

    /// <summary>
    /// Restores values, buffers and optimiser state into <paramref name="arena"/> and returns the scalar state.
    /// The arena must have the checkpoint's parameters (names and shapes) and its number of optimiser slots.
    /// </summary>
    public static TrainingState Load(string path, ParameterArena arena, IReadOnlyList<(string Name, Tensor Tensor)>? methodState = null)
    {
        ArgumentNullException.ThrowIfNull(arena);
        using var file = SafetensorsFile.Open(path);
        var (state, slots) = ReadState(file);
        if (slots != arena.StateSlots)
        {
            throw new CheckpointException(file.FilePath, null, $"optimiser state mismatch: the file has {slots} state slots per parameter, the arena has {arena.StateSlots}");
        }
        var model = ModelCheckpoint.Plan(file, arena, TensorScope.All, name => name.StartsWith(OptimizerPrefix, StringComparison.Ordinal) || name.StartsWith(MethodStatePrefix, StringComparison.Ordinal));
        var optimizer = PlanOptimizerState(file, arena);
        var expectedState = (methodState ?? []).ToDictionary(s => MethodStatePrefix + s.Name, s => s.Tensor);
        foreach (var (name, tensor) in expectedState.Where(s => file.Contains(s.Key)))
        {
            file.CheckLoadable(name, tensor.Shape, name);
        }
        var plan = model with
        {
            Unexpected = [.. model.Unexpected, .. optimizer.Unexpected, .. file.Tensors.Select(t => t.Name).Where(n => n.StartsWith(MethodStatePrefix, StringComparison.Ordinal) && !expectedState.ContainsKey(n))],
            Missing = [.. model.Missing, .. optimizer.Missing, .. expectedState.Keys.Where(n => !file.Contains(n))],
        };
        ModelCheckpoint.ThrowUnlessComplete(file.FilePath, plan, "resume");

        var backend = arena.Backend;
        backend.Fill(arena.Values, 0f);
        backend.Fill(arena.OptimizerState, 0f);
        backend.Fill(arena.Gradients, 0f);
        ModelCheckpoint.Apply(file, arena, model);
        foreach (var (name, slot, view) in optimizer.Copies)
        {
            file.ReadInto(name, backend, arena.State(slot, view));
        }
        foreach (var (name, tensor) in expectedState)
        {
            file.ReadInto(name, backend, tensor);
        }
        return state;
    }

    /// <summary>The scalar state of a training checkpoint, without loading any tensor.</summary>
    public static TrainingState ReadState(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return ReadState(file).State;
    }

    private static (List<(string Name, int Slot, ParameterView View)> Copies, List<string> Missing, List<string> Unexpected) PlanOptimizerState(SafetensorsFile file, ParameterArena arena)
    {
        var copies = new List<(string, int, ParameterView)>();
        var missing = new List<string>();
        var expected = new HashSet<string>();
        for (var slot = 0; slot < arena.StateSlots; slot++)
        {
            foreach (var view in arena.Views.Where(v => v.IsTrainable))
            {
                var name = StateName(slot, view.Name);
                expected.Add(name);
                if (file.Contains(name))
                {
                    file.CheckLoadable(name, view.Shape, $"{view.Name}.state{slot}");
                    copies.Add((name, slot, view));
                }
                else
                {
                    missing.Add(name);
                }
            }
        }
        var unexpected = file.Tensors.Select(t => t.Name)
            .Where(n => n.StartsWith(OptimizerPrefix, StringComparison.Ordinal) && !expected.Contains(n)).ToList();
        return (copies, missing, unexpected);
    }

    private static string SerializeState(TrainingState state, int slots)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, JsonOptions))
        {
            json.WriteStartObject();
            json.WriteNumber("step", state.Step);
            json.WriteNumber("epoch", state.Epoch);
            json.WriteNumber("batch_in_epoch", state.BatchInEpoch);
            json.WriteNumber("seed", state.Seed);
            json.WriteNumber("philox_offset", state.PhiloxOffset);
            json.WriteNumber("optimizer_slots", slots);
            json.WriteStartObject("sections");
            foreach (var (name, document) in state.Sections.OrderBy(s => s.Key, StringComparer.Ordinal))
            {
                json.WritePropertyName(name);
                try
                {
                    json.WriteRawValue(document.Trim());
                }
                catch (JsonException e)
                {
                    throw new ArgumentException($"training state section '{name}' is not one valid JSON value: {e.Message}", nameof(state), e);
                }
            }
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static (TrainingState State, int Slots) ReadState(SafetensorsFile file)
    {
        var kind = file.Metadata.GetValueOrDefault(ModelCheckpoint.KindKey);
        if (kind != Kind)
        {
            throw new CheckpointException(file.FilePath, null, $"not a training checkpoint: metadata '{ModelCheckpoint.KindKey}' is {(kind is null ? "absent" : $"'{kind}'")}, expected '{Kind}' (ModelCheckpoint.Load reads weights files)");
        }
        var version = file.Metadata.GetValueOrDefault(ModelCheckpoint.VersionKey);
        if (version != ModelCheckpoint.FormatVersion)
        {
            throw new CheckpointException(file.FilePath, null, $"unsupported training checkpoint version '{version}', expected '{ModelCheckpoint.FormatVersion}'");
        }
        if (!file.Metadata.TryGetValue(StateKey, out var text))
        {
            throw new CheckpointException(file.FilePath, null, $"corrupt training checkpoint: metadata '{StateKey}' is absent");
        }
        try
        {
            using var document = JsonDocument.Parse(text);
            var root = document.RootElement;
            var sections = new Dictionary<string, string>();
            foreach (var section in root.GetProperty("sections").EnumerateObject())
            {
                sections.Add(section.Name, section.Value.GetRawText());
            }
            var state = new TrainingState
            {
                Step = root.GetProperty("step").GetInt64(),
                Epoch = root.GetProperty("epoch").GetInt32(),
                BatchInEpoch = root.GetProperty("batch_in_epoch").GetInt64(),
                Seed = root.GetProperty("seed").GetUInt64(),
                PhiloxOffset = root.GetProperty("philox_offset").GetUInt64(),
                Sections = sections,
            };
            return (state, root.GetProperty("optimizer_slots").GetInt32());
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new CheckpointException(file.FilePath, null, $"corrupt training checkpoint: metadata '{StateKey}' is not the expected JSON ({e.Message})", e);
        }
    }
}
