namespace NativeContrast.Data;

using System.Diagnostics;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>How the loader batches, shuffles and parallelises.</summary>
public sealed record LoaderOptions
{
    public int BatchSize { get; init; } = 256;

    /// <summary>Seeds the per-epoch shuffle and every sample's augmentation (with the epoch, index and view).</summary>
    public ulong Seed { get; init; }

    public bool Shuffle { get; init; } = true;

    /// <summary>Drops the last, incomplete batch (contrastive losses want full batches of negatives).</summary>
    public bool DropLast { get; init; } = true;

    /// <summary>Augmentation threads; by default every core but one, which the training loop keeps.</summary>
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);

    /// <summary>Batch buffers in flight: 2 is double buffering, 3 (the default) triple.</summary>
    public int Prefetch { get; init; } = 3;

    /// <summary>Samples a worker takes at a time: small enough to spread a batch over every worker.</summary>
    public int ChunkSize { get; init; } = 8;

    /// <summary>Normalisation constants; by default the data set's.</summary>
    public ChannelStats? Normalization { get; init; }

    /// <summary>
    /// Data parallelism: the ranks that share each global batch of <see cref="Ranks"/> × <see cref="BatchSize"/>
    /// images. This loader yields rows [<see cref="Rank"/> · BatchSize, (Rank + 1) · BatchSize) of every global batch;
    /// since the shuffle depends on the seed and the epoch only, and each image's views on (seed, epoch, index, view),
    /// N ranks of batch B see exactly the images and views of one process of batch N·B. Needs <see cref="DropLast"/>.
    /// </summary>
    public int Ranks { get; init; } = 1;

    /// <summary>This loader's rank among <see cref="Ranks"/>.</summary>
    public int Rank { get; init; }

    /// <summary>Images in a global batch: every rank's batch.</summary>
    public int GlobalBatchSize => BatchSize * Ranks;
}

/// <summary>Throughput of the epochs run so far.</summary>
public sealed record LoaderStats(long Images, long Views, double WallSeconds, double ConsumerWaitSeconds, double WorkerBusySeconds, int Workers)
{
    public double ImagesPerSecond => Images / Math.Max(WallSeconds, 1e-9);

    /// <summary>Images per second of one worker thread's busy time: the per-core throughput.</summary>
    public double ImagesPerCoreSecond => Images / Math.Max(WorkerBusySeconds, 1e-9);

    public double ViewsPerCoreSecond => Views / Math.Max(WorkerBusySeconds, 1e-9);

    /// <summary>The share of wall time the consumer spent waiting for a batch (0 when the loader keeps ahead).</summary>
    public double StarvedFraction => ConsumerWaitSeconds / Math.Max(WallSeconds, 1e-9);

    public override string ToString() =>
        $"{Images} images ({Views} views) in {WallSeconds:F2} s: {ImagesPerSecond:F0} images/s, " +
        $"{ImagesPerCoreSecond:F0} images/s per core over {Workers} workers, consumer waited {100 * StarvedFraction:F1}%";
}

/// <summary>
/// One batch of augmented views, float32 NHWC per view ([Count, S, S, C], the layout the models read), normalised. It lives in one of the loader's buffers and is
/// valid until the enumeration moves to the next batch.
/// </summary>
public sealed class ViewBatch
{
    private readonly ContrastiveLoader _loader;
    private readonly BatchSlot _slot;

    internal ViewBatch(ContrastiveLoader loader, BatchSlot slot)
    {
        _loader = loader;
        _slot = slot;
    }

    public int Epoch { get; internal set; }

    /// <summary>The batch's position in its epoch.</summary>
    public int Number { get; internal set; }

    /// <summary>Samples in this batch: the batch size, or fewer for a last batch kept with DropLast = false.</summary>
    public int Count { get; internal set; }

    public int ViewCount => _loader.Preset.ViewCount;

    /// <summary>The data set index of each sample.</summary>
    public ReadOnlySpan<int> Indices => _slot.Indices.AsSpan(0, Count);

    /// <summary>The label of each sample (-1 when unlabelled).</summary>
    public ReadOnlySpan<int> Labels => _slot.Labels.AsSpan(0, Count);

    /// <summary>[Count, S, S, C] of view <paramref name="view"/>.</summary>
    public TensorShape ViewShape(int view) => _loader.ViewShape(view, Count);

