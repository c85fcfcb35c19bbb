namespace NativeContrast.Distributed;

using NativeContrast.Backends;
using NativeContrast.Data;
using NativeContrast.Tensors;

/// <summary>
/// MoCo's shuffle-BN across ranks: the key encoder runs on a shard of a permutation of the global key batch, so that
/// no rank's BatchNorm statistics mix a query's image with its own key's, and the keys are put back in global order.
/// <code>
/// all ← all-gather(images)                    # [ranks·n, S, S, C], rank r's rows at [r·n, (r + 1)·n)
/// shard ← all[perm[r·n .. (r + 1)·n)]         # perm drawn from (seed, step): the same on every rank
/// keys ← all-gather(key_encoder(shard))       # [ranks·n, dim] in permuted order
/// global[perm[j]] ← keys[j]                   # the un-shuffle: every image's key, in global order
/// </code>
/// MoCo's reference moves the images the same way (an all-gather, then a broadcast of the permutation); here every
/// rank draws the permutation itself. Each rank receives (ranks − 1)·n images and (ranks − 1)·n keys per step.
/// </summary>
public sealed class KeyShuffle : IDisposable
{
    /// <summary>Keeps the permutations' stream apart from the augmentations' streams of the same seed.</summary>
    private const ulong ShuffleStream = 0x5348_5546_464C_4542UL;

    private readonly ICommunicator _ranks;
    private readonly IBackend _backend;
    private readonly ulong _seed;
    private readonly int[] _permutation;
    private readonly Tensor _allImages;
    private readonly Tensor _shard;
    private readonly Tensor _shuffledKeys;

    // Row views made once, so that a step allocates nothing: [global image], [shard row], [permuted key], [global key].
    private readonly Tensor[] _allImageRows;
    private readonly Tensor[] _shardRows;
    private readonly Tensor[] _shuffledKeyRows;
    private readonly Tensor[] _globalKeyRows;

    /// <param name="images">This rank's key images [n, S, S, C].</param>
    /// <param name="dim">Width of a key.</param>
    /// <param name="seed">The run's seed: every rank draws the same permutation from it and the step.</param>
    public KeyShuffle(ICommunicator ranks, IBackend backend, TensorShape images, int dim, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        ArgumentNullException.ThrowIfNull(backend);
        _ranks = ranks;
        _backend = backend;
        _seed = seed;
        Rows = images[0];
        var all = checked(ranks.Size * Rows);
        _permutation = new int[all];
        _allImages = backend.AllocateImages(new TensorShape(all, images[1], images[2], images[3]), "shuffle-bn gathered images");
        _shard = backend.AllocateImages(images, "shuffle-bn shard");
        _shuffledKeys = backend.Allocate(new TensorShape(all, dim), "shuffle-bn gathered keys");
        GlobalKeys = backend.Allocate(new TensorShape(all, dim), "shuffle-bn keys in global order");
        _allImageRows = RowViews(_allImages);
        _shardRows = RowViews(_shard);
        _shuffledKeyRows = RowViews(_shuffledKeys);
        _globalKeyRows = RowViews(GlobalKeys);
    }

    /// <summary>Key images per rank.</summary>
    public int Rows { get; }

    /// <summary>The permutation of the last <see cref="Shuffle"/>: shard row j of rank r holds global image perm[r·n + j].</summary>
    public ReadOnlySpan<int> Permutation => _permutation;

    /// <summary>Every rank's keys in global order (rank r's images at [r·n, (r + 1)·n)), after <see cref="Unshuffle"/>.</summary>
    public Tensor GlobalKeys { get; }

    /// <summary>This rank's shard of the global key batch permuted for <paramref name="step"/>: the key encoder's input.</summary>
    public Tensor Shuffle(Tensor images, long step)
    {
        DrawPermutation(step);
        _ranks.AllGather(images, _allImages);
        var first = _ranks.Rank * Rows;
        for (var j = 0; j < Rows; j++)
        {
            _backend.Copy(_allImageRows[_permutation[first + j]], _shardRows[j]);
        }
        return _shard;
    }

    /// <summary><see cref="GlobalKeys"/> ← the keys of every rank's shard, each moved back to its image's place.</summary>
    public void Unshuffle(Tensor shardKeys)
    {
        _ranks.AllGather(shardKeys, _shuffledKeys);
        for (var j = 0; j < _permutation.Length; j++)
        {
            _backend.Copy(_shuffledKeyRows[j], _globalKeyRows[_permutation[j]]);
        }
    }

    public void Dispose()
    {
        _allImages.Dispose();
        _shard.Dispose();
        _shuffledKeys.Dispose();
        GlobalKeys.Dispose();
    }

    private static Tensor[] RowViews(Tensor tensor)
    {
        var rows = new Tensor[tensor.Shape[0]];
        for (var i = 0; i < rows.Length; i++)
        {
            rows[i] = tensor.SliceRows(i, 1);
        }
        return rows;
    }

    /// <summary>Fisher-Yates from a Philox stream of (seed, step): every rank draws the same permutation without talking.</summary>
    private void DrawPermutation(long step)
    {
        for (var i = 0; i < _permutation.Length; i++)
        {
            _permutation[i] = i;
        }
        var random = new SampleRandom(_seed ^ ShuffleStream, (ulong)step, lane: 0);
        for (var i = _permutation.Length - 1; i > 0; i--)
        {
            var j = random.NextInt(i + 1);
            (_permutation[i], _permutation[j]) = (_permutation[j], _permutation[i]);
        }
    }
}
