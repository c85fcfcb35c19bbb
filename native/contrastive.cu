// Fused contrastive losses: NT-Xent (SimCLR) and InfoNCE against a key queue (MoCo v2, PiCO).
//
// Both losses are "similarity GEMM + row-wise log-sum-exp (+ a second GEMM for the gradient)", so they share one
// warp-level engine modelled on FlashAttention-2:
//   * a block owns a tile of 128 rows (4 warps x 32 rows; 64 rows at 256 features) and sweeps a range of column
//     tiles (BN rows of the other operand), double-buffered in shared memory with cp.async; the row tile stays
//     resident for the whole sweep;
//   * each warp computes its 32 x BN similarity tile with mma.sync (TF32 m16n8k8 or BF16 m16n8k16, fp32
//     accumulation; the fp32 mode splits every operand into two TF32 halves, "3xTF32", fp32-accurate on tensor
//     cores), whose documented fragment layout lets the epilogue run in registers;
//   * the epilogue turns similarities into exp-weights in registers and, where the gradient needs it, feeds them
//     straight back into a second mma (weights x the same column tile) that accumulates a 32 x DP block per warp.
// The column range is split across blocks (grid.y) when the row tiles alone cannot fill the GPU; every split writes
// its own partial (max, sum[, weighted rows]) and a small combine kernel merges them in a fixed order, so nothing
// uses atomics and every result is deterministic. No kernel ever materialises a rows x columns matrix.
//
// Operands live in "operand buffers": rows padded to a multiple of 128 with zero rows, columns padded to DP
// (64, 128 or 256) with zeros, stored as fp32 (fp32 mode), fp32 rounded to TF32 (tf32 mode) or bf16 (bf16 mode).
// Logits are kept in base-2 units: x = cos * log2(e) / tau, so every exponential is one ex2.approx.
//
// NT-Xent, z [2N, d] (rows i and (i + N) mod 2N are positives), zn = z / |z|, s_ij = zn_i . zn_j:
//   L2_i  = log2 sum_{j != i} 2^(x_ij)                       (forward: per-split online max/sum, then combine)
//   loss  = ln2 * mean_i (L2_i - x_{i,p(i)})
//   dL/dzn_i = 1/(2N tau) * [ sum_{j != i} (P_ij + P_ji) zn_j - 2 zn_p(i) ],  P_ij = 2^(x_ij - L2_i)
// S is symmetric, so P_ji = 2^(x_ij - L2_j): the backward recomputes the tile, weighs it by both row and column
// log-sum-exps and accumulates W zn_J for its own rows only - the transposed term needs no second pass.
// Data-parallel, z holds every rank's rows (gathered) and a rank's kernels take only its shard as anchor rows: rows
// [rowOffset, rowOffset + anchorRows) of z, staged from their own operand buffer, against all `columns` rows of z as
// columns; positives pair inside the shard (its views a then b), self is column rowOffset + row, and the backward reads
// every column's L2 (all-gathered between the passes). Without a shard both operands are one and rowOffset is 0.
//
// InfoNCE, q [B, d], k [B, d], queue [K, d] of normalised keys: logits [q.k, q.queue^T] / tau, positive first.
// One sweep over the queue keeps, per (row, split), an online max/sum and the softmax-weighted sum of queue rows
// (FlashAttention's O = P V with V = the queue), so the gradient dq costs no second read of the queue.
#include "common.cuh"

#include <cuda_bf16.h>

namespace nc_contrastive {

enum class Format : int { Fp32 = 0, Tf32 = 1, Bf16 = 2 };

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * NC_WARP;
constexpr int kMaxBlockRows = 128;  // operand buffers are padded to a multiple of this many rows
constexpr float kLn2 = 0.693147180559945309f;
constexpr float kNormEps = 1e-12f;  // as L2NormalizeRows: y = x / max(|x|, eps)
constexpr int kMaxDimPerLane = 8;   // warp-per-row kernels hold up to 256 features in registers

template <Format F> struct Elem { using T = float; };
template <> struct Elem<Format::Bf16> { using T = __nv_bfloat16; };

// Tile geometry of one (format, padded dim) pair; the host mirrors every constant here (CudaBackend.Contrastive.cs).
template <Format F, int DP> struct Tiling {
    using T = typename Elem<F>::T;
    static constexpr bool kBf16 = F == Format::Bf16;
    // m16 tiles per warp. With two (32 rows) every B fragment read from shared memory feeds two mma, which takes
    // the loads per mma from 2.25 to 1.5 in the backward; at DP = 256 the 16 x 256 fp32 accumulator of the second
    // product already takes 128 registers, so warps keep one tile there.
    static constexpr int kWarpTiles = DP == 256 ? 1 : 2;
    static constexpr int kWarpRows = 16 * kWarpTiles;
    static constexpr int kBlockRows = kWarps * kWarpRows;
    // Column tile of the NT-Xent kernels: the resident row tile plus two column tiles must leave room for two
    // blocks per SM on Hopper (fp32 operands at DP = 128: (128 + 2 * 32) rows * 528 B = 99 KiB).
    static constexpr int kColTile = DP == 64 ? 64 : 32;
    // The InfoNCE sweep also rescales its accumulator every tile; narrower column tiles keep it within 255
    // registers without spilling where the accumulator is large (DP = 256) or the operands are split (fp32 mode).
    static constexpr int kSweepColTile = F == Format::Fp32 ? (DP == 256 ? 8 : DP == 128 ? 16 : kColTile)
                                                           : (DP == 256 ? 16 : kColTile);
    // Row stride in shared memory (elements). The padding (16 bytes) makes every fragment load conflict-free:
    // fp32 stride = 4 mod 32 words; bf16 stride = DP/2 + 4 words with DP/8 even, so ldmatrix rows hit
    // distinct 16-byte bank groups.
    static constexpr int kStride = DP + (kBf16 ? 8 : 4);
    static constexpr int kChunksPerRow = DP * static_cast<int>(sizeof(T)) / 16;
    static constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(T));
    static_assert(DP % 64 == 0, "padded dim must be a multiple of 64");
    static_assert(kBlockRows <= kMaxBlockRows, "operand buffers are padded to kMaxBlockRows rows");
};

// ---------------------------------------------------------------------------------------------------------------
// PTX wrappers (sm_80+): cp.async, ldmatrix, mma.sync, cvt to TF32, ex2.approx.

