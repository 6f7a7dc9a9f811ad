/* SPDX-License-Identifier: MIT */
/* clopt-bench: every rule as a plain C loop over host arrays, the CPU baseline the fused
 * kernel is compared with. Built with -O3 -march=native -fopenmp (bench/CMakeLists.txt):
 * one OpenMP parallel-for over the elements, float arithmetic, step-dependent scalars
 * computed once in double and rounded to float, as the library does.
 * The semantics are those of clopt.h (torch.optim 1.13 / the papers' code). */
#include "bench.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#define OMP_FOR _Pragma("omp parallel for schedule(static)")
#else
#define OMP_FOR
#endif

int cloop_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The loops index with ptrdiff_t (OpenMP wants a signed loop variable). */
#define LOOP(a) OMP_FOR for (ptrdiff_t i = 0; i < (ptrdiff_t)(a)->n; i++)

static inline float signf(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }
/* max/min as comparisons (maxps/minps): fmaxf/fminf's NaN rules keep GCC from vectorising. */
static inline float maxf(float x, float y) { return x > y ? x : y; }
static inline float minf(float x, float y) { return x < y ? x : y; }

void cloop_sgd(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float lr = (float)hp->lr, wd = (float)hp->weight_decay, mom = (float)hp->momentum;
    const float damp1 = (float)(1.0 - hp->dampening), neg = hp->maximize ? -1.0f : 1.0f;
    const int has_mom = hp->momentum > 0.0, nesterov = hp->nesterov, first = a->step == 1;
    float *p = a->p, *b = a->s[0];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float d = g;
        if (has_mom) {
            float bb = first ? g : mom * b[i] + damp1 * g;
            b[i] = bb;
            d = nesterov ? g + mom * bb : bb;
        }
        p[i] -= lr * d;
    }
}

static void adam_common(const cloop_args *a, int decoupled)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, c1 = (float)(1.0 - hp->beta1),
                c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps;
    const float step_size = (float)(hp->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float decay = decoupled ? (float)(1.0 - hp->lr * hp->weight_decay) : 1.0f;
    const float l2 = decoupled ? 0.0f : (float)hp->weight_decay;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    const int ams = hp->amsgrad;
    float *p = a->p, *m = a->s[0], *v = a->s[1], *vmax = a->s[2];
    const float *gr = a->g;
    LOOP(a)
    {
        float th = p[i] * decay;
        float g = neg * gr[i] + l2 * th;
        float mm = b1 * m[i] + c1 * g;
        float vv = b2 * v[i] + c2 * g * g;
        m[i] = mm;
        v[i] = vv;
        if (ams) {
            vv = maxf(vmax[i], vv);
            vmax[i] = vv;
        }
        float denom = sqrtf(vv) * inv_sqrt_bc2 + eps;
        p[i] = th - step_size * mm / denom;
    }
}

void cloop_adam(const cloop_args *a) { adam_common(a, 0); }
void cloop_adamw(const cloop_args *a) { adam_common(a, 1); }

void cloop_adagrad(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float clr = (float)(hp->lr / (1.0 + (double)(a->step - 1) * hp->lr_decay));
    const float wd = (float)hp->weight_decay, eps = (float)hp->eps;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *s = a->s[0];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float ss = s[i] + g * g;
        s[i] = ss;
        p[i] -= clr * g / (sqrtf(ss) + eps);
    }
}

void cloop_adadelta(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float rho = (float)hp->rho, c = (float)(1.0 - hp->rho), eps = (float)hp->eps;
    const float lr = (float)hp->lr, wd = (float)hp->weight_decay;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *v = a->s[0], *u = a->s[1];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float vv = rho * v[i] + c * g * g;
        float delta = sqrtf(u[i] + eps) / sqrtf(vv + eps) * g;
        v[i] = vv;
        u[i] = rho * u[i] + c * delta * delta;
        p[i] -= lr * delta;
    }
}

