// Convolution building blocks over NHWC activations (see src/NativeContrast/Backends/CudaBackend.Conv.cs).
// A convolution is im2col + one cuBLAS GEMM per chunk of samples:
//   forward   y[M, O]      = columns[M, k·k·I] · packed_wᵀ      (M = N·OH·OW rows, one per output position)
//   backward  dW[O, k·k·I] = dyᵀ · columns,  dcolumns = dy · packed_w,  dx = col2im(dcolumns)
// Columns are ordered (kh, kw, channel) with the channel fastest, so im2col copies contiguous channel runs (float4
// when the channel count allows) and both its reads and writes coalesce. Weights keep PyTorch's [O, I, kh, kw]
// layout in the arena; nc_conv_pack_weight permutes them to [O, kh, kw, I] once per step.
#include "common.cuh"

namespace nc_conv {

struct Window {
    int height, width, channels, kernel, stride, padding, out_height, out_width;
};

// Column block (kh, kw, c) of row r reads x at (n, oh·s − p + kh, ow·s − p + kw, c); false when that lies in the padding.
__device__ __forceinline__ bool source(const Window& g, int64_t row, int kh, int kw, int64_t first_sample, int64_t& offset) {
    const int ow = static_cast<int>(row % g.out_width);
    const int64_t t = row / g.out_width;
    const int oh = static_cast<int>(t % g.out_height);
    const int64_t n = first_sample + t / g.out_height;
    const int ih = oh * g.stride - g.padding + kh;
    const int iw = ow * g.stride - g.padding + kw;
    if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) return false;
    offset = ((n * g.height + ih) * g.width + iw) * g.channels;
    return true;
}

// Σ over the (oh, ow, kh, kw) that read input position (ih, iw) of sample `local` of the chunk, channel c; VEC floats at once.
template <int VEC>
__device__ __forceinline__ void gather(const Window& g, const float* __restrict__ columns, int64_t local, int ih, int iw, int c, float* acc) {
    const int64_t cols = static_cast<int64_t>(g.kernel) * g.kernel * g.channels;
    for (int kh = 0; kh < g.kernel; ++kh) {
        const int ohs = ih + g.padding - kh;
        if (ohs < 0 || ohs % g.stride != 0 || ohs / g.stride >= g.out_height) continue;
        const int oh = ohs / g.stride;
        for (int kw = 0; kw < g.kernel; ++kw) {
            const int ows = iw + g.padding - kw;
            if (ows < 0 || ows % g.stride != 0 || ows / g.stride >= g.out_width) continue;
            const int64_t r = (local * g.out_height + oh) * g.out_width + ows / g.stride;
            const float* p = columns + r * cols + (kh * g.kernel + kw) * g.channels + c;
            if (VEC == 4) {
                const float4 v = nc::load4(p);
                acc[0] += v.x; acc[1] += v.y; acc[2] += v.z; acc[3] += v.w;
            } else {
                acc[0] += *p;
            }
        }
    }
}

}  // namespace nc_conv

// columns[r, (kh·k + kw)·C + c] for the chunk's rows; `total` = rows · k·k·C. One float per thread.
extern "C" __global__ void nc_conv_im2col(const float* __restrict__ x, float* __restrict__ columns, nc_conv::Window g,
                                          int64_t first_sample, int64_t total) {
    const int64_t cols = static_cast<int64_t>(g.kernel) * g.kernel * g.channels;
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int64_t r = i / cols;
        const int j = static_cast<int>(i - r * cols);
        const int c = j % g.channels;
        const int kk = j / g.channels;
        int64_t offset;
        columns[i] = nc_conv::source(g, r, kk / g.kernel, kk % g.kernel, first_sample, offset) ? x[offset + c] : 0.f;
    }
}

// The same with four channels per thread; needs C % 4 == 0 and 16-byte aligned x and columns. `total` counts floats.
extern "C" __global__ void nc_conv_im2col_vec4(const float* __restrict__ x, float* __restrict__ columns, nc_conv::Window g,
                                               int64_t first_sample, int64_t total) {
    const int64_t cols = static_cast<int64_t>(g.kernel) * g.kernel * g.channels;
    for (int64_t i = nc::global_index() * 4; i < total; i += nc::global_stride() * 4) {
        const int64_t r = i / cols;
        const int j = static_cast<int>(i - r * cols);
        const int c = j % g.channels;
        const int kk = j / g.channels;
        int64_t offset;
        const float4 v = nc_conv::source(g, r, kk / g.kernel, kk % g.kernel, first_sample, offset) ? nc::load4(x + offset + c)
                                                                                                     : make_float4(0.f, 0.f, 0.f, 0.f);
        nc::store4(columns + i, v);
    }
}

