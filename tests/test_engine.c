/* SPDX-License-Identifier: MIT */
/*
 * test_engine: the optimizer as a training engine drives it (clopt_optimizer_step_on,
 * _prepare, _poll), watched through tests/clshim (an OpenCL interposer linked into this
 * executable, see clshim.h): no blocking call and no program build inside a step, AMP skips
 * decided on the device, steps that are atomic under injected OpenCL faults, no leaked
 * OpenCL object, and torch's per-tensor step counts. Results are checked against the double
 * references of tests/ref, with clip_grad_norm_'s coefficient max_norm/(norm+1e-6) clamped
 * to 1, the norm taken over all gradients after dividing by the loss scale.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
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
#include "ref.h"
#include "test_engine.h"

static void assert_close(const float *x, const double *ref, size_t n, double rtol, double atol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i] - ref[i]) <= atol + rtol * fabs(ref[i]))) {
            fprintf(stderr, "%s: [%zu] got %.9g want %.9g\n", what, i, (double)x[i], ref[i]);
            fail();
        }
}

/* ---- the shim itself ------------------------------------------------------------------- */

/* libclopt's OpenCL calls reach the wrappers of this executable: a context creation is
   counted, a fault injected into it fails it, and nothing it created is left behind. */
static void test_shim_interposes(void **state)
{
    (void)state;
    clshim_reset();
    clshim_enable(1);
    clopt_ctx *c = NULL;
    clopt_status s = clopt_ctx_create(&c);
    clshim_enable(0);
    assert_int_equal(s, CLOPT_SUCCESS);
    if (clshim_count("clCreateContext") != 1 || clshim_calls() == 0) {
        clshim_dump(stderr);
        fail_msg("libclopt's OpenCL calls do not reach the shim (is the test built with "
                 "ENABLE_EXPORTS?)");
    }
    clshim_enable(1);
    clopt_ctx_destroy(c);
    clshim_enable(0);
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        assert_int_equal(clshim_created((clshim_obj)k), clshim_released((clshim_obj)k));

    /* the first call of a context creation fails: the creation fails, nothing leaks */
    clshim_reset();
    clshim_enable(1);
    clshim_fail_nth(1, CL_OUT_OF_RESOURCES);
    s = clopt_ctx_create(&c);
    clshim_enable(0);
    assert_true(clshim_fault_fired());
    assert_true(s < 0);
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        assert_int_equal(clshim_created((clshim_obj)k), clshim_released((clshim_obj)k));

    /* the test's own calls are not counted while the shim is off */
    clshim_reset();
    cl_int err;
    cl_context cc = clCreateContext(NULL, 0, NULL, NULL, NULL, &err); /* fails: no device */
    (void)cc;
    assert_int_equal(clshim_count("clCreateContext"), 0);
    assert_int_equal(clshim_calls(), 0);
}

/* Every OpenCL function the library's sources (host, .c files) call is wrapped: a new call
   site the shim does not know would escape the blocking and fault checks below. */
static void test_shim_wraps_every_library_call(void **state)
{
    (void)state;
    DIR *d = opendir(CLOPT_HOST_SOURCE_DIR);
    assert_non_null(d);
    struct dirent *ent;
    size_t files = 0, names = 0;
    int missing = 0;
    while ((ent = readdir(d))) {
        size_t len = strlen(ent->d_name);
        if (len < 3 || strcmp(ent->d_name + len - 2, ".c"))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", CLOPT_HOST_SOURCE_DIR, ent->d_name);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        fseek(fp, 0, SEEK_END);
        long size = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        char *text = calloc((size_t)size + 1, 1);
        assert_int_equal(fread(text, 1, (size_t)size, fp), (size_t)size);
        fclose(fp);
        files++;
        for (char *p = text; (p = strstr(p, "cl")); p++) {
            if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
                continue;
            if (!(p[2] >= 'A' && p[2] <= 'Z'))
                continue;
            size_t k = 2;
            while (isalnum((unsigned char)p[k]))
                k++;
            if (p[k] != '(')
                continue;
            char name[64];
            if (k >= sizeof name)
                continue;
            memcpy(name, p, k);
            name[k] = 0;
            names++;
            if (!clshim_wraps(name)) {
                fprintf(stderr, "%s calls %s, which tests/clshim.c does not wrap\n",
                        ent->d_name, name);
                missing = 1;
            }
        }
        free(text);
    }
    closedir(d);
    assert_true(files > 0);
    assert_true(names > 0);
    assert_false(missing);
}

/* ---- an engine's model: AdamW, two caller-owned tensors and an arena group ------------ */

enum { NT = 5, NOWN = 2, STEPS = 20 };
static const size_t tn[NT] = {240, 77, 64, 33, 129}; /* tensor 0 is 12 x 20 */

typedef struct eng {
    clopt_ctx *ctx;
    clopt_optimizer *opt;
    clopt_hparams hp[2]; /* group 0: caller-owned tensors; group 1: the arena */
    cl_mem own_p[NOWN], own_g[NOWN];
    clopt_tensor pv[NT], gv[NT];
    /* the reference: parameters, states, steps applied per tensor */
    double *rp[NT], *rs[NT][CLOPT_MAX_STATE];
    uint64_t rstep[NT];
} eng;

static size_t tgroup(size_t k) { return k < NOWN ? 0 : 1; }

static size_t total_len(void)
{
    size_t s = 0;
    for (size_t k = 0; k < NT; k++)
        s += tn[k];
    return s;
}

