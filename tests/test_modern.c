/* SPDX-License-Identifier: MIT */
/*
 * test_modern: the rules of 2024-2025 (issue 15) against the double references of
 * tests/ref/ref_modern.c, which are written from the golden cases' "equations" and are
 * first replayed against the golden vectors themselves (so the chain is anchored to data
 * nobody here wrote).
 *
 *  - op level (clopt_enqueue_step): Schedule-Free AdamW/SGD, ADOPT and AdEMAMix over sizes
 *    1 .. 4099 at odd buffer offsets, 9 steps (warmups, ADOPT's v-only first step and clip
 *    bound, SF's averaging weights), variants of each rule; guard regions and the gradient
 *    must come back bit-identical; the Schedule-Free eval/train switch;
 *  - bad arguments and hyperparameters: refused, every buffer untouched;
 *  - optimizer level (test_modern_opt.c): Cautious Adam/AdamW/Lion, StableAdamW,
 *    Schedule-Free modes, checkpoints, set_step_count and AMP.
 *
 * Tolerance: |dev - ref| <= rtol·(|ref| + rms(ref)) with rtol = 2e-5 + 2δ, where δ is the
 * relative error of (1 - β) when the EMA coefficients are rounded to float on their way to
 * the kernel (as tests/test_kernels.c; 1.3e-5 for β2 = 0.999, 1.7e-4 for 0.9999).
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

#ifndef CLOPT_TEST_DATA_DIR
#define CLOPT_TEST_DATA_DIR "tests/data"
#endif

/* ================================================================================== */
/* Shared helpers (declared in test_modern.h)                                         */
/* ================================================================================== */

static double coeff_err1(double c)
{
    if (c <= 0.0 || c >= 1.0)
        return 0.0;
    return fabs((double)(float)c - c) / (1.0 - c);
}

double modern_rtol(const clopt_hparams *hp)
{
    double d = 0.0;
    const double cs[] = {hp->beta1, hp->beta2, hp->beta3, hp->momentum};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        d = fmax(d, coeff_err1(cs[i]));
    return 2e-5 + 2.0 * d;
}

int modern_close(const char *label, const float *dev, const double *ref, size_t n, double rtol)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += ref[i] * ref[i];
    double rms = sqrt(ss / (double)(n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)dev[i] - ref[i]);
        if (!(err <= rtol * (fabs(ref[i]) + rms) + 1e-30)) {
            print_error("%s: element %zu of %zu: device %.9g, reference %.9g (err %.3g, rtol %.3g, "
                        "rms %.3g)\n",
                        label, i, n, (double)dev[i], ref[i], err, rtol, rms);
            return 0;
        }
    }
    return 1;
}

void modern_fill_normal(uint64_t *seed, float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * ref_normal(seed));
}

void modern_to_double(const float *x, double *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i];
}

void modern_ref_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, double *p,
                     const double *g, double *st[CLOPT_MAX_STATE], ref_sf_scalars *sf,
                     double gs)
{
    switch (rule) {
    case CLOPT_SCHEDULE_FREE_ADAMW: ref_sf_adamw_step(hp, t, n, p, g, st, sf, gs); break;
    case CLOPT_SCHEDULE_FREE_SGD: ref_sf_sgd_step(hp, t, n, p, g, st, sf, gs); break;
    case CLOPT_ADOPT: ref_adopt_step(hp, t, n, p, g, st, gs); break;
    case CLOPT_ADEMAMIX: ref_ademamix_step(hp, t, n, p, g, st, gs); break;
    case CLOPT_STABLE_ADAMW: ref_stable_adamw_step(hp, t, n, p, g, st, gs); break;
    case CLOPT_LION: ref_cautious_lion_step(hp, t, n, p, g, st, gs); break;
    case CLOPT_ADAM: ref_cautious_adam_step(hp, 0, t, n, p, g, st, gs); break;
    case CLOPT_ADAMW: ref_cautious_adam_step(hp, 1, t, n, p, g, st, gs); break;
    default: fail_msg("no modern reference for rule %d", (int)rule);
    }
}

size_t modern_state_count(clopt_rule rule)
{
    switch (rule) {
    case CLOPT_SCHEDULE_FREE_SGD:
    case CLOPT_LION: return 1;
    case CLOPT_ADEMAMIX: return 3;
    default: return 2;
    }
}

/* ================================================================================== */
/* Golden replay of the references                                                    */
/* ================================================================================== */

static float *read_f32(const char *gcase, const char *file, size_t *count)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/%s/%s", CLOPT_TEST_DATA_DIR, gcase, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(len > 0 && len % 4 == 0);
    float *v = xmalloc((size_t)len);
    size_t got = fread(v, 4, (size_t)len / 4, f);
    fclose(f);
    assert_int_equal(got, (size_t)len / 4);
    *count = got;
    return v;
}

/* The reference within 2% of the file's tolerance (numpy.allclose with the convention atol =
   rtol·rms(expected), rtol 1e-5), as test_kernels' replay of the other references: it
   computes what the golden reference computed, in double on the same float32 inputs, so only
   the float32 rounding of the expected files separates them (the whole tolerance let a
   reference off by a tenth of it pass). */
