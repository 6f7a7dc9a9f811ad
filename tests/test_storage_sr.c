/* SPDX-License-Identifier: MIT */
/* 16-bit storage, stochastic rounding (one executable with test_storage.c, which has the
 * references by value of test_storage.h): determinism in (seed, stream, step), results among
 * the two neighbours, the element index of the random word, the documented Philox words
 * driving the decisions (through clopt_enqueue_convert and the step), unbiased means, and
 * SGD's stalled update that it fixes. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clopt.h"
#include "fixture.h"
#include "ref.h"
#include "test_storage.h"

/* ---- stochastic rounding ----------------------------------------------------------------- */

/* How well rounding decisions up[i] (rounded up with probability p) follow the words w[i]:
   the best agreement over the natural ways of drawing a probability p from a 32-bit word
   (its low or high 16 bits below p·2^16, or at least (1-p)·2^16). The documented word gives
   (nearly) n; a word unrelated to the decisions about (p² + (1-p)²)·n. */
static size_t best_agreement(const uint32_t *w, const unsigned char *up, size_t n, double p)
{
    const uint32_t below = (uint32_t)(p * 65536.0), atleast = (uint32_t)((1.0 - p) * 65536.0);
    size_t best = 0;
    for (int half = 0; half < 2; half++)
        for (int dir = 0; dir < 2; dir++) {
            size_t agree = 0;
            for (size_t i = 0; i < n; i++) {
                const uint32_t v = half ? w[i] >> 16 : w[i] & 0xFFFFu;
                const int pred = dir ? v >= atleast : v < below;
                agree += pred == (int)up[i];
            }
            if (agree > best)
                best = agree;
        }
    return best;
}

/* Determinism in (seed, stream, step), results among the two neighbours, and where the random
   word comes from, through clopt_enqueue_convert. */
void test_sr_convert(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 4099 };
    float *x = xmalloc(N * 4);
    uint16_t *o1 = xmalloc(N * 2), *o2 = xmalloc(N * 2);
    const uint64_t seed = 0x0123456789ABCDEFull;
    const uint32_t stream = 7;
    const fmt16 *fm[2] = {&BF16, &F16};
    for (int k = 0; k < 2; k++) {
        const fmt16 *F = fm[k];
        uint64_t s = 100 + (uint64_t)k;
        for (size_t i = 0; i < N; i++) {
            const int e = F == &BF16 ? (int)(mix(&s) % 61) - 30 : (int)(mix(&s) % 42) - 26;
            x[i] = (float)((unif(&s) - 0.5) * ldexp(1, e));
            if (i % 16 == 3) /* already representable: stays exactly */
                x[i] = (float)val16(F, round16(F, x[i], 0));
        }
        const float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX,
                            65504.0f, 65505.0f, 65510.0f, -65530.0f, 65535.9f, 65536.0f,
                            -70000.0f, 1e9f, 0x1p-30f, -0x1.8p-25f, 0x1p-149f, 0x1.8p-24f};
        for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
            x[7 + 11 * i] = sp[i];
        cl_mem bx = buf_new(ctx, N * 4, x), bo = buf_new(ctx, N * 2, NULL);
        convert_ok(ctx, bo, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, N, 1, seed, stream, 3);
        buf_read(ctx, bo, 0, N * 2, o1);
        size_t bad = 0, ups = 0, inexact = 0;
        for (size_t i = 0; i < N; i++) {
            if (isnan(x[i])) {
                if (!isnan16(F, o1[i]) && bad++ < 8)
                    print_error("%s SR of NaN: 0x%04x\n", F->name, o1[i]);
                continue;
            }
            uint16_t dn, up;
            neighbours16(F, x[i], &dn, &up);
            /* f16: a value whose f16 spacing would step past 65504 rounds to Inf */
            if (F == &F16 && fabsf(x[i]) >= 65536.0f)
                dn = up;
            if (o1[i] != dn && o1[i] != up && bad++ < 8)
                print_error("%s SR of %a: got 0x%04x, neighbours 0x%04x 0x%04x\n", F->name,
                            (double)x[i], o1[i], dn, up);
            inexact += dn != up;
            ups += dn != up && o1[i] == up;
        }
        assert_int_equal(bad, 0);
        /* not always one way */
        assert_true(ups > inexact / 10 && ups < inexact - inexact / 10);
        /* the same key and counters: the same bits; the step's high 32 bits are not used */
        convert_ok(ctx, bo, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, N, 1, seed, stream, 3);
        buf_read(ctx, bo, 0, N * 2, o2);
        assert_memory_equal(o1, o2, N * 2);
        convert_ok(ctx, bo, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, N, 1, seed, stream,
                   3 + (1ull << 32));
        buf_read(ctx, bo, 0, N * 2, o2);
        assert_memory_equal(o1, o2, N * 2);
        /* another seed (either half), stream or step: other bits */
        const struct {
            uint64_t seed;
            uint32_t stream;
            uint64_t step;
        } other[] = {{seed + 1, stream, 3},
                     {seed + (1ull << 32), stream, 3},
                     {seed, stream + 1, 3},
                     {seed, stream, 4}};
        for (size_t c = 0; c < sizeof other / sizeof other[0]; c++) {
            convert_ok(ctx, bo, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, N, 1, other[c].seed,
                       other[c].stream, other[c].step);
            buf_read(ctx, bo, 0, N * 2, o2);
            size_t diff = 0;
            for (size_t i = 0; i < N; i++)
                diff += o1[i] != o2[i];
            if (diff < inexact / 20)
                print_error("%s: key/counter change %zu changed only %zu of %zu results\n",
                            F->name, c, diff, inexact);
            assert_true(diff >= inexact / 20);
        }
        clReleaseMemObject(bx), clReleaseMemObject(bo);
    }
    free(x), free(o1), free(o2);
}

