namespace NativeContrast.Tests.Distributed;

using NativeContrast.Cli;
using NativeContrast.Cuda;

/// <summary>`nativecontrast collectives-check` in this process (no launcher): the single-process communicator's line and its abort.</summary>
public class CollectivesCheckCommandTests
{
    private static (int ExitCode, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void AloneItChecksEveryCollectiveOfTheSingleProcessCommunicator()
    {
        var (code, output, error) = Run("collectives-check", "--sizes", "7", "1000003");

        Assert.That(code, Is.EqualTo(Program.Success), error);
        Assert.That(output.TrimEnd(), Is.EqualTo(
            "rank 0 of 1, single process on cpu: all-reduce 7 OK, 1000003 OK; all-reduce-mean 7 OK, 1000003 OK; all-gather 7 OK, 1000003 OK; "
            + "reduce-scatter 7 OK, 1000003 OK; broadcast from rank 0 7 OK, 1000003 OK; broadcast of 33 host bytes from rank 0 OK; barrier OK"));
    }

    [Test]
    public void AFailingRankAbortsWithOneLineNamingIt()
    {
        var (code, output, error) = Run("collectives-check", "--sizes", "7", "--fail-rank", "0");

        Assert.That(code, Is.EqualTo(Program.Failure));
        Assert.That(output, Is.Empty);
        Assert.That(error.TrimEnd(), Is.EqualTo("error: rank 0 of 1 aborted the job: collectives-check: injected failure (--fail-rank 0)"));
    }

    [Test]
    public void SizesBelowOneAreBadArguments()
    {
        var (code, _, error) = Run("collectives-check", "--sizes", "7", "0");
        Assert.That(code, Is.EqualTo(Program.BadArguments));
        Assert.That(error, Does.Contain("--sizes: every size must be at least 1"));
    }

    [Test]
    public void WithoutAGpuTheCudaCheckFailsInOneLine()
    {
        var why = CudaProbe.WhyUnavailable();
        if (why is null)
        {
            Assert.Ignore("a GPU is here: NcclCommunicatorTests cover the CUDA path");
        }
        var (code, _, error) = Run("collectives-check", "--device", "cuda");
        Assert.That(code, Is.EqualTo(Program.Failure));
        // The same line as train's (DeviceOption), since both choose the device the same way.
        Assert.That(error.TrimEnd(), Is.EqualTo($"error: --device cuda: {why}"));
    }
}
