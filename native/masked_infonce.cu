// Label-masked InfoNCE: the supervised-contrastive loss with a queue, as PiCO (Wang et al., 2022) uses its SupConLoss
// over features cat(q, k, queue). q, k [B, d] are normalised here (qn, kn); the queue [K, d] holds normalised keys.
// Anchor row i sees the columns c of [qn | kn | queue] (N = 2B + K) except itself (c = i); a column is a positive
// when its label equals labels[i] >= 0. With x_ic = s_ic log2(e) / tau (base-2 logits, as contrastive.cu keeps them):
//   L2_i     = log2 sum_{c != i} 2^(x_ic)                       P_ic = 2^(x_ic - L2_i)
//   loss_i   = ln2 * (L2_i - (1/|P_i|) sum_{p in P_i} x_ip)     (0 when |P_i| = 0)
//   dL/dqn_j = 1/(B tau) * [ sum_c w_jc v_c + sum_{i != j} w_{i,j} qn_i ],   w_ic = P_ic - [c in P_i] / |P_i|
// The first sum (row j as anchor) needs only row j's own log-sum-exp; the second (qn_j as a column of the other
// anchors) needs every row's, so it is a second pass over the B x B block of q-columns.
//
// Kernels, one warp per row throughout (a row's cosines are warp butterflies, so every lane holds the same value and
// every branch on it is warp-uniform); qn_i and the current column sit in registers, K features per lane, a kernel per
// K = 1, 2, 4, ..., 32 (d <= 1024), as in margin.cu:
//   normalize  qn, kn and 1/|q| into the workspace;
//   sweep      grid (row blocks, splits): per (row, split of the columns) the online max and sum of 2^x, the positives'
//              count, cosine sum, best cosine and the best negative's, and (with a gradient) the sums
//              W = sum_c 2^(x_c - max) v_c and V = sum_{c in P} v_c. Columns are taken in chunks of kChunk: fp32 inside
//              a chunk (its own running max, so nothing overflows), chunks merged into fp64 running values (W and V
//              in shared memory, each lane touching only its own features), so the fp32 error does not grow with N;
//   combine    merges the splits in a fixed order: per-row statistics [loss | cos(q_i, k_i) | hit], L2_i (+inf for a
//              row without positives, whose weights are then 0), 1/|P_i|, and the anchor term sum_c w_ic v_c;
//   gradient   the q-column term over the other rows, plus the anchor term, through the normalisation into dq.
// Nothing uses atomics, so results are reproducible bit for bit; nothing holds a B x N matrix. The statistics are
// reduced by nc_contrastive_stats (contrastive.cu).
//
// A shard (data-parallel, as CpuBackend.LabelMaskedInfoNce's): q, k and labels hold every rank's rows; this rank's
// anchors are rows [rowOffset, rowOffset + anchorRows), numbered locally (0..anchorRows) in partial, weighted,
// positives, anchor, rowStats and dq, globally (rowOffset + local) as rows of qn and as columns (self is column
// rowOffset + local). Between combine and gradient the host all-gathers each anchor's (natural log-sum-exp as two
// floats, positive count) that combine writes into rowState, and nc_masked_infonce_row_states turns every rank's into
// rowSoftmax [B], which the gradient pass reads by column. Without a shard rowOffset is 0 and anchorRows is B.
#include "common.cuh"

#include <cmath>

namespace nc_masked_infonce {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * NC_WARP;
constexpr int kChunk = 256;              // columns summed in fp32 before they join the fp64 running values
constexpr float kNormEps = 1e-12f;       // as L2NormalizeRows: y = x / max(|x|, eps)
constexpr double kLn2 = 0.693147180559945309;

// A sweep partial per (split, row): kFields floats.
constexpr int kFields = 8;
enum Field : int { kMax = 0, kSum, kPositiveSum, kPositiveCount, kBestPositive, kBestNegative };

// v[k] = row[lane + 32k], zero past the row's end.
template <int K>
__device__ __forceinline__ void load_row(const float* row, int dim, int lane, float (&v)[K]) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int f = lane + k * NC_WARP;
        v[k] = f < dim ? row[f] : 0.f;
    }
}

template <int K>
__device__ __forceinline__ float warp_dot(const float (&a)[K], const float (&b)[K]) {
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) dot = fmaf(a[k], b[k], dot);
    return nc::warp_sum(dot);
}

// A positive needs equal labels and a class (a negative label, -1 for unwritten queue slots, is none).
__device__ __forceinline__ bool is_positive(float rowLabel, float columnLabel) {
    return rowLabel >= 0.f && columnLabel == rowLabel;
}

