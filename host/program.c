/* SPDX-License-Identifier: MIT */
/* Kernel sources embedded at build time -> programs compiled lazily, cached per context,
 * optionally also as program binaries on disk (CLOPT_CACHE_DIR).
 *
 * The cache folder is used only if it is a folder owned by the effective user and not
 * writable by group or others (checked on an open descriptor, which every later access goes
 * through); a missing folder is created, with its missing parents, mode 0700. Otherwise the
 * context goes on without the disk cache, silently.
 *
 * Disk cache entry "clopt-<first 128 bits of SHA-256(key), hex>.bin" (native byte order, a
 * private cache of one machine):
 *   "CLOPTPB1" | u32 version | u32 key length | u64 binary size | key | binary | SHA-256
 * The SHA-256 covers every byte before it. The key holds the family, the build options, the
 * device name, the driver and platform versions and the SHA-256 of the source text. An entry
 * is read only if it is a regular file of the user (opened without following symlinks and
 * without blocking, so a FIFO cannot hang us) of at most CACHE_MAX_ENTRY bytes, and handed
 * to clCreateProgramWithBinary only if its version, key and hash all match. The hash
 * detects damaged, truncated and stale entries; the folder rules keep other users out (a
 * process running as the user can forge any entry, as it can forge anything the user owns).
 * Entries are written to a temporary file created exclusively (O_EXCL|O_NOFOLLOW, 0600)
 * under a random name in the folder and renamed into place, so a reader never sees a
 * half-written entry and a planted symlink is never followed. Anything missing, stale or
 * corrupt is ignored: we compile instead (and write a good entry over it). */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define CACHE_MAGIC "CLOPTPB1"
#define CACHE_VERSION 2u /* 1: FNV-1a checksum; 2: SHA-256, header reordered */
#define CACHE_HEADER (8u + 4u + 4u + 8u)
#define CACHE_MAX_ENTRY ((size_t)64 << 20)
#define CACHE_NAME_LEN 48 /* "clopt-" + 32 hex + ".bin" + NUL, with room */
#define CACHE_TMP_TRIES 16

static const clopt_embedded_file *find_source(const char *family)
{
    for (size_t i = 0; i < clopt_kernel_sources_count; i++)
        if (strcmp(clopt_kernel_sources[i].name, family) == 0)
            return &clopt_kernel_sources[i];
    return NULL;
}

static void set_build_log(clopt_ctx *ctx, cl_program prog)
{
    size_t len = 0;
    if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) !=
        CL_SUCCESS)
        return;
    char *log = malloc(len + 1);
    if (!log)
        return;
    if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, len, log, NULL) !=
        CL_SUCCESS)
        len = 0;
    log[len] = '\0';
    free(ctx->build_log);
    ctx->build_log = log;
}

/* ---- on-disk binary cache ------------------------------------------------------------- */

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* mkdir -p with mode 0700 for every folder it creates. 0 on success. */
static int make_folders(const char *path)
{
    size_t len = strlen(path);
    char *p = malloc(len + 1);
    if (!p)
        return -1;
    memcpy(p, path, len + 1);
    int rc = 0;
    for (size_t i = 1; i <= len && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            rc = -1;
        p[i] = c;
    }
    free(p);
    return rc;
}

/* The cache folder as an open descriptor, or -1: then the disk cache is off for this
   context (silently). Creates a missing folder (mode 0700). */
static int cache_open_folder(clopt_ctx *ctx)
{
    const int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    int fd = open(ctx->cache_dir, flags);
    if (fd < 0 && errno == ENOENT && make_folders(ctx->cache_dir) == 0)
        fd = open(ctx->cache_dir, flags);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
        (st.st_mode & (S_IWGRP | S_IWOTH)) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    free(ctx->cache_dir);
    ctx->cache_dir = NULL;
    return -1;
}

static void cache_name(const char *key, char name[CACHE_NAME_LEN])
{
    unsigned char d[CLOPT_SHA256_SIZE];
    char h[2 * 16 + 1];
    clopt_sha256(key, strlen(key), d);
    to_hex(d, 16, h);
    snprintf(name, CACHE_NAME_LEN, "clopt-%s.bin", h);
}

