/* SPDX-License-Identifier: MIT */
/* Deterministic reductions, shaped for the device (RL items per work-group, see chunks.cl):
 *  - partial sums: work-group g of a host-chosen count G (compute units x a factor) takes the
 *    g-th contiguous block of 16-float chunks, its items interleaved over the block with
 *    lane-wise Kahan sums, added by a fixed tree in local memory (group_block, FOR_CHUNKS,
 *    group_sum in chunks.cl);
 *  - final pass: work-group j adds the G partials of sum j in the same way;
 *  - row statistics (gradient centralization's row means): one work-group per row.
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
 * Work-group r takes row r. */
__kernel void gc_rowmean(__global const GSTORE *g_, const ulong go, __global const PSTORE *p_,
                         const ulong po, const ulong rows, const ulong cols, float gmul,
                         const float wd_l2, __global float *out_,
                         const ulong oo CTRL_PARAMS STORAGE_PARAMS)
{
    CTRL_GUARD(gmul);
    __local float red_[RL];
    STORAGE_BEGIN;
    const ulong r = get_group_id(0);
    if (r >= rows)
        return; /* whole work-groups only */
    __global const GSTORE *g = g_ + go + r * cols;
    __global const PSTORE *p = p_ + po + r * cols;
#if PT != 0
    ms_ += r * cols; /* θ's row in the master too */
#endif
    kahanR acc[RACC];
    kahanR_clear(acc);
#define MEAN_BODY(e, cnt, k)                                                                \
    do {                                                                                   \
        floatR x = read_gradR(loadRG(g + (e), cnt), gmul);                                 \
        if (wd_l2 != 0.0f)                                                                 \
            x = x + wd_l2 * THETA_LOADR(p, e, cnt);                                        \
        kahanR_add(&acc[k], maskR(x, cnt));                                                \
    } while (0)
    FOR_CHUNKS(0, (cols + RW - 1) / RW, cols, MEAN_BODY);
#undef MEAN_BODY
    const float s = group_sum(kahanR_total(acc), red_);
    if (get_local_id(0) == 0)
        out_[oo + r] = s / (float)cols;
}
