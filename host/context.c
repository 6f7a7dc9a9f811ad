/* Context: device choice, queue, tuning, error detail. No globals. */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLOPT_MAX_PLATFORMS 16
#define CLOPT_MAX_DEVICES 64

static int contains_nocase(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    if (nl == 0)
        return 1;
    for (const char *h = hay; *h; h++) {
        size_t i = 0;
        while (i < nl && h[i] && tolower((unsigned char)h[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == nl)
            return 1;
    }
    return 0;
}

static int is_index(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

/* Picks a device by selector (index or substring) or the default order GPU, CPU, any. */
static clopt_status pick_device(const char *selector, cl_device_id *out, char *why, size_t whylen)
{
    cl_platform_id platforms[CLOPT_MAX_PLATFORMS];
    cl_uint nplat = 0;
    cl_int err = clGetPlatformIDs(CLOPT_MAX_PLATFORMS, platforms, &nplat);
    if (err != CL_SUCCESS || nplat == 0) {
        snprintf(why, whylen, "no OpenCL platform found (clGetPlatformIDs: %d)", (int)err);
        return CLOPT_ERR_NO_DEVICE;
    }
    if (nplat > CLOPT_MAX_PLATFORMS)
        nplat = CLOPT_MAX_PLATFORMS;
    cl_device_id devices[CLOPT_MAX_DEVICES];
    cl_device_type types[CLOPT_MAX_DEVICES];
    char names[CLOPT_MAX_DEVICES][384];
    size_t ndev = 0;
    for (cl_uint p = 0; p < nplat && ndev < CLOPT_MAX_DEVICES; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, CLOPT_MAX_DEVICES - (cl_uint)ndev,
                           devices + ndev, &nd) != CL_SUCCESS)
            continue;
        if (nd > CLOPT_MAX_DEVICES - ndev)
            nd = (cl_uint)(CLOPT_MAX_DEVICES - ndev);
        char pname[128] = "";
        clGetPlatformInfo(platforms[p], CL_PLATFORM_NAME, sizeof pname - 1, pname, NULL);
        for (cl_uint d = 0; d < nd; d++) {
            char dname[240] = "";
            clGetDeviceInfo(devices[ndev + d], CL_DEVICE_NAME, sizeof dname - 1, dname, NULL);
            clGetDeviceInfo(devices[ndev + d], CL_DEVICE_TYPE, sizeof types[0], &types[ndev + d],
                            NULL);
            snprintf(names[ndev + d], sizeof names[0], "%s | %s", dname, pname);
        }
        ndev += nd;
    }
    if (ndev == 0) {
        snprintf(why, whylen, "no OpenCL device found on %u platform(s)", nplat);
        return CLOPT_ERR_NO_DEVICE;
    }
    if (selector && *selector) {
        if (is_index(selector)) {
            unsigned long idx = strtoul(selector, NULL, 10);
            if (idx >= ndev) {
                snprintf(why, whylen, "device index %lu out of range (%zu devices)", idx, ndev);
                return CLOPT_ERR_NO_DEVICE;
            }
            *out = devices[idx];
            return CLOPT_SUCCESS;
        }
        for (size_t i = 0; i < ndev; i++)
            if (contains_nocase(names[i], selector)) {
                *out = devices[i];
                return CLOPT_SUCCESS;
            }
        snprintf(why, whylen, "no device name or platform name contains \"%s\"", selector);
        return CLOPT_ERR_NO_DEVICE;
    }
    static const cl_device_type order[] = {CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_CPU,
                                           CL_DEVICE_TYPE_ALL};
    for (size_t o = 0; o < sizeof order / sizeof order[0]; o++)
        for (size_t i = 0; i < ndev; i++)
            if (types[i] & order[o]) {
                *out = devices[i];
                return CLOPT_SUCCESS;
            }
    *out = devices[0];
    return CLOPT_SUCCESS;
}

static clopt_status ctx_init(clopt_ctx *ctx)
{
    clGetDeviceInfo(ctx->device, CL_DEVICE_NAME, sizeof ctx->device_name - 1, ctx->device_name,
                    NULL);
    clGetDeviceInfo(ctx->device, CL_DRIVER_VERSION, sizeof ctx->driver_version - 1,
                    ctx->driver_version, NULL);
    clGetDeviceInfo(ctx->device, CL_DEVICE_TYPE, sizeof ctx->device_type, &ctx->device_type, NULL);
    cl_platform_id plat = NULL;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL) == CL_SUCCESS)
        clGetPlatformInfo(plat, CL_PLATFORM_VERSION, sizeof ctx->platform_version - 1,
                          ctx->platform_version, NULL);
    ctx->tuning = clopt_default_tuning(ctx->device_type, ctx->device_name, NULL);
    const char *dir = getenv("CLOPT_CACHE_DIR");
    if (dir && *dir) {
        ctx->cache_dir = clopt_strdup(dir);
        if (!ctx->cache_dir)
            return CLOPT_ERR_OUT_OF_MEMORY;
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_ctx_create(clopt_ctx **out)
{
    return clopt_ctx_create_device(getenv("CLOPT_DEVICE"), out);
}

clopt_status clopt_ctx_create_device(const char *selector, clopt_ctx **out)
{
    if (!out)
        return CLOPT_ERR_NULL_ARGUMENT;
    *out = NULL;
    char why[256] = "";
    cl_device_id dev = NULL;
    clopt_status s = pick_device(selector, &dev, why, sizeof why);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_int err = CL_SUCCESS;
    cl_context context = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (!context)
        return clopt_fail_cl(NULL, err, "clCreateContext");
    s = clopt_ctx_create_from(context, dev, NULL, out);
    clReleaseContext(context); /* the clopt_ctx holds its own reference */
    return s;
}

clopt_status clopt_ctx_create_from(cl_context context, cl_device_id device,
                                   cl_command_queue queue, clopt_ctx **out)
{
    if (!out)
        return CLOPT_ERR_NULL_ARGUMENT;
    *out = NULL;
    if (!context || !device)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return CLOPT_ERR_OUT_OF_MEMORY;
    cl_int err = clRetainContext(context);
    if (err != CL_SUCCESS) {
        free(ctx);
        return clopt_fail_cl(NULL, err, "clRetainContext");
    }
    ctx->context = context;
    ctx->device = device;
    clopt_status s = CLOPT_SUCCESS;
    if (queue) {
        cl_context qctx = NULL;
        cl_device_id qdev = NULL;
        err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
        if (err == CL_SUCCESS)
            err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
        if (err != CL_SUCCESS || qctx != context || qdev != device)
            s = CLOPT_ERR_INVALID_ARGUMENT;
        else if ((err = clRetainCommandQueue(queue)) != CL_SUCCESS)
            s = clopt_fail_cl(NULL, err, "clRetainCommandQueue");
        else
            ctx->queue = queue;
    } else {
        ctx->queue = clCreateCommandQueue(context, device, CL_QUEUE_PROFILING_ENABLE, &err);
        if (!ctx->queue)
            s = clopt_fail_cl(NULL, err, "clCreateCommandQueue");
    }
    if (s == CLOPT_SUCCESS)
        s = ctx_init(ctx);
    if (s != CLOPT_SUCCESS) {
        clopt_ctx_destroy(ctx);
        return s;
    }
    *out = ctx;
    return CLOPT_SUCCESS;
}

void clopt_ctx_destroy(clopt_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->queue)
        clFinish(ctx->queue);
    clopt_programs_release(ctx);
    if (ctx->queue)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->context)
        clReleaseContext(ctx->context);
    free(ctx->build_log);
    free(ctx->cache_dir);
    free(ctx);
}

