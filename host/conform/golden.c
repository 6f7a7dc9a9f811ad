/* SPDX-License-Identifier: MIT */
/*
 * golden: replay one golden-vector case through clopt's optimizer level.
 * See golden.h and tests/data/golden/README.md for the format; golden_internal.h for how
 * the sources divide the work (this one: a case's meta.json and files, the replay and the
 * verdict).
 */
#define _POSIX_C_SOURCE 200809L

#include "golden_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Resource bounds (golden.h): a case is refused, with a message naming the limit, before
   anything larger is allocated, read or replayed. */
#define GOLDEN_MAX_ELEMS GOLDEN_LIMIT_ELEMENTS   /* elements of the parameter */
#define GOLDEN_MAX_STEPS GOLDEN_LIMIT_STEPS      /* steps T */
#define GOLDEN_MAX_FLOATS GOLDEN_LIMIT_FLOATS    /* values of all files of a case */
#define GOLDEN_MAX_FILES GOLDEN_LIMIT_FILES      /* entries of meta.json's files list */
/* Element offsets of the tensors inside their buffers (exercise non-zero offsets), and
   the guard elements after each tensor, which must come back unchanged (every byte
   GUARD_BYTE). With stochastic rounding θ starts at element 0: the random bits of an element
   depend on its index in the buffer (clopt_step_args.stochastic_rounding), and the format
   counts that index from the tensor's first element. */
#define OFF_PARAM 3u
#define OFF_GRAD 5u
#define OFF_HESS 7u
#define GUARD 4u
#define GUARD_BYTE 0xA5
#define MAX_DIMS 8
/* Stochastic rounding's stream is the tensor's index at the optimizer level: a case with
   stream k registers k one-element float32 tensors first (at most this many). */
#define MAX_SR_STREAM 64u

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
    cJSON *meta;
    clopt_rule rule;
    clopt_hparams hp;
    golden_storage storage;
    size_t ndim;
    uint64_t shape[MAX_DIMS];
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

static void fail(runner *r, const char *fmt, ...) GOLDEN_PRINTF(2, 3);
static void fail(runner *r, const char *fmt, ...)
{
    r->res->verdict = GOLDEN_FAIL;
    if (r->res->reason[0] != '\0') {
        r->more++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->res->reason, sizeof r->res->reason, fmt, ap);
    va_end(ap);
}

static void unsupported(runner *r, const char *fmt, ...) GOLDEN_PRINTF(2, 3);
static void unsupported(runner *r, const char *fmt, ...)
{
    if (r->res->verdict == GOLDEN_FAIL)
        return; /* a malformed case stays FAIL */
    r->res->verdict = GOLDEN_UNSUPPORTED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->res->reason, sizeof r->res->reason, fmt, ap);
    va_end(ap);
}

static void gcase_free(gcase *c)
{
    free(c->meta_path);
    cJSON_Delete(c->meta);
    golden_array_free(&c->param0);
    golden_array_free(&c->grads);
    golden_array_free(&c->hess);
    for (size_t i = 0; i < c->nexp; i++) {
        free(c->exp[i].name);
        free(c->exp[i].path);
        golden_array_free(&c->exp[i].data);
    }
    free(c->exp);
}

/* 1 when name (without its extension, stem characters) is `want`. */
static int stem_is(const char *name, size_t stem, const char *want)
{
    return strlen(want) == stem && strncmp(name, want, stem) == 0;
}

/* ------------------------------------------------------------------------------------ */
/* meta.json                                                                             */
/* ------------------------------------------------------------------------------------ */

