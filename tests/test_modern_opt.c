/* SPDX-License-Identifier: MIT */
/*
 * test_modern, optimizer level (see test_modern.c for the tolerance): Cautious Adam, AdamW
 * and Lion and StableAdamW with two tensors of different shapes in one optimizer (their
 * reductions are per tensor), zero-gradient steps, an arena group; Schedule-Free's eval and
 * train modes, checkpoints in eval mode, set_step_count and AMP skips.
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

#include "fixture.h"
#include "ref.h"
#include "ref_modern.h"
#include "test_modern.h"

#define NT 2
static const size_t SHAPE[NT][2] = {{7, 13}, {3, 50}};
#define NMAX 150

/* An optimizer over two caller-owned 2-D tensors, and the reference that follows it. */
typedef struct model {
    clopt_ctx *ctx;
    clopt_rule rule;
    clopt_hparams hp;
    clopt_optimizer *opt;
    cl_mem p[NT], g[NT];
    size_t n[NT], ns;
    double rp[NT][NMAX], rs[NT][CLOPT_MAX_STATE][NMAX];
    ref_sf_scalars sf[NT];
    uint64_t t; /* reference steps taken */
} model;

static void model_new(clopt_ctx *ctx, model *m, clopt_rule rule, const clopt_hparams *hp,
                      uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->ctx = ctx, m->rule = rule, m->hp = *hp;
    m->ns = modern_state_count(rule);
    assert_int_equal(clopt_optimizer_create(ctx, rule, hp, &m->opt), CLOPT_SUCCESS);
    float buf[NMAX];
    for (size_t k = 0; k < NT; k++) {
        m->n[k] = SHAPE[k][0] * SHAPE[k][1];
        modern_fill_normal(&seed, buf, m->n[k], 0.5);
        modern_to_double(buf, m->rp[k], m->n[k]);
        m->p[k] = upload(ctx, buf, m->n[k]);
        m->g[k] = upload(ctx, NULL, m->n[k]);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){m->p[k], 0};
        d.grad = (clopt_tensor){m->g[k], 0};
        d.ndim = 2, d.shape[0] = SHAPE[k][0], d.shape[1] = SHAPE[k][1];
        assert_int_equal(clopt_optimizer_add_param_desc(m->opt, 0, &d, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_state_count(m->opt, k), m->ns);
        ref_sf_init(&m->sf[k]);
    }
}

static void model_free(model *m)
{
    clopt_optimizer_destroy(m->opt);
    for (size_t k = 0; k < NT; k++)
        clReleaseMemObject(m->p[k]), clReleaseMemObject(m->g[k]);
}

/* Repairs gradient elements whose cautious sign argument c = β1·m + (1-β1)·g lies within
   float reach of 0 (so the mask is the same in float32 and double): c is moved to -β1·m. */
static void cautious_repair(const model *m, size_t k, float *gf, double gs)
{
    if (!m->hp.cautious)
        return;
    double b = m->hp.beta1, l2 = m->rule == CLOPT_ADAM ? m->hp.weight_decay : 0.0;
    for (size_t i = 0; i < m->n[k]; i++) {
        double mi = m->rs[k][0][i], g = gf[i] / gs + l2 * m->rp[k][i];
        double c = b * mi + (1.0 - b) * g, scale = b * fabs(mi) + (1.0 - b) * fabs(g);
        if (g != 0.0 && fabs(c) < 1e-4 * scale)
            gf[i] = (float)((-2.0 * b * mi / (1.0 - b) - l2 * m->rp[k][i]) * gs);
    }
}

/* Writes the step's gradients (scale·N(0,1), zero for tensors in zero_mask, times gs) and
   advances the reference by one step. */
static void model_grads(model *m, uint64_t *seed, double scale, unsigned zero_mask, double gs,
                        int advance_ref)
{
    float gf[NMAX];
    double gd[NMAX];
    for (size_t k = 0; k < NT; k++) {
        modern_fill_normal(seed, gf, m->n[k], scale * gs);
        if (zero_mask & (1u << k))
            memset(gf, 0, sizeof gf);
        cautious_repair(m, k, gf, gs);
        write_at(m->ctx, (clopt_tensor){m->g[k], 0}, gf, m->n[k]);
        if (advance_ref) {
            double *st[CLOPT_MAX_STATE] = {0};
            for (size_t j = 0; j < m->ns; j++)
                st[j] = m->rs[k][j];
            modern_to_double(gf, gd, m->n[k]);
            modern_ref_step(m->rule, &m->hp, m->t + 1, m->n[k], m->rp[k], gd, st, &m->sf[k], gs);
        }
    }
    if (advance_ref)
        m->t++;
}

