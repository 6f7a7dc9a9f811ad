/* Optimizer level: owns state buffers, the step count, parameter groups and hyperparameters
 * (torch.optim-like). Element-wise rules run one clopt_enqueue_step per tensor; Adafactor and
 * LAMB run their passes here, with their reductions in a fixed order (kernels/reduce.cl).
 * Everything is enqueued on the context's queue, which must be in order. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Partial sums per reduction: a fixed number of items, so sums do not depend on the device. */
#define REDUCE_ITEMS 4096u

typedef struct group_entry {
    clopt_hparams hp;
    double mu_product; /* NAdam: product of μ_1..μ_step for this group's β1 and ψ */
} group_entry;

typedef struct param_entry {
    clopt_tensor param, grad, hessian; /* hessian.buffer NULL: none (Sophia only) */
    size_t n, ndim, shape[CLOPT_MAX_DIMS];
    size_t group;
    size_t nstate;
    const char *state_name[CLOPT_MAX_STATE];
    size_t state_len[CLOPT_MAX_STATE];
    cl_mem state[CLOPT_MAX_STATE];
} param_entry;

struct clopt_optimizer {
    clopt_ctx *ctx;
    clopt_rule rule;
    group_entry *groups;
    size_t ngroups, cap_groups;
    param_entry *params;
    size_t nparams, cap_params;
    uint64_t step;
    cl_mem scratch; /* reduction partials, sums, GC row means, per-tensor norms */
    size_t scratch_len;
    double max_grad_norm, last_grad_norm;
};

/* ---- shapes and state layout ----------------------------------------------------------- */

/* Adafactor's factored view B × R × C of a tensor with >= 2 dims (0 rows: not factored). */
static void factored_view(const param_entry *e, size_t *b, size_t *r, size_t *c)
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
static size_t gc_rows(const clopt_hparams *hp, const param_entry *e)
{
    if (!hp->grad_centralization || e->ndim <= (hp->gc_conv_only ? 3u : 1u))
        return 0;
    return e->shape[0];
}

static void state_layout(clopt_rule rule, const clopt_hparams *hp, param_entry *e)
{
    e->nstate = clopt_rule_state_count(rule, hp);
    for (size_t i = 0; i < e->nstate; i++) {
        e->state_name[i] = clopt_rule_state_name(rule, hp, i);
        e->state_len[i] = e->n;
    }
    if (rule == CLOPT_ADAFACTOR) {
        size_t b, r, c;
        factored_view(e, &b, &r, &c);
        size_t k = 0;
        if (r) {
            e->state_name[k] = "exp_avg_sq_row", e->state_len[k++] = b * r;
            e->state_name[k] = "exp_avg_sq_col", e->state_len[k++] = b * c;
        } else {
            e->state_name[k] = "exp_avg_sq", e->state_len[k++] = e->n;
        }
        if (hp->use_beta1)
            e->state_name[k] = "exp_avg", e->state_len[k++] = e->n;
        e->nstate = k;
    }
}

/* Scratch floats one tensor's step needs: partials (2 per item), 2 sums, Adafactor's row
   means (one per batch) and GC row means. The per-tensor norms for clipping come after. */
static size_t scratch_need(const param_entry *e)
{
    size_t b, r, c;
    factored_view(e, &b, &r, &c);
    return 2 * (size_t)REDUCE_ITEMS + 2 + b + (e->ndim > 1 ? e->shape[0] : 0);
}

enum { SCR_SUMS = 2 * REDUCE_ITEMS, SCR_RMEAN = 2 * REDUCE_ITEMS + 2 };

static size_t scr_gc(const param_entry *e)
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
    size_t g;
    if ((s = clopt_optimizer_add_group(opt, hp, &g)) != CLOPT_SUCCESS) {
        free(opt);
        return s;
    }
    *out = opt;
    return CLOPT_SUCCESS;
}

static void release_entry(param_entry *e)
{
    for (size_t i = 0; i < e->nstate; i++)
        if (e->state[i])
            clReleaseMemObject(e->state[i]);
}

void clopt_optimizer_destroy(clopt_optimizer *opt)
{
    if (!opt)
        return;
    clFinish(opt->ctx->queue);
    for (size_t i = 0; i < opt->nparams; i++)
        release_entry(&opt->params[i]);
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
        group_entry *g = realloc(opt->groups, cap * sizeof *g);
        if (!g)
            return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "group table");
        opt->groups = g;
        opt->cap_groups = cap;
    }
    opt->groups[opt->ngroups] = (group_entry){*hp, 1.0};
    if (group)
        *group = opt->ngroups;
    opt->ngroups++;
    return CLOPT_SUCCESS;
}

size_t clopt_optimizer_group_count(const clopt_optimizer *opt) { return opt ? opt->ngroups : 0; }