void cloop_rmsprop(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float al = (float)hp->alpha, c = (float)(1.0 - hp->alpha), eps = (float)hp->eps;
    const float lr = (float)hp->lr, wd = (float)hp->weight_decay, mom = (float)hp->momentum;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    const int has_mom = hp->momentum > 0.0, centered = hp->centered;
    float *p = a->p, *v = a->s[0];
    float *b = has_mom ? a->s[1] : NULL;
    float *ga = centered ? a->s[has_mom ? 2 : 1] : NULL;
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float vv = al * v[i] + c * g * g;
        v[i] = vv;
        float var = vv;
        if (centered) {
            float aa = al * ga[i] + c * g;
            ga[i] = aa;
            var = vv - aa * aa;
        }
        float avg = sqrtf(var) + eps;
        if (has_mom) {
            float bb = mom * b[i] + g / avg;
            b[i] = bb;
            p[i] -= lr * bb;
        } else {
            p[i] -= lr * g / avg;
        }
    }
}

void cloop_adamax(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double bc1 = 1.0 - pow(hp->beta1, (double)a->step);
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2;
    const float eps = (float)hp->eps, clr = (float)(hp->lr / bc1), wd = (float)hp->weight_decay;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *u = a->s[1];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float mm = b1 * m[i] + c1 * g;
        float uu = maxf(b2 * u[i], fabsf(g) + eps);
        m[i] = mm;
        u[i] = uu;
        p[i] -= clr * mm / uu;
    }
}

void cloop_nadam(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double mu = hp->beta1 * (1.0 - 0.5 * pow(0.96, t * hp->momentum_decay));
    const double mu_next = hp->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * hp->momentum_decay));
    const double prod = a->mu_product * mu, prod_next = prod * mu_next;
    const double bc2 = 1.0 - pow(hp->beta2, t);
    const float cg = (float)(hp->lr * (1.0 - mu) / (1.0 - prod));
    const float cm = (float)(hp->lr * mu_next / (1.0 - prod_next));
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps;
    const float inv_bc2 = (float)(1.0 / bc2), wd = (float)hp->weight_decay;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *v = a->s[1];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float mm = b1 * m[i] + c1 * g;
        float vv = b2 * v[i] + c2 * g * g;
        m[i] = mm;
        v[i] = vv;
        float d = sqrtf(vv * inv_bc2) + eps;
        float th = p[i] - cg * g / d;
        p[i] = th - cm * mm / d;
    }
}

void cloop_radam(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    const double rho_inf = 2.0 / (1.0 - hp->beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * pow(hp->beta2, t) / bc2;
    const int rect = rho_t > 5.0;
    double coef = hp->lr / bc1;
    if (rect) {
        double r = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                        ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
        coef = hp->lr * r * sqrt(bc2) / bc1;
    }
    const float k = (float)coef;
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps, wd = (float)hp->weight_decay;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *v = a->s[1];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float mm = b1 * m[i] + c1 * g;
        float vv = b2 * v[i] + c2 * g * g;
        m[i] = mm;
        v[i] = vv;
        p[i] -= rect ? k * mm / (sqrtf(vv) + eps) : k * mm;
    }
}

void cloop_adamod(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    const float step_size = (float)(hp->lr * sqrt(bc2) / bc1);
    const float decay = (float)(1.0 - hp->weight_decay * hp->lr);
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), b3 = (float)hp->beta3,
                c3 = (float)(1.0 - hp->beta3), eps = (float)hp->eps;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *v = a->s[1], *s = a->s[2];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i];
        float th = p[i] * decay;
        float mm = b1 * m[i] + c1 * g;
        float vv = b2 * v[i] + c2 * g * g;
        float eta = step_size / (sqrtf(vv) + eps);
        float ss = b3 * s[i] + c3 * eta;
        m[i] = mm;
        v[i] = vv;
        s[i] = ss;
        p[i] = th - minf(eta, ss) * mm;
    }
}

