/* SPDX-License-Identifier: MIT */
/* Shared between test_storage.c (basics, conversions, bad arguments), test_storage_sr.c
   (stochastic rounding) and test_storage_master.c (master weights, the scalar kernels):
   the 16-bit formats by value and small helpers, defined in test_storage.c; check_sr_words
   in test_storage_sr.c. */
#ifndef CLOPT_TEST_STORAGE_H
#define CLOPT_TEST_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "clopt.h"

/* ---- small helpers ----------------------------------------------------------------------- */

/* SplitMix64 step; uniform in [0, 1) from it. */
uint64_t mix(uint64_t *s);
double unif(uint64_t *s);
/* clopt_enqueue_convert on the context's queue, asserted to succeed (the error printed). */
void convert_ok(clopt_ctx *ctx, cl_mem dst, size_t doff, clopt_dtype dt, cl_mem src,
                size_t soff, clopt_dtype st, size_t n, int sr, uint64_t seed, uint32_t stream,
                uint64_t step);

/* ---- 16-bit formats by value --------------------------------------------------------------- */

typedef struct fmt16 {
    const char *name;
    clopt_dtype dtype;
    unsigned ebits, mbits;
    unsigned maxfin; /* the largest finite positive pattern (0x7BFF, 0x7F7F) */
    double *pos;     /* value of every pattern 0 .. maxfin, increasing */
    double overflow; /* |x| >= this rounds to Inf: midway from the largest finite to 2^(emax+1) */
} fmt16;

extern fmt16 F16, BF16;

/* Fills f's table of values (once). */
void fmt_init(fmt16 *f);
double val16(const fmt16 *f, uint16_t h);
uint16_t inf16(const fmt16 *f);
int isnan16(const fmt16 *f, uint16_t h);
/* x (not NaN) rounded to f by value: the nearer of its two neighbours, a tie to the even
   pattern (ties_away: to the larger magnitude), Inf from f->overflow on. */
uint16_t round16(const fmt16 *f, double x, int ties_away);
/* The patterns around x by value: down has the largest magnitude <= |x|, up the smallest
   >= |x| (Inf past the largest finite); equal when x is representable. */
void neighbours16(const fmt16 *f, double x, uint16_t *down, uint16_t *up);
/* f16 reference of a float: GCC's _Float16 (IEEE round to nearest even) where it exists. */
uint16_t f16_ref(float x);

/* Every f16 and bf16 pattern to f32 and back, and to the other 16-bit type: the number of
   wrong results. */
size_t check_all_16bit(clopt_ctx *ctx);

/* ---- test_storage_sr.c ------------------------------------------------------------------- */

/* x in format F, rounded up with probability p. */
typedef struct sr_case {
    const fmt16 *F;
    float x;
    double p;
} sr_case;

/* The random words of stochastic rounding in clopt_enqueue_convert are the documented ones. */
void check_sr_words(clopt_ctx *ctx, const sr_case *cases, size_t ncases);

void test_sr_convert(void **state);
void test_sr_convert_words(void **state);
void test_sr_mean(void **state);
void test_sr_sgd_bias(void **state);
void test_sr_step_words(void **state);
void test_sr_words_tunings(void **state);
void test_sr_range_stream(void **state);
void test_sr_lookahead_own_draws(void **state);
void test_sr_schedule_free_round_trip(void **state);

#define STORAGE_SR_TESTS                                                                     \
    cmocka_unit_test(test_sr_convert), cmocka_unit_test(test_sr_convert_words),              \
        cmocka_unit_test(test_sr_mean), cmocka_unit_test(test_sr_sgd_bias),                  \
        cmocka_unit_test(test_sr_step_words), cmocka_unit_test(test_sr_words_tunings),      \
        cmocka_unit_test(test_sr_range_stream), cmocka_unit_test(test_sr_lookahead_own_draws), \
        cmocka_unit_test(test_sr_schedule_free_round_trip)

/* ---- test_storage_axpby.c ---------------------------------------------------------------- */

void test_axpby_typed(void **state);
void test_axpby_typed_place(void **state);
void test_accumulate_grad_16(void **state);

#define STORAGE_AXPBY_TESTS                                                                  \
    cmocka_unit_test(test_axpby_typed), cmocka_unit_test(test_axpby_typed_place),            \
        cmocka_unit_test(test_accumulate_grad_16)

/* ---- test_storage_master.c --------------------------------------------------------------- */

void test_master_ties(void **state);
void test_master_rules(void **state);
void test_scalar_tuning(void **state);
void test_remainder_nan(void **state);

#define STORAGE_MASTER_TESTS                                                                 \
    cmocka_unit_test(test_master_ties), cmocka_unit_test(test_master_rules),                 \
        cmocka_unit_test(test_scalar_tuning), cmocka_unit_test(test_remainder_nan)

#endif
