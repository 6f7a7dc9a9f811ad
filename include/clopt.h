/* SPDX-License-Identifier: MIT */
/*
 * clopt: fused OpenCL kernels for gradient-descent optimizers.
 *
 * The only public header of the library. Two API levels:
 *
 *  - op level (clopt_enqueue_step): stateless, non-blocking. One call enqueues ONE kernel
 *    launch that applies one step of a rule to one tensor stored in caller-owned
 *    (cl_mem, element offset) pairs: parameters, gradient and the rule's state tensors.
 *  - optimizer level (clopt_optimizer_*): owns state buffers, the step count and the
 *    hyperparameters, like torch.optim.
 *
 * Conventions
 *  - Every call returns a clopt_status; CLOPT_SUCCESS is 0, errors are negative.
 *    clopt_status_str() gives a readable text, clopt_ctx_last_error() the detail of the
 *    last failure on a context (which argument, which size).
 *  - Every argument is validated before anything is enqueued: a failed call changes no
 *    buffer and no state. The exceptions are OpenCL failures part way through work that
 *    cannot be undone, each documented at its function: applying a checked checkpoint
 *    (clopt_optimizer_load), zeroing gradients (clopt_optimizer_zero_grad), a range group's
 *    fills of the engine's state, Schedule-Free's eval/train switch, a step with a
 *    tensor-sums hook, and the op level's gradient-centralization scratch. The library never
 *    exits, aborts or prints.
 *  - No global state: everything lives in a clopt_ctx (CLBlast's process-wide program cache,
 *    which Muon fills, is cleared by clopt_ctx_destroy). A context (and everything created
 *    from it, the getters that return a status included: they reset its last error) must
 *    not be used from two threads at once; two contexts are independent.
 *  - Values are float32 on the device. Offsets and lengths count elements, not bytes.
 *  - Scalar hyperparameters are stored in double on the host and passed to the kernels as
 *    float; step-dependent factors (bias corrections, RAdam's rectification, NAdam's
 *    momentum schedule, Adagrad's lr decay) are computed on the host in double.
 *  - Every function says whether it blocks (waits for the device: clFinish, clWaitForEvents,
 *    a blocking read or write, or compiles a program) or only enqueues / only touches host
 *    memory. Programs are compiled lazily: the first enqueue of a kernel variant in a
 *    context compiles it (blocking, once per context; clopt_optimizer_prepare does it ahead
 *    for an optimizer). Statuses are listed per function; "OpenCL codes" means OpenCL
 *    pass-through errors (CLOPT_ERR_OPENCL_BASE + e) of the calls it makes.
 *
 * Ownership and lifetimes
 *  - Destroy order: every clopt_optimizer before the clopt_ctx it was created on (the
 *    optimizer keeps a plain pointer to its context); the context last. Buffers registered
 *    with an optimizer may be released before it (it holds them, below).
 *  - Buffers the caller registers with an optimizer (parameters, gradients, Hessian
 *    estimates, a range group's buffers and engine-owned state) stay the caller's, and the
 *    optimizer holds a reference to each (clRetainMemObject at registration, released by
 *    clopt_optimizer_destroy), as torch's optimizer holds its parameters: the engine may
 *    release its own handles at any time, the memory lives until the optimizer is
 *    destroyed. The ops (clopt_enqueue_*) retain nothing: their buffers must stay alive
 *    until what was enqueued has finished. Queues passed to an op or a step are not
 *    retained either: keep them alive until what was enqueued on them has finished.
 *  - What clopt allocates is clopt's and is released by the matching destroy: an
 *    optimizer's state tensors, arena buffers and their sub-buffers (param_view), chunk
 *    tables, scratch and the events of steps in flight; a context's programs and kernels.
 *    Never release them; handles to them are invalid after the destroy.
 *  - The caller owns and must release: every cl_event returned through an `event` out
 *    parameter (clReleaseEvent), and the buffers clopt_alloc_state creates
 *    (clReleaseMemObject). Returned strings are static or owned by the context.
 *  - A failed call returns no event and allocates nothing.
 *
 * Semantics follow torch.optim (PyTorch 1.13, and >= 2.0 for NAdam) where it has the
 * rule, otherwise the paper's official code. The differences are listed per rule at
 * clopt_rule below.
 */
#ifndef CLOPT_H
#define CLOPT_H

/* The includer's choice of OpenCL API stands; without one, 1.2 (clopt's own). Include
   <CL/cl.h> (or define CL_TARGET_OPENCL_VERSION) BEFORE this header to use 2.x/3.0 API
   elsewhere in the same file: included first, clopt.h makes the file's OpenCL API 1.2. */
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; everything declared here is exported from a
 * shared libclopt (a static one keeps it hidden: an engine's shared library that links
 * libclopt.a does not re-export clopt_*). */
#if defined(__GNUC__) && !defined(CLOPT_STATIC_BUILD)
#pragma GCC visibility push(default)
#endif

#define CLOPT_VERSION_MAJOR 0
#define CLOPT_VERSION_MINOR 1
#define CLOPT_VERSION_PATCH 0

/* The version of the library at run time ("0.1.0"), which may differ from the header's
   CLOPT_VERSION_* when the shared library was upgraded. Never NULL; never blocks. */
const char *clopt_version(void);
/* The same as MAJOR·10000 + MINOR·100 + PATCH, to compare with CLOPT_VERSION_NUMBER. */
unsigned clopt_version_number(void);
#define CLOPT_VERSION_NUMBER                                                                 \
    (CLOPT_VERSION_MAJOR * 10000 + CLOPT_VERSION_MINOR * 100 + CLOPT_VERSION_PATCH)

/* ------------------------------------------------------------------------------------ */
/* Status codes                                                                          */
/* ------------------------------------------------------------------------------------ */

/* X(name, value, text): one list generates the enum, clopt_status_str and _name. */
#define CLOPT_STATUS_LIST(X)                                                              \
    X(CLOPT_SUCCESS, 0, "success")                                                        \
    X(CLOPT_STEP_SKIPPED, 1,                                                              \
      "step skipped: a gradient was Inf or NaN (nothing changed; not an error)")          \
    X(CLOPT_ERR_NULL_ARGUMENT, -1, "a required pointer or handle is NULL")                \
    X(CLOPT_ERR_INVALID_ARGUMENT, -2, "an argument is not valid")                         \
    X(CLOPT_ERR_INVALID_HYPERPARAM, -3, "a hyperparameter is out of its valid range")     \
    X(CLOPT_ERR_INVALID_SIZE, -4, "a length or shape is zero or does not match")          \
    X(CLOPT_ERR_OUT_OF_BOUNDS, -5, "offset plus length runs past the end of a buffer")    \
    X(CLOPT_ERR_STATE_MISMATCH, -6,                                                       \
      "the state tensors given do not match what the rule and variant need")            \
    X(CLOPT_ERR_UNSUPPORTED, -7, "not supported by this rule, device or build")           \
    X(CLOPT_ERR_OUT_OF_MEMORY, -8, "host memory allocation failed")                       \
    X(CLOPT_ERR_NO_DEVICE, -9, "no OpenCL device matches")                                \
    X(CLOPT_ERR_BUILD_FAILED, -10,                                                        \
      "kernel compilation failed (see clopt_ctx_build_log)")                            \
    X(CLOPT_ERR_IO, -11, "file input/output failed")                                      \
    X(CLOPT_ERR_FORMAT, -12, "a file or data has the wrong format")                       \
    X(CLOPT_ERR_INDEX, -13, "an index is out of range")

typedef enum clopt_status {
#define CLOPT_X_ENUM(name, value, text) name = value,
    CLOPT_STATUS_LIST(CLOPT_X_ENUM)
#undef CLOPT_X_ENUM
    /* An OpenCL error code e (negative) is returned as CLOPT_ERR_OPENCL_BASE + e, so
       CL_OUT_OF_RESOURCES (-5) becomes -10005. See clopt_status_is_opencl(). */
    CLOPT_ERR_OPENCL_BASE = -10000
} clopt_status;

/* Readable text for any status, including OpenCL pass-through codes ("OpenCL error
   CL_INVALID_DEVICE_QUEUE (-70)"). Never NULL; static storage; never blocks. OpenCL codes
   are named up to OpenCL 3.0 and for the KHR/EXT/vendor codes of the Khronos headers
   (CL_PLATFORM_NOT_FOUND_KHR, CL_INVALID_COMMAND_BUFFER_KHR, ...), whatever OpenCL headers
   the library or the caller was built with. */
const char *clopt_status_str(clopt_status s);
/* The enum name ("CLOPT_ERR_OUT_OF_BOUNDS", "CL_OUT_OF_RESOURCES", ...; "CL_UNKNOWN_ERROR"
   for an OpenCL code without a known name). Never NULL; static storage. */
const char *clopt_status_name(clopt_status s);
/* Non-zero when s carries an OpenCL error code; clopt_status_cl_error() returns it. */
int clopt_status_is_opencl(clopt_status s);
cl_int clopt_status_cl_error(clopt_status s);

/* ------------------------------------------------------------------------------------ */
/* Context                                                                               */
/* ------------------------------------------------------------------------------------ */

/* A clopt_ctx holds one OpenCL device, a cl_context, a command queue, the compiled programs
   and the tuning. Ownership and lifetime:
    - The context retains its cl_context, device and queue and releases them in
      clopt_ctx_destroy; the caller keeps (and releases) its own references.
    - Buffers given to any call stay the caller's; the context never releases them.
    - Every clopt_optimizer created on a context must be destroyed BEFORE the context.
    - On any failure a create function sets *out to NULL and leaks nothing.
   Creating a context lists the platforms and devices and creates OpenCL objects: it blocks
   for as long as the driver takes (no kernel is compiled yet; programs are built lazily).

   Threads: creating contexts from several threads at once is unsafe on PoCL 3.1 (Debian
   12's): a start-up race inside PoCL itself crashed 11 of 20 runs of two threads calling
   clGetPlatformIDs together. Serialise context creation (one mutex around the
   clopt_ctx_create* calls, or create every context from one thread) unless the driver is
   known to be safe; contexts, once created, may be used from different threads (one thread
   per context at a time, see the conventions above).

   On-disk program cache: the environment variable CLOPT_CACHE_DIR, read when a context is
   created (a relative path from the working directory of then), names a folder where
   compiled program binaries are kept across processes.
    - A missing folder is created (with its missing parents), mode 0700.
    - The folder is used only if it is owned by the effective user and not writable by group
      or others; otherwise the context compiles without the disk cache (silently: no status,
      no clopt_ctx_last_error).
    - An entry is read only if it is a regular file of the user of at most 64 MiB, opened
      without following symlinks and without blocking (a FIFO cannot hang the caller), and
      is handed to the driver only if its SHA-256 over format version, key (source, build
      options, device, driver) and binary matches. Stale, damaged or older-format entries are
      recompiled and rewritten, silently; clopt_ctx_program_stats tells how many programs
      came from disk.
    - Entries are written to a temporary file created exclusively (O_EXCL, O_NOFOLLOW, mode
      0600) under a random name in the folder, then renamed into place: readers never see a
      half-written entry, and a planted symlink is never followed.
    - The hash detects damage, the folder rules keep other users out; whoever can write into
      the folder can forge entries, so never point CLOPT_CACHE_DIR at a shared folder.
    - The key does not see a driver's own environment variables that change its compiler
      (OCLGRIND_BUILD_OPTIONS, PoCL's POCL_* settings): clear the folder, or leave
      CLOPT_CACHE_DIR unset, when changing them (ci/oclgrind.sh unsets it). */
typedef struct clopt_ctx clopt_ctx;

/* A context on the device the environment variable CLOPT_DEVICE selects, or by the
   default rules when it is unset or empty: the first GPU, else the first CPU device (PoCL
   in CI), else the first device of any type; a device that reports several of the types
   CPU, GPU and accelerator (a simulator: Oclgrind reports all three) only after the
   devices of one type. Creates its own cl_context and an in-order
   queue with profiling enabled. Same as clopt_ctx_create_device_ex(NULL, out, NULL, 0).
   Returns CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT (out NULL), CLOPT_ERR_NO_DEVICE,
   CLOPT_ERR_INVALID_ARGUMENT (selector too long), CLOPT_ERR_OUT_OF_MEMORY or an OpenCL
   pass-through code (clCreateContext, clCreateCommandQueue). The reason text of a failure
   is only available through clopt_ctx_create_device_ex. */
clopt_status clopt_ctx_create(clopt_ctx **out);

/* The same with an explicit selector, ignoring CLOPT_DEVICE; NULL or "" = the default
   rules. A selector (surrounding blanks ignored) is, in this order of precedence:
    - a decimal index into the list of all devices of all platforms ("0", "1");
    - "cpu", "gpu" or "accelerator" (any case): the first device of that OpenCL type (one
      of that type only before one that reports several, as above);
    - otherwise a case-insensitive substring of the device name, device vendor, platform
      name, platform vendor or platform version ("pocl" finds PoCL through its vendor "The
      pocl project"; "nvidia", "intel", "skylake", ...): the first device that matches.
      PoCL's device name holds the host CPU's model ("pthread-skylake-avx512-AMD EPYC"), so
      "amd" or "intel" can match it: a GPU is chosen safely by "gpu" or an index.
   Statuses as clopt_ctx_create. */
clopt_status clopt_ctx_create_device(const char *selector, clopt_ctx **out);

/* clopt_ctx_create_device with the reason of a failure: on any status but CLOPT_SUCCESS,
   why (if not NULL and why_len > 0) receives a NUL-terminated text, truncated to why_len,
   e.g. 'selector="gpu": no GPU device among 1 device(s): 0: pthread-skylake-...
   [cpu] (Portable Computing Language)' ('CLOPT_DEVICE="gpu": ...' when the selector came
   from CLOPT_DEVICE); on success why is "". selector NULL reads
   CLOPT_DEVICE as clopt_ctx_create does (so an engine gets the user's override and the
   reason with one call); "" means the default rules. The text lives in the caller's buffer
   because no context exists to hold it (and the library has no global state): 256 bytes
   hold the reason, 1024 also the device list of a typical machine. Statuses as
   clopt_ctx_create. */