/* steps, shape, the Hessian schedule, final_scalar_state and storage. Returns 0 or -1. */
static int parse_scalars(runner *r, gcase *c)
{
    char why[GOLDEN_REASON_MAX];
    golden_result *res = r->res;
    const char *mp = c->meta_path;
    const int sophia = c->rule == CLOPT_SOPHIA;

    uint64_t steps;
    if (!golden_json_uint(cJSON_GetObjectItemCaseSensitive(c->meta, "steps"), &steps) ||
        steps == 0) {
        fail(r, "%s: \"steps\" is not a positive integer", mp);
        return -1;
    }
    if (steps > GOLDEN_MAX_STEPS) {
        fail(r, "%s: %llu steps, more than the limit of %llu", mp, (unsigned long long)steps,
             (unsigned long long)GOLDEN_MAX_STEPS);
        return -1;
    }
    c->steps = (size_t)steps;
    if (golden_parse_shape(cJSON_GetObjectItemCaseSensitive(c->meta, "shape"), MAX_DIMS,
                           c->shape, &c->ndim, &c->n) != 0) {
        fail(r, "%s: \"shape\" is not a list of 1 to %d positive integers (or too large)", mp,
             MAX_DIMS);
        return -1;
    }
    if (c->n > GOLDEN_MAX_ELEMS) {
        fail(r, "%s: %zu elements, more than the limit of %zu per tensor", mp, c->n,
             (size_t)GOLDEN_MAX_ELEMS);
        return -1;
    }
    if (c->n > GOLDEN_MAX_FLOATS / c->steps) {
        fail(r, "%s: steps * elements = %llu gradient values, more than the limit of %zu", mp,
             (unsigned long long)c->steps * c->n, (size_t)GOLDEN_MAX_FLOATS);
        return -1;
    }

    /* Sophia's Hessian schedule: block j after step (j+1)*hess_interval. */
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(c->meta, "hess_update_after_steps");
    if (hs != NULL) {
        if (!sophia) {
            unsupported(r, "hess_update_after_steps given for %s: only sophia takes "
                           "Hessian estimates", res->optimizer);
            return -1;
        }
        if (!cJSON_IsArray(hs)) {
            fail(r, "%s: \"hess_update_after_steps\" is not a list", mp);
            return -1;
        }
        size_t j = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, hs)
        {
            uint64_t t;
            if (!golden_json_uint(s, &t)) {
                fail(r, "%s: hess_update_after_steps[%zu] is not an integer", mp, j);
                return -1;
            }
            if (t != (uint64_t)(j + 1) * c->hp.hess_interval || t > c->steps) {
                unsupported(r, "hess_update_after_steps[%zu] = %llu: clopt consumes the "
                               "Hessian after every hess_interval-th step (%u) up to T = %zu",
                            j, (unsigned long long)t, c->hp.hess_interval, c->steps);
                return -1;
            }
            j++;
        }
        if (j != c->steps / c->hp.hess_interval) {
            unsupported(r, "hess_update_after_steps has %zu entries; clopt consumes an "
                           "estimate after each of the %zu multiples of %u up to T",
                        j, c->steps / c->hp.hess_interval, c->hp.hess_interval);
            return -1;
        }
        c->hess_blocks = j;
    }

    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(c->meta, "final_scalar_state");
    if (fs != NULL) {
        if (!cJSON_IsObject(fs)) {
            fail(r, "%s: \"final_scalar_state\" is not an object", mp);
            return -1;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(fs, "step");
        if (st != NULL) {
            if (!golden_json_uint(st, &c->final_step)) {
                fail(r, "%s: final_scalar_state.step is not an integer", mp);
                return -1;
            }
            c->has_final_step = 1;
        }
        const cJSON *mu = cJSON_GetObjectItemCaseSensitive(fs, "mu_product");
        if (mu != NULL && c->rule == CLOPT_NADAM) {
            if (!cJSON_IsNumber(mu)) {
                fail(r, "%s: final_scalar_state.mu_product is not a number", mp);
                return -1;
            }
            c->has_mu_product = 1;
            c->mu_product = mu->valuedouble;
        }
    }

    golden_verdict v = golden_parse_storage(cJSON_GetObjectItemCaseSensitive(c->meta, "storage"),
                                            &c->storage, why, sizeof why);
    if (v == GOLDEN_UNSUPPORTED) {
        unsupported(r, "%s: %s", mp, why);
        return -1;
    }
    if (v == GOLDEN_FAIL) {
        fail(r, "%s: %s", mp, why);
        return -1;
    }
    if (c->storage.stochastic_rounding && c->storage.sr_stream > MAX_SR_STREAM) {
        unsupported(r, "%s: stochastic rounding stream %u: the optimizer level uses the "
                       "tensor's index, and clopt-conform registers at most %u tensors before "
                       "the case's", mp, c->storage.sr_stream, MAX_SR_STREAM);
        return -1;
    }
    c->hp.master = (int)c->storage.master;
    c->hp.stochastic_rounding = c->storage.stochastic_rounding;
    c->hp.state_dtype = (int)c->storage.state;
    return 0;
}

/* The storage type a file of this name must have (see the README's "Storage types"). */
static clopt_dtype wanted_dtype(const gcase *c, const char *name, size_t stem)
{
    const golden_storage *s = &c->storage;
    if (stem_is(name, stem, "param0") || stem_is(name, stem, "param_1") ||
        stem_is(name, stem, "param_T") || stem_is(name, stem, "param_eval_T"))
        return s->param;
    if (stem_is(name, stem, "grads"))
        return s->grad;
    if (stem_is(name, stem, "state_master_remainder"))
        return CLOPT_DTYPE_U16;
    if (stem_is(name, stem, "hess") || stem_is(name, stem, "state_master") ||
        (stem > 7 && strncmp(name + stem - 7, ".absmax", 7) == 0))
        return CLOPT_DTYPE_F32;
    return s->state;
}

