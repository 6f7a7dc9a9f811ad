/* SPDX-License-Identifier: MIT */
/* One sharded step: the gradient slice (the engine's reduced gradient, or clopt's
 * reduce-scatter), one small allgather that agrees on errors and combines the partials of the
 * global norm and the Inf/NaN check, the fused update of the slice by the internal optimizer,
 * and the all-gather of the parameters. Everything crosses host memory (see clopt_mpi.h). */
#include "mpi_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Enqueue reads (to_host 1) or writes of flattened [a, b) between the buffer's runs and
   elements a .. b of host (es bytes each) on q (non-blocking; the caller finishes q). */
static cl_int transfer(cl_command_queue q, cl_mem buf, const clopt_mpi_run *runs, size_t nruns,
                       size_t a, size_t b, void *host, size_t es, int to_host)
{
    unsigned char *h = host;
    for (size_t i = 0; i < nruns; i++) {
        const clopt_mpi_run *r = &runs[i];
        const size_t lo = r->flat > a ? r->flat : a;
        const size_t hi = r->flat + r->len < b ? r->flat + r->len : b;
        if (lo >= hi)
            continue;
        const size_t off = (r->off + (lo - r->flat)) * es, bytes = (hi - lo) * es;
        const cl_int e =
            to_host ? clEnqueueReadBuffer(q, buf, CL_FALSE, off, bytes, h + lo * es, 0, NULL, NULL)
                    : clEnqueueWriteBuffer(q, buf, CL_FALSE, off, bytes, h + lo * es, 0, NULL,
                                           NULL);
        if (e != CL_SUCCESS)
            return e;
    }
    return CL_SUCCESS;
}

/* n 16-bit gradient words of type dt to floats (exact), one loop per type (each vectorises). */
static void widen(clopt_dtype dt, const uint16_t *src, float *dst, size_t n)
{
    if (dt == CLOPT_DTYPE_BF16)
        for (size_t i = 0; i < n; i++)
            dst[i] = clopt_mpi_half_to_float(CLOPT_DTYPE_BF16, src[i]);
    else
        for (size_t i = 0; i < n; i++)
            dst[i] = clopt_mpi_half_to_float(CLOPT_DTYPE_F16, src[i]);
}

/* The queue a step may use: the context's, or one of its cl_context and device. */
static clopt_status check_queue(clopt_mpi_optimizer *opt, cl_command_queue q)
{
    cl_context c = NULL;
    cl_device_id d = NULL;
    cl_command_queue_properties p = 0;
    if (clGetCommandQueueInfo(q, CL_QUEUE_CONTEXT, sizeof c, &c, NULL) != CL_SUCCESS ||
        clGetCommandQueueInfo(q, CL_QUEUE_DEVICE, sizeof d, &d, NULL) != CL_SUCCESS ||
        clGetCommandQueueInfo(q, CL_QUEUE_PROPERTIES, sizeof p, &p, NULL) != CL_SUCCESS)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "queue is not a command queue");
    if (c != clopt_ctx_cl_context(opt->ctx) || d != clopt_ctx_cl_device(opt->ctx))
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                              "queue belongs to another context or device");
    if (p & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "queue is out of order");
    return CLOPT_SUCCESS;
}

/* Reduce-scatter mode: every rank's local gradient in host_g (total floats) -> this rank's
   reduced slice in host_s. */
static clopt_status reduce_scatter(clopt_mpi_optimizer *opt)
{
    const size_t n = opt->count, N = (size_t)opt->size;
    int rc;
    if (opt->o.ordered_sum) {
        /* every rank sends slice r of its gradient to rank r; the sum runs in rank order */
        const int *rcounts = opt->rs_counts, *rdispls = opt->rs_counts + N;
        /* 16-bit gradients travel as they are (half the bytes) and are summed as floats */
        const int half = opt->ges == 2;
        rc = half ? MPI_Alltoallv(opt->host_g16, opt->counts, opt->displs, MPI_UINT16_T,
                                  opt->host_recv16, rcounts, rdispls, MPI_UINT16_T, opt->comm)
                  : MPI_Alltoallv(opt->host_g, opt->counts, opt->displs, MPI_FLOAT,
                                  opt->host_recv, rcounts, rdispls, MPI_FLOAT, opt->comm);
        if (rc != MPI_SUCCESS)
            return clopt_mpi_check(opt, rc, "MPI_Alltoallv (reduce-scatter)");
        if (half)
            widen(opt->gdt, opt->host_recv16, opt->host_recv, N * n);
        for (size_t i = 0; i < n; i++) {
            float s = opt->host_recv[i];
            for (size_t r = 1; r < N; r++)
                s += opt->host_recv[r * n + i];
            opt->host_s[i] = s;
        }
    } else {
        rc = MPI_Reduce_scatter(opt->host_g, opt->host_s, opt->counts, MPI_FLOAT, MPI_SUM,
                                opt->comm);
        if (rc != MPI_SUCCESS)
            return clopt_mpi_check(opt, rc, "MPI_Reduce_scatter");
    }
    if (opt->o.reduce_op == CLOPT_MPI_MEAN) {
        const float fn = (float)N;
        for (size_t i = 0; i < n; i++)
            opt->host_s[i] = opt->host_s[i] / fn;
    }
    return CLOPT_SUCCESS;
}

