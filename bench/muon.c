/* SPDX-License-Identifier: MIT */
/* clopt-bench-muon: a full Muon step at the optimizer level (one rows × cols tensor: the
 * momentum pass, the norm, ns_steps Newton-Schulz iterations of three CLBlast GEMMs, the
 * update) against the same GEMM sequence alone through CLBlast (same shapes and transpose
 * flags, same count, same queue), each timed to clFinish after warmup; the medians and their
 * ratio (step / GEMMs) are printed, one line per size.
 * usage: clopt-bench-muon [--size RxC[,RxC...]] [--reps N] [--warmup N] [--version]
 * default sizes 1024x1024,4096x1024,1024x4096; reps 5, warmup 1. Exit 1 on any failure. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clopt.h"

#define NS_STEPS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* n floats uniform in [-scale/2, scale/2). */
static cl_mem make_buffer(cl_context c, cl_command_queue q, size_t n, unsigned seed, double scale)
{
    cl_int err;
    cl_mem m = clCreateBuffer(c, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS)
        return NULL;
    float *h = malloc(n * sizeof(float));
    if (!h) {
        clReleaseMemObject(m);
        return NULL;
    }
    unsigned s = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = (float)(((double)(s >> 8) / 16777216.0 - 0.5) * scale);
    }
    err = clEnqueueWriteBuffer(q, m, CL_TRUE, 0, n * sizeof(float), h, 0, NULL, NULL);
    free(h);
    if (err != CL_SUCCESS) {
        clReleaseMemObject(m);
        return NULL;
    }
    return m;
}

static int gemm(cl_command_queue *q, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                cl_mem a, size_t lda, cl_mem b, size_t ldb, float beta, cl_mem c, size_t ldc)
{
    return CLBlastSgemm(CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
                        tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, alpha, a, 0, lda,
                        b, 0, ldb, beta, c, 0, ldc, q, NULL) == CLBlastSuccess
               ? 0
               : -1;
}

/* The GEMMs of one Muon step on an r × c matrix (host/muon.c's sequence), then clFinish. */
static int gemms_only(cl_command_queue q, size_t r, size_t c, cl_mem x[2], cl_mem a, cl_mem b)
{
    const int tall = r > c;
    const size_t m = tall ? c : r, big = tall ? r : c;
    for (int i = 0; i < NS_STEPS; i++) {
        cl_mem in = x[i & 1], out = x[(i & 1) ^ 1];
        int e = tall ? gemm(&q, 1, 0, m, m, big, 1.0f, in, m, in, m, 0.0f, a, m)
                     : gemm(&q, 0, 1, m, m, big, 1.0f, in, big, in, big, 0.0f, a, m);
        e |= gemm(&q, 0, 0, m, m, m, 2.0315f, a, m, a, m, 1.0f, b, m);
        e |= tall ? gemm(&q, 0, 1, big, m, m, 1.0f, in, m, b, m, 0.0f, out, m)
                  : gemm(&q, 0, 0, m, big, m, 1.0f, b, m, in, big, 0.0f, out, big);
        if (e)
            return -1;
    }
    return clFinish(q) == CL_SUCCESS ? 0 : -1;
}

