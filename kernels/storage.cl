/* SPDX-License-Identifier: MIT */
/* Storage types, prepended to every kernel family after common.cl (host/program.c). */

/* ==== Storage types (defines PT, GT, MASTER, SR) ===========================================
 * Arithmetic is float32 everywhere; only storage changes. PT is θ's storage, GT the
 * gradient's: 0 float32, 1 float16 (vload_half / vstore_half_rte: core OpenCL 1.2, no
 * cl_khr_fp16), 2 bfloat16 (16-bit words, a float's top half: loaded by a shift, stored
 * rounded to nearest even, a NaN kept a quiet NaN).
 * MASTER (PT != 0): 0 none: θ is the parameter, stored rounded to nearest even or, with
 * SR 1, stochastically; 1 an fp32 master in the state tensor ms_: the update reads and
 * writes the master, and θ (never read) is written as the master rounded to nearest even;
 * 2 remainder (bf16 θ only): ms_ holds 16-bit words r with master bits = (θ bits << 16) +
 * (short)r, so θ is the master rounded to nearest (ties away from zero) and θ with r is
 * exactly the fp32 master.
 * Kernels take STORAGE_PARAMS last when PT != 0: ms_ + mso (the master or remainder, laid
 * out like the states; any buffer with MASTER 0) and the stochastic rounding key (seed,
 * stream, step). The 16-bit random value of element e (its index in θ's buffer) is half
 * e % 2 (the low half first) of word (e / 2) % 4 of Philox-4x32-10 with counter (e / 8 low,
 * high, step, stream) and key (seed low, high); at the optimizer level (CTRL) the step is
 * the device's count of applied steps + 1. */
#ifndef PT
#define PT 0
#endif
#ifndef GT
#define GT 0
#endif
#ifndef MASTER
#define MASTER 0
#endif
#ifndef SR
#define SR 0
#endif
/* The rounding increment of θ from a remainder master's bits b (MASTER 2, vectors of type T):
   0x8000, or 0 for the NaNs whose magnitude bits are 0x7FFF8000 or more (see THETA_STORE). */
#define REMAINDER_ADD(b, T)                                                                \
    select((T)(0x8000u), (T)(0u), ((b) & (T)(0x7FFFFFFFu)) >= (T)(0x7FFF8000u))

/* Philox-4x32-10 (Salmon et al. 2011, the Random123 constants). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint4 philox4x32_10(uint4 c, uint2 k)
{
    for (int r = 0; r < 10; r++) {
        uint lo0 = PHILOX_M0 * c.x, hi0 = mul_hi(PHILOX_M0, c.x);
        uint lo1 = PHILOX_M1 * c.z, hi1 = mul_hi(PHILOX_M1, c.z);
        c = (uint4)(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += (uint2)(PHILOX_W0, PHILOX_W1);
    }
    return c;
}

#if VW == 1
typedef uint uintV;
typedef int intV;
typedef ushort ushortV;
#define AS_FLOATV as_float
#define AS_UINTV as_uint
#define CONVERT_UINTV convert_uint
#define CONVERT_USHORTV convert_ushort
#define CONVERT_FLOATV convert_float
#define VLOAD_HALF vload_half
#define VSTORE_HALF_RTE vstore_half_rte
#else
typedef CLOPT_CAT(uint, VW) uintV;
typedef CLOPT_CAT(int, VW) intV;
typedef CLOPT_CAT(ushort, VW) ushortV;
#define AS_FLOATV CLOPT_CAT(as_float, VW)
#define AS_UINTV CLOPT_CAT(as_uint, VW)
#define CONVERT_UINTV CLOPT_CAT(convert_uint, VW)
#define CONVERT_USHORTV CLOPT_CAT(convert_ushort, VW)
#define CONVERT_FLOATV CLOPT_CAT(convert_float, VW)
#define VLOAD_HALF CLOPT_CAT(vload_half, VW)
#define VSTORE_HALF_RTE CLOPT_CAT(CLOPT_CAT(vstore_half, VW), _rte)
#endif

static inline floatV bf16_to_f32(ushortV u) { return AS_FLOATV(CONVERT_UINTV(u) << 16); }

/* Stores of 16-bit words: PoCL 3.1 (LLVM 15) turns a vstoreN of ushort into N two-byte
 * stores (extract, shift, store per lane: a bf16 AdamW step at 0.71 of its stream kernel),
 * while a vstore of uint is a vector store; so where the destination is 4-byte aligned (any
 * tensor at an even element offset) the words go out as pairs in 32-bit lanes, the same
 * bytes. The lanes are built explicitly in the device's byte order (as_type between vectors
 * of different lengths is implementation-defined in OpenCL C); LLVM folds it into nothing.
 * 8-bit state's codes go out the same way (q8_store_block, from their uint lanes). */
