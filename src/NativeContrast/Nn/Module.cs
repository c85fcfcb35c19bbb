namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>The per-shape memory of one module inside a <see cref="Plan"/>; each module derives its own.</summary>
public abstract class ModulePlan
{
    /// <summary>The module's output, written by Forward.</summary>
    public abstract Tensor Output { get; }

    /// <summary>The input of the last Forward, kept (by reference) for the backward.</summary>
    public Tensor? Input { get; internal set; }

    internal Tensor RequireInput(Module module) =>
        Input ?? throw new InvalidOperationException($"{module.GetType().Name} '{module.Name}': Backward before Forward");
}

/// <summary>
/// A trainable piece of a network with an explicit forward and backward (no autograd tape). Its life:
/// <list type="number">
/// <item>construction declares the parameters into an <see cref="ArenaLayout"/> under PyTorch's names;</item>
/// <item><see cref="Bind"/> attaches the module to the <see cref="ParameterArena"/> built from that layout;</item>
/// <item><see cref="Initialize"/> writes torchvision's initialisation with the backend's Philox generator;</item>
/// <item><see cref="Plan(TensorShape, bool)"/> allocates the memory of one input shape; the plan runs the steps.</item>
/// </list>
/// Activations are NHWC, [N, H, W, C] (see <see cref="Conv2d"/> for why); features and logits are [N, C].
/// </summary>
public abstract class Module : IDisposable
{
    private readonly Dictionary<TensorShape, Plan> _plans = [];
    private IBackend? _backend;

    protected Module(string name) => Name = name;

    /// <summary>The prefix of this module's parameter names ("" for a top-level torchvision model).</summary>
    public string Name { get; }

    public IBackend Backend => _backend ?? throw new InvalidOperationException($"{GetType().Name} '{Name}' is not bound to an arena yet");

    public bool IsBound => _backend is not null;

    public abstract TensorShape OutputShape(TensorShape input);

    /// <summary>Attaches the module (and its children) to the arena built from the layout it declared into.</summary>
    public void Bind(ParameterArena arena)
    {
        ArgumentNullException.ThrowIfNull(arena);
        _backend = arena.Backend;
        BindParameters(arena);
    }

    /// <summary>Writes the initial parameters and buffers; the same seed gives the same values on every backend.</summary>
    public abstract void Initialize(ulong seed);

    /// <summary>A new plan for inputs of <paramref name="input"/>'s shape; the caller disposes it.</summary>
    public Plan Plan(TensorShape input, bool inputGradient = false)
    {
        var builder = new PlanBuilder(Backend);
        try
        {
            var root = CreatePlan(builder, input);
            var dx = inputGradient ? builder.Allocate(input, $"{Name}.input.grad") : null;
            var (owned, bytes) = builder.Build();
            return new Plan(this, input, root, dx, owned, bytes);
        }
        catch
        {
            // Out of device memory half-way through: give back what the plan got so far.
            builder.Release();
            throw;
        }
    }

    /// <summary>The plan for this input shape, made (and kept by the module) the first time the shape is seen.</summary>
    public Plan PlanFor(TensorShape input)
    {
        if (!_plans.TryGetValue(input, out var plan))
        {
            plan = Plan(input);
            _plans[input] = plan;
        }
        return plan;
    }

    /// <summary>Plans this module inside a parent's plan: activations from the builder, temporaries from its pools.</summary>
    public abstract ModulePlan CreatePlan(PlanBuilder builder, TensorShape input);

    /// <summary>Computes the output from <paramref name="x"/> into the plan's memory and returns it.</summary>
    public abstract Tensor Forward(ModulePlan plan, Tensor x, bool training);

    /// <summary>
    /// From the gradient of the output, accumulates parameter gradients into the arena and writes (overwrites) the
    /// input gradient into <paramref name="dx"/> unless it is null.
    /// </summary>
    public abstract void Backward(ModulePlan plan, Tensor dy, Tensor? dx);

    protected abstract void BindParameters(ParameterArena arena);

    /// <summary>Releases memory the module owns besides its plans (packed weights, children).</summary>
    protected virtual void DisposeOwned()
    {
    }

    protected TPlan Expect<TPlan>(ModulePlan plan)
        where TPlan : ModulePlan =>
        plan as TPlan ?? throw new ArgumentException($"{GetType().Name} '{Name}' was given a {plan.GetType().Name}, not its own plan");

    public void Dispose()
    {
        foreach (var plan in _plans.Values)
        {
            plan.Dispose();
        }
        _plans.Clear();
        DisposeOwned();
        GC.SuppressFinalize(this);
    }

    /// <summary>The arena view of a parameter declared at <paramref name="index"/>, checking that the arena comes from the same layout.</summary>
    internal static ParameterView BoundView(ParameterArena arena, int index, string expectedName)
    {
        if (index >= arena.Views.Count || arena[index].Name != expectedName)
        {
            var found = index < arena.Views.Count ? $"'{arena[index].Name}'" : "nothing";
            throw new ArgumentException($"arena parameter {index} is {found}, expected '{expectedName}': bind to the arena built from the layout the module declared into");
        }
        return arena[index];
    }

    /// <summary>PyTorch's dotted name: <c>Join("layer1.0", "conv1")</c> is "layer1.0.conv1"; an empty prefix adds nothing.</summary>
    public static string Join(string prefix, string name) => prefix.Length == 0 ? name : $"{prefix}.{name}";
}
