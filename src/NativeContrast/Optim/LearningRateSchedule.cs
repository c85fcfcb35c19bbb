namespace NativeContrast.Optim;

/// <summary>
/// Linear warm-up then cosine decay to a floor, as a pure function of the step (so a resumed run continues exactly):
/// for step &lt; W, lr = start + (base − start)·step/W; for W ≤ step ≤ T, lr = floor + (base − floor)·(1 + cos(π·(step − W)/(T − W)))/2;
/// after T, the floor. SimCLR: base 0.3·batch/256 (see <see cref="LearningRateScaling"/>), W = 10 epochs, floor 0.
/// </summary>
public sealed record LearningRateSchedule
{
    /// <param name="baseLearningRate">The peak, reached at the end of the warm-up.</param>
    /// <param name="totalSteps">T: the step at which the cosine reaches the floor.</param>
    /// <param name="warmupSteps">W: steps of linear warm-up (0 for none).</param>
    /// <param name="finalLearningRate">The floor the cosine decays to.</param>
    /// <param name="warmupStartLearningRate">The learning rate of step 0 when there is a warm-up.</param>
    public LearningRateSchedule(float baseLearningRate, long totalSteps, long warmupSteps = 0, float finalLearningRate = 0f, float warmupStartLearningRate = 0f)
    {
        foreach (var (value, name) in new[] { (baseLearningRate, nameof(baseLearningRate)), (finalLearningRate, nameof(finalLearningRate)), (warmupStartLearningRate, nameof(warmupStartLearningRate)) })
        {
            if (!(value >= 0f) || !float.IsFinite(value))
            {
                throw new ArgumentOutOfRangeException(name, $"{name} {value} must be finite and >= 0");
            }
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalSteps);
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(warmupSteps, totalSteps);
        BaseLearningRate = baseLearningRate;
        TotalSteps = totalSteps;
        WarmupSteps = warmupSteps;
        FinalLearningRate = finalLearningRate;
        WarmupStartLearningRate = warmupStartLearningRate;
    }

    public float BaseLearningRate { get; }

    public long TotalSteps { get; }

    public long WarmupSteps { get; }

    public float FinalLearningRate { get; }

    public float WarmupStartLearningRate { get; }

    /// <summary>The learning rate of step <paramref name="step"/> (0-based), computed in double and rounded once.</summary>
    public float At(long step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        if (step < WarmupSteps)
        {
            return (float)(WarmupStartLearningRate + ((BaseLearningRate - (double)WarmupStartLearningRate) * step / WarmupSteps));
        }
        if (step >= TotalSteps)
        {
            return FinalLearningRate;
        }
        var progress = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return (float)(FinalLearningRate + ((BaseLearningRate - (double)FinalLearningRate) * 0.5 * (1 + Math.Cos(Math.PI * progress))));
    }
}

/// <summary>How SimCLR scales the learning rate with the batch size.</summary>
public static class LearningRateScaling
{
    /// <summary>base · batch / reference (SimCLR's "linear" scaling: 0.3 · batch / 256 with LARS; MoCo's 0.03 · batch / 256).</summary>
    public static float Linear(float baseLearningRate, int batchSize, int referenceBatchSize = 256)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(referenceBatchSize);
        return (float)((double)baseLearningRate * batchSize / referenceBatchSize);
    }

    /// <summary>coefficient · √batch (SimCLR's "sqrt" scaling, 0.075 · √batch, better for small batches and long training).</summary>
    public static float SquareRoot(float coefficient, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return (float)(coefficient * Math.Sqrt(batchSize));
    }
}
