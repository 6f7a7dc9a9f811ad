/* SPDX-License-Identifier: MIT */
/*
 * Scalar double-precision references of clopt's rules. See ref.h.
 *
 * Every rule is transcribed from the "equations" field of the matching golden case
 * (tests/data/golden/<case>/meta.json) and the conventions in tests/data/golden/README.md:
 *
 *   g = grad/grad_scale; g = maximize ? -g : g; then (L2 rules) g += weight_decay*θ.
 *
 * Decoupled decay (AdamW, AdaMod, Lion, Sophia) multiplies θ before the update. Step
 * dependent factors are computed here in double, as the library's host code does.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------- */
/* Defaults and state layout                                                          */
/* ---------------------------------------------------------------------------------- */

void ref_hparams_default(clopt_rule rule, clopt_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    switch (rule) {
    case CLOPT_SGD:
        hp->lr = 1e-2; /* torch has no default lr for SGD */
        break;
    case CLOPT_ADAM:
    case CLOPT_ADAMW:
        hp->lr = 1e-3;
        hp->beta1 = 0.9;
        hp->beta2 = 0.999;
        hp->eps = 1e-8;
        hp->weight_decay = rule == CLOPT_ADAMW ? 1e-2 : 0.0;
        break;
    case CLOPT_ADAGRAD:
        hp->lr = 1e-2;
        hp->eps = 1e-10;
        break;
    case CLOPT_ADADELTA:
        hp->lr = 1.0;
        hp->rho = 0.9;
        hp->eps = 1e-6;
        break;
    case CLOPT_RMSPROP:
        hp->lr = 1e-2;
        hp->alpha = 0.99;
        hp->eps = 1e-8;
        break;
    case CLOPT_ADAMAX:
        hp->lr = 2e-3;
        hp->beta1 = 0.9;
        hp->beta2 = 0.999;
        hp->eps = 1e-8;
        break;
    case CLOPT_NADAM:
        hp->lr = 2e-3;
        hp->beta1 = 0.9;
        hp->beta2 = 0.999;
        hp->eps = 1e-8;
        hp->momentum_decay = 4e-3;
        break;
    case CLOPT_RADAM:
    case CLOPT_DIFFGRAD:
        hp->lr = 1e-3;
        hp->beta1 = 0.9;
        hp->beta2 = 0.999;
        hp->eps = 1e-8;
        break;
    case CLOPT_ADAMOD:
        hp->lr = 1e-3;
        hp->beta1 = 0.9;
        hp->beta2 = 0.999;
        hp->beta3 = 0.999;
        hp->eps = 1e-8;
        break;
    case CLOPT_LION:
        hp->lr = 1e-4;
        hp->beta1 = 0.9;
        hp->beta2 = 0.99;
        break;
    case CLOPT_SOPHIA:
        hp->lr = 1e-4;
        hp->beta1 = 0.965;
        hp->beta2 = 0.99;
        hp->rho = 0.04;
        hp->bs = 5120;
        hp->weight_decay = 0.1;
        hp->eps = 1e-15;
        hp->hess_interval = 10;
        break;
    default:
        break;
    }
}

/* Names of the state tensors present for rule/hp, in clopt order. */
static size_t state_names(clopt_rule rule, const clopt_hparams *hp, const char *names[CLOPT_MAX_STATE])
{
    size_t k = 0;
    switch (rule) {
    case CLOPT_SGD:
        if (hp->momentum > 0) names[k++] = "momentum_buffer";
        break;
    case CLOPT_ADAM:
    case CLOPT_ADAMW:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        if (hp->amsgrad) names[k++] = "max_exp_avg_sq";
        break;
    case CLOPT_ADAGRAD:
        names[k++] = "sum";
        break;
    case CLOPT_ADADELTA:
        names[k++] = "square_avg";
        names[k++] = "acc_delta";
        break;
    case CLOPT_RMSPROP:
        names[k++] = "square_avg";
        if (hp->momentum > 0) names[k++] = "momentum_buffer";
        if (hp->centered) names[k++] = "grad_avg";
        break;
    case CLOPT_ADAMAX:
        names[k++] = "exp_avg";
        names[k++] = "exp_inf";
        break;
    case CLOPT_NADAM:
    case CLOPT_RADAM:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        break;
    case CLOPT_ADAMOD:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        names[k++] = "exp_avg_lr";
        break;
    case CLOPT_DIFFGRAD:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        names[k++] = "previous_grad";
        break;
    case CLOPT_LION:
        names[k++] = "exp_avg";
        break;
    case CLOPT_SOPHIA:
        names[k++] = "exp_avg";
        names[k++] = "hessian";
        break;
    default:
        break;
    }
    return k;
}

