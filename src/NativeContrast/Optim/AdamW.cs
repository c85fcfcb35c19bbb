namespace NativeContrast.Optim;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// AdamW (decoupled weight decay, Loshchilov and Hutter) as torch.optim.AdamW computes it: w ← w·(1 − lr·wd), then the
/// bias-corrected Adam step with t = <see cref="Optimizer.StepCount"/> + 1. The first and second moments are the arena's
/// optimizer state slots 0 and 1. Decay skips biases and normalisation parameters unless <see cref="Optimizer.DecayBiasAndNorm"/>.
/// </summary>
public sealed class AdamW : Optimizer
{
    private readonly Tensor _firstMoment;
    private readonly Tensor _secondMoment;
    private float _beta1;
    private float _beta2;
    private float _epsilon;

    /// <param name="chunkLength">Elements per block of the fused kernels (see <see cref="OptimizerPlan"/>).</param>
    public AdamW(ParameterArena arena, float learningRate, float beta1 = 0.9f, float beta2 = 0.999f, float epsilon = 1e-8f, float weightDecay = 0.01f, int chunkLength = OptimizerPlan.DefaultChunkLength)
        : base(arena, stateSlots: 2, learningRate, weightDecay, chunkLength)
    {
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
        _firstMoment = arena.StateSlot(0);
        _secondMoment = arena.StateSlot(1);
    }

    public override string Name => "adamw";

    public float Beta1
    {
        get => _beta1;
        set => _beta1 = Fraction(value, nameof(Beta1));
    }

    public float Beta2
    {
        get => _beta2;
        set => _beta2 = Fraction(value, nameof(Beta2));
    }

    public float Epsilon
    {
        get => _epsilon;
        set => _epsilon = NonNegative(value, nameof(Epsilon));
    }

    protected override void Apply(float learningRate, Tensor values, Tensor gradients, StepOptions options) =>
        Backend.AdamWStep(Plan, values, gradients, _firstMoment, _secondMoment, new AdamWStepArgs(learningRate, Beta1, Beta2, Epsilon, WeightDecay, StepCount + 1), options);

    protected override void WriteHyperparameters(IDictionary<string, string> values)
    {
        values["beta1"] = Format(Beta1);
        values["beta2"] = Format(Beta2);
        values["eps"] = Format(Epsilon);
    }

    protected override void ReadHyperparameters(IReadOnlyDictionary<string, string> values)
    {
        Beta1 = ReadFloat(values, "beta1");
        Beta2 = ReadFloat(values, "beta2");
        Epsilon = ReadFloat(values, "eps");
    }
}
