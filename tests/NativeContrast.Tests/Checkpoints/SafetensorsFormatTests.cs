namespace NativeContrast.Tests.Checkpoints;

using NativeContrast.Checkpoints;
using NativeContrast.Tensors;
using static CheckpointFixtures;

public class SafetensorsFormatTests : CheckpointTestBase
{
    [Test]
    public void WrittenFileFollowsTheFormatAsAnIndependentReaderSeesIt()
    {
        using var a = Cpu.Allocate(new TensorShape(3, 5, 7), "a");
        using var b = Cpu.Allocate(new TensorShape(33), "b");
        using var scalar = Cpu.Allocate(new TensorShape(), "scalar");
        using var empty = Cpu.Allocate(new TensorShape(0), "empty");
        var aValues = FillRandom(Cpu, a, 1);
        var bValues = FillRandom(Cpu, b, 2);
        Cpu.Fill(scalar, -2.5f);
        var writer = new SafetensorsWriter();
        writer.AddMetadata("format", "pt");
        writer.AddMetadata("quote \" and unicode é", "value with \"quotes\", + and \n newline");
        writer.Add("b.weight", Cpu, b);
        writer.AddInt64("bn.num_batches_tracked", new TensorShape(), new long[] { 12345678901 });
        writer.Add("a", Cpu, a);
        writer.Add("scalar", Cpu, scalar);
        writer.Add("empty", Cpu, empty);
        writer.AddInt64("ints", new TensorShape(2), new long[] { long.MinValue, -1 });
        var path = PathTo("x.safetensors");
        writer.Save(path);

        var file = new IndependentSafetensors(path);
        Assert.Multiple(() =>
        {
            Assert.That(file.HeaderLength % 8, Is.Zero, "8 + N must keep the data 8-byte aligned");
            Assert.That(file.HeaderText[0], Is.EqualTo('{'));
            Assert.That(file.HeaderText.TrimEnd(' '), Does.EndWith("}"), "only spaces may pad the header");
            Assert.That(file.HeaderText.TrimEnd(' ').Length, Is.GreaterThan(file.HeaderText.Length - 8), "at most 7 bytes of padding");
            Assert.That(file.Metadata, Is.EqualTo(new Dictionary<string, string> { ["format"] = "pt", ["quote \" and unicode é"] = "value with \"quotes\", + and \n newline" }));
            // int64 first (largest element size, as the reference writer orders), then float32 in the order added.
            Assert.That(file.KeyOrder, Is.EqualTo(new[] { "__metadata__", "bn.num_batches_tracked", "ints", "b.weight", "a", "scalar", "empty" }));
        });
        long covered = 0;
        foreach (var e in file.Entries)
        {
            Assert.That(e.Begin, Is.EqualTo(covered), $"{e.Name} must start where the previous tensor ends");
            Assert.That(e.Begin % (e.DType == "I64" ? 8 : 4), Is.Zero, $"{e.Name} is naturally aligned");
            covered = e.End;
        }
        Assert.Multiple(() =>
        {
            Assert.That(covered, Is.EqualTo(file.Bytes.Length - file.DataStart), "the tensors tile the data section");
            Assert.That(file["a"].Shape, Is.EqualTo(new long[] { 3, 5, 7 }));
            Assert.That(file["scalar"].Shape, Is.Empty);
            Assert.That(file["empty"].Shape, Is.EqualTo(new long[] { 0 }));
            Assert.That(file["empty"].End, Is.EqualTo(file["empty"].Begin));
            Assert.That(Bits(file.Float32("a")), Is.EqualTo(Bits(aValues)));
            Assert.That(Bits(file.Float32("b.weight")), Is.EqualTo(Bits(bValues)));
            Assert.That(file.Float32("scalar"), Is.EqualTo(new[] { -2.5f }));
            Assert.That(file.Int64("bn.num_batches_tracked"), Is.EqualTo(new[] { 12345678901L }));
            Assert.That(file.Int64("ints"), Is.EqualTo(new[] { long.MinValue, -1L }));
        });
    }

    [Test]
    public void StreamingInSmallChunksWritesTheSameBytes()
    {
        using var t = Cpu.Allocate(new TensorShape(1000, 3), "t");
        using var u = Cpu.Allocate(new TensorShape(7), "u");
        FillRandom(Cpu, t, 3);
        FillRandom(Cpu, u, 4);
        byte[] Write(int chunk)
        {
            var writer = new SafetensorsWriter(chunk);
            writer.Add("t", Cpu, t);
            writer.Add("u", Cpu, u);
            using var stream = new MemoryStream();
            writer.WriteTo(stream);
            return stream.ToArray();
        }
        Assert.That(Write(7), Is.EqualTo(Write(SafetensorsWriter.DefaultChunkElements)));
    }

