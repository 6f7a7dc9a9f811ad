/* SPDX-License-Identifier: MIT */
/* Internal declarations shared by the host files; not installed. */
#ifndef CLOPT_INTERNAL_H
#define CLOPT_INTERNAL_H

#include "clopt.h"
#include "embedded.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CLOPT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLOPT_PRINTF(a, b)
#endif

extern const clopt_embedded_file clopt_kernel_sources[];
extern const size_t clopt_kernel_sources_count;

typedef struct clopt_kernel_entry {
    char *name;
    cl_kernel kernel;
} clopt_kernel_entry;

typedef struct clopt_program_entry {
    char *family;
    char *options;
    cl_program program;
    clopt_kernel_entry *kernels;
    size_t nkernels;
} clopt_program_entry;

struct clopt_ctx {
    cl_context context;
    cl_device_id device;
    cl_command_queue queue;
    cl_device_type device_type;
    char device_name[256];
    char driver_version[128];
    char platform_version[256];
    clopt_tuning tuning; /* the device's default, or the caller's (tuning_fixed) */
    int tuning_fixed;    /* set by clopt_ctx_set_tuning: one tuning for every kernel */
    cl_uint compute_units;   /* CL_DEVICE_MAX_COMPUTE_UNITS (1 if the query failed); a CPU
                                device's: the host's online processors */
    size_t max_work_group;   /* CL_DEVICE_MAX_WORK_GROUP_SIZE (0 if the query failed) */
    int divsqrt_cr; /* the device offers correctly rounded float division and sqrt
                       (CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT): every build asks for them */
    char last_error[1024];
    char *build_log;
    char *cache_dir; /* CLOPT_CACHE_DIR at creation, NULL when unset */
    clopt_program_entry *programs;
    size_t nprograms, cap_programs;
    size_t compiled, from_disk;
    cl_mem qmap; /* the 8-bit state maps (clopt_q8_map, signed then unsigned), made at first use */
    int ran_clblast; /* Muon ran CLBlast here: its process-wide cache holds this context */
};

/* The largest magnitude of a hyperparameter: 2^64, so its square stays finite in float32
   (the smallest is FLT_MIN, so its reciprocal does). */
#define CLOPT_MAX_SETTING 18446744073709551616.0
/* The largest loss scale or clip bound: 2^126 = 1/FLT_MIN, so its reciprocal is a normal
   float32 (the kernels take 1/scale and max_norm/norm as floats). */
#define CLOPT_MAX_FACTOR 85070591730234615865843651857942052864.0
/* Records a formatted detail in ctx->last_error (ctx may be NULL) and returns s. */
clopt_status clopt_fail(clopt_ctx *ctx, clopt_status s, const char *fmt, ...) CLOPT_PRINTF(3, 4);
/* For an OpenCL error: records "what: CL_NAME (code)" and returns the pass-through status. */
clopt_status clopt_fail_cl(clopt_ctx *ctx, cl_int err, const char *what);
/* Clears the last error of a context (start of every public call). */
void clopt_clear_error(clopt_ctx *ctx);

/* The context's 8-bit state maps on the device (made and uploaded, blocking, at first use). */
clopt_status clopt_ctx_qmap(clopt_ctx *ctx, cl_mem *out);

/* errno e as text in buf (len bytes; strerror_r: strerror may share one buffer between
   threads); returns buf. */
const char *clopt_errno_text(int e, char *buf, size_t len);

/* Muon (muon.c): when CLBlast ran on ctx, clears CLBlast's process-wide program cache,
   whose programs hold their contexts (the context would never be freed); no-op otherwise. */
void clopt_muon_ctx_release(clopt_ctx *ctx);

/* Program cache (program.c). */
clopt_status clopt_get_kernel(clopt_ctx *ctx, const char *family, const char *options,
                              const char *name, cl_kernel *out);
void clopt_programs_release(clopt_ctx *ctx);

/* Tuning of a device from the table (tuning.c); kernel NULL = the device's default. */
clopt_tuning clopt_default_tuning(cl_device_type type, const char *device_name,
                                  const char *kernel);
