/* SPDX-License-Identifier: MIT */
/* The optimizer's internal layout, shared by optimizer.c and checkpoint.c. */
#ifndef CLOPT_OPTIMIZER_INTERNAL_H
#define CLOPT_OPTIMIZER_INTERNAL_H

#include "internal.h"

/* State tensors per parameter at the optimizer level: the rule's own, plus Lookahead's. */
#define CLOPT_OPT_MAX_STATE (CLOPT_MAX_STATE + 1)

typedef struct clopt_group {
    clopt_hparams hp;
    clopt_schedule sched;
    int arena;           /* tensors live in the arena buffers below */
    size_t first, count; /* arena groups: their tensors are params[first .. first+count) */
    size_t arena_len;    /* floats per arena buffer (tensors plus alignment padding) */
    cl_mem arena_param, arena_grad;
    cl_mem arena_state[CLOPT_OPT_MAX_STATE]; /* also a range group's library-owned state */
    /* range groups (clopt_optimizer_add_range_group): the engine's buffers (not owned), the
       state buffers used (owned when in arena_state) and the chunk table (owned) */
    int ranges;
    cl_mem range_param, range_grad, range_state[CLOPT_OPT_MAX_STATE], range_table;
    size_t nchunks;
} clopt_group;

typedef struct clopt_param {
    clopt_tensor param, grad, hessian; /* hessian.buffer NULL: none (Sophia only) */
    cl_mem param_sub, grad_sub;        /* arena tensors: sub-buffers (owned) */
    size_t n, ndim, shape[CLOPT_MAX_DIMS];
    size_t group;
    size_t nstate;     /* the rule's states, then "slow_params" with Lookahead */
    size_t nkernel;    /* how many of them the update kernel takes */
    const char *state_name[CLOPT_OPT_MAX_STATE];
    size_t state_len[CLOPT_OPT_MAX_STATE];
    clopt_tensor state[CLOPT_OPT_MAX_STATE];
    int owns_state;    /* 0 for arena tensors: the group owns the buffers */
    int slow_ready;    /* Lookahead's slow weights hold θ (copied at the first step) */
    uint64_t step;     /* steps applied to this tensor (torch's state['step']); a tensor
                          added after training started counts from 0 */
    double mu_product; /* NAdam: product of μ_1..μ_step for this tensor (1 at step 0) */
} clopt_param;

/* Steps enqueued whose verdict (AMP skip, gradient norm) has not reached the host yet; when
   all slots are in use, a step waits for the oldest (see clopt_optimizer_step_on). */
#define CLOPT_MAX_IN_FLIGHT 32

typedef struct clopt_step_record {
    uint64_t call;       /* 1-based step call */
    int amp;             /* the outcome was unknown at enqueue (AMP on) */
    int clip;            /* clipping was on: the norm is reported */
    cl_event done;       /* the read-back of the control words */
    cl_uint gate[5];     /* written to control words 2..6 when the step starts */
    cl_uint result[8];   /* the control words after the step */
} clopt_step_record;

struct clopt_optimizer {
    clopt_ctx *ctx;
    clopt_rule rule;
    clopt_group *groups;
    size_t ngroups, cap_groups;
    clopt_param *params;
    size_t nparams, cap_params;
    uint64_t step;  /* optimizer steps applied (schedules count these) */
    cl_mem scratch; /* reduction partials, sums, GC row means */
    size_t scratch_len;
    double max_grad_norm, last_grad_norm;
    double grad_scale; /* AMP loss scale; 0 = off */
    int found_inf;
    uint64_t rng_seed, rng_counter;
    /* the engine contract (optimizer.c, the step) */
    cl_mem ctl;                 /* control words, see CTRL in kernels/common.cl */
    cl_mem check;               /* the gradient check's partial sums and flags */
    size_t check_len;           /* floats in check */
    cl_command_queue q;         /* the queue of the step being enqueued */
    clopt_ctl cur;              /* control of the launches being enqueued */
    clopt_step_record rec[CLOPT_MAX_IN_FLIGHT];
    size_t rec_head, rec_count; /* ring of records in flight, oldest first */
    uint64_t calls;             /* step calls enqueued */
    clopt_step_report report;   /* the latest verdict that reached the host */
};

/* Lookahead is on for a group (the slow weights are the last state). */
int clopt_group_lookahead(const clopt_optimizer *opt, const clopt_group *g);
/* Fills e's state names, lengths, nstate and nkernel for group g's hyperparameters. */
void clopt_state_layout(const clopt_optimizer *opt, const clopt_group *g, clopt_param *e);
/* Blocks until every step enqueued so far has finished and its AMP verdict is known on the
   host, so the host's step counts are exact (checkpoints, queries). */
clopt_status clopt_opt_settle(clopt_optimizer *opt);
/* CRC-32C (Castagnoli, reflected, as in iSCSI/ext4) of n bytes. */
uint32_t clopt_crc32c(const void *data, size_t n);

#endif
