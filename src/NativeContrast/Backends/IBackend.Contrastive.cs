namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>Where the positive of each row sits in a logits matrix (used by the unfused compositions).</summary>
public enum PositivePairing
{
    /// <summary>NT-Xent's two views: the positive of row i is column (i + rows/2) mod rows.</summary>
    OtherView,

    /// <summary>InfoNCE's [positive | queue] logits: the positive is column 0.</summary>
    FirstColumn,
}

/// <summary>
/// The rows of a gathered z [ranks · 2B, dim] that one rank owns in a data-parallel NT-Xent: [Offset, Offset + Rows)
/// hold that rank's views a then b, so their positives pair inside the shard (row Offset + i with Offset + (i + Rows/2)
/// mod Rows), while every row of z is a column (a negative) of every anchor.
/// </summary>
public readonly record struct NtXentShard(int Offset, int Rows);

/// <summary>
/// A rank's anchors of a label-masked InfoNCE whose batch spans every rank (see <see cref="IBackend.LabelMaskedInfoNce"/>):
/// rows [<see cref="Offset"/>, Offset + <see cref="Rows"/>) of the gathered batch. <see cref="RowState"/> [3·Rows] and
/// <see cref="AllRowStates"/> [3·batch] carry the anchors' (log-sum-exp in two floats, positive count) to every rank
/// through <see cref="GatherAcrossRanks"/> (an all-gather in rank order).
/// </summary>
public sealed record LabelMaskedShard(int Offset, int Rows, Tensor RowState, Tensor AllRowStates, Action<Tensor, Tensor> GatherAcrossRanks)
{
    public const int FloatsPerRow = 3;
}

/// <summary>
/// Contrastive losses. The fused ops never materialise a rows × columns similarity matrix: they use a workspace
/// of O(rows · dim) floats that the caller allocates once (length from the *WorkspaceLength methods) and reuses.
/// Statistics land in a device tensor of three floats [loss, mean positive cosine, top-1 accuracy of the positive],
/// so no op waits for the device. Cosines are taken between L2-normalised rows; logits are cosine / temperature.
/// </summary>
public partial interface IBackend
{
    /// <summary>Floats of workspace that <see cref="NtXentForward"/> and <see cref="NtXentBackward"/> need for z [rows, dim] (and a shard of its rows).</summary>
    long NtXentWorkspaceLength(int rows, int dim, MatmulPrecision precision, NtXentShard? shard = null);

    /// <summary>
    /// NT-Xent (SimCLR) over z [2N, dim]: rows i and (i + N) mod 2N are the two views of one sample. Each row's
    /// cross-entropy runs over the 2N − 1 other rows; stats ← [mean loss, mean positive cosine, top-1 accuracy].
    /// The workspace keeps what <see cref="NtXentBackward"/> needs (normalised rows, per-row log-sum-exps).
    /// With a <paramref name="shard"/> (data parallelism: z holds every rank's rows, gathered), only the shard's rows are
    /// anchors, each still against every other row of z: stats are over the shard's rows, and only their log-sum-exps
    /// are written (entries [Offset, Offset + Rows) of <see cref="NtXentLogSumExps"/>); the backward needs the others
    /// too, gathered from the ranks that own them.
    /// </summary>
    void NtXentForward(Tensor z, float temperature, MatmulPrecision precision, Tensor workspace, Tensor stats, NtXentShard? shard = null);

    /// <summary>
    /// dz ← gradScale · ∂loss/∂z, after <see cref="NtXentForward"/> on the same z, workspace and precision. dz must not
    /// overlap z: each row's gradient reads its partner's row of z, which another thread may already have overwritten.
    /// With a <paramref name="shard"/>, dz [shard.Rows, dim] receives the shard's rows of gradScale · ∂(Σ_r L_r)/∂z,
    /// where L_r is the mean loss over shard r's rows: the gradient every rank's rows send to this shard, so that the
    /// mean of the ranks' parameter gradients is that of the global loss (the mean of the L_r). Every entry of
    /// <see cref="NtXentLogSumExps"/> must hold its row's value (S is symmetric, so row k's column terms
    /// exp(s_jk/τ − lse_j) need only the log-sum-exps of the other rows, not a second pass over them).
    /// </summary>
    void NtXentBackward(Tensor z, float temperature, MatmulPrecision precision, Tensor workspace, Tensor dz, float gradScale = 1f, NtXentShard? shard = null);

