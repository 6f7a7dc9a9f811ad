/* SPDX-License-Identifier: MIT */
/* clopt-bench: the driver's shared declarations (bench.h has the rule table, the benchmark's
 * kernels and the optimizer-level instances it drives).
 *
 * Layout of the driver
 *   options.c  the command line: options, usage, parsing
 *   steps.c    what a rule needs (rule_info), its device and host arrays, one step (or
 *              repetition) of each variant, the OpenCL helpers
 *   check.c    the correctness check before a rule is timed
 *   measure.c  one (rule, n): the interleaved repetitions, the rows and their ratios, the
 *              tensor-count summary, the cache flush
 *   storage.c  storage combinations (--dtypes): their buffers, steps, stream kernels, check
 *   sweep.c    the tuning sweep (--sweep-tuning)
 *   output.c   the rows: the table, JSON, CSV
 *   plot.c     the chart (--plot, gnuplot)
 *   main.c     the context, the loop over rules and sizes
 */
#ifndef CLOPT_BENCH_DRIVER_H
#define CLOPT_BENCH_DRIVER_H

#include "bench.h"

#include <stdio.h>

/* ---- storage combinations (storage.c) ---------------------------------------------------- */

/* How one step stores θ, g, its master and its states (--dtypes). Arithmetic is float32
   throughout; only storage changes. */
typedef struct storage {
    clopt_dtype p, g;      /* θ and g: CLOPT_DTYPE_F32, F16 or BF16 */
    clopt_master master;   /* NONE; F32 (16-bit p); REMAINDER (bf16 p) */
    int sr;                /* stochastic rounding of a 16-bit p without a master */
    int state;             /* the states' type: an index in storage.c's table, 0 = f32, 1 =
                              bf16, 2 = int8 (8-bit blockwise) */
    char name[64];         /* "p=bf16,g=bf16,master=remainder,state=f32" (",sr=1" after master) */
} storage;

/* every valid combination: 24 per state type */
#define MAX_DTYPES 72
/* The name of float32 storage, the rows of every variant but the storage rows. */
#define STORAGE_F32_NAME "p=f32,g=f32,master=none,state=f32"

int storage_is_f32(const storage *c);
/* The states in 8-bit blockwise storage (int8): the step runs one work-item per block. */
int storage_is_q8(const storage *c);
/* --dtypes: "all" (every combination a rule supports) or combinations separated by ';', each
   of keys p, g, master, sr, state separated by ',' (defaults p=f32, g=f32, master=none,
   sr=0, state=f32). 0, or 2 after printing why (unknown keys and values, combinations the
   library does not support). */
int storage_parse(const char *list, storage *out, size_t cap, size_t *count);

/* ---- options (options.c) ---------------------------------------------------------------- */

enum {
    V_FUSED = 0,
    V_UNFUSED,
    V_C_LOOP,
    V_COPY,
    V_STREAM,
    V_ARENA,
    V_SEPARATE,
    V_ARENA_AMP, /* arena with AMP (loss scale 1) and clipping (a bound never reached) on */
    V_RANGES,    /* two range groups over one caller-owned flat buffer, every other tensor */
    V_COUNT
};
extern const char *const variant_names[V_COUNT];
/* The many-tensor variants (timed only with T > 1, plus arena with 1 tensor as reference). */
#define V_MANY ((1u << V_ARENA) | (1u << V_SEPARATE) | (1u << V_ARENA_AMP) | (1u << V_RANGES))

#define MAX_LIST 64
/* Timed runs count steps from here, so that every rule is in its steady state (SGD's first
   step copies g into the buffer, RAdam rectifies from step 6 on). */
#define FIRST_TIMED_STEP 11

typedef struct options {
    const bench_rule *rules[MAX_LIST];
    size_t nrules;
    size_t sizes[MAX_LIST];
    size_t nsizes;
    size_t tensors[MAX_LIST];
    size_t ntensors;
    unsigned variants; /* bit per V_* */
    int variants_given; /* --variants was given */
    long reps, warmup;
    size_t check_n;
    long vw, wg, ipw; /* --vw / --wg / --ipw; -1 = the library's default */
    int sweep;
    int no_flush; /* --no-flush */
    unsigned sweep_vw[MAX_LIST];
    size_t nsweep_vw;
    size_t sweep_wg[MAX_LIST];
    size_t nsweep_wg;
    unsigned sweep_ipw[MAX_LIST];
    size_t nsweep_ipw;
    const char *device, *json, *csv, *plot;
    storage dtypes[MAX_DTYPES]; /* --dtypes, in order; default: float32 alone */
    size_t ndtypes;
    int with_f32; /* float32 is among them: every variant runs, not just the storage rows */
} options;

