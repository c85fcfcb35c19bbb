namespace NativeContrast.Backends;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

public sealed partial class CpuBackend
{
    /// <summary>oneDNN's direct convolution when this backend uses it, else null (the layer runs im2col + GEMM).</summary>
    public IConvolution? CreateConvolution(Conv2dGeometry geometry, int outChannels)
    {
        geometry.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(outChannels, 1);
        return Libraries.Dnnl is { } engine ? new DnnlConvolution(engine, geometry, outChannels) : null;
    }

    public void Im2Col(Tensor x, Tensor columns, Conv2dGeometry geometry, int firstSample, int samples)
    {
        var g = geometry;
        ConvChecks.Im2Col(x, columns, g, firstSample, samples);
        var xs = CpuArray(x);
        var cs = CpuArray(columns);
        int rows = samples * g.OutPositions, cols = g.Columns, c = g.Channels;
        CpuParallel.For(rows, cols, (start, end) =>
        {
            for (var r = start; r < end; r++)
            {
                var n = firstSample + (r / g.OutPositions);
                var oh = r % g.OutPositions / g.OutWidth;
                var ow = r % g.OutWidth;
                var row = cs.AsSpan(r * cols, cols);
                for (var kh = 0; kh < g.Kernel; kh++)
                {
                    var ih = (oh * g.Stride) - g.Padding + kh;
                    for (var kw = 0; kw < g.Kernel; kw++)
                    {
                        var iw = (ow * g.Stride) - g.Padding + kw;
                        var destination = row.Slice(((kh * g.Kernel) + kw) * c, c);
                        if (ih < 0 || ih >= g.Height || iw < 0 || iw >= g.Width)
                        {
                            destination.Clear();
                        }
                        else
                        {
                            xs.AsSpan((((n * g.Height) + ih) * g.Width + iw) * c, c).CopyTo(destination);
                        }
                    }
                }
            }
        });
    }

    public void Col2Im(Tensor columns, Tensor dx, Conv2dGeometry geometry, int firstSample, int samples, bool accumulate)
    {
        var g = geometry;
        ConvChecks.Im2Col(dx, columns, g, firstSample, samples);
        var cs = CpuArray(columns);
        var ds = CpuArray(dx);
        int cols = g.Columns, c = g.Channels;
        // One task per input row (n, ih): every dx element gathers the column entries that read it.
        CpuParallel.For(samples * g.Height, (long)g.Width * cols, (start, end) =>
        {
            for (var t = start; t < end; t++)
            {
                var local = t / g.Height;
                var ih = t % g.Height;
                var n = firstSample + local;
                for (var iw = 0; iw < g.Width; iw++)
                {
                    var destination = ds.AsSpan((((n * g.Height) + ih) * g.Width + iw) * c, c);
                    if (!accumulate)
                    {
                        destination.Clear();
                    }
                    for (var kh = 0; kh < g.Kernel; kh++)
                    {
                        var ohScaled = ih + g.Padding - kh;
                        if (ohScaled < 0 || ohScaled % g.Stride != 0 || ohScaled / g.Stride >= g.OutHeight)
                        {
                            continue;
                        }
                        var oh = ohScaled / g.Stride;
                        for (var kw = 0; kw < g.Kernel; kw++)
                        {
                            var owScaled = iw + g.Padding - kw;
                            if (owScaled < 0 || owScaled % g.Stride != 0 || owScaled / g.Stride >= g.OutWidth)
                            {
                                continue;
                            }
                            var r = (((local * g.OutHeight) + oh) * g.OutWidth) + (owScaled / g.Stride);
                            TensorPrimitives.Add(destination, cs.AsSpan((r * cols) + (((kh * g.Kernel) + kw) * c), c), destination);
                        }
                    }
                }
            }
        });
    }

