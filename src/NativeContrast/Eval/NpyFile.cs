namespace NativeContrast.Eval;

using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using NativeContrast.Checkpoints;

/// <summary>
/// NumPy's .npy format, version 1.0: the magic "\x93NUMPY", version 1.0, a little-endian uint16 header length, a
/// Python dict literal ({'descr': '&lt;f4', 'fortran_order': False, 'shape': (N, D), }) padded with spaces to a
/// multiple of 64 bytes and ended by a newline, then the C-order data. Written atomically.
/// </summary>
public static partial class NpyFile
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static void WriteFloat32(string path, ReadOnlySpan<float> values, params int[] shape) =>
        Write(path, "<f4", shape, values.Length, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).ToArray());

    public static void WriteInt64(string path, ReadOnlySpan<long> values, params int[] shape) =>
        Write(path, "<i8", shape, values.Length, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>Reads a version 1.0 file's dtype, shape and data bytes (C order), for checks and tests.</summary>
    public static (string Descr, int[] Shape, byte[] Data) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || !bytes.AsSpan(0, 6).SequenceEqual(Magic) || bytes[6] != 1)
        {
            throw new FormatException($"{path}: not a version 1 .npy file");
        }
        var headerLength = bytes[8] | (bytes[9] << 8);
        var header = Encoding.ASCII.GetString(bytes, 10, headerLength);
        var match = HeaderPattern().Match(header);
        if (!match.Success || match.Groups["fortran"].Value != "False")
        {
            throw new FormatException($"{path}: unexpected .npy header {header.Trim()}");
        }
        var shape = match.Groups["shape"].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(d => int.Parse(d, CultureInfo.InvariantCulture)).ToArray();
        return (match.Groups["descr"].Value, shape, bytes[(10 + headerLength)..]);
    }

    private static void Write(string path, string descr, int[] shape, int count, byte[] data)
    {
        if (shape.Aggregate(1L, (a, d) => a * d) != count)
        {
            throw new ArgumentException($"{path}: shape ({string.Join(", ", shape)}) does not hold {count} values", nameof(shape));
        }
        var dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        var dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}";
        // 10 bytes of preamble + the dict + padding + '\n' is a multiple of 64 (NumPy's alignment).
        var total = (10 + dict.Length + 1 + 63) / 64 * 64;
        var header = dict.PadRight(total - 10 - 1) + "\n";
        AtomicFile.Write(path, stream =>
        {
            stream.Write(Magic);
            stream.Write([1, 0, (byte)(header.Length & 0xFF), (byte)(header.Length >> 8)]);
            stream.Write(Encoding.ASCII.GetBytes(header));
            stream.Write(data);
        });
    }

    [GeneratedRegex(@"'descr':\s*'(?<descr>[^']+)',\s*'fortran_order':\s*(?<fortran>True|False),\s*'shape':\s*\((?<shape>[^)]*)\)")]
    private static partial Regex HeaderPattern();
}
