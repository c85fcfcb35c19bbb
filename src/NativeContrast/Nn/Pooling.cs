namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>Max pooling with a square window over NHWC activations (ResNet's stem: 3×3, stride 2, padding 1).</summary>
public sealed class MaxPool2d(int kernel, int stride, int padding)
{
    public int Kernel { get; } = kernel;

    public int Stride { get; } = stride;

    public int Padding { get; } = padding;

    public Conv2dGeometry Geometry(TensorShape input) => Conv2dGeometry.Of(input, Kernel, Stride, Padding);

    public TensorShape OutputShape(TensorShape input)
    {
        var g = Geometry(input);
        return g.OutputShape(g.Channels);
    }

    /// <summary>The plan holds the window position of each maximum, for the backward.</summary>
    public MaxPoolPlan CreatePlan(PlanBuilder builder, TensorShape input, string name) =>
        new(Geometry(input), builder.Allocate(OutputShape(input), $"{name}.argmax"));

    public void Forward(IBackend backend, MaxPoolPlan plan, Tensor x, Tensor y) => backend.MaxPool2dForward(x, y, plan.Argmax, plan.Geometry);

    public void Backward(IBackend backend, MaxPoolPlan plan, Tensor dy, Tensor dx) => backend.MaxPool2dBackward(dy, plan.Argmax, dx, plan.Geometry);
}

public sealed record MaxPoolPlan(Conv2dGeometry Geometry, Tensor Argmax);

/// <summary>Global average pooling: [N, H, W, C] → [N, C] (ResNet's avgpool + flatten).</summary>
public static class GlobalAvgPool
{
    public static TensorShape OutputShape(TensorShape input) =>
        input.Rank == 4 ? new TensorShape(input[0], input[3]) : throw new ArgumentException($"expected an NHWC activation, got {input}");

    public static void Forward(IBackend backend, Tensor x, Tensor y) => backend.GlobalAvgPoolForward(x, y);

    public static void Backward(IBackend backend, Tensor dy, Tensor dx) => backend.GlobalAvgPoolBackward(dy, dx);
}
