namespace NativeContrast.Data;

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>A crop rectangle in pixels: rows [Top, Top + Height), columns [Left, Left + Width).</summary>
public readonly record struct CropBox(int Top, int Left, int Height, int Width);

/// <summary>
/// The image transforms of contrastive recipes on uint8 HxWxC images (C = 1 or 3), written after torchvision's
/// transforms/_functional_tensor.py so that recipes carry over value for value: every operation computes in float32
/// in torchvision's order and converts back to uint8 the way torchvision does (truncation after a blend or a
/// colour-space round trip, round-half-even after a resize or a blur). Where torchvision's result depends on the
/// summation order of a convolution (blur, resize) the values agree up to that rounding.
/// </summary>
public static class ImageOps
{
    /// <summary>torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma as torchvision spells them, 0.2989 not 0.299).</summary>
    public const float LumaR = 0.2989f, LumaG = 0.587f, LumaB = 0.114f;

    /// <summary>
    /// RandomResizedCrop.get_params: ten tries at an area fraction in [scaleMin, scaleMax] and a log-uniform aspect
    /// ratio in [ratioMin, ratioMax] that fits inside the image, else the central crop with the aspect ratio clamped.
    /// </summary>
    public static CropBox SampleResizedCrop(int height, int width, float scaleMin, float scaleMax, float ratioMin, float ratioMax, ref SampleRandom rng)
    {
        var area = (double)height * width;
        float logMin = MathF.Log(ratioMin), logMax = MathF.Log(ratioMax);
        for (var attempt = 0; attempt < 10; attempt++)
        {
            var targetArea = area * rng.Uniform(scaleMin, scaleMax);
            double aspect = MathF.Exp(rng.Uniform(logMin, logMax));
            // Python's round() rounds half to even, as Math.Round does.
            var w = (int)Math.Round(Math.Sqrt(targetArea * aspect));
            var h = (int)Math.Round(Math.Sqrt(targetArea / aspect));
            if (w > 0 && w <= width && h > 0 && h <= height)
            {
                var top = rng.NextInt(height - h + 1);
                var left = rng.NextInt(width - w + 1);
                return new CropBox(top, left, h, w);
            }
        }
        var inRatio = (double)width / height;
        int cw, ch;
        if (inRatio < ratioMin)
        {
            cw = width;
            ch = (int)Math.Round(cw / (double)ratioMin);
        }
        else if (inRatio > ratioMax)
        {
            ch = height;
            cw = (int)Math.Round(ch * (double)ratioMax);
        }
        else
        {
            (cw, ch) = (width, height);
        }
        return new CropBox((height - ch) / 2, (width - cw) / 2, ch, cw);
    }