clopt_status clopt_ctx_create_device_ex(const char *selector, clopt_ctx **out, char *why,
                                        size_t why_len);

/* A context on the caller's cl_context, device and queue; all three are retained (so the
   caller may release its references at once) and released on destroy. queue may be NULL:
   the library then creates an in-order profiling queue of its own. A given queue must
   belong to context and device; clopt enqueues on it (or on the queue passed to an op). An
   out-of-order queue is accepted for the op level, but an optimizer needs an in-order one
   (clopt_optimizer_create refuses the context, step_on the queue: bridge an out-of-order
   engine queue to an in-order one with events). The context's own calls and the op level never finish it (clopt_ctx_destroy does); optimizer
   calls documented as blocking (registering tensors, state reads and writes, checkpoints,
   destroy) finish it. Returns CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT (a queue of another context or
   device, or not a queue), CLOPT_ERR_OUT_OF_MEMORY or an OpenCL code. Does not block. */
clopt_status clopt_ctx_create_from(cl_context context, cl_device_id device,
                                   cl_command_queue queue, clopt_ctx **out);

/* Blocks until the context's queue has finished (clFinish), then releases the programs,
   kernels, queue, device and cl_context the context holds (the OpenCL objects live on
   while the caller holds references). NULL is allowed. Destroy every optimizer of the
   context first; cl_kernel handles from clopt_ctx_kernel are invalid afterwards. After Muon
   ran on the context it also clears CLBlast's process-wide program cache (CLBlastClearCache),
   whose programs hold their cl_context, which would otherwise never be freed: other
   contexts' Muon steps then compile their GEMM kernels again, and so does an engine that
   calls CLBlast itself (CLBlast has no per-context clear; its cache is the one state clopt
   touches outside a context). */
void clopt_ctx_destroy(clopt_ctx *ctx);

/* The context's OpenCL objects, NULL for a NULL ctx. Borrowed: valid until destroy; retain
   them to keep them longer. Never block. */
cl_context clopt_ctx_cl_context(const clopt_ctx *ctx);
cl_device_id clopt_ctx_cl_device(const clopt_ctx *ctx);
cl_command_queue clopt_ctx_cl_queue(const clopt_ctx *ctx);
/* Device name as reported by OpenCL ("" for NULL); owned by the context. */
const char *clopt_ctx_device_name(const clopt_ctx *ctx);

/* Detail of the most recent failure of a call on this context; owned by the context. Every
   call that returns a clopt_status and is given this context (or an object created on it)
   clears it when it starts, so it is "" after a call that succeeded and describes the
   failure of the last call that failed. Calls that return no status (the accessors above,
   clopt_ctx_last_error, clopt_ctx_build_log, clopt_ctx_program_stats) leave it alone. */
const char *clopt_ctx_last_error(const clopt_ctx *ctx);
/* Build log of the most recent kernel compilation that failed ("" if none); owned by the
   context. */
const char *clopt_ctx_build_log(const clopt_ctx *ctx);

/* Kernel tuning of a context: vector width (1, 2, 4, 8 or 16 floats per vector), work-group
   size (0 = let the driver choose) and vectors per work-item (consecutive vectors one
   work-item updates in a loop; 0 means 1, at most 1024). Defaults come from a small table
   with one row per device type and no per-kernel rows (see host/tuning.c; the GPU row is
   unmeasured: no GPU has run clopt yet).
   get_tuning gives the device's default, get_rule_tuning what one rule's update kernel uses
   with these hyperparameters. set_tuning replaces the table by one tuning for every kernel
   (programs compiled afterwards).
   8-bit state takes one of two shapes from the tuning, with the same results bit for bit:
   items_per_work_item 1 (the GPU row) gives a work-group of 256 / vector_width work-items
   per block of 256 elements (work_group_size is then that; a kernel that cannot run so
   many per group on the device is refused with CLOPT_ERR_UNSUPPORTED), any other a
   work-item per block (vector_width 16, items_per_work_item 16: the CPU row's, which keeps
   a block's 256 new values per state in private memory: on a GPU keep one vector per
   work-item).
   The reductions (the gradient norm of AMP and clipping, LAMB's and Adafactor's sums and
   statistics, gradient centralization's row means) have their own shape: reduce_local
   work-items per work-group (a power of 2, 1-256; their sums are added by a fixed tree in
   local memory) and reduce_groups_per_cu work-groups per compute unit for the partial sums;
   0 picks the device type's default (CPU: 1 and 8, measured with clopt-bench; other devices:
   256 and 4, capped by the device's work-group size, not yet measured on a GPU). Sums are
   bit-identical from run to run and do not depend on the element-wise fields; their order
   (so the last bits) depends on these two fields and on the device's compute units (of a
   CPU device: the host's online processors, not the driver's worker threads, which PoCL
   sets from POCL_MAX_PTHREAD_COUNT). */
typedef struct clopt_tuning {
    unsigned vector_width;
    size_t work_group_size;
    unsigned items_per_work_item;
    unsigned reduce_local;
    unsigned reduce_groups_per_cu;
} clopt_tuning;
/* clopt_tuning may grow: initialise one with clopt_ctx_get_tuning, then change fields.
   get: CLOPT_SUCCESS or CLOPT_ERR_NULL_ARGUMENT. set: also CLOPT_ERR_INVALID_ARGUMENT (a
   value out of range). Details in clopt_ctx_last_error. Neither blocks. */
clopt_status clopt_ctx_get_tuning(const clopt_ctx *ctx, clopt_tuning *out);
clopt_status clopt_ctx_set_tuning(clopt_ctx *ctx, const clopt_tuning *tuning);
/* clopt_ctx_get_rule_tuning is declared after clopt_hparams, below. */

/* Number of programs compiled (or loaded from the on-disk cache) so far in this context,
   and how many of those came from the on-disk binary cache (CLOPT_CACHE_DIR). Either
   pointer may be NULL; never blocks. */
void clopt_ctx_program_stats(const clopt_ctx *ctx, size_t *compiled, size_t *from_disk);

/* Compile (or fetch) a kernel of the embedded library sources. For tools that run their
   own kernels next to clopt's (the benchmark); family is the file name without ".cl".
   The returned kernel is owned by the context: do not release it (it lives until
   clopt_ctx_destroy). Blocks while the program compiles (first use of family and options
   on this device). Returns CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT,
   CLOPT_ERR_UNSUPPORTED (unknown family), CLOPT_ERR_BUILD_FAILED (log in
   clopt_ctx_build_log), CLOPT_ERR_OUT_OF_MEMORY or an OpenCL code. */
clopt_status clopt_ctx_kernel(clopt_ctx *ctx, const char *family, const char *options,
                              const char *kernel_name, cl_kernel *out);

/* ------------------------------------------------------------------------------------ */
/* Rules and hyperparameters                                                             */
/* ------------------------------------------------------------------------------------ */

/*
 * Rules. State tensors are listed in the order the op level takes them (state[0], ...).
 *
 * CLOPT_SGD       torch.optim.SGD. State: momentum_buffer (only when momentum > 0).
 *                 g += weight_decay*θ (L2). Step 1: b = g (no dampening, as torch);
 *                 b = momentum*b + (1-dampening)*g; nesterov: d = g + momentum*b; θ -= lr*d.
 * CLOPT_ADAM      torch.optim.Adam. State: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad).
 *                 weight_decay is L2 (added to g). θ -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
 *                 AMSGrad keeps the maximum of the raw v and Adam's bias corrections.
 * CLOPT_ADAMW     torch.optim.AdamW: as Adam with decoupled decay θ -= (lr*weight_decay)*θ.
 *                 Every decoupled decay (AdamW, AdaMod, Lion, Sophia, Ranger) is computed as
 *                 θ - (lr·wd)·θ with the product rounded once to float; torch multiplies θ
 *                 by float32(1 - lr·wd), whose rounding makes the decay 0.136% too strong at
 *                 lr·wd = 1e-5 and vanish below lr·wd ≈ 3e-8 (a deliberate difference).
 * CLOPT_ADAGRAD   torch.optim.Adagrad. State: sum (starts at initial_accumulator_value).
 *                 clr = lr/(1+(t-1)*lr_decay); s += g²; θ -= clr*g/(sqrt(s)+eps).
 * CLOPT_ADADELTA  torch.optim.Adadelta. State: square_avg, acc_delta. eps inside both roots.
 * CLOPT_RMSPROP   torch.optim.RMSprop. State: square_avg, momentum_buffer (momentum > 0),
 *                 grad_avg (centered), in that order among those present.
 * CLOPT_ADAMAX    torch.optim.Adamax (1.13): u = max(β2*u, |g|+eps). State: exp_avg, exp_inf.
 * CLOPT_NADAM     Dozat's NAdam as torch.optim.NAdam >= 2.0 (torch 1.13 multiplied μ_t
 *                 twice into the product; fixed by PyTorch PR #92699). State: exp_avg,
 *                 exp_avg_sq; scalar state mu_product (see clopt_step_args).
 * CLOPT_RADAM     torch.optim.RAdam (1.13): rectified when ρ_t > 5 (the official code uses
 *                 >= 5, the paper > 4); weight decay is L2 as torch (the official code
 *                 decays θ directly). The rectification term is computed on the host.
 *                 State: exp_avg, exp_avg_sq.
 * CLOPT_ADAMOD    AdaMod (Ding et al. 2019, official code): eps added to the uncorrected
 *                 sqrt(v); η = min(step/d, s) with s the beta3 EMA of step/d; decoupled
 *                 weight decay θ -= weight_decay*lr*θ. State: exp_avg, exp_avg_sq, exp_avg_lr.
 * CLOPT_DIFFGRAD  diffGrad (Dubey et al. 2019, corrected v2 code): ξ = sigmoid(|g_{t-1}-g_t|),
 *                 previous gradient as state (0 at step 1); L2 weight decay.
 *                 State: exp_avg, exp_avg_sq, previous_grad.
 * CLOPT_LION      Lion (Chen et al. 2023): θ -= (lr*wd)*θ; θ -= lr*sign(β1*m + (1-β1)*g)
 *                 (sign(0) = 0); m = β2*m + (1-β2)*g. State: exp_avg.
 * CLOPT_SOPHIA    SophiaG (Liu et al. 2023, official code): θ -= (lr*wd)*θ; m EMA;
 *                 θ -= lr*sign(m)*min(|m|/(rho*bs*h + eps), 1). The paper's form is
 *                 clip(m/max(γ*h, ε), 1) with γ = rho*bs; the official code, followed here,
 *                 adds eps (1e-15) instead of taking the max. When a Hessian-diagonal
 *                 estimate ĥ is supplied for the step, h = β2*h + (1-β2)*ĥ is applied AFTER
 *                 that step's parameter update, in the same launch. State: exp_avg, hessian.
 * CLOPT_ADAFACTOR Adafactor with Hugging Face transformers' semantics (see the fields of
 *                 clopt_hparams): factored second moment for tensors with >= 2 dims (state
 *                 exp_avg_sq_row, exp_avg_sq_col: rows + cols floats per matrix), a full one
 *                 (exp_avg_sq) for 1-D tensors, exp_avg with use_beta1. Optimizer level only
 *                 (it needs the shape and row/column reductions). torch.optim.Adafactor (2.5+)
 *                 differs: no first moment, always the relative step min(lr, 1/sqrt(t)),
 *                 eps1 = None -> finfo.eps applied after the factoring, lr-scaled weight
 *                 decay (its update clipping d = 1 is HF's clip_threshold).
 * CLOPT_LAMB      LAMB (You et al., Algorithm 2): Adam moments with bias correction (optional),
 *                 r = m̂/(sqrt(v̂)+eps) + wd·θ, θ -= lr·(‖θ‖/‖r‖)·r per tensor, the ratio taken
 *                 as 1 when either norm is 0 and applied also when wd = 0 (apex applies it
 *                 then only with use_nvlamb). No built-in clipping (see
 *                 clopt_optimizer_set_grad_clip). State: exp_avg, exp_avg_sq. Optimizer level.
 * CLOPT_RANGER    Ranger 20.4.11 (RAdam + Lookahead + gradient centralization): RAdam as its
 *                 code (decoupled decay θ -= wd·lr·θ, rectified when ρ_t > n_sma_threshold,
 *                 eps added to sqrt(v)), defaults lr 1e-3, betas (0.95, 0.999), eps 1e-5,
 *                 lookahead k = 6, α = 0.5, GC on. State: exp_avg, exp_avg_sq, slow_buffer
 *                 (the slow weights exist at the optimizer level only).
 *
 * Rules of 2024-2025 (issue 15; each follows its official code, see docs/rules-modern.md):
 * CLOPT_SCHEDULE_FREE_ADAMW  Schedule-Free AdamW (Defazio et al. 2024, facebookresearch/
 *                 schedule_free AdamWScheduleFree): the engine's parameters hold y while
 *                 training; state z, exp_avg_sq; lr_t = lr·min(1, t/warmup_steps),
 *                 c_t = w_t/Σw with w_t = t^r·max lr^weight_lr_power; decay wd·y added to the
 *                 normalised gradient. clopt_optimizer_eval/train switch the parameters to x
 *                 and back. Scalar state: lr_max, weight_sum (clopt_step_args). The reference
 *                 has no maximize (clopt's generic one applies).
 *                 Defaults lr 0.0025, betas (0.9, 0.999), eps 1e-8, wd 0, warmup 0, r 0,
 *                 weight_lr_power 2.
 * CLOPT_SCHEDULE_FREE_SGD    Schedule-Free SGD (SGDScheduleFree): momentum is the
 *                 interpolation β, L2 decay at y; state z. Defaults lr 1.0, momentum 0.9.
 * CLOPT_ADOPT     ADOPT (Taniguchi et al. 2024, iShohei220/adopt): step 1 only sets v = g²;
 *                 then d = max(sqrt(v), eps), u = clip(g/d, ±(t-1)^clip_exponent), m = lerp(m,
 *                 u, 1-β1), θ -= lr·m, v updated after θ. L2 decay, or decoupled (decouple).
 *                 State: exp_avg, exp_avg_sq. Defaults lr 1e-3, betas (0.9, 0.9999), eps 1e-6.
 * CLOPT_ADEMAMIX  AdEMAMix (Pagliardini et al. 2024, apple/ml-ademamix): Adam's m1 and v
 *                 plus a slow EMA m2 (beta3, never bias corrected); θ -= lr·((m̂1 + α_t m2)/
 *                 (sqrt(v̂) + eps) + wd·θ); α and β3 warm up over alpha_warmup / beta3_warmup
 *                 steps (0: none). State: exp_avg_fast, exp_avg_slow, exp_avg_sq. Defaults lr
 *                 1e-3, betas (0.9, 0.999), beta3 0.9999, alpha 2, eps 1e-8, wd 0.
 * CLOPT_STABLE_ADAMW StableAdamW (Wortsman et al. 2023, the first author's code): moments
 *                 with the bias correction in their coefficients, update divided by
 *                 max(1, RMS(g²/max(u, eps²))/clip_threshold) per tensor; decay lr·wd·θ.
 *                 State: exp_avg, exp_avg_sq. Defaults lr 2e-3, betas (0.9, 0.99), eps 1e-8,
 *                 wd 0.2, clip_threshold 1. Optimizer level (a reduction before the update).
 * CLOPT_MUON      Muon (K. Jordan et al. 2024, KellerJordan/Muon SingleDeviceMuon): for 2-D
 *                 tensors only; b = lerp(b, g, 1-momentum), U = nesterov ? lerp(g, b,
 *                 momentum) : b, ns_steps Newton-Schulz quintic iterations (3.4445, -4.7750,
 *                 2.0315) on U/(‖U‖_F + 1e-7) in float32 with CLBlast GEMMs on the step's
 *                 queue, scaled by sqrt(max(1, rows/cols)); θ -= (lr·wd)·θ; θ -= lr·O.
 *                 State: momentum_buffer. Defaults lr 0.02, momentum 0.95, nesterov 1, wd 0,
 *                 ns_steps 5. Optimizer level; CLOPT_ERR_UNSUPPORTED when the library was
 *                 built without CLBlast (clopt_has_muon).
 * Cautious masking (Liang et al. 2024, kyleliang919/C-Optim) is the option `cautious` of
 * CLOPT_ADAM, CLOPT_ADAMW and CLOPT_LION (optimizer level: a per-tensor mean between two
 * passes).
 */
