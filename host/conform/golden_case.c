/* SPDX-License-Identifier: MIT */
/*
 * golden: one case's meta.json and files, read and checked against the resource bounds
 * (golden.h) before anything is replayed. See golden_internal.h for how the sources divide
 * the work, tests/data/golden/README.md for the format.
 */
#define _POSIX_C_SOURCE 200809L

#include "golden_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
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
/* Stochastic rounding's stream is the tensor's index at the optimizer level: a case with
   stream k registers k one-element float32 tensors first (at most this many). */
#define MAX_SR_STREAM 64u

void golden_fail(runner *r, const char *fmt, ...)
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

void golden_unsupported(runner *r, const char *fmt, ...)
{
    if (r->res->verdict == GOLDEN_FAIL)
        return; /* a malformed case stays FAIL */
    r->res->verdict = GOLDEN_UNSUPPORTED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->res->reason, sizeof r->res->reason, fmt, ap);
    va_end(ap);
}

void golden_case_free(gcase *c)
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

int golden_stem_is(const char *name, size_t stem, const char *want)
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
        golden_fail(r, "%s: \"steps\" is not a positive integer", mp);
        return -1;
    }
    if (steps > GOLDEN_MAX_STEPS) {
        golden_fail(r, "%s: %llu steps, more than the limit of %llu", mp, (unsigned long long)steps,
             (unsigned long long)GOLDEN_MAX_STEPS);
        return -1;
    }
    c->steps = (size_t)steps;
    if (golden_parse_shape(cJSON_GetObjectItemCaseSensitive(c->meta, "shape"), GOLDEN_CASE_MAX_DIMS,
                           c->shape, &c->ndim, &c->n) != 0) {
        golden_fail(r, "%s: \"shape\" is not a list of 1 to %d positive integers (or too large)", mp,
             GOLDEN_CASE_MAX_DIMS);
        return -1;
    }
    if (c->n > GOLDEN_MAX_ELEMS) {
        golden_fail(r, "%s: %zu elements, more than the limit of %zu per tensor", mp, c->n,
             (size_t)GOLDEN_MAX_ELEMS);
        return -1;
    }
    if (c->n > GOLDEN_MAX_FLOATS / c->steps) {
        golden_fail(r, "%s: steps * elements = %llu gradient values, more than the limit of %zu", mp,
             (unsigned long long)c->steps * c->n, (size_t)GOLDEN_MAX_FLOATS);
        return -1;
    }

    /* Sophia's Hessian schedule: block j after step (j+1)*hess_interval. */
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(c->meta, "hess_update_after_steps");
    if (hs != NULL) {
        if (!sophia) {
            golden_unsupported(r, "hess_update_after_steps given for %s: only sophia takes "
                           "Hessian estimates", res->optimizer);
            return -1;
        }
        if (!cJSON_IsArray(hs)) {
            golden_fail(r, "%s: \"hess_update_after_steps\" is not a list", mp);
            return -1;
        }
        size_t j = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, hs)
        {
            uint64_t t;
            if (!golden_json_uint(s, &t)) {
                golden_fail(r, "%s: hess_update_after_steps[%zu] is not an integer", mp, j);
                return -1;
            }
            if (t != (uint64_t)(j + 1) * c->hp.hess_interval || t > c->steps) {
                golden_unsupported(r, "hess_update_after_steps[%zu] = %llu: clopt consumes the "
                               "Hessian after every hess_interval-th step (%u) up to T = %zu",
                            j, (unsigned long long)t, c->hp.hess_interval, c->steps);
                return -1;
            }
            j++;
        }
        if (j != c->steps / c->hp.hess_interval) {
            golden_unsupported(r, "hess_update_after_steps has %zu entries; clopt consumes an "
                           "estimate after each of the %zu multiples of %u up to T",
                        j, c->steps / c->hp.hess_interval, c->hp.hess_interval);
            return -1;
        }
        c->hess_blocks = j;
    }

    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(c->meta, "final_scalar_state");
    if (fs != NULL) {
        if (!cJSON_IsObject(fs)) {
            golden_fail(r, "%s: \"final_scalar_state\" is not an object", mp);
            return -1;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(fs, "step");
        if (st != NULL) {
            if (!golden_json_uint(st, &c->final_step)) {
                golden_fail(r, "%s: final_scalar_state.step is not an integer", mp);
                return -1;
            }
            c->has_final_step = 1;
        }
        const cJSON *mu = cJSON_GetObjectItemCaseSensitive(fs, "mu_product");
        if (mu != NULL && c->rule == CLOPT_NADAM) {
            if (!cJSON_IsNumber(mu)) {
                golden_fail(r, "%s: final_scalar_state.mu_product is not a number", mp);
                return -1;
            }
            c->has_mu_product = 1;
            c->mu_product = mu->valuedouble;
        }
    }

    golden_verdict v = golden_parse_storage(cJSON_GetObjectItemCaseSensitive(c->meta, "storage"),
                                            &c->storage, why, sizeof why);
    if (v == GOLDEN_UNSUPPORTED) {
        golden_unsupported(r, "%s: %s", mp, why);
        return -1;
    }
    if (v == GOLDEN_FAIL) {
        golden_fail(r, "%s: %s", mp, why);
        return -1;
    }
    if (c->storage.stochastic_rounding && c->storage.sr_stream > MAX_SR_STREAM) {
        golden_unsupported(r, "%s: stochastic rounding stream %u: the optimizer level uses the "
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
    if (golden_stem_is(name, stem, "param0") || golden_stem_is(name, stem, "param_1") ||
        golden_stem_is(name, stem, "param_T") || golden_stem_is(name, stem, "param_eval_T"))
        return s->param;
    if (golden_stem_is(name, stem, "grads"))
        return s->grad;
    if (golden_stem_is(name, stem, "state_master_remainder"))
        return CLOPT_DTYPE_U16;
    if (golden_stem_is(name, stem, "hess") || golden_stem_is(name, stem, "state_master") ||
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
        golden_fail(r, "%s: \"tolerance\" is not {rtol, atol} with finite values >= 0", mp);
        return -1;
    }

    const cJSON *files = cJSON_GetObjectItemCaseSensitive(c->meta, "files");
    if (!cJSON_IsArray(files)) {
        golden_fail(r, "%s: no \"files\" list", mp);
        return -1;
    }
    int nfiles = cJSON_GetArraySize(files);
    if (nfiles > GOLDEN_MAX_FILES) {
        golden_fail(r, "%s: %d entries in files, more than the limit of %d", mp, nfiles,
             GOLDEN_MAX_FILES);
        return -1;
    }
    c->exp = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(expected_file));
    /* The listed names, sorted: duplicates are neighbours, and the folder's files are looked
       up by binary search (n log n, not n^2). */
    const char **listed = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(char *));
    if (c->exp == NULL || listed == NULL) {
        free(listed);
        golden_fail(r, "out of memory");
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
                golden_fail(r, "%s: %s is listed twice in files", mp, listed[k]);
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
            golden_fail(r, "%s: files[%zu] has no valid \"name\" (a plain file name ending in .f32, "
                    ".f16, .bf16, .u16 or .u8)", mp, i);
            continue;
        }
        const char *name = jn->valuestring;
        if (!cJSON_IsString(jr) || (strcmp(jr->valuestring, "input") != 0 &&
                                    strcmp(jr->valuestring, "expected") != 0)) {
            golden_fail(r, "%s: %s has no \"role\" input/expected", mp, name);
            continue;
        }
        clopt_dtype dtype = CLOPT_DTYPE_F32;
        if (jd != NULL && (!cJSON_IsString(jd) || !golden_dtype_parse(jd->valuestring, &dtype))) {
            golden_fail(r, "%s: %s has a dtype other than float32, float16, bfloat16, uint16, uint8",
                 mp, name);
            continue;
        }
        if (dtype != ext) {
            golden_fail(r, "%s: %s has dtype %s, its extension says %s", mp, name,
                 golden_dtype_name(dtype), golden_dtype_name(ext));
            continue;
        }
        const int input = strcmp(jr->valuestring, "input") == 0;
        /* The shape this file must have, by name. */
        uint64_t want[GOLDEN_CASE_MAX_DIMS + 1];
        size_t wnd = 0;
        golden_array *dst = NULL;
        const int is_state = strncmp(name, "state_", 6) == 0 && stem > 6;
        if (golden_stem_is(name, stem, "param0") || golden_stem_is(name, stem, "param_1") ||
            golden_stem_is(name, stem, "param_T") || golden_stem_is(name, stem, "param_eval_T") ||
            is_state) {
            int want_input = golden_stem_is(name, stem, "param0");
            if (input != want_input) {
                golden_fail(r, "%s: %s should have role \"%s\"", mp, name,
                     want_input ? "input" : "expected");
                continue;
            }
            memcpy(want, c->shape, c->ndim * sizeof(uint64_t));
            wnd = c->ndim;
            if (want_input)
                dst = &c->param0;
        } else if (golden_stem_is(name, stem, "grads") || golden_stem_is(name, stem, "hess")) {
            int is_hess = name[0] == 'h';
            if (!input) {
                golden_fail(r, "%s: %s should have role \"input\"", mp, name);
                continue;
            }
            if (is_hess && !sophia) {
                golden_unsupported(r, "input %s given for %s: only sophia takes Hessian estimates",
                            name, res->optimizer);
                free(listed);
                return -1;
            }
            if (is_hess && hs == NULL) {
                golden_fail(r, "%s: %s given without \"hess_update_after_steps\"", mp, name);
                continue;
            }
            want[0] = is_hess ? c->hess_blocks : c->steps;
            memcpy(want + 1, c->shape, c->ndim * sizeof(uint64_t));
            wnd = c->ndim + 1;
            dst = is_hess ? &c->hess : &c->grads;
        } else {
            golden_fail(r, "%s: unknown %s file %s", mp, input ? "input" : "expected", name);
            continue;
        }
        const clopt_dtype wd = wanted_dtype(c, name, stem);
        if (dtype != wd) {
            golden_fail(r, "%s: %s holds %s values, the storage object gives %s", mp, name,
                 golden_dtype_name(dtype), golden_dtype_name(wd));
            continue;
        }
        /* One file per role: param_T.f32 and param_T.bf16 would be the same tensor. */
        int twice = dst != NULL && dst->data != NULL;
        for (size_t k = 0; k < c->nexp && !twice; k++)
            twice = c->exp[k].stem == stem && strncmp(c->exp[k].name, name, stem) == 0;
        if (twice) {
            golden_fail(r, "%s: %.*s is listed twice in files (in two types)", mp, (int)stem, name);
            continue;
        }
        uint64_t got[GOLDEN_CASE_MAX_DIMS + 1];
        size_t gnd = 0, gn = 0;
        int shape_ok = golden_parse_shape(cJSON_GetObjectItemCaseSensitive(f, "shape"),
                                          GOLDEN_CASE_MAX_DIMS + 1, got, &gnd, &gn) == 0;
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
            golden_fail(r, "%s: shape %s of %s in files, expected %s", mp, gs, name, ws);
            continue;
        }
        size_t count = gn; /* the file's shape is the wanted one */
        if (count > GOLDEN_MAX_FLOATS - floats) {
            golden_fail(r, "%s: the files hold more than the limit of %zu values in all", mp,
                 (size_t)GOLDEN_MAX_FLOATS);
            free(listed);
            return -1;
        }
        floats += count;
        char *path = golden_path_join(c->dir, name);
        if (path == NULL) {
            golden_fail(r, "out of memory");
            free(listed);
            return -1;
        }
        golden_array data;
        if (golden_load_array(path, dtype, count, &data, why, sizeof why) != 0) {
            golden_fail(r, "%s", why);
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
            golden_fail(r, "out of memory");
            free(listed);
            return -1;
        }
        const cJSON *tol = cJSON_GetObjectItemCaseSensitive(f, "tolerance");
        if (tol != NULL) {
            if (golden_parse_tolerance(tol, &e->tol) != 0) {
                golden_fail(r, "%s: tolerance of %s is not {rtol, atol} and/or {ulps} (with "
                        "mismatch_fraction, mismatch_rtol, mismatch_atol), finite and >= 0",
                     mp, name);
                continue;
            }
        } else if (has_top_tol) {
            e->tol = top;
        } else {
            golden_fail(r, "%s: no tolerance for %s", mp, name);
            continue;
        }
        if (!e->tol.has_ulps && (dtype == CLOPT_DTYPE_U8 || dtype == CLOPT_DTYPE_U16)) {
            golden_fail(r, "%s: the tolerance of %s (%s) needs \"ulps\"", mp, name,
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
        have_param1 |= golden_stem_is(c->exp[k].name, c->exp[k].stem, "param_1");
        have_paramT |= golden_stem_is(c->exp[k].name, c->exp[k].stem, "param_T");
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
        golden_fail(r, "%s: files does not list %s.%s", mp, missing, golden_dtype_ext(t));
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
                golden_fail(r, "%s/%s is not listed in meta.json files", c->dir, de->d_name);
        }
        closedir(d);
    }
    free(listed);
    return res->verdict == GOLDEN_PASS ? 0 : -1;
}

