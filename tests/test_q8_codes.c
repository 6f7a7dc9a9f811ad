/* SPDX-License-Identifier: MIT */
/* The code the kernels give each value of an 8-bit state: the nearest entry of the map, ties to
 * the lower code (the transcription's map_nearest, exact distances in double). The block's
 * first value is 1, so its absmax is 1 and the value to quantize is the stored value itself:
 * SGD's step 1 stores b = g (signed map); Adagrad from a zero sum stores s = g·g rounded once
 * (unsigned map; g is searched so that its square is the wanted value, values with no such g
 * are left out and counted). Three tests:
 *  - exact ties (the lower code) and values one ulp off a midpoint (the nearer code);
 *  - every boundary between two neighbouring codes (the first float that takes the upper
 *    code, and the float below it; in the unsigned map the nearest squares on each side,
 *    within 3 ulps), the first and last float of every run of 2^16 floats with the same top
 *    16 bits from 2^-26 to 1 (the kernels' table has one entry per such run), 0, -0, a
 *    subnormal, -1, NaN of both signs (the code of 0, as documented) and values spread over
 *    28 binades with both signs;
 *  - the table itself (host/q8_table.h, built here as the library builds it), read as the
 *    kernels read it, against the count of midpoints below each value: at each entry's
 *    first and last value, its threshold and the value below it, and 2 x 10^6 random floats,
 *    both maps and signs. */
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
#include "test_q8.h"
#include "../host/q8_table.h"

/* Floats in increasing order as integers (-0 just below +0) and back. */
static int64_t ord(float x)
{
    const uint32_t u = f2u(x);
    return u >> 31 ? -(int64_t)(u & 0x7FFFFFFFu) - 1 : (int64_t)u;
}

static float unord(int64_t o)
{
    return o < 0 ? u2f((uint32_t)(-(o + 1)) | 0x80000000u) : u2f((uint32_t)o);
}

/* The values to quantize, as g and the state value they give, and the code each must get. */
typedef struct codes {
    size_t n, cap, skipped;
    float *g, *val;
    unsigned *want;
} codes;

static void codes_init(codes *c, size_t cap)
{
    memset(c, 0, sizeof *c);
    c->cap = cap;
    c->g = xmalloc(cap * 4), c->val = xmalloc(cap * 4);
    c->want = xmalloc(cap * sizeof *c->want);
}

static void codes_free(codes *c)
{
    free(c->g), free(c->val), free(c->want);
    memset(c, 0, sizeof *c);
}

/* Adds value v wanting code w: g = v (signed map) or a g whose square rounds to v (unsigned);
   returns 0 when no float has that square. */
static int codes_add(codes *c, int sg, float v, unsigned w)
{
    assert_true(c->n < c->cap);
    float g = v;
    if (!sg) {
        int found = 0;
        if (v == 0.0f || isnan(v)) {
            g = v, found = 1;
        } else {
            float r = nextafterf(nextafterf(sqrtf(v), 0.0f), 0.0f);
            for (int u = 0; u < 5 && !found; u++, r = nextafterf(r, 2.0f)) {
                const volatile float sq = r * r;
                if (sq == v)
                    g = r, found = 1;
            }
        }
        if (!found) {
            c->skipped++;
            return 0;
        }
    }
    c->g[c->n] = g, c->val[c->n] = v, c->want[c->n++] = w;
    return 1;
}

/* v, or for the unsigned map the first value from v on in direction dir (+1 up, -1 down, at
   most 3 ulps on) that a float squares to; its code is the nearest. */
static void codes_near(codes *c, int sg, float v, int dir)
{
    const size_t skipped = c->skipped;
    int found = 0;
    for (int u = 0; u < 4 && !found; u++, v = unord(ord(v) + dir))
        found = codes_add(c, sg, v, map_nearest(QMAP[sg], (double)v));
    c->skipped = skipped + (found ? 0 : 1);
}

/* One step of SGD with momentum (signed) or Adagrad (unsigned) on blocks of 1 + 255 values;
   the number of wrong codes and wrong absmaxes, the first few printed. */