/* A group's hyperparameters may change between steps, but not the state layout. */
clopt_status clopt_optimizer_set_group_hparams(clopt_optimizer *opt, size_t group,
                                               const clopt_hparams *hp)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!hp)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams is NULL");
    if (group >= opt->ngroups)
        return clopt_fail(opt->ctx, CLOPT_ERR_INDEX, "no group %zu", group);
    clopt_status s = check_hparams(opt->ctx, opt->rule, hp);
    if (s != CLOPT_SUCCESS)
        return s;
    for (size_t i = 0; i < opt->nparams; i++) {
        const param_entry *e = &opt->params[i];
        if (e->group != group)
            continue;
        param_entry then = *e;
        state_layout(opt->rule, hp, &then);
        int same = then.nstate == e->nstate;
        for (size_t k = 0; same && k < e->nstate; k++)
            same = strcmp(then.state_name[k], e->state_name[k]) == 0;
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

/* ---- parameters ----------------------------------------------------------------------- */

static clopt_status grow_scratch(clopt_optimizer *opt, size_t need)
{
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
    if (desc->ndim > CLOPT_MAX_DIMS)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "ndim %zu > %d", desc->ndim,
                          CLOPT_MAX_DIMS);
    param_entry e;
    memset(&e, 0, sizeof e);
    e.ndim = desc->ndim ? desc->ndim : 1;
    e.n = 1;
    for (size_t d = 0; d < e.ndim; d++) {
        e.shape[d] = desc->shape[d];
        if (e.shape[d] == 0)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "shape[%zu] is 0", d);
        if (e.n > SIZE_MAX / sizeof(float) / e.shape[d])
            return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "the shape is too large");
        e.n *= e.shape[d];
    }
    clopt_status s;
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
    e.param = desc->param;
    e.grad = desc->grad;
    e.hessian = desc->hessian;
    e.group = group;
    const clopt_hparams *hp = &opt->groups[group].hp;
    state_layout(opt->rule, hp, &e);
    if (opt->nparams == opt->cap_params) {
        size_t cap = opt->cap_params ? 2 * opt->cap_params : 8;
        param_entry *p = realloc(opt->params, cap * sizeof *p);
        if (!p)
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "parameter table");
        opt->params = p;
        opt->cap_params = cap;
    }
    for (size_t i = 0; i < e.nstate; i++) {
        cl_int err = CL_SUCCESS;
        size_t bytes = e.state_len[i] * sizeof(float);
        e.state[i] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (e.state[i]) {
            float init = clopt_rule_state_init(opt->rule, hp, i);
            err = clEnqueueFillBuffer(ctx->queue, e.state[i], &init, sizeof init, 0, bytes, 0,
                                      NULL, NULL);
        }
        if (err != CL_SUCCESS) {
            release_entry(&e);
            return clopt_fail_cl(ctx, err, "allocating optimizer state");
        }
    }
    /* the largest per-tensor need, then one norm slot per tensor */
    size_t need = scratch_need(&e);
    for (size_t i = 0; i < opt->nparams; i++)
        if (scratch_need(&opt->params[i]) > need)
            need = scratch_need(&opt->params[i]);
    s = grow_scratch(opt, need + opt->nparams + 1);
    cl_int err = clFinish(ctx->queue);
    if (s == CLOPT_SUCCESS && err != CL_SUCCESS)
        s = clopt_fail_cl(ctx, err, "initialising optimizer state");
    if (s != CLOPT_SUCCESS) {
        release_entry(&e);
        return s;
    }
    opt->params[opt->nparams] = e;
    if (index)
        *index = opt->nparams;
    opt->nparams++;
    return CLOPT_SUCCESS;
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

/* ---- reductions ------------------------------------------------------------------------ */

static size_t reduce_items(size_t n) { return n < REDUCE_ITEMS ? n : REDUCE_ITEMS; }

static clopt_status kernel_of(clopt_optimizer *opt, const char *family, const clopt_hparams *hp,
                              int gc, const char *extra, const char *name, cl_kernel *k)
{
    char options[192];
    snprintf(options, sizeof options, "-DVW=%u -DMAXIMIZE=%d -DGC=%d%s",
             opt->ctx->tuning.vector_width, hp && hp->maximize ? 1 : 0, gc, extra);
    return clopt_get_kernel(opt->ctx, family, options, name, k);
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
        return clopt_fail_cl(opt->ctx, a.err, "clSetKernelArg");
    return clopt_launch_items(opt->ctx, opt->ctx->queue, k, nsums, 0, NULL, NULL);
}

/* The global gradient norm (L2 over every tensor), reduced per tensor on the device in a
   fixed order and summed over tensors on the host in double, in tensor order. */
