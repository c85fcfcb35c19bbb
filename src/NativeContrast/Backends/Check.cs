namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>Argument checks shared by the backends; every message names the tensor and what is wrong.</summary>
internal static class Check
{
    public static void Length(long actual, long expected, string what)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"{what}: expected {expected} elements, got {actual}");
        }
    }

    public static void SameLength(Tensor a, Tensor b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException($"{a.Describe()} and {b.Describe()} differ in length ({a.Length} vs {b.Length})");
        }
    }

    public static void SameShape(Tensor a, Tensor b)
    {
        if (a.Shape != b.Shape)
        {
            throw new ArgumentException($"{a.Describe()} and {b.Describe()} differ in shape");
        }
    }

    /// <summary>Rejects an output that shares elements with an input the op still reads while it writes.</summary>
    public static void Disjoint(Tensor output, Tensor input, string why)
    {
        if (ReferenceEquals(output.Storage, input.Storage)
            && output.Offset < input.Offset + input.Length
            && input.Offset < output.Offset + output.Length)
        {
            throw new ArgumentException($"{output.Describe()} overlaps {input.Describe()}: {why}; pass a separate tensor");
        }
    }

    public static void Rows(Tensor t, int rows, int cols)
    {
        if (t.Rows != rows || t.Cols != cols)
        {
            throw new ArgumentException($"{t.Describe()}: expected a [{rows}, {cols}] matrix");
        }
    }

    /// <summary>The tensor lives where the backend computes: the same kind of device and the same device ordinal.</summary>
    public static void Device(Tensor t, IBackend backend)
    {
        if (t.Device != backend.Device || t.Storage.DeviceOrdinal != backend.DeviceOrdinal)
        {
            throw new ArgumentException($"{t.Describe()} lives on {Where(t.Device, t.Storage.DeviceOrdinal)}, this backend computes on {Where(backend.Device, backend.DeviceOrdinal)}");
        }
    }

    private static string Where(NativeContrast.Tensors.Device device, int ordinal) =>
        device == NativeContrast.Tensors.Device.Cpu ? "cpu" : $"cuda:{ordinal}";

    /// <summary>(m, k, n) of C[m, n] = op(A)[m, k]·op(B)[k, n], with a clear error on mismatch.</summary>
    public static (int M, int K, int N) GemmShapes(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c)
    {
        var (m, k) = transposeA ? (a.Cols, a.Rows) : (a.Rows, a.Cols);
        var (kb, n) = transposeB ? (b.Cols, b.Rows) : (b.Rows, b.Cols);
        if (k != kb || c.Rows != m || c.Cols != n)
        {
            throw new ArgumentException(
                $"GEMM shapes do not agree: op(A) of {a.Describe()} is [{m}, {k}], op(B) of {b.Describe()} is [{kb}, {n}], C is {c.Describe()}");
        }
        return (m, k, n);
    }

    public static (int Batch, int M, int K, int N) BatchedGemmShapes(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c)
    {
        foreach (var t in new[] { a, b, c })
        {
            if (t.Shape.Rank != 3)
            {
                throw new ArgumentException($"batched GEMM needs rank-3 tensors [batch, rows, cols]; {t.Describe()} has rank {t.Shape.Rank}");
            }
        }
        var batch = a.Shape[0];
        if (b.Shape[0] != batch || c.Shape[0] != batch)
        {
            throw new ArgumentException($"batched GEMM: batch sizes differ ({a.Describe()}, {b.Describe()}, {c.Describe()})");
        }
        var (m, k) = transposeA ? (a.Shape[2], a.Shape[1]) : (a.Shape[1], a.Shape[2]);
        var (kb, n) = transposeB ? (b.Shape[2], b.Shape[1]) : (b.Shape[1], b.Shape[2]);
        if (k != kb || c.Shape[1] != m || c.Shape[2] != n)
        {
            throw new ArgumentException(
                $"batched GEMM shapes do not agree: op(A) is [{m}, {k}], op(B) is [{kb}, {n}], C is {c.Describe()}");
        }
        return (batch, m, k, n);
    }
}