void cloop_diffgrad(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    const float step_size = (float)(hp->lr * sqrt(bc2) / bc1);
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps, wd = (float)hp->weight_decay;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *v = a->s[1], *prev = a->s[2];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i] + wd * p[i];
        float mm = b1 * m[i] + c1 * g;
        float vv = b2 * v[i] + c2 * g * g;
        float xi = 1.0f / (1.0f + expf(-fabsf(prev[i] - g)));
        m[i] = mm;
        v[i] = vv;
        prev[i] = g;
        p[i] -= step_size * xi * mm / (sqrtf(vv) + eps);
    }
}

void cloop_lion(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float decay = (float)(1.0 - hp->lr * hp->weight_decay), lr = (float)hp->lr;
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2);
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i];
        float c = b1 * m[i] + c1 * g;
        p[i] = p[i] * decay - lr * signf(c);
        m[i] = b2 * m[i] + c2 * g;
    }
}

void cloop_sophia(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float decay = (float)(1.0 - hp->lr * hp->weight_decay), lr = (float)hp->lr;
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), gamma = (float)(hp->rho * hp->bs),
                eps = (float)hp->eps;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *h = a->s[1];
    const float *gr = a->g, *est = a->hess;
    LOOP(a)
    {
        float g = neg * gr[i];
        float mm = b1 * m[i] + c1 * g;
        float ratio = minf(fabsf(mm) / (gamma * h[i] + eps), 1.0f);
        m[i] = mm;
        p[i] = p[i] * decay - lr * signf(mm) * ratio;
        if (est)
            h[i] = b2 * h[i] + c2 * est[i];
    }
}

/* ---- optimizer-level rules ------------------------------------------------------------- */

/* The reductions sum in float with a fixed blocking, as an engine's own loop would: blocks of
   CLOOP_BLK consecutive elements (a row where the rule works per row) are summed in float
   SIMD lanes, the block sums added per thread and the threads' sums by OpenMP. A block that
   spans rows finds its row once, with one division, and then advances row and column as it
   walks (no per-element division or modulo). */
#ifdef _OPENMP
#define OMP(text) _Pragma(#text)
#else
#define OMP(text)
#endif
enum { CLOOP_BLK = 8192 };

static inline ptrdiff_t min_pd(ptrdiff_t x, ptrdiff_t y) { return x < y ? x : y; }

/* Adafactor (Hugging Face transformers): a rows x cols matrix keeps row and column averages
   of g² + eps1 (s[0], s[1]); a vector (rows 0) a full one (s[0]); s[last] = exp_avg when
   use_beta1. u = g / sqrt(v̂), clipped by max(1, RMS(u)/d), scaled by α_t. The matrix's
   statistics take one pass over g: each thread sums its rows and adds g² + eps1 into its
   own column partial sums, which are then added in thread order. u = g·rf·cf with the row
   factor rf = 1/sqrt(Rv[r]/mean(Rv)) per row and the column factors cf = 1/sqrt(Cv) computed
   once (as the kernel's rsqrt of each). */
