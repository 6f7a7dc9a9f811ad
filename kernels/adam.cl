/* SPDX-License-Identifier: MIT */
/* Adam family, each rule one fused kernel: Adam / AdamW / AMSGrad, Adamax, NAdam, RAdam,
 * AdaMod, diffGrad, ADOPT, AdEMAMix. Per-step factors (bias corrections, schedules, rectification) arrive
 * as float arguments computed on the host in double.
 * Defines: DECOUPLED (AdamW decay), AMSGRAD, MAXIMIZE. */
#ifndef DECOUPLED
#define DECOUPLED 0
#endif
#ifndef AMSGRAD
#define AMSGRAD 0
#endif

/* Adam (L2 decay) and AdamW (decoupled decay θ - (lr·wd)·θ, lrwd = lr·wd), torch 1.13:
 * θ -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps), step_size = lr / bc1. */
__kernel Q8_WG_ATTR void adam_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                        const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                        STATE_PTR(v), const ulong vo, STATE_EXTRA(v)
#if AMSGRAD
                        STATE_PTR(vmax), const ulong vmaxo, STATE_EXTRA(vmax)
#endif
                        GC_PARAMS const ulong N_ARG, float gmul, float beta1, float ombeta1, float beta2, float ombeta2,
                        float eps, float weight_decay, float lrwd,
                        float step_size, float inv_sqrt_bc2 RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, eps, weight_decay, lrwd, step_size, inv_sqrt_bc2);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
#if AMSGRAD
    vmax_ += (long)vmaxo + RS_;
    STATE_BEGIN(vmax);
#endif
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
#if DECOUPLED
    p = p - lrwd * p; /* decoupled decay: θ - (lr·wd)·θ */
#else
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
#endif
    g = GC_APPLY(g);
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
#if AMSGRAD
    floatV vmax = MAX_NAN(LOADS(vmax, 0), v);
    STORES(vmax, vmax, 0);
    floatV denom = sqrt(vmax) * inv_sqrt_bc2 + eps;
#else
    floatV denom = sqrt(v) * inv_sqrt_bc2 + eps;
#endif
    p = p - step_size * (m / denom);
    STORES(m, m, 1);
    STORES(v, v, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(v, 0);
#if AMSGRAD
    STATE_END(vmax, 0);
#endif
}

/* Adamax (torch 1.13): u = max(β2*u, |g| + eps); θ -= (lr/bc1) * m / u. */
__kernel Q8_WG_ATTR void adamax_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                          const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                          STATE_PTR(u), const ulong uo, STATE_EXTRA(u) GC_PARAMS const ulong N_ARG, float gmul,
                          float beta1, float ombeta1, float beta2, float ombeta2, float eps,
                          float weight_decay, float clr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, eps, weight_decay, clr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    u_ += (long)uo + RS_;
    STATE_BEGIN(u);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV u = MAX_NAN(beta2 * LOADS(u, 0), fabs(g) + eps);
    p = p - clr * (m / u);
    STORES(m, m, 1);
    STORES(u, u, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(u, 0);
}

/* NAdam (Dozat; torch >= 2.0): d = sqrt(v / bc2) + eps;
 * θ -= c_grad * g / d; θ -= c_mom * m / d, with c_grad = lr(1-μ_t)/(1-Π_t) and
 * c_mom = lr μ_{t+1} / (1 - Π_t μ_{t+1}). */
__kernel Q8_WG_ATTR void nadam_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                         const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                         STATE_PTR(v), const ulong vo, STATE_EXTRA(v) GC_PARAMS const ulong N_ARG, float gmul,
                         float beta1, float ombeta1, float beta2, float ombeta2, float eps,
                         float weight_decay, float inv_bc2, float c_grad,
                         float c_mom RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, eps, weight_decay, inv_bc2, c_grad, c_mom);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
    /* torch's two addcdiv by the same denominator, with one division */
    floatV inv_denom = 1.0f / (sqrt(v * inv_bc2) + eps);
    p = p - c_grad * (g * inv_denom);
    p = p - c_mom * (m * inv_denom);
    STORES(m, m, 1);
    STORES(v, v, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(v, 0);
}

/* RAdam (torch 1.13): rectified (ρ_t > 5): θ -= c * m / (sqrt(v) + eps) with
 * c = lr * r_t * sqrt(bc2) / bc1; otherwise θ -= (lr / bc1) * m, given as c too.
 * Ranger (DECOUPLED): θ -= (wd·lr)·θ first instead of L2 decay. */
__kernel Q8_WG_ATTR void radam_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                         const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                         STATE_PTR(v), const ulong vo, STATE_EXTRA(v) GC_PARAMS const ulong N_ARG,
                         float gmul, int rectified, float beta1,
                         float ombeta1, float beta2, float ombeta2,
                         float eps, float weight_decay, float lrwd,
                         float c RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(rectified, beta1, ombeta1, beta2, ombeta2, eps, weight_decay, lrwd, c);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
#if DECOUPLED
    p = p - lrwd * p; /* decoupled decay: θ - (lr·wd)·θ */
#else
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
#endif
    g = GC_APPLY(g);
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
    if (rectified)
        p = p - c * (m / (sqrt(v) + eps));
    else
        p = p - c * m;
    STORES(m, m, 1);
    STORES(v, v, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(v, 0);
}

/* AdaMod (official code): η = step / (sqrt(v) + eps), step = lr sqrt(bc2) / bc1;
 * s = β3 s + (1-β3) η; θ -= min(η, s) * m; decoupled decay θ -= (lr·wd)·θ first. */
