/* SPDX-License-Identifier: MIT */
/* Checkpoints as one file per rank plus a manifest (nothing gathered through rank 0): every
 * rank writes "<prefix>.<rank>" with its pieces' states, rank 0 writes "<prefix>.manifest"
 * with the world size, each rank's shard range, each part's size and CRC-32C. A load on any
 * world size reads the manifest (rank 0, broadcast), then each rank reads only the parts
 * that overlap its own slice, checks their size and CRC against the manifest, and assembles
 * its pieces' states from them.
 *   manifest: "CLOPTMPM" u32 version(1) u32 rule u64 total u64 ntensors u64 step_count
 *             u32 world u32 shard_tensors, per tensor u64 ndim u64 shape[8], per rank
 *             u64 first u64 count u64 part_bytes u32 part_crc;  u32 CRC-32C of the above
 *   part:     "CLOPTMPS" u32 version(1) u32 rank u32 world u64 blob_len, the blob of
 *             clopt_mpi_pack_pieces;  u32 CRC-32C of the above */
#include "mpi_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAN_MAGIC "CLOPTMPM"
#define PART_MAGIC "CLOPTMPS"
#define SHARDS_VERSION 1u
#define MAX_ST (2 * CLOPT_MAX_STATE + 2)

static int part_path(char *buf, size_t cap, const char *prefix, long r)
{
    const int n =
        r < 0 ? snprintf(buf, cap, "%s.manifest", prefix) : snprintf(buf, cap, "%s.%ld", prefix, r);
    return n > 0 && (size_t)n < cap;
}

/* Renames tmp over path ("" tmp: nothing to do); tmp emptied once renamed. */
static clopt_status publish(clopt_mpi_optimizer *opt, char *tmp, const char *path)
{
    if (tmp[0] && rename(tmp, path) != 0)
        return clopt_mpi_fail(opt, CLOPT_ERR_IO, "renaming %s to %s failed", tmp, path);
    tmp[0] = '\0';
    return CLOPT_SUCCESS;
}

/* Every file is written under a temporary name first and renamed only once every rank wrote
   its part and rank 0 the manifest: a failure before that (an OpenCL read, memory, a full
   disk on any rank) leaves a previous checkpoint at the prefix as it was. The parts are
   renamed before the manifest, whose sizes and CRCs are theirs. */
