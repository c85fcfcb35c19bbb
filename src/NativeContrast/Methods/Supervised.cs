namespace NativeContrast.Methods;

using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// Supervised training's options: from scratch (the baseline on the same labelled subset), or fine-tuning a pre-trained
/// backbone and the first layers of its projection head (SimCLR v2, Chen et al. 2020b, section 2: fine-tuning from the
/// projector's first layer beats fine-tuning from the backbone's output on 1% and 10% of the labels).
/// </summary>
public sealed record SupervisedOptions
{
    public required int Classes { get; init; }

    /// <summary>Layers between the backbone and the linear classifier, named "projector.*" as the head they come from; null: none.</summary>
    public MlpHeadOptions? Head { get; init; }

    /// <summary>
    /// The checkpoint fine-tuning starts from, recorded in the run's options; the caller loads its weights after the
    /// trainer has initialised the arena (<see cref="Training.PretrainedRun.Load"/>). Null trains from scratch.
    /// </summary>
    public string? Pretrained { get; init; }

    /// <summary>The augmentation preset: "supervised", or "supervised-cifar" for small images (one view per image).</summary>
    public string Augmentations { get; init; } = "supervised";
}

/// <summary>
/// Supervised training as a method: backbone [→ head layers] → linear classifier ("classifier", PyTorch's nn.Linear),
/// softmax cross-entropy on the batch's labels (<see cref="ViewGroups.Labels"/>), one augmented view per image.
/// <code>
/// logits = classifier(head(backbone(view)))          # [N, classes]
/// loss = cross_entropy(logits, labels)
/// loss.backward()
/// </code>
/// Fine-tuning ("finetune": <see cref="SupervisedOptions.Pretrained"/> set) follows SimCLR's recipe: the new linear
/// layer starts at zero (its zero_init_logits_layer), momentum SGD without weight decay, every layer trained.
/// The step's top-1 is the share of the batch classified right.
/// </summary>
public sealed class Supervised(SupervisedOptions options) : Method
{
    private MlpHead? _head;
    private LinearHead? _linear;
    private Module? _classifier;
    private Sequential? _model;
    private Plan? _plan;
    private SoftmaxCrossEntropy? _loss;
    private Tensor? _labels;
    private float[] _hostLabels = [];
    private ClassifierStats? _stats;

    public SupervisedOptions Options { get; } = options ?? throw new ArgumentNullException(nameof(options));

    public override string Name => Options.Pretrained is null ? "supervised" : "finetune";

    public override Module? Classifier => _classifier;

    /// <summary>The linear layer that gives the logits.</summary>
    public LinearHead LinearClassifier => _linear ?? throw new InvalidOperationException($"{Name} is not built yet");

