/* SPDX-License-Identifier: MIT */
/* Numerics at the extremes (issue 12): NAdam's momentum product underflowing in long runs,
 * decoupled weight decay at small lr·wd, clipping gradients whose squares overflow float32,
 * hyperparameters that are not representable on the device, and the opt-in report of
 * non-finite gradients without AMP. Every value is checked against the double references of
 * tests/ref or against closed forms. */
#include <float.h>
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

/* NAdam for 10^5 steps at the op level with β1 = 0, 0.5 and 0.9: the product of μ_1..μ_t
   underflows to 0 (β1 = 0 at step 1, β1 = 0.5 near step 1000 in double), as torch's does, and
   the rule keeps going with its bias correction at 1 (the (0, 1] check stopped it before). */
static void test_nadam_long_run(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    enum { N = 8, STEPS = 100000 };
    static const double betas[] = {0.0, 0.5, 0.9};
    for (size_t b = 0; b < 3; b++) {
        clopt_hparams hp;
        ref_hparams_default(CLOPT_NADAM, &hp);
        hp.beta1 = betas[b];
        hp.lr = 1e-5;
        float p0[N], g[N], x[N];
        double ref[N], gd[N], m[N] = {0}, v[N] = {0};
        for (int i = 0; i < N; i++) {
            ref[i] = p0[i] = (float)(0.25 * i - 1.0);
            gd[i] = g[i] = (float)(0.5 * (i - 3.5) / 4.0);
        }
        cl_mem P = upload(ctx, p0, N), G = upload(ctx, g, N);
        cl_mem M = upload(ctx, (float[N]){0}, N), V = upload(ctx, (float[N]){0}, N);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){P, 0};
        a.grad = (clopt_tensor){G, 0};
        a.state[0] = (clopt_tensor){M, 0};
        a.state[1] = (clopt_tensor){V, 0};
        double prod = 1.0, ref_prod = 1.0; /* Π μ_i for i < t: the library's input, and ref's */
        double *st[CLOPT_MAX_STATE] = {m, v};
        for (uint64_t t = 1; t <= STEPS; t++) {
            a.mu_product = prod;
            clopt_status s = clopt_enqueue_step(ctx, NULL, CLOPT_NADAM, &hp, &a, N, t, 0, NULL,
                                                NULL);
            if (s != CLOPT_SUCCESS) {
                fprintf(stderr, "beta1 %g: step %llu refused: %s\n", hp.beta1,
                        (unsigned long long)t, clopt_ctx_last_error(ctx));
                fail();
            }
            prod *= ref_nadam_mu(&hp, t);
            ref_step(CLOPT_NADAM, &hp, t, N, ref, gd, st, NULL, &ref_prod, 0);
        }
        /* the product did underflow: to 0 for β1 = 0 and 0.5; for 0.9 it sticks at the
           smallest subnormal double (0.9 × 4.9e-324 rounds back to it), as in torch */
        assert_true(betas[b] < 0.9 ? prod == 0.0 : prod < 1e-300);
        read_at(ctx, a.param, x, N);
        for (int i = 0; i < N; i++) {
            const double moved = fabs(ref[i] - p0[i]);
            assert_true(moved > 0.1); /* 10^5 steps of ~lr each: it kept training */
            if (!(fabs((double)x[i] - ref[i]) <= 0.01 * moved)) {
                fprintf(stderr, "beta1 %g, [%d]: %.7g vs reference %.7g (moved %.3g)\n",
                        hp.beta1, i, (double)x[i], ref[i], moved);
                fail();
            }
        }
        cl_mem all[] = {P, G, M, V};
        for (int i = 0; i < 4; i++)
            clReleaseMemObject(all[i]);
    }
}