/* The values are fixed (checkpoints store them): new rules are appended. */
typedef enum clopt_rule {
    CLOPT_SGD = 0,
    CLOPT_ADAM = 1,
    CLOPT_ADAMW = 2,
    CLOPT_ADAGRAD = 3,
    CLOPT_ADADELTA = 4,
    CLOPT_RMSPROP = 5,
    CLOPT_ADAMAX = 6,
    CLOPT_NADAM = 7,
    CLOPT_RADAM = 8,
    CLOPT_ADAMOD = 9,
    CLOPT_DIFFGRAD = 10,
    CLOPT_LION = 11,
    CLOPT_SOPHIA = 12,
    CLOPT_ADAFACTOR = 13,
    CLOPT_LAMB = 14,
    CLOPT_RANGER = 15,
    CLOPT_SCHEDULE_FREE_ADAMW = 16,
    CLOPT_SCHEDULE_FREE_SGD = 17,
    CLOPT_ADOPT = 18,
    CLOPT_ADEMAMIX = 19,
    CLOPT_STABLE_ADAMW = 20,
    CLOPT_MUON = 21,
    CLOPT_RULE_COUNT = 22
} clopt_rule;

/* Lower-case name ("adamw") of a rule, NULL when out of range (static storage); and the
   inverse (exact, case-sensitive match): CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or
   CLOPT_ERR_INVALID_ARGUMENT (unknown name). Host only; never block. */
const char *clopt_rule_name(clopt_rule rule);
clopt_status clopt_rule_from_name(const char *name, clopt_rule *out);

/*
 * Hyperparameters of every rule in one struct; each rule reads the fields it has.
 * Always start from clopt_hparams_default(rule, &hp), which fills torch's defaults (or the
 * paper's), then change fields. Validation (CLOPT_ERR_INVALID_HYPERPARAM): lr >= 0 and
 * finite; beta1, beta2, beta3, alpha (RMSprop; AdEMAMix's alpha is >= 0), momentum and
 * Adadelta's rho in [0, 1); dampening in
 * [0, 1];
 * eps > 0 for every rule that has one; weight_decay, lr_decay, initial_accumulator_value
 * and momentum_decay >= 0; Sophia rho > 0, bs > 0, hess_interval >= 1; SGD nesterov needs
 * momentum > 0 and dampening = 0 (as torch); Adafactor eps2 and clip_threshold > 0,
 * decay_rate <= 0; Schedule-Free AdamW beta1 > 0, Schedule-Free SGD momentum > 0, both r and
 * weight_lr_power >= 0; ADOPT clip_exponent >= 0 and decouple 0 or 1; StableAdamW
 * clip_threshold > 0; Muon ns_steps 1 .. 100; cautious 0 or 1, only for Adam, AdamW and Lion
 * and not with amsgrad; master a clopt_master, stochastic_rounding 0 or 1 (and not with a
 * master), state_dtype F32, BF16 or U8. Every double field, read by the rule or not, must
 * be finite and 0 or of magnitude 1.2e-38 .. 1.8e19 (its reciprocal and square finite in
 * float32): NaN and Inf are refused.
 */
typedef struct clopt_hparams {
    double lr;
    double beta1, beta2, beta3;  /* beta3: AdaMod, AdEMAMix (slow EMA) */
    double eps;
    double weight_decay;
    double momentum, dampening;  /* SGD; RMSprop uses momentum */
    double alpha;                /* RMSprop smoothing constant; AdEMAMix's slow-EMA weight */
    double rho;                  /* Adadelta decay; Sophia clipping scale (gamma = rho*bs) */
    double bs;                   /* Sophia batch-size factor */
    double lr_decay;             /* Adagrad */
    double initial_accumulator_value; /* Adagrad */
    double momentum_decay;       /* NAdam psi (0.004) */
    unsigned hess_interval;      /* Sophia k: optimizer level refreshes h every k steps */
    int nesterov, amsgrad, maximize, centered;
    /* Adafactor (eps above is HF's eps1 = 1e-30) */
    double eps2;                 /* 1e-3: floor of RMS(θ) in the relative step */
    double clip_threshold;       /* 1.0: u /= max(1, RMS(u)/clip_threshold) */
    double decay_rate;           /* -0.8: β2_t = 1 - t^decay_rate */
    int relative_step;           /* 1: ρ_t = min(1e-2, 1/sqrt(t)) (or 1e-6·t with warmup_init)
                                    instead of lr */
    int scale_parameter;         /* 1: α_t = max(eps2, RMS(θ_{t-1}))·ρ_t */
    int warmup_init;             /* 0; 1 needs relative_step (as Hugging Face) */
    int use_beta1;               /* 0: no first moment (HF beta1=None); 1: EMA with beta1 */
    /* LAMB */
    int bias_correction;         /* 1 */
    int grad_averaging;          /* 1: m = β1 m + (1-β1) g; 0: m = β1 m + g (apex) */
    /* Gradient centralization, any rule but Muon (refused at the optimizer level: its update
       is the orthogonalised momentum of the whole matrix): g -= mean of g over all dims but
       the first, for tensors with > 1 dims (> 3 with gc_conv_only), after L2 decay was added
       (as the GC paper's code). Needs the tensor's shape: optimizer level, or gc_rows at the
       op level. */
    int grad_centralization, gc_conv_only;
    /* Lookahead (Zhang et al. 2019), any rule at the optimizer level: slow weights φ (state
       "slow_params", "slow_buffer" for Ranger) start as θ_0; after every lookahead_k-th step
       θ = φ + α(θ - φ) and φ = θ. lookahead_k = 0 turns it off. */
    unsigned lookahead_k;
    double lookahead_alpha;
    /* Ranger: rectify when ρ_t > n_sma_threshold (5, as its code) */
    double n_sma_threshold;
    /* Storage of the group's 16-bit parameters (optimizer level; see clopt_master and
       clopt_step_args): master is a clopt_master (0 none: θ updated in place), kept per
       tensor as the state "master" (float32, taken from θ at the tensor's first step) or
       "master_remainder" (u16, zeros); stochastic_rounding 1 rounds θ stochastically (no
       master only), keyed by the optimizer's seed (clopt_optimizer_seed), the tensor's
       index as the stream (a range group: one stream for all its tensors,
       clopt_range_group.sr_stream) and its step count (Lookahead's sync and Schedule-Free's
       eval/train switches draw other values of that step, README "Storage"). Both are
       ignored for float32 tensors. */
    int master;
    int stochastic_rounding;
    /* Storage of the group's optimizer state (a clopt_dtype: CLOPT_DTYPE_F32, BF16 or U8 =
       8-bit blockwise, see clopt_step_args.state_dtype). With U8, as bitsandbytes, tensors
       under 4096 elements keep float32 state, except in arena and range groups, whose
       tensors share one launch (each starts a block of 256 of the state there); bf16 applies
       to every tensor. 8-bit state: SGD (with momentum), Adam, AdamW, Lion, RMSprop (not
       centered, as bitsandbytes: sqrt(v - a²) of two quantized states turns NaN), Adagrad,
       AdEMAMix (bitsandbytes' AdEMAMix8bit),
       in caller-owned tensors, arena groups and range groups (library-allocated state); bf16:
       every rule but Adafactor (the multi-pass ones too: LAMB, StableAdamW, cautious
       masking, Muon). Another rule with U8, U8 in a range group with the engine's own state
       buffers (float32 only), or Adafactor with any non-float32 state (its
       factored statistics are small) are refused with CLOPT_ERR_UNSUPPORTED. The 8-bit
       absmaxes are states of their own ("exp_avg.absmax"). */
    int state_dtype;
    /* Schedule-Free AdamW and SGD (the reference's keywords): lr_t = lr·min(1, t/warmup_steps)
       (0: no warmup); the averaging weight of step t is t^r · lr_max^weight_lr_power. */
    unsigned warmup_steps;       /* 0 */
    double r;                    /* 0 */
    double weight_lr_power;      /* 2 */
    /* ADOPT: clip the normalised gradient to ±(t-1)^clip_exponent (0.25; 0 = no clipping);
       decouple 1: θ *= 1 - lr·wd (from step 2) instead of L2 decay. */
    double clip_exponent;
    int decouple;
    /* AdEMAMix: alpha (the field above, 2 by default) and beta3 (0.9999) warm up linearly
       (beta3 on the half-life scale, as the code) over these many steps; 0 = none. */
    unsigned alpha_warmup, beta3_warmup;
    /* Cautious masking for Adam, AdamW and Lion (kyleliang919/C-Optim): the update is kept
       where it agrees in sign with the gradient, then divided by max(mean of the mask over
       the tensor, 1e-3). Adam/AdamW then follow C-Optim's AdamW arithmetic (HF style: eps
       added to the raw sqrt(v), the bias corrections folded into the step size). Optimizer
       level only (a reduction before the update). */
    int cautious;
    /* Muon: Newton-Schulz iterations (5). */
    unsigned ns_steps;
} clopt_hparams;

/* Fills *out with rule's defaults. CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or
   CLOPT_ERR_INVALID_ARGUMENT (rule out of range). Host only. */
clopt_status clopt_hparams_default(clopt_rule rule, clopt_hparams *out);
/* The tuning (see clopt_ctx_get_tuning) of rule's update kernel under hp in ctx (the
   context's default for Adafactor and LAMB): for a tensor with hp->state_dtype's state (8-bit
   state where the rule has any: not for tensors under 4096 elements outside arena and range
   groups, which keep float32 state) and, under hp->grad_centralization, for a matrix.
   CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or
   CLOPT_ERR_INVALID_ARGUMENT (rule out of range). Host only: compiles nothing. */
clopt_status clopt_ctx_get_rule_tuning(const clopt_ctx *ctx, clopt_rule rule,
                                       const clopt_hparams *hp, clopt_tuning *out);
/* Check hyperparameters for a rule; the detail goes to *why (may be NULL) as static text.
   CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT (hp), CLOPT_ERR_INVALID_ARGUMENT (rule out of
   range) or CLOPT_ERR_INVALID_HYPERPARAM (the checks listed at clopt_hparams; also
   lookahead_alpha outside [0, 1] and, for Ranger, n_sma_threshold < 4). The range checks of
   a field apply where the rule reads it; the finiteness of every double field, and the
   storage, master, cautious and Lookahead fields, for every rule. Host only. */
clopt_status clopt_hparams_validate(clopt_rule rule, const clopt_hparams *hp, const char **why);

/* Number of state tensors the rule needs with these hyperparameters, their names (as in
   the golden files: "exp_avg", "momentum_buffer", ...; static storage), and their initial
   value. Rule out of range or hp NULL: 0 / NULL (name also NULL past the count). Adafactor:
   the factored (matrix) layout; a tensor's own layout is clopt_optimizer_state_info's.
   Lookahead's slow weights are not counted (optimizer level). Host only. */
size_t clopt_rule_state_count(clopt_rule rule, const clopt_hparams *hp);
const char *clopt_rule_state_name(clopt_rule rule, const clopt_hparams *hp, size_t index);
float clopt_rule_state_init(clopt_rule rule, const clopt_hparams *hp, size_t index);
/* Bytes moved per parameter per step by the fused kernel (reads + writes, float32). Sophia
   counts its steady state, the steps without an estimate (h read, not written): 24. 0 for a
   rule out of range or hp NULL. Host only. */
size_t clopt_rule_bytes_per_param(clopt_rule rule, const clopt_hparams *hp);

/* ------------------------------------------------------------------------------------ */
/* Op level                                                                              */
/* ------------------------------------------------------------------------------------ */

/* Storage (element) types. Arithmetic is float32 everywhere; only storage changes.
   F16 is IEEE binary16 (read and written with vload_half/vstore_half_rte, core OpenCL 1.2:
   no cl_khr_fp16 needed); BF16 is bfloat16 (the top 16 bits of a float32: stored rounded to
   nearest even, a NaN kept NaN); U16 is raw 16-bit words (the low halves of a bf16
   parameter's master, CLOPT_MASTER_REMAINDER); U8 is bytes (the codes of 8-bit blockwise
   optimizer state, see clopt_step_args.state_dtype). */
