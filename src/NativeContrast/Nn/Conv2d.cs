namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// A 2-D convolution with a square kernel, as im2col + GEMM.
/// <para>
/// Activations are NHWC ([N, H, W, C], channels fastest). Why: (1) the output of a convolution is then the GEMM's
/// row-major [N·OH·OW, O] result with no transpose, and a 1×1 stride-1 convolution (two thirds of ResNet-50's
/// convolutions) is a plain GEMM on the activation with no im2col at all; (2) im2col copies whole channel runs,
/// so its reads and writes are contiguous (float4 on the GPU); (3) batch norm reduces columns of an [rows, C]
/// matrix, the same op for BatchNorm2d and BatchNorm1d; (4) tensor-core kernels and PyTorch's channels_last
/// peer use the same layout.
/// </para>
/// <para>
/// The weight stays in PyTorch's [out, in, kh, kw] layout in the arena, so a checkpoint maps 1:1 onto torchvision's
/// state_dict. Forward permutes it once per call into [out, kh·kw·in] (the im2col column order); the weight
/// gradient is computed in that order and permuted back (accumulated) into the arena.
/// </para>
/// <para>
/// Forward: y = columns · packedᵀ (+ bias). Backward: dW += dyᵀ · columns, dcolumns = dy · packed, dx = col2im.
/// Large inputs are processed in chunks of whole samples so the im2col buffer stays below
/// <see cref="MaxColumnElements"/>; the columns are rebuilt in the backward rather than kept.
/// </para>
/// <para>
/// A backend with a whole convolution of its own (<see cref="IBackend.CreateConvolution"/>: oneDNN on the CPU) runs
/// that instead, built once per plan; the weight stays in the arena's layout and the library reorders it.
/// </para>
/// </summary>
public sealed class Conv2d
{
    /// <summary>Largest im2col buffer (floats) a plan allocates: 128 MiB. Bigger inputs are done in chunks of samples.</summary>
    public const long MaxColumnElements = 1L << 25;

    private readonly int _weightIndex;
    private readonly int _biasIndex = -1;
    private Tensor? _packed;
    private Tensor? _weightMatrix;
    private Tensor? _weightGradientMatrix;

