namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>SimCLR v2's distillation loss on the CPU against float64 references: hand-computed values and finite differences.</summary>
public class DistillationLossTests
{
    /// <summary>−(1/N) Σ_i Σ_c w_ic log softmax(s_i / T)_c in float64.</summary>
    internal static double Reference(double[] student, double[] targets, int rows, int classes, double temperature)
    {
        double total = 0;
        for (var i = 0; i < rows; i++)
        {
            var scaled = Enumerable.Range(0, classes).Select(c => student[(i * classes) + c] / temperature).ToArray();
            var max = scaled.Max();
            var logSumExp = max + Math.Log(scaled.Sum(v => Math.Exp(v - max)));
            for (var c = 0; c < classes; c++)
            {
                total -= targets[(i * classes) + c] * (scaled[c] - logSumExp);
            }
        }
        return total / rows;
    }

    internal static double[] Softmax(double[] logits, int rows, int classes, double temperature)
    {
        var p = new double[logits.Length];
        for (var i = 0; i < rows; i++)
        {
            var row = logits.AsSpan(i * classes, classes).ToArray().Select(v => v / temperature).ToArray();
            var max = row.Max();
            var sum = row.Sum(v => Math.Exp(v - max));
            for (var c = 0; c < classes; c++)
            {
                p[(i * classes) + c] = Math.Exp(row[c] - max) / sum;
            }
        }
        return p;
    }

    [Test]
    public void TheLossAtATemperatureEqualsTheHandComputedValue()
    {
        // Two images, three classes, T = 2. Teacher row 0: t/T = (1, 0, 0); row 1: (0, 0, ln 2).
        float[] teacher = [2f, 0f, 0f, 0f, 0f, 2f * MathF.Log(2f)];
        float[] student = [0f, 2f, 0f, 4f, 0f, 0f];
        var e = Math.E;
        // Row 0: p = (e, 1, 1) / (e + 2), log q = (0, 1, 0) − ln(2 + e).
        var row0 = -((e / (e + 2) * -Math.Log(2 + e)) + (1 / (e + 2) * (1 - Math.Log(2 + e))) + (1 / (e + 2) * -Math.Log(2 + e)));
        // Row 1: p = (1, 1, 2) / 4, log q = (2, 0, 0) − ln(e² + 2).
        var lse = Math.Log((e * e) + 2);
        var row1 = -((0.25 * (2 - lse)) + (0.25 * -lse) + (0.5 * -lse));
        var expected = (row0 + row1) / 2;

        using var backend = new CpuBackend();
        using var loss = new DistillationLoss(backend, rows: 2, classes: 3, temperature: 2f);
        using var t = Tensor(backend, teacher, 2, 3);
        using var s = Tensor(backend, student, 2, 3);
        loss.SetTeacher(t);
        var value = Numerics.ToArray(backend, loss.Forward(s))[0];
        Assert.That(value, Is.EqualTo(expected).Within(1e-6 * expected), "loss");
        Assert.That(expected, Is.EqualTo(Reference(Array.ConvertAll(student, v => (double)v), Softmax(Array.ConvertAll(teacher, v => (double)v), 2, 3, 2), 2, 3, 2)).Within(1e-9), "the float64 reference (of 2 ln 2 rounded to float32)");
    }

    [TestCase(5, 7, 0.5f)]
    [TestCase(3, 10, 1f)]
    [TestCase(4, 2, 4f)]
    public void TheGradientMatchesFiniteDifferences(int rows, int classes, float temperature)
    {
        var student = Numerics.RandomArray(rows * classes, seed: rows + classes, scale: 3f);
        var teacher = Numerics.RandomArray(rows * classes, seed: 100 + rows, scale: 3f);
        using var backend = new CpuBackend();
        using var loss = new DistillationLoss(backend, rows, classes, temperature);
        using var t = Tensor(backend, teacher, rows, classes);
        using var s = Tensor(backend, student, rows, classes);
        loss.SetTeacher(t);
        var value = Numerics.ToArray(backend, loss.Forward(s))[0];
        var gradient = Numerics.ToArray(backend, loss.Backward(scale: 0.5f));

        var targets = Softmax(Array.ConvertAll(teacher, v => (double)v), rows, classes, temperature);
        var s64 = Array.ConvertAll(student, v => (double)v);
        Assert.That(value, Is.EqualTo(Reference(s64, targets, rows, classes, temperature)).Within(1e-5), "loss against float64");
        var numeric = Numerics.FiniteDifferenceGradient(s64, () => 0.5 * Reference(s64, targets, rows, classes, temperature));
        Numerics.AssertClose(gradient, numeric, 1e-5, "0.5 · dL/ds against central differences");
        Assert.That(Numerics.ToArray(backend, loss.Targets), Is.EqualTo(targets.Select(v => (float)v)).Within(1e-6), "targets: the teacher's softened probabilities");
    }

    [Test]
    public void WeightedTargetsGiveTheCrossEntropyOfTheLabelledRowsOnly()
    {
        // The label term: one-hot rows weighted N / (labelled rows) for rows 0 and 2, zero rows for the others.
        const int rows = 4, classes = 5;
        var student = Numerics.RandomArray(rows * classes, seed: 9, scale: 2f);
        int[] labels = [3, -1, 0, -1];
        var targets = new float[rows * classes];
        targets[(0 * classes) + 3] = 2f;
        targets[(2 * classes) + 0] = 2f;
        using var backend = new CpuBackend();
        using var loss = new DistillationLoss(backend, rows, classes, temperature: 1f);
        using var s = Tensor(backend, student, rows, classes);
        backend.CopyFromHost(targets, loss.Targets);
        var value = Numerics.ToArray(backend, loss.Forward(s))[0];
        var gradient = Numerics.ToArray(backend, loss.Backward());

        var s64 = Array.ConvertAll(student, v => (double)v);
        var crossEntropy = new[] { 0, 2 }.Average(i =>
        {
            var row = s64.AsSpan(i * classes, classes).ToArray();
            var max = row.Max();
            return max + Math.Log(row.Sum(v => Math.Exp(v - max))) - row[labels[i]];
        });
        Assert.That(value, Is.EqualTo(crossEntropy).Within(1e-5), "mean cross-entropy of the labelled rows");
        var t64 = Array.ConvertAll(targets, v => (double)v);
        Numerics.AssertClose(gradient, Numerics.FiniteDifferenceGradient(s64, () => Reference(s64, t64, rows, classes, 1)), 1e-5, "dL/ds against central differences");
        Assert.That(gradient.AsSpan(classes, classes).ToArray(), Is.All.EqualTo(0f), "no gradient on an unlabelled row");
    }

    [Test]
    public void ArgumentsAreChecked()
    {
        using var backend = new CpuBackend();
        Assert.Throws<ArgumentOutOfRangeException>(() => new DistillationLoss(backend, 2, 3, 0f).Dispose());
        using var loss = new DistillationLoss(backend, 2, 3, 1f);
        Assert.Throws<InvalidOperationException>(() => loss.Backward());
        using var wrong = backend.Allocate(new TensorShape(3, 3));
        Assert.Throws<ArgumentException>(() => loss.Forward(wrong));
    }

    private static Tensor Tensor(IBackend backend, float[] values, int rows, int cols)
    {
        var tensor = backend.Allocate(new TensorShape(rows, cols));
        backend.CopyFromHost(values, tensor);
        return tensor;
    }
}
