namespace NativeContrast.Tests.Packaging;

using System.Diagnostics;
using System.IO.Compression;
using System.Xml.Linq;

/// <summary>
/// `dotnet pack src/NativeContrast` ships the kernel module, and a project that references the package from a local
/// feed finds it beside its output through the engine's own lookup. The engine project is packed from a copy (so the
/// test never writes into the checkout's bin/ and obj/), with the checkout's fatbin when CMake built one and a
/// stand-in file otherwise: packing does not look inside the module. Needs the .NET SDK; ignored with the reason
/// where only the runtime is installed (GPU machines). About a minute: one pack, two no-build packs, one restore and build.
/// </summary>
[Category("Package")]
[NonParallelizable]
public class EnginePackageTests
{
    private const string Version = "0.0.0-packagetest";
    private static readonly TimeSpan ProcessTimeout = TimeSpan.FromMinutes(5);

    private string _work = "";
    private string _repository = "";
    private string _engineCopy = "";
    private string _kernelDirectory = "";
    private string _dotnet = "";

    [OneTimeSetUp]
    public void CopyTheEngineProject()
    {
        _dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var (sdkExit, sdks) = Run(_dotnet, Path.GetTempPath(), "--list-sdks");
        if (sdkExit != 0 || string.IsNullOrWhiteSpace(sdks))
        {
            Assert.Ignore($"package tests skipped: no .NET SDK ({_dotnet} --list-sdks: {sdks.Trim()})");
        }
        _repository = RepositoryRoot();
        _work = Path.Combine(Path.GetTempPath(), "nc-package-" + Guid.NewGuid().ToString("N"));
        foreach (var file in new[] { "Directory.Build.props", "global.json" })
        {
            CopyFile(Path.Combine(_repository, file), Path.Combine(_work, "repo", file));
        }
        _engineCopy = Path.Combine(_work, "repo", "src", "NativeContrast");
        CopyTree(Path.Combine(_repository, "src", "NativeContrast"), _engineCopy);

        var built = Path.Combine(_repository, "build", "native", "nativecontrast.fatbin");
        _kernelDirectory = Path.Combine(_work, "kernels");
        Directory.CreateDirectory(_kernelDirectory);
        if (File.Exists(built))
        {
            File.Copy(built, Path.Combine(_kernelDirectory, "nativecontrast.fatbin"));
        }
        else
        {
            File.WriteAllText(Path.Combine(_kernelDirectory, "nativecontrast.fatbin"), "stand-in module: nvcc was not on PATH when the tests were built");
        }
    }

    [OneTimeTearDown]
    public void DeleteTheCopy()
    {
        if (Directory.Exists(_work))
        {
            Directory.Delete(_work, recursive: true);
        }
    }

