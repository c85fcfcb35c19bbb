namespace NativeContrast.Methods;

using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>Distillation's options (SimCLR v2, Chen et al. 2020b, section 2.3).</summary>
public sealed record DistillationOptions
{
    public required int Classes { get; init; }

    /// <summary>T of both softmaxes, the teacher's and the student's (SimCLR v2 finds T = 1 works best).</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>a of the label term a · cross-entropy(student, label) on the labelled subset's images; 0: none (SimCLR v2's unlabelled distillation).</summary>
    public float LabelWeight { get; init; }

    /// <summary>The teacher's checkpoint, recorded in the run's options (the caller loads it).</summary>
    public string Teacher { get; init; } = "";

    /// <summary>The augmentation preset of the one view both networks see: "supervised", or "supervised-cifar" for small images.</summary>
    public string Augmentations { get; init; } = "supervised";
}

/// <summary>
/// Distillation as a method: a fine-tuned teacher (a module chain from images to logits, bound to an arena of its own)
/// runs frozen in eval mode on the same augmented view as the student (backbone → linear "classifier"), which learns to
/// match its softened predictions on unlabelled images (<see cref="DistillationLoss"/>), plus an optional label term on
/// the images of the labelled subset:
/// <code>
/// t = teacher(view)                                       # eval mode, no gradient
/// s = classifier(backbone(view))
/// loss = -mean_i sum_c softmax(t_i / T)_c * log softmax(s_i / T)_c
///        + a * mean over labelled i of cross_entropy(s_i, label_i)
/// </code>
/// A student of the teacher's size is self-distillation; a smaller one, big-to-small. The step's top-1 is the share of
/// the batch where the student's class is the teacher's. The teacher and the labelled subset belong to the caller.
/// </summary>
public sealed class Distillation(DistillationOptions options, Module teacher, LabelledSubset? labelled = null) : Method
{
    private LinearHead? _linear;
    private Sequential? _model;
    private Plan? _plan;
    private Plan? _teacherPlan;
    private DistillationLoss? _loss;
    private DistillationLoss? _labelLoss;
    private Tensor? _gradient;
    private float[] _labelTargets = [];
    private int[] _teacherClasses = [];
    private ClassifierStats? _stats;

    public DistillationOptions Options { get; } = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>The fine-tuned network the student learns from: images → logits, bound to an arena of its own.</summary>
    public Module TeacherModel { get; } = teacher ?? throw new ArgumentNullException(nameof(teacher));

    public override string Name => "distill";

    public override Module? Classifier => _linear;

