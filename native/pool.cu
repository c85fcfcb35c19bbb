// Pooling over NHWC activations (see CudaBackend.Pool.cs): max pooling with a square window (ResNet's stem) and
// global average pooling (ResNet's head). Backward passes are gathers, one thread per input element: no atomics.
#include "common.cuh"

namespace nc_pool {

struct Window {
    int height, width, channels, kernel, stride, padding, out_height, out_width;
};

}  // namespace nc_pool

// y = window max (the first maximum wins, a NaN propagates, padding never wins); argmax = kh·k + kw of the winner.
// One thread per output element; `total` = N·OH·OW·C.
extern "C" __global__ void nc_pool_max_forward(const float* __restrict__ x, float* __restrict__ y, float* __restrict__ argmax,
                                               nc_pool::Window g, int64_t total) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int c = static_cast<int>(i % g.channels);
        int64_t t = i / g.channels;
        const int ow = static_cast<int>(t % g.out_width);
        t /= g.out_width;
        const int oh = static_cast<int>(t % g.out_height);
        const int64_t n = t / g.out_height;
        float best = -INFINITY;
        int best_at = -1;
        for (int kh = 0; kh < g.kernel; ++kh) {
            const int ih = oh * g.stride - g.padding + kh;
            if (ih < 0 || ih >= g.height) continue;
            for (int kw = 0; kw < g.kernel; ++kw) {
                const int iw = ow * g.stride - g.padding + kw;
                if (iw < 0 || iw >= g.width) continue;
                const float v = x[((n * g.height + ih) * g.width + iw) * g.channels + c];
                if (best_at < 0 || v > best || isnan(v)) {
                    best = v;
                    best_at = kh * g.kernel + kw;
                }
            }
        }
        y[i] = best;
        argmax[i] = static_cast<float>(best_at);
    }
}

// dx[n, ih, iw, c] = Σ dy over the windows whose recorded maximum is (ih, iw). `total` = N·H·W·C.
extern "C" __global__ void nc_pool_max_backward(const float* __restrict__ dy, const float* __restrict__ argmax, float* __restrict__ dx,
                                                nc_pool::Window g, int64_t total) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int c = static_cast<int>(i % g.channels);
        int64_t t = i / g.channels;
        const int iw = static_cast<int>(t % g.width);
        t /= g.width;
        const int ih = static_cast<int>(t % g.height);
        const int64_t n = t / g.height;
        float acc = 0.f;
        for (int kh = 0; kh < g.kernel; ++kh) {
            const int ohs = ih + g.padding - kh;
            if (ohs < 0 || ohs % g.stride != 0 || ohs / g.stride >= g.out_height) continue;
            for (int kw = 0; kw < g.kernel; ++kw) {
                const int ows = iw + g.padding - kw;
                if (ows < 0 || ows % g.stride != 0 || ows / g.stride >= g.out_width) continue;
                const int64_t o = ((n * g.out_height + ohs / g.stride) * g.out_width + ows / g.stride) * g.channels + c;
                if (argmax[o] == static_cast<float>(kh * g.kernel + kw)) acc += dy[o];
            }
        }
        dx[i] = acc;
    }
}

// y[n, c] = mean over the positions of x[n, :, c]; one thread per (n, c), so a warp reads 32 consecutive channels.
extern "C" __global__ void nc_pool_avg_forward(const float* __restrict__ x, float* __restrict__ y, int positions, int channels, int64_t total) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int64_t n = i / channels;
        const int c = static_cast<int>(i % channels);
        const float* p = x + n * positions * channels + c;
        float acc = 0.f;
        for (int k = 0; k < positions; ++k) acc += p[static_cast<int64_t>(k) * channels];
        y[i] = acc * (1.f / positions);
    }
}

// dx[n, p, c] = dy[n, c] / positions. `total` = N·positions·C.
extern "C" __global__ void nc_pool_avg_backward(const float* __restrict__ dy, float* __restrict__ dx, int positions, int channels, int64_t total) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int c = static_cast<int>(i % channels);
        const int64_t n = i / (static_cast<int64_t>(positions) * channels);
        dx[i] = dy[n * channels + c] * (1.f / positions);
    }
}
