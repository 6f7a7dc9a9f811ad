/* SPDX-License-Identifier: MIT */
/* Context: device choice, queue, tuning, error detail. No globals. */
#define _POSIX_C_SOURCE 200809L /* getcwd */
#include "internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLOPT_MAX_PLATFORMS 16
#define CLOPT_MAX_DEVICES 64

/* snprintf into why (may be NULL or zero-length) */
/* Releases what ctx holds; finish: clFinish its queue first (clopt_ctx_destroy), not after a
   failed creation (nothing enqueued, and the queue may be the caller's). */
static void ctx_release(clopt_ctx *ctx, int finish);
static void say(char *why, size_t whylen, const char *fmt, ...) CLOPT_PRINTF(3, 4);
static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* Appends to why what still fits (truncates silently). */
static void say_more(char *why, size_t whylen, const char *fmt, ...) CLOPT_PRINTF(3, 4);
static void say_more(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    size_t used = strlen(why); /* always terminated: say() or vsnprintf wrote it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used, whylen - used, fmt, ap);
    va_end(ap);
}

/* A device (dev) or platform (plat) string into buf (cap bytes), cut to fit: a longer one
   made the query into the fixed buffer fail (CL_INVALID_VALUE) and left "", e.g. a driver
   version missing from the program cache's key. */
static void info_string(cl_device_id dev, cl_platform_id plat, cl_uint what, char *buf,
                        size_t cap)
{
    buf[0] = '\0';
    size_t len = 0;
    cl_int err = dev ? clGetDeviceInfo(dev, what, 0, NULL, &len)
                     : clGetPlatformInfo(plat, what, 0, NULL, &len);
    if (err != CL_SUCCESS || len == 0)
        return;
    char *tmp = len <= cap ? buf : malloc(len);
    if (!tmp)
        return;
    err = dev ? clGetDeviceInfo(dev, what, len, tmp, NULL)
              : clGetPlatformInfo(plat, what, len, tmp, NULL);
    if (tmp != buf) {
        if (err == CL_SUCCESS) {
            memcpy(buf, tmp, cap - 1);
            buf[cap - 1] = '\0';
        }
        free(tmp);
    } else if (err != CL_SUCCESS) {
        buf[0] = '\0';
    } else {
        buf[len - 1] = '\0';
    }
}

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

static int equals_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
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

/* What a selector is matched against, per device. */
enum { DEV_NAME, DEV_VENDOR, PLAT_NAME, PLAT_VENDOR, PLAT_VERSION, NFIELDS };
typedef struct device_info {
    cl_device_id id;
    cl_device_type type;
    char field[NFIELDS][256];
} device_info;

static const char *type_word(cl_device_type t)
{
    if (t & CL_DEVICE_TYPE_GPU)
        return "gpu";
    if (t & CL_DEVICE_TYPE_CPU)
        return "cpu";
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    return "other";
}

/* The type keywords of a selector: "cpu", "gpu", "accelerator" (any case). 0 if none. */
static cl_device_type selector_type(const char *sel, const char **upper)
{
    static const struct {
        const char *word, *upper;
        cl_device_type type;
    } words[] = {{"cpu", "CPU", CL_DEVICE_TYPE_CPU},
                 {"gpu", "GPU", CL_DEVICE_TYPE_GPU},
                 {"accelerator", "accelerator", CL_DEVICE_TYPE_ACCELERATOR}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (equals_nocase(sel, words[i].word)) {
            *upper = words[i].upper;
            return words[i].type;
        }
    return 0;
}

/* The first of the ndev devices of kind `want` (CPU, GPU or accelerator), with `exact` one
   that claims no other kind: a simulator such as Oclgrind reports all three. */
static int find_type(const device_info *dev, size_t ndev, cl_device_type want, int exact,
                     size_t *at)
{
    const cl_device_type kinds =
        CL_DEVICE_TYPE_CPU | CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR;
    for (size_t i = 0; i < ndev; i++)
        if ((dev[i].type & want) && (!exact || (dev[i].type & kinds) == want)) {
            *at = i;
            return 1;
        }
    return 0;
}

/* Every device of every platform (at most CLOPT_MAX_DEVICES), in platform order. */
static clopt_status list_devices(device_info **out, size_t *count, char *why, size_t whylen)
{
    *out = NULL;
    *count = 0;
    cl_platform_id platforms[CLOPT_MAX_PLATFORMS];
    cl_uint nplat = 0;
    cl_int err = clGetPlatformIDs(CLOPT_MAX_PLATFORMS, platforms, &nplat);
    if (err != CL_SUCCESS || nplat == 0) {
        say(why, whylen, "no OpenCL platform found (clGetPlatformIDs: %s)",
            err == CL_SUCCESS ? "0 platforms"
                              : clopt_status_name((clopt_status)((int)CLOPT_ERR_OPENCL_BASE +
                                                                 (int)err)));
        return CLOPT_ERR_NO_DEVICE;
    }
    if (nplat > CLOPT_MAX_PLATFORMS)
        nplat = CLOPT_MAX_PLATFORMS;
    device_info *dev = calloc(CLOPT_MAX_DEVICES, sizeof *dev);
    if (!dev) {
        say(why, whylen, "out of host memory listing the OpenCL devices");
        return CLOPT_ERR_OUT_OF_MEMORY;
    }
    size_t ndev = 0;
    for (cl_uint p = 0; p < nplat && ndev < CLOPT_MAX_DEVICES; p++) {
        cl_device_id ids[CLOPT_MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, (cl_uint)(CLOPT_MAX_DEVICES - ndev),
                           ids, &nd) != CL_SUCCESS)
            continue;
        if (nd > CLOPT_MAX_DEVICES - ndev)
            nd = (cl_uint)(CLOPT_MAX_DEVICES - ndev);
        for (cl_uint d = 0; d < nd; d++) {
            device_info *di = &dev[ndev + d];
            const size_t fl = sizeof di->field[0];
            di->id = ids[d];
            clGetDeviceInfo(ids[d], CL_DEVICE_TYPE, sizeof di->type, &di->type, NULL);
            info_string(ids[d], NULL, CL_DEVICE_NAME, di->field[DEV_NAME], fl);
            info_string(ids[d], NULL, CL_DEVICE_VENDOR, di->field[DEV_VENDOR], fl);
            info_string(NULL, platforms[p], CL_PLATFORM_NAME, di->field[PLAT_NAME], fl);
            info_string(NULL, platforms[p], CL_PLATFORM_VENDOR, di->field[PLAT_VENDOR], fl);
            info_string(NULL, platforms[p], CL_PLATFORM_VERSION, di->field[PLAT_VERSION], fl);
        }
        ndev += nd;
    }
    if (ndev == 0) {
        free(dev);
        say(why, whylen, "no OpenCL device found on %u platform(s)", nplat);
        return CLOPT_ERR_NO_DEVICE;
    }
    *out = dev;
    *count = ndev;
    return CLOPT_SUCCESS;
}

/* "among 1 device(s): 0: pthread-... [cpu] (Portable Computing Language)" after a reason. */
static void say_devices(char *why, size_t whylen, const device_info *dev, size_t ndev)
{
    say_more(why, whylen, " among %zu device(s):", ndev);
    for (size_t i = 0; i < ndev; i++)
        say_more(why, whylen, "%s %zu: %s [%s] (%s)", i ? ";" : "", i, dev[i].field[DEV_NAME],
                 type_word(dev[i].type), dev[i].field[PLAT_NAME]);
}

/* Picks a device by selector (see clopt_ctx_create_device_ex in clopt.h) or, for NULL or
   "", the default order GPU, CPU, any. label names where the selector came from. */
static clopt_status pick_device(const char *selector, const char *label, cl_device_id *out,
                                char *why, size_t whylen)
{
    device_info *dev = NULL;
    size_t ndev = 0;
    clopt_status s = list_devices(&dev, &ndev, why, whylen);
    if (s != CLOPT_SUCCESS)
        return s;
    /* surrounding blanks are not part of the selector ("CLOPT_DEVICE= gpu") */
    char sel[256] = "";
    if (selector) {
        while (isspace((unsigned char)*selector))
            selector++;
        size_t n = strlen(selector);
        while (n > 0 && isspace((unsigned char)selector[n - 1]))
            n--;
        if (n >= sizeof sel) {
            free(dev);
            say(why, whylen, "%s is longer than %zu characters", label, sizeof sel - 1);
            return CLOPT_ERR_INVALID_ARGUMENT;
        }
        memcpy(sel, selector, n);
        sel[n] = '\0';
    }
    s = CLOPT_ERR_NO_DEVICE;
    const char *tname = NULL;
    cl_device_type want;
    size_t at = 0;
    if (!sel[0]) { /* a GPU, else a CPU (devices of one kind first), else the first device */
        const int found = find_type(dev, ndev, CL_DEVICE_TYPE_GPU, 1, &at) ||
                          find_type(dev, ndev, CL_DEVICE_TYPE_CPU, 1, &at) ||
                          find_type(dev, ndev, CL_DEVICE_TYPE_GPU, 0, &at) ||
                          find_type(dev, ndev, CL_DEVICE_TYPE_CPU, 0, &at);
        *out = dev[found ? at : 0].id;
        s = CLOPT_SUCCESS;
    } else if (is_index(sel)) {
        unsigned long idx = strtoul(sel, NULL, 10);
        if (idx < ndev) {
            *out = dev[idx].id;
            s = CLOPT_SUCCESS;
        } else {
            say(why, whylen, "%s=\"%s\": device index %lu out of range", label, sel, idx);
        }
    } else if ((want = selector_type(sel, &tname)) != 0) {
        if (find_type(dev, ndev, want, 1, &at) || find_type(dev, ndev, want, 0, &at)) {
            *out = dev[at].id;
            s = CLOPT_SUCCESS;
        }
        if (s != CLOPT_SUCCESS)
            say(why, whylen, "%s=\"%s\": no %s device", label, sel, tname);
    } else {
        for (size_t i = 0; i < ndev && s != CLOPT_SUCCESS; i++)
            for (int f = 0; f < NFIELDS; f++)
                if (contains_nocase(dev[i].field[f], sel)) {
                    *out = dev[i].id;
                    s = CLOPT_SUCCESS;
                    break;
                }
        if (s != CLOPT_SUCCESS)
            say(why, whylen, "%s=\"%s\": in no device or platform name, vendor or version",
                label, sel);
    }
    if (s != CLOPT_SUCCESS)
        say_devices(why, whylen, dev, ndev);
    free(dev);
    return s;
}

static clopt_status ctx_init(clopt_ctx *ctx)
{
    info_string(ctx->device, NULL, CL_DEVICE_NAME, ctx->device_name, sizeof ctx->device_name);
    info_string(ctx->device, NULL, CL_DRIVER_VERSION, ctx->driver_version,
                sizeof ctx->driver_version);
    clGetDeviceInfo(ctx->device, CL_DEVICE_TYPE, sizeof ctx->device_type, &ctx->device_type, NULL);
    cl_platform_id plat = NULL;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof plat, &plat, NULL) == CL_SUCCESS)
        info_string(NULL, plat, CL_PLATFORM_VERSION, ctx->platform_version,
                    sizeof ctx->platform_version);
    ctx->tuning = clopt_default_tuning(ctx->device_type, ctx->device_name, NULL);
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof ctx->compute_units,
                        &ctx->compute_units, NULL) != CL_SUCCESS ||
        ctx->compute_units == 0)
        ctx->compute_units = 1;
    /* A CPU device's processors are the host's: PoCL reports as many compute units as its
       worker threads (POCL_MAX_PTHREAD_COUNT), a scheduling setting that must not change
       the reductions' shape and so their last bits. */
    const long procs = sysconf(_SC_NPROCESSORS_ONLN);
    if ((ctx->device_type & CL_DEVICE_TYPE_CPU) && procs > 0 && procs <= 65536)
        ctx->compute_units = (cl_uint)procs;
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof ctx->max_work_group,
                        &ctx->max_work_group, NULL) != CL_SUCCESS)
        ctx->max_work_group = 0;
    cl_device_fp_config fp = 0;
    ctx->divsqrt_cr =
        clGetDeviceInfo(ctx->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL) ==
            CL_SUCCESS &&
        (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    const char *dir = getenv("CLOPT_CACHE_DIR");
    if (dir && *dir) {
        /* a relative folder is taken from the working directory of now (a later chdir of
           the engine must not move the cache); without a working directory, as given */
        char cwd[4096];
        if (dir[0] != '/' && getcwd(cwd, sizeof cwd)) {
            const size_t len = strlen(cwd) + 1 + strlen(dir) + 1;
            ctx->cache_dir = malloc(len);
            if (ctx->cache_dir)
                snprintf(ctx->cache_dir, len, "%s/%s", cwd, dir);
        } else {
            ctx->cache_dir = clopt_strdup(dir);
        }
        if (!ctx->cache_dir)
            return CLOPT_ERR_OUT_OF_MEMORY;
    }
    return CLOPT_SUCCESS;
}

