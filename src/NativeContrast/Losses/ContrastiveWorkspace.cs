namespace NativeContrast.Losses;

using NativeContrast.Backends;

/// <summary>Sizing of the workspaces the contrastive losses own.</summary>
internal static class ContrastiveWorkspace
{
    /// <summary>
    /// The largest workspace over the precisions this device supports, so that the precision may change between
    /// steps without allocating. A precision the device cannot run (fp32 operands at 256 features need more shared
    /// memory than Ada or Ampere consumer GPUs have) is left out; using it fails with the backend's reason.
    /// </summary>
    public static long LargestSupported(Func<MatmulPrecision, long> length)
    {
        long largest = 1;
        foreach (var precision in Enum.GetValues<MatmulPrecision>())
        {
            try
            {
                largest = Math.Max(largest, length(precision));
            }
            catch (NotSupportedException)
            {
            }
        }
        return largest;
    }
}