static size_t codes_run(clopt_ctx *ctx, int sg, const codes *c, const char *label)
{
    const size_t nb = (c->n + 254) / 255, n = c->n + nb;
    float *g = xmalloc(n * 4), *v = xmalloc(n * 4), *theta = xmalloc(n * 4), *th = xmalloc(n * 4);
    unsigned *wc = xmalloc(n * sizeof *wc);
    for (size_t i = 0, j = 0; i < n; i++) {
        theta[i] = 0.5f;
        if (i % 256 == 0)
            g[i] = v[i] = 1.0f, wc[i] = 255;
        else
            g[i] = c->g[j], v[i] = c->val[j], wc[i] = c->want[j], j++;
    }
    const clopt_rule rule = sg ? CLOPT_SGD : CLOPT_ADAGRAD;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(rule, &hp), CLOPT_SUCCESS);
    hp.lr = 0x1p-10, hp.weight_decay = 0, hp.initial_accumulator_value = 0;
    if (sg)
        hp.momentum = 0.5;
    q8s st;
    q8_alloc(&st, n, sg);
    memset(st.code, (int)QZERO[sg], n);
    memset(st.amax, 0, nblocks(n) * 4);
    q8dev d;
    q8dev_make(ctx, &d, n, theta, g, 1, &st);
    step_ok(ctx, rule, &hp, &d.args, n, 1, label);
    q8dev_read(ctx, &d, th, &st);
    size_t bad = q8dev_guards(ctx, &d, label);
    for (size_t b = 0; b < nblocks(n); b++)
        if (st.amax[b] != 1.0f)
            bad++, print_error("%s: block %zu absmax %a, want 1\n", label, b, (double)st.amax[b]);
    const float *map = QMAP[sg];
    for (size_t i = 0; i < n; i++) {
        if (st.code[i] == wc[i])
            continue;
        if (++bad <= 6) {
            const double mid = ((double)map[wc[i]] + (double)map[st.code[i]]) / 2;
            print_error("%s: %a between %a (code %u) and %a (code %u)%s got code %u, want %u\n",
                        label, (double)v[i], (double)map[wc[i]], wc[i], (double)map[st.code[i]],
                        st.code[i], (double)v[i] == mid ? ", exactly midway," : "", st.code[i],
                        wc[i]);
        }
    }
    q8dev_free(&d);
    q8_free(&st);
    free(g), free(v), free(theta), free(th), free(wc);
    return bad;
}

/* Every midpoint between two neighbouring map entries that float32 holds exactly (where the
   library's map equals the transcription bit for bit, so that it is a tie for both), and, for
   the signed map where the two entries are within a factor 2 (the distances to them are then
   exact in float32), the midpoint one ulp up (the upper code) and one ulp down (the lower). */
static size_t ties_run(clopt_ctx *ctx, int sg, size_t *nties)
{
    float lib[256];
    clopt_q8_map(sg, lib);
    const float *map = QMAP[sg];
    codes c;
    codes_init(&c, 3 * 255);
    *nties = 0;
    for (unsigned k = 0; k < 255; k++) {
        const float m0 = map[k], m1 = map[k + 1];
        if (f2u(lib[k]) != f2u(m0) || f2u(lib[k + 1]) != f2u(m1) || m1 == 1.0f)
            continue;
        const double mid = ((double)m0 + (double)m1) / 2;
        const float fm = (float)mid;
        if ((double)fm != mid)
            continue;
        *nties += (size_t)codes_add(&c, sg, fm, k);
        if (sg && ((m0 > 0 && m1 <= 2 * m0) || (m1 < 0 && -m0 <= -2 * m1))) {
            codes_add(&c, sg, nextafterf(fm, 2.0f), k + 1);
            codes_add(&c, sg, nextafterf(fm, -2.0f), k);
        }
    }
    const size_t bad = codes_run(ctx, sg, &c, sg ? "ties, signed map (sgd)"
                                                  : "ties, unsigned map (adagrad)");
    codes_free(&c);
    return bad;
}

