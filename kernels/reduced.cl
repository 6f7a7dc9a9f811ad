/* SPDX-License-Identifier: MIT */
/* Element-wise rules with one per-tensor reduction before the update, two passes each:
 * reduced_partial sums a per-element value over the tensor (fixed-order partials, see
 * "Reductions shaped for the device" in chunks.cl; sum_final adds them), then reduced_update
 * applies the fused update with the sum. The first pass writes nothing but its partials, so
 * the state is read and written once by the update.
 * VARIANT 1: Cautious Adam/AdamW (kyleliang919/C-Optim's AdamW arithmetic: eps added to the
 *            raw sqrt(v), the bias corrections in the step size): the sum counts the
 *            elements whose new m agrees in sign with g; φ = mask / max(mean, 1e-3).
 *            DECOUPLED: θ -= lrwd·θ first; else weight_decay·θ is added to g (L2).
 * VARIANT 2: Cautious Lion (C-Optim's c_lion.py): the mask compares the interpolation
 *            c = β1 m + (1-β1) g with g; φ = mask · n / (Σ mask + 1).
 * VARIANT 3: StableAdamW (Wortsman et al., the first author's code): moments with the bias
 *            correction in their coefficients (β̂), the sum is Σ g²/max(u, eps²) with the
 *            new u; the step is lr / max(1, RMS/clip_threshold), the decay uses plain lr.
 * Both kernels work on RW-float chunks (chunks.cl) whatever the context's tuning. Defines:
 * VARIANT, DECOUPLED, GC, MAXIMIZE. */
#ifndef VARIANT
#define VARIANT 1
#endif
#ifndef DECOUPLED
#define DECOUPLED 0
#endif
#define CAUTION_FLOOR 1e-3f

/* The gradient of a chunk as the rule sees it: scaled, L2 decay (cautious Adam), GC. */
CHUNK_INLINE floatR rule_grad(__global const PSTORE *p_, __global const GSTORE *g_,
                              GC_PARAMS const ulong e, const uint cnt, const float gmul,
                              const float weight_decay THETA_LOAD_FN_PARAMS)
{
    floatR g = read_gradR(loadRG(g_ + e, cnt), gmul);
#if VARIANT == 1 && !DECOUPLED
    if (weight_decay != 0.0f)
        g = g + weight_decay * THETA_LOADR(p_, e, cnt);
#else
    (void)p_;
    (void)weight_decay;
#endif
    return GC_APPLYR(g, e, cnt);
}

/* The per-element value the first pass sums (s: the state it needs, m or u). */
CHUNK_INLINE floatR reduced_value(floatR g, floatR s, const float a, const float oma,
                                  const float eps2)
{
#if VARIANT == 3
    const floatR u = a * s + oma * g * g;
    return g * g / fmax(u, eps2);
#else
    (void)eps2;
    const floatR m = a * s + oma * g; /* cautious Adam: the new m; Lion: c */
    return -convert_float16(m * g > 0.0f);
#endif
}

/* Work-group gi of `groups` writes its partial sum to part[gi]. a, oma: β1 and 1-β1
 * (cautious), β̂2 and 1-β̂2 (StableAdamW); s_ the state they apply to. */
__kernel void reduced_partial(__global const PSTORE *p_, const ulong po,
                              __global const GSTORE *g_, const ulong go,
                              __global const SSTORE *s_, const ulong so, GC_PARAMS const ulong n,
                              const ulong groups, float gmul, const float a, const float oma,
                              const float weight_decay, const float eps2, __global float *part_,
                              const ulong parto CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    __local float red_[RL];
    const ulong gi = get_group_id(0);
    p_ += po;
    g_ += go;
    s_ += so;
    STORAGE_BEGIN;
    ulong c0, c1;
    group_block(gi, groups, n, &c0, &c1);
    sumR acc[RACC];
    sumR_clear(acc);
#define PARTIAL_BODY(e, cnt, k)                                                             \
    sumR_add(&acc[k],                                                                      \
             maskR(reduced_value(rule_grad(p_, g_, GC_ARGS e, cnt, gmul,                   \
                                           weight_decay THETA_LOAD_FN_ARGS),               \
                                 LOADRS(s_, e, cnt), a, oma, eps2),                        \
                   cnt))
    FOR_CHUNKS_RUNS(c0, c1, n, PARTIAL_BODY, 2);
#undef PARTIAL_BODY
    const float sum = group_sum(sumR_total(acc), red_);
    if (get_local_id(0) == 0)
        part_[parto + gi] = sum;
}

