namespace NativeContrast.Bench;

using System.Diagnostics;
using NativeContrast.Backends;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// Where a CPU ResNet step's time goes, layer by layer: after a real step (so the plan holds live activations),
/// every convolution and batch norm of the encoder is run again on its own, forward and backward, into scratch
/// tensors, and timed (median of a few runs); the rest of the step (pooling, head, loss, optimiser, zeroing) is
/// what remains of the measured step. Rows are grouped by layer shape, the way the step's time splits.
/// </summary>
public static class CpuProfile
{
    /// <summary>
    /// Prints the encoder's layers by share of <paramref name="stepMs"/>, and the time of each of
    /// <paramref name="others"/> (whole parts of the step outside the encoder's layers: the optimiser, zeroing).
    /// </summary>
    public static void Print(string title, IBackend backend, ResNet encoder, Plan plan, double stepMs, params (string Name, Action Run)[] others)
    {
        var resnet = (ResNetPlan)((SequentialPlan)plan.Root).Stages[0];
        var rows = new List<(string Layer, double ForwardMs, double BackwardMs)>();
        var scratch = new Dictionary<TensorShape, Tensor>();
        Tensor Scratch(TensorShape shape)
        {
            if (!scratch.TryGetValue(shape, out var t))
            {
                t = backend.Allocate(shape, "profile scratch");
                backend.RandomNormal(t, 7, 0);
                scratch[shape] = t;
            }
            return t;
        }

        void Conv(Conv2d conv, ConvPlan convPlan, Tensor x, bool inputGradient)
        {
            var y = Scratch(convPlan.Geometry.OutputShape(conv.OutChannels));
            var forward = Median(() => conv.Forward(convPlan, x, y));
            var dx = inputGradient ? backend.Allocate(x.Shape, "profile dx") : null;
            var backward = Median(() => conv.Backward(convPlan, x, y, dx));
            var runner = convPlan.Convolution?.Implementation ?? "im2col + GEMM";
            rows.Add(($"conv {convPlan.Geometry} -> {conv.OutChannels}{(inputGradient ? string.Empty : " (no dx)")} [{runner}]", forward, backward));
            dx?.Dispose();
        }

        void Norm(BatchNorm norm, BatchNormPlan normPlan, Tensor x, bool residual)
        {
            var y = Scratch(x.Shape);
            var dy = Scratch(x.Shape);
            var dx = backend.Allocate(x.Shape, "profile dx");
            var shortcut = residual ? backend.Allocate(x.Shape, "profile shortcut") : null;
            var forward = Median(() => norm.Forward(normPlan, x, y, training: true, relu: true, residual: shortcut));
            var backward = Median(() => norm.Backward(normPlan, x, y, dy, dx, shortcut));
            rows.Add(($"bn+relu{(residual ? "+residual" : string.Empty)} {x.Shape}", forward, backward));
            dx.Dispose();
            shortcut?.Dispose();
        }

        try
        {
            Conv(encoder.Conv1, resnet.Conv1, resnet.Input ?? Scratch(resnet.Conv1.Geometry.InputShape), inputGradient: false);
            Norm(encoder.Bn1, resnet.Bn1, resnet.Conv1Output, residual: false);
            for (var i = 0; i < encoder.Blocks.Count; i++)
            {
                var block = encoder.Blocks[i];
                var blockPlan = resnet.Blocks[i];
                var input = i == 0 ? resnet.StemOutput : resnet.Blocks[i - 1].Output;
                for (var j = 0; j < block.Convs.Count; j++)
                {
                    Conv(block.Convs[j], blockPlan.Convs[j], j == 0 ? input : blockPlan.NormOutputs[j - 1], inputGradient: true);
                    Norm(block.Norms[j], blockPlan.Norms[j], blockPlan.ConvOutputs[j], residual: j == block.Convs.Count - 1);
                }
                if (block.DownsampleConv is { } downsample)
                {
                    Conv(downsample, blockPlan.DownsampleConv!, input, inputGradient: true);
                    Norm(block.DownsampleNorm!, blockPlan.DownsampleNorm!, blockPlan.DownsampleOutput!, residual: false);
                }
            }
        }
        finally
        {
            foreach (var t in scratch.Values)
            {
                t.Dispose();
            }
        }

        foreach (var (name, run) in others)
        {
            rows.Add((name, Median(run), 0));
        }
        var layers = rows.Sum(r => r.ForwardMs + r.BackwardMs);
        Console.WriteLine($"   profile {title}: step {stepMs:F1} ms; the rows below {layers:F1} ms; the rest (pooling, head, loss, between layers) {stepMs - layers:F1} ms");
        Console.WriteLine($"     {"fwd ms",9} {"bwd ms",9} {"share",6}  layer");
        foreach (var group in rows.GroupBy(r => r.Layer).OrderByDescending(g => g.Sum(r => r.ForwardMs + r.BackwardMs)))
        {
            double forward = group.Sum(r => r.ForwardMs), backward = group.Sum(r => r.BackwardMs);
            Console.WriteLine($"     {forward,9:F2} {backward,9:F2} {100 * (forward + backward) / stepMs,5:F1}%  {group.Count()}x {group.Key}");
        }
        var convs = rows.Where(r => r.Layer.StartsWith("conv", StringComparison.Ordinal)).Sum(r => r.ForwardMs + r.BackwardMs);
        var norms = rows.Where(r => r.Layer.StartsWith("bn", StringComparison.Ordinal)).Sum(r => r.ForwardMs + r.BackwardMs);
        Console.WriteLine($"     all convolutions {convs:F1} ms ({100 * convs / stepMs:F0}%), all norms {norms:F1} ms ({100 * norms / stepMs:F0}%)");
    }

    private static double Median(Action action)
    {
        action();
        var times = new double[5];
        for (var i = 0; i < times.Length; i++)
        {
            var start = Stopwatch.GetTimestamp();
            action();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }
}
