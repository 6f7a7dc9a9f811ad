/* SPDX-License-Identifier: MIT */
/* Long runs and the less travelled paths of the optimizer level against the double-precision
 * references of tests/ref:
 *  - Adafactor's first moment (use_beta1), fixed lr (relative_step 0), warm-up
 *    (warmup_init), scale_parameter on and off, on 1-D, 2-D and 3-D (factored) tensors;
 *  - every rule 1000 steps at n = 4099 (no multiple of any vector width) with reproducible
 *    pseudo-random gradients (splitmix64), read back only at the end (drift);
 *  - global-norm clipping (clopt_optimizer_set_grad_clip) with the Adam family, LAMB,
 *    Adafactor and Sophia, over two tensors, against the references applied to the clipped
 *    gradient (torch.nn.utils.clip_grad_norm_: coef = min(1, max_norm/(norm + 1e-6))).
 *
 * Tolerance of a parameter θ_i after T steps (check_run), with ε = 2^-23 (FLT_EPSILON):
 *
 *     |θ_i - θ_i^ref| <= K_THETA·ε·sqrt(T)·max_t|θ_i,t| + K_STEP·L_i + 2·lr·ties_i + 2^-126
 *
 *  - The device stores θ as float32 after every step: each store rounds by at most half an
 *    ulp, <= ε/2·|θ|, with no preferred sign (the steps vary in size and sign), so after T
 *    steps the rounding is a random walk of standard deviation ~0.3·ε·|θ|·sqrt(T); over
 *    4099 elements its largest is ~4σ ≈ 1.2·ε·|θ|·sqrt(T). K_THETA = 4: three times that.
 *    (A worst-case linear bound, T·ε/2, would be 8x looser at T = 1000 and hide real drift.)
 *    Except Lion and Sophia: their steps have a fixed size (lr·sign, Sophia's clipped
 *    ratio 1), so θ - step rounds the same way step after step and the rounding adds up
 *    linearly (seen: 300 ulps of θ after 1000 Lion steps of lr = 1e-4 at |θ| ~ 1). For them
 *    the θ term is the worst case ε·T·max|θ|: half an ulp for each of the two roundings
 *    per step (the decoupled decay, then the update).
 *  - L_i = Σ_t |θ_i,t - θ_i,t-1| is the path length of the reference: an error of the
 *    update that is relative to the update (float32 state and arithmetic, hyperparameters
 *    sent as float32: e.g. β2 = 0.999 becomes 0.99900001, which makes (1-β2) 1.3e-5 too
 *    large relative to β2's complement, a systematic error of v and of every Adam step)
 *    accumulates at most linearly along the path. K_STEP = 64·ε + 4·c, with c the rule's
 *    coefficient error (ref_hparam_coeff_error; for Adafactor the error of its step
 *    dependent β2_t = 1 - t^-0.8 sent as float32, ε/2·β2_t/(1-β2_t) <= ε/2·T^0.8).
 *  - Lion and Sophia (with h = 0 its step is lr·sign(m)) decide a sign: where the decided
 *    quantity (β1·m + (1-β1)·g, or the new m) is within TIE_MARGIN (relative to the sum of
 *    the magnitudes of its terms) of 0, float32 and double may decide differently, and the
 *    step then differs by 2·lr. The reference counts those near-ties per element (ties_i)
 *    and the test asserts they are rare (< 1% of the elements), so that almost every element
 *    is held to the tight bound. With the gradients used here the count is 0 on PoCL.
 *  - 2^-126: the device may flush float32 subnormals to zero.
 *
 * A bug that changes a step by a relative amount r makes the error grow like r·L_i, so the
 * bound fails for r >~ 64ε + 4c (1e-5 .. 5e-5) plus the θ-rounding term. The tests of
 * Adafactor's paths and of clipping also assert that a plausibly wrong reference (the clip
 * coefficient not applied, the first moment off, lr off by 1%) lies outside the bound, so
 * the bound is not vacuous; the 1000-step runs of every rule (test_long_run) use the same
 * bound without a wrong reference of their own. */
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
#include "ref.h"

