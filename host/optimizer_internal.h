/* SPDX-License-Identifier: MIT */
/* The optimizer's internal layout, shared by optimizer.c and checkpoint.c. */
#ifndef CLOPT_OPTIMIZER_INTERNAL_H
#define CLOPT_OPTIMIZER_INTERNAL_H

#include "internal.h"

/* State tensors per parameter at the optimizer level: the rule's own, plus Lookahead's. */
#define CLOPT_OPT_MAX_STATE (2 * CLOPT_MAX_STATE + 2)
/* Tensors under this many elements keep float32 state in a group of 8-bit state. */
#define CLOPT_Q8_MIN_SIZE 4096

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
    uint32_t sr_stream; /* range groups: the stochastic-rounding stream of all its tensors */
    /* the engine's buffers a range group uses (θ, g, its own state), retained until the
       optimizer is destroyed (clopt_o_hold), as torch's optimizer holds its parameters */
    cl_mem held[2 + CLOPT_OPT_MAX_STATE];
    size_t nheld;
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
    clopt_dtype pdtype, gdtype;                    /* storage of param and grad */
    clopt_dtype state_dtype[CLOPT_OPT_MAX_STATE];  /* F32, or U16 for a remainder */
    int master;        /* clopt_master of a 16-bit param: its state at master_at */
    size_t master_at;
    clopt_dtype sq;    /* storage of the rule's states (F32, BF16, U8) */
    size_t absmax_at;  /* U8: the absmax of kernel state j is state absmax_at + j */
    size_t slow_at;    /* Lookahead's slow weights (0: none; never state 0) */
    int master_ready;  /* the F32 master holds θ (copied at the tensor's first step) */
    int master_copied; /* the step being enqueued copies θ into it (ready once enqueued) */
    uint64_t step;     /* steps applied to this tensor (torch's state['step']); a tensor
                          added after training started counts from 0 */
    double mu_product; /* NAdam: product of μ_1..μ_step for this tensor (1 at step 0) */
    double sf_lr_max, sf_weight_sum; /* Schedule-Free's scalars after `step` steps (0, 0) */
    int sf_switched; /* a mode switch that failed part way switched this tensor: its mode is
                        the other one than the optimizer's (schedule_free.c) */
    cl_mem held[3];  /* a caller-owned tensor's θ, g and Hessian buffers, retained */
    size_t nheld;
} clopt_param;

/* Steps enqueued whose verdict (AMP skip, gradient norm) has not reached the host yet; when
   all slots are in use, a step waits for the oldest (see clopt_optimizer_step_on). */
#define CLOPT_MAX_IN_FLIGHT 32

typedef struct clopt_step_record {
    uint64_t call;       /* 1-based step call */
    int amp;             /* the outcome was unknown at enqueue (AMP on) */
    double scale;        /* AMP's loss scale the step ran with */
    int clip;            /* clipping was on: the norm is reported */
    int checked;         /* the gradient was checked (AMP, clipping or check_finite) */
    cl_event done;       /* the read-back of the control words */
    cl_uint *gate;       /* 5 words written to control words 2..6 when the step starts: on
                            the heap, kept by the slot; a step abandoned while that write
                            waits for the caller's events hands them to a callback */
    cl_uint result[8];   /* the control words after the step */
    float *tab;          /* the step's argument table, uploaded before its launches */
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
    int check_finite;  /* the gradient check runs without AMP or clipping (reports only) */
    int found_inf;
    uint64_t rng_seed, rng_counter;
    /* the engine contract (optimizer.c, the step) */
    cl_mem ctl;                 /* control words, see CTRL in kernels/common.cl */
    cl_mem check;               /* the gradient check's partial sums and flags */
    size_t check_len;           /* floats in check */
    cl_mem tab;                 /* the per-step argument table (rows of CLOPT_CTRL_ROW) */
    size_t tab_len;             /* floats in tab */
    float *tab_host;            /* the table the dry pass fills */
    size_t tab_host_cap;        /* floats in tab_host */
    size_t tab_used;            /* rows reserved by the pass so far */
    cl_command_queue q;         /* the queue of the step being enqueued */
    clopt_ctl cur;              /* control of the launches being enqueued */
    clopt_step_record rec[CLOPT_MAX_IN_FLIGHT];
    size_t rec_head, rec_count; /* ring of records in flight, oldest first */
    uint64_t calls;             /* step calls enqueued */
    clopt_step_report report;   /* the latest verdict that reached the host */
    clopt_loss_scaler scaler;   /* clopt_optimizer_set_loss_scaler's, fed by every verdict */
    int has_scaler;
    int eval_mode;              /* Schedule-Free: the parameters hold x (clopt_optimizer_eval) */
    struct clopt_muon_work *muon; /* Muon's Newton-Schulz work buffers (muon.c), or NULL */
    clopt_tensor_sums_fn sums_hook; /* clopt_optimizer_set_tensor_sums_hook, or NULL */
    void *sums_user;
    cl_event gate;   /* the step's start event while its launches are enqueued, else NULL */
    int gate_opened; /* the tensor-sums hook opened it (its reads need the launches to run) */
};