__device__ __forceinline__ void cp_async16(void* shared, const void* global) {
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int Pending> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* shared) {
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* shared) {
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// D += A(16x8, row) * B(8x8, col), TF32 in, fp32 accumulate.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D += A(16x16, row) * B(16x8, col), BF16 in, fp32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Round to nearest (ties away) TF32, as a 32-bit pattern with the low 13 mantissa bits cleared.
__device__ __forceinline__ uint32_t to_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ uint32_t pack_bf16(float low, float high) {
    __nv_bfloat162 v = __floats2bfloat162_rn(low, high);
    return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x on the special-function unit (about 2 ulp); 2^-inf = 0, results below 2^-126 flush to zero.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---------------------------------------------------------------------------------------------------------------
// Operand fragments for the TF32 formats. Tf32 passes pre-rounded values through (or rounds computed ones);
// Fp32 splits x = hi + lo into two TF32 numbers and multiplies with three mma (lo*hi, hi*lo, hi*hi): the dropped
// lo*lo term is 2^-22 relative, so products are as accurate as fp32 FMAs.

template <Format F, int N> struct Tf32Fragment {
    uint32_t hi[N];
    uint32_t lo[N];
};

template <Format F, bool Round, int N>
__device__ __forceinline__ Tf32Fragment<F, N> make_fragment(const float (&x)[N]) {
    Tf32Fragment<F, N> f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        if constexpr (F == Format::Fp32) {
            f.hi[i] = to_tf32(x[i]);
            f.lo[i] = to_tf32(x[i] - __uint_as_float(f.hi[i]));
        } else {
            f.hi[i] = Round ? to_tf32(x[i]) : __float_as_uint(x[i]);
            f.lo[i] = 0;
        }
    }
    return f;
}

template <Format F>
__device__ __forceinline__ void mma_k8(float (&d)[4], const Tf32Fragment<F, 4>& a, const Tf32Fragment<F, 2>& b) {
    if constexpr (F == Format::Fp32) {
        const uint32_t alo[4] = {a.lo[0], a.lo[1], a.lo[2], a.lo[3]};
        const uint32_t ahi[4] = {a.hi[0], a.hi[1], a.hi[2], a.hi[3]};
        mma_tf32(d, alo, b.hi[0], b.hi[1]);
        mma_tf32(d, ahi, b.lo[0], b.lo[1]);
        mma_tf32(d, ahi, b.hi[0], b.hi[1]);
    } else {
        const uint32_t ahi[4] = {a.hi[0], a.hi[1], a.hi[2], a.hi[3]};
        mma_tf32(d, ahi, b.hi[0], b.hi[1]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tile staging: ROWS rows of an operand buffer (row stride DP) into shared memory (row stride kStride).
// Operand buffers are padded to whole 64-row tiles, so no load needs a bounds check.

template <Format F, int DP, int ROWS>
__device__ __forceinline__ void stage_rows(typename Elem<F>::T* shared, const typename Elem<F>::T* global,
                                           int64_t firstRow) {
    using Tl = Tiling<F, DP>;
    constexpr int kChunks = ROWS * Tl::kChunksPerRow;
    static_assert(kChunks % kThreads == 0, "tile must split evenly over the block");
    const typename Elem<F>::T* source = global + firstRow * DP;
#pragma unroll
    for (int k = 0; k < kChunks / kThreads; ++k) {
        const int chunk = threadIdx.x + k * kThreads;
        const int row = chunk / Tl::kChunksPerRow;
        const int column = (chunk % Tl::kChunksPerRow) * Tl::kElemsPerChunk;
        cp_async16(shared + row * Tl::kStride + column, source + static_cast<int64_t>(row) * DP + column);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Warp-level GEMMs. A warp owns MT m16 tiles (rows 16 mt .. 16 mt + 15 of its slab).
//
// similarity_tile: s[mt][n][.] = Q(rows of tile mt) . K(column tile)^T, accumulator fragments of m16n8 tiles:
//   s[mt][n][0] = (row g, col 8n + 2t), [1] = (g, 8n + 2t + 1), [2] = (g + 8, 8n + 2t), [3] = (g + 8, 8n + 2t + 1)
// with g = lane / 4, t = lane % 4.

template <Format F, int DP, int BN, int MT>
__device__ __forceinline__ void similarity_tile(const typename Elem<F>::T* sQ, const typename Elem<F>::T* sK,
                                                float (&s)[MT][BN / 8][4], int lane) {
    using Tl = Tiling<F, DP>;
    constexpr int S = Tl::kStride;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
    }
    if constexpr (F == Format::Bf16) {
#pragma unroll
        for (int k0 = 0; k0 < DP; k0 += 16) {
            uint32_t a[MT][4];
#pragma unroll
            for (int m = 0; m < MT; ++m) ldmatrix_x4(a[m], sQ + (m * 16 + (lane & 15)) * S + k0 + (lane >> 4) * 8);
#pragma unroll
            for (int n = 0; n < BN / 8; n += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, sK + (n * 8 + (lane & 7) + (lane >> 4) * 8) * S + k0 + ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    mma_bf16(s[m][n], a[m], b[0], b[1]);
                    mma_bf16(s[m][n + 1], a[m], b[2], b[3]);
                }
            }
        }
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll 8
        for (int k0 = 0; k0 < DP; k0 += 8) {
            Tf32Fragment<F, 4> a[MT];
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const float* q = sQ + (m * 16 + g) * S + k0 + t;
                const float af[4] = {q[0], q[8 * S], q[4], q[8 * S + 4]};
                a[m] = make_fragment<F, false>(af);
            }
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) {
                const float* kRow = sK + (n * 8 + g) * S + k0 + t;
                const float bf[2] = {kRow[0], kRow[4]};
                const auto b = make_fragment<F, false>(bf);
#pragma unroll
                for (int m = 0; m < MT; ++m) mma_k8<F>(s[m][n], a[m], b);
            }
        }
    }
}

// accumulate_weighted_rows: acc[mt](16 x DP) += W[mt](16 x BN, accumulator layout) . K(column tile, BN x DP).
// BF16: two accumulator tiles are exactly one m16n8k16 A fragment (FlashAttention-2's P.V trick); K is read
// transposed with ldmatrix.trans. TF32: the m16n8k8 A fragment wants columns (t, t + 4) where the accumulator
// holds (2t, 2t + 1), so the k index is permuted (logical t <-> column 2t, t + 4 <-> 2t + 1) in both operands;
// a sum over k does not care about its order. Every B fragment serves all MT tiles.
template <Format F, int DP, int BN, int MT>
__device__ __forceinline__ void accumulate_weighted_rows(const float (&w)[MT][BN / 8][4],
                                                         const typename Elem<F>::T* sK, float (&acc)[MT][DP / 8][4],
                                                         int lane) {
    using Tl = Tiling<F, DP>;
    constexpr int S = Tl::kStride;
    if constexpr (F == Format::Bf16) {
#pragma unroll
        for (int kb = 0; kb < BN / 16; ++kb) {
            uint32_t a[MT][4];
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                a[m][0] = pack_bf16(w[m][2 * kb][0], w[m][2 * kb][1]);
                a[m][1] = pack_bf16(w[m][2 * kb][2], w[m][2 * kb][3]);
                a[m][2] = pack_bf16(w[m][2 * kb + 1][0], w[m][2 * kb + 1][1]);
                a[m][3] = pack_bf16(w[m][2 * kb + 1][2], w[m][2 * kb + 1][3]);
            }
            const typename Elem<F>::T* rows = sK + (kb * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + (lane >> 4) * 8;
#pragma unroll
            for (int n = 0; n < DP / 8; n += 2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, rows + n * 8);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    mma_bf16(acc[m][n], a[m], b[0], b[1]);
                    mma_bf16(acc[m][n + 1], a[m], b[2], b[3]);
                }
            }
        }
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int kb = 0; kb < BN / 8; ++kb) {
            Tf32Fragment<F, 4> a[MT];
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                const float af[4] = {w[m][kb][0], w[m][kb][2], w[m][kb][1], w[m][kb][3]};
                a[m] = make_fragment<F, true>(af);
            }
            const float* kRows = sK + (kb * 8 + 2 * t) * S + g;
#pragma unroll
            for (int n = 0; n < DP / 8; ++n) {
                const float bf[2] = {kRows[n * 8], kRows[S + n * 8]};
                const auto b = make_fragment<F, false>(bf);
#pragma unroll
                for (int m = 0; m < MT; ++m) mma_k8<F>(acc[m][n], a[m], b);
            }
        }
    }
}

