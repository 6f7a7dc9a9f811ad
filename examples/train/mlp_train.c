/* SPDX-License-Identifier: MIT */
/* The training example's loop through clopt's optimizer level: hyperparameters and the
 * optimizer of a training configuration, the schedule, epochs (single process and
 * data-parallel shares), Sophia's Hessian estimates and the evaluation. See mlp.h. */
#include "mlp_internal.h"

#include <stdlib.h>
#include <string.h>

size_t mlp_steps_per_epoch(size_t n, size_t batch) { return batch ? (n + batch - 1) / batch : 0; }

int mlp_train_hparams(const mlp *m, const mlp_train_config *tc, clopt_hparams *hp)
{
    clopt_status s = clopt_hparams_default(tc->rule, hp);
    if (s != CLOPT_SUCCESS)
        return mlp_fail((mlp *)m, "unknown rule %d", (int)tc->rule);
    double lr, wd;
    mlp_default_lr_wd(tc->rule, &lr, &wd);
    if (tc->lr > 0)
        lr = tc->lr;
    if (tc->weight_decay >= 0)
        wd = tc->weight_decay;
    hp->lr = lr;
    hp->weight_decay = wd;
    switch (tc->rule) {
    case CLOPT_SGD: hp->momentum = 0.9; break;
    case CLOPT_ADAFACTOR:
        /* an explicit lr (so the schedule applies), as HF's recommended fine-tuning setting */
        hp->relative_step = 0;
        hp->scale_parameter = 0;
        hp->warmup_init = 0;
        break;
    case CLOPT_SOPHIA: hp->bs = (double)m->cfg.batch; break;
    /* Schedule-Free: its own linear warmup instead of the schedule (no decay: the point) */
    case CLOPT_SCHEDULE_FREE_ADAMW:
    case CLOPT_SCHEDULE_FREE_SGD: hp->warmup_steps = (unsigned)tc->warmup_steps; break;
    /* AdEMAMix: α and β3 warm up over the whole run, as the paper does (T_α,β3 = T); β3
       0.999 (half-life ~700 steps) instead of 0.9999 (~6900, more than the 4690 steps of
       10 epochs here: the paper sizes β3 to the run, its 0.9999 is for ~10^5 steps) */
    case CLOPT_ADEMAMIX:
        hp->beta3 = 0.999;
        hp->alpha_warmup = hp->beta3_warmup = (unsigned)tc->total_steps;
        break;
    default: break;
    }
    hp->cautious = tc->cautious;
    char serr[256];
    if (mlp_check_storage(m->cfg.param_dtype, tc->state_dtype, tc->master,
                          tc->stochastic_rounding, serr, sizeof serr))
        return mlp_fail((mlp *)m, "%s", serr);
    hp->master = (int)tc->master;
    hp->stochastic_rounding = tc->stochastic_rounding;
    hp->state_dtype = (int)tc->state_dtype;
    const char *why = NULL;
    if ((s = clopt_hparams_validate(tc->rule, hp, &why)) != CLOPT_SUCCESS)
        return mlp_fail((mlp *)m, "hyperparameters for %s: %s", clopt_rule_name(tc->rule), why);
    return 0;
}

static int fail_clopt(mlp *m, clopt_status s, const char *what)
{
    return mlp_fail(m, "%s: %s (%s)", what, clopt_status_str(s), clopt_ctx_last_error(m->ctx));
}