// Column c of [qn | kn | queue] and its label.
struct Columns {
    const float* qn;
    const float* kn;
    const float* queue;
    const float* labels;
    const float* queueLabels;
    int batch;
    int dim;

    __device__ __forceinline__ const float* row(int c) const {
        const float* base = c < batch ? qn + static_cast<int64_t>(c) * dim
                                      : c < 2 * batch ? kn + static_cast<int64_t>(c - batch) * dim
                                                      : queue + static_cast<int64_t>(c - 2 * batch) * dim;
        return base;
    }

    __device__ __forceinline__ float label(int c) const {
        return c < batch ? labels[c] : c < 2 * batch ? labels[c - batch] : queueLabels[c - 2 * batch];
    }
};

// Row i = rowOffset + local (this warp's) over the columns [blockIdx.y * columnsPerSplit, + columnsPerSplit) of N.
// partial [splits, anchorRows, kFields]; weighted and positives [splits, anchorRows, dim], or null without a gradient. running holds 2 * 32 K
// doubles per warp (dynamic shared memory) when there is a gradient.
template <int K>
__device__ __forceinline__ void sweep(int i, int local, int anchorRows, const Columns& columns, int count,
                                      int columnsPerSplit, float logitScale,
                                      float* __restrict__ partial, float* __restrict__ weighted,
                                      float* __restrict__ positives, double* running) {
    const int warp = threadIdx.x / NC_WARP, lane = threadIdx.x % NC_WARP;
    const int dim = columns.dim;
    const bool withGradient = weighted != nullptr;
    double* runW = running + warp * 2 * K * NC_WARP;
    double* runV = runW + K * NC_WARP;
    if (withGradient) {
#pragma unroll
        for (int k = 0; k < K; ++k) runW[lane + k * NC_WARP] = runV[lane + k * NC_WARP] = 0.0;
    }

    float qi[K];
    load_row(columns.qn + static_cast<int64_t>(i) * dim, dim, lane, qi);
    const float label = columns.labels[i];
    float runMax = -INFINITY, bestPositive = -INFINITY, bestNegative = -INFINITY;
    double runSum = 0.0, positiveSum = 0.0;
    int positiveCount = 0;
    const int begin = blockIdx.y * columnsPerSplit, end = min(count, begin + columnsPerSplit);
    for (int c0 = begin; c0 < end; c0 += kChunk) {
        const int c1 = min(end, c0 + kChunk);
        float chunkMax = -INFINITY, chunkSum = 0.f, chunkPositive = 0.f;
        float w[K], v[K];
#pragma unroll
        for (int k = 0; k < K; ++k) w[k] = v[k] = 0.f;
        for (int c = c0; c < c1; ++c) {
            if (c == i) continue;
            float col[K];
            load_row(columns.row(c), dim, lane, col);
            const float cosine = warp_dot(qi, col);
            if (is_positive(label, columns.label(c))) {
                ++positiveCount;
                chunkPositive += cosine;
                bestPositive = fmaxf(bestPositive, cosine);
                if (withGradient) {
#pragma unroll
                    for (int k = 0; k < K; ++k) v[k] += col[k];
                }
            } else {
                bestNegative = fmaxf(bestNegative, cosine);
            }
            const float logit = cosine * logitScale;
            if (logit > chunkMax) {
                // A new chunk maximum: what was summed so far is rescaled to it (2^-inf = 0 for the first column).
                const float rescale = exp2f(chunkMax - logit);
                chunkSum *= rescale;
                if (withGradient) {
#pragma unroll
                    for (int k = 0; k < K; ++k) w[k] *= rescale;
                }
                chunkMax = logit;
            }
            const float e = exp2f(logit - chunkMax);
            chunkSum += e;
            if (withGradient) {
#pragma unroll
                for (int k = 0; k < K; ++k) w[k] = fmaf(e, col[k], w[k]);
            }
        }
        if (chunkMax == -INFINITY) continue;  // the chunk held only the row's own column
        const float newMax = fmaxf(runMax, chunkMax);
        const double keep = exp2f(runMax - newMax), add = exp2f(chunkMax - newMax);
        runSum = runSum * keep + chunkSum * add;
        positiveSum += chunkPositive;
        runMax = newMax;
        if (withGradient) {
#pragma unroll
            for (int k = 0; k < K; ++k) {
                const int f = lane + k * NC_WARP;
                runW[f] = runW[f] * keep + w[k] * add;
                runV[f] += v[k];
            }
        }
    }

    const int64_t slot = static_cast<int64_t>(blockIdx.y) * anchorRows + local;
    if (lane == 0) {
        float* out = partial + slot * kFields;
        out[kMax] = runMax;
        out[kSum] = static_cast<float>(runSum);
        out[kPositiveSum] = static_cast<float>(positiveSum);
        out[kPositiveCount] = static_cast<float>(positiveCount);
        out[kBestPositive] = bestPositive;
        out[kBestNegative] = bestNegative;
    }
    if (!withGradient) return;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int f = lane + k * NC_WARP;
        if (f < dim) {
            weighted[slot * dim + f] = static_cast<float>(runW[f]);
            positives[slot * dim + f] = static_cast<float>(runV[f]);
        }
    }
}

