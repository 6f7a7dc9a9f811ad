/* SPDX-License-Identifier: MIT */
/* The paths drawn by examples/clopt-trajectories (every rule on Rosenbrock's valley and on a
 * saddle, through the optimizer level, float32 on the device) against an independent scalar
 * replay in double: the surfaces' gradients and Hessians are written again here; the
 * element-wise rules step with tests/ref (ref_step); Adafactor (1-D tensor: unfactored second
 * moment), LAMB and Ranger (RAdam + Lookahead; gradient centralization is a no-op in 1-D)
 * through tests/ref's ref_adafactor_step, ref_lamb_step and ref_ranger_step (the equations of
 * tests/data/golden/{adafactor,lamb,ranger}/meta.json); the rules of 2024-2025 through
 * tests/ref/ref_modern.c, Muon (θ as a 1×2 matrix) through muon_row_step below.
 *
 * Two checks per rule and surface (check_surface):
 *
 * 1. Per step, the whole path: the replay driven by the device's own path (replay_forced).
 *    Step t starts from the device's θ_{t-1} and takes the gradient (and Sophia's estimate)
 *    there, rounded to float32 as the device got them; only the replay's state is its own
 *    (a function of those inputs). So nothing chaotic can amplify a difference: the valley's
 *    sensitivity acts on θ, and θ is the device's at every step. Tolerance per coordinate:
 *        ε|θ_t| + TOL_STEP_REL·|Δ_t| + TOL_K·s_t + 2^-126 (+ 2·lr at a sign near-tie),
 *    ε = 2^-23: the float32 store of θ_t; |Δ_t| the replay's step (float32 arithmetic and
 *    hyperparameters, e.g. (1-β2) 1.3e-5 off for β2 = 0.999, give a relative error of the
 *    step up to ~1e-5 .. 1e-4); s_t the distance between this double replay and the same
 *    replay with float32 state and hyperparameters (max over t ± SENS_WINDOW): the
 *    conditioning of the step itself, large where a momentum is a small difference of large
 *    gradients (Sophia's m in the valley: up to 6e-3 of the step); 2^-126: subnormals may be
 *    flushed. Lion's and Sophia's sign decisions within TIE_MARGIN of 0 may flip (2·lr); none
 *    occur on these paths. Every rule is within 0.8 of this tolerance on PoCL, and a wrong
 *    reference fails it by 10^2 .. 10^7 (see below).
 *
 * 2. The free-running path up to its horizon. The device's path against the independent
 *    double replay from the start, at every step up to the horizon: the last step before
 *    which the replay's own sensitivity stays small, TOL_K·spread_t <= floor_t, with
 *    floor_t = 2e-4·max(1, |θ_t|) and spread_t the largest distance from the exact replay
 *    of the same replay with θ, g and the state stored as float32 after each step, with
 *    float32 hyperparameters, or started 2^-23 (relative) off in x or in y. Adadelta,
 *    RMSprop, NAdam, Lion, Sophia, Adafactor and LAMB bounce across Rosenbrock's narrow
 *    valley and amplify a 1e-7 difference to 1e-3 .. 1e-1 (that is why the old end-point
 *    tolerances grew to 0.16 .. 0.40): their horizons are 32 .. 2440 of 3000 steps; the other
 *    paths are checked to the end point with the floor (a 5% change of lr fails it). The
 *    horizon must be at least MIN_HORIZON steps.
 *
 * Breaking tests/ref shows that both can fail: NAdam without the bias correction of v,
 * Adam/AdamW without 1/bc1, Adam with eps inside the root, Adadelta with eps outside the
 * roots, RMSprop with eps inside the root, Lion with the wrong sign or β2 in place of β1,
 * Adafactor without the eps2 floor of RMS(θ), Ranger rectifying one step early: each fails
 * the per-step check of the rule (102 .. 10^7 times its tolerance).
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
#include "ref_modern.h"
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

/* The hyperparameters as the kernels get them (float32). */
static void hparams_f32(clopt_hparams *hp)
{
    hp->lr = f32(hp->lr);
    hp->beta1 = f32(hp->beta1);
    hp->beta2 = f32(hp->beta2);
    hp->beta3 = f32(hp->beta3);
    hp->eps = f32(hp->eps);
    hp->alpha = f32(hp->alpha);
    hp->rho = f32(hp->rho);
    hp->momentum = f32(hp->momentum);
    hp->weight_decay = f32(hp->weight_decay);
}

