namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>
/// A batch-norm layer's arena tensors. Weight (gamma) and Bias (beta) are null when the layer is not affine;
/// BatchesTracked (a one-element counter, PyTorch's num_batches_tracked) may be null.
/// </summary>
public readonly record struct BatchNormParameters(Tensor? Weight, Tensor? Bias, Tensor RunningMean, Tensor RunningVar, Tensor? BatchesTracked);

/// <summary>How a batch-norm call behaves: batch or running statistics, the fused ReLU, PyTorch's momentum and eps.</summary>
public readonly record struct BatchNormMode(bool Training, bool Relu, float Momentum = 0.1f, float Epsilon = 1e-5f);

/// <summary>
/// SyncBN: a training-mode batch norm whose statistics are those of the rows of every rank that shares the batch.
/// <see cref="Buffer"/> holds 2·C + 1 floats on the backend; <see cref="SumAcrossRanks"/> sums a view of it in place
/// over the ranks (an all-reduce, queued on the backend's stream on a device). The forward sums (Σx, rows), then
/// Σ(x − mean)² with the global mean (two passes, as the single-process op, so no variance is lost to cancellation);
/// the backward sums (Σg, Σg·(x − mean), rows). Every rank must run the same layers in the same order.
/// </summary>
public sealed record BatchNormSync(Tensor Buffer, Action<Tensor> SumAcrossRanks)
{
    /// <summary>Floats of <see cref="Buffer"/> for <paramref name="channels"/> channels.</summary>
    public static int BufferLength(int channels) => (2 * channels) + 1;
}

/// <summary>
/// Batch normalisation over the rows of x read as [rows, C] (NHWC activations for BatchNorm2d, [N, C] for
/// BatchNorm1d), with an optional residual added and ReLU applied after it (ResNet's block tail fused in one pass).
/// </summary>
public partial interface IBackend
{
    /// <summary>Elements of scratch memory <see cref="BatchNormForward"/> and <see cref="BatchNormBackward"/> need for [rows, channels].</summary>
    long BatchNormWorkspaceElements(int rows, int channels);

    /// <summary>
    /// y ← act(gamma·(x − mean)·invstd + beta [+ residual]) with act = ReLU when mode.Relu.
    /// Training: mean and biased variance of the batch; running_mean ← (1 − m)·running_mean + m·mean and
    /// running_var ← (1 − m)·running_var + m·var·rows/(rows − 1) (PyTorch's unbiased update); BatchesTracked += 1.
    /// Evaluation: the running statistics. savedMean and savedInvStd receive the statistics used, for the backward.
    /// With <paramref name="sync"/> in training, mean, variance and rows are those of every rank's rows together.
    /// </summary>
    void BatchNormForward(Tensor x, Tensor? residual, Tensor y, BatchNormParameters parameters, Tensor savedMean, Tensor savedInvStd, BatchNormMode mode, Tensor workspace, BatchNormSync? sync = null);

    /// <summary>
    /// Gradients of <see cref="BatchNormForward"/>: with g = dy masked by y &gt; 0 when mode.Relu (y is the forward
    /// output), dx ← the gradient through the normalisation (through the batch statistics when mode.Training),
    /// residualGradient ← g when given, weightGradient += Σ g·x̂ and biasGradient += Σ g when given.
    /// With <paramref name="sync"/> in training, dx goes through the global batch statistics (Σ g and Σ g·x̂ over every
    /// rank's rows), while the weight and bias gradients stay this rank's sums (the gradient all-reduce adds the ranks').
    /// </summary>
    void BatchNormBackward(Tensor x, Tensor y, Tensor dy, Tensor dx, Tensor? residualGradient, Tensor? weight, Tensor savedMean, Tensor savedInvStd, Tensor? weightGradient, Tensor? biasGradient, BatchNormMode mode, Tensor workspace, BatchNormSync? sync = null);
}
