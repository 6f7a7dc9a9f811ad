/* Checkpoints: the complete optimizer state in a versioned little-endian file with a
 * CRC-32C (Castagnoli) trailer. The format is documented in docs/checkpoint-format.md.
 *
 *   "CLOPTCKP" | u32 version | u32 section count | sections | u32 CRC-32C of all before it
 *   section:   u32 tag | u32 0 | u64 payload length | payload
 *   tags:      1 OPTM (once), 2 GRUP (per group, in order), 3 TENS (per tensor, in order)
 *
 * Saving builds the file in memory, writes it to "<path>.<pid>.tmp" and renames it over the
 * path. Loading reads and checks everything (CRC first, then every field and shape against
 * the optimizer) before it changes anything. */
#define _POSIX_C_SOURCE 200809L
#include "optimizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CKP_MAGIC "CLOPTCKP"
#define CKP_VERSION 1u
enum { TAG_OPTM = 1, TAG_GRUP = 2, TAG_TENS = 3 };

/* The hyperparameters, field by field, in file order. */
#define CKP_DOUBLES(X)                                                                       \
    X(lr) X(beta1) X(beta2) X(beta3) X(eps) X(weight_decay) X(momentum) X(dampening) X(alpha) \
    X(rho) X(bs) X(lr_decay) X(initial_accumulator_value) X(momentum_decay) X(eps2)            \
    X(clip_threshold) X(decay_rate) X(lookahead_alpha) X(n_sma_threshold)
#define CKP_INTS(X)                                                                          \
    X(hess_interval) X(nesterov) X(amsgrad) X(maximize) X(centered) X(relative_step)          \
    X(scale_parameter) X(warmup_init) X(use_beta1) X(bias_correction) X(grad_averaging)       \
    X(grad_centralization) X(gc_conv_only) X(lookahead_k)

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

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct wbuf {
    unsigned char *data;
    size_t len, cap;
    int failed;
} wbuf;

static void w_bytes(wbuf *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n)
            cap *= 2;
        unsigned char *d = realloc(w->data, cap);
        if (!d) {
            w->failed = 1;
            return;
        }
        w->data = d;
        w->cap = cap;
    }
    memcpy(w->data + w->len, p, n);
    w->len += n;
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
    if (w->failed)
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

