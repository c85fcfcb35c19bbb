namespace NativeContrast.Cli.Reports;

using System.Globalization;
using NativeContrast.Training;
using Spectre.Console;

/// <summary>
/// Shows a run's progress: on a terminal a live progress bar (epoch, loss, images/s, ETA), elsewhere (pipes, files,
/// tests) a plain line every tenth of an epoch and at every epoch's end. Evaluation and checkpoint messages go above.
/// </summary>
public sealed class ProgressReporter(IAnsiConsole console, bool live) : ITrainingObserver
{
    private ProgressTask? _task;
    private TrainingStart? _start;
    private int _lineEvery = 1;

    /// <summary>Runs <paramref name="body"/> with the live bar drawn (when live) and returns its result.</summary>
    public T Show<T>(Func<T> body)
    {
        if (!live)
        {
            return body();
        }
        return console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                _task = context.AddTask("starting", maxValue: 1);
                return body();
            });
    }

    public void Started(TrainingStart start)
    {
        _start = start;
        _lineEvery = Math.Max(1, start.StepsPerEpoch / 10);
        console.MarkupLine(Markup.Escape(start.Description));
        if (start.FirstStep > 0)
        {
            console.MarkupLine(Markup.Escape($"resuming at step {start.FirstStep} of {start.TotalSteps} (epoch {start.FirstEpoch + 1})"));
        }
        if (_task is not null)
        {
            _task.MaxValue = start.TotalSteps;
            _task.Value = start.FirstStep;
        }
    }

    public void StepCompleted(StepMetrics m)
    {
        var epochs = _start?.Epochs ?? 0;
        var text = string.Create(CultureInfo.InvariantCulture, $"epoch {m.Epoch + 1}/{epochs}  loss {m.Loss:F4}{(float.IsNaN(m.Top1) ? "" : $"  top-1 {100 * m.Top1:F1}%")}  lr {m.LearningRate:G3}  {m.ImagesPerSecond:F0} img/s");
        if (_task is not null)
        {
            _task.Description = Markup.Escape(text);
            _task.Value = m.Step + 1;
        }
        else if ((m.Batch + 1) % _lineEvery == 0)
        {
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step {m.Step + 1}/{_start?.TotalSteps}  {text}"));
        }
    }

    public void EpochCompleted(EpochMetrics m)
    {
        var knn = m.Knn is { } a ? string.Create(CultureInfo.InvariantCulture, $"  kNN top-1 {100 * a.Top1:F2}%") : "";
        var test = m.Classifier is { } c ? string.Create(CultureInfo.InvariantCulture, $"  test top-1 {100 * c.Top1:F2}%") : "";
        console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"epoch {m.Epoch + 1}/{_start?.Epochs}: loss {m.MeanLoss:F4}{test}{knn}  {m.Seconds:F1} s, {m.ImagesPerSecond:F0} img/s"));
    }

    public void Message(string line) => console.WriteLine(line);
}
