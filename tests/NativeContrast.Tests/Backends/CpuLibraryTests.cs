namespace NativeContrast.Tests.Backends;

using NativeContrast.Backends;
using NativeContrast.Cpu;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>The library path of the CPU backend (OpenBLAS) against the managed path it replaces, and how it reports itself.</summary>
public class CpuLibraryTests
{
    [Test]
    public void DescriptionSaysWhichGemmRunsAndWhy()
    {
        var libraries = CpuLibraries.Default;
        Assert.That(libraries.Description, libraries.UsesOpenBlas ? Does.StartWith("OpenBLAS ") : Does.StartWith("managed GEMM"));
        Assert.That(libraries.Description, libraries.UsesDnnl ? Does.Contain("oneDNN 2.") : Does.Contain("im2col convolutions: "));
        Assert.That(CpuLibraries.OpenBlasOnly.UsesDnnl, Is.False);
        using var managed = new CpuBackend(CpuLibraries.ManagedOnly);
        Assert.That(managed.Libraries.UsesOpenBlas || managed.Libraries.UsesDnnl, Is.False);
        Assert.That(managed.Libraries.Description, Does.StartWith("managed GEMM, im2col convolutions: "));
    }

    // Sizes around OpenBLAS's kernel tiles (16×4 / 32×...) and its threading threshold, plus skinny shapes.
    [TestCase(1, 1, 1)]
    [TestCase(17, 3, 31)]
    [TestCase(129, 577, 65)]
    [TestCase(1000, 27, 16)]
    [TestCase(3, 1024, 2)]
    [TestCase(257, 255, 253)]
    public void OpenBlasGemmMatchesManagedGemm(int m, int k, int n)
    {
        if (!CpuLibraries.Default.UsesOpenBlas)
        {
            Assert.Ignore(CpuLibraries.Default.Description);
        }
        using var library = new CpuBackend();
        using var managed = new CpuBackend(CpuLibraries.ManagedOnly);
        foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
        {
            var a = Numerics.RandomArray(m * k, 1);
            var b = Numerics.RandomArray(k * n, 2);
            var c = Numerics.RandomArray(m * n, 3);
            var aShape = ta ? new TensorShape(k, m) : new TensorShape(m, k);
            var bShape = tb ? new TensorShape(n, k) : new TensorShape(k, n);
            float[] Run(CpuBackend backend)
            {
                using var tA = backend.FromArray(a, aShape, "A");
                using var tB = backend.FromArray(b, bShape, "B");
                using var tC = backend.FromArray(c, new TensorShape(m, n), "C");
                backend.Gemm(tA, ta, tB, tb, tC, alpha: 0.75f, beta: -1.5f);
                return tC.Span.ToArray();
            }
            var expected = Run(managed).Select(v => (double)v).ToArray();
            Numerics.AssertClose(Run(library), expected, Numerics.Fp32Tolerance, $"C = 0.75 op(A)op(B) - 1.5 C, m{m} k{k} n{n} ta {ta} tb {tb}");
        }
    }

    // ResNet's shapes at awkward sizes: odd spatial sizes, channel counts off the 16-wide blocks, the 3-channel stem.
    [TestCase(3, 17, 15, 19, 33, 3, 2, 1, TestName = "oneDNN conv 3x3 s2 p1, 17x15, 19 -> 33")]
    [TestCase(2, 16, 16, 64, 128, 1, 2, 0, TestName = "oneDNN conv 1x1 s2 downsample, 64 -> 128")]
    [TestCase(2, 32, 32, 3, 16, 3, 1, 1, TestName = "oneDNN conv 3x3 CIFAR stem, 3 -> 16")]
    [TestCase(1, 9, 11, 5, 7, 7, 2, 3, TestName = "oneDNN conv 7x7 s2 p3, 9x11, 5 -> 7")]
    public void DnnlConvolutionMatchesManagedIm2Col(int n, int h, int w, int cin, int cout, int k, int s, int p)
    {
        if (!CpuLibraries.Default.UsesDnnl)
        {
            Assert.Ignore(CpuLibraries.Default.Description);
        }
        var input = new TensorShape(n, h, w, cin);
        var weights = Numerics.RandomArray(cout * cin * k * k, 1, 0.2f);
        var x = Numerics.RandomArray(checked((int)input.Length), 2);
        var prefill = Numerics.RandomArray(checked((int)input.Length), 3);
        var priorGradient = Numerics.RandomArray(weights.Length, 4);

        (float[] Y, float[] Dx, float[] DxAccumulated, float[] Dw) Run(CpuPath path)
        {
            using var t = new NativeContrast.Tests.Nn.Harness(path);
            var conv = new NativeContrast.Nn.Conv2d(t.Layout, "conv", cin, cout, k, s, p);
            t.CreateArena();
            conv.Bind(t.Arena);
            var plan = conv.CreatePlan(t.Builder, input);
            t.BuildPlans();
            Assert.That(plan.Convolution is not null, Is.EqualTo(path == CpuPath.Libraries), "which path runs the convolution");
            t.Backend.CopyFromHost(weights, conv.Weight);
            t.Backend.CopyFromHost(priorGradient, conv.WeightGradient);
            var tx = t.Tensor(x, input, "x");
            var outShape = conv.OutputShape(input);
            var y = t.Zeros(outShape, "y");
            conv.Forward(plan, tx, y);
            var dy = t.Tensor(Numerics.RandomArray(checked((int)outShape.Length), 5), outShape, "dy");
            var dx = t.Zeros(input, "dx");
            conv.Backward(plan, tx, dy, dx);
            var dxAccumulated = t.Tensor(prefill, input, "dx accumulated");
            conv.Backward(plan, tx, dy, dxAccumulated, accumulateInputGradient: true);
            return (t.Read(y), t.Read(dx), t.Read(dxAccumulated), t.Read(conv.WeightGradient));
        }

        var library = Run(CpuPath.Libraries);
        var managed = Run(CpuPath.Managed);
        Numerics.AssertClose(library.Y, managed.Y, Numerics.Fp32Tolerance, "y");
        Numerics.AssertClose(library.Dx, managed.Dx, Numerics.Fp32Tolerance, "dx");
        Numerics.AssertClose(library.DxAccumulated, managed.DxAccumulated, Numerics.Fp32Tolerance, "dx accumulated onto a prefilled tensor");
        // Two backward calls: the prior gradient plus twice dW.
        Numerics.AssertClose(library.Dw, managed.Dw, Numerics.Fp32Tolerance, "dW accumulated onto a prior gradient");
    }
}
