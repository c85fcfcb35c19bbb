namespace NativeContrast.Training;

using System.Globalization;
using System.Text;
using System.Text.Json;

/// <summary>
/// metrics.jsonl: one JSON object a line, {"type":"step",...} per optimiser step and {"type":"epoch",...} per epoch
/// (step, epoch, loss, lr, pos_cos, top1, images_per_s; knn_top1 and knn_top5 when the monitor ran, test_top1 and
/// test_top5 when the method's classifier was scored on the test split). A resumed run
/// first drops the records at or after the checkpoint's step, so the file describes one run without repeats.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    public const string FileName = "metrics.jsonl";

    private readonly StreamWriter _writer;

    public MetricsLog(string directory, long resumeStep)
    {
        Directory.CreateDirectory(directory);
        Path = System.IO.Path.Combine(directory, FileName);
        var kept = File.Exists(Path) ? File.ReadAllLines(Path).Where(line => Keep(line, resumeStep)).ToList() : [];
        File.WriteAllLines(Path, kept);
        _writer = new StreamWriter(Path, append: true, new UTF8Encoding(false)) { AutoFlush = true };
    }

    public string Path { get; }

    public void Write(StepMetrics m) => WriteLine(json =>
    {
        json.WriteString("type", "step");
        json.WriteNumber("step", m.Step);
        json.WriteNumber("epoch", m.Epoch);
        json.WriteNumber("batch", m.Batch);
        WriteFloat(json, "loss", m.Loss);
        WriteFloat(json, "lr", m.LearningRate);
        WriteFloat(json, "pos_cos", m.PositiveCosine);
        WriteFloat(json, "top1", m.Top1);
        json.WriteNumber("images_per_s", Math.Round(m.ImagesPerSecond, 1));
    });

    public void Write(EpochMetrics m) => WriteLine(json =>
    {
        json.WriteString("type", "epoch");
        json.WriteNumber("epoch", m.Epoch);
        json.WriteNumber("step", m.Step);
        json.WriteNumber("loss", Math.Round(m.MeanLoss, 6));
        if (m.Knn is { } knn)
        {
            json.WriteNumber("knn_top1", Math.Round(knn.Top1, 6));
            json.WriteNumber("knn_top5", Math.Round(knn.Top5, 6));
        }
        if (m.Classifier is { } classifier)
        {
            json.WriteNumber("test_top1", Math.Round(classifier.Top1, 6));
            json.WriteNumber("test_top5", Math.Round(classifier.Top5, 6));
        }
        json.WriteNumber("seconds", Math.Round(m.Seconds, 3));
        json.WriteNumber("images_per_s", Math.Round(m.ImagesPerSecond, 1));
    });

    /// <summary>Reads a metrics file back: (step records, epoch records) as the loss curve and the accuracy curves need them.</summary>
    public static (List<(long Step, double Loss)> Steps, List<(int Epoch, double? KnnTop1, double? TestTop1)> Epochs) Read(string path)
    {
        var steps = new List<(long, double)>();
        var epochs = new List<(int, double?, double?)>();
        foreach (var line in File.ReadLines(path))
        {
            using var document = JsonDocument.Parse(line);
            var root = document.RootElement;
            if (root.GetProperty("type").GetString() == "step")
            {
                steps.Add((root.GetProperty("step").GetInt64(), root.GetProperty("loss").GetDouble()));
            }
            else
            {
                epochs.Add((
                    root.GetProperty("epoch").GetInt32(),
                    root.TryGetProperty("knn_top1", out var knn) ? knn.GetDouble() : null,
                    root.TryGetProperty("test_top1", out var test) ? test.GetDouble() : null));
            }
        }
        return (steps, epochs);
    }

    public void Dispose() => _writer.Dispose();

    private static bool Keep(string line, long resumeStep)
    {
        if (string.IsNullOrWhiteSpace(line))
        {
            return false;
        }
        using var document = JsonDocument.Parse(line);
        var root = document.RootElement;
        // A step record with step s describes the s-th update (0-based); an epoch record names the steps done by its end.
        var step = root.GetProperty("step").GetInt64();
        return root.GetProperty("type").GetString() == "step" ? step < resumeStep : step <= resumeStep;
    }

    /// <summary>A finite value as a number, infinities as strings; NaN (a statistic the method does not have, such as SwAV's top-1) is left out.</summary>
    private static void WriteFloat(Utf8JsonWriter json, string name, float value)
    {
        if (float.IsNaN(value))
        {
            return;
        }
        if (float.IsFinite(value))
        {
            json.WriteNumber(name, value);
        }
        else
        {
            json.WriteString(name, value.ToString(CultureInfo.InvariantCulture));
        }
    }

    private void WriteLine(Action<Utf8JsonWriter> body)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            body(json);
            json.WriteEndObject();
        }
        _writer.WriteLine(Encoding.UTF8.GetString(stream.ToArray()));
    }
}
