/* SPDX-License-Identifier: MIT */
/* The rules built on reductions (Adafactor, LAMB, gradient centralization, global-norm
 * clipping) against scalar double references written from the golden files' equations, on
 * shapes 1×1, 1×N, N×1, 7×13, 1000×1000, 4096×512, 5×8300; determinism (bit-identical reruns, and
 * norms independent of the element-wise tuning); bad shapes; Adafactor's state memory. The
 * reduction tests run twice: with the device's reduction shape and with a GPU's (64 items per
 * work-group adding by a tree in local memory, 3 work-groups per compute unit). */
#define _POSIX_C_SOURCE 200809L /* popen */
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

static uint64_t rng_state;
static double urand(void) /* splitmix64 -> [0, 1) */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
static float nrand(void) { return (float)((urand() + urand() + urand() - 1.5) * 2.0); }

/* |x - ref| <= rtol |ref| + atol·rms(ref): the golden files' convention. */
static void assert_close(const float *x, const double *ref, size_t n, double rtol, double atol_rel,
                         const char *what)
{
    double rms = 0;
    for (size_t i = 0; i < n; i++)
        rms += ref[i] * ref[i];
    rms = sqrt(rms / (double)n);
    for (size_t i = 0; i < n; i++) {
        double tol = rtol * fabs(ref[i]) + atol_rel * rms;
        if (!(fabs((double)x[i] - ref[i]) <= tol)) {
            fprintf(stderr, "%s: [%zu] got %.9g want %.9g (tol %.3g)\n", what, i, (double)x[i],
                    ref[i], tol);
            fail();
        }
    }
}

/* ---- double references (equations of tests/data/golden/<case>/meta.json) ------------------ */

static double rms_of(const double *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i] * x[i];
    return sqrt(s / (double)n);
}

/* One Adafactor step (HF semantics, beta1 off, relative step) on an R×C matrix (R, C >= 1). */
static void ref_adafactor(const clopt_hparams *hp, uint64_t t, size_t R, size_t C, double *p,
                          const double *g, double *row, double *col)
{
    const size_t n = R * C;
    double rho = fmin(hp->warmup_init ? 1e-6 * (double)t : 1e-2, 1.0 / sqrt((double)t));
    double alpha = hp->scale_parameter ? fmax(hp->eps2, rms_of(p, n)) * rho : rho;
    double b2t = 1.0 - pow((double)t, hp->decay_rate);
    for (size_t r = 0; r < R; r++) {
        double s = 0;
        for (size_t c = 0; c < C; c++)
            s += g[r * C + c] * g[r * C + c] + hp->eps;
        row[r] = b2t * row[r] + (1 - b2t) * s / (double)C;
    }
    for (size_t c = 0; c < C; c++) {
        double s = 0;
        for (size_t r = 0; r < R; r++)
            s += g[r * C + c] * g[r * C + c] + hp->eps;
        col[c] = b2t * col[c] + (1 - b2t) * s / (double)R;
    }
    double rmean = 0;
    for (size_t r = 0; r < R; r++)
        rmean += row[r] / (double)R;
    double *u = malloc(n * sizeof *u);
    assert_non_null(u);
    for (size_t r = 0; r < R; r++)
        for (size_t c = 0; c < C; c++)
            u[r * C + c] = g[r * C + c] / sqrt(row[r] / rmean) / sqrt(col[c]);
    double den = fmax(1.0, rms_of(u, n) / hp->clip_threshold);
    for (size_t i = 0; i < n; i++) {
        p[i] -= hp->weight_decay * alpha * p[i];
        p[i] -= u[i] / den * alpha;
    }
    free(u);
}

