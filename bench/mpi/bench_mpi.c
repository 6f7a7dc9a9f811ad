/* SPDX-License-Identifier: MIT */
/* clopt-bench-mpi: the sharded optimizer's memory and time per rank.
 *   mpirun -np N clopt-bench-mpi [--n ELEMENTS] [--tensors T] [--steps S] [--rule NAME]
 *                                [--reduce-scatter] [--unsharded] [--param-dtype f32|f16|bf16]
 *                                [--grad-dtype f32|f16|bf16] [--master none|f32|remainder]
 *                                [--state-dtype f32|bf16|int8]
 *   clopt-bench-mpi --version     (the tool's and the library's versions; no MPI needed)
 * One flat parameter buffer of ELEMENTS (T equal tensors, default 2^22 and 8; float32, or the
 * storage types given: the all-gather and clopt's reduce-scatter then move 16-bit words), the
 * gradient the same on every rank (engine mode) or each rank's own (--reduce-scatter). Prints
 * one line on rank 0: world size, elements, optimizer state bytes on each rank (max) and
 * unsharded, the median step time (the slowest rank's), its phases (clopt_mpi_step_timing,
 * rank 0's median of each) and the communication share. --unsharded also times the plain
 * clopt_optimizer step over the same buffers on every rank at once (the same contention). */
#include "clopt_mpi.h"

#include <errno.h>
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

/* A storage type's name (f32, f16, bf16, int8 for U8) -> *out; 0, or -1 if unknown. */
static int dtype_of(const char *name, clopt_dtype *out)
{
    static const struct {
        const char *name;
        clopt_dtype t;
    } k[] = {{"f32", CLOPT_DTYPE_F32},
             {"f16", CLOPT_DTYPE_F16},
             {"bf16", CLOPT_DTYPE_BF16},
             {"int8", CLOPT_DTYPE_U8}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(name, k[i].name)) {
            *out = k[i].t;
            return 0;
        }
    return -1;
}

/* A decimal count (no sign, nothing after it) up to max -> *out; 0, or -1. */
static int count_of(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || s[0] == '+' || v > max)
        return -1;
    *out = v;
    return 0;
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [--n N] [--tensors T] [--steps S] [--rule NAME] [--reduce-scatter] "
            "[--unsharded] [--param-dtype f32|f16|bf16] [--grad-dtype f32|f16|bf16] "
            "[--master none|f32|remainder] [--state-dtype f32|bf16|int8] [--version] [--help]\n"
            "  N: elements, 1 .. 2^40 (decimal); T: tensors, 1 .. 2^24; S: steps, 1 .. 10^6\n",
            argv0);
}

