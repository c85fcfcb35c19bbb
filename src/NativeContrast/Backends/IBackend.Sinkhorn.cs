namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>How <see cref="IBackend.SinkhornCodes"/> scales the codes it returns.</summary>
public enum SinkhornOutput
{
    /// <summary>
    /// SwAV's returned codes: the transport plan multiplied by B, so each sample's codes sum to 1 (an assignment)
    /// and each prototype's column sums to about B/K.
    /// </summary>
    Assignments,

    /// <summary>
    /// The transport plan itself, SwAV's Q before its final "Q *= B": rows (samples) sum to 1/B exactly and columns
    /// (prototypes) to about 1/K, closer with more iterations.
    /// </summary>
    Marginals,
}

/// <summary>
/// SwAV's distributed_sinkhorn over the samples of every rank: the columns (prototypes) are normalised over all of
/// them, the rows stay each rank's. <see cref="Samples"/> is the global sample count B. The first prototype step
/// needs each column's (max, Σ 2^((S − max)·scale)) of every rank, so its 2·K floats are all-gathered
/// (<see cref="GatherAcrossRanks"/>: input [2K] → <see cref="Gathered"/> [ranks · 2K], merged in rank order); each
/// later prototype step needs only the column sums, K floats summed in place (<see cref="SumAcrossRanks"/>).
/// Every rank must call it with the same K, ε and iterations.
/// </summary>
public sealed record SinkhornSync(int Samples, Tensor Gathered, Action<Tensor, Tensor> GatherAcrossRanks, Action<Tensor> SumAcrossRanks)
{
    /// <summary>Floats of <see cref="Gathered"/> for <paramref name="ranks"/> ranks and <paramref name="prototypes"/> prototypes.</summary>
    public static int GatheredLength(int ranks, int prototypes) => checked(ranks * 2 * prototypes);
}

/// <summary>Sinkhorn-Knopp codes and the swapped-prediction loss of SwAV (native/sinkhorn.cu).</summary>
public partial interface IBackend
{
    /// <summary>Floats of workspace <see cref="SinkhornCodes"/> needs for <paramref name="samples"/> × <paramref name="prototypes"/> scores.</summary>
    long SinkhornWorkspaceLength(int samples, int prototypes);

    /// <summary>
    /// Codes of SwAV's distributed_sinkhorn (single process): Q = exp(scores/ε)ᵀ normalised to sum 1, then
    /// <paramref name="iterations"/> times prototypes to 1/K and samples to 1/B, returned as [B, K] in the form that
    /// <paramref name="output"/> names. Computed in the log domain (max-shifted log-sum-exps over two scaling
    /// vectors), so any finite scores and any ε &gt; 0 give finite codes. <paramref name="codes"/> must not overlap
    /// <paramref name="scores"/>; <paramref name="workspace"/> holds at least <see cref="SinkhornWorkspaceLength"/> floats.
    /// With <paramref name="sync"/>, <paramref name="scores"/> are this rank's samples of a batch spread over ranks, and
    /// the codes are those rows of the codes of the whole batch.
    /// </summary>
    void SinkhornCodes(Tensor scores, Tensor codes, Tensor workspace, float epsilon, int iterations, SinkhornOutput output, SinkhornSync? sync = null);

    /// <summary>
    /// SwAV's swapped prediction for one (scores, codes) pair of views: per sample
    /// perSample[b] = −Σₖ codes[b,k]·log softmax(scores[b,:]/τ)[k], and loss[0] (+)= weight·mean_b perSample[b].
    /// With <paramref name="scoresGradient"/>, it also writes (or adds) weight·∂mean/∂scores =
    /// weight/(B·τ)·(softmax·Σₖcodes − codes); the codes are constants, as in SwAV.
    /// </summary>
    void SwappedPredictionLoss(
        Tensor scores, Tensor codes, float temperature, Tensor loss, Tensor perSample, Tensor? scoresGradient,
        float weight = 1f, bool accumulateLoss = false, bool accumulateGradient = false);
}

