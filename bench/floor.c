/* SPDX-License-Identifier: MIT */
/* clopt-floor: what this CPU itself allows, hand-written AVX-512 loops under two of the
 * issues' targets, OpenMP over the CPU's threads, each the median of its runs.
 *
 * `clopt-floor q8 [log2 n]` (n = 2^25 by default, 9 runs): 8-bit AdamW against issue 13's
 * target (1.4x faster than float32 AdamW), blocks of 256:
 *   f32        float32 AdamW (28 bytes per parameter), the C loop clopt-bench times;
 *   int8       the kernel's algorithm (kernels/storage.cl, a work-item per block): codes
 *              dequantized with a gather from the map, the update (bias corrections left
 *              out: the work is the same), the block's absmax, the new values divided by
 *              it and coded with one gather from the host's bucket table (host/q8_table.h,
 *              the kernel's table; NaN's special case left out);
 *   int8-perm  the same, the map lookups as permutes of the map held in registers;
 *   no-lookup  the same loops with the codes converted as integers instead of looked up:
 *              wrong values, the time of everything but the lookups (16 bytes per parameter
 *              of traffic, the update, the block maxima and a division per value).
 *
 * `clopt-floor amp [log2 n]` (n = 2^24 by default, 15 runs): a step with AMP and gradient
 * clipping against issue 11's target (at most 1.15x the step without them):
 *   adamw      float32 AdamW (28 bytes per parameter), as above;
 *   check      the gradient check alone (4 bytes per parameter): Σ (s·g)² and Σ (s·g·2^-80)²
 *              as grad_check_partial (kernels/tensor.cl) computes them, right after an
 *              update (as in a step: g is no longer in the caches);
 *   amp+clip   the check, then AdamW on g times the clip coefficient (32 bytes): what a step
 *              with AMP and clipping must do, since no update may start before the norm of
 *              the whole gradient is known.
 * Without an argument both run. Built only with CLOPT_BENCH_NATIVE (-march=native) on a compiler with AVX-512; not
 * installed. Run: build/bench/bench/clopt-floor [q8|amp] [log2 n]. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clopt.h"
#include "q8_table.h"

static float qmap[512]; /* signed map, then unsigned */
static uint32_t qtab[3 * Q8_TN];
static __m512 qreg[32]; /* the maps as 32 registers of 16 */
static const float B1 = 0.9f, B2 = 0.999f, LR = 1e-3f, WD = 0.01f, EPS = 1e-8f;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* float32 AdamW on the gradient times mul (1: the plain step; AMP's 1/scale times the clip
 * coefficient after the check) */
static void adamw_f32(size_t n, float *p, const float *g, float *m, float *v, float mul)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i] * mul;
        const float mi = B1 * m[i] + (1 - B1) * gi, vi = B2 * v[i] + (1 - B2) * gi * gi;
        m[i] = mi, v[i] = vi;
        p[i] = p[i] * (1 - LR * WD) - LR * mi / (sqrtf(vi) + EPS);
    }
}

/* The gradient check: Σ (s·g)² and Σ (s·g·2^-80)² (the second is finite exactly when every
 * s·g is). Each thread walks 4 regions of its part in lockstep, a pair of 16-lane sums each
 * (one region: 26 GB/s here, 2 or 3: 46-48, 4: 55, 5 to 8: 29-52; a core streams one array
 * no faster than the misses it keeps in flight), then the sums are added across threads. */
