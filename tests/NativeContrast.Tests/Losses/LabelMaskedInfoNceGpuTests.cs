namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Distributed;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

/// <summary>
/// Parity of native/masked_infonce.cu with the CPU twin on awkward sizes: batches that leave warps of the last block
/// idle, no queue, queues past a chunk of 256 columns and split across blocks, every kernel width (dims below, at and
/// past a multiple of 32, up to 1024), and PiCO's own sizes. Top-1 accuracy may differ only on rows whose best
/// positive is within fp32 error of the best negative.
/// </summary>
public class LabelMaskedInfoNceGpuTests : GpuTestBase
{
    /// <summary>Cosine error of two fp32 dot products in different orders: rows this close to a tie may flip.</summary>
    private const double TieMargin = 2 * Numerics.Fp32Tolerance;

    public static IEnumerable<TestCaseData> Cases()
    {
        var t = 0;
        foreach (var batch in new[] { 1, 3, 13, 37, 257 })
        {
            foreach (var queueLength in new[] { 0, 5, 70, 4097 })
            {
                foreach (var dim in new[] { 7, 33, 128, 1000 })
                {
                    yield return new TestCaseData(batch, dim, queueLength, t++ % 2 == 0 ? 0.07f : 0.2f, 3);
                }
            }
        }
        yield return new TestCaseData(256, 128, 8192, 0.07f, 10);   // PiCO on CIFAR-10
        yield return new TestCaseData(256, 128, 65536, 0.07f, 100);
        yield return new TestCaseData(2050, 64, 1000, 0.1f, 10);
        yield return new TestCaseData(130, 1024, 300, 0.2f, 5);
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesCpuTwin(int batch, int dim, int queueLength, float tau, int classes)
    {
        var seed = (batch * 31) + (dim * 7) + queueLength;
        var (q, k, keys) = LabelMaskedInfoNceCpuTests.Inputs(batch, dim, queueLength, seed);
        var (labels, queueLabels) = LabelMaskedInfoNceCpuTests.Labels(batch, queueLength, classes, seed);
        var (cpuStats, cpuDq, cpuKeys) = RunCpu(q, k, labels, keys, queueLabels, batch, dim, queueLength, tau);

        using var loss = new LabelMaskedInfoNceLoss(Gpu, batch, dim, queueLength, tau);
        if (queueLength > 0)
        {
            using var keyTensor = Upload(keys, new TensorShape(queueLength, dim));
            using var labelTensor = Upload(queueLabels, new TensorShape(queueLength));
            loss.Enqueue(keyTensor, labelTensor);
            Assert.That(Numerics.ToArray(Gpu, loss.QueueLabels!), Is.EqualTo(queueLabels), "queue labels");
        }
        using var qt = Upload(q, new TensorShape(batch, dim));
        using var kt = Upload(k, new TensorShape(batch, dim));
        using var lt = Upload(labels, new TensorShape(batch));
        using var dq = Gpu.Allocate(new TensorShape(batch, dim), "dq");
        Gpu.Fill(dq, float.NaN);  // every element must be written
        loss.Compute(qt, kt, lt, dq, gradScale: 0.5f);
        var stats = loss.ReadStats();
        var gradient = Numerics.ToArray(Gpu, dq);

        Assert.That(stats.Loss, Is.EqualTo(cpuStats.Loss).Within(Numerics.Fp32Tolerance * Math.Max(1, Math.Abs(cpuStats.Loss))), "loss");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(cpuStats.PositiveSimilarity).Within(Numerics.Fp32Tolerance), "mean cosine of q_i and k_i");
        var flips = TopMargins(q, k, cpuKeys, labels, queueLabels, batch, dim, queueLength).Count(m => Math.Abs(m) < TieMargin);
        Assert.That(Math.Abs(stats.Top1Accuracy - cpuStats.Top1Accuracy) * batch, Is.LessThanOrEqualTo(flips + 1e-3), "top-1 beyond near-ties");
        // One query and no queue: its only column is its own key, a positive, so dq is zero and the GPU's terms cancel
        // only to fp32 rounding: held against the size of the terms (gradScale / (τ·‖q‖)), not against zero.
        var floor = batch == 1 && queueLength == 0 ? 0.5 / (tau * Math.Sqrt(q.Sum(v => (double)v * v))) : 0;
        Numerics.AssertClose(gradient, cpuDq, Numerics.Fp32Tolerance, "dq", floor);

        // Reproducible to the bit (no atomics), and the statistics alone leave dq untouched.
        loss.Compute(qt, kt, lt, dq, gradScale: 0.5f);
        Assert.That(loss.ReadStats(), Is.EqualTo(stats), "second run's statistics");
        Assert.That(Numerics.ToArray(Gpu, dq), Is.EqualTo(gradient), "second run's dq");
        Gpu.Fill(dq, 7f);
        loss.Compute(qt, kt, lt, dq: null);
        Assert.That(loss.ReadStats(), Is.EqualTo(stats), "statistics without dq");
        Assert.That(Numerics.ToArray(Gpu, dq).All(v => v == 7f), Is.True, "dq untouched when not asked for");
    }

