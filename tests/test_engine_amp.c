/* SPDX-License-Identifier: MIT */
/*
 * test_engine (continued): dynamic loss scaling for an engine whose steps return before
 * their verdicts. A loss scaler attached to the optimizer sees every AMP verdict in step
 * order, also those that reach the host together (a poll reports only the latest), and
 * treats a verdict of a step that ran with an older scale as documented in clopt.h. The
 * steps are held behind a user event so that several are in flight before any verdict.
 */
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
#include "test_engine.h"

#define N 4

/* SGD (lr 1) over one tensor of N floats (all 1), the scaler attached; each of the `count`
   steps reads the gradient the queue wrote just before it: all N elements finite[k] ? the
   loss scale : Inf. Every step waits (through the first) for one user event, completed
   once all are enqueued, at the scaler's initial scale; returns θ afterwards in p. */
static void run_held(clopt_ctx *ctx, const clopt_loss_scaler *init, const int *finite,
                     int count, clopt_loss_scaler *after, float *p)
{
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    hp.lr = 1.0;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    const float ones[N] = {1, 1, 1, 1};
    cl_mem pb = upload(ctx, ones, N), gb = upload(ctx, ones, N);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb, 0},
                                               (clopt_tensor){gb, 0}, N, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_loss_scaler(opt, init), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_prepare(opt), CLOPT_SUCCESS);
    cl_int err;
    cl_event gate = clCreateUserEvent(clopt_ctx_cl_context(ctx), &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    float (*g)[N] = malloc((size_t)count * sizeof *g);
    for (int k = 0; k < count; k++) {
        clopt_loss_scaler now;
        assert_int_equal(clopt_optimizer_get_loss_scaler(opt, &now), CLOPT_SUCCESS);
        assert_true(now.scale == init->scale); /* no verdict can have arrived */
        for (int i = 0; i < N; i++)
            g[k][i] = finite[k] ? (float)now.scale : INFINITY;
        assert_int_equal(clEnqueueWriteBuffer(q, gb, CL_FALSE, 0, sizeof g[k], g[k],
                                              k == 0 ? 1 : 0, k == 0 ? &gate : NULL, NULL),
                         CL_SUCCESS);
        assert_int_equal(clopt_optimizer_set_grad_scale(opt, now.scale), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step_on(opt, NULL, 0, NULL, NULL), CLOPT_SUCCESS);
    }
    assert_int_equal(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
    assert_int_equal(clFinish(q), CL_SUCCESS);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, after), CLOPT_SUCCESS);
    clopt_step_report r;
    assert_int_equal(clopt_optimizer_poll(opt, &r), CLOPT_SUCCESS);
    assert_true(r.step_call == (uint64_t)count); /* the poll: only the latest */
    read_at(ctx, (clopt_tensor){pb, 0}, p, N);
    clReleaseEvent(gate);
    free(g);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
}

/* torch.cuda.amp.GradScaler, one update per iteration: an overflow then a clean step leave
   scale 32768 and growth tracker 1 (the back-off, then one clean step). Both verdicts
   arrive together; a scaler fed from polls saw only the clean one (65536, 1). */
void test_loss_scaler_every_verdict(void **state)
{
    fixture *f = *state;
    clopt_loss_scaler init, after;
    clopt_loss_scaler_init(&init, 65536);
    float p[N];
    const int overflow_then_clean[2] = {0, 1};
    run_held(f->ctx, &init, overflow_then_clean, 2, &after, p);
    assert_true(after.scale == 32768);
    assert_int_equal(after.clean_steps, 1);
    for (int i = 0; i < N; i++) /* the skipped step changed nothing, the clean one g = 1 */
        assert_true(p[i] == 0.0f);

    /* two overflows in flight at 65536: the second ran above the backed-off scale (torch
       would have run it at 32768): skipped, no second back-off */
    const int two_overflows[2] = {0, 0};
    run_held(f->ctx, &init, two_overflows, 2, &after, p);
    assert_true(after.scale == 32768);
    assert_int_equal(after.clean_steps, 0);
    for (int i = 0; i < N; i++)
        assert_true(p[i] == 1.0f);

    /* growth_interval 2: clean, clean (grows to 131072), a clean step that ran at 65536
       (not counted: says nothing of 131072), an overflow at 65536 (backs off: 131072 would
       overflow too) */
    init.growth_interval = 2;
    const int grow_then_overflow[4] = {1, 1, 1, 0};
    run_held(f->ctx, &init, grow_then_overflow, 4, &after, p);
    assert_true(after.scale == 65536);
    assert_int_equal(after.clean_steps, 0);
    for (int i = 0; i < N; i++)
        assert_true(p[i] == -2.0f);
}

/* Attaching validates as torch's GradScaler asserts; a refused scaler changes nothing. */
void test_loss_scaler_attach_errors(void **state)
{
    fixture *f = *state;
    clopt_optimizer *opt;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAM, &hp);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    clopt_loss_scaler sc, out;
    clopt_loss_scaler_init(&sc, 1024);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, &out), CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "no loss scaler"));
    assert_int_equal(clopt_optimizer_set_loss_scaler(NULL, &sc), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, NULL), CLOPT_ERR_NULL_ARGUMENT);
    const struct {
        double scale, growth, backoff;
        unsigned interval;
        const char *why;
    } bad[] = {
        {0, 2, 0.5, 2000, "scale"},         {ldexp(1, 127), 2, 0.5, 2000, "scale"},
        {NAN, 2, 0.5, 2000, "scale"},       {1024, 1, 0.5, 2000, "growth_factor"},
        {1024, INFINITY, 0.5, 2000, "growth_factor"}, {1024, 2, 1, 2000, "backoff_factor"},
        {1024, 2, 0, 2000, "backoff_factor"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        clopt_loss_scaler b = sc;
        b.scale = bad[k].scale, b.growth_factor = bad[k].growth;
        b.backoff_factor = bad[k].backoff, b.growth_interval = bad[k].interval;
        assert_int_equal(clopt_optimizer_set_loss_scaler(opt, &b), CLOPT_ERR_INVALID_HYPERPARAM);
        assert_non_null(strstr(clopt_ctx_last_error(f->ctx), bad[k].why));
        assert_int_equal(clopt_optimizer_get_loss_scaler(opt, &out),
                         CLOPT_ERR_INVALID_ARGUMENT);
    }
    assert_int_equal(clopt_optimizer_set_loss_scaler(opt, &sc), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, &out), CLOPT_SUCCESS);
    assert_true(out.scale == 1024 && out.growth_interval == 2000 && out.clean_steps == 0);
    clopt_loss_scaler b = sc;
    b.backoff_factor = 2;
    assert_int_equal(clopt_optimizer_set_loss_scaler(opt, &b), CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, &out), CLOPT_SUCCESS);
    assert_true(out.backoff_factor == 0.5);
    /* growth_interval 0: never grows, as clopt_loss_scaler_update takes it (and torch's
       tracker never reaches 0); attaching it was refused */
    b = sc;
    b.growth_interval = 0;
    assert_int_equal(clopt_optimizer_set_loss_scaler(opt, &b), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_loss_scaler(opt, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, &out), CLOPT_ERR_INVALID_ARGUMENT);
    clopt_optimizer_destroy(opt);
}