static void model_check(model *m, const char *what)
{
    char label[128];
    float h[NMAX];
    double rtol = modern_rtol(&m->hp);
    for (size_t k = 0; k < NT; k++) {
        read_at(m->ctx, (clopt_tensor){m->p[k], 0}, h, m->n[k]);
        snprintf(label, sizeof label, "%s %s t=%u tensor %zu param", clopt_rule_name(m->rule),
                 what, (unsigned)m->t, k);
        if (!modern_close(label, h, m->rp[k], m->n[k], rtol))
            fail();
        for (size_t j = 0; j < m->ns; j++) {
            assert_int_equal(clopt_optimizer_read_state(m->opt, k, j, h, m->n[k]), CLOPT_SUCCESS);
            snprintf(label, sizeof label, "%s %s t=%u tensor %zu state %zu",
                     clopt_rule_name(m->rule), what, (unsigned)m->t, k, j);
            if (!modern_close(label, h, m->rs[k][j], m->n[k], rtol))
                fail();
        }
    }
}

/* Every parameter and state float of the optimizer, concatenated. */
static size_t model_snapshot(model *m, float *out)
{
    size_t q = 0;
    for (size_t k = 0; k < NT; k++) {
        read_at(m->ctx, (clopt_tensor){m->p[k], 0}, out + q, m->n[k]);
        q += m->n[k];
        for (size_t j = 0; j < m->ns; j++) {
            assert_int_equal(clopt_optimizer_read_state(m->opt, k, j, out + q, m->n[k]),
                             CLOPT_SUCCESS);
            q += m->n[k];
        }
    }
    return q;
}

#define SNAP_MAX (NT * (1 + CLOPT_MAX_STATE) * NMAX)

static void step_ok(model *m)
{
    clopt_status s = clopt_optimizer_step(m->opt, NULL);
    if (s != CLOPT_SUCCESS)
        fail_msg("%s step %u: %s (%s)", clopt_rule_name(m->rule), (unsigned)m->t,
                 clopt_status_name(s), clopt_ctx_last_error(m->ctx));
}

/* ================================================================================== */
/* Cautious and StableAdamW                                                           */
/* ================================================================================== */

/* 7 steps; tensor 0's gradient is zero at step 3, tensor 1's at step 5, a spike at 4. */
static void run_two_tensor(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp, double gs,
                           uint64_t seed)
{
    model m;
    model_new(ctx, &m, rule, hp, seed);
    if (gs != 1.0)
        assert_int_equal(clopt_optimizer_set_grad_scale(m.opt, gs), CLOPT_SUCCESS);
    for (int t = 1; t <= 7; t++) {
        unsigned zero = t == 3 ? 1u : t == 5 ? 2u : 0u;
        model_grads(&m, &seed, t == 4 ? 10.0 : 1.0, zero, gs, 1);
        step_ok(&m);
        model_check(&m, hp->cautious ? "cautious" : "");
    }
    assert_int_equal(clopt_optimizer_step_count(m.opt), 7);
    model_free(&m);
}

void test_opt_cautious(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    hp.lr = 0.01, hp.weight_decay = 1e-3, hp.cautious = 1;
    run_two_tensor(f->ctx, CLOPT_ADAM, &hp, 4.0, 11);
    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    hp.lr = 0.01, hp.weight_decay = 0.05, hp.eps = 1e-6, hp.cautious = 1;
    run_two_tensor(f->ctx, CLOPT_ADAMW, &hp, 1.0, 12);
    assert_int_equal(clopt_hparams_default(CLOPT_LION, &hp), CLOPT_SUCCESS);
    hp.lr = 1e-3, hp.weight_decay = 0.1, hp.cautious = 1;
    run_two_tensor(f->ctx, CLOPT_LION, &hp, 1.0, 13);
}

