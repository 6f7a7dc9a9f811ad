/* SPDX-License-Identifier: MIT */
/* Small tensor operations: storage conversion (convert), gradient accumulation (axpby), the
 * Lookahead synchronisation, and the gradient check of AMP / clipping (fixed-order partials,
 * see reduce.cl for the final pass). OPS (define): the op level's build (axpby, convert),
 * which leaves the gradient check out: built without the optimizer's RL it would take 16
 * runs of float16 accumulator pairs, which a GPU compiler spills to scratch for nothing. */
#ifndef OPS
#define OPS 0
#endif

/* dst = beta·dst + alpha·src (beta = 0 never reads dst, so it may hold garbage or NaN), dst
 * in PT storage and src in GT storage (float32 without the defines): computed in float32, a
 * 16-bit dst rounded to nearest even. */
__kernel void axpby(__global PSTORE *d_, const ulong dof, __global const GSTORE *s_,
                    const ulong sof, const ulong n, const float alpha, const float beta)
{
    d_ += dof;
    s_ += sof;
    ELEMENTWISE_BEGIN
    floatV x = alpha * LOADG(s_);
    if (beta != 0.0f)
        x = x + beta * LOADP(d_);
#if PT == 0
    STORE(x, d_);
#else
    STOREP_RNE(x, d_);
#endif
    ELEMENTWISE_END
}

/* dst (PT storage) = src (GT storage), rounded to nearest even or, with SR, stochastically
 * (PT != 0: STORAGE_PARAMS, the master pointer unused); n elements. */
__kernel void convert(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                      const ulong go, const ulong n STORAGE_PARAMS)
{
    p_ += po;
    g_ += go;
#if PT != 0
    (void)ms_, (void)mso;
#endif
    ELEMENTWISE_BEGIN
#if PT != 0 && SR
    STOREP_SR(LOADG(g_), p_, sr_words(po + base_, sr_seed, sr_stream, sr_step));
#elif PT != 0
    (void)sr_seed, (void)sr_stream, (void)sr_step;
    STOREP_RNE(LOADG(g_), p_);
#else
    STORE(LOADG(g_), p_);
#endif
    ELEMENTWISE_END
}

/* Lookahead: θ = φ + α(θ - φ); φ = θ (θ: the master when there is one, STORAGE_PARAMS). A
 * 16-bit θ without a master rounds stochastically with random values of its own (SR_STEP's
 * top bits 10): with the update's, which it follows in the same step, the two roundings were
 * one, and the sync's average came out biased by up to half an ulp. */
#undef SR_STEP
#define SR_STEP (SR_STEP_COUNTED ^ 0x80000000u)
__kernel void lookahead_sync(__global PSTORE *p_, const ulong po, __global float *s_,
                             const ulong so, const ulong n,
                             const float alpha CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_SKIP;
    STORAGE_BEGIN;
    p_ += po;
    s_ += so;
    ELEMENTWISE_BEGIN
    floatV s = LOAD(s_);
    floatV p = s + alpha * (THETA_LOAD(p_) - s);
    THETA_STORE(p, p_);
    STORE(p, s_);
    ELEMENTWISE_END
}
#undef SR_STEP
#define SR_STEP SR_STEP_COUNTED

/* Lookahead's first slow weights: φ = θ (the master when there is one) as float32. */
__kernel void theta_copy(__global PSTORE *p_, const ulong po, __global float *s_,
                         const ulong so, const ulong n STORAGE_PARAMS)
{
#if CTRL
    const ulong dc_ = 0; /* no step here: the rounding key's step is never used */
    (void)dc_;
#endif
    STORAGE_BEGIN;
    p_ += po;
    s_ += so;
    ELEMENTWISE_BEGIN
    STORE(THETA_LOAD(p_), s_);
    ELEMENTWISE_END
}

#if !OPS
/* One chunk of grad_check_partial: x = scale·g; Σx² lane-wise, and the same sum of
 * (x·2^-80)², which cannot overflow for finite x (the norm of gradients of 1e20 stays finite)
 * and so is not finite exactly when some x is Inf or NaN: it is also the non-finite check
 * (padding lanes read 0). Plain float sums (no compensation): each lane adds a few hundred
 * squares per item, and four operations per element keep the check near the memory's speed
 * (the compensated form made it compute-bound on a CPU: 1.4-1.7x an AdamW step). */
#define CHECK_DOWN 8.271806125530277e-25f /* 2^-80 */
CHUNK_INLINE void grad_check_chunk(__global const GSTORE *g_, const ulong e, const uint cnt,
                                   const float scale, floatR *acc, floatR *accs)
{
    const floatR x = loadRG(g_ + e, cnt) * scale;
    const floatR xs = x * CHECK_DOWN;
    *acc = x * x + *acc;
    *accs = xs * xs + *accs;
}

/* The runs an item walks in lockstep: on a CPU (RL 1) a core's read bandwidth is bounded by
 * the misses it keeps in flight, and a read-only pass has one array: 16 runs instead of
 * RACC's 4 (clopt-bench, AdamW at 2^24 in 1000 tensors, AMP and clipping on: 1.26x the step
 * without them -> 1.18-1.20x; 8 runs 1.20-1.24x). On a GPU the work-group's items interleave
 * anyway, and 16 pairs of float16 accumulators would spill: RACC. */
#if RL == 1
#define CHECK_RUNS 16
#else
#define CHECK_RUNS RACC
#endif