size_t ref_state_count(clopt_rule rule, const clopt_hparams *hp)
{
    const char *names[CLOPT_MAX_STATE];
    return state_names(rule, hp, names);
}

const char *ref_state_name(clopt_rule rule, const clopt_hparams *hp, size_t index)
{
    const char *names[CLOPT_MAX_STATE];
    size_t k = state_names(rule, hp, names);
    return index < k ? names[index] : NULL;
}

double ref_state_init(clopt_rule rule, const clopt_hparams *hp, size_t index)
{
    if (rule == CLOPT_ADAGRAD && index == 0) return hp->initial_accumulator_value;
    return 0.0;
}

double ref_nadam_mu(const clopt_hparams *hp, uint64_t t)
{
    return hp->beta1 * (1.0 - 0.5 * pow(0.96, (double)t * hp->momentum_decay));
}

double ref_hparam_coeff_error(clopt_rule rule, const clopt_hparams *hp)
{
    double c[4];
    size_t k = 0;
    switch (rule) {
    case CLOPT_SGD:
        c[k++] = hp->momentum;
        c[k++] = hp->dampening;
        break;
    case CLOPT_ADAGRAD:
        break;
    case CLOPT_ADADELTA:
        c[k++] = hp->rho;
        break;
    case CLOPT_RMSPROP:
        c[k++] = hp->alpha;
        c[k++] = hp->momentum;
        break;
    case CLOPT_ADAMOD:
        c[k++] = hp->beta3;
        c[k++] = hp->beta1;
        c[k++] = hp->beta2;
        break;
    default:
        c[k++] = hp->beta1;
        c[k++] = hp->beta2;
        break;
    }
    double worst = 0.0;
    for (size_t i = 0; i < k; i++) {
        if (!(c[i] < 1.0)) continue;
        double e = fabs((double)(float)c[i] - c[i]) / (1.0 - c[i]);
        if (e > worst) worst = e;
    }
    return worst;
}

/* ---------------------------------------------------------------------------------- */
/* Rules                                                                              */
/* ---------------------------------------------------------------------------------- */

static double sgn(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); }

/* g = grad/grad_scale, negated when maximizing. */
static double eff_grad(const clopt_hparams *hp, double grad, double gs)
{
    double g = grad / gs;
    return hp->maximize ? -g : g;
}

