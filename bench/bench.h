/* clopt-bench: shared declarations of the benchmark (not part of the library).
 *
 * Layout
 *   main.c    options, the measurement driver, the correctness check, table/JSON/CSV/plot
 *   rules.c   the rule table: which arrays a rule reads/writes, its unfused chain
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

typedef struct cloop_args {
    float *p;
    const float *g;
    float *s[CLOPT_MAX_STATE];
    const float *hess; /* Sophia estimate folded after the update; NULL = none */
    size_t n;
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

extern const bench_rule bench_rules[];
extern const size_t bench_rule_count;

const bench_rule *bench_rule_find(const char *name);
/* Hyperparameters of a benchmark rule (defaults + setup). */
clopt_status bench_rule_hparams(const bench_rule *r, clopt_hparams *hp);

/* Arrays the rule reads and writes (the stream kernel's shape): read-write arrays are the
   parameters and every written state; read-only ones the gradient and read-only states. */
void bench_rule_arrays(const bench_rule *r, const clopt_hparams *hp, size_t *read_write,
                       size_t *read_only);

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

/* Threads the C loops use (OpenMP), 1 without OpenMP. */
int cloop_threads(void);

/* ---- device side (device.c) ------------------------------------------------------------- */

typedef struct bench_device bench_device;

/* Compiles nothing yet; reads the context's tuning. Returns NULL and prints on failure. */
bench_device *bench_device_create(clopt_ctx *ctx);
void bench_device_destroy(bench_device *bd);
unsigned bench_device_vector_width(const bench_device *bd);
size_t bench_device_work_group_size(const bench_device *bd);

/* Enqueues one operation over n elements of the slot arrays; *ev may be NULL. */
cl_int bench_enqueue_op(bench_device *bd, const bench_op *op, cl_mem const *slots, size_t n,
                        cl_event *ev);
/* Enqueues the stream kernel: rw[0..nrw) read and written, ro[0..nro) read only. */
cl_int bench_enqueue_stream(bench_device *bd, cl_mem const *rw, size_t nrw, cl_mem const *ro,
                            size_t nro, size_t n, cl_event *ev);
/* Last error text of the device helpers (build log included). */
const char *bench_device_error(const bench_device *bd);

#define BENCH_STREAM_MAX_RW 6
#define BENCH_STREAM_MAX_RO 3

#endif
