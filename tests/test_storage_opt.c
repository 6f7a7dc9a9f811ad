/* SPDX-License-Identifier: MIT */
/* 16-bit parameters at the optimizer level (clopt_param_desc.param_dtype / grad_dtype, the
 * group's master and stochastic_rounding): each mode against the op-level float32 rule run
 * on the same values (the float32 kernels are checked against the golden trajectories), AMP
 * with f16 gradients, checkpoints of every mode resuming bit for bit, the random values of
 * stochastic rounding in the multi-pass rules (LAMB, Adafactor, StableAdamW) against the
 * documented Philox words, and what is refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "ref.h"

enum { N = 1037, OFF = 3, STEPS = 6 };

/* Nearest bf16 by value (ties to the even word): an independent reference. */
static uint16_t bf16_nearest(float x)
{
    uint32_t b = f2u(x);
    uint16_t lo = (uint16_t)(b >> 16), hi = (uint16_t)(lo + 1);
    double dl = fabs((double)x - (double)u2f((uint32_t)lo << 16));
    double dh = fabs((double)u2f((uint32_t)hi << 16) - (double)x);
    if (dl < dh || (dl == dh && !(lo & 1)))
        return lo;
    return hi;
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static float unif(uint32_t *s) { return (float)lcg(s) / 16777216.0f * 2.0f - 1.0f; }

/* A bf16 tensor (θ, g) at element OFF of its buffers in an optimizer of rule with master
   mode `master`. */
typedef struct half_opt {
    clopt_optimizer *opt;
    cl_mem p, g;
} half_opt;

static void half_build(half_opt *h, clopt_ctx *ctx, clopt_rule rule, int master, int sr,
                       const uint16_t *theta)
{
    clopt_hparams hp;
    clopt_hparams_default(rule, &hp);
    hp.lr = 1e-2;
    hp.master = master;
    hp.stochastic_rounding = sr;
    assert_int_equal(clopt_optimizer_create(ctx, rule, &hp, &h->opt), CLOPT_SUCCESS);
    h->p = buf_new(ctx, (N + OFF) * 2, theta);
    h->g = buf_new(ctx, (N + OFF) * 2, NULL);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){h->p, OFF};
    d.grad = (clopt_tensor){h->g, OFF};
    d.ndim = 2, d.shape[0] = 17, d.shape[1] = N / 17;
    d.ndim = 1, d.shape[0] = N;
    d.param_dtype = d.grad_dtype = CLOPT_DTYPE_BF16;
    clopt_status s = clopt_optimizer_add_param_desc(h->opt, 0, &d, NULL);
    if (s != CLOPT_SUCCESS)
        fprintf(stderr, "add_param_desc: %s\n", clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
}

static void half_free(half_opt *h)
{
    clopt_optimizer_destroy(h->opt);
    clReleaseMemObject(h->p);
    clReleaseMemObject(h->g);
}

/* The master of tensor 0 (n elements from element off of θ's buffer) as floats (F32: the
   state; REMAINDER: θ and r joined). */
static void master_of_n(clopt_ctx *ctx, half_opt *h, int master, float *out, size_t n,
                        size_t off)
{
    uint16_t *th = malloc((n + off) * 2);
    assert_non_null(th);
    buf_read(ctx, h->p, 0, (n + off) * 2, th);
    clopt_state_entry e;
    size_t count = clopt_optimizer_state_entry_count(h->opt), at = count;
    for (size_t i = 0; i < count && at == count; i++) {
        assert_int_equal(clopt_optimizer_state_entry(h->opt, i, &e), CLOPT_SUCCESS);
        if (e.param == 0 && strncmp(e.name, "master", 6) == 0)
            at = i;
    }
    assert_true(at < count);
    const size_t idx = e.index;
    if (master == CLOPT_MASTER_F32) {
        assert_string_equal(e.name, "master");
        assert_int_equal(e.dtype, CLOPT_DTYPE_F32);
        assert_int_equal(clopt_optimizer_read_state(h->opt, 0, idx, out, n), CLOPT_SUCCESS);
        free(th);
        return;
    }
    assert_string_equal(e.name, "master_remainder");
    assert_int_equal(e.dtype, CLOPT_DTYPE_U16);
    assert_int_equal(clopt_optimizer_read_state(h->opt, 0, idx, out, n), CLOPT_ERR_UNSUPPORTED);
    uint16_t *r = malloc(n * 2);
    assert_non_null(r);
    assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), e.tensor.buffer, CL_TRUE,
                                         e.tensor.offset * 2, n * 2, r, 0, NULL, NULL),
                     CL_SUCCESS);
    for (size_t i = 0; i < n; i++)
        out[i] = u2f(((uint32_t)th[off + i] << 16) + (uint32_t)(int32_t)(int16_t)r[i]);
    free(r);
    free(th);
}

static void master_of(clopt_ctx *ctx, half_opt *h, int master, float *out)
{
    master_of_n(ctx, h, master, out, N, OFF);
}

/* Every master mode against the float32 rule (op level) fed the same bf16 gradients: the
   master is bit-identical at every step, θ is the master rounded to nearest. */