    /// <summary>
    /// resized_crop with bilinear interpolation and antialias=True (torchvision's default): crops <paramref name="box"/>
    /// and resamples it to outHeight x outWidth with a triangle filter widened by the scale factor when shrinking
    /// (PIL's and torch's _upsample_bilinear2d_aa), then rounds half to even. <paramref name="flip"/> mirrors the
    /// result horizontally (hflip), fused into the write.
    /// </summary>
    public static void ResizedCrop(ReadOnlySpan<byte> source, ImageShape shape, CropBox box, Span<byte> destination, int outHeight, int outWidth, bool flip, ResampleScratch scratch)
    {
        var c = shape.Channels;
        if (box.Top < 0 || box.Left < 0 || box.Height <= 0 || box.Width <= 0 || box.Top + box.Height > shape.Height || box.Left + box.Width > shape.Width)
        {
            throw new ArgumentOutOfRangeException(nameof(box), $"crop {box} is outside a {shape} image");
        }
        CheckImage(source, shape, nameof(source));
        CheckImage(destination, new ImageShape(outHeight, outWidth, c), nameof(destination));
        var columns = scratch.Columns.Build(box.Width, outWidth);
        var rows = scratch.Rows.Build(box.Height, outHeight);
        var rowLength = outWidth * c;
        var temp = scratch.Floats(box.Height * rowLength, 0);

        // Horizontal pass over the crop's rows into float32, then vertical into the output (torch resamples width first).
        for (var r = 0; r < box.Height; r++)
        {
            var src = source.Slice(((box.Top + r) * shape.Width + box.Left) * c, box.Width * c);
            var dst = temp.Slice(r * rowLength, rowLength);
            for (var x = 0; x < outWidth; x++)
            {
                var start = columns.Start[x];
                var taps = columns.Count[x];
                var weights = columns.Weights.AsSpan(x * columns.Stride, taps);
                var o = (flip ? outWidth - 1 - x : x) * c;
                if (c == 3)
                {
                    float a0 = 0, a1 = 0, a2 = 0;
                    var p = start * 3;
                    for (var k = 0; k < weights.Length; k++, p += 3)
                    {
                        var w = weights[k];
                        a0 += w * src[p];
                        a1 += w * src[p + 1];
                        a2 += w * src[p + 2];
                    }
                    dst[o] = a0;
                    dst[o + 1] = a1;
                    dst[o + 2] = a2;
                }
                else
                {
                    for (var ch = 0; ch < c; ch++)
                    {
                        float a = 0;
                        for (var k = 0; k < weights.Length; k++)
                        {
                            a += weights[k] * src[((start + k) * c) + ch];
                        }
                        dst[o + ch] = a;
                    }
                }
            }
        }
        var acc = scratch.Floats(rowLength, 1);
        for (var y = 0; y < outHeight; y++)
        {
            var start = rows.Start[y];
            var weights = rows.Weights.AsSpan(y * rows.Stride, rows.Count[y]);
            TensorPrimitives.Multiply(temp.Slice(start * rowLength, rowLength), weights[0], acc);
            for (var k = 1; k < weights.Length; k++)
            {
                TensorPrimitives.MultiplyAdd(temp.Slice((start + k) * rowLength, rowLength), weights[k], acc, acc);
            }
            RoundToBytes(acc, destination.Slice(y * rowLength, rowLength));
        }
    }

    /// <summary>hflip: mirrors each row.</summary>
    public static void HorizontalFlip(Span<byte> image, ImageShape shape)
    {
        CheckImage(image, shape, nameof(image));
        var c = shape.Channels;
        for (var y = 0; y < shape.Height; y++)
        {
            var row = image.Slice(y * shape.Width * c, shape.Width * c);
            for (int a = 0, b = shape.Width - 1; a < b; a++, b--)
            {
                for (var ch = 0; ch < c; ch++)
                {
                    (row[(a * c) + ch], row[(b * c) + ch]) = (row[(b * c) + ch], row[(a * c) + ch]);
                }
            }
        }
    }

    /// <summary>adjust_brightness: blend with black, x·f clamped to [0, 255] and truncated.</summary>
    public static void AdjustBrightness(Span<byte> image, float factor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(factor);
        Span<byte> lut = stackalloc byte[256];
        var other = (float)(1.0 - factor);
        for (var v = 0; v < 256; v++)
        {
            lut[v] = ToByteTruncated((factor * v) + (other * 0f));
        }
        ApplyLut(image, lut);
    }

    /// <summary>
    /// adjust_contrast: blend with the mean of the (uint8-truncated) grayscale image, x·f + (1 − f)·mean,
    /// clamped and truncated. A one-channel image blends with its own mean.
    /// </summary>
    public static void AdjustContrast(Span<byte> image, int channels, float factor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(factor);
        long sum = 0;
        if (channels == 3)
        {
            for (var p = 0; p < image.Length; p += 3)
            {
                sum += Gray(image[p], image[p + 1], image[p + 2]);
            }
        }
        else
        {
            foreach (var v in image)
            {
                sum += v;
            }
        }
        // torch.mean of integers: exact in float32 below 2^24, divided once in float32.
        var pixels = image.Length / channels;
        var mean = (float)sum / pixels;
        var other = (float)(1.0 - factor) * mean;
        Span<byte> lut = stackalloc byte[256];
        for (var v = 0; v < 256; v++)
        {
            lut[v] = ToByteTruncated((factor * v) + other);
        }
        ApplyLut(image, lut);
    }

