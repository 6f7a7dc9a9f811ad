/* SPDX-License-Identifier: MIT */
/* Optimizer level: owns state buffers, the step count, parameter groups (optionally stored
 * as arenas), schedules, Lookahead, AMP and clipping (torch.optim-like). Element-wise rules
 * run one clopt_enqueue_step per tensor, or one per arena group; Adafactor and LAMB run their
 * passes here, with their reductions in a fixed order (kernels/reduce.cl). Everything is
 * enqueued on the context's queue, which must be in order. */
#include "optimizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Partial sums per reduction: a fixed number of items, so sums do not depend on the device.
   Each item sums a contiguous block of REDUCE_WIDTH-float chunks (RW in kernels/common.cl). */
#define REDUCE_ITEMS 4096u
#define REDUCE_WIDTH 16u
/* Elements per work-item of lamb_update and adafactor_update: RW · UPDATE_CHUNKS (common.cl);
   columns per work-item of adafactor_cols: RW · COL_CHUNKS (adafactor.cl). */
#define UPDATE_WIDTH (REDUCE_WIDTH * 4u)
#define COLS_WIDTH (REDUCE_WIDTH * 4u)

enum { SCR_SUMS = 2 * REDUCE_ITEMS, SCR_RMEAN = 2 * REDUCE_ITEMS + 2 };

/* ---- shapes and state layout ----------------------------------------------------------- */

/* Adafactor's factored view B × R × C of a tensor with >= 2 dims (0 rows: not factored). */
static void factored_view(const clopt_param *e, size_t *b, size_t *r, size_t *c)
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
static size_t gc_rows(const clopt_hparams *hp, const clopt_param *e)
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
        factored_view(e, &b, &r, &c);
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
    if (clopt_group_lookahead(opt, g)) {
        e->state_name[k] = opt->rule == CLOPT_RANGER ? "slow_buffer" : "slow_params";
        e->state_len[k++] = e->n;
    }
    e->nstate = k;
}

/* Scratch floats one tensor's step needs: partials (2 per item), 2 sums, Adafactor's row
   means (one per batch) and GC row means. */
static size_t scratch_need(const clopt_param *e)
{
    size_t b, r, c;
    factored_view(e, &b, &r, &c);
    return 2 * (size_t)REDUCE_ITEMS + 2 + b + (e->ndim > 1 ? e->shape[0] : 0);
}

static size_t scr_gc(const clopt_param *e)
{
    size_t b, r, c;
    factored_view(e, &b, &r, &c);
    return SCR_RMEAN + b;
}

/* ---- create / destroy / groups ----------------------------------------------------------- */

static clopt_status check_hparams(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp)
{
    const char *why = "";
    clopt_status s = clopt_hparams_validate(rule, hp, &why);
    return s == CLOPT_SUCCESS ? s : clopt_fail(ctx, s, "%s", why);
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
    clopt_status s = check_hparams(ctx, rule, hp);
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

static void release_param(clopt_param *e)
{
    for (size_t i = 0; e->owns_state && i < e->nstate; i++)
        if (e->state[i].buffer)
            clReleaseMemObject(e->state[i].buffer);
    if (e->param_sub)
        clReleaseMemObject(e->param_sub);
    if (e->grad_sub)
        clReleaseMemObject(e->grad_sub);
}

static void release_arena(clopt_group *g)
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
}

void clopt_optimizer_destroy(clopt_optimizer *opt)
{
    if (!opt)
        return;
    clopt_opt_settle(opt); /* waits for every step in flight, on any queue */
    while (opt->rec_count) { /* only when waiting failed */
        clReleaseEvent(opt->rec[opt->rec_head].done);
        opt->rec_head = (opt->rec_head + 1) % CLOPT_MAX_IN_FLIGHT;
        opt->rec_count--;
    }
    if (opt->ctl)
        clReleaseMemObject(opt->ctl);
    if (opt->check)
        clReleaseMemObject(opt->check);
    for (size_t i = 0; i < opt->nparams; i++)
        release_param(&opt->params[i]);
    for (size_t i = 0; i < opt->ngroups; i++)
        release_arena(&opt->groups[i]);
    if (opt->scratch)
        clReleaseMemObject(opt->scratch);
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
    clopt_status s = check_hparams(opt->ctx, opt->rule, hp);
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
        s = check_hparams(opt->ctx, opt->rule, hp);
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
                   other.state_len[k] == e->state_len[k];
        if (!same)
            return clopt_fail(opt->ctx, CLOPT_ERR_STATE_MISMATCH,
                              "these hyperparameters change the state layout of tensor %zu", i);
    }
    opt->groups[group].hp = *hp;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_get_group_hparams(const clopt_optimizer *opt, size_t group,
                                               clopt_hparams *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (group >= opt->ngroups)
        return CLOPT_ERR_INDEX;
    *out = opt->groups[group].hp;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_set_hparams(clopt_optimizer *opt, const clopt_hparams *hp)
{
    return clopt_optimizer_set_group_hparams(opt, 0, hp);
}

clopt_status clopt_optimizer_get_hparams(const clopt_optimizer *opt, clopt_hparams *out)
{
    return clopt_optimizer_get_group_hparams(opt, 0, out);
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

double clopt_optimizer_group_lr(const clopt_optimizer *opt, size_t group)
{
    if (!opt || group >= opt->ngroups)
        return NAN;
    const clopt_group *g = &opt->groups[group];
    return g->hp.lr * clopt_schedule_factor(&g->sched, opt->step);
}

/* ---- parameters ----------------------------------------------------------------------- */

static clopt_status grow_scratch(clopt_optimizer *opt)
{
    size_t need = 0;
    for (size_t i = 0; i < opt->nparams; i++)
        if (scratch_need(&opt->params[i]) > need)
            need = scratch_need(&opt->params[i]);
    if (need <= opt->scratch_len)
        return CLOPT_SUCCESS;
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(opt->ctx->context, CL_MEM_READ_WRITE, need * sizeof(float), NULL,
                              &err);
    if (!m)
        return clopt_fail_cl(opt->ctx, err, "allocating reduction scratch");
    if (opt->scratch)
        clReleaseMemObject(opt->scratch); /* deferred by OpenCL until its commands finish */
    opt->scratch = m;
    opt->scratch_len = need;
    return CLOPT_SUCCESS;
}

static clopt_status reserve_params(clopt_optimizer *opt, size_t more)
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
static clopt_status take_shape(clopt_ctx *ctx, const clopt_param_desc *d, clopt_param *e)
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
static clopt_status alloc_states(clopt_optimizer *opt, clopt_param *e, size_t from)
{
    const clopt_hparams *hp = &opt->groups[e->group].hp;
    for (size_t i = from; i < e->nstate; i++) {
        cl_int err = CL_SUCCESS;
        size_t bytes = e->state_len[i] * sizeof(float);
        cl_mem m = clCreateBuffer(opt->ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (m) {
            e->state[i] = (clopt_tensor){m, 0};
            float init = i < e->nkernel ? clopt_rule_state_init(opt->rule, hp, i) : 0.0f;
            err = clEnqueueFillBuffer(opt->ctx->queue, m, &init, sizeof init, 0, bytes, 0, NULL,
                                      NULL);
        }
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "allocating optimizer state");
    }
    return CLOPT_SUCCESS;
}

/* ---- overlap checks and range groups --------------------------------------------------- */

/* A range of floats in a buffer, for the overlap checks. */
typedef struct span {
    cl_mem buffer;
    size_t lo, hi; /* [lo, hi) */
    const char *what;
    size_t tensor;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->buffer != y->buffer)
        return (uintptr_t)x->buffer < (uintptr_t)y->buffer ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The parameter and gradient ranges of the registered tensors plus `extra` more slots. */
static span *spans_of(const clopt_optimizer *opt, size_t extra, size_t *count)
{
    span *s = malloc((2 * opt->nparams + extra + 1) * sizeof *s);
    size_t k = 0;
    for (size_t i = 0; s && i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        s[k++] = (span){e->param.buffer, e->param.offset, e->param.offset + e->n, "param", i};
        s[k++] = (span){e->grad.buffer, e->grad.offset, e->grad.offset + e->n, "grad", i};
    }
    *count = k;
    return s;
}

/* Refuses two ranges of one buffer that overlap (names both in the error). */
static clopt_status check_disjoint(clopt_ctx *ctx, span *s, size_t count)
{
    qsort(s, count, sizeof *s, span_cmp);
    for (size_t i = 1; i < count; i++)
        if (s[i].buffer == s[i - 1].buffer && s[i].lo < s[i - 1].hi)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                              "the %s range of tensor %zu overlaps the %s range of tensor %zu "
                              "(floats [%zu, %zu) and [%zu, %zu) of one buffer)",
                              s[i].what, s[i].tensor, s[i - 1].what, s[i - 1].tensor, s[i].lo,
                              s[i].hi, s[i - 1].lo, s[i - 1].hi);
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
    clopt_status s = take_shape(ctx, desc, &e);
    if (s != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_tensor(ctx, "param", desc->param, e.n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "grad", desc->grad, e.n)) != CLOPT_SUCCESS)
        return s;
    if (desc->hessian.buffer) {
        if (opt->rule != CLOPT_SOPHIA)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH, "%s takes no Hessian estimate",
                              clopt_rule_name(opt->rule));
        if ((s = clopt_check_tensor(ctx, "hessian", desc->hessian, e.n)) != CLOPT_SUCCESS)
            return s;
    }
    size_t nspan = 0;
    span *sp = spans_of(opt, 2, &nspan);
    if (!sp)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "overlap check");
    sp[nspan++] = (span){desc->param.buffer, desc->param.offset, desc->param.offset + e.n,
                         "param", opt->nparams};
    sp[nspan++] = (span){desc->grad.buffer, desc->grad.offset, desc->grad.offset + e.n, "grad",
                         opt->nparams};
    s = check_disjoint(ctx, sp, nspan);
    free(sp);
    if (s != CLOPT_SUCCESS || (s = reserve_params(opt, 1)) != CLOPT_SUCCESS)
        return s;
    e.param = desc->param;
    e.grad = desc->grad;
    e.hessian = desc->hessian;
    e.group = group;
    e.owns_state = 1;
    clopt_state_layout(opt, &opt->groups[group], &e);
    s = alloc_states(opt, &e, 0);
    if (s == CLOPT_SUCCESS) {
        opt->params[opt->nparams++] = e; /* grow_scratch sizes for it */
        s = grow_scratch(opt);
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

static cl_mem make_filled(clopt_ctx *ctx, size_t floats, float value, cl_int *err)
{
    cl_mem m = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, err);
    if (m && (*err = clEnqueueFillBuffer(ctx->queue, m, &value, sizeof value, 0,
                                         floats * sizeof(float), 0, NULL, NULL)) != CL_SUCCESS) {
        clReleaseMemObject(m);
        m = NULL;
    }
    return m;
}

