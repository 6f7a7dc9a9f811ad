/* SPDX-License-Identifier: MIT */
/*
 * test_faults: fault injection over an optimizer's whole life (issue 12).
 *
 * tests/clshim (an OpenCL interposer linked into this executable, see clshim.h) fails the
 * n-th fallible OpenCL call of one operation. A "life" is a fixed sequence of operations:
 * create, add_group, add_param_desc (two groups), add_arena_group, add_range_group, AMP and
 * clipping on, prepare, write_state, steps (one with an Inf gradient: skipped by AMP),
 * step_on after a wait list, zero_grad, save_to, save (file), load_from, load (file),
 * read_state and destroy. A fault-free run of the life (the reference) records a snapshot
 * before every operation: every parameter, gradient and state tensor (bit for bit), the step
 * counts, the groups' lrs, found_inf and the last gradient norm.
 *
 * The sweep: for every operation i and n = 1, 2, ... until the fault no longer fires, a
 * fresh life runs operations 0..i-1 without faults, then operation i with its n-th fallible
 * OpenCL call failing (CL_OUT_OF_RESOURCES). Then:
 *  - the fault returns a negative status (or is absorbed: success, and the run must still end
 *    right); never a crash (the suite also runs under ASan/UBSan in CI);
 *  - a failed operation changed nothing: the snapshot equals the reference's before i. The
 *    two documented exceptions: clopt_optimizer_load/_from failing in its write phase
 *    (clEnqueueWriteBuffer) may have written some tensors, and clopt_optimizer_zero_grad
 *    failing in a fill may have zeroed some gradients (the engine's buffers, not the
 *    optimizer's state), but neither the host state (step counts, lrs);
 *  - a failed save leaves no file behind (neither the target nor a temporary);
 *  - the operation is retried without fault and the rest of the life runs: the final
 *    snapshot equals the reference's bit for bit; what read_state, save_to and save return
 *    equals the reference's;
 *  - after destroy, every OpenCL object clopt took while the shim was on was released
 *    (created == released per kind; the test's own objects are made with the shim off).
 * Lives: AdamW; LAMB and Adafactor (reductions, per-tensor passes); AdamW with Lookahead.
 * A second sweep (test_faults_prepare.c) fails every call of clopt_optimizer_prepare in a
 * fresh context (program creation, builds, kernels), then prepares again, steps, and checks
 * for leaks after destroying the context too.
 *
 * TEST_FAULTS_FILTER (a cmocka pattern) runs a subset; CLSHIM_TRACE=1 prints every fault.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clopt.h"
#include "clshim.h"
#include "fixture.h"
#include "test_faults.h"

/* ---- totals over the whole test (test_faults.h) ------------------------------------------ */

uint64_t g_faults, g_failed, g_absorbed, g_leaks, g_errors;

#define MAX_SITES 1024
static char g_site[MAX_SITES][96];
static size_t g_nsites;

void note_site(const char *life, const char *op, const char *fn)
{
    char key[96];
    snprintf(key, sizeof key, "%s/%s/%s", life, op, fn);
    for (size_t i = 0; i < g_nsites; i++)
        if (!strcmp(g_site[i], key))
            return;
    if (g_nsites < MAX_SITES)
        memcpy(g_site[g_nsites++], key, sizeof key);
}

void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "VIOLATION: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    g_errors++;
    if (!getenv("TEST_FAULTS_KEEP_GOING"))
        fail();
}

/* Faults that came back as a status other than the OpenCL pass-through code (e.g. a failed
   clGetMemObjectInfo read as "a buffer of another context"): listed at the end. */
static char g_other[64][160];
static size_t g_nother;

static void note_other_status(const char *life, const char *op, const char *fn, clopt_status s)
{
    char key[160];
    snprintf(key, sizeof key, "%s: %s, %s failing -> %s", life, op, fn, clopt_status_name(s));
    for (size_t i = 0; i < g_nother; i++)
        if (!strcmp(g_other[i], key))
            return;
    if (g_nother < 64)
        memcpy(g_other[g_nother++], key, sizeof key);
}


int leaked(void)
{
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        if (clshim_created((clshim_obj)k) != clshim_released((clshim_obj)k))
            return 1;
    return 0;
}

/* ---- a life ---------------------------------------------------------------------------- */

/* Tensors: 0 (6x8) in group 0 and 1 (13) in group 1, caller-owned; 2 (4x5), 3 (7), 4 (9)
   in an arena group; 5 (3x4) and 6 (10) as ranges of one flat buffer (range group). */
