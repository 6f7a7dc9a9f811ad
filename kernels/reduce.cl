/* SPDX-License-Identifier: MIT */
/* Deterministic reductions, shaped for the device (RL items per work-group, see chunks.cl):
 *  - partial sums: work-group g of a host-chosen count G (compute units x a factor) takes the
 *    g-th contiguous block of 16-float chunks, its items interleaved over the block with
 *    lane-wise Kahan sums, added by a fixed tree in local memory (group_block, FOR_CHUNKS,
 *    group_sum in chunks.cl);
 *  - final pass: work-group j adds the G partials of sum j in the same way;
 *  - row statistics (gradient centralization's row means): one work-group per row, plain
 *    lane-wise runs of SUMR_FOLD chunks folded into the Kahan sums (sumR_add).
 * So the same input gives bit-identical output on every run, whatever the element-wise
 * tuning or the driver's choices; the order depends on G and RL only. */

/* out[j] = Σ_{i<count} in[j*count + i], for j < nsums: work-group j, items strided over the
 * partials with a Kahan sum each, then the tree. */
__kernel void sum_final(__global const float *in_, const ulong io, const ulong count,
                        const ulong nsums, __global float *out_, const ulong oo)
{
    __local float red_[RL];
    const ulong j = get_group_id(0);
    if (j >= nsums)
        return; /* whole work-groups only */
    __global const float *p = in_ + io + j * count;
    kahan acc = {0.0f, 0.0f};
    for (ulong i = RL == 1 ? 0 : get_local_id(0); i < count; i += RL)
        kahan_add(&acc, p[i]);
    const float s = group_sum(acc.sum - acc.c, red_);
    if (get_local_id(0) == 0)
        out_[oo + j] = s;
}

/* Gradient centralization: out[r] = mean over the row of (g·gmul·(maximize ? -1 : 1) +
 * wd_l2·θ), for a tensor seen as rows × cols (cols = product of all dims but the first).
 * Work-group w of W takes the rows [w·ceil(rows/W), ...) (the host launches W = min(rows, the
 * reduction shape's G) with RL 1, one per row otherwise). Each row is one lane-wise sum over
 * its chunks in address order (sumR_add), its RL items interleaved over the chunks and added
 * by the tree: so a row's mean depends only on cols and RL, never on W. With RL 1 the item
 * walks 4 sub-bands of its rows in lockstep (4 long memory streams: a row at a time, cut in
 * runs, ran at 30 GB/s on PoCL, a third of the update's rate). */
#ifndef GC_SB
#define GC_SB 4
#endif
static inline float gc_row_total(sumR *s)
{
    kahanR_add(&s->k, s->p);
    float sum[RW], c[RW];
    vstore16(s->k.sum, 0, sum);
    vstore16(s->k.c, 0, c);
    kahan acc = {0.0f, 0.0f};
    for (uint k = 0; k < RW; k++) {
        kahan_add(&acc, sum[k]);
        kahan_add(&acc, -c[k]);
    }
    return acc.sum;
}

__kernel void gc_rowmean(__global const GSTORE *g_, const ulong go, __global const PSTORE *p_,
                         const ulong po, const ulong rows, const ulong cols, float gmul,
                         const float wd_l2, __global float *out_,
                         const ulong oo CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    __local float red_[RL];
    STORAGE_BEGIN;
    const ulong per = (rows + get_num_groups(0) - 1) / get_num_groups(0);
    const ulong r0 = min(get_group_id(0) * per, rows), r1 = min(r0 + per, rows);
    const ulong nfull = cols / RW, tail = cols - nfull * RW;
    __global const GSTORE *g = g_ + go;
    __global const PSTORE *p = p_ + po;
#define MEAN_BODY(acc, e, cnt)                                                              \
    do {                                                                                   \
        floatR x = read_gradR(loadRG(g + (e), cnt), gmul);                                 \
        if (wd_l2 != 0.0f)                                                                 \
            x = x + wd_l2 * THETA_LOADR(p, e, cnt);                                        \
        sumR_add(&(acc), maskR(x, cnt));                                                   \
    } while (0)
#if RL == 1
    const ulong qb = (r1 - r0 + GC_SB - 1) / GC_SB;
    for (ulong i = 0; i < qb; i++) {
        sumR s[GC_SB];
        ulong e[GC_SB];
        for (uint k = 0; k < GC_SB; k++) {
            s[k].k.sum = s[k].k.c = s[k].p = (floatR)(0.0f);
            s[k].cnt = 0;
            e[k] = (r0 + i + k * qb) * cols;
        }
        const uint live = (uint)min((ulong)GC_SB, (r1 - r0 - i + qb - 1) / qb);
        if (live == GC_SB) {
            for (ulong c = 0; c < nfull; c++)
#pragma unroll
                for (uint k = 0; k < GC_SB; k++)
                    MEAN_BODY(s[k], e[k] + c * RW, RW);
        } else {
            for (ulong c = 0; c < nfull; c++)
#pragma unroll
                for (uint k = 0; k < GC_SB; k++)
                    if (k < live)
                        MEAN_BODY(s[k], e[k] + c * RW, RW);
        }
#pragma unroll
        for (uint k = 0; k < GC_SB; k++)
            if (k < live) {
                if (tail)
                    MEAN_BODY(s[k], e[k] + nfull * RW, (uint)tail);
                out_[oo + r0 + i + k * qb] = gc_row_total(&s[k]) / (float)cols;
            }
    }
#else
    const ulong l = get_local_id(0);
    for (ulong r = r0; r < r1; r++) { /* the same rows in every item: uniform */
        sumR s;
        s.k.sum = s.k.c = s.p = (floatR)(0.0f);
        s.cnt = 0;
        for (ulong c = l; c < nfull; c += RL)
            MEAN_BODY(s, r * cols + c * RW, RW);
        if (tail && nfull % RL == l)
            MEAN_BODY(s, r * cols + nfull * RW, (uint)tail);
        const float sum = group_sum(gc_row_total(&s), red_);
        if (l == 0)
            out_[oo + r] = sum / (float)cols;
    }
#endif
#undef MEAN_BODY
}