static cl_mem sub_buffer(cl_mem parent, size_t offset, size_t n, cl_int *err)
{
    cl_buffer_region r = {offset * sizeof(float), n * sizeof(float)};
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
    clopt_status s = check_hparams(ctx, opt->rule, hp);
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
    clGetDeviceInfo(ctx->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                    NULL);
    size_t align = align_bits >= 32 ? align_bits / 32 : 1; /* in floats */
    clopt_param *ps = calloc(ntensors, sizeof *ps);
    if (!ps)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "arena table");
    size_t total = 0;
    for (size_t i = 0; i < ntensors; i++) {
        if ((s = take_shape(ctx, &shapes[i], &ps[i])) != CLOPT_SUCCESS) {
            free(ps);
            return s;
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
    if ((s = reserve_params(opt, ntensors)) != CLOPT_SUCCESS ||
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
    cl_int err = CL_SUCCESS;
    g->arena_param = make_filled(ctx, total, 0.0f, &err);
    if (g->arena_param)
        g->arena_grad = make_filled(ctx, total, 0.0f, &err);
    for (size_t k = 0; shared_state && err == CL_SUCCESS && k < ps[0].nstate; k++) {
        float init = k < ps[0].nkernel ? clopt_rule_state_init(opt->rule, hp, k) : 0.0f;
        g->arena_state[k] = make_filled(ctx, total, init, &err);
    }
    size_t made = 0;
    for (; err == CL_SUCCESS && made < ntensors; made++) {
        clopt_param *e = &ps[made];
        const size_t off = e->param.offset;
        e->group = gi;
        clopt_state_layout(opt, g, e);
        e->param = (clopt_tensor){g->arena_param, off};
        e->grad = (clopt_tensor){g->arena_grad, off};
        e->param_sub = sub_buffer(g->arena_param, off, e->n, &err);
        if (err == CL_SUCCESS)
            e->grad_sub = sub_buffer(g->arena_grad, off, e->n, &err);
        if (err != CL_SUCCESS)
            break;
        if (shared_state) {
            for (size_t k = 0; k < e->nstate; k++)
                e->state[k] = (clopt_tensor){g->arena_state[k], off};
        } else {
            e->owns_state = 1;
            if (alloc_states(opt, e, 0) != CLOPT_SUCCESS) {
                err = CL_OUT_OF_RESOURCES;
                made++;
                break;
            }
        }
    }
    if (err == CL_SUCCESS) {
        memcpy(opt->params + opt->nparams, ps, ntensors * sizeof *ps);
        opt->nparams += ntensors;
        s = grow_scratch(opt);
        if (s != CLOPT_SUCCESS)
            opt->nparams -= ntensors;
        else if ((err = clFinish(ctx->queue)) != CL_SUCCESS)
            opt->nparams -= ntensors, s = clopt_fail_cl(ctx, err, "initialising the arena");
    } else {
        s = clopt_fail_cl(ctx, err, "allocating the arena");
    }
    if (s != CLOPT_SUCCESS) {
        for (size_t i = 0; i < made && i < ntensors; i++)
            release_param(&ps[i]);
        release_arena(g);
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

void clopt_range_group_init(clopt_range_group *g)
{
    if (!g)
        return;
    memset(g, 0, sizeof *g);
    g->struct_size = sizeof *g;
    g->init_state = 1;
}

/* Floats per chunk of a range launch (any length works with any tuning, common.cl). */
#define RANGE_CHUNK 16384u

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
    if (desc->struct_size < sizeof *desc)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "desc->struct_size %zu: initialise it with clopt_range_group_init",
                          desc->struct_size);
    const size_t T = desc->ntensors;
    if (T == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "a range group needs >= 1 tensor");
    clopt_status s = check_hparams(ctx, opt->rule, hp);
    if (s == CLOPT_SUCCESS)
        s = clopt_opt_settle(opt); /* steps in flight count only the tensors they had */
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_group probe;
    memset(&probe, 0, sizeof probe);
    probe.hp = *hp;
    clopt_param layout;
    memset(&layout, 0, sizeof layout);
    layout.n = layout.ndim = layout.shape[0] = 1;
    clopt_state_layout(opt, &probe, &layout);
    const int own_state = desc->state[0] == NULL;
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++) {
        int need = !own_state && k < layout.nstate;
        if ((desc->state[k] != NULL) != need && !(own_state && !desc->state[k]))
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
    span *sp = spans_of(opt, (2 + layout.nstate) * T, &nspan);
    size_t *soff = malloc(T * sizeof *soff);
    if (!ps || !sp || !soff) {
        s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "range group");
        goto fail;
    }
    const cl_mem P = desc->tensors[0].param.buffer, G = desc->tensors[0].grad.buffer;
    size_t total = 0; /* library-owned state: compact, each tensor 16-float aligned */
    for (size_t i = 0; i < T; i++) {
        const clopt_param_desc *d = &desc->tensors[i];
        clopt_param *e = &ps[i];
        if ((s = take_shape(ctx, d, e)) != CLOPT_SUCCESS)
            goto fail;
        if (d->param.buffer != P || d->grad.buffer != G) {
            s = clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                           "tensor %zu: every parameter of a range group must be in one "
                           "cl_mem, and every gradient in one cl_mem", i);
            goto fail;
        }
        if ((s = clopt_check_tensor(ctx, "param", d->param, e->n)) != CLOPT_SUCCESS ||
            (s = clopt_check_tensor(ctx, "grad", d->grad, e->n)) != CLOPT_SUCCESS)
            goto fail;
        e->param = d->param;
        e->grad = d->grad;
        e->mu_product = 1.0;
        const size_t idx = opt->nparams + i;
        sp[nspan++] = (span){P, d->param.offset, d->param.offset + e->n, "param", idx};
        sp[nspan++] = (span){G, d->grad.offset, d->grad.offset + e->n, "grad", idx};
        if (own_state) {
            soff[i] = total;
            total += (e->n + 15) / 16 * 16;
        } else {
            soff[i] = desc->state_offsets ? desc->state_offsets[i] : d->param.offset;
            for (size_t k = 0; k < layout.nstate; k++) {
                clopt_tensor st = {desc->state[k], soff[i]};
                if ((s = clopt_check_tensor(ctx, "state", st, e->n)) != CLOPT_SUCCESS)
                    goto fail;
                sp[nspan++] = (span){desc->state[k], soff[i], soff[i] + e->n, "state", idx};
            }
        }
    }
    if ((s = check_disjoint(ctx, sp, nspan)) != CLOPT_SUCCESS ||
        (s = reserve_params(opt, T)) != CLOPT_SUCCESS ||
        (s = clopt_optimizer_add_group(opt, hp, NULL)) != CLOPT_SUCCESS)
        goto fail;
    const size_t gi = opt->ngroups - 1;
    clopt_group *g = &opt->groups[gi];
    g->ranges = 1;
    g->range_param = P;
    g->range_grad = G;
    cl_int err = CL_SUCCESS;
    for (size_t k = 0; k < layout.nstate && err == CL_SUCCESS; k++) {
        float init = k < layout.nkernel ? clopt_rule_state_init(opt->rule, hp, k) : 0.0f;
        if (own_state) {
            g->arena_state[k] = make_filled(ctx, total, init, &err);
            g->range_state[k] = g->arena_state[k];
        } else {
            g->range_state[k] = desc->state[k];
            for (size_t i = 0; desc->init_state && i < T && err == CL_SUCCESS; i++)
                err = clEnqueueFillBuffer(ctx->queue, desc->state[k], &init, sizeof init,
                                          soff[i] * sizeof(float), ps[i].n * sizeof(float), 0,
                                          NULL, NULL);
        }
    }
    /* the chunk table: (θ offset, g offset, state offset, length) per chunk */
    size_t nchunks = 0;
    for (size_t i = 0; i < T; i++)
        nchunks += (ps[i].n + RANGE_CHUNK - 1) / RANGE_CHUNK;
    cl_ulong *tab = err == CL_SUCCESS ? malloc(nchunks * 4 * sizeof *tab) : NULL;
    if (err == CL_SUCCESS && !tab)
        err = CL_OUT_OF_HOST_MEMORY;
    for (size_t i = 0, c = 0; tab && i < T; i++)
        for (size_t at = 0; at < ps[i].n; at += RANGE_CHUNK, c++) {
            tab[4 * c] = ps[i].param.offset + at;
            tab[4 * c + 1] = ps[i].grad.offset + at;
            tab[4 * c + 2] = soff[i] + at;
            tab[4 * c + 3] = ps[i].n - at < RANGE_CHUNK ? ps[i].n - at : RANGE_CHUNK;
        }
    if (tab)
        g->range_table = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                        nchunks * 4 * sizeof *tab, tab, &err);
    free(tab);
    g->nchunks = nchunks;
    for (size_t i = 0; i < T; i++) {
        clopt_param *e = &ps[i];
        e->group = gi;
        clopt_state_layout(opt, g, e);
        for (size_t k = 0; k < e->nstate; k++)
            e->state[k] = (clopt_tensor){g->range_state[k], soff[i]};
    }
    if (err == CL_SUCCESS) {
        memcpy(opt->params + opt->nparams, ps, T * sizeof *ps);
        opt->nparams += T;
        if ((s = grow_scratch(opt)) != CLOPT_SUCCESS)
            opt->nparams -= T;
        else if ((err = clFinish(ctx->queue)) != CL_SUCCESS)
            opt->nparams -= T, s = clopt_fail_cl(ctx, err, "initialising the range group");
    } else {
        s = clopt_fail_cl(ctx, err, "allocating the range group");
    }
    if (s != CLOPT_SUCCESS) {
        release_arena(g);
        opt->ngroups--;
        goto fail;
    }
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

