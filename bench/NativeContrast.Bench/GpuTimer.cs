namespace NativeContrast.Bench;

using NativeContrast.Cuda;

/// <summary>
/// Times work queued on a stream with CUDA events: warm-up, then the median of many timed repetitions. Each
/// repetition times a loop of calls between one pair of events (enough calls for the loop to take about
/// <see cref="TargetLoopMs"/>) and divides by the count, so that a microsecond kernel is not timed as one launch's
/// latency. bench/reference/benchlib.py's median_ms times the PyTorch peers the same way.
/// </summary>
public sealed class GpuTimer(CudaStream stream) : IDisposable
{
    /// <summary>Milliseconds one timed loop aims for: far above an event pair's resolution and a launch's latency.</summary>
    public const double TargetLoopMs = 1.0;

    /// <summary>The most calls in one timed loop.</summary>
    public const int MaxCallsPerLoop = 1000;

    private readonly CudaEvent _start = new();
    private readonly CudaEvent _end = new();

    /// <summary>
    /// Median milliseconds of one call of <paramref name="work"/> over <paramref name="repetitions"/> timed loops, after
    /// <paramref name="warmup"/> untimed calls. One more timed call sizes the loop: ceil(<see cref="TargetLoopMs"/> / its
    /// time) calls, at least 1 and at most <see cref="MaxCallsPerLoop"/>; work of a millisecond or more is timed call by call.
    /// </summary>
    public double MedianMs(Action work, int warmup = 5, int repetitions = 50)
    {
        for (var i = 0; i < warmup; i++)
        {
            work();
        }
        stream.Synchronize();
        var calls = CallsPerLoop(work);
        var times = new double[repetitions];
        for (var i = 0; i < repetitions; i++)
        {
            _start.Record(stream);
            for (var j = 0; j < calls; j++)
            {
                work();
            }
            _end.Record(stream);
            times[i] = CudaEvent.ElapsedMilliseconds(_start, _end) / calls;
        }
        Array.Sort(times);
        return times[repetitions / 2];
    }

    private int CallsPerLoop(Action work)
    {
        _start.Record(stream);
        work();
        _end.Record(stream);
        var once = CudaEvent.ElapsedMilliseconds(_start, _end);
        return once >= TargetLoopMs ? 1 : (int)Math.Clamp(Math.Ceiling(TargetLoopMs / Math.Max(once, 1e-4)), 1, MaxCallsPerLoop);
    }

    public void Dispose()
    {
        _start.Dispose();
        _end.Dispose();
    }
}
