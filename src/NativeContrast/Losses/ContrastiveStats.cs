namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// What a contrastive loss reports besides its value, computed in the same pass: the mean cosine similarity of the
/// positive pairs and the top-1 accuracy of the positive among all candidates (ties count as hits, as argmax
/// with the positive first does). Lives in a 3-float device tensor; <see cref="Read"/> is the only host sync.
/// </summary>
public readonly record struct ContrastiveStats(float Loss, float PositiveSimilarity, float Top1Accuracy)
{
    /// <summary>Copies a statistics tensor [loss, positive cosine, top-1] to the host (waits for the device).</summary>
    public static ContrastiveStats Read(IBackend backend, Tensor stats)
    {
        Span<float> values = stackalloc float[3];
        backend.CopyToHost(stats, values);
        return new ContrastiveStats(values[0], values[1], values[2]);
    }

    public override string ToString() => $"loss {Loss:F4}  pos-cos {PositiveSimilarity:F4}  top-1 {Top1Accuracy:P1}";
}
