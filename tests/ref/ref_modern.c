/* SPDX-License-Identifier: MIT */
/* Double-precision references of the 2024-2025 rules; see ref_modern.h. Every formula is
 * the "equations" text of the golden case named above it. */
#include "ref_modern.h"

#include <math.h>
#include <stdlib.h>

static double eff_grad(double g, double grad_scale, int maximize)
{
    double s = grad_scale == 0.0 ? 1.0 : grad_scale;
    double x = g / s;
    return maximize ? -x : x;
}

void ref_sf_init(ref_sf_scalars *s)
{
    s->lr_max = -1.0;
    s->weight_sum = 0.0;
}

/* schedule_free_adamw / schedule_free_sgd: lr_t = lr·(t <= warmup ? t/warmup : 1);
   lr_max = max(lr_max, lr_t); w_t = t^r·lr_max^weight_lr_power; W += w_t; c = w_t/W. */
double ref_sf_advance(const clopt_hparams *hp, uint64_t t, ref_sf_scalars *s, double *lr_t)
{
    double lr = hp->lr;
    if (hp->warmup_steps > 0 && t <= hp->warmup_steps)
        lr = hp->lr * (double)t / (double)hp->warmup_steps;
    if (lr > s->lr_max)
        s->lr_max = lr;
    double w = pow((double)t, hp->r) * pow(s->lr_max, hp->weight_lr_power);
    s->weight_sum += w;
    if (lr_t)
        *lr_t = lr;
    return s->weight_sum != 0.0 ? w / s->weight_sum : 0.0;
}

/* schedule_free_adamw: v = β2 v + (1-β2) g²; d = sqrt(v/(1-β2^t)) + eps; u = g/d
   (+ wd·y); y = lerp(y, z, c); y += lr_t(β1(1-c) - 1)u; z -= lr_t u. */
void ref_sf_adamw_step(const clopt_hparams *hp, uint64_t t, size_t n, double *y,
                       const double *grad, double *state[CLOPT_MAX_STATE], ref_sf_scalars *s,
                       double grad_scale)
{
    double *z = state[0], *v = state[1];
    double lr_t;
    double c = ref_sf_advance(hp, t, s, &lr_t);
    double bc2 = 1.0 - pow(hp->beta2, (double)t);
    for (size_t i = 0; i < n; i++) {
        if (t == 1)
            z[i] = y[i];
        double g = eff_grad(grad[i], grad_scale, 0);
        v[i] = hp->beta2 * v[i] + (1.0 - hp->beta2) * g * g;
        double d = sqrt(v[i] / bc2) + hp->eps;
        double u = g / d;
        if (hp->weight_decay != 0.0)
            u += hp->weight_decay * y[i];
        double yy = y[i] + c * (z[i] - y[i]);
        y[i] = yy + lr_t * (hp->beta1 * (1.0 - c) - 1.0) * u;
        z[i] -= lr_t * u;
    }
}

/* schedule_free_sgd: g += wd·y; y = lerp(y, z, c); y += lr_t(β(1-c) - 1)g; z -= lr_t g. */
void ref_sf_sgd_step(const clopt_hparams *hp, uint64_t t, size_t n, double *y,
                     const double *grad, double *state[CLOPT_MAX_STATE], ref_sf_scalars *s,
                     double grad_scale)
{
    double *z = state[0];
    double lr_t;
    double c = ref_sf_advance(hp, t, s, &lr_t);
    for (size_t i = 0; i < n; i++) {
        if (t == 1)
            z[i] = y[i];
        double g = eff_grad(grad[i], grad_scale, 0) + hp->weight_decay * y[i];
        double yy = y[i] + c * (z[i] - y[i]);
        y[i] = yy + lr_t * (hp->momentum * (1.0 - c) - 1.0) * g;
        z[i] -= lr_t * g;
    }
}

void ref_sf_eval(size_t n, double beta, double *p, const double *z)
{
    for (size_t i = 0; i < n; i++)
        p[i] = p[i] + (1.0 - 1.0 / beta) * (z[i] - p[i]);
}

void ref_sf_train(size_t n, double beta, double *p, const double *z)
{
    for (size_t i = 0; i < n; i++)
        p[i] = p[i] + (1.0 - beta) * (z[i] - p[i]);
}

