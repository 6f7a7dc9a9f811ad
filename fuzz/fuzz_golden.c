/* SPDX-License-Identifier: MIT */
/* libFuzzer harness: the golden case loader (golden_check_case of host/conform/golden.c) on a
 * case folder made from the input:
 *   meta.json bytes, a NUL byte, then records  u8 file | u16 little-endian length | bytes
 * where `file` picks a name from kNames (mod its count); a later record of the same file
 * replaces it. The loader must give a verdict with a reason, never crash or leak. */
#define _POSIX_C_SOURCE 200809L
#include "golden.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const kNames[] = {"param0.f32",     "grads.f32",        "param_1.f32",
                                     "param_T.f32",    "hess.f32",         "state_exp_avg.f32",
                                     "state_exp_avg_sq.f32", "state_momentum_buffer.f32",
                                     "state_unlisted.f32", "index.json"};
enum { NNAMES = sizeof kNames / sizeof kNames[0] };
static char g_dir[] = "/tmp/clopt-fuzz-golden-XXXXXX";

static void put(const char *name, const uint8_t *p, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0)
        abort();
}

static void clear(void)
{
    char path[128];
    for (size_t i = 0; i < NNAMES; i++) {
        snprintf(path, sizeof path, "%s/%s", g_dir, kNames[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/meta.json", g_dir);
    unlink(path);
}

static void cleanup(void)
{
    clear();
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (!mkdtemp(g_dir))
        abort();
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clear();
    const uint8_t *nul = memchr(data, 0, size);
    size_t mlen = nul ? (size_t)(nul - data) : size;
    put("meta.json", data, mlen);
    size_t at = nul ? mlen + 1 : size;
    while (at + 3 <= size) {
        size_t which = data[at] % NNAMES, n = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
        at += 3;
        if (n > size - at)
            n = size - at;
        put(kNames[which], data + at, n);
        at += n;
    }
    golden_result r;
    golden_check_case(g_dir, &r);
    if (r.verdict != GOLDEN_PASS && r.reason[0] == '\0')
        abort(); /* a refusal always says why */
    if (r.verdict == GOLDEN_PASS && r.reason[0] != '\0')
        abort();
    return 0;
}
