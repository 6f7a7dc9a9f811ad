/* SPDX-License-Identifier: MIT */
/* The optimizer level's kernels besides the fused updates: the gradient check of AMP and
 * clipping, the deterministic reductions, gradient centralization's row means, and the
 * multi-pass rules (LAMB, Adafactor). */
#include "optimizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- kernels and reductions ------------------------------------------------------------ */

/* Work-groups of a partial sum over n floats: the context's count (compute units x a
   factor, see clopt_reduce_shape), at most one per RW-float chunk. */
static size_t reduce_groups(const clopt_optimizer *opt, size_t n)
{
    unsigned rl;
    size_t g;
    clopt_reduce_shape(opt->ctx, &rl, &g);
    const size_t chunks = (n + REDUCE_WIDTH - 1) / REDUCE_WIDTH;
    return chunks < g ? (chunks ? chunks : 1) : g;
}

static unsigned reduce_local(const clopt_optimizer *opt)
{
    unsigned rl;
    size_t g;
    clopt_reduce_shape(opt->ctx, &rl, &g);
    return rl;
}

/* The multi-pass kernels' shape, passed to them as defines (clopt_o_kernel_of) and used to
   size their launches, so kernels and host cannot disagree:
   - chunks (UPDATE_CHUNKS) and streams (USTREAMS, at most 4) of the update passes
     (FOR_ITEM_CHUNKS in chunks.cl): on a CPU (RL 1) 2 parts walked in lockstep keep twice the
     memory streams in flight (a core's bandwidth on few streams is bounded by its outstanding
     misses: clopt-bench at 2^25, Adafactor's update 7.3 -> 6.2 ms, LAMB's 6.9 -> 6.5; 4 parts
     were slower than 2), and 64 chunks per item spread its set-up (reading the sums, locating
     rows: Adafactor's update 5.8 -> 5.1 ms against 16 chunks); on a GPU one chunk per item
     and one part keep neighbouring items on neighbouring chunks;
   - afck (AFCK), the chunks per item of Adafactor's statistics tiles (adafactor_stats): 512
     with RL 1, so a tile spans 8192 columns and each row segment is a 32 KiB run (tiles of
     1024 columns took 4.3 ms instead of 2.5 for a 4096 x 8192 gradient), the item's column
     sums being 64 KiB of private memory; one chunk per item with RL >= 64. */
typedef struct multipass_shape {
    unsigned chunks, streams, afck;
} multipass_shape;

static multipass_shape multipass_shape_of(const clopt_optimizer *opt)
{
    const unsigned rl = reduce_local(opt);
    multipass_shape m = {1, 1, rl >= 64 ? 1 : 64 / rl};
    if (rl == 1)
        m = (multipass_shape){64, 2, 512};
    return m;
}

clopt_status clopt_o_kernel_of(clopt_optimizer *opt, const char *family, const clopt_hparams *hp,
                              int gc, const char *extra, const char *name, cl_kernel *k)
{
    char options[256];
    const multipass_shape m = multipass_shape_of(opt);
    snprintf(options, sizeof options,
             CLOPT_TUNING_OPTIONS " -DMAXIMIZE=%d -DGC=%d -DCTRL=1" CLOPT_REDUCE_OPTIONS
                                  " -DUPDATE_CHUNKS=%u -DUSTREAMS=%u -DAFCK=%u%s",
             CLOPT_TUNING_ARGS(&opt->ctx->tuning), hp && hp->maximize ? 1 : 0, gc,
             reduce_local(opt), m.chunks, m.streams, m.afck, extra);
    return clopt_get_kernel(opt->ctx, family, options, name, k);
}

clopt_status clopt_o_set_failed(clopt_optimizer *opt, const clopt_args *a)
{
    return clopt_fail_cl(opt->ctx, a->err, "clSetKernelArg");
}

