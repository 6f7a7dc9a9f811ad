/* SPDX-License-Identifier: MIT */
/*
 * The data side of the training example: Fashion-MNIST IDX files read through zlib, the
 * input statistics and the host random numbers (initialisation and shuffling). See mlp.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlp.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

void mlp_put_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------ */
/* Data                                                                                  */
/* ------------------------------------------------------------------------------------ */

const char *mlp_data_dir(const char *dir)
{
    if (dir && *dir)
        return dir;
    const char *env = getenv(MLP_DATA_ENV);
    if (env && *env)
        return env;
    return MLP_DEFAULT_DATA_DIR;
}

/* An IDX file (gzip or plain: gzread reads both). */
typedef struct idx_file {
    gzFile f;
    char path[1024];
} idx_file;

static int idx_open(idx_file *x, const char *dir, const char *name, char *err, size_t errlen)
{
    struct stat st;
    snprintf(x->path, sizeof x->path, "%s/%s.gz", dir, name);
    if (stat(x->path, &st) != 0) {
        char plain[1024];
        snprintf(plain, sizeof plain, "%s/%s", dir, name);
        if (stat(plain, &st) != 0) {
            mlp_put_err(err, errlen,
                        "Fashion-MNIST file %s(.gz) not found (install Debian's "
                        "dataset-fashion-mnist package, e.g. with ci/install-deps.sh, or point "
                        "--data / $" MLP_DATA_ENV " at a folder with the IDX files)",
                        plain);
            return -1;
        }
        memcpy(x->path, plain, sizeof plain);
    }
    x->f = gzopen(x->path, "rb");
    if (!x->f) {
        mlp_put_err(err, errlen, "%s: cannot open: %s", x->path, strerror(errno));
        return -1;
    }
    return 0;
}

static int idx_read(idx_file *x, void *dst, size_t n, char *err, size_t errlen)
{
    unsigned char *p = dst;
    while (n > 0) {
        const unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        const int got = gzread(x->f, p, chunk);
        if (got <= 0) {
            int zerr = 0;
            const char *msg = gzerror(x->f, &zerr);
            mlp_put_err(err, errlen, "%s: truncated or unreadable (%s)", x->path,
                        zerr ? msg : "unexpected end of file");
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

int mlp_dataset_load(const char *dir, int train, size_t limit, mlp_dataset *out, char *err,
                     size_t errlen)
{
    if (!out) {
        mlp_put_err(err, errlen, "mlp_dataset_load: NULL output");
        return -1;
    }
    memset(out, 0, sizeof *out);
    dir = mlp_data_dir(dir);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        mlp_put_err(err, errlen,
                    "Fashion-MNIST folder %s not found (install Debian's dataset-fashion-mnist "
                    "package, e.g. with ci/install-deps.sh, or pass --data DIR / set $" MLP_DATA_ENV
                    ")",
                    dir);
        return -1;
    }
    const char *pre = train ? "train" : "t10k";
    char name[64];
    idx_file im = {0}, lb = {0};
    unsigned char h[16];
    int rc = -1;

    snprintf(name, sizeof name, "%s-images-idx3-ubyte", pre);
    if (idx_open(&im, dir, name, err, errlen) != 0)
        goto done;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", pre);
    if (idx_open(&lb, dir, name, err, errlen) != 0)
        goto done;
    if (idx_read(&im, h, 16, err, errlen) != 0)
        goto done;
    if (be32(h) != 0x803) {
        mlp_put_err(err, errlen, "%s: not an IDX image file (magic 0x%08x, expected 0x00000803)",
                    im.path, (unsigned)be32(h));
        goto done;
    }
    const size_t n = be32(h + 4), rows = be32(h + 8), cols = be32(h + 12);
    if (n == 0 || rows * cols != MLP_IMAGE_DIM) {
        mlp_put_err(err, errlen, "%s: %zu images of %zux%zu pixels (expected 28x28)", im.path, n,
                    rows, cols);
        goto done;
    }
    if (idx_read(&lb, h, 8, err, errlen) != 0)
        goto done;
    if (be32(h) != 0x801) {
        mlp_put_err(err, errlen, "%s: not an IDX label file (magic 0x%08x, expected 0x00000801)",
                    lb.path, (unsigned)be32(h));
        goto done;
    }
    if (be32(h + 4) != n) {
        mlp_put_err(err, errlen, "%s has %u labels but %s has %zu images", lb.path,
                    (unsigned)be32(h + 4), im.path, n);
        goto done;
    }
    const size_t keep = (limit == 0 || limit > n) ? n : limit;
    out->n = keep;
    out->dim = MLP_IMAGE_DIM;
    out->pixels = malloc(keep * MLP_IMAGE_DIM);
    out->labels = malloc(keep);
    if (!out->pixels || !out->labels) {
        mlp_put_err(err, errlen, "out of memory for %zu images", keep);
        goto done;
    }
    if (idx_read(&im, out->pixels, keep * MLP_IMAGE_DIM, err, errlen) != 0 ||
        idx_read(&lb, out->labels, keep, err, errlen) != 0)
        goto done;
    for (size_t i = 0; i < keep; i++)
        if (out->labels[i] >= MLP_CLASSES) {
            mlp_put_err(err, errlen, "%s: label %u of image %zu is out of range", lb.path,
                        out->labels[i], i);
            goto done;
        }
    rc = 0;
done:
    if (im.f)
        gzclose(im.f);
    if (lb.f)
        gzclose(lb.f);
    if (rc != 0)
        mlp_dataset_free(out);
    return rc;
}

void mlp_dataset_free(mlp_dataset *d)
{
    if (!d)
        return;
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void mlp_dataset_pixel_stats(const mlp_dataset *d, double *mean, double *std)
{
    double s = 0.0, s2 = 0.0;
    const size_t total = d->n * d->dim;
    for (size_t i = 0; i < total; i++) {
        const double v = d->pixels[i] / 255.0;
        s += v;
        s2 += v * v;
    }
    const double mu = total ? s / (double)total : 0.0;
    const double var = total ? s2 / (double)total - mu * mu : 1.0;
    if (mean)
        *mean = mu;
    if (std)
        *std = var > 0 ? sqrt(var) : 1.0;
}

/* ------------------------------------------------------------------------------------ */
/* Host random numbers                                                                   */
/* ------------------------------------------------------------------------------------ */

void mlp_rng_seed(mlp_rng *r, uint64_t seed) { r->s = seed; }

uint64_t mlp_rng_next(mlp_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double mlp_rng_uniform(mlp_rng *r) { return (double)(mlp_rng_next(r) >> 11) * 0x1.0p-53; }

double mlp_rng_normal(mlp_rng *r)
{
    const double two_pi = 6.283185307179586476925286766559;
    double u1;
    do
        u1 = mlp_rng_uniform(r);
    while (u1 <= 0.0);
    const double u2 = mlp_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

void mlp_rng_permutation(mlp_rng *r, int *perm, size_t n)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = (int)i;
    for (size_t i = n; i > 1; i--) {
        /* j uniform in [0, i): the multiply-shift of a 32-bit draw, bias < i / 2^32 */
        const size_t j = (size_t)(((mlp_rng_next(r) >> 32) * (uint64_t)i) >> 32);
        const int t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}
