/* SPDX-License-Identifier: MIT */
/*
 * test_kernels, optimizer level (one executable with test_kernels.c, which has the test data,
 * the tolerance and the comparisons of test_kernels.h): clopt_optimizer_* with one or two
 * parameters sharing buffers, every rule, hyperparameters changed between steps, Sophia with
 * and without a Hessian buffer, against the double-precision references of tests/ref; the
 * state read back both ways, nothing outside the tensors written.
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
/* Optimizer level                                                                    */
/* ================================================================================== */

typedef struct ocase {
    const char *label;
    clopt_rule rule;
    clopt_hparams hp;
    size_t n[3];
    size_t nparams;
    unsigned steps;
    unsigned special;
    int change_hp_at;   /* step before which set_hparams changes lr/wd (0 = never) */
    int hess_param0;    /* Sophia: parameter 0 gets a hessian buffer; the others none */
    uint64_t seed;
} ocase;

static ocase oc_make(clopt_rule rule, const char *label, size_t n0, size_t n1, unsigned steps,
                     uint64_t seed)
{
    ocase o;
    memset(&o, 0, sizeof o);
    o.label = label;
    o.rule = rule;
    test_hparams(rule, &o.hp);
    o.n[0] = n0;
    o.n[1] = n1;
    o.nparams = n1 ? 2 : 1;
    o.steps = steps;
    o.seed = seed;
    return o;
}

static int hparams_equal(const clopt_hparams *a, const clopt_hparams *b)
{
    return a->lr == b->lr && a->beta1 == b->beta1 && a->beta2 == b->beta2 &&
           a->beta3 == b->beta3 && a->eps == b->eps && a->weight_decay == b->weight_decay &&
           a->momentum == b->momentum && a->dampening == b->dampening && a->alpha == b->alpha &&
           a->rho == b->rho && a->bs == b->bs && a->lr_decay == b->lr_decay &&
           a->initial_accumulator_value == b->initial_accumulator_value &&
           a->momentum_decay == b->momentum_decay && a->hess_interval == b->hess_interval &&
           a->nesterov == b->nesterov && a->amsgrad == b->amsgrad && a->maximize == b->maximize &&
           a->centered == b->centered;
}