    public void PackConvWeight(Tensor weight, Tensor packed)
    {
        var (o, i, k) = ConvChecks.PackedWeight(weight, packed);
        var w = Cpu(weight);
        var p = Cpu(packed);
        for (var oc = 0; oc < o; oc++)
        {
            for (var ic = 0; ic < i; ic++)
            {
                for (var kk = 0; kk < k * k; kk++)
                {
                    p[(oc * k * k * i) + (kk * i) + ic] = w[(((oc * i) + ic) * k * k) + kk];
                }
            }
        }
    }

    public void UnpackConvWeightGradient(Tensor packedGradient, Tensor weightGradient)
    {
        var (o, i, k) = ConvChecks.PackedWeight(weightGradient, packedGradient);
        var p = Cpu(packedGradient);
        var w = Cpu(weightGradient);
        for (var oc = 0; oc < o; oc++)
        {
            for (var ic = 0; ic < i; ic++)
            {
                for (var kk = 0; kk < k * k; kk++)
                {
                    w[(((oc * i) + ic) * k * k) + kk] += p[(oc * k * k * i) + (kk * i) + ic];
                }
            }
        }
    }

    public void AddBias(Tensor y, Tensor bias)
    {
        int rows = y.Rows, cols = y.Cols;
        Check.Length(bias.Length, cols, bias.Describe());
        var ys = CpuArray(y);
        var bs = CpuArray(bias);
        CpuParallel.For(rows, cols, (start, end) =>
        {
            for (var r = start; r < end; r++)
            {
                var row = ys.AsSpan(r * cols, cols);
                TensorPrimitives.Add(row, bs, row);
            }
        });
    }

    public void AccumulateBiasGradient(Tensor dy, Tensor biasGradient)
    {
        int rows = dy.Rows, cols = dy.Cols;
        Check.Length(biasGradient.Length, cols, biasGradient.Describe());
        var sums = new double[cols];
        ColumnSums(CpuArray(dy), rows, cols, sums);
        var db = Cpu(biasGradient);
        for (var c = 0; c < cols; c++)
        {
            db[c] += (float)sums[c];
        }
    }
}

/// <summary>Shape checks shared by the convolution ops of both backends.</summary>
internal static class ConvChecks
{
    public static void Im2Col(Tensor image, Tensor columns, Conv2dGeometry g, int firstSample, int samples)
    {
        g.Validate();
        if (image.Shape != g.InputShape)
        {
            throw new ArgumentException($"{image.Describe()} does not match the convolution input {g}");
        }
        if (firstSample < 0 || samples < 0 || firstSample + samples > g.Batch)
        {
            throw new ArgumentOutOfRangeException(nameof(firstSample), $"samples [{firstSample}, {firstSample + samples}) are outside a batch of {g.Batch}");
        }
        Check.Length(columns.Length, (long)samples * g.OutPositions * g.Columns, columns.Describe() + " (im2col columns)");
    }

    /// <summary>(out, in, k) of a [out, in, k, k] weight whose packed form is [out, k·k·in].</summary>
    public static (int Out, int In, int Kernel) PackedWeight(Tensor weight, Tensor packed)
    {
        var s = weight.Shape;
        if (s.Rank != 4 || s[2] != s[3])
        {
            throw new ArgumentException($"{weight.Describe()}: expected a square convolution weight [out, in, k, k]");
        }
        Check.Length(packed.Length, weight.Length, packed.Describe());
        return (s[0], s[1], s[2]);
    }

    public static void Pool(Tensor x, Tensor y, Conv2dGeometry g)
    {
        g.Validate();
        if (x.Shape != g.InputShape)
        {
            throw new ArgumentException($"{x.Describe()} does not match the pooling input {g}");
        }
        if (y.Shape != g.OutputShape(g.Channels))
        {
            throw new ArgumentException($"{y.Describe()}: expected {g.OutputShape(g.Channels)} for {g}");
        }
        if (2 * g.Padding > g.Kernel)
        {
            throw new ArgumentException($"padding {g.Padding} exceeds half the {g.Kernel}x{g.Kernel} window (PyTorch's limit)");
        }
    }
}
