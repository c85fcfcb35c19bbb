namespace NativeContrast.Optim;

using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>
/// A teacher arena that follows a student by exponential moving average: teacher ← m·teacher + (1 − m)·student, one
/// launch over the arena (MoCo's key encoder, BYOL's target network). The momentum is constant (MoCo v1/v2, 0.999)
/// or, with <see cref="CosineSteps"/> &gt; 0, increased to 1 by a cosine as BYOL and MoCo v3 do:
/// m(k) = 1 − (1 − m₀)·(1 + cos(π·k/K))/2. Pass it to <see cref="Optimizer.Step(Ema)"/> to fuse the update into the
/// optimiser's pass, or call <see cref="Update"/> after the step. The EMA keeps no state of its own: the step index
/// comes from the caller (the optimizer's step count), so resuming needs only the teacher's values.
/// </summary>
public sealed class Ema
{
    private readonly Tensor _teacherBuffers;
    private readonly Tensor _studentBuffers;

    /// <param name="teacher">The arena that follows; same layout as <paramref name="student"/>, on the same backend.</param>
    /// <param name="baseMomentum">m₀ (0.999 for MoCo v2, 0.996 for BYOL, 0.99 for MoCo v3).</param>
    /// <param name="cosineSteps">K: steps over which the momentum rises to 1 (0: constant momentum).</param>
    /// <param name="includeBuffers">Also average the buffers (BatchNorm running statistics); MoCo and BYOL leave the teacher's own.</param>
    public Ema(ParameterArena teacher, ParameterArena student, float baseMomentum, long cosineSteps = 0, bool includeBuffers = false)
    {
        ArgumentNullException.ThrowIfNull(teacher);
        ArgumentNullException.ThrowIfNull(student);
        if (!(baseMomentum >= 0f && baseMomentum <= 1f))
        {
            throw new ArgumentOutOfRangeException(nameof(baseMomentum), $"EMA momentum {baseMomentum} is outside [0, 1]");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(cosineSteps);
        if (!ReferenceEquals(teacher.Backend, student.Backend))
        {
            throw new ArgumentException($"teacher and student live on different backends ({teacher.Backend.Name}, {student.Backend.Name})", nameof(teacher));
        }
        CheckSameLayout(teacher, student);
        Teacher = teacher;
        Student = student;
        BaseMomentum = baseMomentum;
        CosineSteps = cosineSteps;
        IncludeBuffers = includeBuffers;
        TeacherTrainableValues = teacher.TrainableValues;
        StudentTrainableValues = student.TrainableValues;
        var bufferShape = new TensorShape(checked((int)(teacher.Length - teacher.TrainableLength)));
        _teacherBuffers = teacher.Values.View(teacher.TrainableLength, bufferShape, "teacher buffers");
        _studentBuffers = student.Values.View(student.TrainableLength, bufferShape, "student buffers");
    }

    public ParameterArena Teacher { get; }

    public ParameterArena Student { get; }

    public float BaseMomentum { get; }

    public long CosineSteps { get; }

    public bool IncludeBuffers { get; }

    internal Tensor TeacherTrainableValues { get; }

    private Tensor StudentTrainableValues { get; }

    /// <summary>The momentum of the update made at step <paramref name="step"/> (0-based).</summary>
    public float MomentumAt(long step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (CosineSteps == 0)
        {
            return BaseMomentum;
        }
        var progress = (double)Math.Min(step, CosineSteps) / CosineSteps;
        return (float)(1.0 - ((1.0 - BaseMomentum) * (1.0 + Math.Cos(Math.PI * progress)) / 2.0));
    }

    /// <summary>The update of step <paramref name="step"/> on its own: one launch over the trainable prefix (the whole arena with buffers).</summary>
    public void Update(long step)
    {
        var momentum = MomentumAt(step);
        if (IncludeBuffers)
        {
            Teacher.Backend.EmaUpdate(Teacher.Values, Student.Values, momentum);
        }
        else
        {
            Teacher.Backend.EmaUpdate(TeacherTrainableValues, StudentTrainableValues, momentum);
        }
    }

    /// <summary>teacher ← student, values and buffers: MoCo and BYOL start the teacher as a copy.</summary>
    public void CopyStudentToTeacher() => Teacher.Backend.Copy(Student.Values, Teacher.Values);

    /// <summary>The buffers' share of a fused step, which covers the trainable views only.</summary>
    internal void UpdateBuffers(float momentum)
    {
        if (IncludeBuffers && _teacherBuffers.Length > 0)
        {
            Teacher.Backend.EmaUpdate(_teacherBuffers, _studentBuffers, momentum);
        }
    }

    private static void CheckSameLayout(ParameterArena teacher, ParameterArena student)
    {
        var same = teacher.Length == student.Length && teacher.TrainableLength == student.TrainableLength && teacher.Views.Count == student.Views.Count;
        for (var i = 0; same && i < teacher.Views.Count; i++)
        {
            var (t, s) = (teacher.Views[i], student.Views[i]);
            same = t.Offset == s.Offset && t.Shape == s.Shape && t.Kind == s.Kind;
        }
        if (!same)
        {
            throw new ArgumentException($"teacher and student arenas differ in layout ({teacher.Views.Count} views, {teacher.Length} elements vs {student.Views.Count} views, {student.Length} elements)", nameof(teacher));
        }
    }
}