// Merges the (max, sum) states of the four threads of a quad (they share rows, each saw a quarter of the columns).
__device__ __forceinline__ void quad_merge(float& runMax, float& runSum) {
#pragma unroll
    for (int offset = 1; offset <= 2; offset <<= 1) {
        const float otherMax = __shfl_xor_sync(NC_FULL_MASK, runMax, offset);
        const float otherSum = __shfl_xor_sync(NC_FULL_MASK, runSum, offset);
        const float newMax = fmaxf(runMax, otherMax);
        runSum = runSum * fast_exp2(runMax - newMax) + otherSum * fast_exp2(otherMax - newMax);
        runMax = newMax;
    }
}

// A running sum with Neumaier's compensation: `sum` plus `carry` holds the exact total to about one rounding, however
// many small terms follow large ones (with one split, a thread adds tens of thousands of exponentials; plain fp32
// would absorb every term below half an ulp of the sum). Explicit _rn intrinsics keep the compiler from contracting
// or reordering the compensation away.
struct CompensatedSum {
    float sum = 0.f;
    float carry = 0.f;

    __device__ __forceinline__ void add(float term) {
        const float total = __fadd_rn(sum, term);
        const float lost = fabsf(sum) >= fabsf(term) ? __fadd_rn(__fsub_rn(sum, total), term)
                                                     : __fadd_rn(__fsub_rn(term, total), sum);
        carry = __fadd_rn(carry, lost);
        sum = total;
    }

    // Both parts rescaled when the running maximum moves.
    __device__ __forceinline__ void scale(float factor) {
        sum = __fmul_rn(sum, factor);
        carry = __fmul_rn(carry, factor);
    }

    __device__ __forceinline__ float value() const { return __fadd_rn(sum, carry); }
};

// Column tiles [begin, end) of split blockIdx.y.
__device__ __forceinline__ void split_range(int columns, int columnTile, int tilesPerSplit, int& begin, int& end) {
    const int tiles = (columns + columnTile - 1) / columnTile;
    begin = blockIdx.y * tilesPerSplit;
    end = min(begin + tilesPerSplit, tiles);
}

// The host computes the launch geometry from its own copy of these constants. A mismatch must stop the kernel
// (an illegal-instruction error naming it) rather than read past shared memory or skip rows.
template <Format F, int DP>
__device__ __forceinline__ void check_launch(int rows, int columns, int columnTile, int tilesPerSplit) {
    using Tl = Tiling<F, DP>;
    unsigned dynamicShared;
    asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dynamicShared));
    const unsigned needed = (Tl::kBlockRows + 2 * columnTile) * Tl::kStride * static_cast<unsigned>(sizeof(typename Tl::T));
    const int rowsPadded = (rows + kMaxBlockRows - 1) / kMaxBlockRows * kMaxBlockRows;
    const int tiles = (columns + columnTile - 1) / columnTile;
    if (dynamicShared < needed || blockDim.x != kThreads || static_cast<int>(gridDim.x) * Tl::kBlockRows != rowsPadded ||
        static_cast<int64_t>(gridDim.y) * tilesPerSplit < tiles || static_cast<int64_t>(gridDim.y - 1) * tilesPerSplit >= tiles) {
        __trap();
    }
}

// The rows this thread's accumulator elements belong to: row[mt][h] holds elements 2h, 2h + 1 of tile mt.
template <int MT> struct ThreadRows {
    int row[MT][2];
    __device__ __forceinline__ ThreadRows(int rowBase, int warp, int g) {
#pragma unroll
        for (int m = 0; m < MT; ++m) {
            row[m][0] = rowBase + warp * 16 * MT + m * 16 + g;
            row[m][1] = row[m][0] + 8;
        }
    }
};

