namespace NativeContrast.Cli;

using System.CommandLine;
using System.CommandLine.Invocation;
using NativeContrast.Checkpoints;
using NativeContrast.Cli.Commands;
using NativeContrast.Cuda;
using NativeContrast.Distributed;
using NativeContrast.Training;

/// <summary>
/// The `nativecontrast` command. Each subcommand lives in its own file under Commands/ and exposes
/// <c>public static Command Create()</c>; adding one is that file plus one line in <see cref="BuildRootCommand"/>.
/// Exit codes: 0 success, 1 the work failed (e.g. the requested device is not there), 2 bad arguments.
/// </summary>
public static class Program
{
    public const int Success = 0;
    public const int Failure = 1;
    public const int BadArguments = 2;

    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    private static readonly AsyncLocal<CancellationToken> Cancellation = new();

    /// <summary>A caller's request to stop (besides Ctrl+C and SIGTERM), e.g. a host embedding the command; long commands watch it.</summary>
    public static CancellationToken CallerCancellation => Cancellation.Value;

    /// <summary>Parses and runs a command line, writing to the given writers (the tests call this in-process).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error, CancellationToken cancel = default) => Run(BuildRootCommand(), args, output, error, cancel);

    /// <summary>
    /// Runs a command line of <paramref name="root"/>. A CUDA failure in any command (a driver or cuBLAS call, a
    /// kernel fault) or a communicator's (an MPI or NCCL call, an aborted job) becomes one line on the error writer
    /// and exit code 1, not a stack trace.
    /// </summary>
    public static int Run(RootCommand root, string[] args, TextWriter output, TextWriter error, CancellationToken cancel = default)
    {
        Cancellation.Value = cancel;
        ArgumentNullException.ThrowIfNull(args);
        var parse = root.Parse(args);
        if (parse.Action is ParseErrorAction)
        {
            // System.CommandLine exits with 1 on parse errors; bad arguments are 2 here, with each problem on its own line.
            foreach (var problem in parse.Errors)
            {
                error.WriteLine($"error: {problem.Message}");
            }
            error.WriteLine("Run 'nativecontrast --help' (or 'nativecontrast <command> --help') for usage.");
            return BadArguments;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (e is CudaException or CommunicatorException)
        {
            error.WriteLine($"error: {OneLine(e.Message)}");
            return Failure;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Anything else is a bug: the whole exception, as System.CommandLine's own handler would print it.
            error.WriteLine($"Unhandled exception: {e}");
            return Failure;
        }
    }

    /// <summary>
    /// The failures a working command explains in one line rather than as a crash: bad input (arguments, files, data,
    /// checkpoints), a GPU that fails, a training whose loss stops being finite.
    /// </summary>
    public static bool IsExplained(Exception e) =>
        e is ArgumentException or IOException or CheckpointException or FormatException or InvalidOperationException or CudaException or NonFiniteLossException;

    /// <summary>Writes an <see cref="IsExplained"/> failure as one "error:" line; exit code 2 for bad arguments, else 1.</summary>
    public static int Explain(TextWriter error, Exception e)
    {
        error.WriteLine($"error: {e.Message}");
        return e is ArgumentException ? BadArguments : Failure;
    }

    private static string OneLine(string message) => string.Join(" ", message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    public static RootCommand BuildRootCommand() =>
        new("NativeContrast: contrastive self-supervised learning (SimCLR, MoCo, SwAV, PiCO) on fused CUDA kernels, with a managed CPU oracle.")
        {
            InfoCommand.Create(),
            PreviewCommand.Create(),
            ExportTorchvisionCommand.Create(),
            TrainCommand.Create(),
            FinetuneCommand.Create(),
            DistillCommand.Create(),
            EvalCommand.Create(),
            EmbedCommand.Create(),
            CollectivesCheckCommand.Create(),
        };
}