static const char *cl_name(cl_int err)
{
    return clopt_status_name((clopt_status)((int)CLOPT_ERR_OPENCL_BASE + (int)err));
}

static clopt_status create_from(cl_context context, cl_device_id device, cl_command_queue queue,
                                clopt_ctx **out, char *why, size_t whylen)
{
    if (!out) {
        say(why, whylen, "out is NULL");
        return CLOPT_ERR_NULL_ARGUMENT;
    }
    *out = NULL;
    if (!context || !device) {
        say(why, whylen, "%s is NULL", context ? "device" : "context");
        return CLOPT_ERR_NULL_ARGUMENT;
    }
    clopt_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        say(why, whylen, "out of host memory");
        return CLOPT_ERR_OUT_OF_MEMORY;
    }
    cl_int err = clRetainContext(context);
    if (err != CL_SUCCESS) {
        free(ctx);
        say(why, whylen, "clRetainContext: %s (%d)", cl_name(err), (int)err);
        return clopt_fail_cl(NULL, err, "clRetainContext");
    }
    ctx->context = context;
    clopt_status s = CLOPT_SUCCESS;
    if ((err = clRetainDevice(device)) != CL_SUCCESS) {
        say(why, whylen, "clRetainDevice: %s (%d)", cl_name(err), (int)err);
        s = clopt_fail_cl(NULL, err, "clRetainDevice");
    } else {
        ctx->device = device;
    }
    if (s == CLOPT_SUCCESS && queue) {
        cl_context qctx = NULL;
        cl_device_id qdev = NULL;
        err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
        if (err == CL_SUCCESS)
            err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
        if (err != CL_SUCCESS || qctx != context || qdev != device) {
            say(why, whylen, "the queue %s", err != CL_SUCCESS ? "is not a valid command queue"
                                             : "belongs to another context or device");
            s = CLOPT_ERR_INVALID_ARGUMENT;
        } else if ((err = clRetainCommandQueue(queue)) != CL_SUCCESS) {
            say(why, whylen, "clRetainCommandQueue: %s (%d)", cl_name(err), (int)err);
            s = clopt_fail_cl(NULL, err, "clRetainCommandQueue");
        } else {
            ctx->queue = queue;
        }
    } else if (s == CLOPT_SUCCESS) {
        ctx->queue = clCreateCommandQueue(context, device, CL_QUEUE_PROFILING_ENABLE, &err);
        if (!ctx->queue) {
            say(why, whylen, "clCreateCommandQueue: %s (%d)", cl_name(err), (int)err);
            s = clopt_fail_cl(NULL, err, "clCreateCommandQueue");
        }
    }
    if (s == CLOPT_SUCCESS && (s = ctx_init(ctx)) != CLOPT_SUCCESS)
        say(why, whylen, "%s", clopt_status_str(s));
    if (s != CLOPT_SUCCESS) {
        ctx_release(ctx, 0); /* nothing enqueued: no clFinish on the caller's queue */
        return s;
    }
    *out = ctx;
    return CLOPT_SUCCESS;
}

