/* SPDX-License-Identifier: MIT */
/*
 * clopt-train-mlp: a 784-256-128-10 ReLU MLP trained on Fashion-MNIST with CLBlast GEMMs and
 * clopt's fused optimizer kernels (any rule clopt ships), mini-batch gradient descent with a
 * linear-warmup + cosine learning-rate schedule.
 *
 *   clopt-train-mlp [--optimizer NAME] [--epochs N] [--batch B] [--lr X] [--wd X]
 *                   [--warmup STEPS] [--train-limit N] [--test-limit N] [--seed S]
 *                   [--device D] [--data DIR] [--csv FILE] [--steps-csv FILE] [--quiet]
 *                   [--param-dtype f32|f16|bf16] [--state-dtype f32|bf16|int8]
 *                   [--master none|f32|remainder] [--stochastic-rounding] [--cautious]
 *                   [--shard]
 *
 * One line per epoch on stdout:
 *   epoch E loss L train_acc A test_acc B seconds S
 * (L and A over the epoch's training batches, B on the test set, S the epoch's training time
 * without the evaluation). When stdout is a terminal a progress bar is drawn on stderr.
 * Schedule-Free rules are evaluated at the averaged point x (clopt_optimizer_eval before the
 * test pass, clopt_optimizer_train after it).
 * With --shard, under mpirun (builds with MPI only): data-parallel training, each process
 * computing the gradient of its share of every batch, the optimizer state sharded over the
 * processes by libclopt_mpi (mlp_mpi.c); rank 0 prints.
 * The model is in mlp.c, the loop in mlp_train.c; this file is the command line only.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlp.h"
#ifdef CLOPT_MLP_MPI
#include "mlp_mpi.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clopt-train-mlp [options]\n"
            "  --optimizer NAME   any clopt rule (default adamw; --list prints them), or\n"
            "                     cautious_adam, cautious_adamw, cautious_lion\n"
            "  --cautious         cautious masking (C-Optim) of adam, adamw or lion\n"
            "  --epochs N         passes over the training set (default 10)\n"
            "  --batch B          mini-batch size (default 128)\n"
            "  --lr X             base learning rate (default: per rule, see --list)\n"
            "  --wd X             weight decay of the weights (default: per rule; biases: 0)\n"
            "  --warmup STEPS     linear warmup steps before the cosine decay (default 5%% of "
            "all steps)\n"
            "  --train-limit N    use the first N training images (default all 60000)\n"
            "  --test-limit N     evaluate on the first N test images (default all 10000)\n"
            "  --seed S           seed of the initial weights and the shuffling (default 1)\n"
            "  --device D         OpenCL device: index or name substring (as CLOPT_DEVICE)\n"
            "  --data DIR         folder of the IDX files (default $%s or %s)\n"
            "  --csv FILE         one row per epoch\n"
            "  --steps-csv FILE   one row per step (the batch's mean loss)\n"
            "  --quiet            no progress bar and no per-epoch lines, only a final summary\n"
            "  --param-dtype T    storage of the weights the optimizer updates: f32 (default),\n"
            "                     f16 or bf16; the forward and backward passes read them\n"
            "                     converted to f32, gradients stay f32\n"
            "  --state-dtype T    storage of the optimizer state: f32 (default), bf16, or int8\n"
            "                     (8-bit blockwise: sgd, adam, adamw, lion, rmsprop, adagrad,\n"
            "                     ademamix);\n"
            "                     tensors under 4096 elements (the biases) keep f32\n"
            "  --master M         16-bit weights: none (default: the update is rounded into\n"
            "                     them), f32 (a float32 master copy) or remainder (bf16 only:\n"
            "                     16-bit remainders that complete the weights to float32)\n"
            "  --stochastic-rounding  16-bit weights without a master: round each update\n"
            "                     stochastically (unbiased) instead of to nearest (--seed)\n"
            "  --shard            data-parallel over the MPI processes (mpirun -np N\n"
            "                     clopt-train-mlp --shard): each computes the gradient of 1/N\n"
            "                     of every batch, the optimizer state is sharded over them\n"
            "                     (libclopt_mpi, ZeRO-1)%s\n"
            "  --list             the rules with their default lr and weight decay\n"
            "  --version          the versions of clopt-train-mlp and the library\n",
            MLP_DATA_ENV, MLP_DEFAULT_DATA_DIR,
#ifdef CLOPT_MLP_MPI
            ""
#else
            "; not in this build (no MPI)"
#endif
    );
}

#ifdef CLOPT_MLP_MPI
static void finalize_mpi(void)
{
    int done = 0;
    MPI_Finalized(&done);
    if (!done)
        MPI_Finalize();
}
#endif

/* Index of s in names[0..n), or -1 with a message naming the option and the choices. */
static int parse_choice(const char *opt, const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    fprintf(stderr, "clopt-train-mlp: %s expects one of", opt);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%s %s", i ? "," : "", names[i]);
    fprintf(stderr, ", not '%s'\n", s);
    return -1;
}

