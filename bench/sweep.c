/* SPDX-License-Identifier: MIT */
/* clopt-bench: the tuning sweep (--sweep-tuning): fused (and stream) of each rule and size
 * over vector widths x work-group sizes x vectors per work-item, interleaved. */
#include "driver.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int set_tuning(env *e, const clopt_tuning *t)
{
    clopt_status s = clopt_ctx_set_tuning(e->ctx, t);
    if (s != CLOPT_SUCCESS)
        return clopt_fail_msg(e, "clopt_ctx_set_tuning", s);
    bench_device_set_tuning(e->bd, t);
    return 0;
}

static void print_grid(const env *e, const char *title, const row *rows, size_t ncfg,
                       int variant, unsigned ipw)
{
    const options *o = e->opt;
    printf("%s, %u vector(s) per work-item\n%8s", title, ipw, "VW \\ WG");
    for (size_t j = 0; j < o->nsweep_wg; j++)
        printf(" %8zu", o->sweep_wg[j]);
    printf("\n");
    for (size_t i = 0; i < o->nsweep_vw; i++) {
        printf("%8u", o->sweep_vw[i]);
        for (size_t j = 0; j < o->nsweep_wg; j++) {
            double g = NAN;
            for (size_t k = 0; k < ncfg; k++)
                if (rows[k].variant == variant && rows[k].vector_width == o->sweep_vw[i] &&
                    rows[k].work_group_size == o->sweep_wg[j] &&
                    rows[k].items_per_work_item == ipw)
                    g = rows[k].gbps;
            char b[32];
            format_num(g, "%.2f", b, sizeof b);
            printf(" %8s", b);
        }
        printf("\n");
    }
}

/* Fused (and stream) of each rule and size over vector widths x work-group sizes x vectors
   per work-item, the configurations interleaved within every repetition. */
