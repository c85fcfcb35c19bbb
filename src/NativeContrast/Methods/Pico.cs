namespace NativeContrast.Methods;

using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Distributed;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>PiCO's options (Wang et al., ICLR 2022; the defaults are its CIFAR recipe, hbzju/PiCO's run.sh).</summary>
public sealed record PicoOptions
{
    /// <summary>q: the probability that a wrong class joins an image's candidate set (the benchmark's ambiguity).</summary>
    public double PartialRate { get; init; } = 0.1;

    /// <summary>Seed of the candidate sets (fixed, so runs with different training seeds see the same sets).</summary>
    public ulong PartialLabelSeed { get; init; } = 1;

    /// <summary>τ of the contrastive term (PiCO's SupCon: 0.07, base temperature the same, so no rescaling).</summary>
    public float Temperature { get; init; } = 0.07f;

    /// <summary>λ: loss = classification on the disambiguated labels + λ · contrastive.</summary>
    public float LossWeight { get; init; } = 0.5f;

    public int QueueLength { get; init; } = 8192;

    /// <summary>m of the key encoder's EMA (0.999 in PiCO).</summary>
    public float Momentum { get; init; } = 0.999f;

    /// <summary>m of the class prototypes' moving average of the normalised embeddings.</summary>
    public float PrototypeMomentum { get; init; } = 0.99f;

    /// <summary>φ, the pseudo-label scores' moving average, runs linearly from the first value to the second over the run.</summary>
    public float ConfidenceMomentumStart { get; init; } = 0.95f;

    public float ConfidenceMomentumEnd { get; init; } = 0.8f;

    /// <summary>
    /// The epoch from which labels are disambiguated and the contrastive term takes every same-label column as a
    /// positive (PiCO's prot_start); before it the contrastive term is MoCo's InfoNCE against the queue.
    /// </summary>
    public int PrototypeStartEpoch { get; init; } = 1;

    public int OutputDim { get; init; } = 128;

    /// <summary>Classes of the training set: the classifier's outputs and the candidate sets' width.</summary>
    public int Classes { get; init; }

    /// <summary>The views: query (weak) and key; PiCO's key view adds RandAugment, which the presets do not have.</summary>
    public string Augmentations { get; init; } = "mocov2";
}

/// <summary>
/// PiCO, partial-label learning with contrastive label disambiguation. A query encoder (backbone → classifier, and
/// backbone → 2-layer head → unit embedding q) and its momentum copy (keys k of the other view) share a queue of keys
/// and their pseudo-labels. In pseudo-code, per batch (as hbzju/PiCO's model.py and train.py):
/// <code>
/// logits, q = classifier(f(x_w)), head(f(x_w));  k = key_encoder(x_s)
/// pseudo = argmax over the candidate set of softmax(logits)           # the queries' labels for the contrastive term
/// score = softmax(normalize(q) · prototypesᵀ)                           # before the prototypes move
/// for each row: prototypes[pseudo] ← normalize(m·prototypes[pseudo] + (1 − m)·normalize(q))
/// if epoch ≥ start: confidence[i] ← φ·confidence[i] + (1 − φ)·onehot(argmax over the candidate set of score)
/// contrastive = label-masked InfoNCE over [q; k; queue] with positives = same pseudo-label (MoCo's before start)
/// loss = −Σ_c confidence[i, c] · log softmax(logits)_c + λ · contrastive;  enqueue(k, pseudo)
/// </code>
/// The disambiguation (B × C scores, the prototypes, the confidence table of N × C) runs on the host: it reads back
/// the batch's logits and embeddings, B × (C + 128) floats a step.
/// <para>
/// Data-parallel: every rank all-gathers the batch's logits, embeddings and data-set indices and runs the disambiguation
/// over the global batch in its order, so the prototypes and every sample's confidence move as in one process, the
/// same on every rank, with nothing more to reconcile; each rank keeps its own rows' pseudo-labels and targets. The
/// contrastive term runs this rank's queries against every rank's q, k and the queue (<see cref="LabelMaskedInfoNceLoss"/>),
/// and the keys with their pseudo-labels are enqueued from every rank in rank order. The classification term is the
/// mean over this rank's rows, the key encoder's batch norms are synchronised under SyncBN.
/// </para>
/// </summary>
public sealed class Pico(PicoOptions? options = null) : Method
{
    private ResNet? _backbone;
    private MlpHead? _head;
    private LinearHead? _classifier;
    private MomentumEncoder? _teacher;
    private Plan? _backbonePlan;
    private Plan? _headPlan;
    private Plan? _classifierPlan;
    private LabelMaskedInfoNceLoss? _loss;
    private Tensor? _moCoWorkspace;
    private Tensor? _embeddingGradient;
    private Tensor? _logitGradient;
    private Tensor? _featureGradient;
    private Tensor? _pseudoLabels;
    private Tensor? _targets;
    private Tensor? _stats;
    private Tensor? _confidenceState;
    private Tensor? _prototypeState;
    private PartialLabels? _partialLabels;
    private float[] _confidence = [];
    private float[] _prototypes = [];
    private float[] _hostLogits = [];
    private float[] _hostEmbeddings = [];
    private float[] _hostPseudo = [];
    private float[] _hostTargets = [];
    private float[] _hostScores = [];
    private readonly float[] _hostStats = new float[3];
    private IBackend? _backend;
    private int _classes;
    private int _stepsPerEpoch = 1;
    private int _epochs = 1;
    private ICommunicator? _ranks;
    private Tensor? _allLogits;
    private Tensor? _allEmbeddings;
    private Tensor? _indices;
    private Tensor? _allIndices;
    private float[] _hostIndices = [];
    private int[] _batchIndices = [];

