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

    public void LabelMaskedInfoNce(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, float temperature, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f)
    {
        var (batch, dim, queueLength) = ContrastiveCheck.LabelMaskedInfoNce(q, k, labels, queue, queueLabels, temperature, dq);
        ContrastiveCheck.Workspace(workspace, LabelMaskedInfoNceWorkspaceLength(batch, dim, queueLength));
        ContrastiveCheck.Stats(stats);
        var keys = queue is null ? default : CpuArray(Own(queue).Keys);
        var (ls, qls) = (CpuArray(labels), queueLabels is null ? default : CpuArray(queueLabels));
        var dqs = dq is null ? default : CpuArray(dq);
        var columns = (2 * batch) + queueLength;
        var inverseTemperature = 1.0 / temperature;
        var factor = (double)gradScale / (batch * (double)temperature);

        var vectors = ArrayPool<float>.Shared.Rent((2 * batch * dim) + batch);
        var perRow = ArrayPool<double>.Shared.Rent(5 * batch);
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
            // perRow: [loss | cosine with k_i | hit | log-sum-exp (+∞ without positives) | 1/|P_i| (0 without)].
            var (lse, inverseCount) = (new ArraySegment<double>(perRow, 3 * batch, batch), new ArraySegment<double>(perRow, 4 * batch, batch));
            ReadOnlySpan<float> Column(int c) =>
                c < batch ? qn.AsSpan(c * dim, dim) : c < 2 * batch ? kn.AsSpan((c - batch) * dim, dim) : keys.AsSpan((c - (2 * batch)) * dim, dim);
            float Label(int c) => c < batch ? ls[c] : c < 2 * batch ? ls[c - batch] : qls[c - (2 * batch)];

            CpuParallel.For(batch, 2L * columns * dim, (start, end) =>
            {
                var similarities = ArrayPool<float>.Shared.Rent(columns);
                try
                {
                    for (var i = start; i < end; i++)
                    {
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
                        perRow[i] = count > 0 ? rowLse - (positiveSum / count * inverseTemperature) : 0;
                        perRow[batch + i] = TensorPrimitives.Dot<float>(qi, kn.AsSpan(i * dim, dim));
                        perRow[(2 * batch) + i] = count > 0 && bestPositive >= bestNegative ? 1 : 0;
                        lse[i] = count > 0 ? rowLse : double.PositiveInfinity;
                        inverseCount[i] = count > 0 ? 1.0 / count : 0;
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(similarities);
                }
            });
            WriteStats(perRow, batch, stats);
            if (dq is null)
            {
                return;
            }

            CpuParallel.For(batch, 2L * columns * dim, (start, end) =>
            {
                var gradient = ArrayPool<double>.Shared.Rent(dim);
                var chunk = ArrayPool<float>.Shared.Rent(dim);
                try
                {
                    for (var j = start; j < end; j++)
                    {
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
                        ProjectOutOfRow(g, qj, qNorms[j], dqs.AsSpan(j * dim, dim));
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

    /// <summary>A column is a positive of a row when their labels are equal and not negative (−1: no class).</summary>
    internal static bool IsPositive(float rowLabel, float columnLabel) => rowLabel >= 0f && columnLabel == rowLabel;
}
