/* SPDX-License-Identifier: MIT */
/* Checkpoints of a sharded optimizer in one file, independent of the world size: rank 0
 * gathers every rank's pieces and writes each tensor's whole state (the unsharded
 * optimizer's layout); a load reads it on rank 0, broadcasts it, and every rank takes its
 * slice, so a file written by N ranks loads on M ranks, or into the unsharded optimizer.
 * Format (little-endian, as written by the host; docs/mpi-status.md):
 *   "CLOPTMPI" u32 version(1) u32 rule u64 total u64 ntensors u64 step_count
 *   u32 saved_world_size u32 shard_tensors, saved_world_size x (u64 first, u64 count),
 *   per tensor: u64 ndim, u64 shape[8], u32 nstate, per state: char name[32], u32 esize,
 *   u64 length, length·esize bytes;  then u32 CRC-32C of everything before it. */
#include "mpi_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_MAGIC "CLOPTMPI"
#define CKPT_VERSION 1u

/* ---- save ------------------------------------------------------------------------------------ */

/* Rank 0: the gathered pieces (in rank order = flattened order) -> the file's bytes. */
static clopt_status merge(clopt_mpi_optimizer *opt, const unsigned char *all, size_t len,
                          clopt_mpi_blob *out)
{
    out->len = 0;
    clopt_mpi_put(out, CKPT_MAGIC, 8);
    clopt_mpi_put_u32(out, CKPT_VERSION);
    clopt_mpi_put_u32(out, (uint32_t)opt->rule);
    clopt_mpi_put_u64(out, opt->total);
    clopt_mpi_put_u64(out, opt->ntensors);
    clopt_mpi_put_u64(out, opt->steps);
    clopt_mpi_put_u32(out, (uint32_t)opt->size);
    clopt_mpi_put_u32(out, (uint32_t)opt->o.shard_tensors);
    for (int r = 0; r < opt->size; r++) {
        clopt_mpi_put_u64(out, (uint64_t)opt->displs[r]);
        clopt_mpi_put_u64(out, (uint64_t)opt->counts[r]);
    }
    clopt_mpi_reader rd = {all, len, 0, 0};
    for (size_t i = 0; i < opt->ntensors; i++) {
        const clopt_mpi_shape *t = &opt->shapes[i];
        clopt_mpi_put_u64(out, t->ndim);
        for (size_t k = 0; k < CLOPT_MAX_DIMS; k++)
            clopt_mpi_put_u64(out, k < t->ndim ? t->shape[k] : 0);
        /* the tensor's pieces follow one another; a cut tensor's states are per element
           (an 8-bit absmax: per block of 256, the pieces starting on blocks) */
        const size_t start = rd.at;
        const uint64_t ti = clopt_mpi_get_u64(&rd), off = clopt_mpi_get_u64(&rd),
                       plen = clopt_mpi_get_u64(&rd);
        const uint32_t ns = clopt_mpi_get_u32(&rd);
        if (rd.bad || ti != i || off != 0)
            return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT,
                                  "gathered pieces out of order at tensor %zu", i);
        clopt_mpi_put_u32(out, ns);
        const int whole = plen == t->n;
        for (uint32_t k = 0; k < ns; k++) {
            /* walk every piece of tensor i for state k */
            clopt_mpi_reader pr = rd;
            pr.at = start;
            size_t covered = 0;
            int first = 1;
            while (covered < t->n) {
                const uint64_t pti = clopt_mpi_get_u64(&pr), poff = clopt_mpi_get_u64(&pr),
                               pl = clopt_mpi_get_u64(&pr);
                const uint32_t pns = clopt_mpi_get_u32(&pr);
                if (pr.bad || pti != i || poff != covered || pns != ns)
                    return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "tensor %zu: pieces disagree", i);
                for (uint32_t m = 0; m < pns; m++) {
                    const char *nm = clopt_mpi_get(&pr, CLOPT_MPI_NAME_LEN);
                    const uint32_t es = clopt_mpi_get_u32(&pr);
                    const uint64_t sl = clopt_mpi_get_u64(&pr);
                    const void *data = clopt_mpi_get(&pr, (size_t)sl * es);
                    if (pr.bad)
                        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "tensor %zu: short piece", i);
                    if (m != k)
                        continue;
                    char name[CLOPT_MPI_NAME_LEN + 1] = {0};
                    memcpy(name, nm, CLOPT_MPI_NAME_LEN);
                    const size_t u = clopt_mpi_state_unit(name); /* 256: an 8-bit absmax */
                    if (first) {
                        clopt_mpi_put(out, nm, CLOPT_MPI_NAME_LEN);
                        clopt_mpi_put_u32(out, es);
                        clopt_mpi_put_u64(out, whole ? sl : clopt_mpi_state_units(name, t->n));
                        first = 0;
                    }
                    if (!whole && (sl != clopt_mpi_state_units(name, pl) || poff % u != 0))
                        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT,
                                              "tensor %zu is cut but its state %u is not per "
                                              "element (or per block of 256 from a block's "
                                              "start)",
                                              i, k);
                    clopt_mpi_put(out, data, (size_t)sl * es);
                }
                covered += pl;
            }
        }
        /* skip every piece of tensor i */
        rd.at = start;
        for (size_t covered = 0; covered < t->n;) {
            clopt_mpi_get(&rd, 16);
            const uint64_t pl = clopt_mpi_get_u64(&rd);
            const uint32_t pns = clopt_mpi_get_u32(&rd);
            for (uint32_t m = 0; m < pns && !rd.bad; m++) {
                clopt_mpi_get(&rd, CLOPT_MPI_NAME_LEN);
                const uint32_t es = clopt_mpi_get_u32(&rd);
                clopt_mpi_get(&rd, (size_t)clopt_mpi_get_u64(&rd) * es);
            }
            if (rd.bad || pl == 0)
                return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "tensor %zu: short piece", i);
            covered += pl;
        }
    }
    clopt_mpi_put_u32(out, clopt_mpi_crc32c(out->p, out->len));
    return out->oom ? clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory")
                    : CLOPT_SUCCESS;
}

