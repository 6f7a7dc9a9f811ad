/* Small tensor operations of the optimizer level: gradient accumulation (axpby), the
 * Lookahead synchronisation, and the gradient check of AMP / clipping (fixed-order partials,
 * see reduce.cl for the final pass). */

/* dst = beta·dst + alpha·src (beta = 0 never reads dst, so it may hold garbage or NaN). */
__kernel void axpby(__global float *d_, const ulong dof, __global const float *s_,
                    const ulong sof, const ulong n, const float alpha, const float beta)
{
    d_ += dof;
    s_ += sof;
    ELEMENTWISE_BEGIN
    floatV x = alpha * LOAD(s_);
    if (beta != 0.0f)
        x = x + beta * LOAD(d_);
    STORE(x, d_);
    ELEMENTWISE_END
}

/* Lookahead: θ = φ + α(θ - φ); φ = θ. */
__kernel void lookahead_sync(__global float *p_, const ulong po, __global float *s_,
                             const ulong so, const ulong n, const float alpha CTRL_PARAMS)
{
    CTRL_SKIP;
    p_ += po;
    s_ += so;
    ELEMENTWISE_BEGIN
    floatV s = LOAD(s_);
    floatV p = s + alpha * (LOAD(p_) - s);
    STORE(p, p_);
    STORE(p, s_);
    ELEMENTWISE_END
}

/* One chunk of grad_check_partial: Σ(scale·g)² of the finite values, count of the others. */
CHUNK_INLINE void grad_check_chunk(__global const float *g_, const ulong e, const uint cnt,
                             const float scale, kahanR *acc, floatR *bad)
{
    const floatR v = loadR(g_ + e, cnt);
    const intR fin = isfinite(v);
    const floatR x = select((floatR)(0.0f), v * scale, fin);
    kahanR_add(acc, maskR(x * x, cnt));
    *bad += select((floatR)(1.0f), (floatR)(0.0f), fin); /* padding lanes read 0: finite */
}

/* Item i of `items` (see reduce_block in common.cl): Σ (scale·g)² over its block of g into
 * out[i], and the count of non-finite values into out[items + i]. */
__kernel void grad_check_partial(__global const float *g_, const ulong go, const ulong n,
                                 const ulong items, const float scale, __global float *out_,
                                 const ulong oo)
{
    const ulong i = get_global_id(0);
    if (i >= items)
        return;
    g_ += go;
    ulong c0, c1;
    reduce_block(i, items, n, &c0, &c1);
    kahanR acc[RACC];
    kahanR_clear(acc);
    floatR bad = (floatR)(0.0f); /* integer counts: exact below 2^24 per block */
#define CHECK_BODY(e, cnt, k) grad_check_chunk(g_, e, cnt, scale, &acc[k], &bad)
    FOR_CHUNKS(c0, c1, n, CHECK_BODY);
#undef CHECK_BODY
    out_[oo + i] = kahanR_total(acc);
    float b[RW], nbad = 0.0f;
    vstore16(bad, 0, b);
    for (uint k = 0; k < RW; k++)
        nbad += b[k];
    out_[oo + items + i] = nbad;
}

/* The verdict of an optimizer step (one work-item): the gradient check's per-unit sums
 * (Σ(g/scale)², non-finite count; `units` pairs at sums_) added in unit order, the norm, the
 * skip decision (abort word set by the host, or AMP and a non-finite gradient) and the clip
 * coefficient max_norm / (norm + 1e-6) clamped to 1 (torch.nn.utils.clip_grad_norm_), into
 * the control words (see CTRL in common.cl). max_norm 0: no clipping. */
__kernel void step_verdict(__global uint *ctl_, const ulong ctlo, __global const float *sums_,
                           const ulong so, const ulong units, const float max_norm,
                           const int amp)
{
    if (get_global_id(0) != 0)
        return;
    __global uint *c = ctl_ + ctlo;
    kahan acc = {0.0f, 0.0f};
    float bad = 0.0f;
    for (ulong u = 0; u < units; u++) {
        kahan_add(&acc, sums_[so + 2 * u]);
        bad += sums_[so + 2 * u + 1];
    }
    const int nonfinite = bad > 0.0f;
    const float norm = units == 0 || nonfinite ? NAN : sqrt(acc.sum);
    float mul = 1.0f;
    if (max_norm > 0.0f) {
        const float coef = max_norm / (norm + 1e-6f);
        if (isfinite(coef) && coef < 1.0f)
            mul = coef;
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