static void test_master_modes_match_f32(void **state)
{
    fixture *f = *state;
    const clopt_rule rules[] = {CLOPT_ADAMW, CLOPT_SGD, CLOPT_LION, CLOPT_RMSPROP};
    for (size_t ri = 0; ri < sizeof rules / sizeof rules[0]; ri++)
        for (int master = CLOPT_MASTER_F32; master <= CLOPT_MASTER_REMAINDER; master++) {
            const clopt_rule rule = rules[ri];
            uint32_t seed = 7u + (uint32_t)ri;
            uint16_t th[N + OFF];
            float ref[N];
            for (size_t i = 0; i < N + OFF; i++)
                th[i] = bf16_nearest(unif(&seed));
            for (size_t i = 0; i < N; i++)
                ref[i] = u2f((uint32_t)th[OFF + i] << 16);
            half_opt h;
            half_build(&h, f->ctx, rule, master, 0, th);
            /* the float32 reference: op level, state from clopt_alloc_state */
            clopt_hparams hp;
            clopt_optimizer_get_group_hparams(h.opt, 0, &hp);
            hp.master = 0;
            clopt_tensor st[CLOPT_MAX_STATE];
            size_t ns;
            assert_int_equal(clopt_alloc_state(f->ctx, rule, &hp, N, st, &ns), CLOPT_SUCCESS);
            cl_mem rp = buf_new(f->ctx, sizeof ref, ref), rg = buf_new(f->ctx, sizeof ref, NULL);
            for (uint64_t t = 1; t <= STEPS; t++) {
                uint16_t g16[N + OFF];
                float g32[N];
                for (size_t i = 0; i < N + OFF; i++)
                    g16[i] = bf16_nearest(unif(&seed) * 0.1f);
                for (size_t i = 0; i < N; i++)
                    g32[i] = u2f((uint32_t)g16[OFF + i] << 16);
                buf_write(f->ctx, h.g, 0, sizeof g16, g16);
                buf_write(f->ctx, rg, 0, sizeof g32, g32);
                assert_int_equal(clopt_optimizer_step(h.opt, NULL), CLOPT_SUCCESS);
                clopt_step_args a;
                clopt_step_args_init(&a);
                a.param = (clopt_tensor){rp, 0};
                a.grad = (clopt_tensor){rg, 0};
                for (size_t k = 0; k < ns; k++)
                    a.state[k] = st[k];
                assert_int_equal(clopt_enqueue_step(f->ctx, NULL, rule, &hp, &a, N, t, 0, NULL,
                                                    NULL),
                                 CLOPT_SUCCESS);
                float m[N], want[N];
                uint16_t out[N + OFF];
                master_of(f->ctx, &h, master, m);
                buf_read(f->ctx, rp, 0, sizeof want, want);
                buf_read(f->ctx, h.p, 0, sizeof out, out);
                for (size_t i = 0; i < N; i++) {
                    if (f2u(m[i]) != f2u(want[i])) {
                        fprintf(stderr, "%s master %d step %llu [%zu]: %a, f32 rule %a\n",
                                clopt_rule_name(rule), master, (unsigned long long)t, i, m[i],
                                want[i]);
                        fail();
                    }
                    /* F32: round to nearest even; REMAINDER: nearest, ties away from zero */
                    uint16_t r = bf16_nearest(want[i]);
                    if (master == CLOPT_MASTER_REMAINDER && (f2u(want[i]) & 0xFFFFu) == 0x8000u)
                        r = (uint16_t)((f2u(want[i]) >> 16) + 1u);
                    assert_int_equal(out[OFF + i], r);
                }
                for (size_t i = 0; i < OFF; i++) /* outside the tensor: untouched */
                    assert_int_equal(out[i], th[i]);
            }
            for (size_t k = 0; k < ns; k++)
                clReleaseMemObject(st[k].buffer);
            clReleaseMemObject(rp);
            clReleaseMemObject(rg);
            half_free(&h);
        }
}

/* AMP with f16 gradients: an Inf skips the step (θ, state and master unchanged), a finite
   scaled gradient matches the float32 rule on the unscaled values. */
static void test_amp_f16_grads(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAM, &hp);
    hp.master = CLOPT_MASTER_F32;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    uint16_t th[N];
    float th32[N];
    uint32_t seed = 99;
    for (size_t i = 0; i < N; i++) {
        th[i] = bf16_nearest(unif(&seed));
        th32[i] = u2f((uint32_t)th[i] << 16);
    }
    cl_mem p = buf_new(f->ctx, sizeof th, th), g = buf_new(f->ctx, N * 2, NULL);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.shape[0] = N;
    d.param_dtype = CLOPT_DTYPE_BF16;
    d.grad_dtype = CLOPT_DTYPE_F16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(opt, 1024.0), CLOPT_SUCCESS);
    /* f16 gradients: small integers times 1/8, scaled by 1024 (exact in f16) */
    uint16_t g16[N];
    float g32[N];
    for (size_t i = 0; i < N; i++) {
        int k = (int)(lcg(&seed) % 31) - 15;
        float v = (float)k / 8.0f * 1024.0f;
        g32[i] = (float)k / 8.0f;
        /* f16 of v: sign, exponent, 10-bit mantissa (v = k * 128, |k| <= 15) */
        uint16_t h = 0;
        if (k != 0) {
            int e = 0;
            float m = frexpf(fabsf(v), &e); /* v = m 2^e, m in [0.5, 1) */
            h = (uint16_t)(((e - 1 + 15) << 10) | ((uint16_t)((m * 2.0f - 1.0f) * 1024.0f)));
            if (k < 0)
                h |= 0x8000u;
        }
        g16[i] = h;
    }
    g16[5] = 0x7C00u; /* +Inf */
    buf_write(f->ctx, g, 0, sizeof g16, g16);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_STEP_SKIPPED);
    uint16_t out[N];
    float m[N];
    buf_read(f->ctx, p, 0, sizeof out, out);
    assert_memory_equal(out, th, sizeof th);
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 2, m, N), CLOPT_SUCCESS);
    assert_memory_equal(m, th32, sizeof m);
    assert_int_equal(clopt_optimizer_step_count(opt), 0);
    /* finite: one step equal to the float32 rule on g32 */
    g16[5] = 0;
    g32[5] = 0.0f;
    buf_write(f->ctx, g, 0, sizeof g16, g16);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(opt), 1);
    clopt_hparams rh = hp;
    rh.master = 0;
    clopt_tensor st[CLOPT_MAX_STATE];
    size_t ns;
    assert_int_equal(clopt_alloc_state(f->ctx, CLOPT_ADAM, &rh, N, st, &ns), CLOPT_SUCCESS);
    cl_mem rp = buf_new(f->ctx, sizeof th32, th32), rg = buf_new(f->ctx, sizeof g32, g32);
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = (clopt_tensor){rp, 0};
    a.grad = (clopt_tensor){rg, 0};
    for (size_t k = 0; k < ns; k++)
        a.state[k] = st[k];
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &rh, &a, N, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    float want[N];
    buf_read(f->ctx, rp, 0, sizeof want, want);
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 2, m, N), CLOPT_SUCCESS);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(f2u(m[i]), f2u(want[i]));
    for (size_t k = 0; k < ns; k++)
        clReleaseMemObject(st[k].buffer);
    clReleaseMemObject(rp);
    clReleaseMemObject(rg);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