// ---------------------------------------------------------------------------------------------------------------
// NT-Xent forward: per (row, split) the online max and sum of 2^x over the split's columns, self excluded, and the
// positive's cosine for the row whose partner falls in this split.
//   partial[split][row] = (max, sum)   (float2)          positive[row] = s_{row, p(row)}
template <Format F, int DP>
__device__ __forceinline__ void ntxent_forward(unsigned char* shared, const typename Elem<F>::T* __restrict__ rowOperand,
                                               const typename Elem<F>::T* __restrict__ operand, int anchorRows,
                                               int columns, int rowOffset, float logitScale, int tilesPerSplit,
                                               float* __restrict__ partial, float* __restrict__ positive) {
    using Tl = Tiling<F, DP>;
    using T = typename Tl::T;
    constexpr int BN = Tl::kColTile, S = Tl::kStride, MT = Tl::kWarpTiles, BR = Tl::kBlockRows;
    T* sQ = reinterpret_cast<T*>(shared);
    T* sK = sQ + BR * S;

    check_launch<F, DP>(anchorRows, columns, BN, tilesPerSplit);
    const int warp = threadIdx.x / NC_WARP, lane = threadIdx.x % NC_WARP, g = lane >> 2, t = lane & 3;
    const int rowBase = blockIdx.x * BR;
    int tileBegin, tileEnd;
    split_range(columns, BN, tilesPerSplit, tileBegin, tileEnd);

    stage_rows<F, DP, BR>(sQ, rowOperand, rowBase);
    stage_rows<F, DP, BN>(sK, operand, static_cast<int64_t>(tileBegin) * BN);
    cp_async_commit();

    const int half = anchorRows / 2;
    const ThreadRows<MT> mine(rowBase, warp, g);
    float runMax[MT][2];
    CompensatedSum runSum[MT][2];
#pragma unroll
    for (int m = 0; m < MT; ++m) runMax[m][0] = runMax[m][1] = -FLT_MAX;

    for (int tile = tileBegin; tile < tileEnd; ++tile) {
        const int buffer = (tile - tileBegin) & 1;
        if (tile + 1 < tileEnd) stage_rows<F, DP, BN>(sK + (buffer ^ 1) * BN * S, operand, static_cast<int64_t>(tile + 1) * BN);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        float s[MT][BN / 8][4];
        similarity_tile<F, DP, BN, MT>(sQ + warp * Tl::kWarpRows * S, sK + buffer * BN * S, s, lane);

        const int column0 = tile * BN + 2 * t;
#pragma unroll
        for (int m = 0; m < MT; ++m) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = mine.row[m][h];
                const int self = rowOffset + row;
                const int partner = rowOffset + (row < half ? row + half : row - half);
                float tileMax = -INFINITY;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int column = column0 + n * 8 + e;
                        float& v = s[m][n][2 * h + e];
                        if (column == partner && row < anchorRows) positive[row] = v;
                        // Rounded product, not an FMA: the combine kernel recomputes the positive's logit the same
                        // way, so "positive is the row maximum" is an exact comparison.
                        v = (column < columns && column != self) ? __fmul_rn(v, logitScale) : -INFINITY;
                        tileMax = fmaxf(tileMax, v);
                    }
                }
                const float newMax = fmaxf(runMax[m][h], tileMax);
                // The tile's few terms are summed first, then the tile sum joins the compensated running sum.
                float tileSum = 0.f;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
                    tileSum += fast_exp2(s[m][n][2 * h] - newMax) + fast_exp2(s[m][n][2 * h + 1] - newMax);
                }
                runSum[m][h].scale(fast_exp2(runMax[m][h] - newMax));
                runSum[m][h].add(tileSum);
                runMax[m][h] = newMax;
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float rowSum = runSum[m][h].value();
            quad_merge(runMax[m][h], rowSum);
            const int row = mine.row[m][h];
            if (t == 0 && row < anchorRows) {
                reinterpret_cast<float2*>(partial)[static_cast<int64_t>(blockIdx.y) * anchorRows + row] =
                    make_float2(runMax[m][h], rowSum);
            }
        }
    }
}

// Writes a warp's accumulator rows [mt][h] to out + row * DP (rows at or beyond `rows` are padding).
template <int DP, int MT>
__device__ __forceinline__ void store_rows(const float (&acc)[MT][DP / 8][4], const ThreadRows<MT>& mine, int rows,
                                           float* out, int t) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if (mine.row[m][h] >= rows) continue;
            float* row = out + static_cast<int64_t>(mine.row[m][h]) * DP + 2 * t;
#pragma unroll
            for (int n = 0; n < DP / 8; ++n) {
                *reinterpret_cast<float2*>(row + n * 8) = make_float2(acc[m][n][2 * h], acc[m][n][2 * h + 1]);
            }
        }
    }
}

// NT-Xent backward: for each anchor row of this block, sum over the split's columns of (P_ij + P_ji) zn_j, written
// to gradPartial[split][row][0, DP) (anchorRowsPadded rows per split). lse2 holds the base-2 log-sum-exps of every
// column (columns padded to kMaxBlockRows entries; the column values are read through L1, each quad reading the same
// 8 bytes); an anchor row's own is lse2[rowOffset + row].
template <Format F, int DP>
__device__ __forceinline__ void ntxent_backward(unsigned char* shared, const typename Elem<F>::T* __restrict__ rowOperand,
                                                const typename Elem<F>::T* __restrict__ operand,
                                                const float* __restrict__ lse2, int anchorRows, int anchorRowsPadded,
                                                int columns, int rowOffset, float logitScale, int tilesPerSplit,
                                                float* __restrict__ gradPartial) {
    using Tl = Tiling<F, DP>;
    using T = typename Tl::T;
    constexpr int BN = Tl::kColTile, S = Tl::kStride, MT = Tl::kWarpTiles, BR = Tl::kBlockRows;
    T* sQ = reinterpret_cast<T*>(shared);
    T* sK = sQ + BR * S;

    check_launch<F, DP>(anchorRows, columns, BN, tilesPerSplit);
    const int warp = threadIdx.x / NC_WARP, lane = threadIdx.x % NC_WARP, g = lane >> 2, t = lane & 3;
    const int rowBase = blockIdx.x * BR;
    int tileBegin, tileEnd;
    split_range(columns, BN, tilesPerSplit, tileBegin, tileEnd);

    stage_rows<F, DP, BR>(sQ, rowOperand, rowBase);
    stage_rows<F, DP, BN>(sK, operand, static_cast<int64_t>(tileBegin) * BN);
    cp_async_commit();

    const ThreadRows<MT> mine(rowBase, warp, g);
    float rowLse[MT][2];
    float acc[MT][DP / 8][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        // Padding rows of a shard may lie past the last column's entry: they read the last anchor row's (their sums
        // are not stored).
        rowLse[m][0] = __ldg(lse2 + rowOffset + min(mine.row[m][0], anchorRows - 1));
        rowLse[m][1] = __ldg(lse2 + rowOffset + min(mine.row[m][1], anchorRows - 1));
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
    }

    for (int tile = tileBegin; tile < tileEnd; ++tile) {
        const int buffer = (tile - tileBegin) & 1;
        if (tile + 1 < tileEnd) stage_rows<F, DP, BN>(sK + (buffer ^ 1) * BN * S, operand, static_cast<int64_t>(tile + 1) * BN);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        float s[MT][BN / 8][4];
        similarity_tile<F, DP, BN, MT>(sQ + warp * Tl::kWarpRows * S, sK + buffer * BN * S, s, lane);

        const int column0 = tile * BN + 2 * t;
        // Self is compared in the shard's row numbering: one subtraction per tile, no per-row registers.
        const int shardColumn0 = column0 - rowOffset;
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
            const float2 lseJ = __ldg(reinterpret_cast<const float2*>(lse2 + column0 + n * 8));
#pragma unroll
            for (int m = 0; m < MT; ++m) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int column = column0 + n * 8 + e;
                        const float x = s[m][n][2 * h + e] * logitScale;
                        const float w = fast_exp2(x - rowLse[m][h]) + fast_exp2(x - (e == 0 ? lseJ.x : lseJ.y));
                        s[m][n][2 * h + e] = (column < columns && shardColumn0 + n * 8 + e != mine.row[m][h]) ? w : 0.f;
                    }
                }
            }
        }
        accumulate_weighted_rows<F, DP, BN, MT>(s, sK + buffer * BN * S, acc, lane);
        __syncthreads();
    }

    store_rows<DP, MT>(acc, mine, anchorRows, gradPartial + static_cast<int64_t>(blockIdx.y) * anchorRowsPadded * DP, t);
}

