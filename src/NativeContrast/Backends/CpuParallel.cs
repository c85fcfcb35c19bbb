namespace NativeContrast.Backends;

/// <summary>Splits row-wise work across cores, keeping small problems on the calling thread.</summary>
internal static class CpuParallel
{
    /// <summary>Below this many scalar operations a job runs on one thread: scheduling costs more than it saves.</summary>
    private const long SerialWork = 1 << 15;

    public static int Workers => Environment.ProcessorCount;

    /// <summary>Runs body(start, end) over [0, count) in contiguous chunks; workPerItem estimates the cost of one item.</summary>
    public static void For(int count, long workPerItem, Action<int, int> body)
    {
        if (count <= 0)
        {
            return;
        }
        var total = count * Math.Max(1, workPerItem);
        var chunks = (int)Math.Min(Math.Min(count, Workers * 4L), Math.Max(1, total / SerialWork));
        if (chunks <= 1)
        {
            body(0, count);
            return;
        }
        Parallel.For(0, chunks, chunk =>
        {
            var start = (int)((long)count * chunk / chunks);
            var end = (int)((long)count * (chunk + 1) / chunks);
            body(start, end);
        });
    }
}