int run_sweep(env *e)
{
    const options *o = e->opt;
    const clopt_tuning base = e->tuning;
    const size_t total = (size_t)(o->warmup + o->reps);
    const int with_stream = (o->variants & (1u << V_STREAM)) != 0;
    int rc = 0;
    for (size_t j = 0; j < o->nsweep_wg; j++)
        if (e->max_wg && o->sweep_wg[j] > e->max_wg)
            printf("note: work-group size %zu exceeds the device maximum %zu; skipped\n",
                   o->sweep_wg[j], e->max_wg);
    for (size_t ri_i = 0; ri_i < o->nrules && !rc; ri_i++) {
        rule_info ri;
        if (rule_info_make(o->rules[ri_i], &ri))
            return -1;
        for (size_t ni = 0; ni < o->nsizes && !rc; ni++) {
            const size_t n = o->sizes[ni];
            /* configurations: fused, then stream, per (vw, wg, ipw) */
            size_t ncfg = 0;
            const size_t maxcfg = 2 * o->nsweep_vw * o->nsweep_wg * o->nsweep_ipw;
            unit *cfg = calloc(maxcfg, sizeof *cfg);
            clopt_tuning *ctun = calloc(maxcfg, sizeof *ctun);
            instance in = {0};
            optrun *opt = NULL;
            if (!cfg || !ctun) {
                fprintf(stderr, "clopt-bench: out of host memory\n");
                rc = -1;
            }
            for (size_t c = 0; !rc && c < o->nsweep_vw * o->nsweep_wg * o->nsweep_ipw; c++) {
                const size_t i = c / (o->nsweep_wg * o->nsweep_ipw);
                const size_t j = c / o->nsweep_ipw % o->nsweep_wg, l = c % o->nsweep_ipw;
                if (e->max_wg && o->sweep_wg[j] > e->max_wg)
                    continue;
                for (int v = 0; v < 1 + with_stream; v++) {
                    unit *u = &cfg[ncfg];
                    u->variant = v ? V_STREAM : V_FUSED;
                    u->T = 1;
                    u->bytes = ri.tr.bytes;
                    u->dev = malloc(o->reps * sizeof(double));
                    u->wall = malloc(o->reps * sizeof(double));
                    u->kern = malloc(o->reps * sizeof(double));
                    ctun[ncfg] = (clopt_tuning){.vector_width = o->sweep_vw[i], .work_group_size = o->sweep_wg[j], .items_per_work_item = o->sweep_ipw[l]};
                    ncfg++;
                    if (!u->dev || !u->wall || !u->kern) {
                        fprintf(stderr, "clopt-bench: out of host memory\n");
                        rc = -1;
                    }
                }
            }
            unsigned mask = (ri.opt_level ? 0u : state_mask(&ri)) |
                            (with_stream ? stream_mask(&ri) : 0u);
            if (!rc && mask)
                rc = instance_create(e, &ri, n, mask, e->p0, e->g0, &in);
            if (!rc && ri.opt_level) {
                bench_split sp;
                rc = bench_split_make(ri.r, n, 1, &sp);
                if (!rc) {
                    rc = optrun_create(e->ctx, ri.r, &ri.hp, OPTRUN_SEPARATE, &sp, e->p0, e->g0,
                                       &opt);
                    if (!rc)
                        rc = optrun_warm(e, &ri, opt);
                    bench_split_free(&sp);
                }
            }
            const int flush = wants_flush(e, ri.tr.bytes * (double)n);
            for (size_t it = 0; it < total && !rc; it++) {
                const uint64_t step = FIRST_TIMED_STEP + it * ri.spr;
                for (size_t k = 0; k < ncfg && !rc; k++) {
                    bench_timing t = {0};
                    rc = set_tuning(e, &ctun[k]);
                    if (!rc && flush)
                        rc = flush_device(e);
                    if (!rc && cfg[k].variant == V_STREAM)
                        rc = stream_rep(e, &ri, &in, &t);
                    else if (!rc)
                        rc = opt ? optrun_step(opt, ri.spr, &t) : fused_step(e, &ri, &in, step, &t);
                    if (!rc && it >= (size_t)o->warmup)
                        record(&cfg[k], &t);
                }
            }
            if (set_tuning(e, &base))
                rc = -1;
            instance_release(&in);
            optrun_destroy(opt);
            const size_t first_row = e->res.n;
            for (size_t k = 0; k < ncfg && !rc; k++) {
                rc = finish_row(e, &ri, &cfg[k], n, "-");
                if (!rc) {
                    row *w = &e->res.rows[e->res.n - 1];
                    w->vector_width = ctun[k].vector_width;
                    w->work_group_size = ctun[k].work_group_size;
                    w->items_per_work_item = ctun[k].items_per_work_item;
                    w->sweep = 1;
                }
            }
            for (size_t k = 0; k < ncfg; k++) {
                free(cfg[k].dev);
                free(cfg[k].wall);
                free(cfg[k].kern);
            }
            free(cfg);
            free(ctun);
            if (rc)
                break;
            /* stream fraction of each fused configuration: the stream of the same tuning */
            row *rows = &e->res.rows[first_row];
            const size_t nr = e->res.n - first_row;
            for (size_t k = 0; k < nr; k++)
                for (size_t m = 0; m < nr; m++)
                    if (rows[m].variant == V_STREAM &&
                        rows[m].vector_width == rows[k].vector_width &&
                        rows[m].work_group_size == rows[k].work_group_size &&
                        rows[m].items_per_work_item == rows[k].items_per_work_item)
                        rows[k].stream_fraction = rows[k].gbps / rows[m].gbps;
            char nb[32], title[256];
            format_n(n, nb, sizeof nb);
            snprintf(title, sizeof title,
                     "\nsweep %s n=%s: fused GB/s (%s, median of %ld; rows: vector width, "
                     "columns: work-group size, 0 = the driver's choice)",
                     ri.r->name, nb, ri.opt_level ? "optimizer level" : "one launch", o->reps);
            for (size_t l = 0; l < o->nsweep_ipw; l++) {
                print_grid(e, title, rows, nr, V_FUSED, o->sweep_ipw[l]);
                if (with_stream)
                    print_grid(e, "stream GB/s (the rule's arrays, same tunings)", rows, nr,
                               V_STREAM, o->sweep_ipw[l]);
            }
            const row *best = NULL, *cur = NULL;
            const unsigned base_ipw = bench_tuning_ipw(&base);
            for (size_t k = 0; k < nr; k++) {
                if (rows[k].variant != V_FUSED)
                    continue;
                if (!best || rows[k].gbps > best->gbps)
                    best = &rows[k];
                if (rows[k].vector_width == base.vector_width &&
                    rows[k].work_group_size == base.work_group_size &&
                    rows[k].items_per_work_item == base_ipw)
                    cur = &rows[k];
            }
            if (best)
                printf("best: vector width %u, work-group %zu, %u per work-item: %.2f GB/s "
                       "(%.2f of its stream)",
                       best->vector_width, best->work_group_size, best->items_per_work_item,
                       best->gbps, best->stream_fraction);
            if (cur)
                printf("; current tuning (%u, %zu, %u): %.2f GB/s", cur->vector_width,
                       cur->work_group_size, cur->items_per_work_item, cur->gbps);
            else
                printf("; current tuning (%u, %zu, %u) not in the sweep", base.vector_width,
                       base.work_group_size, base_ipw);
            printf("\n");
            fflush(stdout);
        }
    }
    return rc;
}
