// Sinkhorn-Knopp codes (SwAV) and the swapped-prediction loss.
//
// Sinkhorn in the scaling form. SwAV iterates on Q = exp(S/eps)^T [K, B]; every step multiplies rows or columns by
// a factor, so after n iterations Q[b, k] = 2^(x[b, k] + lr[k] + lc[b]) with x = S log2(e)/eps. We keep the two
// log2 scaling vectors instead of rewriting Q: lr (one per prototype) and lc (one per sample), and write Q once.
//   prototype step: lr[k] <- lr[k] - log2 K - log2 sum_b 2^(x + lr + lc)   (SwAV's "rows to 1/K")
//   sample step:    lc[b] <-        - log2 B - log2 sum_k 2^(x + lr)        (SwAV's "columns to 1/B")
// SwAV's first normalisation (Q to sum 1) is a scalar that the first prototype step absorbs, so pass 0 is
// lr[k] = -log2 K - LSE_b x[b, k].
//
// Shifts and stability. A per-prototype shift of x is absorbed exactly by the first prototype step, so after pass 0
// we work with x' = (S - smax[k]) log2(e)/eps, smax[k] = max_b S[b, k] (subtracting in score units first keeps the
// dominant entries exact even when |S|/eps is huge), and lr stays small. A per-sample shift is NOT absorbed in
// finitely many iterations (the prototype step sums over samples first), so S is never shifted per row; instead each
// sample step keeps its row maximum apart: lc[b] = -M[b] + lcl[b], with y = x' + lr, M[b] = max_k y,
// lcl[b] = -log2 B - log2 sum_k 2^(y - M[b]), and Q = 2^((y - M[b]) + lcl[b]). Every log-sum-exp is max-shifted,
// so no finite scores and no eps > 0 overflow or give 0/0.
// After a sample step every entry is at most 1/B and each column's largest entry is at least 1/(K B^2) (before it,
// columns sum to 1/K, so entries are <= 1/K and rows sum to <= 1), so the prototype-step sums after the first need
// no shift: plain float sums of values in [1/(K B^2), 1/B] never overflow or vanish.
//
// Two paths, picked by the launcher (CudaBackend.Sinkhorn.cs):
//   fused: ONE cooperative launch. Each block owns a contiguous range of samples; as many of its rows as fit stay in
//          shared memory (raw fp32 scores) from pass 0 to the end, the rest stream from global (L2) every pass.
//          Pass t does the sample step of its rows (row log-sum-exp) and, with the rows still on chip, accumulates
//          the next prototype step's column sums; partial column sums per block are combined in a fixed order after
//          a grid barrier (deterministic). Global traffic: S read once (+ the streamed remainder per pass), Q written
//          once.
//   multi-pass: separate launches per half-step (column partials, combine, row step, ...), for any K; also the
//          "unfused" baseline of the benchmark, and the distributed path (SwAV on several ranks): the launcher calls
//          the communicator between launches, all-gathering pass 0's per-rank (max, sum) pairs (merged by
//          nc_sinkhorn_rank_merge) and all-reducing each later prototype step's column sums (nc_sinkhorn_column_total).
// Why rows stay fp32 on chip and not bf16/fp16 to fit more of them: a 16-bit score carries S/eps with an absolute
// error of |S|/eps * 2^-8 (bf16) or 2^-11 (fp16), i.e. 8% or 1% per code at |S| = 1, eps = 0.05; the codes would no
// longer be SwAV's. Registers hold no rows either: K is a runtime size, and register arrays need compile-time bounds.
// At B = 4096, K = 3000 on an H100 (227 KiB per block) one 1024-thread block per SM keeps 11 rows of its 32 on chip
// (1452 of 4096); the other 65% (32 MB) stream each pass and mostly hit the 50 MB L2.
#include "common.cuh"

#include <cmath>
#include <cooperative_groups.h>

