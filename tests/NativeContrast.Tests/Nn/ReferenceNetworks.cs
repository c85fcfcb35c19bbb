namespace NativeContrast.Tests.Nn;

using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// Float64 forwards of whole networks (training mode), composed from <see cref="Reference"/>'s layers and reading
/// parameters by PyTorch name, so a module's wiring is checked against an independent composition.
/// </summary>
internal static class ReferenceNetworks
{
    public static double[] ResNet(ResNet net, Func<string, double[]> p, double[] x, TensorShape input)
    {
        var shape = input;
        var h = Conv(net.Conv1, p, x, ref shape);
        h = Norm(net.Bn1, p, h, shape, relu: true, residual: null);
        if (net.MaxPool is { } pool)
        {
            var next = pool.OutputShape(shape);
            h = Reference.MaxPool(h, shape[0], shape[1], shape[2], shape[3], pool.Kernel, pool.Stride, pool.Padding);
            shape = next;
        }
        foreach (var block in net.Blocks)
        {
            var blockInput = h;
            var inputShape = shape;
            var shortcut = blockInput;
            if (block.DownsampleConv is { } downsample)
            {
                var s = inputShape;
                shortcut = Conv(downsample, p, blockInput, ref s);
                shortcut = Norm(block.DownsampleNorm!, p, shortcut, s, relu: false, residual: null);
            }
            for (var i = 0; i < block.Convs.Count; i++)
            {
                h = Conv(block.Convs[i], p, h, ref shape);
                h = Norm(block.Norms[i], p, h, shape, relu: true, residual: i == block.Convs.Count - 1 ? shortcut : null);
            }
        }
        return Reference.AvgPool(h, shape[0], shape[1] * shape[2], shape[3]);
    }

    public static double[] Mlp(MlpHead head, Func<string, double[]> p, double[] x, int rows)
    {
        var h = x;
        for (var i = 0; i < head.Layers; i++)
        {
            var linear = head.Linears[i];
            h = Reference.Linear(h, p(Module.Join(linear.Name, "weight")), linear.HasBias ? p(Module.Join(linear.Name, "bias")) : null, rows, linear.InFeatures, linear.OutFeatures);
            var relu = i < head.Layers - 1 || head.Options.OutputRelu;
            if (head.Norms[i] is { } norm)
            {
                h = Norm(norm, p, h, new TensorShape(rows, linear.OutFeatures), relu, residual: null);
            }
            else if (relu)
            {
                h = [.. h.Select(v => Math.Max(v, 0.0))];
            }
        }
        return h;
    }

    private static double[] Conv(Conv2d conv, Func<string, double[]> p, double[] x, ref TensorShape shape)
    {
        var y = Reference.Conv2d(x, p(Module.Join(conv.Name, "weight")), conv.HasBias ? p(Module.Join(conv.Name, "bias")) : null,
            shape[0], shape[1], shape[2], shape[3], conv.OutChannels, conv.Kernel, conv.Stride, conv.Padding);
        shape = conv.OutputShape(shape);
        return y;
    }

    private static double[] Norm(BatchNorm norm, Func<string, double[]> p, double[] x, TensorShape shape, bool relu, double[]? residual) =>
        Reference.BatchNormTrain(x, norm.IsAffine ? p(Module.Join(norm.Name, "weight")) : null, norm.IsAffine ? p(Module.Join(norm.Name, "bias")) : null,
            residual, relu, shape.Rows, shape.Cols, norm.Epsilon, out _, out _);
}
