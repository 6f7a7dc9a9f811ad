/* SPDX-License-Identifier: MIT */
/* Optimizer level: the settings (clipping, AMP, the finite check), the gradients (zeroing,
 * accumulation), randomness, and the queries (step counts, rule, tensors, state bytes).
 * Creation, groups and tensors are in optimizer.c. */
#include "optimizer_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- settings ------------------------------------------------------------------------------ */

clopt_status clopt_optimizer_set_grad_clip(clopt_optimizer *opt, double max_norm)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!(isfinite(max_norm) && max_norm >= 0) ||
        (max_norm != 0 && !(max_norm >= FLT_MIN && max_norm <= CLOPT_MAX_FACTOR)))
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_HYPERPARAM,
                          "max_norm must be 0 (clipping off) or in 1.2e-38 .. 8.5e37 (it and "
                          "its reciprocal normal in float32)");
    opt->max_grad_norm = max_norm;
    return CLOPT_SUCCESS;
}

double clopt_optimizer_last_grad_norm(const clopt_optimizer *opt)
{
    return opt ? opt->last_grad_norm : NAN;
}

double clopt_optimizer_grad_clip(const clopt_optimizer *opt)
{
    return opt ? opt->max_grad_norm : NAN;
}

double clopt_optimizer_grad_scale(const clopt_optimizer *opt)
{
    return opt ? opt->grad_scale : NAN;
}

int clopt_optimizer_check_finite(const clopt_optimizer *opt) { return opt ? opt->check_finite : 0; }

clopt_status clopt_optimizer_set_grad_scale(clopt_optimizer *opt, double scale)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!(isfinite(scale) && scale >= 0) ||
        (scale != 0 && !(scale >= FLT_MIN && scale <= CLOPT_MAX_FACTOR)))
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_HYPERPARAM,
                          "the loss scale must be 0 (AMP off) or in 1.2e-38 .. 8.5e37 (it and "
                          "its reciprocal normal in float32)");
    opt->grad_scale = scale;
    return CLOPT_SUCCESS;
}

int clopt_optimizer_found_inf(const clopt_optimizer *opt) { return opt ? opt->found_inf : 0; }

clopt_status clopt_optimizer_set_loss_scaler(clopt_optimizer *opt, const clopt_loss_scaler *s)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!s) {
        opt->has_scaler = 0;
        return CLOPT_SUCCESS;
    }
    const char *why = NULL;
    if (!(s->scale >= FLT_MIN && s->scale <= CLOPT_MAX_FACTOR))
        why = "scale must be in 1.2e-38 .. 8.5e37 (it and its reciprocal normal in float32)";
    else if (!(s->growth_factor > 1.0 && s->growth_factor <= CLOPT_MAX_FACTOR))
        why = "growth_factor must be > 1, as torch's GradScaler asserts (and at most 8.5e37)";
    else if (!(s->backoff_factor > 0.0 && s->backoff_factor < 1.0))
        why = "backoff_factor must be in (0, 1), as torch's GradScaler asserts";
    if (why)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_HYPERPARAM, "loss scaler: %s", why);
    opt->scaler = *s;
    opt->has_scaler = 1;
    opt->grad_scale = s->scale;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_set_check_finite(clopt_optimizer *opt, int on)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (on != 0 && on != 1)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_ARGUMENT, "on must be 0 or 1");
    opt->check_finite = on;
    return CLOPT_SUCCESS;
}

/* ---- gradients -------------------------------------------------------------------------- */

int clopt_o_grad_unit(const clopt_optimizer *opt, size_t i, clopt_tensor *grad, size_t *n)
{
    const clopt_param *e = &opt->params[i];
    const clopt_group *g = &opt->groups[e->group];
    if (g->arena && i != g->first)
        return 0;
    *grad = g->arena ? (clopt_tensor){g->arena_grad, 0} : e->grad;
    *n = g->arena ? g->arena_len : e->n;
    return 1;
}

clopt_status clopt_optimizer_zero_grad(clopt_optimizer *opt)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    const float zero = 0.0f;
    for (size_t i = 0; i < opt->nparams; i++) {
        clopt_tensor grad;
        size_t n;
        if (!clopt_o_grad_unit(opt, i, &grad, &n))
            continue;
        /* zero bits are +0 in every storage type */
        const size_t es = clopt_dtype_size(opt->params[i].gdtype);
        cl_int err = es == sizeof zero
                         ? clopt_fill(opt->ctx->queue, grad.buffer, &zero, sizeof zero,
                                      grad.offset * es, n * es)
                         : clopt_fill(opt->ctx->queue, grad.buffer, &(cl_ushort){0},
                                      sizeof(cl_ushort), grad.offset * es, n * es);
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
    return clopt_enqueue_axpby_ex(opt->ctx, NULL, e->grad, e->gdtype, src, e->gdtype, e->n,
                                  weight, 1.0, 0, NULL, NULL);
}

/* ---- randomness ------------------------------------------------------------------------- */

clopt_status clopt_optimizer_seed(clopt_optimizer *opt, uint64_t seed)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    opt->rng_seed = seed;
    opt->rng_counter = 0;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_rng(const clopt_optimizer *opt, uint64_t *seed, uint64_t *counter)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!seed || !counter)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "seed and counter must not be NULL");
    *seed = opt->rng_seed;
    *counter = opt->rng_counter;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_set_rng(clopt_optimizer *opt, uint64_t seed, uint64_t counter)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    opt->rng_seed = seed;
    opt->rng_counter = counter;
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
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!out)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
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
    if (count > CLOPT_MAX_STEP_COUNT) /* a checkpoint of it would not load */
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "step count %llu: at most 2^53 - 64 (%llu)", (unsigned long long)count,
                          (unsigned long long)CLOPT_MAX_STEP_COUNT);
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
        size_t j = 0; /* one replay per group: its tensors share the result */
        while (j < i && opt->params[j].group != opt->params[i].group)
            j++;
        if (j < i) {
            opt->params[i].sf_lr_max = opt->params[j].sf_lr_max;
            opt->params[i].sf_weight_sum = opt->params[j].sf_weight_sum;
        } else {
            clopt_o_sf_replay(opt, &opt->params[i], count);
        }
    }
    opt->step = count;
    free(mu);
    return CLOPT_SUCCESS;
}
clopt_rule clopt_optimizer_rule(const clopt_optimizer *opt) { return opt ? opt->rule : CLOPT_RULE_COUNT; }
size_t clopt_optimizer_param_count(const clopt_optimizer *opt) { return opt ? opt->nparams : 0; }

size_t clopt_optimizer_state_bytes(const clopt_optimizer *opt)
{
    size_t total = 0;
    for (size_t i = 0; opt && i < opt->nparams; i++)
        for (size_t k = 0; k < opt->params[i].nstate; k++)
            total += opt->params[i].state_len[k] * clopt_state_esize(&opt->params[i], k);
    return total;
}
