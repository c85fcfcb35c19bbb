namespace NativeContrast.Tests.Nn;

using NativeContrast.Nn;
using NativeContrast.Tensors;
using static NativeContrast.Tests.Support.Numerics;

public class ResNetTests
{
    /// <summary>
    /// A float32 network against its float64 twin: each of the ~12 layers on the longest path rounds once forward
    /// and once backward, and batch norm over a handful of rows amplifies what reaches it, so the per-op fp32
    /// tolerance is scaled by ten.
    /// </summary>
    internal const double WholeNetworkTolerance = 10 * Fp32Tolerance;

    private static ResNetOptions Tiny(bool bottleneck) => new()
    {
        Bottleneck = bottleneck,
        Layers = [1, 1, 1, 1],
        Stem = ResNetStem.Cifar,
        WidthMultiplier = 0.125,
    };

    [Test]
    public void ResNet18MatchesTorchvisionStateDict()
    {
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, ResNetOptions.ResNet18);
        _ = LinearHead.Classifier(layout, encoder.FeatureDim, 1000);
        var (views, _, _) = layout.Place();
        var byName = views.ToDictionary(v => v.Name);

        // torchvision.models.resnet18().state_dict(): 122 entries, 11,689,512 parameters.
        Assert.That(views, Has.Length.EqualTo(122));
        Assert.That(views.Where(v => v.IsTrainable).Sum(v => v.Length), Is.EqualTo(11_689_512));
        Assert.That(byName["conv1.weight"].Shape, Is.EqualTo(new TensorShape(64, 3, 7, 7)));
        Assert.That(byName["layer1.0.conv1.weight"].Shape, Is.EqualTo(new TensorShape(64, 64, 3, 3)));
        Assert.That(byName["layer3.0.downsample.0.weight"].Shape, Is.EqualTo(new TensorShape(256, 128, 1, 1)));
        Assert.That(byName["layer4.1.bn2.running_var"].Shape, Is.EqualTo(new TensorShape(512)));
        Assert.That(byName["fc.weight"].Shape, Is.EqualTo(new TensorShape(1000, 512)));
        Assert.That(byName.ContainsKey("layer1.0.downsample.0.weight"), Is.False, "layer1's first block keeps an identity shortcut");

