/* SPDX-License-Identifier: MIT */
/* 16-bit storage at the op level (clopt_dtype, clopt_enqueue_convert, the storage fields of
 * clopt_step_args), against references written from the documented semantics, not from the
 * kernels' bit tricks:
 *  - conversions: every f16 and bf16 pattern to f32 (value-based decoders, and GCC's
 *    _Float16 where it exists), round trips, 16 <-> 16, and f32 -> f16 / bf16 over a
 *    stride through all 2^32 patterns plus every tie, its neighbours, subnormals, overflow
 *    and specials, against a value-based round-to-nearest (neighbours found by value);
 *  - stochastic rounding: determinism in (seed, stream, step), results among the two
 *    neighbours, the element index of the random word, the documented Philox words driving
 *    the decisions, unbiased means, and SGD's stalled update that it fixes;
 *  - master weights for every element-wise rule: bf16 θ with an fp32 master against the
 *    float32 rule bit for bit, the bf16 remainder against the fp32 master, f16 gradients
 *    against their float32 values, plain RNE / SR stores against the float32 result;
 *  - invalid combinations refused with nothing changed. */
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

#ifdef __FLT16_MAX__
__extension__ typedef _Float16 host_f16;
#define HAVE_HOST_F16 1
#else
#define HAVE_HOST_F16 0
#endif

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s) { return (double)(mix(s) >> 11) / 9007199254740992.0; }

static size_t dsize(clopt_dtype t) { return t == CLOPT_DTYPE_F32 ? 4 : 2; }

static void convert_ok(clopt_ctx *ctx, cl_mem dst, size_t doff, clopt_dtype dt, cl_mem src,
                       size_t soff, clopt_dtype st, size_t n, int sr, uint64_t seed,
                       uint32_t stream, uint64_t step)
{
    clopt_status s = clopt_enqueue_convert(ctx, NULL, (clopt_tensor){dst, doff}, dt,
                                           (clopt_tensor){src, soff}, st, n, sr, seed, stream,
                                           step, 0, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        print_error("convert %s -> %s (n %zu, sr %d): %s (%s)\n", clopt_dtype_name(st),
                    clopt_dtype_name(dt), n, sr, clopt_status_name(s), clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
}

/* ---- 16-bit formats by value --------------------------------------------------------------- */

/* Value of a 16-bit pattern of a format with ebits exponent and mbits mantissa bits
   (f16: 5, 10; bf16: 8, 7), decoded from the IEEE definition: subnormals m·2^(1-bias-mbits),
   normals (2^mbits + m)·2^(e-bias-mbits), Inf, NaN. */
static double dec16(unsigned ebits, unsigned mbits, uint16_t h)
{
    const int bias = (1 << (ebits - 1)) - 1;
    const unsigned emax = (1u << ebits) - 1;
    const unsigned e = ((unsigned)h >> mbits) & emax, m = h & ((1u << mbits) - 1);
    double v;
    if (e == emax)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, 1 - bias - (int)mbits);
    else
        v = ldexp((double)((1u << mbits) + m), (int)e - bias - (int)mbits);
    return (h & 0x8000) ? -v : v;
}

typedef struct fmt16 {
    const char *name;
    clopt_dtype dtype;
    unsigned ebits, mbits;
    unsigned maxfin; /* the largest finite positive pattern (0x7BFF, 0x7F7F) */
    double *pos;     /* value of every pattern 0 .. maxfin, increasing */
    double overflow; /* |x| >= this rounds to Inf: midway from the largest finite to 2^(emax+1) */
} fmt16;

static fmt16 F16 = {"f16", CLOPT_DTYPE_F16, 5, 10, 0, NULL, 0};
static fmt16 BF16 = {"bf16", CLOPT_DTYPE_BF16, 8, 7, 0, NULL, 0};

static void fmt_init(fmt16 *f)
{
    if (f->pos)
        return;
    f->maxfin = (((1u << f->ebits) - 1) << f->mbits) - 1;
    f->pos = xmalloc((f->maxfin + 1) * sizeof(double));
    for (unsigned h = 0; h <= f->maxfin; h++) {
        f->pos[h] = dec16(f->ebits, f->mbits, (uint16_t)h);
        if (h)
            assert_true(f->pos[h] > f->pos[h - 1]);
    }
    const int bias = (1 << (f->ebits - 1)) - 1;
    f->overflow = (f->pos[f->maxfin] + ldexp(1.0, bias + 1)) / 2;
}

static double val16(const fmt16 *f, uint16_t h) { return dec16(f->ebits, f->mbits, h); }
static uint16_t inf16(const fmt16 *f) { return (uint16_t)(f->maxfin + 1); }
static int isnan16(const fmt16 *f, uint16_t h) { return (h & 0x7FFFu) > inf16(f); }

/* x (not NaN) rounded to f by value: the nearer of its two neighbours, a tie to the even
   pattern (ties_away: to the larger magnitude), Inf from f->overflow on. */
static uint16_t round16(const fmt16 *f, double x, int ties_away)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs(x);
    if (a >= f->overflow)
        return sign | inf16(f);
    if (a >= f->pos[f->maxfin])
        return (uint16_t)(sign | f->maxfin);
    unsigned lo = 0, hi = f->maxfin; /* pos[lo] <= a < pos[hi] */
    while (hi - lo > 1) {
        const unsigned mid = (lo + hi) / 2;
        if (f->pos[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    const double dl = a - f->pos[lo], dh = f->pos[hi] - a; /* exact in double */
    const unsigned k = dl < dh ? lo : dh < dl ? hi : ties_away ? hi : (lo % 2 == 0 ? lo : hi);
    return (uint16_t)(sign | k);
}

/* The patterns around x by value: down has the largest magnitude <= |x|, up the smallest
   >= |x| (Inf past the largest finite); equal when x is representable. */
static void neighbours16(const fmt16 *f, double x, uint16_t *down, uint16_t *up)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs(x);
    if (isinf(a)) {
        *down = *up = sign | inf16(f);
        return;
    }
    if (a > f->pos[f->maxfin]) {
        *down = (uint16_t)(sign | f->maxfin);
        *up = sign | inf16(f);
        return;
    }
    unsigned lo = 0, hi = f->maxfin;
    if (a == f->pos[hi]) {
        *down = *up = (uint16_t)(sign | hi);
        return;
    }
    while (hi - lo > 1) {
        const unsigned mid = (lo + hi) / 2;
        if (f->pos[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    *down = (uint16_t)(sign | lo);
    *up = (uint16_t)(sign | (f->pos[lo] == a ? lo : hi));
}

/* f16 reference of a float: GCC's _Float16 (IEEE round to nearest even) where it exists. */
static uint16_t f16_ref(float x)
{
#if HAVE_HOST_F16
    host_f16 h = (host_f16)x;
    uint16_t b;
    memcpy(&b, &h, sizeof b);
    return b;
#else
    return round16(&F16, x, 0);
#endif
}

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

/* ---- basics --------------------------------------------------------------------------------- */

static void test_dtype_basics(void **state)
{
    (void)state;
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_F32), 4);
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_F16), 2);
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_BF16), 2);
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_U16), 2);
    assert_int_equal(clopt_dtype_size(CLOPT_DTYPE_U8), 1);
    assert_int_equal(clopt_dtype_size((clopt_dtype)5), 0);
    assert_int_equal(clopt_dtype_size((clopt_dtype)-1), 0);
    assert_string_equal(clopt_dtype_name(CLOPT_DTYPE_F32), "f32");
    assert_string_equal(clopt_dtype_name(CLOPT_DTYPE_F16), "f16");
    assert_string_equal(clopt_dtype_name(CLOPT_DTYPE_BF16), "bf16");
    assert_string_equal(clopt_dtype_name(CLOPT_DTYPE_U16), "u16");
    assert_string_equal(clopt_dtype_name(CLOPT_DTYPE_U8), "u8");
    assert_null(clopt_dtype_name((clopt_dtype)5));
    assert_null(clopt_dtype_name((clopt_dtype)-1));
    clopt_step_args a;
    memset(&a, 0x5A, sizeof a);
    clopt_step_args_init(&a);
    assert_int_equal(a.param_dtype, CLOPT_DTYPE_F32);
    assert_int_equal(a.grad_dtype, CLOPT_DTYPE_F32);
    assert_int_equal(a.master_kind, CLOPT_MASTER_NONE);
    assert_null(a.master.buffer);
    assert_int_equal(a.master.offset, 0);
    assert_int_equal(a.stochastic_rounding, 0);
    assert_true(a.sr_seed == 0 && a.sr_stream == 0);

    /* the references themselves: the formats' extremes by value */
    fmt_init(&F16);
    fmt_init(&BF16);
    assert_true(val16(&F16, 0x7BFF) == 65504.0 && F16.overflow == 65520.0);
    assert_true(val16(&F16, 0x0001) == ldexp(1, -24) && val16(&F16, 0x0400) == ldexp(1, -14));
    assert_true(val16(&BF16, 0x3F80) == 1.0 && val16(&BF16, 0x0001) == ldexp(1, -133));
    assert_true(val16(&BF16, 0x7F7F) == (double)u2f(0x7F7F0000u));
    assert_true(BF16.overflow == (double)u2f(0x7F7F8000u));
    assert_true(round16(&F16, 65519.99, 0) == 0x7BFF && round16(&F16, 65520, 0) == 0x7C00);
    assert_true(round16(&F16, ldexp(1, -25), 0) == 0 && round16(&F16, ldexp(3, -25), 0) == 2);
    assert_true(round16(&BF16, 1.0 + ldexp(1, -8), 0) == 0x3F80);
    assert_true(round16(&BF16, 1.0 + ldexp(1, -8), 1) == 0x3F81);
    assert_true(round16(&BF16, -(1.0 + ldexp(3, -8)), 0) == 0xBF82);
}

