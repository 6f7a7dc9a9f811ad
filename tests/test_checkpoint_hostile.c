/* SPDX-License-Identifier: MIT */
/* Checkpoints against hostile input (issue 12; one executable with test_checkpoint.c, which
 * has the model and the format helpers of test_checkpoint.h): impossible values in
 * well-formed bytes, oversized files, FIFOs and devices, and symlinks planted where a
 * temporary file could be. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clopt.h"
#include "fixture.h"
#include "test_checkpoint.h"

/* ---- (k) hostile input: impossible values, sizes, file types, symlinks ------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Values a well-formed, correctly sealed checkpoint cannot hold: refused, nothing changed;
   the largest step count accepted, and the optimizer steps on from it. */
void test_impossible_values(void **state)
{
    fixture *f = *state;
    net src, dst;
    net_build(&src, f->ctx, CLOPT_NADAM, 0, 1, 11);
    net_steps(&src, 0, 3);
    size_t len;
    unsigned char *good = save_bytes(&src, NULL, &len);
    net_build(&dst, f->ctx, CLOPT_NADAM, 0, 1, 12);
    net_steps(&dst, 0, 1);
    snapshot before = net_snapshot(&dst);
    size_t starts[16];
    assert_int_equal(sections(good, len, starts, 16), 1 + 3 + 6);
    const size_t optm = starts[0] + 16, t0 = tens_flags(good, starts[4]);
    assert_int_equal(get_u64(good + optm + 16), 3);          /* the optimizer's step count */
    assert_int_equal(get_u64(good + t0 + 12), 3);              /* tensor 0's step count */
    const double max_step = 9007199254740992.0 - 64;          /* 2^53 - 64 */
    struct {
        size_t at;
        int kind; /* 0 u32, 1 u64, 2 f64 */
        double value;
        uint64_t raw; /* kind 1: used when value < 0 */
        const char *what;
    } bad[] = {
        {optm + 16, 1, -1, UINT64_MAX, "optimizer step 2^64 - 1"},
        {optm + 16, 1, max_step + 1, 0, "optimizer step 2^53 - 63"},
        {optm + 16, 1, -1, UINT64_C(1) << 60, "optimizer step 2^60"},
        {optm + 24, 2, 1e-320, 0, "subnormal max_grad_norm"},
        {optm + 24, 2, 1e-39, 0, "max_grad_norm whose reciprocal overflows float32"},
        {optm + 24, 2, 1e-38, 0, "max_grad_norm subnormal in float32"},
        {optm + 40, 2, 3e-39, 0, "loss scale subnormal in float32"},
        {optm + 24, 2, 1e39, 0, "max_grad_norm past float32"},
        {optm + 24, 2, NAN, 0, "NaN max_grad_norm"},
        {optm + 24, 2, -1e-3, 0, "negative max_grad_norm"},
        {optm + 40, 2, 1e-320, 0, "subnormal loss scale"},
        {optm + 40, 2, 1e-40, 0, "loss scale whose reciprocal overflows float32"},
        {optm + 40, 2, INFINITY, 0, "infinite loss scale"},
        {optm + 40, 2, 1e300, 0, "loss scale past float32"},
        {optm + 40, 2, 1e38, 0, "loss scale whose reciprocal is subnormal in float32"},
        {optm + 48, 0, -1, 0, "found_inf 2^32 - 1"},
        {optm + 32, 2, -1.0, 0, "negative last norm"},
        {t0 + 20, 2, -0.25, 0, "negative NAdam product"},
        {t0 + 20, 2, INFINITY, 0, "infinite NAdam product"},
        {t0 + 20, 2, 1.0000000000000002, 0, "NAdam product just above 1"},
    };
    unsigned char *copy = malloc(len);
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        memcpy(copy, good, len);
        if (bad[c].kind == 0)
            put_u32(copy + bad[c].at, bad[c].value < 0 ? UINT32_MAX : (uint32_t)bad[c].value);
        else if (bad[c].kind == 1)
            put_u64(copy + bad[c].at, bad[c].value < 0 ? bad[c].raw : (uint64_t)bad[c].value);
        else
            put_f64(copy + bad[c].at, bad[c].value);
        reseal(copy, len);
        expect_rejected(&dst, copy, len, CLOPT_ERR_FORMAT, &before, bad[c].what);
    }
    /* the possible extremes load: the smallest and largest normal float32, -0 as "off", a
       subnormal NAdam product and one that underflowed to 0 (as torch's, β1 = 0.5 after
       step 556) */
    struct {
        size_t at;
        double value;
    } fine[] = {{optm + 24, 1.1754944e-38},
                {optm + 40, 8.5e37},
                {optm + 40, -0.0},
                {t0 + 20, 5e-324}, {t0 + 20, 0.0}};
    for (size_t c = 0; c < sizeof fine / sizeof fine[0]; c++) {
        memcpy(copy, good, len);
        put_f64(copy + fine[c].at, fine[c].value);
        reseal(copy, len);
        clopt_status s = clopt_optimizer_load_from(dst.opt, copy, len);
        if (s != CLOPT_SUCCESS)
            fprintf(stderr, "extreme %zu: %s\n", c, clopt_ctx_last_error(dst.ctx));
        assert_int_equal(s, CLOPT_SUCCESS);
    }
    snapshot_free(&before);
    free(good), free(copy);
    net_free(&src), net_free(&dst);

    /* a rule other than NAdam keeps the product 1 */
    net a, b;
    net_build(&a, f->ctx, CLOPT_ADAM, 0, 1, 13);
    net_steps(&a, 0, 2);
    good = save_bytes(&a, NULL, &len);
    copy = malloc(len);
    net_build(&b, f->ctx, CLOPT_ADAM, 0, 1, 14);
    before = net_snapshot(&b);
    assert_int_equal(sections(good, len, starts, 16), 1 + 3 + 6);
    memcpy(copy, good, len);
    put_f64(copy + tens_flags(good, starts[4]) + 20, 0.5);
    reseal(copy, len);
    expect_rejected(&b, copy, len, CLOPT_ERR_FORMAT, &before, "Adam with a product 0.5");
    /* the largest step count: every tensor at 2^53 - 64, and a step from there works */
    memcpy(copy, good, len);
    put_u64(copy + starts[0] + 16 + 16, (uint64_t)max_step);
    for (size_t k = 0; k < 6; k++)
        put_u64(copy + tens_flags(good, starts[4 + k]) + 12, (uint64_t)max_step);
    reseal(copy, len);
    assert_int_equal(clopt_optimizer_load_from(b.opt, copy, len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_count(b.opt), (uint64_t)max_step);
    net_steps(&b, (uint64_t)max_step, (uint64_t)max_step + 2);
    assert_int_equal(clopt_optimizer_step_count(b.opt), (uint64_t)max_step + 2);
    float p[64 * MAXT];
    net_get_params(&b, 0, b.nt, p);
    for (size_t i = 0; i < net_param_floats(&b); i++)
        assert_true(isfinite(p[i]));
    snapshot_free(&before);
    free(good), free(copy);
    net_free(&a), net_free(&b);
}