    public PicoOptions Options { get; } = options ?? new PicoOptions();

    public override string Name => "pico";

    /// <summary>SGD at 0.01 per 256 images (PiCO's CIFAR runs), as for any other optimiser asked for.</summary>
    public override float BaseLearningRate(string optimizer) => optimizer == "adamw" ? 1e-3f : 0.01f;

    public override string DefaultOptimizer(bool smallImages) => "sgd";

    /// <summary>1e-3 with SGD (PiCO's CIFAR runs).</summary>
    public override float DefaultWeightDecay(string optimizer) => optimizer == "sgd" ? 1e-3f : base.DefaultWeightDecay(optimizer);

    public override Ema? Teacher => _teacher?.Ema;

    public override bool SupportsDataParallel => true;

    public override IEnumerable<BatchNorm> BatchNorms => _head!.BatchNorms.Concat(_teacher!.BatchNorms);

    /// <summary>The linear classifier on the backbone's features, whose predictions are the method's output; the trainer scores it on the test split.</summary>
    public override Module? Classifier => _classifier;

    public LabelMaskedInfoNceLoss Loss => _loss ?? throw new InvalidOperationException("PiCO is not prepared yet");

    /// <summary>The keys' queue and their pseudo-labels (PiCO always has one).</summary>
    public KeyQueue Queue => Loss.Queue ?? throw new InvalidOperationException("PiCO has no queue");

    public Tensor QueueLabels => Loss.QueueLabels ?? throw new InvalidOperationException("PiCO has no queue");

    public PartialLabels PartialLabels => _partialLabels ?? throw new InvalidOperationException("PiCO is not prepared yet");

    /// <summary>The pseudo-label scores, [N, C] on the host: uniform over each candidate set at the start.</summary>
    public ReadOnlySpan<float> Confidence => _confidence;

    /// <summary>The class prototypes, [C, 128] on the host, rows of unit length once seen.</summary>
    public ReadOnlySpan<float> Prototypes => _prototypes;

    /// <summary>The classifier's logits of the last step's queries, [B, C] as read back.</summary>
    public ReadOnlySpan<float> LastLogits => _hostLogits;

    /// <summary>The pseudo-labels of the last step's queries.</summary>
    public ReadOnlySpan<float> LastPseudoLabels => _hostPseudo;

    public override AugmentationPreset Augmentations(int size) => AugmentationPresets.Create(Options.Augmentations, size);