static int bench_size(clopt_ctx *ctx, size_t r, size_t c, int reps, int warmup)
{
    cl_context cc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    const size_t n = r * c, m = r < c ? r : c;
    /* the GEMMs alone start from X with ‖X‖_F about 1, as the step's; without muon_poly their
       B is never reset, so values grow over the repetitions and may reach Inf/NaN, which
       vector units take at full speed (only subnormals would be slow, and growth makes none) */
    const double unit = sqrt(12.0 / (double)n);
    cl_mem p = make_buffer(cc, q, n, 1, 1.0), g = make_buffer(cc, q, n, 2, 1.0);
    cl_mem x[2] = {make_buffer(cc, q, n, 3, unit), make_buffer(cc, q, n, 4, unit)};
    cl_mem a = make_buffer(cc, q, m * m, 5, 1.0), b = make_buffer(cc, q, m * m, 6, 1.0);
    clopt_optimizer *opt = NULL;
    clopt_hparams hp;
    int rc = -1;
    double *ts = malloc(sizeof(double) * (size_t)reps), *tg = malloc(sizeof(double) * (size_t)reps);
    if (!p || !g || !x[0] || !x[1] || !a || !b || !ts || !tg)
        goto done;
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 2;
    d.shape[0] = r;
    d.shape[1] = c;
    if (clopt_hparams_default(CLOPT_MUON, &hp) != CLOPT_SUCCESS ||
        clopt_optimizer_create(ctx, CLOPT_MUON, &hp, &opt) != CLOPT_SUCCESS ||
        clopt_optimizer_add_param_desc(opt, 0, &d, NULL) != CLOPT_SUCCESS ||
        clopt_optimizer_prepare(opt) != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-bench-muon: %s\n", clopt_ctx_last_error(ctx));
        goto done;
    }
    /* warmup (CLBlast compiles its kernels at the first use of each shape class) */
    for (int i = 0; i < warmup; i++)
        if (clopt_optimizer_step(opt, NULL) != CLOPT_SUCCESS || clFinish(q) != CL_SUCCESS ||
            gemms_only(q, r, c, x, a, b))
            goto fail;
    /* alternate the two so that drift (thermal, other load) hits both alike */
    for (int i = 0; i < reps; i++) {
        double t0 = now_s();
        if (clopt_optimizer_step(opt, NULL) != CLOPT_SUCCESS || clFinish(q) != CL_SUCCESS)
            goto fail;
        ts[i] = now_s() - t0;
        t0 = now_s();
        if (gemms_only(q, r, c, x, a, b))
            goto fail;
        tg[i] = now_s() - t0;
    }
    const double ms = 1e3 * median(ts, reps), mg = 1e3 * median(tg, reps);
    printf("%5zux%-5zu  muon step %10.3f ms   %d GEMMs alone %10.3f ms   ratio %.3f\n", r, c,
           ms, 3 * NS_STEPS, mg, ms / mg);
    fflush(stdout);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "clopt-bench-muon: a step or a GEMM failed at %zux%zu: %s\n", r, c,
            clopt_ctx_last_error(ctx));
done:
    clopt_optimizer_destroy(opt);
    cl_mem all[] = {p, g, x[0], x[1], a, b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    free(ts);
    free(tg);
    return rc;
}

int main(int argc, char **argv)
{
    const char *sizes = "1024x1024,4096x1024,1024x4096";
    int reps = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("clopt-bench-muon %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
                   CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
            return 0;
        } else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
            sizes = argv[++i];
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) {
            warmup = atoi(argv[++i]);
        } else {
            const int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr,
                    "usage: clopt-bench-muon [--size RxC[,RxC...]] [--reps N] [--warmup N] "
                    "[--version]\n  RxC: a matrix of R rows and C columns, each 1 .. 65536\n");
            return help ? 0 : 2;
        }
    }
    if (reps < 1 || warmup < 0) {
        fprintf(stderr, "clopt-bench-muon: --reps must be >= 1 and --warmup >= 0\n");
        return 1;
    }
    if (!clopt_has_muon()) {
        fprintf(stderr, "clopt-bench-muon: the library was built without CLBlast\n");
        return 1;
    }
    clopt_ctx *ctx;
    if (clopt_ctx_create(&ctx) != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-bench-muon: no OpenCL context\n");
        return 1;
    }
    printf("clopt-bench-muon: %d Newton-Schulz steps, median of %d after %d warmup\n", NS_STEPS,
           reps, warmup);
    int rc = 0;
    for (const char *s = sizes; *s && rc == 0;) {
        char *end = NULL;
        const unsigned long r = *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : 0;
        if (r == 0 || *end != 'x' || !(end[1] >= '0' && end[1] <= '9')) {
            rc = 1;
            break;
        }
        const unsigned long c = strtoul(end + 1, &end, 10);
        if (c == 0 || r > 65536 || c > 65536 || (*end && *end != ',')) {
            rc = 1;
            break;
        }
        if (bench_size(ctx, r, c, reps, warmup))
            rc = 1;
        s = *end ? end + 1 : end;
    }
    if (rc)
        fprintf(stderr, "clopt-bench-muon: failed (bad --size or a failed run)\n");
    clopt_ctx_destroy(ctx);
    return rc;
}
