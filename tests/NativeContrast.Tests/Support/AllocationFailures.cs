namespace NativeContrast.Tests.Support;

using System.Reflection;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>
/// An IBackend that forwards to a CPU backend and fails an allocation the way cuMemAlloc does when the device is
/// out of memory, after a set number of successful ones; it remembers every tensor it allocated.
/// </summary>
public class AllocationFailures : DispatchProxy
{
    private CpuBackend _target = null!;
    private int _allowed = int.MaxValue;

    public List<Tensor> Allocated { get; } = [];

    public IBackend Backend => (IBackend)(object)this;

    public static AllocationFailures Wrap(CpuBackend target)
    {
        var proxy = (AllocationFailures)(object)Create<IBackend, AllocationFailures>();
        proxy._target = target;
        return proxy;
    }

    /// <summary>Counts allocations from now on; the one after <paramref name="allowed"/> fails.</summary>
    public void Start(int allowed)
    {
        Allocated.Clear();
        _allowed = allowed;
    }

    /// <summary>
    /// Runs <paramref name="create"/> with every allocation failing in turn (the first, the second, ...) until it
    /// succeeds, asserting after each failure that everything allocated so far was disposed; returns how many
    /// allocations the successful run made.
    /// </summary>
    public int FailEachAllocationInTurn(Func<IDisposable> create)
    {
        for (var allowed = 0; ; allowed++)
        {
            Start(allowed);
            try
            {
                using var made = create();
                _allowed = int.MaxValue;
                return Allocated.Count;
            }
            catch (CudaException e) when (e.ErrorName == "CUDA_ERROR_OUT_OF_MEMORY")
            {
                var leaked = Allocated.Where(t => !t.Storage.IsDisposed).Select(t => t.Describe()).ToArray();
                Assert.That(leaked, Is.Empty, $"tensors left allocated after {allowed} successful allocation(s)");
            }
        }
    }

    /// <summary>
    /// Fails each of the first <paramref name="allocations"/> allocations of <paramref name="create"/> in turn and
    /// asserts that each failure left nothing allocated (for constructors that copy from host spans once everything
    /// is allocated: a proxy cannot forward a span).
    /// </summary>
    public void FailEachOf(int allocations, Action create)
    {
        for (var allowed = 0; allowed < allocations; allowed++)
        {
            Start(allowed);
            var e = Assert.Throws<CudaException>(() => create());
            Assert.That(e!.ErrorName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
            Assert.That(Allocated.Where(t => !t.Storage.IsDisposed).Select(t => t.Describe()), Is.Empty, $"tensors left allocated after {allowed} successful allocation(s)");
        }
        _allowed = int.MaxValue;
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        ArgumentNullException.ThrowIfNull(targetMethod);
        if (targetMethod.Name == nameof(IBackend.Allocate) && Allocated.Count >= _allowed)
        {
            throw new CudaException("cuMemAlloc(4096 bytes)", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory");
        }
        try
        {
            var result = targetMethod.Invoke(_target, args);
            if (result is Tensor tensor && targetMethod.Name == nameof(IBackend.Allocate))
            {
                Allocated.Add(tensor);
            }
            return result;
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw e.InnerException;
        }
    }
}