static const double EPS32 = 0x1p-23; /* FLT_EPSILON */
#define K_THETA 4.0
#define TIE_MARGIN 1e-5
#define MAX_TENSORS 2

/* ---- one optimizer and its reference ------------------------------------------------- */

typedef struct tensor {
    size_t ndim, shape[3], n;
    size_t B, R, C;            /* Adafactor's factored view; R = 0: a vector */
    cl_mem p, g, h;            /* the device's θ, gradient, Hessian estimate (Sophia) */
    float *gf, *hf;            /* this step's gradient and estimate, as the device gets them */
    double *th, *gd, *hd;      /* reference θ, gradient and estimate in double */
    double *st[CLOPT_MAX_STATE];
    double *maxabs, *path;     /* per element: max_t |θ_t|, Σ_t |θ_t - θ_t-1| */
    unsigned *ties;
    double mu_product;
} tensor;

typedef struct run {
    clopt_rule rule;
    clopt_hparams hp;
    size_t ntens;
    tensor t[MAX_TENSORS];
    clopt_optimizer *opt;
    double max_norm;           /* clipping: 0 = off */
    double last_norm;          /* the reference's total gradient norm of the last step */
    uint64_t steps;
} run;

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

/* Registers the tensors (shapes in r->t[k].ndim/shape) and θ_0 ~ N(0, 1)·theta_scale. */
static void run_open(run *r, clopt_ctx *ctx, uint64_t *seed, double theta_scale)
{
    assert_int_equal(clopt_optimizer_create(ctx, r->rule, &r->hp, &r->opt), CLOPT_SUCCESS);
    if (r->max_norm > 0)
        assert_int_equal(clopt_optimizer_set_grad_clip(r->opt, r->max_norm), CLOPT_SUCCESS);
    for (size_t k = 0; k < r->ntens; k++) {
        tensor *e = &r->t[k];
        e->n = 1;
        for (size_t d = 0; d < e->ndim; d++)
            e->n *= e->shape[d];
        e->B = 1, e->R = e->C = 0;
        if (e->ndim >= 2) {
            for (size_t d = 0; d + 2 < e->ndim; d++)
                e->B *= e->shape[d];
            e->R = e->shape[e->ndim - 2];
            e->C = e->shape[e->ndim - 1];
        }
        const size_t n = e->n;
        float *p0 = xcalloc(n, sizeof *p0);
        e->th = xcalloc(n, sizeof(double));
        for (size_t i = 0; i < n; i++) {
            p0[i] = (float)(ref_normal(seed) * theta_scale);
            e->th[i] = p0[i];
        }
        e->p = upload(ctx, p0, n);
        e->g = upload(ctx, NULL, n);
        e->h = r->rule == CLOPT_SOPHIA ? upload(ctx, NULL, n) : NULL;
        e->gf = xcalloc(n, sizeof(float));
        e->hf = xcalloc(n, sizeof(float));
        e->gd = xcalloc(n, sizeof(double));
        e->hd = xcalloc(n, sizeof(double));
        e->maxabs = xcalloc(n, sizeof(double));
        e->path = xcalloc(n, sizeof(double));
        e->ties = xcalloc(n, sizeof(unsigned));
        for (size_t i = 0; i < n; i++)
            e->maxabs[i] = fabs(e->th[i]);
        for (size_t s = 0; s < CLOPT_MAX_STATE; s++) {
            e->st[s] = xcalloc(n, sizeof(double));
            if (r->rule < CLOPT_ADAFACTOR && s < ref_state_count(r->rule, &r->hp))
                for (size_t i = 0; i < n; i++)
                    e->st[s][i] = ref_state_init(r->rule, &r->hp, s);
        }
        if (r->rule == CLOPT_RANGER) /* slow weights φ_0 = θ_0 */
            memcpy(e->st[2], e->th, n * sizeof(double));
        e->mu_product = 1.0;
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){e->p, 0};
        d.grad = (clopt_tensor){e->g, 0};
        if (e->h)
            d.hessian = (clopt_tensor){e->h, 0};
        d.ndim = e->ndim;
        memcpy(d.shape, e->shape, sizeof e->shape);
        assert_int_equal(clopt_optimizer_add_param_desc(r->opt, 0, &d, NULL), CLOPT_SUCCESS);
        free(p0);
    }
}

