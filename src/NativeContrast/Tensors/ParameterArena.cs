namespace NativeContrast.Tensors;

using NativeContrast.Backends;

/// <summary>What a parameter is, which decides how optimisers treat it.</summary>
public enum ParameterKind
{
    /// <summary>Convolution and linear weights: decayed, and adapted by LARS.</summary>
    Weight,

    /// <summary>Biases: excluded from weight decay and LARS adaptation (SimCLR's recipe).</summary>
    Bias,

    /// <summary>BatchNorm gamma: excluded from weight decay and LARS adaptation.</summary>
    NormScale,

    /// <summary>BatchNorm beta: excluded from weight decay and LARS adaptation.</summary>
    NormShift,

    /// <summary>Non-trainable state saved with the model (BatchNorm running statistics); never optimised.</summary>
    Buffer,
}

/// <summary>A named view into the arena: PyTorch's name, the shape, the offset in elements, and the kind.</summary>
public sealed record ParameterView(string Name, TensorShape Shape, long Offset, ParameterKind Kind, int Index)
{
    public long Length => Shape.Length;

    public bool IsTrainable => Kind != ParameterKind.Buffer;

    /// <summary>Biases and normalisation parameters skip weight decay and LARS trust ratios.</summary>
    public bool IsExcludedFromDecay => Kind is ParameterKind.Bias or ParameterKind.NormScale or ParameterKind.NormShift;
}

/// <summary>
/// The layout of an arena, declared before any memory exists: models add their parameters while they are built,
/// then one <see cref="ParameterArena"/> allocates everything at once. Trainable views come first, buffers last,
/// so optimisers cover the prefix [0, TrainableLength) in one launch.
/// </summary>
public sealed class ArenaLayout
{
    /// <summary>Every view starts on a 128-byte boundary so kernels can use 16-byte vector loads within a view.</summary>
    public const int AlignmentElements = 32;

    private readonly List<(string Name, TensorShape Shape, ParameterKind Kind)> _entries = [];
    private readonly HashSet<string> _names = [];

    public int Count => _entries.Count;

    /// <summary>Declares a parameter and returns its index, used later to find its view in the arena.</summary>
    public int Add(string name, TensorShape shape, ParameterKind kind)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (!_names.Add(name))
        {
            throw new ArgumentException($"parameter '{name}' is declared twice", nameof(name));
        }
        _entries.Add((name, shape, kind));
        return _entries.Count - 1;
    }

    /// <summary>Assigns offsets: trainable views in declaration order, then buffers.</summary>
    internal (ParameterView[] Views, long TrainableLength, long Length) Place()
    {
        var views = new ParameterView[_entries.Count];
        long offset = 0;
        long trainableLength = 0;
        foreach (var trainable in new[] { true, false })
        {
            for (var i = 0; i < _entries.Count; i++)
            {
                var (name, shape, kind) = _entries[i];
                if ((kind != ParameterKind.Buffer) != trainable)
                {
                    continue;
                }
                views[i] = new ParameterView(name, shape, offset, kind, i);
                offset += RoundUp(shape.Length);
            }
            if (trainable)
            {
                trainableLength = offset;
            }
        }
        return (views, trainableLength, offset);
    }

    private static long RoundUp(long n) => (n + AlignmentElements - 1) / AlignmentElements * AlignmentElements;
}

/// <summary>
/// One contiguous buffer each for parameter values, gradients and optimiser state, with named views into them,
/// so that zeroing, clipping, an optimiser step or an EMA update is one launch over one pointer and one length.
/// Gradients and state cover the trainable prefix only; buffers (running statistics) live after it in Values.
/// </summary>
public sealed class ParameterArena : IDisposable
{
    private readonly Dictionary<string, ParameterView> _byName;

    /// <param name="optimizerStateSlots">How many arena-sized state vectors the optimiser needs (1 for SGD momentum and LARS, 2 for AdamW).</param>
    public ParameterArena(IBackend backend, ArenaLayout layout, int optimizerStateSlots = 2)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfNegative(optimizerStateSlots);
        Backend = backend;
        (var views, TrainableLength, Length) = layout.Place();
        Views = views;
        _byName = views.ToDictionary(v => v.Name);
        StateSlots = optimizerStateSlots;
        Values = backend.Allocate(new TensorShape(checked((int)Length)), "parameters");
        try
        {
            Gradients = backend.Allocate(new TensorShape(checked((int)TrainableLength)), "gradients");
            try
            {
                OptimizerState = backend.Allocate(new TensorShape(optimizerStateSlots, checked((int)TrainableLength)), "optimizer state");
            }
            catch
            {
                Gradients.Dispose();
                throw;
            }
        }
        catch
        {
            // Device memory is the scarce resource: a failed arena must not keep what it already allocated.
            Values.Dispose();
            throw;
        }
    }

    public IBackend Backend { get; }

    /// <summary>Views in declaration order (indices returned by <see cref="ArenaLayout.Add"/>).</summary>
    public IReadOnlyList<ParameterView> Views { get; }

    public long TrainableLength { get; }

    public long Length { get; }

    public int StateSlots { get; }

    /// <summary>All values: trainable parameters in [0, TrainableLength), buffers after.</summary>
    public Tensor Values { get; }

    public Tensor Gradients { get; }

    /// <summary>Optimiser state, [slots, TrainableLength].</summary>
    public Tensor OptimizerState { get; }

    /// <summary>The trainable prefix of <see cref="Values"/>.</summary>
    public Tensor TrainableValues => Values.View(0, new TensorShape(checked((int)TrainableLength)), "trainable values");

    public ParameterView this[int index] => Views[index];

    public ParameterView this[string name] =>
        _byName.TryGetValue(name, out var v) ? v : throw new KeyNotFoundException($"the arena has no parameter named '{name}'");

    public bool Contains(string name) => _byName.ContainsKey(name);

    public Tensor Value(ParameterView view) => Values.View(view.Offset, view.Shape, view.Name);

    public Tensor Value(int index) => Value(Views[index]);

    public Tensor Gradient(ParameterView view)
    {
        if (!view.IsTrainable)
        {
            throw new InvalidOperationException($"'{view.Name}' is a buffer and has no gradient");
        }
        return Gradients.View(view.Offset, view.Shape, view.Name + ".grad");
    }

    public Tensor Gradient(int index) => Gradient(Views[index]);

    public Tensor State(int slot, ParameterView view)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, StateSlots);
        if (!view.IsTrainable)
        {
            throw new InvalidOperationException($"'{view.Name}' is a buffer and has no optimiser state");
        }
        return OptimizerState.View((slot * TrainableLength) + view.Offset, view.Shape, $"{view.Name}.state{slot}");
    }

    /// <summary>The whole state slot as one flat tensor over the trainable prefix.</summary>
    public Tensor StateSlot(int slot) =>
        OptimizerState.View(slot * TrainableLength, new TensorShape(checked((int)TrainableLength)), $"optimizer state {slot}");

    public void Dispose()
    {
        Values.Dispose();
        Gradients.Dispose();
        OptimizerState.Dispose();
    }
}
