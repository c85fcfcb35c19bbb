// Optimiser family: EMA of a teacher, SGD / LARS / AdamW steps over the parameter arena (optionally fused with the
// teacher's EMA), and the segmented norms that gradient clipping and LARS trust ratios need.
//
// The arena's trainable views are cut into chunks (OptimizerPlan.cs builds the table once and uploads it): one
// block per chunk, so every block knows which view it is in (decay exclusion, LARS trust ratio) without a search,
// and partial norms are written per chunk and reduced by a second tiny kernel: deterministic, no atomics, no host
// sync. A chunk starts on a view's 32-float boundary, so with 16-byte-aligned base pointers (checked on the host)
// float4 loads are legal; only a view's last chunk can have a length that is not a multiple of 4.
//
// Every update is written with explicit round-to-nearest intrinsics (__fmaf_rn, __fmul_rn, ...) so that compiler
// contraction or flags cannot change a result: the CPU twin (CpuBackend.Optim.cs) evaluates the same expressions
// with MathF.FusedMultiplyAdd / Vector.FusedMultiplyAdd, which makes EMA and the element-wise updates bit-exact.
#include "common.cuh"

namespace nc_optim {

// Chunk table entry (int4): x = offset in units of kOffsetUnit elements, y = length, z = segment (trainable view),
// w = flags. Chunks start on the arena's 32-float alignment, so the 32-bit unit count reaches 2^36 elements.
// Segment table entry (int4): x = first chunk, y = chunk count, z = flags, w = unused.
constexpr int kExcludedFromDecay = 1;
constexpr int64_t kOffsetUnit = 32;  // OptimizerPlan.OffsetUnit

struct Chunk {
    int64_t offset;
    int length;
    int segment;
    bool excluded;
};

__device__ __forceinline__ Chunk read_chunk(const int4* __restrict__ chunks, int honour_exclusion) {
    const int4 c = chunks[blockIdx.x];
    return Chunk{static_cast<int64_t>(static_cast<uint32_t>(c.x)) * kOffsetUnit, c.y, c.z, honour_exclusion != 0 && (c.w & kExcludedFromDecay) != 0};
}

// teacher <- m * teacher + (1 - m) * student, rounded as fma(m, teacher, (1 - m) * student).
__device__ __forceinline__ float ema(float teacher, float student, float m, float one_minus_m) {
    return __fmaf_rn(m, teacher, __fmul_rn(one_minus_m, student));
}

__device__ __forceinline__ float4 ema4(float4 t, float4 s, float m, float one_minus_m) {
    return make_float4(ema(t.x, s.x, m, one_minus_m), ema(t.y, s.y, m, one_minus_m),
                       ema(t.z, s.z, m, one_minus_m), ema(t.w, s.w, m, one_minus_m));
}

// SGD with momentum (PyTorch's form, dampening 0): g' = c*g (+ wd*w); b = mu*b + g'; d = nesterov ? g' + mu*b : b;
// w -= lr * d.
struct Sgd {
    float scale, lr, mu, wd;
    bool decay, nesterov;

    __device__ __forceinline__ void operator()(float& w, float g, float& b) const {
        g = __fmul_rn(g, scale);
        if (decay) g = __fmaf_rn(wd, w, g);
        b = __fmaf_rn(mu, b, g);
        const float d = nesterov ? __fmaf_rn(mu, b, g) : b;
        w = __fmaf_rn(-lr, d, w);
    }
};

// LARS, SimCLR's form (its TensorFlow optimiser): g' = c*g (+ wd*w); v = mu*v + (lr*trust)*g';
// w -= nesterov ? mu*v + (lr*trust)*g' : v. wd is the segment's applied decay (0: none).
struct Lars {
    float scale, scaled_lr, mu, wd;
    bool nesterov;

    __device__ __forceinline__ void operator()(float& w, float g, float& v) const {
        g = __fmul_rn(g, scale);
        if (wd != 0.f) g = __fmaf_rn(wd, w, g);
        const float step = __fmul_rn(scaled_lr, g);
        v = __fmaf_rn(mu, v, step);
        const float update = nesterov ? __fmaf_rn(mu, v, step) : v;
        w = __fsub_rn(w, update);
    }
};

// LARS, solo-learn's form (PyTorch, lr outside the buffer): d = trust*(c*g (+ wd*w)); b = mu*b + d;
// w -= lr * (nesterov ? d + mu*b : b). A skipped segment arrives with trust 1 and wd 0.
struct SoloLars {
    float scale, trust, lr, mu, wd;
    bool nesterov;

