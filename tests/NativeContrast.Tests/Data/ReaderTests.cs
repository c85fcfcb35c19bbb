namespace NativeContrast.Tests.Data;

using System.Buffers.Binary;
using NativeContrast.Data;

/// <summary>IDX, CIFAR and STL-10 readers on tiny files written here, and every corrupt-file case.</summary>
public class ReaderTests : TemporaryFolderTest
{
    private static readonly string[] Ten = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    private static byte Pixel(int image, int p) => (byte)((image * 31) + (p * 3));

    [TestCase(false)]
    [TestCase(true)]
    public void IdxReadsImagesAndLabelsGzippedOrNot(bool gzip)
    {
        WriteMaybeGzip(PathOf("images"), IdxImages(3, 4, 5, Pixel), gzip);
        WriteMaybeGzip(PathOf("labels"), IdxLabels([7, 0, 9]), gzip);
        using var data = IdxDataset.Load(PathOf("images"), PathOf("labels"), "tiny", Ten, new ChannelStats([0.5f], [0.25f]));
        Assert.That(data.Count, Is.EqualTo(3));
        Assert.That(data.Shape, Is.EqualTo(new ImageShape(4, 5, 1)));
        Assert.That(Enumerable.Range(0, 3).Select(data.GetLabel), Is.EqualTo(new[] { 7, 0, 9 }));
        for (var i = 0; i < 3; i++)
        {
            Assert.That(data.GetImage(i).ToArray(), Is.EqualTo(Enumerable.Range(0, 20).Select(p => Pixel(i, p)).ToArray()));
        }
    }

