namespace NativeContrast.Backends;

using NativeContrast.Tensors;

/// <summary>Operand precision for matrix products on tensor cores. The CPU computes every mode in fp32.</summary>
public enum MatmulPrecision
{
    /// <summary>Full fp32 (CUDA cores / cuBLAS pedantic).</summary>
    Fp32,

    /// <summary>TF32 operands, fp32 accumulation (Ampere and later tensor cores).</summary>
    Tf32,

    /// <summary>bf16 operands, fp32 accumulation.</summary>
    Bf16,
}

/// <summary>
/// The operations a training step needs, implemented by <see cref="CpuBackend"/> (managed, the oracle) and
/// <see cref="CudaBackend"/> (kernels and cuBLAS). Tensors are row-major float32; matrices are read as
/// [rows, cols] with every axis but the last flattened into rows. Every output is written into a tensor the
/// caller allocated, so a training step allocates nothing. Device work is asynchronous on the backend's stream;
/// only <see cref="CopyToHost"/> and <see cref="Synchronize"/> wait for it.
/// The interface is split by op family over several files (IBackend.*.cs).
/// </summary>
public partial interface IBackend : IDisposable
{
    /// <summary>"cpu" or "cuda:N (device name)".</summary>
    string Name { get; }

    Device Device { get; }

    /// <summary>Which device of its kind: the CUDA ordinal (0 for the CPU).</summary>
    int DeviceOrdinal => 0;

    /// <summary>Precision of GEMMs issued by <see cref="Gemm"/> and <see cref="GemmBatched"/>.</summary>
    MatmulPrecision GemmPrecision { get; set; }

    /// <summary>A new zero-filled tensor owning its storage.</summary>
    Tensor Allocate(TensorShape shape, string? name = null);

    /// <summary>
    /// Copies host elements into a tensor of this backend. On a device the call returns once the copy is done, since
    /// the span may be pageable memory that is gone afterwards (CudaBackend.CopyFromPinnedAsync is the overlapping path).
    /// </summary>
    void CopyFromHost(ReadOnlySpan<float> source, Tensor destination);

    /// <summary>Copies a tensor's elements to the host, waiting for all work queued before it.</summary>
    void CopyToHost(Tensor source, Span<float> destination);

    /// <summary>destination ← source (same length).</summary>
    void Copy(Tensor source, Tensor destination);

    void Fill(Tensor tensor, float value);

    /// <summary>Waits until every queued operation has finished.</summary>
    void Synchronize();

    /// <summary>C ← alpha·op(A)·op(B) + beta·C for row-major matrices; op transposes when asked.</summary>
    void Gemm(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1f, float beta = 0f);

    /// <summary>The same as <see cref="Gemm"/> for each leading index of rank-3 tensors [batch, rows, cols].</summary>
    void GemmBatched(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1f, float beta = 0f);

    /// <summary>y ← a + b.</summary>
    void Add(Tensor a, Tensor b, Tensor y);

    /// <summary>y ← alpha·x.</summary>
    void Scale(Tensor x, float alpha, Tensor y);

    /// <summary>y ← y + alpha·x.</summary>
    void Axpy(float alpha, Tensor x, Tensor y);

    /// <summary>y ← max(x, 0).</summary>
    void Relu(Tensor x, Tensor y);

    /// <summary>dx ← dy where y &gt; 0, else 0 (y is the forward output).</summary>
    void ReluBackward(Tensor y, Tensor dy, Tensor dx);

    /// <summary>result[0] ← Σ x.</summary>
    void Sum(Tensor x, Tensor result);

    /// <summary>result[i] ← Σ_j x[i, j] (one value per row).</summary>
    void SumRows(Tensor x, Tensor result);

    /// <summary>result[j] ← Σ_i x[i, j] (one value per column).</summary>
    void SumColumns(Tensor x, Tensor result);

    /// <summary>y[i, :] ← softmax(x[i, :]), max-shifted.</summary>
    void SoftmaxRows(Tensor x, Tensor y);

    /// <summary>result[i] ← log Σ_j exp(x[i, j]), max-shifted (−∞ for an empty row).</summary>
    void LogSumExpRows(Tensor x, Tensor result);

    /// <summary>y[i, :] ← x[i, :] / max(‖x[i, :]‖, eps); norms[i] ← ‖x[i, :]‖.</summary>
    void L2NormalizeRows(Tensor x, Tensor y, Tensor norms, float eps = 1e-12f);

    /// <summary>dx from dy for <see cref="L2NormalizeRows"/>: dx = (dy − y·⟨y, dy⟩) / max(‖x‖, eps).</summary>
    void L2NormalizeRowsBackward(Tensor y, Tensor norms, Tensor dy, Tensor dx, float eps = 1e-12f);

    /// <summary>
    /// Uniform [0, 1) from Philox-4x32-10: element i is word i mod 4 of the block with key <paramref name="seed"/> and
    /// counter (i / 4, <paramref name="offset"/>), as <see cref="Philox"/> documents; the same on every backend, bit for bit.
    /// Use a new offset (or seed) for each draw: the same pair gives the same numbers.
    /// </summary>
    void RandomUniform(Tensor tensor, ulong seed, ulong offset);

    /// <summary>Normal(mean, std) from the same Philox blocks through Box–Muller (see <see cref="Philox"/>).</summary>
    void RandomNormal(Tensor tensor, ulong seed, ulong offset, float mean = 0f, float std = 1f);
}