/* ---- conversions ------------------------------------------------------------------------------ */

/* Every f16 and bf16 pattern to f32 and back, and to the other 16-bit type. */
static size_t check_all_16bit(clopt_ctx *ctx)
{
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 65536 };
    uint16_t *w = xmalloc(N * 2), *back = xmalloc(N * 2);
    float *v = xmalloc(N * 4);
    for (size_t i = 0; i < N; i++)
        w[i] = (uint16_t)i;
    cl_mem bw = buf_new(ctx, N * 2, w), bv = buf_new(ctx, N * 4, NULL),
           bb = buf_new(ctx, N * 2, NULL);
    const fmt16 *fm[2] = {&F16, &BF16};
    size_t bad = 0;
    for (int k = 0; k < 2; k++) {
        const fmt16 *F = fm[k];
        convert_ok(ctx, bv, 0, CLOPT_DTYPE_F32, bw, 0, F->dtype, N, 0, 0, 0, 0);
        buf_read(ctx, bv, 0, N * 4, v);
        for (size_t h = 0; h < N; h++) {
            const double want = val16(F, (uint16_t)h);
            int ok = isnan(want) ? isnan(v[h])
                                 : ((double)v[h] == want && !signbit(v[h]) == !signbit(want));
#if HAVE_HOST_F16
            if (F == &F16) {
                host_f16 x;
                const uint16_t hb = (uint16_t)h;
                memcpy(&x, &hb, 2);
                const float r = (float)x;
                ok = ok && (isnan(r) ? isnan(v[h]) : f2u(r) == f2u(v[h]));
            }
#endif
            if (!ok && bad++ < 8)
                print_error("%s 0x%04zx -> f32: got %a (0x%08x), want %a\n", F->name, h,
                            (double)v[h], f2u(v[h]), want);
        }
        /* and back: the identity, a NaN stays a NaN */
        convert_ok(ctx, bb, 0, F->dtype, bv, 0, CLOPT_DTYPE_F32, N, 0, 0, 0, 0);
        buf_read(ctx, bb, 0, N * 2, back);
        for (size_t h = 0; h < N; h++) {
            const int ok = isnan16(F, (uint16_t)h) ? isnan16(F, back[h]) : back[h] == h;
            if (!ok && bad++ < 8)
                print_error("%s 0x%04zx -> f32 -> %s: got 0x%04x\n", F->name, h, F->name,
                            back[h]);
        }
        /* to the other 16-bit type: rounded to nearest even by value */
        const fmt16 *T = fm[1 - k];
        convert_ok(ctx, bb, 0, T->dtype, bw, 0, F->dtype, N, 0, 0, 0, 0);
        buf_read(ctx, bb, 0, N * 2, back);
        for (size_t h = 0; h < N; h++) {
            const double x = val16(F, (uint16_t)h);
            const int ok = isnan(x) ? isnan16(T, back[h]) : back[h] == round16(T, x, 0);
            if (!ok && bad++ < 8)
                print_error("%s 0x%04zx (%a) -> %s: got 0x%04x, want 0x%04x\n", F->name, h, x,
                            T->name, back[h], isnan(x) ? 0 : round16(T, x, 0));
        }
    }
    clReleaseMemObject(bw), clReleaseMemObject(bv), clReleaseMemObject(bb);
    free(w), free(back), free(v);
    return bad;
}

static void test_convert_all_16bit(void **state)
{
    fixture *f = *state;
    assert_int_equal(check_all_16bit(f->ctx), 0);
}

typedef struct fvec {
    float *x;
    size_t n, cap;
} fvec;

static void push(fvec *v, float x)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->x = realloc(v->x, v->cap * sizeof(float));
        assert_non_null(v->x);
    }
    v->x[v->n++] = x;
}

static void push_pm(fvec *v, float x)
{
    push(v, x);
    push(v, -x);
}

/* Every midpoint between neighbours of F (step: every step-th), the overflow threshold, and
   the floats next to each: the ties both ways (even and odd lower neighbour). */
static void push_ties(fvec *v, const fmt16 *F, unsigned step)
{
    for (unsigned k = 0; k < F->maxfin; k += step) {
        const double m = (F->pos[k] + F->pos[k + 1]) / 2;
        assert_true((double)(float)m == m);
        push_pm(v, (float)m);
        push_pm(v, nextafterf((float)m, 0.0f));
        push_pm(v, nextafterf((float)m, INFINITY));
    }
    assert_true((double)(float)F->overflow == F->overflow);
    push_pm(v, (float)F->overflow);
    push_pm(v, nextafterf((float)F->overflow, 0.0f));
    push_pm(v, nextafterf((float)F->overflow, INFINITY));
}

/* f32 -> f16 and f32 -> bf16 over a stride through every f32 pattern and the special values,
   rounded to nearest even (a NaN stays NaN). */
