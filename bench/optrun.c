/* SPDX-License-Identifier: MIT */
/* clopt-bench: the optimizer level. An optimizer with T tensors, either in one arena group
 * (clopt_optimizer_add_arena_group: the element-wise rules update the whole group in ONE
 * launch) or in T caller-owned buffer pairs registered one by one with
 * clopt_optimizer_add_param_desc (one launch per tensor). The same total of n elements is
 * split into T equal tensors (bench_split_make), so the two compare with one tensor of n.
 *
 * Timing: the library enqueues its launches without events, and the event a step returns
 * is a marker. optrun_step therefore drains the queue, enqueues a marker, the steps, and
 * takes the last step's marker: the device span (end of one marker to the end of the other)
 * covers everything the steps do, the host's enqueueing included (the device waits for it).
 * The wall clock around it is reported too. */
#define _POSIX_C_SOURCE 200809L

#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- splits ------------------------------------------------------------------------------ */

int bench_split_make(const bench_rule *r, size_t n, size_t T, bench_split *sp)
{
    memset(sp, 0, sizeof *sp);
    size_t R = 0, C = 0;
    const int matrix = (r->flags & BENCH_MATRIX) != 0;
    if (matrix)
        bench_matrix_shape(n, &R, &C);
    const size_t units = matrix ? R : n;
    if (T == 0 || T > units) {
        fprintf(stderr,
                "clopt-bench: %s n=%zu: cannot split %zu %s into %zu tensors\n", r->name, n,
                units, matrix ? "rows" : "elements", T);
        return -1;
    }
    sp->T = T;
    sp->n = n;
    sp->cols = C;
    sp->len = malloc(T * sizeof *sp->len);
    sp->rows = matrix ? malloc(T * sizeof *sp->rows) : NULL;
    if (!sp->len || (matrix && !sp->rows)) {
        bench_split_free(sp);
        fprintf(stderr, "clopt-bench: out of host memory\n");
        return -1;
    }
    for (size_t i = 0; i < T; i++) {
        size_t u = units / T + (i < units % T ? 1 : 0);
        if (matrix) {
            sp->rows[i] = u;
            sp->len[i] = u * C;
        } else {
            sp->len[i] = u;
        }
    }
    return 0;
}

void bench_split_free(bench_split *sp)
{
    free(sp->len);
    free(sp->rows);
    memset(sp, 0, sizeof *sp);
}

/* ---- optimizer instances ------------------------------------------------------------------ */

struct optrun {
    clopt_ctx *ctx;
    cl_context context;
    cl_command_queue queue;
    const bench_rule *r;
    clopt_hparams hp;
    optrun_mode mode;
    clopt_optimizer *opt;
    size_t T, n, first, cols;
    size_t *len, *rows, *off; /* per tensor; off = element offset in the concatenation */
    cl_mem *bufs;             /* separate: param and grad buffer of each tensor; ranges: the
                                 flat param and grad buffers */
    size_t nbufs;
    int ranges_order;         /* ranges: the even tensors were registered first */
    size_t nstate;
    size_t *slen;             /* state k of tensor i: slen[i * BENCH_MAX_STATE + k] */
    size_t alen[1 + BENCH_MAX_STATE];
    unsigned launches;
    clopt_dtype pt, gt; /* storage of θ and g (caller-owned tensors) */
    int typed;          /* a storage row: no float32 layout (optrun_create_typed) */
};

/* The optimizer's index of tensor i of the split. */
static size_t opt_index(const optrun *o, size_t i)
{
    if (o->ranges_order)
        return i % 2 ? (o->T + 1) / 2 + i / 2 : i / 2;
    return o->first + i;
}

static int fail_clopt(clopt_ctx *ctx, const char *what, clopt_status s)
{
    const char *detail = clopt_ctx_last_error(ctx);
    fprintf(stderr, "clopt-bench: %s failed: %s (%s)%s%s\n", what, clopt_status_name(s),
            clopt_status_str(s), *detail ? ": " : "", detail);
    if (s == CLOPT_ERR_BUILD_FAILED)
        fprintf(stderr, "%s\n", clopt_ctx_build_log(ctx));
    return -1;
}

