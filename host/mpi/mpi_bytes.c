/* SPDX-License-Identifier: MIT */
/* Bytes for the checkpoints (mpi_checkpoint.c: one gathered file; mpi_shards.c: a file per
 * rank and a manifest): growable buffers and a bounds-checked reader, CRC-32C, whole files,
 * the raw state of the shard's pieces. */
#define _POSIX_C_SOURCE 200809L /* fdopen, fsync, getpid, fseeko, ftello */
#include "mpi_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- bytes ----------------------------------------------------------------------------------- */

void clopt_mpi_put(clopt_mpi_blob *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
void clopt_mpi_put_u32(clopt_mpi_blob *b, uint32_t v)
{
    clopt_mpi_put(b, &v, 4);
}
void clopt_mpi_put_u64(clopt_mpi_blob *b, uint64_t v)
{
    clopt_mpi_put(b, &v, 8);
}

const void *clopt_mpi_get(clopt_mpi_reader *r, size_t n)
{
    if (r->bad || n > r->len - r->at) {
        r->bad = 1;
        return NULL;
    }
    const void *q = r->p + r->at;
    r->at += n;
    return q;
}
uint32_t clopt_mpi_get_u32(clopt_mpi_reader *r)
{
    uint32_t v = 0;
    const void *q = clopt_mpi_get(r, 4);
    if (q)
        memcpy(&v, q, 4);
    return v;
}
uint64_t clopt_mpi_get_u64(clopt_mpi_reader *r)
{
    uint64_t v = 0;
    const void *q = clopt_mpi_get(r, 8);
    if (q)
        memcpy(&v, q, 8);
    return v;
}

/* CRC-32C (Castagnoli, reflected), table-driven; the table is built per call (2048
   operations; no global state). */
uint32_t clopt_mpi_crc32c(const unsigned char *p, size_t n)
{
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

size_t clopt_mpi_state_unit(const char *name)
{
    static const char sfx[] = ".absmax";
    const size_t n = name ? strlen(name) : 0, k = sizeof sfx - 1;
    return n > k && strcmp(name + n - k, sfx) == 0 ? CLOPT_MPI_Q8_BLOCK : 1;
}

size_t clopt_mpi_state_units(const char *name, size_t n)
{
    const size_t u = clopt_mpi_state_unit(name);
    return n / u + (n % u != 0);
}

int clopt_mpi_master_unset(const clopt_optimizer *o, size_t param, size_t k, uint64_t steps)
{
    const char *name = NULL;
    return steps == 0 && clopt_optimizer_state_info(o, param, k, &name, NULL) == CLOPT_SUCCESS &&
           name && strcmp(name, "master") == 0;
}

clopt_status clopt_mpi_check_master(const clopt_optimizer *o, size_t param, uint64_t steps,
                                    const char **why)
{
    uint64_t done = 0;
    for (size_t k = 0; k < clopt_optimizer_state_count(o, param); k++)
        if (clopt_mpi_master_unset(o, param, k, steps) &&
            clopt_optimizer_param_step_count(o, param, &done) == CLOPT_SUCCESS && done > 0) {
            *why = "a checkpoint saved before the first step holds no float32 master, and this "
                   "tensor's was already taken from its parameters: load it into a new "
                   "optimizer";
            return CLOPT_ERR_STATE_MISMATCH;
        }
    return CLOPT_SUCCESS;
}

/* ---- one state tensor of the internal optimizer, raw ------------------------------------- */

/* The dtype of state k of parameter `param` (from the state entries). */
clopt_dtype clopt_mpi_state_dtype(const clopt_optimizer *o, size_t param, size_t k)
{
    const size_t n = clopt_optimizer_state_entry_count(o);
    clopt_state_entry e;
    for (size_t i = 0; i < n; i++)
        if (clopt_optimizer_state_entry(o, i, &e) == CLOPT_SUCCESS && e.param == param &&
            e.index == k)
            return e.dtype;
    return CLOPT_DTYPE_F32;
}

/* Reads (or writes) len elements of esize bytes of state k of `param`: float32 states through
   read_state/write_state (Lookahead's slow weights of a fresh tensor read as θ), 8- and
   16-bit ones from their tensor directly. */
clopt_status clopt_mpi_state_io(clopt_optimizer *o, clopt_ctx *ctx, size_t param, size_t k,
                                void *host, size_t len, size_t esize, int write)
{
    if (esize == 4)
        return write ? clopt_optimizer_write_state(o, param, k, host, len)
                     : clopt_optimizer_read_state(o, param, k, host, len);
    clopt_tensor t;
    clopt_status s = clopt_optimizer_state(o, param, k, &t);
    if (s != CLOPT_SUCCESS)
        return s;
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    const cl_int e = write ? clEnqueueWriteBuffer(q, t.buffer, CL_TRUE, t.offset * esize,
                                                  len * esize, host, 0, NULL, NULL)
                           : clEnqueueReadBuffer(q, t.buffer, CL_TRUE, t.offset * esize,
                                                 len * esize, host, 0, NULL, NULL);
    return e == CL_SUCCESS ? CLOPT_SUCCESS : (clopt_status)(CLOPT_ERR_OPENCL_BASE + e);
}

/* This rank's pieces: u64 tensor, u64 off, u64 len, u32 nstate, per state name[32], u32 esize,
   u64 length, bytes. */
clopt_status clopt_mpi_pack_pieces(clopt_mpi_optimizer *opt, clopt_mpi_blob *b)
{
    for (size_t j = 0; j < opt->npieces; j++) {
        const clopt_mpi_piece *pc = &opt->pieces[j];
        if (pc->rep == 2)
            continue; /* a replicated tensor: its first holder saves it */
        const size_t ns = clopt_optimizer_state_count(opt->local, j);
        clopt_mpi_put_u64(b, pc->tensor);
        clopt_mpi_put_u64(b, pc->off);
        clopt_mpi_put_u64(b, pc->len);
        clopt_mpi_put_u32(b, (uint32_t)ns);
        for (size_t k = 0; k < ns; k++) {
            const char *name = NULL;
            size_t len = 0;
            clopt_status s = clopt_optimizer_state_info(opt->local, j, k, &name, &len);
            if (s != CLOPT_SUCCESS)
                return clopt_mpi_fail(opt, s, "state %zu of piece %zu", k, j);
            const size_t es = clopt_dtype_size(clopt_mpi_state_dtype(opt->local, j, k));
            char nm[CLOPT_MPI_NAME_LEN] = {0};
            strncpy(nm, name, CLOPT_MPI_NAME_LEN - 1);
            clopt_mpi_put(b, nm, CLOPT_MPI_NAME_LEN);
            clopt_mpi_put_u32(b, (uint32_t)es);
            clopt_mpi_put_u64(b, len);
            unsigned char *data = malloc(len * es + 1);
            if (!data)
                return clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
            s = clopt_mpi_state_io(opt->local, opt->ctx, j, k, data, len, es, 0);
            clopt_mpi_put(b, data, len * es);
            free(data);
            if (s != CLOPT_SUCCESS)
                return clopt_mpi_fail(opt, s, "reading state %s of piece %zu", name, j);
        }
    }
    return b->oom ? clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory")
                  : CLOPT_SUCCESS;
}

clopt_status clopt_mpi_write_tmp(clopt_mpi_optimizer *opt, const char *path,
                                 const clopt_mpi_blob *b, char *tmp)
{
    tmp[0] = '\0';
    char name[4096];
    if (snprintf(name, sizeof name, "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof name)
        return clopt_mpi_fail(opt, CLOPT_ERR_INVALID_ARGUMENT, "path too long");
    /* a new file, private to the user (0600), never opened through a symlink nor over
       something else of that name (fopen followed a planted link and wrote where it
       pointed); a regular file of ours there is a crashed run's leftover: replaced */
    int fd = -1, err = 0;
    for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
        fd = open(name, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0600);
        err = fd < 0 ? errno : 0;
        struct stat st;
        if (fd >= 0 || err != EEXIST || lstat(name, &st) != 0 || !S_ISREG(st.st_mode) ||
            st.st_uid != geteuid() || unlink(name) != 0)
            break;
    }
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0) {
            close(fd);
            remove(name);
        }
        char why[256]; /* (strerror may share one buffer between threads) */
        if (strerror_r(err, why, sizeof why) != 0)
            snprintf(why, sizeof why, "error %d", err);
        return clopt_mpi_fail(opt, CLOPT_ERR_IO, "cannot create %s (%s)", name, why);
    }
    const int ok = fwrite(b->p, 1, b->len, f) == b->len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0 || !ok) {
        remove(name);
        return clopt_mpi_fail(opt, CLOPT_ERR_IO, "writing %s failed", name);
    }
    memcpy(tmp, name, strlen(name) + 1);
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_write_file(clopt_mpi_optimizer *opt, const char *path,
                                  const clopt_mpi_blob *b)
{
    char tmp[4096];
    clopt_status s = clopt_mpi_write_tmp(opt, path, b, tmp);
    if (s == CLOPT_SUCCESS && rename(tmp, path) != 0) {
        remove(tmp);
        s = clopt_mpi_fail(opt, CLOPT_ERR_IO, "renaming %s to %s failed", tmp, path);
    }
    return s;
}

/* One fread at most this long: read(2) takes at most 0x7ffff000 bytes on Linux, and C
   libraries differ in how they split longer reads. */
#define READ_CHUNK ((size_t)1 << 30)

/* Reads a file whole (rank 0's gathered checkpoint or manifest, each rank's parts), of any
   size up to max: the buffer is sized from the file's length (a file over max is refused
   before anything is allocated or read), then grows if the file was longer. */
clopt_status clopt_mpi_read_file(const char *path, size_t max, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return CLOPT_ERR_IO;
    size_t cap = (size_t)1 << 16;
    if (fseeko(f, 0, SEEK_END) == 0) {
        const off_t end = ftello(f);
        if (end >= 0 && (uintmax_t)end > max) {
            fclose(f);
            return CLOPT_ERR_INVALID_SIZE;
        }
        if (end >= 0)
            cap = (size_t)end + 1; /* +1: the read that meets the end fits without growing */
        if (fseeko(f, 0, SEEK_SET) != 0) {
            fclose(f);
            return CLOPT_ERR_IO;
        }
    }
    unsigned char *p = malloc(cap);
    size_t n = 0;
    while (p && n <= max) {
        if (n == cap) {
            unsigned char *q = cap > SIZE_MAX / 2 ? NULL : realloc(p, 2 * cap);
            if (!q)
                break;
            p = q;
            cap *= 2;
        }
        const size_t want = cap - n < READ_CHUNK ? cap - n : READ_CHUNK;
        const size_t got = fread(p + n, 1, want, f);
        n += got;
        if (got < want)
            break; /* the end, or an error (ferror below) */
    }
    const int err = ferror(f), full = n == cap;
    fclose(f);
    clopt_status s = !p        ? CLOPT_ERR_OUT_OF_MEMORY
                     : err     ? CLOPT_ERR_IO
                     : n > max ? CLOPT_ERR_INVALID_SIZE  /* it grew since its length was read */
                     : full    ? CLOPT_ERR_OUT_OF_MEMORY /* it could not grow */
                               : CLOPT_SUCCESS;
    if (s != CLOPT_SUCCESS) {
        free(p);
        return s;
    }
    *out = p;
    *len = n;
    return CLOPT_SUCCESS;
}

clopt_status clopt_mpi_bcast_file(clopt_mpi_optimizer *opt, const char *path, unsigned char **out,
                                  size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    /* rank 0 reads; every rank gets {status, length}, then the bytes */
    unsigned char *bytes = NULL;
    size_t len = 0;
    clopt_status s = CLOPT_SUCCESS;
    if (opt->rank == 0) {
        /* MPI_Bcast's count is int */
        s = !path ? clopt_mpi_fail(opt, CLOPT_ERR_NULL_ARGUMENT, "path is NULL on rank 0")
                  : clopt_mpi_read_file(path, INT_MAX, &bytes, &len);
        if (s == CLOPT_ERR_INVALID_SIZE)
            clopt_mpi_fail(opt, s, "%s is 2 GiB or more (MPI counts are int)", path);
        if (s != CLOPT_SUCCESS && !opt->err[0])
            clopt_mpi_fail(opt, s, "cannot read %s", path);
    }
    double head[2] = {(double)s, (double)len};
    int rc = MPI_Bcast(head, 2, MPI_DOUBLE, 0, opt->comm);
    if (rc != MPI_SUCCESS) {
        free(bytes);
        return clopt_mpi_check(opt, rc, "MPI_Bcast");
    }
    if (head[0] != 0.0) {
        free(bytes);
        return opt->rank == 0
                   ? s
                   : clopt_mpi_fail(opt, (clopt_status)CLOPT_MPI_ERR_REMOTE,
                                    "rank 0 could not read %s", path ? path : "the file");
    }
    len = (size_t)head[1];
    if (opt->rank != 0 && !(bytes = malloc(len ? len : 1)))
        s = clopt_mpi_fail(opt, CLOPT_ERR_OUT_OF_MEMORY, "out of host memory");
    s = clopt_mpi_agree(opt, s, NULL, 0, opt->agree_all); /* every rank has its buffer */
    if (s == CLOPT_SUCCESS &&
        (rc = MPI_Bcast(bytes, (int)len, MPI_BYTE, 0, opt->comm)) != MPI_SUCCESS)
        s = clopt_mpi_check(opt, rc, "MPI_Bcast (file)");
    if (s != CLOPT_SUCCESS) {
        free(bytes);
        return s;
    }
    *out = bytes;
    *out_len = len;
    return CLOPT_SUCCESS;
}
