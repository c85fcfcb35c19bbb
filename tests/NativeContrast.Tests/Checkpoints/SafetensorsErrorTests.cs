namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;
using static CheckpointFixtures;

/// <summary>Every way a file can be wrong fails on open or read, naming the file, the tensor and what is wrong.</summary>
public class SafetensorsErrorTests : CheckpointTestBase
{
    private string WriteValid(string name = "valid.safetensors")
    {
        using var a = Cpu.Allocate(new TensorShape(4, 3), "a");
        using var b = Cpu.Allocate(new TensorShape(5), "b");
        FillRandom(Cpu, a, 1);
        FillRandom(Cpu, b, 2);
        var writer = new SafetensorsWriter();
        writer.Add("first.weight", Cpu, a);
        writer.Add("last.weight", Cpu, b);
        var path = PathTo(name);
        writer.Save(path);
        return path;
    }

    private static CheckpointException OpenFails(string path)
    {
        var e = Assert.Throws<CheckpointException>(() => SafetensorsFile.Open(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(path), "the message names the file");
        Assert.That(e.FilePath, Is.EqualTo(path));
        return e;
    }

    private string Raw(string header, int dataBytes, ulong? declared = null)
    {
        var path = PathTo("raw.safetensors");
        WriteRaw(path, header, new byte[dataBytes], declared);
        return path;
    }

    [Test]
    public void TruncatedDataNamesTheTensorThatRunsPastTheEnd()
    {
        var path = WriteValid();
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^3]);
        var e = OpenFails(path);
        Assert.That(e.TensorName, Is.EqualTo("last.weight"));
        Assert.That(e.Message, Does.Contain("'last.weight'").And.Contain("truncated").And.Contain("[48, 68]").And.Contain("65 bytes"));
    }

    [Test]
    public void TruncatedHeaderIsReported()
    {
        var path = WriteValid();
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..20]);
        Assert.That(OpenFails(path).Message, Does.Contain("truncated").And.Contain("12 bytes after"));
    }

    [Test]
    public void FileShorterThanTheLengthPrefixIsReported()
    {
        var path = PathTo("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Assert.That(OpenFails(path).Message, Does.Contain("truncated").And.Contain("3 bytes"));
    }

    [Test]
    public void HeaderLengthBeyondTheFileIsReported()
    {
        var path = Raw("{}", 0, declared: 1000);
        Assert.That(OpenFails(path).Message, Does.Contain("header length is 1000 bytes"));
    }

    [Test]
    public void AbsurdHeaderLengthIsCorruptWithoutReadingIt()
    {
        var path = Raw("{}", 0, declared: ulong.MaxValue);
        Assert.That(OpenFails(path).Message, Does.Contain("corrupt header").And.Contain(ulong.MaxValue.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    [TestCase("not json at all", "does not start with '{'")]
    [TestCase("{\"a\": {\"dtype\": \"F32\"", "not valid JSON")]
    [TestCase("{\"__metadata__\": {\"k\": 3}}", "metadata 'k' must be a string")]
    public void CorruptHeaderIsReported(string header, string expected)
    {
        Assert.That(OpenFails(Raw(header, 0)).Message, Does.Contain(expected));
    }

    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16, "hold 16 bytes, but shape [3] of F32 needs 12")]
    [TestCase("{\"w\":{\"dtype\":\"Q4\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12, "unknown dtype 'Q4'")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[-3],\"data_offsets\":[0,12]}}", 12, "'shape' must be an array of non-negative integers")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[12]}}", 12, "'data_offsets' must be two")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 12, "end before they begin")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[0,4000]}}", 16, "run past the end of the data section, which has 16 bytes")]
    [TestCase("{\"v\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, "overlap tensor 'v' at [0, 16]")]
    [TestCase("{\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 24, "leave bytes [8, 16) of the data section unused")]
    [TestCase("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "appears twice")]
    public void BadTensorEntryNamesTheTensor(string header, int dataBytes, string expected)
    {
        var e = OpenFails(Raw(header, dataBytes));
        Assert.That(e.TensorName, Is.EqualTo("w"));
        Assert.That(e.Message, Does.Contain("tensor 'w'").And.Contain(expected));
    }

    [Test]
    public void TrailingBytesThatNoTensorOwnsAreCorrupt()
    {
        var path = Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12);
        Assert.That(OpenFails(path).Message, Does.Contain("cover 8 bytes of data but the data section has 12"));
    }

    [Test]
    public void WrongDtypeNamesFileTensorExpectedAndFound()
    {
        var path = Raw("{\"n\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 24);
        using var file = SafetensorsFile.Open(path);
        using var t = Cpu.Allocate(new TensorShape(2), "model.n");
        var intoFloat = Assert.Throws<CheckpointException>(() => file.ReadInto("n", Cpu, t))!;
        var asInt = Assert.Throws<CheckpointException>(() => file.ReadInt64("w"))!;
        Assert.Multiple(() =>
        {
            Assert.That(intoFloat.Message, Does.Contain(path).And.Contain("tensor 'n'").And.Contain("wrong dtype").And.Contain("F32, F16, BF16 or F64").And.Contain("found I64"));
            Assert.That(asInt.Message, Does.Contain(path).And.Contain("tensor 'w'").And.Contain("expected I64, found F32"));
        });
    }

    [Test]
    public void WrongShapeNamesFileTensorExpectedAndFound()
    {
        var path = WriteValid();
        using var file = SafetensorsFile.Open(path);
        using var t = Cpu.Allocate(new TensorShape(3, 4), "model.first");
        var before = Bits(Cpu, t);
        var e = Assert.Throws<CheckpointException>(() => file.ReadInto("first.weight", Cpu, t))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.TensorName, Is.EqualTo("first.weight"));
            Assert.That(e.Message, Does.Contain(path).And.Contain("wrong shape").And.Contain("'model.first' expects [3, 4]").And.Contain("the file has [4, 3]"));
            Assert.That(Bits(Cpu, t), Is.EqualTo(before), "nothing is written on a shape error");
        });
    }

    [Test]
    public void MissingTensorNamesFileAndTensor()
    {
        var path = WriteValid();
        using var file = SafetensorsFile.Open(path);
        var e = Assert.Throws<CheckpointException>(() => file.ReadFloat32("middle.weight"))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("tensor 'middle.weight'").And.Contain("missing"));
    }

    [Test]
    public void ReservedAndDuplicateNamesAreRefusedByTheWriter()
    {
        using var t = Cpu.Allocate(new TensorShape(1), "t");
        var writer = new SafetensorsWriter();
        writer.Add("t", Cpu, t);
        Assert.Multiple(() =>
        {
            Assert.That(() => writer.Add("t", Cpu, t), Throws.ArgumentException.With.Message.Contains("added twice"));
            Assert.That(() => writer.Add("__metadata__", Cpu, t), Throws.ArgumentException.With.Message.Contains("reserved"));
            Assert.That(() => writer.AddInt64("n", new TensorShape(2), new long[] { 1 }), Throws.ArgumentException.With.Message.Contains("needs 2 values"));
        });
    }
}