/* amp: loss scale 1024; clip: max_norm 1 */
static void eng_build(eng *e, clopt_ctx *ctx, int amp, int clip)
{
    memset(e, 0, sizeof *e);
    e->ctx = ctx;
    clopt_hparams_default(CLOPT_ADAMW, &e->hp[0]);
    e->hp[0].lr = 0.01;
    e->hp[0].weight_decay = 0.02;
    e->hp[1] = e->hp[0];
    e->hp[1].lr = 0.005;
    e->hp[1].weight_decay = 0;
    e->hp[1].beta1 = 0.8;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAMW, &e->hp[0], &e->opt), CLOPT_SUCCESS);
    uint64_t seed = 4242;
    float buf[256];
    for (size_t k = 0; k < NT; k++) {
        e->rp[k] = malloc(tn[k] * sizeof(double));
        for (int j = 0; j < CLOPT_MAX_STATE; j++)
            e->rs[k][j] = calloc(tn[k], sizeof(double));
    }
    for (size_t k = 0; k < NOWN; k++) {
        for (size_t i = 0; i < tn[k]; i++)
            buf[i] = (float)ref_normal(&seed), e->rp[k][i] = buf[i];
        e->own_p[k] = upload(ctx, buf, tn[k]);
        e->own_g[k] = upload(ctx, NULL, tn[k]);
        clopt_param_desc d;
        memset(&d, 0, sizeof d);
        d.param = (clopt_tensor){e->own_p[k], 0};
        d.grad = (clopt_tensor){e->own_g[k], 0};
        d.ndim = k == 0 ? 2 : 1;
        d.shape[0] = k == 0 ? 12 : tn[k];
        d.shape[1] = 20;
        assert_int_equal(clopt_optimizer_add_param_desc(e->opt, 0, &d, NULL), CLOPT_SUCCESS);
    }
    clopt_param_desc shapes[NT - NOWN];
    memset(shapes, 0, sizeof shapes);
    for (size_t k = NOWN; k < NT; k++)
        shapes[k - NOWN].ndim = 1, shapes[k - NOWN].shape[0] = tn[k];
    size_t group, first;
    assert_int_equal(clopt_optimizer_add_arena_group(e->opt, &e->hp[1], NT - NOWN, shapes, &group,
                                                     &first),
                     CLOPT_SUCCESS);
    assert_int_equal(group, 1);
    assert_int_equal(first, NOWN);
    for (size_t k = 0; k < NT; k++)
        assert_int_equal(clopt_optimizer_param_view(e->opt, k, &e->pv[k], &e->gv[k], NULL, NULL),
                         CLOPT_SUCCESS);
    for (size_t k = NOWN; k < NT; k++) {
        for (size_t i = 0; i < tn[k]; i++)
            buf[i] = (float)ref_normal(&seed), e->rp[k][i] = buf[i];
        write_at(ctx, e->pv[k], buf, tn[k]);
    }
    if (amp)
        assert_int_equal(clopt_optimizer_set_grad_scale(e->opt, 1024), CLOPT_SUCCESS);
    if (clip)
        assert_int_equal(clopt_optimizer_set_grad_clip(e->opt, 1.0), CLOPT_SUCCESS);
}

static void eng_free(eng *e)
{
    clopt_optimizer_destroy(e->opt);
    for (size_t k = 0; k < NOWN; k++)
        clReleaseMemObject(e->own_p[k]), clReleaseMemObject(e->own_g[k]);
    for (size_t k = 0; k < NT; k++) {
        free(e->rp[k]);
        for (int j = 0; j < CLOPT_MAX_STATE; j++)
            free(e->rs[k][j]);
    }
}

/* The gradients of step call t, unscaled (float values, also as double) and multiplied by
   the loss scale 1024 (exact: a power of two). Every third step they are small (norm < 1:
   no clipping), the others large (norm ~ 4.7: clipped). */
static void grads_of(uint64_t t, float *scaled, double *plain, double loss_scale)
{
    double s = t % 3 == 0 ? 0.002 : 0.2;
    size_t at = 0;
    for (size_t k = 0; k < NT; k++) {
        uint64_t seed = 7777 + 1000 * t + k;
        for (size_t i = 0; i < tn[k]; i++, at++) {
            float g = (float)(s * ref_normal(&seed));
            plain[at] = g;
            scaled[at] = (float)(g * loss_scale);
        }
    }
}

/* One step of the reference over every tensor, with clipping (max_norm 1) when clip is set;
   a non-finite gradient skips the step entirely (AMP). Returns the norm. */
static double ref_apply(eng *e, const double *g, int clip)
{
    double sq = 0;
    for (size_t i = 0, n = total_len(); i < n; i++)
        sq += g[i] * g[i];
    double norm = sqrt(sq);
    if (!isfinite(norm))
        return norm;
    double coef = 1.0;
    if (clip) {
        coef = 1.0 / (norm + 1e-6);
        if (coef > 1)
            coef = 1;
    }
    size_t at = 0;
    for (size_t k = 0; k < NT; k++) {
        e->rstep[k]++;
        ref_step(CLOPT_ADAMW, &e->hp[tgroup(k)], e->rstep[k], tn[k], e->rp[k], g + at,
                 e->rs[k], NULL, NULL, 1.0 / coef);
        at += tn[k];
    }
    return norm;
}

/* Non-blocking writes of the gradients (the host array must live until the queue ran). */
static void write_grads_async(eng *e, cl_command_queue q, const float *scaled)
{
    size_t at = 0;
    for (size_t k = 0; k < NT; k++) {
        assert_int_equal(clEnqueueWriteBuffer(q, e->gv[k].buffer, CL_FALSE,
                                              e->gv[k].offset * sizeof(float),
                                              tn[k] * sizeof(float), scaled + at, 0, NULL, NULL),
                         CL_SUCCESS);
        at += tn[k];
    }
}