typedef enum clopt_dtype {
    CLOPT_DTYPE_F32 = 0,
    CLOPT_DTYPE_F16 = 1,
    CLOPT_DTYPE_BF16 = 2,
    CLOPT_DTYPE_U16 = 3,
    CLOPT_DTYPE_U8 = 4
} clopt_dtype;
/* Bytes per element (0 for a value out of range) and the name ("f32", "f16", "bf16", "u16",
   "u8"; NULL out of range). Host only. */
size_t clopt_dtype_size(clopt_dtype t);
const char *clopt_dtype_name(clopt_dtype t);

/* Master weights of a 16-bit parameter (see clopt_step_args):
   NONE       θ itself is updated: the new value is rounded to θ's type, to nearest even or,
              with stochastic rounding, up or down with probabilities that make the
              expected value the float32 result (unbiased);
   F32        an fp32 master copy (a state tensor of n floats) is what the rule updates; the
              same launch writes θ = the master rounded to nearest even (θ is not read);
   REMAINDER  bf16 θ only: a 16-bit state r per element such that the master's bits are
              (θ's bits << 16) + r as a signed 16-bit value, i.e. θ is the master rounded to
              nearest (ties away from zero) and θ with r is exactly the fp32 master (2 bytes
              of state per parameter instead of 4, as Transformer Engine's bf16 remainders).
              A REMAINDER state of zeros makes the master equal θ. */
typedef enum clopt_master {
    CLOPT_MASTER_NONE = 0,
    CLOPT_MASTER_F32 = 1,
    CLOPT_MASTER_REMAINDER = 2
} clopt_master;

/* A tensor in a caller-owned buffer: an offset in elements (of the tensor's storage type,
   float32 unless said otherwise) into a cl_mem. The overlap checks (of one step's buffers,
   of registered tensors) see a sub-buffer as its parent's bytes at its origin; they cannot
   see two buffers over the same host memory (CL_MEM_USE_HOST_PTR). */
typedef struct clopt_tensor {
    cl_mem buffer;
    size_t offset;
} clopt_tensor;

#define CLOPT_MAX_STATE 4

typedef struct clopt_step_args {
    clopt_tensor param;                 /* read and written */
    clopt_tensor grad;                  /* read only */
    clopt_tensor state[CLOPT_MAX_STATE];/* in clopt_rule_state_name order; others NULL */
    /* Sophia: Hessian-diagonal estimate folded into h after this step's update; buffer
       NULL = no estimate at this step. Other rules: must be NULL. */
    clopt_tensor hessian;
    /* NAdam: product of μ_1..μ_{t-1} (1.0 at step 1), see clopt_nadam_mu_product(). */
    double mu_product;
    /* Gradients are divided by this inside the kernel (AMP loss scale, or 1/clip factor).
       0 is taken as 1. Must be finite and > 0 otherwise. */
    double grad_scale;
    /* Gradient centralization (hp.grad_centralization): the tensor is gc_rows × (n/gc_rows);
       gc_scratch holds gc_rows floats of row means. gc_rows = 0 with GC on: the tensor is
       taken as 1-D and GC does nothing, as for torch's 1-D tensors. With GC the op runs
       two launches: the row means (a reduction), then the fused update (when the second
       fails to enqueue, the first still writes gc_scratch: it is scratch). */
    size_t gc_rows;
    clopt_tensor gc_scratch;
    /* Storage (all zero after clopt_step_args_init: float32 θ and g, no master). param and
       grad offsets count elements of their own type; any rule takes any combination of F32,
       F16 and BF16 for θ and g (the state's storage is state_dtype's, below). */
    clopt_dtype param_dtype, grad_dtype;
    /* 16-bit θ only: CLOPT_MASTER_F32 (master: n float32, the parameter the rule updates;
       the caller initialises it from θ, e.g. with clopt_enqueue_convert) or
       CLOPT_MASTER_REMAINDER (bf16 θ: master holds n U16 words, zeros at the start). */
    clopt_master master_kind;
    clopt_tensor master;
    /* 16-bit θ without a master: 1 rounds θ stochastically. The 16-bit random value r of
       element e (its index in param's buffer, offset included) is half e % 2 (low half
       first) of word (e/2) % 4 of Philox-4x32-10 with counter (e/8 low 32 bits, e/8 high 32
       bits, step low 32 bits, sr_stream) and key (sr_seed low, high): deterministic for a
       given seed, stream, step and element. bf16: x's bits + r, truncated (up with
       probability low16(x) / 2^16); f16: up when r / 2^16 < the fraction of x between its
       two float16 neighbours. Give tensors in different buffers different streams. */
    int stochastic_rounding;
    uint64_t sr_seed;
    uint32_t sr_stream;
    /* Storage of the state tensors: CLOPT_DTYPE_F32 (init), BF16 (every element-wise rule:
       16-bit words, stored rounded to nearest even) or U8, 8-bit blockwise (bitsandbytes'
       scheme; SGD with momentum, Adam, AdamW, Lion, RMSprop, Adagrad and AdEMAMix): state[k]
       holds one code per element and state_absmax[k] one float per block of 256 elements
       (blocks start at the tensor's first element: ceil(n / 256) floats); element i is
       clopt_q8_map(signed)[code] * absmax of its block, with the signed map for states that
       change sign (exp_avg, exp_avg_fast, exp_avg_slow, momentum_buffer, grad_avg) and the
       unsigned one for the others. The kernel dequantizes a block, updates it (θ's update
       reads the new state before it is quantized), takes the block's new absmax and writes
       each value's nearest code (ties to the lower code; a NaN takes the code of 0), all in
       the one launch. */
    clopt_dtype state_dtype;
    clopt_tensor state_absmax[CLOPT_MAX_STATE];
    /* Schedule-Free: the scalar state before this step (both 0 at step 1; the reference's
       lr_max starts at -1, the same for lr >= 0), advanced by clopt_schedule_free_advance. */
    double sf_lr_max, sf_weight_sum;
} clopt_step_args;

/* Schedule-Free's host scalars of step t (>= 1) under hp with the step's lr (a schedule's
   factor included): lr_t = lr·min(1, t/warmup_steps); *lr_max = max(*lr_max, lr_t);
   *weight_sum += t^r·(*lr_max)^weight_lr_power. Returns the averaging coefficient
   c_t = w_t / weight_sum (0 when weight_sum is 0) and lr_t in *lr_t (may be NULL). Call it
   once per applied step, after the step, to carry the scalars to the next (clopt_step_args'
   sf_lr_max, sf_weight_sum). Host only; NULL arguments give 0. */
double clopt_schedule_free_advance(const clopt_hparams *hp, uint64_t t, double *lr_max,
                                   double *weight_sum, double *lr_t);

/* Schedule-Free at the op level: switches a tensor's parameters between the training point
   y and the averaged point x (as the reference's optimizer.eval()/train()): train = 0
   writes x = lerp(y, z, 1 - 1/β) into θ, train = 1 writes y = lerp(x, z, 1 - β) back, with
   β = beta1 (AdamW) or momentum (SGD) and z = args->state[0]. θ's storage (param_dtype, a
   master) is args'. One launch; queue, wait list and event as clopt_enqueue_step; statuses
   as clopt_enqueue_step, plus CLOPT_ERR_INVALID_ARGUMENT for a rule other than the two
   schedule-free ones. The caller tracks the mode (stepping in eval mode is the caller's
   error at this level). A 16-bit θ rounded stochastically draws with the step word 0 and
   its direction's top bits (README "Storage"): the same values at every switch of that
   direction unless the caller changes args->sr_seed or sr_stream between switches. */
clopt_status clopt_enqueue_schedule_free_mode(clopt_ctx *ctx, cl_command_queue queue,
                                              clopt_rule rule, const clopt_hparams *hp,
                                              const clopt_step_args *args, size_t n, int train,
                                              cl_uint num_wait, const cl_event *wait_list,
                                              cl_event *event);

/* The 8-bit state map (bitsandbytes' create_dynamic_map(signed, 7, 8), computed in double and
   rounded to float32): 256 increasing values in [-1, 1] (signed: 127 negative, 0, 127
   positive and 1) or [0, 1] (unsigned: 0, 254 positive and 1), written to out. Host only. */
void clopt_q8_map(int signed_map, float out[256]);

/* Initialise args to "nothing set": NULL buffers, mu_product 1, grad_scale 1, float32
   storage (NULL: no-op). clopt_step_args may grow when the soname changes (README, "ABI
   and versions"): start from this. */
void clopt_step_args_init(clopt_step_args *args);

/* dst = src converted between storage types over n elements (offsets in elements of each
   tensor's own type): rounded to nearest even, or with stochastic_rounding 1 (16-bit dst
   only) as in clopt_step_args with (seed, stream, step). For engines that keep bf16/f16
   weights: the fp32 master from θ (F16/BF16 -> F32) or a 16-bit copy of float32 weights.
   One launch; dst and src must not overlap. Statuses: CLOPT_ERR_NULL_ARGUMENT,
   CLOPT_ERR_INVALID_ARGUMENT (a dtype out of range or U16, stochastic rounding with a
   float32 dst, a buffer or queue of another context, a bad wait list),
   CLOPT_ERR_INVALID_SIZE (n = 0), CLOPT_ERR_OUT_OF_BOUNDS, CLOPT_ERR_BUILD_FAILED and
   OpenCL codes. Non-blocking as clopt_enqueue_step (the first use compiles). */
clopt_status clopt_enqueue_convert(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                   clopt_dtype dst_dtype, clopt_tensor src,
                                   clopt_dtype src_dtype, size_t n, int stochastic_rounding,
                                   uint64_t seed, uint32_t stream, uint64_t step,
                                   cl_uint num_wait, const cl_event *wait_list,
                                   cl_event *event);

/* NAdam: μ_t = β1*(1 - 0.5*0.96^(t*ψ)); returns Π_{i<=t} μ_i (t = 0 or hp NULL gives 1).
   Host only; O(t). */
double clopt_nadam_mu_product(const clopt_hparams *hp, uint64_t t);

/*
 * Enqueue one step (step number t >= 1, as torch counts) of rule over n elements: ONE
 * kernel launch reading θ, g and each state tensor once and writing θ and each state once.
 * Statuses: CLOPT_ERR_NULL_ARGUMENT (ctx, hp, args or a needed buffer NULL),
 * CLOPT_ERR_INVALID_HYPERPARAM (clopt_hparams_validate), CLOPT_ERR_INVALID_SIZE (n = 0),
 * CLOPT_ERR_INVALID_ARGUMENT (rule out of range, step 0, grad_scale negative, not finite or
 * outside 1.2e-38 .. 8.5e37 (0 means 1), mu_product outside [0, 1] (0 is the
 * underflowed product of a long run), Schedule-Free's sf_lr_max or sf_weight_sum negative or
 * not finite, a buffer or queue of another context, a bad wait list, two of the step's
 * tensors that share bytes of one buffer),
 * CLOPT_ERR_OUT_OF_BOUNDS (offset + n past a buffer's end), CLOPT_ERR_STATE_MISMATCH (a state
 * the variant needs is missing, an extra one is set, or a Hessian estimate is given to a rule
 * other than Sophia), CLOPT_ERR_UNSUPPORTED (Adafactor, LAMB, StableAdamW and Muon: optimizer
 * level only, checked first, after the rule's range; cautious = 1: optimizer level only,
 * checked after the hyperparameters; a launch of 2^31 work-items or more, i.e. n of about
 * 2^31 × vector_width × items_per_work_item of the kernel's tuning or more (its work-items
 * rounded up to its work-group size; gradient centralization and 8-bit state have their
 * own geometry, see clopt_tuning): NVIDIA's OpenCL aliases larger global ids and AMD's
 * refuses 2^32, so such tensors go in a range group, whose launches are chunked (without
 * 8-bit state), or in pieces),
 * also CLOPT_ERR_INVALID_SIZE (gc_rows does not divide n), CLOPT_ERR_NULL_ARGUMENT (a NULL
 * event in the wait list), CLOPT_ERR_BUILD_FAILED, CLOPT_ERR_OUT_OF_MEMORY and OpenCL codes.
 * Storage: CLOPT_ERR_INVALID_ARGUMENT (a dtype out of range or U16, a master with a float32
 * θ, REMAINDER with an f16 θ, stochastic rounding with a master or a float32 θ),
 * CLOPT_ERR_STATE_MISMATCH (master set with CLOPT_MASTER_NONE, a state_absmax set for a
 * state that is not 8-bit), CLOPT_ERR_UNSUPPORTED (state_dtype U8 for a rule without 8-bit
 * state; an 8-bit kernel's work-group of 256 / VW work-items that the device cannot run,
 * see clopt_tuning), CLOPT_ERR_OUT_OF_BOUNDS (sizes count elements of each tensor's
 * type).
 * queue NULL = the context's queue. The wait list and out event behave as in OpenCL; the
 * out event (if non-NULL) must be released by the caller. Retains nothing: the buffers and
 * the queue are used only by the commands enqueued here. Non-blocking (it only enqueues),
 * except that the first use of a kernel variant in the context compiles it (blocking).
 */
clopt_status clopt_enqueue_step(clopt_ctx *ctx, cl_command_queue queue, clopt_rule rule,
                                const clopt_hparams *hp, const clopt_step_args *args,
                                size_t n, uint64_t step, cl_uint num_wait,
                                const cl_event *wait_list, cl_event *event);

/* Named wrappers of clopt_enqueue_step for the commonest rules (same semantics, statuses
   and blocking). */
clopt_status clopt_enqueue_sgd(clopt_ctx *ctx, cl_command_queue queue, const clopt_hparams *hp,
                               const clopt_step_args *args, size_t n, uint64_t step,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event);
clopt_status clopt_enqueue_adam(clopt_ctx *ctx, cl_command_queue queue, const clopt_hparams *hp,
                                const clopt_step_args *args, size_t n, uint64_t step,
                                cl_uint num_wait, const cl_event *wait_list, cl_event *event);
clopt_status clopt_enqueue_adamw(clopt_ctx *ctx, cl_command_queue queue, const clopt_hparams *hp,
                                 const clopt_step_args *args, size_t n, uint64_t step,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event);

