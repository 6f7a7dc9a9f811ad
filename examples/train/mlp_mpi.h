/* SPDX-License-Identifier: MIT */
/*
 * Data-parallel training of the example's MLP over MPI with the optimizer state sharded by
 * libclopt_mpi (ZeRO stage 1): clopt-train-mlp --shard. Built only when CMake found MPI
 * (target clopt_mpi).
 *
 * Every process holds the whole model (the same He initialisation from the same seed) and
 * the whole training set, draws the same order of the examples, and computes the gradient of
 * its share of every mini-batch (mlp_train_epoch_dp: rows [R·r/N, R·(r+1)/N) of a batch of R,
 * the loss gradient scaled by N/R). The sharded optimizer (clopt_mpi_optimizer, grad mode
 * CLOPT_MPI_GRAD_REDUCE_SCATTER with the mean, rank-order sums) averages the gradients over
 * the processes slice by slice, so that each process gets the whole batch's mean gradient for
 * its slice of the flattened parameters, updates that slice with the rule's state for it
 * (1/N of the state), and all-gathers the parameters into every process's flat buffer.
 *
 * The model's flat buffers (mlp_get_flat) are two groups over the same buffers: the weights
 * (2-D, with weight decay) and the biases (no decay), as the single-process optimizer; with
 * 8-bit state the tensors under 4096 elements keep float32 state in groups of their own (as
 * the one-process optimizer keeps them). 16-bit weights are sharded in their flat 16-bit
 * buffer with their master (--master f32 or remainder: sharded like the state) or with
 * stochastic rounding (seeded with --seed). Refused (mlp_mpi_check, with a message in the
 * command line's terms): Sophia and Muon. Every other rule cuts tensors (libclopt_mpi
 * combines LAMB's, StableAdamW's and cautious masking's per-tensor sums and replicates
 * Adafactor's statistics; with 8-bit state the boundaries fall on blocks of 256).
 */
#ifndef CLOPT_EXAMPLE_MLP_MPI_H
#define CLOPT_EXAMPLE_MLP_MPI_H

#include "clopt_mpi.h"
#include "mlp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether --shard can train with these settings. 0 (*shard_tensors: 1 when the rule needs
   whole tensors per process), or -1 with the reason in err. */
int mlp_mpi_check(const mlp_train_config *tc, clopt_dtype param_dtype, int *shard_tensors,
                  char *err, size_t errlen);

/* Collective. The sharded optimizer of tc over m's flat buffers: group 0 the weights with tc's
   (or the table's) weight decay, group 1 the biases without (8-bit state: each split into the
   tensors of 4096 elements or more and the smaller ones, with float32 state), reduce-scatter
   with the mean, and tc's schedule (mlp_schedule). 0, or -1 with a message in err (the same
   failure on every process). */
int mlp_mpi_optimizer_create(mlp *m, const mlp_train_config *tc, MPI_Comm comm,
                             clopt_mpi_optimizer **out, char *err, size_t errlen);

/* Collective. One epoch of mlp_train_epoch_dp with opt's step; the statistics are the whole
   batches' on every process (rank-order sums). */
int mlp_mpi_train_epoch(mlp *m, clopt_mpi_optimizer *opt, MPI_Comm comm,
                        const mlp_device_data *d, mlp_rng *rng, float *step_loss,
                        mlp_progress_fn progress, void *user, size_t progress_every,
                        mlp_epoch_stats *out, char *err, size_t errlen);

/* Collective. Schedule-Free: eval != 0 writes the averaged point x into every process's
   parameters, 0 writes y back (clopt_mpi_optimizer_set_mode), then m's float32 copy of
   16-bit weights; other rules (opt's rule): nothing. */
int mlp_mpi_set_eval_mode(mlp *m, clopt_mpi_optimizer *opt, clopt_rule rule, int eval,
                          char *err, size_t errlen);

/* The first and one-past-last example of process rank's part of n examples (an even split). */
void mlp_mpi_part(size_t n, int rank, int size, size_t *first, size_t *end);

/* Collective. Evaluation split over the processes: each passes the device data of its part
   of the test set (mlp_mpi_part; may hold no images: local->n == 0), the loss sums and
   correct counts are added in rank order; *loss and *accuracy are the means over all
   `total` images, the same on every process. 0 or -1 (message in err). */
int mlp_mpi_evaluate(mlp *m, MPI_Comm comm, const mlp_device_data *local, size_t total,
                     double *loss, double *accuracy, char *err, size_t errlen);

/* Collective. Whether every process holds bit-identical parameters (a 64-bit FNV-1a hash of
   the flat parameter buffer, compared over the processes): 1 yes, 0 no, -1 on an error
   (message in err). *hash (may be NULL) receives this process's hash. */
int mlp_mpi_params_identical(mlp *m, MPI_Comm comm, uint64_t *hash, char *err, size_t errlen);

/* Collective. Adds count doubles over the processes in rank order (the same result on every
   process, whatever the MPI's reduction algorithm), in place. MPI_SUCCESS or an MPI code. */
int mlp_mpi_sum(MPI_Comm comm, double *v, size_t count);

#ifdef __cplusplus
}
#endif
#endif
