/* SPDX-License-Identifier: MIT */
/* The sharded optimizer's lifecycle: validation, the ranks' agreement, the slice and its
 * internal clopt_optimizer over the slice's pieces of the engine's buffers, settings and
 * queries. The step is in mpi_step.c. */
#include "mpi_internal.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- statuses and details ----------------------------------------------------------------- */

const char *clopt_mpi_status_str(clopt_status s)
{
    switch ((int)s) {
#define CLOPT_MPI_X_STR(name, value, text)                                                         \
    case value:                                                                                    \
        return text;
        CLOPT_MPI_STATUS_LIST(CLOPT_MPI_X_STR)
#undef CLOPT_MPI_X_STR
    default:
        return clopt_status_str(s);
    }
}

const char *clopt_mpi_status_name(clopt_status s)
{
    switch ((int)s) {
#define CLOPT_MPI_X_NAME(name, value, text)                                                        \
    case value:                                                                                    \
        return #name;
        CLOPT_MPI_STATUS_LIST(CLOPT_MPI_X_NAME)
#undef CLOPT_MPI_X_NAME
    default:
        return clopt_status_name(s);
    }
}

clopt_status clopt_mpi_fail(clopt_mpi_optimizer *opt, clopt_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(opt->err, sizeof opt->err, fmt, ap);
    va_end(ap);
    return s;
}

clopt_status clopt_mpi_check(clopt_mpi_optimizer *opt, int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return CLOPT_SUCCESS;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    return clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_MPI, "%s failed: %s", what, text);
}

clopt_status clopt_mpi_cl_fail(clopt_mpi_optimizer *opt, cl_int e, const char *what)
{
    const clopt_status s = (clopt_status)(CLOPT_ERR_OPENCL_BASE + e);
    return clopt_mpi_fail(opt, s, "%s: %s", what, clopt_status_str(s));
}

/* The values every rank adds to the status in create's first agreement (its signature and
   its element count): a rank that fails before it still takes part with as many. */
#define AGREE1_EXTRA 2

clopt_status clopt_mpi_agree(clopt_mpi_optimizer *opt, clopt_status local, const double *extra,
                             size_t n, double *all)
{
    double mine[8];
    mine[0] = (double)local;
    for (size_t i = 0; i < n; i++)
        mine[1 + i] = extra[i];
    const int rc =
        MPI_Allgather(mine, (int)(n + 1), MPI_DOUBLE, all, (int)(n + 1), MPI_DOUBLE, opt->comm);
    if (rc != MPI_SUCCESS)
        return local != CLOPT_SUCCESS ? local : clopt_mpi_check(opt, rc, "MPI_Allgather");
    if (local != CLOPT_SUCCESS)
        return local;
    for (int r = 0; r < opt->size; r++)
        if (all[(size_t)r * (n + 1)] != 0.0)
            return clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_REMOTE, "rank %d failed: %s", r,
                                  clopt_mpi_status_name((clopt_status)all[(size_t)r * (n + 1)]));
    return CLOPT_SUCCESS;
}

void clopt_mpi_options_init(clopt_mpi_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->grad_mode = CLOPT_MPI_GRAD_ENGINE;
    o->reduce_op = CLOPT_MPI_SUM;
    o->ordered_sum = 1;
}

/* ---- validation ------------------------------------------------------------------------------ */

/* Rules and options a shard may cut tensors under: the element-wise ones, those whose
   per-tensor sums mpi_sums.c combines (LAMB, StableAdamW, cautious masking), and gradient
   centralization (the boundaries fall between its rows). Adafactor and Muon need whole
   tensors (whole = 1). */
static clopt_status check_rule(clopt_mpi_optimizer *opt, clopt_rule rule, const clopt_hparams *hp,
                               int whole)
{
    const char *why = NULL;
    clopt_status s = clopt_hparams_validate(rule, hp, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "hyperparameters: %s", why ? why : "invalid");
    if (rule == CLOPT_SOPHIA)
        return clopt_mpi_fail(opt, CLOPT_ERR_UNSUPPORTED,
                              "sophia needs Hessian estimates per tensor (not in clopt_mpi yet)");
    if (whole) /* every tensor whole on one rank: the core's per-tensor reductions hold */
        return CLOPT_SUCCESS;
    if (rule == CLOPT_MUON)
        return clopt_mpi_fail(opt, CLOPT_ERR_UNSUPPORTED,
                              "muon needs whole tensors (Newton-Schulz orthogonalises whole "
                              "matrices): shard by whole tensors (shard_tensors = 1)");
    return CLOPT_SUCCESS;
}

/* Gradient centralization turned on for group g after create: every boundary inside one of
   g's tensors that GC applies to must fall between its rows (create put them there for the
   groups that had GC then). */
static clopt_status check_gc_rows(clopt_mpi_optimizer *opt, size_t g, const clopt_hparams *hp)
{
    for (size_t i = 0; hp->grad_centralization && i < opt->ntensors; i++) {
        const clopt_mpi_shape *t = &opt->shapes[i];
        const size_t rows = opt->tgroup[i] == g ? clopt_mpi_gc_rows(hp, t) : 0;
        for (int r = 1; rows && r < opt->size; r++) {
            const size_t b = (size_t)opt->displs[r];
            if (b > t->flat && b < t->flat + t->n && (b - t->flat) % (t->n / rows) != 0)
                return clopt_mpi_fail(opt, CLOPT_ERR_UNSUPPORTED,
                                      "gradient centralization on tensor %zu, which a shard "
                                      "boundary cuts inside a row (create the optimizer with "
                                      "grad_centralization on to put the boundaries between "
                                      "rows, or shard_tensors = 1)",
                                      i);
        }
    }
    return CLOPT_SUCCESS;
}

