/* SPDX-License-Identifier: MIT */
/* test_training's learning-rate schedules: clopt_schedule_factor against
 * torch.optim.lr_scheduler's chainable forms and hand-worked values, and a schedule applied
 * by the optimizer. */
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
#include "test_training.h"

/* ---- schedules --------------------------------------------------------------------------- */

/* References independent of host/schedule.c's closed forms: torch.optim.lr_scheduler's
   chainable forms (each scheduler's get_lr(): the next lr from the previous one, the way
   torch steps a scheduler once per optimizer step), replayed step by step in double with a
   base lr of 1; CosineAnnealingWarmRestarts' own T_cur/T_i bookkeeping; and literal values
   worked out by hand (bc -l) at the edges: step 0, the boundaries, T and past T. */

static const double sched_pi = 3.14159265358979323846;

static clopt_schedule one_stage(clopt_schedule_stage st)
{
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 1;
    s.stage[0] = st;
    return s;
}

/* 1 (and a line on stderr) when the factor at count t is not want within atol + rtol·|want|. */
static int factor_differs(const clopt_schedule *s, uint64_t t, double want, double rtol,
                          double atol, const char *what)
{
    double got = clopt_schedule_factor(s, t);
    if (fabs(got - want) <= atol + rtol * fabs(want))
        return 0;
    fprintf(stderr, "%s t %llu: got %.17g want %.17g\n", what, (unsigned long long)t, got, want);
    return 1;
}

static void check_factor(const clopt_schedule *s, uint64_t t, double want, double rtol,
                         double atol, const char *what)
{
    if (factor_differs(s, t, want, rtol, atol, what))
        fail();
}

/* The factor torch's scheduler sets when it is built (last_epoch 0). */
static double torch_first(const clopt_schedule_stage *st)
{
    return st->kind == CLOPT_SCHED_CONSTANT || st->kind == CLOPT_SCHED_LINEAR_WARMUP
               ? st->factor
               : 1.0;
}

/* torch's get_lr() for the scheduler the stage mirrors: the factor after t >= 1 scheduler
   steps from the factor `lr` after t - 1 (eta_min is a fraction of the base lr, here 1). */
static double torch_next(const clopt_schedule_stage *st, uint64_t t, double lr)
{
    const uint64_t T = st->total_steps;
    switch (st->kind) {
    case CLOPT_SCHED_CONSTANT: /* ConstantLR: the factor is divided out at total_iters */
        return t == T ? lr * (1.0 / st->factor) : lr;
    case CLOPT_SCHED_STEP: /* StepLR */
        return t % st->step_size == 0 ? lr * st->gamma : lr;
    case CLOPT_SCHED_EXPONENTIAL: /* ExponentialLR */
        return lr * st->gamma;
    case CLOPT_SCHED_COSINE: /* CosineAnnealingLR; its special case where the ratio is 0/0 */
        if (t - 1 >= T && (t - 1 - T) % (2 * T) == 0)
            return lr + (1.0 - st->eta_min) * (1.0 - cos(sched_pi / (double)T)) / 2.0;
        return (1.0 + cos(sched_pi * (double)t / (double)T)) /
                   (1.0 + cos(sched_pi * (double)(t - 1) / (double)T)) * (lr - st->eta_min) +
               st->eta_min;
    case CLOPT_SCHED_LINEAR_WARMUP: /* LinearLR with end_factor 1 */
        if (t > T)
            return lr;
        return lr * (1.0 + (1.0 - st->factor) /
                               ((double)T * st->factor + (double)(t - 1) * (1.0 - st->factor)));
    default:
        return NAN;
    }
}

