/* SPDX-License-Identifier: MIT */
/*
 * clopt-train-mlp --shard's training (mlp_mpi.c) under mpirun with 2 (or more) processes,
 * against the one-process training of the same batches (mlp_train.c, the unsharded optimizer).
 *
 * Every process first trains the reference alone (no MPI), then the data-parallel run:
 * each process computes the gradient of its share of every batch, libclopt_mpi averages the
 * shares (reduce-scatter, mean, rank-order sums), updates its slice of the parameters with
 * its shard of the optimizer state and all-gathers them. The mean of the shares' gradients
 * equals the whole batch's mean gradient up to float rounding (the shares' GEMMs and column
 * sums run over fewer rows), so the runs agree closely, not bit for bit. Checked, per case:
 *   - the processes start from bit-identical parameters and end with bit-identical ones;
 *   - every step's batch loss (the whole batch's, summed over the processes) within 1e-5
 *     relative of the reference's (seen: <= 4e-7 with 2 and 3 processes);
 *   - the final parameters (at x for Schedule-Free) within 1e-4 of the reference relative to
 *     the distance travelled, ||θ_shard - θ_ref|| / ||θ_ref - θ_0|| (seen: <= 2e-5);
 *   - the processes' optimizer state bytes add up to the unsharded optimizer's, and with cut
 *     tensors each holds at most 1/N + 5% of them.
 * Cases: AdamW (the default), 2 epochs of 1,999 images (16 steps per epoch; the last batch of
 * 79 rows splits 39/40), then the test accuracy on 1,000 images, evaluated split over the
 * processes: >= 0.65 (seen: 0.727) and within 0.01 of the reference's; SGD with momentum (its
 * update scales with the gradient, so a sum instead of the mean, or a share's loss scaled by
 * 1/share instead of N/R, fails: both mutations were tried), 640 images, and 129 images (the
 * last batch of 1 row: one process has no rows and contributes zeros); LAMB (the 784 x 256
 * weights cut between the processes: their norms combined) and Schedule-Free AdamW (compared at
 * x through clopt_mpi_optimizer_set_mode, then back to y), 640 images; AdamW with bf16 weights,
 * a remainder and 8-bit state, and Schedule-Free AdamW with f16 weights and an fp32 master (the
 * parameters within 1e-3 of the distance travelled: see compare). Before them: mlp_mpi_check's
 * refusals (Sophia, Muon) and that LAMB, Adafactor, StableAdamW and cautious cut tensors, then AdamW sharded over one
 * process (MPI_COMM_SELF), which must be bit-identical to the unsharded run (step losses and
 * parameters). About 3 s with 2 processes on 2 cores.
 *
 * Without the Fashion-MNIST data (Debian's dataset-fashion-mnist, or
 * $CLOPT_FASHION_MNIST_DIR) every process exits with 77: CTest reports the test as skipped.
 * A failure prints the reason and ends the job (MPI_Abort), so no process waits forever.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlp_mpi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 128, TEST_N = 1000 };

static int g_rank = 0, g_size = 1;

/* The storage of the runs: the weights' type, their master, the optimizer state. */
static struct {
    clopt_dtype param;
    clopt_master master;
    clopt_dtype state;
} g_st = {CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, CLOPT_DTYPE_F32};

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "test_mlp_shard: rank %d: %s:%d: %s: ", g_rank, __FILE__,       \
                    __LINE__, #cond);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fprintf(stderr, "\n");                                                          \
            fflush(stderr);                                                                 \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                   \
        }                                                                                   \
    } while (0)

typedef struct result {
    size_t steps;         /* per epoch */
    float *step_loss;     /* every step of every epoch */
    float *theta0, *theta; /* the flat parameters before and after (at x for Schedule-Free) */
    double test_acc;
    size_t state_bytes;
    size_t floats; /* length of the flat buffers */
} result;

static void result_free(result *r)
{
    free(r->step_loss);
    free(r->theta0);
    free(r->theta);
    memset(r, 0, sizeof *r);
}

