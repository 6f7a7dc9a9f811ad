/* SPDX-License-Identifier: MIT */
/* Op level: one enqueue call per fused kernel over caller-owned (cl_mem, offset) tensors.
 * Everything is validated before anything is enqueued. */
#include "internal.h"
#include "q8_table.h"

#include <float.h>
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

static int dtype_16(clopt_dtype t) { return t == CLOPT_DTYPE_F16 || t == CLOPT_DTYPE_BF16; }
static int dtype_value(clopt_dtype t) { return t == CLOPT_DTYPE_F32 || dtype_16(t); }

/* The storage types of an op between two tensors (convert, axpby): F32, F16 or BF16. */
static clopt_status check_op_dtypes(clopt_ctx *ctx, const char *op, clopt_dtype dst_dtype,
                                    clopt_dtype src_dtype)
{
    if (dtype_value(dst_dtype) && dtype_value(src_dtype))
        return CLOPT_SUCCESS;
    return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                      "%s: dst_dtype and src_dtype must be CLOPT_DTYPE_F32, F16 or BF16 (got %d "
                      "and %d)", op, (int)dst_dtype, (int)src_dtype);
}

/* Whether n elements of dst (ds bytes each) and of src (ss) share bytes of one buffer (both
   inside their buffers: no overflow; a sub-buffer counts as its parent's bytes): 1, or 2
   when they are the same range (same buffer bytes, same element size). */
static int op_overlap(clopt_tensor dst, size_t ds, clopt_tensor src, size_t ss, size_t n)
{
    size_t od, os;
    const cl_mem bd = clopt_mem_root(dst.buffer, &od), bs = clopt_mem_root(src.buffer, &os);
    const size_t d0 = od + dst.offset * ds, s0 = os + src.offset * ss;
    if (bd != bs || !(d0 < s0 + n * ss && s0 < d0 + n * ds))
        return 0;
    return d0 == s0 && ds == ss ? 2 : 1;
}

/* The op-level step's tensors (validated) must not share bytes: a work-item's reads and
   writes of one element would race with another's (the optimizer level checks its tensors
   once, at registration, and may hand a launch whole buffers). */
clopt_status clopt_check_step_disjoint(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                       const clopt_step_args *a, size_t n)
{
    clopt_span r[3 + 2 * CLOPT_MAX_STATE + 2];
    size_t k = 0;
#define SPAN(w, tensor, count, esize)                                                      \
    r[k++] = (clopt_span){(tensor).buffer, (tensor).offset * (esize),                      \
                          ((tensor).offset + (count)) * (esize), w, SIZE_MAX}
    SPAN("param", a->param, n, clopt_dtype_size(a->param_dtype));
    SPAN("grad", a->grad, n, clopt_dtype_size(a->grad_dtype));
    if (a->master_kind != CLOPT_MASTER_NONE)
        SPAN("master", a->master, n, a->master_kind == CLOPT_MASTER_F32 ? 4u : 2u);
    const size_t ns = clopt_rule_state_count(rule, hp);
    for (size_t i = 0; i < ns; i++) {
        SPAN(state_label(i), a->state[i], n, clopt_dtype_size(a->state_dtype));
        if (a->state_dtype == CLOPT_DTYPE_U8)
            SPAN("state_absmax", a->state_absmax[i], clopt_q8_blocks(n), sizeof(float));
    }
    if (a->hessian.buffer)
        SPAN("hessian", a->hessian, n, sizeof(float));
    if (hp->grad_centralization && a->gc_rows > 0)
        SPAN("gc_scratch", a->gc_scratch, a->gc_rows, sizeof(float));
#undef SPAN
    return clopt_check_disjoint(ctx, r, k);
}

