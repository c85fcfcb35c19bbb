namespace NativeContrast.Data;

using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.PixelFormats;

/// <summary>
/// Image files to and from interleaved 8-bit RGB, through SixLabors.ImageSharp (managed, so image folders and
/// previews work on every OS without a system library). Decoding reads PNG, JPEG, BMP, GIF (first frame), TGA, PBM/PGM/PPM,
/// TIFF and WebP; alpha is dropped and EXIF orientation is ignored, as torchvision's PIL loader does. PNG is exact; JPEG
/// decoders disagree by a few levels (IDCT rounding) and, on chroma-subsampled (4:2:0) files, by more at colour edges,
/// where ImageSharp upsamples chroma differently from libjpeg's and stb_image's triangle filter.
/// </summary>
public static class ImageCodec
{
    /// <summary>The decoder and its version, part of an image cache's fingerprint.</summary>
    public static readonly string DecoderName = $"ImageSharp {typeof(Image).Assembly.GetName().Version}";

    private static readonly PngEncoder Png = new() { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit8 };

    /// <summary>Decodes a file held in memory into height·width·3 RGB bytes.</summary>
    /// <returns>The pixels, or null with <paramref name="error"/> saying why when the bytes are not a decodable image.</returns>
    public static byte[]? DecodeRgb(ReadOnlySpan<byte> encoded, out int height, out int width, out string? error)
    {
        height = width = 0;
        try
        {
            using var image = Image.Load<Rgb24>(encoded);
            var pixels = new byte[checked(image.Height * image.Width * 3)];
            image.CopyPixelDataTo(pixels);
            (height, width, error) = (image.Height, image.Width, null);
            return pixels;
        }
        catch (UnknownImageFormatException)
        {
            error = "not an image format ImageSharp decodes (PNG, JPEG, BMP, GIF, TGA, PBM/PGM/PPM, TIFF, WebP)";
            return null;
        }
        catch (Exception e) when (e is ImageFormatException or InvalidMemoryOperationException or NotSupportedException)
        {
            // One line: the reason is listed beside the file name (and stored in the cache's skip list).
            error = e.Message.ReplaceLineEndings(" ").Trim();
            return null;
        }
    }

    /// <summary>Encodes height·width·3 RGB bytes as an 8-bit RGB PNG file's bytes (lossless).</summary>
    public static byte[] EncodePng(ReadOnlySpan<byte> rgb, int height, int width) => Encode(rgb, height, width, Png);

    /// <summary>Encodes height·width·3 RGB bytes as a baseline JPEG file's bytes at <paramref name="quality"/> (1 to 100).</summary>
    public static byte[] EncodeJpeg(ReadOnlySpan<byte> rgb, int height, int width, int quality = 90)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(quality, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(quality, 100);
        return Encode(rgb, height, width, new JpegEncoder { Quality = quality });
    }

    /// <summary>PNG unless the path ends in .jpg or .jpeg (case-insensitive).</summary>
    public static byte[] EncodeForPath(string path, ReadOnlySpan<byte> rgb, int height, int width) =>
        Path.GetExtension(path).ToLowerInvariant() is ".jpg" or ".jpeg" ? EncodeJpeg(rgb, height, width) : EncodePng(rgb, height, width);

    private static byte[] Encode(ReadOnlySpan<byte> rgb, int height, int width, SixLabors.ImageSharp.Formats.IImageEncoder encoder)
    {
        if (height <= 0 || width <= 0 || rgb.Length != (long)height * width * 3)
        {
            throw new ArgumentException($"{rgb.Length} bytes are not a {height}x{width} RGB image ({(long)height * width * 3} bytes)", nameof(rgb));
        }
        using var image = Image.LoadPixelData<Rgb24>(rgb, width, height);
        using var stream = new MemoryStream();
        image.Save(stream, encoder);
        return stream.ToArray();
    }
}