    /// <summary>The head (feature → feature → 128, PiCO's "mlp" head without BatchNorm) and the classifier.</summary>
    public override void Build(ArenaLayout layout, ResNet backbone)
    {
        if (Options.Classes < 2)
        {
            throw new ArgumentException($"PiCO needs the training set's number of classes (PicoOptions.Classes is {Options.Classes})");
        }
        var classes = Options.Classes;
        _classes = classes;
        _backbone = backbone;
        var head = new MlpHeadOptions(backbone.FeatureDim, backbone.FeatureDim, Options.OutputDim);
        _head = new MlpHead(layout, head);
        _classifier = new LinearHead(layout, backbone.FeatureDim, classes, bias: true, "classifier");
        _teacher = new MomentumEncoder(backbone, head, classes);
    }

    public override void Bind(ParameterArena arena)
    {
        _head!.Bind(arena);
        _classifier!.Bind(arena);
        _teacher!.Bind(arena);
    }

    public override void Initialize(ulong seed)
    {
        _head!.Initialize(seed);
        _classifier!.Initialize(seed ^ 0x636C6173UL);
        _teacher!.CopyStudent();
    }

    public override void Prepare(MethodContext context)
    {
        var dataset = context.Dataset ?? throw new ArgumentException("PiCO needs the training set (MethodContext.Dataset) to draw the candidate label sets", nameof(context));
        if (dataset.ClassNames.Count != _classes)
        {
            throw new ArgumentException($"{dataset.Name} has {dataset.ClassNames.Count} classes, PiCO was built for {_classes}", nameof(context));
        }
        var backend = context.Backend;
        _backend = backend;
        var n = context.BatchSize;
        var size = context.Preset.Views[0].Size;
        var features = _backbone!.FeatureDim;
        _stepsPerEpoch = context.StepsPerEpoch;
        _epochs = (int)Math.Max(1, context.TotalSteps / Math.Max(1, context.StepsPerEpoch));
        _partialLabels = PartialLabels.Generate(dataset, Options.PartialRate, Options.PartialLabelSeed);

        var images = new TensorShape(n, size, size, context.Channels);
        _backbonePlan = _backbone.Plan(images);
        _headPlan = _head!.Plan(new TensorShape(n, features), inputGradient: true);
        _classifierPlan = _classifier!.Plan(new TensorShape(n, features), inputGradient: true);
        _teacher!.Prepare(images, Options.Momentum, 0);
        var queue = Math.Min(Options.QueueLength, context.DatasetImages);
        if (queue < 1)
        {
            throw new ArgumentException($"PiCO needs a queue: QueueLength is {Options.QueueLength}", nameof(context));
        }
        _ranks = context.Communicator is { Size: > 1 } ranks ? ranks : null;
        var all = n * (_ranks?.Size ?? 1);
        if (_ranks is not null)
        {
            if (dataset.Count > 1 << 24)
            {
                throw new ArgumentException($"PiCO on several ranks gathers data-set indices as floats, exact up to 2^24 images; {dataset.Name} has {dataset.Count}", nameof(context));
            }
            _allLogits = backend.Allocate(new TensorShape(all, _classes), "pico gathered logits");
            _allEmbeddings = backend.Allocate(new TensorShape(all, Options.OutputDim), "pico gathered q");
            _indices = backend.Allocate(new TensorShape(n), "pico indices");
            _allIndices = backend.Allocate(new TensorShape(all), "pico gathered indices");
            _hostIndices = new float[all];
        }
        _batchIndices = new int[all];
        _loss = new LabelMaskedInfoNceLoss(backend, n, Options.OutputDim, queue, Options.Temperature, _ranks);
        _loss.InitializeQueue(context.Seed ^ 0x7069636FUL);
        _moCoWorkspace = backend.Allocate(new TensorShape(checked((int)backend.InfoNceWorkspaceLength(n, Options.OutputDim, queue, MatmulPrecision.Fp32))), "pico moco workspace");
        _embeddingGradient = backend.Allocate(new TensorShape(n, Options.OutputDim), "pico dq");
        _logitGradient = backend.Allocate(new TensorShape(n, _classes), "pico dlogits");
        _featureGradient = backend.Allocate(new TensorShape(n, features), "pico dfeatures");
        _pseudoLabels = backend.Allocate(new TensorShape(n), "pico pseudo-labels");
        _targets = backend.Allocate(new TensorShape(n, _classes), "pico targets");
        _stats = backend.Allocate(new TensorShape(_hostStats.Length), "pico stats");
        _confidenceState = backend.Allocate(new TensorShape(dataset.Count, _classes), "pico confidence");
        _prototypeState = backend.Allocate(new TensorShape(_classes, Options.OutputDim), "pico prototypes");

        _hostLogits = new float[all * _classes];
        _hostEmbeddings = new float[all * Options.OutputDim];
        _hostPseudo = new float[all];
        _hostTargets = new float[all * _classes];
        _hostScores = new float[all * _classes];
        _prototypes = new float[_classes * Options.OutputDim];
        _confidence = new float[dataset.Count * _classes];
        for (var i = 0; i < dataset.Count; i++)
        {
            // PiCO's start: uniform over the candidate set.
            var set = _partialLabels.Candidates(i);
            var share = 1f / set.Count(true);
            for (var c = 0; c < _classes; c++)
            {
                _confidence[(i * _classes) + c] = set[c] ? share : 0f;
            }
        }
    }