clopt_status clopt_mpi_optimizer_save_shards(clopt_mpi_optimizer *opt, const char *prefix)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    char path[4096], mpath[4096], tmp[4096] = "", mtmp[4096] = "";
    clopt_mpi_blob blob = {0}, part = {0};
    clopt_status s = !prefix ? clopt_mpi_fail(opt, CLOPT_ERR_NULL_ARGUMENT, "prefix is NULL")
                     : !part_path(path, sizeof path, prefix, opt->rank) ||
                             !part_path(mpath, sizeof mpath, prefix, -1)
                         ? clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "prefix too long")
                         : CLOPT_SUCCESS;
    if (s == CLOPT_SUCCESS)
        s = clopt_mpi_pack_pieces(opt, &blob);
    uint32_t crc = 0;
    if (s == CLOPT_SUCCESS) {
        clopt_mpi_put(&part, PART_MAGIC, 8);
        clopt_mpi_put_u32(&part, SHARDS_VERSION);
        clopt_mpi_put_u32(&part, (uint32_t)opt->rank);
        clopt_mpi_put_u32(&part, (uint32_t)opt->size);
        clopt_mpi_put_u64(&part, blob.len);
        clopt_mpi_put(&part, blob.p, blob.len);
        crc = part.oom ? 0 : clopt_mpi_crc32c(part.p, part.len);
        clopt_mpi_put_u32(&part, crc);
        s = part.oom ? clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory")
                     : clopt_mpi_write_tmp(opt, path, &part, tmp);
    }
    const double extra[2] = {(double)part.len, (double)crc};
    double *all = opt->agree_all; /* allocated at create: no rank drops out */
    s = clopt_mpi_agree(opt, s, extra, 2, all); /* every part written, their sizes and CRCs */
    const int go = s == CLOPT_SUCCESS;          /* the same on every rank after an agreement */
    if (go && opt->rank == 0) {
        clopt_mpi_blob m = {0};
        clopt_mpi_put(&m, MAN_MAGIC, 8);
        clopt_mpi_put_u32(&m, SHARDS_VERSION);
        clopt_mpi_put_u32(&m, (uint32_t)opt->rule);
        clopt_mpi_put_u64(&m, opt->total);
        clopt_mpi_put_u64(&m, opt->ntensors);
        clopt_mpi_put_u64(&m, opt->steps);
        clopt_mpi_put_u32(&m, (uint32_t)opt->size);
        clopt_mpi_put_u32(&m, (uint32_t)opt->o.shard_tensors);
        for (size_t i = 0; i < opt->ntensors; i++) {
            clopt_mpi_put_u64(&m, opt->shapes[i].ndim);
            for (size_t k = 0; k < CLOPT_MAX_DIMS; k++)
                clopt_mpi_put_u64(&m, k < opt->shapes[i].ndim ? opt->shapes[i].shape[k] : 0);
        }
        for (int r = 0; r < opt->size; r++) {
            clopt_mpi_put_u64(&m, (uint64_t)opt->displs[r]);
            clopt_mpi_put_u64(&m, (uint64_t)opt->counts[r]);
            clopt_mpi_put_u64(&m, (uint64_t)all[3 * (size_t)r + 1]);
            clopt_mpi_put_u32(&m, (uint32_t)all[3 * (size_t)r + 2]);
        }
        clopt_mpi_put_u32(&m, m.oom ? 0 : clopt_mpi_crc32c(m.p, m.len));
        s = m.oom ? clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory")
                  : clopt_mpi_write_tmp(opt, mpath, &m, mtmp);
        free(m.p);
    }
    if (go)
        s = clopt_mpi_agree(opt, s, NULL, 0, all); /* rank 0's manifest written */
    if (s == CLOPT_SUCCESS) /* the same on every rank after an agreement */
        s = clopt_mpi_agree(opt, publish(opt, tmp, path), NULL, 0, all);
    if (s == CLOPT_SUCCESS) /* the manifest last: it describes the parts now in place */
        s = clopt_mpi_agree(opt, publish(opt, mtmp, mpath), NULL, 0, all);
    if (tmp[0])
        remove(tmp);
    if (mtmp[0])
        remove(mtmp);
    free(blob.p);
    free(part.p);
    return s;
}

/* ---- load ------------------------------------------------------------------------------------ */

typedef struct rec_state {
    const char *name; /* CLOPT_MPI_NAME_LEN bytes, NUL-padded */
    uint32_t esize;
    uint64_t len;
    const unsigned char *data;
} rec_state;
typedef struct rec {
    uint64_t tensor, off, len;
    uint32_t nstate;
    rec_state st[MAX_ST];
} rec;

/* Appends the records of one part's blob to *recs. */
static int parse_blob(const unsigned char *p, size_t len, rec **recs, size_t *n, size_t *cap)
{
    clopt_mpi_reader r = {p, len, 0, 0};
    while (r.at < r.len) {
        if (*n == *cap) {
            const size_t c = *cap ? 2 * *cap : 16;
            rec *q = realloc(*recs, c * sizeof *q);
            if (!q)
                return -1;
            *recs = q;
            *cap = c;
        }
        rec *x = &(*recs)[*n];
        x->tensor = clopt_mpi_get_u64(&r);
        x->off = clopt_mpi_get_u64(&r);
        x->len = clopt_mpi_get_u64(&r);
        x->nstate = clopt_mpi_get_u32(&r);
        if (r.bad || x->nstate > MAX_ST)
            return 1;
        for (uint32_t k = 0; k < x->nstate; k++) {
            rec_state *st = &x->st[k];
            st->name = clopt_mpi_get(&r, CLOPT_MPI_NAME_LEN);
            st->esize = clopt_mpi_get_u32(&r);
            st->len = clopt_mpi_get_u64(&r);
            if (r.bad || (st->esize != 1 && st->esize != 2 && st->esize != 4) ||
                st->len > (r.len - r.at) / st->esize)
                return 1;
            if (st->name[CLOPT_MPI_NAME_LEN - 1] != '\0')
                return 1;
            st->data = clopt_mpi_get(&r, (size_t)st->len * st->esize);
        }
        if (r.bad)
            return 1;
        (*n)++;
    }
    return 0;
}

