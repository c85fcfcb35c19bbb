namespace NativeContrast.Tests.Nn;

using NativeContrast.Nn;
using NativeContrast.Tensors;
using static NativeContrast.Tests.Support.Numerics;

/// <summary>
/// Checks a whole module (the wiring between layers, whose math the layer tests check) against a float64
/// reference network: the forward output, then for each trainable tensor and for the input a directional
/// derivative of L = Σ output·R along a random direction v restricted to it, by central differences of the
/// float64 reference, against ⟨∇L, v⟩ from the module's float32 backward.
/// Why float64: a float32 difference needs ε ≈ 1e-3, and then a few ReLUs change sides, each moving a random
/// directional derivative by about 1/√(units) — several percent. In float64 ε = 1e-6 crosses no kink.
/// A random direction's derivative can cancel to almost nothing, so the error is measured against its typical
/// size ‖g‖·‖v‖/√n when that is larger.
/// </summary>
internal static class GradientCheck
{
    public delegate double[] ReferenceForward(Func<string, double[]> parameters, double[] input);

    public static void Run(Harness t, Module model, TensorShape input, ReferenceForward reference, double tolerance)
    {
        using var plan = model.Plan(input, inputGradient: true);
        var xs = RandomArray(checked((int)input.Length), 101);
        var x = t.Tensor(xs, input, "x");
        var outputShape = model.OutputShape(input);
        var rs = RandomArray(checked((int)outputShape.Length), 102);
        var dy = t.Tensor(rs, outputShape, "dy");

        t.Backend.Fill(t.Arena.Gradients, 0f);
        var output = t.Read(plan.Forward(x, training: true));
        plan.Backward(dy);
        var gradients = t.Read(t.Arena.Gradients);
        var inputGradient = t.Read(plan.InputGradient!);

        var theta = Reference.ToDouble(t.Read(t.Arena.TrainableValues));
        var xd = Reference.ToDouble(xs);
        var rd = Reference.ToDouble(rs);
        double[] Parameter(double[] values, string name)
        {
            var view = t.Arena[name];
            return values.AsSpan((int)view.Offset, (int)view.Length).ToArray();
        }

        AssertClose(output, reference(name => Parameter(theta, name), xd), tolerance, "forward against the float64 network");

        const double epsilon = 1e-6;
        double Directional(double[] direction, bool alongInput)
        {
            double Loss(double sign)
            {
                var shifted = (alongInput ? xd : theta).Select((v, i) => v + (sign * epsilon * direction[i])).ToArray();
                var output = alongInput ? reference(name => Parameter(theta, name), shifted) : reference(name => Parameter(shifted, name), xd);
                return Reference.Dot(output, rd);
            }
            return (Loss(1) - Loss(-1)) / (2 * epsilon);
        }

        var failures = new List<string>();
        var seed = 200;
        foreach (var view in t.Arena.Views.Where(v => v.IsTrainable))
        {
            var direction = new double[theta.Length];
            Reference.ToDouble(RandomArray(checked((int)view.Length), seed++)).CopyTo(direction, (int)view.Offset);
            Compare(view.Name, Directional(direction, alongInput: false), gradients.AsSpan((int)view.Offset, (int)view.Length), direction.AsSpan((int)view.Offset, (int)view.Length));
        }
        Compare("input", Directional(Reference.ToDouble(RandomArray(xs.Length, seed)), alongInput: true), inputGradient, Reference.ToDouble(RandomArray(xs.Length, seed)));
        Assert.That(failures, Is.Empty, "directional derivatives disagree with the backward:\n" + string.Join("\n", failures));

        void Compare(string what, double numeric, ReadOnlySpan<float> gradient, ReadOnlySpan<double> direction)
        {
            double analytic = 0, gradientNorm = 0, directionNorm = 0;
            for (var i = 0; i < gradient.Length; i++)
            {
                analytic += gradient[i] * direction[i];
                gradientNorm += (double)gradient[i] * gradient[i];
                directionNorm += direction[i] * direction[i];
            }
            var typical = Math.Sqrt(gradientNorm * directionNorm / gradient.Length);
            var error = Math.Abs(numeric - analytic) / Math.Max(Math.Max(Math.Abs(numeric), typical), 1e-12);
            if (!(error <= tolerance))
            {
                failures.Add($"{what}: float64 difference {numeric:E5}, backward {analytic:E5} (relative error {error:E2})");
            }
        }
    }
}
