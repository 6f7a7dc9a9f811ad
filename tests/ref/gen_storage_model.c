/* SPDX-License-Identifier: MIT */
/*
 * gen_storage_cases' models of clopt's storage (tests/data/golden/README.md, "Storage types";
 * gen_storage.h). A step loads the stored values (θ or its master, the gradient, the
 * dequantized state), runs the rule in float64 (tests/ref ref_step: the reference) or in
 * float32 (ordered as clopt's kernels: the model that sizes the tolerances), then rounds
 * every stored tensor once from that result to its storage type.
 */
#include "gen_storage.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "gen_storage_cases: %s\n", what);
    exit(1);
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (p == NULL)
        die("out of memory");
    return p;
}

/* ---- Philox-4x32-10 (ref_philox4x32_10) against Random123's known answers -------------- */

int gen_check_philox(void)
{
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t c[4];
        ref_philox4x32_10(kat[i], kat[i] + 4, c);
        if (memcmp(c, kat[i] + 6, sizeof c) != 0) {
            fprintf(stderr, "gen_storage_cases: Philox-4x32-10 fails Random123's known-answer "
                            "test %d\n", i);
            return -1;
        }
    }
    return 0;
}

/* ---- storage types, from an exact (float64) value -------------------------------------- */

enum round_mode { RNE, SR };

/* x rounded to a binary format with `sig` significant bits and minimum normal exponent emin
   (bfloat16: 8, -126; float16: 11, -14): to nearest even, or stochastically with the 16-bit
   random value r as clopt rounds (bf16: magnitude up iff r + 2^16·frac >= 2^16; f16: up iff
   r / 2^16 < frac, frac being |x|'s position between its two neighbours). */
static double round_to(double x, int sig, int emin, enum round_mode mode, unsigned r)
{
    const double a = fabs(x);
    if (a == 0.0 || !isfinite(a))
        return x;
    const int e = ilogb(a) < emin ? emin : ilogb(a);
    const double ulp = ldexp(1.0, e - (sig - 1)), q = a / ulp, fl = floor(q), frac = q - fl;
    double k;
    if (mode == RNE)
        k = rint(q); /* the default rounding mode: to nearest, ties to even */
    else if (sig == 8)
        k = fl + ((double)r + ldexp(frac, 16) >= 65536.0);
    else
        k = fl + ((double)r / 65536.0 < frac);
    return copysign(k * ulp, x);
}

static double to_dtype(double x, clopt_dtype t, enum round_mode mode, unsigned r)
{
    switch (t) {
    case CLOPT_DTYPE_BF16: return round_to(x, 8, -126, mode, r);
    case CLOPT_DTYPE_F16: return round_to(x, 11, -14, mode, r);
    default: return (float)x; /* C's conversion: to nearest even */
    }
}

double gen_round(double x, clopt_dtype t) { return to_dtype(x, t, RNE, 0); }

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The 16-bit word of a value exactly representable in t. */
uint16_t gen_word16(double x, clopt_dtype t)
{
    if (t == CLOPT_DTYPE_BF16)
        return (uint16_t)(f32_bits((float)x) >> 16);
    const uint16_t s = signbit(x) ? 0x8000 : 0;
    const double a = fabs(x);
    if (a == 0.0)
        return s;
    const int e = ilogb(a);
    const double m = e < -14 ? ldexp(a, 24) : ldexp(a, 10 - e) - 1024.0;
    if (m != floor(m) || e > 15)
        die("a value is not a float16");
    return (uint16_t)(s | (e < -14 ? 0 : (e + 15) << 10) | (uint16_t)m);
}

/* ---- bitsandbytes' 8-bit dynamic map --------------------------------------------------- */

