namespace NativeContrast.Tests.Losses;

using NativeContrast.Backends;
using NativeContrast.Losses;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;

/// <summary>
/// The CPU twin of the label-masked InfoNCE against a float64 reference (PiCO's SupConLoss over cat(q, k, queue)),
/// finite differences through the normalisation, its reduction to InfoNCE with one class per image, the labelled
/// queue, argument errors, and the CUDA launcher's host-side choices.
/// </summary>
public class LabelMaskedInfoNceCpuTests
{
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void Open() => _cpu = new CpuBackend();

    [OneTimeTearDown]
    public void Close() => _cpu.Dispose();

    [Test]
    public void MatchesFloat64Reference([Values(1, 3, 13, 37)] int batch, [Values(0, 5, 70)] int queueLength, [Values(7, 33, 128)] int dim)
    {
        var tau = batch % 2 == 0 ? 0.2f : 0.07f;
        var seed = (batch * 131) + (queueLength * 7) + dim;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed);
        var (labels, queueLabels) = Labels(batch, queueLength, classes: 3, seed);
        var (stats, dq) = Run(q, k, labels, keys, queueLabels, batch, dim, queueLength, tau, gradScale: 1f);
        var expected = ContrastiveReference.LabelMaskedInfoNce(D(q), D(k), labels, D(keys), queueLabels, batch, dim, queueLength, tau);
        NtXentCpuTests.AssertStats(stats, expected, Numerics.Fp32Tolerance);
        Numerics.AssertClose(dq, expected.Gradient, Numerics.Fp32Tolerance, "dq");
    }

    [Test]
    public void TheReferenceCasesHaveSeveralPositivesPerRowAndRowsWithout()
    {
        // What MatchesFloat64Reference relies on to mean something: rows with several positives, in q, k and the queue,
        // a query without a class, and queue slots without a class.
        var (labels, queueLabels) = Labels(37, 70, classes: 3, seed: 1);
        Assert.That(labels.Count(l => l < 0), Is.EqualTo(1), "one query without a class");
        var row = Array.FindIndex(labels, l => l >= 0);
        Assert.That(labels.Count(l => l == labels[row]), Is.GreaterThan(5), "q-columns (and as many k-columns) share the label");
        Assert.That(queueLabels.Count(l => l == labels[row]), Is.GreaterThan(5), "queue rows share it too");
        Assert.That(queueLabels.Count(l => l < 0), Is.GreaterThan(5), "unwritten queue slots");
    }

    [Test]
    public void GradientThroughTheNormalisationMatchesFiniteDifferences()
    {
        const int batch = 5, dim = 4, queueLength = 6;
        const double tau = 0.2;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 8);
        float[] labels = [0, 1, 0, -1, 1];
        float[] queueLabels = [1, -1, 0, 0, 2, -1];
        var parameters = D(q);
        var (kd, keysd) = (D(k), D(keys));
        double Loss() => ContrastiveReference.LabelMaskedInfoNce(parameters, kd, labels, keysd, queueLabels, batch, dim, queueLength, tau).Loss;
        var numeric = Numerics.FiniteDifferenceGradient(parameters, Loss);
        var analytic = ContrastiveReference.LabelMaskedInfoNce(parameters, kd, labels, keysd, queueLabels, batch, dim, queueLength, tau).Gradient;
        Assert.That(Numerics.RelativeError(ContrastiveReference.ToFloat(analytic), numeric), Is.LessThan(1e-6), "the float64 reference's own gradient");

        var (_, dq) = Run(q, k, labels, keys, queueLabels, batch, dim, queueLength, (float)tau, gradScale: 1f);
        Numerics.AssertClose(dq, numeric, Numerics.Fp32Tolerance, "dq against finite differences");
        // The row without a class has no loss of its own but is a negative of the others: its q still moves.
        Assert.That(dq.Skip(3 * dim).Take(dim).Any(v => v != 0), Is.True, "the classless query's gradient as a column");
    }

    /// <summary>
    /// With one query the columns are InfoNCE's exactly: q_0 is the excluded self, k_0 the positive, the queue the
    /// negatives (their labels are −1), so loss, statistics and dq all agree.
    /// </summary>
    [TestCase(7, 50, 0.07f)]
    [TestCase(33, 5, 0.2f)]
    public void OneQueryWithADistinctClassEqualsInfoNce(int dim, int queueLength, float tau)
    {
        var (q, k, keys) = Inputs(1, dim, queueLength, seed: dim);
        var queueLabels = Enumerable.Repeat(-1f, queueLength).ToArray();
        var (stats, dq) = Run(q, k, [4f], keys, queueLabels, 1, dim, queueLength, tau, gradScale: 1.5f);
        var (expected, expectedDq) = RunInfoNce(q, k, keys, 1, dim, queueLength, tau, gradScale: 1.5f);
        Assert.That(stats.Loss, Is.EqualTo(expected.Loss).Within(Numerics.Fp32Tolerance * expected.Loss), "loss");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(expected.PositiveSimilarity).Within(1e-6), "positive cosine");
        Assert.That(stats.Top1Accuracy, Is.EqualTo(expected.Top1Accuracy), "top-1");
        Numerics.AssertClose(dq, expectedDq, Numerics.Fp32Tolerance, "dq");
    }

    /// <summary>
    /// With one class per image and a batch, row i also sees the other queries and keys, as negatives: its loss is
    /// InfoNCE's for (q_i, k_i) against the queue [q_j, k_j (j ≠ i) | queue]. The gradients differ by construction (here
    /// q_j also receives gradient as row i's negative, which that InfoNCE treats as a constant key), so the statistics
    /// are compared.
    /// </summary>
    [TestCase(6, 9, 20)]
    [TestCase(13, 33, 0)]
    public void OneClassPerImageIsInfoNceOfEachRowAgainstTheOtherViews(int batch, int dim, int queueLength)
    {
        const float tau = 0.1f;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: batch + dim);
        var labels = Enumerable.Range(0, batch).Select(i => (float)(10 + i)).ToArray();
        var queueLabels = Enumerable.Repeat(-1f, queueLength).ToArray();
        var (stats, _) = Run(q, k, labels, keys, queueLabels, batch, dim, queueLength, tau, gradScale: 1f);

        double loss = 0, cosine = 0, top1 = 0;
        for (var i = 0; i < batch; i++)
        {
            var others = Enumerable.Range(0, batch).Where(j => j != i).ToArray();
            var extended = others.SelectMany(j => Row(q, j, dim)).Concat(others.SelectMany(j => Row(k, j, dim))).Concat(keys).ToArray();
            var (row, _) = RunInfoNce(Row(q, i, dim), Row(k, i, dim), extended, 1, dim, extended.Length / dim, tau, gradScale: 1f);
            (loss, cosine, top1) = (loss + row.Loss, cosine + row.PositiveSimilarity, top1 + row.Top1Accuracy);
        }
        Assert.That(stats.Loss, Is.EqualTo(loss / batch).Within(Numerics.Fp32Tolerance * loss / batch), "loss");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(cosine / batch).Within(1e-6), "positive cosine");
        Assert.That(stats.Top1Accuracy, Is.EqualTo(top1 / batch).Within(1e-6), "top-1");
    }

    [Test]
    public void WithoutClassesThereIsNoLossAndNoGradient()
    {
        const int batch = 4, dim = 6, queueLength = 8;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 3);
        var queueLabels = Enumerable.Range(0, queueLength).Select(j => (float)(j % 2)).ToArray();
        var (stats, dq) = Run(q, k, [-1f, -1f, -1f, -1f], keys, queueLabels, batch, dim, queueLength, 0.2f, gradScale: 1f);
        var expected = ContrastiveReference.LabelMaskedInfoNce(D(q), D(k), [-1f, -1f, -1f, -1f], D(keys), queueLabels, batch, dim, queueLength, 0.2);
        Assert.That(stats.Loss, Is.EqualTo(0f), "no row has a positive");
        Assert.That(stats.Top1Accuracy, Is.EqualTo(0f), "a row without positives never scores");
        Assert.That(stats.PositiveSimilarity, Is.EqualTo(expected.PositiveSimilarity).Within(1e-6), "cos(q_i, k_i) is reported regardless");
        Assert.That(dq.All(v => v == 0f), Is.True, "dq is 0 when no row has a loss");
    }

    [Test]
    public void GradScaleScalesTheGradientAndNoGradientKeepsTheStats()
    {
        const int batch = 9, dim = 10, queueLength = 12;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 5);
        var (labels, queueLabels) = Labels(batch, queueLength, classes: 2, seed: 5);
        var (stats, dq) = Run(q, k, labels, keys, queueLabels, batch, dim, queueLength, 0.1f, gradScale: 1f);
        var (_, scaled) = Run(q, k, labels, keys, queueLabels, batch, dim, queueLength, 0.1f, gradScale: -2.5f);
        Numerics.AssertClose(scaled, dq.Select(v => -2.5f * v).ToArray(), Numerics.Fp32Tolerance, "dq scaled by -2.5");

        using var loss = Loss(keys, queueLabels, batch, dim, queueLength, 0.1f);
        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim), "q");
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim), "k");
        using var lt = _cpu.FromArray(labels, new TensorShape(batch), "labels");
        loss.Compute(qt, kt, lt, dq: null);
        Assert.That(loss.ReadStats(), Is.EqualTo(stats), "the statistics do not depend on whether dq is computed");
    }

    [Test]
    public void DqIsOverwrittenAndMayBeQ()
    {
        const int batch = 5, dim = 8, queueLength = 4;
        var (q, k, keys) = Inputs(batch, dim, queueLength, seed: 6);
        var (labels, queueLabels) = Labels(batch, queueLength, classes: 2, seed: 6);
        var (_, dq) = Run(q, k, labels, keys, queueLabels, batch, dim, queueLength, 0.2f, gradScale: 1f);
        using var loss = Loss(keys, queueLabels, batch, dim, queueLength, 0.2f);
        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim), "q");
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim), "k");
        using var lt = _cpu.FromArray(labels, new TensorShape(batch), "labels");
        loss.Compute(qt, kt, lt, qt);
        Assert.That(qt.Span.ToArray(), Is.EqualTo(dq), "q is read (normalised) before dq is written, so dq may be q itself");
    }

    [Test]
    public void RejectsBadArgumentsNamingTheTensor()
    {
        using var q = _cpu.Allocate(new TensorShape(4, 3), "q");
        using var k = _cpu.Allocate(new TensorShape(4, 3), "k");
        using var labels = _cpu.Allocate(new TensorShape(4), "labels");
        using var queue = _cpu.CreateKeyQueue(6, 3);
        using var queueLabels = _cpu.Allocate(new TensorShape(6), "queue labels");
        using var stats = _cpu.Allocate(new TensorShape(3), "stats");
        using var workspace = _cpu.Allocate(new TensorShape(checked((int)_cpu.LabelMaskedInfoNceWorkspaceLength(4, 3, 6))), "workspace");
        void Call(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, Tensor? dq = null, float tau = 0.1f, Tensor? st = null, Tensor? ws = null) =>
            _cpu.LabelMaskedInfoNce(q, k, labels, queue, queueLabels, tau, ws ?? workspace, st ?? stats, dq);
        Assert.DoesNotThrow(() => Call(q, k, labels, queue, queueLabels), "the well-formed call");
        using var smallWorkspace = _cpu.Allocate(new TensorShape((int)workspace.Length - 1), "workspace");
        Assert.That(() => Call(q, k, labels, queue, queueLabels, ws: smallWorkspace), Throws.ArgumentException.With.Message.Contains($"workspace [{workspace.Length - 1}]").And.Message.Contains($"{workspace.Length} floats"));

        using var vector = _cpu.Allocate(new TensorShape(12), "q");
        Assert.That(() => Call(vector, k, labels, queue, queueLabels), Throws.ArgumentException.With.Message.Contains("q [12]").And.Message.Contains("[batch, dim]"));
        using var shortK = _cpu.Allocate(new TensorShape(3, 3), "k");
        Assert.That(() => Call(q, shortK, labels, queue, queueLabels), Throws.ArgumentException.With.Message.Contains("k [3, 3]"));
        using var fewLabels = _cpu.Allocate(new TensorShape(3), "labels");
        Assert.That(() => Call(q, k, fewLabels, queue, queueLabels), Throws.ArgumentException.With.Message.Contains("labels [3]").And.Message.Contains("one label per query"));
        using var wideQueue = _cpu.CreateKeyQueue(6, 5);
        Assert.That(() => Call(q, k, labels, wideQueue, queueLabels), Throws.ArgumentException.With.Message.Contains("q [4, 3]").And.Message.Contains("holds 5"));
        using var fewQueueLabels = _cpu.Allocate(new TensorShape(5), "queue labels");
        Assert.That(() => Call(q, k, labels, queue, fewQueueLabels), Throws.ArgumentException.With.Message.Contains("queue labels [5]").And.Message.Contains("one label per queue row"));
        Assert.That(() => Call(q, k, labels, queue, null), Throws.ArgumentException.With.Message.Contains("without its labels"));
        Assert.That(() => Call(q, k, labels, null, queueLabels), Throws.ArgumentException.With.Message.Contains("queue labels [6]").And.Message.Contains("without a key queue"));
        using var wrongDq = _cpu.Allocate(new TensorShape(4, 2), "dq");
        Assert.That(() => Call(q, k, labels, queue, queueLabels, wrongDq), Throws.ArgumentException.With.Message.Contains("dq [4, 2]"));
        using var arena = _cpu.Allocate(new TensorShape(16), "arena");
        var overlapping = arena.View(0, new TensorShape(4, 3), "dq");
        Assert.That(() => Call(q, k, arena.View(10, new TensorShape(4), "labels"), queue, queueLabels, overlapping), Throws.ArgumentException.With.Message.Contains("dq [4, 3]").And.Message.Contains("overlaps labels [4]"));
        foreach (var tau in new[] { 0f, -1f, float.NaN, float.PositiveInfinity })
        {
            Assert.That(() => Call(q, k, labels, queue, queueLabels, tau: tau), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("temperature"), $"tau {tau}");
        }
        using var wideStats = _cpu.Allocate(new TensorShape(4), "stats");
        Assert.That(() => Call(q, k, labels, queue, queueLabels, st: wideStats), Throws.ArgumentException.With.Message.Contains("stats [4]"));
    }

    [Test]
    public void EnqueueWritesKeysAndLabelsAtTheSameWrappedRows()
    {
        const int capacity = 10, dim = 3, count = 4;
        using var loss = new LabelMaskedInfoNceLoss(_cpu, count, dim, capacity, 0.1f);
        Assert.That(loss.QueueLabels!.Span.ToArray(), Is.All.EqualTo(-1f), "a new queue has no classes");
        var keys = new float[capacity * dim];
        var labels = Enumerable.Repeat(-1f, capacity).ToArray();
        var position = 0;
        for (var step = 0; step < 4; step++)
        {
            var batch = Numerics.RandomArray(count * dim, seed: 100 + step, scale: 5f);
            var batchLabels = Enumerable.Range(0, count).Select(r => (float)((10 * step) + r)).ToArray();
            using var kt = _cpu.FromArray(batch, new TensorShape(count, dim));
            using var lt = _cpu.FromArray(batchLabels, new TensorShape(count));
            loss.Enqueue(kt, lt);
            for (var r = 0; r < count; r++)
            {
                var row = (position + r) % capacity;
                var norm = MathF.Sqrt(Enumerable.Range(0, dim).Sum(f => batch[(r * dim) + f] * batch[(r * dim) + f]));
                for (var f = 0; f < dim; f++)
                {
                    keys[(row * dim) + f] = batch[(r * dim) + f] / norm;
                }
                labels[row] = batchLabels[r];
            }
            position = (position + count) % capacity;
            Assert.That(loss.Queue!.Position, Is.EqualTo(position), $"position after enqueue {step}");
        }
        Assert.That(loss.QueueLabels.Span.ToArray(), Is.EqualTo(labels), "labels after wrapping around");
        Numerics.AssertClose(loss.Queue!.Keys.Span, keys, 1e-6, "keys after wrapping around");
    }

    [Test]
    public void EnqueueOfMoreKeysThanCapacityKeepsTheLastOnesWithTheirLabels()
    {
        const int capacity = 4, dim = 2;
        using var queue = _cpu.CreateKeyQueue(capacity, dim);
        using var queueLabels = _cpu.Allocate(new TensorShape(capacity), "queue labels");
        _cpu.Fill(queueLabels, -1f);
        queue.Position = 1;
        using var keys = _cpu.FromArray(Enumerable.Range(0, 7).SelectMany(r => new[] { 1f, r }).ToArray(), new TensorShape(7, dim));
        using var labels = _cpu.FromArray(Enumerable.Range(0, 7).Select(r => 100f + r).ToArray(), new TensorShape(7));
        _cpu.EnqueueLabeledKeys(queue, queueLabels, keys, labels);
        Assert.That(queue.Position, Is.EqualTo(0), "1 + 7 wraps to 0");
        // Keys 3..6 land on rows 0..3 (key r at (1 + r) mod 4): each row's key and label come from the same r.
        var second = Enumerable.Range(0, capacity).Select(r => queue.Keys.Span[(r * dim) + 1] / queue.Keys.Span[r * dim]).ToArray();
        Assert.That(second, Is.EqualTo(new float[] { 3, 4, 5, 6 }).Within(1e-5));
        Assert.That(queueLabels.Span.ToArray(), Is.EqualTo(new float[] { 103, 104, 105, 106 }));
    }

    [Test]
    public void EnqueueRejectsMisalignedLabels()
    {
        using var loss = new LabelMaskedInfoNceLoss(_cpu, 2, 3, 5, 0.1f);
        using var keys = _cpu.Allocate(new TensorShape(2, 3), "keys");
        using var labels = _cpu.Allocate(new TensorShape(3), "labels");
        Assert.That(() => loss.Enqueue(keys, labels), Throws.ArgumentException.With.Message.Contains("labels [3]").And.Message.Contains("one label per key"));
        Assert.That(loss.Queue!.Position, Is.EqualTo(0), "nothing was written");
        using var wide = _cpu.Allocate(new TensorShape(2, 4), "keys");
        using var two = _cpu.Allocate(new TensorShape(2), "labels");
        Assert.That(() => loss.Enqueue(wide, two), Throws.ArgumentException.With.Message.Contains("keys [2, 4]"));
        using var noQueue = new LabelMaskedInfoNceLoss(_cpu, 2, 3, 0, 0.1f);
        Assert.That(() => noQueue.Enqueue(keys, two), Throws.InvalidOperationException);
    }

    [Test]
    public void EnqueueComputedPushesTheKeysAndLabelsOfTheLastComputeOnce()
    {
        const int batch = 3, dim = 5, capacity = 7;
        using var computed = new LabelMaskedInfoNceLoss(_cpu, batch, dim, capacity, 0.1f);
        using var direct = new LabelMaskedInfoNceLoss(_cpu, batch, dim, capacity, 0.1f);
        using var q = _cpu.FromArray(Numerics.RandomArray(batch * dim, seed: 1), new TensorShape(batch, dim));
        using var k = _cpu.FromArray(Numerics.RandomArray(batch * dim, seed: 2), new TensorShape(batch, dim));
        using var labels = _cpu.FromArray([2f, 0f, 2f], new TensorShape(batch));
        Assert.That(computed.EnqueueComputed, Throws.InvalidOperationException.With.Message.Contains("needs a Compute"));
        computed.Compute(q, k, labels, dq: null);
        computed.EnqueueComputed();
        direct.Enqueue(k, labels);
        Assert.That(computed.Queue!.Keys.Span.ToArray(), Is.EqualTo(direct.Queue!.Keys.Span.ToArray()));
        Assert.That(computed.QueueLabels!.Span.ToArray(), Is.EqualTo(direct.QueueLabels!.Span.ToArray()));
        Assert.That(computed.Queue.Position, Is.EqualTo(batch));
        Assert.That(computed.EnqueueComputed, Throws.InvalidOperationException, "the same keys are not enqueued twice");
        computed.Compute(q, k, labels, dq: null);
        computed.Enqueue(k, labels);
        Assert.That(computed.EnqueueComputed, Throws.InvalidOperationException, "an Enqueue takes the place of the computed keys");
    }

    [Test]
    public void InitializeQueueWritesRandomUnitKeysWithoutClasses()
    {
        const int capacity = 50, dim = 7;
        using var loss = new LabelMaskedInfoNceLoss(_cpu, 4, dim, capacity, 0.1f);
        using var keys = _cpu.Allocate(new TensorShape(4, dim), "keys");
        _cpu.Fill(keys, 1f);
        using var labels = _cpu.FromArray([1f, 2f, 3f, 4f], new TensorShape(4));
        loss.Enqueue(keys, labels);
        loss.InitializeQueue(seed: 9);
        Assert.That(loss.Queue!.Position, Is.EqualTo(0));
        Assert.That(loss.QueueLabels!.Span.ToArray(), Is.All.EqualTo(-1f), "earlier labels are cleared");
        var values = loss.Queue.Keys.Span.ToArray();
        for (var r = 0; r < capacity; r++)
        {
            var row = values.AsSpan(r * dim, dim).ToArray();
            Assert.That(Math.Sqrt(row.Sum(v => (double)v * v)), Is.EqualTo(1).Within(1e-5), $"row {r} has unit length");
        }
        Assert.That(values.Distinct().Count(), Is.GreaterThan(capacity * dim / 2), "random, not the enqueued constant rows");
    }

    [Test]
    public void LossThatFailsToAllocateDisposesWhatItAllocated()
    {
        using var cpu = new CpuBackend();
        var failures = AllocationFailures.Wrap(cpu);
        Assert.That(failures.FailEachAllocationInTurn(() => new LabelMaskedInfoNceLoss(failures.Backend, 4, 4, 16, 0.2f)), Is.GreaterThanOrEqualTo(3));
        Assert.That(failures.FailEachAllocationInTurn(() => new LabelMaskedInfoNceLoss(failures.Backend, 4, 4, 0, 0.2f)), Is.EqualTo(2));
    }

    [Test]
    public void LossRejectsAnotherShape()
    {
        using var loss = new LabelMaskedInfoNceLoss(_cpu, 4, 3, 8, 0.1f);
        using var q = _cpu.Allocate(new TensorShape(5, 3), "q");
        using var labels = _cpu.Allocate(new TensorShape(5), "labels");
        Assert.That(() => loss.Compute(q, q, labels, null), Throws.ArgumentException.With.Message.Contains("q [5, 3]"));
        Assert.That(() => loss.Temperature = 0f, Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [TestCase(1, 32)]
    [TestCase(7, 32)]
    [TestCase(33, 64)]
    [TestCase(128, 128)]
    [TestCase(129, 256)]
    [TestCase(1000, 1024)]
    [TestCase(1024, 1024)]
    public void CudaPicksTheNarrowestKernelThatHoldsTheRow(int dim, int width) =>
        Assert.That(CudaBackend.MaskedInfoNceWidth(dim), Is.EqualTo(width));

    [Test]
    public void CudaRejectsRowsWiderThanItsKernels() =>
        Assert.That(() => CudaBackend.MaskedInfoNceWidth(CudaBackend.MaskedInfoNceMaxDim + 1), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("1025"));

    /// <summary>
    /// The planner for devices that are not here: every SM count from 1 to 200 and several occupancies. The splits
    /// must cover the 2B + K columns with no empty split (an empty one would leave its partial's maximum at −∞ for every
    /// row, which the combine skips, but would cost a wave), stay within the cap, and the sections must be float2-aligned.
    /// </summary>
    [Test]
    public void CudaPlanCoversTheColumnsOnEveryDevice()
    {
        var failures = new List<string>();
        for (var multiprocessors = 1; multiprocessors <= 200; multiprocessors++)
        {
            foreach (var occupancy in new[] { 1, 3, 8 })
            {
                foreach (var (batch, queueLength) in new[] { (1, 0), (3, 5), (37, 70), (256, 8192), (4096, 65536) })
                {
                    foreach (var dim in new[] { 7, 128, 1024 })
                    {
                        var plan = CudaBackend.PlanMaskedInfoNce(batch, dim, queueLength, multiprocessors, (_, _) => occupancy);
                        var columns = (2L * batch) + queueLength;
                        var where = $"{multiprocessors} SMs x {occupancy}, B = {batch}, K = {queueLength}, d = {dim}";
                        if (plan.Splits < 1 || plan.Splits > CudaBackend.MaxMaskedInfoNceSplits || plan.ColumnsPerSplit % CudaBackend.MaskedInfoNceChunk != 0
                            || (long)plan.Splits * plan.ColumnsPerSplit < columns || (long)(plan.Splits - 1) * plan.ColumnsPerSplit >= columns)
                        {
                            failures.Add($"{where}: {plan.Splits} splits x {plan.ColumnsPerSplit} columns for {columns}");
                        }
                        if (new[] { plan.Qn, plan.Kn, plan.InvNorm, plan.Partial, plan.Weighted, plan.Positives, plan.Anchor, plan.RowSoftmax, plan.RowStats }.Any(o => o % 8 != 0))
                        {
                            failures.Add($"{where}: a section is not float2-aligned");
                        }
                        var bound = ((3L + (2L * plan.Splits)) * batch * dim) + (14L * batch * plan.Splits) + (10L * 64);
                        if (plan.Length > bound)
                        {
                            failures.Add($"{where}: workspace {plan.Length} floats, more than {bound}");
                        }
                    }
                }
            }
        }
        Assert.That(failures, Is.Empty, string.Join("\n", failures.Take(20)));
    }

    private (ContrastiveStats Stats, float[] Dq) Run(float[] q, float[] k, float[] labels, float[] keys, float[] queueLabels, int batch, int dim, int queueLength, float tau, float gradScale)
    {
        using var loss = Loss(keys, queueLabels, batch, dim, queueLength, tau);
        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim), "q");
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim), "k");
        using var lt = _cpu.FromArray(labels, new TensorShape(batch), "labels");
        using var dq = _cpu.Allocate(new TensorShape(batch, dim), "dq");
        _cpu.Fill(dq, float.NaN);
        loss.Compute(qt, kt, lt, dq, gradScale);
        return (loss.ReadStats(), dq.Span.ToArray());
    }

    private (ContrastiveStats Stats, float[] Dq) RunInfoNce(float[] q, float[] k, float[] keys, int batch, int dim, int queueLength, float tau, float gradScale)
    {
        using var loss = new InfoNceLoss(_cpu, batch, dim, queueLength, tau, MatmulPrecision.Fp32);
        using (var keyTensor = _cpu.FromArray(keys, new TensorShape(queueLength, dim)))
        {
            loss.Enqueue(keyTensor);
        }
        using var qt = _cpu.FromArray(q, new TensorShape(batch, dim));
        using var kt = _cpu.FromArray(k, new TensorShape(batch, dim));
        using var dq = _cpu.Allocate(new TensorShape(batch, dim));
        loss.Compute(qt, kt, dq, gradScale);
        return (loss.ReadStats(), dq.Span.ToArray());
    }

    /// <summary>A loss whose queue holds exactly these keys (normalised on the way in) and labels.</summary>
    private LabelMaskedInfoNceLoss Loss(float[] keys, float[] queueLabels, int batch, int dim, int queueLength, float tau)
    {
        var loss = new LabelMaskedInfoNceLoss(_cpu, batch, dim, queueLength, tau);
        if (queueLength > 0)
        {
            using var keyTensor = _cpu.FromArray(keys, new TensorShape(queueLength, dim));
            using var labelTensor = _cpu.FromArray(queueLabels, new TensorShape(queueLength));
            loss.Enqueue(keyTensor, labelTensor);
        }
        return loss;
    }

    internal static (float[] Q, float[] K, float[] Keys) Inputs(int batch, int dim, int queueLength, int seed)
    {
        // k near q (a momentum key of the same image), so positives are the most similar columns in part of the rows.
        var q = Numerics.RandomArray(batch * dim, seed, 2f);
        var noise = Numerics.RandomArray(batch * dim, seed + 1, 1.5f);
        var k = q.Select((v, i) => v + noise[i]).ToArray();
        return (q, k, Numerics.RandomArray(queueLength * dim, seed + 2));
    }

    /// <summary>
    /// Labels of a few classes, so rows have several positives among q, k and the queue; one query (of three or more)
    /// without a class, and about a quarter of the queue unwritten (−1).
    /// </summary>
    internal static (float[] Labels, float[] QueueLabels) Labels(int batch, int queueLength, int classes, int seed)
    {
        var rng = new Random(seed);
        var labels = Enumerable.Range(0, batch).Select(_ => (float)rng.Next(classes)).ToArray();
        if (batch >= 3)
        {
            labels[batch / 2] = -1f;
        }
        var queueLabels = Enumerable.Range(0, queueLength).Select(_ => rng.Next(4) == 0 ? -1f : rng.Next(classes)).ToArray();
        return (labels, queueLabels);
    }

    private static float[] Row(float[] x, int i, int dim) => x.AsSpan(i * dim, dim).ToArray();

    private static double[] D(float[] values) => ContrastiveReference.ToDouble(values);
}
