/* SPDX-License-Identifier: MIT */
/* Checkpoints (format version 2, docs/checkpoint-format.md): as bytes and as files, resuming
 * bit for bit, the all-or-nothing load, arena parameters, state tensors saved by the engine
 * through the enumeration, per-tensor step counts, a version-1 file, and the enumeration;
 * hostile input (issue 12): impossible values in well-formed bytes, oversized files, FIFOs and
 * devices, and symlinks planted where a temporary file could be. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clopt.h"
#include "fixture.h"
#include "ref.h"

static void assert_close(const float *x, const double *ref, size_t n, double rtol, double atol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i] - ref[i]) <= atol + rtol * fabs(ref[i]))) {
            fprintf(stderr, "%s: [%zu] got %.9g want %.9g\n", what, i, (double)x[i], ref[i]);
            fail();
        }
}

/* ---- a small model ------------------------------------------------------------------------ */

/* Group 0: caller-owned T0 (6x5) and T1 (7); group 1 (other hyperparameters): T2 (9);
   with `arena`, an arena group (T3 (5), T4 (3x4), T5 (11)). */
enum { MAXT = 6, NARENA = 3 };
static const size_t own_shape[3][2] = {{6, 5}, {7, 0}, {9, 0}};
static const size_t arena_shape[NARENA][2] = {{5, 0}, {3, 4}, {11, 0}};

typedef struct net {
    clopt_ctx *ctx;
    clopt_optimizer *opt;
    size_t nt;
    size_t n[MAXT];
    cl_mem p[MAXT], g[MAXT]; /* NULL for arena tensors */
} net;

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

