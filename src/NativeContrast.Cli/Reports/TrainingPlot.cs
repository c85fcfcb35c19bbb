namespace NativeContrast.Cli.Reports;

using NativeContrast.Training;

/// <summary>training.png: the loss per step (left axis) and the kNN monitor's top-1 per epoch (right axis), from metrics.jsonl.</summary>
public static class TrainingPlot
{
    public const string FileName = "training.png";

    public static string Write(string directory, string title)
    {
        var (steps, epochs) = MetricsLog.Read(Path.Combine(directory, MetricsLog.FileName));
        var plot = new ScottPlot.Plot();
        plot.Title(title);
        var loss = plot.Add.ScatterLine(steps.Select(s => (double)s.Step).ToArray(), steps.Select(s => s.Loss).ToArray());
        loss.LegendText = "loss";
        plot.Axes.Bottom.Label.Text = "step";
        plot.Axes.Left.Label.Text = "loss";
        var knn = epochs.Where(e => e.KnnTop1 is not null).ToArray();
        if (knn.Length > 0)
        {
            // The kNN point of epoch e sits at the step where that epoch ended.
            var stepsPerEpoch = steps.Count == 0 ? 1 : (steps.Max(s => s.Step) + 1) / (double)Math.Max(1, epochs.Max(e => e.Epoch) + 1);
            var monitor = plot.Add.Scatter(knn.Select(e => (e.Epoch + 1) * stepsPerEpoch).ToArray(), knn.Select(e => 100 * e.KnnTop1!.Value).ToArray());
            monitor.LegendText = "kNN top-1 (%)";
            monitor.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "kNN top-1 (%)";
        }
        plot.ShowLegend();
        var path = Path.Combine(directory, FileName);
        plot.SavePng(path, 960, 540);
        return path;
    }
}
