namespace NativeContrast.Tests.Losses;

using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>
/// Parity of native/margin.cu with the CPU twin on awkward sizes: rows that leave warps of the last block idle, rows
/// past the fp32 chunk of 256 columns, and every kernel width (dims below, at and just past a multiple of 32). Top-1
/// accuracy may differ only on rows whose positive is within fp32 error of the best negative.
/// </summary>
public class MarginGpuTests : GpuTestBase
{
    /// <summary>Cosine error of two fp32 dot products in different orders: rows this close to a tie may flip.</summary>
    private const double TieMargin = 2 * Numerics.Fp32Tolerance;

    /// <summary>The gradient's tolerance where near-duplicate rows make the margin's weights ill-conditioned.</summary>
    private const double IllConditionedTolerance = 2e-4;

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var rows in new[] { 2, 6, 34, 130, 1000 })
        {
            foreach (var dim in new[] { 3, 17, 32, 33, 128, 1000, 1024 })
            {
                foreach (var margin in new[] { 0.5f, 1.5f })
                {
                    yield return new TestCaseData(rows, dim, margin);
                }
            }
        }
        yield return new TestCaseData(4098, 128, 1.2f);
        yield return new TestCaseData(4098, 513, 1.5f);
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesCpuTwin(int rows, int dim, float margin)
    {
        var u = UnitRows(Numerics.RandomArray(rows * dim, seed: (rows * 31) + dim, scale: 2f), rows, dim);
        var (cpuStats, cpuDu) = RunCpu(u, rows, dim, margin, gradScale: 0.5f);

        using var input = Gpu.Allocate(new TensorShape(rows, dim), "u");
        Gpu.CopyFromHost(u, input);
        using var du = Gpu.Allocate(new TensorShape(rows, dim), "du");
        Gpu.Fill(du, float.NaN);  // every element must be written
        using var loss = new MarginLoss(Gpu, rows, dim, margin);
        loss.Compute(input, du, gradScale: 0.5f);
        var stats = loss.ReadStats();
        var gradient = Numerics.ToArray(Gpu, du);

        Assert.That(stats.Loss, Is.EqualTo(cpuStats.Loss).Within(Numerics.Fp32Tolerance * Math.Max(1, Math.Abs(cpuStats.Loss))), "loss");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(cpuStats.PositiveSimilarity).Within(Numerics.Fp32Tolerance), "mean positive cosine");
        var flips = TopMargins(u, rows, dim).Count(m => Math.Abs(m) < TieMargin);
        Assert.That(Math.Abs(stats.Top1Accuracy - cpuStats.Top1Accuracy) * rows, Is.LessThanOrEqualTo(flips + 1e-3), "top-1 beyond near-ties");
        // In 3 dimensions, 1000 random unit rows hold pairs a few 1e-3 apart, whose weight (m − d)/d moves by
        // δc/d² when the cosine c rounds one ulp differently (GPU and CPU sum the dot product in different orders).
        Numerics.AssertClose(gradient, cpuDu, dim < 8 ? IllConditionedTolerance : Numerics.Fp32Tolerance, "du");

        // Reproducible to the bit (no atomics), and the statistics alone leave du untouched.
        loss.Compute(input, du, gradScale: 0.5f);
        Assert.That(loss.ReadStats(), Is.EqualTo(stats), "second run's statistics");
        Assert.That(Numerics.ToArray(Gpu, du), Is.EqualTo(gradient), "second run's du");
        Gpu.Fill(du, 7f);
        loss.Compute(input, du: null);
        Assert.That(loss.ReadStats(), Is.EqualTo(stats), "statistics without du");
        Assert.That(Numerics.ToArray(Gpu, du).All(v => v == 7f), Is.True, "du untouched when not asked for");
    }

    [Test]
    public void RejectsRowsWiderThanTheKernelsAndAGradientOverlappingU()
    {
        using var wide = Gpu.Allocate(new TensorShape(4, 1025), "u");
        using var stats = Gpu.Allocate(new TensorShape(3), "stats");
        using var workspace = Gpu.Allocate(new TensorShape(12), "workspace");
        Assert.That(() => Gpu.MarginLoss(wide, 1f, workspace, stats, null), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("u [4, 1025]"));

        using var u = Gpu.Allocate(new TensorShape(4, 8), "u");
        Assert.That(() => Gpu.MarginLoss(u, 1f, workspace, stats, u), Throws.ArgumentException.With.Message.Contains("overlaps u [4, 8]"));
        using var small = Gpu.Allocate(new TensorShape(11), "workspace");
        Assert.That(() => Gpu.MarginLoss(u, 1f, small, stats, null), Throws.ArgumentException.With.Message.Contains("workspace [11]"));
    }

    private (ContrastiveStats Stats, float[] Du) RunCpu(float[] u, int rows, int dim, float margin, float gradScale)
    {
        using var input = Cpu.FromArray(u, new TensorShape(rows, dim));
        using var du = Cpu.Allocate(new TensorShape(rows, dim));
        using var loss = new MarginLoss(Cpu, rows, dim, margin);
        loss.Compute(input, du, gradScale);
        return (loss.ReadStats(), du.Span.ToArray());
    }

    private float[] UnitRows(float[] z, int rows, int dim)
    {
        using var input = Cpu.FromArray(z, new TensorShape(rows, dim));
        using var u = Cpu.Allocate(new TensorShape(rows, dim));
        using var norms = Cpu.Allocate(new TensorShape(rows));
        Cpu.L2NormalizeRows(input, u, norms);
        return u.Span.ToArray();
    }

    /// <summary>Per row, the positive's cosine minus the best negative's (+∞ without negatives).</summary>
    private static double[] TopMargins(float[] u, int rows, int dim)
    {
        var margins = new double[rows];
        Parallel.For(0, rows, i =>
        {
            var p = (i + (rows / 2)) % rows;
            var best = double.NegativeInfinity;
            for (var j = 0; j < rows; j++)
            {
                if (j != i && j != p)
                {
                    best = Math.Max(best, TensorPrimitives.Dot<float>(u.AsSpan(i * dim, dim), u.AsSpan(j * dim, dim)));
                }
            }
            margins[i] = TensorPrimitives.Dot<float>(u.AsSpan(i * dim, dim), u.AsSpan(p * dim, dim)) - best;
        });
        return margins;
    }
}
