namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers of native/margin.cu (the design is described at the top of that file).</summary>
public sealed partial class CudaBackend
{
    /// <summary>Rows per block: one warp each (kWarps in margin.cu).</summary>
    private const int MarginWarps = 4;

    /// <summary>Widest rows: 32 features per lane of a warp (the largest K in margin.cu), held in registers.</summary>
    internal const int MarginMaxDim = 1024;

    /// <summary>Per-row [loss | positive cosine | hit], reduced into the statistics by nc_contrastive_stats.</summary>
    public long MarginLossWorkspaceLength(int rows, int dim) => 3L * rows;

    public unsafe void MarginLoss(Tensor u, float margin, Tensor workspace, Tensor stats, Tensor? du, float gradScale = 1f)
    {
        var (rows, dim) = ContrastiveCheck.Margin(u, margin, du);
        var kernel = MarginKernel(dim, u);
        ContrastiveCheck.Workspace(workspace, MarginLossWorkspaceLength(rows, dim));
        ContrastiveCheck.Stats(stats);
        Context.MakeCurrent();
        ulong uPointer = u.DevicePointer(), rowStats = workspace.DevicePointer(), duPointer = du?.DevicePointer() ?? 0UL;
        var negativeScale = rows > 2 ? 1.0 / (rows - 2) : 0.0;
        var positiveFactor = 2.0 * gradScale / rows;
        var negativeFactor = positiveFactor * negativeScale;
        void** args = stackalloc void*[] { &uPointer, &rows, &dim, &margin, &negativeScale, &positiveFactor, &negativeFactor, &rowStats, &duPointer };
        Kernel(kernel).Launch(new Dim3(Blocks(rows, MarginWarps)), MarginWarps * 32, 0, Stream, args);
        LaunchStats(rowStats, rows, stats.DevicePointer());
    }

    /// <summary>The kernel whose lanes hold <paramref name="dim"/> features in the fewest registers: nc_margin_loss_d{32·2^k}.</summary>
    internal static string MarginKernel(int dim, Tensor u)
    {
        if (dim > MarginMaxDim)
        {
            throw new NotSupportedException($"{u.Describe()}: the margin loss kernel holds rows of up to {MarginMaxDim} features in registers; got {dim}");
        }
        var width = 32;
        while (width < dim)
        {
            width *= 2;
        }
        return $"nc_margin_loss_d{width}";
    }
}
