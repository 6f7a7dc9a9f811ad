/* SPDX-License-Identifier: MIT */
/* Shared between test_modern.c (op level) and test_modern_opt.c (optimizer level). */
#ifndef CLOPT_TEST_MODERN_H
#define CLOPT_TEST_MODERN_H

#include <stddef.h>
#include <stdint.h>

#include "clopt.h"
#include "ref_modern.h"

/* 2e-5 + 2δ, δ the float rounding of (1 - β) for the EMA coefficients hp uses. */
double modern_rtol(const clopt_hparams *hp);
/* |dev - ref| <= rtol·(|ref| + rms(ref)) everywhere; prints the first failure, returns 0. */
int modern_close(const char *label, const float *dev, const double *ref, size_t n, double rtol);
void modern_fill_normal(uint64_t *seed, float *x, size_t n, double scale);
void modern_to_double(const float *x, double *y, size_t n);
/* One reference step of rule: the four new element-wise rules, StableAdamW, and CLOPT_ADAM,
   CLOPT_ADAMW, CLOPT_LION as their cautious forms. */
void modern_ref_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, double *p,
                     const double *g, double *st[CLOPT_MAX_STATE], ref_sf_scalars *sf,
                     double gs);
size_t modern_state_count(clopt_rule rule);

void test_opt_cautious(void **state);
void test_opt_cautious_arena(void **state);
void test_opt_cautious_lion_values(void **state);
void test_opt_stable_adamw(void **state);
void test_opt_sf_modes(void **state);
void test_opt_sf_checkpoint(void **state);
void test_opt_sf_step_count(void **state);
void test_opt_sf_amp(void **state);
void test_hook_lamb(void **state);
void test_hook_stable_adamw(void **state);
void test_hook_cautious(void **state);
void test_hook_needed(void **state);
void test_hook_errors(void **state);

#define MODERN_OPT_TESTS                                                                     \
    cmocka_unit_test(test_opt_cautious), cmocka_unit_test(test_opt_cautious_arena),          \
        cmocka_unit_test(test_opt_cautious_lion_values),                                     \
        cmocka_unit_test(test_opt_stable_adamw), cmocka_unit_test(test_opt_sf_modes),        \
        cmocka_unit_test(test_opt_sf_checkpoint), cmocka_unit_test(test_opt_sf_step_count),  \
        cmocka_unit_test(test_opt_sf_amp), cmocka_unit_test(test_hook_lamb),                 \
        cmocka_unit_test(test_hook_stable_adamw), cmocka_unit_test(test_hook_cautious),      \
        cmocka_unit_test(test_hook_needed), cmocka_unit_test(test_hook_errors)

#endif
