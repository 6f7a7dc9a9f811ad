/* SPDX-License-Identifier: MIT */
/* Part of test_storage (main in test_storage.c): dst = beta·dst + alpha·src between storage
 * types (clopt_enqueue_axpby_ex) and clopt_optimizer_accumulate_grad into f16 and bf16
 * gradients, against test_storage.c's value-based round-to-nearest-even of the float32
 * result; what is refused leaves dst as it was. */
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

#include "clopt.h"
#include "fixture.h"
#include "test_storage.h"

static const fmt16 *fmt_of(clopt_dtype t)
{
    if (t == CLOPT_DTYPE_F16)
        return &F16;
    return t == CLOPT_DTYPE_BF16 ? &BF16 : NULL;
}

/* n random values in type t: the raw elements and their values */
static void fill(clopt_dtype t, uint64_t *s, void *raw, double *val, size_t n)
{
    const fmt16 *f = fmt_of(t);
    for (size_t i = 0; i < n; i++) {
        const double x = (2.0 * unif(s) - 1.0) * (i % 5 == 0 ? 1e-3 : 3.0);
        if (!f) {
            ((float *)raw)[i] = (float)x;
            val[i] = (float)x;
        } else {
            const uint16_t h = round16(f, x, 0);
            ((uint16_t *)raw)[i] = h;
            val[i] = val16(f, h);
        }
    }
}

/* Whether element i of got (type t) is alpha·s + beta·d as a float32 kernel computes it
   (unfused, or with either product fused into the sum: OpenCL C may contract), rounded to
   nearest even for a 16-bit t. */
static int matches(clopt_dtype t, const void *got, size_t i, float a, float s, float b, float d,
                   int beta0)
{
    float c[3];
    int nc = 1;
    const float p = a * s, q = b * d;
    if (beta0) {
        c[0] = p;
    } else {
        c[0] = p + q, c[1] = fmaf(b, d, p), c[2] = fmaf(a, s, q);
        nc = 3;
    }
    const fmt16 *f = fmt_of(t);
    for (int k = 0; k < nc; k++) {
        if (!f && f2u(((const float *)got)[i]) == f2u(c[k]))
            return 1;
        if (f && ((const uint16_t *)got)[i] == round16(f, (double)c[k], 0))
            return 1;
    }
    return 0;
}

enum { AN = 1001, AD = 3, AS = 5 };

/* Every pair of types but f32 with f32, beta 1, 0 (dst never read: it holds NaNs) and -0.5,
   dst at element 3 and src at element 5 of their buffers (the elements around them kept). */
void test_axpby_typed(void **state)
{
    fixture *f = *state;
    fmt_init(&F16), fmt_init(&BF16);
    const clopt_dtype types[] = {CLOPT_DTYPE_F32, CLOPT_DTYPE_F16, CLOPT_DTYPE_BF16};
    const double betas[] = {1.0, 0.0, -0.5};
    uint64_t s = 2024;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int b = 0; b < 3; b++) {
                const clopt_dtype dt = types[i], st = types[j];
                if (dt == CLOPT_DTYPE_F32 && st == CLOPT_DTYPE_F32)
                    continue;
                const size_t des = clopt_dtype_size(dt), ses = clopt_dtype_size(st);
                const size_t dlen = (AD + AN + 2) * des, slen = (AS + AN) * ses;
                unsigned char *draw = xmalloc(dlen), *sraw = xmalloc(slen), *got = xmalloc(dlen);
                double *dv = xmalloc((AD + AN + 2) * sizeof(double));
                double *sv = xmalloc((AS + AN) * sizeof(double));
                fill(dt, &s, draw, dv, AD + AN + 2);
                fill(st, &s, sraw, sv, AS + AN);
                if (betas[b] == 0.0) /* NaNs where dst is (0x7FC1 in f16 and bf16): never read */
                    for (size_t k = AD; k < AD + AN; k++) {
                        if (des == 4)
                            ((float *)draw)[k] = NAN;
                        else
                            ((uint16_t *)draw)[k] = 0x7FC1;
                    }
                cl_mem D = buf_new(f->ctx, dlen, draw), S = buf_new(f->ctx, slen, sraw);
                const float alpha = 0.37f, beta = (float)betas[b];
                clopt_status r = clopt_enqueue_axpby_ex(f->ctx, NULL, (clopt_tensor){D, AD}, dt,
                                                        (clopt_tensor){S, AS}, st, AN, alpha,
                                                        beta, 0, NULL, NULL);
                if (r != CLOPT_SUCCESS)
                    print_error("axpby %s <- %s: %s\n", clopt_dtype_name(dt),
                                clopt_dtype_name(st), clopt_ctx_last_error(f->ctx));
                assert_int_equal(r, CLOPT_SUCCESS);
                buf_read(f->ctx, D, 0, dlen, got);
                size_t bad = 0;
                for (size_t k = 0; k < AN; k++)
                    bad += !matches(dt, got, AD + k, alpha, (float)sv[AS + k], beta,
                                    (float)dv[AD + k], beta == 0.0f);
                if (bad)
                    print_error("axpby %s <- %s, beta %g: %zu of %d wrong\n",
                                clopt_dtype_name(dt), clopt_dtype_name(st), beta, bad, AN);
                assert_int_equal(bad, 0);
                assert_memory_equal(got, draw, AD * des); /* before and after dst */
                assert_memory_equal(got + (AD + AN) * des, draw + (AD + AN) * des, 2 * des);
                clReleaseMemObject(D), clReleaseMemObject(S);
                free(draw), free(sraw), free(got), free(dv), free(sv);
            }
}

