/* SPDX-License-Identifier: MIT */
/* Kernel sources embedded at build time -> programs compiled lazily, cached per context,
 * optionally also as program binaries on disk (CLOPT_CACHE_DIR).
 *
 * Disk cache entry (native byte order, a private cache of one machine):
 *   "CLOPTPB1" | u32 version | u32 key length | key | u64 binary size | u64 checksum | binary
 * The key holds the family, the build options, the device name, the driver and platform
 * versions and a hash of the source text; the checksum (FNV-1a 64) covers key and binary.
 * Entries are written to a temporary file and renamed into place, so a reader never sees
 * a half-written entry. Anything missing, stale or corrupt is ignored: we compile instead. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_MAGIC "CLOPTPB1"
#define CACHE_VERSION 1u
#define CACHE_MAX_BINARY (256u << 20)

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

static char *cache_path(const clopt_ctx *ctx, const char *key, size_t keylen)
{
    uint64_t h = clopt_fnv1a(0xcbf29ce484222325ULL, key, keylen);
    size_t len = strlen(ctx->cache_dir) + 40;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "%s/clopt-%016llx.bin", ctx->cache_dir, (unsigned long long)h);
    return path;
}

static uint64_t cache_checksum(const char *key, uint32_t keylen, const unsigned char *bin,
                               uint64_t binlen)
{
    uint64_t h = clopt_fnv1a(0xcbf29ce484222325ULL, key, keylen);
    return clopt_fnv1a(h, bin, (size_t)binlen);
}

/* Returns a built program from the cache, or NULL (silently) for any problem. */
static cl_program cache_load(clopt_ctx *ctx, const char *key, const char *options)
{
    char *path = cache_path(ctx, key, strlen(key));
    if (!path)
        return NULL;
    FILE *f = fopen(path, "rb");
    free(path);
    if (!f)
        return NULL;
    cl_program prog = NULL;
    unsigned char *bin = NULL;
    char *fkey = NULL;
    char magic[8];
    uint32_t version = 0, keylen = 0;
    uint64_t binlen = 0, sum = 0;
    size_t want = strlen(key);
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, CACHE_MAGIC, 8) != 0 ||
        fread(&version, sizeof version, 1, f) != 1 || version != CACHE_VERSION ||
        fread(&keylen, sizeof keylen, 1, f) != 1 || keylen != want)
        goto done;
    fkey = malloc(keylen);
    if (!fkey || fread(fkey, 1, keylen, f) != keylen || memcmp(fkey, key, keylen) != 0)
        goto done;
    if (fread(&binlen, sizeof binlen, 1, f) != 1 || binlen == 0 || binlen > CACHE_MAX_BINARY ||
        fread(&sum, sizeof sum, 1, f) != 1)
        goto done;
    bin = malloc((size_t)binlen);
    if (!bin || fread(bin, 1, (size_t)binlen, f) != binlen || fgetc(f) != EOF)
        goto done;
    if (cache_checksum(key, keylen, bin, binlen) != sum)
        goto done;
    size_t len = (size_t)binlen;
    const unsigned char *bins[1] = {bin};
    cl_int status = CL_SUCCESS, err = CL_SUCCESS;
    prog = clCreateProgramWithBinary(ctx->context, 1, &ctx->device, &len, bins, &status, &err);
    if (prog && (err != CL_SUCCESS || status != CL_SUCCESS ||
                 clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL) != CL_SUCCESS)) {
        clReleaseProgram(prog);
        prog = NULL;
    }
done:
    free(fkey);
    free(bin);
    fclose(f);
    return prog;
}

/* Best effort: a failure to write the cache never fails the call. */
static void cache_store(clopt_ctx *ctx, const char *key, cl_program prog)
{
    size_t binlen = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof binlen, &binlen, NULL) !=
            CL_SUCCESS ||
        binlen == 0 || binlen > CACHE_MAX_BINARY)
        return;
    unsigned char *bin = malloc(binlen);
    char *path = cache_path(ctx, key, strlen(key));
    char *tmp = path ? malloc(strlen(path) + 32) : NULL;
    unsigned char *bins[1] = {bin};
    if (!bin || !tmp ||
        clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS)
        goto done;
    snprintf(tmp, strlen(path) + 32, "%s.%ld.%llx.tmp", path, (long)getpid(),
             (unsigned long long)(uintptr_t)ctx & 0xffffffULL);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        goto done;
    uint32_t version = CACHE_VERSION, keylen = (uint32_t)strlen(key);
    uint64_t len64 = binlen, sum = cache_checksum(key, keylen, bin, len64);
    int ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&version, sizeof version, 1, f) == 1 &&
             fwrite(&keylen, sizeof keylen, 1, f) == 1 && fwrite(key, 1, keylen, f) == keylen &&
             fwrite(&len64, sizeof len64, 1, f) == 1 && fwrite(&sum, sizeof sum, 1, f) == 1 &&
             fwrite(bin, 1, binlen, f) == binlen;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0)
        remove(tmp);
done:
    free(bin);
    free(path);
    free(tmp);
}

/* ---- in-memory cache -------------------------------------------------------------------- */

static clopt_status build_program(clopt_ctx *ctx, const char *family, const char *options,
                                  cl_program *out)
{
    const clopt_embedded_file *common = find_source("common");
    const clopt_embedded_file *src = find_source(family);
    if (!src || !common)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED, "no embedded kernel source \"%s.cl\"",
                          family);
    char *key = NULL;
    cl_program prog = NULL;
    if (ctx->cache_dir) {
        uint64_t h = clopt_fnv1a(0xcbf29ce484222325ULL, common->data, common->size);
        h = clopt_fnv1a(h, src->data, src->size);
        size_t len = strlen(family) + strlen(options) + strlen(ctx->device_name) +
                     strlen(ctx->driver_version) + strlen(ctx->platform_version) + 64;
        key = malloc(len);
        if (!key)
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "program cache key");
        snprintf(key, len, "%s\n%s\n%s\n%s\n%s\n%016llx", family, options, ctx->device_name,
                 ctx->driver_version, ctx->platform_version, (unsigned long long)h);
        prog = cache_load(ctx, key, options);
        if (prog) {
            free(key);
            ctx->compiled++;
            ctx->from_disk++;
            *out = prog;
            return CLOPT_SUCCESS;
        }
    }
    const char *texts[2] = {common->data, src->data};
    size_t lens[2] = {common->size, src->size};
    cl_int err = CL_SUCCESS;
    prog = clCreateProgramWithSource(ctx->context, 2, texts, lens, &err);
    if (!prog) {
        free(key);
        return clopt_fail_cl(ctx, err, "clCreateProgramWithSource");
    }
    err = clBuildProgram(prog, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        set_build_log(ctx, prog);
        clReleaseProgram(prog);
        free(key);
        return clopt_fail(ctx, CLOPT_ERR_BUILD_FAILED,
                          "building %s.cl with \"%s\" failed (%d); see clopt_ctx_build_log", family,
                          options, (int)err);
    }
    ctx->compiled++;
    if (key) {
        cache_store(ctx, key, prog);
        free(key);
    }
    *out = prog;
    return CLOPT_SUCCESS;
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