static void write_grads(eng *e, const float *scaled)
{
    size_t at = 0;
    for (size_t k = 0; k < NT; k++) {
        write_at(e->ctx, e->gv[k], scaled + at, tn[k]);
        at += tn[k];
    }
}

static void check_against_ref(eng *e, const char *what)
{
    float buf[256];
    char label[128];
    for (size_t k = 0; k < NT; k++) {
        read_at(e->ctx, e->pv[k], buf, tn[k]);
        snprintf(label, sizeof label, "%s: tensor %zu param", what, k);
        assert_close(buf, e->rp[k], tn[k], 2e-5, 1e-6, label);
        assert_int_equal(clopt_optimizer_state_count(e->opt, k), 2);
        for (size_t j = 0; j < 2; j++) {
            assert_int_equal(clopt_optimizer_read_state(e->opt, k, j, buf, tn[k]), CLOPT_SUCCESS);
            snprintf(label, sizeof label, "%s: tensor %zu state %zu", what, k, j);
            assert_close(buf, e->rs[k][j], tn[k], 1e-4, j ? 1e-12 : 1e-9, label);
        }
    }
}

/* Polls until the verdict of step call `want` reached the host (never blocking; bounded).
   Every report seen must be consistent: calls never go back, and only `skipped_call` (0:
   none) may be reported skipped. */
static clopt_step_report wait_verdict(clopt_optimizer *opt, uint64_t want, uint64_t skipped_call)
{
    clopt_step_report r = {0, 0, NAN, 0};
    uint64_t last = 0;
    struct timespec t0, now, nap = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        assert_int_equal(clopt_optimizer_poll(opt, &r), CLOPT_SUCCESS);
        assert_true(r.step_call >= last && r.step_call <= want);
        last = r.step_call;
        if (r.step_call)
            assert_int_equal(r.skipped, r.step_call == skipped_call);
        if (r.step_call == want)
            return r;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 10)
            fail_msg("poll did not report step call %llu within 10 s (latest %llu)",
                     (unsigned long long)want, (unsigned long long)r.step_call);
        nanosleep(&nap, NULL);
    }
}

/* ---- (a) and (b): a step enqueues, and never waits ------------------------------------- */

/* STEPS calls of step_on with AMP and clipping, after prepare, with no synchronisation
   between them (gradients written asynchronously on the same queue, each step waiting for
   the previous one's event): no blocking OpenCL call and no program build inside a step or
   a poll. inf_call: the step call whose gradient holds an Inf (0: none); engine_queue: the
   engine's own queue instead of the context's (NULL). */
static void run_engine(clopt_ctx *ctx, int engine_queue, uint64_t inf_call)
{
    eng e;
    eng_build(&e, ctx, 1, 1);
    assert_int_equal(clopt_optimizer_prepare(e.opt), CLOPT_SUCCESS);
    size_t compiled0, compiled1;
    clopt_ctx_program_stats(ctx, &compiled0, NULL);
    cl_command_queue q = clopt_ctx_cl_queue(ctx), step_q = NULL;
    if (engine_queue) {
        cl_int err;
        q = step_q = clCreateCommandQueue(clopt_ctx_cl_context(ctx), clopt_ctx_cl_device(ctx), 0,
                                          &err);
        assert_int_equal(err, CL_SUCCESS);
    }
    /* the initial uploads (blocking, on the context's queue) are done */
    assert_int_equal(clFinish(clopt_ctx_cl_queue(ctx)), CL_SUCCESS);
    size_t total = total_len();
    float *scaled = malloc(STEPS * total * sizeof *scaled);
    double *plain = malloc(total * sizeof *plain), last_norm = 0;
    cl_event prev = NULL;
    uint64_t last_call = 0;
    clshim_reset();
    for (uint64_t t = 1; t <= STEPS; t++) {
        float *gs = scaled + (t - 1) * total;
        grads_of(t, gs, plain, 1024);
        if (t == inf_call) {
            gs[tn[0] + 3] = INFINITY;
            plain[tn[0] + 3] = INFINITY;
        }
        last_norm = ref_apply(&e, plain, 1);
        write_grads_async(&e, q, gs);
        cl_event ev = NULL;
        clopt_step_report rep;
        clshim_enable(1);
        clopt_status s = clopt_optimizer_step_on(e.opt, step_q, prev ? 1 : 0, prev ? &prev : NULL,
                                                 &ev);
        clopt_status ps = clopt_optimizer_poll(e.opt, &rep);
        clshim_enable(0);
        if (s != CLOPT_SUCCESS)
            fail_msg("step_on at call %llu: %s (%s)", (unsigned long long)t,
                     clopt_status_name(s), clopt_ctx_last_error(ctx));
        assert_int_equal(ps, CLOPT_SUCCESS);
        assert_non_null(ev);
        assert_true(rep.step_call >= last_call && rep.step_call <= t);
        last_call = rep.step_call;
        if (rep.step_call)
            assert_int_equal(rep.skipped, rep.step_call == inf_call);
        if (prev)
            clReleaseEvent(prev);
        prev = ev;
    }
    if (clshim_blocking() != 0 || clshim_builds() != 0) {
        clshim_dump(stderr);
        fail_msg("%llu blocking calls and %llu program builds in %d steps (want 0 and 0)",
                 (unsigned long long)clshim_blocking(), (unsigned long long)clshim_builds(),
                 STEPS);
    }
    /* every step submitted its commands: a driver may hold them until a flush, and the
       polls would then never see a verdict */
    assert_true(clshim_count("clFlush") >= STEPS);
    clopt_ctx_program_stats(ctx, &compiled1, NULL);
    assert_int_equal(compiled1, compiled0);
    assert_int_equal(clFinish(q), CL_SUCCESS);
    clReleaseEvent(prev);
    free(scaled);

    clopt_step_report rep = wait_verdict(e.opt, STEPS, inf_call);
    assert_int_equal(rep.skipped, 0);
    /* the norm of the last call, unscaled, before clipping */
    if (!(fabs(rep.grad_norm - last_norm) <= 1e-4 * last_norm))
        fail_msg("reported grad_norm %.9g, want %.9g", rep.grad_norm, last_norm);
    uint64_t want = inf_call ? STEPS - 1 : STEPS;
    for (size_t k = 0; k < NT; k++) {
        uint64_t c = 0;
        assert_int_equal(clopt_optimizer_param_step_count(e.opt, k, &c), CLOPT_SUCCESS);
        assert_int_equal(c, want);
        assert_int_equal(e.rstep[k], want);
    }
    assert_int_equal(clopt_optimizer_step_count(e.opt), want);
    check_against_ref(&e, inf_call ? "engine, skipped step" : "engine");
    /* and after a blocking query, the same counts */
    for (size_t k = 0; k < NT; k++) {
        uint64_t c = 0;
        assert_int_equal(clopt_optimizer_param_step_count(e.opt, k, &c), CLOPT_SUCCESS);
        assert_int_equal(c, want);
    }
    free(plain);
    eng_free(&e);
    if (step_q)
        clReleaseCommandQueue(step_q);
}

