namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/softmax.cu: one warp or one block per row (see <see cref="RowLaunch"/>).</summary>
public sealed partial class CudaBackend
{
    public unsafe void SoftmaxRows(Tensor x, Tensor y)
    {
        Check.SameShape(x, y);
        long rows = x.Rows, cols = x.Cols;
        ulong px = x.DevicePointer(), py = y.DevicePointer();
        if (rows == 0 || cols == 0)
        {
            return;
        }
        LaunchRowKernel("nc_softmax_rows", px, py, rows, cols);
    }

    public unsafe void LogSumExpRows(Tensor x, Tensor result)
    {
        long rows = x.Rows, cols = x.Cols;
        Check.Length(result.Length, rows, result.Describe());
        ulong px = x.DevicePointer(), pr = result.DevicePointer();
        if (rows == 0)
        {
            return;
        }
        LaunchRowKernel("nc_softmax_logsumexp_rows", px, pr, rows, cols);
    }
}