    /// <summary>The host floats of view <paramref name="view"/>, Count x S x S x C.</summary>
    public ReadOnlySpan<float> View(int view) => _slot.Span.Slice((int)_loader.ViewOffset(view), (int)ViewShape(view).Length);

    /// <summary>
    /// Copies view <paramref name="view"/> into the first Count rows of <paramref name="destination"/> (a
    /// [BatchSize or Count, S, S, C] tensor of <paramref name="backend"/>). From pinned buffers to a
    /// <see cref="CudaBackend"/> the copy is asynchronous on its stream, and the loader does not reuse the buffer
    /// before the copy has finished.
    /// </summary>
    public void CopyTo(IBackend backend, int view, Tensor destination) => CopyTo(backend, view, 1, destination);

    /// <summary>
    /// Copies views [<paramref name="firstView"/>, + <paramref name="viewCount"/>), which must share one size, one after
    /// the other into <paramref name="destination"/>: [viewCount · Count, S, S, C] (or viewCount · BatchSize rows, of
    /// which the first viewCount · Count are written). A method forwards them as one batch, e.g. SimCLR's 2N images.
    /// </summary>
    public void CopyTo(IBackend backend, int firstView, int viewCount, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(destination);
        if (firstView < 0 || viewCount < 1 || firstView + viewCount > ViewCount)
        {
            throw new ArgumentOutOfRangeException(nameof(viewCount), $"views [{firstView}, {firstView + viewCount}) are outside the batch's {ViewCount}");
        }
        var shape = ViewShape(firstView);
        for (var v = firstView + 1; v < firstView + viewCount; v++)
        {
            if (ViewShape(v) != shape)
            {
                throw new ArgumentException($"view {v} is {ViewShape(v)}, view {firstView} is {shape}: only views of one size go into one tensor", nameof(viewCount));
            }
        }
        var perSample = shape.Length / Math.Max(1, Count);
        if (destination.Length != viewCount * shape.Length && destination.Length != viewCount * perSample * _loader.Options.BatchSize)
        {
            throw new ArgumentException($"{destination.Describe()} does not hold {viewCount} view(s) of {shape} (batch size {_loader.Options.BatchSize})", nameof(destination));
        }
        if (destination.Layout == ImageLayout.Nchw)
        {
            throw new ArgumentException($"{destination.Describe()} is tagged NCHW; the loader writes NHWC views", nameof(destination));
        }
        // A full batch's views lie back to back in the buffer (one copy); a partial batch's views start a full view apart.
        var contiguous = Count == _loader.Options.BatchSize || viewCount == 1;
        for (var v = 0; v < (contiguous ? 1 : viewCount); v++)
        {
            var length = contiguous ? viewCount * shape.Length : shape.Length;
            var target = destination.View(v * shape.Length, new TensorShape(checked((int)length)));
            var source = _loader.ViewOffset(firstView + v);
            if (backend is CudaBackend cuda && _slot.Pinned is { } pinned)
            {
                cuda.CopyFromPinnedAsync(pinned, source, target);
                _slot.RecordCopy(cuda);
            }
            else
            {
                backend.CopyFromHost(_slot.Span.Slice((int)source, (int)length), target);
            }
        }
    }
}

/// <summary>
/// Feeds a training loop batches of augmented views: worker threads augment samples (each from its own
/// (seed, epoch, index, view) random stream) into <see cref="LoaderOptions.Prefetch"/> batch buffers ahead of the
/// consumer; for a CUDA backend the buffers are pinned so copies to the device are asynchronous. Epochs are
/// shuffled by the seed, the last incomplete batch dropped by default, and the batch contents do not depend on the
/// number of workers.
/// </summary>
/// <example>
/// <code>
/// using var loader = new ContrastiveLoader(dataset, AugmentationPresets.SimClr(32), new LoaderOptions { BatchSize = 512, Seed = 1 }, backend);
/// var views = loader.AllocateViews(backend);           // one [512, 3, 32, 32] tensor per view
/// foreach (var batch in loader.Epoch(epoch))
/// {
///     batch.CopyTo(backend, 0, views[0]);
///     batch.CopyTo(backend, 1, views[1]);
///     method.Step(views[0], views[1]);
/// }
/// </code>
/// </example>
public sealed class ContrastiveLoader : IDisposable
{
    private readonly IImageDataset _dataset;
    private readonly BatchSlot[] _slots;
    private readonly long[] _viewOffsets;
    private readonly ChannelStats _normalization;
    private readonly CudaBackend? _cuda;
    private long _images, _views;
    private double _wallSeconds, _waitSeconds, _busySeconds;
    private bool _running;

