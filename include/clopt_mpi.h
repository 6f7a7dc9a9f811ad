/* SPDX-License-Identifier: MIT */
/*
 * clopt_mpi: optimizer state sharded over an MPI communicator (ZeRO stage 1).
 *
 * An optional part of clopt: libclopt_mpi (this header) links libclopt and MPI; the core
 * library has no MPI dependency. Built only when CMake finds MPI (find_package(MPI)).
 *
 * The model: an engine holds its parameters and gradients in one flat buffer each (llm.c,
 * KANN), described as a clopt_range_group (tensor shapes and (buffer, offset) ranges). The
 * tensors, concatenated in their order, form the flattened parameter vector of `total`
 * elements; rank r of N owns the contiguous slice [r·total/N, (r+1)·total/N) of it (shard
 * boundaries cut tensors freely; a rank may own nothing when total < N; with
 * clopt_mpi_options.shard_tensors they move to tensor boundaries). Each rank keeps the
 * rule's state for its slice only (1/N of the state bytes) in an internal clopt_optimizer
 * whose range groups cover the slice's pieces of the engine's buffers, so the update is the
 * core library's fused kernel. A step:
 *   1. gradient: CLOPT_MPI_GRAD_ENGINE: every rank passes the already reduced full gradient
 *      (the engine's own allreduce), the rank reads its slice; CLOPT_MPI_GRAD_REDUCE_SCATTER:
 *      every rank passes its local gradient, clopt sums (or averages) the slices across
 *      ranks (host-staged; see clopt_mpi_options);
 *   2. one small collective (MPI_Allgather of a few doubles per rank) agrees on errors and
 *      combines the per-rank partials of the global gradient norm (clipping) and the
 *      Inf/NaN check (AMP), summed in rank order on every rank: deterministic, and the same
 *      verdict on every rank (it also checks that every rank set the same clip and scale);
 *   3. the rule's fused kernel updates the slice (internal clopt_optimizer_step_on);
 *   4. MPI_Allgatherv brings every rank's updated slice into every rank's full parameter
 *      buffer (host-staged); a last small agreement makes a rank's failure to write them
 *      every rank's.
 * Every call that takes the sharded optimizer is collective (all ranks, same order, same
 * arguments) unless it says "local".
 *
 * Determinism: in CLOPT_MPI_GRAD_ENGINE mode a step is bit-identical to the unsharded
 * clopt_optimizer (same rule, hyperparameters, gradient) for every element-wise rule, and
 * with AMP; with clipping the global norm is summed in double on the host (per rank, then in
 * rank order) instead of the device's float reduction, so its last bits (and those of the
 * clip coefficient) may differ from the unsharded optimizer's. In reduce-scatter mode the
 * results are bit-identical run to run for a given world size (ordered_sum 1: also equal to
 * the unsharded optimizer given the gradients summed in float in rank order). The rules
 * that reduce on the device (LAMB, StableAdamW, Adafactor's replicated statistics, Muon)
 * take the last bits of their sums from each rank's reduction shape (clopt_tuning: the
 * device's compute units, a CPU's processors): ranks on devices of one kind agree; ranks on
 * CPUs with different core counts may not (Adafactor's statistics then differ in their
 * last bits between ranks).
 *
 * Host staging: gradients and parameters cross host memory (clEnqueueReadBuffer /
 * clEnqueueWriteBuffer, blocking) around the MPI calls. A device-aware MPI (CUDA/ROCm-aware
 * Open MPI, or an OpenCL SVM-capable transport) could take device pointers in the
 * reduce-scatter and the all-gather and skip both copies; OpenCL 1.2 buffers are not
 * pointers, so this version always stages.
 *
 * Storage: the parameters in float32, f16 or bf16 and the gradients in float32, f16 or bf16
 * (param_dtype / grad_dtype of the descriptors: one type for every tensor of the parameter
 * buffer, one for the gradient buffer), with the groups' master (none: rounded to nearest;
 * CLOPT_MASTER_F32; CLOPT_MASTER_REMAINDER for bf16), sharded like any state: bit for bit as
 * the unsharded optimizer. The all-gather moves the parameters in their own type (2 bytes each
 * for 16-bit). clopt's reduce-scatter sends 16-bit gradients as they are (with ordered_sum;
 * MPI_Reduce_scatter takes them converted to float32), sums them as floats and keeps the
 * shard's reduced gradient in float32 (not rounded back to 16 bits). Stochastic rounding (no
 * master) draws as unsharded: the random value of an element depends on the seed
 * (clopt_mpi_optimizer_seed), the step, its index in the parameter buffer and its group's
 * stream, which is desc->sr_stream or, at -1 (clopt_range_group_init), the index of the group's
 * first tensor in the flattened order: what a fresh clopt_optimizer with the same range groups
 * added in order draws. A gathered checkpoint saved before the first step holds no fp32 master:
 * a load then leaves it to be taken from θ at the first step, and refuses (STATE_MISMATCH) a
 * tensor whose master was already taken.
 *
 * Supported now: one or more groups over one parameter and one gradient buffer
 * (clopt_mpi_optimizer_create_groups), the element-wise rules (SGD,
 * Adam, AdamW, Adagrad, Adadelta, RMSprop, Adamax, NAdam, RAdam, AdaMod, diffGrad, Lion,
 * Ranger (with gradient centralization: shards cut at rows), Schedule-Free AdamW/SGD with
 * clopt_mpi_optimizer_set_mode, ADOPT, AdEMAMix), Lookahead, bf16 state, schedules,
 * global-norm clipping, AMP, checkpoints (one gathered file, or a file per rank and a
 * manifest; any world size loads them). Rules with per-tensor reductions on shards that
 * cut tensors: LAMB, StableAdamW and cautious masking combine the pieces' sums (‖θ‖², ‖r‖²,
 * the RMS's sum, the mask count) over a communicator of the ranks holding the tensor,
 * added in rank order in double inside the step (clopt_optimizer_set_tensor_sums_hook), so
 * a cut tensor gets the whole tensor's trust ratio, RMS or mask mean (cautious: bit for bit;
 * LAMB, StableAdamW: to the float rounding of the sums); gradient centralization moves the
 * shard boundaries inside the tensors it applies to onto row boundaries, so every row mean
 * is one rank's (bit for bit). Adafactor keeps its factored statistics replicated: each rank
 * holding part of a cut tensor updates the whole tensor (its state, O(rows + cols), and the
 * first moment with use_beta1, on every holder; in reduce-scatter mode the holders first
 * all-gather the tensor's reduced gradient), the all-gather keeping each element's owner's
 * value: bit for bit. Muon needs whole tensors (shard_tensors = 1: bit for bit, with every
 * tensor 2-D). Refused with CLOPT_ERR_UNSUPPORTED: Muon with shard_tensors 0, Sophia,
 * engine-owned state buffers. 8-bit state (the
 * rules the core has it for): inside a tensor of a group with 8-bit state a shard boundary
 * moves to the nearest multiple of 256 from the tensor's start (the core's blocks start
 * there), so each piece's codes and absmaxes are the unsharded ones, bit for bit; the
 * checkpoints slice the absmaxes by block.
 * Status and plans: docs/mpi-status.md.
 *
 * Errors follow clopt's conventions (clopt_status, validate before acting, nothing printed,
 * no exit). A call that fails on one rank fails on every rank: the failing rank returns its
 * own status, the others CLOPT_MPI_ERR_REMOTE. MPI errors (the library works on a duplicate
 * of the caller's communicator with MPI_ERRORS_RETURN) are CLOPT_MPI_ERR_MPI.
 */
