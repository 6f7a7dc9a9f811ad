/* SPDX-License-Identifier: MIT */
/* Optimizer level: owns state buffers, the step counts, parameter groups (optionally stored
 * as arenas), schedules, Lookahead, AMP and clipping settings (torch.optim-like): creation,
 * groups and tensors. Settings, gradients, randomness and queries are in settings.c, the step
 * in step.c, the reductions and the multi-pass rules in passes.c, range groups and the overlap
 * checks in ranges.c. */
#include "optimizer_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- shapes and state layout ----------------------------------------------------------- */

/* Adafactor's factored view B × R × C of a tensor with >= 2 dims (0 rows: not factored). */
void clopt_o_factored_view(const clopt_param *e, size_t *b, size_t *r, size_t *c)
{
    *b = 1;
    *r = *c = 0;
    if (e->ndim < 2)
        return;
    for (size_t d = 0; d + 2 < e->ndim; d++)
        *b *= e->shape[d];
    *r = e->shape[e->ndim - 2];
    *c = e->shape[e->ndim - 1];
}

/* Rows of the GC view (first dim × the rest), 0 when GC does not apply to this tensor. */
size_t clopt_o_gc_rows(const clopt_hparams *hp, const clopt_param *e)
{
    if (!hp->grad_centralization || e->ndim <= (hp->gc_conv_only ? 3u : 1u))
        return 0;
    return e->shape[0];
}

int clopt_group_lookahead(const clopt_optimizer *opt, const clopt_group *g)
{
    (void)opt;
    return g->hp.lookahead_k > 0;
}

void clopt_state_layout(const clopt_optimizer *opt, const clopt_group *g, clopt_param *e)
{
    const clopt_hparams *hp = &g->hp;
    size_t k = 0;
    if (opt->rule == CLOPT_ADAFACTOR) {
        size_t b, r, c;
        clopt_o_factored_view(e, &b, &r, &c);
        if (r) {
            e->state_name[k] = "exp_avg_sq_row", e->state_len[k++] = b * r;
            e->state_name[k] = "exp_avg_sq_col", e->state_len[k++] = b * c;
        } else {
            e->state_name[k] = "exp_avg_sq", e->state_len[k++] = e->n;
        }
        if (hp->use_beta1)
            e->state_name[k] = "exp_avg", e->state_len[k++] = e->n;
    } else {
        size_t ns = clopt_rule_state_count(opt->rule, hp);
        for (; k < ns; k++)
            e->state_name[k] = clopt_rule_state_name(opt->rule, hp, k), e->state_len[k] = e->n;
    }
    e->nkernel = k;
    for (size_t j = 0; j < CLOPT_OPT_MAX_STATE; j++)
        e->state_dtype[j] = CLOPT_DTYPE_F32;
    /* the state's storage: the group's, except float32 for the 8-bit state of tensors under
       4096 elements (as bitsandbytes) outside arena and range groups (whose tensors share
       one launch, so every one of them gets the group's) */
    e->sq = CLOPT_DTYPE_F32;
    if (hp->state_dtype == CLOPT_DTYPE_BF16 ||
        (hp->state_dtype == CLOPT_DTYPE_U8 &&
         (e->n >= CLOPT_Q8_MIN_SIZE || g->arena || g->ranges)))
        e->sq = (clopt_dtype)hp->state_dtype;
    e->absmax_at = 0;
    if (opt->rule != CLOPT_ADAFACTOR)
        for (size_t j = 0; j < k; j++)
            e->state_dtype[j] = e->sq;
    if (e->sq == CLOPT_DTYPE_U8) {
        e->absmax_at = k;
        for (size_t j = 0; j < e->nkernel; j++) {
            e->state_name[k] = clopt_absmax_name(e->state_name[j]);
            e->state_len[k++] = clopt_q8_blocks(e->n);
        }
    }
    e->master = e->pdtype != CLOPT_DTYPE_F32 ? hp->master : CLOPT_MASTER_NONE;
    e->master_at = 0;
    if (e->master) {
        e->master_at = k;
        e->state_dtype[k] = e->master == CLOPT_MASTER_F32 ? CLOPT_DTYPE_F32 : CLOPT_DTYPE_U16;
        e->state_name[k] = e->master == CLOPT_MASTER_F32 ? "master" : "master_remainder";
        e->state_len[k++] = e->n;
    }
    e->slow_at = 0;
    if (clopt_group_lookahead(opt, g)) {
        e->slow_at = k;
        e->state_name[k] = opt->rule == CLOPT_RANGER ? "slow_buffer" : "slow_params";
        e->state_len[k++] = e->n;
    }
    e->nstate = k;
}