    __device__ __forceinline__ void operator()(float& w, float g, float& b) const {
        float d = __fmul_rn(g, scale);
        if (wd != 0.f) d = __fmaf_rn(wd, w, d);
        d = __fmul_rn(d, trust);
        b = __fmaf_rn(mu, b, d);
        const float direction = nesterov ? __fmaf_rn(mu, b, d) : b;
        w = __fmaf_rn(-lr, direction, w);
    }
};

constexpr int kLarsSimClr = 0;

// Per-segment LARS results from the segment's sums (sw = sum w^2, sg = sum g^2, sgw = sum g*w) and the clip scale c.
// SimCLR: trust = eta*||w|| / ||c*g + wd*w||, the denominator expanded as c^2*sg + 2c*wd*sgw + wd^2*sw (clamped at 0);
// 1 when excluded or a norm is 0; decay wd unless excluded. solo-learn: trust = eta * (||w|| / (||c*g|| + wd*||w|| + eps)),
// then min(trust / lr, 1) with clip_lr; excluded or a zero norm skips the segment: trust 1, decay 0.
// CpuBackend.SimClrTrust / SoloLearnTrust evaluate the same expressions.
__device__ __forceinline__ float2 lars_trust(int variant, bool excluded, float scale, float sw, float sg, float sgw,
                                             float eta, float wd, float eps, float lr, int clip_lr) {
    const float w_norm = __fsqrt_rn(sw);
    if (variant == kLarsSimClr) {
        const float decay = excluded ? 0.f : wd;
        const float squares = __fmaf_rn(scale, __fmaf_rn(scale, sg, __fmul_rn(__fmul_rn(2.f, decay), sgw)),
                                        __fmul_rn(__fmul_rn(decay, decay), sw));
        const float d_norm = __fsqrt_rn(fmaxf(squares, 0.f));
        const float trust = excluded || !(w_norm > 0.f) || !(d_norm > 0.f) ? 1.f : __fdiv_rn(__fmul_rn(eta, w_norm), d_norm);
        return make_float2(trust, decay);
    }
    const float g_norm = __fmul_rn(scale, __fsqrt_rn(sg));
    if (excluded || !(w_norm > 0.f) || !(g_norm > 0.f)) return make_float2(1.f, 0.f);
    float trust = __fmul_rn(eta, __fdiv_rn(w_norm, __fadd_rn(__fmaf_rn(w_norm, wd, g_norm), eps)));
    if (clip_lr != 0) trust = fminf(__fdiv_rn(trust, lr), 1.f);
    return make_float2(trust, wd);
}

// AdamW (decoupled decay): w *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + ((1-b2)*g)*g;
// w -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps), with step_size = lr / (1 - b1^t) and
// inv_sqrt_bc2 = 1 / sqrt(1 - b2^t) computed on the host from the step count t.
struct AdamW {
    float scale, decay_factor, b1, one_minus_b1, b2, one_minus_b2, eps, step_size, inv_sqrt_bc2;
    bool decay;