int mlp_optimizer_create(mlp *m, const mlp_train_config *tc, clopt_optimizer **out)
{
    *out = NULL;
    clopt_hparams hp;
    if (mlp_train_hparams(m, tc, &hp))
        return -1;
    clopt_optimizer *opt = NULL;
    clopt_status s = clopt_optimizer_create(m->ctx, tc->rule, &hp, &opt);
    if (s != CLOPT_SUCCESS)
        return fail_clopt(m, s, "clopt_optimizer_create");
    clopt_hparams hb = hp;
    hb.weight_decay = 0.0;
    size_t bias_group = 0;
    clopt_optimizer_destroy(m->aux);
    m->aux = NULL;
    clopt_optimizer *bopt = opt; /* the biases' optimizer */
    if (tc->rule == CLOPT_MUON) {
        /* Muon takes 2-D tensors only: the biases go to an AdamW optimizer of their own
           (group 0 there), the usual hybrid, stepped together with Muon's */
        mlp_muon_bias_hparams(&hp, &hb);
        if ((s = clopt_optimizer_create(m->ctx, CLOPT_ADAMW, &hb, &m->aux)) != CLOPT_SUCCESS)
            goto fail;
        bopt = m->aux;
    } else if ((s = clopt_optimizer_add_group(opt, &hb, &bias_group)) != CLOPT_SUCCESS) {
        goto fail;
    }
    if (tc->stochastic_rounding &&
        ((s = clopt_optimizer_seed(opt, tc->sr_seed)) != CLOPT_SUCCESS ||
         (m->aux && (s = clopt_optimizer_seed(m->aux, tc->sr_seed + 1)) != CLOPT_SUCCESS)))
        goto fail;
    const int p16 = m->cfg.param_dtype != CLOPT_DTYPE_F32;
    const int sophia = tc->rule == CLOPT_SOPHIA && m->hessian;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->cfg.nlayers; i++) {
            clopt_param_desc d;
            memset(&d, 0, sizeof d);
            d.param_dtype = m->cfg.param_dtype;
            d.grad_dtype = CLOPT_DTYPE_F32;
            if (pass == 0) { /* weights [out, in]: 2-D, so Adafactor factors them */
                d.param = p16 ? (clopt_tensor){m->flat.params16, m->flat.weight_offset[i]}
                              : (clopt_tensor){m->w[i], 0};
                d.grad = (clopt_tensor){m->gw[i], 0};
                if (sophia)
                    d.hessian = (clopt_tensor){m->hw[i], 0};
                d.ndim = 2;
                d.shape[0] = m->cfg.dims[i + 1];
                d.shape[1] = m->cfg.dims[i];
            } else {
                d.param = p16 ? (clopt_tensor){m->flat.params16, m->flat.bias_offset[i]}
                              : (clopt_tensor){m->b[i], 0};
                d.grad = (clopt_tensor){m->gb[i], 0};
                if (sophia)
                    d.hessian = (clopt_tensor){m->hb[i], 0};
                d.ndim = 1;
                d.shape[0] = m->cfg.dims[i + 1];
            }
            if ((s = clopt_optimizer_add_param_desc(pass == 0 ? opt : bopt,
                                                     pass == 0 ? 0 : bias_group, &d, NULL)) !=
                CLOPT_SUCCESS)
                goto fail;
        }
    /* linear warmup + cosine decay (Schedule-Free: none, its own warmup; mlp_train_hparams) */
    clopt_schedule sch;
    if (!mlp_schedule(tc, &sch)) {
        *out = opt;
        return 0;
    }
    if ((s = clopt_optimizer_set_group_schedule(opt, 0, &sch)) != CLOPT_SUCCESS ||
        (s = clopt_optimizer_set_group_schedule(bopt, bias_group, &sch)) != CLOPT_SUCCESS)
        goto fail;
    *out = opt;
    return 0;
fail:
    fail_clopt(m, s, "setting up the optimizer");
    clopt_optimizer_destroy(opt);
    clopt_optimizer_destroy(m->aux);
    m->aux = NULL;
    return -1;
}