static void ref_lamb(const clopt_hparams *hp, uint64_t t, size_t n, double *p, const double *g,
                     double *m, double *v)
{
    double bc1 = 1 - pow(hp->beta1, (double)t), bc2 = 1 - pow(hp->beta2, (double)t);
    double *r = malloc(n * sizeof *r), wn = 0, rn = 0;
    assert_non_null(r);
    for (size_t i = 0; i < n; i++) {
        m[i] = hp->beta1 * m[i] + (1 - hp->beta1) * g[i];
        v[i] = hp->beta2 * v[i] + (1 - hp->beta2) * g[i] * g[i];
        r[i] = (m[i] / bc1) / (sqrt(v[i] / bc2) + hp->eps) + hp->weight_decay * p[i];
        wn += p[i] * p[i];
        rn += r[i] * r[i];
    }
    wn = sqrt(wn);
    rn = sqrt(rn);
    double trust = wn > 0 && rn > 0 ? wn / rn : 1.0;
    for (size_t i = 0; i < n; i++)
        p[i] -= hp->lr * trust * r[i];
    free(r);
}

/* Adam with L2 decay and gradient centralization over rows of an R×C tensor. gmin keeps,
   per element, the smallest |centralized g| seen (where Adam's step is ill-conditioned). */
static void ref_adam_gc(const clopt_hparams *hp, uint64_t t, size_t R, size_t C, double *p,
                        const double *g0, double *m, double *v, double *gmin)
{
    double bc1 = 1 - pow(hp->beta1, (double)t), bc2 = 1 - pow(hp->beta2, (double)t);
    double *g = malloc(R * C * sizeof *g);
    assert_non_null(g);
    for (size_t r = 0; r < R; r++) {
        double mean = 0;
        for (size_t c = 0; c < C; c++) {
            g[r * C + c] = g0[r * C + c] + hp->weight_decay * p[r * C + c];
            mean += g[r * C + c] / (double)C;
        }
        for (size_t c = 0; c < C; c++)
            g[r * C + c] -= mean;
    }
    for (size_t i = 0; i < R * C; i++) {
        gmin[i] = fmin(gmin[i], fabs(g[i]));
        m[i] = hp->beta1 * m[i] + (1 - hp->beta1) * g[i];
        v[i] = hp->beta2 * v[i] + (1 - hp->beta2) * g[i] * g[i];
        p[i] -= hp->lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + hp->eps);
    }
    free(g);
}

/* ---- one tensor through the optimizer level ------------------------------------------- */

typedef struct run {
    clopt_optimizer *opt;
    cl_mem p, g;
    size_t n;
} run;

static void run_open(run *r, clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                     size_t R, size_t C, int two_dims, const float *p0)
{
    r->n = R * C;
    r->p = upload(ctx, p0, r->n);
    r->g = upload(ctx, NULL, r->n);
    assert_int_equal(clopt_optimizer_create(ctx, rule, hp, &r->opt), CLOPT_SUCCESS);
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.param = (clopt_tensor){r->p, 0};
    d.grad = (clopt_tensor){r->g, 0};
    d.ndim = two_dims ? 2 : 1;
    d.shape[0] = two_dims ? R : r->n;
    d.shape[1] = C;
    assert_int_equal(clopt_optimizer_add_param_desc(r->opt, 0, &d, NULL), CLOPT_SUCCESS);
}

static void run_step(run *r, clopt_ctx *ctx, const float *g)
{
    assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), r->g, CL_TRUE, 0,
                                          r->n * sizeof(float), g, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_int_equal(clopt_optimizer_step(r->opt, NULL), CLOPT_SUCCESS);
}

static void run_close(run *r)
{
    clopt_optimizer_destroy(r->opt);
    clReleaseMemObject(r->p);
    clReleaseMemObject(r->g);
}

/* Shapes 5-6 are big; with CLOPT_TEST_SMALL (ci/oclgrind.sh) they become 9×1100 (two of
   Adafactor's 1024-column tiles of a GPU's shape, the second cut short, and a partial chunk)
   and 33×70. 5×8300 crosses two of the CPU shape's 8192-column tiles (2×1030 the GPU's). */
static const size_t shapes_full[][2] = {{1, 1}, {1, 300}, {300, 1}, {7, 13}, {1000, 1000},
                                        {4096, 512}, {5, 8300}};
static const size_t shapes_small[][2] = {{1, 1}, {1, 300}, {300, 1}, {7, 13}, {9, 1100},
                                         {33, 70}, {2, 1030}};
