/* SPDX-License-Identifier: MIT */
/* golden-bounds: the resource bounds of the golden case loader (golden.h, issue 12) on cases
 * built at run time: a 2 GiB sparse .f32 file is refused by its size without being read (the
 * process's peak memory stays far below it), a FIFO is refused at once, a files list of
 * 40,000 entries is refused by the limit and one of 1,024 with a duplicate is checked in
 * n log n, meta.json beyond 16 MiB is refused unread, and an 8-D case loads. Also the
 * storage extension's checks (README "Storage types") on a bfloat16 case: a valid one loads;
 * a storage type other than the files', an unknown storage key, stochastic rounding with a
 * master, a uint8 file without "ulps", an unlisted .u8 file and a short .bf16 file are
 * refused with the verdict and message they call for.
 *   golden-bounds SOURCE_DIR   (SOURCE_DIR/tests/data/conform-8d/sgd_8d is the 8-D case)
 * Exit 0 when every check holds; each failed check prints one line. */
#define _POSIX_C_SOURCE 200809L
#include "golden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "golden-bounds: line %d: ", __LINE__);                             \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long peak_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "golden-bounds: cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

/* A valid SGD case with shape [4], 2 steps, and `extra` appended to its files list. */
static void sgd_case(const char *dir, const char *extra)
{
    float v[8] = {0.5f, -0.25f, 0.125f, 1.0f, 0.5f, 0.5f, 0.5f, 0.5f};
    write_file(dir, "param0.f32", v, 16);
    write_file(dir, "grads.f32", v, 32);
    write_file(dir, "param_1.f32", v, 16);
    write_file(dir, "param_T.f32", v, 16);
    char *meta = malloc(4u << 20);
    snprintf(meta, 4u << 20,
             "{\"optimizer\": \"sgd\", \"hyper\": {\"lr\": 0.1}, \"steps\": 2, \"shape\": [4],"
             " \"tolerance\": {\"rtol\": 0, \"atol\": 1},"
             " \"files\": [{\"name\": \"param0.f32\", \"shape\": [4], \"role\": \"input\"},"
             " {\"name\": \"grads.f32\", \"shape\": [2, 4], \"role\": \"input\"},"
             " {\"name\": \"param_1.f32\", \"shape\": [4], \"role\": \"expected\"},"
             " {\"name\": \"param_T.f32\", \"shape\": [4], \"role\": \"expected\"}%s]}",
             extra);
    write_file(dir, "meta.json", meta, strlen(meta));
    free(meta);
}

/* A bfloat16 SGD case in its own folder dir/name: storage object `storage`, `extra` appended
   to its files list (which then names files this writes: state_momentum_buffer.u8). */
static void bf16_case(char *out, size_t len, const char *dir, const char *name,
                      const char *storage, const char *extra)
{
    snprintf(out, len, "%s/%s", dir, name);
    if (mkdir(out, 0700) != 0) {
        fprintf(stderr, "golden-bounds: cannot create %s\n", out);
        exit(2);
    }
    const unsigned char w[16] = {0x00, 0x3F, 0x80, 0xBE, 0x00, 0x3E, 0x80, 0x3F,
                                 0x00, 0x3F, 0x00, 0x3F, 0x00, 0x3F, 0x00, 0x3F};
    write_file(out, "param0.bf16", w, 8);
    write_file(out, "grads.bf16", w, 16);
    write_file(out, "param_1.bf16", w, 8);
    write_file(out, "param_T.bf16", w, 8);
    write_file(out, "state_momentum_buffer.u8", w, 4);
    char meta[2048];
    snprintf(meta, sizeof meta,
             "{\"optimizer\": \"sgd\", \"hyper\": {\"lr\": 0.1}, \"steps\": 2, \"shape\": [4],"
             " \"storage\": %s, \"tolerance\": {\"rtol\": 0, \"atol\": 1, \"ulps\": 1},"
             " \"files\": [{\"name\": \"param0.bf16\", \"shape\": [4], \"role\": \"input\","
             " \"dtype\": \"bfloat16\"}, {\"name\": \"grads.bf16\", \"shape\": [2, 4],"
             " \"role\": \"input\", \"dtype\": \"bfloat16\"}, {\"name\": \"param_1.bf16\","
             " \"shape\": [4], \"role\": \"expected\", \"dtype\": \"bfloat16\"},"
             " {\"name\": \"param_T.bf16\", \"shape\": [4], \"role\": \"expected\","
             " \"dtype\": \"bfloat16\"}%s]}",
             storage, extra);
    write_file(out, "meta.json", meta, strlen(meta));
}

