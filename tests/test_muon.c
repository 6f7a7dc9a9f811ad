/* SPDX-License-Identifier: MIT */
/* Muon at the optimizer level (host/muon.c, kernels/muon.cl, CLBlast GEMMs) against a
 * double-precision reference written from the equations (tests/data/golden/muon/meta.json):
 * square, wide and tall matrices sharing one optimizer's work buffers, Nesterov on/off,
 * decoupled weight decay, maximize, AMP (the loss scale divided out, an Inf gradient skips
 * the step, also with steps in flight), a bf16 θ with a float32 master, the refusals (1-D and
 * 3-D tensors, the op level) and a checkpoint round trip that continues bit for bit. */
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

/* ---- the reference ------------------------------------------------------------------- */

typedef struct ref_muon {
    size_t rows, cols;
    double *theta, *b;
    int b_bf16; /* the momentum stored as bf16 (rounded to nearest even) after each step */
} ref_muon;

/* bfloat16 bits of x rounded to nearest even (x finite), and that value as a float. */
static uint16_t bf16_rne(float x)
{
    uint32_t u = f2u(x);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float ref_bf16(double x) { return u2f((uint32_t)bf16_rne((float)x) << 16); }

static void ref_init(ref_muon *r, size_t rows, size_t cols, const float *theta)
{
    const size_t n = rows * cols;
    r->rows = rows;
    r->cols = cols;
    r->theta = calloc(n, sizeof(double));
    r->b = calloc(n, sizeof(double));
    r->b_bf16 = 0;
    assert_non_null(r->theta);
    assert_non_null(r->b);
    for (size_t i = 0; i < n; i++)
        r->theta[i] = theta[i];
}

static void ref_free(ref_muon *r)
{
    free(r->theta);
    free(r->b);
}

/* One Muon step: b = μb + (1-μ)g; U = nesterov ? (1-μ)g + μb : b; X = U (transposed when
   rows > cols: X is [m, N], m = min); X /= ‖X‖_F + 1e-7; ns times A = XXᵀ, B = bA + cA²,
   X = aX + BX; O = X (back in U's layout)·sqrt(max(1, rows/cols)); θ = θ(1 - lr·wd) - lr·O. */
static void ref_step(ref_muon *r, const float *gin, double gmul, int maximize, double lr,
                     double mu, int nesterov, double wd, unsigned ns)
{
    const size_t R = r->rows, C = r->cols, n = R * C;
    const int tall = R > C;
    const size_t m = tall ? C : R, N = tall ? R : C;
    double *x = calloc(n, sizeof(double)), *y = calloc(n, sizeof(double));
    double *A = calloc(m * m, sizeof(double)), *B = calloc(m * m, sizeof(double));
    assert_true(x && y && A && B);
    double norm = 0.0;
    for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < C; j++) {
            const size_t e = i * C + j;
            const double g = (double)gin[e] * gmul * (maximize ? -1.0 : 1.0);
            r->b[e] = mu * r->b[e] + (1.0 - mu) * g;
            const double u = nesterov ? (1.0 - mu) * g + mu * r->b[e] : r->b[e];
            if (r->b_bf16) /* the update uses the new momentum before it is stored */
                r->b[e] = ref_bf16(r->b[e]);
            x[tall ? j * N + i : i * N + j] = u;
            norm += u * u;
        }
    norm = sqrt(norm) + 1e-7;
    for (size_t e = 0; e < n; e++)
        x[e] /= norm;
    const double a = 3.4445, bb = -4.7750, c = 2.0315;
    for (unsigned it = 0; it < ns; it++) {
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < m; j++) {
                double s = 0.0;
                for (size_t k = 0; k < N; k++)
                    s += x[i * N + k] * x[j * N + k];
                A[i * m + j] = s;
            }
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < m; j++) {
                double s = 0.0;
                for (size_t k = 0; k < m; k++)
                    s += A[i * m + k] * A[k * m + j];
                B[i * m + j] = bb * A[i * m + j] + c * s;
            }
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < N; j++) {
                double s = 0.0;
                for (size_t k = 0; k < m; k++)
                    s += B[i * m + k] * x[k * N + j];
                y[i * N + j] = a * x[i * N + j] + s;
            }
        double *t = x;
        x = y;
        y = t;
    }
    const double scale = sqrt(R > C ? (double)R / (double)C : 1.0);
    for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < C; j++) {
            const size_t e = i * C + j;
            const double o = x[tall ? j * N + i : i * N + j] * scale;
            r->theta[e] = r->theta[e] * (1.0 - lr * wd) - lr * o;
        }
    free(x);
    free(y);
    free(A);
    free(B);
}