static float *read_flat(mlp *m)
{
    const mlp_flat *f = mlp_get_flat(m);
    float *p = malloc(f->floats * sizeof *p);
    CHECK(p != NULL, "out of memory");
    const cl_int e = clEnqueueReadBuffer(clopt_ctx_cl_queue(mlp_get_ctx(m)), f->params, CL_TRUE,
                                         0, f->floats * sizeof *p, p, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueReadBuffer: %d", (int)e);
    return p;
}

static int is_sf(clopt_rule r)
{
    return r == CLOPT_SCHEDULE_FREE_ADAMW || r == CLOPT_SCHEDULE_FREE_SGD;
}

/* Train `epochs` epochs of rule on train (the first n images) from the same seed: sharded
   over comm, or (comm MPI_COMM_NULL) alone with the unsharded optimizer. evaluate: the test
   accuracy (split over comm's processes when sharded). */
static void train(clopt_ctx *ctx, const mlp_dataset *train_set, size_t n,
                  const mlp_dataset *test_set, clopt_rule rule, size_t epochs, MPI_Comm comm,
                  int evaluate, result *out)
{
    const int sharded = comm != MPI_COMM_NULL;
    memset(out, 0, sizeof *out);
    mlp_dataset tr = *train_set;
    tr.n = n;
    mlp_config cfg = mlp_config_default(BATCH);
    cfg.param_dtype = g_st.param;
    mlp *m = NULL;
    char err[1024] = "";
    CHECK(mlp_create(ctx, &cfg, 0, &m, err, sizeof err) == 0, "mlp_create: %s", err);
    double mean, sd;
    mlp_dataset_pixel_stats(&tr, &mean, &sd);
    mlp_set_normalization(m, mean, sd);
    mlp_dataset te = *test_set;
    if (sharded) { /* this process's part of the test set */
        size_t first, end;
        int rank, size;
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &size);
        mlp_mpi_part(test_set->n, rank, size, &first, &end);
        te.n = end - first;
        te.pixels += first * te.dim;
        te.labels += first;
    }
    mlp_device_data dtr = {0}, dte = {0};
    CHECK(mlp_init_he(m, 7) == 0, "%s", mlp_last_error(m));
    CHECK(mlp_upload(m, &tr, &dtr) == 0, "%s", mlp_last_error(m));
    CHECK(te.n == 0 || mlp_upload(m, &te, &dte) == 0, "%s", mlp_last_error(m));
    out->theta0 = read_flat(m);
    out->floats = mlp_get_flat(m)->floats;
    out->steps = mlp_steps_per_epoch(n, BATCH);
    mlp_train_config tc = {rule, 0.0, -1.0, out->steps / 4, epochs * out->steps,
                           g_st.master, 0, 7, g_st.state, 0};
    out->step_loss = malloc(epochs * out->steps * sizeof *out->step_loss);
    CHECK(out->step_loss != NULL, "out of memory");
    mlp_rng rng;
    mlp_rng_seed(&rng, 99);
    clopt_optimizer *opt = NULL;
    clopt_mpi_optimizer *sopt = NULL;
    if (sharded) {
        CHECK(mlp_mpi_params_identical(m, comm, NULL, err, sizeof err) == 1,
              "the processes start from different parameters (%s)", err);
        CHECK(mlp_mpi_optimizer_create(m, &tc, comm, &sopt, err, sizeof err) == 0,
              "%s", err);
        out->state_bytes = clopt_mpi_optimizer_state_bytes(sopt);
    } else {
        CHECK(mlp_optimizer_create(m, &tc, &opt) == 0, "%s", mlp_last_error(m));
        out->state_bytes = clopt_optimizer_state_bytes(opt);
    }
    for (size_t e = 0; e < epochs; e++) {
        mlp_epoch_stats es;
        float *sl = out->step_loss + e * out->steps;
        if (sharded)
            CHECK(mlp_mpi_train_epoch(m, sopt, comm, &dtr, &rng, sl, NULL, NULL, 0,
                                      &es, err, sizeof err) == 0,
                  "%s", err);
        else
            CHECK(mlp_train_epoch(m, opt, &dtr, &rng, sl, NULL, NULL, 0, &es) == 0, "%s",
                  mlp_last_error(m));
        CHECK(isfinite(es.loss), "loss %g", es.loss);
    }
    /* evaluated (and compared) at x for Schedule-Free */
    double test_loss = 0.0;
    if (sharded) {
        CHECK(clopt_mpi_optimizer_step_count(sopt) == epochs * out->steps, "step count");
        CHECK(mlp_mpi_set_eval_mode(m, sopt, rule, 1, err, sizeof err) == 0, "%s", err);
        out->theta = read_flat(m);
        if (evaluate)
            CHECK(mlp_mpi_evaluate(m, comm, &dte, test_set->n, &test_loss,
                                   &out->test_acc, err, sizeof err) == 0,
                  "%s", err);
        CHECK(mlp_mpi_params_identical(m, comm, NULL, err, sizeof err) == 1,
              "the processes end with different parameters (%s)", err);
        CHECK(mlp_mpi_set_eval_mode(m, sopt, rule, 0, err, sizeof err) == 0, "%s", err);
        if (is_sf(rule)) { /* back at y: not x any more */
            float *y = read_flat(m);
            CHECK(memcmp(y, out->theta, mlp_get_flat(m)->floats * sizeof *y) != 0,
                  "Schedule-Free: y equals x after set_mode(train)");
            free(y);
        }
    } else {
        CHECK(mlp_set_eval_mode(m, opt, 1) == 0, "%s", mlp_last_error(m));
        out->theta = read_flat(m);
        if (evaluate)
            CHECK(mlp_evaluate(m, &dte, &test_loss, &out->test_acc) == 0, "%s",
                  mlp_last_error(m));
        CHECK(mlp_set_eval_mode(m, opt, 0) == 0, "%s", mlp_last_error(m));
    }
    clopt_mpi_optimizer_destroy(sopt);
    clopt_optimizer_destroy(opt);
    mlp_device_data_free(&dtr);
    mlp_device_data_free(&dte);
    mlp_destroy(m);
}

