namespace NativeContrast.Data;

using System.Numerics;
using System.Runtime.CompilerServices;

/// <summary>
/// The built-in data set, needing no files: ten classes of anti-aliased shapes (circle, square, triangle, cross, ring,
/// stripes, star, arrow, crescent, dots) in a random palette colour, position, scale and rotation over a textured
/// background (two-colour sinusoidal plasma plus grain). Colours come from an eight-colour palette, so thousands of
/// images share each colour pair: colour is no shortcut to telling images apart, and contrastive training learns the
/// outlines within minutes on a CPU (with colours drawn at random it first learned to match colour histograms). Class identity is the outline, which survives crops, flips, colour
/// jitter and grayscale (the shape's luma always differs from the background's by at least 0.3), so contrastive
/// training visibly learns on it. Image i of a split depends only on (seed, split, i): any count, any size, any order.
/// </summary>
public static class BuiltinShapes
{
    public static readonly IReadOnlyList<string> Classes =
        ["circle", "square", "triangle", "cross", "ring", "stripes", "star", "arrow", "crescent", "dots"];

    private static readonly Vector2[] Triangle = RegularPolygon(3, 0.95f, 0.95f);
    private static readonly Vector2[] Star = RegularPolygon(10, 0.95f, 0.4f);

    private static readonly Vector2[] Arrow =
        [new(-0.9f, -0.22f), new(0.15f, -0.22f), new(0.15f, -0.62f), new(0.92f, 0f), new(0.15f, 0.62f), new(0.15f, 0.22f), new(-0.9f, 0.22f)];

    private static readonly Vector2[] Dots = [.. Enumerable.Range(0, 3).Select(k => Polar(0.55f, (MathF.PI / 2) + (k * 2 * MathF.PI / 3)))];

