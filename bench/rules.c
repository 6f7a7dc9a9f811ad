/* SPDX-License-Identifier: MIT */
/* clopt-bench: the rule table and the unfused chains.
 *
 * An unfused chain is the sequence of one-elementary-operation kernels that a framework
 * without fusion runs for one step (torch's single-tensor code path, one kernel per tensor
 * operation), each reading and writing whole arrays. Step-dependent scalars (bias
 * corrections, ...) are computed here in double and passed as float, as the library does. */
#include "bench.h"

#include <math.h>
#include <string.h>

/* ---- operations -------------------------------------------------------------------------- */

static const struct {
    const char *kernel;
    int arity;
} op_info[OP_KIND_COUNT] = {
    [OP_COPY] = {"op_copy", 1},   [OP_SCALE] = {"op_scale", 1}, [OP_ADDS] = {"op_adds", 1},
    [OP_AFFINE] = {"op_affine", 1}, [OP_AXPY] = {"op_axpy", 2}, [OP_MUL] = {"op_mul", 2},
    [OP_DIV] = {"op_div", 2},     [OP_MAX] = {"op_max", 2},     [OP_MIN] = {"op_min", 2},
    [OP_SQRT] = {"op_sqrt", 1},   [OP_ABS] = {"op_abs", 1},     [OP_SIGN] = {"op_sign", 1},
    [OP_EXP] = {"op_exp", 1},     [OP_RECIP] = {"op_recip", 1}, [OP_MINS] = {"op_mins", 1},
    [OP_MAXS] = {"op_maxs", 1},   [OP_CLAMP] = {"op_clamp", 1}, [OP_LERP] = {"op_lerp", 2},
};

const char *bench_op_kernel(bench_opkind k)
{
    return (unsigned)k < OP_KIND_COUNT ? op_info[k].kernel : "?";
}

int bench_op_arity(bench_opkind k) { return (unsigned)k < OP_KIND_COUNT ? op_info[k].arity : 0; }

size_t bench_chain_bytes(const bench_op *ops, size_t nops)
{
    size_t floats = 0;
    for (size_t i = 0; i < nops; i++) {
        int two = bench_op_arity(ops[i].kind) == 2 && ops[i].y != ops[i].x;
        floats += 1 + (size_t)two + 1; /* distinct inputs + the output */
    }
    return floats * sizeof(float);
}

int bench_chain_slots(const bench_op *ops, size_t nops)
{
    int top = 0;
    for (size_t i = 0; i < nops; i++) {
        int m = ops[i].d;
        if (ops[i].x > m)
            m = ops[i].x;
        if (ops[i].y > m)
            m = ops[i].y;
        if (m + 1 > top)
            top = m + 1;
    }
    return top;
}

/* ---- chain building ---------------------------------------------------------------------- */

typedef struct chain {
    bench_op *ops;
    size_t n, cap;
    int overflow;
} chain;

static void emit(chain *c, bench_opkind k, int d, int x, int y, double a, double b)
{
    if (c->n == c->cap) {
        c->overflow = 1;
        return;
    }
    bench_op *op = &c->ops[c->n++];
    op->kind = k;
    op->d = d;
    op->x = x;
    op->y = y;
    op->a = (float)a;
    op->b = (float)b;
}

static size_t finish(const chain *c) { return c->overflow ? 0 : c->n; }

/* The gradient as the rule sees it: maximize negates it, L2 weight decay adds wd*θ (both
   out of place into scratch slot `tmp`, as torch does). Returns the slot holding it. */
static int grad_slot(chain *c, const clopt_hparams *hp, int l2, int tmp)
{
    int g = BA_G;
    if (hp->maximize) {
        emit(c, OP_SCALE, tmp, g, -1, -1.0, 0.0);
        g = tmp;
    }
    if (l2 && hp->weight_decay != 0.0) {
        emit(c, OP_AXPY, tmp, g, BA_P, hp->weight_decay, 0.0);
        g = tmp;
    }
    return g;
}

/* torch.optim.SGD: b = momentum*b + (1-dampening)*g (b = g at step 1); nesterov. */
static size_t chain_sgd(const clopt_hparams *hp, uint64_t step, double mu_product,
                        bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    int g = grad_slot(&c, hp, 1, BA_T1);
    int d = g;
    if (hp->momentum > 0.0) {
        if (step == 1) {
            emit(&c, OP_COPY, BA_S0, g, -1, 0.0, 0.0);
        } else {
            emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->momentum, 0.0);
            emit(&c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->dampening, 0.0);
        }
        d = BA_S0;
        if (hp->nesterov) {
            emit(&c, OP_AXPY, BA_T0, g, BA_S0, hp->momentum, 0.0);
            d = BA_T0;
        }
    }
    emit(&c, OP_AXPY, BA_P, BA_P, d, -hp->lr, 0.0);
    return finish(&c);
}

