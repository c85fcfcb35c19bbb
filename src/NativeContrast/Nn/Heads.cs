namespace NativeContrast.Nn;

using NativeContrast.Tensors;

/// <summary>
/// An MLP projector of <see cref="Layers"/> linear layers: hidden layers are Linear [→ BatchNorm1d] → ReLU, the
/// last is Linear [→ BatchNorm1d] [→ ReLU]. SimCLR v1: 2 layers, no BN; SimCLR v2: 3 layers with BN everywhere
/// (a linear followed by BN has no bias). Parameter names follow nn.Sequential's indices, e.g. projector.0.weight,
/// projector.1.weight (BN), projector.3.weight, and the ReLU takes an index without parameters.
/// </summary>
public sealed record MlpHeadOptions(int InputDim, int HiddenDim, int OutputDim)
{
    public int Layers { get; init; } = 2;

    public bool HiddenBatchNorm { get; init; }

    public bool OutputBatchNorm { get; init; }

    /// <summary>
    /// A ReLU after the last layer too: the first layers of a deeper head, which end where a hidden layer ends (SimCLR v2
    /// fine-tunes from the first of its projector's three layers, after its BN and ReLU).
    /// </summary>
    public bool OutputRelu { get; init; }

    /// <summary>The head made of this head's first <paramref name="layers"/> layers (the same parameter names), ending after a hidden layer's ReLU unless it is the whole head.</summary>
    public MlpHeadOptions FirstLayers(int layers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(layers, Layers);
        return layers == Layers ? this : this with { Layers = layers, OutputDim = HiddenDim, OutputBatchNorm = HiddenBatchNorm, OutputRelu = true };
    }
}

public sealed class MlpHead : Module
{
    private readonly Linear[] _linears;
    private readonly BatchNorm?[] _norms;

    public MlpHead(ArenaLayout layout, MlpHeadOptions options, string name = "projector")
        : base(name)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Layers, 1);
        Options = options;
        _linears = new Linear[options.Layers];
        _norms = new BatchNorm?[options.Layers];
        var index = 0;
        for (var i = 0; i < options.Layers; i++)
        {
            var last = i == options.Layers - 1;
            var inDim = i == 0 ? options.InputDim : options.HiddenDim;
            var outDim = last ? options.OutputDim : options.HiddenDim;
            var norm = last ? options.OutputBatchNorm : options.HiddenBatchNorm;
            _linears[i] = new Linear(layout, Join(name, $"{index++}"), inDim, outDim, bias: !norm);
            if (norm)
            {
                _norms[i] = new BatchNorm(layout, Join(name, $"{index++}"), outDim);
            }
            if (!last)
            {
                index++; // nn.ReLU
            }
        }
    }

    public MlpHeadOptions Options { get; }

    public int Layers => _linears.Length;

    public IReadOnlyList<Linear> Linears => _linears;

    public IReadOnlyList<BatchNorm?> Norms => _norms;

    /// <summary>The layers' batch norms, where they have one.</summary>
    public IEnumerable<BatchNorm> BatchNorms => _norms.OfType<BatchNorm>();

    public override TensorShape OutputShape(TensorShape input)
    {
        foreach (var linear in _linears)
        {
            input = linear.OutputShape(input);
        }
        return input;
    }

    protected override void BindParameters(ParameterArena arena)
    {
        foreach (var linear in _linears)
        {
            linear.Bind(arena);
        }
        foreach (var norm in _norms)
        {
            norm?.Bind(arena);
        }
    }

    public override void Initialize(ulong seed)
    {
        foreach (var linear in _linears)
        {
            linear.Initialize(seed);
        }
        foreach (var norm in _norms)
        {
            norm?.Initialize();
        }
    }

    /// <summary>Whether layer <paramref name="i"/> ends in a ReLU: every hidden layer, and the last with <see cref="MlpHeadOptions.OutputRelu"/>.</summary>
    private bool Relu(int i) => i < Layers - 1 || Options.OutputRelu;

    public override ModulePlan CreatePlan(PlanBuilder builder, TensorShape input)
    {
        var plan = new MlpPlan(Layers);
        var pools = new[] { builder.CreatePool(Join(Name, "grad.even")), builder.CreatePool(Join(Name, "grad.odd")) };
        var shape = input;
        for (var i = 0; i < Layers; i++)
        {
            shape = _linears[i].OutputShape(shape);
            plan.LinearOutputs[i] = builder.Allocate(shape, Join(_linears[i].Name, "out"));
            var last = i == Layers - 1;
            if (_norms[i] is { } norm)
            {
                plan.Norms[i] = norm.CreatePlan(builder, shape);
            }
            // A layer's activation: BN (+ReLU) output, ReLU output, or (last layer without BN or ReLU) the linear output itself.
            plan.Activations[i] = _norms[i] is not null || Relu(i) ? builder.Allocate(shape, Join(Name, $"act{i}")) : plan.LinearOutputs[i];
            // The backward alternates d(activation i) → d(linear i) → d(activation i − 1): one pool for each kind.
            // The last activation's gradient is the caller's dy.
            if (!last)
            {
                plan.ActivationGradients[i] = pools[0].Request(shape, Join(Name, $"act{i}.grad"));
            }
            plan.LinearGradients[i] = pools[1].Request(shape, Join(_linears[i].Name, "out.grad"));
        }
        return plan;
    }

    public override Tensor Forward(ModulePlan modulePlan, Tensor x, bool training)
    {
        var plan = Expect<MlpPlan>(modulePlan);
        plan.Input = x;
        var h = x;
        for (var i = 0; i < Layers; i++)
        {
            _linears[i].Forward(h, plan.LinearOutputs[i]);
            if (_norms[i] is { } norm)
            {
                norm.Forward(plan.Norms[i]!, plan.LinearOutputs[i], plan.Activations[i], training, relu: Relu(i));
            }
            else if (Relu(i))
            {
                Backend.Relu(plan.LinearOutputs[i], plan.Activations[i]);
            }
            h = plan.Activations[i];
        }
        return h;
    }

    public override void Backward(ModulePlan modulePlan, Tensor dy, Tensor? dx)
    {
        var plan = Expect<MlpPlan>(modulePlan);
        var x = plan.RequireInput(this);
        var activationGradient = dy;
        for (var i = Layers - 1; i >= 0; i--)
        {
            // d(linear output): through BN (+ReLU), through the ReLU, or dy itself for a plain last layer.
            var linearGradient = activationGradient;
            if (_norms[i] is { } norm)
            {
                linearGradient = plan.LinearGradients[i].Tensor;
                norm.Backward(plan.Norms[i]!, plan.LinearOutputs[i], plan.Activations[i], activationGradient, linearGradient);
            }
            else if (Relu(i))
            {
                linearGradient = plan.LinearGradients[i].Tensor;
                Backend.ReluBackward(plan.Activations[i], activationGradient, linearGradient);
            }
            var input = i == 0 ? x : plan.Activations[i - 1];
            var inputGradient = i == 0 ? dx : plan.ActivationGradients[i - 1]!.Tensor;
            _linears[i].Backward(input, linearGradient, inputGradient);
            activationGradient = inputGradient!;
        }
    }
}

