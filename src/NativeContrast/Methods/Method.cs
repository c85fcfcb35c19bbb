namespace NativeContrast.Methods;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Distributed;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// One step's augmented views on the backend, grouped by size: group g holds <see cref="ViewCounts"/>[g] views of
/// <see cref="BatchSize"/> images one after the other, NHWC ([views · N, S, S, C]). SimCLR gets one group of its two
/// views (2N images forwarded as one batch); SwAV's multi-crop gets its large crops and its small crops.
/// <see cref="Step"/> is the optimiser step this batch is for (schedules inside a method: frozen prototypes, queues).
/// <see cref="Indices"/> are the images' positions in the data set and <see cref="Labels"/> their labels (−1 where the
/// set has none), both on the host, for the methods that read them (partial labels, fine-tuning); empty in a batch
/// built without them.
/// </summary>
public sealed record ViewGroups(
    IReadOnlyList<Tensor> Groups,
    IReadOnlyList<int> ViewCounts,
    int BatchSize,
    long Step = 0,
    ReadOnlyMemory<int> Indices = default,
    ReadOnlyMemory<int> Labels = default);

/// <summary>
/// What the trainer tells a method when it plans its memory: the batch shape, the run's length (momentum ramps,
/// prototype freezing, queue start), the data set's size (queues are capped by it) and the training set itself, for
/// the methods that read its labels (partial-label learning). <see cref="Communicator"/>: the ranks of a data-parallel
/// run (<see cref="BatchSize"/> is this rank's share of the global batch), null in a single process.
/// </summary>
public sealed record MethodContext(IBackend Backend, ResNet Backbone, AugmentationPreset Preset, int BatchSize, int Channels, ulong Seed, int StepsPerEpoch = 1, long TotalSteps = 1, int DatasetImages = int.MaxValue, IImageDataset? Dataset = null, ICommunicator? Communicator = null);

/// <summary>
/// A training method (self-supervised, or supervised on labels: fine-tuning, distillation) as a short composition, in the shape of solo-learn's methods: its defaults, its heads, its
/// loss calls and its own state. The <c>Trainer</c> owns everything else in a fixed order:
/// <list type="number">
/// <item>construction: the trainer declares the backbone under "backbone.", then <see cref="Build"/> adds the heads;</item>
/// <item>the arena (sized for the optimiser), <see cref="Bind"/>, <see cref="Initialize"/>, <see cref="Prepare"/>;</item>
/// <item>each step: gradients zeroed, <see cref="TrainingStep"/> (forward, loss, backward), the loss read and checked,
/// <see cref="BeforeOptimizerStep"/>, the optimiser step (with <see cref="Teacher"/>'s EMA fused in),
/// <see cref="AfterOptimizerStep"/>;</item>
/// <item>evaluation taps the backbone on clean images (the kNN monitor, and <see cref="Classifier"/> when the method has
/// one); checkpoints hold the arena and <see cref="StateTensors"/>.</item>
/// </list>
/// Nothing below the methods knows which method runs.
/// </summary>
public abstract class Method : IDisposable
{
    /// <summary>"simclr", "simclr-v2", ...: the name the CLI and checkpoints use.</summary>
    public abstract string Name { get; }

    /// <summary>The augmentation recipe the method trains on, for large crops of <paramref name="size"/>.</summary>
    public abstract AugmentationPreset Augmentations(int size);

    /// <summary>The base learning rate per 256 images of the method's recipe for an optimiser (the trainer scales it by batch / 256).</summary>
    public abstract float BaseLearningRate(string optimizer);

    /// <summary>The optimiser of the method's recipe (what "auto" means): solo-learn's LARS for small images, SimCLR's otherwise.</summary>
    public virtual string DefaultOptimizer(bool smallImages) => smallImages ? "lars-solo" : "lars";

    /// <summary>The weight decay of the method's recipe for an optimiser: 1e-5 with solo-learn's LARS (its CIFAR recipe), else SimCLR's 1e-6.</summary>
    public virtual float DefaultWeightDecay(string optimizer) => optimizer == "lars-solo" ? 1e-5f : 1e-6f;