static void net_build(net *m, clopt_ctx *ctx, clopt_rule rule, unsigned lookahead_k, int arena,
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

static void net_free(net *m)
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
static void net_steps(net *m, uint64_t t0, uint64_t t1)
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

static size_t net_param_floats(const net *m)
{
    size_t total = 0;
    for (size_t k = 0; k < m->nt; k++)
        total += m->n[k];
    return total;
}

/* Parameters of the tensors [from, to), concatenated. */
static void net_get_params(net *m, size_t from, size_t to, float *out)
{
    for (size_t k = from; k < to; k++) {
        clopt_tensor pv;
        clopt_optimizer_param_view(m->opt, k, &pv, NULL, NULL, NULL);
        read_at(m->ctx, pv, out, m->n[k]);
        out += m->n[k];
    }
}

static void net_set_params(net *m, size_t from, size_t to, const float *in)
{
    for (size_t k = from; k < to; k++) {
        clopt_tensor pv;
        clopt_optimizer_param_view(m->opt, k, &pv, NULL, NULL, NULL);
        write_at(m->ctx, pv, in, m->n[k]);
        in += m->n[k];
    }
}

/* Everything observable: parameters, every state, the step counts, hyperparameters, lrs. */
typedef struct snapshot {
    float *v;
    size_t nv;
    uint64_t steps[MAXT + 1];
    clopt_hparams hp[3];
    double lr[3];
} snapshot;

static snapshot net_snapshot(net *m)
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

static void assert_same(const snapshot *a, const snapshot *b)
{
    assert_int_equal(a->nv, b->nv);
    assert_memory_equal(a->v, b->v, a->nv * sizeof *a->v);
    assert_memory_equal(a->steps, b->steps, sizeof a->steps);
    assert_memory_equal(a->hp, b->hp, sizeof a->hp);
    assert_memory_equal(a->lr, b->lr, sizeof a->lr);
}

static void snapshot_free(snapshot *s) { free(s->v); }

/* The checkpoint as bytes with options o (NULL = defaults), size checked against state_size. */
static unsigned char *save_bytes(net *m, const clopt_save_options *o, size_t *len)
{
    size_t size = 0, written = 0;
    assert_int_equal(clopt_optimizer_state_size(m->opt, o, &size), CLOPT_SUCCESS);
    unsigned char *buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(clopt_optimizer_save_to(m->opt, o, buf, size, &written), CLOPT_SUCCESS);
    assert_int_equal(written, size);
    *len = size;
    return buf;
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

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static void put_f64(unsigned char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(p, v);
}

static void reseal(unsigned char *d, size_t len) { put_u32(d + len - 4, crc32c(d, len - 4)); }

/* Start offsets of the sections (at most max). */
static size_t sections(const unsigned char *d, size_t len, size_t *starts, size_t max)
{
    size_t n = 0;
    for (size_t at = 16; at + 16 <= len - 4 && n < max;) {
        starts[n++] = at;
        at += 16 + (size_t)get_u64(d + at + 8);
    }
    return n;
}

/* Offset of the flags of a TENS section starting at `at` (after group, ndim and shape). */
static size_t tens_flags(const unsigned char *d, size_t at)
{
    return at + 16 + 8 + 4 + 8 * (size_t)get_u32(d + at + 16 + 8);
}

/* Loading must fail with `want` and change nothing observable. */
static void expect_rejected(net *m, const unsigned char *bytes, size_t len, clopt_status want,
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
        double na = clopt_optimizer_last_grad_norm(a.opt), nb = clopt_optimizer_last_grad_norm(b.opt);
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

static unsigned char *slurp(const char *path, size_t *len)
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

/* ---- (e) state tensors saved by the engine ------------------------------------------------ */

typedef struct engine_tensor {
    char key[64];
    size_t length;
    float *data;
} engine_tensor;

static void test_engine_state_tensors(void **state)
{
    fixture *f = *state;
    net a, b;
    /* AdamW with Lookahead (k = 2) and an arena group: slow weights and arena states too */
    net_build(&a, f->ctx, CLOPT_ADAMW, 2, 1, 9);
    net_steps(&a, 0, 3);
    clopt_save_options o;
    clopt_save_options_init(&o);
    o.state_tensors = 0;
    size_t len, full;
    unsigned char *blob = save_bytes(&a, &o, &len);
    unsigned char *all = save_bytes(&a, NULL, &full);
    /* the engine's own container: every entry by key */
    size_t count = clopt_optimizer_state_entry_count(a.opt);
    assert_int_equal(count, 6 * 3); /* exp_avg, exp_avg_sq, slow_params per tensor */
    engine_tensor *store = calloc(count, sizeof *store);
    size_t floats = 0;
    for (size_t i = 0; i < count; i++) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(a.opt, i, &e), CLOPT_SUCCESS);
        snprintf(store[i].key, sizeof store[i].key, "%s", e.key);
        store[i].length = e.length;
        store[i].data = malloc(e.length * sizeof(float));
        assert_int_equal(clopt_optimizer_read_state(a.opt, e.param, e.index, store[i].data,
                                                    e.length),
                         CLOPT_SUCCESS);
        floats += e.length;
    }
    assert_int_equal(full - len, floats * 4);
    size_t np = net_param_floats(&a);
    float *params = malloc(np * sizeof *params);
    net_get_params(&a, 0, a.nt, params);
    net_steps(&a, 3, 8);
    /* a fresh optimizer: the blob leaves its state tensors as they are */
    net_build(&b, f->ctx, CLOPT_ADAMW, 2, 1, 10);
    float zeros[64] = {0}, tmp[64];
    assert_int_equal(clopt_optimizer_load_from(b.opt, blob, len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(b.opt), 3);
    assert_int_equal(clopt_optimizer_read_state(b.opt, 0, 0, tmp, 30), CLOPT_SUCCESS);
    assert_memory_equal(tmp, zeros, 30 * sizeof *tmp);
    /* b has not stepped: its slow weights are still its own θ, not the (absent) saved ones */
    float theta[64];
    net_get_params(&b, 0, 1, theta);
    assert_int_equal(clopt_optimizer_read_state(b.opt, 0, 2, tmp, 30), CLOPT_SUCCESS);
    assert_memory_equal(tmp, theta, 30 * sizeof *tmp);
    /* the engine restores each entry by key (in reverse order: the order does not matter) */
    for (size_t i = count; i-- > 0;) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(b.opt, i, &e), CLOPT_SUCCESS);
        const engine_tensor *t = NULL;
        for (size_t j = 0; j < count; j++)
            if (strcmp(store[j].key, e.key) == 0)
                t = &store[j];
        assert_non_null(t);
        assert_int_equal(t->length, e.length);
        assert_int_equal(clopt_optimizer_write_state(b.opt, e.param, e.index, t->data, e.length),
                         CLOPT_SUCCESS);
        float back[64];
        assert_int_equal(clopt_optimizer_read_state(b.opt, e.param, e.index, back, e.length),
                         CLOPT_SUCCESS);
        assert_memory_equal(back, t->data, e.length * sizeof *back);
    }
    net_set_params(&b, 0, 3, params); /* the arena's came with the blob */
    net_steps(&b, 3, 8);
    snapshot sa = net_snapshot(&a), sb = net_snapshot(&b);
    assert_same(&sa, &sb);
    /* write_state validates and changes nothing on failure */
    float before[64], after[64];
    assert_int_equal(clopt_optimizer_read_state(b.opt, 1, 0, before, 7), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_write_state(b.opt, 1, 0, zeros, 6), CLOPT_ERR_INVALID_SIZE);
    assert_int_equal(clopt_optimizer_write_state(b.opt, 1, 3, zeros, 7), CLOPT_ERR_INDEX);
    assert_int_equal(clopt_optimizer_write_state(b.opt, 6, 0, zeros, 7), CLOPT_ERR_INDEX);
    assert_int_equal(clopt_optimizer_write_state(b.opt, 1, 0, NULL, 7), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_write_state(NULL, 1, 0, zeros, 7), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_read_state(b.opt, 1, 0, after, 7), CLOPT_SUCCESS);
    assert_memory_equal(before, after, 7 * sizeof *before);
    snapshot_free(&sa), snapshot_free(&sb);
    for (size_t i = 0; i < count; i++)
        free(store[i].data);
    free(store), free(params), free(blob), free(all);
    net_free(&a), net_free(&b);
}

/* Lookahead's slow weights of a tensor that has not stepped yet are θ (read_state); written
   back they are its slow weights, and training goes on as if it had started with them. */
static void test_write_slow_weights_before_first_step(void **state)
{
    fixture *f = *state;
    net a, b;
    net_build(&a, f->ctx, CLOPT_ADAMW, 2, 1, 11);
    net_build(&b, f->ctx, CLOPT_ADAMW, 2, 1, 11); /* the same parameters */
    /* b: the slow weights of T0 and of the arena's T4 written from read_state before any step */
    const size_t which[2] = {0, 4};
    for (int w = 0; w < 2; w++) {
        size_t k = which[w], len;
        const char *name;
        assert_int_equal(clopt_optimizer_state_info(b.opt, k, 2, &name, &len), CLOPT_SUCCESS);
        assert_string_equal(name, "slow_params");
        float buf[64];
        assert_int_equal(clopt_optimizer_read_state(b.opt, k, 2, buf, len), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_write_state(b.opt, k, 2, buf, len), CLOPT_SUCCESS);
    }
    net_steps(&a, 0, 5);
    net_steps(&b, 0, 5);
    snapshot sa = net_snapshot(&a), sb = net_snapshot(&b);
    assert_same(&sa, &sb);
    snapshot_free(&sa), snapshot_free(&sb);
    net_free(&a), net_free(&b);
}

