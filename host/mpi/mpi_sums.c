/* SPDX-License-Identifier: MIT */
/* Tensors cut by shard boundaries under the rules with per-tensor sums (LAMB's ‖θ‖² and ‖r‖²,
 * StableAdamW's Σ g²/max(u, eps²), cautious masking's count): the ranks holding pieces of a
 * tensor share a communicator; during the internal step the core hands each piece's sums to
 * the tensor-sums hook (clopt_optimizer_set_tensor_sums_hook), which gathers the pieces'
 * sums over that communicator, adds them in rank order in double (the same total on every
 * rank, independent of the MPI's algorithms) and writes the whole tensor's sums and element
 * count back before the piece's update. Gradient centralization needs no sums: its row means
 * are exact on each rank because the shard boundaries fall between rows of the tensors it
 * applies to (sharded.c). */
#include "mpi_internal.h"

#include <stdlib.h>
#include <string.h>

size_t clopt_mpi_gc_rows(const clopt_hparams *hp, const clopt_mpi_shape *t)
{
    /* as clopt_hparams.grad_centralization: tensors with more than one dimension (more than
       three with gc_conv_only), rows along the first */
    if (!hp->grad_centralization || t->ndim <= (hp->gc_conv_only ? 3u : 1u))
        return 0;
    return t->shape[0];
}

/* The internal tensor of piece p has per-tensor sums under its group's hyperparameters (the
   core's own answer: the hook is called exactly for these). */
static int piece_has_sums(const clopt_mpi_optimizer *opt, size_t p)
{
    return clopt_rule_tensor_sums(opt->rule, &opt->hps[opt->tgroup[opt->pieces[p].tensor]]) > 0;
}

/* One piece's part of its tensor's collective: {status, sums} from every holder, added in
   rank order into total (count doubles). Returns the local status when it failed, REMOTE
   when another holder's did. */
static clopt_status combine(clopt_mpi_optimizer *opt, size_t p, clopt_status local,
                            const float *mine, size_t count, double *total)
{
    MPI_Comm c = opt->piece_comm[p];
    double *all = opt->agree_all; /* room for every rank of opt->comm */
    int n = 0;
    int rc = MPI_Comm_size(c, &n);
    double send[3] = {(double)local, 0.0, 0.0};
    for (size_t k = 0; k < count && local == CLOPT_SUCCESS; k++)
        send[1 + k] = (double)mine[k];
    if (rc == MPI_SUCCESS)
        rc = MPI_Allgather(send, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, c);
    opt->piece_done[p] = 1;
    clopt_status s = local;
    if (s == CLOPT_SUCCESS && rc != MPI_SUCCESS)
        s = clopt_mpi_check(opt, rc, "MPI_Allgather (a cut tensor's sums)");
    for (int r = 0; s == CLOPT_SUCCESS && r < n; r++) {
        if (all[3 * (size_t)r] != 0.0) {
            s = clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_REMOTE,
                               "a rank holding another piece of tensor %zu failed",
                               opt->pieces[p].tensor);
            break;
        }
        for (size_t k = 0; k < count; k++)
            total[k] = (r ? total[k] : 0.0) + all[3 * (size_t)r + 1 + k];
    }
    return s;
}

