namespace NativeContrast.Tests.Cli;

using System.Buffers.Binary;
using System.Diagnostics;
using NativeContrast.Checkpoints;
using NativeContrast.Cli;
using NativeContrast.Tests.Checkpoints;

/// <summary>
/// `nativecontrast export-torchvision` on the CPU, then bench/reference/torchvision_roundtrip.py on its output with
/// the system Python (Debian's torch + torchvision): the engine's trained ResNet-18 must load into torchvision with
/// strict=True and give the same eval-mode features and logits within fp32 tolerance.
/// </summary>
public class ExportTorchvisionCommandTests
{
    private const string Python = "/usr/bin/python3";

    private string _folder = "";

    [SetUp]
    public void CreateFolder()
    {
        _folder = Path.Combine(Path.GetTempPath(), "nc-export-" + Guid.NewGuid().ToString("N"));
    }

    [TearDown]
    public void DeleteFolder()
    {
        if (Directory.Exists(_folder))
        {
            Directory.Delete(_folder, recursive: true);
        }
    }

    [Test]
    public void TrainedResNet18RoundTripsThroughTorchvision()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(["export-torchvision", "--arch", "resnet18", "--stem", "cifar", "--size", "16", "--batch", "2", "--steps", "2", "--device", "cpu", "--out", _folder], output, error);
        Assert.That(code, Is.EqualTo(Program.Success), error.ToString());
        Assert.That(output.ToString(), Does.Contain("resnet18, cifar stem, fc 10").And.Contain("2 SGD step(s)"));

        var encoderPath = Path.Combine(_folder, TorchvisionExport.EncoderFileName);
        var encoder = new IndependentSafetensors(encoderPath);
        var counters = encoder.Entries.Where(e => e.Name.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
        Assert.That(counters, Has.Count.EqualTo(20), "one counter per BatchNorm of ResNet-18");
        Assert.That(counters.Select(e => encoder.Int64(e.Name)[0]), Is.All.EqualTo(2L), "int64 counters equal to the training steps");
        Assert.That(encoder.Float32("layer4.1.bn2.running_var"), Has.Some.Not.EqualTo(1f), "training moved the running statistics");

        var why = WhyNoTorchvision();
        if (why is not null)
        {
            // .ci/run installs Debian's torch and sets this, so there a missing torch fails rather than skips.
            if (Environment.GetEnvironmentVariable("NATIVECONTRAST_REQUIRE_TORCHVISION") == "1")
            {
                Assert.Fail($"torchvision round trip required (NATIVECONTRAST_REQUIRE_TORCHVISION=1) but {why}");
            }
            Assert.Ignore($"torchvision round trip skipped: {why}");
        }
        var (exit, log) = RunScript(_folder);
        Assert.That(exit, Is.EqualTo(0), log);
        Assert.That(log, Does.Contain("PASS resnet18"));

        // The check can fail: 0.1% on conv1 is ten times the fp32 tolerance.
        var bytes = encoder.Bytes.ToArray();
        var conv1 = encoder["conv1.weight"];
        for (var at = encoder.DataStart + conv1.Begin; at < encoder.DataStart + conv1.End; at += 4)
        {
            var span = bytes.AsSpan((int)at, 4);
            BinaryPrimitives.WriteSingleLittleEndian(span, BinaryPrimitives.ReadSingleLittleEndian(span) * 1.001f);
        }
        File.WriteAllBytes(encoderPath, bytes);
        var (perturbedExit, perturbedLog) = RunScript(_folder);
        Assert.That(perturbedExit, Is.EqualTo(1), perturbedLog);
        Assert.That(perturbedLog, Does.Contain("FAIL resnet18"));
    }

    private static (int ExitCode, string Log) RunScript(string folder)
    {
        var script = Path.Combine(RepositoryRoot(), "bench", "reference", "torchvision_roundtrip.py");
        return Execute(Python, script, "--dir", folder, "--out", Path.Combine(folder, "roundtrip.json"));
    }

    private static string? WhyNoTorchvision()
    {
        if (!File.Exists(Python))
        {
            return $"{Python} is not installed";
        }
        var (exit, log) = Execute(Python, "-c", "import torch, torchvision");
        return exit == 0 ? null : $"{Python} cannot import torch and torchvision: {log.Trim()}";
    }

    private static (int ExitCode, string Log) Execute(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            return (-1, $"{file} {string.Join(' ', arguments)} did not finish in 2 minutes\n{stdout}");
        }
        return (process.ExitCode, stdout + stderr.Result);
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "bench", "reference", "torchvision_roundtrip.py")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no bench/reference/torchvision_roundtrip.py above {TestContext.CurrentContext.TestDirectory}");
    }
}