clopt_status clopt_optimizer_param_view(const clopt_optimizer *opt, size_t param,
                                        clopt_tensor *param_view, clopt_tensor *grad_view,
                                        cl_mem *param_sub, cl_mem *grad_sub)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (param >= opt->nparams)
        return CLOPT_ERR_INDEX;
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

/* ---- settings ------------------------------------------------------------------------------ */

clopt_status clopt_optimizer_set_grad_clip(clopt_optimizer *opt, double max_norm)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!(isfinite(max_norm) && max_norm >= 0))
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_HYPERPARAM,
                          "max_norm must be finite and >= 0 (0 turns clipping off)");
    opt->max_grad_norm = max_norm;
    return CLOPT_SUCCESS;
}

double clopt_optimizer_last_grad_norm(const clopt_optimizer *opt)
{
    return opt ? opt->last_grad_norm : NAN;
}

clopt_status clopt_optimizer_set_grad_scale(clopt_optimizer *opt, double scale)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!(isfinite(scale) && scale >= 0))
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_HYPERPARAM,
                          "the loss scale must be finite and >= 0 (0 turns AMP off)");
    opt->grad_scale = scale;
    return CLOPT_SUCCESS;
}

int clopt_optimizer_found_inf(const clopt_optimizer *opt) { return opt ? opt->found_inf : 0; }

/* ---- kernels and reductions ------------------------------------------------------------ */

static size_t reduce_items(size_t n) { return n < REDUCE_ITEMS ? n : REDUCE_ITEMS; }

static clopt_status kernel_of(clopt_optimizer *opt, const char *family, const clopt_hparams *hp,
                              int gc, const char *extra, const char *name, cl_kernel *k)
{
    char options[192];
    snprintf(options, sizeof options, CLOPT_TUNING_OPTIONS " -DMAXIMIZE=%d -DGC=%d -DCTRL=1%s",
             CLOPT_TUNING_ARGS(&opt->ctx->tuning), hp && hp->maximize ? 1 : 0, gc, extra);
    return clopt_get_kernel(opt->ctx, family, options, name, k);
}

static clopt_status set_failed(clopt_optimizer *opt, const clopt_args *a)
{
    return clopt_fail_cl(opt->ctx, a->err, "clSetKernelArg");
}

/* Enqueue count work-items on the step's queue (nothing in a dry pass). */
static clopt_status launch_items(clopt_optimizer *opt, cl_kernel k, size_t count)
{
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    return clopt_launch_items(opt->ctx, opt->q, k, count, 0, NULL, NULL);
}

/* scratch[dst .. dst+nsums) = sums of the nsums blocks of `items` partials at scratch[0]. */
static clopt_status enqueue_final(clopt_optimizer *opt, size_t items, size_t nsums, size_t dst)
{
    cl_kernel k;
    clopt_status s = kernel_of(opt, "reduce", NULL, 0, "", "sum_final", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, 0});
    clopt_arg_ulong(&a, items);
    clopt_arg_ulong(&a, nsums);
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, dst});
    if (a.err != CL_SUCCESS)
        return set_failed(opt, &a);
    return launch_items(opt, k, nsums);
}

