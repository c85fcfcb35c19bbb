namespace NativeContrast.Backends;

using System.Buffers;
using System.Numerics;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using NativeContrast.Tensors;

// The CPU twin of native/masked_infonce.cu: the label-masked InfoNCE over the columns [q | k | queue]. The cosines are
// two GEMMs (OpenBLAS), anchors · [qn; kn]ᵀ and anchors · queueᵀ, as PiCO computes them in PyTorch; each row then gets
// its log-sum-exp and positive count (double sums). The gradient is two more GEMMs, W · [qn; kn] and W · queue, with
// the weights w_jc = P_jc − [c ∈ P_j]/|P_j| plus, on the q-columns, the other rows' weight on q_j (w_{c,q_j}, from
// their log-sum-exps).
public sealed partial class CpuBackend
{
    /// <summary>
    /// Workspace: the normalised [q; k] [2·batch, dim] and their norms [2·batch], then per anchor its cosines with
    /// [q; k] [batch, 2·batch] and with the queue [batch, queue] (which become the gradient's weights), and the
    /// weighted column sums [batch, dim].
    /// </summary>
    public long LabelMaskedInfoNceWorkspaceLength(int batch, int dim, int queueLength) =>
        (2L * batch * dim) + (2L * batch) + ((long)batch * ((2L * batch) + queueLength + dim));

