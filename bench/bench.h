/* SPDX-License-Identifier: MIT */
/* clopt-bench: shared declarations of the benchmark (not part of the library).
 *
 * Layout
 *   driver.h  the driver: options.c, steps.c, check.c, measure.c, sweep.c, output.c, plot.c,
 *             main.c (the command line, the measurement, the check, the sweep, the output)
 *   rules.c   the rule table: which arrays a rule reads/writes, its unfused chain
 *   optrun.c  optimizer-level instances: T tensors in one arena group or in T caller-owned
 *             buffers, timed with markers around clopt_optimizer_step
 *   cloop.c   the plain C reference loops (compiled -O3 -march=native -fopenmp)
 *   device.c  the benchmark's own OpenCL kernels (bench/kernels, .cl files): unfused one-operation
 *             kernels and stream kernels, built with the library's vector width/work-group
 *
 * Adding a rule = one entry in bench_rules[] (rules.c), a C loop in cloop.c and, optionally,
 * an unfused chain builder.
 */
#ifndef CLOPT_BENCH_H
#define CLOPT_BENCH_H

#include "clopt.h"

#include <stddef.h>
#include <stdint.h>

/* ---- arrays of one benchmark instance ----------------------------------------------------- */

/* Array slots a chain refers to: parameters, gradient, the rule's state tensors (in
   clopt_rule_state_name order) and scratch arrays of the unfused chain. */
enum {
    BA_P = 0,
    BA_G,
    BA_S0,
    BA_S1,
    BA_S2,
    BA_S3,
    BA_T0,
    BA_T1,
    BA_T2,
    BA_T3,
    BA_COUNT
};
#define BA_S(i) (BA_S0 + (i))
#define BA_FIRST_TEMP BA_T0

/* ---- unfused chain -------------------------------------------------------------------- */

/* One elementary operation on whole arrays, as a framework without fusion launches it.
   d = f(x, y; a, b); d may equal x or y (in place). */
typedef enum bench_opkind {
    OP_COPY = 0, /* d = x */
    OP_SCALE,    /* d = a*x */
    OP_ADDS,     /* d = x + a */
    OP_AFFINE,   /* d = a*x + b */
    OP_AXPY,     /* d = x + a*y */
    OP_MUL,      /* d = x*y */
    OP_DIV,      /* d = x/y */
    OP_MAX,      /* d = max(x, y) */
    OP_MIN,      /* d = min(x, y) */
    OP_SQRT,     /* d = sqrt(x) */
    OP_ABS,      /* d = |x| */
    OP_SIGN,     /* d = sign(x) (sign(0) = 0) */
    OP_EXP,      /* d = exp(x) */
    OP_RECIP,    /* d = a / x */
    OP_MINS,     /* d = min(x, a) */
    OP_MAXS,     /* d = max(x, a) (torch.clamp(x, min=a)) */
    OP_CLAMP,    /* d = min(max(x, a), b) (torch.clamp(x, a, b)) */
    OP_LERP,     /* d = x + a*(y - x), as torch.lerp: y - (y - x)*b (b = 1 - a) when a >= 0.5 */
    OP_KIND_COUNT
} bench_opkind;

typedef struct bench_op {
    bench_opkind kind;
    int d, x, y; /* BA_* slots; y = -1 for unary operations */
    float a, b;
} bench_op;

#define BENCH_MAX_OPS 48

/* Kernel name and arity (1 or 2 array inputs) of an operation kind. */
const char *bench_op_kernel(bench_opkind k);
int bench_op_arity(bench_opkind k);

/* Builds the chain of one step; returns the number of operations (0 = error). */
typedef size_t (*bench_chain_fn)(const clopt_hparams *hp, uint64_t step, double mu_product,
                                 bench_op *ops, size_t cap);

/* ---- C reference loop ----------------------------------------------------------------- */

/* State tensors of one parameter tensor at the optimizer level: the rule's (Adafactor's
   factored row/column vectors included) plus Lookahead's slow weights. */
#define BENCH_MAX_STATE (CLOPT_MAX_STATE + 1)

typedef struct cloop_args {
    float *p;
    const float *g;
    float *s[BENCH_MAX_STATE]; /* the optimizer's state order (bench_state_layout) */
    const float *hess; /* Sophia estimate folded after the update; NULL = none */
    size_t n;
    size_t rows, cols; /* a rows x cols matrix (n = rows*cols); rows 0 = a vector */
    uint64_t step;
    double mu_product; /* NAdam: product of mu_1..mu_{t-1} */
    const clopt_hparams *hp;
} cloop_args;

