/* SPDX-License-Identifier: MIT */
/*
 * Optimizer trajectories on two-dimensional test surfaces, computed with clopt's kernels at
 * the optimizer level. Used by the clopt-trajectories example (which draws the figures) and
 * by tests/test_trajectories.c (which replays every path in double precision).
 *
 * A path is the sequence θ_0, θ_1, ..., θ_T of a 2-element parameter tensor (x, y): at each
 * step the host reads θ back, writes the analytic gradient of the surface at θ into the
 * gradient buffer (and, for Sophia, the clamped exact Hessian diagonal into the Hessian
 * buffer), and calls clopt_optimizer_step.
 */
#ifndef CLOPT_TRAJECTORIES_LIB_H
#define CLOPT_TRAJECTORIES_LIB_H

#include "clopt.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum traj_surface {
    TRAJ_ROSENBROCK = 0, /* f = (1-x)² + 100(y-x²)², minimum f(1, 1) = 0 */
    TRAJ_SADDLE,         /* f = x² - y², saddle point at (0, 0), unbounded below along y */
    TRAJ_SURFACE_COUNT
} traj_surface;

/* "rosenbrock", "saddle"; NULL when out of range. */
const char *traj_surface_name(traj_surface s);
/* A formula for figure titles, e.g. "f(x, y) = (1 - x)^2 + 100 (y - x^2)^2". */
const char *traj_surface_formula(traj_surface s);

/* Value, gradient and Hessian diagonal (the exact one, clamped to >= 0 as a Sophia estimate
   must be) of the surface, in double. */
double traj_f(traj_surface s, double x, double y);
void traj_grad(traj_surface s, double x, double y, double g[2]);
void traj_hess_diag(traj_surface s, double x, double y, double h[2]);

/* The common start of every path, and the point to mark as the target (Rosenbrock's
   minimum (1, 1); the saddle point (0, 0)). */
void traj_start(traj_surface s, double xy[2]);
void traj_target(traj_surface s, double xy[2]);

/* The plotting window [xmin, xmax] × [ymin, ymax] of a surface. */
void traj_window(traj_surface s, double win[4]);

/* Hyperparameters and step count of `rule` on surface `s`, from the table in
   trajectories_lib.c: clopt_hparams_default(rule) with the table's changes. Returns
   CLOPT_ERR_INVALID_ARGUMENT for a rule or surface out of range. */
clopt_status traj_setup(clopt_rule rule, traj_surface s, clopt_hparams *hp, unsigned *steps);

/* A short description of the table's choice for the legend, e.g. "lr 0.002" or
   "lr 0.02, wd 0.01". Never NULL; a static buffer, overwritten by the next call. */
const char *traj_setup_label(clopt_rule rule, traj_surface s);

/*
 * Run `steps` steps of `rule` with hyperparameters `hp` on surface `s` from traj_start(s)
 * through clopt's optimizer level on ctx. xy receives 2*(steps+1) values: θ_0 (the start,
 * as float32) and θ_t after each step t, as read back from the device. For Sophia the
 * Hessian diagonal at θ_{t-1} is written into the Hessian buffer before every step t; the
 * optimizer folds it in after steps that are multiples of hp->hess_interval.
 */
clopt_status traj_run(clopt_ctx *ctx, clopt_rule rule, traj_surface s, const clopt_hparams *hp,
                      unsigned steps, double *xy);
/* The same with θ stored as param_dtype (CLOPT_DTYPE_F32, F16 or BF16; the 16-bit start is
   traj_start rounded to nearest): the group's hp->master and hp->stochastic_rounding choose
   how updates reach it; xy receives θ's stored values. */
clopt_status traj_run_typed(clopt_ctx *ctx, clopt_rule rule, traj_surface s,
                            const clopt_hparams *hp, unsigned steps, double *xy,
                            clopt_dtype param_dtype);

#ifdef __cplusplus
}
#endif
#endif /* CLOPT_TRAJECTORIES_LIB_H */
