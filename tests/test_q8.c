/* SPDX-License-Identifier: MIT */
/* Optimizer state in bf16 or 8-bit blockwise (clopt_step_args.state_dtype and state_absmax,
 * clopt_alloc_state_ex, clopt_q8_map, clopt_hparams.state_dtype), against references written
 * here from the documented semantics and from bitsandbytes' scheme, never from the kernels
 * (the library's map is read back only to compare it with the transcription below):
 *  - the maps against a transcription of bitsandbytes' create_dynamic_map(signed, 7, 8);
 *  - one step from a known 8-bit state (random codes, random absmaxes with zero blocks,
 *    nonzero offsets, guards) of SGD, Adam, AdamW, Lion, RMSprop, Adagrad and AdEMAMix over
 *    sizes around the block of 256 and the optimizer level's 4096, against a double-precision
 *    transcription: dequantize, the rule (tests/ref: torch semantics, AdEMAMix's official
 *    code), the block's absmax, the nearest code; θ from the new state before it is
 *    quantized;
 *  - 100 steps against the double transcription of the whole 8-bit algorithm and, looser,
 *    against the float32 rule;
 *  - blocks cut by a tensor's end, zero blocks that stay zero, 1-element tensors, the
 *    initial states of clopt_alloc_state_ex;
 *  - exact ties (the lower code) and values one ulp off a midpoint (the nearer code), in both
 *    maps, every boundary between two codes, NaN and the host's code table;
 *  - bf16 state of every element-wise rule, bit for bit the float32 rule on the same values
 *    with the new state rounded to nearest even;
 *  - the optimizer level: float32 state under 4096 elements, state entries and bytes, bit for
 *    bit the op level, checkpoints resuming bit for bit, what is refused;
 *  - bad op-level arguments refused with every buffer unchanged.
 * In this file the maps, one step and 100 steps; the edges are in test_q8_edges.c, the codes
 * in test_q8_codes.c, the last three in test_q8_opt.c (one executable; shared helpers in
 * test_q8.h). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "ref.h"
#include "ref_modern.h"
#include "test_q8.h"


/* ---- small helpers ----------------------------------------------------------------------- */

size_t buf_bytes(cl_mem m)
{
    size_t s = 0;
    assert_int_equal(clGetMemObjectInfo(m, CL_MEM_SIZE, sizeof s, &s, NULL), CL_SUCCESS);
    return s;
}