static clopt_status grad_norm(clopt_optimizer *opt, double *norm)
{
    cl_kernel k;
    clopt_status s = kernel_of(opt, "reduce", NULL, 0, "", "sumsq_partial", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    const size_t norms = opt->scratch_len - opt->nparams;
    for (size_t i = 0; i < opt->nparams; i++) {
        const param_entry *e = &opt->params[i];
        size_t items = reduce_items(e->n);
        clopt_args a = {k, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, e->grad);
        clopt_arg_ulong(&a, e->n);
        clopt_arg_ulong(&a, items);
        clopt_arg_float(&a, 1.0f);
        clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, 0});
        if (a.err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, a.err, "clSetKernelArg");
        if ((s = clopt_launch_items(opt->ctx, opt->ctx->queue, k, items, 0, NULL, NULL)) !=
                CLOPT_SUCCESS ||
            (s = enqueue_final(opt, items, 1, norms + i)) != CLOPT_SUCCESS)
            return s;
    }
    float *host = malloc(opt->nparams * sizeof *host);
    if (!host)
        return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "gradient norms");
    cl_int err = clEnqueueReadBuffer(opt->ctx->queue, opt->scratch, CL_TRUE, norms * sizeof(float),
                                     opt->nparams * sizeof(float), host, 0, NULL, NULL);
    double total = 0;
    for (size_t i = 0; i < opt->nparams; i++)
        total += (double)host[i];
    free(host);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(opt->ctx, err, "reading gradient norms");
    *norm = sqrt(total);
    return CLOPT_SUCCESS;
}

/* GC row means of tensor e into the scratch (after L2 decay); returns the row count. */
static clopt_status gc_means(clopt_optimizer *opt, const param_entry *e, const clopt_hparams *hp,
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
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(opt->ctx, a.err, "clSetKernelArg");
    return clopt_launch_items(opt->ctx, opt->ctx->queue, k, *rows, 0, NULL, NULL);
}

static void gc_args(clopt_optimizer *opt, clopt_args *a, const param_entry *e, size_t rows)
{
    if (!rows)
        return;
    clopt_arg_tensor(a, (clopt_tensor){opt->scratch, scr_gc(e)});
    clopt_arg_ulong(a, e->n / rows);
}

/* ---- multi-pass rules ------------------------------------------------------------------- */

static clopt_status step_lamb(clopt_optimizer *opt, const param_entry *e,
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
    const clopt_tensor m = {e->state[0], 0}, v = {e->state[1], 0};
    clopt_args a = {kp, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, e->param);
    clopt_arg_tensor(&a, e->grad);
    clopt_arg_tensor(&a, m);
    clopt_arg_tensor(&a, v);
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
    clopt_arg_tensor(&b, m);
    clopt_arg_tensor(&b, v);
    clopt_arg_ulong(&b, e->n);
    clopt_arg_tensor(&b, (clopt_tensor){opt->scratch, SCR_SUMS});
    clopt_arg_float(&b, (float)hp->lr);
    clopt_arg_float(&b, (float)hp->eps);
    clopt_arg_float(&b, (float)hp->weight_decay);
    clopt_arg_float(&b, (float)(1.0 / bc1));
    clopt_arg_float(&b, (float)(1.0 / bc2));
    if (a.err != CL_SUCCESS || b.err != CL_SUCCESS)
        return clopt_fail_cl(opt->ctx, a.err != CL_SUCCESS ? a.err : b.err, "clSetKernelArg");
    if ((s = clopt_launch_items(opt->ctx, opt->ctx->queue, kp, items, 0, NULL, NULL)) !=
            CLOPT_SUCCESS ||
        (s = enqueue_final(opt, items, 2, SCR_SUMS)) != CLOPT_SUCCESS)
        return s;
    return clopt_launch_elementwise(opt->ctx, opt->ctx->queue, ku, e->n, 0, NULL, NULL);
}

