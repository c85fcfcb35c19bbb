// Margin (pairwise) contrastive loss of Hadsell, Chopra & LeCun (2006) over L2-normalised rows u [R, d], R = 2N;
// rows i and p(i) = (i + N) mod R are the two views of one sample. With c_ij = u_i . u_j and
// d_ij = sqrt(max(2 - 2 c_ij, 1e-12)):
//   loss_i   = (1 - c_{i,p(i)}) + 1/(R - 2) * sum_{j not in {i, p(i)}} 1/2 max(0, m - d_ij)^2   (0 negatives at R = 2)
//   loss     = mean_i loss_i
//   dL/du_i  = -2/R u_{p(i)} + 2/(R (R - 2)) * sum_{j neg, d_ij < m} (m - d_ij)/d_ij u_j
// Each pair sits in both of its rows' sums, hence the 2s; a row's own sweep over j therefore yields its whole gradient
// and no kernel ever writes another row's. Where the clamp holds (2 - 2c < 1e-12) d is constant: no gradient.
//
// One warp per row i, kWarps rows per block. u_i, the current u_j and the gradient's running chunk sit in registers,
// K features per lane: a kernel per K = 1, 2, 4, ..., 32, the launcher picking the smallest with 32 K >= d (so
// d <= 1024). u_j is read once per (i, j) with coalesced loads; the dot product is a warp butterfly, so every lane
// holds the same cosine and every branch on it is warp-uniform. Gradient and hinge terms are summed in fp32 over
// chunks of kChunk columns that then join fp64 accumulators (the gradient's in shared memory, each lane touching only
// its own features), so the fp32 error does not grow with R. Per-row [loss | positive cosine | hit] go to a workspace
// [3R], reduced into stats by nc_contrastive_stats (contrastive.cu) in a fixed order: no atomics, so results are
// reproducible.
#include "common.cuh"

#include <cmath>

namespace nc_margin {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * NC_WARP;
constexpr int kChunk = 256;                // columns summed in fp32 before they join the fp64 accumulators
constexpr float kDistanceFloor = 1e-12f;   // the clamp of the squared distance

// v[k] = row[lane + 32k], zero past the row's end.
template <int K>
__device__ __forceinline__ void load_row(const float* row, int dim, int lane, float (&v)[K]) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int f = lane + k * NC_WARP;
        v[k] = f < dim ? row[f] : 0.f;
    }
}

// Row i (this warp's) of the loss. u [rows, dim]; row_stats [3 * rows]; du [rows, dim] or null (no gradient).
// positive_factor = gradScale * 2 / R, negative_factor = gradScale * 2 / (R (R - 2)), negative_scale = 1 / (R - 2),
// the last two 0 when R = 2.
template <int K>
__device__ __forceinline__ void row(int i, const float* __restrict__ u, int rows, int dim, float margin,
                                    double negative_scale, double positive_factor, double negative_factor,
                                    float* __restrict__ row_stats, float* __restrict__ du) {
    __shared__ double gradient_sum[kWarps][K * NC_WARP];
    const int warp = threadIdx.x / NC_WARP, lane = threadIdx.x % NC_WARP;
    const int half = rows / 2;
    const int partner = i < half ? i + half : i - half;
    const bool with_gradient = du != nullptr;
    double* g = gradient_sum[warp];
    if (with_gradient) {
#pragma unroll
        for (int k = 0; k < K; ++k) g[lane + k * NC_WARP] = 0.0;
    }

    float ui[K];
    load_row(u + static_cast<int64_t>(i) * dim, dim, lane, ui);
    float positive = 0.f, best_negative = -INFINITY;
    double hinges = 0.0;
    for (int j0 = 0; j0 < rows; j0 += kChunk) {
        const int j1 = min(rows, j0 + kChunk);
        float chunk[K];
#pragma unroll
        for (int k = 0; k < K; ++k) chunk[k] = 0.f;
        float chunk_hinges = 0.f;
        for (int j = j0; j < j1; ++j) {
            if (j == i) continue;
            float uj[K];
            load_row(u + static_cast<int64_t>(j) * dim, dim, lane, uj);
            float dot = 0.f;
#pragma unroll
            for (int k = 0; k < K; ++k) dot = fmaf(ui[k], uj[k], dot);
            const float c = nc::warp_sum(dot);
            if (j == partner) {
                positive = c;
                continue;
            }
            best_negative = fmaxf(best_negative, c);
            const float squared = fmaf(-2.f, c, 2.f);
            const float distance = sqrtf(fmaxf(squared, kDistanceFloor));
            if (distance >= margin) continue;
            const float hinge = margin - distance;
            chunk_hinges = fmaf(0.5f * hinge, hinge, chunk_hinges);
            if (with_gradient && squared >= kDistanceFloor) {
                const float weight = hinge / distance;
#pragma unroll
                for (int k = 0; k < K; ++k) chunk[k] = fmaf(weight, uj[k], chunk[k]);
            }
        }
        hinges += chunk_hinges;
        if (with_gradient) {
#pragma unroll
            for (int k = 0; k < K; ++k) g[lane + k * NC_WARP] += chunk[k];
        }
    }

    if (lane == 0) {
        row_stats[i] = static_cast<float>((1.0 - positive) + hinges * negative_scale);
        row_stats[rows + i] = positive;
        row_stats[2 * static_cast<int64_t>(rows) + i] = positive >= best_negative ? 1.f : 0.f;
    }
    if (!with_gradient) return;
    const float* up = u + static_cast<int64_t>(partner) * dim;
    float* out = du + static_cast<int64_t>(i) * dim;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int f = lane + k * NC_WARP;
        if (f < dim) out[f] = static_cast<float>(negative_factor * g[f] - positive_factor * up[f]);
    }
}

}  // namespace nc_margin

// Entry points, one per K = features per lane: nc_margin_loss_d<32 K> holds rows of up to 32 K features. Each
// starts with its own row check, not an inlined helper's code (ptxas 11.8 for sm_90 may crash on the latter with
// -lineinfo, see contrastive.cu); warps past the last row leave, and no barrier waits for them.
#define NC_MARGIN_LOSS(K, D)                                                                                          \
    extern "C" __global__ void __launch_bounds__(nc_margin::kThreads)                                                 \
        nc_margin_loss_d##D(const float* u, int rows, int dim, float margin, double negativeScale,                    \
                            double positiveFactor, double negativeFactor, float* rowStats, float* du) {               \
        const int i = blockIdx.x * nc_margin::kWarps + threadIdx.x / NC_WARP;                                         \
        if (i >= rows) return;                                                                                        \
        nc_margin::row<K>(i, u, rows, dim, margin, negativeScale, positiveFactor, negativeFactor, rowStats, du);      \
    }

NC_MARGIN_LOSS(1, 32)
NC_MARGIN_LOSS(2, 64)
NC_MARGIN_LOSS(4, 128)
NC_MARGIN_LOSS(8, 256)
NC_MARGIN_LOSS(16, 512)
NC_MARGIN_LOSS(32, 1024)

#undef NC_MARGIN_LOSS
