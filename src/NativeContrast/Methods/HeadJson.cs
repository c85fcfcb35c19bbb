namespace NativeContrast.Methods;

using System.Text.Json;
using NativeContrast.Nn;

/// <summary>
/// The head between a backbone and a classifier as the methods record it in checkpoints (their "method" section, key
/// "head"): the <see cref="MlpHeadOptions"/> of the head's layers, or null. <see cref="Training.TrainedClassifier"/> reads it back.
/// </summary>
public static class HeadJson
{
    public static void Write(Utf8JsonWriter json, MlpHeadOptions? head)
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
    public static MlpHeadOptions? Read(JsonElement section)
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