void test_q8_ties(void **state)
{
    fixture *f = *state;
    maps_init();
    size_t ns = 0, nu = 0;
    const size_t bad = ties_run(f->ctx, 1, &ns) + ties_run(f->ctx, 0, &nu);
    print_message("  exact ties: %zu in the signed map, %zu in the unsigned map\n", ns, nu);
    assert_true(ns >= 20 && nu >= 20);
    assert_int_equal(bad, 0);
}

/* The first float above map[k] whose nearest code is k + 1. */
static float boundary(const float *map, unsigned k)
{
    int64_t lo = ord(map[k]), hi = ord(map[k + 1]); /* nearest(lo) = k, nearest(hi) = k + 1 */
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (map_nearest(map, (double)unord(mid)) == k + 1)
            hi = mid;
        else
            lo = mid;
    }
    return unord(hi);
}

static size_t boundaries_run(clopt_ctx *ctx, int sg, size_t *nvalues, size_t *nskipped)
{
    const float *map = QMAP[sg];
    codes c;
    codes_init(&c, 2 * 255 + 9 + 4000 + 4 * (0x3F81 - 0x3280));
    for (unsigned k = 0; k < 255; k++) {
        const float b = boundary(map, k);
        codes_near(&c, sg, b, 1);
        codes_near(&c, sg, unord(ord(b) - 1), -1);
    }
    codes_add(&c, sg, 0.0f, QZERO[sg]);
    codes_add(&c, sg, 0x1p-140f, QZERO[sg]); /* subnormal */
    codes_add(&c, sg, NAN, QZERO[sg]);
    if (sg) {
        codes_add(&c, sg, -0.0f, QZERO[sg]);
        codes_add(&c, sg, -0x1p-140f, QZERO[sg]);
        codes_add(&c, sg, -1.0f, 0);
        codes_add(&c, sg, -NAN, QZERO[sg]);
    }
    uint64_t s = 0x5eed0c0de5ull + (uint64_t)sg;
    /* the first and the last float of every run of 2^16 with the same top 16 bits, from
       2^-26 to 1, both signs (in the unsigned map the nearest squares inside the run) */
    for (uint32_t t = 0x3280; t <= 0x3F80; t++)
        for (int neg = 0; neg <= sg; neg++) {
            const uint32_t s16 = neg ? 0x80000000u : 0u;
            codes_near(&c, sg, u2f(s16 | t << 16), neg ? -1 : 1);
            if (t < 0x3F80)
                codes_near(&c, sg, u2f(s16 | t << 16 | 0xFFFFu), neg ? 1 : -1);
        }
    for (int i = 0; i < 4000; i++) {
        float v = (float)exp2(unif(&s, -28.0, 0.0));
        if (sg && ref_uniform(&s) < 0.5)
            v = -v;
        if (!sg) /* a square: s = g·g */
            v = (float)exp2(unif(&s, -14.0, 0.0)), v = v * v;
        codes_add(&c, sg, v, map_nearest(map, (double)v));
    }
    *nvalues = c.n, *nskipped = c.skipped;
    const size_t bad = codes_run(ctx, sg, &c, sg ? "boundaries, signed map (sgd)"
                                                  : "boundaries, unsigned map (adagrad)");
    codes_free(&c);
    return bad;
}

void test_q8_boundaries(void **state)
{
    fixture *f = *state;
    maps_init();
    size_t bad = 0;
    for (int sg = 1; sg >= 0; sg--) {
        size_t nv = 0, ns = 0;
        bad += boundaries_run(f->ctx, sg, &nv, &ns);
        print_message("  %s map: %zu values (%zu left out: no float squares to them)\n",
                      sg ? "signed" : "unsigned", nv, ns);
        assert_true(nv >= 4000 + (sg ? 4 : 2) * 3000);
    }
    assert_int_equal(bad, 0);
}

/* ---- the table, on the host ---------------------------------------------------------------- */

/* The reference: the code of v is the number of midpoints between neighbouring entries that
   v is above (a value on a midpoint takes the lower code); NaN and, in the unsigned map,
   negative values take the code of 0. The midpoints are exact in double. */
