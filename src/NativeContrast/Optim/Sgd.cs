namespace NativeContrast.Optim;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// SGD with momentum as PyTorch computes it (dampening 0): b ← μ·b + (g + wd·w), w ← w − lr·b, or with Nesterov
/// w ← w − lr·(g + wd·w + μ·b). The momentum buffer is the arena's optimizer state slot 0. MoCo's recipe:
/// lr 0.03·batch/256, μ 0.9, wd 1e-4 on every parameter (set <see cref="Optimizer.DecayBiasAndNorm"/>).
/// </summary>
public sealed class Sgd : Optimizer
{
    private readonly Tensor _momentumBuffer;
    private float _momentum;

    /// <param name="chunkLength">Elements per block of the fused kernels (see <see cref="OptimizerPlan"/>).</param>
    public Sgd(ParameterArena arena, float learningRate, float momentum = 0.9f, float weightDecay = 0f, bool nesterov = false, int chunkLength = OptimizerPlan.DefaultChunkLength)
        : base(arena, stateSlots: 1, learningRate, weightDecay, chunkLength)
    {
        Momentum = momentum;
        Nesterov = nesterov;
        _momentumBuffer = arena.StateSlot(0);
    }

    public override string Name => "sgd";

    public float Momentum
    {
        get => _momentum;
        set => _momentum = Fraction(value, nameof(Momentum));
    }

    public bool Nesterov { get; set; }

    protected override void Apply(float learningRate, Tensor values, Tensor gradients, StepOptions options) =>
        Backend.SgdStep(Plan, values, gradients, _momentumBuffer, new SgdStepArgs(learningRate, Momentum, WeightDecay, Nesterov), options);

    protected override void WriteHyperparameters(IDictionary<string, string> values)
    {
        values["momentum"] = Format(Momentum);
        values["nesterov"] = Nesterov ? "true" : "false";
    }

    protected override void ReadHyperparameters(IReadOnlyDictionary<string, string> values)
    {
        Momentum = ReadFloat(values, "momentum");
        Nesterov = ReadBool(values, "nesterov");
    }
}
