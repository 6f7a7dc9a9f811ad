/* SPDX-License-Identifier: MIT */
/* The paths drawn by examples/clopt-trajectories (every rule on Rosenbrock's valley and on a
 * saddle, through the optimizer level, float32 on the device) against an independent scalar
 * replay in double: the surfaces' gradients and Hessians are written again here; the
 * element-wise rules step with tests/ref (ref_step); Adafactor (1-D tensor: unfactored second
 * moment), LAMB and Ranger (RAdam + Lookahead; gradient centralization is a no-op in 1-D)
 * with the equations of tests/data/golden/{adafactor,lamb,ranger}/meta.json, written out
 * below.
 *
 * Tolerance of a final point (see check_surface): max(floor, K·spread), where
 *  - floor = 2e-4·max(1, |θ_T|). In a well-conditioned path the device differs from the
 *    double replay only by float32 storage of θ, g and the state (2^-24 relative per step)
 *    and by hyperparameters sent as float32 (e.g. (1-β2) off by ~2e-5 relative, AdamW's
 *    decay 1 - lr·wd rounded to float: lr·wd off by ~1e-4); over the 3000 steps of a path,
 *    without amplification, that stays below ~2e-4 relative. Measured on PoCL: <= 1e-5.
 *  - spread: how far the replay's own final point moves under perturbations of that size,
 *    measured with the replay itself: θ, g and state stored as float32 after each step; the
 *    same with float32 hyperparameters; the start moved by 2^-23 in x; in y. The largest
 *    distance from the exact replay over the last 10% of the steps is the spread; K = 4.
 *    This is what makes the ill-conditioned paths checkable: Adadelta, RMSprop, NAdam,
 *    Adafactor and LAMB bounce across Rosenbrock's narrow valley and amplify a 1e-7
 *    difference to 1e-3 .. 1e-1 within a few hundred steps; Lion's sign decisions flip where
 *    β1·m + (1-β1)·g is near 0 (each flip moves the path by 2·lr) and it ends in a limit
 *    cycle around the minimum. The float32-storage replay goes through the same flips and
 *    the same divergence (on PoCL it follows the device's Lion path to 1e-7), and the
 *    device's distance from the exact replay is at most 1.0x the spread there.
 *    A well-conditioned path has a spread far below the floor, so there the floor decides:
 *    changing lr by 5% in the replay fails every rule that has an lr on at least one of the
 *    two surfaces (the saddle's paths are all well-conditioned), as does 2% on β1.
 *
 * Set TRAJ_VERBOSE=1 to print, per rule and surface, the final points, distance, spread and
 * tolerance. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clopt.h"
#include "ref.h"
#include "trajectories_lib.h"

/* ------------------------------------------------------------------------------------ */
/* The surfaces, written independently of trajectories_lib.c                            */
/* ------------------------------------------------------------------------------------ */

static void surface_grad(traj_surface s, const double p[2], double g[2])
{
    const double x = p[0], y = p[1];
    if (s == TRAJ_ROSENBROCK) {
        /* d/dx [(1-x)^2 + 100 (y-x^2)^2] = 2(x-1) + 400 x (x^2-y); d/dy = 200 (y-x^2) */
        g[0] = 2.0 * (x - 1.0) + 400.0 * x * (x * x - y);
        g[1] = 200.0 * (y - x * x);
    } else {
        g[0] = 2.0 * x;
        g[1] = -2.0 * y;
    }
}

/* Diagonal of the Hessian, clamped at 0 (Sophia's estimate). */
static void surface_hess(traj_surface s, const double p[2], double h[2])
{
    if (s == TRAJ_ROSENBROCK) {
        h[0] = fmax(0.0, 2.0 + 1200.0 * p[0] * p[0] - 400.0 * p[1]);
        h[1] = 200.0;
    } else {
        h[0] = 2.0;
        h[1] = 0.0; /* -2 clamped */
    }
}