clopt_status clopt_mpi_optimizer_save(clopt_mpi_optimizer *opt, const char *path)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    clopt_status s = opt->rank == 0 && !path
                         ? clopt_mpi_fail(opt, CLOPT_ERR_NULL_ARGUMENT, "path is NULL on rank 0")
                         : CLOPT_SUCCESS;
    clopt_mpi_blob mine = {0}, file = {0};
    if (s == CLOPT_SUCCESS)
        s = clopt_mpi_pack_pieces(opt, &mine);
    double *agree = opt->agree_all; /* allocated at create: no rank drops out */
    /* everyone packed, and everyone learns every shard's size (exact in a double) */
    const double mine_len = s == CLOPT_SUCCESS ? (double)mine.len : 0.0;
    s = clopt_mpi_agree(opt, s, &mine_len, 1, agree);
    size_t tot = 0;
    for (int r = 0; s == CLOPT_SUCCESS && r < opt->size; r++)
        tot += (size_t)agree[2 * (size_t)r + 1];
    /* every rank sums the same sizes, so every rank refuses alike without a collective (and
       no rank sends what rank 0 could not take: MPI_Gatherv's counts are int) */
    if (s == CLOPT_SUCCESS && tot > opt->gather_max)
        s = clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE,
                           "the gathered state is %zu bytes, over %zu (MPI counts are int): use "
                           "clopt_mpi_optimizer_save_shards",
                           tot, opt->gather_max);
    int *sizes = NULL;
    unsigned char *all = NULL;
    if (s == CLOPT_SUCCESS) {
        if (opt->rank == 0) {
            sizes = malloc(2 * (size_t)opt->size * sizeof *sizes);
            all = malloc(tot ? tot : 1);
            if (!sizes || !all)
                s = clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
            for (int r = 0, at = 0; s == CLOPT_SUCCESS && r < opt->size; r++) {
                sizes[r] = (int)agree[2 * (size_t)r + 1];
                sizes[opt->size + r] = at; /* tot <= INT_MAX: no overflow */
                at += sizes[r];
            }
        }
        /* rank 0 can receive: only then does any rank send */
        s = clopt_mpi_agree(opt, s, NULL, 0, agree);
    }
    if (s == CLOPT_SUCCESS) {
        const int rc = MPI_Gatherv(mine.p, (int)mine.len, MPI_BYTE, all, sizes,
                                   opt->rank == 0 ? sizes + opt->size : NULL, MPI_BYTE, 0,
                                   opt->comm);
        if (rc != MPI_SUCCESS)
            s = clopt_mpi_check(opt, rc, "gathering the shards");
        if (s == CLOPT_SUCCESS && opt->rank == 0) {
            s = merge(opt, all, tot, &file);
            /* a load broadcasts the file whole (MPI_Bcast's count is int) */
            if (s == CLOPT_SUCCESS && file.len > opt->gather_max)
                s = clopt_mpi_fail(opt, CLOPT_ERR_INVALID_SIZE,
                                   "the file would be %zu bytes, over %zu (MPI counts are "
                                   "int): use clopt_mpi_optimizer_save_shards",
                                   file.len, opt->gather_max);
            if (s == CLOPT_SUCCESS)
                s = clopt_mpi_write_file(opt, path, &file);
        }
        s = clopt_mpi_agree(opt, s, NULL, 0, agree); /* rank 0's verdict for all */
    }
    free(all);
    free(sizes);
    free(mine.p);
    free(file.p);
    return s;
}