// InfoNCE sweep over the queue: per (row, split) the online max/sum of 2^x over the split's queue rows and the
// correspondingly scaled sum of 2^(x - max) * key. The row maximum must be shared by the quad (the second mma
// sums over all columns), so it is reduced across the quad every tile, as in FlashAttention-2.
//   partial[split][row] = (max, sum)      weighted[split][row][0, DP) = sum_j 2^(x_j - max) key_j
template <Format F, int DP>
__device__ __forceinline__ void infonce_sweep(unsigned char* shared, const typename Elem<F>::T* __restrict__ queries,
                                              const typename Elem<F>::T* __restrict__ keys, int batch, int queueLength,
                                              float logitScale, int tilesPerSplit, float* __restrict__ partial,
                                              float* __restrict__ weighted) {
    using Tl = Tiling<F, DP>;
    using T = typename Tl::T;
    constexpr int BN = Tl::kSweepColTile, S = Tl::kStride, MT = Tl::kWarpTiles, BR = Tl::kBlockRows;
    T* sQ = reinterpret_cast<T*>(shared);
    T* sK = sQ + BR * S;

    check_launch<F, DP>(batch, queueLength, BN, tilesPerSplit);
    const int warp = threadIdx.x / NC_WARP, lane = threadIdx.x % NC_WARP, g = lane >> 2, t = lane & 3;
    const int rowBase = blockIdx.x * BR;
    int tileBegin, tileEnd;
    split_range(queueLength, BN, tilesPerSplit, tileBegin, tileEnd);

    stage_rows<F, DP, BR>(sQ, queries, rowBase);
    stage_rows<F, DP, BN>(sK, keys, static_cast<int64_t>(tileBegin) * BN);
    cp_async_commit();

    const ThreadRows<MT> mine(rowBase, warp, g);
    float runMax[MT][2], runSum[MT][2];
    float acc[MT][DP / 8][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        runMax[m][0] = runMax[m][1] = -FLT_MAX;
        runSum[m][0] = runSum[m][1] = 0.f;
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
    }

    for (int tile = tileBegin; tile < tileEnd; ++tile) {
        const int buffer = (tile - tileBegin) & 1;
        if (tile + 1 < tileEnd) stage_rows<F, DP, BN>(sK + (buffer ^ 1) * BN * S, keys, static_cast<int64_t>(tile + 1) * BN);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();

        float s[MT][BN / 8][4];
        similarity_tile<F, DP, BN, MT>(sQ + warp * Tl::kWarpRows * S, sK + buffer * BN * S, s, lane);

        const int column0 = tile * BN + 2 * t;
#pragma unroll
        for (int m = 0; m < MT; ++m) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float tileMax = -INFINITY;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float& v = s[m][n][2 * h + e];
                        v = column0 + n * 8 + e < queueLength ? v * logitScale : -INFINITY;
                        tileMax = fmaxf(tileMax, v);
                    }
                }
                tileMax = fmaxf(tileMax, __shfl_xor_sync(NC_FULL_MASK, tileMax, 1));
                tileMax = fmaxf(tileMax, __shfl_xor_sync(NC_FULL_MASK, tileMax, 2));
                const float newMax = fmaxf(runMax[m][h], tileMax);
                const float rescale = fast_exp2(runMax[m][h] - newMax);
                float sum = runSum[m][h] * rescale;
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    acc[m][n][2 * h] *= rescale;
                    acc[m][n][2 * h + 1] *= rescale;
                }
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const float p = fast_exp2(s[m][n][2 * h + e] - newMax);
                        s[m][n][2 * h + e] = p;
                        sum += p;
                    }
                }
                runSum[m][h] = sum;
                runMax[m][h] = newMax;
            }
        }
        accumulate_weighted_rows<F, DP, BN, MT>(s, sK + buffer * BN * S, acc, lane);
        __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            runSum[m][h] += __shfl_xor_sync(NC_FULL_MASK, runSum[m][h], 1);
            runSum[m][h] += __shfl_xor_sync(NC_FULL_MASK, runSum[m][h], 2);
            const int row = mine.row[m][h];
            if (t == 0 && row < batch) {
                reinterpret_cast<float2*>(partial)[static_cast<int64_t>(blockIdx.y) * batch + row] =
                    make_float2(runMax[m][h], runSum[m][h]);
            }
        }
    }
    store_rows<DP, MT>(acc, mine, batch, weighted + static_cast<int64_t>(blockIdx.y) * batch * DP, t);
}

// Writes one value of an operand buffer in its format.
template <Format F> __device__ __forceinline__ void store_operand(void* base, int64_t index, float v) {
    if constexpr (F == Format::Bf16) {
        static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(v);
    } else if constexpr (F == Format::Tf32) {
        static_cast<float*>(base)[index] = __uint_as_float(to_tf32(v));
    } else {
        static_cast<float*>(base)[index] = v;
    }
}