void ref_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, double *param,
              const double *grad, double *state[CLOPT_MAX_STATE], const double *hess,
              double *mu_product, double grad_scale)
{
    const double gs = grad_scale == 0.0 ? 1.0 : grad_scale;
    const double td = (double)t;
    const double lr = hp->lr, b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, wd = hp->weight_decay;
    const double bc1 = 1.0 - pow(b1, td), bc2 = 1.0 - pow(b2, td);

    switch (rule) {
    case CLOPT_SGD: {
        /* g += wd*θ; step 1: b = g; else b = momentum*b + (1-dampening)*g;
           nesterov: d = g + momentum*b; θ -= lr*d */
        double *b = state[0];
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            double d = g;
            if (hp->momentum > 0) {
                b[i] = (t == 1) ? g : hp->momentum * b[i] + (1.0 - hp->dampening) * g;
                d = hp->nesterov ? g + hp->momentum * b[i] : b[i];
            }
            param[i] -= lr * d;
        }
        break;
    }
    case CLOPT_ADAM:
    case CLOPT_ADAMW: {
        /* AdamW: θ *= 1 - lr*wd first; Adam: g += wd*θ. m, v EMAs; amsgrad: vmax = max(vmax, v);
           θ -= (lr/bc1) * m / (sqrt(v or vmax)/sqrt(bc2) + eps) */
        double *m = state[0], *v = state[1], *vmax = hp->amsgrad ? state[2] : NULL;
        const double sbc2 = sqrt(bc2);
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs);
            if (rule == CLOPT_ADAMW)
                param[i] *= 1.0 - lr * wd;
            else if (wd != 0.0)
                g += wd * param[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double vv = v[i];
            if (vmax) {
                if (vv > vmax[i]) vmax[i] = vv;
                vv = vmax[i];
            }
            param[i] -= (lr / bc1) * m[i] / (sqrt(vv) / sbc2 + eps);
        }
        break;
    }
    case CLOPT_ADAGRAD: {
        /* clr = lr/(1+(t-1)*lr_decay); s += g*g; θ -= clr*g/(sqrt(s)+eps) */
        double *s = state[0];
        const double clr = lr / (1.0 + (td - 1.0) * hp->lr_decay);
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            s[i] += g * g;
            param[i] -= clr * g / (sqrt(s[i]) + eps);
        }
        break;
    }
    case CLOPT_ADADELTA: {
        /* v = rho*v + (1-rho)*g²; δ = sqrt(u+eps)/sqrt(v+eps)*g; u = rho*u + (1-rho)*δ²;
           θ -= lr*δ */
        double *v = state[0], *u = state[1];
        const double rho = hp->rho;
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            v[i] = rho * v[i] + (1.0 - rho) * g * g;
            double delta = sqrt(u[i] + eps) / sqrt(v[i] + eps) * g;
            u[i] = rho * u[i] + (1.0 - rho) * delta * delta;
            param[i] -= lr * delta;
        }
        break;
    }
    case CLOPT_RMSPROP: {
        /* v = α v + (1-α) g²; centered: a = α a + (1-α) g, d = sqrt(v - a²) + eps, else
           d = sqrt(v) + eps; momentum: b = μ b + g/d, θ -= lr*b; else θ -= lr*g/d */
        size_t k = 0;
        double *v = state[k++];
        double *b = hp->momentum > 0 ? state[k++] : NULL;
        double *a = hp->centered ? state[k++] : NULL;
        const double al = hp->alpha;
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            v[i] = al * v[i] + (1.0 - al) * g * g;
            double d;
            if (a) {
                a[i] = al * a[i] + (1.0 - al) * g;
                d = sqrt(v[i] - a[i] * a[i]) + eps;
            } else {
                d = sqrt(v[i]) + eps;
            }
            if (b) {
                b[i] = hp->momentum * b[i] + g / d;
                param[i] -= lr * b[i];
            } else {
                param[i] -= lr * g / d;
            }
        }
        break;
    }
    case CLOPT_ADAMAX: {
        /* m EMA; u = max(β2 u, |g| + eps); θ -= (lr/bc1) * m/u */
        double *m = state[0], *u = state[1];
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            u[i] = fmax(b2 * u[i], fabs(g) + eps);
            param[i] -= (lr / bc1) * m[i] / u[i];
        }
        break;
    }
    case CLOPT_NADAM: {
        /* Dozat / torch >= 2.0: P_t = P_{t-1} μ_t; d = sqrt(v/bc2) + eps;
           θ -= lr(1-μ_t)/(1-P_t) g/d + lr μ_{t+1}/(1 - P_t μ_{t+1}) m/d */
        double *m = state[0], *v = state[1];
        double prev = 1.0;
        if (mu_product)
            prev = *mu_product;
        else
            for (uint64_t j = 1; j < t; j++) prev *= ref_nadam_mu(hp, j);
        const double mu = ref_nadam_mu(hp, t), mu_next = ref_nadam_mu(hp, t + 1);
        const double P = prev * mu;
        const double c_g = lr * (1.0 - mu) / (1.0 - P);
        const double c_m = lr * mu_next / (1.0 - P * mu_next);
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double d = sqrt(v[i] / bc2) + eps;
            param[i] -= c_g * g / d + c_m * m[i] / d;
        }
        if (mu_product) *mu_product = P;
        break;
    }
    case CLOPT_RADAM: {
        /* ρ∞ = 2/(1-β2) - 1; ρ_t = ρ∞ - 2tβ2^t/bc2; ρ_t > 5: rectified adaptive step,
           else θ -= lr*m̂ */
        double *m = state[0], *v = state[1];
        const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
        const double rho_t = rho_inf - 2.0 * td * pow(b2, td) / bc2;
        const int rect = rho_t > 5.0;
        const double r = rect ? sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                     ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                              : 0.0;
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double mhat = m[i] / bc1;
            if (rect)
                param[i] -= lr * mhat * r * sqrt(bc2) / (sqrt(v[i]) + eps);
            else
                param[i] -= lr * mhat;
        }
        break;
    }
    case CLOPT_ADAMOD: {
        /* d = sqrt(v) + eps; step = lr*sqrt(bc2)/bc1; θ -= wd*lr*θ; η = step/d;
           s = β3 s + (1-β3) η; η = min(η, s); θ -= η m */
        double *m = state[0], *v = state[1], *s = state[2];
        const double b3 = hp->beta3;
        const double step = lr * sqrt(bc2) / bc1;
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs);
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double d = sqrt(v[i]) + eps;
            if (wd != 0.0) param[i] -= wd * lr * param[i];
            double eta = step / d;
            s[i] = b3 * s[i] + (1.0 - b3) * eta;
            eta = fmin(eta, s[i]);
            param[i] -= eta * m[i];
        }
        break;
    }
    case CLOPT_DIFFGRAD: {
        /* g += wd θ; d = sqrt(v) + eps; ξ = 1/(1 + exp(-|p - g|)); p = g;
           θ -= lr*sqrt(bc2)/bc1 * ξ m / d */
        double *m = state[0], *v = state[1], *p = state[2];
        const double step = lr * sqrt(bc2) / bc1;
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs) + wd * param[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            double d = sqrt(v[i]) + eps;
            double xi = 1.0 / (1.0 + exp(-fabs(p[i] - g)));
            p[i] = g;
            param[i] -= step * xi * m[i] / d;
        }
        break;
    }
    case CLOPT_LION: {
        /* θ *= 1 - lr wd; c = β1 m + (1-β1) g; θ -= lr sign(c); m = β2 m + (1-β2) g */
        double *m = state[0];
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs);
            param[i] *= 1.0 - lr * wd;
            double c = b1 * m[i] + (1.0 - b1) * g;
            param[i] -= lr * sgn(c);
            m[i] = b2 * m[i] + (1.0 - b2) * g;
        }
        break;
    }
    case CLOPT_SOPHIA: {
        /* θ *= 1 - lr wd; m = β1 m + (1-β1) g; θ -= lr sign(m) min(|m|/(rho bs h + eps), 1);
           then (estimate given) h = β2 h + (1-β2) ĥ */
        double *m = state[0], *h = state[1];
        const double gamma = hp->rho * hp->bs;
        for (size_t i = 0; i < n; i++) {
            double g = eff_grad(hp, grad[i], gs);
            param[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            double ratio = fmin(fabs(m[i]) / (gamma * h[i] + eps), 1.0);
            param[i] -= lr * sgn(m[i]) * ratio;
            if (hess) h[i] = b2 * h[i] + (1.0 - b2) * hess[i];
        }
        break;
    }
    default:
        break;
    }
}