    [Test]
    public void IdxWrongMagicNamesTheFile()
    {
        File.WriteAllBytes(PathOf("images"), IdxImages(2, 3, 3, Pixel, magic: 0x801));
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 2]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("images")).And.Contain("wrong magic number 0x00000801"));
        File.WriteAllBytes(PathOf("images"), IdxImages(2, 3, 3, Pixel));
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 2], magic: 0x803));
        e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("labels")).And.Contain("wrong magic number"));
    }

    [Test]
    public void IdxTruncatedFileIsRejectedFromItsSizeBeforeReading()
    {
        var bytes = IdxImages(4, 3, 3, Pixel);
        File.WriteAllBytes(PathOf("images"), bytes[..^5]);
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 2, 3, 4]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("images")).And.Contain("truncated").And.Contain("4 images of 3 x 3 (52 bytes)").And.Contain("holds 47 bytes"));
    }

    [Test]
    public void IdxTruncatedGzipNamesTheFileAndTheImage()
    {
        // A gzip file's content size is known only by reading it, so the reader finds the end on the way.
        var bytes = IdxImages(4, 3, 3, Pixel);
        WriteMaybeGzip(PathOf("images"), bytes[..^5], gzip: true);
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 2, 3, 4]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("images")).And.Contain("truncated").And.Contain("image 3 of 4"));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void IdxHeaderClaimingMoreThanTheFileCanHoldAllocatesNothing(bool gzip)
    {
        // 2^31 - 1 images of 16384 x 16384 would be 2^59 bytes: rejected from the file's size, not by running out of memory.
        var header = IdxImages(0, 1, 1, Pixel);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), int.MaxValue);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(8), 16384);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(12), 16384);
        WriteMaybeGzip(PathOf("images"), header, gzip);
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.ReadImages(PathOf("images")));
        Assert.That(e!.Message, Does.StartWith(PathOf("images")).And.Contain("2147483647 images of 16384 x 16384"));

        var labels = IdxLabels([]);
        BinaryPrimitives.WriteInt32BigEndian(labels.AsSpan(4), int.MaxValue);
        WriteMaybeGzip(PathOf("labels"), labels, gzip);
        e = Assert.Throws<DataFormatException>(() => IdxDataset.ReadLabels(PathOf("labels"), 10));
        Assert.That(e!.Message, Does.StartWith(PathOf("labels")).And.Contain("2147483647 labels"));
    }

    [Test]
    public void IdxTrailingBytesMeanTheHeaderIsWrong()
    {
        File.WriteAllBytes(PathOf("images"), [.. IdxImages(2, 3, 3, Pixel), 1, 2, 3]);
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 2]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("images")).And.Contain("bytes after 2 images"));
    }

    [Test]
    public void IdxCountMismatchNamesBothFiles()
    {
        File.WriteAllBytes(PathOf("images"), IdxImages(3, 2, 2, Pixel));
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 2]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("labels")).And.Contain("2 labels").And.Contain($"{PathOf("images")} holds 3 images"));
    }

    [Test]
    public void IdxLabelOutsideTheClassesIsNamed()
    {
        File.WriteAllBytes(PathOf("images"), IdxImages(2, 2, 2, Pixel));
        File.WriteAllBytes(PathOf("labels"), IdxLabels([1, 10]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("labels")).And.Contain("label 10 of item 1 is outside 0..9"));
    }

    [Test]
    public void IdxCorruptGzipIsNamed()
    {
        var zipped = PathOf("zipped");
        WriteMaybeGzip(zipped, IdxImages(50, 8, 8, Pixel), gzip: true);
        var bytes = File.ReadAllBytes(zipped);
        for (var i = 20; i < bytes.Length - 8; i++)
        {
            bytes[i] ^= 0x5a;
        }
        File.WriteAllBytes(PathOf("images"), bytes);
        File.WriteAllBytes(PathOf("labels"), IdxLabels(new byte[50]));
        var e = Assert.Throws<DataFormatException>(() => IdxDataset.Load(PathOf("images"), PathOf("labels"), "x", Ten));
        Assert.That(e!.Message, Does.StartWith(PathOf("images")));
    }

    [Test]
    public void MissingFileIsNamed()
    {
        var e = Assert.Throws<FileNotFoundException>(() => IdxDataset.ReadImages(PathOf("nope")));
        Assert.That(e!.Message, Does.Contain(PathOf("nope")));
    }

    /// <summary>A CIFAR record: label byte(s) then the R, G and B planes, pixel (c, y, x) = f(record, c, y·32 + x).</summary>
    private static byte[] CifarRecords(int count, bool cifar100, Func<int, int> label)
    {
        var labelBytes = cifar100 ? 2 : 1;
        var record = labelBytes + 3072;
        var bytes = new byte[count * record];
        for (var r = 0; r < count; r++)
        {
            bytes[r * record] = (byte)(cifar100 ? label(r) / 5 : label(r));
            bytes[(r * record) + labelBytes - 1] = (byte)label(r);
            for (var c = 0; c < 3; c++)
            {
                for (var p = 0; p < 1024; p++)
                {
                    bytes[(r * record) + labelBytes + (c * 1024) + p] = (byte)((r * 13) + (c * 71) + p);
                }
            }
        }
        return bytes;
    }

    [TestCase(false)]
    [TestCase(true)]
    public void CifarReadsRecordsAcrossFilesAndInterleavesChannels(bool cifar100)
    {
        File.WriteAllBytes(PathOf("a.bin"), CifarRecords(2, cifar100, r => cifar100 ? 97 - r : r + 3));
        File.WriteAllBytes(PathOf("b.bin"), CifarRecords(1, cifar100, _ => 5));
        using var data = CifarDataset.Load([PathOf("a.bin"), PathOf("b.bin")], cifar100, "tiny");
        Assert.That(data.Count, Is.EqualTo(3));
        Assert.That(data.Shape, Is.EqualTo(new ImageShape(32, 32, 3)));
        Assert.That(data.ClassNames, Has.Count.EqualTo(cifar100 ? 100 : 10));
        Assert.That(new[] { data.GetLabel(0), data.GetLabel(1), data.GetLabel(2) }, Is.EqualTo(cifar100 ? new[] { 97, 96, 5 } : new[] { 3, 4, 5 }));
        var image = data.GetImage(1);
        for (var p = 0; p < 1024; p += 37)
        {
            for (var c = 0; c < 3; c++)
            {
                Assert.That(image[(p * 3) + c], Is.EqualTo((byte)(13 + (c * 71) + p)), $"pixel {p} channel {c}");
            }
        }
    }

    [Test]
    public void CifarTruncatedFileIsNamed()
    {
        File.WriteAllBytes(PathOf("a.bin"), CifarRecords(2, false, _ => 1)[..^100]);
        var e = Assert.Throws<DataFormatException>(() => CifarDataset.Load([PathOf("a.bin")], false, "x"));
        Assert.That(e!.Message, Does.StartWith(PathOf("a.bin")).And.Contain("not a whole number of 3073-byte CIFAR-10 records"));
    }

    [Test]
    public void CifarLabelOutsideTheClassesIsNamed()
    {
        File.WriteAllBytes(PathOf("a.bin"), CifarRecords(3, false, r => r == 2 ? 10 : 1));
        var e = Assert.Throws<DataFormatException>(() => CifarDataset.Load([PathOf("a.bin")], false, "x"));
        Assert.That(e!.Message, Does.StartWith(PathOf("a.bin")).And.Contain("label 10 of record 2"));
    }

    /// <summary>STL-10 images: per channel column-major, byte (c, x, y) at c·9216 + x·96 + y.</summary>
    private static byte[] StlImages(int count)
    {
        var bytes = new byte[count * 27648];
        for (var i = 0; i < count; i++)
        {
            for (var c = 0; c < 3; c++)
            {
                for (var x = 0; x < 96; x++)
                {
                    for (var y = 0; y < 96; y++)
                    {
                        bytes[(i * 27648) + (c * 9216) + (x * 96) + y] = StlValue(i, c, y, x);
                    }
                }
            }
        }
        return bytes;
    }

    private static byte StlValue(int image, int c, int y, int x) => (byte)((image * 50) + (c * 80) + (y * 2) + x);

    [Test]
    public void Stl10TransposesColumnMajorImagesAndShiftsLabels()
    {
        File.WriteAllBytes(PathOf("train_X.bin"), StlImages(2));
        File.WriteAllBytes(PathOf("train_y.bin"), [1, 10]);
        File.WriteAllBytes(PathOf("unlabeled_X.bin"), StlImages(3));
        using var train = Stl10Dataset.Load(Folder, DatasetSplit.Train, "stl");
        Assert.That(train.Count, Is.EqualTo(2));
        Assert.That(train.Shape, Is.EqualTo(new ImageShape(96, 96, 3)));
        Assert.That(new[] { train.GetLabel(0), train.GetLabel(1) }, Is.EqualTo(new[] { 0, 9 }));
        var image = train.GetImage(1);
        foreach (var (y, x) in new[] { (0, 0), (0, 95), (95, 0), (17, 60), (95, 95) })
        {
            for (var c = 0; c < 3; c++)
            {
                Assert.That(image[(((y * 96) + x) * 3) + c], Is.EqualTo(StlValue(1, c, y, x)), $"row {y} column {x} channel {c}");
            }
        }
        using var both = Stl10Dataset.Load(Folder, DatasetSplit.TrainAndUnlabeled, "stl");
        Assert.That(both.Count, Is.EqualTo(5));
        Assert.That(Enumerable.Range(0, 5).Select(both.GetLabel), Is.EqualTo(new[] { 0, 9, -1, -1, -1 }));
        Assert.That(both.GetImage(4)[0], Is.EqualTo(StlValue(2, 0, 0, 0)));
        using var unlabeled = Stl10Dataset.Load(Folder, DatasetSplit.Unlabeled, "stl");
        Assert.That(unlabeled.HasLabels, Is.False);
        Assert.That(unlabeled.GetLabel(0), Is.EqualTo(-1));
    }

    [Test]
    public void Stl10MismatchesAndBadLabelsAreNamed()
    {
        File.WriteAllBytes(PathOf("train_X.bin"), StlImages(2));
        File.WriteAllBytes(PathOf("train_y.bin"), [1, 2, 3]);
        var e = Assert.Throws<DataFormatException>(() => Stl10Dataset.Load(Folder, DatasetSplit.Train, "stl"));
        Assert.That(e!.Message, Does.StartWith(PathOf("train_y.bin")).And.Contain("3 labels").And.Contain("2 images"));
        File.WriteAllBytes(PathOf("train_y.bin"), [1, 0]);
        e = Assert.Throws<DataFormatException>(() => Stl10Dataset.Load(Folder, DatasetSplit.Train, "stl"));
        Assert.That(e!.Message, Does.StartWith(PathOf("train_y.bin")).And.Contain("label 0 of item 1 is outside 1..10"));
        File.WriteAllBytes(PathOf("train_X.bin"), StlImages(2)[..^1]);
        e = Assert.Throws<DataFormatException>(() => Stl10Dataset.Load(Folder, DatasetSplit.Train, "stl"));
        Assert.That(e!.Message, Does.StartWith(PathOf("train_X.bin")).And.Contain("27648-byte STL-10 images"));
    }

    [Test]
    public void CatalogFindsFilesInTheDataDirectoryAndExplainsWhatIsMissingOffline()
    {
        File.WriteAllBytes(PathOf("t10k-images-idx3-ubyte"), IdxImages(2, 28, 28, Pixel));
        File.WriteAllBytes(PathOf("t10k-labels-idx1-ubyte"), IdxLabels([3, 4]));
        var options = new DatasetOptions { DataDirectory = Folder, CacheDirectory = PathOf("cache"), Download = false };
        using var mnist = DatasetCatalog.Open("mnist", DatasetSplit.Test, options);
        Assert.That(mnist.Count, Is.EqualTo(2));
        Assert.That(mnist.Name, Is.EqualTo("mnist/test"));
        var e = Assert.Throws<FileNotFoundException>(() => DatasetCatalog.Open("mnist", DatasetSplit.Train, options));
        Assert.That(e!.Message, Does.Contain("train-images-idx3-ubyte.gz").And.Contain(Folder));
        e = Assert.Throws<FileNotFoundException>(() => DatasetCatalog.Open("cifar10", DatasetSplit.Train, options));
        Assert.That(e!.Message, Does.Contain("data_batch_1.bin").And.Contain("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"));
        var unknown = Assert.Throws<ArgumentException>(() => DatasetCatalog.Open("imagenet", DatasetSplit.Train, options));
        Assert.That(unknown!.Message, Does.Contain("builtin, fashion-mnist"));
    }
}