static void run_close(run *r)
{
    clopt_optimizer_destroy(r->opt);
    for (size_t k = 0; k < r->ntens; k++) {
        tensor *e = &r->t[k];
        clReleaseMemObject(e->p);
        clReleaseMemObject(e->g);
        if (e->h)
            clReleaseMemObject(e->h);
        free(e->gf), free(e->hf), free(e->th), free(e->gd), free(e->hd);
        free(e->maxabs), free(e->path), free(e->ties);
        for (size_t s = 0; s < CLOPT_MAX_STATE; s++)
            free(e->st[s]);
    }
}

/* One reference step of tensor e with gradient e->gd divided by gs. */
static void ref_tensor_step(const run *r, const clopt_hparams *hp, tensor *e, uint64_t t,
                            double gs, int fold)
{
    switch (r->rule) {
    case CLOPT_ADAFACTOR:
        ref_adafactor_step(hp, t, e->B, e->R, e->C, e->n, e->th, e->gd, e->st, gs);
        break;
    case CLOPT_LAMB: ref_lamb_step(hp, t, e->n, e->th, e->gd, e->st, gs); break;
    case CLOPT_RANGER: ref_ranger_step(hp, t, e->n, e->th, e->gd, e->st, gs); break;
    default:
        ref_step(r->rule, hp, t, e->n, e->th, e->gd, e->st, fold ? e->hd : NULL,
                 &e->mu_product, gs);
        break;
    }
}

/* Step r->steps + 1 on the device and in the reference, with the gradients (and Sophia's
   estimates) the caller put into e->gf (e->hf). The device's θ stays on the device. */
static void run_step(run *r, clopt_ctx *ctx)
{
    const uint64_t t = ++r->steps;
    const int fold = r->rule == CLOPT_SOPHIA && t % r->hp.hess_interval == 0;
    double sumsq = 0.0;
    for (size_t k = 0; k < r->ntens; k++) {
        tensor *e = &r->t[k];
        write_at(ctx, (clopt_tensor){e->g, 0}, e->gf, e->n);
        if (fold)
            write_at(ctx, (clopt_tensor){e->h, 0}, e->hf, e->n);
        for (size_t i = 0; i < e->n; i++) {
            e->gd[i] = e->gf[i];
            e->hd[i] = e->hf[i];
            sumsq += e->gd[i] * e->gd[i];
        }
    }
    assert_int_equal(clopt_optimizer_step(r->opt, NULL), CLOPT_SUCCESS);
    r->last_norm = sqrt(sumsq);
    const double coef = ref_clip_coef(r->last_norm, r->max_norm);
    for (size_t k = 0; k < r->ntens; k++) {
        tensor *e = &r->t[k];
        if (r->rule == CLOPT_LION || r->rule == CLOPT_SOPHIA) {
            /* near-ties of the sign decision (Sophia's matters only where h = 0) */
            const double b1 = r->hp.beta1;
            for (size_t i = 0; i < e->n; i++) {
                const double g = e->gd[i] * coef, m = e->st[0][i];
                const double a = b1 * m + (1.0 - b1) * g;
                const double b = b1 * fabs(m) + (1.0 - b1) * fabs(g);
                if (fabs(a) <= TIE_MARGIN * b && (r->rule == CLOPT_LION || e->st[1][i] == 0.0))
                    e->ties[i]++;
            }
        }
        double *prev = xcalloc(e->n, sizeof(double));
        memcpy(prev, e->th, e->n * sizeof(double));
        ref_tensor_step(r, &r->hp, e, t, 1.0 / coef, fold);
        for (size_t i = 0; i < e->n; i++) {
            e->path[i] += fabs(e->th[i] - prev[i]);
            e->maxabs[i] = fmax(e->maxabs[i], fabs(e->th[i]));
        }
        free(prev);
    }
}

/* K_STEP of the header for rule/hp after T steps. */
static double k_step(const run *r)
{
    double c = ref_hparam_coeff_error(r->rule, &r->hp);
    if (r->rule == CLOPT_ADAFACTOR) {
        c = 0.5 * EPS32 * pow((double)r->steps, -r->hp.decay_rate);
        if (r->hp.use_beta1)
            c = fmax(c, fabs((double)(float)r->hp.beta1 - r->hp.beta1) / (1.0 - r->hp.beta1));
    }
    return 64.0 * EPS32 + 4.0 * c;
}

