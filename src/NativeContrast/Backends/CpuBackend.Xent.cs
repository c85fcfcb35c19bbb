namespace NativeContrast.Backends;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

public sealed partial class CpuBackend
{
    public void SoftmaxCrossEntropyForward(Tensor logits, Tensor labels, Tensor losses)
    {
        int rows = logits.Rows, cols = logits.Cols;
        Check.Length(labels.Length, rows, labels.Describe() + " (one label per row of logits)");
        Check.Length(losses.Length, rows, losses.Describe());
        var xs = CpuArray(logits);
        var ls = CpuArray(labels);
        var rs = CpuArray(losses);
        CpuParallel.For(rows, cols * 4L, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var row = xs.AsSpan(i * cols, cols);
                var label = XentLabel(ls[i], cols);
                var max = TensorPrimitives.Max<float>(row);
                double sum = 0;
                foreach (var v in row)
                {
                    sum += Math.Exp(v - max);
                }
                rs[i] = label < 0 ? float.NaN : (float)(max + Math.Log(sum) - row[label]);
            }
        });
    }

    public void SoftmaxCrossEntropyBackward(Tensor logits, Tensor labels, float scale, Tensor dlogits)
    {
        Check.SameShape(logits, dlogits);
        int rows = logits.Rows, cols = logits.Cols;
        Check.Length(labels.Length, rows, labels.Describe() + " (one label per row of logits)");
        SoftmaxRows(logits, dlogits);
        var ls = CpuArray(labels);
        var ds = CpuArray(dlogits);
        for (var i = 0; i < rows; i++)
        {
            var row = ds.AsSpan(i * cols, cols);
            var label = XentLabel(ls[i], cols);
            if (label < 0)
            {
                row.Fill(float.NaN);
                continue;
            }
            row[label] -= 1f;
            TensorPrimitives.Multiply(row, scale, row);
        }
    }

    /// <summary>The class index a float label holds, or −1 when it is not an integer in [0, classes).</summary>
    private static int XentLabel(float label, int classes) =>
        label >= 0f && label < classes && label == MathF.Floor(label) ? (int)label : -1;
}