/* ---- (f) per-tensor step counts ----------------------------------------------------------- */

/* A tensor added after 3 steps counts from 0: its bias corrections (Adam) and its μ product
   (NAdam) start at step 1, as a reference optimizer started then; the counts survive a save. */
static void test_per_tensor_steps(void **state)
{
    fixture *f = *state;
    enum { N0 = 40, N1 = 25 };
    const clopt_rule rules[2] = {CLOPT_ADAM, CLOPT_NADAM};
    for (int r = 0; r < 2; r++) {
        clopt_rule rule = rules[r];
        clopt_hparams hp;
        ref_hparams_default(rule, &hp);
        hp.lr = 0.01;
        uint64_t seed = 500 + (uint64_t)r;
        float p0[N0], p1[N1], g0[N0], g1[N1];
        double d0[N0], d1[N1], gd0[N0], gd1[N1];
        double s0[2][N0] = {{0}}, s1[2][N1] = {{0}};
        double *st0[CLOPT_MAX_STATE] = {s0[0], s0[1]}, *st1[CLOPT_MAX_STATE] = {s1[0], s1[1]};
        double mu0 = 1.0, mu1 = 1.0;
        for (int i = 0; i < N0; i++)
            p0[i] = (float)ref_normal(&seed), d0[i] = p0[i];
        for (int i = 0; i < N1; i++)
            p1[i] = (float)ref_normal(&seed), d1[i] = p1[i];
        cl_mem pb0 = upload(f->ctx, p0, N0), gb0 = upload(f->ctx, NULL, N0);
        cl_mem pb1 = upload(f->ctx, p1, N1), gb1 = upload(f->ctx, NULL, N1);
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, rule, &hp, &opt), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb0, 0},
                                                   (clopt_tensor){gb0, 0}, N0, NULL, NULL),
                         CLOPT_SUCCESS);
        for (uint64_t t = 1; t <= 8; t++) {
            if (t == 4) {
                size_t idx;
                assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb1, 0},
                                                           (clopt_tensor){gb1, 0}, N1, NULL,
                                                           &idx),
                                 CLOPT_SUCCESS);
                assert_int_equal(idx, 1);
                uint64_t c;
                assert_int_equal(clopt_optimizer_param_step_count(opt, 1, &c), CLOPT_SUCCESS);
                assert_int_equal(c, 0);
                assert_int_equal(clopt_optimizer_param_step_count(opt, 0, &c), CLOPT_SUCCESS);
                assert_int_equal(c, 3);
            }
            for (int i = 0; i < N0; i++)
                g0[i] = (float)ref_normal(&seed), gd0[i] = g0[i];
            write_at(f->ctx, (clopt_tensor){gb0, 0}, g0, N0);
            ref_step(rule, &hp, t, N0, d0, gd0, st0, NULL, &mu0, 1.0);
            if (t >= 4) {
                for (int i = 0; i < N1; i++)
                    g1[i] = (float)ref_normal(&seed), gd1[i] = g1[i];
                write_at(f->ctx, (clopt_tensor){gb1, 0}, g1, N1);
                ref_step(rule, &hp, t - 3, N1, d1, gd1, st1, NULL, &mu1, 1.0);
            }
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
            if (t == 6) { /* save and load into a fresh optimizer, which takes over */
                size_t size, written;
                assert_int_equal(clopt_optimizer_state_size(opt, NULL, &size), CLOPT_SUCCESS);
                unsigned char *bytes = malloc(size);
                assert_int_equal(clopt_optimizer_save_to(opt, NULL, bytes, size, &written),
                                 CLOPT_SUCCESS);
                clopt_optimizer *fresh;
                clopt_hparams other = hp;
                other.lr = 0.5; /* the bytes bring the saved hyperparameters */
                assert_int_equal(clopt_optimizer_create(f->ctx, rule, &other, &fresh),
                                 CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_add_param(fresh, (clopt_tensor){pb0, 0},
                                                           (clopt_tensor){gb0, 0}, N0, NULL,
                                                           NULL),
                                 CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_add_param(fresh, (clopt_tensor){pb1, 0},
                                                           (clopt_tensor){gb1, 0}, N1, NULL,
                                                           NULL),
                                 CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_load_from(fresh, bytes, written),
                                 CLOPT_SUCCESS);
                uint64_t c0, c1;
                assert_int_equal(clopt_optimizer_param_step_count(fresh, 0, &c0), CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_param_step_count(fresh, 1, &c1), CLOPT_SUCCESS);
                assert_int_equal(c0, 6);
                assert_int_equal(c1, 3);
                assert_int_equal(clopt_optimizer_step_count(fresh), 6);
                clopt_optimizer_destroy(opt);
                opt = fresh;
                free(bytes);
            }
        }
        uint64_t c0, c1;
        assert_int_equal(clopt_optimizer_param_step_count(opt, 0, &c0), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_param_step_count(opt, 1, &c1), CLOPT_SUCCESS);
        assert_int_equal(c0, 8);
        assert_int_equal(c1, 5);
        read_at(f->ctx, (clopt_tensor){pb0, 0}, p0, N0);
        read_at(f->ctx, (clopt_tensor){pb1, 0}, p1, N1);
        assert_close(p0, d0, N0, 1e-5, 1e-6, "first tensor");
        assert_close(p1, d1, N1, 1e-5, 1e-6, "late tensor");
        float sv[N1];
        assert_int_equal(clopt_optimizer_read_state(opt, 1, 1, sv, N1), CLOPT_SUCCESS);
        /* 1e-4: beta2 = 0.999 reaches the device as a float (1 - β2 off by 1.3e-5) */
        assert_close(sv, s1[1], N1, 1e-4, 1e-12, "late tensor exp_avg_sq");
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(pb0), clReleaseMemObject(gb0);
        clReleaseMemObject(pb1), clReleaseMemObject(gb1);
    }
}