    /// <summary>The soft-target loss against the teacher (its targets are the teacher's probabilities of the last step).</summary>
    public DistillationLoss Loss => _loss ?? throw new InvalidOperationException("distillation is not prepared yet");

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size);

    public override string DefaultOptimizer(bool smallImages) => "sgd";

    /// <summary>Per 256 images, a student trained from scratch: SGD 0.2 (the CIFAR ResNet recipe), LARS 0.3 (SimCLR's), AdamW 0.001.</summary>
    public override float BaseLearningRate(string optimizer) => optimizer switch
    {
        "sgd" => 0.2f,
        "adamw" => 1e-3f,
        _ => 0.3f,
    };

    /// <summary>5e-4 with SGD (a student from scratch, the CIFAR recipe), else the SimCLR recipe's.</summary>
    public override float DefaultWeightDecay(string optimizer) => optimizer == "sgd" ? 5e-4f : base.DefaultWeightDecay(optimizer);

    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        _linear = LinearHead.Classifier(layout, backbone.FeatureDim, Options.Classes, "classifier");
        _model = new Sequential(backbone, _linear);
    }

    public override void Bind(ParameterArena arena) => _model!.Bind(arena);

    public override void Initialize(ulong seed) => _linear!.Initialize(seed);

    public override void Prepare(MethodContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Preset.ViewCount != 1)
        {
            throw new ArgumentException($"distillation trains on one view per image; the preset {context.Preset.Name} makes {context.Preset.ViewCount}");
        }
        var size = context.Preset.Views[0].Size;
        var rows = context.BatchSize;
        var input = new TensorShape(rows, size, size, context.Channels);
        var teacherOutput = TeacherModel.OutputShape(input);
        if (teacherOutput != new TensorShape(rows, Options.Classes))
        {
            throw new ArgumentException($"the teacher gives {teacherOutput} for {input}; the student has {Options.Classes} classes");
        }
        var backend = context.Backend;
        _plan = _model!.Plan(input);
        _teacherPlan = TeacherModel.Plan(input);
        _loss = new DistillationLoss(backend, rows, Options.Classes, Options.Temperature);
        if (Options.LabelWeight > 0 && labelled is not null)
        {
            _labelLoss = new DistillationLoss(backend, rows, Options.Classes, 1f);
            _gradient = backend.Allocate(new TensorShape(rows, Options.Classes), "distill total dlogits");
            _labelTargets = new float[rows * Options.Classes];
        }
        _teacherClasses = new int[rows];
        _stats = new ClassifierStats(backend, rows, Options.Classes);
    }

    public override Tensor TrainingStep(ViewGroups views)
    {
        ArgumentNullException.ThrowIfNull(views);
        if (_plan is null || _teacherPlan is null || _loss is null || _stats is null)
        {
            throw new InvalidOperationException("Distillation.TrainingStep before Prepare");
        }
        var images = views.Groups[0];
        var t = _teacherPlan.Forward(images, training: false);
        _loss.SetTeacher(t);
        var s = _plan.Forward(images, training: true);
        _loss.Forward(s);
        var gradient = _loss.Backward();
        var loss = _stats.Read(_loss.Loss);
        if (_labelLoss is not null && _gradient is not null && SetLabelTargets(views))
        {
            _labelLoss.Forward(s);
            _plan.Module.Backend.Add(gradient, _labelLoss.Backward(Options.LabelWeight), _gradient);
            gradient = _gradient;
            loss += Options.LabelWeight * _stats.Read(_labelLoss.Loss);
        }
        _plan.Backward(gradient);
        _stats.Argmax(t, _teacherClasses);
        return _stats.Write(loss, s, _teacherClasses);
    }

    public override string DescribeOptions() => MethodJson.Object(json =>
    {
        json.WriteNumber("classes", Options.Classes);
        MethodJson.WriteHead(json, null);
        json.WriteNumber("temperature", Options.Temperature);
        json.WriteNumber("label_weight", Options.LabelWeight);
        json.WriteString("labels", labelled is null ? null : $"{labelled.Budget}, seed {labelled.Seed.ToString(CultureInfo.InvariantCulture)}");
        json.WriteString("teacher", Options.Teacher);
        json.WriteString("augmentations", Options.Augmentations);
    });

    protected override void DisposeOwned()
    {
        // The backbone belongs to the trainer, the teacher to the caller.
        _plan?.Dispose();
        _teacherPlan?.Dispose();
        _loss?.Dispose();
        _labelLoss?.Dispose();
        _gradient?.Dispose();
        _stats?.Dispose();
        _linear?.Dispose();
    }

    /// <summary>
    /// The label term's targets: row i one-hot on its label, weighted N / (labelled images in the batch), when image i is
    /// in the labelled subset, else zero (so the term is the mean cross-entropy over the batch's labelled images). False
    /// when the batch has none.
    /// </summary>
    private bool SetLabelTargets(ViewGroups views)
    {
        var indices = views.Indices.Span;
        var labels = views.Labels.Span;
        if (indices.Length != views.BatchSize || labels.Length != views.BatchSize)
        {
            throw new InvalidOperationException($"distillation's label term needs the batch's indices and labels ({indices.Length} and {labels.Length} for {views.BatchSize} images)");
        }
        var count = 0;
        foreach (var index in indices)
        {
            count += labelled!.Contains(index) ? 1 : 0;
        }
        if (count == 0)
        {
            return false;
        }
        Array.Clear(_labelTargets);
        var weight = indices.Length / (float)count;
        for (var i = 0; i < indices.Length; i++)
        {
            if (labelled!.Contains(indices[i]))
            {
                if (labels[i] < 0 || labels[i] >= Options.Classes)
                {
                    throw new InvalidOperationException($"image {indices[i]} of the labelled subset has label {labels[i]}, outside the teacher's {Options.Classes} classes");
                }
                _labelTargets[(i * Options.Classes) + labels[i]] = weight;
            }
        }
        _plan!.Module.Backend.CopyFromHost(_labelTargets, _labelLoss!.Targets);
        return true;
    }
}