namespace nc_sinkhorn {

// Rows processed together by the fused kernel: one block-wide reduction serves all of them.
constexpr int kGroupRows = 4;

// 2^x with MUFU.EX2 (relative error ~2^-22); flushes results below 2^-126 to 0, which the codes can afford.
__device__ __forceinline__ float exp2_fast(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Adds 2^(v * scale) to the running sum s * 2^(m * scale) with one exponential; m is kept in the units of v, so a
// column maximum of raw scores stays exact. Starts from (m, s) = (-inf, 0); a NaN input makes s NaN, so it reaches
// the output instead of vanishing.
__device__ __forceinline__ void lse_push(float& m, float& s, float v, float scale) {
    const float d = v - m;
    const float e = exp2_fast(-fabsf(d) * scale);
    const bool up = d > 0.f;
    s = up ? fmaf(s, e, 1.f) : s + e;
    m = up ? v : m;
}

// (m, s) <- (m, s) merged with (m2, s2), in the units of lse_push. Two empty states stay empty instead of
// producing (-inf) - (-inf).
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2, float scale) {
    const float top = fmaxf(m, m2);
    if (top == -INFINITY) return;
    s = s * exp2_fast((m - top) * scale) + s2 * exp2_fast((m2 - top) * scale);
    m = top;
}

// XOR butterfly: merging is commutative in floating point, so every lane ends with the same bits.
__device__ __forceinline__ void warp_lse(float& m, float& s, float scale) {
#pragma unroll
    for (int offset = NC_WARP / 2; offset > 0; offset >>= 1) {
        const float m2 = __shfl_xor_sync(NC_FULL_MASK, m, offset);
        const float s2 = __shfl_xor_sync(NC_FULL_MASK, s, offset);
        lse_merge(m, s, m2, s2, scale);
    }
}

// Block-wide merge of R log-sum-exp states (log2 units) at once; every thread gets the results.
// blockDim.x is a multiple of 32; scratch holds 2 * R * 32 floats.
template <int R>
__device__ __forceinline__ void block_lse(float (&m)[R], float (&s)[R], float* scratch) {
    const int lane = threadIdx.x % NC_WARP, warp = threadIdx.x / NC_WARP, warps = blockDim.x / NC_WARP;
#pragma unroll
    for (int r = 0; r < R; ++r) warp_lse(m[r], s[r], 1.f);
    __syncthreads();  // scratch may still be read by the previous call
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            scratch[r * NC_WARP + warp] = m[r];
            scratch[(R + r) * NC_WARP + warp] = s[r];
        }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = lane < warps ? scratch[r * NC_WARP + lane] : -INFINITY;
        s[r] = lane < warps ? scratch[(R + r) * NC_WARP + lane] : 0.f;
        warp_lse(m[r], s[r], 1.f);
    }
}

// Combines per-part column states, 32 columns per round: warp w folds parts w, w + warps, ... (fixed order), then
// warp 0 folds the warps in order, so the result does not depend on timing. scratch holds 2 * blockDim.x floats.
// With `lse` the parts are pass 0's (score max, sum) pairs (max at [p * cols + k], sum at [(parts + p) * cols + k]):
// smax[k] = max and lr[k] = -log2 K - log2 sum. Otherwise the parts are plain sums: lr[k] = previous[k] - log2 K -
// log2 sum. Parts written by other blocks are read with ld.global.cg (L2), never from a possibly stale L1 line.
__device__ void combine_columns(const float* partials, const float* previous, float* smax, float* lr, int cols,
                                int parts, bool lse, float scale, float neg_log2_cols, float* scratch, int first_round,
                                int round_stride) {
    const int lane = threadIdx.x % NC_WARP, warp = threadIdx.x / NC_WARP, warps = blockDim.x / NC_WARP;
    const int rounds = (cols + NC_WARP - 1) / NC_WARP;
    for (int round = first_round; round < rounds; round += round_stride) {
        const int k = round * NC_WARP + lane;
        float m = -INFINITY, s = 0.f;
        if (k < cols) {
            for (int p = warp; p < parts; p += warps) {
                if (lse) {
                    lse_merge(m, s, __ldcg(partials + static_cast<int64_t>(p) * cols + k),
                              __ldcg(partials + static_cast<int64_t>(parts + p) * cols + k), scale);
                } else {
                    s += __ldcg(partials + static_cast<int64_t>(p) * cols + k);
                }
            }
        }
        __syncthreads();  // scratch may still be read by the previous round
        scratch[warp * NC_WARP + lane] = m;
        scratch[blockDim.x + warp * NC_WARP + lane] = s;
        __syncthreads();
        if (warp == 0 && k < cols) {
            float top = -INFINITY, total = 0.f;
            for (int w = 0; w < warps; ++w) {
                if (lse) {
                    lse_merge(top, total, scratch[w * NC_WARP + lane], scratch[blockDim.x + w * NC_WARP + lane], scale);
                } else {
                    total += scratch[blockDim.x + w * NC_WARP + lane];
                }
            }
            if (lse) {
                smax[k] = top;
                lr[k] = neg_log2_cols - log2f(total);
            } else {
                lr[k] = previous[k] + (neg_log2_cols - log2f(total));
            }
        }
    }
}

