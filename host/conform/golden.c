/* SPDX-License-Identifier: MIT */
/*
 * golden: replay one golden-vector case through clopt's optimizer level.
 * See golden.h and tests/data/golden/README.md for the format; golden_internal.h for how
 * the sources divide the work (this one: the replay of a case and the verdict).
 */
#define _POSIX_C_SOURCE 200809L

#include "golden_internal.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Element offsets of the tensors inside their buffers (exercise non-zero offsets), and
   the guard elements after each tensor, which must come back unchanged (every byte
   GUARD_BYTE). With stochastic rounding θ starts at element 0: the random bits of an element
   depend on its index in the buffer (clopt_step_args.stochastic_rounding), and the format
   counts that index from the tensor's first element. */
#define OFF_PARAM 3u
#define OFF_GRAD 5u
#define OFF_HESS 7u
#define GUARD 4u
#define GUARD_BYTE 0xA5

/* ------------------------------------------------------------------------------------ */
/* Replay                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Compare a result with an expected file; updates the result's error maxima and report. */
static void compare(runner *r, const expected_file *e, const golden_array *got)
{
    golden_result *res = r->res;
    golden_comparison k;
    golden_compare(&e->tol, &e->data, got, &k);
    res->files_compared++;
    if (k.any_nan)
        r->any_nan = 1;
    if (k.max_abs > res->max_abs_err)
        res->max_abs_err = k.max_abs;
    if (k.max_rel > res->max_rel_err)
        res->max_rel_err = k.max_rel;
    if (k.used > res->max_tol_used)
        res->max_tol_used = k.used;
    if (res->nreports < GOLDEN_REPORT_FILES) {
        golden_file_report *p = &res->report[res->nreports++];
        snprintf(p->name, sizeof p->name, "%s", e->name);
        p->used = k.used;
        p->mismatches = k.mismatches;
        p->allowed = k.allowed;
        p->count = e->data.count;
    }
    if (k.bad == 0 && k.mismatches <= k.allowed)
        return;
    res->files_failed++;
    const size_t w = k.worst;
    const double x = golden_value(got, w), ev = golden_value(&e->data, w);
    if (k.bad == 0) {
        golden_fail(r, "%s: %zu of %zu values differ from the expected ones%s, more than the %zu "
                "that mismatch_fraction %g allows",
             e->path, k.mismatches, e->data.count,
             e->tol.has_mismatch_value ? " beyond mismatch_rtol/mismatch_atol" : "", k.allowed,
             e->tol.mismatch_fraction);
    } else if (e->tol.has_ulps) {
        golden_fail(r, "%s: %zu of %zu values out of tolerance; worst [%zu] got %.9g expected %.9g "
                "(%.3g of the tolerance of %g ulps%s)",
             e->path, k.bad, e->data.count, w, x, ev, k.used, e->tol.ulps,
             e->tol.has_value ? " and rtol/atol" : "");
    } else {
        golden_fail(r, "%s: %zu of %zu values out of tolerance; worst [%zu] got %.9g expected %.9g "
                "(|diff| %.3g > atol %.3g + rtol %.3g*|e|)",
             e->path, k.bad, e->data.count, w, x, ev, fabs(x - ev), e->tol.atol, e->tol.rtol);
    }
}

static const expected_file *find_expected(const gcase *c, const char *stem)
{
    for (size_t i = 0; i < c->nexp; i++)
        if (golden_stem_is(c->exp[i].name, c->exp[i].stem, stem))
            return &c->exp[i];
    return NULL;
}

static void cl_fail(runner *r, const char *what, cl_int err)
{
    golden_fail(r, "%s failed: %s", what,
         clopt_status_name((clopt_status)(CLOPT_ERR_OPENCL_BASE + err)));
}

static void clopt_fail(runner *r, clopt_ctx *ctx, const char *what, clopt_status st)
{
    const char *detail = clopt_ctx_last_error(ctx);
    if (st == CLOPT_ERR_UNSUPPORTED && r->res->verdict == GOLDEN_PASS) {
        golden_unsupported(r, "%s: %s%s%s", what, clopt_status_name(st), detail[0] ? ": " : "",
                    detail);
        return;
    }
    golden_fail(r, "%s: %s%s%s", what, clopt_status_name(st), detail[0] ? ": " : "", detail);
}

/* Create a buffer of off + n + GUARD elements of es bytes: the data (zeros when NULL)
   between guard bytes. scratch holds (off + n + GUARD) * es bytes. */
