/* SPDX-License-Identifier: MIT */
/* The step: the engine contract (enqueued on the caller's queue, never waiting for the host;
 * AMP and clipping decided on the device; atomic; exact step counts with verdicts in flight)
 * and the launches of every group. */
#include "optimizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Group g's hyperparameters for the outcome "d more steps applied": the schedule at the
   optimizer's count + d. */
static clopt_hparams outcome_hp(const clopt_optimizer *opt, const clopt_group *g, uint64_t d)
{
    clopt_hparams hp = g->hp;
    hp.lr = clopt_o_group_lr(g, opt->step + d);
    return hp;
}

/* Schedule-Free's scalars of tensor e, d steps after the host's count. */
static void sf_ahead(const clopt_optimizer *opt, const clopt_param *e, uint64_t d,
                     double *lr_max, double *wsum)
{
    *lr_max = e->sf_lr_max;
    *wsum = e->sf_weight_sum;
    for (uint64_t i = 0; clopt_rule_is_sf(opt->rule) && i < d; i++) {
        const clopt_hparams hp = outcome_hp(opt, &opt->groups[e->group], i);
        clopt_schedule_free_advance(&hp, e->step + 1 + i, lr_max, wsum, NULL);
    }
}

/* Exact step by step up to 2^20 steps; past them the weights t^r·lr_max^p are summed as the
   midpoint integral of t^r (relative error below 1e-12 there) with the last lr_max. */
void clopt_o_sf_replay(const clopt_optimizer *opt, clopt_param *e, uint64_t count)
{
    const clopt_group *g = &opt->groups[e->group];
    const uint64_t exact = count < (UINT64_C(1) << 20) ? count : (UINT64_C(1) << 20);
    e->sf_lr_max = e->sf_weight_sum = 0.0;
    if (!clopt_rule_is_sf(opt->rule))
        return;
    for (uint64_t t = 1; t <= exact; t++) {
        clopt_hparams hp = g->hp;
        hp.lr = clopt_o_group_lr(g, t - 1);
        clopt_schedule_free_advance(&hp, t, &e->sf_lr_max, &e->sf_weight_sum, NULL);
    }
    if (count > exact) {
        const double r1 = g->hp.r + 1.0, a = (double)exact + 0.5, b = (double)count + 0.5;
        e->sf_weight_sum += pow(e->sf_lr_max, g->hp.weight_lr_power) *
                            (pow(b, r1) - pow(a, r1)) / r1;
    }
}

/* Reserves `rows` rows of the per-step argument table for the next launch (opt->cur.tabo);
   the dry pass grows the host table, which the step uploads before its launches. */
static clopt_status reserve_rows(clopt_optimizer *opt, size_t rows, float **out)
{
    const size_t at = opt->tab_used;
    *out = NULL;
    if (opt->cur.dry) {
        size_t need = (at + rows) * CLOPT_CTRL_ROW;
        if (need > opt->tab_host_cap) {
            size_t cap = opt->tab_host_cap ? 2 * opt->tab_host_cap : 64 * CLOPT_CTRL_ROW;
            while (cap < need)
                cap *= 2;
            float *h = realloc(opt->tab_host, cap * sizeof *h);
            if (!h)
                return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "step argument table");
            opt->tab_host = h;
            opt->tab_host_cap = cap;
        }
        *out = opt->tab_host + at * CLOPT_CTRL_ROW;
    }
    opt->tab_used = at + rows;
    opt->cur.tabo = at * CLOPT_CTRL_ROW;
    return CLOPT_SUCCESS;
}

/* The arguments of outcome d (d more steps applied) of tensor e in group g: its hyperparameters
   (*hp), NAdam product and Sophia estimate into *a; returns the tensor's step t. */
static uint64_t outcome_args(const clopt_optimizer *opt, const clopt_param *e,
                             const clopt_group *g, uint64_t d, clopt_hparams *hp,
                             clopt_step_args *a)
{
    const uint64_t t = e->step + 1 + d;
    *hp = outcome_hp(opt, g, d);
    a->mu_product = mu_product_ahead(opt, e, d);
    sf_ahead(opt, e, d, &a->sf_lr_max, &a->sf_weight_sum);
    a->hessian = (clopt_tensor){NULL, 0};
    if (opt->rule == CLOPT_SOPHIA && t % hp->hess_interval == 0)
        a->hessian = e->hessian;
    return t;
}