void cloop_adafactor(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double b2t = 1.0 - pow(t, hp->decay_rate);
    const float beta2t = (float)b2t, omb2t = (float)(1.0 - b2t);
    double rho = hp->lr;
    if (hp->relative_step) {
        rho = hp->warmup_init ? 1e-6 * t : 1e-2;
        if (1.0 / sqrt(t) < rho)
            rho = 1.0 / sqrt(t);
    }
    const float eps1 = (float)hp->eps, neg = hp->maximize ? -1.0f : 1.0f;
    const int factored = a->rows > 0;
    const ptrdiff_t n = (ptrdiff_t)a->n;
    const ptrdiff_t R = factored ? (ptrdiff_t)a->rows : 1, C = factored ? (ptrdiff_t)a->cols : n;
    float *p = a->p, *rv = a->s[0], *cv = factored ? a->s[1] : NULL;
    float *m = hp->use_beta1 ? a->s[factored ? 2 : 1] : NULL;
    const float *gr = a->g;
    /* factored: per thread C column partial sums, then the column factors in the first C */
    const int nt = cloop_threads();
    float *part = NULL, *cf = NULL;
    float rmean = 1.0f;
    if (factored) {
        part = calloc((size_t)nt * (size_t)C, sizeof *part);
        if (!part)
            return; /* out of host memory: p unchanged, the correctness check says so */
        const float inv_c = 1.0f / (float)C, inv_r = 1.0f / (float)R;
        OMP(omp parallel num_threads(nt))
        {
#ifdef _OPENMP
            float *cs = part + (size_t)omp_get_thread_num() * (size_t)C;
#else
            float *cs = part;
#endif
            OMP(omp for schedule(static))
            for (ptrdiff_t r = 0; r < R; r++) {
                const float *g_r = gr + r * C;
                float acc = 0.0f;
                OMP(omp simd reduction(+ : acc))
                for (ptrdiff_t c = 0; c < C; c++) {
                    float g = neg * g_r[c], q = g * g + eps1;
                    acc += q;
                    cs[c] += q;
                }
                rv[r] = beta2t * rv[r] + omb2t * (acc * inv_c);
            }
        }
        for (int k = 1; k < nt; k++) {
            const float *cs = part + (size_t)k * (size_t)C;
            OMP(omp simd)
            for (ptrdiff_t c = 0; c < C; c++)
                part[c] += cs[c];
        }
        cf = part;
        OMP(omp parallel for simd schedule(static))
        for (ptrdiff_t c = 0; c < C; c++) {
            float v = beta2t * cv[c] + omb2t * (part[c] * inv_r);
            cv[c] = v;
            cf[c] = 1.0f / sqrtf(v);
        }
        float s = 0.0f;
        OMP(omp simd reduction(+ : s))
        for (ptrdiff_t r = 0; r < R; r++)
            s += rv[r];
        rmean = s * inv_r;
    }
    /* RMS(u) and RMS(θ); a vector's second moment is updated here */
    const ptrdiff_t nblk = (n + CLOOP_BLK - 1) / CLOOP_BLK;
    float su = 0.0f, sp = 0.0f;
    OMP(omp parallel for schedule(static) reduction(+ : su, sp))
    for (ptrdiff_t b = 0; b < nblk; b++) {
        const ptrdiff_t i1 = min_pd(b * CLOOP_BLK + CLOOP_BLK, n);
        float bu = 0.0f, bp = 0.0f;
        if (factored) {
            ptrdiff_t i = b * CLOOP_BLK, r = i / C, c = i - r * C;
            for (; i < i1; i += C - c, r++, c = 0) {
                const ptrdiff_t len = min_pd(C - c, i1 - i);
                const float rf = 1.0f / sqrtf(rv[r] / rmean);
                const float *g_i = gr + i, *p_i = p + i, *cf_c = cf + c;
                OMP(omp simd reduction(+ : bu, bp))
                for (ptrdiff_t j = 0; j < len; j++) {
                    float u = neg * g_i[j] * rf * cf_c[j];
                    bu += u * u;
                    bp += p_i[j] * p_i[j];
                }
            }
        } else {
            OMP(omp simd reduction(+ : bu, bp))
            for (ptrdiff_t i = b * CLOOP_BLK; i < i1; i++) {
                float g = neg * gr[i];
                float v = beta2t * rv[i] + omb2t * (g * g + eps1);
                rv[i] = v;
                float u = g / sqrtf(v);
                bu += u * u;
                bp += p[i] * p[i];
            }
        }
        su += bu;
        sp += bp;
    }
    const float rms_u = sqrtf(su / (float)n), rms_p = sqrtf(sp / (float)n);
    const float rho_f = (float)rho;
    const float alpha = hp->scale_parameter ? maxf((float)hp->eps2, rms_p) * rho_f : rho_f;
    const float scale = alpha / maxf(1.0f, rms_u / (float)hp->clip_threshold);
    const float wd = (float)hp->weight_decay, b1 = (float)hp->beta1,
                c1 = (float)(1.0 - hp->beta1), decay = 1.0f - wd * alpha;
    /* the update, in the same blocks */
    OMP(omp parallel for schedule(static))
    for (ptrdiff_t b = 0; b < nblk; b++) {
        const ptrdiff_t i1 = min_pd(b * CLOOP_BLK + CLOOP_BLK, n);
        ptrdiff_t i = b * CLOOP_BLK, r = i / C, c = i - r * C;
        for (; i < i1; i += C - c, r++, c = 0) {
            const ptrdiff_t len = min_pd(C - c, i1 - i);
            const float rf = factored ? 1.0f / sqrtf(rv[r] / rmean) * scale : scale;
            const float *g_i = gr + i, *cf_c = factored ? cf + c : NULL,
                        *rv_i = factored ? NULL : rv + i;
            float *p_i = p + i, *m_i = m ? m + i : NULL;
            OMP(omp simd)
            for (ptrdiff_t j = 0; j < len; j++) {
                float g = neg * g_i[j];
                float u = factored ? g * rf * cf_c[j] : g / sqrtf(rv_i[j]) * rf;
                if (m_i) {
                    u = b1 * m_i[j] + c1 * u;
                    m_i[j] = u;
                }
                p_i[j] = p_i[j] * decay - u;
            }
        }
    }
    free(part);
}

