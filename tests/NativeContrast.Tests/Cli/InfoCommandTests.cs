namespace NativeContrast.Tests.Cli;

using NativeContrast.Cli;
using NativeContrast.Cuda;

/// <summary>`nativecontrast info` end to end, in-process: the text it prints and its exit code.</summary>
public class InfoCommandTests
{
    private static (int ExitCode, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void InfoReportsTheRuntimeTheMachineAndTheBackendWithItsReason()
    {
        var (code, output, error) = Run("info");
        Assert.That(code, Is.EqualTo(Program.Success), error);
        Assert.That(output, Does.Contain(".NET").And.Contain(Environment.Version.ToString()));
        Assert.That(output, Does.Contain($"{Environment.ProcessorCount} logical cores"));
        var why = CudaProbe.WhyUnavailable();
        if (why is null)
        {
            Assert.That(output, Does.Contain("backend").And.Contain("auto-detected"));
            Assert.That(output, Does.Contain("compute capability").And.Contain("cuBLAS").And.Contain(".fatbin"));
        }
        else
        {
            Assert.That(output, Does.Contain($"cpu: --device auto fell back to the CPU ({why})"));
            Assert.That(output, Does.Contain($"none: {why}"));
        }
        Assert.That(output, Does.Not.Contain("\u001b["), "no escape codes when the output is not a terminal");
        Assert.That(output.Split('\n').Where(line => line.Length > 0).All(line => !line.EndsWith(' ')), Is.True, "no padded lines");
    }

    [Test]
    public void InfoOnTheCpuStillSaysWhetherAGpuIsThere()
    {
        var (code, output, _) = Run("info", "--device", "cpu");
        Assert.That(code, Is.EqualTo(Program.Success));
        Assert.That(output, Does.Contain("cpu: requested with --device cpu"));
        var why = CudaProbe.WhyUnavailable();
        Assert.That(output, Does.Contain(why is null ? "available" : why));
    }

    [Test]
    public void InfoOnCudaFailsWithTheReasonWhenThereIsNoGpu()
    {
        var why = CudaProbe.WhyUnavailable();
        var (code, output, error) = Run("info", "--device", "cuda");
        if (why is null)
        {
            Assert.That(code, Is.EqualTo(Program.Success), error);
            Assert.That(output, Does.Contain("requested with --device cuda").And.Contain("multiprocessors"));
            return;
        }
        Assert.That(code, Is.EqualTo(Program.Failure));
        Assert.That(error.Trim(), Is.EqualTo($"error: --device cuda: {why}"));
    }

    [TestCase("bogus", "expected auto, cpu, cuda or cuda:N")]
    [TestCase("cuda:x", "expected cuda:N")]
    public void ABadDeviceIsAnArgumentErrorNamingTheOption(string device, string expected)
    {
        var (code, output, error) = Run("info", "--device", device);
        Assert.That(code, Is.EqualTo(Program.BadArguments));
        Assert.That(error, Does.Contain($"--device '{device}'").And.Contain(expected));
        Assert.That(output, Is.Empty);
    }

    [Test]
    public void AnUnknownOptionOrCommandIsAnArgumentError()
    {
        var (code, _, error) = Run("info", "--frobnicate");
        Assert.That(code, Is.EqualTo(Program.BadArguments));
        Assert.That(error, Does.Contain("--frobnicate"));

        (code, _, error) = Run("frobnicate");
        Assert.That(code, Is.EqualTo(Program.BadArguments));
        Assert.That(error, Does.Contain("frobnicate"));
    }

    [Test]
    public void NoCommandIsAnArgumentErrorThatPointsToHelp()
    {
        var (code, _, error) = Run();
        Assert.That(code, Is.EqualTo(Program.BadArguments));
        Assert.That(error, Does.Contain("--help"));
    }

    [Test]
    public void HelpListsInfoAndItsDeviceOption()
    {
        var (code, output, _) = Run("--help");
        Assert.That(code, Is.EqualTo(Program.Success));
        Assert.That(output, Does.Contain("info"));

        (code, output, _) = Run("info", "--help");
        Assert.That(code, Is.EqualTo(Program.Success));
        Assert.That(output, Does.Contain("--device").And.Contain("auto|cpu|cuda|cuda:N"));
    }
}
