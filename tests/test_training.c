/* SPDX-License-Identifier: MIT */
/* The optimizer level as an engine trains with it: parameter groups, arena storage,
 * learning-rate schedules, Lookahead, gradient accumulation, AMP and checkpoints. */
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
#include <unistd.h>

#include "clopt.h"
#include "fixture.h"
#include "ref.h"
#include "test_training.h"

static void assert_close(const float *x, const double *ref, size_t n, double rtol, double atol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i] - ref[i]) <= atol + rtol * fabs(ref[i]))) {
            fprintf(stderr, "%s: [%zu] got %.9g want %.9g\n", what, i, (double)x[i], ref[i]);
            fail();
        }
}

/* ---- parameter groups --------------------------------------------------------------------- */

/* Two groups with different lr, weight decay and momentum (no decay on "biases"), three
   tensors, ten steps, each against the double reference with its group's hyperparameters. */
static void test_groups(void **state)
{
    fixture *f = *state;
    const clopt_rule rules[2] = {CLOPT_SGD, CLOPT_ADAMW};
    for (int r = 0; r < 2; r++) {
        clopt_hparams h0, h1;
        clopt_hparams_default(rules[r], &h0);
        h0.momentum = rules[r] == CLOPT_SGD ? 0.9 : 0.0;
        h0.weight_decay = 0.05;
        h1 = h0;
        h1.lr = h0.lr * 0.3;
        h1.weight_decay = 0.0;
        h1.beta1 = 0.8;
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, rules[r], &h0, &opt), CLOPT_SUCCESS);
        size_t g1;
        assert_int_equal(clopt_optimizer_add_group(opt, &h1, &g1), CLOPT_SUCCESS);
        assert_int_equal(g1, 1);
        assert_int_equal(clopt_optimizer_group_count(opt), 2);
        const size_t n[3] = {1000, 33, 257};
        const size_t grp[3] = {0, 1, 0};
        cl_mem pb[3], gb[3];
        double *pd[3], *sd[3][CLOPT_MAX_STATE];
        float *host = malloc(1000 * sizeof *host);
        double *gd = malloc(1000 * sizeof *gd);
        uint64_t seed = 100 + (uint64_t)r;
        for (int k = 0; k < 3; k++) {
            pd[k] = malloc(n[k] * sizeof(double));
            for (size_t i = 0; i < n[k]; i++)
                host[i] = (float)ref_normal(&seed), pd[k][i] = host[i];
            for (int j = 0; j < CLOPT_MAX_STATE; j++)
                sd[k][j] = calloc(n[k], sizeof(double));
            pb[k] = upload(f->ctx, host, n[k]);
            gb[k] = upload(f->ctx, NULL, n[k]);
            clopt_param_desc d;
            memset(&d, 0, sizeof d);
            d.param = (clopt_tensor){pb[k], 0};
            d.grad = (clopt_tensor){gb[k], 0};
            d.ndim = 1;
            d.shape[0] = n[k];
            assert_int_equal(clopt_optimizer_add_param_desc(opt, grp[k], &d, NULL), CLOPT_SUCCESS);
        }
        for (uint64_t t = 1; t <= 10; t++) {
            for (int k = 0; k < 3; k++) {
                for (size_t i = 0; i < n[k]; i++)
                    host[i] = (float)ref_normal(&seed), gd[i] = host[i];
                write_at(f->ctx, (clopt_tensor){gb[k], 0}, host, n[k]);
                ref_step(rules[r], grp[k] ? &h1 : &h0, t, n[k], pd[k], gd, sd[k], NULL, NULL, 1.0);
            }
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        }
        for (int k = 0; k < 3; k++) {
            read_at(f->ctx, (clopt_tensor){pb[k], 0}, host, n[k]);
            assert_close(host, pd[k], n[k], 1e-5, 1e-6, "group param");
            clReleaseMemObject(pb[k]);
            clReleaseMemObject(gb[k]);
            free(pd[k]);
            for (int j = 0; j < CLOPT_MAX_STATE; j++)
                free(sd[k][j]);
        }
        clopt_hparams back;
        assert_int_equal(clopt_optimizer_get_group_hparams(opt, 1, &back), CLOPT_SUCCESS);
        assert_true(back.lr == h1.lr);
        assert_int_equal(clopt_optimizer_get_group_hparams(opt, 2, &back), CLOPT_ERR_INDEX);
        clopt_optimizer_destroy(opt);
        free(host);
        free(gd);
    }
}