#ifdef __ENDIAN_LITTLE__
#define U16_PAIRS(N, x) (convert_uint##N((x).even) | (convert_uint##N((x).odd) << 16))
#define U8_QUADS(N, x)                                                                     \
    (convert_uint##N((x).even.even) | (convert_uint##N((x).odd.even) << 8) |                \
     (convert_uint##N((x).even.odd) << 16) | (convert_uint##N((x).odd.odd) << 24))
#else
#define U16_PAIRS(N, x) ((convert_uint##N((x).even) << 16) | convert_uint##N((x).odd))
#define U8_QUADS(N, x)                                                                     \
    ((convert_uint##N((x).even.even) << 24) | (convert_uint##N((x).odd.even) << 16) |       \
     (convert_uint##N((x).even.odd) << 8) | convert_uint##N((x).odd.odd))
#endif
/* NAME(x, p): T##N x at p, as M 32-bit lanes (LANES) where p is 4-byte aligned. */
#define CLOPT_WORD_STORE(NAME, T, N, M, LANES)                                             \
    static inline void NAME(T##N x, __global T *p)                                         \
    {                                                                                      \
        if (((uintptr_t)p & 3u) == 0)                                                      \
            vstore##M(LANES(M, x), 0, (__global uint *)p);                                 \
        else                                                                               \
            vstore##N(x, 0, p);                                                            \
    }
CLOPT_WORD_STORE(store_u16x16, ushort, 16, 8, U16_PAIRS)
#if VW == 16
#define store_u16v store_u16x16
#elif VW == 8
CLOPT_WORD_STORE(store_u16v, ushort, 8, 4, U16_PAIRS)
#elif VW == 4
CLOPT_WORD_STORE(store_u16v, ushort, 4, 2, U16_PAIRS)
#else
#define store_u16v(x, p) VSTORE(x, 0, p)
#endif

/* The roundings, defined for the element-wise vectors (floatV: VW lanes) and, when VW is not
 * 16, again for the 16-lane chunks of the multi-pass kernels:
 * NAME_rne: to bf16, nearest even, a NaN kept a (quiet) NaN.
 * NAME_sr: to bf16 stochastically with the 16-bit random value r: up (in magnitude) with
 *   probability (low 16 bits of x) / 2^16, so the expected value is x; Inf and NaN kept.
 * NAME_f16sr: to the float16 grid stochastically with the 16-bit random value r (u = r/2^16
 *   in [0, 1)): with q = |x| / ulp (exact: ulp is the float16 spacing at x, 2^(e-10) with
 *   e = max(exponent, -14), subnormals included), |x| goes to floor(q) + (u < frac(q))
 *   ulps: exactly unbiased when frac(q) has at most 16 bits (|x| >= 2^-17: every float32 in
 *   the float16 normal range and the larger subnormals), below that P(up) exceeds frac(q) by
 *   less than 2^-16. The result is a float16 value (stored exactly by vstore_half_rte), or
 *   >= 65536 and so Inf as a float16, as a value past the largest float16 rounds. The
 *   scalings by 2^(10-e) and 2^(e-10) are exact multiplications by powers of two built from
 *   their bits (eb = the biased exponent max(exponent, -14) + 127; ilogb and ldexp were
 *   library calls per lane on PoCL, a third of the f16 step's speed). */
#define CLOPT_ROUNDINGS(F, U, US, AS_U, AS_F, CVT_US, CVT_F, NAME)                       \
    static inline US NAME##_rne(F x)                                                       \
    {                                                                                      \
        const U b = AS_U(x);                                                               \
        const U r = (b + (U)(0x7FFFu) + ((b >> 16) & (U)(1u))) >> 16;                       \
        return CVT_US(select(r, (b >> 16) | (U)(0x40u), isnan(x)));                        \
    }                                                                                      \
    static inline US NAME##_sr(F x, U r)                                                   \
    {                                                                                      \
        const U b = AS_U(x);                                                               \
        return CVT_US(select((b + r) >> 16, (b >> 16) | (U)(0x40u), isnan(x)));            \
    }                                                                                      \
    static inline F NAME##_f16sr(F x, U r)                                                 \
    {                                                                                      \
        const F a = fabs(x);                                                               \
        const U eb = max(AS_U(a) >> 23, (U)(113u));                                        \
        const F q = a * AS_F(((U)(264u) - eb) << 23);                                      \
        const F fl = floor(q);                                                             \
        const F u = CVT_F(r) * (1.0f / 65536.0f);                                          \
        const F y = (fl + select((F)(0.0f), (F)(1.0f), u < q - fl)) *                      \
                    AS_F((eb - (U)(10u)) << 23);                                           \
        return select(copysign(y, x), x, isnan(x) | isinf(x));                             \
    }
CLOPT_ROUNDINGS(floatV, uintV, ushortV, AS_UINTV, AS_FLOATV, CONVERT_USHORTV, CONVERT_FLOATV,
                rndV)
#if VW == 16
#define rndR_rne rndV_rne
#define rndR_sr rndV_sr
#define rndR_f16sr rndV_f16sr
#else
CLOPT_ROUNDINGS(float16, uint16, ushort16, as_uint16, as_float16, convert_ushort16,
                convert_float16, rndR)
#endif
#define f32_to_bf16 rndV_rne
#define f32_to_bf16_sr rndV_sr
#define f16_sr_value rndV_f16sr

/* One Philox-4x32-10 round on N counters at once (lane i of a, b, c, d: counter i's words;
   N = 2 H). Both halves of each product come from one 64-bit multiply (a 32 x 32 -> 64
   instruction where the device has one; PoCL 3.1's mul_hi on vectors went through 16-bit
   parts): on a little-endian device the even and odd lanes are the low and high words of H
   ulongs, each set multiplied in place and the halves put back with masks and shifts (as_type
   between vectors of different lengths is implementation-defined in OpenCL C, but it is the
   bytes in order wherever __ENDIAN_LITTLE__ is defined; the SR word tests compare with the C
   Philox). Widening all N lanes to ulongs instead took a third more instructions (16 lanes:
   SR at 0.54-0.56 -> 0.56-0.57 of the stream kernel for bf16 θ, 0.35-0.36 -> 0.38-0.39 for
   f16, interleaved runs). */
#define PHILOX_U(N) CLOPT_CAT(uint, N)
#define PHILOX_UL(N) CLOPT_CAT(ulong, N)
#ifdef __ENDIAN_LITTLE__
#define PHILOX_MUL(N, H, x, M, hi, lo)                                                     \
    do {                                                                                   \
        const PHILOX_UL(H) w_ = CLOPT_CAT(as_ulong, H)(x);                                 \
        const PHILOX_UL(H) pe_ = (w_ & (PHILOX_UL(H))(0xFFFFFFFFul)) * (PHILOX_UL(H))(M);  \
        const PHILOX_UL(H) po_ = (w_ >> 32) * (PHILOX_UL(H))(M);                           \
        hi = CLOPT_CAT(as_uint, N)((pe_ >> 32) | (po_ & (PHILOX_UL(H))(0xFFFFFFFF00000000ul))); \
        lo = CLOPT_CAT(as_uint, N)((pe_ & (PHILOX_UL(H))(0xFFFFFFFFul)) | (po_ << 32));    \
    } while (0)
#else
#define PHILOX_MUL(N, H, x, M, hi, lo)                                                     \
    do {                                                                                   \
        const PHILOX_UL(N) p_ = CLOPT_CAT(convert_ulong, N)(x) * (PHILOX_UL(N))(M);        \
        hi = CLOPT_CAT(convert_uint, N)(p_ >> 32);                                         \
        lo = CLOPT_CAT(convert_uint, N)(p_);                                               \
    } while (0)
#endif
#define PHILOX_ROUND(N, H, a, b, c, d, k)                                                  \
    do {                                                                                   \
        PHILOX_U(N) h0_, l0_, h1_, l1_;                                                    \
        PHILOX_MUL(N, H, a, PHILOX_M0, h0_, l0_);                                          \
        PHILOX_MUL(N, H, c, PHILOX_M1, h1_, l1_);                                          \
        a = h1_ ^ b ^ (k).x;                                                               \
        b = l1_;                                                                           \
        c = h0_ ^ d ^ (k).y;                                                               \
        d = l0_;                                                                           \
    } while (0)

/* The 16-bit random value of element e: half e % 2 (low first) of word (e / 2) % 4 of
   Philox-4x32-10 with counter (e / 8 low, high, step, stream) and key (seed low, high). */
static inline uint sr_word1(ulong e, uint2 key, uint stream, uint step)
{
    const ulong q = e >> 3;
    const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream), key);
    const uint j = ((uint)e >> 1) & 3u;
    /* word j by halves: Oclgrind 21.10 with optimisation on returned word 3 for j 0 and 1 of
       every counter but the first from the chain j == 0 ? x.x : j == 1 ? ... (not with
       -cl-opt-disable; PoCL right either way) */
    const uint2 h = (j & 2u) ? x.zw : x.xy;
    const uint w = (j & 1u) ? h.y : h.x;
    return (w >> (16u * ((uint)e & 1u))) & 0xFFFFu;
}

/* The random values of the 16 elements from element e0 (as sr_word1), from the Philox
   instances q0 .. q0 + 3 (q0 = e0 / 8; the 16 elements need two or three of them) computed in
   the four lanes of a vector (PHILOX_ROUND). For the chunk kernels (sr_wordsR) and 16-wide
   vectors: it was one scalar instance per element for a chunk or a vector not starting on a
   multiple of 8 (LAMB with bf16 SR at 2^24 on PoCL took 611 ms, 56x the
   step without SR; now 29 ms). */
static inline uint16 sr_words16(ulong e0, ulong seed, uint stream, uint step)
{
    uint2 key = (uint2)((uint)seed, (uint)(seed >> 32));
    const ulong q0 = e0 >> 3;
    const uint o = (uint)e0 & 7u;
    uint4 a = (uint4)((uint)q0) + (uint4)(0u, 1u, 2u, 3u);
    uint4 b = (uint4)((uint)(q0 >> 32)) + as_uint4(-(as_int4(a < (uint4)((uint)q0)))); /* carry */
    uint4 c = (uint4)(step), d = (uint4)(stream);
    for (int r = 0; r < 10; r++) {
        PHILOX_ROUND(4, 2, a, b, c, d, key);
        key += (uint2)(PHILOX_W0, PHILOX_W1);
    }
    uint w[16]; /* word i of instance q0 + j at 4 j + i */
    vstore16((uint16)(a.s0, b.s0, c.s0, d.s0, a.s1, b.s1, c.s1, d.s1, a.s2, b.s2, c.s2, d.s2,
                      a.s3, b.s3, c.s3, d.s3),
             0, w);
    uint v[16];
    for (uint k = 0; k < 16; k++) { /* element e0 + k: half e % 2 of word e / 2, e = o + k */
        const uint e = o + k;
        v[k] = (w[e >> 1] >> (16u * (e & 1u))) & 0xFFFFu;
    }
    return vload16(0, v);
}

/* The random values of the VW elements from element e0: 16 lanes from sr_words16; 8 and 4
   from one Philox call when the vector starts on a multiple of 8 (4: of 4), else one call
   per element. */
static inline uintV sr_words(ulong e0, ulong seed, uint stream, uint step)
{
    const uint2 key = (uint2)((uint)seed, (uint)(seed >> 32));
#if VW == 16
    (void)key;
    return sr_words16(e0, seed, stream, step);
#elif VW == 8
    if ((e0 & 7u) == 0) {
        const ulong q = e0 >> 3;
        const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream), key);
        const uint8 v = (uint8)(x.x, x.x, x.y, x.y, x.z, x.z, x.w, x.w);
        return (v >> (uint8)(0, 16, 0, 16, 0, 16, 0, 16)) & (uint8)(0xFFFFu);
    }
#elif VW == 4
    if ((e0 & 3u) == 0) { /* half an instance: words 0-1 or 2-3 */
        const ulong q = e0 >> 3;
        const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream), key);
        const uint2 h = (e0 & 4u) ? x.zw : x.xy;
        return ((uint4)(h.x, h.x, h.y, h.y) >> (uint4)(0, 16, 0, 16)) & (uint4)(0xFFFFu);
    }
#endif
    uint w[VW];
    for (uint k = 0; k < VW; k++)
        w[k] = sr_word1(e0 + k, key, stream, step);
    return VLOAD(0, w);
}