#ifndef CLOPT_MPI_H
#define CLOPT_MPI_H

#include <mpi.h>

#include "clopt.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(CLOPT_STATIC_BUILD)
#pragma GCC visibility push(default)
#endif

/* Statuses of this module, beyond clopt_status's (returned as clopt_status values). */
#define CLOPT_MPI_STATUS_LIST(X)                                                           \
    X(CLOPT_MPI_ERR_REMOTE, -200, "the call failed on another rank (nothing changed here)") \
    X(CLOPT_MPI_ERR_MISMATCH, -201,                                                        \
      "the ranks disagree (rule, hyperparameters, shapes or options differ)")             \
    X(CLOPT_MPI_ERR_MPI, -202, "an MPI call failed (see clopt_mpi_optimizer_last_error)")

enum clopt_mpi_status_code {
#define CLOPT_MPI_X_ENUM(name, value, text) name = value,
    CLOPT_MPI_STATUS_LIST(CLOPT_MPI_X_ENUM)
#undef CLOPT_MPI_X_ENUM
    CLOPT_MPI_STATUS_END_
};

/* Readable text of any status: this module's, else clopt_status_str's. Never NULL. */
const char *clopt_mpi_status_str(clopt_status s);
/* The enum name ("CLOPT_MPI_ERR_REMOTE", else clopt_status_name's). Never NULL. */
const char *clopt_mpi_status_name(clopt_status s);