/* ---- arena ------------------------------------------------------------------------------- */

/* The same tensors as one arena group (one launch) and as caller-owned buffers (one launch
   each) give identical bits, for parameters and every state, after several steps. */
static void test_arena_matches_separate(void **state)
{
    fixture *f = *state;
    const clopt_rule rules[] = {CLOPT_ADAMW, CLOPT_SGD, CLOPT_LION, CLOPT_RMSPROP, CLOPT_NADAM};
    enum { T = 37 };
    size_t n[T];
    for (size_t k = 0; k < T; k++)
        n[k] = 1 + (k * 7919) % 300;
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        clopt_hparams hp;
        clopt_hparams_default(rules[r], &hp);
        hp.momentum = rules[r] == CLOPT_SGD || rules[r] == CLOPT_RMSPROP ? 0.9 : 0.0;
        hp.lookahead_k = rules[r] == CLOPT_ADAMW ? 2 : 0; /* Lookahead over the arena too */
        clopt_optimizer *arena, *sep;
        assert_int_equal(clopt_optimizer_create(f->ctx, rules[r], &hp, &arena), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_create(f->ctx, rules[r], &hp, &sep), CLOPT_SUCCESS);
        clopt_param_desc shapes[T];
        memset(shapes, 0, sizeof shapes);
        for (size_t k = 0; k < T; k++)
            shapes[k].ndim = 1, shapes[k].shape[0] = n[k];
        size_t group, first;
        assert_int_equal(clopt_optimizer_add_arena_group(arena, &hp, T, shapes, &group, &first),
                         CLOPT_SUCCESS);
        assert_int_equal(group, 1);
        assert_int_equal(first, 0);
        cl_mem pb[T], gb[T];
        uint64_t seed = 7 + r;
        float buf[300];
        for (size_t k = 0; k < T; k++) {
            for (size_t i = 0; i < n[k]; i++)
                buf[i] = (float)ref_normal(&seed);
            pb[k] = upload(f->ctx, buf, n[k]);
            gb[k] = upload(f->ctx, NULL, n[k]);
            clopt_tensor pv, gv;
            cl_mem psub = NULL, gsub = NULL;
            assert_int_equal(clopt_optimizer_param_view(arena, k, &pv, &gv, &psub, &gsub),
                             CLOPT_SUCCESS);
            assert_non_null(psub);
            assert_non_null(gsub);
            write_at(f->ctx, pv, buf, n[k]);
            float back[300];
            /* the sub-buffer views the same memory */
            assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(f->ctx), psub, CL_TRUE, 0,
                                                 n[k] * sizeof(float), back, 0, NULL, NULL),
                             CL_SUCCESS);
            assert_memory_equal(back, buf, n[k] * sizeof(float));
            assert_int_equal(clopt_optimizer_add_param(sep, (clopt_tensor){pb[k], 0},
                                                       (clopt_tensor){gb[k], 0}, n[k], NULL, NULL),
                             CLOPT_SUCCESS);
        }
        for (int t = 0; t < 5; t++) {
            for (size_t k = 0; k < T; k++) {
                for (size_t i = 0; i < n[k]; i++)
                    buf[i] = (float)ref_normal(&seed);
                clopt_tensor gv;
                clopt_optimizer_param_view(arena, k, NULL, &gv, NULL, NULL);
                write_at(f->ctx, gv, buf, n[k]);
                write_at(f->ctx, (clopt_tensor){gb[k], 0}, buf, n[k]);
            }
            assert_int_equal(clopt_optimizer_step(arena, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(sep, NULL), CLOPT_SUCCESS);
        }
        for (size_t k = 0; k < T; k++) {
            float a[300], b[300];
            clopt_tensor pv;
            clopt_optimizer_param_view(arena, k, &pv, NULL, NULL, NULL);
            read_at(f->ctx, pv, a, n[k]);
            read_at(f->ctx, (clopt_tensor){pb[k], 0}, b, n[k]);
            assert_memory_equal(a, b, n[k] * sizeof(float));
            size_t ns = clopt_optimizer_state_count(sep, k);
            assert_int_equal(clopt_optimizer_state_count(arena, k), ns);
            for (size_t j = 0; j < ns; j++) {
                assert_int_equal(clopt_optimizer_read_state(arena, k, j, a, n[k]), CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_read_state(sep, k, j, b, n[k]), CLOPT_SUCCESS);
                assert_memory_equal(a, b, n[k] * sizeof(float));
            }
            clReleaseMemObject(pb[k]);
            clReleaseMemObject(gb[k]);
        }
        assert_int_equal(clopt_optimizer_state_bytes(arena), clopt_optimizer_state_bytes(sep));
        clopt_optimizer_destroy(arena);
        clopt_optimizer_destroy(sep);
    }
}

