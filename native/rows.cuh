// Row-wise work shared by the reduce, softmax and normalize families: a matrix [rows, cols] is handled one row per
// "group", where a group is a warp (narrow rows: several rows per block, no shared memory, no __syncthreads) or the
// whole block (wide rows). The launcher (CudaBackend.RowLaunch) picks the group size; kernels read it from their
// `group_size` argument.
#pragma once

#include "common.cuh"

namespace nc_rows {

// Where this thread's group sits: which row it owns and which lane it is within the group.
struct Group {
    int64_t row;
    int lane;
    int size;
    bool is_warp;
};

// group_size is 32 (a warp per row, blockDim.x / 32 rows per block) or blockDim.x (a block per row).
__device__ __forceinline__ Group locate(int group_size) {
    const int groups_per_block = blockDim.x / group_size;
    Group g;
    g.row = static_cast<int64_t>(blockIdx.x) * groups_per_block + threadIdx.x / group_size;
    g.lane = threadIdx.x % group_size;
    g.size = group_size;
    g.is_warp = group_size == NC_WARP;
    return g;
}

// Sum over the group; every lane gets the result. A block group needs all of the block's threads to call it.
__device__ __forceinline__ float group_sum(float v, const Group& g, float* scratch) {
    return g.is_warp ? nc::warp_sum(v) : nc::block_sum(v, scratch);
}

__device__ __forceinline__ float group_max(float v, const Group& g, float* scratch) {
    return g.is_warp ? nc::warp_max(v) : nc::block_max(v, scratch);
}

// 16-byte vector access is legal for every row when the base is aligned and rows are whole float4s.
__device__ __forceinline__ bool vectorizable(const void* base, int64_t cols) {
    return nc::aligned16(base) && (cols & 3) == 0;
}

// Calls f(value) for this lane's share of the row, in a fixed order (so results are reproducible).
template <typename F>
__device__ __forceinline__ void read(const float* row, int64_t cols, bool vec, const Group& g, F f) {
    if (vec) {
        const float4* row4 = reinterpret_cast<const float4*>(row);
        for (int64_t j = g.lane; j < cols / 4; j += g.size) {
            const float4 v = row4[j];
            f(v.x);
            f(v.y);
            f(v.z);
            f(v.w);
        }
    } else {
        for (int64_t j = g.lane; j < cols; j += g.size) f(row[j]);
    }
}

// Calls f(a[j], b[j]) for this lane's share of two rows of the same shape, in a fixed order.
template <typename F>
__device__ __forceinline__ void read2(const float* a, const float* b, int64_t cols, bool vec, const Group& g, F f) {
    if (vec) {
        for (int64_t j = g.lane; j < cols / 4; j += g.size) {
            const float4 va = nc::load4(a + 4 * j), vb = nc::load4(b + 4 * j);
            f(va.x, vb.x);
            f(va.y, vb.y);
            f(va.z, vb.z);
            f(va.w, vb.w);
        }
    } else {
        for (int64_t j = g.lane; j < cols; j += g.size) f(a[j], b[j]);
    }
}

// out[j] = f(in[j]) over this lane's share of the row. out may alias in.
template <typename F>
__device__ __forceinline__ void map(const float* in, float* out, int64_t cols, bool vec, const Group& g, F f) {
    if (vec) {
        for (int64_t j = g.lane; j < cols / 4; j += g.size) {
            const float4 v = nc::load4(in + 4 * j);
            nc::store4(out + 4 * j, make_float4(f(v.x), f(v.y), f(v.z), f(v.w)));
        }
    } else {
        for (int64_t j = g.lane; j < cols; j += g.size) out[j] = f(in[j]);
    }
}

// out[j] = f(a[j], b[j]) over this lane's share of the row. out may alias a or b.
template <typename F>
__device__ __forceinline__ void map2(const float* a, const float* b, float* out, int64_t cols, bool vec, const Group& g, F f) {
    if (vec) {
        for (int64_t j = g.lane; j < cols / 4; j += g.size) {
            const float4 va = nc::load4(a + 4 * j), vb = nc::load4(b + 4 * j);
            nc::store4(out + 4 * j, make_float4(f(va.x, vb.x), f(va.y, vb.y), f(va.z, vb.z), f(va.w, vb.w)));
        }
    } else {
        for (int64_t j = g.lane; j < cols; j += g.size) out[j] = f(a[j], b[j]);
    }
}

}  // namespace nc_rows