    /// <summary>
    /// The per-row log-sum-exps <see cref="NtXentForward"/> keeps in <paramref name="workspace"/> for z [rows, dim]: a
    /// view of <paramref name="rows"/> floats in the backend's own units, for a sharded loss to gather across ranks.
    /// </summary>
    Tensor NtXentLogSumExps(Tensor workspace, int rows, int dim, MatmulPrecision precision);

    /// <summary>A ring buffer of <paramref name="capacity"/> L2-normalised keys of <paramref name="dim"/> floats, zero-filled.</summary>
    KeyQueue CreateKeyQueue(int capacity, int dim);

    /// <summary>
    /// Writes the rows of <paramref name="keys"/>, L2-normalised, over the oldest entries of the queue (wrapping
    /// around) and advances its position on the host. With more keys than capacity only the last ones are kept.
    /// </summary>
    void EnqueueKeys(KeyQueue queue, Tensor keys);

    /// <summary>Floats of workspace that <see cref="InfoNce"/> needs.</summary>
    long InfoNceWorkspaceLength(int batch, int dim, int queueLength, MatmulPrecision precision);

    /// <summary>
    /// InfoNCE against a queue (MoCo v2, PiCO): per row the cross-entropy of logits [qn·kn, qn·queueᵀ] / temperature
    /// with the positive first (q and k are normalised here; the queue holds normalised keys). stats ← [mean loss,
    /// mean positive cosine, top-1 accuracy]; when <paramref name="dq"/> is given it receives gradScale · ∂loss/∂q,
    /// computed in the same sweep over the queue. k receives no gradient (it comes from the momentum encoder).
    /// </summary>
    void InfoNce(Tensor q, Tensor k, KeyQueue queue, float temperature, MatmulPrecision precision, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f);

    /// <summary>Floats of workspace that <see cref="LabelMaskedInfoNce"/> needs (queueLength 0 without a queue).</summary>
    long LabelMaskedInfoNceWorkspaceLength(int batch, int dim, int queueLength);

    /// <summary>
    /// The supervised-contrastive form of InfoNCE with a queue, as PiCO (Wang et al., 2022) uses it: its SupConLoss over
    /// features cat(q, k, queue) with temperature = base temperature. q and k [B, dim] are L2-normalised here, as
    /// <see cref="InfoNce"/> does (the queue holds normalised keys); <paramref name="labels"/> [B] and
    /// <paramref name="queueLabels"/> [K] hold class labels as floats. Anchor row i sees the columns q_j (j ≠ i), every
    /// k_j (k_i included) and the K queue rows; a column is a positive when its label equals labels[i] and that label is
    /// not negative (−1 marks queue slots never written, and a query with a negative label has no positives). With
    /// s the cosines and P_i the positives of row i:
    /// <code>
    /// loss_i = −(1/|P_i|) Σ_{p ∈ P_i} [ s_ip/τ − log Σ_{c ≠ i} exp(s_ic/τ) ]     (0 for a row with no positive)
    /// loss   = (1/B) Σ_i loss_i
    /// ∂loss/∂qn_j = (1/(Bτ)) [ Σ_c w_jc v_c + Σ_{i ≠ j} w_{i,q_j} qn_i ],   w_ic = softmax_i(s_i·/τ)_c − [c ∈ P_i]/|P_i|
    /// </code>
    /// so q receives gradient both as anchors and as the q-columns of the other anchors; k and the queue receive none.
    /// PiCO's mask divides by |P_i| = 0 (NaN) where this op defines 0, and adds 1e-12 inside its log, which this op
    /// leaves out. stats ← [mean loss, mean cosine of q_i with k_i (as <see cref="InfoNce"/> reports), top-1: the
    /// fraction of rows whose most similar column is a positive (ties count as hits; never for a row with no positive)],
    /// all over the B rows. When <paramref name="dq"/> is given it is overwritten with gradScale · ∂loss/∂q. Without a
    /// queue pass null for both <paramref name="queue"/> and <paramref name="queueLabels"/>.
    /// </summary>
    /// <para>
    /// With <paramref name="shard"/> (data-parallel): q, k and labels hold every rank's rows, in rank order; this rank's
    /// anchors are rows [Offset, Offset + Rows), its loss and statistics their mean, and dq [Rows, dim] receives
    /// gradScale · ∂/∂q of the sum of every rank's loss with respect to its rows (as anchors, and as the q-columns of every
    /// rank's anchors), so that the ranks' mean gradient is the global batch's. The q-column term needs every anchor's
    /// log-sum-exp and positive count: 3 floats per row, all-gathered between the two passes, only when dq is given.
    /// </para>
    void LabelMaskedInfoNce(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, float temperature, Tensor workspace, Tensor stats, Tensor? dq, float gradScale = 1f, LabelMaskedShard? shard = null);

