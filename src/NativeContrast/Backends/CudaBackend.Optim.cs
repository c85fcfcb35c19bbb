namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

// Launchers of native/optim.cu. A step is one block per plan chunk; the norm passes (LARS, clipping) add
// nc_optim_chunk_sum_squares (one block per chunk) and nc_optim_finalize_norms (one block), whose results stay
// on the device and are read by the step kernel through pointers, so nothing here waits for the GPU.
public sealed partial class CudaBackend
{
    private const int OptimThreads = 256;
    private const int FinalizeThreads = 1024;

    /// <summary>Blocks of nc_optim_ema resident on the whole device at once: its grid-stride loop needs no more.</summary>
    private uint _emaGridLimit;

    public unsafe void EmaUpdate(Tensor teacher, Tensor student, float momentum)
    {
        Check.SameLength(teacher, student);
        Check.Device(teacher, this);
        Check.Device(student, this);
        OptimChecks.Momentum(momentum, nameof(momentum));
        if (teacher.Length == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong t = teacher.DevicePointer(), s = student.DevicePointer();
        long n = teacher.Length;
        var m = momentum;
        var kernel = Kernel("nc_optim_ema");
        if (_emaGridLimit == 0)
        {
            _emaGridLimit = (uint)Math.Max(1, kernel.MaxActiveBlocksPerMultiprocessor(OptimThreads, 0) * Info.Multiprocessors);
        }
        // The kernel takes the float4 path only when both pointers are 16-byte aligned; otherwise every element is a work item.
        var items = ((t | s) & 15) == 0 ? (n + 3) / 4 : n;
        void** args = stackalloc void*[] { &t, &s, &n, &m };
        kernel.Launch(new Dim3(Math.Min(Blocks(items, OptimThreads), _emaGridLimit)), OptimThreads, 0, Stream, args);
    }

    public void GradientNorm(OptimizerPlan plan, Tensor gradients, float maxNorm = 0f)
    {
        OptimChecks.Step(plan, this, new StepOptions(MaxGradientNorm: maxNorm), gradients);
        Context.MakeCurrent();
        LaunchNorms(plan, 0, Aligned(gradients), maxNorm, lars: null, honourExclusion: true);
    }

    public void SgdStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor momentumBuffer, SgdStepArgs args, StepOptions options = default) =>
        SgdStep(plan, values, gradients, momentumBuffer, args, options, perView: false);