__kernel Q8_WG_ATTR void adamod_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                          const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                          STATE_PTR(v), const ulong vo, STATE_EXTRA(v) STATE_PTR(s),
                          const ulong so, STATE_EXTRA(s) GC_PARAMS const ulong N_ARG, float gmul, float beta1, float ombeta1,
                          float beta2, float ombeta2, float beta3, float ombeta3, float eps,
                          float lrwd, float step_size RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, beta3, ombeta3, eps, lrwd, step_size);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    s_ += (long)so + RS_;
    STATE_BEGIN(s);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    p = p - lrwd * p; /* decoupled decay: θ - (lr·wd)·θ */
    floatV g = GC_APPLY(read_grad(LOADG(g_), gmul));
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
    floatV eta = step_size / (sqrt(v) + eps);
    floatV s = beta3 * LOADS(s, 0) + ombeta3 * eta;
    p = p - MIN_NAN(eta, s) * m;
    STORES(m, m, 1);
    STORES(v, v, 0);
    STORES(s, s, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(v, 0);
    STATE_END(s, 0);
}

/* diffGrad (v2 code): ξ = 1 / (1 + exp(-|g_prev - g|)); θ -= step * ξ m / (sqrt(v) + eps),
 * step = lr sqrt(bc2) / bc1; L2 decay; the previous gradient is state. */
__kernel Q8_WG_ATTR void diffgrad_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                            const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                            STATE_PTR(v), const ulong vo, STATE_EXTRA(v) STATE_PTR(prev),
                            const ulong prevo, STATE_EXTRA(prev) GC_PARAMS const ulong N_ARG, float gmul,
                            float beta1, float ombeta1, float beta2, float ombeta2, float eps,
                            float weight_decay, float step_size RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, eps, weight_decay, step_size);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    prev_ += (long)prevo + RS_;
    STATE_BEGIN(prev);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
    /* ξ·m/d with ξ = 1/(1 + exp(-|Δg|)), written with one division: m / ((1 + e)·d) */
    floatV friction = 1.0f + exp(-fabs(LOADS(prev, 1) - g));
    p = p - step_size * (m / (friction * (sqrt(v) + eps)));
    STORES(m, m, 1);
    STORES(v, v, 0);
    STORES(g, prev, 1);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(v, 0);
    STATE_END(prev, 1);
}

/* ADOPT (iShohei220/adopt): first != 0 (the first call) only sets v = g² and leaves θ and m.
 * Later: decoupled decay θ -= lrwd·θ (lrwd 0 with L2 decay, weight_decay 0 when decoupled);
 * u = clamp(g / max(sqrt(v), eps), ±bound) with v of the earlier steps only; m = lerp(m, u,
 * 1-β1); θ -= lr·m; then v = β2 v + (1-β2) g². No bias correction. */
__kernel Q8_WG_ATTR void adopt_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                         const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                         STATE_PTR(v), const ulong vo, STATE_EXTRA(v) GC_PARAMS const ulong N_ARG,
                         float gmul, int first, float beta1, float ombeta1, float beta2,
                         float ombeta2, float eps, float weight_decay, float lrwd, float bound,
                         float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(first, beta1, ombeta1, beta2, ombeta2, eps, weight_decay, lrwd, bound, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV m = LOADS(m, 1);
    floatV v = LOADS(v, 0);
    if (first) {
        v = g * g;
    } else {
        p = p - lrwd * p; /* decoupled decay (lrwd 0 otherwise) */
        floatV u = CLAMP_NAN(g / MAX_NAN(sqrt(v), eps), -bound, bound);
        m = ombeta1 < 0.5f ? m + ombeta1 * (u - m) : u - (u - m) * beta1;
        p = p - lr * m;
        v = beta2 * v + ombeta2 * g * g; /* after the update: g never normalises itself */
    }
    STORES(m, m, 1);
    STORES(v, v, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(v, 0);
}

/* AdEMAMix (apple/ml-ademamix): m1, v as Adam, m2 = β3_t m2 + (1-β3_t) g never bias
 * corrected; θ -= lr·((m1/bc1 + α_t m2) / (sqrt(v)/sqrt(bc2) + eps) + wd·θ). α_t and β3_t
 * (the warmup schedulers) arrive from the host. */
__kernel Q8_WG_ATTR void ademamix_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                            const ulong go, STATE_PTR(m1), const ulong m1o, STATE_EXTRA(m1)
                            STATE_PTR(m2), const ulong m2o, STATE_EXTRA(m2) STATE_PTR(v),
                            const ulong vo, STATE_EXTRA(v) GC_PARAMS const ulong N_ARG,
                            float gmul, float beta1, float ombeta1, float beta2, float ombeta2,
                            float beta3, float ombeta3, float eps, float weight_decay, float lr,
                            float inv_bc1, float inv_sqrt_bc2,
                            float alpha RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, beta3, ombeta3, eps, weight_decay, lr, inv_bc1,
                 inv_sqrt_bc2, alpha);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m1_ += (long)m1o + RS_;
    STATE_BEGIN(m1);
    m2_ += (long)m2o + RS_;
    STATE_BEGIN(m2);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = GC_APPLY(read_grad(LOADG(g_), gmul));
    floatV m1 = beta1 * LOADS(m1, 1) + ombeta1 * g;
    floatV m2 = beta3 * LOADS(m2, 1) + ombeta3 * g;
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
    floatV u = (m1 * inv_bc1 + alpha * m2) / (sqrt(v) * inv_sqrt_bc2 + eps);
    if (weight_decay != 0.0f)
        u = u + weight_decay * p;
    p = p - lr * u;
    STORES(m1, m1, 1);
    STORES(m2, m2, 1);
    STORES(v, v, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m1, 1);
    STATE_END(m2, 1);
    STATE_END(v, 0);
}