/* Items of the gradient check of a unit of n floats: blocks of >= 8192 floats, at most
   REDUCE_ITEMS (the partial sums of all units are added by step_verdict in one pass). Blocks
   of 4096-8192 floats read g fastest on PoCL (clopt-bench, arena_amp at 2^24: 1.18x the step
   without the check; 32768: 1.28x; a work-group tree in local memory: 1.48x). */
/* Work-group size of the gradient check (each work-item sums its own contiguous block). */
#define CHECK_LOCAL 64
static size_t check_items(size_t n)
{
    size_t items = (n + 8191) / 8192;
    return items < REDUCE_ITEMS ? items : REDUCE_ITEMS;
}

/* The gradient check of AMP and clipping: per unit (an arena group's gradient buffer, or a
   caller-owned tensor) one launch writes Σ(g/scale)² and a non-finite flag per block into
   opt->check (sums first, then flags, all units back to back); step_verdict adds them in
   that fixed order and decides (skip, clip coefficient) on the device: nothing is read back
   here. The buffer grows in the dry pass, before anything is enqueued. */
static clopt_status grad_check(clopt_optimizer *opt, double inv_scale, int amp)
{
    cl_kernel k, kv;
    clopt_status s;
    if ((s = kernel_of(opt, "tensor", NULL, 0, "", "grad_check_partial", &k)) != CLOPT_SUCCESS ||
        (s = kernel_of(opt, "tensor", NULL, 0, "", "step_verdict", &kv)) != CLOPT_SUCCESS)
        return s;
    const int check = amp || opt->max_grad_norm > 0;
    size_t total = 0;
    for (size_t i = 0; check && i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        const clopt_group *g = &opt->groups[e->group];
        if (!(g->arena && i != g->first))
            total += check_items(g->arena ? g->arena_len : e->n);
    }
    if (opt->cur.dry && 2 * total > opt->check_len) {
        cl_int err = CL_SUCCESS;
        cl_mem m = clCreateBuffer(opt->ctx->context, CL_MEM_READ_WRITE,
                                  2 * total * sizeof(float), NULL, &err);
        if (!m)
            return clopt_fail_cl(opt->ctx, err, "allocating the gradient check");
        if (opt->check)
            clReleaseMemObject(opt->check); /* deferred by OpenCL until its commands finish */
        opt->check = m;
        opt->check_len = 2 * total;
    }
    size_t at = 0;
    for (size_t i = 0; check && i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        const clopt_group *g = &opt->groups[e->group];
        if (g->arena && i != g->first)
            continue; /* the arena's whole gradient buffer is one unit */
        clopt_tensor grad = g->arena ? (clopt_tensor){g->arena_grad, 0} : e->grad;
        size_t n = g->arena ? g->arena_len : e->n, items = check_items(n);
        clopt_args a = {k, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, grad);
        clopt_arg_ulong(&a, n);
        clopt_arg_ulong(&a, items);
        clopt_arg_float(&a, (float)inv_scale);
        clopt_arg_tensor(&a, (clopt_tensor){opt->check, at});
        clopt_arg_ulong(&a, total + at);
        if (a.err != CL_SUCCESS)
            return set_failed(opt, &a);
        if (!opt->cur.dry) {
            size_t local = CHECK_LOCAL, global = (items + local - 1) / local * local;
            cl_int err = clEnqueueNDRangeKernel(opt->q, k, 1, NULL, &global, &local, 0, NULL,
                                                NULL);
            if (err != CL_SUCCESS)
                return clopt_fail_cl(opt->ctx, err, "clEnqueueNDRangeKernel");
        }
        at += items;
    }
    clopt_args v = {kv, 0, CL_SUCCESS};
    clopt_arg_tensor(&v, (clopt_tensor){opt->ctl, 0});
    clopt_arg_tensor(&v, (clopt_tensor){total ? opt->check : opt->ctl, 0});
    clopt_arg_ulong(&v, total);
    clopt_arg_ulong(&v, total);
    clopt_arg_float(&v, (float)opt->max_grad_norm);
    clopt_arg_int(&v, amp);
    if (v.err != CL_SUCCESS)
        return set_failed(opt, &v);
    return launch_items(opt, kv, 1);
}

/* GC row means of tensor e into the scratch (after L2 decay); *rows = 0 when GC is off. */
static clopt_status gc_means(clopt_optimizer *opt, const clopt_param *e, const clopt_hparams *hp,
                             float gmul, size_t *rows)
{
    *rows = gc_rows(hp, e);
    if (!*rows)
        return CLOPT_SUCCESS;
    cl_kernel k;
    clopt_status s = kernel_of(opt, "reduce", hp, 0, "", "gc_rowmean", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, e->grad);
    clopt_arg_tensor(&a, e->param);
    clopt_arg_ulong(&a, *rows);
    clopt_arg_ulong(&a, e->n / *rows);
    clopt_arg_float(&a, gmul);
    clopt_arg_float(&a, (float)clopt_rule_l2_decay(opt->rule, hp));
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, scr_gc(e)});
    clopt_arg_ctl(&a, &opt->cur);
    if (a.err != CL_SUCCESS)
        return set_failed(opt, &a);
    return launch_items(opt, k, *rows);
}

static void gc_args(clopt_optimizer *opt, clopt_args *a, const clopt_param *e, size_t rows)
{
    if (!rows)
        return;
    clopt_arg_tensor(a, (clopt_tensor){opt->scratch, scr_gc(e)});
    clopt_arg_ulong(a, e->n / rows);
}

/* ---- multi-pass rules ------------------------------------------------------------------- */

static clopt_status step_lamb(clopt_optimizer *opt, const clopt_param *e,
                              const clopt_hparams *hp, uint64_t t, float gmul)
{
    size_t rows;
    clopt_status s = gc_means(opt, e, hp, gmul, &rows);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_kernel kp, ku;
    if ((s = kernel_of(opt, "lamb", hp, rows > 0, "", "lamb_partial", &kp)) != CLOPT_SUCCESS ||
        (s = kernel_of(opt, "lamb", hp, 0, "", "lamb_update", &ku)) != CLOPT_SUCCESS)
        return s;
    const double td = (double)t;
    const double bc1 = hp->bias_correction ? 1.0 - pow(hp->beta1, td) : 1.0;
    const double bc2 = hp->bias_correction ? 1.0 - pow(hp->beta2, td) : 1.0;
    const size_t items = reduce_items(e->n);
    clopt_args a = {kp, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, e->param);
    clopt_arg_tensor(&a, e->grad);
    clopt_arg_tensor(&a, e->state[0]);
    clopt_arg_tensor(&a, e->state[1]);
    gc_args(opt, &a, e, rows);
    clopt_arg_ulong(&a, e->n);
    clopt_arg_ulong(&a, items);
    clopt_arg_float(&a, gmul);
    clopt_arg_float(&a, (float)hp->beta1);
    clopt_arg_float(&a, (float)(hp->grad_averaging ? 1.0 - hp->beta1 : 1.0));
    clopt_arg_float(&a, (float)hp->beta2);
    clopt_arg_float(&a, (float)(1.0 - hp->beta2));
    clopt_arg_float(&a, (float)hp->eps);
    clopt_arg_float(&a, (float)hp->weight_decay);
    clopt_arg_float(&a, (float)(1.0 / bc1));
    clopt_arg_float(&a, (float)(1.0 / bc2));
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, 0});
    clopt_args b = {ku, 0, CL_SUCCESS};
    clopt_arg_tensor(&b, e->param);
    clopt_arg_tensor(&b, e->state[0]);
    clopt_arg_tensor(&b, e->state[1]);
    clopt_arg_ulong(&b, e->n);
    clopt_arg_tensor(&b, (clopt_tensor){opt->scratch, SCR_SUMS});
    clopt_arg_float(&b, (float)hp->lr);
    clopt_arg_float(&b, (float)hp->eps);
    clopt_arg_float(&b, (float)hp->weight_decay);
    clopt_arg_float(&b, (float)(1.0 / bc1));
    clopt_arg_float(&b, (float)(1.0 / bc2));
    clopt_arg_ctl(&a, &opt->cur);
    clopt_arg_ctl(&b, &opt->cur);
    if (a.err != CL_SUCCESS || b.err != CL_SUCCESS)
        return set_failed(opt, a.err != CL_SUCCESS ? &a : &b);
    if ((s = launch_items(opt, kp, items)) !=
            CLOPT_SUCCESS ||
        (s = enqueue_final(opt, items, 2, SCR_SUMS)) != CLOPT_SUCCESS)
        return s;
    return launch_items(opt, ku, (e->n + UPDATE_WIDTH - 1) / UPDATE_WIDTH);
}

