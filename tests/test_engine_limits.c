/* SPDX-License-Identifier: MIT */
/*
 * test_engine (continued): the optimizer on a device with small limits, watched through
 * tests/clshim: 8-bit blocks and reductions refused before anything is enqueued when a kernel
 * runs fewer work-items per group than they need, element-wise launches that halve their
 * local size, a range group's fills of the engine's own state under injected faults, and
 * fills in pieces of at most 1 GiB.
 */
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

#include "clopt.h"
#include "clshim.h"
#include "fixture.h"
#include "ref.h"
#include "test_engine.h"

/* A new context whose element-wise tuning (*t, the rest the device's) is vw floats per
   vector, ipw vectors per work-item and work-groups of wg (0: the runtime's). */
static clopt_ctx *ctx_with_tuning(clopt_tuning *t, unsigned vw, unsigned ipw, size_t wg)
{
    clopt_ctx *c;
    assert_int_equal(clopt_ctx_create(&c), CLOPT_SUCCESS);
    assert_int_equal(clopt_ctx_get_tuning(c, t), CLOPT_SUCCESS);
    t->vector_width = vw, t->items_per_work_item = ipw, t->work_group_size = wg;
    assert_int_equal(clopt_ctx_set_tuning(c, t), CLOPT_SUCCESS);
    return c;
}

/* ---- (f): 8-bit state in work-groups on a device with small work-groups ---------------- */

/* n parameters (normal) and gradients (0.1 x normal) drawn from seed into p0 and g,
   uploaded to *pb and *gb and registered as the one tensor of a new optimizer of rule under
   hp in c. */
static clopt_optimizer *one_tensor_opt(clopt_ctx *c, clopt_rule rule, const clopt_hparams *hp,
                                       float *p0, float *g, size_t n, uint64_t seed,
                                       cl_mem *pb, cl_mem *gb)
{
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(c, rule, hp, &opt), CLOPT_SUCCESS);
    for (size_t i = 0; i < n; i++)
        p0[i] = (float)ref_normal(&seed), g[i] = (float)(0.1 * ref_normal(&seed));
    *pb = upload(c, p0, n), *gb = upload(c, g, n);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){*pb, 0}, d.grad = (clopt_tensor){*gb, 0}, d.shape[0] = n;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    return opt;
}

/* With the shim capping every kernel at 128 work-items per group, a step of opt is refused
   with CLOPT_ERR_UNSUPPORTED (the message containing `why`) before anything is enqueued, and
   θ (n floats at pb, p0 before the step) and the step count are as they were; p1 is room
   for n floats. The cap stays on (capped_step lifts it). */
static void expect_refused_step(clopt_ctx *c, clopt_optimizer *opt, const char *why, cl_mem pb,
                                const float *p0, float *p1, size_t n)
{
    clshim_reset();
    clshim_cap_work_group(128);
    clshim_enable(1);
    const clopt_status s = clopt_optimizer_step(opt, NULL);
    const uint64_t enqueued =
        clshim_count("clEnqueueNDRangeKernel") + clshim_count("clEnqueueWriteBuffer");
    clshim_enable(0);
    assert_int_equal(s, CLOPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(clopt_ctx_last_error(c), why));
    assert_int_equal(enqueued, 0);
    assert_int_equal(clopt_optimizer_step_count(opt), 0);
    read_at(c, (clopt_tensor){pb, 0}, p1, n);
    assert_memory_equal(p0, p1, n * sizeof *p0);
}

/* The same optimizer steps once the tuning (t, set into c) fits under the cap: the count
   advances and θ moves. Lifts the cap. */
static void capped_step(clopt_ctx *c, const clopt_tuning *t, clopt_optimizer *opt, cl_mem pb,
                        const float *p0, float *p1, size_t n)
{
    assert_int_equal(clopt_ctx_set_tuning(c, t), CLOPT_SUCCESS);
    clshim_enable(1);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    clshim_enable(0);
    clshim_cap_work_group(0);
    assert_int_equal(clopt_optimizer_step_count(opt), 1);
    read_at(c, (clopt_tensor){pb, 0}, p1, n);
    size_t moved = 0;
    for (size_t i = 0; i < n; i++)
        moved += p1[i] != p0[i];
    assert_true(moved > n * 9 / 10);
}