/* Every entry of meta.json's files: checked, and loaded into c. Returns 0 or -1. */
static int load_files(runner *r, gcase *c)
{
    char why[GOLDEN_REASON_MAX];
    golden_result *res = r->res;
    const char *mp = c->meta_path;
    const int sophia = c->rule == CLOPT_SOPHIA;
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(c->meta, "hess_update_after_steps");

    golden_tolerance top;
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(c->meta, "tolerance");
    int has_top_tol = tt != NULL && golden_parse_tolerance(tt, &top) == 0;
    if (tt != NULL && !has_top_tol) {
        fail(r, "%s: \"tolerance\" is not {rtol, atol} with finite values >= 0", mp);
        return -1;
    }

    const cJSON *files = cJSON_GetObjectItemCaseSensitive(c->meta, "files");
    if (!cJSON_IsArray(files)) {
        fail(r, "%s: no \"files\" list", mp);
        return -1;
    }
    int nfiles = cJSON_GetArraySize(files);
    if (nfiles > GOLDEN_MAX_FILES) {
        fail(r, "%s: %d entries in files, more than the limit of %d", mp, nfiles,
             GOLDEN_MAX_FILES);
        return -1;
    }
    c->exp = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(expected_file));
    /* The listed names, sorted: duplicates are neighbours, and the folder's files are looked
       up by binary search (n log n, not n^2). */
    const char **listed = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(char *));
    if (c->exp == NULL || listed == NULL) {
        free(listed);
        fail(r, "out of memory");
        return -1;
    }
    size_t nlisted = 0;
    {
        const cJSON *g;
        cJSON_ArrayForEach(g, files)
        {
            const cJSON *gn = cJSON_GetObjectItemCaseSensitive(g, "name");
            if (cJSON_IsString(gn))
                listed[nlisted++] = gn->valuestring;
        }
        qsort(listed, nlisted, sizeof *listed, golden_cmp_str);
        for (size_t k = 1; k < nlisted; k++)
            if (strcmp(listed[k - 1], listed[k]) == 0) {
                fail(r, "%s: %s is listed twice in files", mp, listed[k]);
                free(listed);
                return -1;
            }
    }
    size_t floats = 0; /* values loaded so far */
    size_t idx = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, files)
    {
        size_t i = idx++;
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *jr = cJSON_GetObjectItemCaseSensitive(f, "role");
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(f, "dtype");
        clopt_dtype ext;
        size_t stem;
        if (!cJSON_IsObject(f) || !cJSON_IsString(jn) ||
            !golden_file_dtype(jn->valuestring, &ext, &stem)) {
            fail(r, "%s: files[%zu] has no valid \"name\" (a plain file name ending in .f32, "
                    ".f16, .bf16, .u16 or .u8)", mp, i);
            continue;
        }
        const char *name = jn->valuestring;
        if (!cJSON_IsString(jr) || (strcmp(jr->valuestring, "input") != 0 &&
                                    strcmp(jr->valuestring, "expected") != 0)) {
            fail(r, "%s: %s has no \"role\" input/expected", mp, name);
            continue;
        }
        clopt_dtype dtype = CLOPT_DTYPE_F32;
        if (jd != NULL && (!cJSON_IsString(jd) || !golden_dtype_parse(jd->valuestring, &dtype))) {
            fail(r, "%s: %s has a dtype other than float32, float16, bfloat16, uint16, uint8",
                 mp, name);
            continue;
        }
        if (dtype != ext) {
            fail(r, "%s: %s has dtype %s, its extension says %s", mp, name,
                 golden_dtype_name(dtype), golden_dtype_name(ext));
            continue;
        }
        const int input = strcmp(jr->valuestring, "input") == 0;
        /* The shape this file must have, by name. */
        uint64_t want[MAX_DIMS + 1];
        size_t wnd = 0;
        golden_array *dst = NULL;
        const int is_state = strncmp(name, "state_", 6) == 0 && stem > 6;
        if (stem_is(name, stem, "param0") || stem_is(name, stem, "param_1") ||
            stem_is(name, stem, "param_T") || stem_is(name, stem, "param_eval_T") ||
            is_state) {
            int want_input = stem_is(name, stem, "param0");
            if (input != want_input) {
                fail(r, "%s: %s should have role \"%s\"", mp, name,
                     want_input ? "input" : "expected");
                continue;
            }
            memcpy(want, c->shape, c->ndim * sizeof(uint64_t));
            wnd = c->ndim;
            if (want_input)
                dst = &c->param0;
        } else if (stem_is(name, stem, "grads") || stem_is(name, stem, "hess")) {
            int is_hess = name[0] == 'h';
            if (!input) {
                fail(r, "%s: %s should have role \"input\"", mp, name);
                continue;
            }
            if (is_hess && !sophia) {
                unsupported(r, "input %s given for %s: only sophia takes Hessian estimates",
                            name, res->optimizer);
                free(listed);
                return -1;
            }
            if (is_hess && hs == NULL) {
                fail(r, "%s: %s given without \"hess_update_after_steps\"", mp, name);
                continue;
            }
            want[0] = is_hess ? c->hess_blocks : c->steps;
            memcpy(want + 1, c->shape, c->ndim * sizeof(uint64_t));
            wnd = c->ndim + 1;
            dst = is_hess ? &c->hess : &c->grads;
        } else {
            fail(r, "%s: unknown %s file %s", mp, input ? "input" : "expected", name);
            continue;
        }
        const clopt_dtype wd = wanted_dtype(c, name, stem);
        if (dtype != wd) {
            fail(r, "%s: %s holds %s values, the storage object gives %s", mp, name,
                 golden_dtype_name(dtype), golden_dtype_name(wd));
            continue;
        }
        /* One file per role: param_T.f32 and param_T.bf16 would be the same tensor. */
        int twice = dst != NULL && dst->data != NULL;
        for (size_t k = 0; k < c->nexp && !twice; k++)
            twice = c->exp[k].stem == stem && strncmp(c->exp[k].name, name, stem) == 0;
        if (twice) {
            fail(r, "%s: %.*s is listed twice in files (in two types)", mp, (int)stem, name);
            continue;
        }
        uint64_t got[MAX_DIMS + 1];
        size_t gnd = 0, gn = 0;
        int shape_ok = golden_parse_shape(cJSON_GetObjectItemCaseSensitive(f, "shape"),
                                          MAX_DIMS + 1, got, &gnd, &gn) == 0;
        /* A state file has the parameter's shape, except the factored statistics of
           Adafactor and the absmaxes of 8-bit state (vectors, at most as long as the
           parameter); a vector's length is then checked against the optimizer's state. */
        if (shape_ok && is_state && gnd == 1 && gn <= c->n) {
            memcpy(want, got, gnd * sizeof(uint64_t));
            wnd = gnd;
        }
        if (!shape_ok || gnd != wnd || memcmp(got, want, wnd * sizeof(uint64_t)) != 0) {
            char ws[128], gs[128];
            golden_shape_str(ws, sizeof ws, want, wnd);
            if (shape_ok)
                golden_shape_str(gs, sizeof gs, got, gnd);
            else
                snprintf(gs, sizeof gs, "(invalid)");
            fail(r, "%s: shape %s of %s in files, expected %s", mp, gs, name, ws);
            continue;
        }
        size_t count = gn; /* the file's shape is the wanted one */
        if (count > GOLDEN_MAX_FLOATS - floats) {
            fail(r, "%s: the files hold more than the limit of %zu values in all", mp,
                 (size_t)GOLDEN_MAX_FLOATS);
            free(listed);
            return -1;
        }
        floats += count;
        char *path = golden_path_join(c->dir, name);
        if (path == NULL) {
            fail(r, "out of memory");
            free(listed);
            return -1;
        }
        golden_array data;
        if (golden_load_array(path, dtype, count, &data, why, sizeof why) != 0) {
            fail(r, "%s", why);
            free(path);
            continue;
        }
        if (dst != NULL) {
            *dst = data;
            free(path);
            continue;
        }
        expected_file *e = &c->exp[c->nexp];
        e->data = data;
        e->path = path;
        e->stem = stem;
        e->name = strdup(name);
        c->nexp++;
        if (e->name == NULL) {
            fail(r, "out of memory");
            free(listed);
            return -1;
        }
        const cJSON *tol = cJSON_GetObjectItemCaseSensitive(f, "tolerance");
        if (tol != NULL) {
            if (golden_parse_tolerance(tol, &e->tol) != 0) {
                fail(r, "%s: tolerance of %s is not {rtol, atol} and/or {ulps} (with "
                        "mismatch_fraction, mismatch_rtol, mismatch_atol), finite and >= 0",
                     mp, name);
                continue;
            }
        } else if (has_top_tol) {
            e->tol = top;
        } else {
            fail(r, "%s: no tolerance for %s", mp, name);
            continue;
        }
        if (!e->tol.has_ulps && (dtype == CLOPT_DTYPE_U8 || dtype == CLOPT_DTYPE_U16)) {
            fail(r, "%s: the tolerance of %s (%s) needs \"ulps\"", mp, name,
                 golden_dtype_name(dtype));
            continue;
        }
    }
    if (res->verdict != GOLDEN_PASS) {
        free(listed);
        return -1;
    }
    /* Required files. */
    int have_param1 = 0, have_paramT = 0;
    for (size_t k = 0; k < c->nexp; k++) {
        have_param1 |= stem_is(c->exp[k].name, c->exp[k].stem, "param_1");
        have_paramT |= stem_is(c->exp[k].name, c->exp[k].stem, "param_T");
    }
    const char *missing = c->param0.data == NULL  ? "param0"
                          : c->grads.data == NULL ? "grads"
                          : !have_param1          ? "param_1"
                          : !have_paramT          ? "param_T"
                          : (sophia && c->hess_blocks > 0 && c->hess.data == NULL) ? "hess"
                                                                                  : NULL;
    if (missing != NULL) {
        clopt_dtype t = strcmp(missing, "grads") == 0  ? c->storage.grad
                        : strcmp(missing, "hess") == 0 ? CLOPT_DTYPE_F32
                                                       : c->storage.param;
        fail(r, "%s: files does not list %s.%s", mp, missing, golden_dtype_ext(t));
        free(listed);
        return -1;
    }
    /* Every file of the directory in a storage type must be listed (an unlisted expected
       file would otherwise go unchecked). */
    DIR *d = opendir(c->dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            clopt_dtype t;
            size_t stem;
            if (!golden_file_dtype(de->d_name, &t, &stem))
                continue;
            const char *key = de->d_name;
            if (bsearch(&key, listed, nlisted, sizeof *listed, golden_cmp_str) == NULL)
                fail(r, "%s/%s is not listed in meta.json files", c->dir, de->d_name);
        }
        closedir(d);
    }
    free(listed);
    return res->verdict == GOLDEN_PASS ? 0 : -1;
}