/* The tuning a kernel runs with in ctx (the caller's if set, else the table's). */
clopt_tuning clopt_kernel_tuning(const clopt_ctx *ctx, const char *kernel);
/* Vectors per work-item of t (0 means 1). */
unsigned clopt_tuning_ipw(const clopt_tuning *t);
/* The build options that select tuning t: "-DVW=... -DIPW=..." (at most 32 characters). */
#define CLOPT_TUNING_OPTIONS "-DVW=%u -DIPW=%u"
#define CLOPT_TUNING_ARGS(t) (t)->vector_width, clopt_tuning_ipw(t)

/* The reduction shape of ctx (context.c): work-items per work-group (RL in the kernels) and
   the number of work-groups of a partial sum (compute units x the factor, 1..4096), from
   the tuning's reduce_* fields or the device type's defaults. */
void clopt_reduce_shape(const clopt_ctx *ctx, unsigned *local, size_t *groups);
/* Work-groups of gc_rowmean (kernels/reduce.cl) over `rows` rows: bands of rows on G groups
   with one item each (RL 1), one group per row otherwise. */
size_t clopt_gc_groups(const clopt_ctx *ctx, size_t rows);
/* "-DRL=..." for ctx's reduction shape (at most 16 characters). */
#define CLOPT_REDUCE_OPTIONS " -DRL=%u"

/* Validation helpers (util.c). */
/* A range of bytes in a buffer, for the overlap checks: `what` of tensor `tensor` (SIZE_MAX:
   one op's own arguments, named by `what` alone). */
typedef struct clopt_span {
    cl_mem buffer;
    size_t lo, hi; /* [lo, hi) */
    const char *what;
    size_t tensor;
} clopt_span;
/* The buffer whose bytes m is and m's first byte in it: a sub-buffer's parent and origin
   (OpenCL has no sub-buffers of sub-buffers: a view of a tensor's storage, an arena's
   clopt_optimizer_param_view or an engine's clCreateSubBuffer, overlaps that storage), else
   m and 0. */
cl_mem clopt_mem_root(cl_mem m, size_t *origin);
/* Refuses two ranges of one buffer that overlap, naming both (CLOPT_ERR_INVALID_ARGUMENT;
   a sub-buffer's range counts as its parent's at its origin, and the message gives the
   parent's bytes); sorts s and rewrites sub-buffer spans as their parent's. */
clopt_status clopt_check_disjoint(clopt_ctx *ctx, clopt_span *s, size_t count);
clopt_status clopt_check_tensor(clopt_ctx *ctx, const char *what, clopt_tensor t, size_t n);
/* The same for a tensor of esize-byte elements (offset and n in elements). */
clopt_status clopt_check_tensor_of(clopt_ctx *ctx, const char *what, clopt_tensor t, size_t n,
                                   size_t esize);
clopt_status clopt_check_queue(clopt_ctx *ctx, cl_command_queue queue);
clopt_status clopt_check_wait_list(clopt_ctx *ctx, cl_uint num_wait, const cl_event *wait_list);
/* A growing public struct s of `what` (struct_size at its start): struct_size at least min
   (the first version's size) and at most CLOPT_STRUCT_SIZE_MAX (clopt.h), else
   CLOPT_ERR_INVALID_ARGUMENT naming init (its init function); past `known` bytes (this
   library's struct) every byte must be 0: a newer caller's field this library does not know
   is set otherwise (CLOPT_ERR_UNSUPPORTED). */
clopt_status clopt_check_struct_size(clopt_ctx *ctx, const void *s, size_t min, size_t known,
                                     const char *what, const char *init);
/* clEnqueueFillBuffer(q, buf, pattern, psize, offset, size, no events) in pieces of at most
   CLOPT_FILL_PIECE bytes: NVIDIA's OpenCL hangs or fails on fills of 2 GiB or more
   (pyopencl#395; pyopencl still avoids them). offset and size are multiples of psize; size
   0 enqueues nothing. Returns the first error. */
#define CLOPT_FILL_PIECE ((size_t)1 << 30)
cl_int clopt_fill(cl_command_queue q, cl_mem buf, const void *pattern, size_t psize,
                  size_t offset, size_t size);
/* The most work-items of one launch: NVIDIA's OpenCL aliases global ids from 2^31 (an
   element updated twice, another never, no error: cogciprocate/ocl#226, fixstars/clpy#7)
   and AMD's refuses 2^32. */
#define CLOPT_MAX_ITEMS (((size_t)1 << 31) - 1)
/* CLOPT_ERR_UNSUPPORTED with a message when an element-wise launch over n elements under
   tuning t (rounded up to its work-group size) would exceed CLOPT_MAX_ITEMS, else
   CLOPT_SUCCESS. */
