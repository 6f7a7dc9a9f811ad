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
 * Reading is in checkpoint_load.c, the constants and byte order in checkpoint_format.h.
 * (The state tensors one by one, for engines with their own container: state_access.c.) */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint_format.h"

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
    /* a newer caller's fields this library does not know must be left at 0 */
    const clopt_status st = clopt_check_struct_size(ctx, o, sizeof o->struct_size, sizeof *o,
                                                    "save options", "clopt_save_options_init");
    if (st != CLOPT_SUCCESS)
        return st;
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

/* Lookahead's slow weights of a tensor that has not stepped: θ (they are θ until its first
   step copies them), as the n floats of the state (a 16-bit θ widened), as
   clopt_optimizer_read_state gives them. */
static clopt_status w_theta(wbuf *w, const clopt_optimizer *opt, const clopt_param *e, size_t n)
{
    unsigned char *d = w_reserve(w, n * sizeof(float));
    if (!d)
        return CLOPT_SUCCESS; /* counting, or an overflow the caller reports */
    float *f = malloc(n * sizeof *f + 1);
    if (!f)
        return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "saving the slow weights");
    clopt_status s = clopt_o_read_theta_f32(opt, e, f, n);
    if (s == CLOPT_SUCCESS) {
        memcpy(d, f, n * sizeof *f);
        if (!host_little_endian())
            swap_floats(d, n);
    }
    free(f);
    return s;
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
                clopt_status s = clopt_is_slow(e, k) && !e->slow_ready
                                     ? w_theta(w, opt, e, e->state_len[k])
                                     : w_device(w, ctx, e->state[k], e->state_len[k],
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
    clopt_status s = clopt_o_check_mode_whole(opt); /* the file has one mode */
    if (s == CLOPT_SUCCESS)
        s = clopt_opt_settle(opt);
    if (s != CLOPT_SUCCESS)
        return s;
    wbuf w = {buf, 0, size, 0};
    s = build(opt, o, &w);
    if (s == CLOPT_SUCCESS && (w.overflow || w.len != size))
        s = clopt_fail(opt->ctx, CLOPT_ERR_INVALID_SIZE,
                       "internal: the checkpoint changed size while it was written");
    return s;
}

size_t clopt_ckp_full_size(const clopt_optimizer *opt)
{
    const ckp_options all = {1, 1};
    wbuf w = {NULL, 0, 0, 0};
    (void)build(opt, &all, &w); /* a counting run cannot fail */
    return w.len;
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
   Linux >= 3.17) a mix of the time, the pid, the caller's attempt number and an address (no
   static counter: the library keeps no global state, and two threads would race on it). */
static uint64_t tmp_random(unsigned attempt)
{
    uint64_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    r = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 40 ^
        (uint64_t)(uintptr_t)&r ^ (uint64_t)(attempt + 1u) * 0x9E3779B97F4A7C15u;
    r ^= r >> 31, r *= 0xBF58476D1CE4E5B9u, r ^= r >> 29;
    return r;
}

/* Writes data to path atomically: a new file "<path>.<16 hex digits>.tmp" in the same folder,
   created with O_CREAT|O_EXCL|O_NOFOLLOW (a name that exists, symlinks included, is never
   opened: another name is drawn), mode 0600; written, synced, renamed over path, and the
   folder synced. A failure removes the temporary file and leaves path as it was. */
const char *clopt_errno_text(int e, char *buf, size_t len)
{
    /* the XSI strerror_r (_POSIX_C_SOURCE 200809L, no _GNU_SOURCE) */
    if (strerror_r(e, buf, len) != 0)
        snprintf(buf, len, "error %d", e);
    return buf;
}

static clopt_status write_file(clopt_ctx *ctx, const char *path, const unsigned char *data,
                               size_t len)
{
    char why[256];
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    if (!tmp)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "checkpoint file name");
    int fd = -1, err = 0;
    for (unsigned attempt = 0; attempt < 64 && fd < 0; attempt++) {
        snprintf(tmp, plen, "%s.%016llx.tmp", path, (unsigned long long)tmp_random(attempt));
        fd = open(tmp, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0600);
        err = fd < 0 ? errno : 0;
        if (fd < 0 && err != EEXIST && err != EINTR)
            break;
    }
    if (fd < 0) {
        clopt_status s = clopt_fail(ctx, CLOPT_ERR_IO, "cannot create a temporary file for %s: %s",
                                    path, clopt_errno_text(err, why, sizeof why));
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
                                    clopt_errno_text(err, why, sizeof why));
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