    /// <summary>φ during epoch <paramref name="epoch"/>: PiCO sets it after each epoch from the epoch just finished.</summary>
    public float ConfidenceMomentum(int epoch) =>
        Options.ConfidenceMomentumStart + ((Options.ConfidenceMomentumEnd - Options.ConfidenceMomentumStart) * Math.Max(epoch - 1, 0) / _epochs);

    public override Tensor TrainingStep(ViewGroups views)
    {
        if (_backbonePlan is null || _headPlan is null || _classifierPlan is null || _loss is null || _teacher is null)
        {
            throw new InvalidOperationException("PiCO.TrainingStep before Prepare");
        }
        var n = views.BatchSize;
        if (views.Indices.Length != n)
        {
            throw new ArgumentException($"PiCO needs the images' data-set indices: the batch has {views.Indices.Length} for {n} images", nameof(views));
        }
        var backend = _backbonePlan.Module.Backend;
        var pair = views.Groups[0];
        var epoch = (int)(views.Step / _stepsPerEpoch);
        var disambiguate = epoch >= Options.PrototypeStartEpoch;

        var features = _backbonePlan.Forward(pair.SliceRows(0, n), training: true);
        var logits = _classifierPlan.Forward(features, training: true);
        var q = _headPlan.Forward(features, training: true);
        var k = _teacher.Forward(pair.SliceRows(n, n));

        var (first, all) = GatherBatch(logits, q, views.Indices.Span);
        var classification = Disambiguate(_batchIndices, all, disambiguate, ConfidenceMomentum(epoch));
        backend.CopyFromHost(_hostPseudo.AsSpan(first, n), _pseudoLabels!);
        backend.CopyFromHost(_hostTargets.AsSpan(first * _classes, n * _classes), _targets!);

        if (disambiguate)
        {
            _loss.Compute(q, k, _pseudoLabels!, _embeddingGradient!, Options.LossWeight);
            // Compute gathered these keys and labels already.
            _loss.EnqueueComputed();
        }
        else
        {
            // The warm-up: MoCo's InfoNCE of each query against its key and the same queue.
            backend.InfoNce(q, k, Queue, Options.Temperature, MatmulPrecision.Fp32, _moCoWorkspace!, _loss.Stats, _embeddingGradient, Options.LossWeight);
            _loss.Enqueue(k, _pseudoLabels!);
        }

        // ∂/∂logits of −Σ_c t_c log softmax_c, averaged over the batch: (softmax − t) / n.
        backend.SoftmaxRows(logits, _logitGradient!);
        backend.Axpy(-1f, _targets!, _logitGradient!);
        backend.Scale(_logitGradient!, 1f / n, _logitGradient!);
        _classifierPlan.Backward(_logitGradient!);
        _headPlan.Backward(_embeddingGradient!);
        backend.Add(_classifierPlan.InputGradient!, _headPlan.InputGradient!, _featureGradient!);
        _backbonePlan.Backward(_featureGradient!);

        var contrastive = ContrastiveStats.Read(backend, _loss.Stats);
        _hostStats[0] = (float)classification + (Options.LossWeight * contrastive.Loss);
        _hostStats[1] = contrastive.PositiveSimilarity;
        _hostStats[2] = contrastive.Top1Accuracy;
        backend.CopyFromHost(_hostStats, _stats!);
        return _stats!;
    }

