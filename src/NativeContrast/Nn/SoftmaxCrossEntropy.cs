namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// Mean softmax cross-entropy over a batch, for supervised training and linear evaluation. Labels are class
/// indices stored as floats. The loss stays on the device (no synchronisation); read it when you need it.
/// </summary>
public sealed class SoftmaxCrossEntropy : IDisposable
{
    private readonly IBackend _backend;

    public SoftmaxCrossEntropy(IBackend backend, int batch, int classes)
    {
        _backend = backend;
        Losses = backend.Allocate(new TensorShape(batch), "xent.losses");
        Loss = backend.Allocate(new TensorShape(1), "xent.loss");
        LogitsGradient = backend.Allocate(new TensorShape(batch, classes), "xent.dlogits");
    }

    /// <summary>Per-sample losses [N].</summary>
    public Tensor Losses { get; }

    /// <summary>The mean loss [1].</summary>
    public Tensor Loss { get; }

    /// <summary>d(mean loss)/d(logits) [N, classes].</summary>
    public Tensor LogitsGradient { get; }

    public Tensor Forward(Tensor logits, Tensor labels)
    {
        _backend.SoftmaxCrossEntropyForward(logits, labels, Losses);
        _backend.Sum(Losses, Loss);
        _backend.Scale(Loss, 1f / Losses.Length, Loss);
        return Loss;
    }

    /// <summary>(softmax − one-hot) / N.</summary>
    public Tensor Backward(Tensor logits, Tensor labels)
    {
        _backend.SoftmaxCrossEntropyBackward(logits, labels, 1f / logits.Rows, LogitsGradient);
        return LogitsGradient;
    }

    public void Dispose()
    {
        Losses.Dispose();
        Loss.Dispose();
        LogitsGradient.Dispose();
    }
}
