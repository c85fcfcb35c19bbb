namespace NativeContrast.Tests.Nn;

using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// End to end on the CPU: a small ResNet (one block per stage, width ×0.25, CIFAR stem) and a linear classifier
/// learn four synthetic texture classes with plain SGD (θ ← θ − lr·∇θ through backend.Axpy over the arena).
/// </summary>
public class SupervisedSanityTests
{
    private const int Size = 16;
    private const int Classes = 4;

    [Test]
    public void SmallResNetLearnsSyntheticPatterns()
    {
        const int batch = 32, steps = 60;
        const float learningRate = 0.1f;
        using var t = new Harness();
        var encoder = new ResNet(t.Layout, new ResNetOptions { Bottleneck = false, Layers = [1, 1, 1, 1], Stem = ResNetStem.Cifar, WidthMultiplier = 0.25 });
        var classifier = LinearHead.Classifier(t.Layout, encoder.FeatureDim, Classes);
        using var model = new Sequential(encoder, classifier);
        t.CreateArena();
        model.Bind(t.Arena);
        model.Initialize(seed: 1);

        var input = new TensorShape(batch, Size, Size, 3);
        var plan = model.PlanFor(input);
        var images = t.Zeros(input, "images");
        var labels = t.Zeros(new TensorShape(batch), "labels");
        using var xent = new SoftmaxCrossEntropy(t.Backend, batch, Classes);
        var rng = new Random(2);
        var losses = new List<float>();
        for (var step = 0; step < steps; step++)
        {
            var (x, y) = Generate(rng, batch);
            t.Backend.CopyFromHost(x, images);
            t.Backend.CopyFromHost(y, labels);
            t.Backend.Fill(t.Arena.Gradients, 0f);
            var logits = plan.Forward(images, training: true);
            losses.Add(t.Read(xent.Forward(logits, labels))[0]);
            plan.Backward(xent.Backward(logits, labels));
            t.Backend.Axpy(-learningRate, t.Arena.Gradients, t.Arena.TrainableValues);
        }

        // Held-out samples, evaluation mode (running statistics).
        var correct = 0;
        for (var round = 0; round < 4; round++)
        {
            var (x, y) = Generate(rng, batch);
            t.Backend.CopyFromHost(x, images);
            var logits = t.Read(plan.Forward(images, training: false));
            for (var i = 0; i < batch; i++)
            {
                var row = logits.AsSpan(i * Classes, Classes);
                correct += row.IndexOf(System.Numerics.Tensors.TensorPrimitives.Max<float>(row)) == (int)y[i] ? 1 : 0;
            }
        }
        var accuracy = correct / (4.0 * batch);
        var first = losses[0];
        var last = losses.TakeLast(10).Average();
        Assert.That(losses.All(float.IsFinite), Is.True, "every loss is finite");
        Assert.That(first, Is.EqualTo(Math.Log(Classes)).Within(0.3), "an untrained classifier starts near ln(classes)");
        Assert.That(last, Is.LessThan(0.25 * first), $"loss fell from {first:F3} to {last:F3}");
        Assert.That(accuracy, Is.GreaterThan(0.9), $"held-out accuracy {accuracy:P0} (chance 25%)");
    }

    /// <summary>Stripes (horizontal, vertical, diagonal) or a checkerboard, random phase, colour and noise.</summary>
    private static (float[] Images, float[] Labels) Generate(Random rng, int batch)
    {
        var images = new float[batch * Size * Size * 3];
        var labels = new float[batch];
        for (var n = 0; n < batch; n++)
        {
            var label = rng.Next(Classes);
            labels[n] = label;
            var phase = rng.Next(4);
            var colour = new[] { (float)rng.NextDouble() + 0.5f, (float)rng.NextDouble() + 0.5f, (float)rng.NextDouble() + 0.5f };
            for (var h = 0; h < Size; h++)
            {
                for (var w = 0; w < Size; w++)
                {
                    var on = label switch
                    {
                        0 => (h + phase) / 2 % 2 == 0,
                        1 => (w + phase) / 2 % 2 == 0,
                        2 => (h + w + phase) / 2 % 2 == 0,
                        _ => ((h + phase) / 4 % 2) == ((w + phase) / 4 % 2),
                    };
                    for (var c = 0; c < 3; c++)
                    {
                        var noise = (float)(rng.NextDouble() - 0.5) * 0.6f;
                        images[(((n * Size) + h) * Size + w) * 3 + c] = (on ? colour[c] : -colour[c]) + noise;
                    }
                }
            }
        }
        return (images, labels);
    }
}
