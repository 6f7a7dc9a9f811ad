/* SPDX-License-Identifier: MIT */
/* What the example's model (mlp.c) and its training loop (mlp_train.c) share and mlp.h does
 * not show: the model's struct and its passes on the device. Not installed, not an API. */
#ifndef CLOPT_MLP_INTERNAL_H
#define CLOPT_MLP_INTERNAL_H

#include "mlp.h"

enum { K_GATHER, K_BIAS_ACT, K_RELU_BW, K_COL_SUMS, K_SOFTMAX, K_STATS, K_COUNT };

struct mlp {
    clopt_ctx *ctx;
    cl_context cl;
    cl_command_queue queue;
    mlp_config cfg;
    cl_program program;
    cl_kernel k[K_COUNT];
    cl_mem w[MLP_MAX_LAYERS], b[MLP_MAX_LAYERS];   /* parameters (float32: what the GEMMs read) */
    cl_mem gw[MLP_MAX_LAYERS], gb[MLP_MAX_LAYERS]; /* gradients */
    /* The float32 parameters and gradients live in one flat buffer each (mlp_flat); w, b, gw
       and gb above are sub-buffers of them at the offsets of `flat`. 16-bit θ (param_dtype
       F16/BF16) is flat.params16, at the same element offsets. */
    mlp_flat flat;
    cl_mem hw[MLP_MAX_LAYERS], hb[MLP_MAX_LAYERS]; /* Sophia's Hessian estimates */
    cl_mem act[MLP_MAX_LAYERS + 1];  /* act[0] input, act[i+1] output of layer i (logits last) */
    cl_mem dact[MLP_MAX_LAYERS + 1]; /* dact[i+1]: gradient of the loss w.r.t. act[i+1] */
    cl_mem y, row_loss, row_correct;
    cl_mem stats;   /* 2 floats per slot */
    size_t stats_slots;
    cl_mem perm;    /* int batch indices */
    size_t perm_len;
    size_t last_rows;
    float mean, inv_std;
    int hessian;
    /* Muon's hybrid: the AdamW optimizer of the biases (mlp_optimizer_create), stepped with
       the caller's after every step and destroyed with the model or the next optimizer. */
    clopt_optimizer *aux;
    char err[1024];
};

/* Set the model's error text (printf-style) and return -1. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int mlp_fail(mlp *m, const char *fmt, ...);
/* "what failed: OpenCL error e" as the error text; -1. */
int mlp_fail_cl(mlp *m, cl_int e, const char *what);

/* Grow the batch-statistics buffer to `slots` slots (kept) / the index buffer to n. */
int mlp_ensure_stats(mlp *m, size_t slots);
int mlp_ensure_perm(mlp *m, size_t n);

/* The passes of a batch on the model's queue (0, or -1 with the error text set): gather rows
 * (from off, or through the index buffer when use_idx) into the input, forward, the loss
 * gradient of the logits (the loss sum divided by denom; sample: Sophia's sampled labels),
 * the batch's loss and accuracy into stats slot `slot`, backward into the gradients. */
int mlp_pass_gather(mlp *m, const mlp_device_data *d, int use_idx, size_t off, size_t rows);
int mlp_pass_forward(mlp *m, size_t rows);
int mlp_pass_loss(mlp *m, size_t rows, double denom, int sample, uint32_t seed);
int mlp_pass_stats(mlp *m, size_t rows, size_t slot);
int mlp_pass_backward(mlp *m, size_t rows);

#endif
