/* SPDX-License-Identifier: MIT */
/*
 * clopt-train-mlp --shard: data-parallel training with the optimizer state sharded over MPI
 * by libclopt_mpi. See mlp_mpi.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlp_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mlp_mpi_check(const mlp_train_config *tc, clopt_dtype param_dtype, int *shard_tensors,
                  char *err, size_t errlen)
{
    *shard_tensors = 0;
    (void)param_dtype; /* every storage type shards (libclopt_mpi) */
    switch (tc->rule) {
    case CLOPT_SOPHIA:
        mlp_put_err(err, errlen,
                    "--shard does not take sophia: libclopt_mpi does not shard its Hessian "
                    "estimates");
        return -1;
    case CLOPT_MUON:
        mlp_put_err(err, errlen,
                    "--shard does not take muon: the example's Muon is a hybrid of two "
                    "optimizers (Muon on the weights, AdamW on the biases), whose sharded "
                    "form (two sharded optimizers over the flat buffers) is not written");
        return -1;
    default: /* every other rule shards cut tensors: LAMB, StableAdamW and cautious combine
                their per-tensor sums across processes, Adafactor replicates a cut tensor's
                statistics (libclopt_mpi) */
        break;
    }
    return 0;
}

void mlp_mpi_part(size_t n, int rank, int size, size_t *first, size_t *end)
{
    *first = n * (size_t)rank / (size_t)size;
    *end = n * (size_t)(rank + 1) / (size_t)size;
}

int mlp_mpi_sum(MPI_Comm comm, double *v, size_t count)
{
    int size = 1, rc = MPI_Comm_size(comm, &size);
    if (rc != MPI_SUCCESS)
        return rc;
    if (count == 0)
        return MPI_SUCCESS;
    if (count > (size_t)(0x7fffffff / size))
        return MPI_ERR_COUNT;
    double *all = malloc((size_t)size * count * sizeof *all);
    if (!all)
        return MPI_ERR_NO_MEM;
    rc = MPI_Allgather(v, (int)count, MPI_DOUBLE, all, (int)count, MPI_DOUBLE, comm);
    if (rc == MPI_SUCCESS)
        for (size_t i = 0; i < count; i++) {
            double s = 0.0;
            for (int r = 0; r < size; r++)
                s += all[(size_t)r * count + i];
            v[i] = s;
        }
    free(all);
    return rc;
}

static void put_mpi_err(char *err, size_t errlen, const char *what, int rc)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error %d", rc);
    mlp_put_err(err, errlen, "%s: %s", what, msg);
}

/* Every process's flag ok (1) or not (0): 1 only when all are. */
static int all_ok(MPI_Comm comm, int ok)
{
    int all = 0;
    if (MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS)
        return 0;
    return all;
}