/* One element-wise launch over n elements of (param, grad, states) views for the outcomes
   d = dlo .. dhi of the steps in flight (the tensor's step t = its count + 1 + d): each
   outcome's per-step arguments, computed on the host in double, are a row of the table; the
   kernel takes the row of the device's count. */
static clopt_status step_views(clopt_optimizer *opt, const clopt_param *e, clopt_tensor param,
                               clopt_tensor grad, const clopt_tensor *states, size_t n,
                               const clopt_group *g, uint64_t dlo, uint64_t dhi,
                               double grad_scale, size_t gc)
{
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = param;
    a.grad = grad;
    for (size_t j = 0; j < e->nkernel; j++)
        a.state[j] = states[j];
    a.grad_scale = grad_scale;
    a.param_dtype = e->pdtype;
    a.grad_dtype = e->gdtype;
    if (e->master) {
        a.master_kind = (clopt_master)e->master;
        a.master = states[e->master_at];
    }
    a.stochastic_rounding = e->pdtype != CLOPT_DTYPE_F32 && !e->master &&
                            g->hp.stochastic_rounding;
    a.sr_seed = opt->rng_seed;
    a.sr_stream = clopt_o_sr_stream(opt, e);
    a.state_dtype = e->nkernel ? e->sq : CLOPT_DTYPE_F32; /* no state: no storage */
    for (size_t j = 0; e->sq == CLOPT_DTYPE_U8 && j < e->nkernel; j++)
        a.state_absmax[j] = states[e->absmax_at + j];
    a.gc_rows = gc;
    a.gc_scratch = (clopt_tensor){opt->scratch, clopt_o_scr_gc(e)};
    float *rows;
    clopt_status s = reserve_rows(opt, (size_t)(dhi - dlo + 1), &rows);
    clopt_hparams hp;
    for (uint64_t d = dlo; s == CLOPT_SUCCESS && rows && d <= dhi; d++) {
        const uint64_t t = outcome_args(opt, e, g, d, &hp, &a);
        clopt_launch_plan plan;
        if ((s = clopt_plan_step(opt->ctx, opt->rule, &hp, &a, t, &plan)) != CLOPT_SUCCESS)
            break;
        float *row = rows + (d - dlo) * CLOPT_CTRL_ROW;
        cl_uint k = 0;
        if (plan.has_int_arg)
            row[k++] = (float)plan.int_arg;
        for (cl_uint j = 0; j < plan.nscalars && k < CLOPT_CTRL_ROW; j++)
            row[k++] = plan.scalars[j];
        while (k < CLOPT_CTRL_ROW)
            row[k++] = 0.0f;
    }
    if (s != CLOPT_SUCCESS)
        return s;
    const uint64_t t = outcome_args(opt, e, g, dlo, &hp, &a); /* the launch's own arguments */
    opt->cur.expect = opt->step + dlo;
    opt->cur.ncand = (cl_uint)(dhi - dlo + 1);
    s = clopt_enqueue_step_ctl(opt->ctx, opt->q, opt->rule, &hp, &a, n, t, &opt->cur, 0, NULL,
                               NULL);
    if (s == CLOPT_SUCCESS && opt->cur.dry == 2 && opt->rule == CLOPT_SOPHIA &&
        e->hessian.buffer) { /* prepare: both Sophia variants (with and without ĥ) */
        a.hessian = a.hessian.buffer ? (clopt_tensor){NULL, 0} : e->hessian;
        s = clopt_enqueue_step_ctl(opt->ctx, opt->q, opt->rule, &hp, &a, n, t, &opt->cur, 0,
                                   NULL, NULL);
    }
    return s;
}

/* The launches of tensor views for every outcome 0 .. k: one launch with a row per outcome,
   except Sophia with estimates, whose kernel variant depends on the step (one per outcome). */
