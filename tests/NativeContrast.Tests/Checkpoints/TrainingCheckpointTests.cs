namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;
using static CheckpointFixtures;

public class TrainingCheckpointTests : CheckpointTestBase
{
    private static readonly TrainingState State = new()
    {
        Step = 1_234_567,
        Epoch = 41,
        BatchInEpoch = 389,
        Seed = ulong.MaxValue - 1,
        PhiloxOffset = 0x8000_0000_0000_0001,
        Sections = new Dictionary<string, string>
        {
            ["optimizer"] = "{\"name\":\"lars\",\"lr\":4.8,\"momentum\":0.9,\"weight_decay\":1e-6,\"eta\":0.001}",
            ["schedule"] = "{\"warmup_steps\": 10, \"kind\": \"cosine\", \"final\": [0.0, \"é\\n\"]}",
            ["queue"] = "17",
        },
    };

    private ParameterArena NewArena(int seed, int slots = 2)
    {
        var arena = new ParameterArena(Cpu, AwkwardLayout(), slots);
        if (seed != 0)
        {
            FillRandom(Cpu, arena.Values, seed);
            FillRandom(Cpu, arena.OptimizerState, seed + 1);
            FillRandom(Cpu, arena.Gradients, seed + 2);
        }
        return arena;
    }

    [Test]
    public void ResumeRestoresValuesBuffersOptimizerStateAndScalarStateBitExactly()
    {
        using var saved = NewArena(seed: 21);
        var path = PathTo("step.safetensors");
        TrainingCheckpoint.Save(path, saved, State, new Dictionary<string, string> { ["method"] = "simclr" });

        using var resumed = NewArena(seed: 31);
        var state = TrainingCheckpoint.Load(path, resumed);
        Assert.Multiple(() =>
        {
            Assert.That(state.Step, Is.EqualTo(State.Step));
            Assert.That(state.Epoch, Is.EqualTo(State.Epoch));
            Assert.That(state.BatchInEpoch, Is.EqualTo(State.BatchInEpoch));
            Assert.That(state.Seed, Is.EqualTo(State.Seed));
            Assert.That(state.PhiloxOffset, Is.EqualTo(State.PhiloxOffset));
            Assert.That(state.Sections, Is.EquivalentTo(State.Sections), "sections come back verbatim");
            Assert.That(TrainingCheckpoint.ReadState(path).Step, Is.EqualTo(State.Step));
        });
        foreach (var view in saved.Views)
        {
            Assert.That(Bits(Cpu, resumed.Value(view)), Is.EqualTo(Bits(Cpu, saved.Value(view))), view.Name);
            for (var slot = 0; view.IsTrainable && slot < saved.StateSlots; slot++)
            {
                Assert.That(Bits(Cpu, resumed.State(slot, view)), Is.EqualTo(Bits(Cpu, saved.State(slot, view))), $"{view.Name} state {slot}");
            }
        }
        Assert.Multiple(() =>
        {
            Assert.That(resumed.Gradients.Span.ToArray(), Is.All.EqualTo(0f), "gradients start from zero, as in a fresh arena");
            Assert.That(PaddingOf(resumed, resumed.Values.Span.ToArray()), Is.All.EqualTo(0f), "alignment padding is zero, as in a fresh arena");
        });
    }

    [Test]
    public void FileIsAlsoAWeightsFileWithNamedPerParameterOptimizerState()
    {
        using var arena = NewArena(seed: 41);
        var path = PathTo("step.safetensors");
        TrainingCheckpoint.Save(path, arena, State);
        var file = new IndependentSafetensors(path);
        Assert.Multiple(() =>
        {
            Assert.That(file.Metadata[ModelCheckpoint.KindKey], Is.EqualTo("training"));
            Assert.That(file.Metadata[TrainingCheckpoint.StateKey], Does.StartWith("{\"step\":1234567,\"epoch\":41,\"batch_in_epoch\":389,\"seed\":18446744073709551614,\"philox_offset\":9223372036854775809,\"optimizer_slots\":2,\"sections\":{"));
            Assert.That(file["optimizer.state1.layer1.0.conv1.weight"].Shape, Is.EqualTo(new long[] { 33, 7, 1, 1 }));
            Assert.That(file.Entries.Select(e => e.Name), Has.None.Contains("running_mean").And.StartsWith("optimizer."), "buffers have no optimiser state");
            Assert.That(file.Int64("bn1.num_batches_tracked"), Is.EqualTo(new[] { State.Step }));
            Assert.That(Bits(file.Float32("optimizer.state0.fc.bias")), Is.EqualTo(Bits(Cpu, arena.State(0, arena["fc.bias"]))));
        });

        using var weightsOnly = new ParameterArena(Cpu, AwkwardLayout(), optimizerStateSlots: 0);
        var report = ModelCheckpoint.Load(path, weightsOnly);
        Assert.That(report.IsComplete, "ModelCheckpoint.Load reads the weights and ignores the optimiser state");
        Assert.That(report.Ignored, Has.Some.StartsWith("optimizer.state1."));
    }

