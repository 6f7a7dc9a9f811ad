/* SPDX-License-Identifier: MIT */
/*
 * A multi-layer perceptron trained on Fashion-MNIST with CLBlast GEMMs, a handful of OpenCL
 * kernels of its own (examples/train/mlp.cl) and clopt's optimizer level for every update.
 * Used by the clopt-train-mlp program (train_mlp.c) and by the tests next to it.
 *
 * Layout: row-major everywhere. Layer l has weights W_l [out, in] (torch's nn.Linear layout)
 * and bias b_l [out]; a batch of R rows of activations is [R, width]. ReLU after every layer
 * but the last; the last layer's outputs are the logits of a softmax cross-entropy loss,
 * averaged over the batch.
 *
 *   forward   Z_l = A_{l-1} W_lᵀ (CLBlast) ; Z_l += b_l ; A_l = ReLU(Z_l)     (bias_act)
 *   loss      L = mean_r [logsumexp(Z_L[r]) - Z_L[r, y_r]]                      (softmax_xent)
 *   backward  dW_l = dZ_lᵀ A_{l-1} (CLBlast) ; db_l = column sums of dZ_l       (col_sums)
 *             dA_{l-1} = dZ_l W_l (CLBlast) ; dZ_{l-1} = dA_{l-1} ⊙ [A_{l-1} > 0] (relu_backward)
 *
 * Functions return 0 on success and -1 on failure, with a message in mlp_last_error().
 * Everything runs on the clopt context's in-order queue.
 *
 * Storage: the parameters θ the optimizer updates are float32 (default) or 16-bit (f16,
 * bf16; mlp_config.param_dtype). With 16-bit θ the model also keeps a float32 copy of every
 * weight and bias, which is what the GEMMs and kernels read: clopt_enqueue_convert writes it
 * from θ after every optimizer step (exact, both 16-bit types are subsets of float32).
 * Gradients stay float32; the optimizer's state is float32 unless
 * mlp_train_config.state_dtype asks for bf16 or 8-bit state.
 *
 * The data (mlp_dataset_*) and the host random numbers are in mlp_data.c, the rule names and
 * defaults in mlp_optim.c, the training loop in mlp_train.c, the model in mlp.c.
 */
#ifndef CLOPT_EXAMPLE_MLP_H
#define CLOPT_EXAMPLE_MLP_H

#include "clopt.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLP_MAX_LAYERS 6
#define MLP_IMAGE_DIM 784 /* 28 x 28 */
#define MLP_CLASSES 10
/* Where Debian's dataset-fashion-mnist package puts the four IDX files. */
#define MLP_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
/* Environment variable that overrides the default folder (the --data option wins over it). */
#define MLP_DATA_ENV "CLOPT_FASHION_MNIST_DIR"

/* ---- data ------------------------------------------------------------------------------ */

/* The error reporting of the functions below that take (err, errlen): a vsnprintf into err,
   nothing when err is NULL or errlen 0. */
void mlp_put_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Images as stored in the IDX files: n rows of dim uint8 pixels, labels 0..9. */
typedef struct mlp_dataset {
    size_t n, dim;
    unsigned char *pixels; /* n * dim */
    unsigned char *labels; /* n */
} mlp_dataset;

/* The folder to read from: dir if non-NULL, else $CLOPT_FASHION_MNIST_DIR, else the default. */
const char *mlp_data_dir(const char *dir);

/* Read "train-images-idx3-ubyte.gz" and "train-labels-idx1-ubyte.gz" (train != 0) or the
   "t10k-" pair from dir through zlib (plain, uncompressed files are read as well), keeping
   the first `limit` images (0 = all). Checks the IDX magic numbers, the counts and the label
   range. On failure err receives a message that names the file and, when the folder is
   missing, the Debian package to install. Returns 0 or -1. */
int mlp_dataset_load(const char *dir, int train, size_t limit, mlp_dataset *out, char *err,
                     size_t errlen);
void mlp_dataset_free(mlp_dataset *d);
/* Mean and standard deviation of all pixels / 255 (the input normalisation). */
void mlp_dataset_pixel_stats(const mlp_dataset *d, double *mean, double *std);

/* ---- random numbers (host) ------------------------------------------------------------- */

