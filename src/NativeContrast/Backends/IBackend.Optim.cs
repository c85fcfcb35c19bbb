namespace NativeContrast.Backends;

using System.Runtime.InteropServices;
using NativeContrast.Tensors;

/// <summary>
/// Optimiser family: the teacher's EMA and fused optimiser steps over an arena's trainable prefix. A step is one
/// launch over every trainable view (plus two tiny launches when it needs norms: LARS trust ratios, gradient
/// clipping), optionally updating a teacher's EMA from the new weights in the same pass over memory. Per-step
/// scalars (learning rate, bias corrections, EMA momentum) are kernel arguments; the clip scale and the trust ratios
/// stay in device memory, so a step never synchronises with the host. Element-wise formulas are written with
/// explicit fused multiply-adds on both backends (see native/optim.cu), so the CPU twin matches the kernels to
/// the bit wherever no reduction is involved.
/// </summary>
public partial interface IBackend
{
    /// <summary>teacher ← m·teacher + (1 − m)·student, element by element, rounded as fma(m, teacher, (1 − m)·student).</summary>
    void EmaUpdate(Tensor teacher, Tensor student, float momentum);

    /// <summary>
    /// The global L2 norm of <paramref name="gradients"/> (the plan's trainable views) into <see cref="OptimizerPlan.GradientNorm"/>,
    /// and min(1, maxNorm / (norm + 1e-6)) into <see cref="OptimizerPlan.ClipScale"/> (1 when maxNorm is 0).
    /// </summary>
    void GradientNorm(OptimizerPlan plan, Tensor gradients, float maxNorm = 0f);

    /// <summary>
    /// SGD with momentum, PyTorch's form (dampening 0): g' = c·g + wd·w, b ← μ·b + g', w ← w − lr·(Nesterov ? g' + μ·b : b),
    /// where c is the clip scale (1 without clipping) and wd is 0 on views excluded from decay.
    /// </summary>
    void SgdStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor momentumBuffer, SgdStepArgs args, StepOptions options = default);

    /// <summary>
    /// LARS in one of two named forms (<see cref="LarsStepArgs.Variant"/>); c is the clip scale (1 without clipping).
    /// <see cref="LarsVariant.SimClr"/> (SimCLR's TensorFlow optimiser): g' = c·g + wd·w, trust = η·‖w‖ / ‖g'‖ (1 when
    /// excluded or either norm is 0), v ← μ·v + lr·trust·g', w ← w − (Nesterov ? μ·v + lr·trust·g' : v): the learning
    /// rate sits inside the velocity. <see cref="LarsVariant.SoloLearn"/> (solo-learn's PyTorch LARS, LARC's ratio):
    /// r = η·‖w‖ / (‖c·g‖ + wd·‖w‖ + ε), optionally min(r / lr, 1), d = r·(c·g + wd·w), but d = c·g (no decay, no
    /// adaptation) when excluded or when ‖w‖ or ‖c·g‖ is 0; b ← μ·b + d, w ← w − lr·(Nesterov ? d + μ·b : b): the
    /// learning rate is applied outside the buffer. The ratios and the decay each view received are left in
    /// <see cref="OptimizerPlan.TrustRatios"/> and <see cref="OptimizerPlan.AppliedWeightDecay"/>.
    /// </summary>
    void LarsStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor velocity, LarsStepArgs args, StepOptions options = default);

    /// <summary>
    /// AdamW with decoupled decay: w ← w·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
    /// w ← w − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε), with t = <see cref="AdamWStepArgs.Step"/> (1 on the first step).
    /// </summary>
    void AdamWStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor firstMoment, Tensor secondMoment, AdamWStepArgs args, StepOptions options = default);
}

/// <summary>Per-step scalars of <see cref="IBackend.SgdStep"/>.</summary>
public readonly record struct SgdStepArgs(float LearningRate, float Momentum, float WeightDecay, bool Nesterov);

/// <summary>The two published LARS forms; they differ in the trust ratio, where the learning rate goes, and what a zero norm skips.</summary>
public enum LarsVariant
{
    /// <summary>google-research/simclr lars_optimizer.py (classic momentum): trust η‖w‖/‖g + wd·w‖, lr inside the velocity.</summary>
    SimClr,

    /// <summary>solo-learn solo/utils/lars.py: trust η‖w‖/(‖g‖ + wd‖w‖ + ε), lr outside the buffer, optional clip_lr, zero norms skip decay.</summary>
    SoloLearn,
}

