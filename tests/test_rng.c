/* SPDX-License-Identifier: MIT */
/* The device RNG against published and independent values: kernels/hessian.cl's
 * philox4x32_10 against Random123's known-answer vectors (a test kernel built from the source
 * tree writes the raw words), the randn kernel's counter and key layout and Box-Muller against
 * a host Philox in C, the optimizer's counter, and Sophia with Hutchinson estimates resumed
 * from a checkpoint drawing exactly what the uninterrupted run draws. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clopt.h"
#include "fixture.h"
#include "ref.h"

/* kernels/ next to tests/data in the source tree */
#define KERNEL_DIR CLOPT_TEST_DATA_DIR "/../../kernels"

/* ---- Philox-4x32-10 on the host ---------------------------------------------------------- */

/* Random123's tests/kat_vectors, philox4x32 10 (the same three tuples are in TensorFlow's
   and other ports' tests): counter, key, result. */
static const uint32_t kat[3][10] = {
    {0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x6627e8d5,
     0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
    {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
     0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
    {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
     0x94fdcceb, 0x5001e420, 0x24126ea1},
};

/* Tiny deterministic words for the bulk comparisons (splitmix64). */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void test_host_philox_kat(void **state)
{
    (void)state;
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        ref_philox4x32_10(kat[v], kat[v] + 4, out);
        assert_memory_equal(out, kat[v] + 6, sizeof out);
    }
}

/* ---- the device's philox4x32_10 ----------------------------------------------------------- */

static char *slurp_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fprintf(stderr, "cannot open %s\n", path);
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *d = malloc(*len + 1);
    assert_int_equal(fread(d, 1, *len, f), *len);
    d[*len] = 0;
    fclose(f);
    return d;
}

/* The program the library builds for the "hessian" family (common.cl, storage.cl, chunks.cl,
   then hessian.cl, read from the source tree) plus a kernel that returns philox4x32_10's raw
   words. */
static const char kat_kernel[] =
    "\n__kernel void philox_raw(__global const uint *ctr, __global const uint *key,\n"
    "                         __global uint *out)\n"
    "{\n"
    "    const size_t i = get_global_id(0);\n"
    "    vstore4(philox4x32_10(vload4(i, ctr), vload2(i, key)), i, out);\n"
    "}\n";

