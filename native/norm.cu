// Batch normalisation over x read as [rows, C] (NHWC activations, or [N, C] for BatchNorm1d), with the residual add
// and ReLU of a ResNet block fused into the elementwise passes (see CudaBackend.Norm.cs).
// Reductions are two-level and deterministic: a grid of (C/32 column tiles) × (row splits) blocks writes per-split
// partial sums, then one thread per channel adds the splits in order (in double). No atomics, so every run of the
// same shapes gives the same bits.
//   forward (training):  nc_norm_stats_partial → nc_norm_stats_finalize → nc_norm_apply
//   forward (eval):      nc_norm_stats_eval → nc_norm_apply
//   backward:            nc_norm_backward_partial → nc_norm_backward_finalize → nc_norm_backward_apply
// SyncBN (statistics over every rank's rows) puts an all-reduce of per-channel sums between the reductions, as the
// CPU twin does (CpuBackend.Norm.cs), with its two passes:
//   forward:  nc_norm_stats_partial → nc_norm_sync_sums (Σx, rows) → all-reduce → nc_norm_sync_mean
//             → nc_norm_stats_partial (shifted by the mean) → nc_norm_sync_sums (Σ(x − mean)²) → all-reduce
//             → nc_norm_sync_finalize → nc_norm_apply
//   backward: nc_norm_backward_partial → nc_norm_backward_finalize (this rank's parameter gradients)
//             → nc_norm_sync_sums (Σg, Σg·(x − mean), rows) → all-reduce → nc_norm_sync_coefficients → nc_norm_backward_apply
#include "common.cuh"

namespace nc_norm {

constexpr int kTileColumns = 32;
constexpr int kRowLanes = 8;

// Adds the 8 row lanes of a (32, 8) block in shared memory; lane y = 0 returns the sums.
__device__ __forceinline__ void reduce_lanes(float a, float b, float& sum_a, float& sum_b) {
    __shared__ float sa[kRowLanes][kTileColumns + 1];
    __shared__ float sb[kRowLanes][kTileColumns + 1];
    sa[threadIdx.y][threadIdx.x] = a;
    sb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    sum_a = 0.f;
    sum_b = 0.f;
    if (threadIdx.y == 0) {
#pragma unroll
        for (int k = 0; k < kRowLanes; ++k) {
            sum_a += sa[k][threadIdx.x];
            sum_b += sb[k][threadIdx.x];
        }
    }
}

__device__ __forceinline__ float masked(float dy, const float* y, int64_t i, int relu) {
    return relu && !(y[i] > 0.f) ? 0.f : dy;
}

}  // namespace nc_norm

// partial[0, split, c] = Σ (x − k_c) and partial[1, split, c] = Σ (x − k_c)² over the split's rows, with k = shift,
// or the channel's first value x[0, c] when shift is null: shifting keeps the one-pass variance accurate when
// |mean| ≫ std. SyncBN's second pass shifts by the global mean, so that partial[1] is its Σ(x − mean)².
// Grid (ceil(C/32), splits), block (32, 8).
extern "C" __global__ void nc_norm_stats_partial(const float* __restrict__ x, int64_t rows, int channels, int64_t rows_per_split,
                                                 const float* __restrict__ shift_by, float* __restrict__ partial) {
    const int c = blockIdx.x * nc_norm::kTileColumns + threadIdx.x;
    const int64_t first = blockIdx.y * rows_per_split;
    const int64_t last = min(rows, first + rows_per_split);
    float s = 0.f, ss = 0.f;
    if (c < channels) {
        const float shift = shift_by != nullptr ? shift_by[c] : x[c];
        for (int64_t r = first + threadIdx.y; r < last; r += nc_norm::kRowLanes) {
            const float d = x[r * channels + c] - shift;
            s += d;
            ss = fmaf(d, d, ss);
        }
    }
    float sum, sum_sq;
    nc_norm::reduce_lanes(s, ss, sum, sum_sq);
    if (threadIdx.y == 0 && c < channels) {
        partial[static_cast<int64_t>(blockIdx.y) * channels + c] = sum;
        partial[static_cast<int64_t>(gridDim.y + blockIdx.y) * channels + c] = sum_sq;
    }
}

