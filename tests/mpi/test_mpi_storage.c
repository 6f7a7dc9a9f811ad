/* SPDX-License-Identifier: MIT */
/* Storage types sharded: 16-bit parameters and gradients (the engine's bf16/f16 flat buffers)
 * and 8-bit blockwise state (shard boundaries inside a tensor on its blocks of 256). Every case
 * against the unsharded optimizer over the same layout and storage, bit for bit, after each of
 * 7 steps (the whole parameter buffer, gaps included), then every state of every piece (fp32
 * masters and bf16 remainders included) against the same slice of the unsharded state. Masters
 * none (rounded to nearest), f32 and remainder; f16 and bf16; gradients in 16 bits or float32;
 * shards that cut tensors under cautious masking (the sums hook) and Adafactor (replicated);
 * Lookahead; Schedule-Free's eval/train; AMP with f16 gradients and a skipped step; 8-bit state
 * for AdamW, Lion, AdEMAMix, SGD with momentum, with 16-bit θ and with gradient centralization,
 * on shards that cut tensors of 1500 and 320 elements (the absmaxes sliced by block);
 * stochastic rounding (bf16 on cut matrices, f16 with Lookahead's per-tensor path, with 8-bit
 * state; two groups, whose streams are their first tensors' indices, the second group's given
 * explicitly too). Reduce-scatter of bf16 gradients (summed as floats in rank order: the
 * reference takes that float sum). Checkpoints of masters and remainders in both forms, across
 * world sizes and into the unsharded optimizer, also one saved before the first step. 8-bit
 * checkpoints resharded 2 -> 3 -> 1 ranks (the saved parts' blocks reassembled). Refusals:
 * mixed storage types, storage or streams differing between ranks, a stream out of range. */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include "mpi_fixture.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#define STEPS 7

typedef struct half_case {
    const char *name;
    clopt_rule rule;
    clopt_dtype pdt, gdt;
    int master;  /* clopt_master */
    int layout;  /* 0 fx_layout_main, 1 fx_layout_wide (the shards cut its matrices), 2 one
                    vector of 1500 (cut at 768; at 512 and 1024 with 3 ranks) */
    int variant; /* 1 weight decay, 2 Lookahead, 3 cautious, 4 Nesterov, 5 bf16 state, 6 AMP,
                    7 8-bit state, 8 8-bit state and gradient centralization, 9 stochastic
                    rounding, 10 the same with Lookahead, 11 the same with 8-bit state */
} half_case;

static const half_case cases[] = {
    {"adamw bf16/bf16, f32 master", CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, 1, 0, 0},
    {"adamw bf16/f32, remainder, wd", CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32, 2, 0, 1},
    {"lion f16/f16, no master", CLOPT_LION, CLOPT_DTYPE_F16, CLOPT_DTYPE_F16, 0, 0, 0},
    {"sgd nesterov bf16/bf16, no master", CLOPT_SGD, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, 0, 0, 4},
    {"adamw lookahead bf16, remainder", CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, 2, 0, 2},
    {"rmsprop f16/bf16, f32 master, bf16 state", CLOPT_RMSPROP, CLOPT_DTYPE_F16, CLOPT_DTYPE_BF16,
     1, 0, 5},
    {"schedule_free_adamw f16, f32 master", CLOPT_SCHEDULE_FREE_ADAMW, CLOPT_DTYPE_F16,
     CLOPT_DTYPE_F16, 1, 0, 0},
    {"adamw f16/f16, f32 master, AMP", CLOPT_ADAMW, CLOPT_DTYPE_F16, CLOPT_DTYPE_F16, 1, 0, 6},
    {"adamw cautious bf16, f32 master (cut)", CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, 1,
     1, 3},
    {"adafactor bf16, f32 master (cut: replicated)", CLOPT_ADAFACTOR, CLOPT_DTYPE_BF16,
     CLOPT_DTYPE_BF16, 1, 1, 0},
    {"adamw 8-bit state, vector", CLOPT_ADAMW, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, 0, 2, 7},
    {"adamw 8-bit state, wide", CLOPT_ADAMW, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, 0, 1, 7},
    {"lion 8-bit state, bf16 f32 master", CLOPT_LION, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, 1, 2,
     7},
    {"ademamix 8-bit state", CLOPT_ADEMAMIX, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, 0, 2, 7},
    {"sgd momentum 8-bit state, bf16 remainder", CLOPT_SGD, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16,
     2, 1, 7},
    {"adamw 8-bit state, GC", CLOPT_ADAMW, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, 0, 1, 8},
    {"adamw bf16 SR (cut)", CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, 0, 1, 9},
    {"lion f16 SR, lookahead", CLOPT_LION, CLOPT_DTYPE_F16, CLOPT_DTYPE_F16, 0, 0, 10},
    {"adamw bf16 SR, 8-bit state", CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32, 0, 2, 11},
};

static void layout_of(const half_case *c, fx_layout *L)
{
    if (c->layout == 1)
        fx_layout_wide(L);
    else if (c->layout == 2)
        fx_layout_vector(L, 1500);
    else
        fx_layout_main(L);
}

