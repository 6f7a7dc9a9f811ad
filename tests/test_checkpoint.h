/* SPDX-License-Identifier: MIT */
/* Shared between test_checkpoint.c (bytes and files, resuming, the all-or-nothing load, arena
   parameters), test_checkpoint_state.c (state tensors saved by the engine, per-tensor step
   counts, files of earlier versions, the enumeration) and test_checkpoint_hostile.c (hostile
   input): the small model and the format helpers, defined in test_checkpoint.c. */
#ifndef CLOPT_TEST_CHECKPOINT_H
#define CLOPT_TEST_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "clopt.h"

/* ---- a small model ------------------------------------------------------------------------ */

/* Group 0: caller-owned T0 (6x5) and T1 (7); group 1 (other hyperparameters): T2 (9);
   with `arena`, an arena group (T3 (5), T4 (3x4), T5 (11)). */
enum { MAXT = 6, NARENA = 3 };

typedef struct net {
    clopt_ctx *ctx;
    clopt_optimizer *opt;
    size_t nt;
    size_t n[MAXT];
    cl_mem p[MAXT], g[MAXT]; /* NULL for arena tensors */
} net;

void net_build(net *m, clopt_ctx *ctx, clopt_rule rule, unsigned lookahead_k, int arena,
               uint64_t seed);
void net_free(net *m);
/* Steps t0+1 .. t1 with gradients that depend only on the step and the tensor. */
void net_steps(net *m, uint64_t t0, uint64_t t1);
size_t net_param_floats(const net *m);
/* Parameters of the tensors [from, to), concatenated. */
void net_get_params(net *m, size_t from, size_t to, float *out);
void net_set_params(net *m, size_t from, size_t to, const float *in);

/* Everything observable: parameters, every state, the step counts, hyperparameters, lrs. */
typedef struct snapshot {
    float *v;
    size_t nv;
    uint64_t steps[MAXT + 1];
    clopt_hparams hp[3];
    double lr[3];
} snapshot;

snapshot net_snapshot(net *m);
void assert_same(const snapshot *a, const snapshot *b);
void snapshot_free(snapshot *s);
/* The checkpoint as bytes with options o (NULL = defaults), size checked against state_size:
   of any optimizer, and of a net's. */
unsigned char *save_opt_bytes(clopt_optimizer *opt, const clopt_save_options *o, size_t *len);
unsigned char *save_bytes(net *m, const clopt_save_options *o, size_t *len);

/* ---- format helpers, written from docs/checkpoint-format.md -------------------------------- */

uint32_t get_u32(const unsigned char *p);
uint64_t get_u64(const unsigned char *p);
void put_u32(unsigned char *p, uint32_t v);
void put_u64(unsigned char *p, uint64_t v);
void put_f64(unsigned char *p, double d);
/* The CRC-32C of the first len - 4 bytes into the last 4. */
void reseal(unsigned char *d, size_t len);
/* Start offsets of the sections (at most max). */
size_t sections(const unsigned char *d, size_t len, size_t *starts, size_t max);
/* Offset of the flags of a TENS section starting at `at` (after group, ndim and shape). */
size_t tens_flags(const unsigned char *d, size_t at);
/* Loading must fail with `want` and change nothing observable. */
void expect_rejected(net *m, const unsigned char *bytes, size_t len, clopt_status want,
                     const snapshot *before, const char *what);
/* A whole file (asserted to exist). */
unsigned char *slurp(const char *path, size_t *len);

/* ---- test_checkpoint_state.c ------------------------------------------------------------- */

void test_engine_state_tensors(void **state);
void test_write_slow_weights_before_first_step(void **state);
void test_slow_weights_bf16_before_first_step(void **state);
void test_slow_weights_bf16_arena_write(void **state);
void test_master_bf16_arena_write(void **state);
void test_per_tensor_steps(void **state);
void test_version1_file(void **state);
void test_version2_file(void **state);
void test_entries(void **state);

#define CHECKPOINT_STATE_TESTS                                                               \
    cmocka_unit_test(test_engine_state_tensors),                                             \
        cmocka_unit_test(test_write_slow_weights_before_first_step),                         \
        cmocka_unit_test(test_slow_weights_bf16_before_first_step),                          \
        cmocka_unit_test(test_slow_weights_bf16_arena_write),                                \
        cmocka_unit_test(test_master_bf16_arena_write),                                      \
        cmocka_unit_test(test_per_tensor_steps), cmocka_unit_test(test_version1_file),       \
        cmocka_unit_test(test_version2_file), cmocka_unit_test(test_entries)

/* ---- test_checkpoint_hostile.c ----------------------------------------------------------- */

void test_impossible_values(void **state);
void test_hostile_files(void **state);
void test_save_symlinks(void **state);
void test_impossible_group_settings(void **state);
void test_legacy_settings(void **state);

#define CHECKPOINT_HOSTILE_TESTS                                                             \
    cmocka_unit_test(test_impossible_values), cmocka_unit_test(test_hostile_files),          \
        cmocka_unit_test(test_save_symlinks), cmocka_unit_test(test_impossible_group_settings), \
        cmocka_unit_test(test_legacy_settings)

#endif