/* LAMB: pass 1 updates m, v and sums θ² and r² (r = m̂/(sqrt(v̂)+eps) + wd θ); pass 2
   θ -= lr (‖θ‖/‖r‖) r (the ratio 1 when either norm is 0). */
void cloop_lamb(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double bc1 = hp->bias_correction ? 1.0 - pow(hp->beta1, t) : 1.0;
    const double bc2 = hp->bias_correction ? 1.0 - pow(hp->beta2, t) : 1.0;
    const float ibc1 = (float)(1.0 / bc1), ibc2 = (float)(1.0 / bc2);
    const float b1 = (float)hp->beta1, cg = (float)(hp->grad_averaging ? 1.0 - hp->beta1 : 1.0),
                b2 = (float)hp->beta2, c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps,
                wd = (float)hp->weight_decay, neg = hp->maximize ? -1.0f : 1.0f;
    const ptrdiff_t n = (ptrdiff_t)a->n, nblk = (n + CLOOP_BLK - 1) / CLOOP_BLK;
    float *p = a->p, *m = a->s[0], *v = a->s[1];
    const float *gr = a->g;
    float sp = 0.0f, sr = 0.0f;
    OMP(omp parallel for schedule(static) reduction(+ : sp, sr))
    for (ptrdiff_t b = 0; b < nblk; b++) {
        const ptrdiff_t i1 = min_pd(b * CLOOP_BLK + CLOOP_BLK, n);
        float bp = 0.0f, br = 0.0f;
        OMP(omp simd reduction(+ : bp, br))
        for (ptrdiff_t i = b * CLOOP_BLK; i < i1; i++) {
            float g = neg * gr[i], th = p[i];
            float mm = b1 * m[i] + cg * g;
            float vv = b2 * v[i] + c2 * g * g;
            m[i] = mm;
            v[i] = vv;
            float r = (mm * ibc1) / (sqrtf(vv * ibc2) + eps) + wd * th;
            bp += th * th;
            br += r * r;
        }
        sp += bp;
        sr += br;
    }
    const float wn = sqrtf(sp), rn = sqrtf(sr);
    const float step = (float)hp->lr * ((wn > 0.0f && rn > 0.0f) ? wn / rn : 1.0f);
    OMP(omp parallel for simd schedule(static))
    for (ptrdiff_t i = 0; i < n; i++) {
        float th = p[i];
        float r = (m[i] * ibc1) / (sqrtf(v[i] * ibc2) + eps) + wd * th;
        p[i] = th - step * r;
    }
}

/* Ranger's RAdam part (its code): decoupled decay, GC of the gradient rows (a matrix with
   grad_centralization), rectified when ρ_t > n_sma_threshold. The Lookahead sync is
   cloop_lookahead, called by the driver every lookahead_k steps. The row means are float
   sums per row; the update walks blocks that find their row once (as Adafactor's). */