/* Scratch floats one tensor's step needs: partials (2 per work-group), 2 sums, Adafactor's
   row means (one per batch), GC row means and Adafactor's statistics partials. */
static size_t scratch_need(const clopt_optimizer *opt, const clopt_param *e)
{
    if (opt->rule != CLOPT_ADAFACTOR)
        return clopt_o_scr_af(e);
    clopt_af_tiles t;
    clopt_o_af_tiles(opt, e, &t);
    return clopt_o_scr_af(e) + t.floats;
}

size_t clopt_o_scr_gc(const clopt_param *e)
{
    size_t b, r, c;
    clopt_o_factored_view(e, &b, &r, &c);
    return SCR_RMEAN + b;
}

size_t clopt_o_scr_af(const clopt_param *e)
{
    return clopt_o_scr_gc(e) + (e->ndim > 1 ? e->shape[0] : 0);
}

/* ---- create / destroy / groups ----------------------------------------------------------- */

clopt_status clopt_o_check_hparams(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp)
{
    const char *why = "";
    clopt_status s = clopt_hparams_validate(rule, hp, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_fail(ctx, s, "%s", why);
    if (hp->state_dtype == CLOPT_DTYPE_U8 && !clopt_rule_q8_ok(rule, hp))
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "%s%s%s has no 8-bit state (SGD, Adam, AdamW, Lion, RMSprop not "
                          "centered, Adagrad, AdEMAMix without cautious masking do)",
                          hp->cautious ? "cautious " : "",
                          rule == CLOPT_RMSPROP && hp->centered ? "centered " : "",
                          clopt_rule_name(rule));
    if (hp->state_dtype != CLOPT_DTYPE_F32 && rule == CLOPT_ADAFACTOR)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "adafactor keeps float32 state (its factored statistics are small)");
    if (rule == CLOPT_MUON && hp->grad_centralization) /* (it was accepted and ignored) */
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "muon has no gradient centralization (its update is the "
                          "orthogonalized momentum of the whole matrix)");
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_create(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                    clopt_optimizer **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if (!hp || !out)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams and out must not be NULL");
    clopt_status s = clopt_o_check_hparams(ctx, rule, hp);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_command_queue_properties props = 0;
    clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL);
    if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "the optimizer level needs an in-order queue in the clopt_ctx");
    clopt_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "optimizer");
    opt->ctx = ctx;
    opt->rule = rule;
    opt->last_grad_norm = NAN;
    opt->report.grad_norm = NAN;
    cl_uint words[8] = {0};
    cl_int err = CL_SUCCESS;
    opt->ctl = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              sizeof words, words, &err);
    if (!opt->ctl) {
        free(opt);
        return clopt_fail_cl(ctx, err, "allocating the step's control words");
    }
    if ((s = clopt_optimizer_add_group(opt, hp, NULL)) != CLOPT_SUCCESS) {
        clReleaseMemObject(opt->ctl);
        free(opt);
        return s;
    }
    *out = opt;
    return CLOPT_SUCCESS;
}

void clopt_o_hold(cl_mem *held, size_t *nheld, cl_mem m)
{
    if (m && clRetainMemObject(m) == CL_SUCCESS)
        held[(*nheld)++] = m;
}

static void release_param(clopt_param *e)
{
    for (size_t i = 0; i < e->nheld; i++)
        clReleaseMemObject(e->held[i]);
    e->nheld = 0;
    for (size_t i = 0; e->owns_state && i < e->nstate; i++)
        if (e->state[i].buffer)
            clReleaseMemObject(e->state[i].buffer);
    if (e->param_sub)
        clReleaseMemObject(e->param_sub);
    if (e->grad_sub)
        clReleaseMemObject(e->grad_sub);
}

void clopt_o_release_arena(clopt_group *g)
{
    cl_mem *all[] = {&g->arena_param, &g->arena_grad};
    for (size_t i = 0; i < 2; i++)
        if (*all[i])
            clReleaseMemObject(*all[i]), *all[i] = NULL;
    for (size_t i = 0; i < CLOPT_OPT_MAX_STATE; i++)
        if (g->arena_state[i])
            clReleaseMemObject(g->arena_state[i]), g->arena_state[i] = NULL;
    if (g->range_table)
        clReleaseMemObject(g->range_table), g->range_table = NULL;
    for (size_t i = 0; i < g->nheld; i++)
        clReleaseMemObject(g->held[i]);
    g->nheld = 0;
}