/* |got - want| <= atol + rtol·|want| for every element. */
static void assert_close(const float *got, const double *want, size_t n, double atol,
                         double rtol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - want[i]);
        if (!(d <= atol + rtol * fabs(want[i]))) {
            fprintf(stderr, "%s[%zu]: got %.9g, want %.9g (|d| %.3g)\n", what, i, got[i],
                    want[i], d);
            fail();
        }
    }
}

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_floats(size_t n, float scale)
{
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

static clopt_hparams muon_hp(int nesterov, double wd, int maximize)
{
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_MUON, &hp), CLOPT_SUCCESS);
    assert_true(hp.lr == 0.02 && hp.momentum == 0.95 && hp.nesterov == 1);
    assert_int_equal(hp.ns_steps, 5);
    hp.nesterov = nesterov;
    hp.weight_decay = wd;
    hp.maximize = maximize;
    return hp;
}

static size_t add_matrix(clopt_optimizer *opt, cl_mem p, cl_mem g, size_t rows, size_t cols)
{
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 2;
    d.shape[0] = rows;
    d.shape[1] = cols;
    size_t index;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, &index), CLOPT_SUCCESS);
    return index;
}

#define NSHAPES 3
static const size_t shapes[NSHAPES][2] = {{24, 24}, {37, 53}, {53, 37}};

/* Square, wide and tall tensors in one optimizer (the work buffers grow and are shared),
   `steps` steps with fresh gradients each, θ and b against the reference after each. */
static void run_shapes(fixture *f, int nesterov, double wd, int maximize, int steps)
{
    const clopt_hparams hp = muon_hp(nesterov, wd, maximize);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    cl_mem p[NSHAPES], g[NSHAPES];
    ref_muon ref[NSHAPES];
    for (int s = 0; s < NSHAPES; s++) {
        const size_t n = shapes[s][0] * shapes[s][1];
        float *theta = random_floats(n, 1.0f);
        p[s] = upload(f->ctx, theta, n);
        g[s] = upload(f->ctx, NULL, n);
        assert_int_equal(add_matrix(opt, p[s], g[s], shapes[s][0], shapes[s][1]), (size_t)s);
        ref_init(&ref[s], shapes[s][0], shapes[s][1], theta);
        free(theta);
    }
    for (int t = 0; t < steps; t++) {
        float *grads[NSHAPES];
        for (int s = 0; s < NSHAPES; s++) {
            const size_t n = shapes[s][0] * shapes[s][1];
            grads[s] = random_floats(n, 0.5f);
            if (t == 1 && s == 0) /* a tiny gradient: the normalisation's eps matters less */
                for (size_t i = 0; i < n; i++)
                    grads[s][i] *= 1e-3f;
            write_at(f->ctx, (clopt_tensor){g[s], 0}, grads[s], n);
        }
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        for (int s = 0; s < NSHAPES; s++) {
            const size_t n = shapes[s][0] * shapes[s][1];
            ref_step(&ref[s], grads[s], 1.0, maximize, hp.lr, hp.momentum, nesterov, wd,
                     hp.ns_steps);
            float *got = xmalloc(n * sizeof(float));
            read_at(f->ctx, (clopt_tensor){p[s], 0}, got, n);
            assert_close(got, ref[s].theta, n, 2e-5, 1e-5, "theta");
            assert_int_equal(clopt_optimizer_read_state(opt, (size_t)s, 0, got, n),
                             CLOPT_SUCCESS);
            assert_close(got, ref[s].b, n, 1e-6, 1e-5, "momentum_buffer");
            free(got);
            free(grads[s]);
        }
    }
    clopt_optimizer_destroy(opt);
    for (int s = 0; s < NSHAPES; s++) {
        clReleaseMemObject(p[s]);
        clReleaseMemObject(g[s]);
        ref_free(&ref[s]);
    }
}