static size_t desc_len(const clopt_param_desc *d)
{
    size_t n = 1;
    const size_t nd = d->ndim ? d->ndim : 1;
    for (size_t k = 0; k < nd && k < CLOPT_MAX_DIMS; k++) {
        if (d->shape[k] == 0 || n > SIZE_MAX / d->shape[k])
            return 0;
        n *= d->shape[k];
    }
    return n;
}

/* A growing struct s whose struct_size (its first field) is a version's: at least min, at
   most CLOPT_STRUCT_SIZE_MAX, and 0 in every byte past the `known` this library has (a
   newer caller's field it cannot honour); the core's clopt_check_struct_size, which this
   library cannot call (it uses the public API only), without the message. */
static int struct_size_ok(const void *s, size_t min, size_t known)
{
    size_t size;
    memcpy(&size, s, sizeof size);
    if (size < min || size > CLOPT_STRUCT_SIZE_MAX)
        return 0;
    for (size_t i = known; i < size; i++)
        if (((const unsigned char *)s)[i])
            return 0;
    return 1;
}

/* The stochastic-rounding stream a group's desc asks for (-1: the default; a desc from a
   header before the field: -1). */
static long long group_sr_stream(const clopt_range_group *desc)
{
    return desc->struct_size >= offsetof(clopt_range_group, sr_stream) + sizeof desc->sr_stream
               ? desc->sr_stream
               : -1;
}

/* The local checks of create's arguments (every group), the groups' tensors concatenated
   into opt->cat (tensor i of the flattened vector, its group in opt->tgroup[i]); the
   signature the ranks compare. */
static clopt_status check_args(clopt_mpi_optimizer *opt, clopt_rule rule, size_t ngroups,
                               const clopt_hparams *hps, const clopt_range_group *descs,
                               const clopt_mpi_options *o, uint64_t *sig)
{
    if (!opt->ctx || !hps || !descs)
        return clopt_mpi_fail(opt, CLOPT_ERR_NULL_ARGUMENT, "ctx, hp or desc is NULL");
    if (ngroups == 0)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE, "no groups");
    if ((int)rule < 0 || rule >= CLOPT_RULE_COUNT)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "rule %d out of range", (int)rule);
    if (o && !struct_size_ok(o, sizeof *o, sizeof *o))
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                              "options: struct_size is no version's, or a field this library "
                              "does not know is set (clopt_mpi_options_init)");
    if (o && ((unsigned)o->grad_mode > 1u ||
              (unsigned)o->reduce_op > 1u || (o->ordered_sum != 0 && o->ordered_sum != 1) ||
              (o->shard_tensors != 0 && o->shard_tensors != 1)))
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                              "options: struct_size too small or a field out of range");
    /* one storage type for the parameters and one for the gradients (one buffer each) */
    if (descs[0].ntensors && descs[0].tensors) {
        opt->pdt = descs[0].tensors[0].param_dtype;
        opt->gdt = descs[0].tensors[0].grad_dtype;
    }
    if (opt->pdt != CLOPT_DTYPE_F32 && opt->pdt != CLOPT_DTYPE_F16 &&
        opt->pdt != CLOPT_DTYPE_BF16)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                              "param_dtype must be F32, F16 or BF16");
    if (opt->gdt != CLOPT_DTYPE_F32 && opt->gdt != CLOPT_DTYPE_F16 &&
        opt->gdt != CLOPT_DTYPE_BF16)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                              "grad_dtype must be F32, F16 or BF16");
    opt->pes = clopt_dtype_size(opt->pdt);
    opt->ges = clopt_dtype_size(opt->gdt);
    size_t nt = 0;
    for (size_t gi = 0; gi < ngroups; gi++) {
        const clopt_range_group *desc = &descs[gi];
        clopt_status s = check_rule(opt, rule, &hps[gi], o ? o->shard_tensors : 0);
        if (s != CLOPT_SUCCESS)
            return s;
        if (!struct_size_ok(desc, offsetof(clopt_range_group, init_state) + sizeof(int),
                            sizeof *desc))
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                                  "group %zu: struct_size is no version's, or a field this "
                                  "library does not know is set (clopt_range_group_init)",
                                  gi);
        const long long srs = group_sr_stream(desc);
        if (srs < -1 || srs > (long long)UINT32_MAX)
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                                  "group %zu: sr_stream %lld: -1 or a 32-bit stream", gi, srs);
        for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
            if (desc->state[k])
                return clopt_mpi_fail(opt, CLOPT_ERR_UNSUPPORTED,
                                      "engine-owned state buffers are not supported when sharded "
                                      "(each rank keeps only its slice's state)");
        if (desc->ntensors == 0 || !desc->tensors)
            return clopt_mpi_fail(opt,
                                  desc->ntensors ? CLOPT_ERR_NULL_ARGUMENT : CLOPT_ERR_INVALID_SIZE,
                                  "group %zu: no tensors", gi);
        if (nt > SIZE_MAX / 2 - desc->ntensors)
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE, "too many tensors");
        nt += desc->ntensors;
    }
    opt->cat = malloc(nt * sizeof *opt->cat);
    opt->tgroup = malloc(nt * sizeof *opt->tgroup);
    opt->lgroup = malloc(ngroups * sizeof *opt->lgroup);
    opt->hps = malloc(ngroups * sizeof *opt->hps);
    opt->gstream = malloc(ngroups * sizeof *opt->gstream);
    opt->ngroups = ngroups;
    opt->ncat = nt;
    if (!opt->cat || !opt->tgroup || !opt->lgroup || !opt->hps || !opt->gstream)
        return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t gi = 0, at = 0; gi < ngroups; gi++) {
        opt->lgroup[gi] = -1;
        opt->hps[gi] = hps[gi];
        const long long srs = group_sr_stream(&descs[gi]); /* -1: its first tensor's index */
        opt->gstream[gi] = srs >= 0 ? (uint32_t)srs : (uint32_t)at;
        for (size_t i = 0; i < descs[gi].ntensors; i++, at++) {
            opt->cat[at] = descs[gi].tensors[i];
            opt->tgroup[at] = gi;
        }
    }
    clopt_range_group catg;
    clopt_range_group_init(&catg);
    catg.ntensors = nt;
    catg.tensors = opt->cat;
    const clopt_range_group *desc = &catg;
    /* FNV-1a over what every rank must share */
    uint64_t h = 1469598103934665603ull;