static cl_command_queue queue(void)
{
    return clopt_ctx_cl_queue(fx_ctx);
}

static void read_bytes(cl_mem b, void *h, size_t bytes)
{
    const cl_int e = clEnqueueReadBuffer(queue(), b, CL_TRUE, 0, bytes, h, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueReadBuffer: %d", (int)e);
}

/* Flattened float values into the tensors of buffer b (laid out as L, elements of type dt),
   rounded to nearest even by the core's conversion (checked against C in test_storage). */
static void scatter_t(const fx_layout *L, int grad, cl_mem b, clopt_dtype dt, const float *flat)
{
    if (dt == CLOPT_DTYPE_F32) {
        fx_scatter(L, grad, b, flat);
        return;
    }
    cl_mem tmp = fx_buffer(L->total, 0.0f);
    fx_write(tmp, flat, L->total);
    for (size_t i = 0, at = 0; i < L->nt; at += L->n[i], i++) {
        const clopt_tensor dst = {b, grad ? L->goff[i] : L->poff[i]}, src = {tmp, at};
        CHECK_OK(clopt_enqueue_convert(fx_ctx, queue(), dst, dt, src, CLOPT_DTYPE_F32, L->n[i], 0,
                                       0, 0, 0, 0, NULL, NULL));
    }
    CHECK(clFinish(queue()) == CL_SUCCESS, "clFinish");
    clReleaseMemObject(tmp);
}

static void set_dtypes(clopt_param_desc *d, size_t nt, clopt_dtype pdt, clopt_dtype gdt)
{
    for (size_t i = 0; i < nt; i++) {
        d[i].param_dtype = pdt;
        d[i].grad_dtype = gdt;
    }
}

static void hparams(const half_case *c, clopt_hparams *hp)
{
    CHECK_OK(clopt_hparams_default(c->rule, hp));
    hp->master = c->master;
    if (c->rule != CLOPT_ADAFACTOR) /* steps larger than a 16-bit ulp of the values */
        hp->lr = 0.05;
    if (c->variant == 1)
        hp->weight_decay = 0.1;
    if (c->variant == 2) {
        hp->lookahead_k = 2;
        hp->lookahead_alpha = 0.5;
    }
    if (c->variant == 3)
        hp->cautious = 1;
    if (c->variant == 4) {
        hp->momentum = 0.9;
        hp->nesterov = 1;
        hp->weight_decay = 0.01;
    }
    if (c->variant == 5)
        hp->state_dtype = CLOPT_DTYPE_BF16;
    if (c->variant == 7 || c->variant == 8 || c->variant == 11) {
        hp->state_dtype = CLOPT_DTYPE_U8;
        hp->momentum = c->rule == CLOPT_SGD ? 0.9 : hp->momentum;
        hp->grad_centralization = c->variant == 8;
    }
    if (c->variant >= 9) {
        hp->stochastic_rounding = 1;
        hp->lookahead_k = c->variant == 10 ? 2 : 0;
        hp->lookahead_alpha = 0.5;
    }
}

static clopt_mpi_optimizer *sharded(clopt_rule rule, const clopt_hparams *hp, MPI_Comm comm,
                                    const fx_layout *L, cl_mem p, cl_mem g, clopt_dtype pdt,
                                    clopt_dtype gdt, const clopt_mpi_options *o, const char *what)
{
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(L, p, g, d, &desc);
    set_dtypes(d, L->nt, pdt, gdt);
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status s =
        clopt_mpi_optimizer_create(fx_ctx, rule, hp, comm, &desc, o, &sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "%s: create: %s: %s", what, clopt_mpi_status_name(s), why);
    return sh;
}

/* The gradient of step t (before the loss scale): small and large entries. */
static void grad_values(float *flat, size_t n, unsigned t, float mul)
{
    for (size_t i = 0; i < n; i++)
        flat[i] = fx_val(100 + t, i) * (i % 5 == 0 ? 1e-3f : 1.0f) * mul;
}

static void run_case(const half_case *c)
{
    fx_layout L;
    layout_of(c, &L);
    const size_t pes = clopt_dtype_size(c->pdt), pbytes = L.plen * pes;
    clopt_hparams hp;
    hparams(c, &hp);
    cl_mem p = fx_buffer(L.plen, 1234.5f), g = fx_buffer(L.glen, -77.0f);
    cl_mem rp = fx_buffer(L.plen, 1234.5f), rg = fx_buffer(L.glen, -77.0f);
    float *flat = malloc(L.total * sizeof *flat);
    unsigned char *a = malloc(pbytes), *b = malloc(pbytes), *init = malloc(pbytes);
    unsigned char *prev = malloc(pbytes);
    CHECK(flat && a && b && init && prev, "malloc");
    for (size_t i = 0; i < L.total; i++)
        flat[i] = fx_val(1, i);
    scatter_t(&L, 0, p, c->pdt, flat);
    scatter_t(&L, 0, rp, c->pdt, flat);
    read_bytes(p, init, pbytes);
    memcpy(prev, init, pbytes);

    clopt_mpi_optimizer *sh =
        sharded(c->rule, &hp, MPI_COMM_WORLD, &L, p, g, c->pdt, c->gdt, NULL, c->name);
    clopt_optimizer *ref = fx_reference_typed(c->rule, &hp, &L, rp, rg, c->pdt, c->gdt);
    CHECK_OK(clopt_mpi_optimizer_seed(sh, 1234)); /* stochastic rounding's */
    CHECK_OK(clopt_optimizer_seed(ref, 1234));
    const int amp = c->variant == 6;
    if (amp) {
        CHECK_OK(clopt_mpi_optimizer_set_grad_scale(sh, 1024.0));
        CHECK_OK(clopt_optimizer_set_grad_scale(ref, 1024.0));
    }
    unsigned applied = 0;
    for (unsigned t = 1; t <= STEPS; t++) {
        grad_values(flat, L.total, t, amp ? 1024.0f : 1.0f);
        const int skip = amp && t == 3;
        if (skip)
            flat[L.total - 1] = INFINITY; /* in the last rank's shard */
        scatter_t(&L, 1, g, c->gdt, flat);
        scatter_t(&L, 1, rg, c->gdt, flat);
        const clopt_status want = skip ? CLOPT_STEP_SKIPPED : CLOPT_SUCCESS;
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == want, "%s: step %u: %s: %s", c->name, t, clopt_mpi_status_name(st),
              clopt_mpi_optimizer_last_error(sh));
        CHECK_STATUS(clopt_optimizer_step(ref, NULL), want);
        applied += !skip;
        read_bytes(p, a, pbytes);
        read_bytes(rp, b, pbytes);
        for (size_t i = 0; i < L.plen; i++)
            CHECK(memcmp(a + i * pes, b + i * pes, pes) == 0,
                  "%s: step %u: element %zu of the buffer differs from the unsharded one",
                  c->name, t, i);
        CHECK(!skip || memcmp(a, prev, pbytes) == 0, "%s: the skipped step moved", c->name);
        memcpy(prev, a, pbytes);
    }
    /* every tensor moved; the gaps between them (and the words past the last) are untouched */
    for (size_t i = 0; i < L.nt; i++) {
        CHECK(memcmp(a + L.poff[i] * pes, init + L.poff[i] * pes, L.n[i] * pes) != 0,
              "%s: tensor %zu did not move", c->name, i);
        const size_t gap = L.poff[i] + L.n[i];
        CHECK(memcmp(a + gap * pes, init + gap * pes, 3 * pes) == 0,
              "%s: the gap after tensor %zu was written", c->name, i);
    }
    CHECK(memcmp(a, init, 5 * pes) == 0, "%s: the words before tensor 0 were written", c->name);
    CHECK(clopt_mpi_optimizer_step_count(sh) == applied, "%s: step count", c->name);
    if (c->rule == CLOPT_ADAFACTOR)
        fx_check_whole_states(c->name, sh, ref, &L);
    else
        fx_check_states(c->name, sh, ref, &L);
    if (c->rule == CLOPT_SCHEDULE_FREE_ADAMW) { /* eval (x) and train (y) gather 16-bit words */
        for (int train = 0; train < 2; train++) {
            CHECK_OK(clopt_mpi_optimizer_set_mode(sh, train));
            CHECK_OK(train ? clopt_optimizer_train(ref) : clopt_optimizer_eval(ref));
            read_bytes(p, a, pbytes);
            read_bytes(rp, b, pbytes);
            CHECK(memcmp(a, b, pbytes) == 0, "%s: %s mode differs", c->name,
                  train ? "train" : "eval");
        }
    }
    unsigned long long mine = clopt_mpi_optimizer_state_bytes(sh), sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    /* (replicated tensors count on each of their holders) */
    CHECK(c->rule == CLOPT_ADAFACTOR ? sum > clopt_optimizer_state_bytes(ref)
                                     : sum == clopt_optimizer_state_bytes(ref),
          "%s: state bytes %llu over the ranks, %zu "
          "unsharded", c->name, sum, clopt_optimizer_state_bytes(ref));
    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(a);
    free(b);
    free(init);
    free(prev);
}

