namespace NativeContrast.Nn;

using NativeContrast.Tensors;

/// <summary>ImageNet's stem (7×7 stride-2 conv + 3×3 stride-2 max pool) or the CIFAR one (3×3 stride-1 conv, no pool).</summary>
public enum ResNetStem
{
    ImageNet,
    Cifar,
}

/// <summary>The shape of a ResNet. <see cref="ResNet18"/>, <see cref="ResNet34"/> and <see cref="ResNet50"/> are torchvision's.</summary>
public sealed record ResNetOptions
{
    /// <summary>Bottleneck blocks (ResNet-50 and deeper) or basic blocks (ResNet-18/34).</summary>
    public required bool Bottleneck { get; init; }

    /// <summary>Blocks in layer1..layer4.</summary>
    public required int[] Layers { get; init; }

    public ResNetStem Stem { get; init; } = ResNetStem.ImageNet;

    /// <summary>Image channels: 3 for colour, 1 for Fashion-MNIST.</summary>
    public int InputChannels { get; init; } = 3;

    /// <summary>Scales every width (stem and all layers), as SimCLR v2's 2× and 3× ResNets; 0.25 makes a small test model.</summary>
    public double WidthMultiplier { get; init; } = 1.0;

    /// <summary>torchvision's zero_init_residual: the last BN of each block starts with gamma = 0.</summary>
    public bool ZeroInitResidual { get; init; }

    public static ResNetOptions ResNet18 => new() { Bottleneck = false, Layers = [2, 2, 2, 2] };

    public static ResNetOptions ResNet34 => new() { Bottleneck = false, Layers = [3, 4, 6, 3] };

    public static ResNetOptions ResNet50 => new() { Bottleneck = true, Layers = [3, 4, 6, 3] };

    public static ResNetOptions ResNet101 => new() { Bottleneck = true, Layers = [3, 4, 23, 3] };

    public static ResNetOptions ResNet152 => new() { Bottleneck = true, Layers = [3, 8, 36, 3] };

    /// <summary>
    /// A small basic-block ResNet with one block per stage (ResNet-10 in the literature's naming): half of
    /// ResNet-18's depth, for quick runs on a CPU. Its state names are torchvision's, with layerN.1 absent.
    /// </summary>
    public static ResNetOptions ResNet10 => new() { Bottleneck = false, Layers = [1, 1, 1, 1] };

    /// <summary>The architectures <see cref="FromName"/> knows.</summary>
    public static IReadOnlyList<string> Names { get; } = ["resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

    /// <summary>torchvision's ResNet of that name (resnet18 … resnet152), or resnet10.</summary>
    public static ResNetOptions FromName(string arch) => arch.ToLowerInvariant() switch
    {
        "resnet10" => ResNet10,
        "resnet18" => ResNet18,
        "resnet34" => ResNet34,
        "resnet50" => ResNet50,
        "resnet101" => ResNet101,
        "resnet152" => ResNet152,
        _ => throw new ArgumentException($"unknown backbone '{arch}'; choose one of {string.Join(", ", Names)}", nameof(arch)),
    };

    /// <summary>The width of a stage whose torchvision width is <paramref name="baseWidth"/>.</summary>
    public int Width(int baseWidth) => Math.Max(1, (int)Math.Round(baseWidth * WidthMultiplier));
}

/// <summary>
/// A torchvision ResNet encoder written out layer by layer: stem → layer1..layer4 → global average pool. Its output
/// is the pooled feature vector [N, <see cref="FeatureDim"/>] (torchvision's fc is a separate
/// <see cref="LinearClassifier"/> named "fc", so the encoder's state maps onto torchvision's state_dict).
/// Input: NHWC images [N, H, W, InputChannels] of any size the stem and strides accept.
/// </summary>
public sealed class ResNet : Module
{
    private readonly ResidualBlock[] _blocks;