/* ---- gradient accumulation ---------------------------------------------------------------- */

/* Least squares on 32 examples: the gradient of the batch equals the average of 4 micro-
   batches of 8 accumulated on the device. */
static void test_accumulation(void **state)
{
    fixture *f = *state;
    enum { D = 64, B = 32, K = 4 };
    uint64_t seed = 3;
    static float x[B][D], y[B], w[D];
    for (int d = 0; d < D; d++)
        w[d] = (float)ref_normal(&seed);
    for (int b = 0; b < B; b++) {
        for (int d = 0; d < D; d++)
            x[b][d] = (float)ref_normal(&seed);
        y[b] = (float)ref_normal(&seed);
    }
    /* per-example gradient (w·x - y) x, batch means in double */
    double full[D] = {0}, micro[K][D] = {{0}};
    for (int b = 0; b < B; b++) {
        double r = -y[b];
        for (int d = 0; d < D; d++)
            r += (double)w[d] * x[b][d];
        for (int d = 0; d < D; d++) {
            full[d] += r * x[b][d] / B;
            micro[b / (B / K)][d] += r * x[b][d] / (B / K);
        }
    }
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    hp.lr = 0.1;
    float mf[D];
    cl_mem p1 = upload(f->ctx, w, D), g1 = upload(f->ctx, NULL, D);
    cl_mem p2 = upload(f->ctx, w, D), g2 = upload(f->ctx, NULL, D), mb = upload(f->ctx, NULL, D);
    clopt_optimizer *acc, *one;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &acc), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &one), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(acc, (clopt_tensor){p1, 0}, (clopt_tensor){g1, 0},
                                               D, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(one, (clopt_tensor){p2, 0}, (clopt_tensor){g2, 0},
                                               D, NULL, NULL),
                     CLOPT_SUCCESS);
    float garbage[D];
    for (int d = 0; d < D; d++)
        garbage[d] = NAN;
    write_at(f->ctx, (clopt_tensor){g1, 0}, garbage, D); /* zero_grad must clear it */
    assert_int_equal(clopt_optimizer_zero_grad(acc), CLOPT_SUCCESS);
    for (int k = 0; k < K; k++) {
        for (int d = 0; d < D; d++)
            mf[d] = (float)micro[k][d];
        write_at(f->ctx, (clopt_tensor){mb, 0}, mf, D);
        assert_int_equal(clopt_optimizer_accumulate_grad(acc, 0, (clopt_tensor){mb, 0}, 1.0 / K),
                         CLOPT_SUCCESS);
    }
    for (int d = 0; d < D; d++)
        mf[d] = (float)full[d];
    write_at(f->ctx, (clopt_tensor){g2, 0}, mf, D);
    assert_int_equal(clopt_optimizer_step(acc, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step(one, NULL), CLOPT_SUCCESS);
    float a[D], b[D];
    double want[D];
    read_at(f->ctx, (clopt_tensor){p1, 0}, a, D);
    read_at(f->ctx, (clopt_tensor){p2, 0}, b, D);
    for (int d = 0; d < D; d++)
        want[d] = b[d];
    assert_close(a, want, D, 1e-6, 1e-6, "accumulated vs full batch");
    assert_int_equal(clopt_optimizer_accumulate_grad(acc, 5, (clopt_tensor){mb, 0}, 1.0),
                     CLOPT_ERR_INDEX);
    clopt_optimizer_destroy(acc);
    clopt_optimizer_destroy(one);
    cl_mem all[] = {p1, g1, p2, g2, mb};
    for (size_t i = 0; i < 5; i++)
        clReleaseMemObject(all[i]);
}

/* ---- AMP ---------------------------------------------------------------------------------- */