/* θ, g and the master with their storage types; the storage options of the step. */
static clopt_status check_storage(clopt_ctx *ctx, const clopt_step_args *a, size_t n)
{
    if (!dtype_value(a->param_dtype) || !dtype_value(a->grad_dtype))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "param_dtype and grad_dtype must be CLOPT_DTYPE_F32, F16 or BF16 "
                          "(got %d and %d)", (int)a->param_dtype, (int)a->grad_dtype);
    clopt_status s;
    if ((s = clopt_check_tensor_of(ctx, "param", a->param, n,
                                   clopt_dtype_size(a->param_dtype))) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor_of(ctx, "grad", a->grad, n,
                                   clopt_dtype_size(a->grad_dtype))) != CLOPT_SUCCESS)
        return s;
    const int p16 = dtype_16(a->param_dtype);
    if ((int)a->master_kind < CLOPT_MASTER_NONE || a->master_kind > CLOPT_MASTER_REMAINDER)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "master_kind %d is not a clopt_master",
                          (int)a->master_kind);
    if (a->master_kind != CLOPT_MASTER_NONE && !p16)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "a master copy needs a 16-bit param (param_dtype is %s)",
                          clopt_dtype_name(a->param_dtype));
    if (a->master_kind == CLOPT_MASTER_REMAINDER && a->param_dtype != CLOPT_DTYPE_BF16)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "CLOPT_MASTER_REMAINDER needs a bf16 param (the remainder is the low "
                          "half of the float32 master); use CLOPT_MASTER_F32 with f16");
    if (a->master_kind == CLOPT_MASTER_NONE && a->master.buffer)
        return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                          "args.master is set but master_kind is CLOPT_MASTER_NONE");
    if (a->master_kind != CLOPT_MASTER_NONE &&
        (s = clopt_check_tensor_of(ctx, "master", a->master, n,
                                   a->master_kind == CLOPT_MASTER_F32 ? 4 : 2)) != CLOPT_SUCCESS)
        return s;
    if (a->stochastic_rounding != 0 && a->stochastic_rounding != 1)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "stochastic_rounding must be 0 or 1");
    if (a->stochastic_rounding && (!p16 || a->master_kind != CLOPT_MASTER_NONE))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "stochastic rounding applies to a 16-bit param without a master "
                          "(param_dtype %s, master_kind %d)",
                          clopt_dtype_name(a->param_dtype), (int)a->master_kind);
    return CLOPT_SUCCESS;
}

/* The state storage a rule takes. */
static clopt_status check_state_storage(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                        const clopt_step_args *a)
{
    const clopt_dtype t = a->state_dtype;
    if (t != CLOPT_DTYPE_F32 && t != CLOPT_DTYPE_BF16 && t != CLOPT_DTYPE_U8)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "state_dtype must be CLOPT_DTYPE_F32, BF16 or U8 (got %d)", (int)t);
    if (t == CLOPT_DTYPE_U8 && !clopt_rule_q8_ok(rule, hp))
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "%s%s has no 8-bit state (8-bit blockwise state: SGD with momentum, "
                          "Adam, AdamW, Lion, RMSprop not centered, Adagrad, AdEMAMix, none "
                          "with cautious masking)",
                          rule == CLOPT_RMSPROP && hp->centered ? "centered " : "",
                          clopt_rule_name(rule));
    return CLOPT_SUCCESS;
}

/* The -D defines of a storage combination ("" for float32 θ and g, whose programs stay the
   ones they always were). */
void clopt_storage_options(char *out, size_t cap, clopt_dtype param, clopt_dtype grad,
                           clopt_master master, int sr)
{
    if (param == CLOPT_DTYPE_F32 && grad == CLOPT_DTYPE_F32)
        out[0] = 0;
    else
        snprintf(out, cap, " -DPT=%d -DGT=%d -DMASTER=%d -DSR=%d", (int)param, (int)grad,
                 (int)master, sr);
}

/* The arguments after all others of a kernel with a 16-bit θ (STORAGE_PARAMS in
   kernels/storage.cl): the master (θ's buffer when there is none) and the rounding key. */
void clopt_arg_storage(clopt_args *a, const clopt_step_args *s, uint64_t step)
{
    clopt_arg_tensor(a, s->master_kind != CLOPT_MASTER_NONE ? s->master : s->param);
    clopt_arg_ulong(a, s->sr_seed);
    clopt_arg_int(a, (cl_int)s->sr_stream);
    clopt_arg_int(a, (cl_int)(uint32_t)step);
}

