/* SPDX-License-Identifier: MIT */
/*
 * clopt-trajectories: the paths of every clopt rule on two classic surfaces of optimizer
 * lectures, computed by clopt's kernels at the optimizer level and drawn with cairo.
 *
 *   clopt-trajectories [--out DIR] [--csv FILE] [--device D] [--bf16 MODE]
 *
 *   --out DIR     where the figures go (default docs/): DIR/trajectories_rosenbrock.png and
 *                 DIR/trajectories_saddle.png (DIR is created if missing, not its parents)
 *   --csv FILE    also write every point: rule,surface,step,x,y
 *   --device D    the OpenCL device (an index or a name substring, as CLOPT_DEVICE)
 *   --bf16 MODE   θ stored in bfloat16, MODE nearest (no master, round to nearest),
 *                 stochastic (no master, stochastic rounding), master (an fp32 master) or
 *                 remainder (a 16-bit remainder): figures ..._bf16-MODE.png
 *
 * The paths themselves (surfaces, the per-rule table of learning rates and step counts, the
 * device loop) are in trajectories_lib.c; tests/test_trajectories.c replays them in double.
 * Besides every rule, the cautious variants of AdamW and Lion (clopt_hparams.cautious, with
 * their base rule's settings) are drawn. Muon is left out, with a note, when the library
 * was built without it (clopt_has_muon).
 */
#define _POSIX_C_SOURCE 200809L
#include "trajectories_lib.h"

#include <cairo.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------------------ */
/* Figure layout and style                                                              */
/* ------------------------------------------------------------------------------------ */

enum { FIG_W = 1200, FIG_H = 900 };
/* Legend rows (name and setting, then where the path went); the figure grows below the plot
   when the rows need it. */
static const double LEGEND_ROW = 36.0;
static const double PLOT_X = 86, PLOT_Y = 92, PLOT_W = 740, PLOT_H = 740;
static const double LEGEND_X = 856;
static const char *FONT = "DejaVu Sans";
static const double PI = 3.14159265358979323846;

typedef struct rgb {
    double r, g, b;
} rgb;

/* 16 colours that stay apart from each other and from the pale background. */
static const rgb PALETTE[] = {
    {0.122, 0.467, 0.706}, /* blue */
    {1.000, 0.498, 0.055}, /* orange */
    {0.173, 0.627, 0.173}, /* green */
    {0.839, 0.153, 0.157}, /* red */
    {0.580, 0.404, 0.741}, /* purple */
    {0.549, 0.337, 0.294}, /* brown */
    {0.890, 0.467, 0.761}, /* pink */
    {0.300, 0.300, 0.300}, /* dark grey */
    {0.737, 0.741, 0.133}, /* olive */
    {0.090, 0.745, 0.812}, /* cyan */
    {0.000, 0.000, 0.000}, /* black */
    {0.224, 0.231, 0.475}, /* navy */
    {0.902, 0.671, 0.008}, /* gold */
    {0.550, 0.000, 0.450}, /* dark magenta */
    {0.000, 0.500, 0.450}, /* teal */
    {0.450, 0.750, 0.100}, /* lime */
};
#define NPALETTE (sizeof PALETTE / sizeof PALETTE[0])