static void test_convert_f32_dense(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    const int small = test_small();
    fvec v = {0};
    const uint64_t stride = small ? 65521 : 1021; /* primes: every exponent, varied low bits */
    for (uint64_t b = 0; b < (1ull << 32); b += stride)
        push(&v, u2f((uint32_t)b));
    push_ties(&v, &F16, small ? 61 : 1);
    push_ties(&v, &BF16, small ? 61 : 1);
    const uint32_t specials[] = {
        0x00000000u, 0x7F800000u, 0x7FC00000u, 0x7F800001u, 0x7FBFFFFFu, 0x7FFFFFFFu,
        0x7F808000u, 0x7F800100u,                            /* NaNs with low payload only */
        0x00000001u, 0x00000002u, 0x00007FFFu, 0x00008000u, 0x00008001u, 0x00018000u,
        0x0000FFFFu, 0x00400000u, 0x007FFFFFu, 0x007F8000u, 0x007FFF00u, /* f32 subnormals */
        0x00800000u, 0x7F7FFFFFu, 0x7F7F7FFFu, 0x7F7F8000u, 0x7F7F8001u, 0x7F7F0000u,
        0x3F800000u, 0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0x3F808001u,
    };
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        push_pm(&v, u2f(specials[i]));
    const float fs[] = {65504.0f, 65519.0f, 65520.0f, 65521.0f, 65535.0f, 65536.0f, 1e6f,
                        0x1p-24f, 0x1p-25f, 0x1.8p-24f, 0x1p-26f, 0x1.000002p-25f, 0x1p-14f,
                        0x1.ff8p-15f, 0x1.ffcp-15f, 0.1f, 1.0f / 3.0f, 1.0f + 0x1p-11f,
                        1.0f + 0x3p-11f, 2048.0f + 1.0f, 2048.0f + 3.0f};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        push_pm(&v, fs[i]);
    /* random f32 subnormals and values around the f16 subnormal range */
    uint64_t s = 77;
    for (int i = 0; i < (small ? 500 : 20000); i++) {
        push_pm(&v, u2f((uint32_t)(mix(&s) & 0x007FFFFFu)));
        push_pm(&v, (float)ldexp(unif(&s), -(int)(mix(&s) % 14) - 12));
    }
    const size_t n = v.n;
    cl_mem bx = buf_new(ctx, n * 4, v.x), bo = buf_new(ctx, n * 2, NULL);
    uint16_t *out = xmalloc(n * 2);
    size_t bad = 0, refbad = 0;
    const fmt16 *fm[2] = {&F16, &BF16};
    for (int k = 0; k < 2; k++) {
        const fmt16 *F = fm[k];
        convert_ok(ctx, bo, 0, F->dtype, bx, 0, CLOPT_DTYPE_F32, n, 0, 0, 0, 0);
        buf_read(ctx, bo, 0, n * 2, out);
        for (size_t i = 0; i < n; i++) {
            const float x = v.x[i];
            if (isnan(x)) {
                if (!isnan16(F, out[i]) && bad++ < 8)
                    print_error("f32 0x%08x (NaN) -> %s: got 0x%04x, not a NaN\n", f2u(x),
                                F->name, out[i]);
                continue;
            }
            uint16_t want = round16(F, x, 0);
            if (F == &F16) {
                const uint16_t r = f16_ref(x);
                if (r != want && refbad++ < 8) /* the two references disagree: a test bug */
                    print_error("reference: _Float16(%a) = 0x%04x, by value 0x%04x\n",
                                (double)x, r, want);
                want = r;
            }
            if (out[i] != want && bad++ < 8)
                print_error("f32 %a (0x%08x) -> %s: got 0x%04x, want 0x%04x\n", (double)x,
                            f2u(x), F->name, out[i], want);
        }
    }
    print_message("  %zu f32 values converted to f16 and bf16\n", n);
    clReleaseMemObject(bx), clReleaseMemObject(bo);
    free(out), free(v.x);
    assert_int_equal(refbad, 0);
    assert_int_equal(bad, 0);
}

/* Offsets count elements of each tensor's own type; nothing outside [offset, offset + n) of
   dst is written; dst and src may share a buffer when they do not overlap; a queue and an
   event as any op. */
static void test_convert_offsets(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 37, SOFF = 5, DOFF = 3, LEN = 64 };
    float src[LEN], fout[LEN];
    uint16_t w16[LEN], out[LEN], sent[LEN];
    uint64_t s = 5;
    for (int i = 0; i < LEN; i++) {
        src[i] = (float)((unif(&s) - 0.5) * 300.0);
        sent[i] = 0xABCD;
    }
    cl_mem bs = buf_new(ctx, sizeof src, src), bd = buf_new(ctx, sizeof sent, sent);
    const fmt16 *fm[2] = {&F16, &BF16};
    for (int k = 0; k < 2; k++) {
        const fmt16 *F = fm[k];
        buf_write(ctx, bd, 0, sizeof sent, sent);
        cl_event ev = NULL;
        assert_int_equal(clopt_enqueue_convert(ctx, clopt_ctx_cl_queue(ctx),
                                               (clopt_tensor){bd, DOFF}, F->dtype,
                                               (clopt_tensor){bs, SOFF}, CLOPT_DTYPE_F32, N, 0,
                                               0, 0, 0, 0, NULL, &ev),
                         CLOPT_SUCCESS);
        assert_non_null(ev);
        assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
        clReleaseEvent(ev);
        assert_string_equal(clopt_ctx_last_error(ctx), "");
        buf_read(ctx, bd, 0, sizeof out, out);
        for (int i = 0; i < LEN; i++) {
            if (i >= DOFF && i < DOFF + N)
                assert_int_equal(out[i], round16(F, src[SOFF + i - DOFF], 0));
            else
                assert_int_equal(out[i], 0xABCD);
        }
        /* 16-bit source at an odd offset into a float32 destination at another */
        memcpy(w16, out, sizeof w16);
        float fsent[LEN];
        for (int i = 0; i < LEN; i++)
            fsent[i] = -7.25f;
        cl_mem bf = buf_new(ctx, sizeof fsent, fsent);
        convert_ok(ctx, bf, 1, CLOPT_DTYPE_F32, bd, DOFF + 2, F->dtype, N - 4, 0, 0, 0, 0);
        buf_read(ctx, bf, 0, sizeof fout, fout);
        for (int i = 0; i < LEN; i++) {
            if (i >= 1 && i < 1 + N - 4)
                assert_true((double)fout[i] == val16(F, w16[DOFF + 2 + i - 1]));
            else
                assert_true(fout[i] == -7.25f);
        }
        clReleaseMemObject(bf);
    }
    /* one buffer, disjoint byte ranges: float32 src elements 0..N-1 (bytes 0..4N), a bf16
       dst from element 2N (byte 4N) */
    unsigned char shared[4 * N + 2 * N];
    memcpy(shared, src, 4 * N);
    memset(shared + 4 * N, 0xEE, 2 * N);
    cl_mem bsh = buf_new(ctx, sizeof shared, shared);
    convert_ok(ctx, bsh, 2 * N, CLOPT_DTYPE_BF16, bsh, 0, CLOPT_DTYPE_F32, N, 0, 0, 0, 0);
    unsigned char got[sizeof shared];
    buf_read(ctx, bsh, 0, sizeof got, got);
    assert_memory_equal(got, shared, 4 * N);
    for (int i = 0; i < N; i++) {
        uint16_t h;
        memcpy(&h, got + 4 * N + 2 * i, 2);
        assert_int_equal(h, round16(&BF16, src[i], 0));
    }
    clReleaseMemObject(bsh);
    clReleaseMemObject(bs), clReleaseMemObject(bd);
}

/* ---- stochastic rounding ----------------------------------------------------------------- */

/* Determinism in (seed, stream, step), results among the two neighbours, and where the random
   word comes from, through clopt_enqueue_convert. */
static void test_sr_convert(void **state)
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
typedef struct sr_case {
    const fmt16 *F;
    float x;
    double p;
} sr_case;

static void check_sr_words(clopt_ctx *ctx, const sr_case *cases, size_t ncases)
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

