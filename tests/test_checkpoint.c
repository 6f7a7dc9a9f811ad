/* SPDX-License-Identifier: MIT */
/* Checkpoints (format version 2, docs/checkpoint-format.md): as bytes and as files, resuming
 * bit for bit, the all-or-nothing load, arena parameters. State tensors saved by the engine
 * through the enumeration, per-tensor step counts, a version-1 file and the enumeration are in
 * test_checkpoint_state.c; hostile input (issue 12: impossible values in well-formed bytes,
 * oversized files, FIFOs and devices, and symlinks planted where a temporary file could be)
 * in test_checkpoint_hostile.c (one executable; the model and the format helpers here, shared
 * through test_checkpoint.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clopt.h"
#include "fixture.h"
#include "ref.h"
#include "test_checkpoint.h"

/* ---- a small model ------------------------------------------------------------------------ */

/* Group 0: caller-owned T0 (6x5) and T1 (7); group 1 (other hyperparameters): T2 (9);
   with `arena`, an arena group (T3 (5), T4 (3x4), T5 (11)). */
static const size_t own_shape[3][2] = {{6, 5}, {7, 0}, {9, 0}};
static const size_t arena_shape[NARENA][2] = {{5, 0}, {3, 4}, {11, 0}};

static clopt_param_desc desc_of(const size_t shape[2])
{
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.ndim = shape[1] ? 2 : 1;
    d.shape[0] = shape[0];
    d.shape[1] = shape[1];
    return d;
}

static size_t numel(const size_t shape[2]) { return shape[0] * (shape[1] ? shape[1] : 1); }

void net_build(net *m, clopt_ctx *ctx, clopt_rule rule, unsigned lookahead_k, int arena,
               uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    clopt_hparams hp;
    clopt_hparams_default(rule, &hp);
    hp.lr = 0.01;
    hp.lookahead_k = lookahead_k;
    hp.lookahead_alpha = 0.5;
    assert_int_equal(clopt_optimizer_create(ctx, rule, &hp, &m->opt), CLOPT_SUCCESS);
    clopt_hparams h1 = hp;
    h1.lr = 0.004;
    h1.beta1 = 0.8;
    h1.weight_decay = 0.01;
    size_t g1;
    assert_int_equal(clopt_optimizer_add_group(m->opt, &h1, &g1), CLOPT_SUCCESS);
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 1;
    s.stage[0] = (clopt_schedule_stage){CLOPT_SCHED_LINEAR_WARMUP, 0, 5, 0, 0, 0.2, 0, 0};
    assert_int_equal(clopt_optimizer_set_group_schedule(m->opt, 0, &s), CLOPT_SUCCESS);
    float buf[64];
    for (size_t k = 0; k < 3; k++) {
        clopt_param_desc d = desc_of(own_shape[k]);
        m->n[k] = numel(own_shape[k]);
        for (size_t i = 0; i < m->n[k]; i++)
            buf[i] = (float)ref_normal(&seed);
        m->p[k] = upload(ctx, buf, m->n[k]);
        m->g[k] = upload(ctx, NULL, m->n[k]);
        d.param = (clopt_tensor){m->p[k], 0};
        d.grad = (clopt_tensor){m->g[k], 0};
        assert_int_equal(clopt_optimizer_add_param_desc(m->opt, k == 2 ? g1 : 0, &d, NULL),
                         CLOPT_SUCCESS);
    }
    m->nt = 3;
    if (arena) {
        clopt_param_desc shapes[NARENA];
        for (size_t k = 0; k < NARENA; k++)
            shapes[k] = desc_of(arena_shape[k]), m->n[3 + k] = numel(arena_shape[k]);
        size_t first;
        assert_int_equal(clopt_optimizer_add_arena_group(m->opt, &hp, NARENA, shapes, NULL,
                                                         &first),
                         CLOPT_SUCCESS);
        assert_int_equal(first, 3);
        m->nt = 3 + NARENA;
        for (size_t k = 3; k < m->nt; k++) {
            clopt_tensor pv;
            assert_int_equal(clopt_optimizer_param_view(m->opt, k, &pv, NULL, NULL, NULL),
                             CLOPT_SUCCESS);
            for (size_t i = 0; i < m->n[k]; i++)
                buf[i] = (float)ref_normal(&seed);
            write_at(ctx, pv, buf, m->n[k]);
        }
    }
}

void net_free(net *m)
{
    clopt_optimizer_destroy(m->opt);
    for (size_t k = 0; k < MAXT; k++) {
        if (m->p[k])
            clReleaseMemObject(m->p[k]);
        if (m->g[k])
            clReleaseMemObject(m->g[k]);
    }
}

