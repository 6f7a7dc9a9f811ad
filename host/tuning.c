/* Per-device-type kernel tuning, as CLBlast keeps a table with a default.
 *
 * vector_width: floats per work-item (vloadN/vstoreN); work_group_size: 0 lets the driver
 * pick. A row may name one rule's kernel: the first row that matches the device (type and
 * name) and the kernel wins, so per-kernel rows come before the device's default row.
 * The values come from clopt-bench --sweep-tuning runs (bench/results/):
 *  - PoCL's CPU device vectorises across work-items itself: plain scalar work-items (VW 1)
 *    in large work-groups reach the stream kernel's bandwidth (AdamW 2^25: 41-43 GB/s,
 *    0.95-0.99 of stream), where float16 work-items reach 0.8;
 *  - except diffGrad, whose exp() PoCL vectorises only when the kernel itself is written in
 *    float16 (VW 1: 18 GB/s, VW 16: 31 GB/s at 2^25), and Lion, whose sign() does better in
 *    float16 too (39 vs 43 GB/s).
 * GPUs get the common float4 / 256 choice (not measured here: no GPU was at hand). */
#include "internal.h"

#include <string.h>

typedef struct tuning_row {
    cl_device_type type;
    const char *device_substring; /* NULL: any device of the type */
    const char *kernel;           /* NULL: every kernel */
    clopt_tuning tuning;
} tuning_row;

static const tuning_row tuning_table[] = {
    {CL_DEVICE_TYPE_CPU, NULL, "diffgrad_step", {16, 256}},
    {CL_DEVICE_TYPE_CPU, NULL, "lion_step", {16, 256}},
    {CL_DEVICE_TYPE_CPU, NULL, NULL, {1, 1024}},
    {CL_DEVICE_TYPE_GPU, NULL, NULL, {4, 256}},
};

static const clopt_tuning tuning_default = {4, 0};

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

clopt_tuning clopt_kernel_tuning(const clopt_ctx *ctx, const char *kernel)
{
    if (ctx->tuning_fixed)
        return ctx->tuning;
    return clopt_default_tuning(ctx->device_type, ctx->device_name, kernel);
}