/// <summary>An MLP head's activations for one input shape and its gradient views.</summary>
public sealed class MlpPlan : ModulePlan
{
    internal MlpPlan(int layers)
    {
        LinearOutputs = new Tensor[layers];
        Norms = new BatchNormPlan?[layers];
        Activations = new Tensor[layers];
        ActivationGradients = new ScratchView?[layers];
        LinearGradients = new ScratchView[layers];
    }

    public Tensor[] LinearOutputs { get; }

    public BatchNormPlan?[] Norms { get; }

    /// <summary>Each layer's output after its BN and ReLU; the last is the head's output.</summary>
    public Tensor[] Activations { get; }

    public override Tensor Output => Activations[^1];

    internal ScratchView?[] ActivationGradients { get; }

    internal ScratchView[] LinearGradients { get; }
}

/// <summary>
/// A single linear layer as a module: torchvision's classifier "fc" (with bias), or SwAV's prototypes (no bias,
/// rows kept L2-normalised by <see cref="NormalizeWeightRows"/>, which SwAV calls before every step).
/// </summary>
public sealed class LinearHead : Module
{
    private Tensor? _normalized;
    private Tensor? _norms;

    public LinearHead(ArenaLayout layout, int inFeatures, int outFeatures, bool bias, string name)
        : base(name)
    {
        Linear = new Linear(layout, name, inFeatures, outFeatures, bias);
    }

    public Linear Linear { get; }

    public override TensorShape OutputShape(TensorShape input) => Linear.OutputShape(input);

    protected override void BindParameters(ParameterArena arena)
    {
        Linear.Bind(arena);
        DisposeOwned();
    }

    public override void Initialize(ulong seed) => Linear.Initialize(seed);

    /// <summary>W[i, :] ← W[i, :] / ‖W[i, :]‖ (SwAV's prototype normalisation; no gradient flows through it).</summary>
    public void NormalizeWeightRows()
    {
        _normalized ??= Backend.Allocate(Linear.Weight.Shape, Join(Name, "weight.normalized"));
        _norms ??= Backend.Allocate(new TensorShape(Linear.OutFeatures), Join(Name, "weight.norms"));
        Backend.L2NormalizeRows(Linear.Weight, _normalized, _norms);
        Backend.Copy(_normalized, Linear.Weight);
    }

    public override ModulePlan CreatePlan(PlanBuilder builder, TensorShape input) =>
        new LinearPlan(builder.Allocate(OutputShape(input), Join(Name, "out")));

    public override Tensor Forward(ModulePlan modulePlan, Tensor x, bool training)
    {
        var plan = Expect<LinearPlan>(modulePlan);
        plan.Input = x;
        Linear.Forward(x, plan.Output);
        return plan.Output;
    }

    public override void Backward(ModulePlan modulePlan, Tensor dy, Tensor? dx)
    {
        var plan = Expect<LinearPlan>(modulePlan);
        Linear.Backward(plan.RequireInput(this), dy, dx);
    }

    protected override void DisposeOwned()
    {
        _normalized?.Dispose();
        _norms?.Dispose();
        _normalized = null;
        _norms = null;
    }

    /// <summary>torchvision's classifier: Linear(features, classes) named "fc".</summary>
    public static LinearHead Classifier(ArenaLayout layout, int inFeatures, int classes, string name = "fc") =>
        new(layout, inFeatures, classes, bias: true, name);

    /// <summary>SwAV's prototypes: Linear(dim, prototypes, bias=False) named "prototypes".</summary>
    public static LinearHead Prototypes(ArenaLayout layout, int dim, int prototypes, string name = "prototypes") =>
        new(layout, dim, prototypes, bias: false, name);
}

public sealed class LinearPlan(Tensor output) : ModulePlan
{
    public override Tensor Output { get; } = output;
}