/* torch.linspace(start, end, steps)[j], in double (both halves as ATen computes them). */
static double linspace(double start, double end, int steps, int j)
{
    const double step = (end - start) / (steps - 1);
    return j < steps / 2 ? start + step * j : end - step * (steps - 1 - j);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* create_dynamic_map(signed, max_exponent_bits=7, total_bits=8) of bitsandbytes: for
   i = 0..6, the midpoints of linspace(0.1, 1, 2^i + 1) (signed; 2^(i+1) + 1 unsigned) times
   10^(i-6), with their negatives when signed; then 0 and 1; sorted. Computed in double and
   rounded to float32 (clopt_q8_map's definition); bitsandbytes computes in float32 torch
   tensors, so the count of entries where that would differ is reported. */
static void dynamic_map(int sign, float out[256])
{
    double d[256];
    size_t k = 0;
    for (int i = 0; i < 7; i++) {
        const int items = sign ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        const double scale = pow(10.0, i - 6);
        for (int j = 0; j + 1 < items; j++) {
            const double mean =
                (linspace(0.1, 1.0, items, j) + linspace(0.1, 1.0, items, j + 1)) / 2.0;
            d[k++] = scale * mean;
            if (sign)
                d[k++] = -scale * mean;
        }
    }
    d[k++] = 0.0;
    d[k++] = 1.0;
    if (k != 256)
        die("the dynamic map does not have 256 entries");
    qsort(d, k, sizeof d[0], cmp_double);
    for (size_t i = 0; i < 256; i++)
        out[i] = (float)d[i];
}

/* The entries where the same computed in float32 arithmetic, as torch does it (linspace's
   step and halves in float), would differ, and by how many float32 ulps at most. */
static size_t float32_map_differences(int sign, const float map[256], int *max_ulps)
{
    float d[256];
    size_t k = 0;
    for (int i = 0; i < 7; i++) {
        const int items = sign ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        const float scale = (float)pow(10.0, i - 6), step = (1.0f - 0.1f) / (float)(items - 1);
        for (int j = 0; j + 1 < items; j++) {
            float b[2];
            for (int h = 0; h < 2; h++) {
                const int jj = j + h;
                b[h] = jj < items / 2 ? 0.1f + step * (float)jj
                                      : 1.0f - step * (float)(items - 1 - jj);
            }
            const float mean = (b[0] + b[1]) / 2.0f;
            d[k++] = scale * mean;
            if (sign)
                d[k++] = -(scale * mean);
        }
    }
    d[k++] = 0.0f;
    d[k++] = 1.0f;
    qsort(d, k, sizeof d[0], cmp_float);
    size_t diff = 0;
    *max_ulps = 0;
    for (size_t i = 0; i < k; i++) {
        const int u = abs((int)(f32_bits(fabsf(map[i])) - f32_bits(fabsf(d[i]))));
        diff += u != 0;
        *max_ulps = u > *max_ulps ? u : *max_ulps;
    }
    return diff;
}

static float g_map[2][256]; /* [signed], filled by gen_check_maps */

int gen_check_maps(void)
{
    int bad = 0;
    for (int s = 0; s < 2; s++) {
        float lib[256];
        dynamic_map(s, g_map[s]);
        clopt_q8_map(s, lib);
        if (memcmp(lib, g_map[s], sizeof lib) != 0) {
            for (int i = 0; i < 256; i++)
                if (f32_bits(lib[i]) != f32_bits(g_map[s][i]))
                    fprintf(stderr, "  %s map [%d]: clopt %.9g, transcription %.9g\n",
                            s ? "signed" : "unsigned", i, lib[i], g_map[s][i]);
            fprintf(stderr, "gen_storage_cases: clopt_q8_map differs from bitsandbytes' map\n");
            bad = 1;
        }
        int ulps;
        const size_t diff = float32_map_differences(s, g_map[s], &ulps);
        printf("8-bit %s map: %s clopt_q8_map; computed in float32 as torch does, %zu of 256 "
               "entries would differ (by at most %d float32 ulps)\n",
               s ? "signed" : "unsigned", bad ? "checked against" : "equal to", diff, ulps);
    }
    return bad ? -1 : 0;
}

/* The nearest entry of the sorted map to v, ties to the lower code (as clopt's q8_code). */
static uint8_t nearest_code(double v, const float *map)
{
    unsigned lo = 0;
    for (unsigned step = 128; step > 0; step >>= 1)
        if (map[lo + step] <= v)
            lo += step;
    if (lo < 255 && map[lo + 1] - v < v - map[lo])
        lo++;
    return (uint8_t)lo;
}

/* ---- rules ------------------------------------------------------------------------------ */

/* Hyperparameters exactly representable in float32 (the kernels take float), so that a
   float32 implementation differs from the reference by its arithmetic only: β = float(0.9)
   etc. (1 - β is then a float too), lr and weight decay powers of two. */
void gen_hyper(clopt_rule rule, clopt_hparams *hp)
{
    ref_hparams_default(rule, hp);
    switch (rule) {
    case CLOPT_ADAMW:
        hp->lr = 0x1p-9;
        hp->beta1 = (float)0.9;
        hp->beta2 = (float)0.999;
        hp->eps = (float)1e-8;
        hp->weight_decay = 0x1p-4;
        break;
    case CLOPT_SGD:
        hp->lr = 0x1p-5;
        hp->momentum = (float)0.9;
        break;
    default: /* Lion */
        hp->lr = 0x1p-10;
        hp->beta1 = (float)0.9;
        hp->beta2 = (float)0.99;
        hp->weight_decay = 0x1p-3;
        break;
    }
}

/* Scales of θ_0 and of the gradients, so that θ moves by about one bf16 ulp per step. */
void gen_scales(clopt_rule rule, double *pscale, double *gscale)
{
    *pscale = rule == CLOPT_LION ? 0.125 : 0.25;
    *gscale = rule == CLOPT_SGD ? 0.02 : 1.0;
}

const char *gen_equations(clopt_rule rule)
{
    switch (rule) {
    case CLOPT_ADAMW:
        return "g = grad_t / grad_scale; theta = theta*(1 - lr*weight_decay) [decoupled decay, "
               "first]; m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g; theta = theta - "
               "(lr/(1-beta1^t)) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)";
    case CLOPT_SGD:
        return "g = grad_t / grad_scale (+ weight_decay*theta); step 1: b = g; later b = "
               "momentum*b + (1-dampening)*g; theta = theta - lr*b";
    default:
        return "g = grad_t / grad_scale; theta = theta*(1 - lr*weight_decay); c = beta1*m + "
               "(1-beta1)*g; theta = theta - lr*sign(c) (sign(0) = 0); m = beta2*m + (1-beta2)*g";
    }
}

/* The rule in float32, as clopt's kernels order it (kernels/adam.cl, sgd.cl, sign.cl);
   param, grad and state hold float32 values in doubles. */
static void f32_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n,
                     double *param, const double *grad, double *state[CLOPT_MAX_STATE],
                     double grad_scale)
{
    const float gmul = (float)(1.0 / (grad_scale == 0.0 ? 1.0 : grad_scale));
    const float lr = (float)hp->lr, lrwd = (float)(hp->lr * hp->weight_decay);
    const float b1 = (float)hp->beta1, omb1 = (float)(1.0 - hp->beta1);
    const float b2 = (float)hp->beta2, omb2 = (float)(1.0 - hp->beta2);
    const double bc1 = 1.0 - pow(hp->beta1, (double)t), bc2 = 1.0 - pow(hp->beta2, (double)t);
    const float step_size = (float)(hp->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    for (size_t i = 0; i < n; i++) {
        float p = (float)param[i], g = (float)grad[i] * gmul;
        if (rule == CLOPT_ADAMW) {
            p = p - lrwd * p;
            const float m = b1 * (float)state[0][i] + omb1 * g;
            const float v = b2 * (float)state[1][i] + omb2 * g * g;
            const float denom = sqrtf(v) * inv_sqrt_bc2 + (float)hp->eps;
            p = p - step_size * (m / denom);
            state[0][i] = m, state[1][i] = v;
        } else if (rule == CLOPT_SGD) { /* no weight decay, dampening 0 */
            const float b = t == 1 ? g : (float)hp->momentum * (float)state[0][i] + g;
            p = p - lr * b;
            state[0][i] = b;
        } else {
            p = p - lrwd * p;
            const float m = (float)state[0][i], c = b1 * m + omb1 * g;
            p = p - lr * (float)((c > 0) - (c < 0));
            state[0][i] = b2 * m + omb2 * g;
        }
        param[i] = p;
    }
}

/* Lion's sign of c = β1 m + (1-β1) g must not depend on float32 rounding: the elements where
   it could. */
static size_t lion_margin(const clopt_hparams *hp, size_t n, const double *m,
                          const double *grad, double grad_scale)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double g = grad[i] / grad_scale, a = hp->beta1 * m[i], b = (1.0 - hp->beta1) * g;
        bad += fabs(a + b) <= 1e-5 * (fabs(a) + fabs(b));
    }
    return bad;
}