__device__ __forceinline__ void store_operand(int format, void* base, int64_t index, float v) {
    if (format == static_cast<int>(Format::Bf16)) {
        store_operand<Format::Bf16>(base, index, v);
    } else if (format == static_cast<int>(Format::Tf32)) {
        store_operand<Format::Tf32>(base, index, v);
    } else {
        store_operand<Format::Fp32>(base, index, v);
    }
}

// Warp index over the grid, one warp per row.
__device__ __forceinline__ int64_t warp_row() { return nc::global_index() / NC_WARP; }

// 1 / max(|x|, eps) of a row read by one warp.
__device__ __forceinline__ float inverse_norm(const float* x, int dim, int lane) {
    float squares = 0.f;
    for (int f = lane; f < dim; f += NC_WARP) squares = fmaf(x[f], x[f], squares);
    return 1.f / fmaxf(sqrtf(nc::warp_sum(squares)), kNormEps);
}

// Sum over a block of doubles; every thread gets the result. `scratch` holds blockDim.x / 32 doubles.
__device__ __forceinline__ double block_sum_double(double v, double* scratch) {
    const int lane = threadIdx.x % NC_WARP, warp = threadIdx.x / NC_WARP, warps = blockDim.x / NC_WARP;
#pragma unroll
    for (int offset = NC_WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(NC_FULL_MASK, v, offset);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0;
#pragma unroll
    for (int offset = NC_WARP / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(NC_FULL_MASK, v, offset);
    return v;
}

}  // namespace nc_contrastive

// ===============================================================================================================
// ptxas 11.8 for sm_90 crashes (SIGSEGV) on -lineinfo PTX whose first instruction after the parameter loads lies in
// an inlined function's scope. Every entry point therefore starts with a check of its own, on a parameter.
#define NC_CONTRASTIVE_ENTRY_GUARD(count) \
    if ((count) <= 0) return

// Entry points. The tiled kernels exist per (format, padded dim): fp32 | tf32 | bf16  x  d64 | d128 | d256.

#define NC_CONTRASTIVE_TILED(FORMAT, NAME, DP)                                                                      \
    extern "C" __global__ void __launch_bounds__(nc_contrastive::kThreads)                                          \
        nc_contrastive_ntxent_forward_##NAME##_d##DP(const void* rowOperand, const void* operand, int anchorRows,  \
                                                    int columns, int rowOffset, float logitScale,                  \
                                                    int tilesPerSplit, float* partial, float* positive) {          \
        NC_CONTRASTIVE_ENTRY_GUARD(tilesPerSplit);                                                                  \
        extern __shared__ __align__(16) unsigned char shared[];                                                     \
        nc_contrastive::ntxent_forward<FORMAT, DP>(                                                                 \
            shared, static_cast<const nc_contrastive::Elem<FORMAT>::T*>(rowOperand),                                \
            static_cast<const nc_contrastive::Elem<FORMAT>::T*>(operand), anchorRows, columns, rowOffset,           \
            logitScale, tilesPerSplit, partial, positive);                                                          \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(nc_contrastive::kThreads)                                          \
        nc_contrastive_ntxent_backward_##NAME##_d##DP(const void* rowOperand, const void* operand,                 \
                                                     const float* lse2, int anchorRows, int anchorRowsPadded,      \
                                                     int columns, int rowOffset, float logitScale,                 \
                                                     int tilesPerSplit, float* gradPartial) {                      \
        NC_CONTRASTIVE_ENTRY_GUARD(tilesPerSplit);                                                                  \
        extern __shared__ __align__(16) unsigned char shared[];                                                     \
        nc_contrastive::ntxent_backward<FORMAT, DP>(shared,                                                         \
                                                    static_cast<const nc_contrastive::Elem<FORMAT>::T*>(rowOperand), \
                                                    static_cast<const nc_contrastive::Elem<FORMAT>::T*>(operand),  \
                                                    lse2, anchorRows, anchorRowsPadded, columns, rowOffset,        \
                                                    logitScale, tilesPerSplit, gradPartial);                       \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(nc_contrastive::kThreads)                                          \
        nc_contrastive_infonce_sweep_##NAME##_d##DP(const void* queries, const void* keys, int batch,              \
                                                   int queueLength, float logitScale, int tilesPerSplit,           \
                                                   float* partial, float* weighted) {                              \
        NC_CONTRASTIVE_ENTRY_GUARD(tilesPerSplit);                                                                  \
        extern __shared__ __align__(16) unsigned char shared[];                                                     \
        nc_contrastive::infonce_sweep<FORMAT, DP>(shared,                                                           \
                                                  static_cast<const nc_contrastive::Elem<FORMAT>::T*>(queries),    \
                                                  static_cast<const nc_contrastive::Elem<FORMAT>::T*>(keys), batch, \
                                                  queueLength, logitScale, tilesPerSplit, partial, weighted);      \
    }

NC_CONTRASTIVE_TILED(nc_contrastive::Format::Fp32, fp32, 64)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Fp32, fp32, 128)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Fp32, fp32, 256)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Tf32, tf32, 64)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Tf32, tf32, 128)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Tf32, tf32, 256)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Bf16, bf16, 64)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Bf16, bf16, 128)
NC_CONTRASTIVE_TILED(nc_contrastive::Format::Bf16, bf16, 256)

#undef NC_CONTRASTIVE_TILED
#undef NC_CONTRASTIVE_ENTRY_GUARD

// Rows of x [rows, dim] (optionally L2-normalised) into an operand buffer [rowsPadded, dpad] of the given format,
// zero-padded; invNorm[i] = 1 / max(|x_i|, eps) when asked. One warp per row of the padded buffer.
extern "C" __global__ void nc_contrastive_prepare_operand(const float* x, int rows, int rowsPadded, int dim,
                                                          int normalize, int format, int dpad, void* operand,
                                                          float* invNorm) {
    const int64_t i = nc_contrastive::warp_row();
    const int lane = threadIdx.x % NC_WARP;
    if (i >= rowsPadded) return;
    if (i >= rows) {
        for (int f = lane; f < dpad; f += NC_WARP) nc_contrastive::store_operand(format, operand, i * dpad + f, 0.f);
        if (invNorm != nullptr && lane == 0) invNorm[i] = 0.f;
        return;
    }
    const float* row = x + i * dim;
    const float inv = normalize ? nc_contrastive::inverse_norm(row, dim, lane) : 1.f;
    if (invNorm != nullptr && lane == 0) invNorm[i] = inv;
    for (int f = lane; f < dpad; f += NC_WARP) {
        nc_contrastive::store_operand(format, operand, i * dpad + f, f < dim ? row[f] * inv : 0.f);
    }
}

