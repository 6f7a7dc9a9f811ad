/* SPDX-License-Identifier: MIT */
/*
 * test_kernels, the RNG and Sophia's Hessian estimators (one executable with test_kernels.c):
 * clopt_enqueue_randn (the same bits for the same seed and counter, on another context too,
 * the counter's offset per element, the moments of 2^20 draws) and clopt_enqueue_hutchinson /
 * clopt_enqueue_gnb against tests/ref, with nothing outside the output written.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clopt.h"
#include "ref.h"
#include "test_kernels.h"

/* ================================================================================== */
/* RNG and Hessian estimators                                                         */
/* ================================================================================== */

static float *randn_read(clopt_ctx *ctx, size_t n, size_t off, uint64_t seed, uint64_t counter,
                         int *guard_ok)
{
    cl_int err;
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    size_t total = off + n + GUARD;
    cl_mem m = clCreateBuffer(clc, CL_MEM_READ_WRITE, total * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    float *init = xmalloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++) init[i] = sentinel(i);
    assert_int_equal(write_region(q, m, 0, total, init, 1, NULL), CL_SUCCESS);
    clopt_tensor out = {m, off};
    clopt_status s = clopt_enqueue_randn(ctx, NULL, out, n, seed, counter, 0, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        print_error("randn returned %s (%s)\n", clopt_status_name(s), clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
    float *all = xmalloc(total * sizeof(float));
    assert_int_equal(
        clEnqueueReadBuffer(q, m, CL_TRUE, 0, total * sizeof(float), all, 0, NULL, NULL),
        CL_SUCCESS);
    *guard_ok = check_outside("randn", "out", all, init, total, off, n) == 0;
    float *v = xmalloc(n * sizeof(float));
    memcpy(v, all + off, n * sizeof(float));
    free(all);
    free(init);
    clReleaseMemObject(m);
    return v;
}

void test_randn(void **state)
{
    clopt_ctx *ctx = *state;
    const size_t n = BIG;
    int g1, g2, g3, g4, g5;
    float *a = randn_read(ctx, n, 3, 1234, 0, &g1);
    float *b = randn_read(ctx, n, 0, 1234, 0, &g2);
    assert_true(g1 && g2);
    assert_memory_equal(a, b, n * sizeof(float)); /* same seed+counter: same bits */

    /* a second, independent context on the same device gives the same bits */
    clopt_ctx *ctx2 = NULL;
    assert_int_equal(clopt_ctx_create(&ctx2), CLOPT_SUCCESS);
    float *c = randn_read(ctx2, n, 5, 1234, 0, &g3);
    clopt_ctx_destroy(ctx2);
    assert_true(g3);
    assert_memory_equal(a, c, n * sizeof(float));

    /* a different seed gives different values */
    float *d = randn_read(ctx, n, 0, 1235, 0, &g4);
    assert_true(g4);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += a[i] == d[i];
    if (same > n / 1000)
        print_error("randn: %zu of %zu equal values for seeds 1234/1235\n", same, n);
    assert_true(same <= n / 1000);

    /* element i uses counter counter_base + i/4: shifting the counter by 10 shifts by 40 */
    const size_t m = 4099;
    float *e = randn_read(ctx, m, 1, 1234, 10, &g5);
    assert_true(g5);
    if (memcmp(e, a + 40, m * sizeof(float)) != 0) {
        size_t i = 0;
        while (i < m && e[i] == a[40 + i]) i++;
        print_error("randn: counter_base 10 element %zu = %g, counter_base 0 element %zu = %g\n",
                    i, (double)e[i], 40 + i, (double)a[40 + i]);
        fail();
    }

    /* moments over 2^20 draws: mean sd 1/1024, var sd sqrt(2)/1024 */
    double sum = 0, sum2 = 0, sum4 = 0;
    size_t tail = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i];
        assert_true(isfinite(x));
        sum += x;
        sum2 += x * x;
        sum4 += x * x * x * x;
        tail += fabs(x) > 3.0;
    }
    double mean = sum / n, var = sum2 / n - mean * mean, kurt = sum4 / n;
    print_message("randn 2^20: mean %.5f var %.5f E[x^4] %.4f P(|x|>3) %.5f\n", mean, var, kurt,
                  (double)tail / n);
    if (n == ((size_t)1 << 20)) { /* too few draws for these bounds under CLOPT_TEST_SMALL */
        assert_true(fabs(mean) < 5e-3);
        assert_true(fabs(var - 1.0) < 1e-2);
        assert_true(fabs(kurt - 3.0) < 0.06);
        assert_true(fabs((double)tail / n - 0.0026998) < 0.00025);
    }
    /* the four lanes of one counter are not all the same distribution's copies */
    size_t lane_eq = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) lane_eq += a[i] == a[i + 1];
    assert_true(lane_eq < n / 4000);
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

