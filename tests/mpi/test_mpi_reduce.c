/* SPDX-License-Identifier: MIT */
/* Reduce-scatter mode: every rank passes its own gradient. With ordered_sum (the default)
 * the result equals, bit for bit, the unsharded optimizer given the gradients summed in
 * float in rank order (divided by N for the mean); with MPI_Reduce_scatter (ordered_sum 0)
 * it agrees within float rounding and is bit-identical run to run. The engine's gradient
 * buffer is only read. */
#include "mpi_fixture.h"

#include <math.h>
#include <string.h>

#define STEPS 4

/* Rank r's local gradient at step t. */
static float local_grad(int r, unsigned t, size_t i)
{
    return fx_val(1000u * t + (unsigned)r, i);
}

/* Runs STEPS sharded steps; the final parameter buffer into out (plen floats). With ref_out
   also the unsharded reference given the rank-order sum (or mean) into ref_out. */
static void run(clopt_rule rule, const fx_layout *L, const clopt_mpi_options *o, float *out,
                float *ref_out)
{
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(rule, &hp));
    if (rule == CLOPT_SGD) {
        hp.lr = 0.01;
        hp.momentum = 0.9;
    }
    cl_mem p = fx_buffer(L->plen, 1234.5f), g = fx_buffer(L->glen, -77.0f);
    cl_mem rp = fx_buffer(L->plen, 1234.5f), rg = fx_buffer(L->glen, -77.0f);
    float *flat = malloc(L->total * sizeof *flat), *sum = malloc(L->total * sizeof *sum);
    float *gb = malloc(L->glen * sizeof *gb), *gb2 = malloc(L->glen * sizeof *gb2);
    CHECK(flat && sum && gb && gb2, "malloc");
    for (size_t i = 0; i < L->total; i++)
        flat[i] = fx_val(7, i);
    fx_scatter(L, 0, p, flat);
    fx_scatter(L, 0, rp, flat);
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(L, p, g, d, &desc);
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create(fx_ctx, rule, &hp, MPI_COMM_WORLD, &desc, o,
                                                      &sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "create: %s: %s", clopt_mpi_status_name(s), why);
    clopt_optimizer *ref = ref_out ? fx_reference(rule, &hp, L, rp, rg) : NULL;
    for (unsigned t = 1; t <= STEPS; t++) {
        for (size_t i = 0; i < L->total; i++) {
            flat[i] = local_grad(fx_rank, t, i);
            float acc = local_grad(0, t, i); /* the reference: rank order, float */
            for (int r = 1; r < fx_size; r++)
                acc += local_grad(r, t, i);
            sum[i] = o->reduce_op == CLOPT_MPI_MEAN ? acc / (float)fx_size : acc;
        }
        fx_scatter(L, 1, g, flat);
        fx_read(g, gb, L->glen);
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == CLOPT_SUCCESS, "step %u: %s: %s", t, clopt_mpi_status_name(st),
              clopt_mpi_optimizer_last_error(sh));
        fx_read(g, gb2, L->glen);
        CHECK(memcmp(gb, gb2, L->glen * sizeof *gb) == 0, "the engine's gradient changed");
        if (ref) {
            fx_scatter(L, 1, rg, sum);
            CHECK_OK(clopt_optimizer_step(ref, NULL));
        }
    }
    fx_read(p, out, L->plen);
    if (ref)
        fx_read(rp, ref_out, L->plen);
    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(sum);
    free(gb);
    free(gb2);
}

/* Every rank holds the same parameters (rank 0's, compared bitwise). */
static void check_same_on_ranks(const char *what, const float *a, size_t n)
{
    float *r0 = malloc(n * sizeof *r0);
    CHECK(r0 != NULL, "malloc");
    memcpy(r0, a, n * sizeof *r0);
    MPI_Bcast(r0, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK(memcmp(r0, a, n * sizeof *r0) == 0, "%s: ranks hold different parameters", what);
    free(r0);
}

static void run_mode(clopt_rule rule, const fx_layout *L, int ordered, clopt_mpi_reduce_op op)
{
    char what[128];
    snprintf(what, sizeof what, "%s, %zu elements, %s, %s", clopt_rule_name(rule), L->total,
             ordered ? "ordered sum" : "MPI_Reduce_scatter", op == CLOPT_MPI_MEAN ? "mean" : "sum");
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.grad_mode = CLOPT_MPI_GRAD_REDUCE_SCATTER;
    o.reduce_op = op;
    o.ordered_sum = ordered;
    float *a = malloc(L->plen * sizeof *a), *b = malloc(L->plen * sizeof *b);
    float *c = malloc(L->plen * sizeof *c);
    CHECK(a && b && c, "malloc");
    run(rule, L, &o, a, b);
    check_same_on_ranks(what, a, L->plen);
    for (size_t i = 0; i < L->plen; i++) {
        if (ordered)
            CHECK(memcmp(&a[i], &b[i], sizeof *a) == 0,
                  "%s: element %zu: sharded %.9g, unsharded on the summed gradient %.9g", what, i,
                  (double)a[i], (double)b[i]);
        else
            CHECK(fabsf(a[i] - b[i]) <= 1e-5f * (1.0f + fabsf(b[i])),
                  "%s: element %zu: sharded %.9g, unsharded on the summed gradient %.9g", what, i,
                  (double)a[i], (double)b[i]);
    }
    run(rule, L, &o, c, NULL); /* again: bit-identical run to run */
    CHECK(memcmp(a, c, L->plen * sizeof *a) == 0, "%s: two runs differ", what);
    free(a);
    free(b);
    free(c);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    fx_layout main_l, tiny;
    fx_layout_main(&main_l);
    fx_layout_vector(&tiny, (size_t)(fx_size > 1 ? fx_size - 1 : 1));
    const clopt_rule rules[] = {CLOPT_ADAMW, CLOPT_SGD};
    for (size_t r = 0; r < 2; r++)
        for (int ordered = 1; ordered >= 0; ordered--) {
            run_mode(rules[r], &main_l, ordered, CLOPT_MPI_SUM);
            run_mode(rules[r], &main_l, ordered, CLOPT_MPI_MEAN);
            run_mode(rules[r], &tiny, ordered, CLOPT_MPI_SUM);
        }
    return fx_finish("test_mpi_reduce");
}
