namespace NativeContrast.Tests.Data;

using System.Buffers.Binary;
using NativeContrast.Cli.Commands;
using NativeContrast.Data;

public class PreviewTests : TemporaryFolderTest
{
    [Test]
    public void PreviewWritesAValidPngGrid()
    {
        using var data = BuiltinShapes.Create(30, 32, seed: 1);
        var preset = AugmentationPresets.Swav(32, smallCrops: 2);
        var path = PathOf("grid.png");
        var (height, width) = AugmentationPreview.Write(path, data, preset, count: 3, views: 4, seed: 7);
        var png = File.ReadAllBytes(path);
        Assert.That(png[..8], Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a }));
        Assert.That(System.Text.Encoding.ASCII.GetString(png, 12, 4), Is.EqualTo("IHDR"));
        Assert.That(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), Is.EqualTo(width));
        Assert.That(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)), Is.EqualTo(height));
        // 32-pixel cells enlarged 3x to 96, 4 px gaps: 3 rows and 1 + 4 columns.
        Assert.That((height, width), Is.EqualTo((4 + (3 * 100), 8 + (5 * 100))));
        var decoded = ImageCodec.DecodeRgb(png, out var h, out var w, out _);
        Assert.That((h, w), Is.EqualTo((height, width)));
        var (grid, _, _) = AugmentationPreview.RenderGrid(data, preset, 3, 4, 7);
        Assert.That(decoded, Is.EqualTo(grid));
    }

    [Test]
    public void PreviewToAJpgPathWritesAJpegOfTheSameGrid()
    {
        using var data = BuiltinShapes.Create(10, 32, seed: 2);
        var preset = AugmentationPresets.SimClr(32);
        var path = PathOf("grid.jpg");
        var (height, width) = AugmentationPreview.Write(path, data, preset, count: 2, views: 2, seed: 3);
        var jpeg = File.ReadAllBytes(path);
        Assert.That(jpeg[..3], Is.EqualTo(new byte[] { 0xff, 0xd8, 0xff }), "a JPEG's SOI marker");
        var decoded = ImageCodec.DecodeRgb(jpeg, out var h, out var w, out _);
        Assert.That((h, w), Is.EqualTo((height, width)));
        var (grid, _, _) = AugmentationPreview.RenderGrid(data, preset, 2, 2, 3);
        // Lossy at quality 90: close on average (sharp shape edges ring more), not bit-exact.
        Assert.That(decoded!.Zip(grid, (a, b) => (double)Math.Abs(a - b)).Average(), Is.LessThan(4));
    }

    [Test]
    public void PreviewCommandWritesTheFileAndRejectsUnknownPresets()
    {
        var path = PathOf("cli.png");
        var output = new StringWriter();
        var command = PreviewCommand.Create();
        var parse = command.Parse(["--dataset", "builtin", "--preset", "byol", "--count", "2", "--views", "3", "--seed", "4", "--out", path]);
        var code = parse.Invoke(new System.CommandLine.InvocationConfiguration { Output = output, Error = new StringWriter() });
        Assert.That(code, Is.Zero, output.ToString());
        Assert.That(File.Exists(path), Is.True);
        Assert.That(output.ToString(), Does.Contain("wrote").And.Contain("byol"));
        var bad = command.Parse(["--preset", "nope"]);
        Assert.That(bad.Errors, Is.Not.Empty);
    }
}