/* Sizes and file types: bytes or a file longer than any checkpoint of the optimizer are
   refused without being read (a 2 GiB sparse file, at once); a FIFO, /dev/zero and a folder
   fail at once with CLOPT_ERR_IO instead of hanging or reading forever. */
void test_hostile_files(void **state)
{
    fixture *f = *state;
    net m;
    net_build(&m, f->ctx, CLOPT_ADAM, 2, 1, 21);
    net_steps(&m, 0, 2);
    size_t len;
    unsigned char *good = save_bytes(&m, NULL, &len);
    snapshot before = net_snapshot(&m);
    char dir[] = "/tmp/clopt-h5ckp-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[160], big[160], fifo[160];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    snprintf(big, sizeof big, "%s/big.ckpt", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo.ckpt", dir);
    /* bytes: the checkpoint with 1 MiB appended is too large (not a checksum mismatch) */
    unsigned char *longer = calloc(len + (1u << 20), 1);
    memcpy(longer, good, len);
    assert_int_equal(clopt_optimizer_load_from(m.opt, longer, len + (1u << 20)),
                     CLOPT_ERR_FORMAT);
    assert_non_null(strstr(clopt_ctx_last_error(m.ctx), "at most"));
    expect_rejected(&m, longer, len + (1u << 20), CLOPT_ERR_FORMAT, &before, "1 MiB appended");
    free(longer);
    /* a 2 GiB sparse file: refused by its size, in far less time than reading it takes */
    FILE *fp = fopen(big, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(good, 1, len, fp), len);
    fclose(fp);
    assert_int_equal(truncate(big, (off_t)1 << 31), 0);
    double t = now_s();
    assert_int_equal(clopt_optimizer_load(m.opt, big), CLOPT_ERR_FORMAT);
    assert_true(now_s() - t < 0.5);
    assert_non_null(strstr(clopt_ctx_last_error(m.ctx), "at most"));
    /* a FIFO nobody writes to: refused at once (alarm: a hang kills the test) */
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);
    assert_int_equal(clopt_optimizer_load(m.opt, fifo), CLOPT_ERR_IO);
    assert_non_null(strstr(clopt_ctx_last_error(m.ctx), "not a regular file"));
    t = now_s();
    assert_int_equal(clopt_optimizer_load(m.opt, "/dev/zero"), CLOPT_ERR_IO);
    assert_true(now_s() - t < 0.5);
    assert_int_equal(clopt_optimizer_load(m.opt, dir), CLOPT_ERR_IO);
    alarm(0);
    snapshot after = net_snapshot(&m);
    assert_same(&before, &after);
    snapshot_free(&after);
    /* the file itself still loads */
    assert_int_equal(clopt_optimizer_save(m.opt, path), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_load(m.opt, path), CLOPT_SUCCESS);
    remove(path), remove(big), remove(fifo);
    assert_int_equal(rmdir(dir), 0);
    snapshot_free(&before);
    free(good);
    net_free(&m);
}