/* ------------------------------------------------------------------------------------ */
/* Sophia's Hessian estimators and the device RNG                                        */
/* ------------------------------------------------------------------------------------ */

/* The three ops below share clopt_enqueue_step's conventions: queue NULL = the context's
   queue; the out event is the caller's to release; buffers and queue are not retained; they
   only enqueue (one launch), except that the first use in the context compiles the kernel
   (blocking). Statuses: CLOPT_ERR_NULL_ARGUMENT (ctx or a buffer NULL, a NULL event in the
   wait list), CLOPT_ERR_INVALID_SIZE (n = 0), CLOPT_ERR_INVALID_ARGUMENT (a buffer or queue
   of another context, a bad wait list), CLOPT_ERR_OUT_OF_BOUNDS, CLOPT_ERR_UNSUPPORTED (a
   launch of 2^31 work-items or more, as clopt_enqueue_step: randn takes 4 values per
   work-item), CLOPT_ERR_BUILD_FAILED, CLOPT_ERR_OUT_OF_MEMORY and OpenCL codes.

   Fill out[0..n) with standard normal draws u ~ N(0, 1) from Philox-4x32-10 keyed by seed;
   element i uses counter (counter_base + i/4) and Box-Muller, so the same (seed, counter)
   gives the same values on every run and device (up to the device's log/sqrt/cos). */
clopt_status clopt_enqueue_randn(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor out,
                                 size_t n, uint64_t seed, uint64_t counter_base,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event);

/* Hutchinson: ĥ = u ⊙ (H u), with Hu the engine's Hessian-vector product. */
clopt_status clopt_enqueue_hutchinson(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor u,
                                      clopt_tensor hvp, clopt_tensor out, size_t n,
                                      cl_uint num_wait, const cl_event *wait_list,
                                      cl_event *event);

/* Gauss-Newton-Bartlett: ĥ = B * ĝ ⊙ ĝ, with ĝ the gradient of the loss on labels sampled
   from the model's own predictions, averaged over the B examples of the batch. Also
   CLOPT_ERR_INVALID_HYPERPARAM (batch_size not finite or <= 0). */
clopt_status clopt_enqueue_gnb(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor ghat,
                               clopt_tensor out, size_t n, double batch_size,
                               cl_uint num_wait, const cl_event *wait_list, cl_event *event);

/* ------------------------------------------------------------------------------------ */
/* Optimizer level                                                                       */
/* ------------------------------------------------------------------------------------ */

/* An optimizer works on its context's queue (which must be in order), except the steps an
   engine enqueues on its own queue with clopt_optimizer_step_on. Where the engine steps on
   its own queue, ordering that queue with the context's queue (zero_grad, accumulate_grad,
   randn, state initialisation) is the engine's job: events, or one queue for both.

   The host's view: without AMP an enqueued step is counted at once; with AMP (the loss
   scale set) whether a step was applied is decided on the device and reaches the host
   later. Queries (step counts, clopt_optimizer_found_inf, clopt_optimizer_last_grad_norm,
   clopt_optimizer_group_lr) give the state as known on the host: with AMP steps in flight
   they may lag, and are exact after a blocking call (clopt_optimizer_step with AMP or
   clipping, read_state, write_state, save*, load*, destroy) or once clopt_optimizer_poll
   has seen every step. */
typedef struct clopt_optimizer clopt_optimizer;

/* An optimizer of one rule with default hyperparameters hp (copied): group 0 exists from
   creation with these hyperparameters. The optimizer keeps ctx (not retained: destroy the
   optimizer before the context). Allocates a small control buffer; does not block.
   Returns CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT (ctx, hp or out), CLOPT_ERR_INVALID_ARGUMENT
   (rule out of range), CLOPT_ERR_INVALID_HYPERPARAM, CLOPT_ERR_UNSUPPORTED (the context's
   queue is out of order, or hp refused as clopt_optimizer_add_group refuses it),
   CLOPT_ERR_OUT_OF_MEMORY or an OpenCL code; *out is NULL on failure. */
clopt_status clopt_optimizer_create(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                    clopt_optimizer **out);
/* Blocks until every step in flight has finished, on any queue (clFinish of the context's
   queue, then a wait for each step's verdict), then releases everything the optimizer
   allocated (state tensors, arena buffers and sub-buffers, chunk tables, scratch, events).
   Caller-owned buffers are not written; the references it held on them are released (the
   engine's own handles stay valid). NULL is allowed. */
void clopt_optimizer_destroy(clopt_optimizer *opt);

/* Register a parameter tensor of n elements and its gradient (caller-owned) in group 0:
   clopt_optimizer_add_param_desc(opt, 0, {param, grad, *hessian, ndim 1, {n}}, index), with
   its statuses and blocking. The optimizer allocates and initialises the rule's state
   tensors. hessian: Sophia only, the buffer the engine writes Hessian-diagonal estimates
   into (buffer NULL = none: h stays 0); it is consumed after every hess_interval-th step.
   *index (may be NULL) receives the tensor's index, counted from 0 in registration order. */
clopt_status clopt_optimizer_add_param(clopt_optimizer *opt, clopt_tensor param,
                                       clopt_tensor grad, size_t n, const clopt_tensor *hessian,
                                       size_t *index);

/* A parameter tensor with its shape (row-major, as torch). ndim 0 or 1: a vector of n =
   shape[0] elements (ndim 0 takes n from shape[0] too). */
#define CLOPT_MAX_DIMS 8
typedef struct clopt_param_desc {
    clopt_tensor param, grad;
    clopt_tensor hessian; /* Sophia only; buffer NULL = none */
    size_t ndim;
    size_t shape[CLOPT_MAX_DIMS];
    /* Storage of param and grad (offsets in their elements): F32 (init), F16 or BF16, for
       tensors registered with clopt_optimizer_add_param_desc or in a range group (whose
       tensors share one pair of types: one launch) or in an arena group (likewise). Every
       rule takes them, with gradient centralization and Lookahead. An F32 master takes θ's
       value at the tensor's first step: the engine writes its weights any time before. */
    clopt_dtype param_dtype, grad_dtype;
} clopt_param_desc;
/* Zeroes a descriptor (ndim 0, no Hessian buffer). clopt_param_desc may grow: start from this
   (or a designated initialiser, which zeroes the fields it does not name). NULL: no-op. */
void clopt_param_desc_init(clopt_param_desc *d);

/* Parameter groups, as torch's param_groups: group 0 exists from creation with the
   optimizer's hyperparameters; add_group appends one with its own (validated) copy and
   returns its index in *group (may be NULL). All four are host only (never block).
   add_group: CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_HYPERPARAM,
   CLOPT_ERR_UNSUPPORTED (state_dtype U8 for a rule without 8-bit state, or other than F32
   for Adafactor; Muon with grad_centralization), CLOPT_ERR_OUT_OF_MEMORY. group_count: 0
   for NULL. set_group_hparams
   (between steps; steps already enqueued keep theirs): CLOPT_ERR_NULL_ARGUMENT,
   CLOPT_ERR_INDEX, CLOPT_ERR_INVALID_HYPERPARAM, CLOPT_ERR_UNSUPPORTED (as add_group),
   CLOPT_ERR_STATE_MISMATCH (the change would alter a tensor's
   state layout, e.g. amsgrad, momentum 0 <-> > 0, Lookahead on/off); a change that selects
   other kernel variants compiles them at the next step (or clopt_optimizer_prepare).
   get_group_hparams: CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INDEX (with a detail). */
clopt_status clopt_optimizer_add_group(clopt_optimizer *opt, const clopt_hparams *hp,
                                       size_t *group);
size_t clopt_optimizer_group_count(const clopt_optimizer *opt);
clopt_status clopt_optimizer_set_group_hparams(clopt_optimizer *opt, size_t group,
                                               const clopt_hparams *hp);
clopt_status clopt_optimizer_get_group_hparams(const clopt_optimizer *opt, size_t group,
                                               clopt_hparams *out);
/* Register a caller-owned tensor with its shape in a group (not an arena or range group). It
   first settles every step in flight (their verdicts count only the tensors they had). The
   optimizer retains desc's param, grad and hessian buffers (released by
   clopt_optimizer_destroy: the engine may release its handles before) and allocates the tensor's state tensors (owned
   by the optimizer), filled with their initial values on the context's queue; it then
   blocks (clFinish of the context's queue). *index (may be NULL) receives the tensor's
   index. Returns CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT (desc or a buffer NULL),
   CLOPT_ERR_INDEX (no such group), CLOPT_ERR_INVALID_ARGUMENT (an arena or range group, a
   buffer of another context, a param or grad range overlapping a param, grad or state
   range already registered),
   CLOPT_ERR_INVALID_SIZE (ndim > CLOPT_MAX_DIMS, a 0 or too large shape),
   CLOPT_ERR_OUT_OF_BOUNDS, CLOPT_ERR_STATE_MISMATCH (a Hessian buffer for a rule other than
   Sophia), CLOPT_ERR_UNSUPPORTED (Muon: a tensor that is not 2-D, or a build without
   CLBlast), CLOPT_ERR_OUT_OF_MEMORY or an OpenCL code; on failure nothing is registered. */
clopt_status clopt_optimizer_add_param_desc(clopt_optimizer *opt, size_t group,
                                            const clopt_param_desc *desc, size_t *index);

/* Global gradient-norm clipping over all tensors of the optimizer, as
   torch.nn.utils.clip_grad_norm_ (L2 norm, coefficient max_norm / (norm + 1e-6) clamped to
   1): the norm is reduced on the device in a fixed order, the coefficient is decided on the
   device and applied inside the update kernels; nothing is read back before the update
   (clopt_optimizer_step still waits for the verdict, clopt_optimizer_step_on does not).
   The norm cannot overflow for finite gradients (a second sum of (g·2^-80)² takes over;
   torch's float32 sum of squares overflows to Inf above about 1.8e19 and then zeroes every
   gradient). A non-finite gradient gives torch's result: the norm is NaN when a gradient
   holds a NaN, else Inf, and the coefficient NaN or 0 multiplies every gradient (with AMP
   the step is skipped instead; without, clopt_step_report.nonfinite says so). max_norm 0
   turns it off. Applies to the
   steps enqueued afterwards. Host only; CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or
   CLOPT_ERR_INVALID_HYPERPARAM (negative, not finite, or outside 1.2e-38 .. 8.5e37). */
clopt_status clopt_optimizer_set_grad_clip(clopt_optimizer *opt, double max_norm);
/* The total gradient norm (before clipping) of the latest step taken with clipping on whose
   verdict has reached the host (see clopt_optimizer_poll); Inf when a gradient held an Inf
   (and none a NaN) and NaN when one held a NaN, as torch; NaN before any and for NULL. Host
   only; never blocks. */
double clopt_optimizer_last_grad_norm(const clopt_optimizer *opt);
/* The settings of set_grad_clip, set_grad_scale (the scale the next step divides out; 0:
   AMP off) and set_check_finite as they stand (a checkpoint's load replaces them), for an
   engine that keeps them in its own checkpoint: NaN (the scalars) or 0 for NULL. Host
   only; never block. */
double clopt_optimizer_grad_clip(const clopt_optimizer *opt);
double clopt_optimizer_grad_scale(const clopt_optimizer *opt);
int clopt_optimizer_check_finite(const clopt_optimizer *opt);

/* One step over every registered tensor, on the context's queue: one launch per tensor, or
   one per arena or range group for the element-wise rules; clopt_optimizer_step_on(opt,
   NULL, 0, NULL, event) with its statuses, plus: with AMP or clipping on it then BLOCKS
   until this step's verdict (and those of every earlier step) reached the host, so the
   queries are exact afterwards; otherwise it only enqueues (see step_on for compiles and the
   bound on steps in flight). Advances the step count by one. *event (may be NULL; the
   caller releases it) receives an event that completes with the step's last command.
   Returns CLOPT_STEP_SKIPPED (positive, not an error; only with AMP) when a gradient holds an
   Inf or NaN: no parameter or state changes, the step count does not advance and *event is
   NULL. A failed wait for the verdict is not reported (the step was enqueued and runs:
   CLOPT_SUCCESS); the verdict then reaches the host through a later poll or call. */
clopt_status clopt_optimizer_step(clopt_optimizer *opt, cl_event *event);

/* The engine's form of a step: enqueued on `queue` (an in-order queue of the optimizer's
   cl_context and device; NULL = the context's queue) after the events of wait_list, and
   returns at once, also with AMP and clipping on: the Inf/NaN check, the gradient norm,
   the skip decision and the clip coefficient stay on the device, and the update kernels
   read them from a device buffer. *event (may be NULL; release it) completes with the
   step's last command. Returns CLOPT_SUCCESS once enqueued and flushed (clFlush: a driver
   may otherwise hold the commands until a blocking call): whether AMP skipped the step is
   known later (clopt_optimizer_poll). Never blocks (see clopt_optimizer_poll for the
   one bound on steps in flight), once its kernels are built: without a prior
   clopt_optimizer_prepare for the current settings, the first step compiles them
   (blocking). The queue is not retained (keep it alive until the step has finished); the
   optimizer keeps the event of the step's verdict read-back until the verdict is collected.
   Statuses (on failure nothing runs: launches already enqueued are aborted on the device):
   CLOPT_ERR_NULL_ARGUMENT (opt; a NULL event in wait_list), CLOPT_ERR_INVALID_ARGUMENT
   (queue of another context or device, out-of-order or not a queue, a bad wait list, no
   tensors registered, eval mode, a mode switch left incomplete), CLOPT_ERR_UNSUPPORTED (an 8-bit state kernel needs 256/VW work-items per
   work-group, or a reduction kernel the tuning's reduce_local, and the device allows fewer;
   a tensor or arena group whose launch would take 2^31 work-items or more, as
   clopt_enqueue_step),
   CLOPT_ERR_INVALID_HYPERPARAM (a group's schedule takes its lr above 2^64, e.g. an
   exponential one with gamma > 1; see clopt_optimizer_group_lr for the other end),
   CLOPT_ERR_BUILD_FAILED, CLOPT_ERR_OUT_OF_MEMORY, OpenCL codes. A step that fails after
   its first enqueue does not wait for the caller's events (its start is abandoned on the
   device). */
