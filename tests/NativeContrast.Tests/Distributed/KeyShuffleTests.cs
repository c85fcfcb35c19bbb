namespace NativeContrast.Tests.Distributed;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// MoCo's shuffle-BN across ranks (threads as ranks): every rank draws the same permutation of the global key batch
/// for a step, encodes its shard of it, and after the un-shuffle every image's key sits at the image's global place
/// and is the key its shard's statistics gave it, as one process computing each shuffled shard's batch norm apart.
/// </summary>
public class KeyShuffleTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(2, 4, 3)]
    [TestCase(3, 5, 8)]
    [TestCase(2, 1, 2)]
    public void KeysOfShuffledShardsLandWithTheirImages(int ranks, int rows, int dim)
    {
        const long step = 7;
        // An image is one pixel of dim channels, so that an image row is a key row.
        var images = Numerics.RandomArray(ranks * rows * dim, seed: ranks + rows);
        var permutations = new int[ranks][];
        var keys = new float[ranks][];
        using var threads = new ThreadRanks(ranks);
        threads.Run(rank =>
        {
            using var communicator = threads.Communicator(rank, _cpu);
            using var shuffle = new KeyShuffle(communicator, _cpu, new TensorShape(rows, 1, 1, dim), dim, seed: 11);
            using var own = _cpu.FromArray(images.AsSpan(rank * rows * dim, rows * dim), new TensorShape(rows, 1, 1, dim));
            using var shardKeys = _cpu.Allocate(new TensorShape(rows, dim));
            var shard = shuffle.Shuffle(own, step);
            _cpu.CopyFromHost(CentredOverBatch(shard.Span, rows, dim), shardKeys);
            shuffle.Unshuffle(shardKeys);
            permutations[rank] = shuffle.Permutation.ToArray();
            keys[rank] = shuffle.GlobalKeys.Span.ToArray();
        });

        var permutation = permutations[0];
        Assert.That(permutation.Order(), Is.EqualTo(Enumerable.Range(0, ranks * rows)), "a permutation of the global batch");
        var expected = new float[ranks * rows * dim];
        for (var rank = 0; rank < ranks; rank++)
        {
            Assert.That(permutations[rank], Is.EqualTo(permutation), $"rank {rank} drew rank 0's permutation");
            // One process: shard r is the permuted images [r·n, (r + 1)·n), normalised over that shard alone.
            var shard = Enumerable.Range(0, rows).SelectMany(j => images.AsSpan(permutation[(rank * rows) + j] * dim, dim).ToArray()).ToArray();
            var shardKeys = CentredOverBatch(shard, rows, dim);
            for (var j = 0; j < rows; j++)
            {
                shardKeys.AsSpan(j * dim, dim).CopyTo(expected.AsSpan(permutation[(rank * rows) + j] * dim, dim));
            }
        }
        for (var rank = 0; rank < ranks; rank++)
        {
            Assert.That(keys[rank], Is.EqualTo(expected), $"rank {rank}'s keys in global order");
        }
    }

    [Test]
    public void TheSameStepDrawsTheSamePermutationAndAnotherStepAnother()
    {
        using var threads = new ThreadRanks(1);
        using var communicator = threads.Communicator(0, _cpu);
        using var shuffle = new KeyShuffle(communicator, _cpu, new TensorShape(16, 1, 1, 1), 1, seed: 3);
        using var images = _cpu.Allocate(new TensorShape(16, 1, 1, 1));
        int[] Draw(long step)
        {
            var permutation = Array.Empty<int>();
            threads.Run(_ =>
            {
                shuffle.Shuffle(images, step);
                permutation = shuffle.Permutation.ToArray();
            });
            return permutation;
        }
        var first = Draw(1);
        Assert.That(Draw(1), Is.EqualTo(first));
        Assert.That(Draw(2), Is.Not.EqualTo(first));
        Assert.That(first, Is.Not.EqualTo(Enumerable.Range(0, 16)), "shuffled");
    }

    /// <summary>A stand-in for the key encoder whose output depends on the batch it runs in: each row minus the batch's mean row.</summary>
    private static float[] CentredOverBatch(ReadOnlySpan<float> batch, int rows, int dim)
    {
        var result = batch.ToArray();
        for (var d = 0; d < dim; d++)
        {
            var mean = 0f;
            for (var j = 0; j < rows; j++)
            {
                mean += batch[(j * dim) + d];
            }
            mean /= rows;
            for (var j = 0; j < rows; j++)
            {
                result[(j * dim) + d] -= mean;
            }
        }
        return result;
    }
}