    /// <summary>Declares the heads into <paramref name="layout"/>, after the backbone.</summary>
    public abstract void Build(ArenaLayout layout, ResNet backbone);

    public abstract void Bind(ParameterArena arena);

    public abstract void Initialize(ulong seed);

    /// <summary>Plans the method's memory (model plans, losses, gradient buffers) for one batch shape.</summary>
    public abstract void Prepare(MethodContext context);

    /// <summary>
    /// Forward, loss and backward of one batch; parameter gradients accumulate into the arena (zeroed by the trainer).
    /// Returns the loss's statistics on the backend, [loss, mean positive cosine, contrastive top-1].
    /// </summary>
    public abstract Tensor TrainingStep(ViewGroups views);

    /// <summary>
    /// The method's classifier on the backbone's features, or null (the contrastive methods): a module chain from the
    /// backbone's feature vector [N, FeatureDim] to class logits [N, classes] whose parameters live in the run's arena
    /// (fine-tuning's head layers and linear layer, a distilled student's linear layer, PiCO's linear classifier). The
    /// method builds, binds, initialises and disposes it. When it is set, the trainer scores it on the test split after
    /// every epoch (the trainer's ClassifierEveryEpochs): backbone features of the clean test images, then this chain,
    /// both in eval mode (BatchNorm on running statistics), every test image counted. That is the epoch's test
    /// top-1/top-5 (metrics.jsonl "test_top1", "test_top5"; the CLI's progress lines and summary). The trainer plans the
    /// chain for evaluation on its own, so the method's training plan is left as the last step left it.
    /// </summary>
    public virtual Module? Classifier => null;

    /// <summary>
    /// Whether the method trains data-parallel over several ranks: its loss over the global batch (given the
    /// <see cref="MethodContext.Communicator"/>) and every buffer it owns the same on every rank. SimCLR, MoCo, SwAV and
    /// PiCO do; supervised fine-tuning, distillation and the margin loss do not yet.
    /// </summary>
    public virtual bool SupportsDataParallel => false;

    /// <summary>The batch norms of the method's heads (the trainer adds the backbone's), for SyncBN.</summary>
    public virtual IEnumerable<BatchNorm> BatchNorms => [];

    /// <summary>A momentum teacher whose EMA the optimiser fuses into its step (MoCo, BYOL); null for SimCLR.</summary>
    public virtual Ema? Teacher => null;

    /// <summary>Runs between the backward and the optimiser step (SwAV zeroes frozen prototypes' gradients here).</summary>
    public virtual void BeforeOptimizerStep(long step)
    {
    }

    /// <summary>Runs after the optimiser step (SwAV normalises its prototypes here).</summary>
    public virtual void AfterOptimizerStep(long step)
    {
    }

    /// <summary>
    /// Tensors the method owns besides the arena (a teacher arena's values, queues): saved and restored with
    /// checkpoints as "method.{name}".
    /// </summary>
    public virtual IReadOnlyList<(string Name, Tensor Tensor)> StateTensors => [];

    /// <summary>
    /// Copies the tables a method keeps on the host (PiCO's confidence and prototypes) into their <see cref="StateTensors"/>;
    /// the trainer calls it before it saves or broadcasts them, and <see cref="RestoreHostState"/> reads them back.
    /// </summary>
    public virtual void CopyHostTablesToStateTensors()
    {
    }

    /// <summary>Host-side counters that go with <see cref="StateTensors"/> (a queue's write position and fill).</summary>
    public virtual IReadOnlyDictionary<string, long> HostState => new Dictionary<string, long>();

    /// <summary>Restores what <see cref="HostState"/> returned; every key the method needs must be there.</summary>
    public virtual void RestoreHostState(IReadOnlyDictionary<string, long> state)
    {
    }

    /// <summary>The method's options as a JSON object, recorded in checkpoints and metrics.</summary>
    public abstract string DescribeOptions();

    public void Dispose()
    {
        DisposeOwned();
        GC.SuppressFinalize(this);
    }

    protected abstract void DisposeOwned();
}