typedef void (*bench_cloop_fn)(const cloop_args *a);

/* ---- the rule table -------------------------------------------------------------------- */

typedef struct bench_rule {
    const char *name;                 /* benchmark name ("adamw", "sgd_momentum") */
    clopt_rule rule;                  /* library rule */
    void (*setup)(clopt_hparams *hp); /* changes to clopt_hparams_default(); may be NULL */
    unsigned readonly_states;         /* bit i: state i is read but not written */
    bench_cloop_fn cloop;             /* C reference loop */
    bench_chain_fn chain;             /* unfused chain; NULL = none yet */
    unsigned flags;                   /* BENCH_* */
    int in_default_run;               /* part of the no-argument run */
} bench_rule;

/* The update has a sign(): elements within rounding of 0 may flip between implementations. */
#define BENCH_SIGN 1u
/* Optimizer level only (Adafactor, LAMB: passes with reductions). Rules with Lookahead
   (lookahead_k > 0) or gradient centralization on matrices are optimizer-level too. */
#define BENCH_OPT_LEVEL 2u
/* Tensors are matrices rows x cols (bench_matrix_shape); otherwise vectors. */
#define BENCH_MATRIX 4u

extern const bench_rule bench_rules[];
extern const size_t bench_rule_count;

const bench_rule *bench_rule_find(const char *name);
/* Hyperparameters of a benchmark rule (defaults + setup). */
clopt_status bench_rule_hparams(const bench_rule *r, clopt_hparams *hp);

/* Arrays the rule reads and writes (the stream kernel's shape): read-write arrays are the
   parameters and every written state; read-only ones the gradient and read-only states. */
void bench_rule_arrays(const bench_rule *r, const clopt_hparams *hp, size_t *read_write,
                       size_t *read_only);

/* What one step moves, per parameter (bytes = 4 * (2 rw + ro) + gc_bytes + 16 / la_k):
   element-wise rules read rw + ro arrays and write rw (bench_rule_arrays); Adafactor and LAMB
   as clopt_rule_bytes_per_param counts their passes (reads - writes arrays read only); GC's
   row-mean pass reads g once more; Lookahead reads and writes θ and the slow weights every
   la_k steps. lib_bytes is clopt_rule_bytes_per_param. The multi-pass rules' read-only
   arrays beyond g are arrays read again by another pass: θ re_theta times, g re_grad times
   and re_states of the read-write states once each (ro = 1 + the three; the storage rows
   give each its element size, storage_opt.c). */
typedef struct bench_traffic {
    size_t rw, ro, lib_bytes, gc_bytes;
    size_t re_theta, re_grad, re_states;
    unsigned la_k;
    double bytes;
} bench_traffic;
void bench_rule_traffic(const bench_rule *r, const clopt_hparams *hp, bench_traffic *t);

/* Gradient centralization applies to this rule's tensors (a matrix, GC on). */
int bench_rule_gc(const bench_rule *r, const clopt_hparams *hp);
/* fused runs at the optimizer level (clopt_optimizer_step) rather than clopt_enqueue_step. */
int bench_rule_opt_level(const bench_rule *r, const clopt_hparams *hp);
/* The rows x cols of an n-element matrix: rows the largest divisor of n <= sqrt(n). */
void bench_matrix_shape(size_t n, size_t *rows, size_t *cols);
/* State tensors of one tensor (n elements; rows 0 = a vector) in the optimizer's order:
   lengths into len[], names into name[] (may be NULL); returns the count. */
size_t bench_state_layout(const bench_rule *r, const clopt_hparams *hp, size_t n, size_t rows,
                          size_t cols, size_t *len, const char **name);

/* Bytes per parameter moved by a chain: every operation reads its distinct inputs and
   writes its output once. */
size_t bench_chain_bytes(const bench_op *ops, size_t nops);
/* Highest slot used by a chain, plus one. */
int bench_chain_slots(const bench_op *ops, size_t nops);

