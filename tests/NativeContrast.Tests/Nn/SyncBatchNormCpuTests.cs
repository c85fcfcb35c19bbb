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
    public void RanksTogetherNormaliseAsOneBatch(int ranks, int rowsPerRank, int channels, bool relu, bool residual) =>
        AssertRanksNormaliseAsOneBatch(_cpu, [.. Enumerable.Repeat<IBackend>(_cpu, ranks)], rowsPerRank, channels, relu, residual);

    /// <summary>
    /// Ranks (threads, each on its backend) of <paramref name="rowsPerRank"/> rows each against one batch norm over all
    /// their rows on <paramref name="reference"/>: y, dx and running statistics alike, weight and bias gradients summed.
    /// </summary>
    internal static void AssertRanksNormaliseAsOneBatch(IBackend reference, IBackend[] ranks, int rowsPerRank, int channels, bool relu, bool residual)
    {
        var rows = ranks.Length * rowsPerRank;
        var x = Numerics.RandomArray(rows * channels, seed: rows + channels, scale: 3f).Select((v, i) => v + (i % channels)).ToArray();
        var shortcut = Numerics.RandomArray(rows * channels, seed: 7);
        var dy = Numerics.RandomArray(rows * channels, seed: 8);
        var gamma = Numerics.RandomArray(channels, seed: 9).Select(v => v + 1.5f).ToArray();
        var beta = Numerics.RandomArray(channels, seed: 10);
        var mode = new BatchNormMode(Training: true, relu);

        var whole = Run(reference, x, residual ? shortcut : null, dy, gamma, beta, rows, channels, mode, sync: null);
        using var sums = new ThreadRanks(ranks.Length);
        var parts = new Result[ranks.Length];
        sums.Run(r =>
        {
            var backend = ranks[r];
            using var buffer = backend.Allocate(new TensorShape(BatchNormSync.BufferLength(channels)), "sync sums");
            float[] Slice(float[] all) => all.AsSpan(r * rowsPerRank * channels, rowsPerRank * channels).ToArray();
            parts[r] = Run(backend, Slice(x), residual ? Slice(shortcut) : null, Slice(dy), gamma, beta, rowsPerRank, channels, mode, new BatchNormSync(buffer, values => sums.Sum(r, backend, values)));
        });

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

    [Test]
    public void RejectsABackwardWithoutRowsInTrainingModeBeforeTheAllReduceOthersWaitIn()
    {
        using var x = _cpu.Allocate(new TensorShape(0, 3));
        using var perChannel = _cpu.Allocate(new TensorShape(3));
        using var buffer = _cpu.Allocate(new TensorShape(7));
        var reduced = false;
        var sync = new BatchNormSync(buffer, _ => reduced = true);
        Assert.That(
            () => _cpu.BatchNormBackward(x, x, x, x, null, null, perChannel, perChannel, null, null, new BatchNormMode(true, false), perChannel, sync),
            Throws.ArgumentException.With.Message.Contains("has 0 row(s)"));
        Assert.That(reduced, Is.False);
    }

    private sealed record Result(float[] Y, float[] Dx, float[] RunningMean, float[] RunningVar, float[] WeightGradient, float[] BiasGradient);

    private static Result Run(IBackend backend, float[] x, float[]? residual, float[] dy, float[] gamma, float[] beta, int rows, int channels, BatchNormMode mode, BatchNormSync? sync)
    {
        var shape = new TensorShape(rows, channels);
        var perChannel = new TensorShape(channels);
        Tensor Upload(float[] values, TensorShape to)
        {
            var tensor = backend.Allocate(to);
            backend.CopyFromHost(values, tensor);
            return tensor;
        }
        using var xs = Upload(x, shape);
        using var res = residual is null ? null : Upload(residual, shape);
        using var ys = backend.Allocate(shape);
        using var dys = Upload(dy, shape);
        using var dxs = backend.Allocate(shape);
        using var weight = Upload(gamma, perChannel);
        using var bias = Upload(beta, perChannel);
        using var runningMean = Upload(new float[channels], perChannel);
        using var runningVar = Upload([.. Enumerable.Repeat(1f, channels)], perChannel);
        using var tracked = Upload([0f], new TensorShape(1));
        using var savedMean = backend.Allocate(perChannel);
        using var savedInvStd = backend.Allocate(perChannel);
        using var weightGradient = Upload(new float[channels], perChannel);
        using var biasGradient = Upload(new float[channels], perChannel);
        using var residualGradient = residual is null ? null : backend.Allocate(shape);
        using var workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, backend.BatchNormWorkspaceElements(rows, channels)))));
        var parameters = new BatchNormParameters(weight, bias, runningMean, runningVar, tracked);
        backend.BatchNormForward(xs, res, ys, parameters, savedMean, savedInvStd, mode, workspace, sync);
        backend.BatchNormBackward(xs, ys, dys, dxs, residualGradient, weight, savedMean, savedInvStd, weightGradient, biasGradient, mode, workspace, sync);
        return new Result(
            Numerics.ToArray(backend, ys), Numerics.ToArray(backend, dxs), Numerics.ToArray(backend, runningMean), Numerics.ToArray(backend, runningVar),
            Numerics.ToArray(backend, weightGradient), Numerics.ToArray(backend, biasGradient));
    }

    private static float[] Sum(IEnumerable<float[]> parts) =>
        parts.Aggregate((a, b) => a.Zip(b, (u, v) => u + v).ToArray());
}
