namespace NativeContrast.Data;

/// <summary>
/// A PNG grid for looking at a recipe: one row per image, the original first, then its views as the loader makes
/// them in epoch <c>epoch</c> (view v uses recipe v mod ViewCount and its own random stream, so asking for more views
/// than the preset has shows further draws). Small images are enlarged by an integer factor (nearest neighbour)
/// so that a 32x32 view is about 96 pixels wide; views keep their relative sizes (SwAV's small crops look small).
/// </summary>
public static class AugmentationPreview
{
    private const int Gap = 4;
    private const byte Background = 40;

    /// <summary>The PNG file's bytes for <paramref name="count"/> images spread over the data set (image ⌊frac(r·φ)·N⌋ on row r).</summary>
    public static byte[] RenderPng(IImageDataset dataset, AugmentationPreset preset, int count, int views, ulong seed, int epoch = 0)
    {
        var (pixels, height, width) = RenderGrid(dataset, preset, count, views, seed, epoch);
        return ImageCodec.EncodePng(pixels, height, width);
    }

    /// <summary>Writes the grid to <paramref name="path"/> (JPEG when it ends in .jpg or .jpeg, else PNG) and returns its (height, width).</summary>
    public static (int Height, int Width) Write(string path, IImageDataset dataset, AugmentationPreset preset, int count, int views, ulong seed, int epoch = 0)
    {
        var (pixels, height, width) = RenderGrid(dataset, preset, count, views, seed, epoch);
        var encoded = ImageCodec.EncodeForPath(path, pixels, height, width);
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        File.WriteAllBytes(path, encoded);
        return (height, width);
    }

    /// <summary>The grid as interleaved RGB bytes.</summary>
    public static (byte[] Pixels, int Height, int Width) RenderGrid(IImageDataset dataset, AugmentationPreset preset, int count, int views, ulong seed, int epoch = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(views, 1);
        if (dataset.Count == 0)
        {
            throw new ArgumentException($"{dataset.Name} has no images to preview", nameof(dataset));
        }
        count = Math.Min(count, dataset.Count);
        var shape = dataset.Shape;
        var side = Math.Max(Math.Max(shape.Height, shape.Width), preset.Views.Max(v => v.Size));
        var zoom = Math.Max(1, (int)Math.Ceiling(96.0 / side));
        var cell = side * zoom;
        var columns = 1 + views;
        // An extra gap after the originals' column sets them apart from the views.
        var width = Gap + (columns * (cell + Gap)) + Gap;
        var height = Gap + (count * (cell + Gap));
        var grid = new byte[height * width * 3];
        Array.Fill(grid, Background);
        var augmenter = new ViewAugmenter();
        var maxView = preset.Views.Max(v => v.Size);
        var viewBytes = new byte[maxView * maxView * shape.Channels];
        var planes = new float[maxView * maxView * shape.Channels];
        for (var row = 0; row < count; row++)
        {
            // Golden-ratio stride: spread over the set without landing on one class of a set ordered by class or cycling through them.
            var index = (int)(((row * 0.6180339887498949) % 1.0) * dataset.Count);
            var image = dataset.GetImage(index);
            var top = Gap + (row * (cell + Gap));
            Blit(grid, width, top, Gap, cell, image, shape, zoom);
            for (var v = 0; v < views; v++)
            {
                var recipe = preset.Views[v % preset.ViewCount];
                var viewShape = new ImageShape(recipe.Size, recipe.Size, shape.Channels);
                var bytes = viewBytes.AsSpan(0, viewShape.Bytes);
                var rng = SampleRandom.ForView(seed, epoch, index, v);
                augmenter.Augment(image, shape, recipe, ref rng, planes.AsSpan(0, viewShape.Bytes));
                ImageOps.ToBytes(planes.AsSpan(0, viewShape.Bytes), viewShape, bytes);
                Blit(grid, width, top, (2 * Gap) + ((v + 1) * (cell + Gap)), cell, bytes, viewShape, zoom);
            }
        }
        return (grid, height, width);
    }

    /// <summary>Draws an image enlarged by <paramref name="zoom"/>, centred in the cell at (top, left); gray becomes RGB.</summary>
    private static void Blit(byte[] grid, int gridWidth, int top, int left, int cell, ReadOnlySpan<byte> image, ImageShape shape, int zoom)
    {
        var offsetY = top + ((cell - (shape.Height * zoom)) / 2);
        var offsetX = left + ((cell - (shape.Width * zoom)) / 2);
        var c = shape.Channels;
        for (var y = 0; y < shape.Height * zoom; y++)
        {
            var sy = y / zoom;
            for (var x = 0; x < shape.Width * zoom; x++)
            {
                var p = ((sy * shape.Width) + (x / zoom)) * c;
                var o = (((offsetY + y) * gridWidth) + offsetX + x) * 3;
                grid[o] = image[p];
                grid[o + 1] = image[c >= 3 ? p + 1 : p];
                grid[o + 2] = image[c >= 3 ? p + 2 : p];
            }
        }
    }
}
