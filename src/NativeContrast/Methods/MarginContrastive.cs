namespace NativeContrast.Methods;

using System.Globalization;
using NativeContrast.Data;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>The margin baseline's options: SimCLR's 2-layer head and views, unit embeddings, margin 1 (negatives at cosine below 0.5 are left alone).</summary>
public sealed record MarginOptions
{
    public int? HiddenDim { get; init; }

    public int OutputDim { get; init; } = 128;

    /// <summary>Distance of unit vectors (in (0, 2]) beyond which a negative pair costs nothing.</summary>
    public float Margin { get; init; } = 1f;

    public string Augmentations { get; init; } = "simclr";
}

/// <summary>
/// The pairwise (margin) contrastive loss of the early contrastive literature (Hadsell, Chopra and LeCun 2006) as a
/// baseline beside SimCLR: the same two views, backbone and head, but instead of a softmax over the batch every
/// positive pair is pulled together and every negative pair closer than the margin pushed apart:
/// <code>
/// u = normalize(projector(backbone(concat(view_a, view_b))))    # [2N, 128]
/// loss = mean_i ½‖u_i − u_p(i)‖² + mean_(j neg) ½ max(0, m − ‖u_i − u_j‖)²
/// </code>
/// </summary>
public sealed class MarginContrastive(MarginOptions? options = null) : Method
{
    private MlpHead? _projector;
    private Sequential? _model;
    private Plan? _plan;
    private MarginLoss? _loss;
    private Tensor? _normalized;
    private Tensor? _norms;
    private Tensor? _normalizedGradient;
    private Tensor? _projectionGradient;

    public MarginOptions Options { get; } = options ?? new MarginOptions();

    public override string Name => "margin";

    public override float BaseLearningRate(string optimizer) => optimizer switch
    {
        "lars-solo" => 0.4f,
        "adamw" => 1e-3f,
        _ => 0.3f,
    };

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size);

    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        _projector = new MlpHead(layout, new MlpHeadOptions(backbone.FeatureDim, Options.HiddenDim ?? backbone.FeatureDim, Options.OutputDim));
        _model = new Sequential(backbone, _projector);
    }

    public override void Bind(ParameterArena arena) => _model!.Bind(arena);

    public override void Initialize(ulong seed) => _projector!.Initialize(seed);

    public override void Prepare(MethodContext context)
    {
        var size = context.Preset.Views[0].Size;
        var rows = 2 * context.BatchSize;
        var backend = context.Backend;
        _plan = _model!.Plan(new TensorShape(rows, size, size, context.Channels));
        _loss = new MarginLoss(backend, rows, Options.OutputDim, Options.Margin);
        _normalized = backend.Allocate(new TensorShape(rows, Options.OutputDim), "margin u");
        _norms = backend.Allocate(new TensorShape(rows), "margin norms");
        _normalizedGradient = backend.Allocate(new TensorShape(rows, Options.OutputDim), "margin du");
        _projectionGradient = backend.Allocate(new TensorShape(rows, Options.OutputDim), "margin dz");
    }

    public override Tensor TrainingStep(ViewGroups views)
    {
        if (_plan is null || _loss is null || _normalized is null || _norms is null || _normalizedGradient is null || _projectionGradient is null)
        {
            throw new InvalidOperationException("MarginContrastive.TrainingStep before Prepare");
        }
        var backend = _plan.Module.Backend;
        var z = _plan.Forward(views.Groups[0], training: true);
        backend.L2NormalizeRows(z, _normalized, _norms);
        _loss.Compute(_normalized, _normalizedGradient);
        backend.L2NormalizeRowsBackward(_normalized, _norms, _normalizedGradient, _projectionGradient);
        _plan.Backward(_projectionGradient);
        return _loss.Stats;
    }

    public override string DescribeOptions() => string.Create(
        CultureInfo.InvariantCulture,
        $"{{\"hidden_dim\":{MethodJson.HiddenWidth(Options.HiddenDim, _projector)},\"output_dim\":{Options.OutputDim},\"margin\":{Options.Margin:R},\"augmentations\":\"{Options.Augmentations}\"}}");

    protected override void DisposeOwned()
    {
        _plan?.Dispose();
        _loss?.Dispose();
        _normalized?.Dispose();
        _norms?.Dispose();
        _normalizedGradient?.Dispose();
        _projectionGradient?.Dispose();
        _projector?.Dispose();
    }
}
