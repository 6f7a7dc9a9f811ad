/* SPDX-License-Identifier: MIT */
/* Adafactor (Shazeer & Stern 2018) with the semantics of Hugging Face transformers.
 *
 * A tensor with >= 2 dims is seen as B × R × C (B = product of the leading dims) and keeps
 * row statistics Rv (B·R) and column statistics Cv (B·C): exponential averages of the row and
 * column means of g² + eps1. v̂ = Rv·Cvᵀ / mean(Rv) per batch, u = g / sqrt(v̂). A 1-D tensor
 * keeps a full V. Passes: row and column statistics in one pass over g, their final sums,
 * row means (factored) -> partial sums of u² and θ² -> sum_final -> update (u clipped by max(1, RMS(u)/d), scaled by α_t, optional first moment,
 * decoupled decay α_t·wd). Every sum runs in a fixed order (see reduce.cl): the kernels
 * read RW-float chunks (chunks.cl) whatever the context's tuning.
 * Defines: FACTORED, BETA1, GC, MAXIMIZE. */
#ifndef FACTORED
#define FACTORED 1
#endif
#ifndef BETA1
#define BETA1 0
#endif

/* Row and column statistics in one pass over g (factored tensors). The B × R × C view is cut
 * into tiles of band_rows rows × TC columns, TC = RL·AFCK·RW (8192 columns on a CPU with RL 1,
 * 4096 on a GPU with RL 256); work-group t takes tile t = (b·nbands + band)·ntc + tc. Item l
 * owns the chunks l, l + RL, ... (AFCK of them) of the tile's columns, so on a GPU the items of
 * a row read one contiguous run, and walks down the band's rows: per column a lane-wise Kahan
 * sum of x² + eps1 (x = the gradient as the update sees it) over the band, per row a sum over
 * its chunks. The row sums of the RL items are added in item order in local memory (AFRB rows
 * at a time). Outputs (part_): the row partial of row (b, r) and tile column tc at
 * rpo + (b·R + r)·ntc + tc, the column partial of (b, band, col) at cpo + (b·nbands + band)·C +
 * col; adafactor_stats_finish adds them in index order. So each statistic's order depends
 * only on the shape and RL, never on the work-group count. */
/* The RW lanes of x added in lane order. */
static inline float lane_sum(floatR x)
{
    float lanes[RW], s = 0.0f;
    vstore16(x, 0, lanes);
    for (uint k = 0; k < RW; k++)
        s += lanes[k];
    return s;
}

/* AFCK, the chunks per item of a tile, is a define from the host (multipass_shape in
 * host/passes.c, which also computes the tiles). */