enum { NT = 7, NOWN = 2, FLAT_LEN = 32 };
static const size_t t_n[NT] = {48, 13, 20, 7, 9, 12, 10};
static const size_t t_rows[NT] = {6, 0, 4, 0, 0, 3, 0}; /* 0: 1-D */
static const size_t t_flat_off[NT] = {0, 0, 0, 0, 0, 2, 18};

typedef enum op {
    OP_CREATE,
    OP_ADD_GROUP,
    OP_ADD_DESC0,
    OP_ADD_DESC1,
    OP_ADD_ARENA,
    OP_ADD_RANGE,
    OP_SETTINGS,
    OP_PREPARE,
    OP_WRITE_STATE,
    OP_STEP1,
    OP_STEP2,
    OP_STEP_ON,
    OP_ZERO_GRAD,
    OP_SAVE_TO,
    OP_SAVE,
    OP_STEP3_INF,
    OP_LOAD_FROM,
    OP_STEP4,
    OP_LOAD,
    OP_READ_STATE,
    OP_STEP5,
    OP_DESTROY,
    NOPS
} op;

static const char *op_name[NOPS] = {
    "create",     "add_group", "add_param_desc(g0)", "add_param_desc(g1)", "add_arena_group",
    "add_range_group", "set_grad_scale+clip", "prepare", "write_state", "step 1", "step 2",
    "step_on(wait list)", "zero_grad", "save_to", "save", "step 3 (Inf: skipped)",
    "load_from", "step 4", "load", "read_state", "step 5", "destroy"};

/* the step number whose gradients an operation writes first (0: none) */
static int op_grads(op o)
{
    switch (o) {
    case OP_STEP1: return 1;
    case OP_STEP2: return 2;
    case OP_STEP_ON: return 3;
    case OP_STEP3_INF: return 4;
    case OP_STEP4: return 5;
    case OP_STEP5: return 6;
    default: return 0;
    }
}

typedef struct life_desc {
    const char *name;
    clopt_rule rule;
    unsigned lookahead_k;
} life_desc;

typedef struct snap {
    float *v;
    size_t n;
    uint64_t steps, tsteps[NT];
    double lr[4], norm;
    int found_inf;
} snap;

typedef struct life {
    const life_desc *d;
    clopt_ctx *ctx;
    clopt_hparams hp[4];
    /* the test's own buffers, made once (shim off), refilled at the start of every run */
    cl_mem own_p[NOWN], own_g[NOWN], flat_p, flat_g;
    float init_p[NT][64];
    char dir[64], path[128];
    /* per run */
    clopt_optimizer *opt;
    clopt_tensor pv[NT], gv[NT];
    unsigned char *saved; /* save_to's bytes of this run */
    size_t nsaved;
    float *state_out; /* read_state's output */
    size_t state_len;
    /* the reference */
    snap ref[NOPS + 1];
    unsigned char *ref_saved, *ref_file;
    size_t ref_nsaved, ref_nfile;
    float *ref_state_out;
    /* fallible calls of each operation in the latest run: (start, end] in clshim_calls() */
    uint64_t op_start[NOPS], op_end[NOPS];
} life;

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* The written state (write_state): the last state of tensor 3 (an arena tensor). */
static const size_t WS_PARAM = 3;

static size_t ws_index(const life *L) { return clopt_optimizer_state_count(L->opt, WS_PARAM) - 1; }

static size_t state_len(const life *L, size_t k, size_t j)
{
    size_t len = 0;
    assert_int_equal(clopt_optimizer_state_info(L->opt, k, j, NULL, &len), CLOPT_SUCCESS);
    return len;
}