static int fail_cl(const char *what, cl_int err)
{
    fprintf(stderr, "clopt-bench: %s failed: OpenCL error %d\n", what, (int)err);
    return -1;
}

void optrun_destroy(optrun *o)
{
    if (!o)
        return;
    clopt_optimizer_destroy(o->opt);
    for (size_t i = 0; o->bufs && i < o->nbufs; i++)
        if (o->bufs[i])
            clReleaseMemObject(o->bufs[i]);
    free(o->bufs);
    free(o->len);
    free(o->rows);
    free(o->off);
    free(o->slen);
    free(o);
}

static unsigned count_launches(const optrun *o)
{
    const int gc = bench_rule_gc(o->r, &o->hp);
    unsigned per = 1;
    if (o->r->rule == CLOPT_ADAFACTOR)
        per = (o->rows ? 3u : 0u) + 3u; /* rows, cols, row means; partial, final, update */
    else if (o->r->rule == CLOPT_LAMB || o->hp.cautious || o->r->rule == CLOPT_STABLE_ADAMW)
        per = 3; /* partial, final, update */
    per += gc ? 1u : 0u; /* GC row means */
    if ((o->mode == OPTRUN_ARENA || o->mode == OPTRUN_ARENA_AMP) &&
        !(o->r->flags & BENCH_OPT_LEVEL) && !gc)
        per = 0, o->T > 0 ? per++ : 0; /* the whole group in one launch */
    else if (o->mode == OPTRUN_RANGES && !(o->r->flags & BENCH_OPT_LEVEL) && !gc)
        per = 0, per += o->T > 1 ? 2u : 1u; /* one launch per range group */
    else
        per *= (unsigned)o->T;
    /* the step's own commands: start word, verdict, commit, read-back */
    unsigned extra = 4;
    if (o->mode == OPTRUN_ARENA_AMP)
        extra += 1; /* the gradient check's partial sums (step_verdict adds them) */
    return per + extra;
}

/* Writes n floats of src into the tensor (buffer, element offset) stored as t: directly, or
   through a staging buffer and clopt_enqueue_convert (rounded to nearest even). Blocking
   when converting. */
