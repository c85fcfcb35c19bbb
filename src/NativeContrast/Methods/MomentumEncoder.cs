namespace NativeContrast.Methods;

using NativeContrast.Nn;
using NativeContrast.Optim;
using NativeContrast.Tensors;

/// <summary>
/// A key (teacher) encoder that follows a method's student by EMA, as MoCo's and SimCLR v2's memory use it: the
/// backbone and head declared again, under the same names, into a layout of their own, so the two arenas match view
/// for view and one fused launch in the optimiser's pass updates it. It is never trained; its BatchNorm keeps its own
/// running statistics (the EMA covers the trainable parameters only). Checkpoints hold it as "teacher.{name}".
/// </summary>
public sealed class MomentumEncoder : IDisposable
{
    private readonly ArenaLayout _layout = new();
    private readonly ResNet _backbone;
    private readonly MlpHead _head;
    private readonly LinearHead? _classifier;
    private readonly Sequential _model;
    private ParameterArena? _student;
    private ParameterArena? _arena;
    private Plan? _plan;

    /// <summary>Declares the copy of <paramref name="backbone"/> + a head of <paramref name="head"/>'s options (the student's head named "projector").</summary>
    /// <param name="classes">
    /// When positive, also a linear "classifier" on the backbone's features after the head, as PiCO's student declares
    /// it: the layouts must match for the EMA, so the copy follows the classifier too (keys never use it).
    /// </param>
    public MomentumEncoder(ResNet backbone, MlpHeadOptions head, int classes = 0)
    {
        _backbone = new ResNet(_layout, backbone.Options, backbone.Name);
        _head = new MlpHead(_layout, head);
        _classifier = classes > 0 ? new LinearHead(_layout, backbone.FeatureDim, classes, bias: true, "classifier") : null;
        _model = new Sequential(_backbone, _head);
    }

    public ParameterArena Arena => _arena ?? throw new InvalidOperationException("the momentum encoder is not bound yet");

    public Ema? Ema { get; private set; }

    /// <summary>The keys of the last <see cref="Forward"/> (before normalisation).</summary>
    public Tensor Output => _plan?.Output ?? throw new InvalidOperationException("the momentum encoder is not prepared yet");

    /// <summary>The copy's batch norms (backbone, then head), for SyncBN of the keys.</summary>
    public IEnumerable<BatchNorm> BatchNorms => _backbone.BatchNorms.Concat(_head.BatchNorms);

    public IEnumerable<(string Name, Tensor Tensor)> StateTensors => Arena.Views.Select(v => ("teacher." + v.Name, Arena.Value(v)));

    /// <summary>Allocates the teacher's arena beside <paramref name="student"/> (no gradients are used, no optimiser state).</summary>
    public void Bind(ParameterArena student)
    {
        _student = student;
        _arena = new ParameterArena(student.Backend, _layout, optimizerStateSlots: 0);
        _model.Bind(_arena);
        _classifier?.Bind(_arena);
    }

    /// <summary>teacher ← student, values and buffers (MoCo's start); call after the student is initialised.</summary>
    public void CopyStudent() => Arena.Backend.Copy(_student!.Values, Arena.Values);

    /// <param name="momentum">m of the EMA.</param>
    /// <param name="cosineSteps">Steps over which m rises to 1 by a cosine; 0 keeps it constant.</param>
    public void Prepare(TensorShape input, float momentum, long cosineSteps)
    {
        Ema = new Ema(Arena, _student!, momentum, cosineSteps);
        _plan = _model.Plan(input);
    }

    /// <summary>Keys of <paramref name="images"/>, in training mode (batch statistics, as MoCo's key encoder).</summary>
    public Tensor Forward(Tensor images) => _plan!.Forward(images, training: true);

    public void Dispose()
    {
        _plan?.Dispose();
        _backbone.Dispose();
        _head.Dispose();
        _classifier?.Dispose();
        _arena?.Dispose();
    }
}