/* The choices of --param-dtype (clopt_dtype order), --state-dtype (STATE_TYPES' order) and
   --master (clopt_master order). */
static const char *const PARAM_DTYPES[] = {"f32", "f16", "bf16"};
static const char *const STATE_DTYPES[] = {"f32", "bf16", "int8"};
static const clopt_dtype STATE_TYPES[] = {CLOPT_DTYPE_F32, CLOPT_DTYPE_BF16, CLOPT_DTYPE_U8};
static const char *const MASTERS[] = {"none", "f32", "remainder"};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int parse_size(const char *opt, const char *s, size_t *out)
{
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || s[0] == '-' || end == s) {
        fprintf(stderr, "clopt-train-mlp: %s expects a non-negative integer, not '%s'\n", opt, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno || !end || *end || end == s || !isfinite(v) || v < 0) {
        fprintf(stderr, "clopt-train-mlp: %s expects a non-negative number, not '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- progress bar (stderr, only when stdout is a terminal) ------------------------------- */

typedef struct bar {
    size_t epoch, epochs;
    double t0;
} bar;

static void draw_bar(void *user, size_t done, size_t steps, double loss)
{
    const bar *b = user;
    enum { W = 30 };
    char cells[W + 1];
    const size_t fill = steps ? done * W / steps : W;
    for (size_t i = 0; i < W; i++)
        cells[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    cells[W] = '\0';
    fprintf(stderr, "\r\033[Kepoch %zu/%zu [%s] %zu/%zu loss %.4f %.1f s", b->epoch, b->epochs,
            cells, done, steps, loss, now_s() - b->t0);
    fflush(stderr);
}

int main(int argc, char **argv)
{
    const char *rule_name = "adamw", *device = NULL, *data = NULL, *csv_path = NULL,
               *steps_path = NULL;
    size_t epochs = 10, batch = 128, train_limit = 0, test_limit = 0, warmup = (size_t)-1;
    double lr = 0.0, wd = -1.0;
    uint64_t seed = 1;
    int quiet = 0, sr = 0, cautious = 0, param_dtype = CLOPT_DTYPE_F32, state_dtype = 0,
        master = CLOPT_MASTER_NONE, shard = 0;
    /* --shard: MPI starts before anything else (every process parses the same options) */
    for (int i = 1; i < argc; i++)
        shard |= !strcmp(argv[i], "--shard");
    int rank = 0, nproc = 1;
    (void)nproc; /* used by --shard only */
#ifdef CLOPT_MLP_MPI
    if (shard) {
        if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
            fprintf(stderr, "clopt-train-mlp: MPI_Init failed\n");
            return 1;
        }
        atexit(finalize_mpi);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &nproc);
    }
#else
    if (shard) {
        fprintf(stderr, "clopt-train-mlp: --shard is not available: this build has no "
                        "libclopt_mpi (CMake did not find MPI; install libopenmpi-dev and "
                        "reconfigure)\n");
        return 2;
    }
#endif
    const int lead = rank == 0; /* prints the results */

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--version")) {
            printf("clopt-train-mlp %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
                   CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
            return 0;
        }
        if (!strcmp(a, "--list")) {
            printf("%-20s %-10s %s\n", "rule", "lr", "weight_decay");
            for (int r = 0; r < CLOPT_RULE_COUNT; r++) {
                double l, w;
                mlp_default_lr_wd((clopt_rule)r, &l, &w);
                printf("%-20s %-10g %g%s\n", clopt_rule_name((clopt_rule)r), l, w,
                       r == CLOPT_MUON ? " (weights; biases: adamw, no decay)" : "");
            }
            static const char *const cautious_names[] = {"cautious_adam", "cautious_adamw",
                                                         "cautious_lion"};
            for (size_t k = 0; k < 3; k++) {
                clopt_rule r;
                int c;
                double l, w;
                mlp_rule_from_name(cautious_names[k], &r, &c);
                mlp_default_lr_wd(r, &l, &w);
                printf("%-20s %-10g %g\n", cautious_names[k], l, w);
            }
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!strcmp(a, "--stochastic-rounding")) {
            sr = 1;
            continue;
        }
        if (!strcmp(a, "--cautious")) {
            cautious = 1;
            continue;
        }
        if (!strcmp(a, "--shard"))
            continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "clopt-train-mlp: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        size_t sz = 0;
        int bad = 0;
        if (!strcmp(a, "--optimizer"))
            rule_name = v;
        else if (!strcmp(a, "--epochs"))
            bad = parse_size(a, v, &epochs);
        else if (!strcmp(a, "--batch"))
            bad = parse_size(a, v, &batch);
        else if (!strcmp(a, "--lr"))
            bad = parse_double(a, v, &lr);
        else if (!strcmp(a, "--wd"))
            bad = parse_double(a, v, &wd);
        else if (!strcmp(a, "--warmup"))
            bad = parse_size(a, v, &warmup);
        else if (!strcmp(a, "--train-limit"))
            bad = parse_size(a, v, &train_limit);
        else if (!strcmp(a, "--test-limit"))
            bad = parse_size(a, v, &test_limit);
        else if (!strcmp(a, "--seed")) {
            bad = parse_size(a, v, &sz);
            seed = sz;
        } else if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--csv"))
            csv_path = v;
        else if (!strcmp(a, "--steps-csv"))
            steps_path = v;
        else if (!strcmp(a, "--param-dtype"))
            bad = (param_dtype = parse_choice(a, v, PARAM_DTYPES, 3)) < 0;
        else if (!strcmp(a, "--state-dtype"))
            bad = (state_dtype = parse_choice(a, v, STATE_DTYPES, 3)) < 0;
        else if (!strcmp(a, "--master"))
            bad = (master = parse_choice(a, v, MASTERS, 3)) < 0;
        else {
            fprintf(stderr, "clopt-train-mlp: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    clopt_rule rule;
    int named_cautious = 0;
    if (mlp_rule_from_name(rule_name, &rule, &named_cautious) != 0) {
        fprintf(stderr, "clopt-train-mlp: unknown optimizer '%s'; one of:", rule_name);
        for (int r = 0; r < CLOPT_RULE_COUNT; r++)
            fprintf(stderr, " %s", clopt_rule_name((clopt_rule)r));
        fprintf(stderr, " cautious_adam cautious_adamw cautious_lion\n");
        return 2;
    }
    cautious |= named_cautious;
    if (cautious && rule != CLOPT_ADAM && rule != CLOPT_ADAMW && rule != CLOPT_LION) {
        fprintf(stderr, "clopt-train-mlp: --cautious applies to adam, adamw and lion, not %s\n",
                rule_name);
        return 2;
    }
    if (epochs == 0 || batch == 0 || batch > ((size_t)1 << 20)) {
        fprintf(stderr, "clopt-train-mlp: --epochs must be > 0 and --batch in 1 .. 1048576\n");
        return 2;
    }
    char err[1024];
    if (mlp_check_storage((clopt_dtype)param_dtype, STATE_TYPES[state_dtype],
                          (clopt_master)master, sr, err, sizeof err)) {
        fprintf(stderr, "clopt-train-mlp: %s\n", err);
        return 2;
    }
#ifdef CLOPT_MLP_MPI
    int shard_tensors = 0;
    if (shard) {
        const mlp_train_config probe = {rule, lr, wd, 0, 0, (clopt_master)master, sr, seed,
                                        STATE_TYPES[state_dtype], cautious};
        if (mlp_mpi_check(&probe, (clopt_dtype)param_dtype, &shard_tensors, err, sizeof err)) {
            if (lead)
                fprintf(stderr, "clopt-train-mlp: %s\n", err);
            return 2;
        }
    }
#endif

    mlp_dataset train = {0}, test = {0};
    if (mlp_dataset_load(data, 1, train_limit, &train, err, sizeof err) != 0 ||
        mlp_dataset_load(data, 0, test_limit, &test, err, sizeof err) != 0) {
        fprintf(stderr, "clopt-train-mlp: %s\n", err);
        mlp_dataset_free(&train);
        return 1;
    }

    int rc = 1;
    clopt_ctx *ctx = NULL;
    mlp *m = NULL;
    clopt_optimizer *opt = NULL;
    mlp_device_data dtrain = {0}, dtest = {0};
#ifdef CLOPT_MLP_MPI
    clopt_mpi_optimizer *sopt = NULL;
    clopt_schedule sched;
#endif
    FILE *csv = NULL, *scsv = NULL;
    float *step_loss = NULL;
    /* no bar with --shard: mpirun forwards stdout through a pty, even when redirected */
    const int tty = !quiet && !shard && isatty(STDOUT_FILENO);

    clopt_status s = clopt_ctx_create_device(device, &ctx);
    if (s != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-train-mlp: no OpenCL context: %s\n", clopt_status_str(s));
        goto out;
    }
    mlp_config cfg = mlp_config_default(batch);
    cfg.param_dtype = (clopt_dtype)param_dtype;
    if (mlp_create(ctx, &cfg, rule == CLOPT_SOPHIA, &m, err, sizeof err) != 0) {
        fprintf(stderr, "clopt-train-mlp: %s\n", err);
        goto out;
    }
    double mean, sd;
    mlp_dataset_pixel_stats(&train, &mean, &sd);
    mlp_set_normalization(m, mean, sd);
    const size_t steps = mlp_steps_per_epoch(train.n, batch);
    mlp_train_config tc = {rule, lr, wd, 0, epochs * steps, (clopt_master)master, sr, seed,
                           STATE_TYPES[state_dtype], cautious};
    tc.warmup_steps = warmup != (size_t)-1 ? warmup : (size_t)llround(0.05 * (double)tc.total_steps);
    clopt_hparams hp;
    /* --shard: each process evaluates its part of the test set */
    mlp_dataset test_part = test;
#ifdef CLOPT_MLP_MPI
    if (shard) {
        size_t first, end;
        mlp_mpi_part(test.n, rank, nproc, &first, &end);
        test_part.n = end - first;
        test_part.pixels = test.pixels + first * test.dim;
        test_part.labels = test.labels + first;
    }
#endif
    if (mlp_init_he(m, seed) || mlp_upload(m, &train, &dtrain) ||
        (test_part.n > 0 && mlp_upload(m, &test_part, &dtest)) ||
        mlp_train_hparams(m, &tc, &hp) || (!shard && mlp_optimizer_create(m, &tc, &opt))) {
        fprintf(stderr, "clopt-train-mlp: %s\n", mlp_last_error(m));
        goto out;
    }
#ifdef CLOPT_MLP_MPI
    if (shard) {
        /* the same seed, data and initialisation everywhere: check that the ranks start from
           bit-identical parameters */
        const int same = mlp_mpi_params_identical(m, MPI_COMM_WORLD, NULL, err, sizeof err);
        if (same != 1) {
            fprintf(stderr, "clopt-train-mlp: rank %d: %s\n", rank,
                    same < 0 ? err : "the processes' initial parameters differ");
            goto out;
        }
        if (mlp_mpi_optimizer_create(m, &tc, MPI_COMM_WORLD, &sopt, err, sizeof err)) {
            fprintf(stderr, "clopt-train-mlp: rank %d: %s\n", rank, err);
            goto out;
        }
        mlp_schedule(&tc, &sched);
        size_t first, count, total;
        clopt_mpi_optimizer_shard(sopt, &first, &count, &total);
        unsigned long long bytes = clopt_mpi_optimizer_state_bytes(sopt), all_bytes = 0;
        MPI_Allreduce(&bytes, &all_bytes, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (!quiet)
            fprintf(stderr,
                    "# rank %d of %d: 1/%d of every batch; optimizer state for parameters "
                    "[%zu, %zu) of %zu%s: %llu of %llu bytes\n",
                    rank, nproc, nproc, first, first + count, total,
                    shard_tensors ? " (whole tensors per rank)" : "", bytes, all_bytes);
    }
#endif
    if (!quiet && lead)
        fprintf(stderr,
                "# %s%s on %s: lr %g, weight decay %g (weights), batch %zu, %zu epochs of %zu "
                "steps, warmup %zu steps then %s; %zu train / %zu test images\n",
                rule_name, cautious && !named_cautious ? " (cautious)" : "",
                clopt_ctx_device_name(ctx), hp.lr, hp.weight_decay, batch, epochs, steps,
                tc.warmup_steps,
                rule == CLOPT_SCHEDULE_FREE_ADAMW || rule == CLOPT_SCHEDULE_FREE_SGD
                    ? "constant (Schedule-Free)"
                    : "cosine",
                train.n, test.n);
    if (!quiet && lead && (param_dtype != CLOPT_DTYPE_F32 || state_dtype != 0))
        fprintf(stderr, "# weights in %s (master %s%s), optimizer state in %s, gradients in f32\n",
                PARAM_DTYPES[param_dtype], MASTERS[master],
                sr ? ", stochastic rounding" : "", STATE_DTYPES[state_dtype]);
    if (csv_path && lead) {
        csv = fopen(csv_path, "w");
        if (!csv) {
            fprintf(stderr, "clopt-train-mlp: %s: %s\n", csv_path, strerror(errno));
            goto out;
        }
        fprintf(csv, "optimizer,epoch,step,next_lr,loss,train_acc,test_loss,test_acc,seconds,"
                     "eval_seconds\n");
    }
    if (steps_path && lead) {
        scsv = fopen(steps_path, "w");
        if (!scsv) {
            fprintf(stderr, "clopt-train-mlp: %s: %s\n", steps_path, strerror(errno));
            goto out;
        }
        fprintf(scsv, "optimizer,step,epoch,loss\n");
    }
    step_loss = malloc(steps * sizeof *step_loss);
    if (!step_loss) {
        fprintf(stderr, "clopt-train-mlp: out of memory\n");
        goto out;
    }

    mlp_rng rng;
    mlp_rng_seed(&rng, seed ^ 0x5eed5eed5eed5eedULL);
    double total_train = 0.0, test_acc = 0.0;
    for (size_t ep = 1; ep <= epochs; ep++) {
        bar b = {ep, epochs, now_s()};
        mlp_epoch_stats es;
        const double t0 = now_s();
        int bad = 0;
        if (!shard)
            bad = mlp_train_epoch(m, opt, &dtrain, &rng, step_loss, tty ? draw_bar : NULL, &b,
                                  steps / 100 + 1, &es) != 0;
#ifdef CLOPT_MLP_MPI
        else
            bad = mlp_mpi_train_epoch(m, sopt, MPI_COMM_WORLD, &dtrain, &rng, step_loss,
                                      tty ? draw_bar : NULL, &b, steps / 100 + 1, &es, err,
                                      sizeof err) != 0;
#endif
        if (bad) {
            if (tty)
                fprintf(stderr, "\n");
            if (shard)
                fprintf(stderr, "clopt-train-mlp: rank %d: epoch %zu: %s\n", rank, ep, err);
            else
                fprintf(stderr, "clopt-train-mlp: epoch %zu: %s\n", ep, mlp_last_error(m));
            goto out;
        }
        const double t1 = now_s();
        double test_loss = 0.0;
        /* Schedule-Free: evaluate (or save) the averaged point x, then back to y */
        if (!shard && (mlp_set_eval_mode(m, opt, 1) != 0 ||
                       mlp_evaluate(m, &dtest, &test_loss, &test_acc) != 0 ||
                       mlp_set_eval_mode(m, opt, 0) != 0)) {
            fprintf(stderr, "clopt-train-mlp: evaluation: %s\n", mlp_last_error(m));
            goto out;
        }
#ifdef CLOPT_MLP_MPI
        if (shard && (mlp_mpi_set_eval_mode(m, sopt, rule, 1, err, sizeof err) != 0 ||
                      mlp_mpi_evaluate(m, MPI_COMM_WORLD, &dtest, test.n, &test_loss, &test_acc,
                                       err, sizeof err) != 0 ||
                      mlp_mpi_set_eval_mode(m, sopt, rule, 0, err, sizeof err) != 0)) {
            fprintf(stderr, "clopt-train-mlp: rank %d: evaluation: %s\n", rank, err);
            goto out;
        }
#endif
        const double t2 = now_s();
        total_train += t1 - t0;
        if (tty)
            fprintf(stderr, "\r\033[K");
        if (!quiet && lead) {
            printf("epoch %zu loss %.4f train_acc %.4f test_acc %.4f seconds %.2f\n", ep, es.loss,
                   es.accuracy, test_acc, t1 - t0);
            fflush(stdout);
        }
        if (!isfinite(es.loss)) {
            fprintf(stderr, "clopt-train-mlp: the loss diverged (%g); try a smaller --lr\n",
                    es.loss);
            goto out;
        }
        if (csv) {
            uint64_t step_count = 0;
            double next_lr = 0.0;
            if (!shard) {
                step_count = clopt_optimizer_step_count(opt);
                next_lr = clopt_optimizer_group_lr(opt, 0);
            }
#ifdef CLOPT_MLP_MPI
            else {
                step_count = clopt_mpi_optimizer_step_count(sopt);
                next_lr = hp.lr * (sched.nstages ? clopt_schedule_factor(&sched, step_count) : 1.0);
            }
#endif
            fprintf(csv, "%s,%zu,%" PRIu64 ",%.6g,%.6f,%.6f,%.6f,%.6f,%.3f,%.3f\n", rule_name, ep,
                    step_count, next_lr, es.loss, es.accuracy, test_loss, test_acc, t1 - t0,
                    t2 - t1);
            fflush(csv);
        }
        if (scsv)
            for (size_t i = 0; i < steps; i++)
                fprintf(scsv, "%s,%zu,%.6f,%.6f\n", rule_name, (ep - 1) * steps + i + 1,
                        (double)(ep - 1) + (double)(i + 1) / (double)steps, step_loss[i]);
    }
#ifdef CLOPT_MLP_MPI
    if (shard) { /* the all-gathers keep every rank's parameters identical */
        const int same = mlp_mpi_params_identical(m, MPI_COMM_WORLD, NULL, err, sizeof err);
        if (same != 1) {
            fprintf(stderr, "clopt-train-mlp: rank %d: %s\n", rank,
                    same < 0 ? err : "the processes' final parameters differ");
            goto out;
        }
        if (!quiet && lead)
            fprintf(stderr, "# final parameters bit-identical on all %d processes\n", nproc);
    }
#endif
    if (quiet && lead)
        printf("final optimizer %s epochs %zu test_acc %.4f seconds_per_epoch %.2f\n", rule_name,
               epochs, test_acc, total_train / (double)epochs);
    rc = 0;
out:
    if (csv && fclose(csv) != 0 && rc == 0) {
        fprintf(stderr, "clopt-train-mlp: writing %s failed\n", csv_path);
        rc = 1;
    }
    if (scsv && fclose(scsv) != 0 && rc == 0) {
        fprintf(stderr, "clopt-train-mlp: writing %s failed\n", steps_path);
        rc = 1;
    }
    free(step_loss);
#ifdef CLOPT_MLP_MPI
    if (shard && rc != 0) { /* the other processes may wait in a collective: end the job */
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    clopt_mpi_optimizer_destroy(sopt);
#endif
    clopt_optimizer_destroy(opt);
    mlp_device_data_free(&dtrain);
    mlp_device_data_free(&dtest);
    mlp_destroy(m);
    clopt_ctx_destroy(ctx);
    mlp_dataset_free(&train);
    mlp_dataset_free(&test);
    return rc;
}
