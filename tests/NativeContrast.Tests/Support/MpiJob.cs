namespace NativeContrast.Tests.Support;

using System.Diagnostics;

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

    /// <summary>The dotnet host of the runtime running these tests (the test host itself may be an apphost).</summary>
    private static string DotnetHost()
    {
        var root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "..", "..", ".."));
        var host = Path.Combine(root, OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet");
        return File.Exists(host) ? host : "dotnet";
    }
}