// y = x' + lr: the log2 exponent of Q before the sample scaling.
// One explicit fma, so every kernel (and the CPU twin's FusedMultiplyAdd) rounds it the same way.
__device__ __forceinline__ float exponent(float score, float column_max, float scale, float lr) {
    return fmaf(score - column_max, scale, lr);
}

}  // namespace nc_sinkhorn

// ---------------------------------------------------------------------------------------------------------------
// Fused path: one cooperative launch (gridDim.x blocks, all resident).
//   scores [rows, cols]; codes [rows, cols] (must not alias scores); smax, lr [cols] global scratch;
//   partials [2 * gridDim.x * cols]; scale = log2(e) / eps; cached_rows: rows per block kept in shared memory
//   (a block owning more also has kGroupRows streaming slots); neg_log2_rows = -log2 B (the plan's row sums);
//   output_offset: log2 of the output's row sums (-log2 B for the plan, 0 for SwAV's Q * B).
// Dynamic shared memory: (3 * cols + 2 * blockDim.x + slots * cols) floats, slots = cached_rows (+ kGroupRows).
extern "C" __global__ void __launch_bounds__(1024, 1) nc_sinkhorn_fused(
    const float* __restrict__ scores, float* __restrict__ codes, float* __restrict__ smax_global,
    float* __restrict__ lr_global, float* __restrict__ partials, int rows, int cols, float scale, int iterations,
    int cached_rows, float neg_log2_rows, float neg_log2_cols, float output_offset) {
    namespace ns = nc_sinkhorn;
    constexpr int R = ns::kGroupRows;
    cooperative_groups::grid_group grid = cooperative_groups::this_grid();
    extern __shared__ float smem[];
    const int threads = blockDim.x, tid = threadIdx.x;
    const int blocks = gridDim.x, block = blockIdx.x;
    float* col_max = smem;                   // column max of the scores (pass 0: of this block's rows)
    float* col_a = col_max + cols;           // pass 0: column sum-exp; later: column sums of this block
    float* col_b = col_a + cols;             // lr
    float* scratch = col_b + cols;           // 2 * threads: reductions and the combine
    float* slots = scratch + 2 * threads;    // raw score rows held on chip, then kGroupRows streaming rows
    const int row0 = static_cast<int>(static_cast<int64_t>(rows) * block / blocks);
    const int owned = static_cast<int>(static_cast<int64_t>(rows) * (block + 1) / blocks) - row0;
    const int64_t part = static_cast<int64_t>(block) * cols;
    const int64_t part_stride = static_cast<int64_t>(blocks) * cols;

    // Every thread owns columns tid, tid + threads, ... in every loop below (col_*, slot elements), so these loops
    // need no barrier between them; only the reductions and the combine share data across threads.

    // Pass 0: column (max, sum-exp) of the scores over this block's rows; cache the rows that fit.
    for (int k = tid; k < cols; k += threads) {
        col_max[k] = -INFINITY;
        col_a[k] = 0.f;
    }
    for (int i0 = 0; i0 < owned; i0 += R) {
        const int count = min(R, owned - i0);
        const float* source = scores + static_cast<int64_t>(row0 + i0) * cols;
#pragma unroll 2  // 2 x R independent loads in flight per thread
        for (int k = tid; k < cols; k += threads) {
            float v[R];
            float top = -INFINITY;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (r < count) {
                    v[r] = source[static_cast<int64_t>(r) * cols + k];
                    top = fmaxf(top, v[r]);
                    if (i0 + r < cached_rows) slots[(i0 + r) * cols + k] = v[r];
                }
            }
            const float m = col_max[k];
            const float merged = fmaxf(m, top);
            float s = col_a[k] * ns::exp2_fast((m - merged) * scale);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (r < count) s += ns::exp2_fast((v[r] - merged) * scale);
            }
            col_max[k] = merged;
            col_a[k] = s;
        }
    }
    for (int k = tid; k < cols; k += threads) {
        partials[part + k] = col_max[k];
        partials[part_stride + part + k] = col_a[k];
    }
    grid.sync();
    ns::combine_columns(partials, nullptr, smax_global, lr_global, cols, blocks, true, scale, neg_log2_cols, scratch,
                        block, blocks);

    for (int pass = 1; pass <= iterations; ++pass) {
        grid.sync();  // smax and lr are complete
        const bool last = pass == iterations;
        const float offset = last ? output_offset : neg_log2_rows;
        for (int k = tid; k < cols; k += threads) {
            col_max[k] = __ldcg(smax_global + k);
            col_b[k] = __ldcg(lr_global + k);
            col_a[k] = 0.f;
        }
        for (int i0 = 0; i0 < owned; i0 += R) {
            const int count = min(R, owned - i0);
            int slot[R];
#pragma unroll
            for (int r = 0; r < R; ++r) slot[r] = (i0 + r < cached_rows ? i0 + r : cached_rows + r) * cols;

            // Sample step: log-sum-exp over the row of y; streamed rows are loaded here and parked on chip.
            float m[R], s[R];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                m[r] = -INFINITY;
                s[r] = 0.f;
            }
#pragma unroll 2
            for (int k = tid; k < cols; k += threads) {
                const float cm = col_max[k], lr = col_b[k];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    if (r < count) {
                        float v;
                        if (i0 + r < cached_rows) {
                            v = slots[slot[r] + k];
                        } else {
                            v = scores[static_cast<int64_t>(row0 + i0 + r) * cols + k];
                            slots[slot[r] + k] = v;
                        }
                        ns::lse_push(m[r], s[r], ns::exponent(v, cm, scale, lr), 1.f);
                    }
                }
            }
            ns::block_lse<R>(m, s, scratch);
            float lcl[R];
