namespace NativeContrast.Data;

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>A crop rectangle in pixels: rows [Top, Top + Height), columns [Left, Left + Width).</summary>
public readonly record struct CropBox(int Top, int Left, int Height, int Width);

/// <summary>
/// The image transforms of contrastive recipes, written after torchvision's transforms/_functional_tensor.py so
/// that recipes carry over value for value. They work on a view held as float32 planes C x H x W whose values are
/// the integers 0..255 of torchvision's uint8 CHW tensor: every operation computes in float32 in torchvision's order
/// and converts back to integers the way torchvision's uint8 path does (truncation after a blend or a colour-space
/// round trip, round-half-even after a resize or a blur), so the planes hold exactly what the uint8 tensor would.
/// Keeping them as floats lets every step run vectorised and lets the last step, Normalize, write the loader's
/// float32 NCHW batch in place. Blur and resize agree with torchvision up to the summation order of their sums.
/// C is 1 (gray) or 3 (RGB).
/// </summary>
public static class ImageOps
{
    /// <summary>torchvision's rgb_to_grayscale weights (it spells ITU-R 601-2's 0.299 as 0.2989).</summary>
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
    /// resized_crop with bilinear interpolation and antialias=True (torchvision's default) from an interleaved
    /// HxWxC uint8 image into planes C x outHeight x outWidth: crops <paramref name="box"/>, resamples it with a
    /// triangle filter widened by the scale factor when shrinking (torch's _upsample_bilinear2d_aa, PIL's filter),
    /// width first then height, and rounds half to even. <paramref name="flip"/> mirrors the result (hflip), fused
    /// into the write.
    /// </summary>
    public static void ResizedCrop(ReadOnlySpan<byte> source, ImageShape shape, CropBox box, Span<float> planes, int outHeight, int outWidth, bool flip, ResampleScratch scratch)
    {
        var c = shape.Channels;
        if (box.Top < 0 || box.Left < 0 || box.Height <= 0 || box.Width <= 0 || box.Top + box.Height > shape.Height || box.Left + box.Width > shape.Width)
        {
            throw new ArgumentOutOfRangeException(nameof(box), $"crop {box} is outside a {shape} image");
        }
        CheckLength(source.Length, shape.Bytes, nameof(source), shape);
        var outPlane = outHeight * outWidth;
        CheckLength(planes.Length, c * outPlane, nameof(planes), new ImageShape(outHeight, outWidth, c));
        var columns = scratch.Columns.Build(box.Width, outWidth);
        var rows = scratch.Rows.Build(box.Height, outHeight);

        // Width pass over the crop's rows into float32 planes c x cropHeight x outWidth.
        var tempPlane = box.Height * outWidth;
        var temp = scratch.Floats(c * tempPlane, 0);
        ref var weights = ref MemoryMarshal.GetArrayDataReference(columns.Weights);
        ref var starts = ref MemoryMarshal.GetArrayDataReference(columns.Start);
        ref var counts = ref MemoryMarshal.GetArrayDataReference(columns.Count);
        ref var t = ref MemoryMarshal.GetReference(temp);
        for (var r = 0; r < box.Height; r++)
        {
            ref var src = ref Unsafe.AsRef(in source[((box.Top + r) * shape.Width + box.Left) * c]);
            for (var x = 0; x < outWidth; x++)
            {
                ref var w = ref Unsafe.Add(ref weights, x * columns.Stride);
                var taps = Unsafe.Add(ref counts, x);
                var p = Unsafe.Add(ref starts, x) * c;
                var o = (r * outWidth) + (flip ? outWidth - 1 - x : x);
                if (c == 3)
                {
                    float a0 = 0, a1 = 0, a2 = 0;
                    for (var k = 0; k < taps; k++, p += 3)
                    {
                        var wk = Unsafe.Add(ref w, k);
                        a0 += wk * Unsafe.Add(ref src, p);
                        a1 += wk * Unsafe.Add(ref src, p + 1);
                        a2 += wk * Unsafe.Add(ref src, p + 2);
                    }
                    Unsafe.Add(ref t, o) = a0;
                    Unsafe.Add(ref t, tempPlane + o) = a1;
                    Unsafe.Add(ref t, (2 * tempPlane) + o) = a2;
                }
                else
                {
                    for (var ch = 0; ch < c; ch++)
                    {
                        float a = 0;
                        for (var k = 0; k < taps; k++)
                        {
                            a += Unsafe.Add(ref w, k) * Unsafe.Add(ref src, p + (k * c) + ch);
                        }
                        Unsafe.Add(ref t, (ch * tempPlane) + o) = a;
                    }
                }
            }
        }

        // Height pass, eight columns at a time with the sum in a register.
        for (var ch = 0; ch < c; ch++)
        {
            var input = temp.Slice(ch * tempPlane, tempPlane);
            var output = planes.Slice(ch * outPlane, outPlane);
            for (var y = 0; y < outHeight; y++)
            {
                WeightedRows(input[(rows.Start[y] * outWidth)..], outWidth, rows.Weights.AsSpan(y * rows.Stride, rows.Count[y]), output.Slice(y * outWidth, outWidth));
            }
        }
        RoundClamp(planes);
    }

