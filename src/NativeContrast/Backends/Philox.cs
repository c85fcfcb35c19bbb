namespace NativeContrast.Backends;

using System.Runtime.CompilerServices;

/// <summary>
/// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), the counter-based generator
/// both backends share so that a seed and an offset give the same numbers on the CPU and on the GPU.
/// The stream: key = (seed low 32 bits, seed high 32 bits); element i of a tensor comes from block b = i / 4,
/// word i mod 4, where the block's counter is (b low, b high, offset low, offset high).
/// Uniform: (word &gt;&gt; 8)·2^-24 in [0, 1). Normal: Box–Muller on the block's words, (w0, w1) → elements 4b, 4b+1
/// and (w2, w3) → 4b+2, 4b+3, with u = ((w &gt;&gt; 8) + 1)·2^-24 in (0, 1] so the logarithm is finite.
/// native/philox.cu implements the same function.
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
        for (var i = 0; i < destination.Length; i++)
        {
            var index = (ulong)(start + i);
            var (x0, x1, x2, x3) = Block(seed, index >> 2, offset);
            var word = (index & 3) switch { 0 => x0, 1 => x1, 2 => x2, _ => x3 };
            destination[i] = ToUniform(word);
        }
    }

    /// <summary>Fills <paramref name="destination"/> with elements [start, start + length) of the normal stream.</summary>
    public static void FillNormal(Span<float> destination, ulong seed, ulong offset, float mean, float std, long start = 0)
    {
        for (var i = 0; i < destination.Length; i++)
        {
            var index = (ulong)(start + i);
            var (x0, x1, x2, x3) = Block(seed, index >> 2, offset);
            var (a, b) = (index & 2) == 0 ? BoxMuller(x0, x1) : BoxMuller(x2, x3);
            destination[i] = mean + (std * ((index & 1) == 0 ? a : b));
        }
    }
}