// dq_j: the q-column term sum_{i != j} w_{i,j} qn_i (w from rowSoftmax[i] = (L2_i, 1/|P_i|), every row of the batch,
// read by column), plus row j's anchor term, times gradFactor = gradScale / (anchorRows tau), through the normalisation.
// j = rowOffset + local is the global row; anchor and dq are indexed by local. running holds 32 K doubles per warp.
template <int K>
__device__ __forceinline__ void gradient(int j, int local, const float* __restrict__ qn, const float* __restrict__ labels, int batch,
                                         int dim, const float* __restrict__ invNorm, const float2* __restrict__ rowSoftmax,
                                         const float* __restrict__ anchor,
                                         float logitScale, float gradFactor, float* __restrict__ dq, double* running) {
    const int warp = threadIdx.x / NC_WARP, lane = threadIdx.x % NC_WARP;
    double* total = running + warp * K * NC_WARP;
#pragma unroll
    for (int k = 0; k < K; ++k) total[lane + k * NC_WARP] = 0.0;
    float qj[K];
    load_row(qn + static_cast<int64_t>(j) * dim, dim, lane, qj);
    const float label = labels[j];
    for (int i0 = 0; i0 < batch; i0 += kChunk) {
        const int i1 = min(batch, i0 + kChunk);
        float chunk[K];
#pragma unroll
        for (int k = 0; k < K; ++k) chunk[k] = 0.f;
        for (int i = i0; i < i1; ++i) {
            float qi[K];
            load_row(qn + static_cast<int64_t>(i) * dim, dim, lane, qi);
            const float logit = warp_dot(qj, qi) * logitScale;
            // Row i's weight on its column q_j; 0 for a row without positives (L2 = +inf, 1/|P| = 0) and for i = j
            // (a select, not a branch around the shuffles: it keeps the loop free of divergence paths).
            const float2 softmax = rowSoftmax[i];
            const float weight = i == j ? 0.f : exp2f(logit - softmax.x) - (is_positive(label, labels[i]) ? softmax.y : 0.f);
#pragma unroll
            for (int k = 0; k < K; ++k) chunk[k] = fmaf(weight, qi[k], chunk[k]);
        }
#pragma unroll
        for (int k = 0; k < K; ++k) total[lane + k * NC_WARP] += chunk[k];
    }

    float g[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int f = lane + k * NC_WARP;
        g[k] = f < dim ? static_cast<float>(gradFactor * (anchor[static_cast<int64_t>(local) * dim + f] + total[f])) : 0.f;
    }
    const float dot = warp_dot(qj, g);
    const float inv = invNorm[j];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int f = lane + k * NC_WARP;
        if (f < dim) dq[static_cast<int64_t>(local) * dim + f] = (g[k] - qj[k] * dot) * inv;
    }
}

// Traps unless the block carries the dynamic shared memory the host was meant to give it (the host mirrors these
// sizes in CudaBackend.MaskedInfoNce.cs): a mismatch must stop the kernel, not overrun shared memory.
__device__ __forceinline__ void check_shared(unsigned needed) {
    unsigned dynamicShared;
    asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dynamicShared));
    if (dynamicShared < needed || blockDim.x != kThreads) __trap();
}

}  // namespace nc_masked_infonce

// Entry points. Each starts with its own check on a parameter, not an inlined helper's code (ptxas 11.8 for sm_90 may
// crash on the latter with -lineinfo, see contrastive.cu); warps past the last row leave, and no barrier waits for them.

