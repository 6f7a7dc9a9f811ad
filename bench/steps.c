/* SPDX-License-Identifier: MIT */
/* clopt-bench: what a rule needs (its traffic, the stream kernel's arrays), its device arrays
 * at the op level and host arrays for the C loop, and one step (or repetition) of each
 * variant: fused, unfused, stream, copy, C loop. */
#define _POSIX_C_SOURCE 200809L

#include "driver.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

/* Deterministic uniform values in [lo, hi): splitmix64 of (seed, index). */
void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t z = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i * 0xbf58476d1ce4e5b9ULL + 1;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        x[i] = lo + (hi - lo) * u;
    }
}

int cl_fail(const char *what, cl_int err)
{
    fprintf(stderr, "clopt-bench: %s failed: OpenCL error %d\n", what, (int)err);
    return -1;
}

cl_int fill_pieces(cl_command_queue q, cl_mem buf, const void *pattern, size_t psize,
                   size_t bytes)
{
    const size_t piece = (size_t)1 << 30;
    cl_int err = CL_SUCCESS;
    for (size_t at = 0; err == CL_SUCCESS && at < bytes; at += piece)
        err = clEnqueueFillBuffer(q, buf, pattern, psize, at,
                                  bytes - at < piece ? bytes - at : piece, 0, NULL, NULL);
    return err;
}

int clopt_fail_msg(env *e, const char *what, clopt_status s)
{
    const char *detail = clopt_ctx_last_error(e->ctx);
    fprintf(stderr, "clopt-bench: %s failed: %s (%s)%s%s\n", what, clopt_status_name(s),
            clopt_status_str(s), *detail ? ": " : "", detail);
    if (s == CLOPT_ERR_BUILD_FAILED)
        fprintf(stderr, "%s\n", clopt_ctx_build_log(e->ctx));
    return -1;
}

int event_ns(cl_event ev, cl_ulong *start, cl_ulong *end)
{
    cl_int err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof *start, start,
                                         NULL);
    if (err == CL_SUCCESS)
        err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof *end, end, NULL);
    if (err != CL_SUCCESS)
        return cl_fail("clGetEventProfilingInfo", err);
    return 0;
}

/* After `done` enqueued launches (the wall clock read as w0 before the first): waits for the
   last, fills t (NULL: not wanted) with the span from the first start to the last end, the sum
   of the launches' own times and the wall clock, each divided by `steps`, and `launches`, and
   releases the events. Returns rc, or the first failure when rc was 0. */
int time_events(cl_event *evs, size_t done, int rc, double w0, unsigned steps,
                unsigned launches, bench_timing *t)
{
    if (done) {
        cl_int err = clWaitForEvents(1, &evs[done - 1]);
        if (err != CL_SUCCESS && !rc)
            rc = cl_fail("clWaitForEvents", err);
    }
    const double w1 = bench_now_ms();
    double sum = 0.0;
    cl_ulong first = 0, last = 0;
    for (size_t i = 0; i < done; i++) {
        cl_ulong a = 0, b = 0;
        if (!rc && event_ns(evs[i], &a, &b))
            rc = -1;
        sum += (double)(b - a) * 1e-6;
        if (i == 0)
            first = a;
        if (i == done - 1)
            last = b;
        clReleaseEvent(evs[i]);
    }
    if (t) {
        t->dev_ms = (double)(last - first) * 1e-6 / steps;
        t->kernels_ms = sum / steps;
        t->wall_ms = (w1 - w0) / steps;
        t->launches = launches;
    }
    return rc;
}

/* ---- what a rule needs ------------------------------------------------------------------ */