/* ---- load ------------------------------------------------------------------------------------ */

/* A parsed checkpoint: its header and where each tensor's states are. */
typedef struct ckpt_state {
    char name[CLOPT_MPI_NAME_LEN];
    uint32_t esize;
    uint64_t len;
    const unsigned char *data;
} ckpt_state;
typedef struct ckpt_tensor {
    uint64_t ndim, shape[CLOPT_MAX_DIMS];
    uint32_t nstate;
    ckpt_state st[2 * CLOPT_MAX_STATE + 2];
} ckpt_tensor;
typedef struct ckpt {
    uint32_t rule;
    uint64_t total, ntensors, steps;
    ckpt_tensor *t;
} ckpt;

/* Parses and checks bytes (CRC, magic, version, every length); *why gets static text. */
static clopt_status parse(const unsigned char *p, size_t len, ckpt *c, const char **why)
{
    memset(c, 0, sizeof *c);
    clopt_mpi_reader r = {p, len, 0, 0};
    *why = "truncated";
    if (len < 12 + 4)
        return CLOPT_ERR_FORMAT;
    uint32_t crc;
    memcpy(&crc, p + len - 4, 4);
    if (memcmp(p, CKPT_MAGIC, 8) != 0)
        return (*why = "not a clopt_mpi checkpoint (magic)"), CLOPT_ERR_FORMAT;
    if (clopt_mpi_crc32c(p, len - 4) != crc)
        return (*why = "CRC-32C mismatch (damaged file)"), CLOPT_ERR_FORMAT;
    r.len = len - 4;
    clopt_mpi_get(&r, 8);
    if (clopt_mpi_get_u32(&r) != CKPT_VERSION)
        return (*why = "unknown version"), CLOPT_ERR_FORMAT;
    c->rule = clopt_mpi_get_u32(&r);
    c->total = clopt_mpi_get_u64(&r);
    c->ntensors = clopt_mpi_get_u64(&r);
    c->steps = clopt_mpi_get_u64(&r);
    const uint32_t world = clopt_mpi_get_u32(&r);
    clopt_mpi_get_u32(&r);
    if (r.bad || world == 0 || world > (1u << 24))
        return CLOPT_ERR_FORMAT;
    if (c->steps > CLOPT_MAX_STEP_COUNT) /* set_step_count, last, would refuse it */
        return (*why = "impossible step count (above 2^53 - 64)"), CLOPT_ERR_FORMAT;
    clopt_mpi_get(&r, (size_t)world * 16);
    if (r.bad || c->ntensors == 0 || c->ntensors > c->total || c->total > INT_MAX)
        return CLOPT_ERR_FORMAT;
    c->t = calloc(c->ntensors, sizeof *c->t);
    if (!c->t)
        return (*why = "out of host memory"), CLOPT_ERR_OUT_OF_MEMORY;
    uint64_t sum = 0; /* the shapes' elements: the total, as save wrote them */
    for (uint64_t i = 0; i < c->ntensors; i++) {
        ckpt_tensor *t = &c->t[i];
        t->ndim = clopt_mpi_get_u64(&r);
        uint64_t n = 1;
        for (size_t k = 0; k < CLOPT_MAX_DIMS; k++) {
            t->shape[k] = clopt_mpi_get_u64(&r);
            if (k < t->ndim)
                n = t->shape[k] == 0 || n > c->total / t->shape[k] ? c->total + 1
                                                                    : n * t->shape[k];
        }
        sum += n;
        t->nstate = clopt_mpi_get_u32(&r);
        if (r.bad || t->ndim == 0 || t->ndim > CLOPT_MAX_DIMS || sum > c->total ||
            t->nstate > 2 * CLOPT_MAX_STATE + 2)
            return (*why = "bad tensor header"), CLOPT_ERR_FORMAT;
        for (uint32_t k = 0; k < t->nstate; k++) {
            ckpt_state *s = &t->st[k];
            const void *nm = clopt_mpi_get(&r, CLOPT_MPI_NAME_LEN);
            s->esize = clopt_mpi_get_u32(&r);
            s->len = clopt_mpi_get_u64(&r);
            if (r.bad || (s->esize != 1 && s->esize != 2 && s->esize != 4) ||
                s->len > (r.len - r.at) / s->esize)
                return CLOPT_ERR_FORMAT;
            memcpy(s->name, nm, CLOPT_MPI_NAME_LEN);
            s->name[CLOPT_MPI_NAME_LEN - 1] = '\0';
            s->data = clopt_mpi_get(&r, (size_t)s->len * s->esize);
        }
    }
    if (r.bad || r.at != r.len)
        return (*why = "trailing or missing bytes"), CLOPT_ERR_FORMAT;
    if (sum != c->total)
        return (*why = "the tensors' shapes do not add up to the total"), CLOPT_ERR_FORMAT;
    *why = "";
    return CLOPT_SUCCESS;
}

