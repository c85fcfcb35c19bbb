namespace NativeContrast.Tensors;

/// <summary>A flat block of float32 elements owned by one backend. Tensors are views over a storage.</summary>
public abstract class TensorStorage : IDisposable
{
    protected TensorStorage(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
    }

    public long Length { get; }

    public abstract Device Device { get; }

    /// <summary>Which device of its kind holds the storage: the CUDA ordinal (0 for host memory).</summary>
    public virtual int DeviceOrdinal => 0;

    public bool IsDisposed { get; private set; }

    public void Dispose()
    {
        if (IsDisposed)
        {
            return;
        }
        IsDisposed = true;
        Release();
        GC.SuppressFinalize(this);
    }

    protected abstract void Release();
}

/// <summary>Managed host storage: the CPU backend computes directly on this array.</summary>
public sealed class CpuStorage : TensorStorage
{
    public CpuStorage(long length)
        : base(length)
    {
        Data = GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
        Array.Clear(Data);
    }

    public CpuStorage(float[] data)
        : base(data.Length)
    {
        Data = data;
    }

    public float[] Data { get; }

    public override Device Device => Device.Cpu;

    protected override void Release()
    {
    }
}
