/* SPDX-License-Identifier: MIT */
/*
 * test_modern, the tensor-sums hook (clopt_optimizer_set_tensor_sums_hook): the optimizer
 * holds piece A = elements [0, NA) of a tensor of N elements; the test plays the process that
 * holds piece B = [NA, N): its sums come from the double reference of B's elements. The hook
 * checks that the sums the device hands over are A's (against the reference), adds B's and
 * sets the whole tensor's element count; A must then follow the whole tensor's reference
 * (LAMB's trust ratio, StableAdamW's RMS, the cautious mask's mean over N elements). Without
 * the hook A follows its own sums and leaves the whole tensor's path (shown for LAMB).
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

#define N 3000
#define NA 1750 /* several reduction chunks on each side, not a multiple of 16 */
#define NB (N - NA)
#define STEPS 4

typedef struct split {
    clopt_ctx *ctx;
    clopt_rule rule;
    clopt_hparams hp;
    clopt_optimizer *opt;
    cl_mem p, g;
    double rp[N], rs[CLOPT_MAX_STATE][N]; /* the whole tensor's reference */
    double grad[N];
    uint64_t t;
    /* what the hook has for the current step */
    double want_a[2], b[2]; /* A's reference sums (to check), B's (to add) */
    int calls, bad;         /* hook calls; sums that were not A's */
    clopt_status fail;      /* the status the hook returns (CLOPT_SUCCESS: it combines) */
    int observe;            /* 1: the hook adds nothing (A steps on its own sums) */
} split;

/* The sums of step t over elements [lo, lo + n) of the reference (nothing changed). */
static void ref_sums(const split *s, size_t lo, size_t n, double out[2])
{
    double p[N], st0[N], st1[N], *st[CLOPT_MAX_STATE] = {st0, st1};
    memcpy(p, s->rp + lo, n * sizeof *p);
    memcpy(st0, s->rs[0] + lo, n * sizeof *st0);
    memcpy(st1, s->rs[1] + lo, n * sizeof *st1);
    out[1] = 0.0;
    switch (s->rule) {
    case CLOPT_LAMB:
        ref_lamb_sums(&s->hp, s->t + 1, n, p, s->grad + lo, st, 0.0, out);
        return;
    case CLOPT_STABLE_ADAMW: { /* the RMS over n elements: the sum is n·RMS² */
        const double rms = ref_stable_adamw_step(&s->hp, s->t + 1, n, p, s->grad + lo, st, 0.0);
        out[0] = rms * rms * (double)n;
        return;
    }
    default: /* cautious AdamW: the mask's mean over n: the count is n·mean */
        out[0] = ref_cautious_adam_step(&s->hp, 1, s->t + 1, n, p, s->grad + lo, st, 0.0) *
                 (double)n;
        return;
    }
}

static clopt_status hook(void *user, clopt_tensor_sums *ts)
{
    split *s = user;
    s->calls++;
    if (s->fail != CLOPT_SUCCESS)
        return s->fail;
    const size_t want_count = s->rule == CLOPT_LAMB ? 2 : 1; /* Σθ² and Σr², or one sum */
    float f[2] = {0.0f, 0.0f};
    if (ts->struct_size != sizeof *ts || ts->param != 0 || ts->rule != s->rule ||
        ts->count != want_count || ts->elements != (double)NA ||
        clEnqueueReadBuffer(ts->queue, ts->sums.buffer, CL_TRUE, ts->sums.offset * sizeof(float),
                            ts->count * sizeof(float), f, 0, NULL, NULL) != CL_SUCCESS) {
        s->bad++;
        return CLOPT_ERR_INVALID_ARGUMENT;
    }
    for (size_t k = 0; k < ts->count; k++) {
        /* (observing, A leaves the reference's path after step 1: not checked) */
        if (!s->observe && fabs(f[k] - s->want_a[k]) > 1e-5 * fabs(s->want_a[k]) + 1e-6) {
            fprintf(stderr, "sum %zu of A: device %.9g, reference %.9g\n", k, (double)f[k],
                    s->want_a[k]);
            s->bad++;
        }
        f[k] = (float)((double)f[k] + s->b[k]);
    }
    if (s->observe)
        return CLOPT_SUCCESS;
    ts->elements = (double)N;
    return clEnqueueWriteBuffer(ts->queue, ts->sums.buffer, CL_TRUE,
                                ts->sums.offset * sizeof(float), ts->count * sizeof(float), f, 0,
                                NULL, NULL) == CL_SUCCESS
               ? CLOPT_SUCCESS
               : CLOPT_ERR_INVALID_ARGUMENT;
}