/* The optimizer level keeps the product per tensor: β1 = 0.5 past its underflow. */
static void test_nadam_optimizer_past_underflow(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    enum { N = 5, STEPS = 1500 };
    clopt_hparams hp;
    ref_hparams_default(CLOPT_NADAM, &hp);
    hp.beta1 = 0.5;
    hp.lr = 1e-3;
    float p0[N], g[N], x[N];
    double ref[N], gd[N], m[N] = {0}, v[N] = {0}, ref_prod = 1.0;
    for (int i = 0; i < N; i++) {
        ref[i] = p0[i] = (float)(i + 1);
        gd[i] = g[i] = (float)(i - 2) * 0.1f;
    }
    cl_mem P = upload(ctx, p0, N), G = upload(ctx, g, N);
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_NADAM, &hp, &opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){P, 0}, (clopt_tensor){G, 0}, N,
                                               NULL, NULL),
                     CLOPT_SUCCESS);
    double *st[CLOPT_MAX_STATE] = {m, v};
    for (uint64_t t = 1; t <= STEPS; t++) {
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        ref_step(CLOPT_NADAM, &hp, t, N, ref, gd, st, NULL, &ref_prod, 0);
    }
    assert_true(ref_prod == 0.0);
    read_at(ctx, (clopt_tensor){P, 0}, x, N);
    for (int i = 0; i < N; i++)
        assert_true(fabs((double)x[i] - ref[i]) <= 1e-4 * fabs(ref[i] - p0[i]) + 1e-5);
    assert_int_equal(clopt_optimizer_step_count(opt), STEPS);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P);
    clReleaseMemObject(G);
}

/* AdamW with zero gradients is pure decoupled decay: θ_T = θ_0 (1 - lr·wd)^T. Over a tensor
   of values in many binades the decay must match that in the mean: multiplying by
   float32(1 - lr·wd), as torch does, made it 0.136% too strong at lr·wd = 1e-5 and 4.6% too
   weak at 1e-6, in every element alike. */
static void test_decoupled_decay_precision(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    enum { N = 4096, STEPS = 1000 };
    static const double lrwd[] = {1e-5, 1e-6};
    /* the float32 factor's error: 0.136% and 4.6%; θ's own rounding then averages out over
       the elements (each is off by a fraction of an ulp per step, in either direction) */
    static const double tol[] = {5e-4, 1e-2};
    for (size_t c = 0; c < 2; c++) {
        clopt_hparams hp;
        ref_hparams_default(CLOPT_ADAMW, &hp);
        hp.lr = 1e-2;
        hp.weight_decay = lrwd[c] / hp.lr;
        float *p0 = malloc(N * sizeof *p0), *x = malloc(N * sizeof *x);
        uint64_t seed = 99;
        for (int i = 0; i < N; i++)
            p0[i] = (float)(ref_normal(&seed) * pow(2.0, (double)(i % 17) - 8.0));
        cl_mem P = upload(ctx, p0, N), G = upload(ctx, NULL, N);
        float zero = 0.0f;
        assert_int_equal(clEnqueueFillBuffer(clopt_ctx_cl_queue(ctx), G, &zero, sizeof zero, 0,
                                             N * sizeof(float), 0, NULL, NULL),
                         CL_SUCCESS);
        clopt_tensor st[CLOPT_MAX_STATE];
        size_t ns = 0;
        assert_int_equal(clopt_alloc_state(ctx, CLOPT_ADAMW, &hp, N, st, &ns), CLOPT_SUCCESS);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){P, 0};
        a.grad = (clopt_tensor){G, 0};
        for (size_t k = 0; k < ns; k++)
            a.state[k] = st[k];
        for (uint64_t t = 1; t <= STEPS; t++)
            assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_ADAMW, &hp, &a, N, t, 0, NULL,
                                                NULL),
                             CLOPT_SUCCESS);
        read_at(ctx, a.param, x, N);
        const double keep = pow(1.0 - lrwd[c], STEPS);
        double got = 0, want = 0; /* relative decay, summed over the tensor */
        for (int i = 0; i < N; i++) {
            got += ((double)p0[i] - x[i]) / p0[i];
            want += 1.0 - keep;
        }
        const double err = got / want - 1.0;
        if (!(fabs(err) < tol[c])) {
            fprintf(stderr, "lr*wd %g: mean decay off by %.3g%%\n", lrwd[c], 100 * err);
            fail();
        }
        for (size_t k = 0; k < ns; k++)
            clReleaseMemObject(st[k].buffer);
        clReleaseMemObject(P);
        clReleaseMemObject(G);
        free(p0);
        free(x);
    }
}