/* The random word of element e is the documented Philox word of e (its index in dst's
   buffer): a constant source converted at two different dst offsets gives the same result at
   the same buffer index, and the up/down decisions follow the host Philox words. */
void check_sr_words(clopt_ctx *ctx, const sr_case *cases, size_t ncases)
{
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 4096, OFF = 3 };
    const uint64_t seed = 0xFEEDFACE01234567ull, step = (1ull << 32) + 9;
    const uint32_t stream = 0x55;
    float *x = xmalloc((N + OFF) * 4);
    uint16_t *a = xmalloc((N + OFF) * 2), *b = xmalloc((N + OFF) * 2);
    uint32_t *w = xmalloc(N * 4), *w2 = xmalloc(N * 4);
    unsigned char *up = xmalloc(N);
    for (size_t c = 0; c < ncases; c++) {
        const fmt16 *F = cases[c].F;
        for (size_t i = 0; i < N + OFF; i++)
            x[i] = cases[c].x;
        uint16_t dn, upw;
        neighbours16(F, cases[c].x, &dn, &upw);
        assert_true(fabs((cases[c].x - val16(F, dn)) / (val16(F, upw) - val16(F, dn)) -
                         cases[c].p) < 1e-12);
        cl_mem bx = buf_new(ctx, (N + OFF) * 4, x), ba = buf_new(ctx, (N + OFF) * 2, NULL),
               bb = buf_new(ctx, (N + OFF) * 2, NULL);
        /* a: n + OFF elements from dst 0; b: n from dst OFF (another src offset too) */
        convert_ok(ctx, ba, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, N + OFF, 1, seed, stream, step);
        convert_ok(ctx, bb, OFF, F->dtype, bx, 1, CLOPT_DTYPE_F32, N, 1, seed, stream, step);
        buf_read(ctx, ba, 0, (N + OFF) * 2, a);
        buf_read(ctx, bb, 0, (N + OFF) * 2, b);
        assert_memory_equal(a + OFF, b + OFF, N * 2);
        size_t nup = 0;
        for (size_t i = 0; i < N; i++) {
            const uint16_t o = b[OFF + i];
            assert_true(o == dn || o == upw);
            up[i] = o == upw;
            nup += up[i];
            w[i] = ref_sr_value(OFF + i, seed, stream, step);
            w2[i] = ref_sr_value(OFF + i + 1, seed, stream, step); /* a wrong word: the control */
        }
        const double p = cases[c].p, sd = sqrt(p * (1 - p) / N);
        const size_t agree = best_agreement(w, up, N, p), control = best_agreement(w2, up, N, p);
        if (agree < N - N / 500 || fabs((double)nup / N - p) > 4 * sd)
            print_error("%s SR of %a: %zu of %zu up, the documented words explain %zu of the "
                        "decisions (a wrong word: %zu)\n",
                        F->name, (double)cases[c].x, nup, (size_t)N, agree, control);
        assert_true(fabs((double)nup / N - p) <= 4 * sd);
        assert_true(agree >= N - N / 500);
        assert_true(control < N - N / 10);
        clReleaseMemObject(bx), clReleaseMemObject(ba), clReleaseMemObject(bb);
    }
    free(x), free(a), free(b), free(w), free(w2), free(up);
}

