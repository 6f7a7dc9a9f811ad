/* Op level: one enqueue call per fused kernel over caller-owned (cl_mem, offset) tensors.
 * Everything is validated before anything is enqueued. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void clopt_step_args_init(clopt_step_args *args)
{
    if (!args)
        return;
    memset(args, 0, sizeof *args);
    args->mu_product = 1.0;
    args->grad_scale = 1.0;
}

static const char *state_label(size_t i)
{
    static const char *labels[CLOPT_MAX_STATE] = {"state[0]", "state[1]", "state[2]",
                                                  "state[3]"};
    return labels[i];
}

/* Checks everything a step needs; *nstate receives the rule's state count. */
static clopt_status validate_step(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                  const clopt_hparams *hp, const clopt_step_args *a, size_t n,
                                  uint64_t step, cl_uint num_wait, const cl_event *wait_list)
{
    if (!hp || !a)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams and args must not be NULL");
    const char *why = "";
    clopt_status s = clopt_hparams_validate(rule, hp, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_fail(ctx, s, "%s: %s", clopt_rule_name(rule) ? clopt_rule_name(rule) : "rule",
                          why);
    if (n == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n must be >= 1");
    if (step == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "step counts from 1");
    if (!(isfinite(a->grad_scale) && a->grad_scale >= 0))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "grad_scale must be finite and > 0 (0 means 1)");
    if (rule == CLOPT_NADAM && !(isfinite(a->mu_product) && a->mu_product > 0 &&
                                 a->mu_product <= 1))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "mu_product must be in (0, 1]");
    if (queue && (s = clopt_check_queue(ctx, queue)) != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_wait_list(ctx, num_wait, wait_list)) != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_tensor(ctx, "param", a->param, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "grad", a->grad, n)) != CLOPT_SUCCESS)
        return s;
    size_t nstate = clopt_rule_state_count(rule, hp);
    for (size_t i = 0; i < CLOPT_MAX_STATE; i++) {
        if (i < nstate && !a->state[i].buffer)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH, "%s: %s needs %s (state[%zu])",
                              clopt_rule_name(rule), "this variant",
                              clopt_rule_state_name(rule, hp, i), i);
        if (i >= nstate && a->state[i].buffer)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                              "%s: this variant has %zu state tensor(s), state[%zu] is set",
                              clopt_rule_name(rule), nstate, i);
        if (i < nstate && (s = clopt_check_tensor(ctx, state_label(i), a->state[i], n)) !=
                              CLOPT_SUCCESS)
            return s;
    }
    if (a->hessian.buffer) {
        if (rule != CLOPT_SOPHIA)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                              "%s takes no Hessian estimate (args.hessian is set)",
                              clopt_rule_name(rule));
        if ((s = clopt_check_tensor(ctx, "hessian", a->hessian, n)) != CLOPT_SUCCESS)
            return s;
    }
    return CLOPT_SUCCESS;
}

static cl_int set_tensor(cl_kernel k, cl_uint *i, const clopt_tensor *t)
{
    cl_ulong off = t->offset;
    cl_int err = clopt_set_arg(k, i, sizeof(cl_mem), &t->buffer);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, i, sizeof off, &off);
    return err;
}

clopt_status clopt_enqueue_step(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                const clopt_hparams *hp, const clopt_step_args *args,
                                size_t n, uint64_t step, cl_uint num_wait,
                                const cl_event *wait_list, cl_event *event)
{
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if ((int)rule < 0 || rule >= CLOPT_RULE_COUNT)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "rule %d is not a clopt_rule",
                          (int)rule);
    clopt_status s = validate_step(ctx, queue, rule, hp, args, n, step, num_wait, wait_list);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_launch_plan plan;
    if ((s = clopt_plan_step(ctx, rule, hp, args, step, &plan)) != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = clopt_get_kernel(ctx, plan.family, plan.options, plan.kernel, &k)) != CLOPT_SUCCESS)
        return s;
    const size_t nstate = clopt_rule_state_count(rule, hp);
    const cl_ulong n64 = n;
    const float gmul = (float)(args->grad_scale == 0 ? 1.0 : 1.0 / args->grad_scale);
    cl_uint i = 0;
    cl_int err = set_tensor(k, &i, &args->param);
    if (err == CL_SUCCESS)
        err = set_tensor(k, &i, &args->grad);
    for (size_t j = 0; j < nstate && err == CL_SUCCESS; j++)
        err = set_tensor(k, &i, &args->state[j]);
    if (err == CL_SUCCESS && plan.uses_hessian)
        err = set_tensor(k, &i, &args->hessian);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof n64, &n64);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof gmul, &gmul);
    if (err == CL_SUCCESS && plan.has_int_arg)
        err = clopt_set_arg(k, &i, sizeof plan.int_arg, &plan.int_arg);
    for (cl_uint j = 0; j < plan.nscalars && err == CL_SUCCESS; j++)
        err = clopt_set_arg(k, &i, sizeof(float), &plan.scalars[j]);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, num_wait, wait_list,
                                    event);
}

