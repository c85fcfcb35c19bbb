namespace NativeContrast.Tests.Nn;

using NativeContrast.Nn;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static NativeContrast.Tests.Support.Numerics;

/// <summary>
/// CPU layers against float64 references (forward) and finite differences of a float64 loss (backward), on each
/// CPU path: library convolutions (oneDNN), im2col + OpenBLAS, and the managed fallback.
/// </summary>
[TestFixture(CpuPath.Libraries)]
[TestFixture(CpuPath.OpenBlas)]
[TestFixture(CpuPath.Managed)]
public class LayerTests(CpuPath path)
{
    /// <summary>The analytic gradients are float32 computations checked against exact float64 differences.</summary>
    private const double GradientTolerance = Fp32Tolerance;

    [TestCase(2, 7, 6, 3, 4, 3, 2, 1, false, TestName = "Conv 3x3 stride 2 pad 1, odd sizes")]
    [TestCase(1, 5, 5, 2, 3, 1, 1, 0, true, TestName = "Conv 1x1 pointwise with bias")]
    [TestCase(3, 6, 5, 4, 5, 1, 2, 0, false, TestName = "Conv 1x1 stride 2 (downsample)")]
    [TestCase(2, 9, 8, 3, 4, 7, 2, 3, false, TestName = "Conv 7x7 stride 2 pad 3 (stem)")]
    [TestCase(2, 6, 7, 3, 2, 2, 2, 0, true, TestName = "Conv 2x2 even kernel with bias")]
    [TestCase(1, 8, 8, 5, 3, 5, 3, 2, true, TestName = "Conv 5x5 stride 3 pad 2")]
    public void Conv2dForwardAndBackward(int n, int h, int w, int cin, int cout, int k, int s, int p, bool bias)
    {
        using var t = new Harness(path);
        var conv = new Conv2d(t.Layout, "conv", cin, cout, k, s, p, bias);
        t.CreateArena();
        conv.Bind(t.Arena);
        var input = new TensorShape(n, h, w, cin);
        var plan = conv.CreatePlan(t.Builder, input);
        t.BuildPlans();

        var xs = RandomArray(checked((int)input.Length), 1);
        var ws = RandomArray(checked((int)conv.Weight.Length), 2, 0.5f);
        var bs = RandomArray(cout, 3);
        t.Backend.CopyFromHost(ws, conv.Weight);
        if (bias)
        {
            t.Backend.CopyFromHost(bs, conv.Bias!);
        }
        var x = t.Tensor(xs, input, "x");
        var outShape = conv.OutputShape(input);
        var y = t.Zeros(outShape, "y");
        conv.Forward(plan, x, y);

        double[] xd = Reference.ToDouble(xs), wd = Reference.ToDouble(ws), bd = Reference.ToDouble(bs);
        double[] Forward() => Reference.Conv2d(xd, wd, bias ? bd : null, n, h, w, cin, cout, k, s, p);
        AssertClose(t.Read(y), Forward(), Fp32Tolerance, "conv forward");

        // Loss = Σ y·R, so dy = R. dx accumulates onto a prefilled tensor to test the residual-block path too.
        var rs = RandomArray(checked((int)outShape.Length), 4);
        var rd = Reference.ToDouble(rs);
        var dy = t.Tensor(rs, outShape, "dy");
        var prefill = RandomArray(checked((int)input.Length), 5);
        var dx = t.Tensor(prefill, input, "dx");
        conv.Backward(plan, x, dy, dx, accumulateInputGradient: true);

        double Loss() => Reference.Dot(Forward(), rd);
        var expectedDx = FiniteDifferenceGradient(xd, Loss);
        for (var i = 0; i < expectedDx.Length; i++)
        {
            expectedDx[i] += prefill[i];
        }
        AssertClose(t.Read(dx), expectedDx, GradientTolerance, "dx (accumulated)");
        AssertClose(t.Read(conv.WeightGradient), FiniteDifferenceGradient(wd, Loss), GradientTolerance, "dW");
        if (bias)
        {
            AssertClose(t.Read(conv.BiasGradient!), FiniteDifferenceGradient(bd, Loss), GradientTolerance, "db");
        }
    }

