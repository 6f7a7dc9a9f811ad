/* SPDX-License-Identifier: MIT */
/* Shared between test_q8.c (the maps, 8-bit steps against the blockwise transcription, edge
   cases), test_q8_edges.c (initial states, zero blocks, 1 element), test_q8_codes.c (the code
   of each value: ties, the boundaries between codes, the table) and test_q8_opt.c (bf16 state, the optimizer level, bad arguments). */
#ifndef CLOPT_TEST_Q8_H
#define CLOPT_TEST_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "clopt.h"

#define EPSF 0x1p-24 /* float32's unit roundoff */

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
/* The references of the rules with 8-bit state: tests/ref's (torch semantics) and AdEMAMix's
   (tests/ref/ref_modern.c, apple/ml-ademamix). */
size_t q8_state_count(clopt_rule rule, const clopt_hparams *hp);
const char *q8_state_name(clopt_rule rule, const clopt_hparams *hp, size_t k);
void q8_ref_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                 const double *grad, double *state[CLOPT_MAX_STATE]);
/* bf16 word h as a float / the nearest bf16 word of finite x (ties to even). */
float bf16_val(uint16_t h);
uint16_t bf16_rne(float x);

/* The size of buffer m in bytes. */
size_t buf_bytes(cl_mem m);
/* Configuration i of the rules with 8-bit state (0 past the last), hyperparameters exact in
   float32, the step number and a label. */
int q8_config(int i, clopt_rule *rule, clopt_hparams *hp, uint64_t *t, const char **label);

/* bitsandbytes' maps transcribed (test_q8.c): [signed], rounded to float32; the code of 0. */
extern float QMAP[2][256];
extern unsigned QZERO[2];
void maps_init(void);
/* The code nearest to x, ties to the lower code. */
unsigned map_nearest(const float *map, double x);

/* One 8-bit state by value: element i is map[code] * the absmax of its block. */
typedef struct q8s {
    size_t n;
    int sg;
    unsigned char *code;
    float *amax;
} q8s;
void q8_alloc(q8s *s, size_t n, int sg);
void q8_free(q8s *s);

/* An 8-bit run on the device: θ, g and ns states at element offsets, guards after them. */
typedef struct q8dev {
    size_t n, ns;
    cl_mem p, g, c[CLOPT_MAX_STATE], a[CLOPT_MAX_STATE];
    size_t co[CLOPT_MAX_STATE], ao[CLOPT_MAX_STATE];
    size_t pb, gb, cb[CLOPT_MAX_STATE], ab[CLOPT_MAX_STATE]; /* bytes */
    unsigned char *pimg, *gimg, *cimg[CLOPT_MAX_STATE], *aimg[CLOPT_MAX_STATE];
    clopt_step_args args;
} q8dev;
void q8dev_make(clopt_ctx *ctx, q8dev *d, size_t n, const float *theta, const float *grad,
                size_t ns, const q8s *st);
void q8dev_read(clopt_ctx *ctx, const q8dev *d, float *theta, q8s *st);
/* Everything outside the tensors still holds its first contents; the gradient is untouched. */
size_t q8dev_guards(clopt_ctx *ctx, const q8dev *d, const char *label);
void q8dev_free(q8dev *d);

void test_alloc_state_ex(void **state);
void test_q8_zero_blocks(void **state);
void test_q8_one_element(void **state);
#define Q8_EDGES_TESTS                                                                       \
    cmocka_unit_test(test_alloc_state_ex), cmocka_unit_test(test_q8_zero_blocks),            \
        cmocka_unit_test(test_q8_one_element)

void test_q8_ties(void **state);
void test_q8_boundaries(void **state);
void test_q8_table(void **state);
#define Q8_CODES_TESTS                                                                       \
    cmocka_unit_test(test_q8_ties), cmocka_unit_test(test_q8_boundaries),                    \
        cmocka_unit_test(test_q8_table)

void test_bf16_rules(void **state);
void test_opt_q8(void **state);
void test_opt_checkpoint(void **state);
void test_opt_refused(void **state);
void test_opt_q8_range(void **state);
void test_opt_q8_range_half(void **state);
void test_bad_args(void **state);

#define Q8_OPT_TESTS                                                                         \
    cmocka_unit_test(test_bf16_rules), cmocka_unit_test(test_opt_q8),                        \
        cmocka_unit_test(test_opt_checkpoint), cmocka_unit_test(test_opt_refused),           \
        cmocka_unit_test(test_opt_q8_range), cmocka_unit_test(test_opt_q8_range_half),     \
        cmocka_unit_test(test_bad_args)

#endif