clopt_status clopt_check_items(clopt_ctx *ctx, size_t n, const clopt_tuning *t);
/* Enqueue a 1-D element-wise kernel covering n elements with tuning t (the vector width and
   vectors per work-item it was compiled with); CLOPT_ERR_UNSUPPORTED past CLOPT_MAX_ITEMS. */
clopt_status clopt_launch_elementwise(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                      size_t n, const clopt_tuning *t, cl_uint num_wait,
                                      const cl_event *wait_list, cl_event *event);
/* Enqueue nchunks work-groups of the tuning's work-group size (64 when the driver may
   choose), one per chunk of a RANGES launch. */
clopt_status clopt_launch_chunks(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                 size_t nchunks, const clopt_tuning *t, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event);
/* Kernel argument builder: each call sets the next argument unless an earlier one failed;
   err holds the first failure. */
typedef struct clopt_args {
    cl_kernel k;
    cl_uint i;
    cl_int err;
} clopt_args;
void clopt_arg_mem(clopt_args *a, cl_mem m);
void clopt_arg_tensor(clopt_args *a, clopt_tensor t); /* cl_mem, then the offset as ulong */
void clopt_arg_ulong(clopt_args *a, cl_ulong v);
void clopt_arg_float(clopt_args *a, float v);
void clopt_arg_int(clopt_args *a, cl_int v);
/* Enqueue count work-items, one per index (the kernel checks its bound: the global size is
   rounded up to work-groups of 64, or what the kernel runs). */
clopt_status clopt_launch_items(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                size_t count, cl_uint num_wait, const cl_event *wait_list,
                                cl_event *event);
/* CLOPT_ERR_UNSUPPORTED with a message when kernel k runs fewer than `local` work-items per
   work-group on the device (the reductions need exactly RL); a failed query passes. */
clopt_status clopt_check_work_group(clopt_ctx *ctx, cl_kernel k, size_t local);
/* Enqueue `groups` work-groups of `local` work-items each (the reductions: RL items; the
   caller has run clopt_check_work_group, at the optimizer level in the step's dry pass). */
clopt_status clopt_launch_groups(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                 size_t groups, unsigned local, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event);
/* The optimizer level's step control (CTRL in kernels/common.cl): launches read the skip
   flag, the clip coefficient and the device's step count from `buffer` and run only when
   that count equals `expect`. dry: fetch (compile) kernels and set arguments, enqueue
   nothing. */
typedef struct clopt_ctl {
    cl_mem buffer;
    cl_ulong expect; /* the step count of the first possible outcome */
    int dry;
    cl_mem tab;      /* rows of per-step arguments, one per outcome (CTRL_ROW floats each) */
    cl_ulong tabo;   /* the launch's first row, in floats */
    cl_uint ncand;   /* outcomes covered: the launch runs for counts expect .. expect+ncand-1 */
    /* RANGES (kernels/common.cl): a table of nchunks ulong4 (θ, g, state offsets, length);
       the tensors' (buffer, offset 0) are passed with n = 1. NULL: a plain launch. With
       8-bit state a row is a block of 256 and the launch a work-item per row. */
    cl_mem ranges;
    size_t nchunks;
} clopt_ctl;
/* The control arguments of a CTRL kernel (buffer, offset 0, expect, table, its offset,
   outcomes), after all others. */
void clopt_arg_ctl(clopt_args *a, const clopt_ctl *c);
/* Storage (ops.c): the -D defines of a θ/g storage combination ("" for float32 θ and g),
   and the trailing arguments of a kernel with a 16-bit θ (STORAGE_PARAMS, storage.cl). */
void clopt_storage_options(char *out, size_t cap, clopt_dtype param, clopt_dtype grad,
                           clopt_master master, int sr);
void clopt_arg_storage(clopt_args *a, const clopt_step_args *s, uint64_t step);
/* Floats per row of the per-step argument table (CTRL_ROW in kernels/common.cl). */
#define CLOPT_CTRL_ROW 16
/* clopt_enqueue_step with the optimizer's control (ctl NULL: the op level's plain launch). */
clopt_status clopt_enqueue_step_ctl(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                    const clopt_hparams *hp, const clopt_step_args *args,
                                    size_t n, uint64_t step, const clopt_ctl *ctl,
                                    cl_uint num_wait, const cl_event *wait_list,
                                    cl_event *event);
