/* Shared by every kernel family (prepended to each program).
 *
 * Element-wise kernels process VW consecutive floats per work-item with vloadN/vstoreN
 * (any element offset works: vloadN needs only float alignment). Work-item nv = n / VW
 * (when n % VW != 0) takes the tail through private arrays, so every rule's update is
 * written once, as a function of floatV. Defines: VW (1, 2, 4, 8, 16), MAXIMIZE (0/1). */
#ifndef VW
#define VW 1
#endif
#ifndef MAXIMIZE
#define MAXIMIZE 0
#endif

#define CLOPT_CAT_(a, b) a##b
#define CLOPT_CAT(a, b) CLOPT_CAT_(a, b)

#if VW == 1
typedef float floatV;
#define VLOAD(i, p) ((p)[i])
#define VSTORE(x, i, p) ((p)[i] = (x))
#else
typedef CLOPT_CAT(float, VW) floatV;
#define VLOAD(i, p) CLOPT_CAT(vload, VW)(i, p)
#define VSTORE(x, i, p) CLOPT_CAT(vstore, VW)(x, i, p)
#endif

/* Tail helpers: load rem < VW elements (the rest zero) / store only rem elements. */
inline floatV tail_load(__global const float *p, uint rem)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? p[k] : 0.0f;
    return VLOAD(0, t);
}

inline void tail_store(floatV x, __global float *p, uint rem)
{
    float t[VW];
    VSTORE(x, 0, t);
    for (uint k = 0; k < rem; k++)
        p[k] = t[k];
}

/* The element-wise driver. Inside ELEMENTWISE_BEGIN/END, LOAD(ptr) and STORE(x, ptr) read
 * and write this work-item's VW elements (or the tail) of a pointer already advanced by
 * its offset. The body is written once but compiled twice: the loop over the two cases
 * (full vector, tail) is unrolled, so in each copy full_ is a constant and every LOAD/STORE
 * is a plain vloadN/vstoreN or a tail access. A run-time choice per load instead costs
 * PoCL's work-group vectoriser 10-20% of the bandwidth (measured with clopt-bench). */
#define ELEMENTWISE_BEGIN                                                                  \
    const ulong gid_ = get_global_id(0);                                                   \
    const ulong nv_ = n / VW;                                                              \
    const uint rem_ = (uint)(n - nv_ * VW);                                                \
    _Pragma("unroll") for (int pass_ = 0; pass_ < 2; pass_++) {                            \
        const int full_ = pass_ == 0;                                                      \
        if (full_ ? gid_ < nv_ : (gid_ == nv_ && rem_ != 0)) {                             \
            const ulong base_ = gid_ * VW;
#define ELEMENTWISE_END                                                                    \
    break;                                                                                 \
    }                                                                                      \
    }

#define LOAD(p) (full_ ? VLOAD(gid_, p) : tail_load((p) + base_, rem_))
#define STORE(x, p)                                                                        \
    do {                                                                                   \
        if (full_)                                                                         \
            VSTORE(x, gid_, p);                                                            \
        else                                                                               \
            tail_store(x, (p) + base_, rem_);                                              \
    } while (0)

/* Gradient centralization (Yong et al. 2020), define GC: the kernel takes the row means of
 * the gradient (computed by gc_rowmean in reduce.cl, after L2 decay was added, as the GC
 * code does) and the row length, and subtracts the mean of element e's row, e / gc_cols.
 * GC_PARAMS goes in a kernel's parameter list right before n. */
#ifndef GC
#define GC 0
#endif
#if GC
#define GC_PARAMS __global const float *gcm_, const ulong gcmo, const ulong gc_cols,
#define GC_APPLY(g) gc_subtract(g, gcm_ + gcmo, base_, gc_cols)
inline floatV gc_subtract(floatV g, __global const float *mean, ulong base, ulong cols)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = mean[(base + k) / cols];
    return g - VLOAD(0, t);
}
#define GC_APPLY1(g, e) ((g) - (gcm_ + gcmo)[(e) / gc_cols])
#else
#define GC_PARAMS
#define GC_APPLY(g) (g)
#define GC_APPLY1(g, e) (g)
#endif

/* The gradient as the update sees it: unscaled (AMP / clipping multiplier), maximize. */
inline floatV read_grad(floatV g, float gmul)
{
    g = g * gmul;
#if MAXIMIZE
    g = -g;
#endif
    return g;
}

inline float read_grad1(float g, float gmul)
{
    g = g * gmul;
#if MAXIMIZE
    g = -g;
#endif
    return g;
}

/* Compensated (Kahan) accumulation: the rounding error of each addition is carried into the
 * next, so long sequential sums (a 4096-element row) stay accurate to a few ulp. Strict IEEE
 * arithmetic (no fast-math) keeps the compensation from being optimised away. */
typedef struct kahan {
    float sum, c;
} kahan;

inline void kahan_add(kahan *k, float x)
{
    float y = x - k->c;
    float t = k->sum + y;
    k->c = (t - k->sum) - y;
    k->sum = t;
}
