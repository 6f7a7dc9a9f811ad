/* SPDX-License-Identifier: MIT */
/* clopt-bench: the memory limit of a rule. Reads exactly the arrays the rule reads and
 * writes exactly the arrays it writes, once each, with no arithmetic beyond what keeps every
 * load alive: w_j = w_j + zero * (r_0 + r_1 + ...). The host passes zero = 0, so the arrays
 * keep their values (the fused and unfused steps run on the same arrays between stream
 * runs), and the compiler cannot drop the loads of r.
 *
 * NRW (1..6) read-write arrays, NRO (0..6) read-only arrays, set with -D at build time.
 * Unused pointer arguments are never touched. With NRO 0 (Lookahead's sync: θ and φ read
 * and written) the loads of w are kept alive by the stores alone. */
#ifndef NRW
#define NRW 1
#endif
#ifndef NRO
#define NRO 1
#endif

#if NRO == 0
#define RSUM(T, LD) ((T)(1.0f))
#elif NRO == 1
#define RSUM(T, LD) (LD(r0))
#elif NRO == 2
#define RSUM(T, LD) (LD(r0) + LD(r1))
#elif NRO == 3
#define RSUM(T, LD) (LD(r0) + LD(r1) + LD(r2))
#elif NRO == 4
#define RSUM(T, LD) (LD(r0) + LD(r1) + LD(r2) + LD(r3))
#elif NRO == 5
#define RSUM(T, LD) (LD(r0) + LD(r1) + LD(r2) + LD(r3) + LD(r4))
#else
#define RSUM(T, LD) (LD(r0) + LD(r1) + LD(r2) + LD(r3) + LD(r4) + LD(r5))
#endif

#define W(j, T, LD, ST) ST(LD(w##j) + R, w##j);

#if NRW >= 2
#define W1(T, LD, ST) W(1, T, LD, ST)
#else
#define W1(T, LD, ST)
#endif
#if NRW >= 3
#define W2(T, LD, ST) W(2, T, LD, ST)
#else
#define W2(T, LD, ST)
#endif
#if NRW >= 4
#define W3(T, LD, ST) W(3, T, LD, ST)
#else
#define W3(T, LD, ST)
#endif
#if NRW >= 5
#define W4(T, LD, ST) W(4, T, LD, ST)
#else
#define W4(T, LD, ST)
#endif
#if NRW >= 6
#define W5(T, LD, ST) W(5, T, LD, ST)
#else
#define W5(T, LD, ST)
#endif

#define STREAM_BODY(T, LD, ST)                                                             \
    {                                                                                      \
        const T R = zero * RSUM(T, LD);                                                    \
        W(0, T, LD, ST)                                                                    \
        W1(T, LD, ST) W2(T, LD, ST) W3(T, LD, ST) W4(T, LD, ST) W5(T, LD, ST)               \
    }

__kernel void bench_stream(__global float *w0, __global float *w1, __global float *w2,
                           __global float *w3, __global float *w4, __global float *w5,
                           __global const float *r0, __global const float *r1,
                           __global const float *r2, __global const float *r3,
                           __global const float *r4, __global const float *r5,
                           const float zero, const ulong n)
{
    BENCH_ELEMENTWISE(STREAM_BODY)
}