clopt_status clopt_optimizer_save(clopt_optimizer *opt, const char *path)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!path)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "path is NULL");
    wbuf w = {0};
    w_bytes(&w, CKP_MAGIC, 8);
    w_u32(&w, CKP_VERSION);
    w_u32(&w, (uint32_t)(1 + opt->ngroups + opt->nparams));
    size_t at = begin_section(&w, TAG_OPTM);
    w_u32(&w, (uint32_t)opt->rule);
    w_u32(&w, (uint32_t)opt->ngroups);
    w_u64(&w, opt->nparams);
    w_u64(&w, opt->step);
    w_f64(&w, opt->max_grad_norm);
    w_f64(&w, opt->last_grad_norm);
    w_f64(&w, opt->grad_scale);
    w_u32(&w, (uint32_t)opt->found_inf);
    w_u64(&w, opt->rng_seed);
    w_u64(&w, opt->rng_counter);
    end_section(&w, at);
    for (size_t gi = 0; gi < opt->ngroups; gi++) {
        const clopt_group *g = &opt->groups[gi];
        at = begin_section(&w, TAG_GRUP);
        w_hparams(&w, &g->hp);
        w_schedule(&w, &g->sched);
        double mu = 1.0; /* version 1 keeps one product per group: its first tensor's */
        for (size_t i = 0; i < opt->nparams; i++)
            if (opt->params[i].group == gi) {
                mu = opt->params[i].mu_product;
                break;
            }
        w_f64(&w, mu);
        w_u32(&w, (uint32_t)g->arena);
        w_u64(&w, g->count);
        end_section(&w, at);
    }
    clopt_status s = CLOPT_SUCCESS;
    float *host = NULL;
    size_t host_cap = 0;
    for (size_t i = 0; i < opt->nparams && s == CLOPT_SUCCESS; i++) {
        const clopt_param *e = &opt->params[i];
        at = begin_section(&w, TAG_TENS);
        w_u64(&w, e->group);
        w_u32(&w, (uint32_t)e->ndim);
        for (size_t d = 0; d < e->ndim; d++)
            w_u64(&w, e->shape[d]);
        w_u32(&w, (uint32_t)e->nstate);
        for (size_t k = 0; k < e->nstate && s == CLOPT_SUCCESS; k++) {
            size_t nl = strlen(e->state_name[k]);
            w_u32(&w, (uint32_t)nl);
            w_bytes(&w, e->state_name[k], nl);
            w_u64(&w, e->state_len[k]);
            if (e->state_len[k] > host_cap) {
                float *h = realloc(host, e->state_len[k] * sizeof *h);
                if (!h) {
                    s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "checkpoint buffer");
                    break;
                }
                host = h;
                host_cap = e->state_len[k];
            }
            if ((s = clopt_optimizer_read_state(opt, i, k, host, e->state_len[k])) !=
                CLOPT_SUCCESS)
                break;
            for (size_t j = 0; j < e->state_len[k]; j++) {
                uint32_t v;
                memcpy(&v, &host[j], sizeof v);
                w_u32(&w, v);
            }
        }
        end_section(&w, at);
    }
    free(host);
    if (s == CLOPT_SUCCESS && w.failed)
        s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "checkpoint buffer");
    if (s == CLOPT_SUCCESS) {
        w_u32(&w, clopt_crc32c(w.data, w.len));
        size_t plen = strlen(path) + 32;
        char *tmp = malloc(plen);
        FILE *f = NULL;
        if (!tmp || w.failed) {
            s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "checkpoint buffer");
        } else {
            snprintf(tmp, plen, "%s.%ld.tmp", path, (long)getpid());
            f = fopen(tmp, "wb");
            if (!f)
                s = clopt_fail(ctx, CLOPT_ERR_IO, "cannot create %s", tmp);
        }
        if (f) {
            int ok = fwrite(w.data, 1, w.len, f) == w.len;
            ok = fflush(f) == 0 && ok;
            ok = fsync(fileno(f)) == 0 && ok;
            ok = fclose(f) == 0 && ok;
            if (!ok || rename(tmp, path) != 0) {
                remove(tmp);
                s = clopt_fail(ctx, CLOPT_ERR_IO, "writing %s failed", path);
            }
        }
        free(tmp);
    }
    free(w.data);
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

static void r_hparams(rbuf *r, clopt_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
#define R_D(f) hp->f = r_f64(r);
#define R_I(f) hp->f = r_u32(r);
    CKP_DOUBLES(R_D)
    CKP_INTS(R_I)
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
    double mu_product;
} loaded_group;

static clopt_status format_error(clopt_ctx *ctx, const char *path, const char *what)
{
    return clopt_fail(ctx, CLOPT_ERR_FORMAT, "%s: %s", path, what);
}

