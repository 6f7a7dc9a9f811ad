/* SPDX-License-Identifier: MIT */
/* Adafactor (Shazeer & Stern 2018) with the semantics of Hugging Face transformers.
 *
 * A tensor with >= 2 dims is seen as B × R × C (B = product of the leading dims) and keeps
 * row statistics Rv (B·R) and column statistics Cv (B·C): exponential averages of the row and
 * column means of g² + eps1. v̂ = Rv·Cvᵀ / mean(Rv) per batch, u = g / sqrt(v̂). A 1-D tensor
 * keeps a full V. Passes: rows, cols, row means (factored) -> partial sums of u² and θ² ->
 * sum_final -> update (u clipped by max(1, RMS(u)/d), scaled by α_t, optional first moment,
 * decoupled decay α_t·wd). Every sum runs in a fixed order (see reduce.cl): the kernels
 * read RW-float chunks (common.cl) whatever the context's tuning.
 * Defines: FACTORED, BETA1, GC, MAXIMIZE. */
#ifndef FACTORED
#define FACTORED 1
#endif
#ifndef BETA1
#define BETA1 0
#endif

/* Row statistics: item `row` of the B·R rows sums g² + eps1 along its row in RW-float chunks
 * (FOR_CHUNKS: RACC lane-wise Kahan sums over sub-blocks; a partial last chunk is masked). */
__kernel void adafactor_rows(__global const float *g_, const ulong go, __global float *r_,
                             const ulong ro, GC_PARAMS const ulong nrows, const ulong cols,
                             float gmul, const float eps1, const float beta2t,
                             const float ombeta2t CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
    const ulong row = get_global_id(0);
    if (row >= nrows)
        return;
    const ulong e0 = row * cols;
    __global const float *g = g_ + go + e0;
    kahanR acc[RACC];
    kahanR_clear(acc);
#define ROW_BODY(e, cnt, k)                                                                 \
    do {                                                                                   \
        floatR x = GC_APPLYR(read_gradR(loadR(g + (e), cnt), gmul), e0 + (e), cnt);         \
        kahanR_add(&acc[k], maskR(x * x + eps1, cnt));                                     \
    } while (0)
    FOR_CHUNKS(0, (cols + RW - 1) / RW, cols, ROW_BODY);
#undef ROW_BODY
    r_[ro + row] = beta2t * r_[ro + row] + ombeta2t * (kahanR_total(acc) / (float)cols);
}

/* Column statistics: item j takes COL_CHUNKS adjacent RW-column chunks of one batch (fewer
 * or narrower at the end of a row) and walks down the R rows, one Kahan sum per column in row
 * order, as a scalar loop per column would. Several chunks per row step keep several cache
 * lines of each row in flight: the walk down a column is latency-bound on a CPU. */
#define COL_CHUNKS 4
__kernel void adafactor_cols(__global const float *g_, const ulong go, __global float *c_,
                             const ulong co, GC_PARAMS const ulong batches, const ulong rows,
                             const ulong cols, float gmul, const float eps1,
                             const float beta2t, const float ombeta2t CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
    const ulong cpr = (cols + COL_CHUNKS * RW - 1) / (COL_CHUNKS * RW); /* items per row */
    const ulong j = get_global_id(0);
    if (j >= batches * cpr)
        return;
    const ulong b = j / cpr, c0 = (j - b * cpr) * (COL_CHUNKS * RW);
    uint w[COL_CHUNKS]; /* columns of each chunk, 0..RW */
    for (uint k = 0; k < COL_CHUNKS; k++)
        w[k] = (uint)clamp((long)cols - (long)(c0 + k * RW), 0L, (long)RW);
    g_ += go;
    kahanR acc[COL_CHUNKS];
    for (uint k = 0; k < COL_CHUNKS; k++)
        acc[k].sum = acc[k].c = (floatR)(0.0f);
    ulong e = b * rows * cols + c0;
#define COL_ADD(k, cnt)                                                                     \
    do {                                                                                   \
        floatR x = GC_APPLYR(read_gradR(loadR(g_ + e + (k) * RW, cnt), gmul),              \
                             e + (k) * RW, cnt);                                           \
        kahanR_add(&acc[k], x * x + eps1); /* lanes >= cnt are never stored */             \
    } while (0)
    if (w[COL_CHUNKS - 1] == RW) { /* four whole chunks */
        for (ulong r = 0; r < rows; r++, e += cols) {
            COL_ADD(0, RW);
            COL_ADD(1, RW);
            COL_ADD(2, RW);
            COL_ADD(3, RW);
        }
    } else {
        for (ulong r = 0; r < rows; r++, e += cols)
            for (uint k = 0; k < COL_CHUNKS; k++)
                if (w[k])
                    COL_ADD(k, w[k]);
    }
#undef COL_ADD
    __global float *cv = c_ + co + b * cols + c0;
    for (uint k = 0; k < COL_CHUNKS; k++) {
        float sum[RW];
        vstore16(acc[k].sum, 0, sum);
        for (uint l = 0; l < w[k]; l++)
            cv[k * RW + l] = beta2t * cv[k * RW + l] + ombeta2t * (sum[l] / (float)rows);
    }
}