/* Cautious Lion against numbers worked by hand from C-Optim's c_lion.py (update_fn: the mask
   times numel / (mask.sum() + 1)): θ0 = 1, m0 = 0, lr 0.1, wd 0.5, β1 0.9, β2 0.99.
   Step 1, g = (1, -1, 0, 2): the decay gives 0.95; c = 0.1·g agrees with g at 3 of 4 elements,
   the mask is 4/(3+1) = 1 there: θ = (0.85, 1.05, 0.95, 0.85), m = 0.01·g.
   Step 2, g = (-1, -1, 1, 0.5): c = (-0.091, -0.109, 0.1, 0.068) agrees everywhere, the mask
   is 4/5 and the decay 0.95: θ = (0.8875, 1.0775, 0.8225, 0.7275). (Dividing the mask by
   max(its mean, 1e-3), C-Optim's AdamW rule, gives 4/3 and 1 instead.) */
void test_opt_cautious_lion_values(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_LION, &hp), CLOPT_SUCCESS);
    hp.lr = 0.1, hp.weight_decay = 0.5, hp.beta1 = 0.9, hp.beta2 = 0.99, hp.cautious = 1;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_LION, &hp, &opt), CLOPT_SUCCESS);
    const float ones[4] = {1, 1, 1, 1}, g1[4] = {1, -1, 0, 2}, g2[4] = {-1, -1, 1, 0.5f};
    const double want[2][4] = {{0.85, 1.05, 0.95, 0.85}, {0.8875, 1.0775, 0.8225, 0.7275}};
    cl_mem p = upload(f->ctx, ones, 4), g = upload(f->ctx, g1, 4);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0}, d.grad = (clopt_tensor){g, 0};
    d.ndim = 1, d.shape[0] = 4;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    for (int t = 0; t < 2; t++) {
        if (t == 1)
            write_at(f->ctx, d.grad, g2, 4);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        float got[4];
        read_at(f->ctx, d.param, got, 4);
        for (int i = 0; i < 4; i++)
            if (fabs(got[i] - want[t][i]) > 1e-6)
                fail_msg("step %d element %d: %.9g, C-Optim %.9g", t + 1, i, got[i], want[t][i]);
    }
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

void test_opt_stable_adamw(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_STABLE_ADAMW, &hp), CLOPT_SUCCESS);
    assert_true(hp.lr == 2e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.99 && hp.eps == 1e-8);
    assert_true(hp.weight_decay == 0.2 && hp.clip_threshold == 1.0);
    hp.lr = 0.01;
    run_two_tensor(f->ctx, CLOPT_STABLE_ADAMW, &hp, 1.0, 21);
    hp.clip_threshold = 0.5, hp.weight_decay = 0.0, hp.eps = 1e-6;
    run_two_tensor(f->ctx, CLOPT_STABLE_ADAMW, &hp, 2.0, 22);
}