    /// <summary>
    /// The batch's logits, embeddings and indices on the host (every rank's, in rank order, when data-parallel); returns
    /// this rank's first row among them and the rows in all.
    /// </summary>
    private (int First, int Rows) GatherBatch(Tensor logits, Tensor q, ReadOnlySpan<int> indices)
    {
        var backend = _backend!;
        var n = indices.Length;
        if (_ranks is null)
        {
            backend.CopyToHost(logits, _hostLogits);
            backend.CopyToHost(q, _hostEmbeddings);
            indices.CopyTo(_batchIndices);
            return (0, n);
        }
        _ranks.AllGather(logits, _allLogits!);
        _ranks.AllGather(q, _allEmbeddings!);
        for (var i = 0; i < n; i++)
        {
            _hostIndices[i] = indices[i];
        }
        backend.CopyFromHost(_hostIndices.AsSpan(0, n), _indices!);
        _ranks.AllGather(_indices!, _allIndices!);
        backend.CopyToHost(_allLogits!, _hostLogits);
        backend.CopyToHost(_allEmbeddings!, _hostEmbeddings);
        backend.CopyToHost(_allIndices!, _hostIndices);
        for (var i = 0; i < _batchIndices.Length; i++)
        {
            _batchIndices[i] = (int)_hostIndices[i];
        }
        return (_ranks.Rank * n, _batchIndices.Length);
    }

    /// <summary>
    /// Pseudo-labels, prototype and confidence updates on the host for the batch read back into _hostLogits and
    /// _hostEmbeddings; fills _hostPseudo and _hostTargets and returns the classification loss (mean cross-entropy
    /// against the updated confidence, as PiCO updates the confidence before computing its loss).
    /// </summary>
    private double Disambiguate(ReadOnlySpan<int> indices, int n, bool disambiguate, float phi)
    {
        var c = _classes;
        var d = Options.OutputDim;
        var sets = _partialLabels!;
        var m = Options.PrototypeMomentum;
        double loss = 0;
        // PiCO scores every query against the prototypes as they were before this batch moved them.
        var scoreTable = disambiguate ? _hostScores : null;
        for (var row = 0; row < n; row++)
        {
            var index = indices[row];
            var logits = _hostLogits.AsSpan(row * c, c);
            var q = _hostEmbeddings.AsSpan(row * d, d);
            Normalize(q);
            _hostPseudo[row] = ArgmaxWithin(logits, sets, index);
            if (scoreTable is not null)
            {
                for (var j = 0; j < c; j++)
                {
                    scoreTable[(row * c) + j] = Dot(q, _prototypes.AsSpan(j * d, d));
                }
            }
        }
        for (var row = 0; row < n; row++)
        {
            var prototype = _prototypes.AsSpan((int)_hostPseudo[row] * d, d);
            var q = _hostEmbeddings.AsSpan(row * d, d);
            for (var j = 0; j < d; j++)
            {
                prototype[j] = (m * prototype[j]) + ((1 - m) * q[j]);
            }
        }
        for (var j = 0; j < c; j++)
        {
            Normalize(_prototypes.AsSpan(j * d, d));
        }
        for (var row = 0; row < n; row++)
        {
            var index = indices[row];
            var confidence = _confidence.AsSpan(index * c, c);
            if (scoreTable is not null)
            {
                // softmax is monotone: the candidate with the largest prototype similarity wins.
                var winner = ArgmaxWithin(scoreTable.AsSpan(row * c, c), sets, index);
                for (var j = 0; j < c; j++)
                {
                    confidence[j] = (phi * confidence[j]) + ((1 - phi) * (j == winner ? 1f : 0f));
                }
            }
            confidence.CopyTo(_hostTargets.AsSpan(row * c, c));
            loss += CrossEntropy(_hostLogits.AsSpan(row * c, c), confidence);
        }
        return loss / n;
    }

    private int ArgmaxWithin(ReadOnlySpan<float> scores, PartialLabels sets, int index)
    {
        var best = -1;
        for (var j = 0; j < _classes; j++)
        {
            if (sets.Contains(index, j) && (best < 0 || scores[j] > scores[best]))
            {
                best = j;
            }
        }
        return best;
    }

