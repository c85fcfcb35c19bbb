namespace NativeContrast.Data;

using System.Runtime.CompilerServices;
using NativeContrast.Backends;

/// <summary>
/// A Philox-4x32-10 stream for one (seed, stream, lane): the loader draws sample <c>index</c>'s view <c>v</c> of
/// epoch <c>e</c> from stream (e &lt;&lt; 32 | index), lane v, so a sample's augmentation depends on nothing else
/// (not on the worker that makes it, nor on the batch it lands in). Counter block = (lane &lt;&lt; 32 | draw), offset = stream.
/// </summary>
public struct SampleRandom
{
    private readonly ulong _seed;
    private readonly ulong _stream;
    private readonly ulong _lane;
    private uint _block;
    private uint _w0, _w1, _w2, _w3;
    private int _used;

    public SampleRandom(ulong seed, ulong stream, uint lane)
    {
        _seed = seed;
        _stream = stream;
        _lane = (ulong)lane << 32;
        _block = 0;
        _w0 = _w1 = _w2 = _w3 = 0;
        _used = 4;
    }

    /// <summary>The stream of view <paramref name="view"/> of sample <paramref name="index"/> in epoch <paramref name="epoch"/>.</summary>
    public static SampleRandom ForView(ulong seed, int epoch, int index, int view) =>
        new(seed, ((ulong)(uint)epoch << 32) | (uint)index, (uint)view);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint NextUInt()
    {
        if (_used == 4)
        {
            (_w0, _w1, _w2, _w3) = Philox.Block(_seed, _lane | _block, _stream);
            _block++;
            _used = 0;
        }
        return _used++ switch { 0 => _w0, 1 => _w1, 2 => _w2, _ => _w3 };
    }

    /// <summary>Uniform in [0, 1) with 24 random bits, like a float32 torch.rand.</summary>
    public float NextFloat() => Philox.ToUniform(NextUInt());

    /// <summary>Uniform in [low, high), as torch.empty(1).uniform_(low, high) in float32.</summary>
    public float Uniform(float low, float high) => low + ((high - low) * NextFloat());

    /// <summary>An integer in [0, n) (multiply-shift; the bias is below n / 2^32).</summary>
    public int NextInt(int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        return (int)(((ulong)NextUInt() * (uint)n) >> 32);
    }

    /// <summary>True with probability <paramref name="p"/>, as torchvision's <c>torch.rand(1) &lt; p</c>.</summary>
    public bool Chance(float p) => p >= 1f || (p > 0f && NextFloat() < p);
}