int mlp_schedule(const mlp_train_config *tc, clopt_schedule *out)
{
    memset(out, 0, sizeof *out);
    if (tc->rule == CLOPT_SCHEDULE_FREE_ADAMW || tc->rule == CLOPT_SCHEDULE_FREE_SGD)
        return 0;
    const uint64_t W = tc->warmup_steps, T = tc->total_steps > W ? tc->total_steps - W : 1;
    if (W > 0) {
        out->stage[out->nstages].kind = CLOPT_SCHED_LINEAR_WARMUP;
        out->stage[out->nstages].start = 0;
        out->stage[out->nstages].total_steps = W;
        out->stage[out->nstages].factor = 0.01;
        out->nstages++;
    }
    out->stage[out->nstages].kind = CLOPT_SCHED_COSINE;
    out->stage[out->nstages].start = W;
    out->stage[out->nstages].total_steps = T;
    out->stage[out->nstages].eta_min = 0.0;
    out->nstages++;
    return 1;
}

int mlp_set_eval_mode(mlp *m, clopt_optimizer *opt, int eval)
{
    clopt_status s = eval ? clopt_optimizer_eval(opt) : clopt_optimizer_train(opt);
    if (s != CLOPT_SUCCESS)
        return fail_clopt(m, s, eval ? "clopt_optimizer_eval" : "clopt_optimizer_train");
    return mlp_sync_weights(m);
}

/* Sophia's Gauss-Newton-Bartlett estimate of the Hessian diagonal: the gradient ĝ of the loss
   on labels sampled from the model's softmax, ĥ = rows·ĝ⊙ĝ into the Hessian buffers. */
static int sophia_estimate(mlp *m, size_t rows, uint32_t seed)
{
    if (mlp_pass_loss(m, rows, (double)rows, 1, seed) || mlp_pass_backward(m, rows))
        return -1;
    for (size_t i = 0; i < m->cfg.nlayers; i++) {
        const size_t wn = m->cfg.dims[i + 1] * m->cfg.dims[i], bn = m->cfg.dims[i + 1];
        clopt_status s = clopt_enqueue_gnb(m->ctx, NULL, (clopt_tensor){m->gw[i], 0},
                                           (clopt_tensor){m->hw[i], 0}, wn, (double)rows, 0,
                                           NULL, NULL);
        if (s == CLOPT_SUCCESS)
            s = clopt_enqueue_gnb(m->ctx, NULL, (clopt_tensor){m->gb[i], 0},
                                  (clopt_tensor){m->hb[i], 0}, bn, (double)rows, 0, NULL, NULL);
        if (s != CLOPT_SUCCESS)
            return fail_clopt(m, s, "clopt_enqueue_gnb");
    }
    return 0;
}

/* Process dp->rank's share [*lo, *hi) of a batch of `rows` rows (dp NULL: all of them). */
static void share_of(const mlp_data_parallel *dp, size_t rows, size_t *lo, size_t *hi)
{
    *lo = dp ? rows * dp->rank / dp->world : 0;
    *hi = dp ? rows * (dp->rank + 1) / dp->world : rows;
}

/* A process without rows in a batch: zero gradients (the mean over the processes then counts
   only the others' rows) and a zero stats slot. */
static int empty_share(mlp *m, size_t slot)
{
    const float zero = 0.0f;
    cl_int e = clEnqueueFillBuffer(m->queue, m->flat.grads, &zero, sizeof zero, 0,
                                   m->flat.floats * sizeof(float), 0, NULL, NULL);
    if (e == CL_SUCCESS)
        e = clEnqueueFillBuffer(m->queue, m->stats, &zero, sizeof zero,
                                2 * slot * sizeof(float), 2 * sizeof(float), 0, NULL, NULL);
    return e == CL_SUCCESS ? 0 : mlp_fail_cl(m, e, "clEnqueueFillBuffer");
}

