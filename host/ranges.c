/* SPDX-License-Identifier: MIT */
/* Range groups over the engine's own buffers (one launch per group over a chunk table) and
 * the overlap checks every registration runs. */
#include "optimizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- overlap checks and range groups --------------------------------------------------- */

/* The parameter, gradient and state ranges of the registered tensors (a range group's state
   may be the engine's own buffers, which a later registration must not overlap either) plus
   `extra` more slots. */
clopt_span *clopt_o_spans_of(const clopt_optimizer *opt, size_t extra, size_t *count)
{
    clopt_span *s = malloc(((2 + CLOPT_OPT_MAX_STATE) * opt->nparams + extra + 1) * sizeof *s);
    size_t k = 0;
    for (size_t i = 0; s && i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        const size_t ps = clopt_dtype_size(e->pdtype), gs = clopt_dtype_size(e->gdtype);
        s[k++] = (clopt_span){e->param.buffer, e->param.offset * ps, (e->param.offset + e->n) * ps,
                              "param", i};
        s[k++] = (clopt_span){e->grad.buffer, e->grad.offset * gs, (e->grad.offset + e->n) * gs,
                              "grad", i};
        for (size_t j = 0; j < e->nstate; j++) {
            const size_t es = clopt_state_esize(e, j), at = e->state[j].offset;
            if (e->state[j].buffer && e->state_len[j])
                s[k++] = (clopt_span){e->state[j].buffer, at * es, (at + e->state_len[j]) * es,
                                      "state", i};
        }
    }
    *count = k;
    return s;
}

void clopt_range_group_init(clopt_range_group *g)
{
    if (!g)
        return;
    memset(g, 0, sizeof *g);
    g->struct_size = sizeof *g;
    g->init_state = 1;
    g->sr_stream = -1;
}

/* A field of clopt_range_group the caller's struct_size covers (the struct grows: a caller
   built with an older header passes a smaller size, and the newer fields keep their
   defaults). */
#define RG_HAS(d, field)                                                                   \
    ((d)->struct_size >= offsetof(clopt_range_group, field) + sizeof((d)->field))

/* Floats per chunk of a range launch (any length works with any tuning, common.cl). */
#define RANGE_CHUNK 16384u

/* The engine's state buffers (float32, one per state of the layout) filled with the rule's
   initial values over each tensor's range, on the context's queue: the last thing a range
   group's registration enqueues, so that a failure before it leaves them as they were. */
static cl_int fill_engine_state(clopt_optimizer *opt, const clopt_hparams *hp,
                                const clopt_param *layout, const clopt_range_group *desc,
                                size_t T, const clopt_param *ps, const size_t *soff)
{
    cl_int err = CL_SUCCESS;
    for (size_t k = 0; k < layout->nstate && err == CL_SUCCESS; k++) {
        const float init = clopt_rule_state_init(opt->rule, hp, k);
        for (size_t i = 0; i < T && err == CL_SUCCESS; i++)
            err = clopt_fill(opt->ctx->queue, desc->state[k], &init, sizeof init,
                             soff[i] * sizeof(float), ps[i].n * sizeof(float));
    }
    return err;
}

