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

#endif