/* ------------------------------------------------------------------------------------ */
/* Replays                                                                               */
/* ------------------------------------------------------------------------------------ */

static double rms2(const double a[2]) { return sqrt(0.5 * (a[0] * a[0] + a[1] * a[1])); }

/* Adafactor, 1-D tensor (unfactored second moment), from the golden case's equations:
   ρ_t = relative_step ? min(warmup_init ? 1e-6 t : 1e-2, 1/sqrt(t)) : lr;
   α_t = scale_parameter ? max(eps2, RMS(θ_{t-1}))·ρ_t : ρ_t; β2t = 1 - t^decay_rate;
   V = β2t V + (1-β2t)(g² + eps1); u = g/sqrt(V); u /= max(1, RMS(u)/clip_threshold); u *= α_t;
   use_beta1: M = β1 M + (1-β1) u, u = M; θ -= weight_decay·α_t·θ; θ -= u. */
static void adafactor_step(const clopt_hparams *hp, unsigned t, double th[2], const double g[2],
                           double V[2], double M[2])
{
    const double td = (double)t;
    double rho = hp->lr;
    if (hp->relative_step)
        rho = fmin(hp->warmup_init ? 1e-6 * td : 1e-2, 1.0 / sqrt(td));
    const double alpha = hp->scale_parameter ? fmax(hp->eps2, rms2(th)) * rho : rho;
    const double b2t = 1.0 - pow(td, hp->decay_rate);
    double u[2];
    for (int i = 0; i < 2; i++) {
        V[i] = b2t * V[i] + (1.0 - b2t) * (g[i] * g[i] + hp->eps);
        u[i] = g[i] / sqrt(V[i]);
    }
    const double clip = fmax(1.0, rms2(u) / hp->clip_threshold);
    for (int i = 0; i < 2; i++) {
        u[i] = u[i] / clip * alpha;
        if (hp->use_beta1) {
            M[i] = hp->beta1 * M[i] + (1.0 - hp->beta1) * u[i];
            u[i] = M[i];
        }
    }
    for (int i = 0; i < 2; i++) {
        if (hp->weight_decay != 0.0)
            th[i] -= hp->weight_decay * alpha * th[i];
        th[i] -= u[i];
    }
}

/* LAMB (Algorithm 2), from the golden case's equations: m, v EMAs (m = β1 m + g without
   grad_averaging); bias correction optional; r = m̂/(sqrt(v̂)+eps) + wd·θ;
   trust = ‖θ‖/‖r‖ (1 when either is 0); θ -= lr·trust·r. */
static void lamb_step(const clopt_hparams *hp, unsigned t, double th[2], const double g[2],
                      double m[2], double v[2])
{
    const double b1 = hp->beta1, b2 = hp->beta2;
    const double bc1 = hp->bias_correction ? 1.0 - pow(b1, t) : 1.0;
    const double bc2 = hp->bias_correction ? 1.0 - pow(b2, t) : 1.0;
    double r[2], wn = 0.0, rn = 0.0;
    for (int i = 0; i < 2; i++) {
        m[i] = b1 * m[i] + (hp->grad_averaging ? 1.0 - b1 : 1.0) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        r[i] = (m[i] / bc1) / (sqrt(v[i] / bc2) + hp->eps) + hp->weight_decay * th[i];
        wn += th[i] * th[i];
        rn += r[i] * r[i];
    }
    wn = sqrt(wn);
    rn = sqrt(rn);
    const double trust = wn > 0.0 && rn > 0.0 ? wn / rn : 1.0;
    for (int i = 0; i < 2; i++)
        th[i] -= hp->lr * trust * r[i];
}