int rule_info_make(const bench_rule *r, rule_info *ri)
{
    memset(ri, 0, sizeof *ri);
    ri->r = r;
    clopt_status s = bench_rule_hparams(r, &ri->hp);
    if (s != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-bench: %s: hyperparameters: %s\n", r->name, clopt_status_str(s));
        return -1;
    }
    const clopt_hparams *hp = &ri->hp;
    bench_rule_traffic(r, hp, &ri->tr);
    ri->opt_level = bench_rule_opt_level(r, hp);
    ri->gc = bench_rule_gc(r, hp);
    ri->spr = ri->tr.la_k ? ri->tr.la_k : 1;
    ri->nkernel = clopt_rule_state_count(r->rule, hp);
    size_t lens[BENCH_MAX_STATE];
    ri->nstate = bench_state_layout(r, hp, 1, 0, 0, lens, NULL);
    /* stream plan: θ and the written states (stand-ins for the multi-pass rules' written
       arrays) read and written; g, read-only states and dummies read */
    ri->srw[ri->nsrw++] = BA_P;
    ri->sro[ri->nsro++] = BA_G;
    int next_temp = BA_T0;
    const size_t ro_total = ri->tr.ro + (ri->gc ? 1 : 0);
    if (r->flags & BENCH_OPT_LEVEL) {
        for (size_t k = 1; k < ri->tr.rw; k++)
            ri->srw[ri->nsrw++] = BA_S((int)k - 1);
    } else {
        for (size_t k = 0; k < ri->nkernel; k++) {
            if (r->readonly_states & (1u << k))
                ri->sro[ri->nsro++] = BA_S((int)k);
            else
                ri->srw[ri->nsrw++] = BA_S((int)k);
        }
    }
    while (ri->nsro < ro_total && ri->nsro < BENCH_STREAM_MAX_RO && next_temp < BA_COUNT)
        ri->sro[ri->nsro++] = next_temp++;
    ri->la_slot = ri->tr.la_k ? BA_S((int)ri->nkernel) : -1;
    if (ri->nsrw != ri->tr.rw || ri->nsro != ro_total ||
        (ri->tr.la_k && ri->la_slot >= BA_FIRST_TEMP)) {
        fprintf(stderr, "clopt-bench: %s: %zu + %zu arrays do not fit the stream kernel\n",
                r->name, ri->tr.rw, ro_total);
        return -1;
    }
    return 0;
}

void shape_text(const bench_split *sp, char *buf, size_t len)
{
    if (!sp->rows)
        snprintf(buf, len, "%s", "");
    else if (sp->T == 1 || sp->rows[0] == sp->rows[sp->T - 1])
        snprintf(buf, len, "%zux%zu", sp->rows[0], sp->cols);
    else
        snprintf(buf, len, "%zu-%zux%zu", sp->rows[sp->T - 1], sp->rows[0], sp->cols);
}

/* ---- device arrays of one (rule, n) at the op level ------------------------------------- */

void instance_release(instance *in)
{
    for (int i = 0; i < BA_COUNT; i++)
        if (in->slot[i])
            clReleaseMemObject(in->slot[i]);
    memset(in, 0, sizeof *in);
}

/* The slots in `mask`: parameters from p0, gradient from g0, the rule's states at their
   initial values, Lookahead's slow weights from p0, everything else 0 (the stream kernel
   reads dummies). */
int instance_create(env *e, const rule_info *ri, size_t n, unsigned mask, const float *p0,
                    const float *g0, instance *in)
{
    memset(in, 0, sizeof *in);
    in->n = n;
    in->nstate = (ri->r->flags & BENCH_OPT_LEVEL) ? 0 : ri->nstate;
    mask |= (1u << BA_P) | (1u << BA_G);
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < BA_COUNT && err == CL_SUCCESS; i++) {
        if (!(mask & (1u << i)))
            continue;
        in->slot[i] = clCreateBuffer(e->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
        if (!in->slot[i])
            break;
        if (i == BA_P || i == BA_G || i == ri->la_slot) {
            err = clEnqueueWriteBuffer(e->queue, in->slot[i], CL_FALSE, 0, n * sizeof(float),
                                       i == BA_G ? g0 : p0, 0, NULL, NULL);
        } else {
            float v = 0.0f;
            if (i >= BA_S0 && i < BA_FIRST_TEMP && (size_t)(i - BA_S0) < ri->nkernel &&
                !(ri->r->flags & BENCH_OPT_LEVEL))
                v = clopt_rule_state_init(ri->r->rule, &ri->hp, (size_t)(i - BA_S0));
            err = fill_pieces(e->queue, in->slot[i], &v, sizeof v, n * sizeof(float));
        }
    }
    if (err == CL_SUCCESS)
        err = clFinish(e->queue);
    if (err != CL_SUCCESS) {
        instance_release(in);
        return cl_fail("allocating and initialising buffers", err);
    }
    return 0;
}