/* Steps t0+1 .. t1 with gradients that depend only on the step and the tensor. */
void net_steps(net *m, uint64_t t0, uint64_t t1)
{
    float buf[64];
    for (uint64_t t = t0 + 1; t <= t1; t++) {
        for (size_t k = 0; k < m->nt; k++) {
            uint64_t seed = 1000 * t + k;
            clopt_tensor gv;
            assert_int_equal(clopt_optimizer_param_view(m->opt, k, NULL, &gv, NULL, NULL),
                             CLOPT_SUCCESS);
            for (size_t i = 0; i < m->n[k]; i++)
                buf[i] = (float)ref_normal(&seed);
            write_at(m->ctx, gv, buf, m->n[k]);
        }
        assert_int_equal(clopt_optimizer_step(m->opt, NULL), CLOPT_SUCCESS);
    }
}

size_t net_param_floats(const net *m)
{
    size_t total = 0;
    for (size_t k = 0; k < m->nt; k++)
        total += m->n[k];
    return total;
}

/* Parameters of the tensors [from, to), concatenated. */
void net_get_params(net *m, size_t from, size_t to, float *out)
{
    for (size_t k = from; k < to; k++) {
        clopt_tensor pv;
        clopt_optimizer_param_view(m->opt, k, &pv, NULL, NULL, NULL);
        read_at(m->ctx, pv, out, m->n[k]);
        out += m->n[k];
    }
}

void net_set_params(net *m, size_t from, size_t to, const float *in)
{
    for (size_t k = from; k < to; k++) {
        clopt_tensor pv;
        clopt_optimizer_param_view(m->opt, k, &pv, NULL, NULL, NULL);
        write_at(m->ctx, pv, in, m->n[k]);
        in += m->n[k];
    }
}

snapshot net_snapshot(net *m)
{
    snapshot s;
    memset(&s, 0, sizeof s);
    size_t total = net_param_floats(m);
    for (size_t k = 0; k < m->nt; k++)
        for (size_t j = 0; j < clopt_optimizer_state_count(m->opt, k); j++) {
            size_t len;
            clopt_optimizer_state_info(m->opt, k, j, NULL, &len);
            total += len;
        }
    s.v = malloc(total * sizeof *s.v);
    s.nv = total;
    float *p = s.v;
    net_get_params(m, 0, m->nt, p);
    p += net_param_floats(m);
    for (size_t k = 0; k < m->nt; k++)
        for (size_t j = 0; j < clopt_optimizer_state_count(m->opt, k); j++) {
            size_t len;
            clopt_optimizer_state_info(m->opt, k, j, NULL, &len);
            assert_int_equal(clopt_optimizer_read_state(m->opt, k, j, p, len), CLOPT_SUCCESS);
            p += len;
        }
    s.steps[0] = clopt_optimizer_step_count(m->opt);
    for (size_t k = 0; k < m->nt; k++)
        assert_int_equal(clopt_optimizer_param_step_count(m->opt, k, &s.steps[k + 1]),
                         CLOPT_SUCCESS);
    for (size_t g = 0; g < clopt_optimizer_group_count(m->opt) && g < 3; g++) {
        assert_int_equal(clopt_optimizer_get_group_hparams(m->opt, g, &s.hp[g]), CLOPT_SUCCESS);
        s.lr[g] = clopt_optimizer_group_lr(m->opt, g);
    }
    return s;
}

void assert_same(const snapshot *a, const snapshot *b)
{
    assert_int_equal(a->nv, b->nv);
    assert_memory_equal(a->v, b->v, a->nv * sizeof *a->v);
    assert_memory_equal(a->steps, b->steps, sizeof a->steps);
    assert_memory_equal(a->hp, b->hp, sizeof a->hp);
    assert_memory_equal(a->lr, b->lr, sizeof a->lr);
}

void snapshot_free(snapshot *s) { free(s->v); }

/* The checkpoint as bytes with options o (NULL = defaults), size checked against state_size. */
unsigned char *save_opt_bytes(clopt_optimizer *opt, const clopt_save_options *o, size_t *len)
{
    size_t size = 0, written = 0;
    assert_int_equal(clopt_optimizer_state_size(opt, o, &size), CLOPT_SUCCESS);
    unsigned char *buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(clopt_optimizer_save_to(opt, o, buf, size, &written), CLOPT_SUCCESS);
    assert_int_equal(written, size);
    *len = size;
    return buf;
}

unsigned char *save_bytes(net *m, const clopt_save_options *o, size_t *len)
{
    return save_opt_bytes(m->opt, o, len);
}

/* ---- format helpers, written from docs/checkpoint-format.md -------------------------------- */

