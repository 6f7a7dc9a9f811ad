/* SPDX-License-Identifier: MIT */
/* LAMB (You et al., Algorithm 2): Adam moments with bias correction, r = m̂/(sqrt(v̂)+eps) +
 * wd·θ, and a per-tensor trust ratio ‖θ‖/‖r‖ (1 when either norm is 0, applied also when
 * wd = 0). Two passes over the tensor: lamb_partial updates m and v and sums θ² and r²
 * (fixed-order partials, see reduce.cl); after sum_final, lamb_update applies the step. Both
 * work on RW-float chunks (chunks.cl) whatever the context's tuning.
 * Defines: GC, MAXIMIZE. */

/* One chunk of lamb_partial: cnt = RW (constant in the main loop) or the tail's length. */
CHUNK_INLINE void lamb_chunk(__global const PSTORE *p_, __global const GSTORE *g_, __global SSTORE *m_,
                       __global SSTORE *v_, GC_PARAMS const ulong e, const uint cnt,
                       const float gmul, const float beta1, const float c_grad,
                       const float beta2, const float ombeta2, const float eps,
                       const float weight_decay, const float inv_bc1, const float inv_bc2,
                       sumR *acc_p, sumR *acc_r THETA_LOAD_FN_PARAMS)
{
    floatR g = GC_APPLYR(read_gradR(loadRG(g_ + e, cnt), gmul), e, cnt);
    floatR p = THETA_LOADR(p_, e, cnt);
    floatR m = beta1 * LOADRS(m_, e, cnt) + c_grad * g;
    floatR v = beta2 * LOADRS(v_, e, cnt) + ombeta2 * g * g;
    STORERS(m, m_, e, cnt);
    STORERS(v, v_, e, cnt);
    floatR r = (m * inv_bc1) / (sqrt(v * inv_bc2) + eps) + weight_decay * p;
    sumR_addsq(acc_p, maskR(p, cnt));
    sumR_addsq(acc_r, maskR(r, cnt));
}

/* Work-group g of `groups` (see group_block in chunks.cl) updates m and v of its block and
 * writes its Σθ² to part[g] and Σr² to part[groups + g]. */
__kernel void lamb_partial(__global const PSTORE *p_, const ulong po, __global const GSTORE *g_,
                           const ulong go, __global SSTORE *m_, const ulong mo,
                           __global SSTORE *v_, const ulong vo, GC_PARAMS const ulong n,
                           const ulong groups, float gmul, const float beta1,
                           const float c_grad, const float beta2, const float ombeta2,
                           const float eps, const float weight_decay, const float inv_bc1,
                           const float inv_bc2, __global float *part_,
                           const ulong parto CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    __local float red_[RL];
    const ulong gi = get_group_id(0);
    p_ += po;
    g_ += go;
    m_ += mo;
    v_ += vo;
    STORAGE_BEGIN;
    ulong c0, c1;
    group_block(gi, groups, n, &c0, &c1);
    sumR acc_p[RACC], acc_r[RACC];
    sumR_clear(acc_p);
    sumR_clear(acc_r);
#define LAMB_BODY(e, cnt, k)                                                                \
    lamb_chunk(p_, g_, m_, v_, GC_ARGS e, cnt, gmul, beta1, c_grad, beta2, ombeta2, eps,   \
               weight_decay, inv_bc1, inv_bc2, &acc_p[k], &acc_r[k] THETA_LOAD_FN_ARGS)
    FOR_CHUNKS_RUNS(c0, c1, n, LAMB_BODY, 2); /* 6 arrays: 2 runs are enough streams */
#undef LAMB_BODY
    const float sp = group_sum(sumR_total(acc_p), red_);
    const float sr = group_sum(sumR_total(acc_r), red_);
    if (get_local_id(0) == 0) {
        part_[parto + gi] = sp;
        part_[parto + groups + gi] = sr;
    }
}

/* One chunk of lamb_update. */
CHUNK_INLINE void lamb_update_chunk(__global PSTORE *p_, __global const SSTORE *m_,
                              __global const SSTORE *v_, const ulong e, const uint cnt,
                              const float step, const float eps, const float weight_decay,
                              const float inv_bc1, const float inv_bc2 THETA_FN_PARAMS)
{
    floatR p = THETA_LOADR(p_, e, cnt);
    floatR r = (LOADRS(m_, e, cnt) * inv_bc1) / (sqrt(LOADRS(v_, e, cnt) * inv_bc2) + eps) +
               weight_decay * p;
    THETA_STORER(p - step * r, p_, e, cnt);
}

/* sums_[so] = Σθ², sums_[so+1] = Σr² from sum_final. Work-items take RW-element chunks
 * (FOR_ITEM_CHUNKS): PoCL does not vectorise this kernel across work-items (the trust ratio's
 * test defeats it: 4x slower at VW 1), so each work-item works on float16s itself. */
__kernel void lamb_update(__global PSTORE *p_, const ulong po, __global const SSTORE *m_,
                          const ulong mo, __global const SSTORE *v_, const ulong vo,
                          const ulong n, __global const float *sums_, const ulong so,
                          const float lr, const float eps, const float weight_decay,
                          const float inv_bc1, const float inv_bc2 CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_SKIP;
    if (!UPDATE_ITEMS_OK(n))
        return;
    p_ += po;
    m_ += mo;
    v_ += vo;
    STORAGE_BEGIN;
    const float wn = sqrt(sums_[so]), rn = sqrt(sums_[so + 1]);
    /* 1 when a norm is 0 (apex's FusedLAMB); a NaN norm stays NaN, as there (it was 1: the
       other elements took finite steps of the wrong size) */
    const float trust = (wn == 0.0f || rn == 0.0f) ? 1.0f : wn / rn;
    const float step = lr * trust;
#define UPDATE_BODY(e, cnt, s)                                                              \
    lamb_update_chunk(p_, m_, v_, e, cnt, step, eps, weight_decay, inv_bc1,                \
                      inv_bc2 THETA_FN_ARGS)
    FOR_ITEM_CHUNKS_THETA(n, UPDATE_BODY);
#undef UPDATE_BODY
}
