namespace NativeContrast.Tests.Eval;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Eval;
using NativeContrast.Nn;
using NativeContrast.Tensors;

public class EvalTests
{
    private static FeatureSet Set(float[][] rows, int[] labels) => new([.. rows.SelectMany(r => r)], labels, rows[0].Length);

    private static float[] Direction(double degrees, float scale = 1f) =>
        [scale * (float)Math.Cos(degrees * Math.PI / 180), scale * (float)Math.Sin(degrees * Math.PI / 180)];

    [Test]
    public void KnnVotesForTheClassOfTheNearestDirectionsWhateverTheLength()
    {
        // Three classes at 0°, 120° and 240°, with lengths that cosine similarity must ignore.
        var rows = new List<float[]>();
        var labels = new List<int>();
        for (var c = 0; c < 3; c++)
        {
            for (var j = 0; j < 5; j++)
            {
                rows.Add(Direction((120 * c) + (j * 4) - 8, scale: 1 + j));
                labels.Add(c);
            }
        }
        var train = Set([.. rows], [.. labels]);
        var test = Set([Direction(3, 0.01f), Direction(118, 50f), Direction(245, 2f), Direction(200)], [0, 1, 2, 2]);
        var accuracy = new KnnClassifier(k: 5, temperature: 0.1f).Evaluate(train, test);
        Assert.That(accuracy.Top1, Is.EqualTo(1.0));
        Assert.That(accuracy.Count, Is.EqualTo(4));
    }

    [Test]
    public void KnnWeightsVotesByExpSimilarityOverTheTemperature()
    {
        // k = 3 neighbours of the query at 0°: one of class 1 at 5° (cos 0.9962) and two of class 0 at 40° and -40° (cos 0.7660).
        // Votes: class 1 exp(0.9962 / T), class 0 2·exp(0.7660 / T); class 1 wins iff T < 0.2302 / ln 2 = 0.3321.
        var train = Set([Direction(5), Direction(40), Direction(-40), Direction(180)], [1, 0, 0, 2]);
        var test = Set([Direction(0)], [1]);
        Assert.That(new KnnClassifier(3, 0.3f).Predict(train, test)[0][0], Is.EqualTo(1), "T 0.30: the closer neighbour outweighs two farther ones");
        Assert.That(new KnnClassifier(3, 0.36f).Predict(train, test)[0][0], Is.EqualTo(0), "T 0.36: the two farther neighbours win");
        Assert.That(new KnnClassifier(3, 0.3f).Predict(train, test)[0], Is.EqualTo(new[] { 1, 0, 2 }), "a class without votes ranks last");
        Assert.That(new KnnClassifier(3, 0.3f).Evaluate(train, test).Top5, Is.EqualTo(1.0));
    }

    [Test]
    public void TheLinearProbeSeparatesALinearlySeparableSet()
    {
        // Four Gaussian blobs in 6 dimensions, far apart along different axes, with a large constant offset that
        // standardisation must remove.
        var random = new Random(3);
        FeatureSet Blobs(int perClass)
        {
            var values = new List<float>();
            var labels = new List<int>();
            for (var i = 0; i < perClass * 4; i++)
            {
                var c = i % 4;
                for (var d = 0; d < 6; d++)
                {
                    values.Add(100f + (d == c ? 4f : 0f) + (float)(random.NextDouble() - 0.5));
                }
                labels.Add(c);
            }
            return new FeatureSet([.. values], [.. labels], 6);
        }
        var result = LinearProbe.Train(Blobs(64), Blobs(25), new LinearProbeOptions { Epochs = 20, BatchSize = 32 });
        Assert.That(result.Test.Top1, Is.EqualTo(1.0));
        Assert.That(result.Test.Count, Is.EqualTo(100));
        Assert.That(result.TrainLoss, Is.LessThan(0.05), "the probe converged");
    }

    [Test]
    public void TheLinearProbeDoesNotSeparateShuffledLabels()
    {
        var random = new Random(5);
        FeatureSet Noise(int count) => new([.. Enumerable.Range(0, count * 8).Select(_ => (float)random.NextDouble())], [.. Enumerable.Range(0, count).Select(_ => random.Next(4))], 8);
        var result = LinearProbe.Train(Noise(256), Noise(400), new LinearProbeOptions { Epochs = 10, BatchSize = 32 });
        Assert.That(result.Test.Top1, Is.LessThan(0.4), "labels unrelated to the features stay near chance (25%)");
    }

    [Test]
    public void FeaturesCoverEveryImageAndDoNotDependOnTheEvaluationBatch()
    {
        using var data = BuiltinShapes.Create(10, 16, seed: 4);
        using var cpu = new CpuBackend();
        var layout = new ArenaLayout();
        using var net = new ResNet(layout, ResNetOptions.ResNet10 with { Stem = ResNetStem.Cifar, WidthMultiplier = 0.125 });
        using var arena = new ParameterArena(cpu, layout, optimizerStateSlots: 0);
        net.Bind(arena);
        net.Initialize(2);
        var stats = new ChannelStats([0.5f, 0.4f, 0.3f], [0.2f, 0.25f, 0.3f]);
        var byFour = new FeatureExtractor(net, stats, batchSize: 4).Extract(data);
        var byTen = new FeatureExtractor(net, stats, batchSize: 10).Extract(data);
        Assert.That(byFour.Count, Is.EqualTo(10), "the last partial batch (2 images) counts");
        Assert.That(byFour.Labels, Is.EqualTo(Enumerable.Range(0, 10).Select(data.GetLabel).ToArray()));
        Assert.That(byFour.Dim, Is.EqualTo(net.FeatureDim));
        Assert.That(byFour.Values, Is.EqualTo(byTen.Values).Within(1e-5f), "eval-mode features depend on the image alone, not on its batch or padding");

        // The evaluation transform is the normalisation given (the training split's), not the data set's own.
        var own = new FeatureExtractor(net, data.Stats, batchSize: 4).Extract(data);
        Assert.That(own.Values, Is.Not.EqualTo(byFour.Values));
    }

    [Test]
    public void NpyFilesCarryTheirDtypeAndShape()
    {
        var folder = Path.Combine(Path.GetTempPath(), "nc-npy-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            var features = Path.Combine(folder, "f.npy");
            NpyFile.WriteFloat32(features, [1f, -2.5f, 3f, 4f, 5f, 6f], 3, 2);
            var (descr, shape, data) = NpyFile.Read(features);
            Assert.That(descr, Is.EqualTo("<f4"));
            Assert.That(shape, Is.EqualTo(new[] { 3, 2 }));
            Assert.That(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(data).ToArray(), Is.EqualTo(new[] { 1f, -2.5f, 3f, 4f, 5f, 6f }));
            var bytes = File.ReadAllBytes(features);
            Assert.That((10 + (bytes[8] | (bytes[9] << 8))) % 64, Is.Zero, "the data starts 64-byte aligned, as NumPy writes it");

            var labels = Path.Combine(folder, "l.npy");
            NpyFile.WriteInt64(labels, [7L, -1L], 2);
            var read = NpyFile.Read(labels);
            Assert.That(read.Descr, Is.EqualTo("<i8"));
            Assert.That(read.Shape, Is.EqualTo(new[] { 2 }));
            Assert.That(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(read.Data).ToArray(), Is.EqualTo(new[] { 7L, -1L }));
            Assert.Throws<ArgumentException>(() => NpyFile.WriteFloat32(features, [1f, 2f], 3));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