/* With one vector per work-item (a GPU's tuning) a block of 256 is a work-group of 256 / VW
   work-items. Where the update kernel cannot run that many per group (the shim caps
   CL_KERNEL_WORK_GROUP_SIZE at 128), a step with VW 1 (256 per group) is refused with
   CLOPT_ERR_UNSUPPORTED before anything is enqueued and changes nothing; with VW 2 (128)
   the same optimizer steps. */
void test_q8_group_too_small(void **state)
{
    (void)state;
    enum { NQ = 5000 };
    clopt_tuning t;
    clopt_ctx *c = ctx_with_tuning(&t, 1, 1, 0);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    hp.state_dtype = CLOPT_DTYPE_U8;
    static float p0[NQ], g[NQ], p1[NQ];
    cl_mem pb, gb;
    clopt_optimizer *opt = one_tensor_opt(c, CLOPT_ADAMW, &hp, p0, g, NQ, 5, &pb, &gb);
    /* the state as the checkpoint's bytes (codes, absmaxes, step counts) */
    size_t ck = 0;
    assert_int_equal(clopt_optimizer_state_size(opt, NULL, &ck), CLOPT_SUCCESS);
    unsigned char *ck0 = malloc(ck), *ck1 = malloc(ck);
    assert_non_null(ck0), assert_non_null(ck1);
    assert_int_equal(clopt_optimizer_save_to(opt, NULL, ck0, ck, NULL), CLOPT_SUCCESS);
    expect_refused_step(c, opt, "a block of 256 needs 256", pb, p0, p1, NQ);
    assert_int_equal(clopt_optimizer_save_to(opt, NULL, ck1, ck, NULL), CLOPT_SUCCESS);
    assert_memory_equal(ck0, ck1, ck);
    free(ck0), free(ck1);
    t.vector_width = 2; /* 128 work-items per block fit */
    capped_step(c, &t, opt, pb, p0, p1, NQ);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
    clopt_ctx_destroy(c);
}

/* A range group over the engine's own m and v (init_state 1: filled with the rule's initial
   values) registered with a fault injected at every OpenCL call site in turn: a failed
   registration adds no group and leaves the engine's m and v as they were (they were filled
   before the chunk table and the scratch buffer were made), unless the fills themselves or
   the final clFinish failed (enqueued fills cannot be taken back); the one that succeeds
   fills them (AdamW: zeros; Adagrad: its initial accumulator). */
