namespace NativeContrast.Methods;

using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Distributed;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// SimCLR's options. v1 (Chen et al. 2020a): a 2-layer projector Linear → ReLU → Linear (hidden width = the
/// backbone's feature width, output 128), NT-Xent at τ 0.5 for small data sets (0.1 for large batches), LARS at
/// 0.3 × batch / 256. v2 (Chen et al. 2020b): a 3-layer projector with BatchNorm on every layer.
/// </summary>
public sealed record SimClrOptions
{
    public int ProjectorLayers { get; init; } = 2;

    /// <summary>Hidden width of the projector; null takes the backbone's feature width (the paper's choice).</summary>
    public int? HiddenDim { get; init; }

    public int OutputDim { get; init; } = 128;

    /// <summary>BatchNorm after every projector layer (SimCLR v2).</summary>
    public bool ProjectorBatchNorm { get; init; }

    public float Temperature { get; init; } = 0.5f;

    /// <summary>Operand precision of the fused similarity products on tensor cores (the CPU always computes fp32).</summary>
    public MatmulPrecision Precision { get; init; } = MatmulPrecision.Tf32;

    /// <summary>The augmentation preset (see <see cref="AugmentationPresets"/>): "simclr", or "simclr-cifar" for small images.</summary>
    public string Augmentations { get; init; } = "simclr";

    /// <summary>
    /// SimCLR v2's memory (its appendix, after MoCo): keys of a momentum encoder queued as extra negatives, 0 for
    /// none. The queue runs on the fused InfoNCE beside NT-Xent: loss = ½ (NT-Xent over the batch + InfoNCE of each
    /// view against the momentum key of the other view and the queue). At most the data set's size.
    /// </summary>
    public int QueueLength { get; init; }

    /// <summary>m of the momentum encoder behind the queue.</summary>
    public float Momentum { get; init; } = 0.999f;

    /// <summary>Raise m to 1 by a cosine over the run (BYOL's schedule).</summary>
    public bool MomentumCosine { get; init; }

    public static SimClrOptions V1 => new();

    public static SimClrOptions V2 => new() { ProjectorLayers = 3, ProjectorBatchNorm = true };
}

/// <summary>
/// SimCLR: two views of each image go through the backbone and the projector as one batch of 2N, and NT-Xent on
/// the fused kernel (cosine similarities, softmax over the 2N − 1 other rows, no N × N matrix kept) pulls each view
/// towards its partner. In pseudo-code, as in the paper's Algorithm 1:
/// <code>
/// z = projector(backbone(concat(view_a, view_b)))      # [2N, 128]
/// loss = nt_xent(z, tau)                               # positives: (i, i + N)
/// loss.backward()
/// </code>
/// Data-parallel, each rank forwards its share of the batch and NT-Xent runs over every rank's z (see <see cref="NtXentLoss"/>);
/// with the memory, each rank's InfoNCE runs over its own rows, and every rank's momentum keys are all-gathered and
/// enqueued in one process's order, as MoCo's (the momentum encoder's batch norms synchronised under SyncBN).
/// </summary>
public sealed class SimClr(SimClrOptions? options = null) : Method
{
    private MlpHead? _projector;
    private Sequential? _model;
    private Plan? _plan;
    private NtXentLoss? _loss;
    private Tensor? _projectionGradient;
    private MomentumEncoder? _teacher;
    private InfoNceLoss? _queueLoss;
    private Tensor? _queueGradient;
    private Tensor? _swappedKeys;
    private Tensor? _stats;
    private ICommunicator? _ranks;
    private Tensor? _allKeys;

    public SimClrOptions Options { get; } = options ?? SimClrOptions.V1;

    public override string Name => Options.ProjectorLayers >= 3 ? "simclr-v2" : "simclr";

    /// <summary>Per 256 images: 0.3 with SimCLR's LARS (the paper), 0.4 with solo-learn's (its CIFAR recipe), 0.001 with AdamW.</summary>
    public override float BaseLearningRate(string optimizer) => optimizer switch
    {
        "lars-solo" => 0.4f,
        "adamw" => 1e-3f,
        _ => 0.3f,
    };

    public override Ema? Teacher => _teacher?.Ema;

    public override bool SupportsDataParallel => true;

    public override IEnumerable<BatchNorm> BatchNorms => _teacher is null ? Projector.BatchNorms : Projector.BatchNorms.Concat(_teacher.BatchNorms);

    /// <summary>The momentum keys' loss and queue; null without <see cref="SimClrOptions.QueueLength"/>.</summary>
    public InfoNceLoss? QueueLoss => _queueLoss;

    /// <summary>The momentum encoder's arena; null without <see cref="SimClrOptions.QueueLength"/>.</summary>
    public ParameterArena? TeacherArena => _teacher?.Arena;