/* Schedule-Free's scalars of tensor e carried over `count` steps from 0 under group g's
   current hyperparameters (the schedule at each step): after set_step_count. */
void clopt_o_sf_replay(const clopt_optimizer *opt, clopt_param *e, uint64_t count);
/* Group g's lr after `count` completed steps: its lr times the schedule's factor, 0 when that
   is below float32's normal range (a decay run long enough, e.g. torch's ExponentialLR at
   0.99 past 8,000 steps: the kernels take lr as a float, and such an lr moves nothing). */
double clopt_o_group_lr(const clopt_group *g, uint64_t count);

/* State k of e is Lookahead's slow weights (the state after the kernel's, unless it is the
   master of a 16-bit parameter, which never comes with Lookahead). */
static inline int clopt_is_slow(const clopt_param *e, size_t k)
{
    return e->slow_at && k == e->slow_at;
}
/* The name of the absmax state of a state ("exp_avg" -> "exp_avg.absmax"; static storage). */
const char *clopt_absmax_name(const char *state);
/* Bytes per element of state k of e. */
static inline size_t clopt_state_esize(const clopt_param *e, size_t k)
{
    return clopt_dtype_size(e->state_dtype[k]);
}

/* Lookahead is on for a group (the slow weights are the last state). */
int clopt_group_lookahead(const clopt_optimizer *opt, const clopt_group *g);
/* Retains m (not NULL) into held[*nheld] for the optimizer's lifetime (released by
   release_param / clopt_o_release_arena): an engine that releases a registered buffer
   leaves it to the optimizer instead of a dangling handle. */
void clopt_o_hold(cl_mem *held, size_t *nheld, cl_mem m);
/* Fills e's state names, lengths, nstate and nkernel for group g's hyperparameters. */
void clopt_state_layout(const clopt_optimizer *opt, const clopt_group *g, clopt_param *e);
/* Blocks until every step enqueued so far has finished and its AMP verdict is known on the
   host, so the host's step counts are exact (checkpoints, queries). */
clopt_status clopt_opt_settle(clopt_optimizer *opt);
/* CRC-32C (Castagnoli, reflected, as in iSCSI/ext4) of n bytes. */
uint32_t clopt_crc32c(const void *data, size_t n);

/* ---- shared by optimizer.c, ranges.c, passes.c and step.c ---------------------------- */

/* Partial sums per reduction: at most REDUCE_ITEMS work-groups (clopt_reduce_shape), each
   summing a contiguous block of REDUCE_WIDTH-float chunks (RW in kernels/chunks.cl). */
#define REDUCE_ITEMS 4096u
#define REDUCE_WIDTH 16u