/* out[b] = mean of Rv over batch b's R rows. */
__kernel void adafactor_rmean(__global const float *r_, const ulong ro, const ulong batches,
                              const ulong rows, __global float *out_, const ulong oo CTRL_PARAMS)
{
    CTRL_SKIP;
    const ulong b = get_global_id(0);
    if (b >= batches)
        return;
    __global const float *r = r_ + ro + b * rows;
    kahan acc = {0.0f, 0.0f};
    for (ulong k = 0; k < rows; k++)
        kahan_add(&acc, r[k]);
    out_[oo + b] = acc.sum / (float)rows;
}

#if FACTORED
/* Where an element lies in the B × R × C view: its row of the B·R rows, that row's batch b and
 * index rr in the batch, its column, and the row factor rf = rsqrt(Rv[row] / mean_b) (computed
 * when the row is first needed, rf_row = its row). Kept up to date while an item walks its
 * chunks, so the chunk loops need no integer division. */
typedef struct afpos {
    ulong row, b, rr, col, rf_row;
    float rf;
} afpos;

inline afpos afpos_of(ulong e, ulong rows, ulong cols)
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
    q.rf_row = ~(ulong)0;
    q.rf = 0.0f;
    return q;
}

inline void afpos_next(afpos *q, ulong k, ulong rows, ulong cols)
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

/* The unclipped update u = g / sqrt(v̂) = g·rsqrt(Rv[row] / mean_b)·rsqrt(Cv[b, col]) of the cnt
 * elements from position q (s_ = Rv, t_ = Cv, rm_ = row means), then q moves past them. The
 * row factor is a scalar rsqrt (cached in q per row) and the column factors a float16 rsqrt in
 * both paths. With square set it returns u² = g²·(mean_b / Rv[row]) / Cv[b, col] instead:
 * one division, no square roots (the divider is the limit on a CPU), for the Σu² of RMS(u).
 * Inlined, so square and cnt fold to constants. */
CHUNK_INLINE floatR adafactor_uR(floatR g, afpos *q, __global const float *s_, __global const float *t_,
             __global const float *rm_, ulong rows, ulong cols, uint cnt, int square)
{
    floatR u;
    if (q->col + RW <= cols) { /* the chunk lies in one row */
        if (q->rf_row != q->row) {
            q->rf = square ? rm_[q->b] / s_[q->row] : rsqrt(s_[q->row] / rm_[q->b]);
            q->rf_row = q->row;
        }
        const floatR cv = vload16(0, t_ + q->b * cols + q->col);
        u = square ? g * g * q->rf / cv : g * q->rf * rsqrt(cv);
        q->col += RW;
        if (q->col == cols)
            afpos_next(q, 0, rows, cols);
    } else {
        float rf[RW], cf[RW];
        for (uint k = 0; k < RW; k++) {
            rf[k] = cf[k] = 1.0f; /* lanes >= cnt: past the tensor's end, read nothing */
            if (k < cnt) {
                const float sv = s_[q->row], rm = rm_[q->b];
                rf[k] = square ? rm / sv : rsqrt(sv / rm);
                cf[k] = t_[q->b * cols + q->col];
            }
            afpos_next(q, 1, rows, cols);
        }
        const floatR cv = vload16(0, cf);
        u = square ? g * g * vload16(0, rf) / cv : g * vload16(0, rf) * rsqrt(cv);
    }
    return u;
}
#define AF_POS_PARAM , afpos *q
#define AF_POS_ARG(k) , &q[k]
#else
#define AF_POS_PARAM
#define AF_POS_ARG(k)
#endif

/* One chunk of adafactor_partial (1-D: also updates V = s_). */
CHUNK_INLINE void adafactor_chunk(__global const float *p_, __global const float *g_,
                            __global float *s_, __global const float *t_,
                            __global const float *rm_, GC_PARAMS const ulong e, const uint cnt,
                            const ulong rows, const ulong cols, const float gmul,
                            const float eps1, const float beta2t, const float ombeta2t,
                            kahanR *acc_u, kahanR *acc_p AF_POS_PARAM)
{
    const floatR g = GC_APPLYR(read_gradR(loadR(g_ + e, cnt), gmul), e, cnt);
#if FACTORED
    (void)eps1, (void)beta2t, (void)ombeta2t;
    const floatR u2 = adafactor_uR(g, q, s_, t_, rm_, rows, cols, cnt, 1);
#else
    (void)t_, (void)rm_, (void)rows, (void)cols;
    const floatR s = beta2t * loadR(s_ + e, cnt) + ombeta2t * (g * g + eps1);
    storeR(s, s_ + e, cnt);
    const floatR u = g * rsqrt(s), u2 = u * u;
#endif
    const floatR p = loadR(p_ + e, cnt);
    kahanR_add(acc_u, maskR(u2, cnt));
    kahanR_add(acc_p, maskR(p * p, cnt));
}

/* Item i of `items` (see reduce_block in common.cl): Σu² over its block into part[i], Σθ²
 * into part[items + i]. */