static clopt_status step_adafactor(clopt_optimizer *opt, const clopt_param *e,
                                   const clopt_hparams *hp, uint64_t t, float gmul)
{
    size_t rows;
    clopt_status s = gc_means(opt, e, hp, gmul, &rows);
    if (s != CLOPT_SUCCESS)
        return s;
    const int gc = rows > 0;
    size_t B, R, C;
    factored_view(e, &B, &R, &C);
    const int factored = R > 0;
    char extra[64];
    snprintf(extra, sizeof extra, " -DFACTORED=%d -DBETA1=%d", factored, hp->use_beta1 ? 1 : 0);
    cl_kernel kr = NULL, kc = NULL, km = NULL, kp, ku;
    if (factored && ((s = kernel_of(opt, "adafactor", hp, gc, extra, "adafactor_rows", &kr)) !=
                         CLOPT_SUCCESS ||
                     (s = kernel_of(opt, "adafactor", hp, gc, extra, "adafactor_cols", &kc)) !=
                         CLOPT_SUCCESS ||
                     (s = kernel_of(opt, "adafactor", hp, gc, extra, "adafactor_rmean", &km)) !=
                         CLOPT_SUCCESS))
        return s;
    if ((s = kernel_of(opt, "adafactor", hp, gc, extra, "adafactor_partial", &kp)) !=
            CLOPT_SUCCESS ||
        (s = kernel_of(opt, "adafactor", hp, gc, extra, "adafactor_update", &ku)) != CLOPT_SUCCESS)
        return s;
    const double td = (double)t;
    const double beta2t = 1.0 - pow(td, hp->decay_rate);
    double rho_t = hp->lr;
    if (hp->relative_step) {
        rho_t = hp->warmup_init ? 1e-6 * td : 1e-2;
        if (1.0 / sqrt(td) < rho_t)
            rho_t = 1.0 / sqrt(td);
    }
    const clopt_tensor s0 = e->state[0];
    const clopt_tensor s1 = factored ? e->state[1] : s0;
    const clopt_tensor rmean = {opt->scratch, SCR_RMEAN};
    const size_t items = reduce_items(e->n);
    const cl_ulong Rl = factored ? R : 1, Cl = factored ? C : 1;
    if (factored) {
        clopt_args a = {kr, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, e->grad);
        clopt_arg_tensor(&a, s0);
        gc_args(opt, &a, e, rows);
        clopt_arg_ulong(&a, B * R);
        clopt_arg_ulong(&a, C);
        clopt_arg_float(&a, gmul);
        clopt_arg_float(&a, (float)hp->eps);
        clopt_arg_float(&a, (float)beta2t);
        clopt_arg_float(&a, (float)(1.0 - beta2t));
        clopt_args c = {kc, 0, CL_SUCCESS};
        clopt_arg_tensor(&c, e->grad);
        clopt_arg_tensor(&c, s1);
        gc_args(opt, &c, e, rows);
        clopt_arg_ulong(&c, B);
        clopt_arg_ulong(&c, R);
        clopt_arg_ulong(&c, C);
        clopt_arg_float(&c, gmul);
        clopt_arg_float(&c, (float)hp->eps);
        clopt_arg_float(&c, (float)beta2t);
        clopt_arg_float(&c, (float)(1.0 - beta2t));
        clopt_args m = {km, 0, CL_SUCCESS};
        clopt_arg_tensor(&m, s0);
        clopt_arg_ulong(&m, B);
        clopt_arg_ulong(&m, R);
        clopt_arg_tensor(&m, rmean);
        clopt_arg_ctl(&a, &opt->cur);
        clopt_arg_ctl(&c, &opt->cur);
        clopt_arg_ctl(&m, &opt->cur);
        if (a.err != CL_SUCCESS || c.err != CL_SUCCESS || m.err != CL_SUCCESS)
            return set_failed(opt, a.err != CL_SUCCESS ? &a : c.err != CL_SUCCESS ? &c : &m);
        if ((s = launch_items(opt, kr, B * R)) !=
                CLOPT_SUCCESS ||
            (s = launch_items(opt, kc, B * ((C + COLS_WIDTH - 1) / COLS_WIDTH))) !=
                CLOPT_SUCCESS ||
            (s = launch_items(opt, km, B)) !=
                CLOPT_SUCCESS)
            return s;
    }
    clopt_args p = {kp, 0, CL_SUCCESS};
    clopt_arg_tensor(&p, e->param);
    clopt_arg_tensor(&p, e->grad);
    clopt_arg_tensor(&p, s0);
    clopt_arg_tensor(&p, s1);
    clopt_arg_tensor(&p, rmean);
    gc_args(opt, &p, e, rows);
    clopt_arg_ulong(&p, e->n);
    clopt_arg_ulong(&p, Rl);
    clopt_arg_ulong(&p, Cl);
    clopt_arg_ulong(&p, items);
    clopt_arg_float(&p, gmul);
    clopt_arg_float(&p, (float)hp->eps);
    clopt_arg_float(&p, (float)beta2t);
    clopt_arg_float(&p, (float)(1.0 - beta2t));
    clopt_arg_tensor(&p, (clopt_tensor){opt->scratch, 0});
    clopt_args u = {ku, 0, CL_SUCCESS};
    clopt_arg_tensor(&u, e->param);
    clopt_arg_tensor(&u, e->grad);
    clopt_arg_tensor(&u, s0);
    clopt_arg_tensor(&u, s1);
    clopt_arg_tensor(&u, rmean);
    if (hp->use_beta1)
        clopt_arg_tensor(&u, e->state[e->nkernel - 1]);
    gc_args(opt, &u, e, rows);
    clopt_arg_ulong(&u, e->n);
    clopt_arg_ulong(&u, Rl);
    clopt_arg_ulong(&u, Cl);
    clopt_arg_tensor(&u, (clopt_tensor){opt->scratch, SCR_SUMS});
    clopt_arg_float(&u, gmul);
    clopt_arg_float(&u, (float)rho_t);
    clopt_arg_float(&u, (float)hp->eps2);
    clopt_arg_float(&u, (float)hp->clip_threshold);
    clopt_arg_int(&u, hp->scale_parameter ? 1 : 0);
    clopt_arg_float(&u, (float)hp->weight_decay);
    clopt_arg_float(&u, (float)hp->beta1);
    clopt_arg_float(&u, (float)(1.0 - hp->beta1));
    clopt_arg_ctl(&p, &opt->cur);
    clopt_arg_ctl(&u, &opt->cur);
    if (p.err != CL_SUCCESS || u.err != CL_SUCCESS)
        return set_failed(opt, p.err != CL_SUCCESS ? &p : &u);
    if ((s = launch_items(opt, kp, items)) !=
            CLOPT_SUCCESS ||
        (s = enqueue_final(opt, items, 2, SCR_SUMS)) != CLOPT_SUCCESS)
        return s;
    return launch_items(opt, ku, (e->n + UPDATE_WIDTH - 1) / UPDATE_WIDTH);
}

/* ---- step ------------------------------------------------------------------------------- */

/* NAdam's product of tensor e, d steps after the host's count. */
static double mu_product_ahead(const clopt_optimizer *opt, const clopt_param *e, uint64_t d)
{
    double prod = e->mu_product;
    if (opt->rule != CLOPT_NADAM)
        return prod;
    const clopt_hparams *hp = &opt->groups[e->group].hp;
    for (uint64_t i = 1; i <= d && prod != 0.0; i++)
        prod *= clopt_nadam_mu(hp, (double)(e->step + i));
    return prod;
}

