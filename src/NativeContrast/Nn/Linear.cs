namespace NativeContrast.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// y = x·Wᵀ + b over rows of x, with PyTorch's [out, in] weight (arena names {name}.weight, {name}.bias).
/// Forward is one GEMM; backward is dW += dyᵀ·x, db += Σ_rows dy, dx = dy·W.
/// </summary>
public sealed class Linear
{
    private readonly int _weightIndex;
    private readonly int _biasIndex = -1;

    public Linear(ArenaLayout layout, string name, int inFeatures, int outFeatures, bool bias = true)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        Name = name;
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        _weightIndex = layout.Add(Module.Join(name, "weight"), new TensorShape(outFeatures, inFeatures), ParameterKind.Weight);
        if (bias)
        {
            _biasIndex = layout.Add(Module.Join(name, "bias"), new TensorShape(outFeatures), ParameterKind.Bias);
        }
    }

    public string Name { get; }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    public bool HasBias => _biasIndex >= 0;

    public IBackend Backend { get; private set; } = null!;

    public Tensor Weight { get; private set; } = null!;

    public Tensor WeightGradient { get; private set; } = null!;

    public Tensor? Bias { get; private set; }

    public Tensor? BiasGradient { get; private set; }

    public void Bind(ParameterArena arena)
    {
        Backend = arena.Backend;
        Weight = arena.Value(Module.BoundView(arena, _weightIndex, Module.Join(Name, "weight")));
        WeightGradient = arena.Gradient(arena[_weightIndex]);
        if (HasBias)
        {
            Bias = arena.Value(Module.BoundView(arena, _biasIndex, Module.Join(Name, "bias")));
            BiasGradient = arena.Gradient(arena[_biasIndex]);
        }
    }

    /// <summary>nn.Linear's default: weight and bias U(−1/√in, 1/√in).</summary>
    public void Initialize(ulong seed)
    {
        var bound = 1f / MathF.Sqrt(InFeatures);
        Init.Uniform(Backend, Weight, bound, seed, (ulong)_weightIndex);
        if (Bias is not null)
        {
            Init.Uniform(Backend, Bias, bound, seed, (ulong)_biasIndex);
        }
    }

    public TensorShape OutputShape(TensorShape input)
    {
        if (input.Rank < 1 || input[-1] != InFeatures)
        {
            throw new ArgumentException($"{Name}: expects {InFeatures} input features in the last axis, got {input}");
        }
        var dims = input.Dims.ToArray();
        dims[^1] = OutFeatures;
        return new TensorShape(dims);
    }

    public void Forward(Tensor x, Tensor y)
    {
        Backend.Gemm(x, false, Weight, true, y);
        if (Bias is not null)
        {
            Backend.AddBias(y, Bias);
        }
    }

    /// <summary>Accumulates dW and db; writes dx unless it is null.</summary>
    public void Backward(Tensor x, Tensor dy, Tensor? dx)
    {
        Backend.Gemm(dy, true, x, false, WeightGradient, beta: 1f);
        if (BiasGradient is not null)
        {
            Backend.AccumulateBiasGradient(dy, BiasGradient);
        }
        if (dx is not null)
        {
            Backend.Gemm(dy, false, Weight, false, dx);
        }
    }
}
