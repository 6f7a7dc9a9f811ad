/* SPDX-License-Identifier: MIT */
/*
 * test_kernels, op level (one executable with test_kernels.c, which has the test data, the
 * tolerance and the comparisons of test_kernels.h): every element-wise rule's fused kernel
 * through clopt_enqueue_step and the named wrappers, over sizes from 1 to 2^20, offsets and
 * packed buffers, gradient scales, special gradients, the caller's queue and events, against
 * the double-precision references of tests/ref; and the wrappers bit for bit
 * clopt_enqueue_step.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clopt.h"
#include "ref.h"
#include "test_kernels.h"

#define TWO_POW_100 1267650600228229401496703205376.0

/* ================================================================================== */
/* Op level                                                                           */
/* ================================================================================== */

enum { Q_NULL = 0, Q_CTX_EVENTS = 1, Q_OWN = 2 };

typedef struct kcase {
    const char *label;
    clopt_rule rule;
    clopt_hparams hp;
    size_t n;
    unsigned steps;
    double grad_scale; /* what the kernel divides by (1 = none) */
    unsigned special;
    unsigned hess_mask; /* Sophia: bit t-1 = a Hessian estimate at step t */
    int packed;         /* every tensor in one cl_mem */
    int aligned;        /* every offset 0 */
    int qmode;
    int wrapper; /* use clopt_enqueue_sgd/adam/adamw */
    double gmag;
    uint64_t seed;
} kcase;

static kcase kc_make(clopt_rule rule, const char *label, size_t n, unsigned steps, uint64_t seed)
{
    kcase k;
    memset(&k, 0, sizeof k);
    k.label = label;
    k.rule = rule;
    test_hparams(rule, &k.hp);
    k.n = n;
    k.steps = steps;
    k.grad_scale = 1.0;
    k.gmag = 1.0;
    k.seed = seed;
    return k;
}

typedef struct tensor_slot {
    size_t buf;    /* index into bufs */
    size_t offset; /* elements */
} tensor_slot;

