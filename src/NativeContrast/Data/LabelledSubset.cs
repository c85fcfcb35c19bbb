namespace NativeContrast.Data;

using System.Globalization;

/// <summary>
/// How many labelled images a class-balanced subset keeps: a percentage of the split ("1%", "10%", as SimCLR v2's
/// semi-supervised subsets of ImageNet) or a number of images per class ("100"). A percentage p of a split of n images
/// in k classes keeps round(p · n / k) images of every class (at least one), so both forms give the same count per class.
/// </summary>
public sealed record LabelBudget
{
    private LabelBudget(double? percent, int? perClass)
    {
        Percent = percent;
        PerClassCount = perClass;
    }

    /// <summary>The percentage of the split, or null for a count per class.</summary>
    public double? Percent { get; }

    /// <summary>The images per class, or null for a percentage.</summary>
    public int? PerClassCount { get; }

    /// <summary>"10%", "0.5%" or "100" (images per class); anything else is an <see cref="ArgumentException"/> naming --labels.</summary>
    public static LabelBudget Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var trimmed = text.Trim();
        if (trimmed.EndsWith('%')
            && double.TryParse(trimmed[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var percent)
            && percent > 0 && percent <= 100)
        {
            return new LabelBudget(percent, null);
        }
        if (int.TryParse(trimmed, NumberStyles.None, CultureInfo.InvariantCulture, out var count) && count > 0)
        {
            return new LabelBudget(null, count);
        }
        throw new ArgumentException($"--labels '{text}' is not a percentage of the train split in (0, 100] (1%, 10%) nor a positive number of images per class (100)", "--labels");
    }

    /// <summary>Images of each class a split of <paramref name="images"/> images in <paramref name="classes"/> classes keeps.</summary>
    public int PerClass(int images, int classes) =>
        PerClassCount ?? Math.Max(1, (int)Math.Round(Percent!.Value / 100.0 * images / Math.Max(1, classes), MidpointRounding.AwayFromZero));

    public override string ToString() => Percent is { } p ? p.ToString(CultureInfo.InvariantCulture) + "%" : PerClassCount!.Value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// A class-balanced labelled subset of a split, as an <see cref="IImageDataset"/> (labels kept, the source's
/// normalisation statistics, so that a model sees its images as it saw the whole split). The draw is a partial
/// Fisher–Yates shuffle of each class's images (in the source's order) on a Philox stream of (seed, class): integer
/// arithmetic only, so the same seed gives the same images on every machine and backend, whatever the thread count.
/// Images without a label (−1) are never drawn. The subset's images keep the source's order. It does not own the source.
/// </summary>
public sealed class LabelledSubset : IImageDataset
{
    /// <summary>The Philox stream of the draw (tells it apart from the augmentations' streams for the same seed).</summary>
    private const ulong Stream = 0x6C6162656C73UL;

    private readonly int[] _indices;

    private LabelledSubset(IImageDataset source, int[] indices, LabelBudget budget, ulong seed, int perClass)
    {
        Source = source;
        _indices = indices;
        Budget = budget;
        Seed = seed;
        PerClass = perClass;
        Name = $"{source.Name} [{budget} labels, seed {seed}: {indices.Length} images, {perClass} per class]";
    }

    public IImageDataset Source { get; }

    public LabelBudget Budget { get; }

    public ulong Seed { get; }

    public int PerClass { get; }

    /// <summary>The source's indices of the subset's images, ascending.</summary>
    public IReadOnlyList<int> Indices => _indices;

    public string Name { get; }

    public int Count => _indices.Length;

    public ImageShape Shape => Source.Shape;

    public IReadOnlyList<string> ClassNames => Source.ClassNames;

    public bool HasLabels => true;

    public ChannelStats Stats => Source.Stats;

    /// <summary>Draws <paramref name="budget"/> images of every class of <paramref name="source"/> with <paramref name="seed"/>.</summary>
    public static LabelledSubset Draw(IImageDataset source, LabelBudget budget, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(budget);
        if (!source.HasLabels)
        {
            throw new ArgumentException($"{source.Name} has no labels: --labels needs a labelled train split", nameof(source));
        }
        var byClass = new List<List<int>>();
        for (var i = 0; i < source.Count; i++)
        {
            var label = source.GetLabel(i);
            if (label < 0)
            {
                continue;
            }
            while (byClass.Count <= label)
            {
                byClass.Add([]);
            }
            byClass[label].Add(i);
        }
        var classes = Math.Max(byClass.Count, source.ClassNames.Count);
        var perClass = budget.PerClass(source.Count, classes);
        var chosen = new List<int>(perClass * classes);
        for (var c = 0; c < classes; c++)
        {
            var members = c < byClass.Count ? byClass[c] : [];
            if (members.Count < perClass)
            {
                var name = c < source.ClassNames.Count ? $" ({source.ClassNames[c]})" : "";
                throw new ArgumentException($"--labels {budget} asks for {perClass} images of every class; class {c}{name} of {source.Name} has {members.Count}", "--labels");
            }
            var random = new SampleRandom(seed, Stream, (uint)c);
            for (var k = 0; k < perClass; k++)
            {
                var j = k + random.NextInt(members.Count - k);
                (members[k], members[j]) = (members[j], members[k]);
            }
            chosen.AddRange(members.Take(perClass));
        }
        chosen.Sort();
        return new LabelledSubset(source, [.. chosen], budget, seed, perClass);
    }

    /// <summary>Whether image <paramref name="sourceIndex"/> of the source is in the subset.</summary>
    public bool Contains(int sourceIndex) => Array.BinarySearch(_indices, sourceIndex) >= 0;

    public ReadOnlySpan<byte> GetImage(int index) => Source.GetImage(_indices[index]);

    public int GetLabel(int index) => Source.GetLabel(_indices[index]);

    /// <summary>Nothing to release: the source belongs to the caller.</summary>
    public void Dispose()
    {
    }
}
