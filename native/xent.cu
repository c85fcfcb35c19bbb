// Softmax cross-entropy against class labels stored as floats (see CudaBackend.Xent.cs). One block per row.
#include "common.cuh"

namespace nc_xent {

// The class a float label holds, or −1 when it is not an integer in [0, classes).
__device__ __forceinline__ int label_of(float label, int classes) {
    return label >= 0.f && label < static_cast<float>(classes) && label == floorf(label) ? static_cast<int>(label) : -1;
}

// Row max and Σ exp(x − max) over one row, every thread of the block gets both.
__device__ __forceinline__ void row_stats(const float* row, int cols, float* scratch, float& max, float& sum) {
    float m = -FLT_MAX;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, row[j]);
    max = nc::block_max(m, scratch);
    float s = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) s += expf(row[j] - max);
    sum = nc::block_sum(s, scratch);
}

}  // namespace nc_xent

// losses[i] = log Σ_j exp(logits[i, j]) − logits[i, label]. Grid = rows, block = 256.
extern "C" __global__ void nc_xent_forward(const float* __restrict__ logits, const float* __restrict__ labels,
                                           float* __restrict__ losses, int cols) {
    __shared__ float scratch[32];
    const float* row = logits + static_cast<int64_t>(blockIdx.x) * cols;
    float max, sum;
    nc_xent::row_stats(row, cols, scratch, max, sum);
    if (threadIdx.x == 0) {
        const int label = nc_xent::label_of(labels[blockIdx.x], cols);
        losses[blockIdx.x] = label < 0 ? NAN : max + logf(sum) - row[label];
    }
}

// dlogits[i, j] = scale·(softmax(logits[i, :])[j] − [j = label]). Grid = rows, block = 256.
extern "C" __global__ void nc_xent_backward(const float* __restrict__ logits, const float* __restrict__ labels,
                                            float* __restrict__ dlogits, int cols, float scale) {
    __shared__ float scratch[32];
    const int64_t offset = static_cast<int64_t>(blockIdx.x) * cols;
    float max, sum;
    nc_xent::row_stats(logits + offset, cols, scratch, max, sum);
    const int label = nc_xent::label_of(labels[blockIdx.x], cols);
    const float inv = 1.f / sum;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float p = expf(logits[offset + j] - max) * inv;
        dlogits[offset + j] = label < 0 ? NAN : scale * (p - (j == label ? 1.f : 0.f));
    }
}
