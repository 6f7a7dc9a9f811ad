/* SPDX-License-Identifier: MIT */
/* Sign-based rules: Lion and SophiaG. Both decay θ first (decoupled: θ -= lrwd·θ, lrwd = lr·wd).
 * Defines: HESS (Sophia: fold an estimate ĥ into h after the update), MAXIMIZE. */
#ifndef HESS
#define HESS 0
#endif

/* Lion: θ -= lr sign(β1 m + (1-β1) g); then m = β2 m + (1-β2) g. sign(0) = 0. */
__kernel Q8_WG_ATTR void lion_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                        const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m) GC_PARAMS const ulong N_ARG,
                        float gmul, float beta1, float ombeta1, float beta2, float ombeta2,
                        float lrwd, float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, lrwd, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    p = p - lrwd * p; /* decoupled decay: θ - (lr·wd)·θ */
    floatV g = GC_APPLY(read_grad(LOADG(g_), gmul));
    floatV m = LOADS(m, 1);
    floatV c = beta1 * m + ombeta1 * g;
    p = p - lr * SIGN_NAN(c);
    m = beta2 * m + ombeta2 * g;
    STORES(m, m, 1);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(m, 1);
}

/* SophiaG (official code): m = β1 m + (1-β1) g;
 * θ -= lr sign(m) min(|m| / (gamma h + eps), 1), gamma = rho * bs;
 * HESS: h = β2 h + (1-β2) ĥ AFTER the update (h is read once, written once). */
__kernel Q8_WG_ATTR void sophia_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                          const ulong go, STATE_PTR(m), const ulong mo, STATE_EXTRA(m)
                          STATE_PTR(h), const ulong ho, STATE_EXTRA(h)
#if HESS
                          __global const float *hh_, const ulong hho,
#endif
                          GC_PARAMS const ulong N_ARG, float gmul, float beta1, float ombeta1,
                          float beta2, float ombeta2, float eps, float gamma,
                          float lrwd, float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(beta1, ombeta1, beta2, ombeta2, eps, gamma, lrwd, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    m_ += (long)mo + RS_;
    STATE_BEGIN(m);
    h_ += (long)ho + RS_;
    STATE_BEGIN(h);
#if HESS
    hh_ += hho;
#endif
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    p = p - lrwd * p; /* decoupled decay: θ - (lr·wd)·θ */
    floatV g = GC_APPLY(read_grad(LOADG(g_), gmul));
    floatV m = beta1 * LOADS(m, 1) + ombeta1 * g;
    floatV h = LOADS(h, 1);
    floatV ratio = MIN_NAN(fabs(m) / (gamma * h + eps), 1.0f);
    p = p - lr * (SIGN_NAN(m) * ratio);
    STORES(m, m, 1);
    THETA_STORE(p, p_);
#if HESS
    h = beta2 * h + ombeta2 * LOAD(hh_);
    STORES(h, h, 1);
#endif
    ELEMENTWISE_END
    STATE_END(m, 1);
    STATE_END(h, 1);
}