    [Test]
    public void Conv2dInSampleChunksMatchesOneChunk()
    {
        // Chunks are an im2col matter: a library convolution takes the batch whole.
        using var t = new Harness(path == CpuPath.Libraries ? CpuPath.OpenBlas : path);
        var conv = new Conv2d(t.Layout, "conv", 3, 4, 3, 2, 1);
        t.CreateArena();
        conv.Bind(t.Arena);
        var input = new TensorShape(5, 7, 6, 3);
        var whole = conv.CreatePlan(t.Builder, input);
        // Room for two samples' columns: chunks of 2, 2 and 1.
        var chunked = conv.CreatePlan(t.Builder, input, maxColumnElements: 2L * 4 * 3 * 27);
        t.BuildPlans();
        Assert.That(chunked.ChunkSamples, Is.EqualTo(2));
        t.Backend.CopyFromHost(RandomArray(checked((int)conv.Weight.Length), 7), conv.Weight);
        var x = t.Tensor(RandomArray(checked((int)input.Length), 8), input);
        var outShape = conv.OutputShape(input);
        var dy = t.Tensor(RandomArray(checked((int)outShape.Length), 9), outShape);
        var (y1, y2, dx1, dx2) = (t.Zeros(outShape), t.Zeros(outShape), t.Zeros(input), t.Zeros(input));

        conv.Forward(whole, x, y1);
        conv.Backward(whole, x, dy, dx1);
        var dw1 = t.Read(conv.WeightGradient);
        t.Backend.Fill(conv.WeightGradient, 0f);
        conv.Forward(chunked, x, y2);
        conv.Backward(chunked, x, dy, dx2);

        AssertClose(t.Read(y2), t.Read(y1), Fp32Tolerance, "y");
        AssertClose(t.Read(dx2), t.Read(dx1), Fp32Tolerance, "dx");
        AssertClose(t.Read(conv.WeightGradient), dw1, Fp32Tolerance, "dW");
    }

    [Test]
    public void ParameterGradientsAccumulateOverBackwardCalls()
    {
        using var t = new Harness(path);
        var conv = new Conv2d(t.Layout, "conv", 2, 3, 3, 1, 1, bias: true);
        t.CreateArena();
        conv.Bind(t.Arena);
        var input = new TensorShape(2, 4, 4, 2);
        var plan = conv.CreatePlan(t.Builder, input);
        t.BuildPlans();
        t.Backend.CopyFromHost(RandomArray(checked((int)conv.Weight.Length), 1), conv.Weight);
        var x = t.Tensor(RandomArray(checked((int)input.Length), 2), input);
        var y = t.Zeros(conv.OutputShape(input));
        var dy = t.Tensor(RandomArray(checked((int)y.Length), 3), y.Shape);
        conv.Forward(plan, x, y);
        conv.Backward(plan, x, dy, null);
        var once = t.Read(t.Arena.Gradients);
        conv.Backward(plan, x, dy, null);
        AssertClose(t.Read(t.Arena.Gradients), [.. once.Select(v => 2 * v)], Fp32Tolerance, "gradients after two backward calls");
    }