static clopt_status hook(void *user, clopt_tensor_sums *ts)
{
    clopt_mpi_optimizer *opt = user;
    const size_t p = ts->param;
    if (p >= opt->npieces || opt->piece_comm[p] == MPI_COMM_NULL)
        return CLOPT_SUCCESS; /* a whole tensor: its own sums are the tensor's */
    clopt_status s = CLOPT_SUCCESS;
    float f[2] = {0.0f, 0.0f};
    if (ts->count > 2)
        s = clopt_mpi_fail(opt, CLOPT_ERR_UNSUPPORTED, "%zu sums per tensor", ts->count);
    const size_t count = ts->count > 2 ? 2 : ts->count;
    cl_int e = CL_SUCCESS;
    if (s == CLOPT_SUCCESS &&
        (e = clEnqueueReadBuffer(ts->queue, ts->sums.buffer, CL_TRUE,
                                 ts->sums.offset * sizeof(float), count * sizeof(float), f, 0,
                                 NULL, NULL)) != CL_SUCCESS)
        s = clopt_mpi_cl_fail(opt, e, "reading a piece's sums");
    double total[2] = {0.0, 0.0};
    s = combine(opt, p, s, f, count, total);
    if (s != CLOPT_SUCCESS)
        return s;
    for (size_t k = 0; k < count; k++)
        f[k] = (float)total[k];
    if ((e = clEnqueueWriteBuffer(ts->queue, ts->sums.buffer, CL_TRUE,
                                  ts->sums.offset * sizeof(float), count * sizeof(float), f, 0,
                                  NULL, NULL)) != CL_SUCCESS)
        return clopt_mpi_cl_fail(opt, e, "writing a tensor's sums");
    ts->elements = (double)opt->shapes[opt->pieces[p].tensor].n;
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_sums_setup(clopt_mpi_optimizer *opt, clopt_status local)
{
    clopt_status s = local;
    if (s == CLOPT_SUCCESS && opt->npieces) {
        opt->piece_comm = malloc(opt->npieces * sizeof *opt->piece_comm);
        opt->piece_done = calloc(opt->npieces, sizeof *opt->piece_done);
        if (!opt->piece_comm || !opt->piece_done)
            s = clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
        for (size_t p = 0; opt->piece_comm && p < opt->npieces; p++)
            opt->piece_comm[p] = MPI_COMM_NULL;
    }
    /* every rank splits for every cut tensor, in tensor order (the layout is global) */
    size_t p = 0;
    int any = 0;
    for (size_t i = 0; opt->size > 1 && i < opt->ntensors; i++) {
        const clopt_mpi_shape *t = &opt->shapes[i];
        int holders = 0, mine = 0;
        for (int r = 0; r < opt->size; r++) {
            const size_t a = (size_t)opt->displs[r], b = a + (size_t)opt->counts[r];
            if (a < t->flat + t->n && t->flat < b) {
                holders++;
                mine |= r == opt->rank;
            }
        }
        if (holders < 2)
            continue;
        while (p < opt->npieces && opt->pieces[p].tensor < i)
            p++;
        const int here = mine && s == CLOPT_SUCCESS && p < opt->npieces &&
                         opt->pieces[p].tensor == i;
        MPI_Comm c = MPI_COMM_NULL;
        const int rc = MPI_Comm_split(opt->comm, here ? 0 : MPI_UNDEFINED, opt->rank, &c);
        if (rc != MPI_SUCCESS) {
            if (s == CLOPT_SUCCESS)
                s = clopt_mpi_check(opt, rc, "MPI_Comm_split (a cut tensor)");
            continue;
        }
        if (here) {
            MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
            opt->piece_comm[p] = c;
            any = 1;
        } else if (c != MPI_COMM_NULL) {
            MPI_Comm_free(&c);
        }
    }
    if (s == CLOPT_SUCCESS && any) {
        s = clopt_optimizer_set_tensor_sums_hook(opt->local, hook, opt);
        if (s != CLOPT_SUCCESS)
            clopt_mpi_fail(opt, s, "the tensor-sums hook: %s", clopt_ctx_last_error(opt->ctx));
    }
    return s;
}

void clopt_mpi_sums_release(clopt_mpi_optimizer *opt)
{
    for (size_t p = 0; opt->piece_comm && p < opt->npieces; p++)
        if (opt->piece_comm[p] != MPI_COMM_NULL)
            MPI_Comm_free(&opt->piece_comm[p]);
    free(opt->piece_comm);
    free(opt->piece_done);
    free(opt->rep_cnt);
    free(opt->rep_host);
    opt->rep_cnt = NULL;
    opt->rep_host = NULL;
    opt->piece_comm = NULL;
    opt->piece_done = NULL;
}

void clopt_mpi_sums_begin(clopt_mpi_optimizer *opt)
{
    if (opt->piece_done)
        memset(opt->piece_done, 0, opt->npieces * sizeof *opt->piece_done);
}

void clopt_mpi_sums_finish(clopt_mpi_optimizer *opt, clopt_status s)
{
    if (!opt->piece_comm)
        return;
    const clopt_status fail = s != CLOPT_SUCCESS ? s : CLOPT_ERR_INVALID_ARGUMENT;
    for (size_t p = 0; p < opt->npieces; p++) {
        if (opt->piece_comm[p] == MPI_COMM_NULL || opt->piece_done[p] || !piece_has_sums(opt, p))
            continue;
        double total[2];
        char keep[sizeof opt->err];
        memcpy(keep, opt->err, sizeof keep); /* the step's own detail stays */
        combine(opt, p, fail, NULL, 0, total);
        memcpy(opt->err, keep, sizeof keep);
    }
}

clopt_status clopt_mpi_rep_grads(clopt_mpi_optimizer *opt, cl_command_queue q, clopt_status local)
{
    clopt_status s = local;
    for (size_t p = 0; opt->piece_comm && p < opt->npieces; p++) {
        const clopt_mpi_piece *pc = &opt->pieces[p];
        if (!pc->rep || opt->piece_comm[p] == MPI_COMM_NULL)
            continue;
        const clopt_mpi_shape *t = &opt->shapes[pc->tensor];
        /* the holders in rank order (the communicator's order): their parts of the tensor
           (the buffers were allocated with the slice: every holder reaches the collective) */
        int *cnt = opt->rep_cnt;
        float *whole = opt->rep_host;
        int nh = 0;
        for (int r = 0; r < opt->size; r++) {
            const size_t a = (size_t)opt->displs[r], b = a + (size_t)opt->counts[r];
            const size_t lo = a > t->flat ? a : t->flat, hi = b < t->flat + t->n ? b : t->flat + t->n;
            if (lo < hi) {
                cnt[nh] = (int)(hi - lo);
                cnt[opt->size + nh] = (int)(lo - t->flat);
                nh++;
            }
        }
        /* a failure still takes part (with whatever host_s holds), so no holder waits */
        const float *mine = opt->host_s + (t->flat + pc->slo - opt->first);
        const int rc = MPI_Allgatherv(mine, (int)(pc->shi - pc->slo), MPI_FLOAT, whole, cnt,
                                      cnt + opt->size, MPI_FLOAT, opt->piece_comm[p]);
        if (s == CLOPT_SUCCESS && rc != MPI_SUCCESS)
            s = clopt_mpi_check(opt, rc, "MPI_Allgatherv (a cut tensor's gradient)");
        if (s == CLOPT_SUCCESS) {
            const cl_int e = clEnqueueWriteBuffer(q, opt->shard_grad, CL_TRUE,
                                                  pc->rep_goff * sizeof(float),
                                                  t->n * sizeof(float), whole, 0, NULL, NULL);
            if (e != CL_SUCCESS)
                s = clopt_mpi_cl_fail(opt, e, "writing a cut tensor's gradient");
        }
    }
    return s;
}
