namespace NativeContrast.Backends;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

public sealed partial class CpuBackend
{
    public void MaxPool2dForward(Tensor x, Tensor y, Tensor argmax, Conv2dGeometry geometry)
    {
        var g = geometry;
        ConvChecks.Pool(x, y, g);
        Check.SameShape(y, argmax);
        var xs = CpuArray(x);
        var ys = CpuArray(y);
        var idx = CpuArray(argmax);
        int c = g.Channels;
        CpuParallel.For(g.Batch * g.OutHeight, (long)g.OutWidth * g.Kernel * g.Kernel * c, (start, end) =>
        {
            for (var t = start; t < end; t++)
            {
                int n = t / g.OutHeight, oh = t % g.OutHeight;
                for (var ow = 0; ow < g.OutWidth; ow++)
                {
                    var o = (((n * g.OutHeight) + oh) * g.OutWidth + ow) * c;
                    for (var ch = 0; ch < c; ch++)
                    {
                        var best = float.NegativeInfinity;
                        var bestAt = -1;
                        for (var kh = 0; kh < g.Kernel; kh++)
                        {
                            var ih = (oh * g.Stride) - g.Padding + kh;
                            if (ih < 0 || ih >= g.Height)
                            {
                                continue;
                            }
                            for (var kw = 0; kw < g.Kernel; kw++)
                            {
                                var iw = (ow * g.Stride) - g.Padding + kw;
                                if (iw < 0 || iw >= g.Width)
                                {
                                    continue;
                                }
                                var v = xs[((((n * g.Height) + ih) * g.Width + iw) * c) + ch];
                                // The first maximum wins and a NaN propagates, as in PyTorch.
                                if (bestAt < 0 || v > best || float.IsNaN(v))
                                {
                                    best = v;
                                    bestAt = (kh * g.Kernel) + kw;
                                }
                            }
                        }
                        ys[o + ch] = best;
                        idx[o + ch] = bestAt;
                    }
                }
            }
        });
    }

    public void MaxPool2dBackward(Tensor dy, Tensor argmax, Tensor dx, Conv2dGeometry geometry)
    {
        var g = geometry;
        ConvChecks.Pool(dx, dy, g);
        Check.SameShape(dy, argmax);
        var dys = CpuArray(dy);
        var idx = CpuArray(argmax);
        var dxs = CpuArray(dx);
        int c = g.Channels;
        CpuParallel.For(g.Batch * g.Height, (long)g.Width * c * 4, (start, end) =>
        {
            for (var t = start; t < end; t++)
            {
                int n = t / g.Height, ih = t % g.Height;
                for (var iw = 0; iw < g.Width; iw++)
                {
                    var destination = dxs.AsSpan((((n * g.Height) + ih) * g.Width + iw) * c, c);
                    destination.Clear();
                    for (var kh = 0; kh < g.Kernel; kh++)
                    {
                        var ohScaled = ih + g.Padding - kh;
                        if (ohScaled < 0 || ohScaled % g.Stride != 0 || ohScaled / g.Stride >= g.OutHeight)
                        {
                            continue;
                        }
                        for (var kw = 0; kw < g.Kernel; kw++)
                        {
                            var owScaled = iw + g.Padding - kw;
                            if (owScaled < 0 || owScaled % g.Stride != 0 || owScaled / g.Stride >= g.OutWidth)
                            {
                                continue;
                            }
                            var o = (((n * g.OutHeight) + (ohScaled / g.Stride)) * g.OutWidth + (owScaled / g.Stride)) * c;
                            float position = (kh * g.Kernel) + kw;
                            for (var ch = 0; ch < c; ch++)
                            {
                                if (idx[o + ch] == position)
                                {
                                    destination[ch] += dys[o + ch];
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    public void GlobalAvgPoolForward(Tensor x, Tensor y)
    {
        var (n, hw, c) = PoolChecks.Global(x, y);
        var xs = CpuArray(x);
        var ys = CpuArray(y);
        CpuParallel.For(n, (long)hw * c, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var output = ys.AsSpan(i * c, c);
                output.Clear();
                for (var p = 0; p < hw; p++)
                {
                    TensorPrimitives.Add(output, xs.AsSpan(((i * hw) + p) * c, c), output);
                }
                TensorPrimitives.Multiply(output, 1f / hw, output);
            }
        });
    }

    public void GlobalAvgPoolBackward(Tensor dy, Tensor dx)
    {
        var (n, hw, c) = PoolChecks.Global(dx, dy);
        var dys = CpuArray(dy);
        var dxs = CpuArray(dx);
        CpuParallel.For(n, (long)hw * c, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var source = dys.AsSpan(i * c, c);
                for (var p = 0; p < hw; p++)
                {
                    TensorPrimitives.Multiply(source, 1f / hw, dxs.AsSpan(((i * hw) + p) * c, c));
                }
            }
        });
    }
}

internal static class PoolChecks
{
    /// <summary>(N, H·W, C) of an NHWC x pooled into y [N, C].</summary>
    public static (int N, int Positions, int C) Global(Tensor x, Tensor y)
    {
        if (x.Shape.Rank != 4)
        {
            throw new ArgumentException($"{x.Describe()}: expected an NHWC activation [batch, height, width, channels]");
        }
        int n = x.Shape[0], c = x.Shape[3];
        if (y.Rows != n || y.Cols != c)
        {
            throw new ArgumentException($"{y.Describe()}: expected [{n}, {c}] to pool {x.Describe()} into");
        }
        return (n, x.Shape[1] * x.Shape[2], c);
    }
}