/* Reads θ back and checks every element against the bound of the header; returns the
   largest error as a fraction of its bound. alt (may be NULL): another reference θ (a
   deliberately wrong one) per tensor; *alt_worst receives the smallest fraction of the
   bound by which the device misses alt at the element where alt is furthest off. */
static double check_run(run *r, clopt_ctx *ctx, const char *what, double *const *alt,
                        double *alt_worst)
{
    const double kst = k_step(r), sq = sqrt((double)r->steps);
    const int sign_steps = r->rule == CLOPT_LION || r->rule == CLOPT_SOPHIA;
    double worst = 0.0, altw = 0.0;
    size_t ties = 0, total = 0;
    for (size_t k = 0; k < r->ntens; k++) {
        tensor *e = &r->t[k];
        float *p = xcalloc(e->n, sizeof(float));
        read_at(ctx, (clopt_tensor){e->p, 0}, p, e->n);
        for (size_t i = 0; i < e->n; i++) {
            const double tol = (sign_steps ? EPS32 * (double)r->steps
                                           : K_THETA * EPS32 * sq) * e->maxabs[i] +
                               kst * e->path[i] +
                               2.0 * r->hp.lr * e->ties[i] + 0x1p-126;
            const double err = fabs((double)p[i] - e->th[i]);
            const double q = isfinite(p[i]) ? err / tol : INFINITY;
            if (!(q <= 1.0))
                fprintf(stderr, "%s: tensor %zu [%zu] got %.9g want %.9g (|d| %.3g, bound %.3g, "
                        "path %.3g, max|θ| %.3g, ties %u)\n", what, k, i, (double)p[i],
                        e->th[i], err, tol, e->path[i], e->maxabs[i], e->ties[i]);
            worst = fmax(worst, q);
            if (alt)
                altw = fmax(altw, fabs((double)p[i] - alt[k][i]) / tol);
            ties += e->ties[i] > 0;
            total++;
        }
        free(p);
    }
    if (getenv("DRIFT_VERBOSE"))
        printf("  %-46s worst %.3f of bound, K_STEP %.2e, near-ties %zu/%zu; a wrong "
               "reference at %.3g of it\n", what, worst, kst, ties, total, alt ? altw : NAN);
    assert_true(ties * 50 < total);
    if (alt_worst)
        *alt_worst = altw;
    if (!(worst <= 1.0))
        fail_msg("%s: θ outside the bound (%.3g of it)", what, worst);
    return worst;
}

/* ---- gradients ------------------------------------------------------------------------- */

/* Per-element gradient model: g_i = s_i·(μ_i + U), s_i = 2^u with u uniform in [-4, 4] (a
   dynamic range of 2^8), μ_i ~ N(0, 0.5²) a persistent mean (so that the momenta do not
   average out), U = 2·(u1 + u2 - 1) triangular on [-2, 2] (cheap and bounded). */
typedef struct gradgen {
    uint64_t seed;
    double *s, *mu;
    size_t n;
} gradgen;

static void gradgen_open(gradgen *G, size_t n, uint64_t seed)
{
    G->seed = seed;
    G->n = n;
    G->s = xcalloc(n, sizeof(double));
    G->mu = xcalloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) {
        G->s[i] = exp2(8.0 * ref_uniform(&G->seed) - 4.0);
        G->mu[i] = 0.5 * ref_normal(&G->seed);
    }
}

static void gradgen_next(gradgen *G, float *g, double scale)
{
    for (size_t i = 0; i < G->n; i++) {
        const double u = 2.0 * (ref_uniform(&G->seed) + ref_uniform(&G->seed) - 1.0);
        g[i] = (float)(scale * G->s[i] * (G->mu[i] + u));
    }
}

static void gradgen_close(gradgen *G)
{
    free(G->s);
    free(G->mu);
}

