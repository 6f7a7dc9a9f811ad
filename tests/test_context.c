/* SPDX-License-Identifier: MIT */
/* Context, program cache (memory and disk), tuning and status plumbing. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clopt.h"

/* One AdamW step over n values on ctx; returns the updated parameters in out. */
static void adamw_once(clopt_ctx *ctx, size_t n, float *out)
{
    cl_context cl = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    float *host = malloc(n * sizeof *host);
    assert_non_null(host);
    cl_mem buf[4];
    for (int b = 0; b < 4; b++) {
        for (size_t i = 0; i < n; i++)
            host[i] = b == 3 ? 0.0f : (float)sin((double)(i + 1) * (b + 1)) * 0.5f;
        cl_int err;
        buf[b] = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * sizeof *host,
                                host, &err);
        assert_int_equal(err, CL_SUCCESS);
    }
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = (clopt_tensor){buf[0], 0};
    a.grad = (clopt_tensor){buf[1], 0};
    a.state[0] = (clopt_tensor){buf[2], 0};
    a.state[1] = (clopt_tensor){buf[3], 0};
    assert_int_equal(clopt_enqueue_adamw(ctx, NULL, &hp, &a, n, 1, 0, NULL, NULL), CLOPT_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(q, buf[0], CL_TRUE, 0, n * sizeof *out, out, 0, NULL,
                                         NULL),
                     CL_SUCCESS);
    for (int b = 0; b < 4; b++)
        clReleaseMemObject(buf[b]);
    free(host);
}

static void test_default_context(void **state)
{
    (void)state;
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    assert_non_null(ctx);
    assert_non_null(clopt_ctx_cl_context(ctx));
    assert_non_null(clopt_ctx_cl_device(ctx));
    assert_non_null(clopt_ctx_cl_queue(ctx));
    assert_true(strlen(clopt_ctx_device_name(ctx)) > 0);
    assert_string_equal(clopt_ctx_last_error(ctx), "");
    clopt_ctx_destroy(ctx);
    clopt_ctx_destroy(NULL); /* allowed, like free */
    assert_int_equal(clopt_ctx_create(NULL), CLOPT_ERR_NULL_ARGUMENT);
}

static void test_selectors(void **state)
{
    (void)state;
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create_device("0", &ctx), CLOPT_SUCCESS);
    char name[256];
    snprintf(name, sizeof name, "%s", clopt_ctx_device_name(ctx));
    clopt_ctx_destroy(ctx);
    /* a substring of the device name, in another case, picks it too */
    char sub[8] = {0};
    for (size_t i = 0; i < 4 && name[i]; i++)
        sub[i] = (char)((name[i] >= 'a' && name[i] <= 'z') ? name[i] - 32 : name[i]);
    assert_int_equal(clopt_ctx_create_device(sub, &ctx), CLOPT_SUCCESS);
    clopt_ctx_destroy(ctx);
    ctx = (clopt_ctx *)&ctx; /* must be reset to NULL on failure */
    assert_int_equal(clopt_ctx_create_device("no such device anywhere", &ctx), CLOPT_ERR_NO_DEVICE);
    assert_null(ctx);
    ctx = (clopt_ctx *)&ctx;
    assert_int_equal(clopt_ctx_create_device("999", &ctx), CLOPT_ERR_NO_DEVICE);
    assert_null(ctx);
}