static size_t run_opt_case(clopt_ctx *ctx, const ocase *oc)
{
    const clopt_rule rule = oc->rule;
    clopt_hparams hp = oc->hp;
    const size_t ns = ref_state_count(rule, &hp), np = oc->nparams;
    char label[160];
    snprintf(label, sizeof label, "opt %s/%s T=%u", clopt_rule_name(rule), oc->label, oc->steps);
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    cl_int err;

    /* all parameters in one buffer, all gradients in another, Hessian estimates in a third,
       each at its own (odd) offset */
    size_t poff[3], goff[3], hoff[3], ptot = 3, gtot = 8, htot = 1;
    for (size_t p = 0; p < np; p++) {
        poff[p] = ptot;
        ptot += oc->n[p] + 2 * p + 1;
        goff[p] = gtot;
        gtot += oc->n[p] + 3;
        hoff[p] = htot;
        htot += oc->n[p] + 5;
    }
    ptot += GUARD;
    gtot += GUARD;
    htot += GUARD;
    cl_mem pm = clCreateBuffer(clc, CL_MEM_READ_WRITE, ptot * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem gm = clCreateBuffer(clc, CL_MEM_READ_WRITE, gtot * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem hm = clCreateBuffer(clc, CL_MEM_READ_WRITE, htot * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    float *pinit = xmalloc(ptot * sizeof(float)), *ginit = xmalloc(gtot * sizeof(float));
    float *hinit = xcalloc(htot, sizeof(float));
    for (size_t i = 0; i < ptot; i++) pinit[i] = sentinel(i);
    for (size_t i = 0; i < gtot; i++) ginit[i] = 0.0f;

    gen G[3];
    double *arr[3][1 + CLOPT_MAX_STATE];
    double *st[3][CLOPT_MAX_STATE];
    double *dg[3], *dh[3], *mag[3], mu[3];
    float *graw[3], *hraw[3];
    track tr[3];
    for (size_t p = 0; p < np; p++) {
        size_t n = oc->n[p];
        gen_init(&G[p], oc->seed * 31 + p, n, oc->special, 1.0, 1.0, oc->steps);
        float *th = xmalloc(n * sizeof(float));
        gen_param(&G[p], th, 0.5);
        memcpy(pinit + poff[p], th, n * sizeof(float));
        arr[p][0] = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) arr[p][0][i] = th[i];
        free(th);
        memset(st[p], 0, sizeof st[p]);
        for (size_t k = 0; k < ns; k++) {
            arr[p][1 + k] = st[p][k] = xmalloc(n * sizeof(double));
            double v = (double)(float)ref_state_init(rule, &hp, k);
            for (size_t i = 0; i < n; i++) st[p][k][i] = v;
        }
        dg[p] = xmalloc(n * sizeof(double));
        dh[p] = xmalloc(n * sizeof(double));
        mag[p] = xcalloc(n, sizeof(double));
        graw[p] = xmalloc(n * sizeof(float));
        hraw[p] = xmalloc(n * sizeof(float));
        mu[p] = 1.0;
        track_init(&tr[p], n, 1 + ns, arr[p]);
    }
    assert_int_equal(write_region(q, pm, 0, ptot, pinit, 1, NULL), CL_SUCCESS);
    assert_int_equal(write_region(q, gm, 0, gtot, ginit, 1, NULL), CL_SUCCESS);
    assert_int_equal(write_region(q, hm, 0, htot, hinit, 1, NULL), CL_SUCCESS);

    size_t bad = 0;
    clopt_optimizer *opt = NULL;
    clopt_status s = clopt_optimizer_create(ctx, rule, &hp, &opt);
    if (s != CLOPT_SUCCESS || !opt) {
        print_error("%s: create returned %s (%s)\n", label, clopt_status_name(s),
                    clopt_ctx_last_error(ctx));
        bad++;
        goto cleanup;
    }
    if (clopt_optimizer_rule(opt) != rule) {
        print_error("%s: optimizer_rule mismatch\n", label);
        bad++;
    }
    for (size_t p = 0; p < np; p++) {
        clopt_tensor pt = {pm, poff[p]}, gt = {gm, goff[p]}, ht = {hm, hoff[p]};
        size_t idx = 99;
        const int with_h = rule == CLOPT_SOPHIA && oc->hess_param0 && p == 0;
        s = clopt_optimizer_add_param(opt, pt, gt, oc->n[p], with_h ? &ht : NULL, &idx);
        if (s != CLOPT_SUCCESS || idx != p) {
            print_error("%s: add_param %zu returned %s, index %zu (%s)\n", label, p,
                        clopt_status_name(s), idx, clopt_ctx_last_error(ctx));
            bad++;
            goto cleanup;
        }
    }
    if (clopt_optimizer_param_count(opt) != np) {
        print_error("%s: param_count %zu, expected %zu\n", label, clopt_optimizer_param_count(opt),
                    np);
        bad++;
    }
    {
        size_t expect_bytes = 0;
        for (size_t p = 0; p < np; p++) expect_bytes += oc->n[p] * ns * sizeof(float);
        if (clopt_optimizer_state_bytes(opt) < expect_bytes) {
            print_error("%s: state_bytes %zu < %zu\n", label, clopt_optimizer_state_bytes(opt),
                        expect_bytes);
            bad++;
        }
    }

    for (unsigned t = 1; t <= oc->steps && !bad; t++) {
        if (oc->change_hp_at && (int)t == oc->change_hp_at) {
            hp.lr *= 0.5;
            hp.weight_decay = hp.weight_decay > 0 ? hp.weight_decay * 2 : hp.weight_decay;
            s = clopt_optimizer_set_hparams(opt, &hp);
            clopt_hparams back;
            if (s != CLOPT_SUCCESS ||
                clopt_optimizer_get_hparams(opt, &back) != CLOPT_SUCCESS ||
                !hparams_equal(&back, &hp)) {
                print_error("%s: set_hparams/get_hparams round trip failed (%s)\n", label,
                            clopt_status_name(s));
                bad++;
                break;
            }
        }
        const int hess_now =
            rule == CLOPT_SOPHIA && hp.hess_interval > 0 && t % hp.hess_interval == 0;
        for (size_t p = 0; p < np; p++) {
            gen_grads(&G[p], t, graw[p]);
            if (rule == CLOPT_LION || rule == CLOPT_SOPHIA)
                sign_guard(rule, &hp, 1.0, oc->n[p], graw[p], st[p][0], mag[p]);
            assert_int_equal(write_region(q, gm, goff[p], oc->n[p], graw[p], 1, NULL), CL_SUCCESS);
            if (rule == CLOPT_SOPHIA && oc->hess_param0 && p == 0 && hess_now) {
                gen_hess(&G[p], hraw[p]);
                assert_int_equal(write_region(q, hm, hoff[p], oc->n[p], hraw[p], 1, NULL),
                                 CL_SUCCESS);
            }
        }
        cl_event ev = NULL;
        s = clopt_optimizer_step(opt, &ev);
        if (s != CLOPT_SUCCESS) {
            print_error("%s: step %u returned %s (%s)\n", label, t, clopt_status_name(s),
                        clopt_ctx_last_error(ctx));
            bad++;
            break;
        }
        if (ev) {
            assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
            clReleaseEvent(ev);
        } else {
            print_error("%s: step %u gave no event\n", label, t);
            bad++;
        }
        if (clopt_optimizer_step_count(opt) != t) {
            print_error("%s: step_count %llu after %u steps\n", label,
                        (unsigned long long)clopt_optimizer_step_count(opt), t);
            bad++;
        }
        for (size_t p = 0; p < np; p++) {
            for (size_t i = 0; i < oc->n[p]; i++) dg[p][i] = graw[p][i];
            const int with_h = rule == CLOPT_SOPHIA && oc->hess_param0 && p == 0 && hess_now;
            if (with_h)
                for (size_t i = 0; i < oc->n[p]; i++) dh[p][i] = hraw[p][i];
            track_before(&tr[p], arr[p]);
            ref_step(rule, &hp, t, oc->n[p], arr[p][0], dg[p], st[p], with_h ? dh[p] : NULL,
                     &mu[p], 1.0);
            track_after(&tr[p], arr[p]);
        }
    }
    assert_int_equal(clFinish(q), CL_SUCCESS);

    if (!bad) {
        float *pout = xmalloc(ptot * sizeof(float));
        assert_int_equal(clEnqueueReadBuffer(q, pm, CL_TRUE, 0, ptot * sizeof(float), pout, 0,
                                             NULL, NULL),
                         CL_SUCCESS);
        const double rel = tol_rel(rule, &hp, oc->steps);
        for (size_t p = 0; p < np; p++) {
            size_t n = oc->n[p];
            char l2[200];
            snprintf(l2, sizeof l2, "%s param%zu n=%zu", label, p, n);
            bad += compare_tracked(l2, "param", pout + poff[p], arr[p][0], tr[p].env[0],
                                   tr[p].var[0], n, rel);
            memcpy(pinit + poff[p], pout + poff[p], n * sizeof(float));
            float *sv = xmalloc(n * sizeof(float)), *sv2 = xmalloc(n * sizeof(float));
            for (size_t k = 0; k < ns; k++) {
                s = clopt_optimizer_read_state(opt, p, k, sv, n);
                if (s != CLOPT_SUCCESS) {
                    print_error("%s: read_state(%zu, %zu) returned %s\n", l2, p, k,
                                clopt_status_name(s));
                    bad++;
                    continue;
                }
                bad += compare_tracked(l2, ref_state_name(rule, &hp, k), sv, st[p][k],
                                       tr[p].env[1 + k], tr[p].var[1 + k], n, rel);
                clopt_tensor tt = {NULL, 0};
                s = clopt_optimizer_state(opt, p, k, &tt);
                if (s != CLOPT_SUCCESS || !tt.buffer ||
                    clEnqueueReadBuffer(q, tt.buffer, CL_TRUE, tt.offset * sizeof(float),
                                        n * sizeof(float), sv2, 0, NULL, NULL) != CL_SUCCESS ||
                    memcmp(sv, sv2, n * sizeof(float)) != 0) {
                    print_error("%s: optimizer_state(%zu, %zu) does not match read_state\n", l2,
                                p, k);
                    bad++;
                }
            }
            free(sv);
            free(sv2);
        }
        bad += check_outside(label, "param", pout, pinit, ptot, 0, 0);
        free(pout);
    }

cleanup:
    if (opt) clopt_optimizer_destroy(opt);
    for (size_t p = 0; p < np; p++) {
        for (size_t a = 0; a < 1 + ns; a++) free(arr[p][a]);
        free(dg[p]);
        free(dh[p]);
        free(mag[p]);
        free(graw[p]);
        free(hraw[p]);
        track_free(&tr[p]);
        gen_free(&G[p]);
    }
    free(pinit);
    free(ginit);
    free(hinit);
    clReleaseMemObject(pm);
    clReleaseMemObject(gm);
    clReleaseMemObject(hm);
    if (bad) print_error("%s: FAILED\n", label);
    else if (g_verbose) print_message("%s ok\n", label);
    return bad;
}

void test_optimizer_all_rules(void **state)
{
    clopt_ctx *ctx = *state;
    ocase c[24];
    size_t k = 0;
    c[k] = oc_make(CLOPT_SGD, "nesterov_wd_sethp", 4099, 7, 8, 201);
    c[k].hp.momentum = 0.9;
    c[k].hp.nesterov = 1;
    c[k].hp.weight_decay = 1e-3;
    c[k++].change_hp_at = 5;
    c[k] = oc_make(CLOPT_SGD, "plain", 1023, 0, 3, 202);
    c[k++].special = SP_ZERO;
    c[k] = oc_make(CLOPT_ADAM, "amsgrad_sethp", 4099, 7, 12, 203);
    c[k].hp.amsgrad = 1;
    c[k].special = SP_SCHED;
    c[k++].change_hp_at = 7;
    c[k++] = oc_make(CLOPT_ADAMW, "default", 1023, 1, 10, 204);
    c[k] = oc_make(CLOPT_ADAGRAD, "lr_decay_init_acc", 4099, 7, 8, 205);
    c[k].hp.lr_decay = 0.05;
    c[k++].hp.initial_accumulator_value = 0.25;
    c[k++] = oc_make(CLOPT_ADADELTA, "default", 1023, 7, 8, 206);
    c[k] = oc_make(CLOPT_RMSPROP, "momentum_centered", 4099, 7, 10, 207);
    c[k].hp.momentum = 0.9;
    c[k++].hp.centered = 1;
    c[k] = oc_make(CLOPT_RMSPROP, "plain_sethp", 1023, 0, 6, 208);
    c[k++].change_hp_at = 4;
    c[k++] = oc_make(CLOPT_ADAMAX, "default", 1023, 7, 8, 209);
    c[k] = oc_make(CLOPT_NADAM, "chain20", 4099, 7, 20, 210);
    c[k++].hp.weight_decay = 1e-3;
    c[k++] = oc_make(CLOPT_RADAM, "threshold", 1023, 7, 9, 211);
    c[k++] = oc_make(CLOPT_ADAMOD, "default", 1023, 7, 10, 212);
    c[k] = oc_make(CLOPT_DIFFGRAD, "l2", 1023, 7, 10, 213);
    c[k++].hp.weight_decay = 1e-2;
    c[k] = oc_make(CLOPT_LION, "wd_sethp", 4099, 7, 10, 214);
    c[k].hp.weight_decay = 0.1;
    c[k++].change_hp_at = 6;
    c[k] = oc_make(CLOPT_SOPHIA, "hess_interval3", 4099, 7, 8, 215);
    c[k].hp.hess_interval = 3;
    c[k].hp.bs = 16; /* make the Hessian term matter */
    c[k++].hess_param0 = 1;
    c[k] = oc_make(CLOPT_SOPHIA, "no_hessian_buffer", 1023, 0, 5, 216);
    c[k++].hp.hess_interval = 2;
    c[k] = oc_make(CLOPT_ADAM, "big", BIG, 0, 2, 217);
    c[k++].special = SP_ZERO | SP_TINY;
    size_t bad = 0;
    for (size_t i = 0; i < k; i++) bad += run_opt_case(ctx, &c[i]);
    assert_int_equal(bad, 0);
}
