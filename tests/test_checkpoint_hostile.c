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

/* Offsets in a GRUP section (from its start: tag, length, then the payload) of fields of the
   group's hyperparameters, from docs/checkpoint-format.md: 19 f64, then the u32s
   hess_interval .. lookahead_k (grad_centralization the 12th), master, stochastic_rounding,
   state_dtype, 3 f64, then warmup_steps, decouple, alpha_warmup, beta3_warmup, cautious. */
enum {
    GRUP_RELATIVE_STEP = 16 + 19 * 8 + 5 * 4,
    GRUP_WARMUP_INIT = 16 + 19 * 8 + 7 * 4,
    GRUP_GC = 16 + 19 * 8 + 11 * 4,
    /* the schedule after the 14 + 3 + 6 ints and 3 more f64: nstages, then stage 0's kind,
       start and total_steps */
    GRUP_STAGE0_TOTAL = 16 + 19 * 8 + 23 * 4 + 3 * 8 + 4 + 4 + 8,
    GRUP_STATE_DTYPE = 16 + 19 * 8 + 16 * 4,
    GRUP_CAUTIOUS = 16 + 19 * 8 + 17 * 4 + 3 * 8 + 4 * 4
};

/* An optimizer of `rule` over caller-owned f32 tensors of sizes n[0..nt) (or, arena, one
   arena group of bf16 tensors), stepped `steps` times with gradient 0.25. */
typedef struct rig {
    clopt_ctx *ctx;
    clopt_optimizer *opt;
    cl_mem p[2], g[2];
    size_t nt;
} rig;

static void rig_build(rig *r, clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                      const size_t *n, size_t nt, int arena, int steps)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    assert_int_equal(clopt_optimizer_create(ctx, rule, hp, &r->opt), CLOPT_SUCCESS);
    clopt_param_desc d[2];
    for (size_t k = 0; k < nt; k++) {
        clopt_param_desc_init(&d[k]);
        d[k].ndim = 1, d[k].shape[0] = n[k];
    }
    if (arena) {
        assert_true(n[0] <= 8 && (nt < 2 || n[1] <= 8));
        for (size_t k = 0; k < nt; k++)
            d[k].param_dtype = d[k].grad_dtype = CLOPT_DTYPE_BF16;
        assert_int_equal(clopt_optimizer_add_arena_group(r->opt, hp, nt, d, NULL, NULL),
                         CLOPT_SUCCESS);
        for (size_t k = 0; k < nt; k++) {
            clopt_tensor gv;
            assert_int_equal(clopt_optimizer_param_view(r->opt, k, NULL, &gv, NULL, NULL),
                             CLOPT_SUCCESS);
            uint16_t quarter[8]; /* 0.25 in bf16 */
            for (size_t i = 0; i < n[k]; i++)
                quarter[i] = 0x3E80;
            buf_write(ctx, gv.buffer, gv.offset * 2, n[k] * 2, quarter);
        }
    } else {
        for (size_t k = 0; k < nt; k++) {
            float *v = malloc(n[k] * sizeof *v);
            for (size_t i = 0; i < n[k]; i++)
                v[i] = 0.25f;
            r->p[k] = upload(ctx, v, n[k]), r->g[k] = upload(ctx, v, n[k]);
            free(v);
            d[k].param = (clopt_tensor){r->p[k], 0}, d[k].grad = (clopt_tensor){r->g[k], 0};
            assert_int_equal(clopt_optimizer_add_param_desc(r->opt, 0, &d[k], NULL),
                             CLOPT_SUCCESS);
        }
    }
    r->nt = nt;
    for (int t = 0; t < steps; t++)
        assert_int_equal(clopt_optimizer_step(r->opt, NULL), CLOPT_SUCCESS);
}

static void rig_free(rig *r)
{
    clopt_optimizer_destroy(r->opt);
    for (size_t k = 0; k < r->nt; k++) {
        if (r->p[k])
            clReleaseMemObject(r->p[k]);
        if (r->g[k])
            clReleaseMemObject(r->g[k]);
    }
}

/* good with the u32 at `at` set to v (resealed) must fail to load into r with `want`, and
   the optimizer's bytes afterwards be the ones before (state, counts, settings). */