static void split_new(clopt_ctx *ctx, split *s, clopt_rule rule, const clopt_hparams *hp)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx, s->rule = rule, s->hp = *hp;
    uint64_t seed = 17;
    float buf[N];
    modern_fill_normal(&seed, buf, N, 0.5);
    for (size_t i = NA; i < N; i++) /* B's weights 4x A's: the pieces' norms differ */
        buf[i] *= 4.0f;
    modern_to_double(buf, s->rp, N);
    s->p = upload(ctx, buf, NA);
    s->g = upload(ctx, NULL, NA);
    assert_int_equal(clopt_optimizer_create(ctx, rule, hp, &s->opt), CLOPT_SUCCESS);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){s->p, 0};
    d.grad = (clopt_tensor){s->g, 0};
    d.ndim = 1, d.shape[0] = NA;
    assert_int_equal(clopt_optimizer_add_param_desc(s->opt, 0, &d, NULL), CLOPT_SUCCESS);
}

static void split_free(split *s)
{
    clopt_optimizer_destroy(s->opt);
    clReleaseMemObject(s->p);
    clReleaseMemObject(s->g);
}

/* One step: a new gradient, the sums the hook expects, the device step, the reference's
   step over the whole tensor. Returns the device step's status. */
static clopt_status split_step(split *s, uint64_t *seed)
{
    float gf[N];
    modern_fill_normal(seed, gf, N, 1.0);
    for (size_t i = NA; i < N; i++) /* B's gradients alternate in scale, A's do not */
        gf[i] *= s->t % 2 ? 0.25f : 4.0f;
    modern_to_double(gf, s->grad, N);
    write_at(s->ctx, (clopt_tensor){s->g, 0}, gf, NA);
    ref_sums(s, 0, NA, s->want_a);
    ref_sums(s, NA, NB, s->b);
    const clopt_status st = clopt_optimizer_step(s->opt, NULL);
    if (st != CLOPT_SUCCESS)
        return st;
    double *rs[CLOPT_MAX_STATE] = {s->rs[0], s->rs[1]};
    s->t++;
    if (s->rule == CLOPT_LAMB)
        ref_lamb_step(&s->hp, s->t, N, s->rp, s->grad, rs, 0.0);
    else
        modern_ref_step(s->rule, &s->hp, s->t, N, s->rp, s->grad, rs, NULL, 0.0);
    return st;
}

static int piece_close(split *s, const char *label, double rtol)
{
    float dev[NA];
    read_at(s->ctx, (clopt_tensor){s->p, 0}, dev, NA);
    return modern_close(label, dev, s->rp, NA, rtol);
}

static void run_split(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp, const char *label)
{
    split s;
    split_new(ctx, &s, rule, hp);
    assert_int_equal(clopt_optimizer_set_tensor_sums_hook(s.opt, hook, &s), CLOPT_SUCCESS);
    uint64_t seed = 5;
    for (int k = 0; k < STEPS; k++) {
        assert_int_equal(split_step(&s, &seed), CLOPT_SUCCESS);
        assert_int_equal(s.bad, 0);
        assert_true(piece_close(&s, label, modern_rtol(hp)));
    }
    assert_int_equal(s.calls, STEPS); /* once per tensor and step (no AMP in flight) */
    split_free(&s);
}

/* The three cases: LAMB (A steps with the whole tensor's trust ratio ‖θ‖/‖r‖), StableAdamW
   (A's step size uses the RMS over all N elements; clip_threshold 0.5, so the RMS clamps the
   step on every step, else the sums would not matter), cautious AdamW (the mask's mean is the
   count over N elements divided by N). */
static const clopt_rule HOOK_RULES[3] = {CLOPT_LAMB, CLOPT_STABLE_ADAMW, CLOPT_ADAMW};
static const char *const HOOK_LABELS[3] = {"lamb piece", "stable_adamw piece",
                                           "cautious adamw piece"};

static clopt_hparams hook_hparams(int k)
{
    clopt_hparams hp;
    clopt_hparams_default(HOOK_RULES[k], &hp);
    hp.lr = 1e-2;
    hp.weight_decay = 0.01;
    if (HOOK_RULES[k] == CLOPT_STABLE_ADAMW)
        hp.clip_threshold = 0.5;
    hp.cautious = HOOK_RULES[k] == CLOPT_ADAMW;
    return hp;
}

void test_hook_lamb(void **state)
{
    const clopt_hparams hp = hook_hparams(0);
    run_split(((fixture *)*state)->ctx, HOOK_RULES[0], &hp, HOOK_LABELS[0]);
}

void test_hook_stable_adamw(void **state)
{
    const clopt_hparams hp = hook_hparams(1);
    run_split(((fixture *)*state)->ctx, HOOK_RULES[1], &hp, HOOK_LABELS[1]);
}

void test_hook_cautious(void **state)
{
    const clopt_hparams hp = hook_hparams(2);
    run_split(((fixture *)*state)->ctx, HOOK_RULES[2], &hp, HOOK_LABELS[2]);
}

/* Without the combination A follows its own sums and leaves the whole tensor's path by far
   more than the tolerance (so the tests above see the combination): the hook only reads. */