/* Prints "clopt-bench: <message>" and a pointer to --help on stderr; returns 2. */
int opt_error(const char *fmt, ...);
/* 0: run; 1: exit 0 (help/list/version); 2: bad options (printed). */
int parse_options(int argc, char **argv, options *o);

/* ---- results (output.c) ------------------------------------------------------------------ */

typedef struct row {
    const char *rule;
    int variant;
    const char *dtype; /* the storage combination's name (STORAGE_F32_NAME for float32) */
    size_t n, tensors;
    double ms, ms_min, wall_ms, ms_kernels;
    unsigned launches, steps_per_rep;
    double bytes_per_param; /* a fraction only with Lookahead (its sync every k steps) */
    size_t lib_bytes_per_param;
    double gbps;
    double copy_fraction, stream_fraction, fused_speedup; /* NAN = not measured */
    double tensor_ratio, tensor_wall_ratio;               /* vs arena with 1 tensor */
    const char *check;
    char shape[48]; /* "4096x4096" per tensor (the first), "" for vectors */
    unsigned vector_width;
    size_t work_group_size;
    unsigned items_per_work_item;
    int sweep;
} row;

typedef struct results {
    row *rows;
    size_t n, cap;
} results;

/* A new row with every ratio NAN and check "-"; NULL when out of memory. */
row *add_row(results *res);

/* ---- the run's environment ---------------------------------------------------------------- */

typedef struct env {
    const options *opt;
    clopt_ctx *ctx;
    bench_device *bd;
    cl_context context;
    cl_command_queue queue;
    cl_ulong max_alloc;
    size_t max_wg;
    cl_device_type device_type;
    cl_ulong cache_bytes;   /* the device's global memory cache */
    cl_mem flush_buf;       /* flush_bytes, filled to evict a GPU's cache */
    size_t flush_bytes;     /* a GPU's flush: max(cache_bytes, 512 MiB) (NVIDIA reports
                               SMs x 32 KiB, not its L2: 4 MiB for 50 MiB on an H100/H200) */
    uint64_t *flush_host;   /* cache_bytes, read to evict the host's (CPU device, C loop) */
    clopt_tuning tuning; /* in effect (after --vw/--wg) */
    float *p0, *g0;      /* host data of the largest size */
    results res;
    int check_failed;
    int units_skipped; /* --tensors counts a size could not be split into (exit 1) */
} env;

/* ---- what a rule needs, its arrays, one step of each variant (steps.c) -------------------- */

typedef struct rule_info {
    const bench_rule *r;
    clopt_hparams hp;
    bench_traffic tr;
    int opt_level; /* fused = clopt_optimizer_step */
    int gc;
    unsigned spr;   /* steps per repetition: a whole Lookahead cycle, else 1 */
    size_t nkernel; /* clopt_rule_state_count */
    size_t nstate;  /* states of a vector tensor at the optimizer level (slow weights too) */
    /* stream kernel: slots read and written / only read each step; Lookahead's sync adds
       one stream over (θ, φ) per cycle (la_slot = φ, -1 = none) */
    int srw[BENCH_STREAM_MAX_RW], sro[BENCH_STREAM_MAX_RO];
    size_t nsrw, nsro;
    int la_slot;
    /* storage.c's state types the op-level step takes, a bit per index (storage_rule_types;
       float32, bit 0, always) */
    unsigned state_types;
} rule_info;

/* Prints and returns -1 when the rule's hyperparameters or arrays do not fit. */
int rule_info_make(const bench_rule *r, rule_info *ri);

/* Device arrays of one (rule, n) at the op level. */
typedef struct instance {
    size_t n, nstate;
    cl_mem slot[BA_COUNT];
} instance;

