/* SPDX-License-Identifier: MIT */
/* clopt-bench: the memory limit of a rule. Reads exactly the arrays the rule reads and
 * writes exactly the arrays it writes, once each, with no arithmetic beyond what keeps every
 * load alive: on the elements' bits, w_j = w_j | (zero & (r_0 ^ r_1 ^ ...)). The host passes
 * zero = 0, so the arrays keep their values (the fused and unfused steps run on the same
 * arrays between stream runs), and the compiler cannot drop the loads of r. Bit operations
 * cost no conversion for any element type (a float's bits are its lane; 16- and 8-bit words
 * are widened and narrowed), so the stream stays a memory limit for 16-bit storage too.
 *
 * NRW (1..6) read-write arrays w, NRO (0..6) read-only arrays r and NWO (0..2) write-only
 * arrays o (written with zeros, never read: a 16-bit θ that a step writes from its fp32
 * master), set with -D at build time. Unused pointer arguments are never touched. With NRO 0
 * (Lookahead's sync: θ and φ read and written) the loads of w are kept alive by the stores
 * alone.
 *
 * Element types: TW0..TW5, TR0..TR5 and TO0, TO1 (-D, all of them) give each array's
 * element size in bytes: 4 (float), 2 (ushort: a 16-bit θ, gradient or bf16 remainder) or 1
 * (uchar: an 8-bit state), so that the stream moves the bytes of a step in 16-bit or 8-bit
 * storage in as many arrays as the step.
 *
 * NAB (0..4) absmax arrays a (float, read and written, -D): the per-block scales of 8-bit
 * blockwise state, one float per block of 256 elements. As the library's 8-bit kernels, the
 * kernel then runs one work-item per block (VW 16 x IPW 16, a CPU's tuning) or, with IPW 1
 * (a GPU's), a work-group of 256 / VW work-items per block (Q8WG in kernels/storage.cl; the
 * host sets the group size), and the work-item holding a block's first element reads and
 * writes its entry, a_j[b] |= zero. */
#ifndef NRW
#define NRW 1
#endif
#ifndef NRO
#define NRO 1
#endif
#ifndef NWO
#define NWO 0
#endif

#ifndef NAB
#define NAB 0
#endif
#if NAB > 0 && VW * IPW != 256 && (IPW != 1 || 256 % VW != 0)
#error "absmax arrays need a work-item (VW * IPW = 256) or a work-group (IPW 1) per block"
#endif

#ifndef TO1 /* the host passes all of them */
#error "bench_stream.cl needs -DTW0..TW5, -DTR0..TR5, -DTO0, -DTO1"
#endif

/* The element type of a size, and its loads and stores as raw bits in uint lanes (a float's
   bits, a 16- or 8-bit word zero-extended): FULL_* a vector of VW elements, TAIL_* one
   element of the tail; *_UT the lane type. */
#define ETYPE_4 float
#define ETYPE_2 ushort
#define ETYPE_1 uchar
#define ETYPE(c) BCAT(ETYPE_, c)

#if VW == 1
typedef uint lanesV;
#define CVT_UI(x) convert_uint(x)
#define AS_UI(x) as_uint(x)
#define AS_F(x) as_float(x)
#define CVT_U16(x) convert_ushort(x)
#define CVT_U8(x) convert_uchar(x)
#else
typedef BCAT(uint, VW) lanesV;
#define CVT_UI(x) BCAT(convert_uint, VW)(x)
#define AS_UI(x) BCAT(as_uint, VW)(x)
#define AS_F(x) BCAT(as_float, VW)(x)
#define CVT_U16(x) BCAT(convert_ushort, VW)(x)
#define CVT_U8(x) BCAT(convert_uchar, VW)(x)
#endif
#define FULL_LD_UT lanesV /* no BCAT here: it would be expanded inside one */
#define TAIL_LD_UT uint

