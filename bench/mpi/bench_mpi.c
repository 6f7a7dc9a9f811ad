/* SPDX-License-Identifier: MIT */
/* clopt-bench-mpi: the sharded optimizer's memory and time per rank.
 *   mpirun -np N clopt-bench-mpi [--n ELEMENTS] [--tensors T] [--steps S] [--rule NAME]
 *                                [--reduce-scatter] [--unsharded]
 * One flat parameter buffer of ELEMENTS floats (T equal tensors, default 2^22 and 8), the
 * gradient the same on every rank (engine mode) or each rank's own (--reduce-scatter). Prints
 * one line on rank 0: world size, elements, optimizer state bytes on each rank (max) and
 * unsharded, the median step time (the slowest rank's), its phases (clopt_mpi_step_timing,
 * rank 0's median of each) and the communication share. --unsharded also times the plain
 * clopt_optimizer step over the same buffers on every rank at once (the same contention). */
#include "clopt_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n ? v[n / 2] : 0.0;
}

static void die(int rank, const char *what, clopt_status s)
{
    fprintf(stderr, "rank %d: %s: %s\n", rank, what, clopt_mpi_status_str(s));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t n = (size_t)1 << 22, nt = 8;
    int steps = 20, rs = 0, unsharded = 0;
    const char *rule_name = "adamw";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--tensors") && i + 1 < argc)
            nt = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rule") && i + 1 < argc)
            rule_name = argv[++i];
        else if (!strcmp(argv[i], "--reduce-scatter"))
            rs = 1;
        else if (!strcmp(argv[i], "--unsharded"))
            unsharded = 1;
        else {
            if (rank == 0)
                fprintf(stderr,
                        "usage: %s [--n N] [--tensors T] [--steps S] [--rule NAME] "
                        "[--reduce-scatter] [--unsharded]\n",
                        argv[0]);
            MPI_Finalize();
            return 2;
        }
    }
    if (nt == 0 || n < nt || steps < 1)
        die(rank, "arguments", CLOPT_ERR_INVALID_ARGUMENT);
    clopt_rule rule;
    clopt_status s = clopt_rule_from_name(rule_name, &rule);
    if (s != CLOPT_SUCCESS)
        die(rank, "--rule", s);
    clopt_ctx *ctx = NULL;
    if ((s = clopt_ctx_create(&ctx)) != CLOPT_SUCCESS)
        die(rank, "context", s);
    cl_int e;
    cl_context cc = clopt_ctx_cl_context(ctx);
    cl_mem p = clCreateBuffer(cc, CL_MEM_READ_WRITE, n * 4, NULL, &e);
    cl_mem g = clCreateBuffer(cc, CL_MEM_READ_WRITE, n * 4, NULL, &e);
    float *h = malloc(n * sizeof *h);
    if (!p || !g || !h)
        die(rank, "buffers", CLOPT_ERR_OUT_OF_MEMORY);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    clEnqueueWriteBuffer(q, p, CL_TRUE, 0, n * 4, h, 0, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        h[i] *= rs ? (float)(rank + 1) * 1e-2f : 1e-2f;
    clEnqueueWriteBuffer(q, g, CL_TRUE, 0, n * 4, h, 0, NULL, NULL);
    clopt_param_desc *d = calloc(nt, sizeof *d);
    if (!d)
        die(rank, "descs", CLOPT_ERR_OUT_OF_MEMORY);
    for (size_t i = 0, at = 0; i < nt; i++) {
        const size_t len = n / nt + (i < n % nt);
        clopt_param_desc_init(&d[i]);
        d[i].param = (clopt_tensor){p, at};
        d[i].grad = (clopt_tensor){g, at};
        d[i].ndim = 1;
        d[i].shape[0] = len;
        at += len;
    }
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = nt;
    rg.tensors = d;
    clopt_hparams hp;
    clopt_hparams_default(rule, &hp);
    hp.grad_centralization = 0;
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.grad_mode = rs ? CLOPT_MPI_GRAD_REDUCE_SCATTER : CLOPT_MPI_GRAD_ENGINE;
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    if ((s = clopt_mpi_optimizer_create(ctx, rule, &hp, MPI_COMM_WORLD, &rg, &o, &sh, why,
                                        sizeof why)) != CLOPT_SUCCESS) {
        fprintf(stderr, "rank %d: %s\n", rank, why);
        die(rank, "create", s);
    }
    const int warm = 2;
    double *tot = malloc((size_t)steps * sizeof *tot), *ph[7];
    for (int k = 0; k < 7; k++)
        ph[k] = malloc((size_t)steps * sizeof *ph[k]);
    for (int t = 0; t < warm + steps; t++) {
        MPI_Barrier(MPI_COMM_WORLD);
        if ((s = clopt_mpi_optimizer_step(sh, NULL)) != CLOPT_SUCCESS)
            die(rank, "step", s);
        clopt_mpi_step_timing tm;
        clopt_mpi_optimizer_last_timing(sh, &tm);
        if (t < warm)
            continue;
        double slowest = 0;
        MPI_Allreduce(&tm.total_s, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        tot[t - warm] = slowest;
        const double v[7] = {tm.read_s,   tm.reduce_s, tm.agree_s, tm.update_s,
                             tm.gather_s, tm.write_s,  tm.total_s};
        for (int k = 0; k < 7; k++)
            ph[k][t - warm] = v[k];
    }
    unsigned long long mine = clopt_mpi_optimizer_state_bytes(sh), most = 0;
    MPI_Reduce(&mine, &most, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, 0, MPI_COMM_WORLD);
    double med[7];
    for (int k = 0; k < 7; k++)
        med[k] = median(ph[k], steps);
    const double step = median(tot, steps);
    clopt_mpi_optimizer_destroy(sh);

    /* the unsharded optimizer on the same buffers (every rank at once), and its state bytes */
    double ref_ms = 0;
    size_t ref_bytes = 0;
    clopt_optimizer *ref = NULL;
    if ((s = clopt_optimizer_create(ctx, rule, &hp, &ref)) != CLOPT_SUCCESS ||
        (s = clopt_optimizer_add_range_group(ref, &hp, &rg, NULL, NULL)) != CLOPT_SUCCESS)
        die(rank, "unsharded optimizer", s);
    ref_bytes = clopt_optimizer_state_bytes(ref);
    if (unsharded) {
        for (int t = 0; t < warm + steps; t++) {
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = MPI_Wtime();
            clopt_optimizer_step(ref, NULL);
            clFinish(q);
            tot[t < warm ? 0 : t - warm] = MPI_Wtime() - t0;
        }
        ref_ms = median(tot, steps) * 1e3;
    }
    clopt_optimizer_destroy(ref);
    if (rank == 0) {
        const double comm = med[1] + med[2] + med[4];
        printf("ranks %d  elements %zu  rule %s  mode %s  state/rank %.2f MiB (unsharded %.2f "
               "MiB)  step %.2f ms  [read %.2f reduce %.2f agree %.2f update %.2f gather %.2f "
               "write %.2f]  comm %.0f%%",
               size, n, rule_name, rs ? "reduce-scatter" : "engine", (double)most / 1048576.0,
               (double)ref_bytes / 1048576.0, step * 1e3, med[0] * 1e3, med[1] * 1e3, med[2] * 1e3,
               med[3] * 1e3, med[4] * 1e3, med[5] * 1e3, med[6] > 0 ? 100.0 * comm / med[6] : 0.0);
        if (unsharded)
            printf("  unsharded step %.2f ms", ref_ms);
        printf("\n");
    }
    for (int k = 0; k < 7; k++)
        free(ph[k]);
    free(tot);
    free(d);
    free(h);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    clopt_ctx_destroy(ctx);
    MPI_Finalize();
    return 0;
}
