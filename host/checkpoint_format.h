/* SPDX-License-Identifier: MIT */
/* The checkpoint format's constants and byte-order helpers, shared by checkpoint.c (writing)
 * and checkpoint_load.c (reading); the format is documented in docs/checkpoint-format.md. */
#ifndef CLOPT_CHECKPOINT_FORMAT_H
#define CLOPT_CHECKPOINT_FORMAT_H

#include "optimizer_internal.h"

#include <string.h>

#define CKP_MAGIC "CLOPTCKP"
#define CKP_VERSION 4u
enum { TAG_OPTM = 1, TAG_GRUP = 2, TAG_TENS = 3 };
/* OPTM flags (version 2) */
enum {
    OPTM_STATE_TENSORS = 1u,
    OPTM_CHECK_FINITE = 2u, /* clopt_optimizer_set_check_finite is on */
    OPTM_EVAL_MODE = 4u,    /* version 4: Schedule-Free in eval mode (the parameters hold x) */
    OPTM_KNOWN = OPTM_STATE_TENSORS | OPTM_CHECK_FINITE | OPTM_EVAL_MODE
};
/* TENS flags (version 2) */
enum {
    TENS_PARAMS = 1u,
    TENS_SLOW_READY = 2u,
    TENS_MASTER_READY = 4u, /* version 3: the F32 master holds values (the tensor stepped) */
    TENS_KNOWN = TENS_PARAMS | TENS_SLOW_READY | TENS_MASTER_READY
};

/* The largest step count a checkpoint may hold (optimizer_internal.h). */
#define CKP_MAX_STEP CLOPT_MAX_STEP_COUNT
/* Bytes of one schedule stage and the most a group of a version-1 file adds (its μ product):
   the slack between this optimizer's own checkpoint size and the largest file it can load. */
#define CKP_STAGE_BYTES (4u + 3u * 8u + 4u * 8u)
#define CKP_GROUP_SLACK (8u + CLOPT_MAX_STAGES * CKP_STAGE_BYTES)

/* The hyperparameters, field by field, in file order. */
#define CKP_DOUBLES(X)                                                                       \
    X(lr) X(beta1) X(beta2) X(beta3) X(eps) X(weight_decay) X(momentum) X(dampening) X(alpha) \
    X(rho) X(bs) X(lr_decay) X(initial_accumulator_value) X(momentum_decay) X(eps2)            \
    X(clip_threshold) X(decay_rate) X(lookahead_alpha) X(n_sma_threshold)
#define CKP_INTS(X)                                                                          \
    X(hess_interval) X(nesterov) X(amsgrad) X(maximize) X(centered) X(relative_step)          \
    X(scale_parameter) X(warmup_init) X(use_beta1) X(bias_correction) X(grad_averaging)       \
    X(grad_centralization) X(gc_conv_only) X(lookahead_k)
/* Added in version 3 (0 when loading an older file). */
#define CKP_INTS_V3(X) X(master) X(stochastic_rounding) X(state_dtype)
/* Added in version 4 (the rules of 2024-2025; their defaults when loading an older file). */
#define CKP_DOUBLES_V4(X) X(r) X(weight_lr_power) X(clip_exponent)
#define CKP_INTS_V4(X)                                                                       \
    X(warmup_steps) X(decouple) X(alpha_warmup) X(beta3_warmup) X(cautious) X(ns_steps)

/* float32 values are stored as little-endian bit patterns: on a little-endian host they are
   copied between the device and the bytes as they are, otherwise swapped in place. */
static inline int host_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static inline void swap_u16(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 2) {
        unsigned char t = p[0];
        p[0] = p[1], p[1] = t;
    }
}

static inline void swap_floats(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char t = p[0];
        p[0] = p[3], p[3] = t;
        t = p[1], p[1] = p[2], p[2] = t;
    }
}

/* The size of this optimizer's own checkpoint with every save option on (checkpoint.c;
   counts only, no device access). */
size_t clopt_ckp_full_size(const clopt_optimizer *opt);

#endif