/* Adam / AdamW: p *= 1-lr*wd (AdamW); m *= b1; m += (1-b1)*g; v *= b2; t = g*g;
   v += (1-b2)*t; [amsgrad: vmax = max(vmax, v)]; d = sqrt(v); d = d*c + eps; u = m/d;
   p -= step*u, with c = 1/sqrt(bc2), step = lr/bc1. */
static size_t chain_adam_common(const clopt_hparams *hp, uint64_t step, bench_op *ops,
                                size_t cap, int decoupled)
{
    chain c = {ops, 0, cap, 0};
    double t = (double)step;
    double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    if (decoupled && hp->weight_decay != 0.0)
        emit(&c, OP_SCALE, BA_P, BA_P, -1, 1.0 - hp->lr * hp->weight_decay, 0.0);
    int g = grad_slot(&c, hp, !decoupled, BA_T2);
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->beta1, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->beta1, 0.0);
    emit(&c, OP_SCALE, BA_S1, BA_S1, -1, hp->beta2, 0.0);
    emit(&c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S1, BA_S1, BA_T0, 1.0 - hp->beta2, 0.0);
    int v = BA_S1;
    if (hp->amsgrad) {
        emit(&c, OP_MAX, BA_S2, BA_S2, BA_S1, 0.0, 0.0);
        v = BA_S2;
    }
    emit(&c, OP_SQRT, BA_T1, v, -1, 0.0, 0.0);
    emit(&c, OP_AFFINE, BA_T1, BA_T1, -1, 1.0 / sqrt(bc2), hp->eps);
    emit(&c, OP_DIV, BA_T0, BA_S0, BA_T1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr / bc1, 0.0);
    return finish(&c);
}

static size_t chain_adam(const clopt_hparams *hp, uint64_t step, double mu_product,
                         bench_op *ops, size_t cap)
{
    (void)mu_product;
    return chain_adam_common(hp, step, ops, cap, 0);
}

static size_t chain_adamw(const clopt_hparams *hp, uint64_t step, double mu_product,
                          bench_op *ops, size_t cap)
{
    (void)mu_product;
    return chain_adam_common(hp, step, ops, cap, 1);
}

/* Adagrad: s += g*g; d = sqrt(s) + eps; u = g/d; p -= clr*u. */
static size_t chain_adagrad(const clopt_hparams *hp, uint64_t step, double mu_product,
                            bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double clr = hp->lr / (1.0 + (double)(step - 1) * hp->lr_decay);
    int g = grad_slot(&c, hp, 1, BA_T2);
    emit(&c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, BA_T0, 1.0, 0.0);
    emit(&c, OP_SQRT, BA_T1, BA_S0, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_DIV, BA_T0, g, BA_T1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -clr, 0.0);
    return finish(&c);
}

/* RMSprop (torch): v = a*v + (1-a)*g*g; [centered: ga = a*ga + (1-a)*g; v' = v - ga*ga];
   d = sqrt(v') + eps; momentum: b = mu*b + g/d, p -= lr*b; else p -= lr*g/d. */
static size_t chain_rmsprop(const clopt_hparams *hp, uint64_t step, double mu_product,
                            bench_op *ops, size_t cap)
{
    (void)step;
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    int g = grad_slot(&c, hp, 1, BA_T2);
    int mom = hp->momentum > 0.0 ? BA_S1 : -1;
    int ga = hp->centered ? (hp->momentum > 0.0 ? BA_S2 : BA_S1) : -1;
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->alpha, 0.0);
    emit(&c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, BA_T0, 1.0 - hp->alpha, 0.0);
    int v = BA_S0;
    if (ga >= 0) {
        emit(&c, OP_SCALE, ga, ga, -1, hp->alpha, 0.0);
        emit(&c, OP_AXPY, ga, ga, g, 1.0 - hp->alpha, 0.0);
        emit(&c, OP_MUL, BA_T0, ga, ga, 0.0, 0.0);
        emit(&c, OP_AXPY, BA_T1, BA_S0, BA_T0, -1.0, 0.0);
        v = BA_T1;
    }
    emit(&c, OP_SQRT, BA_T1, v, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_DIV, BA_T0, g, BA_T1, 0.0, 0.0);
    if (mom >= 0) {
        emit(&c, OP_SCALE, mom, mom, -1, hp->momentum, 0.0);
        emit(&c, OP_AXPY, mom, mom, BA_T0, 1.0, 0.0);
        emit(&c, OP_AXPY, BA_P, BA_P, mom, -hp->lr, 0.0);
    } else {
        emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr, 0.0);
    }
    return finish(&c);
}

