/* SPDX-License-Identifier: MIT */
/* Shared between test_q8.c (the maps, 8-bit steps against the blockwise transcription, edge
   cases) and test_q8_opt.c (bf16 state, the optimizer level, bad arguments). */
#ifndef CLOPT_TEST_Q8_H
#define CLOPT_TEST_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "clopt.h"

/* Element offsets of θ and g in the device runs' buffers, and the guard elements after them. */
enum { PO = 5, GO = 3, GUARD = 24 };

/* clopt_enqueue_step on the context's queue, asserted to succeed (the error printed). */
void step_ok(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
             const clopt_step_args *a, size_t n, uint64_t t, const char *label);
/* Uniform in [lo, hi) from ref_uniform. */
double unif(uint64_t *s, double lo, double hi);
/* Blocks of 256 elements covering n. */
size_t nblocks(size_t n);
/* 1 for the states that take the signed map (they change sign). */
int state_signed(const char *name);
/* bf16 word h as a float / the nearest bf16 word of finite x (ties to even). */
float bf16_val(uint16_t h);
uint16_t bf16_rne(float x);

void test_bf16_rules(void **state);
void test_opt_q8(void **state);
void test_opt_checkpoint(void **state);
void test_opt_refused(void **state);
void test_bad_args(void **state);

#define Q8_OPT_TESTS                                                                         \
    cmocka_unit_test(test_bf16_rules), cmocka_unit_test(test_opt_q8),                        \
        cmocka_unit_test(test_opt_checkpoint), cmocka_unit_test(test_opt_refused),           \
        cmocka_unit_test(test_bad_args)

#endif