#define MIX(v)                                                                                     \
    do {                                                                                           \
        h ^= (uint64_t)(v);                                                                        \
        h *= 1099511628211ull;                                                                     \
    } while (0)
#define MIXD(d)                                                                                    \
    do {                                                                                           \
        double d_ = (d);                                                                           \
        uint64_t u_;                                                                               \
        memcpy(&u_, &d_, sizeof u_);                                                               \
        MIX(u_);                                                                                   \
    } while (0)
    MIX(rule);
    MIX(desc->ntensors);
    MIX(opt->pdt);
    MIX(opt->gdt);
    size_t total = 0;
    for (size_t i = 0; i < desc->ntensors; i++) {
        const clopt_param_desc *d = &desc->tensors[i];
        if (!d->param.buffer || !d->grad.buffer)
            return clopt_mpi_fail(opt, CLOPT_ERR_NULL_ARGUMENT, "tensor %zu: a buffer is NULL", i);
        if (d->param_dtype != opt->pdt || d->grad_dtype != opt->gdt)
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                                  "tensor %zu: another param_dtype or grad_dtype than tensor 0's "
                                  "(the parameters, and the gradients, are one buffer of one "
                                  "type)",
                                  i);
        if (d->hessian.buffer)
            return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH, "tensor %zu: a Hessian buffer", i);
        if (d->ndim > CLOPT_MAX_DIMS)
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE, "tensor %zu: ndim > %d", i,
                                  CLOPT_MAX_DIMS);
        if (d->param.buffer != desc->tensors[0].param.buffer ||
            d->grad.buffer != desc->tensors[0].grad.buffer)
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT,
                                  "tensor %zu: params (or grads) in more than one cl_mem", i);
        const size_t n = desc_len(d);
        if (n == 0 || total > (size_t)INT_MAX - n)
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE,
                                  "tensor %zu: a 0 shape, or more than INT_MAX elements in all "
                                  "(MPI counts are int)",
                                  i);
        total += n;
        /* the shape, not only its element count: ranks that passed [7, 30] and [30, 7] would
           cut different rows (GC), factor differently (Adafactor) and save other layouts */
        const size_t nd = d->ndim ? d->ndim : 1;
        MIX(nd);
        for (size_t k = 0; k < nd; k++)
            MIX(d->shape[k]);
    }
    MIX(o ? o->grad_mode : 0);
    MIX(o ? o->reduce_op : 0);
    MIX(o ? o->ordered_sum : 1);
    MIX(o ? o->shard_tensors : 0);
    MIX(ngroups);
    for (size_t gi = 0; gi < ngroups; gi++) {
        const clopt_hparams *hp = &hps[gi];
        MIX(descs[gi].ntensors);
        /* the stream as resolved, where it matters (16-bit θ rounded stochastically) */
        const int sr = opt->pdt != CLOPT_DTYPE_F32 && hp->master == CLOPT_MASTER_NONE &&
                       hp->stochastic_rounding;
        MIX(sr ? opt->gstream[gi] : 0u);
        /* a spot check of the hyperparameters most often set per rank by mistake */
        MIXD(hp->lr);
        MIXD(hp->beta1);
        MIXD(hp->beta2);
        MIXD(hp->beta3);
        MIXD(hp->eps);
        MIXD(hp->weight_decay);
        MIXD(hp->momentum);
        MIXD(hp->alpha);
        MIX(hp->amsgrad);
        MIX(hp->nesterov);
        MIX(hp->maximize);
        MIX(hp->state_dtype);
        MIX(hp->master);
        MIX(hp->stochastic_rounding);
        MIX(hp->lookahead_k);
        MIX(hp->grad_centralization); /* GC moves the shard boundaries between rows */
        MIX(hp->gc_conv_only);
        MIX(hp->cautious);
    }
#undef MIX
#undef MIXD
    opt->total = total;
    *sig = h;
    return CLOPT_SUCCESS;
}

/* ---- the slice and its pieces ------------------------------------------------------------ */

/* Coalesced runs of the flattened vector in one buffer (offsets from off[i]). */
static clopt_mpi_run *make_runs(const clopt_range_group *desc, int grad, size_t *nruns)
{
    clopt_mpi_run *r = malloc(desc->ntensors * sizeof *r);
    size_t k = 0, flat = 0;
    for (size_t i = 0; r && i < desc->ntensors; i++) {
        const clopt_param_desc *d = &desc->tensors[i];
        const size_t off = grad ? d->grad.offset : d->param.offset, n = desc_len(d);
        if (k && r[k - 1].off + r[k - 1].len == off && r[k - 1].flat + r[k - 1].len == flat)
            r[k - 1].len += n;
        else
            r[k++] = (clopt_mpi_run){flat, off, n};
        flat += n;
    }
    *nruns = k;
    return r;
}