/* Parse meta.json and load every file. Returns 0 when the case can be replayed; on
   failure the verdict (FAIL / UNSUPPORTED) and reason are set. */
static int load_case(runner *r, gcase *c)
{
    char why[GOLDEN_REASON_MAX];
    golden_result *res = r->res;

    c->meta_path = golden_path_join(c->dir, "meta.json");
    if (c->meta_path == NULL) {
        fail(r, "out of memory");
        return -1;
    }
    c->meta = golden_read_json(c->meta_path, why, sizeof why);
    if (c->meta == NULL) {
        fail(r, "%s", why);
        return -1;
    }
    const char *mp = c->meta_path;
    if (!cJSON_IsObject(c->meta)) {
        fail(r, "%s: not a JSON object", mp);
        return -1;
    }
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(c->meta, "optimizer");
    if (!cJSON_IsString(opt)) {
        fail(r, "%s: no string \"optimizer\"", mp);
        return -1;
    }
    snprintf(res->optimizer, sizeof res->optimizer, "%s", opt->valuestring);

    golden_verdict v = golden_map_hyper(opt->valuestring,
                                        cJSON_GetObjectItemCaseSensitive(c->meta, "hyper"),
                                        &c->rule, &c->hp, why, sizeof why);
    if (v == GOLDEN_UNSUPPORTED) {
        unsupported(r, "%s", why);
        return -1;
    }
    if (v == GOLDEN_FAIL) {
        fail(r, "%s: %s", mp, why);
        return -1;
    }
    if (parse_scalars(r, c) != 0)
        return -1;
    return load_files(r, c);
}