static clopt_status step_outcomes(clopt_optimizer *opt, const clopt_param *e, clopt_tensor param,
                                  clopt_tensor grad, const clopt_tensor *states, size_t n,
                                  const clopt_group *g, uint64_t k, double grad_scale, size_t gc)
{
    if (!(opt->rule == CLOPT_SOPHIA && e->hessian.buffer))
        return step_views(opt, e, param, grad, states, n, g, 0, k, grad_scale, gc);
    clopt_status s = CLOPT_SUCCESS;
    for (uint64_t d = 0; s == CLOPT_SUCCESS && d <= k; d++)
        s = step_views(opt, e, param, grad, states, n, g, d, d, grad_scale, gc);
    return s;
}

/* float32 copy of tensor e's 16-bit θ over n elements from src into dst (theta_copy) on
   opt->q: through its master when it has one and `master` is set, else θ's own values (an
   F32 master takes them at the tensor's first step). Only PT and MASTER shape the kernel. */
static clopt_status theta_copy(clopt_optimizer *opt, const clopt_param *e, int master,
                               clopt_tensor src, clopt_tensor dst, size_t n)
{
    cl_kernel k;
    char extra[96];
    clopt_storage_options(extra, sizeof extra, e->pdtype, CLOPT_DTYPE_F32,
                          master ? (clopt_master)e->master : CLOPT_MASTER_NONE, 0);
    clopt_status s = clopt_o_kernel_of(opt, "tensor", NULL, 0, extra, "theta_copy", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, src);
    clopt_arg_tensor(&a, dst);
    clopt_arg_ulong(&a, n);
    clopt_o_storage_args(opt, &a, e);
    if (a.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &a);
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    return clopt_launch_elementwise(opt->ctx, opt->q, k, n, &opt->ctx->tuning, 0, NULL, NULL);
}

/* Lookahead: slow weights copy θ at a tensor's first step (clopt_o_slow_start); sync every k
   steps. */
clopt_status clopt_o_slow_start(clopt_optimizer *opt, clopt_tensor src, clopt_tensor dst,
                                size_t n, const clopt_param *e, int master)
{
    if (e && e->pdtype != CLOPT_DTYPE_F32) /* θ (or its master) to float32 */
        return theta_copy(opt, e, master, src, dst, n);
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    cl_int err = clEnqueueCopyBuffer(opt->q, src.buffer, dst.buffer,
                                     src.offset * sizeof(float), dst.offset * sizeof(float),
                                     n * sizeof(float), 0, NULL, NULL);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(opt->ctx, err, "lookahead copy");
}

static clopt_status lookahead_sync(clopt_optimizer *opt, clopt_tensor param, clopt_tensor slow,
                                   size_t n, double alpha, const clopt_param *e)
{
    cl_kernel k;
    char extra[96] = "";
    if (e)
        clopt_o_storage_extra(e, &opt->groups[e->group].hp, extra, sizeof extra);
    clopt_status s = clopt_o_kernel_of(opt, "tensor", NULL, 0, extra, "lookahead_sync", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, param);
    clopt_arg_tensor(&a, slow);
    clopt_arg_ulong(&a, n);
    clopt_arg_float(&a, (float)alpha);
    clopt_arg_ctl(&a, &opt->cur);
    if (e)
        clopt_o_storage_args(opt, &a, e);
    if (a.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &a);
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    return clopt_launch_elementwise(opt->ctx, opt->q, k, n, &opt->ctx->tuning, 0, NULL, NULL);
}

/* Lookahead synchronises after step t (in prepare's dry pass: always, to build it). */
static int lookahead_due(const clopt_optimizer *opt, const clopt_hparams *hp, uint64_t t)
{
    return opt->cur.dry == 2 || t % hp->lookahead_k == 0;
}

/* Lookahead after the update of a tensor (views param/slow of n floats whose count is
   `count`): a sync launch for each outcome whose step is a multiple of k. */
static clopt_status lookahead_outcomes(clopt_optimizer *opt, const clopt_group *g,
                                       uint64_t count, clopt_tensor param, clopt_tensor slow,
                                       size_t n, uint64_t k, const clopt_param *e)
{
    clopt_status s = CLOPT_SUCCESS;
    for (uint64_t d = 0; s == CLOPT_SUCCESS && d <= k; d++) {
        if (!lookahead_due(opt, &g->hp, count + 1 + d))
            continue;
        opt->cur.expect = opt->step + d;
        opt->cur.ncand = 1;
        s = lookahead_sync(opt, param, slow, n, g->hp.lookahead_alpha, e);
    }
    return s;
}