/* Where each rank's shard gradient comes from. */
typedef enum clopt_mpi_grad_mode {
    /* The engine reduced the gradient itself: every rank's gradient buffer holds the full,
       already reduced gradient; each rank reads its slice (no gradient communication). */
    CLOPT_MPI_GRAD_ENGINE = 0,
    /* Every rank's gradient buffer holds its local gradient; clopt reduce-scatters it (host
       staged) so each rank gets its slice summed (or averaged) over the ranks. The engine's
       gradient buffer is only read. */
    CLOPT_MPI_GRAD_REDUCE_SCATTER = 1
} clopt_mpi_grad_mode;

typedef enum clopt_mpi_reduce_op {
    CLOPT_MPI_SUM = 0, /* g = Σ_r g_r */
    CLOPT_MPI_MEAN = 1 /* g = (Σ_r g_r) / N, the division in float32 */
} clopt_mpi_reduce_op;

typedef struct clopt_mpi_options {
    size_t struct_size;            /* set by clopt_mpi_options_init; create refuses a size
                                      above 1024 (an uninitialised struct) and a field past
                                      this library's that is set, as a group desc's */
    clopt_mpi_grad_mode grad_mode; /* CLOPT_MPI_GRAD_ENGINE */
    clopt_mpi_reduce_op reduce_op; /* CLOPT_MPI_SUM (reduce-scatter mode only) */
    /* Reduce-scatter mode: 1 (default) sends the slices with MPI_Alltoallv and sums them on
       the host in rank order (float32, g_0 + g_1 + ...), the same on any MPI and any
       algorithm; 0 uses MPI_Reduce_scatter (the MPI library's algorithm and order:
       deterministic run to run on one MPI build and world size, possibly faster). */
    int ordered_sum;
    /* 0 (default): rank r owns [r·total/N, (r+1)·total/N), cutting tensors anywhere (the
       boundaries inside a tensor under gradient centralization move to its nearest row
       boundary; LAMB, StableAdamW and cautious combine a cut tensor's sums across ranks;
       Adafactor updates a cut tensor whole on each holder). 1: shard boundaries move to the
       nearest tensor boundary, so every tensor lives whole on one rank: every rule with
       per-tensor reductions (also Muon) then runs
       exactly as unsharded (bit-identical in engine mode), at the price of a less even split
       (a tensor larger than total/N makes its rank hold more, and ranks may own nothing). */
    int shard_tensors;
} clopt_mpi_options;
/* Defaults as above (NULL: no-op). */
void clopt_mpi_options_init(clopt_mpi_options *o);

typedef struct clopt_mpi_optimizer clopt_mpi_optimizer;

/* Collective over comm. Creates a sharded optimizer of `rule` with hyperparameters hp (the
   group's) over the engine's flat buffers described by desc (as clopt_optimizer_add_range_group:
   every param range in one cl_mem, every grad range in one cl_mem, each of one storage type
   (another tensor's param_dtype or grad_dtype than tensor 0's: CLOPT_ERR_INVALID_ARGUMENT);
   state buffers must be NULL), options o (NULL: defaults). Every rank must pass the same
   rule, hyperparameters, shapes, storage types and options (checked:
   CLOPT_MPI_ERR_MISMATCH); the buffers and offsets are each rank's own.
   The library duplicates comm (MPI_Comm_dup; the caller may free comm afterwards). Blocking
   (allocates and initialises the shard's state, clFinish). why (may be NULL, why_len bytes)
   receives the reason of a failure ("" on success). Returns CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_SIZE,
   CLOPT_ERR_INVALID_HYPERPARAM, CLOPT_ERR_UNSUPPORTED (see the header's list),
   CLOPT_ERR_OUT_OF_MEMORY, the statuses of clopt_optimizer_add_range_group, OpenCL codes,
   CLOPT_MPI_ERR_REMOTE, CLOPT_MPI_ERR_MISMATCH or CLOPT_MPI_ERR_MPI; *out is NULL on failure
   (on every rank). */
clopt_status clopt_mpi_optimizer_create(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                        MPI_Comm comm, const clopt_range_group *desc,
                                        const clopt_mpi_options *o, clopt_mpi_optimizer **out,
                                        char *why, size_t why_len);