static void test_device_philox_kat(void **state)
{
    fixture *f = *state;
    size_t lens[5];
    char *texts[5];
    texts[0] = slurp_text(KERNEL_DIR "/common.cl", &lens[0]);
    texts[1] = slurp_text(KERNEL_DIR "/storage.cl", &lens[1]);
    texts[2] = slurp_text(KERNEL_DIR "/chunks.cl", &lens[2]);
    texts[3] = slurp_text(KERNEL_DIR "/hessian.cl", &lens[3]);
    texts[4] = (char *)kat_kernel;
    lens[4] = sizeof kat_kernel - 1;
    cl_context cx = clopt_ctx_cl_context(f->ctx);
    cl_device_id dev = clopt_ctx_cl_device(f->ctx);
    cl_command_queue q = clopt_ctx_cl_queue(f->ctx);
    cl_int err;
    cl_program prog = clCreateProgramWithSource(cx, 5, (const char **)texts, lens, &err);
    assert_int_equal(err, CL_SUCCESS);
    err = clBuildProgram(prog, 1, &dev, "", NULL, NULL);
    if (err != CL_SUCCESS) {
        char log[4096] = "";
        clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        fprintf(stderr, "build: %d\n%s\n", (int)err, log);
    }
    assert_int_equal(err, CL_SUCCESS);
    cl_kernel k = clCreateKernel(prog, "philox_raw", &err);
    assert_int_equal(err, CL_SUCCESS);

    /* the three vectors, then 509 more (counter, key) pairs against the host Philox, which
       the known answers vouch for */
    enum { NV = 512 };
    static uint32_t ctr[NV][4], key[NV][2], out[NV][4], want[NV][4];
    uint64_t s = 2024;
    for (int i = 0; i < NV; i++) {
        for (int j = 0; j < 4; j++)
            ctr[i][j] = i < 3 ? kat[i][j] : (uint32_t)mix(&s);
        for (int j = 0; j < 2; j++)
            key[i][j] = i < 3 ? kat[i][4 + j] : (uint32_t)mix(&s);
        if (i < 3)
            memcpy(want[i], kat[i] + 6, sizeof want[i]);
        else
            ref_philox4x32_10(ctr[i], key[i], want[i]);
    }
    cl_mem bc = clCreateBuffer(cx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof ctr, ctr, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem bk = clCreateBuffer(cx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof key, key, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem bo = clCreateBuffer(cx, CL_MEM_WRITE_ONLY, sizeof out, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    assert_int_equal(clSetKernelArg(k, 0, sizeof bc, &bc), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(k, 1, sizeof bk, &bk), CL_SUCCESS);
    assert_int_equal(clSetKernelArg(k, 2, sizeof bo, &bo), CL_SUCCESS);
    size_t global = NV;
    assert_int_equal(clEnqueueNDRangeKernel(q, k, 1, NULL, &global, NULL, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(q, bo, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL),
                     CL_SUCCESS);
    for (int i = 0; i < NV; i++)
        if (memcmp(out[i], want[i], sizeof out[i]) != 0) {
            fprintf(stderr, "philox %d: got %08x %08x %08x %08x want %08x %08x %08x %08x\n", i,
                    out[i][0], out[i][1], out[i][2], out[i][3], want[i][0], want[i][1],
                    want[i][2], want[i][3]);
            fail();
        }
    clReleaseMemObject(bc), clReleaseMemObject(bk), clReleaseMemObject(bo);
    clReleaseKernel(k);
    clReleaseProgram(prog);
    free(texts[0]), free(texts[1]), free(texts[2]), free(texts[3]);
}

/* ---- the randn kernel: layout and transform ----------------------------------------------- */

/* out[4i .. 4i+3] as the header and hessian.cl document them, in double: Philox of the counter
   (lo32(c), hi32(c), 0, 0), c = counter_base + i, key (lo32(seed), hi32(seed)); Box-Muller on
   the words' top 24 bits. */
static void randn_want(uint64_t seed, uint64_t counter_base, size_t n, double *want)
{
    const double two_pi = 6.28318530717958647692;
    for (size_t i = 0; 4 * i < n; i++) {
        const uint64_t c = counter_base + i;
        const uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), 0, 0};
        const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
        uint32_t x[4];
        ref_philox4x32_10(ctr, key, x);
        for (int h = 0; h < 2; h++) {
            double u1 = ((x[2 * h] >> 8) + 1.0) / 16777216.0, u2 = (x[2 * h + 1] >> 8) / 16777216.0;
            double r = sqrt(-2.0 * log(u1)), z[2] = {r * cos(two_pi * u2), r * sin(two_pi * u2)};
            for (int j = 0; j < 2; j++)
                if (4 * i + 2 * h + j < n)
                    want[4 * i + 2 * h + j] = z[j];
        }
    }
}

/* float log/sqrt/cos (a few ulp each in OpenCL C) on r <= sqrt(2·24·ln 2) < 5.8 */
static void assert_draws(const float *got, const double *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= 2e-5 + 1e-5 * fabs(want[i]))) {
            fprintf(stderr, "%s: [%zu] got %.9g want %.9g\n", what, i, (double)got[i], want[i]);
            fail();
        }
}

static void test_randn_layout(void **state)
{
    fixture *f = *state;
    enum { N = 27, PAD = 5 };
    const float sentinel = 12345.0f;
    float host[N + PAD];
    double want[N];
    const struct {
        uint64_t seed, counter;
        size_t n;
    } cases[] = {
        {0, 0, 4},                                          /* Random123's first vector */
        {0x0123456789abcdefull, 0, N},                      /* both key words */
        {7, 0xfffffffeull, N},                              /* the counter carries to word 1 */
        {0xffffffffffffffffull, 0xfffffffffffffffcull, N},  /* and wraps at 2^64 */
        {42, 1000, 1},                                      /* n < 4 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t i = 0; i < N + PAD; i++)
            host[i] = sentinel;
        cl_mem b = upload(f->ctx, host, N + PAD);
        assert_int_equal(clopt_enqueue_randn(f->ctx, NULL, (clopt_tensor){b, 1}, cases[c].n,
                                             cases[c].seed, cases[c].counter, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        read_at(f->ctx, (clopt_tensor){b, 0}, host, N + PAD);
        randn_want(cases[c].seed, cases[c].counter, cases[c].n, want);
        char what[64];
        snprintf(what, sizeof what, "randn case %zu", c);
        assert_draws(host + 1, want, cases[c].n, what);
        /* nothing outside [offset, offset + n) is written */
        assert_true(host[0] == sentinel);
        for (size_t i = 1 + cases[c].n; i < N + PAD; i++)
            assert_true(host[i] == sentinel);
        clReleaseMemObject(b);
    }
    /* the first vector's words by hand (bc -l): u1 = (0x6627e8 + 1) 2^-24 = 0.3990464807,
       r = sqrt(-2 ln u1) = 1.3554905946, u2 = 0xe169c5 2^-24 = 0.8805201650, r cos(2π u2) =
       0.9911374751, r sin(2π u2) = -0.9246627804 */
    randn_want(0, 0, 4, want);
    assert_true(fabs(want[0] - 0.9911374751) < 1e-9);
    assert_true(fabs(want[1] + 0.9246627804) < 1e-9);
}