static uint32_t crc32c(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t get_u64(const unsigned char *p)
{
    return get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

void put_f64(unsigned char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(p, v);
}

void reseal(unsigned char *d, size_t len) { put_u32(d + len - 4, crc32c(d, len - 4)); }

/* Start offsets of the sections (at most max). */
size_t sections(const unsigned char *d, size_t len, size_t *starts, size_t max)
{
    size_t n = 0;
    for (size_t at = 16; at + 16 <= len - 4 && n < max;) {
        starts[n++] = at;
        at += 16 + (size_t)get_u64(d + at + 8);
    }
    return n;
}

/* Offset of the flags of a TENS section starting at `at` (after group, ndim and shape). */
size_t tens_flags(const unsigned char *d, size_t at)
{
    return at + 16 + 8 + 4 + 8 * (size_t)get_u32(d + at + 16 + 8);
}

/* Loading must fail with `want` and change nothing observable. */
void expect_rejected(net *m, const unsigned char *bytes, size_t len, clopt_status want,
                     const snapshot *before, const char *what)
{
    clopt_status s = clopt_optimizer_load_from(m->opt, bytes, len);
    if (s != want) {
        fprintf(stderr, "%s: got %s (%s), want %s\n", what, clopt_status_name(s),
                clopt_ctx_last_error(m->ctx), clopt_status_name(want));
        fail();
    }
    assert_true(strlen(clopt_ctx_last_error(m->ctx)) > 0);
    snapshot after = net_snapshot(m);
    assert_same(before, &after);
    snapshot_free(&after);
}

/* ---- (a) resume from bytes ---------------------------------------------------------------- */

/* save_to after N steps, K more steps; a fresh optimizer loads the bytes, the engine restores
   its own parameters, K steps: the same parameters, states and counts, bit for bit. NAdam
   carries its per-tensor products, AdamW with Lookahead its slow weights. */
static void test_resume_from_bytes(void **state)
{
    fixture *f = *state;
    const clopt_rule rules[3] = {CLOPT_ADAM, CLOPT_NADAM, CLOPT_ADAMW};
    const unsigned la[3] = {0, 0, 3};
    cl_mem draws = upload(f->ctx, NULL, 2 * 40);
    for (int r = 0; r < 3; r++) {
        net a, b;
        net_build(&a, f->ctx, rules[r], la[r], 0, 1);
        /* clipping, AMP with a skipped step and the RNG position are saved too */
        assert_int_equal(clopt_optimizer_set_grad_clip(a.opt, 2.0), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_seed(a.opt, 99 + (uint64_t)r), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_randn(a.opt, (clopt_tensor){draws, 0}, 10),
                         CLOPT_SUCCESS);
        net_steps(&a, 0, 4);
        assert_int_equal(clopt_optimizer_set_grad_scale(a.opt, 512.0), CLOPT_SUCCESS);
        const float nan = NAN;
        write_at(f->ctx, (clopt_tensor){a.g[1], 3}, &nan, 1);
        assert_int_equal(clopt_optimizer_step(a.opt, NULL), CLOPT_STEP_SKIPPED);
        assert_int_equal(clopt_optimizer_found_inf(a.opt), 1);
        size_t len;
        unsigned char *bytes = save_bytes(&a, NULL, &len);
        size_t np = net_param_floats(&a);
        float *params = malloc(np * sizeof *params);
        net_get_params(&a, 0, a.nt, params);
        net_build(&b, f->ctx, rules[r], la[r], 0, 2); /* other initial parameters */
        clopt_schedule none;
        memset(&none, 0, sizeof none); /* and no schedule: the bytes bring group 0's */
        assert_int_equal(clopt_optimizer_set_group_schedule(b.opt, 0, &none), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_load_from(b.opt, bytes, len), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step_count(b.opt), 4);
        assert_int_equal(clopt_optimizer_found_inf(b.opt), 1);
        assert_true(clopt_optimizer_group_lr(b.opt, 0) == clopt_optimizer_group_lr(a.opt, 0));
        double na = clopt_optimizer_last_grad_norm(a.opt),
               nb = clopt_optimizer_last_grad_norm(b.opt);
        assert_memory_equal(&na, &nb, sizeof na);
        net_set_params(&b, 0, b.nt, params);
        net_steps(&a, 4, 9);
        net_steps(&b, 4, 9);
        snapshot sa = net_snapshot(&a), sb = net_snapshot(&b);
        assert_int_equal(sb.steps[0], 9);
        assert_same(&sa, &sb);
        na = clopt_optimizer_last_grad_norm(a.opt), nb = clopt_optimizer_last_grad_norm(b.opt);
        assert_true(isfinite(na));
        assert_memory_equal(&na, &nb, sizeof na);
        /* the next draws continue from the same position */
        float da[40], db[40];
        assert_int_equal(clopt_optimizer_randn(a.opt, (clopt_tensor){draws, 0}, 40),
                         CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_randn(b.opt, (clopt_tensor){draws, 40}, 40),
                         CLOPT_SUCCESS);
        read_at(f->ctx, (clopt_tensor){draws, 0}, da, 40);
        read_at(f->ctx, (clopt_tensor){draws, 40}, db, 40);
        assert_memory_equal(da, db, sizeof da);
        snapshot_free(&sa), snapshot_free(&sb);
        free(params), free(bytes);
        net_free(&a), net_free(&b);
    }
    clReleaseMemObject(draws);
}

/* A tensor added after training started, with Lookahead, saved before its first step: its
   slow weights are still "θ at the first step", also after loading. The engine then gives it
   new values (both optimizers the same), and the two go on identically. */
static void test_late_tensor_lookahead(void **state)
{
    fixture *f = *state;
    enum { N0 = 30, N1 = 12 };
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    hp.lookahead_k = 2;
    float p0[N0], p1[N1], g[N0];
    uint64_t seed = 31;
    for (int i = 0; i < N0; i++)
        p0[i] = (float)ref_normal(&seed);
    for (int i = 0; i < N1; i++)
        p1[i] = (float)ref_normal(&seed);
    cl_mem pa[2] = {upload(f->ctx, p0, N0), upload(f->ctx, p1, N1)};
    static const float zeros[N0];
    cl_mem pb[2] = {upload(f->ctx, zeros, N0), upload(f->ctx, zeros, N1)}; /* other values */
    cl_mem ga[2] = {upload(f->ctx, NULL, N0), upload(f->ctx, NULL, N1)};
    cl_mem gb[2] = {upload(f->ctx, NULL, N0), upload(f->ctx, NULL, N1)};
    const size_t n[2] = {N0, N1};
    clopt_optimizer *a, *b;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &a), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &b), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(a, (clopt_tensor){pa[0], 0},
                                               (clopt_tensor){ga[0], 0}, N0, NULL, NULL),
                     CLOPT_SUCCESS);
    for (uint64_t t = 1; t <= 3; t++) {
        for (int i = 0; i < N0; i++)
            g[i] = (float)ref_normal(&seed);
        write_at(f->ctx, (clopt_tensor){ga[0], 0}, g, N0);
        assert_int_equal(clopt_optimizer_step(a, NULL), CLOPT_SUCCESS);
    }
    assert_int_equal(clopt_optimizer_add_param(a, (clopt_tensor){pa[1], 0},
                                               (clopt_tensor){ga[1], 0}, N1, NULL, NULL),
                     CLOPT_SUCCESS);
    size_t size, written;
    assert_int_equal(clopt_optimizer_state_size(a, NULL, &size), CLOPT_SUCCESS);
    unsigned char *bytes = malloc(size);
    assert_int_equal(clopt_optimizer_save_to(a, NULL, bytes, size, &written), CLOPT_SUCCESS);
    for (int k = 0; k < 2; k++)
        assert_int_equal(clopt_optimizer_add_param(b, (clopt_tensor){pb[k], 0},
                                                   (clopt_tensor){gb[k], 0}, n[k], NULL, NULL),
                         CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_load_from(b, bytes, written), CLOPT_SUCCESS);
    uint64_t c;
    assert_int_equal(clopt_optimizer_param_step_count(b, 1, &c), CLOPT_SUCCESS);
    assert_int_equal(c, 0);
    /* the engine: T0 restored, T1 re-initialised (the same new values in both) */
    float buf[N0];
    read_at(f->ctx, (clopt_tensor){pa[0], 0}, buf, N0);
    write_at(f->ctx, (clopt_tensor){pb[0], 0}, buf, N0);
    for (int i = 0; i < N1; i++)
        buf[i] = (float)ref_normal(&seed);
    write_at(f->ctx, (clopt_tensor){pa[1], 0}, buf, N1);
    write_at(f->ctx, (clopt_tensor){pb[1], 0}, buf, N1);
    float sa[N1], sb[N1];
    assert_int_equal(clopt_optimizer_read_state(b, 1, 2, sb, N1), CLOPT_SUCCESS);
    assert_memory_equal(sb, buf, sizeof sb); /* θ until the first step */
    for (uint64_t t = 4; t <= 8; t++)
        for (int k = 0; k < 2; k++) {
            for (size_t i = 0; i < n[k]; i++)
                g[i] = (float)ref_normal(&seed);
            write_at(f->ctx, (clopt_tensor){ga[k], 0}, g, n[k]);
            write_at(f->ctx, (clopt_tensor){gb[k], 0}, g, n[k]);
            if (k == 1) {
                assert_int_equal(clopt_optimizer_step(a, NULL), CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_step(b, NULL), CLOPT_SUCCESS);
            }
        }
    for (int k = 0; k < 2; k++) {
        float xa[N0], xb[N0];
        read_at(f->ctx, (clopt_tensor){pa[k], 0}, xa, n[k]);
        read_at(f->ctx, (clopt_tensor){pb[k], 0}, xb, n[k]);
        assert_memory_equal(xa, xb, n[k] * sizeof *xa);
    }
    assert_int_equal(clopt_optimizer_read_state(a, 1, 2, sa, N1), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_read_state(b, 1, 2, sb, N1), CLOPT_SUCCESS);
    assert_memory_equal(sa, sb, sizeof sa);
    free(bytes);
    clopt_optimizer_destroy(a), clopt_optimizer_destroy(b);
    for (int k = 0; k < 2; k++) {
        clReleaseMemObject(pa[k]), clReleaseMemObject(pb[k]);
        clReleaseMemObject(ga[k]), clReleaseMemObject(gb[k]);
    }
}

