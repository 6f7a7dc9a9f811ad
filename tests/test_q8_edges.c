/* SPDX-License-Identifier: MIT */
/* Edges of 8-bit state: clopt_alloc_state_ex's initial states and what it refuses, blocks
 * whose values are all zero (they stay zero, absmax 0), and 1-element tensors; against the
 * transcription of test_q8.c (shared helpers in test_q8.h). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "ref.h"
#include "test_q8.h"

/* ---- 4. edges: initial states, zero blocks, 1 element -------------------------------------- */

/* clopt_alloc_state_ex's initial states: codes of 0 and absmax 0, Adagrad's
   initial_accumulator_value as the code of 1 times an absmax of that value; bf16 words of the
   initial value; and what it refuses. */
void test_alloc_state_ex(void **state)
{
    fixture *f = *state;
    maps_init();
    const size_t n = 1000, nb = nblocks(n);
    clopt_rule rule;
    clopt_hparams hp;
    uint64_t t;
    const char *label;
    for (int ci = 0; q8_config(ci, &rule, &hp, &t, &label); ci++) {
        const size_t ns = q8_state_count(rule, &hp);
        clopt_tensor q[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE];
        memset(q, 0xAB, sizeof q), memset(am, 0xAB, sizeof am);
        size_t cnt = 99;
        assert_int_equal(clopt_alloc_state_ex(f->ctx, rule, &hp, n, CLOPT_DTYPE_U8, q, am, &cnt),
                         CLOPT_SUCCESS);
        assert_int_equal(cnt, ns);
        for (size_t k = 0; k < CLOPT_MAX_STATE; k++) {
            if (k >= ns) { /* "the rest of out is set to NULL" */
                assert_null(q[k].buffer);
                continue;
            }
            const int sg = state_signed(q8_state_name(rule, &hp, k));
            const double init = ref_state_init(rule, &hp, k);
            assert_true(buf_bytes(q[k].buffer) >= q[k].offset + n);
            assert_true(buf_bytes(am[k].buffer) >= (am[k].offset + nb) * 4);
            unsigned char c[1000];
            float a[4];
            buf_read(f->ctx, q[k].buffer, q[k].offset, n, c);
            buf_read(f->ctx, am[k].buffer, am[k].offset * 4, nb * 4, a);
            const unsigned want = init > 0 ? map_nearest(QMAP[sg], 1.0) : QZERO[sg];
            if (init > 0)
                assert_int_equal(want, 255);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(c[i], want);
            for (size_t b = 0; b < nb; b++)
                assert_int_equal(f2u(a[b]), f2u((float)init));
            clReleaseMemObject(q[k].buffer);
            clReleaseMemObject(am[k].buffer);
        }
        /* bf16: the words of the initial value */
        assert_int_equal(clopt_alloc_state_ex(f->ctx, rule, &hp, n, CLOPT_DTYPE_BF16, q, NULL,
                                              &cnt),
                         CLOPT_SUCCESS);
        assert_int_equal(cnt, ns);
        for (size_t k = 0; k < ns; k++) {
            uint16_t w[1000];
            assert_true(buf_bytes(q[k].buffer) >= (q[k].offset + n) * 2);
            buf_read(f->ctx, q[k].buffer, q[k].offset * 2, n * 2, w);
            const uint16_t want = bf16_rne((float)ref_state_init(rule, &hp, k));
            for (size_t i = 0; i < n; i++)
                assert_int_equal(w[i], want);
            clReleaseMemObject(q[k].buffer);
        }
    }
    /* refused, nothing allocated */
    clopt_tensor q[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE];
    size_t cnt = 99;
    assert_int_equal(clopt_hparams_default(CLOPT_NADAM, &hp), CLOPT_SUCCESS);
    assert_int_equal(clopt_alloc_state_ex(f->ctx, CLOPT_NADAM, &hp, n, CLOPT_DTYPE_U8, q, am, &cnt),
                     CLOPT_ERR_UNSUPPORTED);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    assert_int_equal(
        clopt_alloc_state_ex(f->ctx, CLOPT_ADAM, &hp, n, CLOPT_DTYPE_U8, q, NULL, &cnt),
        CLOPT_ERR_INVALID_ARGUMENT);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    assert_int_equal(clopt_alloc_state_ex(f->ctx, CLOPT_ADAM, &hp, n, CLOPT_DTYPE_F16, q, am, &cnt),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_alloc_state_ex(f->ctx, CLOPT_ADAM, &hp, n, (clopt_dtype)9, q, am, &cnt),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
}

/* A block with zero state and zero gradients stays exactly zero (absmax 0, the code of 0, θ
   unchanged without weight decay), also when it is the block cut by the tensor's end; blocks
   with gradients get an absmax. */
void test_q8_zero_blocks(void **state)
{
    fixture *f = *state;
    maps_init();
    /* the one-step test's rules and variants (no new kernels), without weight decay and with
       Adagrad's sum starting at 0 */
    const int configs[] = {0, 1, 2, 3, 5, 6, 7, 9};
    const size_t n = 1000, nb = nblocks(n); /* blocks 2 and 3 (the cut one) get g = 0 */
    for (size_t r = 0; r < sizeof configs / sizeof configs[0]; r++) {
        clopt_rule rule = CLOPT_SGD;
        clopt_hparams hp;
        uint64_t t0 = 1;
        const char *name = "";
        assert_true(q8_config(configs[r], &rule, &hp, &t0, &name));
        hp.weight_decay = 0;
        hp.initial_accumulator_value = 0;
        const size_t ns = q8_state_count(rule, &hp);
        clopt_tensor q[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE];
        size_t cnt;
        assert_int_equal(clopt_alloc_state_ex(f->ctx, rule, &hp, n, CLOPT_DTYPE_U8, q, am, &cnt),
                         CLOPT_SUCCESS);
        assert_int_equal(cnt, ns);
        uint64_t s = 4242 + r;
        float theta0[1000], g[1000], th[1000];
        for (size_t i = 0; i < n; i++)
            theta0[i] = (float)ref_normal(&s);
        cl_mem p = buf_new(f->ctx, sizeof theta0, theta0), gb = buf_new(f->ctx, sizeof g, NULL);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){p, 0};
        a.grad = (clopt_tensor){gb, 0};
        a.state_dtype = CLOPT_DTYPE_U8;
        for (size_t k = 0; k < ns; k++)
            a.state[k] = q[k], a.state_absmax[k] = am[k];
        for (uint64_t t = 1; t <= 3; t++) {
            for (size_t i = 0; i < n; i++)
                g[i] = i >= 512 ? 0.0f : (float)(0.1 * ref_normal(&s));
            buf_write(f->ctx, gb, 0, sizeof g, g);
            step_ok(f->ctx, rule, &hp, &a, n, t, name);
        }
        buf_read(f->ctx, p, 0, sizeof th, th);
        for (size_t i = 512; i < n; i++)
            if (f2u(th[i]) != f2u(theta0[i])) {
                print_error("%s: θ[%zu] %a moved from %a with zero state and gradient\n", name, i,
                            (double)th[i], (double)theta0[i]);
                fail();
            }
        for (size_t k = 0; k < ns; k++) {
            const int sg = state_signed(q8_state_name(rule, &hp, k));
            unsigned char c[1000];
            float ab[4];
            buf_read(f->ctx, q[k].buffer, q[k].offset, n, c);
            buf_read(f->ctx, am[k].buffer, am[k].offset * 4, nb * 4, ab);
            assert_true(ab[0] > 0 && ab[1] > 0);
            assert_int_equal(f2u(ab[2]), 0);
            assert_int_equal(f2u(ab[3]), 0);
            for (size_t i = 512; i < n; i++)
                assert_int_equal(c[i], QZERO[sg]);
            clReleaseMemObject(q[k].buffer), clReleaseMemObject(am[k].buffer);
        }
        clReleaseMemObject(p), clReleaseMemObject(gb);
    }
}

