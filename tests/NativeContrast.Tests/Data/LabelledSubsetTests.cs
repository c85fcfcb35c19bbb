namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

public class LabelledSubsetTests
{
    /// <summary>The first images of the 1% subset of <see cref="TheSameSeedDrawsTheSameImagesAndAnotherSeedOthers"/>'s set with seed 11.</summary>
    private static readonly int[] Pinned = [4, 16, 238, 561, 656, 715];

    [TestCase("1%", 1.0, null)]
    [TestCase("10%", 10.0, null)]
    [TestCase(" 0.5% ", 0.5, null)]
    [TestCase("100%", 100.0, null)]
    [TestCase("25", null, 25)]
    public void BudgetsParse(string text, double? percent, int? perClass)
    {
        var budget = LabelBudget.Parse(text);
        Assert.That(budget.Percent, Is.EqualTo(percent));
        Assert.That(budget.PerClassCount, Is.EqualTo(perClass));
        Assert.That(LabelBudget.Parse(budget.ToString()), Is.EqualTo(budget), "ToString round-trips");
    }

    [TestCase("")]
    [TestCase("0%")]
    [TestCase("101%")]
    [TestCase("-5")]
    [TestCase("0")]
    [TestCase("ten")]
    [TestCase("10 %")]
    [TestCase("1e2")]
    public void UnknownBudgetsNameTheOption(string text)
    {
        var e = Assert.Throws<ArgumentException>(() => LabelBudget.Parse(text));
        Assert.That(e!.Message, Does.Contain("--labels").And.Contain($"'{text}'"));
    }

    [TestCase("1%", 6)]
    [TestCase("10%", 60)]
    [TestCase("7", 7)]
    public void SubsetsAreClassBalancedWithTheirLabels(string text, int perClass)
    {
        // 6000 built-in-like labels: class c at i % 10, so 600 images a class.
        using var source = new LabelledSet(Enumerable.Range(0, 6000).Select(i => i % 10).ToArray());
        var subset = LabelledSubset.Draw(source, LabelBudget.Parse(text), seed: 4);
        Assert.That(subset.PerClass, Is.EqualTo(perClass));
        Assert.That(subset.Count, Is.EqualTo(10 * perClass));
        Assert.That(Enumerable.Range(0, subset.Count).GroupBy(subset.GetLabel).Select(g => g.Count()), Is.All.EqualTo(perClass));
        Assert.That(subset.Indices, Is.Ordered.Ascending.And.Unique);
        for (var i = 0; i < subset.Count; i++)
        {
            Assert.That(subset.GetLabel(i), Is.EqualTo(source.GetLabel(subset.Indices[i])));
            Assert.That(subset.GetImage(i)[0], Is.EqualTo((byte)subset.Indices[i]), "the source's image");
            Assert.That(subset.Contains(subset.Indices[i]), Is.True);
        }
        Assert.That(Enumerable.Range(0, source.Count).Count(subset.Contains), Is.EqualTo(subset.Count));
        Assert.That(subset.Stats, Is.SameAs(source.Stats), "the split's normalisation");
    }

    [Test]
    public void TheSameSeedDrawsTheSameImagesAndAnotherSeedOthers()
    {
        using var source = new LabelledSet(Enumerable.Range(0, 3000).Select(i => (i * 7) % 10).ToArray());
        var budget = LabelBudget.Parse("1%");
        var first = LabelledSubset.Draw(source, budget, seed: 11).Indices;
        Assert.That(LabelledSubset.Draw(source, budget, seed: 11).Indices, Is.EqualTo(first));
        Assert.That(LabelledSubset.Draw(source, budget, seed: 12).Indices, Is.Not.EqualTo(first));
        // The draw is integer Philox arithmetic, so these indices hold on every machine (a change breaks runs' subsets).
        Assert.That(first.Take(6), Is.EqualTo(Pinned));
    }

    [Test]
    public void UnlabelledImagesAreNeverDrawnAndShortClassesAreReported()
    {
        // Class 2 has 3 images; −1 marks unlabelled images.
        using var source = new LabelledSet([0, 1, -1, 0, 1, 2, 2, -1, 0, 1, 2, 0, 1]);
        var subset = LabelledSubset.Draw(source, LabelBudget.Parse("3"), seed: 0);
        Assert.That(subset.Indices.Select(source.GetLabel), Is.All.GreaterThanOrEqualTo(0));
        Assert.That(subset.Count, Is.EqualTo(9));
        var e = Assert.Throws<ArgumentException>(() => LabelledSubset.Draw(source, LabelBudget.Parse("4"), seed: 0));
        Assert.That(e!.Message, Does.Contain("class 2").And.Contain("has 3"));
        using var unlabelled = new LabelledSet(null);
        Assert.That(() => LabelledSubset.Draw(unlabelled, LabelBudget.Parse("1"), 0), Throws.ArgumentException.With.Message.Contains("no labels"));
    }

    /// <summary>Images whose first byte is their index (mod 256), with the given labels (null: an unlabelled set).</summary>
    private sealed class LabelledSet(int[]? labels) : IImageDataset
    {
        private readonly int[] _labels = labels ?? new int[20];

        public string Name => "labelled set";

        public int Count => _labels.Length;

        public ImageShape Shape => new(1, 1, 1);

        public IReadOnlyList<string> ClassNames => [];

        public bool HasLabels => labels is not null;

        public ChannelStats Stats { get; } = new([0.5f], [0.25f]);

        public ReadOnlySpan<byte> GetImage(int index) => new[] { (byte)index };

        public int GetLabel(int index) => labels is null ? -1 : _labels[index];

        public void Dispose()
        {
        }
    }
}
