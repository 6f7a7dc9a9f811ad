/* SPDX-License-Identifier: MIT */
/* clopt-bench: the chart of a run (--plot FILE.png, drawn by gnuplot through a pipe). */
#include "driver.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* gnuplot through a pipe: one panel per rule, GB/s against n, one line per variant (and per
   tensor count for arena and separate). With one size and several tensor counts: GB/s
   against the tensor count for arena and separate, the one-tensor variants as levels. */
int write_plot(const env *e, const char *path)
{
    const options *o = e->opt;
    if (o->sweep) {
        printf("note: --plot is not drawn for --sweep-tuning (see the tables); %s skipped\n",
               path);
        return 0;
    }
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("note: gnuplot not found; --plot %s skipped\n", path);
        return 0;
    }
    const int by_tensors = o->nsizes == 1 && o->ntensors > 1;
    double xmin = INFINITY, xmax = 0.0;
    if (by_tensors) {
        for (size_t i = 0; i < o->ntensors; i++) {
            xmin = fmin(xmin, (double)o->tensors[i]);
            xmax = fmax(xmax, (double)o->tensors[i]);
        }
        xmin = fmin(xmin, 1.0);
    } else {
        for (size_t i = 0; i < o->nsizes; i++) {
            xmin = fmin(xmin, (double)o->sizes[i]);
            xmax = fmax(xmax, (double)o->sizes[i]);
        }
    }
    FILE *gp = popen("gnuplot", "w");
    if (!gp) {
        printf("note: cannot start gnuplot (%s); --plot %s skipped\n", strerror(errno), path);
        return 0;
    }
    size_t cols = o->nrules < 3 ? o->nrules : 3;
    size_t rows = (o->nrules + cols - 1) / cols;
    char dev[256];
    snprintf(dev, sizeof dev, "%s", clopt_ctx_device_name(e->ctx));
    for (char *c = dev; *c; c++)
        if (*c == '\'' || *c == '"' || *c == '\\')
            *c = ' ';
    char nb[32];
    format_n(o->sizes[0], nb, sizeof nb);
    fprintf(gp, "set terminal pngcairo noenhanced size %zu,%zu font ',10'\n", 720 * cols,
            430 * rows + 40);
    fprintf(gp, "set output '%s'\n", path);
    fprintf(gp, "set multiplot layout %zu,%zu title 'clopt-bench on %s (median of %ld)%s%s'\n",
            rows, cols, dev, o->reps, by_tensors ? ", n = " : "", by_tensors ? nb : "");
    if (by_tensors)
        fprintf(gp, "set logscale x 10\nset xlabel 'tensors (the same total n)'\n");
    else
        fprintf(gp, "set logscale x 2\nset format x '2^%%L'\nset xlabel 'n (parameters)'\n");
    fprintf(gp, "set grid\nset key outside right top vertical samplen 3\n");
    fprintf(gp, "set ylabel 'GB/s'\nset yrange [0:*]\n");
    fprintf(gp, "set xrange [%g:%g]\n", xmin / 1.5, xmax * 1.5);
    /* the measured variants solid, the two references dashed; more tensors: other dashes */
    static const char *const color[V_COUNT] = {
        [V_FUSED] = "#7b2cbf", [V_UNFUSED] = "#2a9d8f", [V_C_LOOP] = "#1d6fd6",
        [V_COPY] = "#e07a00",  [V_STREAM] = "#222222",  [V_ARENA] = "#c9184a",
        [V_SEPARATE] = "#6a994e", [V_ARENA_AMP] = "#ff006e", [V_RANGES] = "#8d6e63"};
    static const int point[V_COUNT] = {[V_FUSED] = 7,  [V_UNFUSED] = 5, [V_C_LOOP] = 9,
                                       [V_COPY] = 4,   [V_STREAM] = 6,  [V_ARENA] = 11,
                                       [V_SEPARATE] = 13, [V_ARENA_AMP] = 12, [V_RANGES] = 3};
    for (size_t ri = 0; ri < o->nrules; ri++) {
        const char *rule = o->rules[ri]->name;
        fprintf(gp, "set title '%s'\n", rule);
        /* series: (variant, tensor count); by tensors: one per variant */
        int sv[V_COUNT * (MAX_LIST + 1)];
        size_t st[V_COUNT * (MAX_LIST + 1)], ns = 0;
        for (int v = 0; v < V_COUNT; v++)
            for (size_t ti = 0; ti <= (by_tensors ? 0 : o->ntensors); ti++) {
                size_t T = ti == 0 ? 1 : o->tensors[ti - 1];
                if (ti > 0 && T == 1)
                    continue;
                int present = 0;
                for (size_t i = 0; i < e->res.n && !present; i++) {
                    const row *w = &e->res.rows[i];
                    present = !strcmp(w->rule, rule) && w->variant == v &&
                              (by_tensors || w->tensors == T);
                }
                if (present) {
                    sv[ns] = v;
                    st[ns++] = T;
                }
            }
        if (!ns) {
            fprintf(gp, "plot NaN notitle\n");
            continue;
        }
        for (size_t k = 0; k < ns; k++) {
            int v = sv[k];
            const int level = by_tensors && v != V_ARENA && v != V_SEPARATE;
            int dt = v == V_COPY || v == V_STREAM ? 2 : st[k] > 1 ? 3 + (int)(k % 3) : 1;
            char title[64];
            if (st[k] > 1)
                snprintf(title, sizeof title, "%s T=%zu", variant_names[v], st[k]);
            else
                snprintf(title, sizeof title, "%s%s", variant_names[v], level ? " (T=1)" : "");
            fprintf(gp, "%s'-' using 1:2 with %s lw 2 dt %d lc rgb '%s' pt %d title '%s'",
                    k ? ", " : "plot ", level ? "lines" : "linespoints", level ? 2 : dt,
                    color[v], point[v], title);
        }
        fprintf(gp, "\n");
        for (size_t k = 0; k < ns; k++) {
            const int level = by_tensors && sv[k] != V_ARENA && sv[k] != V_SEPARATE;
            for (size_t i = 0; i < e->res.n; i++) {
                const row *w = &e->res.rows[i];
                if (strcmp(w->rule, rule) || w->variant != sv[k] || isnan(w->gbps))
                    continue;
                if (level)
                    fprintf(gp, "%g %.6g\n%g %.6g\n", xmin, w->gbps, xmax, w->gbps);
                else if (by_tensors)
                    fprintf(gp, "%zu %.6g\n", w->tensors, w->gbps);
                else if (w->tensors == st[k])
                    fprintf(gp, "%zu %.6g\n", w->n, w->gbps);
            }
            fprintf(gp, "e\n");
        }
    }
    fprintf(gp, "unset multiplot\n");
    int stt = pclose(gp);
    if (stt != 0) {
        printf("note: gnuplot failed (status %d); %s may be incomplete\n", stt, path);
        return 0;
    }
    printf("plot written to %s\n", path);
    return 0;
}
