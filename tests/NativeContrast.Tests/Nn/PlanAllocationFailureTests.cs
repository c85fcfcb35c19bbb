namespace NativeContrast.Tests.Nn;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Nn;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>Plans and workspaces that run out of memory half-way give back everything they had allocated.</summary>
public class PlanAllocationFailureTests
{
    [Test]
    public void AModulePlanThatFailsToAllocateDisposesWhatItAllocated()
    {
        using var cpu = new CpuBackend();
        var failures = AllocationFailures.Wrap(cpu);
        using var t = new Harness(failures.Backend);
        var encoder = new ResNet(t.Layout, ResNetOptions.ResNet18 with { Stem = ResNetStem.Cifar });
        var projector = new MlpHead(t.Layout, new MlpHeadOptions(encoder.FeatureDim, 32, 8) { HiddenBatchNorm = true });
        using var model = new Sequential(encoder, projector);
        t.CreateArena();
        model.Bind(t.Arena);

        var allocations = failures.FailEachAllocationInTurn(() => model.Plan(new TensorShape(2, 8, 8, 3), inputGradient: true));
        Assert.That(allocations, Is.GreaterThan(10), "the plan allocates several tensors, so failing each one in turn means something");
        Assert.That(failures.Allocated.All(x => x.Storage.IsDisposed), Is.True, "the successful plan is disposed too");
    }

    [Test]
    public void AnOptimizerPlanThatFailsToAllocateDisposesWhatItAllocated()
    {
        using var cpu = new CpuBackend();
        var failures = AllocationFailures.Wrap(cpu);
        var layout = new ArenaLayout();
        layout.Add("w", new TensorShape(40, 3), ParameterKind.Weight);
        layout.Add("b", new TensorShape(40), ParameterKind.Bias);
        using var arena = new ParameterArena(failures.Backend, layout, optimizerStateSlots: 1);
        failures.FailEachOf(5, () => new OptimizerPlan(arena, chunkLength: 32));
    }

    [Test]
    public void FusedLossesThatFailToAllocateDisposeWhatTheyAllocated()
    {
        using var cpu = new CpuBackend();
        var failures = AllocationFailures.Wrap(cpu);
        Assert.That(failures.FailEachAllocationInTurn(() => new NtXentLoss(failures.Backend, 8, 4, 0.5f, MatmulPrecision.Fp32)), Is.EqualTo(2));
        Assert.That(failures.FailEachAllocationInTurn(() => new InfoNceLoss(failures.Backend, 4, 4, 16, 0.2f, MatmulPrecision.Fp32)), Is.GreaterThanOrEqualTo(2));
    }
}
