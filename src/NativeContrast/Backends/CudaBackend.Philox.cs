namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/philox.cu: one thread per 4-element Philox block, the stream of <see cref="Philox"/>.</summary>
public sealed partial class CudaBackend
{
    private const int PhiloxThreads = 256;

    public unsafe void RandomUniform(Tensor tensor, ulong seed, ulong offset)
    {
        var py = tensor.DevicePointer();
        var n = tensor.Length;
        if (n == 0)
        {
            return;
        }
        void** args = stackalloc void*[] { &py, &n, &seed, &offset };
        Context.MakeCurrent();
        Kernel("nc_philox_uniform").Launch(StreamingGrid((n + 3) / 4, PhiloxThreads), PhiloxThreads, 0, Stream, args);
    }

    public unsafe void RandomNormal(Tensor tensor, ulong seed, ulong offset, float mean = 0f, float std = 1f)
    {
        var py = tensor.DevicePointer();
        var n = tensor.Length;
        if (n == 0)
        {
            return;
        }
        void** args = stackalloc void*[] { &py, &n, &seed, &offset, &mean, &std };
        Context.MakeCurrent();
        Kernel("nc_philox_normal").Launch(StreamingGrid((n + 3) / 4, PhiloxThreads), PhiloxThreads, 0, Stream, args);
    }
}