/* Stochastic rounding in two groups (weights with decay, the rest without, another lr):
   group 1's stream is the index of its first tensor (3) by default, or the one given
   (explicit: 40 in both); bit for bit against an unsharded optimizer with the same two range
   groups added in order. */
static void test_sr_groups(int explicit_stream)
{
    const char *what = explicit_stream ? "SR, two groups, stream 40" : "SR, two groups";
    fx_layout L;
    fx_layout_main(&L);
    clopt_hparams hp[2];
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &hp[0]));
    hp[0].lr = 0.02;
    hp[0].stochastic_rounding = 1;
    hp[1] = hp[0];
    hp[1].weight_decay = 0.0;
    hp[1].lr = 0.01;
    const clopt_dtype B = CLOPT_DTYPE_BF16;
    cl_mem p = fx_buffer(L.plen, 0.0f), g = fx_buffer(L.glen, 0.0f);
    cl_mem rp = fx_buffer(L.plen, 0.0f), rg = fx_buffer(L.glen, 0.0f);
    float *flat = malloc(L.total * sizeof *flat);
    uint16_t *a = malloc(L.plen * 2), *b = malloc(L.plen * 2);
    CHECK(flat && a && b, "malloc");
    for (size_t i = 0; i < L.total; i++)
        flat[i] = fx_val(3, i);
    scatter_t(&L, 0, p, B, flat);
    scatter_t(&L, 0, rp, B, flat);
    clopt_param_desc d[FX_MAX_T], rd[FX_MAX_T];
    clopt_range_group gs[2], rgs[2];
    clopt_range_group all;
    fx_range_group(&L, p, g, d, &all);
    fx_range_group(&L, rp, rg, rd, &all);
    set_dtypes(d, L.nt, B, B);
    set_dtypes(rd, L.nt, B, B);
    for (int k = 0; k < 2; k++) {
        clopt_range_group_init(&gs[k]);
        gs[k].tensors = k ? d + 3 : d;
        gs[k].ntensors = k ? L.nt - 3 : 3;
        rgs[k] = gs[k];
        rgs[k].tensors = k ? rd + 3 : rd;
        if (explicit_stream && k == 1)
            gs[k].sr_stream = rgs[k].sr_stream = 40;
    }
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create_groups(fx_ctx, CLOPT_ADAMW, MPI_COMM_WORLD,
                                                             2, hp, gs, NULL, &sh, why,
                                                             sizeof why);
    CHECK(s == CLOPT_SUCCESS, "%s: create: %s: %s", what, clopt_mpi_status_name(s), why);
    clopt_optimizer *ref = NULL;
    CHECK_OK(clopt_optimizer_create(fx_ctx, CLOPT_ADAMW, &hp[0], &ref));
    for (int k = 0; k < 2; k++)
        CHECK_OK(clopt_optimizer_add_range_group(ref, &hp[k], &rgs[k], NULL, NULL));
    CHECK_OK(clopt_mpi_optimizer_seed(sh, 5));
    CHECK_OK(clopt_optimizer_seed(ref, 5));
    for (unsigned t = 1; t <= 5; t++) {
        grad_values(flat, L.total, 40 + t, 1.0f);
        scatter_t(&L, 1, g, B, flat);
        scatter_t(&L, 1, rg, B, flat);
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == CLOPT_SUCCESS, "%s: step %u: %s", what, t,
              clopt_mpi_optimizer_last_error(sh));
        CHECK_OK(clopt_optimizer_step(ref, NULL));
        read_bytes(p, a, L.plen * 2);
        read_bytes(rp, b, L.plen * 2);
        for (size_t i = 0; i < L.plen; i++)
            CHECK(a[i] == b[i], "%s: step %u: element %zu: %04x, unsharded %04x", what, t, i,
                  a[i], b[i]);
    }
    fx_check_states(what, sh, ref, &L);
    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(a);
    free(b);
}