void clopt_optimizer_destroy(clopt_optimizer *opt)
{
    if (!opt)
        return;
    clopt_opt_settle(opt); /* waits for every step in flight, on any queue */
    while (opt->rec_count) { /* only when waiting failed */
        clReleaseEvent(opt->rec[opt->rec_head].done);
        free(opt->rec[opt->rec_head].tab);
        opt->rec_head = (opt->rec_head + 1) % CLOPT_MAX_IN_FLIGHT;
        opt->rec_count--;
    }
    for (size_t i = 0; i < CLOPT_MAX_IN_FLIGHT; i++)
        free(opt->rec[i].gate);
    if (opt->ctl)
        clReleaseMemObject(opt->ctl);
    if (opt->check)
        clReleaseMemObject(opt->check);
    if (opt->tab)
        clReleaseMemObject(opt->tab);
    free(opt->tab_host);
    for (size_t i = 0; i < opt->nparams; i++)
        release_param(&opt->params[i]);
    for (size_t i = 0; i < opt->ngroups; i++)
        clopt_o_release_arena(&opt->groups[i]);
    if (opt->scratch)
        clReleaseMemObject(opt->scratch);
    clopt_o_muon_release(opt);
    free(opt->params);
    free(opt->groups);
    free(opt);
}

clopt_status clopt_optimizer_add_group(clopt_optimizer *opt, const clopt_hparams *hp,
                                       size_t *group)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!hp)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams is NULL");
    clopt_status s = clopt_o_check_hparams(opt->ctx, opt->rule, hp);
    if (s != CLOPT_SUCCESS)
        return s;
    if (opt->ngroups == opt->cap_groups) {
        size_t cap = opt->cap_groups ? 2 * opt->cap_groups : 4;
        clopt_group *g = realloc(opt->groups, cap * sizeof *g);
        if (!g)
            return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "group table");
        opt->groups = g;
        opt->cap_groups = cap;
    }
    clopt_group *g = &opt->groups[opt->ngroups];
    memset(g, 0, sizeof *g);
    g->hp = *hp;
    if (group)
        *group = opt->ngroups;
    opt->ngroups++;
    return CLOPT_SUCCESS;
}

size_t clopt_optimizer_group_count(const clopt_optimizer *opt) { return opt ? opt->ngroups : 0; }

/* The checks every per-group setter starts with (clears the context's last error). */
static clopt_status group_call(clopt_optimizer *opt, size_t group, const void *arg,
                               const char *what)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!arg)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "%s is NULL", what);
    if (group >= opt->ngroups)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no group %zu", group);
    return CLOPT_SUCCESS;
}

/* A group's hyperparameters may change between steps, but not its state layout. */
clopt_status clopt_optimizer_set_group_hparams(clopt_optimizer *opt, size_t group,
                                               const clopt_hparams *hp)
{
    clopt_status s = group_call(opt, group, hp, "hparams");
    if (s == CLOPT_SUCCESS)
        s = clopt_o_check_hparams(opt->ctx, opt->rule, hp);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_group then = opt->groups[group];
    then.hp = *hp;
    for (size_t i = 0; i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        if (e->group != group)
            continue;
        clopt_param other = *e;
        clopt_state_layout(opt, &then, &other);
        int same = other.nstate == e->nstate;
        for (size_t k = 0; same && k < e->nstate; k++)
            same = strcmp(other.state_name[k], e->state_name[k]) == 0 &&
                   other.state_len[k] == e->state_len[k] &&
                   other.state_dtype[k] == e->state_dtype[k];
        if (!same)
            return clopt_fail(opt->ctx, CLOPT_ERR_STATE_MISMATCH,
                              "these hyperparameters change the state layout of tensor %zu", i);
    }
    opt->groups[group].hp = *hp;
    return CLOPT_SUCCESS;
}

/* The checks of a getter of group `group` into out. */
static clopt_status group_get(const clopt_optimizer *opt, size_t group, const void *out)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!out)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
    if (group >= opt->ngroups)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no group %zu", group);
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_get_group_hparams(const clopt_optimizer *opt, size_t group,
                                               clopt_hparams *out)
{
    const clopt_status s = group_get(opt, group, out);
    if (s == CLOPT_SUCCESS)
        *out = opt->groups[group].hp;
    return s;
}

clopt_status clopt_optimizer_set_hparams(clopt_optimizer *opt, const clopt_hparams *hp)
{
    return clopt_optimizer_set_group_hparams(opt, 0, hp);
}

clopt_status clopt_optimizer_get_hparams(const clopt_optimizer *opt, clopt_hparams *out)
{
    return clopt_optimizer_get_group_hparams(opt, 0, out);
}

