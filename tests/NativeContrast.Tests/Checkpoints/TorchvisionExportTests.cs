namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;
using static CheckpointFixtures;

public class TorchvisionExportTests : CheckpointTestBase
{
    /// <summary>The stem and head of a CIFAR-stem ResNet with 2 input channels, plus a projection head to leave out.</summary>
    private ParameterArena StemArena(int kernel = 3)
    {
        var layout = new ArenaLayout();
        layout.Add("conv1.weight", new TensorShape(64, 2, kernel, kernel), ParameterKind.Weight);
        layout.Add("bn1.weight", new TensorShape(64), ParameterKind.NormScale);
        layout.Add("bn1.bias", new TensorShape(64), ParameterKind.NormShift);
        layout.Add("bn1.running_mean", new TensorShape(64), ParameterKind.Buffer);
        layout.Add("bn1.running_var", new TensorShape(64), ParameterKind.Buffer);
        layout.Add("fc.weight", new TensorShape(10, 64), ParameterKind.Weight);
        layout.Add("fc.bias", new TensorShape(10), ParameterKind.Bias);
        layout.Add("projector.0.weight", new TensorShape(8, 64), ParameterKind.Weight);
        var arena = new ParameterArena(Cpu, layout, optimizerStateSlots: 0);
        FillRandom(Cpu, arena.Values, 5);
        return arena;
    }

    [Test]
    public void WritesTheEncoderAndTheInputOutputPairWithTheirMetadata()
    {
        using var arena = StemArena();
        using var input = Cpu.Allocate(new TensorShape(3, 2, 5, 7), "input");
        using var features = Cpu.Allocate(new TensorShape(3, 64), "features");
        using var logits = Cpu.Allocate(new TensorShape(3, 10), "logits");
        FillRandom(Cpu, input, 1);
        FillRandom(Cpu, features, 2);
        FillRandom(Cpu, logits, 3);
        var spec = new TorchvisionModelSpec("resnet18", CifarStem: true, InChannels: 2);
        TorchvisionExport.Write(Folder, arena, spec, input, features, logits, TensorScope.All.Excluding("projector."), batchNormSteps: 17, precision: "tf32");

        var encoder = new IndependentSafetensors(PathTo(TorchvisionExport.EncoderFileName));
        var io = new IndependentSafetensors(PathTo(TorchvisionExport.IoFileName));
        Assert.Multiple(() =>
        {
            Assert.That(encoder.Entries.Select(e => e.Name), Is.EquivalentTo(new[]
            {
                "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "fc.weight", "fc.bias",
            }));
            Assert.That(encoder.Int64("bn1.num_batches_tracked"), Is.EqualTo(new[] { 17L }));
            Assert.That(encoder.Metadata, Does.ContainKey("arch").WithValue("resnet18"));
            Assert.That(encoder.Metadata, Does.ContainKey("stem").WithValue("cifar"));
            Assert.That(io.Metadata, Is.EquivalentTo(new Dictionary<string, string>
            {
                ["arch"] = "resnet18", ["stem"] = "cifar", ["in_channels"] = "2", ["num_classes"] = "10", ["precision"] = "tf32", ["engine"] = "cpu",
            }));
            Assert.That(io["input"].Shape, Is.EqualTo(new long[] { 3, 2, 5, 7 }));
            Assert.That(Bits(io.Float32("input")), Is.EqualTo(Bits(Cpu, input)));
            Assert.That(Bits(io.Float32("features")), Is.EqualTo(Bits(Cpu, features)));
            Assert.That(Bits(io.Float32("logits")), Is.EqualTo(Bits(Cpu, logits)));
            Assert.That(OtherFiles(TorchvisionExport.EncoderFileName, TorchvisionExport.IoFileName), Is.Empty);
        });
    }

    [Test]
    public void FeaturesAloneGiveZeroClasses()
    {
        using var arena = StemArena();
        using var input = Cpu.Allocate(new TensorShape(1, 2, 4, 4), "input");
        using var features = Cpu.Allocate(new TensorShape(1, 64), "features");
        TorchvisionExport.Write(Folder, arena, new TorchvisionModelSpec("resnet50", true, 2), input, features, scope: TensorScope.All.Excluding("projector."));
        var io = new IndependentSafetensors(PathTo(TorchvisionExport.IoFileName));
        Assert.That((io.Metadata["num_classes"], io.Metadata["precision"], io.Entries.Count), Is.EqualTo(("0", "fp32", 2)));
    }

    [Test]
    public void MismatchesThatPyTorchWouldOnlyFindLaterAreRefusedUpFront()
    {
        using var arena = StemArena();
        using var input = Cpu.Allocate(new TensorShape(3, 2, 5, 7), "input");
        using var features = Cpu.Allocate(new TensorShape(3, 64), "features");
        using var wrongLogits = Cpu.Allocate(new TensorShape(3, 9), "logits");
        var cifar = new TorchvisionModelSpec("resnet18", CifarStem: true, InChannels: 2);
        Assert.Multiple(() =>
        {
            Assert.That(() => TorchvisionExport.Write(Folder, arena, cifar with { CifarStem = false }, input, features),
                Throws.ArgumentException.With.Message.Contains("'conv1.weight' is [64, 2, 3, 3], but a imagenet-stem resnet18 with 2 input channels has [64, 2, 7, 7]"));
            Assert.That(() => TorchvisionExport.Write(Folder, arena, cifar with { InChannels = 3 }, input, features),
                Throws.ArgumentException.With.Message.Contains("with 3 input channels"));
            Assert.That(() => TorchvisionExport.Write(Folder, arena, cifar with { Arch = "vit_b_16" }, input, features),
                Throws.ArgumentException.With.Message.Contains("arch 'vit_b_16'"));
            Assert.That(() => TorchvisionExport.Write(Folder, arena, cifar, input, features, wrongLogits),
                Throws.ArgumentException.With.Message.Contains("logits [3, 9] does not follow from features [3, 64] through 'fc.weight' [10, 64]"));
            Assert.That(() => TorchvisionExport.Write(Folder, arena, cifar, input, features, scope: TensorScope.Under("", "encoder.")),
                Throws.ArgumentException.With.Message.Contains("torchvision expects them bare"));
            Assert.That(Directory.GetFiles(Folder), Is.Empty);
        });
    }
}