static size_t run_op_case(clopt_ctx *ctx, const kcase *kc)
{
    const clopt_rule rule = kc->rule;
    const clopt_hparams *hp = &kc->hp;
    const size_t n = kc->n, ns = ref_state_count(rule, hp);
    const int has_hess = rule == CLOPT_SOPHIA && kc->hess_mask != 0;
    char label[160];
    snprintf(label, sizeof label, "op %s/%s n=%zu T=%u", clopt_rule_name(rule), kc->label, n,
             kc->steps);
    if (clopt_rule_state_count(rule, hp) != ns) {
        print_error("%s: library state count %zu != reference %zu\n", label,
                    clopt_rule_state_count(rule, hp), ns);
        return 1;
    }

    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_device_id dev = clopt_ctx_cl_device(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx), own = NULL;
    cl_int err;
    if (kc->qmode == Q_OWN) {
        own = clCreateCommandQueue(clc, dev, 0, &err);
        assert_int_equal(err, CL_SUCCESS);
        q = own;
    }

    /* ---- layout: tensors 0 = θ, 1 = g, 2.. = states, last = ĥ ---- */
    const size_t nt = 2 + ns + (has_hess ? 1 : 0);
    tensor_slot slot[2 + CLOPT_MAX_STATE + 1];
    size_t nbufs, bsize[2 + CLOPT_MAX_STATE + 1];
    uint64_t lrng = kc->seed ^ 0xABCDEF12345ull;
    if (kc->packed) {
        nbufs = 1;
        size_t cur = kc->aligned ? 0 : ref_splitmix64(&lrng) % 7;
        for (size_t k = 0; k < nt; k++) {
            slot[k].buf = 0;
            slot[k].offset = cur;
            cur += n + (kc->aligned ? 0 : 1 + ref_splitmix64(&lrng) % 5);
        }
        bsize[0] = cur + GUARD;
    } else {
        nbufs = nt;
        for (size_t k = 0; k < nt; k++) {
            slot[k].buf = k;
            slot[k].offset = kc->aligned ? 0 : (size_t)(ref_splitmix64(&lrng) % 41);
            bsize[k] = slot[k].offset + n + (kc->aligned ? 0 : GUARD);
        }
    }
    cl_mem mem[2 + CLOPT_MAX_STATE + 1];
    float *init[2 + CLOPT_MAX_STATE + 1];
    for (size_t b = 0; b < nbufs; b++) {
        mem[b] = clCreateBuffer(clc, CL_MEM_READ_WRITE, bsize[b] * sizeof(float), NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        init[b] = xmalloc(bsize[b] * sizeof(float));
        for (size_t i = 0; i < bsize[b]; i++) init[b][i] = sentinel(i + 7 * b);
    }

    /* ---- data ---- */
    gen G;
    gen_init(&G, kc->seed, n, kc->special, kc->gmag, kc->grad_scale, kc->steps);
    float *theta0 = xmalloc(n * sizeof(float)), *graw = xmalloc(n * sizeof(float));
    float *hraw = xmalloc(n * sizeof(float));
    gen_param(&G, theta0, 0.5);
    memcpy(init[slot[0].buf] + slot[0].offset, theta0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) init[slot[1].buf][slot[1].offset + i] = 0.0f;
    for (size_t k = 0; k < ns; k++) {
        float v = (float)ref_state_init(rule, hp, k);
        for (size_t i = 0; i < n; i++) init[slot[2 + k].buf][slot[2 + k].offset + i] = v;
    }
    if (has_hess)
        for (size_t i = 0; i < n; i++) init[slot[nt - 1].buf][slot[nt - 1].offset + i] = 0.0f;
    for (size_t b = 0; b < nbufs; b++)
        assert_int_equal(write_region(q, mem[b], 0, bsize[b], init[b], 1, NULL), CL_SUCCESS);

    /* ---- reference ---- */
    double *arr[1 + CLOPT_MAX_STATE];
    arr[0] = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) arr[0][i] = theta0[i];
    double *st[CLOPT_MAX_STATE] = {0};
    for (size_t k = 0; k < ns; k++) {
        arr[1 + k] = st[k] = xmalloc(n * sizeof(double));
        double v = (double)(float)ref_state_init(rule, hp, k);
        for (size_t i = 0; i < n; i++) st[k][i] = v;
    }
    double *dg = xmalloc(n * sizeof(double)), *dh = xmalloc(n * sizeof(double));
    double *mag = xcalloc(n, sizeof(double));
    track tr;
    track_init(&tr, n, 1 + ns, arr);
    double mu_chain = 1.0;
    size_t bad = 0, guarded = 0;
    int hess_written = 0;

    clopt_step_args args;
    clopt_step_args_init(&args);
    args.param.buffer = mem[slot[0].buf];
    args.param.offset = slot[0].offset;
    args.grad.buffer = mem[slot[1].buf];
    args.grad.offset = slot[1].offset;
    for (size_t k = 0; k < ns; k++) {
        args.state[k].buffer = mem[slot[2 + k].buf];
        args.state[k].offset = slot[2 + k].offset;
    }
    args.grad_scale = kc->grad_scale == 1.0 ? 0.0 : kc->grad_scale; /* 0 is taken as 1 */
    if (kc->grad_scale == 1.0 && (kc->seed & 1)) args.grad_scale = 1.0;

    for (unsigned t = 1; t <= kc->steps; t++) {
        gen_grads(&G, t, graw);
        if (rule == CLOPT_LION || rule == CLOPT_SOPHIA)
            guarded += sign_guard(rule, hp, kc->grad_scale, n, graw, st[0], mag);
        const int hess_now = has_hess && t <= 32 && ((kc->hess_mask >> (t - 1)) & 1u);
        if (hess_now) {
            gen_hess(&G, hraw);
            hess_written = 1;
        }

        cl_event wev[2];
        cl_uint nwait = 0;
        if (kc->qmode == Q_OWN) {
            assert_int_equal(write_region(q, mem[slot[1].buf], slot[1].offset, n, graw, 0,
                                          &wev[nwait++]),
                             CL_SUCCESS);
            if (hess_now)
                assert_int_equal(write_region(q, mem[slot[nt - 1].buf], slot[nt - 1].offset, n,
                                              hraw, 0, &wev[nwait++]),
                                 CL_SUCCESS);
        } else {
            assert_int_equal(write_region(q, mem[slot[1].buf], slot[1].offset, n, graw, 1, NULL),
                             CL_SUCCESS);
            if (hess_now)
                assert_int_equal(
                    write_region(q, mem[slot[nt - 1].buf], slot[nt - 1].offset, n, hraw, 1, NULL),
                    CL_SUCCESS);
        }
        args.hessian.buffer = hess_now ? mem[slot[nt - 1].buf] : NULL;
        args.hessian.offset = hess_now ? slot[nt - 1].offset : 0;
        if (rule == CLOPT_NADAM) {
            args.mu_product = mu_chain;
            double lp = clopt_nadam_mu_product(hp, t - 1);
            if (fabs(lp - mu_chain) > 1e-12 * mu_chain) {
                print_error("%s: clopt_nadam_mu_product(t=%u) %.17g vs chain %.17g\n", label,
                            t - 1, lp, mu_chain);
                bad++;
            }
        }

        cl_event ev = NULL;
        cl_command_queue use_q = kc->qmode == Q_NULL ? NULL : q;
        cl_event *evp = kc->qmode == Q_NULL ? NULL : &ev;
        clopt_status s;
        if (kc->wrapper && rule == CLOPT_SGD)
            s = clopt_enqueue_sgd(ctx, use_q, hp, &args, n, t, nwait, nwait ? wev : NULL, evp);
        else if (kc->wrapper && rule == CLOPT_ADAM)
            s = clopt_enqueue_adam(ctx, use_q, hp, &args, n, t, nwait, nwait ? wev : NULL, evp);
        else if (kc->wrapper && rule == CLOPT_ADAMW)
            s = clopt_enqueue_adamw(ctx, use_q, hp, &args, n, t, nwait, nwait ? wev : NULL, evp);
        else
            s = clopt_enqueue_step(ctx, use_q, rule, hp, &args, n, t, nwait, nwait ? wev : NULL,
                                   evp);
        for (cl_uint w = 0; w < nwait; w++) clReleaseEvent(wev[w]);
        if (s != CLOPT_SUCCESS) {
            print_error("%s: step %u returned %s (%s)\n", label, t, clopt_status_name(s),
                        clopt_ctx_last_error(ctx));
            bad++;
            break;
        }
        if (evp) {
            assert_non_null(ev);
            assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
            cl_int es = 0;
            assert_int_equal(clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof es, &es,
                                            NULL),
                             CL_SUCCESS);
            assert_int_equal(es, CL_COMPLETE);
            clReleaseEvent(ev);
        }

        for (size_t i = 0; i < n; i++) dg[i] = graw[i];
        if (hess_now)
            for (size_t i = 0; i < n; i++) dh[i] = hraw[i];
        track_before(&tr, arr);
        ref_step(rule, hp, t, n, arr[0], dg, st, hess_now ? dh : NULL, &mu_chain,
                 kc->grad_scale);
        track_after(&tr, arr);
    }
    assert_int_equal(clFinish(q), CL_SUCCESS);

    /* ---- read back and compare ---- */
    if (!bad) {
        float **out = xmalloc(nbufs * sizeof(float *));
        for (size_t b = 0; b < nbufs; b++) {
            out[b] = xmalloc(bsize[b] * sizeof(float));
            assert_int_equal(clEnqueueReadBuffer(q, mem[b], CL_TRUE, 0, bsize[b] * sizeof(float),
                                                 out[b], 0, NULL, NULL),
                             CL_SUCCESS);
        }
        const double rel = tol_rel(rule, hp, kc->steps);
        bad += compare_tracked(label, "param", out[slot[0].buf] + slot[0].offset, arr[0],
                               tr.env[0], tr.var[0], n, rel);
        for (size_t k = 0; k < ns; k++)
            bad += compare_tracked(label, ref_state_name(rule, hp, k),
                                   out[slot[2 + k].buf] + slot[2 + k].offset, st[k],
                                   tr.env[1 + k], tr.var[1 + k], n, rel);
        /* read-only inputs unchanged */
        if (memcmp(out[slot[1].buf] + slot[1].offset, graw, n * sizeof(float)) != 0) {
            print_error("%s: the gradient tensor was modified\n", label);
            bad++;
        }
        if (hess_written &&
            memcmp(out[slot[nt - 1].buf] + slot[nt - 1].offset, hraw, n * sizeof(float)) != 0) {
            print_error("%s: the hessian estimate tensor was modified\n", label);
            bad++;
        }
        /* nothing outside the tensors touched */
        for (size_t b = 0; b < nbufs; b++) {
            /* copy the regions the device legitimately holds into init so one scan works */
            for (size_t k = 0; k < nt; k++)
                if (slot[k].buf == b)
                    memcpy(init[b] + slot[k].offset, out[b] + slot[k].offset, n * sizeof(float));
            bad += check_outside(label, "a", out[b], init[b], bsize[b], 0, 0);
        }
        for (size_t b = 0; b < nbufs; b++) free(out[b]);
        free(out);
    }
    if (g_verbose && guarded)
        print_message("  %s: %zu gradient elements sign-guarded\n", label, guarded);

    track_free(&tr);
    for (size_t a = 0; a < 1 + ns; a++) free(arr[a]);
    free(dg);
    free(dh);
    free(mag);
    free(theta0);
    free(graw);
    free(hraw);
    gen_free(&G);
    for (size_t b = 0; b < nbufs; b++) {
        clReleaseMemObject(mem[b]);
        free(init[b]);
    }
    if (own) clReleaseCommandQueue(own);
    return bad;
}

