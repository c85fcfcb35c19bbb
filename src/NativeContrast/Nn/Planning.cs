namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// A tensor carved from a <see cref="ScratchPool"/>: memory that several modules use in turn because they never
/// run at the same time (im2col columns, reduction partials, the gradients inside a residual block). Its tensor
/// exists once the plan is built; modules create views while planning and read <see cref="Tensor"/> when running.
/// </summary>
public sealed class ScratchView
{
    private readonly ScratchPool _pool;
    private readonly long _offset;
    private readonly string _name;
    private Tensor? _tensor;

    internal ScratchView(ScratchPool pool, long offset, TensorShape shape, string name)
    {
        _pool = pool;
        _offset = offset;
        _name = name;
        Shape = shape;
    }

    public TensorShape Shape { get; }

    public Tensor Tensor => _tensor ??= _pool.Buffer.View(_offset, Shape, _name);
}

/// <summary>
/// Memory shared in turn: every request starts at offset 0 and the pool is as large as its largest request.
/// The parts of one request never overlap each other.
/// </summary>
public sealed class ScratchPool
{
    private Tensor? _buffer;

    internal ScratchPool(string name) => Name = name;

    public string Name { get; }

    /// <summary>Elements the pool needs: the largest request so far.</summary>
    public long Elements { get; private set; }

    internal Tensor Buffer => _buffer ?? throw new InvalidOperationException($"scratch pool '{Name}' is used before its plan was built");

    /// <summary>One region holding <paramref name="parts"/> back to back (each 32-float aligned).</summary>
    public ScratchView[] Request(params (TensorShape Shape, string Name)[] parts)
    {
        var views = new ScratchView[parts.Length];
        long offset = 0;
        for (var i = 0; i < parts.Length; i++)
        {
            views[i] = new ScratchView(this, offset, parts[i].Shape, $"{Name}:{parts[i].Name}");
            offset += RoundUp(parts[i].Shape.Length);
        }
        Elements = Math.Max(Elements, offset);
        return views;
    }

    public ScratchView Request(TensorShape shape, string name) => Request((shape, name))[0];

    internal Tensor Allocate(IBackend backend)
    {
        _buffer = backend.Allocate(new TensorShape(checked((int)Math.Max(1, Elements))), Name);
        return _buffer;
    }

    private static long RoundUp(long n) => (n + ArenaLayout.AlignmentElements - 1) / ArenaLayout.AlignmentElements * ArenaLayout.AlignmentElements;
}

/// <summary>
/// Collects the memory of one plan while modules plan themselves: tensors that live across forward and backward
/// (activations, saved statistics) are allocated at once; scratch pools are sized by their largest request and
/// allocated by <see cref="Build"/>. Nothing is allocated after that: every step reuses this memory.
/// </summary>
public sealed class PlanBuilder
{
    private readonly List<Tensor> _owned = [];
    private readonly List<IDisposable> _resources = [];
    private readonly List<ScratchPool> _pools = [];
    private bool _built;

    internal PlanBuilder(IBackend backend)
    {
        Backend = backend;
        Workspace = CreatePool("workspace");
    }

    public IBackend Backend { get; }

    /// <summary>Per-layer temporaries used within one layer call: im2col columns, packed weight gradients, reduction partials.</summary>
    public ScratchPool Workspace { get; }

    /// <summary>A tensor owned by the plan that keeps its contents between calls.</summary>
    public Tensor Allocate(TensorShape shape, string name)
    {
        ObjectDisposedException.ThrowIf(_built, this);
        var t = Backend.Allocate(shape, name);
        _owned.Add(t);
        return t;
    }

    /// <summary>A native resource of the plan (a library's convolution primitives), disposed with it.</summary>
    public T Own<T>(T resource)
        where T : IDisposable
    {
        ObjectDisposedException.ThrowIf(_built, this);
        _resources.Add(resource);
        return resource;
    }

    public ScratchPool CreatePool(string name)
    {
        ObjectDisposedException.ThrowIf(_built, this);
        var pool = new ScratchPool(name);
        _pools.Add(pool);
        return pool;
    }

    /// <summary>Allocates the pools; returns everything the plan owns (tensors, then native resources) and the tensors' bytes.</summary>
    internal (List<IDisposable> Owned, long Bytes) Build()
    {
        _built = true;
        foreach (var pool in _pools)
        {
            _owned.Add(pool.Allocate(Backend));
        }
        return ([.. _owned, .. _resources], _owned.Sum(t => t.Length) * sizeof(float));
    }

    /// <summary>Frees everything allocated so far, for a plan that failed before it was made.</summary>
    internal void Release()
    {
        _built = true;
        foreach (var t in _owned)
        {
            t.Dispose();
        }
        _owned.Clear();
    }
}

/// <summary>
/// Everything one input shape needs, planned once: the module's activations, saved tensors, gradient buffers and
/// workspaces. <see cref="Forward"/> and <see cref="Backward"/> run a step in this memory and allocate nothing on
/// the device, and neither synchronises with the host, so a step can be captured in a CUDA graph.
/// Parameter gradients accumulate into the arena's gradient buffer: zero it before a step
/// (<c>backend.Fill(arena.Gradients, 0)</c>); several forward/backward pairs (multi-crop) then add up.
/// A plan holds one step's activations: run Backward before the next Forward of the same plan.
/// </summary>
public sealed class Plan : IDisposable
{
    private readonly List<IDisposable> _owned;

    internal Plan(Module module, TensorShape inputShape, ModulePlan root, Tensor? inputGradient, List<IDisposable> owned, long bytes)
    {
        Module = module;
        InputShape = inputShape;
        Root = root;
        InputGradient = inputGradient;
        _owned = owned;
        Bytes = bytes;
    }

    public Module Module { get; }

    public TensorShape InputShape { get; }

    /// <summary>The module's own plan (cast it to the module's plan type to reach inner activations).</summary>
    public ModulePlan Root { get; }

    /// <summary>The output of the last <see cref="Forward"/>.</summary>
    public Tensor Output => Root.Output;

    /// <summary>The gradient with respect to the input, written by <see cref="Backward"/> when the plan was made with one.</summary>
    public Tensor? InputGradient { get; }

    /// <summary>Device (or host) bytes this plan holds.</summary>
    public long Bytes { get; }

    /// <summary>Runs the module on <paramref name="x"/> (which must stay unchanged until <see cref="Backward"/>); returns <see cref="Output"/>.</summary>
    public Tensor Forward(Tensor x, bool training)
    {
        if (x.Shape != InputShape)
        {
            throw new ArgumentException($"{x.Describe()} does not match the plan's input shape {InputShape}");
        }
        if (x.Layout == ImageLayout.Nchw)
        {
            // A reshape of NCHW data passes the shape check and scrambles channels: refuse it by its tag.
            throw new ArgumentException($"{x.Describe()} is an NCHW batch; {Module.GetType().Name} reads NHWC [N, H, W, C] images (transpose the batch, e.g. torch's x.permute(0, 2, 3, 1))");
        }
        return Module.Forward(Root, x, training);
    }

    /// <summary>Back-propagates <paramref name="dy"/> (shaped like <see cref="Output"/>): parameter gradients accumulate in the arena.</summary>
    public void Backward(Tensor dy)
    {
        if (dy.Shape != Output.Shape)
        {
            throw new ArgumentException($"{dy.Describe()} does not match the output {Output.Describe()}");
        }
        Module.Backward(Root, dy, InputGradient);
    }

    public void Dispose()
    {
        foreach (var t in _owned)
        {
            t.Dispose();
        }
        _owned.Clear();
    }
}
