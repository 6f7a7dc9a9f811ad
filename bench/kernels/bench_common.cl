/* SPDX-License-Identifier: MIT */
/* clopt-bench: prepended to every benchmark program.
 *
 * Same indexing as the library's element-wise kernels (kernels/common.cl): vectors of VW
 * consecutive floats with vloadN/vstoreN, IPW of them per work-item; the work-item holding
 * vector n / VW takes the n % VW tail one element at a time. VW (1, 2, 4, 8, 16) and IPW
 * come from the context's tuning. */
#ifndef VW
#define VW 1
#endif

#define BCAT_(a, b) a##b
#define BCAT(a, b) BCAT_(a, b)

#if VW == 1
typedef float floatV;
#define VLOAD(i, p) ((p)[i])
#define VSTORE(x, i, p) ((p)[i] = (x))
#else
typedef BCAT(float, VW) floatV;
#define VLOAD(i, p) BCAT(vload, VW)(i, p)
#define VSTORE(x, i, p) BCAT(vstore, VW)(x, i, p)
#endif

/* BODY(T, LD, ST) is written once for T = floatV (full vectors) and T = float (tail), with
   LD(p) / ST(x, p) reading and writing this work-item's element(s). IPW vectors per
   work-item, as kernels/common.cl: IPW 1 the library's one-vector form, else a loop over
   IPW consecutive vectors (gid_ is the vector index). */
#ifndef IPW
#define IPW 1
#endif
#if IPW == 1
#define BENCH_ELEMENTWISE(BODY)                                                            \
    const ulong gid_ = get_global_id(0);                                                   \
    const ulong nv_ = n / VW;                                                              \
    if (gid_ < nv_) {                                                                      \
        BODY(floatV, FULL_LD, FULL_ST)                                                     \
    } else if (gid_ == nv_) {                                                              \
        for (ulong k_ = nv_ * VW; k_ < n; k_++) {                                          \
            BODY(float, TAIL_LD, TAIL_ST)                                                  \
        }                                                                                  \
    }
#else
#define BENCH_ELEMENTWISE(BODY)                                                            \
    const ulong lo_ = get_global_id(0) * IPW;                                              \
    const ulong nv_ = n / VW;                                                              \
    for (ulong gid_ = lo_; gid_ < min(lo_ + IPW, nv_); gid_++) {                           \
        BODY(floatV, FULL_LD, FULL_ST)                                                     \
    }                                                                                      \
    if (lo_ <= nv_ && nv_ - lo_ < IPW) {                                                   \
        for (ulong k_ = nv_ * VW; k_ < n; k_++) {                                          \
            BODY(float, TAIL_LD, TAIL_ST)                                                  \
        }                                                                                  \
    }
#endif
#define FULL_LD(p) VLOAD(gid_, p)
#define FULL_ST(x, p) VSTORE(x, gid_, p)
#define TAIL_LD(p) ((p)[k_])
#define TAIL_ST(x, p) ((p)[k_] = (x))