void test_sr_convert_words(void **state)
{
    fixture *f = *state;
    const sr_case cases[] = {
        {&BF16, 0x1.01p0f, 0.5},    /* 1 + 2^-8: halfway between 1 and 1 + 2^-7 */
        {&BF16, -0x1.008p0f, 0.25}, /* a quarter of the way, negative */
        {&F16, 0x1.002p0f, 0.5},    /* 1 + 2^-11: halfway between 1 and 1 + 2^-10 */
        {&F16, 0x1.001p0f, 0.25},   /* a quarter */
        {&F16, 0x1.5p-22f, 0.25},   /* 5.25 subnormal f16 ulps (2^-24) */
    };
    check_sr_words(f->ctx, cases, sizeof cases / sizeof cases[0]);
}

/* The mean of many stochastically rounded copies of x is x (within 3σ). */
void test_sr_mean(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    const size_t n = test_small() ? 20000 : 1000000;
    float *x = xmalloc(n * 4);
    uint16_t *o = xmalloc(n * 2);
    const struct {
        const fmt16 *F;
        double x;
    } cases[] = {
        {&BF16, 1.0 + 0.3 * 0x1p-7},          /* ulp 2^-7 */
        {&BF16, -(1000.0 + 1.7)},             /* ulp 4, negative */
        {&BF16, 0x1.23456p-130},              /* a bf16 subnormal range value (f32 subnormal) */
        {&F16, 1.0 + 0.7 * 0x1p-10},          /* normal */
        {&F16, 5.3 * 0x1p-24},                /* subnormal */
        {&F16, -1023.5 * 0x1p-24},            /* between the largest subnormal and 2^-14 */
        {&F16, 65504.0 + 8.0},                /* 65504 or Inf, P(Inf) = 1/4 */
    };
    cl_mem bx = buf_new(ctx, n * 4, NULL), bo = buf_new(ctx, n * 2, NULL);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const fmt16 *F = cases[c].F;
        const float xf = (float)cases[c].x;
        for (size_t i = 0; i < n; i++)
            x[i] = xf;
        buf_write(ctx, bx, 0, n * 4, x);
        convert_ok(ctx, bo, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, n, 1, 0xABCDEF + c, 1, 1);
        buf_read(ctx, bo, 0, n * 2, o);
        uint16_t dn, up;
        neighbours16(F, xf, &dn, &up);
        assert_true(dn != up);
        const int to_inf = (up & 0x7FFF) == inf16(F);
        const double lo = val16(F, dn),
                     hi = to_inf ? copysign(ldexp(1.0, 16), xf) : val16(F, up); /* f16 */
        const double p = ((double)xf - lo) / (hi - lo);
        double sum = 0;
        size_t nup = 0, bad = 0;
        for (size_t i = 0; i < n; i++) {
            if (o[i] != dn && o[i] != up && bad++ < 4)
                print_error("%s SR of %a: 0x%04x\n", F->name, (double)xf, o[i]);
            nup += o[i] == up;
            sum += o[i] == up ? hi : lo;
        }
        assert_int_equal(bad, 0);
        const double mean = sum / (double)n, sigma = fabs(hi - lo) * sqrt(p * (1 - p) / n);
        const double frac = (double)nup / n, fsig = sqrt(p * (1 - p) / n);
        print_message("  %s SR of %a: mean %.9g (x %.9g, %.2f sigma), up %.5f (p %.5f)\n",
                      F->name, (double)xf, mean, (double)xf, fabs(mean - xf) / sigma, frac, p);
        assert_true(fabs(frac - p) <= 3 * fsig);
        assert_true(fabs(mean - (double)xf) <= 3 * sigma);
    }
    clReleaseMemObject(bx), clReleaseMemObject(bo);
    free(x), free(o);
}