/* adopt: s = t-1; g (maximize, L2 unless decouple); t = 1: v = g² only. Else decoupled
   decay; d = max(sqrt(v), eps); u = clip(g/d, ±s^ce) (ce 0: no clipping); m = lerp(m, u,
   1-β1); θ -= lr m; v = β2 v + (1-β2) g² after θ. */
void ref_adopt_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                    const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale)
{
    double *m = state[0], *v = state[1];
    double s = (double)(t - 1);
    double bound = pow(s, hp->clip_exponent);
    for (size_t i = 0; i < n; i++) {
        double g = eff_grad(grad[i], grad_scale, hp->maximize);
        if (hp->weight_decay != 0.0 && !hp->decouple)
            g += hp->weight_decay * param[i];
        if (t == 1) {
            v[i] = g * g;
            continue;
        }
        if (hp->weight_decay != 0.0 && hp->decouple)
            param[i] -= hp->lr * hp->weight_decay * param[i];
        double d = fmax(sqrt(v[i]), hp->eps);
        double u = g / d;
        if (hp->clip_exponent != 0.0) {
            if (u > bound) u = bound;
            if (u < -bound) u = -bound;
        }
        m[i] = m[i] + (1.0 - hp->beta1) * (u - m[i]);
        param[i] -= hp->lr * m[i];
        v[i] = hp->beta2 * v[i] + (1.0 - hp->beta2) * g * g;
    }
}

/* ademamix: alpha_t = t < warmup ? t/warmup·alpha : alpha. */
double ref_ademamix_alpha(const clopt_hparams *hp, uint64_t t)
{
    if (hp->alpha_warmup > 0 && t < hp->alpha_warmup)
        return (double)t / (double)hp->alpha_warmup * hp->alpha;
    return hp->alpha;
}

/* f(b) = ln(0.5)/ln(b + 1e-8) - 1; f_inv(x) = 0.5^(1/(x+1)); β3_t = f_inv((1-a)f(β1) +
   a f(β3)) with a = t/warmup while t < warmup. */
double ref_ademamix_beta3(const clopt_hparams *hp, uint64_t t)
{
    if (hp->beta3_warmup > 0 && t < hp->beta3_warmup) {
        double a = (double)t / (double)hp->beta3_warmup;
        double f1 = log(0.5) / log(hp->beta1 + 1e-8) - 1.0;
        double f3 = log(0.5) / log(hp->beta3 + 1e-8) - 1.0;
        double x = (1.0 - a) * f1 + a * f3;
        return pow(0.5, 1.0 / (x + 1.0));
    }
    return hp->beta3;
}

/* ademamix: m1, m2 (β3_t), v EMAs; d = sqrt(v)/sqrt(1-β2^t) + eps;
   θ -= lr((m1/(1-β1^t) + α_t m2)/d + wd θ). */
void ref_ademamix_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                       const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale)
{
    double *m1 = state[0], *m2 = state[1], *v = state[2];
    double a = ref_ademamix_alpha(hp, t), b3 = ref_ademamix_beta3(hp, t);
    double bc1 = 1.0 - pow(hp->beta1, (double)t), bc2 = 1.0 - pow(hp->beta2, (double)t);
    for (size_t i = 0; i < n; i++) {
        double g = eff_grad(grad[i], grad_scale, 0);
        m1[i] = hp->beta1 * m1[i] + (1.0 - hp->beta1) * g;
        m2[i] = b3 * m2[i] + (1.0 - b3) * g;
        v[i] = hp->beta2 * v[i] + (1.0 - hp->beta2) * g * g;
        double d = sqrt(v[i]) / sqrt(bc2) + hp->eps;
        double u = (m1[i] / bc1 + a * m2[i]) / d + hp->weight_decay * param[i];
        param[i] -= hp->lr * u;
    }
}

/* cautious_adamw (C-Optim foreach=False): [AdamW: θ -= lr·wd·θ first | Adam: g += wd θ];
   m, v EMAs; d = sqrt(v) + eps; s = lr·sqrt(1-β2^t)/(1-β1^t); mask = m·g > 0;
   φ = mask/max(mean(mask), 1e-3); θ -= s·m·φ/d. */
