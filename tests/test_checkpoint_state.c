/* SPDX-License-Identifier: MIT */
/* Checkpoints, continued (one executable with test_checkpoint.c, which has the model and the
 * format helpers of test_checkpoint.h): state tensors saved by the engine through the
 * enumeration and written back, per-tensor step counts, files of earlier versions (1 and 2),
 * and the enumeration itself. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clopt.h"
#include "fixture.h"
#include "ref.h"
#include "test_checkpoint.h"

static void assert_close(const float *x, const double *ref, size_t n, double rtol, double atol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i] - ref[i]) <= atol + rtol * fabs(ref[i]))) {
            fprintf(stderr, "%s: [%zu] got %.9g want %.9g\n", what, i, (double)x[i], ref[i]);
            fail();
        }
}

/* ---- (e) state tensors saved by the engine ------------------------------------------------ */

typedef struct engine_tensor {
    char key[64];
    size_t length;
    float *data;
} engine_tensor;

void test_engine_state_tensors(void **state)
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
void test_write_slow_weights_before_first_step(void **state)
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

/* n bf16 parameters of +-[1, 2) and small bf16 gradients from a seed (an LCG). */
static void bf16_data(uint16_t *th, uint16_t *gr, size_t n, uint32_t x)
{
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        th[i] = (uint16_t)((0x3F80u + ((x >> 9) & 0x7Fu)) | ((i & 1u) << 15));
        gr[i] = (uint16_t)(0x3C00u + ((x >> 20) & 0xFFu) - 0x80u * (i % 3 == 0));
    }
}

/* The same with a bf16 θ (its own buffer, exactly its size): the slow weights before the
   first step read as θ widened (bf16 bits << 16), a checkpoint saved then and loaded into a
   fresh optimizer resumes as the run that never saved (they read θ itself as floats before:
   past the end of the 16-bit buffer). */
void test_slow_weights_bf16_before_first_step(void **state)
{
    fixture *f = *state;
    enum { N = 300, STEPS = 5 };
    uint16_t th[N], gr[N];
    bf16_data(th, gr, N, 3);
    uint16_t out[2][N];
    for (int run = 0; run < 2; run++) { /* 0: no checkpoint; 1: saved and loaded at step 0 */
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAMW, &hp);
        hp.lr = 0.01;
        hp.lookahead_k = 2;
        hp.lookahead_alpha = 0.5;
        cl_mem P = buf_new(f->ctx, sizeof th, th), G = buf_new(f->ctx, sizeof gr, gr);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){P, 0};
        d.grad = (clopt_tensor){G, 0};
        d.shape[0] = N;
        d.param_dtype = d.grad_dtype = CLOPT_DTYPE_BF16;
        clopt_optimizer *o;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &o), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_add_param_desc(o, 0, &d, NULL), CLOPT_SUCCESS);
        const size_t slow = clopt_optimizer_state_count(o, 0) - 1;
        float sw[N];
        assert_int_equal(clopt_optimizer_read_state(o, 0, slow, sw, N), CLOPT_SUCCESS);
        for (size_t i = 0; i < N; i++) {
            uint32_t u;
            memcpy(&u, &sw[i], sizeof u);
            assert_int_equal(u, (uint32_t)th[i] << 16);
        }
        if (run == 1) {
            size_t len = 0;
            assert_int_equal(clopt_optimizer_state_size(o, NULL, &len), CLOPT_SUCCESS);
            unsigned char *blob = malloc(len);
            assert_non_null(blob);
            assert_int_equal(clopt_optimizer_save_to(o, NULL, blob, len, &len), CLOPT_SUCCESS);
            clopt_optimizer *fresh;
            assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &fresh),
                             CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_add_param_desc(fresh, 0, &d, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_load_from(fresh, blob, len), CLOPT_SUCCESS);
            free(blob);
            clopt_optimizer_destroy(o);
            o = fresh;
        }
        for (int t = 0; t < STEPS; t++)
            assert_int_equal(clopt_optimizer_step(o, NULL), CLOPT_SUCCESS);
        buf_read(f->ctx, P, 0, sizeof out[run], out[run]);
        clopt_optimizer_destroy(o);
        clReleaseMemObject(P), clReleaseMemObject(G);
    }
    assert_memory_equal(out[1], out[0], sizeof out[0]);
    assert_true(memcmp(out[0], th, sizeof th) != 0);
}

/* An optimizer of rule under hp with one arena group of T bf16 tensors (len[t] elements), θ and
   g from th and gr (all tensors one after the other); its first tensor's index to *first. */