static void test_sr_convert_words(void **state)
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
static void test_sr_mean(void **state)
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
static void test_sr_sgd_bias(void **state)
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
static void test_sr_step_words(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
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

/* ---- master weights, for every element-wise rule ------------------------------------------- */

enum { MN = 1037, MSTEPS = 10, POFF = 3, GOFF = 5, MOFF = 2, GUARD = 4 };

typedef struct run {
    clopt_dtype pt, gt;
    cl_mem p, g, m;
    size_t pbytes, mbytes;
    clopt_tensor st[CLOPT_MAX_STATE];
    size_t ns;
    clopt_step_args a;
    unsigned char *pinit, *minit; /* the buffers' first contents (the guards) */
} run;

static void run_make(clopt_ctx *ctx, run *r, clopt_rule rule, const clopt_hparams *hp,
                     clopt_dtype pt, clopt_dtype gt, clopt_master mk, const void *theta)
{
    memset(r, 0, sizeof *r);
    r->pt = pt, r->gt = gt;
    const size_t ps = dsize(pt);
    r->pbytes = (POFF + MN + GUARD) * ps;
    r->pinit = xmalloc(r->pbytes);
    memset(r->pinit, 0xA5, r->pbytes);
    memcpy(r->pinit + POFF * ps, theta, MN * ps);
    r->p = buf_new(ctx, r->pbytes, r->pinit);
    r->g = buf_new(ctx, (GOFF + MN) * dsize(gt), NULL);
    clopt_step_args_init(&r->a);
    r->a.param = (clopt_tensor){r->p, POFF};
    r->a.grad = (clopt_tensor){r->g, GOFF};
    r->a.param_dtype = pt;
    r->a.grad_dtype = gt;
    if (mk != CLOPT_MASTER_NONE) {
        const size_t ms = mk == CLOPT_MASTER_F32 ? 4 : 2;
        r->mbytes = (MOFF + MN + GUARD) * ms;
        r->minit = xmalloc(r->mbytes);
        memset(r->minit, 0x5A, r->mbytes);
        if (mk == CLOPT_MASTER_REMAINDER)
            memset(r->minit + MOFF * ms, 0, MN * ms); /* zeros: the master is θ */
        r->m = buf_new(ctx, r->mbytes, r->minit);
        r->a.master_kind = mk;
        r->a.master = (clopt_tensor){r->m, MOFF};
        if (mk == CLOPT_MASTER_F32) { /* the fp32 master from θ, as the header suggests */
            convert_ok(ctx, r->m, MOFF, CLOPT_DTYPE_F32, r->p, POFF, pt, MN, 0, 0, 0, 0);
            assert_int_equal(clFinish(clopt_ctx_cl_queue(ctx)), CL_SUCCESS);
            buf_read(ctx, r->m, 0, r->mbytes, r->minit);
        }
    }
    assert_int_equal(clopt_alloc_state(ctx, rule, hp, MN, r->st, &r->ns), CLOPT_SUCCESS);
    for (size_t k = 0; k < r->ns; k++)
        r->a.state[k] = r->st[k];
}

static void run_free(run *r)
{
    clReleaseMemObject(r->p), clReleaseMemObject(r->g);
    if (r->m)
        clReleaseMemObject(r->m);
    for (size_t k = 0; k < r->ns; k++)
        clReleaseMemObject(r->st[k].buffer);
    free(r->pinit), free(r->minit);
}

static void run_grad(clopt_ctx *ctx, run *r, const void *g)
{
    const size_t gs = dsize(r->gt);
    buf_write(ctx, r->g, GOFF * gs, MN * gs, g);
}

static void run_step(clopt_ctx *ctx, run *r, clopt_rule rule, const clopt_hparams *hp,
                     uint64_t t, const char *label, const char *which)
{
    const clopt_status s = clopt_enqueue_step(ctx, NULL, rule, hp, &r->a, MN, t, 0, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        print_error("%s run %s step %llu: %s (%s)\n", label, which, (unsigned long long)t,
                    clopt_status_name(s), clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
}

static void run_theta(clopt_ctx *ctx, const run *r, void *out)
{
    const size_t ps = dsize(r->pt);
    buf_read(ctx, r->p, POFF * ps, MN * ps, out);
}

static void run_master(clopt_ctx *ctx, const run *r, void *out)
{
    const size_t ms = r->a.master_kind == CLOPT_MASTER_F32 ? 4 : 2;
    buf_read(ctx, r->m, MOFF * ms, MN * ms, out);
}

static void run_states(clopt_ctx *ctx, const run *r, float *out)
{
    for (size_t k = 0; k < r->ns; k++)
        buf_read(ctx, r->st[k].buffer, 0, MN * 4, out + k * MN);
}

/* The guards around θ and the master still hold their first contents. */
static size_t run_guards(clopt_ctx *ctx, const run *r, const char *label, const char *which)
{
    size_t bad = 0;
    unsigned char *b = xmalloc(r->pbytes > r->mbytes ? r->pbytes : r->mbytes);
    const size_t ps = dsize(r->pt);
    buf_read(ctx, r->p, 0, r->pbytes, b);
    if (memcmp(b, r->pinit, POFF * ps) != 0 ||
        memcmp(b + (POFF + MN) * ps, r->pinit + (POFF + MN) * ps, GUARD * ps) != 0)
        bad++, print_error("%s run %s: θ's buffer written outside the tensor\n", label, which);
    if (r->m) {
        const size_t ms = r->a.master_kind == CLOPT_MASTER_F32 ? 4 : 2;
        buf_read(ctx, r->m, 0, r->mbytes, b);
        if (memcmp(b, r->minit, MOFF * ms) != 0 ||
            memcmp(b + (MOFF + MN) * ms, r->minit + (MOFF + MN) * ms, GUARD * ms) != 0)
            bad++, print_error("%s run %s: the master's buffer written outside the tensor\n",
                               label, which);
    }
    free(b);
    return bad;
}

/* Bitwise comparison of n floats, the first few differences printed. */
static size_t cmp_bits(const char *label, const char *what, unsigned t, const float *got,
                       const float *want, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (f2u(got[i]) != f2u(want[i]) && bad++ < 3)
            print_error("%s step %u %s[%zu]: %a (0x%08x), want %a (0x%08x)\n", label, t, what, i,
                        (double)got[i], f2u(got[i]), (double)want[i], f2u(want[i]));
    return bad;
}

/* For rule ci, ten steps (or `steps`) with fresh gradients of nine runs side by side:
     A  f32 θ, f32 g (bf16 values)                      the float32 rule
     B  bf16 θ, bf16 g, fp32 master                     (a) master == A's θ, θ == RNE(master)
     C  bf16 θ, bf16 g, remainder (zeros)               (b) θ with r == B's master
     D  f32 θ, f32 g (f16 values), grad_scale 1024      the float32 rule
     E  f32 θ, f16 g, grad_scale 1024                   (c) == D
     F  f32 θ (G's θ every step), f32 g                 the float32 rule
     G  bf16 θ, f32 g                                   (d) θ == RNE(F's result)
     I  f32 θ (H's θ every step), f32 g                 the float32 rule
     H  bf16 θ, f32 g, stochastic rounding              (d) θ among the neighbours of I's
     K  f32 θ (f16 values), f32 g (bf16 values)         the float32 rule
     J  f16 θ, bf16 g, fp32 master                      master == K's θ, θ == RNE(master)
   and the states of each run equal those of its float32 run. */
static size_t master_rule_run(clopt_ctx *ctx, int ci, unsigned steps, int with_j)
{
    fmt_init(&F16);
    fmt_init(&BF16);
    clopt_rule rule;
    clopt_hparams hp;
    const char *label;
    if (!elementwise_variant(ci, &rule, &hp, &label))
        return 0;
    const size_t n = MN;
    uint16_t *tb = xmalloc(n * 2), *th = xmalloc(n * 2), *gb = xmalloc(n * 2),
             *gh = xmalloc(n * 2), *ob = xmalloc(n * 2), *oc = xmalloc(n * 2),
             *rc = xmalloc(n * 2), *og = xmalloc(n * 2), *ohh = xmalloc(n * 2),
             *oj = xmalloc(n * 2);
    float *tf = xmalloc(n * 4), *tfh = xmalloc(n * 4), *gfb = xmalloc(n * 4),
          *gfh = xmalloc(n * 4), *gf = xmalloc(n * 4), *oa = xmalloc(n * 4),
          *mb = xmalloc(n * 4), *od = xmalloc(n * 4), *oe = xmalloc(n * 4),
          *of = xmalloc(n * 4), *oi = xmalloc(n * 4), *ok = xmalloc(n * 4),
          *mj = xmalloc(n * 4);
    float *sa = xmalloc(CLOPT_MAX_STATE * n * 4), *sx = xmalloc(CLOPT_MAX_STATE * n * 4);
    uint64_t s = 1000 + (uint64_t)ci;
    for (size_t i = 0; i < n; i++) {
        tb[i] = round16(&BF16, (unif(&s) - 0.5) * 4.0, 0);
        tf[i] = (float)val16(&BF16, tb[i]);
        th[i] = round16(&F16, (unif(&s) - 0.5) * 4.0, 0);
        tfh[i] = (float)val16(&F16, th[i]);
    }
    run A, B, C, D, E, F, G, H, I, J, K;
    run_make(ctx, &A, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &B, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, CLOPT_MASTER_F32, tb);
    run_make(ctx, &C, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, CLOPT_MASTER_REMAINDER,
             tb);
    run_make(ctx, &D, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &E, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F16, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &F, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &G, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tb);
    run_make(ctx, &H, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tb);
    run_make(ctx, &I, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    if (with_j) {
        run_make(ctx, &J, rule, &hp, CLOPT_DTYPE_F16, CLOPT_DTYPE_BF16, CLOPT_MASTER_F32, th);
        run_make(ctx, &K, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tfh);
    }
    /* the masters start as θ's values */
    run_master(ctx, &B, mb);
    assert_memory_equal(mb, tf, n * 4);
    if (with_j) {
        run_master(ctx, &J, mj);
        assert_memory_equal(mj, tfh, n * 4);
    }
    D.a.grad_scale = E.a.grad_scale = 1024.0;
    H.a.stochastic_rounding = 1;
    H.a.sr_seed = 0x5EED0000ull + (uint64_t)ci;
    H.a.sr_stream = 3;
    run *all[] = {&A, &B, &C, &D, &E, &F, &G, &H, &I, &J, &K};
    const char *names = "ABCDEFGHIJK";
    const size_t nruns = with_j ? 11 : 9;
    size_t bad = 0, sr_moved = 0, rne_moved = 0, m_moved = 0;
    for (unsigned t = 1; t <= steps && !bad; t++) {
        for (size_t i = 0; i < n; i++) {
            const int e = (int)(mix(&s) % 10) - 8;
            const int zero = mix(&s) % 37 == 0;
            gb[i] = zero ? 0 : round16(&BF16, (unif(&s) - 0.5) * ldexp(1, e), 0);
            gfb[i] = (float)val16(&BF16, gb[i]);
            gh[i] = zero ? 0 : round16(&F16, (unif(&s) - 0.5) * 1024.0 * ldexp(1, e), 0);
            gfh[i] = (float)val16(&F16, gh[i]);
            gf[i] = zero ? 0.0f : (float)((unif(&s) - 0.5) * ldexp(1, e));
        }
        run_grad(ctx, &A, gfb), run_grad(ctx, &B, gb), run_grad(ctx, &C, gb);
        run_grad(ctx, &D, gfh), run_grad(ctx, &E, gh);
        run_grad(ctx, &F, gf), run_grad(ctx, &G, gf), run_grad(ctx, &H, gf),
            run_grad(ctx, &I, gf);
        if (with_j)
            run_grad(ctx, &J, gb), run_grad(ctx, &K, gfb);
        /* (d): F and I start the step from G's and H's 16-bit θ */
        convert_ok(ctx, F.p, POFF, CLOPT_DTYPE_F32, G.p, POFF, CLOPT_DTYPE_BF16, n, 0, 0, 0,
                   0);
        convert_ok(ctx, I.p, POFF, CLOPT_DTYPE_F32, H.p, POFF, CLOPT_DTYPE_BF16, n, 0, 0, 0,
                   0);
        for (size_t r = 0; r < nruns; r++) {
            all[r]->a.mu_product = clopt_nadam_mu_product(&hp, t - 1);
            const char which[2] = {names[r], 0};
            run_step(ctx, all[r], rule, &hp, t, label, which);
        }
        assert_int_equal(clFinish(clopt_ctx_cl_queue(ctx)), CL_SUCCESS);

        /* (a) the fp32 master follows the float32 rule bit for bit; θ is its RNE */
        run_theta(ctx, &A, oa);
        run_master(ctx, &B, mb);
        run_theta(ctx, &B, ob);
        bad += cmp_bits(label, "B master vs A θ", t, mb, oa, n);
        for (size_t i = 0; i < n; i++) {
            const uint16_t want = round16(&BF16, mb[i], 0);
            if (ob[i] != want && bad++ < 3)
                print_error("%s step %u: B θ[%zu] 0x%04x, RNE of the master %a is 0x%04x\n",
                            label, t, i, ob[i], (double)mb[i], want);
            m_moved += ob[i] != tb[i];
        }
        run_states(ctx, &A, sa);
        run_states(ctx, &B, sx);
        bad += cmp_bits(label, "B states vs A", t, sx, sa, A.ns * n);
        /* (b) the remainder: θ with r is B's master; θ is it rounded ties away */
        run_theta(ctx, &C, oc);
        run_master(ctx, &C, rc);
        for (size_t i = 0; i < n; i++) {
            const uint32_t bits =
                ((uint32_t)oc[i] << 16) + (uint32_t)(int32_t)(int16_t)rc[i];
            const uint16_t want = round16(&BF16, mb[i], 1);
            if ((bits != f2u(mb[i]) || oc[i] != want) && bad++ < 3)
                print_error("%s step %u: C θ[%zu] 0x%04x r 0x%04x (master 0x%08x), B's master "
                            "%a (0x%08x), θ should be 0x%04x\n",
                            label, t, i, oc[i], rc[i], bits, (double)mb[i], f2u(mb[i]), want);
        }
        run_states(ctx, &C, sx);
        bad += cmp_bits(label, "C states vs B", t, sx, sa, A.ns * n);
        /* (c) f16 gradients == their float32 values, with the loss scale */
        run_theta(ctx, &D, od);
        run_theta(ctx, &E, oe);
        bad += cmp_bits(label, "E θ vs D θ", t, oe, od, n);
        run_states(ctx, &D, sa);
        run_states(ctx, &E, sx);
        bad += cmp_bits(label, "E states vs D", t, sx, sa, D.ns * n);
        /* (d) without a master: RNE of the float32 result, or one of its neighbours */
        run_theta(ctx, &F, of);
        run_theta(ctx, &G, og);
        run_theta(ctx, &I, oi);
        run_theta(ctx, &H, ohh);
        for (size_t i = 0; i < n; i++) {
            const uint16_t want = round16(&BF16, of[i], 0);
            if (og[i] != want && bad++ < 3)
                print_error("%s step %u: G θ[%zu] 0x%04x, RNE of %a is 0x%04x\n", label, t, i,
                            og[i], (double)of[i], want);
            uint16_t dn, up;
            neighbours16(&BF16, oi[i], &dn, &up);
            if (ohh[i] != dn && ohh[i] != up && bad++ < 3)
                print_error("%s step %u: H θ[%zu] 0x%04x, not a neighbour of %a\n", label, t,
                            i, ohh[i], (double)oi[i]);
            sr_moved += ohh[i] != round16(&BF16, oi[i], 0);
            rne_moved += og[i] != tb[i];
        }
        run_states(ctx, &F, sa);
        run_states(ctx, &G, sx);
        bad += cmp_bits(label, "G states vs F", t, sx, sa, F.ns * n);
        run_states(ctx, &I, sa);
        run_states(ctx, &H, sx);
        bad += cmp_bits(label, "H states vs I", t, sx, sa, I.ns * n);
        if (with_j) { /* f16 θ with an fp32 master */
            run_theta(ctx, &K, ok);
            run_master(ctx, &J, mj);
            run_theta(ctx, &J, oj);
            bad += cmp_bits(label, "J master vs K θ", t, mj, ok, n);
            for (size_t i = 0; i < n; i++) {
                const uint16_t want = f16_ref(mj[i]);
                if (oj[i] != want && bad++ < 3)
                    print_error("%s step %u: J θ[%zu] 0x%04x, RNE of the master %a is 0x%04x\n",
                                label, t, i, oj[i], (double)mj[i], want);
            }
            run_states(ctx, &K, sa);
            run_states(ctx, &J, sx);
            bad += cmp_bits(label, "J states vs K", t, sx, sa, K.ns * n);
        }
    }
    /* the 16-bit gradients were only read; nothing outside the tensors was written */
    {
        uint16_t *gr = xmalloc(n * 2);
        buf_read(ctx, B.g, GOFF * 2, n * 2, gr);
        if (memcmp(gr, gb, n * 2) != 0)
            bad++, print_error("%s: B's bf16 gradient was modified\n", label);
        buf_read(ctx, E.g, GOFF * 2, n * 2, gr);
        if (memcmp(gr, gh, n * 2) != 0)
            bad++, print_error("%s: E's f16 gradient was modified\n", label);
        free(gr);
    }
    for (size_t r = 0; r < nruns; r++) {
        const char which[2] = {names[r], 0};
        bad += run_guards(ctx, all[r], label, which);
    }
    /* not vacuous: the weights moved, and stochastic rounding did not always agree
       with round to nearest */
    if (!m_moved || !rne_moved || !sr_moved)
        bad++, print_error("%s: vacuous (master θ moved %zu, RNE %zu, SR != RNE %zu)\n",
                           label, m_moved, rne_moved, sr_moved);
    print_message("  %-13s%s %s (θ moved: master %zu, RNE %zu; SR != RNE %zu)\n", label,
                  with_j ? " +f16" : "     ", bad ? "FAILED" : "ok", m_moved, rne_moved, sr_moved);
    for (size_t r = 0; r < nruns; r++)
        run_free(all[r]);
    free(tb), free(th), free(gb), free(gh), free(ob), free(oc), free(rc), free(og), free(ohh),
        free(oj);
    free(tf), free(tfh), free(gfb), free(gfh), free(gf), free(oa), free(mb), free(od),
        free(oe), free(of), free(oi), free(ok), free(mj), free(sa), free(sx);
    return bad;
}

static void test_master_rules(void **state)
{
    fixture *f = *state;
    const unsigned steps = test_small() ? 3 : 10;
    size_t bad = 0;
    clopt_rule rule;
    clopt_hparams hp;
    const char *label;
    /* the f16 θ runs J, K on every third rule (each storage variant is a compile) */
    for (int ci = 0; elementwise_variant(ci, &rule, &hp, &label); ci++)
        bad += master_rule_run(f->ctx, ci, steps, ci % 3 == 0);
    assert_int_equal(bad, 0);
}

/* The scalar kernels (vector width 1, three vectors per work-item: the other branch of every
   storage macro and of the random words) on a context of their own. */
static void test_scalar_tuning(void **state)
{
    (void)state;
    clopt_ctx *ctx;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    clopt_tuning t;
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
    t.vector_width = 1;
    t.work_group_size = 0;
    t.items_per_work_item = 3;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
    assert_int_equal(check_all_16bit(ctx), 0);
    const sr_case cases[] = {{&BF16, 0x1.01p0f, 0.5}, {&F16, 0x1.001p0f, 0.25}};
    check_sr_words(ctx, cases, 2);
    assert_int_equal(master_rule_run(ctx, 1 /* adam amsgrad */, 3, 1), 0);
    clopt_ctx_destroy(ctx);
}

/* Exact ties, which random runs almost never hit: SGD (lr 1) makes masters that lie halfway
   between two 16-bit neighbours. The remainder's θ rounds them away from zero, an fp32
   master's θ and a plain θ to even; θ with its remainder is the master exactly; an fp32
   master's θ is never read (it starts as NaN). */
static void test_master_ties(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 6 };
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &hp), CLOPT_SUCCESS);
    hp.lr = 1.0;
    /* θ (bf16) and g: master = θ - g */
    const uint16_t theta[N] = {0x3F80, 0x3F81, 0xBF80, 0xBF81, 0x3F80, 0x4780};
    const float g[N] = {-0x1p-8f, -0x1p-8f, 0x1p-8f, 0x1p-8f, -0x1p-9f, -256.0f};
    /* the masters: 1 + 2^-8, 1 + 3·2^-8, -(1 + 2^-8), -(1 + 3·2^-8), 1 + 2^-9 (a quarter,
       not a tie), 65536 + 256 */
    const uint32_t master[N] = {0x3F808000u, 0x3F818000u, 0xBF808000u,
                                0xBF818000u, 0x3F804000u, 0x47808000u};
    const uint16_t away[N] = {0x3F81, 0x3F82, 0xBF81, 0xBF82, 0x3F80, 0x4781};
    const uint16_t even[N] = {0x3F80, 0x3F82, 0xBF80, 0xBF82, 0x3F80, 0x4780};
    for (int i = 0; i < N; i++) { /* the tables against the value-based references */
        assert_true((double)u2f(master[i]) == val16(&BF16, theta[i]) - (double)g[i]);
        assert_int_equal(away[i], round16(&BF16, u2f(master[i]), 1));
        assert_int_equal(even[i], round16(&BF16, u2f(master[i]), 0));
    }
    cl_mem bg = buf_new(ctx, sizeof g, g);
    for (int kind = 0; kind < 3; kind++) { /* remainder, fp32 master, none */
        uint16_t th[N], r[N];
        const uint16_t nan[N] = {0x7FC0, 0x7FC0, 0xFFC0, 0x7F81, 0x7FC0, 0x7FC0};
        cl_mem bp = buf_new(ctx, sizeof th, kind == 1 ? nan : theta), bm = NULL;
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){bp, 0};
        a.grad = (clopt_tensor){bg, 0};
        a.param_dtype = CLOPT_DTYPE_BF16;
        if (kind == 0) {
            memset(r, 0, sizeof r);
            bm = buf_new(ctx, sizeof r, r);
            a.master_kind = CLOPT_MASTER_REMAINDER;
        } else if (kind == 1) {
            float m0[N];
            for (int i = 0; i < N; i++)
                m0[i] = (float)val16(&BF16, theta[i]);
            bm = buf_new(ctx, sizeof m0, m0);
            a.master_kind = CLOPT_MASTER_F32;
        }
        a.master = (clopt_tensor){bm, 0};
        assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, 1, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        buf_read(ctx, bp, 0, sizeof th, th);
        for (int i = 0; i < N; i++) {
            const uint16_t want = kind == 0 ? away[i] : even[i];
            if (th[i] != want)
                print_error("%s: master 0x%08x gave θ 0x%04x, want 0x%04x\n",
                            kind == 0 ? "remainder" : kind == 1 ? "fp32 master" : "no master",
                            master[i], th[i], want);
            assert_int_equal(th[i], want);
        }
        if (kind == 0) {
            buf_read(ctx, bm, 0, sizeof r, r);
            for (int i = 0; i < N; i++)
                assert_int_equal(((uint32_t)th[i] << 16) + (uint32_t)(int32_t)(int16_t)r[i],
                                 master[i]);
            /* a zero gradient keeps the master and θ with it; then back to θ exactly */
            const float zero[N] = {0};
            cl_mem bz = buf_new(ctx, sizeof zero, zero);
            a.grad = (clopt_tensor){bz, 0};
            assert_int_equal(
                clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, 2, 0, NULL, NULL),
                CLOPT_SUCCESS);
            uint16_t th2[N], r2[N];
            buf_read(ctx, bp, 0, sizeof th2, th2);
            buf_read(ctx, bm, 0, sizeof r2, r2);
            assert_memory_equal(th2, th, sizeof th);
            assert_memory_equal(r2, r, sizeof r);
            float back[N];
            for (int i = 0; i < N; i++)
                back[i] = -g[i];
            buf_write(ctx, bz, 0, sizeof back, back);
            assert_int_equal(
                clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, 3, 0, NULL, NULL),
                CLOPT_SUCCESS);
            buf_read(ctx, bp, 0, sizeof th2, th2);
            buf_read(ctx, bm, 0, sizeof r2, r2);
            assert_memory_equal(th2, theta, sizeof th2);
            for (int i = 0; i < N; i++)
                assert_int_equal(r2[i], 0);
            clReleaseMemObject(bz);
        } else if (kind == 1) {
            float m[N];
            buf_read(ctx, bm, 0, sizeof m, m);
            for (int i = 0; i < N; i++)
                assert_int_equal(f2u(m[i]), master[i]);
        }
        clReleaseMemObject(bp);
        if (bm)
            clReleaseMemObject(bm);
    }
    /* f16 θ with an fp32 master: 1 + 2^-11 and 1 + 3·2^-11 round to even */
    {
        const float m0[2] = {1.0f, 1.0f}, g2[2] = {-0x1p-11f, -0x3p-11f};
        const uint16_t nan[2] = {0x7E00, 0xFE00};
        cl_mem bp = buf_new(ctx, sizeof nan, nan), bm = buf_new(ctx, sizeof m0, m0),
               bg2 = buf_new(ctx, sizeof g2, g2);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){bp, 0};
        a.grad = (clopt_tensor){bg2, 0};
        a.param_dtype = CLOPT_DTYPE_F16;
        a.master_kind = CLOPT_MASTER_F32;
        a.master = (clopt_tensor){bm, 0};
        assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, 2, 1, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        uint16_t th[2];
        buf_read(ctx, bp, 0, sizeof th, th);
        assert_int_equal(th[0], round16(&F16, 1.0 + 0x1p-11, 0));
        assert_int_equal(th[1], round16(&F16, 1.0 + 0x3p-11, 0));
        assert_int_equal(th[0], 0x3C00);
        assert_int_equal(th[1], 0x3C02);
        clReleaseMemObject(bp), clReleaseMemObject(bm), clReleaseMemObject(bg2);
    }
    clReleaseMemObject(bg);
}