#define FULL_LD_4(p) AS_UI(VLOAD(gid_, p))
#define FULL_LD_2(p) CVT_UI(VLOAD(gid_, p))
#define FULL_LD_1(p) CVT_UI(VLOAD(gid_, p))
#define FULL_ST_4(x, p) VSTORE(AS_F(x), gid_, p)
#define FULL_ST_2(x, p) st_u16(CVT_U16(x), (p) + gid_ * VW)
#define FULL_ST_1(x, p) st_u8(CVT_U8(x), (p) + gid_ * VW)
#define TAIL_LD_4(p) as_uint((p)[k_])
#define TAIL_LD_2(p) convert_uint((p)[k_])
#define TAIL_LD_1(p) convert_uint((p)[k_])
#define TAIL_ST_4(x, p) ((p)[k_] = as_float(x))
#define TAIL_ST_2(x, p) ((p)[k_] = convert_ushort(x))
#define TAIL_ST_1(x, p) ((p)[k_] = convert_uchar(x))

/* Vectors of 16- and 8-bit words stored as 32-bit lanes where the address is 4-byte aligned,
   as the library's kernels do (store_u16v in kernels/storage.cl: PoCL 3.1 turns a vstoreN
   of ushort or uchar into N scalar stores, which made this kernel, the roofline, slower
   than the 16-bit steps themselves). The lanes are built in the device's byte order (as_type
   between vectors of different lengths is implementation-defined). */
#if VW >= 4
#ifdef __ENDIAN_LITTLE__
#define U16_PAIRS(M, x) (BCAT(convert_uint, M)((x).even) | (BCAT(convert_uint, M)((x).odd) << 16))
#define U8_QUADS(M, x)                                                                     \
    (BCAT(convert_uint, M)((x).even.even) | (BCAT(convert_uint, M)((x).odd.even) << 8) |    \
     (BCAT(convert_uint, M)((x).even.odd) << 16) | (BCAT(convert_uint, M)((x).odd.odd) << 24))
#else
#define U16_PAIRS(M, x) ((BCAT(convert_uint, M)((x).even) << 16) | BCAT(convert_uint, M)((x).odd))
#define U8_QUADS(M, x)                                                                     \
    ((BCAT(convert_uint, M)((x).even.even) << 24) | (BCAT(convert_uint, M)((x).odd.even) << 16) | \
     (BCAT(convert_uint, M)((x).even.odd) << 8) | BCAT(convert_uint, M)((x).odd.odd))
#endif
#define ST_WORDS(NAME, T, N, M, LANES)                                                     \
    static inline void NAME(BCAT(T, N) x, __global T *p)                                   \
    {                                                                                      \
        if (((uintptr_t)p & 3u) == 0)                                                      \
            BCAT(vstore, M)(LANES(M, x), 0, (__global uint *)p);                           \
        else                                                                               \
            BCAT(vstore, N)(x, 0, p);                                                      \
    }
#if VW == 16
ST_WORDS(st_u16, ushort, 16, 8, U16_PAIRS)
ST_WORDS(st_u8, uchar, 16, 4, U8_QUADS)
#elif VW == 8
ST_WORDS(st_u16, ushort, 8, 4, U16_PAIRS)
ST_WORDS(st_u8, uchar, 8, 2, U8_QUADS)
#else
ST_WORDS(st_u16, ushort, 4, 2, U16_PAIRS)
static inline void st_u8(uchar4 x, __global uchar *p)
{
    if (((uintptr_t)p & 3u) == 0)
#ifdef __ENDIAN_LITTLE__
        *(__global uint *)p = (uint)x.s0 | ((uint)x.s1 << 8) | ((uint)x.s2 << 16) | ((uint)x.s3 << 24);
#else
        *(__global uint *)p = ((uint)x.s0 << 24) | ((uint)x.s1 << 16) | ((uint)x.s2 << 8) | (uint)x.s3;
#endif
    else
        vstore4(x, 0, p);
}
#endif
#else
#define st_u16(x, p) VSTORE(x, 0, p)
#define st_u8(x, p) VSTORE(x, 0, p)
#endif

/* LD / ST are FULL_LD or TAIL_LD (FULL_ST, TAIL_ST); c the element size. */
#define LDT(LD, c, p) BCAT(LD, BCAT(_, c))(p)
#define STT(ST, c, x, p) BCAT(ST, BCAT(_, c))(x, p)