/* The assembled state k of piece j: len elements of esize bytes from the records. */
static clopt_status assemble(clopt_mpi_optimizer *opt, const rec *recs, size_t nrecs, size_t j,
                             size_t k, const char *name, size_t esize, size_t len,
                             unsigned char *out)
{
    const clopt_mpi_piece *pc = &opt->pieces[j];
    /* per element, or per block of 256 elements (an 8-bit absmax, u = 256): pieces and saved
       parts then start on block boundaries of the tensor */
    const size_t u = clopt_mpi_state_unit(name);
    const int per_element = len == clopt_mpi_state_units(name, pc->len) && pc->off % u == 0;
    size_t covered = 0;
    for (size_t q = 0; q < nrecs; q++) {
        const rec *x = &recs[q];
        if (x->tensor != pc->tensor)
            continue;
        if (k >= x->nstate || strcmp(x->st[k].name, name) != 0 || x->st[k].esize != esize)
            return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                                  "tensor %zu: state %zu is %s, a saved part has another",
                                  pc->tensor, k, name);
        const rec_state *st = &x->st[k];
        if (!per_element) { /* a whole tensor's state (Adafactor's factored statistics) */
            if (x->off != 0 || x->len != opt->shapes[pc->tensor].n || st->len != len)
                return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                                      "tensor %zu: state %s was saved cut or of another length",
                                      pc->tensor, name);
            memcpy(out, st->data, len * esize);
            return CLOPT_SUCCESS;
        }
        if (st->len != clopt_mpi_state_units(name, x->len) || x->off % u != 0)
            return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                                  "tensor %zu: state %s is not per element (or per block) in the "
                                  "saved part",
                                  pc->tensor, name);
        const size_t xa = x->off / u, pa = pc->off / u; /* in the state's entries */
        const size_t lo = xa > pa ? xa : pa;
        const size_t hi = xa + st->len < pa + len ? xa + st->len : pa + len;
        if (lo >= hi)
            continue;
        memcpy(out + (lo - pa) * esize, st->data + (lo - xa) * esize, (hi - lo) * esize);
        covered += hi - lo;
    }
    if (covered != len)
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT,
                              "tensor %zu: the saved parts cover %zu of %zu elements of state %s",
                              pc->tensor, covered, len, name);
    return CLOPT_SUCCESS;
}

/* Checks the manifest; fills the saved ranges (first, count, bytes, crc per rank). */
static clopt_status parse_manifest(clopt_mpi_optimizer *opt, const unsigned char *p, size_t len,
                                   uint64_t *steps, uint32_t *world, uint64_t **ranges)
{
    *ranges = NULL;
    uint32_t crc = 0;
    if (len < 12 || memcmp(p, MAN_MAGIC, 8) != 0)
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "not a clopt_mpi manifest");
    memcpy(&crc, p + len - 4, 4);
    if (clopt_mpi_crc32c(p, len - 4) != crc)
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: CRC-32C mismatch");
    clopt_mpi_reader r = {p, len - 4, 8, 0};
    if (clopt_mpi_get_u32(&r) != SHARDS_VERSION)
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: unknown version");
    const uint32_t rule = clopt_mpi_get_u32(&r);
    const uint64_t total = clopt_mpi_get_u64(&r), nt = clopt_mpi_get_u64(&r);
    *steps = clopt_mpi_get_u64(&r);
    *world = clopt_mpi_get_u32(&r);
    clopt_mpi_get_u32(&r);
    if (r.bad)
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: truncated");
    if (*steps > CLOPT_MAX_STEP_COUNT) /* set_step_count, last, would refuse it */
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT,
                              "manifest: impossible step count (above 2^53 - 64)");
    if (rule != (uint32_t)opt->rule || total != opt->total || nt != opt->ntensors)
        return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                              "checkpoint of another rule, size or tensor count");
    for (size_t i = 0; i < opt->ntensors; i++) {
        const uint64_t nd = clopt_mpi_get_u64(&r);
        int same = nd == opt->shapes[i].ndim;
        for (size_t k = 0; k < CLOPT_MAX_DIMS; k++) {
            const uint64_t d = clopt_mpi_get_u64(&r);
            same = same && (k >= nd || d == opt->shapes[i].shape[k]);
        }
        if (r.bad)
            return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: truncated");
        if (!same)
            return clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH, "tensor %zu: another shape", i);
    }
    if (*world == 0 || *world > (r.len - r.at) / 28)
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: bad world size");
    uint64_t *g = malloc((size_t)*world * 4 * sizeof *g);
    if (!g)
        return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
    uint64_t next = 0;
    for (uint32_t w = 0; w < *world; w++) {
        g[4 * w] = clopt_mpi_get_u64(&r);
        g[4 * w + 1] = clopt_mpi_get_u64(&r);
        g[4 * w + 2] = clopt_mpi_get_u64(&r);
        g[4 * w + 3] = clopt_mpi_get_u32(&r);
        if (g[4 * w] != next || g[4 * w + 1] > total - next) {
            free(g);
            return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: shard ranges do not tile");
        }
        next += g[4 * w + 1];
    }
    if (r.bad || r.at != r.len || next != total) {
        free(g);
        return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT, "manifest: bad ranges or trailing bytes");
    }
    *ranges = g;
    return CLOPT_SUCCESS;
}