/* Lion: p *= 1-lr*wd; c = b1*m + (1-b1)*g; p -= lr*sign(c); m = b2*m + (1-b2)*g. */
static size_t chain_lion(const clopt_hparams *hp, uint64_t step, double mu_product,
                         bench_op *ops, size_t cap)
{
    (void)step;
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    if (hp->weight_decay != 0.0)
        emit(&c, OP_SCALE, BA_P, BA_P, -1, 1.0 - hp->lr * hp->weight_decay, 0.0);
    int g = grad_slot(&c, hp, 0, BA_T2);
    emit(&c, OP_SCALE, BA_T0, BA_S0, -1, hp->beta1, 0.0);
    emit(&c, OP_AXPY, BA_T0, BA_T0, g, 1.0 - hp->beta1, 0.0);
    emit(&c, OP_SIGN, BA_T0, BA_T0, -1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr, 0.0);
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->beta2, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->beta2, 0.0);
    return finish(&c);
}

/* Adadelta (torch 1.13): v = rho*v + (1-rho)*g*g; std = sqrt(v + eps);
   delta = sqrt(u + eps) / std * g; u = rho*u + (1-rho)*delta*delta; p -= lr*delta. */
static size_t chain_adadelta(const clopt_hparams *hp, uint64_t step, double mu_product,
                             bench_op *ops, size_t cap)
{
    (void)step;
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    int g = grad_slot(&c, hp, 1, BA_T2);
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->rho, 0.0);
    emit(&c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, BA_T0, 1.0 - hp->rho, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_S0, -1, hp->eps, 0.0);
    emit(&c, OP_SQRT, BA_T1, BA_T1, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T0, BA_S1, -1, hp->eps, 0.0);
    emit(&c, OP_SQRT, BA_T0, BA_T0, -1, 0.0, 0.0);
    emit(&c, OP_DIV, BA_T0, BA_T0, BA_T1, 0.0, 0.0);
    emit(&c, OP_MUL, BA_T0, BA_T0, g, 0.0, 0.0);
    emit(&c, OP_SCALE, BA_S1, BA_S1, -1, hp->rho, 0.0);
    emit(&c, OP_MUL, BA_T1, BA_T0, BA_T0, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S1, BA_S1, BA_T1, 1.0 - hp->rho, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr, 0.0);
    return finish(&c);
}

/* m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g (the Adam moments, 5 launches). */
static void emit_moments(chain *c, const clopt_hparams *hp, int g)
{
    emit(c, OP_SCALE, BA_S0, BA_S0, -1, hp->beta1, 0.0);
    emit(c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->beta1, 0.0);
    emit(c, OP_SCALE, BA_S1, BA_S1, -1, hp->beta2, 0.0);
    emit(c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(c, OP_AXPY, BA_S1, BA_S1, BA_T0, 1.0 - hp->beta2, 0.0);
}

/* Adamax (torch 1.13): u = max(b2*u, |g| + eps); p -= lr/bc1 * m/u. */
static size_t chain_adamax(const clopt_hparams *hp, uint64_t step, double mu_product,
                           bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double bc1 = 1.0 - pow(hp->beta1, (double)step);
    int g = grad_slot(&c, hp, 1, BA_T2);
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->beta1, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->beta1, 0.0);
    emit(&c, OP_SCALE, BA_S1, BA_S1, -1, hp->beta2, 0.0);
    emit(&c, OP_ABS, BA_T0, g, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T0, BA_T0, -1, hp->eps, 0.0);
    emit(&c, OP_MAX, BA_S1, BA_S1, BA_T0, 0.0, 0.0);
    emit(&c, OP_DIV, BA_T0, BA_S0, BA_S1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr / bc1, 0.0);
    return finish(&c);
}

/* NAdam (torch >= 2.0): d = sqrt(v/bc2) + eps; p -= cg*g/d; p -= cm*m/d. */
static size_t chain_nadam(const clopt_hparams *hp, uint64_t step, double mu_product,
                          bench_op *ops, size_t cap)
{
    chain c = {ops, 0, cap, 0};
    double t = (double)step;
    double mu = hp->beta1 * (1.0 - 0.5 * pow(0.96, t * hp->momentum_decay));
    double mu_next = hp->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * hp->momentum_decay));
    double prod = mu_product * mu, prod_next = prod * mu_next;
    double bc2 = 1.0 - pow(hp->beta2, t);
    int g = grad_slot(&c, hp, 1, BA_T2);
    emit_moments(&c, hp, g);
    emit(&c, OP_SCALE, BA_T1, BA_S1, -1, 1.0 / bc2, 0.0);
    emit(&c, OP_SQRT, BA_T1, BA_T1, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_DIV, BA_T0, g, BA_T1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr * (1.0 - mu) / (1.0 - prod), 0.0);
    emit(&c, OP_DIV, BA_T0, BA_S0, BA_T1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr * mu_next / (1.0 - prod_next), 0.0);
    return finish(&c);
}