/* bf16 of a finite float, rounded to nearest even (C, by its bits). */
static uint16_t bf16_rne(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
static float bf16_val(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Reduce-scatter of bf16 gradients (the mean over ranks, each rank its own): the ordered sum
   equals the unsharded optimizer fed the float sum of the ranks' bf16 values in rank order,
   divided by the world size, bit for bit; MPI_Reduce_scatter (the MPI's own order) leaves
   every rank the same parameters, within a bf16 step of that. */
static void test_reduce_scatter(int ordered)
{
    const char *what = ordered ? "reduce-scatter bf16 (ordered)" : "reduce-scatter bf16 (MPI)";
    fx_layout L;
    fx_layout_main(&L);
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &hp));
    hp.master = CLOPT_MASTER_F32;
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.grad_mode = CLOPT_MPI_GRAD_REDUCE_SCATTER;
    o.reduce_op = CLOPT_MPI_MEAN;
    o.ordered_sum = ordered;
    cl_mem p = fx_buffer(L.plen, 0.0f), g = fx_buffer(L.glen, 0.0f);
    cl_mem rp = fx_buffer(L.plen, 0.0f), rg = fx_buffer(L.glen, 0.0f);
    float *flat = malloc(L.total * sizeof *flat), *sum = malloc(L.total * sizeof *sum);
    uint16_t *a = malloc(L.plen * 2), *b = malloc(L.plen * 2), *r0 = malloc(L.plen * 2);
    unsigned char *gbefore = malloc(L.glen * 2), *gafter = malloc(L.glen * 2);
    CHECK(flat && sum && a && b && r0 && gbefore && gafter, "malloc");
    for (size_t i = 0; i < L.total; i++)
        flat[i] = fx_val(1, i);
    scatter_t(&L, 0, p, CLOPT_DTYPE_BF16, flat);
    scatter_t(&L, 0, rp, CLOPT_DTYPE_BF16, flat);
    clopt_mpi_optimizer *sh =
        sharded(CLOPT_ADAMW, &hp, MPI_COMM_WORLD, &L, p, g, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16,
                &o, what);
    clopt_optimizer *ref =
        fx_reference_typed(CLOPT_ADAMW, &hp, &L, rp, rg, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32);
    for (unsigned t = 1; t <= 5; t++) {
        for (size_t i = 0; i < L.total; i++) {
            float s = 0.0f;
            for (int r = 0; r < fx_size; r++) {
                const float v = bf16_val(bf16_rne(fx_val(200 + t + 1000 * (unsigned)r, i)));
                s = r ? s + v : v;
                if (r == fx_rank)
                    flat[i] = v;
            }
            sum[i] = s / (float)fx_size;
        }
        scatter_t(&L, 1, g, CLOPT_DTYPE_BF16, flat); /* exact: flat holds bf16 values */
        fx_scatter(&L, 1, rg, sum);
        read_bytes(g, gbefore, L.glen * 2);
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == CLOPT_SUCCESS, "%s: step %u: %s: %s", what, t, clopt_mpi_status_name(st),
              clopt_mpi_optimizer_last_error(sh));
        CHECK_OK(clopt_optimizer_step(ref, NULL));
        read_bytes(g, gafter, L.glen * 2);
        CHECK(memcmp(gbefore, gafter, L.glen * 2) == 0, "%s: the engine's gradient changed",
              what);
        read_bytes(p, a, L.plen * 2);
        read_bytes(rp, b, L.plen * 2);
        memcpy(r0, a, L.plen * 2);
        MPI_Bcast(r0, (int)L.plen, MPI_UINT16_T, 0, MPI_COMM_WORLD);
        CHECK(memcmp(a, r0, L.plen * 2) == 0, "%s: step %u: ranks hold different parameters",
              what, t);
        for (size_t i = 0; i < L.plen; i++) {
            const float x = bf16_val(a[i]), y = bf16_val(b[i]);
            CHECK(ordered ? a[i] == b[i] : fabsf(x - y) <= ldexpf(fabsf(y), -7),
                  "%s: step %u: element %zu: %.9g, unsharded %.9g", what, t, i, (double)x,
                  (double)y);
        }
    }
    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(sum);
    free(a);
    free(b);
    free(r0);
    free(gbefore);
    free(gafter);
}

