namespace NativeContrast.Backends;

using System.Buffers;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

// The CPU twin of native/masked_infonce.cu: the label-masked InfoNCE over the columns [q | k | queue], row by row.
// A first pass gives every row its log-sum-exp and positive count (fp32 cosines, double sums); the gradient pass then
// weighs every column of row j by w_jc = P_jc − [c ∈ P_j]/|P_j| and, for the q-columns, adds the other rows' weight
// on q_j (w_{c,q_j}, from their log-sum-exps), summed in fp32 chunks that join a double accumulator.
public sealed partial class CpuBackend
{
    /// <summary>The CPU computes the label-masked InfoNCE row by row and needs no workspace.</summary>
    public long LabelMaskedInfoNceWorkspaceLength(int batch, int dim, int queueLength) => 0;

    public void LabelMaskedInfoNce(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, float temperature, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f, LabelMaskedShard? shard = null)
    {
        var (batch, dim, queueLength) = ContrastiveCheck.LabelMaskedInfoNce(q, k, labels, queue, queueLabels, temperature, dq, shard);
        var (offset, rows) = shard is null ? (0, batch) : (shard.Offset, shard.Rows);
        ContrastiveCheck.Workspace(workspace, LabelMaskedInfoNceWorkspaceLength(batch, dim, queueLength));
        ContrastiveCheck.Stats(stats);
        var keys = queue is null ? default : CpuArray(Own(queue).Keys);
        var (ls, qls) = (CpuArray(labels), queueLabels is null ? default : CpuArray(queueLabels));
        var dqs = dq is null ? default : CpuArray(dq);
        var columns = (2 * batch) + queueLength;
        var inverseTemperature = 1.0 / temperature;
        var factor = (double)gradScale / (rows * (double)temperature);

        var vectors = ArrayPool<float>.Shared.Rent((2 * batch * dim) + batch);
        var perRow = ArrayPool<double>.Shared.Rent((3 * rows) + (2 * batch));
        try
        {
            var qn = new ArraySegment<float>(vectors, 0, batch * dim);
            var kn = new ArraySegment<float>(vectors, batch * dim, batch * dim);
            var qNorms = new ArraySegment<float>(vectors, 2 * batch * dim, batch);
            NormalizeRows(CpuArray(q), qn, qNorms, batch, dim);
            for (var i = 0; i < batch; i++)
            {
                var row = CpuArray(k).AsSpan(i * dim, dim);
                TensorPrimitives.Multiply(row, 1f / MathF.Max(TensorPrimitives.Norm<float>(row), NormEpsilon), kn.AsSpan(i * dim, dim));
            }
            // perRow: [loss | cosine with k_i | hit] of this shard's rows, then [log-sum-exp (+∞ without positives) |
            // 1/|P_i| (0 without)] of every row of the batch (this shard's computed here, the others' gathered).
            var (lse, inverseCount) = (new ArraySegment<double>(perRow, 3 * rows, batch), new ArraySegment<double>(perRow, (3 * rows) + batch, batch));
            ReadOnlySpan<float> Column(int c) =>
                c < batch ? qn.AsSpan(c * dim, dim) : c < 2 * batch ? kn.AsSpan((c - batch) * dim, dim) : keys.AsSpan((c - (2 * batch)) * dim, dim);
            float Label(int c) => c < batch ? ls[c] : c < 2 * batch ? ls[c - batch] : qls[c - (2 * batch)];

            CpuParallel.For(rows, 2L * columns * dim, (start, end) =>
            {
                var similarities = ArrayPool<float>.Shared.Rent(columns);
                try
                {
                    for (var local = start; local < end; local++)
                    {
                        var i = offset + local;
                        var s = similarities.AsSpan(0, columns);
                        var qi = qn.AsSpan(i * dim, dim);
                        var label = ls[i];
                        var (count, positiveSum, bestPositive, bestNegative) = (0, 0.0, float.NegativeInfinity, float.NegativeInfinity);
                        for (var c = 0; c < columns; c++)
                        {
                            if (c == i)
                            {
                                s[c] = float.NegativeInfinity;
                                continue;
                            }
                            s[c] = TensorPrimitives.Dot<float>(qi, Column(c));
                            if (IsPositive(label, Label(c)))
                            {
                                count++;
                                positiveSum += s[c];
                                bestPositive = MathF.Max(bestPositive, s[c]);
                            }
                            else
                            {
                                bestNegative = MathF.Max(bestNegative, s[c]);
                            }
                        }
                        var rowLse = LogSumExp(s, TensorPrimitives.Max<float>(s), inverseTemperature);
                        perRow[local] = count > 0 ? rowLse - (positiveSum / count * inverseTemperature) : 0;
                        perRow[rows + local] = TensorPrimitives.Dot<float>(qi, kn.AsSpan(i * dim, dim));
                        perRow[(2 * rows) + local] = count > 0 && bestPositive >= bestNegative ? 1 : 0;
                        lse[i] = count > 0 ? rowLse : double.PositiveInfinity;
                        inverseCount[i] = count > 0 ? 1.0 / count : 0;
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(similarities);
                }
            });
            WriteStats(perRow, rows, stats);
            if (dq is null)
            {
                return;
            }
            if (shard is not null)
            {
                GatherRowStates(shard, lse, inverseCount);
            }

            CpuParallel.For(rows, 2L * columns * dim, (start, end) =>
            {
                var gradient = ArrayPool<double>.Shared.Rent(dim);
                var chunk = ArrayPool<float>.Shared.Rent(dim);
                try
                {
                    for (var local = start; local < end; local++)
                    {
                        var j = offset + local;
                        var g = gradient.AsSpan(0, dim);
                        var sum = chunk.AsSpan(0, dim);
                        var qj = qn.AsSpan(j * dim, dim);
                        var label = ls[j];
                        g.Clear();
                        for (var c0 = 0; c0 < columns; c0 += GradientChunk)
                        {
                            sum.Clear();
                            for (var c = c0; c < Math.Min(columns, c0 + GradientChunk); c++)
                            {
                                if (c == j)
                                {
                                    continue;
                                }
                                var v = Column(c);
                                var logit = TensorPrimitives.Dot<float>(qj, v) * inverseTemperature;
                                var positive = IsPositive(label, Label(c));
                                // Row j's own weight on column c (0 for a row without positives: lse = +∞, 1/|P| = 0) ...
                                var weight = Math.Exp(logit - lse[j]) - (positive ? inverseCount[j] : 0);
                                if (c < batch)
                                {
                                    // ... and row c's weight on the column q_j (s and the mask are symmetric in the q block).
                                    weight += Math.Exp(logit - lse[c]) - (positive ? inverseCount[c] : 0);
                                }
                                TensorPrimitives.MultiplyAdd(v, (float)weight, sum, sum);
                            }
                            AddTo(g, sum);
                        }
                        for (var f = 0; f < dim; f++)
                        {
                            g[f] *= factor;
                        }
                        ProjectOutOfRow(g, qj, qNorms[j], dqs.AsSpan(local * dim, dim));
                    }
                }
                finally
                {
                    ArrayPool<double>.Shared.Return(gradient);
                    ArrayPool<float>.Shared.Return(chunk);
                }
            });
        }
        finally
        {
            ArrayPool<float>.Shared.Return(vectors);
            ArrayPool<double>.Shared.Return(perRow);
        }
    }

    public void EnqueueLabeledKeys(KeyQueue queue, Tensor queueLabels, Tensor keys, Tensor labels)
    {
        _ = Own(queue);
        ContrastiveCheck.LabeledKeys(queue, queueLabels, keys, labels);
        var (count, capacity, position) = (keys.Rows, queue.Capacity, queue.Position);
        Span<float> source = Cpu(labels), destination = Cpu(queueLabels);
        for (var r = Math.Max(0, count - capacity); r < count; r++)
        {
            destination[(int)((position + (long)r) % capacity)] = source[r];
        }
        EnqueueKeys(queue, keys);
    }

    /// <summary>
    /// Every rank's rows' (log-sum-exp, 1/|P|, from |P| sent as a float) into <paramref name="lse"/> and <paramref name="inverseCount"/>, this
    /// shard's included: the log-sum-exp travels as two floats (its fp32 rounding and the remainder), so the weights
    /// exp(s/τ − lse) of the other ranks' rows are those of one process.
    /// </summary>
    private static void GatherRowStates(LabelMaskedShard shard, ArraySegment<double> lse, ArraySegment<double> inverseCount)
    {
        const int stride = LabelMaskedShard.FloatsPerRow;
        var own = Cpu(shard.RowState);
        for (var local = 0; local < shard.Rows; local++)
        {
            var value = lse[shard.Offset + local];
            var high = (float)value;
            own[stride * local] = high;
            own[(stride * local) + 1] = double.IsPositiveInfinity(value) ? 0f : (float)(value - high);
            var inverse = inverseCount[shard.Offset + local];
            own[(stride * local) + 2] = inverse > 0 ? (float)Math.Round(1 / inverse) : 0f;
        }
        shard.GatherAcrossRanks(shard.RowState, shard.AllRowStates);
        var all = Cpu(shard.AllRowStates);
        for (var row = 0; row < lse.Count; row++)
        {
            lse[row] = all[stride * row] + (double)all[(stride * row) + 1];
            var count = all[(stride * row) + 2];
            inverseCount[row] = count > 0 ? 1.0 / count : 0;
        }
    }

    /// <summary>A column is a positive of a row when their labels are equal and not negative (−1: no class).</summary>
    internal static bool IsPositive(float rowLabel, float columnLabel) => rowLabel >= 0f && columnLabel == rowLabel;
}
