namespace NativeContrast.Data;

/// <summary>
/// Candidate label sets for partial-label learning, generated from the true labels as PiCO's benchmarks do (Wang et
/// al. 2022, "uniform" sets): each image keeps its true label, and every other class joins its set with probability
/// q, independently. The draws come from a Philox stream per image (seed, image index), so the same seed gives the
/// same sets on any machine and in any order of generation.
/// </summary>
public sealed class PartialLabels
{
    private readonly bool[] _candidates;

    private PartialLabels(bool[] candidates, int count, int classes, double rate)
    {
        _candidates = candidates;
        Count = count;
        Classes = classes;
        Rate = rate;
    }

    public int Count { get; }

    public int Classes { get; }

    /// <summary>q: the probability that a wrong class joins a set.</summary>
    public double Rate { get; }

    /// <summary>The candidate flags of image <paramref name="index"/>, one per class.</summary>
    public ReadOnlySpan<bool> Candidates(int index) => _candidates.AsSpan(index * Classes, Classes);

    public bool Contains(int index, int label) => (uint)label < (uint)Classes && _candidates[(index * Classes) + label];

    /// <summary>The mean size of the candidate sets (1 + q·(C − 1) in expectation).</summary>
    public double MeanSetSize => _candidates.Count(c => c) / (double)Math.Max(1, Count);

    /// <summary>Sets for the labels of <paramref name="dataset"/>, which must be labelled.</summary>
    public static PartialLabels Generate(IImageDataset dataset, double rate, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        if (!dataset.HasLabels || dataset.ClassNames.Count < 2)
        {
            throw new ArgumentException($"{dataset.Name} has no class labels: partial labels are drawn from the true labels", nameof(dataset));
        }
        var labels = new int[dataset.Count];
        for (var i = 0; i < labels.Length; i++)
        {
            labels[i] = dataset.GetLabel(i);
        }
        return Generate(labels, dataset.ClassNames.Count, rate, seed, dataset.Name);
    }

    public static PartialLabels Generate(ReadOnlySpan<int> labels, int classes, double rate, ulong seed, string source = "labels")
    {
        if (!(rate >= 0 && rate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), rate, "the partial rate q must lie in [0, 1]");
        }
        var candidates = new bool[labels.Length * classes];
        for (var i = 0; i < labels.Length; i++)
        {
            var label = labels[i];
            if ((uint)label >= (uint)classes)
            {
                throw new ArgumentException($"{source}: image {i} has label {label}, outside the {classes} classes", nameof(labels));
            }
            var random = new SampleRandom(seed, (uint)i, CandidateLane);
            for (var c = 0; c < classes; c++)
            {
                // One draw per class, the true one included, so a set does not depend on which class is true.
                var joins = random.NextFloat() < rate;
                candidates[(i * classes) + c] = c == label || joins;
            }
        }
        return new PartialLabels(candidates, labels.Length, classes, rate);
    }

    // A lane of its own: the augmentation streams use lanes 0..views-1.
    private const uint CandidateLane = 0x7069636F;
}
