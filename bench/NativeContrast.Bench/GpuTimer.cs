namespace NativeContrast.Bench;

using NativeContrast.Cuda;

/// <summary>Times work queued on a stream with CUDA events: warm-up, then the median of many timed repetitions.</summary>
public sealed class GpuTimer(CudaStream stream) : IDisposable
{
    private readonly CudaEvent _start = new();
    private readonly CudaEvent _end = new();

    /// <summary>Median milliseconds of one call of <paramref name="work"/>, timing <paramref name="repetitions"/> calls one by one.</summary>
    public double MedianMs(Action work, int warmup = 5, int repetitions = 50)
    {
        for (var i = 0; i < warmup; i++)
        {
            work();
        }
        stream.Synchronize();
        var times = new double[repetitions];
        for (var i = 0; i < repetitions; i++)
        {
            _start.Record(stream);
            work();
            _end.Record(stream);
            times[i] = CudaEvent.ElapsedMilliseconds(_start, _end);
        }
        Array.Sort(times);
        return times[repetitions / 2];
    }

    public void Dispose()
    {
        _start.Dispose();
        _end.Dispose();
    }
}