/* Checks everything a step needs; *nstate receives the rule's state count. */
clopt_status clopt_validate_step(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
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
    if (!(isfinite(a->grad_scale) && a->grad_scale >= 0) ||
        (a->grad_scale != 0 &&
         !(a->grad_scale >= FLT_MIN && a->grad_scale <= CLOPT_MAX_FACTOR)))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "grad_scale must be 0 (means 1) or in 1.2e-38 .. 8.5e37 (it and its "
                          "reciprocal normal in float32)");
    /* NAdam: the product of μ_1..μ_{t-1} underflows to 0 in long runs (β1 = 0: at once);
       torch keeps going, the bias correction 1 - Π tends to 1 */
    if (rule == CLOPT_NADAM && !(isfinite(a->mu_product) && a->mu_product >= 0 &&
                                 a->mu_product <= 1))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "mu_product must be in [0, 1]");
    if (clopt_rule_is_sf(rule) &&
        !(isfinite(a->sf_lr_max) && a->sf_lr_max >= 0 && isfinite(a->sf_weight_sum) &&
          a->sf_weight_sum >= 0))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "sf_lr_max and sf_weight_sum must be finite and >= 0");
    if (queue && (s = clopt_check_queue(ctx, queue)) != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_wait_list(ctx, num_wait, wait_list)) != CLOPT_SUCCESS)
        return s;
    if ((s = check_storage(ctx, a, n)) != CLOPT_SUCCESS ||
        (s = check_state_storage(ctx, rule, hp, a)) != CLOPT_SUCCESS)
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
        if (i < nstate && (s = clopt_check_tensor_of(ctx, state_label(i), a->state[i], n,
                                                     clopt_dtype_size(a->state_dtype))) !=
                              CLOPT_SUCCESS)
            return s;
        if (a->state_dtype == CLOPT_DTYPE_U8 && i < nstate &&
            (s = clopt_check_tensor(ctx, "state_absmax", a->state_absmax[i],
                                    clopt_q8_blocks(n))) != CLOPT_SUCCESS)
            return s;
        if ((a->state_dtype != CLOPT_DTYPE_U8 || i >= nstate) && a->state_absmax[i].buffer)
            return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                              "state_absmax[%zu] is set but state %zu is not 8-bit", i, i);
    }
    if (hp->grad_centralization && a->gc_rows > 0) {
        if (n % a->gc_rows != 0)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE,
                              "gc_rows %zu does not divide n %zu", a->gc_rows, n);
        if ((s = clopt_check_tensor(ctx, "gc_scratch", a->gc_scratch, a->gc_rows)) !=
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

void clopt_arg_ctl(clopt_args *a, const clopt_ctl *c)
{
    clopt_arg_tensor(a, (clopt_tensor){c->buffer, 0});
    clopt_arg_ulong(a, c->expect);
    clopt_arg_tensor(a, (clopt_tensor){c->tab ? c->tab : c->buffer, c->tab ? c->tabo : 0});
    clopt_arg_int(a, (cl_int)c->ncand);
}

/* 8-bit state in work-groups (kernels/storage.cl, Q8WG): a block's work-group must be
   launched whole, so a kernel that cannot run 256 / VW work-items per group (its
   CL_KERNEL_WORK_GROUP_SIZE, e.g. a register-heavy variant on a GPU) is refused before
   anything is enqueued, never launched with the driver's group size. */
static clopt_status check_q8_group(clopt_ctx *ctx, cl_kernel k, const clopt_tuning *t)
{
    size_t kmax = 0;
    cl_int err = clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof kmax, &kmax, NULL);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clGetKernelWorkGroupInfo");
    if (kmax < t->work_group_size)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "8-bit state: the kernel runs at most %zu work-items per work-group "
                          "on this device, a block of 256 needs %zu with vector width %u; set "
                          "a wider vector_width (clopt_ctx_set_tuning) or "
                          "items_per_work_item > 1 (a work-item per block)",
                          kmax, t->work_group_size, t->vector_width);
    return CLOPT_SUCCESS;
}

clopt_status clopt_enqueue_step(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                const clopt_hparams *hp, const clopt_step_args *args,
                                size_t n, uint64_t step, cl_uint num_wait,
                                const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    return clopt_enqueue_step_ctl(ctx, queue, rule, hp, args, n, step, NULL, num_wait,
                                  wait_list, event);
}

