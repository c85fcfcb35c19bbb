namespace NativeContrast.Tests.Tensors;

using NativeContrast.Backends;
using NativeContrast.Tensors;

public class ParameterArenaTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    /// <summary>A small ResNet-like layout with a buffer declared between trainable parameters.</summary>
    private static ArenaLayout Layout()
    {
        var layout = new ArenaLayout();
        layout.Add("conv1.weight", new TensorShape(8, 3, 3, 3), ParameterKind.Weight);       // 216
        layout.Add("bn1.running_mean", new TensorShape(8), ParameterKind.Buffer);            // declared early, placed last
        layout.Add("bn1.weight", new TensorShape(8), ParameterKind.NormScale);
        layout.Add("bn1.bias", new TensorShape(8), ParameterKind.NormShift);
        layout.Add("fc.weight", new TensorShape(10, 33), ParameterKind.Weight);              // 330
        layout.Add("fc.bias", new TensorShape(10), ParameterKind.Bias);
        layout.Add("bn1.running_var", new TensorShape(8), ParameterKind.Buffer);
        return layout;
    }

    [Test]
    public void EveryViewStartsOn128ByteBoundary()
    {
        using var arena = new ParameterArena(_cpu, Layout());
        Assert.That(arena.Views.Select(v => v.Offset % ArenaLayout.AlignmentElements), Is.All.EqualTo(0));
        Assert.That(arena.TrainableLength % ArenaLayout.AlignmentElements, Is.EqualTo(0));
        Assert.That(arena.Length % ArenaLayout.AlignmentElements, Is.EqualTo(0));
    }

    [Test]
    public void TrainableViewsComeFirstInDeclarationOrderThenBuffers()
    {
        using var arena = new ParameterArena(_cpu, Layout());
        var byOffset = arena.Views.OrderBy(v => v.Offset).Select(v => v.Name).ToArray();
        Assert.That(byOffset, Is.EqualTo(new[] { "conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias", "bn1.running_mean", "bn1.running_var" }));
        Assert.That(arena.Views.Where(v => v.IsTrainable).All(v => v.Offset + v.Length <= arena.TrainableLength), Is.True);
        Assert.That(arena.Views.Where(v => !v.IsTrainable).All(v => v.Offset >= arena.TrainableLength), Is.True);
        // 216 -> 224, 8 -> 32, 8 -> 32, 330 -> 352, 10 -> 32
        Assert.That(arena.TrainableLength, Is.EqualTo(224 + 32 + 32 + 352 + 32));
        Assert.That(arena.Length, Is.EqualTo(arena.TrainableLength + 64));
    }

    [Test]
    public void ViewsKeepDeclarationIndicesAndNames()
    {
        using var arena = new ParameterArena(_cpu, Layout());
        Assert.That(arena.Views.Select(v => v.Index), Is.EqualTo(Enumerable.Range(0, 7)));
        Assert.That(arena[4].Name, Is.EqualTo("fc.weight"));
        Assert.That(arena["fc.weight"], Is.SameAs(arena[4]));
        Assert.That(arena["fc.weight"].Shape, Is.EqualTo(new TensorShape(10, 33)));
        Assert.That(arena.Contains("fc.bias"), Is.True);
        Assert.That(arena.Contains("fc.scale"), Is.False);
        Assert.That(arena["fc.bias"].IsExcludedFromDecay, Is.True);
        Assert.That(arena["fc.weight"].IsExcludedFromDecay, Is.False);
    }

    [Test]
    public void BuffersSizeGradientsAndStateToTheTrainablePrefix()
    {
        using var arena = new ParameterArena(_cpu, Layout(), optimizerStateSlots: 2);
        Assert.That(arena.Values.Length, Is.EqualTo(arena.Length));
        Assert.That(arena.Gradients.Length, Is.EqualTo(arena.TrainableLength));
        Assert.That(arena.OptimizerState.Shape, Is.EqualTo(new TensorShape(2, (int)arena.TrainableLength)));
        Assert.That(arena.TrainableValues.Length, Is.EqualTo(arena.TrainableLength));
    }

    [Test]
    public void NamedViewsShareTheArenaBuffers()
    {
        using var arena = new ParameterArena(_cpu, Layout());
        var fc = arena["fc.weight"];
        _cpu.Fill(arena.Value(fc), 1.5f);
        _cpu.Fill(arena.Gradient(fc), -2f);
        _cpu.Fill(arena.State(1, fc), 3f);
        _cpu.Fill(arena.Value(arena["bn1.running_var"]), 9f);

        Assert.That(arena.Values.Span.Slice((int)fc.Offset, (int)fc.Length).ToArray(), Is.All.EqualTo(1.5f));
        Assert.That(arena.Gradients.Span.Slice((int)fc.Offset, (int)fc.Length).ToArray(), Is.All.EqualTo(-2f));
        Assert.That(arena.StateSlot(1).Span.Slice((int)fc.Offset, (int)fc.Length).ToArray(), Is.All.EqualTo(3f));
        Assert.That(arena.StateSlot(0).Span.ToArray(), Is.All.EqualTo(0f), "slot 0 untouched");
        Assert.That(arena.Values.Span[(int)arena["bn1.running_var"].Offset], Is.EqualTo(9f));
        // Padding after a view stays untouched.
        Assert.That(arena.Values.Span[(int)(fc.Offset + fc.Length)], Is.EqualTo(0f));
        Assert.That(arena.Value(fc).Name, Is.EqualTo("fc.weight"));
        Assert.That(arena.Gradient(fc).Describe(), Is.EqualTo("fc.weight.grad [10, 33]"));
    }

    [Test]
    public void DeclaringANameTwiceOrNoNameFails()
    {
        var layout = new ArenaLayout();
        layout.Add("w", new TensorShape(3), ParameterKind.Weight);
        var twice = Assert.Throws<ArgumentException>(() => layout.Add("w", new TensorShape(4), ParameterKind.Bias));
        Assert.That(twice!.Message, Does.Contain("'w' is declared twice"));
        Assert.Throws<ArgumentException>(() => layout.Add(" ", new TensorShape(4), ParameterKind.Bias));
    }

    [Test]
    public void AskingForWhatIsNotThereFailsClearly()
    {
        using var arena = new ParameterArena(_cpu, Layout(), optimizerStateSlots: 1);
        var unknown = Assert.Throws<KeyNotFoundException>(() => _ = arena["fc.scale"]);
        Assert.That(unknown!.Message, Does.Contain("'fc.scale'"));
        var buffer = Assert.Throws<InvalidOperationException>(() => arena.Gradient(arena["bn1.running_mean"]));
        Assert.That(buffer!.Message, Does.Contain("bn1.running_mean").And.Contain("buffer"));
        Assert.Throws<InvalidOperationException>(() => arena.State(0, arena["bn1.running_var"]));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.State(1, arena["fc.bias"]));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new ParameterArena(_cpu, Layout(), optimizerStateSlots: -1));
    }

    [Test]
    public void AnEmptyLayoutGivesAnEmptyArena()
    {
        using var arena = new ParameterArena(_cpu, new ArenaLayout(), optimizerStateSlots: 0);
        Assert.That(arena.Length, Is.Zero);
        Assert.That(arena.TrainableLength, Is.Zero);
        Assert.That(arena.Views, Is.Empty);
    }
}