void cloop_ranger(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(hp->beta2, t);
    const double rho_inf = 2.0 / (1.0 - hp->beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * pow(hp->beta2, t) / bc2;
    const int rect = rho_t > hp->n_sma_threshold;
    double coef = hp->lr / bc1;
    if (rect)
        coef *= sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                     ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) *
                sqrt(bc2);
    const float k = (float)coef, decay = (float)(1.0 - hp->lr * hp->weight_decay);
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps;
    const float neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m = a->s[0], *v = a->s[1];
    const float *gr = a->g;
    const ptrdiff_t n = (ptrdiff_t)a->n;
    const int gc = hp->grad_centralization && a->rows > 0 && !hp->gc_conv_only;
    const ptrdiff_t R = gc ? (ptrdiff_t)a->rows : 1, C = gc ? n / R : n;
    float *mean = calloc((size_t)R, sizeof *mean); /* a NULL here only turns GC off */
    if (gc && mean) {
        const float inv_c = 1.0f / (float)C;
        OMP(omp parallel for schedule(static))
        for (ptrdiff_t r = 0; r < R; r++) {
            const float *g_r = gr + r * C;
            float acc = 0.0f;
            OMP(omp simd reduction(+ : acc))
            for (ptrdiff_t c = 0; c < C; c++)
                acc += neg * g_r[c];
            mean[r] = acc * inv_c;
        }
    }
    const float *mu = gc ? mean : NULL;
    const ptrdiff_t nblk = (n + CLOOP_BLK - 1) / CLOOP_BLK;
    OMP(omp parallel for schedule(static))
    for (ptrdiff_t b = 0; b < nblk; b++) {
        const ptrdiff_t i1 = min_pd(b * CLOOP_BLK + CLOOP_BLK, n);
        ptrdiff_t i = b * CLOOP_BLK, r = i / C, c = i - r * C;
        for (; i < i1; i += C - c, r++, c = 0) {
            const ptrdiff_t len = min_pd(C - c, i1 - i);
            const float mr = mu ? mu[r] : 0.0f;
            const float *g_i = gr + i;
            float *p_i = p + i, *m_i = m + i, *v_i = v + i;
            OMP(omp simd)
            for (ptrdiff_t j = 0; j < len; j++) {
                float g = neg * g_i[j] - mr;
                float th = p_i[j] * decay;
                float mm = b1 * m_i[j] + c1 * g;
                float vv = b2 * v_i[j] + c2 * g * g;
                m_i[j] = mm;
                v_i[j] = vv;
                p_i[j] = rect ? th - k * (mm / (sqrtf(vv) + eps)) : th - k * mm;
            }
        }
    }
    free(mean);
}

void cloop_lookahead(float *p, float *slow, size_t n, float alpha)
{
    OMP_FOR
    for (ptrdiff_t i = 0; i < (ptrdiff_t)n; i++) {
        float s = slow[i];
        float th = s + alpha * (p[i] - s);
        p[i] = th;
        slow[i] = th;
    }
}

/* ---- the rules of 2024-2025 (issue 15) ---------------------------------------------------- */

/* torch.lerp(x, y, w): x + w(y - x) for w < 0.5, else y - (y - x)(1 - w). */
static inline float lerpf(float x, float y, float w, float omw)
{
    return w < 0.5f ? x + w * (y - x) : y - (y - x) * omw;
}

/* Schedule-Free AdamW: the parameters hold y; z_0 = θ_0 (taken from θ at step 1). */
void cloop_sf_adamw(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    double lr_t = 0.0;
    const double ck = bench_sf_scalars(hp, a->step, &lr_t, NULL, NULL);
    const double bc2 = 1.0 - pow(hp->beta2, (double)a->step);
    const float b2 = (float)hp->beta2, c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps,
                ib2 = (float)(1.0 / bc2), wd = (float)hp->weight_decay, c = (float)ck,
                omc = (float)(1.0 - ck), ycoef = (float)(lr_t * (hp->beta1 * (1.0 - ck) - 1.0)),
                lr = (float)lr_t;
    const int first = a->step == 1;
    float *p = a->p, *z = a->s[0], *v = a->s[1];
    const float *gr = a->g;
    LOOP(a)
    {
        float y = p[i], g = gr[i];
        float zz = first ? y : z[i];
        float vv = b2 * v[i] + c2 * g * g;
        float u = g / (sqrtf(vv * ib2) + eps) + wd * y;
        y = lerpf(y, zz, c, omc) + ycoef * u;
        z[i] = zz - lr * u;
        v[i] = vv;
        p[i] = y;
    }
}

