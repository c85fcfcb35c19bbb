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
/// MoCo's options. v1 (He et al. 2020): a linear head to 128 dimensions, τ 0.07, views of crop (0.2, 1), jitter 0.4
/// and grayscale. v2 (Chen et al. 2020): a 2-layer MLP head (hidden = the backbone's feature width), τ 0.2 and the
/// v2 views (blur, weaker hue). Both: a key encoder following the query encoder by EMA (m 0.999; 0.99 for small data
/// sets, as solo-learn's CIFAR recipe), a queue of 65,536 normalised keys (capped by the data set's size), SGD.
/// </summary>
public sealed record MocoOptions
{
    public int Version { get; init; } = 2;

    /// <summary>1: a linear head (v1); 2: Linear → ReLU → Linear (v2).</summary>
    public int ProjectorLayers { get; init; } = 2;

    /// <summary>Hidden width of the v2 head; null takes the backbone's feature width (the paper's 2048 for ResNet-50).</summary>
    public int? HiddenDim { get; init; }

    public int OutputDim { get; init; } = 128;

    public float Temperature { get; init; } = 0.2f;

    /// <summary>Keys in the queue; the run uses at most the data set's size (a key of every image is the most there is).</summary>
    public int QueueLength { get; init; } = 65536;

    /// <summary>m of the key encoder's EMA.</summary>
    public float Momentum { get; init; } = 0.999f;

    /// <summary>Raise m to 1 by a cosine over the run (BYOL's and MoCo v3's schedule) instead of keeping it constant.</summary>
    public bool MomentumCosine { get; init; }

    /// <summary>
    /// Both views as queries against the other's keys, the two losses averaged and both keys enqueued (solo-learn's
    /// "mocov2plus", MoCo v3's form); false is the paper's one query view and one key view.
    /// </summary>
    public bool Symmetric { get; init; }

    /// <summary>CIFAR-size images: the CIFAR recipe's learning rate (SGD 0.3 per 256 images instead of 0.03).</summary>
    public bool SmallImages { get; init; }

    /// <summary>
    /// Data-parallel: the key encoder runs on a shard of a permutation of the global key batch (MoCo's shuffle-BN,
    /// its recipe on several GPUs), its batch norms per rank; false runs it on the rank's own key images, its batch
    /// norms synchronised when the run's SyncBN is on. One process has nothing to shuffle across.
    /// </summary>
    public bool ShuffleBn { get; init; }

    public MatmulPrecision Precision { get; init; } = MatmulPrecision.Tf32;

    /// <summary>"mocov1", "mocov2", or "simclr-cifar" for small images.</summary>
    public string Augmentations { get; init; } = "mocov2";

    public static MocoOptions V1 => new() { Version = 1, ProjectorLayers = 1, Temperature = 0.07f, Augmentations = "mocov1" };

    public static MocoOptions V2 => new();
}

/// <summary>
/// MoCo: a query encoder (backbone + head, trained) and a key encoder of the same layout in its own arena (not
/// trained: it follows the query encoder by EMA, fused into the optimiser's pass). Each query's positive is its
/// image's key from the other view; its negatives are the queue of keys from earlier batches. As Algorithm 1:
/// <code>
/// q = normalize(f_q(x_q))                              # [N, 128], queries
/// k = normalize(f_k(x_k))                              # no gradient
/// loss = cross_entropy([q·k, q·queueᵀ] / τ, label 0)   # the fused InfoNCE sweep, no N × K matrix kept
/// loss.backward(); step(f_q); f_k ← m·f_k + (1 − m)·f_q
/// enqueue(k)
/// </code>
/// Shuffle-BN (MoCo's defence against BatchNorm leaking the positive through batch statistics) needs several
/// devices; on one device, as solo-learn on one GPU, the key encoder runs on the plain key batch. The key encoder's
/// BatchNorm keeps its own running statistics (the EMA covers the trainable parameters only).
/// <para>
/// Data-parallel: each rank's loss is the mean over its own queries (against its own keys and the shared queue), so
/// the trainer's gradient mean is the global batch's; the keys are all-gathered and enqueued in the order one process
/// of the global batch enqueues them (view by view, each view's images in global order), so every rank's queue stays
/// that process's. With SyncBN the key encoder's batch norms are synchronised too; with <see cref="MocoOptions.ShuffleBn"/>
/// they are not, and <see cref="KeyShuffle"/> computes the keys on shuffled shards instead. The EMA needs nothing: it
/// runs after the same all-reduced step on every rank.
/// </para>
/// </summary>
public sealed class Moco(MocoOptions? options = null) : Method
{
    private MlpHead? _projector;
    private Sequential? _student;
    private MomentumEncoder? _teacher;
    private ParameterArena? _studentArena;
    private Plan? _queryPlan;
    private InfoNceLoss? _loss;
    private Tensor? _queryGradient;
    private Tensor? _swappedKeys;
    private ICommunicator? _ranks;
    private Tensor? _globalKeys;
    private KeyShuffle? _shuffle;