/* ------------------------------------------------------------------------------------ */
/* Replay                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Compare a result with an expected file; updates the result's error maxima and report. */
static void compare(runner *r, const expected_file *e, const golden_array *got)
{
    golden_result *res = r->res;
    golden_comparison k;
    golden_compare(&e->tol, &e->data, got, &k);
    res->files_compared++;
    if (k.any_nan)
        r->any_nan = 1;
    if (k.max_abs > res->max_abs_err)
        res->max_abs_err = k.max_abs;
    if (k.max_rel > res->max_rel_err)
        res->max_rel_err = k.max_rel;
    if (k.used > res->max_tol_used)
        res->max_tol_used = k.used;
    if (res->nreports < GOLDEN_REPORT_FILES) {
        golden_file_report *p = &res->report[res->nreports++];
        snprintf(p->name, sizeof p->name, "%s", e->name);
        p->used = k.used;
        p->mismatches = k.mismatches;
        p->allowed = k.allowed;
        p->count = e->data.count;
    }
    if (k.bad == 0 && k.mismatches <= k.allowed)
        return;
    res->files_failed++;
    const size_t w = k.worst;
    const double x = golden_value(got, w), ev = golden_value(&e->data, w);
    if (k.bad == 0) {
        fail(r, "%s: %zu of %zu values differ from the expected ones%s, more than the %zu "
                "that mismatch_fraction %g allows",
             e->path, k.mismatches, e->data.count,
             e->tol.has_mismatch_value ? " beyond mismatch_rtol/mismatch_atol" : "", k.allowed,
             e->tol.mismatch_fraction);
    } else if (e->tol.has_ulps) {
        fail(r, "%s: %zu of %zu values out of tolerance; worst [%zu] got %.9g expected %.9g "
                "(%.3g of the tolerance of %g ulps%s)",
             e->path, k.bad, e->data.count, w, x, ev, k.used, e->tol.ulps,
             e->tol.has_value ? " and rtol/atol" : "");
    } else {
        fail(r, "%s: %zu of %zu values out of tolerance; worst [%zu] got %.9g expected %.9g "
                "(|diff| %.3g > atol %.3g + rtol %.3g*|e|)",
             e->path, k.bad, e->data.count, w, x, ev, fabs(x - ev), e->tol.atol, e->tol.rtol);
    }
}

static const expected_file *find_expected(const gcase *c, const char *stem)
{
    for (size_t i = 0; i < c->nexp; i++)
        if (stem_is(c->exp[i].name, c->exp[i].stem, stem))
            return &c->exp[i];
    return NULL;
}

static void cl_fail(runner *r, const char *what, cl_int err)
{
    fail(r, "%s failed: %s", what,
         clopt_status_name((clopt_status)(CLOPT_ERR_OPENCL_BASE + err)));
}

