namespace NativeContrast.Cpu;

using System.Runtime.InteropServices;

/// <summary>
/// The C library's environment, which native libraries read when they load, and its loader. .NET's
/// Environment.SetEnvironmentVariable changes only the managed copy on Unix, so settings meant for a native
/// library's start-up go through setenv.
/// </summary>
internal static partial class LibC
{
    // <dlfcn.h> on Linux.
    private const int RtldNow = 0x2;
    private const int RtldGlobal = 0x100;

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    // libdl.so.2 rather than libc: glibc before 2.34 keeps dlopen there, and later ones still ship it for that reason.
    [LibraryImport("libdl.so.2", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr DlOpen(string file, int flags);

    /// <summary>Sets <paramref name="name"/> for native code unless it is already set (a user's choice wins).</summary>
    public static void SetDefault(string name, string value)
    {
        if ((OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) && Environment.GetEnvironmentVariable(name) is null)
        {
            _ = SetEnv(name, value, overwrite: 0);
        }
    }

    /// <summary>
    /// Loads a library with its symbols visible to the libraries loaded after it (RTLD_GLOBAL, which
    /// NativeLibrary.Load does not ask for); zero when it cannot be loaded, or off Linux. The handle is one
    /// NativeLibrary.GetExport accepts.
    /// </summary>
    public static IntPtr OpenGlobal(string file) => OperatingSystem.IsLinux() ? DlOpen(file, RtldNow | RtldGlobal) : IntPtr.Zero;
}