static cl_mem make_buffer(runner *r, clopt_ctx *ctx, size_t off, size_t n, size_t es,
                          const void *data, unsigned char *scratch)
{
    cl_int err;
    size_t total = (off + n + GUARD) * es;
    cl_mem m = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE, total, NULL, &err);
    if (m == NULL || err != CL_SUCCESS) {
        cl_fail(r, "clCreateBuffer", err);
        return NULL;
    }
    memset(scratch, GUARD_BYTE, total);
    if (data != NULL)
        memcpy(scratch + off * es, data, n * es);
    else
        memset(scratch + off * es, 0, n * es);
    err = clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0, total, scratch, 0, NULL,
                               NULL);
    if (err != CL_SUCCESS) {
        cl_fail(r, "clEnqueueWriteBuffer", err);
        clReleaseMemObject(m);
        return NULL;
    }
    return m;
}

/* Read back a whole buffer made by make_buffer; check the guard bytes. The tensor is at
   scratch + off * es. */
static int read_back(runner *r, clopt_ctx *ctx, cl_mem m, size_t off, size_t n, size_t es,
                     unsigned char *scratch, const char *what)
{
    size_t total = (off + n + GUARD) * es;
    cl_int err = clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0, total, scratch, 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS) {
        cl_fail(r, "clEnqueueReadBuffer", err);
        return -1;
    }
    for (size_t i = 0; i < total; i++) {
        if (i == off * es)
            i = (off + n) * es;
        if (i < total && scratch[i] != GUARD_BYTE) {
            golden_fail(r, "%s buffer: element %zu outside the tensor (offset %zu, %zu elements) was "
                    "overwritten",
                 what, i / es, off, n);
            return -1;
        }
    }
    return 0;
}

/* Read state `name` of tensor `param` into host (n * 4 bytes) and compare it with e. */
static void check_state(runner *r, clopt_ctx *ctx, clopt_optimizer *opt, const gcase *c,
                        size_t param, const expected_file *e, void *host)
{
    const char *name = e->name + 6;
    const int nl = (int)(e->stem - 6);
    size_t count = clopt_optimizer_state_entry_count(opt);
    clopt_state_entry se;
    size_t i = 0;
    for (; i < count; i++)
        if (clopt_optimizer_state_entry(opt, i, &se) == CLOPT_SUCCESS && se.param == param &&
            se.name != NULL && strlen(se.name) == (size_t)nl && strncmp(se.name, name, nl) == 0)
            break;
    if (i == count) {
        golden_fail(r, "%s: clopt rule %s (with these hyperparameters) has no state '%.*s'", e->path,
             clopt_rule_name(c->rule), nl, name);
        return;
    }
    if (se.dtype != e->data.dtype) {
        golden_fail(r, "%s: clopt keeps state '%.*s' as %s, the file holds %s", e->path, nl, name,
             golden_dtype_name(se.dtype), golden_dtype_name(e->data.dtype));
        return;
    }
    if (se.length != e->data.count) {
        golden_fail(r, "%s: %zu values, the optimizer's state '%.*s' has %zu", e->path, e->data.count,
             nl, name, se.length);
        return;
    }
    if (se.dtype == CLOPT_DTYPE_F32) {
        /* read_state: Lookahead's slow weights of a tensor that has not stepped are θ */
        clopt_status st = clopt_optimizer_read_state(opt, param, se.index, host, se.length);
        if (st != CLOPT_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "clopt_optimizer_read_state(%.*s)", nl, name);
            clopt_fail(r, ctx, what, st);
            return;
        }
    } else {
        const size_t es = clopt_dtype_size(se.dtype);
        cl_int err = clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), se.tensor.buffer, CL_TRUE,
                                         se.tensor.offset * es, se.length * es, host, 0, NULL,
                                         NULL);
        if (err != CL_SUCCESS) {
            cl_fail(r, "clEnqueueReadBuffer (state)", err);
            return;
        }
    }
    golden_array got = {se.dtype, se.length, host};
    compare(r, e, &got);
}

/* Stochastic rounding's stream k: k one-element float32 tensors registered before the case's
   (zero gradients), so that the case's tensor has index k. */
static int add_padding(runner *r, clopt_ctx *ctx, clopt_optimizer *opt, uint32_t k,
                       cl_mem pad[2])
{
    if (k == 0)
        return 0;
    for (int b = 0; b < 2; b++) {
        cl_int err;
        pad[b] = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE, k * sizeof(float),
                                NULL, &err);
        const float zero = 0.0f;
        if (pad[b] != NULL)
            err = clEnqueueFillBuffer(clopt_ctx_cl_queue(ctx), pad[b], &zero, sizeof zero, 0,
                                      k * sizeof(float), 0, NULL, NULL);
        if (pad[b] == NULL || err != CL_SUCCESS) {
            cl_fail(r, "creating the stream padding tensors", err);
            return -1;
        }
    }
    for (uint32_t i = 0; i < k; i++) {
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){pad[0], i};
        d.grad = (clopt_tensor){pad[1], i};
        d.ndim = 1;
        d.shape[0] = 1;
        clopt_status st = clopt_optimizer_add_param_desc(opt, 0, &d, NULL);
        if (st != CLOPT_SUCCESS) {
            clopt_fail(r, ctx, "clopt_optimizer_add_param_desc (stream padding)", st);
            return -1;
        }
    }
    return 0;
}

