namespace NativeContrast.Backends;

using System.Runtime.InteropServices;
using NativeContrast.Cpu;
using NativeContrast.Tensors;
using static NativeContrast.Cpu.DnnlApi;

/// <summary>
/// One convolution geometry on oneDNN's direct convolutions: forward, backward-data and backward-weights primitives
/// built once (per plan, so per batch shape), NHWC activations used in place, the weight format left to oneDNN
/// ("any", usually blocked) with reorders from and to the arena's [out, in, kh, kw]. The weight gradient reaches the
/// arena through a reorder with a sum post-op (so it accumulates), as does an accumulated input gradient.
/// Buffers are pinned per call; nothing is allocated per step (oneDNN's own scratch lives with the primitives).
/// </summary>
internal sealed unsafe class DnnlConvolution : IConvolution
{
    private readonly string _what;
    private readonly IntPtr _engine;
    private readonly IntPtr _stream;
    private readonly List<IntPtr> _primitives = [];
    private readonly List<IntPtr> _memories = [];

    // Memory objects whose handles are set per call to the caller's arrays.
    private readonly IntPtr _src;
    private readonly IntPtr _dst;
    private readonly IntPtr _userWeights;

    private readonly IntPtr _forward;
    private readonly IntPtr _forwardWeights;          // _userWeights, or oneDNN's copy in its preferred format
    private readonly IntPtr _reorderForwardWeights;   // null when the formats agree

    private readonly IntPtr _backwardData;
    private readonly IntPtr _backwardDataWeights;
    private readonly IntPtr _reorderBackwardDataWeights;
    private readonly IntPtr _diffSrcScratch;          // the input gradient before it is added to dx
    private readonly IntPtr _accumulateDiffSrc;       // reorder scratch → dx with sum

    private readonly IntPtr _backwardWeights;
    private readonly IntPtr _diffWeights;             // oneDNN's format
    private readonly IntPtr _accumulateDiffWeights;   // reorder diffWeights → arena gradient with sum
    private bool _disposed;

