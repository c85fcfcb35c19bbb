namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/elementwise.cu: grid-stride kernels sized from the element count.</summary>
public sealed partial class CudaBackend
{
    private const int ElementwiseThreads = 256;

    public unsafe void Add(Tensor a, Tensor b, Tensor y)
    {
        Check.SameLength(a, y);
        Check.SameLength(b, y);
        ulong pa = a.DevicePointer(), pb = b.DevicePointer(), py = y.DevicePointer();
        var n = y.Length;
        void** args = stackalloc void*[] { &pa, &pb, &py, &n };
        LaunchElementwise("nc_elementwise_add", n, args);
    }

    public unsafe void Scale(Tensor x, float alpha, Tensor y)
    {
        Check.SameLength(x, y);
        ulong px = x.DevicePointer(), py = y.DevicePointer();
        var n = y.Length;
        void** args = stackalloc void*[] { &px, &alpha, &py, &n };
        LaunchElementwise("nc_elementwise_scale", n, args);
    }

    public unsafe void Axpy(float alpha, Tensor x, Tensor y)
    {
        Check.SameLength(x, y);
        ulong px = x.DevicePointer(), py = y.DevicePointer();
        var n = y.Length;
        void** args = stackalloc void*[] { &alpha, &px, &py, &n };
        LaunchElementwise("nc_elementwise_axpy", n, args);
    }

    public unsafe void Relu(Tensor x, Tensor y)
    {
        Check.SameLength(x, y);
        ulong px = x.DevicePointer(), py = y.DevicePointer();
        var n = y.Length;
        void** args = stackalloc void*[] { &px, &py, &n };
        LaunchElementwise("nc_elementwise_relu", n, args);
    }

    public unsafe void ReluBackward(Tensor y, Tensor dy, Tensor dx)
    {
        Check.SameLength(y, dx);
        Check.SameLength(dy, dx);
        ulong py = y.DevicePointer(), pdy = dy.DevicePointer(), pdx = dx.DevicePointer();
        var n = dx.Length;
        void** args = stackalloc void*[] { &py, &pdy, &pdx, &n };
        LaunchElementwise("nc_elementwise_relu_backward", n, args);
    }

    /// <summary>One thread per float4 (the kernels' vector path), capped at a full device of resident blocks.</summary>
    private unsafe void LaunchElementwise(string kernel, long n, void** args)
    {
        if (n == 0)
        {
            return;
        }
        Context.MakeCurrent();
        Kernel(kernel).Launch(StreamingGrid((n + 3) / 4, ElementwiseThreads), ElementwiseThreads, 0, Stream, args);
    }
}
