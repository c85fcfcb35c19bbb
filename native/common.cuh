// Shared device helpers: warp and block reductions, 16-byte vector loads, index math.
// Every kernel file includes this; kernel entry points are extern "C" with a family prefix (nc_<family>_...).
#pragma once

#include <cstdint>
#include <cfloat>

#define NC_WARP 32
#define NC_FULL_MASK 0xffffffffu

namespace nc {

// 64-bit global thread index: arenas and activations exceed 2^31 elements.
__device__ __forceinline__ int64_t global_index() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t global_stride() {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = NC_WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(NC_FULL_MASK, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = NC_WARP / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(NC_FULL_MASK, v, offset));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds at least blockDim.x / 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % NC_WARP, warp = threadIdx.x / NC_WARP, warps = (blockDim.x + NC_WARP - 1) / NC_WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(v);
}

// Max over the block; every thread gets the result. `scratch` holds at least blockDim.x / 32 floats.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % NC_WARP, warp = threadIdx.x / NC_WARP, warps = (blockDim.x + NC_WARP - 1) / NC_WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -FLT_MAX;
    return warp_max(v);
}

// True when p is 16-byte aligned, so float4 loads are legal.
__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

}  // namespace nc
