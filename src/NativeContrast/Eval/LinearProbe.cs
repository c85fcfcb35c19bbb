namespace NativeContrast.Eval;

using NativeContrast.Backends;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>How the linear probe trains: SGD with Nesterov momentum and a cosine schedule over standardised features.</summary>
public sealed record LinearProbeOptions
{
    public int Epochs { get; init; } = 100;

    public int BatchSize { get; init; } = 256;

    public float LearningRate { get; init; } = 0.1f;

    public float Momentum { get; init; } = 0.9f;

    public float WeightDecay { get; init; } = 1e-5f;

    public ulong Seed { get; init; }
}

/// <summary>The probe's test accuracy and its final mean training loss (how far it converged).</summary>
public sealed record LinearProbeResult(Accuracy Test, double TrainLoss, int Epochs);

/// <summary>
/// Linear evaluation on frozen features: the features are computed once, standardised with the training set's
/// per-dimension mean and deviation, and a linear classifier (the engine's <see cref="LinearHead"/>, softmax
/// cross-entropy and <see cref="Sgd"/>) is trained on them for a fixed number of epochs, as multinomial logistic
/// regression. The same code is the raw-pixel baseline when given <see cref="FeatureSet.FromPixels"/>.
/// </summary>
public static class LinearProbe
{
    public static LinearProbeResult Train(FeatureSet train, FeatureSet test, LinearProbeOptions? options = null, IBackend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(test);
        options ??= new LinearProbeOptions();
        if (train.Dim != test.Dim)
        {
            throw new ArgumentException($"train features have {train.Dim} dimensions, test features {test.Dim}", nameof(test));
        }
        if (train.Labels.Any(l => l < 0))
        {
            throw new ArgumentException("the linear probe needs a label on every training image", nameof(train));
        }
        var batch = Math.Min(options.BatchSize, train.Count);
        if (batch < 1 || options.Epochs < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"the probe needs at least one training image and one epoch (got {train.Count} images, {options.Epochs} epochs)");
        }
        var owned = backend is null ? new CpuBackend() : null;
        var compute = backend ?? owned!;
        try
        {
            var classes = Math.Max(train.Classes, test.Classes);
            var (mean, scale) = Standardization(train);
            var trainValues = Standardize(train, mean, scale);
            var testValues = Standardize(test, mean, scale);

            var layout = new ArenaLayout();
            using var head = LinearHead.Classifier(layout, train.Dim, classes);
            using var arena = new ParameterArena(compute, layout, optimizerStateSlots: 1);
            head.Bind(arena);
            head.Initialize(options.Seed);
            var stepsPerEpoch = train.Count / batch;
            using var sgd = new Sgd(arena, options.LearningRate, options.Momentum, options.WeightDecay, nesterov: true)
            {
                Schedule = new LearningRateSchedule(options.LearningRate, (long)options.Epochs * stepsPerEpoch),
            };
            using var loss = new SoftmaxCrossEntropy(compute, batch, classes);
            using var x = compute.Allocate(new TensorShape(batch, train.Dim), "probe features");
            using var y = compute.Allocate(new TensorShape(batch), "probe labels");
            var plan = head.PlanFor(x.Shape);
            var hostX = new float[batch * train.Dim];
            var hostY = new float[batch];
            var lossValue = new float[1];
            var random = new Random(unchecked((int)options.Seed ^ 0x5EED));
            var order = Enumerable.Range(0, train.Count).ToArray();
            double epochLoss = 0;
            for (var epoch = 0; epoch < options.Epochs; epoch++)
            {
                random.Shuffle(order);
                epochLoss = 0;
                for (var step = 0; step < stepsPerEpoch; step++)
                {
                    for (var r = 0; r < batch; r++)
                    {
                        var i = order[(step * batch) + r];
                        trainValues.AsSpan(i * train.Dim, train.Dim).CopyTo(hostX.AsSpan(r * train.Dim));
                        hostY[r] = train.Labels[i];
                    }
                    compute.CopyFromHost(hostX, x);
                    compute.CopyFromHost(hostY, y);
                    sgd.ZeroGradients();
                    var logits = plan.Forward(x, training: true);
                    compute.CopyToHost(loss.Forward(logits, y), lossValue);
                    epochLoss += lossValue[0];
                    plan.Backward(loss.Backward(logits, y));
                    sgd.Step();
                }
            }
            var accuracy = Score(plan, x, testValues, test, compute);
            return new LinearProbeResult(accuracy, epochLoss / stepsPerEpoch, options.Epochs);
        }
        finally
        {
            owned?.Dispose();
        }
    }

    private static Accuracy Score(Plan plan, Tensor x, float[] values, FeatureSet set, IBackend backend)
    {
        var batch = x.Rows;
        var dim = set.Dim;
        var classes = plan.Output.Cols;
        var hostX = new float[batch * dim];
        var logits = new float[batch * classes];
        int top1 = 0, top5 = 0;
        for (var start = 0; start < set.Count; start += batch)
        {
            var rows = Math.Min(batch, set.Count - start);
            Array.Clear(hostX);
            values.AsSpan(start * dim, rows * dim).CopyTo(hostX);
            backend.CopyFromHost(hostX, x);
            backend.CopyToHost(plan.Forward(x, training: false), logits);
            for (var r = 0; r < rows; r++)
            {
                var row = logits.AsSpan(r * classes, classes);
                var label = set.Labels[start + r];
                var target = row[label];
                // Rank of the true class: classes scoring higher (or equal with a lower index) come before it.
                var rank = 0;
                for (var c = 0; c < classes; c++)
                {
                    rank += row[c] > target || (row[c] == target && c < label) ? 1 : 0;
                }
                top1 += rank == 0 ? 1 : 0;
                top5 += rank < 5 ? 1 : 0;
            }
        }
        return new Accuracy(set.Count == 0 ? 0 : top1 / (double)set.Count, set.Count == 0 ? 0 : top5 / (double)set.Count, set.Count);
    }

    private static (double[] Mean, double[] Scale) Standardization(FeatureSet set)
    {
        var mean = new double[set.Dim];
        var square = new double[set.Dim];
        for (var i = 0; i < set.Count; i++)
        {
            var row = set.Row(i);
            for (var d = 0; d < set.Dim; d++)
            {
                mean[d] += row[d];
                square[d] += (double)row[d] * row[d];
            }
        }
        var scale = new double[set.Dim];
        for (var d = 0; d < set.Dim; d++)
        {
            mean[d] /= Math.Max(1, set.Count);
            var variance = (square[d] / Math.Max(1, set.Count)) - (mean[d] * mean[d]);
            // A constant dimension (a border pixel) stays 0 instead of dividing by nothing.
            scale[d] = variance > 1e-12 ? 1 / Math.Sqrt(variance) : 0;
        }
        return (mean, scale);
    }

    private static float[] Standardize(FeatureSet set, double[] mean, double[] scale)
    {
        var values = new float[set.Values.Length];
        Parallel.For(0, set.Count, i =>
        {
            for (var d = 0; d < set.Dim; d++)
            {
                values[(i * set.Dim) + d] = (float)((set.Values[(i * set.Dim) + d] - mean[d]) * scale[d]);
            }
        });
        return values;
    }
}