/* label: how the selector is named in the reason ("CLOPT_DEVICE", "selector"). */
static clopt_status create_selected(const char *selector, const char *label, clopt_ctx **out,
                                    char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (!out) {
        say(why, whylen, "out is NULL");
        return CLOPT_ERR_NULL_ARGUMENT;
    }
    *out = NULL;
    cl_device_id dev = NULL;
    clopt_status s = pick_device(selector, label, &dev, why, whylen);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_int err = CL_SUCCESS;
    cl_context context = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (!context) {
        char name[256] = "";
        clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
        say(why, whylen, "clCreateContext on %s: %s (%d)", name, cl_name(err), (int)err);
        return clopt_fail_cl(NULL, err, "clCreateContext");
    }
    s = create_from(context, dev, NULL, out, why, whylen);
    clReleaseContext(context); /* the clopt_ctx holds its own reference */
    return s;
}

clopt_status clopt_ctx_create(clopt_ctx **out)
{
    return create_selected(getenv("CLOPT_DEVICE"), "CLOPT_DEVICE", out, NULL, 0);
}

clopt_status clopt_ctx_create_device(const char *selector, clopt_ctx **out)
{
    return create_selected(selector, "selector", out, NULL, 0);
}

clopt_status clopt_ctx_create_device_ex(const char *selector, clopt_ctx **out, char *why,
                                        size_t why_len)
{
    if (selector)
        return create_selected(selector, "selector", out, why, why_len);
    return create_selected(getenv("CLOPT_DEVICE"), "CLOPT_DEVICE", out, why, why_len);
}

