namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Tests.Support;

/// <summary>
/// The NT-Xent forward kernel's sum of exponentials, replayed on the CPU in fp32 in the kernel's exact order (splits
/// from the real planner; per split, the four threads of a quad each take columns 2t, 2t + 1 of every 8; tile by
/// tile a small tile sum joins a Neumaier-compensated running sum, rescaled when the maximum moves; the quad merge;
/// the split combine) and checked against float64. With one split a thread adds 65536 terms at 2N = 262144; the
/// plain running sum of the previous kernel is replayed too, to show that these cases catch the absorption.
/// </summary>
public class NtXentSummationTests
{
    private const float Tau = 0.1f;

    /// <summary>
    /// The closed-form cluster case of the GPU test (rows on C orthogonal axes): each row has 2N/C − 1 terms 2^0 and
    /// 2N − 2N/C terms e^-10, which a plain fp32 sum of a few hundred ones absorbs.
    /// </summary>
    [TestCase(262144, 128, 132, true)]
    [TestCase(262144, 128, 8, true)]
    [TestCase(32768, 16, 200, false)]
    public void ClusterLossMatchesFloat64InTheKernelsOrder(int rows, int clusters, int multiprocessors, bool plainSumFails)
    {
        var plan = CudaBackend.PlanNtXent(rows, 128, MatmulPrecision.Fp32, multiprocessors, (_, _) => 2);
        var logitScale = LogitScale(Tau);
        float Logit(int row, int column) => row % clusters == column % clusters ? logitScale : 0f;
        var perCluster = rows / clusters;
        var exactLse2 = Math.Log2(((perCluster - 1) * Math.Pow(2, logitScale)) + (rows - perCluster));
        var exactLoss = Math.Log(2) * (exactLse2 - logitScale);

        foreach (var row in new[] { 0, 1, rows / 2, rows - 1 })
        {
            var compensated = Math.Log(2) * (KernelLse2(Logit, rows, row, plan, compensated: true) - logitScale);
            Assert.That(Math.Abs(compensated - exactLoss) / exactLoss, Is.LessThan(Numerics.Fp32Tolerance / 10), $"row {row}, {plan.ForwardSplits} split(s)");
        }
        if (plainSumFails)
        {
            var plain = Math.Log(2) * (KernelLse2(Logit, rows, 0, plan, compensated: false) - logitScale);
            Assert.That(Math.Abs(plain - exactLoss) / exactLoss, Is.GreaterThan(Numerics.Fp32Tolerance), "the plain running sum should lose the small terms here");
        }
    }

    [TestCase(262144, 132)]
    [TestCase(4098, 1)]
    public void RandomLogitsMatchFloat64InTheKernelsOrder(int rows, int multiprocessors)
    {
        var plan = CudaBackend.PlanNtXent(rows, 128, MatmulPrecision.Fp32, multiprocessors, (_, _) => 2);
        var logitScale = LogitScale(Tau);
        var cosines = Numerics.RandomArray(rows, seed: 21);
        float Logit(int row, int column) => cosines[column] * logitScale;
        foreach (var row in new[] { 0, 7, rows - 2 })
        {
            var max = double.NegativeInfinity;
            for (var j = 0; j < rows; j++)
            {
                max = j == row ? max : Math.Max(max, Logit(row, j));
            }
            var sum = 0.0;
            for (var j = 0; j < rows; j++)
            {
                sum += j == row ? 0 : Math.Pow(2, Logit(row, j) - max);
            }
            var exact = max + Math.Log2(sum);
            var simulated = KernelLse2(Logit, rows, row, plan, compensated: true);
            Assert.That(simulated, Is.EqualTo(exact).Within(Numerics.Fp32Tolerance / 10 * Math.Abs(exact)), $"row {row}");
        }
    }

    /// <summary>log2(e) / tau in fp32, as the launcher passes it.</summary>
    private static float LogitScale(float tau) => (float)(1.0 / (Math.Log(2.0) * tau));

    /// <summary>The base-2 log-sum-exp of one row as nc_contrastive_ntxent_forward and _combine compute it.</summary>
    private static double KernelLse2(Func<int, int, float> logit, int rows, int row, CudaBackend.NtXentPlan plan, bool compensated)
    {
        var columnTile = plan.Tiling.ColumnTile;
        var tiles = (rows + columnTile - 1) / columnTile;
        var splitMax = new float[plan.ForwardSplits];
        var splitSum = new float[plan.ForwardSplits];
        for (var split = 0; split < plan.ForwardSplits; split++)
        {
            var (begin, end) = (split * plan.ForwardTilesPerSplit, Math.Min((split + 1) * plan.ForwardTilesPerSplit, tiles));
            var threadMax = new float[4];
            var threadSum = new float[4];
            for (var t = 0; t < 4; t++)
            {
                var runMax = -float.MaxValue;
                var (sum, carry) = (0f, 0f);
                var values = new float[columnTile / 4];
                for (var tile = begin; tile < end; tile++)
                {
                    var tileMax = float.NegativeInfinity;
                    for (var k = 0; k < values.Length; k++)
                    {
                        var column = (tile * columnTile) + (2 * t) + ((k / 2) * 8) + (k % 2);
                        values[k] = column < rows && column != row ? logit(row, column) : float.NegativeInfinity;
                        tileMax = Math.Max(tileMax, values[k]);
                    }
                    var newMax = Math.Max(runMax, tileMax);
                    var rescale = float.Exp2(runMax - newMax);
                    if (compensated)
                    {
                        var tileSum = 0f;
                        for (var k = 0; k < values.Length; k += 2)
                        {
                            tileSum += float.Exp2(values[k] - newMax) + float.Exp2(values[k + 1] - newMax);
                        }
                        (sum, carry) = (sum * rescale, carry * rescale);
                        var total = sum + tileSum;
                        carry += Math.Abs(sum) >= Math.Abs(tileSum) ? (sum - total) + tileSum : (tileSum - total) + sum;
                        sum = total;
                    }
                    else
                    {
                        sum *= rescale;
                        for (var k = 0; k < values.Length; k += 2)
                        {
                            sum += float.Exp2(values[k] - newMax) + float.Exp2(values[k + 1] - newMax);
                        }
                    }
                    runMax = newMax;
                }
                (threadMax[t], threadSum[t]) = (runMax, sum + carry);
            }
            // quad_merge: lanes xor 1, then xor 2; lane 0 writes (0 + 1) + (2 + 3).
            var (max01, sum01) = Merge(threadMax[0], threadSum[0], threadMax[1], threadSum[1]);
            var (max23, sum23) = Merge(threadMax[2], threadSum[2], threadMax[3], threadSum[3]);
            (splitMax[split], splitSum[split]) = Merge(max01, sum01, max23, sum23);
        }
        var rowMax = -float.MaxValue;
        foreach (var m in splitMax)
        {
            rowMax = Math.Max(rowMax, m);
        }
        var combined = 0f;
        for (var split = 0; split < splitMax.Length; split++)
        {
            combined += splitSum[split] * float.Exp2(splitMax[split] - rowMax);
        }
        return rowMax + float.Log2(combined);
    }

    private static (float Max, float Sum) Merge(float maxA, float sumA, float maxB, float sumB)
    {
        var max = Math.Max(maxA, maxB);
        return (max, (sumA * float.Exp2(maxA - max)) + (sumB * float.Exp2(maxB - max)));
    }
}
