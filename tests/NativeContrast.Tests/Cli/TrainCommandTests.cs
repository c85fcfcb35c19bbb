namespace NativeContrast.Tests.Cli;

using System.Diagnostics;
using System.Globalization;
using NativeContrast.Checkpoints;
using NativeContrast.Cli;
using NativeContrast.Cli.Commands;
using NativeContrast.Eval;
using NativeContrast.Tests.Checkpoints;
using NativeContrast.Tests.Training;
using NativeContrast.Training;

/// <summary>The CLI end to end on tiny settings: train one epoch → checkpoint → eval knn / linear → embed → .npy files.</summary>
public class TrainCommandTests
{
    private static readonly string[] Tiny = TinyArgs();

    private static string[] TinyArgs(int trainImages = 64, int epochs = 1) =>
        ["--backbone", "resnet10", "--width", "0.125", "--image-size", "16", "--train-images", $"{trainImages}", "--batch", "16", "--epochs", $"{epochs}", "--workers", "1", "--device", "cpu"];

    private string _folder = "";

    [SetUp]
    public void CreateFolder() => _folder = TempFolder.Create("cli");

    [TearDown]
    public void DeleteFolder() => TempFolder.Delete(_folder);

    private static (int Code, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void TrainThenEvalThenEmbed()
    {
        var run = Path.Combine(_folder, "run");
        var train = Run(["train", .. Tiny, "--out", run]);
        Assert.That(train.Code, Is.EqualTo(Program.Success), train.Error + train.Output);
        Assert.That(train.Output, Does.Contain("kNN top-1 (encoder)").And.Contain("kNN top-1 (raw pixels)").And.Contain("epoch 1/1"));
        foreach (var file in new[] { Trainer.CheckpointFileName, Trainer.EncoderFileName, MetricsLog.FileName, "training.png" })
        {
            Assert.That(File.Exists(Path.Combine(run, file)), Is.True, file);
        }
        Assert.That(File.ReadAllBytes(Path.Combine(run, "training.png"))[1..4], Is.EqualTo("PNG"u8.ToArray()));

        var knn = Run("eval", "knn", "--checkpoint", run, "--device", "cpu", "--k", "5");
        Assert.That(knn.Code, Is.EqualTo(Program.Success), knn.Error);
        Assert.That(knn.Output, Does.Contain("resnet10 x0.125 cifar stem").And.Contain("16 images").Or.Contain("16 +"));
        Assert.That(knn.Output, Does.Contain("encoder").And.Contain("raw pixels"));

        var linear = Run("eval", "linear", "--checkpoint", Path.Combine(run, Trainer.CheckpointFileName), "--device", "cpu", "--epochs", "2");
        Assert.That(linear.Code, Is.EqualTo(Program.Success), linear.Error);
        Assert.That(linear.Output, Does.Contain("2 epochs, final train loss"));

        var embedded = Path.Combine(_folder, "embedded");
        var embed = Run("embed", "--checkpoint", run, "--split", "test", "--device", "cpu", "--out", embedded);
        Assert.That(embed.Code, Is.EqualTo(Program.Success), embed.Error);
        var features = NpyFile.Read(Path.Combine(embedded, EmbedCommand.FeaturesFileName));
        var labels = NpyFile.Read(Path.Combine(embedded, EmbedCommand.LabelsFileName));
        Assert.That(features.Descr, Is.EqualTo("<f4"));
        Assert.That(features.Shape, Is.EqualTo(new[] { 16, 64 / 8 * 8 }), "16 test images x ResNet-10's 512/8 = 64 features");
        Assert.That(features.Data, Has.Length.EqualTo(16 * 64 * 4));
        Assert.That(labels.Descr, Is.EqualTo("<i8"));
        Assert.That(labels.Shape, Is.EqualTo(new[] { 16 }));
        Assert.That(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(labels.Data).ToArray(), Is.EqualTo(Enumerable.Range(0, 16).Select(i => (long)(i % 10)).ToArray()));
        ParseWithNumpyWhenAvailable(embedded);
    }

    [Test]
    public void ResumeContinuesARunAndRefusesAMissingCheckpoint()
    {
        var run = Path.Combine(_folder, "run");
        Assert.That(Run(["train", .. Tiny, "--out", run]).Code, Is.EqualTo(Program.Success));
        var more = Run(["train", .. TinyArgs(epochs: 2), "--out", run, "--resume", run]);
        // Two epochs is another recipe than one: the run description says so.
        Assert.That(more.Code, Is.EqualTo(Program.Failure));
        Assert.That(more.Error, Does.Contain("epochs 2 here, 1 in the checkpoint"));
        // So are crops of another scale.
        var cropped = Run(["train", .. Tiny, "--crop-scale", "0.3", "--out", run, "--resume", run]);
        Assert.That(cropped.Code, Is.EqualTo(Program.Failure));
        Assert.That(cropped.Error, Does.Contain("crop_scale_min 0.3 here, absent in the checkpoint"));
        // And so is a method's option, which the run description does not hold.
        var hotter = Run(["train", .. Tiny, "--temperature", "0.5", "--out", run, "--resume", run]);
        Assert.That(hotter.Code, Is.EqualTo(Program.Failure));
        Assert.That(hotter.Error, Does.Contain("another simclr recipe: temperature 0.5 here, 0.2 in the checkpoint"));
        // Or the optimiser's: its weight decay was taken from the checkpoint, whatever --wd said.
        var decayed = Run(["train", .. Tiny, "--wd", "0.001", "--out", run, "--resume", run]);
        Assert.That(decayed.Code, Is.EqualTo(Program.Failure));
        Assert.That(decayed.Error, Does.Contain("another optimiser recipe: weight_decay 0.001 here, 1E-05 in the checkpoint"));

        var missing = Run(["train", .. Tiny, "--out", run, "--resume", Path.Combine(_folder, "nothing.safetensors")]);
        Assert.That(missing.Code, Is.EqualTo(Program.Failure));
        Assert.That(missing.Error, Does.Contain("nothing.safetensors").And.Contain("no such checkpoint"));
    }

    [TestCase("simclr")]
    [TestCase("mocov2")]
    [TestCase("swav")]
    public void ProjHiddenWidensTheHeadAndBindsTheResume(string method)
    {
        var run = Path.Combine(_folder, method);
        string[] args = ["train", .. Tiny, "--method", method, "--out", run, .. method == "swav" ? new[] { "--prototypes", "20", "--small-crops", "0" } : []];
        var train = Run([.. args, "--proj-hidden", "24"]);
        Assert.That(train.Code, Is.EqualTo(Program.Success), train.Error + train.Output);
        var file = new IndependentSafetensors(Path.Combine(run, Trainer.CheckpointFileName));
        Assert.That(file["projector.0.weight"].Shape, Is.EqualTo(new long[] { 24, 64 }), "ResNet-10 x0.125's 64 features into 24 hidden units");
        // The head's linear layers by their index in the head (projector.<index>.weight), whatever the file's order.
        var linears = file.Entries
            .Where(e => e.Name.StartsWith("projector.", StringComparison.Ordinal) && e.Name.EndsWith(".weight", StringComparison.Ordinal) && e.Shape.Length == 2)
            .OrderBy(e => int.Parse(e.Name.Split('.')[1], CultureInfo.InvariantCulture))
            .ToArray();
        Assert.That(linears[0].Name, Is.EqualTo("projector.0.weight"));
        Assert.That(linears[1].Shape[1], Is.EqualTo(24), $"the next linear layer ({linears[1].Name}) reads the 24 hidden units");

        var narrower = Run([.. args, "--resume", run]);
        Assert.That(narrower.Code, Is.EqualTo(Program.Failure));
        Assert.That(narrower.Error, Does.Contain($"another {method} recipe: hidden_dim null here, 24 in the checkpoint"), "resuming without --proj-hidden is another recipe");

        // Naming the default width (the backbone's 64 features) on a resume is the same recipe.
        var plain = Path.Combine(_folder, method + "-default");
        string[] plainArgs = ["train", .. Tiny, "--method", method, "--out", plain, .. method == "swav" ? new[] { "--prototypes", "20", "--small-crops", "0" } : []];
        var first = Run(plainArgs);
        Assert.That(first.Code, Is.EqualTo(Program.Success), first.Error + first.Output);
        var named = Run([.. plainArgs, "--proj-hidden", "64", "--resume", plain]);
        Assert.That(named.Code, Is.EqualTo(Program.Success), named.Error + named.Output);
    }

    [Test]
    public void BadArgumentsAreExplained()
    {
        var batch = Run(["train", .. Tiny, "--batch", "1", "--out", _folder]);
        Assert.That(batch.Code, Is.EqualTo(Program.BadArguments));
        var shuffle = Run(["train", .. Tiny, "--shuffle-bn", "--out", _folder]);
        Assert.That(shuffle.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(shuffle.Error, Does.Contain("--shuffle-bn is MoCo's"));
        var head = Run(["train", .. Tiny, "--method", "supervised", "--proj-hidden", "32", "--out", _folder]);
        Assert.That(head.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(head.Error, Does.Contain("--proj-hidden sets the projection head").And.Contain("supervised's head"));
        var zero = Run(["train", .. Tiny, "--proj-hidden", "0", "--out", _folder]);
        Assert.That(zero.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(zero.Error, Does.Contain("--proj-hidden must be at least 1"));
        var epsilon = Run(["train", .. Tiny, "--sinkhorn-epsilon", "0.03", "--out", _folder]);
        Assert.That(epsilon.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(epsilon.Error, Does.Contain("--sinkhorn-epsilon is SwAV's: simclr"));
        var zeroEpsilon = Run(["train", .. Tiny, "--method", "swav", "--sinkhorn-epsilon", "0", "--out", _folder]);
        Assert.That(zeroEpsilon.Code, Is.EqualTo(Program.BadArguments));
        Assert.That(zeroEpsilon.Error, Does.Contain("--sinkhorn-epsilon must be a positive finite number (got 0)"));
        Assert.That(batch.Error, Does.Contain("--batch"));
        var checkpoint = Run("eval", "knn", "--checkpoint", Path.Combine(_folder, "absent"));
        Assert.That(checkpoint.Code, Is.EqualTo(Program.Failure));
        Assert.That(checkpoint.Error, Does.Contain("absent").And.Contain("no such checkpoint"));
    }

    [Test]
    public void AnInterruptWritesACheckpointOfTheExactPositionAndExitsCleanly()
    {
        // Ctrl+C and SIGTERM cancel the same token as a caller's cancellation, which this test triggers once steps run.
        var run = Path.Combine(_folder, "run");
        using var cancel = new CancellationTokenSource();
        using var output = new WatchingWriter("step ", cancel.Cancel);
        using var error = new StringWriter();
        var code = Program.Run(["train", .. TinyArgs(512, 4), "--out", run], output, error, cancel.Token);
        Assert.That(code, Is.EqualTo(TrainCommand.Interrupted), error.ToString() + output);
        Assert.That(output.ToString(), Does.Contain("interrupted at step").And.Contain("--resume"));

        var state = TrainingCheckpoint.ReadState(Path.Combine(run, Trainer.CheckpointFileName));
        Assert.That(state.Step, Is.GreaterThan(0).And.LessThan(4 * 32), "stopped mid-run, at the step it had reached");
        Assert.That((state.Epoch * 32) + state.BatchInEpoch, Is.EqualTo(state.Step), "the position in the data matches the step count");
        var resumed = Run(["train", .. TinyArgs(512, 4), "--out", run, "--resume", run]);
        Assert.That(resumed.Code, Is.EqualTo(Program.Success), resumed.Error);
        Assert.That(resumed.Output, Does.Contain($"resuming at step {state.Step} of 128"));
    }

    /// <summary>A StringWriter that runs an action once a line starting with a prefix has been written (in any pieces).</summary>
    private sealed class WatchingWriter(string prefix, Action action) : StringWriter
    {
        private bool _seen;

        public override void Write(char value)
        {
            base.Write(value);
            Watch();
        }

        public override void Write(string? value)
        {
            base.Write(value);
            Watch();
        }

        public override void Write(char[] buffer, int index, int count)
        {
            base.Write(buffer, index, count);
            Watch();
        }

        private void Watch()
        {
            var text = GetStringBuilder().ToString();
            if (!_seen && (text.StartsWith(prefix, StringComparison.Ordinal) || text.Contains("\n" + prefix, StringComparison.Ordinal)))
            {
                _seen = true;
                action();
            }
        }
    }

    /// <summary>NumPy itself reads the files with the declared dtype and shape (where /usr/bin/python3 has NumPy).</summary>
    private static void ParseWithNumpyWhenAvailable(string folder)
    {
        const string python = "/usr/bin/python3";
        if (!File.Exists(python))
        {
            return;
        }
        var script = "import sys, numpy as np; f = np.load(sys.argv[1] + '/features.npy'); l = np.load(sys.argv[1] + '/labels.npy'); print(f.dtype, f.shape, l.dtype, l.shape)";
        using var process = Process.Start(new ProcessStartInfo(python) { ArgumentList = { "-c", script, folder }, RedirectStandardOutput = true, RedirectStandardError = true })!;
        var stdout = process.StandardOutput.ReadToEnd();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (stderr.Contains("No module named 'numpy'", StringComparison.Ordinal))
        {
            return;
        }
        Assert.That(process.ExitCode, Is.Zero, stderr);
        Assert.That(stdout.Trim(), Is.EqualTo("float32 (16, 64) int64 (16,)"));
    }
}