    [Test]
    public void PackageShipsTheKernelModuleAndAConsumerFindsItBesideItsOutput()
    {
        var feed = Path.Combine(_work, "feed");
        var (exit, log) = Pack(feed, _kernelDirectory);
        Assert.That(exit, Is.Zero, log);

        var package = Path.Combine(feed, $"NativeContrast.{Version}.nupkg");
        var module = File.ReadAllBytes(Path.Combine(_kernelDirectory, "nativecontrast.fatbin"));
        using (var zip = ZipFile.OpenRead(package))
        {
            var entries = zip.Entries.Select(e => e.FullName).ToArray();
            Assert.That(entries, Is.SupersetOf(new[] { "lib/net10.0/NativeContrast.dll", "build/native/nativecontrast.fatbin", "build/NativeContrast.targets", "buildTransitive/NativeContrast.targets", "README.md" }));
            using (var packed = zip.GetEntry("build/native/nativecontrast.fatbin")!.Open())
            using (var copy = new MemoryStream())
            {
                packed.CopyTo(copy);
                Assert.That(copy.ToArray(), Is.EqualTo(module), "the packed module is the built one");
            }
            using var nuspecStream = zip.GetEntry("NativeContrast.nuspec")!.Open();
            var metadata = XDocument.Load(nuspecStream).Root!.Elements().Single(e => e.Name.LocalName == "metadata");
            string? Field(string name) => metadata.Elements().FirstOrDefault(e => e.Name.LocalName == name)?.Value;
            Assert.That(Field("readme"), Is.EqualTo("README.md"));
            Assert.That(Field("license"), Is.Not.Empty);
            Assert.That(Field("description"), Does.Contain("cuBLAS").And.Contain("sm_80"), "the description says what the GPU path needs");
            var repository = metadata.Elements().FirstOrDefault(e => e.Name.LocalName == "repository");
            Assert.That(repository?.Attribute("url")?.Value ?? "", Does.Not.Contain("example").And.Not.Contain("OWNER"), "no placeholder repository URL");
        }

        // A console project with a PackageReference restored from the local feed, its dependencies from this machine's
        // package cache (the engine's own restore put them there), and nothing else: no network. It restores into its
        // own packages folder so that no stale copy of the test version is reused.
        var consumer = Path.Combine(_work, "consumer");
        Directory.CreateDirectory(consumer);
        var globalPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(Path.Combine(consumer, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="local-test-feed" value="{feed}" />
                <add key="machine-package-cache" value="{globalPackages}" />
              </packageSources>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(consumer, "Consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <RestorePackagesPath>{Path.Combine(_work, "packages")}</RestorePackagesPath>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="NativeContrast" Version="{Version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(consumer, "Program.cs"), "System.Console.WriteLine(NativeContrast.Cuda.KernelModule.Locate() ?? \"not found\");\n");
        var output = Path.Combine(consumer, "out");
        (exit, log) = Run(_dotnet, consumer, "build", "-o", output, "--disable-build-servers", "-nodeReuse:false");
        Assert.That(exit, Is.Zero, log);
        var landed = Path.Combine(output, "nativecontrast.fatbin");
        Assert.That(File.Exists(landed), Is.True, $"no {landed}:\n{log}");
        Assert.That(File.ReadAllBytes(landed), Is.EqualTo(module));

        (exit, log) = Run(_dotnet, consumer, Path.Combine(output, "Consumer.dll"));
        Assert.That(exit, Is.Zero, log);
        Assert.That(log.Trim(), Is.EqualTo(landed), "the engine's own lookup finds the module beside the consumer's output");
    }

    [Test]
    public void PackingWithoutTheKernelModuleFailsNamingItUnlessCpuOnlyIsAsked()
    {
        var empty = Path.Combine(_work, "no-kernels");
        Directory.CreateDirectory(empty);
        var (exit, log) = Pack(Path.Combine(_work, "refused"), empty);
        Assert.That(exit, Is.Not.Zero, log);
        Assert.That(log, Does.Contain(Path.Combine(empty, "nativecontrast.fatbin") + " is missing").And.Contain("NativeContrastPackWithoutKernels=true"));

        var cpuOnly = Path.Combine(_work, "cpu-only");
        (exit, log) = Pack(cpuOnly, empty, "-p:NativeContrastPackWithoutKernels=true");
        Assert.That(exit, Is.Zero, log);
        Assert.That(log, Does.Contain("CPU-only package"));
        using var zip = ZipFile.OpenRead(Path.Combine(cpuOnly, $"NativeContrast.{Version}.nupkg"));
        Assert.That(zip.Entries.Select(e => e.FullName), Has.None.EndsWith(".fatbin"));
    }

    /// <summary>Packs the engine copy with the module from <paramref name="kernelDirectory"/> (CMake never runs); builds only the first time.</summary>
    private (int ExitCode, string Log) Pack(string feed, string kernelDirectory, params string[] extra)
    {
        var built = Directory.Exists(Path.Combine(_engineCopy, "bin", "Release"));
        string[] arguments =
        [
            "pack", _engineCopy, "-o", feed, $"-p:Version={Version}", "-p:NativeContrastSkipKernels=true",
            $"-p:NativeBuildDir={kernelDirectory}{Path.DirectorySeparatorChar}", "--disable-build-servers", "-nodeReuse:false",
            .. built ? ["--no-build"] : Array.Empty<string>(),
            .. extra,
        ];
        return Run(_dotnet, _work, arguments);
    }

    private static (int ExitCode, string Log) Run(string file, string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        // `dotnet test` points MSBuild variables at its own SDK instance; a nested build must resolve its own.
        foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(name);
        }
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(ProcessTimeout))
        {
            process.Kill(entireProcessTree: true);
            return (-1, $"{file} {string.Join(' ', arguments)} did not finish within {ProcessTimeout}");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "src", "NativeContrast", "NativeContrast.csproj")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no src/NativeContrast/NativeContrast.csproj above {TestContext.CurrentContext.TestDirectory}");
    }

    private static void CopyFile(string from, string to)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(to)!);
        File.Copy(from, to);
    }

    /// <summary>Copies a project folder without its build outputs.</summary>
    private static void CopyTree(string from, string to)
    {
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(from, file);
            var top = relative.Split(Path.DirectorySeparatorChar)[0];
            if (top is "bin" or "obj")
            {
                continue;
            }
            CopyFile(file, Path.Combine(to, relative));
        }
    }
}