/* ---- (b) file and bytes, sizes, small buffers, options -------------------------------------- */

/* The size the format document gives for this optimizer. */
static size_t documented_size(net *m, int state_tensors, int arena_params)
{
    size_t size = 16 + 4;             /* header, CRC */
    size += 16 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 4 + 8 + 8 + 4; /* OPTM */
    for (size_t g = 0; g < clopt_optimizer_group_count(m->opt); g++) {
        size_t stages = g == 0 ? 1 : 0; /* net_build gives group 0 a one-stage schedule */
        size += 16 + 22 * 8 + 23 * 4 + 4 + stages * (4 + 3 * 8 + 4 * 8) + 4 + 8;
    }
    for (size_t k = 0; k < m->nt; k++) {
        size_t ndim = (k < 3 ? own_shape[k][1] : arena_shape[k - 3][1]) ? 2 : 1;
        size += 16 + 8 + 4 + 8 * ndim + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 4;
        for (size_t j = 0; j < clopt_optimizer_state_count(m->opt, k); j++) {
            const char *name;
            size_t len;
            clopt_optimizer_state_info(m->opt, k, j, &name, &len);
            size += 4 + strlen(name) + 8 + 4 + (state_tensors ? 4 * len : 0);
        }
        if (k >= 3 && arena_params)
            size += 8 + 4 * m->n[k];
    }
    return size;
}

unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *d = malloc(*len ? *len : 1);
    assert_int_equal(fread(d, 1, *len, fp), *len);
    fclose(fp);
    return d;
}

/* The settings a checkpoint carries can be read back, so an engine that keeps its own
   checkpoint can store them without clopt's bytes: clipping, the AMP scale, the finite check,
   each group's schedule and the generator's position (set_rng restores it: the next randn
   gives the saved optimizer's values). After a load the getters report the file's. */
static void test_settings_read_back(void **state)
{
    fixture *f = *state;
    net a, b;
    net_build(&a, f->ctx, CLOPT_ADAM, 0, 0, 3);
    net_build(&b, f->ctx, CLOPT_ADAM, 0, 0, 4);
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 1;
    s.stage[0].kind = CLOPT_SCHED_STEP;
    s.stage[0].step_size = 7;
    s.stage[0].gamma = 0.5;
    assert_int_equal(clopt_optimizer_set_group_schedule(a.opt, 0, &s), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_clip(a.opt, 2.5), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(a.opt, 1024.0), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_check_finite(a.opt, 1), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_seed(a.opt, 77), CLOPT_SUCCESS);
    cl_mem r = upload(f->ctx, NULL, 64);
    assert_int_equal(clopt_optimizer_randn(a.opt, (clopt_tensor){r, 0}, 10), CLOPT_SUCCESS);
    assert_true(clopt_optimizer_grad_clip(a.opt) == 2.5);
    assert_true(clopt_optimizer_grad_scale(a.opt) == 1024.0);
    assert_int_equal(clopt_optimizer_check_finite(a.opt), 1);
    uint64_t seed = 0, counter = 0;
    assert_int_equal(clopt_optimizer_rng(a.opt, &seed, &counter), CLOPT_SUCCESS);
    assert_true(seed == 77 && counter == 3); /* ceil(10 / 4) */
    clopt_schedule got;
    assert_int_equal(clopt_optimizer_get_group_schedule(a.opt, 0, &got), CLOPT_SUCCESS);
    assert_true(got.nstages == 1 && got.stage[0].kind == CLOPT_SCHED_STEP &&
                got.stage[0].step_size == 7 && got.stage[0].gamma == 0.5);
    assert_int_equal(clopt_optimizer_get_group_schedule(a.opt, 9, &got), CLOPT_ERR_INDEX);
    assert_int_equal(clopt_optimizer_get_group_schedule(a.opt, 0, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_get_group_schedule(a.opt, 9, &got), CLOPT_ERR_INDEX);
    assert_int_equal(clopt_optimizer_rng(a.opt, NULL, &counter), CLOPT_ERR_NULL_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "seed and counter")); /* not "no group" */
    assert_true(isnan(clopt_optimizer_grad_clip(NULL)) && isnan(clopt_optimizer_grad_scale(NULL)));
    /* a fresh optimizer's defaults, then the loaded file's */
    assert_true(clopt_optimizer_grad_clip(b.opt) == 0 && clopt_optimizer_grad_scale(b.opt) == 0);
    assert_int_equal(clopt_optimizer_check_finite(b.opt), 0);
    size_t len;
    unsigned char *bytes = save_bytes(&a, NULL, &len);
    assert_int_equal(clopt_optimizer_load_from(b.opt, bytes, len), CLOPT_SUCCESS);
    assert_true(clopt_optimizer_grad_clip(b.opt) == 2.5);
    assert_true(clopt_optimizer_grad_scale(b.opt) == 1024.0);
    assert_int_equal(clopt_optimizer_check_finite(b.opt), 1);
    assert_int_equal(clopt_optimizer_rng(b.opt, &seed, &counter), CLOPT_SUCCESS);
    assert_true(seed == 77 && counter == 3);
    assert_int_equal(clopt_optimizer_get_group_schedule(b.opt, 0, &got), CLOPT_SUCCESS);
    assert_true(got.nstages == 1 && got.stage[0].step_size == 7);
    /* set_rng: the next draws continue a's sequence (draws 12..23 of seed 77) */
    float x[12], y[12];
    assert_int_equal(clopt_optimizer_randn(a.opt, (clopt_tensor){r, 0}, 12), CLOPT_SUCCESS);
    read_at(f->ctx, (clopt_tensor){r, 0}, x, 12);
    assert_int_equal(clopt_optimizer_set_rng(b.opt, 77, 3), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_randn(b.opt, (clopt_tensor){r, 0}, 12), CLOPT_SUCCESS);
    read_at(f->ctx, (clopt_tensor){r, 0}, y, 12);
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(clopt_enqueue_randn(f->ctx, NULL, (clopt_tensor){r, 0}, 12, 77, 3, 0, NULL,
                                         NULL),
                     CLOPT_SUCCESS);
    read_at(f->ctx, (clopt_tensor){r, 0}, y, 12);
    assert_memory_equal(x, y, sizeof x);
    free(bytes);
    clReleaseMemObject(r);
    net_free(&a);
    net_free(&b);
}

