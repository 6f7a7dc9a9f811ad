/* SPDX-License-Identifier: MIT */
/* Shared by every kernel family: common.cl, storage.cl and chunks.cl are prepended, in that
 * order, to each program (host/program.c). This file: the step control (CTRL), range tables
 * (RANGES) and the element-wise driver; storage.cl: the storage types of θ, g and the state
 * (16-bit, masters, stochastic rounding with Philox, 8-bit blockwise); chunks.cl: the
 * fixed-width chunks of the reductions and the multi-pass rules.
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
#define CTRL_SKIPPED                                                                       \
    const ulong dc_ = (((ulong)ctl_[ctlo + 3]) << 32) | (ulong)ctl_[ctlo + 2];             \
    const int skip_ = ctl_[ctlo] != 0u || dc_ < expect_ || dc_ - expect_ >= (ulong)ncand_
#if defined(SQ) && SQ == 4 && defined(Q8WG) && Q8WG
/* 8-bit state in work-groups (storage.cl) has barriers after the update: no work-item may
   return before them, not even where the whole group would (a return that depends on a
   load from memory before a barrier is divergent to a compiler that cannot prove it
   uniform; PoCL 3.1 corrupted its heap on it). A skipped step runs the group with nothing
   to load or store (CTRL_LIVE 0), reading row 0 of the table. */
#define CTRL_SKIP CTRL_SKIPPED
#define CTRL_LIVE (!skip_)
#define CTRL_ROW_AT (skip_ ? 0 : dc_ - expect_)
#else
#define CTRL_SKIP                                                                          \
    CTRL_SKIPPED;                                                                          \
    if (skip_)                                                                             \
    return
#define CTRL_LIVE 1
#define CTRL_ROW_AT (dc_ - expect_)
#endif
#define CTRL_GUARD(gm)                                                                     \
    CTRL_SKIP;                                                                             \
    gm = gm * as_float(ctl_[ctlo + 1]);                                                    \
    __global const float *row_ = tab_ + tabo + CTRL_ROW_AT * CTRL_ROW
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
#define CTRL_LIVE 1
#define CTRL_GUARD(gm)
#define CTRL_SCALARS(...)
#endif

#define CLOPT_CAT_(a, b) a##b
#define CLOPT_CAT(a, b) CLOPT_CAT_(a, b)

/* sign, max, min and clamp that keep a NaN, as torch.sign, maximum, minimum and clamp do
 * (the references): OpenCL's sign(NaN) is 0 and fmax/fmin/clamp return the other operand,
 * which froze a Lion weight with a NaN gradient for good (finite, its state NaN), stepped a
 * Sophia weight by a whole lr, or turned ADOPT's NaN into ±bound. For float and its vectors;
 * in MAX_NAN/MIN_NAN a scalar b must be a constant that is no NaN (its isnan is 1, not -1). */
#define SIGN_NAN(x) select(sign(x), (x), isnan(x))
#define NAN_OR_(r, a, b) select((r), (a) + (b), isnan(a) | isnan(b))
#define MAX_NAN(a, b) NAN_OR_(fmax((a), (b)), (a), (b))
#define MIN_NAN(a, b) NAN_OR_(fmin((a), (b)), (a), (b))
#define CLAMP_NAN(x, lo, hi) select(clamp((x), (lo), (hi)), (x), isnan(x))

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
static inline floatV tail_load(__global const float *p, uint rem)
{
    float t[VW];
    for (uint k = 0; k < VW; k++)
        t[k] = k < rem ? p[k] : 0.0f;
    return VLOAD(0, t);
}

static inline void tail_store(floatV x, __global float *p, uint rem)
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
 * each work-item then strides across chunks: 1.9x slower at 2^24, clopt-bench ranges.)
 * With 8-bit state (SQ 4: a work-item, or with Q8WG a work-group, owns a block of 256,
 * storage.cl) the table has a row per block of a tensor instead (blocks start at each
 * tensor's first element, so none mixes two tensors; the host puts every tensor's state at a
 * multiple of 256) and work-item (work-group) i takes row i, as it takes block i without
 * RANGES; n_all_ is then the number of rows (RANGES_ROWS). */
#ifndef RANGES
#define RANGES 0
#endif
#if RANGES && defined(SQ) && SQ == 4
#if defined(Q8WG) && Q8WG /* work-group i takes row i, its work-item j the row's vector j */
#define RANGES_ROW get_group_id(0)
#define ITEM_ID get_local_id(0)
#else
#define RANGES_ROW get_global_id(0)
#define ITEM_ID 0
#endif
#define RANGES_ROWS 1
#define N_ARG n_all_
#define RANGES_PARAMS , __global const ulong *rt_
#define RANGES_BEGIN                                                                       \
    if (RANGES_ROW >= n_all_)                                                              \
        return;                                                                            \
    const ulong4 r_ = vload4(RANGES_ROW, rt_);                                             \
    const long RP_ = (long)r_.x, RG_ = (long)r_.y, RS_ = (long)r_.z;                       \
    const ulong n = r_.w;
#define ITEM_LOOP_BEGIN {
#define ITEM_LOOP_END }
#elif RANGES
#define RANGES_ROWS 0
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
#define RANGES_ROWS 0
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
        if (CTRL_LIVE && (full_ ? vi_ < nv_ : (vi_ == nv_ && rem_ != 0))) {                \
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
