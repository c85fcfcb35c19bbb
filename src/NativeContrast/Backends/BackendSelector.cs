namespace NativeContrast.Backends;

using NativeContrast.Cuda;

/// <summary>The backend a run uses and, in one line, why.</summary>
public sealed record BackendChoice(IBackend Backend, string Reason);

/// <summary>
/// Turns "--device auto|cpu|cuda|cuda:N" into a backend. "auto" takes the GPU when the driver, a device, cuBLAS
/// and the kernel module are all there, and otherwise falls back to the CPU saying why; "cuda" fails with that reason.
/// </summary>
public static class BackendSelector
{
    public static BackendChoice Create(string device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var spec = device.Trim().ToLowerInvariant();
        if (spec == "cpu")
        {
            return new BackendChoice(new CpuBackend(), "cpu: requested with --device cpu");
        }
        if (spec == "auto")
        {
            var why = CudaProbe.WhyUnavailable(0);
            return why is null
                ? Cuda(0, "auto-detected")
                : new BackendChoice(new CpuBackend(), $"cpu: --device auto fell back to the CPU ({why})");
        }
        if (spec == "cuda" || spec.StartsWith("cuda:", StringComparison.Ordinal))
        {
            var ordinal = 0;
            if (spec.Length > 5 && !int.TryParse(spec.AsSpan(5), out ordinal))
            {
                throw new ArgumentException($"--device {device}: expected cuda:N with N a device number", nameof(device));
            }
            return Cuda(ordinal, $"requested with --device {device}");
        }
        throw new ArgumentException($"--device {device}: expected auto, cpu, cuda or cuda:N", nameof(device));
    }

    private static BackendChoice Cuda(int ordinal, string why)
    {
        var backend = new CudaBackend(ordinal);
        return new BackendChoice(backend, $"{backend.Name}: {why}");
    }
}
