/* SPDX-License-Identifier: MIT */
/* Checkpoints: the complete optimizer state as versioned little-endian bytes with a CRC-32C
 * (Castagnoli) trailer, in a file or in the caller's memory. The format is documented in
 * docs/checkpoint-format.md.
 *
 *   "CLOPTCKP" | u32 version | u32 section count | sections | u32 CRC-32C of all before it
 *   section:   u32 tag | u32 0 | u64 payload length | payload
 *   tags:      1 OPTM (once), 2 GRUP (per group, in order), 3 TENS (per tensor, in order)
 *
 * One builder writes version 4 for both the file (clopt_optimizer_save) and the bytes
 * (clopt_optimizer_save_to); it runs twice, once only counting (clopt_optimizer_state_size,
 * no device access) and once writing. One parser reads versions 1 to 4 for both
 * clopt_optimizer_load and clopt_optimizer_load_from: it reads and checks everything (CRC
 * first, then every field, value and shape against the optimizer) before it changes
 * anything. Saving to a file writes a new file "<path>.<random>.tmp" (created exclusively,
 * never through a symlink, mode 0600), syncs it and renames it over the path. Loading a file
 * opens it without blocking, requires a regular file and reads at most the largest size a
 * checkpoint of the optimizer can have.
 * (The state tensors one by one, for engines with their own container: state_access.c.) */
#define _POSIX_C_SOURCE 200809L
#include "optimizer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* The largest step count a checkpoint may hold: 2^53 - 64. Every step the optimizer computes
   from it (the count + 1 + d for the CLOPT_MAX_IN_FLIGHT = 32 steps in flight) is then an
   integer below 2^53, exact and distinct as the double that the bias corrections, schedules
   and Adafactor's t^decay_rate are computed from. 2^64 - 1 wrapped the next step to 0. */
#define CKP_MAX_STEP ((UINT64_C(1) << 53) - 64)
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

uint32_t clopt_crc32c(const void *data, size_t n)
{
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    const unsigned char *p = data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* float32 values are stored as little-endian bit patterns: on a little-endian host they are
   copied between the device and the bytes as they are, otherwise swapped in place. */
static int host_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void swap_u16(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 2) {
        unsigned char t = p[0];
        p[0] = p[1], p[1] = t;
    }
}

static void swap_floats(unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char t = p[0];
        p[0] = p[3], p[3] = t;
        t = p[1], p[1] = p[2], p[2] = t;
    }
}

/* Lookahead's slow weights are θ until the tensor's first step copies them (as
   clopt_optimizer_read_state); every other state is its own tensor. */
static clopt_tensor state_source(const clopt_param *e, size_t k)
{
    return clopt_is_slow(e, k) && !e->slow_ready ? e->param : e->state[k];
}

/* ---- options ------------------------------------------------------------------------------ */

void clopt_save_options_init(clopt_save_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->state_tensors = 1;
    o->arena_params = 1;
}

typedef struct ckp_options {
    int state_tensors, arena_params;
} ckp_options;

/* A field the caller's struct_size covers. */
#define KNOWS(o, field)                                                                      \
    ((o)->struct_size >= offsetof(clopt_save_options, field) + sizeof((o)->field))

static clopt_status take_options(clopt_ctx *ctx, const clopt_save_options *o, ckp_options *out)
{
    out->state_tensors = 1;
    out->arena_params = 1;
    if (!o)
        return CLOPT_SUCCESS;
    if (o->struct_size < sizeof o->struct_size)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "save options: struct_size %zu (use clopt_save_options_init)",
                          o->struct_size);
    /* A newer caller's fields this library does not know must be left at 0. */
    if (o->struct_size > sizeof *o) {
        const unsigned char *extra = (const unsigned char *)o + sizeof *o;
        for (size_t i = 0; i < o->struct_size - sizeof *o; i++)
            if (extra[i])
                return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                                  "save options: a field past byte %zu is set; this library "
                                  "knows %zu bytes",
                                  sizeof *o + i, sizeof *o);
    }
    if (KNOWS(o, state_tensors))
        out->state_tensors = o->state_tensors;
    if (KNOWS(o, arena_params))
        out->arena_params = o->arena_params;
    if ((out->state_tensors != 0 && out->state_tensors != 1) ||
        (out->arena_params != 0 && out->arena_params != 1))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "save options: state_tensors and arena_params must be 0 or 1");
    return CLOPT_SUCCESS;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* data NULL: only count. Otherwise write into data[0 .. cap). */
typedef struct wbuf {
    unsigned char *data;
    size_t len, cap;
    int overflow;
} wbuf;

static unsigned char *w_reserve(wbuf *w, size_t n)
{
    if (!w->data) {
        w->len += n;
        return NULL;
    }
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = 1;
        return NULL;
    }
    unsigned char *p = w->data + w->len;
    w->len += n;
    return p;
}

