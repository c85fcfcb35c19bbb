namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static CheckpointFixtures;

/// <summary>Device arenas stream through CopyToHost/CopyFromHost in chunks; the bits must survive both ways.</summary>
public class CheckpointGpuTests : GpuTestBase
{
    [Test]
    public void DeviceArenaRoundTripsBitExactlyThroughDeviceAndHostArenas()
    {
        var folder = Path.Combine(Path.GetTempPath(), "nc-checkpoints-gpu-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var device = new ParameterArena(Gpu, AwkwardLayoutWithBig(), optimizerStateSlots: 2);
            var values = FillRandom(Gpu, device.Values, 1);
            var state = FillRandom(Gpu, device.OptimizerState, 2);
            var path = Path.Combine(folder, "gpu.safetensors");
            TrainingCheckpoint.Save(path, device, new TrainingState { Step = 3 });

            using var resumed = new ParameterArena(Gpu, AwkwardLayoutWithBig(), optimizerStateSlots: 2);
            TrainingCheckpoint.Load(path, resumed);
            using var host = new ParameterArena(Cpu, AwkwardLayoutWithBig(), optimizerStateSlots: 2);
            TrainingCheckpoint.Load(path, host);
            foreach (var view in device.Views)
            {
                var expected = Bits(values.AsSpan((int)view.Offset, (int)view.Length));
                Assert.That(Bits(Gpu, resumed.Value(view)), Is.EqualTo(expected), view.Name);
                Assert.That(Bits(Cpu, host.Value(view)), Is.EqualTo(expected), view.Name);
                for (var slot = 0; view.IsTrainable && slot < 2; slot++)
                {
                    var expectedState = Bits(state.AsSpan((int)((slot * device.TrainableLength) + view.Offset), (int)view.Length));
                    Assert.That(Bits(Gpu, resumed.State(slot, view)), Is.EqualTo(expectedState), $"{view.Name} state {slot}");
                }
            }
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
        }
    }

    /// <summary>The awkward layout plus a tensor larger than one 2^20-element chunk, so copies cross chunk boundaries both ways.</summary>
    private static ArenaLayout AwkwardLayoutWithBig()
    {
        var layout = AwkwardLayout();
        layout.Add("layer4.1.conv2.weight", new TensorShape(1025, 1024, 1, 1), ParameterKind.Weight);
        return layout;
    }
}