/* mlp_train_epoch (dp NULL, opt the optimizer) and mlp_train_epoch_dp (opt NULL). */
static int train_epoch(mlp *m, clopt_optimizer *opt, const mlp_data_parallel *dp,
                       const mlp_device_data *d, mlp_rng *rng, float *step_loss,
                       mlp_progress_fn progress, void *user, size_t progress_every,
                       mlp_epoch_stats *out)
{
    const size_t B = m->cfg.batch, n = d->n, steps = mlp_steps_per_epoch(n, B);
    if (n == 0)
        return mlp_fail(m, "no training images");
    if (mlp_ensure_stats(m, steps) || mlp_ensure_perm(m, n))
        return -1;
    int *perm = malloc(n * sizeof *perm);
    float *st = malloc(2 * steps * sizeof *st);
    double *sums = dp ? malloc(2 * steps * sizeof *sums) : NULL;
    if (!perm || !st || (dp && !sums)) {
        free(perm);
        free(st);
        free(sums);
        return mlp_fail(m, "out of memory");
    }
    int rc = -1;
    mlp_rng_permutation(rng, perm, n);
    cl_int e = clEnqueueWriteBuffer(m->queue, m->perm, CL_TRUE, 0, n * sizeof(cl_int), perm, 0,
                                    NULL, NULL);
    if (e != CL_SUCCESS) {
        mlp_fail_cl(m, e, "clEnqueueWriteBuffer (permutation)");
        goto done;
    }
    const int sophia = opt && clopt_optimizer_rule(opt) == CLOPT_SOPHIA && m->hessian;
    unsigned k = 1;
    if (sophia) {
        clopt_hparams hp;
        if (clopt_optimizer_get_group_hparams(opt, 0, &hp) == CLOPT_SUCCESS && hp.hess_interval)
            k = hp.hess_interval;
    }
    if (progress_every == 0)
        progress_every = steps;
    size_t read = 0, seen_rows = 0;
    double run_loss = 0.0;
    for (size_t s = 0; s < steps; s++) {
        const size_t off = s * B, rows = n - off < B ? n - off : B;
        size_t lo, hi;
        share_of(dp, rows, &lo, &hi);
        /* the loss gradient of this share: its loss sum / (rows / world), so that the mean
           of the processes' gradients is the batch's mean (1 process: the batch mean) */
        const double denom = dp ? (double)rows / (double)dp->world : (double)rows;
        if (hi == lo) {
            if (empty_share(m, s))
                goto done;
        } else {
            if (mlp_pass_gather(m, d, 1, off + lo, hi - lo) || mlp_pass_forward(m, hi - lo))
                goto done;
            if (sophia && (clopt_optimizer_step_count(opt) + 1) % k == 0 &&
                sophia_estimate(m, rows, (uint32_t)mlp_rng_next(rng)))
                goto done;
            if (mlp_pass_loss(m, hi - lo, denom, 0, 0) || mlp_pass_stats(m, hi - lo, s) ||
                mlp_pass_backward(m, hi - lo))
                goto done;
        }
        if (dp) {
            if (dp->step(dp->user, m->err, sizeof m->err))
                goto done;
        } else {
            clopt_status cs = clopt_optimizer_step(opt, NULL);
            if (cs == CLOPT_SUCCESS && m->aux)
                cs = clopt_optimizer_step(m->aux, NULL);
            if (cs != CLOPT_SUCCESS) {
                fail_clopt(m, cs, "clopt_optimizer_step");
                goto done;
            }
        }
        if (mlp_sync_weights(m))
            goto done;
        if (progress && ((s + 1) % progress_every == 0 || s + 1 == steps)) {
            if (mlp_read_stats(m, read, s + 1 - read, st + 2 * read))
                goto done;
            for (; read <= s; read++) {
                const size_t r = n - read * B < B ? n - read * B : B;
                size_t rlo, rhi;
                share_of(dp, r, &rlo, &rhi);
                run_loss += st[2 * read];
                seen_rows += rhi - rlo;
            }
            progress(user, s + 1, steps, seen_rows ? run_loss / (double)seen_rows : 0.0);
        } else if ((s + 1) % 8 == 0) {
            clFlush(m->queue);
        }
    }
    if (mlp_read_stats(m, 0, steps, st))
        goto done;
    if (dp) { /* the whole batches' sums: every process's share added */
        for (size_t i = 0; i < 2 * steps; i++)
            sums[i] = st[i];
        if (dp->sum(dp->user, sums, 2 * steps, m->err, sizeof m->err))
            goto done;
    }
    double lsum = 0.0, correct = 0.0;
    for (size_t s = 0; s < steps; s++) {
        const size_t rows = n - s * B < B ? n - s * B : B;
        const double ls = dp ? sums[2 * s] : st[2 * s];
        lsum += ls;
        correct += dp ? sums[2 * s + 1] : st[2 * s + 1];
        if (step_loss)
            step_loss[s] = dp ? (float)(ls / (double)rows) : st[2 * s] / (float)rows;
    }
    if (out) {
        out->loss = lsum / (double)n;
        out->accuracy = correct / (double)n;
        out->steps = steps;
    }
    e = clFinish(m->queue);
    if (e != CL_SUCCESS) {
        mlp_fail_cl(m, e, "clFinish");
        goto done;
    }
    rc = 0;
done:
    if (rc != 0)
        clFinish(m->queue);
    free(perm);
    free(st);
    free(sums);
    return rc;
}