clopt_status clopt_optimizer_get_group_schedule(const clopt_optimizer *opt, size_t group,
                                                clopt_schedule *out)
{
    const clopt_status s = group_get(opt, group, out);
    if (s == CLOPT_SUCCESS)
        *out = opt->groups[group].sched;
    return s;
}

clopt_status clopt_optimizer_set_group_schedule(clopt_optimizer *opt, size_t group,
                                                const clopt_schedule *s)
{
    clopt_status st = group_call(opt, group, s, "schedule");
    if (st != CLOPT_SUCCESS)
        return st;
    const char *why = "";
    st = clopt_schedule_validate(s, &why);
    if (st != CLOPT_SUCCESS)
        return clopt_fail(opt->ctx, st, "schedule: %s", why);
    opt->groups[group].sched = *s;
    return CLOPT_SUCCESS;
}

double clopt_o_group_lr(const clopt_group *g, uint64_t count)
{
    const double lr = g->hp.lr * clopt_schedule_factor(&g->sched, count);
    return fabs(lr) < FLT_MIN ? 0.0 : lr;
}

double clopt_optimizer_group_lr(const clopt_optimizer *opt, size_t group)
{
    if (!opt || group >= opt->ngroups)
        return NAN;
    return clopt_o_group_lr(&opt->groups[group], opt->step);
}

/* ---- parameters ----------------------------------------------------------------------- */

clopt_status clopt_o_grow_scratch(clopt_optimizer *opt)
{
    size_t need = 0;
    for (size_t i = 0; i < opt->nparams; i++)
        if (scratch_need(opt, &opt->params[i]) > need)
            need = scratch_need(opt, &opt->params[i]);
    return clopt_o_ensure_buffer(opt, &opt->scratch, &opt->scratch_len, need, CL_MEM_READ_WRITE,
                                 "allocating reduction scratch");
}

clopt_status clopt_o_ensure_buffer(clopt_optimizer *opt, cl_mem *m, size_t *len, size_t floats,
                                   cl_mem_flags flags, const char *what)
{
    if (floats <= *len)
        return CLOPT_SUCCESS;
    cl_int err = CL_SUCCESS;
    cl_mem b = clCreateBuffer(opt->ctx->context, flags, floats * sizeof(float), NULL, &err);
    if (!b)
        return clopt_fail_cl(opt->ctx, err, what);
    if (*m)
        clReleaseMemObject(*m); /* deferred by OpenCL until its commands finish */
    *m = b;
    *len = floats;
    return CLOPT_SUCCESS;
}

clopt_status clopt_o_reserve_params(clopt_optimizer *opt, size_t more)
{
    if (opt->nparams + more <= opt->cap_params)
        return CLOPT_SUCCESS;
    size_t cap = opt->cap_params ? opt->cap_params : 8;
    while (cap < opt->nparams + more)
        cap *= 2;
    clopt_param *p = realloc(opt->params, cap * sizeof *p);
    if (!p)
        return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "parameter table");
    opt->params = p;
    opt->cap_params = cap;
    return CLOPT_SUCCESS;
}

/* Shape checks shared by both ways of adding tensors; fills e's shape and n. */
clopt_status clopt_o_take_shape(clopt_ctx *ctx, const clopt_param_desc *d, clopt_param *e)
{
    if (d->ndim > CLOPT_MAX_DIMS)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "ndim %zu > %d", d->ndim, CLOPT_MAX_DIMS);
    e->ndim = d->ndim ? d->ndim : 1;
    e->n = 1;
    for (size_t k = 0; k < e->ndim; k++) {
        e->shape[k] = d->shape[k];
        if (e->shape[k] == 0)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "shape[%zu] is 0", k);
        if (e->n > SIZE_MAX / sizeof(float) / e->shape[k])
            return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "the shape is too large");
        e->n *= e->shape[k];
    }
    return CLOPT_SUCCESS;
}

