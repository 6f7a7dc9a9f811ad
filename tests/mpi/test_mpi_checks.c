/* SPDX-License-Identifier: MIT */
/* The global checks across shards and the ranks' agreement on failures:
 *  - global-norm clipping: the norm is the whole gradient's (against a double sum here and
 *    the unsharded optimizer's), the clipped step agrees with the unsharded one within float
 *    rounding, and an inactive clip leaves the step bit-identical;
 *  - AMP: with a loss scale the steps are bit-identical to the unsharded optimizer's; an Inf
 *    in one rank's shard skips the step on every rank (nothing changes, the count stays);
 *  - a failure on one rank fails the call on every rank (MISMATCH, REMOTE; a step with a bad
 *    queue on one rank changes nothing anywhere), reduce-scatter + AMP skips everywhere,
 *    refused rules. */
#include "mpi_fixture.h"

#include <math.h>
#include <string.h>

typedef struct pair {
    fx_layout L;
    cl_mem p, g, rp, rg;
    clopt_mpi_optimizer *sh;
    clopt_optimizer *ref;
    float *flat, *a, *b;
} pair;

static void pair_open(pair *P, clopt_rule rule, const clopt_hparams *hp)
{
    memset(P, 0, sizeof *P);
    fx_layout_main(&P->L);
    const fx_layout *L = &P->L;
    P->p = fx_buffer(L->plen, 1234.5f);
    P->g = fx_buffer(L->glen, 0.0f);
    P->rp = fx_buffer(L->plen, 1234.5f);
    P->rg = fx_buffer(L->glen, 0.0f);
    P->flat = malloc(L->total * sizeof *P->flat);
    P->a = malloc(L->plen * sizeof *P->a);
    P->b = malloc(L->plen * sizeof *P->b);
    CHECK(P->flat && P->a && P->b, "malloc");
    for (size_t i = 0; i < L->total; i++)
        P->flat[i] = fx_val(3, i);
    fx_scatter(L, 0, P->p, P->flat);
    fx_scatter(L, 0, P->rp, P->flat);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(L, P->p, P->g, d, &desc);
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create(fx_ctx, rule, hp, MPI_COMM_WORLD, &desc, NULL,
                                                      &P->sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "create: %s: %s", clopt_mpi_status_name(s), why);
    P->ref = fx_reference(rule, hp, L, P->rp, P->rg);
}

static void pair_close(pair *P)
{
    clopt_mpi_optimizer_destroy(P->sh);
    clopt_optimizer_destroy(P->ref);
    clReleaseMemObject(P->p);
    clReleaseMemObject(P->g);
    clReleaseMemObject(P->rp);
    clReleaseMemObject(P->rg);
    free(P->flat);
    free(P->a);
    free(P->b);
}

/* The same full gradient (times mul) on every rank and in the reference; returns its norm
   (of the values before mul) in double. */
static double pair_grad(pair *P, unsigned t, float mul)
{
    double ss = 0;
    for (size_t i = 0; i < P->L.total; i++) {
        const float v = fx_val(50 + t, i);
        ss += (double)v * v;
        P->flat[i] = v * mul;
    }
    fx_scatter(&P->L, 1, P->g, P->flat);
    fx_scatter(&P->L, 1, P->rg, P->flat);
    return sqrt(ss);
}

/* Max |sharded - unsharded| over the parameters; *bitwise 1 when every bit agrees. */
static double pair_diff(pair *P, int *bitwise)
{
    fx_read(P->p, P->a, P->L.plen);
    fx_read(P->rp, P->b, P->L.plen);
    *bitwise = memcmp(P->a, P->b, P->L.plen * sizeof *P->a) == 0;
    double m = 0;
    for (size_t i = 0; i < P->L.plen; i++)
        m = fmax(m, fabs((double)P->a[i] - (double)P->b[i]));
    return m;
}

