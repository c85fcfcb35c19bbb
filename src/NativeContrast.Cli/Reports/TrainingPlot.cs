namespace NativeContrast.Cli.Reports;

using NativeContrast.Training;

/// <summary>
/// training.png: the loss per step (left axis) and, per epoch, the kNN monitor's top-1 and the method's classifier's
/// test top-1 (right axis), from metrics.jsonl.
/// </summary>
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
        // The point of epoch e sits at the step where that epoch ended.
        var stepsPerEpoch = steps.Count == 0 || epochs.Count == 0 ? 1 : (steps.Max(s => s.Step) + 1) / (double)Math.Max(1, epochs.Max(e => e.Epoch) + 1);
        foreach (var (name, top1) in new (string, Func<(int Epoch, double? KnnTop1, double? TestTop1), double?>)[] { ("kNN top-1 (%)", e => e.KnnTop1), ("test top-1 (%)", e => e.TestTop1) })
        {
            var points = epochs.Where(e => top1(e) is not null).ToArray();
            if (points.Length > 0)
            {
                var curve = plot.Add.Scatter(points.Select(e => (e.Epoch + 1) * stepsPerEpoch).ToArray(), points.Select(e => 100 * top1(e)!.Value).ToArray());
                curve.LegendText = name;
                curve.Axes.YAxis = plot.Axes.Right;
                plot.Axes.Right.Label.Text = "top-1 (%)";
            }
        }
        plot.ShowLegend();
        var path = Path.Combine(directory, FileName);
        plot.SavePng(path, 960, 540);
        return path;
    }
}
