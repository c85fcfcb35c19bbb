namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

/// <summary>Image folders: decoded once through ImageSharp into a memory-mapped cache, undecodable files skipped and listed.</summary>
public class ImageFolderTests : TemporaryFolderTest
{
    private static void WritePng(string path, int height, int width, Func<int, int, (byte R, byte G, byte B)> colour)
    {
        var pixels = new byte[height * width * 3];
        for (var y = 0; y < height; y++)
        {
            for (var x = 0; x < width; x++)
            {
                var (r, g, b) = colour(y, x);
                (pixels[((y * width) + x) * 3], pixels[(((y * width) + x) * 3) + 1], pixels[(((y * width) + x) * 3) + 2]) = (r, g, b);
            }
        }
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, ImageCodec.EncodePng(pixels, height, width));
    }

    [Test]
    public void PngRoundTripsExactly()
    {
        var pixels = Enumerable.Range(0, 5 * 7 * 3).Select(i => (byte)(i * 11)).ToArray();
        var png = ImageCodec.EncodePng(pixels, 5, 7);
        Assert.That(png[..8], Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a }));
        var decoded = ImageCodec.DecodeRgb(png, out var height, out var width, out var error);
        Assert.That((height, width, error), Is.EqualTo((5, 7, (string?)null)));
        Assert.That(decoded, Is.EqualTo(pixels));
        Assert.That(ImageCodec.DecodeRgb("not an image"u8, out _, out _, out var reason), Is.Null);
        Assert.That(reason, Is.Not.Empty);
        Assert.That(() => ImageCodec.EncodePng(pixels, 5, 6), Throws.ArgumentException.With.Message.Contains("5x6"));
    }

    [Test]
    public void JpegRoundTripsWithinTheCodecsRounding()
    {
        // A smooth image at quality 100 (ImageSharp writes 4:4:4 there): only quantisation and IDCT rounding remain.
        var (height, width) = (24, 40);
        var pixels = new byte[height * width * 3];
        for (var i = 0; i < height * width; i++)
        {
            (pixels[3 * i], pixels[(3 * i) + 1], pixels[(3 * i) + 2]) = ((byte)(i % width * 6), (byte)(i / width * 10), 128);
        }
        var jpeg = ImageCodec.EncodeJpeg(pixels, height, width, quality: 100);
        Assert.That(jpeg[..3], Is.EqualTo(new byte[] { 0xff, 0xd8, 0xff }), "a JPEG's SOI marker");
        var decoded = ImageCodec.DecodeRgb(jpeg, out var h, out var w, out _);
        Assert.That((h, w), Is.EqualTo((height, width)));
        Assert.That(decoded!.Zip(pixels, (a, b) => Math.Abs(a - b)).Max(), Is.LessThanOrEqualTo(3));
    }

    [Test]
    public void ClassFoldersAreImportedOnceWithTheCorruptImageSkippedAndListed()
    {
        var root = PathOf("pets");
        WritePng(Path.Combine(root, "cat", "a.png"), 20, 40, (_, _) => (200, 10, 30));
        WritePng(Path.Combine(root, "cat", "b.png"), 16, 16, (y, x) => ((byte)(x * 16), (byte)(y * 16), 7));
        WritePng(Path.Combine(root, "dog", "c.png"), 30, 12, (_, _) => (5, 250, 60));
        File.WriteAllBytes(Path.Combine(root, "dog", "d.jpg"), ImageCodec.EncodeJpeg([.. Enumerable.Repeat(new byte[] { 90, 140, 200 }, 16 * 24).SelectMany(p => p)], 16, 24, quality: 95));
        File.WriteAllBytes(Path.Combine(root, "dog", "broken.png"), [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3, 4, 5]);
        File.WriteAllText(Path.Combine(root, "dog", "notes.txt"), "not an image");
        File.WriteAllText(Path.Combine(root, "top-level.png"), "ignored: labelled folders use subfolders");
        var cache = PathOf("cache");

        var first = ImageFolderDataset.Open(root, 8, cache);
        using (var data = first.Dataset)
        {
            Assert.That(first.ReusedCache, Is.False);
            Assert.That(first.Skipped, Has.Count.EqualTo(1));
            Assert.That(first.Skipped[0].Path, Is.EqualTo(Path.Combine(root, "dog", "broken.png")));
            Assert.That(first.Skipped[0].Reason, Does.StartWith("undecodable"));
            Assert.That(data.Count, Is.EqualTo(4));
            Assert.That(data.Shape, Is.EqualTo(new ImageShape(8, 8, 3)));
            Assert.That(data.ClassNames, Is.EqualTo(new[] { "cat", "dog" }));
            Assert.That(Enumerable.Range(0, 4).Select(data.GetLabel), Is.EqualTo(new[] { 0, 0, 1, 1 }));
            // A uniform image stays exactly its colour through the resize (weights sum to one) and the crop.
            Assert.That(data.GetImage(0).ToArray(), Is.EqualTo(Enumerable.Repeat(new byte[] { 200, 10, 30 }, 64).SelectMany(p => p).ToArray()));
            Assert.That(data.GetImage(2)[..3].ToArray(), Is.EqualTo(new byte[] { 5, 250, 60 }));
            // A uniform JPEG comes back within the codec's rounding of its colour, resize and crop included.
            Assert.That(data.GetImage(3).ToArray().Select((v, i) => Math.Abs(v - new[] { 90, 140, 200 }[i % 3])).Max(), Is.LessThanOrEqualTo(2));
            Assert.That(data.Store.IsMapped, Is.True);
            Assert.That(data.Stats.Mean[1], Is.GreaterThan(data.Stats.Mean[2]));
        }

        var again = ImageFolderDataset.Open(root, 8, cache);
        using (again.Dataset)
        {
            Assert.That(again.ReusedCache, Is.True, "the second open maps the cache without decoding");
            Assert.That(again.CachePath, Is.EqualTo(first.CachePath));
            Assert.That(again.Skipped.Select(s => s.Path), Is.EqualTo(first.Skipped.Select(s => s.Path)));
            Assert.That(again.Dataset.Count, Is.EqualTo(4));
        }

        // Another size is another cache.
        var other = ImageFolderDataset.Open(root, 6, cache);
        using (other.Dataset)
        {
            Assert.That(other.ReusedCache, Is.False);
            Assert.That(other.Dataset.Shape, Is.EqualTo(new ImageShape(6, 6, 3)));
        }
    }

    [Test]
    public void FlatFolderIsUnlabelledAndResizedShorterSideThenCentreCropped()
    {
        var root = PathOf("flat");
        // 10 rows x 20 columns: left half black, right half white. Resize(10) keeps it, CenterCrop(10) takes columns 5..14.
        WritePng(Path.Combine(root, "one.png"), 10, 20, (_, x) => x < 10 ? ((byte)0, (byte)0, (byte)0) : ((byte)255, (byte)255, (byte)255));
        var import = ImageFolderDataset.Open(root, 10, PathOf("cache"));
        using var data = import.Dataset;
        Assert.That(data.HasLabels, Is.False);
        Assert.That(data.ClassNames, Is.Empty);
        Assert.That(data.GetLabel(0), Is.EqualTo(-1));
        var row = data.GetImage(0)[..30].ToArray();
        Assert.That(row.Where((_, i) => i % 3 == 0), Is.EqualTo(new byte[] { 0, 0, 0, 0, 0, 255, 255, 255, 255, 255 }));
    }

    [Test]
    public void ACorruptCacheFileIsNamed()
    {
        var root = PathOf("one");
        WritePng(Path.Combine(root, "a.png"), 8, 8, (_, _) => (1, 2, 3));
        var import = ImageFolderDataset.Open(root, 8, PathOf("cache"));
        import.Dataset.Dispose();
        var bytes = File.ReadAllBytes(import.CachePath);
        File.WriteAllBytes(import.CachePath, bytes[..^10]);
        var e = Assert.Throws<DataFormatException>(() => ImageFolderDataset.OpenCache(import.CachePath));
        Assert.That(e!.Message, Does.StartWith(import.CachePath).And.Contain("truncated"));
        bytes[0] = (byte)'X';
        File.WriteAllBytes(import.CachePath, bytes);
        e = Assert.Throws<DataFormatException>(() => ImageFolderDataset.OpenCache(import.CachePath));
        Assert.That(e!.Message, Does.StartWith(import.CachePath).And.Contain("wrong magic number"));

        // Opening the folder rebuilds a damaged cache instead of failing.
        var log = new List<string>();
        var rebuilt = ImageFolderDataset.Open(root, 8, PathOf("cache"), log.Add);
        using (rebuilt.Dataset)
        {
            Assert.That(rebuilt.ReusedCache, Is.False);
            Assert.That(rebuilt.Dataset.GetImage(0)[..3].ToArray(), Is.EqualTo(new byte[] { 1, 2, 3 }));
            Assert.That(log[0], Does.Contain("wrong magic number").And.Contain("importing"));
        }
    }

    [Test]
    public void AFolderWithNothingDecodableSaysSo()
    {
        var root = PathOf("bad");
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "x.jpg"), "garbage");
        var e = Assert.Throws<DataFormatException>(() => ImageFolderDataset.Open(root, 8, PathOf("cache")));
        Assert.That(e!.Message, Does.StartWith(root).And.Contain("none of its 1 images could be decoded").And.Contain("x.jpg"));
        var empty = PathOf("empty");
        Directory.CreateDirectory(empty);
        e = Assert.Throws<DataFormatException>(() => ImageFolderDataset.Open(empty, 8, PathOf("cache")));
        Assert.That(e!.Message, Does.Contain("holds no images"));
    }
}
