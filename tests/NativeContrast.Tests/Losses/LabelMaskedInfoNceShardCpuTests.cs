namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// PiCO's label-masked InfoNCE over a batch spread across ranks (threads as ranks): each rank's loss is the mean over
/// its rows against every rank's columns, its dq the gradient of the sum of every rank's loss with respect to its
/// queries (anchors and q-columns), and its queue, filled from every rank's keys, is one process's.
/// </summary>
public class LabelMaskedInfoNceShardCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [TestCase(2, 4, 7, 10)]
    [TestCase(3, 5, 33, 0)]
    [TestCase(2, 1, 16, 3)]
    [TestCase(2, 13, 128, 40)]
    public void RanksStepAsOneLossOverTheWholeBatch(int ranks, int rows, int dim, int queueLength)
    {
        const float tau = 0.1f;
        var batch = ranks * rows;
        var q = Numerics.RandomArray(batch * dim, seed: batch + dim);
        var k = Numerics.RandomArray(batch * dim, seed: batch + dim + 1);
        var earlier = Numerics.RandomArray(batch * dim, seed: batch + dim + 2);
        // Three classes and rows without a class (−1), so that rows have several positives or none.
        var labels = Enumerable.Range(0, batch).Select(i => i % 5 == 4 ? -1f : (i * 7 % 3)).ToArray();
        var earlierLabels = Enumerable.Range(0, batch).Select(i => (float)(i % 3)).ToArray();

        using var whole = new LabelMaskedInfoNceLoss(_cpu, batch, dim, queueLength, tau);
        var (wholeStats, wholeDq, wholeQueue, wholeQueueLabels) = Step(whole, q, k, labels, earlier, earlierLabels, batch, dim, enqueueComputed: false);

        var results = new (float[] Stats, float[] Dq, float[] Queue, float[] QueueLabels)[ranks];
        using var threads = new ThreadRanks(ranks);
        threads.Run(rank =>
        {
            using var communicator = threads.Communicator(rank, _cpu);
            using var loss = new LabelMaskedInfoNceLoss(_cpu, rows, dim, queueLength, tau, communicator);
            float[] Own(float[] values, int width) => values.AsSpan(rank * rows * width, rows * width).ToArray();
            results[rank] = Step(loss, Own(q, dim), Own(k, dim), Own(labels, 1), Own(earlier, dim), Own(earlierLabels, 1), rows, dim, enqueueComputed: true);
        });

        for (var c = 0; c < ContrastiveCheck.StatsLength; c++)
        {
            Assert.That(results.Average(r => (double)r.Stats[c]), Is.EqualTo(wholeStats[c]).Within(Numerics.Fp32Tolerance * Math.Max(1, Math.Abs(wholeStats[c]))), $"statistic {c}: the ranks' mean is the whole batch's");
        }
        for (var rank = 0; rank < ranks; rank++)
        {
            // The whole loss is the mean of the ranks' losses: its gradient is theirs over the number of ranks.
            var expected = wholeDq.AsSpan(rank * rows * dim, rows * dim).ToArray().Select(g => g * ranks).ToArray();
            Assert.That(Numerics.RelativeError(results[rank].Dq, expected), Is.LessThan(Numerics.Fp32Tolerance), $"rank {rank}'s dq");
            if (queueLength > 0)
            {
                Assert.That(results[rank].Queue, Is.EqualTo(wholeQueue), $"rank {rank}'s queue");
                Assert.That(results[rank].QueueLabels, Is.EqualTo(wholeQueueLabels), $"rank {rank}'s queue labels");
            }
        }
    }

    /// <summary>
    /// Enqueues the earlier keys (so the queue has labelled rows), computes the loss and dq, enqueues k: through
    /// EnqueueComputed (on the ranks, what Compute gathered) or through Enqueue (which gathers again).
    /// </summary>
    private (float[] Stats, float[] Dq, float[] Queue, float[] QueueLabels) Step(LabelMaskedInfoNceLoss loss, float[] q, float[] k, float[] labels, float[] earlier, float[] earlierLabels, int rows, int dim, bool enqueueComputed)
    {
        using var qt = _cpu.FromArray(q, new TensorShape(rows, dim));
        using var kt = _cpu.FromArray(k, new TensorShape(rows, dim));
        using var lt = _cpu.FromArray(labels, new TensorShape(rows));
        using var et = _cpu.FromArray(earlier, new TensorShape(rows, dim));
        using var elt = _cpu.FromArray(earlierLabels, new TensorShape(rows));
        using var dq = _cpu.Allocate(new TensorShape(rows, dim));
        if (loss.Queue is not null)
        {
            loss.InitializeQueue(seed: 9);
            loss.Enqueue(et, elt);
        }
        loss.Compute(qt, kt, lt, dq, gradScale: 0.5f);
        var stats = loss.Stats.Span.ToArray();
        if (loss.Queue is null)
        {
            return (stats, dq.Span.ToArray(), [], []);
        }
        if (enqueueComputed)
        {
            loss.EnqueueComputed();
        }
        else
        {
            loss.Enqueue(kt, lt);
        }
        return (stats, dq.Span.ToArray(), Numerics.ToArray(_cpu, loss.Queue.Keys), loss.QueueLabels!.Span.ToArray());
    }
}