#define NSHAPES (sizeof shapes_full / sizeof shapes_full[0])
#define shapes (test_small() ? shapes_small : shapes_full)

static void fill(float *x, double *xd, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = nrand() * (float)scale;
        if (xd)
            xd[i] = x[i];
    }
}

static void test_adafactor_vs_reference(void **state)
{
    fixture *f = *state;
    rng_state = 11;
    for (size_t s = 0; s < NSHAPES; s++) {
        const size_t R = shapes[s][0], C = shapes[s][1], n = R * C;
        const int steps = n > 100000 || test_small() ? 2 : 5;
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAFACTOR, &hp);
        hp.weight_decay = 0.01;
        float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
        double *pd = malloc(n * sizeof *pd), *gd = malloc(n * sizeof *gd);
        double *row = calloc(R, sizeof *row), *col = calloc(C, sizeof *col);
        assert_true(p && g && pd && gd && row && col);
        fill(p, pd, n, 0.05);
        run r;
        run_open(&r, f->ctx, CLOPT_ADAFACTOR, &hp, R, C, 1, p);
        for (int t = 1; t <= steps; t++) {
            fill(g, gd, n, 1.0);
            run_step(&r, f->ctx, g);
            ref_adafactor(&hp, (uint64_t)t, R, C, pd, gd, row, col);
        }
        read_at(f->ctx, (clopt_tensor){r.p, 0}, p, n);
        assert_close(p, pd, n, 2e-5, 2e-5, "adafactor param");
        float *sr = malloc(R * sizeof *sr), *sc = malloc(C * sizeof *sc);
        assert_int_equal(clopt_optimizer_read_state(r.opt, 0, 0, sr, R), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_read_state(r.opt, 0, 1, sc, C), CLOPT_SUCCESS);
        assert_close(sr, row, R, 2e-5, 1e-6, "adafactor row");
        assert_close(sc, col, C, 2e-5, 1e-6, "adafactor col");
        run_close(&r);
        free(p), free(g), free(pd), free(gd), free(row), free(col), free(sr), free(sc);
    }
}

static void test_lamb_vs_reference(void **state)
{
    fixture *f = *state;
    rng_state = 12;
    for (size_t s = 0; s < NSHAPES; s++) {
        const size_t n = shapes[s][0] * shapes[s][1];
        const int steps = n > 100000 || test_small() ? 2 : 5;
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_LAMB, &hp);
        hp.lr = 5e-3;
        float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
        double *pd = malloc(n * sizeof *pd), *gd = malloc(n * sizeof *gd);
        double *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
        assert_true(p && g && pd && gd && m && v);
        fill(p, pd, n, 0.05);
        run r;
        run_open(&r, f->ctx, CLOPT_LAMB, &hp, shapes[s][0], shapes[s][1], 1, p);
        for (int t = 1; t <= steps; t++) {
            fill(g, gd, n, 1.0);
            run_step(&r, f->ctx, g);
            ref_lamb(&hp, (uint64_t)t, n, pd, gd, m, v);
        }
        read_at(f->ctx, (clopt_tensor){r.p, 0}, p, n);
        assert_close(p, pd, n, 2e-5, 2e-5, "lamb param");
        run_close(&r);
        free(p), free(g), free(pd), free(gd), free(m), free(v);
    }
}

