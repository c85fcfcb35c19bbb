namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>
/// The GPU backend: hand-written kernels from native/ (one fatbin) and cuBLAS, all queued on one stream.
/// Ops never synchronise with the host except <see cref="CopyToHost"/> and <see cref="Synchronize"/>, so a
/// training step can be captured into a CUDA graph. Split by op family over CudaBackend.*.cs; each family's
/// launchers sit next to the kernels of the same name in native/.
/// </summary>
public sealed partial class CudaBackend : IBackend
{
    /// <summary>Fixed cuBLAS workspace, so that GEMMs allocate nothing and can be captured (32 MiB covers Hopper's needs).</summary>
    private const long CublasWorkspaceBytes = 32L << 20;

    /// <summary>Resident 256-thread blocks per multiprocessor that grid-stride kernels aim for (2048 threads: a full SM).</summary>
    private const int StreamingBlocksPerMultiprocessor = 8;

    private readonly CudaStorage _cublasWorkspace;

    /// <summary>Partials of the two-pass reductions; fixed size (see CudaBackend.Reduce.cs), reused by every op in stream order.</summary>
    private readonly CudaStorage _reductionScratch;

    private bool _disposed;

    /// <summary>Opens device <paramref name="ordinal"/>; throws <see cref="CudaUnavailableException"/> with the reason when it cannot.</summary>
    public CudaBackend(int ordinal = 0)
    {
        var why = CudaProbe.WhyUnavailable(ordinal);
        if (why is not null)
        {
            throw new CudaUnavailableException(why);
        }
        Context = new CudaContext(ordinal);
        try
        {
            Stream = new CudaStream();
            Module = KernelModule.Load();
            Blas = new Cublas(Stream);
            _cublasWorkspace = new CudaStorage(CublasWorkspaceBytes / sizeof(float), Context);
            Blas.SetWorkspace(_cublasWorkspace.Pointer, CublasWorkspaceBytes);
            _reductionScratch = new CudaStorage(ReductionScratchFloats, Context);
        }
        catch
        {
            // The construction's own error is the one to report, not a failed free on the way out.
            _ = Release();
            throw;
        }
    }

    public CudaContext Context { get; }

    public CudaStream Stream { get; }

    public KernelModule Module { get; }

    public Cublas Blas { get; }

    public CudaDeviceInfo Info => Context.Info;

    public string Name => $"cuda:{Info.Ordinal} ({Info.Name})";

    public Device Device => Device.Cuda;

    public int DeviceOrdinal => Info.Ordinal;

    public MatmulPrecision GemmPrecision { get; set; } = MatmulPrecision.Tf32;

    public Tensor Allocate(TensorShape shape, string? name = null)
    {
        Context.MakeCurrent();
        var t = new Tensor(new CudaStorage(shape.Length, Context), shape, 0, ownsStorage: true, name);
        Fill(t, 0f);
        return t;
    }

    public unsafe void CopyFromHost(ReadOnlySpan<float> source, Tensor destination)
    {
        Check.Length(source.Length, destination.Length, destination.Describe());
        Context.MakeCurrent();
        fixed (float* host = source)
        {
            // Synchronous for pageable memory: the span may be gone once this returns.
            CudaCheck.Stream(DriverApi.cuMemcpyHtoDAsync(destination.DevicePointer(), host, (nuint)source.Length * sizeof(float), Stream.Handle), $"cuMemcpyHtoDAsync({destination.Describe()})", Stream);
            Stream.Synchronize();
        }
    }