static size_t run_cases(clopt_ctx *ctx, const kcase *cases, size_t count)
{
    size_t bad = 0;
    for (size_t c = 0; c < count; c++) {
        clock_t t0 = clock();
        size_t b = run_op_case(ctx, &cases[c]);
        if (g_verbose)
            print_message("%-10s %-24s n=%-8zu T=%-3u %s (%.2fs cpu)\n",
                          clopt_rule_name(cases[c].rule), cases[c].label, cases[c].n,
                          cases[c].steps, b ? "FAIL" : "ok",
                          (double)(clock() - t0) / CLOCKS_PER_SEC);
        bad += b;
    }
    return bad;
}

#define NCASES(a) (sizeof(a) / sizeof((a)[0]))

/* Exactly representable coefficients, so δ_hp = 0 and the tolerance is the tight one. */
#define EXACT_B1 0.875
#define EXACT_B2 0.9990234375 /* 1 - 2^-10 */

void test_op_sgd(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[10];
    size_t k = 0;
    c[k] = kc_make(CLOPT_SGD, "plain", 1, 3, 11);
    c[k++].aligned = 1;
    c[k] = kc_make(CLOPT_SGD, "plain_wd_special", 4099, 5, 12);
    c[k].hp.weight_decay = 1e-2;
    c[k++].special = SP_ZERO | SP_TINY | SP_HUGE;
    c[k] = kc_make(CLOPT_SGD, "momentum_huge", 1023, 10, 13);
    c[k].hp.momentum = 0.9;
    c[k].special = SP_HUGE | SP_ZERO;
    c[k++].qmode = Q_CTX_EVENTS;
    c[k] = kc_make(CLOPT_SGD, "momentum_dampening", 7, 6, 14);
    c[k].hp.momentum = 0.875;
    c[k++].hp.dampening = 0.25;
    c[k] = kc_make(CLOPT_SGD, "nesterov_wd_zerostep", 4099, 8, 15);
    c[k].hp.momentum = 0.9;
    c[k].hp.nesterov = 1;
    c[k].hp.weight_decay = 1e-3;
    c[k++].special = SP_ZERO_STEP | SP_TINY;
    c[k] = kc_make(CLOPT_SGD, "maximize_momentum_wd", 1023, 4, 16);
    c[k].hp.momentum = 0.5;
    c[k].hp.maximize = 1;
    c[k].hp.weight_decay = 1e-2;
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_SGD, "grad_scale_2^100", 1023, 5, 17);
    c[k].hp.momentum = 0.9;
    c[k].grad_scale = TWO_POW_100;
    c[k++].special = SP_TINY | SP_ZERO;
    c[k] = kc_make(CLOPT_SGD, "nesterov_big_packed", BIG, 3, 18);
    c[k].hp.momentum = 0.9;
    c[k].hp.nesterov = 1;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_SGD, "grad_scale_0.25_ownqueue", 7, 2, 19);
    c[k].grad_scale = 0.25;
    c[k].hp.momentum = 0.9;
    c[k].hp.dampening = 0.5;
    c[k++].qmode = Q_OWN;
    c[k] = kc_make(CLOPT_SGD, "plain_big", BIG, 2, 20);
    c[k++].wrapper = 1;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_adam(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[11];
    size_t k = 0;
    c[k++] = kc_make(CLOPT_ADAM, "default", 1, 20, 21);
    c[k] = kc_make(CLOPT_ADAM, "special_zerostep", 4099, 12, 22);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_ADAM, "amsgrad_sched", 1023, 15, 23);
    c[k].hp.amsgrad = 1;
    c[k++].special = SP_SCHED;
    c[k] = kc_make(CLOPT_ADAM, "maximize_l2", 7, 10, 24);
    c[k].hp.maximize = 1;
    c[k].hp.weight_decay = 1e-2;
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_ADAM, "exact_eps1e-3", 1023, 6, 25);
    c[k].hp.beta1 = EXACT_B1;
    c[k].hp.beta2 = EXACT_B2;
    c[k].hp.eps = 1e-3;
    c[k++].gmag = 1e-3;
    c[k] = kc_make(CLOPT_ADAM, "amsgrad_grad_scale_2^100", 4099, 6, 26);
    c[k].hp.amsgrad = 1;
    c[k].grad_scale = TWO_POW_100;
    c[k].special = SP_TINY | SP_SCHED;
    c[k++].qmode = Q_OWN;
    c[k++] = kc_make(CLOPT_ADAM, "default_big", BIG, 3, 27);
    c[k] = kc_make(CLOPT_ADAM, "l2_packed", 1023, 5, 28);
    c[k].hp.weight_decay = 0.1;
    c[k].packed = 1;
    c[k++].qmode = Q_CTX_EVENTS;
    c[k] = kc_make(CLOPT_ADAM, "amsgrad_maximize_aligned", 4099, 4, 29);
    c[k].hp.amsgrad = 1;
    c[k].hp.maximize = 1;
    c[k++].aligned = 1;
    c[k] = kc_make(CLOPT_ADAM, "single_step_n7", 7, 1, 30);
    c[k++].hp.weight_decay = 0.5;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_adamw(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAMW, "default_special", 4099, 12, 31);
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_ADAMW, "amsgrad_wd0.1_sched", 1023, 15, 32);
    c[k].hp.amsgrad = 1;
    c[k].hp.weight_decay = 0.1;
    c[k].special = SP_SCHED;
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_ADAMW, "maximize", 7, 5, 33);
    c[k++].hp.maximize = 1;
    c[k] = kc_make(CLOPT_ADAMW, "default_big", BIG, 3, 34);
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_ADAMW, "exact_eps1e-3", 1, 8, 35);
    c[k].hp.beta1 = EXACT_B1;
    c[k].hp.beta2 = EXACT_B2;
    c[k].hp.eps = 1e-3;
    c[k++].gmag = 1e-3;
    c[k] = kc_make(CLOPT_ADAMW, "grad_scale_3", 1023, 4, 36);
    c[k++].grad_scale = 3.0;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_adagrad(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[10];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAGRAD, "default_special", 1023, 10, 41);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_ADAGRAD, "lr_decay_init_acc", 4099, 8, 42);
    c[k].hp.lr_decay = 0.1;
    c[k++].hp.initial_accumulator_value = 0.5;
    c[k] = kc_make(CLOPT_ADAGRAD, "l2_maximize", 7, 6, 43);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.maximize = 1;
    c[k] = kc_make(CLOPT_ADAGRAD, "grad_scale_2^100", 1023, 4, 44);
    c[k].grad_scale = TWO_POW_100;
    c[k++].hp.lr_decay = 0.01;
    c[k++] = kc_make(CLOPT_ADAGRAD, "default_big", BIG, 3, 45);
    c[k] = kc_make(CLOPT_ADAGRAD, "n1_init_packed", 1, 20, 46);
    c[k].hp.initial_accumulator_value = 0.1;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_ADAGRAD, "eps_visible_g1e-9", 1023, 5, 47);
    c[k++].gmag = 1e-9;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_adadelta(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[10];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADADELTA, "default_special", 4099, 10, 51);
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_ADADELTA, "l2_maximize_lr0.5", 1023, 8, 52);
    c[k].hp.weight_decay = 1e-2;
    c[k].hp.maximize = 1;
    c[k++].hp.lr = 0.5;
    c[k] = kc_make(CLOPT_ADADELTA, "exact_rho", 1, 20, 53);
    c[k++].hp.rho = EXACT_B1;
    c[k++] = kc_make(CLOPT_ADADELTA, "default_big", BIG, 2, 54);
    c[k] = kc_make(CLOPT_ADADELTA, "grad_scale_2^100", 7, 5, 55);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_ADADELTA, "eps_visible_g1e-3", 1023, 6, 56);
    c[k++].gmag = 1e-3;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_rmsprop(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[12];
    size_t k = 0;
    c[k] = kc_make(CLOPT_RMSPROP, "plain_special", 1023, 10, 61);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_RMSPROP, "momentum", 4099, 10, 62);
    c[k++].hp.momentum = 0.9;
    c[k] = kc_make(CLOPT_RMSPROP, "centered", 7, 12, 63);
    c[k++].hp.centered = 1;
    c[k] = kc_make(CLOPT_RMSPROP, "momentum_centered_l2", 1023, 15, 64);
    c[k].hp.momentum = 0.9;
    c[k].hp.centered = 1;
    c[k].hp.weight_decay = 1e-2;
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_RMSPROP, "maximize_l2", 1, 5, 65);
    c[k].hp.maximize = 1;
    c[k++].hp.weight_decay = 0.1;
    c[k] = kc_make(CLOPT_RMSPROP, "mom_centered_grad_scale_2^100", 1023, 4, 66);
    c[k].hp.momentum = 0.5;
    c[k].hp.centered = 1;
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_RMSPROP, "mom_centered_big", BIG, 3, 67);
    c[k].hp.momentum = 0.9;
    c[k++].hp.centered = 1;
    c[k] = kc_make(CLOPT_RMSPROP, "centered_maximize_exact_packed", 4099, 6, 68);
    c[k].hp.centered = 1;
    c[k].hp.maximize = 1;
    c[k].hp.alpha = 0.96875;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_RMSPROP, "eps_visible_g1e-7_centered", 1023, 6, 69);
    c[k].hp.centered = 1;
    c[k++].gmag = 1e-7;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_adamax(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAMAX, "default_special", 4099, 12, 71);
    c[k++].special = SP_ZERO | SP_TINY | SP_HUGE;
    c[k] = kc_make(CLOPT_ADAMAX, "l2_maximize", 1023, 8, 72);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.maximize = 1;
    c[k] = kc_make(CLOPT_ADAMAX, "n7_sched", 7, 20, 73);
    c[k++].special = SP_SCHED;
    c[k++] = kc_make(CLOPT_ADAMAX, "default_big", BIG, 3, 74);
    c[k] = kc_make(CLOPT_ADAMAX, "grad_scale_0.5", 1, 4, 75);
    c[k++].grad_scale = 0.5;
    c[k] = kc_make(CLOPT_ADAMAX, "eps_visible_g1e-8", 1023, 6, 76);
    c[k++].gmag = 1e-8;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_nadam(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_NADAM, "default_special", 1023, 20, 81);
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_NADAM, "l2_psi0.01", 4099, 8, 82);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.momentum_decay = 0.01;
    c[k++] = kc_make(CLOPT_NADAM, "n1_chain", 1, 25, 83);
    c[k] = kc_make(CLOPT_NADAM, "grad_scale_2^100", 7, 5, 84);
    c[k++].grad_scale = TWO_POW_100;
    c[k++] = kc_make(CLOPT_NADAM, "default_big", BIG, 3, 85);
    c[k] = kc_make(CLOPT_NADAM, "eps_visible_g1e-8", 1023, 6, 86);
    c[k++].gmag = 1e-8;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_radam(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[9];
    size_t k = 0;
    c[k++] = kc_make(CLOPT_RADAM, "default_threshold", 1023, 10, 91);
    c[k] = kc_make(CLOPT_RADAM, "l2_special", 4099, 8, 92);
    c[k].hp.weight_decay = 1e-2;
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_RADAM, "beta2_0.99", 7, 12, 93);
    c[k++].hp.beta2 = 0.99;
    c[k++] = kc_make(CLOPT_RADAM, "default_big", BIG, 6, 94);
    c[k] = kc_make(CLOPT_RADAM, "grad_scale_2^100", 1023, 7, 95);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_RADAM, "eps_visible_g1e-8", 1023, 8, 96);
    c[k++].gmag = 1e-8;
    c[k++] = kc_make(CLOPT_RADAM, "n1_single_step", 1, 1, 97);
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_adamod(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[9];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAMOD, "default_special", 1023, 12, 101);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_ADAMOD, "wd_beta3_0.99", 4099, 8, 102);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.beta3 = 0.99;
    c[k++] = kc_make(CLOPT_ADAMOD, "n7", 7, 20, 103);
    c[k++] = kc_make(CLOPT_ADAMOD, "default_big", BIG, 3, 104);
    c[k] = kc_make(CLOPT_ADAMOD, "grad_scale_2^100", 1023, 5, 105);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_ADAMOD, "eps_visible_g1e-8", 1023, 6, 106);
    c[k++].gmag = 1e-8;
    c[k++] = kc_make(CLOPT_ADAMOD, "n1_single_step", 1, 1, 107);
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_diffgrad(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_DIFFGRAD, "default_special", 1023, 12, 111);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_DIFFGRAD, "l2", 4099, 6, 112);
    c[k++].hp.weight_decay = 1e-2;
    c[k++] = kc_make(CLOPT_DIFFGRAD, "n1", 1, 20, 113);
    c[k++] = kc_make(CLOPT_DIFFGRAD, "default_big", BIG, 3, 114);
    c[k] = kc_make(CLOPT_DIFFGRAD, "grad_scale_2^100", 7, 5, 115);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_DIFFGRAD, "eps_visible_g1e-8", 1023, 6, 116);
    c[k++].gmag = 1e-8;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_lion(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[7];
    size_t k = 0;
    c[k] = kc_make(CLOPT_LION, "wd0.1_special", 1023, 15, 121);
    c[k].hp.weight_decay = 0.1;
    c[k++].special = SP_ZERO | SP_TINY | SP_HUGE | SP_ZERO_STEP;
    c[k++] = kc_make(CLOPT_LION, "default", 4099, 8, 122);
    c[k] = kc_make(CLOPT_LION, "grad_scale_3", 7, 20, 123);
    c[k].grad_scale = 3.0;
    c[k++].hp.weight_decay = 1e-2;
    c[k] = kc_make(CLOPT_LION, "default_big", BIG, 3, 124);
    c[k++].hp.weight_decay = 0.1;
    c[k] = kc_make(CLOPT_LION, "exact_packed", 1023, 6, 125);
    c[k].hp.beta1 = EXACT_B1;
    c[k].hp.beta2 = 0.96875;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_LION, "n1_single_step_wd", 1, 1, 126);
    c[k++].hp.weight_decay = 0.5;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