// dx[n, ih, iw, c] (samples of the chunk) ← [dx +] Σ of the column entries that read it. `total` = samples · H·W·C.
extern "C" __global__ void nc_conv_col2im(const float* __restrict__ columns, float* __restrict__ dx, nc_conv::Window g,
                                          int64_t first_sample, int accumulate, int64_t total) {
    float* out = dx + first_sample * g.height * g.width * g.channels;
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int c = static_cast<int>(i % g.channels);
        int64_t t = i / g.channels;
        const int iw = static_cast<int>(t % g.width);
        t /= g.width;
        const int ih = static_cast<int>(t % g.height);
        float acc[1] = {0.f};
        nc_conv::gather<1>(g, columns, t / g.height, ih, iw, c, acc);
        out[i] = accumulate ? out[i] + acc[0] : acc[0];
    }
}

// The same with four channels per thread; needs C % 4 == 0 and 16-byte aligned columns and dx. `total` counts floats.
extern "C" __global__ void nc_conv_col2im_vec4(const float* __restrict__ columns, float* __restrict__ dx, nc_conv::Window g,
                                               int64_t first_sample, int accumulate, int64_t total) {
    float* out = dx + first_sample * g.height * g.width * g.channels;
    for (int64_t i = nc::global_index() * 4; i < total; i += nc::global_stride() * 4) {
        const int c = static_cast<int>(i % g.channels);
        int64_t t = i / g.channels;
        const int iw = static_cast<int>(t % g.width);
        t /= g.width;
        const int ih = static_cast<int>(t % g.height);
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        nc_conv::gather<4>(g, columns, t / g.height, ih, iw, c, acc);
        float4 v = make_float4(acc[0], acc[1], acc[2], acc[3]);
        if (accumulate) {
            const float4 old = nc::load4(out + i);
            v.x += old.x; v.y += old.y; v.z += old.z; v.w += old.w;
        }
        nc::store4(out + i, v);
    }
}

// packed[o, kk·I + i] ← weight[o, i, kk] for kk = kh·k + kw; one thread per packed element (writes coalesce).
extern "C" __global__ void nc_conv_pack_weight(const float* __restrict__ weight, float* __restrict__ packed,
                                               int in_channels, int window, int64_t total) {
    for (int64_t p = nc::global_index(); p < total; p += nc::global_stride()) {
        const int i = static_cast<int>(p % in_channels);
        const int64_t t = p / in_channels;
        const int kk = static_cast<int>(t % window);
        const int64_t o = t / window;
        packed[p] = weight[(o * in_channels + i) * window + kk];
    }
}

// weight_grad[o, i, kk] += packed_grad[o, kk·I + i]; one thread per weight element (read-modify-writes coalesce).
extern "C" __global__ void nc_conv_unpack_weight_grad(const float* __restrict__ packed_grad, float* __restrict__ weight_grad,
                                                      int in_channels, int window, int64_t total) {
    for (int64_t w = nc::global_index(); w < total; w += nc::global_stride()) {
        const int kk = static_cast<int>(w % window);
        const int64_t t = w / window;
        const int i = static_cast<int>(t % in_channels);
        const int64_t o = t / in_channels;
        weight_grad[w] += packed_grad[(o * window + kk) * in_channels + i];
    }
}

// y[r, c] += bias[c] over `total` = rows · C elements.
extern "C" __global__ void nc_conv_add_bias(float* __restrict__ y, const float* __restrict__ bias, int channels, int64_t total) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) y[i] += bias[i % channels];
}

// bias_grad[c] += Σ_r dy[r, c]. Block (32, 8) owns 32 columns; its 8 row lanes stride over every row, then reduce.
// Deterministic (fixed order, no atomics); meant for linear layers and the rare convolution with a bias.
extern "C" __global__ void nc_conv_bias_grad(const float* __restrict__ dy, float* __restrict__ bias_grad, int64_t rows, int channels) {
    __shared__ float partial[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.f;
    if (c < channels) {
        for (int64_t r = threadIdx.y; r < rows; r += 8) acc += dy[r * channels + c];
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < channels) {
        float sum = 0.f;
#pragma unroll
        for (int k = 0; k < 8; ++k) sum += partial[k][threadIdx.x];
        bias_grad[c] += sum;
    }
}