/* The sharded run of a case against the one-process reference, checked (see the top). */
static void compare(const char *name, clopt_ctx *ctx, const mlp_dataset *train_set, size_t n,
                    const mlp_dataset *test_set, clopt_rule rule, size_t epochs, int evaluate)
{
    result ref, sh;
    train(ctx, train_set, n, test_set, rule, epochs, MPI_COMM_NULL, evaluate, &ref);
    train(ctx, train_set, n, test_set, rule, epochs, MPI_COMM_WORLD, evaluate, &sh);
    CHECK(ref.steps == sh.steps, "steps");
    double worst_loss = 0.0;
    for (size_t i = 0; i < epochs * ref.steps; i++) {
        const double d = fabs((double)sh.step_loss[i] - (double)ref.step_loss[i]) /
                         fmax(1.0, fabs((double)ref.step_loss[i]));
        worst_loss = fmax(worst_loss, d);
        CHECK(d <= 1e-5, "%s: step %zu: loss %.7f, one process %.7f", name, i + 1,
              (double)sh.step_loss[i], (double)ref.step_loss[i]);
    }
    /* the whole flat buffers (the same layout in both runs): the gaps stay zero in both */
    double diff = 0.0, travel = 0.0, maxabs = 0.0;
    const size_t total = ref.floats;
    for (size_t i = 0; i < total; i++) {
        const double d = (double)sh.theta[i] - (double)ref.theta[i];
        const double t = (double)ref.theta[i] - (double)ref.theta0[i];
        diff += d * d;
        travel += t * t;
        maxabs = fmax(maxabs, fabs(d));
    }
    const double rel = sqrt(diff) / sqrt(travel);
    /* 16-bit weights: a master that differs in its last float bits rounds some weights one
       16-bit step apart (seen: 7.6e-5 bf16 with a remainder, 1.1e-4 f16 Schedule-Free at x) */
    CHECK(rel <= (g_st.param == CLOPT_DTYPE_F32 ? 1e-4 : 1e-3),
          "%s: ||theta_shard - theta_ref|| / ||theta_ref - theta_0|| = %g", name, rel);
    /* the state: about 1/N per process, all of it over the processes */
    unsigned long long mine = sh.state_bytes, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    CHECK(all == ref.state_bytes, "%s: state bytes %llu over the processes, %zu unsharded", name,
          all, ref.state_bytes);
    int whole = 0;
    char err[256] = "";
    mlp_train_config tc = {rule, 0, -1, 0, 0, CLOPT_MASTER_NONE, 0, 0, CLOPT_DTYPE_F32, 0};
    CHECK(mlp_mpi_check(&tc, CLOPT_DTYPE_F32, &whole, err, sizeof err) == 0, "%s", err);
    if (!whole)
        CHECK((double)mine <= ((double)1 / g_size + 0.05) * (double)ref.state_bytes,
              "%s: %llu of %zu state bytes on one process", name, mine, ref.state_bytes);
    if (evaluate) {
        CHECK(sh.test_acc >= 0.65, "%s: test accuracy %.4f", name, sh.test_acc);
        CHECK(fabs(sh.test_acc - ref.test_acc) <= 0.01, "%s: test accuracy %.4f, one process %.4f",
              name, sh.test_acc, ref.test_acc);
    }
    if (g_rank == 0) {
        printf("%-22s %zu steps: worst step-loss difference %.2e, parameters %.2e of the "
               "distance travelled (max |diff| %.2e), state %llu of %zu bytes on rank 0",
               name, epochs * ref.steps, worst_loss, rel, maxabs, mine, ref.state_bytes);
        if (evaluate)
            printf(", test accuracy %.4f (one process %.4f)", sh.test_acc, ref.test_acc);
        printf("\n");
        fflush(stdout);
    }
    result_free(&ref);
    result_free(&sh);
}

