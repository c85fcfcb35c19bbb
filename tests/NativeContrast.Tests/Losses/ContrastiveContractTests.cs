namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The fused losses' argument contracts, checked on the host before any kernel could break them.</summary>
public class ContrastiveContractTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(0, TestName = "dz is z")]
    [TestCase(3, TestName = "dz overlaps z by all but three elements")]
    public void NtXentBackwardRejectsAGradientOverlappingZ(int shift)
    {
        const int rows = 4, dim = 3;
        using var storage = _cpu.FromArray(Numerics.RandomArray((2 * rows * dim) + shift, seed: 3), new TensorShape((2 * rows * dim) + shift));
        var z = storage.View(0, new TensorShape(rows, dim), "z");
        var dz = storage.View(shift, new TensorShape(rows, dim), "dz");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.NtXentWorkspaceLength(rows, dim, MatmulPrecision.Fp32))));
        using var stats = _cpu.Allocate(new TensorShape(3));
        _cpu.NtXentForward(z, 0.5f, MatmulPrecision.Fp32, workspace, stats);

        var e = Assert.Throws<ArgumentException>(() => _cpu.NtXentBackward(z, 0.5f, MatmulPrecision.Fp32, workspace, dz));
        Assert.That(e!.Message, Does.Contain("dz").And.Contain("overlaps z").And.Contain("partner"));
    }

    [Test]
    public void NtXentBackwardAcceptsTheRowsRightAfterZ()
    {
        const int rows = 4, dim = 3;
        using var storage = _cpu.FromArray(Numerics.RandomArray(2 * rows * dim, seed: 4), new TensorShape(2 * rows * dim));
        var z = storage.View(0, new TensorShape(rows, dim), "z");
        var dz = storage.View(rows * dim, new TensorShape(rows, dim), "dz");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.NtXentWorkspaceLength(rows, dim, MatmulPrecision.Fp32))));
        using var stats = _cpu.Allocate(new TensorShape(3));
        _cpu.NtXentForward(z, 0.5f, MatmulPrecision.Fp32, workspace, stats);
        Assert.DoesNotThrow(() => _cpu.NtXentBackward(z, 0.5f, MatmulPrecision.Fp32, workspace, dz));
    }

    [TestCase(0x7f0000000000UL, true)]
    [TestCase(0x7f0000000010UL, true)]
    [TestCase(0x7f0000000004UL, false)]
    [TestCase(0x7f0000000008UL, false)]
    public void WorkspaceAddressesMustSuitSixteenByteCopies(ulong address, bool accepted)
    {
        void Check() => ContrastiveCheck.Aligned(address, CudaBackend.OperandAlignmentBytes, "nt-xent workspace [100]");
        if (accepted)
        {
            Assert.DoesNotThrow(Check);
            return;
        }
        var e = Assert.Throws<ArgumentException>(Check);
        Assert.That(e!.Message, Does.Contain("nt-xent workspace").And.Contain("16-byte aligned"));
    }
}