void test_range_group_engine_state_faults(void **state)
{
    fixture *f = *state;
    enum { NT = 3, N = 700 };
    const size_t off[NT + 1] = {0, 100, 350, N};
    static float m0[N], v0[N], x[N];
    for (size_t i = 0; i < N; i++)
        m0[i] = 1.0f + (float)i, v0[i] = -2.0f - (float)i;
    cl_mem P = upload(f->ctx, m0, N), G = upload(f->ctx, v0, N);
    cl_mem M = upload(f->ctx, m0, N), V = upload(f->ctx, v0, N);
    clopt_param_desc d[NT];
    for (size_t i = 0; i < NT; i++) {
        clopt_param_desc_init(&d[i]);
        d[i].param = (clopt_tensor){P, off[i]}, d[i].grad = (clopt_tensor){G, off[i]};
        d[i].shape[0] = off[i + 1] - off[i];
    }
    const clopt_rule rules[2] = {CLOPT_ADAMW, CLOPT_ADAGRAD};
    for (int r = 0; r < 2; r++) {
        clopt_hparams hp;
        clopt_hparams_default(rules[r], &hp);
        hp.initial_accumulator_value = 0.25;
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, rules[r], &hp, &opt), CLOPT_SUCCESS);
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = NT, rg.tensors = d;
        rg.state[0] = M;
        if (rules[r] == CLOPT_ADAMW)
            rg.state[1] = V;
        clopt_status s = CLOPT_ERR_OPENCL_BASE;
        uint64_t faults = 0;
        for (uint64_t n = 1; s != CLOPT_SUCCESS; n++) {
            write_at(f->ctx, (clopt_tensor){M, 0}, m0, N);
            write_at(f->ctx, (clopt_tensor){V, 0}, v0, N);
            clshim_reset();
            clshim_enable(1);
            clshim_fail_nth(n, CL_OUT_OF_RESOURCES);
            s = clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL);
            const int fired = clshim_fault_fired();
            char site[64];
            snprintf(site, sizeof site, "%s", clshim_fault_site());
            clshim_fail_nth(0, CL_SUCCESS);
            clshim_enable(0);
            if (s == CLOPT_SUCCESS)
                break;
            assert_true(fired);
            faults++;
            assert_int_equal(clopt_optimizer_group_count(opt), 1);
            assert_int_equal(clopt_optimizer_param_count(opt), 0);
            if (!strcmp(site, "clEnqueueFillBuffer") || !strcmp(site, "clFinish"))
                continue;
            read_at(f->ctx, (clopt_tensor){M, 0}, x, N);
            int changed = memcmp(x, m0, sizeof x) != 0;
            read_at(f->ctx, (clopt_tensor){V, 0}, x, N);
            changed |= memcmp(x, v0, sizeof x) != 0;
            if (changed)
                fail_msg("%s: a registration failed at %s (call %llu) changed the engine's "
                         "state",
                         clopt_rule_name(rules[r]), site, (unsigned long long)n);
        }
        assert_true(faults > 3);
        assert_int_equal(clopt_optimizer_param_count(opt), NT);
        read_at(f->ctx, (clopt_tensor){M, 0}, x, N);
        const float want = rules[r] == CLOPT_ADAGRAD ? 0.25f : 0.0f;
        for (size_t i = 0; i < N; i++)
            assert_true(x[i] == want);
        clopt_optimizer_destroy(opt);
    }
    clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(M), clReleaseMemObject(V);
}

/* A GPU-like tuning (256 work-items per group) on a device whose kernels run at most 100
   (the shim caps CL_KERNEL_WORK_GROUP_SIZE): the element-wise launches take 64 work-items
   per group instead of leaving the size to the runtime (which may pick 1 for an odd global
   size): as many launches without a local size as uncapped (the step's one-work-item
   launches), and the steps equal uncapped ones bit for bit. */
void test_work_group_fallback(void **state)
{
    (void)state;
    enum { N0 = 1001, N1 = 4099 };
    clopt_tuning t;
    clopt_ctx *c = ctx_with_tuning(&t, 4, 1, 256);
    static float p0[N0 + N1], g[N0 + N1], out[2][N0 + N1];
    uint64_t unsized[2];
    uint64_t seed = 11;
    for (size_t i = 0; i < N0 + N1; i++)
        p0[i] = (float)ref_normal(&seed), g[i] = (float)(0.1 * ref_normal(&seed));
    for (int capped = 0; capped < 2; capped++) {
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_ADAMW, &hp);
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(c, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
        cl_mem pb = upload(c, p0, N0 + N1), gb = upload(c, g, N0 + N1);
        const size_t off[2] = {0, N0}, len[2] = {N0, N1};
        for (size_t k = 0; k < 2; k++) {
            clopt_param_desc d;
            clopt_param_desc_init(&d);
            d.param = (clopt_tensor){pb, off[k]}, d.grad = (clopt_tensor){gb, off[k]};
            d.shape[0] = len[k];
            assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
        }
        clshim_reset();
        clshim_cap_work_group(capped ? 100 : 0);
        clshim_enable(1);
        for (int s = 0; s < 3; s++)
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        const uint64_t launches = clshim_count("clEnqueueNDRangeKernel");
        unsized[capped] = clshim_null_local();
        clshim_enable(0);
        clshim_cap_work_group(0);
        assert_true(launches >= 6 + unsized[capped]);
        read_at(c, (clopt_tensor){pb, 0}, out[capped], N0 + N1);
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(pb), clReleaseMemObject(gb);
    }
    if (unsized[1] != unsized[0])
        fail_msg("capped: %llu launches left the work-group size to the runtime, uncapped %llu",
                 (unsigned long long)unsized[1], (unsigned long long)unsized[0]);
    assert_memory_equal(out[0], out[1], sizeof out[0]);
    clopt_ctx_destroy(c);
}