/* Checkpoints of every mode (none with and without stochastic rounding, f32, remainder)
   resume bit for bit: steps after a load equal the steps of the run that was saved. */
static void test_checkpoint_resume(void **state)
{
    fixture *f = *state;
    for (int mode = 0; mode < 4; mode++) {
        const int master = mode >= 2 ? mode - 1 : 0, sr = mode == 1;
        uint32_t seed = 5;
        uint16_t th[N + OFF], grads[4][N + OFF];
        for (size_t i = 0; i < N + OFF; i++)
            th[i] = bf16_nearest(unif(&seed));
        for (int s = 0; s < 4; s++)
            for (size_t i = 0; i < N + OFF; i++)
                grads[s][i] = bf16_nearest(unif(&seed) * 0.1f);
        half_opt a, b;
        half_build(&a, f->ctx, CLOPT_ADAMW, master, sr, th);
        assert_int_equal(clopt_optimizer_seed(a.opt, 1234), CLOPT_SUCCESS);
        for (int s = 0; s < 2; s++) {
            buf_write(f->ctx, a.g, 0, sizeof grads[s], grads[s]);
            assert_int_equal(clopt_optimizer_step(a.opt, NULL), CLOPT_SUCCESS);
        }
        size_t size, written;
        assert_int_equal(clopt_optimizer_state_size(a.opt, NULL, &size), CLOPT_SUCCESS);
        unsigned char *ck = malloc(size);
        assert_int_equal(clopt_optimizer_save_to(a.opt, NULL, ck, size, &written), CLOPT_SUCCESS);
        assert_int_equal(((uint32_t)ck[8]) | ((uint32_t)ck[9] << 8), 4);
        uint16_t saved[N + OFF];
        buf_read(f->ctx, a.p, 0, sizeof saved, saved); /* θ is the engine's to save */
        for (int s = 2; s < 4; s++) {
            buf_write(f->ctx, a.g, 0, sizeof grads[s], grads[s]);
            assert_int_equal(clopt_optimizer_step(a.opt, NULL), CLOPT_SUCCESS);
        }
        uint16_t want[N + OFF];
        buf_read(f->ctx, a.p, 0, sizeof want, want);
        /* a fresh optimizer (another seed: the checkpoint brings the saved one) */
        half_build(&b, f->ctx, CLOPT_ADAMW, master, sr, saved);
        assert_int_equal(clopt_optimizer_load_from(b.opt, ck, size), CLOPT_SUCCESS);
        for (int s = 2; s < 4; s++) {
            buf_write(f->ctx, b.g, 0, sizeof grads[s], grads[s]);
            assert_int_equal(clopt_optimizer_step(b.opt, NULL), CLOPT_SUCCESS);
        }
        uint16_t got[N + OFF];
        buf_read(f->ctx, b.p, 0, sizeof got, got);
        assert_memory_equal(got, want, sizeof got);
        if (mode == 1) { /* stochastic rounding moved θ off round-to-nearest somewhere */
            half_opt c;
            half_build(&c, f->ctx, CLOPT_ADAMW, 0, 0, th);
            for (int s = 0; s < 4; s++) {
                buf_write(f->ctx, c.g, 0, sizeof grads[s], grads[s]);
                assert_int_equal(clopt_optimizer_step(c.opt, NULL), CLOPT_SUCCESS);
            }
            uint16_t rne[N + OFF];
            buf_read(f->ctx, c.p, 0, sizeof rne, rne);
            assert_true(memcmp(rne, want, sizeof rne) != 0);
            half_free(&c);
        }
        /* a checkpoint of another master mode or dtype does not load, and changes nothing */
        half_opt o;
        half_build(&o, f->ctx, CLOPT_ADAMW, master == 1 ? 2 : 1, 0, saved);
        clopt_status ls = clopt_optimizer_load_from(o.opt, ck, size);
        /* (a file of f32 masters is also larger than any of remainders) */
        assert_true(ls == CLOPT_ERR_STATE_MISMATCH || ls == CLOPT_ERR_FORMAT);
        assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
        half_free(&o);
        free(ck);
        half_free(&a);
        half_free(&b);
    }
}

