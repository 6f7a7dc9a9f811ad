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

/* One step's figures against the reference (test_q8_one_step prints them). */
typedef struct q8stats {
    size_t values, ties, skipped;
    double theta_worst; /* largest θ error in units of EPSF·(|θ0| + |Δθ| terms) */
    double state_worst; /* largest |dequantized - reference| in code steps */
} q8stats;
/* A device step's result: θ and the states (q8run_free releases them). */
typedef struct q8run {
    size_t n, ns;
    float *theta;
    q8s st[CLOPT_MAX_STATE];
} q8run;
void q8run_free(q8run *r);
/* One step of configuration ci (q8_config) on n elements from a random θ, gradient and 8-bit
   state (seeded), on ctx with its tuning, against the double transcription of the blockwise
   algorithm; the number of failures (printed). The device's result goes to *keep when not
   NULL. */
size_t q8_one_step_case(clopt_ctx *ctx, int ci, size_t n, uint64_t seed, q8stats *stats,
                        q8run *keep);

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

/* The optimizer level (test_q8_opt.c). orun: AdamW (lr 1e-2, state_dtype sd) with a
   100×100 tensor at OB and a 100-element one at OS of the buffers p and g (PLEN floats). */
enum { BIG = 10000, SMALL = 100, OB = 3, OS = BIG + 11, PLEN = OS + SMALL + 5 };
typedef struct orun {
    clopt_optimizer *opt;
    cl_mem p, g;
} orun;
void orun_make(clopt_ctx *ctx, orun *o, int sd, const float *theta);
void orun_free(orun *o);
/* The raw bytes of every state entry, concatenated (*len receives the length). */
unsigned char *orun_states(clopt_ctx *ctx, const orun *o, size_t *len);
/* RT tensors of 1, 255, 256, 257, 4095 and 600 elements from element 5 of buffers p and g,
   RGAP elements apart (at[i] their offsets, *len the floats they span), and a range group of
   them with 8-bit state (rule, lr 1e-2, weight decay 0.01, Lookahead k 2 with la). */
enum { RT = 6, RGAP = 3 };
void range_descs(cl_mem p, cl_mem g, clopt_param_desc *d, size_t *at, size_t *len);
clopt_optimizer *range_q8_opt(clopt_ctx *ctx, clopt_rule rule, int la, cl_mem p, cl_mem g);

void test_q8_group_one_step(void **state);
void test_q8_group_optimizer(void **state);
void test_q8_group_storage(void **state);
#define Q8_SHAPES_TESTS                                                                      \
    cmocka_unit_test(test_q8_group_one_step), cmocka_unit_test(test_q8_group_optimizer),     \
        cmocka_unit_test(test_q8_group_storage)

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