/* Schedule-Free SGD: L2 decay at y; z_0 = θ_0. */
void cloop_sf_sgd(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    double lr_t = 0.0;
    const double ck = bench_sf_scalars(hp, a->step, &lr_t, NULL, NULL);
    const float wd = (float)hp->weight_decay, c = (float)ck, omc = (float)(1.0 - ck),
                ycoef = (float)(lr_t * (hp->momentum * (1.0 - ck) - 1.0)), lr = (float)lr_t;
    const int first = a->step == 1;
    float *p = a->p, *z = a->s[0];
    const float *gr = a->g;
    LOOP(a)
    {
        float y = p[i];
        float g = gr[i] + wd * y;
        float zz = first ? y : z[i];
        p[i] = lerpf(y, zz, c, omc) + ycoef * g;
        z[i] = zz - lr * g;
    }
}

/* ADOPT: step 1 sets v = g² only; v is updated after θ. */
void cloop_adopt(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const float b1 = (float)hp->beta1, omb1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), eps = (float)hp->eps, lr = (float)hp->lr,
                neg = hp->maximize ? -1.0f : 1.0f;
    const float l2 = hp->decouple ? 0.0f : (float)hp->weight_decay;
    const float lrwd = hp->decouple ? (float)(hp->lr * hp->weight_decay) : 0.0f;
    const float bound = hp->clip_exponent > 0.0
                            ? (float)pow((double)a->step - 1.0, hp->clip_exponent)
                            : INFINITY;
    const int first = a->step == 1;
    float *p = a->p, *m = a->s[0], *v = a->s[1];
    const float *gr = a->g;
    LOOP(a)
    {
        float th = p[i];
        float g = neg * gr[i] + l2 * th;
        if (first) {
            v[i] = g * g;
            continue;
        }
        th = th - lrwd * th;
        float u = g / maxf(sqrtf(v[i]), eps);
        u = minf(maxf(u, -bound), bound);
        float mm = lerpf(m[i], u, omb1, b1);
        m[i] = mm;
        p[i] = th - lr * mm;
        v[i] = b2 * v[i] + c2 * g * g;
    }
}

/* AdEMAMix: Adam's m1 and v with bias correction, the slow m2 without. */
void cloop_ademamix(const cloop_args *a)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step;
    const double b3d = bench_ademamix_beta3(hp, a->step);
    const float b1 = (float)hp->beta1, c1 = (float)(1.0 - hp->beta1), b2 = (float)hp->beta2,
                c2 = (float)(1.0 - hp->beta2), b3 = (float)b3d, c3 = (float)(1.0 - b3d),
                eps = (float)hp->eps, wd = (float)hp->weight_decay, lr = (float)hp->lr,
                ibc1 = (float)(1.0 / (1.0 - pow(hp->beta1, t))),
                isbc2 = (float)(1.0 / sqrt(1.0 - pow(hp->beta2, t))),
                al = (float)bench_ademamix_alpha(hp, a->step), neg = hp->maximize ? -1.0f : 1.0f;
    float *p = a->p, *m1 = a->s[0], *m2 = a->s[1], *v = a->s[2];
    const float *gr = a->g;
    LOOP(a)
    {
        float g = neg * gr[i], th = p[i];
        float f = b1 * m1[i] + c1 * g;
        float s = b3 * m2[i] + c3 * g;
        float vv = b2 * v[i] + c2 * g * g;
        float u = (f * ibc1 + al * s) / (sqrtf(vv) * isbc2 + eps) + wd * th;
        m1[i] = f;
        m2[i] = s;
        v[i] = vv;
        p[i] = th - lr * u;
    }
}

/* The two passes of cautious AdamW/Lion and StableAdamW: variant 1 cautious AdamW (C-Optim's
   arithmetic), 2 cautious Lion, 3 StableAdamW. Pass 1 sums the mask (or g²/max(u, eps²) with
   the new u) in float blocks as cloop_lamb; pass 2 updates. */
