namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;
using static CheckpointFixtures;

public class ModelCheckpointTests : CheckpointTestBase
{
    private ParameterArena NewArena(bool withHead = true, string prefix = "", int seed = 0)
    {
        var arena = new ParameterArena(Cpu, AwkwardLayout(withHead, prefix), optimizerStateSlots: 1);
        if (seed != 0)
        {
            FillRandom(Cpu, arena.Values, seed);
        }
        return arena;
    }

    private static void AssertSameViews(ParameterArena expected, ParameterArena actual, Func<string, string>? map = null)
    {
        foreach (var view in actual.Views)
        {
            var source = expected[map?.Invoke(view.Name) ?? view.Name];
            Assert.That(Bits(actual.Backend, actual.Value(view)), Is.EqualTo(Bits(expected.Backend, expected.Value(source))), view.Name);
        }
    }

    [Test]
    public void RoundTripIsBitExactForWeightsAndBuffers()
    {
        using var saved = NewArena(seed: 11);
        var path = PathTo("model.safetensors");
        ModelCheckpoint.Save(path, saved, new ModelSaveOptions { BatchNormSteps = 7, Metadata = new Dictionary<string, string> { ["arch"] = "resnet18" } });
        using var loaded = NewArena(seed: 12);
        var report = ModelCheckpoint.Load(path, loaded);
        AssertSameViews(saved, loaded);
        Assert.Multiple(() =>
        {
            Assert.That(report.IsComplete);
            Assert.That(report.Loaded, Is.EquivalentTo(saved.Views.Select(v => v.Name)));
            Assert.That(report.Ignored, Is.EquivalentTo(new[] { "bn1.num_batches_tracked", "layer1.0.bn1.num_batches_tracked" }));
            Assert.That(report.Metadata["arch"], Is.EqualTo("resnet18"));
            Assert.That(report.Metadata["format"], Is.EqualTo("pt"));
            Assert.That(report.Metadata[ModelCheckpoint.KindKey], Is.EqualTo("model"));
        });
    }

    [Test]
    public void FileHasPyTorchNamesShapesAndNumBatchesTrackedForEachBatchNorm()
    {
        using var arena = NewArena(seed: 3);
        var path = PathTo("model.safetensors");
        ModelCheckpoint.Save(path, arena, new ModelSaveOptions { BatchNormSteps = 1234 });
        var file = new IndependentSafetensors(path);
        var expectedNames = arena.Views.Select(v => v.Name).Concat(["bn1.num_batches_tracked", "layer1.0.bn1.num_batches_tracked"]);
        Assert.Multiple(() =>
        {
            Assert.That(file.Entries.Select(e => e.Name), Is.EquivalentTo(expectedNames));
            Assert.That(file["layer1.0.conv1.weight"].Shape, Is.EqualTo(new long[] { 33, 7, 1, 1 }));
            Assert.That(file["temperature"].Shape, Is.Empty);
            foreach (var bn in new[] { "bn1", "layer1.0.bn1" })
            {
                var entry = file[bn + ".num_batches_tracked"];
                Assert.That((entry.DType, entry.Shape.Length), Is.EqualTo(("I64", 0)), "PyTorch's int64 scalar buffer");
                Assert.That(file.Int64(entry.Name), Is.EqualTo(new[] { 1234L }));
            }
            Assert.That(Bits(file.Float32("bn1.running_var")), Is.EqualTo(Bits(Cpu, arena.Value(arena["bn1.running_var"]))));
        });
    }

    [Test]
    public void ExportWithoutTheHeadLoadsStrictlyIntoAnEncoderOnlyArena()
    {
        using var full = NewArena(seed: 5);
        var path = PathTo("encoder.safetensors");
        ModelCheckpoint.Save(path, full, new ModelSaveOptions { Scope = TensorScope.All.Excluding("projector.") });
        var names = new IndependentSafetensors(path).Entries.Select(e => e.Name).ToList();
        Assert.That(names, Has.None.StartsWith("projector."));

        using var encoder = NewArena(withHead: false);
        var report = ModelCheckpoint.Load(path, encoder);
        Assert.That(report.IsComplete);
        AssertSameViews(full, encoder);
    }

    [Test]
    public void TorchvisionNamedFileLoadsUnderAnArenaPrefix()
    {
        using var bare = NewArena(withHead: false, seed: 6);
        var path = PathTo("torchvision.safetensors");
        ModelCheckpoint.Save(path, bare);
        using var prefixed = NewArena(withHead: true, prefix: "encoder.", seed: 7);
        var headBefore = Bits(Cpu, prefixed.Value(prefixed["projector.0.weight"]));

        var report = ModelCheckpoint.Load(path, prefixed, new ModelLoadOptions { Scope = TensorScope.Under("encoder.") });
        Assert.Multiple(() =>
        {
            Assert.That(report.IsComplete, "the head is outside the scope, so nothing is missing");
            Assert.That(report.Loaded, Has.All.StartsWith("encoder."));
            Assert.That(Bits(Cpu, prefixed.Value(prefixed["projector.0.weight"])), Is.EqualTo(headBefore), "out-of-scope parameters are untouched");
        });
        foreach (var view in bare.Views)
        {
            Assert.That(Bits(Cpu, prefixed.Value(prefixed["encoder." + view.Name])), Is.EqualTo(Bits(Cpu, bare.Value(view))), view.Name);
        }
    }

