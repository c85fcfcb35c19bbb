namespace NativeContrast.Backends;

using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

// The CPU twins of native/contrastive.cu: the same functions, row by row, fp32 values with double accumulators
// where a long sum would otherwise lose digits (log-sum-exps, gradient sums, statistics). Every precision is
// computed in fp32. Rows are split across cores. NT-Xent materialises no rows x rows matrix; InfoNCE against a queue
// computes its logits and weighted key sums as two GEMMs (a batch x queue matrix in the workspace).
public sealed partial class CpuBackend
{
    /// <summary>Columns whose gradient contributions are summed in fp32 before joining the double accumulator.</summary>
    private const int GradientChunk = 256;

    /// <summary>Workspace: normalised rows [rows, dim], norms [rows], natural log-sum-exps [rows], whatever the shard.</summary>
    public long NtXentWorkspaceLength(int rows, int dim, MatmulPrecision precision, NtXentShard? shard = null) => ((long)rows * dim) + (2L * rows);

    public void NtXentForward(Tensor z, float temperature, MatmulPrecision precision, Tensor workspace, Tensor stats, NtXentShard? shard = null)
    {
        var (rows, dim) = ContrastiveCheck.NtXent(z, temperature);
        var (offset, anchors) = ContrastiveCheck.Shard(z, shard);
        ContrastiveCheck.Workspace(workspace, NtXentWorkspaceLength(rows, dim, precision));
        ContrastiveCheck.Stats(stats);
        var (zn, norms, lse) = NtXentSections(workspace, rows, dim);
        NormalizeRows(CpuArray(z), zn, norms, rows, dim);

        var perRow = ArrayPool<double>.Shared.Rent(3 * anchors);
        try
        {
            var inverseTemperature = 1.0 / temperature;
            CpuParallel.For(anchors, 2L * rows * dim, (start, end) =>
            {
                var similarities = ArrayPool<float>.Shared.Rent(rows);
                try
                {
                    for (var a = start; a < end; a++)
                    {
                        var i = offset + a;
                        var s = similarities.AsSpan(0, rows);
                        var zi = zn.AsSpan(i * dim, dim);
                        for (var j = 0; j < rows; j++)
                        {
                            s[j] = TensorPrimitives.Dot<float>(zi, zn.AsSpan(j * dim, dim));
                        }
                        var partner = offset + Partner(a, anchors);
                        var positive = s[partner];
                        s[i] = float.NegativeInfinity;
                        s[partner] = float.NegativeInfinity;
                        var otherMax = TensorPrimitives.Max<float>(s);
                        s[partner] = positive;
                        var rowLse = LogSumExp(s, Math.Max(otherMax, positive), inverseTemperature);
                        lse[i] = (float)rowLse;
                        perRow[a] = rowLse - (positive * inverseTemperature);
                        perRow[anchors + a] = positive;
                        perRow[(2 * anchors) + a] = positive >= otherMax ? 1 : 0;
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(similarities);
                }
            });
            WriteStats(perRow, anchors, stats);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(perRow);
        }
    }

    public void NtXentBackward(Tensor z, float temperature, MatmulPrecision precision, Tensor workspace, Tensor dz, float gradScale = 1f, NtXentShard? shard = null)
    {
        var (rows, dim) = ContrastiveCheck.NtXent(z, temperature);
        var rowsOwned = ContrastiveCheck.Shard(z, shard);
        var (offset, anchors) = rowsOwned;
        ContrastiveCheck.Workspace(workspace, NtXentWorkspaceLength(rows, dim, precision));
        ContrastiveCheck.Gradient(z, dz, rowsOwned);
        var (zn, norms, lse) = NtXentSections(workspace, rows, dim);
        var dzs = CpuArray(dz);
        var inverseTemperature = 1f / temperature;
        var factor = (double)gradScale / (anchors * (double)temperature);
        CpuParallel.For(anchors, 2L * rows * dim, (start, end) =>
        {
            var gradient = ArrayPool<double>.Shared.Rent(dim);
            var chunk = ArrayPool<float>.Shared.Rent(dim);
            try
            {
                for (var a = start; a < end; a++)
                {
                    var i = offset + a;
                    var g = gradient.AsSpan(0, dim);
                    var c = chunk.AsSpan(0, dim);
                    var zi = zn.AsSpan(i * dim, dim);
                    g.Clear();
                    // sum_{j != i} (P_ij + P_ji) zn_j: S is symmetric, so P_ji = exp(s_ij / tau - lse_j).
                    for (var j0 = 0; j0 < rows; j0 += GradientChunk)
                    {
                        c.Clear();
                        for (var j = j0; j < Math.Min(rows, j0 + GradientChunk); j++)
                        {
                            if (j == i)
                            {
                                continue;
                            }
                            var zj = zn.AsSpan(j * dim, dim);
                            var logit = TensorPrimitives.Dot<float>(zi, zj) * inverseTemperature;
                            var weight = MathF.Exp(logit - lse[i]) + MathF.Exp(logit - lse[j]);
                            TensorPrimitives.MultiplyAdd(zj, weight, c, c);
                        }
                        AddTo(g, c);
                    }
                    var partner = zn.AsSpan((offset + Partner(a, anchors)) * dim, dim);
                    for (var f = 0; f < dim; f++)
                    {
                        g[f] = factor * (g[f] - (2.0 * partner[f]));
                    }
                    ProjectOutOfRow(g, zi, norms[i], dzs.AsSpan(a * dim, dim));
                }
            }
            finally
            {
                ArrayPool<double>.Shared.Return(gradient);
                ArrayPool<float>.Shared.Return(chunk);
            }
        });
    }

    /// <summary>The natural log-sum-exps, the last <paramref name="rows"/> floats of the workspace's sections.</summary>
    public Tensor NtXentLogSumExps(Tensor workspace, int rows, int dim, MatmulPrecision precision)
    {
        ContrastiveCheck.Workspace(workspace, NtXentWorkspaceLength(rows, dim, precision));
        return workspace.View(((long)rows * dim) + rows, new TensorShape(rows), "nt-xent log-sum-exps");
    }

    public KeyQueue CreateKeyQueue(int capacity, int dim) => new CpuKeyQueue(capacity, dim, Allocate(new TensorShape(capacity, dim), "key queue"));

    public void EnqueueKeys(KeyQueue queue, Tensor keys)
    {
        var keyQueue = Own(queue);
        ContrastiveCheck.Keys(queue, keys);
        var (count, dim, capacity) = (keys.Rows, queue.Dim, queue.Capacity);
        var skipped = Math.Max(0, count - capacity);
        var source = CpuArray(keys);
        var destination = CpuArray(keyQueue.Keys);
        for (var r = skipped; r < count; r++)
        {
            var row = source.AsSpan(r * dim, dim);
            var target = destination.AsSpan((int)((queue.Position + (long)r) % capacity) * dim, dim);
            TensorPrimitives.Multiply(row, 1f / MathF.Max(TensorPrimitives.Norm<float>(row), NormEpsilon), target);
        }
        queue.Position = (int)((queue.Position + (long)count) % capacity);
    }

    /// <summary>
    /// Workspace: the normalised queries and keys [batch, dim] each, their norms [batch] each, the logits against
    /// the queue (then the probabilities) [batch, queue] and the probability-weighted key sums [batch, dim]. Against a
    /// queue the batch is small and the queue long, so the two products are GEMMs (OpenBLAS), as PyTorch's MoCo
    /// computes them.
    /// </summary>
    public long InfoNceWorkspaceLength(int batch, int dim, int queueLength, MatmulPrecision precision) => (long)batch * (queueLength + (3L * dim) + 2);

    public void InfoNce(Tensor q, Tensor k, KeyQueue queue, float temperature, MatmulPrecision precision, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f)
    {
        var keyQueue = Own(queue);
        var (batch, dim) = ContrastiveCheck.InfoNce(q, k, queue, temperature, dq);
        var queueLength = queue.Capacity;
        ContrastiveCheck.Workspace(workspace, InfoNceWorkspaceLength(batch, dim, queueLength, precision));
        ContrastiveCheck.Stats(stats);
        var (keys, space) = (CpuArray(keyQueue.Keys), CpuArray(workspace));
        var dqs = dq is null ? default : CpuArray(dq);
        var rowsLength = batch * dim;
        var qn = space.Slice(0, rowsLength);
        var kn = space.Slice(rowsLength, rowsLength);
        var qNorms = space.Slice(2 * rowsLength, batch);
        var keyNorms = space.Slice((2 * rowsLength) + batch, batch);
        var logits = space.Slice((2 * rowsLength) + (2 * batch), batch * queueLength);
        var weightedKeys = space.Slice((2 * rowsLength) + (2 * batch) + (batch * queueLength), rowsLength);
        NormalizeRows(CpuArray(q), qn, qNorms, batch, dim);
        NormalizeRows(CpuArray(k), kn, keyNorms, batch, dim);
        var inverseTemperature = 1.0 / temperature;
        var factor = (double)gradScale / (batch * (double)temperature);
        var perRow = ArrayPool<double>.Shared.Rent(3 * batch);
        try
        {
            // logits = qn · queueᵀ (cosines: the queue holds unit keys).
            GemmAny(qn, false, keys, true, logits, batch, dim, queueLength, 1f, 0f);
            CpuParallel.For(batch, 4L * queueLength, (start, end) =>
            {
                for (var i = start; i < end; i++)
                {
                    var positive = TensorPrimitives.Dot<float>(qn.AsSpan(i * dim, dim), kn.AsSpan(i * dim, dim));
                    var s = logits.AsSpan(i * queueLength, queueLength);
                    var queueMax = TensorPrimitives.Max<float>(s);
                    var max = Math.Max(queueMax, positive);
                    // e_j = exp((s_j − max) / τ), vectorised in fp32 (each within an ulp or two), summed in double; the
                    // logits become the softmax weights P_j = e_j / Σ of the queue's keys.
                    TensorPrimitives.Subtract(s, max, s);
                    TensorPrimitives.Multiply(s, (float)inverseTemperature, s);
                    TensorPrimitives.Exp(s, s);
                    var sum = Math.Exp((positive - max) * inverseTemperature);
                    foreach (var e in s)
                    {
                        sum += e;
                    }
                    perRow[i] = (max * inverseTemperature) + Math.Log(sum) - (positive * inverseTemperature);
                    perRow[batch + i] = positive;
                    perRow[(2 * batch) + i] = positive >= queueMax ? 1 : 0;
                    if (dq is not null)
                    {
                        TensorPrimitives.Multiply(s, (float)(1.0 / sum), s);
                    }
                }
            });
            WriteStats(perRow, batch, stats);
            if (dq is null)
            {
                return;
            }
            // sum_j P_j key_j for every row at once.
            GemmAny(logits, false, keys, false, weightedKeys, batch, queueLength, dim, 1f, 0f);
            CpuParallel.For(batch, 4L * dim, (start, end) =>
            {
                Span<double> g = stackalloc double[dim];
                for (var i = start; i < end; i++)
                {
                    // The positive's weight P_0 − 1, where P_0 = exp(−loss_i).
                    var positiveWeight = Math.Exp(-perRow[i]) - 1.0;
                    var sums = weightedKeys.AsSpan(i * dim, dim);
                    var key = kn.AsSpan(i * dim, dim);
                    for (var f = 0; f < dim; f++)
                    {
                        g[f] = factor * (sums[f] + (positiveWeight * key[f]));
                    }
                    ProjectOutOfRow(g, qn.AsSpan(i * dim, dim), qNorms[i], dqs.AsSpan(i * dim, dim));
                }
            });
        }
        finally
        {
            ArrayPool<double>.Shared.Return(perRow);
        }
    }

    public void MaskSelfSimilarity(Tensor logits)
    {
        var xs = Cpu(logits);
        var cols = logits.Cols;
        for (var i = 0; i < Math.Min(logits.Rows, cols); i++)
        {
            xs[(i * cols) + i] = float.NegativeInfinity;
        }
    }

    public void PositiveLogits(Tensor logits, PositivePairing pairing, Tensor positives, Tensor hits)
    {
        ContrastiveCheck.Pairing(logits, pairing);
        var (rows, cols) = (logits.Rows, logits.Cols);
        Check.Length(positives.Length, rows, positives.Describe());
        Check.Length(hits.Length, rows, hits.Describe());
        var (xs, ps, hs) = (CpuArray(logits), CpuArray(positives), CpuArray(hits));
        CpuParallel.For(rows, cols, (start, end) =>
        {
            for (var i = start; i < end; i++)
            {
                var row = xs.AsSpan(i * cols, cols);
                var p = PositiveColumn(i, rows, pairing);
                var others = float.NegativeInfinity;
                if (p > 0)
                {
                    others = TensorPrimitives.Max<float>(row[..p]);
                }
                if (p + 1 < cols)
                {
                    others = MathF.Max(others, TensorPrimitives.Max<float>(row[(p + 1)..]));
                }
                ps[i] = row[p];
                hs[i] = row[p] >= others ? 1f : 0f;
            }
        });
    }

    public void AddAtPositives(Tensor x, PositivePairing pairing, float value)
    {
        ContrastiveCheck.Pairing(x, pairing);
        var xs = Cpu(x);
        for (var i = 0; i < x.Rows; i++)
        {
            xs[(i * x.Cols) + PositiveColumn(i, x.Rows, pairing)] += value;
        }
    }

    public void RowDot(Tensor a, Tensor b, float alpha, Tensor result)
    {
        Check.SameShape(a, b);
        Check.Length(result.Length, a.Rows, result.Describe());
        Span<float> xs = Cpu(a), ys = Cpu(b), rs = Cpu(result);
        var cols = a.Cols;
        for (var i = 0; i < a.Rows; i++)
        {
            rs[i] = alpha * TensorPrimitives.Dot<float>(xs.Slice(i * cols, cols), ys.Slice(i * cols, cols));
        }
    }

    public void ConcatColumns(Tensor left, Tensor right, Tensor result)
    {
        var (rows, leftCols, rightCols) = ColumnSplit(result, left, right);
        Span<float> ls = Cpu(left), rs = Cpu(right), ys = Cpu(result);
        for (var i = 0; i < rows; i++)
        {
            ls.Slice(i * leftCols, leftCols).CopyTo(ys.Slice(i * (leftCols + rightCols), leftCols));
            rs.Slice(i * rightCols, rightCols).CopyTo(ys.Slice((i * (leftCols + rightCols)) + leftCols, rightCols));
        }
    }

    public void SplitColumns(Tensor source, Tensor left, Tensor right)
    {
        var (rows, leftCols, rightCols) = ColumnSplit(source, left, right);
        Span<float> ls = Cpu(left), rs = Cpu(right), xs = Cpu(source);
        for (var i = 0; i < rows; i++)
        {
            xs.Slice(i * (leftCols + rightCols), leftCols).CopyTo(ls.Slice(i * leftCols, leftCols));
            xs.Slice((i * (leftCols + rightCols)) + leftCols, rightCols).CopyTo(rs.Slice(i * rightCols, rightCols));
        }
    }

    public void AddScaledRows(Tensor x, Tensor rowScale, Tensor y)
    {
        Check.SameShape(x, y);
        Check.Length(rowScale.Length, x.Rows, rowScale.Describe());
        Span<float> xs = Cpu(x), ss = Cpu(rowScale), ys = Cpu(y);
        var cols = x.Cols;
        for (var i = 0; i < x.Rows; i++)
        {
            TensorPrimitives.MultiplyAdd(xs.Slice(i * cols, cols), ss[i], ys.Slice(i * cols, cols), ys.Slice(i * cols, cols));
        }
    }

    /// <summary>As <see cref="L2NormalizeRows"/>: y = x / max(‖x‖, eps).</summary>
    private const float NormEpsilon = 1e-12f;

    private static int Partner(int i, int rows) => i < rows / 2 ? i + (rows / 2) : i - (rows / 2);

    private static int PositiveColumn(int i, int rows, PositivePairing pairing) =>
        pairing == PositivePairing.OtherView ? Partner(i, rows) : 0;

    private static (ArraySegment<float> Zn, ArraySegment<float> Norms, ArraySegment<float> Lse) NtXentSections(Tensor workspace, int rows, int dim)
    {
        var ws = CpuArray(workspace);
        var zLength = rows * dim;
        return (ws.Slice(0, zLength), ws.Slice(zLength, rows), ws.Slice(zLength + rows, rows));
    }

    private static void NormalizeRows(ArraySegment<float> x, ArraySegment<float> y, ArraySegment<float> norms, int rows, int dim)
    {
        for (var i = 0; i < rows; i++)
        {
            var row = x.AsSpan(i * dim, dim);
            norms[i] = TensorPrimitives.Norm<float>(row);
            TensorPrimitives.Multiply(row, 1f / MathF.Max(norms[i], NormEpsilon), y.AsSpan(i * dim, dim));
        }
    }

    /// <summary>ln Σ exp(s_j / tau) over s, shifted by max (entries of −∞ contribute nothing), in double.</summary>
    private static double LogSumExp(ReadOnlySpan<float> s, float max, double inverseTemperature) =>
        (max * inverseTemperature) + Math.Log(SumExp(s, max, inverseTemperature));

    private static double SumExp(ReadOnlySpan<float> s, float max, double inverseTemperature)
    {
        var sum = 0.0;
        foreach (var v in s)
        {
            sum += Math.Exp((v - (double)max) * inverseTemperature);
        }
        return sum;
    }

    private static void AddTo(Span<double> sum, ReadOnlySpan<float> values)
    {
        for (var f = 0; f < sum.Length; f++)
        {
            sum[f] += values[f];
        }
    }

    /// <summary>Gradient through y = x / max(‖x‖, eps): dx = (g − y⟨y, g⟩) / max(‖x‖, eps), the dot in double.</summary>
    private static void ProjectOutOfRow(ReadOnlySpan<double> g, ReadOnlySpan<float> y, float norm, Span<float> dx)
    {
        var dot = 0.0;
        for (var f = 0; f < g.Length; f++)
        {
            dot += y[f] * g[f];
        }
        var inverseNorm = 1.0 / Math.Max(norm, NormEpsilon);
        for (var f = 0; f < g.Length; f++)
        {
            dx[f] = (float)((g[f] - (y[f] * dot)) * inverseNorm);
        }
    }

    /// <summary>stats ← means of the three per-row columns [loss | positive cosine | hit], summed in row order.</summary>
    private static void WriteStats(double[] perRow, int rows, Tensor stats)
    {
        var s = Cpu(stats);
        for (var c = 0; c < ContrastiveCheck.StatsLength; c++)
        {
            var sum = 0.0;
            for (var i = 0; i < rows; i++)
            {
                sum += perRow[(c * rows) + i];
            }
            s[c] = (float)(sum / rows);
        }
    }

    private static (int Rows, int LeftCols, int RightCols) ColumnSplit(Tensor whole, Tensor left, Tensor right)
    {
        if (left.Rows != whole.Rows || right.Rows != whole.Rows || left.Cols + right.Cols != whole.Cols)
        {
            throw new ArgumentException($"{whole.Describe()} is not {left.Describe()} and {right.Describe()} side by side");
        }
        return (whole.Rows, left.Cols, right.Cols);
    }

    private static CpuKeyQueue Own(KeyQueue queue) =>
        queue as CpuKeyQueue ?? throw new ArgumentException($"the key queue lives on {queue.Keys.Device}; the CPU backend needs one it created");

    private sealed class CpuKeyQueue(int capacity, int dim, Tensor keys) : KeyQueue(capacity, dim)
    {
        public override Tensor Keys { get; } = keys;

        public override void Dispose() => Keys.Dispose();
    }
}