    private static double CrossEntropy(ReadOnlySpan<float> logits, ReadOnlySpan<float> targets)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits)
        {
            max = Math.Max(max, v);
        }
        double sum = 0;
        foreach (var v in logits)
        {
            sum += Math.Exp(v - max);
        }
        var logSumExp = max + Math.Log(sum);
        double loss = 0;
        for (var j = 0; j < logits.Length; j++)
        {
            loss += targets[j] * (logSumExp - logits[j]);
        }
        return loss;
    }

    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double sum = 0;
        for (var j = 0; j < a.Length; j++)
        {
            sum += a[j] * (double)b[j];
        }
        return (float)sum;
    }

    private static void Normalize(Span<float> v)
    {
        var norm = Math.Sqrt(Dot(v, v));
        var scale = (float)(1 / Math.Max(norm, 1e-12));
        for (var j = 0; j < v.Length; j++)
        {
            v[j] *= scale;
        }
    }

    /// <summary>
    /// The key encoder, the queue and its labels, and the tensors holding the host's confidence and prototypes as of the
    /// last <see cref="CopyHostTablesToStateTensors"/>.
    /// </summary>
    public override IReadOnlyList<(string Name, Tensor Tensor)> StateTensors =>
        _confidenceState is { } confidence
            ? [.. _teacher!.StateTensors, ("queue", Queue.Keys), ("queue_labels", QueueLabels), ("confidence", confidence), ("prototypes", _prototypeState!)]
            : throw new InvalidOperationException("PiCO is not prepared yet");

    public override void CopyHostTablesToStateTensors()
    {
        var confidence = _confidenceState ?? throw new InvalidOperationException("PiCO is not prepared yet");
        _backend!.CopyFromHost(_confidence, confidence);
        _backend.CopyFromHost(_prototypes, _prototypeState!);
    }

    public override IReadOnlyDictionary<string, long> HostState => new Dictionary<string, long> { ["queue_position"] = Queue.Position };

    /// <summary>Runs after a checkpoint filled <see cref="StateTensors"/>: the host tables are read back from them.</summary>
    public override void RestoreHostState(IReadOnlyDictionary<string, long> state)
    {
        var position = state["queue_position"];
        if (position < 0 || position >= Queue.Capacity)
        {
            throw new ArgumentException($"queue_position {position} is outside the queue of {Queue.Capacity} keys");
        }
        Queue.Position = (int)position;
        _backend!.CopyToHost(_confidenceState!, _confidence);
        _backend.CopyToHost(_prototypeState!, _prototypes);
    }

    public override string DescribeOptions() => string.Create(
        CultureInfo.InvariantCulture,
        $"{{\"partial_rate\":{Options.PartialRate:R},\"partial_label_seed\":{Options.PartialLabelSeed},\"temperature\":{Options.Temperature:R},\"loss_weight\":{Options.LossWeight:R},\"queue\":{_loss?.Queue?.Capacity ?? Options.QueueLength},\"momentum\":{Options.Momentum:R},\"prototype_momentum\":{Options.PrototypeMomentum:R},\"confidence_momentum\":[{Options.ConfidenceMomentumStart:R},{Options.ConfidenceMomentumEnd:R}],\"prototype_start_epoch\":{Options.PrototypeStartEpoch},\"classes\":{_classes},\"augmentations\":\"{Options.Augmentations}\",\"shuffle_bn\":false}}");

    protected override void DisposeOwned()
    {
        _backbonePlan?.Dispose();
        _headPlan?.Dispose();
        _classifierPlan?.Dispose();
        _teacher?.Dispose();
        _loss?.Dispose();
        _moCoWorkspace?.Dispose();
        _embeddingGradient?.Dispose();
        _logitGradient?.Dispose();
        _featureGradient?.Dispose();
        _pseudoLabels?.Dispose();
        _targets?.Dispose();
        _stats?.Dispose();
        _confidenceState?.Dispose();
        _prototypeState?.Dispose();
        _allLogits?.Dispose();
        _allEmbeddings?.Dispose();
        _indices?.Dispose();
        _allIndices?.Dispose();
        _head?.Dispose();
        _classifier?.Dispose();
    }
}