/* Slots a chain uses. */
unsigned chain_mask(const bench_op *ops, size_t nops)
{
    unsigned m = 0;
    for (size_t i = 0; i < nops; i++) {
        m |= 1u << ops[i].d;
        m |= 1u << ops[i].x;
        if (bench_op_arity(ops[i].kind) == 2 && ops[i].y >= 0)
            m |= 1u << ops[i].y;
    }
    return m;
}

/* The state slots of the op-level fused step and of the unfused chain. */
unsigned state_mask(const rule_info *ri)
{
    unsigned m = 0;
    for (size_t k = 0; k < ri->nstate && !(ri->r->flags & BENCH_OPT_LEVEL); k++)
        m |= 1u << BA_S((int)k);
    return m;
}

unsigned stream_mask(const rule_info *ri)
{
    unsigned m = 0;
    for (size_t k = 0; k < ri->nsrw; k++)
        m |= 1u << ri->srw[k];
    for (size_t k = 0; k < ri->nsro; k++)
        m |= 1u << ri->sro[k];
    if (ri->la_slot >= 0)
        m |= 1u << ri->la_slot;
    return m;
}

void step_args(const instance *in, const rule_info *ri, uint64_t step, clopt_step_args *a)
{
    clopt_step_args_init(a);
    a->param.buffer = in->slot[BA_P];
    a->grad.buffer = in->slot[BA_G];
    for (size_t s = 0; s < ri->nkernel; s++)
        a->state[s].buffer = in->slot[BA_S(s)];
    a->mu_product = clopt_nadam_mu_product(&ri->hp, step - 1);
    if (ri->r->rule == CLOPT_SCHEDULE_FREE_ADAMW || ri->r->rule == CLOPT_SCHEDULE_FREE_SGD)
        bench_sf_scalars(&ri->hp, step, NULL, &a->sf_lr_max, &a->sf_weight_sum);
}

/* ---- one step of each variant ---------------------------------------------------------- */

int fused_launch(env *e, const rule_info *ri, const clopt_step_args *a, size_t n, uint64_t step,
                 bench_timing *t)
{
    cl_event ev = NULL;
    double w0 = bench_now_ms();
    clopt_status s =
        clopt_enqueue_step(e->ctx, NULL, ri->r->rule, &ri->hp, a, n, step, 0, NULL, &ev);
    if (s != CLOPT_SUCCESS)
        return clopt_fail_msg(e, "clopt_enqueue_step", s);
    return time_events(&ev, 1, 0, w0, 1, 1, t);
}

int fused_step(env *e, const rule_info *ri, const instance *in, uint64_t step, bench_timing *t)
{
    clopt_step_args a;
    step_args(in, ri, step, &a);
    return fused_launch(e, ri, &a, in->n, step, t);
}

/* The chain of step `step`, with Lookahead's sync appended at every k-th step:
   d = θ - φ; θ = φ + alpha d; φ = θ. Returns the count, 0 on failure. */
