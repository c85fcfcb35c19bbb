namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// Philox-4x32-10 against the Random123 known-answer vectors (kat_vectors: philox4x32 10 rounds), then the stream's
/// mapping onto tensors and the statistics of the uniform and normal outputs.
/// Counter words (c0, c1, c2, c3) map to <see cref="Philox.Block"/>'s block = c1:c0 and offset = c3:c2; key words
/// (k0, k1) to seed = k1:k0.
/// </summary>
public class PhiloxTests
{
    [Test]
    public void ZeroCounterAndKeyGiveTheRandom123Vector()
    {
        Assert.That(Philox.Block(0, 0, 0), Is.EqualTo((0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)));
    }

    [Test]
    public void AllOnesCounterAndKeyGiveTheRandom123Vector()
    {
        Assert.That(Philox.Block(ulong.MaxValue, ulong.MaxValue, ulong.MaxValue), Is.EqualTo((0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)));
    }

    [Test]
    public void PiDigitsCounterAndKeyGiveTheRandom123Vector()
    {
        // counter = (0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), key = (0xa4093822, 0x299f31d0)
        var block = Philox.Block(seed: 0x299f31d0_a4093822UL, block: 0x85a308d3_243f6a88UL, offset: 0x03707344_13198a2eUL);
        Assert.That(block, Is.EqualTo((0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u)));
    }

    [Test]
    public void UniformElementIsWordIModFourOfBlockIDivFour()
    {
        const ulong seed = 1234, offset = 7;
        var values = new float[10];
        Philox.FillUniform(values, seed, offset);
        for (var i = 0; i < values.Length; i++)
        {
            var (x0, x1, x2, x3) = Philox.Block(seed, (ulong)i / 4, offset);
            var word = (i % 4) switch { 0 => x0, 1 => x1, 2 => x2, _ => x3 };
            Assert.That(values[i], Is.EqualTo((word >> 8) / 16777216f), $"element {i}");
        }
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(3)]
    [TestCase(6)]
    public void FillingFromAStartIndexContinuesTheSameStream(int start)
    {
        var whole = new float[23];
        var tail = new float[23 - start];
        Philox.FillUniform(whole, 99, 5);
        Philox.FillUniform(tail, 99, 5, start);
        Assert.That(tail, Is.EqualTo(whole[start..]));

        Philox.FillNormal(whole, 99, 5, 1f, 2f);
        Philox.FillNormal(tail, 99, 5, 1f, 2f, start);
        Assert.That(tail, Is.EqualTo(whole[start..]));
    }

    [Test]
    public void TheCpuBackendSplitsWorkWithoutChangingTheStream()
    {
        const int n = 100_003; // enough for several threads, not a multiple of 4
        using var cpu = new CpuBackend();
        using var t = cpu.Allocate(new TensorShape(n));
        var expected = new float[n];

        cpu.RandomUniform(t, 42, 3);
        Philox.FillUniform(expected, 42, 3);
        Assert.That(t.Span.SequenceEqual(expected), Is.True, "uniform");

        cpu.RandomNormal(t, 42, 3, 0.5f, 2f);
        Philox.FillNormal(expected, 42, 3, 0.5f, 2f);
        Assert.That(t.Span.SequenceEqual(expected), Is.True, "normal");
    }

    [Test]
    public void DifferentSeedsAndOffsetsGiveDifferentStreams()
    {
        var a = new float[64];
        var b = new float[64];
        var c = new float[64];
        Philox.FillUniform(a, 1, 0);
        Philox.FillUniform(b, 2, 0);
        Philox.FillUniform(c, 1, 1);
        Assert.That(a.Zip(b).Count(p => p.First == p.Second), Is.LessThan(2));
        Assert.That(a.Zip(c).Count(p => p.First == p.Second), Is.LessThan(2));
    }

    [Test]
    public void UniformValuesAreInRangeAndEvenlySpread()
    {
        const int n = 200_000, bins = 20;
        var values = new float[n];
        Philox.FillUniform(values, 2024, 0);
        Assert.That(values.Min(), Is.GreaterThanOrEqualTo(0f));
        Assert.That(values.Max(), Is.LessThan(1f));

        var mean = values.Average(v => (double)v);
        var variance = values.Average(v => (v - mean) * (v - mean));
        Assert.That(mean, Is.EqualTo(0.5).Within(0.005), "mean (standard error 0.00065)");
        Assert.That(variance, Is.EqualTo(1.0 / 12).Within(0.002), "variance");

        // Chi-square over 20 equal bins, 19 degrees of freedom: 43.8 is the 0.999 quantile.
        var counts = new int[bins];
        foreach (var v in values)
        {
            counts[(int)(v * bins)]++;
        }
        var expected = n / (double)bins;
        var chiSquare = counts.Sum(c => (c - expected) * (c - expected) / expected);
        Assert.That(chiSquare, Is.LessThan(43.8));
    }

    [Test]
    public void NormalValuesHaveTheRequestedMomentsAndShape()
    {
        const int n = 200_000;
        const float mean = 3f, std = 0.5f;
        var values = new float[n];
        Philox.FillNormal(values, 77, 11, mean, std);
        Assert.That(values.All(float.IsFinite), Is.True);

        var m = values.Average(v => (double)v);
        var s = Math.Sqrt(values.Average(v => (v - m) * (v - m)));
        Assert.That(m, Is.EqualTo(mean).Within(0.005), "mean (standard error 0.0011)");
        Assert.That(s, Is.EqualTo(std).Within(0.005), "standard deviation");

        var withinOne = values.Count(v => Math.Abs(v - mean) < std) / (double)n;
        var withinTwo = values.Count(v => Math.Abs(v - mean) < 2 * std) / (double)n;
        Assert.That(withinOne, Is.EqualTo(0.6827).Within(0.005), "mass within one sigma");
        Assert.That(withinTwo, Is.EqualTo(0.9545).Within(0.003), "mass within two sigma");
    }
}