/* The whole entry file if it is a regular file of the user, not empty and at most
   CACHE_MAX_ENTRY bytes; NULL otherwise (FIFOs, devices, folders and symlinks included). */
static unsigned char *cache_read(int dirfd, const char *name, size_t *len)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        st.st_size <= 0 || (uint64_t)st.st_size > CACHE_MAX_ENTRY)
        goto fail;
    size_t n = (size_t)st.st_size, got = 0;
    buf = malloc(n + 1);
    if (!buf)
        goto fail;
    while (got <= n) { /* one byte more than expected must read as end of file */
        ssize_t r = read(fd, buf + got, n + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got != n)
        goto fail;
    close(fd);
    *len = n;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

/* Returns a built program from the cache, or NULL (silently) for any problem. */
static cl_program cache_load(clopt_ctx *ctx, int dirfd, const char *key, const char *options)
{
    char name[CACHE_NAME_LEN];
    cache_name(key, name);
    size_t len = 0;
    unsigned char *buf = cache_read(dirfd, name, &len);
    if (!buf)
        return NULL;
    cl_program prog = NULL;
    uint32_t version = 0, keylen = 0;
    uint64_t binlen = 0;
    size_t want = strlen(key);
    unsigned char digest[CLOPT_SHA256_SIZE];
    if (len < CACHE_HEADER + CLOPT_SHA256_SIZE || memcmp(buf, CACHE_MAGIC, 8) != 0)
        goto done;
    memcpy(&version, buf + 8, 4);
    memcpy(&keylen, buf + 12, 4);
    memcpy(&binlen, buf + 16, 8);
    if (version != CACHE_VERSION || keylen != want ||
        len - CACHE_HEADER - CLOPT_SHA256_SIZE < keylen ||
        binlen != len - CACHE_HEADER - CLOPT_SHA256_SIZE - keylen || binlen == 0)
        goto done;
    clopt_sha256(buf, len - CLOPT_SHA256_SIZE, digest);
    if (memcmp(digest, buf + len - CLOPT_SHA256_SIZE, CLOPT_SHA256_SIZE) != 0 ||
        memcmp(buf + CACHE_HEADER, key, keylen) != 0)
        goto done;
    size_t blen = (size_t)binlen;
    const unsigned char *bins[1] = {buf + CACHE_HEADER + keylen};
    cl_int status = CL_SUCCESS, err = CL_SUCCESS;
    prog = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &blen, bins, &status, &err);
    if (prog && (err != CL_SUCCESS || status != CL_SUCCESS ||
                 clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL) != CL_SUCCESS)) {
        clReleaseProgram(prog);
        prog = NULL;
    }
done:
    free(buf);
    return prog;
}

/* A temporary name nobody can guess: 64 bits from /dev/urandom, mixed (through SHA-256)
   with the clocks, the process id, the context's address and the attempt, so that it
   still differs per attempt where /dev/urandom cannot be read. */
static void cache_tmp_name(const clopt_ctx *ctx, const char *name, unsigned attempt,
                           char *out, size_t outlen)
{
    clopt_sha256_ctx s;
    clopt_sha256_init(&s);
    unsigned char seed[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, seed, sizeof seed) != (ssize_t)sizeof seed)
            memset(seed, 0, sizeof seed);
        close(fd);
    }
    struct timespec t[2] = {{0, 0}, {0, 0}};
    clock_gettime(CLOCK_REALTIME, &t[0]);
    clock_gettime(CLOCK_MONOTONIC, &t[1]);
    pid_t pid = getpid();
    uintptr_t addr = (uintptr_t)ctx;
    clopt_sha256_update(&s, seed, sizeof seed);
    clopt_sha256_update(&s, t, sizeof t);
    clopt_sha256_update(&s, &pid, sizeof pid);
    clopt_sha256_update(&s, &addr, sizeof addr);
    clopt_sha256_update(&s, &attempt, sizeof attempt);
    unsigned char d[CLOPT_SHA256_SIZE];
    clopt_sha256_final(&s, d);
    char h[2 * 8 + 1];
    to_hex(d, 8, h);
    snprintf(out, outlen, "%s.%s.tmp", name, h);
}