static void test_clip(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_SGD, &hp));
    hp.lr = 0.1;
    hp.momentum = 0.9;
    pair P;
    pair_open(&P, CLOPT_SGD, &hp);
    CHECK_OK(clopt_mpi_optimizer_set_grad_clip(P.sh, 0.5));
    CHECK_OK(clopt_optimizer_set_grad_clip(P.ref, 0.5));
    int bitwise;
    for (unsigned t = 1; t <= 3; t++) {
        const double norm = pair_grad(&P, t, 1.0f);
        CHECK_OK(clopt_mpi_optimizer_step(P.sh, NULL));
        CHECK_OK(clopt_optimizer_step(P.ref, NULL));
        const double got = clopt_mpi_optimizer_last_grad_norm(P.sh);
        CHECK(fabs(got - norm) <= 1e-12 * norm, "step %u: global norm %.17g, wanted %.17g", t, got,
              norm);
        const double rn = clopt_optimizer_last_grad_norm(P.ref);
        CHECK(fabs(got - rn) <= 1e-6 * norm, "step %u: norm %.9g, unsharded %.9g", t, got, rn);
        const double d = pair_diff(&P, &bitwise);
        CHECK(d <= 1e-6, "step %u: clipped step differs from unsharded by %g", t, d);
    }
    pair_close(&P);
    /* an inactive clip (the norm measured, the coefficient 1) is bit-identical */
    pair_open(&P, CLOPT_SGD, &hp);
    CHECK_OK(clopt_mpi_optimizer_set_grad_clip(P.sh, 1e6));
    CHECK_OK(clopt_optimizer_set_grad_clip(P.ref, 1e6));
    for (unsigned t = 1; t <= 2; t++) {
        pair_grad(&P, t, 1.0f);
        CHECK_OK(clopt_mpi_optimizer_step(P.sh, NULL));
        CHECK_OK(clopt_optimizer_step(P.ref, NULL));
        pair_diff(&P, &bitwise);
        CHECK(bitwise, "step %u: an inactive clip changed the bits", t);
    }
    pair_close(&P);
}

static void test_amp(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &hp));
    pair P;
    pair_open(&P, CLOPT_ADAMW, &hp);
    CHECK_OK(clopt_mpi_optimizer_set_grad_scale(P.sh, 1024.0));
    CHECK_OK(clopt_optimizer_set_grad_scale(P.ref, 1024.0));
    int bitwise;
    for (unsigned t = 1; t <= 4; t++) {
        pair_grad(&P, t, 1024.0f);
        if (t == 3) { /* an Inf in the last element: the last rank's shard only */
            const float inf = INFINITY;
            const size_t last = P.L.nt - 1;
            const size_t at = (P.L.goff[last] + P.L.n[last] - 1) * sizeof(float);
            cl_command_queue q = clopt_ctx_cl_queue(fx_ctx);
            CHECK(clEnqueueWriteBuffer(q, P.g, CL_TRUE, at, 4, &inf, 0, NULL, NULL) == CL_SUCCESS,
                  "write");
            CHECK(clEnqueueWriteBuffer(q, P.rg, CL_TRUE, at, 4, &inf, 0, NULL, NULL) == CL_SUCCESS,
                  "write");
            fx_read(P.p, P.a, P.L.plen);
            float *before = malloc(P.L.plen * sizeof *before);
            CHECK(before != NULL, "malloc");
            memcpy(before, P.a, P.L.plen * sizeof *before);
            CHECK_STATUS(clopt_mpi_optimizer_step(P.sh, NULL), CLOPT_STEP_SKIPPED);
            CHECK_STATUS(clopt_optimizer_step(P.ref, NULL), CLOPT_STEP_SKIPPED);
            fx_read(P.p, P.a, P.L.plen);
            CHECK(memcmp(before, P.a, P.L.plen * sizeof *before) == 0,
                  "a skipped step changed the parameters");
            CHECK(clopt_mpi_optimizer_step_count(P.sh) == 2, "a skipped step was counted");
            free(before);
            continue;
        }
        CHECK_OK(clopt_mpi_optimizer_step(P.sh, NULL));
        CHECK_OK(clopt_optimizer_step(P.ref, NULL));
        pair_diff(&P, &bitwise);
        CHECK(bitwise, "step %u: AMP step differs from unsharded", t);
    }
    CHECK(clopt_mpi_optimizer_step_count(P.sh) == 3, "step count");
    /* AMP and clipping together: the norm is of the unscaled gradient */
    CHECK_OK(clopt_mpi_optimizer_set_grad_clip(P.sh, 0.25));
    CHECK_OK(clopt_optimizer_set_grad_clip(P.ref, 0.25));
    const double norm = pair_grad(&P, 9, 1024.0f);
    CHECK_OK(clopt_mpi_optimizer_step(P.sh, NULL));
    CHECK_OK(clopt_optimizer_step(P.ref, NULL));
    CHECK(fabs(clopt_mpi_optimizer_last_grad_norm(P.sh) - norm) <= 1e-12 * norm, "AMP norm");
    CHECK(pair_diff(&P, &bitwise) <= 1e-6, "AMP + clip step");
    pair_close(&P);
}