/* Enqueue count work-items on the step's queue (nothing in a dry pass). */
clopt_status clopt_o_launch_items(clopt_optimizer *opt, cl_kernel k, size_t count)
{
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    return clopt_launch_items(opt->ctx, opt->q, k, count, 0, NULL, NULL);
}

/* Enqueue `groups` work-groups of the reduction shape's items (nothing in a dry pass). */
static clopt_status launch_groups(clopt_optimizer *opt, cl_kernel k, size_t groups)
{
    if (opt->cur.dry) /* refused before the step enqueues anything */
        return clopt_check_work_group(opt->ctx, k, reduce_local(opt));
    return clopt_launch_groups(opt->ctx, opt->q, k, groups, reduce_local(opt), 0, NULL, NULL);
}

/* Enqueue the update pass of LAMB or Adafactor over n elements (FOR_ITEM_CHUNKS in
   chunks.cl), in work-groups of the tuning's size (the kernels return past their work). */
static clopt_status launch_update(clopt_optimizer *opt, cl_kernel k, size_t n)
{
    if (opt->cur.dry)
        return CLOPT_SUCCESS;
    const clopt_tuning t = {.vector_width = 1, .work_group_size =
                                opt->ctx->tuning.work_group_size ? opt->ctx->tuning.work_group_size
                                                                 : 64,
                            .items_per_work_item = 1};
    /* FOR_ITEM_CHUNKS in chunks.cl: parts of ceil(chunks / streams) chunks, each item
       takes m.chunks of every part */
    const multipass_shape m = multipass_shape_of(opt);
    const size_t part = (n / REDUCE_WIDTH + m.streams - 1) / m.streams;
    const size_t items = part ? (part + m.chunks - 1) / m.chunks : 1;
    return clopt_launch_elementwise(opt->ctx, opt->q, k, items, &t, 0, NULL, NULL);
}

/* scratch[dst .. dst+nsums) = sums of the nsums blocks of `items` partials at scratch[0]. */
static clopt_status enqueue_final(clopt_optimizer *opt, size_t items, size_t nsums, size_t dst)
{
    cl_kernel k;
    clopt_status s = clopt_o_kernel_of(opt, "reduce", NULL, 0, "", "sum_final", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, 0});
    clopt_arg_ulong(&a, items);
    clopt_arg_ulong(&a, nsums);
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, dst});
    if (a.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &a);
    return launch_groups(opt, k, nsums);
}

/* Work-groups of the gradient check of a unit of n floats: the reduction shape's count,
   but blocks of at least 8192 floats (a unit of a thousand small tensors adds one partial
   each; step_verdict adds the partials of all units in one pass). */
static size_t check_groups(const clopt_optimizer *opt, size_t n)
{
    const size_t g = reduce_groups(opt, n), min_blocks = (n + 8191) / 8192;
    return g < min_blocks ? g : min_blocks;
}

/* The gradient check of AMP, clipping and the opt-in finite check: per unit (an arena group's
   gradient buffer, or a caller-owned tensor) one launch writes Σ(g/scale)², a non-finite
   flag and Σ(g/scale·2^-80)² per block into opt->check (the sums, then the flags, then the
   scaled sums, all units back to back in each); step_verdict adds them in
   that fixed order and decides (skip, clip coefficient) on the device: nothing is read back
   here. The buffer grows in the dry pass, before anything is enqueued. */
