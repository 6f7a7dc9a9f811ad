/* SPDX-License-Identifier: MIT */
/*
 * golden: messages, paths, bounded reading of files and JSON, typed arrays and the case list
 * (golden_list_cases). See golden.h and tests/data/golden/README.md.
 */
#define _POSIX_C_SOURCE 200809L

#include "golden_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void golden_put(char *buf, size_t len, const char *fmt, ...)
{
    if (buf == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* A JSON number that is an integer in [0, 2^53]. */
int golden_json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0.0 || v > 9007199254740992.0 || v != floor(v))
        return 0;
    *out = (uint64_t)v;
    return 1;
}


/* ------------------------------------------------------------------------------------ */
/* Files and paths                                                                       */
/* ------------------------------------------------------------------------------------ */

char *golden_path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/')
        la--;
    char *p = malloc(la + 1 + lb + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

int golden_file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Opens path for reading without blocking (a FIFO or device opens at once) and requires a
   regular file; *size receives its size. Returns the descriptor, or -1 with the reason. */
static int open_regular(const char *path, off_t *size, char *reason, size_t len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        golden_put(reason, len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        golden_put(reason, len, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    *size = sb.st_size;
    return fd;
}

/* Reads exactly n bytes (fewer: the file shrank, an error). Returns 0 or -1. */
static int read_exactly(int fd, void *buf, size_t n, const char *path, char *reason,
                        size_t len)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k > 0) {
            got += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else {
            golden_put(reason, len, "cannot read %s: %s", path,
                       k < 0 ? strerror(errno) : "shorter than its size");
            return -1;
        }
    }
    return 0;
}

/* Read a whole regular file of at most `max` bytes (its size checked before anything is
   read). Returns 0, or -1 with the reason naming path. The buffer gets a terminating NUL
   byte (not counted in *size). */
static int read_all(const char *path, size_t max, char **data, size_t *size, char *reason,
                    size_t len)
{
    *data = NULL;
    *size = 0;
    off_t fsize;
    int fd = open_regular(path, &fsize, reason, len);
    if (fd < 0)
        return -1;
    if (fsize < 0 || (uintmax_t)fsize > (uintmax_t)max) {
        golden_put(reason, len, "%s is too large (%jd bytes, at most %zu)", path, (intmax_t)fsize,
                   max);
        close(fd);
        return -1;
    }
    size_t n = (size_t)fsize;
    char *buf = malloc(n + 1);
    if (buf == NULL) {
        golden_put(reason, len, "out of memory reading %s", path);
        close(fd);
        return -1;
    }
    if (read_exactly(fd, buf, n, path, reason, len) != 0) {
        free(buf);
        close(fd);
        return -1;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return 0;
}

cJSON *golden_read_json(const char *path, char *reason, size_t len)
{
    char *text;
    size_t size;
    if (read_all(path, GOLDEN_LIMIT_JSON_BYTES, &text, &size, reason, len) != 0)
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, size, &end, 0);
    if (j == NULL) {
        size_t at = (end != NULL && end >= text && end <= text + size) ? (size_t)(end - text)
                                                                       : 0;
        golden_put(reason, len, "bad JSON in %s (near byte %zu)", path, at);
    }
    free(text);
    return j;
}

/* Load n little-endian float32 values; the file's size (checked before reading) must be
   exactly n*4 bytes. */
void golden_shape_str(char *buf, size_t len, const uint64_t *s, size_t nd)
{
    size_t pos = 0;
    buf[0] = '\0';
    pos += (size_t)snprintf(buf + pos, len - pos, "[");
    for (size_t i = 0; i < nd && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%llu", i ? ", " : "",
                                (unsigned long long)s[i]);
    if (pos < len)
        snprintf(buf + pos, len - pos, "]");
}

int golden_parse_shape(const cJSON *a, size_t maxdims, uint64_t *shape, size_t *ndim,
                       size_t *count)
{
    if (!cJSON_IsArray(a))
        return -1;
    size_t nd = 0;
    size_t n = 1;
    const cJSON *d;
    cJSON_ArrayForEach(d, a)
    {
        uint64_t v;
        if (nd >= maxdims || !golden_json_uint(d, &v) || v == 0)
            return -1;
        if (v > GOLDEN_LIMIT_FLOATS || n > GOLDEN_LIMIT_FLOATS / v)
            return -1;
        n *= (size_t)v;
        shape[nd++] = v;
    }
    if (nd == 0)
        return -1;
    *ndim = nd;
    *count = n;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Typed arrays                                                                          */
/* ------------------------------------------------------------------------------------ */

void golden_array_free(golden_array *a)
{
    if (a == NULL)
        return;
    free(a->data);
    a->data = NULL;
    a->count = 0;
}

int golden_load_array(const char *path, clopt_dtype dtype, size_t n, golden_array *out,
                      char *reason, size_t len)
{
    out->dtype = dtype;
    out->count = 0;
    out->data = NULL;
    const size_t es = clopt_dtype_size(dtype);
    if (es == 0) {
        golden_put(reason, len, "%s: no storage type %d", path, (int)dtype);
        return -1;
    }
    off_t fsize;
    int fd = open_regular(path, &fsize, reason, len);
    if (fd < 0)
        return -1;
    if (fsize < 0 || (uintmax_t)fsize != (uintmax_t)n * es) {
        golden_put(reason, len, "%s holds %jd bytes, expected %zu (%zu %s values)", path,
                   (intmax_t)fsize, n * es, n, golden_dtype_name(dtype));
        close(fd);
        return -1;
    }
    unsigned char *b = malloc(n ? n * es : 1);
    if (b == NULL) {
        golden_put(reason, len, "out of memory loading %s", path);
        close(fd);
        return -1;
    }
    if (read_exactly(fd, b, n * es, path, reason, len) != 0) {
        free(b);
        close(fd);
        return -1;
    }
    close(fd);
    /* little-endian bytes to host order, in place */
    if (es == 4) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                         (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
            memcpy(b + 4 * i, &u, sizeof u);
        }
    } else if (es == 2) {
        for (size_t i = 0; i < n; i++) {
            uint16_t u = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
            memcpy(b + 2 * i, &u, sizeof u);
        }
    }
    out->data = b;
    out->count = n;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Case list                                                                             */
/* ------------------------------------------------------------------------------------ */

int golden_is_case_dir(const char *dir)
{
    char *p = golden_path_join(dir, "meta.json");
    int r = p != NULL && golden_file_exists(p);
    free(p);
    return r;
}

void golden_case_list_free(golden_case_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->count; i++)
        free(list->dirs[i]);
    free(list->dirs);
    list->dirs = NULL;
    list->count = 0;
}

static int list_push(golden_case_list *l, size_t *cap, char *dir)
{
    if (dir == NULL)
        return -1;
    if (l->count == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        char **nd = realloc(l->dirs, nc * sizeof(char *));
        if (nd == NULL) {
            free(dir);
            return -1;
        }
        l->dirs = nd;
        *cap = nc;
    }
    l->dirs[l->count++] = dir;
    return 0;
}

int golden_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int golden_list_cases(const char *dir, golden_case_list *out, char *reason, size_t len)
{
    golden_put(reason, len, "%s", "");
    out->count = 0;
    out->dirs = NULL;
    size_t cap = 0;
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        golden_put(reason, len, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        golden_put(reason, len, "%s is not a directory", dir);
        return -1;
    }
    if (golden_is_case_dir(dir)) {
        char *d = strdup(dir);
        if (list_push(out, &cap, d) != 0)
            goto oom;
        return 0;
    }
    char *index = golden_path_join(dir, "index.json");
    if (index == NULL)
        goto oom;
    if (golden_file_exists(index)) {
        cJSON *j = golden_read_json(index, reason, len);
        if (j == NULL) {
            free(index);
            return -1;
        }
        const cJSON *cases = cJSON_GetObjectItemCaseSensitive(j, "cases");
        if (!cJSON_IsArray(cases)) {
            golden_put(reason, len, "%s: no \"cases\" array", index);
            cJSON_Delete(j);
            free(index);
            return -1;
        }
        const cJSON *c;
        cJSON_ArrayForEach(c, cases)
        {
            if (!cJSON_IsString(c) || c->valuestring[0] == '\0') {
                golden_put(reason, len, "%s: \"cases\" holds a non-string or empty entry", index);
                cJSON_Delete(j);
                free(index);
                golden_case_list_free(out);
                return -1;
            }
            if (list_push(out, &cap, golden_path_join(dir, c->valuestring)) != 0) {
                cJSON_Delete(j);
                free(index);
                goto oom;
            }
        }
        cJSON_Delete(j);
        if (out->count == 0) {
            golden_put(reason, len, "%s lists no cases", index);
            free(index);
            return -1;
        }
        free(index);
        return 0;
    }
    free(index);
    DIR *d = opendir(dir);
    if (d == NULL) {
        golden_put(reason, len, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *sub = golden_path_join(dir, e->d_name);
        if (sub == NULL) {
            closedir(d);
            goto oom;
        }
        if (stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode) && golden_is_case_dir(sub)) {
            if (list_push(out, &cap, sub) != 0) {
                closedir(d);
                goto oom;
            }
        } else {
            free(sub);
        }
    }
    closedir(d);
    if (out->count == 0) {
        golden_put(reason, len, "%s holds no meta.json, index.json or case subdirectory", dir);
        return -1;
    }
    qsort(out->dirs, out->count, sizeof(char *), golden_cmp_str);
    return 0;
oom:
    golden_case_list_free(out);
    golden_put(reason, len, "out of memory listing %s", dir);
    return -1;
}