/* An arena group of the same shapes gives the same values as the separate tensors. */
void test_opt_cautious_arena(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    hp.lr = 0.01, hp.weight_decay = 0.05, hp.cautious = 1;
    model m;
    uint64_t seed = 31;
    model_new(f->ctx, &m, CLOPT_ADAMW, &hp, seed);
    clopt_optimizer *arena;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &arena), CLOPT_SUCCESS);
    clopt_param_desc shapes[NT];
    for (size_t k = 0; k < NT; k++) {
        clopt_param_desc_init(&shapes[k]);
        shapes[k].ndim = 2, shapes[k].shape[0] = SHAPE[k][0], shapes[k].shape[1] = SHAPE[k][1];
    }
    size_t first = 99;
    assert_int_equal(clopt_optimizer_add_arena_group(arena, &hp, NT, shapes, NULL, &first),
                     CLOPT_SUCCESS);
    assert_int_equal(first, 0);
    float buf[NMAX], other[NMAX];
    for (size_t k = 0; k < NT; k++) {
        clopt_tensor pv;
        assert_int_equal(clopt_optimizer_param_view(arena, k, &pv, NULL, NULL, NULL),
                         CLOPT_SUCCESS);
        read_at(f->ctx, (clopt_tensor){m.p[k], 0}, buf, m.n[k]);
        write_at(f->ctx, pv, buf, m.n[k]);
    }
    for (int t = 1; t <= 5; t++) {
        model_grads(&m, &seed, 1.0, t == 3 ? 2u : 0u, 1.0, 1);
        for (size_t k = 0; k < NT; k++) {
            clopt_tensor gv;
            assert_int_equal(clopt_optimizer_param_view(arena, k, NULL, &gv, NULL, NULL),
                             CLOPT_SUCCESS);
            read_at(f->ctx, (clopt_tensor){m.g[k], 0}, buf, m.n[k]);
            write_at(f->ctx, gv, buf, m.n[k]);
        }
        step_ok(&m);
        assert_int_equal(clopt_optimizer_step(arena, NULL), CLOPT_SUCCESS);
        model_check(&m, "separate");
        for (size_t k = 0; k < NT; k++) {
            clopt_tensor pv;
            clopt_optimizer_param_view(arena, k, &pv, NULL, NULL, NULL);
            read_at(f->ctx, pv, buf, m.n[k]);
            read_at(f->ctx, (clopt_tensor){m.p[k], 0}, other, m.n[k]);
            if (memcmp(buf, other, m.n[k] * sizeof(float)) != 0)
                fail_msg("arena tensor %zu differs from the separate tensor at step %d", k, t);
            for (size_t j = 0; j < 2; j++) {
                assert_int_equal(clopt_optimizer_read_state(arena, k, j, buf, m.n[k]),
                                 CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_read_state(m.opt, k, j, other, m.n[k]),
                                 CLOPT_SUCCESS);
                assert_memory_equal(buf, other, m.n[k] * sizeof(float));
            }
        }
    }
    clopt_optimizer_destroy(arena);
    model_free(&m);
}

/* ================================================================================== */
/* Schedule-Free at the optimizer level                                               */
/* ================================================================================== */

static double sf_beta(const model *m)
{
    return m->rule == CLOPT_SCHEDULE_FREE_SGD ? m->hp.momentum : m->hp.beta1;
}

static void ref_mode(model *m, int train)
{
    for (size_t k = 0; k < NT; k++) {
        if (train)
            ref_sf_train(m->n[k], sf_beta(m), m->rp[k], m->rs[k][0]);
        else
            ref_sf_eval(m->n[k], sf_beta(m), m->rp[k], m->rs[k][0]);
    }
}