/* What 16-bit tensors cannot do yet is refused with a message, and nothing is added. */
static void test_refused(void **state)
{
    fixture *f = *state;
    cl_mem p = buf_new(f->ctx, 4096, NULL), g = buf_new(f->ctx, 4096, NULL);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0};
    d.grad = (clopt_tensor){g, 0};
    d.ndim = 2, d.shape[0] = 8, d.shape[1] = 16;
    d.param_dtype = CLOPT_DTYPE_BF16;
    /* state storage that a rule does not take is refused at creation */
    struct {
        clopt_rule rule;
        int state_dtype;
    } cases[] = {{CLOPT_LAMB, CLOPT_DTYPE_U8},
                 {CLOPT_ADAFACTOR, CLOPT_DTYPE_BF16},
                 {CLOPT_ADAFACTOR, CLOPT_DTYPE_U8},
                 {CLOPT_NADAM, CLOPT_DTYPE_U8}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        clopt_hparams hp;
        clopt_hparams_default(cases[c].rule, &hp);
        hp.state_dtype = cases[c].state_dtype;
        clopt_optimizer *opt = NULL;
        assert_int_equal(clopt_optimizer_create(f->ctx, cases[c].rule, &hp, &opt),
                         CLOPT_ERR_UNSUPPORTED);
        assert_null(opt);
        assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    }
    /* an f16 param in a group of remainders; hparams out of range */
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    hp.master = CLOPT_MASTER_REMAINDER;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
    d.param_dtype = CLOPT_DTYPE_F16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_INVALID_ARGUMENT);
    d.param_dtype = (clopt_dtype)7;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_INVALID_ARGUMENT);
    d.param_dtype = CLOPT_DTYPE_BF16;
    d.shape[0] = 8 * 2048 / 16 + 1; /* 2049 · 16 bf16 elements: past the 4096 bytes */
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_ERR_OUT_OF_BOUNDS);
    assert_int_equal(clopt_optimizer_param_count(opt), 0);
    /* GC turned on later for a group with a 16-bit tensor */
    d.shape[0] = 8;
    hp.master = 0;
    assert_int_equal(clopt_optimizer_set_group_hparams(opt, 0, &hp), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    clopt_hparams la = hp;
    la.lookahead_k = 5; /* Lookahead adds a state: a layout change */
    assert_int_equal(clopt_optimizer_set_group_hparams(opt, 0, &la), CLOPT_ERR_STATE_MISMATCH);
    clopt_hparams bad = hp;
    bad.master = 3;
    assert_int_equal(clopt_optimizer_set_group_hparams(opt, 0, &bad), CLOPT_ERR_INVALID_HYPERPARAM);
    bad = hp;
    bad.stochastic_rounding = 1;
    bad.master = CLOPT_MASTER_F32;
    assert_int_equal(clopt_hparams_validate(CLOPT_ADAMW, &bad, NULL), CLOPT_ERR_INVALID_HYPERPARAM);
    clopt_optimizer_destroy(opt);
    /* the tensors of an arena group share one pair of types */
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc two[2] = {d, d};
    two[1].param_dtype = CLOPT_DTYPE_F16;
    assert_int_equal(clopt_optimizer_add_arena_group(opt, &hp, 2, two, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_group_count(opt), 1);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

/* An R x C matrix into o32 (float32 θ and g at P32, G32) and o16 (bf16 at P, G from element
   po). */
static void add_matrix_pair(clopt_optimizer *o32, cl_mem P32, cl_mem G32, clopt_optimizer *o16,
                            cl_mem P, cl_mem G, size_t po, size_t R, size_t C)
{
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.ndim = 2, d.shape[0] = R, d.shape[1] = C;
    d.param = (clopt_tensor){P32, 0};
    d.grad = (clopt_tensor){G32, 0};
    assert_int_equal(clopt_optimizer_add_param_desc(o32, 0, &d, NULL), CLOPT_SUCCESS);
    d.param = (clopt_tensor){P, po};
    d.grad = (clopt_tensor){G, po};
    d.param_dtype = d.grad_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_optimizer_add_param_desc(o16, 0, &d, NULL), CLOPT_SUCCESS);
}

/* The rules with passes over the tensor (LAMB, Adafactor factored, gradient centralization
   with L2 decay) and Lookahead on a 17 x 61 matrix: the 16-bit optimizer's master is bit-identical to a float32 optimizer's θ
   fed the same bf16 gradients, for both master modes. */
static void test_passes_match_f32(void **state)
{
    fixture *f = *state;
    /* the 16-bit θ and g at an odd element offset: the chunk kernels' 16-bit stores take
       their unaligned form (the aligned one is every other test's) */
    enum { R = 17, C = 61, M = R * C, PO = 1 };
    struct {
        clopt_rule rule;
        int gc;
        double wd;
        unsigned lookahead;
    } cases[] = {{CLOPT_LAMB, 0, 0.01, 0},
                 {CLOPT_ADAFACTOR, 0, 0.01, 0},
                 {CLOPT_ADAFACTOR, 1, 0.0, 0},
                 {CLOPT_ADAM, 1, 0.01, 0},
                 {CLOPT_SGD, 1, 0.05, 0},
                 {CLOPT_ADAMW, 0, 0.01, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int master = CLOPT_MASTER_F32; master <= CLOPT_MASTER_REMAINDER; master++) {
            uint32_t seed = 31u + (uint32_t)c;
            uint16_t th[M + PO], g16[M + PO];
            float th32[M], g32[M];
            th[0] = g16[0] = 0x7FC1; /* a NaN next to the tensors: never read */
            for (size_t i = 0; i < M; i++) {
                th[PO + i] = bf16_nearest(unif(&seed));
                th32[i] = u2f((uint32_t)th[PO + i] << 16);
            }
            clopt_hparams hp;
            clopt_hparams_default(cases[c].rule, &hp);
            hp.lr = 1e-2;
            hp.momentum = cases[c].rule == CLOPT_SGD ? 0.9 : 0.0;
            hp.weight_decay = cases[c].wd;
            hp.grad_centralization = cases[c].gc;
            hp.lookahead_k = cases[c].lookahead;
            clopt_optimizer *o16, *o32;
            assert_int_equal(clopt_optimizer_create(f->ctx, cases[c].rule, &hp, &o32),
                             CLOPT_SUCCESS);
            hp.master = master;
            assert_int_equal(clopt_optimizer_create(f->ctx, cases[c].rule, &hp, &o16),
                             CLOPT_SUCCESS);
            cl_mem P = buf_new(f->ctx, sizeof th, th), G = buf_new(f->ctx, sizeof g16, NULL);
            cl_mem P32 = buf_new(f->ctx, sizeof th32, th32), G32 = buf_new(f->ctx, sizeof g32, NULL);
            add_matrix_pair(o32, P32, G32, o16, P, G, PO, R, C);
            half_opt h = {o16, P, G};
            for (int t = 1; t <= 5; t++) {
                for (size_t i = 0; i < M; i++) {
                    g16[PO + i] = bf16_nearest(unif(&seed) * 0.1f + 0.02f * (float)(i % C) / C);
                    g32[i] = u2f((uint32_t)g16[PO + i] << 16);
                }
                buf_write(f->ctx, G, 0, sizeof g16, g16);
                buf_write(f->ctx, G32, 0, sizeof g32, g32);
                assert_int_equal(clopt_optimizer_step(o16, NULL), CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_step(o32, NULL), CLOPT_SUCCESS);
                float m[M], want[M];
                master_of_n(f->ctx, &h, master, m, M, PO);
                uint16_t th_now[M + PO];
                buf_read(f->ctx, P, 0, sizeof th_now, th_now);
                assert_int_equal(th_now[0], 0x7FC1); /* nothing written before the tensor */
                buf_read(f->ctx, P32, 0, sizeof want, want);
                for (size_t i = 0; i < M; i++)
                    if (f2u(m[i]) != f2u(want[i])) {
                        fprintf(stderr, "%s gc %d master %d step %d [%zu]: %a, float32 %a\n",
                                clopt_rule_name(cases[c].rule), cases[c].gc, master, t, i, m[i],
                                want[i]);
                        fail();
                    }
            }
            clopt_optimizer_destroy(o16);
            clopt_optimizer_destroy(o32);
            clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(P32),
                clReleaseMemObject(G32);
        }
}

/* Stochastic rounding in the multi-pass rules (their chunk kernels round θ themselves): one
   step of bf16 θ at an odd element offset, master none with SR, against the float32 rule on
   the same values: each θ must be the float32 result's bits plus the documented random value
   of its element (ref_sr_value: element = index in θ's buffer, stream = the tensor's index,
   step 1, the optimizer's seed), truncated to bf16. */
static void passes_sr_words(clopt_ctx *ctx)
{
    enum { R = 17, C = 61, M = R * C, PO = 3 };
    const clopt_rule rules[] = {CLOPT_LAMB, CLOPT_ADAFACTOR, CLOPT_STABLE_ADAMW};
    const uint64_t seed = 0x5EEDF00Dull;
    for (size_t c = 0; c < sizeof rules / sizeof rules[0]; c++) {
        uint32_t s = 77u + (uint32_t)c;
        uint16_t th[M + PO], g16[M + PO];
        float th32[M], g32[M];
        for (size_t i = 0; i < PO; i++)
            th[i] = g16[i] = 0x7FC1; /* NaNs next to the tensors: never read */
        for (size_t i = 0; i < M; i++) {
            th[PO + i] = bf16_nearest(unif(&s));
            th32[i] = u2f((uint32_t)th[PO + i] << 16);
            g16[PO + i] = bf16_nearest(unif(&s) * 0.1f);
            g32[i] = u2f((uint32_t)g16[PO + i] << 16);
        }
        clopt_hparams hp;
        clopt_hparams_default(rules[c], &hp);
        hp.lr = 1e-2;
        hp.weight_decay = 0.01;
        clopt_optimizer *o16, *o32;
        assert_int_equal(clopt_optimizer_create(ctx, rules[c], &hp, &o32), CLOPT_SUCCESS);
        hp.stochastic_rounding = 1;
        assert_int_equal(clopt_optimizer_create(ctx, rules[c], &hp, &o16), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_seed(o16, seed), CLOPT_SUCCESS);
        cl_mem P = buf_new(ctx, sizeof th, th), G = buf_new(ctx, sizeof g16, g16);
        cl_mem P32 = buf_new(ctx, sizeof th32, th32), G32 = buf_new(ctx, sizeof g32, g32);
        add_matrix_pair(o32, P32, G32, o16, P, G, PO, R, C);
        assert_int_equal(clopt_optimizer_step(o16, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(o32, NULL), CLOPT_SUCCESS);
        uint16_t now[M + PO];
        float want[M];
        buf_read(ctx, P, 0, sizeof now, now);
        buf_read(ctx, P32, 0, sizeof want, want);
        size_t bad = 0, up = 0, moved = 0;
        for (size_t i = 0; i < PO; i++)
            bad += now[i] != 0x7FC1;
        for (size_t i = 0; i < M; i++) {
            const uint32_t r = ref_sr_value(PO + i, seed, 0, 1);
            const uint16_t w = (uint16_t)((f2u(want[i]) + r) >> 16);
            up += w != (uint16_t)(f2u(want[i]) >> 16);
            moved += now[PO + i] != th[PO + i];
            if (now[PO + i] != w && bad++ < 4)
                fprintf(stderr, "%s [%zu]: bf16 %04x, float32 %a with r %04x gives %04x\n",
                        clopt_rule_name(rules[c]), i, now[PO + i], want[i], r, w);
        }
        print_message("  %s: %zu of %d rounded up, %zu moved\n", clopt_rule_name(rules[c]), up, M,
                      moved);
        assert_int_equal(bad, 0);
        assert_true(up > M / 8 && moved > M / 8); /* not vacuous */
        clopt_optimizer_destroy(o16);
        clopt_optimizer_destroy(o32);
        clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(P32),
            clReleaseMemObject(G32);
    }
}

/* With the CPU's shape of the update passes (64 chunks per item in 2 parts: the random values
   of 8 chunks at a time) and a GPU's (reductions of 64 items: one chunk per item, each its
   own instances). */
static void test_passes_sr_words(void **state)
{
    fixture *f = *state;
    passes_sr_words(f->ctx);
    clopt_ctx *ctx;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    clopt_tuning t;
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
    t.reduce_local = 64;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
    passes_sr_words(ctx);
    clopt_ctx_destroy(ctx);
}

/* An arena group of bf16 tensors (one launch), its weights written through the views after
   registration (the F32 master takes them at the first step), with Lookahead: equal to the
   same tensors registered one by one, for every master mode. */
static void test_arena_bf16(void **state)
{
    fixture *f = *state;
    enum { N0 = 1000, N1 = 91, TOT = N0 + N1 };
    for (int master = 0; master <= CLOPT_MASTER_REMAINDER; master++) {
        uint32_t seed = 99;
        uint16_t th[TOT], gr[TOT];
        for (size_t i = 0; i < TOT; i++)
            th[i] = bf16_nearest(unif(&seed));
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAMW, &hp);
        hp.lr = 1e-2;
        hp.master = master;
        hp.lookahead_k = 2;
        clopt_optimizer *ar, *ta;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &ar), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &ta), CLOPT_SUCCESS);
        clopt_param_desc d[2];
        const size_t at[2] = {0, N0};
        for (int k = 0; k < 2; k++)
            clopt_param_desc_init(&d[k]);
        d[0].shape[0] = N0;
        d[1].ndim = 2, d[1].shape[0] = 7, d[1].shape[1] = 13;
        for (int k = 0; k < 2; k++)
            d[k].param_dtype = d[k].grad_dtype = CLOPT_DTYPE_BF16;
        size_t first;
        assert_int_equal(clopt_optimizer_add_arena_group(ar, &hp, 2, d, NULL, &first),
                         CLOPT_SUCCESS);
        cl_mem P2 = buf_new(f->ctx, sizeof th, th), G2 = buf_new(f->ctx, sizeof gr, NULL);
        clopt_tensor pv[2], gv[2];
        for (int k = 0; k < 2; k++) {
            assert_int_equal(clopt_optimizer_param_view(ar, first + k, &pv[k], &gv[k], NULL,
                                                        NULL),
                             CLOPT_SUCCESS);
            /* the weights arrive after registration, through the view */
            assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(f->ctx), pv[k].buffer,
                                                  CL_TRUE, pv[k].offset * 2,
                                                  (k ? N1 : N0) * 2, th + at[k], 0, NULL, NULL),
                             CL_SUCCESS);
            clopt_param_desc e = d[k];
            e.param = (clopt_tensor){P2, at[k]};
            e.grad = (clopt_tensor){G2, at[k]};
            assert_int_equal(clopt_optimizer_add_param_desc(ta, 0, &e, NULL), CLOPT_SUCCESS);
        }
        for (int t = 0; t < 5; t++) {
            for (size_t i = 0; i < TOT; i++)
                gr[i] = bf16_nearest(unif(&seed) * 0.1f);
            for (int k = 0; k < 2; k++)
                assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(f->ctx), gv[k].buffer,
                                                      CL_TRUE, gv[k].offset * 2,
                                                      (k ? N1 : N0) * 2, gr + at[k], 0, NULL,
                                                      NULL),
                                 CL_SUCCESS);
            buf_write(f->ctx, G2, 0, sizeof gr, gr);
            assert_int_equal(clopt_optimizer_step(ar, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(ta, NULL), CLOPT_SUCCESS);
        }
        uint16_t a[TOT], b[TOT];
        for (int k = 0; k < 2; k++)
            assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(f->ctx), pv[k].buffer,
                                                 CL_TRUE, pv[k].offset * 2, (k ? N1 : N0) * 2,
                                                 a + at[k], 0, NULL, NULL),
                             CL_SUCCESS);
        buf_read(f->ctx, P2, 0, sizeof b, b);
        assert_memory_equal(a, b, sizeof a);
        assert_true(memcmp(a, th, sizeof a) != 0);
        clopt_optimizer_destroy(ar);
        clopt_optimizer_destroy(ta);
        clReleaseMemObject(P2), clReleaseMemObject(G2);
    }
}