clopt_status clopt_o_grad_check(clopt_optimizer *opt, double inv_scale, int amp)
{
    cl_kernel k, kv;
    clopt_status s;
    if ((s = clopt_o_kernel_of(opt, "tensor", NULL, 0, "", "grad_check_partial", &k)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_kernel_of(opt, "tensor", NULL, 0, "", "step_verdict", &kv)) !=
            CLOPT_SUCCESS)
        return s;
    const int check = amp || opt->max_grad_norm > 0 || opt->check_finite;
    size_t total = 0;
    clopt_tensor grad;
    size_t n;
    for (size_t i = 0; check && i < opt->nparams; i++)
        if (clopt_o_grad_unit(opt, i, &grad, &n))
            total += check_groups(opt, n);
    if (opt->cur.dry &&
        (s = clopt_o_ensure_buffer(opt, &opt->check, &opt->check_len, 3 * total,
                                   CL_MEM_READ_WRITE, "allocating the gradient check")) !=
            CLOPT_SUCCESS)
        return s;
    size_t at = 0;
    for (size_t i = 0; check && i < opt->nparams; i++) {
        if (!clopt_o_grad_unit(opt, i, &grad, &n))
            continue; /* the arena's whole gradient buffer is one unit */
        const size_t items = check_groups(opt, n);
        const clopt_dtype gt = opt->params[i].gdtype; /* arena units are float32 */
        if (gt != CLOPT_DTYPE_F32) {
            char extra[16];
            snprintf(extra, sizeof extra, " -DGT=%d", (int)gt);
            if ((s = clopt_o_kernel_of(opt, "tensor", NULL, 0, extra, "grad_check_partial",
                                       &k)) != CLOPT_SUCCESS)
                return s;
        } else if ((s = clopt_o_kernel_of(opt, "tensor", NULL, 0, "", "grad_check_partial",
                                          &k)) != CLOPT_SUCCESS) {
            return s;
        }
        clopt_args a = {k, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, grad);
        clopt_arg_ulong(&a, n);
        clopt_arg_ulong(&a, items);
        clopt_arg_float(&a, (float)inv_scale);
        clopt_arg_tensor(&a, (clopt_tensor){opt->check, at});
        clopt_arg_ulong(&a, total + at);
        clopt_arg_ulong(&a, 2 * total + at);
        if (a.err != CL_SUCCESS)
            return clopt_o_set_failed(opt, &a);
        if ((s = launch_groups(opt, k, items)) != CLOPT_SUCCESS)
            return s;
        at += items;
    }
    clopt_args v = {kv, 0, CL_SUCCESS};
    clopt_arg_tensor(&v, (clopt_tensor){opt->ctl, 0});
    clopt_arg_tensor(&v, (clopt_tensor){total ? opt->check : opt->ctl, 0});
    clopt_arg_ulong(&v, total);
    clopt_arg_ulong(&v, 2 * total);
    clopt_arg_ulong(&v, total);
    clopt_arg_float(&v, (float)opt->max_grad_norm);
    clopt_arg_int(&v, amp);
    if (v.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &v);
    return clopt_o_launch_items(opt, kv, 1);
}

/* Stochastic rounding of tensor e's θ under hp. */
static int theta_sr(const clopt_param *e, const clopt_hparams *hp)
{
    return e->pdtype != CLOPT_DTYPE_F32 && !e->master && hp->stochastic_rounding;
}

/* The storage of tensor e as kernel defines (appended to extra; nothing for float32). */
void clopt_o_storage_extra(const clopt_param *e, const clopt_hparams *hp, char *extra,
                          size_t cap)
{
    size_t len = strlen(extra);
    clopt_storage_options(extra + len, cap - len, e->pdtype, e->gdtype,
                          (clopt_master)e->master, theta_sr(e, hp));
    len = strlen(extra);
    if (e->sq == CLOPT_DTYPE_BF16) /* LAMB's moments in bf16 (SSTORE in chunks.cl) */
        snprintf(extra + len, cap - len, " -DSQ=2");
}

/* The trailing storage arguments (STORAGE_PARAMS) of a kernel over tensor e's θ. */
void clopt_o_storage_args(const clopt_optimizer *opt, clopt_args *a, const clopt_param *e)
{
    if (e->pdtype == CLOPT_DTYPE_F32)
        return;
    clopt_step_args sa;
    clopt_step_args_init(&sa);
    sa.param = e->param;
    sa.master_kind = (clopt_master)e->master;
    if (e->master)
        sa.master = e->state[e->master_at];
    sa.sr_seed = opt->rng_seed;
    sa.sr_stream = clopt_o_sr_stream(opt, e);
    clopt_arg_storage(a, &sa, 0); /* at the optimizer level the step is the device's */
}