/* Reductions of 256 work-items per group (reduce_local 256, a GPU's) on a device whose
   kernels run at most 128 (the shim's cap): a LAMB step (its first pass reduces) is refused
   with CLOPT_ERR_UNSUPPORTED naming reduce_local, before anything is enqueued, and changes
   nothing; reduce_local 128 then steps. */
void test_reduce_local_too_large(void **state)
{
    (void)state;
    enum { N = 3000 };
    clopt_ctx *c;
    assert_int_equal(clopt_ctx_create(&c), CLOPT_SUCCESS);
    clopt_tuning t;
    assert_int_equal(clopt_ctx_get_tuning(c, &t), CLOPT_SUCCESS);
    t.reduce_local = 256;
    assert_int_equal(clopt_ctx_set_tuning(c, &t), CLOPT_SUCCESS);
    static float p0[N], g[N], p1[N];
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_LAMB, &hp);
    cl_mem pb, gb;
    clopt_optimizer *opt = one_tensor_opt(c, CLOPT_LAMB, &hp, p0, g, N, 13, &pb, &gb);
    expect_refused_step(c, opt, "reduce_local to 128 or less", pb, p0, p1, N);
    t.reduce_local = 128;
    capped_step(c, &t, opt, pb, p0, p1, N);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
    clopt_ctx_destroy(c);
}

/* The op level's state allocation on a context whose queue is out of order (an engine's, via
   clopt_ctx_create_from): the fills are followed by a barrier, so that what the engine
   enqueues next on that queue sees the initial values (an out-of-order queue ordered nothing
   and no event was handed out); an in-order queue needs none. */
void test_alloc_state_out_of_order(void **state)
{
    (void)state;
    clopt_ctx *base;
    assert_int_equal(clopt_ctx_create(&base), CLOPT_SUCCESS);
    cl_context cc = clopt_ctx_cl_context(base);
    cl_device_id dev = clopt_ctx_cl_device(base);
    cl_int err = CL_SUCCESS;
    cl_command_queue q =
        clCreateCommandQueue(cc, dev, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    if (!q) { /* a device without out-of-order queues: nothing to order */
        clopt_ctx_destroy(base);
        skip();
    }
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAGRAD, &hp);
    hp.initial_accumulator_value = 0.5;
    for (int ooo = 0; ooo < 2; ooo++) {
        clopt_ctx *c;
        assert_int_equal(clopt_ctx_create_from(cc, dev, ooo ? q : NULL, &c), CLOPT_SUCCESS);
        clopt_tensor st[CLOPT_MAX_STATE];
        size_t count = 0;
        clshim_reset();
        clshim_enable(1);
        assert_int_equal(clopt_alloc_state(c, CLOPT_ADAGRAD, &hp, 1000, st, &count),
                         CLOPT_SUCCESS);
        clshim_enable(0);
        assert_int_equal(count, 1);
        assert_int_equal(clshim_count("clEnqueueBarrierWithWaitList"), ooo ? 1 : 0);
        float x[1000];
        assert_int_equal(clEnqueueReadBuffer(clopt_ctx_cl_queue(c), st[0].buffer, CL_TRUE, 0,
                                             sizeof x, x, 0, NULL, NULL),
                         CL_SUCCESS);
        for (size_t i = 0; i < 1000; i++)
            assert_true(x[i] == 0.5f);
        clReleaseMemObject(st[0].buffer);
        clopt_ctx_destroy(c);
    }
    clReleaseCommandQueue(q);
    clopt_ctx_destroy(base);
}


/* ---- (g): fills in pieces of at most 1 GiB ------------------------------------------- */