enum { RUNS = 4 };
static void grad_check(size_t n, const float *g, float s, double *sum, double *sums)
{
    double a = 0, b = 0;
#pragma omp parallel reduction(+ : a, b)
    {
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        const size_t per = n / (size_t)nt / (16 * RUNS) * (16 * RUNS), i0 = per * (size_t)id,
                     i1 = id == nt - 1 ? n : i0 + per, seg = per / RUNS;
        const __m512 sc = _mm512_set1_ps(s), down = _mm512_set1_ps(8.271806125530277e-25f);
        __m512 x[RUNS], y[RUNS];
        for (int k = 0; k < RUNS; k++)
            x[k] = y[k] = _mm512_setzero_ps();
        for (size_t i = 0; i < seg; i += 16)
            for (int k = 0; k < RUNS; k++) {
                const __m512 u = _mm512_mul_ps(_mm512_load_ps(g + i0 + k * seg + i), sc),
                             w = _mm512_mul_ps(u, down);
                x[k] = _mm512_fmadd_ps(u, u, x[k]);
                y[k] = _mm512_fmadd_ps(w, w, y[k]);
            }
        float ta = 0, tb = 0;
        for (size_t i = i0 + per; i < i1; i++) {
            const float u = g[i] * s, w = u * 8.271806125530277e-25f;
            ta += u * u, tb += w * w;
        }
        for (int k = 0; k < RUNS; k++)
            ta += _mm512_reduce_add_ps(x[k]), tb += _mm512_reduce_add_ps(y[k]);
        a += ta, b += tb;
    }
    *sum = a, *sums = b;
}

static void init(size_t n, float *p, float *g, float *m, float *v)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        p[i] = sinf((float)i), g[i] = 0.01f * cosf(0.7f * (float)i);
        m[i] = v[i] = 0;
    }
}

/* 256 entries (map m: 16 registers) at the 16 codes c, by permutes and blends */
static inline __m512 perm256(__m512i c, const __m512 *m)
{
    __m512 r[8];
    for (int k = 0; k < 8; k++)
        r[k] = _mm512_permutex2var_ps(m[2 * k], c, m[2 * k + 1]);
    const __mmask16 b5 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(32)),
                    b6 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(64)),
                    b7 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(128));
    for (int k = 0; k < 4; k++)
        r[k] = _mm512_mask_blend_ps(b5, r[2 * k], r[2 * k + 1]);
    r[0] = _mm512_mask_blend_ps(b6, r[0], r[1]);
    r[1] = _mm512_mask_blend_ps(b6, r[2], r[3]);
    return _mm512_mask_blend_ps(b7, r[0], r[1]);
}

/* q8_codes of kernels/storage.cl (without its NaN case) */
static inline __m512i codes(__m512 x, int sg)
{
    const __m512i b = _mm512_castps_si512(x),
                  mag = _mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i neg = sg ? _mm512_srai_epi32(b, 31) : _mm512_setzero_si512();
    __m512i h = _mm512_min_epu32(_mm512_max_epu32(_mm512_srli_epi32(mag, 16),
                                                  _mm512_set1_epi32(Q8_TLO - 1)),
                                 _mm512_set1_epi32(Q8_THI));
    h = _mm512_add_epi32(_mm512_sub_epi32(h, _mm512_set1_epi32(Q8_TLO - 1)),
                         _mm512_and_si512(neg, _mm512_set1_epi32(Q8_TN)));
    const __m512i e = _mm512_i32gather_epi32(h, (const int *)(qtab + (sg ? 0 : 2 * Q8_TN)), 4);
    const __mmask16 up = _mm512_cmpge_epu32_mask(_mm512_and_si512(mag, _mm512_set1_epi32(0xFFFF)),
                                                 _mm512_and_si512(e, _mm512_set1_epi32(0x1FFFF)));
    const __m512i c = _mm512_sub_epi32(_mm512_srli_epi32(e, 24),
                                       _mm512_xor_si512(_mm512_movm_epi32(up), neg));
    return _mm512_add_epi32(c, neg);
}

enum { GATHER, PERM, NONE };