    [TestCase(new[] { 3, 4, 3, 5 }, true, false, false, TestName = "BatchNorm2d affine")]
    [TestCase(new[] { 3, 4, 3, 5 }, true, true, true, TestName = "BatchNorm2d + residual + ReLU")]
    [TestCase(new[] { 2, 3, 3, 7 }, false, false, true, TestName = "BatchNorm2d not affine + ReLU")]
    [TestCase(new[] { 9, 6 }, true, false, true, TestName = "BatchNorm1d + ReLU")]
    [TestCase(new[] { 4, 3 }, true, true, false, TestName = "BatchNorm1d four rows + residual")]
    public void BatchNormTrainingForwardBackwardAndRunningStatistics(int[] dims, bool affine, bool residual, bool relu)
    {
        using var t = new Harness(path);
        var shape = new TensorShape(dims);
        int c = shape.Cols, rows = shape.Rows;
        var bn = new BatchNorm(t.Layout, "bn", c, affine);
        t.CreateArena();
        bn.Bind(t.Arena);
        var plan = bn.CreatePlan(t.Builder, shape);
        t.BuildPlans();

        // A large common offset checks that the statistics do not cancel catastrophically.
        var xs = RandomArray(rows * c, 11).Select(v => 3f + v).ToArray();
        var gs = RandomArray(c, 12).Select(v => 1f + (0.5f * v)).ToArray();
        var bs = RandomArray(c, 13);
        var res = RandomArray(rows * c, 14);
        var rm0 = RandomArray(c, 15);
        var rv0 = RandomArray(c, 16).Select(v => 1.5f + v).ToArray();
        var p = bn.Parameters;
        if (affine)
        {
            t.Backend.CopyFromHost(gs, p.Weight!);
            t.Backend.CopyFromHost(bs, p.Bias!);
        }
        t.Backend.CopyFromHost(rm0, p.RunningMean);
        t.Backend.CopyFromHost(rv0, p.RunningVar);
        var x = t.Tensor(xs, shape, "x");
        var r = residual ? t.Tensor(res, shape, "residual") : null;
        var y = t.Zeros(shape, "y");
        bn.Forward(plan, x, y, training: true, relu, r);

        double[] xd = Reference.ToDouble(xs), gd = Reference.ToDouble(gs), bd = Reference.ToDouble(bs), resd = Reference.ToDouble(res);
        double[] Forward(out double[] mean, out double[] variance) =>
            Reference.BatchNormTrain(xd, affine ? gd : null, affine ? bd : null, residual ? resd : null, relu, rows, c, 1e-5, out mean, out variance);
        var expected = Forward(out var batchMean, out var batchVar);
        AssertClose(t.Read(y), expected, Fp32Tolerance, "batch norm forward");

        // PyTorch: running = (1 − 0.1)·running + 0.1·batch, with the unbiased variance for running_var.
        var expectedMean = rm0.Select((v, j) => (0.9 * v) + (0.1 * batchMean[j])).ToArray();
        var expectedVar = rv0.Select((v, j) => (0.9 * v) + (0.1 * batchVar[j] * rows / (rows - 1))).ToArray();
        AssertClose(t.Read(p.RunningMean), expectedMean, Fp32Tolerance, "running_mean");
        AssertClose(t.Read(p.RunningVar), expectedVar, Fp32Tolerance, "running_var");
        Assert.That(t.Read(p.BatchesTracked!)[0], Is.EqualTo(1f), "num_batches_tracked");

        var rs = RandomArray(rows * c, 17);
        var rd = Reference.ToDouble(rs);
        var dy = t.Tensor(rs, shape, "dy");
        var dx = t.Zeros(shape, "dx");
        var dres = residual ? t.Zeros(shape, "dresidual") : null;
        bn.Backward(plan, x, y, dy, dx, dres);
        double Loss() => Reference.Dot(Forward(out _, out _), rd);
        AssertClose(t.Read(dx), FiniteDifferenceGradient(xd, Loss), GradientTolerance, "dx");
        if (affine)
        {
            AssertClose(t.Read(bn.WeightGradient!), FiniteDifferenceGradient(gd, Loss), GradientTolerance, "dgamma");
            AssertClose(t.Read(bn.BiasGradient!), FiniteDifferenceGradient(bd, Loss), GradientTolerance, "dbeta");
        }
        if (residual)
        {
            AssertClose(t.Read(dres!), FiniteDifferenceGradient(resd, Loss), GradientTolerance, "dresidual");
        }
    }