/* SGD with a step far below half an ulp: round to nearest never moves θ, stochastic rounding
   follows the float32 trajectory on average. */
void test_sr_sgd_bias(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { STEPS = 500 };
    const size_t N = test_small() ? 256 : 4096;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &hp), CLOPT_SUCCESS);
    hp.lr = 1e-4;
    float *g = xmalloc(N * 4);
    uint16_t *th = xmalloc(N * 2);
    for (size_t i = 0; i < N; i++)
        g[i] = 1.0f;
    cl_mem bg = buf_new(ctx, N * 4, g);
    const fmt16 *fm[2] = {&BF16, &F16};
    for (int k = 0; k < 2; k++) {
        const fmt16 *F = fm[k];
        const uint16_t one = round16(F, 1.0, 0);
        for (int sr = 0; sr < 2; sr++) {
            for (size_t i = 0; i < N; i++)
                th[i] = one;
            cl_mem bp = buf_new(ctx, N * 2, th);
            clopt_step_args a;
            clopt_step_args_init(&a);
            a.param = (clopt_tensor){bp, 0};
            a.grad = (clopt_tensor){bg, 0};
            a.param_dtype = F->dtype;
            a.stochastic_rounding = sr;
            a.sr_seed = sr ? 0xC0FFEEull : 0;
            a.sr_stream = 1;
            for (uint64_t t = 1; t <= STEPS; t++) {
                const clopt_status s = clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, t,
                                                          0, NULL, NULL);
                if (s != CLOPT_SUCCESS)
                    print_error("sgd %s: %s (%s)\n", F->name, clopt_status_name(s),
                                clopt_ctx_last_error(ctx));
                assert_int_equal(s, CLOPT_SUCCESS);
            }
            buf_read(ctx, bp, 0, N * 2, th);
            double sum = 0;
            for (size_t i = 0; i < N; i++) {
                assert_false(isnan16(F, th[i]));
                sum += val16(F, th[i]);
            }
            const double mean = sum / N;
            print_message("  SGD on %s θ, %s: mean θ %.6f after %d steps of 1e-4\n", F->name,
                          sr ? "stochastic rounding" : "round to nearest", mean, STEPS);
            if (!sr)
                for (size_t i = 0; i < N; i++)
                    assert_int_equal(th[i], one); /* stuck: why SR exists */
            else
                assert_true(fabs(mean - (1.0 - STEPS * 1e-4)) <= 0.01 * (1.0 - STEPS * 1e-4));
            clReleaseMemObject(bp);
        }
    }
    clReleaseMemObject(bg);
    free(g), free(th);
}

/* At the step level the random word of θ's element e (its index in θ's buffer, offset
   included) uses the step argument: the decisions follow the host Philox words. */