void test_hutchinson_gnb(void **state)
{
    clopt_ctx *ctx = *state;
    cl_int err;
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    const size_t sizes[3] = {1, 7, 4099};
    for (int si = 0; si < 3; si++) {
        const size_t n = sizes[si], ou = 1, oh = 2 + n, oo = 5 + 2 * n, total = 9 + 3 * n + GUARD;
        cl_mem m = clCreateBuffer(clc, CL_MEM_READ_WRITE, total * sizeof(float), NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        float *h = xmalloc(total * sizeof(float)), *back = xmalloc(total * sizeof(float));
        for (size_t i = 0; i < total; i++) h[i] = sentinel(i);
        uint64_t s = 777 + si;
        double *u = xmalloc(n * sizeof(double)), *hv = xmalloc(n * sizeof(double));
        double *r = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            h[ou + i] = (float)ref_normal(&s);
            h[oh + i] = (float)(3.0 * ref_normal(&s));
            if (i % 13 == 5) h[oh + i] = 0.0f;
            u[i] = h[ou + i];
            hv[i] = h[oh + i];
        }
        /* Hutchinson */
        assert_int_equal(write_region(q, m, 0, total, h, 1, NULL), CL_SUCCESS);
        clopt_tensor tu = {m, ou}, th = {m, oh}, to = {m, oo};
        cl_event ev = NULL;
        assert_int_equal(clopt_enqueue_hutchinson(ctx, NULL, tu, th, to, n, 0, NULL, &ev),
                         CLOPT_SUCCESS);
        assert_non_null(ev);
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
        assert_int_equal(
            clEnqueueReadBuffer(q, m, CL_TRUE, 0, total * sizeof(float), back, 0, NULL, NULL),
            CL_SUCCESS);
        ref_hutchinson(n, u, hv, r);
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)back[oo + i] - r[i]);
            if (!(d <= 2 * U32 * fabs(r[i]) + 1e-36)) {
                print_error("hutchinson n=%zu [%zu]: %.9g vs %.9g\n", n, i,
                            (double)back[oo + i], r[i]);
                fail();
            }
        }
        memcpy(h + oo, back + oo, n * sizeof(float));
        assert_int_equal(check_outside("hutchinson", "buffer", back, h, total, 0, 0), 0);

        /* GNB: B * ĝ ⊙ ĝ, ĝ at the u slot */
        const double B[2] = {480.0, 3.0};
        for (int bi = 0; bi < 2; bi++) {
            assert_int_equal(clopt_enqueue_gnb(ctx, q, tu, to, n, B[bi], 0, NULL, NULL),
                             CLOPT_SUCCESS);
            assert_int_equal(
                clEnqueueReadBuffer(q, m, CL_TRUE, 0, total * sizeof(float), back, 0, NULL, NULL),
                CL_SUCCESS);
            ref_gnb(n, u, B[bi], r);
            for (size_t i = 0; i < n; i++) {
                double d = fabs((double)back[oo + i] - r[i]);
                if (!(d <= 3 * U32 * fabs(r[i]) + 1e-36)) {
                    print_error("gnb B=%g n=%zu [%zu]: %.9g vs %.9g\n", B[bi], n, i,
                                (double)back[oo + i], r[i]);
                    fail();
                }
            }
            memcpy(h + oo, back + oo, n * sizeof(float));
            assert_int_equal(check_outside("gnb", "buffer", back, h, total, 0, 0), 0);
        }
        free(u);
        free(hv);
        free(r);
        free(h);
        free(back);
        clReleaseMemObject(m);
    }
}