/* (a): 20 steps on the engine's own queue, no sync in between: 0 blocking calls, 0 builds,
   results as the reference with AMP and clipping. */
static void test_no_blocking_in_step(void **state)
{
    fixture *f = *state;
    run_engine(f->ctx, 1, 0);
}

/* (b): the same on the context's queue with an Inf in one gradient at call 5: the device
   skips it; parameters and states equal the reference that skipped call 5, every tensor
   counts 19 steps; poll ends at call 20 (not skipped) and never reports another call
   skipped. */
static void test_skip_on_device(void **state)
{
    fixture *f = *state;
    run_engine(f->ctx, 0, 5);
}

/* ---- (c): atomic steps under injected faults -------------------------------------------- */

typedef struct snap {
    float *v; /* every parameter, then every state of every tensor */
    size_t n;
    uint64_t steps, tsteps[NT];
    double lr[2];
} snap;

static snap take_snap(eng *e)
{
    snap s;
    memset(&s, 0, sizeof s);
    s.n = 3 * total_len();
    s.v = malloc(s.n * sizeof *s.v);
    float *p = s.v;
    for (size_t k = 0; k < NT; k++) {
        read_at(e->ctx, e->pv[k], p, tn[k]);
        p += tn[k];
        for (size_t j = 0; j < 2; j++) {
            assert_int_equal(clopt_optimizer_read_state(e->opt, k, j, p, tn[k]), CLOPT_SUCCESS);
            p += tn[k];
        }
    }
    /* read after the blocking reads: the counts are exact */
    s.steps = clopt_optimizer_step_count(e->opt);
    for (size_t k = 0; k < NT; k++)
        assert_int_equal(clopt_optimizer_param_step_count(e->opt, k, &s.tsteps[k]),
                         CLOPT_SUCCESS);
    for (size_t g = 0; g < 2; g++)
        s.lr[g] = clopt_optimizer_group_lr(e->opt, g);
    return s;
}

static void snap_equal(const snap *a, const snap *b, const char *what, uint64_t n)
{
    int same = a->n == b->n && !memcmp(a->v, b->v, a->n * sizeof *a->v) &&
               a->steps == b->steps && !memcmp(a->tsteps, b->tsteps, sizeof a->tsteps) &&
               !memcmp(a->lr, b->lr, sizeof a->lr);
    if (!same) {
        size_t i = 0;
        while (i < a->n && !memcmp(&a->v[i], &b->v[i], sizeof(float)))
            i++;
        fail_msg("%s (fault n = %llu): first difference at value %zu of %zu; steps %llu vs "
                 "%llu; lr %.17g vs %.17g",
                 what, (unsigned long long)n, i, a->n, (unsigned long long)a->steps,
                 (unsigned long long)b->steps, a->lr[0], b->lr[0]);
    }
}

static clopt_status do_step(eng *e, int on_queue)
{
    if (!on_queue)
        return clopt_optimizer_step(e->opt, NULL);
    cl_event ev = NULL;
    clopt_status s = clopt_optimizer_step_on(e->opt, NULL, 0, NULL, &ev);
    if (s == CLOPT_SUCCESS) {
        assert_non_null(ev);
        clReleaseEvent(ev);
    } else {
        assert_null(ev);
    }
    return s;
}

/* For n = 1, 2, ...: the n-th fallible OpenCL call of step n fails with CL_OUT_OF_RESOURCES.
   A step that returns an error leaves every parameter, state, step count and lr exactly as
   it was; the retry without fault then matches, bit for bit, an optimizer in another context
   that never saw a fault. Ends with the first step the fault did not reach. The faulty
   optimizer lives in a context of its own created under the shim (its first step compiles),
   and after everything is destroyed every OpenCL object it took is released. */
