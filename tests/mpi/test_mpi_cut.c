/* SPDX-License-Identifier: MIT */
/* The rules with per-tensor reductions on shards that cut tensors (engine gradient mode),
 * against the unsharded optimizer over the same layout:
 *  - LAMB (also with GC, with an active clip, and under AMP with an Inf on the last rank,
 *    which skips the step everywhere) and StableAdamW: a tensor split over ranks gets the
 *    same trust ratio / RMS as unsharded from its pieces' sums added in rank order, so the
 *    parameters agree to float rounding of those sums (within 1e-4 of the distance the
 *    parameters travelled; the moments, which do not depend on the sums, bit for bit); two
 *    runs are bit-identical;
 *  - cautious AdamW and Lion (the pieces' mask counts are integers, added exactly), AdamW and
 *    Ranger with gradient centralization (the boundaries move between rows, so every row
 *    mean is a rank's own): bit for bit;
 *  - Adafactor, with and without its first moment (a cut tensor is updated whole by each of
 *    its holders, statistics replicated): bit for bit, every holder's whole state equal to the
 *    unsharded one; also with clopt's reduce-scatter (rank 0's gradient plus zeros, so the
 *    sum is exact).
 * Faults: an OpenCL failure injected at every fallible call of the last rank's step (LAMB
 * with cut tensors, tests/clshim.c): no rank waits forever in a cut tensor's collective
 * (the test would hang), most faults fail the step, and every rank's step works again
 * afterwards.
 * Layouts: 8x40, 33, 6x7x5 (the 8x40 matrix cut with 2 ranks, both matrices with 3, also
 * between rows under GC) and the main one of the other tests. */
#include "mpi_fixture.h"

#include "clshim.h"

#include <math.h>
#include <string.h>

#define STEPS 5

typedef struct cut_case {
    const char *name;
    clopt_rule rule;
    int exact;                                  /* bit-identical to unsharded */
    int gc, cautious;
    double clip_threshold;                      /* StableAdamW (0: the default) */
    int beta1;                                  /* Adafactor's first moment */
} cut_case;

static const cut_case cases[] = {
    {"lamb", CLOPT_LAMB, 0, 0, 0, 0, 0},
    {"lamb GC", CLOPT_LAMB, 0, 1, 0, 0, 0},
    {"stable_adamw", CLOPT_STABLE_ADAMW, 0, 0, 0, 0.5, 0},
    {"adamw cautious", CLOPT_ADAMW, 1, 0, 1, 0, 0},
    {"lion cautious", CLOPT_LION, 1, 0, 1, 0, 0},
    {"adamw GC", CLOPT_ADAMW, 1, 1, 0, 0, 0},
    {"ranger (GC)", CLOPT_RANGER, 1, 1, 0, 0, 0},
    {"adafactor", CLOPT_ADAFACTOR, 1, 0, 0, 0, 0},
    {"adafactor beta1", CLOPT_ADAFACTOR, 1, 0, 0, 0, 1},
};