/* RAdam (torch 1.13): rectified (rho_t > 5): p -= lr*r*sqrt(bc2)/bc1 * m/(sqrt(v)+eps);
   else p -= lr/bc1 * m. */
static size_t chain_radam(const clopt_hparams *hp, uint64_t step, double mu_product,
                          bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double t = (double)step;
    double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    double rho_inf = 2.0 / (1.0 - hp->beta2) - 1.0;
    double rho_t = rho_inf - 2.0 * t * pow(hp->beta2, t) / bc2;
    int g = grad_slot(&c, hp, 1, BA_T2);
    emit_moments(&c, hp, g);
    if (rho_t > 5.0) {
        double r = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                        ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
        emit(&c, OP_SQRT, BA_T1, BA_S1, -1, 0.0, 0.0);
        emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
        emit(&c, OP_DIV, BA_T0, BA_S0, BA_T1, 0.0, 0.0);
        emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr * r * sqrt(bc2) / bc1, 0.0);
    } else {
        emit(&c, OP_AXPY, BA_P, BA_P, BA_S0, -hp->lr / bc1, 0.0);
    }
    return finish(&c);
}

/* AdaMod (official code): p *= 1 - wd*lr; eta = step/(sqrt(v)+eps); s = b3*s + (1-b3)*eta;
   eta = min(eta, s); p -= eta*m. */
static size_t chain_adamod(const clopt_hparams *hp, uint64_t step, double mu_product,
                           bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double t = (double)step;
    double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    if (hp->weight_decay != 0.0)
        emit(&c, OP_SCALE, BA_P, BA_P, -1, 1.0 - hp->weight_decay * hp->lr, 0.0);
    int g = grad_slot(&c, hp, 0, BA_T2);
    emit_moments(&c, hp, g);
    emit(&c, OP_SQRT, BA_T1, BA_S1, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_RECIP, BA_T1, BA_T1, -1, hp->lr * sqrt(bc2) / bc1, 0.0);
    emit(&c, OP_SCALE, BA_S2, BA_S2, -1, hp->beta3, 0.0);
    emit(&c, OP_AXPY, BA_S2, BA_S2, BA_T1, 1.0 - hp->beta3, 0.0);
    emit(&c, OP_MIN, BA_T1, BA_T1, BA_S2, 0.0, 0.0);
    emit(&c, OP_MUL, BA_T1, BA_T1, BA_S0, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T1, -1.0, 0.0);
    return finish(&c);
}

/* diffGrad (v2 code): xi = 1/(1 + exp(-|prev - g|)); prev = g;
   p -= lr*sqrt(bc2)/bc1 * xi*m/(sqrt(v)+eps). */
static size_t chain_diffgrad(const clopt_hparams *hp, uint64_t step, double mu_product,
                             bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double t = (double)step;
    double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    int g = grad_slot(&c, hp, 1, BA_T2);
    emit_moments(&c, hp, g);
    emit(&c, OP_SQRT, BA_T1, BA_S1, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_AXPY, BA_T0, BA_S2, g, -1.0, 0.0);
    emit(&c, OP_ABS, BA_T0, BA_T0, -1, 0.0, 0.0);
    emit(&c, OP_SCALE, BA_T0, BA_T0, -1, -1.0, 0.0);
    emit(&c, OP_EXP, BA_T0, BA_T0, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T0, BA_T0, -1, 1.0, 0.0);
    emit(&c, OP_RECIP, BA_T0, BA_T0, -1, 1.0, 0.0);
    emit(&c, OP_COPY, BA_S2, g, -1, 0.0, 0.0);
    emit(&c, OP_MUL, BA_T0, BA_S0, BA_T0, 0.0, 0.0);
    emit(&c, OP_DIV, BA_T0, BA_T0, BA_T1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr * sqrt(bc2) / bc1, 0.0);
    return finish(&c);
}

/* SophiaG (official code), a step without a Hessian estimate: p *= 1 - lr*wd;
   m = b1*m + (1-b1)*g; p -= lr * sign(m) * min(|m| / (rho*bs*h + eps), 1). */
static size_t chain_sophia(const clopt_hparams *hp, uint64_t step, double mu_product,
                           bench_op *ops, size_t cap)
{
    (void)step;
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    if (hp->weight_decay != 0.0)
        emit(&c, OP_SCALE, BA_P, BA_P, -1, 1.0 - hp->lr * hp->weight_decay, 0.0);
    int g = grad_slot(&c, hp, 0, BA_T2);
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->beta1, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->beta1, 0.0);
    emit(&c, OP_ABS, BA_T0, BA_S0, -1, 0.0, 0.0);
    emit(&c, OP_AFFINE, BA_T1, BA_S1, -1, hp->rho * hp->bs, hp->eps);
    emit(&c, OP_DIV, BA_T0, BA_T0, BA_T1, 0.0, 0.0);
    emit(&c, OP_MINS, BA_T0, BA_T0, -1, 1.0, 0.0);
    emit(&c, OP_SIGN, BA_T1, BA_S0, -1, 0.0, 0.0);
    emit(&c, OP_MUL, BA_T0, BA_T0, BA_T1, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr, 0.0);
    return finish(&c);
}

