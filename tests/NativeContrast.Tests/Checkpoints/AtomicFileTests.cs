namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;

public class AtomicFileTests : CheckpointTestBase
{
    [Test]
    public void SuccessfulWriteReplacesTheFileAndLeavesNoTemporaryFile()
    {
        var path = PathTo("a.bin");
        File.WriteAllBytes(path, [1, 2, 3]);
        AtomicFile.Write(path, s => s.Write([4, 5]));
        Assert.Multiple(() =>
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(new byte[] { 4, 5 }));
            Assert.That(OtherFiles("a.bin"), Is.Empty);
        });
    }

    [Test]
    public void WriteThatThrowsMidwayKeepsTheOldFileAndRemovesTheTemporaryFile()
    {
        var path = PathTo("a.bin");
        File.WriteAllBytes(path, [1, 2, 3]);
        string? temporary = null;
        Assert.That(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[100_000]);
            s.Flush();
            temporary = ((FileStream)s).Name;
            throw new IOException("disk full (injected)");
        }), Throws.TypeOf<IOException>().With.Message.EqualTo("disk full (injected)"));
        Assert.Multiple(() =>
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(new byte[] { 1, 2, 3 }));
            Assert.That(Path.GetDirectoryName(temporary), Is.EqualTo(Folder), "the temporary file sits beside the target, on the same file system");
            Assert.That(OtherFiles("a.bin"), Is.Empty);
        });
    }

    [Test]
    public void WriterWhoseTensorFailsMidwayKeepsTheOldFile()
    {
        var path = PathTo("w.safetensors");
        using var good = Cpu.Allocate(new TensorShape(100), "good");
        var writer = new SafetensorsWriter();
        writer.Add("good", Cpu, good);
        writer.Save(path);
        var previous = File.ReadAllBytes(path);

        var bad = Cpu.Allocate(new TensorShape(3), "bad");
        var failing = new SafetensorsWriter();
        failing.Add("good", Cpu, good);
        failing.Add("bad", Cpu, bad);
        bad.Dispose();
        Assert.That(() => failing.Save(path), Throws.TypeOf<ObjectDisposedException>());
        Assert.Multiple(() =>
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(previous));
            Assert.That(OtherFiles("w.safetensors"), Is.Empty);
        });
    }

    [Test]
    public void MissingFolderIsCreated()
    {
        var path = Path.Combine(Folder, "runs", "1", "c.bin");
        AtomicFile.Write(path, s => s.WriteByte(7));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(new byte[] { 7 }));
    }
}