/* An arena group of an element-wise rule runs as one launch unless GC applies to a tensor. */
static int arena_fused(const clopt_optimizer *opt, const clopt_group *g)
{
    if (!g->arena || clopt_rule_per_tensor(opt->rule, &g->hp))
        return 0;
    for (size_t i = g->first; i < g->first + g->count; i++)
        if (clopt_o_gc_rows(&g->hp, &opt->params[i]))
            return 0;
    return 1;
}

/* A range group of an element-wise rule runs as one launch (no GC, no Lookahead, no
   Sophia: those run per tensor). */
static int range_fused(const clopt_optimizer *opt, const clopt_group *g)
{
    if (!g->ranges || clopt_rule_per_tensor(opt->rule, &g->hp) || opt->rule == CLOPT_SOPHIA ||
        clopt_group_lookahead(opt, g))
        return 0;
    for (size_t i = 0; i < opt->nparams; i++)
        if (opt->params[i].group == (size_t)(g - opt->groups) &&
            clopt_o_gc_rows(&g->hp, &opt->params[i]))
            return 0;
    return 1;
}

/* An F32 master takes θ's value at its tensor's first step (so the engine may write its
   weights at any time before); marked ready when a step that copied it is enqueued whole (a
   step that fails later copies θ again the next time). */
static int needs_master(const clopt_param *e)
{
    return e->master == CLOPT_MASTER_F32 && !e->master_ready && !e->master_copied;
}

static void mark_master(clopt_optimizer *opt, clopt_param *e)
{
    if (!opt->cur.dry)
        e->master_copied = 1;
}

/* The same for one tensor through its own views (caller-owned and range-group tensors). */
static clopt_status start_master(clopt_optimizer *opt, clopt_param *e)
{
    if (!needs_master(e))
        return CLOPT_SUCCESS;
    clopt_status s = theta_copy(opt, e, 0, e->param, e->state[e->master_at], e->n);
    if (s == CLOPT_SUCCESS)
        mark_master(opt, e);
    return s;
}

/* Tensor e's F32 master taken from θ now, through its own views, on opt->q (write_state:
   the masters of an arena group start together); does not mark it ready. */
clopt_status clopt_o_master_start(clopt_optimizer *opt, const clopt_param *e)
{
    return theta_copy(opt, e, 0, e->param, e->state[e->master_at], e->n);
}

/* Muon's outcomes 0 .. k of group g are one: the same scheduled lr for all. */
static int muon_one_outcome(const clopt_optimizer *opt, const clopt_group *g, uint64_t k)
{
    const double lr0 = outcome_hp(opt, g, 0).lr;
    for (uint64_t d = 1; d <= k; d++)
        if (outcome_hp(opt, g, d).lr != lr0)
            return 0;
    return 1;
}

/* Group gi's launches for every outcome of the k uncertain steps in flight ("d of them were
   applied", d = 0 .. k): each tensor's step t = its host count + 1 + d, the schedules at the
   optimizer's count + d. Element-wise rules: one launch per arena or range group (or per
   tensor) with a row of arguments per outcome; LAMB, Adafactor and Lookahead's sync: one
   launch per outcome, each running only if the device's count is its own. */