static void test_caller_context_and_two_contexts(void **state)
{
    (void)state;
    clopt_ctx *a = NULL, *b = NULL;
    assert_int_equal(clopt_ctx_create(&a), CLOPT_SUCCESS);
    cl_int err;
    cl_device_id dev = clopt_ctx_cl_device(a);
    cl_context cl = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_command_queue q = clCreateCommandQueue(cl, dev, 0, &err);
    assert_int_equal(err, CL_SUCCESS);
    assert_int_equal(clopt_ctx_create_from(cl, dev, q, &b), CLOPT_SUCCESS);
    assert_ptr_equal(clopt_ctx_cl_queue(b), q);
    /* a queue of another context is refused */
    clopt_ctx *c = NULL;
    assert_int_equal(clopt_ctx_create_from(clopt_ctx_cl_context(a), dev, q, &c),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_null(c);
    clReleaseCommandQueue(q);
    clReleaseContext(cl); /* b keeps its own references */
    enum { N = 1000 };
    float ra[N], rb[N];
    adamw_once(a, N, ra);
    adamw_once(b, N, rb);
    assert_memory_equal(ra, rb, sizeof ra);
    size_t compiled = 0;
    clopt_ctx_program_stats(a, &compiled, NULL);
    assert_int_equal(compiled, 1);
    adamw_once(a, N, ra); /* cached: no new compile */
    clopt_ctx_program_stats(a, &compiled, NULL);
    assert_int_equal(compiled, 1);
    clopt_ctx_destroy(a);
    clopt_ctx_destroy(b);
}

static void test_build_failure_has_log(void **state)
{
    (void)state;
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    cl_kernel k = NULL;
    /* a define that breaks the source: the compiler must fail and leave a log */
    clopt_status s = clopt_ctx_kernel(ctx, "sgd", "-DVW=4 -DMOMENTUM=(", "sgd_step", &k);
    assert_int_equal(s, CLOPT_ERR_BUILD_FAILED);
    assert_null(k);
    assert_true(strlen(clopt_ctx_build_log(ctx)) > 0);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "sgd.cl"));
    assert_int_equal(clopt_ctx_kernel(ctx, "no_such_family", "", "x", &k), CLOPT_ERR_UNSUPPORTED);
    /* the context still works afterwards */
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k), CLOPT_SUCCESS);
    assert_non_null(k);
    clopt_ctx_destroy(ctx);
}

static int count_entries(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    int count = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (l > s && strcmp(e->d_name + l - s, suffix) == 0)
            count++;
    }
    closedir(d);
    return count;
}

static void for_each_entry(const char *dir, void (*fn)(const char *path))
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        fn(path);
    }
    closedir(d);
}

static void corrupt_file(const char *path)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, size / 2, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void truncate_file(const char *path)
{
    assert_int_equal(truncate(path, 20), 0);
}

static void remove_file(const char *path) { remove(path); }

/* The options every program is built with: OpenCL C 1.2, and correctly rounded division and
   square root where the device offers them (read back from the built program, against the
   device's own CL_DEVICE_SINGLE_FP_CONFIG). */