static int write_full(int fd, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Best effort: a failure to write the cache never fails the call. */
static void cache_store(clopt_ctx *ctx, int dirfd, const char *key, cl_program prog)
{
    /* a program built from source belongs to every device of the context: the binary
       queries take one entry per device (a single entry fails on a conformant driver with
       several devices), and ours is the one of ctx->device (NULL pointers skip the others).
       PoCL 3.1 puts the one built binary first whatever the device's place, so with several
       devices it finds size 0 at ours and stores nothing (it compiles instead). */
    size_t binlen = 0, keylen = strlen(key), at = 0;
    cl_uint nd = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_NUM_DEVICES, sizeof nd, &nd, NULL) != CL_SUCCESS ||
        nd == 0 || nd > 1024 || keylen > UINT32_MAX)
        return;
    cl_device_id *devs = malloc(nd * sizeof *devs);
    size_t *sizes = calloc(nd, sizeof *sizes);
    unsigned char **bins = calloc(nd, sizeof *bins), *bin = NULL;
    if (devs && sizes && bins &&
        clGetProgramInfo(prog, CL_PROGRAM_DEVICES, nd * sizeof *devs, devs, NULL) == CL_SUCCESS &&
        clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, nd * sizeof *sizes, sizes, NULL) ==
            CL_SUCCESS) {
        while (at < nd && devs[at] != ctx->device)
            at++;
        if (at < nd)
            binlen = sizes[at];
    }
    if (binlen > 0 && binlen <= CACHE_MAX_ENTRY - CACHE_HEADER - CLOPT_SHA256_SIZE - keylen &&
        (bin = malloc(binlen)) != NULL) {
        bins[at] = bin;
        if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, nd * sizeof *bins, bins, NULL) !=
            CL_SUCCESS) {
            free(bin);
            bin = NULL;
        }
    }
    free(devs);
    free(sizes);
    free(bins);
    if (!bin)
        return;
    char name[CACHE_NAME_LEN], tmp[CACHE_NAME_LEN + 32];
    cache_name(key, name);
    int fd = -1;
    for (unsigned attempt = 0; attempt < CACHE_TMP_TRIES && fd < 0; attempt++) {
        cache_tmp_name(ctx, name, attempt, tmp, sizeof tmp);
        fd = openat(dirfd, tmp, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        free(bin);
        return;
    }
    unsigned char header[CACHE_HEADER];
    uint32_t version = CACHE_VERSION, klen = (uint32_t)keylen;
    uint64_t len64 = binlen;
    memcpy(header, CACHE_MAGIC, 8);
    memcpy(header + 8, &version, 4);
    memcpy(header + 12, &klen, 4);
    memcpy(header + 16, &len64, 8);
    clopt_sha256_ctx s;
    clopt_sha256_init(&s);
    clopt_sha256_update(&s, header, sizeof header);
    clopt_sha256_update(&s, key, keylen);
    clopt_sha256_update(&s, bin, binlen);
    unsigned char digest[CLOPT_SHA256_SIZE];
    clopt_sha256_final(&s, digest);
    int ok = write_full(fd, header, sizeof header) == 0 && write_full(fd, key, keylen) == 0 &&
             write_full(fd, bin, binlen) == 0 && write_full(fd, digest, sizeof digest) == 0;
    ok = (close(fd) == 0) && ok;
    if (!ok || renameat(dirfd, tmp, dirfd, name) != 0)
        unlinkat(dirfd, tmp, 0);
    free(bin);
}

/* ---- in-memory cache -------------------------------------------------------------------- */

