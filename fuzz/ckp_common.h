/* SPDX-License-Identifier: MIT */
/* The optimizer both checkpoint harnesses load into, built once per process: Adam with two
 * groups (caller-owned tensors of 6 and 5 floats in group 0, an arena group of a [3, 2] and a
 * [4] tensor with a warm-up schedule), stepped twice so every state holds values. After every
 * load the harness checks the all-or-nothing contract: a refused load leaves the optimizer's
 * checkpoint byte-identical; an accepted one is undone by loading the reference again, which
 * must succeed and give the reference bytes back. A broken contract aborts (a finding). */
#ifndef CLOPT_FUZZ_CKP_COMMON_H
#define CLOPT_FUZZ_CKP_COMMON_H
#define _POSIX_C_SOURCE 200809L
#include "clopt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static clopt_ctx *g_ctx;
static clopt_optimizer *g_opt;
static unsigned char *g_ref, *g_cur;
static size_t g_len;

#define FUZZ_REQUIRE(cond)                                                                     \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz: %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond,               \
                    g_ctx ? clopt_ctx_last_error(g_ctx) : "");                                 \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static cl_mem upload(const float *v, size_t n)
{
    cl_int err;
    cl_mem m = clCreateBuffer(clopt_ctx_cl_context(g_ctx), CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                              n * sizeof(float), (void *)v, &err);
    FUZZ_REQUIRE(err == CL_SUCCESS);
    return m;
}

/* The checkpoint with options o into g_cur (g_len bytes, which must not change). */
static void save_now(const clopt_save_options *o, unsigned char *out, size_t *len)
{
    size_t size = 0, written = 0;
    FUZZ_REQUIRE(clopt_optimizer_state_size(g_opt, o, &size) == CLOPT_SUCCESS);
    FUZZ_REQUIRE(size <= *len);
    FUZZ_REQUIRE(clopt_optimizer_save_to(g_opt, o, out, size, &written) == CLOPT_SUCCESS);
    *len = written;
}

static void write_seed(const char *dir, const char *name, const unsigned char *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FUZZ_REQUIRE(f && fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static void fuzz_setup(void)
{
    FUZZ_REQUIRE(clopt_ctx_create(&g_ctx) == CLOPT_SUCCESS);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAM, &hp);
    hp.lr = 0.01;
    FUZZ_REQUIRE(clopt_optimizer_create(g_ctx, CLOPT_ADAM, &hp, &g_opt) == CLOPT_SUCCESS);
    static float p0[6] = {0.5f, -1, 2, 0.25f, -0.125f, 3}, p1[5] = {1, 2, 3, 4, 5};
    static float q0[6] = {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f}, q1[5] = {-1, 1, -1, 1, 0.5f};
    static cl_mem b[4]; /* caller-owned: alive for the process */
    b[0] = upload(p0, 6), b[1] = upload(q0, 6), b[2] = upload(p1, 5), b[3] = upload(q1, 5);
    FUZZ_REQUIRE(clopt_optimizer_add_param(g_opt, (clopt_tensor){b[0], 0}, (clopt_tensor){b[1], 0},
                                           6, NULL, NULL) == CLOPT_SUCCESS);
    FUZZ_REQUIRE(clopt_optimizer_add_param(g_opt, (clopt_tensor){b[2], 0}, (clopt_tensor){b[3], 0},
                                           5, NULL, NULL) == CLOPT_SUCCESS);
    clopt_param_desc shapes[2];
    memset(shapes, 0, sizeof shapes);
    shapes[0].ndim = 2, shapes[0].shape[0] = 3, shapes[0].shape[1] = 2;
    shapes[1].ndim = 1, shapes[1].shape[0] = 4;
    clopt_hparams h1 = hp;
    h1.beta1 = 0.8, h1.weight_decay = 0.01;
    size_t g1;
    FUZZ_REQUIRE(clopt_optimizer_add_arena_group(g_opt, &h1, 2, shapes, &g1, NULL) ==
                 CLOPT_SUCCESS);
    clopt_schedule s;
    memset(&s, 0, sizeof s);
    s.nstages = 1;
    s.stage[0] = (clopt_schedule_stage){CLOPT_SCHED_LINEAR_WARMUP, 0, 5, 0, 0, 0.2, 0, 0};
    FUZZ_REQUIRE(clopt_optimizer_set_group_schedule(g_opt, g1, &s) == CLOPT_SUCCESS);
    FUZZ_REQUIRE(clopt_optimizer_set_grad_clip(g_opt, 1.0) == CLOPT_SUCCESS);
    for (int t = 0; t < 2; t++)
        FUZZ_REQUIRE(clopt_optimizer_step(g_opt, NULL) == CLOPT_SUCCESS);
    FUZZ_REQUIRE(clopt_optimizer_state_size(g_opt, NULL, &g_len) == CLOPT_SUCCESS);
    g_ref = malloc(g_len);
    g_cur = malloc(g_len);
    size_t n = g_len;
    save_now(NULL, g_ref, &n);
    /* FUZZ_WRITE_SEEDS=dir: the seed corpus (the reference and its variants) */
    const char *seeds = getenv("FUZZ_WRITE_SEEDS");
    if (seeds) {
        write_seed(seeds, "adam-2groups", g_ref, g_len);
        clopt_save_options o;
        clopt_save_options_init(&o);
        o.state_tensors = 0;
        n = g_len;
        save_now(&o, g_cur, &n);
        write_seed(seeds, "adam-2groups-no-state", g_cur, n);
        clopt_save_options_init(&o);
        o.arena_params = 0;
        n = g_len;
        save_now(&o, g_cur, &n);
        write_seed(seeds, "adam-2groups-no-params", g_cur, n);
    }
}

/* After a load that returned s: the contract. */
static void fuzz_check(clopt_status s)
{
    size_t n = g_len;
    if (s != CLOPT_SUCCESS) {
        FUZZ_REQUIRE(s < 0 && clopt_ctx_last_error(g_ctx)[0] != '\0');
        save_now(NULL, g_cur, &n);
        FUZZ_REQUIRE(n == g_len && memcmp(g_cur, g_ref, g_len) == 0);
        return;
    }
    /* accepted: back to the reference */
    FUZZ_REQUIRE(clopt_optimizer_load_from(g_opt, g_ref, g_len) == CLOPT_SUCCESS);
    save_now(NULL, g_cur, &n);
    FUZZ_REQUIRE(n == g_len && memcmp(g_cur, g_ref, g_len) == 0);
}
#endif
