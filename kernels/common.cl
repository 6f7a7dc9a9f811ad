/* SPDX-License-Identifier: MIT */
/* Shared by every kernel family (prepended to each program).
 *
 * Element-wise kernels process vectors of VW consecutive floats with vloadN/vstoreN (any
 * element offset works: vloadN needs only float alignment). The work-item that holds vector
 * nv = n / VW (when n % VW != 0) takes the tail through private arrays, so every rule's
 * update is written once, as a function of floatV. Defines: VW (1, 2, 4, 8, 16), IPW
 * (vectors per work-item, below), MAXIMIZE (0/1). */
#ifndef VW
#define VW 1
#endif
#ifndef MAXIMIZE
#define MAXIMIZE 0
#endif

/* CTRL (optimizer level): the kernel takes the step's control words (ctl_ + ctlo, written on
 * the device by step_verdict / step_commit in tensor.cl), the optimizer step count expect_
 * of the first of ncand_ possible outcomes of the steps still in flight, and a table of
 * ncand_ rows of CTRL_ROW floats at tab_ + tabo: the per-step arguments for each outcome
 * (computed on the host in double; the kernels with CTRL_SCALARS reload theirs from the row
 * of the device's count, the others take no row). The kernel does nothing when the step is
 * skipped (AMP found Inf/NaN, or the host aborted the step) or when the device's count is
 * outside [expect_, expect_ + ncand_), and multiplies the gradient multiplier by the clip
 * coefficient. Words: 0 skip, 1 clip coefficient (float bits), 2-3 applied steps (ulong, low
 * word first), 4 gradient norm, 5 non-finite gradient seen, 6 abort. */
#ifndef CTRL
#define CTRL 0
#endif
#define CTRL_ROW 16
#if CTRL
#define CTRL_PARAMS                                                                        \
    , __global const uint *ctl_, const ulong ctlo, const ulong expect_,                    \
        __global const float *tab_, const ulong tabo, const uint ncand_
#define CTRL_SKIP                                                                          \
    const ulong dc_ = (((ulong)ctl_[ctlo + 3]) << 32) | (ulong)ctl_[ctlo + 2];             \
    if (ctl_[ctlo] != 0u || dc_ < expect_ || dc_ - expect_ >= (ulong)ncand_)               \
    return
#define CTRL_GUARD(gm)                                                                     \
    CTRL_SKIP;                                                                             \
    gm = gm * as_float(ctl_[ctlo + 1]);                                                    \
    __global const float *row_ = tab_ + tabo + (dc_ - expect_) * CTRL_ROW
/* CTRL_SCALARS(a, b, ...): a = row_[0], b = row_[1], ... (the kernel's per-step arguments,
 * in argument order; an int argument converts from its float). */
#define CTRL_S1(i, a) a = row_[i];
#define CTRL_S2(i, a, ...) a = row_[i]; CTRL_S1(i + 1, __VA_ARGS__)
#define CTRL_S3(i, a, ...) a = row_[i]; CTRL_S2(i + 1, __VA_ARGS__)
#define CTRL_S4(i, a, ...) a = row_[i]; CTRL_S3(i + 1, __VA_ARGS__)
#define CTRL_S5(i, a, ...) a = row_[i]; CTRL_S4(i + 1, __VA_ARGS__)
#define CTRL_S6(i, a, ...) a = row_[i]; CTRL_S5(i + 1, __VA_ARGS__)
#define CTRL_S7(i, a, ...) a = row_[i]; CTRL_S6(i + 1, __VA_ARGS__)
#define CTRL_S8(i, a, ...) a = row_[i]; CTRL_S7(i + 1, __VA_ARGS__)
#define CTRL_S9(i, a, ...) a = row_[i]; CTRL_S8(i + 1, __VA_ARGS__)
#define CTRL_S10(i, a, ...) a = row_[i]; CTRL_S9(i + 1, __VA_ARGS__)
#define CTRL_S11(i, a, ...) a = row_[i]; CTRL_S10(i + 1, __VA_ARGS__)
#define CTRL_S12(i, a, ...) a = row_[i]; CTRL_S11(i + 1, __VA_ARGS__)
#define CTRL_NARGS_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, N, ...) N
#define CTRL_NARGS(...) CTRL_NARGS_(__VA_ARGS__, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define CTRL_SCALARS_(n, ...) CTRL_S##n(0, __VA_ARGS__)
#define CTRL_SCALARS_N(n, ...) CTRL_SCALARS_(n, __VA_ARGS__)
#define CTRL_SCALARS(...) CTRL_SCALARS_N(CTRL_NARGS(__VA_ARGS__), __VA_ARGS__)
#else
#define CTRL_PARAMS
#define CTRL_SKIP
#define CTRL_GUARD(gm)
#define CTRL_SCALARS(...)
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
 * and write one vector of VW elements (or the n % VW tail) of a pointer already advanced by
 * its offset; vi_ is the vector's index. The body is written once but compiled twice: the
 * loop over the two cases (full vectors, tail) is unrolled, so in each copy full_ is a
 * constant and every LOAD/STORE is a plain vloadN/vstoreN or a tail access. A run-time
 * choice per load instead costs PoCL's work-group vectoriser 10-20% of the bandwidth
 * (measured with clopt-bench).
 *
 * IPW (items per work-item, define, default 1): work-item i updates the IPW consecutive
 * vectors from i * IPW in a loop, and the work-item whose range reaches vector n / VW also
 * takes the tail. IPW 1 is the one-vector-per-work-item form GPUs want (neighbouring
 * work-items read neighbouring vectors). On a CPU, PoCL runs a work-group as a loop over its
 * work-items; there float16 vectors with IPW 16 give each work-item a plain streaming loop
 * that LLVM compiles without the per-item bookkeeping of the VW 1 form, which made the
 * rules with exp/sqrt/division compute-bound on 2 cores (diffGrad 0.74 -> 0.95 of its
 * stream kernel, clopt-bench at 2^25). */