/* Line styles cycle so that paths of rules that nearly coincide stay distinguishable. */
static void set_dash(cairo_t *cr, int style)
{
    static const double dashed[] = {9.0, 4.0}, dotted[] = {2.0, 3.0};
    switch (style % 3) {
    case 1: cairo_set_dash(cr, dashed, 2, 0); break;
    case 2: cairo_set_dash(cr, dotted, 2, 0); break;
    default: cairo_set_dash(cr, NULL, 0, 0); break;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Paths                                                                                 */
/* ------------------------------------------------------------------------------------ */

typedef struct path {
    const char *name; /* the rule's, or cautious_adamw / cautious_lion */
    clopt_rule rule;
    clopt_hparams hp;
    unsigned steps;
    double *xy; /* 2*(steps+1) */
} path;

/* ------------------------------------------------------------------------------------ */
/* Coordinates                                                                           */
/* ------------------------------------------------------------------------------------ */

typedef struct view {
    double win[4]; /* xmin, xmax, ymin, ymax */
} view;

static double px(const view *v, double x)
{
    return PLOT_X + (x - v->win[0]) / (v->win[1] - v->win[0]) * PLOT_W;
}
static double py(const view *v, double y)
{
    return PLOT_Y + PLOT_H - (y - v->win[2]) / (v->win[3] - v->win[2]) * PLOT_H;
}
/* Device coordinates far outside the figure are clamped: cairo works in fixed point. */
static double clampc(double c) { return c < -1e5 ? -1e5 : c > 1e5 ? 1e5 : c; }

/* ------------------------------------------------------------------------------------ */
/* Contours                                                                              */
/* ------------------------------------------------------------------------------------ */

/* Contour levels: log-spaced (3 per decade) for Rosenbrock, linear for the saddle. */
static size_t levels_of(traj_surface s, double *lv, size_t max)
{
    size_t n = 0;
    if (s == TRAJ_ROSENBROCK) {
        for (int k = -6; k <= 11 && n < max; k++)
            lv[n++] = pow(10.0, k / 3.0);
    } else {
        for (int k = -9; k <= 9 && n < max; k++)
            lv[n++] = 0.25 * k;
    }
    return n;
}

/* Index of the band a value falls in (0 .. nlv). */
static size_t band_of(double f, const double *lv, size_t nlv)
{
    size_t b = 0;
    while (b < nlv && f >= lv[b])
        b++;
    return b;
}

static rgb lerp(rgb a, rgb b, double t)
{
    return (rgb){a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

/* Pale fill colours so that the paths stay readable: for Rosenbrock, a sequential ramp from
   pale yellow (low) to pale blue-grey (high); for the saddle, diverging pale blue (f < 0)
   to white (0) to pale red (f > 0). */
static rgb band_colour(traj_surface s, size_t band, size_t nbands)
{
    double t = nbands > 1 ? (double)band / (double)(nbands - 1) : 0.0;
    if (s == TRAJ_ROSENBROCK) {
        const rgb lo = {1.00, 0.97, 0.80}, mid = {0.86, 0.94, 0.89}, hi = {0.72, 0.79, 0.91};
        return t < 0.5 ? lerp(lo, mid, t * 2.0) : lerp(mid, hi, (t - 0.5) * 2.0);
    }
    const rgb neg = {0.55, 0.70, 0.90}, zero = {0.98, 0.98, 0.98}, pos = {0.95, 0.62, 0.55};
    return t < 0.5 ? lerp(neg, zero, t * 2.0) : lerp(zero, pos, (t - 0.5) * 2.0);
}

/* Filled bands, one pixel at a time, into an image that is painted under everything. */
static cairo_surface_t *fill_image(traj_surface s, const view *v, const double *lv, size_t nlv)
{
    const int w = (int)PLOT_W, h = (int)PLOT_H;
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS)
        return img;
    cairo_surface_flush(img);
    unsigned char *data = cairo_image_surface_get_data(img);
    const int stride = cairo_image_surface_get_stride(img);
    for (int j = 0; j < h; j++) {
        uint32_t *row = (uint32_t *)(void *)(data + (size_t)j * (size_t)stride);
        const double y = v->win[3] - (j + 0.5) / h * (v->win[3] - v->win[2]);
        for (int i = 0; i < w; i++) {
            const double x = v->win[0] + (i + 0.5) / w * (v->win[1] - v->win[0]);
            rgb c = band_colour(s, band_of(traj_f(s, x, y), lv, nlv), nlv + 1);
            row[i] = (uint32_t)(c.r * 255.0 + 0.5) << 16 | (uint32_t)(c.g * 255.0 + 0.5) << 8 |
                     (uint32_t)(c.b * 255.0 + 0.5);
        }
    }
    cairo_surface_mark_dirty(img);
    return img;
}

/* Contour lines by marching squares on a grid of GRID_STEP-pixel cells, with linear
   interpolation along cell edges. */
enum { GRID_STEP = 2 };

static void edge_point(const view *v, double x0, double y0, double f0, double x1, double y1,
                       double f1, double level, double *ox, double *oy)
{
    double t = (level - f0) / (f1 - f0);
    *ox = px(v, x0 + (x1 - x0) * t);
    *oy = py(v, y0 + (y1 - y0) * t);
}

static void contour_lines(cairo_t *cr, traj_surface s, const view *v, const double *lv,
                          size_t nlv)
{
    const int nx = (int)PLOT_W / GRID_STEP + 1, ny = (int)PLOT_H / GRID_STEP + 1;
    double *grid = malloc(sizeof(double) * (size_t)nx * (size_t)ny);
    if (!grid)
        return;
    const double dx = (v->win[1] - v->win[0]) / (nx - 1), dy = (v->win[3] - v->win[2]) / (ny - 1);
    for (int j = 0; j < ny; j++)
        for (int i = 0; i < nx; i++)
            grid[(size_t)j * nx + i] = traj_f(s, v->win[0] + i * dx, v->win[2] + j * dy);
    cairo_save(cr);
    cairo_set_line_width(cr, 0.8);
    for (size_t k = 0; k < nlv; k++) {
        const double L = lv[k];
        for (int j = 0; j + 1 < ny; j++) {
            for (int i = 0; i + 1 < nx; i++) {
                /* corners: 0 (i, j), 1 (i+1, j), 2 (i+1, j+1), 3 (i, j+1) */
                const double x0 = v->win[0] + i * dx, x1 = x0 + dx;
                const double y0 = v->win[2] + j * dy, y1 = y0 + dy;
                const double f[4] = {grid[(size_t)j * nx + i], grid[(size_t)j * nx + i + 1],
                                     grid[(size_t)(j + 1) * nx + i + 1],
                                     grid[(size_t)(j + 1) * nx + i]};
                const double cx[4] = {x0, x1, x1, x0}, cy[4] = {y0, y0, y1, y1};
                double ex[4], ey[4];
                int ne = 0;
                for (int e = 0; e < 4; e++) {
                    const int a = e, b = (e + 1) % 4;
                    if ((f[a] < L) != (f[b] < L)) {
                        edge_point(v, cx[a], cy[a], f[a], cx[b], cy[b], f[b], L, &ex[ne],
                                   &ey[ne]);
                        ne++;
                    }
                }
                for (int e = 0; e + 1 < ne; e += 2) {
                    cairo_move_to(cr, ex[e], ey[e]);
                    cairo_line_to(cr, ex[e + 1], ey[e + 1]);
                }
            }
        }
        cairo_set_source_rgba(cr, 0.25, 0.30, 0.40, s == TRAJ_SADDLE && L == 0.0 ? 0.75 : 0.40);
        cairo_stroke(cr);
    }
    cairo_restore(cr);
    free(grid);
}

/* ------------------------------------------------------------------------------------ */
/* Text and markers                                                                      */
/* ------------------------------------------------------------------------------------ */

static void text_at(cairo_t *cr, double x, double y, double size, int bold, double halign,
                    const char *s)
{
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    cairo_text_extents_t te;
    cairo_text_extents(cr, s, &te);
    cairo_move_to(cr, x - halign * te.x_advance, y);
    cairo_show_text(cr, s);
}

static void star(cairo_t *cr, double x, double y, double r)
{
    cairo_new_path(cr);
    for (int i = 0; i < 10; i++) {
        const double a = -PI / 2 + i * PI / 5, rr = i % 2 ? r * 0.45 : r;
        if (i == 0)
            cairo_move_to(cr, x + rr * cos(a), y + rr * sin(a));
        else
            cairo_line_to(cr, x + rr * cos(a), y + rr * sin(a));
    }
    cairo_close_path(cr);
    cairo_set_source_rgb(cr, 1.0, 0.85, 0.0);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1.5);
    cairo_stroke(cr);
}

static void start_marker(cairo_t *cr, double x, double y, double r)
{
    cairo_new_path(cr);
    cairo_arc(cr, x, y, r, 0, 2 * PI);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 2.0);
    cairo_stroke(cr);
}

/* ------------------------------------------------------------------------------------ */
/* The figure                                                                            */
/* ------------------------------------------------------------------------------------ */

/* One-line summary of where a path went, for the legend: on Rosenbrock the first step with
   f < 1e-3 and the final f; on the saddle the step at which the path leaves the window. */
static void path_summary(traj_surface s, const path *p, char *buf, size_t len)
{
    const double *xy = p->xy;
    const double xe = xy[2 * p->steps], ye = xy[2 * p->steps + 1];
    if (!isfinite(xe) || !isfinite(ye)) {
        snprintf(buf, len, "diverges");
    } else if (s == TRAJ_ROSENBROCK) {
        const double fend = traj_f(s, xe, ye);
        unsigned t = 0;
        while (t <= p->steps && !(traj_f(s, xy[2 * t], xy[2 * t + 1]) < 1e-3))
            t++;
        if (t <= p->steps)
            snprintf(buf, len, "f < 1e-3 at step %u, f = %.1e at %u", t, fend, p->steps);
        else
            snprintf(buf, len, "f = %.2g after %u steps", fend, p->steps);
    } else {
        double win[4];
        traj_window(s, win);
        unsigned t = 0;
        while (t <= p->steps && xy[2 * t] >= win[0] && xy[2 * t] <= win[1] &&
               xy[2 * t + 1] >= win[2] && xy[2 * t + 1] <= win[3])
            t++;
        if (t <= p->steps)
            snprintf(buf, len, "leaves the window at step %u", t);
        else
            snprintf(buf, len, "y = %.3g after %u steps", ye, p->steps);
    }
}

/* Where a legend row's setting starts after its name (16 pt bold, ~10 px a character). */
static double label_dx(const char *name)
{
    const double w = 10.5 * (double)strlen(name) + 14.0;
    return w > 106.0 ? w : 106.0;
}

static int draw_figure(traj_surface s, const path *paths, size_t npaths, const char *device,
                       const char *storage, const char *file)
{
    const double need = PLOT_Y + 6 + LEGEND_ROW * (double)(npaths + 1) + 24;
    const int fig_h = need > FIG_H ? (int)ceil(need) : FIG_H;
    view v;
    traj_window(s, v.win);
    double lv[32];
    const size_t nlv = levels_of(s, lv, 32);

    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, FIG_W, fig_h);
    cairo_t *cr = cairo_create(surf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);

    /* Contours, clipped to the plot. */
    cairo_save(cr);
    cairo_rectangle(cr, PLOT_X, PLOT_Y, PLOT_W, PLOT_H);
    cairo_clip(cr);
    cairo_surface_t *img = fill_image(s, &v, lv, nlv);
    cairo_set_source_surface(cr, img, PLOT_X, PLOT_Y);
    cairo_paint(cr);
    cairo_surface_destroy(img);
    contour_lines(cr, s, &v, lv, nlv);

    /* Paths, then their end points on top. */
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    for (size_t k = 0; k < npaths; k++) {
        const path *p = &paths[k];
        const rgb c = PALETTE[k % NPALETTE];
        cairo_new_path(cr);
        for (unsigned t = 0; t <= p->steps; t++) {
            const double x = p->xy[2 * t], y = p->xy[2 * t + 1];
            if (!isfinite(x) || !isfinite(y))
                break;
            const double X = clampc(px(&v, x)), Y = clampc(py(&v, y));
            if (t == 0)
                cairo_move_to(cr, X, Y);
            else
                cairo_line_to(cr, X, Y);
        }
        cairo_set_source_rgb(cr, c.r, c.g, c.b);
        cairo_set_line_width(cr, 2.2);
        set_dash(cr, (int)k);
        cairo_stroke(cr);
    }
    cairo_set_dash(cr, NULL, 0, 0);
    for (size_t k = 0; k < npaths; k++) {
        const path *p = &paths[k];
        const rgb c = PALETTE[k % NPALETTE];
        const double x = p->xy[2 * p->steps], y = p->xy[2 * p->steps + 1];
        if (!isfinite(x) || !isfinite(y))
            continue;
        cairo_new_path(cr);
        cairo_arc(cr, clampc(px(&v, x)), clampc(py(&v, y)), 4.5, 0, 2 * PI);
        cairo_set_source_rgb(cr, c.r, c.g, c.b);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, 1.0);
        cairo_stroke(cr);
    }
    double st[2], tg[2];
    traj_start(s, st);
    traj_target(s, tg);
    start_marker(cr, px(&v, st[0]), py(&v, st[1]), 7.0);
    star(cr, px(&v, tg[0]), py(&v, tg[1]), 12.0);
    cairo_restore(cr);

    /* Frame, ticks, axis labels. */
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1.2);
    cairo_rectangle(cr, PLOT_X, PLOT_Y, PLOT_W, PLOT_H);
    cairo_stroke(cr);
    const double tick = 0.5;
    char lab[64];
    for (double x = ceil(v.win[0] / tick) * tick; x <= v.win[1] + 1e-9; x += tick) {
        const double X = px(&v, x);
        cairo_move_to(cr, X, PLOT_Y + PLOT_H);
        cairo_line_to(cr, X, PLOT_Y + PLOT_H + 6);
        cairo_stroke(cr);
        snprintf(lab, sizeof lab, "%g", fabs(x) < 1e-9 ? 0.0 : x);
        text_at(cr, X, PLOT_Y + PLOT_H + 24, 15, 0, 0.5, lab);
    }
    for (double y = ceil(v.win[2] / tick) * tick; y <= v.win[3] + 1e-9; y += tick) {
        const double Y = py(&v, y);
        cairo_move_to(cr, PLOT_X - 6, Y);
        cairo_line_to(cr, PLOT_X, Y);
        cairo_stroke(cr);
        snprintf(lab, sizeof lab, "%g", fabs(y) < 1e-9 ? 0.0 : y);
        text_at(cr, PLOT_X - 10, Y + 5, 15, 0, 1.0, lab);
    }
    text_at(cr, PLOT_X + PLOT_W / 2, PLOT_Y + PLOT_H + 52, 18, 0, 0.5, "x");
    cairo_save(cr);
    cairo_move_to(cr, 0, 0);
    cairo_translate(cr, PLOT_X - 52, PLOT_Y + PLOT_H / 2);
    cairo_rotate(cr, -PI / 2);
    text_at(cr, 0, 0, 18, 0, 0.5, "y");
    cairo_restore(cr);

    /* Title and subtitle. */
    char title[256];
    if (s == TRAJ_ROSENBROCK)
        snprintf(title, sizeof title, "Rosenbrock's valley: %zu clopt rules from (\xe2\x88\x92" "1.5, 2)",
                 npaths);
    else
        snprintf(title, sizeof title, "Saddle point: %zu clopt rules from (\xe2\x88\x92" "1, 0.001)",
                 npaths);
    text_at(cr, PLOT_X, 38, 26, 1, 0.0, title);
    char sub[512];
    snprintf(sub, sizeof sub, "%s   \xc2\xb7   %s   \xc2\xb7   %s on %s",
             traj_surface_formula(s),
             s == TRAJ_ROSENBROCK ? "contours 3 per decade" : "contours every 0.25", storage,
             device);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    text_at(cr, PLOT_X, 68, 16, 0, 0.0, sub);

    /* Legend: colour sample, rule name, its setting and where it ended. */
    double ly = PLOT_Y + 6;
    const double row = LEGEND_ROW;
    for (size_t k = 0; k < npaths; k++) {
        const path *p = &paths[k];
        const rgb c = PALETTE[k % NPALETTE];
        cairo_set_source_rgb(cr, c.r, c.g, c.b);
        cairo_set_line_width(cr, 3.0);
        set_dash(cr, (int)k);
        cairo_move_to(cr, LEGEND_X, ly + 8);
        cairo_line_to(cr, LEGEND_X + 34, ly + 8);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_source_rgb(cr, 0, 0, 0);
        text_at(cr, LEGEND_X + 44, ly + 14, 16, 1, 0.0, p->name);
        cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
        text_at(cr, LEGEND_X + 44 + label_dx(p->name), ly + 14, 13, 0, 0.0,
                traj_setup_label(p->rule, s));
        char sum[128];
        path_summary(s, p, sum, sizeof sum);
        text_at(cr, LEGEND_X + 44, ly + 32, 12.5, 0, 0.0, sum);
        ly += row;
    }
    start_marker(cr, LEGEND_X + 17, ly + 8, 6.0);
    cairo_set_source_rgb(cr, 0, 0, 0);
    text_at(cr, LEGEND_X + 44, ly + 14, 15, 0, 0.0, "start");
    star(cr, LEGEND_X + 150, ly + 8, 10.0);
    cairo_set_source_rgb(cr, 0, 0, 0);
    text_at(cr, LEGEND_X + 168, ly + 14, 15, 0, 0.0,
            s == TRAJ_ROSENBROCK ? "minimum (1, 1)" : "saddle point (0, 0)");

    cairo_status_t cs = cairo_surface_write_to_png(surf, file);
    cairo_destroy(cr);
    cairo_surface_destroy(surf);
    if (cs != CAIRO_STATUS_SUCCESS) {
        fprintf(stderr, "clopt-trajectories: cannot write %s: %s\n", file,
                cairo_status_to_string(cs));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Main                                                                                  */
/* ------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: clopt-trajectories [--out DIR] [--csv FILE] [--device D] [--bf16 MODE]"
               " [--version]\n"
               "  --out DIR    directory of the PNG figures (default docs/)\n"
               "  --csv FILE   write every point as rule,surface,step,x,y\n"
               "  --device D   OpenCL device: index or name substring (as CLOPT_DEVICE)\n"
               "  --bf16 MODE  θ in bfloat16: nearest, stochastic, master or remainder\n");
}

int main(int argc, char **argv)
{
    const char *out = "docs/", *csv = NULL, *device = NULL, *bf16 = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("clopt-trajectories %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
                   CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
            return 0;
        } else if (i + 1 < argc && !strcmp(argv[i], "--out")) {
            out = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--csv")) {
            csv = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--device")) {
            device = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--bf16") &&
                   (!strcmp(argv[i + 1], "nearest") || !strcmp(argv[i + 1], "stochastic") ||
                    !strcmp(argv[i + 1], "master") || !strcmp(argv[i + 1], "remainder"))) {
            bf16 = argv[++i];
        } else {
            fprintf(stderr, "clopt-trajectories: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    clopt_ctx *ctx = NULL;
    clopt_status st = clopt_ctx_create_device(device, &ctx);
    if (st != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-trajectories: no context: %s\n", clopt_status_str(st));
        return 1;
    }
    struct stat sb;
    if ((mkdir(out, 0777) != 0 && errno != EEXIST) || stat(out, &sb) != 0 ||
        !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "clopt-trajectories: cannot create the folder %s: %s\n", out,
                errno == EEXIST ? "a file of that name exists" : strerror(errno));
        clopt_ctx_destroy(ctx);
        return 1;
    }
    FILE *fcsv = NULL;
    if (csv) {
        fcsv = fopen(csv, "w");
        if (!fcsv) {
            fprintf(stderr, "clopt-trajectories: cannot write %s: %s\n", csv, strerror(errno));
            clopt_ctx_destroy(ctx);
            return 1;
        }
        fprintf(fcsv, "rule,surface,step,x,y\n");
    }
    printf("device: %s\n", clopt_ctx_device_name(ctx));

    int rc = 0;
    /* every rule, then the cautious variants of AdamW and Lion */
    static const clopt_rule cautious_rules[] = {CLOPT_ADAMW, CLOPT_LION};
    static const char *const cautious_names[] = {"cautious_adamw", "cautious_lion"};
    enum { NCAUTIOUS = 2 };
    path paths[CLOPT_RULE_COUNT + NCAUTIOUS];
    for (int si = 0; si < TRAJ_SURFACE_COUNT && rc == 0; si++) {
        const traj_surface s = (traj_surface)si;
        size_t np = 0;
        printf("%s:\n", traj_surface_name(s));
        for (int r = 0; r < CLOPT_RULE_COUNT + NCAUTIOUS && rc == 0; r++) {
            path *p = &paths[np];
            const int cautious = r >= CLOPT_RULE_COUNT;
            p->rule = cautious ? cautious_rules[r - CLOPT_RULE_COUNT] : (clopt_rule)r;
            p->name = cautious ? cautious_names[r - CLOPT_RULE_COUNT] : clopt_rule_name(p->rule);
            if (!p->name)
                continue;
            if (p->rule == CLOPT_MUON && !clopt_has_muon()) {
                printf("  %-19s left out: this library was built without Muon (CLBlast)\n",
                       p->name);
                continue;
            }
            if ((st = traj_setup(p->rule, s, &p->hp, &p->steps)) != CLOPT_SUCCESS) {
                fprintf(stderr, "clopt-trajectories: no setting for %s: %s\n", p->name,
                        clopt_status_str(st));
                rc = 1;
                break;
            }
            p->hp.cautious = cautious;
            p->xy = malloc(sizeof(double) * 2 * ((size_t)p->steps + 1));
            if (!p->xy) {
                rc = 1;
                break;
            }
            np++;
            if (bf16) {
                p->hp.master = !strcmp(bf16, "master")      ? CLOPT_MASTER_F32
                               : !strcmp(bf16, "remainder") ? CLOPT_MASTER_REMAINDER
                                                            : CLOPT_MASTER_NONE;
                p->hp.stochastic_rounding = !strcmp(bf16, "stochastic");
            }
            if ((st = traj_run_typed(ctx, p->rule, s, &p->hp, p->steps, p->xy,
                                     bf16 ? CLOPT_DTYPE_BF16 : CLOPT_DTYPE_F32)) !=
                CLOPT_SUCCESS) {
                fprintf(stderr, "clopt-trajectories: %s on %s: %s (%s)\n", p->name,
                        traj_surface_name(s), clopt_status_str(st), clopt_ctx_last_error(ctx));
                rc = 1;
                break;
            }
            const double x = p->xy[2 * p->steps], y = p->xy[2 * p->steps + 1];
            printf("  %-19s %5u steps  end (%+.6f, %+.6f)  f = %.3e\n", p->name, p->steps, x,
                   y, traj_f(s, x, y));
            if (fcsv)
                for (unsigned t = 0; t <= p->steps; t++)
                    fprintf(fcsv, "%s,%s,%u,%.9g,%.9g\n", p->name,
                            traj_surface_name(s), t, p->xy[2 * t], p->xy[2 * t + 1]);
        }
        if (rc == 0) {
            char file[4096];
            const size_t ol = strlen(out);
            char storage[64] = "float32";
            if (bf16)
                snprintf(storage, sizeof storage, "bf16 \xce\xb8 (%s)", bf16);
            snprintf(file, sizeof file, "%s%strajectories_%s%s%s.png", out,
                     ol && out[ol - 1] == '/' ? "" : "/", traj_surface_name(s),
                     bf16 ? "_bf16-" : "", bf16 ? bf16 : "");
            if (draw_figure(s, paths, np, clopt_ctx_device_name(ctx), storage, file) != 0)
                rc = 1;
            else
                printf("wrote %s\n", file);
        }
        for (size_t k = 0; k < np; k++)
            free(paths[k].xy);
    }
    if (fcsv && fclose(fcsv) != 0) {
        fprintf(stderr, "clopt-trajectories: error writing %s\n", csv);
        rc = 1;
    }
    clopt_ctx_destroy(ctx);
    cairo_debug_reset_static_data(); /* cairo's font and surface caches, for leak checkers */
    return rc;
}