static void test_build_options(void **state)
{
    (void)state;
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    cl_kernel k = NULL;
    assert_int_equal(clopt_ctx_kernel(ctx, "sgd", "-DVW=4", "sgd_step", &k), CLOPT_SUCCESS);
    cl_program prog = NULL;
    assert_int_equal(clGetKernelInfo(k, CL_KERNEL_PROGRAM, sizeof prog, &prog, NULL),
                     CL_SUCCESS);
    char opts[1024] = "";
    assert_int_equal(clGetProgramBuildInfo(prog, clopt_ctx_cl_device(ctx),
                                           CL_PROGRAM_BUILD_OPTIONS, sizeof opts - 1, opts, NULL),
                     CL_SUCCESS);
    cl_device_fp_config fp = 0;
    assert_int_equal(clGetDeviceInfo(clopt_ctx_cl_device(ctx), CL_DEVICE_SINGLE_FP_CONFIG,
                                     sizeof fp, &fp, NULL),
                     CL_SUCCESS);
    assert_non_null(strstr(opts, "-cl-std=CL1.2"));
    const int cr = strstr(opts, "-cl-fp32-correctly-rounded-divide-sqrt") != NULL;
    if (cr != ((fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0))
        fail_msg("build options \"%s\" for a device whose fp config is 0x%llx", opts,
                 (unsigned long long)fp);
    clopt_ctx_destroy(ctx);
}

static void test_disk_cache(void **state)
{
    (void)state;
    char dir[] = "/tmp/clopt-cache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    setenv("CLOPT_CACHE_DIR", dir, 1);
    enum { N = 777 };
    float ref[N], got[N];
    size_t compiled = 0, from_disk = 0;

    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    adamw_once(ctx, N, ref);
    clopt_ctx_program_stats(ctx, &compiled, &from_disk);
    assert_int_equal(compiled, 1);
    assert_int_equal(from_disk, 0);
    clopt_ctx_destroy(ctx);
    assert_int_equal(count_entries(dir, ".bin"), 1);
    assert_int_equal(count_entries(dir, ".tmp"), 0); /* written atomically, nothing left over */

    /* a fresh context loads the binary instead of compiling */
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    adamw_once(ctx, N, got);
    clopt_ctx_program_stats(ctx, &compiled, &from_disk);
    assert_int_equal(from_disk, 1);
    assert_memory_equal(ref, got, sizeof ref);
    clopt_ctx_destroy(ctx);

    /* corrupt, truncated and missing entries fall back to compiling, silently */
    void (*spoil[])(const char *) = {corrupt_file, truncate_file, remove_file};
    for (size_t i = 0; i < sizeof spoil / sizeof spoil[0]; i++) {
        for_each_entry(dir, spoil[i]);
        assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
        adamw_once(ctx, N, got);
        clopt_ctx_program_stats(ctx, &compiled, &from_disk);
        assert_int_equal(compiled, 1);
        assert_int_equal(from_disk, 0);
        assert_memory_equal(ref, got, sizeof ref);
        assert_string_equal(clopt_ctx_last_error(ctx), "");
        clopt_ctx_destroy(ctx);
        assert_int_equal(count_entries(dir, ".bin"), 1); /* rewritten */
    }
    for_each_entry(dir, remove_file);
    rmdir(dir);
    unsetenv("CLOPT_CACHE_DIR");
}

static void test_tuning(void **state)
{
    (void)state;
    clopt_ctx *ctx = NULL;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    clopt_tuning t0, t;
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t0), CLOPT_SUCCESS);
    t = t0;
    t.vector_width = 3;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    t = t0;
    t.work_group_size = (size_t)1 << 40;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
    assert_memory_equal(&t, &t0, sizeof t);
    t = t0;
    t.items_per_work_item = 1025;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
    assert_memory_equal(&t, &t0, sizeof t);
    /* every vector width, vectors per work-item (0 = 1; 3 and 16 put the tail inside a
       work-item's range, 64 gives one work-item everything) and a driver-chosen work-group
       size give the same result, to float rounding (the compiler may contract differently
       per width), for a size with a tail for every width */
    enum { N = 1000 + 13 };
    float ref[N], got[N];
    adamw_once(ctx, N, ref);
    const unsigned widths[] = {1, 2, 4, 8, 16}, ipws[] = {0, 1, 3, 16, 64};
    for (size_t w = 0; w < 5; w++)
        for (size_t k = 0; k < 5; k++) {
            t.vector_width = widths[w];
            t.work_group_size = (w + k) % 2 ? 0 : 64;
            t.items_per_work_item = ipws[k];
            assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
            adamw_once(ctx, N, got);
            for (size_t i = 0; i < N; i++)
                assert_true(fabsf(got[i] - ref[i]) <= 1e-6f * fabsf(ref[i]) + 1e-9f);
        }
    clopt_ctx_destroy(ctx);
}