/* RANGES (optimizer level, groups over ranges of caller-owned buffers): one launch updates
 * many tensors, the OpenCL 1.2 form of multi-tensor apply. The host splits every tensor into
 * chunks and passes a table with one ulong4 per chunk: (θ offset, g offset, state offset,
 * length), in elements. Work-group c takes chunk c; its work-items stride over the chunk's
 * vectors, so any chunk length works with any tuning. In the kernels, n is the chunk's
 * length and RP_, RG_, RS_ are added to the θ, g and state pointers (0 without RANGES).
 * (Work-groups that walk several chunks each cost a thousand tiny tensors less, but on a CPU
 * each work-item then strides across chunks: 1.9x slower at 2^24, clopt-bench ranges.) */
#ifndef RANGES
#define RANGES 0
#endif
#if RANGES
#define N_ARG n_all_
#define RANGES_PARAMS , __global const ulong *rt_
#define RANGES_BEGIN                                                                       \
    const ulong4 r_ = vload4(get_group_id(0), rt_);                                        \
    const long RP_ = (long)r_.x, RG_ = (long)r_.y, RS_ = (long)r_.z;                       \
    const ulong n = r_.w;
#define ITEM_LOOP_BEGIN                                                                    \
    for (ulong it_ = get_local_id(0); it_ * IPW <= n / VW; it_ += get_local_size(0)) {
#define ITEM_LOOP_END }
#define ITEM_ID it_
#else
#define N_ARG n
#define RANGES_PARAMS
#define RANGES_BEGIN
#define RP_ 0
#define RG_ 0
#define RS_ 0
#define ITEM_LOOP_BEGIN
#define ITEM_LOOP_END
#define ITEM_ID get_global_id(0)
#endif

#ifndef IPW
#define IPW 1
#endif
#if IPW == 1
#define ELEMENTWISE_BEGIN                                                                  \
    ITEM_LOOP_BEGIN                                                                        \
    const ulong vi_ = ITEM_ID;                                                             \
    const ulong nv_ = n / VW;                                                              \
    const uint rem_ = (uint)(n - nv_ * VW);                                                \
    _Pragma("unroll") for (int pass_ = 0; pass_ < 2; pass_++) {                            \
        const int full_ = pass_ == 0;                                                      \
        if (full_ ? vi_ < nv_ : (vi_ == nv_ && rem_ != 0)) {                               \
            const ulong base_ = vi_ * VW;
#define ELEMENTWISE_END                                                                    \
    break;                                                                                 \
    }                                                                                      \
    }                                                                                      \
    ITEM_LOOP_END
#else
#define ELEMENTWISE_BEGIN                                                                  \
    ITEM_LOOP_BEGIN                                                                        \
    const ulong lo_ = ITEM_ID * IPW;                                                       \
    const ulong nv_ = n / VW;                                                              \
    const uint rem_ = (uint)(n - nv_ * VW);                                                \
    _Pragma("unroll") for (int pass_ = 0; pass_ < 2; pass_++) {                            \
        const int full_ = pass_ == 0;                                                      \
        const ulong from_ = full_ ? lo_ : nv_;                                             \
        const ulong to_ = full_ ? min(lo_ + IPW, nv_)                                      \
                                : nv_ + (rem_ != 0 && lo_ <= nv_ && nv_ - lo_ < IPW);      \
        for (ulong vi_ = from_; vi_ < to_; vi_++) {                                        \
            const ulong base_ = vi_ * VW;
#define ELEMENTWISE_END                                                                    \
    }                                                                                      \
    }                                                                                      \
    ITEM_LOOP_END
#endif

#define LOAD(p) (full_ ? VLOAD(vi_, p) : tail_load((p) + base_, rem_))
#define STORE(x, p)                                                                        \
    do {                                                                                   \
        if (full_)                                                                         \
            VSTORE(x, vi_, p);                                                             \
        else                                                                               \
            tail_store(x, (p) + base_, rem_);                                              \
    } while (0)

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

/* Philox-4x32-10 (Salmon et al. 2011, the Random123 constants). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

inline uint4 philox4x32_10(uint4 c, uint2 k)
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

inline floatV bf16_to_f32(ushortV u) { return AS_FLOATV(CONVERT_UINTV(u) << 16); }

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
 *   >= 65536 and so Inf as a float16, as a value past the largest float16 rounds. */
#define CLOPT_ROUNDINGS(F, U, I, US, AS_U, CVT_US, CVT_F, NAME)                             \
    inline US NAME##_rne(F x)                                                              \
    {                                                                                      \
        const U b = AS_U(x);                                                               \
        const U r = (b + (U)(0x7FFFu) + ((b >> 16) & (U)(1u))) >> 16;                       \
        return CVT_US(select(r, (b >> 16) | (U)(0x40u), isnan(x)));                        \
    }                                                                                      \
    inline US NAME##_sr(F x, U r)                                                          \
    {                                                                                      \
        const U b = AS_U(x);                                                               \
        return CVT_US(select((b + r) >> 16, (b >> 16) | (U)(0x40u), isnan(x)));            \
    }                                                                                      \
    inline F NAME##_f16sr(F x, U r)                                                        \
    {                                                                                      \
        const F a = fabs(x);                                                               \
        const I e = max(ilogb(a), (I)(-14));                                               \
        const F q = ldexp(a, (I)(10) - e);                                                 \
        const F fl = floor(q);                                                             \
        const F u = CVT_F(r) * (1.0f / 65536.0f);                                          \
        const F y = ldexp(fl + select((F)(0.0f), (F)(1.0f), u < q - fl), e - (I)(10));     \
        return select(copysign(y, x), x, isnan(x) | isinf(x));                             \
    }
CLOPT_ROUNDINGS(floatV, uintV, intV, ushortV, AS_UINTV, CONVERT_USHORTV, CONVERT_FLOATV, rndV)
#if VW == 16
#define rndR_rne rndV_rne
#define rndR_sr rndV_sr
#define rndR_f16sr rndV_f16sr
#else
CLOPT_ROUNDINGS(float16, uint16, int16, ushort16, as_uint16, convert_ushort16, convert_float16,
                rndR)
#endif
#define f32_to_bf16 rndV_rne
#define f32_to_bf16_sr rndV_sr
#define f16_sr_value rndV_f16sr

/* Philox-4x32-10 on two counters at once (lane i of a, b, c, d: counter i's words). */
inline void philox2_soa(uint2 *a, uint2 *b, uint2 *c, uint2 *d, uint2 k)
{
    for (int r = 0; r < 10; r++) {
        const uint2 lo0 = PHILOX_M0 * *a, hi0 = mul_hi((uint2)(PHILOX_M0), *a);
        const uint2 lo1 = PHILOX_M1 * *c, hi1 = mul_hi((uint2)(PHILOX_M1), *c);
        *a = hi1 ^ *b ^ k.x;
        *b = lo1;
        *c = hi0 ^ *d ^ k.y;
        *d = lo0;
        k += (uint2)(PHILOX_W0, PHILOX_W1);
    }
}

/* The 16-bit random value of element e: half e % 2 (low first) of word (e / 2) % 4 of
   Philox-4x32-10 with counter (e / 8 low, high, step, stream) and key (seed low, high). */
inline uint sr_word1(ulong e, uint2 key, uint stream, uint step)
{
    const ulong q = e >> 3;
    const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream), key);
    const uint j = ((uint)e >> 1) & 3u;
    const uint w = j == 0 ? x.x : j == 1 ? x.y : j == 2 ? x.z : x.w;
    return (w >> (16u * ((uint)e & 1u))) & 0xFFFFu;
}

