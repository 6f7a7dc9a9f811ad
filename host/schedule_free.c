/* SPDX-License-Identifier: MIT */
/* Schedule-Free's train and eval modes: the parameters hold y while training and the
 * averaged x = lerp(y, z, 1 - 1/β) in eval mode (kernels/schedule_free.cl, sf_mode). */
#include "optimizer_internal.h"

#include <stdio.h>
#include <string.h>

/* The stochastic-rounding key's step word of a switch (a 16-bit θ without a master): the
   step's own (the tensor's count + 1 at the optimizer level, 0 at the op level) with its top
   bits 01 for eval and 11 for train (Lookahead's sync has 10, kernels/tensor.cl; updates,
   below 2^30 steps, 00), so that the two roundings of an eval/train round trip are
   independent of each other and of the step's update (sharing one word, the round trip
   came back biased: +0.2 ulp on average in the review's case). */
static uint32_t sr_key_step(uint64_t step, int train)
{
    return (uint32_t)step ^ (train ? 0xC0000000u : 0x40000000u);
}

/* The arguments of sf_mode before the storage ones: θ = lerp(θ, z, w) over n elements with
   eval w = 1 - 1/β (x from y) or train w = 1 - β, and w's complement; `step` + 1 is the
   optimizer level's rounding key step word (unused at the op level). */
static void mode_args(clopt_args *a, clopt_rule rule, const clopt_hparams *hp, int train,
                      clopt_tensor param, clopt_tensor z, size_t n, uint64_t step)
{
    const double b = clopt_sf_beta(rule, hp);
    clopt_arg_tensor(a, param);
    clopt_arg_tensor(a, z);
    clopt_arg_ulong(a, n);
    clopt_arg_float(a, (float)(train ? 1.0 - b : 1.0 - 1.0 / b));
    clopt_arg_float(a, (float)(train ? b : 1.0 / b));
    clopt_arg_ulong(a, step);
}

clopt_status clopt_enqueue_schedule_free_mode(clopt_ctx *ctx, cl_command_queue queue,
                                              clopt_rule rule, const clopt_hparams *hp,
                                              const clopt_step_args *args, size_t n, int train,
                                              cl_uint num_wait, const cl_event *wait_list,
                                              cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if (!clopt_rule_is_sf(rule))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "the train/eval switch is for schedule_free_adamw and "
                          "schedule_free_sgd");
    if (!hp || !args)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams and args must not be NULL");
    /* the step's own checks (θ, its storage, the states, queue, wait list) */
    clopt_status s = clopt_validate_step(ctx, queue, rule, hp, args, n, 1, num_wait, wait_list);
    if (s == CLOPT_SUCCESS)
        s = clopt_check_step_disjoint(ctx, rule, hp, args, n);
    if (s != CLOPT_SUCCESS)
        return s;
    char options[256];
    const clopt_tuning t = clopt_kernel_tuning(ctx, "sf_mode");
    int len = snprintf(options, sizeof options, CLOPT_TUNING_OPTIONS, CLOPT_TUNING_ARGS(&t));
    clopt_storage_options(options + len, sizeof options - (size_t)len, args->param_dtype,
                          CLOPT_DTYPE_F32, args->master_kind, args->stochastic_rounding);
    if (args->state_dtype == CLOPT_DTYPE_BF16) {
        len = (int)strlen(options);
        snprintf(options + len, sizeof options - (size_t)len, " -DSQ=2");
    }
    cl_kernel k;
    if ((s = clopt_get_kernel(ctx, "schedule_free", options, "sf_mode", &k)) != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    mode_args(&a, rule, hp, train, args->param, args->state[0], n, 0);
    if (args->param_dtype != CLOPT_DTYPE_F32)
        clopt_arg_storage(&a, args, sr_key_step(0, train));
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, &t, num_wait,
                                    wait_list, event);
}

/* The mode a tensor is in: the optimizer's, unless a switch that failed part way switched it
   (1: eval, the parameters hold x). */
static int tensor_eval(const clopt_optimizer *opt, const clopt_param *e)
{
    return opt->eval_mode ^ (e->sf_switched != 0);
}

/* The first tensor a switch that failed part way left switched, or nparams. */
static size_t first_switched(const clopt_optimizer *opt)
{
    size_t i = 0;
    while (i < opt->nparams && !opt->params[i].sf_switched)
        i++;
    return i;
}

clopt_status clopt_o_check_mode_whole(clopt_optimizer *opt)
{
    const size_t i = first_switched(opt);
    if (i == opt->nparams)
        return CLOPT_SUCCESS;
    return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_ARGUMENT,
                      "a switch to %s mode failed part way (tensor %zu holds %s): call "
                      "clopt_optimizer_eval or clopt_optimizer_train again to finish it",
                      opt->eval_mode ? "train" : "eval", i, opt->eval_mode ? "y" : "x");
}

/* One mode launch of tensor e's storage over the views param/z of n elements (dry: build
   only). *num_wait / *wait_list carry the caller's wait list to the first launch (then they
   are cleared), *event (may be NULL) ends up with the last launch's event, *launched counts
   the launches. */