static void test_shapes_nesterov(void **state)
{
    run_shapes(*state, 1, 0.0, 0, 4);
}

static void test_shapes_plain_momentum_wd(void **state)
{
    run_shapes(*state, 0, 0.1, 0, 3);
}

static void test_maximize_wd(void **state)
{
    run_shapes(*state, 1, 0.05, 1, 2);
}

/* An arena group (tensors at offsets of the library's buffers) of a tall and a wide matrix:
   two steps against the reference. */
static void test_arena_group(void **state)
{
    fixture *f = *state;
    const clopt_hparams hp = muon_hp(1, 0.03, 0);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d[2];
    const size_t sh[2][2] = {{29, 17}, {17, 29}};
    for (int s = 0; s < 2; s++) {
        clopt_param_desc_init(&d[s]);
        d[s].ndim = 2;
        d[s].shape[0] = sh[s][0];
        d[s].shape[1] = sh[s][1];
    }
    size_t first;
    assert_int_equal(clopt_optimizer_add_arena_group(opt, &hp, 2, d, NULL, &first),
                     CLOPT_SUCCESS);
    clopt_tensor pv[2], gv[2];
    ref_muon ref[2];
    for (int s = 0; s < 2; s++) {
        const size_t n = sh[s][0] * sh[s][1];
        assert_int_equal(clopt_optimizer_param_view(opt, first + (size_t)s, &pv[s], &gv[s],
                                                    NULL, NULL),
                         CLOPT_SUCCESS);
        float *theta = random_floats(n, 1.0f);
        write_at(f->ctx, pv[s], theta, n);
        ref_init(&ref[s], sh[s][0], sh[s][1], theta);
        free(theta);
    }
    assert_true(pv[1].offset > 0);
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 2; s++) {
            const size_t n = sh[s][0] * sh[s][1];
            float *grad = random_floats(n, 0.5f);
            write_at(f->ctx, gv[s], grad, n);
            ref_step(&ref[s], grad, 1.0, 0, hp.lr, hp.momentum, 1, 0.03, hp.ns_steps);
            free(grad);
            if (s == 1)
                assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        }
    for (int s = 0; s < 2; s++) {
        const size_t n = sh[s][0] * sh[s][1];
        float *got = xmalloc(n * sizeof(float));
        read_at(f->ctx, pv[s], got, n);
        assert_close(got, ref[s].theta, n, 2e-5, 1e-5, "theta (arena)");
        assert_int_equal(clopt_optimizer_read_state(opt, first + (size_t)s, 0, got, n),
                         CLOPT_SUCCESS);
        assert_close(got, ref[s].b, n, 1e-6, 1e-5, "momentum_buffer (arena)");
        free(got);
        ref_free(&ref[s]);
    }
    clopt_optimizer_destroy(opt);
}

/* AMP: gradients arrive × 256 and the step divides it out; an Inf gradient skips the step
   (θ and b unchanged, CLOPT_STEP_SKIPPED). Then the same with steps in flight (step_on):
   each step enqueues its launches once per possible outcome of the steps before it. */
/* Four clopt_optimizer_step_on calls in flight (loss scale 256) on the context's queue, the
   gradients copied in from buffers written before (as an engine's queue would order them);
   step `bad` holds `bad_value` at element bad_at (AMP skips it). The reference takes the other
   three with lr = hp->lr·gamma^count, *count being the optimizer's applied steps. */