uint32_t clopt_o_sr_stream(const clopt_optimizer *opt, const clopt_param *e)
{
    const clopt_group *g = &opt->groups[e->group];
    return g->ranges ? g->sr_stream : (uint32_t)(e - opt->params);
}

/* GC row means of tensor e into the scratch (after L2 decay); *rows = 0 when GC is off. */
static clopt_status gc_means(clopt_optimizer *opt, const clopt_param *e, const clopt_hparams *hp,
                             float gmul, size_t *rows)
{
    *rows = clopt_o_gc_rows(hp, e);
    if (!*rows)
        return CLOPT_SUCCESS;
    cl_kernel k;
    char extra[96] = "";
    clopt_o_storage_extra(e, hp, extra, sizeof extra);
    clopt_status s = clopt_o_kernel_of(opt, "reduce", hp, 0, extra, "gc_rowmean", &k);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args a = {k, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, e->grad);
    clopt_arg_tensor(&a, e->param);
    clopt_arg_ulong(&a, *rows);
    clopt_arg_ulong(&a, e->n / *rows);
    clopt_arg_float(&a, gmul);
    clopt_arg_float(&a, (float)clopt_rule_l2_decay(opt->rule, hp));
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, clopt_o_scr_gc(e)});
    clopt_arg_ctl(&a, &opt->cur);
    clopt_o_storage_args(opt, &a, e);
    if (a.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &a);
    return launch_groups(opt, k, clopt_gc_groups(opt->ctx, *rows));
}

static void gc_args(clopt_optimizer *opt, clopt_args *a, const clopt_param *e, size_t rows)
{
    if (!rows)
        return;
    clopt_arg_tensor(a, (clopt_tensor){opt->scratch, clopt_o_scr_gc(e)});
    clopt_arg_ulong(a, e->n / rows);
}

/* ---- multi-pass rules ------------------------------------------------------------------- */

/* Adafactor's statistics tiles (adafactor_stats in kernels/adafactor.cl): TC = RL·AFCK·RW
   columns (8192 with RL 1, max(RL, 64)·RW otherwise), and bands of rows enough for about the
   reduction shape's work-group count (each tile's partials are separate, so the sums do not
   depend on it; twice as many bands made adafactor_stats_finish, which adds the bands'
   column partials, 0.13 -> 0.35 ms at 4096 x 8192 on PoCL). */
void clopt_o_af_tiles(const clopt_optimizer *opt, const clopt_param *e, clopt_af_tiles *t)
{
    size_t B, R, C, g;
    unsigned rl;
    clopt_o_factored_view(e, &B, &R, &C);
    memset(t, 0, sizeof *t);
    if (R == 0)
        return;
    clopt_reduce_shape(opt->ctx, &rl, &g);
    const size_t tc = (size_t)rl * multipass_shape_of(opt).afck * REDUCE_WIDTH;
    t->ntc = (C + tc - 1) / tc;
    size_t bands = (g + B * t->ntc - 1) / (B * t->ntc);
    if (bands > R)
        bands = R;
    if (bands < 1)
        bands = 1;
    t->band_rows = (R + bands - 1) / bands;
    t->nbands = (R + t->band_rows - 1) / t->band_rows;
    /* row partials, column partials, row factors, column factors */
    t->floats = B * R * t->ntc + B * t->nbands * C + B * R + B * C;
}

clopt_status clopt_optimizer_set_tensor_sums_hook(clopt_optimizer *opt, clopt_tensor_sums_fn fn,
                                                  void *user)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_clear_error(opt->ctx);
    opt->sums_hook = fn;
    opt->sums_user = fn ? user : NULL;
    return CLOPT_SUCCESS;
}

