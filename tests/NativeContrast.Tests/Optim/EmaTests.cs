namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Optim;
using NativeContrast.Tensors;
using NativeContrast.Tests.Support;
using static NativeContrast.Tests.Optim.OptimFixtures;

public class EmaTests
{
    private CpuBackend _cpu = null!;

    [SetUp]
    public void CreateBackend() => _cpu = new CpuBackend();

    [TearDown]
    public void DisposeBackend() => _cpu.Dispose();

    /// <summary>The exact float expression both backends promise: fma(m, t, (1 − m)·s).</summary>
    internal static float[] EmaReference(float[] teacher, float[] student, float m)
    {
        var oneMinusM = 1f - m;
        return [.. teacher.Select((t, i) => MathF.FusedMultiplyAdd(m, t, oneMinusM * student[i]))];
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(33)]
    [TestCase(1000)]
    [TestCase(70_001)]
    public void EmaIsBitExactToTheFmaExpressionAndCloseToFloat64(int n)
    {
        var teacher = Numerics.RandomArray(n, 1);
        var student = Numerics.RandomArray(n, 2);
        using var t = _cpu.FromArray(teacher, new TensorShape(n));
        using var s = _cpu.FromArray(student, new TensorShape(n));
        _cpu.EmaUpdate(t, s, 0.996f);
        AssertBitwiseEqual(t.Span.ToArray(), EmaReference(teacher, student, 0.996f), "EMA");
        var m = (double)0.996f;
        Numerics.AssertClose(t.Span, teacher.Select((x, i) => (m * x) + ((1 - m) * student[i])).ToArray(), Numerics.Fp32Tolerance, "EMA vs float64");
    }

    [Test]
    public void MomentumOneKeepsTheTeacherAndZeroCopiesTheStudent()
    {
        var teacher = Numerics.RandomArray(37, 3);
        var student = Numerics.RandomArray(37, 4);
        using var t = _cpu.FromArray(teacher, new TensorShape(37));
        using var s = _cpu.FromArray(student, new TensorShape(37));
        _cpu.EmaUpdate(t, s, 1f);
        AssertBitwiseEqual(t.Span.ToArray(), teacher, "m = 1");
        _cpu.EmaUpdate(t, s, 0f);
        AssertBitwiseEqual(t.Span.ToArray(), student, "m = 0");
        Assert.That(() => _cpu.EmaUpdate(t, s, 1.5f), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void CosineMomentumRisesFromTheBaseToOne()
    {
        using var a = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 0);
        using var b = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        var ema = new Ema(a, b, baseMomentum: 0.996f, cosineSteps: 1000);
        Assert.That(ema.MomentumAt(0), Is.EqualTo(0.996f));
        Assert.That(ema.MomentumAt(500), Is.EqualTo((float)(1 - (0.5 * (1 - (double)0.996f)))), "halfway: (1 + m0) / 2");
        Assert.That(ema.MomentumAt(250), Is.EqualTo((float)(1 - ((1 - (double)0.996f) * (1 + Math.Cos(Math.PI / 4)) / 2))));
        Assert.That(ema.MomentumAt(1000), Is.EqualTo(1f));
        Assert.That(ema.MomentumAt(5000), Is.EqualTo(1f), "stays at 1 after the schedule");
        var constant = new Ema(a, b, baseMomentum: 0.999f);
        Assert.That(constant.MomentumAt(123_456), Is.EqualTo(0.999f), "MoCo v2's constant momentum");
    }

    [TestCase(false)]
    [TestCase(true)]
    public void UpdateCoversBuffersOnlyWhenAsked(bool includeBuffers)
    {
        using var teacher = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 0);
        using var student = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(teacher, seed: 5);
        Randomise(student, seed: 6);
        var (t0, s0) = (Read(teacher, teacher.Values), Read(student, student.Values));
        new Ema(teacher, student, 0.9f, includeBuffers: includeBuffers).Update(step: 0);
        var expected = EmaReference(t0, s0, 0.9f);
        var after = Read(teacher, teacher.Values);
        foreach (var view in teacher.Views)
        {
            var i = (int)view.Offset;
            var moved = view.IsTrainable || includeBuffers;
            Assert.That(after[i], Is.EqualTo(moved ? expected[i] : t0[i]), $"{view.Name} ({view.Kind})");
        }
    }

    [Test]
    public void CopyStudentToTeacherCopiesValuesAndBuffers()
    {
        using var teacher = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 0);
        using var student = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Randomise(student, seed: 7);
        new Ema(teacher, student, 0.99f).CopyStudentToTeacher();
        AssertBitwiseEqual(Read(teacher, teacher.Values), Read(student, student.Values), "teacher after the copy");
    }

    [Test]
    public void EmaRefusesArenasOfDifferentLayouts()
    {
        var other = SmallLayout();
        other.Add("extra.weight", new TensorShape(5), ParameterKind.Weight);
        using var teacher = new ParameterArena(_cpu, other, optimizerStateSlots: 0);
        using var student = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 1);
        Assert.That(() => new Ema(teacher, student, 0.99f), Throws.ArgumentException.With.Message.Contains("layout"));
    }

    public enum Kind
    {
        Sgd,
        Lars,
        AdamW,
    }

    /// <summary>The fused step+EMA must equal the step followed by a separate EMA launch, bit for bit, buffers included.</summary>
    [TestCase(Kind.Sgd)]
    [TestCase(Kind.Lars)]
    [TestCase(Kind.AdamW)]
    public void FusedStepAndEmaEqualsStepThenEma(Kind kind)
    {
        (float[] Student, float[] Teacher, float[] State) Run(bool fused)
        {
            using var student = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 2);
            using var teacher = new ParameterArena(_cpu, SmallLayout(), optimizerStateSlots: 0);
            Randomise(student, seed: 8);
            Randomise(teacher, seed: 9);
            var ema = new Ema(teacher, student, baseMomentum: 0.99f, cosineSteps: 10, includeBuffers: true);
            using Optimizer optimizer = kind switch
            {
                Kind.Sgd => new Sgd(student, 0.1f, weightDecay: 0.01f, nesterov: true, chunkLength: 64),
                Kind.Lars => new Lars(student, 0.3f, weightDecay: 0.01f, trustCoefficient: 0.01f, chunkLength: 64),
                _ => new AdamW(student, 0.01f, chunkLength: 64),
            };
            optimizer.Clipping = new GradientClipping(2f);
            for (var step = 0; step < 3; step++)
            {
                RandomGradients(student, seed: 500 + step);
                if (fused)
                {
                    optimizer.Step(ema);
                }
                else
                {
                    var k = optimizer.StepCount;
                    optimizer.Step();
                    ema.Update(k);
                }
            }
            return (Read(student, student.Values), Read(teacher, teacher.Values), Read(student, student.OptimizerState));
        }
        var (a, b) = (Run(fused: true), Run(fused: false));
        AssertBitwiseEqual(a.Student, b.Student, "student");
        AssertBitwiseEqual(a.Teacher, b.Teacher, "teacher");
        AssertBitwiseEqual(a.State, b.State, "optimizer state");
    }
}
