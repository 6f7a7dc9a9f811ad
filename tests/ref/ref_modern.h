/* SPDX-License-Identifier: MIT */
/*
 * Double-precision references of the rules of 2024-2025 (issue 15), written from the
 * equations of tests/data/golden/{schedule_free_adamw, schedule_free_sgd, adopt, ademamix,
 * cautious_adamw, stable_adamw}/meta.json and tests/data/golden/README.md ("Newer rules"),
 * not from the kernels. Nothing here calls into libclopt except clopt_hparams (a struct).
 *
 * Conventions as ref_step (ref.h): one step t (>= 1) over n elements in place; the rule
 * sees g = grad/grad_scale (grad_scale 0 = 1), negated when hp->maximize where the rule has
 * maximize (ADOPT; the schedule-free rules have none); state arrays in clopt's order.
 */
#ifndef CLOPT_TEST_REF_MODERN_H
#define CLOPT_TEST_REF_MODERN_H

#include "clopt.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Schedule-Free scalar state carried between steps: lr_max (starts at -1 as the reference
   class) and the weight sum (starts at 0). */
typedef struct ref_sf_scalars {
    double lr_max, weight_sum;
} ref_sf_scalars;
void ref_sf_init(ref_sf_scalars *s);
/* lr_t and c_t of step t; advances *s (lr_max, weight_sum). */
double ref_sf_advance(const clopt_hparams *hp, uint64_t t, ref_sf_scalars *s, double *lr_t);

/* Schedule-Free AdamW: param holds y; state[0] = z, state[1] = exp_avg_sq. At t = 1 z is
   taken from y (z's content is ignored), as the reference class initialises z = θ_0. */
void ref_sf_adamw_step(const clopt_hparams *hp, uint64_t t, size_t n, double *y,
                       const double *grad, double *state[CLOPT_MAX_STATE], ref_sf_scalars *s,
                       double grad_scale);
/* Schedule-Free SGD: param holds y; state[0] = z (taken from y at t = 1). */
void ref_sf_sgd_step(const clopt_hparams *hp, uint64_t t, size_t n, double *y,
                     const double *grad, double *state[CLOPT_MAX_STATE], ref_sf_scalars *s,
                     double grad_scale);
/* eval: x = y + (1 - 1/beta)(z - y); train: y = x + (1 - beta)(z - x). In place on p. */
void ref_sf_eval(size_t n, double beta, double *p, const double *z);
void ref_sf_train(size_t n, double beta, double *p, const double *z);

/* ADOPT: state[0] = exp_avg (m), state[1] = exp_avg_sq (v). */
void ref_adopt_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                    const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale);
/* AdEMAMix: state[0] = exp_avg_fast, state[1] = exp_avg_slow, state[2] = exp_avg_sq. */
double ref_ademamix_alpha(const clopt_hparams *hp, uint64_t t);
double ref_ademamix_beta3(const clopt_hparams *hp, uint64_t t);
void ref_ademamix_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                       const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale);

/* Cautious Adam (adamw = 0: L2 decay added to g before the moments and the mask) and
   Cautious AdamW (adamw = 1: C-Optim's arithmetic, decay θ -= lr·wd·θ first): state[0] =
   exp_avg, state[1] = exp_avg_sq; one whole tensor (the mask mean is over all n).
   Returns mean(mask). */
double ref_cautious_adam_step(const clopt_hparams *hp, int adamw, uint64_t t, size_t n,
                              double *param, const double *grad,
                              double *state[CLOPT_MAX_STATE], double grad_scale);
/* Cautious Lion: state[0] = exp_avg. Returns mean(mask). */
double ref_cautious_lion_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                              const double *grad, double *state[CLOPT_MAX_STATE],
                              double grad_scale);
/* StableAdamW: state[0] = exp_avg, state[1] = exp_avg_sq (bias-corrected means); the RMS is
   over the whole tensor. Returns RMS_t. */
double ref_stable_adamw_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                             const double *grad, double *state[CLOPT_MAX_STATE],
                             double grad_scale);

#ifdef __cplusplus
}
#endif
#endif /* CLOPT_TEST_REF_MODERN_H */