    [Test]
    public void SlotCountMismatchIsRefused()
    {
        using var two = NewArena(seed: 51);
        var path = PathTo("adamw.safetensors");
        TrainingCheckpoint.Save(path, two, State);
        using var one = NewArena(seed: 0, slots: 1);
        var e = Assert.Throws<CheckpointException>(() => TrainingCheckpoint.Load(path, one))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("the file has 2 state slots per parameter, the arena has 1"));
    }

    [Test]
    public void MissingOptimizerStateIsNamedAndNothingIsWritten()
    {
        using var smaller = new ParameterArena(Cpu, AwkwardLayout(withHead: false), 2);
        FillRandom(Cpu, smaller.Values, 61);
        var path = PathTo("small.safetensors");
        TrainingCheckpoint.Save(path, smaller, State);
        using var larger = NewArena(seed: 62);
        var before = Bits(Cpu, larger.Values);
        var e = Assert.Throws<CheckpointException>(() => TrainingCheckpoint.Load(path, larger))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.Message, Does.Contain(path).And.Contain("resume failed").And.Contain("'projector.0.weight'").And.Contain("'optimizer.state0.projector.0.weight'"));
            Assert.That(Bits(Cpu, larger.Values), Is.EqualTo(before));
        });
    }

    [Test]
    public void WeightsFileIsNotATrainingCheckpoint()
    {
        using var arena = NewArena(seed: 71);
        var path = PathTo("model.safetensors");
        ModelCheckpoint.Save(path, arena);
        var e = Assert.Throws<CheckpointException>(() => TrainingCheckpoint.Load(path, arena))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("not a training checkpoint").And.Contain("'model'"));
    }

    [Test]
    public void CorruptStateMetadataIsReported()
    {
        var path = PathTo("corrupt.safetensors");
        var writer = new SafetensorsWriter();
        writer.AddMetadata(ModelCheckpoint.KindKey, TrainingCheckpoint.Kind);
        writer.AddMetadata(ModelCheckpoint.VersionKey, ModelCheckpoint.FormatVersion);
        writer.AddMetadata(TrainingCheckpoint.StateKey, "{\"step\": \"ten\"}");
        writer.Save(path);
        Assert.That(() => TrainingCheckpoint.ReadState(path), Throws.TypeOf<CheckpointException>().With.Message.Contains(path).And.Message.Contains("not the expected JSON"));
    }

    [Test]
    public void InvalidSectionIsRefusedBeforeAnythingIsWritten()
    {
        using var arena = NewArena(seed: 81);
        var path = PathTo("never.safetensors");
        var bad = State with { Sections = new Dictionary<string, string> { ["optimizer"] = "{\"lr\": }" } };
        Assert.That(() => TrainingCheckpoint.Save(path, arena, bad), Throws.ArgumentException.With.Message.Contains("section 'optimizer'"));
        Assert.That(Directory.GetFiles(Folder), Is.Empty);
    }

    [Test]
    public void FailedSaveKeepsThePreviousCheckpointAndLeavesNoTemporaryFile()
    {
        var path = PathTo("latest.safetensors");
        using (var first = NewArena(seed: 91))
        {
            TrainingCheckpoint.Save(path, first, State);
        }
        var previous = File.ReadAllBytes(path);
        var failing = NewArena(seed: 92);
        // The optimiser state is written after the weights: disposing it makes the save throw midway through the data.
        failing.OptimizerState.Dispose();
        Assert.That(() => TrainingCheckpoint.Save(path, failing, State with { Step = 99 }), Throws.TypeOf<ObjectDisposedException>());
        failing.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(previous));
            Assert.That(OtherFiles("latest.safetensors"), Is.Empty);
        });
    }

    private static float[] PaddingOf(ParameterArena arena, float[] values)
    {
        var used = new bool[values.Length];
        foreach (var view in arena.Views)
        {
            for (var i = 0L; i < view.Length; i++)
            {
                used[view.Offset + i] = true;
            }
        }
        return [.. values.Where((_, i) => !used[i])];
    }
}