static void check_sr_step_words(clopt_ctx *ctx)
{
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 4096, OFF = 3 };
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &hp), CLOPT_SUCCESS);
    hp.lr = 1.0;
    float *g = xmalloc(N * 4);
    uint16_t *th = xmalloc((N + OFF) * 2);
    uint32_t *w = xmalloc(N * 4), *w2 = xmalloc(N * 4);
    unsigned char *up = xmalloc(N);
    const uint64_t seed = 0x9E3779B97F4A7C15ull, step = 9;
    const uint32_t stream = 0xDEADBEEFu;
    const struct {
        const fmt16 *F;
        float g; /* θ = 1 - g: 1 + 2^-8 (bf16 p 1/2), 1 + 2^-12 (f16 p 1/4) */
        double p;
    } cases[] = {{&BF16, -0x1p-8f, 0.5}, {&F16, -0x1p-12f, 0.25}};
    for (size_t c = 0; c < 2; c++) {
        const fmt16 *F = cases[c].F;
        for (size_t i = 0; i < N; i++)
            g[i] = cases[c].g;
        for (size_t i = 0; i < N + OFF; i++)
            th[i] = round16(F, 1.0, 0);
        cl_mem bg = buf_new(ctx, N * 4, g), bp = buf_new(ctx, (N + OFF) * 2, th);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){bp, OFF};
        a.grad = (clopt_tensor){bg, 0};
        a.param_dtype = F->dtype;
        a.stochastic_rounding = 1;
        a.sr_seed = seed;
        a.sr_stream = stream;
        assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, step, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        buf_read(ctx, bp, 0, (N + OFF) * 2, th);
        uint16_t dn, upw;
        neighbours16(F, 1.0 - cases[c].g, &dn, &upw);
        for (size_t i = 0; i < OFF; i++)
            assert_int_equal(th[i], round16(F, 1.0, 0));
        size_t nup = 0;
        for (size_t i = 0; i < N; i++) {
            assert_true(th[OFF + i] == dn || th[OFF + i] == upw);
            up[i] = th[OFF + i] == upw;
            nup += up[i];
            w[i] = ref_sr_value(OFF + i, seed, stream, step);
            w2[i] = ref_sr_value(i, seed, stream, step); /* without the offset: the control */
        }
        const size_t agree = best_agreement(w, up, N, cases[c].p),
                     control = best_agreement(w2, up, N, cases[c].p);
        if (agree < N - N / 500)
            print_error("%s step SR: %zu up, the documented words explain %zu of %d decisions "
                        "(without the offset: %zu)\n",
                        F->name, nup, agree, N, control);
        assert_true(agree >= N - N / 500);
        assert_true(control < N - N / 10);
        clReleaseMemObject(bg), clReleaseMemObject(bp);
    }
    free(g), free(th), free(w), free(w2), free(up);
}

void test_sr_step_words(void **state)
{
    fixture *f = *state;
    check_sr_step_words(f->ctx);
}

/* A range group draws from one stream (clopt_range_group.sr_stream): a bf16 tensor in a range
   group given stream 5 rounds as the same tensor registered alone after five others (its
   index, hence its stream, is then 5), with the fused launch and with Lookahead's per-tensor
   path; the default stream (the group's first tensor, 0 here) draws otherwise. Out-of-range
   streams are refused. */
