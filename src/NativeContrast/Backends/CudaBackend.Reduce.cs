namespace NativeContrast.Backends;

using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>
/// Launchers for native/reduce.cu. Every partition below is a function of the shape alone, so sums are reproducible
/// bit for bit on any GPU; the two-pass reductions keep their partials in the backend's fixed scratch buffer.
/// </summary>
public sealed partial class CudaBackend
{
    private const int ReduceThreads = 256;

    /// <summary>Most blocks (and partials) of the whole-tensor sum's first pass.</summary>
    private const int SumPartials = 1024;

    /// <summary>Elements each thread of the first pass adds at least, before the grid grows.</summary>
    private const int SumElementsPerThread = 16;

    /// <summary>Column sums: a block is 32 columns by this many row lanes.</summary>
    private const int ColumnRowLanes = 8;

    /// <summary>Column sums split tall matrices into row chunks until about this many blocks are in flight.</summary>
    private const int ColumnTargetBlocks = 1024;

    /// <summary>Fewest rows per chunk, so each row lane adds at least 8 values before the partials meet.</summary>
    private const int ColumnMinRowsPerChunk = 64;

    /// <summary>Floats of scratch the reductions need at most: the sum's partials, then the column sums' partials.</summary>
    /// <remarks>
    /// Column chunks are only split while column tiles × chunks stays near <see cref="ColumnTargetBlocks"/>, so the
    /// partials (chunks × cols ≤ (target + tiles) × 32 with tiles &lt; target) never exceed 2 × target × 32 floats.
    /// </remarks>
    private const int ReductionScratchFloats = SumPartials + (2 * ColumnTargetBlocks * 32);

    public unsafe void Sum(Tensor x, Tensor result)
    {
        Check.Length(result.Length, 1, result.Describe());
        ulong px = x.DevicePointer(), pr = result.DevicePointer(), partials = ReductionScratch;
        var n = x.Length;
        var blocks = (int)Math.Clamp((n + (ReduceThreads * SumElementsPerThread) - 1) / (ReduceThreads * SumElementsPerThread), 1, SumPartials);
        Context.MakeCurrent();
        void** first = stackalloc void*[] { &px, &partials, &n };
        Kernel("nc_reduce_sum_partial").Launch((uint)blocks, ReduceThreads, 0, Stream, first);
        void** second = stackalloc void*[] { &partials, &pr, &blocks };
        Kernel("nc_reduce_sum_final").Launch(1, ReduceThreads, 0, Stream, second);
    }

    public unsafe void SumRows(Tensor x, Tensor result)
    {
        long rows = x.Rows, cols = x.Cols;
        Check.Length(result.Length, rows, result.Describe());
        ulong px = x.DevicePointer(), pr = result.DevicePointer();
        if (rows == 0)
        {
            return;
        }
        LaunchRowKernel("nc_reduce_sum_rows", px, pr, rows, cols);
    }

    public unsafe void SumColumns(Tensor x, Tensor result)
    {
        long rows = x.Rows, cols = x.Cols;
        Check.Length(result.Length, cols, result.Describe());
        ulong px = x.DevicePointer(), pr = result.DevicePointer();
        if (cols == 0)
        {
            return;
        }
        var tiles = (cols + 31) / 32;
        var chunks = Math.Clamp((ColumnTargetBlocks + tiles - 1) / tiles, 1, Math.Max(1, (rows + ColumnMinRowsPerChunk - 1) / ColumnMinRowsPerChunk));
        var rowsPerChunk = Math.Max(1, (rows + chunks - 1) / chunks);
        chunks = Math.Max(1, (rows + rowsPerChunk - 1) / rowsPerChunk);
        Context.MakeCurrent();
        var kernel = Kernel("nc_reduce_sum_columns");
        var block = new Dim3(32, ColumnRowLanes);
        if (chunks == 1)
        {
            void** args = stackalloc void*[] { &px, &pr, &rows, &cols, &rowsPerChunk };
            kernel.Launch(new Dim3((uint)tiles), block, 0, Stream, args);
            return;
        }
        // Pass 1: partials [chunks, cols] in scratch; pass 2: the same kernel sums those chunks in one chunk.
        ulong partials = ReductionScratch + (SumPartials * sizeof(float));
        void** first = stackalloc void*[] { &px, &partials, &rows, &cols, &rowsPerChunk };
        kernel.Launch(new Dim3((uint)tiles, (uint)chunks), block, 0, Stream, first);
        void** second = stackalloc void*[] { &partials, &pr, &chunks, &cols, &chunks };
        kernel.Launch(new Dim3((uint)tiles), block, 0, Stream, second);
    }

    /// <summary>
    /// Launch shape of the row kernels (reduce, softmax, normalize): a warp per row for narrow rows (8 rows per
    /// 256-thread block), a 512-thread block per row for wide ones. The group size tells the kernel which.
    /// </summary>
    /// <summary>Launches a row kernel of the (input, output, rows, cols, group) form, sized by <see cref="RowLaunch"/>.</summary>
    private unsafe void LaunchRowKernel(string kernel, ulong input, ulong output, long rows, long cols)
    {
        var (grid, threads, group) = RowLaunch(rows, cols);
        void** args = stackalloc void*[] { &input, &output, &rows, &cols, &group };
        Context.MakeCurrent();
        Kernel(kernel).Launch(grid, threads, 0, Stream, args);
    }

    internal static (uint Grid, int Threads, int Group) RowLaunch(long rows, long cols)
    {
        const int warpRowLimit = 1024;
        if (cols <= warpRowLimit)
        {
            const int threads = 256;
            return (Blocks(rows, threads / 32), threads, 32);
        }
        const int wide = 512;
        return ((uint)rows, wide, wide);
    }
}