static void test_gc_vs_reference(void **state)
{
    fixture *f = *state;
    rng_state = 13;
    for (size_t s = 0; s < NSHAPES; s++) {
        const size_t R = shapes[s][0], C = shapes[s][1], n = R * C;
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAM, &hp);
        hp.grad_centralization = 1;
        hp.weight_decay = 0.01;
        float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
        double *pd = malloc(n * sizeof *pd), *gd = malloc(n * sizeof *gd);
        double *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
        double *gmin = malloc(n * sizeof *gmin);
        assert_true(p && g && pd && gd && m && v && gmin);
        for (size_t i = 0; i < n; i++)
            gmin[i] = INFINITY;
        fill(p, pd, n, 0.05);
        run r;
        run_open(&r, f->ctx, CLOPT_ADAM, &hp, R, C, 1, p);
        for (int t = 1; t <= 3; t++) {
            fill(g, gd, n, 1.0);
            for (size_t i = 0; i < n; i++) /* a row offset GC must remove */
                g[i] += (float)(i / C % 5), gd[i] = g[i];
            run_step(&r, f->ctx, g);
            ref_adam_gc(&hp, (uint64_t)t, R, C, pd, gd, m, v, gmin);
        }
        read_at(f->ctx, (clopt_tensor){r.p, 0}, p, n);
        /* The float32 row mean carries ~|row offset|·2^-24 of rounding: where a centralized
           gradient came within 1e-3 of 0, Adam's direction m/sqrt(v) is ill-conditioned and
           only a bound of one step per step is checked; everywhere else the usual one. */
        size_t strict = 0;
        for (size_t i = 0; i < n; i++) {
            if (gmin[i] < 1e-3) {
                assert_true(fabs((double)p[i] - pd[i]) <= 3 * 2 * hp.lr);
                p[i] = (float)pd[i];
            } else {
                strict++;
            }
        }
        if (C > 1) /* one column: every centralized gradient is exactly 0 */
            assert_true(strict >= n * 99 / 100);
        assert_close(p, pd, n, 2e-5, 2e-5, "adam+gc param");
        run_close(&r);
        free(p), free(g), free(pd), free(gd), free(m), free(v), free(gmin);
    }
}

/* Clipping a non-finite gradient as torch.nn.utils.clip_grad_norm_ (error_if_nonfinite
   False) then SGD with lr 1: the total norm is Inf (an Inf, no NaN) or NaN (a NaN), and the
   coefficient max_norm / (norm + 1e-6) clamped to 1 is 0 or NaN and multiplies every
   gradient: A = [1, 1] with g = [x, 1], B = [1, 1] with g = [3, 4], max_norm 1. x = Inf:
   A = [1 - Inf·0, 1 - 0] = [NaN, 1], B = [1, 1]; x = NaN: everything NaN. With AMP the
   step is skipped instead (the norm reported alike). */
static void test_clipping_nonfinite(void **state)
{
    fixture *f = *state;
    const float xs[2] = {INFINITY, NAN};
    for (int c = 0; c < 2; c++)
        for (int amp = 0; amp < 2; amp++) {
            clopt_optimizer *opt;
            clopt_hparams hp;
            clopt_hparams_default(CLOPT_SGD, &hp);
            hp.lr = 1.0;
            assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &opt),
                             CLOPT_SUCCESS);
            float pa[2] = {1, 1}, ga[2] = {xs[c], 1}, pb[2] = {1, 1}, gb[2] = {3, 4};
            cl_mem b[4] = {upload(f->ctx, pa, 2), upload(f->ctx, ga, 2),
                           upload(f->ctx, pb, 2), upload(f->ctx, gb, 2)};
            for (int k = 0; k < 2; k++)
                assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){b[2 * k], 0},
                                                           (clopt_tensor){b[2 * k + 1], 0}, 2,
                                                           NULL, NULL),
                                 CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_set_grad_clip(opt, 1.0), CLOPT_SUCCESS);
            if (amp)
                assert_int_equal(clopt_optimizer_set_grad_scale(opt, 1.0), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(opt, NULL),
                             amp ? CLOPT_STEP_SKIPPED : CLOPT_SUCCESS);
            const double norm = clopt_optimizer_last_grad_norm(opt);
            clopt_step_report r;
            assert_int_equal(clopt_optimizer_poll(opt, &r), CLOPT_SUCCESS);
            assert_int_equal(r.nonfinite, 1);
            if (c == 0)
                assert_true(isinf(norm) && norm > 0 && isinf(r.grad_norm));
            else
                assert_true(isnan(norm) && isnan(r.grad_norm));
            float out[4];
            read_at(f->ctx, (clopt_tensor){b[0], 0}, out, 2);
            read_at(f->ctx, (clopt_tensor){b[2], 0}, out + 2, 2);
            for (int i = 0; i < 4; i++) {
                const int nan = !amp && (c == 1 || i == 0);
                if (nan)
                    assert_true(isnan(out[i]));
                else
                    assert_true(out[i] == 1.0f);
            }
            clopt_optimizer_destroy(opt);
            for (int k = 0; k < 4; k++)
                clReleaseMemObject(b[k]);
        }
}