/* ---- (g) files of earlier versions --------------------------------------------------------- */

/* tests/data/checkpoint-v1-adam.bin was written by the version-1 code, checkpoint-v2-adam.bin
   by the version-2 code (commit abf4df1): Adam, group 0 (lr 0.01) with a 2x3 tensor, group 1
   (lr 0.005, beta1 0.8) with a 4-vector, 3 steps of constant gradients
   g0[i] = 0.1(i+1) - 0.3 and g1 = (0.5, -0.25, 1, 2) from p0[i] = 0.1 i, p1 = (1, -1, 2, -2). */
static void check_old_file(void **state, const char *name, uint32_t version)
{
    fixture *f = *state;
    float p0[6], g0[6], p1[4] = {1, -1, 2, -2}, g1[4] = {0.5f, -0.25f, 1.0f, 2.0f};
    for (int i = 0; i < 6; i++)
        p0[i] = 0.1f * (float)i, g0[i] = 0.1f * (float)(i + 1) - 0.3f;
    clopt_hparams hp, h1;
    ref_hparams_default(CLOPT_ADAM, &hp);
    hp.lr = 0.01;
    h1 = hp;
    h1.lr = 0.005;
    h1.beta1 = 0.8;
    /* the reference: three steps, then one more */
    double d0[6], d1[4], gd0[6], gd1[4], s0[2][6] = {{0}}, s1[2][4] = {{0}};
    double *st0[CLOPT_MAX_STATE] = {s0[0], s0[1]}, *st1[CLOPT_MAX_STATE] = {s1[0], s1[1]};
    for (int i = 0; i < 6; i++)
        d0[i] = p0[i], gd0[i] = g0[i];
    for (int i = 0; i < 4; i++)
        d1[i] = p1[i], gd1[i] = g1[i];
    for (uint64_t t = 1; t <= 3; t++) {
        ref_step(CLOPT_ADAM, &hp, t, 6, d0, gd0, st0, NULL, NULL, 1.0);
        ref_step(CLOPT_ADAM, &h1, t, 4, d1, gd1, st1, NULL, NULL, 1.0);
    }
    /* closed form with a constant gradient: m = (1-β1³) g, v = (1-β2³) g² */
    for (int i = 0; i < 6; i++) {
        assert_true(fabs(s0[0][i] - (1 - 0.9 * 0.9 * 0.9) * gd0[i]) < 1e-12);
        assert_true(fabs(s0[1][i] - (1 - 0.999 * 0.999 * 0.999) * gd0[i] * gd0[i]) < 1e-12);
    }
    for (int i = 0; i < 4; i++)
        assert_true(fabs(s1[0][i] - (1 - 0.8 * 0.8 * 0.8) * gd1[i]) < 1e-12);
    /* an optimizer built the same way, with other hyperparameters: the file brings its own */
    clopt_hparams def;
    clopt_hparams_default(CLOPT_ADAM, &def);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &def, &opt), CLOPT_SUCCESS);
    size_t g;
    assert_int_equal(clopt_optimizer_add_group(opt, &def, &g), CLOPT_SUCCESS);
    cl_mem pb0 = upload(f->ctx, p0, 6), gb0 = upload(f->ctx, g0, 6);
    cl_mem pb1 = upload(f->ctx, p1, 4), gb1 = upload(f->ctx, g1, 4);
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.param = (clopt_tensor){pb0, 0}, d.grad = (clopt_tensor){gb0, 0};
    d.ndim = 2, d.shape[0] = 2, d.shape[1] = 3;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    memset(&d, 0, sizeof d);
    d.param = (clopt_tensor){pb1, 0}, d.grad = (clopt_tensor){gb1, 0};
    d.ndim = 1, d.shape[0] = 4;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, g, &d, NULL), CLOPT_SUCCESS);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", CLOPT_TEST_DATA_DIR, name);
    size_t len;
    unsigned char *file = slurp(path, &len);
    assert_int_equal(get_u32(file + 8), version);
    assert_int_equal(clopt_optimizer_load(opt, path), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(opt), 3);
    for (size_t k = 0; k < 2; k++) {
        uint64_t c;
        assert_int_equal(clopt_optimizer_param_step_count(opt, k, &c), CLOPT_SUCCESS);
        assert_int_equal(c, 3);
    }
    clopt_hparams got;
    assert_int_equal(clopt_optimizer_get_group_hparams(opt, 0, &got), CLOPT_SUCCESS);
    assert_true(got.lr == 0.01 && got.beta1 == 0.9);
    assert_int_equal(clopt_optimizer_get_group_hparams(opt, 1, &got), CLOPT_SUCCESS);
    assert_true(got.lr == 0.005 && got.beta1 == 0.8 && got.beta2 == 0.999);
    float s[6];
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 0, s, 6), CLOPT_SUCCESS);
    assert_close(s, s0[0], 6, 1e-6, 1e-9, "v1 exp_avg 0");
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 1, s, 6), CLOPT_SUCCESS);
    assert_close(s, s0[1], 6, 1e-4, 1e-12, "v1 exp_avg_sq 0"); /* 1 - float(β2) is off by 1.3e-5 */
    assert_int_equal(clopt_optimizer_read_state(opt, 1, 0, s, 4), CLOPT_SUCCESS);
    assert_close(s, s1[0], 4, 1e-6, 1e-9, "v1 exp_avg 1");
    assert_int_equal(clopt_optimizer_read_state(opt, 1, 1, s, 4), CLOPT_SUCCESS);
    assert_close(s, s1[1], 4, 1e-4, 1e-12, "v1 exp_avg_sq 1");
    /* the same bytes through load_from; then step 4 from the reference's parameters */
    assert_int_equal(clopt_optimizer_load_from(opt, file, len), CLOPT_SUCCESS);
    float q0[6], q1[4];
    for (int i = 0; i < 6; i++)
        q0[i] = (float)d0[i];
    for (int i = 0; i < 4; i++)
        q1[i] = (float)d1[i];
    write_at(f->ctx, (clopt_tensor){pb0, 0}, q0, 6);
    write_at(f->ctx, (clopt_tensor){pb1, 0}, q1, 4);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    ref_step(CLOPT_ADAM, &hp, 4, 6, d0, gd0, st0, NULL, NULL, 1.0);
    ref_step(CLOPT_ADAM, &h1, 4, 4, d1, gd1, st1, NULL, NULL, 1.0);
    read_at(f->ctx, (clopt_tensor){pb0, 0}, q0, 6);
    read_at(f->ctx, (clopt_tensor){pb1, 0}, q1, 4);
    assert_close(q0, d0, 6, 1e-5, 1e-6, "v1 then step 4, tensor 0");
    assert_close(q1, d1, 4, 1e-5, 1e-6, "v1 then step 4, tensor 1");
    /* saved again, it is version 4 */
    size_t size, written;
    assert_int_equal(clopt_optimizer_state_size(opt, NULL, &size), CLOPT_SUCCESS);
    unsigned char *v2 = malloc(size);
    assert_int_equal(clopt_optimizer_save_to(opt, NULL, v2, size, &written), CLOPT_SUCCESS);
    assert_int_equal(get_u32(v2 + 8), 4);
    /* a corrupted version-1 file is refused like any other */
    file[len / 2] ^= 0x40;
    assert_int_equal(clopt_optimizer_load_from(opt, file, len), CLOPT_ERR_FORMAT);
    assert_int_equal(clopt_optimizer_step_count(opt), 4);
    free(v2), free(file);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb0), clReleaseMemObject(gb0);
    clReleaseMemObject(pb1), clReleaseMemObject(gb1);
}

