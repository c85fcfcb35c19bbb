namespace NativeContrast.Losses;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// Cross-entropy of student logits s [N, C] against soft targets at a temperature T, SimCLR v2's distillation loss
/// (Chen et al. 2020b, eq. 3): L = −(1/N) Σ_i Σ_c w_ic · log softmax(s_i / T)_c. The targets w ≥ 0 are the teacher's
/// probabilities softmax(t_i / T) (<see cref="SetTeacher"/>) or any weights written into <see cref="Targets"/> (a one-hot
/// row per labelled image and zero rows for the others make a label term on part of a batch). With r_i = Σ_c w_ic,
/// L = (1/N) Σ_i r_i · logsumexp(s_i / T) − (1/N) Σ_ic w_ic · s_ic / T and ∂L/∂s_i = (r_i · softmax(s_i / T) − w_i) / (N·T).
/// No T² factor (Hinton et al.'s). Composed of backend ops on buffers made once: a step allocates nothing and never
/// waits for the device.
/// </summary>
public sealed class DistillationLoss : IDisposable
{
    private readonly IBackend _backend;
    private readonly Tensor _scaled;
    private readonly Tensor _probabilities;
    private readonly Tensor _logSumExp;
    private readonly Tensor _rowSums;
    private readonly Tensor _dot;

    // The batch read as one row, for the two sums over it (a row-dot each).
    private readonly Tensor _rowSumsRow;
    private readonly Tensor _logSumExpRow;
    private readonly Tensor _targetsRow;
    private readonly Tensor _scaledRow;
    private bool _forwarded;

    public DistillationLoss(IBackend backend, int rows, int classes, float temperature)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        if (!(temperature > 0) || !float.IsFinite(temperature))
        {
            throw new ArgumentOutOfRangeException(nameof(temperature), $"the distillation temperature is {temperature}; it must be finite and positive");
        }
        _backend = backend;
        Rows = rows;
        Classes = classes;
        Temperature = temperature;
        var matrix = new TensorShape(rows, classes);
        var owned = new List<Tensor>();
        Tensor Allocate(TensorShape shape, string name)
        {
            var tensor = backend.Allocate(shape, name);
            owned.Add(tensor);
            return tensor;
        }
        try
        {
            Targets = Allocate(matrix, "distill targets");
            Gradient = Allocate(matrix, "distill dlogits");
            Loss = Allocate(new TensorShape(1), "distill loss");
            _scaled = Allocate(matrix, "distill logits / T");
            _probabilities = Allocate(matrix, "distill student probabilities");
            _logSumExp = Allocate(new TensorShape(rows), "distill logsumexp");
            _rowSums = Allocate(new TensorShape(rows), "distill target sums");
            _dot = Allocate(new TensorShape(1), "distill target dot");
            _rowSumsRow = _rowSums.Reshape(1, rows);
            _logSumExpRow = _logSumExp.Reshape(1, rows);
            _targetsRow = Targets.Reshape(1, rows * classes);
            _scaledRow = _scaled.Reshape(1, rows * classes);
        }
        catch
        {
            owned.ForEach(t => t.Dispose());
            throw;
        }
    }

    public int Rows { get; }

    public int Classes { get; }

    public float Temperature { get; }

    /// <summary>The targets w [Rows, Classes]: written by <see cref="SetTeacher"/>, or by the caller.</summary>
    public Tensor Targets { get; }

    /// <summary>The mean loss [1] of the last <see cref="Forward"/>, on the backend.</summary>
    public Tensor Loss { get; }

    /// <summary>scale · ∂L/∂s [Rows, Classes] of the last <see cref="Backward"/>.</summary>
    public Tensor Gradient { get; }

    /// <summary>Targets ← softmax(t / T) of the teacher's logits t [Rows, Classes].</summary>
    public void SetTeacher(Tensor teacherLogits)
    {
        Check.Rows(teacherLogits, Rows, Classes);
        _backend.Scale(teacherLogits, 1f / Temperature, _scaled);
        _backend.SoftmaxRows(_scaled, Targets);
    }

    /// <summary>L of the student's logits s [Rows, Classes] against <see cref="Targets"/>, into <see cref="Loss"/>.</summary>
    public Tensor Forward(Tensor studentLogits)
    {
        Check.Rows(studentLogits, Rows, Classes);
        var n = 1f / Rows;
        _backend.Scale(studentLogits, 1f / Temperature, _scaled);
        _backend.LogSumExpRows(_scaled, _logSumExp);
        _backend.SumRows(Targets, _rowSums);
        _backend.RowDot(_rowSumsRow, _logSumExpRow, n, Loss);
        _backend.RowDot(_targetsRow, _scaledRow, -n, _dot);
        _backend.Add(Loss, _dot, Loss);
        _forwarded = true;
        return Loss;
    }

    /// <summary><see cref="Gradient"/> ← scale · ∂L/∂s for the logits of the last <see cref="Forward"/> (and the same targets).</summary>
    public Tensor Backward(float scale = 1f)
    {
        if (!_forwarded)
        {
            throw new InvalidOperationException("DistillationLoss.Backward before Forward");
        }
        _backend.SoftmaxRows(_scaled, _probabilities);
        _backend.Scale(Targets, -1f, Gradient);
        _backend.AddScaledRows(_probabilities, _rowSums, Gradient);
        _backend.Scale(Gradient, scale / (Rows * Temperature), Gradient);
        return Gradient;
    }

    public void Dispose()
    {
        foreach (var tensor in new[] { Targets, Gradient, Loss, _scaled, _probabilities, _logSumExp, _rowSums, _dot })
        {
            tensor.Dispose();
        }
    }
}