    [TestCase(37, 10, 4)]
    [TestCase(100, 37, 250)]
    [TestCase(7, 10, 3)]
    public void EnqueueWrapsAndKeepsLabelsWithTheirKeysAsTheCpuDoes(int capacity, int count, int steps)
    {
        const int dim = 33;
        using var gpuLoss = new LabelMaskedInfoNceLoss(Gpu, count, dim, capacity, 0.1f);
        using var cpuLoss = new LabelMaskedInfoNceLoss(Cpu, count, dim, capacity, 0.1f);
        for (var step = 0; step < steps; step++)
        {
            var keys = Numerics.RandomArray(count * dim, seed: 300 + step, scale: 3f);
            var labels = Enumerable.Range(0, count).Select(r => (float)((step * 1000) + r)).ToArray();
            using var gk = Upload(keys, new TensorShape(count, dim));
            using var gl = Upload(labels, new TensorShape(count));
            using var ck = Cpu.FromArray(keys, new TensorShape(count, dim));
            using var cl = Cpu.FromArray(labels, new TensorShape(count));
            gpuLoss.Enqueue(gk, gl);
            cpuLoss.Enqueue(ck, cl);
            Assert.That(gpuLoss.Queue!.Position, Is.EqualTo(cpuLoss.Queue!.Position), $"position after step {step}");
        }
        Assert.That(Numerics.ToArray(Gpu, gpuLoss.QueueLabels!), Is.EqualTo(cpuLoss.QueueLabels!.Span.ToArray()), "labels");
        Numerics.AssertClose(Numerics.ToArray(Gpu, gpuLoss.Queue!.Keys), cpuLoss.Queue!.Keys.Span, Numerics.Fp32Tolerance, "keys");
    }

    [Test]
    public void InitializeQueueLabelsEverySlotMinusOne()
    {
        using var loss = new LabelMaskedInfoNceLoss(Gpu, 4, 16, 300, 0.1f);
        using var keys = Gpu.Allocate(new TensorShape(4, 16), "keys");
        using var labels = Upload([1f, 2f, 3f, 4f], new TensorShape(4));
        loss.Enqueue(keys, labels);
        loss.InitializeQueue(seed: 3);
        Assert.That(Numerics.ToArray(Gpu, loss.QueueLabels!), Is.All.EqualTo(-1f));
        Assert.That(loss.Queue!.Position, Is.EqualTo(0));
    }

    [Test]
    public void RejectsRowsWiderThanTheKernelsAndASmallWorkspace()
    {
        using var wide = Gpu.Allocate(new TensorShape(4, 1025), "q");
        using var labels = Gpu.Allocate(new TensorShape(4), "labels");
        using var stats = Gpu.Allocate(new TensorShape(3), "stats");
        using var workspace = Gpu.Allocate(new TensorShape(64), "workspace");
        Assert.That(() => Gpu.LabelMaskedInfoNce(wide, wide, labels, null, null, 0.1f, workspace, stats, null), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("1025"));

        using var q = Gpu.Allocate(new TensorShape(4, 8), "q");
        Assert.That(() => Gpu.LabelMaskedInfoNce(q, q, labels, null, null, 0.1f, workspace, stats, null), Throws.ArgumentException.With.Message.Contains("workspace [64]"));
    }