/* Put before the caller's options in every build (the disk cache key included):
 *  - -cl-std=CL1.2: the kernels are OpenCL C 1.2 and use no extension, so every conformant
 *    implementation (1.2, 2.x, 3.0) must accept them. The specification's default is
 *    already the device's highest 1.x version; saying it makes the contract explicit (a
 *    driver that defaults to 2.0 would accept code 1.2 forbids), and a device without
 *    OpenCL C 1.2 fails the build with its log instead of compiling as 1.1.
 *  - -Werror when the library is built with the CMake option CLOPT_KERNEL_WERROR (ON in
 *    ci/test.sh: PoCL's and Oclgrind's clang then fail the tests on any kernel warning).
 *    A build option, not a field of the context: vendors' compilers warn about different
 *    things, so an application must not fail on a driver's new warning, and the choice
 *    needs no global state and no API.
 *  - -cl-fp32-correctly-rounded-divide-sqrt where the device offers it (ctx->divsqrt_cr,
 *    build_program): OpenCL C otherwise allows 2.5 ulp for x / y and 3 ulp for sqrt, which
 *    GPU compilers use (approximate division); every rule divides and takes a square root
 *    per element, and the tests' bounds and the golden trajectories assume IEEE results, as
 *    a CPU gives them (the kernels are memory-bound: the exact operations should cost little;
 *    not measured on a GPU yet). */
#ifdef CLOPT_KERNEL_WERROR
#define BASE_OPTIONS "-cl-std=CL1.2 -Werror"
#else
#define BASE_OPTIONS "-cl-std=CL1.2"
#endif

/* The files of a program: the three of the shared prelude and the family's. */
#define PROGRAM_FILES 4

/* options: the whole option string, BASE_OPTIONS included (build_program below). */
static clopt_status build_with(clopt_ctx *ctx, const char *family, const char *options,
                               cl_program *out)
{
    /* the shared prelude (kernels/common.cl, storage.cl, chunks.cl), then the family */
    const clopt_embedded_file *files[PROGRAM_FILES] = {find_source("common"),
                                                       find_source("storage"),
                                                       find_source("chunks"), find_source(family)};
    for (size_t i = 0; i < PROGRAM_FILES; i++)
        if (!files[i])
            return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED, "no embedded kernel source \"%s.cl\"",
                              i + 1 < PROGRAM_FILES ? "common, storage or chunks" : family);
    char *key = NULL;
    cl_program prog = NULL;
    int dirfd = ctx->cache_dir ? cache_open_folder(ctx) : -1;
    if (dirfd >= 0) {
        /* the source text as it is compiled: every file, each after its length */
        clopt_sha256_ctx s;
        clopt_sha256_init(&s);
        for (size_t i = 0; i < PROGRAM_FILES; i++) {
            const uint64_t n = files[i]->size;
            clopt_sha256_update(&s, &n, sizeof n);
            clopt_sha256_update(&s, files[i]->data, files[i]->size);
        }
        unsigned char d[CLOPT_SHA256_SIZE];
        char h[2 * CLOPT_SHA256_SIZE + 1];
        clopt_sha256_final(&s, d);
        to_hex(d, sizeof d, h);
        size_t len = strlen(family) + strlen(options) + strlen(ctx->device_name) +
                     strlen(ctx->driver_version) + strlen(ctx->platform_version) + sizeof h + 8;
        key = malloc(len);
        if (!key) {
            close(dirfd);
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "program cache key");
        }
        snprintf(key, len, "%s\n%s\n%s\n%s\n%s\n%s", family, options, ctx->device_name,
                 ctx->driver_version, ctx->platform_version, h);
        prog = cache_load(ctx, dirfd, key, options);
        if (prog) {
            free(key);
            close(dirfd);
            ctx->compiled++;
            ctx->from_disk++;
            *out = prog;
            return CLOPT_SUCCESS;
        }
    }
    const char *texts[PROGRAM_FILES];
    size_t lens[PROGRAM_FILES];
    for (size_t i = 0; i < PROGRAM_FILES; i++)
        texts[i] = files[i]->data, lens[i] = files[i]->size;
    cl_int err = CL_SUCCESS;
    prog = clCreateProgramWithSource(ctx->context, PROGRAM_FILES, texts, lens, &err);
    if (!prog) {
        free(key);
        if (dirfd >= 0)
            close(dirfd);
        return clopt_fail_cl(ctx, err, "clCreateProgramWithSource");
    }
    err = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        set_build_log(ctx, prog);
        clReleaseProgram(prog);
        free(key);
        if (dirfd >= 0)
            close(dirfd);
        return clopt_fail(ctx, CLOPT_ERR_BUILD_FAILED,
                          "building %s.cl with \"%s\" failed (%d); see clopt_ctx_build_log", family,
                          options, (int)err);
    }
    ctx->compiled++;
    if (key) {
        cache_store(ctx, dirfd, key, prog);
        free(key);
    }
    if (dirfd >= 0)
        close(dirfd);
    *out = prog;
    return CLOPT_SUCCESS;
}

