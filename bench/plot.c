/* SPDX-License-Identifier: MIT */
/* clopt-bench: the chart of a run (--plot FILE.png, drawn by gnuplot through a pipe).
 *
 * One panel per size: the fraction of the stream kernel (stream_fraction: GB/s over the GB/s
 * of the stream kernel of the same rule and storage) as bars, one cluster per rule, one bar
 * per series: a variant (and tensor count, T > 1) in float32, then every other storage
 * combination (fused). The stream kernel itself is the dashed line at 1; copy is left out (it
 * is in the table). */
#define _POSIX_C_SOURCE 200809L /* popen, pclose */
#include "driver.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bars past this fraction (small, cache-resident sizes: launch overhead) are cut. */
#define PLOT_YMAX 2.0
#define MAX_SERIES (V_COUNT * (MAX_LIST + 1) + MAX_DTYPES)

typedef struct series {
    int variant;
    size_t T;
    const char *dtype;
    size_t first; /* its first row */
} series;

static int is_f32(const char *dtype) { return !strcmp(dtype, STORAGE_F32_NAME); }

static int row_in(const row *w, const series *s)
{
    return w->variant == s->variant && w->tensors == s->T && !strcmp(w->dtype, s->dtype);
}

/* float32 first, by variant and tensor count; then the other storage in the order of the rows */
static int series_order(const void *a, const void *b)
{
    const series *x = a, *y = b;
    const int ox = !is_f32(x->dtype), oy = !is_f32(y->dtype);
    if (ox != oy)
        return ox - oy;
    if (!ox && x->variant != y->variant)
        return x->variant - y->variant;
    if (!ox && x->T != y->T)
        return x->T < y->T ? -1 : 1;
    return (x->first > y->first) - (x->first < y->first);
}

/* The series of the rows (stream, copy and the sweep's rows left out). */
static size_t collect_series(const results *res, series *s)
{
    size_t ns = 0;
    for (size_t i = 0; i < res->n; i++) {
        const row *w = &res->rows[i];
        if (w->variant == V_STREAM || w->variant == V_COPY || w->sweep)
            continue;
        size_t k = 0;
        while (k < ns && !row_in(w, &s[k]))
            k++;
        if (k == ns && ns < MAX_SERIES)
            s[ns++] = (series){w->variant, w->tensors, w->dtype, i};
    }
    qsort(s, ns, sizeof *s, series_order);
    return ns;
}

static void series_title(const series *s, char *buf, size_t len)
{
    int off = snprintf(buf, len, "%s", variant_names[s->variant]);
    if (s->T > 1 && off > 0 && (size_t)off < len)
        off += snprintf(buf + off, len - (size_t)off, " T=%zu", s->T);
    if (!is_f32(s->dtype) && off > 0 && (size_t)off < len)
        snprintf(buf + off, len - (size_t)off, " %s", s->dtype);
}

/* A colour per series: the variants' own for float32 with one tensor, palette colour k for
   the k-th of the rest (more tensors, other storage). */
static const char *series_color(const series *s, size_t k)
{
    static const char *const variant_color[V_COUNT] = {
        [V_FUSED] = "#7b2cbf", [V_UNFUSED] = "#2a9d8f", [V_C_LOOP] = "#1d6fd6",
        [V_COPY] = "#e07a00",  [V_STREAM] = "#222222",  [V_ARENA] = "#c9184a",
        [V_SEPARATE] = "#6a994e", [V_ARENA_AMP] = "#ff006e", [V_RANGES] = "#8d6e63"};
    static const char *const palette[] = {
        "#f58231", "#3cb44b", "#46f0f0", "#ffe119", "#008080", "#bcf60c", "#9a6324", "#4363d8",
        "#800000", "#808000", "#000075", "#808080", "#e6beff", "#aaffc3", "#fabebe", "#ffd8b1",
        "#f032e6", "#b2df8a", "#fdbf6f", "#a6cee3", "#e6194b", "#cab2d6", "#5e3c99", "#911eb4"};
    if (is_f32(s->dtype) && s->T == 1)
        return variant_color[s->variant];
    return palette[k % (sizeof palette / sizeof palette[0])];
}

