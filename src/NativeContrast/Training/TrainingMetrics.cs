namespace NativeContrast.Training;

using NativeContrast.Eval;

/// <summary>What one optimiser step measured: the loss's statistics, the learning rate it used, throughput.</summary>
public sealed record StepMetrics(long Step, int Epoch, int Batch, float Loss, float LearningRate, float PositiveCosine, float Top1, double ImagesPerSecond);

/// <summary>
/// An epoch's summary (time and images/s of its training steps), with the kNN monitor's accuracy when it ran and the
/// method's classifier's test accuracy when it has one.
/// </summary>
public sealed record EpochMetrics(int Epoch, long Step, double MeanLoss, Accuracy? Knn, double Seconds, double ImagesPerSecond, Accuracy? Classifier = null);

/// <summary>Where a run starts and how long it is.</summary>
public sealed record TrainingStart(long FirstStep, long TotalSteps, int StepsPerEpoch, int FirstEpoch, int Epochs, string Description);

/// <summary>How a run ended: the last kNN and classifier accuracies measured, the files written.</summary>
public sealed record TrainingResult(
    int EpochsCompleted,
    long Steps,
    bool Interrupted,
    Accuracy? Knn,
    double Seconds,
    double ImagesPerSecond,
    string? CheckpointPath,
    string? EncoderPath,
    Accuracy? Classifier = null);

/// <summary>Receives the trainer's progress: the CLI draws a progress bar from it, tests record it.</summary>
public interface ITrainingObserver
{
    void Started(TrainingStart start);

    void StepCompleted(StepMetrics metrics);

    void EpochCompleted(EpochMetrics metrics);

    /// <summary>A line for the log (evaluation passes, checkpoints written).</summary>
    void Message(string line);
}

/// <summary>A loss that is NaN or infinite: the run stops at that step, before the optimiser applies it.</summary>
public sealed class NonFiniteLossException(long step, int epoch, float loss, string? lastCheckpoint)
    : Exception($"the loss is {loss} at step {step} (epoch {epoch}): training stopped before applying it; " +
        (lastCheckpoint is null ? "no checkpoint was written yet" : $"the last good checkpoint is {lastCheckpoint}") +
        " (try a lower --lr or a larger --batch)")
{
    public long Step { get; } = step;

    public int Epoch { get; } = epoch;

    public string? LastCheckpoint { get; } = lastCheckpoint;
}
