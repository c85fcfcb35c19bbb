namespace NativeContrast.Training;

using System.Text.Json;
using NativeContrast.Checkpoints;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// A self-supervised training checkpoint to fine-tune from, as SimCLR v2 does: its backbone and the first L layers of its
/// projection head ("projector.*"; SimCLR v2 fine-tunes from L = 1 of its 3-layer head, L = 0 is the backbone alone).
/// The head's shape comes from the checkpoint's method section (projector_layers, hidden_dim, output_dim, projector_bn,
/// as SimCLR v1/v2 and MoCo record them). Accepts the checkpoint file or the run's output directory.
/// </summary>
public sealed record PretrainedRun(string Path, RunSpec Spec, MlpHeadOptions? Projector)
{
    /// <summary>Where a method's projection head lives in the arena and in checkpoints.</summary>
    public const string ProjectorPrefix = "projector.";

    public static PretrainedRun Read(string fileOrDirectory)
    {
        var path = TrainedBackbone.Resolve(fileOrDirectory);
        var state = TrainingCheckpoint.ReadState(path);
        if (!state.Sections.TryGetValue(RunSpec.SectionName, out var runJson))
        {
            throw new CheckpointException(path, null, "the checkpoint has no run description (was it written by 'nativecontrast train'?)");
        }
        var spec = RunSpec.FromJson(runJson, path);
        MlpHeadOptions? projector = null;
        if (state.Sections.TryGetValue("method", out var methodJson))
        {
            using var document = JsonDocument.Parse(methodJson);
            var section = document.RootElement;
            if (section.TryGetProperty("projector_layers", out var layers) && section.TryGetProperty("output_dim", out var output))
            {
                var hidden = section.TryGetProperty("hidden_dim", out var h) && h.ValueKind == JsonValueKind.Number ? h.GetInt32() : spec.FeatureDim;
                var norm = section.TryGetProperty("projector_bn", out var bn) && bn.GetBoolean();
                projector = new MlpHeadOptions(spec.FeatureDim, hidden, output.GetInt32()) { Layers = layers.GetInt32(), HiddenBatchNorm = norm, OutputBatchNorm = norm };
            }
        }
        return new PretrainedRun(path, spec, projector);
    }

    /// <summary>The head of the projector's first <paramref name="layers"/> layers; null for 0 (the backbone alone).</summary>
    public MlpHeadOptions? HeadLayers(int layers)
    {
        if (layers == 0)
        {
            return null;
        }
        if (Projector is null)
        {
            throw new ArgumentException($"{Path}: the checkpoint ({Spec.Method}) has no projection head to fine-tune from; use --from-head-layer 0 (the backbone alone)", "--from-head-layer");
        }
        if (layers < 0 || layers > Projector.Layers)
        {
            throw new ArgumentException($"--from-head-layer {layers} is beyond the projection head of {Path} ({Spec.Method}: {Projector.Layers} layers, so 0 to {Projector.Layers})", "--from-head-layer");
        }
        return Projector.FirstLayers(layers);
    }

    /// <summary>
    /// Loads the backbone ("backbone.*", strictly: every tensor, nothing else) and the head layers the arena declares
    /// ("projector.*": every one of them, the checkpoint's deeper layers left out) into <paramref name="arena"/>; the
    /// other parameters (the new classifier) keep their values.
    /// </summary>
    public void Load(ParameterArena arena)
    {
        ArgumentNullException.ThrowIfNull(arena);
        ModelCheckpoint.Load(Path, arena, new ModelLoadOptions { Scope = TensorScope.Under(Trainer.BackbonePrefix, Trainer.BackbonePrefix) });
        if (!arena.Views.Any(v => v.Name.StartsWith(ProjectorPrefix, StringComparison.Ordinal)))
        {
            return;
        }
        var head = ModelCheckpoint.Load(Path, arena, new ModelLoadOptions { Scope = TensorScope.Under(ProjectorPrefix, ProjectorPrefix), Strict = false });
        if (head.Missing.Count > 0)
        {
            throw new CheckpointException(Path, null, $"the projection head lacks {string.Join(", ", head.Missing)}");
        }
    }
}
