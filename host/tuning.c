/* SPDX-License-Identifier: MIT */
/* Per-device-type kernel tuning, as CLBlast keeps a table with a default.
 *
 * vector_width: floats per vector (vloadN/vstoreN); work_group_size: 0 lets the driver pick;
 * items_per_work_item: consecutive vectors one work-item updates (kernels/common.cl). A row
 * may name one rule's kernel: the first row that matches the device (type and name) and the
 * kernel wins, so per-kernel rows would come before the device's default row. The table has
 * none today: one row per device type.
 * Measured rows come from clopt-bench --sweep-tuning runs (bench/results/):
 *  - PoCL's CPU device: float16 vectors, 16 per work-item, work-groups of 64. Every
 *    work-item then runs a plain loop over 1024 consecutive floats, which LLVM compiles
 *    into straight vector code; every element-wise rule reaches 0.91-1.04 of its stream
 *    kernel at 2^25 (AdamW 2^24: 50 GB/s). The one-vector-per-work-item forms left the
 *    rules with exp/sqrt/division compute-bound on 2 cores: diffGrad at 2^24 reaches
 *    17-18 GB/s with VW 1 (PoCL vectorising across work-items), 29-34 with VW 16 alone,
 *    38-41 with VW 16 x 16 per work-item (sweep.txt). For AdamW, and over 4-64 vectors
 *    per work-item and work-groups of 64-1024, the configurations are within the
 *    run-to-run noise of each other; 16 x 64 keeps 2^20 floats in 16 work-groups.
 *  - GPUs: UNMEASURED. float4 / 256 / one vector per work-item is the common choice
 *    (neighbouring work-items read neighbouring vectors), not a measurement: no GPU has run
 *    clopt yet. With one vector per work-item 8-bit state runs a work-group of 256 / VW
 *    work-items per block (host/rules.c, kernels/storage.cl); on PoCL that shape is 3-13x
 *    slower than a work-item per block (AdamW 2^24: 34-301 ms against 23), so the CPU row
 *    keeps 16 vectors per work-item. Replace the GPU row from `clopt-bench --sweep-tuning`
 *    on the device (ci/gpu-check.sh is the one command for a GPU machine). */
#include "internal.h"

#include <string.h>

typedef struct tuning_row {
    cl_device_type type;
    const char *device_substring; /* NULL: any device of the type */
    const char *kernel;           /* NULL: every kernel */
    clopt_tuning tuning;
} tuning_row;

static const tuning_row tuning_table[] = {
    {CL_DEVICE_TYPE_CPU, NULL, NULL, {16, 64, 16, 0, 0}},
    {CL_DEVICE_TYPE_GPU, NULL, NULL, {4, 256, 1, 0, 0}},
};

static const clopt_tuning tuning_default = {4, 0, 1, 0, 0};

clopt_tuning clopt_default_tuning(cl_device_type type, const char *device_name,
                                  const char *kernel)
{
    for (size_t i = 0; i < sizeof tuning_table / sizeof tuning_table[0]; i++) {
        const tuning_row *r = &tuning_table[i];
        if (!(type & r->type))
            continue;
        if (r->device_substring && (!device_name || !strstr(device_name, r->device_substring)))
            continue;
        if (r->kernel && (!kernel || strcmp(kernel, r->kernel) != 0))
            continue;
        return r->tuning;
    }
    return tuning_default;
}

unsigned clopt_tuning_ipw(const clopt_tuning *t)
{
    return t->items_per_work_item ? t->items_per_work_item : 1;
}

clopt_tuning clopt_kernel_tuning(const clopt_ctx *ctx, const char *kernel)
{
    if (ctx->tuning_fixed)
        return ctx->tuning;
    return clopt_default_tuning(ctx->device_type, ctx->device_name, kernel);
}
