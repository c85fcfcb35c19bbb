namespace NativeContrast.Tests.Optim;

using NativeContrast.Backends;
using NativeContrast.Optim;
using NativeContrast.Tensors;

public class LearningRateScheduleTests
{
    // SimCLR-like: 1000 steps, 100 of warm-up from 0.01, cosine from 4.8 to a floor of 0.048.
    private static readonly LearningRateSchedule Schedule = new(4.8f, totalSteps: 1000, warmupSteps: 100, finalLearningRate: 0.048f, warmupStartLearningRate: 0.01f);

    [Test]
    public void WarmupStartsAtTheStartValueAndRisesLinearly()
    {
        Assert.That(Schedule.At(0), Is.EqualTo(0.01f));
        Assert.That(Schedule.At(50), Is.EqualTo((float)(0.01f + ((4.8f - (double)0.01f) / 2))));
        Assert.That(Schedule.At(99), Is.LessThan(4.8f));
    }

    [Test]
    public void WarmupEndsAtTheBaseValue() => Assert.That(Schedule.At(100), Is.EqualTo(4.8f));

    [Test]
    public void CosineIsHalfwayBetweenBaseAndFloorAtItsMiddle()
    {
        Assert.That(Schedule.At(550), Is.EqualTo((float)((4.8f + (double)0.048f) / 2)));
        Assert.That(Schedule.At(325), Is.EqualTo((float)(0.048f + ((4.8f - (double)0.048f) * (1 + Math.Cos(Math.PI / 4)) / 2))));
    }

    [Test]
    public void CosineEndsAtTheFloorAndStaysThere()
    {
        Assert.That(Schedule.At(1000), Is.EqualTo(0.048f));
        Assert.That(Schedule.At(5000), Is.EqualTo(0.048f));
        Assert.That(Schedule.At(999), Is.GreaterThan(0.048f));
    }

    [Test]
    public void WithoutWarmupTheFirstStepUsesTheBaseValue()
    {
        var schedule = new LearningRateSchedule(0.3f, totalSteps: 10);
        Assert.That(schedule.At(0), Is.EqualTo(0.3f));
        Assert.That(schedule.At(10), Is.Zero);
    }

    [Test]
    public void ScheduleIsMonotoneAfterWarmup()
    {
        for (var step = 100; step < 1000; step++)
        {
            Assert.That(Schedule.At(step + 1), Is.LessThanOrEqualTo(Schedule.At(step)), $"step {step}");
        }
    }

    [Test]
    public void BadSchedulesAreRefused()
    {
        Assert.That(() => new LearningRateSchedule(0.1f, totalSteps: 10, warmupSteps: 11), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new LearningRateSchedule(-0.1f, totalSteps: 10), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => Schedule.At(-1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void SimClrBatchScaling()
    {
        Assert.That(LearningRateScaling.Linear(0.3f, 4096), Is.EqualTo(4.8f));
        Assert.That(LearningRateScaling.Linear(0.03f, 256), Is.EqualTo(0.03f));
        Assert.That(LearningRateScaling.SquareRoot(0.075f, 4096), Is.EqualTo(4.8f));
    }

    [Test]
    public void OptimizerTakesItsLearningRateFromTheScheduleAtItsStepCount()
    {
        using var cpu = new CpuBackend();
        using var arena = new ParameterArena(cpu, OptimFixtures.SmallLayout(), optimizerStateSlots: 1);
        using var sgd = new Sgd(arena, learningRate: 123f) { Schedule = Schedule };
        Assert.That(sgd.CurrentLearningRate, Is.EqualTo(0.01f));
        sgd.StepCount = 550;
        Assert.That(sgd.CurrentLearningRate, Is.EqualTo(Schedule.At(550)));
        sgd.Schedule = null;
        Assert.That(sgd.CurrentLearningRate, Is.EqualTo(123f));
    }
}