/* ---- the rules of 2024-2025 (issue 15) ---------------------------------------------------- */

double bench_sf_scalars(const clopt_hparams *hp, uint64_t step, double *lr_t, double *lr_max,
                        double *weight_sum)
{
    double lm = 0.0, ws = 0.0;
    for (uint64_t t = 1; t < step; t++)
        clopt_schedule_free_advance(hp, t, &lm, &ws, NULL);
    if (lr_max)
        *lr_max = lm;
    if (weight_sum)
        *weight_sum = ws;
    return clopt_schedule_free_advance(hp, step, &lm, &ws, lr_t);
}

double bench_ademamix_alpha(const clopt_hparams *hp, uint64_t step)
{
    const double t = (double)step;
    return hp->alpha_warmup && t < hp->alpha_warmup ? t / hp->alpha_warmup * hp->alpha
                                                    : hp->alpha;
}

double bench_ademamix_beta3(const clopt_hparams *hp, uint64_t step)
{
    const double t = (double)step;
    if (!(hp->beta3_warmup && t < hp->beta3_warmup))
        return hp->beta3;
    const double a = t / hp->beta3_warmup;
    const double f1 = log(0.5) / log(hp->beta1 + 1e-8) - 1.0;
    const double f3 = log(0.5) / log(hp->beta3 + 1e-8) - 1.0;
    return pow(0.5, 1.0 / ((1.0 - a) * f1 + a * f3 + 1.0));
}

/* Schedule-Free AdamW (AdamWScheduleFree.step, non-foreach): [step 1: z = clone(y)];
   v *= b2; v += (1-b2)*g*g; d = sqrt(v/bc2) + eps (div, sqrt_, add_); u = g/d;
   [u += wd*y]; y.lerp_(z, c); y += lr_t*(b1*(1-c) - 1)*u; z -= lr_t*u. */
static size_t chain_sf_adamw(const clopt_hparams *hp, uint64_t step, double mu_product,
                             bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double lr_t = 0.0;
    const double ck = bench_sf_scalars(hp, step, &lr_t, NULL, NULL);
    const double bc2 = 1.0 - pow(hp->beta2, (double)step);
    if (step == 1)
        emit(&c, OP_COPY, BA_S0, BA_P, -1, 0.0, 0.0);
    emit(&c, OP_SCALE, BA_S1, BA_S1, -1, hp->beta2, 0.0);
    emit(&c, OP_MUL, BA_T0, BA_G, BA_G, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S1, BA_S1, BA_T0, 1.0 - hp->beta2, 0.0);
    emit(&c, OP_SCALE, BA_T1, BA_S1, -1, 1.0 / bc2, 0.0);
    emit(&c, OP_SQRT, BA_T1, BA_T1, -1, 0.0, 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_DIV, BA_T0, BA_G, BA_T1, 0.0, 0.0);
    if (hp->weight_decay != 0.0)
        emit(&c, OP_AXPY, BA_T0, BA_T0, BA_P, hp->weight_decay, 0.0);
    emit(&c, OP_LERP, BA_P, BA_P, BA_S0, ck, 1.0 - ck);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, lr_t * (hp->beta1 * (1.0 - ck) - 1.0), 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, BA_T0, -lr_t, 0.0);
    return finish(&c);
}

/* Schedule-Free SGD (SGDScheduleFree.step): [step 1: z = clone(y)]; [g += wd*y];
   y.lerp_(z, c); y += lr_t*(momentum*(1-c) - 1)*g; z -= lr_t*g. */
static size_t chain_sf_sgd(const clopt_hparams *hp, uint64_t step, double mu_product,
                           bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    double lr_t = 0.0;
    const double ck = bench_sf_scalars(hp, step, &lr_t, NULL, NULL);
    if (step == 1)
        emit(&c, OP_COPY, BA_S0, BA_P, -1, 0.0, 0.0);
    int g = BA_G;
    if (hp->weight_decay != 0.0) {
        emit(&c, OP_AXPY, BA_T2, BA_G, BA_P, hp->weight_decay, 0.0);
        g = BA_T2;
    }
    emit(&c, OP_LERP, BA_P, BA_P, BA_S0, ck, 1.0 - ck);
    emit(&c, OP_AXPY, BA_P, BA_P, g, lr_t * (hp->momentum * (1.0 - ck) - 1.0), 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, g, -lr_t, 0.0);
    return finish(&c);
}