    /// <summary>Asynchronous copy from pinned host memory (the loader's path): returns before the copy ends.</summary>
    public unsafe void CopyFromPinnedAsync(PinnedHostBuffer source, long sourceOffset, Tensor destination)
    {
        if (sourceOffset < 0 || sourceOffset + destination.Length > source.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(sourceOffset), $"pinned buffer of {source.Length} elements has no {destination.Length} elements at {sourceOffset} for {destination.Describe()}");
        }
        Context.MakeCurrent();
        var host = (float*)source.Pointer + sourceOffset;
        CudaCheck.Stream(DriverApi.cuMemcpyHtoDAsync(destination.DevicePointer(), host, (nuint)(destination.Length * sizeof(float)), Stream.Handle), $"cuMemcpyHtoDAsync({destination.Describe()})", Stream);
    }

    public unsafe void CopyToHost(Tensor source, Span<float> destination)
    {
        Check.Length(destination.Length, source.Length, source.Describe());
        Context.MakeCurrent();
        fixed (float* host = destination)
        {
            CudaCheck.Stream(DriverApi.cuMemcpyDtoHAsync(host, source.DevicePointer(), (nuint)destination.Length * sizeof(float), Stream.Handle), $"cuMemcpyDtoHAsync({source.Describe()})", Stream);
            Stream.Synchronize();
        }
    }

    public void Copy(Tensor source, Tensor destination)
    {
        Check.SameLength(source, destination);
        Context.MakeCurrent();
        CudaCheck.Stream(DriverApi.cuMemcpyDtoDAsync(destination.DevicePointer(), source.DevicePointer(), (nuint)(source.Length * sizeof(float)), Stream.Handle), $"cuMemcpyDtoDAsync({source.Describe()} -> {destination.Describe()})", Stream);
    }

    public void Fill(Tensor tensor, float value)
    {
        Context.MakeCurrent();
        CudaCheck.Stream(DriverApi.cuMemsetD32Async(tensor.DevicePointer(), BitConverter.SingleToUInt32Bits(value), (nuint)tensor.Length, Stream.Handle), $"cuMemsetD32Async({tensor.Describe()})", Stream);
    }

    public void Synchronize()
    {
        Context.MakeCurrent();
        Stream.Synchronize();
    }

    public void Gemm(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1f, float beta = 0f)
    {
        var (m, k, n) = Check.GemmShapes(a, transposeA, b, transposeB, c);
        if (m == 0 || n == 0)
        {
            return;
        }
        Context.MakeCurrent();
        Blas.Gemm(a.DevicePointer(), transposeA, b.DevicePointer(), transposeB, c.DevicePointer(), m, n, k, alpha, beta, GemmPrecision);
    }

    public void GemmBatched(Tensor a, bool transposeA, Tensor b, bool transposeB, Tensor c, float alpha = 1f, float beta = 0f)
    {
        var (batch, m, k, n) = Check.BatchedGemmShapes(a, transposeA, b, transposeB, c);
        if (batch == 0 || m == 0 || n == 0)
        {
            return;
        }
        Context.MakeCurrent();
        Blas.GemmStridedBatched(a.DevicePointer(), transposeA, b.DevicePointer(), transposeB, c.DevicePointer(), m, n, k, batch, alpha, beta, GemmPrecision);
    }

    /// <summary>A kernel of the engine's module, by its extern "C" name.</summary>
    internal CudaKernel Kernel(string name) => Module[name];

    /// <summary>Blocks of <paramref name="threads"/> needed to cover <paramref name="count"/> items.</summary>
    internal static uint Blocks(long count, int threads) => (uint)Math.Clamp((count + threads - 1) / threads, 1, int.MaxValue);

    /// <summary>
    /// Grid of a grid-stride kernel: enough blocks to cover <paramref name="count"/> items, but no more than fill the
    /// device once, so large tensors loop instead of queuing waves of short-lived blocks.
    /// </summary>
    internal uint StreamingGrid(long count, int threads) =>
        Math.Min(Blocks(count, threads), (uint)(Info.Multiprocessors * StreamingBlocksPerMultiprocessor * 256 / threads));

    private ulong ReductionScratch => _reductionScratch.Pointer;

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        Context.MakeCurrent();
        _ = DriverApi.cuStreamSynchronize(Stream.Handle);
        if (Release() is { } failure)
        {
            throw failure;
        }
    }

    /// <summary>
    /// Frees whatever the constructor got to create, in reverse order (members are null after a failed construction),
    /// all of it even when a free fails; returns the first failure.
    /// </summary>
    private CudaException? Release()
    {
        CudaException? failure = null;
        void Free(IDisposable? resource)
        {
            try
            {
                resource?.Dispose();
            }
            catch (CudaException e)
            {
                failure ??= e;
            }
        }
        Free(_reductionScratch);
        // The handle before the workspace it was given.
        Free(Blas);
        Free(_cublasWorkspace);
        Free(Module);
        Free(Stream);
        Context.Dispose();
        return failure;
    }
}