#define GOLDEN_FRACTION 0.02
static void golden_expect(const char *gcase, const char *file, const double *x, size_t n)
{
    size_t m;
    float *e = read_f32(gcase, file, &m);
    assert_int_equal(m, n);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)e[i] * e[i];
    const double atol = 1e-5 * sqrt(ss / (double)n);
    for (size_t i = 0; i < n; i++) {
        const double r = fabs(x[i] - e[i]) / (atol + 1e-5 * fabs((double)e[i]));
        if (!(r <= GOLDEN_FRACTION))
            fail_msg("golden %s/%s: element %zu reference %.9g expected %.9g (%.3g of the "
                     "tolerance, limit %.2g)",
                     gcase, file, i, x[i], (double)e[i], r, GOLDEN_FRACTION);
    }
    free(e);
}

static void golden_replay(const char *gcase, clopt_rule rule, const clopt_hparams *hp,
                          const char *const *state_files)
{
    size_t n, ng;
    float *p0 = read_f32(gcase, "param0.f32", &n);
    float *gr = read_f32(gcase, "grads.f32", &ng);
    size_t T = ng / n, ns = modern_state_count(rule);
    double *p = xmalloc(n * sizeof *p), *g = xmalloc(n * sizeof *g);
    double *st[CLOPT_MAX_STATE] = {0};
    for (size_t k = 0; k < ns; k++)
        st[k] = calloc(n, sizeof(double));
    modern_to_double(p0, p, n);
    ref_sf_scalars sf;
    ref_sf_init(&sf);
    for (size_t t = 1; t <= T; t++) {
        modern_to_double(gr + (t - 1) * n, g, n);
        modern_ref_step(rule, hp, t, n, p, g, st, &sf, 1.0);
        if (t == 1)
            golden_expect(gcase, "param_1.f32", p, n);
    }
    golden_expect(gcase, "param_T.f32", p, n);
    for (size_t k = 0; k < ns; k++)
        if (state_files[k])
            golden_expect(gcase, state_files[k], st[k], n);
    if (rule == CLOPT_SCHEDULE_FREE_ADAMW || rule == CLOPT_SCHEDULE_FREE_SGD) {
        ref_sf_eval(n, rule == CLOPT_SCHEDULE_FREE_SGD ? hp->momentum : hp->beta1, p, st[0]);
        golden_expect(gcase, "param_eval_T.f32", p, n);
        /* meta.json final_scalar_state: lr_max and weight_sum */
        assert_true(fabs(sf.lr_max - hp->lr) < 1e-15);
        double ws = rule == CLOPT_SCHEDULE_FREE_SGD ? 0.172 : 0.0001075;
        assert_true(fabs(sf.weight_sum - ws) < 1e-12 * ws + 1e-18);
    }
    for (size_t k = 0; k < ns; k++)
        free(st[k]);
    free(p), free(g), free(p0), free(gr);
}

static void test_golden_references(void **state)
{
    (void)state;
    clopt_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp = (clopt_hparams){.lr = 0.0025, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                         .weight_decay = 0.01, .warmup_steps = 5, .r = 0.0,
                         .weight_lr_power = 2.0};
    golden_replay("schedule_free_adamw", CLOPT_SCHEDULE_FREE_ADAMW, &hp,
                  (const char *const[]){"state_z.f32", "state_exp_avg_sq.f32"});
    hp = (clopt_hparams){.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .warmup_steps = 5,
                         .r = 0.0, .weight_lr_power = 2.0};
    golden_replay("schedule_free_sgd", CLOPT_SCHEDULE_FREE_SGD, &hp,
                  (const char *const[]){"state_z.f32"});
    hp = (clopt_hparams){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.9999, .eps = 1e-6,
                         .clip_exponent = 0.25};
    golden_replay("adopt", CLOPT_ADOPT, &hp,
                  (const char *const[]){"state_exp_avg.f32", "state_exp_avg_sq.f32"});
    hp = (clopt_hparams){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .beta3 = 0.9999,
                         .alpha = 5.0, .alpha_warmup = 10, .beta3_warmup = 10, .eps = 1e-8,
                         .weight_decay = 0.01};
    golden_replay("ademamix", CLOPT_ADEMAMIX, &hp,
                  (const char *const[]){"state_exp_avg_fast.f32", "state_exp_avg_slow.f32",
                                        "state_exp_avg_sq.f32"});
    hp = (clopt_hparams){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6,
                         .weight_decay = 0.01, .cautious = 1};
    golden_replay("cautious_adamw", CLOPT_ADAMW, &hp,
                  (const char *const[]){"state_exp_avg.f32", "state_exp_avg_sq.f32"});
    hp = (clopt_hparams){.lr = 2e-3, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-6,
                         .weight_decay = 0.2, .clip_threshold = 1.0};
    golden_replay("stable_adamw", CLOPT_STABLE_ADAMW, &hp,
                  (const char *const[]){"state_exp_avg.f32", "state_exp_avg_sq.f32"});
}

/* ================================================================================== */
/* Op level                                                                           */
/* ================================================================================== */

#define GUARD 29
#define NSTEPS 9