    /// <summary>adjust_saturation: blend each pixel with its truncated gray value; a one-channel image is unchanged.</summary>
    public static void AdjustSaturation(Span<byte> image, int channels, float factor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(factor);
        if (channels != 3)
        {
            return;
        }
        var other = (float)(1.0 - factor);
        for (var p = 0; p < image.Length; p += 3)
        {
            var g = other * Gray(image[p], image[p + 1], image[p + 2]);
            image[p] = ToByteTruncated((factor * image[p]) + g);
            image[p + 1] = ToByteTruncated((factor * image[p + 1]) + g);
            image[p + 2] = ToByteTruncated((factor * image[p + 2]) + g);
        }
    }

    /// <summary>
    /// adjust_hue: x/255 → HSV (torchvision's _rgb2hsv), h ← (h + factor) mod 1, HSV → RGB (_hsv2rgb), then
    /// convert_image_dtype back to uint8 (·255.999, truncated). One-channel images are unchanged.
    /// </summary>
    public static void AdjustHue(Span<byte> image, int channels, float hueFactor)
    {
        if (hueFactor is < -0.5f or > 0.5f)
        {
            throw new ArgumentOutOfRangeException(nameof(hueFactor), hueFactor, "hue factor must be in [-0.5, 0.5]");
        }
        if (channels != 3)
        {
            return;
        }
        HueKernels.Shift(image, hueFactor);
    }

    /// <summary>rgb_to_grayscale with three output channels: each pixel becomes its truncated luma.</summary>
    public static void Grayscale(Span<byte> image, int channels)
    {
        if (channels != 3)
        {
            return;
        }
        for (var p = 0; p < image.Length; p += 3)
        {
            var g = Gray(image[p], image[p + 1], image[p + 2]);
            image[p] = image[p + 1] = image[p + 2] = g;
        }
    }

    /// <summary>solarize: values at or above the threshold are inverted (255 − x).</summary>
    public static void Solarize(Span<byte> image, int threshold = 128)
    {
        Span<byte> lut = stackalloc byte[256];
        for (var v = 0; v < 256; v++)
        {
            lut[v] = (byte)(v >= threshold ? 255 - v : v);
        }
        ApplyLut(image, lut);
    }