/* ADOPT (_single_tensor_adopt): [maximize, L2]; step 1: v.addcmul_(g, g) (v = 0) only;
   then [θ *= 1-lr*wd (decouple)]; d = clamp(sqrt(v), min=eps); u = g/d;
   u.clamp_(-b, b) with b = (t-1)^clip_exponent; m.lerp_(u, 1-b1); θ -= lr*m;
   v *= b2; v += (1-b2)*g*g. */
static size_t chain_adopt(const clopt_hparams *hp, uint64_t step, double mu_product,
                          bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    int g = grad_slot(&c, hp, !hp->decouple, BA_T2);
    if (step == 1) {
        emit(&c, OP_MUL, BA_S1, g, g, 0.0, 0.0);
        return finish(&c);
    }
    if (hp->decouple && hp->weight_decay != 0.0)
        emit(&c, OP_SCALE, BA_P, BA_P, -1, 1.0 - hp->lr * hp->weight_decay, 0.0);
    emit(&c, OP_SQRT, BA_T1, BA_S1, -1, 0.0, 0.0);
    emit(&c, OP_MAXS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_DIV, BA_T0, g, BA_T1, 0.0, 0.0);
    if (hp->clip_exponent > 0.0) {
        const double b = pow((double)step - 1.0, hp->clip_exponent);
        emit(&c, OP_CLAMP, BA_T0, BA_T0, -1, -b, b);
    }
    emit(&c, OP_LERP, BA_S0, BA_S0, BA_T0, 1.0 - hp->beta1, hp->beta1);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_S0, -hp->lr, 0.0);
    emit(&c, OP_SCALE, BA_S1, BA_S1, -1, hp->beta2, 0.0);
    emit(&c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S1, BA_S1, BA_T0, 1.0 - hp->beta2, 0.0);
    return finish(&c);
}

/* AdEMAMix (apple/ml-ademamix): m1 *= b1; m1 += (1-b1)*g; m2 *= b3; m2 += (1-b3)*g;
   v *= b2; v += (1-b2)*g*g; d = sqrt(v) / sqrt(bc2) + eps; u = m1/bc1 + alpha*m2 (div,
   mul, add); u = u/d; [u += wd*θ]; θ -= lr*u. */
static size_t chain_ademamix(const clopt_hparams *hp, uint64_t step, double mu_product,
                             bench_op *ops, size_t cap)
{
    (void)mu_product;
    chain c = {ops, 0, cap, 0};
    const double t = (double)step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    const double b3 = bench_ademamix_beta3(hp, step), al = bench_ademamix_alpha(hp, step);
    int g = grad_slot(&c, hp, 0, BA_T2);
    emit(&c, OP_SCALE, BA_S0, BA_S0, -1, hp->beta1, 0.0);
    emit(&c, OP_AXPY, BA_S0, BA_S0, g, 1.0 - hp->beta1, 0.0);
    emit(&c, OP_SCALE, BA_S1, BA_S1, -1, b3, 0.0);
    emit(&c, OP_AXPY, BA_S1, BA_S1, g, 1.0 - b3, 0.0);
    emit(&c, OP_SCALE, BA_S2, BA_S2, -1, hp->beta2, 0.0);
    emit(&c, OP_MUL, BA_T0, g, g, 0.0, 0.0);
    emit(&c, OP_AXPY, BA_S2, BA_S2, BA_T0, 1.0 - hp->beta2, 0.0);
    emit(&c, OP_SQRT, BA_T1, BA_S2, -1, 0.0, 0.0);
    emit(&c, OP_SCALE, BA_T1, BA_T1, -1, 1.0 / sqrt(bc2), 0.0);
    emit(&c, OP_ADDS, BA_T1, BA_T1, -1, hp->eps, 0.0);
    emit(&c, OP_SCALE, BA_T0, BA_S0, -1, 1.0 / bc1, 0.0);
    emit(&c, OP_SCALE, BA_T3, BA_S1, -1, al, 0.0);
    emit(&c, OP_AXPY, BA_T0, BA_T0, BA_T3, 1.0, 0.0);
    emit(&c, OP_DIV, BA_T0, BA_T0, BA_T1, 0.0, 0.0);
    if (hp->weight_decay != 0.0)
        emit(&c, OP_AXPY, BA_T0, BA_T0, BA_P, hp->weight_decay, 0.0);
    emit(&c, OP_AXPY, BA_P, BA_P, BA_T0, -hp->lr, 0.0);
    return finish(&c);
}

/* ---- the table --------------------------------------------------------------------------- */

static void setup_sgd_momentum(clopt_hparams *hp) { hp->momentum = 0.9; }
/* Lookahead (Zhang et al. 2019) around Adam with the paper's k = 5, alpha = 0.5. */
static void setup_lookahead(clopt_hparams *hp)
{
    hp->lookahead_k = 5;
    hp->lookahead_alpha = 0.5;
}

