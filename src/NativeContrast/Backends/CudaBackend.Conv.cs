namespace NativeContrast.Backends;

using System.Runtime.InteropServices;
using NativeContrast.Cuda;
using NativeContrast.Tensors;

/// <summary>Launchers for native/conv.cu (im2col / col2im, weight permutation, bias).</summary>
public sealed partial class CudaBackend
{
    /// <summary>None: the layer drives im2col + cuBLAS (tensor-core GEMMs) through the ops below.</summary>
    public IConvolution? CreateConvolution(Conv2dGeometry geometry, int outChannels) => null;

    public unsafe void Im2Col(Tensor x, Tensor columns, Conv2dGeometry geometry, int firstSample, int samples)
    {
        ConvChecks.Im2Col(x, columns, geometry, firstSample, samples);
        long total = columns.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong xp = x.DevicePointer(), cp = columns.DevicePointer();
        var window = KernelWindow.Of(geometry);
        long first = firstSample;
        var vector = geometry.Channels % 4 == 0 && Aligned16(xp) && Aligned16(cp);
        void** args = stackalloc void*[] { &xp, &cp, &window, &first, &total };
        Kernel(vector ? "nc_conv_im2col_vec4" : "nc_conv_im2col").Launch(StrideGrid(vector ? total / 4 : total, 256), 256, 0, Stream, args);
    }

    public unsafe void Col2Im(Tensor columns, Tensor dx, Conv2dGeometry geometry, int firstSample, int samples, bool accumulate)
    {
        ConvChecks.Im2Col(dx, columns, geometry, firstSample, samples);
        long total = (long)samples * geometry.Height * geometry.Width * geometry.Channels;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong cp = columns.DevicePointer(), dp = dx.DevicePointer();
        var window = KernelWindow.Of(geometry);
        long first = firstSample;
        var add = accumulate ? 1 : 0;
        var vector = geometry.Channels % 4 == 0 && Aligned16(cp) && Aligned16(dp);
        void** args = stackalloc void*[] { &cp, &dp, &window, &first, &add, &total };
        Kernel(vector ? "nc_conv_col2im_vec4" : "nc_conv_col2im").Launch(StrideGrid(vector ? total / 4 : total, 256), 256, 0, Stream, args);
    }

    public unsafe void PackConvWeight(Tensor weight, Tensor packed)
    {
        var (_, inChannels, kernel) = ConvChecks.PackedWeight(weight, packed);
        LaunchPermutation("nc_conv_pack_weight", weight, packed, inChannels, kernel * kernel);
    }

    public unsafe void UnpackConvWeightGradient(Tensor packedGradient, Tensor weightGradient)
    {
        var (_, inChannels, kernel) = ConvChecks.PackedWeight(weightGradient, packedGradient);
        LaunchPermutation("nc_conv_unpack_weight_grad", packedGradient, weightGradient, inChannels, kernel * kernel);
    }

    public unsafe void AddBias(Tensor y, Tensor bias)
    {
        var channels = y.Cols;
        Check.Length(bias.Length, channels, bias.Describe());
        long total = y.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong yp = y.DevicePointer(), bp = bias.DevicePointer();
        void** args = stackalloc void*[] { &yp, &bp, &channels, &total };
        Kernel("nc_conv_add_bias").Launch(StrideGrid(total, 256), 256, 0, Stream, args);
    }

    public unsafe void AccumulateBiasGradient(Tensor dy, Tensor biasGradient)
    {
        var channels = dy.Cols;
        long rows = dy.Rows;
        Check.Length(biasGradient.Length, channels, biasGradient.Describe());
        if (channels == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong dp = dy.DevicePointer(), bp = biasGradient.DevicePointer();
        void** args = stackalloc void*[] { &dp, &bp, &rows, &channels };
        Kernel("nc_conv_bias_grad").Launch(new Dim3(Blocks(channels, 32)), new Dim3(32, 8), 0, Stream, args);
    }

    private unsafe void LaunchPermutation(string kernel, Tensor source, Tensor destination, int inChannels, int window)
    {
        long total = source.Length;
        if (total == 0)
        {
            return;
        }
        Context.MakeCurrent();
        ulong sp = source.DevicePointer(), dp = destination.DevicePointer();
        void** args = stackalloc void*[] { &sp, &dp, &inChannels, &window, &total };
        Kernel(kernel).Launch(StrideGrid(total, 256), 256, 0, Stream, args);
    }

    /// <summary>Blocks for a grid-stride loop over <paramref name="items"/>: enough to fill the device, no more.</summary>
    internal Dim3 StrideGrid(long items, int threads) => new((uint)Math.Min(Blocks(items, threads), (long)Info.Multiprocessors * 32));

    internal static bool Aligned16(ulong pointer) => (pointer & 15) == 0;

    internal static ulong PointerOrNull(Tensor? t) => t is null ? 0 : t.DevicePointer();
}

/// <summary>The window geometry as native/conv.cu and native/pool.cu receive it (struct Window: eight ints).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct KernelWindow
{
    public int Height;
    public int Width;
    public int Channels;
    public int Kernel;
    public int Stride;
    public int Padding;
    public int OutHeight;
    public int OutWidth;

    public static KernelWindow Of(Conv2dGeometry g) => new()
    {
        Height = g.Height,
        Width = g.Width,
        Channels = g.Channels,
        Kernel = g.Kernel,
        Stride = g.Stride,
        Padding = g.Padding,
        OutHeight = g.OutHeight,
        OutWidth = g.OutWidth,
    };
}
