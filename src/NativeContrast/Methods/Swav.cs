namespace NativeContrast.Methods;

using System.Globalization;
using NativeContrast.Data;
using NativeContrast.Distributed;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// SwAV's options (Caron et al. 2020; main_swav.py): projection head Linear → BN → ReLU → Linear (hidden = the
/// backbone's feature width) to 128 dimensions, 3000 prototypes, τ 0.1, Sinkhorn ε 0.05 with 3 iterations, codes from
/// the two large crops, multi-crop 2 + 6, prototypes frozen for the first epoch, LARS; the feature queue off unless
/// a length is given.
/// </summary>
public sealed record SwavOptions
{
    public int? HiddenDim { get; init; }

    public int OutputDim { get; init; } = 128;

    public int Prototypes { get; init; } = 3000;

    public float Temperature { get; init; } = 0.1f;

    public float Epsilon { get; init; } = 0.05f;

    public int SinkhornIterations { get; init; } = 3;

    /// <summary>Small crops besides the two large ones.</summary>
    public int SmallCrops { get; init; } = 6;

    /// <summary>Features per assignment crop kept to widen Sinkhorn's equipartition (SwAV: 3840 at batch 256); 0: none.</summary>
    public int QueueLength { get; init; }

    /// <summary>The epoch from which the queue fills; it joins the codes once full (SwAV: epoch 15 of 800).</summary>
    public int QueueStartEpoch { get; init; }

    /// <summary>Epochs during which the prototypes do not move (SwAV: 313 iterations, one ImageNet epoch at batch 4096).</summary>
    public double FreezePrototypesEpochs { get; init; } = 1;

    /// <summary>"swav", or "swav-cifar" (colour strength 0.5, no blur) for small images.</summary>
    public string Augmentations { get; init; } = "swav";
}

/// <summary>
/// SwAV: every crop goes through the backbone and the head, its normalised embedding is scored against the
/// prototypes, and each large crop's codes (Sinkhorn-Knopp over the batch, an equipartition of the prototypes)
/// are predicted from every other crop. As in the paper's Algorithm 1:
/// <code>
/// z = normalize(head(backbone(crops)))                  # all crops, forwarded by resolution
/// scores = z @ prototypesᵀ                              # [crops·N, K]
/// q_c = sinkhorn(scores_c) for c in the 2 large crops   # constants (optionally with queued features)
/// loss = mean over c, v ≠ c of −Σ q_c · log softmax(scores_v / τ)
/// loss.backward(); (prototypes frozen early); step; prototypes ← normalize(prototypes)
/// </code>
/// Data-parallel: the codes come from Sinkhorn over every rank's samples of the crop (its prototype normalisations
/// reduced across ranks, <see cref="SinkhornKnopp"/>), each rank's loss is the mean over its samples; freezing and
/// normalising the prototypes need nothing, as every rank steps the same all-reduced gradients. The feature queue is
/// the one process's: every rank keeps all of it, filled from every rank's features in global order (an all-gather),
/// and each rank joins its 1/ranks share of the queued rows to its samples for Sinkhorn, which sums over every rank's
/// rows anyway: so the ranks' shares of the queue weigh in once, and each rank scores only its share.
/// </summary>
public sealed class Swav(SwavOptions? options = null) : Method
{
    private static readonly int[] AssignmentCrops = [0, 1];
    private MlpHead? _projector;
    private LinearHead? _prototypes;
    private Sequential? _model;
    private ParameterArena? _arena;
    private Plan[] _groupPlans = [];
    private Plan? _prototypePlan;
    private SwavLoss? _loss;
    private Tensor? _embeddings;
    private Tensor? _normalized;
    private Tensor? _norms;
    private Tensor? _embeddingGradient;
    private Tensor? _scoresGradient;
    private Tensor? _stats;
    private Tensor? _frozenPrototypes;
    private Tensor[] _queues = [];
    private Tensor[] _queuedScores = [];
    private ICommunicator? _ranks;
    private Tensor? _gatheredFeatures;
    private long _freezeSteps;
    private int _stepsPerEpoch = 1;
    private int _queuePosition;
    private int _queueFill;

