namespace NativeContrast.Data;

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

/// <summary>
/// torchvision's adjust_hue on uint8-valued R, G, B planes. Each step is the float32 operation torchvision performs,
/// in its order, so the result matches bit for bit: x/255, _rgb2hsv, the hue shift with Python's modulo, _hsv2rgb,
/// and convert_image_dtype's ·(255 + 1 − 0.001) with truncation. The vector path computes the same operations
/// eight pixels at a time, replacing the two modulos by the subtractions they reduce to on their ranges.
/// </summary>
internal static class HueKernels
{
    /// <summary>float(max_val + 1.0 − eps) of convert_image_dtype.</summary>
    private const float ToByteScale = (float)(255.0 + 1.0 - 1e-3);

    public static void Shift(Span<float> red, Span<float> green, Span<float> blue, float hueFactor)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= red.Length - 8; i += 8)
            {
                var (r, g, b) = ShiftPixels(ImageOps.Load(red, i) / 255f, ImageOps.Load(green, i) / 255f, ImageOps.Load(blue, i) / 255f, hueFactor);
                ImageOps.Store(red, i, Vector256.Truncate(r * ToByteScale));
                ImageOps.Store(green, i, Vector256.Truncate(g * ToByteScale));
                ImageOps.Store(blue, i, Vector256.Truncate(b * ToByteScale));
            }
        }
        for (; i < red.Length; i++)
        {
            var (r, g, b) = ShiftPixel(red[i] / 255f, green[i] / 255f, blue[i] / 255f, hueFactor);
            red[i] = MathF.Truncate(r * ToByteScale);
            green[i] = MathF.Truncate(g * ToByteScale);
            blue[i] = MathF.Truncate(b * ToByteScale);
        }
    }

    /// <summary>One pixel in [0, 1], literally as torchvision writes it.</summary>
    public static (float R, float G, float B) ShiftPixel(float r, float g, float b, float hueFactor)
    {
        // _rgb2hsv
        var maxc = MathF.Max(MathF.Max(r, g), b);
        var minc = MathF.Min(MathF.Min(r, g), b);
        var eqc = maxc == minc;
        var cr = maxc - minc;
        var s = cr / (eqc ? 1f : maxc);
        var divisor = eqc ? 1f : cr;
        var rc = (maxc - r) / divisor;
        var gc = (maxc - g) / divisor;
        var bc = (maxc - b) / divisor;
        var hr = maxc == r ? bc - gc : 0f;
        var hg = maxc == g && maxc != r ? 2f + rc - bc : 0f;
        var hb = maxc != g && maxc != r ? 4f + gc - rc : 0f;
        var h = hr + hg + hb;
        h = ((h / 6f) + 1f) % 1f;

        // (h + hue_factor) % 1.0 is Python's modulo: the result takes the divisor's sign.
        var m = (h + hueFactor) % 1f;
        h = m < 0f ? m + 1f : m;

        // _hsv2rgb
        var h6 = h * 6f;
        var i = MathF.Floor(h6);
        var f = h6 - i;
        var v = maxc;
        var p = Math.Clamp(v * (1f - s), 0f, 1f);
        var q = Math.Clamp(v * (1f - (s * f)), 0f, 1f);
        var t = Math.Clamp(v * (1f - (s * (1f - f))), 0f, 1f);
        return ((int)i % 6) switch
        {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<float> R, Vector256<float> G, Vector256<float> B) ShiftPixels(Vector256<float> r, Vector256<float> g, Vector256<float> b, float hueFactor)
    {
        var one = Vector256<float>.One;
        var zero = Vector256<float>.Zero;
        var maxc = Vector256.Max(Vector256.Max(r, g), b);
        var minc = Vector256.Min(Vector256.Min(r, g), b);
        var eqc = Vector256.Equals(maxc, minc);
        var cr = maxc - minc;
        var s = cr / Vector256.ConditionalSelect(eqc, one, maxc);
        var divisor = Vector256.ConditionalSelect(eqc, one, cr);
        var rc = (maxc - r) / divisor;
        var gc = (maxc - g) / divisor;
        var bc = (maxc - b) / divisor;
        var isR = Vector256.Equals(maxc, r);
        var isG = Vector256.Equals(maxc, g) & ~isR;
        var isB = ~Vector256.Equals(maxc, g) & ~isR;
        var hr = Vector256.ConditionalSelect(isR, bc - gc, zero);
        var hg = Vector256.ConditionalSelect(isG, (Vector256.Create(2f) + rc) - bc, zero);
        var hb = Vector256.ConditionalSelect(isB, (Vector256.Create(4f) + gc) - rc, zero);
        var h = (hr + hg + hb) / 6f + one;
        // fmod(h, 1) for h in [2/3, 2): subtract one at or above one (exact there).
        h = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(h, one), h - one, h);
        // Python's (h + factor) % 1 for h + factor in [−0.5, 1.5): fmod is exact, the +1 for negatives rounds as Python's does.
        h += Vector256.Create(hueFactor);
        h = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(h, one), h - one, h);
        h = Vector256.ConditionalSelect(Vector256.LessThan(h, zero), h + one, h);

        var h6 = h * 6f;
        var i = Vector256.Floor(h6);
        var f = h6 - i;
        var v = maxc;
        var p = Vector256.Min(Vector256.Max(v * (one - s), zero), one);
        var q = Vector256.Min(Vector256.Max(v * (one - (s * f)), zero), one);
        var t = Vector256.Min(Vector256.Max(v * (one - (s * (one - f))), zero), one);
        // Sector i mod 6; h·6 reaches 6 only when h rounds to 1, which is sector 0.
        var sector = Vector256.ConvertToInt32(i);
        sector = Vector256.ConditionalSelect(Vector256.Equals(sector, Vector256.Create(6)), Vector256<int>.Zero, sector);
        var s0 = Vector256.Equals(sector, Vector256<int>.Zero).AsSingle();
        var s1 = Vector256.Equals(sector, Vector256.Create(1)).AsSingle();
        var s2 = Vector256.Equals(sector, Vector256.Create(2)).AsSingle();
        var s3 = Vector256.Equals(sector, Vector256.Create(3)).AsSingle();
        var s4 = Vector256.Equals(sector, Vector256.Create(4)).AsSingle();
        // Rows of _hsv2rgb's table: R = (v, q, p, p, t, v), G = (t, v, v, q, p, p), B = (p, p, t, v, v, q).
        var red = Select(s0, v, Select(s1, q, Select(s2, p, Select(s3, p, Select(s4, t, v)))));
        var green = Select(s0, t, Select(s1, v, Select(s2, v, Select(s3, q, Select(s4, p, p)))));
        var blue = Select(s0, p, Select(s1, p, Select(s2, t, Select(s3, v, Select(s4, v, q)))));
        return (red, green, blue);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Select(Vector256<float> mask, Vector256<float> a, Vector256<float> b) => Vector256.ConditionalSelect(mask, a, b);
}