clopt_status clopt_ctx_create_from(cl_context context, cl_device_id device,
                                   cl_command_queue queue, clopt_ctx **out)
{
    return create_from(context, device, queue, out, NULL, 0);
}

void clopt_ctx_destroy(clopt_ctx *ctx) { ctx_release(ctx, 1); }

static void ctx_release(clopt_ctx *ctx, int finish)
{
    if (!ctx)
        return;
    if (ctx->queue && finish)
        clFinish(ctx->queue);
    clopt_muon_ctx_release(ctx);
    clopt_programs_release(ctx);
    if (ctx->qmap)
        clReleaseMemObject(ctx->qmap);
    if (ctx->queue)
        clReleaseCommandQueue(ctx->queue);
    if (ctx->device)
        clReleaseDevice(ctx->device);
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

/* The getters below take a const context but, like every call that returns a status, clear
   its last error first (last_error is the one field they write; a context is always a
   heap object of the library, never a const one). */
clopt_status clopt_ctx_get_rule_tuning(const clopt_ctx *ctx, clopt_rule rule,
                                       const clopt_hparams *hp, clopt_tuning *out)
{
    clopt_ctx *c = (clopt_ctx *)ctx;
    if (!ctx || !hp || !out)
        return clopt_fail(c, CLOPT_ERR_NULL_ARGUMENT, "clopt_ctx_get_rule_tuning: NULL argument");
    clopt_clear_error(c);
    if ((int)rule < 0 || rule >= CLOPT_RULE_COUNT) /* *out untouched */
        return clopt_fail(c, CLOPT_ERR_INVALID_ARGUMENT,
                          "clopt_ctx_get_rule_tuning: rule %d out of range", (int)rule);
    clopt_launch_plan plan;
    clopt_step_args a;
    clopt_step_args_init(&a);
    /* a tensor with the group's state storage (8-bit state, where the rule has it, has its
       own shapes) and, under gradient centralization, a matrix's launch */
    if (hp->state_dtype == CLOPT_DTYPE_BF16 ||
        (hp->state_dtype == CLOPT_DTYPE_U8 && clopt_rule_q8_ok(rule, hp) &&
         clopt_rule_state_count(rule, hp) > 0))
        a.state_dtype = hp->state_dtype;
    a.gc_rows = hp->grad_centralization ? 1 : 0;
    if (clopt_rule_is_multipass(rule) ||
        clopt_plan_step(c, rule, hp, &a, 1, &plan) != CLOPT_SUCCESS) {
        *out = ctx->tuning; /* the multi-pass rules' element-wise passes use the default */
        clopt_clear_error(c); /* a plan that cannot be made is no failure of this call */
        return CLOPT_SUCCESS;
    }
    *out = plan.tuning;
    return CLOPT_SUCCESS;
}

clopt_status clopt_ctx_get_tuning(const clopt_ctx *ctx, clopt_tuning *out)
{
    if (!ctx || !out)
        return clopt_fail((clopt_ctx *)ctx, CLOPT_ERR_NULL_ARGUMENT,
                          "clopt_ctx_get_tuning: NULL argument");
    clopt_clear_error((clopt_ctx *)ctx);
    *out = ctx->tuning;
    return CLOPT_SUCCESS;
}

clopt_status clopt_ctx_set_tuning(clopt_ctx *ctx, const clopt_tuning *tuning)
{
    if (!ctx || !tuning)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "clopt_ctx_set_tuning: NULL argument");
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
    const unsigned rl = tuning->reduce_local;
    if (rl > 256 || (rl & (rl - 1)) != 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "tuning: reduce_local %u is not 0 or a power of 2 up to 256", rl);
    if (maxwg && rl > maxwg)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "tuning: reduce_local %u exceeds the device maximum %zu", rl, maxwg);
    if (tuning->reduce_groups_per_cu > 1024)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "tuning: reduce_groups_per_cu %u is above 1024",
                          tuning->reduce_groups_per_cu);
    ctx->tuning = *tuning;
    ctx->tuning_fixed = 1;
    return CLOPT_SUCCESS;
}