    public ContrastiveLoader(IImageDataset dataset, AugmentationPreset preset, LoaderOptions options, IBackend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        if (options.BatchSize <= 0 || options.Workers <= 0 || options.Prefetch < 1 || options.ChunkSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"batch size {options.BatchSize}, workers {options.Workers}, prefetch {options.Prefetch} and chunk size {options.ChunkSize} must be positive");
        }
        if (options.Ranks < 1 || options.Rank < 0 || options.Rank >= options.Ranks || (options.Ranks > 1 && !options.DropLast))
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"rank {options.Rank} of {options.Ranks}: a shard needs 0 <= rank < ranks, and drop-last (every rank takes a full batch)");
        }
        var stats = options.Normalization ?? dataset.Stats;
        if (stats.Channels != dataset.Shape.Channels)
        {
            throw new ArgumentException($"normalisation for {stats.Channels} channels on {dataset.Name}'s {dataset.Shape.Channels}-channel images", nameof(options));
        }
        if (preset.ViewCount == 0)
        {
            throw new ArgumentException($"preset {preset.Name} has no views", nameof(preset));
        }
        _dataset = dataset;
        Preset = preset;
        Options = options;
        _normalization = stats;
        _viewOffsets = new long[preset.ViewCount + 1];
        for (var v = 0; v < preset.ViewCount; v++)
        {
            _viewOffsets[v + 1] = _viewOffsets[v] + ViewShape(v, options.BatchSize).Length;
        }
        _cuda = backend as CudaBackend;
        _cuda?.Context.MakeCurrent();
        _slots = new BatchSlot[options.Prefetch];
        for (var s = 0; s < _slots.Length; s++)
        {
            _slots[s] = new BatchSlot(_viewOffsets[^1], options.BatchSize, pinned: _cuda is not null);
        }
    }

    public AugmentationPreset Preset { get; }

    public LoaderOptions Options { get; }

    public IImageDataset Dataset => _dataset;

    /// <summary>Batches per epoch under the drop-last setting (global batches, one shard of each here).</summary>
    public int BatchesPerEpoch => Options.DropLast ? _dataset.Count / Options.GlobalBatchSize : (_dataset.Count + Options.BatchSize - 1) / Options.BatchSize;

    public LoaderStats Stats => new(_images, _views, _wallSeconds, _waitSeconds, _busySeconds, Options.Workers);

    /// <summary>[batch, S, S, C] of view <paramref name="view"/> (NHWC, what the models read).</summary>
    public TensorShape ViewShape(int view, int batch)
    {
        var size = Preset.Views[view].Size;
        return new TensorShape(batch, size, size, _dataset.Shape.Channels);
    }

    /// <summary>One tensor per view, [BatchSize, S, S, C] tagged NHWC, on <paramref name="backend"/>; the caller disposes them.</summary>
    public Tensor[] AllocateViews(IBackend backend) =>
        [.. Enumerable.Range(0, Preset.ViewCount).Select(v => backend.AllocateImages(ViewShape(v, Options.BatchSize), $"view{v}"))];

    internal long ViewOffset(int view) => _viewOffsets[view];

    /// <summary>The dataset indices of epoch <paramref name="epoch"/> in batch order (a seeded Fisher–Yates shuffle).</summary>
    public int[] EpochOrder(int epoch)
    {
        var order = new int[_dataset.Count];
        for (var i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }
        if (Options.Shuffle)
        {
            var rng = new SampleRandom(Options.Seed, ((ulong)(uint)epoch << 32) | uint.MaxValue, 0);
            for (var i = order.Length - 1; i > 0; i--)
            {
                var j = rng.NextInt(i + 1);
                (order[i], order[j]) = (order[j], order[i]);
            }
        }
        return order;
    }

    /// <summary>
    /// The batches of epoch <paramref name="epoch"/> from batch <paramref name="firstBatch"/> on (a resumed run skips
    /// those it consumed: a batch depends only on the seed, the epoch and its number); each is valid until the next
    /// one is requested.
    /// </summary>
    public IEnumerable<ViewBatch> Epoch(int epoch, int firstBatch = 0)
    {
        if (_running)
        {
            throw new InvalidOperationException("an epoch of this loader is already being enumerated");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(firstBatch);
        return Run(epoch, firstBatch);
    }

    private IEnumerable<ViewBatch> Run(int epoch, int firstBatch)
    {
        _running = true;
        var run = new EpochRun(this, epoch, EpochOrder(epoch), firstBatch);
        var clock = Stopwatch.StartNew();
        try
        {
            run.Start();
            for (var b = firstBatch; b < run.Batches; b++)
            {
                var waitStart = Stopwatch.GetTimestamp();
                var batch = run.WaitFor(b);
                _waitSeconds += Stopwatch.GetElapsedTime(waitStart).TotalSeconds;
                yield return batch;
                _images += batch.Count;
                _views += (long)batch.Count * Preset.ViewCount;
                run.Release(b);
            }
        }
        finally
        {
            run.Stop();
            _busySeconds += run.BusySeconds;
            _wallSeconds += clock.Elapsed.TotalSeconds;
            _running = false;
        }
    }

    public void Dispose()
    {
        foreach (var slot in _slots)
        {
            slot.Dispose();
        }
    }

    /// <summary>One epoch's workers and the hand-over of batch buffers between them and the consumer.</summary>
    private sealed class EpochRun(ContrastiveLoader loader, int epoch, int[] order, int firstBatch)
    {
        private readonly object _gate = new();
        private readonly int _chunksPerBatch = (loader.Options.BatchSize + loader.Options.ChunkSize - 1) / loader.Options.ChunkSize;
        private readonly ViewBatch[] _batches = [.. loader._slots.Select(s => new ViewBatch(loader, s))];
        private readonly int[] _remaining = new int[loader._slots.Length];
        private readonly int[] _ready = [.. Enumerable.Repeat(-1, loader._slots.Length)];
        private Thread[] _threads = [];
        private long _nextChunk = (long)firstBatch * ((loader.Options.BatchSize + loader.Options.ChunkSize - 1) / loader.Options.ChunkSize);
        private int _released = firstBatch;
        private long _busyTicks;
        private bool _stop;
        private Exception? _failure;

        public int Batches { get; } = loader.BatchesPerEpoch;

        public double BusySeconds => _busyTicks / (double)Stopwatch.Frequency;

        private int Slots => loader._slots.Length;

        public void Start()
        {
            for (var s = 0; s < Slots; s++)
            {
                _remaining[s] = _chunksPerBatch;
            }
            _threads = new Thread[loader.Options.Workers];
            for (var w = 0; w < _threads.Length; w++)
            {
                _threads[w] = new Thread(Work) { IsBackground = true, Name = $"nc-loader-{w}" };
                _threads[w].Start();
            }
        }

        public ViewBatch WaitFor(int batch)
        {
            var slot = batch % Slots;
            lock (_gate)
            {
                while (_ready[slot] != batch && _failure is null)
                {
                    Monitor.Wait(_gate);
                }
                if (_failure is not null)
                {
                    throw new InvalidOperationException($"the loader failed on {loader._dataset.Name}: {_failure.Message}", _failure);
                }
            }
            var view = _batches[slot];
            view.Epoch = epoch;
            view.Number = batch;
            view.Count = BatchRows(batch);
            return view;
        }

        /// <summary>Hands batch <paramref name="batch"/>'s buffer back for batch + Prefetch.</summary>
        public void Release(int batch)
        {
            lock (_gate)
            {
                _remaining[batch % Slots] = _chunksPerBatch;
                _released = batch + 1;
                Monitor.PulseAll(_gate);
            }
        }

        public void Stop()
        {
            lock (_gate)
            {
                _stop = true;
                Monitor.PulseAll(_gate);
            }
            foreach (var t in _threads)
            {
                t.Join();
            }
        }

        private int BatchRows(int batch) => Math.Min(loader.Options.BatchSize, order.Length - FirstSample(batch));

        /// <summary>The position in the epoch's order of this shard's first sample of batch <paramref name="batch"/>.</summary>
        private int FirstSample(int batch) => (batch * loader.Options.GlobalBatchSize) + (loader.Options.Rank * loader.Options.BatchSize);

        private void Work()
        {
            var augmenter = new ViewAugmenter();
            var planes = new float[loader.Preset.Views.Max(v => v.Size * v.Size) * loader._dataset.Shape.Channels];
            var busy = 0L;
            try
            {
                while (true)
                {
                    var chunk = Interlocked.Increment(ref _nextChunk) - 1;
                    var batch = (int)(chunk / _chunksPerBatch);
                    if (batch >= Batches)
                    {
                        break;
                    }
                    var slotIndex = batch % Slots;
                    lock (_gate)
                    {
                        while (batch >= _released + Slots && !_stop && _failure is null)
                        {
                            Monitor.Wait(_gate);
                        }
                        if (_stop || _failure is not null)
                        {
                            break;
                        }
                    }
                    var slot = loader._slots[slotIndex];
                    slot.WaitForCopies(loader._cuda);
                    var start = Stopwatch.GetTimestamp();
                    var rows = BatchRows(batch);
                    var first = (int)(chunk % _chunksPerBatch) * loader.Options.ChunkSize;
                    for (var row = first; row < Math.Min(rows, first + loader.Options.ChunkSize); row++)
                    {
                        Fill(slot, row, order[FirstSample(batch) + row], augmenter, planes);
                    }
                    busy += Stopwatch.GetTimestamp() - start;
                    if (Interlocked.Decrement(ref _remaining[slotIndex]) == 0)
                    {
                        lock (_gate)
                        {
                            _ready[slotIndex] = batch;
                            Monitor.PulseAll(_gate);
                        }
                    }
                }
            }
            catch (Exception e)
            {
                lock (_gate)
                {
                    _failure ??= e;
                    Monitor.PulseAll(_gate);
                }
            }
            Interlocked.Add(ref _busyTicks, busy);
        }

        /// <summary>Augments sample <paramref name="index"/>'s views (as channel planes), normalises them and interleaves them into their NHWC rows of the batch buffer.</summary>
        private void Fill(BatchSlot slot, int row, int index, ViewAugmenter augmenter, float[] scratch)
        {
            var dataset = loader._dataset;
            var shape = dataset.Shape;
            slot.Indices[row] = index;
            slot.Labels[row] = dataset.GetLabel(index);
            try
            {
                var image = dataset.GetImage(index);
                var span = slot.Span;
                for (var v = 0; v < loader.Preset.ViewCount; v++)
                {
                    var recipe = loader.Preset.Views[v];
                    var length = shape.Channels * recipe.Size * recipe.Size;
                    // A partial last batch packs its rows like a full one: view v's rows start at the same offset.
                    var planes = scratch.AsSpan(0, length);
                    var rng = SampleRandom.ForView(loader.Options.Seed, epoch, index, v);
                    augmenter.Augment(image, shape, recipe, ref rng, planes);
                    ImageOps.Normalize(planes, loader._normalization);
                    ImageOps.PlanesToInterleaved(planes, shape.Channels, span.Slice((int)loader._viewOffsets[v] + (row * length), length));
                }
            }
            catch (Exception e)
            {
                throw new InvalidOperationException($"image {index} of epoch {epoch}: {e.Message}", e);
            }
        }
    }
}

