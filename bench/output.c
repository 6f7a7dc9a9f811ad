/* SPDX-License-Identifier: MIT */
/* clopt-bench: the rows and their output: the table, JSON and CSV. */
#include "driver.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

row *add_row(results *res)
{
    if (res->n == res->cap) {
        size_t cap = res->cap ? 2 * res->cap : 64;
        row *r = realloc(res->rows, cap * sizeof *r);
        if (!r)
            return NULL;
        res->rows = r;
        res->cap = cap;
    }
    row *r = &res->rows[res->n++];
    memset(r, 0, sizeof *r);
    r->copy_fraction = r->stream_fraction = r->fused_speedup = NAN;
    r->tensor_ratio = r->tensor_wall_ratio = r->ms_kernels = NAN;
    r->check = "-";
    return r;
}

void format_n(size_t n, char *buf, size_t len)
{
    if (n && (n & (n - 1)) == 0) {
        int k = 0;
        while (((size_t)1 << k) != n)
            k++;
        snprintf(buf, len, "2^%d", k);
    } else {
        snprintf(buf, len, "%zu", n);
    }
}

void format_num(double x, const char *fmt, char *buf, size_t len)
{
    if (isnan(x) || isinf(x))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, fmt, x);
}

void print_table(const results *res, size_t from, int header)
{
    if (header)
        printf("%-14s %-8s %6s %5s %10s %10s %6s %6s %8s %6s %6s %7s %5s %s\n", "rule",
               "variant", "n", "T", "ms", "wall_ms", "launch", "B/p", "GB/s", "copy", "stream",
               "fused_x", "check", "dtype");
    for (size_t i = from; i < res->n; i++) {
        const row *w = &res->rows[i];
        char nb[32], ms[32], wall[32], gb[32], cf[32], sf[32], fx[32], bp[32];
        format_n(w->n, nb, sizeof nb);
        format_num(w->ms, "%.3f", ms, sizeof ms);
        format_num(w->wall_ms, "%.3f", wall, sizeof wall);
        format_num(w->gbps, "%.2f", gb, sizeof gb);
        format_num(w->copy_fraction, "%.2f", cf, sizeof cf);
        format_num(w->stream_fraction, "%.2f", sf, sizeof sf);
        format_num(w->fused_speedup, "%.2f", fx, sizeof fx);
        format_num(w->bytes_per_param, "%.4g", bp, sizeof bp);
        printf("%-14s %-8s %6s %5zu %10s %10s %6u %6s %8s %6s %6s %7s %5s %s\n", w->rule,
               variant_names[w->variant], nb, w->tensors, ms, wall, w->launches, bp, gb, cf, sf,
               fx, w->check, w->dtype);
    }
    fflush(stdout);
}

/* ---- JSON and CSV ---------------------------------------------------------------------------- */

/* Every field of a row, in the JSON order; the CSV has them in csv_order (no device). */
enum {
    F_RULE,
    F_VARIANT,
    F_DTYPE,
    F_N,
    F_TENSORS,
    F_MS,
    F_BYTES_PER_PARAM,
    F_GBPS,
    F_COPY_FRACTION,
    F_STREAM_FRACTION,
    F_WALL_MS,
    F_MS_MIN,
    F_MS_KERNELS,
    F_LAUNCHES,
    F_FUSED_SPEEDUP,
    F_TENSOR_RATIO,
    F_TENSOR_WALL_RATIO,
    F_STEPS_PER_REP,
    F_LIB_BYTES_PER_PARAM,
    F_SHAPE,
    F_CHECK,
    F_REPS,
    F_DEVICE,
    F_VECTOR_WIDTH,
    F_WORK_GROUP_SIZE,
    F_ITEMS_PER_WORK_ITEM,
    F_OMP_THREADS,
    F_SWEEP,
    F_COUNT
};

typedef enum { K_NUM, K_INT, K_STR, K_BOOL } field_kind;

static const struct {
    const char *name;
    field_kind kind;
} fields[F_COUNT] = {
    [F_RULE] = {"rule", K_STR},
    [F_VARIANT] = {"variant", K_STR},
    [F_DTYPE] = {"dtype", K_STR},
    [F_N] = {"n", K_INT},
    [F_TENSORS] = {"tensors", K_INT},
    [F_MS] = {"ms", K_NUM},
    [F_BYTES_PER_PARAM] = {"bytes_per_param", K_NUM},
    [F_GBPS] = {"gbps", K_NUM},
    [F_COPY_FRACTION] = {"copy_fraction", K_NUM},
    [F_STREAM_FRACTION] = {"stream_fraction", K_NUM},
    [F_WALL_MS] = {"wall_ms", K_NUM},
    [F_MS_MIN] = {"ms_min", K_NUM},
    [F_MS_KERNELS] = {"ms_kernels", K_NUM},
    [F_LAUNCHES] = {"launches", K_INT},
    [F_FUSED_SPEEDUP] = {"fused_speedup", K_NUM},
    [F_TENSOR_RATIO] = {"tensor_ratio", K_NUM},
    [F_TENSOR_WALL_RATIO] = {"tensor_wall_ratio", K_NUM},
    [F_STEPS_PER_REP] = {"steps_per_rep", K_INT},
    [F_LIB_BYTES_PER_PARAM] = {"lib_bytes_per_param", K_INT},
    [F_SHAPE] = {"shape", K_STR},
    [F_CHECK] = {"check", K_STR},
    [F_REPS] = {"reps", K_INT},
    [F_DEVICE] = {"device", K_STR},
    [F_VECTOR_WIDTH] = {"vector_width", K_INT},
    [F_WORK_GROUP_SIZE] = {"work_group_size", K_INT},
    [F_ITEMS_PER_WORK_ITEM] = {"items_per_work_item", K_INT},
    [F_OMP_THREADS] = {"omp_threads", K_INT},
    [F_SWEEP] = {"sweep", K_BOOL},
};

