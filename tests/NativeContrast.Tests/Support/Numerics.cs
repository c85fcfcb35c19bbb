namespace NativeContrast.Tests.Support;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>Random inputs and tolerance checks shared by the oracle, gradient and parity tests.</summary>
public static class Numerics
{
    /// <summary>Tolerances by precision (relative error in the L2 norm), as STYLE.md sets them.</summary>
    public const double Fp32Tolerance = 1e-5;
    public const double Tf32Tolerance = 1e-3;
    public const double Bf16Tolerance = 1e-2;

    /// <summary>Uniform values in [-scale, scale) from a seeded System.Random.</summary>
    public static float[] RandomArray(int length, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var values = new float[length];
        for (var i = 0; i < length; i++)
        {
            values[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        }
        return values;
    }

    public static Tensor RandomTensor(IBackend backend, TensorShape shape, int seed, float scale = 1f, string? name = null)
    {
        var t = backend.Allocate(shape, name);
        backend.CopyFromHost(RandomArray(checked((int)shape.Length), seed, scale), t);
        return t;
    }

    public static float[] ToArray(IBackend backend, Tensor t)
    {
        var values = new float[t.Length];
        backend.CopyToHost(t, values);
        return values;
    }

    /// <summary>‖actual − expected‖ / max(‖expected‖, tiny).</summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double normFloor = 0)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), "lengths differ");
        double diff = 0, norm = 0;
        for (var i = 0; i < actual.Length; i++)
        {
            var d = actual[i] - expected[i];
            diff += d * d;
            norm += expected[i] * expected[i];
        }
        return Math.Sqrt(diff) / Math.Max(Math.Max(Math.Sqrt(norm), normFloor), 1e-30);
    }

    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        var e = new double[expected.Length];
        for (var i = 0; i < e.Length; i++)
        {
            e[i] = expected[i];
        }
        return RelativeError(actual, e);
    }

    /// <summary>
    /// ‖actual − expected‖ / max(‖expected‖, <paramref name="normFloor"/>) within <paramref name="tolerance"/>. The floor
    /// is for results that cancel to (near) zero: the size of the terms that cancel, which is what a reordered or
    /// rounded sum errs by.
    /// </summary>
    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, double tolerance, string what, double normFloor = 0)
    {
        for (var i = 0; i < actual.Length; i++)
        {
            Assert.That(float.IsFinite(actual[i]), Is.True, $"{what}: element {i} is {actual[i]}");
        }
        var error = RelativeError(actual, expected, normFloor);
        Assert.That(error, Is.LessThanOrEqualTo(tolerance), $"{what}: relative error {error:E3} exceeds {tolerance:E1}");
    }

    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double tolerance, string what, double normFloor = 0)
    {
        var e = new double[expected.Length];
        for (var i = 0; i < e.Length; i++)
        {
            e[i] = expected[i];
        }
        AssertClose(actual, e, tolerance, what, normFloor);
    }

    /// <summary>
    /// Central finite differences of a scalar function of <paramref name="parameters"/>, in double precision so the
    /// check measures the analytic gradient, not float32 round-off. <paramref name="loss"/> reads the array in place.
    /// </summary>
    public static double[] FiniteDifferenceGradient(double[] parameters, Func<double> loss, double step = 1e-5)
    {
        var gradient = new double[parameters.Length];
        for (var i = 0; i < parameters.Length; i++)
        {
            var saved = parameters[i];
            parameters[i] = saved + step;
            var plus = loss();
            parameters[i] = saved - step;
            var minus = loss();
            parameters[i] = saved;
            gradient[i] = (plus - minus) / (2 * step);
        }
        return gradient;
    }
}