void test_sr_range_stream(void **state)
{
    fixture *f = *state;
    enum { N = 600, OFF = 3, STEPS = 3 };
    uint64_t rs = 5;
    uint16_t th[N + OFF], gr[N + OFF];
    for (size_t i = 0; i < N + OFF; i++) {
        th[i] = round16(&BF16, 1.0 + unif(&rs), 0);
        gr[i] = round16(&BF16, unif(&rs) - 0.5, 0);
    }
    /* run 0: alone at index 5; 1: a range group with stream 5; 2: its default stream; 3:
       stream 5 after refused streams; 4: stream 5 in a struct_size from before the field
       (ignored: the default). la 1: with Lookahead (the per-tensor path). */
    static uint16_t out[2][5][N + OFF];
    for (int run = 0; run < 5; run++) {
        for (int la = 0; la < 2; la++) {
            clopt_hparams hp;
            clopt_hparams_default(CLOPT_ADAMW, &hp);
            hp.lr = 3e-3; /* steps below a bf16 ulp: the rounding decides */
            hp.stochastic_rounding = 1;
            hp.lookahead_k = la ? 2 : 0;
            hp.lookahead_alpha = 0.5;
            clopt_optimizer *o;
            assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &o), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_seed(o, 77), CLOPT_SUCCESS);
            cl_mem P = buf_new(f->ctx, sizeof th, th), G = buf_new(f->ctx, sizeof gr, gr);
            cl_mem D = buf_new(f->ctx, 2 * 5 * sizeof(float), NULL);
            clopt_param_desc d;
            clopt_param_desc_init(&d);
            d.param = (clopt_tensor){P, OFF};
            d.grad = (clopt_tensor){G, OFF};
            d.shape[0] = N;
            d.param_dtype = d.grad_dtype = CLOPT_DTYPE_BF16;
            if (run == 0) {
                for (size_t k = 0; k < 5; k++) /* float32 tensors 0 .. 4 */
                    assert_int_equal(clopt_optimizer_add_param(o, (clopt_tensor){D, k},
                                                               (clopt_tensor){D, 5 + k}, 1,
                                                               NULL, NULL),
                                     CLOPT_SUCCESS);
                size_t idx = 0;
                assert_int_equal(clopt_optimizer_add_param_desc(o, 0, &d, &idx), CLOPT_SUCCESS);
                assert_int_equal(idx, 5);
            } else {
                clopt_range_group rg;
                clopt_range_group_init(&rg);
                assert_int_equal(rg.sr_stream, -1);
                rg.ntensors = 1;
                rg.tensors = &d;
                rg.sr_stream = run == 2 ? -1 : 5;
                if (run == 4)
                    rg.struct_size = offsetof(clopt_range_group, sr_stream);
                if (run == 3) { /* out of range: refused, nothing added */
                    const long long bad[] = {-2, 1ll << 32};
                    for (int b = 0; b < 2; b++) {
                        rg.sr_stream = bad[b];
                        assert_int_equal(clopt_optimizer_add_range_group(o, &hp, &rg, NULL, NULL),
                                         CLOPT_ERR_INVALID_ARGUMENT);
                        assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "sr_stream"));
                    }
                    assert_int_equal(clopt_optimizer_param_count(o), 0);
                    rg.sr_stream = 5;
                }
                assert_int_equal(clopt_optimizer_add_range_group(o, &hp, &rg, NULL, NULL),
                                 CLOPT_SUCCESS);
            }
            for (int t = 0; t < STEPS; t++)
                assert_int_equal(clopt_optimizer_step(o, NULL), CLOPT_SUCCESS);
            buf_read(f->ctx, P, 0, sizeof out[la][run], out[la][run]);
            clopt_optimizer_destroy(o);
            clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(D);
        }
    }
    for (int la = 0; la < 2; la++) {
        assert_memory_equal(out[la][1], out[la][0], sizeof th); /* stream 5 */
        assert_memory_equal(out[la][3], out[la][0], sizeof th);
        assert_true(memcmp(out[la][2], out[la][0], sizeof th) != 0); /* stream 0 */
        assert_memory_equal(out[la][4], out[la][2], sizeof th);
        assert_true(memcmp(out[la][0], th, sizeof th) != 0);
    }
    assert_true(memcmp(out[1][0], out[0][0], sizeof th) != 0); /* Lookahead moved θ back */
}

/* The random words under the other vector widths' code (16 wide, one vector per work-item;
   8 and 4 wide), each on a context of its own: conversions at two offsets and an SGD step at
   an odd one, against the documented words. */
void test_sr_words_tunings(void **state)
{
    (void)state;
    const unsigned tun[][2] = {{16, 1}, {8, 2}, {4, 1}};
    const sr_case cases[] = {{&BF16, 0x1.01p0f, 0.5}, {&F16, 0x1.001p0f, 0.25}};
    for (size_t k = 0; k < sizeof tun / sizeof tun[0]; k++) {
        clopt_ctx *ctx;
        assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
        clopt_tuning t;
        assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
        t.vector_width = tun[k][0];
        t.work_group_size = 0;
        t.items_per_work_item = tun[k][1];
        assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
        check_sr_words(ctx, cases, 2);
        check_sr_step_words(ctx);
        clopt_ctx_destroy(ctx);
    }
}

/* ---- second roundings in a step: their own random values ------------------------------- */

/* An optimizer of rule under hp (bf16 θ of n elements, all `theta`, stochastic rounding, no
   master; g float32, all `grad`) with one tensor; its buffers to *pb, *gb. */
static clopt_optimizer *sr_opt(clopt_ctx *ctx, clopt_rule rule, clopt_hparams *hp, size_t n,
                               uint16_t theta, float grad, cl_mem *pb, cl_mem *gb)
{
    uint16_t *th = xmalloc(n * 2);
    float *g = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++)
        th[i] = theta, g[i] = grad;
    *pb = buf_new(ctx, n * 2, th), *gb = buf_new(ctx, n * 4, g);
    free(th), free(g);
    hp->stochastic_rounding = 1;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(ctx, rule, hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){*pb, 0}, d.grad = (clopt_tensor){*gb, 0};
    d.shape[0] = n;
    d.param_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
    return opt;
}