clopt_status clopt_optimizer_step_on(clopt_optimizer *opt, cl_command_queue queue,
                                     cl_uint num_wait, const cl_event *wait_list,
                                     cl_event *event);

/* Compiles (or loads from the program cache) every kernel the optimizer's next steps need
   with its current groups, hyperparameters, AMP and clipping settings, so that the first
   step pays no compile cost and cannot fail on a build. Blocking (compiles); enqueues
   nothing and does not wait for the device. Call it again after adding tensors or groups,
   or after changing hyperparameters or the context's tuning. Returns CLOPT_SUCCESS (also
   without tensors), CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_BUILD_FAILED (log in
   clopt_ctx_build_log), CLOPT_ERR_UNSUPPORTED (as clopt_optimizer_step_on: an 8-bit state
   or reduction work-group too large for the device), CLOPT_ERR_INVALID_HYPERPARAM (as
   step_on: a schedule's lr above 2^64 at the next step), CLOPT_ERR_OUT_OF_MEMORY or an
   OpenCL code. */
clopt_status clopt_optimizer_prepare(clopt_optimizer *opt);

/* What the device decided for one step (AMP skip, gradient norm), as it reaches the host. */
typedef struct clopt_step_report {
    uint64_t step_call; /* 1-based number of the step call reported (0: none known yet) */
    int skipped;        /* 1: AMP found an Inf or NaN gradient; nothing changed */
    double grad_norm;   /* total gradient norm before clipping (NaN when not measured; Inf
                           or NaN for a non-finite gradient, as clopt_optimizer_last_grad_norm; 0
                           when every square underflows float32, |g| below about 1e-19 per
                           element, 1e-23 with denormals: the check sums in float32) */
    int nonfinite;      /* 1: a gradient held an Inf or NaN (measured with AMP, clipping or
                           clopt_optimizer_set_check_finite; without AMP the step was applied
                           and the Inf/NaN reached the parameters, as in torch) */
} clopt_step_report;
/* The latest step call whose verdict has reached the host, without waiting for any other:
   collects the verdicts whose read-back has completed (oldest first), which also brings
   the host's step counts, found_inf, last_grad_norm and an attached loss scaler up to date.
   Verdicts that reach the host between two polls are not reported one by one (a loss
   scaler fed from polls would miss them: attach it with clopt_optimizer_set_loss_scaler).
   Returns CLOPT_SUCCESS with out->step_call = 0 when none has, CLOPT_ERR_NULL_ARGUMENT, or
   an OpenCL code (a verdict's event could not be queried; *out still gets the latest
   report). Never blocks.
   The one bound on steps in flight: when 32 earlier step calls are in flight whose verdicts
   have not reached the host, clopt_optimizer_step_on waits for the oldest of them. An
   engine that enqueues steps behind a user event it completes later must complete it
   before the 33rd such step (and before clopt_optimizer_destroy, which waits for every
   step): waiting on it from the same thread never returns. */
clopt_status clopt_optimizer_poll(clopt_optimizer *opt, clopt_step_report *out);

/* Without AMP a non-finite gradient is applied as torch applies it: NaN spreads into the
   parameters and state it touches (Adafactor's factored statistics: the whole tensor). This
   opt-in check (on = 1) reads every gradient once per step on the device (4 bytes per
   parameter, as AMP's check) and reports a non-finite gradient in clopt_step_report's
   nonfinite without skipping anything; AMP (clopt_optimizer_set_grad_scale) skips instead.
   Never blocks; CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INVALID_ARGUMENT. */
clopt_status clopt_optimizer_set_check_finite(clopt_optimizer *opt, int on);

/* ---- AMP ------------------------------------------------------------------------------- */

/* Gradients arrive multiplied by `scale` (the loss scale); the kernels divide it out, and each
   step first checks every gradient for Inf/NaN (as PyTorch's fused Adam with grad_scale and
   found_inf). scale 0 turns AMP off (the default). The skip is decided on the device.
   Applies to the steps enqueued afterwards. Host only; CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INVALID_HYPERPARAM (negative, not finite, or outside
   1.2e-38 .. 8.5e37: the kernels take 1/scale as a float). */
clopt_status clopt_optimizer_set_grad_scale(clopt_optimizer *opt, double scale);
/* 1 when the last step whose verdict reached the host was skipped by AMP (an Inf or NaN
   gradient), else 0 (also for NULL). Host only; never blocks (see clopt_optimizer_poll). */
int clopt_optimizer_found_inf(const clopt_optimizer *opt);

/* Dynamic loss scaling, as torch.cuda.amp.GradScaler: back off on overflow, grow after
   growth_interval clean steps. A plain struct: no device, no handle; host only. init takes
   65536 for an initial_scale that is not finite and > 0 (NULL: no-op). Fed from
   clopt_optimizer_step's status (it blocks for each verdict) it is torch's scaler; with
   clopt_optimizer_step_on attach it to the optimizer (clopt_optimizer_set_loss_scaler). */
typedef struct clopt_loss_scaler {
    double scale;           /* current loss scale (65536 by default) */
    double growth_factor;   /* 2 */
    double backoff_factor;  /* 0.5 */
    unsigned growth_interval; /* 2000 */
    unsigned clean_steps;   /* clean steps since the last change */
} clopt_loss_scaler;
void clopt_loss_scaler_init(clopt_loss_scaler *s, double initial_scale);
/* After a step: found_inf = 1 backs off (and resets the count), else counts a clean step
   and grows the scale after growth_interval of them (torch's rule; growth_interval 0 never
   grows). The scale stays within what clopt_optimizer_set_grad_scale takes: a growth past
   2^126 (torch: past float32's 2^127) or a back-off below 1.2e-38 (torch: none) leaves it
   as it is. Returns the new scale (NaN for NULL). */
double clopt_loss_scaler_update(clopt_loss_scaler *s, int found_inf);
/* Attaches a copy of *s to the optimizer (NULL detaches it) and sets the AMP loss scale to
   s->scale. Every AMP step's verdict then updates the copy as it reaches the host (in step
   order, none lost between two polls): the dynamic loss scaling of an engine whose steps
   (clopt_optimizer_step_on) return before their verdicts. Each iteration reads the current
   scale with clopt_optimizer_get_loss_scaler, scales its loss by it and passes the same
   value to clopt_optimizer_set_grad_scale before the step. A verdict arrives one or more
   steps late, so a step may have run with an older scale than the current one: an overflow
   backs off only when the step ran at the current scale or below, a clean step counts only
   when it ran at the current scale or above (with no step in flight this is torch's rule
   exactly; torch would have run the later step at the lower scale, clopt skips it without
   backing off twice). Not in the optimizer's checkpoints (torch's GradScaler has its own
   state_dict): save the struct and attach it again after a load; read it with
   clopt_optimizer_get_loss_scaler AFTER clopt_optimizer_save_to/save (they settle the steps
   in flight, whose verdicts still update it), so that both describe the same step. Host only; never blocks.
   CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INVALID_HYPERPARAM (scale outside
   1.2e-38 .. 8.5e37, growth_factor not in (1, 8.5e37], backoff_factor not in (0, 1);
   nothing changes). growth_interval 0 never grows, as in clopt_loss_scaler_update. */
clopt_status clopt_optimizer_set_loss_scaler(clopt_optimizer *opt, const clopt_loss_scaler *s);
/* The attached scaler as the verdicts so far leave it (collects those whose read-back has
   completed, as clopt_optimizer_poll; never blocks). CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT,
   CLOPT_ERR_INVALID_ARGUMENT (none attached) or an OpenCL code (a verdict's event could not
   be queried; *out still gets the scaler as far as known). */
clopt_status clopt_optimizer_get_loss_scaler(clopt_optimizer *opt, clopt_loss_scaler *out);

/* ---- gradient accumulation ----------------------------------------------------------- */

/* dst = beta·dst + alpha·src over n elements (one launch): with beta = 0 on the first
   micro-batch and alpha = 1/k for each of k micro-batches, dst becomes their average.
   Conventions and statuses as clopt_enqueue_randn (enqueues only; first use compiles),
   plus CLOPT_ERR_INVALID_ARGUMENT when alpha or beta is not finite. */
clopt_status clopt_enqueue_axpby(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                 clopt_tensor src, size_t n, double alpha, double beta,
                                 cl_uint num_wait, const cl_event *wait_list, cl_event *event);
/* The same with dst and src in any of CLOPT_DTYPE_F32, F16 and BF16 (offsets in elements of
   each tensor's own type): computed in float32, a 16-bit dst rounded to nearest even (as
   torch's `+=` on bf16 gradients; many micro-batches of small values lose the bits below
   half an ulp: accumulate in float32 and convert once where that matters). F32 with F32 is
   clopt_enqueue_axpby's kernel. dst and src may be the same range of the same type, else
   must not overlap (checked for every pair of types, F32 with F32 included). Statuses as
   clopt_enqueue_axpby, plus CLOPT_ERR_INVALID_ARGUMENT for a dtype out of range (U8, U16) or
   overlapping tensors. */
clopt_status clopt_enqueue_axpby_ex(clopt_ctx *ctx, cl_command_queue queue, clopt_tensor dst,
                                    clopt_dtype dst_dtype, clopt_tensor src,
                                    clopt_dtype src_dtype, size_t n, double alpha, double beta,
                                    cl_uint num_wait, const cl_event *wait_list,
                                    cl_event *event);
/* Optimizer helpers over the registered gradients: zero them all; or add weight·src to the
   gradient of tensor `param` (src has that tensor's length and its gradient's storage type;
   a 16-bit gradient is rounded to nearest even, clopt_enqueue_axpby_ex). Both only enqueue,
   on the context's queue (order them with an engine's own queue yourself);
   accumulate_grad's first use in the context (per gradient type) compiles its kernel
   (blocking). zero_grad: CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or an OpenCL code (zeroing
   may then be partial; 16-bit gradients are zeroed in their own size). accumulate_grad:
   CLOPT_ERR_INDEX (no tensor `param`), otherwise as clopt_enqueue_axpby_ex. */
clopt_status clopt_optimizer_zero_grad(clopt_optimizer *opt);
clopt_status clopt_optimizer_accumulate_grad(clopt_optimizer *opt, size_t param,
                                             clopt_tensor src, double weight);

/* ---- learning-rate schedules ----------------------------------------------------------- */

/* The values are fixed (checkpoints store them): new kinds are appended. */
typedef enum clopt_schedule_kind {
    CLOPT_SCHED_CONSTANT = 0, /* factor until total_steps (>= 1), then 1 (torch ConstantLR) */
    CLOPT_SCHED_STEP = 1,     /* gamma^floor(t / step_size) (StepLR) */
    CLOPT_SCHED_EXPONENTIAL = 2, /* gamma^t (ExponentialLR) */
    CLOPT_SCHED_COSINE = 3,   /* eta_min + (1-eta_min)(1+cos(π·min(t,T)/T))/2 (CosineAnnealingLR,
                                 as a factor of the base lr; T = total_steps) */
    CLOPT_SCHED_LINEAR_WARMUP = 4, /* factor + (1-factor)·min(t, T)/T (LinearLR up to 1) */
    CLOPT_SCHED_COSINE_RESTARTS = 5 /* SGDR (Loshchilov & Hutter; the AdamW paper's multiplier):
                                 cosine over cycles of total_steps·t_mult^i steps
                                 (CosineAnnealingWarmRestarts) */
} clopt_schedule_kind;

typedef struct clopt_schedule_stage {
    clopt_schedule_kind kind;
    uint64_t start;       /* the stage's clock starts at this step count (t = count - start;
                             before it the stage contributes its value at t = 0) */
    uint64_t total_steps; /* T (cosine, warmup, constant), T_0 (restarts) */
    uint64_t step_size;   /* step decay period */
    double gamma;         /* step / exponential decay */
    double factor;        /* constant / warmup start factor */
    double eta_min;       /* cosine floor, as a fraction of the base lr */
    double t_mult;        /* restarts: cycle growth (>= 1) */
} clopt_schedule_stage;

#define CLOPT_MAX_STAGES 4
/* A schedule multiplies a group's lr by the product of its stages' factors, e.g. linear
   warmup for W steps times cosine decay starting at W (torch's ChainedScheduler gives the
   same product when the stages do not overlap, as there; while a warmup overlaps a cosine
   with eta_min > 0 torch's chained recursion differs from the product, 0.13% for a 10-step
   warmup from 0.1 under a 100-step cosine to 0.1).
   Every kind gives the factors torch's scheduler gives when stepped once per optimizer step
   (tests/test_training.c replays torch's chainable forms step by step), with one deliberate
   difference: past T the cosine holds eta_min (the factor is eta_min for every t >= T),
   where torch's CosineAnnealingLR, its closed form and its chainable form alike, keeps
   following eta_min + (base - eta_min)(1 + cos(π t/T))/2: it rises again after T_max, is
   back at the base lr at 2·T_max and oscillates with period 2·T_max. Here T is the end of
   the decay (training usually stops there); for cycles use CLOPT_SCHED_COSINE_RESTARTS.
   Restarts also accept a non-integer t_mult (torch's CosineAnnealingWarmRestarts takes
   integers only), with cycles of T·t_mult^i steps counted as torch counts them. */
typedef struct clopt_schedule {
    size_t nstages; /* 0: constant lr */
    clopt_schedule_stage stage[CLOPT_MAX_STAGES];
} clopt_schedule;

/* The multiplier after `count` completed steps; the optimizer's step t uses count = t - 1,
   as torch's schedulers stepped once per optimizer step. NaN for an invalid schedule.
   Host only, as everything about schedules. */
double clopt_schedule_factor(const clopt_schedule *s, uint64_t count);
/* CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INVALID_HYPERPARAM; *why (may be NULL)
   receives static text. */
clopt_status clopt_schedule_validate(const clopt_schedule *s, const char **why);
/* Sets group `group`'s schedule (copied; applies to the steps enqueued afterwards, counted
   with the optimizer's step count). CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INDEX
   or CLOPT_ERR_INVALID_HYPERPARAM. */
clopt_status clopt_optimizer_set_group_schedule(clopt_optimizer *opt, size_t group,
                                                const clopt_schedule *s);
