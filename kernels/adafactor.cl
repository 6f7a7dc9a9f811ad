/* Adafactor (Shazeer & Stern 2018) with the semantics of Hugging Face transformers.
 *
 * A tensor with >= 2 dims is seen as B × R × C (B = product of the leading dims) and keeps
 * row statistics Rv (B·R) and column statistics Cv (B·C): exponential averages of the row and
 * column means of g² + eps1. v̂ = Rv·Cvᵀ / mean(Rv) per batch, u = g / sqrt(v̂). A 1-D tensor
 * keeps a full V. Passes: rows, cols, row means (factored) -> partial sums of u² and θ² ->
 * sum_final -> update (u clipped by max(1, RMS(u)/d), scaled by α_t, optional first moment,
 * decoupled decay α_t·wd). Every sum runs in a fixed order (see reduce.cl).
 * Defines: FACTORED, BETA1, GC, MAXIMIZE. */
#ifndef FACTORED
#define FACTORED 1
#endif
#ifndef BETA1
#define BETA1 0
#endif

__kernel void adafactor_rows(__global const float *g_, const ulong go, __global float *r_,
                             const ulong ro, GC_PARAMS const ulong nrows, const ulong cols,
                             const float gmul, const float eps1, const float beta2t,
                             const float ombeta2t)
{
    const ulong row = get_global_id(0);
    if (row >= nrows)
        return;
    __global const float *g = g_ + go + row * cols;
    kahan acc = {0.0f, 0.0f};
    for (ulong c = 0; c < cols; c++) {
        float x = GC_APPLY1(read_grad1(g[c], gmul), row * cols + c);
        kahan_add(&acc, x * x + eps1);
    }
    r_[ro + row] = beta2t * r_[ro + row] + ombeta2t * (acc.sum / (float)cols);
}

__kernel void adafactor_cols(__global const float *g_, const ulong go, __global float *c_,
                             const ulong co, GC_PARAMS const ulong batches, const ulong rows,
                             const ulong cols, const float gmul, const float eps1,
                             const float beta2t, const float ombeta2t)
{
    const ulong j = get_global_id(0);
    if (j >= batches * cols)
        return;
    const ulong b = j / cols, c = j % cols;
    const ulong base = b * rows * cols + c;
    __global const float *g = g_ + go;
    kahan acc = {0.0f, 0.0f};
    for (ulong r = 0; r < rows; r++) {
        float x = GC_APPLY1(read_grad1(g[base + r * cols], gmul), base + r * cols);
        kahan_add(&acc, x * x + eps1);
    }
    c_[co + j] = beta2t * c_[co + j] + ombeta2t * (acc.sum / (float)rows);
}

/* out[b] = mean of Rv over batch b's R rows. */
__kernel void adafactor_rmean(__global const float *r_, const ulong ro, const ulong batches,
                              const ulong rows, __global float *out_, const ulong oo)
{
    const ulong b = get_global_id(0);
    if (b >= batches)
        return;
    __global const float *r = r_ + ro + b * rows;
    kahan acc = {0.0f, 0.0f};
    for (ulong k = 0; k < rows; k++)
        kahan_add(&acc, r[k]);
    out_[oo + b] = acc.sum / (float)rows;
}

/* The unclipped update u for element e. Factored: s_ = Rv, t_ = Cv, rm_ = row means;
 * 1-D: s_ = V (already updated). */
inline float adafactor_u(float g, ulong e, __global const float *s_, __global const float *t_,
                         __global const float *rm_, ulong rows, ulong cols)
{
#if FACTORED
    const ulong row = e / cols, b = row / rows;
    return g * rsqrt(s_[row] / rm_[b]) * rsqrt(t_[b * cols + e % cols]);
#else
    (void)t_;
    (void)rm_;
    (void)rows;
    (void)cols;
    return g * rsqrt(s_[e]);
#endif
}

__kernel void adafactor_partial(__global const float *p_, const ulong po,
                                __global const float *g_, const ulong go, __global float *s_,
                                const ulong so, __global const float *t_, const ulong to,
                                __global const float *rm_, const ulong rmo, GC_PARAMS
                                const ulong n, const ulong rows, const ulong cols,
                                const ulong stride, const float gmul, const float eps1,
                                const float beta2t, const float ombeta2t,
                                __global float *part_, const ulong parto)
{
    const ulong i = get_global_id(0);
    if (i >= stride)
        return;
    p_ += po;
    g_ += go;
    s_ += so;
    t_ += to;
    rm_ += rmo;
    kahan acc_u = {0.0f, 0.0f}, acc_p = {0.0f, 0.0f};
    for (ulong e = i; e < n; e += stride) {
        float g = GC_APPLY1(read_grad1(g_[e], gmul), e);
#if !FACTORED
        s_[e] = beta2t * s_[e] + ombeta2t * (g * g + eps1);
#endif
        float u = adafactor_u(g, e, s_, t_, rm_, rows, cols);
        float p = p_[e];
        kahan_add(&acc_u, u * u);
        kahan_add(&acc_p, p * p);
    }
    part_[parto + i] = acc_u.sum;
    part_[parto + stride + i] = acc_p.sum;
}

/* sums_[so] = Σu², sums_[so+1] = Σθ² (θ before this step). rho_t: relative step size or lr. */
__kernel void adafactor_update(__global float *p_, const ulong po, __global const float *g_,
                               const ulong go, __global const float *s_, const ulong so,
                               __global const float *t_, const ulong to,
                               __global const float *rm_, const ulong rmo,
#if BETA1
                               __global float *m_, const ulong mo,
#endif
                               GC_PARAMS const ulong n, const ulong rows, const ulong cols,
                               __global const float *sums_, const ulong sumo,
                               const float gmul, const float rho_t, const float eps2,
                               const float clip_threshold, const int scale_parameter,
                               const float weight_decay, const float beta1,
                               const float ombeta1)
{
    const ulong e = get_global_id(0);
    if (e >= n)
        return;
    p_ += po;
    g_ += go;
    s_ += so;
    t_ += to;
    rm_ += rmo;
    const float inv_n = 1.0f / (float)n;
    const float rms_u = sqrt(sums_[sumo] * inv_n);
    const float rms_p = sqrt(sums_[sumo + 1] * inv_n);
    const float alpha = scale_parameter ? fmax(eps2, rms_p) * rho_t : rho_t;
    const float scale = alpha / fmax(1.0f, rms_u / clip_threshold);
    float g = GC_APPLY1(read_grad1(g_[e], gmul), e);
    float u = adafactor_u(g, e, s_, t_, rm_, rows, cols) * scale;
#if BETA1
    m_ += mo;
    u = beta1 * m_[e] + ombeta1 * u;
    m_[e] = u;
#else
    (void)beta1;
    (void)ombeta1;
#endif
    float p = p_[e];
    if (weight_decay != 0.0f)
        p = p - weight_decay * alpha * p;
    p_[e] = p - u;
}