/* The slots in `mask` (parameters and gradient always): parameters from p0, gradient from
   g0, the rule's states at their initial values, Lookahead's slow weights from p0,
   everything else 0. Blocking. */
int instance_create(env *e, const rule_info *ri, size_t n, unsigned mask, const float *p0,
                    const float *g0, instance *in);
void instance_release(instance *in);
/* Slots a chain uses; the state slots of the op-level fused step and of the unfused chain;
   the slots of the stream kernel. */
unsigned chain_mask(const bench_op *ops, size_t nops);
unsigned state_mask(const rule_info *ri);
unsigned stream_mask(const rule_info *ri);

/* The op-level arguments of a float32 step on an instance (its θ, g and states). */
void step_args(const instance *in, const rule_info *ri, uint64_t step, clopt_step_args *a);
/* One clopt_enqueue_step of n elements with arguments a, timed by its event. */
int fused_launch(env *e, const rule_info *ri, const clopt_step_args *a, size_t n, uint64_t step,
                 bench_timing *t);
/* After `done` enqueued launches (the wall clock read as w0 before the first): waits for the
   last, fills t (NULL: not wanted) with the span from the first start to the last end, the sum
   of the launches' own times and the wall clock, each divided by `steps`, and `launches`, and
   releases the events. Returns rc, or the first failure when rc was 0. */
int time_events(cl_event *evs, size_t done, int rc, double w0, unsigned steps,
                unsigned launches, bench_timing *t);
/* The chain of step `step`, Lookahead's sync appended at every k-th step; 0 on failure. */
size_t build_chain(const rule_info *ri, uint64_t step, bench_op *ops);
/* One step of each variant (t may be NULL); stream_rep is one repetition (spr steps). */
int fused_step(env *e, const rule_info *ri, const instance *in, uint64_t step, bench_timing *t);
int unfused_step(env *e, const rule_info *ri, const instance *in, uint64_t step,
                 bench_timing *t);
int stream_rep(env *e, const rule_info *ri, const instance *in, bench_timing *t);
int copy_step(env *e, cl_mem src, cl_mem dst, size_t bytes, bench_timing *t);

/* Host arrays of the C loop: T tensors (the split of n) with their states. */
typedef struct host_instance {
    bench_split sp;
    size_t n, nstate;
    size_t slen[BENCH_MAX_STATE]; /* concatenated over the tensors */
    float *p, *s[BENCH_MAX_STATE];
    const float *g;
} host_instance;

int host_create(const rule_info *ri, size_t n, size_t T, const float *p0, const float *g0,
                host_instance *h);
void host_release(host_instance *h);
void cloop_step(const rule_info *ri, host_instance *h, uint64_t step, bench_timing *t);

/* "4096x4096" (or "a-bxc" for two heights) of a matrix split, "" for vectors. */
void shape_text(const bench_split *sp, char *buf, size_t len);
/* Deterministic uniform values in [lo, hi) (splitmix64 of seed and index). */
void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
/* Print a failure and return -1. */
int cl_fail(const char *what, cl_int err);
/* The checks' arena and separate runs split n into this many tensors. */
#define CHECK_TENSORS 3
/* clEnqueueFillBuffer of bytes from offset 0 in pieces of at most 2^30 bytes (NVIDIA's
   OpenCL hangs or fails on fills of 2 GiB or more, pyopencl#395). */
cl_int fill_pieces(cl_command_queue q, cl_mem buf, const void *pattern, size_t psize,
                   size_t bytes);
int clopt_fail_msg(env *e, const char *what, clopt_status s);
/* Start and end of an event's command (ns). */
int event_ns(cl_event ev, cl_ulong *start, cl_ulong *end);

/* ---- storage rows (storage.c) -------------------------------------------------------------- */

/* Rules whose steps have storage rows at the op level: the element-wise ones (the others'
   are storage_opt.c's, at the optimizer level). */
#define STORAGE_RULE(ri) (!(ri)->opt_level)

/* The states' type of combination c; whether a state of this name takes the signed 8-bit
   map (a state that changes sign); a value of an array of type t as a double; the spacing
   of type t's values at x (subnormals included). */
