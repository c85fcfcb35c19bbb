namespace NativeContrast.Nn;

using NativeContrast.Tensors;

/// <summary>
/// A ResNet block: a chain of conv → BN → ReLU stages whose last BN adds the shortcut before its ReLU.
/// Basic (ResNet-18/34): 3×3 (stride s) → 3×3. Bottleneck (ResNet-50): 1×1 → 3×3 (stride s, torchvision v1.5)
/// → 1×1 expanding ×4. The shortcut is the input, or downsample = 1×1 conv (stride s) + BN when the shape changes.
/// Names follow torchvision: {name}.conv1, {name}.bn1, ..., {name}.downsample.0 (conv), {name}.downsample.1 (BN).
/// </summary>
public sealed class ResidualBlock
{
    private readonly Conv2d[] _convs;
    private readonly BatchNorm[] _norms;

    public ResidualBlock(ArenaLayout layout, string name, bool bottleneck, int inChannels, int planes, int stride)
    {
        Name = name;
        IsBottleneck = bottleneck;
        InChannels = inChannels;
        OutChannels = bottleneck ? planes * 4 : planes;
        Stride = stride;
        // (in, out, kernel, stride, padding) per stage.
        (int In, int Out, int Kernel, int Stride, int Padding)[] stages = bottleneck
            ? [(inChannels, planes, 1, 1, 0), (planes, planes, 3, stride, 1), (planes, OutChannels, 1, 1, 0)]
            : [(inChannels, planes, 3, stride, 1), (planes, planes, 3, 1, 1)];
        _convs = new Conv2d[stages.Length];
        _norms = new BatchNorm[stages.Length];
        for (var i = 0; i < stages.Length; i++)
        {
            var s = stages[i];
            _convs[i] = new Conv2d(layout, Module.Join(name, $"conv{i + 1}"), s.In, s.Out, s.Kernel, s.Stride, s.Padding);
            _norms[i] = new BatchNorm(layout, Module.Join(name, $"bn{i + 1}"), s.Out);
        }
        if (stride != 1 || inChannels != OutChannels)
        {
            DownsampleConv = new Conv2d(layout, Module.Join(name, "downsample.0"), inChannels, OutChannels, 1, stride);
            DownsampleNorm = new BatchNorm(layout, Module.Join(name, "downsample.1"), OutChannels);
        }
    }

    public string Name { get; }

    public bool IsBottleneck { get; }

    public int InChannels { get; }

    public int OutChannels { get; }

    public int Stride { get; }

    public IReadOnlyList<Conv2d> Convs => _convs;

    public IReadOnlyList<BatchNorm> Norms => _norms;

    public Conv2d? DownsampleConv { get; }

    public BatchNorm? DownsampleNorm { get; }

    /// <summary>The norm whose gamma zero_init_residual sets to 0 (bn2 of a basic block, bn3 of a bottleneck).</summary>
    public BatchNorm LastNorm => _norms[^1];

    public void Bind(ParameterArena arena)
    {
        foreach (var conv in _convs)
        {
            conv.Bind(arena);
        }
        foreach (var norm in _norms)
        {
            norm.Bind(arena);
        }
        DownsampleConv?.Bind(arena);
        DownsampleNorm?.Bind(arena);
    }

    public void Initialize(ulong seed)
    {
        foreach (var conv in _convs)
        {
            conv.Initialize(seed);
        }
        foreach (var norm in _norms)
        {
            norm.Initialize();
        }
        DownsampleConv?.Initialize(seed);
        DownsampleNorm?.Initialize();
    }

    public TensorShape OutputShape(TensorShape input)
    {
        var shape = input;
        foreach (var conv in _convs)
        {
            shape = conv.OutputShape(shape);
        }
        return shape;
    }

    /// <summary>Activations from the builder; the backward's temporaries from <paramref name="gradients"/>, shared by all blocks.</summary>
    public BlockPlan CreatePlan(PlanBuilder builder, TensorShape input, ScratchPool gradients)
    {
        var n = _convs.Length;
        var plan = new BlockPlan(n);
        var shape = input;
        var temporaries = new List<(TensorShape, string)>();
        for (var i = 0; i < n; i++)
        {
            plan.Convs[i] = _convs[i].CreatePlan(builder, shape);
            shape = _convs[i].OutputShape(shape);
            plan.ConvOutputs[i] = builder.Allocate(shape, Module.Join(_convs[i].Name, "out"));
            plan.Norms[i] = _norms[i].CreatePlan(builder, shape);
            plan.NormOutputs[i] = builder.Allocate(shape, Module.Join(_norms[i].Name, "out"));
            temporaries.Add((shape, Module.Join(_convs[i].Name, "out.grad")));
            if (i < n - 1)
            {
                temporaries.Add((shape, Module.Join(_norms[i].Name, "out.grad")));
            }
        }
        if (DownsampleConv is not null)
        {
            plan.DownsampleConv = DownsampleConv.CreatePlan(builder, input);
            plan.DownsampleOutput = builder.Allocate(shape, Module.Join(DownsampleConv.Name, "out"));
            plan.DownsampleNorm = DownsampleNorm!.CreatePlan(builder, shape);
            plan.DownsampleNormOutput = builder.Allocate(shape, Module.Join(DownsampleNorm.Name, "out"));
            temporaries.Add((shape, Module.Join(DownsampleNorm.Name, "out.grad")));
            temporaries.Add((shape, Module.Join(DownsampleConv.Name, "out.grad")));
        }
        var views = gradients.Request([.. temporaries]);
        var next = 0;
        for (var i = 0; i < n; i++)
        {
            plan.ConvOutputGradients[i] = views[next++];
            if (i < n - 1)
            {
                plan.NormOutputGradients[i] = views[next++];
            }
        }
        if (DownsampleConv is not null)
        {
            plan.ShortcutGradient = views[next++];
            plan.DownsampleOutputGradient = views[next];
        }
        return plan;
    }