/* C loops (cloop.c). */
void cloop_sgd(const cloop_args *a);
void cloop_adam(const cloop_args *a);
void cloop_adamw(const cloop_args *a);
void cloop_adagrad(const cloop_args *a);
void cloop_adadelta(const cloop_args *a);
void cloop_rmsprop(const cloop_args *a);
void cloop_adamax(const cloop_args *a);
void cloop_nadam(const cloop_args *a);
void cloop_radam(const cloop_args *a);
void cloop_adamod(const cloop_args *a);
void cloop_diffgrad(const cloop_args *a);
void cloop_lion(const cloop_args *a);
void cloop_sophia(const cloop_args *a);
void cloop_adafactor(const cloop_args *a);
void cloop_lamb(const cloop_args *a);
void cloop_ranger(const cloop_args *a);
void cloop_sf_adamw(const cloop_args *a);
void cloop_sf_sgd(const cloop_args *a);
void cloop_adopt(const cloop_args *a);
void cloop_ademamix(const cloop_args *a);
void cloop_cautious_adamw(const cloop_args *a);
void cloop_cautious_lion(const cloop_args *a);
void cloop_stable_adamw(const cloop_args *a);

/* Schedule-Free's scalars of step `step` (rules.c): the averaging coefficient c_t (returned)
   and lr_t, and the scalar state before the step (lr_max, weight_sum; clopt_step_args'
   sf_lr_max, sf_weight_sum), replayed from step 1 with clopt_schedule_free_advance. */
double bench_sf_scalars(const clopt_hparams *hp, uint64_t step, double *lr_t, double *lr_max,
                        double *weight_sum);
/* AdEMAMix's α_t and β3_t (the warmup schedulers of apple/ml-ademamix, as clopt.h). */
double bench_ademamix_alpha(const clopt_hparams *hp, uint64_t step);
double bench_ademamix_beta3(const clopt_hparams *hp, uint64_t step);
/* Lookahead's sync: θ = φ + alpha (θ - φ); φ = θ. */
void cloop_lookahead(float *p, float *slow, size_t n, float alpha);

/* Threads the C loops use (OpenMP), 1 without OpenMP. */
int cloop_threads(void);

/* ---- device side (device.c) ------------------------------------------------------------- */

typedef struct bench_device bench_device;

/* Compiles nothing yet; reads the context's tuning. Returns NULL and prints on failure. */
bench_device *bench_device_create(clopt_ctx *ctx);
void bench_device_destroy(bench_device *bd);
unsigned bench_device_vector_width(const bench_device *bd);
unsigned bench_device_items_per_work_item(const bench_device *bd);
/* Vectors per work-item of t (0 means 1, as in the library). */
unsigned bench_tuning_ipw(const clopt_tuning *t);
size_t bench_device_work_group_size(const bench_device *bd);
/* Follows a change of the context's tuning (the tuning sweep); programs are kept per
   vector width. */
void bench_device_set_tuning(bench_device *bd, const clopt_tuning *t);

/* Enqueues one operation over n elements of the slot arrays; *ev may be NULL. */
cl_int bench_enqueue_op(bench_device *bd, const bench_op *op, cl_mem const *slots, size_t n,
                        cl_event *ev);
#define BENCH_STREAM_MAX_RW 6
#define BENCH_STREAM_MAX_RO 6
#define BENCH_STREAM_MAX_WO 2
#define BENCH_STREAM_MAX_AB 4
/* 8-bit blockwise state: elements per absmax entry, and the geometry of the library's 8-bit
   kernels (host/rules.c clopt_plan_step), one work-item per block: vectors of 16, 16 of them
   per work-item. */
#define BENCH_Q8_BLOCK 256
#define BENCH_Q8_VW 16
#define BENCH_Q8_IPW (BENCH_Q8_BLOCK / BENCH_Q8_VW)
/* 1 when the library runs 8-bit state under tuning t in work-groups of 256 / VW (one
   vector per work-item), else 0 (a work-item per block). */
static inline int bench_q8_group(const clopt_tuning *t) { return bench_tuning_ipw(t) == 1; }

/* The arrays of a stream kernel: rw read and written, ro read only, wo written only, each
   with its element size in bytes (4 float, 2 a 16-bit type, 1 an 8-bit one; 0 means 4), and
   ab, absmax arrays of 8-bit state (ceil(n / 256) floats, read and written; with any, the
   kernel runs one work-item per block of 256 elements, as the library's 8-bit kernels). */
typedef struct bench_stream_arrays {
    size_t nrw, nro, nwo, nab;
    cl_mem rw[BENCH_STREAM_MAX_RW], ro[BENCH_STREAM_MAX_RO], wo[BENCH_STREAM_MAX_WO],
        ab[BENCH_STREAM_MAX_AB];
    unsigned rw_size[BENCH_STREAM_MAX_RW], ro_size[BENCH_STREAM_MAX_RO],
        wo_size[BENCH_STREAM_MAX_WO];
} bench_stream_arrays;

/* Bytes one element of the arrays moves: 2 x size per rw array, size per ro and wo one,
   2 x 4 / 256 per absmax array. */