    __device__ __forceinline__ void operator()(float& w, float g, float& m, float& v) const {
        g = __fmul_rn(g, scale);
        if (decay) w = __fmul_rn(w, decay_factor);
        m = __fmaf_rn(b1, m, __fmul_rn(one_minus_b1, g));
        v = __fmaf_rn(b2, v, __fmul_rn(__fmul_rn(one_minus_b2, g), g));
        const float denominator = __fmaf_rn(__fsqrt_rn(v), inv_sqrt_bc2, eps);
        w = __fmaf_rn(-step_size, __fdiv_rn(m, denominator), w);
    }
};

// One chunk of a one-state optimiser (SGD, LARS), with the teacher's EMA from the updated weights when teacher != null.
template <typename Update>
__device__ __forceinline__ void step_chunk(const Chunk& c, float* __restrict__ w, const float* __restrict__ g,
                                           float* __restrict__ s, float* __restrict__ teacher, const Update& update,
                                           float tm, float one_minus_tm) {
    w += c.offset;
    g += c.offset;
    s += c.offset;
    if (teacher != nullptr) teacher += c.offset;
    const int vectors = c.length >> 2;
    for (int i = threadIdx.x; i < vectors; i += blockDim.x) {
        float4 wv = nc::load4(w + 4 * i);
        const float4 gv = nc::load4(g + 4 * i);
        float4 sv = nc::load4(s + 4 * i);
        update(wv.x, gv.x, sv.x);
        update(wv.y, gv.y, sv.y);
        update(wv.z, gv.z, sv.z);
        update(wv.w, gv.w, sv.w);
        nc::store4(w + 4 * i, wv);
        nc::store4(s + 4 * i, sv);
        if (teacher != nullptr) nc::store4(teacher + 4 * i, ema4(nc::load4(teacher + 4 * i), wv, tm, one_minus_tm));
    }
    for (int i = 4 * vectors + threadIdx.x; i < c.length; i += blockDim.x) {
        float wi = w[i], si = s[i];
        update(wi, g[i], si);
        w[i] = wi;
        s[i] = si;
        if (teacher != nullptr) teacher[i] = ema(teacher[i], wi, tm, one_minus_tm);
    }
}

__device__ __forceinline__ float clip_scale(const float* clip) { return clip != nullptr ? *clip : 1.f; }

__device__ __forceinline__ float sum_squares4(float4 v, float acc) {
    acc = __fmaf_rn(v.x, v.x, acc);
    acc = __fmaf_rn(v.y, v.y, acc);
    acc = __fmaf_rn(v.z, v.z, acc);
    return __fmaf_rn(v.w, v.w, acc);
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
    acc = __fmaf_rn(a.x, b.x, acc);
    acc = __fmaf_rn(a.y, b.y, acc);
    acc = __fmaf_rn(a.z, b.z, acc);
    return __fmaf_rn(a.w, b.w, acc);
}

}  // namespace nc_optim

// teacher[i] <- m * teacher[i] + (1 - m) * student[i] over n elements: a grid-stride loop of float4 pairs (two per
// iteration for more loads in flight), scalar for the tail or when a pointer is not 16-byte aligned.
extern "C" __global__ void nc_optim_ema(float* __restrict__ teacher, const float* __restrict__ student, int64_t n,
                                        float momentum) {
    const float one_minus_m = __fsub_rn(1.f, momentum);
    const int64_t vectors = nc::aligned16(teacher) && nc::aligned16(student) ? n >> 2 : 0;
    const int64_t stride = nc::global_stride();
    int64_t i = nc::global_index();
    for (; i + stride < vectors; i += 2 * stride) {
        const float4 t0 = nc::load4(teacher + 4 * i), s0 = nc::load4(student + 4 * i);
        const float4 t1 = nc::load4(teacher + 4 * (i + stride)), s1 = nc::load4(student + 4 * (i + stride));
        nc::store4(teacher + 4 * i, nc_optim::ema4(t0, s0, momentum, one_minus_m));
        nc::store4(teacher + 4 * (i + stride), nc_optim::ema4(t1, s1, momentum, one_minus_m));
    }
    if (i < vectors) {
        nc::store4(teacher + 4 * i, nc_optim::ema4(nc::load4(teacher + 4 * i), nc::load4(student + 4 * i), momentum, one_minus_m));
    }
    for (int64_t j = 4 * vectors + nc::global_index(); j < n; j += stride) {
        teacher[j] = nc_optim::ema(teacher[j], student[j], momentum, one_minus_m);
    }
}

// Per chunk: partial_g[chunk] = sum g^2; when partial_w != null, partial_w[chunk] = sum w^2; when partial_gw != null
// (LARS, SimCLR form), partial_gw[chunk] = sum g*w (one block per chunk).
extern "C" __global__ void nc_optim_chunk_sum_squares(const float* __restrict__ values, const float* __restrict__ gradients,
                                                      const int4* __restrict__ chunks, float* __restrict__ partial_w,
                                                      float* __restrict__ partial_g, float* __restrict__ partial_gw) {
    __shared__ float scratch[NC_WARP];
    const nc_optim::Chunk c = nc_optim::read_chunk(chunks, 0);
    const float* g = gradients + c.offset;
    const float* w = values + c.offset;
    const bool with_weights = partial_w != nullptr;
    const bool with_dot = partial_gw != nullptr;
    const int vectors = c.length >> 2;
    float sw = 0.f, sg = 0.f, sgw = 0.f;
    for (int i = threadIdx.x; i < vectors; i += blockDim.x) {
        const float4 gv = nc::load4(g + 4 * i);
        sg = nc_optim::sum_squares4(gv, sg);
        if (with_weights) {
            const float4 wv = nc::load4(w + 4 * i);
            sw = nc_optim::sum_squares4(wv, sw);
            if (with_dot) sgw = nc_optim::dot4(gv, wv, sgw);
        }
    }
    for (int i = 4 * vectors + threadIdx.x; i < c.length; i += blockDim.x) {
        sg = __fmaf_rn(g[i], g[i], sg);
        if (with_weights) sw = __fmaf_rn(w[i], w[i], sw);
        if (with_dot) sgw = __fmaf_rn(g[i], w[i], sgw);
    }
    sg = nc::block_sum(sg, scratch);
    if (with_weights) sw = nc::block_sum(sw, scratch);
    if (with_dot) sgw = nc::block_sum(sgw, scratch);
    if (threadIdx.x == 0) {
        partial_g[blockIdx.x] = sg;
        if (with_weights) partial_w[blockIdx.x] = sw;
        if (with_dot) partial_gw[blockIdx.x] = sgw;
    }
}

