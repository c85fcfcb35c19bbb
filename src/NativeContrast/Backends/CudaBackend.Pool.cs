namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/pool.cu.</summary>
public sealed partial class CudaBackend
{
    public unsafe void MaxPool2dForward(Tensor x, Tensor y, Tensor argmax, Conv2dGeometry geometry)
    {
        ConvChecks.Pool(x, y, geometry);
        Check.SameShape(y, argmax);
        long total = y.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong xp = x.DevicePointer(), yp = y.DevicePointer(), ap = argmax.DevicePointer();
        var window = KernelWindow.Of(geometry);
        void** args = stackalloc void*[] { &xp, &yp, &ap, &window, &total };
        Kernel("nc_pool_max_forward").Launch(StrideGrid(total, 256), 256, 0, Stream, args);
    }

    public unsafe void MaxPool2dBackward(Tensor dy, Tensor argmax, Tensor dx, Conv2dGeometry geometry)
    {
        ConvChecks.Pool(dx, dy, geometry);
        Check.SameShape(dy, argmax);
        long total = dx.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong dyp = dy.DevicePointer(), ap = argmax.DevicePointer(), dxp = dx.DevicePointer();
        var window = KernelWindow.Of(geometry);
        void** args = stackalloc void*[] { &dyp, &ap, &dxp, &window, &total };
        Kernel("nc_pool_max_backward").Launch(StrideGrid(total, 256), 256, 0, Stream, args);
    }

    public unsafe void GlobalAvgPoolForward(Tensor x, Tensor y)
    {
        var (_, positions, channels) = PoolChecks.Global(x, y);
        long total = y.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong xp = x.DevicePointer(), yp = y.DevicePointer();
        void** args = stackalloc void*[] { &xp, &yp, &positions, &channels, &total };
        Kernel("nc_pool_avg_forward").Launch(StrideGrid(total, 256), 256, 0, Stream, args);
    }

    public unsafe void GlobalAvgPoolBackward(Tensor dy, Tensor dx)
    {
        var (_, positions, channels) = PoolChecks.Global(dx, dy);
        long total = dx.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong dyp = dy.DevicePointer(), dxp = dx.DevicePointer();
        void** args = stackalloc void*[] { &dyp, &dxp, &positions, &channels, &total };
        Kernel("nc_pool_avg_backward").Launch(StrideGrid(total, 256), 256, 0, Stream, args);
    }
}