/* Typed vector loads and stores (vector vi of VW elements, or the tail of rem). */
static inline floatV vload_f16(ulong i, __global const half *p) { return VLOAD_HALF(i, p); }
static inline floatV vload_bf16(ulong i, __global const ushort *p)
{
    return bf16_to_f32(VLOAD(i, p));
}

static inline floatV tail_load_f16(__global const half *p, uint rem)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? vload_half(k, p) : 0.0f;
    return VLOAD(0, t);
}

static inline floatV tail_load_bf16(__global const ushort *p, uint rem)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? as_float((uint)p[k] << 16) : 0.0f;
    return VLOAD(0, t);
}

static inline ushortV tail_load_u16(__global const ushort *p, uint rem)
{
    ushort t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? p[k] : (ushort)0;
    return VLOAD(0, t);
}

static inline void tail_store_f16(floatV x, __global half *p, uint rem)
{
    float t[VW];
    VSTORE(x, 0, t);
    for (uint k = 0; k < rem; k++)
        vstore_half_rte(t[k], k, p);
}

static inline void tail_store_u16(ushortV x, __global ushort *p, uint rem)
{
    ushort t[VW];
    VSTORE(x, 0, t);
    for (uint k = 0; k < rem; k++)
        p[k] = t[k];
}

#define LOAD_F16(p) (full_ ? vload_f16(vi_, p) : tail_load_f16((p) + base_, rem_))
#define LOAD_BF16(p) (full_ ? vload_bf16(vi_, p) : tail_load_bf16((p) + base_, rem_))
#define LOAD_U16(p) (full_ ? VLOAD(vi_, p) : tail_load_u16((p) + base_, rem_))
#define STORE_U16(x, p)                                                                    \
    do {                                                                                   \
        if (full_)                                                                         \
            store_u16v(x, (p) + vi_ * VW);                                                 \
        else                                                                               \
            tail_store_u16(x, (p) + base_, rem_);                                          \
    } while (0)