size_t build_chain(const rule_info *ri, uint64_t step, bench_op *ops)
{
    size_t nops = ri->r->chain(&ri->hp, step, clopt_nadam_mu_product(&ri->hp, step - 1), ops,
                               BENCH_MAX_OPS);
    if (nops && ri->tr.la_k && step % ri->tr.la_k == 0) {
        if (nops + 3 > BENCH_MAX_OPS)
            return 0;
        const int slow = ri->la_slot;
        ops[nops++] = (bench_op){OP_AXPY, BA_T0, BA_P, slow, -1.0f, 0.0f};
        ops[nops++] = (bench_op){OP_AXPY, BA_P, slow, BA_T0, (float)ri->hp.lookahead_alpha, 0.0f};
        ops[nops++] = (bench_op){OP_COPY, slow, BA_P, -1, 0.0f, 0.0f};
    }
    return nops;
}

int unfused_step(env *e, const rule_info *ri, const instance *in, uint64_t step,
                 bench_timing *t)
{
    bench_op ops[BENCH_MAX_OPS];
    cl_event evs[BENCH_MAX_OPS];
    const bench_rule *r = ri->r;
    size_t nops = build_chain(ri, step, ops);
    if (!nops) {
        fprintf(stderr, "clopt-bench: %s: building the unfused chain failed\n", r->name);
        return -1;
    }
    for (size_t i = 0; i < nops; i++) {
        int y = bench_op_arity(ops[i].kind) == 2 ? ops[i].y : ops[i].x;
        if (ops[i].d < 0 || ops[i].x < 0 || y < 0 || ops[i].d >= BA_COUNT ||
            ops[i].x >= BA_COUNT || y >= BA_COUNT || !in->slot[ops[i].d] ||
            !in->slot[ops[i].x] || !in->slot[y]) {
            fprintf(stderr, "clopt-bench: %s: operation %zu of the unfused chain uses an array "
                            "that was not allocated\n",
                    r->name, i);
            return -1;
        }
    }
    size_t done = 0;
    int rc = 0;
    double w0 = bench_now_ms();
    for (; done < nops; done++) {
        cl_int err = bench_enqueue_op(e->bd, &ops[done], in->slot, in->n, &evs[done]);
        if (err != CL_SUCCESS) {
            fprintf(stderr, "clopt-bench: %s\n", bench_device_error(e->bd));
            rc = -1;
            break;
        }
    }
    return time_events(evs, done, rc, w0, 1, (unsigned)nops, t);
}

/* One stream kernel per step of the repetition, plus Lookahead's (θ, φ) stream once. */
int stream_rep(env *e, const rule_info *ri, const instance *in, bench_timing *t)
{
    bench_stream_arrays step = {.nrw = ri->nsrw, .nro = ri->nsro};
    for (size_t k = 0; k < ri->nsrw; k++)
        step.rw[k] = in->slot[ri->srw[k]];
    for (size_t k = 0; k < ri->nsro; k++)
        step.ro[k] = in->slot[ri->sro[k]];
    const unsigned nk = ri->spr + (ri->la_slot >= 0 ? 1u : 0u);
    cl_event evs[64];
    if (nk > 64) {
        fprintf(stderr, "clopt-bench: %s: Lookahead period too long\n", ri->r->name);
        return -1;
    }
    double w0 = bench_now_ms();
    unsigned done = 0;
    int rc = 0;
    for (; done < nk; done++) {
        bench_stream_arrays la = {.nrw = 2};
        if (done >= ri->spr) {
            la.rw[0] = in->slot[BA_P];
            la.rw[1] = in->slot[ri->la_slot];
        }
        if (bench_enqueue_stream(e->bd, done < ri->spr ? &step : &la, in->n, &evs[done]) !=
            CL_SUCCESS) {
            fprintf(stderr, "clopt-bench: %s\n", bench_device_error(e->bd));
            rc = -1;
            break;
        }
    }
    return time_events(evs, done, rc, w0, ri->spr, 1, t);
}