#pragma unroll
            for (int r = 0; r < R; ++r) lcl[r] = offset - log2f(s[r]);

            // Next prototype step's column sums, or the codes in the last pass.
            for (int k = tid; k < cols; k += threads) {
                const float cm = col_max[k], lr = col_b[k];
                float sum = 0.f;
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    if (r < count) {
                        const float y = ns::exponent(slots[slot[r] + k], cm, scale, lr);
                        const float q = ns::exp2_fast((y - m[r]) + lcl[r]);
                        if (last) {
                            codes[static_cast<int64_t>(row0 + i0 + r) * cols + k] = q;
                        } else {
                            sum += q;
                        }
                    }
                }
                if (!last) col_a[k] += sum;
            }
        }
        if (!last) {
            for (int k = tid; k < cols; k += threads) partials[part + k] = col_a[k];
            grid.sync();
            ns::combine_columns(partials, col_b, nullptr, lr_global, cols, blocks, false, scale, neg_log2_cols, scratch,
                                block, blocks);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Multi-pass path: any K, one launch per half-step. Partial column states are per chunk of rows_per_chunk rows
// (grid.y = chunks) and combined in chunk order.

// Pass 0 partials: (score max, sum-exp) over each chunk's rows. grid (ceil(cols / block), chunks).
extern "C" __global__ void nc_sinkhorn_column_lse_partial(const float* __restrict__ scores, float* __restrict__ partials,
                                                          int rows, int cols, float scale, int rows_per_chunk) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const int chunk = blockIdx.y, chunks = gridDim.y;
    if (k >= cols) return;
    const int b0 = chunk * rows_per_chunk, b1 = min(rows, b0 + rows_per_chunk);
    float m = -INFINITY, s = 0.f;
#pragma unroll 4
    for (int b = b0; b < b1; ++b) nc_sinkhorn::lse_push(m, s, scores[static_cast<int64_t>(b) * cols + k], scale);
    partials[static_cast<int64_t>(chunk) * cols + k] = m;
    partials[static_cast<int64_t>(chunks + chunk) * cols + k] = s;
}