    /// <summary>
    /// PiCO on several ranks: each of 2-3 thread ranks (a CUDA backend each, as SinkhornGpuTests does) runs the shard
    /// path over the gathered batch, its anchors' row states all-gathered between the passes, and gets the statistics
    /// and dq [rows, dim] of the CPU twin's shard path on the same ranks: row counts that leave warps idle, no queue,
    /// queues past a chunk, every kernel width up to 1024.
    /// </summary>
    [TestCase(2, 1, 7, 0, 0.07f, 3)]
    [TestCase(3, 5, 33, 70, 0.2f, 3)]
    [TestCase(2, 13, 128, 300, 0.07f, 5)]
    [TestCase(3, 37, 1000, 5, 0.2f, 3)]
    [TestCase(2, 129, 64, 4097, 0.1f, 10)]
    public void ShardsOnGpuRanksMatchTheCpuTwinsShards(int ranks, int rows, int dim, int queueLength, float tau, int classes)
    {
        var batch = ranks * rows;
        var seed = (batch * 17) + (dim * 5) + queueLength;
        var (q, k, keys) = LabelMaskedInfoNceCpuTests.Inputs(batch, dim, queueLength, seed);
        var (labels, queueLabels) = LabelMaskedInfoNceCpuTests.Labels(batch, queueLength, classes, seed);

        var backends = new IBackend[ranks];
        backends[0] = Gpu;
        for (var r = 1; r < ranks; r++)
        {
            backends[r] = new CudaBackend();
        }
        try
        {
            var cpu = new (float[] Stats, float[] Dq, float[] Keys)[ranks];
            var gpu = new (float[] Stats, float[] Dq, float[] Keys)[ranks];
            foreach (var (results, onGpu) in new[] { (cpu, false), (gpu, true) })
            {
                using var threads = new ThreadRanks(ranks);
                threads.Run(rank =>
                {
                    var backend = onGpu ? backends[rank] : Cpu;
                    using var communicator = threads.Communicator(rank, backend);
                    results[rank] = ShardStep(backend, communicator, rank, rows, q, k, labels, keys, queueLabels, batch, dim, queueLength, tau);
                });
            }

            var margins = TopMargins(q, k, cpu[0].Keys, labels, queueLabels, batch, dim, queueLength);
            for (var rank = 0; rank < ranks; rank++)
            {
                var what = $"rank {rank} of {ranks}, {rows} rows each";
                var (expected, actual) = (cpu[rank].Stats, gpu[rank].Stats);
                Assert.That(actual[0], Is.EqualTo(expected[0]).Within(Numerics.Fp32Tolerance * Math.Max(1, Math.Abs(expected[0]))), $"{what}: loss");
                Assert.That(actual[1], Is.EqualTo(expected[1]).Within(Numerics.Fp32Tolerance), $"{what}: mean cosine of q_i and k_i");
                var flips = margins.Skip(rank * rows).Take(rows).Count(m => Math.Abs(m) < TieMargin);
                Assert.That(Math.Abs(actual[2] - expected[2]) * rows, Is.LessThanOrEqualTo(flips + 1e-3), $"{what}: top-1 beyond near-ties");
                Numerics.AssertClose(gpu[rank].Dq, cpu[rank].Dq, Numerics.Fp32Tolerance, $"{what}: dq");
            }
        }
        finally
        {
            for (var r = 1; r < ranks; r++)
            {
                backends[r].Dispose();
            }
        }
    }

    /// <summary>One rank's direct shard call over the whole (already gathered) batch: statistics, dq, the stored queue.</summary>
    private static (float[] Stats, float[] Dq, float[] Keys) ShardStep(IBackend backend, ICommunicator communicator, int rank, int rows, float[] q, float[] k, float[] labels, float[] keys, float[] queueLabels, int batch, int dim, int queueLength, float tau)
    {
        using var qt = Upload(backend, q, new TensorShape(batch, dim));
        using var kt = Upload(backend, k, new TensorShape(batch, dim));
        using var lt = Upload(backend, labels, new TensorShape(batch));
        using var queue = queueLength > 0 ? backend.CreateKeyQueue(queueLength, dim) : null;
        using var queueLabelTensor = queueLength > 0 ? backend.Allocate(new TensorShape(queueLength), "queue labels") : null;
        if (queue is not null)
        {
            using var keyTensor = Upload(backend, keys, new TensorShape(queueLength, dim));
            using var labelTensor = Upload(backend, queueLabels, new TensorShape(queueLength));
            backend.EnqueueLabeledKeys(queue, queueLabelTensor!, keyTensor, labelTensor);
        }
        using var workspace = backend.Allocate(new TensorShape(checked((int)Math.Max(1, backend.LabelMaskedInfoNceWorkspaceLength(batch, dim, queueLength)))), "workspace");
        using var stats = backend.Allocate(new TensorShape(ContrastiveCheck.StatsLength), "stats");
        using var dq = backend.Allocate(new TensorShape(rows, dim), "dq");
        backend.Fill(dq, float.NaN);  // every element must be written
        using var rowState = backend.Allocate(new TensorShape(LabelMaskedShard.FloatsPerRow * rows), "row states");
        using var allRowStates = backend.Allocate(new TensorShape(LabelMaskedShard.FloatsPerRow * batch), "all row states");
        var shard = new LabelMaskedShard(rank * rows, rows, rowState, allRowStates, communicator.AllGather);
        backend.LabelMaskedInfoNce(qt, kt, lt, queue, queueLabelTensor, tau, workspace, stats, dq, 0.5f, shard);
        return (Numerics.ToArray(backend, stats), Numerics.ToArray(backend, dq), queue is null ? [] : Numerics.ToArray(backend, queue.Keys));
    }

