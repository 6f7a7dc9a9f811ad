/* SPDX-License-Identifier: MIT */
/* Checkpoints, reading (format: checkpoint.c's header and docs/checkpoint-format.md): one
 * parser for versions 1 to 4, for both clopt_optimizer_load and clopt_optimizer_load_from.
 * It reads and checks everything (CRC first, then every field, value and shape against the
 * optimizer) before it changes anything. Loading a file opens it without blocking, requires
 * a regular file and reads at most the largest size a checkpoint of the optimizer can have. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint_format.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- reading ------------------------------------------------------------------------------ */

typedef struct rbuf {
    const unsigned char *p;
    size_t len, pos;
    int bad;
} rbuf;

static const unsigned char *r_bytes(rbuf *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static uint32_t r_u32(rbuf *r)
{
    const unsigned char *b = r_bytes(r, 4);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24
             : 0;
}

static uint64_t r_u64(rbuf *r)
{
    uint64_t lo = r_u32(r);
    return lo | (uint64_t)r_u32(r) << 32;
}

static double r_f64(rbuf *r)
{
    uint64_t v = r_u64(r);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

/* n floats: their place in the bytes (NULL when they run past the section). */
/* n elements of es bytes. */
static const unsigned char *r_elems(rbuf *r, uint64_t n, size_t es)
{
    if (n > (r->len - r->pos) / es) {
        r->bad = 1;
        return NULL;
    }
    return r_bytes(r, (size_t)n * es);
}

/* Opens the next section, which must carry `tag`; the reader is limited to its payload. */
static int r_section(rbuf *r, uint32_t tag, rbuf *sec)
{
    uint32_t t = r_u32(r);
    uint32_t zero = r_u32(r);
    uint64_t len = r_u64(r);
    if (r->bad || t != tag || zero != 0 || len > r->len - r->pos) {
        r->bad = 1;
        return 0;
    }
    *sec = (rbuf){r->p + r->pos, (size_t)len, 0, 0};
    r->pos += (size_t)len;
    return 1;
}

static void r_hparams(rbuf *r, clopt_hparams *hp, uint32_t version)
{
    memset(hp, 0, sizeof *hp);
#define R_D(f) hp->f = r_f64(r);
#define R_I(f) hp->f = r_u32(r);
    CKP_DOUBLES(R_D)
    CKP_INTS(R_I)
    if (version >= 3) {
        CKP_INTS_V3(R_I)
    }
    if (version >= 4) {
        CKP_DOUBLES_V4(R_D)
        CKP_INTS_V4(R_I)
    } else {
        hp->weight_lr_power = 2.0;
        hp->clip_exponent = 0.25;
        hp->ns_steps = 5;
    }
#undef R_D
#undef R_I
}

static void r_schedule(rbuf *r, clopt_schedule *s)
{
    memset(s, 0, sizeof *s);
    uint32_t n = r_u32(r);
    if (n > CLOPT_MAX_STAGES) {
        r->bad = 1;
        return;
    }
    s->nstages = n;
    for (size_t i = 0; i < n; i++) {
        clopt_schedule_stage *st = &s->stage[i];
        st->kind = (clopt_schedule_kind)r_u32(r);
        st->start = r_u64(r);
        st->total_steps = r_u64(r);
        st->step_size = r_u64(r);
        st->gamma = r_f64(r);
        st->factor = r_f64(r);
        st->eta_min = r_f64(r);
        st->t_mult = r_f64(r);
    }
}

typedef struct loaded_group {
    clopt_hparams hp;
    clopt_schedule sched;
    double mu_product; /* version 1 only */
} loaded_group;

typedef struct loaded_tensor {
    uint64_t step;
    double mu_product;
    double sf_lr_max, sf_weight_sum;
    int slow_ready, master_ready;
    const unsigned char *state[CLOPT_OPT_MAX_STATE]; /* NULL: not in the bytes */
    const unsigned char *params;                     /* NULL: not in the bytes */
} loaded_tensor;

/* Everything a checkpoint holds, checked, with pointers into the bytes for the tensors. */
typedef struct loaded {
    uint32_t version;
    uint64_t step;
    double max_grad_norm, last_grad_norm, grad_scale;
    uint32_t found_inf;
    uint64_t rng_seed, rng_counter;
    int state_tensors, check_finite, eval_mode;
    loaded_group *groups;
    loaded_tensor *tensors;
} loaded;

static clopt_status format_error(clopt_ctx *ctx, const char *src, const char *what)
{
    return clopt_fail(ctx, CLOPT_ERR_FORMAT, "%s: %s", src, what);
}

/* A step count's NAdam product is possible: in [0, 1] (0 once it underflowed, as torch's),
   and 1 at step 0. Every other rule keeps 1. */
static int mu_possible(clopt_rule rule, uint64_t step, double mu)
{
    if (rule != CLOPT_NADAM)
        return mu == 1;
    return isfinite(mu) && mu >= 0 && mu <= 1 && (step > 0 || mu == 1);
}

/* A clipping norm or loss scale: 0 (off), or FLT_MIN .. CLOPT_MAX_FACTOR (2^126), as
   clopt_optimizer_set_grad_clip and clopt_optimizer_set_grad_scale accept (the kernels take
   max_norm and 1/scale as floats: a subnormal scale made θ NaN, a subnormal max_norm failed
   every step). */
static int factor_possible(double x)
{
    return x == 0 || (x >= FLT_MIN && x <= CLOPT_MAX_FACTOR);
}

static clopt_status parse_optm(clopt_optimizer *opt, rbuf *r, uint32_t nsections,
                               const char *src, loaded *L)
{
    clopt_ctx *ctx = opt->ctx;
    rbuf sec;
    if (!r_section(r, TAG_OPTM, &sec))
        return format_error(ctx, src, "missing optimizer section");
    uint32_t rule = r_u32(&sec), ngroups = r_u32(&sec);
    uint64_t nparams = r_u64(&sec);
    L->step = r_u64(&sec);
    L->max_grad_norm = r_f64(&sec);
    L->last_grad_norm = r_f64(&sec);
    L->grad_scale = r_f64(&sec);
    L->found_inf = r_u32(&sec);
    L->rng_seed = r_u64(&sec);
    L->rng_counter = r_u64(&sec);
    uint32_t flags = L->version >= 2 ? r_u32(&sec) : OPTM_STATE_TENSORS;
    if (sec.bad || sec.pos != sec.len)
        return format_error(ctx, src, "malformed optimizer section");
    if (nsections != 1 + (uint64_t)ngroups + nparams)
        return format_error(ctx, src, "the section count does not match the optimizer section");
    if (rule != (uint32_t)opt->rule || ngroups != opt->ngroups || nparams != opt->nparams) {
        const char *name = clopt_rule_name((clopt_rule)rule);
        return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                          "%s holds %s with %u groups and %llu tensors; this optimizer is %s "
                          "with %zu groups and %zu tensors",
                          src, name ? name : "an unknown rule", ngroups,
                          (unsigned long long)nparams, clopt_rule_name(opt->rule), opt->ngroups,
                          opt->nparams);
    }
    if (!factor_possible(L->max_grad_norm) || !factor_possible(L->grad_scale))
        return format_error(ctx, src, "invalid clipping or loss-scale setting");
    if (L->step > CKP_MAX_STEP)
        return format_error(ctx, src, "impossible step count (above 2^53 - 64)");
    /* the last norm is NaN before any clipped step (and after a step with an Inf or NaN) */
    if (!(isnan(L->last_grad_norm) || L->last_grad_norm >= 0) || L->found_inf > 1)
        return format_error(ctx, src, "invalid last gradient norm or found_inf flag");
    if (flags & ~(uint32_t)OPTM_KNOWN)
        return format_error(ctx, src, "unknown optimizer flags");
    L->state_tensors = (flags & OPTM_STATE_TENSORS) != 0;
    L->check_finite = (flags & OPTM_CHECK_FINITE) != 0;
    L->eval_mode = (flags & OPTM_EVAL_MODE) != 0;
    if (L->eval_mode && (L->version < 4 || !clopt_rule_is_sf(opt->rule)))
        return format_error(ctx, src, "eval mode for a rule without one");
    return CLOPT_SUCCESS;
}

/* Settings an earlier library took and this one refuses, as they behaved there: Adafactor's
   flags as truth values (warmup_init without relative_step was ignored), a constant stage
   of 0 steps as no factor (1 from step 0: the same stage of 1 step with factor 1). */
static void legacy_settings(clopt_rule rule, clopt_hparams *hp, clopt_schedule *s)
{
    if (rule == CLOPT_ADAFACTOR) {
        hp->relative_step = hp->relative_step != 0;
        hp->warmup_init = hp->relative_step && hp->warmup_init != 0;
    }
    for (size_t i = 0; i < s->nstages && i < CLOPT_MAX_STAGES; i++)
        if (s->stage[i].kind == CLOPT_SCHED_CONSTANT && s->stage[i].total_steps == 0) {
            s->stage[i].total_steps = 1;
            s->stage[i].factor = 1.0;
        }
}

static clopt_status parse_group(clopt_optimizer *opt, rbuf *r, size_t gi, const char *src,
                                loaded *L)
{
    clopt_ctx *ctx = opt->ctx;
    loaded_group *lg = &L->groups[gi];
    const clopt_group *g = &opt->groups[gi];
    rbuf sec;
    if (!r_section(r, TAG_GRUP, &sec))
        return format_error(ctx, src, "missing group section");
    r_hparams(&sec, &lg->hp, L->version);
    r_schedule(&sec, &lg->sched);
    lg->mu_product = L->version == 1 ? r_f64(&sec) : 1.0;
    uint32_t arena = r_u32(&sec);
    uint64_t count = r_u64(&sec);
    if (sec.bad || sec.pos != sec.len)
        return format_error(ctx, src, "malformed group section");
    legacy_settings(opt->rule, &lg->hp, &lg->sched);
    /* the checks clopt_optimizer_set_group_hparams makes (8-bit state only where a rule has
       it, ...): a setting the API refuses does not come in through a file either */
    if (clopt_o_check_hparams(ctx, opt->rule, &lg->hp) != CLOPT_SUCCESS ||
        clopt_schedule_validate(&lg->sched, NULL) != CLOPT_SUCCESS ||
        !mu_possible(opt->rule, L->step, lg->mu_product))
        return format_error(ctx, src, "invalid hyperparameters, schedule or NAdam product in a group");
    if (arena != (uint32_t)g->arena || count != g->count)
        return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH, "%s: group %zu is stored differently",
                          src, gi);
    return CLOPT_SUCCESS;
}

