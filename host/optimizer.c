/* Optimizer level: owns state buffers, the step count and hyperparameters (torch.optim-like).
 * Each step is one clopt_enqueue_step per registered tensor. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct param_entry {
    clopt_tensor param, grad, hessian; /* hessian.buffer NULL: none (Sophia only) */
    size_t n;
    cl_mem state[CLOPT_MAX_STATE];
    size_t nstate;
} param_entry;

struct clopt_optimizer {
    clopt_ctx *ctx;
    clopt_rule rule;
    clopt_hparams hp;
    uint64_t step;
    double mu_product; /* NAdam: product of μ_1..μ_step */
    param_entry *params;
    size_t nparams, cap;
};

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
    const char *why = "";
    clopt_status s = clopt_hparams_validate(rule, hp, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_fail(ctx, s, "%s", why);
    clopt_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "optimizer");
    opt->ctx = ctx;
    opt->rule = rule;
    opt->hp = *hp;
    opt->mu_product = 1.0;
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
    free(opt->params);
    free(opt);
}

clopt_status clopt_optimizer_add_param(clopt_optimizer *opt, clopt_tensor param,
                                       clopt_tensor grad, size_t n, const clopt_tensor *hessian,
                                       size_t *index)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (n == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n must be >= 1");
    clopt_status s;
    if ((s = clopt_check_tensor(ctx, "param", param, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "grad", grad, n)) != CLOPT_SUCCESS)
        return s;
    if (hessian && hessian->buffer) {
        if (opt->rule != CLOPT_SOPHIA)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH, "%s takes no Hessian estimate",
                              clopt_rule_name(opt->rule));
        if ((s = clopt_check_tensor(ctx, "hessian", *hessian, n)) != CLOPT_SUCCESS)
            return s;
    }
    if (n > SIZE_MAX / sizeof(float))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n too large");
    if (opt->nparams == opt->cap) {
        size_t cap = opt->cap ? 2 * opt->cap : 8;
        param_entry *p = realloc(opt->params, cap * sizeof *p);
        if (!p)
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "parameter table");
        opt->params = p;
        opt->cap = cap;
    }
    param_entry e;
    memset(&e, 0, sizeof e);
    e.param = param;
    e.grad = grad;
    if (hessian)
        e.hessian = *hessian;
    e.n = n;
    e.nstate = clopt_rule_state_count(opt->rule, &opt->hp);
    for (size_t i = 0; i < e.nstate; i++) {
        cl_int err = CL_SUCCESS;
        e.state[i] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
        if (e.state[i]) {
            float init = clopt_rule_state_init(opt->rule, &opt->hp, i);
            err = clEnqueueFillBuffer(ctx->queue, e.state[i], &init, sizeof init, 0,
                                      n * sizeof(float), 0, NULL, NULL);
        }
        if (err != CL_SUCCESS) {
            release_entry(&e);
            return clopt_fail_cl(ctx, err, "allocating optimizer state");
        }
    }
    cl_int err = clFinish(ctx->queue);
    if (err != CL_SUCCESS) {
        release_entry(&e);
        return clopt_fail_cl(ctx, err, "initialising optimizer state");
    }
    opt->params[opt->nparams] = e;
    if (index)
        *index = opt->nparams;
    opt->nparams++;
    return CLOPT_SUCCESS;
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
    const int hess_step = opt->rule == CLOPT_SOPHIA && t % opt->hp.hess_interval == 0;
    /* Validate every tensor (and compile) before the first launch: a step does all or none. */
    for (size_t i = 0; i < opt->nparams; i++) {
        const param_entry *e = &opt->params[i];
        clopt_status s;
        if ((s = clopt_check_tensor(ctx, "param", e->param, e->n)) != CLOPT_SUCCESS ||
            (s = clopt_check_tensor(ctx, "grad", e->grad, e->n)) != CLOPT_SUCCESS)
            return s;
    }
    for (size_t i = 0; i < opt->nparams; i++) {
        const param_entry *e = &opt->params[i];
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = e->param;
        a.grad = e->grad;
        for (size_t j = 0; j < e->nstate; j++)
            a.state[j] = (clopt_tensor){e->state[j], 0};
        if (hess_step)
            a.hessian = e->hessian;
        a.mu_product = opt->mu_product;
        clopt_status s = clopt_enqueue_step(ctx, NULL, opt->rule, &opt->hp, &a, e->n, t, 0, NULL,
                                            NULL);
        if (s != CLOPT_SUCCESS)
            return s; /* only an OpenCL failure can get here after validation */
    }
    if (event) {
        cl_int err = clEnqueueMarkerWithWaitList(ctx->queue, 0, NULL, event);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(ctx, err, "clEnqueueMarkerWithWaitList");
    }
    if (opt->rule == CLOPT_NADAM)
        opt->mu_product *= clopt_nadam_mu(&opt->hp, (double)t);
    opt->step = t;
    return CLOPT_SUCCESS;
}

uint64_t clopt_optimizer_step_count(const clopt_optimizer *opt) { return opt ? opt->step : 0; }
clopt_rule clopt_optimizer_rule(const clopt_optimizer *opt) { return opt ? opt->rule : CLOPT_RULE_COUNT; }
size_t clopt_optimizer_param_count(const clopt_optimizer *opt) { return opt ? opt->nparams : 0; }

clopt_status clopt_optimizer_set_hparams(clopt_optimizer *opt, const clopt_hparams *hp)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!hp)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams is NULL");
    const char *why = "";
    clopt_status s = clopt_hparams_validate(opt->rule, hp, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_fail(opt->ctx, s, "%s", why);
    size_t now = clopt_rule_state_count(opt->rule, &opt->hp);
    size_t then = clopt_rule_state_count(opt->rule, hp);
    for (size_t i = 0; i < now || i < then; i++) {
        const char *a = clopt_rule_state_name(opt->rule, &opt->hp, i);
        const char *b = clopt_rule_state_name(opt->rule, hp, i);
        if (!a || !b || strcmp(a, b) != 0)
            return clopt_fail(opt->ctx, CLOPT_ERR_STATE_MISMATCH,
                              "these hyperparameters change the state layout (%s -> %s)",
                              a ? a : "none", b ? b : "none");
    }
    opt->hp = *hp;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_get_hparams(const clopt_optimizer *opt, clopt_hparams *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    *out = opt->hp;
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
    if (n != opt->params[param].n)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_SIZE,
                          "state of parameter %zu has %zu elements, %zu requested", param,
                          opt->params[param].n, n);
    cl_int err = clEnqueueReadBuffer(opt->ctx->queue, t.buffer, CL_TRUE, 0, n * sizeof(float),
                                     host, 0, NULL, NULL);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(opt->ctx, err, "clEnqueueReadBuffer");
}

size_t clopt_optimizer_state_bytes(const clopt_optimizer *opt)
{
    size_t total = 0;
    for (size_t i = 0; opt && i < opt->nparams; i++)
        total += opt->params[i].nstate * opt->params[i].n * sizeof(float);
    return total;
}