// One thread per channel: batch mean and 1/sqrt(var + eps) from the partials, PyTorch's running-statistics update
// (unbiased variance), and num_batches_tracked += 1 (when given).
extern "C" __global__ void nc_norm_stats_finalize(const float* __restrict__ partial, int splits, const float* __restrict__ x,
                                                  int64_t rows, int channels, float* __restrict__ mean, float* __restrict__ inv_std,
                                                  float* __restrict__ running_mean, float* __restrict__ running_var,
                                                  float* __restrict__ batches_tracked, float momentum, float eps) {
    const int c = static_cast<int>(nc::global_index());
    if (c == 0 && batches_tracked != nullptr) batches_tracked[0] += 1.f;
    if (c >= channels) return;
    double s = 0.0, ss = 0.0;
    for (int k = 0; k < splits; ++k) {
        s += partial[static_cast<int64_t>(k) * channels + c];
        ss += partial[static_cast<int64_t>(splits + k) * channels + c];
    }
    const double shifted_mean = s / static_cast<double>(rows);
    const double variance = fmax(ss / static_cast<double>(rows) - shifted_mean * shifted_mean, 0.0);
    const float m = static_cast<float>(static_cast<double>(x[c]) + shifted_mean);
    mean[c] = m;
    inv_std[c] = static_cast<float>(1.0 / sqrt(variance + static_cast<double>(eps)));
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * m;
    running_var[c] = (1.f - momentum) * running_var[c] +
                     momentum * static_cast<float>(variance * static_cast<double>(rows) / static_cast<double>(rows - 1));
}

// Evaluation: the statistics used are the running ones.
extern "C" __global__ void nc_norm_stats_eval(const float* __restrict__ running_mean, const float* __restrict__ running_var,
                                              int channels, float eps, float* __restrict__ mean, float* __restrict__ inv_std) {
    const int c = static_cast<int>(nc::global_index());
    if (c >= channels) return;
    mean[c] = running_mean[c];
    inv_std[c] = 1.f / sqrtf(running_var[c] + eps);
}

// y = act((x − mean)·invstd·gamma + beta [+ residual]); gamma/beta/residual may be null. `total` = rows · C.
extern "C" __global__ void nc_norm_apply(const float* __restrict__ x, const float* __restrict__ residual, float* __restrict__ y,
                                         const float* __restrict__ mean, const float* __restrict__ inv_std,
                                         const float* __restrict__ gamma, const float* __restrict__ beta,
                                         int channels, int64_t total, int relu) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int c = static_cast<int>(i % channels);
        const float scale = inv_std[c] * (gamma != nullptr ? gamma[c] : 1.f);
        float v = (x[i] - mean[c]) * scale + (beta != nullptr ? beta[c] : 0.f);
        if (residual != nullptr) v += residual[i];
        y[i] = relu ? fmaxf(v, 0.f) : v;
    }
}

// The same four elements at a time; needs C % 4 == 0 and 16-byte aligned x, residual and y. `total` counts floats.
extern "C" __global__ void nc_norm_apply_vec4(const float* __restrict__ x, const float* __restrict__ residual, float* __restrict__ y,
                                              const float* __restrict__ mean, const float* __restrict__ inv_std,
                                              const float* __restrict__ gamma, const float* __restrict__ beta,
                                              int channels, int64_t total, int relu) {
    for (int64_t i = nc::global_index() * 4; i < total; i += nc::global_stride() * 4) {
        const int c0 = static_cast<int>(i % channels);
        const float4 xv = nc::load4(x + i);
        const float4 rv = residual != nullptr ? nc::load4(residual + i) : make_float4(0.f, 0.f, 0.f, 0.f);
        float in[4] = {xv.x, xv.y, xv.z, xv.w};
        const float res[4] = {rv.x, rv.y, rv.z, rv.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int c = c0 + k;
            const float scale = inv_std[c] * (gamma != nullptr ? gamma[c] : 1.f);
            float v = (in[k] - mean[c]) * scale + (beta != nullptr ? beta[c] : 0.f);
            if (residual != nullptr) v += res[k];
            in[k] = relu ? fmaxf(v, 0.f) : v;
        }
        nc::store4(y + i, make_float4(in[0], in[1], in[2], in[3]));
    }
}