void gen_model_init(model *md, const spec *s, const clopt_hparams *hp, const double *theta0)
{
    const size_t n = s->rows * s->cols;
    memset(md, 0, sizeof *md);
    md->n = n;
    md->nstate = ref_state_count(s->rule, hp);
    md->theta = xcalloc(n, sizeof(double));
    memcpy(md->theta, theta0, n * sizeof(double));
    if (s->master == CLOPT_MASTER_F32) {
        md->master = xcalloc(n, sizeof(double));
        memcpy(md->master, theta0, n * sizeof(double)); /* the master starts as θ */
    }
    if (s->master == CLOPT_MASTER_REMAINDER)
        md->rem = xcalloc(n, sizeof(uint16_t)); /* zeros: the master is θ */
    for (size_t k = 0; k < md->nstate; k++) {
        md->state[k] = xcalloc(n, sizeof(double)); /* every state starts at 0 here */
        md->sgn[k] = strcmp(ref_state_name(s->rule, hp, k), "exp_avg_sq") != 0;
        if (s->state == CLOPT_DTYPE_U8) {
            md->code[k] = xcalloc(n, 1);
            md->absmax[k] = xcalloc((n + GEN_QBLOCK - 1) / GEN_QBLOCK, sizeof(float));
            memset(md->code[k], nearest_code(0.0, g_map[md->sgn[k]]), n); /* the code of 0 */
        }
    }
}