/* Fresh replay state: the rule's initial values; Ranger's slow weights φ_0 = θ_0. */
static void state_init(clopt_rule rule, const clopt_hparams *hp, const double th[2],
                       double st[CLOPT_MAX_STATE][2])
{
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
        st[k][0] = st[k][1] = rule < CLOPT_ADAFACTOR && k < ref_state_count(rule, hp)
                                  ? ref_state_init(rule, hp, k)
                                  : 0.0;
    if (rule == CLOPT_RANGER) {
        st[2][0] = th[0];
        st[2][1] = th[1];
    }
}

/* One step t of rule at θ = th (updated) with gradient g, through tests/ref. Sophia's
   Hessian estimate is the clamped exact diagonal at θ_{t-1}, folded in after every
   hess_interval-th step (as the optimizer level does), rounded to float32 when in32 (what
   the device is given). */
/* Muon on θ as a 1×2 matrix, in double from the equations of tests/data/golden/muon: the
   Gram matrix X·Xᵀ is the 1×1 ‖X‖², so each Newton-Schulz iteration multiplies X by
   a + b‖X‖² + c‖X‖⁴; the shape scale sqrt(max(1, rows/cols)) is 1. */
static void muon_row_step(const clopt_hparams *hp, double th[2], const double g[2], double *b)
{
    const double mu = hp->momentum;
    double u[2], nrm = 0.0;
    for (int i = 0; i < 2; i++) {
        b[i] = b[i] + (1.0 - mu) * (g[i] - b[i]);
        u[i] = hp->nesterov ? g[i] + mu * (b[i] - g[i]) : b[i];
        nrm += u[i] * u[i];
    }
    nrm = sqrt(nrm);
    double x[2] = {u[0] / (nrm + 1e-7), u[1] / (nrm + 1e-7)};
    for (unsigned k = 0; k < hp->ns_steps; k++) {
        const double a2 = x[0] * x[0] + x[1] * x[1];
        const double c = 3.4445 - 4.7750 * a2 + 2.0315 * a2 * a2;
        x[0] *= c, x[1] *= c;
    }
    for (int i = 0; i < 2; i++)
        th[i] = th[i] - hp->lr * hp->weight_decay * th[i] - hp->lr * x[i];
}

static void rule_step(clopt_rule rule, const clopt_hparams *hp, unsigned t, traj_surface s,
                      double th[2], const double g[2], double *state[CLOPT_MAX_STATE],
                      double *mu_product, ref_sf_scalars *sf, int in32)
{
    if (rule == CLOPT_SCHEDULE_FREE_ADAMW) {
        ref_sf_adamw_step(hp, t, 2, th, g, state, sf, 1.0);
    } else if (rule == CLOPT_SCHEDULE_FREE_SGD) {
        ref_sf_sgd_step(hp, t, 2, th, g, state, sf, 1.0);
    } else if (rule == CLOPT_ADOPT) {
        ref_adopt_step(hp, t, 2, th, g, state, 1.0);
    } else if (rule == CLOPT_ADEMAMIX) {
        ref_ademamix_step(hp, t, 2, th, g, state, 1.0);
    } else if (rule == CLOPT_STABLE_ADAMW) {
        ref_stable_adamw_step(hp, t, 2, th, g, state, 1.0);
    } else if (rule == CLOPT_MUON) {
        muon_row_step(hp, th, g, state[0]);
    } else if (rule == CLOPT_ADAFACTOR) {
        ref_adafactor_step(hp, t, 1, 0, 0, 2, th, g, state, 1.0);
    } else if (rule == CLOPT_LAMB) {
        ref_lamb_step(hp, t, 2, th, g, state, 1.0);
    } else if (rule == CLOPT_RANGER) {
        ref_ranger_step(hp, t, 2, th, g, state, 1.0);
    } else {
        double h[2];
        const int fold = rule == CLOPT_SOPHIA && t % hp->hess_interval == 0;
        if (fold) {
            surface_hess(s, th, h);
            if (in32)
                h[0] = f32(h[0]), h[1] = f32(h[1]);
        }
        ref_step(rule, hp, t, 2, th, g, state, fold ? h : NULL, mu_product, 1.0);
    }
}