static void storage_checks(const char *dir)
{
    static const char *const base = "{\"grad\": \"bfloat16\", \"state\": \"uint8\", ";
    static const char *const u8 = ", {\"name\": \"state_momentum_buffer.u8\", \"shape\": [4], "
                                  "\"role\": \"expected\", \"dtype\": \"uint8\"%s}";
    static const char *const ulps = ", \"tolerance\": {\"ulps\": 1}";
    static const struct {
        const char *storage_tail, *u8_tolerance; /* NULL: the .u8 file is not listed */
        golden_verdict verdict;
        const char *reason;
    } cases[] = {
        {"\"param\": \"bfloat16\"}", ulps, GOLDEN_PASS, ""},
        {"\"param\": \"bfloat16\", \"master\": \"remainder\"}", ulps, GOLDEN_PASS, ""},
        {"\"param\": \"float16\"}", ulps, GOLDEN_FAIL,
         "param0.bf16 holds bfloat16 values, the storage object gives float16"},
        {"\"param\": \"bfloat16\", \"colour\": 1}", ulps, GOLDEN_UNSUPPORTED,
         "storage key 'colour'"},
        {"\"param\": \"bfloat16\", \"master\": \"float32\", \"stochastic_rounding\": "
         "{\"seed\": 1}}",
         ulps, GOLDEN_FAIL, "without a master"},
        {"\"param\": \"bfloat16\"}", ", \"tolerance\": {\"rtol\": 0, \"atol\": 1}", GOLDEN_FAIL,
         "state_momentum_buffer.u8 (uint8) needs \"ulps\""},
        {"\"param\": \"bfloat16\"}", NULL, GOLDEN_FAIL, "state_momentum_buffer.u8 is not listed"},
    };
    char path[700], extra[512], storage[256];
    golden_result r;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "storage%zu", i);
        snprintf(storage, sizeof storage, "%s%s", base, cases[i].storage_tail);
        extra[0] = '\0';
        if (cases[i].u8_tolerance != NULL)
            snprintf(extra, sizeof extra, u8, cases[i].u8_tolerance);
        bf16_case(path, sizeof path, dir, name, storage, extra);
        golden_check_case(path, &r);
        CHECK(r.verdict == cases[i].verdict && strstr(r.reason, cases[i].reason) != NULL,
              "storage case %zu: %s %s", i, golden_verdict_str(r.verdict), r.reason);
    }
    /* a .bf16 file one byte short */
    snprintf(storage, sizeof storage, "%s%s", base, cases[0].storage_tail);
    snprintf(extra, sizeof extra, u8, ulps);
    bf16_case(path, sizeof path, dir, "storage_short", storage, extra);
    write_file(path, "param_T.bf16", "abcdefg", 7);
    golden_check_case(path, &r);
    CHECK(r.verdict == GOLDEN_FAIL &&
              strstr(r.reason, "param_T.bf16 holds 7 bytes, expected 8 (4 bfloat16 values)"),
          "short .bf16: %s", r.reason);
}

static char *entries(size_t n, int duplicate)
{
    char *s = malloc(n * 64 + 64), *p = s;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, ", {\"name\": \"state_s%zu.f32\", \"shape\": [4], \"role\": \"expected\"}",
                     duplicate && i == n - 1 ? (size_t)0 : i);
    *p = '\0';
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: golden-bounds SOURCE_DIR\n");
        return 2;
    }
    char dir[] = "/tmp/clopt-golden-bounds-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    char path[600];
    golden_result r;

    /* the base case loads */
    sgd_case(dir, "");
    golden_check_case(dir, &r);
    CHECK(r.verdict == GOLDEN_PASS, "base case: %s", r.reason);

    /* a 2 GiB sparse param_T.f32: refused by its size, not read */
    snprintf(path, sizeof path, "%s/param_T.f32", dir);
    CHECK(truncate(path, (off_t)1 << 31) == 0, "truncate");
    long before = peak_kib();
    double t = now_s();
    golden_check_case(dir, &r);
    CHECK(r.verdict == GOLDEN_FAIL && strstr(r.reason, "holds 2147483648 bytes, expected 16"),
          "sparse file: %s", r.reason);
    CHECK(peak_kib() - before < 256 * 1024, "sparse file: peak memory grew by %ld KiB",
          peak_kib() - before);
    CHECK(now_s() - t < 1.0, "sparse file: %.2f s", now_s() - t);
    unlink(path);

    /* a FIFO as param_T.f32: refused at once */
    CHECK(mkfifo(path, 0600) == 0, "mkfifo");
    alarm(30);
    golden_check_case(dir, &r);
    alarm(0);
    CHECK(r.verdict == GOLDEN_FAIL && strstr(r.reason, "not a regular file"), "FIFO: %s",
          r.reason);
    unlink(path);

    /* 40,000 listed files: refused by the limit, at once */
    char *many = entries(40000, 0);
    sgd_case(dir, many);
    free(many);
    t = now_s();
    golden_check_case(dir, &r);
    CHECK(r.verdict == GOLDEN_FAIL && strstr(r.reason, "more than the limit of 1024"),
          "40k files: %s", r.reason);
    CHECK(now_s() - t < 2.0, "40k files: %.2f s", now_s() - t);

    /* 1,020 listed files with a duplicate at the end: found by sorting */
    many = entries(1020, 1);
    sgd_case(dir, many);
    free(many);
    golden_check_case(dir, &r);
    CHECK(r.verdict == GOLDEN_FAIL && strstr(r.reason, "state_s0.f32 is listed twice"),
          "duplicate: %s", r.reason);

    /* meta.json beyond 16 MiB: refused unread */
    snprintf(path, sizeof path, "%s/meta.json", dir);
    CHECK(truncate(path, (off_t)17 << 20) == 0, "truncate meta");
    golden_check_case(dir, &r);
    CHECK(r.verdict == GOLDEN_FAIL && strstr(r.reason, "too large"), "big meta.json: %s",
          r.reason);

    /* an unlisted .f32 file is still found (binary search over the sorted names) */
    sgd_case(dir, "");
    write_file(dir, "state_unlisted.f32", "abcd", 4);
    golden_check_case(dir, &r);
    CHECK(r.verdict == GOLDEN_FAIL && strstr(r.reason, "state_unlisted.f32 is not listed"),
          "unlisted: %s", r.reason);

    /* the 8-D case loads (its grads.f32 has 9 dimensions) */
    snprintf(path, sizeof path, "%s/tests/data/conform-8d/sgd_8d", argv[1]);
    golden_check_case(path, &r);
    CHECK(r.verdict == GOLDEN_PASS, "8-D case: %s", r.reason);

    storage_checks(dir);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        failures++;
    if (failures == 0)
        printf("golden-bounds: all checks passed\n");
    return failures ? 1 : 0;
}