    /// <summary>torchvision's _get_gaussian_kernel1d in float32: exp(−x²/2σ²) on x = −(k−1)/2 … (k−1)/2, normalised.</summary>
    public static void GaussianKernel(int kernelSize, float sigma, Span<float> kernel)
    {
        if (kernelSize <= 0 || kernelSize % 2 == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(kernelSize), kernelSize, "the blur kernel size must be odd and positive");
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sigma);
        var half = (kernelSize - 1) * 0.5f;
        float sum = 0;
        for (var i = 0; i < kernelSize; i++)
        {
            var x = (-half + i) / sigma;
            kernel[i] = MathF.Exp(-0.5f * (x * x));
            sum += kernel[i];
        }
        for (var i = 0; i < kernelSize; i++)
        {
            kernel[i] /= sum;
        }
    }

    /// <summary>
    /// gaussian_blur: the separable Gaussian of <paramref name="kernelSize"/> taps and <paramref name="sigma"/> over rows
    /// then columns with reflect padding (mirrored without repeating the edge), rounded half to even.
    /// </summary>
    public static void GaussianBlur(Span<byte> image, ImageShape shape, int kernelSize, float sigma, ResampleScratch scratch)
    {
        CheckImage(image, shape, nameof(image));
        var (h, w, c) = (shape.Height, shape.Width, shape.Channels);
        Span<float> kernel = stackalloc float[kernelSize];
        GaussianKernel(kernelSize, sigma, kernel);
        var r = kernelSize / 2;
        var rowLength = w * c;
        var padded = scratch.Floats((w + (2 * r)) * c, 0);
        var temp = scratch.Floats(h * rowLength, 1);
        var acc = scratch.Floats(rowLength, 2);
        for (var y = 0; y < h; y++)
        {
            var row = image.Slice(y * rowLength, rowLength);
            for (var x = -r; x < w + r; x++)
            {
                var s = Reflect(x, w) * c;
                var d = (x + r) * c;
                for (var ch = 0; ch < c; ch++)
                {
                    padded[d + ch] = row[s + ch];
                }
            }
            var dst = temp.Slice(y * rowLength, rowLength);
            TensorPrimitives.Multiply(padded[..rowLength], kernel[0], dst);
            for (var k = 1; k < kernelSize; k++)
            {
                TensorPrimitives.MultiplyAdd(padded.Slice(k * c, rowLength), kernel[k], dst, dst);
            }
        }
        for (var y = 0; y < h; y++)
        {
            TensorPrimitives.Multiply(temp.Slice(Reflect(y - r, h) * rowLength, rowLength), kernel[0], acc);
            for (var k = 1; k < kernelSize; k++)
            {
                TensorPrimitives.MultiplyAdd(temp.Slice(Reflect(y - r + k, h) * rowLength, rowLength), kernel[k], acc, acc);
            }
            RoundToBytes(acc, image.Slice(y * rowLength, rowLength));
        }
    }

    /// <summary>A 256-entry table per channel mapping a uint8 value to Normalize(ToTensor(x)) = (x/255 − mean)/std in float32.</summary>
    public static float[] NormalizeTable(ChannelStats stats)
    {
        var c = stats.Channels;
        var table = new float[c * 256];
        for (var ch = 0; ch < c; ch++)
        {
            for (var v = 0; v < 256; v++)
            {
                table[(ch * 256) + v] = ((v / 255f) - stats.Mean[ch]) / stats.Std[ch];
            }
        }
        return table;
    }

    /// <summary>Writes an HxWxC uint8 image as normalised float32 CHW planes through <see cref="NormalizeTable"/>.</summary>
    public static void NormalizeToPlanes(ReadOnlySpan<byte> image, ImageShape shape, ReadOnlySpan<float> table, Span<float> planes)
    {
        CheckImage(image, shape, nameof(image));
        var c = shape.Channels;
        var plane = shape.Height * shape.Width;
        if (planes.Length != image.Length || table.Length != c * 256)
        {
            throw new ArgumentException($"{planes.Length} floats and a table of {table.Length} do not fit a {shape} image", nameof(planes));
        }
        if (c == 3)
        {
            var t0 = table[..256];
            var t1 = table.Slice(256, 256);
            var t2 = table.Slice(512, 256);
            var p0 = planes[..plane];
            var p1 = planes.Slice(plane, plane);
            var p2 = planes.Slice(2 * plane, plane);
            for (int i = 0, p = 0; i < plane; i++, p += 3)
            {
                p0[i] = t0[image[p]];
                p1[i] = t1[image[p + 1]];
                p2[i] = t2[image[p + 2]];
            }
            return;
        }
        for (var ch = 0; ch < c; ch++)
        {
            var t = table.Slice(ch * 256, 256);
            var dst = planes.Slice(ch * plane, plane);
            for (var i = 0; i < plane; i++)
            {
                dst[i] = t[image[(i * c) + ch]];
            }
        }
    }

    /// <summary>Luma truncated to uint8, in torchvision's float32 order ((0.2989·r + 0.587·g) + 0.114·b).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Gray(byte r, byte g, byte b) => (byte)((LumaR * r) + (LumaG * g) + (LumaB * b));

    /// <summary>clamp(x, 0, 255) then a C-style cast (truncation), as torch's .clamp(0, 255).to(uint8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte ToByteTruncated(float x) => (byte)Math.Clamp(x, 0f, 255f);

    /// <summary>The reflect-padding source index of <paramref name="i"/> in [0, n) (…, 2, 1, [0, 1, …, n−1], n−2, …).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Reflect(int i, int n)
    {
        if (n == 1)
        {
            return 0;
        }
        var period = 2 * (n - 1);
        i %= period;
        if (i < 0)
        {
            i += period;
        }
        return i < n ? i : period - i;
    }

    /// <summary>round half to even, clamp to [0, 255] (torch.round then .to(uint8) on in-range values).</summary>
    public static void RoundToBytes(ReadOnlySpan<float> values, Span<byte> destination)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var zero = Vector256<float>.Zero;
            var max = Vector256.Create(255f);
            for (; i + 16 <= values.Length; i += 16)
            {
                var a = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(Vector256.Round(Vector256.Create(values.Slice(i, 8))), zero), max));
                var b = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(Vector256.Round(Vector256.Create(values.Slice(i + 8, 8))), zero), max));
                var shorts = Vector256.Narrow(a, b).AsUInt16();
                Vector256.Narrow(shorts, shorts).GetLower().CopyTo(destination.Slice(i, 16));
            }
        }
        for (; i < values.Length; i++)
        {
            destination[i] = (byte)Math.Clamp(MathF.Round(values[i]), 0f, 255f);
        }
    }

    private static void ApplyLut(Span<byte> image, ReadOnlySpan<byte> lut)
    {
        for (var i = 0; i < image.Length; i++)
        {
            image[i] = lut[image[i]];
        }
    }

    private static void CheckImage(ReadOnlySpan<byte> image, ImageShape shape, string name)
    {
        if (image.Length != shape.Bytes)
        {
            throw new ArgumentException($"{name} has {image.Length} bytes, a {shape} image has {shape.Bytes}", name);
        }
    }
}