/* The optimizer's stream: randn(n) advances the counter by ceil(n/4), seed resets it. */
static void test_optimizer_counter(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SOPHIA, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SOPHIA, &hp, &opt), CLOPT_SUCCESS);
    const uint64_t seed = 0xfeedface12345678ull;
    assert_int_equal(clopt_optimizer_seed(opt, seed), CLOPT_SUCCESS);
    cl_mem b = upload(f->ctx, NULL, 64);
    float got[64];
    double want[64];
    /* counters 0-1 (5 draws), 2-3 (8), 4 (1), 5-... */
    const size_t ns[4] = {5, 8, 1, 13};
    uint64_t counter = 0;
    for (int k = 0; k < 4; k++) {
        assert_int_equal(clopt_optimizer_randn(opt, (clopt_tensor){b, 0}, ns[k]), CLOPT_SUCCESS);
        read_at(f->ctx, (clopt_tensor){b, 0}, got, ns[k]);
        randn_want(seed, counter, ns[k], want);
        assert_draws(got, want, ns[k], "optimizer randn");
        counter += (ns[k] + 3) / 4;
    }
    assert_int_equal(clopt_optimizer_seed(opt, seed), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_randn(opt, (clopt_tensor){b, 0}, 4), CLOPT_SUCCESS);
    read_at(f->ctx, (clopt_tensor){b, 0}, got, 4);
    randn_want(seed, 0, 4, want);
    assert_draws(got, want, 4, "after seed");
    clReleaseMemObject(b);
    clopt_optimizer_destroy(opt);
}

/* ---- checkpoint round trip ---------------------------------------------------------------- */

/* An engine training Sophia with Hutchinson estimates: before every step u ~ N(0, I) from the
   optimizer's stream, Hu for the diagonal Hessian d (hutchinson(u, d) = u ⊙ d), ĥ =
   hutchinson(u, Hu) into the buffer the optimizer folds in every hess_interval-th step. */
enum { SN = 1001, SK = 3 };

typedef struct sophia_run {
    clopt_ctx *ctx;
    clopt_optimizer *opt;
    cl_mem p, g, h, u, hu, d;
} sophia_run;

static void sophia_build(sophia_run *m, clopt_ctx *ctx)
{
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SOPHIA, &hp);
    hp.hess_interval = SK;
    hp.lr = 1e-2;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SOPHIA, &hp, &m->opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_seed(m->opt, 0x5eed), CLOPT_SUCCESS);
    static float buf[SN];
    uint64_t s = 11;
    for (int i = 0; i < SN; i++)
        buf[i] = (float)((double)(mix(&s) >> 11) / 9007199254740992.0 - 0.5);
    m->p = upload(ctx, buf, SN);
    for (int i = 0; i < SN; i++)
        buf[i] = 0.5f + (float)(i % 7);
    m->d = upload(ctx, buf, SN);
    m->g = upload(ctx, NULL, SN);
    m->h = upload(ctx, NULL, SN);
    m->u = upload(ctx, NULL, SN);
    m->hu = upload(ctx, NULL, SN);
    clopt_tensor ht = {m->h, 0};
    assert_int_equal(clopt_optimizer_add_param(m->opt, (clopt_tensor){m->p, 0},
                                               (clopt_tensor){m->g, 0}, SN, &ht, NULL),
                     CLOPT_SUCCESS);
}

