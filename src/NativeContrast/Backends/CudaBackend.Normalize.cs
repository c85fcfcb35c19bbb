namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/normalize.cu: one warp or one block per row (see <see cref="RowLaunch"/>).</summary>
public sealed partial class CudaBackend
{
    public unsafe void L2NormalizeRows(Tensor x, Tensor y, Tensor norms, float eps = 1e-12f)
    {
        Check.SameShape(x, y);
        long rows = x.Rows, cols = x.Cols;
        Check.Length(norms.Length, rows, norms.Describe());
        ulong px = x.DevicePointer(), py = y.DevicePointer(), pn = norms.DevicePointer();
        if (rows == 0)
        {
            return;
        }
        var (grid, threads, group) = RowLaunch(rows, cols);
        void** args = stackalloc void*[] { &px, &py, &pn, &rows, &cols, &eps, &group };
        Context.MakeCurrent();
        Kernel("nc_normalize_l2_rows").Launch(grid, threads, 0, Stream, args);
    }

    public unsafe void L2NormalizeRowsBackward(Tensor y, Tensor norms, Tensor dy, Tensor dx, float eps = 1e-12f)
    {
        Check.SameShape(y, dy);
        Check.SameShape(y, dx);
        long rows = y.Rows, cols = y.Cols;
        Check.Length(norms.Length, rows, norms.Describe());
        ulong py = y.DevicePointer(), pn = norms.DevicePointer(), pdy = dy.DevicePointer(), pdx = dx.DevicePointer();
        if (rows == 0)
        {
            return;
        }
        var (grid, threads, group) = RowLaunch(rows, cols);
        void** args = stackalloc void*[] { &py, &pn, &pdy, &pdx, &rows, &cols, &eps, &group };
        Context.MakeCurrent();
        Kernel("nc_normalize_l2_rows_backward").Launch(grid, threads, 0, Stream, args);
    }
}