/* Every single-stage kind against torch's chainable form over 1000 steps. */
void test_schedules_torch_chainable(void **state)
{
    (void)state;
    const clopt_schedule_stage stages[] = {
        {.kind = CLOPT_SCHED_CONSTANT, .total_steps = 100, .factor = 0.25},
        {.kind = CLOPT_SCHED_CONSTANT, .total_steps = 1, .factor = 0.5},
        {.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9},
        {.kind = CLOPT_SCHED_STEP, .step_size = 1, .gamma = 0.5},
        {.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 0.9},
        {.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 1.01},
        {.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1},
        {.kind = CLOPT_SCHED_COSINE, .total_steps = 7, .eta_min = 0.0},
        {.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25},
        {.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 3, .factor = 0.01},
    };
    for (size_t k = 0; k < sizeof stages / sizeof stages[0]; k++) {
        const clopt_schedule_stage *st = &stages[k];
        clopt_schedule s = one_stage(*st);
        assert_int_equal(clopt_schedule_validate(&s, NULL), CLOPT_SUCCESS);
        /* the products (constant, step, exponential) to a relative 1e-12 however small they
           get; the cosine and the warmup, in [0, 1], to an absolute 1e-12 */
        const int ratio = st->kind == CLOPT_SCHED_CONSTANT || st->kind == CLOPT_SCHED_STEP ||
                          st->kind == CLOPT_SCHED_EXPONENTIAL;
        double lr = torch_first(st);
        char what[64];
        snprintf(what, sizeof what, "stage %zu (kind %d)", k, (int)st->kind);
        for (uint64_t t = 0; t < 1000; t++) {
            if (t > 0)
                lr = torch_next(st, t, lr);
            if (st->kind == CLOPT_SCHED_COSINE && t > st->total_steps)
                continue; /* torch oscillates past T, clopt does not: test_schedules_edges */
            check_factor(&s, t, lr, ratio ? 1e-12 : 0, ratio ? 0 : 1e-12, what);
        }
    }
}

/* CosineAnnealingWarmRestarts stepped as torch steps it (T_cur += 1; at T_i a restart with
   T_cur -= T_i, T_i *= T_mult), also with the non-integer t_mult clopt allows; T_0 = 1 with
   t_mult 3 and 10 reaches restarts at 121 (= (3^5 - 1)/2) and 111 (= (10^3 - 1)/9). The
   cycle estimate floor(log(t/T·(m-1) + 1) / log(m)) rounds to 4.999... at t = 121 (and at
   111, and 12100 for T_0 = 100, t_mult 3), which gave the step that restarts the end of the
   previous cycle, eta_min, instead of 1, until host/schedule.c moved the estimate to the
   cycle whose bounds hold t. */
void test_schedules_restarts_stepped(void **state)
{
    (void)state;
    const struct {
        uint64_t T0;
        double mult, eta_min;
        uint64_t steps;
    } cases[] = {
        {100, 2.0, 0.1, 1000}, {7, 1.0, 0.0, 200},   {100, 1.5, 0.05, 2000},
        {1, 3.0, 0.1, 1200},   {1, 10.0, 0.1, 1200}, {100, 3.0, 0.0, 13000},
    };
    int bad = 0; /* every mismatch is listed before the test fails */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        clopt_schedule s = one_stage((clopt_schedule_stage){.kind = CLOPT_SCHED_COSINE_RESTARTS,
                                                            .total_steps = cases[c].T0,
                                                            .t_mult = cases[c].mult,
                                                            .eta_min = cases[c].eta_min});
        assert_int_equal(clopt_schedule_validate(&s, NULL), CLOPT_SUCCESS);
        const double eta = cases[c].eta_min;
        double T_i = (double)cases[c].T0, T_cur = 0;
        char what[64];
        snprintf(what, sizeof what, "restarts T0 %llu t_mult %g",
                 (unsigned long long)cases[c].T0, cases[c].mult);
        for (uint64_t t = 0; t < cases[c].steps; t++) {
            bad += factor_differs(&s, t,
                                  eta + (1.0 - eta) * (1.0 + cos(sched_pi * T_cur / T_i)) / 2.0,
                                  0, 1e-12, what);
            T_cur += 1;
            if (T_cur >= T_i) {
                T_cur -= T_i;
                T_i *= cases[c].mult;
            }
        }
    }
    assert_int_equal(bad, 0);
}

/* Restarts with t_mult barely above 1 at huge step counts (an engine's set_step_count, a
   loaded count): the cycle's number passes 2^53, where the search for it never ended; the
   factor stays within [eta_min, 1]. */
