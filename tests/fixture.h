/* SPDX-License-Identifier: MIT */
/* Shared by the cmocka tests that run on one context per group (include after cmocka.h):
 * the fixture with its setup/teardown, and blocking transfers that assert success. */
#ifndef CLOPT_TEST_FIXTURE_H
#define CLOPT_TEST_FIXTURE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clopt.h"

/* CLOPT_TEST_SMALL=1 (set by ci/oclgrind.sh, which runs the tests on a simulated device
 * that checks every memory access and is thousands of times slower than PoCL): tests with
 * big sizes shrink them, keeping the boundaries they exist to cross (test_flat, and
 * test_kernels with its own copy of this check). */
static inline int test_small(void)
{
    const char *s = getenv("CLOPT_TEST_SMALL");
    return s && *s && *s != '0';
}

typedef struct fixture {
    clopt_ctx *ctx;
} fixture;

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || clopt_ctx_create(&f->ctx) != CLOPT_SUCCESS)
        return -1;
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    clopt_ctx_destroy(f->ctx);
    free(f);
    return 0;
}

/* A new buffer of n floats, filled from data unless it is NULL. */
static inline cl_mem upload(clopt_ctx *ctx, const float *data, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE, n * sizeof(float),
                              NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    if (data)
        assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0,
                                              n * sizeof(float), data, 0, NULL, NULL),
                         CL_SUCCESS);
    return m;
}

static inline void write_at(clopt_ctx *ctx, clopt_tensor t, const float *data, size_t n)
{
    assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), t.buffer, CL_TRUE,
                                          t.offset * sizeof(float), n * sizeof(float), data, 0,
                                          NULL, NULL),
                     CL_SUCCESS);
}

/* A float32's bits and back; malloc that asserts; buffers of any element type in bytes. */
static inline uint32_t f2u(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float u2f(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static inline void buf_write(clopt_ctx *ctx, cl_mem m, size_t off, size_t bytes, const void *data)
{
    assert_int_equal(clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, off, bytes, data,
                                          0, NULL, NULL),
                     CL_SUCCESS);
}

static inline void buf_read(clopt_ctx *ctx, cl_mem m, size_t off, size_t bytes, void *out)
{
    assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, off, bytes, out, 0,
                                         NULL, NULL),
                     CL_SUCCESS);
}

/* A new buffer of `bytes`, filled from data unless it is NULL. */
static inline cl_mem buf_new(clopt_ctx *ctx, size_t bytes, const void *data)
{
    cl_int err;
    cl_mem m = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE, bytes, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    if (data)
        buf_write(ctx, m, 0, bytes, data);
    return m;
}

static inline void read_at(clopt_ctx *ctx, clopt_tensor t, float *out, size_t n)
{
    assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), t.buffer, CL_TRUE,
                                         t.offset * sizeof(float), n * sizeof(float), out, 0,
                                         NULL, NULL),
                     CL_SUCCESS);
}

/* Variant i of the element-wise rules (0 .. 13; 0 past the last) for the storage tests:
   each rule with the options that reach its kernel's branches and learning rates that move
   16-bit weights; hp is validated. */