static void read_file(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    assert_int_equal(fread(*out, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
}

/* Files in the life's folder. */
static size_t dir_entries(const life *L, char *first, size_t cap)
{
    DIR *d = opendir(L->dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    if (cap)
        first[0] = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            if (n++ == 0 && cap)
                snprintf(first, cap, "%s", e->d_name);
        }
    closedir(d);
    return n;
}

/* Empties the life's folder (a failed save may have left a file there). */
static void clean_dir(const life *L)
{
    DIR *d = opendir(L->dir);
    assert_non_null(d);
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", L->dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

static void life_setup(life *L, clopt_ctx *ctx, const life_desc *d)
{
    memset(L, 0, sizeof *L);
    L->d = d;
    L->ctx = ctx;
    clopt_hparams_default(d->rule, &L->hp[0]);
    L->hp[0].lr = d->rule == CLOPT_ADAFACTOR ? 0.01 : 0.02;
    L->hp[0].weight_decay = 0.01;
    if (d->rule == CLOPT_ADAFACTOR)
        L->hp[0].relative_step = 0, L->hp[0].use_beta1 = 1;
    L->hp[0].lookahead_k = d->lookahead_k;
    for (int g = 1; g < 4; g++) {
        L->hp[g] = L->hp[0];
        L->hp[g].lr = L->hp[0].lr * (1.0 - 0.2 * g);
    }
    L->hp[1].weight_decay = 0;
    if (d->rule != CLOPT_ADAFACTOR)
        L->hp[2].beta1 = 0.8;
    uint64_t seed = 12345;
    for (size_t k = 0; k < NT; k++)
        for (size_t i = 0; i < t_n[k]; i++)
            L->init_p[k][i] = frand(&seed);
    OWN({
        for (size_t k = 0; k < NOWN; k++) {
            L->own_p[k] = upload(ctx, NULL, t_n[k]);
            L->own_g[k] = upload(ctx, NULL, t_n[k]);
        }
        L->flat_p = upload(ctx, NULL, FLAT_LEN);
        L->flat_g = upload(ctx, NULL, FLAT_LEN);
    });
    snprintf(L->dir, sizeof L->dir, "/tmp/clopt-faults-XXXXXX");
    assert_non_null(mkdtemp(L->dir));
    snprintf(L->path, sizeof L->path, "%s/opt.ckpt", L->dir);
}

static void snap_free(snap *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static void life_teardown(life *L)
{
    OWN({
        for (size_t k = 0; k < NOWN; k++)
            clReleaseMemObject(L->own_p[k]), clReleaseMemObject(L->own_g[k]);
        clReleaseMemObject(L->flat_p);
        clReleaseMemObject(L->flat_g);
    });
    for (int i = 0; i <= NOPS; i++)
        snap_free(&L->ref[i]);
    free(L->ref_saved);
    free(L->ref_file);
    free(L->ref_state_out);
    clean_dir(L);
    rmdir(L->dir);
}

/* A new run: the caller-owned tensors back to their initial values, no file. */
static void run_begin(life *L)
{
    float zero[64] = {0}, flat[FLAT_LEN];
    for (size_t i = 0; i < FLAT_LEN; i++)
        flat[i] = -7.0f; /* the gaps between the ranges must stay untouched */
    for (size_t k = NOWN; k < NT; k++)
        if (t_flat_off[k])
            memcpy(flat + t_flat_off[k], L->init_p[k], t_n[k] * sizeof(float));
    OWN({
        for (size_t k = 0; k < NOWN; k++) {
            write_at(L->ctx, (clopt_tensor){L->own_p[k], 0}, L->init_p[k], t_n[k]);
            write_at(L->ctx, (clopt_tensor){L->own_g[k], 0}, zero, t_n[k]);
        }
        write_at(L->ctx, (clopt_tensor){L->flat_p, 0}, flat, FLAT_LEN);
        write_at(L->ctx, (clopt_tensor){L->flat_g, 0}, flat, FLAT_LEN);
    });
    clean_dir(L);
    L->opt = NULL;
    free(L->saved);
    L->saved = NULL;
    free(L->state_out);
    L->state_out = NULL;
}

static void run_end(life *L)
{
    free(L->saved);
    L->saved = NULL;
    free(L->state_out);
    L->state_out = NULL;
    unlink(L->path);
}

static int have_tensors(const life *L, op next)
{
    /* the views exist once every group was added (the ops after OP_ADD_RANGE) */
    return L->opt && next > OP_ADD_RANGE;
}

/* The views of every tensor (after the groups were added). */
static void take_views(life *L)
{
    for (size_t k = 0; k < NT; k++)
        assert_int_equal(clopt_optimizer_param_view(L->opt, k, &L->pv[k], &L->gv[k], NULL, NULL),
                         CLOPT_SUCCESS);
}

/* Gradients of step t, multiplied by the loss scale 1024: odd steps large (clipped), even
   ones small; step 4 holds an Inf. */
static void write_grads(life *L, int t)
{
    uint64_t seed = 999 + 77 * (uint64_t)t;
    float amp = t % 2 ? 0.4f : 0.01f;
    float g[64];
    OWN({
        for (size_t k = 0; k < NT; k++) {
            for (size_t i = 0; i < t_n[k]; i++)
                g[i] = amp * frand(&seed) * 1024.0f;
            if (t == 4 && k == 5)
                g[1] = INFINITY;
            write_at(L->ctx, L->gv[k], g, t_n[k]);
        }
    });
}

static void take_snap(life *L, snap *s)
{
    memset(s, 0, sizeof *s);
    size_t total = 0;
    for (size_t k = 0; k < NT; k++) {
        total += 2 * t_n[k];
        for (size_t j = 0; j < clopt_optimizer_state_count(L->opt, k); j++)
            total += state_len(L, k, j);
    }
    total += FLAT_LEN * 2;
    s->v = malloc(total * sizeof *s->v);
    float *p = s->v;
    for (size_t k = 0; k < NT; k++) {
        for (size_t j = 0; j < clopt_optimizer_state_count(L->opt, k); j++) {
            size_t len = state_len(L, k, j);
            clopt_status st = clopt_optimizer_read_state(L->opt, k, j, p, len);
            if (st != CLOPT_SUCCESS)
                fail_msg("read_state(%zu, %zu) for a snapshot: %s (%s)", k, j,
                         clopt_status_name(st), clopt_ctx_last_error(L->ctx));
            p += len;
        }
    }
    OWN({
        for (size_t k = 0; k < NT; k++) {
            read_at(L->ctx, L->pv[k], p, t_n[k]);
            p += t_n[k];
            read_at(L->ctx, L->gv[k], p, t_n[k]);
            p += t_n[k];
        }
        /* the flat buffers whole: the gaps between the ranges too */
        read_at(L->ctx, (clopt_tensor){L->flat_p, 0}, p, FLAT_LEN);
        p += FLAT_LEN;
        read_at(L->ctx, (clopt_tensor){L->flat_g, 0}, p, FLAT_LEN);
        p += FLAT_LEN;
    });
    s->n = (size_t)(p - s->v);
    /* after the blocking reads: the host's view is exact */
    s->steps = clopt_optimizer_step_count(L->opt);
    for (size_t k = 0; k < NT; k++)
        assert_int_equal(clopt_optimizer_param_step_count(L->opt, k, &s->tsteps[k]),
                         CLOPT_SUCCESS);
    for (size_t g = 0; g < 4; g++)
        s->lr[g] = clopt_optimizer_group_lr(L->opt, g);
    s->norm = clopt_optimizer_last_grad_norm(L->opt);
    s->found_inf = clopt_optimizer_found_inf(L->opt);
}

/* Compares; host_only: only the host state (load's documented half-way failure). Returns 0
   when equal, else writes what differs into why. */
static int snap_diff(const snap *a, const snap *b, int host_only, char *why, size_t cap)
{
    if (!host_only) {
        if (a->n != b->n) {
            snprintf(why, cap, "snapshot sizes %zu vs %zu", a->n, b->n);
            return 1;
        }
        for (size_t i = 0; i < a->n; i++)
            if (memcmp(&a->v[i], &b->v[i], sizeof(float))) {
                snprintf(why, cap, "value %zu of %zu: %.9g vs %.9g (want)", i, a->n,
                         (double)a->v[i], (double)b->v[i]);
                return 1;
            }
    }
    if (a->steps != b->steps || memcmp(a->tsteps, b->tsteps, sizeof a->tsteps)) {
        snprintf(why, cap, "step counts %llu vs %llu (want)", (unsigned long long)a->steps,
                 (unsigned long long)b->steps);
        return 1;
    }
    if (memcmp(a->lr, b->lr, sizeof a->lr)) {
        snprintf(why, cap, "group lrs %.17g vs %.17g (want)", a->lr[0], b->lr[0]);
        return 1;
    }
    if (a->found_inf != b->found_inf ||
        !(a->norm == b->norm || (isnan(a->norm) && isnan(b->norm)))) {
        snprintf(why, cap, "found_inf %d vs %d, last_grad_norm %.17g vs %.17g (want)",
                 a->found_inf, b->found_inf, a->norm, b->norm);
        return 1;
    }
    return 0;
}

/* The test's own work before operation o (not faulted). */
static void op_pre(life *L, op o)
{
    if (o == OP_SETTINGS) /* the groups are complete: take the views, start the arena */
        take_views(L);
    if (o == OP_SETTINGS)
        OWN({
            for (size_t k = NOWN; k < NT; k++)
                if (!t_flat_off[k])
                    write_at(L->ctx, L->pv[k], L->init_p[k], t_n[k]);
        });
    if (op_grads(o))
        write_grads(L, op_grads(o));
}

/* Operation o itself, the library calls only (the fault may hit them). */
static clopt_status op_call(life *L, op o)
{
    clopt_status s = CLOPT_SUCCESS;
    switch (o) {
    case OP_CREATE:
        return clopt_optimizer_create(L->ctx, L->d->rule, &L->hp[0], &L->opt);
    case OP_ADD_GROUP: {
        size_t g = 0;
        s = clopt_optimizer_add_group(L->opt, &L->hp[1], &g);
        if (s == CLOPT_SUCCESS)
            assert_int_equal(g, 1);
        return s;
    }
    case OP_ADD_DESC0:
    case OP_ADD_DESC1: {
        size_t k = o == OP_ADD_DESC0 ? 0 : 1, idx = 99;
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){L->own_p[k], 0};
        d.grad = (clopt_tensor){L->own_g[k], 0};
        d.ndim = t_rows[k] ? 2 : 1;
        d.shape[0] = t_rows[k] ? t_rows[k] : t_n[k];
        d.shape[1] = t_rows[k] ? t_n[k] / t_rows[k] : 0;
        s = clopt_optimizer_add_param_desc(L->opt, k, &d, &idx);
        if (s == CLOPT_SUCCESS)
            assert_int_equal(idx, k);
        return s;
    }
    case OP_ADD_ARENA: {
        clopt_param_desc sh[3];
        for (size_t k = 2; k < 5; k++) {
            clopt_param_desc_init(&sh[k - 2]);
            sh[k - 2].ndim = t_rows[k] ? 2 : 1;
            sh[k - 2].shape[0] = t_rows[k] ? t_rows[k] : t_n[k];
            sh[k - 2].shape[1] = t_rows[k] ? t_n[k] / t_rows[k] : 0;
        }
        size_t g = 99, first = 99;
        s = clopt_optimizer_add_arena_group(L->opt, &L->hp[2], 3, sh, &g, &first);
        if (s == CLOPT_SUCCESS)
            assert_true(g == 2 && first == 2);
        return s;
    }
    case OP_ADD_RANGE: {
        clopt_param_desc t[2];
        for (size_t k = 5; k < 7; k++) {
            clopt_param_desc *d = &t[k - 5];
            clopt_param_desc_init(d);
            d->param = (clopt_tensor){L->flat_p, t_flat_off[k]};
            d->grad = (clopt_tensor){L->flat_g, t_flat_off[k]};
            d->ndim = t_rows[k] ? 2 : 1;
            d->shape[0] = t_rows[k] ? t_rows[k] : t_n[k];
            d->shape[1] = t_rows[k] ? t_n[k] / t_rows[k] : 0;
        }
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = 2;
        rg.tensors = t;
        size_t g = 99, first = 99;
        s = clopt_optimizer_add_range_group(L->opt, &L->hp[3], &rg, &g, &first);
        if (s == CLOPT_SUCCESS)
            assert_true(g == 3 && first == 5);
        return s;
    }
    case OP_SETTINGS:
        s = clopt_optimizer_set_grad_scale(L->opt, 1024);
        if (s == CLOPT_SUCCESS)
            s = clopt_optimizer_set_grad_clip(L->opt, 1.0);
        return s;
    case OP_PREPARE:
        return clopt_optimizer_prepare(L->opt);
    case OP_WRITE_STATE: {
        size_t j = ws_index(L), len = state_len(L, WS_PARAM, j);
        float *v = malloc(len * sizeof *v);
        for (size_t i = 0; i < len; i++)
            v[i] = 1e-3f * (float)(i + 1);
        s = clopt_optimizer_write_state(L->opt, WS_PARAM, j, v, len);
        free(v);
        return s;
    }
    case OP_STEP1:
    case OP_STEP2:
    case OP_STEP3_INF:
    case OP_STEP4:
    case OP_STEP5: {
        cl_event ev = NULL;
        s = clopt_optimizer_step(L->opt, o == OP_STEP2 ? &ev : NULL);
        if (ev)
            clReleaseEvent(ev); /* clopt's event: released with the shim on */
        if (s < 0)
            assert_null(ev);
        return s;
    }
    case OP_STEP_ON: {
        /* the engine's backward pass: a marker of the test's own, waited for by the step */
        cl_event backward = NULL, ev = NULL;
        OWN(assert_int_equal(clEnqueueMarkerWithWaitList(clopt_ctx_cl_queue(L->ctx), 0, NULL,
                                                         &backward),
                             CL_SUCCESS));
        s = clopt_optimizer_step_on(L->opt, NULL, 1, &backward, &ev);
        if (s == CLOPT_SUCCESS)
            assert_non_null(ev);
        else
            assert_null(ev);
        if (ev)
            clReleaseEvent(ev);
        OWN(clReleaseEvent(backward));
        return s;
    }
    case OP_ZERO_GRAD:
        return clopt_optimizer_zero_grad(L->opt);
    case OP_SAVE_TO: {
        size_t bytes = 0, written = 0;
        assert_int_equal(clopt_optimizer_state_size(L->opt, NULL, &bytes), CLOPT_SUCCESS);
        free(L->saved);
        L->saved = malloc(bytes);
        memset(L->saved, 0xA5, bytes);
        s = clopt_optimizer_save_to(L->opt, NULL, L->saved, bytes, &written);
        if (s == CLOPT_SUCCESS)
            assert_int_equal(written, bytes);
        L->nsaved = bytes;
        return s;
    }
    case OP_SAVE:
        return clopt_optimizer_save(L->opt, L->path);
    case OP_LOAD_FROM:
        return clopt_optimizer_load_from(L->opt, L->saved, L->nsaved);
    case OP_LOAD:
        return clopt_optimizer_load(L->opt, L->path);
    case OP_READ_STATE: {
        size_t len = state_len(L, 0, 1);
        free(L->state_out);
        L->state_out = malloc(len * sizeof(float));
        L->state_len = len;
        return clopt_optimizer_read_state(L->opt, 0, 1, L->state_out, len);
    }
    case OP_DESTROY:
        clopt_optimizer_destroy(L->opt);
        L->opt = NULL;
        return CLOPT_SUCCESS;
    default:
        fail();
    }
    return s;
}

/* What a successful operation hands back must equal the reference's. */
static void check_outputs(life *L, op o, const char *ctx_msg)
{
    if (o == OP_SAVE_TO) {
        if (L->nsaved != L->ref_nsaved || memcmp(L->saved, L->ref_saved, L->nsaved))
            violation("%s: save_to's bytes differ from the reference's", ctx_msg);
    } else if (o == OP_SAVE) {
        unsigned char *b;
        size_t n;
        read_file(L->path, &b, &n);
        int same = n == L->ref_nfile && !memcmp(b, L->ref_file, n);
        free(b);
        if (!same)
            violation("%s: the saved file differs from the reference's", ctx_msg);
        char first[256];
        size_t files = dir_entries(L, first, sizeof first);
        if (files != 1)
            violation("%s: %zu files in the checkpoint folder after save (%s ...)", ctx_msg,
                     files, first);
    } else if (o == OP_READ_STATE) {
        if (memcmp(L->state_out, L->ref_state_out, L->state_len * sizeof(float)))
            violation("%s: read_state returned other values than the reference's", ctx_msg);
    }
}

/* The reference: a fault-free life with a snapshot before every operation (when an
   optimizer exists) and after the last one but destroy. */
static void run_reference(life *L, int warm)
{
    clshim_reset();
    clshim_enable(!warm);
    run_begin(L);
    for (int i = 0; i < NOPS; i++) {
        op o = (op)i;
        op_pre(L, o);
        if (getenv("TEST_FAULTS_VERBOSE"))
            fprintf(stderr, "    %s reference%s: %s\n", L->d->name, warm ? " (warm-up)" : "",
                    op_name[o]);
        if (warm) { /* the context's programs compiled, nothing recorded */
            clopt_status s = op_call(L, o);
            assert_true(s >= 0);
            continue;
        }
        if (have_tensors(L, o))
            take_snap(L, &L->ref[i]);
        if (o == OP_DESTROY)
            take_snap(L, &L->ref[NOPS]);
        clopt_status s = op_call(L, o);
        if (s < 0)
            fail_msg("%s: reference %s failed: %s (%s)", L->d->name, op_name[o],
                     clopt_status_name(s), L->opt ? clopt_ctx_last_error(L->ctx) : "");
        if (o == OP_STEP3_INF)
            assert_int_equal(s, CLOPT_STEP_SKIPPED);
        else
            assert_int_equal(s, CLOPT_SUCCESS);
        if (o == OP_SAVE_TO) {
            free(L->ref_saved);
            L->ref_saved = malloc(L->nsaved);
            memcpy(L->ref_saved, L->saved, L->nsaved);
            L->ref_nsaved = L->nsaved;
        } else if (o == OP_SAVE) {
            read_file(L->path, &L->ref_file, &L->ref_nfile);
        } else if (o == OP_READ_STATE) {
            L->ref_state_out = malloc(L->state_len * sizeof(float));
            memcpy(L->ref_state_out, L->state_out, L->state_len * sizeof(float));
        }
    }
    clshim_enable(0);
    if (leaked()) {
        clshim_dump(stderr);
        fail_msg("%s: the fault-free life leaked OpenCL objects", L->d->name);
    }
    run_end(L);
}

/* The final check needs the optimizer: runs compare the snapshot before destroy. */
static void check_final(life *L, const char *msg)
{
    snap now;
    char why[200];
    take_snap(L, &now);
    if (snap_diff(&now, &L->ref[NOPS], 0, why, sizeof why))
        violation("%s: the life did not end as the fault-free one: %s", msg, why);
    snap_free(&now);
}

/* One run with the n-th fallible call of operation `target` failing. Returns 1 when the
   fault fired. */
static int run_faulted(life *L, op target, uint64_t n, uint64_t *failed_here)
{
    char msg[256], why[200];
    clshim_reset();
    clshim_enable(1);
    run_begin(L);
    int fired = 0;
    for (int i = 0; i < NOPS; i++) {
        op o = (op)i;
        op_pre(L, o);
        if (o == OP_DESTROY) {
            snprintf(msg, sizeof msg, "%s: fault %llu in %s", L->d->name, (unsigned long long)n,
                     target < NOPS ? op_name[target] : "nothing (trace run)");
            check_final(L, msg);
        }
        L->op_start[i] = clshim_calls();
        if (o != target) {
            clopt_status s = op_call(L, o);
            L->op_end[i] = clshim_calls();
            if (s < 0)
                fail_msg("%s: %s failed without a fault (run of fault %llu in %s): %s (%s)",
                         L->d->name, op_name[o], (unsigned long long)n,
                         target < NOPS ? op_name[target] : "nothing",
                         clopt_status_name(s), L->opt ? clopt_ctx_last_error(L->ctx) : "");
            if (o == OP_SAVE || o == OP_SAVE_TO || o == OP_READ_STATE)
                check_outputs(L, o, op_name[o]);
            continue;
        }
        clshim_fail_nth(n, CL_OUT_OF_RESOURCES);
        clopt_status s = op_call(L, o);
        L->op_end[i] = clshim_calls();
        fired = clshim_fault_fired();
        const char *site = clshim_fault_site();
        clshim_fail_nth(0, CL_SUCCESS);
        snprintf(msg, sizeof msg, "%s: %s with call %llu (%s) failing, status %s", L->d->name,
                 op_name[o], (unsigned long long)n, fired ? site : "no fault",
                 clopt_status_name(s));
        if (getenv("TEST_FAULTS_VERBOSE"))
            fprintf(stderr, "    %s\n", msg);
        if (!fired) {
            if (s < 0)
                fail_msg("%s: failed without a fault", msg);
        } else {
            g_faults++;
            note_site(L->d->name, op_name[o], site);
        }
        if (s >= 0) {
            if (fired)
                g_absorbed++;
            /* step: "a failed wait for the verdict is not reported (CLOPT_SUCCESS)", so the
               skipped step may read as a success then */
            if (o == OP_STEP3_INF && s != CLOPT_STEP_SKIPPED &&
                !(fired && s == CLOPT_SUCCESS &&
                  (!strcmp(site, "clWaitForEvents") || !strcmp(site, "clGetEventInfo"))))
                fail_msg("%s: want CLOPT_STEP_SKIPPED", msg);
            if (o != OP_STEP3_INF && s != CLOPT_SUCCESS)
                fail_msg("%s: unexpected status", msg);
            check_outputs(L, o, msg);
            continue;
        }
        /* failed: nothing changed (the one documented exception aside) */
        g_failed++;
        (*failed_here)++;
        if (!clopt_status_is_opencl(s)) /* reported at the end, not an error */
            note_other_status(L->d->name, op_name[o], site, s);
        if (o == OP_CREATE) {
            if (L->opt)
                fail_msg("%s: *out is not NULL", msg);
        } else if (o != OP_DESTROY && have_tensors(L, o)) {
            snap now;
            take_snap(L, &now);
            /* documented: load's write phase may have written some tensors; zero_grad's
               fills may have zeroed some gradients (the engine's buffers, not the
               optimizer's state) */
            int load_write = ((o == OP_LOAD || o == OP_LOAD_FROM) &&
                              !strcmp(site, "clEnqueueWriteBuffer")) ||
                             (o == OP_ZERO_GRAD && !strcmp(site, "clEnqueueFillBuffer"));
            if (snap_diff(&now, &L->ref[i], load_write, why, sizeof why))
                violation("%s: the failed call changed the optimizer: %s", msg, why);
            snap_free(&now);
        }
        if (o == OP_SAVE) {
            char first[256];
            size_t files = dir_entries(L, first, sizeof first);
            if (files)
                violation("%s: a failed save left %zu file(s) behind (%s ...)", msg, files, first);
        }
        /* the retry without a fault: then the rest of the life */
        s = op_call(L, o);
        if (s < 0)
            fail_msg("%s: the retry failed: %s (%s)", msg, clopt_status_name(s),
                     L->opt ? clopt_ctx_last_error(L->ctx) : "");
        check_outputs(L, o, msg);
    }
    clshim_enable(0);
    if (leaked()) {
        g_leaks++;
        clshim_dump(stderr);
        violation("%s: OpenCL objects leaked (counts above)", msg);
    }
    run_end(L);
    return fired;
}

/* Which calls of an operation to fail: all of them, except that a run of consecutive calls
   of one function (the arguments of a kernel, the reads of a checkpoint) is failed at its
   first and its last call only (the calls between take the same path in clopt). */
static int worth_failing(uint64_t at, uint64_t start, uint64_t end)
{
    const char *name = clshim_call_name(at);
    if (at == start + 1 || at == end)
        return 1;
    return strcmp(name, clshim_call_name(at - 1)) || strcmp(name, clshim_call_name(at + 1));
}

static void sweep_life(clopt_ctx *ctx, const life_desc *d)
{
    const uint64_t errors0 = g_errors;
    life *L = calloc(1, sizeof *L);
    life_setup(L, ctx, d);
    run_reference(L, 1);
    run_reference(L, 0);
    uint64_t total = 0, failed = 0, calls = 0, absorbed0 = g_absorbed;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* a fault-free run traces every operation's calls: the sweep's plan */
    uint64_t here = 0;
    run_faulted(L, NOPS, 0, &here); /* clshim's log then holds this run's calls */
    char *plan[NOPS];
    uint64_t ncalls[NOPS];
    for (int i = 0; i < NOPS; i++) {
        uint64_t start = L->op_start[i], end = L->op_end[i];
        ncalls[i] = end - start;
        calls += ncalls[i];
        plan[i] = calloc(ncalls[i] + 2, 1);
        for (uint64_t at = start + 1; at <= end; at++)
            plan[i][at - start] = (char)worth_failing(at, start, end);
    }
    for (int i = 0; i < NOPS; i++) {
        uint64_t tried = 0;
        here = 0;
        /* n = ncalls + 1: the fault should not fire (the plan was complete) */
        for (uint64_t n = 1; n <= ncalls[i] + 1; n++) {
            if (n <= ncalls[i] && !plan[i][n])
                continue;
            tried += run_faulted(L, (op)i, n, &here);
        }
        free(plan[i]);
        total += tried;
        failed += here;
        if (getenv("TEST_FAULTS_VERBOSE"))
            fprintf(stderr, "    %-16s %-22s %4llu calls, %3llu faults, %3llu failed\n",
                    d->name, op_name[i], (unsigned long long)ncalls[i],
                    (unsigned long long)tried, (unsigned long long)here);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "    %s: %llu fallible calls in a life, %llu faults injected, %llu failed "
                    "with a status, %llu absorbed (%.1f s)\n",
            d->name, (unsigned long long)calls, (unsigned long long)total,
            (unsigned long long)failed, (unsigned long long)(g_absorbed - absorbed0),
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    life_teardown(L);
    free(L);
    assert_int_equal(g_errors, errors0);
}

static void test_life_adamw(void **state)
{
    fixture *f = *state;
    static const life_desc d = {"adamw", CLOPT_ADAMW, 0};
    sweep_life(f->ctx, &d);
}

static void test_life_lamb(void **state)
{
    fixture *f = *state;
    static const life_desc d = {"lamb", CLOPT_LAMB, 0};
    sweep_life(f->ctx, &d);
}

static void test_life_adafactor(void **state)
{
    fixture *f = *state;
    static const life_desc d = {"adafactor", CLOPT_ADAFACTOR, 0};
    sweep_life(f->ctx, &d);
}

static void test_life_lookahead(void **state)
{
    fixture *f = *state;
    static const life_desc d = {"adamw+lookahead", CLOPT_ADAMW, 2};
    sweep_life(f->ctx, &d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_life_adamw),
        cmocka_unit_test(test_life_lamb),
        cmocka_unit_test(test_life_lookahead),
        cmocka_unit_test(test_prepare_fresh_context),
        /* last: Adafactor's range group once crashed the device (the report of issue 12) */
        cmocka_unit_test(test_life_adafactor),
    };
    const char *filter = getenv("TEST_FAULTS_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    for (size_t i = 0; i < g_nother; i++)
        printf("note: an OpenCL fault returned a non-OpenCL status: %s\n", g_other[i]);
    printf("faults injected: %llu (%llu failed with a status, %llu absorbed), call sites: %zu, "
           "leaks: %llu\n",
           (unsigned long long)g_faults, (unsigned long long)g_failed,
           (unsigned long long)g_absorbed, g_nsites, (unsigned long long)g_leaks);
    return rc;
}
