namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The swapped-prediction loss (CPU twin) and SwavLoss against float64 references and finite differences.</summary>
public class SinkhornSwappedLossTests
{
    private const float Temperature = 0.1f;

    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    /// <summary>Codes as the loss sees them: non-negative rows summing to 1 (SwAV's assignments).</summary>
    private static float[] RandomCodes(int rows, int cols, int seed)
    {
        var codes = Numerics.RandomArray(rows * cols, seed).Select(v => MathF.Exp(3 * v)).ToArray();
        for (var b = 0; b < rows; b++)
        {
            var sum = codes.AsSpan(b * cols, cols).ToArray().Sum();
            for (var k = 0; k < cols; k++)
            {
                codes[(b * cols) + k] /= sum;
            }
        }
        return codes;
    }

    private static double[] ToDouble(float[] values) => values.Select(v => (double)v).ToArray();

    [TestCase(1, 3)]
    [TestCase(7, 10)]
    [TestCase(33, 300)]
    [TestCase(100, 3001)]
    public void LossMatchesFloat64Reference(int rows, int cols)
    {
        var scores = Numerics.RandomArray(rows * cols, rows + cols);
        var codes = RandomCodes(rows, cols, cols);
        using var p = _cpu.FromArray(scores, new TensorShape(rows, cols), "scores");
        using var q = _cpu.FromArray(codes, new TensorShape(rows, cols), "codes");
        using var loss = _cpu.Allocate(new TensorShape(1), "loss");
        using var perSample = _cpu.Allocate(new TensorShape(rows), "per-sample");
        _cpu.SwappedPredictionLoss(p, q, Temperature, loss, perSample, null);
        var (mean, expected) = SinkhornReference.SwappedLoss(ToDouble(scores), ToDouble(codes), rows, cols, Temperature);
        Numerics.AssertClose(perSample.Span, expected, Numerics.Fp32Tolerance, "per-sample loss");
        Numerics.AssertClose(loss.Span, [mean], Numerics.Fp32Tolerance, "mean loss");
    }

    [TestCase(1, 3)]
    [TestCase(5, 7)]
    [TestCase(4, 33)]
    public void GradientMatchesFiniteDifferences(int rows, int cols)
    {
        const float weight = 0.37f;
        var scores = Numerics.RandomArray(rows * cols, 41 + rows);
        // Unnormalised codes too: the gradient is softmax·Σq − q, not softmax − q.
        var codes = RandomCodes(rows, cols, 43).Select(v => 1.5f * v).ToArray();
        using var p = _cpu.FromArray(scores, new TensorShape(rows, cols), "scores");
        using var q = _cpu.FromArray(codes, new TensorShape(rows, cols), "codes");
        using var loss = _cpu.Allocate(new TensorShape(1), "loss");
        using var perSample = _cpu.Allocate(new TensorShape(rows), "per-sample");
        using var gradient = _cpu.Allocate(new TensorShape(rows, cols), "gradient");
        _cpu.SwappedPredictionLoss(p, q, Temperature, loss, perSample, gradient, weight);

        var parameters = ToDouble(scores);
        var fixedCodes = ToDouble(codes);
        var expected = Numerics.FiniteDifferenceGradient(parameters, () => weight * SinkhornReference.SwappedLoss(parameters, fixedCodes, rows, cols, Temperature).Mean);
        Numerics.AssertClose(gradient.Span, expected, Numerics.Fp32Tolerance, "gradient");
    }