/* Clipping with f16 gradients, a third of them f16 subnormals: the global norm equals a
   double sum over the gradient's f16 values (read back as floats through the core's
   conversion) to 1e-12, the unsharded optimizer's float norm to 1e-6, and the clipped steps
   stay within an f16 step of the unsharded ones. */
static void test_clip_f16(void)
{
    const char *what = "clip, f16 gradients";
    fx_layout L;
    fx_layout_main(&L);
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_SGD, &hp));
    hp.lr = 0.1;
    hp.momentum = 0.9;
    hp.master = CLOPT_MASTER_F32;
    const clopt_dtype F16 = CLOPT_DTYPE_F16;
    cl_mem p = fx_buffer(L.plen, 0.0f), g = fx_buffer(L.glen, 0.0f);
    cl_mem rp = fx_buffer(L.plen, 0.0f), rg = fx_buffer(L.glen, 0.0f);
    cl_mem back = fx_buffer(L.plen > L.glen ? L.plen : L.glen, 0.0f);
    float *flat = malloc(L.total * sizeof *flat), *gv = malloc(L.glen * sizeof *gv);
    float *a = malloc(L.plen * sizeof *a), *b = malloc(L.plen * sizeof *b);
    CHECK(flat && gv && a && b, "malloc");
    for (size_t i = 0; i < L.total; i++)
        flat[i] = fx_val(1, i);
    scatter_t(&L, 0, p, F16, flat);
    scatter_t(&L, 0, rp, F16, flat);
    clopt_mpi_optimizer *sh = sharded(CLOPT_SGD, &hp, MPI_COMM_WORLD, &L, p, g, F16, F16, NULL,
                                      what);
    clopt_optimizer *ref = fx_reference_typed(CLOPT_SGD, &hp, &L, rp, rg, F16, F16);
    CHECK_OK(clopt_mpi_optimizer_set_grad_clip(sh, 0.01));
    CHECK_OK(clopt_optimizer_set_grad_clip(ref, 0.01));
    for (unsigned t = 1; t <= 3; t++) {
        for (size_t i = 0; i < L.total; i++) /* |x| < 2^-14 is subnormal in f16 */
            flat[i] = fx_val(50 + t, i) * (i % 3 == 0 ? 3e-5f : 0.01f);
        scatter_t(&L, 1, g, F16, flat);
        scatter_t(&L, 1, rg, F16, flat);
        CHECK_OK(clopt_enqueue_convert(fx_ctx, queue(), (clopt_tensor){back, 0},
                                       CLOPT_DTYPE_F32, (clopt_tensor){g, 0}, F16, L.glen, 0, 0,
                                       0, 0, 0, NULL, NULL));
        fx_read(back, gv, L.glen);
        double sq = 0.0;
        size_t sub = 0;
        for (size_t i = 0, at = 0; i < L.nt; i++)
            for (size_t j = 0; j < L.n[i]; j++, at++) {
                const double x = gv[L.goff[i] + j];
                sq += x * x;
                sub += x != 0.0 && fabs(x) < ldexp(1.0, -14);
            }
        CHECK(sub >= 10, "%s: only %zu subnormal gradients", what, sub);
        const double norm = sqrt(sq);
        CHECK_OK(clopt_mpi_optimizer_step(sh, NULL));
        CHECK_OK(clopt_optimizer_step(ref, NULL));
        const double got = clopt_mpi_optimizer_last_grad_norm(sh);
        CHECK(fabs(got - norm) <= 1e-12 * norm, "%s: step %u: norm %.17g, wanted %.17g", what, t,
              got, norm);
        const double rn = clopt_optimizer_last_grad_norm(ref);
        CHECK(fabs(got - rn) <= 1e-6 * norm, "%s: step %u: norm %.9g, unsharded %.9g", what, t,
              got, rn);
        CHECK(norm > 0.01, "%s: the clip is not active", what);
        /* θ as floats (exact), within one f16 step of the unsharded */
        CHECK_OK(clopt_enqueue_convert(fx_ctx, queue(), (clopt_tensor){back, 0},
                                       CLOPT_DTYPE_F32, (clopt_tensor){p, 0}, F16, L.plen, 0, 0,
                                       0, 0, 0, NULL, NULL));
        fx_read(back, a, L.plen);
        CHECK_OK(clopt_enqueue_convert(fx_ctx, queue(), (clopt_tensor){back, 0},
                                       CLOPT_DTYPE_F32, (clopt_tensor){rp, 0}, F16, L.plen, 0, 0,
                                       0, 0, 0, NULL, NULL));
        fx_read(back, b, L.plen);
        for (size_t i = 0; i < L.plen; i++)
            CHECK(fabsf(a[i] - b[i]) <= ldexpf(fabsf(b[i]), -10), "%s: step %u: element %zu: "
                  "%.9g, unsharded %.9g", what, t, i, (double)a[i], (double)b[i]);
    }
    fx_release(sh, ref, p, g, rp, rg);
    clReleaseMemObject(back);
    free(flat);
    free(gv);
    free(a);
    free(b);
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

