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
__kernel Q8_WG_ATTR void adagrad_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                           const ulong go, STATE_PTR(s), const ulong so, STATE_EXTRA(s) GC_PARAMS const ulong N_ARG,
                           float gmul, float eps, float weight_decay,
                           float clr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(eps, weight_decay, clr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    s_ += (long)so + RS_;
    STATE_BEGIN(s);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV s = LOADS(s, 0) + g * g;
    p = p - clr * (g / (sqrt(s) + eps));
    STORES(s, s, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(s, 0);
}

/* Adadelta: v = ρv + (1-ρ)g²; δ = sqrt(u + eps) / sqrt(v + eps) * g; u = ρu + (1-ρ)δ²;
 * θ -= lr δ. */
__kernel Q8_WG_ATTR void adadelta_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                            const ulong go, STATE_PTR(v), const ulong vo, STATE_EXTRA(v)
                            STATE_PTR(u), const ulong uo, STATE_EXTRA(u) GC_PARAMS const ulong N_ARG,
                            float gmul, float rho, float omrho, float eps,
                            float weight_decay, float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(rho, omrho, eps, weight_decay, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    u_ += (long)uo + RS_;
    STATE_BEGIN(u);
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV v = rho * LOADS(v, 0) + omrho * g * g;
    floatV u = LOADS(u, 0);
    /* sqrt(u + eps) / sqrt(v + eps) as torch, with one square root instead of two (the
       same value to an ulp; the square root unit is what bounds this kernel on a CPU) */
    floatV delta = sqrt((u + eps) / (v + eps)) * g;
    u = rho * u + omrho * delta * delta;
    p = p - lr * delta;
    STORES(v, v, 0);
    STORES(u, u, 0);
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(v, 0);
    STATE_END(u, 0);
}

/* RMSprop: v = αv + (1-α)g²; centered: a = αa + (1-α)g, d = sqrt(v - a²) + eps, else
 * d = sqrt(v) + eps; momentum: b = μb + g/d, θ -= lr b; else θ -= lr g/d.
 * State order: square_avg, [momentum_buffer], [grad_avg]. */
__kernel Q8_WG_ATTR void rmsprop_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                           const ulong go, STATE_PTR(v), const ulong vo, STATE_EXTRA(v)
#if MOMENTUM
                           STATE_PTR(b), const ulong bo, STATE_EXTRA(b)
#endif
#if CENTERED
                           STATE_PTR(a), const ulong ao, STATE_EXTRA(a)
#endif
                           GC_PARAMS const ulong N_ARG, float gmul, float alpha, float omalpha,
                           float eps, float weight_decay, float momentum,
                           float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(alpha, omalpha, eps, weight_decay, momentum, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
#if MOMENTUM
    b_ += (long)bo + RS_;
    STATE_BEGIN(b);
#endif
#if CENTERED
    a_ += (long)ao + RS_;
    STATE_BEGIN(a);
#endif
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
    floatV v = alpha * LOADS(v, 0) + omalpha * g * g;
    STORES(v, v, 0);
#if CENTERED
    floatV a = alpha * LOADS(a, 1) + omalpha * g;
    STORES(a, a, 1);
    floatV d = sqrt(v - a * a) + eps;
#else
    floatV d = sqrt(v) + eps;
#endif
#if MOMENTUM
    floatV b = momentum * LOADS(b, 1) + g / d;
    STORES(b, b, 1);
    p = p - lr * b;
#else
    p = p - lr * (g / d);
#endif
    THETA_STORE(p, p_);
    ELEMENTWISE_END
    STATE_END(v, 0);
#if MOMENTUM
    STATE_END(b, 1);
#endif
#if CENTERED
    STATE_END(a, 1);
#endif
}