    public SwavOptions Options { get; } = options ?? new SwavOptions();

    public override string Name => "swav";

    public override bool SupportsDataParallel => true;

    public override IEnumerable<BatchNorm> BatchNorms => _projector!.BatchNorms;

    public LinearHead Prototypes => _prototypes ?? throw new InvalidOperationException("SwAV is not built yet");

    /// <summary>Queued features per assignment crop so far (at most the queue's length).</summary>
    public int QueueFill => _queueFill;

    /// <summary>LARS: SwAV's 4.8 at batch 4096 (0.3 per 256), solo-learn's CIFAR 0.6 per 256 with its LARS.</summary>
    public override float BaseLearningRate(string optimizer) => optimizer switch
    {
        "lars-solo" => 0.6f,
        "adamw" => 1e-3f,
        _ => 0.3f,
    };

    /// <summary>1e-6 (SwAV's and solo-learn's CIFAR recipe) whatever the optimiser.</summary>
    public override float DefaultWeightDecay(string optimizer) => 1e-6f;

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size, Options.SmallCrops);

    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        _projector = new MlpHead(layout, new MlpHeadOptions(backbone.FeatureDim, Options.HiddenDim ?? backbone.FeatureDim, Options.OutputDim) { HiddenBatchNorm = true });
        _prototypes = LinearHead.Prototypes(layout, Options.OutputDim, Options.Prototypes);
        _model = new Sequential(backbone, _projector);
    }

    public override void Bind(ParameterArena arena)
    {
        _model!.Bind(arena);
        Prototypes.Bind(arena);
        _arena = arena;
    }

    public override void Initialize(ulong seed)
    {
        _projector!.Initialize(seed);
        Prototypes.Initialize(seed);
        Prototypes.NormalizeWeightRows();
    }

    public override void Prepare(MethodContext context)
    {
        var backend = context.Backend;
        var batch = context.BatchSize;
        var crops = context.Preset.ViewCount;
        var plans = new List<Plan>();
        for (var v = 0; v < crops;)
        {
            var size = context.Preset.Views[v].Size;
            var count = 1;
            while (v + count < crops && context.Preset.Views[v + count].Size == size)
            {
                count++;
            }
            plans.Add(_model!.Plan(new TensorShape(count * batch, size, size, context.Channels)));
            v += count;
        }
        _groupPlans = [.. plans];
        var rows = crops * batch;
        _prototypePlan = Prototypes.Plan(new TensorShape(rows, Options.OutputDim), inputGradient: true);
        _loss = new SwavLoss(backend, Options.Temperature, Options.Epsilon, Options.SinkhornIterations, AssignmentCrops, context.Communicator);
        _embeddings = backend.Allocate(new TensorShape(rows, Options.OutputDim), "swav embeddings");
        _normalized = backend.Allocate(new TensorShape(rows, Options.OutputDim), "swav normalised embeddings");
        _norms = backend.Allocate(new TensorShape(rows), "swav embedding norms");
        _embeddingGradient = backend.Allocate(new TensorShape(rows, Options.OutputDim), "swav dz");
        _scoresGradient = backend.Allocate(new TensorShape(rows, Options.Prototypes), "swav dscores");
        _stats = backend.Allocate(new TensorShape(3), "swav stats");
        // SwAV has no positive pair: its statistics are the loss alone.
        backend.Fill(_stats, float.NaN);
        _frozenPrototypes = backend.Allocate(Prototypes.Linear.Weight.Shape, "swav frozen prototypes");
        _stepsPerEpoch = context.StepsPerEpoch;
        _freezeSteps = (long)Math.Round(Options.FreezePrototypesEpochs * context.StepsPerEpoch);
        if (Options.QueueLength > 0)
        {
            _ranks = context.Communicator is { Size: > 1 } ranks ? ranks : null;
            var rankCount = _ranks?.Size ?? 1;
            if (Options.QueueLength < batch * rankCount)
            {
                throw new ArgumentException($"SwAV's queue of {Options.QueueLength} features is shorter than a batch of {batch * rankCount} (--queue)");
            }
            if (Options.QueueLength % rankCount != 0)
            {
                throw new ArgumentException($"SwAV's queue of {Options.QueueLength} features does not split evenly over {rankCount} ranks, which share its rows out for Sinkhorn (--queue)");
            }
            _gatheredFeatures = _ranks is null ? null : backend.Allocate(new TensorShape(rankCount * batch, Options.OutputDim), "swav gathered features");
            _queues = [.. AssignmentCrops.Select(c => backend.Allocate(new TensorShape(Options.QueueLength, Options.OutputDim), $"swav queue {c}"))];
            _queuedScores = [.. AssignmentCrops.Select(c => backend.Allocate(new TensorShape(Options.QueueLength / rankCount, Options.Prototypes), $"swav queued scores {c}"))];
            foreach (var queue in _queues)
            {
                backend.Fill(queue, 0f);
            }
        }
    }

    public override Tensor TrainingStep(ViewGroups views)
    {
        if (_prototypePlan is null || _loss is null || _embeddings is null || _normalized is null || _norms is null || _embeddingGradient is null || _scoresGradient is null || _stats is null)
        {
            throw new InvalidOperationException("SwAV.TrainingStep before Prepare");
        }
        var backend = _arena!.Backend;
        var batch = views.BatchSize;
        var crops = views.ViewCounts.Sum();
        var row = 0;
        for (var g = 0; g < views.Groups.Count; g++)
        {
            var z = _groupPlans[g].Forward(views.Groups[g], training: true);
            backend.Copy(z, _embeddings.SliceRows(row, z.Rows));
            row += z.Rows;
        }
        backend.L2NormalizeRows(_embeddings, _normalized, _norms);
        var scores = _prototypePlan.Forward(_normalized, training: true);
        var useQueue = _queues.Length > 0 && _queueFill == Options.QueueLength;
        if (useQueue)
        {
            var share = _queuedScores[0].Rows;
            var first = (_ranks?.Rank ?? 0) * share;
            for (var i = 0; i < _queues.Length; i++)
            {
                backend.Gemm(_queues[i].SliceRows(first, share), false, Prototypes.Linear.Weight, true, _queuedScores[i]);
            }
        }
        _loss.Compute(scores, crops, _stats.View(0, new TensorShape(1)), _scoresGradient, useQueue ? _queuedScores : null);
        _prototypePlan.Backward(_scoresGradient);
        backend.L2NormalizeRowsBackward(_normalized, _norms, _prototypePlan.InputGradient!, _embeddingGradient);
        row = 0;
        for (var g = 0; g < views.Groups.Count; g++)
        {
            var rows = _groupPlans[g].Output.Rows;
            _groupPlans[g].Backward(_embeddingGradient.SliceRows(row, rows));
            row += rows;
        }
        if (_queues.Length > 0 && views.Step / _stepsPerEpoch >= Options.QueueStartEpoch)
        {
            Enqueue(batch);
        }
        return _stats;
    }

    /// <summary>Frozen prototypes: keep their values to put back after the step (SwAV drops their gradient).</summary>
    public override void BeforeOptimizerStep(long step)
    {
        if (step < _freezeSteps)
        {
            _arena!.Backend.Copy(Prototypes.Linear.Weight, _frozenPrototypes!);
        }
    }

    /// <summary>
    /// While frozen the prototypes and their optimiser state stay as they were (PyTorch skips a parameter without a
    /// gradient, decay and momentum included); after a real step every row is normalised, as SwAV does before each step.
    /// </summary>
    public override void AfterOptimizerStep(long step)
    {
        if (step < _freezeSteps)
        {
            var arena = _arena!;
            arena.Backend.Copy(_frozenPrototypes!, Prototypes.Linear.Weight);
            var view = arena[$"{Prototypes.Linear.Name}.weight"];
            for (var slot = 0; slot < arena.StateSlots; slot++)
            {
                arena.Backend.Fill(arena.State(slot, view), 0f);
            }
            return; // already unit rows: normalising again would move their last bits
        }
        Prototypes.NormalizeWeightRows();
    }

    public override IReadOnlyList<(string Name, Tensor Tensor)> StateTensors =>
        [.. _queues.Select((q, i) => ($"queue{AssignmentCrops[i]}", q))];

    public override IReadOnlyDictionary<string, long> HostState => _queues.Length == 0
        ? new Dictionary<string, long>()
        : new Dictionary<string, long> { ["queue_position"] = _queuePosition, ["queue_fill"] = _queueFill };

    public override void RestoreHostState(IReadOnlyDictionary<string, long> state)
    {
        if (_queues.Length == 0)
        {
            return;
        }
        var (position, fill) = (state["queue_position"], state["queue_fill"]);
        if (position < 0 || position >= Options.QueueLength || fill < 0 || fill > Options.QueueLength)
        {
            throw new ArgumentException($"queue_position {position} or queue_fill {fill} is outside the queue of {Options.QueueLength} features");
        }
        (_queuePosition, _queueFill) = ((int)position, (int)fill);
    }

    public override string DescribeOptions() => string.Create(
        CultureInfo.InvariantCulture,
        $"{{\"hidden_dim\":{MethodJson.HiddenWidth(Options.HiddenDim, _projector)},\"output_dim\":{Options.OutputDim},\"prototypes\":{Options.Prototypes},\"temperature\":{Options.Temperature:R},\"epsilon\":{Options.Epsilon:R},\"sinkhorn_iterations\":{Options.SinkhornIterations},\"small_crops\":{Options.SmallCrops},\"queue\":{Options.QueueLength},\"queue_start_epoch\":{Options.QueueStartEpoch},\"freeze_prototypes_epochs\":{Options.FreezePrototypesEpochs:R},\"augmentations\":\"{Options.Augmentations}\"}}");

    /// <summary>
    /// The assignment crops' normalised embeddings over the oldest queued features (a ring: Sinkhorn ignores row order);
    /// data-parallel, every rank's, in global order.
    /// </summary>
    private void Enqueue(int ownBatch)
    {
        var backend = _arena!.Backend;
        var length = Options.QueueLength;
        var batch = ownBatch * (_ranks?.Size ?? 1);
        for (var i = 0; i < _queues.Length; i++)
        {
            var source = _normalized!.SliceRows(AssignmentCrops[i] * ownBatch, ownBatch);
            if (_ranks is not null && _gatheredFeatures is not null)
            {
                _ranks.AllGather(source, _gatheredFeatures);
                source = _gatheredFeatures;
            }
            var first = Math.Min(batch, length - _queuePosition);
            backend.Copy(source.SliceRows(0, first), _queues[i].SliceRows(_queuePosition, first));
            if (first < batch)
            {
                backend.Copy(source.SliceRows(first, batch - first), _queues[i].SliceRows(0, batch - first));
            }
        }
        _queuePosition = (_queuePosition + batch) % length;
        _queueFill = Math.Min(length, _queueFill + batch);
    }

    protected override void DisposeOwned()
    {
        foreach (var plan in _groupPlans)
        {
            plan.Dispose();
        }
        _prototypePlan?.Dispose();
        _loss?.Dispose();
        _embeddings?.Dispose();
        _normalized?.Dispose();
        _norms?.Dispose();
        _embeddingGradient?.Dispose();
        _scoresGradient?.Dispose();
        _stats?.Dispose();
        _frozenPrototypes?.Dispose();
        _gatheredFeatures?.Dispose();
        foreach (var tensor in _queues.Concat(_queuedScores))
        {
            tensor.Dispose();
        }
        _projector?.Dispose();
        _prototypes?.Dispose();
    }
}