// Merges the forward's splits over the anchor rows: lse2[rowOffset + i] (base 2; lse2 is indexed by column) and
// per-row statistics rowStats = [loss_i | cos_pos_i | hit_i].
extern "C" __global__ void nc_contrastive_ntxent_combine(const float* partial, const float* positive, int rows,
                                                         int rowOffset, int splits, float logitScale, float* lse2,
                                                         float* rowStats) {
    const int64_t i = nc::global_index();
    if (i >= rows) return;
    const float2* parts = reinterpret_cast<const float2*>(partial);
    float rowMax = -FLT_MAX;
    for (int s = 0; s < splits; ++s) rowMax = fmaxf(rowMax, parts[s * static_cast<int64_t>(rows) + i].x);
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) {
        const float2 p = parts[s * static_cast<int64_t>(rows) + i];
        sum += p.y * exp2f(p.x - rowMax);
    }
    const float lse = rowMax + log2f(sum);
    const float positiveLogit = __fmul_rn(positive[i], logitScale);
    lse2[rowOffset + i] = lse;
    rowStats[i] = (lse - positiveLogit) * nc_contrastive::kLn2;
    rowStats[rows + i] = positive[i];
    rowStats[2 * static_cast<int64_t>(rows) + i] = positiveLogit >= rowMax ? 1.f : 0.f;
}

// dz from the backward's partial sums: g = gradScale / (rows tau) * (sum_splits G - 2 zn_p), dz = (g - zn <zn, g>) / |z|.
// z, invNorm and dz are the anchor rows' (a shard's rows of the gathered z: partners pair inside them).
// One warp per row; dim <= 256.
extern "C" __global__ void nc_contrastive_ntxent_finalize(const float* z, int rows, int dim, const float* invNorm,
                                                          const float* gradPartial, int splits, int rowsPadded,
                                                          int dpad, float gradFactor, float* dz) {
    using namespace nc_contrastive;
    const int64_t i = warp_row();
    const int lane = threadIdx.x % NC_WARP;
    if (i >= rows) return;
    const int half = rows / 2;
    const int64_t partner = i < half ? i + half : i - half;
    const float invI = invNorm[i], invP = invNorm[partner];
    float zn[kMaxDimPerLane], grad[kMaxDimPerLane];
    float dot = 0.f;
#pragma unroll
    for (int r = 0; r < kMaxDimPerLane; ++r) {
        const int f = lane + r * NC_WARP;
        zn[r] = grad[r] = 0.f;
        if (f < dim) {
            float sum = 0.f;
            for (int s = 0; s < splits; ++s) sum += gradPartial[(s * static_cast<int64_t>(rowsPadded) + i) * dpad + f];
            zn[r] = z[i * dim + f] * invI;
            grad[r] = gradFactor * (sum - 2.f * z[partner * dim + f] * invP);
            dot = fmaf(zn[r], grad[r], dot);
        }
    }
    dot = nc::warp_sum(dot);
#pragma unroll
    for (int r = 0; r < kMaxDimPerLane; ++r) {
        const int f = lane + r * NC_WARP;
        if (f < dim) dz[i * dim + f] = (grad[r] - zn[r] * dot) * invI;
    }
}

// Merges the InfoNCE sweep's splits with the positive logit (computed here in fp32), writes per-row statistics
// rowStats = [loss_i | cos_pos_i | hit_i] and, when dq is not null,
//   dq_n = gradFactor * (sum_j P_j key_j + (P_0 - 1) kn),  dq = (dq_n - qn <qn, dq_n>) / |q|.
// One warp per row; dim <= 256.
extern "C" __global__ void nc_contrastive_infonce_combine(const float* q, const float* k, int batch, int dim,
                                                          const float* invNormQ, const float* partial,
                                                          const float* weighted, int splits, int dpad,
                                                          float logitScale, float gradFactor, float* dq,
                                                          float* rowStats) {
    using namespace nc_contrastive;
    const int64_t i = warp_row();
    const int lane = threadIdx.x % NC_WARP;
    if (i >= batch) return;
    const float invQ = invNormQ[i];
    const float invK = inverse_norm(k + i * dim, dim, lane);
    float qn[kMaxDimPerLane], kn[kMaxDimPerLane];
    float cosine = 0.f;
#pragma unroll
    for (int r = 0; r < kMaxDimPerLane; ++r) {
        const int f = lane + r * NC_WARP;
        qn[r] = f < dim ? q[i * dim + f] * invQ : 0.f;
        kn[r] = f < dim ? k[i * dim + f] * invK : 0.f;
        cosine = fmaf(qn[r], kn[r], cosine);
    }
    cosine = nc::warp_sum(cosine);
    const float positiveLogit = cosine * logitScale;

    const float2* parts = reinterpret_cast<const float2*>(partial);
    float queueMax = -FLT_MAX;
    for (int s = 0; s < splits; ++s) queueMax = fmaxf(queueMax, parts[s * static_cast<int64_t>(batch) + i].x);
    const float rowMax = fmaxf(queueMax, positiveLogit);
    float sum = exp2f(positiveLogit - rowMax);
    for (int s = 0; s < splits; ++s) {
        const float2 p = parts[s * static_cast<int64_t>(batch) + i];
        sum += p.y * exp2f(p.x - rowMax);
    }
    const float lse = rowMax + log2f(sum);
    if (lane == 0) {
        rowStats[i] = (lse - positiveLogit) * kLn2;
        rowStats[batch + i] = cosine;
        rowStats[2 * static_cast<int64_t>(batch) + i] = positiveLogit >= queueMax ? 1.f : 0.f;
    }
    if (dq == nullptr) return;

    float grad[kMaxDimPerLane];
#pragma unroll
    for (int r = 0; r < kMaxDimPerLane; ++r) grad[r] = 0.f;
    for (int s = 0; s < splits; ++s) {
        // Split s accumulated sum_j 2^(x_j - max_s) key_j; times 2^(max_s - lse) it is sum_j P_j key_j.
        const float weight = exp2f(parts[s * static_cast<int64_t>(batch) + i].x - lse);
        const float* row = weighted + (s * static_cast<int64_t>(batch) + i) * dpad;
#pragma unroll
        for (int r = 0; r < kMaxDimPerLane; ++r) {
            const int f = lane + r * NC_WARP;
            if (f < dim) grad[r] = fmaf(weight, row[f], grad[r]);
        }
    }
    const float positiveWeight = exp2f(positiveLogit - lse) - 1.f;
    float dot = 0.f;
#pragma unroll
    for (int r = 0; r < kMaxDimPerLane; ++r) {
        grad[r] = gradFactor * fmaf(positiveWeight, kn[r], grad[r]);
        dot = fmaf(qn[r], grad[r], dot);
    }
    dot = nc::warp_sum(dot);
#pragma unroll
    for (int r = 0; r < kMaxDimPerLane; ++r) {
        const int f = lane + r * NC_WARP;
        if (f < dim) dq[i * dim + f] = (grad[r] - qn[r] * dot) * invQ;
    }
}