static void test_rule_names(void **state)
{
    (void)state;
    for (int r = 0; r < CLOPT_RULE_COUNT; r++) {
        const char *name = clopt_rule_name((clopt_rule)r);
        assert_non_null(name);
        clopt_rule back;
        assert_int_equal(clopt_rule_from_name(name, &back), CLOPT_SUCCESS);
        assert_int_equal(back, r);
        clopt_hparams hp;
        assert_int_equal(clopt_hparams_default((clopt_rule)r, &hp), CLOPT_SUCCESS);
        assert_int_equal(clopt_hparams_validate((clopt_rule)r, &hp, NULL), CLOPT_SUCCESS);
        size_t ns = clopt_rule_state_count((clopt_rule)r, &hp);
        assert_true(ns <= CLOPT_MAX_STATE);
        for (size_t i = 0; i < ns; i++)
            assert_non_null(clopt_rule_state_name((clopt_rule)r, &hp, i));
        assert_null(clopt_rule_state_name((clopt_rule)r, &hp, ns));
        assert_true(clopt_rule_bytes_per_param((clopt_rule)r, &hp) >= 12);
    }
    assert_null(clopt_rule_name(CLOPT_RULE_COUNT));
    clopt_rule r;
    assert_int_equal(clopt_rule_from_name("adamz", &r), CLOPT_ERR_INVALID_ARGUMENT);
    /* the memory model of the issue: AdamW 28 bytes, AMSGrad 36, SGD momentum 20, plain 12 */
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    assert_int_equal(clopt_rule_bytes_per_param(CLOPT_ADAMW, &hp), 28);
    hp.amsgrad = 1;
    assert_int_equal(clopt_rule_bytes_per_param(CLOPT_ADAMW, &hp), 36);
    clopt_hparams_default(CLOPT_SGD, &hp);
    assert_int_equal(clopt_rule_bytes_per_param(CLOPT_SGD, &hp), 12);
    hp.momentum = 0.9;
    assert_int_equal(clopt_rule_bytes_per_param(CLOPT_SGD, &hp), 20);
    /* Adafactor (matrix): g for the statistics, g θ for the partial sums, g θ -> θ; with
       beta1 its m read and written in the update */
    clopt_hparams_default(CLOPT_ADAFACTOR, &hp);
    assert_int_equal(clopt_rule_bytes_per_param(CLOPT_ADAFACTOR, &hp), 24);
    hp.use_beta1 = 1;
    assert_int_equal(clopt_rule_bytes_per_param(CLOPT_ADAFACTOR, &hp), 32);
}

/* The OpenCL type of a context's device. */
static cl_device_type ctx_type(const clopt_ctx *ctx)
{
    cl_device_type t = 0;
    assert_int_equal(clGetDeviceInfo(clopt_ctx_cl_device(ctx), CL_DEVICE_TYPE, sizeof t, &t, NULL),
                     CL_SUCCESS);
    return t;
}

/* Whether any device of the machine has type t. */
static int have_type(cl_device_type t)
{
    cl_platform_id plat[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, plat, &np) != CL_SUCCESS)
        return 0;
    for (cl_uint p = 0; p < np && p < 16; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plat[p], t, 0, NULL, &nd) == CL_SUCCESS && nd > 0)
            return 1;
    }
    return 0;
}

/* "cpu", "gpu", "accelerator" in any case pick the first device of that type, or fail with
   a reason naming the type and listing the devices. */