static void test_version1_file(void **state) { check_old_file(state, "checkpoint-v1-adam.bin", 1); }
static void test_version2_file(void **state) { check_old_file(state, "checkpoint-v2-adam.bin", 2); }

/* ---- (h) the enumeration ----------------------------------------------------------------------- */

static void expect_entry(clopt_optimizer *opt, size_t i, size_t param, size_t index,
                         const char *key, size_t ndim, size_t s0, size_t s1, size_t length)
{
    clopt_state_entry e;
    assert_int_equal(clopt_optimizer_state_entry(opt, i, &e), CLOPT_SUCCESS);
    assert_int_equal(e.param, param);
    assert_int_equal(e.index, index);
    assert_string_equal(e.key, key);
    assert_string_equal(e.name, strrchr(key, '.') + 1);
    assert_int_equal(e.dtype, CLOPT_DTYPE_F32);
    assert_int_equal(e.ndim, ndim);
    assert_int_equal(e.shape[0], s0);
    if (ndim > 1)
        assert_int_equal(e.shape[1], s1);
    assert_int_equal(e.length, length);
    clopt_tensor t;
    assert_int_equal(clopt_optimizer_state(opt, param, index, &t), CLOPT_SUCCESS);
    assert_ptr_equal(e.tensor.buffer, t.buffer);
    assert_int_equal(e.tensor.offset, t.offset);
}