static cl_int write_typed(optrun *o, clopt_tensor dst, clopt_dtype t, const float *src,
                          size_t n)
{
    if (t == CLOPT_DTYPE_F32)
        return clEnqueueWriteBuffer(o->queue, dst.buffer, CL_FALSE, dst.offset * sizeof(float),
                                    n * sizeof(float), src, 0, NULL, NULL);
    cl_int err = CL_SUCCESS;
    cl_mem stage = clCreateBuffer(o->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    if (!stage)
        return err;
    err = clEnqueueWriteBuffer(o->queue, stage, CL_FALSE, 0, n * sizeof(float), src, 0, NULL,
                               NULL);
    if (err == CL_SUCCESS &&
        clopt_enqueue_convert(o->ctx, NULL, dst, t, (clopt_tensor){stage, 0}, CLOPT_DTYPE_F32, n,
                              0, 0, 0, 1, 0, NULL, NULL) != CLOPT_SUCCESS)
        err = CL_INVALID_OPERATION;
    if (err == CL_SUCCESS)
        err = clFinish(o->queue);
    clReleaseMemObject(stage);
    return err;
}

static int create(clopt_ctx *ctx, const bench_rule *r, const clopt_hparams *hp,
                  optrun_mode mode, const bench_split *sp, const float *p0, const float *g0,
                  clopt_dtype pt, clopt_dtype gt, int typed, optrun **out)
{
    *out = NULL;
    optrun *o = calloc(1, sizeof *o);
    clopt_param_desc *desc = NULL;
    if (!o)
        goto oom;
    o->pt = pt;
    o->gt = gt;
    o->typed = typed;
    o->ctx = ctx;
    o->context = clopt_ctx_cl_context(ctx);
    o->queue = clopt_ctx_cl_queue(ctx);
    o->r = r;
    o->hp = *hp;
    o->mode = mode;
    o->T = sp->T;
    o->n = sp->n;
    o->cols = sp->cols;
    o->len = malloc(o->T * sizeof *o->len);
    o->off = malloc(o->T * sizeof *o->off);
    o->slen = calloc(o->T * BENCH_MAX_STATE, sizeof *o->slen);
    desc = calloc(o->T, sizeof *desc);
    if (!o->len || !o->off || !o->slen || !desc)
        goto oom;
    if (sp->rows) {
        o->rows = malloc(o->T * sizeof *o->rows);
        if (!o->rows)
            goto oom;
        memcpy(o->rows, sp->rows, o->T * sizeof *o->rows);
    }
    memcpy(o->len, sp->len, o->T * sizeof *o->len);
    size_t off = 0;
    for (size_t i = 0; i < o->T; i++) {
        o->off[i] = off;
        off += o->len[i];
        if (o->rows) {
            desc[i].ndim = 2;
            desc[i].shape[0] = o->rows[i];
            desc[i].shape[1] = o->cols;
        } else {
            desc[i].ndim = 1;
            desc[i].shape[0] = o->len[i];
        }
    }

    clopt_status s = clopt_optimizer_create(ctx, r->rule, hp, &o->opt);
    if (s != CLOPT_SUCCESS) {
        fail_clopt(ctx, "clopt_optimizer_create", s);
        goto fail;
    }
    cl_int err = CL_SUCCESS;
    if (mode == OPTRUN_ARENA || mode == OPTRUN_ARENA_AMP) {
        s = clopt_optimizer_add_arena_group(o->opt, hp, o->T, desc, NULL, &o->first);
        if (s != CLOPT_SUCCESS) {
            fail_clopt(ctx, "clopt_optimizer_add_arena_group", s);
            goto fail;
        }
        if (mode == OPTRUN_ARENA_AMP &&
            ((s = clopt_optimizer_set_grad_scale(o->opt, 1.0)) != CLOPT_SUCCESS ||
             (s = clopt_optimizer_set_grad_clip(o->opt, 1e18)) != CLOPT_SUCCESS)) {
            fail_clopt(ctx, "AMP and clipping", s);
            goto fail;
        }
    } else if (mode == OPTRUN_RANGES) {
        /* one flat parameter buffer and one flat gradient buffer, tensors back to back;
           group A: tensors 0, 2, 4, ..., group B: 1, 3, ... */
        o->bufs = calloc(2, sizeof *o->bufs);
        if (!o->bufs)
            goto oom;
        o->nbufs = 2;
        for (int k = 0; k < 2; k++) {
            o->bufs[k] = clCreateBuffer(o->context, CL_MEM_READ_WRITE, o->n * sizeof(float),
                                        NULL, &err);
            if (!o->bufs[k]) {
                fail_cl("clCreateBuffer", err);
                goto fail;
            }
        }
        clopt_param_desc *sorted = calloc(o->T, sizeof *sorted);
        if (!sorted)
            goto oom;
        size_t na = 0, nb = (o->T + 1) / 2;
        for (size_t i = 0; i < o->T; i++) {
            desc[i].param = (clopt_tensor){o->bufs[0], o->off[i]};
            desc[i].grad = (clopt_tensor){o->bufs[1], o->off[i]};
            sorted[i % 2 ? nb++ : na++] = desc[i];
        }
        /* two groups as an engine's weights and biases; the same hyperparameters, so the
           check compares them with the C loop (decay costs the same either way) */
        clopt_hparams hb = *hp;
        for (int grp = 0; grp < 2 && s == CLOPT_SUCCESS; grp++) {
            clopt_range_group rg;
            clopt_range_group_init(&rg);
            rg.ntensors = grp ? o->T / 2 : (o->T + 1) / 2;
            rg.tensors = sorted + (grp ? (o->T + 1) / 2 : 0);
            if (rg.ntensors)
                s = clopt_optimizer_add_range_group(o->opt, grp ? &hb : hp, &rg, NULL, NULL);
        }
        free(sorted);
        if (s != CLOPT_SUCCESS) {
            fail_clopt(ctx, "clopt_optimizer_add_range_group", s);
            goto fail;
        }
        o->first = 0; /* tensors in registration order: the even ones, then the odd ones */
        o->ranges_order = 1;
    } else {
        o->bufs = calloc(2 * o->T, sizeof *o->bufs);
        if (!o->bufs)
            goto oom;
        o->nbufs = 2 * o->T;
        for (size_t i = 0; i < o->T; i++) {
            for (int k = 0; k < 2; k++) {
                const size_t es = clopt_dtype_size(k ? gt : pt);
                o->bufs[2 * i + k] = clCreateBuffer(o->context, CL_MEM_READ_WRITE,
                                                    o->len[i] * es, NULL, &err);
                if (!o->bufs[2 * i + k]) {
                    fail_cl("clCreateBuffer", err);
                    goto fail;
                }
            }
            desc[i].param = (clopt_tensor){o->bufs[2 * i], 0};
            desc[i].grad = (clopt_tensor){o->bufs[2 * i + 1], 0};
            desc[i].param_dtype = pt;
            desc[i].grad_dtype = gt;
            size_t idx = 0;
            s = clopt_optimizer_add_param_desc(o->opt, 0, &desc[i], &idx);
            if (s != CLOPT_SUCCESS) {
                fail_clopt(ctx, "clopt_optimizer_add_param_desc", s);
                goto fail;
            }
            if (i == 0)
                o->first = idx;
        }
    }
    /* initial parameters and gradients through the views (arena: (buffer, offset) pairs) */
    for (size_t i = 0; i < o->T && err == CL_SUCCESS; i++) {
        clopt_tensor pv, gv;
        s = clopt_optimizer_param_view(o->opt, opt_index(o, i), &pv, &gv, NULL, NULL);
        if (s != CLOPT_SUCCESS) {
            fail_clopt(ctx, "clopt_optimizer_param_view", s);
            goto fail;
        }
        err = write_typed(o, pv, pt, p0 + o->off[i], o->len[i]);
        if (err == CL_SUCCESS)
            err = write_typed(o, gv, gt, g0 + o->off[i], o->len[i]);
    }
    if (err == CL_SUCCESS)
        err = clFinish(o->queue);
    if (err != CL_SUCCESS) {
        fail_cl("writing the initial tensors", err);
        goto fail;
    }
    /* the state layout the benchmark expects (the C loop's) must be the library's (a storage
       row's has a master, absmaxes: not the C loop's, and is not read) */
    for (size_t i = 0; i < o->T && !typed; i++) {
        size_t *sl = &o->slen[i * BENCH_MAX_STATE];
        const char *names[BENCH_MAX_STATE];
        size_t ns = bench_state_layout(r, hp, o->len[i], o->rows ? o->rows[i] : 0, o->cols, sl,
                                       names);
        size_t lns = clopt_optimizer_state_count(o->opt, opt_index(o, i));
        if (i == 0)
            o->nstate = ns;
        int same = lns == ns && ns == o->nstate;
        for (size_t k = 0; same && k < ns; k++) {
            const char *nm = NULL;
            size_t l = 0;
            same = clopt_optimizer_state_info(o->opt, opt_index(o, i), k, &nm, &l) ==
                       CLOPT_SUCCESS &&
                   l == sl[k] && nm && strcmp(nm, names[k]) == 0;
        }
        if (!same) {
            fprintf(stderr,
                    "clopt-bench: %s: the optimizer's state tensors of tensor %zu differ from "
                    "the benchmark's layout (bench_state_layout in bench/rules.c)\n",
                    r->name, i);
            goto fail;
        }
    }
    memset(o->alen, 0, sizeof o->alen);
    for (size_t i = 0; i < o->T; i++) {
        o->alen[0] += o->len[i];
        for (size_t k = 0; k < o->nstate; k++)
            o->alen[1 + k] += o->slen[i * BENCH_MAX_STATE + k];
    }
    o->launches = count_launches(o);
    free(desc);
    *out = o;
    return 0;
oom:
    fprintf(stderr, "clopt-bench: out of host memory\n");
fail:
    free(desc);
    optrun_destroy(o);
    return -1;
}

int optrun_create(clopt_ctx *ctx, const bench_rule *r, const clopt_hparams *hp,
                  optrun_mode mode, const bench_split *sp, const float *p0, const float *g0,
                  optrun **out)
{
    return create(ctx, r, hp, mode, sp, p0, g0, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, 0, out);
}

int optrun_create_typed(clopt_ctx *ctx, const bench_rule *r, const clopt_hparams *hp,
                        const bench_split *sp, const float *p0, const float *g0,
                        clopt_dtype pt, clopt_dtype gt, optrun **out)
{
    return create(ctx, r, hp, OPTRUN_SEPARATE, sp, p0, g0, pt, gt, 1, out);
}

int optrun_read_theta_raw(optrun *o, void *out)
{
    clopt_tensor pv;
    clopt_status s = clopt_optimizer_param_view(o->opt, opt_index(o, 0), &pv, NULL, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        return fail_clopt(o->ctx, "clopt_optimizer_param_view", s);
    const size_t es = clopt_dtype_size(o->pt);
    cl_int err = clEnqueueReadBuffer(o->queue, pv.buffer, CL_TRUE, pv.offset * es,
                                     o->len[0] * es, out, 0, NULL, NULL);
    return err == CL_SUCCESS ? 0 : fail_cl("clEnqueueReadBuffer", err);
}

long optrun_read_state_raw(optrun *o, const char *name, void *out, size_t cap,
                           clopt_dtype *dtype)
{
    const size_t count = clopt_optimizer_state_entry_count(o->opt);
    for (size_t i = 0; i < count; i++) {
        clopt_state_entry se;
        clopt_status s = clopt_optimizer_state_entry(o->opt, i, &se);
        if (s != CLOPT_SUCCESS)
            return fail_clopt(o->ctx, "clopt_optimizer_state_entry", s);
        if (se.param != opt_index(o, 0) || strcmp(se.name, name))
            continue;
        const size_t es = clopt_dtype_size(se.dtype), bytes = se.length * es;
        if (bytes > cap) {
            fprintf(stderr, "clopt-bench: state %s: %zu bytes, room for %zu\n", name, bytes, cap);
            return -1;
        }
        /* settles the steps in flight: the queue is in order and this read blocks */
        cl_int err = clEnqueueReadBuffer(o->queue, se.tensor.buffer, CL_TRUE,
                                         se.tensor.offset * es, bytes, out, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return fail_cl("clEnqueueReadBuffer", err);
        *dtype = se.dtype;
        return (long)bytes;
    }
    fprintf(stderr, "clopt-bench: the optimizer has no state %s\n", name);
    return -1;
}

int optrun_write_grad(optrun *o, const float *g)
{
    cl_int err = CL_SUCCESS;
    for (size_t i = 0; i < o->T && err == CL_SUCCESS; i++) {
        clopt_tensor gv;
        clopt_status s = clopt_optimizer_param_view(o->opt, opt_index(o, i), NULL, &gv, NULL, NULL);
        if (s != CLOPT_SUCCESS)
            return fail_clopt(o->ctx, "clopt_optimizer_param_view", s);
        err = clEnqueueWriteBuffer(o->queue, gv.buffer, CL_FALSE, gv.offset * sizeof(float),
                                   o->len[i] * sizeof(float), g + o->off[i], 0, NULL, NULL);
    }
    if (err == CL_SUCCESS)
        err = clFinish(o->queue);
    return err == CL_SUCCESS ? 0 : fail_cl("writing gradients", err);
}

static unsigned long marker_fallbacks;

unsigned long optrun_wall_fallbacks(void) { return marker_fallbacks; }

static int marker_end(cl_event ev, cl_ulong *t)
{
    cl_int err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof *t, t, NULL);
    return err == CL_SUCCESS ? 0 : -1;
}

int optrun_step(optrun *o, unsigned steps, bench_timing *t)
{
    cl_event a = NULL, b = NULL;
    cl_int err = clFinish(o->queue);
    if (err != CL_SUCCESS)
        return fail_cl("clFinish", err);
    const double w0 = bench_now_ms();
    err = clEnqueueMarkerWithWaitList(o->queue, 0, NULL, &a);
    if (err != CL_SUCCESS)
        return fail_cl("clEnqueueMarkerWithWaitList", err);
    clFlush(o->queue);
    int rc = 0;
    for (unsigned s = 0; s < steps && !rc; s++) { /* the engine's step: never waits */
        clopt_status st = clopt_optimizer_step_on(o->opt, o->queue, 0, NULL,
                                                  s + 1 == steps ? &b : NULL);
        if (st != CLOPT_SUCCESS)
            rc = fail_clopt(o->ctx, "clopt_optimizer_step_on", st);
    }
    err = b ? clWaitForEvents(1, &b) : clFinish(o->queue);
    const double w1 = bench_now_ms();
    if (!rc && err != CL_SUCCESS)
        rc = fail_cl("waiting for the step", err);
    cl_ulong ta = 0, tb = 0;
    double dev = NAN;
    if (!rc && b && marker_end(a, &ta) == 0 && marker_end(b, &tb) == 0 && ta > 0 && tb > ta)
        dev = (double)(tb - ta) * 1e-6;
    else if (!rc)
        marker_fallbacks++;
    clReleaseEvent(a);
    if (b)
        clReleaseEvent(b);
    if (t && !rc) {
        t->wall_ms = (w1 - w0) / steps;
        t->dev_ms = isnan(dev) ? t->wall_ms : dev / steps; /* no marker times: wall clock */
        t->kernels_ms = NAN;
        t->launches = o->launches;
    }
    return rc;
}

size_t optrun_array_count(const optrun *o) { return 1 + o->nstate; }

size_t optrun_array_len(const optrun *o, size_t k) { return k <= o->nstate ? o->alen[k] : 0; }

int optrun_read(optrun *o, float *const *out)
{
    size_t soff[BENCH_MAX_STATE] = {0};
    for (size_t i = 0; i < o->T; i++) {
        clopt_tensor pv;
        clopt_status s = clopt_optimizer_param_view(o->opt, opt_index(o, i), &pv, NULL, NULL, NULL);
        if (s != CLOPT_SUCCESS)
            return fail_clopt(o->ctx, "clopt_optimizer_param_view", s);
        cl_int err = clEnqueueReadBuffer(o->queue, pv.buffer, CL_TRUE, pv.offset * sizeof(float),
                                         o->len[i] * sizeof(float), out[0] + o->off[i], 0, NULL,
                                         NULL);
        if (err != CL_SUCCESS)
            return fail_cl("clEnqueueReadBuffer", err);
        for (size_t k = 0; k < o->nstate; k++) {
            size_t l = o->slen[i * BENCH_MAX_STATE + k];
            s = clopt_optimizer_read_state(o->opt, opt_index(o, i), k, out[1 + k] + soff[k], l);
            if (s != CLOPT_SUCCESS)
                return fail_clopt(o->ctx, "clopt_optimizer_read_state", s);
            soff[k] += l;
        }
    }
    return 0;
}

unsigned optrun_launches(const optrun *o) { return o->launches; }