    public ResNet(ArenaLayout layout, ResNetOptions options, string name = "")
        : base(name)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Layers.Length != 4 || options.Layers.Any(n => n < 1))
        {
            throw new ArgumentException($"a ResNet has four layers of at least one block each, got [{string.Join(", ", options.Layers)}]", nameof(options));
        }
        Options = options;
        var stemWidth = options.Width(64);
        Conv1 = options.Stem == ResNetStem.ImageNet
            ? new Conv2d(layout, Join(name, "conv1"), options.InputChannels, stemWidth, 7, 2, 3)
            : new Conv2d(layout, Join(name, "conv1"), options.InputChannels, stemWidth, 3, 1, 1);
        Bn1 = new BatchNorm(layout, Join(name, "bn1"), stemWidth);
        MaxPool = options.Stem == ResNetStem.ImageNet ? new MaxPool2d(3, 2, 1) : null;
        var blocks = new List<ResidualBlock>();
        var inChannels = stemWidth;
        for (var layer = 0; layer < 4; layer++)
        {
            var planes = options.Width(64 << layer);
            for (var b = 0; b < options.Layers[layer]; b++)
            {
                var stride = layer > 0 && b == 0 ? 2 : 1;
                var block = new ResidualBlock(layout, Join(name, $"layer{layer + 1}.{b}"), options.Bottleneck, inChannels, planes, stride);
                block.LastNorm.ZeroInitWeight = options.ZeroInitResidual;
                blocks.Add(block);
                inChannels = block.OutChannels;
            }
        }
        _blocks = [.. blocks];
        FeatureDim = inChannels;
    }

    public ResNetOptions Options { get; }

    public Conv2d Conv1 { get; }

    public BatchNorm Bn1 { get; }

    /// <summary>The stem's max pool (null for the CIFAR stem).</summary>
    public MaxPool2d? MaxPool { get; }

    public IReadOnlyList<ResidualBlock> Blocks => _blocks;

    /// <summary>Every batch norm of the network, stem first (what SyncBN synchronises).</summary>
    public IEnumerable<BatchNorm> BatchNorms => [Bn1, .. _blocks.SelectMany(b => b.DownsampleNorm is { } d ? [.. b.Norms, d] : b.Norms)];

    /// <summary>Channels of the pooled features (512·w for ResNet-18/34, 2048·w for ResNet-50).</summary>
    public int FeatureDim { get; }

    public override TensorShape OutputShape(TensorShape input)
    {
        var shape = StemOutputShape(input);
        foreach (var block in _blocks)
        {
            shape = block.OutputShape(shape);
        }
        return GlobalAvgPool.OutputShape(shape);
    }

    protected override void BindParameters(ParameterArena arena)
    {
        Conv1.Bind(arena);
        Bn1.Bind(arena);
        foreach (var block in _blocks)
        {
            block.Bind(arena);
        }
    }

    public override void Initialize(ulong seed)
    {
        Conv1.Initialize(seed);
        Bn1.Initialize();
        foreach (var block in _blocks)
        {
            block.Initialize(seed);
        }
    }

    public override ModulePlan CreatePlan(PlanBuilder builder, TensorShape input)
    {
        var plan = new ResNetPlan();
        plan.Conv1 = Conv1.CreatePlan(builder, input);
        var shape = Conv1.OutputShape(input);
        plan.Conv1Output = builder.Allocate(shape, Join(Name, "conv1.out"));
        plan.Bn1 = Bn1.CreatePlan(builder, shape);
        plan.Bn1Output = builder.Allocate(shape, Join(Name, "bn1.out"));
        var stemShape = shape;
        if (MaxPool is not null)
        {
            plan.MaxPool = MaxPool.CreatePlan(builder, shape, Join(Name, "maxpool"));
            stemShape = MaxPool.OutputShape(shape);
            plan.MaxPoolOutput = builder.Allocate(stemShape, Join(Name, "maxpool.out"));
        }

        // Gradients between stages alternate between two pools, in the order the backward produces them.
        var pools = new[] { builder.CreatePool(Join(Name, "grad.even")), builder.CreatePool(Join(Name, "grad.odd")) };
        var order = 0;
        ScratchView Boundary(TensorShape s, string what) => pools[order++ % 2].Request(s, Join(Name, what));

        var blockGradients = builder.CreatePool(Join(Name, "block.grads"));
        var blockInputs = new TensorShape[_blocks.Length];
        plan.Blocks = new BlockPlan[_blocks.Length];
        shape = stemShape;
        for (var i = 0; i < _blocks.Length; i++)
        {
            blockInputs[i] = shape;
            plan.Blocks[i] = _blocks[i].CreatePlan(builder, shape, blockGradients);
            shape = _blocks[i].OutputShape(shape);
        }
        plan.Features = builder.Allocate(GlobalAvgPool.OutputShape(shape), Join(Name, "features"));

        plan.BlockOutputGradients = new ScratchView[_blocks.Length];
        for (var i = _blocks.Length - 1; i >= 0; i--)
        {
            plan.BlockOutputGradients[i] = Boundary(_blocks[i].OutputShape(blockInputs[i]), $"{_blocks[i].Name}.out.grad");
        }
        plan.StemOutputGradient = Boundary(stemShape, "stem.out.grad");
        plan.Bn1OutputGradient = MaxPool is null ? plan.StemOutputGradient : Boundary(plan.Bn1Output.Shape, "bn1.out.grad");
        plan.Conv1OutputGradient = Boundary(plan.Conv1Output.Shape, "conv1.out.grad");
        return plan;
    }

    public override Tensor Forward(ModulePlan modulePlan, Tensor x, bool training)
    {
        var plan = Expect<ResNetPlan>(modulePlan);
        plan.Input = x;
        Conv1.Forward(plan.Conv1, x, plan.Conv1Output);
        Bn1.Forward(plan.Bn1, plan.Conv1Output, plan.Bn1Output, training, relu: true);
        var h = plan.Bn1Output;
        if (MaxPool is not null)
        {
            MaxPool.Forward(Backend, plan.MaxPool!, h, plan.MaxPoolOutput!);
            h = plan.MaxPoolOutput!;
        }
        for (var i = 0; i < _blocks.Length; i++)
        {
            h = _blocks[i].Forward(plan.Blocks[i], h, training);
        }
        GlobalAvgPool.Forward(Backend, h, plan.Features);
        return plan.Features;
    }

    public override void Backward(ModulePlan modulePlan, Tensor dy, Tensor? dx)
    {
        var plan = Expect<ResNetPlan>(modulePlan);
        var x = plan.RequireInput(this);
        GlobalAvgPool.Backward(Backend, dy, plan.BlockOutputGradients[^1].Tensor);
        for (var i = _blocks.Length - 1; i >= 0; i--)
        {
            var blockInput = i == 0 ? plan.StemOutput : plan.Blocks[i - 1].Output;
            var inputGradient = i == 0 ? plan.StemOutputGradient.Tensor : plan.BlockOutputGradients[i - 1].Tensor;
            _blocks[i].Backward(plan.Blocks[i], blockInput, plan.BlockOutputGradients[i].Tensor, inputGradient);
        }
        if (MaxPool is not null)
        {
            MaxPool.Backward(Backend, plan.MaxPool!, plan.StemOutputGradient.Tensor, plan.Bn1OutputGradient.Tensor);
        }
        Bn1.Backward(plan.Bn1, plan.Conv1Output, plan.Bn1Output, plan.Bn1OutputGradient.Tensor, plan.Conv1OutputGradient.Tensor);
        // The image gradient is rarely wanted: without dx the stem skips its col2im.
        Conv1.Backward(plan.Conv1, x, plan.Conv1OutputGradient.Tensor, dx);
    }

    protected override void DisposeOwned()
    {
        Conv1.DisposePacked();
        foreach (var block in _blocks)
        {
            block.DisposePacked();
        }
    }

    private TensorShape StemOutputShape(TensorShape input)
    {
        var shape = Conv1.OutputShape(input);
        return MaxPool is null ? shape : MaxPool.OutputShape(shape);
    }
}

/// <summary>A ResNet's activations for one input shape (stem, blocks, pooled features) and its gradient views.</summary>
public sealed class ResNetPlan : ModulePlan
{
    public ConvPlan Conv1 { get; internal set; } = null!;

    public Tensor Conv1Output { get; internal set; } = null!;

    public BatchNormPlan Bn1 { get; internal set; } = null!;

    /// <summary>After BN and ReLU.</summary>
    public Tensor Bn1Output { get; internal set; } = null!;

    public MaxPoolPlan? MaxPool { get; internal set; }

    public Tensor? MaxPoolOutput { get; internal set; }

    /// <summary>The stem's output: the input of layer1.</summary>
    public Tensor StemOutput => MaxPoolOutput ?? Bn1Output;

    public BlockPlan[] Blocks { get; internal set; } = [];

    /// <summary>The pooled features [N, FeatureDim] (the encoder's output).</summary>
    public Tensor Features { get; internal set; } = null!;

    public override Tensor Output => Features;

    internal ScratchView[] BlockOutputGradients { get; set; } = [];

    internal ScratchView StemOutputGradient { get; set; } = null!;

    internal ScratchView Bn1OutputGradient { get; set; } = null!;

    internal ScratchView Conv1OutputGradient { get; set; } = null!;
}