static void clopt_fail(runner *r, clopt_ctx *ctx, const char *what, clopt_status st)
{
    const char *detail = clopt_ctx_last_error(ctx);
    if (st == CLOPT_ERR_UNSUPPORTED && r->res->verdict == GOLDEN_PASS) {
        unsupported(r, "%s: %s%s%s", what, clopt_status_name(st), detail[0] ? ": " : "",
                    detail);
        return;
    }
    fail(r, "%s: %s%s%s", what, clopt_status_name(st), detail[0] ? ": " : "", detail);
}

/* Create a buffer of off + n + GUARD elements of es bytes: the data (zeros when NULL)
   between guard bytes. scratch holds (off + n + GUARD) * es bytes. */
static cl_mem make_buffer(runner *r, clopt_ctx *ctx, size_t off, size_t n, size_t es,
                          const void *data, unsigned char *scratch)
{
    cl_int err;
    size_t total = (off + n + GUARD) * es;
    cl_mem m = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE, total, NULL, &err);
    if (m == NULL || err != CL_SUCCESS) {
        cl_fail(r, "clCreateBuffer", err);
        return NULL;
    }
    memset(scratch, GUARD_BYTE, total);
    if (data != NULL)
        memcpy(scratch + off * es, data, n * es);
    else
        memset(scratch + off * es, 0, n * es);
    err = clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0, total, scratch, 0, NULL,
                               NULL);
    if (err != CL_SUCCESS) {
        cl_fail(r, "clEnqueueWriteBuffer", err);
        clReleaseMemObject(m);
        return NULL;
    }
    return m;
}

/* Read back a whole buffer made by make_buffer; check the guard bytes. The tensor is at
   scratch + off * es. */
static int read_back(runner *r, clopt_ctx *ctx, cl_mem m, size_t off, size_t n, size_t es,
                     unsigned char *scratch, const char *what)
{
    size_t total = (off + n + GUARD) * es;
    cl_int err = clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0, total, scratch, 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS) {
        cl_fail(r, "clEnqueueReadBuffer", err);
        return -1;
    }
    for (size_t i = 0; i < total; i++) {
        if (i == off * es)
            i = (off + n) * es;
        if (i < total && scratch[i] != GUARD_BYTE) {
            fail(r, "%s buffer: element %zu outside the tensor (offset %zu, %zu elements) was "
                    "overwritten",
                 what, i / es, off, n);
            return -1;
        }
    }
    return 0;
}

/* Read state `name` of tensor `param` into host (n * 4 bytes) and compare it with e. */
static void check_state(runner *r, clopt_ctx *ctx, clopt_optimizer *opt, const gcase *c,
                        size_t param, const expected_file *e, void *host)
{
    const char *name = e->name + 6;
    const int nl = (int)(e->stem - 6);
    size_t count = clopt_optimizer_state_entry_count(opt);
    clopt_state_entry se;
    size_t i = 0;
    for (; i < count; i++)
        if (clopt_optimizer_state_entry(opt, i, &se) == CLOPT_SUCCESS && se.param == param &&
            se.name != NULL && strlen(se.name) == (size_t)nl && strncmp(se.name, name, nl) == 0)
            break;
    if (i == count) {
        fail(r, "%s: clopt rule %s (with these hyperparameters) has no state '%.*s'", e->path,
             clopt_rule_name(c->rule), nl, name);
        return;
    }
    if (se.dtype != e->data.dtype) {
        fail(r, "%s: clopt keeps state '%.*s' as %s, the file holds %s", e->path, nl, name,
             golden_dtype_name(se.dtype), golden_dtype_name(e->data.dtype));
        return;
    }
    if (se.length != e->data.count) {
        fail(r, "%s: %zu values, the optimizer's state '%.*s' has %zu", e->path, e->data.count,
             nl, name, se.length);
        return;
    }
    if (se.dtype == CLOPT_DTYPE_F32) {
        /* read_state: Lookahead's slow weights of a tensor that has not stepped are θ */
        clopt_status st = clopt_optimizer_read_state(opt, param, se.index, host, se.length);
        if (st != CLOPT_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "clopt_optimizer_read_state(%.*s)", nl, name);
            clopt_fail(r, ctx, what, st);
            return;
        }
    } else {
        const size_t es = clopt_dtype_size(se.dtype);
        cl_int err = clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), se.tensor.buffer, CL_TRUE,
                                         se.tensor.offset * es, se.length * es, host, 0, NULL,
                                         NULL);
        if (err != CL_SUCCESS) {
            cl_fail(r, "clEnqueueReadBuffer (state)", err);
            return;
        }
    }
    golden_array got = {se.dtype, se.length, host};
    compare(r, e, &got);
}

/* Stochastic rounding's stream k: k one-element float32 tensors registered before the case's
   (zero gradients), so that the case's tensor has index k. */