clopt_dtype storage_state_dtype(const storage *c);
int storage_q8_signed(const char *state);
double storage_value_at(const void *x, size_t i, clopt_dtype t);
double storage_ulp_of(double x, clopt_dtype t);

/* Sets ri->state_types from what the library takes (clopt_alloc_state_ex of one element)
   and prints a note per state type of --dtypes that the rule does not take. */
void storage_rule_types(env *e, rule_info *ri);
/* Whether the rule's step takes combination c (its state type). */
int storage_runs(const rule_info *ri, const storage *c);

#define STORAGE_STATE_TYPES 3
/* The 16-bit copies of θ and g, the master or remainder, the stream's write-only θ and the
   states in bf16 and int8 of the combinations of one (rule, n); the f32 states are the
   instance's. */
typedef struct storage_bufs {
    size_t n;
    cl_mem p16[3], g16[3]; /* indexed by clopt_dtype (F16, BF16) */
    cl_mem master;         /* n floats, from θ */
    cl_mem remainder;      /* n 16-bit words, zeros */
    cl_mem sink;           /* n 16-bit words: what the stream writes for a θ never read */
    /* by state type (1 bf16, 2 int8): clopt_alloc_state_ex's states at their initial values
       and, int8, their absmaxes */
    cl_mem state[STORAGE_STATE_TYPES][CLOPT_MAX_STATE];
    cl_mem absmax[STORAGE_STATE_TYPES][CLOPT_MAX_STATE];
} storage_bufs;

/* The buffers of the combinations of combos[0..count) the rule runs (float32 ones need none)
   next to instance in, which holds θ, g and the f32 states: θ and g converted from the
   instance's (rounded to nearest even), the master from θ, bf16 and int8 states from
   clopt_alloc_state_ex. Blocking. */
int storage_bufs_create(env *e, const rule_info *ri, const instance *in, const storage *combos,
                        size_t count, storage_bufs *sb);
void storage_bufs_release(storage_bufs *sb);
/* Bytes per parameter one step of combination c moves (its stream kernel's); < 0 when its
   arrays do not fit the stream kernel. */
double storage_bytes(const rule_info *ri, const storage *c);
/* One fused step (one clopt_enqueue_step) or one stream kernel of combination c. */
int storage_fused_step(env *e, const rule_info *ri, const instance *in, const storage_bufs *sb,
                       const storage *c, uint64_t step, bench_timing *t);
int storage_stream_step(env *e, const rule_info *ri, const instance *in, const storage_bufs *sb,
                        const storage *c, bench_timing *t);

/* The check of every storage combination but float32 (e->opt->dtypes) of an element-wise
   rule at n: one step against the float32 step on the same (rounded) values. err[i]: the
   worst error of combination i in units of its tolerance (NAN: float32, not checked); prints
   one line, and every failure. -1 on a run-time failure. */
int storage_check(env *e, const rule_info *ri, size_t n, double *err);

/* Shared by the two checks: err[i] = NAN for every combination, and how many of them the
   rule runs other than float32; a tally of the results and the check's line (what: the
   requirements; unit: of the worst θ error), which marks the run failed when one failed. */
size_t storage_check_begin(const env *e, const rule_info *ri, double *err);
/* θ and g of both checks (n each): θ from U(-1e-5, 1e-5), small, so that one step moves it
   by many ulps of a 16-bit type and a step that left θ alone would fail (at |θ| ~ 1 an AdamW
   step is a fraction of a bf16 ulp; AdaMod's first step, ~1e-6, is 16 bf16 ulps at 1e-5); g
   from U(-0.5, 0.5). */
#define STORAGE_CHECK_P_RANGE 1e-5f
void storage_check_inputs(float *p0, float *g, size_t n);
typedef struct storage_tally {
    size_t todo, ok, worst_i, weak_i;
    double worst, weakest;
} storage_tally;
#define STORAGE_TALLY_INIT(todo) {(todo), 0, 0, 0, -1.0, INFINITY}
void storage_tally_add(storage_tally *t, size_t i, double err, double theta, double update);
void storage_tally_print(env *e, const rule_info *ri, size_t n, const char *what,
                         const char *unit, const storage_tally *t);

/* ---- storage rows of the optimizer-level rules (storage_opt.c) ----------------------------- */

struct check_result;

