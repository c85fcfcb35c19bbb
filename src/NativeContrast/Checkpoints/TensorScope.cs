namespace NativeContrast.Checkpoints;

/// <summary>
/// Which arena parameters a checkpoint covers and how their names map to the file's, like loading a PyTorch
/// state_dict into a sub-module. An arena name "ARENAPREFIX + rest" (not under an excluded prefix) is stored as
/// "FILEPREFIX + rest". Examples: export the encoder of a SimCLR arena without its head,
/// <c>TensorScope.All.Excluding("projector.")</c>; load a torchvision file into an arena whose encoder is
/// declared under "encoder.", <c>TensorScope.Under("encoder.")</c>; load only "backbone.*" from a file,
/// <c>TensorScope.Under("", filePrefix: "backbone.")</c>. File tensors outside the scope are ignored, never unexpected.
/// </summary>
public sealed record TensorScope
{
    public static TensorScope All { get; } = new();

    public string ArenaPrefix { get; init; } = "";

    public string FilePrefix { get; init; } = "";

    /// <summary>Arena names starting with any of these are outside the scope (e.g. "projector.").</summary>
    public IReadOnlyList<string> ExcludedArenaPrefixes { get; init; } = [];

    public static TensorScope Under(string arenaPrefix, string filePrefix = "") => new() { ArenaPrefix = arenaPrefix, FilePrefix = filePrefix };

    public TensorScope Excluding(params string[] arenaPrefixes) => this with { ExcludedArenaPrefixes = [.. ExcludedArenaPrefixes, .. arenaPrefixes] };

    public bool Covers(string arenaName) =>
        arenaName.StartsWith(ArenaPrefix, StringComparison.Ordinal) && !ExcludedArenaPrefixes.Any(p => arenaName.StartsWith(p, StringComparison.Ordinal));

    /// <summary>The file's name for an arena name the scope covers.</summary>
    public string ToFileName(string arenaName)
    {
        if (!Covers(arenaName))
        {
            throw new ArgumentException($"'{arenaName}' is outside the scope {this}", nameof(arenaName));
        }
        return FilePrefix + arenaName[ArenaPrefix.Length..];
    }

    /// <summary>The arena name a file tensor maps to, or null when the scope does not cover it.</summary>
    public string? ToArenaName(string fileName)
    {
        if (!fileName.StartsWith(FilePrefix, StringComparison.Ordinal))
        {
            return null;
        }
        var arenaName = ArenaPrefix + fileName[FilePrefix.Length..];
        return Covers(arenaName) ? arenaName : null;
    }

    public override string ToString() =>
        $"arena '{ArenaPrefix}*' <-> file '{FilePrefix}*'" + (ExcludedArenaPrefixes.Count > 0 ? $" excluding {string.Join(", ", ExcludedArenaPrefixes.Select(p => $"'{p}*'"))}" : "");
}