static void die(int rank, const char *what, clopt_status s)
{
    fprintf(stderr, "rank %d: %s: %s\n", rank, what, clopt_mpi_status_str(s));
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv)
{
    /* before MPI_Init: a version query needs no MPI run (under mpirun every rank answers) */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("clopt-bench-mpi %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
                   CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
            return 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout, argv[0]);
            return 0;
        }
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t n = (size_t)1 << 22, nt = 8;
    int steps = 20, rs = 0, unsharded = 0, bad = 0;
    unsigned long long v = 0;
    const char *rule_name = "adamw";
    clopt_dtype pdt = CLOPT_DTYPE_F32, gdt = CLOPT_DTYPE_F32, sdt = CLOPT_DTYPE_F32;
    clopt_master master = CLOPT_MASTER_NONE;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc) { /* up to 2^40 elements (4 TiB) */
            bad |= count_of(argv[++i], 1ull << 40, &v) != 0;
            n = (size_t)v;
        } else if (!strcmp(argv[i], "--tensors") && i + 1 < argc) {
            bad |= count_of(argv[++i], 1ull << 24, &v) != 0;
            nt = (size_t)v;
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            bad |= count_of(argv[++i], 1000000, &v) != 0;
            steps = (int)v;
        } else if (!strcmp(argv[i], "--rule") && i + 1 < argc)
            rule_name = argv[++i];
        else if (!strcmp(argv[i], "--reduce-scatter"))
            rs = 1;
        else if (!strcmp(argv[i], "--param-dtype") && i + 1 < argc)
            bad |= dtype_of(argv[++i], &pdt) != 0 || pdt == CLOPT_DTYPE_U8;
        else if (!strcmp(argv[i], "--grad-dtype") && i + 1 < argc)
            bad |= dtype_of(argv[++i], &gdt) != 0 || gdt == CLOPT_DTYPE_U8;
        else if (!strcmp(argv[i], "--state-dtype") && i + 1 < argc)
            bad |= dtype_of(argv[++i], &sdt) != 0 || sdt == CLOPT_DTYPE_F16;
        else if (!strcmp(argv[i], "--master") && i + 1 < argc) {
            const char *m = argv[++i];
            master = !strcmp(m, "f32") ? CLOPT_MASTER_F32
                     : !strcmp(m, "remainder") ? CLOPT_MASTER_REMAINDER
                                               : CLOPT_MASTER_NONE;
            bad |= master == CLOPT_MASTER_NONE && strcmp(m, "none") != 0;
        } else if (!strcmp(argv[i], "--unsharded"))
            unsharded = 1;
        else {
            if (rank == 0)
                usage(stderr, argv[0]);
            MPI_Finalize();
            return 2;
        }
    }
    if (bad || nt == 0 || n < nt || steps < 1)
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
    cl_mem p = clCreateBuffer(cc, CL_MEM_READ_WRITE, n * clopt_dtype_size(pdt), NULL, &e);
    cl_mem g = clCreateBuffer(cc, CL_MEM_READ_WRITE, n * clopt_dtype_size(gdt), NULL, &e);
    cl_mem f = clCreateBuffer(cc, CL_MEM_READ_WRITE, n * 4, NULL, &e); /* float32 values */
    float *h = malloc(n * sizeof *h);
    if (!p || !g || !f || !h)
        die(rank, "buffers", CLOPT_ERR_OUT_OF_MEMORY);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    clEnqueueWriteBuffer(q, f, CL_TRUE, 0, n * 4, h, 0, NULL, NULL);
    if ((s = clopt_enqueue_convert(ctx, q, (clopt_tensor){p, 0}, pdt, (clopt_tensor){f, 0},
                                   CLOPT_DTYPE_F32, n, 0, 0, 0, 0, 0, NULL, NULL)) != CLOPT_SUCCESS)
        die(rank, "parameters", s);
    clFinish(q);
    for (size_t i = 0; i < n; i++)
        h[i] *= rs ? (float)(rank + 1) * 1e-2f : 1e-2f;
    clEnqueueWriteBuffer(q, f, CL_TRUE, 0, n * 4, h, 0, NULL, NULL);
    if ((s = clopt_enqueue_convert(ctx, q, (clopt_tensor){g, 0}, gdt, (clopt_tensor){f, 0},
                                   CLOPT_DTYPE_F32, n, 0, 0, 0, 0, 0, NULL, NULL)) != CLOPT_SUCCESS)
        die(rank, "gradients", s);
    clFinish(q);
    clReleaseMemObject(f);
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
        d[i].param_dtype = pdt;
        d[i].grad_dtype = gdt;
        at += len;
    }
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = nt;
    rg.tensors = d;
    clopt_hparams hp;
    clopt_hparams_default(rule, &hp);
    hp.grad_centralization = 0;
    hp.master = (int)master;
    hp.state_dtype = (int)sdt;
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
    double *share = malloc((size_t)steps * sizeof *share);
    int short_of_memory = !tot || !share;
    for (int k = 0; k < 7; k++)
        short_of_memory |= !(ph[k] = malloc((size_t)steps * sizeof *ph[k]));
    if (short_of_memory)
        die(rank, "timing arrays", CLOPT_ERR_OUT_OF_MEMORY);
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
        /* this step's communication share (a sum of the phases' medians over the median
           step could pass 100%) */
        share[t - warm] = tm.total_s > 0 ? (tm.reduce_s + tm.agree_s + tm.gather_s) / tm.total_s
                                         : 0.0;
    }
    unsigned long long mine = clopt_mpi_optimizer_state_bytes(sh), most = 0;
    MPI_Reduce(&mine, &most, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, 0, MPI_COMM_WORLD);
    double med[7];
    for (int k = 0; k < 7; k++)
        med[k] = median(ph[k], steps);
    const double comm = median(share, steps);
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
        static const char *mn[] = {"none", "f32", "remainder"};
        printf("ranks %d  elements %zu  rule %s  mode %s  storage p=%s,g=%s,master=%s,state=%s  "
               "state/rank %.2f MiB (unsharded %.2f "
               "MiB)  step %.2f ms  [read %.2f reduce %.2f agree %.2f update %.2f gather %.2f "
               "write %.2f]  comm %.0f%%",
               size, n, rule_name, rs ? "reduce-scatter" : "engine", clopt_dtype_name(pdt),
               clopt_dtype_name(gdt), mn[master], sdt == CLOPT_DTYPE_U8 ? "int8"
                                                                        : clopt_dtype_name(sdt),
               (double)most / 1048576.0,
               (double)ref_bytes / 1048576.0, step * 1e3, med[0] * 1e3, med[1] * 1e3, med[2] * 1e3,
               med[3] * 1e3, med[4] * 1e3, med[5] * 1e3, 100.0 * comm);
        if (unsharded)
            printf("  unsharded step %.2f ms", ref_ms);
        printf("\n");
    }
    for (int k = 0; k < 7; k++)
        free(ph[k]);
    free(share);
    free(tot);
    free(d);
    free(h);
    clReleaseMemObject(p);
    clReleaseMemObject(g);
    clopt_ctx_destroy(ctx);
    MPI_Finalize();
    return 0;
}
