namespace NativeContrast.Training;

using System.Text.Json;

/// <summary>Field-by-field comparison of two flat JSON objects: a run's description against a checkpoint's.</summary>
public static class JsonFields
{
    /// <summary>
    /// "field: mine here, theirs in the checkpoint" for every top-level field of two JSON objects that differs, or that
    /// only one of them has (empty when they agree).
    /// </summary>
    public static IReadOnlyList<string> Differences(string mine, string theirs)
    {
        using var here = JsonDocument.Parse(mine);
        using var there = JsonDocument.Parse(theirs);
        static string Value(JsonElement root, string name) => root.TryGetProperty(name, out var v) ? v.GetRawText() : "absent";
        var names = here.RootElement.EnumerateObject().Select(p => p.Name).Union(there.RootElement.EnumerateObject().Select(p => p.Name));
        return [.. names
            .Where(name => Value(here.RootElement, name) != Value(there.RootElement, name))
            .Select(name => $"{name} {Value(here.RootElement, name)} here, {Value(there.RootElement, name)} in the checkpoint")];
    }
}