typedef struct mlp_rng {
    uint64_t s;
} mlp_rng;
void mlp_rng_seed(mlp_rng *r, uint64_t seed);
uint64_t mlp_rng_next(mlp_rng *r);      /* splitmix64 */
double mlp_rng_uniform(mlp_rng *r);     /* [0, 1), 53 bits */
double mlp_rng_normal(mlp_rng *r);      /* N(0, 1), Box-Muller */
void mlp_rng_permutation(mlp_rng *r, int *perm, size_t n); /* uniform shuffle of 0..n-1 */

/* ---- model ----------------------------------------------------------------------------- */

typedef struct mlp_config {
    size_t nlayers;                      /* weight layers: 3 for 784-256-128-10 */
    size_t dims[MLP_MAX_LAYERS + 1];     /* dims[0] inputs ... dims[nlayers] classes */
    size_t batch;                        /* the largest batch the model is asked to run */
    /* Storage of the weights and biases the optimizer updates: CLOPT_DTYPE_F32 (0, the
       default), CLOPT_DTYPE_F16 or CLOPT_DTYPE_BF16 (see "Storage" above). */
    clopt_dtype param_dtype;
} mlp_config;

/* 784-256-128-10 with the given batch size, float32 weights. */
mlp_config mlp_config_default(size_t batch);

typedef struct mlp mlp;

/* Buffers for weights (and their 16-bit storage when cfg->param_dtype is F16 or BF16),
   gradients and activations, and the kernels of mlp.cl compiled on
   clopt_ctx_cl_context(ctx). Weights start at zero: call mlp_init_he (or mlp_set_layer).
   With hessian != 0 a Hessian-estimate buffer per tensor is allocated too (Sophia). */
int mlp_create(clopt_ctx *ctx, const mlp_config *cfg, int hessian, mlp **out, char *err,
               size_t errlen);
void mlp_destroy(mlp *m);
const char *mlp_last_error(const mlp *m);
const mlp_config *mlp_get_config(const mlp *m);
clopt_ctx *mlp_get_ctx(const mlp *m);

/* He initialisation: W_l ~ N(0, 2 / in_l) from the host generator seeded with seed,
   b_l = 0 (rounded to nearest in 16-bit storage, see mlp_set_layer). Blocking. */
int mlp_init_he(mlp *m, uint64_t seed);

/* Host copies of layer l's weights (out*in) and bias (out), either pointer may be NULL;
   blocking. get_grads reads the gradients of the last backward pass. With 16-bit storage
   set_layer rounds the values to it (to nearest even) and get_layer returns the rounded
   values; an optimizer with a master copy (mlp_train_config.master) initialises it when it
   is created, so set the weights before mlp_optimizer_create. */
int mlp_get_layer(mlp *m, size_t l, float *w, float *b);
int mlp_set_layer(mlp *m, size_t l, const float *w, const float *b);
int mlp_get_grads(mlp *m, size_t l, float *gw, float *gb);

/* The float32 weights and biases (what the GEMMs read; with 16-bit storage their float32
   copies) and their gradients live in one flat buffer each, as an engine such as llm.c keeps
   them: W_0 .. W_{L-1}, then b_0 .. b_{L-1}, every tensor starting at a multiple of the
   device's CL_DEVICE_MEM_BASE_ADDR_ALIGN, the gaps zero. The passes use sub-buffers at those
   offsets (so CLBlast and the kernels are unchanged); libclopt_mpi takes the flat buffers
   with the offsets (mlp_flat_descs). Both buffers belong to the model. */
typedef struct mlp_flat {
    cl_mem params, grads;
    size_t floats; /* length of each buffer in floats, the gaps included */
    size_t weight_offset[MLP_MAX_LAYERS], bias_offset[MLP_MAX_LAYERS]; /* in elements */
    /* 16-bit weights (param_dtype F16 or BF16): θ itself, `floats` 16-bit elements at the
       same offsets; params then holds its float32 copy (what the GEMMs read, refreshed from
       θ by mlp_sync_weights). NULL for float32 weights. */
    cl_mem params16;
} mlp_flat;
const mlp_flat *mlp_get_flat(const mlp *m);
/* The float32 copy of 16-bit weights from θ (after an optimizer changed θ; no-op for float32
   weights). 0, or -1 with the reason in mlp_last_error. */
int mlp_sync_weights(mlp *m);
/* The tensors over the flat buffers, for clopt_range_group: weights[l] ([out, in], 2-D) and
   biases[l] (1-D), nlayers entries each: θ in the model's storage type (params16 for 16-bit
   weights), float32 gradients. */