static void release(clopt_mpi_optimizer *opt)
{
    clopt_mpi_sums_release(opt);
    clopt_optimizer_destroy(opt->local);
    if (opt->shard_grad)
        clReleaseMemObject(opt->shard_grad);
    if (opt->pbuf)
        clReleaseMemObject(opt->pbuf);
    if (opt->gbuf)
        clReleaseMemObject(opt->gbuf);
    free(opt->counts);
    free(opt->displs);
    free(opt->prun);
    free(opt->grun);
    free(opt->host_p);
    free(opt->host_g);
    free(opt->host_g16);
    free(opt->host_s);
    free(opt->host_recv);
    free(opt->host_recv16);
    free(opt->rs_counts);
    free(opt->agree_all);
    free(opt->shapes);
    free(opt->pieces);
    free(opt->cat);
    free(opt->tgroup);
    free(opt->lgroup);
    free(opt->hps);
    free(opt->gstream);
}

/* The internal optimizer over the slice's pieces, the staging buffers. */
static clopt_status build(clopt_mpi_optimizer *opt, const clopt_hparams *hps)
{
    clopt_range_group catg;
    clopt_range_group_init(&catg);
    catg.tensors = opt->cat;
    catg.ntensors = opt->ncat;
    const clopt_range_group *desc = &catg;
    const clopt_hparams *hp = &hps[0]; /* the internal optimizer's (empty) group 0 */
    const size_t N = (size_t)opt->size;
    opt->counts = malloc(N * sizeof *opt->counts);
    opt->displs = malloc(N * sizeof *opt->displs);
    opt->prun = make_runs(desc, 0, &opt->nprun);
    opt->grun = make_runs(desc, 1, &opt->ngrun);
    opt->host_p = malloc(opt->total * opt->pes);
    opt->host_g = malloc(opt->total * sizeof *opt->host_g);
    opt->agree_all = malloc(N * CLOPT_MPI_AGREE_MAX * sizeof *opt->agree_all);
    if (!opt->agree_all)
        return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "allocating the staging buffers");
    if (opt->ges == 2 && !(opt->host_g16 = malloc(opt->total * sizeof *opt->host_g16)))
        return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "allocating the staging buffers");
    opt->ntensors = desc->ntensors;
    opt->shapes = calloc(desc->ntensors, sizeof *opt->shapes);
    opt->pieces = calloc(desc->ntensors, sizeof *opt->pieces);
    if (!opt->counts || !opt->displs || !opt->prun || !opt->grun || !opt->host_p || !opt->host_g ||
        !opt->shapes || !opt->pieces)
        return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "allocating the staging buffers");
    for (size_t i = 0, flat = 0; i < desc->ntensors; i++) {
        const clopt_param_desc *d = &desc->tensors[i];
        clopt_mpi_shape *t = &opt->shapes[i];
        t->ndim = d->ndim ? d->ndim : 1;
        for (size_t k = 0; k < t->ndim; k++)
            t->shape[k] = d->shape[k];
        t->n = desc_len(d);
        t->flat = flat;
        flat += t->n;
    }
    size_t prev = 0, maxc = 0;
    for (size_t r = 0; r < N; r++) {
        size_t hi = (r + 1) * opt->total / N;
        if (opt->o.shard_tensors && r + 1 < N) { /* the tensor boundary nearest to hi */
            size_t flat = 0, best = 0;
            for (size_t i = 0; i <= desc->ntensors; i++) {
                const size_t d1 = flat > hi ? flat - hi : hi - flat;
                const size_t d0 = best > hi ? best - hi : hi - best;
                if (d1 < d0)
                    best = flat;
                if (i < desc->ntensors)
                    flat += desc_len(&desc->tensors[i]);
            }
            hi = best < prev ? prev : best;
        } else if (r + 1 < N) {
            /* inside a tensor under GC, the row boundary nearest to hi; with 8-bit state, the
               nearest block boundary (a multiple of 256 from the tensor's start: the pieces'
               blocks are the tensor's); both: a multiple of both */
            for (size_t i = 0; i < desc->ntensors; i++) {
                const clopt_mpi_shape *t = &opt->shapes[i];
                const clopt_hparams *gh = &hps[opt->tgroup[i]];
                const size_t rows = clopt_mpi_gc_rows(gh, t);
                size_t unit = rows ? t->n / rows : 1;
                if (gh->state_dtype == CLOPT_DTYPE_U8) {
                    size_t a = unit, b = CLOPT_MPI_Q8_BLOCK;
                    while (b) {
                        const size_t c = a % b;
                        a = b;
                        b = c;
                    }
                    unit = unit / a * CLOPT_MPI_Q8_BLOCK; /* lcm(unit, 256) */
                }
                if (unit == 1 || hi <= t->flat || hi >= t->flat + t->n)
                    continue;
                const size_t k = (hi - t->flat + unit / 2) / unit;
                hi = k * unit < t->n ? t->flat + k * unit : t->flat + t->n;
                break;
            }
            hi = hi < prev ? prev : hi;
        }
        opt->displs[r] = (int)prev;
        opt->counts[r] = (int)(hi - prev);
        maxc = hi - prev > maxc ? hi - prev : maxc;
        prev = hi;
    }
    if (opt->o.ordered_sum && maxc > (size_t)INT_MAX / N)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE,
                              "ordered_sum needs world size x slice <= INT_MAX elements");
    opt->first = (size_t)opt->displs[opt->rank];
    opt->count = (size_t)opt->counts[opt->rank];
    /* held until destroy on every rank and in every mode (the core's range group holds
       them only where it reads them: not a rank without a slice, not g when reduce-scattered
       into clopt's own buffer), as the core holds an engine's registered buffers */
    if (clRetainMemObject(desc->tensors[0].param.buffer) != CL_SUCCESS)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "the parameter buffer is not valid");
    opt->pbuf = desc->tensors[0].param.buffer;
    if (clRetainMemObject(desc->tensors[0].grad.buffer) != CL_SUCCESS)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "the gradient buffer is not valid");
    opt->gbuf = desc->tensors[0].grad.buffer;
    const int rs = opt->o.grad_mode == CLOPT_MPI_GRAD_REDUCE_SCATTER;
    if (rs) {
        opt->host_s = malloc((opt->count ? opt->count : 1) * sizeof *opt->host_s);
        const size_t nr = opt->count ? opt->count * N : 1;
        if (opt->ges == 2) /* received as 16-bit words, widened, then summed */
            opt->host_recv16 = malloc(nr * sizeof *opt->host_recv16);
        opt->host_recv = malloc(nr * sizeof *opt->host_recv);
        if ((opt->rs_counts = malloc(2 * N * sizeof *opt->rs_counts)) != NULL)
            for (size_t r = 0; r < N; r++) {
                opt->rs_counts[r] = (int)opt->count;
                /* used by the ordered sum only, whose size * count <= INT_MAX (above) */
                opt->rs_counts[N + r] = opt->o.ordered_sum ? (int)(r * opt->count) : 0;
            }
        if (!opt->host_s || !opt->host_recv || (opt->ges == 2 && !opt->host_recv16) ||
            !opt->rs_counts)
            return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "allocating the staging buffers");
    }
    clopt_status s = clopt_optimizer_create(opt->ctx, opt->rule, hp, &opt->local);
    if (s != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "clopt_optimizer_create: %s", clopt_status_str(s));
    if (opt->count == 0)
        return CLOPT_SUCCESS; /* this rank owns nothing: no group, no state */
    size_t rep_floats = 0; /* Adafactor's cut tensors: their whole gradients after the slice */
    for (size_t i = 0, f = 0; rs && opt->rule == CLOPT_ADAFACTOR && i < desc->ntensors; i++) {
        const size_t n = desc_len(&desc->tensors[i]);
        if (f < opt->first + opt->count && f + n > opt->first &&
            (f < opt->first || f + n > opt->first + opt->count))
            rep_floats += n;
        f += n;
    }
    if (rs) {
        cl_int e;
        opt->shard_grad = clCreateBuffer(clopt_ctx_cl_context(opt->ctx), CL_MEM_READ_WRITE,
                                         (opt->count + rep_floats) * sizeof(float), NULL, &e);
        if (!opt->shard_grad)
            return clopt_mpi_cl_fail(opt, e, "allocating the shard's gradient");
    }
    /* the pieces: tensor i's part of [first, first + count), as 1-D tensors (whole tensors
       keep their shapes); one internal range group per group with pieces here */
    clopt_param_desc *pieces = calloc(desc->ntensors, sizeof *pieces);
    if (!pieces)
        return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "allocating the pieces");
    size_t np = 0, flat = 0, rep_at = opt->count;
    const size_t a = opt->first, b = opt->first + opt->count;
    for (size_t gi = 0, i = 0; gi < opt->ngroups; gi++) {
        const size_t first_piece = np;
        for (; i < desc->ntensors && opt->tgroup[i] == gi; i++) {
            const clopt_param_desc *d = &desc->tensors[i];
            const size_t n = desc_len(d), lo = flat > a ? flat : a,
                         hi = flat + n < b ? flat + n : b;
            /* Adafactor's statistics need the whole tensor: a cut one is updated whole by
               each of its holders (the same values; the all-gather keeps the owners') */
            const int rep = lo < hi && hi - lo != n && opt->rule == CLOPT_ADAFACTOR;
            if (rep) {
                clopt_mpi_piece *pc = &opt->pieces[np];
                *pc = (clopt_mpi_piece){i, 0, n, lo == flat ? 1 : 2, lo - flat, hi - flat, 0};
                clopt_param_desc *p = &pieces[np++];
                clopt_param_desc_init(p);
                p->param_dtype = opt->pdt; /* a reduced gradient of clopt's is float32 */
                p->grad_dtype = rs ? CLOPT_DTYPE_F32 : opt->gdt;
                p->param = d->param;
                p->grad = d->grad;
                p->ndim = d->ndim;
                memcpy(p->shape, d->shape, sizeof p->shape);
                if (rs) {
                    pc->rep_goff = rep_at;
                    p->grad = (clopt_tensor){opt->shard_grad, rep_at};
                    rep_at += n;
                }
            } else if (lo < hi) {
                opt->pieces[np] = (clopt_mpi_piece){i, lo - flat, hi - lo, 0, 0, 0, 0};
                clopt_param_desc *p = &pieces[np++];
                clopt_param_desc_init(p);
                p->param_dtype = opt->pdt; /* a reduced gradient of clopt's is float32 */
                p->grad_dtype = rs ? CLOPT_DTYPE_F32 : opt->gdt;
                p->param = (clopt_tensor){opt->pbuf, d->param.offset + (lo - flat)};
                p->grad = rs ? (clopt_tensor){opt->shard_grad, lo - a}
                             : (clopt_tensor){opt->gbuf, d->grad.offset + (lo - flat)};
                const clopt_mpi_shape *t = &opt->shapes[i];
                const size_t row = t->ndim > 1 ? n / t->shape[0] : 0;
                if (hi - lo == n) { /* a whole tensor keeps its shape (GC, Adafactor) */
                    p->ndim = d->ndim;
                    memcpy(p->shape, d->shape, sizeof p->shape);
                } else if (row && (lo - flat) % row == 0 && (hi - lo) % row == 0) {
                    /* whole rows: the tensor's shape with fewer rows (GC's row means) */
                    p->ndim = d->ndim;
                    memcpy(p->shape, d->shape, sizeof p->shape);
                    p->shape[0] = (hi - lo) / row;
                } else {
                    p->ndim = 1;
                    p->shape[0] = hi - lo;
                }
            }
            flat += n;
        }
        if (np == first_piece)
            continue; /* no piece of this group here */
        clopt_range_group g;
        clopt_range_group_init(&g);
        g.ntensors = np - first_piece;
        g.tensors = pieces + first_piece;
        g.sr_stream = opt->gstream[gi]; /* the whole group's: pieces draw as unsharded */
        size_t lg = 0;
        s = clopt_optimizer_add_range_group(opt->local, &hps[gi], &g, &lg, NULL);
        if (s != CLOPT_SUCCESS) {
            free(pieces);
            return clopt_mpi_fail(opt, s, "the shard's range group %zu: %s", gi,
                                  clopt_ctx_last_error(opt->ctx));
        }
        opt->lgroup[gi] = (int)lg;
    }
    free(pieces);
    opt->has_group = np > 0;
    opt->npieces = np;
    size_t rep_max = 0; /* reduce-scatter: the gathers of replicated tensors' gradients */
    for (size_t j = 0; rs && j < np; j++)
        if (opt->pieces[j].rep && opt->pieces[j].len > rep_max)
            rep_max = opt->pieces[j].len;
    if (rep_max) {
        opt->rep_cnt = malloc(2 * N * sizeof *opt->rep_cnt);
        opt->rep_host = malloc(rep_max * sizeof *opt->rep_host);
        if (!opt->rep_cnt || !opt->rep_host)
            return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "allocating the staging buffers");
    }
    return CLOPT_SUCCESS;
}