static void test_select_by_type(void **state)
{
    (void)state;
    static const struct {
        const char *selector, *upper;
        cl_device_type type;
    } cases[] = {{"cpu", "CPU", CL_DEVICE_TYPE_CPU},
                 {" Cpu ", "CPU", CL_DEVICE_TYPE_CPU},
                 {"GPU", "GPU", CL_DEVICE_TYPE_GPU},
                 {"accelerator", "accelerator", CL_DEVICE_TYPE_ACCELERATOR},
                 {"ACCELERATOR", "accelerator", CL_DEVICE_TYPE_ACCELERATOR}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clopt_ctx *ctx = (clopt_ctx *)&ctx;
        char why[1024] = "stale";
        clopt_status s = clopt_ctx_create_device_ex(cases[i].selector, &ctx, why, sizeof why);
        if (have_type(cases[i].type)) {
            assert_int_equal(s, CLOPT_SUCCESS);
            assert_true(ctx_type(ctx) & cases[i].type);
            assert_string_equal(why, "");
            clopt_ctx_destroy(ctx);
            assert_int_equal(clopt_ctx_create_device(cases[i].selector, &ctx), CLOPT_SUCCESS);
            assert_true(ctx_type(ctx) & cases[i].type);
            clopt_ctx_destroy(ctx);
        } else {
            assert_int_equal(s, CLOPT_ERR_NO_DEVICE);
            assert_null(ctx);
            char expect[64];
            snprintf(expect, sizeof expect, "no %s device among ", cases[i].upper);
            assert_non_null(strstr(why, expect));
            assert_non_null(strstr(why, "selector=\""));
            assert_non_null(strstr(why, " 0: ")); /* the device list */
        }
    }
    /* PoCL's CPU device is called "pthread-<cpu>" (PoCL 3) or "cpu-<cpu>" (older): "cpu"
       must find it by type whatever the name is */
    if (have_type(CL_DEVICE_TYPE_CPU)) {
        clopt_ctx *ctx = NULL;
        assert_int_equal(clopt_ctx_create_device("cPu", &ctx), CLOPT_SUCCESS);
        assert_true(ctx_type(ctx) & CL_DEVICE_TYPE_CPU);
        clopt_ctx_destroy(ctx);
    }
}

static int contains_lower(const char *hay, const char *needle)
{
    char buf[512];
    size_t i = 0;
    for (; hay[i] && i + 1 < sizeof buf; i++)
        buf[i] = (char)((hay[i] >= 'A' && hay[i] <= 'Z') ? hay[i] + 32 : hay[i]);
    buf[i] = '\0';
    return strstr(buf, needle) != NULL;
}

/* "pocl" finds PoCL through its platform vendor ("The pocl project") or version ("PoCL
   3.1"), though neither the device name nor the platform name contains it. */
