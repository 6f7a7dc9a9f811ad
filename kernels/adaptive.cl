/* SPDX-License-Identifier: MIT */
/* Per-parameter adaptive rates without momentum-of-gradient bias correction:
 * Adagrad, Adadelta, RMSprop (torch.optim semantics). Defines: MOMENTUM, CENTERED
 * (RMSprop variants), MAXIMIZE. */
#ifndef MOMENTUM
#define MOMENTUM 0
#endif
#ifndef CENTERED
#define CENTERED 0
#endif

/* Adagrad: s += g²; θ -= clr * g / (sqrt(s) + eps), clr = lr / (1 + (t-1) lr_decay). */
__kernel void adagrad_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                           const ulong go, __global float *s_, const ulong so, GC_PARAMS const ulong N_ARG,
                           float gmul, float eps, float weight_decay,
                           float clr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(eps, weight_decay, clr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    s_ += (long)so + RS_;
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV s = LOAD(s_) + g * g;
    p = p - clr * (g / (sqrt(s) + eps));
    STORE(s, s_);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
}

/* Adadelta: v = ρv + (1-ρ)g²; δ = sqrt(u + eps) / sqrt(v + eps) * g; u = ρu + (1-ρ)δ²;
 * θ -= lr δ. */
__kernel void adadelta_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                            const ulong go, __global float *v_, const ulong vo,
                            __global float *u_, const ulong uo, GC_PARAMS const ulong N_ARG,
                            float gmul, float rho, float omrho, float eps,
                            float weight_decay, float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(rho, omrho, eps, weight_decay, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    v_ += (long)vo + RS_;
    u_ += (long)uo + RS_;
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV v = rho * LOAD(v_) + omrho * g * g;
    floatV u = LOAD(u_);
    /* sqrt(u + eps) / sqrt(v + eps) as torch, with one square root instead of two (the
       same value to an ulp; the square root unit is what bounds this kernel on a CPU) */
    floatV delta = sqrt((u + eps) / (v + eps)) * g;
    u = rho * u + omrho * delta * delta;
    p = p - lr * delta;
    STORE(v, v_);
    STORE(u, u_);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
}

/* RMSprop: v = αv + (1-α)g²; centered: a = αa + (1-α)g, d = sqrt(v - a²) + eps, else
 * d = sqrt(v) + eps; momentum: b = μb + g/d, θ -= lr b; else θ -= lr g/d.
 * State order: square_avg, [momentum_buffer], [grad_avg]. */
__kernel void rmsprop_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                           const ulong go, __global float *v_, const ulong vo,
#if MOMENTUM
                           __global float *b_, const ulong bo,
#endif
#if CENTERED
                           __global float *a_, const ulong ao,
#endif
                           GC_PARAMS const ulong N_ARG, float gmul, float alpha, float omalpha,
                           float eps, float weight_decay, float momentum,
                           float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(alpha, omalpha, eps, weight_decay, momentum, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    v_ += (long)vo + RS_;
#if MOMENTUM
    b_ += (long)bo + RS_;
#endif
#if CENTERED
    a_ += (long)ao + RS_;
#endif
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV v = alpha * LOAD(v_) + omalpha * g * g;
    STORE(v, v_);
#if CENTERED
    floatV a = alpha * LOAD(a_) + omalpha * g;
    STORE(a, a_);
    floatV d = sqrt(v - a * a) + eps;
#else
    floatV d = sqrt(v) + eps;
#endif
#if MOMENTUM
    floatV b = momentum * LOAD(b_) + g / d;
    STORE(b, b_);
    p = p - lr * b;
#else
    p = p - lr * (g / d);
#endif
    THETA_STORE(p, p_);
    ELEMENTWISE_END
}