/// <summary>Per-step scalars of <see cref="IBackend.LarsStep"/>; TrustCoefficient is η (0.001 in SimCLR, 0.02 in solo-learn's recipes).</summary>
/// <param name="Epsilon">ε of the solo-learn denominator (1e-8, the reference's default; unused by the SimCLR form).</param>
/// <param name="ClipLearningRate">solo-learn's clip_lr: the ratio becomes min(r / lr, 1) (unused by the SimCLR form).</param>
public readonly record struct LarsStepArgs(
    float LearningRate, float Momentum, float WeightDecay, float TrustCoefficient, bool Nesterov,
    LarsVariant Variant = LarsVariant.SimClr, float Epsilon = 1e-8f, bool ClipLearningRate = false);

/// <summary>Per-step scalars of <see cref="IBackend.AdamWStep"/>; Step is the 1-based count the bias corrections use.</summary>
public readonly record struct AdamWStepArgs(float LearningRate, float Beta1, float Beta2, float Epsilon, float WeightDecay, long Step)
{
    /// <summary>
    /// The scalars the kernels take, computed once on the host in double so that both backends use the same floats:
    /// lr / (1 − β1^t), 1 / √(1 − β2^t), and the decoupled decay factor 1 − lr·wd.
    /// </summary>
    internal (float StepSize, float InverseSqrtBiasCorrection2, float DecayFactor) KernelScalars()
    {
        var biasCorrection1 = 1.0 - Math.Pow(Beta1, Step);
        var biasCorrection2 = 1.0 - Math.Pow(Beta2, Step);
        return ((float)(LearningRate / biasCorrection1), (float)(1.0 / Math.Sqrt(biasCorrection2)), (float)(1.0 - ((double)LearningRate * WeightDecay)));
    }
}

/// <summary>
/// What every step op shares. The default is SimCLR's recipe without clipping or teacher: biases and normalisation
/// parameters excluded from weight decay (and from LARS adaptation).
/// </summary>
/// <param name="DecayBiasAndNorm">Apply weight decay (and LARS adaptation) to biases and BatchNorm parameters too, as MoCo's PyTorch code does.</param>
/// <param name="MaxGradientNorm">Clip gradients to this global L2 norm (0: no clipping). The scale is computed on the device.</param>
/// <param name="Teacher">A teacher's trainable values to update in the same pass: teacher ← m·teacher + (1 − m)·w_new.</param>
/// <param name="TeacherMomentum">m of the teacher's EMA.</param>
public readonly record struct StepOptions(bool DecayBiasAndNorm = false, float MaxGradientNorm = 0f, Tensor? Teacher = null, float TeacherMomentum = 0f);

/// <summary>
/// The device-side description of an arena's trainable views that optimiser steps run over, built once per arena.
/// Each view (segment) is cut into chunks of at most <see cref="ChunkLength"/> elements; a kernel runs one block per
/// chunk, so it knows the view's flags and trust ratio without searching. Owns the workspaces of the norm passes
/// (per-chunk partial sums, the global gradient norm, the clip scale, one trust ratio per view), so a step allocates nothing.
/// </summary>
public sealed class OptimizerPlan : IDisposable
{
    /// <summary>8192 floats: 8 float4 per thread of a 256-thread block, and a few blocks per view of ResNet-50's larger convolutions.</summary>
    public const int DefaultChunkLength = 8192;

    internal const int ExcludedFromDecay = 1;

    /// <summary>Ints per table entry: the kernels read each entry as one int4.</summary>
    internal const int EntryInts = 4;

    /// <summary>
    /// Chunk offsets are stored in units of this many elements (kOffsetUnit in optim.cu): every chunk starts on the
    /// arena's alignment, so a 32-bit entry reaches 2^37 elements, not 2^31.
    /// </summary>
    internal const int OffsetUnit = ArenaLayout.AlignmentElements;

    private readonly Tensor _tables;
    private readonly Tensor _scalars;
    private readonly Tensor _larsResults;