static clopt_status step_group(clopt_optimizer *opt, size_t gi, double grad_scale, uint64_t k)
{
    clopt_group *g = &opt->groups[gi];
    const float gmul = (float)(1.0 / grad_scale);
    const int la = clopt_group_lookahead(opt, g);
    clopt_status s = CLOPT_SUCCESS;
    for (uint64_t d = 0; d <= k; d++) { /* a growing schedule (e.g. exponential, gamma > 1) */
        const double lr = clopt_o_group_lr(g, opt->step + d);
        if (!(lr <= CLOPT_MAX_SETTING))
            return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_HYPERPARAM,
                              "group %zu: its schedule takes lr to %g at step %llu, above 2^64",
                              gi, lr, (unsigned long long)(opt->step + d + 1));
    }
    if (arena_fused(opt, g)) {
        const clopt_param *e0 = &opt->params[g->first]; /* added together: one count */
        clopt_tensor states[CLOPT_OPT_MAX_STATE];
        for (size_t j = 0; j < e0->nstate; j++)
            states[j] = (clopt_tensor){g->arena_state[j], 0};
        const clopt_tensor P = {g->arena_param, 0}, G = {g->arena_grad, 0};
        const clopt_param *typed = e0->pdtype != CLOPT_DTYPE_F32 ? e0 : NULL;
        if (needs_master(e0)) {
            s = theta_copy(opt, e0, 0, P, states[e0->master_at], g->arena_len);
            for (size_t i = g->first; s == CLOPT_SUCCESS && i < g->first + g->count; i++)
                mark_master(opt, &opt->params[i]);
        }
        if (s == CLOPT_SUCCESS && la && !e0->slow_ready)
            s = clopt_o_slow_start(opt, P, states[e0->slow_at], g->arena_len, typed, 1);
        if (s == CLOPT_SUCCESS)
            s = step_outcomes(opt, e0, P, G, states, g->arena_len, g, k, grad_scale, 0);
        if (s == CLOPT_SUCCESS && la)
            s = lookahead_outcomes(opt, g, e0->step, P, states[e0->slow_at], g->arena_len, k,
                                   typed);
        return s;
    }
    if (range_fused(opt, g)) {
        size_t first = opt->nparams;
        for (size_t i = 0; i < opt->nparams && first == opt->nparams; i++)
            if (opt->params[i].group == gi)
                first = i;
        const clopt_param *e0 = &opt->params[first]; /* added together: one count */
        clopt_tensor states[CLOPT_OPT_MAX_STATE];
        for (size_t j = 0; j < e0->nstate; j++)
            states[j] = (clopt_tensor){g->range_state[j], 0};
        for (size_t i = first; s == CLOPT_SUCCESS && i < opt->nparams; i++)
            if (opt->params[i].group == gi)
                s = start_master(opt, &opt->params[i]);
        if (s != CLOPT_SUCCESS)
            return s;
        opt->cur.ranges = g->range_table;
        opt->cur.nchunks = g->nchunks;
        s = step_outcomes(opt, e0, (clopt_tensor){g->range_param, 0},
                          (clopt_tensor){g->range_grad, 0}, states, 1, g, k, grad_scale, 0);
        opt->cur.ranges = NULL;
        opt->cur.nchunks = 0;
        return s;
    }
    for (size_t i = 0; s == CLOPT_SUCCESS && i < opt->nparams; i++) {
        clopt_param *e = &opt->params[i];
        if (e->group != gi)
            continue;
        s = start_master(opt, e);
        if (s == CLOPT_SUCCESS && la && !e->slow_ready)
            s = clopt_o_slow_start(opt, e->param, e->state[e->slow_at], e->n, e, 1);
        if (s != CLOPT_SUCCESS)
            break;
        if (opt->rule == CLOPT_MUON && muon_one_outcome(opt, g, k)) {
            /* Muon's step does not depend on the count (no bias correction): when every
               outcome has the same lr, one pass serves them all (each costs its GEMMs) */
            const clopt_hparams hp = outcome_hp(opt, g, 0);
            opt->cur.expect = opt->step;
            opt->cur.ncand = (cl_uint)(k + 1);
            s = clopt_o_step_muon(opt, e, &hp, e->step + 1, gmul);
        } else if (clopt_rule_per_tensor(opt->rule, &g->hp)) {
            for (uint64_t d = 0; s == CLOPT_SUCCESS && d <= k; d++) {
                const clopt_hparams hp = outcome_hp(opt, g, d);
                const uint64_t t = e->step + 1 + d;
                opt->cur.expect = opt->step + d;
                opt->cur.ncand = 1;
                switch (opt->rule) {
                case CLOPT_LAMB: s = clopt_o_step_lamb(opt, e, &hp, t, gmul); break;
                case CLOPT_ADAFACTOR: s = clopt_o_step_adafactor(opt, e, &hp, t, gmul); break;
                case CLOPT_MUON: s = clopt_o_step_muon(opt, e, &hp, t, gmul); break;
                default: s = clopt_o_step_reduced(opt, e, &hp, t, gmul); break;
                }
            }
        } else {
            s = step_outcomes(opt, e, e->param, e->grad, e->state, e->n, g, k, grad_scale,
                              clopt_o_gc_rows(&g->hp, e));
        }
        if (s == CLOPT_SUCCESS && la)
            s = lookahead_outcomes(opt, g, e->step, e->param, e->state[e->slow_at], e->n, k, e);
    }
    return s;
}