static void rig_refuses(rig *r, const unsigned char *good, size_t len, size_t at, uint32_t v,
                        clopt_status want, const char *what)
{
    unsigned char *copy = malloc(len);
    memcpy(copy, good, len);
    put_u32(copy + at, v);
    reseal(copy, len);
    clopt_status s = clopt_optimizer_load_from(r->opt, copy, len);
    if (s != want) {
        fprintf(stderr, "%s: got %s (%s), want %s\n", what, clopt_status_name(s),
                clopt_ctx_last_error(r->ctx), clopt_status_name(want));
        fail();
    }
    size_t len2;
    unsigned char *after = save_opt_bytes(r->opt, NULL, &len2);
    assert_true(len2 == len && memcmp(after, good, len) == 0);
    free(after), free(copy);
}

/* Group settings the API refuses do not come in through well-formed, sealed bytes either:
   8-bit state under cautious masking (the two-pass kernels then read the 8-bit state as
   floats: NaN weights and device writes past the buffers), 8-bit state for LAMB whose
   tensors are all small (the next large tensor got it), bf16 state for Adafactor; a
   state_dtype that contradicts the tensors' storage; a non-arena group's tensor count; a
   section count off by one; arena tensors that differ in their F32 master's readiness. */
void test_impossible_group_settings(void **state)
{
    fixture *f = *state;
    clopt_hparams hp;
    rig r;
    size_t len, starts[8];
    unsigned char *good;

    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    hp.state_dtype = CLOPT_DTYPE_U8;
    const size_t big = 4096, small = 64;
    rig_build(&r, f->ctx, CLOPT_ADAMW, &hp, &big, 1, 0, 1);
    good = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(good, len, starts, 8), 3);
    const size_t g0 = starts[1];
    /* the offsets are the fields: state_dtype U8 and cautious 0 where expected */
    assert_int_equal(get_u32(good + g0 + GRUP_STATE_DTYPE), CLOPT_DTYPE_U8);
    assert_int_equal(get_u32(good + g0 + GRUP_CAUTIOUS), 0);
    rig_refuses(&r, good, len, g0 + GRUP_CAUTIOUS, 1, CLOPT_ERR_FORMAT, "cautious 8-bit");
    rig_refuses(&r, good, len, g0 + GRUP_STATE_DTYPE, CLOPT_DTYPE_F32,
                CLOPT_ERR_STATE_MISMATCH, "f32 state_dtype over 8-bit state");
    /* the last field of GRUP: the arena tensor count, 0 for other groups */
    const size_t count_at = g0 + 16 + (size_t)get_u64(good + g0 + 8) - 8;
    assert_int_equal(get_u64(good + count_at), 0);
    rig_refuses(&r, good, len, count_at, 12345, CLOPT_ERR_STATE_MISMATCH,
                "a tensor count for a group that is not an arena");
    rig_refuses(&r, good, len, 12, 4, CLOPT_ERR_FORMAT, "a section count off by one");
    free(good), rig_free(&r);

    hp.state_dtype = CLOPT_DTYPE_F32; /* its tensors' state names and lengths fit bf16 too */
    rig_build(&r, f->ctx, CLOPT_ADAMW, &hp, &big, 1, 0, 1);
    good = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(good, len, starts, 8), 3);
    rig_refuses(&r, good, len, starts[1] + GRUP_STATE_DTYPE, CLOPT_DTYPE_BF16,
                CLOPT_ERR_STATE_MISMATCH, "bf16 state_dtype over f32 state");
    free(good), rig_free(&r);

    assert_int_equal(clopt_hparams_default(CLOPT_LAMB, &hp), CLOPT_SUCCESS);
    rig_build(&r, f->ctx, CLOPT_LAMB, &hp, &small, 1, 0, 1);
    good = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(good, len, starts, 8), 3);
    rig_refuses(&r, good, len, starts[1] + GRUP_STATE_DTYPE, CLOPT_DTYPE_U8, CLOPT_ERR_FORMAT,
                "8-bit state for LAMB");
    free(good), rig_free(&r);

    assert_int_equal(clopt_hparams_default(CLOPT_ADAFACTOR, &hp), CLOPT_SUCCESS);
    rig_build(&r, f->ctx, CLOPT_ADAFACTOR, &hp, &small, 1, 0, 1);
    good = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(good, len, starts, 8), 3);
    rig_refuses(&r, good, len, starts[1] + GRUP_STATE_DTYPE, CLOPT_DTYPE_BF16,
                CLOPT_ERR_FORMAT, "bf16 state for Adafactor");
    assert_int_equal(get_u32(good + starts[1] + GRUP_GC), 0);
    free(good), rig_free(&r);

    /* an arena group of bf16 tensors with F32 masters, 2 steps: both masters hold values */
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    hp.master = CLOPT_MASTER_F32;
    const size_t two[2] = {7, 5};
    rig_build(&r, f->ctx, CLOPT_ADAM, &hp, two, 2, 1, 2);
    good = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(good, len, starts, 8), 5); /* group 0 (empty) and the arena */
    const size_t fl = tens_flags(good, starts[4]);
    assert_true(get_u32(good + fl) & 4u); /* TENS_MASTER_READY */
    rig_refuses(&r, good, len, fl, get_u32(good + fl) & ~4u, CLOPT_ERR_FORMAT,
                "arena tensors with and without a ready master");
    free(good), rig_free(&r);

    /* a multi-pass rule's arena steps tensor by tensor: write_state gives one tensor's
       master before the others', and its checkpoint loads */
    assert_int_equal(clopt_hparams_default(CLOPT_LAMB, &hp), CLOPT_SUCCESS);
    hp.master = CLOPT_MASTER_F32;
    rig_build(&r, f->ctx, CLOPT_LAMB, &hp, two, 2, 1, 0);
    size_t ms = 99;
    for (size_t k = 0; k < clopt_optimizer_state_entry_count(r.opt); k++) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(r.opt, k, &e), CLOPT_SUCCESS);
        if (e.param == 0 && strcmp(e.name, "master") == 0)
            ms = e.index;
    }
    assert_true(ms < 8);
    const float m7[7] = {1, 2, 3, 4, 5, 6, 7};
    assert_int_equal(clopt_optimizer_write_state(r.opt, 0, ms, m7, 7), CLOPT_SUCCESS);
    good = save_opt_bytes(r.opt, NULL, &len);
    clopt_status s = clopt_optimizer_load_from(r.opt, good, len);
    if (s != CLOPT_SUCCESS)
        fail_msg("LAMB arena, one master written: %s", clopt_ctx_last_error(f->ctx));
    free(good), rig_free(&r);
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