static void steps_in_flight(clopt_ctx *ctx, clopt_optimizer *opt, cl_mem g, size_t n,
                            ref_muon *ref, const clopt_hparams *hp, int bad, size_t bad_at,
                            float bad_value, double gamma, uint64_t *count)
{
    cl_mem gs[4];
    float *grads[4], *scaled = xmalloc(n * sizeof(float));
    for (int t = 0; t < 4; t++) {
        grads[t] = random_floats(n, 0.5f);
        for (size_t i = 0; i < n; i++)
            scaled[i] = grads[t][i] * 256.0f;
        if (t == bad)
            scaled[bad_at] = bad_value;
        gs[t] = upload(ctx, scaled, n);
    }
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    for (int t = 0; t < 4; t++) {
        assert_int_equal(clEnqueueCopyBuffer(q, gs[t], g, 0, 0, n * sizeof(float), 0, NULL,
                                             NULL),
                         CL_SUCCESS);
        assert_int_equal(clopt_optimizer_step_on(opt, q, 0, NULL, NULL), CLOPT_SUCCESS);
        if (t != bad)
            ref_step(ref, grads[t], 1.0, 0, hp->lr * pow(gamma, (double)(*count)++),
                     hp->momentum, 1, 0.01, hp->ns_steps);
    }
    assert_int_equal(clFinish(q), CL_SUCCESS);
    for (int t = 0; t < 4; t++) {
        clReleaseMemObject(gs[t]);
        free(grads[t]);
    }
    free(scaled);
}

static void test_amp_skip(void **state)
{
    fixture *f = *state;
    const size_t R = 37, C = 53, n = R * C;
    const clopt_hparams hp = muon_hp(1, 0.01, 0);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    float *theta = random_floats(n, 1.0f), *got = xmalloc(n * sizeof(float));
    float *got_b = xmalloc(n * sizeof(float)), *before = xmalloc(n * sizeof(float));
    float *before_b = xmalloc(n * sizeof(float)), *scaled = xmalloc(n * sizeof(float));
    cl_mem p = upload(f->ctx, theta, n), g = upload(f->ctx, NULL, n);
    add_matrix(opt, p, g, R, C);
    ref_muon ref;
    ref_init(&ref, R, C, theta);
    assert_int_equal(clopt_optimizer_set_grad_scale(opt, 256.0), CLOPT_SUCCESS);
    /* blocking steps: 0 normal, 1 Inf (skipped), 2 normal */
    for (int t = 0; t < 3; t++) {
        float *grad = random_floats(n, 0.5f);
        for (size_t i = 0; i < n; i++)
            scaled[i] = grad[i] * 256.0f;
        if (t == 1)
            scaled[100] = INFINITY;
        write_at(f->ctx, (clopt_tensor){g, 0}, scaled, n);
        read_at(f->ctx, (clopt_tensor){p, 0}, before, n);
        assert_int_equal(clopt_optimizer_read_state(opt, 0, 0, before_b, n), CLOPT_SUCCESS);
        const clopt_status s = clopt_optimizer_step(opt, NULL);
        read_at(f->ctx, (clopt_tensor){p, 0}, got, n);
        assert_int_equal(clopt_optimizer_read_state(opt, 0, 0, got_b, n), CLOPT_SUCCESS);
        if (t == 1) {
            assert_int_equal(s, CLOPT_STEP_SKIPPED);
            assert_int_equal(clopt_optimizer_found_inf(opt), 1);
            assert_memory_equal(got, before, n * sizeof(float));
            assert_memory_equal(got_b, before_b, n * sizeof(float));
        } else {
            assert_int_equal(s, CLOPT_SUCCESS);
            ref_step(&ref, grad, 1.0, 0, hp.lr, hp.momentum, 1, 0.01, hp.ns_steps);
            assert_close(got, ref.theta, n, 2e-5, 1e-5, "theta");
            assert_close(got_b, ref.b, n, 1e-6, 1e-5, "momentum_buffer");
        }
        free(grad);
    }
    /* steps in flight: four step_on calls, the second with a NaN gradient */
    uint64_t count = 2;
    steps_in_flight(f->ctx, opt, g, n, &ref, &hp, 1, 7, NAN, 1.0, &count);
    read_at(f->ctx, (clopt_tensor){p, 0}, got, n);
    assert_close(got, ref.theta, n, 2e-5, 1e-5, "theta (in flight)");
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 0, got_b, n), CLOPT_SUCCESS);
    assert_close(got_b, ref.b, n, 1e-6, 1e-5, "momentum_buffer (in flight)");
    assert_int_equal(clopt_optimizer_step_count(opt), 5);
    /* in flight again with a schedule (lr halves every applied step): each outcome has its
       own lr, so Muon runs one pass per outcome, and only the device's count's one acts (the
       third gradient holds an Inf: the fourth step takes the third's lr) */
    clopt_schedule sc;
    memset(&sc, 0, sizeof sc);
    sc.nstages = 1;
    sc.stage[0].kind = CLOPT_SCHED_EXPONENTIAL;
    sc.stage[0].gamma = 0.5;
    assert_int_equal(clopt_optimizer_set_group_schedule(opt, 0, &sc), CLOPT_SUCCESS);
    steps_in_flight(f->ctx, opt, g, n, &ref, &hp, 2, 11, INFINITY, 0.5, &count);
    read_at(f->ctx, (clopt_tensor){p, 0}, got, n);
    assert_close(got, ref.theta, n, 2e-5, 1e-5, "theta (in flight, scheduled)");
    clopt_step_report rep;
    assert_int_equal(clopt_optimizer_poll(opt, &rep), CLOPT_SUCCESS); /* every verdict is in */
    assert_int_equal(clopt_optimizer_step_count(opt), 8);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    ref_free(&ref);
    free(theta);
    free(got);
    free(got_b);
    free(before);
    free(before_b);
    free(scaled);
}