static float sentinel(size_t i) { return -(float)(4096 + (i % 251)) - 0.25f; }

/* One op-level tensor set: param, grad and the states, each in its own buffer of
   n + off + GUARD floats with the tensor at a role-specific odd offset. */
typedef struct opbufs {
    size_t n, ns, len[2 + CLOPT_MAX_STATE], off[2 + CLOPT_MAX_STATE];
    cl_mem mem[2 + CLOPT_MAX_STATE];
} opbufs;

static void opbufs_new(clopt_ctx *ctx, opbufs *b, size_t n, size_t ns, const float *param,
                       const float *const *states)
{
    static const size_t offs[] = {3, 17, 1, 29, 7, 11};
    memset(b, 0, sizeof *b);
    b->n = n, b->ns = ns;
    for (size_t k = 0; k < 2 + ns; k++) {
        b->off[k] = offs[k];
        b->len[k] = n + offs[k] + GUARD;
        float *h = xmalloc(b->len[k] * sizeof(float));
        for (size_t i = 0; i < b->len[k]; i++)
            h[i] = sentinel(i);
        if (k == 0)
            memcpy(h + b->off[k], param, n * sizeof(float));
        else if (k >= 2)
            memcpy(h + b->off[k], states[k - 2], n * sizeof(float));
        b->mem[k] = upload(ctx, h, b->len[k]);
        free(h);
    }
}

static void opbufs_args(const opbufs *b, clopt_step_args *a)
{
    clopt_step_args_init(a);
    a->param = (clopt_tensor){b->mem[0], b->off[0]};
    a->grad = (clopt_tensor){b->mem[1], b->off[1]};
    for (size_t k = 0; k < b->ns; k++)
        a->state[k] = (clopt_tensor){b->mem[2 + k], b->off[2 + k]};
}

static float *opbufs_read(clopt_ctx *ctx, const opbufs *b, size_t k)
{
    float *h = xmalloc(b->len[k] * sizeof(float));
    read_at(ctx, (clopt_tensor){b->mem[k], 0}, h, b->len[k]);
    return h;
}

/* Every buffer's whole content, concatenated (for "untouched" checks). */
static float *opbufs_snapshot(clopt_ctx *ctx, const opbufs *b, size_t *total)
{
    size_t tot = 0;
    for (size_t k = 0; k < 2 + b->ns; k++)
        tot += b->len[k];
    float *all = xmalloc(tot * sizeof(float)), *q = all;
    for (size_t k = 0; k < 2 + b->ns; k++) {
        read_at(ctx, (clopt_tensor){b->mem[k], 0}, q, b->len[k]);
        q += b->len[k];
    }
    *total = tot;
    return all;
}

static void opbufs_free(opbufs *b)
{
    for (size_t k = 0; k < 2 + b->ns; k++)
        if (b->mem[k])
            clReleaseMemObject(b->mem[k]);
    memset(b, 0, sizeof *b);
}

/* The guards of buffer k are the sentinel pattern. */
static void check_guards(const char *label, const opbufs *b, size_t k, const float *h)
{
    for (size_t i = 0; i < b->len[k]; i++) {
        if (i >= b->off[k] && i < b->off[k] + b->n)
            continue;
        if (f2u(h[i]) != f2u(sentinel(i)))
            fail_msg("%s: buffer %zu element %zu outside the tensor changed", label, k, i);
    }
}

typedef struct opcase {
    const char *label;
    clopt_rule rule;
    clopt_hparams hp;
    double grad_scale;
} opcase;

