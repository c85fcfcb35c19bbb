namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;

/// <summary>
/// Batch normalisation over the last axis: BatchNorm2d on NHWC activations and BatchNorm1d on [N, C] features are
/// the same computation over an [rows, C] matrix. PyTorch's semantics: eps 1e-5, momentum 0.1, running_var updated
/// with the unbiased batch variance, num_batches_tracked counted. The ReLU that follows (and a residual block's
/// shortcut add before it) can be fused into the same pass.
/// Arena names: {name}.weight (NormScale), {name}.bias (NormShift), {name}.running_mean, {name}.running_var and
/// {name}.num_batches_tracked (Buffer; the counter is a float, exact to 2^24 steps).
/// With <see cref="SyncRanks"/> (SyncBN), training-mode statistics are those of every rank's batch together.
/// </summary>
public sealed class BatchNorm
{
    private readonly int _weightIndex = -1;
    private readonly int _biasIndex = -1;
    private readonly int _meanIndex;
    private readonly int _varIndex;
    private readonly int _trackedIndex;

    public BatchNorm(ArenaLayout layout, string name, int channels, bool affine = true, float momentum = 0.1f, float epsilon = 1e-5f)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfLessThan(channels, 1);
        Name = name;
        Channels = channels;
        Momentum = momentum;
        Epsilon = epsilon;
        var shape = new TensorShape(channels);
        if (affine)
        {
            _weightIndex = layout.Add(Module.Join(name, "weight"), shape, ParameterKind.NormScale);
            _biasIndex = layout.Add(Module.Join(name, "bias"), shape, ParameterKind.NormShift);
        }
        _meanIndex = layout.Add(Module.Join(name, "running_mean"), shape, ParameterKind.Buffer);
        _varIndex = layout.Add(Module.Join(name, "running_var"), shape, ParameterKind.Buffer);
        _trackedIndex = layout.Add(Module.Join(name, "num_batches_tracked"), new TensorShape(), ParameterKind.Buffer);
    }

    public string Name { get; }

    public int Channels { get; }

    public float Momentum { get; }

    public float Epsilon { get; }

    public bool IsAffine => _weightIndex >= 0;

    /// <summary>Initialise gamma to 0 instead of 1 (torchvision's zero_init_residual for a block's last norm).</summary>
    public bool ZeroInitWeight { get; set; }

    /// <summary>
    /// SyncBN: the ranks whose batches share this layer's training statistics; null (or one rank) keeps them per
    /// process. Set it before the layer is planned: a plan keeps the buffer its all-reduces use.
    /// </summary>
    public ICommunicator? SyncRanks { get; set; }

    public IBackend Backend { get; private set; } = null!;

    public BatchNormParameters Parameters { get; private set; }

    public Tensor? WeightGradient { get; private set; }

    public Tensor? BiasGradient { get; private set; }

    public void Bind(ParameterArena arena)
    {
        Backend = arena.Backend;
        Tensor? Value(int index, string what) => index < 0 ? null : arena.Value(Module.BoundView(arena, index, Module.Join(Name, what)));
        Parameters = new BatchNormParameters(
            Value(_weightIndex, "weight"), Value(_biasIndex, "bias"),
            Value(_meanIndex, "running_mean")!, Value(_varIndex, "running_var")!, Value(_trackedIndex, "num_batches_tracked"));
        WeightGradient = IsAffine ? arena.Gradient(arena[_weightIndex]) : null;
        BiasGradient = IsAffine ? arena.Gradient(arena[_biasIndex]) : null;
    }

    /// <summary>torchvision's init: weight 1 (0 when <see cref="ZeroInitWeight"/>), bias 0, running mean 0, variance 1, count 0.</summary>
    public void Initialize()
    {
        var p = Parameters;
        if (p.Weight is not null)
        {
            Backend.Fill(p.Weight, ZeroInitWeight ? 0f : 1f);
        }
        if (p.Bias is not null)
        {
            Backend.Fill(p.Bias, 0f);
        }
        Backend.Fill(p.RunningMean, 0f);
        Backend.Fill(p.RunningVar, 1f);
        Backend.Fill(p.BatchesTracked!, 0f);
    }

    public BatchNormPlan CreatePlan(PlanBuilder builder, TensorShape input)
    {
        if (input.Rank == 0 || input[-1] != Channels)
        {
            throw new ArgumentException($"{Name}: expects {Channels} channels in the last axis, got {input}");
        }
        var rows = input.Rows;
        var mean = builder.Allocate(new TensorShape(Channels), Module.Join(Name, "saved_mean"));
        var invStd = builder.Allocate(new TensorShape(Channels), Module.Join(Name, "saved_invstd"));
        var workspace = builder.Workspace.Request(new TensorShape(checked((int)Math.Max(1, builder.Backend.BatchNormWorkspaceElements(rows, Channels)))), Module.Join(Name, "partials"));
        var sync = SyncRanks is { Size: > 1 } ranks
            ? new BatchNormSync(builder.Allocate(new TensorShape(BatchNormSync.BufferLength(Channels)), Module.Join(Name, "sync_sums")), ranks.AllReduce)
            : null;
        return new BatchNormPlan(input, mean, invStd, workspace, sync);
    }

    /// <summary>
    /// y ← [ReLU](BN(x) [+ residual]): batch statistics (and a running-statistics update) when training, the
    /// running statistics otherwise. The mode is remembered for the backward.
    /// </summary>
    public void Forward(BatchNormPlan plan, Tensor x, Tensor y, bool training, bool relu, Tensor? residual = null)
    {
        CheckShape(plan, x);
        plan.Mode = new BatchNormMode(training, relu, Momentum, Epsilon);
        Backend.BatchNormForward(x, residual, y, Parameters, plan.SavedMean, plan.SavedInvStd, plan.Mode, plan.Workspace.Tensor, plan.Sync);
    }

    /// <summary>
    /// dx from dy (y is the forward output, for the ReLU mask); accumulates the gamma and beta gradients; with a fused
    /// residual, writes the shortcut's gradient (dy after the ReLU mask) into <paramref name="residualGradient"/>.
    /// </summary>
    public void Backward(BatchNormPlan plan, Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient = null)
    {
        CheckShape(plan, x);
        Backend.BatchNormBackward(x, y, dy, dx, residualGradient, Parameters.Weight, plan.SavedMean, plan.SavedInvStd, WeightGradient, BiasGradient, plan.Mode, plan.Workspace.Tensor, plan.Sync);
    }

    private void CheckShape(BatchNormPlan plan, Tensor x)
    {
        if (x.Shape != plan.InputShape)
        {
            throw new ArgumentException($"{Name}: {x.Describe()} does not match the planned input {plan.InputShape}");
        }
    }
}

/// <summary>A batch norm's saved statistics (mean and 1/std used by the last forward) and workspace for one shape.</summary>
public sealed class BatchNormPlan
{
    internal BatchNormPlan(TensorShape inputShape, Tensor savedMean, Tensor savedInvStd, ScratchView workspace, BatchNormSync? sync)
    {
        InputShape = inputShape;
        SavedMean = savedMean;
        SavedInvStd = savedInvStd;
        Workspace = workspace;
        Sync = sync;
    }

    public TensorShape InputShape { get; }

    public Tensor SavedMean { get; }

    public Tensor SavedInvStd { get; }

    public ScratchView Workspace { get; }

    /// <summary>SyncBN's buffer and all-reduce; null for per-process statistics.</summary>
    public BatchNormSync? Sync { get; }

    /// <summary>How the last forward ran (batch or running statistics, ReLU fused or not).</summary>
    public BatchNormMode Mode { get; internal set; }
}