/* One element-wise launch over n elements of (param, grad, states) views, as step t of the
   tensor (d steps after the host's count). */
static clopt_status step_views(clopt_optimizer *opt, const clopt_param *e, clopt_tensor param,
                               clopt_tensor grad, const clopt_tensor *states, size_t n,
                               const clopt_hparams *hp, uint64_t t, uint64_t d,
                               double grad_scale, size_t gc)
{
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = param;
    a.grad = grad;
    for (size_t j = 0; j < e->nkernel; j++)
        a.state[j] = states[j];
    if (opt->rule == CLOPT_SOPHIA && t % hp->hess_interval == 0)
        a.hessian = e->hessian;
    a.mu_product = mu_product_ahead(opt, e, d);
    a.grad_scale = grad_scale;
    a.gc_rows = gc;
    a.gc_scratch = (clopt_tensor){opt->scratch, scr_gc(e)};
    clopt_status s = clopt_enqueue_step_ctl(opt->ctx, opt->q, opt->rule, hp, &a, n, t,
                                            &opt->cur, 0, NULL, NULL);
    if (s == CLOPT_SUCCESS && opt->cur.dry == 2 && opt->rule == CLOPT_SOPHIA &&
        e->hessian.buffer) { /* prepare: both Sophia variants (with and without ĥ) */
        a.hessian = a.hessian.buffer ? (clopt_tensor){NULL, 0} : e->hessian;
        s = clopt_enqueue_step_ctl(opt->ctx, opt->q, opt->rule, hp, &a, n, t, &opt->cur, 0,
                                   NULL, NULL);
    }
    return s;
}

/* Lookahead: slow weights copy θ at a tensor's first step; sync every k steps. */
static clopt_status lookahead_copy(clopt_optimizer *opt, clopt_tensor src, clopt_tensor dst,
                                   size_t n)
{
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    cl_int err = clEnqueueCopyBuffer(opt->q, src.buffer, dst.buffer,
                                     src.offset * sizeof(float), dst.offset * sizeof(float),
                                     n * sizeof(float), 0, NULL, NULL);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(opt->ctx, err, "lookahead copy");
}

static clopt_status lookahead_sync(clopt_optimizer *opt, clopt_tensor param, clopt_tensor slow,
                                   size_t n, double alpha)
{
    cl_kernel k;
    clopt_status s = kernel_of(opt, "tensor", NULL, 0, "", "lookahead_sync", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, param);
    clopt_arg_tensor(&a, slow);
    clopt_arg_ulong(&a, n);
    clopt_arg_float(&a, (float)alpha);
    clopt_arg_ctl(&a, &opt->cur);
    if (a.err != CL_SUCCESS)
        return set_failed(opt, &a);
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    return clopt_launch_elementwise(opt->ctx, opt->q, k, n, &opt->ctx->tuning, 0, NULL, NULL);
}

/* Lookahead synchronises after step t (in prepare's dry pass: always, to build it). */
static int lookahead_due(const clopt_optimizer *opt, const clopt_hparams *hp, uint64_t t)
{
    return opt->cur.dry == 2 || t % hp->lookahead_k == 0;
}

/* An arena group of an element-wise rule runs as one launch unless GC applies to a tensor. */
static int arena_fused(const clopt_optimizer *opt, const clopt_group *g)
{
    if (!g->arena || clopt_rule_is_multipass(opt->rule))
        return 0;
    for (size_t i = g->first; i < g->first + g->count; i++)
        if (gc_rows(&g->hp, &opt->params[i]))
            return 0;
    return 1;
}

/* A range group of an element-wise rule runs as one launch (no GC, no Lookahead, no
   Sophia: those run per tensor). */
static int range_fused(const clopt_optimizer *opt, const clopt_group *g)
{
    if (!g->ranges || clopt_rule_is_multipass(opt->rule) || opt->rule == CLOPT_SOPHIA ||
        clopt_group_lookahead(opt, g))
        return 0;
    for (size_t i = 0; i < opt->nparams; i++)
        if (opt->params[i].group == (size_t)(g - opt->groups) && gc_rows(&g->hp, &opt->params[i]))
            return 0;
    return 1;
}

/* Group gi's launches for the outcome "d of the uncertain steps in flight were applied":
   every tensor's step t = its host count + 1 + d, schedules at the optimizer's count + d. */
static clopt_status step_group(clopt_optimizer *opt, size_t gi, double grad_scale, uint64_t d)
{
    clopt_group *g = &opt->groups[gi];
    clopt_hparams hp = g->hp;
    hp.lr *= clopt_schedule_factor(&g->sched, opt->step + d);
    const float gmul = (float)(1.0 / grad_scale);
    const int la = clopt_group_lookahead(opt, g);
    clopt_status s = CLOPT_SUCCESS;
    if (arena_fused(opt, g)) {
        const clopt_param *e0 = &opt->params[g->first];
        const uint64_t t = e0->step + 1 + d; /* an arena's tensors were added together */
        clopt_tensor states[CLOPT_OPT_MAX_STATE];
        for (size_t k = 0; k < e0->nstate; k++)
            states[k] = (clopt_tensor){g->arena_state[k], 0};
        const clopt_tensor P = {g->arena_param, 0}, G = {g->arena_grad, 0};
        if (la && !e0->slow_ready && d == 0)
            s = lookahead_copy(opt, P, states[e0->nkernel], g->arena_len);
        if (s == CLOPT_SUCCESS)
            s = step_views(opt, e0, P, G, states, g->arena_len, &hp, t, d, grad_scale, 0);
        if (s == CLOPT_SUCCESS && la && lookahead_due(opt, &hp, t))
            s = lookahead_sync(opt, P, states[e0->nkernel], g->arena_len, hp.lookahead_alpha);
        return s;
    }
    if (range_fused(opt, g)) {
        size_t first = opt->nparams;
        for (size_t i = 0; i < opt->nparams && first == opt->nparams; i++)
            if (opt->params[i].group == gi)
                first = i;
        const clopt_param *e0 = &opt->params[first];
        const uint64_t t = e0->step + 1 + d; /* a range group's tensors were added together */
        clopt_tensor states[CLOPT_OPT_MAX_STATE];
        for (size_t k = 0; k < e0->nstate; k++)
            states[k] = (clopt_tensor){g->range_state[k], 0};
        opt->cur.ranges = g->range_table;
        opt->cur.nchunks = g->nchunks;
        s = step_views(opt, e0, (clopt_tensor){g->range_param, 0},
                       (clopt_tensor){g->range_grad, 0}, states, 1, &hp, t, d, grad_scale, 0);
        opt->cur.ranges = NULL;
        opt->cur.nchunks = 0;
        return s;
    }
    for (size_t i = 0; s == CLOPT_SUCCESS && i < opt->nparams; i++) {
        clopt_param *e = &opt->params[i];
        if (e->group != gi)
            continue;
        const uint64_t t = e->step + 1 + d;
        if (la && !e->slow_ready && d == 0)
            s = lookahead_copy(opt, e->param, e->state[e->nkernel], e->n);
        if (s != CLOPT_SUCCESS)
            break;
        if (opt->rule == CLOPT_LAMB)
            s = step_lamb(opt, e, &hp, t, gmul);
        else if (opt->rule == CLOPT_ADAFACTOR)
            s = step_adafactor(opt, e, &hp, t, gmul);
        else
            s = step_views(opt, e, e->param, e->grad, e->state, e->n, &hp, t, d, grad_scale,
                           gc_rows(&hp, e));
        if (s == CLOPT_SUCCESS && la && lookahead_due(opt, &hp, t))
            s = lookahead_sync(opt, e->param, e->state[e->nkernel], e->n, hp.lookahead_alpha);
    }
    return s;
}

/* Everything a step enqueues after its start: the gradient check and verdict, the launches
   of every group for each possible outcome of the uncertain steps in flight, the commit.
   dry 1: build kernels and set arguments only (the step's first pass); 2: also the variants
   later steps need (prepare). */
