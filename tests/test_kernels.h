/* SPDX-License-Identifier: MIT */
/* Shared between test_kernels.c (the golden replay of the references, layouts and defaults,
   the test data and the comparisons, main), test_kernels_op.c (op level),
   test_kernels_opt.c (optimizer level) and test_kernels_rng.c (the RNG and the Hessian
   estimators); defined in test_kernels.c. */
#ifndef CLOPT_TEST_KERNELS_H
#define CLOPT_TEST_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "clopt.h"

#define U32 (1.0 / 16777216.0) /* 2^-24 */
#define GUARD 37

/* CLOPT_TEST_VERBOSE set: every case and comparison printed. */
extern int g_verbose;

/* The "big" cases span many work-groups: 2^20 elements. CLOPT_TEST_SMALL=1 (set by
   ci/oclgrind.sh: a simulated device that checks every memory access runs these kernels
   thousands of times slower than PoCL) shrinks them to 2^13 + 5: 33 work-groups of the
   one-vector tuning (op_level_one_vector, the group that then runs), not a multiple of any
   vector width, so the tail path runs too. */
#define BIG_DEFAULT ((size_t)1 << 20)
extern size_t g_big;
#define BIG g_big

/* ---- small helpers ----------------------------------------------------------------------- */

/* malloc / calloc that assert (never NULL, also for 0 bytes). */
void *xmalloc(size_t bytes);
void *xcalloc(size_t count, size_t size);
/* The pattern everything outside the tensors holds. */
float sentinel(size_t i);
/* The library's default struct, with every field the reference reads set from the
   reference's own defaults. */
void test_hparams(clopt_rule rule, clopt_hparams *hp);
/* n floats from src into mem at element off. */
cl_int write_region(cl_command_queue q, cl_mem mem, size_t off, size_t n, const float *src,
                    int blocking, cl_event *ev);
/* Elements of dev outside [off, off + n) that differ from init (the first one printed). */
size_t check_outside(const char *label, const char *what, const float *dev, const float *init,
                     size_t size, size_t off, size_t n);

/* ---- test data --------------------------------------------------------------------------- */

enum {
    SP_ZERO = 1,      /* some elements get exactly 0 at every step */
    SP_TINY = 2,      /* some elements get ±1e-30 */
    SP_HUGE = 4,      /* some elements get ±1e30 (rules without g² only) */
    SP_ZERO_STEP = 8, /* step 2 has an all-zero gradient */
    SP_SCHED = 16,    /* gradient magnitude x3 in the first third, x0.3 in the last */
};

typedef struct gen {
    uint64_t rng;
    size_t n;
    unsigned special;
    double gmag, grad_scale;
    unsigned steps;
    double *drift;
} gen;

void gen_init(gen *G, uint64_t seed, size_t n, unsigned special, double gmag,
              double grad_scale, unsigned steps);
void gen_free(gen *G);
void gen_param(gen *G, float *theta, double scale);
/* Raw (device-side) gradient of step t: grad_scale * g, g the effective gradient. */
void gen_grads(gen *G, unsigned t, float *raw);
void gen_hess(gen *G, float *h);
/* Lion / Sophia: keep the sign argument c = β1 m + (1-β1) g clear of 0 (see test_kernels.c).
   Returns the number of gradient elements changed. */
size_t sign_guard(clopt_rule rule, const clopt_hparams *hp, double grad_scale, size_t n,
                  float *raw, const double *m, double *mag);

/* ---- comparison -------------------------------------------------------------------------- */

typedef struct track {
    size_t n, na;                    /* elements, arrays (θ + states) */
    double *env[1 + CLOPT_MAX_STATE]; /* max |x| */
    double *var[1 + CLOPT_MAX_STATE]; /* Σ |Δx| */
    double *prev[1 + CLOPT_MAX_STATE];
} track;

void track_init(track *tr, size_t n, size_t na, double *const *arrays);
void track_before(track *tr, double *const *arrays);
void track_after(track *tr, double *const *arrays);
void track_free(track *tr);
/* The relative tolerance of `steps` steps (the header of test_kernels.c). */
double tol_rel(clopt_rule rule, const clopt_hparams *hp, unsigned steps);
/* Number of elements outside tolerance (the first one is printed). */
size_t compare_tracked(const char *label, const char *what, const float *dev, const double *ref,
                       const double *env, const double *var, size_t n, double rel);

/* ---- test_kernels_op.c ------------------------------------------------------------------- */

void test_op_sgd(void **state);
void test_op_adam(void **state);
void test_op_adamw(void **state);
void test_op_adagrad(void **state);
void test_op_adadelta(void **state);
void test_op_rmsprop(void **state);
void test_op_adamax(void **state);
void test_op_nadam(void **state);
void test_op_radam(void **state);
void test_op_adamod(void **state);
void test_op_diffgrad(void **state);
void test_op_lion(void **state);
void test_op_sophia(void **state);
void test_op_wrappers_identical(void **state);

#define KERNELS_OP_TESTS                                                                     \
    cmocka_unit_test(test_op_sgd), cmocka_unit_test(test_op_adam),                           \
        cmocka_unit_test(test_op_adamw), cmocka_unit_test(test_op_adagrad),                  \
        cmocka_unit_test(test_op_adadelta), cmocka_unit_test(test_op_rmsprop),               \
        cmocka_unit_test(test_op_adamax), cmocka_unit_test(test_op_nadam),                   \
        cmocka_unit_test(test_op_radam), cmocka_unit_test(test_op_adamod),                   \
        cmocka_unit_test(test_op_diffgrad), cmocka_unit_test(test_op_lion),                  \
        cmocka_unit_test(test_op_sophia), cmocka_unit_test(test_op_wrappers_identical)

/* ---- test_kernels_opt.c ------------------------------------------------------------------ */

void test_optimizer_all_rules(void **state);

#define KERNELS_OPT_TESTS cmocka_unit_test(test_optimizer_all_rules)

/* ---- test_kernels_rng.c ------------------------------------------------------------------ */

void test_randn(void **state);
void test_hutchinson_gnb(void **state);

#define KERNELS_RNG_TESTS cmocka_unit_test(test_randn), cmocka_unit_test(test_hutchinson_gnb)

#endif