cl_context clopt_ctx_cl_context(const clopt_ctx *ctx) { return ctx ? ctx->context : NULL; }
cl_device_id clopt_ctx_cl_device(const clopt_ctx *ctx) { return ctx ? ctx->device : NULL; }
cl_command_queue clopt_ctx_cl_queue(const clopt_ctx *ctx) { return ctx ? ctx->queue : NULL; }
const char *clopt_ctx_device_name(const clopt_ctx *ctx) { return ctx ? ctx->device_name : ""; }
const char *clopt_ctx_last_error(const clopt_ctx *ctx) { return ctx ? ctx->last_error : ""; }

const char *clopt_ctx_build_log(const clopt_ctx *ctx)
{
    return ctx && ctx->build_log ? ctx->build_log : "";
}

clopt_status clopt_ctx_get_rule_tuning(const clopt_ctx *ctx, clopt_rule rule,
                                       const clopt_hparams *hp, clopt_tuning *out)
{
    if (!ctx || !hp || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_launch_plan plan;
    clopt_step_args a;
    clopt_step_args_init(&a);
    if (clopt_rule_is_multipass(rule) || (int)rule < 0 || rule >= CLOPT_RULE_COUNT ||
        clopt_plan_step((clopt_ctx *)ctx, rule, hp, &a, 1, &plan) != CLOPT_SUCCESS) {
        *out = ctx->tuning; /* the multi-pass rules' element-wise passes use the default */
        return (int)rule < 0 || rule >= CLOPT_RULE_COUNT ? CLOPT_ERR_INVALID_ARGUMENT
                                                          : CLOPT_SUCCESS;
    }
    *out = plan.tuning;
    return CLOPT_SUCCESS;
}

clopt_status clopt_ctx_get_tuning(const clopt_ctx *ctx, clopt_tuning *out)
{
    if (!ctx || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    *out = ctx->tuning;
    return CLOPT_SUCCESS;
}

clopt_status clopt_ctx_set_tuning(clopt_ctx *ctx, const clopt_tuning *tuning)
{
    if (!ctx || !tuning)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    unsigned vw = tuning->vector_width;
    if (vw != 1 && vw != 2 && vw != 4 && vw != 8 && vw != 16)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "tuning: vector_width %u is not 1, 2, 4, 8 or 16", vw);
    if (tuning->items_per_work_item > 1024)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "tuning: items_per_work_item %u is above 1024",
                          tuning->items_per_work_item);
    size_t maxwg = 0;
    clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof maxwg, &maxwg, NULL);
    if (maxwg && tuning->work_group_size > maxwg)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "tuning: work_group_size %zu exceeds the device maximum %zu",
                          tuning->work_group_size, maxwg);
    ctx->tuning = *tuning;
    ctx->tuning_fixed = 1;
    return CLOPT_SUCCESS;
}

void clopt_ctx_program_stats(const clopt_ctx *ctx, size_t *compiled, size_t *from_disk)
{
    if (compiled)
        *compiled = ctx ? ctx->compiled : 0;
    if (from_disk)
        *from_disk = ctx ? ctx->from_disk : 0;
}