/// <summary>One batch buffer: pinned host memory for a CUDA consumer, a managed array otherwise.</summary>
internal sealed class BatchSlot : IDisposable
{
    private readonly float[]? _managed;
    private CudaEvent? _copyDone;
    private volatile bool _copyPending;

    public BatchSlot(long floats, int batchSize, bool pinned)
    {
        if (pinned)
        {
            Pinned = new PinnedHostBuffer(floats);
        }
        else
        {
            _managed = GC.AllocateUninitializedArray<float>(checked((int)floats), pinned: true);
        }
        Indices = new int[batchSize];
        Labels = new int[batchSize];
    }

    public PinnedHostBuffer? Pinned { get; }

    public int[] Indices { get; }

    public int[] Labels { get; }

    public Span<float> Span => Pinned is not null ? Pinned.Span : _managed;

    /// <summary>Marks the end of the device copies out of this buffer (recorded after each copy, so the last one counts).</summary>
    public void RecordCopy(CudaBackend cuda)
    {
        _copyDone ??= new CudaEvent(timing: false);
        _copyDone.Record(cuda.Stream);
        _copyPending = true;
    }

    /// <summary>Blocks a worker until the device has finished reading this buffer.</summary>
    public void WaitForCopies(CudaBackend? cuda)
    {
        if (!_copyPending || _copyDone is null)
        {
            return;
        }
        cuda?.Context.MakeCurrent();
        _copyDone.Synchronize();
        _copyPending = false;
    }

    public void Dispose()
    {
        _copyDone?.Dispose();
        Pinned?.Dispose();
    }
}
