/* SPDX-License-Identifier: MIT */
/* Schedule-Free AdamW and SGD (Defazio et al. 2024, facebookresearch/schedule_free
 * AdamWScheduleFree / SGDScheduleFree), each one fused kernel, and the switch between the
 * training point y (what θ holds while training) and the averaged x (eval mode).
 * Per-step values (c_t = w_t/Σw and its complement, lr_t, the y coefficient
 * lr_t·(β(1 - c_t) - 1)) are computed on the host in double.
 * first != 0 at the tensor's first step: z_0 = θ_0, so z is taken from θ, not read.
 * lerp(a, b, w) is torch.lerp's: a + w(b - a) for w < 0.5, else b - (b - a)(1 - w). */

/* AdamW: v = β2 v + (1-β2) g²; u = g / (sqrt(v/bc2) + eps) + wd·y; y = lerp(y, z, c);
 * y += ycoef·u; z -= lr·u. */
__kernel Q8_WG_ATTR void sf_adamw_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                            const ulong go, STATE_PTR(z), const ulong zo, STATE_EXTRA(z)
                            STATE_PTR(v), const ulong vo, STATE_EXTRA(v) GC_PARAMS
                            const ulong N_ARG, float gmul, int first, float beta2,
                            float ombeta2, float eps, float inv_bc2, float weight_decay,
                            float c, float omc, float ycoef,
                            float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(first, beta2, ombeta2, eps, inv_bc2, weight_decay, c, omc, ycoef, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    z_ += (long)zo + RS_;
    STATE_BEGIN(z);
    v_ += (long)vo + RS_;
    STATE_BEGIN(v);
    ELEMENTWISE_BEGIN
    floatV y = THETA_LOAD(p_);
    floatV g = GC_APPLY(read_grad(LOADG(g_), gmul));
    floatV z;
    if (first)
        z = y;
    else
        z = LOADS(z, 1);
    floatV v = beta2 * LOADS(v, 0) + ombeta2 * g * g;
    floatV u = g / (sqrt(v * inv_bc2) + eps);
    if (weight_decay != 0.0f)
        u = u + weight_decay * y; /* at y, after the normalisation, as the reference */
    y = c < 0.5f ? y + c * (z - y) : z - (z - y) * omc;
    y = y + ycoef * u;
    z = z - lr * u;
    STORES(z, z, 1);
    STORES(v, v, 0);
    THETA_STORE(y, p_);
    ELEMENTWISE_END
    STATE_END(z, 1);
    STATE_END(v, 0);
}

/* SGD: g += wd·y (L2 at y); y = lerp(y, z, c); y += ycoef·g; z -= lr·g. */
__kernel Q8_WG_ATTR void sf_sgd_step(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                          const ulong go, STATE_PTR(z), const ulong zo, STATE_EXTRA(z)
                          GC_PARAMS const ulong N_ARG, float gmul, int first,
                          float weight_decay, float c, float omc, float ycoef,
                          float lr RANGES_PARAMS CTRL_PARAMS STORAGE_PARAMS Q8_PARAMS)
{
    CTRL_GUARD(gmul);
    CTRL_SCALARS(first, weight_decay, c, omc, ycoef, lr);
    RANGES_BEGIN
    STORAGE_BEGIN;
    p_ += (long)po + RP_;
    g_ += (long)go + RG_;
    z_ += (long)zo + RS_;
    STATE_BEGIN(z);
    ELEMENTWISE_BEGIN
    floatV y = THETA_LOAD(p_);
    floatV g = read_grad(LOADG(g_), gmul);
    if (weight_decay != 0.0f)
        g = g + weight_decay * y;
    g = GC_APPLY(g);
    floatV z;
    if (first)
        z = y;
    else
        z = LOADS(z, 1);
    y = c < 0.5f ? y + c * (z - y) : z - (z - y) * omc;
    y = y + ycoef * g;
    z = z - lr * g;
    STORES(z, z, 1);
    THETA_STORE(y, p_);
    ELEMENTWISE_END
    STATE_END(z, 1);
}

#if SQ == 2
#define LOAD_Z(p) LOAD_BF16(p)
#else
#define LOAD_Z(p) LOAD(p)
#endif

/* θ = lerp(θ, z, w): eval (w = 1 - 1/β: x from y) or train (w = 1 - β: y from x). z is only
 * read. mstep + 1: the stochastic-rounding key's step word at the optimizer level (the host
 * sets its top bits per direction, host/schedule_free.c; the op level passes the word as the
 * storage arguments' step). Launched per
 * tensor, from a program without RANGES (a range group's step program has no chunk table
 * for it, and its 16-bit storage macros would refer to the table's offsets). */
#if !RANGES
__kernel void sf_mode(__global PSTORE *p_, const ulong po, __global const SSTORE *z_,
                      const ulong zo, const ulong n, const float w, const float omw,
                      const ulong mstep STORAGE_PARAMS)
{
#if CTRL
    const ulong dc_ = mstep;
    (void)dc_;
#endif
    (void)mstep;
    STORAGE_BEGIN;
    p_ += po;
    z_ += zo;
    ELEMENTWISE_BEGIN
    floatV y = THETA_LOAD(p_);
    floatV z = LOAD_Z(z_);
    THETA_STORE(w < 0.5f ? y + w * (z - y) : z - (z - y) * omw, p_);
    ELEMENTWISE_END
}
#endif
