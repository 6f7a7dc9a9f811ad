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
                             const ulong so, const ulong n, const float alpha)
{
    p_ += po;
    s_ += so;
    ELEMENTWISE_BEGIN
    floatV s = LOAD(s_);
    floatV p = s + alpha * (LOAD(p_) - s);
    STORE(p, p_);
    STORE(p, s_);
    ELEMENTWISE_END
}

/* Item i of `stride`: Σ (scale·g)² over g[i + k·stride] into out[i], and the count of
 * non-finite values into out[stride + i]. */
__kernel void grad_check_partial(__global const float *g_, const ulong go, const ulong n,
                                 const ulong stride, const float scale, __global float *out_,
                                 const ulong oo)
{
    const ulong i = get_global_id(0);
    if (i >= stride)
        return;
    g_ += go;
    kahan acc = {0.0f, 0.0f};
    float bad = 0.0f;
    for (ulong e = i; e < n; e += stride) {
        float v = g_[e];
        if (!isfinite(v)) {
            bad += 1.0f;
            continue;
        }
        v *= scale;
        kahan_add(&acc, v * v);
    }
    out_[oo + i] = acc.sum;
    out_[oo + stride + i] = bad;
}
