namespace NativeContrast.Cli;

using System.CommandLine;
using NativeContrast.Backends;

/// <summary>The `--device` option every command that computes takes; a bad value is a parse error (exit code 2).</summary>
public static class DeviceOption
{
    public static Option<string> Create()
    {
        var option = new Option<string>("--device")
        {
            Description = $"Where to compute: {BackendSelector.Choices}. 'auto' takes GPU 0 when it can run the kernels, else the CPU.",
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
    public static BackendChoice? Open(string device, TextWriter error)
    {
        try
        {
            return BackendSelector.Create(device);
        }
        catch (Cuda.CudaUnavailableException e)
        {
            error.WriteLine($"error: --device {device}: {e.Message}");
            return null;
        }
    }
}