#define RL(LD, j) LDT(LD, TR##j, r##j)
#if NRO == 0
#define RSUM(LD) (1u)
#elif NRO == 1
#define RSUM(LD) (RL(LD, 0))
#elif NRO == 2
#define RSUM(LD) (RL(LD, 0) ^ RL(LD, 1))
#elif NRO == 3
#define RSUM(LD) (RL(LD, 0) ^ RL(LD, 1) ^ RL(LD, 2))
#elif NRO == 4
#define RSUM(LD) (RL(LD, 0) ^ RL(LD, 1) ^ RL(LD, 2) ^ RL(LD, 3))
#elif NRO == 5
#define RSUM(LD) (RL(LD, 0) ^ RL(LD, 1) ^ RL(LD, 2) ^ RL(LD, 3) ^ RL(LD, 4))
#else
#define RSUM(LD) (RL(LD, 0) ^ RL(LD, 1) ^ RL(LD, 2) ^ RL(LD, 3) ^ RL(LD, 4) ^ RL(LD, 5))
#endif

#define W(j, LD, ST) STT(ST, TW##j, LDT(LD, TW##j, w##j) | R, w##j);

#if NRW >= 2
#define W1(LD, ST) W(1, LD, ST)
#else
#define W1(LD, ST)
#endif
#if NRW >= 3
#define W2(LD, ST) W(2, LD, ST)
#else
#define W2(LD, ST)
#endif
#if NRW >= 4
#define W3(LD, ST) W(3, LD, ST)
#else
#define W3(LD, ST)
#endif
#if NRW >= 5
#define W4(LD, ST) W(4, LD, ST)
#else
#define W4(LD, ST)
#endif
#if NRW >= 6
#define W5(LD, ST) W(5, LD, ST)
#else
#define W5(LD, ST)
#endif
#if NWO >= 1
#define O0(ST) STT(ST, TO0, R, o0);
#else
#define O0(ST)
#endif
#if NWO >= 2
#define O1(ST) STT(ST, TO1, R, o1);
#else
#define O1(ST)
#endif

#define STREAM_BODY(T, LD, ST)                                                             \
    {                                                                                      \
        const BCAT(LD, _UT) R = zero & RSUM(LD);                                           \
        W(0, LD, ST)                                                                       \
        W1(LD, ST) W2(LD, ST) W3(LD, ST) W4(LD, ST) W5(LD, ST) O0(ST) O1(ST)               \
    }

/* the absmax of this work-item's block, kept alive as the arrays' elements */
#define AB(j) a##j[b_] = as_float(as_uint(a##j[b_]) | zero);
#if NAB >= 1
#define AB0 AB(0)
#else
#define AB0
#endif
#if NAB >= 2
#define AB1 AB(1)
#else
#define AB1
#endif
#if NAB >= 3
#define AB2 AB(2)
#else
#define AB2
#endif
#if NAB >= 4
#define AB3 AB(3)
#else
#define AB3
#endif

__kernel void bench_stream(__global ETYPE(TW0) *w0, __global ETYPE(TW1) *w1,
                           __global ETYPE(TW2) *w2, __global ETYPE(TW3) *w3,
                           __global ETYPE(TW4) *w4, __global ETYPE(TW5) *w5,
                           __global const ETYPE(TR0) *r0, __global const ETYPE(TR1) *r1,
                           __global const ETYPE(TR2) *r2, __global const ETYPE(TR3) *r3,
                           __global const ETYPE(TR4) *r4, __global const ETYPE(TR5) *r5,
                           __global ETYPE(TO0) *o0, __global ETYPE(TO1) *o1,
                           __global float *a0, __global float *a1, __global float *a2,
                           __global float *a3, const uint zero, const ulong n)
{
    BENCH_ELEMENTWISE(STREAM_BODY)
#if NAB > 0
    const ulong e_ = get_global_id(0) * (VW * IPW); /* the work-item's first element */
    const ulong b_ = e_ / 256;
    if (e_ % 256 == 0 && e_ < n) {
        AB0 AB1 AB2 AB3
    }
#endif
}