static void test_select_pocl(void **state)
{
    (void)state;
    cl_platform_id plat[16];
    cl_uint np = 0;
    assert_int_equal(clGetPlatformIDs(16, plat, &np), CL_SUCCESS);
    int pocl = 0;
    for (cl_uint p = 0; p < np && p < 16; p++) {
        char vendor[256] = "", version[256] = "";
        clGetPlatformInfo(plat[p], CL_PLATFORM_VENDOR, sizeof vendor - 1, vendor, NULL);
        clGetPlatformInfo(plat[p], CL_PLATFORM_VERSION, sizeof version - 1, version, NULL);
        cl_uint nd = 0;
        if ((contains_lower(vendor, "pocl") || contains_lower(version, "pocl")) &&
            clGetDeviceIDs(plat[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) == CL_SUCCESS && nd > 0)
            pocl = 1;
    }
    clopt_ctx *ctx = (clopt_ctx *)&ctx;
    char why[512];
    clopt_status s = clopt_ctx_create_device_ex("POCL", &ctx, why, sizeof why);
    if (!pocl) {
        assert_int_equal(s, CLOPT_ERR_NO_DEVICE);
        assert_null(ctx);
        skip();
    }
    assert_int_equal(s, CLOPT_SUCCESS);
    cl_platform_id p = NULL;
    assert_int_equal(clGetDeviceInfo(clopt_ctx_cl_device(ctx), CL_DEVICE_PLATFORM, sizeof p, &p,
                                     NULL),
                     CL_SUCCESS);
    char vendor[256] = "", version[256] = "";
    clGetPlatformInfo(p, CL_PLATFORM_VENDOR, sizeof vendor - 1, vendor, NULL);
    clGetPlatformInfo(p, CL_PLATFORM_VERSION, sizeof version - 1, version, NULL);
    assert_true(contains_lower(vendor, "pocl") || contains_lower(version, "pocl"));
    clopt_ctx_destroy(ctx);
}

/* A failed creation keeps its reason: in the caller's buffer, truncated to its size, naming
   where the selector came from and listing the devices. */
static void test_create_failure_reason(void **state)
{
    (void)state;
    clopt_ctx *ctx = (clopt_ctx *)&ctx;
    char why[1024];
    assert_int_equal(clopt_ctx_create_device_ex("no such device anywhere", &ctx, why, sizeof why),
                     CLOPT_ERR_NO_DEVICE);
    assert_null(ctx);
    assert_non_null(strstr(why, "selector=\"no such device anywhere\": "));
    assert_non_null(strstr(why, " device(s): 0: "));
    assert_non_null(strstr(why, "(")); /* the platform name of each device */

    ctx = (clopt_ctx *)&ctx;
    assert_int_equal(clopt_ctx_create_device_ex("999", &ctx, why, sizeof why), CLOPT_ERR_NO_DEVICE);
    assert_null(ctx);
    assert_non_null(strstr(why, "device index 999 out of range"));

    /* truncated, still terminated; NULL or empty buffers are allowed */
    char small[12];
    memset(small, 'x', sizeof small);
    assert_int_equal(clopt_ctx_create_device_ex("no such device", &ctx, small, sizeof small),
                     CLOPT_ERR_NO_DEVICE);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(clopt_ctx_create_device_ex("no such device", &ctx, NULL, 100),
                     CLOPT_ERR_NO_DEVICE);
    assert_int_equal(clopt_ctx_create_device_ex("no such device", &ctx, small, 0),
                     CLOPT_ERR_NO_DEVICE);
    assert_int_equal(clopt_ctx_create_device_ex("0", NULL, why, sizeof why),
                     CLOPT_ERR_NULL_ARGUMENT);
    assert_true(strlen(why) > 0);

    /* NULL reads CLOPT_DEVICE, and the reason says so; "" is the default rules */
    const char *saved = getenv("CLOPT_DEVICE");
    char *copy = saved ? strdup(saved) : NULL;
    assert_int_equal(setenv("CLOPT_DEVICE", "no such device either", 1), 0);
    ctx = (clopt_ctx *)&ctx;
    assert_int_equal(clopt_ctx_create_device_ex(NULL, &ctx, why, sizeof why), CLOPT_ERR_NO_DEVICE);
    assert_null(ctx);
    assert_non_null(strstr(why, "CLOPT_DEVICE=\"no such device either\": "));
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_ERR_NO_DEVICE);
    assert_int_equal(clopt_ctx_create_device_ex("", &ctx, why, sizeof why), CLOPT_SUCCESS);
    assert_string_equal(why, "");
    clopt_ctx_destroy(ctx);
    if (copy)
        assert_int_equal(setenv("CLOPT_DEVICE", copy, 1), 0);
    else
        assert_int_equal(unsetenv("CLOPT_DEVICE"), 0);
    free(copy);
    assert_int_equal(clopt_ctx_create_device_ex(NULL, &ctx, why, sizeof why), CLOPT_SUCCESS);
    clopt_ctx_destroy(ctx);
}

/* OpenCL pass-through codes have their names up to OpenCL 3.0 and for the common KHR/vendor
   extensions, with values spelled out (the library is built against the 1.2 API). */