/* bf16 and 8-bit state in arena and range groups (8-bit: every tensor starts a block of 256
   of the state; in the range group the second tensor starts at element 5000 of the flat
   buffers, so its blocks are not the buffer's): θ and every state's bytes equal, bit for
   bit, to the same tensors registered one by one. */
static void test_group_state_types(void **state)
{
    fixture *f = *state;
    enum { N0 = 5000, N1 = 4200, TOT = N0 + N1 };
    const size_t n[2] = {N0, N1}, at[2] = {0, N0};
    for (int c = 0; c < 4; c++) {
        const int arena = c < 2, sd = c & 1 ? CLOPT_DTYPE_U8 : CLOPT_DTYPE_BF16;
        uint32_t seed = 5u + (uint32_t)c;
        float th[TOT], gr[TOT];
        for (size_t i = 0; i < TOT; i++)
            th[i] = unif(&seed);
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAMW, &hp);
        hp.state_dtype = sd;
        clopt_optimizer *grp, *one;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &grp), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &one), CLOPT_SUCCESS);
        cl_mem P = buf_new(f->ctx, sizeof th, th), G = buf_new(f->ctx, sizeof gr, NULL);
        cl_mem P2 = buf_new(f->ctx, sizeof th, th), G2 = buf_new(f->ctx, sizeof gr, NULL);
        clopt_param_desc d[2];
        for (int k = 0; k < 2; k++) {
            clopt_param_desc_init(&d[k]);
            d[k].shape[0] = n[k];
            d[k].param = (clopt_tensor){P, at[k]};
            d[k].grad = (clopt_tensor){G, at[k]};
        }
        clopt_tensor pv[2], gv[2];
        size_t first = 0;
        if (arena) {
            assert_int_equal(clopt_optimizer_add_arena_group(grp, &hp, 2, d, NULL, &first),
                             CLOPT_SUCCESS);
        } else {
            clopt_range_group rg;
            clopt_range_group_init(&rg);
            rg.ntensors = 2;
            rg.tensors = d;
            assert_int_equal(clopt_optimizer_add_range_group(grp, &hp, &rg, NULL, &first),
                             CLOPT_SUCCESS);
        }
        for (int k = 0; k < 2; k++) {
            assert_int_equal(clopt_optimizer_param_view(grp, first + k, &pv[k], &gv[k], NULL,
                                                        NULL),
                             CLOPT_SUCCESS);
            assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(f->ctx), pv[k].buffer,
                                                  CL_TRUE, pv[k].offset * 4, n[k] * 4,
                                                  th + at[k], 0, NULL, NULL),
                             CL_SUCCESS);
            clopt_param_desc e = d[k];
            e.param.buffer = P2;
            e.grad.buffer = G2;
            assert_int_equal(clopt_optimizer_add_param_desc(one, 0, &e, NULL), CLOPT_SUCCESS);
        }
        for (int t = 0; t < 5; t++) {
            for (size_t i = 0; i < TOT; i++)
                gr[i] = unif(&seed) * (1.0f + (float)(i % 7));
            for (int k = 0; k < 2; k++)
                assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(f->ctx), gv[k].buffer,
                                                      CL_TRUE, gv[k].offset * 4, n[k] * 4,
                                                      gr + at[k], 0, NULL, NULL),
                                 CL_SUCCESS);
            buf_write(f->ctx, G2, 0, sizeof gr, gr);
            assert_int_equal(clopt_optimizer_step(grp, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(one, NULL), CLOPT_SUCCESS);
        }
        float a[TOT], b[TOT];
        for (int k = 0; k < 2; k++)
            assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(f->ctx), pv[k].buffer,
                                                 CL_TRUE, pv[k].offset * 4, n[k] * 4, a + at[k],
                                                 0, NULL, NULL),
                             CL_SUCCESS);
        buf_read(f->ctx, P2, 0, sizeof b, b);
        assert_memory_equal(a, b, sizeof a);
        assert_true(memcmp(a, th, sizeof a) != 0);
        const size_t ne = clopt_optimizer_state_entry_count(grp);
        assert_int_equal(ne, clopt_optimizer_state_entry_count(one));
        assert_int_equal(ne, sd == CLOPT_DTYPE_U8 ? 8 : 4); /* m, v (and their absmaxes) */
        for (size_t i = 0; i < ne; i++) {
            clopt_state_entry x, y;
            assert_int_equal(clopt_optimizer_state_entry(grp, i, &x), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_state_entry(one, i, &y), CLOPT_SUCCESS);
            assert_string_equal(x.key, y.key);
            assert_int_equal(x.dtype, y.dtype);
            assert_int_equal(x.length, y.length);
            if (strstr(x.key, "absmax") == NULL)
                assert_int_equal(x.dtype, sd);
            const size_t es = clopt_dtype_size(x.dtype), len = x.length * es;
            unsigned char *u = malloc(len), *w = malloc(len);
            assert_non_null(u), assert_non_null(w);
            buf_read(f->ctx, x.tensor.buffer, x.tensor.offset * es, len, u);
            buf_read(f->ctx, y.tensor.buffer, y.tensor.offset * es, len, w);
            assert_memory_equal(u, w, len);
            free(u), free(w);
        }
        clopt_optimizer_destroy(grp);
        clopt_optimizer_destroy(one);
        clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(P2), clReleaseMemObject(G2);
    }
}