    public Tensor Forward(BlockPlan plan, Tensor x, bool training)
    {
        // The shortcut first: the last stage's norm adds it before its ReLU.
        var shortcut = x;
        if (DownsampleConv is not null)
        {
            DownsampleConv.Forward(plan.DownsampleConv!, x, plan.DownsampleOutput!);
            DownsampleNorm!.Forward(plan.DownsampleNorm!, plan.DownsampleOutput!, plan.DownsampleNormOutput!, training, relu: false);
            shortcut = plan.DownsampleNormOutput!;
        }
        var h = x;
        for (var i = 0; i < _convs.Length; i++)
        {
            _convs[i].Forward(plan.Convs[i], h, plan.ConvOutputs[i]);
            var last = i == _convs.Length - 1;
            _norms[i].Forward(plan.Norms[i], plan.ConvOutputs[i], plan.NormOutputs[i], training, relu: true, residual: last ? shortcut : null);
            h = plan.NormOutputs[i];
        }
        return h;
    }

    /// <summary>From dy (gradient of the block output), accumulates parameter gradients and writes dx.</summary>
    public void Backward(BlockPlan plan, Tensor x, Tensor dy, Tensor dx)
    {
        var last = _convs.Length - 1;
        // Block tail: the ReLU mask, the shortcut's gradient (straight into dx for an identity shortcut), the norm.
        var shortcutGradient = DownsampleConv is null ? dx : plan.ShortcutGradient!.Tensor;
        _norms[last].Backward(plan.Norms[last], plan.ConvOutputs[last], plan.NormOutputs[last], dy, plan.ConvOutputGradients[last].Tensor, shortcutGradient);
        if (DownsampleConv is not null)
        {
            var downsampleGradient = plan.DownsampleOutputGradient!.Tensor;
            DownsampleNorm!.Backward(plan.DownsampleNorm!, plan.DownsampleOutput!, plan.DownsampleNormOutput!, shortcutGradient, downsampleGradient);
            DownsampleConv.Backward(plan.DownsampleConv!, x, downsampleGradient, dx);
        }
        for (var i = last; i >= 1; i--)
        {
            var normGradient = plan.NormOutputGradients[i - 1].Tensor;
            _convs[i].Backward(plan.Convs[i], plan.NormOutputs[i - 1], plan.ConvOutputGradients[i].Tensor, normGradient);
            _norms[i - 1].Backward(plan.Norms[i - 1], plan.ConvOutputs[i - 1], plan.NormOutputs[i - 1], normGradient, plan.ConvOutputGradients[i - 1].Tensor);
        }
        // The main path's input gradient adds to the shortcut's, already in dx.
        _convs[0].Backward(plan.Convs[0], x, plan.ConvOutputGradients[0].Tensor, dx, accumulateInputGradient: true);
    }

    internal void DisposePacked()
    {
        foreach (var conv in _convs)
        {
            conv.DisposePacked();
        }
        DownsampleConv?.DisposePacked();
    }
}

/// <summary>A block's activations (kept for the backward) and its views of the shared gradient temporaries.</summary>
public sealed class BlockPlan
{
    internal BlockPlan(int stages)
    {
        Convs = new ConvPlan[stages];
        ConvOutputs = new Tensor[stages];
        Norms = new BatchNormPlan[stages];
        NormOutputs = new Tensor[stages];
        ConvOutputGradients = new ScratchView[stages];
        NormOutputGradients = new ScratchView[stages - 1];
    }

    public ConvPlan[] Convs { get; }

    public Tensor[] ConvOutputs { get; }

    public BatchNormPlan[] Norms { get; }

    /// <summary>Each stage's output after BN and ReLU; the last one is the block's output.</summary>
    public Tensor[] NormOutputs { get; }

    public ConvPlan? DownsampleConv { get; internal set; }

    public Tensor? DownsampleOutput { get; internal set; }

    public BatchNormPlan? DownsampleNorm { get; internal set; }

    public Tensor? DownsampleNormOutput { get; internal set; }

    internal ScratchView[] ConvOutputGradients { get; }

    internal ScratchView[] NormOutputGradients { get; }

    internal ScratchView? ShortcutGradient { get; set; }

    internal ScratchView? DownsampleOutputGradient { get; set; }

    public Tensor Output => NormOutputs[^1];
}
