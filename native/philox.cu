// Philox-4x32-10 random numbers, the same stream as src/NativeContrast/Backends/Philox.cs (see there for the mapping):
// key = (seed lo, seed hi); element i of a tensor is word i % 4 of block i / 4, whose counter is
// (block lo, block hi, offset lo, offset hi). Uniform: (w >> 8) * 2^-24. Normal: Box-Muller on (w0, w1) and (w2, w3)
// with u1 = ((w >> 8) + 1) * 2^-24. Uniform values are bit-identical to the CPU's; normal values differ only by the
// last-place rounding of logf/sinf/cosf (no fast-math intrinsics, and no contraction into FMAs: __fmul_rn/__fadd_rn).
#include "common.cuh"

namespace nc_philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
constexpr float kTwoToMinus24 = 1.0f / 16777216.0f;

__device__ __forceinline__ uint4 block(uint64_t seed, uint64_t counter, uint64_t offset) {
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
    uint32_t c2 = static_cast<uint32_t>(offset), c3 = static_cast<uint32_t>(offset >> 32);
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const uint32_t hi0 = __umulhi(kM0, c0), lo0 = kM0 * c0;
        const uint32_t hi1 = __umulhi(kM1, c2), lo1 = kM1 * c2;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += kW0;
        k1 += kW1;
    }
    return make_uint4(c0, c1, c2, c3);
}

__device__ __forceinline__ float uniform(uint32_t w) { return static_cast<float>(w >> 8) * kTwoToMinus24; }

// (0, 1]: never 0, so the logarithm in Box-Muller is finite.
__device__ __forceinline__ float open_uniform(uint32_t w) { return static_cast<float>((w >> 8) + 1u) * kTwoToMinus24; }

// Box-Muller as the CPU computes it, rounding step by step: mean + std * (r * cos(2 pi u2)), and the same with sin.
__device__ __forceinline__ float2 box_muller(uint32_t w0, uint32_t w1, float mean, float std) {
    const float two_pi = 2.0f * 3.14159265358979323846f;  // MathF.PI rounded to float, doubled exactly
    const float radius = sqrtf(__fmul_rn(-2.0f, logf(open_uniform(w0))));
    const float angle = __fmul_rn(two_pi, uniform(w1));
    const float a = __fmul_rn(radius, cosf(angle)), b = __fmul_rn(radius, sinf(angle));
    return make_float2(__fadd_rn(mean, __fmul_rn(std, a)), __fadd_rn(mean, __fmul_rn(std, b)));
}

// Stores the 4 values of block `b` into y[4b .. 4b+3], clipped to n; one 16-byte store when it can.
__device__ __forceinline__ void store_block(float* y, int64_t n, int64_t b, float4 v, bool aligned) {
    const int64_t i = 4 * b;
    if (aligned && i + 4 <= n) {
        nc::store4(y + i, v);
        return;
    }
    if (i < n) y[i] = v.x;
    if (i + 1 < n) y[i + 1] = v.y;
    if (i + 2 < n) y[i + 2] = v.z;
    if (i + 3 < n) y[i + 3] = v.w;
}

}  // namespace nc_philox

// y[i] = uniform [0, 1) element i of the stream (seed, offset), for i < n. One thread per 4-element block.
extern "C" __global__ void nc_philox_uniform(float* y, int64_t n, uint64_t seed, uint64_t offset) {
    const int64_t blocks = (n + 3) / 4;
    const bool aligned = nc::aligned16(y);
    for (int64_t b = nc::global_index(); b < blocks; b += nc::global_stride()) {
        const uint4 w = nc_philox::block(seed, static_cast<uint64_t>(b), offset);
        const float4 v = make_float4(nc_philox::uniform(w.x), nc_philox::uniform(w.y), nc_philox::uniform(w.z), nc_philox::uniform(w.w));
        nc_philox::store_block(y, n, b, v, aligned);
    }
}

// y[i] = mean + std * (normal element i of the stream (seed, offset)), for i < n.
extern "C" __global__ void nc_philox_normal(float* y, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
    const int64_t blocks = (n + 3) / 4;
    const bool aligned = nc::aligned16(y);
    for (int64_t b = nc::global_index(); b < blocks; b += nc::global_stride()) {
        const uint4 w = nc_philox::block(seed, static_cast<uint64_t>(b), offset);
        const float2 first = nc_philox::box_muller(w.x, w.y, mean, std);
        const float2 second = nc_philox::box_muller(w.z, w.w, mean, std);
        nc_philox::store_block(y, n, b, make_float4(first.x, first.y, second.x, second.y), aligned);
    }
}
