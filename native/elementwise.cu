// Elementwise kernels: add, scale, axpy, ReLU and its backward. Memory-bound, so each thread moves 16 bytes per
// operand per step (float4) when every pointer is 16-byte aligned, with a scalar tail for the last n % 4 elements;
// otherwise (views at odd offsets) a plain scalar loop. Grid-stride loops with 64-bit indices; outputs may alias inputs.
#include "common.cuh"

namespace nc_elementwise {

template <typename Op>
__device__ __forceinline__ void unary(const float* x, float* y, int64_t n, Op op) {
    const int64_t start = nc::global_index(), stride = nc::global_stride();
    int64_t done = 0;
    if (nc::aligned16(x) && nc::aligned16(y)) {
        const int64_t n4 = n / 4;
        for (int64_t i = start; i < n4; i += stride) {
            const float4 v = nc::load4(x + 4 * i);
            nc::store4(y + 4 * i, make_float4(op(v.x), op(v.y), op(v.z), op(v.w)));
        }
        done = 4 * n4;
    }
    for (int64_t i = done + start; i < n; i += stride) y[i] = op(x[i]);
}

template <typename Op>
__device__ __forceinline__ void binary(const float* a, const float* b, float* y, int64_t n, Op op) {
    const int64_t start = nc::global_index(), stride = nc::global_stride();
    int64_t done = 0;
    if (nc::aligned16(a) && nc::aligned16(b) && nc::aligned16(y)) {
        const int64_t n4 = n / 4;
        for (int64_t i = start; i < n4; i += stride) {
            const float4 u = nc::load4(a + 4 * i), v = nc::load4(b + 4 * i);
            nc::store4(y + 4 * i, make_float4(op(u.x, v.x), op(u.y, v.y), op(u.z, v.z), op(u.w, v.w)));
        }
        done = 4 * n4;
    }
    for (int64_t i = done + start; i < n; i += stride) y[i] = op(a[i], b[i]);
}

// max(x, 0) that lets NaN through, as the CPU backend (and PyTorch) do.
__device__ __forceinline__ float relu(float x) { return x > 0.f || x != x ? x : 0.f; }

}  // namespace nc_elementwise

// y = a + b
extern "C" __global__ void nc_elementwise_add(const float* a, const float* b, float* y, int64_t n) {
    nc_elementwise::binary(a, b, y, n, [](float u, float v) { return u + v; });
}

// y = alpha * x
extern "C" __global__ void nc_elementwise_scale(const float* x, float alpha, float* y, int64_t n) {
    nc_elementwise::unary(x, y, n, [alpha](float v) { return alpha * v; });
}

// y = y + alpha * x
extern "C" __global__ void nc_elementwise_axpy(float alpha, const float* x, float* y, int64_t n) {
    nc_elementwise::binary(x, y, y, n, [alpha](float u, float v) { return fmaf(alpha, u, v); });
}

// y = max(x, 0)
extern "C" __global__ void nc_elementwise_relu(const float* x, float* y, int64_t n) {
    nc_elementwise::unary(x, y, n, [](float v) { return nc_elementwise::relu(v); });
}

// dx = dy where the forward output y > 0, else 0
extern "C" __global__ void nc_elementwise_relu_backward(const float* y, const float* dy, float* dx, int64_t n) {
    nc_elementwise::binary(y, dy, dx, n, [](float out, float grad) { return out > 0.f ? grad : 0.f; });
}