/* A bf16 θ with a float32 master: the master follows the float32 reference; θ is the master
   rounded to nearest even. */
static void test_bf16_master(void **state)
{
    fixture *f = *state;
    const size_t R = 53, C = 37, n = R * C;
    clopt_hparams hp = muon_hp(1, 0.02, 0);
    hp.master = CLOPT_MASTER_F32;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    float *theta = random_floats(n, 1.0f), *got = xmalloc(n * sizeof(float));
    uint16_t *p16 = xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        p16[i] = bf16_rne(theta[i]);
        theta[i] = u2f((uint32_t)p16[i] << 16);
    }
    cl_mem p = buf_new(f->ctx, n * sizeof(uint16_t), p16), g = upload(f->ctx, NULL, n);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 2;
    d.shape[0] = R;
    d.shape[1] = C;
    d.param_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    size_t master = 0;
    for (size_t k = 0; k < clopt_optimizer_state_count(opt, 0); k++) {
        const char *name;
        assert_int_equal(clopt_optimizer_state_info(opt, 0, k, &name, NULL), CLOPT_SUCCESS);
        if (strcmp(name, "master") == 0)
            master = k;
    }
    assert_true(master > 0);
    ref_muon ref;
    ref_init(&ref, R, C, theta);
    for (int t = 0; t < 3; t++) {
        float *grad = random_floats(n, 0.5f);
        write_at(f->ctx, (clopt_tensor){g, 0}, grad, n);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        ref_step(&ref, grad, 1.0, 0, hp.lr, hp.momentum, 1, 0.02, hp.ns_steps);
        free(grad);
    }
    assert_int_equal(clopt_optimizer_read_state(opt, 0, master, got, n), CLOPT_SUCCESS);
    assert_close(got, ref.theta, n, 2e-5, 1e-5, "master");
    buf_read(f->ctx, p, 0, n * sizeof(uint16_t), p16);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p16[i], bf16_rne(got[i]));
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    ref_free(&ref);
    free(theta);
    free(got);
    free(p16);
}

/* The momentum in bf16 (state_dtype): θ follows the reference whose momentum is rounded to
   bf16 after each step, and the stored words are that momentum (within one bf16 ulp: the
   kernel's float32 momentum and the reference's double one may round to neighbours). */