static void test_status_names(void **state)
{
    (void)state;
    static const struct {
        int cl;
        const char *name;
    } codes[] = {{-1, "CL_DEVICE_NOT_FOUND"},
                 {-5, "CL_OUT_OF_RESOURCES"},
                 {-11, "CL_BUILD_PROGRAM_FAILURE"},
                 {-14, "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST"},
                 {-15, "CL_COMPILE_PROGRAM_FAILURE"},
                 {-16, "CL_LINKER_NOT_AVAILABLE"},
                 {-17, "CL_LINK_PROGRAM_FAILURE"},
                 {-18, "CL_DEVICE_PARTITION_FAILED"},
                 {-19, "CL_KERNEL_ARG_INFO_NOT_AVAILABLE"},
                 {-30, "CL_INVALID_VALUE"},
                 {-68, "CL_INVALID_DEVICE_PARTITION_COUNT"},
                 {-69, "CL_INVALID_PIPE_SIZE"},
                 {-70, "CL_INVALID_DEVICE_QUEUE"},
                 {-71, "CL_INVALID_SPEC_ID"},
                 {-72, "CL_MAX_SIZE_RESTRICTION_EXCEEDED"},
                 {-1000, "CL_INVALID_GL_SHAREGROUP_REFERENCE_KHR"},
                 {-1001, "CL_PLATFORM_NOT_FOUND_KHR"},
                 {-1057, "CL_DEVICE_PARTITION_FAILED_EXT"},
                 {-1093, "CL_INVALID_EGL_OBJECT_KHR"},
                 {-1121, "CL_CONTEXT_TERMINATED_KHR"},
                 {-1138, "CL_INVALID_COMMAND_BUFFER_KHR"},
                 {-1142, "CL_INVALID_SEMAPHORE_KHR"}};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        clopt_status s = (clopt_status)((int)CLOPT_ERR_OPENCL_BASE + codes[i].cl);
        assert_true(clopt_status_is_opencl(s));
        assert_int_equal(clopt_status_cl_error(s), codes[i].cl);
        assert_string_equal(clopt_status_name(s), codes[i].name);
        char text[128];
        snprintf(text, sizeof text, "OpenCL error %s (%d)", codes[i].name, codes[i].cl);
        assert_string_equal(clopt_status_str(s), text);
    }
    /* the 1.2 header's values agree with the table */
    assert_string_equal(clopt_status_name((clopt_status)((int)CLOPT_ERR_OPENCL_BASE +
                                                         CL_INVALID_KERNEL_ARGS)),
                        "CL_INVALID_KERNEL_ARGS");
    /* a code without a name */
    clopt_status unknown = (clopt_status)((int)CLOPT_ERR_OPENCL_BASE - 9000);
    assert_true(clopt_status_is_opencl(unknown));
    assert_string_equal(clopt_status_name(unknown), "CL_UNKNOWN_ERROR");
    assert_non_null(strstr(clopt_status_str(unknown), "OpenCL"));
    /* clopt's own codes and codes outside every range */
    assert_string_equal(clopt_status_name(CLOPT_ERR_NO_DEVICE), "CLOPT_ERR_NO_DEVICE");
    assert_false(clopt_status_is_opencl(CLOPT_ERR_NO_DEVICE));
    assert_string_equal(clopt_status_name((clopt_status)-55), "CLOPT_UNKNOWN_STATUS");
    assert_string_equal(clopt_status_str((clopt_status)-55), "unknown status code");
    assert_int_equal(clopt_status_cl_error(CLOPT_SUCCESS), CL_SUCCESS);
}

/* clopt_version() is the header's version for a library built from this tree. */
static void test_version(void **state)
{
    (void)state;
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", CLOPT_VERSION_MAJOR, CLOPT_VERSION_MINOR,
             CLOPT_VERSION_PATCH);
    assert_string_equal(clopt_version(), expect);
    assert_int_equal(clopt_version_number(), CLOPT_VERSION_NUMBER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_context),
        cmocka_unit_test(test_selectors),
        cmocka_unit_test(test_caller_context_and_two_contexts),
        cmocka_unit_test(test_build_failure_has_log),
        cmocka_unit_test(test_build_options),
        cmocka_unit_test(test_disk_cache),
        cmocka_unit_test(test_tuning),
        cmocka_unit_test(test_rule_names),
        cmocka_unit_test(test_select_by_type),
        cmocka_unit_test(test_select_pocl),
        cmocka_unit_test(test_create_failure_reason),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
