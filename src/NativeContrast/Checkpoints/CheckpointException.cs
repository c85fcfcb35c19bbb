namespace NativeContrast.Checkpoints;

/// <summary>
/// A checkpoint that cannot be read, written or applied. The message names the file, the tensor when one is
/// concerned, and what is wrong (expected against found), so a user can act on it without a debugger.
/// </summary>
public sealed class CheckpointException : IOException
{
    public CheckpointException(string filePath, string? tensorName, string problem, Exception? inner = null)
        : base(Compose(filePath, tensorName, problem), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
    }

    public string FilePath { get; }

    /// <summary>The tensor concerned, or null for a problem with the file as a whole.</summary>
    public string? TensorName { get; }

    private static string Compose(string filePath, string? tensorName, string problem) =>
        tensorName is null ? $"{filePath}: {problem}" : $"{filePath}: tensor '{tensorName}': {problem}";
}
