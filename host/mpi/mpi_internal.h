/* SPDX-License-Identifier: MIT */
/* The sharded optimizer's layout, shared by host/mpi/sharded.c (lifecycle, settings) and
 * host/mpi/mpi_step.c (the step and its transfers). Only clopt's public API is used: the
 * core library exports nothing else. */
#ifndef CLOPT_MPI_INTERNAL_H
#define CLOPT_MPI_INTERNAL_H

#include "clopt_mpi.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

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
    /* Adafactor, a tensor the shards cut: every rank holding part of it updates it whole
       (off 0, len n; its statistics replicated): 1 on the tensor's first holder, which saves
       it in checkpoints, 2 on the others; 0 otherwise. [slo, shi): the tensor's elements in
       this rank's slice. */
    int rep;
    size_t slo, shi;
    size_t rep_goff; /* rep, reduce-scatter mode: the tensor's whole reduced gradient in
                        shard_grad (after the slice's) */
} clopt_mpi_piece;

struct clopt_mpi_optimizer {
    clopt_ctx *ctx;
    MPI_Comm comm; /* the library's duplicate (MPI_ERRORS_RETURN) */
    int rank, size;
    clopt_rule rule;
    clopt_mpi_options o;
    clopt_optimizer *local;     /* the shard's optimizer: group 0 empty, then one range group per
                                   group that has pieces here (lgroup) */
    int has_group;              /* the rank owns elements (the internal optimizer has tensors) */
    size_t total;               /* flattened elements */
    size_t first, count;        /* this rank's slice */
    int *counts, *displs;       /* every rank's slice, for MPI (total <= INT_MAX) */
    cl_mem pbuf, gbuf;          /* the engine's parameter and gradient buffers (retained) */
    clopt_mpi_run *prun, *grun; /* coalesced runs of the parameters and gradients */
    size_t nprun, ngrun;
    /* the engine's storage of the parameters and of the gradients (every tensor's: F32, F16
       or BF16) and their bytes per element */
    clopt_dtype pdt, gdt;
    size_t pes, ges;
    cl_mem shard_grad; /* reduce-scatter mode: the slice's reduced gradient, then the whole
                          reduced gradients of replicated pieces (owned; float32 whatever
                          gdt is) */
    unsigned char *host_p; /* total elements of pes bytes: the all-gather's staging */
    float *host_g;         /* engine mode: total floats (the slice is used); reduce-scatter:
                              the local gradient, total floats (16-bit: converted) */
    uint16_t *host_g16;    /* 16-bit gradients: the words as read (total) */
    float *host_s;         /* reduce-scatter: count floats of the reduced slice */
    float *host_recv;      /* ordered sum: size * count floats (16-bit: widened) */
    uint16_t *host_recv16; /* ordered sum, 16-bit gradients: size * count words received */
    int *rs_counts;        /* ordered sum: what every rank sends here (count), then where it
                              lands in host_recv (r * count): 2 * size ints */
    double *agree_all;     /* size * CLOPT_MPI_AGREE_MAX doubles, allocated at create (so that
                              no rank drops out of a collective): every phase's agreement, a
                              cut tensor's gathered {status, sums} */
    size_t ngroups;
    clopt_hparams *hps;    /* every group's hyperparameters (as last set) */
    uint32_t *gstream;     /* every group's stochastic-rounding stream (clopt_range_group) */
    int *lgroup;           /* group g's range group in the internal optimizer, -1: none here */
    clopt_param_desc *cat; /* every group's tensors, concatenated (the flattened order) */
    size_t *tgroup;        /* the group of each */
    size_t ncat;
    size_t ntensors;         /* = ncat once built */
    clopt_mpi_shape *shapes; /* ntensors */
    clopt_mpi_piece *pieces; /* npieces, in tensor order */
    size_t npieces;
    /* cut tensors (mpi_sums.c): per piece, the communicator of the ranks holding pieces of its
       tensor (MPI_COMM_NULL when the tensor is whole here), and whether this step's sums of
       the piece were combined */
    MPI_Comm *piece_comm;
    int *piece_done;
    int *rep_cnt;     /* reduce-scatter, replicated pieces: 2 * size ints (Allgatherv) */
    float *rep_host;  /* ... and the largest replicated tensor's floats */
    double max_norm, scale, last_norm;
    uint64_t steps;
    int eval_mode;                /* Schedule-Free: the parameters hold x (set_mode(opt, 0)) */
    /* the last set_mode failed (on every rank alike: its outcome is agreed): some shards may
       have switched and others not, or the parameters were not gathered, so steps refuse
       until a set_mode succeeds */
    int mode_failed;
    /* The gathered save's largest state and file, in bytes: INT_MAX (MPI_Gatherv's and
       MPI_Bcast's counts are int). Every rank judges the gathered total against its own
       value, so it must be the same everywhere; tests lower it on every rank to reach the
       refusal without gigabytes of state. */
    size_t gather_max;
    clopt_mpi_step_timing timing; /* the last step's */
    char err[512];
};

