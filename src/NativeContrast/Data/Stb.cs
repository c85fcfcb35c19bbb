namespace NativeContrast.Data;

using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

/// <summary>
/// stb_image (decode) and stb_image_write (PNG encode) from Debian's libstb0. The library is found per platform
/// once; when it is missing every call says in one line which package to install.
/// </summary>
public static unsafe partial class Stb
{
    private const string Library = "stb";

    private static readonly string[] Candidates = OperatingSystem.IsWindows() ? ["stb.dll", "libstb.dll"]
        : OperatingSystem.IsMacOS() ? ["libstb.dylib", "libstb.0.dylib"]
        : ["libstb.so.0", "libstb.so"];

    private static readonly IntPtr Handle = Load();

    /// <summary>Null when the library loaded; otherwise the one line to show.</summary>
    public static string? WhyUnavailable => Handle == IntPtr.Zero
        ? $"stb_image was not found (tried {string.Join(", ", Candidates)}); on Debian or Ubuntu install it with: apt-get install libstb0"
        : null;

    /// <summary>Decodes a PNG, JPEG, BMP, GIF, TGA, PSD, HDR or PNM file held in memory into interleaved 8-bit pixels.</summary>
    /// <returns>The pixels (height·width·channels bytes), or null with <paramref name="error"/> set when stb cannot decode them.</returns>
    public static byte[]? Decode(ReadOnlySpan<byte> encoded, int channels, out int height, out int width, out string? error)
    {
        EnsureLoaded();
        if (channels is < 1 or > 4)
        {
            throw new ArgumentOutOfRangeException(nameof(channels), channels, "stb decodes to 1 to 4 channels");
        }
        height = width = 0;
        byte* pixels;
        int w, h, inFile;
        fixed (byte* data = encoded)
        {
            pixels = Native.stbi_load_from_memory(data, encoded.Length, &w, &h, &inFile, channels);
        }
        if (pixels == null)
        {
            var reason = Native.stbi_failure_reason();
            error = reason == null ? "stb_image could not decode it" : Marshal.PtrToStringUTF8((IntPtr)reason);
            return null;
        }
        try
        {
            var result = new Span<byte>(pixels, checked(w * h * channels)).ToArray();
            (height, width, error) = (h, w, null);
            return result;
        }
        finally
        {
            Native.stbi_image_free(pixels);
        }
    }

    /// <summary>Encodes interleaved 8-bit pixels (rows of width·channels bytes) as a PNG file's bytes.</summary>
    public static byte[] EncodePng(ReadOnlySpan<byte> pixels, int height, int width, int channels)
    {
        EnsureLoaded();
        if (channels is < 1 or > 4 || height <= 0 || width <= 0 || pixels.Length != (long)height * width * channels)
        {
            throw new ArgumentException($"{pixels.Length} bytes are not a {height}x{width}x{channels} image", nameof(pixels));
        }
        int length;
        byte* png;
        fixed (byte* data = pixels)
        {
            png = Native.stbi_write_png_to_mem(data, width * channels, width, height, channels, &length);
        }
        if (png == null)
        {
            throw new InvalidOperationException($"stb_image_write could not encode a {height}x{width}x{channels} PNG");
        }
        try
        {
            return new Span<byte>(png, length).ToArray();
        }
        finally
        {
            // stb_image_write allocates with the C runtime's malloc; NativeMemory.Free is the matching free.
            NativeMemory.Free(png);
        }
    }

    private static void EnsureLoaded()
    {
        if (Handle == IntPtr.Zero)
        {
            throw new DllNotFoundException(WhyUnavailable);
        }
    }

    private static IntPtr Load()
    {
        foreach (var file in Candidates)
        {
            if (NativeLibrary.TryLoad(file, typeof(Stb).Assembly, DllImportSearchPath.SafeDirectories | DllImportSearchPath.AssemblyDirectory, out var handle))
            {
                // [LibraryImport("stb")] resolves through this handle: the engine's resolver knows only the CUDA libraries.
                AssemblyLoadContext.Default.ResolvingUnmanagedDll += (Assembly _, string name) => name == Library ? handle : IntPtr.Zero;
                return handle;
            }
        }
        return IntPtr.Zero;
    }

    private static partial class Native
    {
        [LibraryImport(Library)]
        public static partial byte* stbi_load_from_memory(byte* buffer, int length, int* width, int* height, int* channelsInFile, int desiredChannels);

        [LibraryImport(Library)]
        public static partial byte* stbi_failure_reason();

        [LibraryImport(Library)]
        public static partial void stbi_image_free(void* pixels);

        [LibraryImport(Library)]
        public static partial byte* stbi_write_png_to_mem(byte* pixels, int strideBytes, int width, int height, int channels, int* length);
    }
}
