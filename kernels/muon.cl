/* SPDX-License-Identifier: MIT */
/* Muon (K. Jordan et al. 2024, KellerJordan/Muon SingleDeviceMuon): the element-wise passes
 * around the Newton-Schulz GEMMs, which the host runs through CLBlast (host/muon.c):
 *  - muon_partial: b = lerp(b, g, 1-μ), U = nesterov ? lerp(g, b, μ) : b into the work
 *    buffer, and ΣU² per work-group (fixed-order partials, see reduce.cl), then sum_final;
 *  - muon_scale: X = U/(‖U‖_F + 1e-7) in place;
 *  - muon_poly, once per iteration: B = nb·A + na·I (the GEMM B += nc·A·A follows, then
 *    X' = B·X: a·X + (b·A + c·A²)·X as one product);
 *  - muon_update: θ = θ - lr·wd·θ - lr·(scale·X).
 * torch.lerp's two forms: a + w(b - a) for w < 0.5, else b - (b - a)(1 - w).
 * The kernels that write θ, b or U skip a step the device skipped (CTRL); the GEMMs and
 * muon_poly touch only the work buffers. Defines: MAXIMIZE, GT/SQ and θ's storage. */

static inline floatR muon_lerpR(floatR a, floatR b, float w, float omw)
{
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * omw;
}

/* One chunk of muon_partial: cnt = RW (constant in the main loop) or the tail's length. */
CHUNK_INLINE void muon_chunk(__global const GSTORE *g_, __global SSTORE *b_, __global float *u_,
                             const ulong e, const uint cnt, const float gmul, const float w,
                             const float omw, const float mu, const float ommu,
                             const int nesterov, sumR *acc)
{
    const floatR g = read_gradR(loadRG(g_ + e, cnt), gmul);
    const floatR b = muon_lerpR(LOADRS(b_, e, cnt), g, w, omw);
    STORERS(b, b_, e, cnt);
    const floatR u = nesterov ? muon_lerpR(g, b, mu, ommu) : b;
    storeR(u, u_ + e, cnt);
    sumR_addsq(acc, maskR(u, cnt));
}

/* Work-group gi of `groups` (group_block in chunks.cl) updates b over its block, writes U and
 * its ΣU² to part[gi]. w = 1-μ (the buffer's lerp weight), omw = μ; mu = μ, ommu = 1-μ. */
__kernel void muon_partial(__global const GSTORE *g_, const ulong go, __global SSTORE *b_,
                           const ulong bo, __global float *u_, const ulong uo, const ulong n,
                           const ulong groups, float gmul, const float w, const float omw,
                           const float mu, const float ommu, const int nesterov,
                           __global float *part_, const ulong parto CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
    __local float red_[RL];
    const ulong gi = get_group_id(0);
    g_ += go;
    b_ += bo;
    u_ += uo;
    ulong c0, c1;
    group_block(gi, groups, n, &c0, &c1);
    sumR acc[RACC];
    sumR_clear(acc);
#define MUON_BODY(e, cnt, k)                                                                \
    muon_chunk(g_, b_, u_, e, cnt, gmul, w, omw, mu, ommu, nesterov, &acc[k])
    FOR_CHUNKS_RUNS(c0, c1, n, MUON_BODY, 2); /* 3 arrays: 2 runs */
#undef MUON_BODY
    const float s = group_sum(sumR_total(acc), red_);
    if (get_local_id(0) == 0)
        part_[parto + gi] = s;
}

/* X = U/(sqrt(sums_[so]) + eps) in place, chunks as the update passes (FOR_ITEM_CHUNKS). */
__kernel void muon_scale(__global float *u_, const ulong uo, const ulong n,
                         __global const float *sums_, const ulong so,
                         const float eps CTRL_PARAMS)
{
    CTRL_SKIP;
    if (!UPDATE_ITEMS_OK(n))
        return;
    u_ += uo;
    const float d = sqrt(sums_[so]) + eps;
#define SCALE_BODY(e, cnt, s) storeR(loadR(u_ + (e), cnt) / d, u_ + (e), cnt)
    FOR_ITEM_CHUNKS(n, SCALE_BODY);
#undef SCALE_BODY
}

/* out = nb·A + na·I for the m × m matrix A (row-major), one row per work-item (no index
 * division per element). */
__kernel void muon_poly(__global const float *a_, const ulong ao, const ulong m, const float nb,
                        const float na, __global float *out_, const ulong oo)
{
    const ulong r = get_global_id(0);
    if (r >= m)
        return;
    __global const float *a = a_ + ao + r * m;
    __global float *o = out_ + oo + r * m;
    for (ulong j = 0; j < m; j++)
        o[j] = nb * a[j];
    o[r] += na;
}

/* One chunk of muon_update. */
CHUNK_INLINE void muon_update_chunk(__global PSTORE *p_, __global const float *x_, const ulong e,
                                    const uint cnt, const float lrwd, const float lr,
                                    const float scale THETA_FN_PARAMS)
{
    floatR p = THETA_LOADR(p_, e, cnt);
    p = p - lrwd * p;
    THETA_STORER(p - lr * (scale * loadR(x_ + e, cnt)), p_, e, cnt);
}

/* θ = θ - lrwd·θ - lr·(scale·X), X the Newton-Schulz result (same layout as θ). */
__kernel void muon_update(__global PSTORE *p_, const ulong po, __global const float *x_,
                          const ulong xo, const ulong n, const float lrwd, const float lr,
                          const float scale CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_SKIP;
    if (!UPDATE_ITEMS_OK(n))
        return;
    p_ += po;
    x_ += xo;
    STORAGE_BEGIN;
#define UPDATE_BODY(e, cnt, s) muon_update_chunk(p_, x_, e, cnt, lrwd, lr, scale THETA_FN_ARGS)
    FOR_ITEM_CHUNKS_THETA(n, UPDATE_BODY);
#undef UPDATE_BODY
}