static void replay(runner *r, clopt_ctx *ctx, gcase *c)
{
    const size_t n = c->n;
    const golden_storage *s = &c->storage;
    const size_t ps = clopt_dtype_size(s->param), gsz = clopt_dtype_size(s->grad);
    const size_t off_p = s->stochastic_rounding ? 0 : OFF_PARAM;
    const int sophia = c->rule == CLOPT_SOPHIA;
    const int use_hess = sophia && c->hess_blocks > 0;
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    clopt_optimizer *opt = NULL;
    cl_mem pbuf = NULL, gbuf = NULL, hbuf = NULL, pad[2] = {NULL, NULL};
    unsigned char *scratch = malloc((n + 16 + GUARD) * sizeof(float));
    float *state = malloc(n * sizeof(float));
    if (scratch == NULL || state == NULL) {
        golden_fail(r, "out of memory");
        goto done;
    }
    pbuf = make_buffer(r, ctx, off_p, n, ps, c->param0.data, scratch);
    if (pbuf == NULL)
        goto done;
    gbuf = make_buffer(r, ctx, OFF_GRAD, n, gsz, NULL, scratch);
    if (gbuf == NULL)
        goto done;
    if (use_hess) {
        hbuf = make_buffer(r, ctx, OFF_HESS, n, sizeof(float), NULL, scratch);
        if (hbuf == NULL)
            goto done;
    }

    clopt_status st = clopt_optimizer_create(ctx, c->rule, &c->hp, &opt);
    if (st != CLOPT_SUCCESS) {
        opt = NULL;
        clopt_fail(r, ctx, "clopt_optimizer_create", st);
        goto done;
    }
    if (s->stochastic_rounding && (st = clopt_optimizer_seed(opt, s->sr_seed)) != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_seed", st);
        goto done;
    }
    if (s->has_grad_scale &&
        (st = clopt_optimizer_set_grad_scale(opt, s->grad_scale)) != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_set_grad_scale", st);
        goto done;
    }
    const uint32_t first = s->stochastic_rounding ? s->sr_stream : 0;
    if (add_padding(r, ctx, opt, first, pad) != 0)
        goto done;
    clopt_param_desc desc;
    clopt_param_desc_init(&desc);
    desc.param = (clopt_tensor){pbuf, off_p};
    desc.grad = (clopt_tensor){gbuf, OFF_GRAD};
    if (use_hess)
        desc.hessian = (clopt_tensor){hbuf, OFF_HESS};
    desc.ndim = c->ndim;
    for (size_t d = 0; d < c->ndim; d++)
        desc.shape[d] = (size_t)c->shape[d];
    desc.param_dtype = s->param;
    desc.grad_dtype = s->grad;
    size_t index = (size_t)-1;
    st = clopt_optimizer_add_param_desc(opt, 0, &desc, &index);
    if (st != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_add_param_desc", st);
        goto done;
    }
    if (index != first) {
        golden_fail(r, "clopt_optimizer_add_param returned index %zu for tensor %u", index, first);
        goto done;
    }

    golden_array theta = {s->param, n, scratch + off_p * ps};
    for (size_t t = 1; t <= c->steps; t++) {
        cl_int err = clEnqueueWriteBuffer(q, gbuf, CL_TRUE, OFF_GRAD * gsz, n * gsz,
                                          (const unsigned char *)c->grads.data +
                                              (t - 1) * n * gsz,
                                          0, NULL, NULL);
        if (err != CL_SUCCESS) {
            cl_fail(r, "clEnqueueWriteBuffer (grad)", err);
            goto done;
        }
        if (use_hess && t % c->hp.hess_interval == 0) {
            size_t j = t / c->hp.hess_interval - 1;
            if (j < c->hess_blocks) {
                err = clEnqueueWriteBuffer(q, hbuf, CL_TRUE, OFF_HESS * sizeof(float),
                                           n * sizeof(float), (const float *)c->hess.data + j * n,
                                           0, NULL, NULL);
                if (err != CL_SUCCESS) {
                    cl_fail(r, "clEnqueueWriteBuffer (hess)", err);
                    goto done;
                }
            }
        }
        st = clopt_optimizer_step(opt, NULL);
        if (st != CLOPT_SUCCESS) {
            char what[64];
            snprintf(what, sizeof what, "clopt_optimizer_step (step %zu)", t);
            clopt_fail(r, ctx, what, st);
            goto done;
        }
        if (t == 1) {
            if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
                goto done;
            compare(r, find_expected(c, "param_1"), &theta);
        }
    }
    cl_int err = clFinish(q);
    if (err != CL_SUCCESS) {
        cl_fail(r, "clFinish", err);
        goto done;
    }
    if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
        goto done;
    compare(r, find_expected(c, "param_T"), &theta);

    /* The gradient buffer is read-only for the library. */
    if (read_back(r, ctx, gbuf, OFF_GRAD, n, gsz, scratch, "grad") != 0)
        goto done;
    if (memcmp(scratch + OFF_GRAD * gsz,
               (const unsigned char *)c->grads.data + (c->steps - 1) * n * gsz, n * gsz) != 0)
        golden_fail(r, "the gradient buffer was modified by the optimizer");

    /* State tensors, matched by the names of clopt_optimizer_state_entry. */
    for (size_t i = 0; i < c->nexp; i++)
        if (strncmp(c->exp[i].name, "state_", 6) == 0)
            check_state(r, ctx, opt, c, index, &c->exp[i], state);

    /* Schedule-Free: eval mode's x, then back to train mode's y (the same values up to the
       rounding of the two interpolations) */
    const expected_file *ev = find_expected(c, "param_eval_T");
    if (ev != NULL) {
        if (c->rule != CLOPT_SCHEDULE_FREE_ADAMW && c->rule != CLOPT_SCHEDULE_FREE_SGD) {
            golden_fail(r, "%s: param_eval_T is for the schedule-free rules", c->meta_path);
            goto done;
        }
        if ((st = clopt_optimizer_eval(opt)) != CLOPT_SUCCESS) {
            clopt_fail(r, ctx, "clopt_optimizer_eval", st);
            goto done;
        }
        if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
            goto done;
        compare(r, ev, &theta);
        if ((st = clopt_optimizer_train(opt)) != CLOPT_SUCCESS) {
            clopt_fail(r, ctx, "clopt_optimizer_train", st);
            goto done;
        }
        if (read_back(r, ctx, pbuf, off_p, n, ps, scratch, "param") != 0)
            goto done;
        compare(r, find_expected(c, "param_T"), &theta);
    }

    uint64_t count = clopt_optimizer_step_count(opt);
    uint64_t want = c->has_final_step ? c->final_step : (uint64_t)c->steps;
    if (count != want)
        golden_fail(r, "%s: final_scalar_state.step is %llu, clopt_optimizer_step_count gives %llu",
             c->meta_path, (unsigned long long)want, (unsigned long long)count);
    if (c->has_mu_product) {
        double mu = clopt_nadam_mu_product(&c->hp, c->steps);
        if (!(fabs(mu - c->mu_product) <= 1e-9 * fabs(c->mu_product)))
            golden_fail(r, "%s: final_scalar_state.mu_product is %.17g, clopt_nadam_mu_product "
                    "gives %.17g",
                 c->meta_path, c->mu_product, mu);
    }

done:
    if (opt != NULL)
        clopt_optimizer_destroy(opt);
    cl_mem bufs[] = {pbuf, gbuf, hbuf, pad[0], pad[1]};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i] != NULL)
            clReleaseMemObject(bufs[i]);
    free(scratch);
    free(state);
}