/* The random values of the VW elements from element e0: one Philox call per 8 elements,
   vector code when the vector starts on a multiple of 8 (the usual case). */
inline uintV sr_words(ulong e0, ulong seed, uint stream, uint step)
{
    const uint2 key = (uint2)((uint)seed, (uint)(seed >> 32));
#if VW == 16
    if ((e0 & 7u) == 0) {
        const ulong q = e0 >> 3;
        uint2 a = (uint2)((uint)q, (uint)(q + 1)), b = (uint2)((uint)(q >> 32), (uint)((q + 1) >> 32));
        uint2 c = (uint2)(step), d = (uint2)(stream);
        philox2_soa(&a, &b, &c, &d, key);
        const uint16 v = (uint16)(a.s0, a.s0, b.s0, b.s0, c.s0, c.s0, d.s0, d.s0, a.s1, a.s1,
                                  b.s1, b.s1, c.s1, c.s1, d.s1, d.s1);
        return (v >> (uint16)(0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16)) &
               (uint16)(0xFFFFu);
    }
#elif VW == 8
    if ((e0 & 7u) == 0) {
        const ulong q = e0 >> 3;
        const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream), key);
        const uint8 v = (uint8)(x.x, x.x, x.y, x.y, x.z, x.z, x.w, x.w);
        return (v >> (uint8)(0, 16, 0, 16, 0, 16, 0, 16)) & (uint8)(0xFFFFu);
    }
#endif
    uint w[VW];
    for (uint k = 0; k < VW; k++)
        w[k] = sr_word1(e0 + k, key, stream, step);
    return VLOAD(0, w);
}

/* Typed vector loads and stores (vector vi of VW elements, or the tail of rem). */
inline floatV vload_f16(ulong i, __global const half *p) { return VLOAD_HALF(i, p); }
inline floatV vload_bf16(ulong i, __global const ushort *p) { return bf16_to_f32(VLOAD(i, p)); }

inline floatV tail_load_f16(__global const half *p, uint rem)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? vload_half(k, p) : 0.0f;
    return VLOAD(0, t);
}

inline floatV tail_load_bf16(__global const ushort *p, uint rem)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? as_float((uint)p[k] << 16) : 0.0f;
    return VLOAD(0, t);
}

inline ushortV tail_load_u16(__global const ushort *p, uint rem)
{
    ushort t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? p[k] : (ushort)0;
    return VLOAD(0, t);
}

inline void tail_store_f16(floatV x, __global half *p, uint rem)
{
    float t[VW];
    VSTORE(x, 0, t);
    for (uint k = 0; k < rem; k++)
        vstore_half_rte(t[k], k, p);
}

inline void tail_store_u16(ushortV x, __global ushort *p, uint rem)
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
            VSTORE(x, vi_, p);                                                             \
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
#if CTRL
#define SR_STEP ((uint)(dc_ + 1))
#else
#define SR_STEP sr_step
#endif
#if SR && VW == 16 && IPW == 16 && !RANGES
/* A CPU's tuning (a work-item walks 16 vectors of 16): the work-item's random values come
   from one batch of 33 Philox instances computed 16 at a time in vector lanes before its
   loop (SR_BATCH_BEGIN in THETA_BEGIN), instead of two instances per vector. The values are
   the same as sr_words'. */
#define SR_BATCH 1
inline void philox16_soa(uint16 *a, uint16 *b, uint16 *c, uint16 *d, uint2 k)
{
    for (int r = 0; r < 10; r++) {
        const uint16 lo0 = PHILOX_M0 * *a, hi0 = mul_hi((uint16)(PHILOX_M0), *a);
        const uint16 lo1 = PHILOX_M1 * *c, hi1 = mul_hi((uint16)(PHILOX_M1), *c);
        *a = hi1 ^ *b ^ k.x;
        *b = lo1;
        *c = hi0 ^ *d ^ k.y;
        *d = lo0;
        k += (uint2)(PHILOX_W0, PHILOX_W1);
    }
}

/* w[4j + i]: word i of Philox instance q0 + j, j = 0 .. 32 (the 256 elements from e0 span at
   most 33 instances of 8). */