    public MlpHead? Head => _head;

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size);

    public override string DefaultOptimizer(bool smallImages) => "sgd";

    /// <summary>
    /// Per 256 images. SGD: 0.1 when fine-tuning (SimCLR's CIFAR fine-tuning), 0.2 from scratch (the usual CIFAR ResNet
    /// recipe, 0.1 at batch 128). LARS: 0.04 when fine-tuning (SimCLR v2's 0.16 at batch 1024), else SimCLR's 0.3. AdamW: 0.001.
    /// </summary>
    public override float BaseLearningRate(string optimizer) => optimizer switch
    {
        "sgd" => Options.Pretrained is null ? 0.2f : 0.1f,
        "adamw" => 1e-3f,
        _ => Options.Pretrained is null ? 0.3f : 0.04f,
    };

    /// <summary>None when fine-tuning (SimCLR v2's); from scratch 5e-4 with SGD (the CIFAR recipe), else the SimCLR recipe's.</summary>
    public override float DefaultWeightDecay(string optimizer) =>
        Options.Pretrained is not null ? 0f : optimizer == "sgd" ? 5e-4f : base.DefaultWeightDecay(optimizer);

    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        if (Options.Head is { } head && head.InputDim != backbone.FeatureDim)
        {
            throw new ArgumentException($"the head reads {head.InputDim} features; the backbone gives {backbone.FeatureDim}");
        }
        _head = Options.Head is { } options ? new MlpHead(layout, options) : null;
        _linear = LinearHead.Classifier(layout, _head?.Options.OutputDim ?? backbone.FeatureDim, Options.Classes, "classifier");
        _classifier = _head is null ? _linear : new Sequential(_head, _linear);
        _model = new Sequential(backbone, _classifier);
    }

    /// <summary>Binds backbone + head + classifier as one chain (the backbone's binding is idempotent).</summary>
    public override void Bind(ParameterArena arena) => _model!.Bind(arena);

    public override void Initialize(ulong seed)
    {
        _head?.Initialize(seed);
        if (Options.Pretrained is null)
        {
            LinearClassifier.Initialize(seed);
            return;
        }
        LinearClassifier.Backend.Fill(LinearClassifier.Linear.Weight, 0f);
        LinearClassifier.Backend.Fill(LinearClassifier.Linear.Bias!, 0f);
    }

    public override void Prepare(MethodContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Preset.ViewCount != 1)
        {
            throw new ArgumentException($"{Name} trains on one view per image; the preset {context.Preset.Name} makes {context.Preset.ViewCount}");
        }
        var size = context.Preset.Views[0].Size;
        var rows = context.BatchSize;
        _plan = _model!.Plan(new TensorShape(rows, size, size, context.Channels));
        _loss = new SoftmaxCrossEntropy(context.Backend, rows, Options.Classes);
        _labels = context.Backend.Allocate(new TensorShape(rows), "supervised labels");
        _hostLabels = new float[rows];
        _stats = new ClassifierStats(context.Backend, rows, Options.Classes);
    }

    public override Tensor TrainingStep(ViewGroups views)
    {
        ArgumentNullException.ThrowIfNull(views);
        if (_plan is null || _loss is null || _labels is null || _stats is null)
        {
            throw new InvalidOperationException($"{Name}.TrainingStep before Prepare");
        }
        var labels = views.Labels.Span;
        CheckLabels(labels, views.Indices.Span, views.BatchSize, Options.Classes, Name);
        for (var i = 0; i < labels.Length; i++)
        {
            _hostLabels[i] = labels[i];
        }
        _plan.Module.Backend.CopyFromHost(_hostLabels, _labels);
        var logits = _plan.Forward(views.Groups[0], training: true);
        _loss.Forward(logits, _labels);
        _plan.Backward(_loss.Backward(logits, _labels));
        return _stats.Write(_stats.Read(_loss.Loss), logits, labels);
    }

    public override string DescribeOptions() => MethodJson.Object(json =>
    {
        json.WriteNumber("classes", Options.Classes);
        MethodJson.WriteHead(json, Options.Head);
        json.WriteString("pretrained", Options.Pretrained);
        json.WriteString("augmentations", Options.Augmentations);
    });

    /// <summary>Every image of a full batch has a label in [0, classes): the methods that read labels fail loudly instead of training on NaN.</summary>
    private static void CheckLabels(ReadOnlySpan<int> labels, ReadOnlySpan<int> indices, int batchSize, int classes, string method)
    {
        if (labels.Length != batchSize)
        {
            throw new InvalidOperationException($"{method} needs the batch's labels ({labels.Length} for {batchSize} images)");
        }
        for (var i = 0; i < labels.Length; i++)
        {
            if (labels[i] < 0 || labels[i] >= classes)
            {
                var image = i < indices.Length ? indices[i].ToString(CultureInfo.InvariantCulture) : "?";
                throw new InvalidOperationException($"image {image} has label {labels[i]}; {method} needs a label in [0, {classes}) on every training image");
            }
        }
    }

    protected override void DisposeOwned()
    {
        // The backbone belongs to the trainer; the chain's other modules are the method's.
        _plan?.Dispose();
        _loss?.Dispose();
        _labels?.Dispose();
        _stats?.Dispose();
        _head?.Dispose();
        _linear?.Dispose();
    }
}