    [Test]
    public void FilePrefixSelectsASubsetOfTheFile()
    {
        using var prefixed = NewArena(withHead: false, prefix: "backbone.", seed: 8);
        var path = PathTo("lightning.safetensors");
        ModelCheckpoint.Save(path, prefixed);
        using var bare = NewArena(withHead: false);
        var report = ModelCheckpoint.Load(path, bare, new ModelLoadOptions { Scope = TensorScope.Under("", filePrefix: "backbone.") });
        Assert.That(report.IsComplete);
        AssertSameViews(prefixed, bare, name => "backbone." + name);
    }

    [Test]
    public void StrictLoadListsMissingAndUnexpectedTensorsAndWritesNothing()
    {
        using var encoder = NewArena(withHead: false, seed: 9);
        var path = PathTo("encoder.safetensors");
        ModelCheckpoint.Save(path, encoder);
        using var full = NewArena(withHead: true, seed: 10);
        var before = Bits(Cpu, full.Values);

        var missing = Assert.Throws<CheckpointException>(() => ModelCheckpoint.Load(path, full))!;
        using var other = new ParameterArena(Cpu, Layout(
            ("conv1.weight", new TensorShape(7, 3, 3, 3)),
            ("bn1.weight", new TensorShape(7)),
            ("bn1.bias", new TensorShape(7)),
            ("bn1.running_mean", new TensorShape(7)),
            ("bn1.running_var", new TensorShape(7))));
        var unexpected = Assert.Throws<CheckpointException>(() => ModelCheckpoint.Load(path, other))!;
        Assert.Multiple(() =>
        {
            Assert.That(missing.Message, Does.Contain(path).And.Contain("2 missing from the file ('projector.0.weight', 'projector.0.bias')"));
            Assert.That(missing.TensorName, Is.EqualTo("projector.0.weight"));
            Assert.That(Bits(Cpu, full.Values), Is.EqualTo(before), "a failed strict load changes nothing");
            Assert.That(unexpected.Message, Does.Contain(path).And.Contain("10 unexpected in the file ('layer1.0.bn1.num_batches_tracked', 'layer1.0.conv1.weight', ").And.Contain("and 2 more"));
            Assert.That(unexpected.Message, Does.Not.Contain("'bn1.num_batches_tracked'"), "the counter of a BatchNorm the arena has is accepted and ignored");
        });
    }

    [Test]
    public void NonStrictLoadReportsMissingAndUnexpectedAndLoadsTheRest()
    {
        using var encoder = NewArena(withHead: false, seed: 13);
        var path = PathTo("encoder.safetensors");
        ModelCheckpoint.Save(path, encoder);
        using var partial = new ParameterArena(Cpu, Layout(("conv1.weight", new TensorShape(7, 3, 3, 3)), ("extra", new TensorShape(2))));
        var report = ModelCheckpoint.Load(path, partial, new ModelLoadOptions { Strict = false });
        Assert.Multiple(() =>
        {
            Assert.That(report.Loaded, Is.EqualTo(new[] { "conv1.weight" }));
            Assert.That(report.Missing, Is.EqualTo(new[] { "extra" }));
            Assert.That(report.Unexpected, Does.Contain("fc.weight").And.Contain("bn1.num_batches_tracked"), "a counter without its BatchNorm is unexpected");
            Assert.That(Bits(Cpu, partial.Value(0)), Is.EqualTo(Bits(Cpu, encoder.Value(encoder["conv1.weight"]))));
        });
    }

    [Test]
    public void ShapeMismatchFailsEvenWhenNotStrict()
    {
        using var encoder = NewArena(withHead: false, seed: 14);
        var path = PathTo("encoder.safetensors");
        ModelCheckpoint.Save(path, encoder);
        using var wrong = new ParameterArena(Cpu, Layout(("fc.weight", new TensorShape(33, 10))));
        var e = Assert.Throws<CheckpointException>(() => ModelCheckpoint.Load(path, wrong, new ModelLoadOptions { Strict = false }))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("tensor 'fc.weight'").And.Contain("expects [33, 10]").And.Contain("the file has [10, 33]"));
    }

    [Test]
    public void HalfPrecisionPyTorchExportLoadsConverted()
    {
        // What safetensors.torch.save_file(model.bfloat16().state_dict()) would produce for a tiny model.
        ushort[] weight = [0x3FC0, 0xC010, 0x0000, 0x3F80]; // 1.5, -2.25, 0, 1
        var header = "{\"lin.weight\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
            + "\"bn.running_mean\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
            + "\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[12,20]}}";
        var path = PathTo("bf16.safetensors");
        WriteRaw(path, header, [.. Bytes(weight), .. Bytes((Half)0.25f, (Half)(-3f)), .. Bytes(5L)]);
        using var arena = new ParameterArena(Cpu, Layout(("lin.weight", new TensorShape(2, 2)), ("bn.running_mean", new TensorShape(2))));
        var report = ModelCheckpoint.Load(path, arena);
        Assert.Multiple(() =>
        {
            Assert.That(report.Ignored, Is.EqualTo(new[] { "bn.num_batches_tracked" }));
            Assert.That(arena.Value(0).Span.ToArray(), Is.EqualTo(new[] { 1.5f, -2.25f, 0f, 1f }));
            Assert.That(arena.Value(1).Span.ToArray(), Is.EqualTo(new[] { 0.25f, -3f }));
        });
    }

    /// <summary>A layout of float parameters; names ending in running_mean are buffers.</summary>
    private static ArenaLayout Layout(params (string Name, TensorShape Shape)[] entries)
    {
        var layout = new ArenaLayout();
        foreach (var (name, shape) in entries)
        {
            layout.Add(name, shape, name.EndsWith(".running_mean", StringComparison.Ordinal) ? ParameterKind.Buffer : ParameterKind.Weight);
        }
        return layout;
    }
}