/* Allocates and initialises e's own state buffers from index `from` on. */
clopt_status clopt_o_alloc_states(clopt_optimizer *opt, clopt_param *e, size_t from)
{
    const clopt_hparams *hp = &opt->groups[e->group].hp;
    for (size_t i = from; i < e->nstate; i++) {
        cl_int err = CL_SUCCESS;
        size_t bytes = e->state_len[i] * clopt_state_esize(e, i);
        cl_mem m = clCreateBuffer(opt->ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (m) {
            e->state[i] = (clopt_tensor){m, 0};
            float init = i < e->nkernel ? clopt_rule_state_init(opt->rule, hp, i) : 0.0f;
            if (i < e->nkernel && e->sq != CLOPT_DTYPE_F32 && opt->rule != CLOPT_ADAFACTOR) {
                /* 16-bit or 8-bit state: its own initial codes (the absmax comes later) */
                if (e->sq == CLOPT_DTYPE_BF16) {
                    clopt_status s = clopt_fill_state(opt->ctx, opt->rule, hp, i, e->sq,
                                                      e->state[i], (clopt_tensor){NULL, 0},
                                                      e->n);
                    if (s != CLOPT_SUCCESS)
                        return s;
                }
                continue;
            }
            if (e->sq == CLOPT_DTYPE_U8 && i >= e->absmax_at && i < e->absmax_at + e->nkernel) {
                /* the codes and the absmax of kernel state i - absmax_at, together */
                clopt_status s = clopt_fill_state(opt->ctx, opt->rule, hp, i - e->absmax_at,
                                                  e->sq, e->state[i - e->absmax_at],
                                                  e->state[i], e->n);
                if (s != CLOPT_SUCCESS)
                    return s;
                continue;
            }
            /* a remainder of zeros: the master is θ; other states their initial value */
            const cl_ushort zero16 = 0;
            err = clopt_state_esize(e, i) == 2
                      ? clopt_fill(opt->ctx->queue, m, &zero16, sizeof zero16, 0, bytes)
                      : clopt_fill(opt->ctx->queue, m, &init, sizeof init, 0, bytes);
        }
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "allocating optimizer state");
    }
    return CLOPT_SUCCESS;
}