/* ---------------------------------------------------------------------------------- */
/* Optimizer-level rules                                                              */
/* ---------------------------------------------------------------------------------- */

static double rms(size_t n, const double *x)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s / (double)n);
}

void ref_adafactor_step(const clopt_hparams *hp, uint64_t t, size_t B, size_t R, size_t C,
                        size_t n, double *param, const double *grad,
                        double *state[CLOPT_MAX_STATE], double grad_scale)
{
    /* ρ_t = relative_step ? min(warmup_init ? 1e-6 t : 1e-2, 1/sqrt(t)) : lr;
       α_t = scale_parameter ? max(eps2, RMS(θ_{t-1}))·ρ_t : ρ_t; β2t = 1 - t^decay_rate;
       q = g² + eps1; factored: row/col EMAs of the row/column means of q,
       u = g / sqrt(row/mean(row)) / sqrt(col); else V EMA of q, u = g/sqrt(V);
       u /= max(1, RMS(u)/clip_threshold); u *= α_t; use_beta1: M = β1 M + (1-β1) u, u = M;
       θ -= wd·α_t·θ; θ -= u */
    const double gs = grad_scale == 0.0 ? 1.0 : grad_scale;
    const double td = (double)t;
    double rho = hp->lr;
    if (hp->relative_step) rho = fmin(hp->warmup_init ? 1e-6 * td : 1e-2, 1.0 / sqrt(td));
    const double alpha = hp->scale_parameter ? fmax(hp->eps2, rms(n, param)) * rho : rho;
    const double b2t = 1.0 - pow(td, hp->decay_rate);
    const int factored = R > 0;
    double *m = hp->use_beta1 ? state[factored ? 2 : 1] : NULL;
    double *u = malloc(n * sizeof *u);
    if (!u) return;
    for (size_t i = 0; i < n; i++) u[i] = eff_grad(hp, grad[i], gs);
    if (factored) {
        double *row = state[0], *col = state[1];
        for (size_t b = 0; b < B; b++) {
            const double *g = u + b * R * C;
            double *rb = row + b * R, *cb = col + b * C;
            for (size_t r = 0; r < R; r++) {
                double s = 0.0;
                for (size_t c = 0; c < C; c++) s += g[r * C + c] * g[r * C + c] + hp->eps;
                rb[r] = b2t * rb[r] + (1.0 - b2t) * s / (double)C;
            }
            for (size_t c = 0; c < C; c++) {
                double s = 0.0;
                for (size_t r = 0; r < R; r++) s += g[r * C + c] * g[r * C + c] + hp->eps;
                cb[c] = b2t * cb[c] + (1.0 - b2t) * s / (double)R;
            }
        }
        for (size_t b = 0; b < B; b++) {
            double *g = u + b * R * C;
            const double *rb = row + b * R, *cb = col + b * C;
            double rmean = 0.0;
            for (size_t r = 0; r < R; r++) rmean += rb[r];
            rmean /= (double)R;
            for (size_t r = 0; r < R; r++)
                for (size_t c = 0; c < C; c++)
                    g[r * C + c] = g[r * C + c] / sqrt(rb[r] / rmean) / sqrt(cb[c]);
        }
    } else {
        double *v = state[0];
        for (size_t i = 0; i < n; i++) {
            v[i] = b2t * v[i] + (1.0 - b2t) * (u[i] * u[i] + hp->eps);
            u[i] /= sqrt(v[i]);
        }
    }
    const double clip = fmax(1.0, rms(n, u) / hp->clip_threshold);
    for (size_t i = 0; i < n; i++) {
        double d = u[i] / clip * alpha;
        if (m) {
            m[i] = hp->beta1 * m[i] + (1.0 - hp->beta1) * d;
            d = m[i];
        }
        if (hp->weight_decay != 0.0) param[i] -= hp->weight_decay * alpha * param[i];
        param[i] -= d;
    }
    free(u);
}