/* 1 on every rank when some shard boundary falls strictly inside a tensor of L. */
static int any_cut(clopt_mpi_optimizer *sh, const fx_layout *L)
{
    size_t first, count;
    CHECK_OK(clopt_mpi_optimizer_shard(sh, &first, &count, NULL));
    int cut = 0, all = 0;
    for (size_t i = 0, flat = 0; count && i < L->nt; flat += L->n[i++])
        cut |= first > flat && first < flat + L->n[i];
    MPI_Allreduce(&cut, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return all;
}

typedef struct run_opts {
    double clip;    /* max_norm on both (0: off) */
    int amp_inf;    /* AMP on; step 2's gradient has an Inf in the last rank's shard */
    int rs;         /* clopt's reduce-scatter (sum): rank 0 passes g, the others zeros */
} run_opts;

/* Runs case c on layout L sharded and unsharded; the sharded final buffer into out (plen). */
static void run(const cut_case *c, const fx_layout *L, const run_opts *ro, float *out)
{
    char what[160];
    snprintf(what, sizeof what, "%s, %zu elements%s%s%s", c->name, L->total,
             ro->clip > 0 ? ", clip" : "", ro->amp_inf ? ", AMP" : "",
             ro->rs ? ", reduce-scatter" : "");
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(c->rule, &hp));
    hp.grad_centralization = c->gc;
    hp.cautious = c->cautious;
    if (c->clip_threshold > 0)
        hp.clip_threshold = c->clip_threshold;
    if (c->rule == CLOPT_LAMB)
        hp.weight_decay = 0.01;
    hp.use_beta1 = c->beta1;
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    if (ro->rs) {
        o.grad_mode = CLOPT_MPI_GRAD_REDUCE_SCATTER;
        o.reduce_op = CLOPT_MPI_SUM;
    }
    cl_mem p = fx_buffer(L->plen, 1234.5f), g = fx_buffer(L->glen, -77.0f);
    cl_mem rp = fx_buffer(L->plen, 1234.5f), rg = fx_buffer(L->glen, -77.0f);
    float *flat = malloc(L->total * sizeof *flat), *b = malloc(L->plen * sizeof *b);
    float *init = malloc(L->plen * sizeof *init);
    CHECK(flat && b && init, "malloc");
    for (size_t i = 0; i < L->total; i++) /* the second tensor's weights larger: norms differ */
        flat[i] = fx_val(3, i) * (i >= L->n[0] && i < L->n[0] + L->n[1] ? 4.0f : 1.0f);
    fx_scatter(L, 0, p, flat);
    fx_scatter(L, 0, rp, flat);
    fx_read(p, init, L->plen);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(L, p, g, d, &desc);
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create(fx_ctx, c->rule, &hp, MPI_COMM_WORLD, &desc,
                                                      &o, &sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "%s: create: %s: %s", what, clopt_mpi_status_name(s), why);
    CHECK(fx_size == 1 || any_cut(sh, L), "%s: no tensor is cut", what);
    clopt_optimizer *ref = fx_reference(c->rule, &hp, L, rp, rg);
    const double scale = ro->amp_inf ? 1024.0 : 0.0;
    if (ro->clip > 0) {
        CHECK_OK(clopt_mpi_optimizer_set_grad_clip(sh, ro->clip));
        CHECK_OK(clopt_optimizer_set_grad_clip(ref, ro->clip));
    }
    if (scale > 0) {
        CHECK_OK(clopt_mpi_optimizer_set_grad_scale(sh, scale));
        CHECK_OK(clopt_optimizer_set_grad_scale(ref, scale));
    }
    uint64_t applied = 0;
    for (unsigned t = 1; t <= STEPS; t++) {
        const int inf = ro->amp_inf && t == 2;
        for (size_t i = 0; i < L->total; i++) /* the reduced g, scaled by the loss scale */
            flat[i] = fx_val(300 + t, i) * (i % 7 == 0 ? 1e-2f : 1.0f) *
                      (float)(scale > 0 ? scale : 1.0);
        if (inf)
            flat[L->total - 1] = INFINITY; /* in the last rank's shard */
        fx_scatter(L, 1, rg, flat);
        if (ro->rs && fx_rank != 0) /* g + 0 + ... + 0 = g, exactly */
            for (size_t i = 0; i < L->total; i++)
                flat[i] = 0.0f;
        fx_scatter(L, 1, g, flat);
        float *before = malloc(L->plen * sizeof *before);
        CHECK(before != NULL, "malloc");
        fx_read(p, before, L->plen);
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == (inf ? CLOPT_STEP_SKIPPED : CLOPT_SUCCESS), "%s: step %u: %s: %s", what, t,
              clopt_mpi_status_name(st), clopt_mpi_optimizer_last_error(sh));
        CHECK_STATUS(clopt_optimizer_step(ref, NULL), inf ? CLOPT_STEP_SKIPPED : CLOPT_SUCCESS);
        fx_read(p, out, L->plen);
        fx_read(rp, b, L->plen);
        if (inf) {
            CHECK(memcmp(out, before, L->plen * sizeof *out) == 0, "%s: a skipped step moved θ",
                  what);
            free(before);
            continue;
        }
        free(before);
        applied++;
        if (c->exact) {
            for (size_t i = 0; i < L->plen; i++)
                CHECK(memcmp(&out[i], &b[i], sizeof *b) == 0,
                      "%s: step %u: element %zu: sharded %.9g, unsharded %.9g", what, t, i,
                      (double)out[i], (double)b[i]);
            continue;
        }
        double moved = 0.0, worst = 0.0;
        for (size_t i = 0; i < L->plen; i++) {
            moved = fmax(moved, fabs((double)b[i] - init[i]));
            worst = fmax(worst, fabs((double)out[i] - b[i]));
        }
        CHECK(moved > 1e-4, "%s: step %u: the parameters did not move", what, t);
        CHECK(worst <= 1e-4 * moved, "%s: step %u: %.3g off the unsharded step (moved %.3g)",
              what, t, worst, moved);
    }
    CHECK(clopt_mpi_optimizer_step_count(sh) == applied, "%s: step count", what);
    if (c->rule == CLOPT_ADAFACTOR)
        fx_check_whole_states(what, sh, ref, L);
    else if (ro->clip == 0) /* the moments do not depend on the sums (but on the clip's norm,
                               which is summed in another order: see test_mpi_checks) */
        fx_check_states(what, sh, ref, L);
    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(b);
    free(init);
}

