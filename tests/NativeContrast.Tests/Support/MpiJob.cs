namespace NativeContrast.Tests.Support;

using System.Diagnostics;
using NativeContrast.Checkpoints;
using NativeContrast.Cli;
using NativeContrast.Training;

/// <summary>
/// Jobs of CPU ranks under Open MPI's mpirun, each rank the CLI built next to the test assembly. mpirun is required
/// (CI installs openmpi-bin); NATIVECONTRAST_SKIP_MPI=1 skips the MPI tests where it cannot be installed.
/// </summary>
public static class MpiJob
{
    public const string SkipVariable = "NATIVECONTRAST_SKIP_MPI";

    /// <summary>Far above a job's few seconds: reaching it means a rank hangs.</summary>
    private static readonly TimeSpan JobTimeout = TimeSpan.FromMinutes(3);

    /// <summary>mpirun's path; ignores the calling fixture when the MPI tests are skipped, fails it when mpirun is missing.</summary>
    public static string FindMpirun()
    {
        if (Environment.GetEnvironmentVariable(SkipVariable) == "1")
        {
            Assert.Ignore($"MPI tests skipped: {SkipVariable}=1");
        }
        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        var mpirun = path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(directory => Path.Combine(directory, "mpirun"))
            .FirstOrDefault(File.Exists) ?? "";
        if (mpirun.Length == 0)
        {
            Assert.Fail($"mpirun is not on PATH ({path}): install Open MPI (Debian: openmpi-bin), or set {SkipVariable}=1 to skip the MPI tests");
        }
        return mpirun;
    }

    /// <summary>
    /// mpirun -np <paramref name="ranks"/> (with <paramref name="options"/>) of the CLI with <paramref name="arguments"/>:
    /// its exit code, its outputs, and all of it for messages.
    /// </summary>
    public static (int ExitCode, string Stdout, string Stderr, string Log) Run(string mpirun, int ranks, string[] options, params string[] arguments)
    {
        var cli = Path.Combine(TestContext.CurrentContext.TestDirectory, "NativeContrast.Cli.dll");
        Assert.That(cli, Does.Exist, "the CLI is built next to the tests (a project reference)");
        var start = new ProcessStartInfo(mpirun) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // --oversubscribe: CI machines may have fewer cores than ranks; --allow-run-as-root: CI runs as root.
        foreach (var argument in (string[])[.. options, "-np", $"{ranks}", "--oversubscribe", "--allow-run-as-root", DotnetHost(), cli, .. arguments])
        {
            start.ArgumentList.Add(argument);
        }
        // mpirun gives each rank a pseudo-terminal for its output, on which .NET's console first writes the terminal's
        // keypad-mode sequence; a dumb terminal has none.
        start.Environment["TERM"] = "dumb";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(JobTimeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"mpirun {string.Join(' ', start.ArgumentList)} did not end within {JobTimeout}: a rank hangs");
        }
        process.WaitForExit();
        return (process.ExitCode, stdout.Result, stderr.Result, $"mpirun exited with {process.ExitCode}\n--- stdout\n{stdout.Result}--- stderr\n{stderr.Result}");
    }

    /// <summary>The CLI with <paramref name="args"/> in this process, as a single process (no launcher): its exit code and outputs.</summary>
    public static (int Code, string Output, string Error) RunInProcess(string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>
    /// The runs in <paramref name="ranksRun"/> (a data-parallel job) and <paramref name="processRun"/> (one process on
    /// the job's global batch) logged the same steps with the same losses and wrote checkpoints of the same tensors,
    /// every fp32 one equal within fp32 rounding; returns the names compared.
    /// </summary>
    public static List<string> AssertSameRun(string ranksRun, string processRun, int steps)
    {
        var (ranksSteps, _) = MetricsLog.Read(Path.Combine(ranksRun, MetricsLog.FileName));
        var (processSteps, _) = MetricsLog.Read(Path.Combine(processRun, MetricsLog.FileName));
        var expectedSteps = Enumerable.Range(0, steps).Select(s => (long)s).ToArray();
        Assert.That(ranksSteps.Select(s => s.Step), Is.EqualTo(expectedSteps), "rank 0's steps only, each over the global batch");
        Assert.That(processSteps.Select(s => s.Step), Is.EqualTo(expectedSteps));
        for (var s = 0; s < steps; s++)
        {
            Assert.That(ranksSteps[s].Loss, Is.EqualTo(processSteps[s].Loss).Within(Numerics.Fp32Tolerance * Math.Abs(processSteps[s].Loss)), $"step {s}: the global batch's loss");
        }

        using var ranksCheckpoint = SafetensorsFile.Open(Path.Combine(ranksRun, Trainer.CheckpointFileName));
        using var processCheckpoint = SafetensorsFile.Open(Path.Combine(processRun, Trainer.CheckpointFileName));
        Assert.That(ranksCheckpoint.Tensors.Select(t => t.Name), Is.EquivalentTo(processCheckpoint.Tensors.Select(t => t.Name)));
        var compared = new List<string>();
        foreach (var tensor in processCheckpoint.Tensors.Where(t => t.DType == SafetensorsDType.F32))
        {
            var expected = processCheckpoint.ReadFloat32(tensor.Name);
            var actual = ranksCheckpoint.ReadFloat32(tensor.Name);
            // The batch norms' statistics, the losses' and the gradients' sums add the same terms in another order
            // (per rank, then across ranks): they agree to fp32 rounding.
            Assert.That(Numerics.RelativeError(actual, expected), Is.LessThan(Numerics.Fp32Tolerance), $"{tensor.Name} after {steps} steps");
            compared.Add(tensor.Name);
        }
        Assert.That(compared, Has.Count.GreaterThan(20), "parameters, running statistics and optimiser state compared");
        return compared;
    }

    /// <summary>The dotnet host of the runtime running these tests (the test host itself may be an apphost).</summary>
    private static string DotnetHost()
    {
        var root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "..", "..", ".."));
        var host = Path.Combine(root, OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet");
        return File.Exists(host) ? host : "dotnet";
    }
}