/* The whole path in double from traj_start; path receives 2*(steps+1) values. The gradient
   is taken at the replay's own θ. */
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
    if (variant == F32_HP)
        hparams_f32(&hq);
    hp = &hq;
    if (store32) {
        th[0] = f32(th[0]);
        th[1] = f32(th[1]);
    }
    double st[CLOPT_MAX_STATE][2];
    double *state[CLOPT_MAX_STATE] = {st[0], st[1], st[2], st[3]};
    state_init(rule, hp, th, st);
    double mu_product = 1.0;
    ref_sf_scalars sf;
    ref_sf_init(&sf);
    path[0] = th[0];
    path[1] = th[1];
    for (unsigned t = 1; t <= steps; t++) {
        double g[2];
        surface_grad(s, th, g);
        if (store32) {
            g[0] = f32(g[0]);
            g[1] = f32(g[1]);
        }
        rule_step(rule, hp, t, s, th, g, state, &mu_product, &sf, store32);
        if (store32)
            for (int i = 0; i < 2; i++) {
                th[i] = f32(th[i]);
                for (int k = 0; k < CLOPT_MAX_STATE; k++)
                    st[k][i] = f32(st[k][i]);
            }
        path[2 * t] = th[0];
        path[2 * t + 1] = th[1];
    }
}

/* The per-step check (see the top of the file): the replay driven by the device's own path.
   Step t starts from the device's θ_{t-1} (float32), takes the gradient (and Sophia's
   estimate) there, rounded to float32 as the device was given them, and advances the
   replay's own double state; forced receives θ_t^ref (2*(steps+1) values) and step the
   replay's |Δ_t| = |θ_{t-1} - θ_t^ref| per coordinate. tie (may hold 0) receives, per step
   and coordinate, 1 where a sign decision of Lion or Sophia was a near-tie: the decided
   quantity within TIE_MARGIN (relative) of 0, where float32 and double may take different
   signs. */