void ref_lamb_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                   const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale)
{
    /* m = β1 m + (grad_averaging ? 1-β1 : 1) g; v = β2 v + (1-β2) g²; bias correction
       optional; r = m̂/(sqrt(v̂)+eps) + wd·θ; trust = ‖θ‖/‖r‖ (1 when either is 0);
       θ -= lr·trust·r */
    const double gs = grad_scale == 0.0 ? 1.0 : grad_scale;
    const double b1 = hp->beta1, b2 = hp->beta2, td = (double)t;
    const double bc1 = hp->bias_correction ? 1.0 - pow(b1, td) : 1.0;
    const double bc2 = hp->bias_correction ? 1.0 - pow(b2, td) : 1.0;
    double *m = state[0], *v = state[1];
    double *r = malloc(n * sizeof *r);
    if (!r) return;
    double wn = 0.0, rn = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double g = eff_grad(hp, grad[i], gs);
        m[i] = b1 * m[i] + (hp->grad_averaging ? 1.0 - b1 : 1.0) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        r[i] = (m[i] / bc1) / (sqrt(v[i] / bc2) + hp->eps) + hp->weight_decay * param[i];
        wn += param[i] * param[i];
        rn += r[i] * r[i];
    }
    wn = sqrt(wn);
    rn = sqrt(rn);
    const double trust = wn > 0.0 && rn > 0.0 ? wn / rn : 1.0;
    for (size_t i = 0; i < n; i++) param[i] -= hp->lr * trust * r[i];
    free(r);
}