/* Global-norm clipping: the returned norm and the applied scale, on SGD (θ -= lr·g·coef). */
static void test_clipping(void **state)
{
    fixture *f = *state;
    rng_state = 14;
    const size_t sizes[3] = {1000, 7, 4099};
    cl_mem p[3], g[3];
    float *host[3], *grad[3];
    clopt_optimizer *opt;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    hp.lr = 0.1;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    assert_true(isnan(clopt_optimizer_last_grad_norm(opt)));
    assert_int_equal(clopt_optimizer_set_grad_clip(opt, -1.0), CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_optimizer_set_grad_clip(opt, NAN), CLOPT_ERR_INVALID_HYPERPARAM);
    double sumsq = 0;
    for (int k = 0; k < 3; k++) {
        host[k] = malloc(sizes[k] * sizeof(float));
        grad[k] = malloc(sizes[k] * sizeof(float));
        fill(host[k], NULL, sizes[k], 1.0);
        fill(grad[k], NULL, sizes[k], 1.0);
        for (size_t i = 0; i < sizes[k]; i++)
            sumsq += (double)grad[k][i] * grad[k][i];
        p[k] = upload(f->ctx, host[k], sizes[k]);
        g[k] = upload(f->ctx, grad[k], sizes[k]);
        assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){p[k], 0},
                                                   (clopt_tensor){g[k], 0}, sizes[k], NULL,
                                                   NULL),
                         CLOPT_SUCCESS);
    }
    const double norm = sqrt(sumsq), max_norm = norm / 4;
    assert_int_equal(clopt_optimizer_set_grad_clip(opt, max_norm), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    assert_true(fabs(clopt_optimizer_last_grad_norm(opt) - norm) <= 1e-5 * norm);
    const double coef = max_norm / (norm + 1e-6);
    for (int k = 0; k < 3; k++) {
        float *out = malloc(sizes[k] * sizeof *out);
        double *want = malloc(sizes[k] * sizeof *want);
        read_at(f->ctx, (clopt_tensor){p[k], 0}, out, sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            want[i] = host[k][i] - hp.lr * coef * grad[k][i];
        assert_close(out, want, sizes[k], 1e-5, 1e-6, "clipped sgd");
        free(out), free(want);
    }
    /* below the threshold nothing is scaled */
    assert_int_equal(clopt_optimizer_set_grad_clip(opt, norm * 10), CLOPT_SUCCESS);
    for (int k = 0; k < 3; k++)
        read_at(f->ctx, (clopt_tensor){p[k], 0}, host[k], sizes[k]);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    for (int k = 0; k < 3; k++) {
        float *out = malloc(sizes[k] * sizeof *out);
        double *want = malloc(sizes[k] * sizeof *want);
        read_at(f->ctx, (clopt_tensor){p[k], 0}, out, sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            want[i] = host[k][i] - hp.lr * grad[k][i];
        assert_close(out, want, sizes[k], 1e-5, 1e-6, "unclipped sgd");
        free(out), free(want);
    }
    clopt_optimizer_destroy(opt);
    for (int k = 0; k < 3; k++) {
        clReleaseMemObject(p[k]);
        clReleaseMemObject(g[k]);
        free(host[k]);
        free(grad[k]);
    }
}

/* The same step twice gives the same bits; the gradient norm does not depend on the
   work-group size or vector width the context uses. */
static void test_determinism(void **state)
{
    fixture *f = *state;
    const size_t R = test_small() ? 16 : 1000, C = test_small() ? 200 : 1000, n = R * C;
    rng_state = 15;
    float *p0 = malloc(n * sizeof *p0), *g = malloc(n * sizeof *g);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    assert_true(p0 && g && a && b);
    fill(p0, NULL, n, 0.05);
    fill(g, NULL, n, 1.0);
    const clopt_rule rules[3] = {CLOPT_ADAFACTOR, CLOPT_LAMB, CLOPT_ADAM};
    for (int k = 0; k < 3; k++) {
        clopt_hparams hp;
        clopt_hparams_default(rules[k], &hp);
        hp.grad_centralization = rules[k] == CLOPT_ADAM;
        float *out[2] = {a, b};
        for (int rep = 0; rep < 2; rep++) {
            run r;
            run_open(&r, f->ctx, rules[k], &hp, R, C, 1, p0);
            run_step(&r, f->ctx, g);
            run_step(&r, f->ctx, g);
            read_at(f->ctx, (clopt_tensor){r.p, 0}, out[rep], n);
            run_close(&r);
        }
        assert_memory_equal(a, b, n * sizeof *a);
    }
    clopt_tuning t0, t;
    clopt_ctx_get_tuning(f->ctx, &t0);
    double norms[3];
    const clopt_tuning tunings[3] = {
        t0, {.vector_width = 1, .work_group_size = 1, .items_per_work_item = 1},
        {.vector_width = 4, .work_group_size = 0, .items_per_work_item = 8}};
    for (int k = 0; k < 3; k++) {
        t = tunings[k];
        t.reduce_local = t0.reduce_local; /* the reduction shape stays */
        t.reduce_groups_per_cu = t0.reduce_groups_per_cu;
        assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_SUCCESS);
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_SGD, &hp);
        run r;
        run_open(&r, f->ctx, CLOPT_SGD, &hp, R, C, 1, p0);
        assert_int_equal(clopt_optimizer_set_grad_clip(r.opt, 1.0), CLOPT_SUCCESS);
        run_step(&r, f->ctx, g);
        norms[k] = clopt_optimizer_last_grad_norm(r.opt);
        run_close(&r);
    }
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t0), CLOPT_SUCCESS);
    /* a reduction shape out of range is refused and changes nothing */
    const unsigned bad_local[3] = {3, 512, 96};
    for (int k = 0; k < 3; k++) {
        t = t0;
        t.reduce_local = bad_local[k];
        assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "reduce_local"));
    }
    t = t0;
    t.reduce_groups_per_cu = 1025;
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "reduce_groups_per_cu"));
    assert_int_equal(clopt_ctx_get_tuning(f->ctx, &t), CLOPT_SUCCESS);
    assert_int_equal(t.reduce_local, t0.reduce_local);
    assert_int_equal(t.reduce_groups_per_cu, t0.reduce_groups_per_cu);
    assert_memory_equal(&norms[0], &norms[1], sizeof(double));
    assert_memory_equal(&norms[0], &norms[2], sizeof(double));
    /* gradient centralization's row means do not depend on the work-group count (bands of
       rows per group, 1, 3 and 64 groups per compute unit: uneven bands, groups past the
       rows): Adam with GC, bit for bit, on the R x C matrix and on 7 rows of 450 (fewer
       rows than groups, rows not a multiple of the 4 sub-bands, a partial chunk per row) */
    const unsigned per_cu[3] = {1, 3, 64};
    const size_t gc_shapes[2][2] = {{R, C}, {7, 450}};
    for (int sh = 0; sh < 2; sh++) {
        const size_t rr = gc_shapes[sh][0], cc = gc_shapes[sh][1];
        for (int k = 0; k < 3; k++) {
            t = t0;
            t.reduce_groups_per_cu = per_cu[k];
            assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_SUCCESS);
            clopt_hparams hp;
            clopt_hparams_default(CLOPT_ADAM, &hp);
            hp.grad_centralization = 1;
            run r;
            run_open(&r, f->ctx, CLOPT_ADAM, &hp, rr, cc, 1, p0);
            run_step(&r, f->ctx, g);
            run_step(&r, f->ctx, g);
            read_at(f->ctx, (clopt_tensor){r.p, 0}, k ? b : a, rr * cc);
            run_close(&r);
            if (k)
                assert_memory_equal(a, b, rr * cc * sizeof *a);
        }
    }
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t0), CLOPT_SUCCESS);
    free(p0), free(g), free(a), free(b);
}

