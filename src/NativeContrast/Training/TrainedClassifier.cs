namespace NativeContrast.Training;

using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Checkpoints;
using NativeContrast.Methods;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// The whole classifier of a training checkpoint whose method has one (finetune, supervised, distill): the backbone
/// rebuilt from the run description, the head layers and the linear "classifier" from the method section ("classes",
/// "head"), all loaded strictly into an arena of their own (no gradients used, no optimiser state). A distillation
/// teacher runs it frozen, in eval mode. Accepts the checkpoint file or the run's output directory.
/// </summary>
public sealed class TrainedClassifier : IDisposable
{
    private readonly ParameterArena _arena;

    private TrainedClassifier(ResNet backbone, Module classifier, ParameterArena arena, RunSpec spec, int classes, string path)
    {
        Backbone = backbone;
        Classifier = classifier;
        Model = new Sequential(backbone, classifier);
        _arena = arena;
        Spec = spec;
        Classes = classes;
        Path = path;
    }

    public ResNet Backbone { get; }

    /// <summary>Backbone features [N, FeatureDim] → logits [N, <see cref="Classes"/>] (head layers, linear layer).</summary>
    public Module Classifier { get; }

    /// <summary>Images → logits: <see cref="Backbone"/> then <see cref="Classifier"/>.</summary>
    public Module Model { get; }

    public RunSpec Spec { get; }

    /// <summary>The linear layer's names in a checkpoint ("classifier.weight", "classifier.bias").</summary>
    public const string ClassifierPrefix = "classifier.";

    public int Classes { get; }

    public string Path { get; }

    public static TrainedClassifier Load(string fileOrDirectory, IBackend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var path = TrainedBackbone.Resolve(fileOrDirectory);
        var state = TrainingCheckpoint.ReadState(path);
        if (!state.Sections.TryGetValue(RunSpec.SectionName, out var runJson))
        {
            throw new CheckpointException(path, null, "the checkpoint has no run description (was it written by 'nativecontrast finetune'?)");
        }
        var spec = RunSpec.FromJson(runJson, path);
        int classes;
        MlpHeadOptions? headOptions;
        try
        {
            using var document = JsonDocument.Parse(state.Sections.GetValueOrDefault("method") ?? "{}");
            if (!document.RootElement.TryGetProperty("classes", out var count))
            {
                throw new CheckpointException(path, null, $"the checkpoint's method ({spec.Method}) has no classifier: give a run of 'nativecontrast finetune', 'distill', 'train --method supervised' or 'train --method pico'");
            }
            classes = count.GetInt32();
            headOptions = MethodJson.ReadHead(document.RootElement);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException(path, null, $"the method section does not describe a classifier: {e.Message}", e);
        }
        var layout = new ArenaLayout();
        var backbone = new ResNet(layout, spec.BackboneOptions, "backbone");
        var head = headOptions is null ? null : new MlpHead(layout, headOptions);
        var linear = LinearHead.Classifier(layout, head?.Options.OutputDim ?? backbone.FeatureDim, classes, "classifier");
        Module classifier = head is null ? linear : new Sequential(head, linear);
        var arena = new ParameterArena(backend, layout, optimizerStateSlots: 0);
        var trained = new TrainedClassifier(backbone, classifier, arena, spec, classes, path);
        try
        {
            trained.Model.Bind(arena);
            if (head is null)
            {
                // A classifier straight on the features (supervised, PiCO): the backbone and the classifier, each strictly;
                // a method's other heads and state (PiCO's contrastive head, key encoder and queue) are not part of it.
                ModelCheckpoint.Load(path, arena, new ModelLoadOptions { Scope = TensorScope.Under(Trainer.BackbonePrefix, Trainer.BackbonePrefix) });
                ModelCheckpoint.Load(path, arena, new ModelLoadOptions { Scope = TensorScope.Under(ClassifierPrefix, ClassifierPrefix) });
            }
            else
            {
                ModelCheckpoint.Load(path, arena);
            }
            return trained;
        }
        catch
        {
            trained.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Model.Dispose();
        _arena.Dispose();
    }
}