/* A step that fails on one rank (a queue of another context there) fails on every rank and
   changes nothing anywhere; then reduce-scatter mode with AMP: an Inf in one rank's local
   gradient reaches one shard after the reduction, and every rank skips. */
static void test_step_agreement(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &hp));
    pair P;
    pair_open(&P, CLOPT_ADAMW, &hp);
    pair_grad(&P, 1, 1.0f);
    CHECK_OK(clopt_mpi_optimizer_step(P.sh, NULL));
    fx_read(P.p, P.a, P.L.plen);
    clopt_ctx *other = NULL;
    if (fx_rank == fx_size - 1)
        CHECK_OK(clopt_ctx_create(&other));
    pair_grad(&P, 2, 1.0f);
    const clopt_status s = clopt_mpi_optimizer_step(P.sh, other ? clopt_ctx_cl_queue(other) : NULL);
    CHECK(s == (other ? CLOPT_ERR_INVALID_ARGUMENT : (clopt_status)CLOPT_MPI_ERR_REMOTE),
          "a bad queue on the last rank: %s", clopt_mpi_status_name(s));
    fx_read(P.p, P.b, P.L.plen);
    CHECK(memcmp(P.a, P.b, P.L.plen * sizeof *P.a) == 0, "a failed step changed the parameters");
    CHECK(clopt_mpi_optimizer_step_count(P.sh) == 1, "a failed step was counted");
    CHECK_OK(clopt_mpi_optimizer_step(P.sh, NULL)); /* and the next one works */
    clopt_ctx_destroy(other);
    pair_close(&P);

    /* reduce-scatter + AMP */
    fx_layout L;
    fx_layout_main(&L);
    cl_mem p = fx_buffer(L.plen, 0.5f), g = fx_buffer(L.glen, 0.0f);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(&L, p, g, d, &desc);
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.grad_mode = CLOPT_MPI_GRAD_REDUCE_SCATTER;
    clopt_mpi_optimizer *sh = NULL;
    char why[256];
    const clopt_status cs = clopt_mpi_optimizer_create(fx_ctx, CLOPT_ADAMW, &hp, MPI_COMM_WORLD,
                                                       &desc, &o, &sh, why, sizeof why);
    CHECK(cs == CLOPT_SUCCESS, "create: %s", why);
    /* the sharded optimizer holds the engine's θ and g on every rank (reduce-scattered, g is
       read by the step but not registered with the core's range group) */
    cl_mem mine[2] = {p, g};
    for (int b = 0; b < 2; b++) {
        cl_uint refs = 0;
        CHECK(clGetMemObjectInfo(mine[b], CL_MEM_REFERENCE_COUNT, sizeof refs, &refs, NULL) ==
                  CL_SUCCESS && refs >= 2,
              "the engine's %s buffer is not held (%u references)", b ? "gradient" : "parameter",
              refs);
    }
    CHECK_OK(clopt_mpi_optimizer_set_grad_scale(sh, 256.0));
    float *flat = malloc(L.total * sizeof *flat), *before = malloc(L.plen * sizeof *before);
    float *after = malloc(L.plen * sizeof *after);
    CHECK(flat && before && after, "malloc");
    for (size_t i = 0; i < L.total; i++)
        flat[i] = 256.0f * fx_val(70 + (unsigned)fx_rank, i);
    if (fx_rank == 0)
        flat[L.total - 1] = NAN; /* in the last rank's shard after the reduction */
    fx_scatter(&L, 1, g, flat);
    fx_read(p, before, L.plen);
    CHECK_STATUS(clopt_mpi_optimizer_step(sh, NULL), CLOPT_STEP_SKIPPED);
    fx_read(p, after, L.plen);
    CHECK(memcmp(before, after, L.plen * sizeof *after) == 0, "a skipped step changed θ");
    CHECK(clopt_mpi_optimizer_step_count(sh) == 0, "a skipped step was counted");
    flat[L.total - 1] = 1.0f;
    fx_scatter(&L, 1, g, flat);
    CHECK_OK(clopt_mpi_optimizer_step(sh, NULL));
    CHECK(clopt_mpi_optimizer_step_count(sh) == 1, "step count");
    clopt_mpi_optimizer_destroy(sh);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    free(flat);
    free(before);
    free(after);
}