/* Sophia's hessian EMA h is read by every step but written only at steps that fold in an
   estimate; the benchmark measures the common step without one. */
#define SOPHIA_HESSIAN_READONLY (1u << 1)

/* Cautious masking (C-Optim) on AdamW or Lion: optimizer level, a per-tensor mean of the
   mask between two passes. */
static void setup_cautious(clopt_hparams *hp) { hp->cautious = 1; }

/* name, rule, setup, read-only states, C loop, unfused chain, flags, in the default run */
const bench_rule bench_rules[] = {
    {"sgd", CLOPT_SGD, NULL, 0, cloop_sgd, chain_sgd, 0, 1},
    {"sgd_momentum", CLOPT_SGD, setup_sgd_momentum, 0, cloop_sgd, chain_sgd, 0, 1},
    {"adam", CLOPT_ADAM, NULL, 0, cloop_adam, chain_adam, 0, 1},
    {"adamw", CLOPT_ADAMW, NULL, 0, cloop_adamw, chain_adamw, 0, 1},
    {"adagrad", CLOPT_ADAGRAD, NULL, 0, cloop_adagrad, chain_adagrad, 0, 1},
    {"adadelta", CLOPT_ADADELTA, NULL, 0, cloop_adadelta, chain_adadelta, 0, 1},
    {"rmsprop", CLOPT_RMSPROP, NULL, 0, cloop_rmsprop, chain_rmsprop, 0, 1},
    {"adamax", CLOPT_ADAMAX, NULL, 0, cloop_adamax, chain_adamax, 0, 1},
    {"nadam", CLOPT_NADAM, NULL, 0, cloop_nadam, chain_nadam, 0, 1},
    {"radam", CLOPT_RADAM, NULL, 0, cloop_radam, chain_radam, 0, 1},
    {"adamod", CLOPT_ADAMOD, NULL, 0, cloop_adamod, chain_adamod, 0, 1},
    {"diffgrad", CLOPT_DIFFGRAD, NULL, 0, cloop_diffgrad, chain_diffgrad, 0, 1},
    {"lion", CLOPT_LION, NULL, 0, cloop_lion, chain_lion, BENCH_SIGN, 1},
    {"sophia", CLOPT_SOPHIA, NULL, SOPHIA_HESSIAN_READONLY, cloop_sophia, chain_sophia, BENCH_SIGN, 1},
    /* optimizer level: Adafactor on matrices (factored second moment; HF defaults: relative
       step, no first moment), LAMB (two passes around a norm reduction), Ranger on matrices
       (GC applies; the Lookahead sync every 6 steps is part of its step), Adam in Lookahead */
    {"adafactor", CLOPT_ADAFACTOR, NULL, 0, cloop_adafactor, NULL, BENCH_OPT_LEVEL | BENCH_MATRIX, 1},
    {"lamb", CLOPT_LAMB, NULL, 0, cloop_lamb, NULL, BENCH_OPT_LEVEL, 1},
    {"ranger", CLOPT_RANGER, NULL, 0, cloop_ranger, NULL, BENCH_MATRIX, 1},
    {"adam_lookahead", CLOPT_ADAM, setup_lookahead, 0, cloop_adam, chain_adam, 0, 0},
    /* the rules of 2024-2025 (issue 15), not in the default run: Schedule-Free AdamW/SGD,
       ADOPT and AdEMAMix are element-wise (one launch); cautious AdamW/Lion and StableAdamW
       run at the optimizer level (a per-tensor sum, then the update: two passes, the first
       reading g and one state) and have no unfused chain (it would need a reduction) */
    {"schedule_free_adamw", CLOPT_SCHEDULE_FREE_ADAMW, NULL, 0, cloop_sf_adamw, chain_sf_adamw, 0, 0},
    {"schedule_free_sgd", CLOPT_SCHEDULE_FREE_SGD, NULL, 0, cloop_sf_sgd, chain_sf_sgd, 0, 0},
    {"adopt", CLOPT_ADOPT, NULL, 0, cloop_adopt, chain_adopt, 0, 0},
    {"ademamix", CLOPT_ADEMAMIX, NULL, 0, cloop_ademamix, chain_ademamix, 0, 0},
    {"cautious_adamw", CLOPT_ADAMW, setup_cautious, 0, cloop_cautious_adamw, NULL, BENCH_OPT_LEVEL | BENCH_SIGN, 0},
    {"cautious_lion", CLOPT_LION, setup_cautious, 0, cloop_cautious_lion, NULL, BENCH_OPT_LEVEL | BENCH_SIGN, 0},
    {"stable_adamw", CLOPT_STABLE_ADAMW, NULL, 0, cloop_stable_adamw, NULL, BENCH_OPT_LEVEL, 0},
};
const size_t bench_rule_count = sizeof bench_rules / sizeof bench_rules[0];