clopt_status clopt_enqueue_step_ctl(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                    const clopt_hparams *hp, const clopt_step_args *args,
                                    size_t n, uint64_t step, const clopt_ctl *ctl,
                                    cl_uint num_wait, const cl_event *wait_list,
                                    cl_event *event)
{
    if ((int)rule < 0 || rule >= CLOPT_RULE_COUNT)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "rule %d is not a clopt_rule",
                          (int)rule);
    if (clopt_rule_is_multipass(rule))
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "%s needs reductions over the whole tensor: use the optimizer level",
                          clopt_rule_name(rule));
    clopt_status s = clopt_validate_step(ctx, queue, rule, hp, args, n, step, num_wait, wait_list);
    if (s == CLOPT_SUCCESS && !ctl)
        s = clopt_check_step_disjoint(ctx, rule, hp, args, n);
    if (s != CLOPT_SUCCESS)
        return s;
    if (clopt_rule_per_tensor(rule, hp)) /* valid hyperparameters with cautious masking */
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "cautious %s needs the mask's mean over the whole tensor: use the "
                          "optimizer level", clopt_rule_name(rule));
    clopt_launch_plan plan;
    if ((s = clopt_plan_step(ctx, rule, hp, args, step, &plan)) != CLOPT_SUCCESS)
        return s;
    if (ctl) {
        size_t len = strlen(plan.options);
        snprintf(plan.options + len, sizeof plan.options - len, " -DCTRL=1%s",
                 ctl->ranges ? " -DRANGES=1" : "");
    }
    const int p16 = args->param_dtype != CLOPT_DTYPE_F32;
    if (p16 || args->grad_dtype != CLOPT_DTYPE_F32) {
        size_t len = strlen(plan.options);
        clopt_storage_options(plan.options + len, sizeof plan.options - len, args->param_dtype,
                              args->grad_dtype, args->master_kind, args->stochastic_rounding);
    }
    const int q8 = args->state_dtype == CLOPT_DTYPE_U8;
    if (args->state_dtype != CLOPT_DTYPE_F32) {
        size_t len = strlen(plan.options);
        snprintf(plan.options + len, sizeof plan.options - len, " -DSQ=%d%s%s", q8 ? 4 : 2,
                 q8 ? CLOPT_Q8_TABLE_OPTIONS : "", plan.q8_group ? " -DQ8WG=1" : "");
    }
    cl_mem qmap = NULL;
    if (q8 && (s = clopt_ctx_qmap(ctx, &qmap)) != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL, kgc = NULL;
    unsigned rl; /* gradient centralization's row means (clopt_gc_groups) */
    size_t ngroups;
    clopt_reduce_shape(ctx, &rl, &ngroups);
    if ((s = clopt_get_kernel(ctx, plan.family, plan.options, plan.kernel, &k)) != CLOPT_SUCCESS)
        return s;
    if (plan.gc) {
        char gcopt[192];
        int gl = snprintf(gcopt, sizeof gcopt, "-DVW=%u -DMAXIMIZE=%d -DCTRL=%d" CLOPT_REDUCE_OPTIONS,
                          ctx->tuning.vector_width, hp->maximize ? 1 : 0, ctl != NULL, rl);
        clopt_storage_options(gcopt + gl, sizeof gcopt - (size_t)gl, args->param_dtype,
                              args->grad_dtype, args->master_kind, args->stochastic_rounding);
        if ((s = clopt_get_kernel(ctx, "reduce", gcopt, "gc_rowmean", &kgc)) != CLOPT_SUCCESS)
            return s;
    }
    const size_t nstate = clopt_rule_state_count(rule, hp);
    const float gmul = (float)(args->grad_scale == 0 ? 1.0 : 1.0 / args->grad_scale);
    const cl_ulong gc_cols = plan.gc ? n / args->gc_rows : 1;
    /* Argument order of every element-wise kernel: θ, g, the states, [ĥ], [GC means, row
       length], n, the gradient multiplier, [a per-step int], the per-step floats. */
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, args->param);
    clopt_arg_tensor(&a, args->grad);
    for (size_t j = 0; j < nstate; j++) {
        clopt_arg_tensor(&a, args->state[j]);
        if (q8)
            clopt_arg_tensor(&a, args->state_absmax[j]);
    }
    if (plan.uses_hessian)
        clopt_arg_tensor(&a, args->hessian);
    if (plan.gc) {
        clopt_arg_tensor(&a, args->gc_scratch);
        clopt_arg_ulong(&a, gc_cols);
    }
    /* a range launch with 8-bit state: n is the table's number of rows (kernels/common.cl) */
    const int q8_rows = q8 && ctl && ctl->ranges;
    clopt_arg_ulong(&a, q8_rows ? (cl_ulong)ctl->nchunks : n);
    clopt_arg_float(&a, gmul);
    if (plan.has_int_arg)
        clopt_arg_int(&a, plan.int_arg);
    for (cl_uint j = 0; j < plan.nscalars; j++)
        clopt_arg_float(&a, plan.scalars[j]);
    if (ctl && ctl->ranges)
        clopt_arg_mem(&a, ctl->ranges);
    if (ctl)
        clopt_arg_ctl(&a, ctl);
    if (p16)
        clopt_arg_storage(&a, args, step);
    if (q8)
        clopt_arg_mem(&a, qmap);
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    if (plan.q8_group && (s = check_q8_group(ctx, k, &plan.tuning)) != CLOPT_SUCCESS)
        return s;
    cl_command_queue q = queue ? queue : ctx->queue;
    /* (the optimizer's dry pass: refused before its step enqueues anything) */
    if (!(ctl && ctl->ranges && !q8_rows) &&
        (s = clopt_check_items(ctx, q8_rows ? ctl->nchunks * 256 : n, &plan.tuning)) !=
            CLOPT_SUCCESS)
        return s;
    if (ctl && ctl->dry && !plan.gc)
        return CLOPT_SUCCESS;
    if (q8_rows) /* a work-item per row: the launch of nchunks blocks of 256 */
        return clopt_launch_elementwise(ctx, q, k, ctl->nchunks * 256, &plan.tuning, num_wait,
                                        wait_list, event);
    if (ctl && ctl->ranges) /* the optimizer never combines RANGES with GC */
        return clopt_launch_chunks(ctx, q, k, ctl->nchunks, &plan.tuning, num_wait, wait_list,
                                   event);
    if (!plan.gc)
        return clopt_launch_elementwise(ctx, q, k, n, &plan.tuning, num_wait, wait_list, event);
    /* Gradient centralization: row means first (after L2 decay, as the GC code), then the
       fused update subtracts them; the event orders the two on any queue. */
    clopt_args b = {kgc, 0, CL_SUCCESS};
    clopt_arg_tensor(&b, args->grad);
    clopt_arg_tensor(&b, args->param);
    clopt_arg_ulong(&b, args->gc_rows);
    clopt_arg_ulong(&b, gc_cols);
    clopt_arg_float(&b, gmul);
    clopt_arg_float(&b, (float)clopt_rule_l2_decay(rule, hp));
    clopt_arg_tensor(&b, args->gc_scratch);
    if (ctl)
        clopt_arg_ctl(&b, ctl);
    if (p16)
        clopt_arg_storage(&b, args, step);
    if (b.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, b.err, "clSetKernelArg");
    if ((s = clopt_check_work_group(ctx, kgc, rl)) != CLOPT_SUCCESS || (ctl && ctl->dry))
        return s; /* (at the optimizer level: in the step's dry pass) */
    cl_event means = NULL;
    const size_t gc_groups = clopt_gc_groups(ctx, args->gc_rows);
    if ((s = clopt_launch_groups(ctx, q, kgc, gc_groups, rl, num_wait, wait_list, &means)) !=
        CLOPT_SUCCESS)
        return s;
    s = clopt_launch_elementwise(ctx, q, k, n, &plan.tuning, 1, &means, event);
    clReleaseEvent(means);
    return s;
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