/* storage_rule_types for a rule that runs at the optimizer level: what clopt_optimizer_create
   takes. */
void storage_opt_rule_types(env *e, rule_info *ri);
/* Bytes per parameter of combination c's stream kernel (its passes' arrays in its element
   sizes, Lookahead's sync spread over its period); < 0 when they do not fit. */
double storage_opt_bytes(const rule_info *ri, const storage *c);
/* Measures the fused (clopt_optimizer_step_on over one caller-owned tensor of c's types)
   and stream rows of every storage combination but float32, one combination at a time, and
   adds their rows. */
int storage_opt_measure(env *e, const rule_info *ri, size_t n, const struct check_result *cr);
/* storage_check for a rule that runs at the optimizer level. */
int storage_opt_check(env *e, const rule_info *ri, size_t n, double *err);

/* ---- correctness check (check.c) ---------------------------------------------------------- */

typedef struct check_result {
    /* worst |x - ref| / (atol + rtol*|ref|) of each variant; NAN = not run */
    double unfused_err, cloop_err, arena_err, separate_err, amp_err, ranges_err;
    int arena_identical; /* arena and separate bit-identical (-1 = not compared) */
    double storage_err[MAX_DTYPES]; /* per --dtypes combination (NAN: float32 or not run) */
} check_result;

/* Runs the check of a rule at --check-n and prints its line; a disagreement sets
   e->check_failed. -1 on a run-time failure. */
int check_rule(env *e, const rule_info *ri, check_result *cr);
/* "ok", "FAIL" or "-" (not run) for an error in units of the tolerance. */
const char *check_word(double err);
/* Worst |x - ref| / (atol + rtol |ref|) with the check's tolerance (atol from the rms of
   ref); *where its index, *bad the count out of tolerance. */
double check_compare(const float *x, const float *ref, size_t n, size_t *where, size_t *bad);

/* ---- measuring (measure.c) ------------------------------------------------------------------ */

/* One timed series: a variant with T tensors (or a tuning of the sweep). */
typedef struct unit {
    int variant;
    size_t T;
    const storage *st; /* a storage row (fused or stream) of this combination; NULL: float32 */
    size_t dtype;      /* its index in the options' dtypes */
    optrun *opt; /* arena, separate, and fused at the optimizer level */
    double *dev, *wall, *kern;
    size_t ns;
    unsigned launches;
    double bytes;
    char shape[48];
} unit;

/* Median (sorts v in place). */
double median(double *v, size_t n);
/* Measures every selected variant and tensor count of one (rule, n) and adds their rows. */
int measure(env *e, const rule_info *ri, size_t n, const check_result *cr);
void record(unit *u, const bench_timing *t);
/* Room for reps samples in u (dev, wall, kern); -1 (printed) when out of memory. unit_free
   releases them and u's optimizer. */
int unit_samples(unit *u, size_t reps);
void unit_free(unit *u);
/* The row of a unit: medians, GB/s, the tuning in effect. */
int finish_row(env *e, const rule_info *ri, const unit *u, size_t n, const char *check);
/* Untimed optimizer steps up to about FIRST_TIMED_STEP. */
int optrun_warm(const env *e, const rule_info *ri, optrun *o);
/* The arena-vs-separate summary of one (rule, n) with tensor counts > 1 (its rows from
   first_row on). */
void print_tensors(const env *e, const rule_info *ri, size_t n, size_t first_row);
/* Whether a step moving step_bytes is timed cold, and the flush before each timed step. */
int wants_flush(const env *e, double step_bytes);
int flush_device(env *e);

/* ---- the tuning sweep (sweep.c) ------------------------------------------------------------ */

int run_sweep(env *e);

/* ---- output (output.c, plot.c) -------------------------------------------------------------- */

/* "2^20" for powers of two, else the decimal count. */
void format_n(size_t n, char *buf, size_t len);
/* fmt of x, "-" for NaN and Inf. */
void format_num(double x, const char *fmt, char *buf, size_t len);
/* The rows from `from` on, with the header line first when header is set. */
void print_table(const results *res, size_t from, int header);
int write_json(const env *e, const char *path);
int write_csv(const env *e, const char *path);
int write_plot(const env *e, const char *path);

#endif