// partial[0, split, c] = Σ g and partial[1, split, c] = Σ g·(x − mean), with g = dy masked by the fused ReLU (y > 0).
// Grid (ceil(C/32), splits), block (32, 8).
extern "C" __global__ void nc_norm_backward_partial(const float* __restrict__ x, const float* __restrict__ y,
                                                    const float* __restrict__ dy, const float* __restrict__ mean,
                                                    int64_t rows, int channels, int64_t rows_per_split, int relu,
                                                    float* __restrict__ partial) {
    const int c = blockIdx.x * nc_norm::kTileColumns + threadIdx.x;
    const int64_t first = blockIdx.y * rows_per_split;
    const int64_t last = min(rows, first + rows_per_split);
    float sg = 0.f, sgx = 0.f;
    if (c < channels) {
        const float m = mean[c];
        for (int64_t r = first + threadIdx.y; r < last; r += nc_norm::kRowLanes) {
            const int64_t i = r * channels + c;
            const float g = nc_norm::masked(dy[i], y, i, relu);
            sg += g;
            sgx = fmaf(g, x[i] - m, sgx);
        }
    }
    float sum_g, sum_gx;
    nc_norm::reduce_lanes(sg, sgx, sum_g, sum_gx);
    if (threadIdx.y == 0 && c < channels) {
        partial[static_cast<int64_t>(blockIdx.y) * channels + c] = sum_g;
        partial[static_cast<int64_t>(gridDim.y + blockIdx.y) * channels + c] = sum_gx;
    }
}

// One thread per channel: beta_grad += Σ g, gamma_grad += Σ g·x̂, and the coefficients of
// dx = a·g + k1·(x − mean) + k0 (coefficients[0..2, c] = a, k1, k0); k1 = k0 = 0 in evaluation mode.
extern "C" __global__ void nc_norm_backward_finalize(const float* __restrict__ partial, int splits, int64_t rows, int channels,
                                                     const float* __restrict__ gamma, const float* __restrict__ inv_std,
                                                     float* __restrict__ gamma_grad, float* __restrict__ beta_grad,
                                                     float* __restrict__ coefficients, int training) {
    const int c = static_cast<int>(nc::global_index());
    if (c >= channels) return;
    double sg = 0.0, sgx = 0.0;
    for (int k = 0; k < splits; ++k) {
        sg += partial[static_cast<int64_t>(k) * channels + c];
        sgx += partial[static_cast<int64_t>(splits + k) * channels + c];
    }
    const double istd = inv_std[c];
    if (beta_grad != nullptr) beta_grad[c] += static_cast<float>(sg);
    if (gamma_grad != nullptr) gamma_grad[c] += static_cast<float>(sgx * istd);
    const double a = static_cast<double>(gamma != nullptr ? gamma[c] : 1.f) * istd;
    coefficients[c] = static_cast<float>(a);
    coefficients[channels + c] = training ? static_cast<float>(-a * istd * istd * sgx / static_cast<double>(rows)) : 0.f;
    coefficients[2 * channels + c] = training ? static_cast<float>(-a * sg / static_cast<double>(rows)) : 0.f;
}

// dx = a·g + k1·(x − mean) + k0 and residual_grad = g (when given). `total` = rows · C.
extern "C" __global__ void nc_norm_backward_apply(const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ dy,
                                                  const float* __restrict__ mean, const float* __restrict__ coefficients,
                                                  float* __restrict__ dx, float* __restrict__ residual_grad,
                                                  int channels, int64_t total, int relu) {
    for (int64_t i = nc::global_index(); i < total; i += nc::global_stride()) {
        const int c = static_cast<int>(i % channels);
        const float g = nc_norm::masked(dy[i], y, i, relu);
        if (residual_grad != nullptr) residual_grad[i] = g;
        dx[i] = fmaf(coefficients[c], g, fmaf(coefficients[channels + c], x[i] - mean[c], coefficients[2 * channels + c]));
    }
}

// The same four elements at a time; needs C % 4 == 0 and 16-byte aligned x, y, dy, dx and residual_grad.
extern "C" __global__ void nc_norm_backward_apply_vec4(const float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ dy,
                                                       const float* __restrict__ mean, const float* __restrict__ coefficients,
                                                       float* __restrict__ dx, float* __restrict__ residual_grad,
                                                       int channels, int64_t total, int relu) {
    for (int64_t i = nc::global_index() * 4; i < total; i += nc::global_stride() * 4) {
        const int c0 = static_cast<int>(i % channels);
        const float4 xv = nc::load4(x + i);
        const float4 dyv = nc::load4(dy + i);
        const float4 yv = relu ? nc::load4(y + i) : make_float4(1.f, 1.f, 1.f, 1.f);
        const float xs[4] = {xv.x, xv.y, xv.z, xv.w};
        const float ys[4] = {yv.x, yv.y, yv.z, yv.w};
        float gs[4] = {dyv.x, dyv.y, dyv.z, dyv.w};
        float out[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int c = c0 + k;
            if (relu && !(ys[k] > 0.f)) gs[k] = 0.f;
            out[k] = fmaf(coefficients[c], gs[k], fmaf(coefficients[channels + c], xs[k] - mean[c], coefficients[2 * channels + c]));
        }
        if (residual_grad != nullptr) nc::store4(residual_grad + i, make_float4(gs[0], gs[1], gs[2], gs[3]));
        nc::store4(dx + i, make_float4(out[0], out[1], out[2], out[3]));
    }
}