        Assert.That(byName["conv1.weight"].Kind, Is.EqualTo(ParameterKind.Weight));
        Assert.That(byName["bn1.weight"].Kind, Is.EqualTo(ParameterKind.NormScale));
        Assert.That(byName["bn1.bias"].Kind, Is.EqualTo(ParameterKind.NormShift));
        Assert.That(byName["bn1.running_mean"].Kind, Is.EqualTo(ParameterKind.Buffer));
        Assert.That(byName["layer2.0.downsample.1.num_batches_tracked"].Kind, Is.EqualTo(ParameterKind.Buffer));
        Assert.That(byName["fc.bias"].Kind, Is.EqualTo(ParameterKind.Bias));
    }

    [Test]
    public void ResNet50MatchesTorchvisionStateDict()
    {
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, ResNetOptions.ResNet50);
        _ = LinearHead.Classifier(layout, encoder.FeatureDim, 1000);
        var (views, _, _) = layout.Place();
        var byName = views.ToDictionary(v => v.Name);

        // torchvision.models.resnet50().state_dict(): 320 entries, 25,557,032 parameters.
        Assert.That(views, Has.Length.EqualTo(320));
        Assert.That(views.Where(v => v.IsTrainable).Sum(v => v.Length), Is.EqualTo(25_557_032));
        Assert.That(encoder.FeatureDim, Is.EqualTo(2048));
        Assert.That(byName["layer1.0.conv1.weight"].Shape, Is.EqualTo(new TensorShape(64, 64, 1, 1)));
        Assert.That(byName["layer1.0.conv3.weight"].Shape, Is.EqualTo(new TensorShape(256, 64, 1, 1)));
        Assert.That(byName["layer1.0.downsample.0.weight"].Shape, Is.EqualTo(new TensorShape(256, 64, 1, 1)));
        Assert.That(byName["layer4.2.bn3.weight"].Shape, Is.EqualTo(new TensorShape(2048)));
        // v1.5: the stride sits in the 3×3 convolution of the bottleneck.
        var block = encoder.Blocks.First(b => b.Name == "layer2.0");
        Assert.That(block.Convs.Select(c => c.Stride), Is.EqualTo(new[] { 1, 2, 1 }));
    }

    [TestCase("resnet101", 44_549_160, 104)]
    [TestCase("resnet152", 60_192_808, 155)]
    public void DeeperResNetsMatchTorchvisionParameterCounts(string arch, long parameters, int convolutions)
    {
        // torchvision.models.resnet101() / resnet152(): parameters with the 1000-class fc, convolutions with the downsamples.
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, ResNetOptions.FromName(arch));
        _ = LinearHead.Classifier(layout, encoder.FeatureDim, 1000);
        var (views, _, _) = layout.Place();
        Assert.That(views.Where(v => v.IsTrainable).Sum(v => v.Length), Is.EqualTo(parameters));
        Assert.That(views.Count(v => v.Shape.Rank == 4), Is.EqualTo(convolutions));
    }

    [Test]
    public void ResNet10HasOneBasicBlockPerStage()
    {
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, ResNetOptions.ResNet10);
        Assert.That(encoder.Blocks.Select(b => b.Name), Is.EqualTo(new[] { "layer1.0", "layer2.0", "layer3.0", "layer4.0" }));
        Assert.That(encoder.FeatureDim, Is.EqualTo(512));
        Assert.Throws<ArgumentException>(() => ResNetOptions.FromName("resnet19"));
    }

    [Test]
    public void WidthMultiplierAndPrefixScaleEveryStage()
    {
        var layout = new ArenaLayout();
        var encoder = new ResNet(layout, ResNetOptions.ResNet50 with { WidthMultiplier = 2 }, "backbone");
        var (views, _, _) = layout.Place();
        var byName = views.ToDictionary(v => v.Name);
        Assert.That(encoder.FeatureDim, Is.EqualTo(4096));
        Assert.That(byName["backbone.conv1.weight"].Shape, Is.EqualTo(new TensorShape(128, 3, 7, 7)));
        Assert.That(byName["backbone.layer4.0.conv2.weight"].Shape, Is.EqualTo(new TensorShape(1024, 1024, 3, 3)));
    }

    [TestCase(ResNetStem.ImageNet, 1, 13, 11, TestName = "ImageNet stem, one channel, 13x11")]
    [TestCase(ResNetStem.Cifar, 3, 16, 16, TestName = "CIFAR stem, three channels, 16x16")]
    public void AnyInputSizeAndChannelCountGivesPooledFeatures(ResNetStem stem, int channels, int h, int w)
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, Tiny(bottleneck: false) with { Stem = stem, InputChannels = channels });
        t.CreateArena();
        encoder.Bind(t.Arena);
        encoder.Initialize(1);
        var input = new TensorShape(3, h, w, channels);
        using var plan = encoder.Plan(input);
        var x = t.Tensor(RandomArray(checked((int)input.Length), 3), input);
        var features = t.Read(plan.Forward(x, training: true));
        Assert.That(plan.Output.Shape, Is.EqualTo(new TensorShape(3, encoder.FeatureDim)));
        Assert.That(features.All(float.IsFinite), Is.True);
        Assert.That(features.Any(v => v != 0f), Is.True);
    }

    [Test]
    public void InitializationFollowsTorchvision()
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar, WidthMultiplier = 0.5, ZeroInitResidual = true });
        var fc = LinearHead.Classifier(t.Layout, encoder.FeatureDim, 10);
        t.CreateArena();
        var model = new Sequential(encoder, fc);
        model.Bind(t.Arena);
        model.Initialize(seed: 7);
        float[] Value(string name) => t.Read(t.Arena.Value(t.Arena[name]));

        // kaiming_normal_(fan_out, relu): std = sqrt(2 / (out·k·k)).
        var w = Value("layer2.1.conv1.weight");
        var std = Math.Sqrt(w.Select(v => (double)v * v).Average());
        Assert.That(std, Is.EqualTo(Math.Sqrt(2.0 / (64 * 9))).Within(5).Percent);
        Assert.That(Value("bn1.weight"), Is.All.EqualTo(1f));
        Assert.That(Value("layer1.0.bn1.weight"), Is.All.EqualTo(1f));
        Assert.That(Value("layer1.0.bn2.weight"), Is.All.EqualTo(0f), "zero_init_residual zeroes each block's last gamma");
        Assert.That(Value("layer3.1.bn1.bias"), Is.All.EqualTo(0f));
        Assert.That(Value("layer3.1.bn1.running_var"), Is.All.EqualTo(1f));
        // nn.Linear: U(−1/√in, 1/√in).
        var bound = 1f / MathF.Sqrt(encoder.FeatureDim);
        var fcw = Value("fc.weight");
        Assert.That(fcw.Max(), Is.LessThanOrEqualTo(bound).And.GreaterThan(0.9f * bound));
        Assert.That(fcw.Min(), Is.GreaterThanOrEqualTo(-bound).And.LessThan(-0.9f * bound));

        var first = t.Read(t.Arena.Values);
        model.Initialize(seed: 7);
        Assert.That(t.Read(t.Arena.Values), Is.EqualTo(first), "the same seed gives the same model");
        model.Initialize(seed: 8);
        Assert.That(t.Read(t.Arena.Values), Is.Not.EqualTo(first));
    }

    [Test]
    public void ZeroInitResidualMakesIdentityBlocksPassTheirInputThrough()
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, Tiny(bottleneck: false) with { ZeroInitResidual = true });
        t.CreateArena();
        encoder.Bind(t.Arena);
        encoder.Initialize(3);
        var input = new TensorShape(4, 8, 8, 3);
        using var plan = encoder.Plan(input);
        plan.Forward(t.Tensor(RandomArray(checked((int)input.Length), 4), input), training: true);
        var resnet = (ResNetPlan)plan.Root;
        // layer1.0 has an identity shortcut: relu(0·bn(conv) + 0 + x) = x for the post-ReLU input x.
        Assert.That(t.Read(resnet.Blocks[0].Output), Is.EqualTo(t.Read(resnet.StemOutput)));
    }

    [TestCase(false, TestName = "Basic-block ResNet backward")]
    [TestCase(true, TestName = "Bottleneck ResNet backward")]
    public void ResNetBackwardMatchesDirectionalDerivatives(bool bottleneck)
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, Tiny(bottleneck));
        t.CreateArena();
        encoder.Bind(t.Arena);
        encoder.Initialize(5);
        var input = new TensorShape(4, 8, 8, 3);
        GradientCheck.Run(t, encoder, input, (p, x) => ReferenceNetworks.ResNet(encoder, p, x, input), WholeNetworkTolerance);
    }

    [Test]
    public void ImageNetStemBackwardMatchesDirectionalDerivatives()
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, Tiny(bottleneck: false) with { Stem = ResNetStem.ImageNet, InputChannels = 1 });
        t.CreateArena();
        encoder.Bind(t.Arena);
        encoder.Initialize(6);
        var input = new TensorShape(3, 17, 15, 1);
        GradientCheck.Run(t, encoder, input, (p, x) => ReferenceNetworks.ResNet(encoder, p, x, input), WholeNetworkTolerance);
    }

    [Test]
    public void ForwardIsDeterministic()
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, Tiny(bottleneck: true));
        t.CreateArena();
        encoder.Bind(t.Arena);
        encoder.Initialize(9);
        var input = new TensorShape(5, 8, 8, 3);
        using var plan = encoder.Plan(input);
        var x = t.Tensor(RandomArray(checked((int)input.Length), 10), input);
        var first = t.Read(plan.Forward(x, training: true));
        Assert.That(t.Read(plan.Forward(x, training: true)), Is.EqualTo(first));
    }
}