/* Checks shared by the small ops, then their kernel from `family`. */
static clopt_status small_op_prologue(clopt_ctx *ctx, cl_command_queue queue, size_t n,
                                       cl_uint num_wait, const cl_event *wait_list,
                                       const char *family, const char *extra, const char *kernel,
                                       cl_kernel *k)
{
    if (n == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n must be >= 1");
    clopt_status s;
    if (queue && (s = clopt_check_queue(ctx, queue)) != CLOPT_SUCCESS)
        return s;
    if ((s = clopt_check_wait_list(ctx, num_wait, wait_list)) != CLOPT_SUCCESS)
        return s;
    char options[96];
    const int len = snprintf(options, sizeof options, CLOPT_TUNING_OPTIONS,
                             CLOPT_TUNING_ARGS(&ctx->tuning));
    snprintf(options + len, sizeof options - (size_t)len, "%s", extra);
    return clopt_get_kernel(ctx, family, options, kernel, k);
}

clopt_status clopt_enqueue_randn(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor out,
                                 size_t n, uint64_t seed, uint64_t counter_base,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    clopt_status s = clopt_check_tensor(ctx, "out", out, n);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = small_op_prologue(ctx, queue, n, num_wait, wait_list, "hessian", "", "randn",
                               &k)) != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, out);
    clopt_arg_ulong(&a, n);
    clopt_arg_ulong(&a, seed);
    clopt_arg_ulong(&a, counter_base);
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    return clopt_launch_items(ctx, queue ? queue : ctx->queue, k, (n + 3) / 4, num_wait,
                              wait_list, event);
}