static unsigned ref_code(const double *mid, int sg, float v)
{
    if (isnan(v) || (!sg && v < 0.0f))
        return QZERO[sg];
    unsigned lo = 0, hi = 255; /* the first midpoint >= v */
    while (lo < hi) {
        const unsigned m = (lo + hi) / 2;
        if (mid[m] < (double)v)
            lo = m + 1;
        else
            hi = m;
    }
    return lo;
}

/* v's code as q8_codes (kernels/storage.cl) reads it from the table. */
static unsigned table_code(const uint32_t *tab, int sg, float v)
{
    const uint32_t b = f2u(v), mag = b & 0x7FFFFFFFu, neg = sg && (b >> 31);
    uint32_t t = mag >> 16;
    t = t < Q8_TLO - 1 ? Q8_TLO - 1 : t > Q8_THI ? Q8_THI : t;
    const uint32_t e = tab[(sg ? 0 : 2 * Q8_TN) + (t - (Q8_TLO - 1)) + (neg ? Q8_TN : 0)];
    const unsigned up = (mag & 0xFFFFu) >= (e & 0x1FFFFu);
    if (isnan(v) || (!sg && v < 0.0f))
        return sg ? 127 : 0;
    return (e >> 24) + (up ? (neg ? -1u : 1u) : 0u);
}

void test_q8_table(void **state)
{
    (void)state;
    maps_init();
    float map[512];
    clopt_q8_map(1, map);
    clopt_q8_map(0, map + 256);
    uint32_t *tab = xmalloc(3 * Q8_TN * sizeof *tab);
    assert_int_equal(clopt_q8_code_table(map, tab), 0);
    size_t bad = 0, checked = 0;
    uint64_t s = 0x7ab1e5eedull;
    for (int sg = 0; sg < 2; sg++) {
        const float *m = sg ? map : map + 256;
        double mid[255];
        for (int k = 0; k < 255; k++)
            mid[k] = ((double)m[k] + (double)m[k + 1]) / 2;
        for (int r = 0; r < (sg ? 2 : 1); r++) { /* the sign */
            const uint32_t sb = r ? 0x80000000u : 0u;
            for (uint32_t i = 0; i < Q8_TN; i++) {
                const uint32_t e = tab[(sg ? 0 : 2 * Q8_TN) + (r ? Q8_TN : 0) + i];
                const uint32_t lo = i ? (Q8_TLO - 1 + i) << 16 : 0,
                               hi = i ? lo | 0xFFFFu : ((uint32_t)Q8_TLO << 16) - 1;
                uint32_t pts[4] = {lo, hi, lo, lo};
                size_t np = 2;
                if ((e & 0x1FFFFu) <= 0xFFFFu) /* the threshold and the value below it */
                    pts[np++] = lo | (e & 0xFFFFu), pts[np++] = (lo | (e & 0xFFFFu)) - 1;
                for (size_t j = 0; j < np; j++) {
                    const float v = u2f(sb | pts[j]);
                    const unsigned got = table_code(tab, sg, v), want = ref_code(mid, sg, v);
                    checked++;
                    if (got != want && ++bad <= 6)
                        print_error("%s map: %a has code %u in the table, nearest %u\n",
                                    sg ? "signed" : "unsigned", (double)v, got, want);
                }
            }
        }
        for (int i = 0; i < 1000000; i++) { /* any bits; half of them in [2^-26, 1) */
            uint32_t b = (uint32_t)ref_splitmix64(&s);
            if (i & 1)
                b = (b & 0x807FFFFFu) | (uint32_t)(101 + (b >> 23 & 0xFF) % 26) << 23;
            const float v = u2f(b);
            const unsigned got = table_code(tab, sg, v), want = ref_code(mid, sg, v);
            checked++;
            if (got != want && ++bad <= 6)
                print_error("%s map: %a has code %u in the table, nearest %u\n",
                            sg ? "signed" : "unsigned", (double)v, got, want);
        }
    }
    print_message("  table: %zu values checked, %zu wrong\n", checked, bad);
    free(tab);
    assert_int_equal(bad, 0);
}
