namespace NativeContrast.Data;

using System.Runtime.CompilerServices;

/// <summary>
/// torchvision's adjust_hue on interleaved RGB bytes. Each step is the float32 operation torchvision performs, in
/// its order, so the result matches bit for bit: _rgb2hsv, the hue shift with Python's modulo, _hsv2rgb, and
/// convert_image_dtype's ·(255 + 1 − 0.001) with truncation.
/// </summary>
internal static class HueKernels
{
    /// <summary>float(max_val + 1.0 − eps) of convert_image_dtype.</summary>
    private const float ToByteScale = (float)(255.0 + 1.0 - 1e-3);

    public static void Shift(Span<byte> rgb, float hueFactor)
    {
        for (var p = 0; p + 2 < rgb.Length; p += 3)
        {
            var (r, g, b) = ShiftPixel(rgb[p] / 255f, rgb[p + 1] / 255f, rgb[p + 2] / 255f, hueFactor);
            rgb[p] = (byte)(r * ToByteScale);
            rgb[p + 1] = (byte)(g * ToByteScale);
            rgb[p + 2] = (byte)(b * ToByteScale);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
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
        h += hueFactor;
        var m = h % 1f;
        if (m != 0f && m < 0f)
        {
            m += 1f;
        }
        h = m;

        // _hsv2rgb
        var h6 = h * 6f;
        var i = MathF.Floor(h6);
        var f = h6 - i;
        var sector = (int)i % 6;
        var v = maxc;
        var pp = Math.Clamp(v * (1f - s), 0f, 1f);
        var q = Math.Clamp(v * (1f - (s * f)), 0f, 1f);
        var t = Math.Clamp(v * (1f - (s * (1f - f))), 0f, 1f);
        return sector switch
        {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
    }
}