/* The internal optimizer's grad scale whose float reciprocal is exactly gm (the unsharded
   kernel's multiplier float(1/scale) · clip coefficient): 0 for 1 without AMP, the loss scale
   itself without clipping, else 1/gm in double (whose reciprocal rounds back to gm). */
static double local_scale(double amp_scale, float inv, float mul)
{
    if (mul == 1.0f)
        return amp_scale;
    return 1.0 / (double)(inv * mul);
}

/* Every rank's updated slice (in host_p[first .. first + count) after `s`, this rank's
   status of the update) into every rank's full parameter buffer: an agreement on s, the
   MPI_Allgatherv, the writes of the other slices, and an agreement on those (a rank whose
   writes failed holds others' old slices: every rank reports it). Timings added to *tg and
   *tw. */
static clopt_status gather_params(clopt_mpi_optimizer *opt, cl_command_queue q, clopt_status s,
                                  double *tg, double *tw)
{
    const size_t a = opt->first, n = opt->count;
    const double t0 = MPI_Wtime();
    int failed = s != CLOPT_SUCCESS, any = 0;
    int rc = MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, opt->comm);
    if (rc != MPI_SUCCESS)
        return s != CLOPT_SUCCESS ? s : clopt_mpi_check(opt, rc, "MPI_Allreduce");
    if (any)
        return s != CLOPT_SUCCESS ? s
                                  : clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_REMOTE,
                                                   "another rank's update failed (this shard "
                                                   "was updated; the parameters were not "
                                                   "gathered)");
    if (opt->size == 1)
        return CLOPT_SUCCESS; /* one rank: the buffer already holds every parameter */
    rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, opt->host_p, opt->counts, opt->displs,
                        opt->pes == 2 ? MPI_UINT16_T : MPI_FLOAT, opt->comm);
    const double t1 = MPI_Wtime();
    *tg += t1 - t0;
    if (rc != MPI_SUCCESS) {
        s = clopt_mpi_check(opt, rc, "MPI_Allgatherv (parameters)");
    } else {
        cl_int e = transfer(q, opt->pbuf, opt->prun, opt->nprun, 0, a, opt->host_p, opt->pes, 0);
        if (e == CL_SUCCESS)
            e = transfer(q, opt->pbuf, opt->prun, opt->nprun, a + n, opt->total, opt->host_p,
                         opt->pes, 0);
        if (e == CL_SUCCESS)
            e = clFinish(q);
        if (e != CL_SUCCESS)
            s = clopt_mpi_cl_fail(opt, e, "writing the gathered parameters");
    }
    const double t2 = MPI_Wtime();
    *tw += t2 - t1;
    /* a failure here is one rank's: without this the others would count the step (or take
       set_mode's new mode) while it does not, and their next collectives would not pair up */
    s = clopt_mpi_agree(opt, s, NULL, 0, opt->agree_all);
    *tg += MPI_Wtime() - t2;
    return s;
}