    public DnnlConvolution(DnnlEngine engine, Conv2dGeometry g, int outChannels)
    {
        _what = $"the convolution {g} -> {outChannels} channels";
        _engine = engine.Handle;
        var memoryDescs = stackalloc byte[MemoryDescBytes * 4];
        void* src = memoryDescs, dst = memoryDescs + MemoryDescBytes, userWeights = memoryDescs + (2 * MemoryDescBytes), anyWeights = memoryDescs + (3 * MemoryDescBytes);
        var srcDims = stackalloc long[] { g.Batch, g.Channels, g.Height, g.Width };
        var dstDims = stackalloc long[] { g.Batch, outChannels, g.OutHeight, g.OutWidth };
        var weightDims = stackalloc long[] { outChannels, g.Channels, g.Kernel, g.Kernel };
        // PyTorch's floor mode: oneDNN sizes the output as (in − k + left + right) / stride + 1 with the same floor.
        var strides = stackalloc long[] { g.Stride, g.Stride };
        var padding = stackalloc long[] { g.Padding, g.Padding };
        Check(dnnl_memory_desc_init_by_tag(src, 4, srcDims, F32, Nhwc), "dnnl_memory_desc_init_by_tag", $"the input of {_what}");
        Check(dnnl_memory_desc_init_by_tag(dst, 4, dstDims, F32, Nhwc), "dnnl_memory_desc_init_by_tag", $"the output of {_what}");
        Check(dnnl_memory_desc_init_by_tag(userWeights, 4, weightDims, F32, Oihw), "dnnl_memory_desc_init_by_tag", $"the weight of {_what}");
        Check(dnnl_memory_desc_init_by_tag(anyWeights, 4, weightDims, F32, FormatAny), "dnnl_memory_desc_init_by_tag", $"the weight of {_what}");
        try
        {
            Check(dnnl_stream_create(out _stream, _engine, StreamInOrder), "dnnl_stream_create", _what);
            _src = Memory(src, IntPtr.Zero);
            _dst = Memory(dst, IntPtr.Zero);
            _userWeights = Memory(userWeights, IntPtr.Zero);
            var op = NativeMemory.AllocZeroed(OpDescBytes);
            IntPtr forwardPd = 0, backwardDataPd = 0, backwardWeightsPd = 0;
            try
            {
                Check(dnnl_convolution_forward_desc_init(op, ForwardTraining, ConvolutionDirect, src, anyWeights, null, dst, strides, padding, padding), "dnnl_convolution_forward_desc_init", _what);
                Check(dnnl_primitive_desc_create(out forwardPd, op, IntPtr.Zero, _engine, IntPtr.Zero), "dnnl_primitive_desc_create (forward)", _what);
                _forward = Primitive(forwardPd);
                var forwardWeightsDesc = dnnl_primitive_desc_query_md(forwardPd, QueryWeightsMd, 0);
                (_forwardWeights, _reorderForwardWeights) = Reordered(userWeights, forwardWeightsDesc);

                Check(dnnl_convolution_backward_data_desc_init(op, ConvolutionDirect, src, anyWeights, dst, strides, padding, padding), "dnnl_convolution_backward_data_desc_init", _what);
                Check(dnnl_primitive_desc_create(out backwardDataPd, op, IntPtr.Zero, _engine, forwardPd), "dnnl_primitive_desc_create (backward data)", _what);
                _backwardData = Primitive(backwardDataPd);
                var backwardDataWeightsDesc = dnnl_primitive_desc_query_md(backwardDataPd, QueryWeightsMd, 0);
                // Backward data usually wants the forward's format: then the forward's copy serves both.
                (_backwardDataWeights, _reorderBackwardDataWeights) = dnnl_memory_desc_equal(backwardDataWeightsDesc, forwardWeightsDesc) != 0
                    ? (_forwardWeights, IntPtr.Zero)
                    : Reordered(userWeights, backwardDataWeightsDesc);
                _diffSrcScratch = Memory(src, MemoryAllocate);
                _accumulateDiffSrc = ReorderPrimitive(src, src, accumulate: true);

                Check(dnnl_convolution_backward_weights_desc_init(op, ConvolutionDirect, src, anyWeights, null, dst, strides, padding, padding), "dnnl_convolution_backward_weights_desc_init", _what);
                Check(dnnl_primitive_desc_create(out backwardWeightsPd, op, IntPtr.Zero, _engine, forwardPd), "dnnl_primitive_desc_create (backward weights)", _what);
                _backwardWeights = Primitive(backwardWeightsPd);
                var diffWeightsDesc = dnnl_primitive_desc_query_md(backwardWeightsPd, QueryDiffWeightsMd, 0);
                _diffWeights = Memory(diffWeightsDesc, MemoryAllocate);
                _accumulateDiffWeights = ReorderPrimitive(diffWeightsDesc, userWeights, accumulate: true);
                Implementation = $"oneDNN {ImplementationName(forwardPd)} / {ImplementationName(backwardDataPd)} / {ImplementationName(backwardWeightsPd)}";
            }
            finally
            {
                NativeMemory.Free(op);
                foreach (var pd in new[] { forwardPd, backwardDataPd, backwardWeightsPd })
                {
                    if (pd != 0)
                    {
                        _ = dnnl_primitive_desc_destroy(pd);
                    }
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Implementation { get; } = "oneDNN";

    public void Forward(Tensor x, Tensor weight, Tensor y)
    {
        var xs = CpuBackend.Cpu(x);
        var ws = CpuBackend.Cpu(weight);
        var ys = CpuBackend.Cpu(y);
        fixed (float* px = xs, pw = ws, py = ys)
        {
            SetHandle(_src, px);
            SetHandle(_userWeights, pw);
            SetHandle(_dst, py);
            if (_reorderForwardWeights != 0)
            {
                Execute(_reorderForwardWeights, (ArgFrom, _userWeights), (ArgTo, _forwardWeights));
            }
            Execute(_forward, (ArgSrc, _src), (ArgWeights, _forwardWeights), (ArgDst, _dst));
        }
    }

    public void BackwardData(Tensor dy, Tensor weight, Tensor dx, bool accumulate)
    {
        var dys = CpuBackend.Cpu(dy);
        var ws = CpuBackend.Cpu(weight);
        var dxs = CpuBackend.Cpu(dx);
        fixed (float* pdy = dys, pw = ws, pdx = dxs)
        {
            SetHandle(_dst, pdy);
            SetHandle(_userWeights, pw);
            SetHandle(_src, pdx);
            if (_reorderBackwardDataWeights != 0)
            {
                Execute(_reorderBackwardDataWeights, (ArgFrom, _userWeights), (ArgTo, _backwardDataWeights));
            }
            if (accumulate)
            {
                Execute(_backwardData, (ArgDiffDst, _dst), (ArgWeights, _backwardDataWeights), (ArgDiffSrc, _diffSrcScratch));
                Execute(_accumulateDiffSrc, (ArgFrom, _diffSrcScratch), (ArgTo, _src));
            }
            else
            {
                Execute(_backwardData, (ArgDiffDst, _dst), (ArgWeights, _backwardDataWeights), (ArgDiffSrc, _src));
            }
        }
    }

    public void BackwardWeights(Tensor x, Tensor dy, Tensor weightGradient)
    {
        var xs = CpuBackend.Cpu(x);
        var dys = CpuBackend.Cpu(dy);
        var dws = CpuBackend.Cpu(weightGradient);
        fixed (float* px = xs, pdy = dys, pdw = dws)
        {
            SetHandle(_src, px);
            SetHandle(_dst, pdy);
            SetHandle(_userWeights, pdw);
            Execute(_backwardWeights, (ArgSrc, _src), (ArgDiffDst, _dst), (ArgDiffWeights, _diffWeights));
            Execute(_accumulateDiffWeights, (ArgFrom, _diffWeights), (ArgTo, _userWeights));
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var p in _primitives)
        {
            _ = dnnl_primitive_destroy(p);
        }
        foreach (var m in _memories)
        {
            _ = dnnl_memory_destroy(m);
        }
        if (_stream != 0)
        {
            _ = dnnl_stream_destroy(_stream);
        }
    }

    private IntPtr Memory(void* desc, IntPtr handle)
    {
        Check(dnnl_memory_create(out var memory, desc, _engine, handle), "dnnl_memory_create", _what);
        _memories.Add(memory);
        return memory;
    }

    private IntPtr Primitive(IntPtr pd)
    {
        Check(dnnl_primitive_create(out var primitive, pd), "dnnl_primitive_create", _what);
        _primitives.Add(primitive);
        return primitive;
    }

    /// <summary>The user's weights as they are when oneDNN wants that format, else a library-owned copy and the reorder that fills it.</summary>
    private (IntPtr Weights, IntPtr Reorder) Reordered(void* userDesc, void* wantedDesc)
    {
        if (dnnl_memory_desc_equal(userDesc, wantedDesc) != 0)
        {
            return (_userWeights, IntPtr.Zero);
        }
        return (Memory(wantedDesc, MemoryAllocate), ReorderPrimitive(userDesc, wantedDesc, accumulate: false));
    }

    /// <summary>A reorder between two formats; with <paramref name="accumulate"/> it adds into the destination (sum post-op).</summary>
    private IntPtr ReorderPrimitive(void* from, void* to, bool accumulate)
    {
        IntPtr attr = 0, postOps = 0;
        try
        {
            if (accumulate)
            {
                Check(dnnl_primitive_attr_create(out attr), "dnnl_primitive_attr_create", _what);
                Check(dnnl_post_ops_create(out postOps), "dnnl_post_ops_create", _what);
                Check(dnnl_post_ops_append_sum(postOps, 1f), "dnnl_post_ops_append_sum", _what);
                Check(dnnl_primitive_attr_set_post_ops(attr, postOps), "dnnl_primitive_attr_set_post_ops", _what);
            }
            Check(dnnl_reorder_primitive_desc_create(out var pd, from, _engine, to, _engine, attr), "dnnl_reorder_primitive_desc_create", _what);
            try
            {
                return Primitive(pd);
            }
            finally
            {
                _ = dnnl_primitive_desc_destroy(pd);
            }
        }
        finally
        {
            if (postOps != 0)
            {
                _ = dnnl_post_ops_destroy(postOps);
            }
            if (attr != 0)
            {
                _ = dnnl_primitive_attr_destroy(attr);
            }
        }
    }

    private static string ImplementationName(IntPtr pd)
    {
        byte* name = null;
        return dnnl_primitive_desc_query(pd, QueryImplInfoString, 0, &name) == Success && name is not null
            ? Marshal.PtrToStringUTF8((IntPtr)name) ?? "?"
            : "?";
    }

    private void SetHandle(IntPtr memory, float* pointer) =>
        Check(dnnl_memory_set_data_handle(memory, pointer), "dnnl_memory_set_data_handle", _what);

    private void Execute(IntPtr primitive, params ReadOnlySpan<(int Arg, IntPtr Memory)> args)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var exec = stackalloc ExecArg[args.Length];
        for (var i = 0; i < args.Length; i++)
        {
            exec[i] = new ExecArg { Arg = args[i].Arg, Memory = args[i].Memory };
        }
        Check(dnnl_primitive_execute(primitive, _stream, args.Length, exec), "dnnl_primitive_execute", _what);
        Check(dnnl_stream_wait(_stream), "dnnl_stream_wait", _what);
    }
}