int mlp_mpi_optimizer_create(mlp *m, const mlp_train_config *tc, MPI_Comm comm,
                             clopt_mpi_optimizer **out, char *err, size_t errlen)
{
    *out = NULL;
    int whole = 0;
    clopt_hparams hp[1];
    int ok = mlp_mpi_check(tc, mlp_get_config(m)->param_dtype, &whole, err, errlen) == 0;
    if (ok && mlp_train_hparams(m, tc, &hp[0]) != 0) {
        mlp_put_err(err, errlen, "%s", mlp_last_error(m));
        ok = 0;
    }
    /* the same refusal on every process (they run the same checks), but agree anyway so
       that no process enters the collective create alone */
    if (!all_ok(comm, ok)) {
        if (ok)
            mlp_put_err(err, errlen, "another process could not set up the optimizer");
        return -1;
    }
    const size_t L = mlp_get_config(m)->nlayers;
    clopt_param_desc w[MLP_MAX_LAYERS], b[MLP_MAX_LAYERS];
    mlp_flat_descs(m, w, b);
    /* the weights with weight decay, the biases without; with 8-bit state, as the
       one-process optimizer, tensors under 4096 elements keep float32 state (a group of
       their own: a group's tensors share one state type) */
    clopt_param_desc d[4][MLP_MAX_LAYERS];
    size_t nd[4] = {0, 0, 0, 0};
    for (size_t l = 0; l < L; l++)
        for (int bias = 0; bias < 2; bias++) {
            const clopt_param_desc *t = bias ? &b[l] : &w[l];
            const size_t n = t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
            const int small = tc->state_dtype == CLOPT_DTYPE_U8 && n < 4096;
            const int k = 2 * bias + small;
            d[k][nd[k]++] = *t;
        }
    clopt_hparams hp4[4];
    clopt_range_group g[4];
    size_t ng = 0;
    for (int k = 0; k < 4; k++) {
        if (!nd[k])
            continue;
        hp4[ng] = hp[0];
        if (k >= 2)
            hp4[ng].weight_decay = 0.0; /* the biases */
        if (k % 2)
            hp4[ng].state_dtype = CLOPT_DTYPE_F32;
        clopt_range_group_init(&g[ng]);
        g[ng].ntensors = nd[k];
        g[ng].tensors = d[k];
        ng++;
    }
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.grad_mode = CLOPT_MPI_GRAD_REDUCE_SCATTER;
    o.reduce_op = CLOPT_MPI_MEAN;
    o.ordered_sum = 1; /* rank-order sums: the same result on any MPI, run to run */
    o.shard_tensors = whole;
    char why[512] = "";
    clopt_mpi_optimizer *opt = NULL;
    clopt_status s = clopt_mpi_optimizer_create_groups(mlp_get_ctx(m), tc->rule, comm, ng, hp4,
                                                       g, &o, &opt, why, sizeof why);
    if (s != CLOPT_SUCCESS) {
        mlp_put_err(err, errlen, "clopt_mpi_optimizer_create_groups (%s): %s (%s)",
                    clopt_rule_name(tc->rule), clopt_mpi_status_str(s), why);
        return -1;
    }
    if (tc->stochastic_rounding &&
        (s = clopt_mpi_optimizer_seed(opt, tc->sr_seed)) != CLOPT_SUCCESS) {
        mlp_put_err(err, errlen, "clopt_mpi_optimizer_seed: %s", clopt_mpi_status_str(s));
        clopt_mpi_optimizer_destroy(opt);
        return -1;
    }
    clopt_schedule sch;
    if (mlp_schedule(tc, &sch) &&
        (s = clopt_mpi_optimizer_set_schedule(opt, &sch)) != CLOPT_SUCCESS) {
        /* local, but the same on every process: the same schedule everywhere */
        mlp_put_err(err, errlen, "clopt_mpi_optimizer_set_schedule: %s (%s)",
                    clopt_mpi_status_str(s), clopt_mpi_optimizer_last_error(opt));
        clopt_mpi_optimizer_destroy(opt);
        return -1;
    }
    *out = opt;
    return 0;
}

typedef struct dp_user {
    clopt_mpi_optimizer *opt;
    MPI_Comm comm;
    cl_command_queue queue;
} dp_user;

static int dp_step(void *user, char *err, size_t errlen)
{
    const dp_user *u = user;
    const clopt_status s = clopt_mpi_optimizer_step(u->opt, u->queue);
    if (s == CLOPT_SUCCESS)
        return 0;
    mlp_put_err(err, errlen, "clopt_mpi_optimizer_step: %s (%s)", clopt_mpi_status_str(s),
                clopt_mpi_optimizer_last_error(u->opt));
    return -1;
}

static int dp_sum(void *user, double *v, size_t count, char *err, size_t errlen)
{
    const dp_user *u = user;
    const int rc = mlp_mpi_sum(u->comm, v, count);
    if (rc == MPI_SUCCESS)
        return 0;
    put_mpi_err(err, errlen, "summing the epoch's statistics", rc);
    return -1;
}

int mlp_mpi_train_epoch(mlp *m, clopt_mpi_optimizer *opt, MPI_Comm comm,
                        const mlp_device_data *d, mlp_rng *rng, float *step_loss,
                        mlp_progress_fn progress, void *user, size_t progress_every,
                        mlp_epoch_stats *out, char *err, size_t errlen)
{
    dp_user u = {opt, comm, clopt_ctx_cl_queue(mlp_get_ctx(m))};
    mlp_data_parallel dp = {(size_t)clopt_mpi_optimizer_rank(opt),
                            (size_t)clopt_mpi_optimizer_world_size(opt), dp_step, dp_sum, &u};
    if (mlp_train_epoch_dp(m, &dp, d, rng, step_loss, progress, user, progress_every, out)) {
        mlp_put_err(err, errlen, "%s", mlp_last_error(m));
        return -1;
    }
    return 0;
}