void step_ok(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
             const clopt_step_args *a, size_t n, uint64_t t, const char *label)
{
    const clopt_status s = clopt_enqueue_step(ctx, NULL, rule, hp, a, n, t, 0, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        print_error("%s (n %zu, step %llu): %s (%s)\n", label, n, (unsigned long long)t,
                    clopt_status_name(s), clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
}

double unif(uint64_t *s, double lo, double hi) { return lo + (hi - lo) * ref_uniform(s); }

size_t nblocks(size_t n) { return (n + 255) / 256; }

/* The states that change sign take the signed map (exp_avg, momentum_buffer, grad_avg), the
   non-negative ones the unsigned map (previous_grad, diffGrad's, has no 8-bit state; it is
   listed for the bf16 test's random states). */
int state_signed(const char *name)
{
    return strcmp(name, "exp_avg") == 0 || strcmp(name, "momentum_buffer") == 0 ||
           strcmp(name, "grad_avg") == 0 || strcmp(name, "previous_grad") == 0 ||
           strcmp(name, "exp_avg_fast") == 0 || strcmp(name, "exp_avg_slow") == 0;
}

static const char *const ademamix_states[] = {"exp_avg_fast", "exp_avg_slow", "exp_avg_sq"};

size_t q8_state_count(clopt_rule rule, const clopt_hparams *hp)
{
    return rule == CLOPT_ADEMAMIX ? 3 : ref_state_count(rule, hp);
}

const char *q8_state_name(clopt_rule rule, const clopt_hparams *hp, size_t k)
{
    if (rule == CLOPT_ADEMAMIX)
        return k < 3 ? ademamix_states[k] : NULL;
    return ref_state_name(rule, hp, k);
}

void q8_ref_step(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, double *param,
                 const double *grad, double *state[CLOPT_MAX_STATE])
{
    if (rule == CLOPT_ADEMAMIX)
        ref_ademamix_step(hp, t, n, param, grad, state, 1.0);
    else
        ref_step(rule, hp, t, n, param, grad, state, NULL, NULL, 1.0);
}

/* bf16 by value: the word of x's top half and the next one, the nearer (ties to the even
   word). Finite x only. */
float bf16_val(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t bf16_rne(float x)
{
    const uint16_t lo = (uint16_t)(f2u(x) >> 16), hi = (uint16_t)(lo + 1u);
    const double dl = fabs((double)x - (double)bf16_val(lo));
    const double dh = fabs((double)bf16_val(hi) - (double)x);
    return (dl < dh || (dl == dh && !(lo & 1u))) ? lo : hi;
}

/* ---- bitsandbytes' dynamic map, transcribed ---------------------------------------------- */

static double QMAPD[2][256]; /* [signed]: the transcription in double */
float QMAP[2][256]; /* rounded to float32, as the library documents its map */
unsigned QZERO[2];   /* the code of 0 */
static int QMAP_READY;

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* bitsandbytes/functional.py:
     def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
         data = []
         non_sign_bits = total_bits - (1 if signed else 1)
         additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
         for i in range(max_exponent_bits):
             fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                                  else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
             boundaries = torch.linspace(0.1, 1, fraction_items)
             means = (boundaries[:-1] + boundaries[1:]) / 2.0
             data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
             if signed:
                 data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
         if additional_items > 0: ...            (0 items with these arguments)
         data.append(0)
         data.append(1.0)
         ... data.sort()
   computed here in double (torch works in float32: the values differ in the last bits). */
static void bnb_dynamic_map(int sgn, double out[256])
{
    const int total_bits = 8, max_exponent_bits = 7;
    const int non_sign_bits = total_bits - 1;
    const int additional_items = (1 << (non_sign_bits - max_exponent_bits)) - 1;
    assert_int_equal(additional_items, 0);
    size_t k = 0;
    for (int i = 0; i < max_exponent_bits; i++) {
        const int fraction_items = sgn ? (1 << (i + non_sign_bits - max_exponent_bits)) + 1
                                       : (1 << (i + non_sign_bits - max_exponent_bits + 1)) + 1;
        const double scale = pow(10.0, (double)(-(max_exponent_bits - 1) + i));
        double boundaries[130];
        assert_true(fraction_items <= 130);
        for (int j = 0; j < fraction_items; j++) /* torch.linspace(start, end, steps) */
            boundaries[j] = 0.1 + (1.0 - 0.1) * (double)j / (double)(fraction_items - 1);
        for (int j = 0; j + 1 < fraction_items; j++) {
            const double mean = (boundaries[j] + boundaries[j + 1]) / 2.0;
            assert_true(k + 2 <= 256);
            out[k++] = scale * mean;
            if (sgn)
                out[k++] = -scale * mean;
        }
    }
    out[k++] = 0.0;
    out[k++] = 1.0;
    assert_int_equal(k, 256);
    qsort(out, 256, sizeof out[0], cmp_double);
}

/* The last code whose value is <= x (0 when x lies below the map). */
static unsigned map_floor(const float *map, double x)
{
    unsigned lo = 0, hi = 256; /* the first index with map[i] > x lies in [lo, hi] */
    while (lo < hi) {
        const unsigned mid = (lo + hi) / 2;
        if ((double)map[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? lo - 1 : 0;
}

/* The code nearest to x, ties to the lower code. */
unsigned map_nearest(const float *map, double x)
{
    const unsigned a = map_floor(map, x);
    if (a == 255)
        return a;
    const double da = fabs(x - (double)map[a]), db = fabs((double)map[a + 1] - x);
    return db < da ? a + 1 : a;
}

void maps_init(void)
{
    if (QMAP_READY)
        return;
    for (int sg = 0; sg < 2; sg++) {
        bnb_dynamic_map(sg, QMAPD[sg]);
        for (int i = 0; i < 256; i++)
            QMAP[sg][i] = (float)QMAPD[sg][i];
        QZERO[sg] = map_nearest(QMAP[sg], 0.0);
        assert_true(QMAP[sg][QZERO[sg]] == 0.0f);
    }
    QMAP_READY = 1;
}

/* ---- 1. the maps ------------------------------------------------------------------------- */

static void test_map(void **state)
{
    (void)state;
    maps_init();
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_U8), 1);
    assert_string_equal(clopt_dtype_name(CLOPT_DTYPE_U8), "u8");
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_BF16), 2);
    for (int sg = 0; sg < 2; sg++) {
        float lib[257];
        lib[256] = 12345.0f; /* exactly 256 values written */
        clopt_q8_map(sg, lib);
        assert_true(lib[256] == 12345.0f);
        size_t zeros = 0, ones = 0, neg = 0, bad = 0;
        for (int i = 0; i < 256; i++) {
            if (i > 0 && !(lib[i] > lib[i - 1]))
                bad++, print_error("map %d: [%d] %a not above [%d] %a\n", sg, i, (double)lib[i],
                                   i - 1, (double)lib[i - 1]);
            /* within float rounding: torch's float32 linspace/means or a double computation
               rounded once */
            const double want = QMAPD[sg][i];
            if (!(fabs((double)lib[i] - want) <= 2 * EPSF * fabs(want)))
                bad++, print_error("map %d: [%d] %.9g, bitsandbytes %.9g\n", sg, i,
                                   (double)lib[i], want);
            zeros += lib[i] == 0.0f, ones += lib[i] == 1.0f, neg += lib[i] < 0.0f;
            assert_true(lib[i] >= -1.0f && lib[i] <= 1.0f);
        }
        assert_int_equal(bad, 0);
        assert_int_equal(zeros, 1);
        assert_int_equal(ones, 1);
        assert_int_equal(neg, sg ? 127 : 0);
        assert_true(lib[255] == 1.0f);
        assert_true(lib[QZERO[sg]] == 0.0f);
        assert_int_equal(QZERO[sg], sg ? 127u : 0u);
    }
    /* by hand: the smallest positive value is 10^-6 times the first midpoint of
       linspace(0.1, 1, 2) (signed: 0.55) or linspace(0.1, 1, 3) (unsigned: 0.325); the
       largest below 1 is the last midpoint of 64 (signed: 0.99296875) or 128 intervals
       (unsigned: 0.996484375); the signed map has no -1 */
    const struct {
        int sg, i;
        double v;
    } known[] = {{1, 128, 0.55e-6},      {1, 126, -0.55e-6},     {1, 254, 0.99296875},
                 {1, 0, -0.99296875},    {1, 255, 1.0},          {0, 1, 0.325e-6},
                 {0, 2, 0.775e-6},       {0, 254, 0.996484375},  {0, 0, 0.0}};
    for (size_t j = 0; j < sizeof known / sizeof known[0]; j++) {
        float lib[256];
        clopt_q8_map(known[j].sg, lib);
        assert_true(fabs((double)lib[known[j].i] - known[j].v) <= 2 * EPSF * fabs(known[j].v));
    }
}

/* ---- 8-bit blockwise state, by value ------------------------------------------------------ */


void q8_alloc(q8s *s, size_t n, int sg)
{
    s->n = n;
    s->sg = sg;
    s->code = xmalloc(n);
    s->amax = xmalloc(nblocks(n) * sizeof(float));
}

void q8_free(q8s *s)
{
    free(s->code);
    free(s->amax);
    memset(s, 0, sizeof *s);
}

void q8run_free(q8run *r)
{
    free(r->theta);
    for (size_t k = 0; k < r->ns; k++)
        q8_free(&r->st[k]);
    memset(r, 0, sizeof *r);
}

/* Element i is map[code] * absmax of its block. */
static void q8_dequant(const q8s *s, double *out)
{
    for (size_t i = 0; i < s->n; i++)
        out[i] = (double)QMAP[s->sg][s->code[i]] * (double)s->amax[i / 256];
}

/* Each block's absmax is max |v| over its elements; each code the nearest of v / absmax (the
   code of 0 for an absmax of 0). */
static void q8_quant(q8s *s, const double *v)
{
    for (size_t b = 0; b < nblocks(s->n); b++) {
        const size_t i0 = b * 256, i1 = i0 + 256 < s->n ? i0 + 256 : s->n;
        double A = 0.0;
        for (size_t i = i0; i < i1; i++)
            A = fmax(A, fabs(v[i]));
        s->amax[b] = (float)A;
        for (size_t i = i0; i < i1; i++)
            s->code[i] = (unsigned char)(A > 0 ? map_nearest(QMAP[s->sg], v[i] / A) : QZERO[s->sg]);
    }
}

/* ---- the rules with 8-bit state, with hyperparameters exact in float32 --------------------- */

int q8_config(int i, clopt_rule *rule, clopt_hparams *hp, uint64_t *t, const char **label)
{
    switch (i) {
    case 0:
        *rule = CLOPT_ADAM, *label = "adam amsgrad L2", *t = 3;
        break;
    case 1:
        *rule = CLOPT_ADAMW, *label = "adamw maximize", *t = 5;
        break;
    case 2:
        *rule = CLOPT_SGD, *label = "sgd momentum dampening", *t = 4;
        break;
    case 3:
        *rule = CLOPT_SGD, *label = "sgd nesterov", *t = 2;
        break;
    case 4:
        *rule = CLOPT_SGD, *label = "sgd step 1 (b = g)", *t = 1;
        break;
    case 5:
        *rule = CLOPT_LION, *label = "lion", *t = 7;
        break;
    case 6:
        *rule = CLOPT_RMSPROP, *label = "rmsprop momentum", *t = 3;
        break;
    case 7:
        *rule = CLOPT_RMSPROP, *label = "rmsprop momentum maximize", *t = 3;
        break;
    case 8:
        *rule = CLOPT_RMSPROP, *label = "rmsprop", *t = 2;
        break;
    case 9:
        *rule = CLOPT_ADAGRAD, *label = "adagrad lr_decay L2", *t = 4;
        break;
    case 10:
        *rule = CLOPT_ADEMAMIX, *label = "ademamix", *t = 6;
        break;
    default:
        return 0;
    }
    assert_int_equal(clopt_hparams_default(*rule, hp), CLOPT_SUCCESS);
    switch (i) {
    case 0:
        hp->lr = 0x1p-8, hp->beta1 = 0.875, hp->beta2 = 1 - 0x1p-10, hp->amsgrad = 1;
        hp->weight_decay = 0x1p-7;
        break;
    case 1:
        hp->lr = 0x1p-8, hp->beta1 = 0.875, hp->beta2 = 1 - 0x1p-10, hp->weight_decay = 0x1p-4;
        hp->maximize = 1;
        break;
    case 2:
    case 4:
        hp->lr = 0x1p-6, hp->momentum = 0.875, hp->dampening = 0.25, hp->weight_decay = 0x1p-7;
        break;
    case 3:
        hp->lr = 0x1p-6, hp->momentum = 0.75, hp->nesterov = 1;
        break;
    case 5:
        hp->lr = 0x1p-10, hp->weight_decay = 0x1p-3, hp->beta1 = 0.875, hp->beta2 = 1 - 0x1p-6;
        break;
    case 6:
    case 7:
        hp->lr = 0x1p-8, hp->alpha = 1 - 0x1p-7, hp->momentum = 0.875, hp->weight_decay = 0x1p-7;
        hp->maximize = i == 7; /* (centered RMSprop has no 8-bit state) */
        break;
    case 8:
        hp->lr = 0x1p-8, hp->alpha = 1 - 0x1p-5;
        break;
    case 9:
        hp->lr = 0x1p-5, hp->lr_decay = 0x1p-5, hp->weight_decay = 0x1p-7;
        hp->initial_accumulator_value = 0.125;
        break;
    case 10:
        hp->lr = 0x1p-8, hp->beta1 = 0.875, hp->beta2 = 1 - 0x1p-10, hp->beta3 = 1 - 0x1p-8;
        hp->alpha = 2.0, hp->weight_decay = 0x1p-4;
        break;
    default:
        break;
    }
    const char *why = "";
    assert_int_equal(clopt_hparams_validate(*rule, hp, &why), CLOPT_SUCCESS);
    return 1;
}

/* Bounds for one step's rounding errors: the same step with every term taken by its
   magnitude (|θ|, |g|, |state|), so that no sum cancels: sabs[k] bounds the terms of state
   k's new value, dth the terms of θ's change. RMSprop is written out, with the true
   denominator. */
static void abs_bounds(clopt_rule rule, const clopt_hparams *hp, uint64_t t, size_t n, size_t ns,
                       const float *theta0, const double *g, double *const old[], double *dth,
                       double *sabs[])
{
    double *th = xmalloc(n * sizeof *th), *ga = xmalloc(n * sizeof *ga);
    for (size_t i = 0; i < n; i++)
        th[i] = fabs((double)theta0[i]), ga[i] = fabs(g[i]);
    for (size_t k = 0; k < ns; k++)
        for (size_t i = 0; i < n; i++)
            sabs[k][i] = fabs(old[k][i]);
    if (rule == CLOPT_RMSPROP) {
        size_t k = 0;
        const size_t kv = k++, kb = hp->momentum > 0 ? k++ : 99;
        const double al = hp->alpha, wd = hp->weight_decay;
        for (size_t i = 0; i < n; i++) {
            const double ge = (hp->maximize ? -g[i] : g[i]) + wd * (double)theta0[i];
            const double gabs = ga[i] + wd * th[i];
            const double vn = al * old[kv][i] + (1 - al) * ge * ge;
            const double d = sqrt(vn) + hp->eps;
            sabs[kv][i] = al * old[kv][i] + (1 - al) * gabs * gabs;
            if (kb != 99) {
                sabs[kb][i] = hp->momentum * fabs(old[kb][i]) + gabs / d;
                dth[i] = hp->lr * sabs[kb][i];
            } else {
                dth[i] = hp->lr * gabs / d;
            }
        }
    } else {
        clopt_hparams h = *hp;
        h.maximize = 0;
        q8_ref_step(rule, &h, t, n, th, ga, sabs);
        for (size_t i = 0; i < n; i++)
            dth[i] = fabs(fabs((double)theta0[i]) - th[i]);
    }
    free(th);
    free(ga);
}


/* One step's result against the reference: rnew[k] the reference's new state (before
   quantization), sabs its error bounds, got the device's codes and absmaxes; θ: gth against
   rth. amb: elements whose θ is not checked (Lion's sign of a sum that nearly cancels). */
static size_t q8_compare(const char *label, size_t n, size_t ns, const int *sg, double coeff,
                         double *const rnew[], double *const sabs[], const q8s *got,
                         const float *theta0, const double *rth, const double *dth,
                         const float *gth, const unsigned char *amb, q8stats *st)
{
    size_t bad = 0;
    const double kst = 16 * EPSF + coeff;
    for (size_t k = 0; k < ns; k++) {
        const float *map = QMAP[sg[k]];
        for (size_t b = 0; b < nblocks(n); b++) {
            const size_t i0 = b * 256, i1 = i0 + 256 < n ? i0 + 256 : n;
            double A = 0, dmax = 0;
            for (size_t i = i0; i < i1; i++)
                A = fmax(A, fabs(rnew[k][i])), dmax = fmax(dmax, kst * sabs[k][i]);
            const double tolA = 1e-6 * A + dmax, Ag = (double)got[k].amax[b];
            if (!(fabs(Ag - A) <= tolA) && bad++ < 8)
                print_error("%s n %zu state %zu block %zu: absmax %.9g, reference %.9g "
                            "(tol %.3g)\n",
                            label, n, k, b, Ag, A, tolA);
            for (size_t i = i0; i < i1; i++) {
                const double r = rnew[k][i], delta = kst * sabs[k][i];
                const unsigned c = got[k].code[i];
                st->values++;
                if (A == 0) {
                    if (c != QZERO[sg[k]] && bad++ < 8)
                        print_error("%s n %zu state %zu [%zu]: code %u in a block of absmax 0\n",
                                    label, n, k, i, c);
                    continue;
                }
                const double x = r / A;
                const unsigned kr = map_nearest(map, x);
                if (c != kr) {
                    const int adj = c + 1 == kr || kr + 1 == c;
                    const double mid = ((double)map[c] + (double)map[kr]) / 2;
                    const double w = (delta + fabs(x) * tolA) / A + 8 * EPSF * fabs(mid);
                    if (adj && fabs(x - mid) <= w)
                        st->ties++;
                    else if (bad++ < 8)
                        print_error("%s n %zu state %zu [%zu]: code %u (%.9g), nearest of %.9g is "
                                    "%u (%.9g)\n",
                                    label, n, k, i, c, (double)map[c], x, kr, (double)map[kr]);
                }
                unsigned lo = map_floor(map, x);
                if (lo == 255)
                    lo = 254;
                const double gap = ((double)map[lo + 1] - (double)map[lo]) * A;
                const double e = fabs((double)map[c] * Ag - r);
                if (!(e <= gap + tolA + delta) && bad++ < 8)
                    print_error("%s n %zu state %zu [%zu]: %.9g dequantized, reference %.9g (one "
                                "code step %.3g)\n",
                                label, n, k, i, (double)map[c] * Ag, r, gap);
                if (gap > 0)
                    st->state_worst = fmax(st->state_worst, e / gap);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (amb && amb[i]) {
            st->skipped++;
            continue;
        }
        const double scale = fabs((double)theta0[i]) + dth[i];
        const double err = fabs((double)gth[i] - rth[i]);
        if (!(err <= 32 * EPSF * scale + coeff * dth[i]) && bad++ < 8)
            print_error("%s n %zu θ[%zu]: %.9g, reference %.9g (θ0 %.9g)\n", label, n, i,
                        (double)gth[i], rth[i], (double)theta0[i]);
        if (scale > 0)
            st->theta_worst = fmax(st->theta_worst, err / (EPSF * scale));
    }
    return bad;
}

/* ---- an 8-bit run on the device, with offsets and guards --------------------------------- */

#define GUARD_THETA 1234.5f
#define GUARD_GRAD 1000.0f  /* a gradient that would dominate any absmax it reached */
#define GUARD_AMAX 1.0e6f
#define GUARD_CODE 0xFFu


static void fill_f(unsigned char *dst, size_t count, float v)
{
    for (size_t i = 0; i < count; i++)
        memcpy(dst + i * 4, &v, 4);
}

void q8dev_make(clopt_ctx *ctx, q8dev *d, size_t n, const float *theta, const float *grad,
                       size_t ns, const q8s *st)
{
    memset(d, 0, sizeof *d);
    d->n = n, d->ns = ns;
    const size_t nb = nblocks(n);
    d->pb = (PO + n + GUARD) * 4;
    d->pimg = xmalloc(d->pb);
    fill_f(d->pimg, PO, GUARD_THETA);
    memcpy(d->pimg + PO * 4, theta, n * 4);
    fill_f(d->pimg + (PO + n) * 4, GUARD, -GUARD_THETA);
    d->p = buf_new(ctx, d->pb, d->pimg);
    d->gb = (GO + n + GUARD) * 4;
    d->gimg = xmalloc(d->gb);
    fill_f(d->gimg, GO, -GUARD_GRAD);
    memcpy(d->gimg + GO * 4, grad, n * 4);
    fill_f(d->gimg + (GO + n) * 4, GUARD, GUARD_GRAD);
    d->g = buf_new(ctx, d->gb, d->gimg);
    clopt_step_args_init(&d->args);
    d->args.param = (clopt_tensor){d->p, PO};
    d->args.grad = (clopt_tensor){d->g, GO};
    d->args.state_dtype = CLOPT_DTYPE_U8;
    for (size_t k = 0; k < ns; k++) {
        d->co[k] = 8 + 3 * k, d->ao[k] = 2 + k; /* codes at 0, 3, 2 mod 4: word and byte stores */
        d->cb[k] = d->co[k] + n + GUARD;
        d->cimg[k] = xmalloc(d->cb[k]);
        memset(d->cimg[k], (int)GUARD_CODE, d->cb[k]);
        memcpy(d->cimg[k] + d->co[k], st[k].code, n);
        d->c[k] = buf_new(ctx, d->cb[k], d->cimg[k]);
        d->ab[k] = (d->ao[k] + nb + GUARD) * 4;
        d->aimg[k] = xmalloc(d->ab[k]);
        fill_f(d->aimg[k], d->ao[k] + nb + GUARD, GUARD_AMAX);
        memcpy(d->aimg[k] + d->ao[k] * 4, st[k].amax, nb * 4);
        d->a[k] = buf_new(ctx, d->ab[k], d->aimg[k]);
        d->args.state[k] = (clopt_tensor){d->c[k], d->co[k]};
        d->args.state_absmax[k] = (clopt_tensor){d->a[k], d->ao[k]};
    }
}

void q8dev_read(clopt_ctx *ctx, const q8dev *d, float *theta, q8s *st)
{
    buf_read(ctx, d->p, PO * 4, d->n * 4, theta);
    for (size_t k = 0; k < d->ns; k++) {
        buf_read(ctx, d->c[k], d->co[k], d->n, st[k].code);
        buf_read(ctx, d->a[k], d->ao[k] * 4, nblocks(d->n) * 4, st[k].amax);
    }
}

size_t q8dev_guards(clopt_ctx *ctx, const q8dev *d, const char *label)
{
    size_t bad = 0;
    const size_t n = d->n, nb = nblocks(n);
    unsigned char *b = xmalloc(d->pb > d->gb ? d->pb : d->gb);
    buf_read(ctx, d->p, 0, d->pb, b);
    if (memcmp(b, d->pimg, PO * 4) || memcmp(b + (PO + n) * 4, d->pimg + (PO + n) * 4, GUARD * 4))
        bad++, print_error("%s n %zu: θ's buffer written outside the tensor\n", label, n);
    buf_read(ctx, d->g, 0, d->gb, b);
    if (memcmp(b, d->gimg, d->gb))
        bad++, print_error("%s n %zu: the gradient's buffer changed\n", label, n);
    free(b);
    for (size_t k = 0; k < d->ns; k++) {
        unsigned char *c = xmalloc(d->cb[k]), *a = xmalloc(d->ab[k]);
        buf_read(ctx, d->c[k], 0, d->cb[k], c);
        buf_read(ctx, d->a[k], 0, d->ab[k], a);
        if (memcmp(c, d->cimg[k], d->co[k]) ||
            memcmp(c + d->co[k] + n, d->cimg[k] + d->co[k] + n, GUARD))
            bad++, print_error("%s n %zu: state %zu's codes written outside the tensor\n", label,
                               n, k);
        if (memcmp(a, d->aimg[k], d->ao[k] * 4) ||
            memcmp(a + (d->ao[k] + nb) * 4, d->aimg[k] + (d->ao[k] + nb) * 4, GUARD * 4))
            bad++, print_error("%s n %zu: state %zu's absmaxes written outside its blocks\n", label,
                               n, k);
        free(c);
        free(a);
    }
    return bad;
}

void q8dev_free(q8dev *d)
{
    clReleaseMemObject(d->p);
    clReleaseMemObject(d->g);
    free(d->pimg);
    free(d->gimg);
    for (size_t k = 0; k < d->ns; k++) {
        clReleaseMemObject(d->c[k]);
        clReleaseMemObject(d->a[k]);
        free(d->cimg[k]);
        free(d->aimg[k]);
    }
}

/* ---- 2. one step from a known state ------------------------------------------------------- */

/* A random 8-bit state: random codes, absmaxes in a range per state kind, block 1 at absmax 0
   in every state and block 2 in state 0. */
static void random_state(uint64_t *s, size_t n, size_t ns, const int *sg, q8s *st)
{
    const size_t nb = nblocks(n);
    for (size_t k = 0; k < ns; k++) {
        q8_alloc(&st[k], n, sg[k]);
        for (size_t i = 0; i < n; i++)
            st[k].code[i] = (unsigned char)(ref_splitmix64(s) & 0xFF);
        for (size_t b = 0; b < nb; b++)
            st[k].amax[b] = (float)(sg[k] ? unif(s, 0.05, 0.5) : unif(s, 0.002, 0.02));
        if (nb > 1)
            st[k].amax[1] = 0.0f;
    }
    if (nb > 2)
        st[0].amax[2] = 0.0f;
}

static void random_tensor(uint64_t *s, size_t n, float *theta, float *grad)
{
    double sigma = 0.1;
    for (size_t i = 0; i < n; i++) {
        if (i % 256 == 0)
            sigma = unif(s, 0.02, 0.2);
        theta[i] = (float)ref_normal(s);
        grad[i] = ref_splitmix64(s) % 16 == 0 ? 0.0f : (float)(sigma * ref_normal(s));
    }
}

size_t q8_one_step_case(clopt_ctx *ctx, int ci, size_t n, uint64_t seed, q8stats *stats,
                        q8run *keep)
{
    clopt_rule rule = CLOPT_SGD;
    clopt_hparams hp;
    uint64_t t = 1;
    const char *label = "";
    assert_true(q8_config(ci, &rule, &hp, &t, &label));
    const size_t ns = q8_state_count(rule, &hp);
    assert_int_equal(clopt_rule_state_count(rule, &hp), ns);
    int sg[CLOPT_MAX_STATE];
    for (size_t k = 0; k < ns; k++)
        sg[k] = state_signed(q8_state_name(rule, &hp, k));
    uint64_t s = seed;
    float *theta0 = xmalloc(n * 4), *grad = xmalloc(n * 4), *gth = xmalloc(n * 4);
    random_tensor(&s, n, theta0, grad);
    q8s st0[CLOPT_MAX_STATE], got[CLOPT_MAX_STATE];
    memset(st0, 0, sizeof st0); /* q8_alloc fills them, out of gcc's sight */
    random_state(&s, n, ns, sg, st0);
    for (size_t k = 0; k < ns; k++)
        q8_alloc(&got[k], n, sg[k]);

    q8dev d;
    q8dev_make(ctx, &d, n, theta0, grad, ns, st0);
    step_ok(ctx, rule, &hp, &d.args, n, t, label);
    q8dev_read(ctx, &d, gth, got);
    size_t bad = q8dev_guards(ctx, &d, label);
    if (keep) { /* copies of the device's θ and states */
        keep->n = n, keep->ns = ns;
        keep->theta = xmalloc(n * 4);
        memcpy(keep->theta, gth, n * 4);
        for (size_t k = 0; k < ns; k++) {
            q8_alloc(&keep->st[k], n, sg[k]);
            memcpy(keep->st[k].code, got[k].code, n);
            memcpy(keep->st[k].amax, got[k].amax, nblocks(n) * sizeof(float));
        }
    }
    q8dev_free(&d);

    /* the reference: dequantize, one step of the rule in double; θ from the new state */
    double *old[CLOPT_MAX_STATE] = {0}, *rnew[CLOPT_MAX_STATE] = {0}, *sabs[CLOPT_MAX_STATE] = {0};
    double *rth = xmalloc(n * sizeof(double)), *gd = xmalloc(n * sizeof(double)),
           *dth = xmalloc(n * sizeof(double));
    for (size_t k = 0; k < ns; k++) {
        old[k] = xmalloc(n * sizeof(double));
        rnew[k] = xmalloc(n * sizeof(double));
        sabs[k] = xmalloc(n * sizeof(double));
        q8_dequant(&st0[k], old[k]);
        memcpy(rnew[k], old[k], n * sizeof(double));
    }
    for (size_t i = 0; i < n; i++)
        rth[i] = theta0[i], gd[i] = grad[i];
    q8_ref_step(rule, &hp, t, n, rth, gd, rnew);
    abs_bounds(rule, &hp, t, n, ns, theta0, gd, old, dth, sabs);
    unsigned char *amb = NULL;
    if (rule == CLOPT_LION) { /* sign(β1 m + (1-β1) g) of a sum that cancels is either sign */
        amb = xmalloc(n);
        for (size_t i = 0; i < n; i++) {
            const double ge = hp.maximize ? -gd[i] : gd[i];
            const double c = hp.beta1 * old[0][i] + (1 - hp.beta1) * ge;
            const double cabs = hp.beta1 * fabs(old[0][i]) + (1 - hp.beta1) * fabs(ge);
            amb[i] = cabs > 0 && fabs(c) <= 16 * EPSF * cabs;
        }
    }
    bad += q8_compare(label, n, ns, sg, ref_hparam_coeff_error(rule, &hp), rnew, sabs, got,
                      theta0, rth, dth, gth, amb, stats);
    for (size_t k = 0; k < ns; k++) {
        free(old[k]), free(rnew[k]), free(sabs[k]);
        q8_free(&st0[k]);
        q8_free(&got[k]);
    }
    free(amb);
    free(rth), free(gd), free(dth);
    free(theta0), free(grad), free(gth);
    return bad;
}

static void test_q8_one_step(void **state)
{
    fixture *f = *state;
    maps_init();
    static const size_t full[] = {1, 255, 256, 257, 1000, 4095, 4096};
    static const size_t small[] = {1, 255, 257, 1000};
    const size_t *sizes = test_small() ? small : full;
    const size_t nsizes =
        test_small() ? sizeof small / sizeof small[0] : sizeof full / sizeof full[0];
    size_t bad = 0;
    clopt_rule rule;
    clopt_hparams hp;
    uint64_t t;
    const char *label;
    for (int ci = 0; q8_config(ci, &rule, &hp, &t, &label); ci++) {
        q8stats st = {0};
        size_t b = 0;
        for (size_t j = 0; j < nsizes; j++)
            b += q8_one_step_case(f->ctx, ci, sizes[j], 1000u + 17u * (uint64_t)ci + sizes[j], &st,
                                  NULL);
        print_message("  %-26s %7zu values, %zu near ties, %zu θ skipped (sign); worst θ error "
                      "%.2f u, state %.3f code steps%s\n",
                      label, st.values, st.ties, st.skipped, st.theta_worst, st.state_worst,
                      b ? "  FAILED" : "");
        bad += b;
    }
    assert_int_equal(bad, 0);
}

/* ---- 3. 100 steps ------------------------------------------------------------------------- */

/* A run of T steps from the initial state (clopt_alloc_state_ex) of n elements: the device's
   8-bit run against the double transcription of the 8-bit algorithm (same map, same blocks),
   and against the device's float32 rule. The device's codes are compared with the
   reference's after every step.
   Tolerances (calibrated on PoCL; the worst values are printed):
    - vs the 8-bit transcription, elements whose codes never differed from the reference's:
      |θ - θ_ref| <= 32 u · S_i with S_i = Σ_t (|θ_{t-1}| + |Δθ_t|), the one-step test's
      bound accumulated over the steps.
    - a state value that falls within float rounding of the midpoint between two codes can
      take either (a near tie; the first ones seen were 2e-6 of a code step from the
      midpoint), and the two runs then carry that element's state one code apart, often for
      tens of steps (an EMA moves slowly and both values keep being requantized a cell apart).
      Such elements (seen: 0 to 2 of 1000 per rule over 100 steps; allowed: 1%) are held to
      |θ - θ_ref| <= 10% of their path P_i = Σ_t |Δθ_t|: one code step is 0.7% of the value
      near the absmax and up to ~10% low in the map, and it moves the update by about half
      that through Adam's sqrt(v).
    - vs the float32 rule: the RMS over elements of θ8 - θ32 is at most 10% of the RMS path
      (8-bit noise), and the 8-bit transcription is as far from the double float rule (same
      bound), so the noise is the algorithm's. */
static size_t q8_trajectory(clopt_ctx *ctx, int ci, size_t n, unsigned T, uint64_t seed)
{
    clopt_rule rule = CLOPT_SGD;
    clopt_hparams hp;
    uint64_t t0 = 1;
    const char *label = "";
    assert_true(q8_config(ci, &rule, &hp, &t0, &label));
    const size_t ns = q8_state_count(rule, &hp), nb = nblocks(n);
    int sg[CLOPT_MAX_STATE];
    for (size_t k = 0; k < ns; k++)
        sg[k] = state_signed(q8_state_name(rule, &hp, k));
    uint64_t s = seed;
    float *theta0 = xmalloc(n * 4), *g = xmalloc(n * 4), *th8 = xmalloc(n * 4),
          *th32 = xmalloc(n * 4);
    double *mu = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        theta0[i] = (float)ref_normal(&s), mu[i] = 0.05 * ref_normal(&s);

    /* device: 8-bit state from clopt_alloc_state_ex, float32 state from clopt_alloc_state */
    clopt_tensor q[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE], f32s[CLOPT_MAX_STATE];
    size_t cnt = 99, cnt32 = 99;
    assert_int_equal(clopt_alloc_state_ex(ctx, rule, &hp, n, CLOPT_DTYPE_U8, q, am, &cnt),
                     CLOPT_SUCCESS);
    assert_int_equal(cnt, ns);
    assert_int_equal(clopt_alloc_state(ctx, rule, &hp, n, f32s, &cnt32), CLOPT_SUCCESS);
    assert_int_equal(cnt32, ns);
    cl_mem p8 = buf_new(ctx, n * 4, theta0), p32 = buf_new(ctx, n * 4, theta0),
           gb = buf_new(ctx, n * 4, NULL);
    clopt_step_args a8, a32;
    clopt_step_args_init(&a8);
    clopt_step_args_init(&a32);
    a8.param = (clopt_tensor){p8, 0};
    a32.param = (clopt_tensor){p32, 0};
    a8.grad = a32.grad = (clopt_tensor){gb, 0};
    a8.state_dtype = CLOPT_DTYPE_U8;
    for (size_t k = 0; k < ns; k++) {
        a8.state[k] = q[k], a8.state_absmax[k] = am[k];
        a32.state[k] = f32s[k];
    }

    /* references: the 8-bit algorithm in double from the documented initial state (codes of
       0, absmax 0; Adagrad: code of 1 and absmax = initial_accumulator_value), and the plain
       rule in double */
    q8s rs[CLOPT_MAX_STATE];
    double *tmp[CLOPT_MAX_STATE] = {0}, *plain[CLOPT_MAX_STATE] = {0};
    double *r8 = xmalloc(n * sizeof(double)), *rp = xmalloc(n * sizeof(double)),
           *gd = xmalloc(n * sizeof(double)), *path = xmalloc(n * sizeof(double)),
           *scale = xmalloc(n * sizeof(double)), *before = xmalloc(n * sizeof(double));
    for (size_t k = 0; k < ns; k++) {
        q8_alloc(&rs[k], n, sg[k]);
        const double init = ref_state_init(rule, &hp, k);
        memset(rs[k].code, (int)(init > 0 ? map_nearest(QMAP[sg[k]], 1.0) : QZERO[sg[k]]), n);
        for (size_t b = 0; b < nb; b++)
            rs[k].amax[b] = (float)init;
        tmp[k] = xmalloc(n * sizeof(double));
        plain[k] = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++)
            plain[k][i] = init;
    }
    for (size_t i = 0; i < n; i++)
        r8[i] = rp[i] = theta0[i], path[i] = scale[i] = 0;
    unsigned char *cdev = xmalloc(n);
    unsigned *first_div = calloc(n, sizeof *first_div); /* step of the first differing code */
    assert_non_null(first_div);
    size_t diverged = 0; /* (state, element, step) triples whose codes differed */

    for (unsigned t = 1; t <= T; t++) {
        const double sigma = 0.1 * (1 + 0.5 * sin(t));
        for (size_t i = 0; i < n; i++) {
            g[i] = (i % 97 == 5) ? 0.0f : (float)(mu[i] + sigma * ref_normal(&s));
            gd[i] = g[i];
        }
        buf_write(ctx, gb, 0, n * 4, g);
        step_ok(ctx, rule, &hp, &a8, n, t, label);
        step_ok(ctx, rule, &hp, &a32, n, t, label);
        /* the 8-bit algorithm: dequantize, the rule, requantize */
        for (size_t k = 0; k < ns; k++)
            q8_dequant(&rs[k], tmp[k]);
        memcpy(before, r8, n * sizeof(double));
        q8_ref_step(rule, &hp, t, n, r8, gd, tmp);
        for (size_t i = 0; i < n; i++) {
            path[i] += fabs(r8[i] - before[i]);
            scale[i] += fabs(before[i]) + fabs(r8[i] - before[i]);
        }
        for (size_t k = 0; k < ns; k++)
            q8_quant(&rs[k], tmp[k]);
        q8_ref_step(rule, &hp, t, n, rp, gd, plain);
        for (size_t k = 0; k < ns; k++) {
            buf_read(ctx, q[k].buffer, q[k].offset, n, cdev);
            for (size_t i = 0; i < n; i++)
                if (cdev[i] != rs[k].code[i]) {
                    diverged++;
                    if (!first_div[i])
                        first_div[i] = t;
                }
        }
    }
    buf_read(ctx, p8, 0, n * 4, th8);
    buf_read(ctx, p32, 0, n * 4, th32);

    size_t bad = 0, codes_differ = 0, elems_div = 0;
    double worst_u = 0, worst_div = 0, d8_32 = 0, dref = 0, moved = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)th8[i] - r8[i]);
        const double tol = first_div[i] ? 0.1 * path[i] : 32 * EPSF * scale[i];
        if (!(e <= tol) && bad++ < 8)
            print_error("%s step %u θ[%zu]: %.9g, 8-bit reference %.9g (path %.3g; codes first "
                        "differed at step %u)\n",
                        label, T, i, (double)th8[i], r8[i], path[i], first_div[i]);
        if (first_div[i]) {
            elems_div++;
            if (path[i] > 0)
                worst_div = fmax(worst_div, e / path[i]);
        } else if (scale[i] > 0) {
            worst_u = fmax(worst_u, e / (EPSF * scale[i]));
        }
        d8_32 += ((double)th8[i] - th32[i]) * ((double)th8[i] - th32[i]);
        dref += (r8[i] - rp[i]) * (r8[i] - rp[i]);
        moved += path[i] * path[i];
    }
    for (size_t k = 0; k < ns; k++) {
        buf_read(ctx, q[k].buffer, q[k].offset, n, cdev);
        for (size_t i = 0; i < n; i++)
            codes_differ += cdev[i] != rs[k].code[i];
    }
    if (elems_div > n / 100)
        bad++, print_error("%s: %zu elements took a near tie the other way (1%% allowed)\n", label,
                           elems_div);
    d8_32 = sqrt(d8_32 / (double)n), dref = sqrt(dref / (double)n), moved = sqrt(moved / (double)n);
    if (!(d8_32 <= 0.1 * moved) || !(dref <= 0.1 * moved))
        bad++, print_error("%s: RMS(θ8 - θ32) %.3g, reference %.3g, above 10%% of the RMS "
                           "path %.3g\n",
                           label, d8_32, dref, moved);
    print_message("  %-26s %u steps: θ vs 8-bit ref worst %.2f u·S; %zu elements with codes "
                  "differing (%zu code-steps, %zu at the end), θ within %.2e of their path; RMS "
                  "θ8-θ32 %.3g (ref %.3g), RMS path %.3g%s\n",
                  label, T, worst_u, elems_div, diverged, codes_differ, worst_div, d8_32, dref,
                  moved, bad ? "  FAILED" : "");
    free(cdev), free(first_div);
    for (size_t k = 0; k < ns; k++) {
        clReleaseMemObject(q[k].buffer), clReleaseMemObject(am[k].buffer);
        clReleaseMemObject(f32s[k].buffer);
        q8_free(&rs[k]);
        free(tmp[k]), free(plain[k]);
    }
    clReleaseMemObject(p8), clReleaseMemObject(p32), clReleaseMemObject(gb);
    free(theta0), free(g), free(th8), free(th32), free(mu);
    free(r8), free(rp), free(gd), free(path), free(scale), free(before);
    return bad;
}

static void test_q8_trajectory(void **state)
{
    fixture *f = *state;
    maps_init();
    const int configs[] = {0, 1, 2, 5, 6, 9, 10};
    const size_t n = test_small() ? 300 : 1000;
    const unsigned T = test_small() ? 20 : 100;
    size_t bad = 0;
    for (size_t j = 0; j < sizeof configs / sizeof configs[0]; j++)
        bad += q8_trajectory(f->ctx, configs[j], n, T, 77u + (uint64_t)j);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_q8_one_step),
        cmocka_unit_test(test_q8_trajectory),
        Q8_EDGES_TESTS,
        Q8_CODES_TESTS,
        Q8_OPT_TESTS,
        Q8_SHAPES_TESTS,
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
