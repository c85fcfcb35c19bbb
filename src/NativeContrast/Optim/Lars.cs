namespace NativeContrast.Optim;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// LARS (You et al.) in the two published forms, named by <see cref="Variant"/>; each behaves as its reference code does.
/// <list type="bullet">
/// <item><see cref="LarsVariant.SimClr"/>, google-research/simclr lars_optimizer.py: per view g' = g + wd·w,
/// trust = η·‖w‖ / ‖g'‖, v ← μ·v + lr·trust·g', w ← w − v. The learning rate lives inside the velocity, so a
/// schedule's change of lr reaches the weights through the momentum. Recipe (<see cref="SimClr"/>): lr 0.3·batch/256,
/// μ 0.9, wd 1e-6, η 0.001, warm-up 10 epochs then cosine.</item>
/// <item><see cref="LarsVariant.SoloLearn"/>, vturrisi/solo-learn solo/utils/lars.py (LARC's ratio):
/// r = η·‖w‖ / (‖g‖ + wd·‖w‖ + ε), with clip_lr r ← min(r / lr, 1); b ← μ·b + r·(g + wd·w), w ← w − lr·b. The learning
/// rate is applied outside the buffer; a view whose weight or gradient norm is 0 is skipped (no decay, no adaptation).
/// Recipe (<see cref="SoloLearn"/>): solo-learn's SimCLR scripts, lr 0.4·batch/256 (CIFAR; 0.3 on ImageNet-100), μ 0.9,
/// wd 1e-4, η 0.02, clip_lr, ε 1e-8, warm-up then cosine.</item>
/// </list>
/// Biases and BatchNorm parameters get neither decay nor adaptation unless <see cref="Optimizer.DecayBiasAndNorm"/>
/// (SimCLR's exclude list; solo-learn's exclude_bias_n_norm). The norms come from a segmented reduction over the
/// arena on the device; <see cref="OptimizerPlan.TrustRatios"/> and <see cref="OptimizerPlan.AppliedWeightDecay"/>
/// hold the last step's values, one per <see cref="OptimizerPlan.Segments"/> entry. Slot 0 of the arena's optimizer
/// state is the velocity (SimCLR, lr included) or the momentum buffer (solo-learn, lr excluded): a checkpoint's state
/// is only meaningful to the variant that wrote it, which is why the variant is saved with the hyperparameters.
/// </summary>
public sealed class Lars : Optimizer
{
    private readonly Tensor _velocity;
    private float _momentum;
    private float _trustCoefficient;
    private float _epsilon = 1e-8f;

    /// <summary>A LARS of the given form; the defaults are SimCLR's (<see cref="SimClr"/> and <see cref="SoloLearn"/> give each recipe's).</summary>
    /// <param name="chunkLength">Elements per block of the fused kernels (see <see cref="OptimizerPlan"/>).</param>
    public Lars(
        ParameterArena arena, float learningRate, float momentum = 0.9f, float weightDecay = 1e-6f, float trustCoefficient = 0.001f,
        bool nesterov = false, int chunkLength = OptimizerPlan.DefaultChunkLength, LarsVariant variant = LarsVariant.SimClr)
        : base(arena, stateSlots: 1, learningRate, weightDecay, chunkLength)
    {
        Momentum = momentum;
        TrustCoefficient = trustCoefficient;
        Nesterov = nesterov;
        Variant = Enum.IsDefined(variant) ? variant : throw new ArgumentOutOfRangeException(nameof(variant), $"LARS variant {(int)variant} is neither SimClr nor SoloLearn");
        _velocity = arena.StateSlot(0);
    }

    /// <summary>SimCLR's LARS with the paper's hyperparameters: μ 0.9, wd 1e-6, η 0.001, biases and BatchNorm excluded.</summary>
    public static Lars SimClr(ParameterArena arena, float learningRate, int chunkLength = OptimizerPlan.DefaultChunkLength) =>
        new(arena, learningRate, momentum: 0.9f, weightDecay: 1e-6f, trustCoefficient: 0.001f, chunkLength: chunkLength, variant: LarsVariant.SimClr);

    /// <summary>
    /// solo-learn's LARS with its SimCLR recipe (scripts/pretrain/*/simclr.yaml): μ 0.9, wd 1e-4, η 0.02, clip_lr, ε 1e-8,
    /// biases and BatchNorm excluded (exclude_bias_n_norm).
    /// </summary>
    public static Lars SoloLearn(ParameterArena arena, float learningRate, int chunkLength = OptimizerPlan.DefaultChunkLength) =>
        new(arena, learningRate, momentum: 0.9f, weightDecay: 1e-4f, trustCoefficient: 0.02f, chunkLength: chunkLength, variant: LarsVariant.SoloLearn)
        {
            ClipLearningRate = true,
        };

    public override string Name => "lars";

    /// <summary>Which reference this LARS follows; fixed at construction, since the state slot means different things.</summary>
    public LarsVariant Variant { get; }

    public float Momentum
    {
        get => _momentum;
        set => _momentum = Fraction(value, nameof(Momentum));
    }

    /// <summary>η, the trust coefficient (0.001 in SimCLR, 0.02 in solo-learn's recipes).</summary>
    public float TrustCoefficient
    {
        get => _trustCoefficient;
        set => _trustCoefficient = NonNegative(value, nameof(TrustCoefficient));
    }

    public bool Nesterov { get; set; }

    /// <summary>ε added to the solo-learn denominator (1e-8, the reference's default); the SimCLR form has none and ignores it.</summary>
    public float Epsilon
    {
        get => _epsilon;
        set => _epsilon = NonNegative(value, nameof(Epsilon));
    }

    /// <summary>solo-learn's clip_lr: the ratio becomes min(r / lr, 1), so a view never steps faster than lr. Ignored by the SimCLR form.</summary>
    public bool ClipLearningRate { get; set; }

    protected override void Apply(float learningRate, Tensor values, Tensor gradients, StepOptions options) =>
        Backend.LarsStep(Plan, values, gradients, _velocity, new LarsStepArgs(learningRate, Momentum, WeightDecay, TrustCoefficient, Nesterov, Variant, Epsilon, ClipLearningRate), options);

    protected override void WriteHyperparameters(IDictionary<string, string> values)
    {
        values["variant"] = VariantName(Variant);
        values["momentum"] = Format(Momentum);
        values["trust_coefficient"] = Format(TrustCoefficient);
        values["nesterov"] = Nesterov ? "true" : "false";
        values["epsilon"] = Format(Epsilon);
        values["clip_lr"] = ClipLearningRate ? "true" : "false";
    }

    protected override void ReadHyperparameters(IReadOnlyDictionary<string, string> values)
    {
        var variant = Read(values, "variant");
        if (variant != VariantName(Variant))
        {
            throw new ArgumentException($"the hyperparameters are for LARS '{variant}', this LARS is '{VariantName(Variant)}' (its velocity means something else)", nameof(values));
        }
        Momentum = ReadFloat(values, "momentum");
        TrustCoefficient = ReadFloat(values, "trust_coefficient");
        Nesterov = ReadBool(values, "nesterov");
        Epsilon = ReadFloat(values, "epsilon");
        ClipLearningRate = ReadBool(values, "clip_lr");
    }

    private static string VariantName(LarsVariant variant) => variant == LarsVariant.SimClr ? "simclr" : "solo-learn";
}