static void copy_why(char *why, size_t why_len, const char *text)
{
    if (why && why_len)
        snprintf(why, why_len, "%s", text);
}

clopt_status clopt_mpi_optimizer_create(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                                        MPI_Comm comm, const clopt_range_group *desc,
                                        const clopt_mpi_options *o, clopt_mpi_optimizer **out,
                                        char *why, size_t why_len)
{
    return clopt_mpi_optimizer_create_groups(ctx, rule, comm, 1, hp, desc, o, out, why, why_len);
}

clopt_status clopt_mpi_optimizer_create_groups(clopt_ctx *ctx, clopt_rule rule, MPI_Comm comm,
                                               size_t ngroups, const clopt_hparams *hps,
                                               const clopt_range_group *descs,
                                               const clopt_mpi_options *o,
                                               clopt_mpi_optimizer **out, char *why, size_t why_len)
{
    copy_why(why, why_len, "");
    if (out)
        *out = NULL;
    if (comm == MPI_COMM_NULL) {
        copy_why(why, why_len, "comm is MPI_COMM_NULL");
        return CLOPT_ERR_INVALID_ARGUMENT;
    }
    clopt_mpi_optimizer *opt = calloc(1, sizeof *opt);
    MPI_Comm dup = MPI_COMM_NULL;
    int rc = MPI_Comm_dup(comm, &dup); /* collective: every rank takes part, even failing ones */
    if (!opt) {
        if (rc == MPI_SUCCESS) {
            /* still agree, so that the other ranks fail too instead of hanging: the status
               and the two values of the others' first agreement (AGREE1_EXTRA below) */
            double mine[1 + AGREE1_EXTRA] = {(double)CLOPT_ERR_OUT_OF_MEMORY};
            int size = 1;
            MPI_Comm_size(dup, &size);
            double *all = malloc((size_t)size * (1 + AGREE1_EXTRA) * sizeof *all);
            if (all)
                MPI_Allgather(mine, 1 + AGREE1_EXTRA, MPI_DOUBLE, all, 1 + AGREE1_EXTRA,
                              MPI_DOUBLE, dup);
            free(all);
            MPI_Comm_free(&dup);
        }
        copy_why(why, why_len, "out of host memory");
        return CLOPT_ERR_OUT_OF_MEMORY;
    }
    if (rc != MPI_SUCCESS) {
        clopt_status s = clopt_mpi_check(opt, rc, "MPI_Comm_dup");
        copy_why(why, why_len, opt->err);
        free(opt);
        return s;
    }
    opt->comm = dup;
    MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
    MPI_Comm_rank(dup, &opt->rank);
    MPI_Comm_size(dup, &opt->size);
    opt->ctx = ctx;
    opt->rule = rule;
    opt->last_norm = NAN;
    opt->gather_max = INT_MAX;
    clopt_mpi_options_init(&opt->o);
    uint64_t sig = 0;
    clopt_status s =
        out ? CLOPT_SUCCESS : clopt_mpi_fail(opt, CLOPT_ERR_NULL_ARGUMENT, "out is NULL");
    if (s == CLOPT_SUCCESS)
        s = check_args(opt, rule, ngroups, hps, descs, o, &sig);
    if (s == CLOPT_SUCCESS && o) {
        opt->o.grad_mode = o->grad_mode;
        opt->o.reduce_op = o->reduce_op;
        opt->o.ordered_sum = o->ordered_sum;
        opt->o.shard_tensors = o->shard_tensors;
    }
    /* agreement 1: arguments valid everywhere and the same signature */
    double *all = malloc((size_t)opt->size * (1 + AGREE1_EXTRA) * sizeof *all);
    if (!all && s == CLOPT_SUCCESS)
        s = clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
    double extra[AGREE1_EXTRA];
    memcpy(&extra[0], &sig, sizeof sig); /* the bits travel as a double, compared bitwise */
    extra[1] = (double)opt->total;
    if (all) {
        s = clopt_mpi_agree(opt, s, extra, AGREE1_EXTRA, all);
        for (int r = 1; s == CLOPT_SUCCESS && r < opt->size; r++)
            if (memcmp(&all[(1 + AGREE1_EXTRA) * (size_t)r + 1], &all[1],
                       AGREE1_EXTRA * sizeof(double)) != 0)
                s = clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_MISMATCH,
                                   "rank %d's rule, shapes, options or hyperparameters differ "
                                   "from rank 0's",
                                   r);
    }
    /* agreement 2: every rank built its shard; 3: the communicators of the cut tensors */
    if (s == CLOPT_SUCCESS && all) {
        s = build(opt, hps);
        s = clopt_mpi_agree(opt, s, NULL, 0, all);
        if (s == CLOPT_SUCCESS) {
            s = clopt_mpi_sums_setup(opt, s);
            s = clopt_mpi_agree(opt, s, NULL, 0, all);
        }
    }
    free(all);
    if (s != CLOPT_SUCCESS) {
        copy_why(why, why_len, opt->err);
        release(opt);
        MPI_Comm_free(&opt->comm);
        free(opt);
        return s;
    }
    *out = opt;
    return CLOPT_SUCCESS;
}

