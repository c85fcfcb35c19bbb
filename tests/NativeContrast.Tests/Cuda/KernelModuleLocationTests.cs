namespace NativeContrast.Tests.Cuda;

using NativeContrast.Cuda;

/// <summary>Where the engine looks for nativecontrast.fatbin: the variable, beside the assembly, build/native/ above it.</summary>
public class KernelModuleLocationTests
{
    private string _root = null!;

    [SetUp]
    public void CreateTree()
    {
        _root = Directory.CreateTempSubdirectory("nativecontrast-kernels-").FullName;
        Directory.CreateDirectory(Path.Combine(_root, "repo", "build", "native"));
        Directory.CreateDirectory(Path.Combine(_root, "repo", "tests", "bin", "Release"));
    }

    [TearDown]
    public void DeleteTree() => Directory.Delete(_root, recursive: true);

    private string AppDirectory => Path.Combine(_root, "repo", "tests", "bin", "Release");

    private string Touch(params string[] parts)
    {
        var path = Path.Combine([_root, .. parts]);
        File.WriteAllBytes(path, [0]);
        return path;
    }

    [Test]
    public void NothingFoundNamesWhereItLooked()
    {
        Assert.That(KernelModule.Locate(null, AppDirectory), Is.Null);
        Assert.That(KernelModule.WhyNotFound(null, AppDirectory), Does.Contain(KernelModule.FileName).And.Contain(AppDirectory).And.Contain(KernelModule.EnvironmentVariable));
    }

    [Test]
    public void ASourceCheckoutsBuildFolderAboveTheAssemblyIsFound()
    {
        var built = Touch("repo", "build", "native", KernelModule.FileName);
        Assert.That(KernelModule.Locate(null, AppDirectory), Is.EqualTo(built));
        Assert.That(KernelModule.WhyNotFound(null, AppDirectory), Is.Null);
    }

    [Test]
    public void AModuleBesideTheAssemblyWinsOverTheBuildFolder()
    {
        Touch("repo", "build", "native", KernelModule.FileName);
        var beside = Touch("repo", "tests", "bin", "Release", KernelModule.FileName);
        Assert.That(KernelModule.Locate(null, AppDirectory), Is.EqualTo(beside));
    }

    [Test]
    public void TheEnvironmentVariableWinsOverEverything()
    {
        Touch("repo", "tests", "bin", "Release", KernelModule.FileName);
        var chosen = Touch("device-build.fatbin");
        Assert.That(KernelModule.Locate(chosen, AppDirectory), Is.EqualTo(chosen));
    }

    [Test]
    public void AnEnvironmentVariableNamingNothingIsAnErrorNotAFallback()
    {
        Touch("repo", "tests", "bin", "Release", KernelModule.FileName);
        var missing = Path.Combine(_root, "nowhere.fatbin");
        Assert.That(KernelModule.Locate(missing, AppDirectory), Is.Null);
        Assert.That(KernelModule.WhyNotFound(missing, AppDirectory), Does.Contain(KernelModule.EnvironmentVariable).And.Contain(missing));
    }
}