/* Group `group`'s schedule as set (or loaded; nstages 0 when none). CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INDEX. Host only. */
clopt_status clopt_optimizer_get_group_schedule(const clopt_optimizer *opt, size_t group,
                                                clopt_schedule *out);
/* The lr group `group` uses at the next step (base lr times the schedule's factor; 0 when
   that is below 1.2e-38, float32's normal range: a long decay, e.g. an exponential one at
   0.99 past about 8,000 steps, ends at 0 instead of failing the step) by the host's step
   count (may lag with AMP steps in flight); NaN for NULL or no such group. */
double clopt_optimizer_group_lr(const clopt_optimizer *opt, size_t group);

/* The lecture's batch-size rules: scale a learning rate tuned at base_batch to batch (N =
   batch / base_batch; pure host arithmetic, no checks). */
double clopt_lr_scale_linear(double lr, double batch, double base_batch); /* lr·N */
double clopt_lr_scale_sqrt(double lr, double batch, double base_batch);   /* lr·sqrt(N) */

/* ---- arena storage ----------------------------------------------------------------------- */

/* A parameter group whose tensors live contiguously in library-allocated buffers: one cl_mem
   for the parameters, one for the gradients, one per state role. shapes[i] gives tensor i's
   shape (its param, grad and hessian fields are ignored). Each tensor starts at a multiple of
   the device's base-address alignment, so it also gets a sub-buffer. The element-wise rules
   then update the whole group in ONE launch; GC, Adafactor and LAMB still run per tensor
   (through the views). Parameters and gradients start at 0: the engine writes its initial
   weights through the views. The group is appended with its own copy of hp: *group (may be
   NULL) receives its index, *first_index (may be NULL) that of the group's first tensor.
   Every buffer is owned by the optimizer (released by clopt_optimizer_destroy). Allocates,
   fills on the context's queue, then blocks (clFinish of the context's queue).
   Sophia is refused with CLOPT_ERR_UNSUPPORTED: its Hessian estimates need caller-owned
   tensors (add_param_desc). Other statuses: CLOPT_ERR_NULL_ARGUMENT (hp, shapes),
   CLOPT_ERR_INVALID_SIZE (ntensors 0, a 0 or too large shape, ndim > CLOPT_MAX_DIMS),
   CLOPT_ERR_INVALID_ARGUMENT (a storage dtype out of range, a REMAINDER master with f16 θ,
   tensors whose storage types differ: one launch), CLOPT_ERR_INVALID_HYPERPARAM,
   CLOPT_ERR_UNSUPPORTED (as clopt_optimizer_add_group; Muon as add_param_desc),
   CLOPT_ERR_OUT_OF_MEMORY, OpenCL codes; on failure no group is added. */
clopt_status clopt_optimizer_add_arena_group(clopt_optimizer *opt, const clopt_hparams *hp,
                                             size_t ntensors, const clopt_param_desc *shapes,
                                             size_t *group, size_t *first_index);
/* Views of tensor `param`: (buffer, offset) pairs and, for arena tensors, sub-buffers (the
   engine must not release them; NULL for caller-owned tensors and range groups). Arena
   buffers and sub-buffers are owned by the optimizer and valid until its destroy; other
   views are the caller's own buffers. Any pointer may be NULL. CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT (opt) or CLOPT_ERR_INDEX (with a detail). Host only. */
clopt_status clopt_optimizer_param_view(const clopt_optimizer *opt, size_t param,
                                        clopt_tensor *param_view, clopt_tensor *grad_view,
                                        cl_mem *param_sub, cl_mem *grad_sub);

/* ---- engines that own their memory ------------------------------------------------------ */

/* A group over ranges of the engine's own buffers (llm.c's and KANN's one flat array of
   parameters and one of gradients): tensors[i].param and .grad are (buffer, offset) ranges,
   every param range in ONE cl_mem and every grad range in ONE cl_mem (the same cl_mem for
   both is allowed when no ranges overlap); shapes as in clopt_optimizer_add_param_desc. An
   element-wise rule (without gradient centralization or Lookahead) updates the whole group
   in ONE launch over a small device table of chunks (the OpenCL 1.2 form of multi-tensor
   apply); other rules run per tensor. With 8-bit state (hp->state_dtype U8) the table has
   a row (32 bytes, 1/8 byte per parameter) per block of 256 of each tensor. Sophia is
   refused (CLOPT_ERR_UNSUPPORTED: its estimates need add_param_desc). The engine's buffers
   are retained until clopt_optimizer_destroy (as add_param_desc's).
   Initialise with clopt_range_group_init (the struct may grow; struct_size tells the library
   which fields the caller knows). */
typedef struct clopt_range_group {
    size_t struct_size;
    size_t ntensors;
    const clopt_param_desc *tensors;
    /* The engine's own state buffers, in clopt_rule_state_name order (e.g. llm.c's m and v
       arrays), or all NULL: the library allocates the state. Tensor i's states start at
       state_offsets[i] in each buffer (NULL: at its parameter offset, as flat arrays laid
       out like the parameters). Not with Lookahead (its slow weights are the library's). */
    cl_mem state[CLOPT_MAX_STATE];
    const size_t *state_offsets;
    /* For the engine's state buffers: 1 (default) fills them with the rule's initial values
       at registration, the last thing it enqueues (a registration that fails before leaves
       them as they were; one whose fills or final clFinish fail may leave them partly
       filled); 0 adopts their contents (porting a trainer mid-run, with
       clopt_optimizer_set_step_count). */
    int init_state;
    /* Stochastic rounding of 16-bit θ (hp->stochastic_rounding, no master): every tensor of
       the group draws from one stream, so that the random value of an element depends on
       the seed, the step and its index in θ's buffer (unique within the group) only. -1
       (clopt_range_group_init): the stream is the index of the group's first tensor; 0 ..
       2^32 - 1: this stream, e.g. an engine that splits a group over processes gives each
       process's part the stream of the whole group (libclopt_mpi does). */
    long long sr_stream;
} clopt_range_group;
/* Zeroes g, sets struct_size, init_state = 1 and sr_stream = -1 (NULL: no-op). */
void clopt_range_group_init(clopt_range_group *g);
/* Registers the group, appended with its own copy of hp (validated, then the state and the
   chunk table are allocated and written on the context's queue, then clFinish: blocking).
   Library-allocated state and the chunk table are owned by the optimizer; the engine's
   state buffers stay the engine's (retained until clopt_optimizer_destroy). Refused: a range past its buffer's end or
   state buffers too small (CLOPT_ERR_OUT_OF_BOUNDS); two ranges of the group that overlap,
   a gradient or state range overlapping a parameter range or another tensor's, a parameter,
   gradient or state range overlapping one already registered in this optimizer (another
   group's engine-owned state included), params or grads in more than one cl_mem, a buffer
   of another context, struct_size not a version's (below the first's, or above 1024: an
   uninitialised struct), sr_stream outside -1 .. 2^32 - 1, tensors
   whose storage types differ (CLOPT_ERR_INVALID_ARGUMENT); a state buffer count other than
   0 or the rule's, a tensor's hessian set (CLOPT_ERR_STATE_MISMATCH); Sophia, the
   engine's state with Lookahead, with a multi-pass rule (Adafactor, LAMB, StableAdamW,
   Muon), with a master (a state of the library's) or with a state_dtype other than F32, a
   field past this library's struct set (a newer caller's; CLOPT_ERR_UNSUPPORTED). Also
   CLOPT_ERR_NULL_ARGUMENT (hp, desc, desc->tensors, a
   tensor's param or grad buffer), CLOPT_ERR_INVALID_SIZE (ntensors 0, shapes),
   CLOPT_ERR_INVALID_HYPERPARAM, CLOPT_ERR_OUT_OF_MEMORY and OpenCL codes; on failure no
   group is added. *group and *first_index (either may be NULL) receive the group and its
   first tensor. */
clopt_status clopt_optimizer_add_range_group(clopt_optimizer *opt, const clopt_hparams *hp,
                                             const clopt_range_group *desc, size_t *group,
                                             size_t *first_index);

/* Op level: allocates the state tensors rule needs for n elements with hp (one buffer each,
   in clopt_rule_state_name order, filled with their initial values on the context's queue,
   non-blocking: order them before use on another queue; an out-of-order context queue gets
   a barrier after them) into out[0 .. *count); the rest of
   out is set to NULL (*count may be 0, e.g. SGD without momentum). The caller owns and
   releases the buffers (clReleaseMemObject); on failure none is left allocated and out and
   *count are not written. The
   multi-pass rules (Adafactor, LAMB, StableAdamW, Muon): CLOPT_ERR_UNSUPPORTED (optimizer
   level only). Also CLOPT_ERR_NULL_ARGUMENT,
   CLOPT_ERR_INVALID_ARGUMENT (rule out of range), CLOPT_ERR_INVALID_HYPERPARAM,
   CLOPT_ERR_INVALID_SIZE (n = 0 or too large) and OpenCL codes. */
clopt_status clopt_alloc_state(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                               size_t n, clopt_tensor out[CLOPT_MAX_STATE], size_t *count);
/* The same in a storage type (CLOPT_DTYPE_F32, BF16 or U8): for U8 also absmax[0 .. *count)
   (ceil(n / 256) floats each; absmax may be NULL otherwise), the codes of the initial value
   (the code of 0, or Adagrad's initial_accumulator_value as the code of 1 times an absmax of
   that value). Statuses as clopt_alloc_state, plus CLOPT_ERR_INVALID_ARGUMENT (another dtype,
   absmax NULL with U8) and CLOPT_ERR_UNSUPPORTED (a rule without 8-bit state; checked
   before the rule's range). */
clopt_status clopt_alloc_state_ex(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                  size_t n, clopt_dtype dtype, clopt_tensor out[CLOPT_MAX_STATE],
                                  clopt_tensor absmax[CLOPT_MAX_STATE], size_t *count);

/* ---- checkpoints ------------------------------------------------------------------------- */

/* Save the complete optimizer state (rule, groups with hyperparameters and schedules, step
   count, NAdam products, clipping and AMP settings, the RNG position, every state tensor) to
   a versioned little-endian file with a CRC-32C, documented in docs/checkpoint-format.md.
   Written to a temporary file in the same folder ("<path>.<16 random hex digits>.tmp",
   created exclusively, never through a symlink, mode 0600, fsync'ed) and renamed over
   `path`, so a failed save never leaves a half-written file in place of a good one.
   Blocking: settles every step in flight (as clopt_optimizer_destroy), then reads the state
   with blocking reads on the context's queue. Returns CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT (a Schedule-Free mode switch left
   incomplete: finish it first), CLOPT_ERR_IO, CLOPT_ERR_OUT_OF_MEMORY or an OpenCL code. */
clopt_status clopt_optimizer_save(clopt_optimizer *opt, const char *path);
/* Load a checkpoint into an optimizer built the same way (same rule, groups and tensor
   shapes, possibly in another context or on another device). Everything is read and checked
   (magic, version, CRC, every section, every shape) before anything changes: a truncated,
   corrupted, wrong-version or mismatched file returns CLOPT_ERR_FORMAT (or
   CLOPT_ERR_STATE_MISMATCH for another rule, group or tensor count, group kind, shape or
   state layout) and leaves the optimizer as it was. Blocking: once everything is checked it
   settles every step in flight, then writes the tensors with blocking writes on the
   context's queue; only an OpenCL failure there can stop it half-way (some tensors written,
   the host state unchanged). Replaces the hyperparameters, schedules, step counts, clipping
   and AMP settings and RNG position. Also CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_IO,
   CLOPT_ERR_OUT_OF_MEMORY and OpenCL codes. */
clopt_status clopt_optimizer_load(clopt_optimizer *opt, const char *path);

/* Checkpoints as bytes, for engines that keep one file of their own (GGUF, safetensors, a
   custom container). The bytes are the file format above (same CRC, same all-or-nothing
   load). Options (start from clopt_save_options_init; fields may be appended in later
   versions, struct_size tells the library which ones the caller knows):
   - state_tensors 1 (default): the state tensors are in the bytes. 0: only the scalar state
     and the layout (rule, groups, hyperparameters, schedules, step counts, NAdam products,
     clipping/AMP settings, RNG position, shapes); the engine then saves every state tensor
     itself (clopt_optimizer_state_entry, clopt_optimizer_read_state) and restores it after
     loading (clopt_optimizer_write_state).
   - arena_params 1 (default): the parameters of arena groups (storage the library
     allocated) are included, so such an optimizer resumes from the bytes alone. Parameters
     of caller-owned tensors are never included: the engine saves them with its model. */
/* The largest struct_size of a growing struct (clopt_save_options, clopt_range_group,
   clopt_mpi_options) a library reads: a larger one is no version's size but an uninitialised
   struct, refused before a byte past the library's own struct is read. */
#define CLOPT_STRUCT_SIZE_MAX 1024u
typedef struct clopt_save_options {
    size_t struct_size; /* sizeof(clopt_save_options), set by clopt_save_options_init */
    int state_tensors;
    int arena_params;
} clopt_save_options;
/* Sets struct_size and the defaults (NULL: no-op). */
void clopt_save_options_init(clopt_save_options *o);
/* Bytes clopt_optimizer_save_to will write with options o (NULL = defaults). No device
   access; never blocks. CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT
   (struct_size not a version's: below the first's, or above 1024, an uninitialised struct;
   a field not 0 or 1) or CLOPT_ERR_UNSUPPORTED (a field this library does not know is
   set). */
clopt_status clopt_optimizer_state_size(const clopt_optimizer *opt, const clopt_save_options *o,
                                        size_t *bytes);
/* Writes the checkpoint into buf (cap bytes; CLOPT_ERR_INVALID_SIZE when too small, buf
   untouched, checked before anything blocks); *written (may be NULL) receives the length.
   Blocking: settles every step in flight, then reads the device (blocking reads on the
   context's queue). Statuses as clopt_optimizer_state_size, plus CLOPT_ERR_INVALID_SIZE,
   CLOPT_ERR_INVALID_ARGUMENT (a Schedule-Free mode switch left incomplete) and OpenCL
   codes. */
clopt_status clopt_optimizer_save_to(clopt_optimizer *opt, const clopt_save_options *o,
                                     void *buf, size_t cap, size_t *written);