/* Everything a step enqueues after its start: the gradient check and verdict, the launches
   of every group for the outcomes of the uncertain steps in flight, the commit. dry 1: build
   kernels, set arguments and fill the argument table only (the step's first pass); 2: also
   the variants later steps need (prepare). */
static clopt_status step_body(clopt_optimizer *opt, double grad_scale, int amp,
                              uint64_t uncertain, int dry)
{
    opt->cur = (clopt_ctl){opt->ctl, opt->step, dry, opt->tab, 0, 1, NULL, 0};
    opt->tab_used = 0;
    clopt_status s = clopt_o_grad_check(opt, 1.0 / grad_scale, amp);
    for (size_t gi = 0; s == CLOPT_SUCCESS && gi < opt->ngroups; gi++)
        s = step_group(opt, gi, grad_scale, uncertain);
    cl_kernel k;
    if (s == CLOPT_SUCCESS &&
        (s = clopt_o_kernel_of(opt, "tensor", NULL, 0, "", "step_commit", &k)) == CLOPT_SUCCESS) {
        clopt_args a = {k, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, (clopt_tensor){opt->ctl, 0});
        s = a.err != CL_SUCCESS ? clopt_o_set_failed(opt, &a) : clopt_o_launch_items(opt, k, 1);
    }
    opt->cur.dry = 0;
    return s;
}

/* One applied step: every tensor's count and NAdam product, and the optimizer's count. */
static void advance_counts(clopt_optimizer *opt)
{
    for (size_t i = 0; i < opt->nparams; i++) {
        clopt_param *e = &opt->params[i];
        if (clopt_rule_is_sf(opt->rule)) {
            const clopt_hparams hp = outcome_hp(opt, &opt->groups[e->group], 0);
            clopt_schedule_free_advance(&hp, e->step + 1, &e->sf_lr_max, &e->sf_weight_sum,
                                        NULL);
        }
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
        if (r->amp && opt->has_scaler)
            clopt_loss_scaler_update_at(&opt->scaler, skipped, r->scale);
        opt->found_inf = skipped;
        if (r->clip)
            opt->last_grad_norm = norm;
        opt->report.step_call = r->call;
        opt->report.skipped = skipped;
        opt->report.grad_norm = r->checked ? (double)norm : NAN;
        opt->report.nonfinite = r->checked && r->result[5] != 0;
    }
    clReleaseEvent(r->done);
    free(r->tab);
    r->tab = NULL;
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
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!out)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
    clopt_status s = collect(opt, 0);
    *out = opt->report;
    return s;
}

clopt_status clopt_optimizer_get_loss_scaler(clopt_optimizer *opt, clopt_loss_scaler *out)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    if (!out)
        return clopt_fail(opt->ctx, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
    if (!opt->has_scaler)
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "no loss scaler is set (clopt_optimizer_set_loss_scaler)");
    clopt_status s = collect(opt, 0);
    *out = opt->scaler;
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

clopt_status clopt_o_check_step_queue(clopt_ctx *ctx, cl_command_queue queue, cl_uint num_wait,
                                      const cl_event *wait_list)
{
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
    return clopt_check_wait_list(ctx, num_wait, wait_list);
}

/* With a tensor-sums hook, whose blocking reads need the step's launches to run while the
   step is being enqueued: no user event of the caller's that is not complete yet in the
   wait list (it would complete only after the step returns: a deadlock), and every earlier
   step's verdict on the host (one outcome per step: the hook is called once per tensor, the
   same number of times in every process). Blocks (the hook makes the step synchronous). */