static void atomic_sweep(clopt_ctx *twin_ctx, int on_queue)
{
    size_t total = total_len();
    float *scaled = malloc(total * sizeof *scaled);
    double *plain = malloc(total * sizeof *plain);
    clshim_reset();
    clshim_enable(1);
    clopt_ctx *c;
    assert_int_equal(clopt_ctx_create(&c), CLOPT_SUCCESS);
    eng e;
    eng_build(&e, c, 1, 1);
    clshim_enable(0);
    eng tw;
    eng_build(&tw, twin_ctx, 1, 1);
    uint64_t faults = 0, recovered = 0;
    clshim_enable(1);
    snap before = take_snap(&e);
    for (uint64_t n = 1;; n++) {
        grads_of(n, scaled, plain, 1024);
        write_grads(&e, scaled);
        clshim_fail_nth(n, CL_OUT_OF_RESOURCES);
        clopt_status s = do_step(&e, on_queue);
        int fired = clshim_fault_fired();
        const char *site = clshim_fault_site();
        clshim_fail_nth(0, CL_SUCCESS);
        if (s < 0) {
            if (!fired)
                fail_msg("step failed without a fault (n = %llu): %s (%s)",
                         (unsigned long long)n, clopt_status_name(s), clopt_ctx_last_error(c));
            faults++;
            snap after = take_snap(&e);
            char what[160];
            snprintf(what, sizeof what, "%s failed at %s with %s but changed the optimizer",
                     on_queue ? "step_on" : "step", site, clopt_status_name(s));
            snap_equal(&before, &after, what, n);
            free(after.v);
            s = do_step(&e, on_queue);
            if (s != CLOPT_SUCCESS)
                fail_msg("retry after a fault at %s (n = %llu): %s (%s)", site,
                         (unsigned long long)n, clopt_status_name(s), clopt_ctx_last_error(c));
        } else {
            assert_int_equal(s, CLOPT_SUCCESS);
            recovered += fired; /* a fault the library absorbed: the step must still be right */
        }
        clshim_enable(0);
        write_grads(&tw, scaled);
        assert_int_equal(clopt_optimizer_step(tw.opt, NULL), CLOPT_SUCCESS);
        snap want = take_snap(&tw);
        clshim_enable(1);
        free(before.v);
        before = take_snap(&e);
        snap_equal(&before, &want, "the retried step differs from the clean one", n);
        free(want.v);
        if (!fired)
            break;
        if (n > 5000)
            fail_msg("the sweep does not end");
    }
    free(before.v);
    eng_free(&e);
    clopt_ctx_destroy(c);
    clshim_enable(0);
    int leak = 0;
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        leak |= clshim_created((clshim_obj)k) != clshim_released((clshim_obj)k);
    if (leak) {
        clshim_dump(stderr);
        fail_msg("OpenCL objects leaked (see the counts above)");
    }
    fprintf(stderr, "    %s: %llu faulted steps, %llu absorbed faults\n",
            on_queue ? "step_on" : "step", (unsigned long long)faults,
            (unsigned long long)recovered);
    assert_true(faults > 0);
    eng_free(&tw);
    free(scaled);
    free(plain);
}

static void test_atomic_step(void **state)
{
    fixture *f = *state;
    atomic_sweep(f->ctx, 0);
}

static void test_atomic_step_on(void **state)
{
    fixture *f = *state;
    atomic_sweep(f->ctx, 1);
}

/* A step_on after the engine's own user event (its backward pass, completed only after the
   call returns) that fails at its first kernel launch: it returns the error at once (it waited
   for its start write before, which waits for that event: a deadlock; SIGALRM ends the test
   if it blocks), changes nothing once the event completes, and the retry steps. */
static void test_step_on_fails_before_user_event(void **state)
{
    fixture *f = *state;
    size_t total = total_len();
    float *scaled = malloc(total * sizeof *scaled);
    double *plain = malloc(total * sizeof *plain);
    eng e; /* the clean run, which also finds the call number of the step's first launch */
    eng_build(&e, f->ctx, 1, 1);
    grads_of(1, scaled, plain, 1024);
    write_grads(&e, scaled);
    assert_int_equal(clopt_optimizer_prepare(e.opt), CLOPT_SUCCESS);
    cl_event ev = NULL;
    clshim_reset();
    clshim_enable(1);
    assert_int_equal(clopt_optimizer_step_on(e.opt, NULL, 0, NULL, &ev), CLOPT_SUCCESS);
    clshim_enable(0);
    uint64_t launch = 0;
    for (uint64_t i = 1; i <= clshim_calls() && !launch; i++)
        if (!strcmp(clshim_call_name(i), "clEnqueueNDRangeKernel"))
            launch = i;
    assert_true(launch > 0);
    clWaitForEvents(1, &ev);
    clReleaseEvent(ev);
    eng e2; /* the same, its step failing */
    eng_build(&e2, f->ctx, 1, 1);
    write_grads(&e2, scaled);
    assert_int_equal(clopt_optimizer_prepare(e2.opt), CLOPT_SUCCESS);
    snap before = take_snap(&e2);
    cl_int err;
    cl_event backward = clCreateUserEvent(clopt_ctx_cl_context(f->ctx), &err);
    assert_int_equal(err, CL_SUCCESS);
    clshim_reset();
    clshim_enable(1);
    clshim_fail_nth(launch, CL_OUT_OF_RESOURCES);
    alarm(60);
    ev = NULL;
    clopt_status s = clopt_optimizer_step_on(e2.opt, NULL, 1, &backward, &ev);
    alarm(0);
    const int fired = clshim_fault_fired();
    clshim_fail_nth(0, CL_SUCCESS);
    clshim_enable(0);
    assert_true(fired);
    assert_int_equal(s, CLOPT_ERR_OPENCL_BASE + CL_OUT_OF_RESOURCES);
    assert_null(ev);
    assert_int_equal(clSetUserEventStatus(backward, CL_COMPLETE), CL_SUCCESS);
    clReleaseEvent(backward);
    snap after = take_snap(&e2);
    snap_equal(&before, &after, "step_on failed before the engine's event but changed", launch);
    free(after.v);
    assert_int_equal(clopt_optimizer_step_on(e2.opt, NULL, 0, NULL, &ev), CLOPT_SUCCESS);
    clReleaseEvent(ev);
    after = take_snap(&e2);
    snap want = take_snap(&e);
    snap_equal(&after, &want, "the retried step differs from the clean one", launch);
    free(after.v), free(want.v), free(before.v);
    eng_free(&e), eng_free(&e2);
    free(scaled), free(plain);
}