size_t clopt_rule_tensor_sums(clopt_rule rule, const clopt_hparams *hp)
{
    switch (rule) {
    case CLOPT_LAMB:
        return 2; /* Σθ², Σr² */
    case CLOPT_STABLE_ADAMW:
        return 1; /* Σ g²/max(u, eps²) */
    case CLOPT_ADAM:
    case CLOPT_ADAMW:
    case CLOPT_LION:
        return hp && hp->cautious ? 1 : 0; /* the mask's count */
    default:
        return 0;
    }
}

/* The tensor-sums hook on SCR_SUMS's nsums floats of tensor e (outside a dry pass); the
   element count it returns goes to argument count_at of the update b (a float; none for
   count_at < 0). */
static clopt_status sums_hook(clopt_optimizer *opt, const clopt_param *e, clopt_args *b,
                              size_t nsums, int count_at)
{
    if (opt->cur.dry || !opt->sums_hook)
        return CLOPT_SUCCESS;
    if (opt->gate && !opt->gate_opened) { /* the hook waits for the sums: start the step */
        const cl_int err = clSetUserEventStatus(opt->gate, CL_COMPLETE);
        if (err != CL_SUCCESS)
            return clopt_fail_cl(opt->ctx, err, "clSetUserEventStatus (the step's start)");
        opt->gate_opened = 1;
    }
    clopt_tensor_sums ts;
    memset(&ts, 0, sizeof ts);
    ts.struct_size = sizeof ts;
    ts.param = (size_t)(e - opt->params);
    ts.rule = opt->rule;
    ts.count = nsums;
    ts.sums = (clopt_tensor){opt->scratch, SCR_SUMS};
    ts.queue = opt->q;
    ts.elements = (double)e->n;
    clopt_status s = opt->sums_hook(opt->sums_user, &ts);
    if (s != CLOPT_SUCCESS)
        return clopt_fail(opt->ctx, s < 0 ? s : CLOPT_ERR_INVALID_ARGUMENT,
                          "the tensor-sums hook failed on tensor %zu (%s)", ts.param,
                          clopt_status_name(s));
    if (count_at < 0 || ts.elements == (double)e->n)
        return CLOPT_SUCCESS;
    if (!(ts.elements >= 1.0 && ts.elements <= 1e30))
        return clopt_fail(opt->ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "the tensor-sums hook returned %g elements for tensor %zu",
                          ts.elements, ts.param);
    const float f = (float)ts.elements;
    const cl_int err = clSetKernelArg(b->k, (cl_uint)count_at, sizeof f, &f);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(opt->ctx, err, "clSetKernelArg");
}

/* The launches of a rule with one reduction between two passes (LAMB, cautious, StableAdamW):
   a (the partial sums, `items` work-groups, nsums sums each) and b (the update over e), whose
   arguments up to the control and storage ones are set; then the final sums into SCR_SUMS,
   the tensor-sums hook, the update (count_at: b's element-count argument, or -1). */
static clopt_status two_pass(clopt_optimizer *opt, const clopt_param *e, clopt_args *a,
                             clopt_args *b, size_t items, size_t nsums, int count_at)
{
    clopt_arg_ctl(a, &opt->cur);
    clopt_arg_ctl(b, &opt->cur);
    clopt_o_storage_args(opt, a, e);
    clopt_o_storage_args(opt, b, e);
    if (a->err != CL_SUCCESS || b->err != CL_SUCCESS)
        return clopt_o_set_failed(opt, a->err != CL_SUCCESS ? a : b);
    clopt_status s;
    if ((s = launch_groups(opt, a->k, items)) != CLOPT_SUCCESS ||
        (s = enqueue_final(opt, items, nsums, SCR_SUMS)) != CLOPT_SUCCESS ||
        (s = sums_hook(opt, e, b, nsums, count_at)) != CLOPT_SUCCESS)
        return s;
    return launch_update(opt, b->k, e->n);
}