/* Symlinks planted at every name an attacker could predict (the old "<path>.<pid>.tmp" among
   them) pointing at a victim file: saving writes neither the victim nor through any link,
   the checkpoint is a regular file of mode 0600, and no temporary file is left. A save that
   cannot rename leaves nothing behind either. */
void test_save_symlinks(void **state)
{
    fixture *f = *state;
    net m;
    net_build(&m, f->ctx, CLOPT_ADAMW, 0, 1, 31);
    net_steps(&m, 0, 2);
    char dir[] = "/tmp/clopt-h5sym-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[160], victim[160], link[8][200];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    const char victim_text[] = "precious data\n";
    FILE *fp = fopen(victim, "wb");
    assert_non_null(fp);
    fputs(victim_text, fp);
    fclose(fp);
    const long pid = (long)getpid();
    snprintf(link[0], sizeof link[0], "%s.%ld.tmp", path, pid);
    snprintf(link[1], sizeof link[1], "%s.tmp", path);
    snprintf(link[2], sizeof link[2], "%s.%ld", path, pid);
    snprintf(link[3], sizeof link[3], "%s~", path);
    snprintf(link[4], sizeof link[4], "%s.%ld.tmp", path, pid + 1);
    snprintf(link[5], sizeof link[5], "%s/.opt.ckpt.tmp", dir);
    snprintf(link[6], sizeof link[6], "%s.new", path);
    snprintf(link[7], sizeof link[7], "%s.%ld.0.tmp", path, pid);
    for (int k = 0; k < 8; k++)
        assert_int_equal(symlink(victim, link[k]), 0);
    for (int rep = 0; rep < 3; rep++)
        assert_int_equal(clopt_optimizer_save(m.opt, path), CLOPT_SUCCESS);
    size_t vlen, flen, blen;
    unsigned char *v = slurp(victim, &vlen);
    assert_int_equal(vlen, strlen(victim_text));
    assert_memory_equal(v, victim_text, vlen);
    free(v);
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(lstat(link[k], &sb), 0);
        assert_true(S_ISLNK(sb.st_mode));
    }
    unsigned char *file = slurp(path, &flen), *bytes = save_bytes(&m, NULL, &blen);
    assert_int_equal(flen, blen);
    assert_memory_equal(file, bytes, flen);
    free(file), free(bytes);
    /* a folder stands at the path: the rename fails, the temporary file is removed */
    char sub[200];
    snprintf(sub, sizeof sub, "%s/adir", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    char inner[240];
    snprintf(inner, sizeof inner, "%s/x", sub);
    fp = fopen(inner, "wb");
    fclose(fp);
    assert_int_equal(clopt_optimizer_save(m.opt, sub), CLOPT_ERR_IO);
    /* the folder holds exactly what was put there: 8 links, victim, opt.ckpt, adir */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 11", dir);
    assert_int_equal(system(cmd), 0);
    remove(inner), rmdir(sub);
    for (int k = 0; k < 8; k++)
        remove(link[k]);
    remove(victim), remove(path);
    assert_int_equal(rmdir(dir), 0);
    net_free(&m);
}