int mlp_mpi_set_eval_mode(mlp *m, clopt_mpi_optimizer *opt, clopt_rule rule, int eval,
                          char *err, size_t errlen)
{
    /* other rules: set_mode would only all-gather unchanged parameters */
    if (rule != CLOPT_SCHEDULE_FREE_ADAMW && rule != CLOPT_SCHEDULE_FREE_SGD)
        return 0;
    const clopt_status s = clopt_mpi_optimizer_set_mode(opt, !eval);
    if (s == CLOPT_SUCCESS) {
        if (mlp_sync_weights(m) == 0) /* 16-bit weights: the float32 copy from θ */
            return 0;
        mlp_put_err(err, errlen, "%s", mlp_last_error(m));
        return -1;
    }
    mlp_put_err(err, errlen, "clopt_mpi_optimizer_set_mode: %s (%s)", clopt_mpi_status_str(s),
                clopt_mpi_optimizer_last_error(opt));
    return -1;
}

int mlp_mpi_evaluate(mlp *m, MPI_Comm comm, const mlp_device_data *local, size_t total,
                     double *loss, double *accuracy, char *err, size_t errlen)
{
    double v[3] = {0.0, 0.0, 0.0}; /* loss sum, correct, status (0 ok) */
    if (local->n > 0) {
        double l = 0.0, a = 0.0;
        if (mlp_evaluate(m, local, &l, &a) != 0) {
            mlp_put_err(err, errlen, "%s", mlp_last_error(m));
            v[2] = 1.0;
        } else {
            v[0] = l * (double)local->n;
            v[1] = a * (double)local->n;
        }
    }
    const int rc = mlp_mpi_sum(comm, v, 3);
    if (rc != MPI_SUCCESS) {
        put_mpi_err(err, errlen, "summing the evaluation", rc);
        return -1;
    }
    if (v[2] != 0.0) {
        if (local->n == 0 || err[0] == '\0')
            mlp_put_err(err, errlen, "the evaluation failed on another process");
        return -1;
    }
    *loss = total ? v[0] / (double)total : 0.0;
    *accuracy = total ? v[1] / (double)total : 0.0;
    return 0;
}

int mlp_mpi_params_identical(mlp *m, MPI_Comm comm, uint64_t *hash, char *err, size_t errlen)
{
    const mlp_flat *f = mlp_get_flat(m);
    float *p = malloc(f->floats * sizeof *p);
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    int ok = p != NULL;
    if (ok) {
        const cl_int e = clEnqueueReadBuffer(clopt_ctx_cl_queue(mlp_get_ctx(m)), f->params,
                                             CL_TRUE, 0, f->floats * sizeof *p, p, 0, NULL, NULL);
        ok = e == CL_SUCCESS;
    }
    if (ok) {
        const unsigned char *bytes = (const unsigned char *)p;
        for (size_t i = 0; i < f->floats * sizeof *p; i++) {
            h ^= bytes[i];
            h *= 0x100000001b3ULL;
        }
    }
    free(p);
    if (hash)
        *hash = h;
    int size = 1;
    MPI_Comm_size(comm, &size);
    /* {ok, hash} of every process */
    unsigned long long mine[2] = {(unsigned long long)ok, (unsigned long long)h};
    unsigned long long *all = malloc(2 * (size_t)size * sizeof *all);
    if (!all) {
        mlp_put_err(err, errlen, "out of memory");
        return -1; /* the others then fail in the collective below: abort the job */
    }
    const int rc = MPI_Allgather(mine, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG,
                                 comm);
    int same = 1, failed = 0;
    for (int r = 0; rc == MPI_SUCCESS && r < size; r++) {
        failed |= all[2 * r] == 0;
        same &= all[2 * r + 1] == all[1];
    }
    free(all);
    if (rc != MPI_SUCCESS) {
        put_mpi_err(err, errlen, "comparing the parameters", rc);
        return -1;
    }
    if (failed) {
        mlp_put_err(err, errlen, "reading the parameters failed on %s",
                    ok ? "another process" : "this process");
        return -1;
    }
    return same;
}