void test_schedules_restarts_huge_counts(void **state)
{
    (void)state;
    const double mults[3] = {1.0000000000000002, 1.5, 2.0};
    const uint64_t counts[6] = {10, 1000000, 1000000000000ull, 100000000000000000ull,
                                10000000000000000000ull, UINT64_MAX};
    for (int m = 0; m < 3; m++) {
        clopt_schedule s = one_stage((clopt_schedule_stage){.kind = CLOPT_SCHED_COSINE_RESTARTS,
                                                            .total_steps = 1,
                                                            .t_mult = mults[m],
                                                            .eta_min = 0.25});
        assert_int_equal(clopt_schedule_validate(&s, NULL), CLOPT_SUCCESS);
        for (int c = 0; c < 6; c++) {
            const double f = clopt_schedule_factor(&s, counts[c]);
            if (!(f >= 0.25 && f <= 1.0))
                fail_msg("t_mult %.17g, count %llu: factor %g", mults[m],
                         (unsigned long long)counts[c], f);
        }
    }
}

/* Literal values at the edges (bc -l for the cosines), and the cosine past T: clopt holds
   eta_min where torch's CosineAnnealingLR (closed and chainable forms alike) keeps following
   the cosine, back up to the base lr at 2T (documented in clopt.h as a deliberate
   difference). */
