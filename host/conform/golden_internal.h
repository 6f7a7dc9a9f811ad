/* SPDX-License-Identifier: MIT */
/*
 * golden's internals, shared by its five sources (not installed, not part of the library):
 *   golden_case.c     a case: meta.json and its files, checked against the bounds;
 *   golden.c          the replay of a case, the verdict;
 *   golden_map.c      optimizer ids and hyperparameters -> clopt_rule / clopt_hparams;
 *   golden_io.c       messages, paths, shapes, bounded file and JSON reading, typed arrays,
 *                     case lists;
 *   golden_storage.c  storage types (float32, float16, bfloat16, uint16, uint8), the
 *                     "storage" object of meta.json, tolerances and element comparisons.
 * The format is tests/data/golden/README.md.
 */
#ifndef CLOPT_GOLDEN_INTERNAL_H
#define CLOPT_GOLDEN_INTERNAL_H

#include "golden.h"

#include <stddef.h>
#include <stdint.h>

struct cJSON;

#if defined(__GNUC__)
#define GOLDEN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define GOLDEN_PRINTF(f, a)
#endif

/* ---- golden_io.c ---------------------------------------------------------------------- */

/* snprintf into buf[len] (nothing when buf is NULL or len 0). */
void golden_put(char *buf, size_t len, const char *fmt, ...) GOLDEN_PRINTF(3, 4);
/* A JSON number that is an integer in [0, 2^53]: 1 and *out, else 0. */
int golden_json_uint(const struct cJSON *item, uint64_t *out);
/* a + "/" + b (trailing slashes of a dropped); malloc'ed, NULL when out of memory. */
char *golden_path_join(const char *a, const char *b);
int golden_file_exists(const char *path);
/* strcmp of two char * (qsort, bsearch). */
int golden_cmp_str(const void *a, const void *b);
/* A JSON shape: 1 to maxdims positive integers, at most GOLDEN_LIMIT_FLOATS elements in all;
   0 with the dims, their count and product, or -1. */
int golden_parse_shape(const struct cJSON *a, size_t maxdims, uint64_t *shape, size_t *ndim,
                       size_t *count);
/* "[d0, d1, ...]" into buf[len]. */
void golden_shape_str(char *buf, size_t len, const uint64_t *s, size_t nd);
/* The JSON in path (a regular file of at most GOLDEN_LIMIT_JSON_BYTES), or NULL with the
   reason naming path. */
struct cJSON *golden_read_json(const char *path, char *reason, size_t len);

/* count values of a storage type, in host byte order: float for F32, uint16_t for F16, BF16
   and U16 (the raw 16-bit words), uint8_t for U8. */
typedef struct golden_array {
    clopt_dtype dtype;
    size_t count;
    void *data;
} golden_array;
/* Loads a raw little-endian file of exactly n values of dtype (its size is checked before
   anything is read). Returns 0, or -1 with the reason naming path. */
int golden_load_array(const char *path, clopt_dtype dtype, size_t n, golden_array *out,
                      char *reason, size_t len);
void golden_array_free(golden_array *a);

/* ---- golden_storage.c ----------------------------------------------------------------- */

/* The format's names ("float32", "float16", "bfloat16", "uint16", "uint8") and file
   extensions ("f32", "f16", "bf16", "u16", "u8"); NULL for a value out of range. */
const char *golden_dtype_name(clopt_dtype t);
const char *golden_dtype_ext(clopt_dtype t);
/* 1 and *t for a known name, else 0. */
int golden_dtype_parse(const char *name, clopt_dtype *t);
/* A plain file name (no '/', no '\\', not hidden) ending in ".<ext>" of a storage type:
   returns 1 with its dtype and the length of the name without the extension, else 0. */
int golden_file_dtype(const char *name, clopt_dtype *t, size_t *stem_len);