const bench_rule *bench_rule_find(const char *name)
{
    for (size_t i = 0; i < bench_rule_count; i++)
        if (strcmp(bench_rules[i].name, name) == 0)
            return &bench_rules[i];
    return NULL;
}

clopt_status bench_rule_hparams(const bench_rule *r, clopt_hparams *hp)
{
    clopt_status s = clopt_hparams_default(r->rule, hp);
    if (s != CLOPT_SUCCESS)
        return s;
    if (r->setup)
        r->setup(hp);
    return clopt_hparams_validate(r->rule, hp, NULL);
}

void bench_rule_arrays(const bench_rule *r, const clopt_hparams *hp, size_t *read_write,
                       size_t *read_only)
{
    size_t ns = clopt_rule_state_count(r->rule, hp);
    size_t rw = 1, ro = 1; /* parameters; gradient */
    for (size_t i = 0; i < ns; i++) {
        if (r->readonly_states & (1u << i))
            ro++;
        else
            rw++;
    }
    *read_write = rw;
    *read_only = ro;
}

void bench_rule_traffic(const bench_rule *r, const clopt_hparams *hp, bench_traffic *t)
{
    memset(t, 0, sizeof *t);
    t->lib_bytes = clopt_rule_bytes_per_param(r->rule, hp);
    if (r->rule == CLOPT_ADAFACTOR) {
        /* row and column statistics: g; partial sums: g, θ; update: g, θ -> θ (and m -> m) */
        t->rw = 1 + (hp->use_beta1 ? 1u : 0u);
        t->ro = 4;
        t->re_theta = 1;
        t->re_grad = 2;
    } else if (r->rule == CLOPT_LAMB) {
        /* pass 1: θ g m v -> m v; pass 2: θ m v -> θ */
        t->rw = 3;
        t->ro = 4;
        t->re_theta = 1;
        t->re_states = 2;
    } else if (hp->cautious || r->rule == CLOPT_STABLE_ADAMW) {
        /* pass 1: g and m (cautious) or v (StableAdamW) -> a sum; pass 2: the element-wise
           update, θ g and every state -> θ and every state */
        bench_rule_arrays(r, hp, &t->rw, &t->ro);
        t->ro += 2;
        t->re_grad = 1;
        t->re_states = 1;
    } else {
        bench_rule_arrays(r, hp, &t->rw, &t->ro);
    }
    t->gc_bytes = bench_rule_gc(r, hp) ? sizeof(float) : 0;
    t->la_k = hp->lookahead_k;
    t->bytes = (double)(sizeof(float) * (2 * t->rw + t->ro) + t->gc_bytes) +
               (t->la_k ? 4.0 * sizeof(float) / t->la_k : 0.0);
}

int bench_rule_gc(const bench_rule *r, const clopt_hparams *hp)
{
    /* the benchmark's matrices have 2 dims: GC applies unless it is for convolutions only */
    return (r->flags & BENCH_MATRIX) && hp->grad_centralization && !hp->gc_conv_only;
}

int bench_rule_opt_level(const bench_rule *r, const clopt_hparams *hp)
{
    return (r->flags & BENCH_OPT_LEVEL) || hp->lookahead_k > 0 || bench_rule_gc(r, hp);
}

void bench_matrix_shape(size_t n, size_t *rows, size_t *cols)
{
    size_t d = (size_t)sqrt((double)n);
    while (d > 1 && d * d > n)
        d--;
    while ((d + 1) * (d + 1) <= n)
        d++;
    while (d > 1 && n % d)
        d--;
    if (d == 0)
        d = 1;
    *rows = d;
    *cols = n / d;
}

size_t bench_state_layout(const bench_rule *r, const clopt_hparams *hp, size_t n, size_t rows,
                          size_t cols, size_t *len, const char **name)
{
    size_t k = 0;
#define PUT(l, nm)                                                                         \
    do {                                                                                   \
        len[k] = (l);                                                                      \
        if (name)                                                                          \
            name[k] = (nm);                                                                \
        k++;                                                                               \
    } while (0)
    if (r->rule == CLOPT_ADAFACTOR) {
        if (rows) {
            PUT(rows, "exp_avg_sq_row");
            PUT(cols, "exp_avg_sq_col");
        } else {
            PUT(n, "exp_avg_sq");
        }
        if (hp->use_beta1)
            PUT(n, "exp_avg");
    } else {
        size_t ns = clopt_rule_state_count(r->rule, hp);
        for (size_t i = 0; i < ns && k < BENCH_MAX_STATE; i++)
            PUT(n, clopt_rule_state_name(r->rule, hp, i));
    }
    if (hp->lookahead_k > 0 && k < BENCH_MAX_STATE)
        PUT(n, r->rule == CLOPT_RANGER ? "slow_buffer" : "slow_params");
#undef PUT
    return k;
}
