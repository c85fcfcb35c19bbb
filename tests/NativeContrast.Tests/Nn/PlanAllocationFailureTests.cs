namespace NativeContrast.Tests.Nn;

using System.Reflection;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Nn;
using NativeContrast.Tensors;

/// <summary>A plan that runs out of memory half-way gives back everything it had allocated.</summary>
public class PlanAllocationFailureTests
{
    [Test]
    public void APlanThatFailsToAllocateDisposesWhatItAllocated()
    {
        using var cpu = new CpuBackend();
        var backend = AllocationFailures.Wrap(cpu);
        var failures = (AllocationFailures)(object)backend;
        using var t = new Harness(backend);
        var encoder = new ResNet(t.Layout, ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar });
        var projector = new MlpHead(t.Layout, new MlpHeadOptions(encoder.FeatureDim, 32, 8) { HiddenBatchNorm = true });
        using var model = new Sequential(encoder, projector);
        t.CreateArena();
        model.Bind(t.Arena);
        var input = new TensorShape(2, 8, 8, 3);

        var planned = 0;
        for (var allowed = 0; ; allowed++)
        {
            failures.Start(allowed);
            try
            {
                using var plan = model.Plan(input, inputGradient: true);
                planned = failures.Allocated.Count;
                break;
            }
            catch (CudaException e) when (e.ErrorName == "CUDA_ERROR_OUT_OF_MEMORY")
            {
                var leaked = failures.Allocated.Where(x => !x.Storage.IsDisposed).Select(x => x.Describe()).ToArray();
                Assert.That(leaked, Is.Empty, $"after {allowed} successful allocations");
            }
        }
        Assert.That(planned, Is.GreaterThan(10), "the plan allocates several tensors, so failing each one in turn means something");
        Assert.That(failures.Allocated.All(x => x.Storage.IsDisposed), Is.True, "the successful plan is disposed too");
    }

    /// <summary>An IBackend that forwards to the CPU backend and fails an allocation, like cuMemAlloc out of memory, after a set number.</summary>
    public class AllocationFailures : DispatchProxy
    {
        private CpuBackend _target = null!;
        private int _allowed = int.MaxValue;

        public List<Tensor> Allocated { get; } = [];

        public static IBackend Wrap(CpuBackend target)
        {
            var proxy = Create<IBackend, AllocationFailures>();
            ((AllocationFailures)(object)proxy)._target = target;
            return proxy;
        }

        /// <summary>Counts allocations from now on; the one after <paramref name="allowed"/> fails.</summary>
        public void Start(int allowed)
        {
            Allocated.Clear();
            _allowed = allowed;
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
}