/* Records a failure's detail on opt (printf format) and returns s. */
clopt_status clopt_mpi_fail(clopt_mpi_optimizer *opt, clopt_status s, const char *fmt, ...);
/* The status of an MPI return code, with its text in opt's detail (what: the call). */
clopt_status clopt_mpi_check(clopt_mpi_optimizer *opt, int rc, const char *what);
/* Status of an OpenCL code (CLOPT_ERR_OPENCL_BASE + e), with the detail. */
clopt_status clopt_mpi_cl_fail(clopt_mpi_optimizer *opt, cl_int e, const char *what);

/* Doubles per rank in agree_all: the status and up to 4 values (the step's). */
#define CLOPT_MPI_AGREE_MAX 5

/* Every rank's status after a phase: MPI_Allgather of the local status plus extra doubles
   (n per rank, at most CLOPT_MPI_AGREE_MAX - 1) into all[size * (n + 1)] (rank r's at
   r * (n + 1): status first).
   Returns the local status when it failed, CLOPT_MPI_ERR_REMOTE when another rank's did,
   CLOPT_MPI_ERR_MPI when the allgather itself failed, else CLOPT_SUCCESS. */
clopt_status clopt_mpi_agree(clopt_mpi_optimizer *opt, clopt_status local, const double *extra,
                             size_t n, double *all);

/* ---- per-tensor sums of cut tensors (mpi_sums.c) --------------------------------------- */

/* Rows of tensor t under hp's gradient centralization (0: GC does not apply to it). */
size_t clopt_mpi_gc_rows(const clopt_hparams *hp, const clopt_mpi_shape *t);
/* Collective, after the slice is built (every rank calls it, also after a local failure,
   passing it as `local`): one communicator per tensor that two or more ranks hold pieces of,
   and the internal optimizer's tensor-sums hook that combines those pieces' sums (LAMB,
   StableAdamW, cautious masking). Returns the local status (not agreed). */
clopt_status clopt_mpi_sums_setup(clopt_mpi_optimizer *opt, clopt_status local);
void clopt_mpi_sums_release(clopt_mpi_optimizer *opt);
/* Before the internal step: no piece combined yet. */
void clopt_mpi_sums_begin(clopt_mpi_optimizer *opt);
/* After the internal step returned s: the pieces whose sums the step should have combined
   but did not (it failed before) take part in their collectives with a failure, so the
   other ranks holding those tensors fail too instead of waiting. */
void clopt_mpi_sums_finish(clopt_mpi_optimizer *opt, clopt_status s);
/* Reduce-scatter mode, collective over the holders of each replicated piece (every rank
   calls it, passing a local failure as `local`): the tensor's reduced gradient gathered from
   its holders' slices (host_s) into shard_grad at the piece's rep_goff on q. */
clopt_status clopt_mpi_rep_grads(clopt_mpi_optimizer *opt, cl_command_queue q, clopt_status local);

/* ---- bytes for the checkpoints (mpi_bytes.c) ------------------------------------------ */

#define CLOPT_MPI_NAME_LEN 32 /* a state's name in a file, NUL-padded */

/* A growable byte buffer: oom 1 once an allocation failed (later puts do nothing). */
typedef struct clopt_mpi_blob {
    unsigned char *p;
    size_t len, cap;
    int oom;
} clopt_mpi_blob;
void clopt_mpi_put(clopt_mpi_blob *b, const void *src, size_t n);
void clopt_mpi_put_u32(clopt_mpi_blob *b, uint32_t v);
void clopt_mpi_put_u64(clopt_mpi_blob *b, uint64_t v);
/* A bounds-checked reader: bad 1 once a read ran past len (later reads give NULL / 0). */
typedef struct clopt_mpi_reader {
    const unsigned char *p;
    size_t len, at;
    int bad;
} clopt_mpi_reader;
const void *clopt_mpi_get(clopt_mpi_reader *r, size_t n);
uint32_t clopt_mpi_get_u32(clopt_mpi_reader *r);
uint64_t clopt_mpi_get_u64(clopt_mpi_reader *r);
/* CRC-32C (Castagnoli) of n bytes. */
uint32_t clopt_mpi_crc32c(const unsigned char *p, size_t n);
/* 8-bit state: one absmax per block of 256 elements (the core's blocks start at each
   tensor's first element, hence at each piece's: shard boundaries inside a tensor with
   8-bit state fall on multiples of 256 from its start). */
