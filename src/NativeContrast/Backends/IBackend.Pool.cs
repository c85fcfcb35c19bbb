namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>Pooling over NHWC activations: max pooling with a square window, and global average pooling.</summary>
public partial interface IBackend
{
    /// <summary>
    /// y[n, oh, ow, c] ← max over the window of x (padding never wins, as in PyTorch); argmax receives the position of
    /// the first maximum inside the window (kh·k + kw, stored as a float) for the backward.
    /// </summary>
    void MaxPool2dForward(Tensor x, Tensor y, Tensor argmax, Conv2dGeometry geometry);

    /// <summary>dx[n, ih, iw, c] ← Σ dy over the windows whose maximum was at (ih, iw): a gather, so deterministic.</summary>
    void MaxPool2dBackward(Tensor dy, Tensor argmax, Tensor dx, Conv2dGeometry geometry);

    /// <summary>y[n, c] ← mean over (h, w) of x[n, h, w, c].</summary>
    void GlobalAvgPoolForward(Tensor x, Tensor y);

    /// <summary>dx[n, h, w, c] ← dy[n, c] / (H·W).</summary>
    void GlobalAvgPoolBackward(Tensor dy, Tensor dx);
}
