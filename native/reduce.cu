// Sums: of every element, of each row, of each column. No atomics anywhere, and every partition depends on the
// shape alone (never on the GPU's SM count), so a sum is bit-for-bit reproducible from run to run and GPU to GPU.
#include "common.cuh"
#include "rows.cuh"

// Sum of all elements, pass 1: block b writes the sum of its grid-stride share of x to partials[b].
// The launcher sizes the grid from n alone (at most 1024 blocks), so the order of additions is fixed.
extern "C" __global__ void nc_reduce_sum_partial(const float* x, float* partials, int64_t n) {
    __shared__ float scratch[NC_WARP];
    const int64_t start = nc::global_index(), stride = nc::global_stride();
    float acc = 0.f;
    int64_t done = 0;
    if (nc::aligned16(x)) {
        const int64_t n4 = n / 4;
        for (int64_t i = start; i < n4; i += stride) {
            const float4 v = nc::load4(x + 4 * i);
            acc += (v.x + v.y) + (v.z + v.w);
        }
        done = 4 * n4;
    }
    for (int64_t i = done + start; i < n; i += stride) acc += x[i];
    acc = nc::block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Sum of all elements, pass 2: one block adds the `count` partials of pass 1 into result[0].
extern "C" __global__ void nc_reduce_sum_final(const float* partials, float* result, int count) {
    __shared__ float scratch[NC_WARP];
    float acc = 0.f;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = nc::block_sum(acc, scratch);
    if (threadIdx.x == 0) result[0] = acc;
}

// result[i] = sum of row i of x [rows, cols]; one warp or one block per row (group_size 32 or blockDim.x).
extern "C" __global__ void nc_reduce_sum_rows(const float* x, float* result, int64_t rows, int64_t cols, int group_size) {
    __shared__ float scratch[NC_WARP];
    const nc_rows::Group g = nc_rows::locate(group_size);
    if (g.row >= rows) return;  // a whole warp or a whole block: never splits a reduction
    const float* row = x + g.row * cols;
    float acc = 0.f;
    nc_rows::read(row, cols, nc_rows::vectorizable(x, cols), g, [&](float v) { acc += v; });
    acc = nc_rows::group_sum(acc, g, scratch);
    if (g.lane == 0) result[g.row] = acc;
}

// Column sums of x [rows, cols] over the row chunk blockIdx.y: out[blockIdx.y, j] = sum of x[r, j] for r in the chunk.
// A block is 32 columns (one coalesced 128-byte line per warp) by blockDim.y row lanes, whose partial sums meet in
// shared memory. With one chunk, out is the result; with several, the launcher runs this kernel again on out.
extern "C" __global__ void nc_reduce_sum_columns(const float* x, float* out, int64_t rows, int64_t cols, int64_t rows_per_chunk) {
    __shared__ float tile[NC_WARP][NC_WARP + 1];  // [row lane][column], padded against bank conflicts
    const int64_t col = static_cast<int64_t>(blockIdx.x) * NC_WARP + threadIdx.x;
    const int64_t first = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
    const int64_t last = min(rows, first + rows_per_chunk);
    float acc = 0.f;
    if (col < cols) {
        for (int64_t r = first + threadIdx.y; r < last; r += blockDim.y) acc += x[r * cols + col];
    }
    tile[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        float sum = 0.f;
        for (int k = 0; k < static_cast<int>(blockDim.y); ++k) sum += tile[k][threadIdx.x];
        out[static_cast<int64_t>(blockIdx.y) * cols + col] = sum;
    }
}