/// <summary>Resampling weights of one axis (torch's _compute_indices_weights_aa for the bilinear filter).</summary>
public sealed class ResampleAxis
{
    private int _inSize = -1, _outSize = -1;

    public int[] Start { get; private set; } = [];

    public int[] Count { get; private set; } = [];

    public float[] Weights { get; private set; } = [];

    /// <summary>Weights per output index, padded to this many.</summary>
    public int Stride { get; private set; }

    public ResampleAxis Build(int inSize, int outSize)
    {
        if (inSize == _inSize && outSize == _outSize)
        {
            return this;
        }
        var scale = (double)inSize / outSize;
        var support = scale >= 1.0 ? scale : 1.0;
        var invScale = scale >= 1.0 ? 1.0 / scale : 1.0;
        Stride = (int)Math.Ceiling(support) * 2 + 1;
        if (Start.Length < outSize)
        {
            Start = new int[outSize];
            Count = new int[outSize];
        }
        if (Weights.Length < outSize * Stride)
        {
            Weights = new float[outSize * Stride];
        }
        Span<double> w = stackalloc double[Stride];
        for (var i = 0; i < outSize; i++)
        {
            var center = scale * (i + 0.5);
            var min = Math.Max((int)(center - support + 0.5), 0);
            var count = Math.Min((int)(center + support + 0.5), inSize) - min;
            double total = 0;
            for (var j = 0; j < count; j++)
            {
                var t = Math.Abs((j + min - center + 0.5) * invScale);
                w[j] = t < 1.0 ? 1.0 - t : 0.0;
                total += w[j];
            }
            Start[i] = min;
            Count[i] = count;
            for (var j = 0; j < count; j++)
            {
                Weights[(i * Stride) + j] = (float)(total != 0 ? w[j] / total : 0);
            }
        }
        (_inSize, _outSize) = (inSize, outSize);
        return this;
    }
}

/// <summary>Per-thread buffers reused by the resampling and blur passes, so a view allocates nothing once warm.</summary>
public sealed class ResampleScratch
{
    private readonly float[][] _floats = [[], [], []];

    public ResampleAxis Rows { get; } = new();

    public ResampleAxis Columns { get; } = new();

    /// <summary>Float buffer <paramref name="slot"/> (0..2) with at least <paramref name="length"/> elements.</summary>
    public Span<float> Floats(int length, int slot)
    {
        if (_floats[slot].Length < length)
        {
            _floats[slot] = new float[Math.Max(length, _floats[slot].Length * 2)];
        }
        return _floats[slot].AsSpan(0, length);
    }
}