/* Clipping gradients whose squares overflow float32: the norm stays finite (scaled sums) and
   the step is clipped, as torch.nn.utils.clip_grad_norm_ in double would clip it. */
static void test_clip_huge_gradients(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    static const float huge[] = {1e20f, 3e37f};
    for (size_t c = 0; c < 2; c++) {
        enum { N = 4 };
        float p0[N] = {1, 2, 3, 4}, g[N] = {huge[c], -huge[c] / 2, 0, 0}, x[N];
        cl_mem P = upload(ctx, p0, N), G = upload(ctx, g, N);
        clopt_hparams hp;
        ref_hparams_default(CLOPT_SGD, &hp);
        hp.lr = 0.1;
        clopt_optimizer *opt = NULL;
        assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){P, 0},
                                                   (clopt_tensor){G, 0}, N, NULL, NULL),
                         CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_set_grad_clip(opt, 1.0), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        read_at(ctx, (clopt_tensor){P, 0}, x, N);
        const double norm = hypot((double)g[0], (double)g[1]);
        for (int i = 0; i < N; i++) {
            const double want = p0[i] - hp.lr * (double)g[i] / (norm + 1e-6);
            if (!(fabs(x[i] - want) <= 1e-5)) {
                fprintf(stderr, "g %g: [%d] %.8g, want %.8g\n", (double)huge[c], i,
                        (double)x[i], want);
                fail();
            }
        }
        const double measured = clopt_optimizer_last_grad_norm(opt);
        assert_true(fabs(measured - norm) <= 1e-5 * norm);
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(P);
        clReleaseMemObject(G);
    }
}

/* Values the device cannot represent are refused where they enter, not at every later step. */
static void test_unrepresentable_settings_refused(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    cl_mem P = upload(ctx, (float[4]){1, 2, 3, 4}, 4), G = upload(ctx, (float[4]){0}, 4);
    clopt_hparams hp;
    ref_hparams_default(CLOPT_SGD, &hp);
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){P, 0}, (clopt_tensor){G, 0},
                                               4, NULL, NULL),
                     CLOPT_SUCCESS);
    static const double bad_clip[] = {1e-320, 1e-40, 1e39, -1.0};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(clopt_optimizer_set_grad_clip(opt, bad_clip[i]),
                         CLOPT_ERR_INVALID_HYPERPARAM);
    static const double bad_scale[] = {1e-39, 1e-320, 1e39, -2.0};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(clopt_optimizer_set_grad_scale(opt, bad_scale[i]),
                         CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_optimizer_set_grad_clip(opt, 0.5), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(opt, 65536.0), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS); /* still steps */
    /* the op level's grad_scale */
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = (clopt_tensor){P, 0};
    a.grad = (clopt_tensor){G, 0};
    a.grad_scale = 1e-40;
    assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, 4, 1, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P);
    clReleaseMemObject(G);
}

/* NaN, Inf and magnitudes whose reciprocal or square is not finite in float32 are refused in
   every double field of clopt_hparams, read by the rule or not. */