int mlp_train_epoch(mlp *m, clopt_optimizer *opt, const mlp_device_data *d, mlp_rng *rng,
                    float *step_loss, mlp_progress_fn progress, void *user,
                    size_t progress_every, mlp_epoch_stats *out)
{
    if (!opt)
        return mlp_fail(m, "mlp_train_epoch: no optimizer");
    return train_epoch(m, opt, NULL, d, rng, step_loss, progress, user, progress_every, out);
}

int mlp_train_epoch_dp(mlp *m, const mlp_data_parallel *dp, const mlp_device_data *d,
                       mlp_rng *rng, float *step_loss, mlp_progress_fn progress, void *user,
                       size_t progress_every, mlp_epoch_stats *out)
{
    if (!dp || dp->world == 0 || dp->rank >= dp->world || !dp->step || !dp->sum)
        return mlp_fail(m, "mlp_train_epoch_dp: a rank below a world size > 0, a step and a sum");
    if (m->hessian)
        return mlp_fail(m, "mlp_train_epoch_dp: no Sophia (its Hessian estimates are per process)");
    if (m->aux)
        return mlp_fail(m, "mlp_train_epoch_dp: no Muon hybrid (two optimizers)");
    return train_epoch(m, NULL, dp, d, rng, step_loss, progress, user, progress_every, out);
}

int mlp_evaluate(mlp *m, const mlp_device_data *d, double *loss_out, double *accuracy)
{
    const size_t B = m->cfg.batch, n = d->n, steps = mlp_steps_per_epoch(n, B);
    if (n == 0)
        return mlp_fail(m, "no images to evaluate");
    if (mlp_ensure_stats(m, steps))
        return -1;
    for (size_t s = 0; s < steps; s++) {
        const size_t off = s * B, rows = n - off < B ? n - off : B;
        if (mlp_pass_gather(m, d, 0, off, rows) || mlp_pass_forward(m, rows) ||
            mlp_pass_loss(m, rows, (double)rows, 0, 0) || mlp_pass_stats(m, rows, s))
            return -1;
        if ((s + 1) % 8 == 0)
            clFlush(m->queue);
    }
    float *st = malloc(2 * steps * sizeof *st);
    if (!st)
        return mlp_fail(m, "out of memory");
    if (mlp_read_stats(m, 0, steps, st)) {
        free(st);
        return -1;
    }
    double lsum = 0.0, correct = 0.0;
    for (size_t s = 0; s < steps; s++) {
        lsum += st[2 * s];
        correct += st[2 * s + 1];
    }
    free(st);
    if (loss_out)
        *loss_out = lsum / (double)n;
    if (accuracy)
        *accuracy = correct / (double)n;
    return 0;
}