static void w_bytes(wbuf *w, const void *p, size_t n)
{
    unsigned char *d = w_reserve(w, n);
    if (d)
        memcpy(d, p, n);
}

static void w_u32(wbuf *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    w_bytes(w, b, 4);
}

static void w_u64(wbuf *w, uint64_t v)
{
    w_u32(w, (uint32_t)v);
    w_u32(w, (uint32_t)(v >> 32));
}

static void w_f64(wbuf *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    w_u64(w, v);
}

/* n elements of es bytes (4: floats, 2: 16-bit words) of a device tensor, read straight
   into the bytes (blocking). */
static clopt_status w_device(wbuf *w, clopt_ctx *ctx, clopt_tensor t, size_t n, size_t es)
{
    unsigned char *d = w_reserve(w, n * es);
    if (!d)
        return CLOPT_SUCCESS; /* counting, or an overflow the caller reports */
    cl_int err = clEnqueueReadBuffer(ctx->queue, t.buffer, CL_TRUE, t.offset * es, n * es, d,
                                     0, NULL, NULL);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "reading the optimizer state");
    if (!host_little_endian())
        (es == 2 ? swap_u16 : swap_floats)(d, n);
    return CLOPT_SUCCESS;
}

/* Starts a section; returns where its length goes (patched by end_section). */
static size_t begin_section(wbuf *w, uint32_t tag)
{
    w_u32(w, tag);
    w_u32(w, 0);
    size_t at = w->len;
    w_u64(w, 0);
    return at;
}

static void end_section(wbuf *w, size_t at)
{
    if (!w->data || w->overflow)
        return;
    uint64_t len = w->len - at - 8;
    for (int i = 0; i < 8; i++)
        w->data[at + i] = (unsigned char)(len >> (8 * i));
}

static void w_hparams(wbuf *w, const clopt_hparams *hp)
{
#define W_D(f) w_f64(w, hp->f);
#define W_I(f) w_u32(w, (uint32_t)hp->f);
    CKP_DOUBLES(W_D)
    CKP_INTS(W_I)
    CKP_INTS_V3(W_I)
    CKP_DOUBLES_V4(W_D)
    CKP_INTS_V4(W_I)
#undef W_D
#undef W_I
}

static void w_schedule(wbuf *w, const clopt_schedule *s)
{
    w_u32(w, (uint32_t)s->nstages);
    for (size_t i = 0; i < s->nstages; i++) {
        const clopt_schedule_stage *st = &s->stage[i];
        w_u32(w, (uint32_t)st->kind);
        w_u64(w, st->start);
        w_u64(w, st->total_steps);
        w_u64(w, st->step_size);
        w_f64(w, st->gamma);
        w_f64(w, st->factor);
        w_f64(w, st->eta_min);
        w_f64(w, st->t_mult);
    }
}

/* The parameters of tensor e go into the bytes: arena tensors, when asked. */
static int saves_params(const clopt_optimizer *opt, const clopt_param *e, const ckp_options *o)
{
    return o->arena_params && opt->groups[e->group].arena;
}

/* Writes the version-4 checkpoint (w->data NULL: counts its bytes without device access).
   The caller settled the optimizer before a writing run. */
