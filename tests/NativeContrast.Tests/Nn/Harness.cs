namespace NativeContrast.Tests.Nn;

using NativeContrast.Backends;
using NativeContrast.Nn;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>One backend, a layout to declare layers into, the arena made from it, and a plan builder for their memory.</summary>
internal sealed class Harness : IDisposable
{
    private readonly List<IDisposable> _tensors = [];
    private readonly bool _ownsBackend;
    private PlanBuilder? _builder;

    /// <summary>On a new CPU backend, or on <paramref name="backend"/>, which the caller keeps and disposes.</summary>
    public Harness(IBackend? backend = null)
    {
        _ownsBackend = backend is null;
        Backend = backend ?? new CpuBackend();
    }

    /// <summary>On a new CPU backend on the given libraries, owned by the harness.</summary>
    public Harness(CpuPath path)
    {
        _ownsBackend = true;
        Backend = path.Create();
    }

    public IBackend Backend { get; }

    public ArenaLayout Layout { get; } = new();

    public ParameterArena Arena { get; private set; } = null!;

    public PlanBuilder Builder => _builder ??= new PlanBuilder(Backend);

    /// <summary>Allocates the arena for everything declared so far.</summary>
    public ParameterArena CreateArena()
    {
        Arena = new ParameterArena(Backend, Layout, optimizerStateSlots: 0);
        return Arena;
    }

    /// <summary>Allocates the scratch pools of the plans made with <see cref="Builder"/>.</summary>
    public void BuildPlans() => _tensors.AddRange(Builder.Build().Owned);

    public Tensor Tensor(float[] values, TensorShape shape, string? name = null)
    {
        var t = Backend.Allocate(shape, name);
        Backend.CopyFromHost(values, t);
        _tensors.Add(t);
        return t;
    }

    public Tensor Zeros(TensorShape shape, string? name = null)
    {
        var t = Backend.Allocate(shape, name);
        _tensors.Add(t);
        return t;
    }

    public float[] Read(Tensor t) => Support.Numerics.ToArray(Backend, t);

    public void Dispose()
    {
        foreach (var t in _tensors)
        {
            t.Dispose();
        }
        Arena?.Dispose();
        if (_ownsBackend)
        {
            Backend.Dispose();
        }
    }
}
