namespace NativeContrast.Cuda;

/// <summary>A non-blocking stream; everything a backend queues goes on its stream, in order.</summary>
public sealed class CudaStream : IDisposable
{
    private IntPtr _handle;

    public CudaStream()
    {
        CudaCheck.Driver(DriverApi.cuStreamCreate(out _handle, DriverApi.StreamNonBlocking), "cuStreamCreate");
    }

    public IntPtr Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle == IntPtr.Zero, this);
            return _handle;
        }
    }

    /// <summary>True between <see cref="BeginCapture"/> and <see cref="EndCapture"/>; nothing may synchronise then.</summary>
    public bool IsCapturing { get; private set; }

    /// <summary>The last kernels launched on this stream, for the report of a fault that surfaces later.</summary>
    internal LaunchHistory Launches { get; } = new(8);

    /// <summary>Waits for the stream; an earlier kernel's fault surfaces here, reported with the kernels the stream ran last.</summary>
    public void Synchronize() => CudaCheck.Stream(DriverApi.cuStreamSynchronize(Handle), "cuStreamSynchronize", this);

    /// <summary>
    /// True once everything queued on the stream has run, false while work is pending (CUDA_ERROR_NOT_READY); a fault
    /// surfaces as in <see cref="Synchronize"/>. For waits that must watch something else meanwhile (NCCL's errors).
    /// </summary>
    public bool IsIdle()
    {
        var result = DriverApi.cuStreamQuery(Handle);
        if (result == DriverApi.ErrorNotReady)
        {
            return false;
        }
        CudaCheck.Stream(result, "cuStreamQuery", this);
        return true;
    }

    public void Wait(CudaEvent ev) => CudaCheck.Driver(DriverApi.cuStreamWaitEvent(Handle, ev.Handle, 0), "cuStreamWaitEvent");

    /// <summary>Starts recording the work queued on this stream into a graph instead of running it.</summary>
    public void BeginCapture()
    {
        CudaCheck.Driver(DriverApi.cuStreamBeginCapture(Handle, DriverApi.StreamCaptureModeThreadLocal), "cuStreamBeginCapture");
        IsCapturing = true;
    }

    /// <summary>Stops recording and instantiates the captured work as an executable graph.</summary>
    public CudaGraph EndCapture()
    {
        IsCapturing = false;
        CudaCheck.Driver(DriverApi.cuStreamEndCapture(Handle, out var graph), "cuStreamEndCapture");
        return new CudaGraph(graph);
    }

    public void Dispose()
    {
        if (_handle != IntPtr.Zero)
        {
            _ = DriverApi.cuStreamDestroy(_handle);
            _handle = IntPtr.Zero;
        }
    }
}

/// <summary>The last few kernels launched on a stream (name and grid), recorded without allocating per launch.</summary>
internal sealed class LaunchHistory(int capacity)
{
    private readonly string[] _names = new string[capacity];
    private readonly Dim3[] _grids = new Dim3[capacity];
    private long _count;

    public void Record(string name, Dim3 grid)
    {
        var slot = (int)(_count % capacity);
        _names[slot] = name;
        _grids[slot] = grid;
        _count++;
    }

    /// <summary>The recorded launches, oldest first, as "name grid (x, y, z)".</summary>
    public IReadOnlyList<string> Recent()
    {
        var recent = new List<string>();
        for (var i = Math.Max(0, _count - capacity); i < _count; i++)
        {
            var slot = (int)(i % capacity);
            recent.Add($"{_names[slot]} grid {_grids[slot]}");
        }
        return recent;
    }
}

/// <summary>A captured, instantiated graph: one launch replays every kernel and copy recorded into it.</summary>
public sealed class CudaGraph : IDisposable
{
    private IntPtr _graph;
    private IntPtr _executable;

    internal CudaGraph(IntPtr graph)
    {
        _graph = graph;
        CudaCheck.Driver(DriverApi.cuGraphInstantiateWithFlags(out _executable, graph, 0), "cuGraphInstantiateWithFlags");
    }

    public void Launch(CudaStream stream)
    {
        ObjectDisposedException.ThrowIf(_executable == IntPtr.Zero, this);
        CudaCheck.Stream(DriverApi.cuGraphLaunch(_executable, stream.Handle), "cuGraphLaunch", stream);
    }

    public void Dispose()
    {
        if (_executable != IntPtr.Zero)
        {
            _ = DriverApi.cuGraphExecDestroy(_executable);
            _executable = IntPtr.Zero;
        }
        if (_graph != IntPtr.Zero)
        {
            _ = DriverApi.cuGraphDestroy(_graph);
            _graph = IntPtr.Zero;
        }
    }
}

/// <summary>A timing event. Kernel timings are the elapsed time between two events recorded on one stream.</summary>
public sealed class CudaEvent : IDisposable
{
    private IntPtr _handle;

    public CudaEvent(bool timing = true)
    {
        CudaCheck.Driver(DriverApi.cuEventCreate(out _handle, (uint)(timing ? DriverApi.EventDefault : DriverApi.EventDisableTiming)), "cuEventCreate");
    }

    public IntPtr Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle == IntPtr.Zero, this);
            return _handle;
        }
    }

    public void Record(CudaStream stream) => CudaCheck.Driver(DriverApi.cuEventRecord(Handle, stream.Handle), "cuEventRecord");

    public void Synchronize() => CudaCheck.Driver(DriverApi.cuEventSynchronize(Handle), "cuEventSynchronize");

    /// <summary>Milliseconds from <paramref name="start"/> to <paramref name="end"/>; waits for <paramref name="end"/>.</summary>
    public static float ElapsedMilliseconds(CudaEvent start, CudaEvent end)
    {
        end.Synchronize();
        CudaCheck.Driver(DriverApi.cuEventElapsedTime(out var ms, start.Handle, end.Handle), "cuEventElapsedTime");
        return ms;
    }

    public void Dispose()
    {
        if (_handle != IntPtr.Zero)
        {
            _ = DriverApi.cuEventDestroy(_handle);
            _handle = IntPtr.Zero;
        }
    }
}