static void run_sf_modes(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp, int use_on)
{
    model m;
    uint64_t seed = 41 + (uint64_t)rule;
    model_new(ctx, &m, rule, hp, seed);
    float a[SNAP_MAX], b[SNAP_MAX];
    size_t na, nb;
    assert_int_equal(clopt_optimizer_training(m.opt), 1);
    /* before any step: eval and train change nothing */
    na = model_snapshot(&m, a);
    assert_int_equal(clopt_optimizer_eval(m.opt), CLOPT_SUCCESS);
    nb = model_snapshot(&m, b);
    assert_memory_equal(a, b, na * sizeof(float));
    assert_int_equal(clopt_optimizer_train(m.opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_training(m.opt), 1);
    nb = model_snapshot(&m, b);
    assert_memory_equal(a, b, na * sizeof(float));
    (void)nb;
    for (int t = 1; t <= 4; t++) {
        model_grads(&m, &seed, 1.0, 0, 1.0, 1);
        step_ok(&m);
        model_check(&m, "train");
    }
    if (use_on) {
        cl_event ev = NULL;
        assert_int_equal(clopt_optimizer_set_mode_on(m.opt, 0, NULL, 0, NULL, &ev), CLOPT_SUCCESS);
        assert_non_null(ev);
        assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
        clReleaseEvent(ev);
    } else {
        assert_int_equal(clopt_optimizer_eval(m.opt), CLOPT_SUCCESS);
    }
    assert_int_equal(clopt_optimizer_training(m.opt), 0);
    ref_mode(&m, 0);
    model_check(&m, "eval");
    /* a step in eval mode is refused and changes nothing; eval again is a no-op */
    na = model_snapshot(&m, a);
    model_grads(&m, &seed, 1.0, 0, 1.0, 0);
    assert_int_equal(clopt_optimizer_step(m.opt, NULL), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_step_count(m.opt), 4);
    assert_int_equal(clopt_optimizer_eval(m.opt), CLOPT_SUCCESS);
    nb = model_snapshot(&m, b);
    assert_memory_equal(a, b, na * sizeof(float));
    assert_int_equal(clopt_optimizer_training(m.opt), 0);
    assert_int_equal(clopt_optimizer_train(m.opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_training(m.opt), 1);
    ref_mode(&m, 1);
    model_check(&m, "train again");
    for (int t = 5; t <= 7; t++) {
        model_grads(&m, &seed, 1.0, 0, 1.0, 1);
        step_ok(&m);
        model_check(&m, "train after eval");
    }
    model_free(&m);
}

void test_opt_sf_modes(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp), CLOPT_SUCCESS);
    assert_true(hp.lr == 0.0025 && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.eps == 1e-8);
    assert_true(hp.weight_decay == 0.0 && hp.warmup_steps == 0 && hp.r == 0.0);
    assert_true(hp.weight_lr_power == 2.0);
    hp.lr = 0.02, hp.weight_decay = 0.01, hp.warmup_steps = 3;
    run_sf_modes(f->ctx, CLOPT_SCHEDULE_FREE_ADAMW, &hp, 0);
    assert_int_equal(clopt_hparams_default(CLOPT_SCHEDULE_FREE_SGD, &hp), CLOPT_SUCCESS);
    assert_true(hp.lr == 1.0 && hp.momentum == 0.9);
    hp.lr = 0.1, hp.weight_decay = 1e-3, hp.warmup_steps = 2;
    run_sf_modes(f->ctx, CLOPT_SCHEDULE_FREE_SGD, &hp, 1);
}

/* A checkpoint taken in eval mode restores the mode and the scalars: train and further
   steps in a fresh optimizer are bit-identical to the uninterrupted run. */
void test_opt_sf_checkpoint(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp), CLOPT_SUCCESS);
    hp.lr = 0.02, hp.weight_decay = 0.01, hp.warmup_steps = 6, hp.r = 0.5;
    model a, b;
    uint64_t seed = 51;
    model_new(f->ctx, &a, CLOPT_SCHEDULE_FREE_ADAMW, &hp, 61);
    for (int t = 1; t <= 4; t++) {
        model_grads(&a, &seed, 1.0, 0, 1.0, 0);
        step_ok(&a);
    }
    assert_int_equal(clopt_optimizer_eval(a.opt), CLOPT_SUCCESS);
    size_t size = 0, written = 0;
    assert_int_equal(clopt_optimizer_state_size(a.opt, NULL, &size), CLOPT_SUCCESS);
    unsigned char *bytes = xmalloc(size);
    assert_int_equal(clopt_optimizer_save_to(a.opt, NULL, bytes, size, &written), CLOPT_SUCCESS);
    assert_int_equal(written, size);
    float x[NT][NMAX];
    for (size_t k = 0; k < NT; k++)
        read_at(f->ctx, (clopt_tensor){a.p[k], 0}, x[k], a.n[k]);
    /* the uninterrupted run */
    uint64_t seed_after = seed;
    assert_int_equal(clopt_optimizer_train(a.opt), CLOPT_SUCCESS);
    for (int t = 5; t <= 8; t++) {
        model_grads(&a, &seed, 1.0, 0, 1.0, 0);
        step_ok(&a);
    }
    /* the resumed one: built the same way (other initial weights), the model's x restored */
    model_new(f->ctx, &b, CLOPT_SCHEDULE_FREE_ADAMW, &hp, 62);
    assert_int_equal(clopt_optimizer_training(b.opt), 1);
    assert_int_equal(clopt_optimizer_load_from(b.opt, bytes, written), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_training(b.opt), 0);
    assert_int_equal(clopt_optimizer_step_count(b.opt), 4);
    for (size_t k = 0; k < NT; k++)
        write_at(f->ctx, (clopt_tensor){b.p[k], 0}, x[k], b.n[k]);
    assert_int_equal(clopt_optimizer_step(b.opt, NULL), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_train(b.opt), CLOPT_SUCCESS);
    seed = seed_after;
    for (int t = 5; t <= 8; t++) {
        model_grads(&b, &seed, 1.0, 0, 1.0, 0);
        step_ok(&b);
    }
    float sa[SNAP_MAX], sb[SNAP_MAX];
    size_t na = model_snapshot(&a, sa), nb = model_snapshot(&b, sb);
    assert_int_equal(na, nb);
    if (memcmp(sa, sb, na * sizeof(float)) != 0)
        fail_msg("the resumed run differs from the uninterrupted one");
    free(bytes);
    model_free(&a);
    model_free(&b);
}