    public void LabelMaskedInfoNce(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, float temperature, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f, LabelMaskedShard? shard = null)
    {
        var (batch, dim, queueLength) = ContrastiveCheck.LabelMaskedInfoNce(q, k, labels, queue, queueLabels, temperature, dq, shard);
        var (offset, rows) = shard is null ? (0, batch) : (shard.Offset, shard.Rows);
        ContrastiveCheck.Workspace(workspace, LabelMaskedInfoNceWorkspaceLength(batch, dim, queueLength));
        ContrastiveCheck.Stats(stats);
        var keys = queue is null ? default : CpuArray(Own(queue).Keys);
        var (ls, qls) = (CpuArray(labels), queueLabels is null ? default : CpuArray(queueLabels));
        var dqs = dq is null ? default : CpuArray(dq);
        var space = CpuArray(workspace);
        var pairs = 2 * batch;
        var columns = pairs + queueLength;
        var qk = space.Slice(0, pairs * dim);
        var norms = space.Slice(pairs * dim, pairs);
        var pairCosines = space.Slice((pairs * dim) + pairs, rows * pairs);
        var queueCosines = space.Slice((pairs * dim) + pairs + (rows * pairs), rows * queueLength);
        var weightedSums = space.Slice((pairs * dim) + pairs + (rows * (pairs + queueLength)), rows * dim);
        NormalizeRows(CpuArray(q), qk.Slice(0, batch * dim), norms.Slice(0, batch), batch, dim);
        NormalizeRows(CpuArray(k), qk.Slice(batch * dim, batch * dim), norms.Slice(batch, batch), batch, dim);
        var anchors = qk.Slice(offset * dim, rows * dim);
        GemmAny(anchors, false, qk, true, pairCosines, rows, dim, pairs, 1f, 0f);
        if (queueLength > 0)
        {
            GemmAny(anchors, false, keys, true, queueCosines, rows, dim, queueLength, 1f, 0f);
        }
        var inverseTemperature = 1.0 / temperature;
        var factor = (double)gradScale / (rows * (double)temperature);
        float Label(int c) => c < batch ? ls[c] : ls[c - batch];

        // perRow: [loss | cosine with k_i | hit] of this shard's rows, then [log-sum-exp (+∞ without positives) |
        // 1/|P_i| (0 without)] of every row of the batch (this shard's computed here, the others' gathered).
        var perRow = ArrayPool<double>.Shared.Rent((3 * rows) + (2 * batch));
        try
        {
            var (lse, inverseCount) = (new ArraySegment<double>(perRow, 3 * rows, batch), new ArraySegment<double>(perRow, (3 * rows) + batch, batch));
            CpuParallel.For(rows, 4L * columns, (start, end) =>
            {
                for (var local = start; local < end; local++)
                {
                    var i = offset + local;
                    var pairRow = pairCosines.AsSpan(local * pairs, pairs);
                    var queueRow = queueCosines.AsSpan(local * queueLength, queueLength);
                    var label = ls[i];
                    var scan = new PositiveScan(label);
                    for (var c = 0; c < pairs; c++)
                    {
                        if (c != i)
                        {
                            scan.Visit(pairRow[c], Label(c));
                        }
                    }
                    scan.VisitAll(queueRow, qls);
                    var (count, positiveSum, bestPositive, bestNegative) = (scan.Count, scan.PositiveSum, scan.BestPositive, scan.BestNegative);
                    var max = MathF.Max(bestPositive, bestNegative);
                    // The q-block and k-block terms in double; the queue's e_c = exp((s_c − max)/τ) vectorised in fp32
                    // (each within an ulp or two), summed in double, in place of the queue's cosines (which become
                    // the weights P_c − [c ∈ P]/|P| when a gradient is asked for).
                    var sum = 0.0;
                    for (var c = 0; c < pairs; c++)
                    {
                        sum += c == i ? 0 : Math.Exp((pairRow[c] - (double)max) * inverseTemperature);
                    }
                    TensorPrimitives.Subtract(queueRow, max, queueRow);
                    TensorPrimitives.Multiply(queueRow, (float)inverseTemperature, queueRow);
                    TensorPrimitives.Exp(queueRow, queueRow);
                    foreach (var e in queueRow)
                    {
                        sum += e;
                    }
                    var rowLse = (max * inverseTemperature) + Math.Log(sum);
                    perRow[local] = count > 0 ? rowLse - (positiveSum / count * inverseTemperature) : 0;
                    perRow[rows + local] = TensorPrimitives.Dot<float>(qk.AsSpan(i * dim, dim), qk.AsSpan((batch + i) * dim, dim));
                    perRow[(2 * rows) + local] = count > 0 && bestPositive >= bestNegative ? 1 : 0;
                    lse[i] = count > 0 ? rowLse : double.PositiveInfinity;
                    inverseCount[i] = count > 0 ? 1.0 / count : 0;
                    if (dq is not null)
                    {
                        // Row i's weights on the queue (all 0 for a row without positives: its loss is 0).
                        TensorPrimitives.Multiply(queueRow, count > 0 ? (float)(1.0 / sum) : 0f, queueRow);
                        SubtractAtPositives(queueRow, qls, label, (float)inverseCount[i]);
                    }
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

            CpuParallel.For(rows, 4L * pairs, (start, end) =>
            {
                for (var local = start; local < end; local++)
                {
                    var j = offset + local;
                    var pairRow = pairCosines.AsSpan(local * pairs, pairs);
                    var label = ls[j];
                    for (var c = 0; c < pairs; c++)
                    {
                        if (c == j)
                        {
                            pairRow[c] = 0f;
                            continue;
                        }
                        var logit = pairRow[c] * inverseTemperature;
                        var positive = IsPositive(label, Label(c));
                        // Row j's own weight on column c (0 for a row without positives: lse = +∞, 1/|P| = 0) ...
                        var weight = Math.Exp(logit - lse[j]) - (positive ? inverseCount[j] : 0);
                        if (c < batch)
                        {
                            // ... and row c's weight on the column q_j (s and the mask are symmetric in the q block).
                            weight += Math.Exp(logit - lse[c]) - (positive ? inverseCount[c] : 0);
                        }
                        pairRow[c] = (float)weight;
                    }
                }
            });
            // Σ_c w_jc v_c for every anchor at once: the [q; k] columns, then the queue's added in.
            GemmAny(pairCosines, false, qk, false, weightedSums, rows, pairs, dim, 1f, 0f);
            if (queueLength > 0)
            {
                GemmAny(queueCosines, false, keys, false, weightedSums, rows, queueLength, dim, 1f, 1f);
            }
            CpuParallel.For(rows, 4L * dim, (start, end) =>
            {
                Span<double> g = stackalloc double[dim];
                for (var local = start; local < end; local++)
                {
                    var j = offset + local;
                    var sums = weightedSums.AsSpan(local * dim, dim);
                    for (var f = 0; f < dim; f++)
                    {
                        g[f] = factor * sums[f];
                    }
                    ProjectOutOfRow(g, qk.AsSpan(j * dim, dim), norms[j], dqs.AsSpan(local * dim, dim));
                }
            });
        }
        finally
        {
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

    /// <summary>e ← e − weight at the columns whose label is a positive of <paramref name="rowLabel"/>, vectorised.</summary>
    private static void SubtractAtPositives(Span<float> e, ReadOnlySpan<float> columnLabels, float rowLabel, float weight)
    {
        if (rowLabel < 0f || weight == 0f)
        {
            return;
        }
        var (labelVector, weightVector) = (new Vector<float>(rowLabel), new Vector<float>(weight));
        var c = 0;
        for (; c <= e.Length - Vector<float>.Count; c += Vector<float>.Count)
        {
            var values = new Vector<float>(e[c..]);
            var positive = Vector.Equals(new Vector<float>(columnLabels[c..]), labelVector);
            (values - Vector.ConditionalSelect(positive, weightVector, Vector<float>.Zero)).CopyTo(e[c..]);
        }
        for (; c < e.Length; c++)
        {
            e[c] -= columnLabels[c] == rowLabel ? weight : 0f;
        }
    }

    /// <summary>A row's positives among the columns it visits: their count, the sum and maximum of their cosines, and the negatives' maximum.</summary>
    private struct PositiveScan(float rowLabel)
    {
        public int Count;
        public double PositiveSum;
        public float BestPositive = float.NegativeInfinity;
        public float BestNegative = float.NegativeInfinity;

        public void Visit(float s, float columnLabel)
        {
            if (IsPositive(rowLabel, columnLabel))
            {
                Count++;
                PositiveSum += s;
                BestPositive = MathF.Max(BestPositive, s);
            }
            else
            {
                BestNegative = MathF.Max(BestNegative, s);
            }
        }

        /// <summary><see cref="Visit"/> of every column, vectorised (NaN as the label of a row without a class matches none).</summary>
        public void VisitAll(ReadOnlySpan<float> s, ReadOnlySpan<float> columnLabels)
        {
            var labelVector = new Vector<float>(rowLabel >= 0f ? rowLabel : float.NaN);
            var lowest = new Vector<float>(float.NegativeInfinity);
            var (sums, counts, positives, negatives) = (Vector<float>.Zero, Vector<int>.Zero, lowest, lowest);
            var c = 0;
            for (; c <= s.Length - Vector<float>.Count; c += Vector<float>.Count)
            {
                var values = new Vector<float>(s[c..]);
                var positive = Vector.Equals(new Vector<float>(columnLabels[c..]), labelVector);
                sums += Vector.ConditionalSelect(positive, values, Vector<float>.Zero);
                counts -= positive;
                positives = Vector.Max(positives, Vector.ConditionalSelect(positive, values, lowest));
                negatives = Vector.Max(negatives, Vector.ConditionalSelect(positive, lowest, values));
            }
            for (var lane = 0; lane < Vector<float>.Count; lane++)
            {
                PositiveSum += sums[lane];
                Count += counts[lane];
                BestPositive = MathF.Max(BestPositive, positives[lane]);
                BestNegative = MathF.Max(BestNegative, negatives[lane]);
            }
            for (; c < s.Length; c++)
            {
                Visit(s[c], columnLabels[c]);
            }
        }
    }

    /// <summary>A column is a positive of a row when their labels are equal and not negative (−1: no class).</summary>
    internal static bool IsPositive(float rowLabel, float columnLabel) => rowLabel >= 0f && columnLabel == rowLabel;
}