static void test_errors(void)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_ADAMW, &hp));
    /* rank 1 sets another lr: every rank reports the mismatch */
    clopt_hparams h1 = hp;
    if (fx_rank == 1)
        h1.lr *= 2;
    fx_expect_create("another lr on rank 1", CLOPT_ADAMW, &h1, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32,
                     CLOPT_DTYPE_F32, -1, (clopt_status)CLOPT_MPI_ERR_MISMATCH, NULL);
    /* rank 0 makes tensor 0 bf16 and the others float32 (one buffer holds one type): rank 0
       says why, the others REMOTE (16-bit storage itself: test_mpi_storage) */
    fx_expect_create("tensor 0 bf16 on rank 0", CLOPT_ADAMW, &hp,
                     fx_rank == 0 ? CLOPT_DTYPE_BF16 : CLOPT_DTYPE_F32, CLOPT_DTYPE_F32,
                     CLOPT_DTYPE_F32, -1,
                     fx_rank == 0 ? CLOPT_ERR_INVALID_ARGUMENT : (clopt_status)CLOPT_MPI_ERR_REMOTE,
                     NULL);
    /* rank 0 passes an invalid hyperparameter */
    clopt_hparams h2 = hp;
    if (fx_rank == 0)
        h2.beta1 = 1.5;
    fx_expect_create("beta1 1.5 on rank 0", CLOPT_ADAMW, &h2, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32,
                     CLOPT_DTYPE_F32, -1,
                     fx_rank == 0 ? CLOPT_ERR_INVALID_HYPERPARAM
                                  : (clopt_status)CLOPT_MPI_ERR_REMOTE,
                     NULL);
    /* Muon needs whole tensors, on shards that cut them (LAMB, StableAdamW, cautious, GC and
       Adafactor work there: test_mpi_cut) */
    clopt_hparams hl;
    CHECK_OK(clopt_hparams_default(CLOPT_MUON, &hl));
    fx_expect_create("muon, cut tensors", CLOPT_MUON, &hl, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32,
                     CLOPT_DTYPE_F32, -1, CLOPT_ERR_UNSUPPORTED, NULL);
    /* 8-bit state for a rule without it (LAMB): the core's refusal, on every rank (8-bit
       state itself: test_mpi_storage) */
    clopt_hparams h8;
    CHECK_OK(clopt_hparams_default(CLOPT_LAMB, &h8));
    h8.state_dtype = CLOPT_DTYPE_U8;
    fx_expect_create("lamb, 8-bit state", CLOPT_LAMB, &h8, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32,
                     CLOPT_DTYPE_F32, -1, CLOPT_ERR_UNSUPPORTED, NULL);
    /* a garbage struct_size in the options or in a group's desc (every rank): refused before
       anything past the struct is read, as the core refuses it (both were accepted) */
    {
        fx_layout L;
        fx_layout_main(&L);
        cl_mem p = fx_buffer(L.plen, 0.5f), g = fx_buffer(L.glen, 0.0f);
        clopt_param_desc d[FX_MAX_T];
        clopt_range_group desc;
        fx_range_group(&L, p, g, d, &desc);
        clopt_mpi_options o;
        clopt_mpi_options_init(&o);
        o.struct_size = SIZE_MAX;
        clopt_mpi_optimizer *sh = NULL;
        char why[256];
        CHECK_STATUS(clopt_mpi_optimizer_create(fx_ctx, CLOPT_ADAMW, &hp, MPI_COMM_WORLD, &desc,
                                                &o, &sh, why, sizeof why),
                     CLOPT_ERR_INVALID_ARGUMENT);
        clopt_mpi_options_init(&o);
        desc.struct_size = (size_t)0xdeadbeefcafe;
        CHECK_STATUS(clopt_mpi_optimizer_create(fx_ctx, CLOPT_ADAMW, &hp, MPI_COMM_WORLD, &desc,
                                                &o, &sh, why, sizeof why),
                     CLOPT_ERR_INVALID_ARGUMENT);
        CHECK(strstr(why, "clopt_range_group_init") != NULL, "desc struct_size: %s", why);
        clReleaseMemObject(p);
        clReleaseMemObject(g);
    }
    /* local setters validate */
    pair P;
    pair_open(&P, CLOPT_ADAMW, &hp);
    CHECK_STATUS(clopt_mpi_optimizer_set_grad_clip(P.sh, -1.0), CLOPT_ERR_INVALID_HYPERPARAM);
    CHECK_STATUS(clopt_mpi_optimizer_set_grad_scale(P.sh, NAN), CLOPT_ERR_INVALID_HYPERPARAM);
    /* GC turned on after create, where a boundary cuts the 2x2x3 tensor inside a row (23 of
       46 with 2 ranks, 30 with 3): refused on every rank */
    clopt_hparams hg = hp;
    hg.grad_centralization = 1;
    CHECK_STATUS(clopt_mpi_optimizer_set_hparams(P.sh, &hg), CLOPT_ERR_UNSUPPORTED);
    CHECK(strstr(clopt_mpi_optimizer_last_error(P.sh), "inside a row") != NULL, "GC: %s",
          clopt_mpi_optimizer_last_error(P.sh));
    clopt_hparams ha = hp;
    ha.amsgrad = 1; /* a new state layout */
    CHECK_STATUS(clopt_mpi_optimizer_set_hparams(P.sh, &ha), CLOPT_ERR_STATE_MISMATCH);
    CHECK_STATUS(clopt_mpi_optimizer_step(NULL, NULL), CLOPT_ERR_NULL_ARGUMENT);
    CHECK(strcmp(clopt_mpi_status_str((clopt_status)CLOPT_MPI_ERR_REMOTE),
                 "the call failed on another rank (nothing changed here)") == 0,
          "status text");
    CHECK(strcmp(clopt_mpi_status_name(CLOPT_ERR_UNSUPPORTED), "CLOPT_ERR_UNSUPPORTED") == 0,
          "status name");
    pair_close(&P);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    test_clip();
    test_amp();
    test_step_agreement();
    test_errors();
    return fx_finish("test_mpi_checks");
}