static const int csv_order[] = {
    F_RULE,          F_VARIANT,        F_N,
    F_TENSORS,       F_MS,             F_BYTES_PER_PARAM,
    F_GBPS,          F_COPY_FRACTION,  F_STREAM_FRACTION,
    F_WALL_MS,       F_MS_MIN,         F_MS_KERNELS,
    F_LAUNCHES,      F_FUSED_SPEEDUP,  F_CHECK,
    F_REPS,          F_VECTOR_WIDTH,   F_WORK_GROUP_SIZE,
    F_OMP_THREADS,   F_TENSOR_RATIO,   F_TENSOR_WALL_RATIO,
    F_STEPS_PER_REP, F_LIB_BYTES_PER_PARAM, F_SHAPE,
    F_SWEEP,         F_ITEMS_PER_WORK_ITEM, F_DTYPE};

typedef struct field_value {
    double num;             /* K_NUM */
    unsigned long long i;   /* K_INT, K_BOOL */
    const char *s;          /* K_STR */
} field_value;

static field_value value_of(const env *e, const row *w, int f)
{
    field_value v = {NAN, 0, ""};
    switch (f) {
    case F_RULE: v.s = w->rule; break;
    case F_VARIANT: v.s = variant_names[w->variant]; break;
    case F_DTYPE: v.s = w->dtype; break;
    case F_N: v.i = w->n; break;
    case F_TENSORS: v.i = w->tensors; break;
    case F_MS: v.num = w->ms; break;
    case F_BYTES_PER_PARAM: v.num = w->bytes_per_param; break;
    case F_GBPS: v.num = w->gbps; break;
    case F_COPY_FRACTION: v.num = w->copy_fraction; break;
    case F_STREAM_FRACTION: v.num = w->stream_fraction; break;
    case F_WALL_MS: v.num = w->wall_ms; break;
    case F_MS_MIN: v.num = w->ms_min; break;
    case F_MS_KERNELS: v.num = w->ms_kernels; break;
    case F_LAUNCHES: v.i = w->launches; break;
    case F_FUSED_SPEEDUP: v.num = w->fused_speedup; break;
    case F_TENSOR_RATIO: v.num = w->tensor_ratio; break;
    case F_TENSOR_WALL_RATIO: v.num = w->tensor_wall_ratio; break;
    case F_STEPS_PER_REP: v.i = w->steps_per_rep; break;
    case F_LIB_BYTES_PER_PARAM: v.i = w->lib_bytes_per_param; break;
    case F_SHAPE: v.s = w->shape; break;
    case F_CHECK: v.s = w->check; break;
    case F_REPS: v.i = (unsigned long long)e->opt->reps; break;
    case F_DEVICE: v.s = clopt_ctx_device_name(e->ctx); break;
    case F_VECTOR_WIDTH: v.i = w->vector_width; break;
    case F_WORK_GROUP_SIZE: v.i = w->work_group_size; break;
    case F_ITEMS_PER_WORK_ITEM: v.i = w->items_per_work_item; break;
    case F_OMP_THREADS: v.i = (unsigned long long)cloop_threads(); break;
    case F_SWEEP: v.i = w->sweep != 0; break;
    default: break;
    }
    return v;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* A CSV field: as it is, or quoted with its quotes doubled (RFC 4180) when it holds a comma
   (a dtype), a quote or a line break. */
static void csv_str(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* One field's value: JSON (null for a missing number, true/false) or CSV (empty, 0/1). */
static void put_value(FILE *f, int json, field_kind k, const field_value *v)
{
    switch (k) {
    case K_NUM:
        if (!isnan(v->num) && !isinf(v->num))
            fprintf(f, "%.6g", v->num);
        else if (json)
            fprintf(f, "null");
        break;
    case K_INT: fprintf(f, "%llu", v->i); break;
    case K_BOOL: fprintf(f, "%s", json ? (v->i ? "true" : "false") : (v->i ? "1" : "0")); break;
    case K_STR:
        if (json)
            json_str(f, v->s);
        else
            csv_str(f, v->s);
        break;
    }
}

/* Every row: one JSON object per row in an array, or a CSV header and one line per row. */
static int write_rows(const env *e, const char *path, int json)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "clopt-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    const size_t ncsv = sizeof csv_order / sizeof csv_order[0];
    const size_t nf = json ? F_COUNT : ncsv;
    if (json)
        fprintf(f, "[");
    else
        for (size_t k = 0; k < ncsv; k++)
            fprintf(f, "%s%s", k ? "," : "", fields[csv_order[k]].name);
    if (!json)
        fprintf(f, "\n");
    for (size_t i = 0; i < e->res.n; i++) {
        const row *w = &e->res.rows[i];
        if (json)
            fprintf(f, "%s\n  {", i ? "," : "");
        for (size_t k = 0; k < nf; k++) {
            const int fi = json ? (int)k : csv_order[k];
            const field_value v = value_of(e, w, fi);
            if (json)
                fprintf(f, "%s\"%s\": ", k ? ", " : "", fields[fi].name);
            else if (k)
                fputc(',', f);
            put_value(f, json, fields[fi].kind, &v);
        }
        fprintf(f, json ? "}" : "\n");
    }
    if (json)
        fprintf(f, "\n]\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "clopt-bench: writing %s failed\n", path);
        return -1;
    }
    return 0;
}

int write_json(const env *e, const char *path) { return write_rows(e, path, 1); }
int write_csv(const env *e, const char *path) { return write_rows(e, path, 0); }