/* The "storage" object of meta.json (absent: everything float32, no master, no AMP). */
typedef struct golden_storage {
    int present;
    clopt_dtype param, grad, state;
    clopt_master master;
    int stochastic_rounding;
    uint64_t sr_seed;
    uint32_t sr_stream;
    int has_grad_scale;
    double grad_scale;
} golden_storage;
/* GOLDEN_PASS, GOLDEN_FAIL (malformed) or GOLDEN_UNSUPPORTED (an unknown key); the reason
   goes to reason[len]. s may be NULL (no storage object). */
golden_verdict golden_parse_storage(const struct cJSON *s, golden_storage *out, char *reason,
                                    size_t len);

/* A file's tolerance: every element within the value form |x - e| <= atol + rtol*|e| and/or
   the storage form, at most `ulps` apart in the type's order (adjacent values are 1 apart);
   and at most floor(mismatch_fraction * count) mismatches: elements not identical to the
   expected value or, with mismatch_rtol/mismatch_atol, beyond |x - e| <= mismatch_atol +
   mismatch_rtol*|e|. */
typedef struct golden_tolerance {
    int has_value;
    double rtol, atol;
    int has_ulps;
    double ulps;
    double mismatch_fraction; /* 1 when not given */
    int has_mismatch_value;
    double mismatch_rtol, mismatch_atol;
} golden_tolerance;
/* Parses {rtol, atol} and/or {ulps}, with {mismatch_fraction, mismatch_rtol, mismatch_atol}:
   0, or -1 when malformed. */
int golden_parse_tolerance(const struct cJSON *t, golden_tolerance *out);

/* Comparison of a result with an expected file (same dtype and count). */
typedef struct golden_comparison {
    size_t bad;           /* elements out of tolerance */
    size_t mismatches;    /* mismatches (see golden_tolerance; +0 = -0) */
    size_t allowed;       /* mismatches allowed */
    size_t worst;         /* element with the largest error / tolerance */
    double used;          /* that ratio over all elements (Inf for a NaN or a 0 tolerance) */
    double max_abs, max_rel; /* of the values (float types only; -1 otherwise) */
    int any_nan;
} golden_comparison;
void golden_compare(const golden_tolerance *tol, const golden_array *expected,
                    const golden_array *got, golden_comparison *out);
/* Value of element i as a double (the integer for U8 and U16). */
double golden_value(const golden_array *a, size_t i);

/* ---- golden_case.c: a case as loaded, replayed by golden.c ------------------------------ */

#define GOLDEN_CASE_MAX_DIMS 8

typedef struct expected_file {
    char *name;            /* "param_T.bf16" */
    char *path;
    size_t stem;           /* length of the name without its extension */
    golden_array data;
    golden_tolerance tol;
} expected_file;

typedef struct gcase {
    const char *dir;
    char *meta_path;
    struct cJSON *meta;
    clopt_rule rule;
    clopt_hparams hp;
    golden_storage storage;
    size_t ndim;
    uint64_t shape[GOLDEN_CASE_MAX_DIMS];
    size_t n;              /* elements of the parameter */
    size_t steps;          /* T */
    golden_array param0, grads, hess;
    size_t hess_blocks;    /* K */
    expected_file *exp;
    size_t nexp;
    int has_final_step;
    uint64_t final_step;
    int has_mu_product;
    double mu_product;
} gcase;

typedef struct runner {
    golden_result *res;
    size_t more;           /* problems beyond the first one reported */
    int any_nan;
} runner;


/* The first problem of a case into r's result (FAIL; later ones only counted), or the
   reason it cannot be replayed (UNSUPPORTED, unless it already failed). */
void golden_fail(runner *r, const char *fmt, ...) GOLDEN_PRINTF(2, 3);
void golden_unsupported(runner *r, const char *fmt, ...) GOLDEN_PRINTF(2, 3);
void golden_case_free(gcase *c);
/* 1 when name (without its extension, stem characters) is `want`. */
int golden_stem_is(const char *name, size_t stem, const char *want);
/* c->dir's meta.json and every file it lists into c, checked (the bounds of golden.h, the
   shapes, dtypes and tolerances): 0, or -1 with the reason in r. */
int golden_load_case(runner *r, gcase *c);

#endif /* CLOPT_GOLDEN_INTERNAL_H */