    [Test]
    public void AccumulationAddsLossAndGradientWithTheirWeights()
    {
        const int rows = 9, cols = 20;
        using var p = _cpu.FromArray(Numerics.RandomArray(rows * cols, 47), new TensorShape(rows, cols), "scores");
        using var q = _cpu.FromArray(RandomCodes(rows, cols, 53), new TensorShape(rows, cols), "codes");
        using var loss = _cpu.Allocate(new TensorShape(1), "loss");
        using var perSample = _cpu.Allocate(new TensorShape(rows), "per-sample");
        using var gradient = _cpu.Allocate(new TensorShape(rows, cols), "gradient");
        _cpu.SwappedPredictionLoss(p, q, Temperature, loss, perSample, gradient);
        var single = loss.Span[0];
        var singleGradient = gradient.Span.ToArray();
        _cpu.SwappedPredictionLoss(p, q, Temperature, loss, perSample, gradient, weight: 0.5f, accumulateLoss: true, accumulateGradient: true);
        Numerics.AssertClose(loss.Span, [1.5 * single], Numerics.Fp32Tolerance, "accumulated loss");
        Numerics.AssertClose(gradient.Span, singleGradient.Select(g => 1.5 * g).ToArray(), Numerics.Fp32Tolerance, "accumulated gradient");
    }

    [Test]
    public void BadArgumentsAreRejectedWithTheTensorNamed()
    {
        using var p = _cpu.Allocate(new TensorShape(4, 3), "scores");
        using var q = _cpu.Allocate(new TensorShape(4, 3), "codes");
        using var loss = _cpu.Allocate(new TensorShape(1), "loss");
        using var perSample = _cpu.Allocate(new TensorShape(3), "per-sample");
        Assert.That(() => _cpu.SwappedPredictionLoss(p, q, Temperature, loss, perSample, null), Throws.ArgumentException.With.Message.Contains("per-sample"));
        Assert.That(() => _cpu.SwappedPredictionLoss(p, q, Temperature, loss, loss, p), Throws.ArgumentException);
    }

    /// <summary>SwAV's loss over crops (main_swav.py) in float64, with the codes given (they are constants).</summary>
    private static double SwavReferenceLoss(double[] scores, double[][] codes, int[] assignCrops, int crops, int batch, int cols)
    {
        double loss = 0;
        for (var i = 0; i < assignCrops.Length; i++)
        {
            double sub = 0;
            for (var v = 0; v < crops; v++)
            {
                if (v != assignCrops[i])
                {
                    sub += SinkhornReference.SwappedLoss(scores.AsSpan(v * batch * cols, batch * cols).ToArray(), codes[i], batch, cols, Temperature).Mean;
                }
            }
            loss += sub / (crops - 1);
        }
        return loss / assignCrops.Length;
    }

    [TestCase(4, new[] { 0, 1 })]
    [TestCase(2, new[] { 0 })]
    [TestCase(3, new[] { 2, 0 })]
    public void SwavLossMatchesTheMultiCropReference(int crops, int[] assignCrops)
    {
        const int batch = 6, cols = 5;
        var scores = Numerics.RandomArray(crops * batch * cols, 59 + crops);
        using var swav = new SwavLoss(_cpu, Temperature, assignmentCrops: assignCrops);
        using var s = _cpu.FromArray(scores, new TensorShape(crops * batch, cols), "scores");
        using var loss = _cpu.Allocate(new TensorShape(1), "loss");
        using var gradient = _cpu.Allocate(new TensorShape(crops * batch, cols), "gradient");
        _cpu.Fill(gradient, float.NaN);  // every element must be written
        swav.Compute(s, crops, loss, gradient);

        var codes = assignCrops.Select(c => SinkhornReference.Swav(scores.AsSpan(c * batch * cols, batch * cols).ToArray(), batch, cols, 0.05, 3, rescale: true)).ToArray();
        var codesTensor = swav.Codes!.Span;
        for (var i = 0; i < assignCrops.Length; i++)
        {
            Numerics.AssertClose(codesTensor.Slice(i * batch * cols, batch * cols), codes[i], Numerics.Fp32Tolerance, $"codes of crop {assignCrops[i]}");
        }
        var parameters = ToDouble(scores);
        Numerics.AssertClose(loss.Span, [SwavReferenceLoss(parameters, codes, assignCrops, crops, batch, cols)], Numerics.Fp32Tolerance, "loss");
        var expected = Numerics.FiniteDifferenceGradient(parameters, () => SwavReferenceLoss(parameters, codes, assignCrops, crops, batch, cols));
        Numerics.AssertClose(gradient.Span, expected, Numerics.Fp32Tolerance, "gradient");
    }
}
