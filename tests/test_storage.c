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
 *  - invalid combinations refused with nothing changed.
 * Stochastic rounding is in test_storage_sr.c, master weights (and the scalar kernels' run of
 * conversions, stochastic rounding and master weights) in test_storage_master.c, accumulation
 * between types in test_storage_axpby.c (one executable; shared helpers in test_storage.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clopt.h"
#include "fixture.h"
#include "test_storage.h"

#ifdef __FLT16_MAX__
__extension__ typedef _Float16 host_f16;
#define HAVE_HOST_F16 1
#else
#define HAVE_HOST_F16 0
#endif

/* ---- small helpers ----------------------------------------------------------------------- */

uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double unif(uint64_t *s) { return (double)(mix(s) >> 11) / 9007199254740992.0; }

void convert_ok(clopt_ctx *ctx, cl_mem dst, size_t doff, clopt_dtype dt, cl_mem src,
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

fmt16 F16 = {"f16", CLOPT_DTYPE_F16, 5, 10, 0, NULL, 0};
fmt16 BF16 = {"bf16", CLOPT_DTYPE_BF16, 8, 7, 0, NULL, 0};

void fmt_init(fmt16 *f)
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

double val16(const fmt16 *f, uint16_t h) { return dec16(f->ebits, f->mbits, h); }
uint16_t inf16(const fmt16 *f) { return (uint16_t)(f->maxfin + 1); }
int isnan16(const fmt16 *f, uint16_t h) { return (h & 0x7FFFu) > inf16(f); }

/* x (not NaN) rounded to f by value: the nearer of its two neighbours, a tie to the even
   pattern (ties_away: to the larger magnitude), Inf from f->overflow on. */
uint16_t round16(const fmt16 *f, double x, int ties_away)
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
void neighbours16(const fmt16 *f, double x, uint16_t *down, uint16_t *up)
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
uint16_t f16_ref(float x)
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

/* ---- conversions ----------------------------------------------------------------------------- */

/* Every f16 and bf16 pattern to f32 and back, and to the other 16-bit type. */
size_t check_all_16bit(clopt_ctx *ctx)
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
        STORAGE_SR_TESTS,
        STORAGE_MASTER_TESTS,
        STORAGE_AXPBY_TESTS,
        cmocka_unit_test(test_bad_storage_args),
    };
    const int failed = cmocka_run_group_tests(tests, setup, teardown);
    free(F16.pos), free(BF16.pos);
    return failed;
}