static void test_bad_shapes(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAFACTOR, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAFACTOR, &hp, &opt), CLOPT_SUCCESS);
    float init[64];
    for (int i = 0; i < 64; i++)
        init[i] = (float)i;
    cl_mem p = upload(f->ctx, init, 64), g = upload(f->ctx, init, 64);
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 2;
    d.shape[0] = 0; /* 0 rows */
    d.shape[1] = 8;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_INVALID_SIZE);
    d.shape[0] = 9; /* 72 elements do not fit the 64-float buffers */
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_OUT_OF_BOUNDS);
    d.ndim = CLOPT_MAX_DIMS + 1;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_INVALID_SIZE);
    d.ndim = 2;
    d.shape[0] = 8;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 3, &d, NULL), CLOPT_ERR_INDEX);
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, NULL, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_param_count(opt), 0);
    assert_int_equal(clopt_optimizer_state_bytes(opt), 0);
    /* nothing was touched */
    float back[64];
    read_at(f->ctx, (clopt_tensor){p, 0}, back, 64);
    assert_memory_equal(back, init, sizeof init);
    /* the op level refuses the multi-pass rules with a clear status */
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = d.param;
    a.grad = d.grad;
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAFACTOR, &hp, &a, 64, 1, 0, NULL,
                                        NULL),
                     CLOPT_ERR_UNSUPPORTED);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    /* GC rows that do not divide n */
    clopt_hparams ha;
    clopt_hparams_default(CLOPT_ADAM, &ha);
    ha.grad_centralization = 1;
    cl_mem m = upload(f->ctx, NULL, 64), v = upload(f->ctx, NULL, 64), sc = upload(f->ctx, NULL, 8);
    a.state[0] = (clopt_tensor){m, 0};
    a.state[1] = (clopt_tensor){v, 0};
    a.gc_rows = 7;
    a.gc_scratch = (clopt_tensor){sc, 0};
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &ha, &a, 64, 1, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_SIZE);
    a.gc_rows = 16; /* scratch of 8 floats is too small for 16 row means */
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &ha, &a, 64, 1, 0, NULL, NULL),
                     CLOPT_ERR_OUT_OF_BOUNDS);
    read_at(f->ctx, (clopt_tensor){p, 0}, back, 64);
    assert_memory_equal(back, init, sizeof init);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p), clReleaseMemObject(g), clReleaseMemObject(m), clReleaseMemObject(v),
        clReleaseMemObject(sc);
}