// One block (a multiple of 32 threads): reduces every chunk's sum g^2 to the global gradient norm and the clip scale
// min(1, max_norm / (norm + 1e-6)) (1 when max_norm <= 0; NaN when the norm is NaN), written to scalars[0] and scalars[1]; then, when
// trust != null, one warp per segment turns the segment's partial sums into its LARS trust ratio and applied weight
// decay (nc_optim::lars_trust), written to trust[s] and applied_decay[s]. partial_gw may be null (solo-learn form).
extern "C" __global__ void nc_optim_finalize_norms(const float* __restrict__ partial_w, const float* __restrict__ partial_g,
                                                   const float* __restrict__ partial_gw, int chunk_count,
                                                   const int4* __restrict__ segments, int segment_count, float max_norm,
                                                   int variant, float eta, float weight_decay, float eps, float lr,
                                                   int clip_lr, int honour_exclusion, float* __restrict__ scalars,
                                                   float* __restrict__ trust, float* __restrict__ applied_decay) {
    __shared__ float scratch[NC_WARP];
    float total = 0.f;
    for (int i = threadIdx.x; i < chunk_count; i += blockDim.x) total = __fadd_rn(total, partial_g[i]);
    total = nc::block_sum(total, scratch);
    const float norm = __fsqrt_rn(total);
    // Written so that a NaN norm gives a NaN scale (as PyTorch's clamp does): a diverged step is not hidden.
    const float ratio = max_norm > 0.f ? __fdiv_rn(max_norm, __fadd_rn(norm, 1e-6f)) : 1.f;
    const float scale = ratio >= 1.f ? 1.f : ratio;
    if (threadIdx.x == 0) {
        scalars[0] = norm;
        scalars[1] = scale;
    }
    if (trust == nullptr) return;
    const int lane = threadIdx.x % NC_WARP, warp = threadIdx.x / NC_WARP, warps = blockDim.x / NC_WARP;
    for (int s = warp; s < segment_count; s += warps) {
        const int4 seg = segments[s];
        float sw = 0.f, sg = 0.f, sgw = 0.f;
        for (int i = seg.x + lane; i < seg.x + seg.y; i += NC_WARP) {
            sw = __fadd_rn(sw, partial_w[i]);
            sg = __fadd_rn(sg, partial_g[i]);
            if (partial_gw != nullptr) sgw = __fadd_rn(sgw, partial_gw[i]);
        }
        sw = nc::warp_sum(sw);
        sg = nc::warp_sum(sg);
        sgw = nc::warp_sum(sgw);
        if (lane == 0) {
            const bool excluded = honour_exclusion != 0 && (seg.z & nc_optim::kExcludedFromDecay) != 0;
            const float2 r = nc_optim::lars_trust(variant, excluded, scale, sw, sg, sgw, eta, weight_decay, eps, lr, clip_lr);
            trust[s] = r.x;
            applied_decay[s] = r.y;
        }
    }
}

// SGD with momentum over the chunks (one block each); clip (nullable) points at the clip scale; teacher (nullable)
// receives the EMA of the updated weights with momentum teacher_momentum in the same pass.
extern "C" __global__ void nc_optim_sgd(float* __restrict__ values, const float* __restrict__ gradients,
                                        float* __restrict__ momentum_buffer, float* __restrict__ teacher,
                                        const int4* __restrict__ chunks, const float* __restrict__ clip,
                                        float lr, float momentum, float weight_decay, int nesterov,
                                        int honour_exclusion, float teacher_momentum) {
    const nc_optim::Chunk c = nc_optim::read_chunk(chunks, honour_exclusion);
    const nc_optim::Sgd update{nc_optim::clip_scale(clip), lr, momentum, weight_decay,
                               !c.excluded && weight_decay != 0.f, nesterov != 0};
    nc_optim::step_chunk(c, values, gradients, momentum_buffer, teacher, update, teacher_momentum,
                         __fsub_rn(1.f, teacher_momentum));
}