    public MocoOptions Options { get; } = options ?? MocoOptions.V2;

    public override string Name => Options.Version == 1 ? "moco" : "mocov2";

    /// <summary>The key encoder's arena (backbone and head under the query encoder's names).</summary>
    public ParameterArena TeacherArena => _teacher?.Arena ?? throw new InvalidOperationException("MoCo is not built yet");

    public InfoNceLoss Loss => _loss ?? throw new InvalidOperationException("MoCo is not prepared yet");

    public override Ema? Teacher => _teacher?.Ema;

    /// <summary>
    /// The key encoder's output of the last step (before normalisation): this rank's keys as they were enqueued, or
    /// with shuffle-BN across ranks, the keys of this rank's shuffled shard.
    /// </summary>
    public Tensor LastKeys => _teacher?.Output ?? throw new InvalidOperationException("MoCo is not built yet");

    public override bool SupportsDataParallel => true;

    /// <summary>The head's, and the key encoder's unless its batches are shuffled across ranks instead.</summary>
    public override IEnumerable<BatchNorm> BatchNorms => Options.ShuffleBn ? _projector!.BatchNorms : _projector!.BatchNorms.Concat(_teacher!.BatchNorms);

    public override string DefaultOptimizer(bool smallImages) => "sgd";

    /// <summary>SGD: 0.03 per 256 images (the paper), 0.3 for small images (solo-learn's CIFAR recipe); LARS as SimCLR's.</summary>
    public override float BaseLearningRate(string optimizer) => optimizer switch
    {
        "sgd" => Options.SmallImages ? 0.3f : 0.03f,
        "lars-solo" => 0.4f,
        "adamw" => 1e-3f,
        _ => 0.3f,
    };