#define STORE_F16(x, p)                                                                    \
    do {                                                                                   \
        if (full_)                                                                         \
            VSTORE_HALF_RTE(x, vi_, p);                                                    \
        else                                                                               \
            tail_store_f16(x, (p) + base_, rem_);                                          \
    } while (0)

/* The gradient: GSTORE its element type, LOADG one vector as floats, loadRG one RW chunk. */
#if GT == 0
#define GSTORE float
#define LOADG(p) LOAD(p)
#elif GT == 1
#define GSTORE half
#define LOADG(p) LOAD_F16(p)
#else
#define GSTORE ushort
#define LOADG(p) LOAD_BF16(p)
#endif

/* θ: PSTORE its element type; STOREP rounds (nearest even, or stochastically with SR). */
#if PT == 0
#define PSTORE float
#define LOADP(p) LOAD(p)
#define STOREP(x, p) STORE(x, p)
#else
#if PT == 1
#define PSTORE half
#define LOADP(p) LOAD_F16(p)
#define STOREP_RNE(x, p) STORE_F16(x, p)
#define STOREP_SR(x, p, r) STORE_F16(f16_sr_value(x, r), p)
#else
#define PSTORE ushort
#define LOADP(p) LOAD_BF16(p)
#define STOREP_RNE(x, p) STORE_U16(f32_to_bf16(x), p)
#define STOREP_SR(x, p, r) STORE_U16(f32_to_bf16_sr(x, r), p)
#endif
/* The rounding key's step word: the step's (the device's count + 1, or the op level's
   argument). A kernel that rounds θ again in the same step redefines SR_STEP around itself
   with the word's top two bits set (Lookahead's sync 10, tensor.cl; Schedule-Free's switch
   01 / 11, from the host), so that its random values are not the update's (updates below
   2^30 steps keep them 00). */
#if CTRL
#define SR_STEP_COUNTED ((uint)(dc_ + 1))
#else
#define SR_STEP_COUNTED sr_step
#endif
#define SR_STEP SR_STEP_COUNTED
#if SR
/* Batches of Philox instances in vector lanes, for the work-items that round many elements
 * (sr_batch below, and the chunk kernels' sr_chunk_batches in chunks.cl): wa[4j + i] = word
 * i of instance qa + j and wb[4j + i] = word i of instance qb + j, j = 0 .. 15. The two sets go
 * through the rounds together: one set's rounds are a chain of dependent multiplies, two keep
 * a core's multipliers busy (bf16 AdamW with SR at 2^25 on PoCL: 13.6 -> 12.0 ms). */
static inline void sr_instances32(ulong qa, ulong qb, ulong seed, uint stream, uint step,
                                  __private uint *wa, __private uint *wb)
{
    uint2 key = (uint2)((uint)seed, (uint)(seed >> 32));
    const ulong q0 = qa, q1 = qb;
    const uint16 j = (uint16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    /* the counters' low words, and the high words with the carry where a low one wraps */
    uint16 a0 = (uint16)((uint)q0) + j, a1 = (uint16)((uint)q1) + j;
    uint16 b0 = (uint16)((uint)(q0 >> 32)) + as_uint16(-(as_int16(a0 < (uint16)((uint)q0))));
    uint16 b1 = (uint16)((uint)(q1 >> 32)) + as_uint16(-(as_int16(a1 < (uint16)((uint)q1))));
    uint16 c0 = (uint16)(step), d0 = (uint16)(stream), c1 = c0, d1 = d0;
    for (int r = 0; r < 10; r++) {
        PHILOX_ROUND(16, 8, a0, b0, c0, d0, key);
        PHILOX_ROUND(16, 8, a1, b1, c1, d1, key);
        key += (uint2)(PHILOX_W0, PHILOX_W1);
    }
    /* to instance order, 4 instances per vector (vector shuffles: the lane-by-lane copy took
       more time than the generator) */
#define SR_AOS(h, w, k, i0, i1, i2, i3)                                                    \
    vstore16((uint16)(a##h.s##i0, b##h.s##i0, c##h.s##i0, d##h.s##i0, a##h.s##i1, b##h.s##i1, \
                      c##h.s##i1, d##h.s##i1, a##h.s##i2, b##h.s##i2, c##h.s##i2, d##h.s##i2, \
                      a##h.s##i3, b##h.s##i3, c##h.s##i3, d##h.s##i3),                     \
             k, w)
    SR_AOS(0, wa, 0, 0, 1, 2, 3);
    SR_AOS(0, wa, 1, 4, 5, 6, 7);
    SR_AOS(0, wa, 2, 8, 9, a, b);
    SR_AOS(0, wa, 3, c, d, e, f);
    SR_AOS(1, wb, 0, 0, 1, 2, 3);
    SR_AOS(1, wb, 1, 4, 5, 6, 7);
    SR_AOS(1, wb, 2, 8, 9, a, b);
    SR_AOS(1, wb, 3, c, d, e, f);
#undef SR_AOS
}

/* w[0..3] = the words of Philox instance q. */
static inline void sr_instance(ulong q, ulong seed, uint stream, uint step, __private uint *w)
{
    const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream),
                                  (uint2)((uint)seed, (uint)(seed >> 32)));
    w[0] = x.x, w[1] = x.y, w[2] = x.z, w[3] = x.w;
}

