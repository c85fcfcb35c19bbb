namespace NativeContrast.Training;

using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// The backbone of a training checkpoint, rebuilt from the run description the checkpoint carries and loaded
/// (strictly: every backbone tensor, nothing else under "backbone.") into an arena of its own, ready for
/// <see cref="Eval.FeatureExtractor"/>. Accepts the checkpoint file or the run's output directory.
/// </summary>
public sealed class TrainedBackbone : IDisposable
{
    private readonly ParameterArena _arena;

    private TrainedBackbone(ResNet backbone, ParameterArena arena, RunSpec spec, string path)
    {
        Backbone = backbone;
        _arena = arena;
        Spec = spec;
        Path = path;
    }

    public ResNet Backbone { get; }

    public RunSpec Spec { get; }

    public string Path { get; }

    /// <summary>The checkpoint file of <paramref name="fileOrDirectory"/> (a run's output directory holds checkpoint.safetensors).</summary>
    public static string Resolve(string fileOrDirectory)
    {
        var path = Directory.Exists(fileOrDirectory) ? System.IO.Path.Combine(fileOrDirectory, Trainer.CheckpointFileName) : fileOrDirectory;
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path}: no such checkpoint (give a training checkpoint or a run's output directory)", path);
    }

    public static TrainedBackbone Load(string fileOrDirectory, IBackend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var path = Resolve(fileOrDirectory);
        var state = TrainingCheckpoint.ReadState(path);
        if (!state.Sections.TryGetValue(RunSpec.SectionName, out var json))
        {
            throw new CheckpointException(path, null, "the checkpoint has no run description (was it written by 'nativecontrast train'?)");
        }
        var spec = RunSpec.FromJson(json, path);
        var layout = new ArenaLayout();
        var backbone = new ResNet(layout, spec.BackboneOptions, "backbone");
        var arena = new ParameterArena(backend, layout, optimizerStateSlots: 0);
        try
        {
            backbone.Bind(arena);
            ModelCheckpoint.Load(path, arena, new ModelLoadOptions { Scope = TensorScope.Under(Trainer.BackbonePrefix, Trainer.BackbonePrefix) });
            return new TrainedBackbone(backbone, arena, spec, path);
        }
        catch
        {
            backbone.Dispose();
            arena.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Backbone.Dispose();
        _arena.Dispose();
    }
}