enum { SCR_SUMS = 2 * REDUCE_ITEMS, SCR_RMEAN = 2 * REDUCE_ITEMS + 2 };

/* Adafactor's factored view B × R × C of a tensor with >= 2 dims (0 rows: not factored). */
void clopt_o_factored_view(const clopt_param *e, size_t *b, size_t *r, size_t *c);
/* Rows of the GC view (first dim × the rest), 0 when GC does not apply to this tensor. */
size_t clopt_o_gc_rows(const clopt_hparams *hp, const clopt_param *e);
/* Offset in the scratch of tensor e's GC row means. */
size_t clopt_o_scr_gc(const clopt_param *e);
/* Offset in the scratch of Adafactor's statistics partials of tensor e (after the GC means). */
size_t clopt_o_scr_af(const clopt_param *e);
/* Adafactor's statistics tiles of a factored tensor (all 0 for a 1-D one): column tiles,
   rows per band, bands per batch, and the scratch floats of the partials. */
typedef struct clopt_af_tiles {
    size_t ntc, band_rows, nbands, floats;
} clopt_af_tiles;
void clopt_o_af_tiles(const clopt_optimizer *opt, const clopt_param *e, clopt_af_tiles *t);
clopt_status clopt_o_check_hparams(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp);
void clopt_o_release_arena(clopt_group *g);
clopt_status clopt_o_grow_scratch(clopt_optimizer *opt);
/* Makes *m hold at least `floats` floats: a new buffer replaces a smaller one (the old is
   released, which OpenCL defers until its commands finish); *len tracks the size. */
clopt_status clopt_o_ensure_buffer(clopt_optimizer *opt, cl_mem *m, size_t *len, size_t floats,
                                   cl_mem_flags flags, const char *what);
clopt_status clopt_o_reserve_params(clopt_optimizer *opt, size_t more);
/* e's storage types from d, refused where group g's rule or options cannot take them. */
clopt_status clopt_o_take_storage(clopt_optimizer *opt, const clopt_group *g,
                                  const clopt_param_desc *d, clopt_param *e);
/* Shape checks shared by every way of adding tensors; fills e's shape and n. */
clopt_status clopt_o_take_shape(clopt_ctx *ctx, const clopt_param_desc *d, clopt_param *e);
/* Allocates and initialises e's own state buffers from index `from` on (e->owns_state). */
clopt_status clopt_o_alloc_states(clopt_optimizer *opt, clopt_param *e, size_t from);
/* The gradient units: an arena group's whole gradient buffer (at its first tensor), or one
   tensor's gradient. Returns 0 for the arena's other tensors; else *grad and *n. */
int clopt_o_grad_unit(const clopt_optimizer *opt, size_t i, clopt_tensor *grad, size_t *n);
/* A new buffer of `floats` floats filled with value (enqueued on the context's queue). */
cl_mem clopt_o_make_filled(clopt_ctx *ctx, size_t floats, float value, cl_int *err);
/* A new buffer of n zero elements of es bytes (4 or 2). */
cl_mem clopt_o_make_zeros(clopt_ctx *ctx, size_t n, size_t es, cl_int *err);

/* The parameter, gradient and state ranges of the registered tensors plus `extra` free slots
   (ranges.c; checked with clopt_check_disjoint). */
clopt_span *clopt_o_spans_of(const clopt_optimizer *opt, size_t extra, size_t *count);

/* A queue (NULL: the context's) and wait list a step or mode switch may use: of the context's
   cl_context and device, in order; the events valid (step.c). */
clopt_status clopt_o_check_step_queue(clopt_ctx *ctx, cl_command_queue queue, cl_uint num_wait,
                                      const cl_event *wait_list);

/* Kernels and passes (passes.c). */
clopt_status clopt_o_kernel_of(clopt_optimizer *opt, const char *family, const clopt_hparams *hp,
                               int gc, const char *extra, const char *name, cl_kernel *k);