static clopt_status hook_ready(clopt_optimizer *opt, cl_uint num_wait, const cl_event *wait_list)
{
    if (!opt->sums_hook)
        return CLOPT_SUCCESS;
    for (cl_uint i = 0; i < num_wait; i++) {
        cl_command_type type = 0;
        cl_int st = CL_COMPLETE;
        cl_int err = clGetEventInfo(wait_list[i], CL_EVENT_COMMAND_TYPE, sizeof type, &type, NULL);
        if (err == CL_SUCCESS)
            err = clGetEventInfo(wait_list[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof st, &st,
                                 NULL);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "clGetEventInfo (the wait list)");
        if (type == CL_COMMAND_USER && st > CL_COMPLETE)
            return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_ARGUMENT,
                              "wait_list[%u] is a user event not complete yet: with a "
                              "tensor-sums hook the step runs while it is enqueued, so it "
                              "cannot wait for an event completed after it returns",
                              (unsigned)i);
    }
    return collect(opt, 1);
}

/* The host memory of an abandoned step that writes still read (its start words and argument
   table), freed when the last of them has run. */
typedef struct abandoned_step {
    cl_uint *gate;
    float *tab;
} abandoned_step;

static void CL_CALLBACK free_abandoned(cl_event e, cl_int status, void *user)
{
    (void)e, (void)status;
    abandoned_step *a = user;
    free(a->gate);
    free(a->tab);
    free(a);
}

/* A failed step's record r gives up its start words and table to a callback on `last`, the
   last write that reads them (an in-order queue runs the earlier ones first): the slot takes
   new words at its next step. Where no callback can be set, it waits for `last` (only then
   can this block). */
