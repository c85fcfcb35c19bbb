namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Tensors;

public class SmokeTests
{
    [Test]
    public void GemmMultipliesSmallMatrices()
    {
        using var cpu = new CpuBackend();
        using var a = cpu.FromArray([1, 2, 3, 4, 5, 6], new TensorShape(2, 3));
        using var b = cpu.FromArray([1, 0, 0, 1, 1, 1], new TensorShape(3, 2));
        using var c = cpu.Allocate(new TensorShape(2, 2));
        cpu.Gemm(a, false, b, false, c);
        Assert.That(c.Span.ToArray(), Is.EqualTo(new float[] { 4, 5, 10, 11 }));
    }
}