    /// <summary>Renders <paramref name="count"/> images of <paramref name="size"/> x <paramref name="size"/> RGB in parallel; labels cycle 0..9.</summary>
    public static PackedImageDataset Create(int count, int size = 32, ulong seed = 0, DatasetSplit split = DatasetSplit.Train)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 8);
        var store = ImageStore.Allocate(count, new ImageShape(size, size, 3));
        var labels = new int[count];
        const int chunk = 128;
        Parallel.For(0, (count + chunk - 1) / chunk, c =>
        {
            for (var i = c * chunk; i < Math.Min(count, (c + 1) * chunk); i++)
            {
                labels[i] = i % Classes.Count;
                Render(i, labels[i], seed, split, store.Writable(i), size);
            }
        });
        return new PackedImageDataset($"builtin/{split.ToString().ToLowerInvariant()}", store, labels, Classes);
    }

    /// <summary>Renders image <paramref name="index"/> of class <paramref name="label"/> into size x size x 3 bytes.</summary>
    public static void Render(int index, int label, ulong seed, DatasetSplit split, Span<byte> pixels, int size)
    {
        if (pixels.Length != size * size * 3)
        {
            throw new ArgumentException($"{pixels.Length} bytes are not a {size}x{size}x3 image", nameof(pixels));
        }
        var rng = new SampleRandom(seed, (ulong)(uint)index, 0x5348_0000u | (uint)split);

        // Background: two colours mixed by a plasma whose wavelength scales with the image, plus grain. Colours come
        // from a small palette (then a little jitter), so that many images share them: an image's colours cannot
        // tell it apart from the others, and contrastive training has to look at the outline.
        var c1 = PaletteColour(ref rng);
        var c2 = Vector3.Clamp(c1 + new Vector3(rng.Uniform(-0.15f, 0.15f), rng.Uniform(-0.15f, 0.15f), rng.Uniform(-0.15f, 0.15f)), Vector3.Zero, Vector3.One);
        var fx = rng.Uniform(4f, 14f) / size;
        var fy = rng.Uniform(4f, 14f) / size;
        var px = rng.Uniform(0, 2 * MathF.PI);
        var py = rng.Uniform(0, 2 * MathF.PI);
        var grainSeed = rng.NextUInt();

        // Shape colour: from the palette, pushed away from the background's luma so the outline survives grayscale.
        var shape = PaletteColour(ref rng);
        var backgroundLuma = Luma((c1 + c2) * 0.5f);
        if (MathF.Abs(Luma(shape) - backgroundLuma) < 0.3f)
        {
            shape = backgroundLuma > 0.5f ? shape * 0.25f : Vector3.One - ((Vector3.One - shape) * 0.25f);
        }

        var radius = rng.Uniform(0.24f, 0.40f) * size;
        var margin = radius * 0.9f;
        var cx = rng.Uniform(margin, size - margin);
        var cy = rng.Uniform(margin, size - margin);
        var angle = rng.Uniform(0, 2 * MathF.PI);
        var (sin, cos) = MathF.SinCos(angle);
        var inverseRadius = 1f / radius;
        var reach = (radius * 1.02f) + 1f;

        Span<float> rowWave = stackalloc float[size];
        for (var y = 0; y < size; y++)
        {
            rowWave[y] = 0.25f * MathF.Sin((fy * y * 2 * MathF.PI) + py);
        }
        Span<float> columnWave = stackalloc float[size];
        for (var x = 0; x < size; x++)
        {
            columnWave[x] = 0.25f * MathF.Sin((fx * x * 2 * MathF.PI) + px);
        }

        for (var y = 0; y < size; y++)
        {
            for (var x = 0; x < size; x++)
            {
                var t = 0.5f + rowWave[y] + columnWave[x];
                var colour = Vector3.Lerp(c1, c2, t);
                colour += new Vector3(Grain(grainSeed, x, y) * (6f / 255f));
                var qx = x + 0.5f - cx;
                var qy = y + 0.5f - cy;
                if ((qx * qx) + (qy * qy) < reach * reach)
                {
                    // Into the shape's unit frame: rotate by −angle, scale by 1/radius.
                    var p = new Vector2(((cos * qx) + (sin * qy)) * inverseRadius, ((-sin * qx) + (cos * qy)) * inverseRadius);
                    var coverage = Math.Clamp(0.5f - (Distance(label, p) * radius), 0f, 1f);
                    colour = Vector3.Lerp(colour, shape, coverage);
                }
                var o = ((y * size) + x) * 3;
                pixels[o] = ToByte(colour.X);
                pixels[o + 1] = ToByte(colour.Y);
                pixels[o + 2] = ToByte(colour.Z);
            }
        }
    }

    /// <summary>Signed distance (negative inside) of class <paramref name="label"/>'s outline in the unit frame.</summary>
    private static float Distance(int label, Vector2 p) => label switch
    {
        0 => p.Length() - 0.85f,
        1 => Box(p, 0.68f, 0.68f),
        2 => Polygon(Triangle, p),
        3 => MathF.Min(Box(p, 0.92f, 0.28f), Box(p, 0.28f, 0.92f)),
        4 => MathF.Abs(p.Length() - 0.66f) - 0.2f,
        5 => MathF.Max(Box(p, 0.72f, 0.72f), Stripes(p.Y)),
        6 => Polygon(Star, p),
        7 => Polygon(Arrow, p),
        8 => MathF.Max(p.Length() - 0.88f, -(Vector2.Distance(p, new Vector2(0.42f, 0f)) - 0.7f)),
        _ => MathF.Min(MathF.Min(Vector2.Distance(p, Dots[0]), Vector2.Distance(p, Dots[1])), Vector2.Distance(p, Dots[2])) - 0.3f,
    };

    private static float Box(Vector2 p, float halfWidth, float halfHeight)
    {
        var q = Vector2.Abs(p) - new Vector2(halfWidth, halfHeight);
        return Vector2.Max(q, Vector2.Zero).Length() + MathF.Min(MathF.Max(q.X, q.Y), 0f);
    }

    /// <summary>Bars 0.2 wide every 0.4 (signed distance to the nearest bar).</summary>
    private static float Stripes(float y)
    {
        const float period = 0.4f;
        var m = y + 0.1f - (period * MathF.Floor((y + 0.1f) / period));
        return MathF.Abs(m - (period / 2)) - 0.1f;
    }

    /// <summary>Signed distance to a simple polygon: the nearest edge, negative inside (crossing-number sign).</summary>
    private static float Polygon(Vector2[] v, Vector2 p)
    {
        var d = Vector2.DistanceSquared(p, v[0]);
        var sign = 1f;
        for (int i = 0, j = v.Length - 1; i < v.Length; j = i, i++)
        {
            var e = v[j] - v[i];
            var w = p - v[i];
            var b = w - (e * Math.Clamp(Vector2.Dot(w, e) / Vector2.Dot(e, e), 0f, 1f));
            d = MathF.Min(d, Vector2.Dot(b, b));
            var above = p.Y >= v[i].Y;
            var below = p.Y < v[j].Y;
            var left = (e.X * w.Y) > (e.Y * w.X);
            if ((above && below && left) || (!above && !below && !left))
            {
                sign = -sign;
            }
        }
        return sign * MathF.Sqrt(d);
    }

    private static Vector2[] RegularPolygon(int vertices, float outer, float inner) =>
        [.. Enumerable.Range(0, vertices).Select(k => Polar(k % 2 == 0 ? outer : inner, (MathF.PI / 2) + (k * 2 * MathF.PI / vertices)))];

    private static Vector2 Polar(float r, float angle) => new(r * MathF.Cos(angle), r * MathF.Sin(angle));

    private static readonly Vector3[] Palette =
    [
        new(0.85f, 0.2f, 0.2f), new(0.2f, 0.7f, 0.25f), new(0.2f, 0.35f, 0.85f), new(0.9f, 0.8f, 0.2f),
        new(0.2f, 0.8f, 0.8f), new(0.8f, 0.3f, 0.8f), new(0.85f, 0.85f, 0.85f), new(0.25f, 0.25f, 0.25f),
    ];

    /// <summary>One of the eight palette colours, moved by at most 0.05 per channel.</summary>
    private static Vector3 PaletteColour(ref SampleRandom rng)
    {
        var colour = Palette[rng.NextInt(Palette.Length)];
        return Vector3.Clamp(colour + new Vector3(rng.Uniform(-0.05f, 0.05f), rng.Uniform(-0.05f, 0.05f), rng.Uniform(-0.05f, 0.05f)), Vector3.Zero, Vector3.One);
    }

    private static float Luma(Vector3 c) => (0.299f * c.X) + (0.587f * c.Y) + (0.114f * c.Z);

    /// <summary>Deterministic grain in [−1, 1) from a pixel's coordinates (an integer hash, far cheaper than Philox per pixel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Grain(uint seed, int x, int y)
    {
        var h = seed ^ ((uint)x * 0x9E3779B1u) ^ ((uint)y * 0x85EBCA77u);
        h ^= h >> 15;
        h *= 0x2C1B3C6Du;
        h ^= h >> 12;
        return ((h >> 8) * (2f / 16777216f)) - 1f;
    }

    private static byte ToByte(float v) => (byte)Math.Clamp((v * 255f) + 0.5f, 0f, 255f);
}