    /// <param name="perView">One launch per view instead of one over the arena: the per-tensor loop the benchmark compares against.</param>
    internal unsafe void SgdStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor momentumBuffer, SgdStepArgs args, StepOptions options, bool perView)
    {
        OptimChecks.Step(plan, this, options, values, gradients, momentumBuffer);
        Context.MakeCurrent();
        ulong w = Aligned(values), g = Aligned(gradients), b = Aligned(momentumBuffer), t = TeacherPointer(options);
        var clip = options.MaxGradientNorm > 0f ? LaunchNorms(plan, 0, g, options.MaxGradientNorm, null, true) : 0UL;
        float lr = args.LearningRate, mu = args.Momentum, wd = args.WeightDecay, tm = options.TeacherMomentum;
        int nesterov = args.Nesterov ? 1 : 0, honour = options.DecayBiasAndNorm ? 0 : 1;
        ulong chunks = 0;
        void** arguments = stackalloc void*[] { &w, &g, &b, &t, &chunks, &clip, &lr, &mu, &wd, &nesterov, &honour, &tm };
        LaunchOverChunks(Kernel("nc_optim_sgd"), plan, &chunks, arguments, perView);
    }

    public void LarsStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor velocity, LarsStepArgs args, StepOptions options = default) =>
        LarsStep(plan, values, gradients, velocity, args, options, perView: false);

    /// <param name="perView">One step launch per view (the norm passes stay one launch each).</param>
    internal unsafe void LarsStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor velocity, LarsStepArgs args, StepOptions options, bool perView)
    {
        OptimChecks.Step(plan, this, options, values, gradients, velocity);
        OptimChecks.Lars(args);
        Context.MakeCurrent();
        ulong w = Aligned(values), g = Aligned(gradients), v = Aligned(velocity), t = TeacherPointer(options);
        var clip = LaunchNorms(plan, w, g, options.MaxGradientNorm, args, !options.DecayBiasAndNorm);
        ulong trust = plan.TrustRatios.DevicePointer(), decay = plan.AppliedWeightDecay.DevicePointer();
        var variant = (int)args.Variant;
        float lr = args.LearningRate, mu = args.Momentum, tm = options.TeacherMomentum;
        var nesterov = args.Nesterov ? 1 : 0;
        ulong chunks = 0;
        void** arguments = stackalloc void*[] { &w, &g, &v, &t, &chunks, &clip, &trust, &decay, &variant, &lr, &mu, &nesterov, &tm };
        LaunchOverChunks(Kernel("nc_optim_lars"), plan, &chunks, arguments, perView);
    }

    public void AdamWStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor firstMoment, Tensor secondMoment, AdamWStepArgs args, StepOptions options = default) =>
        AdamWStep(plan, values, gradients, firstMoment, secondMoment, args, options, perView: false);

    /// <param name="perView">One launch per view instead of one over the arena.</param>
    internal unsafe void AdamWStep(OptimizerPlan plan, Tensor values, Tensor gradients, Tensor firstMoment, Tensor secondMoment, AdamWStepArgs args, StepOptions options, bool perView)
    {
        OptimChecks.Step(plan, this, options, values, gradients, firstMoment, secondMoment);
        OptimChecks.Adam(args);
        Context.MakeCurrent();
        ulong w = Aligned(values), g = Aligned(gradients), m = Aligned(firstMoment), v = Aligned(secondMoment), t = TeacherPointer(options);
        var clip = options.MaxGradientNorm > 0f ? LaunchNorms(plan, 0, g, options.MaxGradientNorm, null, true) : 0UL;
        var (stepSize, inverseSqrtBiasCorrection2, decayFactor) = args.KernelScalars();
        float beta1 = args.Beta1, beta2 = args.Beta2, eps = args.Epsilon, tm = options.TeacherMomentum;
        int honour = options.DecayBiasAndNorm ? 0 : 1;
        ulong chunks = 0;
        void** arguments = stackalloc void*[]
        {
            &w, &g, &m, &v, &t, &chunks, &clip, &decayFactor, &beta1, &beta2, &eps, &stepSize, &inverseSqrtBiasCorrection2, &honour, &tm,
        };
        LaunchOverChunks(Kernel("nc_optim_adamw"), plan, &chunks, arguments, perView);
    }

    /// <summary>Launches a step kernel over every chunk, or once per segment; <paramref name="chunks"/> is the kernel's chunk-table argument.</summary>
    private unsafe void LaunchOverChunks(CudaKernel kernel, OptimizerPlan plan, ulong* chunks, void** arguments, bool perView)
    {
        var table = plan.ChunkTable.DevicePointer();
        const int entryBytes = OptimizerPlan.EntryInts * sizeof(int);
        if (!perView)
        {
            if (plan.ChunkCount > 0)
            {
                *chunks = table;
                kernel.Launch(plan.ChunkCount, OptimThreads, 0, Stream, arguments);
            }
            return;
        }
        for (var s = 0; s < plan.Segments.Count; s++)
        {
            var (first, count) = plan.ChunksOf(s);
            if (count > 0)
            {
                *chunks = table + ((ulong)first * entryBytes);
                kernel.Launch(count, OptimThreads, 0, Stream, arguments);
            }
        }
    }

    /// <summary>
    /// The norm passes: per-chunk sums of squares (of the weights too for LARS, and Σ g·w for its SimCLR form), then one
    /// block for the global gradient norm, the clip scale, the trust ratios and the applied weight decay. Returns the
    /// device address of the clip scale, or 0 without clipping.
    /// </summary>
    private unsafe ulong LaunchNorms(OptimizerPlan plan, ulong values, ulong gradients, float maxNorm, LarsStepArgs? lars, bool honourExclusion)
    {
        ulong chunks = plan.ChunkTable.DevicePointer();
        ulong weightPartials = lars is null ? 0 : plan.WeightPartials.DevicePointer();
        ulong gradientPartials = plan.GradientPartials.DevicePointer();
        ulong dotPartials = lars is { Variant: LarsVariant.SimClr } ? plan.GradientWeightPartials.DevicePointer() : 0;
        ulong weights = lars is null ? gradients : values;
        if (plan.ChunkCount > 0)
        {
            void** partialArgs = stackalloc void*[] { &weights, &gradients, &chunks, &weightPartials, &gradientPartials, &dotPartials };
            Kernel("nc_optim_chunk_sum_squares").Launch(plan.ChunkCount, OptimThreads, 0, Stream, partialArgs);
        }
        var chunkCount = plan.ChunkCount;
        ulong segments = plan.SegmentTableTensor.DevicePointer();
        var segmentCount = plan.Segments.Count;
        var norm = maxNorm;
        var variant = (int)(lars?.Variant ?? LarsVariant.SimClr);
        float eta = lars?.TrustCoefficient ?? 0f, wd = lars?.WeightDecay ?? 0f, eps = lars?.Epsilon ?? 0f, lr = lars?.LearningRate ?? 0f;
        var clipLr = lars is { ClipLearningRate: true } ? 1 : 0;
        var honour = honourExclusion ? 1 : 0;
        ulong scalars = plan.GradientNorm.DevicePointer();
        ulong trust = lars is null ? 0 : plan.TrustRatios.DevicePointer();
        ulong decay = lars is null ? 0 : plan.AppliedWeightDecay.DevicePointer();
        void** finalizeArgs = stackalloc void*[]
        {
            &weightPartials, &gradientPartials, &dotPartials, &chunkCount, &segments, &segmentCount, &norm,
            &variant, &eta, &wd, &eps, &lr, &clipLr, &honour, &scalars, &trust, &decay,
        };
        Kernel("nc_optim_finalize_norms").Launch(1, FinalizeThreads, 0, Stream, finalizeArgs);
        return maxNorm > 0f ? plan.ClipScale.DevicePointer() : 0UL;
    }

    private static ulong TeacherPointer(StepOptions options) => options.Teacher is { } teacher ? Aligned(teacher) : 0UL;

    /// <summary>The device address of a step tensor, which must allow float4 access (arena views always do).</summary>
    private static ulong Aligned(Tensor t)
    {
        var pointer = t.DevicePointer();
        if ((pointer & 15) != 0)
        {
            throw new ArgumentException($"{t.Describe()} must start on a 16-byte boundary for the optimiser kernels (offset {t.Offset} elements)");
        }
        return pointer;
    }
}