    /// <summary>
    /// <see cref="EnqueueKeys"/> with a label per key: the keys (normalised) and <paramref name="labels"/> [count] are
    /// written at the same wrapped rows of the queue and of <paramref name="queueLabels"/> [capacity], and the position
    /// advances once. With more keys than capacity only the last ones, and their labels, are kept.
    /// </summary>
    void EnqueueLabeledKeys(KeyQueue queue, Tensor queueLabels, Tensor keys, Tensor labels);

    /// <summary>Floats of workspace that <see cref="MarginLoss"/> needs for u [rows, dim].</summary>
    long MarginLossWorkspaceLength(int rows, int dim);

    /// <summary>
    /// The margin (pairwise) contrastive loss of Hadsell, Chopra and LeCun (2006) over u [R, dim], R = 2N, whose rows
    /// are already L2-normalised (normalise with <see cref="L2NormalizeRows"/>, back-propagate du with
    /// <see cref="L2NormalizeRowsBackward"/>; the op takes the rows as given and does not check their norms); rows i and
    /// p(i) = (i + N) mod R are the two views of one sample. The workspace holds <see cref="MarginLossWorkspaceLength"/>
    /// floats. With
    /// c_ij = u_i·u_j and d_ij = sqrt(max(2 − 2c_ij, 1e-12)), the Euclidean distance of unit vectors:
    /// <code>
    /// loss = (1/R) Σ_i [ ½d²_{i,p(i)} + (1/(R − 2)) Σ_{j ∉ {i, p(i)}} ½max(0, margin − d_ij)² ],  ½d²_{i,p(i)} = 1 − c_{i,p(i)}
    /// ∂loss/∂u_i = −(2/R)·u_{p(i)} + (2/(R(R − 2))) Σ_{j ∉ {i, p(i)}, d_ij &lt; margin} ((margin − d_ij)/d_ij)·u_j
    /// </code>
    /// Each pair appears in both of its rows' sums, hence the factors 2. With R = 2 there are no negatives and their
    /// term is 0. Where the clamp is active (2 − 2c_ij &lt; 1e-12) d_ij is constant, so that pair adds no gradient.
    /// stats ← [mean loss, mean positive cosine, top-1 accuracy], a row scoring a hit when no other row is more similar
    /// to it than p(i) (ties count as hits); when <paramref name="du"/> is given it receives gradScale · ∂loss/∂u, in
    /// the same sweep. du must not overlap u: each row's gradient reads every other row of u.
    /// </summary>
    void MarginLoss(Tensor u, float margin, Tensor workspace, Tensor stats, Tensor? du, float gradScale = 1f);

    // Glue for the unfused compositions (Losses/Unfused*.cs): each is one small kernel or loop.

    /// <summary>logits[i, i] ← −∞ (removes self-similarity from a softmax).</summary>
    void MaskSelfSimilarity(Tensor logits);

    /// <summary>positives[i] ← logits[i, p(i)]; hits[i] ← 1 when no other column of row i exceeds it, else 0.</summary>
    void PositiveLogits(Tensor logits, PositivePairing pairing, Tensor positives, Tensor hits);

    /// <summary>x[i, p(i)] ← x[i, p(i)] + value.</summary>
    void AddAtPositives(Tensor x, PositivePairing pairing, float value);

    /// <summary>result[i] ← alpha·⟨a[i, :], b[i, :]⟩.</summary>
    void RowDot(Tensor a, Tensor b, float alpha, Tensor result);

    /// <summary>result ← [left | right] (columns side by side).</summary>
    void ConcatColumns(Tensor left, Tensor right, Tensor result);

    /// <summary>(left, right) ← the first and remaining columns of source; the inverse of <see cref="ConcatColumns"/>.</summary>
    void SplitColumns(Tensor source, Tensor left, Tensor right);

    /// <summary>y[i, :] ← y[i, :] + rowScale[i]·x[i, :].</summary>
    void AddScaledRows(Tensor x, Tensor rowScale, Tensor y);
}