/* A 4096×4096 weight: Adafactor keeps (4096 + 4096)·4 bytes without beta1, plus the full
   first moment with it; Adam keeps 2·4096²·4. */
static void test_state_bytes(void **state)
{
    fixture *f = *state;
    const size_t R = 4096, C = 4096;
    cl_mem p = upload(f->ctx, NULL, R * C), g = upload(f->ctx, NULL, R * C);
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 2;
    d.shape[0] = R;
    d.shape[1] = C;
    const struct {
        clopt_rule rule;
        int beta1;
        size_t bytes;
    } cases[] = {{CLOPT_ADAFACTOR, 0, (4096 + 4096) * 4},
                 {CLOPT_ADAFACTOR, 1, (4096 + 4096) * 4 + 4096 * 4096 * 4},
                 {CLOPT_ADAM, 0, 2 * 4096 * 4096 * 4}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        clopt_hparams hp;
        clopt_hparams_default(cases[k].rule, &hp);
        hp.use_beta1 = cases[k].beta1;
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, cases[k].rule, &hp, &opt), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_state_bytes(opt), cases[k].bytes);
        clopt_optimizer_destroy(opt);
    }
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

/* --hash: θ after two steps of Adafactor, LAMB, and Adam with clipping on one 1000 x 1000
   tensor (partial sums in blocks of the reduction shape's work-group count), as FNV-1a. */