/* NVIDIA's OpenCL hangs or fails on a clEnqueueFillBuffer of 2 GiB or more: every fill of
   the library goes in pieces of at most 2^30 bytes. zero_grad of a gradient of 2^28 + 5
   floats (1 GiB + 20 bytes, non-zero at both ends) takes two fills, the largest 2^30 bytes,
   and zeroes it all (ends read back). Skipped under CLOPT_TEST_SMALL (2 GiB of buffers under
   the sanitizers and on Oclgrind). */
void test_fill_pieces(void **state)
{
    fixture *f = *state;
    if (getenv("CLOPT_TEST_SMALL"))
        skip();
    const size_t n = ((size_t)1 << 28) + 5;
    cl_int err;
    cl_context c = clopt_ctx_cl_context(f->ctx);
    cl_mem pb = clCreateBuffer(c, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem gb = clCreateBuffer(c, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    const float ends[3] = {1.5f, -2.0f, 3.0f};
    write_at(f->ctx, (clopt_tensor){gb, 0}, ends, 3);
    write_at(f->ctx, (clopt_tensor){gb, n - 3}, ends, 3);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb, 0},
                                               (clopt_tensor){gb, 0}, n, NULL, NULL),
                     CLOPT_SUCCESS);
    clshim_reset();
    clshim_enable(1);
    const clopt_status s = clopt_optimizer_zero_grad(opt);
    clshim_enable(0);
    assert_int_equal(s, CLOPT_SUCCESS);
    assert_int_equal(clshim_count("clEnqueueFillBuffer"), 2);
    assert_int_equal(clshim_max_fill(), (uint64_t)1 << 30);
    float out[6];
    read_at(f->ctx, (clopt_tensor){gb, 0}, out, 3);
    read_at(f->ctx, (clopt_tensor){gb, n - 3}, out + 3, 3);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == 0.0f);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
}

/* ---- (h): launches stay below 2^31 work-items --------------------------------------------- */

/* NVIDIA's OpenCL aliases global ids from 2^31 (elements updated twice, others never) and
   AMD's refuses 2^32: a launch that would take more work-items is refused with
   CLOPT_ERR_UNSUPPORTED before anything is enqueued. A float16 tensor of 2^31 elements (4
   GiB per buffer, never touched) under a tuning of one element per work-item: the
   optimizer's step and the op-level step are refused, no kernel launched, the step count
   unchanged; with 4 elements per work-item both are accepted (checked without running:
   the op level's launch is the only one, so its acceptance is enough). Skipped under
   CLOPT_TEST_SMALL and where a buffer cannot hold 4 GiB. */