static void abandon(clopt_step_record *r, cl_event last)
{
    abandoned_step *a = malloc(sizeof *a);
    if (a) {
        a->gate = r->gate;
        a->tab = r->tab;
    }
    if (a && clSetEventCallback(last, CL_COMPLETE, free_abandoned, a) == CL_SUCCESS) {
        r->gate = NULL;
    } else {
        free(a);
        clWaitForEvents(1, &last);
        free(r->tab);
    }
    r->tab = NULL;
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
    clopt_status s = clopt_o_check_step_queue(ctx, queue, num_wait, wait_list);
    if (s != CLOPT_SUCCESS)
        return s;
    if (opt->nparams == 0)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "no tensors are registered");
    if (opt->eval_mode)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "the optimizer is in eval mode (the parameters hold x): call "
                          "clopt_optimizer_train before stepping");
    if ((s = clopt_o_check_mode_whole(opt)) != CLOPT_SUCCESS)
        return s;
    for (size_t i = 0; i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        if ((s = clopt_check_tensor_of(ctx, "param", e->param, e->n,
                                       clopt_dtype_size(e->pdtype))) != CLOPT_SUCCESS ||
            (s = clopt_check_tensor_of(ctx, "grad", e->grad, e->n,
                                       clopt_dtype_size(e->gdtype))) != CLOPT_SUCCESS)
            return s;
    }
    if ((s = collect(opt, 0)) != CLOPT_SUCCESS || (s = hook_ready(opt, num_wait, wait_list)) !=
                                                        CLOPT_SUCCESS)
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
    const size_t tab_floats = opt->tab_used * CLOPT_CTRL_ROW; /* still before any enqueue */
    if ((s = clopt_o_ensure_buffer(opt, &opt->tab, &opt->tab_len, tab_floats, CL_MEM_READ_ONLY,
                                   "allocating the step's argument table")) != CLOPT_SUCCESS)
        goto out;
    clopt_step_record *r =
        &opt->rec[(opt->rec_head + opt->rec_count) % CLOPT_MAX_IN_FLIGHT];
    cl_uint *gw = r->gate; /* the slot's words, or new ones after an abandoned step */
    if (!gw && !(gw = malloc(5 * sizeof *gw))) {
        s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "the step's start words");
        goto out;
    }
    memset(r, 0, sizeof *r);
    memset(gw, 0, 5 * sizeof *gw);
    r->gate = gw;
    r->tab = opt->tab_host; /* the record keeps the table until the step is retired */
    opt->tab_host = NULL;
    opt->tab_host_cap = 0;
    r->call = opt->calls + 1;
    r->amp = amp;
    r->scale = grad_scale;
    r->clip = clip;
    r->checked = amp || clip || opt->check_finite;
    r->gate[0] = (cl_uint)opt->step;
    r->gate[1] = (cl_uint)(opt->step >> 32);
    cl_int err = CL_SUCCESS;
    cl_event gate = clCreateUserEvent(ctx->context, &err), wrote = NULL;
    if (!gate) {
        s = clopt_fail_cl(ctx, err, "clCreateUserEvent");
        free(r->tab);
        r->tab = NULL;
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
        free(r->tab);
        r->tab = NULL;
        goto out;
    }
    cl_event tabw = NULL;
    opt->gate = gate; /* the tensor-sums hook may open it (passes.c) */
    opt->gate_opened = 0;
    if (tab_floats &&
        (err = clEnqueueWriteBuffer(opt->q, opt->tab, CL_FALSE, 0, tab_floats * sizeof(float),
                                    r->tab, 0, NULL, &tabw)) != CL_SUCCESS)
        s = clopt_fail_cl(ctx, err, "clEnqueueWriteBuffer (the step's argument table)");
    else
        s = step_body(opt, grad_scale, amp, uncertain, 0);
    if (s == CLOPT_SUCCESS &&
        (err = clEnqueueReadBuffer(opt->q, opt->ctl, CL_FALSE, 0, sizeof r->result, r->result,
                                   0, NULL, &r->done)) != CL_SUCCESS)
        s = clopt_fail_cl(ctx, err, "clEnqueueReadBuffer (the step's verdict)");
    const int opened = opt->gate_opened;
    opt->gate = NULL;
    opt->gate_opened = 0;
    if (s != CLOPT_SUCCESS) {
        /* abort: the launches already enqueued find the skip flag set and do nothing (unless
           a tensor-sums hook started them: then the tensors before the failure were
           updated). No wait: the start write waits for the caller's events, which may be
           user events the caller completes after this call returns */
        if (!opened) { /* (once opened, the runtime may be reading r->gate) */
            r->gate[4] = 1;
            clSetUserEventStatus(gate, CL_COMPLETE);
        }
        clReleaseEvent(gate);
        abandon(r, tabw ? tabw : wrote); /* (r->done is NULL: its read is the last enqueue) */
        clReleaseEvent(wrote);
        if (tabw)
            clReleaseEvent(tabw);
        goto out;
    }
    err = opened ? CL_SUCCESS : clSetUserEventStatus(gate, CL_COMPLETE);
    /* submit the step: a driver may hold enqueued commands until a flush, and an engine that
       polls (clopt_optimizer_poll) instead of waiting would then never see the verdict. A
       failed flush changes nothing enqueued (the next blocking call flushes). */
    clFlush(opt->q);
    clReleaseEvent(gate);
    clReleaseEvent(wrote);
    if (tabw)
        clReleaseEvent(tabw);
    opt->rec_count++;
    opt->calls++;
    if (err != CL_SUCCESS) {
        s = clopt_fail_cl(ctx, err, "clSetUserEventStatus (the queue may be stalled)");
        goto out;
    }
    for (size_t i = 0; i < opt->nparams; i++) {
        clopt_param *e = &opt->params[i];
        e->slow_ready = 1;
        e->master_ready |= e->master_copied;
        e->master_copied = 0;
    }
    if (!amp)
        advance_counts(opt); /* only AMP can skip a step that was enqueued */
    if (event) {
        *event = r->done;
        clRetainEvent(r->done);
    }
out:
    if (s != CLOPT_SUCCESS) /* the masters this step copied are taken from θ again next time */
        for (size_t i = 0; i < opt->nparams; i++)
            opt->params[i].master_copied = 0;
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
    if (collect(opt, 1) != CLOPT_SUCCESS) {
        clopt_clear_error(opt->ctx); /* (a success leaves no message) */
        return CLOPT_SUCCESS;
    }
    if (opt->report.step_call == opt->calls && opt->report.skipped) {
        if (event && *event) {
            clReleaseEvent(*event);
            *event = NULL;
        }
        return CLOPT_STEP_SKIPPED;
    }
    return CLOPT_SUCCESS;
}