void gen_model_free(model *md)
{
    free(md->theta);
    free(md->master);
    free(md->rem);
    for (size_t k = 0; k < md->nstate; k++) {
        free(md->state[k]);
        free(md->code[k]);
        free(md->absmax[k]);
    }
}

/* The float32 master of a bf16 θ word and its remainder word. */
static double remainder_join(double theta, uint16_t r)
{
    const uint32_t hi = f32_bits((float)theta) & 0xFFFF0000u;
    return f32_of_bits(hi + (uint32_t)(int32_t)(int16_t)r);
}

/* One step t of a model: load the stored values, run the rule (float64 reference or float32
   model), round every stored tensor from the result. */
size_t gen_model_step(model *md, const spec *s, const clopt_hparams *hp, uint64_t t,
                      const double *grad, int float32)
{
    const size_t n = md->n;
    double *th = xcalloc(n, sizeof(double)), *st[CLOPT_MAX_STATE] = {0};
    for (size_t i = 0; i < n; i++)
        th[i] = md->master ? md->master[i] : md->rem ? remainder_join(md->theta[i], md->rem[i])
                                                     : md->theta[i];
    for (size_t k = 0; k < md->nstate; k++) {
        st[k] = xcalloc(n, sizeof(double));
        for (size_t i = 0; i < n; i++)
            st[k][i] = md->code[k] ? (double)g_map[md->sgn[k]][md->code[k][i]] *
                                         md->absmax[k][i / GEN_QBLOCK]
                                   : md->state[k][i];
    }
    const double gs = s->grad_scale == 0.0 ? 1.0 : s->grad_scale;
    const size_t close =
        s->rule == CLOPT_LION && !float32 ? lion_margin(hp, n, st[0], grad, gs) : 0;
    if (float32)
        f32_step(s->rule, hp, t, n, th, grad, st, gs);
    else
        ref_step(s->rule, hp, t, n, th, grad, st, NULL, NULL, gs);

    for (size_t k = 0; k < md->nstate; k++) {
        if (!md->code[k]) {
            for (size_t i = 0; i < n; i++)
                md->state[k][i] = to_dtype(st[k][i], s->state, RNE, 0);
            continue;
        }
        for (size_t b = 0; b * GEN_QBLOCK < n; b++) {
            const size_t e0 = b * GEN_QBLOCK, e1 = e0 + GEN_QBLOCK < n ? e0 + GEN_QBLOCK : n;
            double mx = 0.0;
            for (size_t i = e0; i < e1; i++)
                mx = fmax(mx, fabs(st[k][i]));
            const float am = (float)mx;
            md->absmax[k][b] = am;
            for (size_t i = e0; i < e1; i++)
                md->code[k][i] = nearest_code(am > 0 ? st[k][i] / am : 0.0, g_map[md->sgn[k]]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (md->master) {
            md->master[i] = (float)th[i];
            md->theta[i] = to_dtype(md->master[i], s->param, RNE, 0);
        } else if (md->rem) {
            /* θ: the float32 master rounded to nearest, ties away from zero; r: the rest
               (a NaN that would carry into the sign bit: truncated, still a NaN) */
            const uint32_t b = f32_bits((float)th[i]);
            const uint32_t h = (b + ((b & 0x7FFFFFFFu) >= 0x7FFF8000u ? 0u : 0x8000u)) >> 16;
            md->theta[i] = f32_of_bits(h << 16);
            md->rem[i] = (uint16_t)((b - (h << 16)) & 0xFFFFu);
        } else {
            const unsigned r = s->sr ? ref_sr_value(i, s->sr_seed, s->sr_stream, t) : 0;
            md->theta[i] = to_dtype(th[i], s->param, s->sr ? SR : RNE, r);
        }
    }
    free(th);
    for (size_t k = 0; k < md->nstate; k++)
        free(st[k]);
    return close;
}