__kernel void adafactor_partial(__global const float *p_, const ulong po,
                                __global const float *g_, const ulong go, __global float *s_,
                                const ulong so, __global const float *t_, const ulong to,
                                __global const float *rm_, const ulong rmo, GC_PARAMS
                                const ulong n, const ulong rows, const ulong cols,
                                const ulong items, float gmul, const float eps1,
                                const float beta2t, const float ombeta2t,
                                __global float *part_, const ulong parto CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
    const ulong i = get_global_id(0);
    if (i >= items)
        return;
    p_ += po;
    g_ += go;
    s_ += so;
    t_ += to;
    rm_ += rmo;
    ulong c0, c1;
    reduce_block(i, items, n, &c0, &c1);
    kahanR acc_u[RACC], acc_p[RACC];
    kahanR_clear(acc_u);
    kahanR_clear(acc_p);
#if FACTORED
    /* one position per accumulator: FOR_CHUNKS walks each sub-block in order */
    const ulong sb = sub_block(c0, c1, n);
    afpos q[RACC];
    for (uint k = 0; k < RACC; k++)
        q[k] = afpos_of((c0 + k * sb) * RW, rows, cols);
#endif
#define PARTIAL_BODY(e, cnt, k)                                                             \
    adafactor_chunk(p_, g_, s_, t_, rm_, GC_ARGS e, cnt, rows, cols, gmul, eps1, beta2t,   \
                    ombeta2t, &acc_u[k], &acc_p[k] AF_POS_ARG(k))
    FOR_CHUNKS(c0, c1, n, PARTIAL_BODY);
#undef PARTIAL_BODY
    part_[parto + i] = kahanR_total(acc_u);
    part_[parto + items + i] = kahanR_total(acc_p);
}

/* One chunk of adafactor_update. */
CHUNK_INLINE void adafactor_update_chunk(__global float *p_, __global const float *g_,
                                   __global const float *s_, __global const float *t_,
                                   __global const float *rm_, __global float *m_, GC_PARAMS
                                   const ulong e, const uint cnt, const ulong rows,
                                   const ulong cols, const float gmul, const float scale,
                                   const float alpha, const float weight_decay,
                                   const float beta1, const float ombeta1 AF_POS_PARAM)
{
    const floatR g = GC_APPLYR(read_gradR(loadR(g_ + e, cnt), gmul), e, cnt);
#if FACTORED
    floatR u = adafactor_uR(g, q, s_, t_, rm_, rows, cols, cnt, 0) * scale;
#else
    (void)t_, (void)rm_, (void)rows, (void)cols;
    floatR u = g * rsqrt(loadR(s_ + e, cnt)) * scale; /* lanes >= cnt are never stored */
#endif
#if BETA1
    u = beta1 * loadR(m_ + e, cnt) + ombeta1 * u;
    storeR(u, m_ + e, cnt);
#else
    (void)m_, (void)beta1, (void)ombeta1;
#endif
    floatR p = loadR(p_ + e, cnt);
    if (weight_decay != 0.0f)
        p = p - weight_decay * alpha * p;
    storeR(p - u, p_ + e, cnt);
}

/* sums_[so] = Σu², sums_[so+1] = Σθ² (θ before this step). rho_t: relative step size or lr.
 * Work-items take RW-element chunks (FOR_ITEM_CHUNKS in common.cl). */
__kernel void adafactor_update(__global float *p_, const ulong po, __global const float *g_,
                               const ulong go, __global const float *s_, const ulong so,
                               __global const float *t_, const ulong to,
                               __global const float *rm_, const ulong rmo,
#if BETA1
                               __global float *m_, const ulong mo,
#endif
                               GC_PARAMS const ulong n, const ulong rows, const ulong cols,
                               __global const float *sums_, const ulong sumo,
                               float gmul, const float rho_t, const float eps2,
                               const float clip_threshold, const int scale_parameter,
                               const float weight_decay, const float beta1,
                               const float ombeta1 CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
    const ulong e0 = get_global_id(0) * UPDATE_CHUNKS * RW;
    if (e0 >= n)
        return;
    p_ += po;
    g_ += go;
    s_ += so;
    t_ += to;
    rm_ += rmo;
#if BETA1
    m_ += mo;
#else
    __global float *m_ = 0;
#endif
    const float inv_n = 1.0f / (float)n;
    const float rms_u = sqrt(sums_[sumo] * inv_n);
    const float rms_p = sqrt(sums_[sumo + 1] * inv_n);
    const float alpha = scale_parameter ? fmax(eps2, rms_p) * rho_t : rho_t;
    const float scale = alpha / fmax(1.0f, rms_u / clip_threshold);
#if FACTORED
    afpos q[1] = {afpos_of(e0, rows, cols)}; /* chunks are visited in order */
#endif
#define UPDATE_BODY(e, cnt)                                                                 \
    adafactor_update_chunk(p_, g_, s_, t_, rm_, m_, GC_ARGS e, cnt, rows, cols, gmul, scale, \
                           alpha, weight_decay, beta1, ombeta1 AF_POS_ARG(0))
    FOR_ITEM_CHUNKS(n, UPDATE_BODY);
#undef UPDATE_BODY
}