    /// <param name="chunkLength">Elements per chunk, a positive multiple of <see cref="ArenaLayout.AlignmentElements"/>; small values exercise chunk boundaries in tests.</param>
    public OptimizerPlan(ParameterArena arena, int chunkLength = DefaultChunkLength)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (chunkLength <= 0 || chunkLength % ArenaLayout.AlignmentElements != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkLength), $"chunk length {chunkLength} must be a positive multiple of {ArenaLayout.AlignmentElements}");
        }
        Backend = arena.Backend;
        Length = arena.TrainableLength;
        ChunkLength = chunkLength;
        Segments = arena.Views.Where(v => v.IsTrainable).OrderBy(v => v.Offset).ToArray();
        (Chunks, SegmentTable) = BuildTables(Segments, chunkLength);
        ChunkCount = Chunks.Length / EntryInts;

        // Out of device memory part-way, the plan gives back what it had allocated.
        var allocated = new List<Tensor>();
        Tensor Allocate(TensorShape shape, string name)
        {
            var t = Backend.Allocate(shape, name);
            allocated.Add(t);
            return t;
        }
        try
        {
            _tables = Allocate(new TensorShape(Math.Max(1, Chunks.Length + SegmentTable.Length)), "optimizer plan tables");
            WeightPartials = Allocate(new TensorShape(Math.Max(1, ChunkCount)), "per-chunk sum of squared weights");
            GradientPartials = Allocate(new TensorShape(Math.Max(1, ChunkCount)), "per-chunk sum of squared gradients");
            _scalars = Allocate(new TensorShape(2), "gradient norm and clip scale");
            GradientWeightPartials = Allocate(new TensorShape(Math.Max(1, ChunkCount)), "per-chunk sum of gradient times weight");
            _larsResults = Allocate(new TensorShape(2 * Math.Max(1, Segments.Count)), "LARS trust ratios and applied weight decay");

            // Tensors are float32; the tables travel as raw 32-bit words (a bitwise copy) and the kernels read them as int4.
            var words = new int[_tables.Length];
            Chunks.CopyTo(words, 0);
            SegmentTable.CopyTo(words, Chunks.Length);
            Backend.CopyFromHost(MemoryMarshal.Cast<int, float>(words), _tables);
        }
        catch
        {
            foreach (var t in allocated)
            {
                t.Dispose();
            }
            throw;
        }
        ChunkTable = _tables.View(0, new TensorShape(Chunks.Length), "chunk table");
        SegmentTableTensor = _tables.View(Chunks.Length, new TensorShape(SegmentTable.Length), "segment table");
        GradientNorm = _scalars.View(0, new TensorShape(1), "gradient norm");
        ClipScale = _scalars.View(1, new TensorShape(1), "clip scale");
        var perSegment = Math.Max(1, Segments.Count);
        TrustRatios = _larsResults.View(0, new TensorShape(perSegment), "LARS trust ratios");
        AppliedWeightDecay = _larsResults.View(perSegment, new TensorShape(perSegment), "LARS applied weight decay");
    }

    public IBackend Backend { get; }

    /// <summary>Elements the step tensors must have: the arena's trainable prefix.</summary>
    public long Length { get; }

    public int ChunkLength { get; }

    /// <summary>The trainable views in arena order; segment i of the kernels (and <see cref="TrustRatios"/>[i]) is Segments[i].</summary>
    public IReadOnlyList<ParameterView> Segments { get; }

    public int ChunkCount { get; }

    /// <summary>Global L2 norm of the gradients before clipping, written by steps that clip or by <see cref="IBackend.GradientNorm"/> (read it when you log; reading waits for the device).</summary>
    public Tensor GradientNorm { get; }

    /// <summary>The factor the last clipping step applied to the gradients.</summary>
    public Tensor ClipScale { get; }

    /// <summary>One LARS trust ratio per segment, written by <see cref="IBackend.LarsStep"/>.</summary>
    public Tensor TrustRatios { get; }

    /// <summary>
    /// The weight decay each segment received in the last <see cref="IBackend.LarsStep"/>: wd, or 0 where the view is
    /// excluded or (solo-learn form) skipped for a zero norm. The step kernel reads it, so both forms share one update.
    /// </summary>
    public Tensor AppliedWeightDecay { get; }

    /// <summary>Host copy of the chunk table: (offset in <see cref="OffsetUnit"/>s, length, segment, flags) per chunk.</summary>
    internal int[] Chunks { get; }

    /// <summary>Host copy of the segment table: (first chunk, chunk count, flags, unused) per segment.</summary>
    internal int[] SegmentTable { get; }

    internal Tensor ChunkTable { get; }

    internal Tensor SegmentTableTensor { get; }

    internal Tensor WeightPartials { get; }

    internal Tensor GradientPartials { get; }

    /// <summary>Per-chunk Σ g·w: with Σ g² and Σ w² it gives the SimCLR form's ‖c·g + wd·w‖ for any clip scale c.</summary>
    internal Tensor GradientWeightPartials { get; }

    /// <summary>The first element of chunk <paramref name="chunk"/> in the arena.</summary>
    internal long ChunkOffset(int chunk) => (long)(uint)Chunks[chunk * EntryInts] * OffsetUnit;

    /// <summary>
    /// The chunk table (offset in <see cref="OffsetUnit"/>s, length, segment, flags per chunk) and the segment table
    /// (first chunk, chunk count, flags, unused per segment) of views cut into chunks of at most chunkLength elements.
    /// </summary>
    internal static (int[] Chunks, int[] Segments) BuildTables(IReadOnlyList<ParameterView> views, int chunkLength)
    {
        var chunks = new List<int>();
        var segments = new int[views.Count * EntryInts];
        for (var s = 0; s < views.Count; s++)
        {
            var view = views[s];
            var flags = view.IsExcludedFromDecay ? ExcludedFromDecay : 0;
            segments[(s * EntryInts) + 0] = chunks.Count / EntryInts;
            for (long start = 0; start < view.Length; start += chunkLength)
            {
                var offset = view.Offset + start;
                if (offset % OffsetUnit != 0)
                {
                    throw new ArgumentException($"{view.Name} starts a chunk at element {offset}, not a multiple of {OffsetUnit}");
                }
                var units = unchecked((int)checked((uint)(offset / OffsetUnit)));
                chunks.AddRange([units, (int)Math.Min(chunkLength, view.Length - start), s, flags]);
            }
            segments[(s * EntryInts) + 1] = (chunks.Count / EntryInts) - segments[s * EntryInts];
            segments[(s * EntryInts) + 2] = flags;
        }
        return (chunks.ToArray(), segments);
    }

    /// <summary>First chunk and chunk count of segment <paramref name="segment"/>.</summary>
    internal (int First, int Count) ChunksOf(int segment) => (SegmentTable[segment * EntryInts], SegmentTable[(segment * EntryInts) + 1]);

    public void Dispose()
    {
        _tables.Dispose();
        WeightPartials.Dispose();
        GradientPartials.Dispose();
        GradientWeightPartials.Dispose();
        _scalars.Dispose();
        _larsResults.Dispose();
    }
}