void test_schedules_edges(void **state)
{
    (void)state;
    const struct {
        clopt_schedule_stage st;
        uint64_t t;
        double want;
    } pts[] = {
        /* ConstantLR(factor 0.25, total_iters 100) */
        {{.kind = CLOPT_SCHED_CONSTANT, .total_steps = 100, .factor = 0.25}, 0, 0.25},
        {{.kind = CLOPT_SCHED_CONSTANT, .total_steps = 100, .factor = 0.25}, 99, 0.25},
        {{.kind = CLOPT_SCHED_CONSTANT, .total_steps = 100, .factor = 0.25}, 100, 1.0},
        {{.kind = CLOPT_SCHED_CONSTANT, .total_steps = 100, .factor = 0.25}, 5000, 1.0},
        /* StepLR(step_size 30, gamma 0.9) */
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 0, 1.0},
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 29, 1.0},
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 30, 0.9},
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 59, 0.9},
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 60, 0.81},
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 300, 0.3486784401},
        {{.kind = CLOPT_SCHED_STEP, .step_size = 30, .gamma = 0.9}, 329, 0.3486784401},
        /* ExponentialLR(gamma 0.9): 0.9^10, 0.9^20 = 9^20 / 10^20 */
        {{.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 0.9}, 0, 1.0},
        {{.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 0.9}, 1, 0.9},
        {{.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 0.9}, 10, 0.3486784401},
        {{.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 0.9}, 20, 0.12157665459056928801},
        /* CosineAnnealingLR(T_max 100, eta_min 0.1): 0.1 + 0.45 (1 + cos(π t/100)) */
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 0, 1.0},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 1,
         0.9997779521645792006503},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 25,
         0.8681980515339463859804},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 50, 0.55},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 75,
         0.2318019484660536140196},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 99,
         0.1002220478354207993497},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 100, 0.1},
        /* past T: torch gives 0.1002220478... at 101, 0.55 at 150, 1 at 200; clopt eta_min */
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 101, 0.1},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 150, 0.1},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 200, 0.1},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1}, 1000000, 0.1},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 1, .eta_min = 0.0}, 0, 1.0},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 1, .eta_min = 0.0}, 1, 0.0},
        {{.kind = CLOPT_SCHED_COSINE, .total_steps = 1, .eta_min = 0.0}, 2, 0.0},
        /* LinearLR(start_factor 0.25, total_iters 100) */
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 0, 0.25},
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 1, 0.2575},
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 50, 0.625},
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 99, 0.9925},
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 100, 1.0},
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 101, 1.0},
        {{.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 100, .factor = 0.25}, 100000, 1.0},
        /* CosineAnnealingWarmRestarts(T_0 100, T_mult 2, eta_min 0.1): cycles [0, 100),
           [100, 300), [300, 700), [700, 1500) */
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         0, 1.0},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         50, 0.55},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         99, 0.1002220478354207993497},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         100, 1.0},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         200, 0.55},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         300, 1.0},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         500, 0.55},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 2, .eta_min = 0.1},
         700, 1.0},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 1, .eta_min = 0.1},
         150, 0.55},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 100, .t_mult = 1, .eta_min = 0.1},
         1000, 1.0},
        /* T_0 1, T_mult 3: cycles start at 0, 1, 4, 13, 40, 121, 364 (the later restarts in
           test_schedules_restarts_stepped); at 2: 0.1 + 0.45 (1 + cos(π/3)) */
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 1, .t_mult = 3, .eta_min = 0.1},
         2, 0.775},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 1, .t_mult = 3, .eta_min = 0.1},
         40, 1.0},
        {{.kind = CLOPT_SCHED_COSINE_RESTARTS, .total_steps = 1, .t_mult = 3, .eta_min = 0.1},
         13, 1.0},
    };
    for (size_t k = 0; k < sizeof pts / sizeof pts[0]; k++) {
        clopt_schedule s = one_stage(pts[k].st);
        char what[64];
        snprintf(what, sizeof what, "edge %zu (kind %d)", k, (int)pts[k].st.kind);
        check_factor(&s, pts[k].t, pts[k].want, 1e-14, 1e-15, what);
    }
    /* past T, the cosine stays at eta_min: every count from T to 5T */
    clopt_schedule cos100 = one_stage(
        (clopt_schedule_stage){.kind = CLOPT_SCHED_COSINE, .total_steps = 100, .eta_min = 0.1});
    for (uint64_t t = 100; t <= 500; t++)
        check_factor(&cos100, t, 0.1, 0, 1e-15, "cosine past T");
    /* ... where torch's chainable form rises again: 0.55 at 1.5T, the base lr at 2T */
    double lr = 1.0;
    for (uint64_t t = 1; t <= 200; t++) {
        lr = torch_next(&cos100.stage[0], t, lr);
        if (t == 150)
            assert_true(fabs(lr - 0.55) < 1e-12);
    }
    assert_true(fabs(lr - 1.0) < 1e-12);

    /* chained (torch's ChainedScheduler multiplies its schedulers' factors): warmup from 0
       over 10 steps times a cosine to 0 that starts at step 10 and lasts 90; before its
       start a stage contributes its value at t = 0 */
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 2;
    s.stage[0] = (clopt_schedule_stage){.kind = CLOPT_SCHED_LINEAR_WARMUP, .total_steps = 10};
    s.stage[1] = (clopt_schedule_stage){.kind = CLOPT_SCHED_COSINE, .start = 10,
                                        .total_steps = 90};
    const struct {
        uint64_t t;
        double want;
    } chain[] = {{0, 0.0},   {1, 0.1},   {5, 0.5},   {9, 0.9},    {10, 1.0},
                 {11, 0.9996954135095478650}, /* (1 + cos(π/90))/2 */
                 {55, 0.5},  {100, 0.0}, {101, 0.0}, {190, 0.0}, {1000, 0.0}};
    for (size_t k = 0; k < sizeof chain / sizeof chain[0]; k++)
        check_factor(&s, chain[k].t, chain[k].want, 1e-14, 1e-15, "warmup x cosine");
    /* the same chain with a warmup from 0.1 against the product of torch's two chainable
       forms, the cosine's clock starting at 10 */
    s.stage[0].factor = 0.1;
    double w = torch_first(&s.stage[0]), c = 1.0;
    for (uint64_t t = 0; t <= 100; t++) {
        if (t > 0)
            w = torch_next(&s.stage[0], t, w);
        if (t > 10)
            c = torch_next(&s.stage[1], t - 10, c);
        check_factor(&s, t, w * c, 0, 1e-12, "warmup x cosine, torch");
    }

    /* invalid schedules */
    s.nstages = 1;
    /* a constant factor for 0 steps: torch 1.13's stepped ConstantLR keeps the factor for
       ever, its closed form never applies it; refused as a warmup or cosine of 0 steps (it
       was taken as no factor) */
    memset(&s.stage[0], 0, sizeof s.stage[0]);
    s.stage[0].kind = CLOPT_SCHED_CONSTANT;
    s.stage[0].factor = 0.1;
    assert_int_equal(clopt_schedule_validate(&s, NULL), CLOPT_ERR_INVALID_HYPERPARAM);
    s.stage[0].kind = CLOPT_SCHED_STEP;
    s.stage[0].step_size = 0;
    assert_int_equal(clopt_schedule_validate(&s, NULL), CLOPT_ERR_INVALID_HYPERPARAM);
    assert_true(isnan(clopt_schedule_factor(&s, 3)));
    s.nstages = CLOPT_MAX_STAGES + 1;
    assert_int_equal(clopt_schedule_validate(&s, NULL), CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_schedule_validate(NULL, NULL), CLOPT_ERR_NULL_ARGUMENT);
    /* the lecture's batch-size rules: 0.1·1024/256, 0.1·sqrt(1024/256) */
    assert_true(fabs(clopt_lr_scale_linear(0.1, 1024, 256) - 0.4) < 1e-15);
    assert_true(fabs(clopt_lr_scale_sqrt(0.1, 1024, 256) - 0.2) < 1e-15);
}