/* Schedule-Free AdamW over three tensors of their own (three mode launches) and an arena
   group, after 3 steps. */
typedef struct sf_net {
    clopt_optimizer *opt;
    cl_mem p[3], g[3];
    size_t arena;
} sf_net;

enum { SF_N = 300 };

static void sf_net_build(sf_net *s, clopt_ctx *c)
{
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SCHEDULE_FREE_ADAMW, &hp);
    hp.lr = 0.01;
    assert_int_equal(clopt_optimizer_create(c, CLOPT_SCHEDULE_FREE_ADAMW, &hp, &s->opt),
                     CLOPT_SUCCESS);
    static float v[SF_N];
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < SF_N; i++)
            v[i] = (float)(k + 1) * 0.01f * (float)((i * 7 + k) % 23) - 0.1f;
        s->p[k] = upload(c, v, SF_N);
        for (size_t i = 0; i < SF_N; i++)
            v[i] = 0.5f - 0.03f * (float)((i * 5 + 3 * k) % 31);
        s->g[k] = upload(c, v, SF_N);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){s->p[k], 0}, d.grad = (clopt_tensor){s->g[k], 0};
        d.shape[0] = SF_N;
        assert_int_equal(clopt_optimizer_add_param_desc(s->opt, 0, &d, NULL), CLOPT_SUCCESS);
    }
    clopt_param_desc a;
    clopt_param_desc_init(&a);
    a.shape[0] = 64;
    assert_int_equal(clopt_optimizer_add_arena_group(s->opt, &hp, 1, &a, NULL, &s->arena),
                     CLOPT_SUCCESS);
    clopt_tensor gv;
    assert_int_equal(clopt_optimizer_param_view(s->opt, s->arena, NULL, &gv, NULL, NULL),
                     CLOPT_SUCCESS);
    for (size_t i = 0; i < 64; i++)
        v[i] = 0.2f - 0.01f * (float)i;
    write_at(c, gv, v, 64);
    for (int t = 0; t < 3; t++)
        assert_int_equal(clopt_optimizer_step(s->opt, NULL), CLOPT_SUCCESS);
}

/* Every θ of s (the three tensors, then the arena tensor) into out. */
static void sf_net_read(sf_net *s, clopt_ctx *c, float *out)
{
    for (size_t k = 0; k < 3; k++)
        read_at(c, (clopt_tensor){s->p[k], 0}, out + k * SF_N, SF_N);
    clopt_tensor pv;
    assert_int_equal(clopt_optimizer_param_view(s->opt, s->arena, &pv, NULL, NULL, NULL),
                     CLOPT_SUCCESS);
    read_at(c, pv, out + 3 * SF_N, 64);
}

static void sf_net_free(sf_net *s)
{
    clopt_optimizer_destroy(s->opt);
    for (size_t k = 0; k < 3; k++)
        clReleaseMemObject(s->p[k]), clReleaseMemObject(s->g[k]);
}

/* A Schedule-Free switch to eval mode with a fault at each OpenCL call in turn: a switch that
   failed after some of its launches leaves those tensors switched; steps and saves are then
   refused, and calling eval again finishes the switch (each tensor switched once: θ equals a
   clean switch bit for bit; before, the switch was undone by nothing and a second eval
   switched the first tensors twice), or calling train switches them back. */
