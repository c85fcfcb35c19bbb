namespace NativeContrast.Eval;

/// <summary>Row-major features [Count, Dim] on the host with one label per row (-1 where unlabelled).</summary>
public sealed record FeatureSet(float[] Values, int[] Labels, int Dim)
{
    public int Count => Labels.Length;

    public ReadOnlySpan<float> Row(int i) => Values.AsSpan(i * Dim, Dim);

    /// <summary>Classes seen in the labels (max label + 1).</summary>
    public int Classes => Labels.Length == 0 ? 0 : Labels.Max() + 1;

    /// <summary>The raw-pixel baseline's features: images [0, limit) normalised with the given statistics and flattened.</summary>
    public static FeatureSet FromPixels(Data.IImageDataset dataset, Data.ChannelStats stats, int? limit = null)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        var count = Math.Min(limit ?? dataset.Count, dataset.Count);
        var dim = dataset.Shape.Bytes;
        var values = new float[(long)count * dim];
        var labels = new int[count];
        Parallel.For(0, count, i =>
        {
            Data.ImageOps.NormalizeInterleaved(dataset.GetImage(i), stats, values.AsSpan(i * dim, dim));
            labels[i] = dataset.GetLabel(i);
        });
        return new FeatureSet(values, labels, dim);
    }
}