void test_op_sophia(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[11];
    size_t k = 0;
    c[k] = kc_make(CLOPT_SOPHIA, "no_hessian_special", 1023, 8, 131);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_SOPHIA, "hessian_at_2_4_5", 4099, 6, 132);
    c[k++].hess_mask = (1u << 1) | (1u << 3) | (1u << 4);
    c[k] = kc_make(CLOPT_SOPHIA, "maximize_hessian_at_1", 7, 4, 133);
    c[k].hp.maximize = 1;
    c[k++].hess_mask = 1u;
    c[k] = kc_make(CLOPT_SOPHIA, "huge_tiny_hessian_every", 1023, 6, 134);
    c[k].special = SP_HUGE | SP_TINY | SP_ZERO;
    c[k].hess_mask = 0x3Fu;
    c[k++].qmode = Q_OWN;
    c[k] = kc_make(CLOPT_SOPHIA, "hessian_big", BIG, 3, 135);
    c[k++].hess_mask = 1u << 1;
    c[k] = kc_make(CLOPT_SOPHIA, "grad_scale_0.5_hessian_at_3", 1023, 4, 136);
    c[k].grad_scale = 0.5;
    c[k++].hess_mask = 1u << 2;
    c[k] = kc_make(CLOPT_SOPHIA, "small_gamma_packed", 4099, 8, 137);
    c[k].hp.bs = 1.0; /* γh comparable to |m|: the ratio is not always clipped */
    c[k].hp.rho = 0.5;
    c[k].hess_mask = 0x55u;
    c[k].packed = 1;
    c[k++].qmode = Q_CTX_EVENTS;
    c[k] = kc_make(CLOPT_SOPHIA, "eps_visible_g1e-15", 1023, 4, 138);
    c[k++].gmag = 1e-15;
    c[k] = kc_make(CLOPT_SOPHIA, "n1_hessian_at_1_2", 1, 3, 139);
    c[k++].hess_mask = 3u;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