static void test_bf16_state(void **state)
{
    fixture *f = *state;
    const size_t R = 41, C = 67, n = R * C;
    clopt_hparams hp = muon_hp(1, 0.02, 0);
    hp.state_dtype = CLOPT_DTYPE_BF16;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    float *theta = random_floats(n, 1.0f), *got = xmalloc(n * sizeof(float));
    uint16_t *words = xmalloc(n * sizeof(uint16_t));
    cl_mem p = upload(f->ctx, theta, n), g = upload(f->ctx, NULL, n);
    add_matrix(opt, p, g, R, C);
    clopt_state_entry se;
    assert_int_equal(clopt_optimizer_state_entry(opt, 0, &se), CLOPT_SUCCESS);
    assert_string_equal(se.name, "momentum_buffer");
    assert_int_equal(se.dtype, CLOPT_DTYPE_BF16);
    ref_muon ref, ref32;
    ref_init(&ref, R, C, theta);
    ref_init(&ref32, R, C, theta);
    ref.b_bf16 = 1;
    for (int t = 0; t < 4; t++) {
        float *grad = random_floats(n, 0.5f);
        write_at(f->ctx, (clopt_tensor){g, 0}, grad, n);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        ref_step(&ref, grad, 1.0, 0, hp.lr, hp.momentum, 1, 0.02, hp.ns_steps);
        ref_step(&ref32, grad, 1.0, 0, hp.lr, hp.momentum, 1, 0.02, hp.ns_steps);
        free(grad);
    }
    buf_read(f->ctx, p, 0, n * sizeof(float), got);
    assert_close(got, ref.theta, n, 2e-5, 1e-5, "theta");
    buf_read(f->ctx, se.tensor.buffer, se.tensor.offset * sizeof(uint16_t),
             n * sizeof(uint16_t), words);
    size_t bad = 0, apart = 0;
    for (size_t i = 0; i < n; i++) {
        const int d = (int)words[i] - (int)(f2u((float)ref.b[i]) >> 16);
        bad += d < -1 || d > 1;
        apart += ref_bf16(ref32.b[i]) != (float)ref.b[i];
    }
    assert_int_equal(bad, 0);
    /* not vacuous: the bf16 momentum's trajectory differs from the float32 one's */
    assert_true(apart > n / 10);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    ref_free(&ref);
    ref_free(&ref32);
    free(theta);
    free(got);
    free(words);
}

/* 1-D and 3-D tensors are refused at registration; the op level refuses Muon; gradient
   centralization is refused (it was accepted and ignored: θ came out bit-identical). */
static void test_refusals(void **state)
{
    fixture *f = *state;
    assert_int_equal(clopt_has_muon(), 1);
    const clopt_hparams hp = muon_hp(1, 0.0, 0);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    cl_mem p = upload(f->ctx, NULL, 64), g = upload(f->ctx, NULL, 64);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){p, 0}, (clopt_tensor){g, 0},
                                               64, NULL, NULL),
                     CLOPT_ERR_UNSUPPORTED);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 3;
    d.shape[0] = 4;
    d.shape[1] = 4;
    d.shape[2] = 4;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_UNSUPPORTED);
    assert_int_equal(clopt_optimizer_param_count(opt), 0);
    d.ndim = 2;
    d.shape[0] = 8;
    d.shape[1] = 8;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    clopt_hparams gc = hp;
    gc.grad_centralization = 1;
    assert_int_equal(clopt_optimizer_add_group(opt, &gc, NULL), CLOPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "centralization"));
    assert_int_equal(clopt_optimizer_set_group_hparams(opt, 0, &gc), CLOPT_ERR_UNSUPPORTED);
    clopt_optimizer_destroy(opt);
    clopt_optimizer *bad = (clopt_optimizer *)(void *)&gc;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &gc, &bad), CLOPT_ERR_UNSUPPORTED);
    assert_null(bad);
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = (clopt_tensor){p, 0};
    a.grad = (clopt_tensor){g, 0};
    cl_mem s = upload(f->ctx, NULL, 64);
    a.state[0] = (clopt_tensor){s, 0};
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_MUON, &hp, &a, 64, 1, 0, NULL, NULL),
                     CLOPT_ERR_UNSUPPORTED);
    clReleaseMemObject(s);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

/* save_to after 2 steps, 2 more steps; a fresh optimizer loads the bytes, θ is restored by
   the "engine", and the same 2 steps give bit-identical θ and b. */