static void test_sf_mode_switch_faults(void **state)
{
    fixture *f = *state;
    static float want_eval[3 * SF_N + 64], want_train[3 * SF_N + 64], got[3 * SF_N + 64];
    sf_net clean;
    sf_net_build(&clean, f->ctx);
    sf_net_read(&clean, f->ctx, want_train);
    assert_int_equal(clopt_optimizer_eval(clean.opt), CLOPT_SUCCESS);
    sf_net_read(&clean, f->ctx, want_eval);
    sf_net_free(&clean);
    assert_true(memcmp(want_eval, want_train, sizeof want_eval) != 0);
    uint64_t partial = 0;
    for (uint64_t n = 1;; n++) {
        sf_net s;
        sf_net_build(&s, f->ctx);
        clshim_reset();
        clshim_enable(1);
        clshim_fail_nth(n, CL_OUT_OF_RESOURCES);
        clopt_status st = clopt_optimizer_eval(s.opt);
        const int fired = clshim_fault_fired();
        clshim_fail_nth(0, CL_SUCCESS);
        clshim_enable(0);
        if (st == CLOPT_SUCCESS) { /* the fault absorbed, or past the switch's last call */
            sf_net_read(&s, f->ctx, got);
            assert_memory_equal(got, want_eval, sizeof got);
            sf_net_free(&s);
            if (!fired)
                break;
            continue;
        }
        assert_true(fired);
        assert_true(clopt_optimizer_training(s.opt));
        sf_net_read(&s, f->ctx, got);
        if (memcmp(got, want_train, sizeof got) != 0) { /* switched part way */
            partial++;
            assert_int_equal(clopt_optimizer_step(s.opt, NULL), CLOPT_ERR_INVALID_ARGUMENT);
            assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "failed part way"));
            size_t len = 0;
            assert_int_equal(clopt_optimizer_state_size(s.opt, NULL, &len), CLOPT_SUCCESS);
            unsigned char *buf = malloc(len);
            assert_int_equal(clopt_optimizer_save_to(s.opt, NULL, buf, len, NULL),
                             CLOPT_ERR_INVALID_ARGUMENT);
            free(buf);
        }
        if (n % 2) { /* finish it */
            assert_int_equal(clopt_optimizer_eval(s.opt), CLOPT_SUCCESS);
            assert_false(clopt_optimizer_training(s.opt));
            sf_net_read(&s, f->ctx, got);
            assert_memory_equal(got, want_eval, sizeof got);
        } else { /* or go back */
            assert_int_equal(clopt_optimizer_train(s.opt), CLOPT_SUCCESS);
            assert_true(clopt_optimizer_training(s.opt));
            sf_net_read(&s, f->ctx, got);
            for (size_t i = 0; i < 3 * SF_N + 64; i++) /* y -> x -> y: float rounding */
                assert_true(fabsf(got[i] - want_train[i]) <= 1e-6f + 1e-5f * fabsf(want_train[i]));
            assert_int_equal(clopt_optimizer_step(s.opt, NULL), CLOPT_SUCCESS);
        }
        sf_net_free(&s);
    }
    assert_true(partial >= 2);
}

/* ---- (d): prepare ----------------------------------------------------------------------- */

/* In a fresh context: prepare compiles what the steps need, so neither form of step compiles
   afterwards (the context's count and the shim agree); prepare without tensors is fine. */
static void test_prepare(void **state)
{
    (void)state;
    clopt_ctx *c;
    assert_int_equal(clopt_ctx_create(&c), CLOPT_SUCCESS);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    clopt_optimizer *empty;
    assert_int_equal(clopt_optimizer_create(c, CLOPT_ADAMW, &hp, &empty), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_prepare(empty), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_clip(empty, 1.0), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(empty, 1024), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_prepare(empty), CLOPT_SUCCESS);
    clopt_optimizer_destroy(empty);
    assert_int_equal(clopt_optimizer_prepare(NULL), CLOPT_ERR_NULL_ARGUMENT);

    eng e;
    eng_build(&e, c, 1, 1);
    size_t before, after, during;
    clopt_ctx_program_stats(c, &before, NULL);
    assert_int_equal(clopt_optimizer_prepare(e.opt), CLOPT_SUCCESS);
    clopt_ctx_program_stats(c, &after, NULL);
    assert_true(after > before);
    size_t total = total_len();
    float *scaled = malloc(total * sizeof *scaled);
    double *plain = malloc(total * sizeof *plain);
    clshim_reset();
    for (uint64_t t = 1; t <= 4; t++) {
        grads_of(t, scaled, plain, 1024);
        ref_apply(&e, plain, 1);
        write_grads(&e, scaled);
        clshim_enable(1);
        clopt_status s = t % 2 ? clopt_optimizer_step(e.opt, NULL) : do_step(&e, 1);
        clshim_enable(0);
        assert_int_equal(s, CLOPT_SUCCESS);
    }
    /* the shim sees the library's waits: the blocking form waited for its verdicts */
    assert_true(clshim_blocking() > 0);
    clopt_ctx_program_stats(c, &during, NULL);
    assert_int_equal(during, after);
    if (clshim_builds()) {
        clshim_dump(stderr);
        fail_msg("steps after prepare built %llu programs", (unsigned long long)clshim_builds());
    }
    check_against_ref(&e, "after prepare");
    /* prepare again changes nothing and compiles nothing */
    assert_int_equal(clopt_optimizer_prepare(e.opt), CLOPT_SUCCESS);
    clopt_ctx_program_stats(c, &during, NULL);
    assert_int_equal(during, after);
    free(scaled);
    free(plain);
    eng_free(&e);
    clopt_ctx_destroy(c);
}

/* ---- (e): per-tensor step counts ------------------------------------------------------- */

/* A tensor added after 3 steps counts from 0 and takes Adam's bias corrections from step 1;
   set_step_count(100) makes every count 100 and the next step uses those of step 101. */