/* The 16-bit values of the 16 elements from element off of a batch (off = e - 8 q0, q0 the
   batch's first instance, w[4j + i] word i of instance q0 + j). */
static inline uint16 sr_from_batch(__private const uint *w, ulong off)
{
    if ((off & 7u) == 0) { /* 8 consecutive words, low halves first */
        const uint8 u = vload8(0, w + 4 * (off >> 3));
        const uint16 d = (uint16)(u.s0, u.s0, u.s1, u.s1, u.s2, u.s2, u.s3, u.s3, u.s4, u.s4,
                                  u.s5, u.s5, u.s6, u.s6, u.s7, u.s7);
        return (d >> (uint16)(0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16)) &
               (uint16)(0xFFFFu);
    }
    uint v[16];
    for (uint k = 0; k < 16; k++) {
        const ulong e = off + k;
        v[k] = (w[4 * (e >> 3) + ((e >> 1) & 3)] >> (16 * (uint)(e & 1))) & 0xFFFFu;
    }
    return vload16(0, v);
}
#endif

#if SR && VW == 16 && IPW == 16 && (!RANGES || RANGES_ROWS)
/* A CPU's tuning (a work-item walks 16 vectors of 16): the work-item's random values come
   from one batch of 33 Philox instances computed 16 at a time in vector lanes before its
   loop (SR_BATCH_BEGIN in THETA_BEGIN), instead of instances per vector. The values are the
   same as sr_words'. */
#define SR_BATCH 1

/* w[4j + i]: word i of Philox instance q0 + j, j = 0 .. 32 (the 256 elements from e0 span at
   most 33 instances of 8). */
static inline void sr_batch(ulong e0, ulong seed, uint stream, uint step, __private uint *w)
{
    const ulong q0 = e0 >> 3;
    sr_instances32(q0, q0 + 16, seed, stream, step, w, w + 64);
    if (e0 & 7u) /* a batch that does not start on an instance spans a 33rd */
        sr_instance(q0 + 32, seed, stream, step, w + 128);
}

#define SR_BATCH_BEGIN                                                                     \
    uint srw_[4 * 33];                                                                     \
    const ulong sre0_ = pe_ + ITEM_ID * (ulong)(IPW * VW);                                 \
    sr_batch(sre0_, sr_seed, sr_stream, SR_STEP, srw_)
#define STOREP(x, p) STOREP_SR(x, p, sr_from_batch(srw_, pe_ + base_ - ((sre0_ >> 3) << 3)))
#elif SR
#define STOREP(x, p) STOREP_SR(x, p, sr_words(pe_ + base_, sr_seed, sr_stream, SR_STEP))
#else
#define STOREP(x, p) STOREP_RNE(x, p)
#endif
#endif

/* The update's view of θ: THETA_LOAD reads the parameter (the master when there is one),
 * THETA_STORE writes it back (the master and θ rounded from it). STORAGE_BEGIN (defined
 * with the state storage below) goes after RANGES_BEGIN (it advances ms_ like a state, by
 * RS_). */
#if PT == 0
#define STORAGE_PARAMS
#define THETA_BEGIN
#define THETA_LOAD(p) LOAD(p)
#define THETA_STORE(x, p) STORE(x, p)
#else
#if MASTER == 2
#define MSTORE ushort
#else
#define MSTORE float
#endif
#define STORAGE_PARAMS                                                                     \
    , __global MSTORE *ms_, const ulong mso, const ulong sr_seed, const uint sr_stream,    \
        const uint sr_step
#ifndef SR_BATCH_BEGIN
#define SR_BATCH_BEGIN (void)0
#endif
#define THETA_BEGIN                                                                      \
    ms_ += (long)mso + RS_;                                                                \
    const ulong pe_ = (ulong)((long)po + RP_);                                             \
    (void)pe_;                                                                             \
    (void)sr_seed;                                                                         \
    (void)sr_stream;                                                                       \
    (void)sr_step;                                                                         \
    SR_BATCH_BEGIN
#if MASTER == 1
#define THETA_LOAD(p) LOAD(ms_)
#define THETA_STORE(x, p)                                                                  \
    do {                                                                                   \
        const floatV x_ = (x);                                                             \
        STORE(x_, ms_);                                                                    \
        STOREP_RNE(x_, p);                                                                 \
    } while (0)
#elif MASTER == 2
/* master bits = (θ << 16) + sign-extended r; θ = (bits + 0x8000) >> 16, except for the NaNs
   whose magnitude bits are 0x7FFF8000 or more (0x7FFFFFFF is a GPU's usual NaN): the carry
   would reach the sign bit (θ -0 or +0), so θ = bits >> 16 (a NaN) and the master, no longer
   exact, stays a NaN (REMAINDER_ADD) */
static inline floatV remainder_join(ushortV hi, ushortV lo)
{
    return AS_FLOATV((CONVERT_UINTV(hi) << 16) +
                     ((CONVERT_UINTV(lo) ^ (uintV)(0x8000u)) - (uintV)(0x8000u)));
}
#define THETA_LOAD(p) remainder_join(LOAD_U16(p), LOAD_U16(ms_))
#define THETA_STORE(x, p)                                                                  \
    do {                                                                                   \
        const uintV b_ = AS_UINTV(x);                                                      \
        const uintV h_ = (b_ + REMAINDER_ADD(b_, uintV)) >> 16;                             \
        STORE_U16(CONVERT_USHORTV(h_), p);                                                 \
        STORE_U16(CONVERT_USHORTV((b_ - (h_ << 16)) & (uintV)(0xFFFFu)), ms_);             \
    } while (0)
#else
#define THETA_LOAD(p) LOADP(p)
#define THETA_STORE(x, p) STOREP(x, p)
#endif
#endif