clopt_status clopt_enqueue_hutchinson(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor u,
                                      clopt_tensor hvp, clopt_tensor out, size_t n,
                                      cl_uint num_wait, const cl_event *wait_list,
                                      cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    clopt_status s;
    if ((s = clopt_check_tensor(ctx, "u", u, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "hvp", hvp, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "out", out, n)) != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = small_op_prologue(ctx, queue, n, num_wait, wait_list, "hessian", "", "hutchinson",
                               &k)) != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, u);
    clopt_arg_tensor(&a, hvp);
    clopt_arg_tensor(&a, out);
    clopt_arg_ulong(&a, n);
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, &ctx->tuning, num_wait,
                                    wait_list, event);
}

clopt_status clopt_enqueue_gnb(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor ghat,
                               clopt_tensor out, size_t n, double batch_size,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if (!(isfinite(batch_size) && batch_size > 0 && batch_size <= FLT_MAX))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_HYPERPARAM,
                          "batch_size must be > 0 and finite as a float (the kernel's)");
    clopt_status s;
    if ((s = clopt_check_tensor(ctx, "ghat", ghat, n)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor(ctx, "out", out, n)) != CLOPT_SUCCESS)
        return s;
    cl_kernel k = NULL;
    if ((s = small_op_prologue(ctx, queue, n, num_wait, wait_list, "hessian", "", "gnb",
                               &k)) != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, ghat);
    clopt_arg_tensor(&a, out);
    clopt_arg_ulong(&a, n);
    clopt_arg_float(&a, (float)batch_size);
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, &ctx->tuning, num_wait,
                                    wait_list, event);
}

/* dst (dt) = beta·dst + alpha·src (st), validated once for both entry points: float32 with
   float32 is axpby's program built with the tuning alone (no storage defines); refuse_overlap
   (axpby_ex) refuses ranges of one buffer that share bytes, except the same range of one
   type. */
static clopt_status axpby_enqueue(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                  clopt_dtype dt, clopt_tensor src, clopt_dtype st, size_t n,
                                  double alpha, double beta, int refuse_overlap,
                                  cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    if (!(fabs(alpha) <= FLT_MAX && fabs(beta) <= FLT_MAX)) /* (NaN fails too) */
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "alpha and beta must be finite as floats (the kernel's)");
    const size_t ds = clopt_dtype_size(dt), ss = clopt_dtype_size(st);
    clopt_status s;
    if ((s = clopt_check_tensor_of(ctx, "dst", dst, n, ds)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor_of(ctx, "src", src, n, ss)) != CLOPT_SUCCESS)
        return s;
    /* one array read and written in place is fine; any other overlap is a race */
    const int ov = op_overlap(dst, ds, src, ss, n), same = ov == 2 && dt == st;
    if (refuse_overlap && ov && !same)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "axpby: dst and src overlap");
    cl_kernel k = NULL;
    if (dt == CLOPT_DTYPE_F32 && st == CLOPT_DTYPE_F32) {
        s = small_op_prologue(ctx, queue, n, num_wait, wait_list, "tensor", " -DOPS=1", "axpby",
                              &k);
    } else if (n == 0) {
        s = clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n must be >= 1");
    } else if ((!queue || (s = clopt_check_queue(ctx, queue)) == CLOPT_SUCCESS) &&
               (s = clopt_check_wait_list(ctx, num_wait, wait_list)) == CLOPT_SUCCESS) {
        char options[192];
        int len = snprintf(options, sizeof options, CLOPT_TUNING_OPTIONS,
                           CLOPT_TUNING_ARGS(&ctx->tuning));
        snprintf(options + len, sizeof options - (size_t)len,
                 " -DPT=%d -DGT=%d -DMASTER=0 -DSR=0 -DOPS=1", (int)dt, (int)st);
        s = clopt_get_kernel(ctx, "tensor", options, "axpby", &k);
    }
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, dst);
    clopt_arg_tensor(&a, src);
    clopt_arg_ulong(&a, n);
    clopt_arg_float(&a, (float)alpha);
    clopt_arg_float(&a, (float)beta);
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, &ctx->tuning, num_wait,
                                    wait_list, event);
}

clopt_status clopt_enqueue_axpby(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                 clopt_tensor src, size_t n, double alpha, double beta,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    return axpby_enqueue(ctx, queue, dst, CLOPT_DTYPE_F32, src, CLOPT_DTYPE_F32, n, alpha, beta,
                         0, num_wait, wait_list, event);
}

