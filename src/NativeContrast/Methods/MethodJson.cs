namespace NativeContrast.Methods;

using System.Globalization;
using System.Text.Json;
using NativeContrast.Nn;

/// <summary>
/// The "method" section of checkpoints as the methods with a classifier write it: a JSON object with "classes" and
/// "head", the <see cref="MlpHeadOptions"/> of the layers between the backbone and the linear classifier (or null), which
/// <see cref="Training.TrainedClassifier"/> reads back to rebuild the network.
/// </summary>
public static class MethodJson
{
    /// <summary>
    /// A projection head's hidden width as the self-supervised methods' sections record it: null for the backbone's
    /// feature width (the default), whether left to the default or given, so that naming the default on a resume is not
    /// another recipe; the width otherwise. Before the head is built, the option as given.
    /// </summary>
    public static string HiddenWidth(int? option, MlpHead? head) =>
        option is { } width && width != head?.Options.InputDim ? width.ToString(CultureInfo.InvariantCulture) : "null";

    public static void WriteHead(Utf8JsonWriter json, MlpHeadOptions? head)
    {
        ArgumentNullException.ThrowIfNull(json);
        if (head is null)
        {
            json.WriteNull("head");
            return;
        }
        json.WriteStartObject("head");
        json.WriteNumber("layers", head.Layers);
        json.WriteNumber("input_dim", head.InputDim);
        json.WriteNumber("hidden_dim", head.HiddenDim);
        json.WriteNumber("output_dim", head.OutputDim);
        json.WriteBoolean("hidden_bn", head.HiddenBatchNorm);
        json.WriteBoolean("output_bn", head.OutputBatchNorm);
        json.WriteBoolean("output_relu", head.OutputRelu);
        json.WriteEndObject();
    }

    /// <summary>The head of a method section's object; null when it has none. Throws <see cref="KeyNotFoundException"/> on a malformed head.</summary>
    public static MlpHeadOptions? ReadHead(JsonElement section)
    {
        if (!section.TryGetProperty("head", out var head) || head.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        return new MlpHeadOptions(head.GetProperty("input_dim").GetInt32(), head.GetProperty("hidden_dim").GetInt32(), head.GetProperty("output_dim").GetInt32())
        {
            Layers = head.GetProperty("layers").GetInt32(),
            HiddenBatchNorm = head.GetProperty("hidden_bn").GetBoolean(),
            OutputBatchNorm = head.GetProperty("output_bn").GetBoolean(),
            OutputRelu = head.GetProperty("output_relu").GetBoolean(),
        };
    }

    /// <summary>A method section as JSON text: <paramref name="body"/> writes its properties.</summary>
    internal static string Object(Action<Utf8JsonWriter> body)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            body(json);
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }
}