/* Checks the state k of the checkpoint's tensor against the optimizer's parameter `param`
   holding elements [off, off + len) of it (cut: per-element state); then optionally writes
   (an fp32 master saved before the first step is skipped: see clopt_mpi_master_unset). */
static clopt_status apply_state(clopt_optimizer *o, clopt_ctx *ctx, size_t param,
                                const ckpt_tensor *t, size_t n, size_t off, size_t len,
                                uint64_t steps, int write, char *detail, size_t dlen)
{
    const size_t ns = clopt_optimizer_state_count(o, param);
    if (ns != t->nstate) {
        snprintf(detail, dlen, "parameter %zu: %zu states, the checkpoint %u", param, ns,
                 t->nstate);
        return CLOPT_ERR_STATE_MISMATCH;
    }
    const char *mw = NULL;
    if (!write && clopt_mpi_check_master(o, param, steps, &mw) != CLOPT_SUCCESS) {
        snprintf(detail, dlen, "parameter %zu: %s", param, mw);
        return CLOPT_ERR_STATE_MISMATCH;
    }
    for (size_t k = 0; k < ns; k++) {
        const ckpt_state *cs = &t->st[k];
        const char *name = NULL;
        size_t sl = 0;
        clopt_optimizer_state_info(o, param, k, &name, &sl);
        const size_t es = clopt_dtype_size(clopt_mpi_state_dtype(o, param, k));
        const int whole = len == n;
        const size_t u = clopt_mpi_state_unit(name); /* an 8-bit absmax: one per 256 */
        if (strcmp(name, cs->name) != 0 || es != cs->esize ||
            (whole ? sl != cs->len
                   : (sl != clopt_mpi_state_units(name, len) ||
                      cs->len != clopt_mpi_state_units(name, n) || off % u != 0))) {
            snprintf(detail, dlen,
                     "parameter %zu: state %zu is %s (%zu x %zu bytes), the "
                     "checkpoint's %s (%llu x %u)",
                     param, k, name, sl, es, cs->name, (unsigned long long)cs->len, cs->esize);
            return CLOPT_ERR_STATE_MISMATCH;
        }
        if (!write || clopt_mpi_master_unset(o, param, k, steps))
            continue;
        /* a copy: write_state takes floats, the file's bytes need not be aligned */
        void *tmp = malloc(sl * es + 1);
        if (!tmp)
            return CLOPT_ERR_OUT_OF_MEMORY;
        memcpy(tmp, cs->data + (whole ? 0 : off / u * es), sl * es);
        clopt_status s = clopt_mpi_state_io(o, ctx, param, k, tmp, sl, es, 1);
        free(tmp);
        if (s != CLOPT_SUCCESS) {
            snprintf(detail, dlen, "writing state %s of parameter %zu: %s", name, param,
                     clopt_status_str(s));
            return s;
        }
    }
    return CLOPT_SUCCESS;
}