clopt_status clopt_optimizer_load(clopt_optimizer *opt, const char *path)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    clopt_ctx *ctx = opt->ctx;
    clopt_clear_error(ctx);
    if (!path)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f)
        return clopt_fail(ctx, CLOPT_ERR_IO, "cannot open %s", path);
    unsigned char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            unsigned char *d = realloc(data, cap);
            if (!d) {
                free(data);
                fclose(f);
                return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "reading %s", path);
            }
            data = d;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int read_error = ferror(f);
    fclose(f);
    clopt_status s = CLOPT_SUCCESS;
    loaded_group *groups = NULL;
    const unsigned char **tensor_data = NULL;
    if (read_error) {
        s = clopt_fail(ctx, CLOPT_ERR_IO, "reading %s failed", path);
        goto done;
    }
    /* Integrity first: magic, CRC over everything before the trailer, version. */
    if (len < 8 + 4 + 4 + 4 || memcmp(data, CKP_MAGIC, 8) != 0) {
        s = format_error(ctx, path, "not a clopt checkpoint (bad magic or too short)");
        goto done;
    }
    uint32_t stored = (uint32_t)data[len - 4] | (uint32_t)data[len - 3] << 8 |
                      (uint32_t)data[len - 2] << 16 | (uint32_t)data[len - 1] << 24;
    if (clopt_crc32c(data, len - 4) != stored) {
        s = format_error(ctx, path, "checksum mismatch (truncated or corrupted)");
        goto done;
    }
    rbuf r = {data, len - 4, 8, 0};
    uint32_t version = r_u32(&r);
    if (version != CKP_VERSION) {
        s = clopt_fail(ctx, CLOPT_ERR_FORMAT, "%s: format version %u, this library reads %u",
                       path, version, CKP_VERSION);
        goto done;
    }
    uint32_t nsections = r_u32(&r);
    rbuf sec;
    if (!r_section(&r, TAG_OPTM, &sec)) {
        s = format_error(ctx, path, "missing optimizer section");
        goto done;
    }
    uint32_t rule = r_u32(&sec), ngroups = r_u32(&sec);
    uint64_t nparams = r_u64(&sec), step = r_u64(&sec);
    double max_grad_norm = r_f64(&sec), last_grad_norm = r_f64(&sec), grad_scale = r_f64(&sec);
    uint32_t found_inf = r_u32(&sec);
    uint64_t rng_seed = r_u64(&sec), rng_counter = r_u64(&sec);
    if (sec.bad || sec.pos != sec.len) {
        s = format_error(ctx, path, "malformed optimizer section");
        goto done;
    }
    if (rule != (uint32_t)opt->rule || ngroups != opt->ngroups || nparams != opt->nparams ||
        nsections != 1 + ngroups + nparams) {
        s = clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                       "%s holds %s with %u groups and %llu tensors; this optimizer is %s with "
                       "%zu groups and %zu tensors",
                       path, clopt_rule_name((clopt_rule)rule) ? clopt_rule_name((clopt_rule)rule)
                                                               : "an unknown rule",
                       ngroups, (unsigned long long)nparams, clopt_rule_name(opt->rule),
                       opt->ngroups, opt->nparams);
        goto done;
    }
    if (!(isfinite(max_grad_norm) && max_grad_norm >= 0) ||
        !(isfinite(grad_scale) && grad_scale >= 0)) {
        s = format_error(ctx, path, "invalid clipping or loss-scale setting");
        goto done;
    }
    groups = calloc(ngroups ? ngroups : 1, sizeof *groups);
    tensor_data = calloc(nparams ? nparams : 1, sizeof *tensor_data);
    if (!groups || !tensor_data) {
        s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "reading %s", path);
        goto done;
    }
    for (size_t gi = 0; gi < ngroups; gi++) {
        loaded_group *lg = &groups[gi];
        const clopt_group *g = &opt->groups[gi];
        if (!r_section(&r, TAG_GRUP, &sec)) {
            s = format_error(ctx, path, "missing group section");
            goto done;
        }
        r_hparams(&sec, &lg->hp);
        r_schedule(&sec, &lg->sched);
        lg->mu_product = r_f64(&sec);
        uint32_t arena = r_u32(&sec);
        uint64_t count = r_u64(&sec);
        if (sec.bad || sec.pos != sec.len) {
            s = format_error(ctx, path, "malformed group section");
            goto done;
        }
        if (clopt_hparams_validate(opt->rule, &lg->hp, NULL) != CLOPT_SUCCESS ||
            clopt_schedule_validate(&lg->sched, NULL) != CLOPT_SUCCESS ||
            !isfinite(lg->mu_product)) {
            s = format_error(ctx, path, "invalid hyperparameters or schedule in a group");
            goto done;
        }
        if (arena != (uint32_t)g->arena || (g->arena && count != g->count)) {
            s = clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH, "%s: group %zu is stored differently",
                           path, gi);
            goto done;
        }
    }
    for (size_t i = 0; i < nparams; i++) {
        const clopt_param *e = &opt->params[i];
        if (!r_section(&r, TAG_TENS, &sec)) {
            s = format_error(ctx, path, "missing tensor section");
            goto done;
        }
        uint64_t group = r_u64(&sec);
        uint32_t ndim = r_u32(&sec);
        int same = group == e->group && ndim == e->ndim;
        for (size_t d = 0; d < ndim && d < CLOPT_MAX_DIMS; d++)
            same = r_u64(&sec) == e->shape[d] && same;
        uint32_t nstate = r_u32(&sec);
        same = same && ndim <= CLOPT_MAX_DIMS && nstate == e->nstate;
        /* The layout the loaded hyperparameters give must be the one allocated here. */
        clopt_param other = *e;
        clopt_group lg = opt->groups[e->group];
        lg.hp = groups[e->group].hp;
        clopt_state_layout(opt, &lg, &other);
        same = same && other.nstate == e->nstate;
        tensor_data[i] = sec.p + sec.pos;
        for (size_t k = 0; same && k < nstate; k++) {
            uint32_t nl = r_u32(&sec);
            const unsigned char *name = r_bytes(&sec, nl);
            uint64_t slen = r_u64(&sec);
            same = name && nl == strlen(e->state_name[k]) &&
                   memcmp(name, e->state_name[k], nl) == 0 && slen == e->state_len[k] &&
                   strcmp(other.state_name[k], e->state_name[k]) == 0;
            same = same && r_bytes(&sec, (size_t)slen * 4) != NULL;
        }
        if (sec.bad) {
            s = format_error(ctx, path, "malformed tensor section");
            goto done;
        }
        if (!same) {
            s = clopt_fail(ctx, CLOPT_ERR_STATE_MISMATCH,
                           "%s: tensor %zu has another shape, group or state layout", path, i);
            goto done;
        }
        if (sec.pos != sec.len) {
            s = format_error(ctx, path, "malformed tensor section");
            goto done;
        }
    }
    if (r.pos != r.len) {
        s = format_error(ctx, path, "trailing bytes after the last section");
        goto done;
    }
    /* Everything checked: apply. Only an OpenCL failure can stop this half-way. */
    for (size_t i = 0; i < nparams && s == CLOPT_SUCCESS; i++) {
        clopt_param *e = &opt->params[i];
        const unsigned char *p = tensor_data[i];
        for (size_t k = 0; k < e->nstate; k++) {
            p += 4 + strlen(e->state_name[k]) + 8; /* name length, name, state length */
            float *host = malloc(e->state_len[k] * sizeof *host);
            if (!host) {
                s = clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "loading %s", path);
                break;
            }
            for (size_t j = 0; j < e->state_len[k]; j++) {
                uint32_t v = (uint32_t)p[4 * j] | (uint32_t)p[4 * j + 1] << 8 |
                             (uint32_t)p[4 * j + 2] << 16 | (uint32_t)p[4 * j + 3] << 24;
                memcpy(&host[j], &v, sizeof v);
            }
            p += e->state_len[k] * 4;
            cl_int err = clEnqueueWriteBuffer(ctx->queue, e->state[k].buffer, CL_TRUE,
                                              e->state[k].offset * sizeof(float),
                                              e->state_len[k] * sizeof(float), host, 0, NULL,
                                              NULL);
            free(host);
            if (err != CL_SUCCESS) {
                s = clopt_fail_cl(ctx, err, "writing loaded state");
                break;
            }
        }
        e->slow_ready = 1; /* the slow weights, if any, come from the file */
    }
    if (s == CLOPT_SUCCESS) {
        for (size_t gi = 0; gi < ngroups; gi++) {
            opt->groups[gi].hp = groups[gi].hp;
            opt->groups[gi].sched = groups[gi].sched;
        }
        for (size_t i = 0; i < opt->nparams; i++) {
            opt->params[i].step = step;
            opt->params[i].mu_product = groups[opt->params[i].group].mu_product;
        }
        opt->step = step;
        opt->max_grad_norm = max_grad_norm;
        opt->last_grad_norm = last_grad_norm;
        opt->grad_scale = grad_scale;
        opt->found_inf = (int)found_inf;
        opt->rng_seed = rng_seed;
        opt->rng_counter = rng_counter;
    }
done:
    free(groups);
    free(tensor_data);
    free(data);
    return s;
}