static void run_opcase_steps(clopt_ctx *ctx, const opcase *c, size_t n, uint64_t seed0,
                             uint64_t steps, double rtol_factor)
{
    uint64_t seed = seed0;
    size_t ns = modern_state_count(c->rule);
    assert_int_equal(clopt_rule_state_count(c->rule, &c->hp), ns);
    float *p0 = xmalloc(n * sizeof(float)), *gf = xmalloc(n * sizeof(float));
    float *s0[CLOPT_MAX_STATE] = {0};
    double *p = xmalloc(n * sizeof(double)), *g = xmalloc(n * sizeof(double));
    double *st[CLOPT_MAX_STATE] = {0};
    modern_fill_normal(&seed, p0, n, 0.5);
    modern_to_double(p0, p, n);
    for (size_t k = 0; k < ns; k++) {
        s0[k] = xmalloc(n * sizeof(float));
        st[k] = xmalloc(n * sizeof(double));
        int sf_z = k == 0 && (c->rule == CLOPT_SCHEDULE_FREE_ADAMW ||
                              c->rule == CLOPT_SCHEDULE_FREE_SGD);
        for (size_t i = 0; i < n; i++)
            s0[k][i] = sf_z ? 77.0f + (float)i : clopt_rule_state_init(c->rule, &c->hp, k);
        for (size_t i = 0; i < n; i++)
            st[k][i] = s0[k][i];
        if (!sf_z)
            assert_true(clopt_rule_state_init(c->rule, &c->hp, k) == 0.0f);
    }
    opbufs b;
    opbufs_new(ctx, &b, n, ns, p0, (const float *const *)s0);
    clopt_step_args a;
    opbufs_args(&b, &a);
    a.grad_scale = c->grad_scale;
    ref_sf_scalars sf;
    ref_sf_init(&sf);
    double lr_max = 0.0, wsum = 0.0;
    double rtol = rtol_factor * modern_rtol(&c->hp);
    char label[160];
    float *gsent = xmalloc(b.len[1] * sizeof(float));
    for (size_t i = 0; i < b.len[1]; i++)
        gsent[i] = sentinel(i);
    for (uint64_t t = 1; t <= steps; t++) {
        double gsc = c->grad_scale == 0.0 ? 1.0 : c->grad_scale;
        modern_fill_normal(&seed, gf, n, gsc * (t == 4 ? 30.0 : 1.0));
        memcpy(gsent + b.off[1], gf, n * sizeof(float));
        write_at(ctx, (clopt_tensor){b.mem[1], b.off[1]}, gf, n);
        modern_to_double(gf, g, n);
        a.sf_lr_max = lr_max, a.sf_weight_sum = wsum;
        assert_int_equal(clopt_enqueue_step(ctx, NULL, c->rule, &c->hp, &a, n, t, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        modern_ref_step(c->rule, &c->hp, t, n, p, g, st, &sf, c->grad_scale);
        if (c->rule == CLOPT_SCHEDULE_FREE_ADAMW || c->rule == CLOPT_SCHEDULE_FREE_SGD) {
            double lrt = 0.0;
            clopt_schedule_free_advance(&c->hp, t, &lr_max, &wsum, &lrt);
            assert_true(fabs(lr_max - sf.lr_max) <= 1e-14 * sf.lr_max);
            assert_true(fabs(wsum - sf.weight_sum) <= 1e-12 * sf.weight_sum);
        }
        for (size_t k = 0; (t == steps || steps <= NSTEPS) && k < 2 + ns; k++) {
            float *h = opbufs_read(ctx, &b, k);
            snprintf(label, sizeof label, "%s n=%zu t=%u %s", c->label, n, (unsigned)t,
                     k == 0 ? "param" : k == 1 ? "grad" : clopt_rule_state_name(c->rule, &c->hp, k - 2));
            check_guards(label, &b, k, h);
            if (k == 1) {
                if (memcmp(h, gsent, b.len[1] * sizeof(float)) != 0)
                    fail_msg("%s: the gradient was written", label);
            } else if (!modern_close(label, h + b.off[k], k == 0 ? p : st[k - 2], n, rtol)) {
                fail();
            }
            free(h);
        }
    }
    opbufs_free(&b);
    for (size_t k = 0; k < ns; k++)
        free(s0[k]), free(st[k]);
    free(p0), free(gf), free(p), free(g), free(gsent);
}

static void run_opcase(clopt_ctx *ctx, const opcase *c, size_t n, uint64_t seed0)
{
    run_opcase_steps(ctx, c, n, seed0, NSTEPS, 1.0);
}

static clopt_hparams hp_of(clopt_rule rule)
{
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(rule, &hp), CLOPT_SUCCESS);
    return hp;
}

static size_t opcases(opcase *c)
{
    size_t k = 0;
    clopt_hparams hp;
    /* Schedule-Free AdamW: no decay, no warmup; then decay, warmup 3, r 0.5, lr power 1 */
    hp = hp_of(CLOPT_SCHEDULE_FREE_ADAMW);
    hp.lr = 0.01;
    c[k++] = (opcase){"sf_adamw plain", CLOPT_SCHEDULE_FREE_ADAMW, hp, 1.0};
    hp.weight_decay = 0.5, hp.warmup_steps = 3, hp.r = 0.5, hp.weight_lr_power = 1.0;
    hp.lr = 0.05; /* big enough that decay at y, not at the interpolated y, is visible */
    hp.beta1 = 0.8, hp.beta2 = 0.99;
    c[k++] = (opcase){"sf_adamw wd warmup r", CLOPT_SCHEDULE_FREE_ADAMW, hp, 4.0};
    /* Schedule-Free SGD */
    hp = hp_of(CLOPT_SCHEDULE_FREE_SGD);
    hp.lr = 0.1;
    c[k++] = (opcase){"sf_sgd plain", CLOPT_SCHEDULE_FREE_SGD, hp, 1.0};
    hp.lr = 0.05, hp.momentum = 0.75, hp.weight_decay = 1e-3, hp.warmup_steps = 4;
    hp.r = 1.0, hp.weight_lr_power = 0.0;
    c[k++] = (opcase){"sf_sgd wd warmup r", CLOPT_SCHEDULE_FREE_SGD, hp, 3.0};
    /* ADOPT: defaults; L2 + maximize; decoupled without clipping; a steeper clip */
    hp = hp_of(CLOPT_ADOPT);
    c[k++] = (opcase){"adopt default", CLOPT_ADOPT, hp, 1.0};
    hp.weight_decay = 0.02, hp.maximize = 1, hp.beta2 = 0.99, hp.lr = 0.01;
    c[k++] = (opcase){"adopt l2 maximize", CLOPT_ADOPT, hp, 4.0};
    hp.maximize = 0, hp.decouple = 1, hp.weight_decay = 0.1, hp.clip_exponent = 0.0;
    c[k++] = (opcase){"adopt decoupled noclip", CLOPT_ADOPT, hp, 1.0};
    hp.decouple = 0, hp.weight_decay = 0.0, hp.clip_exponent = 0.5, hp.beta2 = 0.999;
    hp.lr = 1e-3;
    c[k++] = (opcase){"adopt clip 0.5", CLOPT_ADOPT, hp, 1.0};
    /* AdEMAMix: defaults (no warmup); alpha 5 warmed over 6 steps, beta3 over 4, decay */
    hp = hp_of(CLOPT_ADEMAMIX);
    c[k++] = (opcase){"ademamix default", CLOPT_ADEMAMIX, hp, 1.0};
    hp.alpha = 5.0, hp.alpha_warmup = 6, hp.beta3_warmup = 4, hp.weight_decay = 0.01;
    hp.lr = 0.01, hp.beta2 = 0.99, hp.beta3 = 0.99; /* (1 - β) nearly exact in float */
    c[k++] = (opcase){"ademamix warmups wd", CLOPT_ADEMAMIX, hp, 4.0};
    return k;
}

static void test_op_rules(void **state)
{
    fixture *f = *state;
    opcase c[16];
    size_t nc = opcases(c);
    const size_t sizes[] = {1, 3, 17, 1000, 4099};
    for (size_t i = 0; i < nc; i++) {
        const char *why = "";
        if (clopt_hparams_validate(c[i].rule, &c[i].hp, &why) != CLOPT_SUCCESS)
            fail_msg("%s: hparams refused: %s", c[i].label, why);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            run_opcase(f->ctx, &c[i], sizes[s], 1000 + 31 * i + s);
    }
}

/* Long runs: 1000 steps of every variant at n = 4099 against the double reference, checked
   at the end with the short runs' bound (measured: they pass it; at 1/20 of it they fail). */
static void test_op_long_runs(void **state)
{
    fixture *f = *state;
    opcase c[16];
    size_t nc = opcases(c);
    for (size_t i = 0; i < nc; i++)
        run_opcase_steps(f->ctx, &c[i], 4099, 5000 + 17 * i, 1000, 1.0);
}

/* ADOPT's first step sets v = g² and nothing else; its defaults are the header's. */
static void test_op_adopt_first_step(void **state)
{
    fixture *f = *state;
    clopt_hparams hp = hp_of(CLOPT_ADOPT);
    assert_true(hp.lr == 1e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.9999 && hp.eps == 1e-6);
    assert_true(hp.clip_exponent == 0.25);
    hp.weight_decay = 0.5, hp.decouple = 1;
    const size_t n = 33;
    float p0[33], g[33], z[33] = {0}, out[33];
    uint64_t seed = 9;
    modern_fill_normal(&seed, p0, n, 1.0);
    modern_fill_normal(&seed, g, n, 1.0);
    opbufs b;
    opbufs_new(f->ctx, &b, n, 2, p0, (const float *const[]){z, z});
    write_at(f->ctx, (clopt_tensor){b.mem[1], b.off[1]}, g, n);
    clopt_step_args a;
    opbufs_args(&b, &a);
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADOPT, &hp, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    read_at(f->ctx, a.param, out, n);
    assert_memory_equal(out, p0, sizeof p0);
    read_at(f->ctx, a.state[0], out, n);
    assert_memory_equal(out, z, sizeof z);
    read_at(f->ctx, a.state[1], out, n);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(out[i] - (double)g[i] * g[i]) <= 1e-6 * (double)g[i] * g[i]);
    opbufs_free(&b);
}