static clopt_status mode_launch(clopt_optimizer *opt, const clopt_param *e, clopt_tensor param,
                                clopt_tensor z, size_t n, int train, int dry,
                                cl_uint *num_wait, const cl_event **wait_list, cl_event *event,
                                int *launched)
{
    const clopt_hparams *hp = &opt->groups[e->group].hp;
    char extra[96] = "";
    clopt_o_storage_extra(e, hp, extra, sizeof extra);
    cl_kernel k;
    clopt_status s = clopt_o_kernel_of(opt, "schedule_free", hp, 0, extra, "sf_mode", &k);
    if (s != CLOPT_SUCCESS || dry)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    mode_args(&a, opt->rule, hp, train, param, z, n,
              (uint32_t)(sr_key_step(e->step + 1, train) - 1u));
    clopt_o_storage_args(opt, &a, e);
    if (a.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &a);
    if (event && *event) {
        clReleaseEvent(*event);
        *event = NULL;
    }
    s = clopt_launch_elementwise(opt->ctx, opt->q, k, n, &opt->ctx->tuning, *num_wait,
                                 *wait_list, event);
    *num_wait = 0;
    *wait_list = NULL;
    *launched += s == CLOPT_SUCCESS;
    return s;
}

/* Every launch of a mode switch (dry: build them all first, so that a failed build changes
   nothing). Tensors that have not stepped yet hold θ_0 = y = x: nothing to do; tensors
   already in the target mode (a switch that failed part way) are skipped, and each launched
   one is marked, so that calling again finishes the switch with every tensor switched once. */
static clopt_status mode_pass(clopt_optimizer *opt, int train, int dry, cl_uint *num_wait,
                              const cl_event **wait_list, cl_event *event, int *launched)
{
    clopt_status s = CLOPT_SUCCESS;
    const int to_eval = !train;
    for (size_t gi = 0; s == CLOPT_SUCCESS && gi < opt->ngroups; gi++) {
        const clopt_group *g = &opt->groups[gi];
        if (g->arena) { /* one launch: its tensors were added together and share a count */
            const clopt_param *e0 = &opt->params[g->first];
            if (e0->step > 0 && (dry || tensor_eval(opt, e0) != to_eval))
                s = mode_launch(opt, e0, (clopt_tensor){g->arena_param, 0},
                                (clopt_tensor){g->arena_state[0], 0}, g->arena_len, train, dry,
                                num_wait, wait_list, event, launched);
            for (size_t i = g->first; !dry && s == CLOPT_SUCCESS && i < g->first + g->count; i++)
                opt->params[i].sf_switched = to_eval != opt->eval_mode;
            continue;
        }
        for (size_t i = 0; s == CLOPT_SUCCESS && i < opt->nparams; i++) {
            clopt_param *e = &opt->params[i];
            if (e->group != gi)
                continue;
            if (e->step > 0 && (dry || tensor_eval(opt, e) != to_eval))
                s = mode_launch(opt, e, e->param, e->state[0], e->n, train, dry, num_wait,
                                wait_list, event, launched);
            if (!dry && s == CLOPT_SUCCESS)
                e->sf_switched = to_eval != opt->eval_mode;
        }
    }
    return s;
}

clopt_status clopt_optimizer_set_mode_on(clopt_optimizer *opt, int train, cl_command_queue queue,
                                         cl_uint num_wait, const cl_event *wait_list,
                                         cl_event *event)
{
    if (event)
        *event = NULL;
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    clopt_status s = clopt_o_check_step_queue(ctx, queue, num_wait, wait_list);
    if (s != CLOPT_SUCCESS)
        return s;
    train = train != 0;
    opt->q = queue ? queue : ctx->queue;
    /* a switch that failed part way is finished (or undone) here */
    const int partial = first_switched(opt) < opt->nparams;
    const int to_do = clopt_rule_is_sf(opt->rule) && (train == opt->eval_mode || partial);
    if (to_do) {
        /* a tensor whose first step is still in flight: its count decides whether it has a
           z to interpolate with (a rare wait: a switch right after the first step) */
        int fresh = 0;
        for (size_t i = 0; i < opt->nparams; i++)
            fresh |= opt->params[i].step == 0;
        if (fresh && opt->rec_count > 0 && (s = clopt_opt_settle(opt)) != CLOPT_SUCCESS)
            return s;
        cl_uint nw = 0;
        const cl_event *wl = NULL;
        int launched = 0;
        if ((s = mode_pass(opt, train, 1, &nw, &wl, NULL, &launched)) != CLOPT_SUCCESS)
            return s;
        nw = num_wait;
        wl = wait_list;
        s = mode_pass(opt, train, 0, &nw, &wl, event, &launched);
        if (s != CLOPT_SUCCESS) { /* an OpenCL failure of a launch: the tensors before it are
                                     switched and marked (a call again finishes the switch) */
            if (event && *event) {
                clReleaseEvent(*event);
                *event = NULL;
            }
            return s;
        }
        if (launched) { /* the first launch took the wait list, the last gave *event */
            opt->eval_mode = !train;
            for (size_t i = 0; i < opt->nparams; i++)
                opt->params[i].sf_switched = 0;
            return CLOPT_SUCCESS;
        }
    }
    /* nothing to launch: an event that completes after the caller's (the mode changes only
       once it is enqueued: a failed call changes nothing) */
    if (event || num_wait) {
        cl_int err = clEnqueueMarkerWithWaitList(opt->q, num_wait, wait_list, event);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(ctx, err, "clEnqueueMarkerWithWaitList");
    }
    if (to_do) {
        opt->eval_mode = !train;
        for (size_t i = 0; i < opt->nparams; i++)
            opt->params[i].sf_switched = 0;
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_eval(clopt_optimizer *opt)
{
    return clopt_optimizer_set_mode_on(opt, 0, NULL, 0, NULL, NULL);
}

clopt_status clopt_optimizer_train(clopt_optimizer *opt)
{
    return clopt_optimizer_set_mode_on(opt, 1, NULL, 0, NULL, NULL);
}

int clopt_optimizer_training(const clopt_optimizer *opt)
{
    return opt ? !opt->eval_mode : 1;
}