static clopt_status step_adafactor(clopt_optimizer *opt, const param_entry *e,
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
    const clopt_tensor s0 = {e->state[0], 0};
    const clopt_tensor s1 = factored ? (clopt_tensor){e->state[1], 0} : s0;
    const clopt_tensor rmean = {opt->scratch, SCR_RMEAN};
    const size_t items = reduce_items(e->n);
    cl_ulong Rl = factored ? R : 1, Cl = factored ? C : 1;
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
        cl_int err = a.err != CL_SUCCESS ? a.err : c.err != CL_SUCCESS ? c.err : m.err;
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "clSetKernelArg");
        if ((s = clopt_launch_items(opt->ctx, opt->ctx->queue, kr, B * R, 0, NULL, NULL)) !=
                CLOPT_SUCCESS ||
            (s = clopt_launch_items(opt->ctx, opt->ctx->queue, kc, B * C, 0, NULL, NULL)) !=
                CLOPT_SUCCESS ||
            (s = clopt_launch_items(opt->ctx, opt->ctx->queue, km, B, 0, NULL, NULL)) !=
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
        clopt_arg_tensor(&u, (clopt_tensor){e->state[e->nstate - 1], 0});
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
    if (p.err != CL_SUCCESS || u.err != CL_SUCCESS)
        return clopt_fail_cl(opt->ctx, p.err != CL_SUCCESS ? p.err : u.err, "clSetKernelArg");
    if ((s = clopt_launch_items(opt->ctx, opt->ctx->queue, kp, items, 0, NULL, NULL)) !=
            CLOPT_SUCCESS ||
        (s = enqueue_final(opt, items, 2, SCR_SUMS)) != CLOPT_SUCCESS)
        return s;
    return clopt_launch_items(opt->ctx, opt->ctx->queue, ku, e->n, 0, NULL, NULL);
}

/* ---- step ------------------------------------------------------------------------------- */

static clopt_status step_elementwise(clopt_optimizer *opt, const param_entry *e,
                                     const clopt_hparams *hp, uint64_t t, double grad_scale,
                                     double mu_product)
{
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = e->param;
    a.grad = e->grad;
    for (size_t j = 0; j < e->nstate; j++)
        a.state[j] = (clopt_tensor){e->state[j], 0};
    if (opt->rule == CLOPT_SOPHIA && t % hp->hess_interval == 0)
        a.hessian = e->hessian;
    a.mu_product = mu_product;
    a.grad_scale = grad_scale;
    a.gc_rows = gc_rows(hp, e);
    a.gc_scratch = (clopt_tensor){opt->scratch, scr_gc(e)};
    return clopt_enqueue_step(opt->ctx, NULL, opt->rule, hp, &a, e->n, t, 0, NULL, NULL);
}

clopt_status clopt_optimizer_step(clopt_optimizer *opt, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    const uint64_t t = opt->step + 1;
    /* Validate every tensor before the first launch: a step does all or nothing (only an
       OpenCL failure in the middle of enqueueing can break that). */
    for (size_t i = 0; i < opt->nparams; i++) {
        const param_entry *e = &opt->params[i];
        clopt_status s;
        if ((s = clopt_check_tensor(ctx, "param", e->param, e->n)) != CLOPT_SUCCESS ||
            (s = clopt_check_tensor(ctx, "grad", e->grad, e->n)) != CLOPT_SUCCESS)
            return s;
    }
    double grad_scale = 1.0;
    if (opt->max_grad_norm > 0 && opt->nparams > 0) {
        double norm = 0;
        clopt_status s = grad_norm(opt, &norm);
        if (s != CLOPT_SUCCESS)
            return s;
        opt->last_grad_norm = norm;
        double coef = opt->max_grad_norm / (norm + 1e-6);
        if (isfinite(coef) && coef < 1.0)
            grad_scale = 1.0 / coef;
    }
    const float gmul = (float)(1.0 / grad_scale);
    for (size_t i = 0; i < opt->nparams; i++) {
        const param_entry *e = &opt->params[i];
        const group_entry *g = &opt->groups[e->group];
        clopt_status s;
        if (opt->rule == CLOPT_LAMB)
            s = step_lamb(opt, e, &g->hp, t, gmul);
        else if (opt->rule == CLOPT_ADAFACTOR)
            s = step_adafactor(opt, e, &g->hp, t, gmul);
        else
            s = step_elementwise(opt, e, &g->hp, t, grad_scale, g->mu_product);
        if (s != CLOPT_SUCCESS)
            return s;
    }
    if (event) {
        cl_int err = clEnqueueMarkerWithWaitList(ctx->queue, 0, NULL, event);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(ctx, err, "clEnqueueMarkerWithWaitList");
    }
    if (opt->rule == CLOPT_NADAM)
        for (size_t g = 0; g < opt->ngroups; g++)
            opt->groups[g].mu_product *= clopt_nadam_mu(&opt->groups[g].hp, (double)t);
    opt->step = t;
    return CLOPT_SUCCESS;
}

/* ---- queries ---------------------------------------------------------------------------- */

uint64_t clopt_optimizer_step_count(const clopt_optimizer *opt) { return opt ? opt->step : 0; }
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
    *out = (clopt_tensor){opt->params[param].state[index], 0};
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
    size_t len = opt->params[param].state_len[index];
    if (n != len)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_SIZE,
                          "state %zu of parameter %zu has %zu elements, %zu requested", index,
                          param, len, n);
    cl_int err = clEnqueueReadBuffer(opt->ctx->queue, t.buffer, CL_TRUE, 0, n * sizeof(float),
                                     host, 0, NULL, NULL);
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