    [Test]
    public void ReaderRoundTripsEveryTensorAndTheMetadata()
    {
        using var t = Cpu.Allocate(new TensorShape(33, 1), "t");
        var values = FillRandom(Cpu, t, 5);
        var writer = new SafetensorsWriter();
        writer.AddMetadata("k", "v");
        writer.Add("t", Cpu, t);
        writer.AddInt64("n", new TensorShape(), new long[] { 42 });
        var path = PathTo("r.safetensors");
        writer.Save(path);

        using var file = SafetensorsFile.Open(path);
        using var loaded = Cpu.Allocate(new TensorShape(33, 1), "loaded");
        file.ReadInto("t", Cpu, loaded);
        Assert.Multiple(() =>
        {
            Assert.That(file.Metadata, Is.EqualTo(new Dictionary<string, string> { ["k"] = "v" }));
            Assert.That(file.Tensors.Select(x => x.Name), Is.EqualTo(new[] { "n", "t" }));
            Assert.That(file.Info("t").Shape, Is.EqualTo(new long[] { 33, 1 }));
            Assert.That(Bits(Cpu, loaded), Is.EqualTo(Bits(values)));
            Assert.That(Bits(file.ReadFloat32("t")), Is.EqualTo(Bits(values)));
            Assert.That(file.ReadInt64("n"), Is.EqualTo(new[] { 42L }));
        });
    }

    [Test]
    public void ReadsHandBuiltBf16F16F64AndI64Tensors()
    {
        // Values exactly representable in each type, so the conversion to float32 must be exact.
        float[] bf16Values = [1.5f, -2.25f, 3.3895314e38f, -0f, BitConverter.UInt32BitsToSingle(0x0001_0000)]; // max, and the smallest subnormal
        ushort[] bf16 = [.. bf16Values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))];
        Half[] f16 = [(Half)0.5f, (Half)(-65504f), BitConverter.UInt16BitsToHalf(0x0001), (Half)1.0009766f];
        double[] f64 = [Math.PI, -1e-3];
        long[] i64 = [long.MaxValue, -7];
        var data = new List<byte>();
        string Entry(string name, string dtype, string shape, byte[] bytes)
        {
            var begin = data.Count;
            data.AddRange(bytes);
            return $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{begin},{data.Count}]}}";
        }
        var header = "{" + string.Join(",",
            Entry("counts", "I64", "[2]", Bytes(i64)),
            Entry("double", "F64", "[2, 1]", Bytes(f64)),
            Entry("bf", "BF16", "[5]", Bytes(bf16)),
            Entry("half", "F16", "[2,2]", Bytes(f16))) + ",\"__metadata__\":{\"format\":\"pt\"}}";
        var path = PathTo("torch.safetensors");
        WriteRaw(path, header, [.. data]);

        using var file = SafetensorsFile.Open(path);
        using var half = Cpu.Allocate(new TensorShape(2, 2), "half");
        file.ReadInto("half", Cpu, half);
        Assert.Multiple(() =>
        {
            Assert.That(file.Info("bf").DType, Is.EqualTo(SafetensorsDType.BF16));
            Assert.That(Bits(file.ReadFloat32("bf")), Is.EqualTo(Bits(bf16Values)));
            Assert.That(half.Span.ToArray(), Is.EqualTo(new[] { 0.5f, -65504f, MathF.Pow(2, -24), 1.0009766f }));
            Assert.That(file.ReadFloat32("double"), Is.EqualTo(new[] { (float)Math.PI, -1e-3f }));
            Assert.That(file.ReadInt64("counts"), Is.EqualTo(i64));
            Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        });
    }

    [Test]
    public void ReadIntoConvertsInChunksAcrossTheWholeTensor()
    {
        // More than one conversion chunk (2^20 elements) of F16, so chunk boundaries are crossed.
        const int n = (1 << 20) + 37;
        var halves = new Half[n];
        for (var i = 0; i < n; i++)
        {
            halves[i] = (Half)(i % 2048);
        }
        var path = PathTo("big.safetensors");
        WriteRaw(path, $"{{\"h\":{{\"dtype\":\"F16\",\"shape\":[{n}],\"data_offsets\":[0,{2 * n}]}}}}", Bytes(halves));
        using var file = SafetensorsFile.Open(path);
        using var t = Cpu.Allocate(new TensorShape(n), "h");
        file.ReadInto("h", Cpu, t);
        var values = t.Span.ToArray();
        var wrong = Enumerable.Range(0, n).Count(i => values[i] != i % 2048);
        Assert.That(wrong, Is.Zero);
    }
}