/* ==== State storage (define SQ) ================================================================
 * 0 float32; 2 bfloat16 (16-bit words, stored rounded to nearest even); 4 8-bit blockwise
 * (bitsandbytes' scheme): each state s is codes s_ (one byte per element) and s##a_, one
 * float32 absmax per block of Q8_BLOCK = 256 consecutive elements of the tensor (blocks
 * start at the tensor's first element); element i's value is map[code] * absmax of its
 * block, map being bitsandbytes' dynamic map (256 sorted floats in [-1, 1], signed, for
 * states that change sign such as m; in [0, 1], unsigned, for non-negative ones such as v),
 * passed in qmap_ (signed at 0..255, unsigned at 256..511, then q8_codes' table). One
 * work-item owns one block (VW 16 x IPW 16, vectors of 16 all the way): it dequantizes the
 * block's state, runs the rule (the update reads the new state before it is quantized, as
 * bitsandbytes), keeps the 256 new values in private memory with their largest magnitude,
 * then writes the block's absmax and each value's nearest code (ties to the lower code).
 * With RANGES the work-item's row of the table is its block (common.cl): the codes pointer
 * is advanced to it by RS_, the absmax pointer by RS_ / 256, and Q8_ITEM is 0.
 * In the rule bodies: STATE_PTR(s) in the signature, then STATE_EXTRA(s)
 * (the absmax argument of 8-bit state) after `const ulong so,`; STATE_BEGIN(s) after the
 * pointers are advanced, LOADS(s, sg) / STORES(x, s, sg) (sg 1 signed, 0 non-negative) in
 * the element loop, STATE_END(s, sg) after it; Q8_PARAMS goes last in the signature. */
#ifndef SQ
#define SQ 0
#endif
#if SQ == 0
#define STATE_PTR(s) __global float *s##_
#define STATE_EXTRA(s)
#define STATE_BEGIN(s)
#define LOADS(s, sg) LOAD(s##_)
#define STORES(x, s, sg) STORE(x, s##_)
#define STATE_END(s, sg)
#define Q8_PARAMS
#elif SQ == 2
#define STATE_PTR(s) __global ushort *s##_
#define STATE_EXTRA(s)
#define STATE_BEGIN(s)
#define LOADS(s, sg) LOAD_BF16(s##_)
#define STORES(x, s, sg) STORE_U16(f32_to_bf16(x), s##_)
#define STATE_END(s, sg)
#define Q8_PARAMS
#elif SQ == 4
/* Two shapes of the same computation (Q8WG, chosen by the host from the tuning):
 * 0: a work-item per block (VW 16 x IPW 16, the CPU shape above);
 * 1: a work-group per block (bitsandbytes' shape, for GPUs): IPW 1 and Q8_LANES = 256 / VW
 *    work-items, each dequantizing and updating one vector of the block and keeping its new
 *    values in registers; the block's absmax is reduced in local memory (a fixed tree of
 *    fmax: exact, so both shapes give the same absmax and the same codes bit for bit), then
 *    each work-item writes its vector's codes and work-item 0 the absmax. The launch is
 *    exactly one work-group of Q8_LANES per block (host/ops.c), so every work-item of a
 *    group reaches the barriers: the kernels return early only where the whole group does
 *    (CTRL_GUARD; RANGES_BEGIN on the group's row). */
#ifndef Q8WG
#define Q8WG 0
#endif
#if Q8WG
#if IPW != 1 || (RANGES && !RANGES_ROWS)
#error "8-bit state in work-groups needs IPW 1 and a table row per block"
#endif
#define Q8_LANES (256 / VW)
/* on the kernels that take 8-bit state: the driver then enforces the launch's group size
   and the compiler fits the kernel's registers to it (or fails the build) */
#define Q8_WG_ATTR __attribute__((reqd_work_group_size(Q8_LANES, 1, 1)))
#elif VW != 16 || IPW != 16 || (RANGES && !RANGES_ROWS)
#error "8-bit state needs VW 16, IPW 16 and a table row per block: one work-item per block"
#endif
#define Q8_BLOCK 256
#if RANGES
#define Q8_ITEM 0
#define Q8_ABS_AT (RS_ / Q8_BLOCK)
#elif Q8WG
#define Q8_ITEM get_group_id(0)
#define Q8_ABS_AT 0
#else
#define Q8_ITEM get_global_id(0)
#define Q8_ABS_AT 0
#endif
#define STATE_PTR(s) __global uchar *s##_
#define STATE_EXTRA(s) __global float *s##a_, const ulong s##ao,
#define Q8_PARAMS , __global const float *qmap_
#if Q8WG
/* the block's absmax; the work-item's new values, their largest magnitude, the group's
   reduction */
#define STATE_BEGIN(s)                                                                     \
    s##a_ += (long)s##ao + Q8_ABS_AT;                                                      \
    const float s##am_ = q8_live(n) ? s##a_[Q8_ITEM] : 0.0f;                               \
    __local float s##r_[Q8_LANES];                                                         \
    floatV s##q_ = (floatV)(0.0f);                                                         \
    float s##mx_ = 0.0f
#define STORES(x, s, sg)                                                                   \
    do {                                                                                   \
        s##q_ = (x);                                                                       \
        s##mx_ = q8_hmax(s##q_, full_ ? (uint)VW : rem_);                                  \
    } while (0)
#define STATE_END(s, sg)                                                                   \
    q8_group_store(s##_, s##a_, s##r_, s##q_, s##mx_, CTRL_LIVE ? n : 0,                  \
                   (__global const uint *)(qmap_ + 512), sg)
#else
/* the work-item's block: its absmax, the new values and their largest magnitude */
#define STATE_BEGIN(s)                                                                     \
    s##a_ += (long)s##ao + Q8_ABS_AT;                                                      \
    const float s##am_ = q8_live(n) ? s##a_[Q8_ITEM] : 0.0f;                               \
    float s##q_[Q8_BLOCK];                                                                 \
    float16 s##mx_ = (float16)(0.0f)
