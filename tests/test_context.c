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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_context),
        cmocka_unit_test(test_selectors),
        cmocka_unit_test(test_caller_context_and_two_contexts),
        cmocka_unit_test(test_build_failure_has_log),
        cmocka_unit_test(test_disk_cache),
        cmocka_unit_test(test_tuning),
        cmocka_unit_test(test_rule_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