void ref_lamb_sums(const clopt_hparams *hp, uint64_t t, size_t n, const double *param,
                   const double *grad, double *const state[CLOPT_MAX_STATE], double grad_scale,
                   double sums[2])
{
    const double gs = grad_scale == 0.0 ? 1.0 : grad_scale;
    const double b1 = hp->beta1, b2 = hp->beta2, td = (double)t;
    const double bc1 = hp->bias_correction ? 1.0 - pow(b1, td) : 1.0;
    const double bc2 = hp->bias_correction ? 1.0 - pow(b2, td) : 1.0;
    sums[0] = sums[1] = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double g = eff_grad(hp, grad[i], gs);
        const double m = b1 * state[0][i] + (hp->grad_averaging ? 1.0 - b1 : 1.0) * g;
        const double v = b2 * state[1][i] + (1.0 - b2) * g * g;
        const double r = (m / bc1) / (sqrt(v / bc2) + hp->eps) + hp->weight_decay * param[i];
        sums[0] += param[i] * param[i];
        sums[1] += r * r;
    }
}

void ref_ranger_step(const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                     const double *grad, double *state[CLOPT_MAX_STATE], double grad_scale)
{
    /* m, v EMAs; ρ∞ = 2/(1-β2) - 1, ρ_t = ρ∞ - 2tβ2^t/(1-β2^t); rectified when
       ρ_t > n_sma_threshold: step = sqrt((1-β2^t)(ρ_t-4)/(ρ∞-4)(ρ_t-2)/ρ_t·ρ∞/(ρ∞-2))/(1-β1^t),
       θ -= step·lr·m/(sqrt(v)+eps); else θ -= lr·m/(1-β1^t); decoupled decay θ -= wd·lr·θ
       first; every lookahead_k-th step φ += α(θ - φ), θ = φ */
    const double gs = grad_scale == 0.0 ? 1.0 : grad_scale;
    const double b1 = hp->beta1, b2 = hp->beta2, td = (double)t;
    const double bc1 = 1.0 - pow(b1, td), bc2 = 1.0 - pow(b2, td);
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * td * pow(b2, td) / bc2;
    const int rect = rho_t > hp->n_sma_threshold;
    const double step = rect ? sqrt(bc2 * (rho_t - 4.0) / (rho_inf - 4.0) * (rho_t - 2.0) /
                                    rho_t * rho_inf / (rho_inf - 2.0)) / bc1
                             : 1.0 / bc1;
    double *m = state[0], *v = state[1], *phi = state[2];
    for (size_t i = 0; i < n; i++) {
        const double g = eff_grad(hp, grad[i], gs);
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        if (hp->weight_decay != 0.0) param[i] -= hp->weight_decay * hp->lr * param[i];
        if (rect)
            param[i] -= step * hp->lr * m[i] / (sqrt(v[i]) + hp->eps);
        else
            param[i] -= step * hp->lr * m[i];
    }
    if (hp->lookahead_k && t % hp->lookahead_k == 0)
        for (size_t i = 0; i < n; i++) {
            phi[i] += hp->lookahead_alpha * (param[i] - phi[i]);
            param[i] = phi[i];
        }
}

double ref_clip_coef(double total_norm, double max_norm)
{
    if (!(max_norm > 0.0)) return 1.0;
    return fmin(1.0, max_norm / (total_norm + 1e-6));
}

void ref_hutchinson(size_t n, const double *u, const double *hvp, double *out)
{
    for (size_t i = 0; i < n; i++) out[i] = u[i] * hvp[i];
}

void ref_gnb(size_t n, const double *ghat, double batch_size, double *out)
{
    for (size_t i = 0; i < n; i++) out[i] = batch_size * ghat[i] * ghat[i];
}

/* ---------------------------------------------------------------------------------- */
/* Test data generator                                                                */
/* ---------------------------------------------------------------------------------- */

uint64_t ref_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ref_uniform(uint64_t *s) { return (double)(ref_splitmix64(s) >> 11) * 0x1.0p-53; }

double ref_normal(uint64_t *s)
{
    double u1 = ref_uniform(s), u2 = ref_uniform(s);
    if (u1 < 0x1.0p-60) u1 = 0x1.0p-60;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void ref_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1, n3 = (uint32_t)p0;
        c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    for (int i = 0; i < 4; i++)
        out[i] = c[i];
}

uint32_t ref_sr_value(uint64_t e, uint64_t seed, uint32_t stream, uint64_t step)
{
    const uint64_t q = e / 8;
    const uint32_t ctr[4] = {(uint32_t)q, (uint32_t)(q >> 32), (uint32_t)step, stream};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    ref_philox4x32_10(ctr, key, out);
    return (out[(e / 2) % 4] >> (16 * (e % 2))) & 0xFFFFu;
}