clopt_status clopt_enqueue_axpby_ex(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                    clopt_dtype dst_dtype, clopt_tensor src,
                                    clopt_dtype src_dtype, size_t n, double alpha, double beta,
                                    cl_uint num_wait, const cl_event *wait_list,
                                    cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    clopt_status s = check_op_dtypes(ctx, "axpby", dst_dtype, src_dtype);
    if (s != CLOPT_SUCCESS)
        return s;
    return axpby_enqueue(ctx, queue, dst, dst_dtype, src, src_dtype, n, alpha, beta, 1,
                         num_wait, wait_list, event);
}

clopt_status clopt_alloc_state(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                               size_t n, clopt_tensor out[CLOPT_MAX_STATE], size_t *count)
{
    return clopt_alloc_state_ex(ctx, rule, hp, n, CLOPT_DTYPE_F32, out, NULL, count);
}

/* bf16 of x rounded to nearest even (host). */
static cl_ushort bf16_of(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (cl_ushort)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

clopt_status clopt_fill_state(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                              size_t k, clopt_dtype dtype, clopt_tensor state,
                              clopt_tensor absmax, size_t n)
{
    const float init = clopt_rule_state_init(rule, hp, k);
    cl_int err;
    if (dtype == CLOPT_DTYPE_BF16) {
        const cl_ushort w = bf16_of(init);
        err = clopt_fill(ctx->queue, state.buffer, &w, sizeof w, state.offset * 2, n * 2);
    } else if (dtype == CLOPT_DTYPE_U8) {
        /* the code of 0 in the state's map, or init = 1.0 (code 255) times an absmax of init */
        float map[256];
        clopt_q8_map(clopt_rule_state_signed(rule, hp, k), map);
        cl_uchar code = 0;
        while (init == 0.0f && map[code] != 0.0f)
            code++;
        if (init != 0.0f)
            code = 255;
        err = clopt_fill(ctx->queue, state.buffer, &code, 1, state.offset, n);
        if (err == CL_SUCCESS)
            err = clopt_fill(ctx->queue, absmax.buffer, &init, sizeof init, absmax.offset * 4,
                             clopt_q8_blocks(n) * 4);
    } else {
        err = clopt_fill(ctx->queue, state.buffer, &init, sizeof init, state.offset * 4, n * 4);
    }
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "initialising state");
}

clopt_status clopt_alloc_state_ex(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                  size_t n, clopt_dtype dtype, clopt_tensor out[CLOPT_MAX_STATE],
                                  clopt_tensor absmax[CLOPT_MAX_STATE], size_t *count)
{
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if (!hp || !out || !count)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "hparams, out and count must not be NULL");
    if (dtype != CLOPT_DTYPE_F32 && dtype != CLOPT_DTYPE_BF16 && dtype != CLOPT_DTYPE_U8)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "dtype must be CLOPT_DTYPE_F32, BF16 or U8 (got %d)", (int)dtype);
    if (dtype == CLOPT_DTYPE_U8 && !absmax)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "8-bit state needs absmax");
    if (dtype == CLOPT_DTYPE_U8 && !clopt_rule_q8_ok(rule, hp))
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED, "%s%s has no 8-bit state",
                          hp && rule == CLOPT_RMSPROP && hp->centered ? "centered " : "",
                          clopt_rule_name(rule) ? clopt_rule_name(rule) : "rule");
    if ((int)rule < 0 || rule >= CLOPT_RULE_COUNT)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "rule %d is not a clopt_rule",
                          (int)rule);
    if (clopt_rule_is_multipass(rule))
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED, "%s: optimizer level only",
                          clopt_rule_name(rule));
    const char *why = "";
    clopt_status s = clopt_hparams_validate(rule, hp, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_fail(ctx, s, "%s", why);
    if (n == 0 || n > SIZE_MAX / sizeof(float))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "n must be >= 1 (and fit in memory)");
    const size_t ns = clopt_rule_state_count(rule, hp);
    const int q8 = dtype == CLOPT_DTYPE_U8;
    cl_mem made[CLOPT_MAX_STATE] = {NULL}, abs[CLOPT_MAX_STATE] = {NULL};
    cl_int err = CL_SUCCESS;
    for (size_t k = 0; k < ns && err == CL_SUCCESS; k++) {
        made[k] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE, n * clopt_dtype_size(dtype),
                                 NULL, &err);
        if (made[k] && q8)
            abs[k] = clCreateBuffer(ctx->context, CL_MEM_READ_WRITE,
                                    clopt_q8_blocks(n) * sizeof(float), NULL, &err);
    }
    s = err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "allocating state");
    for (size_t k = 0; k < ns && s == CLOPT_SUCCESS; k++)
        s = clopt_fill_state(ctx, rule, hp, k, dtype, (clopt_tensor){made[k], 0},
                             (clopt_tensor){abs[k], 0}, n);
    /* a context's out-of-order queue (clopt_ctx_create_from) orders nothing by itself: a
       barrier puts the fills before whatever the caller enqueues on it next */
    cl_command_queue_properties props = 0;
    if (s == CLOPT_SUCCESS && ns > 0 &&
        clGetCommandQueueInfo(ctx->queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) ==
            CL_SUCCESS &&
        (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) &&
        (err = clEnqueueBarrierWithWaitList(ctx->queue, 0, NULL, NULL)) != CL_SUCCESS)
        s = clopt_fail_cl(ctx, err, "clEnqueueBarrierWithWaitList");
    if (s != CLOPT_SUCCESS) {
        for (size_t k = 0; k < ns; k++) {
            if (made[k])
                clReleaseMemObject(made[k]);
            if (abs[k])
                clReleaseMemObject(abs[k]);
        }
        return s;
    }
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++) { /* (made[k] NULL for k >= ns) */
        out[k] = (clopt_tensor){made[k], 0};
        if (absmax)
            absmax[k] = (clopt_tensor){abs[k], 0};
    }
    *count = ns;
    return CLOPT_SUCCESS;
}