/* Defaults: a CPU runs a work-group's items one after the other, so one item per group
   streams through a contiguous block (a work-group tree cost PoCL 1.48x on the gradient
   check) and 8 groups per core balance the threads; a GPU gets 256 items reading coalesced
   chunks and 4 groups per compute unit to hide latency. */
void clopt_reduce_shape(const clopt_ctx *ctx, unsigned *local, size_t *groups)
{
    const int cpu = (ctx->device_type & CL_DEVICE_TYPE_CPU) != 0;
    unsigned rl = ctx->tuning.reduce_local;
    if (rl == 0) {
        rl = cpu ? 1u : 256u;
        while (rl > 1 && ctx->max_work_group && rl > ctx->max_work_group)
            rl /= 2;
    }
    size_t per = ctx->tuning.reduce_groups_per_cu ? ctx->tuning.reduce_groups_per_cu
                                                  : (cpu ? 8u : 4u);
    size_t g = (size_t)ctx->compute_units * per;
    if (g > 4096)
        g = 4096;
    *local = rl;
    *groups = g ? g : 1;
}

size_t clopt_gc_groups(const clopt_ctx *ctx, size_t rows)
{
    unsigned rl;
    size_t g;
    clopt_reduce_shape(ctx, &rl, &g);
    return rl == 1 && g < rows ? g : rows;
}

void clopt_ctx_program_stats(const clopt_ctx *ctx, size_t *compiled, size_t *from_disk)
{
    if (compiled)
        *compiled = ctx ? ctx->compiled : 0;
    if (from_disk)
        *from_disk = ctx ? ctx->from_disk : 0;
}