const char *clopt_absmax_name(const char *state)
{
    static const char *names[][2] = {
        {"exp_avg", "exp_avg.absmax"},
        {"exp_avg_sq", "exp_avg_sq.absmax"},
        {"max_exp_avg_sq", "max_exp_avg_sq.absmax"},
        {"momentum_buffer", "momentum_buffer.absmax"},
        {"sum", "sum.absmax"},
        {"square_avg", "square_avg.absmax"},
        {"grad_avg", "grad_avg.absmax"},
        {"exp_avg_fast", "exp_avg_fast.absmax"},
        {"exp_avg_slow", "exp_avg_slow.absmax"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(state, names[i][0]) == 0)
            return names[i][1];
    return "absmax";
}

/* The storage of a caller-owned tensor: what the group's rule and options allow. */
clopt_status clopt_o_take_storage(clopt_optimizer *opt, const clopt_group *g,
                                  const clopt_param_desc *d, clopt_param *e)
{
    clopt_ctx *ctx = opt->ctx;
    const clopt_dtype p = d->param_dtype, q = d->grad_dtype;
    if (opt->rule == CLOPT_MUON && e->ndim != 2)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "muon takes 2-D tensors (matrices) only (this one has %zu dims): put "
                          "vectors, biases, norms and embeddings into an AdamW optimizer (the "
                          "usual hybrid)", e->ndim);
    if (opt->rule == CLOPT_MUON && !clopt_has_muon())
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "muon needs CLBlast, and this library was built without it");
    if ((p != CLOPT_DTYPE_F32 && p != CLOPT_DTYPE_F16 && p != CLOPT_DTYPE_BF16) ||
        (q != CLOPT_DTYPE_F32 && q != CLOPT_DTYPE_F16 && q != CLOPT_DTYPE_BF16))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "param_dtype and grad_dtype must be CLOPT_DTYPE_F32, F16 or BF16 "
                          "(got %d and %d)", (int)p, (int)q);
    e->pdtype = p;
    e->gdtype = q;
    const clopt_hparams *hp = &g->hp;
    if (p == CLOPT_DTYPE_F32 && q == CLOPT_DTYPE_F32)
        return CLOPT_SUCCESS;
    if (hp->master == CLOPT_MASTER_REMAINDER && p == CLOPT_DTYPE_F16)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "the group keeps bf16 remainders (master = CLOPT_MASTER_REMAINDER): "
                          "an f16 param needs CLOPT_MASTER_F32 or none");
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_add_param_desc(clopt_optimizer *opt, size_t group,
                                            const clopt_param_desc *desc, size_t *index)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!desc)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "desc is NULL");
    if (group >= opt->ngroups)
        return clopt_fail(ctx, CLOPT_ERR_INDEX, "no group %zu", group);
    if (opt->groups[group].arena || opt->groups[group].ranges)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "group %zu is an %s group: its tensors are fixed at creation", group,
                          opt->groups[group].arena ? "arena" : "range");
    /* the verdicts of steps in flight first: they advance the counts of the tensors that
       were there (a new tensor starts at 0) */
    clopt_status st = clopt_opt_settle(opt);
    if (st != CLOPT_SUCCESS)
        return st;
    clopt_param e;
    memset(&e, 0, sizeof e);
    e.mu_product = 1.0;
    clopt_status s = clopt_o_take_shape(ctx, desc, &e);
    if (s != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_o_take_storage(opt, &opt->groups[group], desc, &e)) != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_tensor_of(ctx, "param", desc->param, e.n,
                                   clopt_dtype_size(e.pdtype))) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor_of(ctx, "grad", desc->grad, e.n,
                                   clopt_dtype_size(e.gdtype))) != CLOPT_SUCCESS)
        return s;
    if (desc->hessian.buffer) {
        if (opt->rule != CLOPT_SOPHIA)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH, "%s takes no Hessian estimate",
                              clopt_rule_name(opt->rule));
        if ((s = clopt_check_tensor(ctx, "hessian", desc->hessian, e.n)) != CLOPT_SUCCESS)
            return s;
    }
    size_t nspan = 0;
    clopt_span *sp = clopt_o_spans_of(opt, 2, &nspan);
    if (!sp)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "overlap check");
    const size_t ps = clopt_dtype_size(e.pdtype), gs = clopt_dtype_size(e.gdtype);
    sp[nspan++] = (clopt_span){desc->param.buffer, desc->param.offset * ps,
                               (desc->param.offset + e.n) * ps, "param", opt->nparams};
    sp[nspan++] = (clopt_span){desc->grad.buffer, desc->grad.offset * gs,
                               (desc->grad.offset + e.n) * gs, "grad", opt->nparams};
    s = clopt_check_disjoint(ctx, sp, nspan);
    free(sp);
    if (s != CLOPT_SUCCESS || (s = clopt_o_reserve_params(opt, 1)) != CLOPT_SUCCESS)
        return s;
    e.param = desc->param;
    e.grad = desc->grad;
    e.hessian = desc->hessian;
    e.group = group;
    e.owns_state = 1;
    clopt_state_layout(opt, &opt->groups[group], &e);
    s = clopt_o_alloc_states(opt, &e, 0);
    if (s == CLOPT_SUCCESS) {
        opt->params[opt->nparams++] = e; /* clopt_o_grow_scratch sizes for it */
        s = clopt_o_grow_scratch(opt);
        if (s != CLOPT_SUCCESS)
            opt->nparams--;
    }
    cl_int err = clFinish(ctx->queue);
    if (s == CLOPT_SUCCESS && err != CL_SUCCESS) {
        opt->nparams--;
        s = clopt_fail_cl(ctx, err, "initialising optimizer state");
    }
    if (s != CLOPT_SUCCESS) {
        release_param(&e);
        return s;
    }
    clopt_param *kept = &opt->params[opt->nparams - 1];
    clopt_o_hold(kept->held, &kept->nheld, kept->param.buffer);
    clopt_o_hold(kept->held, &kept->nheld, kept->grad.buffer);
    clopt_o_hold(kept->held, &kept->nheld, kept->hessian.buffer);
    if (index)
        *index = opt->nparams - 1;
    return CLOPT_SUCCESS;
}

void clopt_param_desc_init(clopt_param_desc *d)
{
    if (d)
        memset(d, 0, sizeof *d);
}

clopt_status clopt_optimizer_add_param(clopt_optimizer *opt, clopt_tensor param,
                                       clopt_tensor grad, size_t n, const clopt_tensor *hessian,
                                       size_t *index)
{
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.param = param;
    d.grad = grad;
    if (hessian)
        d.hessian = *hessian;
    d.ndim = 1;
    d.shape[0] = n;
    return clopt_optimizer_add_param_desc(opt, 0, &d, index);
}

cl_mem clopt_o_make_filled(clopt_ctx *ctx, size_t floats, float value, cl_int *err)
{
    cl_mem m = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, err);
    if (m && (*err = clopt_fill(ctx->queue, m, &value, sizeof value, 0,
                                floats * sizeof(float))) != CL_SUCCESS) {
        clReleaseMemObject(m);
        m = NULL;
    }
    return m;
}

cl_mem clopt_o_make_zeros(clopt_ctx *ctx, size_t n, size_t es, cl_int *err)
{
    if (es == sizeof(float))
        return clopt_o_make_filled(ctx, n, 0.0f, err);
    cl_mem m = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, n * es, NULL, err);
    const cl_ushort zero = 0;
    if (m && (*err = clopt_fill(ctx->queue, m, &zero, sizeof zero, 0, n * es)) != CL_SUCCESS) {
        clReleaseMemObject(m);
        m = NULL;
    }
    return m;
}