static void run_case(clopt_ctx *ctx, const char *dir, golden_result *out, int replay_it)
{
    memset(out, 0, sizeof *out);
    out->verdict = GOLDEN_PASS;
    runner r = {out, 0, 0};
    if (dir == NULL) {
        golden_fail(&r, "no case directory given");
        return;
    }
    /* The name: the last non-empty path component. */
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/')
        l--;
    size_t b = l;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(out->name, sizeof out->name, "%.*s", (int)(l - b), dir + b);

    if (ctx == NULL && replay_it) {
        golden_fail(&r, "no clopt context");
        return;
    }
    gcase c;
    memset(&c, 0, sizeof c);
    c.dir = dir;
    if (golden_load_case(&r, &c) == 0 && replay_it)
        replay(&r, ctx, &c);
    golden_case_free(&c);

    if (r.any_nan) {
        out->max_abs_err = NAN;
        out->max_rel_err = NAN;
        out->max_tol_used = INFINITY;
    }
    if (out->verdict == GOLDEN_FAIL && r.more > 0) {
        size_t used = strlen(out->reason);
        if (used < sizeof out->reason)
            snprintf(out->reason + used, sizeof out->reason - used, " (+%zu more problem%s)",
                     r.more, r.more == 1 ? "" : "s");
    }
}

void golden_run_case(clopt_ctx *ctx, const char *dir, golden_result *out)
{
    run_case(ctx, dir, out, 1);
}

void golden_check_case(const char *dir, golden_result *out)
{
    run_case(NULL, dir, out, 0);
}