static void test_amp(void **state)
{
    fixture *f = *state;
    enum { N = 1031 };
    static float p0[N], g[N], gs[N], a[N], b[N];
    uint64_t seed = 9;
    for (int i = 0; i < N; i++) {
        p0[i] = (float)ref_normal(&seed);
        g[i] = (float)ref_normal(&seed);
        gs[i] = g[i] * 1024.0f; /* exact: a power of two */
    }
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAM, &hp);
    clopt_optimizer *plain, *amp;
    cl_mem pp = upload(f->ctx, p0, N), gp = upload(f->ctx, g, N);
    cl_mem pa = upload(f->ctx, p0, N), ga = upload(f->ctx, gs, N);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &plain), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &amp), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(plain, (clopt_tensor){pp, 0}, (clopt_tensor){gp, 0},
                                               N, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(amp, (clopt_tensor){pa, 0}, (clopt_tensor){ga, 0},
                                               N, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(amp, -1), CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_optimizer_set_grad_scale(amp, 1024), CLOPT_SUCCESS);
    for (int t = 0; t < 3; t++) {
        assert_int_equal(clopt_optimizer_step(plain, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(amp, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_found_inf(amp), 0);
    }
    read_at(f->ctx, (clopt_tensor){pp, 0}, a, N);
    read_at(f->ctx, (clopt_tensor){pa, 0}, b, N);
    assert_memory_equal(a, b, sizeof a); /* the scale is divided out exactly */
    /* one Inf (then one NaN) gradient: nothing changes, the step count stays, we are told */
    const float bad[2] = {INFINITY, NAN};
    for (int k = 0; k < 2; k++) {
        float before_p[N], before_m[N], before_v[N], after[N];
        read_at(f->ctx, (clopt_tensor){pa, 0}, before_p, N);
        clopt_optimizer_read_state(amp, 0, 0, before_m, N);
        clopt_optimizer_read_state(amp, 0, 1, before_v, N);
        gs[17 + k] = bad[k];
        write_at(f->ctx, (clopt_tensor){ga, 0}, gs, N);
        uint64_t steps = clopt_optimizer_step_count(amp);
        assert_int_equal(clopt_optimizer_step(amp, NULL), CLOPT_STEP_SKIPPED);
        assert_int_equal(clopt_optimizer_found_inf(amp), 1);
        assert_int_equal(clopt_optimizer_step_count(amp), steps);
        read_at(f->ctx, (clopt_tensor){pa, 0}, after, N);
        assert_memory_equal(after, before_p, sizeof after);
        clopt_optimizer_read_state(amp, 0, 0, after, N);
        assert_memory_equal(after, before_m, sizeof after);
        clopt_optimizer_read_state(amp, 0, 1, after, N);
        assert_memory_equal(after, before_v, sizeof after);
        gs[17 + k] = g[17 + k] * 1024.0f;
    }
    write_at(f->ctx, (clopt_tensor){ga, 0}, gs, N);
    assert_int_equal(clopt_optimizer_step(amp, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_found_inf(amp), 0);
    assert_string_equal(clopt_status_name(CLOPT_STEP_SKIPPED), "CLOPT_STEP_SKIPPED");
    clopt_optimizer_destroy(plain);
    clopt_optimizer_destroy(amp);
    clReleaseMemObject(pp), clReleaseMemObject(gp), clReleaseMemObject(pa), clReleaseMemObject(ga);

    /* the dynamic loss scale: back off on overflow, grow after growth_interval clean steps */
    clopt_loss_scaler sc;
    clopt_loss_scaler_init(&sc, 65536);
    sc.growth_interval = 3;
    assert_true(clopt_loss_scaler_update(&sc, 1) == 32768);
    assert_true(clopt_loss_scaler_update(&sc, 0) == 32768);
    assert_true(clopt_loss_scaler_update(&sc, 0) == 32768);
    assert_true(clopt_loss_scaler_update(&sc, 0) == 65536);
    assert_true(clopt_loss_scaler_update(&sc, 0) == 65536);
    assert_true(clopt_loss_scaler_update(&sc, 1) == 32768);
    assert_int_equal(sc.clean_steps, 0);
    /* bounds: torch's growth_interval 0 never grows (its tracker never equals 0); the scale
       stays within what set_grad_scale takes (2^126 .. 2^-126; torch stops at 2^127) */
    sc.growth_interval = 0;
    for (int k = 0; k < 5; k++)
        assert_true(clopt_loss_scaler_update(&sc, 0) == 32768);
    sc.growth_interval = 1;
    sc.scale = ldexp(1.0, 125);
    assert_true(clopt_loss_scaler_update(&sc, 0) == ldexp(1.0, 126));
    assert_true(clopt_loss_scaler_update(&sc, 0) == ldexp(1.0, 126));
    assert_int_equal(sc.clean_steps, 0);
    sc.scale = ldexp(1.0, -125);
    assert_true(clopt_loss_scaler_update(&sc, 1) == ldexp(1.0, -126));
    assert_true(clopt_loss_scaler_update(&sc, 1) == ldexp(1.0, -126));
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

/* A model of two groups (one an arena) trained with a schedule; built identically in any
   context. */
typedef struct model {
    clopt_ctx *ctx;
    clopt_optimizer *opt;
    cl_mem p[2], g[2];
    size_t n[2];
    size_t arena_first;
} model;

enum { M_ARENA = 3 };
static const size_t arena_sizes[M_ARENA] = {100, 37, 64};

static void model_build(model *m, clopt_ctx *ctx, clopt_rule rule, int shape2d)
{
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    clopt_hparams hp;
    clopt_hparams_default(rule, &hp);
    if (rule == CLOPT_ADAMW)
        hp.lookahead_k = 3;
    assert_int_equal(clopt_optimizer_create(ctx, rule, &hp, &m->opt), CLOPT_SUCCESS);
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 2;
    s.stage[0] = (clopt_schedule_stage){CLOPT_SCHED_LINEAR_WARMUP, 0, 4, 0, 0, 0.1, 0, 0};
    s.stage[1] = (clopt_schedule_stage){CLOPT_SCHED_COSINE, 4, 20, 0, 0, 0, 0.05, 0};
    assert_int_equal(clopt_optimizer_set_group_schedule(m->opt, 0, &s), CLOPT_SUCCESS);
    uint64_t seed = 42;
    m->n[0] = 12 * 20;
    m->n[1] = 333;
    float buf[333];
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < m->n[k]; i++)
            buf[i] = (float)ref_normal(&seed);
        m->p[k] = upload(ctx, buf, m->n[k]);
        m->g[k] = upload(ctx, NULL, m->n[k]);
        clopt_param_desc d;
        memset(&d, 0, sizeof d);
        d.param = (clopt_tensor){m->p[k], 0};
        d.grad = (clopt_tensor){m->g[k], 0};
        d.ndim = k == 0 && shape2d ? 2 : 1;
        d.shape[0] = d.ndim == 2 ? 12 : m->n[k];
        d.shape[1] = 20;
        assert_int_equal(clopt_optimizer_add_param_desc(m->opt, 0, &d, NULL), CLOPT_SUCCESS);
    }
    clopt_param_desc shapes[M_ARENA];
    memset(shapes, 0, sizeof shapes);
    for (int k = 0; k < M_ARENA; k++)
        shapes[k].ndim = 1, shapes[k].shape[0] = arena_sizes[k];
    hp.lr *= 0.5;
    assert_int_equal(clopt_optimizer_add_arena_group(m->opt, &hp, M_ARENA, shapes, NULL,
                                                     &m->arena_first),
                     CLOPT_SUCCESS);
    for (int k = 0; k < M_ARENA; k++) {
        clopt_tensor pv;
        clopt_optimizer_param_view(m->opt, m->arena_first + k, &pv, NULL, NULL, NULL);
        for (size_t i = 0; i < arena_sizes[k]; i++)
            buf[i] = (float)ref_normal(&seed);
        write_at(ctx, pv, buf, arena_sizes[k]);
    }
}

/* Steps t0+1 .. t1 with gradients that depend only on the step number. */
static void model_steps(model *m, uint64_t t0, uint64_t t1)
{
    float buf[333];
    for (uint64_t t = t0 + 1; t <= t1; t++) {
        uint64_t seed = 1000 + t;
        size_t np = clopt_optimizer_param_count(m->opt);
        for (size_t i = 0; i < np; i++) {
            clopt_tensor gv;
            clopt_optimizer_param_view(m->opt, i, NULL, &gv, NULL, NULL);
            size_t n = i < 2 ? m->n[i] : arena_sizes[i - 2];
            for (size_t j = 0; j < n; j++)
                buf[j] = (float)ref_normal(&seed);
            write_at(m->ctx, gv, buf, n);
        }
        assert_int_equal(clopt_optimizer_step(m->opt, NULL), CLOPT_SUCCESS);
    }
}

/* Every parameter and state value, as bytes, for bit comparisons. */
static float *model_snapshot(model *m, size_t *count)
{
    size_t np = clopt_optimizer_param_count(m->opt), total = 0;
    for (size_t i = 0; i < np; i++) {
        size_t n = i < 2 ? m->n[i] : arena_sizes[i - 2];
        total += n;
        for (size_t k = 0; k < clopt_optimizer_state_count(m->opt, i); k++) {
            size_t len;
            clopt_optimizer_state_info(m->opt, i, k, NULL, &len);
            total += len;
        }
    }
    float *out = malloc(total * sizeof *out), *p = out;
    for (size_t i = 0; i < np; i++) {
        size_t n = i < 2 ? m->n[i] : arena_sizes[i - 2];
        clopt_tensor pv;
        clopt_optimizer_param_view(m->opt, i, &pv, NULL, NULL, NULL);
        read_at(m->ctx, pv, p, n);
        p += n;
        for (size_t k = 0; k < clopt_optimizer_state_count(m->opt, i); k++) {
            size_t len;
            clopt_optimizer_state_info(m->opt, i, k, NULL, &len);
            assert_int_equal(clopt_optimizer_read_state(m->opt, i, k, p, len), CLOPT_SUCCESS);
            p += len;
        }
    }
    *count = total;
    return out;
}

static void model_free(model *m)
{
    clopt_optimizer_destroy(m->opt);
    for (int k = 0; k < 2; k++) {
        clReleaseMemObject(m->p[k]);
        clReleaseMemObject(m->g[k]);
    }
}

static char *temp_path(char *dir, size_t len, const char *name)
{
    char *path = malloc(len + 64);
    snprintf(path, len + 64, "%s/%s", dir, name);
    return path;
}

/* Save after N steps, load into a fresh context, N more steps == 2N steps, bit for bit. */
static void test_checkpoint_resume(void **state)
{
    (void)state;
    char dir[] = "/tmp/clopt-ckpt-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = temp_path(dir, sizeof dir, "opt.ckpt");
    const clopt_rule rules[3] = {CLOPT_ADAMW, CLOPT_NADAM, CLOPT_ADAFACTOR};
    for (int r = 0; r < 3; r++) {
        clopt_ctx *c1, *c2;
        assert_int_equal(clopt_ctx_create(&c1), CLOPT_SUCCESS);
        assert_int_equal(clopt_ctx_create(&c2), CLOPT_SUCCESS);
        model straight, first, second;
        model_build(&straight, c1, rules[r], 1);
        model_steps(&straight, 0, 12);
        model_build(&first, c1, rules[r], 1);
        model_steps(&first, 0, 6);
        assert_int_equal(clopt_optimizer_save(first.opt, path), CLOPT_SUCCESS);
        model_build(&second, c2, rules[r], 1);
        assert_int_equal(clopt_optimizer_load(second.opt, path), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step_count(second.opt), 6);
        /* the parameters are the engine's: it restores them itself */
        for (size_t i = 0; i < clopt_optimizer_param_count(first.opt); i++) {
            clopt_tensor a, b;
            size_t n = i < 2 ? first.n[i] : arena_sizes[i - 2];
            float buf[333];
            clopt_optimizer_param_view(first.opt, i, &a, NULL, NULL, NULL);
            clopt_optimizer_param_view(second.opt, i, &b, NULL, NULL, NULL);
            read_at(c1, a, buf, n);
            write_at(c2, b, buf, n);
        }
        model_steps(&second, 6, 12);
        size_t na, nb;
        float *a = model_snapshot(&straight, &na), *b = model_snapshot(&second, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na * sizeof *a);
        free(a), free(b);
        model_free(&straight), model_free(&first), model_free(&second);
        clopt_ctx_destroy(c1), clopt_ctx_destroy(c2);
    }
    /* no temporary file is left next to the checkpoint */
    char *tmp = temp_path(dir, sizeof dir, "");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp", dir);
    FILE *ls = popen(cmd, "r");
    int count = -1;
    assert_int_equal(fscanf(ls, "%d", &count), 1);
    pclose(ls);
    assert_int_equal(count, 0);
    remove(path);
    rmdir(dir);
    free(tmp);
    free(path);
}

/* Independent CRC-32C (bitwise) for the wrong-version variant. */
static uint32_t crc32c(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc(*len);
    assert_int_equal(fread(d, 1, *len, f), *len);
    fclose(f);
    return d;
}

static void spit(const char *path, const unsigned char *d, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, len, f), len);
    fclose(f);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Loading `bytes` must fail with `want` and leave the optimizer exactly as it was. */
static void expect_rejected(model *m, const char *path, const unsigned char *bytes, size_t len,
                            clopt_status want, const char *what)
{
    spit(path, bytes, len);
    size_t n0, n1;
    float *before = model_snapshot(m, &n0);
    uint64_t steps = clopt_optimizer_step_count(m->opt);
    double lr = clopt_optimizer_group_lr(m->opt, 0);
    clopt_status s = clopt_optimizer_load(m->opt, path);
    if (s != want) {
        fprintf(stderr, "%s: got %s (%s), want %s\n", what, clopt_status_name(s),
                clopt_ctx_last_error(m->ctx), clopt_status_name(want));
        fail();
    }
    assert_true(strlen(clopt_ctx_last_error(m->ctx)) > 0);
    float *after = model_snapshot(m, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0 * sizeof *before);
    assert_int_equal(clopt_optimizer_step_count(m->opt), steps);
    assert_true(clopt_optimizer_group_lr(m->opt, 0) == lr);
    free(before), free(after);
}

static void test_checkpoint_rejects_bad_files(void **state)
{
    fixture *f = *state;
    char dir[] = "/tmp/clopt-ckbad-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *good = temp_path(dir, sizeof dir, "good.ckpt");
    char *bad = temp_path(dir, sizeof dir, "bad.ckpt");
    model src, dst;
    model_build(&src, f->ctx, CLOPT_ADAMW, 1);
    model_steps(&src, 0, 5);
    assert_int_equal(clopt_optimizer_save(src.opt, good), CLOPT_SUCCESS);
    model_build(&dst, f->ctx, CLOPT_ADAMW, 1);
    model_steps(&dst, 0, 2);
    size_t len;
    unsigned char *d = slurp(good, &len);
    /* section boundaries: header 16 bytes, then tag | 0 | u64 length | payload */
    size_t starts[64], nsec = 0;
    for (size_t at = 16; at + 16 <= len - 4 && nsec < 64;) {
        starts[nsec++] = at;
        uint64_t l = 0;
        for (int i = 0; i < 8; i++)
            l |= (uint64_t)d[at + 8 + i] << (8 * i);
        at += 16 + l;
    }
    assert_int_equal(nsec, 1 + 2 + 5); /* optimizer, 2 groups, 5 tensors */
    unsigned char *copy = malloc(len);
    for (size_t s = 0; s < nsec; s++) {
        size_t end = s + 1 < nsec ? starts[s + 1] : len - 4;
        /* truncated at the section's start, in its header, in its middle */
        size_t cuts[3] = {starts[s], starts[s] + 6, (starts[s] + end) / 2};
        for (int c = 0; c < 3; c++)
            expect_rejected(&dst, bad, d, cuts[c], CLOPT_ERR_FORMAT, "truncated");
        /* one flipped byte in the section's header and in its payload */
        size_t flips[2] = {starts[s] + 1, (starts[s] + 16 + end) / 2};
        for (int c = 0; c < 2; c++) {
            memcpy(copy, d, len);
            copy[flips[c]] ^= 0x10;
            expect_rejected(&dst, bad, copy, len, CLOPT_ERR_FORMAT, "flipped");
        }
    }
    /* the CRC itself, the magic, and the version (with a recomputed CRC) */
    memcpy(copy, d, len);
    copy[len - 1] ^= 1;
    expect_rejected(&dst, bad, copy, len, CLOPT_ERR_FORMAT, "crc");
    memcpy(copy, d, len);
    copy[0] = 'X';
    expect_rejected(&dst, bad, copy, len, CLOPT_ERR_FORMAT, "magic");
    memcpy(copy, d, len);
    put_u32(copy + 8, 5); /* the next format version */
    put_u32(copy + len - 4, crc32c(copy, len - 4));
    expect_rejected(&dst, bad, copy, len, CLOPT_ERR_FORMAT, "version");
    expect_rejected(&dst, bad, d, 0, CLOPT_ERR_FORMAT, "empty");
    /* other shapes (a 1-D instead of a 2-D first tensor: Adafactor's state differs), and
       another rule */
    model af, af1d;
    model_build(&af, f->ctx, CLOPT_ADAFACTOR, 1);
    model_build(&af1d, f->ctx, CLOPT_ADAFACTOR, 0);
    assert_int_equal(clopt_optimizer_save(af1d.opt, bad), CLOPT_SUCCESS);
    free(copy);
    copy = slurp(bad, &len);
    /* larger than any checkpoint of the factored optimizer: refused by its size, unread */
    expect_rejected(&af, bad, copy, len, CLOPT_ERR_FORMAT, "other shapes, larger");
    unsigned char *small = NULL;
    size_t small_len = 0;
    assert_int_equal(clopt_optimizer_save(af.opt, bad), CLOPT_SUCCESS);
    small = slurp(bad, &small_len);
    expect_rejected(&af1d, bad, small, small_len, CLOPT_ERR_STATE_MISMATCH, "other shapes");
    free(small);
    expect_rejected(&dst, bad, copy, len, CLOPT_ERR_STATE_MISMATCH, "other rule");
    assert_int_equal(clopt_optimizer_load(dst.opt, "/nonexistent/x.ckpt"), CLOPT_ERR_IO);
    assert_int_equal(clopt_optimizer_save(dst.opt, "/nonexistent/dir/x.ckpt"), CLOPT_ERR_IO);
    /* after all that, the good file still loads */
    assert_int_equal(clopt_optimizer_load(dst.opt, good), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(dst.opt), 5);
    model_free(&af), model_free(&af1d), model_free(&src), model_free(&dst);
    free(copy), free(d);
    remove(good), remove(bad), rmdir(dir);
    free(good), free(bad);
}

/* Lookahead over any rule: the slow weights follow the golden semantics (checked in depth by
   the lookahead_adam golden case); here a Lion group with k = 4 against the reference. */
static void test_lookahead_any_rule(void **state)
{
    fixture *f = *state;
    enum { N = 500 };
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_LION, &hp);
    hp.lookahead_k = 4;
    hp.lookahead_alpha = 0.3;
    uint64_t seed = 77;
    static float p[N], g[N];
    static double pd[N], gd[N], slow[N], m[N];
    for (int i = 0; i < N; i++)
        p[i] = (float)ref_normal(&seed), pd[i] = slow[i] = p[i];
    cl_mem pb = upload(f->ctx, p, N), gb = upload(f->ctx, NULL, N);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_LION, &hp, &opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb, 0}, (clopt_tensor){gb, 0},
                                               N, NULL, NULL),
                     CLOPT_SUCCESS);
    const char *name;
    assert_int_equal(clopt_optimizer_state_info(opt, 0, 1, &name, NULL), CLOPT_SUCCESS);
    assert_string_equal(name, "slow_params");
    double *st[CLOPT_MAX_STATE] = {m};
    for (uint64_t t = 1; t <= 12; t++) {
        for (int i = 0; i < N; i++)
            g[i] = (float)ref_normal(&seed), gd[i] = g[i];
        write_at(f->ctx, (clopt_tensor){gb, 0}, g, N);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        ref_step(CLOPT_LION, &hp, t, N, pd, gd, st, NULL, NULL, 1.0);
        if (t % 4 == 0)
            for (int i = 0; i < N; i++)
                slow[i] = pd[i] = slow[i] + 0.3 * (pd[i] - slow[i]);
    }
    read_at(f->ctx, (clopt_tensor){pb, 0}, p, N);
    assert_close(p, pd, N, 1e-5, 1e-6, "lookahead lion");
    float s[N];
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 1, s, N), CLOPT_SUCCESS);
    assert_close(s, slow, N, 1e-5, 1e-6, "slow weights");
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_arena_matches_separate),
        cmocka_unit_test(test_schedules_torch_chainable),
        cmocka_unit_test(test_schedules_restarts_stepped),
        cmocka_unit_test(test_schedules_restarts_huge_counts),
        cmocka_unit_test(test_schedules_edges),
        cmocka_unit_test(test_schedule_in_optimizer),
        cmocka_unit_test(test_schedule_lr_ends),
        cmocka_unit_test(test_accumulation),
        cmocka_unit_test(test_amp),
        cmocka_unit_test(test_lookahead_any_rule),
        cmocka_unit_test(test_checkpoint_resume),
        cmocka_unit_test(test_checkpoint_rejects_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