static clopt_status step_body(clopt_optimizer *opt, double grad_scale, int amp,
                              uint64_t uncertain, int dry)
{
    opt->cur = (clopt_ctl){opt->ctl, opt->step, dry, NULL, 0};
    clopt_status s = grad_check(opt, 1.0 / grad_scale, amp);
    for (uint64_t d = 0; s == CLOPT_SUCCESS && d <= uncertain; d++) {
        opt->cur.expect = opt->step + d;
        for (size_t gi = 0; s == CLOPT_SUCCESS && gi < opt->ngroups; gi++)
            s = step_group(opt, gi, grad_scale, d);
    }
    cl_kernel k;
    if (s == CLOPT_SUCCESS &&
        (s = kernel_of(opt, "tensor", NULL, 0, "", "step_commit", &k)) == CLOPT_SUCCESS) {
        clopt_args a = {k, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, (clopt_tensor){opt->ctl, 0});
        s = a.err != CL_SUCCESS ? set_failed(opt, &a) : launch_items(opt, k, 1);
    }
    opt->cur.dry = 0;
    return s;
}

/* One applied step: every tensor's count and NAdam product, and the optimizer's count. */
static void advance_counts(clopt_optimizer *opt)
{
    for (size_t i = 0; i < opt->nparams; i++) {
        clopt_param *e = &opt->params[i];
        e->step++;
        if (opt->rule == CLOPT_NADAM)
            e->mu_product *= clopt_nadam_mu(&opt->groups[e->group].hp, (double)e->step);
    }
    opt->step++;
}

/* The oldest record in flight has completed (status CL_COMPLETE) or failed (< 0). */
static void retire_oldest(clopt_optimizer *opt, cl_int status)
{
    clopt_step_record *r = &opt->rec[opt->rec_head];
    if (status == CL_COMPLETE && r->result[6] == 0) {
        const int skipped = r->result[0] != 0;
        float norm;
        memcpy(&norm, &r->result[4], sizeof norm);
        if (r->amp && !skipped)
            advance_counts(opt);
        opt->found_inf = skipped;
        if (r->clip)
            opt->last_grad_norm = norm;
        opt->report.step_call = r->call;
        opt->report.skipped = skipped;
        opt->report.grad_norm = r->amp || r->clip ? (double)norm : NAN;
    }
    clReleaseEvent(r->done);
    opt->rec_head = (opt->rec_head + 1) % CLOPT_MAX_IN_FLIGHT;
    opt->rec_count--;
}

/* Retires the records whose read-back has completed, oldest first; wait: block on each. */
static clopt_status collect(clopt_optimizer *opt, int wait)
{
    while (opt->rec_count) {
        clopt_step_record *r = &opt->rec[opt->rec_head];
        cl_int st = CL_QUEUED, err = CL_SUCCESS;
        if (wait)
            err = clWaitForEvents(1, &r->done);
        if (err == CL_SUCCESS || err == CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
            err = clGetEventInfo(r->done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st,
                                 NULL);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "checking a step's verdict");
        if (st > CL_COMPLETE)
            return CLOPT_SUCCESS; /* still running; later records too (in-order queue) */
        retire_oldest(opt, st);
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_opt_settle(clopt_optimizer *opt)
{
    cl_int err = clFinish(opt->ctx->queue);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(opt->ctx, err, "clFinish");
    return collect(opt, 1);
}

clopt_status clopt_optimizer_poll(clopt_optimizer *opt, clopt_step_report *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    clopt_status s = collect(opt, 0);
    *out = opt->report;
    return s;
}

clopt_status clopt_optimizer_prepare(clopt_optimizer *opt)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    opt->q = opt->ctx->queue;
    return step_body(opt, opt->grad_scale > 0 ? opt->grad_scale : 1.0, opt->grad_scale > 0, 0,
                     2);
}

/* The step's start: after the caller's events and a user event the host completes only
   once everything is enqueued, the control words 2..6 (or only the abort word while
   uncertain steps are in flight, whose outcome sets the count) are written from r->gate.
   A failure while enqueueing sets the abort word before the gate opens, so the launches
   already enqueued do nothing. */
clopt_status clopt_optimizer_step_on(clopt_optimizer *opt, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event *wait_list,
                                     cl_event *event)
{
    if (event)
        *event = NULL;
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    clopt_status s;
    if (queue) {
        if ((s = clopt_check_queue(ctx, queue)) != CLOPT_SUCCESS)
            return s;
        cl_command_queue_properties props = 0;
        cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props,
                                           NULL);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(ctx, err, "clGetCommandQueueInfo");
        if (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "the step needs an in-order queue");
    }
    if ((s = clopt_check_wait_list(ctx, num_wait, wait_list)) != CLOPT_SUCCESS)
        return s;
    if (opt->nparams == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "no tensors are registered");
    for (size_t i = 0; i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        if ((s = clopt_check_tensor(ctx, "param", e->param, e->n)) != CLOPT_SUCCESS ||
            (s = clopt_check_tensor(ctx, "grad", e->grad, e->n)) != CLOPT_SUCCESS)
            return s;
    }
    if ((s = collect(opt, 0)) != CLOPT_SUCCESS)
        return s;
    if (opt->rec_count == CLOPT_MAX_IN_FLIGHT) {
        /* the one wait of a step: CLOPT_MAX_IN_FLIGHT steps without a known verdict */
        cl_int err = clWaitForEvents(1, &opt->rec[opt->rec_head].done);
        if (err != CL_SUCCESS && err != CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
            return clopt_fail_cl(ctx, err, "waiting for the oldest step in flight");
        if ((s = collect(opt, 0)) != CLOPT_SUCCESS)
            return s;
    }
    const int amp = opt->grad_scale > 0, clip = opt->max_grad_norm > 0;
    const double grad_scale = amp ? opt->grad_scale : 1.0;
    uint64_t uncertain = 0;
    for (size_t k = 0; k < opt->rec_count; k++)
        uncertain += (uint64_t)opt->rec[(opt->rec_head + k) % CLOPT_MAX_IN_FLIGHT].amp;
    cl_event waits_small[8], *waits = waits_small;
    if (num_wait >= 8 && !(waits = malloc((num_wait + 1) * sizeof *waits)))
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "wait list");
    /* every kernel built and every argument checked before the first enqueue */
    opt->q = queue ? queue : ctx->queue;
    if ((s = step_body(opt, grad_scale, amp, uncertain, 1)) != CLOPT_SUCCESS)
        goto out;
    clopt_step_record *r =
        &opt->rec[(opt->rec_head + opt->rec_count) % CLOPT_MAX_IN_FLIGHT];
    memset(r, 0, sizeof *r);
    r->call = opt->calls + 1;
    r->amp = amp;
    r->clip = clip;
    r->gate[0] = (cl_uint)opt->step;
    r->gate[1] = (cl_uint)(opt->step >> 32);
    cl_int err = CL_SUCCESS;
    cl_event gate = clCreateUserEvent(ctx->context, &err), wrote = NULL;
    if (!gate) {
        s = clopt_fail_cl(ctx, err, "clCreateUserEvent");
        goto out;
    }
    for (cl_uint i = 0; i < num_wait; i++)
        waits[i] = wait_list[i];
    waits[num_wait] = gate;
    if (uncertain == 0)
        err = clEnqueueWriteBuffer(opt->q, opt->ctl, CL_FALSE, 2 * sizeof(cl_uint),
                                   5 * sizeof(cl_uint), r->gate, num_wait + 1, waits, &wrote);
    else
        err = clEnqueueWriteBuffer(opt->q, opt->ctl, CL_FALSE, 6 * sizeof(cl_uint),
                                   sizeof(cl_uint), &r->gate[4], num_wait + 1, waits, &wrote);
    if (err != CL_SUCCESS) {
        clSetUserEventStatus(gate, CL_COMPLETE);
        clReleaseEvent(gate);
        s = clopt_fail_cl(ctx, err, "clEnqueueWriteBuffer (the step's start)");
        goto out;
    }
    s = step_body(opt, grad_scale, amp, uncertain, 0);
    if (s == CLOPT_SUCCESS &&
        (err = clEnqueueReadBuffer(opt->q, opt->ctl, CL_FALSE, 0, sizeof r->result, r->result,
                                   0, NULL, &r->done)) != CL_SUCCESS)
        s = clopt_fail_cl(ctx, err, "clEnqueueReadBuffer (the step's verdict)");
    if (s != CLOPT_SUCCESS) {
        /* abort: the launches already enqueued find the skip flag set and do nothing; the
           abort word must be read before r's slot is reused */
        r->gate[4] = 1;
        clSetUserEventStatus(gate, CL_COMPLETE);
        clReleaseEvent(gate);
        clWaitForEvents(1, &wrote);
        clReleaseEvent(wrote);
        if (r->done) {
            clWaitForEvents(1, &r->done);
            clReleaseEvent(r->done);
        }
        goto out;
    }
    err = clSetUserEventStatus(gate, CL_COMPLETE);
    clReleaseEvent(gate);
    clReleaseEvent(wrote);
    opt->rec_count++;
    opt->calls++;
    if (err != CL_SUCCESS) {
        s = clopt_fail_cl(ctx, err, "clSetUserEventStatus (the queue may be stalled)");
        goto out;
    }
    for (size_t i = 0; i < opt->nparams; i++)
        opt->params[i].slow_ready = 1;
    if (!amp)
        advance_counts(opt); /* only AMP can skip a step that was enqueued */
    if (event) {
        *event = r->done;
        clRetainEvent(r->done);
    }
out:
    if (waits != waits_small)
        free(waits);
    return s;
}

