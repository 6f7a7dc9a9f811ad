/* SPDX-License-Identifier: MIT */
/* clopt-q8-floor: what this CPU itself allows for 8-bit AdamW, the floor under issue 13's
 * target (8-bit AdamW 1.4x faster than float32 AdamW). Hand-written AVX-512 loops, OpenMP
 * over blocks of 256, n = 2^25 (or argv[1] as log2 n), the median of 9 runs of each:
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
 * Built only with CLOPT_BENCH_NATIVE (-march=native) on a compiler with AVX-512; not
 * installed. Run: build/bench/bench/clopt-q8-floor [log2 n]. */
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

static void adamw_f32(size_t n, float *p, const float *g, float *m, float *v)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float mi = B1 * m[i] + (1 - B1) * g[i], vi = B2 * v[i] + (1 - B2) * g[i] * g[i];
        m[i] = mi, v[i] = vi;
        p[i] = p[i] * (1 - LR * WD) - LR * mi / (sqrtf(vi) + EPS);
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

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("clopt-q8-floor %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
               CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
        return 0;
    }
    const int lg = argc > 1 ? atoi(argv[1]) : 25;
    if (lg < 8 || lg > 30) {
        fprintf(stderr, "usage: clopt-q8-floor [log2 n, 8..30]\n");
        return 2;
    }
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
    if (!p || !g || !m || !v || !ma || !va || !mq || !vq)
        return 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        p[i] = sinf((float)i), g[i] = 0.01f * cosf(0.7f * (float)i);
        m[i] = v[i] = 0, mq[i] = 127, vq[i] = 0;
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
                adamw_f32(n, p, g, m, v);
            else
                adamw_q8(n, k == 1 ? GATHER : k == 2 ? PERM : NONE, p, g, mq, ma, vq, va);
            t[k][r] = now() - a;
        }
    printf("AdamW, n = 2^%d, %d threads, median of %d (hand-written AVX-512)\n", lg,
           omp_get_max_threads(), REPS);
    for (int k = 0; k < 4; k++) {
        qsort(t[k], REPS, sizeof t[k][0], cmp);
        const double ms = 1e3 * t[k][REPS / 2];
        printf("  %-10s %8.2f ms  %6.2f B/param  %6.1f GB/s  %.2fx the f32 loop's time\n",
               names[k], ms, bytes[k], bytes[k] * (double)n / (ms * 1e6),
               t[k][REPS / 2] / t[0][REPS / 2]);
    }
    free(p), free(g), free(m), free(v), free(ma), free(va), free(mq), free(vq);
    return 0;
}