/* Reads the parts overlapping this rank's slice; every part checked against the manifest. */
static clopt_status read_parts(clopt_mpi_optimizer *opt, const char *prefix, uint32_t world,
                               const uint64_t *g, unsigned char **files, rec **recs, size_t *nrecs)
{
    size_t cap = 0;
    char path[4096];
    /* the elements whose state this rank needs: its slice, and the whole of a replicated
       tensor (Adafactor's cut tensors, which their first holder saved) */
    size_t need_lo = opt->first, need_hi = opt->first + opt->count;
    for (size_t j = 0; j < opt->npieces; j++) {
        const clopt_mpi_shape *t = &opt->shapes[opt->pieces[j].tensor];
        if (opt->pieces[j].rep) {
            need_lo = t->flat < need_lo ? t->flat : need_lo;
            need_hi = t->flat + t->n > need_hi ? t->flat + t->n : need_hi;
        }
    }
    for (uint32_t w = 0; w < world; w++) {
        const uint64_t lo = g[4 * w], hi = lo + g[4 * w + 1];
        if (opt->count == 0 || hi <= need_lo || lo >= need_hi)
            continue;
        size_t len = 0;
        if (!part_path(path, sizeof path, prefix, (long)w))
            return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "prefix too long");
        clopt_status s = clopt_mpi_read_file(path, SIZE_MAX, &files[w], &len);
        if (s != CLOPT_SUCCESS)
            return clopt_mpi_fail(opt, s, "cannot read %s", path);
        const unsigned char *p = files[w];
        uint32_t crc = 0, u[3] = {0, 0, 0};
        uint64_t blen = 0;
        if (len >= 32) {
            memcpy(&crc, p + len - 4, 4);
            memcpy(u, p + 8, 12);
            memcpy(&blen, p + 20, 8);
        }
        if (len != g[4 * w + 2] || len < 32 || crc != (uint32_t)g[4 * w + 3] ||
            clopt_mpi_crc32c(p, len - 4) != crc || memcmp(p, PART_MAGIC, 8) != 0 ||
            u[0] != SHARDS_VERSION || u[1] != w || u[2] != world || blen != len - 32)
            return clopt_mpi_fail(opt, CLOPT_ERR_FORMAT,
                                  "%s: size, CRC or header does not match the manifest", path);
        const int e = parse_blob(p + 28, (size_t)blen, recs, nrecs, &cap);
        if (e)
            return clopt_mpi_fail(opt, e < 0 ? CLOPT_ERR_OUT_OF_MEMORY : CLOPT_ERR_FORMAT,
                                  "%s: damaged records", path);
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_optimizer_load_shards(clopt_mpi_optimizer *opt, const char *prefix)
{
    if (!opt)
        return CLOPT_ERR_NULL_ARGUMENT;
    opt->err[0] = '\0';
    char path[4096];
    const int ok_path = prefix && part_path(path, sizeof path, prefix, -1);
    unsigned char *man = NULL;
    size_t mlen = 0;
    clopt_status s = clopt_mpi_bcast_file(opt, ok_path ? path : NULL, &man, &mlen);
    double *agree = opt->agree_all; /* allocated at create: no rank drops out */
    if (s != CLOPT_SUCCESS)
        return s;
    uint64_t steps = 0, *g = NULL;
    uint32_t world = 0;
    unsigned char **files = NULL;
    rec *recs = NULL;
    size_t nrecs = 0;
    unsigned char **bufs = NULL; /* per piece and state: the assembled bytes */
    if (!ok_path)
        s = clopt_mpi_fail(opt, prefix ? CLOPT_ERR_INVALID_ARGUMENT : CLOPT_ERR_NULL_ARGUMENT,
                           "prefix NULL or too long");
    if (s == CLOPT_SUCCESS)
        s = parse_manifest(opt, man, mlen, &steps, &world, &g);
    if (s == CLOPT_SUCCESS && !(files = calloc(world, sizeof *files)))
        s = clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
    if (s == CLOPT_SUCCESS)
        s = read_parts(opt, prefix, world, g, files, &recs, &nrecs);
    if (s == CLOPT_SUCCESS && !(bufs = calloc(opt->npieces * MAX_ST + 1, sizeof *bufs)))
        s = clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t j = 0; s == CLOPT_SUCCESS && j < opt->npieces; j++) {
        const size_t ns = clopt_optimizer_state_count(opt->local, j);
        for (size_t k = 0; s == CLOPT_SUCCESS && k < ns && k < MAX_ST; k++) {
            const char *name = NULL;
            size_t len = 0;
            clopt_optimizer_state_info(opt->local, j, k, &name, &len);
            const size_t es = clopt_dtype_size(clopt_mpi_state_dtype(opt->local, j, k));
            unsigned char *b = malloc(len * es + 1);
            bufs[j * MAX_ST + k] = b;
            s = b ? assemble(opt, recs, nrecs, j, k, name, es, len, b)
                  : clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
        }
        const char *mw = NULL;
        if (s == CLOPT_SUCCESS && clopt_mpi_check_master(opt->local, j, steps, &mw))
            s = clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH, "piece %zu: %s", j, mw);
        /* the saved records of this tensor must hold exactly as many states */
        for (size_t q = 0; s == CLOPT_SUCCESS && q < nrecs; q++)
            if (recs[q].tensor == opt->pieces[j].tensor && recs[q].nstate != ns)
                s = clopt_mpi_fail(opt, CLOPT_ERR_STATE_MISMATCH,
                                   "tensor %zu: %u saved states, %zu here", opt->pieces[j].tensor,
                                   recs[q].nstate, ns);
    }
    s = clopt_mpi_agree(opt, s, NULL, 0, agree); /* everything checked on every rank */
    const int go = s == CLOPT_SUCCESS;           /* the same on every rank after an agreement */
    for (size_t j = 0; s == CLOPT_SUCCESS && j < opt->npieces; j++) {
        const size_t ns = clopt_optimizer_state_count(opt->local, j);
        for (size_t k = 0; s == CLOPT_SUCCESS && k < ns; k++) {
            size_t len = 0;
            clopt_optimizer_state_info(opt->local, j, k, NULL, &len);
            const size_t es = clopt_dtype_size(clopt_mpi_state_dtype(opt->local, j, k));
            if (clopt_mpi_master_unset(opt->local, j, k, steps))
                continue; /* taken from θ at the first step */
            if ((s = clopt_mpi_state_io(opt->local, opt->ctx, j, k, bufs[j * MAX_ST + k], len, es,
                                        1)) != CLOPT_SUCCESS)
                clopt_mpi_fail(opt, s, "writing state %zu of piece %zu", k, j);
        }
    }
    if (s == CLOPT_SUCCESS &&
        (s = clopt_optimizer_set_step_count(opt->local, steps)) != CLOPT_SUCCESS)
        clopt_mpi_fail(opt, s, "set_step_count: %s", clopt_ctx_last_error(opt->ctx));
    if (s == CLOPT_SUCCESS)
        opt->steps = steps;
    if (go)
        s = clopt_mpi_agree(opt, s, NULL, 0, agree);
    for (size_t i = 0; bufs && i < opt->npieces * MAX_ST; i++)
        free(bufs[i]);
    for (uint32_t w = 0; files && w < world; w++)
        free(files[w]);
    free(bufs);
    free(files);
    free(recs);
    free(g);
    free(man);
    return s;
}
