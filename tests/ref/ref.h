/* SPDX-License-Identifier: MIT */
/*
 * Scalar double-precision references of every clopt rule, written from the equations in
 * tests/data/golden/<case>/meta.json ("equations") and tests/data/golden/README.md, and
 * from the rule comments of include/clopt.h. They are deliberately independent of the
 * library's kernels and host code: nothing here calls into libclopt.
 *
 * State arrays follow clopt's order and names (clopt_rule_state_name); ref_state_count,
 * ref_state_name and ref_state_init give the reference's own view of that layout so a test
 * can check the library's against it.
 */
#ifndef CLOPT_TEST_REF_H
#define CLOPT_TEST_REF_H

#include "clopt.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* torch's (or the paper's) defaults, filled without asking the library. Fields a rule
   does not read are 0. Sophia's bs has no canonical default; 5120 is used here. */
void ref_hparams_default(clopt_rule rule, clopt_hparams *hp);

/* State layout of a rule/variant: count, names (as the golden files: "exp_avg", ...) and
   initial value. */
size_t ref_state_count(clopt_rule rule, const clopt_hparams *hp);
const char *ref_state_name(clopt_rule rule, const clopt_hparams *hp, size_t index);
double ref_state_init(clopt_rule rule, const clopt_hparams *hp, size_t index);

/* NAdam's momentum schedule mu_t = beta1*(1 - 0.5*0.96^(t*psi)). */
double ref_nadam_mu(const clopt_hparams *hp, uint64_t t);

/*
 * One step t (>= 1) of `rule` over n elements, in double:
 *  param       θ, updated in place;
 *  grad        raw gradient; the rule sees g = grad/grad_scale (grad_scale 0 = 1), negated
 *              when hp->maximize, then the L2 term of the rules that have one;
 *  state       ref_state_count(rule, hp) arrays in clopt order, updated in place;
 *  hess        Sophia only: Hessian-diagonal estimate folded into h after this step's
 *              update (NULL = no estimate at this step). Ignored by other rules;
 *  mu_product  NAdam only: in: Π_{i<t} μ_i (1 at step 1); out: Π_{i<=t} μ_i. May be NULL
 *              for other rules (for NAdam NULL means "recompute from scratch").
 */
void ref_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, double *param,
              const double *grad, double *state[CLOPT_MAX_STATE], const double *hess,
              double *mu_product, double grad_scale);

/*
 * The optimizer-level rules, one step t (>= 1) of one tensor in double, with the same
 * conventions as ref_step (g = grad/grad_scale, grad_scale 0 = 1, negated when maximize).
 * Gradient centralization is not applied (it is a no-op for the 1-D tensors these are used
 * on; centralize grad first for others).
 *
 * Adafactor (Hugging Face semantics, tests/data/golden/adafactor/meta.json): factored when
 * R > 0, over B stacked R×C matrices (n = B·R·C; HF's row statistics are the mean over the
 * last dim, the column statistics over the second-to-last, per leading index), else a 1-D
 * tensor of n elements. state, in clopt order: factored exp_avg_sq_row (B·R),
 * exp_avg_sq_col (B·C); 1-D exp_avg_sq (n); then exp_avg (n) with use_beta1. RMS(θ) and
 * RMS(u) are over the whole tensor.
 */
void ref_adafactor_step(const clopt_hparams *hp, uint64_t t, size_t B, size_t R, size_t C,
                        size_t n, double *param, const double *grad,
                        double *state[CLOPT_MAX_STATE], double grad_scale);
/* LAMB (tests/data/golden/lamb/meta.json): state exp_avg, exp_avg_sq; norms over the tensor. */
void ref_lamb_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                   const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale);
/* The two sums LAMB's step t takes over these n elements (a piece of a tensor), Σθ² and Σr²
   with the moments step t would write, into sums[0..1]; nothing is changed. */
void ref_lamb_sums(const clopt_hparams *hp, uint64_t t, size_t n, const double *param,
                   const double *grad, double *const state[CLOPT_MAX_STATE], double grad_scale,
                   double sums[2]);
/* Ranger 20.4.11 (tests/data/golden/ranger/meta.json): state exp_avg, exp_avg_sq and the
   slow weights φ (slow_buffer), which the caller sets to θ_0 before step 1. */
void ref_ranger_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                     const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale);

/* torch.nn.utils.clip_grad_norm_'s coefficient for gradients whose total L2 norm is
   total_norm: min(1, max_norm/(total_norm + 1e-6)); 1 when max_norm is 0 (off). The
   clipped gradient is g·coef, i.e. grad_scale = 1/coef in the ref_*step functions. */
double ref_clip_coef(double total_norm, double max_norm);

/* Sophia's Hessian-diagonal estimators. */
void ref_hutchinson(size_t n, const double *u, const double *hvp, double *out);
void ref_gnb(size_t n, const double *ghat, double batch_size, double *out);

/*
 * Largest relative error that sending the rule's EMA/decay coefficients (beta1, beta2,
 * beta3, alpha, rho, momentum, dampening) to the device as float introduces into the
 * complementary weight (1 - c): max over the coefficients used of |float(c) - c|/(1 - c).
 * 0 when every coefficient is exactly representable. Used to size test tolerances.
 */
double ref_hparam_coeff_error(clopt_rule rule, const clopt_hparams *hp);

/* Philox-4x32-10 (Salmon et al. 2011, Random123's philox.h, written from the paper): per
   round the two products M0·c0 and M1·c2 (64-bit), out = (hi(M1·c2) ^ c1 ^ k0, lo(M1·c2),
   hi(M0·c0) ^ c3 ^ k1, lo(M0·c0)), then the key bumped by the Weyl constants. Checked
   against Random123's known answers in tests/test_rng.c. */
void ref_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* The documented 16-bit stochastic-rounding value of element e (clopt_step_args
   .stochastic_rounding): half e % 2 (low half first) of word (e / 2) % 4 of Philox with
   counter (e/8 low, high, step low, stream) and key (seed low, high). */
uint32_t ref_sr_value(uint64_t e, uint64_t seed, uint32_t stream, uint64_t step);

/* A small fixed-seed generator for test data: splitmix64, uniform in [0, 1), N(0, 1). */
uint64_t ref_splitmix64(uint64_t *s);
double ref_uniform(uint64_t *s);
double ref_normal(uint64_t *s);

#ifdef __cplusplus
}
#endif
#endif /* CLOPT_TEST_REF_H */