/* Sophia's estimates: positive, spread over two decades. */
static void hess_next(uint64_t *seed, float *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h[i] = (float)exp2(7.0 * ref_uniform(seed) - 3.0);
}

/* ---- Adafactor's paths ----------------------------------------------------------------- */

static void test_adafactor_paths(void **state)
{
    fixture *f = *state;
    static const struct {
        size_t ndim, shape[3];
    } shapes[] = {{1, {300, 0, 0}}, {2, {7, 13, 0}}, {3, {3, 5, 11}}, {2, {1, 40, 0}}};
    /* relative step (warm-up off/on) or a fixed lr; scale_parameter; use_beta1; wd */
    static const struct {
        int relative_step, warmup_init, scale_parameter, use_beta1;
        double lr, weight_decay;
    } modes[] = {
        {1, 0, 1, 1, 0.0, 0.0},   {1, 1, 1, 1, 0.0, 0.0},   {1, 1, 0, 0, 0.0, 0.0},
        {1, 0, 0, 1, 0.0, 1e-2},  {0, 0, 0, 0, 1e-2, 0.0},  {0, 0, 1, 0, 5e-2, 0.0},
        {0, 0, 0, 1, 1e-2, 1e-2}, {0, 0, 1, 1, 3e-2, 0.0},
    };
    const unsigned T = 25;
    uint64_t seed = 0xADAFAC7;
    char what[96];
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            run r;
            memset(&r, 0, sizeof r);
            r.rule = CLOPT_ADAFACTOR;
            clopt_hparams_default(CLOPT_ADAFACTOR, &r.hp);
            r.hp.relative_step = modes[m].relative_step;
            r.hp.warmup_init = modes[m].warmup_init;
            r.hp.scale_parameter = modes[m].scale_parameter;
            r.hp.use_beta1 = modes[m].use_beta1;
            r.hp.lr = modes[m].lr;
            r.hp.weight_decay = modes[m].weight_decay;
            if (r.hp.use_beta1)
                r.hp.beta1 = 0.9;
            r.ntens = 1;
            r.t[0].ndim = shapes[s].ndim;
            memcpy(r.t[0].shape, shapes[s].shape, sizeof r.t[0].shape);
            run_open(&r, f->ctx, &seed, 0.5);
            tensor *e = &r.t[0];
            assert_int_equal(clopt_optimizer_state_count(r.opt, 0),
                             (e->R ? 2u : 1u) + (r.hp.use_beta1 ? 1u : 0u));
            gradgen G;
            gradgen_open(&G, e->n, seed++);
            /* A wrong reference alongside: the first moment's β1 off by 0.01 with use_beta1,
               else the lr (ρ_t) off by 1%. */
            run w = r;
            w.hp.beta1 = r.hp.use_beta1 ? 0.89 : r.hp.beta1;
            if (!r.hp.use_beta1)
                w.hp.lr *= 1.01, w.hp.relative_step = 0;
            double *wth = xcalloc(e->n, sizeof(double)), *wst[CLOPT_MAX_STATE];
            memcpy(wth, e->th, e->n * sizeof(double));
            for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
                wst[k] = xcalloc(e->n, sizeof(double));
            for (unsigned t = 1; t <= T; t++) {
                gradgen_next(&G, e->gf, 1.0);
                run_step(&r, f->ctx);
                /* the wrong reference, with ρ_t written out as a fixed lr when needed */
                clopt_hparams wh = w.hp;
                if (!r.hp.use_beta1 && r.hp.relative_step)
                    wh.lr = 1.01 * fmin(r.hp.warmup_init ? 1e-6 * t : 1e-2, 1.0 / sqrt(t));
                ref_adafactor_step(&wh, t, e->B, e->R, e->C, e->n, wth, e->gd, wst, 1.0);
            }
            snprintf(what, sizeof what, "adafactor %zu-D n=%zu rel%d warm%d scale%d b1 %d wd%g",
                     e->ndim, e->n, r.hp.relative_step, r.hp.warmup_init, r.hp.scale_parameter,
                     r.hp.use_beta1, r.hp.weight_decay);
            double wrong;
            check_run(&r, f->ctx, what, (double *const[]){wth}, &wrong);
            if (!(wrong > 1.0))
                fail_msg("%s: a wrong reference is inside the bound (%.3g)", what, wrong);
            /* the state against the reference: the factored statistics (or V) */
            for (size_t k = 0; k < clopt_optimizer_state_count(r.opt, 0); k++) {
                size_t len;
                assert_int_equal(clopt_optimizer_state_info(r.opt, 0, k, NULL, &len),
                                 CLOPT_SUCCESS);
                float *sv = xcalloc(len, sizeof(float));
                assert_int_equal(clopt_optimizer_read_state(r.opt, 0, k, sv, len), CLOPT_SUCCESS);
                double scale = 0.0;
                for (size_t i = 0; i < len; i++)
                    scale = fmax(scale, fabs(e->st[k][i]));
                for (size_t i = 0; i < len; i++)
                    if (!(fabs(sv[i] - e->st[k][i]) <= 1e-5 * fabs(e->st[k][i]) + 1e-6 * scale))
                        fail_msg("%s: state %zu [%zu] %.9g want %.9g", what, k, i, (double)sv[i],
                                 e->st[k][i]);
                free(sv);
            }
            free(wth);
            for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
                free(wst[k]);
            gradgen_close(&G);
            run_close(&r);
        }
}