static void test_param_step_counts(void **state)
{
    fixture *f = *state;
    enum { NA = 50, NB = 40 };
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAM, &hp);
    hp.lr = 0.01;
    uint64_t seed = 99;
    float a[NA], b[NB], ga[NA], gb[NB], back[NA];
    double pa[NA], pb[NB], gda[NA], gdb[NB];
    double sa0[NA] = {0}, sa1[NA] = {0}, sb0[NB] = {0}, sb1[NB] = {0};
    double *sa[CLOPT_MAX_STATE] = {sa0, sa1}, *sb[CLOPT_MAX_STATE] = {sb0, sb1};
    for (int i = 0; i < NA; i++)
        a[i] = (float)ref_normal(&seed), pa[i] = a[i];
    for (int i = 0; i < NB; i++)
        b[i] = (float)ref_normal(&seed), pb[i] = b[i];
    cl_mem abuf = upload(f->ctx, a, NA), agrad = upload(f->ctx, NULL, NA);
    cl_mem bbuf = upload(f->ctx, b, NB), bgrad = upload(f->ctx, NULL, NB);
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    size_t ia, ib;
    assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){abuf, 0},
                                               (clopt_tensor){agrad, 0}, NA, NULL, &ia),
                     CLOPT_SUCCESS);
    uint64_t ta = 0, tb = 0, c;
    for (int round = 0; round < 3; round++) {
        /* round 0: A alone for 3 steps; round 1: B joins, 4 steps; round 2: after
           set_step_count(100), 2 steps */
        if (round == 1) {
            assert_int_equal(clopt_optimizer_add_param(opt, (clopt_tensor){bbuf, 0},
                                                       (clopt_tensor){bgrad, 0}, NB, NULL, &ib),
                             CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_param_step_count(opt, ib, &c), CLOPT_SUCCESS);
            assert_int_equal(c, 0);
            assert_int_equal(clopt_optimizer_param_step_count(opt, ia, &c), CLOPT_SUCCESS);
            assert_int_equal(c, 3);
            assert_int_equal(clopt_optimizer_step_count(opt), 3);
        }
        if (round == 2) {
            assert_int_equal(clopt_optimizer_set_step_count(opt, 100), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step_count(opt), 100);
            assert_int_equal(clopt_optimizer_param_step_count(opt, ia, &c), CLOPT_SUCCESS);
            assert_int_equal(c, 100);
            assert_int_equal(clopt_optimizer_param_step_count(opt, ib, &c), CLOPT_SUCCESS);
            assert_int_equal(c, 100);
            ta = tb = 100;
        }
        int steps = round == 0 ? 3 : round == 1 ? 4 : 2;
        for (int s = 0; s < steps; s++) {
            for (int i = 0; i < NA; i++)
                ga[i] = (float)ref_normal(&seed), gda[i] = ga[i];
            write_at(f->ctx, (clopt_tensor){agrad, 0}, ga, NA);
            ref_step(CLOPT_ADAM, &hp, ++ta, NA, pa, gda, sa, NULL, NULL, 1.0);
            if (round > 0) {
                for (int i = 0; i < NB; i++)
                    gb[i] = (float)ref_normal(&seed), gdb[i] = gb[i];
                write_at(f->ctx, (clopt_tensor){bgrad, 0}, gb, NB);
                ref_step(CLOPT_ADAM, &hp, ++tb, NB, pb, gdb, sb, NULL, NULL, 1.0);
            }
            assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        }
        assert_int_equal(clopt_optimizer_param_step_count(opt, ia, &c), CLOPT_SUCCESS);
        assert_int_equal(c, ta);
        read_at(f->ctx, (clopt_tensor){abuf, 0}, back, NA);
        assert_close(back, pa, NA, 1e-5, 1e-6, "tensor A");
        assert_int_equal(clopt_optimizer_read_state(opt, ia, 1, back, NA), CLOPT_SUCCESS);
        assert_close(back, sa1, NA, 1e-4, 1e-9, "tensor A exp_avg_sq");
        if (round > 0) {
            assert_int_equal(clopt_optimizer_param_step_count(opt, ib, &c), CLOPT_SUCCESS);
            assert_int_equal(c, tb);
            read_at(f->ctx, (clopt_tensor){bbuf, 0}, back, NB);
            assert_close(back, pb, NB, 1e-5, 1e-6, "tensor B");
            assert_int_equal(clopt_optimizer_read_state(opt, ib, 0, back, NB), CLOPT_SUCCESS);
            assert_close(back, sb0, NB, 1e-4, 1e-7, "tensor B exp_avg");
        }
    }
    assert_int_equal(clopt_optimizer_step_count(opt), 102);
    assert_int_equal(clopt_optimizer_param_step_count(opt, 7, &c), CLOPT_ERR_INDEX);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(abuf), clReleaseMemObject(agrad);
    clReleaseMemObject(bbuf), clReleaseMemObject(bgrad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shim_interposes),
        cmocka_unit_test(test_shim_wraps_every_library_call),
        cmocka_unit_test(test_param_step_counts),
        cmocka_unit_test(test_prepare),
        cmocka_unit_test(test_no_blocking_in_step),
        cmocka_unit_test(test_skip_on_device),
        cmocka_unit_test(test_atomic_step),
        cmocka_unit_test(test_atomic_step_on),
        cmocka_unit_test(test_step_on_fails_before_user_event),
        cmocka_unit_test(test_sf_mode_switch_faults),
        cmocka_unit_test(test_q8_group_too_small),
        cmocka_unit_test(test_range_group_engine_state_faults),
        cmocka_unit_test(test_work_group_fallback),
        cmocka_unit_test(test_reduce_local_too_large),
        cmocka_unit_test(test_alloc_state_out_of_order),
        cmocka_unit_test(test_fill_pieces),
        cmocka_unit_test(test_launch_items_limit),
        cmocka_unit_test(test_launches_name_local),
        cmocka_unit_test(test_master_after_failed_step),
        cmocka_unit_test(test_mode_switch_marker_fails),
        cmocka_unit_test(test_registered_buffers_held),
        cmocka_unit_test(test_loss_scaler_every_verdict),
        cmocka_unit_test(test_loss_scaler_attach_errors),
    };
    /* TEST_ENGINE_FILTER=test_prepare (a cmocka pattern, * and ? allowed) runs a subset */
    const char *filter = getenv("TEST_ENGINE_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, setup, teardown);
}