/* LAMB with bf16 moments: the states are the float32 run's rounded to bf16 after the first
   step (both start at 0), and over 10 steps θ stays within 3% of the update's RMS of the
   float32-state run (the moments' rounding, 2^-9 relative, is all that differs). */
static void test_lamb_bf16_state(void **state)
{
    fixture *f = *state;
    enum { R = 33, C = 40, M = R * C };
    uint32_t seed = 17;
    float th[M], gr[M];
    for (size_t i = 0; i < M; i++)
        th[i] = unif(&seed);
    clopt_optimizer *o[2];
    cl_mem P[2], G[2];
    for (int k = 0; k < 2; k++) {
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_LAMB, &hp);
        hp.state_dtype = k ? CLOPT_DTYPE_BF16 : CLOPT_DTYPE_F32;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_LAMB, &hp, &o[k]), CLOPT_SUCCESS);
        P[k] = buf_new(f->ctx, sizeof th, th), G[k] = buf_new(f->ctx, sizeof gr, NULL);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){P[k], 0};
        d.grad = (clopt_tensor){G[k], 0};
        d.ndim = 2, d.shape[0] = R, d.shape[1] = C;
        assert_int_equal(clopt_optimizer_add_param_desc(o[k], 0, &d, NULL), CLOPT_SUCCESS);
    }
    for (int t = 1; t <= 10; t++) {
        for (size_t i = 0; i < M; i++)
            gr[i] = unif(&seed) * 0.1f;
        for (int k = 0; k < 2; k++) {
            buf_write(f->ctx, G[k], 0, sizeof gr, gr);
            assert_int_equal(clopt_optimizer_step(o[k], NULL), CLOPT_SUCCESS);
        }
        if (t == 1) {
            clopt_state_entry e;
            for (size_t s = 0; s < 2; s++) {
                float m32[M];
                uint16_t m16[M];
                assert_int_equal(clopt_optimizer_read_state(o[0], 0, s, m32, M), CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_state_entry(o[1], s, &e), CLOPT_SUCCESS);
                assert_int_equal(e.dtype, CLOPT_DTYPE_BF16);
                assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(f->ctx),
                                                     e.tensor.buffer, CL_TRUE,
                                                     e.tensor.offset * 2, sizeof m16, m16, 0,
                                                     NULL, NULL),
                                 CL_SUCCESS);
                for (size_t i = 0; i < M; i++)
                    assert_int_equal(m16[i], bf16_nearest(m32[i]));
            }
        }
    }
    float a[M], b[M];
    buf_read(f->ctx, P[0], 0, sizeof a, a);
    buf_read(f->ctx, P[1], 0, sizeof b, b);
    double du = 0, dd = 0;
    for (size_t i = 0; i < M; i++) {
        du += ((double)a[i] - th[i]) * ((double)a[i] - th[i]);
        dd += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    }
    assert_true(du > 0);
    assert_true(sqrt(dd) <= 0.03 * sqrt(du));
    for (int k = 0; k < 2; k++) {
        clopt_optimizer_destroy(o[k]);
        clReleaseMemObject(P[k]), clReleaseMemObject(G[k]);
    }
}

