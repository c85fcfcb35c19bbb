namespace NativeContrast.Tensors;

/// <summary>Where a tensor's storage lives.</summary>
public enum Device
{
    Cpu,
    Cuda,
}