/// <summary>
/// MoCo's queue: a ring buffer of L2-normalised keys on one backend. The write position lives on the host (batch
/// and capacity are known), so enqueueing never waits for the device. Created by <see cref="IBackend.CreateKeyQueue"/>.
/// </summary>
public abstract class KeyQueue : IDisposable
{
    protected KeyQueue(int capacity, int dim)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        Capacity = capacity;
        Dim = dim;
    }

    public int Capacity { get; }

    public int Dim { get; }

    /// <summary>The row the next key is written to; the oldest key sits here once the queue has wrapped.</summary>
    public int Position { get; protected internal set; }

    /// <summary>The keys [Capacity, Dim] in fp32 (checkpoints, tests, the unfused composition's GEMM).</summary>
    public abstract Tensor Keys { get; }

    public abstract void Dispose();
}

/// <summary>Argument checks shared by the contrastive ops of both backends.</summary>
internal static class ContrastiveCheck
{
    /// <summary>The three floats of a statistics tensor: loss, mean positive cosine, top-1 accuracy.</summary>
    public const int StatsLength = 3;

    public static (int Rows, int Dim) NtXent(Tensor z, float temperature)
    {
        Temperature(temperature);
        var (rows, dim) = (z.Rows, z.Cols);
        if (z.Shape.Rank != 2 || rows < 2 || rows % 2 != 0 || dim < 1)
        {
            throw new ArgumentException($"{z.Describe()}: NT-Xent needs a [2N, dim] matrix with N >= 1 (views a then b)");
        }
        return (rows, dim);
    }

    /// <summary>The anchor rows of z: the shard's, or all of them.</summary>
    public static NtXentShard Shard(Tensor z, NtXentShard? shard)
    {
        var all = new NtXentShard(0, z.Rows);
        if (shard is not { } s || s == all)
        {
            return all;
        }
        if (s.Rows < 2 || s.Rows % 2 != 0 || s.Offset < 0 || s.Offset > z.Rows - s.Rows)
        {
            throw new ArgumentException($"NT-Xent shard [{s.Offset}, {s.Offset + s.Rows}) of {z.Describe()}: a shard needs an even number of rows (views a then b), at least 2, inside z");
        }
        return s;
    }

    /// <summary>dz [shard rows, dim], apart from z (the backward reads z[partner] while writing dz[i]).</summary>
    public static void Gradient(Tensor z, Tensor dz, NtXentShard shard)
    {
        if (dz.Shape.Rank != 2 || dz.Rows != shard.Rows || dz.Cols != z.Cols)
        {
            throw new ArgumentException($"{dz.Describe()}: the NT-Xent gradient of {z.Describe()}'s rows [{shard.Offset}, {shard.Offset + shard.Rows}) must be [{shard.Rows}, {z.Cols}]");
        }
        Check.Disjoint(dz, z, "the NT-Xent backward reads every row's partner in z while it writes dz");
    }

    public static (int Batch, int Dim) InfoNce(Tensor q, Tensor k, KeyQueue queue, float temperature, Tensor? dq)
    {
        Temperature(temperature);
        if (q.Shape.Rank != 2 || q.Rows < 1)
        {
            throw new ArgumentException($"{q.Describe()}: InfoNCE needs queries as a [batch, dim] matrix");
        }
        Check.SameShape(q, k);
        if (queue.Dim != q.Cols)
        {
            throw new ArgumentException($"{q.Describe()}: queries have {q.Cols} features, the key queue holds {queue.Dim}");
        }
        if (dq is not null)
        {
            Check.SameShape(q, dq);
        }
        return (q.Rows, q.Cols);
    }