/* eval writes x = lerp(y, z, 1 - 1/β), train y = lerp(x, z, 1 - β), at offsets. */
static void run_sf_mode(clopt_ctx *ctx, clopt_rule rule, clopt_hparams hp, size_t n)
{
    double beta = rule == CLOPT_SCHEDULE_FREE_SGD ? hp.momentum : hp.beta1;
    size_t ns = modern_state_count(rule);
    uint64_t seed = 4242 + n;
    float *p0 = xmalloc(n * sizeof(float)), *gf = xmalloc(n * sizeof(float));
    float *zero = calloc(n, sizeof(float));
    modern_fill_normal(&seed, p0, n, 1.0);
    opbufs b;
    opbufs_new(ctx, &b, n, ns, p0, (const float *const[]){zero, zero});
    clopt_step_args a;
    opbufs_args(&b, &a);
    double lr_max = 0.0, wsum = 0.0;
    for (uint64_t t = 1; t <= 4; t++) {
        modern_fill_normal(&seed, gf, n, 1.0);
        write_at(ctx, a.grad, gf, n);
        a.sf_lr_max = lr_max, a.sf_weight_sum = wsum;
        assert_int_equal(clopt_enqueue_step(ctx, NULL, rule, &hp, &a, n, t, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        clopt_schedule_free_advance(&hp, t, &lr_max, &wsum, NULL);
    }
    float *y = xmalloc(n * sizeof(float)), *z = xmalloc(n * sizeof(float));
    float *out = xmalloc(n * sizeof(float));
    double *r = xmalloc(n * sizeof(double)), *zd = xmalloc(n * sizeof(double));
    read_at(ctx, a.param, y, n);
    read_at(ctx, a.state[0], z, n);
    modern_to_double(z, zd, n);
    size_t tot;
    float *before = opbufs_snapshot(ctx, &b, &tot);
    /* wrong rule: refused, nothing written */
    assert_int_equal(clopt_enqueue_schedule_free_mode(ctx, NULL, CLOPT_ADAMW, &hp, &a, n, 0, 0,
                                                      NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    float *after = opbufs_snapshot(ctx, &b, &tot);
    assert_memory_equal(before, after, tot * sizeof(float));
    free(after);
    /* z on θ: refused as by clopt_enqueue_step, nothing written (the switch skipped
       the step's overlap check, and its kernel's reads and writes raced) */
    clopt_step_args bad = a;
    bad.state[0] = a.param;
    assert_int_equal(clopt_enqueue_schedule_free_mode(ctx, NULL, rule, &hp, &bad, n, 0, 0, NULL,
                                                      NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "overlap"));
    after = opbufs_snapshot(ctx, &b, &tot);
    assert_memory_equal(before, after, tot * sizeof(float));
    free(after);
    /* eval */
    assert_int_equal(clopt_enqueue_schedule_free_mode(ctx, NULL, rule, &hp, &a, n, 0, 0, NULL,
                                                      NULL),
                     CLOPT_SUCCESS);
    read_at(ctx, a.param, out, n);
    modern_to_double(y, r, n);
    ref_sf_eval(n, beta, r, zd);
    assert_true(modern_close("sf eval x", out, r, n, 1e-5));
    float *h = opbufs_read(ctx, &b, 0);
    check_guards("sf eval", &b, 0, h);
    free(h);
    /* state untouched by the switch */
    read_at(ctx, a.state[0], gf, n);
    assert_memory_equal(gf, z, n * sizeof(float));
    /* train: from the device's x */
    assert_int_equal(clopt_enqueue_schedule_free_mode(ctx, NULL, rule, &hp, &a, n, 1, 0, NULL,
                                                      NULL),
                     CLOPT_SUCCESS);
    modern_to_double(out, r, n);
    ref_sf_train(n, beta, r, zd);
    read_at(ctx, a.param, out, n);
    assert_true(modern_close("sf train y", out, r, n, 1e-5));
    modern_to_double(y, r, n);
    assert_true(modern_close("sf round trip", out, r, n, 1e-5));
    free(before);
    opbufs_free(&b);
    free(p0), free(gf), free(zero), free(y), free(z), free(out), free(r), free(zd);
}

static void test_op_sf_mode(void **state)
{
    fixture *f = *state;
    clopt_hparams hp = hp_of(CLOPT_SCHEDULE_FREE_ADAMW);
    hp.lr = 0.05;
    run_sf_mode(f->ctx, CLOPT_SCHEDULE_FREE_ADAMW, hp, 1);
    run_sf_mode(f->ctx, CLOPT_SCHEDULE_FREE_ADAMW, hp, 1000);
    hp = hp_of(CLOPT_SCHEDULE_FREE_SGD);
    hp.lr = 0.1, hp.momentum = 0.75;
    run_sf_mode(f->ctx, CLOPT_SCHEDULE_FREE_SGD, hp, 17);
}

/* ================================================================================== */
/* Bad arguments                                                                      */
/* ================================================================================== */

/* The op with (hp, a, step) returns `want` and leaves every buffer of b as it was. */
static void expect_refused(clopt_ctx *ctx, const char *label, clopt_rule rule,
                           const clopt_hparams *hp, const clopt_step_args *a, const opbufs *b,
                           uint64_t step, clopt_status want, clopt_status alt)
{
    size_t tot, tot2;
    float *before = opbufs_snapshot(ctx, b, &tot);
    clopt_status s = clopt_enqueue_step(ctx, NULL, rule, hp, a, b->n, step, 0, NULL, NULL);
    if (s != want && s != alt)
        fail_msg("%s: status %s, expected %s (%s)", label, clopt_status_name(s),
                 clopt_status_name(want), clopt_ctx_last_error(ctx));
    assert_int_equal(clFinish(clopt_ctx_cl_queue(ctx)), CL_SUCCESS);
    float *after = opbufs_snapshot(ctx, b, &tot2);
    assert_int_equal(tot, tot2);
    if (memcmp(before, after, tot * sizeof(float)) != 0)
        fail_msg("%s: a buffer changed", label);
    free(before), free(after);
}

static void test_op_bad_arguments(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    const size_t n = 64;
    float p0[64], s[64];
    uint64_t seed = 77;
    modern_fill_normal(&seed, p0, n, 1.0);
    modern_fill_normal(&seed, s, n, 0.1);
    opbufs b;
    opbufs_new(ctx, &b, n, 3, p0, (const float *const[]){s, s, s});
    float gg[64];
    modern_fill_normal(&seed, gg, n, 1.0);
    write_at(ctx, (clopt_tensor){b.mem[1], b.off[1]}, gg, n);
    clopt_step_args a, a2, a3, a1;
    opbufs_args(&b, &a3);
    a2 = a3, a2.state[2] = (clopt_tensor){NULL, 0};
    a1 = a2, a1.state[1] = (clopt_tensor){NULL, 0};
    clopt_hparams hp;

    /* Schedule-Free scalars */
    hp = hp_of(CLOPT_SCHEDULE_FREE_ADAMW);
    a = a2, a.sf_lr_max = 0.01, a.sf_weight_sum = -1e-4;
    expect_refused(ctx, "sf negative weight_sum", CLOPT_SCHEDULE_FREE_ADAMW, &hp, &a, &b, 3,
                   CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT);
    a = a2, a.sf_lr_max = NAN, a.sf_weight_sum = 1e-4;
    expect_refused(ctx, "sf NaN lr_max", CLOPT_SCHEDULE_FREE_ADAMW, &hp, &a, &b, 3,
                   CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT);
    a = a1, a.sf_weight_sum = INFINITY;
    hp = hp_of(CLOPT_SCHEDULE_FREE_SGD);
    expect_refused(ctx, "sf_sgd Inf weight_sum", CLOPT_SCHEDULE_FREE_SGD, &hp, &a, &b, 2,
                   CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT);
    /* missing and extra states, step 0 */
    hp = hp_of(CLOPT_SCHEDULE_FREE_ADAMW);
    expect_refused(ctx, "sf_adamw missing v", CLOPT_SCHEDULE_FREE_ADAMW, &hp, &a1, &b, 1,
                   CLOPT_ERR_STATE_MISMATCH, CLOPT_ERR_STATE_MISMATCH);
    expect_refused(ctx, "sf_adamw extra state", CLOPT_SCHEDULE_FREE_ADAMW, &hp, &a3, &b, 1,
                   CLOPT_ERR_STATE_MISMATCH, CLOPT_ERR_STATE_MISMATCH);
    expect_refused(ctx, "sf_adamw step 0", CLOPT_SCHEDULE_FREE_ADAMW, &hp, &a2, &b, 0,
                   CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT);
    hp = hp_of(CLOPT_ADEMAMIX);
    expect_refused(ctx, "ademamix missing slow", CLOPT_ADEMAMIX, &hp, &a2, &b, 1,
                   CLOPT_ERR_STATE_MISMATCH, CLOPT_ERR_STATE_MISMATCH);

    /* hyperparameters: validate says INVALID_HYPERPARAM, the op refuses with it */
    struct badhp {
        const char *label;
        clopt_rule rule;
        clopt_hparams hp;
        const clopt_step_args *args;
    } bad[16];
    size_t nb = 0;
    hp = hp_of(CLOPT_SCHEDULE_FREE_ADAMW), hp.beta1 = 0.0;
    bad[nb++] = (struct badhp){"sf_adamw beta1 0", CLOPT_SCHEDULE_FREE_ADAMW, hp, &a2};
    hp = hp_of(CLOPT_SCHEDULE_FREE_ADAMW), hp.weight_lr_power = -1.0;
    bad[nb++] = (struct badhp){"sf_adamw weight_lr_power < 0", CLOPT_SCHEDULE_FREE_ADAMW, hp,
                                 &a2};
    hp = hp_of(CLOPT_SCHEDULE_FREE_SGD), hp.momentum = 0.0;
    bad[nb++] = (struct badhp){"sf_sgd momentum 0", CLOPT_SCHEDULE_FREE_SGD, hp, &a1};
    hp = hp_of(CLOPT_ADOPT), hp.clip_exponent = -0.25;
    bad[nb++] = (struct badhp){"adopt clip_exponent < 0", CLOPT_ADOPT, hp, &a2};
    hp = hp_of(CLOPT_ADOPT), hp.eps = 0.0;
    bad[nb++] = (struct badhp){"adopt eps 0", CLOPT_ADOPT, hp, &a2};
    hp = hp_of(CLOPT_ADEMAMIX), hp.alpha = -1.0;
    bad[nb++] = (struct badhp){"ademamix alpha < 0", CLOPT_ADEMAMIX, hp, &a3};
    hp = hp_of(CLOPT_ADEMAMIX), hp.beta3 = 1.0;
    bad[nb++] = (struct badhp){"ademamix beta3 1", CLOPT_ADEMAMIX, hp, &a3};
    hp = hp_of(CLOPT_SGD), hp.momentum = 0.9, hp.cautious = 1;
    bad[nb++] = (struct badhp){"sgd cautious", CLOPT_SGD, hp, &a1};
    hp = hp_of(CLOPT_ADAM), hp.amsgrad = 1, hp.cautious = 1;
    bad[nb++] = (struct badhp){"adam cautious amsgrad", CLOPT_ADAM, hp, &a3};
    for (size_t i = 0; i < nb; i++) {
        const char *why = NULL;
        if (clopt_hparams_validate(bad[i].rule, &bad[i].hp, &why) != CLOPT_ERR_INVALID_HYPERPARAM)
            fail_msg("%s: validate accepted it", bad[i].label);
        assert_non_null(why);
        expect_refused(ctx, bad[i].label, bad[i].rule, &bad[i].hp, bad[i].args, &b, 2,
                       CLOPT_ERR_INVALID_HYPERPARAM,
                       CLOPT_ERR_INVALID_HYPERPARAM);
        clopt_optimizer *opt = (clopt_optimizer *)1;
        assert_int_equal(clopt_optimizer_create(ctx, bad[i].rule, &bad[i].hp, &opt),
                         CLOPT_ERR_INVALID_HYPERPARAM);
        assert_null(opt);
    }
    hp = hp_of(CLOPT_MUON), hp.ns_steps = 0;
    assert_int_equal(clopt_hparams_validate(CLOPT_MUON, &hp, NULL), CLOPT_ERR_INVALID_HYPERPARAM);

    /* optimizer-level-only rules and options at the op level */
    hp = hp_of(CLOPT_ADAMW), hp.cautious = 1;
    assert_int_equal(clopt_hparams_validate(CLOPT_ADAMW, &hp, NULL), CLOPT_SUCCESS);
    expect_refused(ctx, "adamw cautious op", CLOPT_ADAMW, &hp, &a2, &b, 1, CLOPT_ERR_UNSUPPORTED, CLOPT_ERR_UNSUPPORTED);
    hp = hp_of(CLOPT_ADAM), hp.cautious = 1;
    expect_refused(ctx, "adam cautious op", CLOPT_ADAM, &hp, &a2, &b, 1, CLOPT_ERR_UNSUPPORTED, CLOPT_ERR_UNSUPPORTED);
    hp = hp_of(CLOPT_LION), hp.cautious = 1;
    expect_refused(ctx, "lion cautious op", CLOPT_LION, &hp, &a1, &b, 1, CLOPT_ERR_UNSUPPORTED, CLOPT_ERR_UNSUPPORTED);
    hp = hp_of(CLOPT_STABLE_ADAMW);
    expect_refused(ctx, "stable_adamw op", CLOPT_STABLE_ADAMW, &hp, &a2, &b, 1,
                   CLOPT_ERR_UNSUPPORTED, CLOPT_ERR_UNSUPPORTED);

    /* cautious masking runs two passes over f32 or bf16 state: 8-bit state is refused when
       the optimizer is created (it used to be accepted and to fail on the device) */
    const clopt_rule q8_cautious[] = {CLOPT_ADAM, CLOPT_ADAMW, CLOPT_LION};
    for (size_t i = 0; i < 3; i++) {
        hp = hp_of(q8_cautious[i]), hp.cautious = 1, hp.state_dtype = CLOPT_DTYPE_U8;
        clopt_optimizer *opt = (clopt_optimizer *)1;
        assert_int_equal(clopt_optimizer_create(ctx, q8_cautious[i], &hp, &opt),
                         CLOPT_ERR_UNSUPPORTED);
        assert_null(opt);
        hp.state_dtype = CLOPT_DTYPE_BF16;
        assert_int_equal(clopt_optimizer_create(ctx, q8_cautious[i], &hp, &opt), CLOPT_SUCCESS);
        clopt_optimizer_destroy(opt);
    }

    /* 8-bit state is refused for the new rules but AdEMAMix (bitsandbytes' AdEMAMix8bit,
       tests/test_q8.c); bf16 allocates */
    const clopt_rule rules[] = {CLOPT_SCHEDULE_FREE_ADAMW, CLOPT_SCHEDULE_FREE_SGD, CLOPT_ADOPT,
                                CLOPT_STABLE_ADAMW};
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        clopt_tensor out[CLOPT_MAX_STATE], absmax[CLOPT_MAX_STATE];
        size_t count = 99;
        hp = hp_of(rules[i]);
        clopt_status st = clopt_alloc_state_ex(ctx, rules[i], &hp, 5000, CLOPT_DTYPE_U8, out,
                                               absmax, &count);
        if (st != CLOPT_ERR_UNSUPPORTED)
            fail_msg("%s: 8-bit state gave %s", clopt_rule_name(rules[i]), clopt_status_name(st));
        if (rules[i] != CLOPT_STABLE_ADAMW) {
            hp.state_dtype = CLOPT_DTYPE_U8;
            a = rules[i] == CLOPT_SCHEDULE_FREE_SGD ? a1 : rules[i] == CLOPT_ADEMAMIX ? a3 : a2;
            a.state_dtype = CLOPT_DTYPE_U8;
            for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
                a.state_absmax[k] = a.state[k];
            size_t tot, tot2;
            float *before = opbufs_snapshot(ctx, &b, &tot);
            assert_true(clopt_enqueue_step(ctx, NULL, rules[i], &hp, &a, n, 1, 0, NULL, NULL) < 0);
            float *after = opbufs_snapshot(ctx, &b, &tot2);
            assert_memory_equal(before, after, tot * sizeof(float));
            free(before), free(after);
        }
    }
    opbufs_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_references),
        cmocka_unit_test(test_op_rules),
        cmocka_unit_test(test_op_long_runs),
        cmocka_unit_test(test_op_adopt_first_step),
        cmocka_unit_test(test_op_sf_mode),
        cmocka_unit_test(test_op_bad_arguments),
        MODERN_OPT_TESTS
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