/* The optimizer applies its group's schedule: SGD θ_t = θ_{t-1} - lr·factor(t-1)·g, the
   factor of SGDR with T_0 = 7 and t_mult = 1 counted the way torch steps it. */
void test_schedule_in_optimizer(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    hp.lr = 0.5;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 1;
    s.stage[0].kind = CLOPT_SCHED_COSINE_RESTARTS;
    s.stage[0].total_steps = 7;
    s.stage[0].t_mult = 1;
    assert_int_equal(clopt_optimizer_set_group_schedule(opt, 0, &s), CLOPT_SUCCESS);
    clopt_schedule bad = s;
    bad.stage[0].t_mult = 0.5;
    assert_int_equal(clopt_optimizer_set_group_schedule(opt, 0, &bad),
                     CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_optimizer_set_group_schedule(opt, 4, &s), CLOPT_ERR_INDEX);
    float p = 1.0f, g = 1.0f;
    cl_mem pb = upload(f->ctx, &p, 1), gb = upload(f->ctx, &g, 1);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb, 0}, (clopt_tensor){gb, 0},
                                               1, NULL, NULL),
                     CLOPT_SUCCESS);
    double want = 1.0, T_cur = 0;
    for (uint64_t t = 1; t <= 30; t++) {
        double lr = clopt_optimizer_group_lr(opt, 0);
        assert_true(fabs(lr - 0.5 * (1.0 + cos(sched_pi * T_cur / 7.0)) / 2.0) < 1e-15);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        want -= lr;
        if (++T_cur >= 7)
            T_cur -= 7;
    }
    read_at(f->ctx, (clopt_tensor){pb, 0}, &p, 1);
    assert_true(fabs(p - want) < 1e-5);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb);
    clReleaseMemObject(gb);
}

/* Both ends of a schedule's lr (torch keeps stepping with either): SGD, lr 1, g 1. A decay
   (gamma 0.5) takes lr below float32's normal range at step 128 (2^-127): the group's lr is
   then 0 and the steps go on (every step failed there, INVALID_HYPERPARAM, "lr must be 0 or
   of magnitude 1.2e-38 .."; with gamma 0.99, torch's usual ExponentialLR, past 8,000 steps).
   Growth (gamma 2) past 2^64 at step 66 fails that step before it runs, naming the schedule,
   and changes nothing. */
void test_schedule_lr_ends(void **state)
{
    fixture *f = *state;
    for (int grow = 0; grow < 2; grow++) {
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_SGD, &hp);
        hp.lr = 1.0;
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
        clopt_schedule s = one_stage(
            (clopt_schedule_stage){.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = grow ? 2.0 : 0.5});
        assert_int_equal(clopt_optimizer_set_group_schedule(opt, 0, &s), CLOPT_SUCCESS);
        float p = 0.0f, g = 1.0f;
        cl_mem pb = upload(f->ctx, &p, 1), gb = upload(f->ctx, &g, 1);
        assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb, 0},
                                                   (clopt_tensor){gb, 0}, 1, NULL, NULL),
                         CLOPT_SUCCESS);
        float want = 0.0f; /* θ -= lr_t, lr_t = 2^±(t-1): exact products, one rounding each */
        const uint64_t steps = grow ? 65 : 140;
        for (uint64_t t = 1; t <= steps; t++) {
            const double lr = ldexp(1.0, grow ? (int)(t - 1) : -(int)(t - 1));
            assert_true(clopt_optimizer_group_lr(opt, 0) == (t < 128 || grow ? lr : 0.0));
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
            if (t < 128 || grow)
                want -= (float)lr;
        }
        read_at(f->ctx, (clopt_tensor){pb, 0}, &p, 1);
        assert_true(p == want);
        if (grow) {
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_ERR_INVALID_HYPERPARAM);
            assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "schedule"));
            assert_int_equal(clopt_optimizer_step_count(opt), 65);
            read_at(f->ctx, (clopt_tensor){pb, 0}, &p, 1);
            assert_true(p == want);
        }
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(pb);
        clReleaseMemObject(gb);
    }
}
