namespace NativeContrast.Cli.Commands;

using System.Globalization;
using System.Runtime.InteropServices;
using NativeContrast.Cli.Reports;
using NativeContrast.Data;
using NativeContrast.Eval;
using NativeContrast.Training;
using Spectre.Console;

/// <summary>
/// What train, finetune and distill share around a <see cref="Trainer"/>: the signals that stop a run cleanly, the
/// progress display, the plot, and the summary table's common rows.
/// </summary>
internal sealed class TrainingSession : IDisposable
{
    private readonly CancellationTokenSource _cancel = CancellationTokenSource.CreateLinkedTokenSource(Program.CallerCancellation);
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;

    /// <summary>
    /// From now on, the first Ctrl+C (SIGINT) or SIGTERM (a scheduler's preemption) stops after the current step and
    /// writes a checkpoint; a second one ends the process at once.
    /// </summary>
    public TrainingSession()
    {
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = !_cancel.IsCancellationRequested;
            _cancel.Cancel();
        }
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    /// <summary>
    /// Runs <paramref name="trainer"/> with the progress display on <paramref name="console"/> (a live bar when
    /// <paramref name="output"/> is an interactive terminal) and writes the plot of its metrics (rank 0 of a
    /// data-parallel run alone: the plot is "" elsewhere). Null after an interruption (its line printed, naming the
    /// checkpoint to resume from). <paramref name="observe"/> may wrap the progress display in another observer.
    /// </summary>
    public (TrainingResult Result, string Plot)? Run(IAnsiConsole console, TextWriter output, Trainer trainer, string outputDirectory, string title, Func<ITrainingObserver, ITrainingObserver>? observe = null)
    {
        var reporter = new ProgressReporter(console, live: ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected);
        var observer = observe?.Invoke(reporter) ?? reporter;
        var result = reporter.Show(() => trainer.Run(observer, _cancel.Token));
        var plot = trainer.IsRoot ? TrainingPlot.Write(outputDirectory, title) : "";
        if (result.Interrupted)
        {
            console.WriteLine($"interrupted at step {result.Steps}: checkpoint {result.CheckpointPath}; continue with --resume {outputDirectory}");
            return null;
        }
        return (result, plot);
    }

    /// <summary>The summary's first rows: what ran and how fast.</summary>
    public static Table Summary(Trainer trainer, TrainingResult result)
    {
        var table = new Table().AddColumn("run").AddColumn(new TableColumn("value"));
        table.AddRow("method", Markup.Escape(trainer.Description));
        table.AddRow("steps", Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"{result.Steps} ({result.EpochsCompleted} epochs) in {result.Seconds:F1} s, {result.ImagesPerSecond:F0} images/s")));
        return table;
    }

    /// <summary>A table row's text for an accuracy: "12.34%  (top-5 56.78%)".</summary>
    public static string Percent(Accuracy accuracy) => string.Create(CultureInfo.InvariantCulture, $"{100 * accuracy.Top1:F2}%  (top-5 {100 * accuracy.Top5:F2}%)");

    /// <summary>The summary's last row: the files the run wrote.</summary>
    public static void AddFiles(Table table, Trainer trainer, TrainingResult result, string plot) =>
        table.AddRow("files", Markup.Escape($"{result.CheckpointPath}, {result.EncoderPath}, {Path.Combine(trainer.Options.OutputDirectory!, MetricsLog.FileName)}, {plot}"));

    /// <summary>The classes a labelled data set's classifier needs: its class names, or its largest label + 1.</summary>
    public static int Classes(IImageDataset dataset)
    {
        if (!dataset.HasLabels)
        {
            throw new ArgumentException($"{dataset.Name} has no labels: a classifier needs a labelled train split");
        }
        if (dataset.ClassNames.Count > 0)
        {
            return dataset.ClassNames.Count;
        }
        var classes = 0;
        for (var i = 0; i < dataset.Count; i++)
        {
            classes = Math.Max(classes, dataset.GetLabel(i) + 1);
        }
        return classes;
    }

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
        _cancel.Dispose();
    }
}