clopt_status clopt_enqueue_sgd(clopt_ctx *ctx, cl_command_queue queue, const clopt_hparams *hp,
                               const clopt_step_args *args, size_t n, uint64_t step,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    return clopt_enqueue_step(ctx, queue, CLOPT_SGD, hp, args, n, step, num_wait, wait_list,
                              event);
}

clopt_status clopt_enqueue_adam(clopt_ctx *ctx, cl_command_queue queue, const clopt_hparams *hp,
                                const clopt_step_args *args, size_t n, uint64_t step,
                                cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    return clopt_enqueue_step(ctx, queue, CLOPT_ADAM, hp, args, n, step, num_wait, wait_list,
                              event);
}

clopt_status clopt_enqueue_adamw(clopt_ctx *ctx, cl_command_queue queue, const clopt_hparams *hp,
                                 const clopt_step_args *args, size_t n, uint64_t step,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    return clopt_enqueue_step(ctx, queue, CLOPT_ADAMW, hp, args, n, step, num_wait, wait_list,
                              event);
}

/* ---- Sophia's estimators and the RNG ---------------------------------------------------- */

static clopt_status estimator_prologue(clopt_ctx *ctx, cl_command_queue queue, size_t n,
                                       cl_uint num_wait, const cl_event *wait_list,
                                       const char *family_kernel, cl_kernel *k)
{
    if (n == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n must be >= 1");
    clopt_status s;
    if (queue && (s = clopt_check_queue(ctx, queue)) != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_wait_list(ctx, num_wait, wait_list)) != CLOPT_SUCCESS)
        return s;
    char options[64];
    snprintf(options, sizeof options, "-DVW=%u", ctx->tuning.vector_width);
    return clopt_get_kernel(ctx, "hessian", options, family_kernel, k);
}

clopt_status clopt_enqueue_randn(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor out,
                                 size_t n, uint64_t seed, uint64_t counter_base,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    clopt_status s = clopt_check_tensor(ctx, "out", out, n);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = estimator_prologue(ctx, queue, n, num_wait, wait_list, "randn", &k)) != CLOPT_SUCCESS)
        return s;
    cl_ulong n64 = n, seed64 = seed, c64 = counter_base;
    cl_uint i = 0;
    cl_int err = set_tensor(k, &i, &out);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof n64, &n64);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof seed64, &seed64);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof c64, &c64);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clSetKernelArg");
    size_t global = (n + 3) / 4;
    err = clEnqueueNDRangeKernel(queue ? queue : ctx->queue, k, 1, NULL, &global, NULL, num_wait,
                                 wait_list, event);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clEnqueueNDRangeKernel");
    return CLOPT_SUCCESS;
}

clopt_status clopt_enqueue_hutchinson(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor u,
                                      clopt_tensor hvp, clopt_tensor out, size_t n,
                                      cl_uint num_wait, const cl_event *wait_list,
                                      cl_event *event)
{
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    clopt_status s;
    if ((s = clopt_check_tensor(ctx, "u", u, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "hvp", hvp, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "out", out, n)) != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = estimator_prologue(ctx, queue, n, num_wait, wait_list, "hutchinson", &k)) !=
        CLOPT_SUCCESS)
        return s;
    cl_ulong n64 = n;
    cl_uint i = 0;
    cl_int err = set_tensor(k, &i, &u);
    if (err == CL_SUCCESS)
        err = set_tensor(k, &i, &hvp);
    if (err == CL_SUCCESS)
        err = set_tensor(k, &i, &out);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof n64, &n64);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, num_wait, wait_list,
                                    event);
}

clopt_status clopt_enqueue_gnb(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor ghat,
                               clopt_tensor out, size_t n, double batch_size,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if (!(isfinite(batch_size) && batch_size > 0))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_HYPERPARAM, "batch_size must be finite and > 0");
    clopt_status s;
    if ((s = clopt_check_tensor(ctx, "ghat", ghat, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "out", out, n)) != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = estimator_prologue(ctx, queue, n, num_wait, wait_list, "gnb", &k)) != CLOPT_SUCCESS)
        return s;
    cl_ulong n64 = n;
    float b = (float)batch_size;
    cl_uint i = 0;
    cl_int err = set_tensor(k, &i, &ghat);
    if (err == CL_SUCCESS)
        err = set_tensor(k, &i, &out);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof n64, &n64);
    if (err == CL_SUCCESS)
        err = clopt_set_arg(k, &i, sizeof b, &b);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, num_wait, wait_list,
                                    event);
}
