namespace NativeContrast.Backends;

using System.Runtime.CompilerServices;

/// <summary>
/// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), the counter-based generator
/// both backends share so that a seed and an offset give the same numbers on the CPU and on the GPU.
/// The stream: key = (seed low 32 bits, seed high 32 bits); element i of a tensor comes from block b = i / 4,
/// word i mod 4, where the block's counter is (b low, b high, offset low, offset high).
/// Uniform: (word &gt;&gt; 8)·2^-24 in [0, 1). Normal: Box–Muller on the block's words, (w0, w1) → elements 4b, 4b+1
/// and (w2, w3) → 4b+2, 4b+3: r = sqrt(−2·ln u1) with u1 = ((w0 &gt;&gt; 8) + 1)·2^-24 in (0, 1] (so the logarithm is
/// finite), θ = 2π·uniform(w1), giving (r·cos θ, r·sin θ), each then mean + std·z, all in float32, rounded step by step.
/// native/philox.cu implements the same function: uniforms agree bit for bit, normals up to the last-place rounding
/// of log, sin and cos.
/// </summary>
public static class Philox
{
    private const uint M0 = 0xD2511F53u;
    private const uint M1 = 0xCD9E8D57u;
    private const uint W0 = 0x9E3779B9u;
    private const uint W1 = 0xBB67AE85u;

    /// <summary>The four output words for one counter block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (uint X0, uint X1, uint X2, uint X3) Block(ulong seed, ulong block, ulong offset)
    {
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        uint c0 = (uint)block, c1 = (uint)(block >> 32), c2 = (uint)offset, c3 = (uint)(offset >> 32);
        for (var round = 0; round < 10; round++)
        {
            var p0 = (ulong)M0 * c0;
            var p1 = (ulong)M1 * c2;
            var hi0 = (uint)(p0 >> 32);
            var lo0 = (uint)p0;
            var hi1 = (uint)(p1 >> 32);
            var lo1 = (uint)p1;
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
            k0 += W0;
            k1 += W1;
        }
        return (c0, c1, c2, c3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToUniform(uint word) => (word >> 8) * (1.0f / 16777216.0f);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToOpenUniform(uint word) => ((word >> 8) + 1) * (1.0f / 16777216.0f);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (float A, float B) BoxMuller(uint w0, uint w1)
    {
        var radius = MathF.Sqrt(-2.0f * MathF.Log(ToOpenUniform(w0)));
        var angle = 2.0f * MathF.PI * ToUniform(w1);
        return (radius * MathF.Cos(angle), radius * MathF.Sin(angle));
    }

    /// <summary>Fills <paramref name="destination"/> with elements [start, start + length) of the uniform stream.</summary>
    public static void FillUniform(Span<float> destination, ulong seed, ulong offset, long start = 0)
    {
        Span<float> values = stackalloc float[4];
        for (var i = 0; i < destination.Length;)
        {
            // One Philox block gives four elements; start need not be a multiple of four.
            var index = (ulong)(start + i);
            var (x0, x1, x2, x3) = Block(seed, index >> 2, offset);
            values[0] = ToUniform(x0);
            values[1] = ToUniform(x1);
            values[2] = ToUniform(x2);
            values[3] = ToUniform(x3);
            i += CopyFromBlock(values, (int)(index & 3), destination[i..]);
        }
    }

    /// <summary>Fills <paramref name="destination"/> with elements [start, start + length) of the normal stream.</summary>
    public static void FillNormal(Span<float> destination, ulong seed, ulong offset, float mean, float std, long start = 0)
    {
        Span<float> values = stackalloc float[4];
        for (var i = 0; i < destination.Length;)
        {
            var index = (ulong)(start + i);
            var (x0, x1, x2, x3) = Block(seed, index >> 2, offset);
            var (a, b) = BoxMuller(x0, x1);
            var (c, d) = BoxMuller(x2, x3);
            values[0] = mean + (std * a);
            values[1] = mean + (std * b);
            values[2] = mean + (std * c);
            values[3] = mean + (std * d);
            i += CopyFromBlock(values, (int)(index & 3), destination[i..]);
        }
    }

    /// <summary>Copies a block's values from word <paramref name="first"/> on into the destination; returns how many.</summary>
    private static int CopyFromBlock(ReadOnlySpan<float> block, int first, Span<float> destination)
    {
        var count = Math.Min(4 - first, destination.Length);
        block.Slice(first, count).CopyTo(destination);
        return count;
    }
}
