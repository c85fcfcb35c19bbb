namespace NativeContrast.Optim;

using System.Globalization;
using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// An optimiser over a whole <see cref="ParameterArena"/>: one fused launch per <see cref="Step()"/> over every trainable
/// view, with weight decay skipped for biases and normalisation parameters (unless <see cref="DecayBiasAndNorm"/>),
/// optional clipping of the global gradient norm on the device, and optionally the teacher's EMA in the same pass.
/// <para>
/// Exact resume needs three things: the arena's <see cref="ParameterArena.OptimizerState"/> (saved with the weights),
/// <see cref="StepCount"/>, and the hyperparameters (<see cref="GetHyperparameters"/> / <see cref="SetHyperparameters"/>,
/// string pairs that fit a safetensors header). Restore the state tensor, then the hyperparameters, which set the step
/// count; the learning-rate <see cref="Schedule"/> is a pure function of the step, so rebuilding it from the recipe
/// continues where it left off.
/// </para>
/// </summary>
public abstract class Optimizer : IDisposable
{
    private readonly Tensor _values;
    private readonly Tensor _gradients;
    private long _stepCount;
    private float _learningRate;
    private float _weightDecay;

    protected Optimizer(ParameterArena arena, int stateSlots, float learningRate, float weightDecay, int chunkLength)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (arena.StateSlots < stateSlots)
        {
            throw new ArgumentException($"{GetType().Name} needs {stateSlots} optimizer state slot(s); the arena has {arena.StateSlots} (create it with optimizerStateSlots: {stateSlots})", nameof(arena));
        }
        Arena = arena;
        Plan = new OptimizerPlan(arena, chunkLength);
        LearningRate = learningRate;
        WeightDecay = weightDecay;
        _values = arena.TrainableValues;
        _gradients = arena.Gradients;
    }

    /// <summary>"sgd", "lars" or "adamw": the name stored with the hyperparameters.</summary>
    public abstract string Name { get; }

    public ParameterArena Arena { get; }

    public IBackend Backend => Arena.Backend;

    /// <summary>The chunk tables and norm workspaces of the arena (trust ratios, gradient norm, clip scale live there).</summary>
    public OptimizerPlan Plan { get; }

    /// <summary>
    /// Steps taken. The next <see cref="Step()"/> is step StepCount (0-based) of <see cref="Schedule"/> and of the teacher's
    /// momentum schedule, and AdamW's bias-correction step StepCount + 1. Set it when resuming from a checkpoint.
    /// </summary>
    public long StepCount
    {
        get => _stepCount;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _stepCount = value;
        }
    }

    /// <summary>The learning rate used when no <see cref="Schedule"/> is set.</summary>
    public float LearningRate
    {
        get => _learningRate;
        set => _learningRate = NonNegative(value, nameof(LearningRate));
    }

    /// <summary>When set, the learning rate of each step is Schedule.At(StepCount) and <see cref="LearningRate"/> is ignored.</summary>
    public LearningRateSchedule? Schedule { get; set; }

    public float WeightDecay
    {
        get => _weightDecay;
        set => _weightDecay = NonNegative(value, nameof(WeightDecay));
    }

    /// <summary>Decay (and LARS-adapt) biases and BatchNorm parameters too; false (SimCLR's recipe) excludes them.</summary>
    public bool DecayBiasAndNorm { get; set; }

    /// <summary>Clip gradients by their global L2 norm before the step (computed and applied on the device); null: no clipping.</summary>
    public GradientClipping? Clipping { get; set; }

    /// <summary>The learning rate the next step will use.</summary>
    public float CurrentLearningRate => Schedule?.At(StepCount) ?? LearningRate;

    /// <summary>The global gradient norm before clipping, on the device (1 element), written by steps that clip (LARS steps always).</summary>
    public Tensor GradientNorm => Plan.GradientNorm;

    /// <summary>One step over the arena's gradients at <see cref="CurrentLearningRate"/>; increments <see cref="StepCount"/>.</summary>
    public void Step() => Step(null);

    /// <summary>
    /// One step that also updates <paramref name="teacher"/>'s EMA from the new weights in the same pass over memory
    /// (MoCo, BYOL), with momentum teacher.MomentumAt(StepCount). Its buffers, when it includes them, follow in one more launch.
    /// </summary>
    public void Step(Ema? teacher)
    {
        if (teacher is not null && !ReferenceEquals(teacher.Student, Arena))
        {
            throw new ArgumentException("the EMA's student is not the arena this optimizer steps", nameof(teacher));
        }
        var momentum = teacher?.MomentumAt(StepCount) ?? 0f;
        var options = new StepOptions(DecayBiasAndNorm, Clipping?.MaxNorm ?? 0f, teacher?.TeacherTrainableValues, momentum);
        Apply(CurrentLearningRate, _values, _gradients, options);
        teacher?.UpdateBuffers(momentum);
        StepCount++;
    }

    /// <summary>Zeroes the arena's gradients (one memset over the whole buffer).</summary>
    public void ZeroGradients() => Backend.Fill(_gradients, 0f);

    /// <summary>Writes the global gradient norm into <see cref="GradientNorm"/> without stepping (for logging).</summary>
    public void ComputeGradientNorm() => Backend.GradientNorm(Plan, _gradients, Clipping?.MaxNorm ?? 0f);

    /// <summary>Zeroes the optimiser state and the step count: a fresh start with the same weights.</summary>
    public void ResetState()
    {
        Backend.Fill(Arena.OptimizerState, 0f);
        StepCount = 0;
    }

    /// <summary>Everything but the state tensor that an exact resume needs, as invariant-culture strings.</summary>
    public IReadOnlyDictionary<string, string> GetHyperparameters()
    {
        var values = new Dictionary<string, string>
        {
            ["optimizer"] = Name,
            ["step"] = StepCount.ToString(CultureInfo.InvariantCulture),
            ["lr"] = Format(LearningRate),
            ["weight_decay"] = Format(WeightDecay),
            ["decay_bias_and_norm"] = DecayBiasAndNorm ? "true" : "false",
            ["max_grad_norm"] = Format(Clipping?.MaxNorm ?? 0f),
        };
        WriteHyperparameters(values);
        return values;
    }

    /// <summary>Restores what <see cref="GetHyperparameters"/> wrote (from an optimizer of the same kind).</summary>
    public void SetHyperparameters(IReadOnlyDictionary<string, string> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (Read(values, "optimizer") != Name)
        {
            throw new ArgumentException($"the hyperparameters are for '{values["optimizer"]}', this optimizer is '{Name}'", nameof(values));
        }
        StepCount = long.Parse(Read(values, "step"), CultureInfo.InvariantCulture);
        LearningRate = ReadFloat(values, "lr");
        WeightDecay = ReadFloat(values, "weight_decay");
        DecayBiasAndNorm = ReadBool(values, "decay_bias_and_norm");
        var maxNorm = ReadFloat(values, "max_grad_norm");
        Clipping = maxNorm > 0f ? new GradientClipping(maxNorm) : null;
        ReadHyperparameters(values);
    }

    public void Dispose()
    {
        Plan.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Queues the fused step over the trainable prefix.</summary>
    protected abstract void Apply(float learningRate, Tensor values, Tensor gradients, StepOptions options);

    protected abstract void WriteHyperparameters(IDictionary<string, string> values);

    protected abstract void ReadHyperparameters(IReadOnlyDictionary<string, string> values);

    protected static string Format(float value) => value.ToString("R", CultureInfo.InvariantCulture);

    protected static string Read(IReadOnlyDictionary<string, string> values, string key) =>
        values.TryGetValue(key, out var text) ? text : throw new KeyNotFoundException($"optimizer hyperparameter '{key}' is missing");

    protected static float ReadFloat(IReadOnlyDictionary<string, string> values, string key) =>
        float.Parse(Read(values, key), NumberStyles.Float, CultureInfo.InvariantCulture);

    protected static bool ReadBool(IReadOnlyDictionary<string, string> values, string key) => Read(values, key) switch
    {
        "true" => true,
        "false" => false,
        var other => throw new FormatException($"optimizer hyperparameter '{key}' is '{other}', expected true or false"),
    };

    protected static float NonNegative(float value, string name) =>
        value >= 0f && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(name, $"{name} {value} must be finite and >= 0");

    protected static float Fraction(float value, string name) =>
        value >= 0f && value < 1f ? value : throw new ArgumentOutOfRangeException(name, $"{name} {value} must be in [0, 1)");
}

/// <summary>Clipping of the gradients' global L2 norm to <see cref="MaxNorm"/>, as torch.nn.utils.clip_grad_norm_ does (scale min(1, max/(norm + 1e-6))).</summary>
public sealed record GradientClipping
{
    public GradientClipping(float maxNorm)
    {
        if (!(maxNorm > 0f) || !float.IsFinite(maxNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(maxNorm), $"max gradient norm {maxNorm} must be finite and > 0");
        }
        MaxNorm = maxNorm;
    }

    public float MaxNorm { get; }
}