/* Files of the library before 2026-12-02 hold settings it took and this one refuses: they
   load as they behaved (they were refused as malformed): Adafactor's warmup_init without
   relative_step (ignored there) comes in off, a constant schedule stage of 0 steps as no
   factor. */
void test_legacy_settings(void **state)
{
    fixture *f = *state;
    clopt_hparams hp, got;
    rig r;
    size_t len, starts[8];
    const size_t small = 64;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAFACTOR, &hp), CLOPT_SUCCESS);
    hp.lr = 1e-3;
    rig_build(&r, f->ctx, CLOPT_ADAFACTOR, &hp, &small, 1, 0, 1);
    unsigned char *bytes = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(bytes, len, starts, 8), 3);
    assert_int_equal(get_u32(bytes + starts[1] + GRUP_RELATIVE_STEP), 1);
    assert_int_equal(get_u32(bytes + starts[1] + GRUP_WARMUP_INIT), 0);
    put_u32(bytes + starts[1] + GRUP_RELATIVE_STEP, 0);
    put_u32(bytes + starts[1] + GRUP_WARMUP_INIT, 1);
    reseal(bytes, len);
    assert_int_equal(clopt_optimizer_load_from(r.opt, bytes, len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_get_group_hparams(r.opt, 0, &got), CLOPT_SUCCESS);
    assert_true(got.relative_step == 0 && got.warmup_init == 0 && got.lr == 1e-3);
    free(bytes), rig_free(&r);

    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    rig_build(&r, f->ctx, CLOPT_ADAMW, &hp, &small, 1, 0, 1);
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 1;
    s.stage[0].kind = CLOPT_SCHED_CONSTANT;
    s.stage[0].total_steps = 3;
    s.stage[0].factor = 0.5;
    assert_int_equal(clopt_optimizer_set_group_schedule(r.opt, 0, &s), CLOPT_SUCCESS);
    bytes = save_opt_bytes(r.opt, NULL, &len);
    assert_int_equal(sections(bytes, len, starts, 8), 3);
    assert_int_equal(get_u64(bytes + starts[1] + GRUP_STAGE0_TOTAL), 3);
    put_u64(bytes + starts[1] + GRUP_STAGE0_TOTAL, 0);
    reseal(bytes, len);
    assert_int_equal(clopt_optimizer_load_from(r.opt, bytes, len), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_get_group_schedule(r.opt, 0, &s), CLOPT_SUCCESS);
    assert_true(s.nstages == 1 && s.stage[0].total_steps == 1 && s.stage[0].factor == 1.0);
    assert_true(clopt_optimizer_group_lr(r.opt, 0) == hp.lr);
    free(bytes), rig_free(&r);
}