clopt_status clopt_optimizer_add_range_group(clopt_optimizer *opt, const clopt_hparams *hp,
                                             const clopt_range_group *desc, size_t *group,
                                             size_t *first_index)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!hp || !desc || !desc->tensors)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams, desc and desc->tensors must "
                                                        "not be NULL");
    /* the first version's fields end with init_state */
    const clopt_status sst = clopt_check_struct_size(
        ctx, desc, offsetof(clopt_range_group, init_state) + sizeof desc->init_state,
        sizeof *desc, "desc", "clopt_range_group_init");
    if (sst != CLOPT_SUCCESS)
        return sst;
    const long long srs = RG_HAS(desc, sr_stream) ? desc->sr_stream : -1;
    if (srs < -1 || srs > (long long)UINT32_MAX)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "desc->sr_stream %lld: -1 (the first tensor's index) or a 32-bit "
                          "stream",
                          srs);
    const size_t T = desc->ntensors;
    if (T == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "a range group needs >= 1 tensor");
    clopt_status s = clopt_o_check_hparams(ctx, opt->rule, hp);
    if (s == CLOPT_SUCCESS && hp->state_dtype != CLOPT_DTYPE_F32 && desc->state[0])
        s = clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                       "the engine's own state buffers are float32 (state_dtype %d)",
                       hp->state_dtype);
    if (s == CLOPT_SUCCESS)
        s = clopt_opt_settle(opt); /* steps in flight count only the tensors they had */
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_group probe;
    memset(&probe, 0, sizeof probe);
    probe.hp = *hp;
    probe.ranges = 1;
    clopt_param layout;
    memset(&layout, 0, sizeof layout);
    layout.n = layout.ndim = layout.shape[0] = 1;
    layout.pdtype = desc->tensors[0].param_dtype; /* a master is a state of its own */
    clopt_state_layout(opt, &probe, &layout);
    const int own_state = desc->state[0] == NULL;
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++) {
        const int need = !own_state && k < layout.nstate;
        if ((desc->state[k] != NULL) != need)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                              "%s with these hyperparameters has %zu state tensor(s): give a "
                              "buffer for each (state[0..%zu)) or none",
                              clopt_rule_name(opt->rule), layout.nstate, layout.nstate);
    }
    if (!own_state && (clopt_group_lookahead(opt, &probe) || layout.nstate != layout.nkernel ||
                       clopt_rule_is_multipass(opt->rule)))
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "the engine's own state buffers need an element-wise rule without "
                          "Lookahead");
    if (opt->rule == CLOPT_SOPHIA)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "sophia needs the engine's Hessian-estimate buffer per tensor: add "
                          "its tensors with clopt_optimizer_add_param_desc");
    clopt_param *ps = calloc(T, sizeof *ps);
    size_t nspan = 0;
    clopt_span *sp = clopt_o_spans_of(opt, (2 + layout.nstate) * T, &nspan);
    size_t *soff = malloc(T * sizeof *soff);
    if (!ps || !sp || !soff) {
        s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "range group");
        goto fail;
    }
    const cl_mem P = desc->tensors[0].param.buffer, G = desc->tensors[0].grad.buffer;
    /* library-owned state: compact, each tensor 16-float aligned; 8-bit state: each tensor
       at a block of 256 (its blocks start at its first element, as everywhere; SGD without
       momentum has no state, so no blocks: its launches are plain ones) */
    const int q8 = layout.sq == CLOPT_DTYPE_U8 && layout.nkernel > 0;
    const size_t salign = q8 ? 256 : 16;
    size_t total = 0;
    for (size_t i = 0; i < T; i++) {
        const clopt_param_desc *d = &desc->tensors[i];
        clopt_param *e = &ps[i];
        if ((s = clopt_o_take_shape(ctx, d, e)) != CLOPT_SUCCESS ||
            (s = clopt_o_take_storage(opt, &probe, d, e)) != CLOPT_SUCCESS)
            goto fail;
        if (d->hessian.buffer) { /* (add_param_desc refuses it for these rules too) */
            s = clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                           "tensor %zu: %s takes no Hessian estimate (tensors[%zu].hessian is "
                           "set)", i, clopt_rule_name(opt->rule), i);
            goto fail;
        }
        if (!d->param.buffer || !d->grad.buffer) { /* (before the one-cl_mem check below) */
            s = clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "tensor %zu: %s buffer is NULL", i,
                           d->param.buffer ? "grad" : "param");
            goto fail;
        }
        if (d->param_dtype != desc->tensors[0].param_dtype ||
            d->grad_dtype != desc->tensors[0].grad_dtype) {
            s = clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                           "tensor %zu: the tensors of a range group share their storage "
                           "types (one launch)", i);
            goto fail;
        }
        if (d->param.buffer != P || d->grad.buffer != G) {
            s = clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                           "tensor %zu: every parameter of a range group must be in one "
                           "cl_mem, and every gradient in one cl_mem", i);
            goto fail;
        }
        const size_t ps_ = clopt_dtype_size(e->pdtype), gs_ = clopt_dtype_size(e->gdtype);
        if ((s = clopt_check_tensor_of(ctx, "param", d->param, e->n, ps_)) != CLOPT_SUCCESS ||
            (s = clopt_check_tensor_of(ctx, "grad", d->grad, e->n, gs_)) != CLOPT_SUCCESS)
            goto fail;
        e->param = d->param;
        e->grad = d->grad;
        e->mu_product = 1.0;
        const size_t idx = opt->nparams + i;
        sp[nspan++] = (clopt_span){P, ps_ * d->param.offset, ps_ * (d->param.offset + e->n),
                                   "param", idx};
        sp[nspan++] = (clopt_span){G, gs_ * d->grad.offset, gs_ * (d->grad.offset + e->n),
                                   "grad", idx};
        if (own_state) {
            soff[i] = total;
            total += (e->n + salign - 1) / salign * salign;
        } else {
            soff[i] = desc->state_offsets ? desc->state_offsets[i] : d->param.offset;
            for (size_t k = 0; k < layout.nstate; k++) {
                clopt_tensor st = {desc->state[k], soff[i]};
                if ((s = clopt_check_tensor(ctx, "state", st, e->n)) != CLOPT_SUCCESS)
                    goto fail;
                sp[nspan++] = (clopt_span){desc->state[k], 4 * soff[i], 4 * (soff[i] + e->n),
                                           "state", idx};
            }
        }
    }
    if ((s = clopt_check_disjoint(ctx, sp, nspan)) != CLOPT_SUCCESS ||
        (s = clopt_o_reserve_params(opt, T)) != CLOPT_SUCCESS ||
        (s = clopt_optimizer_add_group(opt, hp, NULL)) != CLOPT_SUCCESS)
        goto fail;
    const size_t gi = opt->ngroups - 1;
    clopt_group *g = &opt->groups[gi];
    g->ranges = 1;
    g->sr_stream = srs >= 0 ? (uint32_t)srs : (uint32_t)opt->nparams; /* its first tensor */
    g->range_param = P;
    g->range_grad = G;
    cl_int err = CL_SUCCESS;
    clopt_status fs = CLOPT_SUCCESS; /* the initial bf16 words or 8-bit codes */
    /* the multi-pass rules run per tensor with a layout of each tensor's own (Adafactor's
       factored statistics for matrices): their states are allocated per tensor below */
    const int per_tensor = own_state && clopt_rule_is_multipass(opt->rule);
    for (size_t k = 0; !per_tensor && k < layout.nstate && err == CL_SUCCESS; k++) {
        float init = k < layout.nkernel ? clopt_rule_state_init(opt->rule, hp, k) : 0.0f;
        if (own_state && layout.master && k == layout.master_at) {
            /* the masters: float32 copies of θ (made at the first step), or 16-bit
               remainders of zeros */
            g->arena_state[k] =
                clopt_o_make_zeros(ctx, total, clopt_dtype_size(layout.state_dtype[k]), &err);
            g->range_state[k] = g->arena_state[k];
        } else if (own_state && q8 && k >= layout.absmax_at &&
                   k < layout.absmax_at + layout.nkernel) {
            continue; /* made with its codes */
        } else if (own_state && k < layout.nkernel && layout.sq != CLOPT_DTYPE_F32) {
            /* bf16 state: its initial words; 8-bit: its codes and absmaxes */
            const size_t a = layout.absmax_at + k;
            g->arena_state[k] = clopt_o_make_zeros(ctx, total, q8 ? 1 : 2, &err);
            g->range_state[k] = g->arena_state[k];
            if (q8 && err == CL_SUCCESS) {
                g->arena_state[a] = clopt_o_make_zeros(ctx, total / 256, sizeof(float), &err);
                g->range_state[a] = g->arena_state[a];
            }
            if (err == CL_SUCCESS &&
                (fs = clopt_fill_state(ctx, opt->rule, hp, k, layout.sq,
                                       (clopt_tensor){g->arena_state[k], 0},
                                       (clopt_tensor){q8 ? g->arena_state[a] : NULL, 0},
                                       total)) != CLOPT_SUCCESS)
                err = CL_INVALID_VALUE; /* stops the loops; fs is the status */
        } else if (own_state) {
            g->arena_state[k] = clopt_o_make_filled(ctx, total, init, &err);
            g->range_state[k] = g->arena_state[k];
        } else {
            g->range_state[k] = desc->state[k]; /* filled (init_state) once nothing can fail */
        }
    }
    /* the chunk table: (θ offset, g offset, state offset, length) per chunk; with 8-bit
       state a chunk per block (kernels/common.cl) */
    const size_t chunk = q8 ? 256 : RANGE_CHUNK;
    size_t nchunks = 0;
    for (size_t i = 0; i < T; i++)
        nchunks += (ps[i].n + chunk - 1) / chunk;
    cl_ulong *tab = err == CL_SUCCESS ? malloc(nchunks * 4 * sizeof *tab) : NULL;
    if (err == CL_SUCCESS && !tab)
        err = CL_OUT_OF_HOST_MEMORY;
    for (size_t i = 0, c = 0; tab && i < T; i++)
        for (size_t at = 0; at < ps[i].n; at += chunk, c++) {
            tab[4 * c] = ps[i].param.offset + at;
            tab[4 * c + 1] = ps[i].grad.offset + at;
            tab[4 * c + 2] = soff[i] + at;
            tab[4 * c + 3] = ps[i].n - at < chunk ? ps[i].n - at : chunk;
        }
    if (tab)
        g->range_table = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                        nchunks * 4 * sizeof *tab, tab, &err);
    free(tab);
    g->nchunks = nchunks;
    clopt_status as = CLOPT_SUCCESS;
    for (size_t i = 0; i < T; i++) {
        clopt_param *e = &ps[i];
        e->group = gi;
        clopt_state_layout(opt, g, e);
        if (per_tensor) {
            e->owns_state = 1;
            if (err == CL_SUCCESS && as == CLOPT_SUCCESS)
                as = clopt_o_alloc_states(opt, e, 0);
            continue;
        }
        for (size_t k = 0; k < e->nstate; k++)
            e->state[k] = (clopt_tensor){g->range_state[k],
                                         q8 && k >= e->absmax_at &&
                                                 k < e->absmax_at + e->nkernel
                                             ? soff[i] / 256
                                             : soff[i]};
    }
    if (as != CLOPT_SUCCESS || fs != CLOPT_SUCCESS) {
        s = as != CLOPT_SUCCESS ? as : fs; /* its detail is recorded */
    } else if (err == CL_SUCCESS) {
        memcpy(opt->params + opt->nparams, ps, T * sizeof *ps);
        opt->nparams += T;
        if ((s = clopt_o_grow_scratch(opt)) != CLOPT_SUCCESS)
            opt->nparams -= T;
        else if (!own_state && desc->init_state &&
                 (err = fill_engine_state(opt, hp, &layout, desc, T, ps, soff)) != CL_SUCCESS)
            opt->nparams -= T, s = clopt_fail_cl(ctx, err, "initialising the engine's state");
        else if ((err = clFinish(ctx->queue)) != CL_SUCCESS)
            opt->nparams -= T, s = clopt_fail_cl(ctx, err, "initialising the range group");
    } else {
        s = clopt_fail_cl(ctx, err, "allocating the range group");
    }
    if (s != CLOPT_SUCCESS) {
        for (size_t i = 0; per_tensor && i < T; i++)
            for (size_t k = 0; k < ps[i].nstate; k++)
                if (ps[i].state[k].buffer)
                    clReleaseMemObject(ps[i].state[k].buffer);
        clopt_o_release_arena(g);
        opt->ngroups--;
        goto fail;
    }
    clopt_o_hold(g->held, &g->nheld, g->range_param);
    clopt_o_hold(g->held, &g->nheld, g->range_grad);
    for (size_t k = 0; !own_state && k < layout.nstate; k++)
        clopt_o_hold(g->held, &g->nheld, g->range_state[k]);
    if (group)
        *group = gi;
    if (first_index)
        *first_index = opt->nparams - T;
fail:
    free(ps);
    free(sp);
    free(soff);
    return s;
}