/* Sharded over one process (MPI_COMM_SELF, on every process at once): the reduce-scatter's
   mean of one gradient is that gradient and the loss scale 1/rows, so the run is bit for
   bit the unsharded one: every step's loss and the final parameters. */
static void one_process_is_identical(clopt_ctx *ctx, const mlp_dataset *train_set,
                                     const mlp_dataset *test_set)
{
    result ref, sh;
    train(ctx, train_set, 1999, test_set, CLOPT_ADAMW, 1, MPI_COMM_NULL, 0, &ref);
    train(ctx, train_set, 1999, test_set, CLOPT_ADAMW, 1, MPI_COMM_SELF, 0, &sh);
    CHECK(memcmp(ref.step_loss, sh.step_loss, ref.steps * sizeof *ref.step_loss) == 0,
          "one process: the step losses differ from the unsharded run's");
    CHECK(memcmp(ref.theta, sh.theta, ref.floats * sizeof *ref.theta) == 0,
          "one process: the parameters differ from the unsharded run's");
    CHECK(sh.state_bytes == ref.state_bytes, "one process: %zu state bytes, unsharded %zu",
          sh.state_bytes, ref.state_bytes);
    if (g_rank == 0) {
        printf("%-22s %zu steps: bit-identical to the unsharded run\n", "adamw, 1 process",
               ref.steps);
        fflush(stdout);
    }
    result_free(&ref);
    result_free(&sh);
}