static int print_hash(void)
{
    void *st = NULL;
    if (setup(&st) != 0)
        return 1;
    fixture *f = st;
    const size_t R = 1000, C = 1000, n = R * C;
    rng_state = 21;
    float *p0 = malloc(n * sizeof *p0), *g = malloc(n * sizeof *g), *x = malloc(n * sizeof *x);
    if (!p0 || !g || !x)
        return 1;
    fill(p0, NULL, n, 0.05);
    fill(g, NULL, n, 1.0);
    uint64_t h = 1469598103934665603u;
    const clopt_rule rules[3] = {CLOPT_ADAFACTOR, CLOPT_LAMB, CLOPT_ADAM};
    for (int k = 0; k < 3; k++) {
        clopt_hparams hp;
        clopt_hparams_default(rules[k], &hp);
        run r;
        run_open(&r, f->ctx, rules[k], &hp, R, C, 1, p0);
        if (rules[k] == CLOPT_ADAM && clopt_optimizer_set_grad_clip(r.opt, 1.0) != CLOPT_SUCCESS)
            return 1;
        run_step(&r, f->ctx, g);
        run_step(&r, f->ctx, g);
        read_at(f->ctx, (clopt_tensor){r.p, 0}, x, n);
        run_close(&r);
        const unsigned char *b = (const unsigned char *)x;
        for (size_t i = 0; i < n * sizeof *x; i++)
            h = (h ^ b[i]) * 1099511628211u;
    }
    printf("%016llx\n", (unsigned long long)h);
    free(p0), free(g), free(x);
    return teardown(&st);
}

static const char *self_path;

/* PoCL's worker threads (POCL_MAX_PTHREAD_COUNT, its compute units) do not change the
   reductions' bits: the work-group count of the partial sums followed the reported compute
   units, so 1, 2 and 3 threads gave three different θ for every rule that sums across a
   tensor (up to 328 ulp after one Muon step). Runs this program with --hash under each. */
static void test_thread_count(void **state)
{
    (void)state;
    char first[64] = "", out[64], cmd[4200];
    for (int threads = 1; threads <= 3; threads++) {
        snprintf(cmd, sizeof cmd, "POCL_MAX_PTHREAD_COUNT=%d '%s' --hash", threads, self_path);
        FILE *pipe = popen(cmd, "r");
        assert_non_null(pipe);
        memset(out, 0, sizeof out);
        const int got = fgets(out, sizeof out, pipe) != NULL;
        assert_int_equal(pclose(pipe), 0);
        assert_true(got && strlen(out) == 17);
        if (threads == 1)
            memcpy(first, out, sizeof out);
        else
            assert_string_equal(out, first);
    }
}

/* The fixture with reductions of 64 items per work-group and 3 work-groups per compute unit. */
static int setup_gpu_shaped(void **state)
{
    int r = setup(state);
    if (r != 0)
        return r;
    fixture *f = *state;
    clopt_tuning t;
    if (clopt_ctx_get_tuning(f->ctx, &t) != CLOPT_SUCCESS)
        return -1;
    t.reduce_local = 64;
    t.reduce_groups_per_cu = 3;
    return clopt_ctx_set_tuning(f->ctx, &t) == CLOPT_SUCCESS ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--hash"))
        return print_hash();
    self_path = argv[0];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adafactor_vs_reference),
        cmocka_unit_test(test_lamb_vs_reference),
        cmocka_unit_test(test_gc_vs_reference),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_clipping_nonfinite),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_state_bytes),
        cmocka_unit_test(test_thread_count),
    };
    /* the same tests with the reduction shape of a GPU (work-group trees in local memory over
       interleaved chunks, Adafactor's tiles of 1024 columns) on whatever device this is, and
       an odd work-group count */
    const struct CMUnitTest gpu_shaped[] = {
        cmocka_unit_test(test_adafactor_vs_reference),
        cmocka_unit_test(test_lamb_vs_reference),
        cmocka_unit_test(test_gc_vs_reference),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_clipping_nonfinite),
        cmocka_unit_test(test_determinism),
    };
    /* on a simulated device (CLOPT_TEST_SMALL) the device's own shape is left to test_golden
       and test_flat, which run the same kernels with it */
    int failed = test_small() ? 0 : cmocka_run_group_tests(tests, setup, teardown);
    failed += cmocka_run_group_tests_name("gpu_shaped_reductions", gpu_shaped, setup_gpu_shaped,
                                          teardown);
    return failed;
}