    [TestCase(true, TestName = "BatchNorm eval + ReLU")]
    [TestCase(false, TestName = "BatchNorm eval")]
    public void BatchNormEvaluationUsesRunningStatistics(bool relu)
    {
        using var t = new Harness(path);
        var shape = new TensorShape(2, 3, 5, 6);
        int c = shape.Cols, rows = shape.Rows;
        var bn = new BatchNorm(t.Layout, "bn", c);
        t.CreateArena();
        bn.Bind(t.Arena);
        var plan = bn.CreatePlan(t.Builder, shape);
        t.BuildPlans();
        var xs = RandomArray(rows * c, 21);
        var gs = RandomArray(c, 22);
        var bs = RandomArray(c, 23);
        var rm = RandomArray(c, 24);
        var rv = RandomArray(c, 25).Select(v => 1.2f + v).ToArray();
        var p = bn.Parameters;
        t.Backend.CopyFromHost(gs, p.Weight!);
        t.Backend.CopyFromHost(bs, p.Bias!);
        t.Backend.CopyFromHost(rm, p.RunningMean);
        t.Backend.CopyFromHost(rv, p.RunningVar);
        var x = t.Tensor(xs, shape);
        var y = t.Zeros(shape);
        bn.Forward(plan, x, y, training: false, relu);

        double[] xd = Reference.ToDouble(xs), gd = Reference.ToDouble(gs), bd = Reference.ToDouble(bs);
        double[] Forward() => Reference.BatchNormEval(xd, Reference.ToDouble(rm), Reference.ToDouble(rv), gd, bd, null, relu, rows, c, 1e-5);
        AssertClose(t.Read(y), Forward(), Fp32Tolerance, "eval forward");
        Assert.That(t.Read(p.RunningMean), Is.EqualTo(rm), "evaluation leaves running_mean alone");
        Assert.That(t.Read(p.BatchesTracked!)[0], Is.Zero, "evaluation does not count batches");

        var rs = RandomArray(rows * c, 26);
        var dy = t.Tensor(rs, shape);
        var dx = t.Zeros(shape);
        bn.Backward(plan, x, y, dy, dx);
        double Loss() => Reference.Dot(Forward(), Reference.ToDouble(rs));
        AssertClose(t.Read(dx), FiniteDifferenceGradient(xd, Loss), GradientTolerance, "dx (eval)");
        AssertClose(t.Read(bn.WeightGradient!), FiniteDifferenceGradient(gd, Loss), GradientTolerance, "dgamma (eval)");
    }

    [TestCase(3, 2, 1, 7, 5, TestName = "MaxPool 3x3 s2 p1 (stem), odd sizes")]
    [TestCase(2, 2, 0, 6, 8, TestName = "MaxPool 2x2 s2")]
    [TestCase(3, 1, 1, 5, 4, TestName = "MaxPool 3x3 s1 p1")]
    [TestCase(5, 3, 2, 9, 7, TestName = "MaxPool 5x5 s3 p2")]
    public void MaxPoolForwardAndBackward(int k, int s, int p, int h, int w)
    {
        using var t = new Harness(path);
        const int n = 2, c = 3;
        var pool = new MaxPool2d(k, s, p);
        var input = new TensorShape(n, h, w, c);
        var plan = pool.CreatePlan(t.Builder, input, "pool");
        t.BuildPlans();
        var xs = RandomArray(checked((int)input.Length), 31);
        var x = t.Tensor(xs, input);
        var outShape = pool.OutputShape(input);
        var y = t.Zeros(outShape);
        pool.Forward(t.Backend, plan, x, y);
        var xd = Reference.ToDouble(xs);
        double[] Forward() => Reference.MaxPool(xd, n, h, w, c, k, s, p);
        AssertClose(t.Read(y), Forward(), 0, "max pool forward");

        var rs = RandomArray(checked((int)outShape.Length), 32);
        var dy = t.Tensor(rs, outShape);
        var dx = t.Tensor(RandomArray(checked((int)input.Length), 33), input);
        pool.Backward(t.Backend, plan, dy, dx);
        AssertClose(t.Read(dx), FiniteDifferenceGradient(xd, () => Reference.Dot(Forward(), Reference.ToDouble(rs))), GradientTolerance, "max pool dx");
    }

    [Test]
    public void MaxPoolBackwardSendsTiesToTheFirstMaximumOnly()
    {
        using var t = new Harness(path);
        var pool = new MaxPool2d(2, 1, 0);
        var input = new TensorShape(1, 2, 3, 1);
        var plan = pool.CreatePlan(t.Builder, input, "pool");
        t.BuildPlans();
        var x = t.Tensor([1, 1, 1, 1, 1, 1], input);
        var y = t.Zeros(pool.OutputShape(input));
        pool.Forward(t.Backend, plan, x, y);
        var dy = t.Tensor([1, 10], y.Shape);
        var dx = t.Zeros(input);
        pool.Backward(t.Backend, plan, dy, dx);
        // Both windows are all ties: each sends its gradient to its top-left element, as PyTorch does.
        Assert.That(t.Read(dx), Is.EqualTo(new float[] { 1, 10, 0, 0, 0, 0 }));
    }

