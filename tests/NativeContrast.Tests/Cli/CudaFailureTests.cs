namespace NativeContrast.Tests.Cli;

using NativeContrast.Cli;
using NativeContrast.Cuda;

/// <summary>A CUDA failure inside any command reaches the user as one line and exit code 1, never a stack trace.</summary>
public class CudaFailureTests
{
    /// <summary>The smallest valid command line of each command; a new command must be added here.</summary>
    private static readonly Dictionary<string, string[]> MinimalArguments = new()
    {
        ["info"] = [],
        ["preview"] = [],
        ["export-torchvision"] = ["--out", "unused"],
        ["train"] = [],
        ["finetune"] = ["--checkpoint", "unused"],
        ["distill"] = ["--teacher", "unused"],
        ["eval"] = [],
        ["embed"] = ["--checkpoint", "unused", "--out", "unused"],
        ["collectives-check"] = [],
    };

    [Test]
    public void EveryCommandTurnsACudaExceptionIntoOneLine()
    {
        var root = Program.BuildRootCommand();
        Assert.That(root.Subcommands.Select(c => c.Name), Is.EquivalentTo(MinimalArguments.Keys), "commands covered here");
        foreach (var command in root.Subcommands)
        {
            command.SetAction(int (_) => throw new KernelLaunchException(
                "nc_contrastive_ntxent_backward_fp32_d128", "grid (64, 8, 1) block (128, 1, 1) shared 99328 B", 700,
                "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered\nthe CUDA context is lost"));
            using var output = new StringWriter();
            using var error = new StringWriter();
            var code = Program.Run(root, [command.Name, .. MinimalArguments[command.Name]], output, error);

            Assert.That(code, Is.EqualTo(Program.Failure), command.Name);
            var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(lines, Has.Length.EqualTo(1), $"{command.Name}: {error}");
            Assert.That(lines[0], Does.StartWith("error: launch of kernel 'nc_contrastive_ntxent_backward_fp32_d128'")
                .And.Contain("CUDA_ERROR_ILLEGAL_ADDRESS").And.Contain("the CUDA context is lost").And.Not.Contain(" at "));
        }
    }
}