typedef struct ck {
    fx_layout L;
    clopt_hparams hp;
    clopt_dtype pdt;
    size_t pbytes;
    int shards; /* the per-rank form */
} ck;

static clopt_status ck_save(const ck *k, clopt_mpi_optimizer *sh, const char *path)
{
    return k->shards ? clopt_mpi_optimizer_save_shards(sh, path)
                     : clopt_mpi_optimizer_save(sh, path);
}
static clopt_status ck_load(const ck *k, clopt_mpi_optimizer *sh, const char *path)
{
    return k->shards ? clopt_mpi_optimizer_load_shards(sh, path)
                     : clopt_mpi_optimizer_load(sh, path);
}

static void ck_steps(const ck *k, cl_mem g, unsigned from, unsigned to,
                     clopt_mpi_optimizer *sh, clopt_optimizer *un)
{
    float *flat = malloc(k->L.total * sizeof *flat);
    CHECK(flat != NULL, "malloc");
    for (unsigned t = from; t <= to; t++) {
        grad_values(flat, k->L.total, 300 + t, 1.0f);
        scatter_t(&k->L, 1, g, CLOPT_DTYPE_BF16, flat);
        if (sh) {
            const clopt_status s = clopt_mpi_optimizer_step(sh, NULL);
            CHECK(s == CLOPT_SUCCESS, "step %u: %s: %s", t, clopt_mpi_status_name(s),
                  clopt_mpi_optimizer_last_error(sh));
        } else {
            CHECK_OK(clopt_optimizer_step(un, NULL));
        }
    }
    free(flat);
}