// SyncBN: sums[c] = Σ over splits of partial[term, split, c] (in double, then fp32 for the all-reduce), plus
// rows · x[0, c] when x is given (undoing nc_norm_stats_partial's shift by the first row: Σx itself); and, when
// rows_at_end, sums[channels] = rows (exact in fp32 below 2^24). One thread per channel.
extern "C" __global__ void nc_norm_sync_sums(const float* __restrict__ partial, int splits, int channels, int term,
                                             const float* __restrict__ x, int64_t rows, int rows_at_end,
                                             float* __restrict__ sums) {
    const int c = static_cast<int>(nc::global_index());
    if (c == 0 && rows_at_end) sums[channels] = static_cast<float>(rows);
    if (c >= channels) return;
    double s = 0.0;
    for (int k = 0; k < splits; ++k) s += partial[static_cast<int64_t>(term * splits + k) * channels + c];
    if (x != nullptr) s += static_cast<double>(rows) * x[c];
    sums[c] = static_cast<float>(s);
}

// SyncBN: mean[c] = Σx / rows from the all-reduced sums (rows at sums[channels]). One thread per channel.
extern "C" __global__ void nc_norm_sync_mean(const float* __restrict__ sums, int channels, float* __restrict__ mean) {
    const int c = static_cast<int>(nc::global_index());
    if (c >= channels) return;
    mean[c] = static_cast<float>(static_cast<double>(sums[c]) / static_cast<double>(sums[channels]));
}

// SyncBN: from the all-reduced Σ(x − mean)² (sums[c]) and rows (sums[channels], kept from the first all-reduce),
// 1/sqrt(var + eps), PyTorch's running-statistics update (unbiased over every rank's rows) and
// num_batches_tracked += 1 (when given). One thread per channel.
extern "C" __global__ void nc_norm_sync_finalize(const float* __restrict__ sums, int channels, const float* __restrict__ mean,
                                                 float* __restrict__ inv_std, float* __restrict__ running_mean,
                                                 float* __restrict__ running_var, float* __restrict__ batches_tracked,
                                                 float momentum, float eps) {
    const int c = static_cast<int>(nc::global_index());
    if (c == 0 && batches_tracked != nullptr) batches_tracked[0] += 1.f;
    if (c >= channels) return;
    const double rows = sums[channels];
    const double variance = static_cast<double>(sums[c]) / rows;
    inv_std[c] = static_cast<float>(1.0 / sqrt(variance + static_cast<double>(eps)));
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean[c];
    running_var[c] = (1.f - momentum) * running_var[c] + momentum * static_cast<float>(variance * rows / (rows - 1.0));
}

// SyncBN: the batch-statistics coefficients k1, k0 of dx (coefficients[1..2, c]; a = coefficients[0, c] stays) from
// the all-reduced Σg (sums[c]), Σg·(x − mean) (sums[channels + c]) and rows (sums[2·channels]). One thread per channel.
// a is recomputed in double from gamma (null: 1) rather than read back as fp32, as the CPU twin keeps it.
extern "C" __global__ void nc_norm_sync_coefficients(const float* __restrict__ sums, int channels, const float* __restrict__ gamma,
                                                     const float* __restrict__ inv_std, float* __restrict__ coefficients) {
    const int c = static_cast<int>(nc::global_index());
    if (c >= channels) return;
    const double rows = sums[2 * channels];
    const double istd = inv_std[c];
    const double a = (gamma != nullptr ? static_cast<double>(gamma[c]) : 1.0) * istd;
    coefficients[channels + c] = static_cast<float>(-a * istd * istd * static_cast<double>(sums[channels + c]) / rows);
    coefficients[2 * channels + c] = static_cast<float>(-a * static_cast<double>(sums[c]) / rows);
}
