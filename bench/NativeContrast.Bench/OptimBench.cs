namespace NativeContrast.Bench;

using NativeContrast.Backends;
using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// The optimiser family over a ResNet-50 arena (161 trainable tensors, 25.6M floats): the teacher's EMA against the
/// device-to-device copy bandwidth measured in the same run (floor = 12·N bytes / bandwidth: read two, write one;
/// target ≥ 85% of copy bandwidth) and against one launch per view, and the fused SGD / LARS / AdamW steps (one launch over the arena) against one
/// launch per view, and the fused step+EMA against the step followed by a separate EMA. Every floor is the fused
/// version's minimal traffic over the copy bandwidth. bench/reference/optim.py measures PyTorch on the same cases.
/// </summary>
public sealed class OptimBench : IBenchSuite
{
    private const string Case = "resnet50";

    public string Name => "optim";

    public string Description => "EMA and fused SGD/LARS/AdamW (+EMA) steps over a ResNet-50 arena vs copy bandwidth and per-view launches";

    public string ResultsName => "kernels";

    public bool NeedsGpu => true;

    public void Run(BenchContext context)
    {
        var gpu = context.Gpu ?? throw new InvalidOperationException("the optim suite needs a GPU");
        var repetitions = context.Quick ? 10 : 50;
        using var timer = new GpuTimer(gpu.Stream);
        using var student = new ParameterArena(gpu, ResNet50Layout(), optimizerStateSlots: 2);
        using var teacher = new ParameterArena(gpu, ResNet50Layout(), optimizerStateSlots: 0);
        Randomise(gpu, student, seed: 1);
        gpu.Copy(student.Values, teacher.Values);
        var n = student.TrainableLength;
        var footprint = (student.Values.Length + student.Gradients.Length + student.OptimizerState.Length + teacher.Values.Length) * sizeof(float);

        // Copy bandwidth: read N floats, write N floats.
        var values = student.TrainableValues;
        using var copy = gpu.Allocate(new TensorShape(checked((int)n)), "copy destination");
        var copyMs = timer.MedianMs(() => gpu.Copy(values, copy), repetitions: repetitions);
        var bytesPerMs = 2.0 * sizeof(float) * n / copyMs;

        // floor = the minimal traffic (floatsPerElement floats read or written per arena element) at the copy bandwidth.
        BenchRecord Record(string kernel, string impl, double ms, int floatsPerElement, string? note)
        {
            var bytes = floatsPerElement * sizeof(float) * (double)n;
            return new BenchRecord
            {
                Kernel = kernel,
                Case = Case,
                Impl = impl,
                MedianMs = ms,
                PeakBytes = footprint,
                Gpu = context.DeviceName,
                FloorMs = bytes / bytesPerMs,
                Gbps = bytes / ms / 1e6,
                Note = note,
            };
        }
        context.Add(Record("copy", "cuMemcpyDtoD", copyMs, 2, "device-to-device copy: the bandwidth every floor below uses"));

        var teacherValues = teacher.TrainableValues;
        var emaMs = timer.MedianMs(() => gpu.EmaUpdate(teacherValues, values, 0.996f), repetitions: repetitions);
        var ema = Record("ema", "ours-fused", emaMs, 3, null);
        context.Add(ema with { Note = $"{100 * ema.FloorMs / emaMs:F0}% of copy bandwidth (target >= 85%); one launch over {n} floats" });
        var perView = student.Views.Where(v => v.IsTrainable).Select(v => (Teacher: teacher.Value(v), Student: student.Value(v))).ToArray();
        var perViewMs = timer.MedianMs(
            () =>
            {
                foreach (var (t, s) in perView)
                {
                    gpu.EmaUpdate(t, s, 0.996f);
                }
            },
            repetitions: repetitions);
        context.Add(Record("ema", "ours-unfused", perViewMs, 3, $"one launch per view ({perView.Length}), as a per-parameter loop would"));

        using var plan = new OptimizerPlan(student);
        var (w, g, s0, s1) = (values, student.Gradients, student.StateSlot(0), student.StateSlot(1));
        var sgd = new SgdStepArgs(0.03f, 0.9f, 1e-4f, false);
        var lars = new LarsStepArgs(0.3f, 0.9f, 1e-6f, 0.001f, false, LarsVariant.SimClr);
        var soloLars = new LarsStepArgs(0.4f, 0.9f, 1e-4f, 0.02f, false, LarsVariant.SoloLearn, 1e-8f, ClipLearningRate: true);
        var adamw = new AdamWStepArgs(1e-4f, 0.9f, 0.999f, 1e-8f, 0.05f, 1);
        var plain = default(StepOptions);
        var withTeacher = new StepOptions(Teacher: teacherValues, TeacherMomentum: 0.996f);

        // Minimal traffic in floats per element: SGD and LARS read w, g, v and write w, v (LARS reads w and g once more
        // for its norms); AdamW reads w, g, m, v and writes w, m, v; the fused teacher adds a read and a write.
        void Step(string kernel, int floatsPerElement, Action fused, Action unfused, string unfusedNote)
        {
            context.Add(Record(kernel, "ours-fused", timer.MedianMs(fused, repetitions: repetitions), floatsPerElement, "one launch over the arena"));
            context.Add(Record(kernel, "ours-unfused", timer.MedianMs(unfused, repetitions: repetitions), floatsPerElement, unfusedNote));
        }
        Step("sgd", 5, () => gpu.SgdStep(plan, w, g, s0, sgd, plain), () => gpu.SgdStep(plan, w, g, s0, sgd, plain, perView: true), "one launch per view");
        Step("lars", 7, () => gpu.LarsStep(plan, w, g, s0, lars, plain), () => gpu.LarsStep(plan, w, g, s0, lars, plain, perView: true), "SimCLR form: norm passes (with Σg·w), then one step launch per view");
        Step("lars-solo", 7, () => gpu.LarsStep(plan, w, g, s0, soloLars, plain), () => gpu.LarsStep(plan, w, g, s0, soloLars, plain, perView: true), "solo-learn form: norm passes, then one step launch per view");
        Step("adamw", 7, () => gpu.AdamWStep(plan, w, g, s0, s1, adamw, plain), () => gpu.AdamWStep(plan, w, g, s0, s1, adamw, plain, perView: true), "one launch per view");
        Step(
            "sgd+clip",
            6,
            () => gpu.SgdStep(plan, w, g, s0, sgd, plain with { MaxGradientNorm = 1f }),
            () => gpu.SgdStep(plan, w, g, s0, sgd, plain with { MaxGradientNorm = 1f }, perView: true),
            "norm passes, then one step launch per view");
        Step(
            "sgd+ema",
            7,
            () => gpu.SgdStep(plan, w, g, s0, sgd, withTeacher),
            () =>
            {
                gpu.SgdStep(plan, w, g, s0, sgd, plain);
                gpu.EmaUpdate(teacherValues, w, 0.996f);
            },
            "step, then a separate EMA launch");
        Step(
            "lars+ema",
            9,
            () => gpu.LarsStep(plan, w, g, s0, lars, withTeacher),
            () =>
            {
                gpu.LarsStep(plan, w, g, s0, lars, plain);
                gpu.EmaUpdate(teacherValues, w, 0.996f);
            },
            "step, then a separate EMA launch");
        Step(
            "adamw+ema",
            9,
            () => gpu.AdamWStep(plan, w, g, s0, s1, adamw, withTeacher),
            () =>
            {
                gpu.AdamWStep(plan, w, g, s0, s1, adamw, plain);
                gpu.EmaUpdate(teacherValues, w, 0.996f);
            },
            "step, then a separate EMA launch");
        gpu.Synchronize();
    }

    /// <summary>Random host values copied view by view (the device RNG belongs to another family); padding stays zero.</summary>
    private static void Randomise(IBackend backend, ParameterArena arena, int seed)
    {
        var rng = new Random(seed);
        foreach (var view in arena.Views)
        {
            var values = new float[view.Length];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (float)(((rng.NextDouble() * 2) - 1) * 0.05);
            }
            backend.CopyFromHost(values, arena.Value(view));
            if (view.IsTrainable)
            {
                for (var i = 0; i < values.Length; i++)
                {
                    values[i] = (float)((rng.NextDouble() * 2) - 1);
                }
                backend.CopyFromHost(values, arena.Gradient(view));
            }
        }
    }

    /// <summary>ResNet-50 + a 1000-class fc, from the engine's own model: torchvision's 161 trainable tensors (25,557,032 floats) and the BatchNorm buffers.</summary>
    internal static ArenaLayout ResNet50Layout()
    {
        var layout = new ArenaLayout();
        using var encoder = new ResNet(layout, ResNetOptions.ResNet50);
        using var classifier = LinearHead.Classifier(layout, encoder.FeatureDim, 1000);
        return layout;
    }
}