/* ---- bad input changes nothing ------------------------------------------------------------- */

enum { BN = 64 };

static cl_mem env_buf(bad_env *e, size_t bytes, uint64_t *s)
{
    unsigned char *d = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++)
        d[i] = (unsigned char)mix(s);
    return bad_env_buf(e, bytes, d);
}

/* a step at step 1 */
#define expect_step(e, rule, hp, a, n, want, what)                                         \
    bad_env_expect_step(e, rule, hp, a, n, 1, want, what)
#define env_check bad_env_check

static void expect_convert(bad_env *e, clopt_tensor dst, clopt_dtype dt, clopt_tensor src,
                           clopt_dtype st, size_t n, int sr, clopt_status want,
                           const char *what)
{
    const clopt_status s = clopt_enqueue_convert(e->ctx, NULL, dst, dt, src, st, n, sr, 1, 2, 3,
                                                 0, NULL, NULL);
    if (s != want)
        print_error("%s: got %s (%s), want %s\n", what, clopt_status_name(s),
                    clopt_ctx_last_error(e->ctx), clopt_status_name(want));
    assert_int_equal(s, want);
    assert_true(strlen(clopt_ctx_last_error(e->ctx)) > 0);
    env_check(e, what);
}

static void test_bad_storage_args(void **state)
{
    fixture *f = *state;
    bad_env e = {f->ctx, {0}, {0}, {0}, 0};
    uint64_t s = 31337;
    const size_t n = BN;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    /* big enough buffers for n + 8 float32 elements, and buffers of exactly n 16-bit (or n
       float32) elements */
    cl_mem pbig = env_buf(&e, (n + 8) * 4, &s), gbig = env_buf(&e, (n + 8) * 4, &s),
           mbig = env_buf(&e, (n + 8) * 4, &s), p16x = env_buf(&e, n * 2, &s),
           g16x = env_buf(&e, n * 2, &s), m32x = env_buf(&e, n * 4, &s),
           r16x = env_buf(&e, n * 2, &s), sh = env_buf(&e, n * 4 + n * 2, &s),
           st0 = env_buf(&e, (n + 8) * 4, &s), st1 = env_buf(&e, (n + 8) * 4, &s),
           gcs = env_buf(&e, 64, &s);
    clopt_step_args base;
    clopt_step_args_init(&base);
    base.param = (clopt_tensor){pbig, 0};
    base.grad = (clopt_tensor){gbig, 0};
    base.state[0] = (clopt_tensor){st0, 0};
    base.state[1] = (clopt_tensor){st1, 0};
    clopt_step_args a;
    size_t n1;
#define CASE(setup, want, what)                                                             \
    do {                                                                                    \
        a = base;                                                                           \
        n1 = n;                                                                             \
        setup;                                                                              \
        expect_step(&e, CLOPT_ADAM, &hp, &a, n1, want, what);                               \
    } while (0)
    const clopt_tensor m = {mbig, 1};
    CASE((a.master_kind = CLOPT_MASTER_F32, a.master = m), CLOPT_ERR_INVALID_ARGUMENT,
         "fp32 master with f32 θ");
    CASE((a.master_kind = CLOPT_MASTER_REMAINDER, a.master = m), CLOPT_ERR_INVALID_ARGUMENT,
         "remainder with f32 θ");
    CASE((a.param_dtype = CLOPT_DTYPE_F16, a.master_kind = CLOPT_MASTER_REMAINDER,
          a.master = m),
         CLOPT_ERR_INVALID_ARGUMENT, "remainder with f16 θ");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_F32, a.master = m,
          a.stochastic_rounding = 1),
         CLOPT_ERR_INVALID_ARGUMENT, "SR with an fp32 master");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_REMAINDER,
          a.master = m, a.stochastic_rounding = 1),
         CLOPT_ERR_INVALID_ARGUMENT, "SR with a remainder");
    CASE((a.param_dtype = CLOPT_DTYPE_F16, a.master_kind = CLOPT_MASTER_F32, a.master = m,
          a.stochastic_rounding = 1),
         CLOPT_ERR_INVALID_ARGUMENT, "SR with f16 θ and a master");
    CASE((a.stochastic_rounding = 1), CLOPT_ERR_INVALID_ARGUMENT, "SR with f32 θ");
    CASE((a.param_dtype = CLOPT_DTYPE_U16), CLOPT_ERR_INVALID_ARGUMENT, "u16 θ");
    CASE((a.grad_dtype = CLOPT_DTYPE_U16), CLOPT_ERR_INVALID_ARGUMENT, "u16 g");
    CASE((a.param_dtype = (clopt_dtype)4), CLOPT_ERR_INVALID_ARGUMENT, "θ dtype 4");
    CASE((a.grad_dtype = (clopt_dtype)-1), CLOPT_ERR_INVALID_ARGUMENT, "g dtype -1");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = (clopt_master)3, a.master = m),
         CLOPT_ERR_INVALID_ARGUMENT, "master_kind 3");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master = m), CLOPT_ERR_STATE_MISMATCH,
         "master set with master_kind NONE (bf16 θ)");
    CASE((a.master = m), CLOPT_ERR_STATE_MISMATCH, "master set with master_kind NONE (f32 θ)");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_F32),
         CLOPT_ERR_NULL_ARGUMENT, "fp32 master without a buffer");
    /* (gradient centralization takes 16-bit θ and g: tests/test_storage_opt.c) */
    /* sizes count elements of each tensor's own type */
    CASE((a.param = (clopt_tensor){p16x, 0}, a.param_dtype = CLOPT_DTYPE_BF16, n1 = n + 1),
         CLOPT_ERR_OUT_OF_BOUNDS, "bf16 θ of n + 1 in 2n bytes");
    CASE((a.param = (clopt_tensor){p16x, 1}, a.param_dtype = CLOPT_DTYPE_F16),
         CLOPT_ERR_OUT_OF_BOUNDS, "f16 θ of n at offset 1 in 2n bytes");
    CASE((a.param = (clopt_tensor){p16x, 0}), CLOPT_ERR_OUT_OF_BOUNDS,
         "f32 θ of n in 2n bytes");
    CASE((a.grad = (clopt_tensor){g16x, 0}, a.grad_dtype = CLOPT_DTYPE_BF16, n1 = n + 1),
         CLOPT_ERR_OUT_OF_BOUNDS, "bf16 g of n + 1 in 2n bytes");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_F32,
          a.master = (clopt_tensor){m32x, 0}, n1 = n + 1),
         CLOPT_ERR_OUT_OF_BOUNDS, "fp32 master of n + 1 in 4n bytes");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_F32,
          a.master = (clopt_tensor){r16x, 0}),
         CLOPT_ERR_OUT_OF_BOUNDS, "fp32 master of n in 2n bytes");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_REMAINDER,
          a.master = (clopt_tensor){r16x, 0}, n1 = n + 1),
         CLOPT_ERR_OUT_OF_BOUNDS, "remainder of n + 1 in 2n bytes");
    CASE((a.param_dtype = CLOPT_DTYPE_BF16, a.master_kind = CLOPT_MASTER_REMAINDER,
          a.master = (clopt_tensor){r16x, 1}),
         CLOPT_ERR_OUT_OF_BOUNDS, "remainder of n at offset 1 in 2n bytes");