static void test_entries(void **state)
{
    fixture *f = *state;
    /* Adam: two states per tensor, full-size, the tensor's shape */
    net m;
    net_build(&m, f->ctx, CLOPT_ADAM, 0, 1, 12);
    assert_int_equal(clopt_optimizer_state_entry_count(m.opt), 2 * 6);
    expect_entry(m.opt, 0, 0, 0, "state.0.exp_avg", 2, 6, 5, 30);
    expect_entry(m.opt, 1, 0, 1, "state.0.exp_avg_sq", 2, 6, 5, 30);
    expect_entry(m.opt, 2, 1, 0, "state.1.exp_avg", 1, 7, 0, 7);
    expect_entry(m.opt, 5, 2, 1, "state.2.exp_avg_sq", 1, 9, 0, 9);
    expect_entry(m.opt, 9, 4, 1, "state.4.exp_avg_sq", 2, 3, 4, 12);
    expect_entry(m.opt, 11, 5, 1, "state.5.exp_avg_sq", 1, 11, 0, 11);
    clopt_state_entry e;
    assert_int_equal(clopt_optimizer_state_entry(m.opt, 5, &e), CLOPT_SUCCESS);
    assert_int_equal(e.group, 1);
    assert_int_equal(clopt_optimizer_state_entry(m.opt, 9, &e), CLOPT_SUCCESS);
    assert_int_equal(e.group, 2);
    assert_int_equal(clopt_optimizer_state_entry(m.opt, 12, &e), CLOPT_ERR_INDEX);
    assert_int_equal(clopt_optimizer_state_entry(m.opt, 0, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_state_entry(NULL, 0, &e), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_state_entry_count(NULL), 0);
    net_free(&m);
    /* Adafactor with a first moment: factored row/column statistics of the matrices (rows:
       leading dims × rows, columns: leading dims × columns), a full one for the vector */
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAFACTOR, &hp);
    hp.use_beta1 = 1;
    hp.beta1 = 0.9;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAFACTOR, &hp, &opt), CLOPT_SUCCESS);
    const size_t shapes[3][3] = {{4, 6, 0}, {3, 4, 5}, {10, 0, 0}};
    const size_t ndims[3] = {2, 3, 1}, ns[3] = {24, 60, 10};
    cl_mem bufs[6];
    for (int k = 0; k < 3; k++) {
        clopt_param_desc d;
        memset(&d, 0, sizeof d);
        bufs[2 * k] = upload(f->ctx, NULL, ns[k]);
        bufs[2 * k + 1] = upload(f->ctx, NULL, ns[k]);
        d.param = (clopt_tensor){bufs[2 * k], 0};
        d.grad = (clopt_tensor){bufs[2 * k + 1], 0};
        d.ndim = ndims[k];
        memcpy(d.shape, shapes[k], sizeof shapes[k]);
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    }
    assert_int_equal(clopt_optimizer_state_entry_count(opt), 3 + 3 + 2);
    expect_entry(opt, 0, 0, 0, "state.0.exp_avg_sq_row", 1, 4, 0, 4);
    expect_entry(opt, 1, 0, 1, "state.0.exp_avg_sq_col", 1, 6, 0, 6);
    expect_entry(opt, 2, 0, 2, "state.0.exp_avg", 2, 4, 6, 24);
    expect_entry(opt, 3, 1, 0, "state.1.exp_avg_sq_row", 1, 12, 0, 12);
    expect_entry(opt, 4, 1, 1, "state.1.exp_avg_sq_col", 1, 15, 0, 15);
    assert_int_equal(clopt_optimizer_state_entry(opt, 5, &e), CLOPT_SUCCESS);
    assert_string_equal(e.key, "state.1.exp_avg");
    assert_int_equal(e.ndim, 3);
    assert_int_equal(e.shape[0], 3);
    assert_int_equal(e.shape[1], 4);
    assert_int_equal(e.shape[2], 5);
    assert_int_equal(e.length, 60);
    expect_entry(opt, 6, 2, 0, "state.2.exp_avg_sq", 1, 10, 0, 10);
    expect_entry(opt, 7, 2, 1, "state.2.exp_avg", 1, 10, 0, 10);
    assert_int_equal(clopt_optimizer_state_entry(opt, 8, &e), CLOPT_ERR_INDEX);
    clopt_optimizer_destroy(opt);
    for (int k = 0; k < 6; k++)
        clReleaseMemObject(bufs[k]);
}

/* ---- (k) hostile input: impossible values, sizes, file types, symlinks ------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Values a well-formed, correctly sealed checkpoint cannot hold: refused, nothing changed;
   the largest step count accepted, and the optimizer steps on from it. */