clopt_status clopt_o_step_lamb(clopt_optimizer *opt, const clopt_param *e,
                              const clopt_hparams *hp, uint64_t t, float gmul)
{
    size_t rows;
    clopt_status s = gc_means(opt, e, hp, gmul, &rows);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_kernel kp, ku;
    char extra[96] = "";
    clopt_o_storage_extra(e, hp, extra, sizeof extra);
    if ((s = clopt_o_kernel_of(opt, "lamb", hp, rows > 0, extra, "lamb_partial", &kp)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_kernel_of(opt, "lamb", hp, 0, extra, "lamb_update", &ku)) != CLOPT_SUCCESS)
        return s;
    const double td = (double)t;
    const double bc1 = hp->bias_correction ? 1.0 - pow(hp->beta1, td) : 1.0;
    const double bc2 = hp->bias_correction ? 1.0 - pow(hp->beta2, td) : 1.0;
    const size_t items = reduce_groups(opt, e->n);
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
    return two_pass(opt, e, &a, &b, items, clopt_rule_tensor_sums(opt->rule, hp), -1);
}

clopt_status clopt_o_step_adafactor(clopt_optimizer *opt, const clopt_param *e,
                                   const clopt_hparams *hp, uint64_t t, float gmul)
{
    size_t rows;
    clopt_status s = gc_means(opt, e, hp, gmul, &rows);
    if (s != CLOPT_SUCCESS)
        return s;
    const int gc = rows > 0;
    size_t B, R, C;
    clopt_o_factored_view(e, &B, &R, &C);
    const int factored = R > 0;
    char extra[160];
    snprintf(extra, sizeof extra, " -DFACTORED=%d -DBETA1=%d", factored, hp->use_beta1 ? 1 : 0);
    clopt_o_storage_extra(e, hp, extra, sizeof extra);
    cl_kernel ks = NULL, kf = NULL, km = NULL, kp, ku;
#define AF_KERNEL(name, k) clopt_o_kernel_of(opt, "adafactor", hp, gc, extra, name, k)
    if (factored && ((s = AF_KERNEL("adafactor_stats", &ks)) != CLOPT_SUCCESS ||
                     (s = AF_KERNEL("adafactor_stats_finish", &kf)) != CLOPT_SUCCESS ||
                     (s = AF_KERNEL("adafactor_rmean", &km)) != CLOPT_SUCCESS))
        return s;
    if ((s = AF_KERNEL("adafactor_partial", &kp)) != CLOPT_SUCCESS ||
        (s = AF_KERNEL("adafactor_update", &ku)) != CLOPT_SUCCESS)
        return s;
#undef AF_KERNEL
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
    const size_t items = reduce_groups(opt, e->n);
    const cl_ulong Rl = factored ? R : 1, Cl = factored ? C : 1;
    /* factored: the row and column factors rsqrt(Rv / mean), rsqrt(Cv) in the scratch, which
       the partial sums and the update read instead of the statistics */
    clopt_tensor rfac = s0, cfac = s1;
    /* the tiles follow the reduction shape, which clopt_ctx_set_tuning may have changed */
    if (factored && opt->cur.dry && (s = clopt_o_grow_scratch(opt)) != CLOPT_SUCCESS)
        return s;
    if (factored) {
        clopt_af_tiles at;
        clopt_o_af_tiles(opt, e, &at);
        const size_t rpo = clopt_o_scr_af(e), cpo = rpo + B * R * at.ntc;
        const size_t rfo = cpo + B * at.nbands * C, cfo = rfo + B * R;
        rfac = (clopt_tensor){opt->scratch, rfo};
        cfac = (clopt_tensor){opt->scratch, cfo};
        clopt_args a = {ks, 0, CL_SUCCESS};
        clopt_arg_tensor(&a, e->grad);
        gc_args(opt, &a, e, rows);
        clopt_arg_ulong(&a, B);
        clopt_arg_ulong(&a, R);
        clopt_arg_ulong(&a, C);
        clopt_arg_ulong(&a, at.band_rows);
        clopt_arg_ulong(&a, at.nbands);
        clopt_arg_ulong(&a, at.ntc);
        clopt_arg_float(&a, gmul);
        clopt_arg_float(&a, (float)hp->eps);
        clopt_arg_mem(&a, opt->scratch);
        clopt_arg_ulong(&a, rpo);
        clopt_arg_ulong(&a, cpo);
        clopt_args f = {kf, 0, CL_SUCCESS};
        clopt_arg_tensor(&f, s0);
        clopt_arg_tensor(&f, s1);
        clopt_arg_ulong(&f, B);
        clopt_arg_ulong(&f, R);
        clopt_arg_ulong(&f, C);
        clopt_arg_ulong(&f, at.nbands);
        clopt_arg_ulong(&f, at.ntc);
        clopt_arg_mem(&f, opt->scratch);
        clopt_arg_ulong(&f, rpo);
        clopt_arg_ulong(&f, cpo);
        clopt_arg_ulong(&f, cfo);
        clopt_arg_float(&f, (float)beta2t);
        clopt_arg_float(&f, (float)(1.0 - beta2t));
        clopt_args m = {km, 0, CL_SUCCESS};
        clopt_arg_tensor(&m, s0);
        clopt_arg_ulong(&m, B);
        clopt_arg_ulong(&m, R);
        clopt_arg_tensor(&m, rmean);
        clopt_arg_ulong(&m, rfo);
        clopt_arg_ctl(&a, &opt->cur);
        clopt_arg_ctl(&f, &opt->cur);
        clopt_arg_ctl(&m, &opt->cur);
        if (a.err != CL_SUCCESS || f.err != CL_SUCCESS || m.err != CL_SUCCESS)
            return clopt_o_set_failed(opt, a.err != CL_SUCCESS ? &a : f.err != CL_SUCCESS ? &f : &m);
        if ((s = launch_groups(opt, ks, B * at.nbands * at.ntc)) != CLOPT_SUCCESS ||
            (s = clopt_o_launch_items(opt, kf, B * (R + C))) != CLOPT_SUCCESS ||
            (s = launch_groups(opt, km, B)) != CLOPT_SUCCESS)
            return s;
    }
    clopt_args p = {kp, 0, CL_SUCCESS};
    clopt_arg_tensor(&p, e->param);
    clopt_arg_tensor(&p, e->grad);
    clopt_arg_tensor(&p, s0);
    clopt_arg_tensor(&p, cfac);
    clopt_arg_tensor(&p, rfac);
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
    clopt_arg_tensor(&u, cfac);
    clopt_arg_tensor(&u, rfac);
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
    clopt_o_storage_args(opt, &p, e);
    clopt_o_storage_args(opt, &u, e);
    if (p.err != CL_SUCCESS || u.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, p.err != CL_SUCCESS ? &p : &u);
    if ((s = launch_groups(opt, kp, items)) != CLOPT_SUCCESS ||
        (s = enqueue_final(opt, items, 2, SCR_SUMS)) != CLOPT_SUCCESS)
        return s;
    return launch_update(opt, ku, e->n);
}