static void refusals(void)
{
    char err[512];
    int whole = -1;
    /* (every storage setting shards: the runs below train with bf16 and f16 weights and int8
       state, test_mlp_cli_storage passes them at the command line) */
    mlp_train_config tc = {CLOPT_ADAMW, 0, -1, 0, 0, CLOPT_MASTER_NONE, 0, 0, CLOPT_DTYPE_F32, 0};
    static const clopt_rule refused[] = {CLOPT_SOPHIA, CLOPT_MUON};
    for (size_t i = 0; i < 2; i++) {
        tc.rule = refused[i];
        CHECK(mlp_mpi_check(&tc, CLOPT_DTYPE_F32, &whole, err, sizeof err) == -1 &&
                  strstr(err, clopt_rule_name(refused[i])),
              "%s: %s", clopt_rule_name(refused[i]), err);
    }
    /* the rules with per-tensor reductions shard cut tensors too (libclopt_mpi) */
    static const clopt_rule cut[] = {CLOPT_LAMB, CLOPT_ADAFACTOR, CLOPT_STABLE_ADAMW};
    for (size_t i = 0; i < 3; i++) {
        tc.rule = cut[i];
        CHECK(mlp_mpi_check(&tc, CLOPT_DTYPE_F32, &whole, err, sizeof err) == 0 && whole == 0,
              "%s: cut tensors", clopt_rule_name(cut[i]));
    }
    tc.rule = CLOPT_ADAMW;
    tc.cautious = 1;
    CHECK(mlp_mpi_check(&tc, CLOPT_DTYPE_F32, &whole, err, sizeof err) == 0 && whole == 0,
          "cautious: cut tensors");
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    refusals();
    mlp_dataset train_set = {0}, test_set = {0};
    char err[1024] = "";
    int have = mlp_dataset_load(NULL, 1, 1999, &train_set, err, sizeof err) == 0 &&
               mlp_dataset_load(NULL, 0, TEST_N, &test_set, err, sizeof err) == 0;
    int all_have = 0;
    MPI_Allreduce(&have, &all_have, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_have) {
        if (g_rank == 0)
            printf("test_mlp_shard: skipped: Fashion-MNIST not found (%s)\n",
                   err[0] ? err : "on another process");
        mlp_dataset_free(&train_set);
        mlp_dataset_free(&test_set);
        MPI_Finalize();
        return 77;
    }
    clopt_ctx *ctx = NULL;
    CHECK(clopt_ctx_create(&ctx) == CLOPT_SUCCESS, "no OpenCL context");
    one_process_is_identical(ctx, &train_set, &test_set);
    compare("adamw", ctx, &train_set, 1999, &test_set, CLOPT_ADAMW, 2, 1);
    compare("sgd", ctx, &train_set, 640, &test_set, CLOPT_SGD, 1, 0);
    compare("sgd, 1-row batch", ctx, &train_set, 129, &test_set, CLOPT_SGD, 1, 0);
    compare("lamb (whole tensors)", ctx, &train_set, 640, &test_set, CLOPT_LAMB, 1, 0);
    compare("schedule_free_adamw", ctx, &train_set, 640, &test_set, CLOPT_SCHEDULE_FREE_ADAMW, 1,
            0);
    /* 16-bit weights with their master, 8-bit state (the one-process optimizer keeps the
       tensors under 4096 elements in float32 state: so does the sharded one) */
    g_st.param = CLOPT_DTYPE_BF16;
    g_st.master = CLOPT_MASTER_REMAINDER;
    g_st.state = CLOPT_DTYPE_U8;
    compare("adamw bf16+rem, int8", ctx, &train_set, 640, &test_set, CLOPT_ADAMW, 1, 0);
    g_st.param = CLOPT_DTYPE_F16;
    g_st.master = CLOPT_MASTER_F32;
    g_st.state = CLOPT_DTYPE_F32;
    compare("sf_adamw f16+master", ctx, &train_set, 640, &test_set, CLOPT_SCHEDULE_FREE_ADAMW, 1,
            0);
    clopt_ctx_destroy(ctx);
    mlp_dataset_free(&train_set);
    mlp_dataset_free(&test_set);
    if (g_rank == 0)
        printf("test_mlp_shard: %d processes: ok\n", g_size);
    MPI_Finalize();
    return 0;
}
