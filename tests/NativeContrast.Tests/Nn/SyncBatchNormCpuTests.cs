namespace NativeContrast.Tests.Nn;

using NativeContrast.Backends;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// SyncBN on the CPU twin, with ranks played by threads of this process (their all-reduce a barrier and a sum in rank
/// order): ranks of n rows each normalise, update running statistics and back-propagate exactly as one batch norm over
/// all their rows, and their weight and bias gradients add up to its.
/// </summary>
public class SyncBatchNormCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(2, 3, 5, true, false)]
    [TestCase(2, 17, 33, false, true)]
    [TestCase(3, 1, 4, true, true)]
    public void RanksTogetherNormaliseAsOneBatch(int ranks, int rowsPerRank, int channels, bool relu, bool residual)
    {
        var rows = ranks * rowsPerRank;
        var x = Numerics.RandomArray(rows * channels, seed: rows + channels, scale: 3f).Select((v, i) => v + (i % channels)).ToArray();
        var shortcut = Numerics.RandomArray(rows * channels, seed: 7);
        var dy = Numerics.RandomArray(rows * channels, seed: 8);
        var gamma = Numerics.RandomArray(channels, seed: 9).Select(v => v + 1.5f).ToArray();
        var beta = Numerics.RandomArray(channels, seed: 10);
        var mode = new BatchNormMode(Training: true, relu);

        var whole = Run(x, residual ? shortcut : null, dy, gamma, beta, rows, channels, mode, sync: null);
        var sums = new ThreadRanks(ranks);
        var parts = new Result[ranks];
        var threads = Enumerable.Range(0, ranks).Select(r => new Thread(() =>
        {
            using var buffer = _cpu.Allocate(new TensorShape(BatchNormSync.BufferLength(channels)), "sync sums");
            var slice = (float[] all) => all.AsSpan(r * rowsPerRank * channels, rowsPerRank * channels).ToArray();
            parts[r] = Run(slice(x), residual ? slice(shortcut) : null, slice(dy), gamma, beta, rowsPerRank, channels, mode, new BatchNormSync(buffer, values => sums.Sum(r, values)));
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        Numerics.AssertClose(parts.SelectMany(p => p.Y).ToArray(), whole.Y, Numerics.Fp32Tolerance, "y");
        Numerics.AssertClose(parts.SelectMany(p => p.Dx).ToArray(), whole.Dx, Numerics.Fp32Tolerance, "dx");
        foreach (var part in parts)
        {
            Numerics.AssertClose(part.RunningMean, whole.RunningMean, Numerics.Fp32Tolerance, "running mean");
            Numerics.AssertClose(part.RunningVar, whole.RunningVar, Numerics.Fp32Tolerance, "running variance (unbiased over every rank's rows)");
        }
        Numerics.AssertClose(Sum(parts.Select(p => p.WeightGradient)), whole.WeightGradient, Numerics.Fp32Tolerance, "Σ over ranks of the weight gradients");
        Numerics.AssertClose(Sum(parts.Select(p => p.BiasGradient)), whole.BiasGradient, Numerics.Fp32Tolerance, "Σ over ranks of the bias gradients");
    }

    [Test]
    public void RejectsABufferTooSmallForTheChannels()
    {
        using var x = _cpu.Allocate(new TensorShape(4, 3));
        using var y = _cpu.Allocate(new TensorShape(4, 3));
        using var mean = _cpu.Allocate(new TensorShape(3));
        using var invStd = _cpu.Allocate(new TensorShape(3));
        using var runningMean = _cpu.Allocate(new TensorShape(3));
        using var runningVar = _cpu.Allocate(new TensorShape(3));
        using var buffer = _cpu.Allocate(new TensorShape(6));
        var sync = new BatchNormSync(buffer, _ => { });
        Assert.That(
            () => _cpu.BatchNormForward(x, null, y, new BatchNormParameters(null, null, runningMean, runningVar, null), mean, invStd, new BatchNormMode(true, false), x, sync),
            Throws.ArgumentException.With.Message.Contains("7 floats"));
    }

    private sealed record Result(float[] Y, float[] Dx, float[] RunningMean, float[] RunningVar, float[] WeightGradient, float[] BiasGradient);

    private Result Run(float[] x, float[]? residual, float[] dy, float[] gamma, float[] beta, int rows, int channels, BatchNormMode mode, BatchNormSync? sync)
    {
        var shape = new TensorShape(rows, channels);
        var perChannel = new TensorShape(channels);
        using var xs = _cpu.FromArray(x, shape);
        using var res = residual is null ? null : _cpu.FromArray(residual, shape);
        using var ys = _cpu.Allocate(shape);
        using var dys = _cpu.FromArray(dy, shape);
        using var dxs = _cpu.Allocate(shape);
        using var weight = _cpu.FromArray(gamma, perChannel);
        using var bias = _cpu.FromArray(beta, perChannel);
        using var runningMean = _cpu.FromArray(new float[channels], perChannel);
        using var runningVar = _cpu.FromArray(Enumerable.Repeat(1f, channels).ToArray(), perChannel);
        using var tracked = _cpu.FromArray([0f], new TensorShape(1));
        using var savedMean = _cpu.Allocate(perChannel);
        using var savedInvStd = _cpu.Allocate(perChannel);
        using var weightGradient = _cpu.FromArray(new float[channels], perChannel);
        using var biasGradient = _cpu.FromArray(new float[channels], perChannel);
        using var residualGradient = residual is null ? null : _cpu.Allocate(shape);
        using var workspace = _cpu.Allocate(new TensorShape(1));
        var parameters = new BatchNormParameters(weight, bias, runningMean, runningVar, tracked);
        _cpu.BatchNormForward(xs, res, ys, parameters, savedMean, savedInvStd, mode, workspace, sync);
        _cpu.BatchNormBackward(xs, ys, dys, dxs, residualGradient, weight, savedMean, savedInvStd, weightGradient, biasGradient, mode, workspace, sync);
        return new Result(ys.Span.ToArray(), dxs.Span.ToArray(), runningMean.Span.ToArray(), runningVar.Span.ToArray(), weightGradient.Span.ToArray(), biasGradient.Span.ToArray());
    }

    private static float[] Sum(IEnumerable<float[]> parts) =>
        parts.Aggregate((a, b) => a.Zip(b, (u, v) => u + v).ToArray());

    /// <summary>An all-reduce (sum) among threads: each contributes its values, then every thread adds them in rank order.</summary>
    private sealed class ThreadRanks(int size)
    {
        private readonly Barrier _barrier = new(size);
        private readonly float[][] _contributions = new float[size][];

        public void Sum(int rank, Tensor values)
        {
            _contributions[rank] = values.Span.ToArray();
            _barrier.SignalAndWait();
            var span = values.Span;
            for (var i = 0; i < span.Length; i++)
            {
                var total = 0f;
                for (var r = 0; r < size; r++)
                {
                    total += _contributions[r][i];
                }
                span[i] = total;
            }
            _barrier.SignalAndWait();
        }
    }
}