void test_launch_items_limit(void **state)
{
    (void)state;
    if (getenv("CLOPT_TEST_SMALL"))
        skip();
    clopt_tuning t;
    clopt_ctx *c = ctx_with_tuning(&t, 1, 1, 64);
    const size_t n = (size_t)1 << 31;
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(clopt_ctx_cl_device(c), CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc,
                    &max_alloc, NULL);
    if (max_alloc < 2 * (cl_ulong)n) {
        clopt_ctx_destroy(c);
        skip();
    }
    cl_int err;
    cl_mem pb = clCreateBuffer(clopt_ctx_cl_context(c), CL_MEM_READ_WRITE, 2 * n, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem gb = clCreateBuffer(clopt_ctx_cl_context(c), CL_MEM_READ_WRITE, 2 * n, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(c, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){pb, 0}, d.grad = (clopt_tensor){gb, 0}, d.shape[0] = n;
    d.param_dtype = d.grad_dtype = CLOPT_DTYPE_F16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = d.param, a.grad = d.grad;
    a.param_dtype = a.grad_dtype = CLOPT_DTYPE_F16;
    clshim_reset();
    clshim_enable(1);
    const clopt_status s1 = clopt_optimizer_step(opt, NULL);
    const clopt_status s2 = clopt_enqueue_step(c, NULL, CLOPT_SGD, &hp, &a, n, 1, 0, NULL, NULL);
    const uint64_t launched = clshim_count("clEnqueueNDRangeKernel");
    clshim_enable(0);
    assert_int_equal(s1, CLOPT_ERR_UNSUPPORTED);
    assert_int_equal(s2, CLOPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(clopt_ctx_last_error(c), "2^31"));
    assert_int_equal(launched, 0);
    assert_int_equal(clopt_optimizer_step_count(opt), 0);
    /* 4 elements per work-item: 2^29 work-items, accepted; the launch waits for a user event
       that then fails, which terminates it unrun (8 GiB untouched) */
    t.vector_width = 4;
    assert_int_equal(clopt_ctx_set_tuning(c, &t), CLOPT_SUCCESS);
    cl_event gate = clCreateUserEvent(clopt_ctx_cl_context(c), &err);
    assert_int_equal(err, CL_SUCCESS);
    clshim_reset();
    clshim_enable(1);
    clopt_status s3 = clopt_enqueue_step(c, NULL, CLOPT_SGD, &hp, &a, n, 1, 1, &gate, NULL);
    clshim_enable(0);
    clSetUserEventStatus(gate, CL_INVALID_OPERATION);
    assert_int_equal(s3, CLOPT_SUCCESS);
    assert_int_equal(clshim_count("clEnqueueNDRangeKernel"), 1);
    clFinish(clopt_ctx_cl_queue(c));
    clReleaseEvent(gate);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
    clopt_ctx_destroy(c);
}

/* ---- (i): every launch names its work-group size ------------------------------------------ */

/* Without a local size a driver may run a launch of a prime global size in work-groups of
   1 (a GPU then idles 31 of 32 lanes): every launch names one. Adafactor on a factored
   31 x 37 tensor with clipping (row and column statistics, their finish over 31 + 37
   items, the verdict), and clopt_enqueue_randn over 4 * 7 + 1 values (8 items): no launch
   leaves it to the runtime, and the rounded-up launches stay in bounds (randn's 29 values
   are the first of a 32-value call, and the 3 floats after them untouched). */
void test_launches_name_local(void **state)
{
    fixture *f = *state;
    enum { R = 31, C = 37 };
    float p0[R * C], g[R * C];
    uint64_t seed = 7;
    for (size_t i = 0; i < R * C; i++)
        p0[i] = (float)ref_normal(&seed), g[i] = (float)(0.1 * ref_normal(&seed));
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAFACTOR, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAFACTOR, &hp, &opt), CLOPT_SUCCESS);
    cl_mem pb = upload(f->ctx, p0, R * C), gb = upload(f->ctx, g, R * C);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){pb, 0}, d.grad = (clopt_tensor){gb, 0};
    d.ndim = 2, d.shape[0] = R, d.shape[1] = C;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_clip(opt, 1.0), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_prepare(opt), CLOPT_SUCCESS);
    float z[32], z29[32];
    for (int i = 0; i < 32; i++)
        z[i] = 1234.0f;
    cl_mem zb = upload(f->ctx, z, 32);
    clshim_reset();
    clshim_enable(1);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_enqueue_randn(f->ctx, NULL, (clopt_tensor){zb, 0}, 29, 5, 0, 0, NULL,
                                         NULL),
                     CLOPT_SUCCESS);
    const uint64_t unsized = clshim_null_local(), launches = clshim_count("clEnqueueNDRangeKernel");
    clshim_enable(0);
    assert_true(launches >= 5);
    if (unsized)
        fail_msg("%llu of %llu launches left the work-group size to the runtime",
                 (unsigned long long)unsized, (unsigned long long)launches);
    read_at(f->ctx, (clopt_tensor){zb, 0}, z29, 32);
    for (int i = 29; i < 32; i++)
        assert_true(z29[i] == 1234.0f);
    assert_int_equal(clopt_enqueue_randn(f->ctx, NULL, (clopt_tensor){zb, 0}, 32, 5, 0, 0, NULL,
                                         NULL),
                     CLOPT_SUCCESS);
    read_at(f->ctx, (clopt_tensor){zb, 0}, z, 32);
    assert_memory_equal(z, z29, 29 * sizeof *z);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb), clReleaseMemObject(zb);
}

/* ---- (j): an F32 master after a failed first step ----------------------------------------- */

