namespace NativeContrast.Methods;

using NativeContrast.Backends;
using NativeContrast.Eval;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// The step statistics of the methods that train a classifier, in the trainer's [loss, mean positive cosine, top-1]
/// layout: the loss, NaN for the cosine (no pairs: left out of metrics), and the share of the batch whose highest logit
/// is the reference class (the label, or the teacher's class). Reading the logits waits for the device, as the trainer's
/// read of the statistics does anyway; the host buffers are made once.
/// </summary>
internal sealed class ClassifierStats : IDisposable
{
    private readonly IBackend _backend;
    private readonly float[] _logits;
    private readonly float[] _values = new float[3];

    public ClassifierStats(IBackend backend, int rows, int classes)
    {
        _backend = backend;
        Classes = classes;
        _logits = new float[rows * classes];
        Tensor = backend.Allocate(new TensorShape(3), "classifier stats");
    }

    public int Classes { get; }

    public Tensor Tensor { get; }

    /// <summary>Writes [loss, NaN, top-1 of <paramref name="logits"/> against <paramref name="reference"/>] and returns the tensor.</summary>
    public Tensor Write(float loss, Tensor logits, ReadOnlySpan<int> reference)
    {
        _backend.CopyToHost(logits, _logits);
        var hits = 0;
        for (var i = 0; i < reference.Length; i++)
        {
            hits += ClassifierAccuracy.Rank(_logits.AsSpan(i * Classes, Classes), reference[i]) == 0 ? 1 : 0;
        }
        _values[0] = loss;
        _values[1] = float.NaN;
        _values[2] = hits / (float)Math.Max(1, reference.Length);
        _backend.CopyFromHost(_values, Tensor);
        return Tensor;
    }

    /// <summary>The class of the highest logit of each row of <paramref name="logits"/> (read to the host), into <paramref name="classes"/>.</summary>
    public void Argmax(Tensor logits, Span<int> classes)
    {
        _backend.CopyToHost(logits, _logits);
        for (var i = 0; i < classes.Length; i++)
        {
            var row = _logits.AsSpan(i * Classes, Classes);
            var best = 0;
            for (var c = 1; c < row.Length; c++)
            {
                best = row[c] > row[best] ? c : best;
            }
            classes[i] = best;
        }
    }

    /// <summary>Reads one value of [1] on the backend (waits for the device).</summary>
    public float Read(Tensor scalar)
    {
        _backend.CopyToHost(scalar, _values.AsSpan(0, 1));
        return _values[0];
    }

    public void Dispose() => Tensor.Dispose();
}
