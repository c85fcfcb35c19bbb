namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/xent.cu (one block per row).</summary>
public sealed partial class CudaBackend
{
    public unsafe void SoftmaxCrossEntropyForward(Tensor logits, Tensor labels, Tensor losses)
    {
        int rows = logits.Rows, cols = logits.Cols;
        Check.Length(labels.Length, rows, labels.Describe() + " (one label per row of logits)");
        Check.Length(losses.Length, rows, losses.Describe());
        if (rows == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong lp = logits.DevicePointer(), yp = labels.DevicePointer(), op = losses.DevicePointer();
        void** args = stackalloc void*[] { &lp, &yp, &op, &cols };
        Kernel("nc_xent_forward").Launch(new Dim3((uint)rows), 256, 0, Stream, args);
    }

    public unsafe void SoftmaxCrossEntropyBackward(Tensor logits, Tensor labels, float scale, Tensor dlogits)
    {
        Check.SameShape(logits, dlogits);
        int rows = logits.Rows, cols = logits.Cols;
        Check.Length(labels.Length, rows, labels.Describe() + " (one label per row of logits)");
        if (rows == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong lp = logits.DevicePointer(), yp = labels.DevicePointer(), dp = dlogits.DevicePointer();
        void** args = stackalloc void*[] { &lp, &yp, &dp, &cols, &scale };
        Kernel("nc_xent_backward").Launch(new Dim3((uint)rows), 256, 0, Stream, args);
    }
}