static void test_every_field_validated(void **state)
{
    (void)state;
    static const size_t fields[] = {
        offsetof(clopt_hparams, lr),           offsetof(clopt_hparams, beta1),
        offsetof(clopt_hparams, beta2),        offsetof(clopt_hparams, beta3),
        offsetof(clopt_hparams, eps),          offsetof(clopt_hparams, weight_decay),
        offsetof(clopt_hparams, momentum),     offsetof(clopt_hparams, dampening),
        offsetof(clopt_hparams, alpha),        offsetof(clopt_hparams, rho),
        offsetof(clopt_hparams, bs),           offsetof(clopt_hparams, lr_decay),
        offsetof(clopt_hparams, initial_accumulator_value),
        offsetof(clopt_hparams, momentum_decay), offsetof(clopt_hparams, eps2),
        offsetof(clopt_hparams, clip_threshold), offsetof(clopt_hparams, decay_rate),
        offsetof(clopt_hparams, lookahead_alpha), offsetof(clopt_hparams, n_sma_threshold)};
    static const double bad[] = {NAN, INFINITY, -INFINITY, 1e-320, 1e20};
    size_t refused = 0;
    for (int r = 0; r < CLOPT_RULE_COUNT; r++) {
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
                clopt_hparams hp;
                assert_int_equal(clopt_hparams_default((clopt_rule)r, &hp), CLOPT_SUCCESS);
                memcpy((char *)&hp + fields[f], &bad[b], sizeof(double));
                const char *why = NULL;
                if (clopt_hparams_validate((clopt_rule)r, &hp, &why) !=
                    CLOPT_ERR_INVALID_HYPERPARAM) {
                    fprintf(stderr, "rule %s, field %zu, value %g accepted\n",
                            clopt_rule_name((clopt_rule)r), f, bad[b]);
                    fail();
                }
                refused++;
            }
    }
    assert_int_equal(refused, (size_t)CLOPT_RULE_COUNT * 19 * 5);
}

/* Without AMP a NaN gradient is applied (as torch); the opt-in check reports it without
   skipping, and found_inf stays 0 (it means "skipped"). */
static void test_check_finite_reports(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    float p0[4] = {1, 2, 3, 4}, g[4] = {0.5f, NAN, 0, 1}, x[4];
    cl_mem P = upload(ctx, p0, 4), G = upload(ctx, g, 4);
    clopt_hparams hp;
    ref_hparams_default(CLOPT_SGD, &hp);
    hp.lr = 0.1;
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){P, 0}, (clopt_tensor){G, 0},
                                               4, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_check_finite(opt, 2), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_set_check_finite(opt, 1), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    read_at(ctx, (clopt_tensor){P, 0}, x, 4); /* blocking: the step has finished */
    clopt_step_report r;
    assert_int_equal(clopt_optimizer_poll(opt, &r), CLOPT_SUCCESS);
    assert_int_equal(r.step_call, 1);
    assert_int_equal(r.nonfinite, 1);
    assert_int_equal(r.skipped, 0);
    assert_int_equal(clopt_optimizer_found_inf(opt), 0);
    assert_true(fabsf(x[0] - 0.95f) < 1e-6f && isnan(x[1]) && x[2] == 3.0f);
    /* a finite gradient: reported finite, with its norm */
    write_at(ctx, (clopt_tensor){G, 0}, (float[4]){3, 4, 0, 0}, 4);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    read_at(ctx, (clopt_tensor){P, 0}, x, 4);
    assert_int_equal(clopt_optimizer_poll(opt, &r), CLOPT_SUCCESS);
    assert_int_equal(r.step_call, 2);
    assert_int_equal(r.nonfinite, 0);
    assert_true(fabs(r.grad_norm - 5.0) < 1e-5);
    /* the setting travels with a checkpoint: a fresh optimizer that loads it reports too */
    size_t len = 0;
    assert_int_equal(clopt_optimizer_state_size(opt, NULL, &len), CLOPT_SUCCESS);
    unsigned char *blob = malloc(len);
    assert_int_equal(clopt_optimizer_save_to(opt, NULL, blob, len, NULL), CLOPT_SUCCESS);
    clopt_optimizer *opt2 = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SGD, &hp, &opt2), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(opt2, (clopt_tensor){P, 0}, (clopt_tensor){G, 0},
                                               4, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_load_from(opt2, blob, len), CLOPT_SUCCESS);
    write_at(ctx, (clopt_tensor){G, 0}, g, 4); /* the NaN gradient again */
    assert_int_equal(clopt_optimizer_step(opt2, NULL), CLOPT_SUCCESS);
    read_at(ctx, (clopt_tensor){P, 0}, x, 4);
    assert_int_equal(clopt_optimizer_poll(opt2, &r), CLOPT_SUCCESS);
    assert_int_equal(r.nonfinite, 1);
    clopt_optimizer_destroy(opt2);
    free(blob);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P);
    clReleaseMemObject(G);
}