clopt_status clopt_o_set_failed(clopt_optimizer *opt, const clopt_args *a);
/* Enqueue count work-items on the step's queue (nothing in a dry pass). */
clopt_status clopt_o_launch_items(clopt_optimizer *opt, cl_kernel k, size_t count);
clopt_status clopt_o_grad_check(clopt_optimizer *opt, double inv_scale, int amp);
/* A Schedule-Free mode switch failed part way (some tensors switched): steps and saves are
   refused until eval/train finishes it (schedule_free.c). CLOPT_SUCCESS or the refusal. */
clopt_status clopt_o_check_mode_whole(clopt_optimizer *opt);
/* Lookahead's first slow weights: θ (n elements at src) as float32 into dst on opt->q (step.c):
   a copy, or for tensor e's 16-bit θ (e NULL: float32) θ widened, through its master when
   `master` is set and it has one (nothing is enqueued in a dry pass). */
clopt_status clopt_o_slow_start(clopt_optimizer *opt, clopt_tensor src, clopt_tensor dst,
                                size_t n, const clopt_param *e, int master);
/* Tensor e's F32 master set to θ widened (its first step's copy) on opt->q (step.c); the
   caller marks it ready. */
clopt_status clopt_o_master_start(clopt_optimizer *opt, const clopt_param *e);
/* Tensor e's storage as kernel defines appended to extra ("" for float32), and the trailing
   storage arguments (STORAGE_PARAMS) of a kernel over its θ (none for float32). */
void clopt_o_storage_extra(const clopt_param *e, const clopt_hparams *hp, char *extra,
                           size_t cap);
void clopt_o_storage_args(const clopt_optimizer *opt, clopt_args *a, const clopt_param *e);
/* The stochastic-rounding stream of tensor e: its range group's (one for all its tensors),
   else its index. */
uint32_t clopt_o_sr_stream(const clopt_optimizer *opt, const clopt_param *e);
/* n floats of tensor e's θ into host (state_access.c): read as they are, or (16-bit θ)
   widened on the device into a temporary buffer. Blocking, on the context's queue. */
clopt_status clopt_o_read_theta_f32(const clopt_optimizer *opt, const clopt_param *e,
                                    float *host, size_t n);
clopt_status clopt_o_step_lamb(clopt_optimizer *opt, const clopt_param *e,
                               const clopt_hparams *hp, uint64_t t, float gmul);
clopt_status clopt_o_step_adafactor(clopt_optimizer *opt, const clopt_param *e,
                                    const clopt_hparams *hp, uint64_t t, float gmul);
/* Cautious Adam/AdamW/Lion and StableAdamW: a reduction, then the fused update (passes.c). */
clopt_status clopt_o_step_reduced(clopt_optimizer *opt, const clopt_param *e,
                                  const clopt_hparams *hp, uint64_t t, float gmul);
/* Muon: momentum, Newton-Schulz with CLBlast GEMMs, the update (muon.c). */
clopt_status clopt_o_step_muon(clopt_optimizer *opt, const clopt_param *e,
                               const clopt_hparams *hp, uint64_t t, float gmul);
/* Releases Muon's work buffers (clopt_optimizer_destroy). */
void clopt_o_muon_release(clopt_optimizer *opt);
/* passes.c's launch helpers, for muon.c: the partial sums' work-group count over n floats,
   a launch of that many groups, the update pass over n floats (FOR_ITEM_CHUNKS), and
   scratch[dst .. dst+nsums) = the sums of nsums blocks of `items` partials at scratch[0]
   (all enqueue nothing in a dry pass). */
size_t clopt_o_reduce_groups(const clopt_optimizer *opt, size_t n);
clopt_status clopt_o_launch_groups(clopt_optimizer *opt, cl_kernel k, size_t groups);
clopt_status clopt_o_launch_update(clopt_optimizer *opt, cl_kernel k, size_t n);
clopt_status clopt_o_enqueue_final(clopt_optimizer *opt, size_t items, size_t nsums, size_t dst);

#endif