// qn, kn = q, k with rows scaled to unit length (rows past dim are not touched); invNormQ[i] = 1 / max(|q_i|, eps).
// One warp per row of [q | k] (2B rows).
extern "C" __global__ void nc_masked_infonce_normalize(const float* q, const float* k, int batch, int dim, float* qn,
                                                       float* kn, float* invNormQ) {
    if (batch <= 0) return;
    const int64_t r = nc::global_index() / NC_WARP;
    if (r >= 2 * static_cast<int64_t>(batch)) return;
    const int lane = threadIdx.x % NC_WARP;
    const bool isQuery = r < batch;
    const int64_t row = isQuery ? r : r - batch;
    const float* x = (isQuery ? q : k) + row * dim;
    float* y = (isQuery ? qn : kn) + row * dim;
    float squares = 0.f;
    for (int f = lane; f < dim; f += NC_WARP) squares = fmaf(x[f], x[f], squares);
    const float inv = 1.f / fmaxf(sqrtf(nc::warp_sum(squares)), nc_masked_infonce::kNormEps);
    for (int f = lane; f < dim; f += NC_WARP) y[f] = x[f] * inv;
    if (isQuery && lane == 0) invNormQ[row] = inv;
}

#define NC_MASKED_INFONCE(K, D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(nc_masked_infonce::kThreads)                                         \
        nc_masked_infonce_sweep_d##D(const float* qn, const float* kn, const float* queue, const float* labels,      \
                                     const float* queueLabels, int batch, int dim, int queueLength, int rowOffset,    \
                                     int anchorRows, int columnsPerSplit, float logitScale, float* partial,           \
                                     float* weighted, float* positives) {                                             \
        if (columnsPerSplit <= 0) return;                                                                             \
        extern __shared__ double maskedInfoNceRunning[];                                                              \
        if (weighted != nullptr) nc_masked_infonce::check_shared(nc_masked_infonce::kWarps * 2 * (K) * NC_WARP * 8);  \
        const int local = blockIdx.x * nc_masked_infonce::kWarps + threadIdx.x / NC_WARP;                             \
        if (local >= anchorRows) return;                                                                              \
        const nc_masked_infonce::Columns columns{qn, kn, queue, labels, queueLabels, batch, dim};                     \
        nc_masked_infonce::sweep<K>(rowOffset + local, local, anchorRows, columns, 2 * batch + queueLength,           \
                                    columnsPerSplit, logitScale, partial, weighted, positives, maskedInfoNceRunning); \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(nc_masked_infonce::kThreads)                                         \
        nc_masked_infonce_gradient_d##D(const float* qn, const float* labels, int batch, int dim, int rowOffset,     \
                                        int anchorRows, const float* invNorm, const float* rowSoftmax,                \
                                        const float* anchor, float logitScale, float gradFactor, float* dq) {         \
        if (batch <= 0) return;                                                                                       \
        extern __shared__ double maskedInfoNceRunning[];                                                              \
        nc_masked_infonce::check_shared(nc_masked_infonce::kWarps * (K) * NC_WARP * 8);                               \
        const int local = blockIdx.x * nc_masked_infonce::kWarps + threadIdx.x / NC_WARP;                             \
        if (local >= anchorRows) return;                                                                              \
        nc_masked_infonce::gradient<K>(rowOffset + local, local, qn, labels, batch, dim, invNorm,                     \
                                       reinterpret_cast<const float2*>(rowSoftmax), anchor, logitScale, gradFactor,   \
                                       dq, maskedInfoNceRunning);                                                     \
    }

NC_MASKED_INFONCE(1, 32)
NC_MASKED_INFONCE(2, 64)
NC_MASKED_INFONCE(4, 128)
NC_MASKED_INFONCE(8, 256)
NC_MASKED_INFONCE(16, 512)
NC_MASKED_INFONCE(32, 1024)

#undef NC_MASKED_INFONCE

