/* LAMB (You et al., Algorithm 2): Adam moments with bias correction, r = m̂/(sqrt(v̂)+eps) +
 * wd·θ, and a per-tensor trust ratio ‖θ‖/‖r‖ (1 when either norm is 0, applied also when
 * wd = 0). Two passes over the tensor: lamb_partial updates m and v and sums θ² and r²
 * (fixed-order partials, see reduce.cl); after sum_final, lamb_update applies the step.
 * Defines: GC, MAXIMIZE. */

__kernel void lamb_partial(__global const float *p_, const ulong po, __global const float *g_,
                           const ulong go, __global float *m_, const ulong mo,
                           __global float *v_, const ulong vo, GC_PARAMS const ulong n,
                           const ulong stride, const float gmul, const float beta1,
                           const float c_grad, const float beta2, const float ombeta2,
                           const float eps, const float weight_decay, const float inv_bc1,
                           const float inv_bc2, __global float *part_, const ulong parto)
{
    const ulong i = get_global_id(0);
    if (i >= stride)
        return;
    p_ += po;
    g_ += go;
    m_ += mo;
    v_ += vo;
    kahan acc_p = {0.0f, 0.0f}, acc_r = {0.0f, 0.0f};
    for (ulong e = i; e < n; e += stride) {
        float g = GC_APPLY1(read_grad1(g_[e], gmul), e);
        float p = p_[e];
        float m = beta1 * m_[e] + c_grad * g;
        float v = beta2 * v_[e] + ombeta2 * g * g;
        m_[e] = m;
        v_[e] = v;
        float r = (m * inv_bc1) / (sqrt(v * inv_bc2) + eps) + weight_decay * p;
        kahan_add(&acc_p, p * p);
        kahan_add(&acc_r, r * r);
    }
    part_[parto + i] = acc_p.sum;
    part_[parto + stride + i] = acc_r.sum;
}

/* sums_[so] = Σθ², sums_[so+1] = Σr² from sum_final. */
__kernel void lamb_update(__global float *p_, const ulong po, __global const float *m_,
                          const ulong mo, __global const float *v_, const ulong vo,
                          const ulong n, __global const float *sums_, const ulong so,
                          const float lr, const float eps, const float weight_decay,
                          const float inv_bc1, const float inv_bc2)
{
    p_ += po;
    m_ += mo;
    v_ += vo;
    const float wn = sqrt(sums_[so]), rn = sqrt(sums_[so + 1]);
    const float trust = (wn > 0.0f && rn > 0.0f) ? wn / rn : 1.0f;
    const float step = lr * trust;
    ELEMENTWISE_BEGIN
    floatV p = LOAD(p_);
    floatV r = (LOAD(m_) * inv_bc1) / (sqrt(LOAD(v_) * inv_bc2) + eps) + weight_decay * p;
    p = p - step * r;
    STORE(p, p_);
    ELEMENTWISE_END
}