static int same_shape(const ckpt_tensor *t, const clopt_mpi_shape *s)
{
    if (t->ndim != s->ndim)
        return 0;
    for (size_t k = 0; k < s->ndim; k++)
        if (t->shape[k] != s->shape[k])
            return 0;
    return 1;
}

clopt_status clopt_mpi_optimizer_load(clopt_mpi_optimizer *opt, const char *path)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    unsigned char *bytes = NULL;
    size_t len = 0;
    clopt_status s = clopt_mpi_bcast_file(opt, path, &bytes, &len);
    double *agree = opt->agree_all; /* allocated at create: no rank drops out */
    /* every rank checks everything it will write before any rank writes */
    ckpt c = {0};
    if (s == CLOPT_SUCCESS) {
        const char *why = "";
        s = parse(bytes, len, &c, &why);
        if (s != CLOPT_SUCCESS)
            clopt_mpi_fail(opt, s, "checkpoint: %s", why);
    }
    if (s == CLOPT_SUCCESS &&
        (c.rule != (uint32_t)opt->rule || c.total != opt->total || c.ntensors != opt->ntensors))
        s = clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                           "checkpoint of another rule, size or tensor count");
    for (size_t i = 0; s == CLOPT_SUCCESS && i < opt->ntensors; i++)
        if (!same_shape(&c.t[i], &opt->shapes[i]))
            s = clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH, "tensor %zu: another shape", i);
    char detail[256];
    for (size_t j = 0; s == CLOPT_SUCCESS && j < opt->npieces; j++) {
        const clopt_mpi_piece *pc = &opt->pieces[j];
        s = apply_state(opt->local, opt->ctx, j, &c.t[pc->tensor], opt->shapes[pc->tensor].n,
                        pc->off, pc->len, c.steps, 0, detail, sizeof detail);
        if (s != CLOPT_SUCCESS)
            clopt_mpi_fail(opt, s, "%s", detail);
    }
    s = clopt_mpi_agree(opt, s, NULL, 0, agree);
    /* write: only an OpenCL failure can stop it half-way (reported by every rank) */
    for (size_t j = 0; s == CLOPT_SUCCESS && j < opt->npieces; j++) {
        const clopt_mpi_piece *pc = &opt->pieces[j];
        s = apply_state(opt->local, opt->ctx, j, &c.t[pc->tensor], opt->shapes[pc->tensor].n,
                        pc->off, pc->len, c.steps, 1, detail, sizeof detail);
        if (s != CLOPT_SUCCESS)
            clopt_mpi_fail(opt, s, "%s", detail);
    }
    if (s == CLOPT_SUCCESS &&
        (s = clopt_optimizer_set_step_count(opt->local, c.steps)) != CLOPT_SUCCESS)
        clopt_mpi_fail(opt, s, "set_step_count: %s", clopt_ctx_last_error(opt->ctx));
    if (s == CLOPT_SUCCESS)
        opt->steps = c.steps;
    s = clopt_mpi_agree(opt, s, NULL, 0, agree);
    free(c.t);
    free(bytes);
    return s;
}