void clopt_mpi_optimizer_destroy(clopt_mpi_optimizer *opt)
{
    if (!opt)
        return;
    release(opt);
    MPI_Comm_free(&opt->comm);
    free(opt);
}

/* ---- settings and queries ----------------------------------------------------------------- */

clopt_status clopt_mpi_optimizer_set_grad_clip(clopt_mpi_optimizer *opt, double max_norm)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    if (!isfinite(max_norm) || max_norm < 0 ||
        (max_norm > 0 && (max_norm < 1.2e-38 || max_norm > 8.5e37)))
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_HYPERPARAM,
                              "max_norm must be 0 or finite in 1.2e-38 .. 8.5e37");
    opt->max_norm = max_norm;
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_optimizer_set_grad_scale(clopt_mpi_optimizer *opt, double scale)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    if (!isfinite(scale) || scale < 0 || (scale > 0 && (scale < 1.2e-38 || scale > 8.5e37)))
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_HYPERPARAM,
                              "scale must be 0 or finite in 1.2e-38 .. 8.5e37");
    opt->scale = scale;
    return CLOPT_SUCCESS;
}

double clopt_mpi_optimizer_last_grad_norm(const clopt_mpi_optimizer *opt)
{
    return opt ? opt->last_norm : NAN;
}

clopt_status clopt_mpi_optimizer_seed(clopt_mpi_optimizer *opt, uint64_t seed)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    const clopt_status s = clopt_optimizer_seed(opt->local, seed);
    return s == CLOPT_SUCCESS ? s : clopt_mpi_fail(opt, s, "%s", clopt_ctx_last_error(opt->ctx));
}