inline void sr_batch(ulong e0, ulong seed, uint stream, uint step, __private uint *w)
{
    const uint2 key = (uint2)((uint)seed, (uint)(seed >> 32));
    const ulong q0 = e0 >> 3;
    for (uint h = 0; h < 2; h++) {
        const ulong qb = q0 + 16 * h;
        const uint16 j = (uint16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        uint16 a = (uint16)((uint)qb) + j;
        /* the high word carries when the low one wraps */
        uint16 b = (uint16)((uint)(qb >> 32)) + as_uint16(-(as_int16(a < (uint16)((uint)qb))));
        uint16 c = (uint16)(step), d = (uint16)(stream);
        philox16_soa(&a, &b, &c, &d, key);
        uint t[4][16];
        vstore16(a, 0, t[0]);
        vstore16(b, 0, t[1]);
        vstore16(c, 0, t[2]);
        vstore16(d, 0, t[3]);
        for (uint l = 0; l < 16; l++)
            for (uint i = 0; i < 4; i++)
                w[4 * (16 * h + l) + i] = t[i][l];
    }
    const ulong q = q0 + 32;
    const uint4 x = philox4x32_10((uint4)((uint)q, (uint)(q >> 32), step, stream), key);
    w[128] = x.x, w[129] = x.y, w[130] = x.z, w[131] = x.w;
}

/* The 16-bit values of the 16 elements from element off of the batch (off = e - 8 q0). */
inline uint16 sr_from_batch(__private const uint *w, ulong off)
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
#define SR_BATCH_BEGIN                                                                     \
    uint srw_[4 * 33];                                                                     \
    const ulong sre0_ = pe_ + get_global_id(0) * (ulong)(IPW * VW);                        \
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
/* master bits = (θ << 16) + sign-extended r; θ = (bits + 0x8000) >> 16 (no carry reaches
   the sign bit: the largest magnitude, a NaN's 0x7FFFFFFF, plus 0x8000 stays below it) */
inline floatV remainder_join(ushortV hi, ushortV lo)
{
    return AS_FLOATV((CONVERT_UINTV(hi) << 16) +
                     ((CONVERT_UINTV(lo) ^ (uintV)(0x8000u)) - (uintV)(0x8000u)));
}
#define THETA_LOAD(p) remainder_join(LOAD_U16(p), LOAD_U16(ms_))
#define THETA_STORE(x, p)                                                                  \
    do {                                                                                   \
        const uintV b_ = AS_UINTV(x);                                                      \
        const uintV h_ = (b_ + (uintV)(0x8000u)) >> 16;                                    \
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
 * then writes the block's absmax and each value's nearest code (ties to the lower code). In the rule bodies: STATE_PTR(s) in the signature, then STATE_EXTRA(s)
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
#if VW != 16 || IPW != 16 || RANGES
#error "8-bit state needs VW 16, IPW 16 and no RANGES: one work-item per block of 256"
#endif
#define Q8_BLOCK 256
#define STATE_PTR(s) __global uchar *s##_
#define STATE_EXTRA(s) __global float *s##a_, const ulong s##ao,
#define Q8_PARAMS , __global const float *qmap_
/* the work-item's block: its absmax, the new values and their largest magnitude */
#define STATE_BEGIN(s)                                                                     \
    s##a_ += (long)s##ao;                                                                  \
    const float s##am_ = q8_live(n) ? s##a_[get_global_id(0)] : 0.0f;                      \
    float s##q_[Q8_BLOCK];                                                                 \
    float16 s##mx_ = (float16)(0.0f)
#define LOADS(s, sg)                                                                       \
    q8_load(s##_, vi_, full_, rem_, base_, s##am_, qmap_ + ((sg) ? 0 : 256))
#define STORES(x, s, sg)                                                                   \
    do {                                                                                   \
        const float16 x_ = (x);                                                            \
        vstore16(x_, vi_ - lo_, s##q_);                                                    \
        s##mx_ = fmax(s##mx_, full_ ? fabs(x_) : maskR(fabs(x_), rem_));                    \
    } while (0)
#define STATE_END(s, sg)                                                                   \
    if (q8_live(n))                                                                        \
    q8_store_block(s##_, s##a_, s##q_, s##mx_, n, qmap_ + 512, sg)

inline int q8_live(ulong n) { return get_global_id(0) * Q8_BLOCK < n; }

/* map[i] for the 16 lanes of i (a gather where the device has one). */
#define Q8_GATHER(m, i)                                                                    \
    ((float16)((m)[(i).s0], (m)[(i).s1], (m)[(i).s2], (m)[(i).s3], (m)[(i).s4], (m)[(i).s5], \
               (m)[(i).s6], (m)[(i).s7], (m)[(i).s8], (m)[(i).s9], (m)[(i).sa], (m)[(i).sb], \
               (m)[(i).sc], (m)[(i).sd], (m)[(i).se], (m)[(i).sf]))

/* The 16 values from vector vi (or the tail's rem) of the codes at p. */
inline float16 q8_load(__global const uchar *p, ulong vi, int full, uint rem, ulong base,
                       float am, __global const float *map)
{
    uint16 c;
    if (full) {
        c = convert_uint16(vload16(vi, p));
    } else {
        uint t[16];
        for (uint k = 0; k < 16; k++)
            t[k] = k < rem ? p[base + k] : 0u;
        c = vload16(0, t);
    }
    return Q8_GATHER(map, c) * am;
}

/* The codes of 16 values v in [-1, 1], computed rather than searched: the map's entries
   are, per decade i = 0..6, the midpoints of k = 2^i (signed) or 2^(i+1) (unsigned) equal
   bins covering 10^(i-6) [0.1, 1], so once the decade is known the nearest entry is the one
   whose bin holds |v|. tab (after the two maps in qmap_, filled by the host from them):
   the boundaries B0..B7 for signed and for unsigned (B0 half the smallest entry, Bi the
   midpoint of the entries facing each other across decades, B7 the midpoint of the largest
   entry and 1), 10^(6-i), then k/0.9 signed and unsigned. So each code is the nearest
   entry's up to float rounding at a bin's edge, which q8_nearest then settles against the
   map itself (ties to the lower code). Codes: unsigned 0 (0.0),
   1 + 2^(i+1) - 2 + j, 255 (1.0); signed 127 (0.0), 128 + 2^i - 1 + j for v > 0,
   126 - (2^i - 1 + j) for v < 0, 255 (1.0). */
inline uint16 q8_codes(float16 v, __global const float *tab, int sg)
{
    const float16 a = fabs(v);
    __global const float *B = tab + (sg ? 0 : 8);
    int16 i = (int16)(0);
    float16 sc = (float16)(tab[16]), km = (float16)(tab[sg ? 23 : 30]);
    for (int d = 1; d < 7; d++) {
        const int16 up = a >= (float16)(B[d]);
        i -= up; /* true is -1 */
        sc = select(sc, (float16)(tab[16 + d]), up);
        km = select(km, (float16)(tab[(sg ? 23 : 30) + d]), up);
    }
    const uint16 k = as_uint16((int16)(sg ? 1 : 2) << i);
    const uint16 before = k - (uint16)(sg ? 1u : 2u);
    const float16 jf = clamp(floor((a * sc - 0.1f) * km), 0.0f, convert_float16(k - 1u));
    const uint16 j = convert_uint16(jf);
    uint16 code;
    if (sg)
        code = select((uint16)(126u) - (before + j), (uint16)(128u) + before + j,
                      as_uint16(v > 0.0f));
    else
        code = (uint16)(1u) + before + j;
    code = select(code, (uint16)(sg ? 127u : 0u), as_uint16(a < (float16)(B[0])));
    return select(code, (uint16)(255u), as_uint16(v >= (float16)(B[7])));
}

/* The nearest of codes c and their two neighbours to v (ties to the lower code): makes each
   computed code exact where float rounding put it one bin off next to a bin's edge. */
inline uint16 q8_nearest(float16 v, uint16 c, __global const float *map)
{
    const uint16 lo = select(c - 1u, c, c == (uint16)(0u)), hi = min(c + 1u, (uint16)(255u));
    const float16 dl = fabs(v - Q8_GATHER(map, lo)), dc = fabs(v - Q8_GATHER(map, c)),
                  dh = fabs(v - Q8_GATHER(map, hi));
    return select(select(c, hi, as_uint16(dh < dc)), lo, as_uint16(dl <= dc));
}

/* Writes the work-item's block: its absmax and the codes of its elements. */
inline void q8_store_block(__global uchar *p, __global float *abs, __private const float *q,
                           float16 mx16, ulong n, __global const float *tab, int sg)
{
    __global const float *map = tab - 512 + (sg ? 0 : 256);
    const ulong b = get_global_id(0), e0 = b * Q8_BLOCK;
    const uint cnt = (uint)min((ulong)Q8_BLOCK, n - e0);
    float m[16];
    vstore16(mx16, 0, m);
    float mx = 0.0f;
    for (uint k = 0; k < 16; k++)
        mx = fmax(mx, m[k]);
    abs[b] = mx;
    for (uint v = 0; v * 16 < cnt; v++) {
        const float16 x = mx > 0.0f ? vload16(v, q) / mx : (float16)(0.0f);
        const uchar16 c = convert_uchar16(q8_nearest(x, q8_codes(x, tab, sg), map));
        if (v * 16 + 16 <= cnt) {
            vstore16(c, 0, p + e0 + v * 16);
        } else {
            uchar t[16];
            vstore16(c, 0, t);
            for (uint k = 0; v * 16 + k < cnt; k++)
                p[e0 + v * 16 + k] = t[k];
        }
    }
}
#endif
#ifndef Q8_DECL
#define Q8_DECL
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
inline floatV gc_subtract(floatV g, __global const float *mean, ulong base, ulong cols,
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

/* ==== Fixed-width chunks for reductions and multi-pass rules ==================================
 * (Appended block; used by reduce.cl, tensor.cl, lamb.cl and adafactor.cl.)
 *
 * Every sum reads RW = 16 consecutive floats per step with vload16, whatever vector width or
 * work-group size the context's tuning picks: lane k of a chunk holds the elements k, k+RW,
 * k+2RW, ... of a contiguous run, each lane keeps its own Kahan sum, and the lanes are added
 * in a fixed order at the end (kahanR_total). So the order of every sum depends only on the
 * data layout and the sizes. A partial chunk (fewer than RW elements left) is read through
 * private arrays and its missing lanes are masked out of the sums. */
#define RW 16
typedef float16 floatR;
typedef int16 intR;

/* The per-chunk helpers are big; PoCL's inliner would otherwise call them once per chunk. */
#define CHUNK_INLINE __attribute__((always_inline)) inline

/* Mask of the lanes k < cnt (all set for a full chunk), for select(). */
inline intR lanes_below(uint cnt)
{
    const intR lane = (intR)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return lane < (intR)((int)cnt);
}

/* The cnt <= RW elements at p (lanes >= cnt read as 0) / store only the first cnt lanes.
 * Called with a constant cnt = RW in the hot loops, where they are a plain vload16/vstore16. */
inline floatR loadR(__global const float *p, uint cnt)
{
    if (cnt == RW)
        return vload16(0, p);
    float t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? p[k] : 0.0f;
    return vload16(0, t);
}

/* loadR of the gradient in its storage type (GT). */
inline floatR loadRG(__global const GSTORE *p, uint cnt)
{
#if GT == 0
    return loadR(p, cnt);
#else
    float t[RW];
    if (cnt == RW) {
#if GT == 1
        return vload_half16(0, p);
#else
        return as_float16(convert_uint16(vload16(0, p)) << 16);
#endif
    }
    for (uint k = 0; k < RW; k++)
#if GT == 1
        t[k] = k < cnt ? vload_half(k, p) : 0.0f;
#else
        t[k] = k < cnt ? as_float((uint)p[k] << 16) : 0.0f;
#endif
    return vload16(0, t);
#endif
}

inline void storeR(floatR x, __global float *p, uint cnt)
{
    if (cnt == RW) {
        vstore16(x, 0, p);
        return;
    }
    float t[RW];
    vstore16(x, 0, t);
    for (uint k = 0; k < cnt; k++)
        p[k] = t[k];
}

/* RW 16-bit words at p (lanes >= cnt read as 0) / store only the first cnt. */
inline ushort16 loadR16(__global const ushort *p, uint cnt)
{
    if (cnt == RW)
        return vload16(0, p);
    ushort t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? p[k] : (ushort)0;
    return vload16(0, t);
}

inline void storeR16(ushort16 x, __global ushort *p, uint cnt)
{
    if (cnt == RW) {
        vstore16(x, 0, p);
        return;
    }
    ushort t[RW];
    vstore16(x, 0, t);
    for (uint k = 0; k < cnt; k++)
        p[k] = t[k];
}

/* A state's chunk of RW elements at e in its storage (SQ 0 float32, 2 bf16), for the chunk
 * kernels (LAMB): SSTORE its element type. */
#if SQ == 2
#define SSTORE ushort
#define LOADRS(p, e, cnt) as_float16(convert_uint16(loadR16((p) + (e), cnt)) << 16)
#define STORERS(x, p, e, cnt) storeR16(rndR_rne(x), (p) + (e), cnt)
#else
#define SSTORE float
#define LOADRS(p, e, cnt) loadR((p) + (e), cnt)
#define STORERS(x, p, e, cnt) storeR(x, (p) + (e), cnt)
#endif

/* θ's chunk of RW elements at e as the update sees it, and its store, for the kernels that
 * walk chunks (LAMB, Adafactor, GC's row means): THETA_LOADR / THETA_STORER, with
 * THETA_FN_PARAMS / THETA_FN_ARGS handing the master and the rounding key down to the chunk
 * functions (the kernel's STORAGE_BEGIN defines pe_, advances ms_). Same storage as
 * THETA_LOAD / THETA_STORE above. */
#if PT == 0
#define THETA_FN_PARAMS
#define THETA_FN_ARGS
#define THETA_LOADR(p, e, cnt) loadR((p) + (e), cnt)
#define THETA_STORER(x, p, e, cnt) storeR(x, (p) + (e), cnt)
#else
#define THETA_FN_PARAMS                                                                    \
    , __global MSTORE *ms_, const ulong pe_, const ulong sr_seed, const uint sr_stream,    \
        const uint sr_step_
#define THETA_FN_ARGS , ms_, pe_, sr_seed, sr_stream, SR_STEP
#define THETA_LOADR(p, e, cnt) theta_loadR(p, ms_, e, cnt)
#define THETA_STORER(x, p, e, cnt) theta_storeR(x, p, ms_, e, cnt, pe_, sr_seed, sr_stream, sr_step_)

inline floatR theta_loadR(__global const PSTORE *p, __global const MSTORE *m, ulong e,
                          uint cnt)
{
#if MASTER == 1
    (void)p;
    return loadR(m + e, cnt);
#elif MASTER == 2
    const uint16 hi = convert_uint16(loadR16(p + e, cnt)), lo = convert_uint16(loadR16(m + e, cnt));
    return as_float16((hi << 16) + ((lo ^ (uint16)(0x8000u)) - (uint16)(0x8000u)));
#else
    (void)m;
#if PT == 1
    if (cnt == RW)
        return vload_half16(0, p + e);
    float t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? vload_half(k, p + e) : 0.0f;
    return vload16(0, t);
#else
    return as_float16(convert_uint16(loadR16(p + e, cnt)) << 16);
#endif
#endif
}

/* the chunk's 16 stochastic-rounding values (16-bit, as sr_words) */
inline uint16 sr_wordsR(ulong e0, ulong seed, uint stream, uint step)
{
    uint w[RW];
    const uint2 key = (uint2)((uint)seed, (uint)(seed >> 32));
    for (uint k = 0; k < RW; k++)
        w[k] = sr_word1(e0 + k, key, stream, step);
    return vload16(0, w);
}

inline void theta_storeR(floatR x, __global PSTORE *p, __global MSTORE *m, ulong e, uint cnt,
                         ulong pe, ulong seed, uint stream, uint step)
{
#if MASTER == 2
    (void)pe, (void)seed, (void)stream, (void)step;
    const uint16 b = as_uint16(x), h = (b + (uint16)(0x8000u)) >> 16;
    storeR16(convert_ushort16(h), p + e, cnt);
    storeR16(convert_ushort16((b - (h << 16)) & (uint16)(0xFFFFu)), m + e, cnt);
#else
#if MASTER == 1
    storeR(x, m + e, cnt);
#else
    (void)m;
#endif
#if SR && MASTER == 0
    const uint16 r = sr_wordsR(pe + e, seed, stream, step);
#if PT == 1
    float t[RW];
    vstore16(rndR_f16sr(x, r), 0, t);
    for (uint k = 0; k < cnt; k++)
        vstore_half_rte(t[k], k, p + e);
#else
    storeR16(rndR_sr(x, r), p + e, cnt);
#endif
#else
    (void)pe, (void)seed, (void)stream, (void)step;
#if PT == 1
    if (cnt == RW) {
        vstore_half16_rte(x, 0, p + e);
    } else {
        float t[RW];
        vstore16(x, 0, t);
        for (uint k = 0; k < cnt; k++)
            vstore_half_rte(t[k], k, p + e);
    }
#else
    storeR16(rndR_rne(x), p + e, cnt);
#endif
#endif
#endif
}
#endif


/* Zero the lanes >= cnt (a partial chunk's padding) before they reach a sum. */
inline floatR maskR(floatR x, uint cnt)
{
    return cnt == RW ? x : select((floatR)(0.0f), x, lanes_below(cnt));
}

inline floatR read_gradR(floatR g, float gmul)
{
    g = g * gmul;
#if MAXIMIZE
    g = -g;
#endif
    return g;
}

/* Kahan accumulation lane by lane (see kahan_add). */
typedef struct kahanR {
    floatR sum, c;
} kahanR;

inline void kahanR_add(kahanR *k, floatR x)
{
    floatR y = x - k->c;
    floatR t = k->sum + y;
    k->c = (t - k->sum) - y;
    k->sum = t;
}

/* A sum keeps RACC such accumulators (FOR_CHUNKS below assumes 4): RACC independent Kahan
 * chains hide the latency of the dependent additions (one chain limits a core to ~4 bytes a
 * cycle). kahanR_total adds all lanes in the fixed order accumulator 0 lanes 0..RW-1, then
 * accumulator 1, ..., each lane's pending compensation included. */
#define RACC 4

inline void kahanR_clear(kahanR *a)
{
    for (uint i = 0; i < RACC; i++)
        a[i].sum = a[i].c = (floatR)(0.0f);
}

inline float kahanR_total(const kahanR *a)
{
    kahan acc = {0.0f, 0.0f};
    for (uint i = 0; i < RACC; i++) {
        float s[RW], c[RW];
        vstore16(a[i].sum, 0, s);
        vstore16(a[i].c, 0, c);
        for (uint k = 0; k < RW; k++) {
            kahan_add(&acc, s[k]);
            kahan_add(&acc, -c[k]);
        }
    }
    return acc.sum;
}

/* Two-level sums for the hot loops (LAMB's and Adafactor's Σθ², Σr², Σu²): a plain float16
 * collects the squares of SUMR_FOLD chunks by fused multiply-adds, then goes into a lane-wise
 * Kahan sum. Per lane a plain run of 64 terms and compensated runs: the error of a compensated
 * sum for one operation per element instead of four (the Kahan-only form made LAMB's first
 * pass compute-bound on a CPU). The fold points depend only on the item's chunk sequence. */
#define SUMR_FOLD 64
typedef struct sumR {
    kahanR k;
    floatR p;
    uint cnt;
} sumR;

inline void sumR_clear(sumR *a)
{
    for (uint i = 0; i < RACC; i++) {
        a[i].k.sum = a[i].k.c = a[i].p = (floatR)(0.0f);
        a[i].cnt = 0;
    }
}

/* s += x² lane-wise (x already masked to its chunk's lanes). */
inline void sumR_addsq(sumR *s, floatR x)
{
    s->p = fma(x, x, s->p);
    if (++s->cnt == SUMR_FOLD) {
        kahanR_add(&s->k, s->p);
        s->p = (floatR)(0.0f);
        s->cnt = 0;
    }
}

/* The RACC sums' total in a fixed order (pending runs folded first). */
inline float sumR_total(sumR *a)
{
    kahanR t[RACC];
    for (uint i = 0; i < RACC; i++) {
        kahanR_add(&a[i].k, a[i].p);
        t[i] = a[i].k;
    }
    return kahanR_total(t);
}

/* ---- Reductions shaped for the device ----------------------------------------------------
 * RL (define, a power of 2, default 1): work-items per work-group of every reduction kernel,
 * launched with exactly that local size. A reduction over n elements runs on G work-groups
 * (G = the device's compute units x a factor, a host value, never the driver's choice):
 *  - work-group g takes the g-th contiguous block of the ceil(n / RW) chunks (group_block);
 *  - inside it, item l takes the chunks l, l + RL, l + 2 RL, ... of the block, so on a GPU
 *    neighbouring items read neighbouring 64-byte chunks (coalesced), and with RL = 1 (the
 *    CPU default) the one item streams through its block;
 *  - each item keeps RACC lane-wise Kahan sums (FOR_ITEM_CHUNKS_OF below), added lane by lane
 *    in a fixed order (kahanR_total); the items' results are added by a fixed pairwise tree in
 *    local memory (group_sum), and item 0 writes the group's partial;
 *  - a final pass adds the G partials in index order.
 * So the order of every sum depends only on n, G and RL: bit-identical from run to run, and
 * independent of the context's element-wise tuning and of anything the driver picks. */
#ifndef RL
#define RL 1
#endif

/* The chunks [*c0, *c1) of work-group g of ng over n elements: contiguous blocks of
 * ceil(chunks / ng) chunks (an empty block when ng exceeds the chunks). */
inline void group_block(ulong g, ulong ng, ulong n, ulong *c0, ulong *c1)
{
    const ulong chunks = (n + RW - 1) / RW;
    const ulong per = (chunks + ng - 1) / ng;
    *c0 = min(g * per, chunks);
    *c1 = min(*c0 + per, chunks);
}

/* The chunk driver of the sums: runs BODY(e, cnt, k) over this item's chunks of the block
 * [c0, c1) of an n-element range (chunks c0 + l, c0 + l + RL, ..., l = the local id): e = the
 * chunk's first element, cnt = RW or the partial last chunk's length, k = the accumulator (a
 * literal in every expansion, so accumulator arrays stay in registers). The item's full
 * chunks are cut into RACC equal runs (in the item's own order), walked in lockstep, run k
 * into accumulator k; the leftover full chunks and then the partial chunk (when it is this
 * item's) go to accumulator RACC-1. So each accumulator sees its elements in address order,
 * and RACC streams in flight keep a CPU core's memory pipeline busy. The body is expanded
 * RACC + 2 times, with cnt a constant RW in all but the last. sub_runs gives the run length
 * (a kernel that tracks positions per accumulator starts run k at item chunk k * runs). */
inline ulong item_full_chunks(ulong c0, ulong c1, ulong n)
{
    const ulong l = RL == 1 ? 0 : get_local_id(0);
    const ulong cf = max(c0, min(c1, n / RW)); /* the block's full chunks end here */
    return cf > c0 + l ? (cf - c0 - l + RL - 1) / RL : 0;
}

inline ulong sub_runs(ulong c0, ulong c1, ulong n, ulong runs)
{
    return item_full_chunks(c0, c1, n) / runs;
}

/* The item's k-th chunk of the block from c0. */
#define ITEM_CHUNK(c0, k) ((c0) + (RL == 1 ? 0 : (ulong)get_local_id(0)) + (ulong)(k) * RL)

#define FOR_CHUNKS_RUNS(c0, c1, n, BODY, RUNS)                                             \
    do {                                                                                   \
        const ulong nfull_ = (n) / RW, mf_ = item_full_chunks(c0, c1, n);                  \
        const ulong sb_ = mf_ / (RUNS);                                                    \
        for (ulong k_ = 0; k_ < sb_; k_++) {                                               \
            BODY(ITEM_CHUNK(c0, k_) * RW, RW, 0);                                          \
            if ((RUNS) > 1)                                                                \
                BODY(ITEM_CHUNK(c0, k_ + sb_) * RW, RW, 1);                                \
            if ((RUNS) > 2) {                                                              \
                BODY(ITEM_CHUNK(c0, k_ + 2 * sb_) * RW, RW, 2);                            \
                BODY(ITEM_CHUNK(c0, k_ + 3 * sb_) * RW, RW, 3);                            \
            }                                                                              \
        }                                                                                  \
        for (ulong k_ = (RUNS) * sb_; k_ < mf_; k_++)                                      \
            BODY(ITEM_CHUNK(c0, k_) * RW, RW, (RUNS) - 1);                                 \
        if ((c0) < (c1) && (c1) > nfull_ && ITEM_CHUNK(c0, mf_) == nfull_)                 \
            BODY(nfull_ * RW, (uint)((n) - nfull_ * RW), (RUNS) - 1);                      \
    } while (0)
/* RACC runs: the sums over one or two arrays (a core keeps more streams in flight); kernels
 * that stream many arrays at once use FOR_CHUNKS_RUNS with 2 (LAMB's first pass, 6 arrays:
 * 9.7 ms with 4 runs, 7.6 with 2 at 2^25 on PoCL). RUNS is 1, 2 or RACC (4). */
#define FOR_CHUNKS(c0, c1, n, BODY) FOR_CHUNKS_RUNS(c0, c1, n, BODY, RACC)

/* The sum of x over the work-group's RL items, added by a fixed pairwise tree in buf (RL
 * floats of local memory); every item of the group must call it, and all get the result.
 * With RL = 1 it is x. */
inline float group_sum(float x, __local float *buf)
{
#if RL == 1
    (void)buf;
    return x;
#else
    const uint l = get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE); /* buf may still be read by a previous call */
    buf[l] = x;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = RL / 2; s > 0; s >>= 1) {
        if (l < s)
            buf[l] = buf[l] + buf[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return buf[0];
#endif
}

/* The chunk driver of the update kernels that follow a sum (lamb_update, adafactor_update).
 * The n / RW full chunks are cut into USTREAMS equal contiguous parts of Q chunks; work-item
 * i takes the UPDATE_CHUNKS chunks from i·UPDATE_CHUNKS of every part, walking the parts in
 * lockstep, and runs BODY(e, cnt, s) for each (s = the part, a literal; the host launches
 * ceil(Q / UPDATE_CHUNKS) items, UPDATE_ITEMS_OK tells an item whether it has work); item 0
 * also takes the partial last chunk, as part USTREAMS-1. UPDATE_CHUNKS and USTREAMS (at
 * most 4) are defines from the host (multipass_shape in host/passes.c, which also sizes the
 * launch). */
#define UPDATE_PART(n) (((n) / RW + USTREAMS - 1) / USTREAMS)
#define UPDATE_ITEMS_OK(n)                                                                 \
    (get_global_id(0) * UPDATE_CHUNKS < UPDATE_PART(n) || get_global_id(0) == 0)
#define UPDATE_ONE(n, s, BODY)                                                             \
    do {                                                                                   \
        const ulong c_ = (ulong)(s) * q_ + i0_ + k_;                                       \
        if (c_ < nfull_)                                                                   \
            BODY(c_ * RW, RW, s);                                                          \
    } while (0)
#define FOR_ITEM_CHUNKS(n, BODY)                                                             \
    do {                                                                                   \
        const ulong nfull_ = (n) / RW, q_ = UPDATE_PART(n);                                \
        const ulong i0_ = get_global_id(0) * UPDATE_CHUNKS;                                \
        for (ulong k_ = 0; k_ < UPDATE_CHUNKS && i0_ + k_ < q_; k_++) {                    \
            UPDATE_ONE(n, 0, BODY);                                                        \
            if (USTREAMS > 1)                                                              \
                UPDATE_ONE(n, 1, BODY);                                                    \
            if (USTREAMS > 2) {                                                            \
                UPDATE_ONE(n, 2, BODY);                                                    \
                UPDATE_ONE(n, 3, BODY);                                                    \
            }                                                                              \
        }                                                                                  \
        if (get_global_id(0) == 0 && (n) > nfull_ * RW)                                    \
            BODY(nfull_ * RW, (uint)((n) - nfull_ * RW), USTREAMS - 1);                    \
    } while (0)

/* Gradient centralization of the cnt elements from element e (GC_PARAMS in scope): the row
 * mean of each, one load when the chunk lies in one row. */
#if GC
inline floatR gc_subtractR(floatR g, __global const float *mean, ulong e, ulong cols, uint cnt)
{
    const ulong r = e / cols;
    if (e + cnt <= (r + 1) * cols)
        return g - mean[r];
    float t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? mean[(e + k) / cols] : 0.0f;
    return g - vload16(0, t);
}
#define GC_APPLYR(g, e, cnt) gc_subtractR(g, gcm_ + gcmo, e, gc_cols, cnt)
#define GC_ARGS gcm_, gcmo, gc_cols, /* passes GC_PARAMS on to a helper */
#else
#define GC_APPLYR(g, e, cnt) (g)
#define GC_ARGS
#endif
