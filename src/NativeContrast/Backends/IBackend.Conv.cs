namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>
/// The geometry of a square 2-D convolution or pooling window over NHWC activations [batch, height, width, channels].
/// Output sizes follow PyTorch (floor mode): out = (in + 2·padding − kernel) / stride + 1.
/// </summary>
public readonly record struct Conv2dGeometry(int Batch, int Height, int Width, int Channels, int Kernel, int Stride, int Padding)
{
    public int OutHeight => ((Height + (2 * Padding) - Kernel) / Stride) + 1;

    public int OutWidth => ((Width + (2 * Padding) - Kernel) / Stride) + 1;

    /// <summary>Columns of the im2col matrix: one per (kh, kw, channel), channel fastest.</summary>
    public int Columns => Kernel * Kernel * Channels;

    /// <summary>Output positions of one sample (rows of the im2col matrix per sample).</summary>
    public int OutPositions => OutHeight * OutWidth;

    public TensorShape InputShape => new(Batch, Height, Width, Channels);

    /// <summary>The output shape for <paramref name="outChannels"/> output channels.</summary>
    public TensorShape OutputShape(int outChannels) => new(Batch, OutHeight, OutWidth, outChannels);

    /// <summary>The geometry of an NHWC input shape.</summary>
    public static Conv2dGeometry Of(TensorShape input, int kernel, int stride, int padding)
    {
        if (input.Rank != 4)
        {
            throw new ArgumentException($"expected an NHWC activation [batch, height, width, channels], got {input}");
        }
        var g = new Conv2dGeometry(input[0], input[1], input[2], input[3], kernel, stride, padding);
        g.Validate();
        return g;
    }

    public void Validate()
    {
        if (Kernel < 1 || Stride < 1 || Padding < 0)
        {
            throw new ArgumentException($"kernel {Kernel}, stride {Stride}, padding {Padding}: kernel and stride must be positive, padding non-negative");
        }
        if (Height + (2 * Padding) < Kernel || Width + (2 * Padding) < Kernel)
        {
            throw new ArgumentException($"a {Kernel}x{Kernel} window with padding {Padding} does not fit a {Height}x{Width} input");
        }
    }

    public override string ToString() =>
        $"[{Batch}, {Height}, {Width}, {Channels}] k{Kernel} s{Stride} p{Padding} -> {OutHeight}x{OutWidth}";
}

/// <summary>
/// Convolution building blocks over NHWC activations: im2col / col2im for a GEMM-based convolution, the permutation
/// between PyTorch's weight layout [out, in, kh, kw] and the GEMM's [out, kh, kw, in], and bias broadcasting.
/// </summary>
public partial interface IBackend
{
    /// <summary>
    /// columns[r, (kh·k + kw)·C + c] ← x[n, oh·s − p + kh, ow·s − p + kw, c] (zero outside the image) for the samples
    /// n ∈ [firstSample, firstSample + samples), with r = ((n − firstSample)·OH + oh)·OW + ow.
    /// x is the whole [N, H, W, C] input; columns is [samples·OH·OW, k·k·C].
    /// </summary>
    void Im2Col(Tensor x, Tensor columns, Conv2dGeometry geometry, int firstSample, int samples);

    /// <summary>
    /// The adjoint of <see cref="Im2Col"/>: dx[n, ih, iw, c] ← (accumulate ? dx : 0) + Σ over the (oh, ow, kh, kw) that
    /// read it of columns[r, (kh·k + kw)·C + c], for the same samples. Gathers (no atomics), so it is deterministic.
    /// </summary>
    void Col2Im(Tensor columns, Tensor dx, Conv2dGeometry geometry, int firstSample, int samples, bool accumulate);

    /// <summary>packed[o, (kh·k + kw)·I + i] ← weight[o, i, kh, kw]: PyTorch's layout to the im2col column order.</summary>
    void PackConvWeight(Tensor weight, Tensor packed);

    /// <summary>weightGradient[o, i, kh, kw] += packedGradient[o, (kh·k + kw)·I + i] (the inverse permutation, accumulated).</summary>
    void UnpackConvWeightGradient(Tensor packedGradient, Tensor weightGradient);

    /// <summary>y[r, c] += bias[c] for y read as a [rows, C] matrix.</summary>
    void AddBias(Tensor y, Tensor bias);

    /// <summary>biasGradient[c] += Σ_r dy[r, c] for dy read as a [rows, C] matrix.</summary>
    void AccumulateBiasGradient(Tensor dy, Tensor biasGradient);

    /// <summary>
    /// The backend's own whole convolution for one geometry and output width (a library's direct convolution, its
    /// primitives built once here), or null when the layer should drive im2col + GEMM through the ops above.
    /// The caller owns and disposes it.
    /// </summary>
    IConvolution? CreateConvolution(Conv2dGeometry geometry, int outChannels);
}

/// <summary>
/// A convolution over NHWC activations with the weight in PyTorch's [out, in, kh, kw] layout, for one geometry
/// (see <see cref="IBackend.CreateConvolution"/>). No bias: the layer adds it.
/// </summary>
public interface IConvolution : IDisposable
{
    /// <summary>What runs it, for profiles and logs (e.g. "oneDNN jit:avx512_core").</summary>
    string Implementation { get; }

    /// <summary>y [N, OH, OW, out] ← conv(x [N, H, W, in], weight [out, in, k, k]).</summary>
    void Forward(Tensor x, Tensor weight, Tensor y);

    /// <summary>
    /// dx ← (accumulate ? dx : 0) + the input gradient for dy. <paramref name="weight"/> holds the same values as in
    /// the last <see cref="Forward"/> (an implementation may reuse what it prepared from them there).
    /// </summary>
    void BackwardData(Tensor dy, Tensor weight, Tensor dx, bool accumulate);

    /// <summary>weightGradient [out, in, k, k] += the weight gradient for x and dy.</summary>
    void BackwardWeights(Tensor x, Tensor dy, Tensor weightGradient);
}
