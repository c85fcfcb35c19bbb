namespace NativeContrast.Tensors;

/// <summary>Element types. Float32 everywhere today; BFloat16 is reserved for mixed-precision storage.</summary>
public enum DType
{
    Float32,
    BFloat16,
}

public static class DTypeExtensions
{
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };
}