/* A NaN gradient spreads to θ in every rule, as in the references (torch.sign, maximum,
   minimum and clamp keep NaN): one NaN at element 5 of step 1, then two finite steps; θ[5] is
   NaN after them. LAMB (the trust ratio of a NaN norm), Muon (Newton-Schulz of the whole
   matrix) and Adafactor (update clipping by the tensor's RMS) make the whole tensor NaN.
   Before, OpenCL's sign(NaN) = 0 and fmax/fmin/clamp(NaN, y) = y left a finite θ[5] in Lion,
   cautious Lion, Sophia and ADOPT, and LAMB and a 3-D Adafactor stepped the other elements. */
static void test_nan_gradient_spreads(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    enum { N = 64 };
    size_t checked = 0;
    for (int ri = 0; ri <= (int)CLOPT_RULE_COUNT + 1; ri++) {
        /* every rule, then cautious Lion and AMSGrad */
        const clopt_rule rule = ri == (int)CLOPT_RULE_COUNT       ? CLOPT_LION
                                : ri == (int)CLOPT_RULE_COUNT + 1 ? CLOPT_ADAM
                                                                  : (clopt_rule)ri;
        clopt_hparams hp;
        assert_int_equal(clopt_hparams_default(rule, &hp), CLOPT_SUCCESS);
        hp.cautious = ri == (int)CLOPT_RULE_COUNT;
        hp.amsgrad = ri == (int)CLOPT_RULE_COUNT + 1;
        float p0[N], g[N], x[N];
        for (int i = 0; i < N; i++)
            p0[i] = 1.0f + 0.01f * (float)i, g[i] = 0.1f * (float)((i % 7) - 3) + 0.05f;
        cl_mem P = upload(ctx, p0, N), G = upload(ctx, g, N);
        clopt_optimizer *opt = NULL;
        if (clopt_optimizer_create(ctx, rule, &hp, &opt) != CLOPT_SUCCESS) {
            assert_int_equal(rule, CLOPT_MUON); /* a build without CLBlast */
            clReleaseMemObject(P), clReleaseMemObject(G);
            continue;
        }
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){P, 0}, d.grad = (clopt_tensor){G, 0};
        const int whole = rule == CLOPT_LAMB || rule == CLOPT_MUON || rule == CLOPT_ADAFACTOR;
        if (rule == CLOPT_MUON)
            d.ndim = 2, d.shape[0] = 8, d.shape[1] = 8;
        else if (rule == CLOPT_ADAFACTOR)
            d.ndim = 3, d.shape[0] = d.shape[1] = d.shape[2] = 4;
        else
            d.shape[0] = N;
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
        float gn[N];
        memcpy(gn, g, sizeof g);
        gn[5] = NAN;
        write_at(ctx, (clopt_tensor){G, 0}, gn, N);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        write_at(ctx, (clopt_tensor){G, 0}, g, N);
        for (int t = 0; t < 2; t++)
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        read_at(ctx, (clopt_tensor){P, 0}, x, N);
        for (int i = 0; i < N; i++)
            if ((i == 5 || whole) && !isnan(x[i]))
                fail_msg("%s%s%s: θ[%d] = %g after a NaN gradient at element 5",
                         hp.cautious ? "cautious " : "", clopt_rule_name(rule),
                         hp.amsgrad ? " amsgrad" : "", i, (double)x[i]);
        checked++;
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(P), clReleaseMemObject(G);
    }
    assert_true(checked >= (size_t)CLOPT_RULE_COUNT + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nadam_long_run),
        cmocka_unit_test(test_nadam_optimizer_past_underflow),
        cmocka_unit_test(test_decoupled_decay_precision),
        cmocka_unit_test(test_clip_huge_gradients),
        cmocka_unit_test(test_unrepresentable_settings_refused),
        cmocka_unit_test(test_every_field_validated),
        cmocka_unit_test(test_check_finite_reports),
        cmocka_unit_test(test_nan_gradient_spreads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