static void test_impossible_values(void **state)
{
    fixture *f = *state;
    net src, dst;
    net_build(&src, f->ctx, CLOPT_NADAM, 0, 1, 11);
    net_steps(&src, 0, 3);
    size_t len;
    unsigned char *good = save_bytes(&src, NULL, &len);
    net_build(&dst, f->ctx, CLOPT_NADAM, 0, 1, 12);
    net_steps(&dst, 0, 1);
    snapshot before = net_snapshot(&dst);
    size_t starts[16];
    assert_int_equal(sections(good, len, starts, 16), 1 + 3 + 6);
    const size_t optm = starts[0] + 16, t0 = tens_flags(good, starts[4]);
    assert_int_equal(get_u64(good + optm + 16), 3);          /* the optimizer's step count */
    assert_int_equal(get_u64(good + t0 + 12), 3);              /* tensor 0's step count */
    const double max_step = 9007199254740992.0 - 64;          /* 2^53 - 64 */
    struct {
        size_t at;
        int kind; /* 0 u32, 1 u64, 2 f64 */
        double value;
        uint64_t raw; /* kind 1: used when value < 0 */
        const char *what;
    } bad[] = {
        {optm + 16, 1, -1, UINT64_MAX, "optimizer step 2^64 - 1"},
        {optm + 16, 1, max_step + 1, 0, "optimizer step 2^53 - 63"},
        {optm + 16, 1, -1, UINT64_C(1) << 60, "optimizer step 2^60"},
        {optm + 24, 2, 1e-320, 0, "subnormal max_grad_norm"},
        {optm + 24, 2, 1e-39, 0, "max_grad_norm whose reciprocal overflows float32"},
        {optm + 24, 2, 1e-38, 0, "max_grad_norm subnormal in float32"},
        {optm + 40, 2, 3e-39, 0, "loss scale subnormal in float32"},
        {optm + 24, 2, 1e39, 0, "max_grad_norm past float32"},
        {optm + 24, 2, NAN, 0, "NaN max_grad_norm"},
        {optm + 24, 2, -1e-3, 0, "negative max_grad_norm"},
        {optm + 40, 2, 1e-320, 0, "subnormal loss scale"},
        {optm + 40, 2, 1e-40, 0, "loss scale whose reciprocal overflows float32"},
        {optm + 40, 2, INFINITY, 0, "infinite loss scale"},
        {optm + 40, 2, 1e300, 0, "loss scale past float32"},
        {optm + 40, 2, 1e38, 0, "loss scale whose reciprocal is subnormal in float32"},
        {optm + 48, 0, -1, 0, "found_inf 2^32 - 1"},
        {optm + 32, 2, -1.0, 0, "negative last norm"},
        {t0 + 20, 2, -0.25, 0, "negative NAdam product"},
        {t0 + 20, 2, INFINITY, 0, "infinite NAdam product"},
        {t0 + 20, 2, 1.0000000000000002, 0, "NAdam product just above 1"},
    };
    unsigned char *copy = malloc(len);
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        memcpy(copy, good, len);
        if (bad[c].kind == 0)
            put_u32(copy + bad[c].at, bad[c].value < 0 ? UINT32_MAX : (uint32_t)bad[c].value);
        else if (bad[c].kind == 1)
            put_u64(copy + bad[c].at, bad[c].value < 0 ? bad[c].raw : (uint64_t)bad[c].value);
        else
            put_f64(copy + bad[c].at, bad[c].value);
        reseal(copy, len);
        expect_rejected(&dst, copy, len, CLOPT_ERR_FORMAT, &before, bad[c].what);
    }
    /* the possible extremes load: the smallest and largest normal float32, -0 as "off", a
       subnormal NAdam product and one that underflowed to 0 (as torch's, β1 = 0.5 after
       step 556) */
    struct {
        size_t at;
        double value;
    } fine[] = {{optm + 24, 1.1754944e-38},
                {optm + 40, 8.5e37},
                {optm + 40, -0.0},
                {t0 + 20, 5e-324}, {t0 + 20, 0.0}};
    for (size_t c = 0; c < sizeof fine / sizeof fine[0]; c++) {
        memcpy(copy, good, len);
        put_f64(copy + fine[c].at, fine[c].value);
        reseal(copy, len);
        clopt_status s = clopt_optimizer_load_from(dst.opt, copy, len);
        if (s != CLOPT_SUCCESS)
            fprintf(stderr, "extreme %zu: %s\n", c, clopt_ctx_last_error(dst.ctx));
        assert_int_equal(s, CLOPT_SUCCESS);
    }
    snapshot_free(&before);
    free(good), free(copy);
    net_free(&src), net_free(&dst);

    /* a rule other than NAdam keeps the product 1 */
    net a, b;
    net_build(&a, f->ctx, CLOPT_ADAM, 0, 1, 13);
    net_steps(&a, 0, 2);
    good = save_bytes(&a, NULL, &len);
    copy = malloc(len);
    net_build(&b, f->ctx, CLOPT_ADAM, 0, 1, 14);
    before = net_snapshot(&b);
    assert_int_equal(sections(good, len, starts, 16), 1 + 3 + 6);
    memcpy(copy, good, len);
    put_f64(copy + tens_flags(good, starts[4]) + 20, 0.5);
    reseal(copy, len);
    expect_rejected(&b, copy, len, CLOPT_ERR_FORMAT, &before, "Adam with a product 0.5");
    /* the largest step count: every tensor at 2^53 - 64, and a step from there works */
    memcpy(copy, good, len);
    put_u64(copy + starts[0] + 16 + 16, (uint64_t)max_step);
    for (size_t k = 0; k < 6; k++)
        put_u64(copy + tens_flags(good, starts[4 + k]) + 12, (uint64_t)max_step);
    reseal(copy, len);
    assert_int_equal(clopt_optimizer_load_from(b.opt, copy, len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(b.opt), (uint64_t)max_step);
    net_steps(&b, (uint64_t)max_step, (uint64_t)max_step + 2);
    assert_int_equal(clopt_optimizer_step_count(b.opt), (uint64_t)max_step + 2);
    float p[64 * MAXT];
    net_get_params(&b, 0, b.nt, p);
    for (size_t i = 0; i < net_param_floats(&b); i++)
        assert_true(isfinite(p[i]));
    snapshot_free(&before);
    free(good), free(copy);
    net_free(&a), net_free(&b);
}

/* Sizes and file types: bytes or a file longer than any checkpoint of the optimizer are
   refused without being read (a 2 GiB sparse file, at once); a FIFO, /dev/zero and a folder
   fail at once with CLOPT_ERR_IO instead of hanging or reading forever. */