/* Steps t0+1 .. t1; the gradients depend only on the step number. */
static void sophia_steps(sophia_run *m, uint64_t t0, uint64_t t1)
{
    static float buf[SN];
    for (uint64_t t = t0 + 1; t <= t1; t++) {
        uint64_t s = 500 + t;
        for (int i = 0; i < SN; i++)
            buf[i] = (float)((double)(mix(&s) >> 11) / 9007199254740992.0 - 0.5);
        write_at(m->ctx, (clopt_tensor){m->g, 0}, buf, SN);
        clopt_tensor u = {m->u, 0}, hu = {m->hu, 0};
        assert_int_equal(clopt_optimizer_randn(m->opt, u, SN), CLOPT_SUCCESS);
        assert_int_equal(clopt_enqueue_hutchinson(m->ctx, NULL, u, (clopt_tensor){m->d, 0}, hu,
                                                  SN, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        assert_int_equal(clopt_enqueue_hutchinson(m->ctx, NULL, u, hu, (clopt_tensor){m->h, 0},
                                                  SN, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(m->opt, NULL), CLOPT_SUCCESS);
    }
}

/* Parameters, every state tensor, then the next SN draws of the optimizer's stream. */
static float *sophia_snapshot(sophia_run *m, size_t *count)
{
    size_t ns = clopt_optimizer_state_count(m->opt, 0);
    float *out = malloc((2 + ns) * SN * sizeof *out);
    read_at(m->ctx, (clopt_tensor){m->p, 0}, out, SN);
    for (size_t k = 0; k < ns; k++)
        assert_int_equal(clopt_optimizer_read_state(m->opt, 0, k, out + (1 + k) * SN, SN),
                         CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_randn(m->opt, (clopt_tensor){m->u, 0}, SN), CLOPT_SUCCESS);
    read_at(m->ctx, (clopt_tensor){m->u, 0}, out + (1 + ns) * SN, SN);
    *count = (2 + ns) * SN;
    return out;
}

static void sophia_free(sophia_run *m)
{
    clopt_optimizer_destroy(m->opt);
    cl_mem all[6] = {m->p, m->g, m->h, m->u, m->hu, m->d};
    for (int i = 0; i < 6; i++)
        clReleaseMemObject(all[i]);
}

/* 14 steps straight; 7 steps, save (bytes, and a file), load into a fresh optimizer in
   another context, the engine restores its parameters, 7 more steps: the same parameters,
   Sophia's exp_avg and hessian, and the same next draws, bit for bit. The Hessian refreshes
   at steps 3, 6 | 9, 12 straddle the save, so the resumed h depends on the restored stream. */
static void test_sophia_resume(void **state)
{
    (void)state;
    char dir[] = "/tmp/clopt-rng-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    clopt_ctx *c1, *c2;
    assert_int_equal(clopt_ctx_create(&c1), CLOPT_SUCCESS);
    assert_int_equal(clopt_ctx_create(&c2), CLOPT_SUCCESS);
    sophia_run straight, first;
    sophia_build(&straight, c1);
    sophia_steps(&straight, 0, 14);
    size_t nref;
    float *ref = sophia_snapshot(&straight, &nref);
    sophia_build(&first, c1);
    sophia_steps(&first, 0, 7);
    static float params[SN];
    read_at(c1, (clopt_tensor){first.p, 0}, params, SN);
    size_t len;
    assert_int_equal(clopt_optimizer_state_size(first.opt, NULL, &len), CLOPT_SUCCESS);
    unsigned char *bytes = malloc(len);
    assert_int_equal(clopt_optimizer_save_to(first.opt, NULL, bytes, len, &len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_save(first.opt, path), CLOPT_SUCCESS);
    for (int via = 0; via < 2; via++) {
        sophia_run second;
        sophia_build(&second, c2);
        /* not vacuous: the fresh optimizer is at counter 0 and draws something else */
        if (via == 0) {
            size_t n0;
            float *fresh = sophia_snapshot(&second, &n0);
            assert_true(memcmp(fresh + n0 - SN, ref + nref - SN, SN * sizeof(float)) != 0);
            free(fresh);
        }
        assert_int_equal(via == 0 ? clopt_optimizer_load_from(second.opt, bytes, len)
                                  : clopt_optimizer_load(second.opt, path),
                         CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step_count(second.opt), 7);
        write_at(c2, (clopt_tensor){second.p, 0}, params, SN);
        sophia_steps(&second, 7, 14);
        size_t n;
        float *got = sophia_snapshot(&second, &n);
        assert_int_equal(n, nref);
        assert_memory_equal(got, ref, n * sizeof *got);
        free(got);
        sophia_free(&second);
    }
    /* the layout-only bytes (no state tensors) carry the RNG position too */
    clopt_save_options o;
    clopt_save_options_init(&o);
    o.state_tensors = 0;
    size_t len0;
    assert_int_equal(clopt_optimizer_state_size(first.opt, &o, &len0), CLOPT_SUCCESS);
    unsigned char *layout = malloc(len0);
    assert_int_equal(clopt_optimizer_save_to(first.opt, &o, layout, len0, &len0), CLOPT_SUCCESS);
    sophia_run third;
    sophia_build(&third, c2);
    assert_int_equal(clopt_optimizer_load_from(third.opt, layout, len0), CLOPT_SUCCESS);
    float *a = sophia_snapshot(&first, &nref), *b = sophia_snapshot(&third, &nref);
    assert_memory_equal(a + nref - SN, b + nref - SN, SN * sizeof(float));
    free(a), free(b), free(layout), free(ref), free(bytes);
    sophia_free(&third), sophia_free(&first), sophia_free(&straight);
    clopt_ctx_destroy(c1), clopt_ctx_destroy(c2);
    remove(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_philox_kat),
        cmocka_unit_test(test_device_philox_kat),
        cmocka_unit_test(test_randn_layout),
        cmocka_unit_test(test_optimizer_counter),
        cmocka_unit_test(test_sophia_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
