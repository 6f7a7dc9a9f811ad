/* SPDX-License-Identifier: MIT */
/*
 * golden: load one golden-vector case directory (tests/data/golden/README.md) and replay
 * it through clopt's optimizer-level API, comparing parameters and state with the
 * expected files under each file's tolerance. Cases with a "storage" object (16-bit
 * parameters and gradients, fp32 or remainder masters, stochastic rounding, bf16 or 8-bit
 * state: tests/data/golden_storage) replay with those storage types.
 *
 * Used by the clopt-conform tool and by tests/test_golden.c. Not part of the library.
 * Every failure (missing file, bad JSON, wrong byte count, OpenCL error, out-of-tolerance
 * values) is reported as a verdict with a message that names the file; nothing here
 * exits, aborts or prints.
 */
#ifndef CLOPT_GOLDEN_H
#define CLOPT_GOLDEN_H

#include "clopt.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cJSON;

typedef enum golden_verdict {
    GOLDEN_PASS = 0,
    GOLDEN_FAIL,
    GOLDEN_UNSUPPORTED /* optimizer, variant or hyperparameter that clopt cannot honour */
} golden_verdict;

/* Resource bounds: a case beyond any of them FAILs with a message naming the limit, before
   anything larger is allocated, read or replayed. Memory stays below about twice
   GOLDEN_LIMIT_FLOATS * 4 bytes (1 GiB of files, their copies on the device and the host).
   GOLDEN_LIMIT_FLOATS counts the values of every storage type (4 bytes or fewer each). */
#define GOLDEN_LIMIT_STEPS 1000000                /* steps T of a case */
#define GOLDEN_LIMIT_ELEMENTS ((size_t)1 << 26)   /* elements of the parameter (256 MiB) */
#define GOLDEN_LIMIT_FLOATS ((size_t)1 << 28)     /* values of all files of a case */
#define GOLDEN_LIMIT_FILES 1024                   /* entries of meta.json's files list */
#define GOLDEN_LIMIT_JSON_BYTES ((size_t)16 << 20) /* meta.json, index.json */
/* Shapes have 1 to 8 dimensions (CLOPT_MAX_DIMS); grads.f32 and hess.f32 one more. */

#define GOLDEN_NAME_MAX 256
#define GOLDEN_REASON_MAX 768

/* One compared expected file, for reports (clopt-conform --verbose). */
#define GOLDEN_REPORT_FILES 16
typedef struct golden_file_report {
    char name[64];        /* "param_T.bf16" */
    double used;          /* largest error / tolerance of an element (Inf: NaN) */
    size_t mismatches;    /* elements not identical to the expected value (or beyond the
                             tolerance's mismatch_rtol/mismatch_atol) */
    size_t allowed;       /* mismatches the tolerance allows (the element count: any) */
    size_t count;         /* elements */
} golden_file_report;

typedef struct golden_result {
    golden_verdict verdict;
    char name[GOLDEN_NAME_MAX];      /* last component of the case directory */
    char optimizer[64];              /* meta.optimizer ("" if meta.json is unreadable) */
    /* Largest |x - e| and |x - e| / |e| (elements with e != 0) over every compared file;
       NaN when a compared value was NaN. Meaningful only when files_compared > 0. */
    double max_abs_err;
    double max_rel_err;
    size_t files_compared;           /* expected files compared (param_1 counts once) */
    size_t files_failed;             /* of those, how many had an element out of tolerance */
    char reason[GOLDEN_REASON_MAX];  /* why FAIL or UNSUPPORTED ("" on PASS) */
    /* The largest fraction of a tolerance used by an element of a compared file: |x - e| /
       (atol + rtol*|e|), or the distance in ulps / ulps for the storage form (Inf for a
       NaN). Meaningful only when files_compared > 0. */
    double max_tol_used;
    size_t nreports;                 /* the first GOLDEN_REPORT_FILES compared files */
    golden_file_report report[GOLDEN_REPORT_FILES];
} golden_result;

const char *golden_verdict_str(golden_verdict v);

/* Optimizer ids (meta.optimizer) known to the mapping table, and the clopt rule each maps
   to. Returns 1 and sets *rule (may be NULL) when known, 0 otherwise. */
int golden_optimizer_supported(const char *optimizer, clopt_rule *rule);
/* Number of rows of the mapping table and the optimizer id of row i (NULL past the end). */
size_t golden_optimizer_count(void);
const char *golden_optimizer_name(size_t i);

/* Map meta.optimizer and meta.hyper (a cJSON object, may be NULL) to a rule and its
   hyperparameters: clopt_hparams_default, then every field present in hyper.
   GOLDEN_UNSUPPORTED: unknown optimizer, variant, or a key clopt cannot honour;
   GOLDEN_FAIL: hyper is malformed (wrong JSON type). The reason goes to reason[len]. */
golden_verdict golden_map_hyper(const char *optimizer, const struct cJSON *hyper,
                                clopt_rule *rule, clopt_hparams *hp, char *reason,
                                size_t len);

/* 1 if dir/meta.json exists (dir is a case directory). */
int golden_is_case_dir(const char *dir);

/* Case directories named by dir: dir itself when it holds meta.json; else the entries of
   dir/index.json ("cases": [...]); else every subdirectory holding meta.json, sorted by
   name. Returns 0, or -1 with the reason (naming the file or folder) in reason[len]; on
   failure *out is left empty. Free with golden_case_list_free. */
typedef struct golden_case_list {
    size_t count;
    char **dirs;
} golden_case_list;
int golden_list_cases(const char *dir, golden_case_list *out, char *reason, size_t len);
void golden_case_list_free(golden_case_list *list);

/* Replay the case in dir on ctx and fill *out. Never crashes on malformed data. */
void golden_run_case(clopt_ctx *ctx, const char *dir, golden_result *out);

/* Parse and load the case in dir (meta.json and every file, with every check and bound of
   golden_run_case) without replaying it: *out is GOLDEN_PASS when it could be replayed.
   Needs no context or device (used by the fuzzer fuzz/fuzz_golden.c). */
void golden_check_case(const char *dir, golden_result *out);

#ifdef __cplusplus
}
#endif
#endif /* CLOPT_GOLDEN_H */