int copy_step(env *e, cl_mem src, cl_mem dst, size_t bytes, bench_timing *t)
{
    cl_event ev = NULL;
    double w0 = bench_now_ms();
    cl_int err = clEnqueueCopyBuffer(e->queue, src, dst, 0, 0, bytes, 0, NULL, &ev);
    if (err != CL_SUCCESS)
        return cl_fail("clEnqueueCopyBuffer", err);
    return time_events(&ev, 1, 0, w0, 1, 1, t);
}

/* ---- host arrays of the C loop ------------------------------------------------------------ */

void host_release(host_instance *h)
{
    free(h->p);
    for (size_t i = 0; i < BENCH_MAX_STATE; i++)
        free(h->s[i]);
    bench_split_free(&h->sp);
    memset(h, 0, sizeof *h);
}

static size_t tensor_states(const rule_info *ri, const bench_split *sp, size_t i, size_t *len)
{
    return bench_state_layout(ri->r, &ri->hp, sp->len[i], sp->rows ? sp->rows[i] : 0, sp->cols,
                              len, NULL);
}

/* T tensors (the split of n) with their states; slow weights start as the parameters. */
int host_create(const rule_info *ri, size_t n, size_t T, const float *p0, const float *g0,
                host_instance *h)
{
    memset(h, 0, sizeof *h);
    if (bench_split_make(ri->r, n, T, &h->sp))
        return -1;
    h->n = n;
    h->g = g0;
    for (size_t i = 0; i < T; i++) {
        size_t len[BENCH_MAX_STATE];
        h->nstate = tensor_states(ri, &h->sp, i, len);
        for (size_t k = 0; k < h->nstate; k++)
            h->slen[k] += len[k];
    }
    h->p = malloc(n * sizeof(float));
    int ok = h->p != NULL;
    for (size_t k = 0; ok && k < h->nstate; k++) {
        h->s[k] = malloc(h->slen[k] * sizeof(float));
        ok = h->s[k] != NULL;
        if (!ok)
            break;
        if (ri->tr.la_k && k == h->nstate - 1) {
            memcpy(h->s[k], p0, n * sizeof(float));
        } else {
            float v = k < ri->nkernel ? clopt_rule_state_init(ri->r->rule, &ri->hp, k) : 0.0f;
            for (size_t i = 0; i < h->slen[k]; i++)
                h->s[k][i] = v;
        }
    }
    if (!ok) {
        host_release(h);
        fprintf(stderr, "clopt-bench: out of host memory (%zu floats)\n", n);
        return -1;
    }
    memcpy(h->p, p0, n * sizeof(float));
    return 0;
}

void cloop_step(const rule_info *ri, host_instance *h, uint64_t step, bench_timing *t)
{
    double w0 = bench_now_ms();
    size_t off = 0, soff[BENCH_MAX_STATE] = {0};
    for (size_t i = 0; i < h->sp.T; i++) {
        size_t len[BENCH_MAX_STATE];
        tensor_states(ri, &h->sp, i, len);
        cloop_args a;
        memset(&a, 0, sizeof a);
        a.p = h->p + off;
        a.g = h->g + off;
        for (size_t k = 0; k < h->nstate; k++)
            a.s[k] = h->s[k] + soff[k];
        a.n = h->sp.len[i];
        a.rows = h->sp.rows ? h->sp.rows[i] : 0;
        a.cols = h->sp.rows ? h->sp.cols : 0;
        a.step = step;
        a.mu_product = clopt_nadam_mu_product(&ri->hp, step - 1);
        a.hp = &ri->hp;
        ri->r->cloop(&a);
        off += a.n;
        for (size_t k = 0; k < h->nstate; k++)
            soff[k] += len[k];
    }
    if (ri->tr.la_k && step % ri->tr.la_k == 0)
        cloop_lookahead(h->p, h->s[h->nstate - 1], h->n, (float)ri->hp.lookahead_alpha);
    double w1 = bench_now_ms();
    if (t) {
        t->dev_ms = t->wall_ms = t->kernels_ms = w1 - w0;
        t->launches = 0;
    }
}