static void adamw_q8(size_t n, int how, float *p, const float *g, uint8_t *mq, float *ma,
                     uint8_t *vq, float *va)
{
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < n / 256; blk++) {
        float qm[256] __attribute__((aligned(64))), qv[256] __attribute__((aligned(64)));
        const size_t e0 = blk * 256;
        const __m512 am = _mm512_set1_ps(ma[blk]), av = _mm512_set1_ps(va[blk]);
        __m512 xm = _mm512_setzero_ps(), xv = _mm512_setzero_ps();
        for (int k = 0; k < 16; k++) {
            const size_t i = e0 + 16 * (size_t)k;
            const __m512i cm = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(mq + i)));
            const __m512i cv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(vq + i)));
            __m512 m, v;
            if (how == GATHER)
                m = _mm512_i32gather_ps(cm, qmap, 4), v = _mm512_i32gather_ps(cv, qmap + 256, 4);
            else if (how == PERM)
                m = perm256(cm, qreg), v = perm256(cv, qreg + 16);
            else
                m = _mm512_cvtepi32_ps(cm), v = _mm512_cvtepi32_ps(cv);
            const __m512 gg = _mm512_loadu_ps(g + i);
            m = _mm512_fmadd_ps(_mm512_set1_ps(B1), _mm512_mul_ps(m, am),
                                _mm512_mul_ps(_mm512_set1_ps(1 - B1), gg));
            v = _mm512_fmadd_ps(_mm512_set1_ps(B2), _mm512_mul_ps(v, av),
                                _mm512_mul_ps(_mm512_set1_ps(1 - B2), _mm512_mul_ps(gg, gg)));
            const __m512 den = _mm512_add_ps(_mm512_sqrt_ps(v), _mm512_set1_ps(EPS));
            __m512 pp = _mm512_mul_ps(_mm512_loadu_ps(p + i), _mm512_set1_ps(1 - LR * WD));
            pp = _mm512_sub_ps(pp, _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(LR), m), den));
            _mm512_storeu_ps(p + i, pp);
            _mm512_store_ps(qm + 16 * k, m), _mm512_store_ps(qv + 16 * k, v);
            xm = _mm512_max_ps(xm, _mm512_abs_ps(m)), xv = _mm512_max_ps(xv, v);
        }
        const float bm = _mm512_reduce_max_ps(xm), bv = _mm512_reduce_max_ps(xv);
        ma[blk] = bm, va[blk] = bv;
        const __m512 dm = _mm512_set1_ps(bm > 0 ? bm : 1), dv = _mm512_set1_ps(bv > 0 ? bv : 1);
        for (int k = 0; k < 16; k++) {
            const __m512 x = _mm512_div_ps(_mm512_load_ps(qm + 16 * k), dm),
                         y = _mm512_div_ps(_mm512_load_ps(qv + 16 * k), dv);
            const __m512i a = how == NONE ? _mm512_cvtps_epi32(x) : codes(x, 1),
                          b = how == NONE ? _mm512_cvtps_epi32(y) : codes(y, 0);
            _mm_storeu_si128((__m128i *)(mq + e0 + 16 * k), _mm512_cvtepi32_epi8(a));
            _mm_storeu_si128((__m128i *)(vq + e0 + 16 * k), _mm512_cvtepi32_epi8(b));
        }
    }
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A loop's line: the median of its reps times t (sorted here), against base seconds. */
static void report(const char *name, double *t, int reps, double bytes, size_t n, double base,
                   const char *base_name)
{
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    const double s = t[reps / 2];
    printf("  %-10s %8.2f ms  %6.2f B/param  %6.1f GB/s  %.2fx the %s loop's time\n", name,
           1e3 * s, bytes, bytes * (double)n / (s * 1e9), s / base, base_name);
}

static double median(double *t, int reps)
{
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    return t[reps / 2];
}