static int add_padding(runner *r, clopt_ctx *ctx, clopt_optimizer *opt, uint32_t k,
                       cl_mem pad[2])
{
    if (k == 0)
        return 0;
    for (int b = 0; b < 2; b++) {
        cl_int err;
        pad[b] = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE, k * sizeof(float),
                                NULL, &err);
        const float zero = 0.0f;
        if (pad[b] != NULL)
            err = clEnqueueFillBuffer(clopt_ctx_cl_queue(ctx), pad[b], &zero, sizeof zero, 0,
                                      k * sizeof(float), 0, NULL, NULL);
        if (pad[b] == NULL || err != CL_SUCCESS) {
            cl_fail(r, "creating the stream padding tensors", err);
            return -1;
        }
    }
    for (uint32_t i = 0; i < k; i++) {
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){pad[0], i};
        d.grad = (clopt_tensor){pad[1], i};
        d.ndim = 1;
        d.shape[0] = 1;
        clopt_status st = clopt_optimizer_add_param_desc(opt, 0, &d, NULL);
        if (st != CLOPT_SUCCESS) {
            clopt_fail(r, ctx, "clopt_optimizer_add_param_desc (stream padding)", st);
            return -1;
        }
    }
    return 0;
}

static void replay(runner *r, clopt_ctx *ctx, gcase *c)
{
    const size_t n = c->n;
    const golden_storage *s = &c->storage;
    const size_t ps = clopt_dtype_size(s->param), gsz = clopt_dtype_size(s->grad);
    const size_t off_p = s->stochastic_rounding ? 0 : OFF_PARAM;
    const int sophia = c->rule == CLOPT_SOPHIA;
    const int use_hess = sophia && c->hess_blocks > 0;
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    clopt_optimizer *opt = NULL;
    cl_mem pbuf = NULL, gbuf = NULL, hbuf = NULL, pad[2] = {NULL, NULL};
    unsigned char *scratch = malloc((n + 16 + GUARD) * sizeof(float));
    float *state = malloc(n * sizeof(float));
    if (scratch == NULL || state == NULL) {
        fail(r, "out of memory");
        goto done;
    }
    pbuf = make_buffer(r, ctx, off_p, n, ps, c->param0.data, scratch);
    if (pbuf == NULL)
        goto done;
    gbuf = make_buffer(r, ctx, OFF_GRAD, n, gsz, NULL, scratch);
    if (gbuf == NULL)
        goto done;
    if (use_hess) {
        hbuf = make_buffer(r, ctx, OFF_HESS, n, sizeof(float), NULL, scratch);
        if (hbuf == NULL)
            goto done;
    }

    clopt_status st = clopt_optimizer_create(ctx, c->rule, &c->hp, &opt);
    if (st != CLOPT_SUCCESS) {
        opt = NULL;
        clopt_fail(r, ctx, "clopt_optimizer_create", st);
        goto done;
    }
    if (s->stochastic_rounding && (st = clopt_optimizer_seed(opt, s->sr_seed)) != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_seed", st);
        goto done;
    }
    if (s->has_grad_scale &&
        (st = clopt_optimizer_set_grad_scale(opt, s->grad_scale)) != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_set_grad_scale", st);
        goto done;
    }
    const uint32_t first = s->stochastic_rounding ? s->sr_stream : 0;
    if (add_padding(r, ctx, opt, first, pad) != 0)
        goto done;
    clopt_param_desc desc;
    clopt_param_desc_init(&desc);
    desc.param = (clopt_tensor){pbuf, off_p};
    desc.grad = (clopt_tensor){gbuf, OFF_GRAD};
    if (use_hess)
        desc.hessian = (clopt_tensor){hbuf, OFF_HESS};
    desc.ndim = c->ndim;
    for (size_t d = 0; d < c->ndim; d++)
        desc.shape[d] = (size_t)c->shape[d];
    desc.param_dtype = s->param;
    desc.grad_dtype = s->grad;
    size_t index = (size_t)-1;
    st = clopt_optimizer_add_param_desc(opt, 0, &desc, &index);
    if (st != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_add_param_desc", st);
        goto done;
    }
    if (index != first) {
        fail(r, "clopt_optimizer_add_param returned index %zu for tensor %u", index, first);
        goto done;
    }

    golden_array theta = {s->param, n, scratch + off_p * ps};
    for (size_t t = 1; t <= c->steps; t++) {
        cl_int err = clEnqueueWriteBuffer(q, gbuf, CL_TRUE, OFF_GRAD * gsz, n * gsz,
                                          (const unsigned char *)c->grads.data +
                                              (t - 1) * n * gsz,
                                          0, NULL, NULL);
        if (err != CL_SUCCESS) {
            cl_fail(r, "clEnqueueWriteBuffer (grad)", err);
            goto done;
        }
        if (use_hess && t % c->hp.hess_interval == 0) {
            size_t j = t / c->hp.hess_interval - 1;
            if (j < c->hess_blocks) {
                err = clEnqueueWriteBuffer(q, hbuf, CL_TRUE, OFF_HESS * sizeof(float),
                                           n * sizeof(float), (const float *)c->hess.data + j * n,
                                           0, NULL, NULL);
                if (err != CL_SUCCESS) {
                    cl_fail(r, "clEnqueueWriteBuffer (hess)", err);
                    goto done;
                }
            }
        }
        st = clopt_optimizer_step(opt, NULL);
        if (st != CLOPT_SUCCESS) {
            char what[64];
            snprintf(what, sizeof what, "clopt_optimizer_step (step %zu)", t);
            clopt_fail(r, ctx, what, st);
            goto done;
        }
        if (t == 1) {
            if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
                goto done;
            compare(r, find_expected(c, "param_1"), &theta);
        }
    }
    cl_int err = clFinish(q);
    if (err != CL_SUCCESS) {
        cl_fail(r, "clFinish", err);
        goto done;
    }
    if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
        goto done;
    compare(r, find_expected(c, "param_T"), &theta);

    /* The gradient buffer is read-only for the library. */
    if (read_back(r, ctx, gbuf, OFF_GRAD, n, gsz, scratch, "grad") != 0)
        goto done;
    if (memcmp(scratch + OFF_GRAD * gsz,
               (const unsigned char *)c->grads.data + (c->steps - 1) * n * gsz, n * gsz) != 0)
        fail(r, "the gradient buffer was modified by the optimizer");

    /* State tensors, matched by the names of clopt_optimizer_state_entry. */
    for (size_t i = 0; i < c->nexp; i++)
        if (strncmp(c->exp[i].name, "state_", 6) == 0)
            check_state(r, ctx, opt, c, index, &c->exp[i], state);

    /* Schedule-Free: eval mode's x, then back to train mode's y (the same values up to the
       rounding of the two interpolations) */
    const expected_file *ev = find_expected(c, "param_eval_T");
    if (ev != NULL) {
        if (c->rule != CLOPT_SCHEDULE_FREE_ADAMW && c->rule != CLOPT_SCHEDULE_FREE_SGD) {
            fail(r, "%s: param_eval_T is for the schedule-free rules", c->meta_path);
            goto done;
        }
        if ((st = clopt_optimizer_eval(opt)) != CLOPT_SUCCESS) {
            clopt_fail(r, ctx, "clopt_optimizer_eval", st);
            goto done;
        }
        if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
            goto done;
        compare(r, ev, &theta);
        if ((st = clopt_optimizer_train(opt)) != CLOPT_SUCCESS) {
            clopt_fail(r, ctx, "clopt_optimizer_train", st);
            goto done;
        }
        if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
            goto done;
        compare(r, find_expected(c, "param_T"), &theta);
    }

    uint64_t count = clopt_optimizer_step_count(opt);
    uint64_t want = c->has_final_step ? c->final_step : (uint64_t)c->steps;
    if (count != want)
        fail(r, "%s: final_scalar_state.step is %llu, clopt_optimizer_step_count gives %llu",
             c->meta_path, (unsigned long long)want, (unsigned long long)count);
    if (c->has_mu_product) {
        double mu = clopt_nadam_mu_product(&c->hp, c->steps);
        if (!(fabs(mu - c->mu_product) <= 1e-9 * fabs(c->mu_product)))
            fail(r, "%s: final_scalar_state.mu_product is %.17g, clopt_nadam_mu_product "
                    "gives %.17g",
                 c->meta_path, c->mu_product, mu);
    }

done:
    if (opt != NULL)
        clopt_optimizer_destroy(opt);
    cl_mem bufs[] = {pbuf, gbuf, hbuf, pad[0], pad[1]};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i] != NULL)
            clReleaseMemObject(bufs[i]);
    free(scratch);
    free(state);
}