// stats = [mean loss, mean positive cosine, top-1 accuracy] from rowStats = [loss_i | cos_i | hit_i] (rows each),
// summed in double in a fixed order. One block.
extern "C" __global__ void nc_contrastive_stats(const float* rowStats, int rows, float* stats) {
    __shared__ double scratch[32];
    double sums[3] = {0.0, 0.0, 0.0};
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
#pragma unroll
        for (int c = 0; c < 3; ++c) sums[c] += rowStats[c * static_cast<int64_t>(rows) + i];
    }
#pragma unroll
    for (int c = 0; c < 3; ++c) {
        const double total = nc_contrastive::block_sum_double(sums[c], scratch);
        if (threadIdx.x == 0) stats[c] = static_cast<float>(total / rows);
    }
}

// Writes `count` keys, L2-normalised, at rows (position + r) mod capacity of the queue: the canonical fp32
// [capacity, dim] and every operand copy that exists (null pointers are skipped; their padding stays zero).
// One warp per key; the host passes count <= capacity so no two keys share a destination.
extern "C" __global__ void nc_contrastive_enqueue(const float* keys, int count, int dim, int capacity, int position,
                                                  float* canonical, int dpad, float* fp32Operand, float* tf32Operand,
                                                  __nv_bfloat16* bf16Operand) {
    using namespace nc_contrastive;
    const int64_t r = warp_row();
    const int lane = threadIdx.x % NC_WARP;
    if (r >= count) return;
    const float* key = keys + r * dim;
    const float inv = inverse_norm(key, dim, lane);
    const int64_t destination = (position + r) % capacity;
    for (int f = lane; f < dim; f += NC_WARP) {
        const float v = key[f] * inv;
        canonical[destination * dim + f] = v;
        if (fp32Operand != nullptr) store_operand<Format::Fp32>(fp32Operand, destination * dpad + f, v);
        if (tf32Operand != nullptr) store_operand<Format::Tf32>(tf32Operand, destination * dpad + f, v);
        if (bf16Operand != nullptr) store_operand<Format::Bf16>(bf16Operand, destination * dpad + f, v);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Glue for the unfused compositions (the baseline built from core ops). pairing 0: the positive of row i is column
// (i + rows/2) mod rows (NT-Xent's two views); pairing 1: column 0 (InfoNCE's [positive | queue] logits).

__device__ __forceinline__ int64_t positive_column(int64_t i, int rows, int pairing) {
    return pairing == 0 ? (i + rows / 2) % rows : 0;
}

// logits[i, i] = -inf.
extern "C" __global__ void nc_contrastive_mask_self(float* logits, int rows, int cols) {
    const int64_t i = nc::global_index();
    if (i < rows && i < cols) logits[i * cols + i] = -INFINITY;
}

// positives[i] = logits[i, p(i)]; hits[i] = 1 when no other column exceeds it. One warp per row.
extern "C" __global__ void nc_contrastive_positive_logits(const float* logits, int rows, int cols, int pairing,
                                                          float* positives, float* hits) {
    const int64_t i = nc_contrastive::warp_row();
    const int lane = threadIdx.x % NC_WARP;
    if (i >= rows) return;
    const int64_t p = positive_column(i, rows, pairing);
    const float* row = logits + i * cols;
    float others = -INFINITY;
    for (int64_t j = lane; j < cols; j += NC_WARP) {
        if (j != p) others = fmaxf(others, row[j]);
    }
    others = nc::warp_max(others);
    if (lane == 0) {
        positives[i] = row[p];
        hits[i] = row[p] >= others ? 1.f : 0.f;
    }
}

// x[i, p(i)] += value.
extern "C" __global__ void nc_contrastive_add_at_positives(float* x, int rows, int cols, int pairing, float value) {
    const int64_t i = nc::global_index();
    if (i < rows) x[i * cols + positive_column(i, rows, pairing)] += value;
}

// result[i] = alpha <a_i, b_i>. One warp per row.
extern "C" __global__ void nc_contrastive_row_dot(const float* a, const float* b, int rows, int cols, float alpha,
                                                  float* result) {
    const int64_t i = nc_contrastive::warp_row();
    const int lane = threadIdx.x % NC_WARP;
    if (i >= rows) return;
    float dot = 0.f;
    for (int j = lane; j < cols; j += NC_WARP) dot = fmaf(a[i * cols + j], b[i * cols + j], dot);
    dot = nc::warp_sum(dot);
    if (lane == 0) result[i] = alpha * dot;
}

// out [rows, leftCols + rightCols] <-> (left [rows, leftCols], right [rows, rightCols]); split when toParts != 0.
extern "C" __global__ void nc_contrastive_concat_columns(float* left, int leftCols, float* right, int rightCols,
                                                         int rows, float* out, int toParts) {
    const int64_t cols = static_cast<int64_t>(leftCols) + rightCols;
    const int64_t n = rows * cols;
    for (int64_t index = nc::global_index(); index < n; index += nc::global_stride()) {
        const int64_t i = index / cols, j = index % cols;
        float* part = j < leftCols ? left + i * leftCols + j : right + i * rightCols + (j - leftCols);
        if (toParts) {
            *part = out[index];
        } else {
            out[index] = *part;
        }
    }
}

// y[i, :] += scale[i] * x[i, :].
extern "C" __global__ void nc_contrastive_add_scaled_rows(const float* x, const float* scale, int rows, int cols,
                                                          float* y) {
    const int64_t n = static_cast<int64_t>(rows) * cols;
    for (int64_t index = nc::global_index(); index < n; index += nc::global_stride()) {
        y[index] = fmaf(scale[index / cols], x[index], y[index]);
    }
}