    public MlpHead Projector => _projector ?? throw new InvalidOperationException("SimCLR is not built yet");

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size);

    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        var hidden = Options.HiddenDim ?? backbone.FeatureDim;
        _projector = new MlpHead(layout, new MlpHeadOptions(backbone.FeatureDim, hidden, Options.OutputDim)
        {
            Layers = Options.ProjectorLayers,
            HiddenBatchNorm = Options.ProjectorBatchNorm,
            OutputBatchNorm = Options.ProjectorBatchNorm,
        });
        _model = new Sequential(backbone, _projector);
        _teacher = Options.QueueLength > 0 ? new MomentumEncoder(backbone, _projector.Options) : null;
    }

    /// <summary>Binds backbone + projector as one chain (the backbone's binding is idempotent).</summary>
    public override void Bind(ParameterArena arena)
    {
        _model!.Bind(arena);
        _teacher?.Bind(arena);
    }

    public override void Initialize(ulong seed)
    {
        Projector.Initialize(seed);
        _teacher?.CopyStudent();
    }

    public override void Prepare(MethodContext context)
    {
        var size = context.Preset.Views[0].Size;
        var rows = 2 * context.BatchSize;
        _plan = _model!.Plan(new TensorShape(rows, size, size, context.Channels));
        _loss = new NtXentLoss(context.Backend, rows, Options.OutputDim, Options.Temperature, Options.Precision, context.Communicator);
        _projectionGradient = context.Backend.Allocate(new TensorShape(rows, Options.OutputDim), "simclr dz");
        if (_teacher is not null)
        {
            var backend = context.Backend;
            _teacher.Prepare(new TensorShape(rows, size, size, context.Channels), Options.Momentum, Options.MomentumCosine ? context.TotalSteps : 0);
            _queueLoss = new InfoNceLoss(backend, rows, Options.OutputDim, Math.Min(Options.QueueLength, context.DatasetImages), Options.Temperature, Options.Precision);
            _queueLoss.InitializeQueue(context.Seed ^ 0x73696D63UL);
            _queueGradient = backend.Allocate(new TensorShape(rows, Options.OutputDim), "simclr queue dz");
            _swappedKeys = backend.Allocate(new TensorShape(rows, Options.OutputDim), "simclr swapped keys");
            _stats = backend.Allocate(new TensorShape(3), "simclr stats");
            if (context.Communicator is { Size: > 1 } ranks)
            {
                _ranks = ranks;
                _allKeys = backend.Allocate(new TensorShape(ranks.Size * rows, Options.OutputDim), "simclr gathered keys");
            }
        }
    }

    public override Tensor TrainingStep(ViewGroups views)
    {
        if (_plan is null || _loss is null || _projectionGradient is null)
        {
            throw new InvalidOperationException("SimCLR.TrainingStep before Prepare");
        }
        var z = _plan.Forward(views.Groups[0], training: true);
        _loss.Forward(z);
        if (_teacher is null || _queueLoss is null || _queueGradient is null || _swappedKeys is null || _stats is null)
        {
            _loss.Backward(z, _projectionGradient);
            _plan.Backward(_projectionGradient);
            return _loss.Stats;
        }
        // The memory: each view against its image's momentum key of the other view, the queue as more negatives.
        var backend = _plan.Module.Backend;
        var n = views.BatchSize;
        var k = _teacher.Forward(views.Groups[0]);
        backend.Copy(k.SliceRows(n, n), _swappedKeys.SliceRows(0, n));
        backend.Copy(k.SliceRows(0, n), _swappedKeys.SliceRows(n, n));
        _loss.Backward(z, _projectionGradient, 0.5f);
        _queueLoss.Compute(z, _swappedKeys, _queueGradient, 0.5f);
        backend.Add(_projectionGradient, _queueGradient, _projectionGradient);
        _plan.Backward(_projectionGradient);
        if (_ranks is null || _allKeys is null)
        {
            _queueLoss.Enqueue(k);
        }
        else
        {
            _ranks.AllGather(k, _allKeys);
            _queueLoss.EnqueueFromRanks(_allKeys, _ranks.Size, views: 2);
        }
        // Statistics of the two terms averaged, as the loss is.
        backend.Add(_loss.Stats, _queueLoss.Stats, _stats);
        backend.Scale(_stats, 0.5f, _stats);
        return _stats;
    }

    public override IReadOnlyList<(string Name, Tensor Tensor)> StateTensors =>
        _teacher is null || _queueLoss is null ? [] : [.. _teacher.StateTensors, ("queue", _queueLoss.Queue.Keys)];

    public override IReadOnlyDictionary<string, long> HostState => _queueLoss is null
        ? new Dictionary<string, long>()
        : new Dictionary<string, long> { ["queue_position"] = _queueLoss.Queue.Position };

    public override void RestoreHostState(IReadOnlyDictionary<string, long> state)
    {
        if (_queueLoss is null)
        {
            return;
        }
        var position = state["queue_position"];
        if (position < 0 || position >= _queueLoss.Queue.Capacity)
        {
            throw new ArgumentException($"queue_position {position} is outside the queue of {_queueLoss.Queue.Capacity} keys");
        }
        _queueLoss.Queue.Position = (int)position;
    }

    public override string DescribeOptions() => string.Create(
        CultureInfo.InvariantCulture,
        $"{{\"projector_layers\":{Options.ProjectorLayers},\"hidden_dim\":{MethodJson.HiddenWidth(Options.HiddenDim, _projector)},\"output_dim\":{Options.OutputDim},\"projector_bn\":{(Options.ProjectorBatchNorm ? "true" : "false")},\"temperature\":{Options.Temperature:R},\"augmentations\":\"{Options.Augmentations}\",\"queue\":{_queueLoss?.Queue.Capacity ?? 0},\"momentum\":{Options.Momentum:R},\"momentum_cosine\":{(Options.MomentumCosine ? "true" : "false")}}}");

    protected override void DisposeOwned()
    {
        // The backbone belongs to the trainer: only the method's own plan, loss and head are released here.
        _plan?.Dispose();
        _loss?.Dispose();
        _projectionGradient?.Dispose();
        _teacher?.Dispose();
        _queueLoss?.Dispose();
        _queueGradient?.Dispose();
        _swappedKeys?.Dispose();
        _stats?.Dispose();
        _allKeys?.Dispose();
        _projector?.Dispose();
    }
}