void test_hook_needed(void **state)
{
    fixture *f = *state;
    for (int k = 0; k < 3; k++) {
        const clopt_hparams hp = hook_hparams(k);
        split s;
        split_new(f->ctx, &s, HOOK_RULES[k], &hp);
        s.observe = 1;
        assert_int_equal(clopt_optimizer_set_tensor_sums_hook(s.opt, hook, &s), CLOPT_SUCCESS);
        uint64_t seed = 5;
        for (int t = 0; t < STEPS; t++)
            assert_int_equal(split_step(&s, &seed), CLOPT_SUCCESS);
        assert_int_equal(s.bad, 0);
        float dev[NA];
        read_at(s.ctx, (clopt_tensor){s.p, 0}, dev, NA);
        double worst = 0.0, ms = 0.0;
        for (size_t i = 0; i < NA; i++)
            ms += s.rp[i] * s.rp[i];
        ms = sqrt(ms / NA);
        for (size_t i = 0; i < NA; i++)
            worst = fmax(worst, fabs(dev[i] - s.rp[i]) / (fabs(s.rp[i]) + ms));
        assert_true(worst > 10.0 * modern_rtol(&hp));
        split_free(&s);
    }
}

/* A failing hook fails the step with its status (and a message); NULL removes the hook;
   other rules never call it; NULL optimizer. */
void test_hook_errors(void **state)
{
    fixture *f = *state;
    assert_int_equal(clopt_optimizer_set_tensor_sums_hook(NULL, hook, NULL),
                     CLOPT_ERR_NULL_ARGUMENT);
    /* the sums per tensor the rules hand over (the count the hook above checks) */
    clopt_hparams hc;
    clopt_hparams_default(CLOPT_ADAMW, &hc);
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_LAMB, NULL), 2);
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_STABLE_ADAMW, NULL), 1);
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_ADAMW, &hc), 0);
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_ADAFACTOR, NULL), 0);
    hc.cautious = 1;
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_ADAMW, &hc), 1);
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_LION, &hc), 1);
    assert_int_equal(clopt_rule_tensor_sums(CLOPT_SGD, &hc), 0);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_LAMB, &hp);
    split s;
    split_new(f->ctx, &s, CLOPT_LAMB, &hp);
    assert_int_equal(clopt_optimizer_set_tensor_sums_hook(s.opt, hook, &s), CLOPT_SUCCESS);
    s.fail = (clopt_status)-200; /* a status of another library (libclopt_mpi's REMOTE) */
    uint64_t seed = 5;
    assert_int_equal(split_step(&s, &seed), -200);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "tensor-sums hook"));
    assert_int_equal(s.calls, 1);
    assert_int_equal(clopt_optimizer_set_tensor_sums_hook(s.opt, NULL, &s), CLOPT_SUCCESS);
    assert_int_equal(split_step(&s, &seed), CLOPT_SUCCESS);
    assert_int_equal(s.calls, 1);
    split_free(&s);
    /* with a hook, steps in flight under AMP do not multiply the calls: each step first
       waits for the earlier verdicts, so one call per tensor and step */
    clopt_hparams_default(CLOPT_LAMB, &hp);
    split_new(f->ctx, &s, CLOPT_LAMB, &hp);
    s.observe = 1;
    assert_int_equal(clopt_optimizer_set_tensor_sums_hook(s.opt, hook, &s), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(s.opt, 1024.0), CLOPT_SUCCESS);
    for (int k = 0; k < 3; k++)
        assert_int_equal(clopt_optimizer_step_on(s.opt, NULL, 0, NULL, NULL), CLOPT_SUCCESS);
    assert_int_equal(s.calls, 3);
    /* a user event not complete yet in the wait list is refused (the hook would wait for the
       step, the step for the event), nothing changed; once complete it is taken */
    cl_int err;
    cl_event ue = clCreateUserEvent(clopt_ctx_cl_context(f->ctx), &err);
    assert_int_equal(err, CL_SUCCESS);
    float before[NA], after[NA];
    read_at(f->ctx, (clopt_tensor){s.p, 0}, before, NA);
    assert_int_equal(clopt_optimizer_step_on(s.opt, NULL, 1, &ue, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "user event"));
    read_at(f->ctx, (clopt_tensor){s.p, 0}, after, NA);
    assert_memory_equal(before, after, sizeof before);
    assert_int_equal(s.calls, 3);
    assert_int_equal(clSetUserEventStatus(ue, CL_COMPLETE), CL_SUCCESS);
    assert_int_equal(clopt_optimizer_step_on(s.opt, NULL, 1, &ue, NULL), CLOPT_SUCCESS);
    assert_int_equal(s.calls, 4);
    clReleaseEvent(ue);
    split_free(&s);
    /* an element-wise rule has no per-tensor sums: never called */
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    split_new(f->ctx, &s, CLOPT_ADAMW, &hp);
    assert_int_equal(clopt_optimizer_set_tensor_sums_hook(s.opt, hook, &s), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step(s.opt, NULL), CLOPT_SUCCESS);
    assert_int_equal(s.calls, 0);
    split_free(&s);
}