/* In place (dst and src the same bf16 range): dst = (alpha + beta)·dst as alpha·x + beta·x.
   Refused with dst unchanged: a dtype out of range, overlapping ranges of two types. */
void test_axpby_typed_place(void **state)
{
    fixture *f = *state;
    fmt_init(&BF16);
    uint64_t s = 7;
    uint16_t raw[64], got[64];
    double v[64];
    fill(CLOPT_DTYPE_BF16, &s, raw, v, 64);
    cl_mem B = buf_new(f->ctx, sizeof raw, raw);
    const clopt_tensor t = {B, 4};
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_BF16, t,
                                            CLOPT_DTYPE_BF16, 50, 0.25, 2.0, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    buf_read(f->ctx, B, 0, sizeof got, got);
    for (size_t k = 4; k < 54; k++)
        assert_true(matches(CLOPT_DTYPE_BF16, got, k, 0.25f, (float)v[k], 2.0f, (float)v[k], 0));
    assert_memory_equal(got, raw, 4 * 2);
    assert_memory_equal(got + 54, raw + 54, 10 * 2);
    memcpy(raw, got, sizeof raw);
    /* refused, nothing written */
    assert_int_equal(clopt_enqueue_axpby_ex(NULL, NULL, t, CLOPT_DTYPE_BF16, t, CLOPT_DTYPE_F16,
                                            8, 1.0, 1.0, 0, NULL, NULL),
                     CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_U8, t,
                                            CLOPT_DTYPE_BF16, 8, 1.0, 1.0, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* finite doubles that are Inf as the kernel's floats */
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_BF16, t,
                                            CLOPT_DTYPE_BF16, 8, 1e39, 1.0, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_enqueue_axpby(f->ctx, NULL, t, t, 8, 1.0, -1e300, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_BF16, t,
                                            CLOPT_DTYPE_U16, 8, 1.0, 1.0, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* bf16 dst at elements 4..11 (bytes 8..24), f32 src from float 5 (bytes 20..52); f32
       ranges that overlap (the f32 path of clopt_enqueue_axpby takes any) */
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_BF16,
                                            (clopt_tensor){B, 5}, CLOPT_DTYPE_F32, 8, 1.0, 1.0,
                                            0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_true(strstr(clopt_ctx_last_error(f->ctx), "overlap") != NULL);
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, (clopt_tensor){B, 0}, CLOPT_DTYPE_F32,
                                            (clopt_tensor){B, 4}, CLOPT_DTYPE_F32, 8, 1.0, 1.0,
                                            0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_BF16,
                                            (clopt_tensor){B, 0}, CLOPT_DTYPE_F16, 60, NAN, 1.0,
                                            0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_enqueue_axpby_ex(f->ctx, NULL, t, CLOPT_DTYPE_BF16,
                                            (clopt_tensor){B, 0}, CLOPT_DTYPE_BF16, 61, 1.0, 1.0,
                                            0, NULL, NULL),
                     CLOPT_ERR_OUT_OF_BOUNDS);
    buf_read(f->ctx, B, 0, sizeof got, got);
    assert_memory_equal(got, raw, sizeof raw);
    clReleaseMemObject(B);
}

/* clopt_optimizer_accumulate_grad into an f16 and a bf16 gradient (its first micro-batch
   after zero_grad, then two more with weight 1/3): each result the rounded float32 sum of
   the gradient the device held and weight·src. */
void test_accumulate_grad_16(void **state)
{
    fixture *f = *state;
    fmt_init(&F16), fmt_init(&BF16);
    enum { GN = 777, GO = 9 };
    const clopt_dtype types[] = {CLOPT_DTYPE_F16, CLOPT_DTYPE_BF16};
    for (int ti = 0; ti < 2; ti++) {
        const clopt_dtype t = types[ti];
        uint64_t s = 99u + (uint64_t)ti;
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_SGD, &hp);
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
        cl_mem P = buf_new(f->ctx, (GO + GN) * 2, NULL), G = buf_new(f->ctx, (GO + GN) * 2, NULL);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.shape[0] = GN;
        d.param = (clopt_tensor){P, GO}, d.grad = (clopt_tensor){G, GO};
        d.param_dtype = d.grad_dtype = t;
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_zero_grad(opt), CLOPT_SUCCESS);
        uint16_t before[GN], src[GN], now[GN];
        double sv[GN];
        buf_read(f->ctx, G, GO * 2, sizeof before, before);
        for (size_t k = 0; k < GN; k++)
            assert_int_equal(before[k], 0);
        cl_mem S = buf_new(f->ctx, sizeof src, NULL);
        for (int mb = 0; mb < 3; mb++) {
            const double w = mb == 0 ? 1.0 : 1.0 / 3.0;
            fill(t, &s, src, sv, GN);
            buf_write(f->ctx, S, 0, sizeof src, src);
            assert_int_equal(clopt_optimizer_accumulate_grad(opt, 0, (clopt_tensor){S, 0}, w),
                             CLOPT_SUCCESS);
            buf_read(f->ctx, G, GO * 2, sizeof now, now);
            for (size_t k = 0; k < GN; k++)
                assert_true(matches(t, now, k, (float)w, (float)sv[k], 1.0f,
                                    (float)val16(fmt_of(t), before[k]), 0));
            memcpy(before, now, sizeof now);
        }
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(S);
    }
}