    public static (int Batch, int Dim, int QueueLength) LabelMaskedInfoNce(Tensor q, Tensor k, Tensor labels, KeyQueue? queue, Tensor? queueLabels, float temperature, Tensor? dq, LabelMaskedShard? shard = null)
    {
        Temperature(temperature);
        if (q.Shape.Rank != 2 || q.Rows < 1 || q.Cols < 1)
        {
            throw new ArgumentException($"{q.Describe()}: the label-masked InfoNCE needs queries as a [batch, dim] matrix");
        }
        Check.SameShape(q, k);
        Check.Length(labels.Length, q.Rows, labels.Describe() + " (one label per query)");
        if ((queue is null) != (queueLabels is null))
        {
            throw new ArgumentException(queue is null
                ? $"{queueLabels!.Describe()}: queue labels without a key queue (pass both or neither)"
                : "the key queue comes without its labels (pass both or neither)");
        }
        var queueLength = 0;
        if (queue is not null)
        {
            if (queue.Dim != q.Cols)
            {
                throw new ArgumentException($"{q.Describe()}: queries have {q.Cols} features, the key queue holds {queue.Dim}");
            }
            Check.Length(queueLabels!.Length, queue.Capacity, queueLabels.Describe() + " (one label per queue row)");
            queueLength = queue.Capacity;
        }
        if (shard is not null)
        {
            if (shard.Offset < 0 || shard.Rows < 1 || shard.Offset + shard.Rows > q.Rows)
            {
                throw new ArgumentException($"{q.Describe()}: the shard's rows [{shard.Offset}, {shard.Offset + shard.Rows}) are not inside the batch");
            }
            Check.Length(shard.RowState.Length, LabelMaskedShard.FloatsPerRow * shard.Rows, shard.RowState.Describe() + " (this shard's row states)");
            Check.Length(shard.AllRowStates.Length, LabelMaskedShard.FloatsPerRow * q.Rows, shard.AllRowStates.Describe() + " (every row's state)");
        }
        if (dq is not null)
        {
            if (shard is null)
            {
                Check.SameShape(q, dq);
            }
            else
            {
                Check.Rows(dq, shard.Rows, q.Cols);
            }
            Check.Disjoint(dq, labels, "the gradient reads every query's label while it writes dq");
        }
        return (q.Rows, q.Cols, queueLength);
    }

    public static void LabeledKeys(KeyQueue queue, Tensor queueLabels, Tensor keys, Tensor labels)
    {
        Keys(queue, keys);
        Check.Length(queueLabels.Length, queue.Capacity, queueLabels.Describe() + " (one label per queue row)");
        Check.Length(labels.Length, keys.Rows, labels.Describe() + " (one label per key)");
    }

    public static (int Rows, int Dim) Margin(Tensor u, float margin, Tensor? du)
    {
        Margin(margin);
        var (rows, dim) = (u.Rows, u.Cols);
        if (u.Shape.Rank != 2 || rows < 2 || rows % 2 != 0 || dim < 1)
        {
            throw new ArgumentException($"{u.Describe()}: the margin loss needs a [2N, dim] matrix with N >= 1 (views a then b)");
        }
        if (du is not null)
        {
            Check.SameShape(u, du);
            Check.Disjoint(du, u, "the margin loss reads every row of u while it writes du");
        }
        return (rows, dim);
    }

    public static void Workspace(Tensor workspace, long needed)
    {
        if (workspace.Length < needed)
        {
            throw new ArgumentException($"{workspace.Describe()}: the op needs a workspace of {needed} floats, got {workspace.Length}");
        }
    }

    /// <summary>A device address the kernels read with <paramref name="bytes"/>-byte copies.</summary>
    public static void Aligned(ulong address, int bytes, string what)
    {
        if (address % (ulong)bytes != 0)
        {
            throw new ArgumentException($"{what} starts at 0x{address:x}, which is not {bytes}-byte aligned; the kernels copy it {bytes} bytes at a time (use a tensor the backend allocated, or a view at a multiple of {bytes / sizeof(float)} floats)");
        }
    }

    public static void Stats(Tensor stats)
    {
        if (stats.Length != StatsLength)
        {
            throw new ArgumentException($"{stats.Describe()}: statistics need exactly {StatsLength} floats (loss, positive cosine, top-1)");
        }
    }

    public static void Keys(KeyQueue queue, Tensor keys)
    {
        if (keys.Shape.Rank != 2 || keys.Cols != queue.Dim)
        {
            throw new ArgumentException($"{keys.Describe()}: keys must be a [count, {queue.Dim}] matrix for this queue");
        }
    }

    public static void Pairing(Tensor logits, PositivePairing pairing)
    {
        if (pairing == PositivePairing.OtherView && (logits.Rows != logits.Cols || logits.Rows % 2 != 0))
        {
            throw new ArgumentException($"{logits.Describe()}: pairing the two views needs a square matrix with an even number of rows");
        }
        if (logits.Rows < 1 || logits.Cols < 1)
        {
            throw new ArgumentException($"{logits.Describe()}: empty logits");
        }
    }

    public static void Margin(float margin)
    {
        if (!(margin > 0f) || !float.IsFinite(margin))
        {
            throw new ArgumentOutOfRangeException(nameof(margin), margin, "the margin must be a positive finite number");
        }
    }

    private static void Temperature(float temperature)
    {
        if (!(temperature > 0f) || !float.IsFinite(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "the temperature must be a positive finite number");
        }
    }
}