/* Cautious Adam/AdamW/Lion and StableAdamW (kernels/reduced.cl): the sum of the mask (or of
   g²/max(u, eps²)) over the tensor, then the fused update that reads it. */
clopt_status clopt_o_step_reduced(clopt_optimizer *opt, const clopt_param *e,
                                  const clopt_hparams *hp, uint64_t t, float gmul)
{
    size_t rows;
    clopt_status s = gc_means(opt, e, hp, gmul, &rows);
    if (s != CLOPT_SUCCESS)
        return s;
    const int lion = opt->rule == CLOPT_LION, stable = opt->rule == CLOPT_STABLE_ADAMW;
    const int decoupled = opt->rule != CLOPT_ADAM;
    char extra[128];
    snprintf(extra, sizeof extra, " -DVARIANT=%d -DDECOUPLED=%d", stable ? 3 : lion ? 2 : 1,
             decoupled);
    clopt_o_storage_extra(e, hp, extra, sizeof extra);
    cl_kernel kp, ku;
    if ((s = clopt_o_kernel_of(opt, "reduced", hp, rows > 0, extra, "reduced_partial", &kp)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_kernel_of(opt, "reduced", hp, rows > 0, extra, "reduced_update", &ku)) !=
            CLOPT_SUCCESS)
        return s;
    const double td = (double)t, b1 = hp->beta1, b2 = hp->beta2, lr = hp->lr;
    double c1 = b1, c2 = b2, step = lr;
    if (stable) { /* β̂ = β(1 - β^(t-1))/(1 - β^t): the moments are bias-corrected means */
        c1 = b1 * (1.0 - pow(b1, td - 1.0)) / (1.0 - pow(b1, td));
        c2 = b2 * (1.0 - pow(b2, td - 1.0)) / (1.0 - pow(b2, td));
    } else if (!lion) { /* C-Optim's AdamW: the corrections in the step size */
        step = lr * sqrt(1.0 - pow(b2, td)) / (1.0 - pow(b1, td));
    }
    const double l2 = decoupled ? 0.0 : hp->weight_decay;
    const double lrwd = decoupled ? lr * hp->weight_decay : 0.0;
    const size_t items = reduce_groups(opt, e->n);
    const clopt_tensor ps = stable ? e->state[1] : e->state[0]; /* u, or m */
    clopt_args a = {kp, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, e->param);
    clopt_arg_tensor(&a, e->grad);
    clopt_arg_tensor(&a, ps);
    gc_args(opt, &a, e, rows);
    clopt_arg_ulong(&a, e->n);
    clopt_arg_ulong(&a, items);
    clopt_arg_float(&a, gmul);
    clopt_arg_float(&a, (float)(stable ? c2 : c1));
    clopt_arg_float(&a, (float)(1.0 - (stable ? c2 : c1)));
    clopt_arg_float(&a, (float)l2);
    clopt_arg_float(&a, (float)(hp->eps * hp->eps));
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, 0});
    clopt_args b = {ku, 0, CL_SUCCESS};
    clopt_arg_tensor(&b, e->param);
    clopt_arg_tensor(&b, e->grad);
    clopt_arg_tensor(&b, e->state[0]);
    clopt_arg_tensor(&b, lion ? e->state[0] : e->state[1]); /* Lion: v unused */
    gc_args(opt, &b, e, rows);
    clopt_arg_ulong(&b, e->n);
    clopt_arg_tensor(&b, (clopt_tensor){opt->scratch, SCR_SUMS});
    clopt_arg_float(&b, gmul);
    clopt_arg_float(&b, (float)c1);
    clopt_arg_float(&b, (float)(1.0 - c1));
    clopt_arg_float(&b, (float)c2);
    clopt_arg_float(&b, (float)(1.0 - c2));
    clopt_arg_float(&b, (float)hp->eps);
    clopt_arg_float(&b, (float)l2);
    clopt_arg_float(&b, (float)lrwd);
    clopt_arg_float(&b, (float)step);
    clopt_arg_float(&b, (float)hp->clip_threshold);
    const int count_at = (int)b.i; /* the mean's element count (the hook may change it) */
    clopt_arg_float(&b, (float)e->n);
    return two_pass(opt, e, &a, &b, items, clopt_rule_tensor_sums(opt->rule, hp), count_at);
}

/* The helpers above for Muon's passes (muon.c). */
size_t clopt_o_reduce_groups(const clopt_optimizer *opt, size_t n)
{
    return reduce_groups(opt, n);
}

clopt_status clopt_o_launch_groups(clopt_optimizer *opt, cl_kernel k, size_t groups)
{
    return launch_groups(opt, k, groups);
}

clopt_status clopt_o_launch_update(clopt_optimizer *opt, cl_kernel k, size_t n)
{
    return launch_update(opt, k, n);
}

clopt_status clopt_o_enqueue_final(clopt_optimizer *opt, size_t items, size_t nsums, size_t dst)
{
    return enqueue_final(opt, items, nsums, dst);
}
