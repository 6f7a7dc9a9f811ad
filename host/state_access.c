/* SPDX-License-Identifier: MIT */
/* The optimizer's state tensors one by one, for engines that keep their own checkpoint
 * container: layout queries (count, name, length, the device tensor), the enumeration with
 * torch-style keys (clopt_optimizer_state_entry), and the blocking host copies
 * clopt_optimizer_read_state / write_state. The whole state as bytes is checkpoint.c's. */
#include "optimizer_internal.h"

#include <stdio.h>
#include <string.h>

size_t clopt_optimizer_state_count(const clopt_optimizer *opt, size_t param)
{
    return opt && param < opt->nparams ? opt->params[param].nstate : 0;
}

clopt_status clopt_optimizer_state_info(const clopt_optimizer *opt, size_t param, size_t index,
                                        const char **name, size_t *length)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (param >= opt->nparams || index >= opt->params[param].nstate)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no state %zu of tensor %zu", index, param);
    if (name)
        *name = opt->params[param].state_name[index];
    if (length)
        *length = opt->params[param].state_len[index];
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_state(const clopt_optimizer *opt, size_t param, size_t index,
                                   clopt_tensor *out)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!out)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
    if (param >= opt->nparams || index >= opt->params[param].nstate)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no state %zu of parameter %zu", index,
                          param);
    *out = opt->params[param].state[index];
    return CLOPT_SUCCESS;
}

clopt_status clopt_o_read_theta_f32(const clopt_optimizer *opt, const clopt_param *e,
                                    float *host, size_t n)
{
    clopt_ctx *ctx = opt->ctx;
    cl_int err;
    if (e->pdtype == CLOPT_DTYPE_F32) {
        err = clEnqueueReadBuffer(ctx->queue, e->param.buffer, CL_TRUE,
                                  e->param.offset * sizeof(float), n * sizeof(float), host, 0,
                                  NULL, NULL);
        return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "clEnqueueReadBuffer");
    }
    /* 16-bit θ: widened on the device (exact) into a temporary buffer */
    cl_mem tmp = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    if (!tmp)
        return clopt_fail_cl(ctx, err, "clCreateBuffer (θ as floats)");
    clopt_status s = clopt_enqueue_convert(ctx, ctx->queue, (clopt_tensor){tmp, 0},
                                           CLOPT_DTYPE_F32, e->param, e->pdtype, n, 0, 0, 0, 0, 0,
                                           NULL, NULL);
    if (s == CLOPT_SUCCESS &&
        (err = clEnqueueReadBuffer(ctx->queue, tmp, CL_TRUE, 0, n * sizeof(float), host, 0, NULL,
                                   NULL)) != CL_SUCCESS)
        s = clopt_fail_cl(ctx, err, "clEnqueueReadBuffer (θ as floats)");
    clReleaseMemObject(tmp);
    return s;
}

/* State index of e is its F32 master, not yet taken from θ (its first step does that). */
static int unset_master(const clopt_param *e, size_t index)
{
    return e->master == CLOPT_MASTER_F32 && index == e->master_at && !e->master_ready;
}

clopt_status clopt_optimizer_read_state(clopt_optimizer *opt, size_t param, size_t index,
                                        float *host, size_t n)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!host)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "host is NULL");
    clopt_tensor t;
    clopt_status s = clopt_optimizer_state(opt, param, index, &t);
    if (s != CLOPT_SUCCESS)
        return s;
    const clopt_param *e = &opt->params[param];
    size_t len = e->state_len[index];
    if (e->state_dtype[index] != CLOPT_DTYPE_F32)
        return clopt_fail(opt->ctx, CLOPT_ERR_UNSUPPORTED,
                          "state %zu of parameter %zu holds %s words, not floats: read its "
                          "tensor (clopt_optimizer_state_entry gives it with its dtype)",
                          index, param, clopt_dtype_name(e->state_dtype[index]));
    if (n != len)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_SIZE,
                          "state %zu of parameter %zu has %zu elements, %zu requested", index,
                          param, len, n);
    if ((s = clopt_opt_settle(opt)) != CLOPT_SUCCESS)
        return s;
    /* Lookahead's slow weights and an F32 master are θ until the tensor's first step copies
       them. */
    if ((clopt_is_slow(e, index) && !e->slow_ready) || unset_master(e, index))
        return clopt_o_read_theta_f32(opt, e, host, n);
    cl_int err = clEnqueueReadBuffer(opt->ctx->queue, t.buffer, CL_TRUE,
                                     t.offset * sizeof(float), n * sizeof(float), host, 0, NULL,
                                     NULL);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(opt->ctx, err, "clEnqueueReadBuffer");
}

size_t clopt_optimizer_state_entry_count(const clopt_optimizer *opt)
{
    size_t n = 0;
    for (size_t i = 0; opt && i < opt->nparams; i++)
        n += opt->params[i].nstate;
    return n;
}