/* One chunk of the update. scale: φ's value where the mask is 1 (cautious), or the clipped
 * step η (StableAdamW). */
CHUNK_INLINE void reduced_chunk(__global PSTORE *p_, __global const GSTORE *g_,
                                __global SSTORE *m_, __global SSTORE *v_, GC_PARAMS const ulong e,
                                const uint cnt, const float gmul, const float b1,
                                const float omb1, const float b2, const float omb2,
                                const float eps, const float weight_decay, const float lrwd,
                                const float step, const float scale THETA_FN_PARAMS)
{
    floatR p = THETA_LOADR(p_, e, cnt);
    floatR g = read_gradR(loadRG(g_ + e, cnt), gmul);
#if VARIANT == 1 && !DECOUPLED
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
#else
    (void)weight_decay;
#endif
    g = GC_APPLYR(g, e, cnt);
    p = p - lrwd * p; /* decoupled decay first (lrwd 0 with L2) */
    floatR m = LOADRS(m_, e, cnt);
#if VARIANT == 2
    (void)v_, (void)b2, (void)omb2, (void)eps, (void)step;
    const floatR c = b1 * m + omb1 * g;
    const floatR phi = scale * -convert_float16(c * g > 0.0f);
    p = p - step * (SIGN_NAN(c) * phi);
    m = b2 * m + omb2 * g;
    STORERS(m, m_, e, cnt);
#else
    m = b1 * m + omb1 * g;
    const floatR v = b2 * LOADRS(v_, e, cnt) + omb2 * g * g;
#if VARIANT == 1
    /* the mask as 0/1 floats times its scale: select() here cost PoCL 10% of the bandwidth
       (cautious AdamW 0.82 -> 0.91 of its stream kernel, clopt-bench at 2^25) */
    const floatR phi = scale * -convert_float16(m * g > 0.0f);
    p = p - step * ((m * phi) / (sqrt(v) + eps));
#else
    p = p - scale * (m / (sqrt(v) + eps));
#endif
    STORERS(m, m_, e, cnt);
    STORERS(v, v_, e, cnt);
#endif
    THETA_STORER(p, p_, e, cnt);
}

/* sums_[so]: the first pass's total, count: the elements it was taken over (n, or the whole
 * tensor's when the host combines the sums of pieces). step: lr·sqrt(bc2)/bc1 (cautious Adam), lr (Lion,
 * StableAdamW). b1..omb2: the EMA coefficients (β̂ for StableAdamW). */
__kernel void reduced_update(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                             const ulong go, __global SSTORE *m_, const ulong mo,
                             __global SSTORE *v_, const ulong vo, GC_PARAMS const ulong n,
                             __global const float *sums_, const ulong so, float gmul,
                             const float b1, const float omb1, const float b2, const float omb2,
                             const float eps, const float weight_decay, const float lrwd,
                             const float step, const float clip_threshold,
                             const float count CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    if (!UPDATE_ITEMS_OK(n))
        return;
    p_ += po;
    g_ += go;
    m_ += mo;
    v_ += vo;
    STORAGE_BEGIN;
    const float mean = sums_[so] / count;
#if VARIANT == 3
    const float scale = step / fmax(1.0f, sqrt(mean) / clip_threshold);
#elif VARIANT == 2
    (void)clip_threshold, (void)mean;
    const float scale = count / (sums_[so] + 1.0f); /* c_lion.py: numel / (mask.sum() + 1) */
#else
    (void)clip_threshold;
    const float scale = 1.0f / fmax(mean, CAUTION_FLOOR);
#endif
#define UPDATE_BODY(e, cnt, s)                                                              \
    reduced_chunk(p_, g_, m_, v_, GC_ARGS e, cnt, gmul, b1, omb1, b2, omb2, eps, weight_decay, \
                  lrwd, step, scale THETA_FN_ARGS)
    FOR_ITEM_CHUNKS_THETA(n, UPDATE_BODY);
#undef UPDATE_BODY
}