static void reduced_two_pass(const cloop_args *a, int variant)
{
    const clopt_hparams *hp = a->hp;
    const double t = (double)a->step, b1d = hp->beta1, b2d = hp->beta2;
    double c1d = b1d, c2d = b2d, stepd = hp->lr;
    if (variant == 3) {
        c1d = b1d * (1.0 - pow(b1d, t - 1.0)) / (1.0 - pow(b1d, t));
        c2d = b2d * (1.0 - pow(b2d, t - 1.0)) / (1.0 - pow(b2d, t));
    } else if (variant == 1) {
        stepd = hp->lr * sqrt(1.0 - pow(b2d, t)) / (1.0 - pow(b1d, t));
    }
    const float b1 = (float)c1d, omb1 = (float)(1.0 - c1d), b2 = (float)c2d,
                omb2 = (float)(1.0 - c2d), eps = (float)hp->eps, eps2 = (float)(hp->eps * hp->eps),
                lrwd = (float)(hp->lr * hp->weight_decay), neg = hp->maximize ? -1.0f : 1.0f;
    const float rb1 = (float)b1d, romb1 = (float)(1.0 - b1d); /* Lion's interpolation */
    const ptrdiff_t n = (ptrdiff_t)a->n, nblk = (n + CLOOP_BLK - 1) / CLOOP_BLK;
    float *p = a->p, *m = a->s[0], *v = variant == 2 ? NULL : a->s[1];
    const float *gr = a->g;
    float sum = 0.0f;
    OMP(omp parallel for schedule(static) reduction(+ : sum))
    for (ptrdiff_t b = 0; b < nblk; b++) {
        const ptrdiff_t i1 = min_pd(b * CLOOP_BLK + CLOOP_BLK, n);
        float bs = 0.0f;
        OMP(omp simd reduction(+ : bs))
        for (ptrdiff_t i = b * CLOOP_BLK; i < i1; i++) {
            float g = neg * gr[i];
            if (variant == 3) {
                float u = b2 * v[i] + omb2 * g * g;
                bs += g * g / maxf(u, eps2);
            } else {
                float c = variant == 2 ? rb1 * m[i] + romb1 * g : b1 * m[i] + omb1 * g;
                bs += c * g > 0.0f ? 1.0f : 0.0f;
            }
        }
        sum += bs;
    }
    const float mean = sum / (float)n;
    const float scale = variant == 3   ? (float)stepd / maxf(1.0f, sqrtf(mean) /
                                                                   (float)hp->clip_threshold)
                        : variant == 2 ? (float)n / (sum + 1.0f)
                                       : 1.0f / maxf(mean, 1e-3f);
    const float step = (float)stepd;
    const float lb2 = (float)hp->beta2, lomb2 = (float)(1.0 - hp->beta2);
    LOOP(a)
    {
        float th = p[i], g = neg * gr[i];
        th = th - lrwd * th;
        if (variant == 2) {
            float c = rb1 * m[i] + romb1 * g;
            float phi = c * g > 0.0f ? scale : 0.0f;
            th = th - step * (signf(c) * phi);
            m[i] = lb2 * m[i] + lomb2 * g;
        } else {
            float mm = b1 * m[i] + omb1 * g;
            float vv = b2 * v[i] + omb2 * g * g;
            if (variant == 1) {
                float phi = mm * g > 0.0f ? scale : 0.0f;
                th = th - step * ((mm * phi) / (sqrtf(vv) + eps));
            } else {
                th = th - scale * (mm / (sqrtf(vv) + eps));
            }
            m[i] = mm;
            v[i] = vv;
        }
        p[i] = th;
    }
}

void cloop_cautious_adamw(const cloop_args *a) { reduced_two_pass(a, 1); }
void cloop_cautious_lion(const cloop_args *a) { reduced_two_pass(a, 2); }
void cloop_stable_adamw(const cloop_args *a) { reduced_two_pass(a, 3); }