static void test_file_and_bytes(void **state)
{
    fixture *f = *state;
    net m;
    net_build(&m, f->ctx, CLOPT_ADAMW, 2, 1, 3);
    net_steps(&m, 0, 3);
    char dir[] = "/tmp/clopt-h2ckp-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    assert_int_equal(clopt_optimizer_save(m.opt, path), CLOPT_SUCCESS);
    size_t flen, blen;
    unsigned char *file = slurp(path, &flen);
    unsigned char *bytes = save_bytes(&m, NULL, &blen);
    assert_int_equal(flen, blen);
    assert_memory_equal(file, bytes, flen);
    assert_int_equal(flen, documented_size(&m, 1, 1));
    assert_memory_equal(bytes, "CLOPTCKP", 8);
    assert_int_equal(get_u32(bytes + 8), 4);
    assert_int_equal(get_u32(bytes + 12), 1 + 3 + 6);
    assert_int_equal(get_u32(bytes + blen - 4), crc32c(bytes, blen - 4));
    /* explicit default options give the same bytes; the options' sizes as documented */
    clopt_save_options o;
    clopt_save_options_init(&o);
    assert_int_equal(o.struct_size, sizeof o);
    assert_int_equal(o.state_tensors, 1);
    assert_int_equal(o.arena_params, 1);
    size_t len;
    unsigned char *again = save_bytes(&m, &o, &len);
    assert_int_equal(len, blen);
    assert_memory_equal(again, bytes, len);
    free(again);
    for (int st = 0; st < 2; st++)
        for (int ap = 0; ap < 2; ap++) {
            o.state_tensors = st, o.arena_params = ap;
            size_t size;
            assert_int_equal(clopt_optimizer_state_size(m.opt, &o, &size), CLOPT_SUCCESS);
            assert_int_equal(size, documented_size(&m, st, ap));
            unsigned char *b = save_bytes(&m, &o, &len);
            assert_int_equal(get_u32(b + len - 4), crc32c(b, len - 4));
            free(b);
        }
    /* a struct_size that stops before arena_params: that field takes its default (1) */
    clopt_save_options_init(&o);
    o.arena_params = 0;
    o.struct_size = offsetof(clopt_save_options, arena_params);
    size_t size;
    assert_int_equal(clopt_optimizer_state_size(m.opt, &o, &size), CLOPT_SUCCESS);
    assert_int_equal(size, blen);
    /* too small a buffer: CLOPT_ERR_INVALID_SIZE and not one byte written */
    unsigned char *small = malloc(blen);
    size_t written = 12345;
    memset(small, 0xA5, blen);
    assert_int_equal(clopt_optimizer_save_to(m.opt, NULL, small, blen - 1, &written),
                     CLOPT_ERR_INVALID_SIZE);
    assert_int_equal(written, 12345);
    for (size_t i = 0; i < blen; i++)
        assert_int_equal(small[i], 0xA5);
    assert_int_equal(clopt_optimizer_save_to(m.opt, NULL, small, 0, NULL),
                     CLOPT_ERR_INVALID_SIZE);
    assert_int_equal(small[0], 0xA5);
    /* a larger buffer: only the checkpoint's bytes are written; written may be NULL */
    unsigned char *big = malloc(blen + 16);
    memset(big, 0x5A, blen + 16);
    assert_int_equal(clopt_optimizer_save_to(m.opt, NULL, big, blen + 16, NULL), CLOPT_SUCCESS);
    assert_memory_equal(big, bytes, blen);
    for (size_t i = blen; i < blen + 16; i++)
        assert_int_equal(big[i], 0x5A);
    /* arguments */
    assert_int_equal(clopt_optimizer_state_size(NULL, NULL, &size), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_state_size(m.opt, NULL, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_save_to(m.opt, NULL, NULL, 100, NULL),
                     CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_save_to(NULL, NULL, big, blen, NULL),
                     CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_load_from(m.opt, NULL, 10), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_load_from(NULL, bytes, blen), CLOPT_ERR_NULL_ARGUMENT);
    clopt_save_options_init(&o);
    o.state_tensors = 2;
    assert_int_equal(clopt_optimizer_state_size(m.opt, &o, &size), CLOPT_ERR_INVALID_ARGUMENT);
    memset(big, 0x5A, blen);
    assert_int_equal(clopt_optimizer_save_to(m.opt, &o, big, blen + 16, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(big[0], 0x5A);
    o.state_tensors = 1;
    o.struct_size = 0;
    assert_int_equal(clopt_optimizer_state_size(m.opt, &o, &size), CLOPT_ERR_INVALID_ARGUMENT);
    /* a garbage struct_size in a struct of its own size: refused before a byte past it is
       read (the library read up to struct_size bytes, out of bounds, looking for set
       fields; ASan saw it, a struct before an unmapped page crashed) */
    clopt_save_options *heap = malloc(sizeof *heap);
    assert_non_null(heap);
    clopt_save_options_init(heap);
    heap->struct_size = 1025;
    assert_int_equal(clopt_optimizer_state_size(m.opt, heap, &size), CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "clopt_save_options_init"));
    heap->struct_size = (size_t)-1;
    assert_int_equal(clopt_optimizer_save_to(m.opt, heap, big, blen + 16, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    free(heap);
    /* the bytes load into the file's optimizer, and the file into the bytes' */
    assert_int_equal(clopt_optimizer_load_from(m.opt, file, flen), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_load(m.opt, path), CLOPT_SUCCESS);
    /* no temporary file is left next to the checkpoint */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    remove(path);
    rmdir(dir);
    free(file), free(bytes), free(small), free(big);
    net_free(&m);
}

/* ---- (c) corrupted bytes --------------------------------------------------------------------- */

static void test_corrupted_bytes(void **state)
{
    fixture *f = *state;
    net src, dst;
    net_build(&src, f->ctx, CLOPT_NADAM, 0, 1, 4);
    net_steps(&src, 0, 5);
    size_t len;
    unsigned char *good = save_bytes(&src, NULL, &len);
    net_build(&dst, f->ctx, CLOPT_NADAM, 0, 1, 5);
    net_steps(&dst, 0, 2);
    snapshot before = net_snapshot(&dst);
    unsigned char *copy = malloc(len);
    /* every single flipped byte, every truncation */
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, good, len);
        copy[i] ^= (unsigned char)(1u << (i % 8));
        assert_int_equal(clopt_optimizer_load_from(dst.opt, copy, len), CLOPT_ERR_FORMAT);
    }
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(clopt_optimizer_load_from(dst.opt, good, cut), CLOPT_ERR_FORMAT);
    snapshot after = net_snapshot(&dst);
    assert_same(&before, &after);
    snapshot_free(&after);
    /* values a saved optimizer cannot have, with a valid CRC */
    size_t starts[16];
    assert_int_equal(sections(good, len, starts, 16), 1 + 3 + 6);
    const size_t optm = starts[0], t0 = starts[4], t4 = starts[8];
    struct {
        size_t at;
        int kind; /* 0 u32, 1 u64, 2 f64 */
        double value;
        const char *what;
    } bad[] = {
        {8, 0, 5, "version 5"},
        {8, 0, 0, "version 0"},
        {optm + 16 + 68, 0, 2, "unknown optimizer flag"},
        {optm + 16 + 48, 0, 2, "found_inf 2"},
        {optm + 16 + 40, 2, -1.0, "negative loss scale"},
        {optm + 16 + 24, 2, INFINITY, "infinite max_grad_norm"},
        {tens_flags(good, t0), 0, 4, "unknown tensor flag"},
        {tens_flags(good, t0), 0, 1, "parameters of a caller-owned tensor"},
        {tens_flags(good, t0) + 12, 1, 6, "tensor step past the optimizer's"},
        {tens_flags(good, t0) + 20, 2, 1.5, "NAdam product above 1"},
        {tens_flags(good, t0) + 20, 2, -1e-300, "negative NAdam product"},
        {tens_flags(good, t0) + 20, 2, NAN, "NAdam product NaN"},
        {tens_flags(good, t4) + 12, 1, 4, "arena tensors with different steps"},
        {starts[1] + 16, 2, NAN, "lr NaN"},
        {starts[1] + 16, 2, -0.5, "negative lr"},
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        memcpy(copy, good, len);
        if (bad[c].kind == 0)
            put_u32(copy + bad[c].at, (uint32_t)bad[c].value);
        else if (bad[c].kind == 1)
            put_u64(copy + bad[c].at, (uint64_t)bad[c].value);
        else
            put_f64(copy + bad[c].at, bad[c].value);
        reseal(copy, len);
        expect_rejected(&dst, copy, len, CLOPT_ERR_FORMAT, &before, bad[c].what);
    }
    /* the offsets above are the fields they name: unchanged, the bytes load */
    assert_int_equal(get_u64(good + tens_flags(good, t0) + 12), 5);
    assert_int_equal(get_u32(good + tens_flags(good, t4)), 1 | 2);
    assert_int_equal(get_u32(good + optm + 16 + 68), 1);
    assert_int_equal(get_u64(good + optm + 16 + 16), 5);
    /* another optimizer's bytes: a mismatch, nothing changed */
    net other;
    net_build(&other, f->ctx, CLOPT_ADAM, 0, 1, 4);
    size_t olen;
    unsigned char *obytes = save_bytes(&other, NULL, &olen);
    expect_rejected(&dst, obytes, olen, CLOPT_ERR_STATE_MISMATCH, &before, "other rule");
    free(obytes);
    net_free(&other);
    assert_int_equal(clopt_optimizer_load_from(dst.opt, good, len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(dst.opt), 5);
    snapshot_free(&before);
    free(copy), free(good);
    net_free(&src), net_free(&dst);
}

/* ---- (d) arena parameters ------------------------------------------------------------------- */

static void test_arena_params(void **state)
{
    fixture *f = *state;
    net a, b, c;
    net_build(&a, f->ctx, CLOPT_ADAM, 0, 1, 6);
    net_steps(&a, 0, 3);
    size_t len, slen;
    unsigned char *bytes = save_bytes(&a, NULL, &len);
    clopt_save_options o;
    clopt_save_options_init(&o);
    o.arena_params = 0;
    unsigned char *slim = save_bytes(&a, &o, &slen);
    size_t np = net_param_floats(&a), nown = a.n[0] + a.n[1] + a.n[2];
    float *saved = malloc(np * sizeof *saved);
    net_get_params(&a, 0, a.nt, saved);
    net_steps(&a, 3, 7);
    /* with arena_params (the default): the arena's parameters come from the bytes alone */
    net_build(&b, f->ctx, CLOPT_ADAM, 0, 1, 7);
    float *got = malloc(np * sizeof *got);
    assert_int_equal(clopt_optimizer_load_from(b.opt, bytes, len), CLOPT_SUCCESS);
    net_get_params(&b, 3, b.nt, got);
    assert_memory_equal(got, saved + nown, (np - nown) * sizeof *got);
    net_set_params(&b, 0, 3, saved); /* only the caller-owned tensors */
    net_steps(&b, 3, 7);
    snapshot sa = net_snapshot(&a), sb = net_snapshot(&b);
    assert_same(&sa, &sb);
    /* without: the arena's parameters are left as they were */
    net_build(&c, f->ctx, CLOPT_ADAM, 0, 1, 8);
    float *mine = malloc(np * sizeof *mine);
    net_get_params(&c, 0, c.nt, mine);
    assert_int_equal(clopt_optimizer_load_from(c.opt, slim, slen), CLOPT_SUCCESS);
    net_get_params(&c, 0, c.nt, got);
    assert_memory_equal(got, mine, np * sizeof *got);
    assert_int_equal(clopt_optimizer_step_count(c.opt), 3);
    assert_int_equal(len - slen, NARENA * 8 + (np - nown) * 4);
    net_set_params(&c, 0, c.nt, saved);
    net_steps(&c, 3, 7);
    snapshot sc = net_snapshot(&c);
    assert_same(&sa, &sc);
    snapshot_free(&sa), snapshot_free(&sb), snapshot_free(&sc);
    free(bytes), free(slim), free(saved), free(got), free(mine);
    net_free(&a), net_free(&b), net_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_from_bytes),
        cmocka_unit_test(test_late_tensor_lookahead),
        cmocka_unit_test(test_file_and_bytes),
        cmocka_unit_test(test_settings_read_back),
        cmocka_unit_test(test_corrupted_bytes),
        cmocka_unit_test(test_arena_params),
        CHECKPOINT_STATE_TESTS,
        CHECKPOINT_HOSTILE_TESTS,
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