#define AFRB (RL < 16 ? RL : 16)
__kernel void adafactor_stats(__global const GSTORE *g_, const ulong go, GC_PARAMS
                              const ulong batches, const ulong rows, const ulong cols,
                              const ulong band_rows, const ulong nbands, const ulong ntc,
                              float gmul, const float eps1, __global float *part_,
                              const ulong rpo, const ulong cpo CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
#if RL > 1
    __local float lrow_[AFRB * RL];
    uint rb = 0;
#endif
    const ulong t = get_group_id(0);
    const ulong tc = t % ntc, bb = t / ntc, band = bb % nbands, b = bb / nbands;
    if (b >= batches)
        return; /* whole work-groups only */
    const uint l = RL == 1 ? 0 : get_local_id(0);
    const ulong r0 = band * band_rows, r1 = min(r0 + band_rows, rows);
    const ulong col0 = tc * (RL * AFCK * RW) + l * RW;
    uint w[AFCK]; /* columns of each of the item's chunks, 0..RW (0 from some j on) */
    kahanR acc[AFCK];
    for (uint j = 0; j < AFCK; j++) {
        w[j] = (uint)clamp((long)cols - (long)(col0 + j * RL * RW), 0L, (long)RW);
        acc[j].sum = acc[j].c = (floatR)(0.0f);
    }
    const int whole = w[AFCK - 1] == RW; /* every chunk full: the common case */
    g_ += go;
#define STATS_CHUNK(j, cnt, e0, racc)                                                       \
    do {                                                                                   \
        const ulong e_ = (e0) + (ulong)(j) * (RL * RW);                                    \
        const floatR x = GC_APPLYR(read_gradR(loadRG(g_ + e_, cnt), gmul), e_, cnt);       \
        const floatR y = x * x + eps1;                                                     \
        kahanR_add(&acc[j], y); /* lanes >= cnt are never stored */                        \
        racc = racc + maskR(y, cnt);                                                       \
    } while (0)
#if RL == 1
    /* A CPU: the band's rows in 4 sub-bands walked in lockstep, rows r0 + i, r0 + qb + i,
       ... (4 memory streams: one core's bandwidth on one stream is bounded by its
       outstanding misses); each column adds their squares in that order. */
    const ulong qb = (r1 - r0 + 3) / 4;
    for (ulong i = 0; i < qb; i++) {
        const ulong ra = r0 + i, rb = ra + qb, rc = rb + qb, rd = rc + qb;
        const ulong ea = (b * rows + ra) * cols + col0, eb = ea + qb * cols,
                    ec = eb + qb * cols, ed = ec + qb * cols;
        floatR sa = (floatR)(0.0f), sb = sa, sc = sa, sd = sa;
        if (whole && rd < r1) {
            for (uint j = 0; j < AFCK; j++) {
                STATS_CHUNK(j, RW, ea, sa);
                STATS_CHUNK(j, RW, eb, sb);
                STATS_CHUNK(j, RW, ec, sc);
                STATS_CHUNK(j, RW, ed, sd);
            }
        } else {
            for (uint j = 0; j < AFCK && w[j] != 0; j++) {
                STATS_CHUNK(j, w[j], ea, sa);
                if (rb < r1)
                    STATS_CHUNK(j, w[j], eb, sb);
                if (rc < r1)
                    STATS_CHUNK(j, w[j], ec, sc);
                if (rd < r1)
                    STATS_CHUNK(j, w[j], ed, sd);
            }
        }
        part_[rpo + (b * rows + ra) * ntc + tc] = lane_sum(sa);
        if (rb < r1)
            part_[rpo + (b * rows + rb) * ntc + tc] = lane_sum(sb);
        if (rc < r1)
            part_[rpo + (b * rows + rc) * ntc + tc] = lane_sum(sc);
        if (rd < r1)
            part_[rpo + (b * rows + rd) * ntc + tc] = lane_sum(sd);
    }
#else
    for (ulong r = r0; r < r1; r++) {
        const ulong e0 = (b * rows + r) * cols + col0;
        floatR racc = (floatR)(0.0f);
        if (whole) {
            for (uint j = 0; j < AFCK; j++)
                STATS_CHUNK(j, RW, e0, racc);
        } else {
            for (uint j = 0; j < AFCK && w[j] != 0; j++)
                STATS_CHUNK(j, w[j], e0, racc);
        }
        lrow_[rb * RL + l] = lane_sum(racc);
        if (++rb == AFRB || r + 1 == r1) { /* the same rows in every item: uniform */
            barrier(CLK_LOCAL_MEM_FENCE);
            if (l < rb) {
                float sum = 0.0f;
                for (uint i = 0; i < RL; i++)
                    sum += lrow_[l * RL + i];
                part_[rpo + (b * rows + r + 1 - rb + l) * ntc + tc] = sum;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            rb = 0;
        }
    }
#endif
#undef STATS_CHUNK
    __global float *cp = part_ + cpo + (b * nbands + band) * cols + col0;
    for (uint j = 0; j < AFCK && w[j] != 0; j++) {
        float sum[RW], c[RW];
        vstore16(acc[j].sum, 0, sum);
        vstore16(acc[j].c, 0, c);
        for (uint k = 0; k < w[j]; k++)
            cp[j * RL * RW + k] = sum[k] - c[k];
    }
}

/* The statistics from adafactor_stats' partials: item i < B·R updates row i, Rv = β Rv +
 * (1-β)·(Σ_tc row partials / C); item B·R + k updates column k of B·C, Cv = β Cv + (1-β)·
 * (Σ_band column partials / R) (Kahan sums in index order), and writes the column factor
 * rsqrt(Cv) at part_[cfo + k]. */
__kernel void adafactor_stats_finish(__global float *r_, const ulong ro, __global float *c_,
                                     const ulong co, const ulong batches, const ulong rows,
                                     const ulong cols, const ulong nbands, const ulong ntc,
                                     __global float *part_, const ulong rpo, const ulong cpo,
                                     const ulong cfo, const float beta2t,
                                     const float ombeta2t CTRL_PARAMS)
{
    CTRL_SKIP;
    const ulong i = get_global_id(0), nr = batches * rows;
    kahan acc = {0.0f, 0.0f};
    if (i < nr) {
        for (ulong tc = 0; tc < ntc; tc++)
            kahan_add(&acc, part_[rpo + i * ntc + tc]);
        r_[ro + i] = beta2t * r_[ro + i] + ombeta2t * ((acc.sum - acc.c) / (float)cols);
    } else if (i < nr + batches * cols) {
        const ulong k = i - nr, b = k / cols, col = k - b * cols;
        for (ulong band = 0; band < nbands; band++)
            kahan_add(&acc, part_[cpo + (b * nbands + band) * cols + col]);
        const float cv = beta2t * c_[co + k] + ombeta2t * ((acc.sum - acc.c) / (float)rows);
        c_[co + k] = cv;
        part_[cfo + k] = rsqrt(cv);
    }
}

/* out[b] = mean of Rv over batch b's R rows: work-group b, items strided over the rows; then
 * the row factors rf[row] = rsqrt(Rv[row] / mean) at out_[rfo + row]. */
__kernel void adafactor_rmean(__global const float *r_, const ulong ro, const ulong batches,
                              const ulong rows, __global float *out_, const ulong oo,
                              const ulong rfo CTRL_PARAMS)
{
    CTRL_SKIP;
    __local float red_[RL];
    const ulong b = get_group_id(0);
    if (b >= batches)
        return; /* whole work-groups only */
    __global const float *r = r_ + ro + b * rows;
    kahan acc = {0.0f, 0.0f};
    for (ulong k = RL == 1 ? 0 : get_local_id(0); k < rows; k += RL)
        kahan_add(&acc, r[k]);
    const float mean = group_sum(acc.sum - acc.c, red_) / (float)rows;
    if (get_local_id(0) == 0)
        out_[oo + b] = mean;
    for (ulong k = RL == 1 ? 0 : get_local_id(0); k < rows; k += RL)
        out_[rfo + b * rows + k] = rsqrt(r[k] / mean);
}

#if FACTORED
/* Where an element lies in the B × R × C view: its row of the B·R rows, that row's batch b and
 * index rr in the batch, and its column. Kept up to date while an item walks its chunks, so
 * the chunk loops need no integer division. */
typedef struct afpos {
    ulong row, b, rr, col;
} afpos;

static inline afpos afpos_of(ulong e, ulong rows, ulong cols)
{
    afpos q;
    if ((e | rows | cols) >> 32 == 0) { /* 32-bit division is several times cheaper */
        q.row = (uint)e / (uint)cols;
        q.b = (uint)q.row / (uint)rows;
    } else {
        q.row = e / cols;
        q.b = q.row / rows;
    }
    q.col = e - q.row * cols;
    q.rr = q.row - q.b * rows;
    return q;
}

static inline void afpos_next(afpos *q, ulong k, ulong rows, ulong cols)
{
    q->col += k;
    while (q->col >= cols) {
        q->col -= cols;
        q->row++;
        if (++q->rr == rows) {
            q->rr = 0;
            q->b++;
        }
    }
}

/* The unclipped update u = g / sqrt(v̂) = g·rf[row]·cf[b, col] of the cnt elements from
 * position q, with the row factors rf = rsqrt(Rv / mean_b) and the column factors cf =
 * rsqrt(Cv) that adafactor_rmean and adafactor_stats_finish computed once per row and column
 * (so no square root or division per element: on a CPU the divider was the limit), then q
 * moves past them. Inlined, so cnt folds to a constant. */
CHUNK_INLINE floatR adafactor_uR(floatR g, afpos *q, __global const float *rowf_,
                                 __global const float *colf_, ulong rows, ulong cols, uint cnt)
{
    if (q->col + RW <= cols) { /* the chunk lies in one row */
        const floatR u = g * rowf_[q->row] * vload16(0, colf_ + q->b * cols + q->col);
        q->col += RW;
        if (q->col == cols)
            afpos_next(q, 0, rows, cols);
        return u;
    }
    float rf[RW], cf[RW];
    for (uint k = 0; k < RW; k++) {
        rf[k] = cf[k] = 1.0f; /* lanes >= cnt: past the tensor's end, read nothing */
        if (k < cnt) {
            rf[k] = rowf_[q->row];
            cf[k] = colf_[q->b * cols + q->col];
        }
        afpos_next(q, 1, rows, cols);
    }
    return g * vload16(0, rf) * vload16(0, cf);
}
#define AF_POS_PARAM , afpos *q
#define AF_POS_ARG(k) , &q[k]
#else
#define AF_POS_PARAM
#define AF_POS_ARG(k)
#endif

/* One chunk of adafactor_partial (1-D: also updates V = s_). */
CHUNK_INLINE void adafactor_chunk(__global const PSTORE *p_, __global const GSTORE *g_,
                            __global float *s_, __global const float *colf_,
                            __global const float *rowf_, GC_PARAMS const ulong e, const uint cnt,
                            const ulong rows, const ulong cols, const float gmul,
                            const float eps1, const float beta2t, const float ombeta2t,
                            sumR *acc_u, sumR *acc_p AF_POS_PARAM THETA_LOAD_FN_PARAMS)
{
    const floatR g = GC_APPLYR(read_gradR(loadRG(g_ + e, cnt), gmul), e, cnt);
#if FACTORED
    (void)eps1, (void)beta2t, (void)ombeta2t;
    if (q->row * cols + q->col != e) /* RL > 1: the item's chunks are RL apart */
        *q = afpos_of(e, rows, cols);
    const floatR u = adafactor_uR(g, q, rowf_, colf_, rows, cols, cnt);
#else
    (void)colf_, (void)rowf_, (void)rows, (void)cols;
    const floatR s = beta2t * loadR(s_ + e, cnt) + ombeta2t * (g * g + eps1);
    storeR(s, s_ + e, cnt);
    const floatR u = g * rsqrt(s);
#endif
    const floatR p = THETA_LOADR(p_, e, cnt);
    sumR_addsq(acc_u, maskR(u, cnt));
    sumR_addsq(acc_p, maskR(p, cnt));
}

/* Runs in lockstep per item (FOR_CHUNKS_RUNS): 2 over g and θ (4.3 ms against 5.0 with 4 at
 * 2^25 on PoCL). */
#define AF_RUNS 2
/* Work-group g of `groups` (see group_block in chunks.cl): Σu² over its block into part[g],
 * Σθ² into part[groups + g]. */
__kernel void adafactor_partial(__global const PSTORE *p_, const ulong po,
                                __global const GSTORE *g_, const ulong go, __global float *s_,
                                const ulong so, __global const float *colf_, const ulong cfo,
                                __global const float *rowf_, const ulong rfo, GC_PARAMS
                                const ulong n, const ulong rows, const ulong cols,
                                const ulong groups, float gmul, const float eps1,
                                const float beta2t, const float ombeta2t,
                                __global float *part_,
                                const ulong parto CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    __local float red_[RL];
    const ulong gi = get_group_id(0);
    p_ += po;
    g_ += go;
    s_ += so;
    colf_ += cfo;
    rowf_ += rfo;
    STORAGE_BEGIN;
    ulong c0, c1;
    group_block(gi, groups, n, &c0, &c1);
    sumR acc_u[RACC], acc_p[RACC];
    sumR_clear(acc_u);
    sumR_clear(acc_p);
#if FACTORED
    /* one position per accumulator: FOR_CHUNKS walks each run in order (with RL > 1 the
       item's chunks are RL apart and adafactor_chunk locates each afresh) */
    const ulong sb = sub_runs(c0, c1, n, AF_RUNS);
    afpos q[RACC];
    for (uint k = 0; k < RACC; k++)
        q[k] = afpos_of(ITEM_CHUNK(c0, k * sb) * RW, rows, cols);
#endif
#define PARTIAL_BODY(e, cnt, k)                                                             \
    adafactor_chunk(p_, g_, s_, colf_, rowf_, GC_ARGS e, cnt, rows, cols, gmul, eps1, beta2t,   \
                    ombeta2t, &acc_u[k], &acc_p[k] AF_POS_ARG(k) THETA_LOAD_FN_ARGS)
    FOR_CHUNKS_RUNS(c0, c1, n, PARTIAL_BODY, AF_RUNS);
#undef PARTIAL_BODY
    const float su = group_sum(sumR_total(acc_u), red_);
    const float sp = group_sum(sumR_total(acc_p), red_);
    if (get_local_id(0) == 0) {
        part_[parto + gi] = su;
        part_[parto + groups + gi] = sp;
    }
}

/* One chunk of adafactor_update. */
CHUNK_INLINE void adafactor_update_chunk(__global PSTORE *p_, __global const GSTORE *g_,
                                   __global const float *s_, __global const float *colf_,
                                   __global const float *rowf_, __global float *m_, GC_PARAMS
                                   const ulong e, const uint cnt, const ulong rows,
                                   const ulong cols, const float gmul, const float scale,
                                   const float alpha, const float weight_decay,
                                   const float beta1,
                                   const float ombeta1 AF_POS_PARAM THETA_FN_PARAMS)
{
    const floatR g = GC_APPLYR(read_gradR(loadRG(g_ + e, cnt), gmul), e, cnt);
#if FACTORED
    if (q->row * cols + q->col != e) /* the tail chunk, or a part's first */
        *q = afpos_of(e, rows, cols);
    floatR u = adafactor_uR(g, q, rowf_, colf_, rows, cols, cnt) * scale;
#else
    (void)colf_, (void)rowf_, (void)rows, (void)cols;
    floatR u = g * rsqrt(loadR(s_ + e, cnt)) * scale; /* lanes >= cnt are never stored */
#endif
#if BETA1
    u = beta1 * loadR(m_ + e, cnt) + ombeta1 * u;
    storeR(u, m_ + e, cnt);
#else
    (void)m_, (void)beta1, (void)ombeta1;
#endif
    floatR p = THETA_LOADR(p_, e, cnt);
    if (weight_decay != 0.0f)
        p = p - weight_decay * alpha * p;
    THETA_STORER(p - u, p_, e, cnt);
}

/* sums_[so] = Σu², sums_[so+1] = Σθ² (θ before this step). rho_t: relative step size or lr.
 * Work-items take RW-element chunks (FOR_ITEM_CHUNKS in chunks.cl). */
__kernel void adafactor_update(__global PSTORE *p_, const ulong po, __global const GSTORE *g_,
                               const ulong go, __global const float *s_, const ulong so,
                               __global const float *colf_, const ulong cfo,
                               __global const float *rowf_, const ulong rfo,
#if BETA1
                               __global float *m_, const ulong mo,
#endif
                               GC_PARAMS const ulong n, const ulong rows, const ulong cols,
                               __global const float *sums_, const ulong sumo,
                               float gmul, const float rho_t, const float eps2,
                               const float clip_threshold, const int scale_parameter,
                               const float weight_decay, const float beta1,
                               const float ombeta1 CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    if (!UPDATE_ITEMS_OK(n))
        return;
    p_ += po;
    g_ += go;
    s_ += so;
    colf_ += cfo;
    rowf_ += rfo;
    STORAGE_BEGIN;
#if BETA1
    m_ += mo;
#else
    __global float *m_ = 0;
#endif
    const float inv_n = 1.0f / (float)n;
    const float rms_u = sqrt(sums_[sumo] * inv_n);
    const float rms_p = sqrt(sums_[sumo + 1] * inv_n);
    const float alpha = scale_parameter ? fmax(eps2, rms_p) * rho_t : rho_t;
    /* HF's clamp(min=1) of RMS(u)/d keeps a NaN (fmax dropped it: the finite elements took
       unclipped steps) */
    const float over = rms_u / clip_threshold;
    const float scale = alpha / (isnan(over) ? over : fmax(1.0f, over));
#if FACTORED
    afpos q[4]; /* one per part: each walks its chunks in order */
    for (uint k = 0; k < 4; k++)
        q[k] = afpos_of(((ulong)k * UPDATE_PART(n) + get_global_id(0) * UPDATE_CHUNKS) * RW,
                        rows, cols);
#endif
#define UPDATE_BODY(e, cnt, s)                                                              \
    adafactor_update_chunk(p_, g_, s_, colf_, rowf_, m_, GC_ARGS e, cnt, rows, cols, gmul, scale, \
                           alpha, weight_decay, beta1, ombeta1 AF_POS_ARG(s) THETA_FN_ARGS)
    FOR_ITEM_CHUNKS_THETA(n, UPDATE_BODY);
#undef UPDATE_BODY
}
