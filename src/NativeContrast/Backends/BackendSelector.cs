namespace NativeContrast.Backends;

using System.Globalization;
using NativeContrast.Cuda;

/// <summary>The backend a run uses and, in one line, why.</summary>
public sealed record BackendChoice(IBackend Backend, string Reason);

/// <summary>
/// Turns "--device auto|cpu|cuda|cuda:N" into a backend. "auto" takes GPU 0 (or the given GPU: a rank's, see
/// <see cref="Distributed.RankDevice"/>) when the driver, a device, cuBLAS and the kernel module are all there, and
/// otherwise falls back to the CPU saying why; "cuda" fails with that reason (<see cref="CudaUnavailableException"/>).
/// </summary>
public static class BackendSelector
{
    /// <summary>The accepted spellings, for help texts and error messages.</summary>
    public const string Choices = "auto, cpu, cuda or cuda:N";

    private enum Kind
    {
        Auto,
        Cpu,
        Cuda,
    }

    /// <summary>Null when <paramref name="device"/> is a valid device string, else what is wrong with it.</summary>
    public static string? Validate(string? device) => TryParse(device, out _, out _, out var error) ? null : error;

    /// <summary>The backend for <paramref name="device"/>, where "auto" and "cuda" mean GPU <paramref name="gpu"/>.</summary>
    public static BackendChoice Create(string device, int gpu = 0)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (!TryParse(device, out var kind, out var ordinal, out var error))
        {
            throw new ArgumentException(error);
        }
        ArgumentOutOfRangeException.ThrowIfNegative(gpu);
        switch (kind)
        {
            case Kind.Cpu:
                return new BackendChoice(new CpuBackend(), "cpu: requested with --device cpu");
            case Kind.Cuda:
                return Cuda(ordinal ?? gpu, $"requested with --device {device.Trim()}");
            default:
                var why = CudaProbe.WhyUnavailable(gpu);
                if (why is null)
                {
                    try
                    {
                        return Cuda(gpu, "auto-detected");
                    }
                    catch (Exception e) when (e is CudaException or CudaUnavailableException or DllNotFoundException or FileNotFoundException)
                    {
                        // The probe passed but the device still could not be opened (e.g. no code in the fatbin for it).
                        why = e.Message;
                    }
                }
                return new BackendChoice(new CpuBackend(), $"cpu: --device auto fell back to the CPU ({why})");
        }
    }

    /// <summary>Parses <paramref name="device"/>; <paramref name="ordinal"/> is the N of cuda:N, else null.</summary>
    private static bool TryParse(string? device, out Kind kind, out int? ordinal, out string? error)
    {
        kind = Kind.Auto;
        ordinal = null;
        error = null;
        var spec = device?.Trim().ToLowerInvariant() ?? string.Empty;
        switch (spec)
        {
            case "auto":
                return true;
            case "cpu":
                kind = Kind.Cpu;
                return true;
            case "cuda":
                kind = Kind.Cuda;
                return true;
        }
        if (spec.StartsWith("cuda:", StringComparison.Ordinal))
        {
            kind = Kind.Cuda;
            if (int.TryParse(spec.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out var number))
            {
                ordinal = number;
                return true;
            }
            error = $"--device '{device}': expected cuda:N with N a device number (0, 1, ...)";
            return false;
        }
        error = $"--device '{device}': expected {Choices}";
        return false;
    }

    private static BackendChoice Cuda(int ordinal, string why)
    {
        var backend = new CudaBackend(ordinal);
        return new BackendChoice(backend, $"{backend.Name}: {why}");
    }
}
