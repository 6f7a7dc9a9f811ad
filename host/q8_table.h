/* SPDX-License-Identifier: MIT */
/* The table 8-bit state's kernels find codes in (q8_codes, kernels/storage.cl), built on the
   host from the two maps (clopt_ctx_qmap, host/util.c); header-only, so that the tests build
   it too and check every bucket against a reference of their own (tests/test_q8_codes.c). */
#ifndef CLOPT_Q8_TABLE_H
#define CLOPT_Q8_TABLE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* q8_codes' table (kernels/storage.cl): magnitudes in buckets of equal top 16 bits, TLO to
   THI (1.0) after bucket 0 (everything below); per bucket the code at its bottom (bits
   24-31) and the low 16 bits from which the next code is the nearer (0x10000: none). Regions:
   signed map for v >= 0, signed for v < 0, unsigned. Nearest: ties to the lower code,
   distances exact (double). */
#define CLOPT_Q8_TLO 0x3300u /* 2^-25 */
#define CLOPT_Q8_THI 0x3F80u /* 1.0 */
enum { Q8_TLO = CLOPT_Q8_TLO, Q8_THI = CLOPT_Q8_THI, Q8_TN = Q8_THI - Q8_TLO + 2 };
/* the kernels' build options that give them the same bounds */
#define CLOPT_Q8_STR_(x) #x
#define CLOPT_Q8_STR(x) CLOPT_Q8_STR_(x)
#define CLOPT_Q8_TABLE_OPTIONS                                                             \
    " -DQ8_TLO=" CLOPT_Q8_STR(CLOPT_Q8_TLO) " -DQ8_THI=" CLOPT_Q8_STR(CLOPT_Q8_THI)

static inline unsigned clopt_q8_nearest(const float *map, double x)
{
    unsigned lo = 0, hi = 256; /* the first entry above x */
    while (lo < hi) {
        const unsigned mid = (lo + hi) / 2;
        if ((double)map[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    const unsigned a = lo ? lo - 1 : 0;
    if (a == 255)
        return a;
    return (double)map[a + 1] - x < fabs(x - (double)map[a]) ? a + 1 : a;
}

static inline double clopt_q8_value(uint32_t bits, int neg)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return neg ? -(double)f : (double)f;
}

/* 0, or -1 where a bucket would hold more than one change of code (not with these maps). */
static inline int clopt_q8_code_table(const float *map, uint32_t *tab)
{
    for (int r = 0; r < 3; r++) {
        const float *m = r < 2 ? map : map + 256;
        const int neg = r == 1;
        for (uint32_t i = 0; i < Q8_TN; i++) {
            const uint32_t lo = i ? (Q8_TLO - 1 + i) << 16 : 0,
                           hi = i ? lo | 0xFFFFu : ((uint32_t)Q8_TLO << 16) - 1;
            const unsigned c0 = clopt_q8_nearest(m, clopt_q8_value(lo, neg)),
                           c1 = clopt_q8_nearest(m, clopt_q8_value(hi, neg));
            uint32_t thr = 0x10000;
            if (c0 != c1) {
                if (!i || c1 != (neg ? c0 - 1 : c0 + 1))
                    return -1;
                uint32_t a = 1, b = 0xFFFF; /* the first low part whose code is c1 */
                while (a < b) {
                    const uint32_t mid = (a + b) / 2;
                    if (clopt_q8_nearest(m, clopt_q8_value(lo | mid, neg)) == c1)
                        b = mid;
                    else
                        a = mid + 1;
                }
                thr = a;
            }
            tab[r * Q8_TN + i] = (uint32_t)c0 << 24 | thr;
        }
    }
    return 0;
}

#endif