char *clopt_strdup(const char *s);
uint64_t clopt_fnv1a(uint64_t h, const void *data, size_t n);

/* Rules (rules.c). */
typedef struct clopt_launch_plan {
    const char *family;   /* kernels/<family>.cl */
    const char *kernel;   /* kernel function name */
    char options[256];    /* -D defines of the variant */
    float scalars[16];    /* per-step float arguments after n and the gradient multiplier */
    cl_uint nscalars;
    cl_int int_arg;       /* a per-step flag some kernels take (SGD first step, RAdam rectified) */
    int has_int_arg;
    int uses_hessian;     /* Sophia: an estimate is folded into h at this step */
    int gc;               /* gradient centralization: row means are a kernel argument */
    int q8_group;         /* 8-bit state: a work-group per block (Q8WG), not a work-item */
    clopt_tuning tuning;  /* the kernel's vector width (in options) and work-group size */
} clopt_launch_plan;

/* Rules whose kernels take 8-bit blockwise state (SGD, Adam, AdamW, Lion, RMSprop, Adagrad,
   AdEMAMix). */
int clopt_rule_q8_ok(clopt_rule rule, const clopt_hparams *hp);
/* Whether state k of rule changes sign (the signed 8-bit map) or is non-negative. */
int clopt_rule_state_signed(clopt_rule rule, const clopt_hparams *hp, size_t k);
/* Fills state k (of dtype, with its absmax for U8) of n elements with its initial value. */
clopt_status clopt_fill_state(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                              size_t k, clopt_dtype dtype, clopt_tensor state,
                              clopt_tensor absmax, size_t n);
/* Blocks of 256 elements of 8-bit state over n elements (absmax floats). */
static inline size_t clopt_q8_blocks(size_t n) { return (n + 255) / 256; }

/* Rules that need reductions over a tensor (Adafactor, LAMB): optimizer level only. */
int clopt_rule_is_multipass(clopt_rule rule);
/* The rule runs tensor by tensor at the optimizer level (multi-pass, or cautious masking):
   no fused arena or range launch, no op level. */
int clopt_rule_per_tensor(clopt_rule rule, const clopt_hparams *hp);
/* Schedule-Free AdamW or SGD, and its β: the interpolation weight between y and z (beta1 for
   AdamW, momentum for SGD). */
static inline int clopt_rule_is_sf(clopt_rule r)
{
    return r == CLOPT_SCHEDULE_FREE_ADAMW || r == CLOPT_SCHEDULE_FREE_SGD;
}
static inline double clopt_sf_beta(clopt_rule r, const clopt_hparams *hp)
{
    return r == CLOPT_SCHEDULE_FREE_SGD ? hp->momentum : hp->beta1;
}
/* The step's buffers (θ, g, the master, the states and their absmaxes, ĥ, the centralization
   scratch) pairwise disjoint (CLOPT_ERR_INVALID_ARGUMENT naming both). */
clopt_status clopt_check_step_disjoint(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                       const clopt_step_args *a, size_t n);
/* Everything clopt_enqueue_step checks before it plans the launch (ops.c). */
clopt_status clopt_validate_step(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                 const clopt_hparams *hp, const clopt_step_args *a, size_t n,
                                 uint64_t step, cl_uint num_wait, const cl_event *wait_list);
/* The L2 weight decay a rule adds to the gradient (0 for decoupled rules). */
double clopt_rule_l2_decay(clopt_rule rule, const clopt_hparams *hp);

/* An AMP step's verdict for the loss scaler when the step ran with step_scale, which may be
   an older scale than s's (steps enqueued before earlier verdicts reached the host): an
   overflow backs off only when the step ran at the current scale or below (one at a higher
   scale says nothing about the current one), a clean step counts only when it ran at the
   current scale or above. Without lag (step_scale = s->scale) it is
   clopt_loss_scaler_update. */
void clopt_loss_scaler_update_at(clopt_loss_scaler *s, int found_inf, double step_scale);

/* NAdam's momentum schedule μ_t = β1 (1 - 0.5 * 0.96^(t ψ)). */
double clopt_nadam_mu(const clopt_hparams *hp, double t);

clopt_status clopt_plan_step(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                             const clopt_step_args *args, uint64_t step, clopt_launch_plan *plan);

#endif