/* ---- every rule, 1000 steps at n = 4099 ------------------------------------------------ */

/* The hyperparameters of the long run: the defaults, with the variants that have state of
   their own switched on (SGD and RMSprop momentum, centered RMSprop, Adam's L2 decay,
   Adagrad's lr decay). */
static void long_run_hparams(clopt_rule rule, clopt_hparams *hp)
{
    clopt_hparams_default(rule, hp);
    switch (rule) {
    case CLOPT_SGD: hp->momentum = 0.9; break;
    case CLOPT_ADAM: hp->weight_decay = 1e-2; break;
    case CLOPT_ADAGRAD: hp->lr_decay = 1e-3; break;
    case CLOPT_RMSPROP:
        hp->momentum = 0.5;
        hp->centered = 1;
        hp->lr = 1e-3;
        break;
    default: break;
    }
}

static void test_long_run(void **state)
{
    fixture *f = *state;
    enum { N = 4099, T = 1000 };
    uint64_t seed = 0xD21F7;
    char what[64];
    /* the lecture's rules (ref_step, ref_lamb_step, ...); the rules of 2024-2025 have their
       own references and 1000-step runs in test_modern (test_op_long_runs) */
    for (int rr = 0; rr <= CLOPT_RANGER; rr++) {
        run r;
        memset(&r, 0, sizeof r);
        r.rule = (clopt_rule)rr;
        long_run_hparams(r.rule, &r.hp);
        r.ntens = 1;
        r.t[0].ndim = 1;
        r.t[0].shape[0] = N;
        run_open(&r, f->ctx, &seed, 1.0);
        gradgen G;
        gradgen_open(&G, N, seed++);
        uint64_t hseed = seed++;
        for (unsigned t = 1; t <= T; t++) {
            gradgen_next(&G, r.t[0].gf, 1.0);
            if (r.rule == CLOPT_SOPHIA && t % r.hp.hess_interval == 0)
                hess_next(&hseed, r.t[0].hf, N);
            run_step(&r, f->ctx);
        }
        snprintf(what, sizeof what, "%s 1000 steps n=4099", clopt_rule_name(r.rule));
        check_run(&r, f->ctx, what, NULL, NULL);
        gradgen_close(&G);
        run_close(&r);
    }
}

/* ---- clipping ---------------------------------------------------------------------------- */

