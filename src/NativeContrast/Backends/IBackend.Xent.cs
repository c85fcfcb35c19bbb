namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>Softmax cross-entropy against integer class labels (stored as floats: exact below 2^24).</summary>
public partial interface IBackend
{
    /// <summary>losses[i] ← log Σ_j exp(logits[i, j]) − logits[i, labels[i]] (max-shifted). An out-of-range label gives NaN.</summary>
    void SoftmaxCrossEntropyForward(Tensor logits, Tensor labels, Tensor losses);

    /// <summary>dlogits[i, j] ← scale·(softmax(logits[i, :])[j] − [j = labels[i]]).</summary>
    void SoftmaxCrossEntropyBackward(Tensor logits, Tensor labels, float scale, Tensor dlogits);
}
