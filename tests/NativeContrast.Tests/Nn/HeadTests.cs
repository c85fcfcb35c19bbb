namespace NativeContrast.Tests.Nn;

using NativeContrast.Nn;
using NativeContrast.Tensors;
using static NativeContrast.Tests.Support.Numerics;

public class HeadTests
{
    [Test]
    public void SimClrV1ProjectorNamesFollowNnSequential()
    {
        var layout = new ArenaLayout();
        _ = new MlpHead(layout, new MlpHeadOptions(512, 2048, 128));
        var (views, _, _) = layout.Place();
        Assert.That(views.Select(v => $"{v.Name} {v.Shape}"), Is.EqualTo(new[]
        {
            "projector.0.weight [2048, 512]", "projector.0.bias [2048]", "projector.2.weight [128, 2048]", "projector.2.bias [128]",
        }));
    }

    [Test]
    public void SimClrV2ProjectorHasBatchNormInEveryLayer()
    {
        var layout = new ArenaLayout();
        _ = new MlpHead(layout, new MlpHeadOptions(2048, 2048, 128) { Layers = 3, HiddenBatchNorm = true, OutputBatchNorm = true });
        var (views, _, _) = layout.Place();
        var names = views.Where(v => v.IsTrainable).Select(v => v.Name);
        Assert.That(names, Is.EqualTo(new[]
        {
            "projector.0.weight", "projector.1.weight", "projector.1.bias",
            "projector.3.weight", "projector.4.weight", "projector.4.bias",
            "projector.6.weight", "projector.7.weight", "projector.7.bias",
        }));
        Assert.That(views.Count(v => v.Name.EndsWith("running_var", StringComparison.Ordinal)), Is.EqualTo(3));
    }

    [TestCase(2, false, false, TestName = "MLP head, 2 layers")]
    [TestCase(3, true, true, TestName = "MLP head, 3 layers with BN")]
    [TestCase(1, false, true, TestName = "MLP head, 1 layer with BN")]
    [TestCase(2, true, true, true, TestName = "MLP head, 2 layers with BN and a final ReLU")]
    [TestCase(1, false, false, true, TestName = "MLP head, 1 layer with a final ReLU")]
    public void MlpHeadBackwardMatchesDirectionalDerivatives(int layers, bool hiddenNorm, bool outputNorm, bool outputRelu = false)
    {
        using var t = new Harness();
        var head = new MlpHead(t.Layout, new MlpHeadOptions(7, 12, 5) { Layers = layers, HiddenBatchNorm = hiddenNorm, OutputBatchNorm = outputNorm, OutputRelu = outputRelu });
        t.CreateArena();
        head.Bind(t.Arena);
        head.Initialize(11);
        GradientCheck.Run(t, head, new TensorShape(9, 7), (p, x) => ReferenceNetworks.Mlp(head, p, x, 9), ResNetTests.WholeNetworkTolerance);
    }

    [Test]
    public void EncoderWithProjectorBackwardMatchesDirectionalDerivatives()
    {
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, new ResNetOptions { Bottleneck = false, Layers = [1, 1, 1, 1], Stem = ResNetStem.Cifar, WidthMultiplier = 0.125 });
        var projector = new MlpHead(t.Layout, new MlpHeadOptions(encoder.FeatureDim, 16, 8) { HiddenBatchNorm = true });
        var model = new Sequential(encoder, projector);
        t.CreateArena();
        model.Bind(t.Arena);
        model.Initialize(12);
        var input = new TensorShape(4, 8, 8, 3);
        GradientCheck.Run(t, model, input, (p, x) => ReferenceNetworks.Mlp(projector, p, ReferenceNetworks.ResNet(encoder, p, x, input), 4), ResNetTests.WholeNetworkTolerance);
    }

    [Test]
    public void TheFirstLayersOfAHeadKeepItsNamesAndEndAfterAReLU()
    {
        var v2 = new MlpHeadOptions(64, 32, 16) { Layers = 3, HiddenBatchNorm = true, OutputBatchNorm = true };
        var first = v2.FirstLayers(1);
        Assert.That(first, Is.EqualTo(new MlpHeadOptions(64, 32, 32) { Layers = 1, HiddenBatchNorm = true, OutputBatchNorm = true, OutputRelu = true }));
        Assert.That(v2.FirstLayers(3), Is.SameAs(v2));
        Assert.Throws<ArgumentOutOfRangeException>(() => v2.FirstLayers(4));
        var layout = new ArenaLayout();
        _ = new MlpHead(layout, v2.FirstLayers(2));
        var (views, _, _) = layout.Place();
        Assert.That(views.Where(v => v.IsTrainable).Select(v => v.Name), Is.EqualTo(new[]
        {
            "projector.0.weight", "projector.1.weight", "projector.1.bias", "projector.3.weight", "projector.4.weight", "projector.4.bias",
        }));
    }

    [Test]
    public void PrototypesNormaliseTheirRows()
    {
        using var t = new Harness();
        var prototypes = LinearHead.Prototypes(t.Layout, 16, 30);
        t.CreateArena();
        prototypes.Bind(t.Arena);
        prototypes.Initialize(13);
        Assert.That(t.Arena.Views.Select(v => v.Name), Is.EqualTo(new[] { "prototypes.weight" }));
        prototypes.NormalizeWeightRows();
        var w = t.Read(prototypes.Linear.Weight);
        for (var r = 0; r < 30; r++)
        {
            var norm = Math.Sqrt(w.Skip(r * 16).Take(16).Sum(v => (double)v * v));
            Assert.That(norm, Is.EqualTo(1.0).Within(1e-6), $"row {r}");
        }
    }
}