/// <summary>Argument checks and constants shared by the Sinkhorn twins, so both backends compute the same numbers.</summary>
internal static class SinkhornMath
{
    /// <summary>log2(e)/ε: scores times this are the exponents of Q in base 2.</summary>
    public static float Log2Scale(float epsilon) => (float)(1.0 / (epsilon * Math.Log(2.0)));

    public static float NegativeLog2(int n) => (float)-Math.Log2(n);

    /// <summary>What the last sample step adds to the log2 sample scaling: 0 for Q·B (rows sum to 1), −log2 B for the plan.</summary>
    public static float OutputOffset(SinkhornOutput output, int samples) =>
        output == SinkhornOutput.Assignments ? 0f : NegativeLog2(samples);

    public static void CheckCodes(Tensor scores, Tensor codes, Tensor workspace, float epsilon, int iterations, long workspaceLength)
    {
        Check.SameShape(scores, codes);
        if (scores.Shape.Rank != 2)
        {
            throw new ArgumentException($"{scores.Describe()}: Sinkhorn needs a [samples, prototypes] matrix");
        }
        if (scores.Rows == 0 || scores.Cols == 0)
        {
            throw new ArgumentException($"{scores.Describe()}: Sinkhorn needs at least one sample and one prototype");
        }
        if (!(epsilon > 0f) || !float.IsFinite(epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be a positive finite number");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        if (workspace.Length < workspaceLength)
        {
            throw new ArgumentException($"{workspace.Describe()}: Sinkhorn on {scores.Describe()} needs {workspaceLength} floats of workspace, got {workspace.Length}");
        }
        NoOverlap(scores, codes);
        NoOverlap(scores, workspace);
        NoOverlap(codes, workspace);
    }

    public static void CheckSync(SinkhornSync sync, int rows, int prototypes)
    {
        if (sync.Samples < rows)
        {
            throw new ArgumentException($"distributed Sinkhorn: {sync.Samples} samples over every rank, fewer than this rank's {rows}");
        }
        if (sync.Gathered.Shape.Rank != 1 || sync.Gathered.Length % (2 * prototypes) != 0)
        {
            throw new ArgumentException($"{sync.Gathered.Describe()}: distributed Sinkhorn gathers 2 × {prototypes} floats per rank into a vector of ranks × {2 * prototypes}");
        }
    }

    public static void CheckSwapped(Tensor scores, Tensor codes, float temperature, Tensor loss, Tensor perSample, Tensor? scoresGradient)
    {
        Check.SameShape(scores, codes);
        if (scores.Shape.Rank != 2 || scores.Rows == 0 || scores.Cols == 0)
        {
            throw new ArgumentException($"{scores.Describe()}: the swapped prediction needs a non-empty [samples, prototypes] matrix");
        }
        if (!(temperature > 0f) || !float.IsFinite(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "temperature must be a positive finite number");
        }
        Check.Length(loss.Length, 1, loss.Describe());
        Check.Length(perSample.Length, scores.Rows, perSample.Describe());
        if (scoresGradient is not null)
        {
            Check.SameShape(scores, scoresGradient);
            NoOverlap(scores, scoresGradient);
            NoOverlap(codes, scoresGradient);
            NoOverlap(perSample, scoresGradient);
        }
        NoOverlap(perSample, scores);
        NoOverlap(perSample, codes);
        NoOverlap(loss, perSample);
    }

    /// <summary>Throws when two tensors share elements: the kernels read one while writing the other.</summary>
    public static void NoOverlap(Tensor a, Tensor b)
    {
        if (ReferenceEquals(a.Storage, b.Storage) && a.Offset < b.Offset + b.Length && b.Offset < a.Offset + a.Length)
        {
            throw new ArgumentException($"{a.Describe()} and {b.Describe()} overlap; the op needs separate buffers");
        }
    }
}