/* One panel: the rules as clusters, a bar per series (missing: "?"). */
static void plot_panel(FILE *gp, const env *e, size_t n, const series *s, size_t ns)
{
    const options *o = e->opt;
    char nb[32];
    format_n(n, nb, sizeof nb);
    fprintf(gp, "$d << EOD\n\"rule\"");
    for (size_t k = 0; k < ns; k++) {
        char title[128];
        series_title(&s[k], title, sizeof title);
        fprintf(gp, " \"%s\"", title);
    }
    fprintf(gp, "\n");
    for (size_t r = 0; r < o->nrules; r++) {
        int any = 0;
        for (size_t i = 0; i < e->res.n && !any; i++)
            any = !strcmp(e->res.rows[i].rule, o->rules[r]->name) && e->res.rows[i].n == n;
        if (!any)
            continue;
        fprintf(gp, "%s", o->rules[r]->name);
        for (size_t k = 0; k < ns; k++) {
            double f = NAN;
            for (size_t i = 0; i < e->res.n; i++) {
                const row *w = &e->res.rows[i];
                if (w->n == n && !strcmp(w->rule, o->rules[r]->name) && row_in(w, &s[k]))
                    f = w->stream_fraction;
            }
            if (isnan(f) || isinf(f))
                fprintf(gp, " ?");
            else
                fprintf(gp, " %.4f", f > PLOT_YMAX ? PLOT_YMAX : f);
        }
        fprintf(gp, "\n");
    }
    fprintf(gp, "EOD\n");
    fprintf(gp, "set title 'n = %s'\n", nb);
    for (size_t k = 0, j = 0; k < ns; k++) {
        fprintf(gp, "%s$d using %zu:xtic(1) title columnheader(%zu) lc rgb '%s'",
                k ? ", " : "plot ", k + 2, k + 2, series_color(&s[k], j));
        j += !is_f32(s[k].dtype) || s[k].T > 1;
    }
    fprintf(gp, "\n");
}

int write_plot(const env *e, const char *path)
{
    const options *o = e->opt;
    if (o->sweep) {
        printf("note: --plot is not drawn for --sweep-tuning (see the tables); %s skipped\n",
               path);
        return 0;
    }
    series s[MAX_SERIES];
    const size_t ns = collect_series(&e->res, s);
    if (!ns) {
        printf("note: no rows with a stream kernel to plot; --plot %s skipped\n", path);
        return 0;
    }
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("note: gnuplot not found; --plot %s skipped\n", path);
        return 0;
    }
    /* a path gnuplot cannot open (it would then write the PNG to its standard output) or
       quote is refused as --json and --csv refuse theirs */
    FILE *probe = strchr(path, '\'') ? NULL : fopen(path, "w");
    if (!probe) {
        fprintf(stderr, "clopt-bench: cannot write --plot %s: %s\n", path,
                strchr(path, '\'') ? "a path with ' is not taken" : strerror(errno));
        return -1;
    }
    fclose(probe);
    FILE *gp = popen("gnuplot >/dev/null", "w");
    if (!gp) {
        printf("note: cannot start gnuplot (%s); --plot %s skipped\n", strerror(errno), path);
        remove(path);
        return 0;
    }
    char dev[256];
    snprintf(dev, sizeof dev, "%s", clopt_ctx_device_name(e->ctx));
    for (char *c = dev; *c; c++)
        if (*c == '\'' || *c == '"' || *c == '\\')
            *c = ' ';
    /* wide enough for a bar per series in each rule's cluster, and the key */
    const size_t width = 160 + o->nrules * (ns * 9 + 24), key_rows = (ns + 1) / 2;
    fprintf(gp, "set terminal pngcairo noenhanced size %zu,%zu font ',10'\n",
            width < 1100 ? 1100 : width > 6000 ? 6000 : width,
            (400 + 16 * key_rows) * o->nsizes + 70);
    fprintf(gp, "set output '%s'\n", path);
    fprintf(gp, "set multiplot layout %zu,1 title \"clopt-bench on %s (median of %ld)\\n"
                "GB/s as a fraction of the stream kernel's of the same rule and storage "
                "(dashed: 1; bars past %.1f cut)\"\n",
            o->nsizes, dev, o->reps, PLOT_YMAX);
    fprintf(gp, "set datafile missing '?'\nset style data histograms\n"
                "set style histogram clustered gap 1\nset style fill solid 0.9 border -1\n"
                "set boxwidth 0.9\nset grid ytics\nset yrange [0:%.2f]\n"
                "set ylabel 'fraction of the stream kernel'\nset xtics nomirror rotate by -30\n"
                "set key outside bottom center horizontal font ',9' samplen 2 height 3\n"
                "set rmargin 10\n"
                "set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 "
                "lc rgb '#222222' front\n",
            PLOT_YMAX * 1.05);
    for (size_t i = 0; i < o->nsizes; i++)
        plot_panel(gp, e, o->sizes[i], s, ns);
    fprintf(gp, "unset multiplot\n");
    int stt = pclose(gp);
    if (stt != 0) {
        fprintf(stderr, "clopt-bench: gnuplot failed (status %d) on --plot %s (removed)\n", stt,
                path);
        remove(path);
        return -1;
    }
    printf("plot written to %s\n", path);
    return 0;
}