/* θ[0] (bf16 in ctx) after: AdamW (lr 0.1, no decay) over 64 bf16 weights of 1.0 with an F32
   master and gradients 0.5; a first step whose fallible call fail_at fails (0: none, and no
   first step); the engine writing its weights, 2.0 (allowed: the tensor has not stepped);
   one clean step. *fired: the fault fired. */
static float master_after_failed_step(clopt_ctx *c, uint64_t fail_at, int *fired)
{
    enum { N = 64 };
    cl_int err;
    cl_command_queue q = clopt_ctx_cl_queue(c);
    cl_mem p = clCreateBuffer(clopt_ctx_cl_context(c), CL_MEM_READ_WRITE, 2 * N, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    float half[N];
    for (int i = 0; i < N; i++)
        half[i] = 0.5f;
    cl_mem g = upload(c, half, N);
    const cl_ushort one = 0x3F80, two = 0x4000; /* bf16 1.0, 2.0 */
    assert_int_equal(clEnqueueFillBuffer(q, p, &one, 2, 0, 2 * N, 0, NULL, NULL), CL_SUCCESS);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    hp.lr = 0.1, hp.weight_decay = 0, hp.master = CLOPT_MASTER_F32;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(c, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0}, d.grad = (clopt_tensor){g, 0}, d.shape[0] = N;
    d.param_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_prepare(opt), CLOPT_SUCCESS);
    *fired = 0;
    if (fail_at) {
        clshim_reset();
        clshim_fail_nth(fail_at, CL_OUT_OF_RESOURCES);
        clshim_enable(1);
        const clopt_status s = clopt_optimizer_step(opt, NULL);
        clshim_enable(0);
        *fired = clshim_fault_fired();
        clshim_fail_nth(0, CL_SUCCESS);
        assert_true(*fired ? s != CLOPT_STEP_SKIPPED : s == CLOPT_SUCCESS);
        if (*fired && s == CLOPT_SUCCESS) /* a fault the step absorbed: not this case */
            *fired = 2;
    }
    assert_int_equal(clFinish(q), CL_SUCCESS);
    assert_int_equal(clEnqueueFillBuffer(q, p, &two, 2, 0, 2 * N, 0, NULL, NULL), CL_SUCCESS);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    cl_ushort w;
    assert_int_equal(clEnqueueReadBuffer(q, p, CL_TRUE, 0, 2, &w, 0, NULL, NULL), CL_SUCCESS);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p), clReleaseMemObject(g);
    const uint32_t bits = (uint32_t)w << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* A first step that fails at any of its OpenCL calls leaves a 16-bit tensor's F32 master to
   be taken from θ at the next step: weights the engine writes in between are the ones the
   next step updates (1.898 from 2.0 as without the failed call; it used to update the θ of
   the failed call, 0.898, from any failure after its copy was enqueued). */
void test_master_after_failed_step(void **state)
{
    fixture *f = *state;
    int fired = 0;
    const float want = master_after_failed_step(f->ctx, 0, &fired);
    assert_true(want > 1.8f && want < 2.0f);
    size_t failures = 0;
    for (uint64_t n = 1; n < 400; n++) {
        const float got = master_after_failed_step(f->ctx, n, &fired);
        if (!fired)
            break;
        failures += fired == 1;
        if (fired == 1 && got != want)
            fail_msg("a first step failing at its call %llu: θ after the next step %.6g, "
                     "want %.6g",
                     (unsigned long long)n, (double)got, (double)want);
    }
    assert_true(failures >= 10);
}

/* Schedule-Free's eval switch before any step has nothing to launch: with an event it
   enqueues a marker, and when that fails the optimizer stays in train mode (it switched
   first, then failed: the next step was refused as in eval mode). */