static cl_mem sub_buffer(cl_mem parent, size_t offset, size_t n, size_t es, cl_int *err)
{
    cl_buffer_region r = {offset * es, n * es};
    return clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, err);
}

clopt_status clopt_optimizer_add_arena_group(clopt_optimizer *opt, const clopt_hparams *hp,
                                             size_t ntensors, const clopt_param_desc *shapes,
                                             size_t *group, size_t *first_index)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!hp || !shapes)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams and shapes must not be NULL");
    if (ntensors == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "an arena group needs >= 1 tensor");
    clopt_status s = clopt_o_check_hparams(ctx, opt->rule, hp);
    if (s == CLOPT_SUCCESS)
        s = clopt_opt_settle(opt); /* steps in flight count only the tensors they had */
    if (s != CLOPT_SUCCESS)
        return s;
    if (opt->rule == CLOPT_SOPHIA)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "sophia needs the engine's Hessian-estimate buffer per tensor: add its "
                          "tensors with clopt_optimizer_add_param_desc (an arena group would "
                          "take no estimates and degrade to sign steps)");
    /* Offsets: every tensor starts at a multiple of the device's base-address alignment. */
    cl_uint align_bits = 0;
    cl_int qerr = clGetDeviceInfo(ctx->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits,
                                  &align_bits, NULL);
    if (qerr != CL_SUCCESS)
        return clopt_fail_cl(ctx, qerr, "clGetDeviceInfo(CL_DEVICE_MEM_BASE_ADDR_ALIGN)");
    /* in elements of the smallest type among θ, g (1 or 2 bytes narrower) and the states */
    const clopt_dtype pt = shapes[0].param_dtype, gt = shapes[0].grad_dtype;
    const size_t pes = clopt_dtype_size(pt), ges = clopt_dtype_size(gt);
    const size_t min_es = pes < ges ? pes : ges;
    const size_t align_bytes = align_bits >= 8 ? align_bits / 8 : 1;
    size_t align = align_bytes >= min_es ? align_bytes / (min_es ? min_es : 4) : 1;
    /* 8-bit state: every tensor starts a block of 256, so no block mixes two tensors */
    if (hp->state_dtype == CLOPT_DTYPE_U8 && align < 256)
        align = 256 % align == 0 ? 256 : align * 256;
    clopt_param *ps = calloc(ntensors, sizeof *ps);
    if (!ps)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "arena table");
    clopt_group probe;
    memset(&probe, 0, sizeof probe);
    probe.hp = *hp;
    size_t total = 0;
    for (size_t i = 0; i < ntensors; i++) {
        if ((s = clopt_o_take_shape(ctx, &shapes[i], &ps[i])) != CLOPT_SUCCESS ||
            (s = clopt_o_take_storage(opt, &probe, &shapes[i], &ps[i])) != CLOPT_SUCCESS) {
            free(ps);
            return s;
        }
        if (shapes[i].param_dtype != pt || shapes[i].grad_dtype != gt) {
            free(ps);
            return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                              "tensor %zu: the tensors of an arena group share their storage "
                              "types (one buffer each)", i);
        }
        ps[i].mu_product = 1.0;
        ps[i].param.offset = total;
        size_t padded = (ps[i].n + align - 1) / align * align;
        if (total > SIZE_MAX / sizeof(float) - padded) {
            free(ps);
            return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "the arena is too large");
        }
        total += padded;
    }
    if ((s = clopt_o_reserve_params(opt, ntensors)) != CLOPT_SUCCESS ||
        (s = clopt_optimizer_add_group(opt, hp, NULL)) != CLOPT_SUCCESS) {
        free(ps);
        return s;
    }
    const size_t gi = opt->ngroups - 1;
    clopt_group *g = &opt->groups[gi];
    g->arena = 1;
    g->first = opt->nparams;
    g->count = ntensors;
    g->arena_len = total;
    /* the layout of the first tensor gives the roles (element-wise rules: all the same) */
    ps[0].group = gi;
    clopt_state_layout(opt, g, &ps[0]);
    const int shared_state = !clopt_rule_is_multipass(opt->rule);
    clopt_status as = CLOPT_SUCCESS;
    cl_int err = CL_SUCCESS;
    g->arena_param = clopt_o_make_zeros(ctx, total, pes, &err);
    if (g->arena_param)
        g->arena_grad = clopt_o_make_zeros(ctx, total, ges, &err);
    const clopt_param *l0 = &ps[0];
    const int q8 = l0->sq == CLOPT_DTYPE_U8;
    for (size_t k = 0; shared_state && err == CL_SUCCESS && k < l0->nstate; k++) {
        float init = k < l0->nkernel ? clopt_rule_state_init(opt->rule, hp, k) : 0.0f;
        const size_t es = clopt_state_esize(l0, k);
        const int absmax = q8 && k >= l0->absmax_at && k < l0->absmax_at + l0->nkernel;
        const size_t len = absmax ? clopt_q8_blocks(total) : total;
        g->arena_state[k] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, len * es, NULL, &err);
        if (err != CL_SUCCESS || absmax)
            continue; /* filled with their codes below */
        if (k < l0->nkernel && l0->sq != CLOPT_DTYPE_F32)
            continue;
        if (es == sizeof(float))
            err = clopt_fill(ctx->queue, g->arena_state[k], &init, sizeof init, 0, total * es);
        else
            err = clopt_fill(ctx->queue, g->arena_state[k], &(cl_ushort){0}, 2, 0, total * es);
    }
    /* bf16 or 8-bit state: its initial words or codes (and absmaxes) over the whole arena */
    for (size_t k = 0; shared_state && err == CL_SUCCESS && l0->sq != CLOPT_DTYPE_F32 &&
                       k < l0->nkernel && as == CLOPT_SUCCESS;
         k++)
        as = clopt_fill_state(ctx, opt->rule, hp, k, l0->sq, (clopt_tensor){g->arena_state[k], 0},
                              (clopt_tensor){q8 ? g->arena_state[l0->absmax_at + k] : NULL, 0},
                              total);
    size_t made = 0;
    for (; err == CL_SUCCESS && as == CLOPT_SUCCESS && made < ntensors; made++) {
        clopt_param *e = &ps[made];
        const size_t off = e->param.offset;
        e->group = gi;
        clopt_state_layout(opt, g, e);
        e->param = (clopt_tensor){g->arena_param, off};
        e->grad = (clopt_tensor){g->arena_grad, off};
        e->param_sub = sub_buffer(g->arena_param, off, e->n, pes, &err);
        if (err == CL_SUCCESS)
            e->grad_sub = sub_buffer(g->arena_grad, off, e->n, ges, &err);
        if (err != CL_SUCCESS)
            break;
        if (shared_state) {
            for (size_t k = 0; k < e->nstate; k++)
                e->state[k] = (clopt_tensor){g->arena_state[k],
                                             q8 && k >= e->absmax_at &&
                                                     k < e->absmax_at + e->nkernel
                                                 ? off / 256
                                                 : off};
        } else {
            e->owns_state = 1;
            if ((as = clopt_o_alloc_states(opt, e, 0)) != CLOPT_SUCCESS)
                break;
        }
    }
    if (as != CLOPT_SUCCESS) {
        s = as; /* its detail is recorded */
    } else if (err == CL_SUCCESS) {
        memcpy(opt->params + opt->nparams, ps, ntensors * sizeof *ps);
        opt->nparams += ntensors;
        s = clopt_o_grow_scratch(opt);
        if (s != CLOPT_SUCCESS)
            opt->nparams -= ntensors;
        else if ((err = clFinish(ctx->queue)) != CL_SUCCESS)
            opt->nparams -= ntensors, s = clopt_fail_cl(ctx, err, "initialising the arena");
    } else {
        s = clopt_fail_cl(ctx, err, "allocating the arena");
    }
    if (s != CLOPT_SUCCESS) {
        /* every entry: the one that failed half way holds a sub-buffer or states too, and
           the untouched ones are zeroed (calloc) */
        for (size_t i = 0; i < ntensors; i++)
            release_param(&ps[i]);
        clopt_o_release_arena(g);
        opt->ngroups--;
        free(ps);
        return s;
    }
    free(ps);
    if (group)
        *group = gi;
    if (first_index)
        *first_index = g->first;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_param_view(const clopt_optimizer *opt, size_t param,
                                        clopt_tensor *param_view, clopt_tensor *grad_view,
                                        cl_mem *param_sub, cl_mem *grad_sub)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (param >= opt->nparams)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no tensor %zu", param);
    const clopt_param *e = &opt->params[param];
    if (param_view)
        *param_view = e->param;
    if (grad_view)
        *grad_view = e->grad;
    if (param_sub)
        *param_sub = e->param_sub;
    if (grad_sub)
        *grad_sub = e->grad_sub;
    return CLOPT_SUCCESS;
}