/* Ranger 20.4.11, from the golden case's equations (gradient centralization is a no-op for
   a 1-D tensor): m, v EMAs; ρ∞ = 2/(1-β2) - 1, ρ_t = ρ∞ - 2tβ2^t/(1-β2^t); rectified when
   ρ_t > n_sma_threshold with step = sqrt((1-β2^t)(ρ_t-4)/(ρ∞-4)(ρ_t-2)/ρ_t·ρ∞/(ρ∞-2))/(1-β1^t)
   and θ -= step·lr·m/(sqrt(v)+eps), else θ -= lr·m/(1-β1^t); decoupled decay θ -= wd·lr·θ
   first; every lookahead_k-th step φ += α(θ - φ), θ = φ (φ_0 = θ_0). */
static void ranger_step(const clopt_hparams *hp, unsigned t, double th[2], const double g[2],
                        double m[2], double v[2], double phi[2])
{
    const double b1 = hp->beta1, b2 = hp->beta2, td = (double)t;
    const double bc1 = 1.0 - pow(b1, td), bc2 = 1.0 - pow(b2, td);
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * td * pow(b2, td) / bc2;
    const int rect = rho_t > hp->n_sma_threshold;
    const double step = rect ? sqrt(bc2 * (rho_t - 4.0) / (rho_inf - 4.0) * (rho_t - 2.0) /
                                    rho_t * rho_inf / (rho_inf - 2.0)) / bc1
                             : 1.0 / bc1;
    for (int i = 0; i < 2; i++) {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        if (hp->weight_decay != 0.0)
            th[i] -= hp->weight_decay * hp->lr * th[i];
        if (rect)
            th[i] -= step * hp->lr * m[i] / (sqrt(v[i]) + hp->eps);
        else
            th[i] -= step * hp->lr * m[i];
    }
    if (hp->lookahead_k && t % hp->lookahead_k == 0)
        for (int i = 0; i < 2; i++) {
            phi[i] += hp->lookahead_alpha * (th[i] - phi[i]);
            th[i] = phi[i];
        }
}

/* Variants of the replay, to measure how sensitive a path is to rounding (see the top of the
   file): EXACT is the reference; F32 stores θ, the gradient and every state value as float32
   after each step, as the device does; F32_HP also rounds the hyperparameters to float32;
   PX and PY start from a point moved by 2^-23 (relative) in x or in y. */
enum { EXACT, F32, F32_HP, PX, PY, NVARIANTS };

/* Rounding to float32, through a volatile: GCC 12.2 at -O2 drops the (double)(float) round
   trip in the loop below that rounds θ and the state (wrong code from its SLP vectorizer,
   reproduced in a 20-line reduction; -fno-tree-slp-vectorize or -O1 keep it). */
static double f32(double x)
{
    volatile float f = (float)x;
    return f;
}

/* The whole path in double from traj_start; path receives 2*(steps+1) values. The gradient
   is taken at the replay's own θ; Sophia's Hessian estimate is the clamped exact diagonal at
   θ_{t-1}, folded in after every hess_interval-th step (as the optimizer level does). */