/* set_step_count(k) then a step: the step is t = k+1 with the scalars of k steps at the
   group's lr (constant lr, no warmup, r = 0: weight_sum = k·lr²), from states the engine
   restored with write_state. */
void test_opt_sf_step_count(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp), CLOPT_SUCCESS);
    hp.lr = 0.01;
    model m;
    uint64_t seed = 71;
    model_new(f->ctx, &m, CLOPT_SCHEDULE_FREE_ADAMW, &hp, 72);
    const uint64_t k = 5;
    assert_int_equal(clopt_optimizer_set_step_count(m.opt, k), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(m.opt), k);
    for (size_t i = 0; i < NT; i++) {
        for (uint64_t t = 1; t <= k; t++)
            ref_sf_advance(&hp, t, &m.sf[i], NULL);
        assert_true(fabs(m.sf[i].weight_sum - (double)k * hp.lr * hp.lr) < 1e-15);
        float z[NMAX], v[NMAX];
        for (size_t e = 0; e < m.n[i]; e++) {
            z[e] = (float)(m.rp[i][e] + 0.05 * ref_normal(&seed));
            v[e] = (float)(0.01 + 0.01 * ref_uniform(&seed));
        }
        assert_int_equal(clopt_optimizer_write_state(m.opt, i, 0, z, m.n[i]), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_write_state(m.opt, i, 1, v, m.n[i]), CLOPT_SUCCESS);
        modern_to_double(z, m.rs[i][0], m.n[i]);
        modern_to_double(v, m.rs[i][1], m.n[i]);
    }
    m.t = k;
    for (int s = 0; s < 2; s++) {
        model_grads(&m, &seed, 1.0, 0, 1.0, 1);
        step_ok(&m);
        model_check(&m, "after set_step_count");
    }
    model_free(&m);
}

/* AMP: an Inf gradient skips the step (nothing changes, the SF scalars do not advance);
   the next step matches the reference that never saw it. */
void test_opt_sf_amp(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp), CLOPT_SUCCESS);
    hp.lr = 0.02, hp.warmup_steps = 4, hp.weight_decay = 0.01;
    model m;
    uint64_t seed = 81;
    model_new(f->ctx, &m, CLOPT_SCHEDULE_FREE_ADAMW, &hp, 82);
    assert_int_equal(clopt_optimizer_set_grad_scale(m.opt, 8.0), CLOPT_SUCCESS);
    for (int t = 1; t <= 3; t++) {
        model_grads(&m, &seed, 1.0, 0, 8.0, 1);
        step_ok(&m);
        model_check(&m, "amp");
    }
    float a[SNAP_MAX], b[SNAP_MAX];
    size_t na = model_snapshot(&m, a);
    model_grads(&m, &seed, 1.0, 0, 8.0, 0);
    float inf = INFINITY;
    write_at(f->ctx, (clopt_tensor){m.g[1], 17}, &inf, 1);
    assert_int_equal(clopt_optimizer_step(m.opt, NULL), CLOPT_STEP_SKIPPED);
    assert_int_equal(clopt_optimizer_found_inf(m.opt), 1);
    assert_int_equal(clopt_optimizer_step_count(m.opt), 3);
    size_t nb = model_snapshot(&m, b);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof(float));
    for (int t = 4; t <= 5; t++) {
        model_grads(&m, &seed, 1.0, 0, 8.0, 1);
        step_ok(&m);
        model_check(&m, "amp after skip");
    }
    assert_int_equal(clopt_optimizer_found_inf(m.opt), 0);
    model_free(&m);
}
