namespace NativeContrast.Backends;

using NativeContrast.Tensors;

public static class BackendExtensions
{
    /// <summary>A new image batch [N, H, W, C] tagged NHWC, the layout the engine's models read; the caller owns it.</summary>
    public static Tensor AllocateImages(this IBackend backend, TensorShape shape, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (shape.Rank != 4)
        {
            throw new ArgumentException($"an image batch is [N, H, W, C], got {shape}", nameof(shape));
        }
        var images = backend.Allocate(shape, name);
        images.Layout = ImageLayout.Nhwc;
        return images;
    }
}