/* The mean of bf16 θ (n elements in pb) minus 1, in ulps of 1 (2^-7). */
static double mean_ulps(clopt_ctx *ctx, cl_mem pb, size_t n)
{
    uint16_t *th = xmalloc(n * 2);
    buf_read(ctx, pb, 0, n * 2, th);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (val16(&BF16, th[i]) - 1.0) * 128.0;
    free(th);
    return sum / (double)n;
}

/* Lookahead's sync rounds θ with random values other than the update's it follows. SGD
   (lr 1) moves bf16 θ = 1 half an ulp up (g = -2^-8): θ' is 1 or 1 + ulp, each with
   probability 1/2; the sync (k 1, α 1/2) from φ = 1 gives 1, or 1 + ulp/2 rounded up with
   probability 1/2: a mean of 1/4 ulp. With the update's random values the second rounding
   went up exactly when the first had: 1/2 ulp. */
void test_sr_lookahead_own_draws(void **state)
{
    fixture *f = *state;
    fmt_init(&BF16);
    const size_t N = test_small() ? 16384 : 65536;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &hp), CLOPT_SUCCESS);
    hp.lr = 1.0;
    hp.lookahead_k = 1;
    hp.lookahead_alpha = 0.5;
    cl_mem pb, gb;
    clopt_optimizer *opt = sr_opt(f->ctx, CLOPT_SGD, &hp, N, 0x3F80u, -0x1p-8f, &pb, &gb);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    const double m = mean_ulps(f->ctx, pb, N);
    print_message("  lookahead after an SR update: mean θ - 1 = %.4f ulp (1/4 expected)\n", m);
    assert_true(fabs(m - 0.25) < 8 * sqrt(0.25 * 0.75 / (double)N)); /* 8 sigma */
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
}

/* A Schedule-Free eval/train round trip is exact in real arithmetic, and stochastic rounding
   keeps it unbiased when its two roundings draw independently. Schedule-Free SGD (β 0.9)
   after a step with g = 0 (y = z = 1), z then set to 1 - 4.5 ulp: eval's x = 1 + ulp/2, train's
   y = x + 0.1 (z - x) = 1 -+ 0.45 ulp: a mean of 0. Sharing one random word, the two roundings
   came back +0.2 ulp on average. */
void test_sr_schedule_free_round_trip(void **state)
{
    fixture *f = *state;
    fmt_init(&BF16);
    const size_t N = test_small() ? 16384 : 65536;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SCHEDULE_FREE_SGD, &hp), CLOPT_SUCCESS);
    cl_mem pb, gb;
    clopt_optimizer *opt =
        sr_opt(f->ctx, CLOPT_SCHEDULE_FREE_SGD, &hp, N, 0x3F80u, 0.0f, &pb, &gb);
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
    float *z = xmalloc(N * 4);
    for (size_t i = 0; i < N; i++)
        z[i] = 1.0f - 4.5f * 0x1p-7f;
    const char *name;
    assert_int_equal(clopt_optimizer_state_info(opt, 0, 0, &name, NULL),
                     CLOPT_SUCCESS);
    assert_string_equal(name, "z");
    assert_int_equal(clopt_optimizer_write_state(opt, 0, 0, z, N), CLOPT_SUCCESS);
    assert_true(fabs(mean_ulps(f->ctx, pb, N)) == 0.0);
    assert_int_equal(clopt_optimizer_eval(opt), CLOPT_SUCCESS);
    const double mx = mean_ulps(f->ctx, pb, N);
    assert_int_equal(clopt_optimizer_train(opt), CLOPT_SUCCESS);
    const double my = mean_ulps(f->ctx, pb, N);
    print_message("  schedule-free round trip: mean x - 1 = %.4f ulp (1/2), y - 1 = %.4f ulp "
                  "(0)\n", mx, my);
    assert_true(fabs(mx - 0.5) < 8 * sqrt(0.25 / (double)N));
    assert_true(fabs(my) < 8 * sqrt(0.25 / (double)N));
    free(z);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(pb), clReleaseMemObject(gb);
}