static void run_case(clopt_ctx *ctx, const char *dir, golden_result *out, int replay_it)
{
    memset(out, 0, sizeof *out);
    out->verdict = GOLDEN_PASS;
    runner r = {out, 0, 0};
    if (dir == NULL) {
        fail(&r, "no case directory given");
        return;
    }
    /* The name: the last non-empty path component. */
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/')
        l--;
    size_t b = l;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(out->name, sizeof out->name, "%.*s", (int)(l - b), dir + b);

    if (ctx == NULL && replay_it) {
        fail(&r, "no clopt context");
        return;
    }
    gcase c;
    memset(&c, 0, sizeof c);
    c.dir = dir;
    if (load_case(&r, &c) == 0 && replay_it)
        replay(&r, ctx, &c);
    gcase_free(&c);

    if (r.any_nan) {
        out->max_abs_err = NAN;
        out->max_rel_err = NAN;
        out->max_tol_used = INFINITY;
    }
    if (out->verdict == GOLDEN_FAIL && r.more > 0) {
        size_t used = strlen(out->reason);
        if (used < sizeof out->reason)
            snprintf(out->reason + used, sizeof out->reason - used, " (+%zu more problem%s)",
                     r.more, r.more == 1 ? "" : "s");
    }
}

void golden_run_case(clopt_ctx *ctx, const char *dir, golden_result *out)
{
    run_case(ctx, dir, out, 1);
}

void golden_check_case(const char *dir, golden_result *out)
{
    run_case(NULL, dir, out, 0);
}