/* LAMB on the wide layout; the last rank fails its k-th fallible OpenCL call of a step, for
   every k of a step's calls. */
static void run_faults(void)
{
    fx_layout Lw;
    fx_layout_wide(&Lw);
    const fx_layout *L = &Lw;
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(CLOPT_LAMB, &hp));
    cl_mem p = fx_buffer(L->plen, 0.5f), g = fx_buffer(L->glen, 0.25f);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(L, p, g, d, &desc);
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    CHECK_OK(clopt_mpi_optimizer_create(fx_ctx, CLOPT_LAMB, &hp, MPI_COMM_WORLD, &desc, NULL,
                                        &sh, why, sizeof why));
    const int last = fx_rank == fx_size - 1;
    CHECK_OK(clopt_mpi_optimizer_step(sh, NULL)); /* kernels built: a step's calls only */
    unsigned long long calls = 0;
    if (last) {
        clshim_reset();
        clshim_enable(1);
    }
    CHECK_OK(clopt_mpi_optimizer_step(sh, NULL)); /* collective: every rank */
    if (last) {
        clshim_enable(0);
        calls = clshim_calls();
    }
    MPI_Bcast(&calls, 1, MPI_UNSIGNED_LONG_LONG, fx_size - 1, MPI_COMM_WORLD);
    CHECK(calls > 10, "%llu fallible calls in a step", calls);
    unsigned long long failed_here = 0;
    for (unsigned long long k = 1; k <= calls; k++) {
        if (last) {
            clshim_reset();
            clshim_fail_nth(k, CL_OUT_OF_RESOURCES);
            clshim_enable(1);
        }
        const clopt_status s = clopt_mpi_optimizer_step(sh, NULL);
        if (last) { /* (some calls have fallbacks: a failed query need not fail the step) */
            clshim_enable(0);
            CHECK(clshim_fault_fired(), "call %llu of %llu: no fault", k, calls);
            failed_here += s != CLOPT_SUCCESS;
            clshim_fail_nth(0, CL_SUCCESS);
        }
        /* every rank steps again (the collectives still pair up) */
        MPI_Barrier(MPI_COMM_WORLD);
        const clopt_status s2 = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(s2 == CLOPT_SUCCESS, "after the fault at call %llu: %s: %s", k,
              clopt_mpi_status_name(s2), clopt_mpi_optimizer_last_error(sh));
    }
    CHECK(!last || failed_here > 0, "no injected fault failed a step");
    if (last && getenv("FX_TRACE"))
        fprintf(stderr, "faults: %llu calls, %llu failed steps\n", calls, failed_here);
    clopt_mpi_optimizer_destroy(sh);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    fx_layout wide, main_l;
    fx_layout_wide(&wide);
    fx_layout_main(&main_l);
    float *a = malloc(wide.plen * sizeof *a), *a2 = malloc(wide.plen * sizeof *a2);
    CHECK(a && a2, "malloc");
    const run_opts plain = {0, 0, 0}, clip = {0.5, 0, 0}, amp = {0, 1, 0}, rs = {0, 0, 1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        run(&cases[c], &wide, &plain, a);
    run(&cases[0], &main_l, &plain, a); /* five small tensors, cut with 2 and 3 ranks */
    run(&cases[3], &main_l, &plain, a);
    run(&cases[7], &main_l, &plain, a);
    run(&cases[8], &wide, &rs, a); /* Adafactor's cut tensors' gradients gathered */
    run(&cases[0], &wide, &rs, a); /* LAMB's sums after clopt's reduce-scatter */
    /* LAMB: run to run bit-identical; an active clip; an AMP skip decided on every rank */
    run(&cases[0], &wide, &plain, a);
    run(&cases[0], &wide, &plain, a2);
    CHECK(memcmp(a, a2, wide.plen * sizeof *a) == 0, "lamb: two runs differ");
    run(&cases[0], &wide, &clip, a);
    run(&cases[0], &wide, &amp, a);
    free(a);
    free(a2);
    run_faults();
    return fx_finish("test_mpi_cut");
}
