namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// The CPU backward ops against central finite differences of the forward function computed in double: the loss is
/// L(x) = Σ w ⊙ f(x) for fixed random weights w, so dL/dx is the backward op applied to dy = w.
/// </summary>
public class CpuGradientTests
{
    [Test]
    public void ReluBackwardMatchesFiniteDifferences()
    {
        const int n = 41;
        using var cpu = new CpuBackend();
        var x = Numerics.RandomArray(n, 50, scale: 2f);
        for (var i = 0; i < n; i++)
        {
            // Keep every input away from the kink at 0, where the finite difference straddles two slopes.
            if (MathF.Abs(x[i]) < 0.05f)
            {
                x[i] = 0.5f;
            }
        }
        var w = Numerics.RandomArray(n, 51);
        using var tx = cpu.FromArray(x, new TensorShape(n), "x");
        using var dy = cpu.FromArray(w, new TensorShape(n), "dy");
        using var y = cpu.Allocate(new TensorShape(n), "y");
        using var dx = cpu.Allocate(new TensorShape(n), "dx");
        cpu.Relu(tx, y);
        cpu.ReluBackward(y, dy, dx);

        var xd = x.Select(v => (double)v).ToArray();
        var numeric = Numerics.FiniteDifferenceGradient(xd, () =>
        {
            double loss = 0;
            for (var i = 0; i < n; i++)
            {
                loss += w[i] * Math.Max(xd[i], 0);
            }
            return loss;
        });
        Numerics.AssertClose(dx.Span, numeric, Numerics.Fp32Tolerance, "relu dx");
        Assert.That(dx.Span.ToArray().Count(v => v == 0f), Is.GreaterThan(0).And.LessThan(n), "both branches are exercised");
    }

    [TestCase(1, 1)]
    [TestCase(3, 7)]
    [TestCase(5, 33)]
    public void L2NormalizeBackwardMatchesFiniteDifferences(int rows, int cols)
    {
        using var cpu = new CpuBackend();
        var x = Numerics.RandomArray(rows * cols, 60, scale: 2f);
        var w = Numerics.RandomArray(rows * cols, 61);
        using var tx = cpu.FromArray(x, new TensorShape(rows, cols), "x");
        using var dy = cpu.FromArray(w, new TensorShape(rows, cols), "dy");
        using var y = cpu.Allocate(new TensorShape(rows, cols), "y");
        using var norms = cpu.Allocate(new TensorShape(rows), "norms");
        using var dx = cpu.Allocate(new TensorShape(rows, cols), "dx");
        cpu.L2NormalizeRows(tx, y, norms);
        cpu.L2NormalizeRowsBackward(y, norms, dy, dx);

        var xd = x.Select(v => (double)v).ToArray();
        var numeric = Numerics.FiniteDifferenceGradient(xd, () =>
        {
            double loss = 0;
            for (var i = 0; i < rows; i++)
            {
                double squares = 0;
                for (var j = 0; j < cols; j++)
                {
                    squares += xd[(i * cols) + j] * xd[(i * cols) + j];
                }
                var norm = Math.Sqrt(squares);
                for (var j = 0; j < cols; j++)
                {
                    loss += w[(i * cols) + j] * xd[(i * cols) + j] / norm;
                }
            }
            return loss;
        });
        Numerics.AssertClose(dx.Span, numeric, Numerics.Fp32Tolerance, "l2 normalize dx");
    }

    [Test]
    public void L2NormalizeBackwardIsOrthogonalToTheOutput()
    {
        // y has unit norm, so moving along y does not change y/|y|: <dx, y> must vanish for any dy.
        const int rows = 4, cols = 19;
        using var cpu = new CpuBackend();
        using var x = Numerics.RandomTensor(cpu, new TensorShape(rows, cols), 62, scale: 3f);
        using var dy = Numerics.RandomTensor(cpu, new TensorShape(rows, cols), 63);
        using var y = cpu.Allocate(new TensorShape(rows, cols));
        using var norms = cpu.Allocate(new TensorShape(rows));
        using var dx = cpu.Allocate(new TensorShape(rows, cols));
        cpu.L2NormalizeRows(x, y, norms);
        cpu.L2NormalizeRowsBackward(y, norms, dy, dx);
        for (var i = 0; i < rows; i++)
        {
            double dot = 0;
            for (var j = 0; j < cols; j++)
            {
                dot += (double)dx.Span[(i * cols) + j] * y.Span[(i * cols) + j];
            }
            Assert.That(dot, Is.EqualTo(0).Within(1e-6), $"row {i}");
        }
    }
}