static clopt_optimizer *arena16_make(fixture *f, clopt_rule rule, const clopt_hparams *hp,
                                     size_t T, const size_t *len, const uint16_t *th,
                                     const uint16_t *gr, size_t *first)
{
    clopt_param_desc d[4];
    assert_true(T <= 4);
    for (size_t t = 0; t < T; t++) {
        clopt_param_desc_init(&d[t]);
        d[t].shape[0] = len[t];
        d[t].param_dtype = d[t].grad_dtype = CLOPT_DTYPE_BF16;
    }
    clopt_optimizer *o;
    assert_int_equal(clopt_optimizer_create(f->ctx, rule, hp, &o), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_arena_group(o, hp, T, d, NULL, first), CLOPT_SUCCESS);
    size_t at = 0;
    for (size_t t = 0; t < T; t++) {
        clopt_tensor pv, gv;
        assert_int_equal(clopt_optimizer_param_view(o, *first + t, &pv, &gv, NULL, NULL),
                         CLOPT_SUCCESS);
        buf_write(f->ctx, pv.buffer, pv.offset * 2, len[t] * 2, th + at);
        buf_write(f->ctx, gv.buffer, gv.offset * 2, len[t] * 2, gr + at);
        at += len[t];
    }
    return o;
}

/* State `state` of tensors first + which[0 .. count) (of len[] elements, θ from th, the
   group's tensors one after the other) reads as θ widened (bf16 bits << 16): the slow
   weights or the F32 master of a tensor that has not stepped yet. */
static void expect_reads_theta(clopt_optimizer *o, size_t first, size_t state,
                               const size_t *which, size_t count, const size_t *len,
                               const uint16_t *th)
{
    float v[1024];
    for (size_t k = 0; k < count; k++) {
        const size_t t = which[k];
        size_t at = 0;
        for (size_t j = 0; j < t; j++)
            at += len[j];
        assert_true(len[t] <= 1024);
        assert_int_equal(clopt_optimizer_read_state(o, first + t, state, v, len[t]),
                         CLOPT_SUCCESS);
        for (size_t i = 0; i < len[t]; i++)
            assert_int_equal(f2u(v[i]), (uint32_t)th[at + i] << 16);
    }
}

/* The bf16 θ of that group's T tensors into out, one after the other. */
static void arena16_theta(fixture *f, clopt_optimizer *o, size_t first, size_t T,
                          const size_t *len, uint16_t *out)
{
    size_t at = 0;
    for (size_t t = 0; t < T; t++) {
        clopt_tensor pv;
        assert_int_equal(clopt_optimizer_param_view(o, first + t, &pv, NULL, NULL, NULL),
                         CLOPT_SUCCESS);
        buf_read(f->ctx, pv.buffer, pv.offset * 2, len[t] * 2, out + at);
        at += len[t];
    }
}

/* A bf16 arena group with Lookahead (tensors of 64, 64 and 1024), for every master mode:
   writing tensor 2's slow weights before the first step starts the other tensors' from θ as
   the step would, θ widened (bf16 bits << 16; they were copied as floats, two bf16 words read
   as one, past their own tensor: wrong values, kept as ready), and training then goes on bit
   for bit as an optimizer where nothing was written. */
void test_slow_weights_bf16_arena_write(void **state)
{
    fixture *f = *state;
    enum { T = 3, N = 64 + 64 + 1024, STEPS = 4 };
    const size_t len[T] = {64, 64, 1024};
    uint16_t th[N], gr[N];
    bf16_data(th, gr, N, 7);
    const clopt_master modes[3] = {CLOPT_MASTER_NONE, CLOPT_MASTER_F32, CLOPT_MASTER_REMAINDER};
    for (int mi = 0; mi < 3; mi++) {
        uint16_t out[2][N];
        for (int run = 0; run < 2; run++) { /* 0: nothing written; 1: tensor 2's slow weights */
            clopt_hparams hp;
            clopt_hparams_default(CLOPT_ADAMW, &hp);
            hp.lr = 0.01;
            hp.lookahead_k = 2;
            hp.lookahead_alpha = 0.5;
            hp.master = modes[mi];
            size_t first;
            clopt_optimizer *o = arena16_make(f, CLOPT_ADAMW, &hp, T, len, th, gr, &first);
            const size_t slow = clopt_optimizer_state_count(o, first) - 1;
            if (run == 1) {
                float sw[1024];
                assert_int_equal(clopt_optimizer_read_state(o, first + 2, slow, sw, 1024),
                                 CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_write_state(o, first + 2, slow, sw, 1024),
                                 CLOPT_SUCCESS);
                /* the others started from θ, widened */
                expect_reads_theta(o, first, slow, (const size_t[]){0, 1}, 2, len, th);
            }
            for (int s = 0; s < STEPS; s++)
                assert_int_equal(clopt_optimizer_step(o, NULL), CLOPT_SUCCESS);
            arena16_theta(f, o, first, T, len, out[run]);
            clopt_optimizer_destroy(o);
        }
        assert_memory_equal(out[1], out[0], sizeof out[0]);
        assert_true(memcmp(out[0], th, sizeof th) != 0);
    }
}