clopt_status clopt_mpi_optimizer_set_mode(clopt_mpi_optimizer *opt, int train)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    cl_command_queue q = clopt_ctx_cl_queue(opt->ctx);
    clopt_status s = CLOPT_SUCCESS;
    if (opt->has_group) {
        if ((s = clopt_optimizer_set_mode_on(opt->local, train != 0, q, 0, NULL, NULL)) !=
            CLOPT_SUCCESS)
            clopt_mpi_fail(opt, s, "%s", clopt_ctx_last_error(opt->ctx));
        if (s == CLOPT_SUCCESS) { /* clFinish also when one rank skips the gather */
            cl_int e = opt->size == 1 ? CL_SUCCESS
                                      : transfer(q, opt->pbuf, opt->prun, opt->nprun, opt->first,
                                                 opt->first + opt->count, opt->host_p, opt->pes,
                                                 1);
            if (e == CL_SUCCESS)
                e = clFinish(q);
            if (e != CL_SUCCESS)
                s = clopt_mpi_cl_fail(opt, e, "reading the shard");
        }
    }
    double tg = 0, tw = 0;
    s = gather_params(opt, q, s, &tg, &tw);
    /* the outcome is the same on every rank (gather_params agreed). A failure can leave some
       shards switched and others not (a rank's switch failed: the shards that did switch are
       not switched back, which could fail as well), or every parameter buffer without some
       slices: steps refuse on every rank until a set_mode succeeds (it finishes a switch that
       failed part way and gathers the parameters again) */
    opt->mode_failed = s != CLOPT_SUCCESS;
    if (s == CLOPT_SUCCESS)
        opt->eval_mode = !train;
    return s;
}

int clopt_mpi_optimizer_training(const clopt_mpi_optimizer *opt)
{
    return opt ? !opt->eval_mode : 1;
}

clopt_status clopt_mpi_optimizer_step(clopt_mpi_optimizer *opt, cl_command_queue queue)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    if (opt->mode_failed) /* the same on every rank: all return here */
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                              "the last clopt_mpi_optimizer_set_mode failed (the shards may be "
                              "in different modes, the parameters not gathered): call it again");
    if (opt->eval_mode) /* the same on every rank: all return here */
        return clopt_mpi_fail(
            opt, CLOPT_ERR_INVALID_ARGUMENT,
            "the optimizer is in eval mode: clopt_mpi_optimizer_set_mode(opt, 1)");
    cl_command_queue q = queue ? queue : clopt_ctx_cl_queue(opt->ctx);
    const int rs = opt->o.grad_mode == CLOPT_MPI_GRAD_REDUCE_SCATTER;
    const int amp = opt->scale > 0, clip = opt->max_norm > 0, check = amp || clip;
    const size_t a = opt->first, n = opt->count;
    clopt_mpi_step_timing tm = {0};
    const double t0 = MPI_Wtime();
    double t = t0, t1;
