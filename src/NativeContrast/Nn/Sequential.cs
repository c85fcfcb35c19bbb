namespace NativeContrast.Nn;

using NativeContrast.Tensors;

/// <summary>
/// Modules applied one after another: an encoder and its head (<c>new Sequential(resnet, projector)</c>).
/// The gradients between stages alternate between two pools, so a chain holds two boundary gradients at most.
/// </summary>
public sealed class Sequential : Module
{
    private readonly Module[] _stages;

    public Sequential(params Module[] stages)
        : base(string.Empty)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(stages.Length, 1);
        _stages = stages;
    }

    public IReadOnlyList<Module> Stages => _stages;

    /// <summary>The output of stage <paramref name="stage"/> in the last forward of <paramref name="plan"/>: stage 0 of an encoder + head gives the pooled features.</summary>
    public Tensor OutputOf(Plan plan, int stage) => Expect<SequentialPlan>(plan.Root).Stages[stage].Output;

    public override TensorShape OutputShape(TensorShape input)
    {
        foreach (var stage in _stages)
        {
            input = stage.OutputShape(input);
        }
        return input;
    }

    protected override void BindParameters(ParameterArena arena)
    {
        foreach (var stage in _stages)
        {
            stage.Bind(arena);
        }
    }

    public override void Initialize(ulong seed)
    {
        foreach (var stage in _stages)
        {
            stage.Initialize(seed);
        }
    }

    public override ModulePlan CreatePlan(PlanBuilder builder, TensorShape input)
    {
        var plan = new SequentialPlan(_stages.Length);
        var pools = new[] { builder.CreatePool("sequential.grad.even"), builder.CreatePool("sequential.grad.odd") };
        for (var i = 0; i < _stages.Length; i++)
        {
            plan.Stages[i] = _stages[i].CreatePlan(builder, input);
            input = _stages[i].OutputShape(input);
        }
        // Gradient of stage i's input (for i ≥ 1), in backward order.
        for (var i = _stages.Length - 1; i >= 1; i--)
        {
            plan.InputGradients[i] = pools[(_stages.Length - 1 - i) % 2].Request(plan.Stages[i - 1].Output.Shape, $"stage{i}.input.grad");
        }
        return plan;
    }

    public override Tensor Forward(ModulePlan modulePlan, Tensor x, bool training)
    {
        var plan = Expect<SequentialPlan>(modulePlan);
        plan.Input = x;
        for (var i = 0; i < _stages.Length; i++)
        {
            x = _stages[i].Forward(plan.Stages[i], x, training);
        }
        return x;
    }

    public override void Backward(ModulePlan modulePlan, Tensor dy, Tensor? dx)
    {
        var plan = Expect<SequentialPlan>(modulePlan);
        for (var i = _stages.Length - 1; i >= 0; i--)
        {
            var inputGradient = i == 0 ? dx : plan.InputGradients[i]!.Tensor;
            _stages[i].Backward(plan.Stages[i], dy, inputGradient);
            dy = inputGradient!;
        }
    }

    protected override void DisposeOwned()
    {
        foreach (var stage in _stages)
        {
            stage.Dispose();
        }
    }
}

/// <summary>The stages' plans; <c>Stages[0].Output</c> of an encoder + head is the encoder's features.</summary>
public sealed class SequentialPlan : ModulePlan
{
    internal SequentialPlan(int stages)
    {
        Stages = new ModulePlan[stages];
        InputGradients = new ScratchView?[stages];
    }

    public ModulePlan[] Stages { get; }

    public override Tensor Output => Stages[^1].Output;

    internal ScratchView?[] InputGradients { get; }
}
