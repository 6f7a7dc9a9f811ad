/* SPDX-License-Identifier: MIT */
/* The sharded optimizer's layout, shared by host/mpi/sharded.c (lifecycle, settings) and
 * host/mpi/mpi_step.c (the step and its transfers). Only clopt's public API is used: the
 * core library exports nothing else. */
#ifndef CLOPT_MPI_INTERNAL_H
#define CLOPT_MPI_INTERNAL_H

#include "clopt_mpi.h"

#include <stdarg.h>

/* A run of the flattened vector that lies contiguously in a device buffer: flattened
   elements [flat, flat + len) are at buffer offsets [off, off + len). */
typedef struct clopt_mpi_run {
    size_t flat, off, len;
} clopt_mpi_run;

/* A tensor's shape as registered (the checkpoint's layout). */
typedef struct clopt_mpi_shape {
    size_t ndim, shape[CLOPT_MAX_DIMS], n, flat; /* flat: its first flattened element */
} clopt_mpi_shape;

/* A piece of the slice: elements [off, off + len) of tensor `tensor` (the internal
   optimizer's parameter of the same index). */
typedef struct clopt_mpi_piece {
    size_t tensor, off, len;
} clopt_mpi_piece;

struct clopt_mpi_optimizer {
    clopt_ctx *ctx;
    MPI_Comm comm; /* the library's duplicate (MPI_ERRORS_RETURN) */
    int rank, size;
    clopt_rule rule;
    clopt_mpi_options o;
    clopt_optimizer *local; /* the shard's optimizer: group 0 empty, group 1 the range group */
    int has_group;          /* group 1 exists (the rank owns elements) */
    size_t total;           /* flattened elements */
    size_t first, count;    /* this rank's slice */
    int *counts, *displs;   /* every rank's slice, for MPI (total <= INT_MAX) */
    cl_mem pbuf, gbuf;      /* the engine's parameter and gradient buffers (not owned) */
    clopt_mpi_run *prun, *grun; /* coalesced runs of the parameters and gradients */
    size_t nprun, ngrun;
    cl_mem shard_grad;      /* reduce-scatter mode: the slice's reduced gradient (owned) */
    float *host_p;          /* total floats: the all-gather's staging */
    float *host_g;          /* engine mode: total floats (the slice is used); reduce-scatter:
                               the local gradient, total floats */
    float *host_s;          /* reduce-scatter: count floats of the reduced slice */
    float *host_recv;       /* ordered sum: size * count floats from every rank */
    size_t ntensors;
    clopt_mpi_shape *shapes;  /* ntensors */
    clopt_mpi_piece *pieces;  /* npieces, in tensor order */
    size_t npieces;
    double max_norm, scale, last_norm;
    uint64_t steps;
    clopt_mpi_step_timing timing; /* the last step's */
    char err[512];
};

/* Records a failure's detail on opt (printf format) and returns s. */
clopt_status clopt_mpi_fail(clopt_mpi_optimizer *opt, clopt_status s, const char *fmt, ...);
/* The status of an MPI return code, with its text in opt's detail (what: the call). */
clopt_status clopt_mpi_check(clopt_mpi_optimizer *opt, int rc, const char *what);
/* Status of an OpenCL code (CLOPT_ERR_OPENCL_BASE + e), with the detail. */
clopt_status clopt_mpi_cl_fail(clopt_mpi_optimizer *opt, cl_int e, const char *what);

/* Every rank's status after a phase: MPI_Allgather of the local status plus extra doubles
   (n per rank, may be 0) into all[size * (n + 1)] (rank r's at r * (n + 1): status first).
   Returns the local status when it failed, CLOPT_MPI_ERR_REMOTE when another rank's did,
   CLOPT_MPI_ERR_MPI when the allgather itself failed, else CLOPT_SUCCESS. */
clopt_status clopt_mpi_agree(clopt_mpi_optimizer *opt, clopt_status local, const double *extra,
                             size_t n, double *all);

#endif
