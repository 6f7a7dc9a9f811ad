/* SPDX-License-Identifier: MIT */
/* SGD family: plain, momentum, dampening, Nesterov, L2 weight decay (torch.optim.SGD).
 * Defines: MOMENTUM (a momentum buffer is state), NESTEROV, MAXIMIZE.
 * first != 0 at step 1: the buffer is set to g without dampening, as torch does. */
#ifndef MOMENTUM
#define MOMENTUM 0
#endif
#ifndef NESTEROV
#define NESTEROV 0
#endif

__kernel Q8_WG_ATTR void sgd_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                       const ulong go,
#if MOMENTUM
                       STATE_PTR(b), const ulong bo, STATE_EXTRA(b)
#endif
                       GC_PARAMS const ulong N_ARG, float gmul, int first, float lr,
                       float weight_decay, float momentum, float dampening, float omdampening RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(first, lr, weight_decay, momentum, dampening, omdampening);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
#if MOMENTUM
    b_ += (long)bo + RS_;
    STATE_BEGIN(b);
#endif
    ELEMENTWISE_BEGIN
    floatV p = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * p;
    g = GC_APPLY(g);
#if MOMENTUM
    floatV b;
    if (first)
        b = g;
    else
        b = momentum * LOADS(b, 1) + omdampening * g;
    STORES(b, b, 1);
#if NESTEROV
    floatV d = g + momentum * b;
#else
    floatV d = b;
#endif
#else
    floatV d = g;
#endif
    p = p - lr * d;
    THETA_STORE(p, p_);
    ELEMENTWISE_END
#if MOMENTUM
    STATE_END(b, 1);
#endif
}