    [Test]
    public void GlobalAvgPoolForwardAndBackward()
    {
        using var t = new Harness(path);
        var input = new TensorShape(3, 5, 3, 7);
        var xs = RandomArray(checked((int)input.Length), 41);
        var x = t.Tensor(xs, input);
        var y = t.Zeros(GlobalAvgPool.OutputShape(input));
        GlobalAvgPool.Forward(t.Backend, x, y);
        var xd = Reference.ToDouble(xs);
        AssertClose(t.Read(y), Reference.AvgPool(xd, 3, 15, 7), Fp32Tolerance, "avg pool forward");
        var rs = RandomArray(21, 42);
        var dy = t.Tensor(rs, y.Shape);
        var dx = t.Zeros(input);
        GlobalAvgPool.Backward(t.Backend, dy, dx);
        AssertClose(t.Read(dx), FiniteDifferenceGradient(xd, () => Reference.Dot(Reference.AvgPool(xd, 3, 15, 7), Reference.ToDouble(rs))), GradientTolerance, "avg pool dx");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void LinearForwardAndBackward(bool bias)
    {
        using var t = new Harness(path);
        const int rows = 7, inF = 5, outF = 9;
        var linear = new Linear(t.Layout, "fc", inF, outF, bias);
        t.CreateArena();
        linear.Bind(t.Arena);
        var xs = RandomArray(rows * inF, 51);
        var ws = RandomArray(outF * inF, 52);
        var bs = RandomArray(outF, 53);
        t.Backend.CopyFromHost(ws, linear.Weight);
        if (bias)
        {
            t.Backend.CopyFromHost(bs, linear.Bias!);
        }
        var x = t.Tensor(xs, new TensorShape(rows, inF));
        var y = t.Zeros(new TensorShape(rows, outF));
        linear.Forward(x, y);
        double[] xd = Reference.ToDouble(xs), wd = Reference.ToDouble(ws), bd = Reference.ToDouble(bs);
        double[] Forward() => Reference.Linear(xd, wd, bias ? bd : null, rows, inF, outF);
        AssertClose(t.Read(y), Forward(), Fp32Tolerance, "linear forward");

        var rs = RandomArray(rows * outF, 54);
        var dy = t.Tensor(rs, y.Shape);
        var dx = t.Zeros(x.Shape);
        linear.Backward(x, dy, dx);
        double Loss() => Reference.Dot(Forward(), Reference.ToDouble(rs));
        AssertClose(t.Read(dx), FiniteDifferenceGradient(xd, Loss), GradientTolerance, "dx");
        AssertClose(t.Read(linear.WeightGradient), FiniteDifferenceGradient(wd, Loss), GradientTolerance, "dW");
        if (bias)
        {
            AssertClose(t.Read(linear.BiasGradient!), FiniteDifferenceGradient(bd, Loss), GradientTolerance, "db");
        }
    }

    [Test]
    public void SoftmaxCrossEntropyForwardAndBackward()
    {
        using var t = new Harness(path);
        const int rows = 6, classes = 11;
        var logits = RandomArray(rows * classes, 61, 4f);
        int[] labels = [0, 10, 3, 3, 7, 1];
        var x = t.Tensor(logits, new TensorShape(rows, classes));
        var l = t.Tensor([.. labels.Select(v => (float)v)], new TensorShape(rows));
        using var xent = new SoftmaxCrossEntropy(t.Backend, rows, classes);
        xent.Forward(x, l);
        var xd = Reference.ToDouble(logits);
        var expected = Reference.CrossEntropy(xd, labels, rows, classes);
        AssertClose(t.Read(xent.Losses), expected, Fp32Tolerance, "per-row losses");
        AssertClose(t.Read(xent.Loss), [expected.Average()], Fp32Tolerance, "mean loss");
        xent.Backward(x, l);
        var fd = FiniteDifferenceGradient(xd, () => Reference.CrossEntropy(xd, labels, rows, classes).Average());
        AssertClose(t.Read(xent.LogitsGradient), fd, GradientTolerance, "dlogits");
    }

    [Test]
    public void SoftmaxCrossEntropyGivesNaNForAnInvalidLabel()
    {
        using var t = new Harness(path);
        var x = t.Tensor(RandomArray(6, 71), new TensorShape(2, 3));
        var l = t.Tensor([1, 3], new TensorShape(2));
        var losses = t.Zeros(new TensorShape(2));
        t.Backend.SoftmaxCrossEntropyForward(x, l, losses);
        var values = t.Read(losses);
        Assert.That(float.IsFinite(values[0]) && float.IsNaN(values[1]), Is.True, $"losses {values[0]}, {values[1]}");
    }
}