/* Work-group g of `groups` (see group_block in chunks.cl): Σ (scale·g)² over its block of g
 * into out[oo + g], Σ (scale·g·2^-80)² into out[so + g] (each item's lanes added in a fixed
 * order, then the items by group_sum), and into out[bo + g] 2 when the block holds a NaN, 1
 * when it holds an Inf and no NaN (after scaling), else 0. */
__kernel void grad_check_partial(__global const GSTORE *g_, const ulong go, const ulong n,
                                 const ulong groups, const float scale, __global float *out_,
                                 const ulong oo, const ulong bo, const ulong so)
{
    __local float red_[RL];
    const ulong gi = get_group_id(0);
    g_ += go;
    ulong c0, c1;
    group_block(gi, groups, n, &c0, &c1);
    floatR acc[CHECK_RUNS], accs[CHECK_RUNS];
    for (uint k = 0; k < CHECK_RUNS; k++)
        acc[k] = accs[k] = (floatR)(0.0f);
    /* as FOR_CHUNKS_RUNS (chunks.cl) with CHECK_RUNS runs in lockstep */
    const ulong nfull = n / RW, mf = item_full_chunks(c0, c1, n), sb = mf / CHECK_RUNS;
    for (ulong k = 0; k < sb; k++) {
#pragma unroll
        for (uint r = 0; r < CHECK_RUNS; r++)
            grad_check_chunk(g_, ITEM_CHUNK(c0, k + r * sb) * RW, RW, scale, &acc[r], &accs[r]);
    }
    for (ulong k = CHECK_RUNS * sb; k < mf; k++)
        grad_check_chunk(g_, ITEM_CHUNK(c0, k) * RW, RW, scale, &acc[CHECK_RUNS - 1],
                         &accs[CHECK_RUNS - 1]);
    if (c0 < c1 && c1 > nfull && ITEM_CHUNK(c0, mf) == nfull)
        grad_check_chunk(g_, nfull * RW, (uint)(n - nfull * RW), scale, &acc[CHECK_RUNS - 1],
                         &accs[CHECK_RUNS - 1]);
    float sum = 0.0f, sums = 0.0f, t[RW], v[RW];
    for (uint k = 0; k < CHECK_RUNS; k++) {
        vstore16(acc[k], 0, t);
        vstore16(accs[k], 0, v);
        for (uint l = 0; l < RW; l++) {
            sum += t[l];
            sums += v[l];
        }
    }
    sum = group_sum(sum, red_);
    sums = group_sum(sums, red_);
    if (get_local_id(0) == 0) {
        out_[oo + gi] = sum;
        out_[so + gi] = sums;
        out_[bo + gi] = isfinite(sums) ? 0.0f : isnan(sums) ? 2.0f : 1.0f;
    }
}
#endif

/* The verdict of an optimizer step (one work-item): the gradient check's `count` partial
 * sums of (g/scale)² at sums_[so..] (every unit's, in unit order) added in that order (or,
 * when that total overflows, the scaled sums at sums_[ss..], times 2^80 after the root), the
 * non-finite flags at sums_[bo..] (their maximum: 2 NaN, 1 Inf), the norm (NaN when a
 * gradient holds a NaN, else Inf when one holds an Inf, as torch's vector norm), the skip
 * decision (abort word set by the host, or AMP and a non-finite gradient) and the clip
 * coefficient max_norm / (norm + 1e-6) clamped to 1 as torch.nn.utils.clip_grad_norm_ (an
 * Inf norm gives 0, a NaN norm NaN: every gradient is then multiplied by it), into the
 * control words (CTRL in common.cl). count 0: no check; max_norm 0: no clipping. */
__kernel void step_verdict(__global uint *ctl_, const ulong ctlo, __global const float *sums_,
                           const ulong so, const ulong bo, const ulong ss, const ulong count,
                           const float max_norm, const int amp)
{
    if (get_global_id(0) != 0)
        return;
    __global uint *c = ctl_ + ctlo;
    kahan acc = {0.0f, 0.0f}, accs = {0.0f, 0.0f};
    float bad = 0.0f;
    for (ulong u = 0; u < count; u++) {
        kahan_add(&acc, sums_[so + u]);
        kahan_add(&accs, sums_[ss + u]);
        bad = fmax(bad, sums_[bo + u]);
    }
    const int nonfinite = bad > 0.0f;
    float norm = sqrt(acc.sum);
    if (!isfinite(acc.sum))
        norm = sqrt(accs.sum) * 1.2089258196146292e24f; /* 2^80 */
    if (count == 0 || bad > 1.5f)
        norm = NAN;
    else if (nonfinite)
        norm = INFINITY;
    float mul = 1.0f;
    if (max_norm > 0.0f) { /* torch's clamp(max = 1) keeps a NaN */
        const float coef = max_norm / (norm + 1e-6f);
        mul = isnan(coef) || coef < 1.0f ? coef : 1.0f;
    }
    c[0] = (c[6] != 0u || (amp && nonfinite)) ? 1u : 0u;
    c[1] = as_uint(mul);
    c[4] = as_uint(norm);
    c[5] = nonfinite ? 1u : 0u;
}

/* The end of an optimizer step (one work-item): an applied step advances the count. */
__kernel void step_commit(__global uint *ctl_, const ulong ctlo)
{
    if (get_global_id(0) != 0)
        return;
    __global uint *c = ctl_ + ctlo;
    if (c[0] == 0u) {
        const ulong a = ((((ulong)c[3]) << 32) | (ulong)c[2]) + 1;
        c[2] = (uint)a;
        c[3] = (uint)(a >> 32);
    }
}
