namespace NativeContrast.Eval;

using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// Top-1 and top-5 of a classifier on features: a module chain from features [N, D] to class logits [N, classes] (a
/// method's <see cref="Methods.Method.Classifier"/>), run in eval mode (BatchNorm on running statistics) a batch at a
/// time. The last partial batch is padded with zeros, which eval-mode layers keep to their own rows, so every feature
/// row counts. One plan is made per call and released after it: evaluation runs once an epoch, not once a step.
/// </summary>
public static class ClassifierAccuracy
{
    public static Accuracy Evaluate(Module classifier, FeatureSet features, int batchSize = 256, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        ArgumentNullException.ThrowIfNull(features);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var backend = classifier.Backend;
        var dim = features.Dim;
        using var plan = classifier.Plan(new TensorShape(batchSize, dim));
        var classes = plan.Output.Cols;
        using var input = backend.Allocate(new TensorShape(batchSize, dim), "classifier eval features");
        var host = new float[batchSize * dim];
        var logits = new float[batchSize * classes];
        int top1 = 0, top5 = 0;
        for (var start = 0; start < features.Count; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            var rows = Math.Min(batchSize, features.Count - start);
            features.Values.AsSpan(start * dim, rows * dim).CopyTo(host);
            host.AsSpan(rows * dim).Clear();
            backend.CopyFromHost(host, input);
            var output = plan.Forward(input, training: false);
            backend.CopyToHost(output, logits);
            for (var r = 0; r < rows; r++)
            {
                var rank = Rank(logits.AsSpan(r * classes, classes), features.Labels[start + r]);
                top1 += rank < 1 ? 1 : 0;
                top5 += rank < 5 ? 1 : 0;
            }
        }
        var count = features.Count;
        return new Accuracy(count == 0 ? 0 : top1 / (double)count, count == 0 ? 0 : top5 / (double)count, count);
    }

    /// <summary>
    /// The place of <paramref name="label"/> when the classes are sorted by logit, best first (0: the prediction): the
    /// classes scoring higher, and those scoring the same with a lower index (argmax's first maximum). A label outside
    /// the logits (an unlabelled image) or a NaN logit ranks last.
    /// </summary>
    public static int Rank(ReadOnlySpan<float> logits, int label)
    {
        if (label < 0 || label >= logits.Length || float.IsNaN(logits[label]))
        {
            return logits.Length;
        }
        var target = logits[label];
        var rank = 0;
        for (var j = 0; j < logits.Length; j++)
        {
            rank += logits[j] > target || (logits[j] == target && j < label) ? 1 : 0;
        }
        return rank;
    }
}