#define LAP(field) (t1 = MPI_Wtime(), tm.field += t1 - t, t = t1)

    /* phase 1 (changes nothing): the gradient slice on the host, its partials */
    clopt_status s = queue ? check_queue(opt, queue) : CLOPT_SUCCESS;
    cl_int e;
    if (s == CLOPT_SUCCESS && (rs || (check && n))) {
        const size_t lo = rs ? 0 : a, hi = rs ? opt->total : a + n;
        const int half = opt->ges == 2;
        e = transfer(q, opt->gbuf, opt->grun, opt->ngrun, lo, hi,
                     half ? (void *)opt->host_g16 : (void *)opt->host_g, opt->ges, 1);
        if (e == CL_SUCCESS)
            e = clFinish(q);
        if (e != CL_SUCCESS)
            s = clopt_mpi_cl_fail(opt, e, "reading the gradient");
        /* 16-bit words to floats, except those the ordered sum sends as they are */
        if (s == CLOPT_SUCCESS && half && !(rs && opt->o.ordered_sum))
            widen(opt->gdt, opt->host_g16 + lo, opt->host_g + lo, hi - lo);
    }
    LAP(read_s);
    if (rs) {
        if (s != CLOPT_SUCCESS) { /* take part anyway (zeros), the agreement below stops all */
            memset(opt->host_g, 0, opt->total * sizeof *opt->host_g);
            if (opt->host_g16)
                memset(opt->host_g16, 0, opt->total * sizeof *opt->host_g16);
        }
        clopt_status r = reduce_scatter(opt);
        if (s == CLOPT_SUCCESS)
            s = r;
    }
    LAP(reduce_s);
    const float inv = amp ? (float)(1.0 / opt->scale) : 1.0f;
    /* Σ (inv·g)² in double in element order; the non-finite count; the clip threshold and
       the loss scale, which every rank must have set alike (checked below: a rank with
       another AMP verdict would skip while the others wait in the update's collectives) */
    double part[4] = {0.0, 0.0, opt->max_norm, opt->scale};
    if (s == CLOPT_SUCCESS && check) {
        const float *g = rs ? opt->host_s : opt->host_g + a;
        for (size_t i = 0; i < n; i++) {
            const float x = g[i] * inv;
            if (!isfinite(x))
                part[1] += 1.0;
            else
                part[0] += (double)x * (double)x;
        }
    }
    double *all = opt->agree_all; /* allocated at create: no rank can drop out here */
    s = clopt_mpi_agree(opt, s, part, 4, all);
    double sumsq = 0.0, bad = 0.0;
    for (int r = 0; r < opt->size; r++) { /* rank order: the same sum on every rank */
        sumsq += all[5 * (size_t)r + 1];
        bad += all[5 * (size_t)r + 2];
    }
    for (int r = 1; s == CLOPT_SUCCESS && r < opt->size; r++) /* every rank judges alike */
        if (all[5 * (size_t)r + 3] != all[3] || all[5 * (size_t)r + 4] != all[4]) /* -0 = 0 */
            s = clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_MISMATCH,
                               "rank %d's grad clip or grad scale (%g, %g) differs from rank "
                               "0's (%g, %g): set them alike on every rank",
                               r, all[5 * (size_t)r + 3], all[5 * (size_t)r + 4], all[3], all[4]);
    LAP(agree_s);
    if (s != CLOPT_SUCCESS)
        return s;
    if (clip)
        opt->last_norm = bad > 0 ? NAN : sqrt(sumsq);
    if (amp && bad > 0) {
        tm.total_s = MPI_Wtime() - t0;
        opt->timing = tm;
        return CLOPT_STEP_SKIPPED; /* every rank saw the same count: nothing changes anywhere */
    }

    /* phase 2: the update of the slice (the clip coefficient as the device computes it) */
    float mul = 1.0f;
    if (clip && bad == 0) {
        const float coef = (float)opt->max_norm / ((float)sqrt(sumsq) + 1e-6f);
        if (isfinite(coef) && coef < 1.0f)
            mul = coef;
    }
    if (rs) /* Adafactor's cut tensors: their whole reduced gradient on each holder */
        s = clopt_mpi_rep_grads(opt, q, s);
    if (opt->has_group) {
        clopt_mpi_sums_begin(opt);
        if (rs) {
            e = clEnqueueWriteBuffer(q, opt->shard_grad, CL_TRUE, 0, n * sizeof(float), opt->host_s,
                                     0, NULL, NULL);
            if (e != CL_SUCCESS)
                s = clopt_mpi_cl_fail(opt, e, "writing the shard's gradient");
        }
        if (s == CLOPT_SUCCESS &&
            (s = clopt_optimizer_set_grad_scale(opt->local, local_scale(opt->scale, inv, mul))) !=
                CLOPT_SUCCESS)
            clopt_mpi_fail(opt, s, "the clip coefficient %g is out of the core's range",
                           (double)mul);
        if (s == CLOPT_SUCCESS &&
            (s = clopt_optimizer_step_on(opt->local, q, 0, NULL, NULL)) != CLOPT_SUCCESS &&
            s != (clopt_status)CLOPT_MPI_ERR_REMOTE) /* (the hook's detail is already there) */
            clopt_mpi_fail(opt, s, "the shard's step: %s", clopt_ctx_last_error(opt->ctx));
        clopt_mpi_sums_finish(opt, s); /* cut tensors the step did not reach */
        if (s == CLOPT_SUCCESS) { /* the shard for the all-gather (one rank: none) */
            e = opt->size == 1
                    ? CL_SUCCESS
                    : transfer(q, opt->pbuf, opt->prun, opt->nprun, a, a + n, opt->host_p,
                               opt->pes, 1);
            if (e == CL_SUCCESS)
                e = clFinish(q);
            if (e != CL_SUCCESS)
                s = clopt_mpi_cl_fail(opt, e, "reading the updated shard");
        }
        clopt_step_report rep;
        if (s == CLOPT_SUCCESS)
            clopt_optimizer_poll(opt->local, &rep); /* the host's counts exact again */
    }
    LAP(update_s);
    s = gather_params(opt, q, s, &tm.gather_s, &tm.write_s);
    if (s != CLOPT_SUCCESS)
        return s;
    t = MPI_Wtime();
#undef LAP
    tm.total_s = t - t0;
    opt->timing = tm;
    opt->steps++;
    return CLOPT_SUCCESS;
}