double ref_cautious_adam_step(const clopt_hparams *hp, int adamw, uint64_t t, size_t n,
                              double *param, const double *grad,
                              double *state[CLOPT_MAX_STATE], double grad_scale)
{
    double *m = state[0], *v = state[1];
    double cnt = 0.0;
    double *g = (double *)malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) {
        g[i] = eff_grad(grad[i], grad_scale, hp->maximize);
        if (adamw) {
            if (hp->weight_decay != 0.0)
                param[i] -= hp->lr * hp->weight_decay * param[i];
        } else {
            g[i] += hp->weight_decay * param[i];
        }
        m[i] = hp->beta1 * m[i] + (1.0 - hp->beta1) * g[i];
        v[i] = hp->beta2 * v[i] + (1.0 - hp->beta2) * g[i] * g[i];
        if (m[i] * g[i] > 0.0)
            cnt += 1.0;
    }
    double mean = cnt / (double)n;
    double scale = 1.0 / fmax(mean, 1e-3);
    double s = hp->lr * sqrt(1.0 - pow(hp->beta2, (double)t)) / (1.0 - pow(hp->beta1, (double)t));
    for (size_t i = 0; i < n; i++) {
        double phi = m[i] * g[i] > 0.0 ? scale : 0.0;
        param[i] -= s * (m[i] * phi) / (sqrt(v[i]) + hp->eps);
    }
    free(g);
    return mean;
}

/* Cautious Lion, kyleliang919/C-Optim c_lion.py (2c0517c) update_fn: θ -= lr·wd·θ;
   c = β1 m + (1-β1) g; mask = sign(c)·g > 0; mask *= numel / (mask.sum() + 1);
   θ -= lr·sign(c)·mask; m = β2 m + (1-β2) g. Returns the mask's mean. */
double ref_cautious_lion_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                              const double *grad, double *state[CLOPT_MAX_STATE],
                              double grad_scale)
{
    (void)t;
    double *m = state[0];
    double cnt = 0.0;
    for (size_t i = 0; i < n; i++) {
        double g = eff_grad(grad[i], grad_scale, hp->maximize);
        double c = hp->beta1 * m[i] + (1.0 - hp->beta1) * g;
        if (c * g > 0.0)
            cnt += 1.0;
    }
    double scale = (double)n / (cnt + 1.0);
    for (size_t i = 0; i < n; i++) {
        double g = eff_grad(grad[i], grad_scale, hp->maximize);
        double c = hp->beta1 * m[i] + (1.0 - hp->beta1) * g;
        double phi = c * g > 0.0 ? scale : 0.0;
        double sg = c > 0.0 ? 1.0 : (c < 0.0 ? -1.0 : 0.0);
        param[i] -= hp->lr * hp->weight_decay * param[i];
        param[i] -= hp->lr * sg * phi;
        m[i] = hp->beta2 * m[i] + (1.0 - hp->beta2) * g;
    }
    return cnt / (double)n;
}

/* stable_adamw: β̂ = β(1-β^(t-1))/(1-β^t); v, u EMAs with β̂; d = sqrt(u) + eps;
   RMS = sqrt(mean(g²/max(u, eps²))) with the new u; η = lr/max(1, RMS/clip);
   θ = θ(1 - lr·wd) - η v/d. */
double ref_stable_adamw_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                             const double *grad, double *state[CLOPT_MAX_STATE],
                             double grad_scale)
{
    double *v = state[0], *u = state[1];
    double td = (double)t;
    double b1 = hp->beta1 * (1.0 - pow(hp->beta1, td - 1.0)) / (1.0 - pow(hp->beta1, td));
    double b2 = hp->beta2 * (1.0 - pow(hp->beta2, td - 1.0)) / (1.0 - pow(hp->beta2, td));
    double sum = 0.0, e2 = hp->eps * hp->eps;
    for (size_t i = 0; i < n; i++) {
        double g = eff_grad(grad[i], grad_scale, 0);
        v[i] = b1 * v[i] + (1.0 - b1) * g;
        u[i] = b2 * u[i] + (1.0 - b2) * g * g;
        sum += g * g / fmax(u[i], e2);
    }
    double rms = sqrt(sum / (double)n);
    double eta = hp->lr / fmax(1.0, rms / hp->clip_threshold);
    for (size_t i = 0; i < n; i++)
        param[i] = param[i] * (1.0 - hp->lr * hp->weight_decay) -
                   eta * v[i] / (sqrt(u[i]) + hp->eps);
    return rms;
}