    /// <summary>output[x] = Σ_k weights[k]·input[k·stride + x]: a weighted sum of consecutive rows.</summary>
    private static void WeightedRows(ReadOnlySpan<float> input, int stride, ReadOnlySpan<float> weights, Span<float> output)
    {
        ref var source = ref MemoryMarshal.GetReference(input);
        var x = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; x <= output.Length - 8; x += 8)
            {
                var acc = Vector256.Create(weights[0]) * Vector256.LoadUnsafe(ref source, (nuint)x);
                for (var k = 1; k < weights.Length; k++)
                {
                    acc += Vector256.Create(weights[k]) * Vector256.LoadUnsafe(ref source, (nuint)((k * stride) + x));
                }
                acc.StoreUnsafe(ref MemoryMarshal.GetReference(output), (nuint)x);
            }
        }
        for (; x < output.Length; x++)
        {
            var acc = weights[0] * input[x];
            for (var k = 1; k < weights.Length; k++)
            {
                acc += weights[k] * input[(k * stride) + x];
            }
            output[x] = acc;
        }
    }

    /// <summary>hflip: mirrors each row of each plane.</summary>
    public static void HorizontalFlip(Span<float> planes, int width)
    {
        for (var row = 0; row + width <= planes.Length; row += width)
        {
            planes.Slice(row, width).Reverse();
        }
    }

    /// <summary>adjust_brightness: blend with black, x·f clamped to [0, 255] and truncated.</summary>
    public static void AdjustBrightness(Span<float> planes, float factor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(factor);
        Blend(planes, factor, 0f);
    }

    /// <summary>
    /// adjust_contrast: blend with the mean of the uint8 grayscale image (truncated luma for RGB, the image
    /// itself for gray), x·f + (1 − f)·mean, clamped and truncated.
    /// </summary>
    public static void AdjustContrast(Span<float> planes, int channels, float factor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(factor);
        var plane = planes.Length / channels;
        double sum = 0;
        if (channels == 3)
        {
            var r = planes[..plane];
            var g = planes.Slice(plane, plane);
            var b = planes.Slice(2 * plane, plane);
            var i = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var acc = Vector256<float>.Zero;
                for (; i <= plane - 8; i += 8)
                {
                    // Integer partial sums below 2^24 are exact in float32; flush into double before they could round.
                    acc += Gray(Load(r, i), Load(g, i), Load(b, i));
                    if ((i + 8) % 32768 == 0)
                    {
                        sum += Vector256.Sum(acc);
                        acc = Vector256<float>.Zero;
                    }
                }
                sum += Vector256.Sum(acc);
            }
            for (; i < plane; i++)
            {
                sum += Gray(r[i], g[i], b[i]);
            }
        }
        else
        {
            foreach (var v in planes)
            {
                sum += v;
            }
        }
        // torch.mean in float32 of integer values: the exact sum, divided once.
        var mean = (float)sum / plane;
        Blend(planes, factor, (float)(1.0 - factor) * mean);
    }

    /// <summary>adjust_saturation: blend each pixel with its truncated luma; a gray image is unchanged.</summary>
    public static void AdjustSaturation(Span<float> planes, int channels, float factor)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(factor);
        if (channels != 3)
        {
            return;
        }
        var plane = planes.Length / 3;
        var r = planes[..plane];
        var g = planes.Slice(plane, plane);
        var b = planes.Slice(2 * plane, plane);
        var other = (float)(1.0 - factor);
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var f = Vector256.Create(factor);
            var o = Vector256.Create(other);
            for (; i <= plane - 8; i += 8)
            {
                var vr = Load(r, i);
                var vg = Load(g, i);
                var vb = Load(b, i);
                var gray = o * Gray(vr, vg, vb);
                Store(r, i, TruncateClamp((f * vr) + gray));
                Store(g, i, TruncateClamp((f * vg) + gray));
                Store(b, i, TruncateClamp((f * vb) + gray));
            }
        }
        for (; i < plane; i++)
        {
            var gray = other * Gray(r[i], g[i], b[i]);
            r[i] = TruncateClamp((factor * r[i]) + gray);
            g[i] = TruncateClamp((factor * g[i]) + gray);
            b[i] = TruncateClamp((factor * b[i]) + gray);
        }
    }

    /// <summary>
    /// adjust_hue: x/255 → HSV (_rgb2hsv), h ← (h + factor) mod 1, HSV → RGB (_hsv2rgb), back to uint8 as
    /// convert_image_dtype does (·255.999, truncated). A gray image is unchanged.
    /// </summary>
    public static void AdjustHue(Span<float> planes, int channels, float hueFactor)
    {
        if (hueFactor is < -0.5f or > 0.5f)
        {
            throw new ArgumentOutOfRangeException(nameof(hueFactor), hueFactor, "hue factor must be in [-0.5, 0.5]");
        }
        if (channels != 3)
        {
            return;
        }
        var plane = planes.Length / 3;
        HueKernels.Shift(planes[..plane], planes.Slice(plane, plane), planes.Slice(2 * plane, plane), hueFactor);
    }

    /// <summary>rgb_to_grayscale with three output channels: each pixel becomes its truncated luma.</summary>
    public static void Grayscale(Span<float> planes, int channels)
    {
        if (channels != 3)
        {
            return;
        }
        var plane = planes.Length / 3;
        var r = planes[..plane];
        var g = planes.Slice(plane, plane);
        var b = planes.Slice(2 * plane, plane);
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= plane - 8; i += 8)
            {
                var gray = Gray(Load(r, i), Load(g, i), Load(b, i));
                Store(r, i, gray);
                Store(g, i, gray);
                Store(b, i, gray);
            }
        }
        for (; i < plane; i++)
        {
            r[i] = g[i] = b[i] = Gray(r[i], g[i], b[i]);
        }
    }

    /// <summary>solarize: values at or above the threshold are inverted (255 − x).</summary>
    public static void Solarize(Span<float> planes, float threshold = 128)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var t = Vector256.Create(threshold);
            var max = Vector256.Create(255f);
            for (; i <= planes.Length - 8; i += 8)
            {
                var x = Load(planes, i);
                Store(planes, i, Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, t), max - x, x));
            }
        }
        for (; i < planes.Length; i++)
        {
            planes[i] = planes[i] >= threshold ? 255f - planes[i] : planes[i];
        }
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
    /// gaussian_blur: the Gaussian of <paramref name="kernelSize"/> taps and <paramref name="sigma"/> along rows then
    /// columns (separable; torchvision convolves with the outer product) with reflect padding (mirrored without
    /// repeating the edge), rounded half to even. Outer taps whose normalised weight is below 1e-9 are skipped: they
    /// move a sum by less than float32's own rounding of it (about 1.5e-5 at 255).
    /// </summary>
    public static void GaussianBlur(Span<float> planes, int channels, int height, int width, int kernelSize, float sigma, ResampleScratch scratch)
    {
        var plane = height * width;
        CheckLength(planes.Length, channels * plane, nameof(planes), new ImageShape(height, width, channels));
        Span<float> full = stackalloc float[kernelSize];
        GaussianKernel(kernelSize, sigma, full);
        var r = kernelSize / 2;
        var reach = r;
        while (reach > 0 && full[r - reach] < 1e-9f)
        {
            reach--;
        }
        var kernel = full.Slice(r - reach, (2 * reach) + 1);
        var padded = scratch.Floats(Math.Max(width, height) + (2 * reach), 0);
        var temp = scratch.Floats(plane, 1);
        var rows = scratch.Floats(plane + (2 * reach * width), 2);
        for (var ch = 0; ch < channels; ch++)
        {
            var image = planes.Slice(ch * plane, plane);
            for (var y = 0; y < height; y++)
            {
                var row = image.Slice(y * width, width);
                row.CopyTo(padded[reach..]);
                for (var k = 1; k <= reach; k++)
                {
                    padded[reach - k] = row[Reflect(-k, width)];
                    padded[reach + width - 1 + k] = row[Reflect(width - 1 + k, width)];
                }
                Convolve(padded, 1, kernel, temp.Slice(y * width, width));
            }
            // Rows padded by reflection above and below, so the column pass reads contiguous memory.
            temp.CopyTo(rows.Slice(reach * width, plane));
            for (var k = 1; k <= reach; k++)
            {
                temp.Slice(Reflect(-k, height) * width, width).CopyTo(rows.Slice((reach - k) * width, width));
                temp.Slice(Reflect(height - 1 + k, height) * width, width).CopyTo(rows.Slice((reach + height - 1 + k) * width, width));
            }
            for (var y = 0; y < height; y++)
            {
                Convolve(rows[(y * width)..], width, kernel, image.Slice(y * width, width));
            }
        }
        RoundClamp(planes);
    }

    /// <summary>
    /// output[x] = Σ_k kernel[k]·input[x + k·stride] for a symmetric kernel, eight outputs per vector with the
    /// accumulator in a register; the mirrored taps are added before their shared weight multiplies them.
    /// </summary>
    private static void Convolve(ReadOnlySpan<float> input, int stride, ReadOnlySpan<float> kernel, Span<float> output)
    {
        var half = kernel.Length / 2;
        var last = kernel.Length - 1;
        ref var source = ref MemoryMarshal.GetReference(input);
        var x = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; x <= output.Length - 8; x += 8)
            {
                var acc = Vector256.Create(kernel[half]) * Vector256.LoadUnsafe(ref source, (nuint)(x + (half * stride)));
                for (var k = 0; k < half; k++)
                {
                    var pair = Vector256.LoadUnsafe(ref source, (nuint)(x + (k * stride))) + Vector256.LoadUnsafe(ref source, (nuint)(x + ((last - k) * stride)));
                    acc += Vector256.Create(kernel[k]) * pair;
                }
                acc.StoreUnsafe(ref MemoryMarshal.GetReference(output), (nuint)x);
            }
        }
        for (; x < output.Length; x++)
        {
            var acc = kernel[half] * input[x + (half * stride)];
            for (var k = 0; k < half; k++)
            {
                acc += kernel[k] * (input[x + (k * stride)] + input[x + ((last - k) * stride)]);
            }
            output[x] = acc;
        }
    }

    /// <summary>ToTensor + Normalize in place: x ← (x/255 − mean[c]) / std[c], in torchvision's float32 order.</summary>
    public static void Normalize(Span<float> planes, ChannelStats stats)
    {
        var c = stats.Channels;
        var plane = planes.Length / c;
        for (var ch = 0; ch < c; ch++)
        {
            var p = planes.Slice(ch * plane, plane);
            TensorPrimitives.Divide(p, 255f, p);
            TensorPrimitives.Subtract(p, stats.Mean[ch], p);
            TensorPrimitives.Divide(p, stats.Std[ch], p);
        }
    }

    /// <summary>Channel planes C x H x W to interleaved H x W x C (the NHWC rows the models read).</summary>
    public static void PlanesToInterleaved(ReadOnlySpan<float> planes, int channels, Span<float> interleaved)
    {
        CheckLength(interleaved.Length, planes.Length, nameof(interleaved));
        if (channels == 1)
        {
            planes.CopyTo(interleaved);
            return;
        }
        var plane = planes.Length / channels;
        for (var ch = 0; ch < channels; ch++)
        {
            var source = planes.Slice(ch * plane, plane);
            for (var i = 0; i < plane; i++)
            {
                interleaved[(i * channels) + ch] = source[i];
            }
        }
    }

    /// <summary>
    /// The evaluation transform: interleaved HxWxC bytes to normalised floats in the same (NHWC) order,
    /// (x / 255 − mean[c]) / std[c], with the statistics of the training split whatever split the image is from.
    /// </summary>
    public static void NormalizeInterleaved(ReadOnlySpan<byte> image, ChannelStats stats, Span<float> output)
    {
        CheckLength(output.Length, image.Length, nameof(output));
        var c = stats.Channels;
        for (var i = 0; i < image.Length; i++)
        {
            // The same operations, in the same order, as Normalize on the training views.
            var ch = i % c;
            output[i] = ((image[i] / 255f) - stats.Mean[ch]) / stats.Std[ch];
        }
    }

    /// <summary>Interleaved HxWxC bytes to uint8-valued planes C x H x W.</summary>
    public static void ToPlanes(ReadOnlySpan<byte> image, ImageShape shape, Span<float> planes)
    {
        CheckLength(image.Length, shape.Bytes, nameof(image), shape);
        CheckLength(planes.Length, shape.Bytes, nameof(planes), shape);
        var c = shape.Channels;
        var plane = shape.Height * shape.Width;
        for (var ch = 0; ch < c; ch++)
        {
            var dst = planes.Slice(ch * plane, plane);
            for (var i = 0; i < plane; i++)
            {
                dst[i] = image[(i * c) + ch];
            }
        }
    }

    /// <summary>uint8-valued planes C x H x W back to interleaved HxWxC bytes (values are clamped to [0, 255]).</summary>
    public static void ToBytes(ReadOnlySpan<float> planes, ImageShape shape, Span<byte> image)
    {
        CheckLength(image.Length, shape.Bytes, nameof(image), shape);
        CheckLength(planes.Length, shape.Bytes, nameof(planes), shape);
        var c = shape.Channels;
        var plane = shape.Height * shape.Width;
        for (var ch = 0; ch < c; ch++)
        {
            var src = planes.Slice(ch * plane, plane);
            for (var i = 0; i < plane; i++)
            {
                image[(i * c) + ch] = (byte)Math.Clamp(src[i], 0f, 255f);
            }
        }
    }

    /// <summary>Truncated luma in torchvision's float32 order ((0.2989·r + 0.587·g) + 0.114·b, then .to(uint8)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Gray(float r, float g, float b) => MathF.Truncate((LumaR * r) + (LumaG * g) + (LumaB * b));

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

    /// <summary>_blend's x·f + other, clamped to [0, 255] and truncated (other = (1 − f)·second image, a constant here).</summary>
    private static void Blend(Span<float> planes, float factor, float other)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var f = Vector256.Create(factor);
            var o = Vector256.Create(other);
            for (; i <= planes.Length - 8; i += 8)
            {
                Store(planes, i, TruncateClamp((f * Load(planes, i)) + o));
            }
        }
        for (; i < planes.Length; i++)
        {
            planes[i] = TruncateClamp((factor * planes[i]) + other);
        }
    }

    /// <summary>round half to even, clamped to [0, 255] (torch.round then .to(uint8) on in-range values).</summary>
    private static void RoundClamp(Span<float> values)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var max = Vector256.Create(255f);
            for (; i <= values.Length - 8; i += 8)
            {
                Store(values, i, Vector256.Min(Vector256.Max(Vector256.Round(Load(values, i)), Vector256<float>.Zero), max));
            }
        }
        for (; i < values.Length; i++)
        {
            values[i] = Math.Clamp(MathF.Round(values[i]), 0f, 255f);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float TruncateClamp(float x) => MathF.Truncate(Math.Clamp(x, 0f, 255f));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> TruncateClamp(Vector256<float> x) =>
        Vector256.Truncate(Vector256.Min(Vector256.Max(x, Vector256<float>.Zero), Vector256.Create(255f)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Gray(Vector256<float> r, Vector256<float> g, Vector256<float> b) =>
        Vector256.Truncate((Vector256.Create(LumaR) * r) + (Vector256.Create(LumaG) * g) + (Vector256.Create(LumaB) * b));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Load(Span<float> span, int i) => Vector256.LoadUnsafe(ref MemoryMarshal.GetReference(span), (nuint)i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Store(Span<float> span, int i, Vector256<float> value) => value.StoreUnsafe(ref MemoryMarshal.GetReference(span), (nuint)i);

    private static void CheckLength(int length, int expected, string name)
    {
        if (length != expected)
        {
            throw new ArgumentException($"{name} has {length} elements, expected {expected}", name);
        }
    }

    private static void CheckLength(int length, int expected, string name, ImageShape shape)
    {
        if (length != expected)
        {
            throw new ArgumentException($"{name} has {length} elements, a {shape} image has {expected}", name);
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
        Stride = ((int)Math.Ceiling(support) * 2) + 1;
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
