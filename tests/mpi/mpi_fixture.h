/* SPDX-License-Identifier: MIT */
/* Shared by the MPI tests: checks that abort the whole job, a context per rank, flat layouts
 * with gaps (tensors at offsets in one parameter and one gradient buffer, as an engine's
 * flat arrays), deterministic values, and the unsharded reference optimizer. */
#ifndef CLOPT_MPI_FIXTURE_H
#define CLOPT_MPI_FIXTURE_H

#include "clopt_mpi.h"

#include <stdio.h>
#include <stdlib.h>

extern int fx_rank, fx_size;
extern clopt_ctx *fx_ctx;

/* A failed check prints where and why, then ends every rank (MPI_Abort): no rank is left
   waiting in a collective. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: %s:%d: check failed: %s: ", fx_rank, __FILE__, __LINE__,     \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            fflush(stderr);                                                                        \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)
#define CHECK_STATUS(expr, want)                                                                   \
    do {                                                                                           \
        const clopt_status s_ = (expr);                                                            \
        CHECK(s_ == (want), "%s (%d), wanted %s", clopt_mpi_status_name(s_), (int)s_,              \
              clopt_mpi_status_name(want));                                                        \
    } while (0)
#define CHECK_OK(expr) CHECK_STATUS(expr, CLOPT_SUCCESS)

/* MPI_Init, the rank's context (CLOPT_DEVICE or the default device). */
void fx_init(int *argc, char ***argv);
/* Destroys the context, MPI_Finalize, prints "<name>: ok" on rank 0; returns 0. */
int fx_finish(const char *name);
/* A SIGALRM handler for alarm() around collectives: a rank left waiting in one (the bugs
   the agreement tests cover) fails the test at once instead of at CTest's timeout. */
void fx_watchdog(void);
/* "<TMPDIR or /tmp>/<stem>_<rank 0's pid><suffix>" into buf, the same name on every rank (a
   collective: every rank calls it, in the same order). */
void fx_tmp_path(char *buf, size_t cap, const char *stem, const char *suffix);
/* Removes the files of a checkpoint saved at prefix in both forms: prefix itself (gathered),
   and prefix.manifest with prefix.<r> for every rank r (save_shards). Local. */
void fx_remove_checkpoint(const char *prefix);

/* A flat layout: ntensors shapes; parameters at poff[i] (with gaps of 3 floats, starting at
   5), gradients packed from offset 2; plen / glen the buffer lengths; total the flattened
   elements. */
#define FX_MAX_T 8
typedef struct fx_layout {
    size_t nt, total, plen, glen;
    size_t ndim[FX_MAX_T], shape[FX_MAX_T][3], n[FX_MAX_T], poff[FX_MAX_T], goff[FX_MAX_T];
} fx_layout;
/* The main layout: 3x5, 7, 2x2x3, 1, 11 (46 elements, shards cut tensors). */
void fx_layout_main(fx_layout *L);
/* 8x40, 33, 6x7x5 (563 elements): with 2 or 3 ranks the shards cut the matrices, also
   where gradient centralization moves the boundaries between rows. */
void fx_layout_wide(fx_layout *L);
/* Matrices only, 12x20, 16x8 (wide, tall), 5x30: Muon's layout. */
void fx_layout_matrices(fx_layout *L);
/* One vector of n elements (n < world size: some rank owns nothing). */
void fx_layout_vector(fx_layout *L, size_t n);
/* The range group of L over buffers p and g (descs must hold FX_MAX_T). */
void fx_range_group(const fx_layout *L, cl_mem p, cl_mem g, clopt_param_desc *descs,
                    clopt_range_group *rg);

/* A float buffer of n elements filled with `fill`. */
cl_mem fx_buffer(size_t n, float fill);
/* Destroys a sharded optimizer and its unsharded reference, releases their buffers. */
void fx_release(clopt_mpi_optimizer *sh, clopt_optimizer *ref, cl_mem p, cl_mem g, cl_mem rp,
                cl_mem rg);
void fx_write(cl_mem b, const float *host, size_t n);
void fx_read(cl_mem b, float *host, size_t n);
/* Flattened values (total) into / out of a buffer laid out as L (params: 0, grads: 1). */
void fx_scatter(const fx_layout *L, int grad, cl_mem b, const float *flat);
/* Deterministic value in [-1, 1) of (seed, i). */
float fx_val(unsigned seed, size_t i);

/* The unsharded optimizer over the same layout (the reference). */
clopt_optimizer *fx_reference(clopt_rule rule, const clopt_hparams *hp, const fx_layout *L,
                              cl_mem p, cl_mem g);
/* The same with the parameters in pdt and the gradients in gdt (elements of their types at
   L's offsets). */
clopt_optimizer *fx_reference_typed(clopt_rule rule, const clopt_hparams *hp, const fx_layout *L,
                                    cl_mem p, cl_mem g, clopt_dtype pdt, clopt_dtype gdt);
/* Every state of every piece of sh's shard equals the same slice of ref's state (bytes). */
void fx_check_states(const char *what, clopt_mpi_optimizer *sh, clopt_optimizer *ref,
                     const fx_layout *L);
/* A create over fx_layout_main that must fail with `want` on this rank (*out NULL, a reason
   given, containing text unless NULL): tensor 0's parameters in pdt0, the others' in pdt,
   the gradients in gdt, the group's sr_stream. */
void fx_expect_create(const char *what, clopt_rule rule, const clopt_hparams *hp,
                      clopt_dtype pdt0, clopt_dtype pdt, clopt_dtype gdt, long long sr_stream,
                      clopt_status want, const char *text);
/* Adafactor: every piece of sh's shard is a whole tensor (cut ones replicated on their
   holders): its float32 states equal ref's for that tensor, byte for byte. */
void fx_check_whole_states(const char *what, clopt_mpi_optimizer *sh, clopt_optimizer *ref,
                           const fx_layout *L);

#endif
