namespace NativeContrast.Cpu;

using System.Runtime.InteropServices;

/// <summary>
/// The C library's environment, which native libraries read when they load. .NET's
/// Environment.SetEnvironmentVariable changes only the managed copy on Unix, so settings meant for a native
/// library's start-up go through setenv.
/// </summary>
internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    /// <summary>Sets <paramref name="name"/> for native code unless it is already set (a user's choice wins).</summary>
    public static void SetDefault(string name, string value)
    {
        if ((OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) && Environment.GetEnvironmentVariable(name) is null)
        {
            _ = SetEnv(name, value, overwrite: 0);
        }
    }
}