/* Collective. The same with several parameter groups (as torch's param_groups: e.g. weights
   with weight decay, biases without), each with its own hyperparameters hps[g] and tensors
   descs[g]; every tensor of every group in the same parameter cl_mem and the same gradient
   cl_mem. The flattened vector is group 0's tensors, then group 1's, ...: shards cut across
   groups as across tensors, and the global norm (clipping) and AMP check cover all groups.
   clopt_mpi_optimizer_create is this with one group. Statuses as create (also
   CLOPT_ERR_INVALID_SIZE for ngroups 0). */
clopt_status clopt_mpi_optimizer_create_groups(clopt_ctx *ctx, clopt_rule rule, MPI_Comm comm,
                                               size_t ngroups, const clopt_hparams *hps,
                                               const clopt_range_group *descs,
                                               const clopt_mpi_options *o,
                                               clopt_mpi_optimizer **out, char *why,
                                               size_t why_len);
/* Collective (frees the duplicated communicator). Blocks until the shard's steps finished,
   then releases everything the sharded optimizer allocated and the references it holds on
   the engine's parameter and gradient buffers (retained at creation on every rank, as the
   core holds registered buffers: the engine may release its handles before). NULL allowed
   (then local). */
void clopt_mpi_optimizer_destroy(clopt_mpi_optimizer *opt);

/* Collective. One step: the gradient slice (per the grad mode), the global checks, the fused
   update of the slice, the all-gather of the parameters into every rank's full parameter
   buffer. queue: the engine's in-order queue of the context (NULL: the context's queue); the
   gradient is read after the commands already enqueued on it. Blocking: returns when the
   engine's parameter buffer holds every rank's updated parameters. Returns CLOPT_SUCCESS,
   CLOPT_STEP_SKIPPED (AMP found an Inf or NaN gradient on some rank: nothing changed on any
   rank), CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT (a queue of another context),
   CLOPT_ERR_OUT_OF_MEMORY, OpenCL codes, the statuses of clopt_optimizer_step_on,
   CLOPT_MPI_ERR_REMOTE or CLOPT_MPI_ERR_MPI. Before the update every failure leaves every
   rank unchanged; an OpenCL or MPI failure during the update, the all-gather or the writes
   of the gathered parameters (after the ranks agreed) can leave some shards updated: every
   rank then reports it and counts no step (also as
   CLOPT_MPI_ERR_REMOTE, whose "nothing changed here" then does not hold: a rank holding a
   piece of a tensor cut under LAMB, StableAdamW or cautious learns of its partner's failure
   inside its own update, after the tensors before it and that piece's first pass ran).
   Restore a checkpoint after such a failure rather than repeating the step. */
clopt_status clopt_mpi_optimizer_step(clopt_mpi_optimizer *opt, cl_command_queue queue);

/* Collective. Schedule-Free: train = 0 writes the averaged point x into the parameters
   (evaluation, saving the model), 1 writes y back, as clopt_optimizer_eval / train, on the
   shard, then all-gathers the parameters; other rules: the parameters are gathered unchanged.
   A step in eval mode fails on every rank (CLOPT_ERR_INVALID_ARGUMENT).
   Blocking, on the context's queue. training: 1 in train mode. Statuses as
   clopt_optimizer_set_mode_on, plus CLOPT_MPI_ERR_REMOTE / _MPI. A failure on any rank
   (switching its shard, or gathering and writing the parameters) fails the call on every
   rank and leaves the mode (training) unchanged everywhere, but some shards may have
   switched and the parameters are not all gathered: every rank's step then fails
   (CLOPT_ERR_INVALID_ARGUMENT) until a set_mode succeeds (call it again: it finishes the
   switch and gathers the parameters). */
clopt_status clopt_mpi_optimizer_set_mode(clopt_mpi_optimizer *opt, int train);
int clopt_mpi_optimizer_training(const clopt_mpi_optimizer *opt);

/* Local (call it on every rank with the same value). Global-norm clipping (as
   clopt_optimizer_set_grad_clip, over the whole flattened gradient) and AMP's loss scale (as
   clopt_optimizer_set_grad_scale: 0 = off; a step with an Inf/NaN gradient anywhere is
   skipped on every rank; without AMP such a step is applied unclipped, where the
   single-device clipping follows torch's coefficient of 0 or NaN). CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT or
   CLOPT_ERR_INVALID_HYPERPARAM. The step compares every rank's values in its agreement: a
   step after different values on some ranks fails on every rank with CLOPT_MPI_ERR_MISMATCH
   and changes nothing. */