/* The core's own checks of hp beyond clopt_hparams_validate (8-bit state only for the rules
   and variants that have it, Adafactor's float32 state, ...), judged on the internal
   optimizer's group 0: every rank has it and it holds no tensors, so the verdict does not
   depend on the pieces a rank holds. Group 0's hyperparameters (hps[0], which the core
   accepted) are put back at once. The core exports no predicate of its own for this. */
static clopt_status check_core_hparams(clopt_mpi_optimizer *opt, const clopt_hparams *hp)
{
    clopt_status s = clopt_optimizer_set_group_hparams(opt->local, 0, hp);
    if (s != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "%s", clopt_ctx_last_error(opt->ctx));
    if ((s = clopt_optimizer_set_group_hparams(opt->local, 0, &opt->hps[0])) != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "restoring group 0's hyperparameters: %s",
                              clopt_ctx_last_error(opt->ctx));
    return CLOPT_SUCCESS;
}

/* hp for group `group` as every rank judges it, whatever pieces it holds: valid for the rule,
   the core and the shards (GC rows), and the same state layout as the group's (its storage,
   the rule's states under hp, Lookahead's slow weights). A rank that holds none of the group
   would otherwise take a change its internal optimizer cannot see, while the ranks holding
   pieces of it refuse. */