#undef CASE

    /* clopt_enqueue_convert */
    const clopt_tensor d16 = {p16x, 0}, s32 = {mbig, 0};
    expect_convert(&e, d16, CLOPT_DTYPE_U16, s32, CLOPT_DTYPE_F32, n, 0,
                   CLOPT_ERR_INVALID_ARGUMENT, "convert to u16");
    expect_convert(&e, (clopt_tensor){mbig, 0}, CLOPT_DTYPE_F32, (clopt_tensor){g16x, 0},
                   CLOPT_DTYPE_U16, n, 0, CLOPT_ERR_INVALID_ARGUMENT, "convert from u16");
    expect_convert(&e, d16, (clopt_dtype)5, s32, CLOPT_DTYPE_F32, n, 0,
                   CLOPT_ERR_INVALID_ARGUMENT, "convert to dtype 5");
    expect_convert(&e, (clopt_tensor){mbig, 0}, CLOPT_DTYPE_F32, (clopt_tensor){g16x, 0},
                   CLOPT_DTYPE_BF16, n, 1, CLOPT_ERR_INVALID_ARGUMENT, "SR to f32");
    expect_convert(&e, (clopt_tensor){mbig, 0}, CLOPT_DTYPE_F32, (clopt_tensor){pbig, 0},
                   CLOPT_DTYPE_F32, n, 1, CLOPT_ERR_INVALID_ARGUMENT, "SR f32 to f32");
    expect_convert(&e, d16, CLOPT_DTYPE_BF16, s32, CLOPT_DTYPE_F32, 0, 0,
                   CLOPT_ERR_INVALID_SIZE, "convert n = 0");
    expect_convert(&e, d16, CLOPT_DTYPE_BF16, s32, CLOPT_DTYPE_F32, n + 1, 0,
                   CLOPT_ERR_OUT_OF_BOUNDS, "convert to bf16 n + 1 in 2n bytes");
    expect_convert(&e, (clopt_tensor){mbig, 0}, CLOPT_DTYPE_F32, (clopt_tensor){g16x, 1},
                   CLOPT_DTYPE_F16, n, 0, CLOPT_ERR_OUT_OF_BOUNDS,
                   "convert from f16 n at offset 1 in 2n bytes");
    /* one buffer sh of 6n bytes: float32 src over bytes [0, 4n); a bf16 dst from element
       2n - 1 (byte 4n - 2) overlaps it, as does a 16-bit src over a 16-bit dst */
    expect_convert(&e, (clopt_tensor){sh, 2 * n - 1}, CLOPT_DTYPE_BF16, (clopt_tensor){sh, 0},
                   CLOPT_DTYPE_F32, n, 0, CLOPT_ERR_INVALID_ARGUMENT,
                   "convert overlapping by one element");
    expect_convert(&e, (clopt_tensor){sh, 0}, CLOPT_DTYPE_F32, (clopt_tensor){sh, 2 * n - 1},
                   CLOPT_DTYPE_BF16, n, 0, CLOPT_ERR_INVALID_ARGUMENT,
                   "convert overlapping, src after dst");
    expect_convert(&e, (clopt_tensor){sh, 7}, CLOPT_DTYPE_F16, (clopt_tensor){sh, 0},
                   CLOPT_DTYPE_BF16, n, 0, CLOPT_ERR_INVALID_ARGUMENT,
                   "convert 16-bit overlapping");
    expect_convert(&e, (clopt_tensor){sh, 0}, CLOPT_DTYPE_F32, (clopt_tensor){sh, 0},
                   CLOPT_DTYPE_F32, n, 0, CLOPT_ERR_INVALID_ARGUMENT, "convert in place");

    /* the accepted neighbours of the refused calls (these write) */
    a = base;
    a.param = (clopt_tensor){p16x, 0};
    a.param_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_string_equal(clopt_ctx_last_error(e.ctx), "");
    a = base;
    a.param = (clopt_tensor){p16x, 1};
    a.param_dtype = CLOPT_DTYPE_F16;
    assert_int_equal(
        clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n - 1, 1, 0, NULL, NULL),
        CLOPT_SUCCESS);
    a = base;
    a.grad = (clopt_tensor){g16x, 0};
    a.grad_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    a = base;
    a.param_dtype = CLOPT_DTYPE_BF16;
    a.master_kind = CLOPT_MASTER_F32;
    a.master = (clopt_tensor){m32x, 0};
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    a.master_kind = CLOPT_MASTER_REMAINDER;
    a.master = (clopt_tensor){r16x, 0};
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    /* GC over rows with float32 θ and g, and with bf16 θ; GC on with gc_rows 0 (1-D) */
    clopt_hparams gc = hp;
    gc.grad_centralization = 1;
    a = base;
    a.gc_rows = 8;
    a.gc_scratch = (clopt_tensor){gcs, 0};
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &gc, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    a.param_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &gc, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    a.gc_rows = 0;
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &gc, &a, n, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    convert_ok(e.ctx, sh, 2 * n, CLOPT_DTYPE_BF16, sh, 0, CLOPT_DTYPE_F32, n, 0, 0, 0, 0);
    convert_ok(e.ctx, p16x, 0, CLOPT_DTYPE_BF16, mbig, 8, CLOPT_DTYPE_F32, n, 1, 1, 2, 3);
    convert_ok(e.ctx, mbig, 0, CLOPT_DTYPE_F32, g16x, 0, CLOPT_DTYPE_F16, n, 0, 0, 0, 0);
    assert_int_equal(clFinish(clopt_ctx_cl_queue(e.ctx)), CL_SUCCESS);
    for (size_t b = 0; b < e.nbufs; b++) {
        clReleaseMemObject(e.bufs[b]);
        free(e.snap[b]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_basics),
        cmocka_unit_test(test_convert_all_16bit),
        cmocka_unit_test(test_convert_f32_dense),
        cmocka_unit_test(test_convert_offsets),
        cmocka_unit_test(test_sr_convert),
        cmocka_unit_test(test_sr_convert_words),
        cmocka_unit_test(test_sr_mean),
        cmocka_unit_test(test_sr_sgd_bias),
        cmocka_unit_test(test_sr_step_words),
        cmocka_unit_test(test_master_ties),
        cmocka_unit_test(test_master_rules),
        cmocka_unit_test(test_scalar_tuning),
        cmocka_unit_test(test_bad_storage_args),
    };
    const int failed = cmocka_run_group_tests(tests, setup, teardown);
    free(F16.pos), free(BF16.pos);
    return failed;
}