/// <summary>Argument checks shared by the optimiser ops of both backends.</summary>
internal static class OptimChecks
{
    public static void Momentum(float momentum, string what)
    {
        if (!(momentum >= 0f && momentum <= 1f))
        {
            throw new ArgumentOutOfRangeException(what, $"{what} {momentum} is outside [0, 1]");
        }
    }

    /// <summary>Every step tensor covers the plan's trainable prefix and lives on the plan's backend.</summary>
    public static void Step(OptimizerPlan plan, IBackend backend, StepOptions options, params ReadOnlySpan<Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (!ReferenceEquals(plan.Backend, backend))
        {
            throw new ArgumentException($"the optimizer plan was built on {plan.Backend.Name}, not on {backend.Name}", nameof(plan));
        }
        foreach (var t in tensors)
        {
            Check.Length(t.Length, plan.Length, t.Describe() + " (the arena's trainable prefix)");
            Check.Device(t, backend);
        }
        if (options.Teacher is { } teacher)
        {
            Check.Length(teacher.Length, plan.Length, teacher.Describe() + " (the teacher's trainable prefix)");
            Check.Device(teacher, backend);
            Momentum(options.TeacherMomentum, "teacher momentum");
        }
        if (!(options.MaxGradientNorm >= 0f) || float.IsInfinity(options.MaxGradientNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"max gradient norm {options.MaxGradientNorm} must be finite and >= 0 (0: no clipping)");
        }
    }

    public static void Lars(LarsStepArgs args)
    {
        if (!Enum.IsDefined(args.Variant))
        {
            throw new ArgumentOutOfRangeException(nameof(args), $"LARS variant {(int)args.Variant} is neither SimClr nor SoloLearn");
        }
        if (!(args.Epsilon >= 0f) || float.IsInfinity(args.Epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(args), $"LARS epsilon {args.Epsilon} must be finite and >= 0");
        }
    }

    public static void Adam(AdamWStepArgs args)
    {
        if (args.Step < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(args), $"AdamW step count {args.Step} must be >= 1 (the first step is 1)");
        }
        Momentum(args.Beta1, "beta1");
        Momentum(args.Beta2, "beta2");
        if (args.Beta1 == 1f || args.Beta2 == 1f)
        {
            throw new ArgumentOutOfRangeException(nameof(args), "AdamW betas must be below 1 (bias corrections divide by 1 - beta^t)");
        }
    }
}