static void replay(clopt_rule rule, traj_surface s, const clopt_hparams *hp, unsigned steps,
                   int variant, double *path)
{
    double th[2];
    traj_start(s, th);
    if (variant == PX)
        th[0] *= 1.0 + 0x1p-23;
    if (variant == PY)
        th[1] *= 1.0 + 0x1p-23;
    const int store32 = variant == F32 || variant == F32_HP;
    clopt_hparams hq = *hp;
    if (variant == F32_HP) {
        hq.lr = f32(hq.lr);
        hq.beta1 = f32(hq.beta1);
        hq.beta2 = f32(hq.beta2);
        hq.beta3 = f32(hq.beta3);
        hq.eps = f32(hq.eps);
        hq.alpha = f32(hq.alpha);
        hq.rho = f32(hq.rho);
        hq.momentum = f32(hq.momentum);
        hq.weight_decay = f32(hq.weight_decay);
    }
    hp = &hq;
    if (store32) {
        th[0] = f32(th[0]);
        th[1] = f32(th[1]);
    }
    double phi[2] = {th[0], th[1]};
    double st[CLOPT_MAX_STATE][2];
    double *state[CLOPT_MAX_STATE] = {st[0], st[1], st[2], st[3]};
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
        st[k][0] = st[k][1] = rule < CLOPT_ADAFACTOR && k < ref_state_count(rule, hp)
                                  ? ref_state_init(rule, hp, k)
                                  : 0.0;
    double mu_product = 1.0;
    path[0] = th[0];
    path[1] = th[1];
    for (unsigned t = 1; t <= steps; t++) {
        double g[2], h[2];
        surface_grad(s, th, g);
        if (store32) {
            g[0] = f32(g[0]);
            g[1] = f32(g[1]);
        }
        if (rule == CLOPT_ADAFACTOR) {
            adafactor_step(hp, t, th, g, st[0], st[1]);
        } else if (rule == CLOPT_LAMB) {
            lamb_step(hp, t, th, g, st[0], st[1]);
        } else if (rule == CLOPT_RANGER) {
            ranger_step(hp, t, th, g, st[0], st[1], phi);
        } else {
            const int fold = rule == CLOPT_SOPHIA && t % hp->hess_interval == 0;
            if (fold)
                surface_hess(s, th, h);
            ref_step(rule, hp, t, 2, th, g, state, fold ? h : NULL, &mu_product, 1.0);
        }
        if (store32)
            for (int i = 0; i < 2; i++) {
                th[i] = f32(th[i]);
                phi[i] = f32(phi[i]);
                for (int k = 0; k < CLOPT_MAX_STATE; k++)
                    st[k][i] = f32(st[k][i]);
            }
        path[2 * t] = th[0];
        path[2 * t + 1] = th[1];
    }
}

/* ------------------------------------------------------------------------------------ */
/* Tests                                                                                 */
/* ------------------------------------------------------------------------------------ */

static clopt_ctx *ctx;
static int verbose;

static int setup(void **state)
{
    (void)state;
    const char *v = getenv("TRAJ_VERBOSE");
    verbose = v && *v && *v != '0';
    return clopt_ctx_create(&ctx) == CLOPT_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    clopt_ctx_destroy(ctx);
    return 0;
}

/* The table covers every rule, its settings validate, and the surfaces' gradients and
   Hessians in the library agree with the ones written here. */
static void test_table_and_surfaces(void **state)
{
    (void)state;
    for (int r = 0; r < CLOPT_RULE_COUNT; r++)
        for (int s = 0; s < TRAJ_SURFACE_COUNT; s++) {
            clopt_hparams hp;
            unsigned steps = 0;
            assert_int_equal(traj_setup((clopt_rule)r, (traj_surface)s, &hp, &steps),
                             CLOPT_SUCCESS);
            assert_true(steps > 0);
            assert_int_equal(clopt_hparams_validate((clopt_rule)r, &hp, NULL), CLOPT_SUCCESS);
        }
    clopt_hparams hp;
    unsigned steps;
    assert_int_equal(traj_setup(CLOPT_RULE_COUNT, TRAJ_ROSENBROCK, &hp, &steps),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(traj_setup(CLOPT_ADAM, TRAJ_SURFACE_COUNT, &hp, &steps),
                     CLOPT_ERR_INVALID_ARGUMENT);
    static const double pts[][2] = {{-1.5, 2.0}, {1.0, 1.0}, {0.3, -0.7}, {-1.0, 1e-3}, {2, 3}};
    for (int s = 0; s < TRAJ_SURFACE_COUNT; s++)
        for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
            double a[2], b[2], ha[2], hb[2];
            traj_grad((traj_surface)s, pts[i][0], pts[i][1], a);
            surface_grad((traj_surface)s, pts[i], b);
            assert_float_equal(a[0], b[0], 1e-12 * (1.0 + fabs(b[0])));
            assert_float_equal(a[1], b[1], 1e-12 * (1.0 + fabs(b[1])));
            traj_hess_diag((traj_surface)s, pts[i][0], pts[i][1], ha);
            surface_hess((traj_surface)s, pts[i], hb);
            assert_float_equal(ha[0], hb[0], 1e-12 * (1.0 + fabs(hb[0])));
            assert_float_equal(ha[1], hb[1], 1e-12 * (1.0 + fabs(hb[1])));
            /* and the gradient against central differences of traj_f */
            const double e = 1e-6;
            const double fx = (traj_f((traj_surface)s, pts[i][0] + e, pts[i][1]) -
                               traj_f((traj_surface)s, pts[i][0] - e, pts[i][1])) / (2 * e);
            const double fy = (traj_f((traj_surface)s, pts[i][0], pts[i][1] + e) -
                               traj_f((traj_surface)s, pts[i][0], pts[i][1] - e)) / (2 * e);
            assert_float_equal(fx, b[0], 1e-5 * (1.0 + fabs(b[0])));
            assert_float_equal(fy, b[1], 1e-5 * (1.0 + fabs(b[1])));
        }
}