clopt_status clopt_optimizer_step(clopt_optimizer *opt, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    const int check = opt->grad_scale > 0 || opt->max_grad_norm > 0;
    clopt_status s = clopt_optimizer_step_on(opt, NULL, 0, NULL, event);
    if (s != CLOPT_SUCCESS || !check)
        return s;
    /* the blocking convenience: wait for this step's verdict. The step is enqueued (and will
       run) whatever happens here: a failed wait is not the step's failure, and the verdict
       then reaches the host through a later poll or call. */
    if (collect(opt, 1) != CLOPT_SUCCESS)
        return CLOPT_SUCCESS;
    if (opt->report.step_call == opt->calls && opt->report.skipped) {
        if (event && *event) {
            clReleaseEvent(*event);
            *event = NULL;
        }
        return CLOPT_STEP_SKIPPED;
    }
    return CLOPT_SUCCESS;
}

/* ---- gradients -------------------------------------------------------------------------- */

clopt_status clopt_optimizer_zero_grad(clopt_optimizer *opt)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    const float zero = 0.0f;
    for (size_t i = 0; i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        const clopt_group *g = &opt->groups[e->group];
        if (g->arena && i != g->first)
            continue;
        clopt_tensor grad = g->arena ? (clopt_tensor){g->arena_grad, 0} : e->grad;
        size_t n = g->arena ? g->arena_len : e->n;
        cl_int err = clEnqueueFillBuffer(opt->ctx->queue, grad.buffer, &zero, sizeof zero,
                                         grad.offset * sizeof(float), n * sizeof(float), 0, NULL,
                                         NULL);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "clEnqueueFillBuffer");
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_accumulate_grad(clopt_optimizer *opt, size_t param,
                                             clopt_tensor src, double weight)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (param >= opt->nparams)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no tensor %zu", param);
    const clopt_param *e = &opt->params[param];
    return clopt_enqueue_axpby(opt->ctx, NULL, e->grad, src, e->n, weight, 1.0, 0, NULL, NULL);
}

/* ---- randomness ------------------------------------------------------------------------- */

clopt_status clopt_optimizer_seed(clopt_optimizer *opt, uint64_t seed)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->rng_seed = seed;
    opt->rng_counter = 0;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_randn(clopt_optimizer *opt, clopt_tensor out, size_t n)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_status s = clopt_enqueue_randn(opt->ctx, NULL, out, n, opt->rng_seed, opt->rng_counter,
                                         0, NULL, NULL);
    if (s == CLOPT_SUCCESS)
        opt->rng_counter += (n + 3) / 4;
    return s;
}

/* ---- queries ---------------------------------------------------------------------------- */

uint64_t clopt_optimizer_step_count(const clopt_optimizer *opt) { return opt ? opt->step : 0; }

clopt_status clopt_optimizer_param_step_count(const clopt_optimizer *opt, size_t param,
                                              uint64_t *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (param >= opt->nparams)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no tensor %zu", param);
    *out = opt->params[param].step;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_set_step_count(clopt_optimizer *opt, uint64_t count)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    /* every step in flight first: their verdicts would add to the new count, and the next
       step writes the device's count from the host's (no verdict outstanding) */
    clopt_status st = clopt_opt_settle(opt);
    if (st != CLOPT_SUCCESS)
        return st;
    /* NAdam: the product is recomputed per group; checked before anything changes */
    double *mu = NULL;
    if (opt->rule == CLOPT_NADAM) {
        mu = malloc(opt->ngroups * sizeof *mu);
        if (!mu)
            return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "step count");
        for (size_t g = 0; g < opt->ngroups; g++)
            mu[g] = clopt_nadam_mu_product(&opt->groups[g].hp, count);
    }
    for (size_t i = 0; i < opt->nparams; i++) {
        opt->params[i].step = count;
        opt->params[i].mu_product = mu ? mu[opt->params[i].group] : 1.0;
    }
    opt->step = count;
    free(mu);
    return CLOPT_SUCCESS;
}
clopt_rule clopt_optimizer_rule(const clopt_optimizer *opt) { return opt ? opt->rule : CLOPT_RULE_COUNT; }
size_t clopt_optimizer_param_count(const clopt_optimizer *opt) { return opt ? opt->nparams : 0; }

size_t clopt_optimizer_state_count(const clopt_optimizer *opt, size_t param)
{
    return opt && param < opt->nparams ? opt->params[param].nstate : 0;
}

clopt_status clopt_optimizer_state_info(const clopt_optimizer *opt, size_t param, size_t index,
                                        const char **name, size_t *length)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (param >= opt->nparams || index >= opt->params[param].nstate)
        return CLOPT_ERR_INDEX;
    if (name)
        *name = opt->params[param].state_name[index];
    if (length)
        *length = opt->params[param].state_len[index];
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_state(const clopt_optimizer *opt, size_t param, size_t index,
                                   clopt_tensor *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (param >= opt->nparams || index >= opt->params[param].nstate)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no state %zu of parameter %zu", index,
                          param);
    *out = opt->params[param].state[index];
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_read_state(clopt_optimizer *opt, size_t param, size_t index,
                                        float *host, size_t n)
{
    if (!opt || !host)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    clopt_tensor t;
    clopt_status s = clopt_optimizer_state(opt, param, index, &t);
    if (s != CLOPT_SUCCESS)
        return s;
    const clopt_param *e = &opt->params[param];
    size_t len = e->state_len[index];
    if (n != len)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_SIZE,
                          "state %zu of parameter %zu has %zu elements, %zu requested", index,
                          param, len, n);
    if ((s = clopt_opt_settle(opt)) != CLOPT_SUCCESS)
        return s;
    /* Lookahead's slow weights are θ until the tensor's first step copies them. */
    if (index >= e->nkernel && !e->slow_ready)
        t = e->param;
    cl_int err = clEnqueueReadBuffer(opt->ctx->queue, t.buffer, CL_TRUE,
                                     t.offset * sizeof(float), n * sizeof(float), host, 0, NULL,
                                     NULL);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(opt->ctx, err, "clEnqueueReadBuffer");
}

size_t clopt_optimizer_state_bytes(const clopt_optimizer *opt)
{
    size_t total = 0;
    for (size_t i = 0; opt && i < opt->nparams; i++)
        for (size_t k = 0; k < opt->params[i].nstate; k++)
            total += opt->params[i].state_len[k] * sizeof(float);
    return total;
}