clopt_status clopt_enqueue_convert(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                   clopt_dtype dst_dtype, clopt_tensor src,
                                   clopt_dtype src_dtype, size_t n, int stochastic_rounding,
                                   uint64_t seed, uint32_t stream, uint64_t step,
                                   cl_uint num_wait, const cl_event *wait_list,
                                   cl_event *event)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(ctx);
    if (check_op_dtypes(ctx, "convert", dst_dtype, src_dtype) != CLOPT_SUCCESS)
        return CLOPT_ERR_INVALID_ARGUMENT;
    if (stochastic_rounding != 0 && stochastic_rounding != 1)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "convert: stochastic_rounding must be 0 or 1");
    if (stochastic_rounding && !dtype_16(dst_dtype))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "convert: stochastic rounding needs a 16-bit dst");
    if (n == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE, "convert: n must be >= 1");
    clopt_status s;
    if ((queue && (s = clopt_check_queue(ctx, queue)) != CLOPT_SUCCESS) ||
        (s = clopt_check_wait_list(ctx, num_wait, wait_list)) != CLOPT_SUCCESS ||
        (s = clopt_check_tensor_of(ctx, "dst", dst, n, clopt_dtype_size(dst_dtype))) !=
            CLOPT_SUCCESS ||
        (s = clopt_check_tensor_of(ctx, "src", src, n, clopt_dtype_size(src_dtype))) !=
            CLOPT_SUCCESS)
        return s;
    if (op_overlap(dst, clopt_dtype_size(dst_dtype), src, clopt_dtype_size(src_dtype), n))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "convert: dst and src overlap");
    clopt_tuning t = ctx->tuning;
    char options[192];
    int len = snprintf(options, sizeof options, CLOPT_TUNING_OPTIONS,
                       CLOPT_TUNING_ARGS(&t));
    snprintf(options + len, sizeof options - (size_t)len,
             " -DPT=%d -DGT=%d -DMASTER=0 -DSR=%d -DOPS=1", (int)dst_dtype, (int)src_dtype,
             stochastic_rounding);
    cl_kernel k;
    if ((s = clopt_get_kernel(ctx, "tensor", options, "convert", &k)) != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, dst);
    clopt_arg_tensor(&a, src);
    clopt_arg_ulong(&a, n);
    if (dst_dtype != CLOPT_DTYPE_F32) {
        clopt_step_args sa;
        clopt_step_args_init(&sa);
        sa.param = dst;
        sa.sr_seed = seed;
        sa.sr_stream = stream;
        clopt_arg_storage(&a, &sa, step);
    }
    if (a.err != CL_SUCCESS)
        return clopt_fail_cl(ctx, a.err, "clSetKernelArg");
    return clopt_launch_elementwise(ctx, queue ? queue : ctx->queue, k, n, &t, num_wait,
                                    wait_list, event);
}
