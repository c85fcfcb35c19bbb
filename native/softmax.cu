// Row softmax and row log-sum-exp, max-shifted so that exp never overflows (rows of 1000s are fine). One warp per
// row up to 1024 columns, one block per row beyond (CudaBackend.RowLaunch decides). The row's max and its sum of
// exponentials are found in one pass (online: the running sum is rescaled when the running max grows), so softmax
// reads x twice and LSE once.
#include "common.cuh"
#include "rows.cuh"

namespace nc_softmax {

// A running max and the sum of exp(v - max) over the values seen so far.
struct MaxSum {
    float max = -INFINITY;
    float sum = 0.f;

    __device__ __forceinline__ void push(float v) {
        if (v > max) {
            sum = sum * expf(max - v) + 1.f;  // exp(-inf) = 0 for the first value
            max = v;
        } else if (v != -INFINITY) {
            sum += expf(v - max);  // a NaN (never > max) lands here and poisons the sum, as on the CPU
        }
    }
};

// The row's max and sum of exp(x - max) over the whole group; every lane gets both.
__device__ __forceinline__ MaxSum row_max_sum(const float* row, int64_t cols, bool vec, const nc_rows::Group& g, float* scratch) {
    MaxSum mine;
    nc_rows::read(row, cols, vec, g, [&](float v) { mine.push(v); });
    MaxSum all;
    all.max = nc_rows::group_max(mine.max, g, scratch);
    // A lane that saw nothing (or only -inf) contributes nothing; this also keeps -inf - -inf out of expf.
    const float rescaled = mine.sum == 0.f ? 0.f : mine.sum * expf(mine.max - all.max);
    all.sum = nc_rows::group_sum(rescaled, g, scratch);
    return all;
}

}  // namespace nc_softmax

// y[i, :] = softmax(x[i, :]) for x, y [rows, cols]; y may alias x.
extern "C" __global__ void nc_softmax_rows(const float* x, float* y, int64_t rows, int64_t cols, int group_size) {
    __shared__ float scratch[NC_WARP];
    const nc_rows::Group g = nc_rows::locate(group_size);
    if (g.row >= rows) return;  // a whole warp or a whole block
    const float* in = x + g.row * cols;
    float* out = y + g.row * cols;
    const bool vec = nc_rows::vectorizable(x, cols) && nc::aligned16(y);
    const nc_softmax::MaxSum s = nc_softmax::row_max_sum(in, cols, vec, g, scratch);
    const float max = s.max, sum = s.sum;
    nc_rows::map(in, out, cols, vec, g, [max, sum](float v) { return expf(v - max) / sum; });
}

// result[i] = log(sum_j exp(x[i, j])) for x [rows, cols].
extern "C" __global__ void nc_softmax_logsumexp_rows(const float* x, float* result, int64_t rows, int64_t cols, int group_size) {
    __shared__ float scratch[NC_WARP];
    const nc_rows::Group g = nc_rows::locate(group_size);
    if (g.row >= rows) return;
    const nc_softmax::MaxSum s = nc_softmax::row_max_sum(x + g.row * cols, cols, nc_rows::vectorizable(x, cols), g, scratch);
    if (g.lane == 0) result[g.row] = s.max + logf(s.sum);
}
