namespace NativeContrast.Eval;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>
/// Encoder features of a whole data set in order, through the evaluation transform (normalisation only, with the
/// training split's statistics for every split) and the encoder in eval mode (BatchNorm on running statistics).
/// Every image counts: the last partial batch is padded with zeros, which eval-mode layers keep to their own rows.
/// One plan of [BatchSize, H, W, C] is made on first use and kept by the encoder.
/// </summary>
public sealed class FeatureExtractor(Module encoder, ChannelStats trainingStats, int batchSize = 256)
{
    public Module Encoder { get; } = encoder ?? throw new ArgumentNullException(nameof(encoder));

    public ChannelStats Stats { get; } = trainingStats ?? throw new ArgumentNullException(nameof(trainingStats));

    public int BatchSize { get; } = batchSize > 0 ? batchSize : throw new ArgumentOutOfRangeException(nameof(batchSize), $"batch size {batchSize} must be positive");

    /// <summary>Features of images [0, limit) of <paramref name="dataset"/> (all of them by default).</summary>
    public FeatureSet Extract(IImageDataset dataset, int? limit = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        var shape = dataset.Shape;
        if (shape.Channels != Stats.Channels)
        {
            throw new ArgumentException($"{dataset.Name} has {shape.Channels}-channel images; the normalisation has {Stats.Channels} channels", nameof(dataset));
        }
        var count = Math.Min(limit ?? dataset.Count, dataset.Count);
        var backend = Encoder.Backend;
        var input = new TensorShape(BatchSize, shape.Height, shape.Width, shape.Channels);
        var plan = Encoder.PlanFor(input);
        var dim = checked((int)(plan.Output.Shape.Length / BatchSize));
        var perImage = shape.Bytes;
        var host = new float[(long)BatchSize * perImage];
        var features = new float[(long)count * dim];
        var labels = new int[count];
        using var images = backend.AllocateImages(input, "eval images");
        for (var start = 0; start < count; start += BatchSize)
        {
            cancel.ThrowIfCancellationRequested();
            var rows = Math.Min(BatchSize, count - start);
            Parallel.For(0, rows, r =>
            {
                ImageOps.NormalizeInterleaved(dataset.GetImage(start + r), Stats, host.AsSpan(r * perImage, perImage));
                labels[start + r] = dataset.GetLabel(start + r);
            });
            host.AsSpan(rows * perImage).Clear();
            backend.CopyFromHost(host, images);
            var output = plan.Forward(images, training: false);
            backend.CopyToHost(output.View(0, new TensorShape(rows * dim)), features.AsSpan(start * dim, rows * dim));
        }
        return new FeatureSet(features, labels, dim);
    }
}