// Merges the sweep's splits in order, one warp per anchor (local row i, global row rowOffset + i): rowStats =
// [loss_i | cos(qn_i, kn_i) | hit_i] (anchorRows each), rowSoftmax[i] = (L2_i, 1/|P_i|) ((+inf, 0) without positives,
// float2), and, when anchor is not null, the anchor term anchor_i = sum_s 2^(max_s - L2_i) W_s - (1/|P_i|) sum_s V_s
// (0 without positives). When rowState is not null (a shard with a gradient) it also receives the row's state as the
// CPU twin sends it: (natural log-sum-exp rounded to fp32, the remainder (0 for +inf), |P_i| as a float).
extern "C" __global__ void nc_masked_infonce_combine(const float* qn, const float* kn, int batch, int dim,
                                                     int rowOffset, int anchorRows, const float* partial,
                                                     const float* weighted, const float* positives, int splits,
                                                     float logitScale, float* anchor, float* rowSoftmax,
                                                     float* rowStats, float* rowState) {
    using namespace nc_masked_infonce;
    if (anchorRows <= 0) return;
    const int64_t i = nc::global_index() / NC_WARP;
    if (i >= anchorRows) return;
    const int64_t row = rowOffset + i;
    const int lane = threadIdx.x % NC_WARP;
    float rowMax = -INFINITY, bestPositive = -INFINITY, bestNegative = -INFINITY;
    for (int s = 0; s < splits; ++s) rowMax = fmaxf(rowMax, partial[(s * static_cast<int64_t>(anchorRows) + i) * kFields + kMax]);
    double sum = 0.0, positiveSum = 0.0, count = 0.0;
    for (int s = 0; s < splits; ++s) {
        const float* part = partial + (s * static_cast<int64_t>(anchorRows) + i) * kFields;
        if (part[kMax] != -INFINITY) sum += part[kSum] * static_cast<double>(exp2f(part[kMax] - rowMax));
        positiveSum += part[kPositiveSum];
        count += part[kPositiveCount];
        bestPositive = fmaxf(bestPositive, part[kBestPositive]);
        bestNegative = fmaxf(bestNegative, part[kBestNegative]);
    }
    const double lse = rowMax + log2(sum);
    const bool anchored = count > 0.0;
    float cosine = 0.f;
    for (int f = lane; f < dim; f += NC_WARP) cosine = fmaf(qn[row * dim + f], kn[row * dim + f], cosine);
    cosine = nc::warp_sum(cosine);
    if (lane == 0) {
        rowStats[i] = anchored ? static_cast<float>((lse - positiveSum / count * logitScale) * kLn2) : 0.f;
        rowStats[anchorRows + i] = cosine;
        rowStats[2 * static_cast<int64_t>(anchorRows) + i] = anchored && bestPositive >= bestNegative ? 1.f : 0.f;
        reinterpret_cast<float2*>(rowSoftmax)[i] =
            anchored ? make_float2(static_cast<float>(lse), static_cast<float>(1.0 / count)) : make_float2(INFINITY, 0.f);
        if (rowState != nullptr) {
            const double natural = lse * kLn2;
            const float high = anchored ? static_cast<float>(natural) : INFINITY;
            rowState[3 * i] = high;
            rowState[3 * i + 1] = anchored ? static_cast<float>(natural - high) : 0.f;
            rowState[3 * i + 2] = anchored ? static_cast<float>(count) : 0.f;
        }
    }
    if (anchor == nullptr) return;
    for (int f = lane; f < dim; f += NC_WARP) {
        double w = 0.0, v = 0.0;
        for (int s = 0; s < splits; ++s) {
            const int64_t slot = s * static_cast<int64_t>(anchorRows) + i;
            const float partMax = partial[slot * kFields + kMax];
            if (partMax != -INFINITY) w += weighted[slot * dim + f] * exp2(partMax - lse);
            v += positives[slot * dim + f];
        }
        anchor[i * dim + f] = anchored ? static_cast<float>(w - v / count) : 0.f;
    }
}

// rowSoftmax[r] = (L2_r, 1/|P_r|) of every row r < rows of the batch from the all-gathered row states (3 floats each,
// as combine writes them): L2 = (high + remainder) / ln2 in fp64, (+inf, 0) for a row without positives.
extern "C" __global__ void nc_masked_infonce_row_states(const float* allRowStates, int rows, float* rowSoftmax) {
    using namespace nc_masked_infonce;
    if (rows <= 0) return;
    const int64_t r = nc::global_index();
    if (r >= rows) return;
    const float count = allRowStates[3 * r + 2];
    const double natural = static_cast<double>(allRowStates[3 * r]) + allRowStates[3 * r + 1];
    reinterpret_cast<float2*>(rowSoftmax)[r] = count > 0.f
        ? make_float2(static_cast<float>(natural / kLn2), static_cast<float>(1.0 / count))
        : make_float2(INFINITY, 0.f);
}

// queueLabels[(position + r) mod capacity] = labels[r] for r < count (the host passes count <= capacity, so no two
// labels share a slot): the labels of nc_contrastive_enqueue's keys, at the same rows.
extern "C" __global__ void nc_masked_infonce_enqueue_labels(const float* labels, int count, int capacity, int position,
                                                            float* queueLabels) {
    if (count <= 0) return;
    const int64_t r = nc::global_index();
    if (r >= count) return;
    queueLabels[(position + r) % capacity] = labels[r];
}