static inline int elementwise_variant(int i, clopt_rule *rule, clopt_hparams *hp,
                                      const char **label)
{
    static const struct {
        clopt_rule rule;
        const char *label;
    } rules[] = {
        {CLOPT_SGD, "sgd nesterov"}, {CLOPT_ADAM, "adam amsgrad"}, {CLOPT_ADAMW, "adamw"},
        {CLOPT_ADAGRAD, "adagrad"},  {CLOPT_ADADELTA, "adadelta"},  {CLOPT_RMSPROP, "rmsprop c+m"},
        {CLOPT_ADAMAX, "adamax"},    {CLOPT_NADAM, "nadam"},        {CLOPT_RADAM, "radam"},
        {CLOPT_ADAMOD, "adamod"},    {CLOPT_DIFFGRAD, "diffgrad"},  {CLOPT_LION, "lion"},
        {CLOPT_SOPHIA, "sophia"},    {CLOPT_RANGER, "ranger"},
    };
    if (i >= (int)(sizeof rules / sizeof rules[0]))
        return 0;
    *rule = rules[i].rule;
    *label = rules[i].label;
    assert_int_equal(clopt_hparams_default(*rule, hp), CLOPT_SUCCESS);
    hp->lr = 0.01;
    switch (*rule) {
    case CLOPT_SGD:
        hp->lr = 0.05, hp->momentum = 0.9, hp->nesterov = 1, hp->weight_decay = 0.01;
        break;
    case CLOPT_ADAM:
        hp->amsgrad = 1, hp->weight_decay = 0.01;
        break;
    case CLOPT_ADAMW:
        hp->weight_decay = 0.1, hp->maximize = 1;
        break;
    case CLOPT_ADAGRAD:
        hp->lr = 0.05, hp->lr_decay = 0.01, hp->weight_decay = 0.01;
        hp->initial_accumulator_value = 0.1;
        break;
    case CLOPT_ADADELTA:
        hp->lr = 1.0, hp->weight_decay = 0.01;
        break;
    case CLOPT_RMSPROP:
        hp->momentum = 0.9, hp->centered = 1, hp->weight_decay = 0.01;
        break;
    case CLOPT_NADAM:
    case CLOPT_ADAMOD:
        hp->weight_decay = 0.01;
        break;
    case CLOPT_LION:
        hp->lr = 0.005, hp->weight_decay = 0.1;
        break;
    case CLOPT_RANGER: /* GC on by default: gc_rows 0 takes the tensor as 1-D */
        hp->weight_decay = 0.01;
        break;
    default:
        break;
    }
    const char *why = "";
    assert_int_equal(clopt_hparams_validate(*rule, hp, &why), CLOPT_SUCCESS);
    return 1;
}

/* ---- bad input changes nothing ----------------------------------------------------------
 * Buffers registered with their first contents; after a refused call every one still holds
 * them. The caller releases bufs and frees snap. */
typedef struct bad_env {
    clopt_ctx *ctx;
    cl_mem bufs[16];
    unsigned char *snap[16];
    size_t sizes[16];
    size_t nbufs;
} bad_env;

/* A buffer of `bytes` holding init (kept as its snapshot). */
static inline cl_mem bad_env_buf(bad_env *e, size_t bytes, unsigned char *init)
{
    assert_true(e->nbufs < 16);
    cl_mem m = buf_new(e->ctx, bytes, init);
    e->bufs[e->nbufs] = m, e->snap[e->nbufs] = init, e->sizes[e->nbufs] = bytes;
    e->nbufs++;
    return m;
}

static inline void bad_env_check(bad_env *e, const char *what)
{
    assert_int_equal(clFinish(clopt_ctx_cl_queue(e->ctx)), CL_SUCCESS);
    for (size_t b = 0; b < e->nbufs; b++) {
        unsigned char *now = (unsigned char *)xmalloc(e->sizes[b]);
        buf_read(e->ctx, e->bufs[b], 0, e->sizes[b], now);
        if (memcmp(now, e->snap[b], e->sizes[b]) != 0)
            print_error("%s: buffer %zu changed\n", what, b);
        assert_memory_equal(now, e->snap[b], e->sizes[b]);
        free(now);
    }
}

/* clopt_enqueue_step at step t refused with `want` and a message, nothing changed. */
static inline void bad_env_expect_step(bad_env *e, clopt_rule rule, const clopt_hparams *hp,
                                       const clopt_step_args *a, size_t n, uint64_t t,
                                       clopt_status want, const char *what)
{
    const clopt_status s = clopt_enqueue_step(e->ctx, NULL, rule, hp, a, n, t, 0, NULL, NULL);
    if (s != want)
        print_error("%s: got %s (%s), want %s\n", what, clopt_status_name(s),
                    clopt_ctx_last_error(e->ctx), clopt_status_name(want));
    assert_int_equal(s, want);
    assert_true(strlen(clopt_ctx_last_error(e->ctx)) > 0);
    bad_env_check(e, what);
}

#endif