static clopt_status build_program(clopt_ctx *ctx, const char *family, const char *options,
                                  cl_program *out)
{
    static const char divsqrt[] = " -cl-fp32-correctly-rounded-divide-sqrt";
    const size_t len = sizeof BASE_OPTIONS + sizeof divsqrt + 1 + strlen(options);
    char *all = malloc(len);
    if (!all)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "build options");
    snprintf(all, len, "%s%s %s", BASE_OPTIONS, ctx->divsqrt_cr ? divsqrt : "", options);
    clopt_status s = build_with(ctx, family, all, out);
    free(all);
    return s;
}

static clopt_program_entry *find_program(clopt_ctx *ctx, const char *family, const char *options)
{
    for (size_t i = 0; i < ctx->nprograms; i++)
        if (strcmp(ctx->programs[i].family, family) == 0 &&
            strcmp(ctx->programs[i].options, options) == 0)
            return &ctx->programs[i];
    return NULL;
}

clopt_status clopt_get_kernel(clopt_ctx *ctx, const char *family, const char *options,
                              const char *name, cl_kernel *out)
{
    clopt_program_entry *pe = find_program(ctx, family, options);
    if (!pe) {
        if (ctx->nprograms == ctx->cap_programs) {
            size_t cap = ctx->cap_programs ? 2 * ctx->cap_programs : 16;
            clopt_program_entry *p = realloc(ctx->programs, cap * sizeof *p);
            if (!p)
                return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "program cache");
            ctx->programs = p;
            ctx->cap_programs = cap;
        }
        cl_program prog = NULL;
        clopt_status s = build_program(ctx, family, options, &prog);
        if (s != CLOPT_SUCCESS)
            return s;
        char *f = clopt_strdup(family), *o = clopt_strdup(options);
        if (!f || !o) {
            free(f);
            free(o);
            clReleaseProgram(prog);
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "program cache");
        }
        pe = &ctx->programs[ctx->nprograms++];
        *pe = (clopt_program_entry){f, o, prog, NULL, 0};
    }
    for (size_t i = 0; i < pe->nkernels; i++)
        if (strcmp(pe->kernels[i].name, name) == 0) {
            *out = pe->kernels[i].kernel;
            return CLOPT_SUCCESS;
        }
    clopt_kernel_entry *ks = realloc(pe->kernels, (pe->nkernels + 1) * sizeof *ks);
    if (!ks)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "kernel cache");
    pe->kernels = ks;
    cl_int err = CL_SUCCESS;
    cl_kernel k = clCreateKernel(pe->program, name, &err);
    if (!k)
        return clopt_fail_cl(ctx, err, "clCreateKernel");
    char *kn = clopt_strdup(name);
    if (!kn) {
        clReleaseKernel(k);
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "kernel cache");
    }
    ks[pe->nkernels++] = (clopt_kernel_entry){kn, k};
    *out = k;
    return CLOPT_SUCCESS;
}

void clopt_programs_release(clopt_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nprograms; i++) {
        clopt_program_entry *pe = &ctx->programs[i];
        for (size_t k = 0; k < pe->nkernels; k++) {
            clReleaseKernel(pe->kernels[k].kernel);
            free(pe->kernels[k].name);
        }
        free(pe->kernels);
        clReleaseProgram(pe->program);
        free(pe->family);
        free(pe->options);
    }
    free(ctx->programs);
    ctx->programs = NULL;
    ctx->nprograms = ctx->cap_programs = 0;
}

clopt_status clopt_ctx_kernel(clopt_ctx *ctx, const char *family, const char *options,
                              const char *kernel_name, cl_kernel *out)
{
    if (!ctx || !family || !kernel_name || !out)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "clopt_ctx_kernel: NULL argument");
    clopt_clear_error(ctx);
    *out = NULL;
    return clopt_get_kernel(ctx, family, options ? options : "", kernel_name, out);
}