/* One element: its block's absmax is |value|, its code that of ±1: +1 is code 255, and -1,
   below the signed map, takes its lowest code (-0.99296875), as bitsandbytes. SGD with
   momentum 0.5, lr 1/16: step 1 b = g = -0.5; step 2 (g = 0) b = 0.5 · map[0] · 0.5. */
void test_q8_one_element(void **state)
{
    fixture *f = *state;
    maps_init();
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &hp), CLOPT_SUCCESS);
    hp.lr = 0.0625, hp.momentum = 0.5;
    const float theta0 = 0.75f;
    q8s st;
    q8_alloc(&st, 1, 1);
    st.code[0] = 200, st.amax[0] = 3.0f; /* ignored at step 1 (b = g) */
    const float g1 = -0.5f, g0 = 0.0f;
    q8dev d;
    q8dev_make(f->ctx, &d, 1, &theta0, &g1, 1, &st);
    step_ok(f->ctx, CLOPT_SGD, &hp, &d.args, 1, 1, "sgd n 1");
    float th;
    q8dev_read(f->ctx, &d, &th, &st);
    assert_int_equal(st.code[0], 0);
    assert_true(st.amax[0] == 0.5f);
    assert_true(th == 0.75f + 0.03125f); /* θ from b = -0.5 before it is quantized */
    buf_write(f->ctx, d.g, GO * 4, 4, &g0);
    memcpy(d.gimg + GO * 4, &g0, 4);
    step_ok(f->ctx, CLOPT_SGD, &hp, &d.args, 1, 2, "sgd n 1");
    q8dev_read(f->ctx, &d, &th, &st);
    const double b = 0.5 * ((double)QMAP[1][0] * 0.5); /* the dequantized -0.4964..., halved */
    assert_int_equal(st.code[0], 0);
    assert_true(fabs((double)st.amax[0] - fabs(b)) <= 2 * EPSF * fabs(b));
    assert_true(fabs((double)th - (0.78125 - 0.0625 * b)) <= 2 * EPSF);
    assert_int_equal(q8dev_guards(f->ctx, &d, "sgd n 1"), 0);
    q8dev_free(&d);
    q8_free(&st);
}