#define STORES(x, s, sg)                                                                   \
    do {                                                                                   \
        const float16 x_ = (x);                                                            \
        vstore16(x_, vi_ - lo_, s##q_);                                                    \
        s##mx_ = fmax(s##mx_, full_ ? fabs(x_) : maskR(fabs(x_), rem_));                    \
    } while (0)
#define STATE_END(s, sg)                                                                   \
    if (q8_live(n))                                                                        \
    q8_store_block(s##_, s##a_, s##q_, s##mx_, n, (__global const uint *)(qmap_ + 512), sg)
#endif
#define LOADS(s, sg)                                                                       \
    q8_load(s##_, vi_, full_, rem_, base_, s##am_, qmap_ + ((sg) ? 0 : 256))

static inline int q8_live(ulong n) { return Q8_ITEM * Q8_BLOCK < n; }

/* m[i] (vector type T) for the VW lanes of i (a gather where the device has one); the
   vector types of VW lanes; VTRUE(c): a comparison's result as 0 or all ones (a vector's
   already is, a scalar's is 0 or 1). */
#if VW == 16
#define Q8_GATHER(T, m, i)                                                                 \
    ((T)((m)[(i).s0], (m)[(i).s1], (m)[(i).s2], (m)[(i).s3], (m)[(i).s4], (m)[(i).s5], \
               (m)[(i).s6], (m)[(i).s7], (m)[(i).s8], (m)[(i).s9], (m)[(i).sa], (m)[(i).sb], \
               (m)[(i).sc], (m)[(i).sd], (m)[(i).se], (m)[(i).sf]))
#elif VW == 8
#define Q8_GATHER(T, m, i)                                                                 \
    ((T)((m)[(i).s0], (m)[(i).s1], (m)[(i).s2], (m)[(i).s3], (m)[(i).s4], (m)[(i).s5], \
               (m)[(i).s6], (m)[(i).s7]))
#elif VW == 4
#define Q8_GATHER(T, m, i) ((T)((m)[(i).s0], (m)[(i).s1], (m)[(i).s2], (m)[(i).s3]))
#elif VW == 2
#define Q8_GATHER(T, m, i) ((T)((m)[(i).s0], (m)[(i).s1]))
#else
#define Q8_GATHER(T, m, i) ((T)((m)[i]))
#endif
#if VW == 1
typedef uchar ucharV;
#define AS_INTV as_int
#define CONVERT_UCHARV convert_uchar
#define VTRUE(c) ((uint)(-(int)(c)))
#else
typedef CLOPT_CAT(uchar, VW) ucharV;
#define AS_INTV CLOPT_CAT(as_int, VW)
#define CONVERT_UCHARV CLOPT_CAT(convert_uchar, VW)
#define VTRUE(c) AS_UINTV(c)
#endif

/* The VW values from vector vi (or the tail's rem) of the codes at p. */
static inline floatV q8_load(__global const uchar *p, ulong vi, int full, uint rem, ulong base,
                             float am, __global const float *map)
{
    uintV c;
    if (full) {
        c = CONVERT_UINTV(VLOAD(vi, p));
    } else {
        uint t[VW];
        for (uint k = 0; k < VW; k++)
            t[k] = k < rem ? p[base + k] : 0u;
        c = VLOAD(0, t);
    }
    return Q8_GATHER(floatV, map, c) * am;
}

/* The codes of VW values v in [-1, 1]: each the nearest map entry (ties to the lower code),
   found with one table load per lane. The table (after the two maps in qmap_, built by the
   host, host/q8_table.h) cuts magnitudes into buckets of equal top 16 bits (exponent and 7
   mantissa bits), from Q8_TLO to Q8_THI (1.0), bucket 0 holding everything below; no bucket
   holds two changes of code (the host checks), so a bucket has one code or two: its entry is
   the code at the bucket's bottom (bits 24-31) and the low 16 bits from which the next code
   (one up for v >= 0, one down for v < 0) is the nearer (bits 0-16, 0x10000 when none).
   Three regions of Q8_TN entries: signed map for v >= 0, signed for v < 0, unsigned. A NaN,
   and a negative v in the unsigned map, take the code of 0. */
#if !defined(Q8_TLO) || !defined(Q8_THI) /* from the host (host/q8_table.h) */
#error "8-bit state needs Q8_TLO and Q8_THI"
#endif
#define Q8_TN (Q8_THI - Q8_TLO + 2u)
static inline uintV q8_codes(floatV v, __global const uint *tab, int sg)
{
    const uintV b = AS_UINTV(v), mag = b & (uintV)(0x7FFFFFFFu);
    const uintV neg = sg ? AS_UINTV(AS_INTV(b) >> 31) : (uintV)(0u); /* all ones: v < 0 */
    const uintV h = clamp(mag >> 16, (uintV)(Q8_TLO - 1u), (uintV)(Q8_THI)) -
                    (uintV)(Q8_TLO - 1u) + (neg & (uintV)(Q8_TN));
    /* an int index: a dword gather where the device has one (unsigned ones widen to 64 bits) */
    const uintV e = Q8_GATHER(uintV, tab + (sg ? 0u : 2u * Q8_TN), AS_INTV(h));
    const uintV up = VTRUE((mag & (uintV)(0xFFFFu)) >= (e & (uintV)(0x1FFFFu)));
    /* up and neg are 0 or all ones: + 1 (up, v >= 0), - 1 (up, v < 0); as select(up, -up,
       neg) Oclgrind 21.10 with optimisation on got 255 for -up */
    const uintV code = (e >> 24) - (up ^ neg) + neg;
    const uintV zero = VTRUE(isnan(v)) | (sg ? (uintV)(0u) : VTRUE(v < 0.0f));
    return select(code, (uintV)(sg ? 127u : 0u), zero);
}

#if !Q8WG
/* Writes the work-item's block: its absmax and the codes of its elements. */
static inline void q8_store_block(__global uchar *p, __global float *abs, __private const float *q,
                                  float16 mx16, ulong n, __global const uint *tab, int sg)
{
    const ulong b = Q8_ITEM, e0 = b * Q8_BLOCK;
    const uint cnt = (uint)min((ulong)Q8_BLOCK, n - e0);
    float m[16];
    vstore16(mx16, 0, m);
    float mx = 0.0f;
    for (uint k = 0; k < 16; k++)
        mx = fmax(mx, m[k]);
    abs[b] = mx;
    for (uint v = 0; v * 16 < cnt; v++) {
        const float16 x = mx > 0.0f ? vload16(v, q) / mx : (float16)(0.0f);
        const uint16 cu = q8_codes(x, tab, sg);
        const uchar16 c = convert_uchar16(cu);
        __global uchar *d = p + e0 + v * 16;
        if (v * 16 + 16 <= cnt && ((uintptr_t)d & 3u) == 0) { /* 32-bit lanes from the uints */
            vstore4(U8_QUADS(4, cu), 0, (__global uint *)d);
        } else if (v * 16 + 16 <= cnt) {
            vstore16(c, 0, d);
        } else {
            uchar t[16];
            vstore16(c, 0, t);
            for (uint k = 0; v * 16 + k < cnt; k++)
                p[e0 + v * 16 + k] = t[k];
        }
    }
}
#else
/* The largest magnitude of x's first cnt lanes (from 0, as the work-item shape's fmax over
   its block: a lane's NaN is passed over unless every lane is NaN, and then it is 0). */
static inline float q8_hmax(floatV x, uint cnt)
{
    float t[VW];
    VSTORE(fabs(x), 0, t);
    float m = 0.0f;
    for (uint k = 0; k < cnt; k++)
        m = fmax(m, t[k]);
    return m;
}

/* The work-group's block: the absmax reduced over the work-items' largest magnitudes mx
   (r: Q8_LANES floats of local memory), written by work-item 0; each work-item's new values
   q quantized against it, their codes written. Every work-item of the group calls it; n 0
   (a skipped step) writes nothing. */
static inline void q8_group_store(__global uchar *p, __global float *abs, __local float *r,
                                  floatV q, float mx, ulong n, __global const uint *tab, int sg)
{
    const uint lid = (uint)get_local_id(0);
    r[lid] = mx;
    /* the global fence orders every work-item's read of the old absmax (STATE_BEGIN) before
       work-item 0 writes the new one */
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
    for (uint h = Q8_LANES / 2; h > 0; h >>= 1) {
        if (lid < h)
            r[lid] = fmax(r[lid], r[lid + h]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float m = r[0];
    if (lid == 0 && q8_live(n))
        abs[Q8_ITEM] = m;
    /* the work-item's vector (ELEMENTWISE's vi_: in the table's row with RANGES) */
    const ulong vi = ITEM_ID, e = vi * VW;
    const floatV x = m > 0.0f ? q / m : (floatV)(0.0f);
    const ucharV c = CONVERT_UCHARV(q8_codes(x, tab, sg));
    if (e + VW <= n) {
        VSTORE(c, vi, p);
    } else if (e < n) {
        uchar t[VW];
        VSTORE(c, 0, t);
        for (uint k = 0; e + k < n; k++)
            p[e + k] = t[k];
    }
}
#endif
#endif
#ifndef Q8_DECL
#define Q8_DECL
#endif
#ifndef Q8_WG_ATTR
#define Q8_WG_ATTR
#endif
#define STORAGE_BEGIN                                                                      \
    THETA_BEGIN;                                                                           \
    Q8_DECL

/* Gradient centralization (Yong et al. 2020), define GC: the kernel takes the row means of
 * the gradient (computed by gc_rowmean in reduce.cl, after L2 decay was added, as the GC
 * code does) and the row length, and subtracts the mean of element e's row, e / gc_cols.
 * GC_PARAMS goes in a kernel's parameter list right before n. GC_APPLY runs inside
 * ELEMENTWISE_BEGIN/END and passes the count of real elements of the vector (VW, or rem_ for
 * the tail), so that no mean past the last row is ever read. */
#ifndef GC
#define GC 0
#endif
#if GC
#define GC_PARAMS __global const float *gcm_, const ulong gcmo, const ulong gc_cols,
#define GC_APPLY(g) gc_subtract(g, gcm_ + gcmo, base_, gc_cols, full_ ? (uint)VW : rem_)
static inline floatV gc_subtract(floatV g, __global const float *mean, ulong base, ulong cols,
                                 uint cnt)
{
    /* one division per vector; a vector inside one row (the usual case, cols >= VW)
       subtracts one mean (row is base's, a real row even for the tail), else the row
       advances as the column wraps. Only the cnt real elements read a mean: the tail's
       padding lanes would otherwise read means of rows past the array (an N x 1 shape has
       one row per element, so the tail ran up to VW - 1 floats past the means, which end
       where the optimizer's scratch buffer may end); their results are never stored. */
    ulong row = base / cols, col = base - row * cols;
    if (col + VW <= cols)
        return g - mean[row];
    float t[VW];
    for (uint k = 0; k < VW; k++) {
        t[k] = k < cnt ? mean[row] : 0.0f;
        if (++col == cols)
            col = 0, row++;
    }
    return g - VLOAD(0, t);
}
#define GC_APPLY1(g, e) ((g) - (gcm_ + gcmo)[(e) / gc_cols])
#else
#define GC_PARAMS
#define GC_APPLY(g) (g)
#define GC_APPLY1(g, e) (g)
#endif

/* The gradient as the update sees it: unscaled (AMP / clipping multiplier), maximize; one
 * function per lane type T (read_grad: floatV, read_grad1: float; read_gradR in chunks.cl). */
#if MAXIMIZE
#define CLOPT_READ_GRAD(NAME, T)                                                           \
    static inline T NAME(T g, float gmul) { return -(g * gmul); }
#else
#define CLOPT_READ_GRAD(NAME, T)                                                           \
    static inline T NAME(T g, float gmul) { return g * gmul; }
#endif
CLOPT_READ_GRAD(read_grad, floatV)
CLOPT_READ_GRAD(read_grad1, float)

/* Compensated (Kahan) accumulation: the rounding error of each addition is carried into the
 * next, so long sequential sums (a 4096-element row) stay accurate to a few ulp. Strict IEEE
 * arithmetic (no fast-math) keeps the compensation from being optimised away. One type per
 * lane type T (kahan: float; kahanR, lane by lane, in chunks.cl). */
#define CLOPT_KAHAN(NAME, ADD, T)                                                          \
    typedef struct NAME {                                                                  \
        T sum, c;                                                                          \
    } NAME;                                                                                \
    static inline void ADD(NAME *k, T x)                                                   \
    {                                                                                      \
        T y = x - k->c;                                                                    \
        T t = k->sum + y;                                                                  \
        k->c = (t - k->sum) - y;                                                           \
        k->sum = t;                                                                        \
    }
CLOPT_KAHAN(kahan, kahan_add, float)