static size_t shape_elems(const ckpt_tensor *t)
{
    size_t n = 1;
    for (size_t k = 0; k < t->ndim && k < CLOPT_MAX_DIMS; k++)
        n *= (size_t)t->shape[k];
    return n;
}

/* The unsharded optimizer's tensors against the checkpoint's shapes (parse checked that they
   add up to its total). The core shows a tensor's shape only in its full-size state entries
   (those of its element count): a tensor of another size or shape has a full-size state of
   another shape, or the length checks of apply_state refuse it. */
static clopt_status check_unsharded_shapes(const clopt_optimizer *o, const ckpt *c, char *detail,
                                           size_t dlen)
{
    const size_t ne = clopt_optimizer_state_entry_count(o);
    for (size_t i = 0; i < ne; i++) {
        clopt_state_entry e;
        if (clopt_optimizer_state_entry(o, i, &e) != CLOPT_SUCCESS || e.param >= c->ntensors)
            continue; /* (a key too long: the other checks still hold) */
        const ckpt_tensor *t = &c->t[e.param];
        if (e.length != shape_elems(t))
            continue; /* a shorter state (Adafactor's statistics, absmaxes): apply_state's */
        int same = e.ndim == t->ndim;
        for (size_t k = 0; same && k < e.ndim; k++)
            same = e.shape[k] == t->shape[k];
        if (!same) {
            snprintf(detail, dlen, "tensor %zu: another shape than the checkpoint's", e.param);
            return CLOPT_ERR_STATE_MISMATCH;
        }
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_checkpoint_load_unsharded(clopt_ctx *ctx, clopt_optimizer *opt,
                                                 const char *path, char *why, size_t why_len)
{
    char detail[256] = "";
    if (why && why_len)
        why[0] = '\0';
    if (!ctx || !opt || !path)
        return CLOPT_ERR_NULL_ARGUMENT;
    unsigned char *bytes = NULL;
    size_t len = 0;
    ckpt c = {0};
    const char *pw = "";
    clopt_status s = clopt_mpi_read_file(path, SIZE_MAX, &bytes, &len);
    if (s != CLOPT_SUCCESS)
        snprintf(detail, sizeof detail, "cannot read %s", path);
    if (s == CLOPT_SUCCESS && (s = parse(bytes, len, &c, &pw)) != CLOPT_SUCCESS)
        snprintf(detail, sizeof detail, "checkpoint: %s", pw);
    if (s == CLOPT_SUCCESS && (c.rule != (uint32_t)clopt_optimizer_rule(opt) ||
                               c.ntensors != clopt_optimizer_param_count(opt))) {
        s = CLOPT_ERR_STATE_MISMATCH;
        snprintf(detail, sizeof detail, "another rule or tensor count");
    }
    if (s == CLOPT_SUCCESS)
        s = check_unsharded_shapes(opt, &c, detail, sizeof detail);
    /* check every tensor, then write (the optimizer's tensors are the checkpoint's, in order) */
    for (int write = 0; write < 2 && s == CLOPT_SUCCESS; write++)
        for (size_t i = 0; s == CLOPT_SUCCESS && i < c.ntensors; i++) {
            const size_t n = shape_elems(&c.t[i]);
            s = apply_state(opt, ctx, i, &c.t[i], n, 0, n, c.steps, write, detail,
                            sizeof detail);
        }
    if (s == CLOPT_SUCCESS && (s = clopt_optimizer_set_step_count(opt, c.steps)) != CLOPT_SUCCESS)
        snprintf(detail, sizeof detail, "set_step_count failed");
    if (s != CLOPT_SUCCESS && why && why_len)
        snprintf(why, why_len, "%s", detail);
    free(c.t);
    free(bytes);
    return s;
}