    /// <summary>SGD: 1e-4 (MoCo's); LARS and AdamW as SimCLR's recipes.</summary>
    public override float DefaultWeightDecay(string optimizer) => optimizer == "sgd" ? 1e-4f : base.DefaultWeightDecay(optimizer);

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size);

    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        var head = new MlpHeadOptions(backbone.FeatureDim, Options.HiddenDim ?? backbone.FeatureDim, Options.OutputDim) { Layers = Options.ProjectorLayers };
        _projector = new MlpHead(layout, head);
        _student = new Sequential(backbone, _projector);
        _teacher = new MomentumEncoder(backbone, head);
    }

    public override void Bind(ParameterArena arena)
    {
        _student!.Bind(arena);
        _studentArena = arena;
        _teacher!.Bind(arena);
    }

    /// <summary>The head from the seed, then the key encoder as a copy of the whole query encoder (MoCo's start).</summary>
    public override void Initialize(ulong seed)
    {
        _projector!.Initialize(seed);
        _teacher!.CopyStudent();
    }

    public override void Prepare(MethodContext context)
    {
        var size = context.Preset.Views[0].Size;
        var rows = Options.Symmetric ? 2 * context.BatchSize : context.BatchSize;
        var shape = new TensorShape(rows, size, size, context.Channels);
        var queue = Math.Min(Options.QueueLength, context.DatasetImages);
        _teacher!.Prepare(shape, Options.Momentum, Options.MomentumCosine ? context.TotalSteps : 0);
        _queryPlan = _student!.Plan(shape);
        _loss = new InfoNceLoss(context.Backend, rows, Options.OutputDim, queue, Options.Temperature, Options.Precision);
        _loss.InitializeQueue(context.Seed ^ 0x6D6F636FUL);
        _queryGradient = context.Backend.Allocate(new TensorShape(rows, Options.OutputDim), "moco dq");
        _swappedKeys = Options.Symmetric ? context.Backend.Allocate(new TensorShape(rows, Options.OutputDim), "moco swapped keys") : null;
        if (context.Communicator is { Size: > 1 } ranks)
        {
            _ranks = ranks;
            if (Options.ShuffleBn)
            {
                _shuffle = new KeyShuffle(ranks, context.Backend, shape, Options.OutputDim, context.Seed);
            }
            else
            {
                _globalKeys = context.Backend.Allocate(new TensorShape(ranks.Size * rows, Options.OutputDim), "moco gathered keys");
            }
        }
    }

    public override Tensor TrainingStep(ViewGroups views)
    {
        if (_queryPlan is null || _teacher is null || _loss is null || _queryGradient is null)
        {
            throw new InvalidOperationException("MoCo.TrainingStep before Prepare");
        }
        var n = views.BatchSize;
        var pair = views.Groups[0];
        var queries = Options.Symmetric ? pair : pair.SliceRows(0, n);
        var keyImages = Options.Symmetric ? pair : pair.SliceRows(n, n);
        var q = _queryPlan.Forward(queries, training: true);
        var (k, allKeys) = Keys(keyImages, views.Step);
        var positives = k;
        if (_swappedKeys is { } swapped)
        {
            // Query i of view a meets its image's key of view b, and the other way round.
            var backend = _studentArena!.Backend;
            backend.Copy(k.SliceRows(n, n), swapped.SliceRows(0, n));
            backend.Copy(k.SliceRows(0, n), swapped.SliceRows(n, n));
            positives = swapped;
        }
        _loss.Compute(q, positives, _queryGradient);
        _queryPlan.Backward(_queryGradient);
        _loss.EnqueueFromRanks(allKeys, _ranks?.Size ?? 1, Options.Symmetric ? 2 : 1);
        return _loss.Stats;
    }

    public override IReadOnlyList<(string Name, Tensor Tensor)> StateTensors =>
    [
        .. _teacher!.StateTensors,
        ("queue", Loss.Queue.Keys),
    ];

    public override IReadOnlyDictionary<string, long> HostState => new Dictionary<string, long> { ["queue_position"] = Loss.Queue.Position };

    public override void RestoreHostState(IReadOnlyDictionary<string, long> state)
    {
        var position = state["queue_position"];
        if (position < 0 || position >= Loss.Queue.Capacity)
        {
            throw new ArgumentException($"queue_position {position} is outside the queue of {Loss.Queue.Capacity} keys");
        }
        Loss.Queue.Position = (int)position;
    }

    public override string DescribeOptions() => string.Create(
        CultureInfo.InvariantCulture,
        $"{{\"version\":{Options.Version},\"projector_layers\":{Options.ProjectorLayers},\"hidden_dim\":{MethodJson.HiddenWidth(Options.HiddenDim, _projector)},\"output_dim\":{Options.OutputDim},\"temperature\":{Options.Temperature:R},\"queue\":{_loss?.Queue.Capacity ?? Options.QueueLength},\"momentum\":{Options.Momentum:R},\"momentum_cosine\":{(Options.MomentumCosine ? "true" : "false")},\"symmetric\":{(Options.Symmetric ? "true" : "false")},\"augmentations\":\"{Options.Augmentations}\",\"shuffle_bn\":{(Options.ShuffleBn ? "true" : "false")}}}");

    /// <summary>This rank's keys, and every rank's in rank order (this rank's alone in one process).</summary>
    private (Tensor Own, Tensor All) Keys(Tensor keyImages, long step)
    {
        if (_shuffle is not null)
        {
            _shuffle.Unshuffle(_teacher!.Forward(_shuffle.Shuffle(keyImages, step)));
            return (_shuffle.GlobalKeys.SliceRows(_ranks!.Rank * _shuffle.Rows, _shuffle.Rows), _shuffle.GlobalKeys);
        }
        var k = _teacher!.Forward(keyImages);
        if (_globalKeys is null)
        {
            return (k, k);
        }
        _ranks!.AllGather(k, _globalKeys);
        return (k, _globalKeys);
    }

    protected override void DisposeOwned()
    {
        // The backbone belongs to the trainer; the key encoder, its arena and the method's plans are released here.
        _queryPlan?.Dispose();
        _loss?.Dispose();
        _queryGradient?.Dispose();
        _swappedKeys?.Dispose();
        _globalKeys?.Dispose();
        _shuffle?.Dispose();
        _projector?.Dispose();
        _teacher?.Dispose();
    }
}