static clopt_status build(const clopt_optimizer *opt, const ckp_options *o, wbuf *w)
{
    clopt_ctx *ctx = opt->ctx;
    w_bytes(w, CKP_MAGIC, 8);
    w_u32(w, CKP_VERSION);
    w_u32(w, (uint32_t)(1 + opt->ngroups + opt->nparams));
    size_t at = begin_section(w, TAG_OPTM);
    w_u32(w, (uint32_t)opt->rule);
    w_u32(w, (uint32_t)opt->ngroups);
    w_u64(w, opt->nparams);
    w_u64(w, opt->step);
    w_f64(w, opt->max_grad_norm);
    w_f64(w, opt->last_grad_norm);
    w_f64(w, opt->grad_scale);
    w_u32(w, (uint32_t)opt->found_inf);
    w_u64(w, opt->rng_seed);
    w_u64(w, opt->rng_counter);
    w_u32(w, (o->state_tensors ? OPTM_STATE_TENSORS : 0u) |
                 (opt->check_finite ? OPTM_CHECK_FINITE : 0u) |
                 (opt->eval_mode ? OPTM_EVAL_MODE : 0u));
    end_section(w, at);
    for (size_t gi = 0; gi < opt->ngroups; gi++) {
        const clopt_group *g = &opt->groups[gi];
        at = begin_section(w, TAG_GRUP);
        w_hparams(w, &g->hp);
        w_schedule(w, &g->sched);
        w_u32(w, (uint32_t)g->arena);
        w_u64(w, g->count);
        end_section(w, at);
    }
    for (size_t i = 0; i < opt->nparams; i++) {
        const clopt_param *e = &opt->params[i];
        const int params = saves_params(opt, e, o);
        at = begin_section(w, TAG_TENS);
        w_u64(w, e->group);
        w_u32(w, (uint32_t)e->ndim);
        for (size_t d = 0; d < e->ndim; d++)
            w_u64(w, e->shape[d]);
        w_u32(w, (params ? TENS_PARAMS : 0u) | (e->slow_ready ? TENS_SLOW_READY : 0u) |
                     (e->master_ready ? TENS_MASTER_READY : 0u));
        w_u32(w, (uint32_t)e->pdtype);
        w_u32(w, (uint32_t)e->gdtype);
        w_u64(w, e->step);
        w_f64(w, e->mu_product);
        w_f64(w, e->sf_lr_max);
        w_f64(w, e->sf_weight_sum);
        w_u32(w, (uint32_t)e->nstate);
        for (size_t k = 0; k < e->nstate; k++) {
            size_t nl = strlen(e->state_name[k]);
            w_u32(w, (uint32_t)nl);
            w_bytes(w, e->state_name[k], nl);
            w_u64(w, e->state_len[k]);
            w_u32(w, (uint32_t)e->state_dtype[k]);
            if (o->state_tensors) {
                clopt_status s = w_device(w, ctx, state_source(e, k), e->state_len[k],
                                          clopt_state_esize(e, k));
                if (s != CLOPT_SUCCESS)
                    return s;
            }
        }
        if (params) {
            w_u64(w, e->n);
            clopt_status s = w_device(w, ctx, e->param, e->n, clopt_dtype_size(e->pdtype));
            if (s != CLOPT_SUCCESS)
                return s;
        }
        end_section(w, at);
    }
    if (w->data && !w->overflow) {
        uint32_t crc = clopt_crc32c(w->data, w->len);
        w_u32(w, crc);
    } else {
        w_u32(w, 0);
    }
    return CLOPT_SUCCESS;
}

/* Settles the optimizer and writes the checkpoint into buf, which holds exactly `size`
   bytes (the counting run's result). */
static clopt_status build_into(clopt_optimizer *opt, const ckp_options *o, unsigned char *buf,
                               size_t size)
{
    clopt_status s = clopt_opt_settle(opt);
    if (s != CLOPT_SUCCESS)
        return s;
    wbuf w = {buf, 0, size, 0};
    s = build(opt, o, &w);
    if (s == CLOPT_SUCCESS && (w.overflow || w.len != size))
        s = clopt_fail(opt->ctx, CLOPT_ERR_INVALID_SIZE,
                       "internal: the checkpoint changed size while it was written");
    return s;
}

clopt_status clopt_optimizer_state_size(const clopt_optimizer *opt, const clopt_save_options *o,
                                        size_t *bytes)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!bytes)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "bytes is NULL");
    ckp_options co;
    clopt_status s = take_options(ctx, o, &co);
    if (s != CLOPT_SUCCESS)
        return s;
    wbuf w = {NULL, 0, 0, 0};
    if ((s = build(opt, &co, &w)) != CLOPT_SUCCESS)
        return s;
    *bytes = w.len;
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_save_to(clopt_optimizer *opt, const clopt_save_options *o,
                                     void *buf, size_t cap, size_t *written)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!buf)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "buf is NULL");
    ckp_options co;
    clopt_status s = take_options(ctx, o, &co);
    if (s != CLOPT_SUCCESS)
        return s;
    wbuf count = {NULL, 0, 0, 0};
    if ((s = build(opt, &co, &count)) != CLOPT_SUCCESS)
        return s;
    if (cap < count.len)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_SIZE,
                          "the checkpoint takes %zu bytes, the buffer has %zu", count.len, cap);
    if ((s = build_into(opt, &co, buf, count.len)) != CLOPT_SUCCESS)
        return s;
    if (written)
        *written = count.len;
    return CLOPT_SUCCESS;
}

/* 64 unpredictable bits for a temporary name: the kernel's random source, else (never on
   Linux >= 3.17) a mix of the time, the pid, a counter and an address. */
static uint64_t tmp_random(void)
{
    uint64_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    static unsigned counter;
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    r = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 40 ^
        (uint64_t)(uintptr_t)&r ^ (uint64_t)++counter * 0x9E3779B97F4A7C15u;
    r ^= r >> 31, r *= 0xBF58476D1CE4E5B9u, r ^= r >> 29;
    return r;
}