static clopt_status parse_tensor(clopt_optimizer *opt, rbuf *r, size_t i, const char *src,
                                 loaded *L)
{
    clopt_ctx *ctx = opt->ctx;
    const clopt_param *e = &opt->params[i];
    loaded_tensor *lt = &L->tensors[i];
    rbuf sec;
    if (!r_section(r, TAG_TENS, &sec))
        return format_error(ctx, src, "missing tensor section");
    uint64_t group = r_u64(&sec);
    uint32_t ndim = r_u32(&sec);
    int same = group == e->group && ndim == e->ndim;
    for (size_t d = 0; d < ndim && d < CLOPT_MAX_DIMS; d++)
        same = r_u64(&sec) == e->shape[d] && same;
    uint32_t flags = 0;
    if (L->version >= 2)
        flags = r_u32(&sec);
    if (L->version >= 3) { /* the storage types: a file of other types does not load */
        const uint32_t pt = r_u32(&sec), gt = r_u32(&sec);
        same = same && pt == (uint32_t)e->pdtype && gt == (uint32_t)e->gdtype;
    } else {
        same = same && e->pdtype == CLOPT_DTYPE_F32 && e->gdtype == CLOPT_DTYPE_F32;
    }
    if (L->version >= 2) {
        lt->step = r_u64(&sec);
        lt->mu_product = r_f64(&sec);
        if (L->version >= 4) {
            lt->sf_lr_max = r_f64(&sec);
            lt->sf_weight_sum = r_f64(&sec);
        }
        lt->slow_ready = (flags & TENS_SLOW_READY) != 0;
        lt->master_ready = (flags & TENS_MASTER_READY) != 0;
    } else { /* version 1: one count for everything, one product per group */
        lt->step = L->step;
        lt->mu_product = L->groups[e->group].mu_product;
        lt->slow_ready = 1; /* the slow weights, if any, come from the file */
    }
    uint32_t nstate = r_u32(&sec);
    same = same && ndim <= CLOPT_MAX_DIMS && nstate == e->nstate;
    /* The layout the loaded hyperparameters give must be the one allocated here. */
    clopt_param other = *e;
    clopt_group lg = opt->groups[e->group];
    lg.hp = L->groups[e->group].hp;
    clopt_state_layout(opt, &lg, &other);
    same = same && other.nstate == e->nstate;
    for (size_t k = 0; same && k < nstate; k++) {
        uint32_t nl = r_u32(&sec);
        const unsigned char *name = r_bytes(&sec, nl);
        uint64_t slen = r_u64(&sec);
        const uint32_t dt = L->version >= 3 ? r_u32(&sec) : (uint32_t)CLOPT_DTYPE_F32;
        same = same && dt == (uint32_t)e->state_dtype[k];
        same = same && name && nl == strlen(e->state_name[k]) &&
               memcmp(name, e->state_name[k], nl) == 0 && slen == e->state_len[k] &&
               strcmp(other.state_name[k], e->state_name[k]) == 0 &&
               other.state_len[k] == e->state_len[k] && other.state_dtype[k] == e->state_dtype[k];
        lt->state[k] = NULL;
        if (same && L->state_tensors)
            lt->state[k] = r_elems(&sec, slen, clopt_state_esize(e, k));
    }
    lt->params = NULL;
    if (same && (flags & TENS_PARAMS)) {
        uint64_t n = r_u64(&sec);
        same = n == e->n;
        if (same)
            lt->params = r_elems(&sec, n, clopt_dtype_size(e->pdtype));
    }
    if (sec.bad)
        return format_error(ctx, src, "malformed tensor section");
    if (!same)
        return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                          "%s: tensor %zu has another shape, group or state layout", src, i);
    if (sec.pos != sec.len)
        return format_error(ctx, src, "malformed tensor section");
    if (flags & ~(uint32_t)TENS_KNOWN)
        return format_error(ctx, src, "unknown tensor flags");
    if ((flags & TENS_MASTER_READY) && e->master != CLOPT_MASTER_F32)
        return format_error(ctx, src, "a ready master for a tensor without an fp32 master");
    if ((flags & TENS_PARAMS) && !opt->groups[e->group].arena)
        return format_error(ctx, src, "parameters of a tensor the engine owns");
    /* A tensor steps with the optimizer or not at all, and an arena's tensors together. */
    if (lt->step > L->step || !mu_possible(opt->rule, lt->step, lt->mu_product))
        return format_error(ctx, src, "impossible step count or NAdam product of a tensor");
    if (!(isfinite(lt->sf_lr_max) && lt->sf_lr_max >= 0 && isfinite(lt->sf_weight_sum) &&
          lt->sf_weight_sum >= 0) ||
        (!clopt_rule_is_sf(opt->rule) && (lt->sf_lr_max != 0 || lt->sf_weight_sum != 0)))
        return format_error(ctx, src, "impossible Schedule-Free scalars of a tensor");
    const clopt_group *g = &opt->groups[e->group];
    /* an arena or range group's tensors were added together and step together (a fused
       launch takes the first one's count); the file's layout does not say which groups are
       range groups, so a plain group's bytes with tensors added at different steps were
       taken by a range group of the same shapes (its tensors are consecutive: each is
       compared with the one before it) */
    if (g->ranges && i > 0 && opt->params[i - 1].group == e->group &&
        (lt->step != L->tensors[i - 1].step || lt->mu_product != L->tensors[i - 1].mu_product))
        return clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                          "%s: the tensors of group %zu differ in their step counts (a group "
                          "whose tensors were added at different steps), here a range group",
                          src, (size_t)e->group);
    if (g->arena && i > g->first) {
        const loaded_tensor *first = &L->tensors[g->first];
        if (lt->step != first->step || lt->mu_product != first->mu_product ||
            (!clopt_rule_is_multipass(opt->rule) && (lt->master_ready != first->master_ready ||
                                                     lt->slow_ready != first->slow_ready)))
            return format_error(ctx, src, "the tensors of an arena group differ in their steps");
    }
    return CLOPT_SUCCESS;
}