static int q8_floor(int lg)
{
    const size_t n = (size_t)1 << lg;
    clopt_q8_map(1, qmap);
    clopt_q8_map(0, qmap + 256);
    if (clopt_q8_code_table(qmap, qtab))
        return 1;
    for (int k = 0; k < 32; k++)
        qreg[k] = _mm512_loadu_ps(qmap + 16 * k);
    float *p = aligned_alloc(64, n * 4), *g = aligned_alloc(64, n * 4),
          *m = aligned_alloc(64, n * 4), *v = aligned_alloc(64, n * 4),
          *ma = aligned_alloc(64, n / 64), *va = aligned_alloc(64, n / 64);
    uint8_t *mq = aligned_alloc(64, n), *vq = aligned_alloc(64, n);
    int rc = 1;
    if (!p || !g || !m || !v || !ma || !va || !mq || !vq)
        goto out;
    init(n, p, g, m, v);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        mq[i] = 127, vq[i] = 0;
        if (i % 256 == 0)
            ma[i / 256] = va[i / 256] = 0;
    }
    static const char *const names[] = {"f32", "int8", "int8-perm", "no-lookup"};
    static const double bytes[] = {28, 16.0 + 16.0 / 256, 16.0 + 16.0 / 256, 16.0 + 16.0 / 256};
    enum { REPS = 9 };
    double t[4][REPS];
    for (int r = 0; r < REPS; r++)
        for (int k = 0; k < 4; k++) {
            const double a = now();
            if (k == 0)
                adamw_f32(n, p, g, m, v, 1.0f);
            else
                adamw_q8(n, k == 1 ? GATHER : k == 2 ? PERM : NONE, p, g, mq, ma, vq, va);
            t[k][r] = now() - a;
        }
    printf("8-bit AdamW, n = 2^%d, %d threads, median of %d (hand-written AVX-512)\n", lg,
           omp_get_max_threads(), REPS);
    const double base = median(t[0], REPS);
    for (int k = 0; k < 4; k++)
        report(names[k], t[k], REPS, bytes[k], n, base, "f32");
    rc = 0;
out:
    free(p), free(g), free(m), free(v), free(ma), free(va), free(mq), free(vq);
    return rc;
}

static int amp_floor(int lg)
{
    const size_t n = (size_t)1 << lg;
    float *p = aligned_alloc(64, n * 4), *g = aligned_alloc(64, n * 4),
          *m = aligned_alloc(64, n * 4), *v = aligned_alloc(64, n * 4);
    int rc = 1;
    if (!p || !g || !m || !v)
        goto out;
    init(n, p, g, m, v);
    enum { REPS = 15 };
    double t[3][REPS], sum = 0, sums = 0;
    const float scale = 1.0f / 1024, max_norm = 1.0f;
    for (int r = 0; r < REPS; r++)
        for (int j = 0; j < 3; j++) {
            const int k = (int[]){0, 2, 1}[j]; /* each check right after an update */
            const double a = now();
            if (k == 0)
                adamw_f32(n, p, g, m, v, 1.0f);
            else
                grad_check(n, g, scale, &sum, &sums);
            if (k == 2) {
                if (!isfinite(sums)) { /* skipped: not with these gradients */
                    rc = 2;
                    goto out;
                }
                const double norm = sqrt(sum), c = max_norm / (norm + 1e-6);
                adamw_f32(n, p, g, m, v, scale * (float)(c < 1 ? c : 1));
            }
            t[k][r] = now() - a;
        }
    printf("AdamW with AMP and clipping, n = 2^%d, %d threads, median of %d (hand-written "
           "AVX-512 check)\n",
           lg, omp_get_max_threads(), REPS);
    const double base = median(t[0], REPS);
    report("adamw", t[0], REPS, 28, n, base, "adamw");
    report("check", t[1], REPS, 4, n, base, "adamw");
    report("amp+clip", t[2], REPS, 32, n, base, "adamw");
    rc = 0;
out:
    free(p), free(g), free(m), free(v);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("clopt-floor %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR, CLOPT_VERSION_MINOR,
               CLOPT_VERSION_PATCH, clopt_version());
        return 0;
    }
    const int q8 = argc == 1 || !strcmp(argv[1], "q8"), amp = argc == 1 || !strcmp(argv[1], "amp");
    const int lg = argc > 2 ? atoi(argv[2]) : 0;
    if ((!q8 && !amp) || argc > 3 || (argc > 2 && (lg < 8 || lg > 30))) {
        fprintf(stderr, "usage: clopt-floor [q8|amp] [log2 n, 8..30]\n");
        return 2;
    }
    int rc = 0;
    if (q8)
        rc |= q8_floor(lg ? lg : 25);
    if (amp)
        rc |= amp_floor(lg ? lg : 24);
    return rc;
}
