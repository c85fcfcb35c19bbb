namespace NativeContrast.Optim;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// LARS as SimCLR uses it: per view, trust = η·‖w‖ / (‖g‖ + wd·‖w‖) (You et al.'s ratio; 1 when either norm is 0),
/// v ← μ·v + lr·trust·(g + wd·w), w ← w − v. Biases and BatchNorm parameters get neither decay nor adaptation
/// (trust 1) unless <see cref="Optimizer.DecayBiasAndNorm"/>. The norms come from a segmented reduction over the
/// arena on the device; <see cref="OptimizerPlan.TrustRatios"/> holds the last step's ratios, one per
/// <see cref="OptimizerPlan.Segments"/> entry. The velocity (which includes the learning rate, as in SimCLR's
/// optimiser) is the arena's optimizer state slot 0. SimCLR's recipe: lr 0.3·batch/256 (or 0.075·√batch),
/// μ 0.9, wd 1e-6, η 0.001, warm-up 10 epochs then cosine.
/// <para>
/// SimCLR's TensorFlow optimiser divides by ‖g + wd·w‖ where this (like the LARS paper and solo-learn) divides by
/// ‖g‖ + wd·‖w‖; the denominators differ by at most 2·wd·‖w‖, small next to ‖g‖ with SimCLR's wd = 1e-6
/// unless the gradients are tiny next to the weights.
/// </para>
/// </summary>
public sealed class Lars : Optimizer
{
    private readonly Tensor _velocity;
    private float _momentum;
    private float _trustCoefficient;

    /// <param name="chunkLength">Elements per block of the fused kernels (see <see cref="OptimizerPlan"/>).</param>
    public Lars(ParameterArena arena, float learningRate, float momentum = 0.9f, float weightDecay = 1e-6f, float trustCoefficient = 0.001f, bool nesterov = false, int chunkLength = OptimizerPlan.DefaultChunkLength)
        : base(arena, stateSlots: 1, learningRate, weightDecay, chunkLength)
    {
        Momentum = momentum;
        TrustCoefficient = trustCoefficient;
        Nesterov = nesterov;
        _velocity = arena.StateSlot(0);
    }

    public override string Name => "lars";

    public float Momentum
    {
        get => _momentum;
        set => _momentum = Fraction(value, nameof(Momentum));
    }

    /// <summary>η, the trust coefficient (0.001 in SimCLR).</summary>
    public float TrustCoefficient
    {
        get => _trustCoefficient;
        set => _trustCoefficient = NonNegative(value, nameof(TrustCoefficient));
    }

    public bool Nesterov { get; set; }

    protected override void Apply(float learningRate, Tensor values, Tensor gradients, StepOptions options) =>
        Backend.LarsStep(Plan, values, gradients, _velocity, new LarsStepArgs(learningRate, Momentum, WeightDecay, TrustCoefficient, Nesterov), options);

    protected override void WriteHyperparameters(IDictionary<string, string> values)
    {
        values["momentum"] = Format(Momentum);
        values["trust_coefficient"] = Format(TrustCoefficient);
        values["nesterov"] = Nesterov ? "true" : "false";
    }

    protected override void ReadHyperparameters(IReadOnlyDictionary<string, string> values)
    {
        Momentum = ReadFloat(values, "momentum");
        TrustCoefficient = ReadFloat(values, "trust_coefficient");
        Nesterov = ReadBool(values, "nesterov");
    }
}