    public Conv2d(ArenaLayout layout, string name, int inChannels, int outChannels, int kernel, int stride = 1, int padding = 0, bool bias = false)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfLessThan(inChannels, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outChannels, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(kernel, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(stride, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(padding);
        Name = name;
        InChannels = inChannels;
        OutChannels = outChannels;
        Kernel = kernel;
        Stride = stride;
        Padding = padding;
        _weightIndex = layout.Add(Module.Join(name, "weight"), new TensorShape(outChannels, inChannels, kernel, kernel), ParameterKind.Weight);
        if (bias)
        {
            _biasIndex = layout.Add(Module.Join(name, "bias"), new TensorShape(outChannels), ParameterKind.Bias);
        }
    }

    public string Name { get; }

    public int InChannels { get; }

    public int OutChannels { get; }

    public int Kernel { get; }

    public int Stride { get; }

    public int Padding { get; }

    public bool HasBias => _biasIndex >= 0;

    public IBackend Backend { get; private set; } = null!;

    /// <summary>[out, in, k, k] in the arena.</summary>
    public Tensor Weight { get; private set; } = null!;

    public Tensor WeightGradient { get; private set; } = null!;

    public Tensor? Bias { get; private set; }

    public Tensor? BiasGradient { get; private set; }

    /// <summary>Whether the input itself is the im2col matrix (1×1, stride 1, no padding).</summary>
    public bool IsPointwise => Kernel == 1 && Stride == 1 && Padding == 0;

    public void Bind(ParameterArena arena)
    {
        Backend = arena.Backend;
        Weight = arena.Value(Module.BoundView(arena, _weightIndex, Module.Join(Name, "weight")));
        WeightGradient = arena.Gradient(arena[_weightIndex]);
        if (HasBias)
        {
            Bias = arena.Value(Module.BoundView(arena, _biasIndex, Module.Join(Name, "bias")));
            BiasGradient = arena.Gradient(arena[_biasIndex]);
        }
        var columns = Kernel * Kernel * InChannels;
        _packed?.Dispose();
        _packed = null;
        // A 1×1 kernel is already in column order: the GEMM reads the arena weight directly. A larger one is packed
        // once an im2col plan needs it (a backend convolution, oneDNN's, reads the arena weight itself).
        _weightMatrix = Kernel == 1 ? Weight.View(0, new TensorShape(OutChannels, columns)) : null;
        _weightGradientMatrix = WeightGradient.View(0, new TensorShape(OutChannels, columns));
    }

    /// <summary>The weight as the im2col GEMMs read it: the arena's for a 1×1 kernel, else the packed copy (allocated on first need).</summary>
    private Tensor WeightMatrix()
    {
        if (_weightMatrix is null)
        {
            _packed = Backend.Allocate(new TensorShape(OutChannels, Kernel * Kernel * InChannels), Module.Join(Name, "weight.packed"));
            _weightMatrix = _packed;
        }
        return _weightMatrix;
    }

    /// <summary>torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (out·k·k)); bias as nn.Conv2d.</summary>
    public void Initialize(ulong seed)
    {
        var fanOut = OutChannels * Kernel * Kernel;
        Backend.RandomNormal(Weight, seed, (ulong)_weightIndex, 0f, MathF.Sqrt(2f / fanOut));
        if (Bias is not null)
        {
            Init.Uniform(Backend, Bias, 1f / MathF.Sqrt(InChannels * Kernel * Kernel), seed, (ulong)_biasIndex);
        }
    }

    public Conv2dGeometry Geometry(TensorShape input)
    {
        var g = Conv2dGeometry.Of(input, Kernel, Stride, Padding);
        if (g.Channels != InChannels)
        {
            throw new ArgumentException($"{Name}: expects {InChannels} input channels, the input {input} has {g.Channels}");
        }
        return g;
    }

    public TensorShape OutputShape(TensorShape input) => Geometry(input).OutputShape(OutChannels);

    /// <summary>The geometry and workspace views for one input shape; im2col runs in chunks of samples whose columns fit <paramref name="maxColumnElements"/>.</summary>
    public ConvPlan CreatePlan(PlanBuilder builder, TensorShape input, long maxColumnElements = MaxColumnElements)
    {
        var g = Geometry(input);
        if (builder.Backend.CreateConvolution(g, OutChannels) is { } convolution)
        {
            return new ConvPlan(g, g.Batch, null, null, builder.Own(convolution));
        }
        if (IsPointwise)
        {
            return new ConvPlan(g, g.Batch, null, null);
        }
        var perSample = (long)g.OutPositions * g.Columns;
        var chunk = (int)Math.Clamp(maxColumnElements / Math.Max(1, perSample), 1, g.Batch);
        var parts = new List<(TensorShape, string)> { (new TensorShape(chunk * g.OutPositions, g.Columns), Module.Join(Name, "columns")) };
        if (Kernel > 1)
        {
            parts.Add((new TensorShape(OutChannels, g.Columns), Module.Join(Name, "weight.packed.grad")));
        }
        var views = builder.Workspace.Request([.. parts]);
        // The packed weight is allocated with the plan, so that a step allocates nothing.
        _ = WeightMatrix();
        return new ConvPlan(g, chunk, views[0], Kernel > 1 ? views[1] : null);
    }

    /// <summary>y [N, OH, OW, out] ← conv(x [N, H, W, in]).</summary>
    public void Forward(ConvPlan plan, Tensor x, Tensor y)
    {
        CheckShapes(plan, x, y);
        if (plan.Convolution is { } convolution)
        {
            convolution.Forward(x, Weight, y);
        }
        else
        {
            Im2ColForward(plan, x, y);
        }
        if (Bias is not null)
        {
            Backend.AddBias(y, Bias);
        }
    }

    private void Im2ColForward(ConvPlan plan, Tensor x, Tensor y)
    {
        var w = WeightMatrix();
        if (_packed is not null)
        {
            Backend.PackConvWeight(Weight, _packed);
        }
        if (plan.Columns is null)
        {
            Backend.Gemm(x, false, w, true, y);
        }
        else
        {
            for (var first = 0; first < plan.Geometry.Batch; first += plan.ChunkSamples)
            {
                var count = plan.ChunkCount(first);
                var columns = plan.ColumnsFor(count);
                Backend.Im2Col(x, columns, plan.Geometry, first, count);
                Backend.Gemm(columns, false, w, true, plan.OutputRows(y, first, count, OutChannels));
            }
        }
    }

    /// <summary>
    /// Accumulates dW (and db) from dy, and writes dx unless it is null; with <paramref name="accumulateInputGradient"/>
    /// dx is added to (a residual block's shortcut gradient is already there). Uses the weights packed by Forward.
    /// </summary>
    public void Backward(ConvPlan plan, Tensor x, Tensor dy, Tensor? dx, bool accumulateInputGradient = false)
    {
        CheckShapes(plan, x, dy);
        if (dx is not null && dx.Shape != x.Shape)
        {
            throw new ArgumentException($"{Name}: {dx.Describe()} does not match the input {x.Describe()}");
        }
        if (BiasGradient is not null)
        {
            Backend.AccumulateBiasGradient(dy, BiasGradient);
        }
        if (plan.Convolution is { } convolution)
        {
            convolution.BackwardWeights(x, dy, WeightGradient);
            if (dx is not null)
            {
                convolution.BackwardData(dy, Weight, dx, accumulateInputGradient);
            }
            return;
        }
        var w = _weightMatrix!;
        var weightGradient = _weightGradientMatrix!;
        var inputBeta = accumulateInputGradient ? 1f : 0f;
        if (plan.Columns is null)
        {
            Backend.Gemm(dy, true, x, false, weightGradient, beta: 1f);
            if (dx is not null)
            {
                Backend.Gemm(dy, false, w, false, dx, beta: inputBeta);
            }
            return;
        }
        // A 1×1 kernel's gradient accumulates straight into the arena; a larger one goes through the packed order.
        var packedGradient = plan.PackedGradient?.Tensor;
        for (var first = 0; first < plan.Geometry.Batch; first += plan.ChunkSamples)
        {
            var count = plan.ChunkCount(first);
            var columns = plan.ColumnsFor(count);
            var dyRows = plan.OutputRows(dy, first, count, OutChannels);
            Backend.Im2Col(x, columns, plan.Geometry, first, count);
            if (packedGradient is null)
            {
                Backend.Gemm(dyRows, true, columns, false, weightGradient, beta: 1f);
            }
            else
            {
                Backend.Gemm(dyRows, true, columns, false, packedGradient, beta: first == 0 ? 0f : 1f);
            }
            if (dx is not null)
            {
                // The columns are spent: reuse them for dcolumns.
                Backend.Gemm(dyRows, false, w, false, columns);
                Backend.Col2Im(columns, dx, plan.Geometry, first, count, accumulateInputGradient);
            }
        }
        if (packedGradient is not null)
        {
            Backend.UnpackConvWeightGradient(packedGradient, WeightGradient);
        }
    }

    internal void DisposePacked()
    {
        _packed?.Dispose();
        _packed = null;
        if (Kernel > 1)
        {
            _weightMatrix = null;
        }
    }

    private void CheckShapes(ConvPlan plan, Tensor x, Tensor y)
    {
        if (x.Shape != plan.Geometry.InputShape)
        {
            throw new ArgumentException($"{Name}: {x.Describe()} does not match the planned input {plan.Geometry.InputShape}");
        }
        if (y.Shape != plan.Geometry.OutputShape(OutChannels))
        {
            throw new ArgumentException($"{Name}: {y.Describe()} does not match the output {plan.Geometry.OutputShape(OutChannels)}");
        }
    }
}

/// <summary>A convolution's geometry for one input shape and its views of the plan's workspace.</summary>
public sealed class ConvPlan
{
    private Tensor? _tailColumns;

    internal ConvPlan(Conv2dGeometry geometry, int chunkSamples, ScratchView? columns, ScratchView? packedGradient, IConvolution? convolution = null)
    {
        Geometry = geometry;
        ChunkSamples = chunkSamples;
        Columns = columns;
        PackedGradient = packedGradient;
        Convolution = convolution;
    }

    public Conv2dGeometry Geometry { get; }

    /// <summary>The backend's own convolution for this geometry (owned by the plan), or null for im2col + GEMM.</summary>
    public IConvolution? Convolution { get; }

    /// <summary>Samples per im2col chunk (the whole batch unless the columns would exceed <see cref="Conv2d.MaxColumnElements"/>).</summary>
    public int ChunkSamples { get; }

    /// <summary>The im2col buffer [ChunkSamples·OH·OW, k·k·in]; null for a pointwise or backend-run convolution.</summary>
    public ScratchView? Columns { get; }

    /// <summary>The weight gradient in column order [out, k·k·in]; null when k = 1.</summary>
    public ScratchView? PackedGradient { get; }

    /// <summary>Samples in the chunk that starts at sample <paramref name="first"/>.</summary>
    internal int ChunkCount(int first) => Math.Min(ChunkSamples, Geometry.Batch - first);

    internal Tensor ColumnsFor(int samples)
    {
        var full = Columns!.Tensor;
        if (samples == ChunkSamples)
        {
            return full;
        }
        return _tailColumns ??= full.View(0, new TensorShape(samples * Geometry.OutPositions, Geometry.Columns));
    }

    /// <summary>Rows of an [N, OH, OW, C] tensor for samples [first, first + count), as a matrix.</summary>
    internal Tensor OutputRows(Tensor t, int first, int count, int channels) =>
        count == Geometry.Batch
            ? t
            : t.View((long)first * Geometry.OutPositions * channels, new TensorShape(count * Geometry.OutPositions, channels));
}