#define CLOPT_MPI_Q8_BLOCK 256
/* Elements per entry of a state named `name`: CLOPT_MPI_Q8_BLOCK for an absmax
   ("<state>.absmax"), else 1; and the entries of such a state over n elements. */
size_t clopt_mpi_state_unit(const char *name);
size_t clopt_mpi_state_units(const char *name, size_t n);
/* Exact float value of a 16-bit gradient word of type dt (F16 or BF16), without branches
   (f16: 0.4 ns per value in a loop on the 2-core CI machine, 3x the version with them).
   f16: the exponent rebased from 15 to 127 (Inf/NaN: to 255, the payload kept); a
   subnormal or zero (exponent 0) is its 10-bit fraction times 2^-24, converted exactly.
   Checked against GCC's _Float16 on all 65536 values. */
static inline float clopt_mpi_half_to_float(clopt_dtype dt, uint16_t h)
{
    uint32_t u;
    float f;
    if (dt == CLOPT_DTYPE_BF16) {
        u = (uint32_t)h << 16; /* bf16 is a float's top half */
        memcpy(&f, &u, sizeof f);
        return f;
    }
    const uint32_t em = (uint32_t)(h & 0x7FFFu) << 13, ex = em & 0x0F800000u;
    const uint32_t special = 0u - (uint32_t)(ex == 0x0F800000u), sub = 0u - (uint32_t)(ex == 0);
    const uint32_t norm = em + 0x38000000u + (special & 0x38000000u);
    const float sf = (float)(int32_t)(h & 0x3FFu) * 5.9604644775390625e-08f; /* m · 2^-24 */
    uint32_t sb;
    memcpy(&sb, &sf, sizeof sb);
    u = (sb & sub) | (norm & ~sub) | (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &u, sizeof f);
    return f;
}
/* A checkpoint saved before the first step holds no value for the float32 master of 16-bit
   parameters (the tensor's first step takes it from θ): state k of `param` is such a master
   and steps (the checkpoint's count) is 0. Loads skip it. */
int clopt_mpi_master_unset(const clopt_optimizer *o, size_t param, size_t k, uint64_t steps);
/* The check before such a load: that master cannot be restored into a tensor that has
   stepped (its master was taken): CLOPT_ERR_STATE_MISMATCH with the reason in *why. */
clopt_status clopt_mpi_check_master(const clopt_optimizer *o, size_t param, uint64_t steps,
                                    const char **why);
/* The storage type of state k of `param` of an optimizer (its state entries). */
clopt_dtype clopt_mpi_state_dtype(const clopt_optimizer *o, size_t param, size_t k);
/* Blocking read (write 0) or write of len elements of esize bytes of state k of `param`:
   float32 through clopt_optimizer_read_state/write_state, 16-bit words directly. */
clopt_status clopt_mpi_state_io(clopt_optimizer *o, clopt_ctx *ctx, size_t param, size_t k,
                                void *host, size_t len, size_t esize, int write);
/* This rank's pieces and their states: per piece u64 tensor, u64 offset in the tensor, u64
   length, u32 nstate, per state char name[32], u32 esize, u64 length, the bytes. */
clopt_status clopt_mpi_pack_pieces(clopt_mpi_optimizer *opt, clopt_mpi_blob *b);
/* b written to "<path>.<pid>.tmp" and fsync'ed; its name in tmp (4096 bytes; "" when nothing
   was left behind). The caller renames it over path, or removes it. */
clopt_status clopt_mpi_write_tmp(clopt_mpi_optimizer *opt, const char *path,
                                 const clopt_mpi_blob *b, char *tmp);
/* path written atomically (clopt_mpi_write_tmp, then rename). */
clopt_status clopt_mpi_write_file(clopt_mpi_optimizer *opt, const char *path,
                                  const clopt_mpi_blob *b);
/* A whole file of up to max bytes (any size: SIZE_MAX) read into *out (malloc'ed; *len
   bytes): CLOPT_ERR_IO, CLOPT_ERR_OUT_OF_MEMORY or CLOPT_ERR_INVALID_SIZE (over max: refused
   before it is read), *out and *len untouched then. */
clopt_status clopt_mpi_read_file(const char *path, size_t max, unsigned char **out,
                                 size_t *len);
/* Collective: rank 0 reads path, every rank receives the bytes (*out, malloc'ed); the same
   status on every rank (CLOPT_MPI_ERR_REMOTE where another rank failed; a file over INT_MAX
   bytes, MPI_Bcast's count: CLOPT_ERR_INVALID_SIZE on rank 0). */
clopt_status clopt_mpi_bcast_file(clopt_mpi_optimizer *opt, const char *path, unsigned char **out,
                                  size_t *len);

#endif
