/* SPDX-License-Identifier: MIT */
/* Deterministic reductions. The order of every sum is fixed by the data layout alone, never by
 * the work-group size or count the device picks, nor by the context's tuning:
 *  - partial sums: work-item i of a fixed number S of items takes the i-th contiguous block of
 *    16-float chunks and keeps lane-wise Kahan sums in a fixed pattern (reduce_block and
 *    FOR_CHUNKS in common.cl), added lane by lane in a fixed order at the end;
 *  - final pass: one work-item per sum adds its S partials in index order;
 *  - row / column statistics: one work-item per row (or group of columns) adds along it in
 *    a fixed order.
 * So the same input gives bit-identical output on every run and every device geometry. */

/* out[j] = Σ_{i<count} in[j*count + i], for j < nsums. */
__kernel void sum_final(__global const float *in_, const ulong io, const ulong count,
                        const ulong nsums, __global float *out_, const ulong oo)
{
    const ulong j = get_global_id(0);
    if (j >= nsums)
        return;
    __global const float *p = in_ + io + j * count;
    kahan acc = {0.0f, 0.0f};
    for (ulong i = 0; i < count; i++)
        kahan_add(&acc, p[i]);
    out_[oo + j] = acc.sum;
}

/* Gradient centralization: out[r] = mean over the row of (g·gmul·(maximize ? -1 : 1) +
 * wd_l2·θ), for a tensor seen as rows × cols (cols = product of all dims but the first). */
__kernel void gc_rowmean(__global const float *g_, const ulong go, __global const float *p_,
                         const ulong po, const ulong rows, const ulong cols, float gmul,
                         const float wd_l2, __global float *out_, const ulong oo CTRL_PARAMS)
{
    CTRL_GUARD(gmul);
    const ulong r = get_global_id(0);
    if (r >= rows)
        return;
    __global const float *g = g_ + go + r * cols;
    __global const float *p = p_ + po + r * cols;
    kahanR acc[RACC];
    kahanR_clear(acc);
#define MEAN_BODY(e, cnt, k)                                                                \
    do {                                                                                   \
        floatR x = read_gradR(loadR(g + (e), cnt), gmul);                                  \
        if (wd_l2 != 0.0f)                                                                 \
            x = x + wd_l2 * loadR(p + (e), cnt);                                           \
        kahanR_add(&acc[k], maskR(x, cnt));                                                \
    } while (0)
    FOR_CHUNKS(0, (cols + RW - 1) / RW, cols, MEAN_BODY);
#undef MEAN_BODY
    out_[oo + r] = kahanR_total(acc) / (float)cols;
}