// lse == 1: smax[k], lr[k] from the chunks' (max, sum) pairs; lse == 2 (distributed): the same merge, but this
// rank's pair is written as it is, smax[k] = max and lr[k] = sum, for the all-gather and nc_sinkhorn_rank_merge;
// lse == 0: lr[k] += -log2 K - log2 of the chunks' sums.
extern "C" __global__ void nc_sinkhorn_column_combine(const float* __restrict__ partials, float* __restrict__ smax,
                                                      float* __restrict__ lr, int cols, int chunks, int lse, float scale,
                                                      float neg_log2_cols) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= cols) return;
    if (lse) {
        float m = -INFINITY, s = 0.f;
#pragma unroll 8  // independent loads in flight; the chunk loop is short but latency-bound
        for (int c = 0; c < chunks; ++c) {
            nc_sinkhorn::lse_merge(m, s, partials[static_cast<int64_t>(c) * cols + k],
                                   partials[static_cast<int64_t>(chunks + c) * cols + k], scale);
        }
        smax[k] = m;
        lr[k] = lse == 2 ? s : neg_log2_cols - log2f(s);
    } else {
        float total = 0.f;
#pragma unroll 8
        for (int c = 0; c < chunks; ++c) total += partials[static_cast<int64_t>(c) * cols + k];
        lr[k] = lr[k] + (neg_log2_cols - log2f(total));
    }
}

// Distributed pass 0: smax[k], lr[k] from every rank's (max, sum) pair, all-gathered rank by rank into
// gathered [ranks, 2, cols] (max at [2r * cols + k], sum at [(2r + 1) * cols + k]) and merged in rank order, as the
// CPU twin does. gathered must not alias smax or lr (the workspace pair it was gathered from).
extern "C" __global__ void nc_sinkhorn_rank_merge(const float* __restrict__ gathered, float* __restrict__ smax,
                                                  float* __restrict__ lr, int cols, int ranks, float scale,
                                                  float neg_log2_cols) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= cols) return;
    float m = -INFINITY, s = 0.f;
    for (int r = 0; r < ranks; ++r) {
        nc_sinkhorn::lse_merge(m, s, gathered[static_cast<int64_t>(2 * r) * cols + k],
                               gathered[static_cast<int64_t>(2 * r + 1) * cols + k], scale);
    }
    smax[k] = m;
    lr[k] = neg_log2_cols - log2f(s);
}

// Distributed prototype step: totals[k] = this rank's column sums, the chunks' partials added in chunk order, to be
// all-reduced and then applied by nc_sinkhorn_column_combine (plain, one chunk). totals must not alias the partials
// read here (the launcher points it past them).
extern "C" __global__ void nc_sinkhorn_column_total(const float* __restrict__ partials, float* __restrict__ totals,
                                                    int cols, int chunks) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= cols) return;
    float total = 0.f;
#pragma unroll 8
    for (int c = 0; c < chunks; ++c) total += partials[static_cast<int64_t>(c) * cols + k];
    totals[k] = total;
}

// Sample step, one block per row: lc_max[b] = max_k y, lc_log[b] = offset - log2 sum_k 2^(y - max). With
// codes != null it also writes codes[b, k] = 2^((y - max) + lc_log) (the row is read again, from L1/L2).
extern "C" __global__ void nc_sinkhorn_row_step(const float* __restrict__ scores, const float* __restrict__ smax,
                                                const float* __restrict__ lr, float* __restrict__ lc_max,
                                                float* __restrict__ lc_log, float* __restrict__ codes, int cols,
                                                float scale, float offset) {
    __shared__ float scratch[2 * NC_WARP];
    const int64_t row = static_cast<int64_t>(blockIdx.x) * cols;
    float m[1] = {-INFINITY}, s[1] = {0.f};
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        nc_sinkhorn::lse_push(m[0], s[0], nc_sinkhorn::exponent(scores[row + k], smax[k], scale, lr[k]), 1.f);
    }
    nc_sinkhorn::block_lse<1>(m, s, scratch);
    const float log_part = offset - log2f(s[0]);
    if (threadIdx.x == 0) {
        lc_max[blockIdx.x] = m[0];
        lc_log[blockIdx.x] = log_part;
    }
    if (codes != nullptr) {
        for (int k = threadIdx.x; k < cols; k += blockDim.x) {
            const float y = nc_sinkhorn::exponent(scores[row + k], smax[k], scale, lr[k]);
            codes[row + k] = nc_sinkhorn::exp2_fast((y - m[0]) + log_part);
        }
    }
}