void mlp_flat_descs(const mlp *m, clopt_param_desc *weights, clopt_param_desc *biases);

/* Input normalisation x = (pixel/255 - mean) / std applied by the gather kernel. */
void mlp_set_normalization(mlp *m, double mean, double std);

/* The images of a dataset on the device (uint8, as in the files). */
typedef struct mlp_device_data {
    cl_mem pixels, labels;
    size_t n, dim;
} mlp_device_data;
int mlp_upload(mlp *m, const mlp_dataset *d, mlp_device_data *out);
void mlp_device_data_free(mlp_device_data *d);

/* One batch, non-blocking: gather `rows` images (idx[0..rows) of the host index array, or
   off..off+rows-1 when idx is NULL) into the input, forward, loss; with backward != 0 also
   every gradient (of the batch-mean loss). The batch's loss sum and correct count go to the
   stats slot `slot` (see mlp_read_stats). rows <= cfg.batch. */
int mlp_batch(mlp *m, const mlp_device_data *d, const int *idx, size_t off, size_t rows,
              int backward, size_t slot);
/* The input batch of the last mlp_batch (rows * dims[0] floats, normalised); blocking. */
int mlp_read_input(mlp *m, float *x, size_t rows);
/* (loss sum, correct) pairs of slots first .. first+count-1 into out[2*count]; blocking. */
int mlp_read_stats(mlp *m, size_t first, size_t count, float *out);

/* ---- training -------------------------------------------------------------------------- */

/* The optimizer configuration of the example: lr and weight decay per rule (a table of
   values that train this MLP well, see mlp_optim.c), with overrides. */
typedef struct mlp_train_config {
    clopt_rule rule;
    double lr;           /* <= 0: the rule's entry in the table */
    double weight_decay; /* < 0: the table's; applies to the weights (group 0) only */
    size_t warmup_steps; /* linear warmup from 1% of lr, then cosine decay to 0 */
    size_t total_steps;  /* the whole run (epochs * steps per epoch) */
    /* 16-bit weights only (see mlp_check_storage): the master copy the rule updates
       (CLOPT_MASTER_NONE = 0: θ itself, rounded after every update) and stochastic rounding
       of θ (no master), seeded with sr_seed (clopt_optimizer_seed). */
    clopt_master master;
    int stochastic_rounding;
    uint64_t sr_seed;
    /* Storage of the optimizer state (clopt_hparams.state_dtype): CLOPT_DTYPE_F32 (0), BF16
       or U8 (8-bit blockwise, for the rules the library has it for; tensors under 4096
       elements, the biases here, keep float32 state). */
    clopt_dtype state_dtype;
    /* Cautious masking (clopt_hparams.cautious; Adam, AdamW and Lion). */
    int cautious;
} mlp_train_config;

/* The rule of a command-line name: clopt_rule_name's names, and cautious_adam,
   cautious_adamw, cautious_lion (*cautious = 1). 0, or -1 for an unknown name. */
int mlp_rule_from_name(const char *name, clopt_rule *rule, int *cautious);

/* Whether the storage settings go together: θ in F32, F16 or BF16 and the state in F32, BF16
   or U8; a master needs 16-bit θ, REMAINDER needs bf16 θ, stochastic rounding needs 16-bit θ
   and no master. 0, or -1 with the reason in err (written in the command line's terms:
   --param-dtype, --state-dtype, --master, --stochastic-rounding). Which rules have 8-bit
   state is the library's to say (mlp_optimizer_create fails for the others). */
int mlp_check_storage(clopt_dtype param_dtype, clopt_dtype state_dtype, clopt_master master,
                      int stochastic_rounding, char *err, size_t errlen);

/* The table: learning rate and weight decay this example uses for rule by default. */
void mlp_default_lr_wd(clopt_rule rule, double *lr, double *weight_decay);
/* Hyperparameters for the weights' group (clopt defaults, then the table and the overrides,
   plus the rule-specific settings: SGD momentum 0.9, Adafactor with an explicit lr, Sophia's
   batch-size factor = cfg.batch). */
int mlp_train_hparams(const mlp *m, const mlp_train_config *tc, clopt_hparams *hp);