static clopt_status check_group_hparams(clopt_mpi_optimizer *opt, size_t group,
                                        const clopt_hparams *hp)
{
    if (group >= opt->ngroups)
        return clopt_mpi_fail(opt, CLOPT_ERR_INDEX, "no group %zu", group);
    clopt_status s = check_rule(opt, opt->rule, hp, opt->o.shard_tensors);
    if (s == CLOPT_SUCCESS)
        s = check_core_hparams(opt, hp);
    if (s == CLOPT_SUCCESS && !opt->o.shard_tensors)
        s = check_gc_rows(opt, group, hp);
    if (s != CLOPT_SUCCESS)
        return s;
    const clopt_hparams *was = &opt->hps[group];
    const size_t ns = clopt_rule_state_count(opt->rule, hp);
    int same = hp->state_dtype == was->state_dtype && hp->master == was->master &&
               (hp->lookahead_k > 0) == (was->lookahead_k > 0) &&
               ns == clopt_rule_state_count(opt->rule, was);
    for (size_t k = 0; same && k < ns; k++)
        same = !strcmp(clopt_rule_state_name(opt->rule, hp, k),
                       clopt_rule_state_name(opt->rule, was, k));
    if (!same)
        return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                              "group %zu: these hyperparameters change the state layout (the "
                              "state's storage, the rule's states and Lookahead are fixed at "
                              "create)",
                              group);
    return CLOPT_SUCCESS;
}

/* hp into group `group` (check_group_hparams passed): its range group in the internal
   optimizer, and group 0 of the internal optimizer (empty) for group 0, as
   get_group_hparams reads it there when this rank holds none of it. */
static clopt_status apply_group_hparams(clopt_mpi_optimizer *opt, size_t group,
                                        const clopt_hparams *hp)
{
    clopt_status s;
    if (opt->lgroup[group] >= 0 &&
        (s = clopt_optimizer_set_group_hparams(opt->local, (size_t)opt->lgroup[group], hp)) !=
            CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "%s", clopt_ctx_last_error(opt->ctx));
    if (group == 0 && (s = clopt_optimizer_set_group_hparams(opt->local, 0, hp)) != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "%s", clopt_ctx_last_error(opt->ctx));
    opt->hps[group] = *hp;
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_optimizer_set_group_hparams(clopt_mpi_optimizer *opt, size_t group,
                                                   const clopt_hparams *hp)
{
    if (!opt || !hp)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    const clopt_status s = check_group_hparams(opt, group, hp);
    return s != CLOPT_SUCCESS ? s : apply_group_hparams(opt, group, hp);
}

/* Every group checked before any changes: a refusal leaves them all as they were. */
clopt_status clopt_mpi_optimizer_set_hparams(clopt_mpi_optimizer *opt, const clopt_hparams *hp)
{
    if (!opt || !hp)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    clopt_status s = CLOPT_SUCCESS;
    for (size_t g = 0; s == CLOPT_SUCCESS && g < opt->ngroups; g++)
        s = check_group_hparams(opt, g, hp);
    for (size_t g = 0; s == CLOPT_SUCCESS && g < opt->ngroups; g++)
        s = apply_group_hparams(opt, g, hp);
    return s;
}

clopt_status clopt_mpi_optimizer_get_group_hparams(const clopt_mpi_optimizer *opt, size_t group,
                                                   clopt_hparams *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (group >= opt->ngroups)
        return CLOPT_ERR_INDEX;
    *out = opt->hps[group];
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_optimizer_get_hparams(const clopt_mpi_optimizer *opt, clopt_hparams *out)
{
    return clopt_mpi_optimizer_get_group_hparams(opt, 0, out);
}

clopt_status clopt_mpi_optimizer_set_schedule(clopt_mpi_optimizer *opt, const clopt_schedule *sc)
{
    if (!opt || !sc)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    const char *why = NULL;
    clopt_status s = clopt_schedule_validate(sc, &why);
    if (s != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "schedule: %s", why ? why : "invalid");
    for (size_t g = 0; s == CLOPT_SUCCESS && g < opt->ngroups; g++)
        if (opt->lgroup[g] >= 0)
            s = clopt_optimizer_set_group_schedule(opt->local, (size_t)opt->lgroup[g], sc);
    if (s == CLOPT_SUCCESS)
        s = clopt_optimizer_set_group_schedule(opt->local, 0, sc);
    if (s != CLOPT_SUCCESS)
        return clopt_mpi_fail(opt, s, "%s", clopt_ctx_last_error(opt->ctx));
    return CLOPT_SUCCESS;
}

uint64_t clopt_mpi_optimizer_step_count(const clopt_mpi_optimizer *opt)
{
    return opt ? opt->steps : 0;
}

int clopt_mpi_optimizer_rank(const clopt_mpi_optimizer *opt)
{
    return opt ? opt->rank : 0;
}

int clopt_mpi_optimizer_world_size(const clopt_mpi_optimizer *opt)
{
    return opt ? opt->size : 0;
}

clopt_status clopt_mpi_optimizer_shard(const clopt_mpi_optimizer *opt, size_t *first, size_t *count,
                                       size_t *total)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (first)
        *first = opt->first;
    if (count)
        *count = opt->count;
    if (total)
        *total = opt->total;
    return CLOPT_SUCCESS;
}

size_t clopt_mpi_optimizer_state_bytes(const clopt_mpi_optimizer *opt)
{
    return opt ? clopt_optimizer_state_bytes(opt->local) : 0;
}

clopt_status clopt_mpi_optimizer_last_timing(const clopt_mpi_optimizer *opt,
                                             clopt_mpi_step_timing *out)
{
    if (!opt || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    *out = opt->timing;
    return CLOPT_SUCCESS;
}

clopt_optimizer *clopt_mpi_optimizer_local(clopt_mpi_optimizer *opt)
{
    return opt ? opt->local : NULL;
}

const char *clopt_mpi_optimizer_last_error(const clopt_mpi_optimizer *opt)
{
    return opt ? opt->err : "";
}
