/* SPDX-License-Identifier: MIT */
/* Fixed-width chunks, prepended to every kernel family after common.cl and storage.cl
 * (host/program.c). */

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
#define CHUNK_INLINE static __attribute__((always_inline)) inline

/* Mask of the lanes k < cnt (all set for a full chunk), for select(). */
static inline intR lanes_below(uint cnt)
{
    const intR lane = (intR)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return lane < (intR)((int)cnt);
}

/* The cnt <= RW elements at p (lanes >= cnt read as 0) / store only the first cnt lanes.
 * Called with a constant cnt = RW in the hot loops, where they are a plain vload16/vstore16. */
static inline floatR loadR(__global const float *p, uint cnt)
{
    if (cnt == RW)
        return vload16(0, p);
    float t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? p[k] : 0.0f;
    return vload16(0, t);
}

/* loadR of the gradient in its storage type (GT). */
static inline floatR loadRG(__global const GSTORE *p, uint cnt)
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

static inline void storeR(floatR x, __global float *p, uint cnt)
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
static inline ushort16 loadR16(__global const ushort *p, uint cnt)
{
    if (cnt == RW)
        return vload16(0, p);
    ushort t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? p[k] : (ushort)0;
    return vload16(0, t);
}

static inline void storeR16(ushort16 x, __global ushort *p, uint cnt)
{
    if (cnt == RW) {
        store_u16x16(x, p);
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
 * THETA_FN_PARAMS / THETA_FN_ARGS handing the master (the kernel's STORAGE_BEGIN advances
 * ms_) and with stochastic rounding the chunk's random values down to the chunk functions.
 * Same storage as THETA_LOAD / THETA_STORE above. */
#if PT == 0
#define THETA_LOAD_FN_PARAMS
#define THETA_LOAD_FN_ARGS
#define THETA_FN_PARAMS
#define THETA_FN_ARGS
#define THETA_LOADR(p, e, cnt) loadR((p) + (e), cnt)
#define THETA_STORER(x, p, e, cnt) storeR(x, (p) + (e), cnt)
#else
/* THETA_LOAD_FN_*: for the chunk functions that only read θ (the sums' passes) */
#define THETA_LOAD_FN_PARAMS , __global const MSTORE *ms_
#define THETA_LOAD_FN_ARGS , ms_
#if SR && MASTER == 0
/* with stochastic rounding the chunk's 16 random values come along: srv_, set for each chunk
   by FOR_ITEM_CHUNKS_THETA */
#define THETA_FN_PARAMS , __global MSTORE *ms_, const uint16 srv_
#define THETA_FN_ARGS , ms_, srv_
#define THETA_STORER(x, p, e, cnt) theta_storeR(x, p, ms_, e, cnt, srv_)
#else
#define THETA_FN_PARAMS , __global MSTORE *ms_
#define THETA_FN_ARGS , ms_
#define THETA_STORER(x, p, e, cnt) theta_storeR(x, p, ms_, e, cnt, (uint16)(0u))
#endif
#define THETA_LOADR(p, e, cnt) theta_loadR(p, ms_, e, cnt)

static inline floatR theta_loadR(__global const PSTORE *p, __global const MSTORE *m, ulong e,
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

/* r: the chunk's 16 stochastic-rounding values (16-bit, as sr_words; unused without SR) */
static inline void theta_storeR(floatR x, __global PSTORE *p, __global MSTORE *m, ulong e, uint cnt,
                                uint16 r)
{
#if MASTER == 2
    (void)r;
    const uint16 b = as_uint16(x), h = (b + REMAINDER_ADD(b, uint16)) >> 16;
    storeR16(convert_ushort16(h), p + e, cnt);
    storeR16(convert_ushort16((b - (h << 16)) & (uint16)(0xFFFFu)), m + e, cnt);
#else
#if MASTER == 1
    storeR(x, m + e, cnt);
#else
    (void)m;
#endif
#if SR && MASTER == 0
#if PT == 1
    if (cnt == RW) {
        vstore_half16_rte(rndR_f16sr(x, r), 0, p + e);
    } else {
        float t[RW];
        vstore16(rndR_f16sr(x, r), 0, t);
        for (uint k = 0; k < cnt; k++)
            vstore_half_rte(t[k], k, p + e);
    }
#else
    storeR16(rndR_sr(x, r), p + e, cnt);
#endif
#else
    (void)r;
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
static inline floatR maskR(floatR x, uint cnt)
{
    return cnt == RW ? x : select((floatR)(0.0f), x, lanes_below(cnt));
}

CLOPT_READ_GRAD(read_gradR, floatR)

/* Kahan accumulation lane by lane (see kahan_add). */
CLOPT_KAHAN(kahanR, kahanR_add, floatR)

/* A sum keeps RACC such accumulators (FOR_CHUNKS below assumes 4): RACC independent Kahan
 * chains hide the latency of the dependent additions (one chain limits a core to ~4 bytes a
 * cycle). kahanR_total adds all lanes in the fixed order accumulator 0 lanes 0..RW-1, then
 * accumulator 1, ..., each lane's pending compensation included. */
#define RACC 4

static inline void kahanR_clear(kahanR *a)
{
    for (uint i = 0; i < RACC; i++)
        a[i].sum = a[i].c = (floatR)(0.0f);
}

static inline float kahanR_total(const kahanR *a)
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

static inline void sumR_clear(sumR *a)
{
    for (uint i = 0; i < RACC; i++) {
        a[i].k.sum = a[i].k.c = a[i].p = (floatR)(0.0f);
        a[i].cnt = 0;
    }
}

/* s += x² lane-wise (x already masked to its chunk's lanes). */
static inline void sumR_addsq(sumR *s, floatR x)
{
    s->p = fma(x, x, s->p);
    if (++s->cnt == SUMR_FOLD) {
        kahanR_add(&s->k, s->p);
        s->p = (floatR)(0.0f);
        s->cnt = 0;
    }
}

/* s += x lane-wise (x already masked), the same two levels (GC's row means, cautious
 * masking's sums). */
static inline void sumR_add(sumR *s, floatR x)
{
    s->p = s->p + x;
    if (++s->cnt == SUMR_FOLD) {
        kahanR_add(&s->k, s->p);
        s->p = (floatR)(0.0f);
        s->cnt = 0;
    }
}

/* The RACC sums' total in a fixed order (pending runs folded first). */
static inline float sumR_total(sumR *a)
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
static inline void group_block(ulong g, ulong ng, ulong n, ulong *c0, ulong *c1)
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
static inline ulong item_full_chunks(ulong c0, ulong c1, ulong n)
{
    const ulong l = RL == 1 ? 0 : get_local_id(0);
    const ulong cf = max(c0, min(c1, n / RW)); /* the block's full chunks end here */
    return cf > c0 + l ? (cf - c0 - l + RL - 1) / RL : 0;
}

static inline ulong sub_runs(ulong c0, ulong c1, ulong n, ulong runs)
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
static inline float group_sum(float x, __local float *buf)
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
/* FOR_ITEM_CHUNKS for the update kernels that store θ (THETA_STORER): with stochastic
 * rounding it sets srv_, the 16-bit random values of the chunk's elements (as sr_words: the
 * element's index in θ's buffer, pe_ + e, picks them). With UPDATE_CHUNKS a multiple of 8 (a
 * CPU's shape: an item walks 64 chunks of each part) the item computes the Philox instances
 * of 8 chunks of every part at once, 16 instances in vector lanes (two parts' sets through the
 * rounds together, sr_instances32), and each chunk takes its values from them; else each
 * chunk computes its own 4 instances (sr_words16). With bf16 θ and SR at 2^24 on PoCL
 * (clopt-bench --dtypes 'p=bf16,g=bf16,sr=1', optimizer level): LAMB 29.9 -> 11.9 ms (6.5
 * without SR), Adafactor 26.1 -> 7.8 (5.7), StableAdamW 27.0 -> 8.5 (6.4). */
#if PT != 0 && SR && MASTER == 0 && defined(USTREAMS) /* USTREAMS: a multi-pass program */
#define SR_TAIL_SET(e) srv_ = sr_words16(pe_ + (e), sr_seed, sr_stream, SR_STEP)
#if UPDATE_CHUNKS % 8 == 0
#define SR_PARTS (USTREAMS > 2 ? 4 : USTREAMS)
/* The instances of the 8 chunks from chunk c of every part s (chunk s q + c): part s's first
   instance in q0[s], its words in w[s] (17 instances: 128 elements not starting on an
   instance span a 17th). */
static inline void sr_chunk_batches(ulong pe, ulong q, ulong c, ulong seed, uint stream, uint step,
                                    __private uint (*w)[68], __private ulong *q0)
{
    const uint odd = (uint)pe & 7u; /* the parts' starts differ by whole chunks */
    for (uint s = 0; s < USTREAMS; s++)
        q0[s] = (pe + ((ulong)s * q + c) * RW) >> 3;
    for (uint s = 0; s < USTREAMS; s += 2) {
        const uint t = s + 1 < USTREAMS ? s + 1 : s; /* an odd last part: its set twice */
        sr_instances32(q0[s], q0[t], seed, stream, step, w[s], w[t]);
        if (odd)
            sr_instance(q0[s] + 16, seed, stream, step, w[s] + 64);
        if (odd && t != s)
            sr_instance(q0[t] + 16, seed, stream, step, w[t] + 64);
    }
}
#define SR_CHUNK_DECL                                                                      \
    uint16 srv_;                                                                           \
    uint srb_[SR_PARTS][68];                                                               \
    ulong srq_[SR_PARTS]
#define SR_CHUNK_GROUP(k)                                                                  \
    do {                                                                                   \
        if (((k) & 7u) == 0)                                                               \
            sr_chunk_batches(pe_, q_, i0_ + (k), sr_seed, sr_stream, SR_STEP, srb_, srq_);  \
    } while (0)
#define SR_CHUNK_SET(e, s) srv_ = sr_from_batch(srb_[s], pe_ + (e) - (srq_[s] << 3))
#else /* a GPU's shape (one chunk per item): each chunk its own instances */
#define SR_CHUNK_DECL uint16 srv_
#define SR_CHUNK_GROUP(k)
#define SR_CHUNK_SET(e, s) srv_ = sr_words16(pe_ + (e), sr_seed, sr_stream, SR_STEP)
#endif
#else
#define SR_CHUNK_DECL
#define SR_CHUNK_GROUP(k)
#define SR_CHUNK_SET(e, s)
#define SR_TAIL_SET(e)
#endif
/* The driver with hooks: DECL declares what they share, GROUP(k) runs before the chunks of
   step k, SET(e, s) before the chunk at e of part s, TAIL(e) before the partial last one. */
#define CHUNK_NOP1(a)
#define CHUNK_NOP2(a, b)
#define UPDATE_ONE(n, s, BODY, SET)                                                        \
    do {                                                                                   \
        const ulong c_ = (ulong)(s) * q_ + i0_ + k_;                                       \
        if (c_ < nfull_) {                                                                 \
            SET(c_ * RW, s);                                                               \
            BODY(c_ * RW, RW, s);                                                          \
        }                                                                                  \
    } while (0)
#define FOR_ITEM_CHUNKS_HOOKED(n, BODY, DECL, GROUP, SET, TAIL)                             \
    do {                                                                                   \
        const ulong nfull_ = (n) / RW, q_ = UPDATE_PART(n);                                \
        const ulong i0_ = get_global_id(0) * UPDATE_CHUNKS;                                \
        DECL;                                                                              \
        for (ulong k_ = 0; k_ < UPDATE_CHUNKS && i0_ + k_ < q_; k_++) {                    \
            GROUP(k_);                                                                     \
            UPDATE_ONE(n, 0, BODY, SET);                                                   \
            if (USTREAMS > 1)                                                              \
                UPDATE_ONE(n, 1, BODY, SET);                                               \
            if (USTREAMS > 2) {                                                            \
                UPDATE_ONE(n, 2, BODY, SET);                                               \
                UPDATE_ONE(n, 3, BODY, SET);                                               \
            }                                                                              \
        }                                                                                  \
        if (get_global_id(0) == 0 && (n) > nfull_ * RW) {                                  \
            TAIL(nfull_ * RW);                                                             \
            BODY(nfull_ * RW, (uint)((n) - nfull_ * RW), USTREAMS - 1);                    \
        }                                                                                  \
    } while (0)
#define FOR_ITEM_CHUNKS(n, BODY)                                                           \
    FOR_ITEM_CHUNKS_HOOKED(n, BODY, (void)0, CHUNK_NOP1, CHUNK_NOP2, CHUNK_NOP1)
#define FOR_ITEM_CHUNKS_THETA(n, BODY)                                                     \
    FOR_ITEM_CHUNKS_HOOKED(n, BODY, SR_CHUNK_DECL, SR_CHUNK_GROUP, SR_CHUNK_SET, SR_TAIL_SET)

/* Gradient centralization of the cnt elements from element e (GC_PARAMS in scope): the row
 * mean of each, one load when the chunk lies in one row. */
#if GC
/* e / cols, in 32 bits where both fit (a 64-bit division is a long software routine on GPUs,
 * and a chunk of a few elements on a GPU takes one) */
static inline ulong gc_row(const ulong e, const ulong cols)
{
    return ((e | cols) >> 32) == 0 ? (ulong)((uint)e / (uint)cols) : e / cols;
}
static inline floatR gc_subtractR(floatR g, __global const float *mean, ulong e, ulong cols,
                                  uint cnt)
{
    const ulong r = gc_row(e, cols);
    if (e + cnt <= (r + 1) * cols)
        return g - mean[r];
    float t[RW];
    for (uint k = 0; k < RW; k++)
        t[k] = k < cnt ? mean[gc_row(e + k, cols)] : 0.0f;
    return g - vload16(0, t);
}
#define GC_APPLYR(g, e, cnt) gc_subtractR(g, gcm_ + gcmo, e, gc_cols, cnt)
#define GC_ARGS gcm_, gcmo, gc_cols, /* passes GC_PARAMS on to a helper */
#else
#define GC_APPLYR(g, e, cnt) (g)
#define GC_ARGS
#endif