#define TIE_MARGIN 1e-4
static void replay_forced(clopt_rule rule, traj_surface s, const clopt_hparams *hp0,
                          unsigned steps, const double *dev, int store32, double *forced,
                          double *step, unsigned char *tie)
{
    clopt_hparams hq = *hp0;
    if (store32)
        hparams_f32(&hq);
    const clopt_hparams *hp = &hq;
    double st[CLOPT_MAX_STATE][2];
    double *state[CLOPT_MAX_STATE] = {st[0], st[1], st[2], st[3]};
    state_init(rule, hp, dev, st);
    double mu_product = 1.0;
    ref_sf_scalars sf;
    ref_sf_init(&sf);
    forced[0] = dev[0];
    forced[1] = dev[1];
    step[0] = step[1] = 0.0;
    tie[0] = tie[1] = 0;
    for (unsigned t = 1; t <= steps; t++) {
        double th[2] = {dev[2 * (t - 1)], dev[2 * (t - 1) + 1]}, g[2];
        surface_grad(s, th, g);
        g[0] = f32(g[0]);
        g[1] = f32(g[1]);
        for (int i = 0; i < 2; i++) {
            double a = 0.0, b = 1.0; /* the decided quantity a, its scale b */
            if (rule == CLOPT_LION) { /* sign(β1 m + (1-β1) g) */
                a = hp->beta1 * st[0][i] + (1.0 - hp->beta1) * g[i];
                b = hp->beta1 * fabs(st[0][i]) + (1.0 - hp->beta1) * fabs(g[i]);
            } else if (rule == CLOPT_SOPHIA) { /* sign(m) min(|m|/(γh + eps), 1) */
                a = hp->beta1 * st[0][i] + (1.0 - hp->beta1) * g[i];
                b = hp->beta1 * fabs(st[0][i]) + (1.0 - hp->beta1) * fabs(g[i]);
            }
            tie[2 * t + i] = (rule == CLOPT_LION || rule == CLOPT_SOPHIA) && fabs(a) <= TIE_MARGIN * b;
        }
        rule_step(rule, hp, t, s, th, g, state, &mu_product, &sf, 1);
        if (store32)
            for (int k = 0; k < CLOPT_MAX_STATE; k++)
                st[k][0] = f32(st[k][0]), st[k][1] = f32(st[k][1]);
        for (int i = 0; i < 2; i++) {
            forced[2 * t + i] = th[i];
            step[2 * t + i] = fabs(dev[2 * (t - 1) + i] - th[i]);
        }
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

#define TOL_STEP_REL 1e-5
#define MIN_HORIZON 30
#define SENS_WINDOW 2
enum { TOL_K = 4 };
static const double TOL_FLOOR = 2e-4;
static const double EPS32 = 0x1p-23; /* FLT_EPSILON */
static const double TOL_STEP = TOL_STEP_REL;

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
        double *spread = calloc(steps + 1, sizeof(double));
        double *dstep = malloc(sizeof(double) * len);
        unsigned char *tie = malloc(len);
        double *sens = malloc(sizeof(double) * len);
        assert_true(dev && ref && alt && spread && dstep && tie && sens);
        clopt_status st = traj_run(ctx, rule, s, &hp, steps, dev);
        if (st != CLOPT_SUCCESS)
            fail_msg("%s on %s: %s (%s)", clopt_rule_name(rule), traj_surface_name(s),
                     clopt_status_str(st), clopt_ctx_last_error(ctx));
        /* the device path starts at the start, as float32 */
        double start[2];
        traj_start(s, start);
        assert_true(dev[0] == (double)(float)start[0] && dev[1] == (double)(float)start[1]);

        /* 1. The free-running replay up to the horizon. */
        replay(rule, s, &hp, steps, EXACT, ref);
        for (int v = EXACT + 1; v < NVARIANTS; v++) {
            replay(rule, s, &hp, steps, v, alt);
            for (unsigned t = 0; t <= steps; t++)
                spread[t] = fmax(spread[t], hypot(alt[2 * t] - ref[2 * t],
                                                  alt[2 * t + 1] - ref[2 * t + 1]));
        }
        unsigned horizon = 0;
        double dmax = 0.0, dmax_tol = 1.0;
        int free_ok = 1;
        for (unsigned t = 1; t <= steps; t++) {
            const double *a = dev + 2 * t, *b = ref + 2 * t;
            const double tol = TOL_FLOOR * fmax(1.0, hypot(b[0], b[1]));
            if (TOL_K * spread[t] > tol)
                break;
            horizon = t;
            const double d = hypot(a[0] - b[0], a[1] - b[1]);
            if (!(d <= tol))
                free_ok = 0;
            if (!(d / tol <= dmax / dmax_tol))
                dmax = d, dmax_tol = tol;
        }
        if (horizon < MIN_HORIZON)
            free_ok = 0;

        /* 2. The per-step check of the whole path. */
        replay_forced(rule, s, &hp, steps, dev, 1, ref, dstep, tie);
        for (size_t k = 0; k < len; k++)
            sens[k] = ref[k];
        replay_forced(rule, s, &hp, steps, dev, 0, alt, dstep, tie);
        for (size_t k = 0; k < len; k++)
            sens[k] = fabs(sens[k] - alt[k]);
        double worst = 0.0, worst_rel = 0.0;
        unsigned worst_t = 0, nties = 0;
        for (unsigned t = 1; t <= steps; t++)
            for (int i = 0; i < 2; i++) {
                const double a = dev[2 * t + i], b = alt[2 * t + i];
                double sw = 0.0; /* the float32 replay's distance, over t ± SENS_WINDOW */
                for (unsigned u = t > SENS_WINDOW ? t - SENS_WINDOW : 1;
                     u <= t + SENS_WINDOW && u <= steps; u++)
                    sw = fmax(sw, sens[2 * u + i]);
                const double tol = EPS32 * fabs(b) + TOL_STEP * dstep[2 * t + i] + TOL_K * sw +
                                   0x1p-126 +
                                   (tie[2 * t + i] ? 2.0 * hp.lr * (1.0 + TOL_STEP) : 0.0);
                nties += tie[2 * t + i];
                const double e = fabs(a - b);
                const double q = !isfinite(a)  ? INFINITY
                                 : tol > 0.0   ? e / tol
                                 : e > 0.0     ? INFINITY
                                               : 0.0;
                if (!(q <= worst)) {
                    worst = q;
                    worst_t = t;
                }
                const double rel = dstep[2 * t + i] > 0.0
                                       ? fmax(0.0, e - EPS32 * fabs(b)) / dstep[2 * t + i]
                                       : 0.0;
                if (!tie[2 * t + i])
                    worst_rel = fmax(worst_rel, rel);
            }
        const int step_ok = worst <= 1.0;
        const int ok = free_ok && step_ok;
        if (verbose || !ok)
            printf("  %-10s %-10s free: horizon %4u/%u max|d| %.2e (tol %.2e)%s; per step: "
                   "worst %.3f of tol at t=%u, |rel step err| %.2e, ties %u%s\n",
                   traj_surface_name(s), clopt_rule_name(rule), horizon, steps, dmax, dmax_tol,
                   free_ok ? "" : " FAILED", worst, worst_t, worst_rel, nties,
                   step_ok ? "" : " FAILED");
        failures += !ok;
        free(dev);
        free(ref);
        free(alt);
        free(spread);
        free(dstep);
        free(tie);
        free(sens);
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
