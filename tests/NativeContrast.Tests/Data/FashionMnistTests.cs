namespace NativeContrast.Tests.Data;

using NativeContrast.Data;

/// <summary>The real Fashion-MNIST from Debian's dataset-fashion-mnist package (CI installs it).</summary>
public class FashionMnistTests
{
    [Test]
    public void DebianPackageHoldsTheFullTrainAndTestSplits()
    {
        if (!File.Exists(Path.Combine(DatasetCatalog.DebianFashionMnist, "train-images-idx3-ubyte.gz")))
        {
            Assert.Fail($"Fashion-MNIST is not in {DatasetCatalog.DebianFashionMnist}: install Debian's package with 'apt-get install dataset-fashion-mnist'");
        }
        var options = new DatasetOptions { Download = false, CacheDirectory = Path.Combine(Path.GetTempPath(), "nc-no-cache") };
        foreach (var (split, count) in new[] { (DatasetSplit.Train, 60_000), (DatasetSplit.Test, 10_000) })
        {
            using var data = DatasetCatalog.Open("fashion-mnist", split, options);
            Assert.That(data.Count, Is.EqualTo(count), $"{split}");
            Assert.That(data.Shape, Is.EqualTo(new ImageShape(28, 28, 1)));
            Assert.That(data.ClassNames, Has.Count.EqualTo(10));
            var perClass = new int[10];
            for (var i = 0; i < data.Count; i++)
            {
                perClass[data.GetLabel(i)]++;
            }
            // Fashion-MNIST is balanced: 6,000 (train) or 1,000 (test) images per class.
            Assert.That(perClass, Is.All.EqualTo(count / 10), $"{split}");
            if (split == DatasetSplit.Train)
            {
                // The published normalisation constants are the train split's.
                var measured = ChannelStats.Measure(data, data.Count);
                Assert.That(measured.Mean[0], Is.EqualTo(data.Stats.Mean[0]).Within(5e-4));
                Assert.That(measured.Std[0], Is.EqualTo(data.Stats.Std[0]).Within(5e-4));
            }
        }
    }
}