/* The named wrappers must give bit-identical results to clopt_enqueue_step. */
void test_op_wrappers_identical(void **state)
{
    clopt_ctx *ctx = *state;
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    const clopt_rule rules[3] = {CLOPT_SGD, CLOPT_ADAM, CLOPT_ADAMW};
    const size_t n = 1029;
    for (int r = 0; r < 3; r++) {
        clopt_hparams hp;
        test_hparams(rules[r], &hp);
        hp.momentum = rules[r] == CLOPT_SGD ? 0.9 : 0.0;
        size_t ns = ref_state_count(rules[r], &hp);
        float *out[2];
        for (int w = 0; w < 2; w++) {
            cl_int err;
            cl_mem m = clCreateBuffer(clc, CL_MEM_READ_WRITE, (2 + ns) * n * sizeof(float), NULL,
                                      &err);
            assert_int_equal(err, CL_SUCCESS);
            float *h = xmalloc((2 + ns) * n * sizeof(float));
            uint64_t s = 99;
            for (size_t i = 0; i < 2 * n; i++) h[i] = (float)ref_normal(&s);
            for (size_t i = 2 * n; i < (2 + ns) * n; i++) h[i] = 0;
            assert_int_equal(write_region(q, m, 0, (2 + ns) * n, h, 1, NULL), CL_SUCCESS);
            clopt_step_args a;
            clopt_step_args_init(&a);
            a.param.buffer = m;
            a.grad.buffer = m;
            a.grad.offset = n;
            for (size_t k = 0; k < ns; k++) {
                a.state[k].buffer = m;
                a.state[k].offset = (2 + k) * n;
            }
            for (uint64_t t = 1; t <= 3; t++) {
                clopt_status st;
                if (w == 0)
                    st = clopt_enqueue_step(ctx, NULL, rules[r], &hp, &a, n, t, 0, NULL, NULL);
                else if (rules[r] == CLOPT_SGD)
                    st = clopt_enqueue_sgd(ctx, NULL, &hp, &a, n, t, 0, NULL, NULL);
                else if (rules[r] == CLOPT_ADAM)
                    st = clopt_enqueue_adam(ctx, NULL, &hp, &a, n, t, 0, NULL, NULL);
                else
                    st = clopt_enqueue_adamw(ctx, NULL, &hp, &a, n, t, 0, NULL, NULL);
                assert_int_equal(st, CLOPT_SUCCESS);
            }
            assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, (2 + ns) * n * sizeof(float), h,
                                                 0, NULL, NULL),
                             CL_SUCCESS);
            out[w] = h;
            clReleaseMemObject(m);
        }
        if (memcmp(out[0], out[1], (2 + ns) * n * sizeof(float)) != 0) {
            print_error("wrapper of %s differs from clopt_enqueue_step\n",
                        clopt_rule_name(rules[r]));
            fail();
        }
        free(out[0]);
        free(out[1]);
    }
}