/* Writes data to path atomically: a new file "<path>.<16 hex digits>.tmp" in the same folder,
   created with O_CREAT|O_EXCL|O_NOFOLLOW (a name that exists, symlinks included, is never
   opened: another name is drawn), mode 0600; written, synced, renamed over path, and the
   folder synced. A failure removes the temporary file and leaves path as it was. */
static clopt_status write_file(clopt_ctx *ctx, const char *path, const unsigned char *data,
                               size_t len)
{
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    if (!tmp)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "checkpoint file name");
    int fd = -1, err = 0;
    for (int attempt = 0; attempt < 64 && fd < 0; attempt++) {
        snprintf(tmp, plen, "%s.%016llx.tmp", path, (unsigned long long)tmp_random());
        fd = open(tmp, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0600);
        err = fd < 0 ? errno : 0;
        if (fd < 0 && err != EEXIST && err != EINTR)
            break;
    }
    if (fd < 0) {
        clopt_status s = clopt_fail(ctx, CLOPT_ERR_IO, "cannot create a temporary file for %s: %s",
                                    path, strerror(err));
        free(tmp);
        return s;
    }
    int ok = 1;
    for (size_t done = 0; ok && done < len;) {
        ssize_t n = write(fd, data + done, len - done);
        if (n > 0)
            done += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            ok = 0, err = n < 0 ? errno : EIO;
    }
    if (ok && fsync(fd) != 0)
        ok = 0, err = errno;
    if (close(fd) != 0 && ok)
        ok = 0, err = errno;
    if (ok && rename(tmp, path) != 0)
        ok = 0, err = errno;
    if (!ok) {
        unlink(tmp);
        clopt_status s = clopt_fail(ctx, CLOPT_ERR_IO, "writing %s failed: %s", path,
                                    strerror(err));
        free(tmp);
        return s;
    }
    /* the rename itself reaches the disk with the folder (best effort: not every file
       system lets a folder be synced) */
    char *slash = strrchr(tmp, '/');
    if (slash)
        slash[slash == tmp ? 1 : 0] = '\0';
    int dfd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(tmp);
    return CLOPT_SUCCESS;
}

clopt_status clopt_optimizer_save(clopt_optimizer *opt, const char *path)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!path)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "path is NULL");
    ckp_options co;
    clopt_status s = take_options(ctx, NULL, &co);
    if (s != CLOPT_SUCCESS)
        return s;
    wbuf count = {NULL, 0, 0, 0};
    if ((s = build(opt, &co, &count)) != CLOPT_SUCCESS)
        return s;
    unsigned char *data = malloc(count.len);
    if (!data)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "checkpoint buffer");
    s = build_into(opt, &co, data, count.len);
    if (s == CLOPT_SUCCESS)
        s = write_file(ctx, path, data, count.len);
    free(data);
    return s;
}

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
    if (rule != (uint32_t)opt->rule || ngroups != opt->ngroups || nparams != opt->nparams ||
        nsections != 1 + (uint64_t)ngroups + nparams) {
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
    if (clopt_hparams_validate(opt->rule, &lg->hp, NULL) != CLOPT_SUCCESS ||
        clopt_schedule_validate(&lg->sched, NULL) != CLOPT_SUCCESS ||
        !mu_possible(opt->rule, L->step, lg->mu_product))
        return format_error(ctx, src, "invalid hyperparameters, schedule or NAdam product in a group");
    if (arena != (uint32_t)g->arena || (g->arena && count != g->count))
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
               strcmp(other.state_name[k], e->state_name[k]) == 0;
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
    if (g->arena && i > g->first) {
        const loaded_tensor *first = &L->tensors[g->first];
        if (lt->step != first->step || lt->mu_product != first->mu_product ||
            (!clopt_rule_is_multipass(opt->rule) && lt->slow_ready != first->slow_ready))
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
    const ckp_options all = {1, 1};
    wbuf w = {NULL, 0, 0, 0};
    (void)build(opt, &all, &w); /* a counting run cannot fail */
    size_t slack = CKP_GROUP_SLACK;
    if (opt->ngroups > (SIZE_MAX - w.len) / slack)
        return SIZE_MAX;
    return w.len + opt->ngroups * slack;
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
    /* Non-blocking: a FIFO or device opens at once and is refused by its type. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return clopt_fail(ctx, CLOPT_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return clopt_fail(ctx, CLOPT_ERR_IO, "cannot stat %s: %s", path, strerror(e));
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
        s = clopt_fail(ctx, CLOPT_ERR_IO, "reading %s failed: %s", path, strerror(err));
    else if (len > max)
        s = clopt_fail(ctx, CLOPT_ERR_FORMAT,
                       "%s grew past any checkpoint of this optimizer (at most %zu bytes)",
                       path, max);
    else
        s = load_bytes(opt, data, len, path);
    free(data);
    return s;
}