/* clopt_optimizer of tc->rule over the model: weights (shape [out, in]) in group 0 with weight
   decay, biases in group 1 without; warmup + cosine schedule on both groups (Schedule-Free:
   no schedule, hp.warmup_steps instead). The tensors are registered in the model's storage
   type (float32 gradients) with tc's master, stochastic rounding and state storage (checked
   with mlp_check_storage). Muon takes 2-D tensors only: the weights go to the returned Muon
   optimizer and the biases to an AdamW optimizer (mlp_muon_bias_hparams) that the model owns
   and mlp_train_epoch steps after the returned one (the usual hybrid). */
int mlp_optimizer_create(mlp *m, const mlp_train_config *tc, clopt_optimizer **out);
/* The biases' AdamW of Muon's hybrid: the example's AdamW lr, no weight decay, the storage
   settings of muon's hyperparameters. */
void mlp_muon_bias_hparams(const clopt_hparams *muon, clopt_hparams *out);
/* The learning-rate schedule of tc (linear warmup from 1% of lr over warmup_steps, then
   cosine decay to 0 at total_steps) into *out; returns 0 for the Schedule-Free rules, which
   take none (*out is then constant), 1 otherwise. */
int mlp_schedule(const mlp_train_config *tc, clopt_schedule *out);

/* Schedule-Free: eval != 0 switches the parameters to the averaged point x
   (clopt_optimizer_eval) for evaluating or saving the model, 0 back to y for training
   (clopt_optimizer_train); the float32 copies of 16-bit weights follow. Nothing happens for
   the other rules. */
int mlp_set_eval_mode(mlp *m, clopt_optimizer *opt, int eval);

typedef struct mlp_epoch_stats {
    double loss;      /* mean training loss over the epoch's examples */
    double accuracy;  /* training accuracy (on the batches as they were trained) */
    size_t steps;
} mlp_epoch_stats;

/* Progress callback: `done` of `steps` steps finished, running mean loss so far. */
typedef void (*mlp_progress_fn)(void *user, size_t done, size_t steps, double loss);

/* One epoch over d in a random order drawn from rng, ceil(n / batch) steps (the last one
   shorter), one clopt_optimizer_step each (then, with 16-bit weights, their float32 copy).
   For Sophia, every hess_interval-th step first computes a Gauss-Newton-Bartlett Hessian
   estimate (a backward pass on labels sampled from the model) into the Hessian buffers.
   step_loss (may be NULL; `steps` entries) receives each step's mean batch loss. progress
   (may be NULL) is called every progress_every steps (each call waits for the device).
   Returns at the end of the epoch with the queue finished. */
int mlp_train_epoch(mlp *m, clopt_optimizer *opt, const mlp_device_data *d, mlp_rng *rng,
                    float *step_loss, mlp_progress_fn progress, void *user,
                    size_t progress_every, mlp_epoch_stats *out);

/* Data-parallel training (clopt-train-mlp --shard): `world` processes run the same epoch
   (the same order, drawn from the same rng) and process `rank` computes the gradient of its
   share of every batch: rows [R·rank/world, R·(rank+1)/world) of a batch of R rows. The loss
   gradient is scaled by world/R (not 1/share), so the mean of the processes' gradients is
   the whole batch's mean gradient also when R is odd or smaller than world (a process with
   no rows contributes zeros). After each backward pass `step` applies the update instead of
   clopt_optimizer_step (e.g. libclopt_mpi's reduce-scatter with the mean, the update of the
   shard, the all-gather of the parameters). `sum` adds `count` doubles over the processes in
   place, the same result on every process (the epoch's loss sums and correct counts). Both
   return 0, or -1 with a message in err. */
typedef struct mlp_data_parallel {
    size_t rank, world;
    int (*step)(void *user, char *err, size_t errlen);
    int (*sum)(void *user, double *v, size_t count, char *err, size_t errlen);
    void *user;
} mlp_data_parallel;

/* mlp_train_epoch's loop for one process of dp (not with Muon's hybrid or Sophia):
   the epoch's loss, accuracy and step losses are those of the whole batches (summed over the
   processes); progress reports this process's share. */
int mlp_train_epoch_dp(mlp *m, const mlp_data_parallel *dp, const mlp_device_data *d,
                       mlp_rng *rng, float *step_loss, mlp_progress_fn progress, void *user,
                       size_t progress_every, mlp_epoch_stats *out);

/* Mean loss and accuracy over d (forward only). */
int mlp_evaluate(mlp *m, const mlp_device_data *d, double *loss, double *accuracy);

size_t mlp_steps_per_epoch(size_t n, size_t batch);

#ifdef __cplusplus
}
#endif
#endif