static void test_hostile_files(void **state)
{
    fixture *f = *state;
    net m;
    net_build(&m, f->ctx, CLOPT_ADAM, 2, 1, 21);
    net_steps(&m, 0, 2);
    size_t len;
    unsigned char *good = save_bytes(&m, NULL, &len);
    snapshot before = net_snapshot(&m);
    char dir[] = "/tmp/clopt-h5ckp-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[160], big[160], fifo[160];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    snprintf(big, sizeof big, "%s/big.ckpt", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo.ckpt", dir);
    /* bytes: the checkpoint with 1 MiB appended is too large (not a checksum mismatch) */
    unsigned char *longer = calloc(len + (1u << 20), 1);
    memcpy(longer, good, len);
    assert_int_equal(clopt_optimizer_load_from(m.opt, longer, len + (1u << 20)),
                     CLOPT_ERR_FORMAT);
    assert_non_null(strstr(clopt_ctx_last_error(m.ctx), "at most"));
    expect_rejected(&m, longer, len + (1u << 20), CLOPT_ERR_FORMAT, &before, "1 MiB appended");
    free(longer);
    /* a 2 GiB sparse file: refused by its size, in far less time than reading it takes */
    FILE *fp = fopen(big, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(good, 1, len, fp), len);
    fclose(fp);
    assert_int_equal(truncate(big, (off_t)1 << 31), 0);
    double t = now_s();
    assert_int_equal(clopt_optimizer_load(m.opt, big), CLOPT_ERR_FORMAT);
    assert_true(now_s() - t < 0.5);
    assert_non_null(strstr(clopt_ctx_last_error(m.ctx), "at most"));
    /* a FIFO nobody writes to: refused at once (alarm: a hang kills the test) */
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);
    assert_int_equal(clopt_optimizer_load(m.opt, fifo), CLOPT_ERR_IO);
    assert_non_null(strstr(clopt_ctx_last_error(m.ctx), "not a regular file"));
    t = now_s();
    assert_int_equal(clopt_optimizer_load(m.opt, "/dev/zero"), CLOPT_ERR_IO);
    assert_true(now_s() - t < 0.5);
    assert_int_equal(clopt_optimizer_load(m.opt, dir), CLOPT_ERR_IO);
    alarm(0);
    snapshot after = net_snapshot(&m);
    assert_same(&before, &after);
    snapshot_free(&after);
    /* the file itself still loads */
    assert_int_equal(clopt_optimizer_save(m.opt, path), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_load(m.opt, path), CLOPT_SUCCESS);
    remove(path), remove(big), remove(fifo);
    assert_int_equal(rmdir(dir), 0);
    snapshot_free(&before);
    free(good);
    net_free(&m);
}

/* Symlinks planted at every name an attacker could predict (the old "<path>.<pid>.tmp" among
   them) pointing at a victim file: saving writes neither the victim nor through any link,
   the checkpoint is a regular file of mode 0600, and no temporary file is left. A save that
   cannot rename leaves nothing behind either. */
static void test_save_symlinks(void **state)
{
    fixture *f = *state;
    net m;
    net_build(&m, f->ctx, CLOPT_ADAMW, 0, 1, 31);
    net_steps(&m, 0, 2);
    char dir[] = "/tmp/clopt-h5sym-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[160], victim[160], link[8][200];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    const char victim_text[] = "precious data\n";
    FILE *fp = fopen(victim, "wb");
    assert_non_null(fp);
    fputs(victim_text, fp);
    fclose(fp);
    const long pid = (long)getpid();
    snprintf(link[0], sizeof link[0], "%s.%ld.tmp", path, pid);
    snprintf(link[1], sizeof link[1], "%s.tmp", path);
    snprintf(link[2], sizeof link[2], "%s.%ld", path, pid);
    snprintf(link[3], sizeof link[3], "%s~", path);
    snprintf(link[4], sizeof link[4], "%s.%ld.tmp", path, pid + 1);
    snprintf(link[5], sizeof link[5], "%s/.opt.ckpt.tmp", dir);
    snprintf(link[6], sizeof link[6], "%s.new", path);
    snprintf(link[7], sizeof link[7], "%s.%ld.0.tmp", path, pid);
    for (int k = 0; k < 8; k++)
        assert_int_equal(symlink(victim, link[k]), 0);
    for (int rep = 0; rep < 3; rep++)
        assert_int_equal(clopt_optimizer_save(m.opt, path), CLOPT_SUCCESS);
    size_t vlen, flen, blen;
    unsigned char *v = slurp(victim, &vlen);
    assert_int_equal(vlen, strlen(victim_text));
    assert_memory_equal(v, victim_text, vlen);
    free(v);
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(lstat(link[k], &sb), 0);
        assert_true(S_ISLNK(sb.st_mode));
    }
    unsigned char *file = slurp(path, &flen), *bytes = save_bytes(&m, NULL, &blen);
    assert_int_equal(flen, blen);
    assert_memory_equal(file, bytes, flen);
    free(file), free(bytes);
    /* a folder stands at the path: the rename fails, the temporary file is removed */
    char sub[200];
    snprintf(sub, sizeof sub, "%s/adir", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    char inner[240];
    snprintf(inner, sizeof inner, "%s/x", sub);
    fp = fopen(inner, "wb");
    fclose(fp);
    assert_int_equal(clopt_optimizer_save(m.opt, sub), CLOPT_ERR_IO);
    /* the folder holds exactly what was put there: 8 links, victim, opt.ckpt, adir */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 11", dir);
    assert_int_equal(system(cmd), 0);
    remove(inner), rmdir(sub);
    for (int k = 0; k < 8; k++)
        remove(link[k]);
    remove(victim), remove(path);
    assert_int_equal(rmdir(dir), 0);
    net_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_from_bytes),
        cmocka_unit_test(test_late_tensor_lookahead),
        cmocka_unit_test(test_file_and_bytes),
        cmocka_unit_test(test_corrupted_bytes),
        cmocka_unit_test(test_arena_params),
        cmocka_unit_test(test_engine_state_tensors),
        cmocka_unit_test(test_write_slow_weights_before_first_step),
        cmocka_unit_test(test_per_tensor_steps),
        cmocka_unit_test(test_version1_file),
        cmocka_unit_test(test_version2_file),
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_impossible_values),
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_save_symlinks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