    private static Tensor Upload(IBackend backend, float[] values, TensorShape shape)
    {
        var t = backend.Allocate(shape);
        backend.CopyFromHost(values, t);
        return t;
    }

    private Tensor Upload(float[] values, TensorShape shape)
    {
        var t = Gpu.Allocate(shape);
        Gpu.CopyFromHost(values, t);
        return t;
    }

    /// <summary>The CPU twin's statistics and dq, and its queue as stored (normalised), for the tie margins.</summary>
    private (ContrastiveStats Stats, float[] Dq, float[] Keys) RunCpu(float[] q, float[] k, float[] labels, float[] keys, float[] queueLabels, int batch, int dim, int queueLength, float tau)
    {
        using var loss = new LabelMaskedInfoNceLoss(Cpu, batch, dim, queueLength, tau);
        if (queueLength > 0)
        {
            using var keyTensor = Cpu.FromArray(keys, new TensorShape(queueLength, dim));
            using var labelTensor = Cpu.FromArray(queueLabels, new TensorShape(queueLength));
            loss.Enqueue(keyTensor, labelTensor);
        }
        using var qt = Cpu.FromArray(q, new TensorShape(batch, dim));
        using var kt = Cpu.FromArray(k, new TensorShape(batch, dim));
        using var lt = Cpu.FromArray(labels, new TensorShape(batch));
        using var dq = Cpu.Allocate(new TensorShape(batch, dim));
        loss.Compute(qt, kt, lt, dq, gradScale: 0.5f);
        return (loss.ReadStats(), dq.Span.ToArray(), queueLength > 0 ? loss.Queue!.Keys.Span.ToArray() : []);
    }

    /// <summary>Per row, the best positive's cosine minus the best negative's (+∞ without negatives, −∞ without positives).</summary>
    private static double[] TopMargins(float[] q, float[] k, float[] queue, float[] labels, float[] queueLabels, int batch, int dim, int queueLength)
    {
        var qn = Normalized(q, batch, dim);
        var kn = Normalized(k, batch, dim);
        var margins = new double[batch];
        Parallel.For(0, batch, i =>
        {
            var (bestPositive, bestNegative) = (double.NegativeInfinity, double.NegativeInfinity);
            void Column(float[] rows, int j, float label)
            {
                var cosine = TensorPrimitives.Dot<float>(qn.AsSpan(i * dim, dim), rows.AsSpan(j * dim, dim));
                if (labels[i] >= 0 && label == labels[i])
                {
                    bestPositive = Math.Max(bestPositive, cosine);
                }
                else
                {
                    bestNegative = Math.Max(bestNegative, cosine);
                }
            }
            for (var j = 0; j < batch; j++)
            {
                if (j != i)
                {
                    Column(qn, j, labels[j]);
                }
                Column(kn, j, labels[j]);
            }
            for (var j = 0; j < queueLength; j++)
            {
                Column(queue, j, queueLabels[j]);
            }
            margins[i] = bestPositive - bestNegative;
        });
        return margins;
    }

    private static float[] Normalized(float[] x, int rows, int dim)
    {
        var y = new float[x.Length];
        for (var i = 0; i < rows; i++)
        {
            var row = x.AsSpan(i * dim, dim);
            TensorPrimitives.Multiply(row, 1f / MathF.Max(TensorPrimitives.Norm<float>(row), 1e-12f), y.AsSpan(i * dim, dim));
        }
        return y;
    }
}