clopt_status clopt_mpi_optimizer_set_grad_clip(clopt_mpi_optimizer *opt, double max_norm);
clopt_status clopt_mpi_optimizer_set_grad_scale(clopt_mpi_optimizer *opt, double scale);
/* Local (call it on every rank with the same value). The seed of stochastic rounding (as
   clopt_optimizer_seed; not in the checkpoints: set it again after a load). */
clopt_status clopt_mpi_optimizer_seed(clopt_mpi_optimizer *opt, uint64_t seed);
/* Local. The global gradient norm (after AMP's unscaling) of the last step taken with
   clipping on (NaN before, when the gradient was not finite, and for NULL). */
double clopt_mpi_optimizer_last_grad_norm(const clopt_mpi_optimizer *opt);

/* Local (same value on every rank). Change a group's hyperparameters (set_hparams: every
   group's) or the lr schedule (every group's) between steps, as
   clopt_optimizer_set_group_hparams / set_group_schedule (same statuses, CLOPT_ERR_INDEX for
   no such group; a change to a refused variant, e.g. gradient centralization with cut
   tensors, is CLOPT_ERR_UNSUPPORTED; a change of state_dtype or master, fixed at create, is
   CLOPT_ERR_STATE_MISMATCH on every rank, or CLOPT_ERR_UNSUPPORTED where the core refuses
   the new storage first, e.g. 8-bit state for Adamax). Every rank judges the change alike,
   with the core's checks (e.g. cautious masking with 8-bit state: CLOPT_ERR_UNSUPPORTED),
   also a rank that holds none of the group. get: the group's hyperparameters as last set. */
clopt_status clopt_mpi_optimizer_set_group_hparams(clopt_mpi_optimizer *opt, size_t group,
                                                   const clopt_hparams *hp);
clopt_status clopt_mpi_optimizer_get_group_hparams(const clopt_mpi_optimizer *opt, size_t group,
                                                   clopt_hparams *out);
clopt_status clopt_mpi_optimizer_set_hparams(clopt_mpi_optimizer *opt, const clopt_hparams *hp);
clopt_status clopt_mpi_optimizer_get_hparams(const clopt_mpi_optimizer *opt, clopt_hparams *out);
clopt_status clopt_mpi_optimizer_set_schedule(clopt_mpi_optimizer *opt, const clopt_schedule *s);

/* Local queries. Steps applied (skipped ones not counted; 0 for NULL); the rank and world
   size; this rank's slice [*first, *first + *count) of the flattened `*total` elements (any
   pointer may be NULL; CLOPT_SUCCESS or CLOPT_ERR_NULL_ARGUMENT); the device bytes of this
   rank's optimizer state (0 for NULL). */
uint64_t clopt_mpi_optimizer_step_count(const clopt_mpi_optimizer *opt);
int clopt_mpi_optimizer_rank(const clopt_mpi_optimizer *opt);
int clopt_mpi_optimizer_world_size(const clopt_mpi_optimizer *opt);
clopt_status clopt_mpi_optimizer_shard(const clopt_mpi_optimizer *opt, size_t *first,
                                       size_t *count, size_t *total);
size_t clopt_mpi_optimizer_state_bytes(const clopt_mpi_optimizer *opt);

/* Local. Where the last successful (or skipped) step's wall time went on this rank (MPI_Wtime,
   seconds): reading the gradient to the host, the reduce-scatter (0 in engine mode), the
   partials and the agreement (one MPI_Allgather of a few doubles), the update of the shard
   (writing its gradient, the fused kernel, reading the shard back), the MPI_Allgatherv of
   the parameters, writing the gathered parameters to the device; total = the whole call.
   Communication = reduce + agree + gather (they include waiting for slower ranks). */
typedef struct clopt_mpi_step_timing {
    double read_s, reduce_s, agree_s, update_s, gather_s, write_s, total_s;
} clopt_mpi_step_timing;
clopt_status clopt_mpi_optimizer_last_timing(const clopt_mpi_optimizer *opt,
                                             clopt_mpi_step_timing *out);

/* Local. The internal optimizer of this rank's shard (borrowed; NULL for NULL): its tensors
   are the slice's pieces of the engine's tensors, in order (a whole tensor with its shape, a
   cut one as 1-D), in one range group per group that has pieces here (after an empty
   group 0). For reading the shard's state (clopt_optimizer_read_state, state entries). Do not
   step it, add tensors to it or change its settings: use the calls above. */