/* A bf16 arena group with F32 masters (tensors of 64, 64 and 1024, AdamW): before the first
   step every master reads as θ widened (it read as zeros, and an engine writing that back
   trained from 0); writing one tensor's master (the first, or another) starts the others' from
   θ as the step would (their masters stayed zero, or the written one was overwritten by θ, as
   the step decides for the whole group from its first tensor), and training then goes on bit
   for bit as an optimizer where nothing was written. Last, a written master is the one the
   step uses: SGD (lr 0.5, g 1) from a master of θ + 1 moves θ to θ + 0.5 in that tensor only. */
void test_master_bf16_arena_write(void **state)
{
    fixture *f = *state;
    enum { T = 3, N = 64 + 64 + 1024, STEPS = 3 };
    const size_t len[T] = {64, 64, 1024};
    uint16_t th[N], gr[N], out[3][N];
    bf16_data(th, gr, N, 11);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    hp.lr = 0.01;
    hp.master = CLOPT_MASTER_F32;
    float m[1024];
    for (int run = 0; run < 3; run++) { /* 0: nothing written; 1, 2: tensor 0's, tensor 2's */
        size_t first;
        clopt_optimizer *o = arena16_make(f, CLOPT_ADAMW, &hp, T, len, th, gr, &first);
        const size_t ms = clopt_optimizer_state_count(o, first) - 1; /* "master", last */
        const char *name;
        assert_int_equal(clopt_optimizer_state_info(o, first, ms, &name, NULL), CLOPT_SUCCESS);
        assert_string_equal(name, "master");
        if (run > 0) {
            const size_t w = run == 1 ? 0 : 2;
            assert_int_equal(clopt_optimizer_read_state(o, first + w, ms, m, len[w]),
                             CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_write_state(o, first + w, ms, m, len[w]),
                             CLOPT_SUCCESS);
        }
        /* θ widened, before the first step */
        expect_reads_theta(o, first, ms, (const size_t[]){0, 1, 2}, T, len, th);
        for (int s = 0; s < STEPS; s++)
            assert_int_equal(clopt_optimizer_step(o, NULL), CLOPT_SUCCESS);
        arena16_theta(f, o, first, T, len, out[run]);
        clopt_optimizer_destroy(o);
    }
    assert_memory_equal(out[1], out[0], sizeof out[0]);
    assert_memory_equal(out[2], out[0], sizeof out[0]);
    assert_true(memcmp(out[0], th, sizeof th) != 0);

    clopt_hparams sg;
    clopt_hparams_default(CLOPT_SGD, &sg);
    sg.lr = 0.5;
    sg.master = CLOPT_MASTER_F32;
    for (size_t i = 0; i < N; i++)
        th[i] = 0x4000u, gr[i] = 0x3F80u; /* θ 2, g 1 */
    for (size_t w = 0; w < T; w++) {
        size_t first;
        clopt_optimizer *o = arena16_make(f, CLOPT_SGD, &sg, T, len, th, gr, &first);
        for (size_t i = 0; i < len[w]; i++)
            m[i] = 3.0f;
        assert_int_equal(clopt_optimizer_write_state(o, first + w, 0, m, len[w]), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(o, NULL), CLOPT_SUCCESS);
        arena16_theta(f, o, first, T, len, out[0]);
        size_t at = 0;
        for (size_t t = 0; t < T; t++, at += len[t - 1])
            for (size_t i = 0; i < len[t]; i++) /* 2.5 or 1.5 */
                assert_int_equal(out[0][at + i], t == w ? 0x4020u : 0x3FC0u);
        clopt_optimizer_destroy(o);
    }
}

/* ---- (f) per-tensor step counts ----------------------------------------------------------- */

/* A tensor added after 3 steps counts from 0: its bias corrections (Adam) and its μ product
   (NAdam) start at step 1, as a reference optimizer started then; the counts survive a save. */
void test_per_tensor_steps(void **state)
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
    for (int i = 0; i < 6; i++) { /* two statements: a product rounded to float, as the code
                                      that wrote the files had it (clang contracts a*b - c
                                      within one expression into an FMA: g0[2] -7.45e-9, not 0) */
        const float x = 0.1f * (float)(i + 1);
        p0[i] = 0.1f * (float)i, g0[i] = x - 0.3f;
    }
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

void test_version1_file(void **state) { check_old_file(state, "checkpoint-v1-adam.bin", 1); }
void test_version2_file(void **state) { check_old_file(state, "checkpoint-v2-adam.bin", 2); }

/* ---- (h) the enumeration --------------------------------------------------------------------- */

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

void test_entries(void **state)
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