/* n little-endian elements of es bytes from the bytes into a device tensor (blocking). */
static clopt_status write_elems(clopt_ctx *ctx, clopt_tensor t, const unsigned char *p,
                                size_t n, size_t es)
{
    const void *src = p;
    unsigned char *copy = NULL;
    if (!host_little_endian()) {
        copy = malloc(n * es);
        if (!copy)
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "loading a checkpoint");
        memcpy(copy, p, n * es);
        (es == 2 ? swap_u16 : swap_floats)(copy, n);
        src = copy;
    }
    cl_int err = clEnqueueWriteBuffer(ctx->queue, t.buffer, CL_TRUE, t.offset * es, n * es,
                                      src, 0, NULL, NULL);
    free(copy);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "writing loaded state");
}

/* Parses and checks data[0 .. len) completely, then applies it. src names the bytes in
   error messages. */
static clopt_status load_bytes(clopt_optimizer *opt, const unsigned char *data, size_t len,
                               const char *src)
{
    clopt_ctx *ctx = opt->ctx;
    /* Integrity first: magic, CRC over everything before the trailer, version. */
    if (len < 8 + 4 + 4 + 4 || memcmp(data, CKP_MAGIC, 8) != 0)
        return format_error(ctx, src, "not a clopt checkpoint (bad magic or too short)");
    uint32_t stored = (uint32_t)data[len - 4] | (uint32_t)data[len - 3] << 8 |
                      (uint32_t)data[len - 2] << 16 | (uint32_t)data[len - 1] << 24;
    if (clopt_crc32c(data, len - 4) != stored)
        return format_error(ctx, src, "checksum mismatch (truncated or corrupted)");
    rbuf r = {data, len - 4, 8, 0};
    loaded L;
    memset(&L, 0, sizeof L);
    L.version = r_u32(&r);
    if (L.version < 1 || L.version > CKP_VERSION)
        return clopt_fail(ctx, CLOPT_ERR_FORMAT,
                          "%s: format version %u, this library reads 1 to %u", src, L.version,
                          CKP_VERSION);
    uint32_t nsections = r_u32(&r);
    clopt_status s = parse_optm(opt, &r, nsections, src, &L);
    if (s != CLOPT_SUCCESS)
        return s;
    L.groups = calloc(opt->ngroups ? opt->ngroups : 1, sizeof *L.groups);
    L.tensors = calloc(opt->nparams ? opt->nparams : 1, sizeof *L.tensors);
    if (!L.groups || !L.tensors) {
        s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "loading %s", src);
        goto done;
    }
    for (size_t gi = 0; gi < opt->ngroups && s == CLOPT_SUCCESS; gi++)
        s = parse_group(opt, &r, gi, src, &L);
    for (size_t i = 0; i < opt->nparams && s == CLOPT_SUCCESS; i++)
        s = parse_tensor(opt, &r, i, src, &L);
    if (s == CLOPT_SUCCESS && r.pos != r.len)
        s = format_error(ctx, src, "trailing bytes after the last section");
    /* Everything checked: wait for the steps in flight, then apply. Only an OpenCL failure
       can stop this half-way. */
    if (s == CLOPT_SUCCESS)
        s = clopt_opt_settle(opt);
    for (size_t i = 0; i < opt->nparams && s == CLOPT_SUCCESS; i++) {
        const clopt_param *e = &opt->params[i];
        const loaded_tensor *lt = &L.tensors[i];
        for (size_t k = 0; k < e->nstate && s == CLOPT_SUCCESS; k++)
            if (lt->state[k])
                s = write_elems(ctx, e->state[k], lt->state[k], e->state_len[k],
                                clopt_state_esize(e, k));
        if (s == CLOPT_SUCCESS && lt->params)
            s = write_elems(ctx, e->param, lt->params, e->n, clopt_dtype_size(e->pdtype));
    }
    if (s != CLOPT_SUCCESS)
        goto done;
    for (size_t gi = 0; gi < opt->ngroups; gi++) {
        opt->groups[gi].hp = L.groups[gi].hp;
        opt->groups[gi].sched = L.groups[gi].sched;
    }
    for (size_t i = 0; i < opt->nparams; i++) {
        clopt_param *e = &opt->params[i];
        e->step = L.tensors[i].step;
        e->mu_product = L.tensors[i].mu_product;
        e->sf_lr_max = L.tensors[i].sf_lr_max;
        e->sf_weight_sum = L.tensors[i].sf_weight_sum;
        /* Readiness belongs to the slow weights: without the state tensors it stays as it
           is (clopt_optimizer_write_state sets it when the engine restores them). */
        if (L.state_tensors) {
            e->slow_ready = L.tensors[i].slow_ready;
            e->master_ready = L.tensors[i].master_ready;
        }
    }
    opt->step = L.step;
    opt->max_grad_norm = L.max_grad_norm;
    opt->last_grad_norm = L.last_grad_norm;
    opt->grad_scale = L.grad_scale;
    opt->found_inf = (int)L.found_inf;
    opt->check_finite = L.check_finite;
    opt->eval_mode = L.eval_mode;
    for (size_t i = 0; i < opt->nparams; i++) /* the file's mode is every tensor's */
        opt->params[i].sf_switched = 0;
    opt->rng_seed = L.rng_seed;
    opt->rng_counter = L.rng_counter;