clopt_status clopt_optimizer_state_entry(const clopt_optimizer *opt, size_t i,
                                         clopt_state_entry *out)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!out)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
    size_t p = 0, at = i;
    while (p < opt->nparams && at >= opt->params[p].nstate)
        at -= opt->params[p++].nstate;
    if (p == opt->nparams)
        return clopt_fail(ctx, CLOPT_ERR_INDEX, "no state entry %zu (the optimizer has %zu)", i,
                          clopt_optimizer_state_entry_count(opt));
    const clopt_param *e = &opt->params[p];
    clopt_state_entry x;
    memset(&x, 0, sizeof x);
    x.group = e->group;
    x.param = p;
    x.index = at;
    x.name = e->state_name[at];
    int kl = snprintf(x.key, sizeof x.key, "state.%zu.%s", p, x.name);
    if (kl < 0 || (size_t)kl >= sizeof x.key)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "the key of state entry %zu is too long",
                          i);
    x.dtype = e->state_dtype[at];
    x.length = e->state_len[at];
    if (x.length == e->n) {
        x.ndim = e->ndim;
        memcpy(x.shape, e->shape, sizeof x.shape);
    } else {
        x.ndim = 1;
        x.shape[0] = x.length;
    }
    x.tensor = e->state[at];
    *out = x;
    return CLOPT_SUCCESS;
}

/* The inverse of clopt_optimizer_read_state. Writing Lookahead's slow weights (or an F32
   master) of a tensor that has not stepped yet makes them its slow weights (master) from now
   on: its first step no longer copies θ. In an arena group of an element-wise rule, whose
   tensors start them together (one launch, decided by the group's first tensor), the others
   that had not started take θ now, so that every tensor of the group is started. */
clopt_status clopt_optimizer_write_state(clopt_optimizer *opt, size_t param, size_t index,
                                         const float *host, size_t n)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!host)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "host is NULL");
    if (param >= opt->nparams || index >= opt->params[param].nstate)
        return clopt_fail(ctx, CLOPT_ERR_INDEX, "no state %zu of parameter %zu", index, param);
    clopt_param *e = &opt->params[param];
    if (e->state_dtype[index] != CLOPT_DTYPE_F32)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "state %zu of parameter %zu holds %s words, not floats: write its "
                          "tensor (clopt_optimizer_state_entry gives it with its dtype)",
                          index, param, clopt_dtype_name(e->state_dtype[index]));
    if (n != e->state_len[index])
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE,
                          "state %zu of parameter %zu has %zu elements, %zu given", index, param,
                          e->state_len[index], n);
    clopt_status s = clopt_opt_settle(opt);
    if (s != CLOPT_SUCCESS)
        return s;
    const int starts_slow = clopt_is_slow(e, index) && !e->slow_ready;
    const int starts_master = unset_master(e, index);
    const clopt_group *g = &opt->groups[e->group];
    const int together = g->arena && !clopt_rule_is_multipass(opt->rule);
    if (starts_master && together) {
        /* as the slow weights below: the others' flags stay 0 until the write succeeded */
        opt->q = ctx->queue;
        for (size_t j = g->first; j < g->first + g->count; j++) {
            const clopt_param *o = &opt->params[j];
            if (j != param && unset_master(o, o->master_at) &&
                (s = clopt_o_master_start(opt, o)) != CLOPT_SUCCESS)
                return s;
        }
    }
    if (starts_slow && together) {
        /* the others' flags stay 0 until the write succeeded: a failure changes nothing.
           Their slow weights are θ as the step's first copy takes it: 16-bit θ widened (from
           its master once that holds θ: a remainder always, an F32 master after its first
           step) */
        opt->q = ctx->queue;
        for (size_t j = g->first; j < g->first + g->count; j++) {
            const clopt_param *o = &opt->params[j];
            if (j == param || o->slow_ready)
                continue;
            const int master =
                o->master == CLOPT_MASTER_REMAINDER || (o->master && o->master_ready);
            if ((s = clopt_o_slow_start(opt, o->param, o->state[o->slow_at], o->n, o, master)) !=
                CLOPT_SUCCESS)
                return s;
        }
    }
    cl_int err = clEnqueueWriteBuffer(ctx->queue, e->state[index].buffer, CL_TRUE,
                                      e->state[index].offset * sizeof(float), n * sizeof(float),
                                      host, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clEnqueueWriteBuffer");
    if (starts_slow) {
        e->slow_ready = 1;
        for (size_t j = g->first; together && j < g->first + g->count; j++)
            opt->params[j].slow_ready = 1;
    }
    if (e->master && index == e->master_at) /* the engine's master: no copy of θ later */
        e->master_ready = 1;
    for (size_t j = g->first; starts_master && together && j < g->first + g->count; j++)
        opt->params[j].master_ready = 1;
    return CLOPT_SUCCESS;
}