double bench_stream_bytes(const bench_stream_arrays *a);
/* Enqueues the stream kernel over n elements of the arrays (a program per shape and sizes). */
cl_int bench_enqueue_stream(bench_device *bd, const bench_stream_arrays *a, size_t n,
                            cl_event *ev);
/* Last error text of the device helpers (build log included). */
const char *bench_device_error(const bench_device *bd);

/* ---- timing of one step (or one repetition of several steps) ----------------------------- */

typedef struct bench_timing {
    double dev_ms, wall_ms, kernels_ms; /* kernels_ms NAN: launches not individually timed */
    unsigned launches;
} bench_timing;

double bench_now_ms(void);

/* ---- optimizer level (optrun.c) ---------------------------------------------------------- */

/* How the T tensors are registered: one clopt_optimizer_add_arena_group (the library's
   buffers), or T caller-owned buffers, each with clopt_optimizer_add_param_desc. */
typedef enum optrun_mode {
    OPTRUN_SEPARATE = 0,
    OPTRUN_ARENA,
    OPTRUN_ARENA_AMP, /* arena with AMP (loss scale 1) and clipping (bound 1e18) on */
    OPTRUN_RANGES     /* two range groups over one flat caller-owned buffer (every other
                         tensor in the second, as an engine's biases) */
} optrun_mode;

/* The split of a total of n elements into T tensors: vectors of n/T elements (the
   remainder spread over the first ones), or for matrices rows/T rows of `cols` each. */
typedef struct bench_split {
    size_t T, n;
    size_t *len;   /* elements of tensor i */
    size_t *rows;  /* rows of tensor i (matrices), NULL for vectors */
    size_t cols;
} bench_split;
/* Returns -1 (and prints why) when the split is impossible (more tensors than rows). */
int bench_split_make(const bench_rule *r, size_t n, size_t T, bench_split *sp);
void bench_split_free(bench_split *sp);

typedef struct optrun optrun;

/* An optimizer of rule r with T tensors: parameters from p0, gradients from g0 (both
   concatenated over the tensors, n floats). Prints and returns -1 on failure. */
int optrun_create(clopt_ctx *ctx, const bench_rule *r, const clopt_hparams *hp,
                  optrun_mode mode, const bench_split *sp, const float *p0, const float *g0,
                  optrun **out);
/* The same with caller-owned tensors (OPTRUN_SEPARATE) whose θ and g are stored as pt and gt
   (p0 and g0 rounded to nearest even into them), and hp's master, stochastic rounding and
   state type: a storage row. optrun_read and the state layout check are float32 only. */
int optrun_create_typed(clopt_ctx *ctx, const bench_rule *r, const clopt_hparams *hp,
                        const bench_split *sp, const float *p0, const float *g0,
                        clopt_dtype pt, clopt_dtype gt, optrun **out);
/* Raw bytes of tensor 0's θ (its length x its type's size) into out. Blocking. */
int optrun_read_theta_raw(optrun *o, void *out);
/* Raw bytes of tensor 0's state `name` into out (cap bytes); *dtype receives its type.
   Returns the bytes read, or -1 (printed) when there is no such state or it does not fit. */
long optrun_read_state_raw(optrun *o, const char *name, void *out, size_t cap,
                           clopt_dtype *dtype);
void optrun_destroy(optrun *o);
/* Overwrites every gradient with g (n floats, concatenated). Blocking. */
int optrun_write_grad(optrun *o, const float *g);
/* `steps` optimizer steps, timed: clFinish; a marker; the steps; the last step's event.
   dev_ms: end of the last step's marker minus end of the first marker (device span, which
   includes the host's enqueueing as the device waits for it); wall_ms: from before the first
   marker to the completion of the last step. Both divided by steps. t may be NULL. */
int optrun_step(optrun *o, unsigned steps, bench_timing *t);
/* How many optrun_step timings fell back to the wall clock (markers without profiling
   times on this device). */
unsigned long optrun_wall_fallbacks(void);
/* Number of arrays optrun_read fills: the parameters, then each state. */
size_t optrun_array_count(const optrun *o);
/* Length (floats) of array k, concatenated over the tensors. */
size_t optrun_array_len(const optrun *o, size_t k);
/* Reads parameters and every state, concatenated over the tensors. Blocking. */
int optrun_read(optrun *o, float *const *out);
/* Kernel launches of one step without a Lookahead sync (from the library's structure). */
unsigned optrun_launches(const optrun *o);

#endif