done:
    free(L.groups);
    free(L.tensors);
    return s;
}

/* The largest checkpoint this optimizer can load: its own with every option on, plus per
   group a full schedule and a version-1 μ product (the stages are the file's; the state
   layout, names and shapes must be the optimizer's). Counts only, no device access. */
static size_t max_load_size(const clopt_optimizer *opt)
{
    const size_t own = clopt_ckp_full_size(opt);
    size_t slack = CKP_GROUP_SLACK;
    if (opt->ngroups > (SIZE_MAX - own) / slack)
        return SIZE_MAX;
    return own + opt->ngroups * slack;
}

clopt_status clopt_optimizer_load_from(clopt_optimizer *opt, const void *buf, size_t len)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!buf)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "buf is NULL");
    size_t max = max_load_size(opt);
    if (len > max)
        return clopt_fail(ctx, CLOPT_ERR_FORMAT,
                          "checkpoint bytes: %zu bytes, more than any checkpoint of this "
                          "optimizer (at most %zu)", len, max);
    return load_bytes(opt, buf, len, "checkpoint bytes");
}

clopt_status clopt_optimizer_load(clopt_optimizer *opt, const char *path)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!path)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "path is NULL");
    char why[256];
    /* Non-blocking: a FIFO or device opens at once and is refused by its type. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return clopt_fail(ctx, CLOPT_ERR_IO, "cannot open %s: %s", path,
                          clopt_errno_text(errno, why, sizeof why));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return clopt_fail(ctx, CLOPT_ERR_IO, "cannot stat %s: %s", path,
                          clopt_errno_text(e, why, sizeof why));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return clopt_fail(ctx, CLOPT_ERR_IO, "%s is not a regular file", path);
    }
    const size_t max = max_load_size(opt);
    if (st.st_size < 0 || (uintmax_t)st.st_size > (uintmax_t)max) {
        close(fd);
        return clopt_fail(ctx, CLOPT_ERR_FORMAT,
                          "%s: %jd bytes, more than any checkpoint of this optimizer (at most "
                          "%zu)", path, (intmax_t)st.st_size, max);
    }
    /* Read at most max + 1 bytes whatever the file does meanwhile (one byte more tells
       that it grew past the bound). */
    size_t cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + (max < SIZE_MAX);
    unsigned char *data = malloc(cap ? cap : 1);
    if (!data) {
        close(fd);
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "reading %s", path);
    }
    size_t len = 0;
    int err = 0;
    while (len < cap) {
        ssize_t n = read(fd, data + len, cap - len);
        if (n > 0)
            len += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else {
            err = n < 0 ? errno : 0;
            break;
        }
    }
    close(fd);
    clopt_status s;
    if (err)
        s = clopt_fail(ctx, CLOPT_ERR_IO, "reading %s failed: %s", path,
                       clopt_errno_text(err, why, sizeof why));
    else if (len > max)
        s = clopt_fail(ctx, CLOPT_ERR_FORMAT,
                       "%s grew past any checkpoint of this optimizer (at most %zu bytes)",
                       path, max);
    else
        s = load_bytes(opt, data, len, path);
    free(data);
    return s;
}
