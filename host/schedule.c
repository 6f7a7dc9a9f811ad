/* SPDX-License-Identifier: MIT */
/* Learning-rate schedules (closed forms of torch.optim.lr_scheduler, as factors of the base
 * lr), the lecture's batch-size scaling rules and the dynamic loss scaler. Host-only, double. */
#include "internal.h"

#include <float.h>
#include <math.h>

static const double pi = 3.14159265358979323846;

static double stage_factor(const clopt_schedule_stage *st, uint64_t count)
{
    const double t = count > st->start ? (double)(count - st->start) : 0.0;
    const double T = (double)st->total_steps;
    switch (st->kind) {
    case CLOPT_SCHED_CONSTANT:
        return t < T ? st->factor : 1.0;
    case CLOPT_SCHED_STEP:
        return pow(st->gamma, floor(t / (double)st->step_size));
    case CLOPT_SCHED_EXPONENTIAL:
        return pow(st->gamma, t);
    case CLOPT_SCHED_COSINE:
        return st->eta_min + (1.0 - st->eta_min) * (1.0 + cos(pi * fmin(t, T) / T)) / 2.0;
    case CLOPT_SCHED_LINEAR_WARMUP:
        return st->factor + (1.0 - st->factor) * fmin(t, T) / T;
    case CLOPT_SCHED_COSINE_RESTARTS: {
        /* position inside the current cycle: cycles last T, T·m, T·m², ... */
        double cur = t, len = T;
        if (st->t_mult == 1.0) {
            cur = fmod(t, T);
        } else {
            /* the logarithm estimates the cycle; at a cycle's first step it can round to
               just below the integer (t_mult 3, T 1, t 121: 4.9999...), so the estimate is
               moved to the cycle whose bounds hold t */
            const double m = st->t_mult;
            double n = floor(log(t / T * (m - 1.0) + 1.0) / log(m));
            if (n < 0)
                n = 0;
            /* (a few moves at most: with t_mult barely above 1 and a huge t the cycle number
               passes 2^53, where n ± 1 is n, and the loops never ended) */
            for (int k = 0; k < 4 && n > 0 && T * (pow(m, n) - 1.0) / (m - 1.0) > t; k++)
                n -= 1.0;
            for (int k = 0; k < 4 && T * (pow(m, n + 1.0) - 1.0) / (m - 1.0) <= t; k++)
                n += 1.0;
            cur = t - T * (pow(m, n) - 1.0) / (m - 1.0);
            len = T * pow(m, n);
            if (!(cur >= 0)) /* rounding at a cycle boundary (or NaN) */
                cur = 0;
            if (!(cur <= len))
                cur = len;
        }
        return st->eta_min + (1.0 - st->eta_min) * (1.0 + cos(pi * cur / len)) / 2.0;
    }
    }
    return NAN;
}

clopt_status clopt_schedule_validate(const clopt_schedule *s, const char **why)
{
    const char *w = NULL;
    if (!s)
        w = "schedule is NULL";
    else if (s->nstages > CLOPT_MAX_STAGES)
        w = "more stages than CLOPT_MAX_STAGES";
    for (size_t i = 0; !w && i < s->nstages; i++) {
        const clopt_schedule_stage *st = &s->stage[i];
        switch (st->kind) {
        case CLOPT_SCHED_CONSTANT:
            if (st->total_steps == 0) /* torch 1.13's stepped ConstantLR kept the factor */
                w = "constant: total_steps must be >= 1";
            else if (!(isfinite(st->factor) && st->factor >= 0))
                w = "constant: factor must be finite and >= 0";
            break;
        case CLOPT_SCHED_STEP:
            if (st->step_size == 0)
                w = "step: step_size must be >= 1";
            else if (!(isfinite(st->gamma) && st->gamma >= 0))
                w = "step: gamma must be finite and >= 0";
            break;
        case CLOPT_SCHED_EXPONENTIAL:
            if (!(isfinite(st->gamma) && st->gamma >= 0))
                w = "exponential: gamma must be finite and >= 0";
            break;
        case CLOPT_SCHED_COSINE:
        case CLOPT_SCHED_COSINE_RESTARTS:
            if (st->total_steps == 0)
                w = "cosine: total_steps must be >= 1";
            else if (!(isfinite(st->eta_min) && st->eta_min >= 0 && st->eta_min <= 1))
                w = "cosine: eta_min must be in [0, 1]";
            else if (st->kind == CLOPT_SCHED_COSINE_RESTARTS &&
                     !(isfinite(st->t_mult) && st->t_mult >= 1))
                w = "restarts: t_mult must be finite and >= 1";
            break;
        case CLOPT_SCHED_LINEAR_WARMUP:
            if (st->total_steps == 0)
                w = "warmup: total_steps must be >= 1";
            else if (!(isfinite(st->factor) && st->factor >= 0 && st->factor <= 1))
                w = "warmup: factor must be in [0, 1]";
            break;
        default:
            w = "unknown schedule kind";
        }
    }
    if (why)
        *why = w ? w : "";
    if (!s)
        return CLOPT_ERR_NULL_ARGUMENT;
    return w ? CLOPT_ERR_INVALID_HYPERPARAM : CLOPT_SUCCESS;
}

double clopt_schedule_factor(const clopt_schedule *s, uint64_t count)
{
    if (clopt_schedule_validate(s, NULL) != CLOPT_SUCCESS)
        return NAN;
    double f = 1.0;
    for (size_t i = 0; i < s->nstages; i++)
        f *= stage_factor(&s->stage[i], count);
    return f;
}

double clopt_lr_scale_linear(double lr, double batch, double base_batch)
{
    return lr * batch / base_batch;
}

double clopt_lr_scale_sqrt(double lr, double batch, double base_batch)
{
    return lr * sqrt(batch / base_batch);
}

void clopt_loss_scaler_init(clopt_loss_scaler *s, double initial_scale)
{
    if (!s)
        return;
    s->scale = initial_scale > 0 && isfinite(initial_scale) ? initial_scale : 65536.0;
    s->growth_factor = 2.0;
    s->backoff_factor = 0.5;
    s->growth_interval = 2000;
    s->clean_steps = 0;
}

double clopt_loss_scaler_update(clopt_loss_scaler *s, int found_inf)
{
    if (!s)
        return NAN;
    if (found_inf) { /* (torch has no floor; a scale below FLT_MIN cannot be set) */
        const double x = s->scale * s->backoff_factor;
        if (x >= FLT_MIN)
            s->scale = x;
        s->clean_steps = 0;
    } else if (++s->clean_steps >= s->growth_interval && s->growth_interval) {
        /* torch grows while the float32 scale stays finite (2^127); clopt's AMP takes up
           to 2^126 (1/scale a normal float) */
        const double x = s->scale * s->growth_factor;
        if (x <= CLOPT_MAX_FACTOR)
            s->scale = x;
        s->clean_steps = 0;
    }
    return s->scale;
}

void clopt_loss_scaler_update_at(clopt_loss_scaler *s, int found_inf, double step_scale)
{
    if (found_inf ? step_scale <= s->scale : step_scale >= s->scale)
        clopt_loss_scaler_update(s, found_inf);
}