/* Parse meta.json and load every file. Returns 0 when the case can be replayed; on
   failure the verdict (FAIL / UNSUPPORTED) and reason are set. */
int golden_load_case(runner *r, gcase *c)
{
    char why[GOLDEN_REASON_MAX];
    golden_result *res = r->res;

    c->meta_path = golden_path_join(c->dir, "meta.json");
    if (c->meta_path == NULL) {
        golden_fail(r, "out of memory");
        return -1;
    }
    c->meta = golden_read_json(c->meta_path, why, sizeof why);
    if (c->meta == NULL) {
        golden_fail(r, "%s", why);
        return -1;
    }
    const char *mp = c->meta_path;
    if (!cJSON_IsObject(c->meta)) {
        golden_fail(r, "%s: not a JSON object", mp);
        return -1;
    }
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(c->meta, "optimizer");
    if (!cJSON_IsString(opt)) {
        golden_fail(r, "%s: no string \"optimizer\"", mp);
        return -1;
    }
    snprintf(res->optimizer, sizeof res->optimizer, "%s", opt->valuestring);

    golden_verdict v = golden_map_hyper(opt->valuestring,
                                        cJSON_GetObjectItemCaseSensitive(c->meta, "hyper"),
                                        &c->rule, &c->hp, why, sizeof why);
    if (v == GOLDEN_UNSUPPORTED) {
        golden_unsupported(r, "%s", why);
        return -1;
    }
    if (v == GOLDEN_FAIL) {
        golden_fail(r, "%s: %s", mp, why);
        return -1;
    }
    if (parse_scalars(r, c) != 0)
        return -1;
    return load_files(r, c);
}
