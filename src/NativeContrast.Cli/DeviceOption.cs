namespace NativeContrast.Cli;

using System.CommandLine;
using NativeContrast.Backends;
using NativeContrast.Cuda;
using NativeContrast.Distributed;

/// <summary>The `--device` option every command that computes takes; a bad value is a parse error (exit code 2).</summary>
public static class DeviceOption
{
    public static Option<string> Create()
    {
        var option = new Option<string>("--device")
        {
            Description = $"Where to compute: {BackendSelector.Choices}. 'auto' takes GPU 0 (under mpirun, the GPU of the local rank) when it can run the kernels, else the CPU.",
            HelpName = "auto|cpu|cuda|cuda:N",
            DefaultValueFactory = _ => "auto",
        };
        option.Validators.Add(result =>
        {
            var problem = BackendSelector.Validate(result.GetValueOrDefault<string>());
            if (problem is not null)
            {
                result.AddError(problem);
            }
        });
        return option;
    }

    /// <summary>The backend for --device, or null after writing why it cannot be had (one line) to <paramref name="error"/>.</summary>
    public static BackendChoice? Open(string device, TextWriter error) => Open(device, 0, error);

    /// <summary>
    /// The backend for --device on this rank of <paramref name="launch"/>: the GPU of its local rank (see
    /// <see cref="RankDevice"/>), or null after writing why it cannot be had (one line) to <paramref name="error"/>.
    /// </summary>
    public static BackendChoice? Open(string device, LaunchEnvironment launch, TextWriter error)
    {
        var rank = RankDevice.Choose(device, launch, CudaProbe.DeviceCount);
        if (rank.Error is { } refusal)
        {
            error.WriteLine($"error: {refusal}");
            return null;
        }
        if (Open(device, rank.Gpu, error) is not { } choice)
        {
            return null;
        }
        return launch.IsMultiRank && choice.Backend is CudaBackend
            ? choice with { Reason = $"{choice.Reason} (GPU {rank.Gpu}: rank {launch.Rank}'s local rank)" }
            : choice;
    }

    private static BackendChoice? Open(string device, int gpu, TextWriter error)
    {
        try
        {
            return BackendSelector.Create(device, gpu);
        }
        catch (CudaUnavailableException e)
        {
            error.WriteLine($"error: --device {device}: {e.Message}");
            return null;
        }
    }
}