/* A range group over one flat bf16 buffer (two tensors, one launch) equals the same tensors
   registered one by one, for every master mode without stochastic rounding. */
static void test_range_group_bf16(void **state)
{
    fixture *f = *state;
    enum { N0 = 1000, N1 = 37, AT1 = 1003, TOT = 1040 };
    /* Schedule-Free: its range-group step program also holds sf_mode (eval/train), which
       did not build with 16-bit θ there */
    static const clopt_rule rules[] = {CLOPT_ADAMW, CLOPT_SCHEDULE_FREE_ADAMW};
    for (int k = 0; k < 6; k++) { /* each rule with each master */
        const clopt_rule rule = rules[k / 3];
        const int master = k % 3;
        uint32_t seed = 77;
        uint16_t th[TOT], gr[TOT];
        for (size_t i = 0; i < TOT; i++)
            th[i] = bf16_nearest(unif(&seed));
        clopt_hparams hp;
        clopt_hparams_default(rule, &hp);
        hp.lr = 1e-2;
        hp.master = master;
        clopt_optimizer *ra, *ta;
        assert_int_equal(clopt_optimizer_create(f->ctx, rule, &hp, &ra), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_create(f->ctx, rule, &hp, &ta), CLOPT_SUCCESS);
        cl_mem P = buf_new(f->ctx, sizeof th, th), G = buf_new(f->ctx, sizeof gr, NULL);
        cl_mem P2 = buf_new(f->ctx, sizeof th, th), G2 = buf_new(f->ctx, sizeof gr, NULL);
        clopt_param_desc d[2];
        const size_t n[2] = {N0, N1}, at[2] = {0, AT1};
        for (int k = 0; k < 2; k++) {
            clopt_param_desc_init(&d[k]);
            d[k].param = (clopt_tensor){P, at[k]};
            d[k].grad = (clopt_tensor){G, at[k]};
            d[k].shape[0] = n[k];
            d[k].param_dtype = d[k].grad_dtype = CLOPT_DTYPE_BF16;
        }
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = 2;
        rg.tensors = d;
        assert_int_equal(clopt_optimizer_add_range_group(ra, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
        for (int k = 0; k < 2; k++) {
            clopt_param_desc e = d[k];
            e.param.buffer = P2;
            e.grad.buffer = G2;
            assert_int_equal(clopt_optimizer_add_param_desc(ta, 0, &e, NULL), CLOPT_SUCCESS);
        }
        for (int t = 0; t < 5; t++) {
            for (size_t i = 0; i < TOT; i++)
                gr[i] = bf16_nearest(unif(&seed) * 0.1f);
            buf_write(f->ctx, G, 0, sizeof gr, gr);
            buf_write(f->ctx, G2, 0, sizeof gr, gr);
            assert_int_equal(clopt_optimizer_step(ra, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(ta, NULL), CLOPT_SUCCESS);
        }
        uint16_t a[TOT], b[TOT];
        buf_read(f->ctx, P, 0, sizeof a, a);
        buf_read(f->ctx, P2, 0, sizeof b, b);
        assert_memory_equal(a, b, sizeof a);
        assert_true(memcmp(a, th, sizeof a) != 0);
        if (rule == CLOPT_SCHEDULE_FREE_ADAMW) { /* x in eval mode: the same in both */
            assert_int_equal(clopt_optimizer_eval(ra), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_eval(ta), CLOPT_SUCCESS);
            uint16_t x[TOT];
            buf_read(f->ctx, P, 0, sizeof x, x);
            buf_read(f->ctx, P2, 0, sizeof b, b);
            assert_memory_equal(x, b, sizeof x);
            assert_true(memcmp(x, a, sizeof x) != 0);
        }
        for (size_t i = N0; i < AT1; i++) /* the gap between the tensors: untouched */
            assert_int_equal(a[i], th[i]);
        clopt_optimizer_destroy(ra);
        clopt_optimizer_destroy(ta);
        clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(P2), clReleaseMemObject(G2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_master_modes_match_f32),
        cmocka_unit_test(test_amp_f16_grads),
        cmocka_unit_test(test_checkpoint_resume),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_range_group_bf16),
        cmocka_unit_test(test_passes_match_f32),
        cmocka_unit_test(test_passes_sr_words),
        cmocka_unit_test(test_arena_bf16),
        cmocka_unit_test(test_group_state_types),
        cmocka_unit_test(test_lamb_bf16_state),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