/* Loads bytes written by save_to or save (the same checks, statuses except CLOPT_ERR_IO, and
   blocking as clopt_optimizer_load). */
clopt_status clopt_optimizer_load_from(clopt_optimizer *opt, const void *buf, size_t len);


/* One state tensor, for engines that write the optimizer state into their own container.
   key: "state.<param>.<name>" as torch's state_dict ("state.3.exp_avg"); shape: the
   tensor's shape for full-size states, {length} for shorter ones (Adafactor's factored
   statistics); tensor: where it lives on the device (owned by the optimizer, or the engine's
   own buffer for a range group that adopted it), valid until clopt_optimizer_destroy.
   Lookahead's slow weights and an F32 master of a tensor that has not stepped yet are θ, not
   the tensor's contents: read them with clopt_optimizer_read_state. tensor.offset counts
   elements of the entry's dtype (bytes = offset · clopt_dtype_size(dtype)). Restoring after
   a load without state tensors: float32 entries with clopt_optimizer_write_state, which also
   marks masters and slow weights as holding values (raw writes into tensor do not: the
   next step would take them from θ again); bf16, 8-bit and remainder entries by writing
   their bytes into tensor. */
typedef struct clopt_state_entry {
    size_t group, param, index; /* index: state number of the tensor (clopt_optimizer_state) */
    const char *name;           /* "exp_avg", ...; static storage */
    char key[64];
    clopt_dtype dtype;
    size_t ndim;
    size_t shape[CLOPT_MAX_DIMS];
    size_t length;              /* elements */
    clopt_tensor tensor;
} clopt_state_entry;
/* Number of state tensors over all parameters (0 for NULL), and entry i of them (ordered by
   parameter, then state index): CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INDEX or
   CLOPT_ERR_INVALID_SIZE (key longer than 63 characters). Host only; never block. */
size_t clopt_optimizer_state_entry_count(const clopt_optimizer *opt);
clopt_status clopt_optimizer_state_entry(const clopt_optimizer *opt, size_t i,
                                         clopt_state_entry *out);

/* ---- randomness for the Hessian estimators ------------------------------------------------ */

/* u ~ N(0, 1) into out[0..n) with the optimizer's Philox key and counter (which advances by
   ceil(n/4) on success and is saved in checkpoints). seed: set the key and reset the counter
   (host only; CLOPT_SUCCESS or CLOPT_ERR_NULL_ARGUMENT). randn: clopt_enqueue_randn on the
   context's queue (order it with an engine's own queue yourself): only enqueues (first use
   compiles), out is the caller's; its statuses. */
clopt_status clopt_optimizer_seed(clopt_optimizer *opt, uint64_t seed);
/* The generator's position (the key, which also keys stochastic rounding, and the counter
   the next randn starts at), for an engine's own checkpoint, and its restore: set_rng(seed,
   counter) makes the next randn and the rounding draws those of the saved optimizer.
   CLOPT_SUCCESS or CLOPT_ERR_NULL_ARGUMENT. Host only. */
clopt_status clopt_optimizer_rng(const clopt_optimizer *opt, uint64_t *seed, uint64_t *counter);
clopt_status clopt_optimizer_set_rng(clopt_optimizer *opt, uint64_t seed, uint64_t counter);
clopt_status clopt_optimizer_randn(clopt_optimizer *opt, clopt_tensor out, size_t n);

/* Steps applied by the optimizer (skipped steps are not counted); the schedules count these.
   The count as known on the host (see "The host's view" above: with AMP steps in flight it
   may lag). 0 for NULL. Host only; never blocks. */
uint64_t clopt_optimizer_step_count(const clopt_optimizer *opt);
/* Steps applied to tensor `param` (torch's state['step']): a tensor added after training
   started counts from 0, so its bias corrections start at step 1. As known on the host.
   CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INDEX. Never blocks. */
clopt_status clopt_optimizer_param_step_count(const clopt_optimizer *opt, size_t param,
                                              uint64_t *out);
/* Takes an engine's step count when porting a trainer: the optimizer's count and every
   tensor's become `count` (NAdam's products and Schedule-Free's per-tensor lr_max and
   weight_sum are recomputed for it: exactly up to 2^20 steps, beyond with lr_max as at step
   2^20, wrong while a warmup still raises lr there; README "Schedule-Free"). Nothing else
   changes.
   Blocking: it settles every step in flight first (their verdicts would otherwise move the
   new count). CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INVALID_ARGUMENT (count
   above 2^53 - 64, the largest a checkpoint holds: every step's t stays an exact double),
   CLOPT_ERR_OUT_OF_MEMORY or an OpenCL code. */
clopt_status clopt_optimizer_set_step_count(clopt_optimizer *opt, uint64_t count);
/* The largest step count set_step_count takes and a checkpoint holds: 2^53 - 64, so that
   every step computed from it (the count + 1 + d for the 32 steps that may be in flight) is
   an integer below 2^53, exact as the double the bias corrections and schedules use. */
#define CLOPT_MAX_STEP_COUNT ((UINT64_C(1) << 53) - 64)
/* The rule (CLOPT_RULE_COUNT for NULL) and the number of registered tensors (0 for NULL). */
clopt_rule clopt_optimizer_rule(const clopt_optimizer *opt);
size_t clopt_optimizer_param_count(const clopt_optimizer *opt);
/* Change hyperparameters between steps (validated; a change of the state layout, e.g.
   turning amsgrad on, is refused with CLOPT_ERR_STATE_MISMATCH). Both act on group 0:
   clopt_optimizer_set_group_hparams / get_group_hparams(opt, 0, ...), same statuses; host
   only. */
clopt_status clopt_optimizer_set_hparams(clopt_optimizer *opt, const clopt_hparams *hp);
clopt_status clopt_optimizer_get_hparams(const clopt_optimizer *opt, clopt_hparams *out);

/* Name (static storage) and length (elements of the state's dtype: floats, bf16 words,
   8-bit codes; clopt_optimizer_state_entry gives the dtype) of state `index` of parameter
   `param` (Adafactor's factored statistics are shorter than the tensor); either pointer may be
   NULL. CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT or CLOPT_ERR_INDEX (with a detail).
   state_count: the number of states of `param` (with Lookahead's slow weights), 0 for NULL
   or no such tensor. Host only; never block. */
clopt_status clopt_optimizer_state_info(const clopt_optimizer *opt, size_t param, size_t index,
                                        const char **name, size_t *length);
size_t clopt_optimizer_state_count(const clopt_optimizer *opt, size_t param);

/* The device tensor of state `index` ("exp_avg", ...) of parameter `param` (owned as
   clopt_state_entry.tensor; host only, never blocks; CLOPT_SUCCESS, CLOPT_ERR_NULL_ARGUMENT
   or CLOPT_ERR_INDEX); and a blocking copy of it (n must be its length in floats, see
   clopt_optimizer_state_info) into host memory: read_state settles every step in flight,
   then reads on the context's queue (CL_TRUE). Lookahead's slow weights and an F32 master of
   a tensor that has not stepped yet read as θ (16-bit θ widened). read_state: CLOPT_SUCCESS,
   CLOPT_ERR_NULL_ARGUMENT, CLOPT_ERR_INDEX, CLOPT_ERR_INVALID_SIZE (n is not the length),
   CLOPT_ERR_UNSUPPORTED (a state that does not hold floats: bf16 or 8-bit codes, a bf16
   remainder; read its tensor from clopt_optimizer_state_entry; 8-bit absmaxes are floats)
   or an OpenCL code. */
clopt_status clopt_optimizer_state(const clopt_optimizer *opt, size_t param, size_t index,
                                   clopt_tensor *out);
clopt_status clopt_optimizer_read_state(clopt_optimizer *opt, size_t param, size_t index,
                                        float *host, size_t n);
/* The inverse: a blocking write of n floats (the state's length) into state `index` of
   parameter `param`, e.g. restoring a state saved in the engine's own container. Settles
   every step in flight first, then writes on the context's queue (CL_TRUE). Writing the
   slow weights (the F32 master) of a tensor that has not stepped yet makes them its slow
   weights (master): its first step no longer takes them from θ; in an element-wise arena
   group, the group's other tensors then start theirs from θ at once. Statuses as
   read_state. */
clopt_status clopt_optimizer_write_state(clopt_optimizer *opt, size_t param, size_t index,
                                         const float *host, size_t n);
/* Total bytes of device state the optimizer owns (optimizer state only: not the parameters,
   gradients or its small reduction scratch). Sums the tensors' state lengths: the padding
   of arena and range groups (and a range group's table) is not counted, and a range
   group's adopted engine buffers are. 0 for NULL. Host only. */
size_t clopt_optimizer_state_bytes(const clopt_optimizer *opt);

/* ---- Schedule-Free: train and eval modes -------------------------------------------- */

/* The parameters of Schedule-Free groups hold y while training; eval writes the averaged
   x = lerp(y, z, 1 - 1/β) into them (what the reference's optimizer.eval() does, for
   evaluation and for saving the model), train writes y back. One launch per arena or range
   group (one per tensor otherwise) on the context's queue (`_on`: on queue after wait_list,
   *event completing with the last launch); groups of other rules are untouched. Once built
   it does not block, except right after a tensor's first step (or a tensor added later)
   while that step is still in flight: its count decides whether it has a z yet, so the
   call settles the steps in flight (as clopt_optimizer_destroy). Switching to the mode the
   optimizer is in does nothing. A step in eval mode is refused (CLOPT_ERR_INVALID_ARGUMENT:
   call train first), as the reference raises. The mode is saved in checkpoints; a new
   optimizer starts in train mode. Statuses: CLOPT_ERR_NULL_ARGUMENT,
   CLOPT_ERR_INVALID_ARGUMENT (queue or wait list as step_on), CLOPT_ERR_BUILD_FAILED,
   OpenCL codes. A failure before the first launch changes nothing; an OpenCL failure of a
   later launch leaves the tensors before it switched and the mode unchanged: steps and saves
   are then refused until eval or train is called again, which finishes (or undoes) the
   switch with every tensor switched once. */
clopt_status clopt_optimizer_eval(clopt_optimizer *opt);
clopt_status clopt_optimizer_train(clopt_optimizer *opt);
clopt_status clopt_optimizer_set_mode_on(clopt_optimizer *opt, int train, cl_command_queue queue,
                                         cl_uint num_wait, const cl_event *wait_list,
                                         cl_event *event);
/* 1 in train mode (also for NULL), 0 after clopt_optimizer_eval of a Schedule-Free
   optimizer (other rules have no eval mode: always 1). Host only. */
int clopt_optimizer_training(const clopt_optimizer *opt);

/* ---- per-tensor sums across processes ------------------------------------------------ */

/* The sums a rule reduces over a whole tensor before its update (LAMB: Σθ² and Σr²; cautious
   Adam/AdamW/Lion: the number of elements whose update agrees in sign with the gradient;
   StableAdamW: Σ g²/max(u, eps²)), handed to a hook between the pass that computes them and
   the update that reads them. An engine (or libclopt_mpi) that splits one logical tensor into
   pieces over processes combines the pieces' sums there, so each piece is updated with the
   whole tensor's trust ratio, mask mean or RMS. The struct may grow (struct_size). */
typedef struct clopt_tensor_sums {
    size_t struct_size; /* sizeof(clopt_tensor_sums) of the library calling the hook */
    size_t param;       /* the tensor's index (order of registration) */
    clopt_rule rule;
    size_t count;         /* floats at sums: clopt_rule_tensor_sums(rule, group's hp) */
    clopt_tensor sums;    /* the floats on the device, already enqueued; replace them in place */
    cl_command_queue queue; /* the step's queue (in order): read and write the sums on it */
    /* In: the tensor's elements. Out: the element count the means divide by (the cautious
       mask's mean, StableAdamW's RMS): a hook combining pieces sets the whole tensor's. */
    double elements;
} clopt_tensor_sums;

/* Returns CLOPT_SUCCESS, or a status that fails the step (see the setter). */
typedef clopt_status (*clopt_tensor_sums_fn)(void *user, clopt_tensor_sums *sums);

/* Installs fn (NULL: removes it) for the steps enqueued afterwards: during each step, for each
   tensor of LAMB, cautious Adam/AdamW/Lion or StableAdamW, after its sums are enqueued and
   before its update is, on the host. The hook may enqueue on `queue` (e.g. a blocking read,
   a combination with other processes, a write back; the step's launches are released before
   the first call, so blocking calls return); it must not call clopt on the optimizer's
   context (the step's kernels hold their arguments until it returns). With a hook installed
   a step blocks: it first waits for the verdicts of the steps in flight, so the hook is
   called exactly once per tensor and step (also when the device will skip the step: the
   update then changes nothing), and it refuses a wait list holding a user event that is not
   complete yet (CLOPT_ERR_INVALID_ARGUMENT: the step's launches would wait for it while the
   hook waits for them). Never called while clopt_optimizer_prepare builds kernels. A failing
   hook fails the step with its status (negative; a positive one reads as
   CLOPT_ERR_INVALID_ARGUMENT), and so does one that returns success with `elements` outside
   1 .. 1e30 (CLOPT_ERR_INVALID_ARGUMENT); unlike the step's own checks either is not atomic: the
   tensors before it were updated, and this tensor's first pass has run (LAMB's moments are
   written there). Not for Adafactor (its factored statistics are more than sums) or Muon
   (needs the whole matrix). Host only; CLOPT_SUCCESS or CLOPT_ERR_NULL_ARGUMENT (opt). */
clopt_status clopt_optimizer_set_tensor_sums_hook(clopt_optimizer *opt, clopt_tensor_sums_fn fn,
                                                  void *user);
/* The sums per tensor a step of `rule` under hp hands to the hook (clopt_tensor_sums.count):
   2 for LAMB, 1 for StableAdamW and for cautious Adam/AdamW/Lion, 0 for every other rule
   (the hook is not called; hp may be NULL: no cautious masking). Host only. */
size_t clopt_rule_tensor_sums(clopt_rule rule, const clopt_hparams *hp);

/* 1 when the library was built with CLBlast (Muon available), else 0. Host only. */
int clopt_has_muon(void);

#if defined(__GNUC__) && !defined(CLOPT_STATIC_BUILD)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* CLOPT_H */
