namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// The distillation loss on the GPU (a composition of existing kernels) against the CPU twin on awkward sizes: one row,
/// one class, rows past a warp and a block, classes past the 32-wide reductions, and the whole batch as one long row.
/// </summary>
public class DistillationGpuTests : GpuTestBase
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var rows in new[] { 1, 3, 33, 257 })
        {
            foreach (var classes in new[] { 1, 2, 10, 33, 1000 })
            {
                yield return new TestCaseData(rows, classes, rows % 2 == 0 ? 0.5f : 2f);
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesCpuTwin(int rows, int classes, float temperature)
    {
        var student = Numerics.RandomArray(rows * classes, seed: rows + (7 * classes), scale: 4f);
        var teacher = Numerics.RandomArray(rows * classes, seed: 3 + rows + classes, scale: 4f);
        var (cpuLoss, cpuGradient) = Run(Cpu, student, teacher, rows, classes, temperature);
        var (gpuLoss, gpuGradient) = Run(Gpu, student, teacher, rows, classes, temperature);
        Assert.That(gpuLoss, Is.EqualTo(cpuLoss).Within(Numerics.Fp32Tolerance * Math.Max(1, Math.Abs(cpuLoss))), "loss");
        Numerics.AssertClose(gpuGradient, cpuGradient, Numerics.Fp32Tolerance, "dL/ds");
    }

    private static (float Loss, float[] Gradient) Run(IBackend backend, float[] student, float[] teacher, int rows, int classes, float temperature)
    {
        using var loss = new DistillationLoss(backend, rows, classes, temperature);
        using var s = backend.Allocate(new TensorShape(rows, classes));
        using var t = backend.Allocate(new TensorShape(rows, classes));
        backend.CopyFromHost(student, s);
        backend.CopyFromHost(teacher, t);
        backend.Fill(loss.Gradient, float.NaN);  // every element must be written
        loss.SetTeacher(t);
        var value = Numerics.ToArray(backend, loss.Forward(s))[0];
        return (value, Numerics.ToArray(backend, loss.Backward(0.25f)));
    }
}