static void test_checkpoint_round_trip(void **state)
{
    fixture *f = *state;
    const size_t R = 37, C = 53, n = R * C;
    const clopt_hparams hp = muon_hp(1, 0.01, 0);
    float *theta = random_floats(n, 1.0f), *mid = xmalloc(n * sizeof(float));
    float *grads[4];
    for (int t = 0; t < 4; t++)
        grads[t] = random_floats(n, 0.5f);
    clopt_optimizer *a, *b;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &a), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_MUON, &hp, &b), CLOPT_SUCCESS);
    cl_mem pa = upload(f->ctx, theta, n), ga = upload(f->ctx, NULL, n);
    cl_mem pb = upload(f->ctx, NULL, n), gb = upload(f->ctx, NULL, n);
    add_matrix(a, pa, ga, R, C);
    add_matrix(b, pb, gb, R, C);
    size_t size, written;
    unsigned char *bytes = NULL;
    for (int t = 0; t < 4; t++) {
        if (t == 2) {
            assert_int_equal(clopt_optimizer_state_size(a, NULL, &size), CLOPT_SUCCESS);
            bytes = xmalloc(size);
            assert_int_equal(clopt_optimizer_save_to(a, NULL, bytes, size, &written),
                             CLOPT_SUCCESS);
            read_at(f->ctx, (clopt_tensor){pa, 0}, mid, n);
        }
        write_at(f->ctx, (clopt_tensor){ga, 0}, grads[t], n);
        assert_int_equal(clopt_optimizer_step(a, NULL), CLOPT_SUCCESS);
    }
    assert_int_equal(clopt_optimizer_load_from(b, bytes, written), CLOPT_SUCCESS);
    write_at(f->ctx, (clopt_tensor){pb, 0}, mid, n);
    assert_int_equal(clopt_optimizer_step_count(b), 2);
    for (int t = 2; t < 4; t++) {
        write_at(f->ctx, (clopt_tensor){gb, 0}, grads[t], n);
        assert_int_equal(clopt_optimizer_step(b, NULL), CLOPT_SUCCESS);
    }
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    read_at(f->ctx, (clopt_tensor){pa, 0}, x, n);
    read_at(f->ctx, (clopt_tensor){pb, 0}, y, n);
    assert_memory_equal(x, y, n * sizeof(float));
    assert_int_equal(clopt_optimizer_read_state(a, 0, 0, x, n), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_read_state(b, 0, 0, y, n), CLOPT_SUCCESS);
    assert_memory_equal(x, y, n * sizeof(float));
    clopt_optimizer_destroy(a);
    clopt_optimizer_destroy(b);
    clReleaseMemObject(pa);
    clReleaseMemObject(ga);
    clReleaseMemObject(pb);
    clReleaseMemObject(gb);
    for (int t = 0; t < 4; t++)
        free(grads[t]);
    free(bytes);
    free(theta);
    free(mid);
    free(x);
    free(y);
}

/* CLBlast keeps a process-wide cache of its programs, which hold their cl_context: after a
   Muon step, clopt_ctx_destroy clears it, so that the context is freed (an engine that makes
   and destroys contexts grew without bound). The engine's own reference is the last. */
static void test_context_freed(void **state)
{
    fixture *f = *state;
    cl_device_id dev = clopt_ctx_cl_device(f->ctx);
    cl_int err;
    cl_context cc = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    clopt_ctx *c;
    assert_int_equal(clopt_ctx_create_from(cc, dev, NULL, &c), CLOPT_SUCCESS);
    enum { R = 8, C = 12 };
    float p0[R * C], g[R * C];
    for (int i = 0; i < R * C; i++)
        p0[i] = 0.01f * (float)(i % 7), g[i] = 0.1f * (float)((i * 5) % 11) - 0.5f;
    cl_mem pb = upload(c, p0, R * C), gb = upload(c, g, R * C);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_MUON, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(c, CLOPT_MUON, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){pb, 0}, d.grad = (clopt_tensor){gb, 0};
    d.ndim = 2, d.shape[0] = R, d.shape[1] = C;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
    clopt_ctx_destroy(c);
    cl_uint refs = 0;
    assert_int_equal(clGetContextInfo(cc, CL_CONTEXT_REFERENCE_COUNT, sizeof refs, &refs, NULL),
                     CL_SUCCESS);
    assert_int_equal(refs, 1);
    clReleaseContext(cc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_nesterov),
        cmocka_unit_test(test_shapes_plain_momentum_wd),
        cmocka_unit_test(test_maximize_wd),
        cmocka_unit_test(test_arena_group),
        cmocka_unit_test(test_amp_skip),
        cmocka_unit_test(test_bf16_master),
        cmocka_unit_test(test_bf16_state),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_context_freed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