clopt_optimizer *clopt_mpi_optimizer_local(clopt_mpi_optimizer *opt);

/* ---- checkpoints ------------------------------------------------------------------------ */

/* Collective. Rank 0 gathers every rank's shard state and writes one file at path (only rank
   0's path is used; written to "<path>.<pid>.tmp", fsync'ed, renamed): each tensor's whole
   state as the unsharded optimizer lays it out, the step count, a manifest of the world size
   and shard ranges, a CRC-32C. The parameters are the engine's to save. Blocking. Returns
   CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_IO, CLOPT_ERR_INVALID_ARGUMENT (a path
   of 4 KiB or more with its suffix), CLOPT_ERR_INVALID_SIZE (every rank's state together,
   or the file, over 2 GiB - 1 byte: MPI counts are int; the ranks refuse before any state
   is sent, every rank with this status; save_shards has no such limit),
   CLOPT_ERR_OUT_OF_MEMORY, OpenCL codes, CLOPT_MPI_ERR_REMOTE or CLOPT_MPI_ERR_MPI, the same
   on every rank. */
clopt_status clopt_mpi_optimizer_save(clopt_mpi_optimizer *opt, const char *path);
/* Collective. Rank 0 reads a file of clopt_mpi_optimizer_save (written with any world size)
   and broadcasts it; every rank checks it (CRC, version, rule, total size, tensor shapes,
   every state's name, type and length) before any rank writes its slice of each state and
   the step count. A bad file is CLOPT_ERR_FORMAT or CLOPT_ERR_STATE_MISMATCH on every rank
   and changes nothing; a rank that fails makes every rank fail (CLOPT_MPI_ERR_REMOTE). The
   hyperparameters, schedule, clipping and AMP settings stay the caller's. Blocking. Also
   CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_IO, CLOPT_ERR_OUT_OF_MEMORY, OpenCL codes and
   CLOPT_MPI_ERR_MPI. */
clopt_status clopt_mpi_optimizer_load(clopt_mpi_optimizer *opt, const char *path);
/* Collective. The other form, nothing gathered through one rank: every rank writes its
   pieces' states to "<prefix>.<rank>" and rank 0 writes "<prefix>.manifest" (world size,
   each rank's shard range, each part's size and CRC-32C, rule, shapes, step count). Every
   rank's prefix names the same files (a shared file system). Each file is written under a
   temporary name ("<file>.<pid>.tmp", fsync'ed) and renamed only after every rank wrote its
   part and rank 0 the manifest (the parts first, the manifest last): a failure on any rank
   before that leaves the checkpoint already at prefix as it was (only a failed rename itself
   can leave a mix of old and new parts). A part may be of any size (no 2 GiB limit: each
   rank writes and reads its own files); the manifest is small. Statuses as
   clopt_mpi_optimizer_save, without its CLOPT_ERR_INVALID_SIZE. */
clopt_status clopt_mpi_optimizer_save_shards(clopt_mpi_optimizer *opt, const char *prefix);
/* Collective. Loads such a set written with any world size: rank 0 reads the manifest and
   broadcasts it; each rank reads only the parts that overlap its slice, checks each against
   the manifest (size, CRC) and assembles its pieces' states; every rank checks everything
   before any rank writes. Statuses and all-or-nothing as clopt_mpi_optimizer_load
   (CLOPT_ERR_FORMAT also for a part that does not match the manifest). */
clopt_status clopt_mpi_optimizer_load_shards(clopt_mpi_optimizer *opt, const char *prefix);
/* Not collective. Loads a file of clopt_mpi_optimizer_save into an unsharded optimizer (on
   context ctx) whose registered tensors are the checkpoint's, in order (e.g. the same range
   groups over the same layout): every state and the step count, after checking everything
   (the rule, the tensor count, each tensor's shape as its full-size states show it, each
   state's name, type and length). why (may be NULL) gets the reason of a failure. Statuses
   as clopt_mpi_optimizer_load without the MPI ones. */
clopt_status clopt_mpi_checkpoint_load_unsharded(clopt_ctx *ctx, clopt_optimizer *opt,
                                                 const char *path, char *why, size_t why_len);

/* Local. Detail of the last failure of a call on opt ("" after a success; owned by opt). */
const char *clopt_mpi_optimizer_last_error(const clopt_mpi_optimizer *opt);

#if defined(__GNUC__) && !defined(CLOPT_STATIC_BUILD)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* CLOPT_MPI_H */