void test_mode_switch_marker_fails(void **state)
{
    fixture *f = *state;
    float p0[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {0};
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SCHEDULE_FREE_ADAMW, &hp, &opt),
                     CLOPT_SUCCESS);
    cl_mem pb = upload(f->ctx, p0, 8), gb = upload(f->ctx, g, 8);
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){pb, 0},
                                               (clopt_tensor){gb, 0}, 8, NULL, NULL),
                     CLOPT_SUCCESS);
    cl_event ev = NULL;
    uint64_t n = 1;
    for (; n < 50; n++) {
        clshim_reset();
        clshim_fail_nth(n, CL_OUT_OF_RESOURCES);
        clshim_enable(1);
        const clopt_status s = clopt_optimizer_set_mode_on(opt, 0, NULL, 0, NULL, &ev);
        clshim_enable(0);
        const int fired = clshim_fault_fired();
        clshim_fail_nth(0, CL_SUCCESS);
        if (!fired) {
            assert_int_equal(s, CLOPT_SUCCESS);
            break;
        }
        assert_true(s != CLOPT_SUCCESS);
        assert_null(ev);
        assert_int_equal(clopt_optimizer_training(opt), 1);
    }
    assert_true(n > 1); /* the marker failed at least once */
    assert_int_equal(clopt_optimizer_training(opt), 0);
    assert_non_null(ev);
    clReleaseEvent(ev);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
}

static cl_uint mem_refs(cl_mem m)
{
    cl_uint refs = 0;
    assert_int_equal(clGetMemObjectInfo(m, CL_MEM_REFERENCE_COUNT, sizeof refs, &refs, NULL),
                     CL_SUCCESS);
    return refs;
}

/* The optimizer holds a reference to every buffer the engine registers (torch's optimizer
   holds its parameters): a caller-owned tensor's θ and g, and a range group's θ, g and the
   engine's state buffers each gain one reference; the engine then releases its handles and
   the steps go on (Adam's first two steps from θ = 1 with g = 0.5: 0.999, 0.998). It used to
   keep bare handles: a step after the engine's release read freed objects (a crash on PoCL). */
void test_registered_buffers_held(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAM, &hp);
    float one[16], half[16];
    for (int i = 0; i < 16; i++)
        one[i] = 1.0f, half[i] = 0.5f;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    cl_mem p = upload(f->ctx, one, 16), g = upload(f->ctx, half, 16);
    cl_mem fp = upload(f->ctx, one, 16), fg = upload(f->ctx, half, 16);
    cl_mem fs[2] = {upload(f->ctx, NULL, 16), upload(f->ctx, NULL, 16)};
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0}, d.grad = (clopt_tensor){g, 0}, d.ndim = 1, d.shape[0] = 16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    assert_int_equal(mem_refs(p), 2);
    assert_int_equal(mem_refs(g), 2);
    clopt_param_desc r[2]; /* one flat θ, g and m, v of the engine's: two ranges of 8 */
    for (size_t k = 0; k < 2; k++) {
        clopt_param_desc_init(&r[k]);
        r[k].param = (clopt_tensor){fp, 8 * k}, r[k].grad = (clopt_tensor){fg, 8 * k};
        r[k].ndim = 1, r[k].shape[0] = 8;
    }
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = 2, rg.tensors = r, rg.state[0] = fs[0], rg.state[1] = fs[1];
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    cl_mem mine[] = {p, g, fp, fg, fs[0], fs[1]};
    for (size_t i = 2; i < 6; i++)
        assert_int_equal(mem_refs(mine[i]), 2);
    for (size_t i = 0; i < 6; i++) /* the engine lets go of its handles */
        clReleaseMemObject(mine[i]);
    for (int t = 1; t <= 2; t++) {
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        for (size_t k = 0; k < 3; k++) {
            clopt_tensor pv;
            assert_int_equal(clopt_optimizer_param_view(opt, k, &pv, NULL, NULL, NULL),
                             CLOPT_SUCCESS);
            float got[8];
            read_at(f->ctx, pv, got, 8);
            for (int i = 0; i < 8; i++)
                if (fabsf(got[i] - (1.0f - 0.001f * (float)t)) > 1e-6f)
                    fail_msg("step %d tensor %zu element %d: %.9g", t, k, i, (double)got[i]);
        }
    }
    clopt_optimizer_destroy(opt); /* releases the last references */
}