// LARS over the chunks in either form (variant 0: SimCLR, 1: solo-learn); trust and applied_decay hold one value per
// segment from nc_optim_finalize_norms, so exclusion and skipped segments are already folded into them.
extern "C" __global__ void nc_optim_lars(float* __restrict__ values, const float* __restrict__ gradients,
                                         float* __restrict__ velocity, float* __restrict__ teacher,
                                         const int4* __restrict__ chunks, const float* __restrict__ clip,
                                         const float* __restrict__ trust, const float* __restrict__ applied_decay,
                                         int variant, float lr, float momentum, int nesterov, float teacher_momentum) {
    const nc_optim::Chunk c = nc_optim::read_chunk(chunks, 0);
    const float ratio = trust[c.segment], wd = applied_decay[c.segment], scale = nc_optim::clip_scale(clip);
    const float tm = teacher_momentum, one_minus_tm = __fsub_rn(1.f, teacher_momentum);
    if (variant == nc_optim::kLarsSimClr) {
        const nc_optim::Lars update{scale, __fmul_rn(lr, ratio), momentum, wd, nesterov != 0};
        nc_optim::step_chunk(c, values, gradients, velocity, teacher, update, tm, one_minus_tm);
    } else {
        const nc_optim::SoloLars update{scale, ratio, lr, momentum, wd, nesterov != 0};
        nc_optim::step_chunk(c, values, gradients, velocity, teacher, update, tm, one_minus_tm);
    }
}

// AdamW over the chunks; the bias corrections arrive precomputed from the step count (see nc_optim::AdamW).
extern "C" __global__ void nc_optim_adamw(float* __restrict__ values, const float* __restrict__ gradients,
                                          float* __restrict__ first_moment, float* __restrict__ second_moment,
                                          float* __restrict__ teacher, const int4* __restrict__ chunks,
                                          const float* __restrict__ clip, float decay_factor, float beta1, float beta2,
                                          float eps, float step_size, float inv_sqrt_bias_correction2,
                                          int honour_exclusion, float teacher_momentum) {
    const nc_optim::Chunk c = nc_optim::read_chunk(chunks, honour_exclusion);
    const nc_optim::AdamW update{nc_optim::clip_scale(clip), decay_factor, beta1, __fsub_rn(1.f, beta1), beta2,
                                 __fsub_rn(1.f, beta2), eps, step_size, inv_sqrt_bias_correction2,
                                 !c.excluded && decay_factor != 1.f};
    const float tm = teacher_momentum, one_minus_tm = __fsub_rn(1.f, teacher_momentum);
    float* w = values + c.offset;
    const float* g = gradients + c.offset;
    float* m = first_moment + c.offset;
    float* v = second_moment + c.offset;
    float* t = teacher != nullptr ? teacher + c.offset : nullptr;
    const int vectors = c.length >> 2;
    for (int i = threadIdx.x; i < vectors; i += blockDim.x) {
        float4 wv = nc::load4(w + 4 * i);
        const float4 gv = nc::load4(g + 4 * i);
        float4 mv = nc::load4(m + 4 * i), vv = nc::load4(v + 4 * i);
        update(wv.x, gv.x, mv.x, vv.x);
        update(wv.y, gv.y, mv.y, vv.y);
        update(wv.z, gv.z, mv.z, vv.z);
        update(wv.w, gv.w, mv.w, vv.w);
        nc::store4(w + 4 * i, wv);
        nc::store4(m + 4 * i, mv);
        nc::store4(v + 4 * i, vv);
        if (t != nullptr) nc::store4(t + 4 * i, nc_optim::ema4(nc::load4(t + 4 * i), wv, tm, one_minus_tm));
    }
    for (int i = 4 * vectors + threadIdx.x; i < c.length; i += blockDim.x) {
        float wi = w[i], mi = m[i], vi = v[i];
        update(wi, g[i], mi, vi);
        w[i] = wi;
        m[i] = mi;
        v[i] = vi;
        if (t != nullptr) t[i] = nc_optim::ema(t[i], wi, tm, one_minus_tm);
    }
}