static void test_clipping_rules(void **state)
{
    fixture *f = *state;
    static const clopt_rule rules[] = {CLOPT_ADAM,   CLOPT_ADAMW,  CLOPT_NADAM,  CLOPT_RADAM,
                                       CLOPT_ADAMAX, CLOPT_ADAMOD, CLOPT_LAMB,   CLOPT_ADAFACTOR,
                                       CLOPT_SOPHIA};
    const unsigned T = 30;
    const double max_norm = 1.0;
    uint64_t seed = 0xC11B;
    char what[64];
    for (size_t k = 0; k < sizeof rules / sizeof rules[0]; k++) {
        run r, w;
        memset(&r, 0, sizeof r);
        r.rule = rules[k];
        clopt_hparams_default(r.rule, &r.hp);
        if (r.rule == CLOPT_SOPHIA)
            r.hp.bs = 1.0; /* γ = 0.04: the clipped m/(γh) stays below 1 */
        r.max_norm = max_norm;
        r.ntens = 2;
        r.t[0].ndim = 1;
        r.t[0].shape[0] = 1000;
        r.t[1].ndim = 2;
        r.t[1].shape[0] = 37;
        r.t[1].shape[1] = 29;
        run_open(&r, f->ctx, &seed, 1.0);
        /* the same run without clipping, in the reference only: it must be outside the bound */
        w = r;
        double *wth[2], *wst[2][CLOPT_MAX_STATE];
        for (size_t j = 0; j < 2; j++) {
            wth[j] = xcalloc(r.t[j].n, sizeof(double));
            memcpy(wth[j], r.t[j].th, r.t[j].n * sizeof(double));
            for (size_t s = 0; s < CLOPT_MAX_STATE; s++) {
                wst[j][s] = xcalloc(r.t[j].n, sizeof(double));
                memcpy(wst[j][s], r.t[j].st[s], r.t[j].n * sizeof(double));
            }
            w.t[j].th = wth[j];
            memcpy(w.t[j].st, wst[j], sizeof wst[j]);
            w.t[j].mu_product = 1.0;
        }
        gradgen G[2];
        gradgen_open(&G[0], r.t[0].n, seed++);
        gradgen_open(&G[1], r.t[1].n, seed++);
        uint64_t hseed = seed++;
        size_t clipped = 0;
        for (unsigned t = 1; t <= T; t++) {
            /* total norms from 0.25 to 32 times max_norm: most steps clip, some do not */
            const double target = max_norm * exp2(7.0 * ref_uniform(&seed) - 2.0);
            double raw = 0.0;
            for (size_t j = 0; j < 2; j++) {
                gradgen_next(&G[j], r.t[j].gf, 1.0);
                for (size_t i = 0; i < r.t[j].n; i++)
                    raw += (double)r.t[j].gf[i] * r.t[j].gf[i];
            }
            for (size_t j = 0; j < 2; j++)
                for (size_t i = 0; i < r.t[j].n; i++)
                    r.t[j].gf[i] = (float)(r.t[j].gf[i] * (target / sqrt(raw)));
            if (r.rule == CLOPT_SOPHIA && t % r.hp.hess_interval == 0) {
                hess_next(&hseed, r.t[0].hf, r.t[0].n);
                hess_next(&hseed, r.t[1].hf, r.t[1].n);
            }
            run_step(&r, f->ctx);
            clipped += r.last_norm > max_norm;
            /* the device's norm (before clipping) */
            const double norm = clopt_optimizer_last_grad_norm(r.opt);
            if (!(fabs(norm - r.last_norm) <= 1e-5 * r.last_norm))
                fail_msg("%s: grad norm %.9g want %.9g", clopt_rule_name(r.rule), norm,
                         r.last_norm);
            for (size_t j = 0; j < 2; j++) {
                w.t[j].gd = r.t[j].gd;
                w.t[j].hd = r.t[j].hd;
                ref_tensor_step(&w, &w.hp, &w.t[j], t, 1.0,
                                r.rule == CLOPT_SOPHIA && t % r.hp.hess_interval == 0);
            }
        }
        assert_true(clipped >= T / 2 && clipped < T);
        snprintf(what, sizeof what, "%s clipped at %g", clopt_rule_name(r.rule), max_norm);
        double wrong;
        check_run(&r, f->ctx, what, wth, &wrong);
        if (!(wrong > 1.0))
            fail_msg("%s: the unclipped reference is inside the bound (%.3g)", what, wrong);
        for (size_t j = 0; j < 2; j++) {
            free(wth[j]);
            for (size_t s = 0; s < CLOPT_MAX_STATE; s++)
                free(wst[j][s]);
            gradgen_close(&G[j]);
        }
        run_close(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adafactor_paths),
        cmocka_unit_test(test_clipping_rules),
        cmocka_unit_test(test_long_run),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
