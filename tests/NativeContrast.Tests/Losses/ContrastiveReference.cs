namespace NativeContrast.Tests.Losses;

/// <summary>
/// Float64 references for the contrastive losses, written straight from the definitions (full similarity matrix,
/// explicit softmax), independent of the backends' code. Small problems only.
/// </summary>
public static class ContrastiveReference
{
    public sealed record Result(double Loss, double PositiveSimilarity, double Top1, double[] Gradient);

    /// <summary>NT-Xent over z [rows, dim] (row i's positive is (i + rows/2) mod rows) with ∂loss/∂z.</summary>
    public static Result NtXent(double[] z, int rows, int dim, double tau, double gradScale = 1)
    {
        var (zn, norms) = Normalize(z, rows, dim);
        var s = new double[rows, rows];
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < rows; j++)
            {
                s[i, j] = Dot(zn, i, zn, j, dim);
            }
        }
        var lse = new double[rows];
        double loss = 0, positive = 0, top1 = 0;
        for (var i = 0; i < rows; i++)
        {
            var p = Partner(i, rows);
            double max = double.NegativeInfinity, others = double.NegativeInfinity;
            for (var j = 0; j < rows; j++)
            {
                if (j != i)
                {
                    max = Math.Max(max, s[i, j] / tau);
                    others = j == p ? others : Math.Max(others, s[i, j]);
                }
            }
            double sum = 0;
            for (var j = 0; j < rows; j++)
            {
                sum += j == i ? 0 : Math.Exp((s[i, j] / tau) - max);
            }
            lse[i] = max + Math.Log(sum);
            loss += lse[i] - (s[i, p] / tau);
            positive += s[i, p];
            top1 += s[i, p] >= others ? 1 : 0;
        }

        // dL/dzn_i = 1/(rows tau) [sum_{j != i} (P_ij + P_ji) zn_j - 2 zn_p(i)]
        var gn = new double[rows * dim];
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < rows; j++)
            {
                if (j == i)
                {
                    continue;
                }
                var w = Math.Exp((s[i, j] / tau) - lse[i]) + Math.Exp((s[j, i] / tau) - lse[j]);
                for (var f = 0; f < dim; f++)
                {
                    gn[(i * dim) + f] += w * zn[(j * dim) + f];
                }
            }
            var p = Partner(i, rows);
            for (var f = 0; f < dim; f++)
            {
                gn[(i * dim) + f] = gradScale * (gn[(i * dim) + f] - (2 * zn[(p * dim) + f])) / (rows * tau);
            }
        }
        return new Result(loss / rows, positive / rows, top1 / rows, NormalizeBackward(zn, norms, gn, rows, dim));
    }

    /// <summary>InfoNCE of (q, k) against queue [queueLength, dim] (normalised here too), with ∂loss/∂q.</summary>
    public static Result InfoNce(double[] q, double[] k, double[] queue, int batch, int dim, int queueLength, double tau, double gradScale = 1)
    {
        var (qn, qNorms) = Normalize(q, batch, dim);
        var (kn, _) = Normalize(k, batch, dim);
        var (keys, _) = Normalize(queue, queueLength, dim);
        double loss = 0, positive = 0, top1 = 0;
        var gn = new double[batch * dim];
        var logits = new double[queueLength + 1];
        for (var i = 0; i < batch; i++)
        {
            logits[0] = Dot(qn, i, kn, i, dim) / tau;
            var queueMax = double.NegativeInfinity;
            for (var j = 0; j < queueLength; j++)
            {
                logits[j + 1] = Dot(qn, i, keys, j, dim) / tau;
                queueMax = Math.Max(queueMax, logits[j + 1]);
            }
            var max = Math.Max(queueMax, logits[0]);
            var sum = logits.Sum(l => Math.Exp(l - max));
            var lse = max + Math.Log(sum);
            loss += lse - logits[0];
            positive += logits[0] * tau;
            top1 += logits[0] >= queueMax ? 1 : 0;
            for (var f = 0; f < dim; f++)
            {
                var g = (Math.Exp(logits[0] - lse) - 1) * kn[(i * dim) + f];
                for (var j = 0; j < queueLength; j++)
                {
                    g += Math.Exp(logits[j + 1] - lse) * keys[(j * dim) + f];
                }
                gn[(i * dim) + f] = gradScale * g / (batch * tau);
            }
        }
        return new Result(loss / batch, positive / batch, top1 / batch, NormalizeBackward(qn, qNorms, gn, batch, dim));
    }

    /// <summary>
    /// The margin loss of Hadsell et al. over rows u [rows, dim] taken as given (the op's input is already normalised),
    /// with ∂loss/∂u: loss = (1/R) Σ_i [(1 − c_ip) + (1/(R − 2)) Σ_{j ∉ {i, p}} ½max(0, m − d_ij)²],
    /// d_ij = sqrt(max(2 − 2c_ij, 1e-12)); the gradient is taken term by term, both orderings of every pair.
    /// </summary>
    public static Result Margin(double[] u, int rows, int dim, double margin, double gradScale = 1)
    {
        var negatives = rows - 2;
        double loss = 0, positive = 0, top1 = 0;
        var gradient = new double[rows * dim];
        void Add(int row, int other, double weight)
        {
            for (var f = 0; f < dim; f++)
            {
                gradient[(row * dim) + f] += gradScale * weight * u[(other * dim) + f];
            }
        }
        for (var i = 0; i < rows; i++)
        {
            var p = Partner(i, rows);
            var cp = Dot(u, i, u, p, dim);
            loss += 1 - cp;
            positive += cp;
            // d(1 − c_ip)/du_i = −u_p and d(1 − c_ip)/du_p = −u_i, each over R.
            Add(i, p, -1.0 / rows);
            Add(p, i, -1.0 / rows);
            var others = double.NegativeInfinity;
            for (var j = 0; j < rows; j++)
            {
                if (j == i || j == p)
                {
                    continue;
                }
                var c = Dot(u, i, u, j, dim);
                others = Math.Max(others, c);
                var squared = 2 - (2 * c);
                var d = Math.Sqrt(Math.Max(squared, 1e-12));
                if (d >= margin)
                {
                    continue;
                }
                loss += 0.5 * (margin - d) * (margin - d) / negatives;
                // ∂(½(m − d)²)/∂c = (m − d)/d while the clamp is inactive; ∂c/∂u_i = u_j, ∂c/∂u_j = u_i.
                var weight = squared < 1e-12 ? 0 : (margin - d) / d / (rows * (double)negatives);
                Add(i, j, weight);
                Add(j, i, weight);
            }
            top1 += cp >= others ? 1 : 0;
        }
        return new Result(loss / rows, positive / rows, top1 / rows, gradient);
    }

    /// <summary><see cref="Margin"/> of the normalised rows of z, with the gradient mapped back to z.</summary>
    public static Result MarginOfNormalized(double[] z, int rows, int dim, double margin)
    {
        var (u, norms) = Normalize(z, rows, dim);
        var result = Margin(u, rows, dim, margin);
        return result with { Gradient = NormalizeBackward(u, norms, result.Gradient, rows, dim) };
    }

    /// <summary>
    /// PiCO's SupConLoss (temperature = base temperature) over features F = cat(qn, kn, queue) [2B + K, dim] (all
    /// normalised here) with the queries' labels repeated for k and the queue's own labels: anchor rows are F[0, B),
    /// the self column is dropped from the softmax, positives are the other columns with the anchor's label (a negative
    /// label is never a positive; a row without positives adds 0). The gradient is taken the autograd way, through the
    /// logits to every row of F, and ∂loss/∂q is what reaches F[0, B) (k and the queue are constants), mapped back
    /// through the normalisation. Top-1: the most similar column is a positive (ties count as hits).
    /// </summary>
    public static Result LabelMaskedInfoNce(double[] q, double[] k, float[] labels, double[] queue, float[] queueLabels, int batch, int dim, int queueLength, double tau, double gradScale = 1)
    {
        var (qn, qNorms) = Normalize(q, batch, dim);
        var (kn, _) = Normalize(k, batch, dim);
        var (keys, _) = Normalize(queue, queueLength, dim);
        var columns = (2 * batch) + queueLength;
        var features = qn.Concat(kn).Concat(keys).ToArray();
        var columnLabels = labels.Concat(labels).Concat(queueLabels).ToArray();
        double loss = 0, positive = 0, top1 = 0;
        var dFeatures = new double[columns * dim];
        var logits = new double[columns];
        for (var i = 0; i < batch; i++)
        {
            positive += Dot(qn, i, kn, i, dim);
            var mask = new bool[columns];
            for (var c = 0; c < columns; c++)
            {
                logits[c] = Dot(features, i, features, c, dim) / tau;
                mask[c] = c != i && labels[i] >= 0 && columnLabels[c] == labels[i];
            }
            var count = mask.Count(m => m);
            if (count == 0)
            {
                continue;
            }
            var max = Enumerable.Range(0, columns).Where(c => c != i).Max(c => logits[c]);
            var lse = max + Math.Log(Enumerable.Range(0, columns).Where(c => c != i).Sum(c => Math.Exp(logits[c] - max)));
            double meanLogProb = 0, bestPositive = double.NegativeInfinity, bestNegative = double.NegativeInfinity;
            for (var c = 0; c < columns; c++)
            {
                if (c == i)
                {
                    continue;
                }
                if (mask[c])
                {
                    meanLogProb += (logits[c] - lse) / count;
                    bestPositive = Math.Max(bestPositive, logits[c]);
                }
                else
                {
                    bestNegative = Math.Max(bestNegative, logits[c]);
                }
            }
            loss -= meanLogProb;
            top1 += bestPositive >= bestNegative ? 1 : 0;

            // ∂loss_i/∂logit_c = softmax_c − mask_c/|P|; logit_c = F_i·F_c / tau feeds both F_i and F_c.
            for (var c = 0; c < columns; c++)
            {
                if (c == i)
                {
                    continue;
                }
                var dLogit = gradScale * (Math.Exp(logits[c] - lse) - (mask[c] ? 1.0 / count : 0)) / (batch * tau);
                for (var f = 0; f < dim; f++)
                {
                    dFeatures[(i * dim) + f] += dLogit * features[(c * dim) + f];
                    dFeatures[(c * dim) + f] += dLogit * features[(i * dim) + f];
                }
            }
        }
        var dqn = dFeatures.AsSpan(0, batch * dim).ToArray();
        return new Result(loss / batch, positive / batch, top1 / batch, NormalizeBackward(qn, qNorms, dqn, batch, dim));
    }

    public static double[] ToDouble(float[] values) => Array.ConvertAll(values, v => (double)v);

    public static float[] ToFloat(double[] values) => Array.ConvertAll(values, v => (float)v);

    private static int Partner(int i, int rows) => (i + (rows / 2)) % rows;

    private static double Dot(double[] a, int i, double[] b, int j, int dim)
    {
        double sum = 0;
        for (var f = 0; f < dim; f++)
        {
            sum += a[(i * dim) + f] * b[(j * dim) + f];
        }
        return sum;
    }

    private static (double[] Normalized, double[] Norms) Normalize(double[] x, int rows, int dim)
    {
        var y = new double[x.Length];
        var norms = new double[rows];
        for (var i = 0; i < rows; i++)
        {
            norms[i] = Math.Sqrt(Dot(x, i, x, i, dim));
            for (var f = 0; f < dim; f++)
            {
                y[(i * dim) + f] = x[(i * dim) + f] / Math.Max(norms[i], 1e-12);
            }
        }
        return (y, norms);
    }

    private static double[] NormalizeBackward(double[] y, double[] norms, double[] dy, int rows, int dim)
    {
        var dx = new double[dy.Length];
        for (var i = 0; i < rows; i++)
        {
            var projection = Dot(y, i, dy, i, dim);
            for (var f = 0; f < dim; f++)
            {
                dx[(i * dim) + f] = (dy[(i * dim) + f] - (y[(i * dim) + f] * projection)) / Math.Max(norms[i], 1e-12);
            }
        }
        return dx;
    }
}