/* A world optimizer over a fresh parameter buffer holding the bytes `params`. */
static clopt_mpi_optimizer *ck_open(const ck *k, MPI_Comm comm, const unsigned char *params,
                                    cl_mem *p, cl_mem *g)
{
    *p = fx_buffer(k->L.plen, 0.0f);
    *g = fx_buffer(k->L.glen, 0.0f);
    const cl_int e =
        clEnqueueWriteBuffer(queue(), *p, CL_TRUE, 0, k->pbytes, params, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueWriteBuffer: %d", (int)e);
    return sharded(CLOPT_ADAMW, &k->hp, comm, &k->L, *p, *g, k->pdt, CLOPT_DTYPE_BF16, NULL,
                   "checkpoint");
}

static void ck_close(clopt_mpi_optimizer *sh, cl_mem p, cl_mem g)
{
    clopt_mpi_optimizer_destroy(sh);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

/* Two ranks train 3 steps and save, then 2 more; the whole world loads the file into fresh
   buffers holding the parameters saved with it and continues bit-identically; one rank and
   (gathered form) the unsharded optimizer too. q8: 8-bit state over one vector of 1500
   (saved from [0, 768) and [768, 1500), loaded on 3 ranks as [0, 512), [512, 1024),
   [1024, 1500): each piece's codes and absmaxes come from both saved parts). */
static void test_checkpoint(int master, int shards, int q8, const char *path)
{
    ck k;
    memset(&k, 0, sizeof k);
    if (q8)
        fx_layout_vector(&k.L, 1500);
    else
        fx_layout_main(&k.L);
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &k.hp));
    k.hp.master = master;
    k.hp.state_dtype = q8 ? CLOPT_DTYPE_U8 : CLOPT_DTYPE_F32;
    if (master == CLOPT_MASTER_REMAINDER) { /* slow weights of a 16-bit θ, saved at step 0 too */
        k.hp.lookahead_k = 2;
        k.hp.lookahead_alpha = 0.5;
    }
    k.hp.weight_decay = 0.05;
    k.pdt = CLOPT_DTYPE_BF16;
    k.pbytes = k.L.plen * 2;
    k.shards = shards;
    unsigned char *init = malloc(k.pbytes), *saved = malloc(k.pbytes), *cont = malloc(k.pbytes),
                  *got = malloc(k.pbytes);
    CHECK(init && saved && cont && got, "malloc");
    float *flat = malloc(k.L.total * sizeof *flat);
    CHECK(flat != NULL, "malloc");
    for (size_t i = 0; i < k.L.total; i++)
        flat[i] = fx_val(11, i);
    cl_mem tmp = fx_buffer(k.L.plen, 0.0f);
    scatter_t(&k.L, 0, tmp, CLOPT_DTYPE_BF16, flat);
    read_bytes(tmp, init, k.pbytes);
    clReleaseMemObject(tmp);
    free(flat);

    MPI_Comm two;
    MPI_Comm_split(MPI_COMM_WORLD, fx_rank < 2 ? 0 : MPI_UNDEFINED, fx_rank, &two);
    if (two != MPI_COMM_NULL) {
        cl_mem p, g;
        clopt_mpi_optimizer *sh = ck_open(&k, two, init, &p, &g);
        ck_steps(&k, g, 1, 3, sh, NULL);
        read_bytes(p, saved, k.pbytes);
        CHECK_OK(ck_save(&k, sh, path));
        ck_steps(&k, g, 4, 5, sh, NULL);
        read_bytes(p, cont, k.pbytes);
        ck_close(sh, p, g);
        MPI_Comm_free(&two);
    }
    MPI_Bcast(saved, (int)k.pbytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    MPI_Bcast(cont, (int)k.pbytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    CHECK(memcmp(saved, cont, k.pbytes) != 0, "steps 4-5 moved nothing");

    /* the whole world, then one rank */
    for (int self = 0; self < 2; self++) {
        cl_mem p, g;
        clopt_mpi_optimizer *sh = ck_open(&k, self ? MPI_COMM_SELF : MPI_COMM_WORLD, saved, &p, &g);
        CHECK_OK(ck_load(&k, sh, path));
        CHECK(clopt_mpi_optimizer_step_count(sh) == 3, "loaded step count");
        ck_steps(&k, g, 4, 5, sh, NULL);
        read_bytes(p, got, k.pbytes);
        CHECK(memcmp(got, cont, k.pbytes) == 0, "master %d, %s form, %s: resumed differently",
              master, shards ? "per-rank" : "gathered", self ? "one rank" : "the world");
        ck_close(sh, p, g);
    }
    if (!shards) { /* the unsharded optimizer */
        cl_mem p = fx_buffer(k.L.plen, 0.0f), g = fx_buffer(k.L.glen, 0.0f);
        const cl_int e =
            clEnqueueWriteBuffer(queue(), p, CL_TRUE, 0, k.pbytes, saved, 0, NULL, NULL);
        CHECK(e == CL_SUCCESS, "clEnqueueWriteBuffer: %d", (int)e);
        clopt_optimizer *un =
            fx_reference_typed(CLOPT_ADAMW, &k.hp, &k.L, p, g, k.pdt, CLOPT_DTYPE_BF16);
        char why[256];
        const clopt_status s = clopt_mpi_checkpoint_load_unsharded(fx_ctx, un, path, why,
                                                                   sizeof why);
        CHECK(s == CLOPT_SUCCESS, "load_unsharded: %s: %s", clopt_mpi_status_name(s), why);
        ck_steps(&k, g, 4, 5, NULL, un);
        read_bytes(p, got, k.pbytes);
        CHECK(memcmp(got, cont, k.pbytes) == 0, "master %d: unsharded resumed differently",
              master);
        clopt_optimizer_destroy(un);
        clReleaseMemObject(p);
        clReleaseMemObject(g);
    }

    /* saved before the first step: an fp32 master is then taken from θ at the first step
       after the load, as in a run that never saved; into an optimizer that has stepped it
       is refused on every rank, nothing changed */
    cl_mem p, g, p2, g2;
    clopt_mpi_optimizer *sh = ck_open(&k, MPI_COMM_WORLD, init, &p, &g);
    CHECK_OK(ck_save(&k, sh, path));
    clopt_mpi_optimizer *fresh = ck_open(&k, MPI_COMM_WORLD, init, &p2, &g2);
    CHECK_OK(ck_load(&k, fresh, path));
    ck_steps(&k, g2, 1, 3, fresh, NULL);
    ck_steps(&k, g, 1, 3, sh, NULL);
    read_bytes(p, cont, k.pbytes);
    read_bytes(p2, got, k.pbytes);
    CHECK(memcmp(got, cont, k.pbytes) == 0, "master %d: a step-0 checkpoint changed the run",
          master);
    const clopt_status s = ck_load(&k, sh, path);
    if (master == CLOPT_MASTER_F32) {
        CHECK(s == CLOPT_ERR_STATE_MISMATCH || s == (clopt_status)CLOPT_MPI_ERR_REMOTE,
              "a step-0 master into a stepped optimizer: %s", clopt_mpi_status_name(s));
        CHECK(clopt_mpi_optimizer_step_count(sh) == 3, "the refused load changed the count");
        ck_steps(&k, g, 4, 4, sh, NULL);
        ck_steps(&k, g2, 4, 4, fresh, NULL);
        read_bytes(p, cont, k.pbytes);
        read_bytes(p2, got, k.pbytes);
        CHECK(memcmp(got, cont, k.pbytes) == 0, "the refused load changed the state");
    } else { /* a remainder of zeros is a state like any other */
        CHECK_OK(s);
        CHECK(clopt_mpi_optimizer_step_count(sh) == 0, "count after loading step 0");
    }
    ck_close(sh, p, g);
    ck_close(fresh, p2, g2);
    free(init);
    free(saved);
    free(cont);
    free(got);
}

static void test_refusals(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &hp));
    fx_expect_create("tensor 0 f16, the others bf16", CLOPT_ADAMW, &hp, CLOPT_DTYPE_F16,
                     CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, -1, CLOPT_ERR_INVALID_ARGUMENT,
                     "param_dtype");
    const clopt_dtype mine = fx_rank == 1 ? CLOPT_DTYPE_BF16 : CLOPT_DTYPE_F16;
    fx_expect_create("storage differing between ranks", CLOPT_ADAMW, &hp, mine, mine,
                     CLOPT_DTYPE_BF16, -1, (clopt_status)CLOPT_MPI_ERR_MISMATCH, NULL);
    /* a remainder for f16 parameters: the core refuses it, on every rank with a piece */
    clopt_hparams rem = hp;
    rem.master = CLOPT_MASTER_REMAINDER;
    fx_expect_create("remainder with f16", CLOPT_ADAMW, &rem, CLOPT_DTYPE_F16, CLOPT_DTYPE_F16,
                     CLOPT_DTYPE_BF16, -1, CLOPT_ERR_INVALID_ARGUMENT, NULL);
    /* stochastic rounding's stream: out of range, or another on one rank */
    clopt_hparams sr = hp;
    sr.stochastic_rounding = 1;
    fx_expect_create("sr_stream -5", CLOPT_ADAMW, &sr, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16,
                     CLOPT_DTYPE_BF16, -5, CLOPT_ERR_INVALID_ARGUMENT, "sr_stream");
    fx_expect_create("sr_stream differing between ranks", CLOPT_ADAMW, &sr, CLOPT_DTYPE_BF16,
                     CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, fx_rank == 1 ? 7 : -1,
                     (clopt_status)CLOPT_MPI_ERR_MISMATCH, NULL);
    /* the state's storage is fixed at create: refused on every rank, also on rank 0, which
       owns nothing of a vector of world - 1 elements */
    fx_layout L;
    fx_layout_vector(&L, (size_t)fx_size - 1);
    cl_mem p = fx_buffer(L.plen, 0.0f), g = fx_buffer(L.glen, 0.0f);
    clopt_mpi_optimizer *sh = sharded(CLOPT_ADAMW, &hp, MPI_COMM_WORLD, &L, p, g,
                                      CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, NULL, "vector");
    size_t first = 0, count = 0;
    CHECK_OK(clopt_mpi_optimizer_shard(sh, &first, &count, NULL));
    CHECK(fx_rank != 0 || count == 0, "rank 0 owns %zu elements", count);
    clopt_hparams h8 = hp, hm = hp;
    h8.state_dtype = CLOPT_DTYPE_BF16;
    hm.master = CLOPT_MASTER_F32;
    CHECK_STATUS(clopt_mpi_optimizer_set_hparams(sh, &h8), CLOPT_ERR_STATE_MISMATCH);
    CHECK_STATUS(clopt_mpi_optimizer_set_hparams(sh, &hm), CLOPT_ERR_STATE_MISMATCH);
    clopt_hparams now;
    CHECK_OK(clopt_mpi_optimizer_get_hparams(sh, &now));
    CHECK(now.state_dtype == CLOPT_DTYPE_F32 && now.master == CLOPT_MASTER_NONE,
          "a refused change was kept");
    clopt_mpi_optimizer_destroy(sh);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
    test_reduce_scatter(1);
    test_reduce_scatter(0);
    test_clip_f16();
    test_sr_groups(0);
    test_sr_groups(1);
    char path[256];
    long pid = (long)getpid();
    MPI_Bcast(&pid, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    snprintf(path, sizeof path, "/tmp/clopt_mpi_storage_%ld.ckpt", pid);
    for (int shards = 0; shards < 2; shards++) {
        test_checkpoint(CLOPT_MASTER_F32, shards, 0, path);
        test_checkpoint(CLOPT_MASTER_REMAINDER, shards, 0, path);
        test_checkpoint(CLOPT_MASTER_F32, shards, 1, path);
    }
    if (fx_rank == 0)
        fx_remove_checkpoint(path);
    test_refusals();
    return fx_finish("test_mpi_storage");
}
