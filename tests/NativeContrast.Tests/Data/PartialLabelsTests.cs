namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

public class PartialLabelsTests
{
    private static int[] Labels(int count, int classes) => [.. Enumerable.Range(0, count).Select(i => (i * 7 + 3) % classes)];

    [TestCase(0.1)]
    [TestCase(0.3)]
    public void EverySetHoldsItsTrueLabelAndWrongClassesJoinWithProbabilityQ(double rate)
    {
        const int classes = 10;
        var labels = Labels(20_000, classes);
        var sets = PartialLabels.Generate(labels, classes, rate, seed: 5);

        var wrongJoined = 0;
        for (var i = 0; i < labels.Length; i++)
        {
            Assert.That(sets.Contains(i, labels[i]), Is.True, $"image {i} lost its true label");
            wrongJoined += sets.Candidates(i).ToArray().Count(c => c) - 1;
        }
        // 180,000 independent draws: the frequency is within 4 standard deviations of q.
        var frequency = wrongJoined / (double)(labels.Length * (classes - 1));
        var sigma = Math.Sqrt(rate * (1 - rate) / (labels.Length * (classes - 1)));
        Assert.That(frequency, Is.EqualTo(rate).Within(4 * sigma));
        Assert.That(sets.MeanSetSize, Is.EqualTo(1 + (frequency * (classes - 1))).Within(1e-9));
    }

    [Test]
    public void TheSameSeedGivesTheSameSetsAndAnotherSeedOtherSets()
    {
        var labels = Labels(500, 10);
        var a = PartialLabels.Generate(labels, 10, 0.3, seed: 11);
        var b = PartialLabels.Generate(labels, 10, 0.3, seed: 11);
        var c = PartialLabels.Generate(labels, 10, 0.3, seed: 12);
        static bool[] All(PartialLabels sets) => [.. Enumerable.Range(0, sets.Count).SelectMany(i => sets.Candidates(i).ToArray())];
        Assert.That(All(a), Is.EqualTo(All(b)));
        Assert.That(All(a), Is.Not.EqualTo(All(c)));
        // A set depends on its image only: generating a prefix gives the same sets.
        var prefix = PartialLabels.Generate(labels.AsSpan(0, 100), 10, 0.3, seed: 11);
        Assert.That(All(prefix), Is.EqualTo(All(a).Take(1000)));
    }

    [Test]
    public void RateZeroKeepsOnlyTheTrueLabelAndRateOneEveryClass()
    {
        var labels = Labels(300, 4);
        var none = PartialLabels.Generate(labels, 4, 0, seed: 1);
        var all = PartialLabels.Generate(labels, 4, 1, seed: 1);
        for (var i = 0; i < labels.Length; i++)
        {
            Assert.That(none.Candidates(i).ToArray(), Is.EqualTo(Enumerable.Range(0, 4).Select(c => c == labels[i])));
            Assert.That(all.Candidates(i).ToArray(), Is.All.True);
        }
    }

    [Test]
    public void BadInputIsRejectedWithWhatIsWrong()
    {
        Assert.That(() => PartialLabels.Generate([0, 1, 4], 4, 0.1, seed: 1, source: "fmnist/train"), Throws.ArgumentException.With.Message.Contains("fmnist/train: image 2 has label 4"));
        Assert.That(() => PartialLabels.Generate([0, 1], 4, 1.5, seed: 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("partial rate q"));
        using var unlabelled = new UnlabelledSet();
        Assert.That(() => PartialLabels.Generate(unlabelled, 0.1, seed: 1), Throws.ArgumentException.With.Message.Contains("unlabelled-set has no class labels"));
    }

    private sealed class UnlabelledSet : IImageDataset
    {
        public string Name => "unlabelled-set";

        public int Count => 2;

        public ImageShape Shape => new(4, 4, 1);

        public IReadOnlyList<string> ClassNames => [];

        public bool HasLabels => false;

        public ChannelStats Stats => new([0.5f], [0.25f]);

        public ReadOnlySpan<byte> GetImage(int index) => new byte[16];

        public int GetLabel(int index) => -1;

        public void Dispose()
        {
        }
    }
}
