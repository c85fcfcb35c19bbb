namespace NativeContrast.Tests.Checkpoints;

using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using NativeContrast.Backends;
using NativeContrast.Tensors;

/// <summary>A fresh temporary folder per test, removed afterwards.</summary>
public abstract class CheckpointTestBase
{
    protected string Folder { get; private set; } = "";

    protected CpuBackend Cpu { get; private set; } = null!;

    [SetUp]
    public void CreateFolder()
    {
        Folder = Path.Combine(Path.GetTempPath(), "nc-checkpoints-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Folder);
        Cpu = new CpuBackend();
    }

    [TearDown]
    public void DeleteFolder()
    {
        Cpu.Dispose();
        Directory.Delete(Folder, recursive: true);
    }

    protected string PathTo(string name) => Path.Combine(Folder, name);

    /// <summary>Files in the folder other than the ones named (temporary files left behind show up here).</summary>
    protected string[] OtherFiles(params string[] expected) =>
        [.. Directory.GetFiles(Folder).Select(Path.GetFileName).Where(n => !expected.Contains(n)).Select(n => n!)];
}

/// <summary>Builds arenas and files for the checkpoint tests.</summary>
public static class CheckpointFixtures
{
    /// <summary>
    /// A small ResNet-like layout with sizes that are multiples of nothing (so views are padded), a rank-0
    /// parameter, an empty buffer, two BatchNorms, and a "projector." head to leave out of exports.
    /// </summary>
    public static ArenaLayout AwkwardLayout(bool withHead = true, string prefix = "")
    {
        var layout = new ArenaLayout();
        layout.Add(prefix + "conv1.weight", new TensorShape(7, 3, 3, 3), ParameterKind.Weight);
        layout.Add(prefix + "bn1.weight", new TensorShape(7), ParameterKind.NormScale);
        layout.Add(prefix + "bn1.bias", new TensorShape(7), ParameterKind.NormShift);
        layout.Add(prefix + "bn1.running_mean", new TensorShape(7), ParameterKind.Buffer);
        layout.Add(prefix + "bn1.running_var", new TensorShape(7), ParameterKind.Buffer);
        layout.Add(prefix + "layer1.0.conv1.weight", new TensorShape(33, 7, 1, 1), ParameterKind.Weight);
        layout.Add(prefix + "layer1.0.bn1.weight", new TensorShape(33), ParameterKind.NormScale);
        layout.Add(prefix + "layer1.0.bn1.bias", new TensorShape(33), ParameterKind.NormShift);
        layout.Add(prefix + "layer1.0.bn1.running_mean", new TensorShape(33), ParameterKind.Buffer);
        layout.Add(prefix + "layer1.0.bn1.running_var", new TensorShape(33), ParameterKind.Buffer);
        layout.Add(prefix + "temperature", new TensorShape(), ParameterKind.Bias);
        layout.Add(prefix + "empty", new TensorShape(0), ParameterKind.Buffer);
        layout.Add(prefix + "fc.weight", new TensorShape(10, 33), ParameterKind.Weight);
        layout.Add(prefix + "fc.bias", new TensorShape(10), ParameterKind.Bias);
        if (withHead)
        {
            layout.Add("projector.0.weight", new TensorShape(5, 33), ParameterKind.Weight);
            layout.Add("projector.0.bias", new TensorShape(1), ParameterKind.Bias);
        }
        return layout;
    }

    /// <summary>Random values everywhere (padding included) with special bit patterns that a lossy copy would change.</summary>
    public static float[] FillRandom(IBackend backend, Tensor tensor, int seed)
    {
        var values = Support.Numerics.RandomArray(checked((int)tensor.Length), seed);
        float[] special = [float.NaN, BitConverter.Int32BitsToSingle(0x7FC0_1234), -0f, float.Epsilon, float.PositiveInfinity, float.NegativeInfinity, 1e-40f];
        for (var i = 0; i < special.Length && i < values.Length; i++)
        {
            values[(i * 37) % values.Length] = special[i];
        }
        backend.CopyFromHost(values, tensor);
        return values;
    }

    public static int[] Bits(ReadOnlySpan<float> values)
    {
        var bits = new int[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            bits[i] = BitConverter.SingleToInt32Bits(values[i]);
        }
        return bits;
    }

    public static int[] Bits(IBackend backend, Tensor tensor) => Bits(Support.Numerics.ToArray(backend, tensor));

    /// <summary>A safetensors file built by hand: any header text (not padded unless given so), any data, any declared length.</summary>
    public static void WriteRaw(string path, string header, byte[] data, ulong? declaredHeaderLength = null)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var prefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, declaredHeaderLength ?? (ulong)headerBytes.Length);
        File.WriteAllBytes(path, [.. prefix, .. headerBytes, .. data]);
    }

    public static byte[] Bytes<T>(params T[] values)
        where T : unmanaged => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}

/// <summary>
/// A minimal safetensors parser written from the format's description alone, sharing no code with the engine's
/// reader, so that files the engine writes are checked by a second opinion.
/// </summary>
public sealed class IndependentSafetensors
{
    public IndependentSafetensors(string path)
    {
        Bytes = File.ReadAllBytes(path);
        HeaderLength = checked((long)BinaryPrimitives.ReadUInt64LittleEndian(Bytes.AsSpan(0, 8)));
        HeaderText = Encoding.UTF8.GetString(Bytes, 8, (int)HeaderLength);
        using var document = JsonDocument.Parse(HeaderText);
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                Metadata = property.Value.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
                KeyOrder.Add(property.Name);
                continue;
            }
            KeyOrder.Add(property.Name);
            var offsets = property.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            Entries.Add(new Entry(
                property.Name,
                property.Value.GetProperty("dtype").GetString()!,
                [.. property.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64())],
                offsets[0],
                offsets[1]));
        }
    }

    public byte[] Bytes { get; }

    public long HeaderLength { get; }

    public string HeaderText { get; }

    public long DataStart => 8 + HeaderLength;

    public Dictionary<string, string> Metadata { get; } = [];

    public List<string> KeyOrder { get; } = [];

    public List<Entry> Entries { get; } = [];

    public Entry this[string name] => Entries.Single(e => e.Name == name);

    public float[] Float32(string name)
    {
        var e = this[name];
        Assert.That(e.DType, Is.EqualTo("F32"), name);
        var span = Bytes.AsSpan(checked((int)(DataStart + e.Begin)), checked((int)(e.End - e.Begin)));
        var values = new float[span.Length / 4];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = BinaryPrimitives.ReadSingleLittleEndian(span[(4 * i)..]);
        }
        return values;
    }

    public long[] Int64(string name)
    {
        var e = this[name];
        Assert.That(e.DType, Is.EqualTo("I64"), name);
        var span = Bytes.AsSpan(checked((int)(DataStart + e.Begin)), checked((int)(e.End - e.Begin)));
        var values = new long[span.Length / 8];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = BinaryPrimitives.ReadInt64LittleEndian(span[(8 * i)..]);
        }
        return values;
    }

    public sealed record Entry(string Name, string DType, long[] Shape, long Begin, long End);
}