enum { TOL_K = 4 };
static const double TOL_FLOOR = 2e-4;

static void check_surface(traj_surface s)
{
    int failures = 0;
    for (int r = 0; r < CLOPT_RULE_COUNT; r++) {
        const clopt_rule rule = (clopt_rule)r;
        clopt_hparams hp;
        unsigned steps;
        assert_int_equal(traj_setup(rule, s, &hp, &steps), CLOPT_SUCCESS);
        const size_t len = 2 * ((size_t)steps + 1);
        double *dev = malloc(sizeof(double) * len);
        double *ref = malloc(sizeof(double) * len);
        double *alt = malloc(sizeof(double) * len);
        assert_non_null(dev);
        assert_non_null(ref);
        assert_non_null(alt);
        clopt_status st = traj_run(ctx, rule, s, &hp, steps, dev);
        if (st != CLOPT_SUCCESS)
            fail_msg("%s on %s: %s (%s)", clopt_rule_name(rule), traj_surface_name(s),
                     clopt_status_str(st), clopt_ctx_last_error(ctx));
        /* the device path starts at the start, as float32 */
        double start[2];
        traj_start(s, start);
        assert_true(dev[0] == (double)(float)start[0] && dev[1] == (double)(float)start[1]);

        replay(rule, s, &hp, steps, EXACT, ref);
        const unsigned from = steps - steps / 10;
        double spread = 0.0;
        for (int v = EXACT + 1; v < NVARIANTS; v++) {
            replay(rule, s, &hp, steps, v, alt);
            for (unsigned t = from; t <= steps; t++)
                spread = fmax(spread, hypot(alt[2 * t] - ref[2 * t], alt[2 * t + 1] - ref[2 * t + 1]));
        }
        const double *a = dev + 2 * steps, *b = ref + 2 * steps;
        const double d = hypot(a[0] - b[0], a[1] - b[1]);
        const double tol_floor = TOL_FLOOR * fmax(1.0, hypot(b[0], b[1]));
        const double tol = fmax(tol_floor, TOL_K * spread);
        const int ok = isfinite(a[0]) && isfinite(a[1]) && d <= tol;
        if (verbose || !ok)
            printf("  %-10s %-10s device (%+.7f, %+.7f) replay (%+.7f, %+.7f) |d| %.2e "
                   "spread %.2e floor %.2e tol %.2e%s\n",
                   traj_surface_name(s), clopt_rule_name(rule), a[0], a[1], b[0], b[1], d,
                   spread, tol_floor, tol, ok ? "" : "  FAILED");
        failures += !ok;
        free(dev);
        free(ref);
        free(alt);
    }
    assert_int_equal(failures, 0);
}

static void test_rosenbrock(void **state)
{
    (void)state;
    check_surface(TRAJ_ROSENBROCK);
}

static void test_saddle(void **state)
{
    (void)state;
    check_surface(TRAJ_SADDLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_and_surfaces),
        cmocka_unit_test(test_rosenbrock),
        cmocka_unit_test(test_saddle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