// Prototype-step partials: sum over each chunk's rows of 2^((y - lc_max) + lc_log). grid (ceil(cols / block), chunks).
extern "C" __global__ void nc_sinkhorn_column_sum_partial(const float* __restrict__ scores, const float* __restrict__ smax,
                                                          const float* __restrict__ lr, const float* __restrict__ lc_max,
                                                          const float* __restrict__ lc_log, float* __restrict__ partials,
                                                          int rows, int cols, float scale, int rows_per_chunk) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const int chunk = blockIdx.y;
    if (k >= cols) return;
    const int b0 = chunk * rows_per_chunk, b1 = min(rows, b0 + rows_per_chunk);
    const float cm = smax[k], l = lr[k];
    float sum = 0.f;
#pragma unroll 4
    for (int b = b0; b < b1; ++b) {
        const float y = nc_sinkhorn::exponent(scores[static_cast<int64_t>(b) * cols + k], cm, scale, l);
        sum += nc_sinkhorn::exp2_fast((y - lc_max[b]) + lc_log[b]);
    }
    partials[static_cast<int64_t>(chunk) * cols + k] = sum;
}

// ---------------------------------------------------------------------------------------------------------------
// Swapped prediction: per_sample[b] = -sum_k q[b, k] log softmax(p[b, :] / tau)[k], and optionally
// gradient[b, k] (+)= grad_scale * (softmax_k * sum_k q - q[b, k]) with grad_scale = weight / (B tau).
// One block per row; the row is read twice (the second time from L1/L2). scale2 = log2(e) / tau.
extern "C" __global__ void nc_sinkhorn_swapped_rows(const float* __restrict__ scores, const float* __restrict__ codes,
                                                    float* __restrict__ per_sample, float* __restrict__ gradient,
                                                    int cols, float scale2, float grad_scale, int accumulate) {
    __shared__ float scratch[2 * NC_WARP];
    __shared__ float sum_scratch[NC_WARP];
    const int64_t row = static_cast<int64_t>(blockIdx.x) * cols;
    const float* p = scores + row;
    const float* q = codes + row;
    float m[1] = {-INFINITY}, s[1] = {0.f};
    float code_sum = 0.f;
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        nc_sinkhorn::lse_push(m[0], s[0], p[k] * scale2, 1.f);
        code_sum += q[k];
    }
    nc_sinkhorn::block_lse<1>(m, s, scratch);
    code_sum = nc::block_sum(code_sum, sum_scratch);
    const float lse2 = m[0] + log2f(s[0]);
    float loss2 = 0.f;  // in log2 units
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        const float x = p[k] * scale2;
        const float c = q[k];
        loss2 = fmaf(c, lse2 - x, loss2);
        if (gradient != nullptr) {
            const float g = grad_scale * fmaf(nc_sinkhorn::exp2_fast(x - lse2), code_sum, -c);
            gradient[row + k] = accumulate ? gradient[row + k] + g : g;
        }
    }
    loss2 = nc::block_sum(loss2, sum_scratch);
    if (threadIdx.x == 0) per_sample[blockIdx.x] = loss2 * 0.69314718055994531f;
}

// loss[0] (+)= weight * mean(per_sample). One block; a fixed reduction order, so the result is reproducible.
extern "C" __global__ void nc_sinkhorn_swapped_mean(const float* __restrict__ per_sample, float* __restrict__ loss,
                                                    int rows, float weight, int accumulate) {
    __shared__ float scratch[NC_WARP];
    float sum = 0.f;
    for (int b = threadIdx.x; b < rows; b += blockDim.x) sum += per_sample[b];
    sum = nc::block_sum(sum, scratch);
    if (threadIdx.x == 0) loss[0] = (accumulate ? loss[0] : 0.f) + weight * (sum / static_cast<float>(rows));
}
