/* SPDX-License-Identifier: MIT */
/* clopt-bench: how close the fused optimizer kernels come to the memory limit.
 *
 * For every rule and size it measures
 *   fused     clopt_enqueue_step (one launch), timed by its profiling event; for the rules that
 *             exist only at the optimizer level (Adafactor, LAMB, Lookahead, GC on matrices)
 *             clopt_optimizer_step_on on one tensor, timed by markers (optrun.c)
 *   unfused   the same step as a chain of one-elementary-operation kernels (rules.c)
 *   c_loop    the same step as an OpenMP C loop over host arrays, timed by wall clock
 *   copy      clEnqueueCopyBuffer moving as many bytes as the step (bandwidth roofline)
 *   stream    a kernel reading/writing exactly the rule's arrays, no arithmetic (its limit)
 *   arena     clopt_optimizer_step over T tensors in one arena group (one launch for the
 *             element-wise rules), T = 1 included as the optimizer-level reference
 *   separate  clopt_optimizer_step over T caller-owned tensors (one launch per tensor)
 *   arena_amp arena with AMP (loss scale 1) and global-norm clipping (bound 1e18, never reached)
 *             on: the gradient check and the verdict run on the device, nothing waits
 *   ranges    two range groups over T tensors in one caller-owned flat buffer (even and odd
 *             tensors, as an engine's weights and biases): one launch per group
 * and reports the median time over --reps timed repetitions after --warmup untimed ones.
 * A correctness check at a small n first makes sure every variant agrees with fused.
 * --sweep-tuning instead times fused (and stream) over vector widths x work-group sizes.
 */
#define _POSIX_C_SOURCE 200809L

#include "driver.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void traffic_note(const rule_info *ri)
{
    const bench_traffic *t = &ri->tr;
    if (fabs(t->bytes - (double)t->lib_bytes) < 1e-9 && !(ri->r->flags & BENCH_MATRIX))
        return;
    printf("note: %s:", ri->r->name);
    if (ri->r->flags & BENCH_MATRIX)
        printf(" tensors are matrices (rows x cols: the largest divisor of n up to its square "
               "root, x n/rows; JSON/CSV field shape);");
    printf(" counted as %.4g bytes/param = clopt_rule_bytes_per_param %zu", t->bytes,
           t->lib_bytes);
    if (t->gc_bytes)
        printf(" + %zu (GC reads g once more for the row means)", t->gc_bytes);
    if (t->la_k)
        printf(" + 16/%u (Lookahead reads and writes θ and the slow weights every %u steps; a "
               "repetition is %u steps)",
               t->la_k, t->la_k, t->la_k);
    double model = (double)(sizeof(float) * (2 * t->rw + t->ro));
    if (fabs(model - (double)t->lib_bytes) > 1e-9)
        printf(" [the stream kernel's %zu + %zu arrays make %.0f, not %zu]", t->rw, t->ro, model,
               t->lib_bytes);
    printf("\n");
}

/* Whether a rule has rows to measure; a note when its storage rows are left out (all of them,
   or a state type the rule does not take: storage_rule_types). */
static int rule_runs(env *e, rule_info *ri)
{
    const options *o = e->opt;
    if (o->ndtypes == (o->with_f32 ? 1u : 0u))
        return 1;
    if (STORAGE_RULE(ri))
        storage_rule_types(e, ri);
    else
        storage_opt_rule_types(e, ri);
    int any = o->with_f32;
    for (size_t i = 0; i < o->ndtypes; i++)
        any |= storage_runs(ri, &o->dtypes[i]);
    return any;
}

int main(int argc, char **argv)
{
    options o;
    int prc = parse_options(argc, argv, &o);
    if (prc == 1)
        return 0;
    if (prc)
        return prc;

    int busy = 0; /* other runnable tasks at start (Linux), read before any thread starts */
    {
        FILE *la = fopen("/proc/loadavg", "r");
        double l1 = 0.0, l5 = 0.0, l15 = 0.0;
        int running = 0, procs = 0;
        if (la) {
            if (fscanf(la, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &procs) == 5 &&
                running > 1)
                busy = running - 1;
            fclose(la);
        }
    }
    /* PoCL's CPU device lets the kernel move its worker threads between cores; on the
       2-core machine of the committed results two of them then often shared a core for a
       whole launch, and a memory-bound kernel took 13 or 19 ms at random (SGD at 2^25).
       Pinned (POCL_AFFINITY=1) it takes 12-14 ms every time. Set before the first OpenCL
       call, unless the caller chose; other drivers ignore it. */
    const int pocl_affinity_given = getenv("POCL_AFFINITY") != NULL;
    if (!pocl_affinity_given)
        setenv("POCL_AFFINITY", "1", 0);
    const double t_start = bench_now_ms();
    env e;
    memset(&e, 0, sizeof e);
    e.opt = &o;
    int rc = 1;
    clopt_status s =
        o.device ? clopt_ctx_create_device(o.device, &e.ctx) : clopt_ctx_create(&e.ctx);
    if (s != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt-bench: no context%s%s: %s (%s)\n", o.device ? " for device " : "",
                o.device ? o.device : "", clopt_status_name(s), clopt_status_str(s));
        return 1;
    }
    e.context = clopt_ctx_cl_context(e.ctx);
    e.queue = clopt_ctx_cl_queue(e.ctx);
    cl_int err = clGetDeviceInfo(clopt_ctx_cl_device(e.ctx), CL_DEVICE_MAX_MEM_ALLOC_SIZE,
                                 sizeof e.max_alloc, &e.max_alloc, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(clopt_ctx_cl_device(e.ctx), CL_DEVICE_MAX_WORK_GROUP_SIZE,
                              sizeof e.max_wg, &e.max_wg, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(clopt_ctx_cl_device(e.ctx), CL_DEVICE_GLOBAL_MEM_CACHE_SIZE,
                              sizeof e.cache_bytes, &e.cache_bytes, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(clopt_ctx_cl_device(e.ctx), CL_DEVICE_TYPE,
                              sizeof e.device_type, &e.device_type, NULL);
    if (err != CL_SUCCESS) {
        cl_fail("clGetDeviceInfo", err);
        goto out;
    }
    e.flush_bytes = (size_t)e.cache_bytes;
    if (!(e.device_type & CL_DEVICE_TYPE_CPU) && e.cache_bytes && e.flush_bytes < (512u << 20))
        e.flush_bytes = (size_t)512 << 20;
    /* --vw / --wg / --ipw: before anything is compiled (the library and the benchmark's
       kernels) */
    if ((s = clopt_ctx_get_tuning(e.ctx, &e.tuning)) != CLOPT_SUCCESS) {
        clopt_fail_msg(&e, "clopt_ctx_get_tuning", s);
        goto out;
    }
    const int tuning_given = o.vw > 0 || o.wg >= 0 || o.ipw > 0;
    if (tuning_given) {
        if (o.vw > 0)
            e.tuning.vector_width = (unsigned)o.vw;
        if (o.wg >= 0)
            e.tuning.work_group_size = (size_t)o.wg;
        if (o.ipw > 0)
            e.tuning.items_per_work_item = (unsigned)o.ipw;
        if ((s = clopt_ctx_set_tuning(e.ctx, &e.tuning)) != CLOPT_SUCCESS) {
            fprintf(stderr, "clopt-bench: --vw/--wg/--ipw: %s\n", clopt_ctx_last_error(e.ctx));
            rc = 2;
            goto out;
        }
    }
    e.bd = bench_device_create(e.ctx);
    if (!e.bd) {
        fprintf(stderr, "clopt-bench: cannot set up the benchmark kernels\n");
        goto out;
    }

    size_t nmax = o.check_n;
    for (size_t i = 0; i < o.nsizes; i++) {
        nmax = o.sizes[i] > nmax ? o.sizes[i] : nmax;
        if (o.sizes[i] * sizeof(float) > e.max_alloc) {
            fprintf(stderr,
                    "clopt-bench: n = %zu needs %zu-byte buffers; the device allows %llu\n",
                    o.sizes[i], o.sizes[i] * sizeof(float), (unsigned long long)e.max_alloc);
            rc = 2;
            goto out;
        }
    }
    e.p0 = malloc(nmax * sizeof(float));
    e.g0 = malloc(nmax * sizeof(float));
    if (!e.p0 || !e.g0) {
        fprintf(stderr, "clopt-bench: out of host memory for n = %zu\n", nmax);
        goto out;
    }
    fill_uniform(e.p0, nmax, 1, -1.0f, 1.0f);
    fill_uniform(e.g0, nmax, 2, -0.5f, 0.5f);

    printf("clopt-bench: device %s, vector width %u, work-group %zu%s, %u vector(s) per "
           "work-item%s, C loop %d thread(s), median of %ld after %ld warm-up\n",
           clopt_ctx_device_name(e.ctx), e.tuning.vector_width, e.tuning.work_group_size,
           e.tuning.work_group_size ? "" : " (driver)",
           bench_tuning_ipw(&e.tuning),
           tuning_given ? " (set by --vw/--wg/--ipw)" : "", cloop_threads(), o.reps, o.warmup);
    if (busy)
        printf("note: %d other runnable process(es) at start: they compete for the CPUs and "
               "the timings will be noisy\n",
               busy);

    if (strstr(clopt_ctx_device_name(e.ctx), "pthread") || pocl_affinity_given)
        printf("POCL_AFFINITY=%s (%s)\n", getenv("POCL_AFFINITY"),
               pocl_affinity_given ? "from the environment" : "set by clopt-bench: pinned workers");
    if (o.no_flush || !e.cache_bytes)
        printf("caches: not flushed (%s)\n", o.no_flush ? "--no-flush" : "the device reports none");
    else
        printf("caches: steps moving >= 1/2 of the device's %.0f MiB global memory cache are "
               "timed cold (a %.0f MiB %s before each timed step; --no-flush: warm)\n",
               (double)e.cache_bytes / (1024.0 * 1024.0),
               (double)(e.device_type & CL_DEVICE_TYPE_CPU ? e.cache_bytes : e.flush_bytes) /
                   (1024.0 * 1024.0),
               e.device_type & CL_DEVICE_TYPE_CPU ? "read on the host" : "fill");
    if (o.sweep) {
        printf("tuning sweep: vector widths x work-group sizes x vectors per work-item, "
               "interleaved in every repetition; GB/s = bytes_per_param * n / ms (device time)\n");
        if (run_sweep(&e))
            goto out;
    } else {
        printf("ms: device time from profiling events (first start to last end for the unfused "
               "chain); the optimizer level (arena, separate, and fused of the rules that only "
               "exist there) from the end of a marker before clopt_optimizer_step to the end "
               "of the step's marker; wall clock for c_loop; copy/stream: fraction of their "
               "GB/s; fused_x: ms / fused ms; T: tensors\n%s\n",
               o.with_f32 && o.ndtypes == 1
                   ? ""
                   : "storage rows (dtype other than f32): fused = one clopt_enqueue_step with "
                     "those storage types (the rules that run at the optimizer level: "
                     "clopt_optimizer_step_on over one tensor of those types, each combination "
                     "timed on its own with its stream), stream = the stream kernel of the same "
                     "arrays in the same element sizes, B/p counted from them; stream: fraction "
                     "of the stream of the same dtype; fused_x: ms / the f32 fused ms\n");
        int header = 0;
        for (size_t ri_i = 0; ri_i < o.nrules; ri_i++) {
            const double t_rule = bench_now_ms();
            rule_info ri;
            if (rule_info_make(o.rules[ri_i], &ri))
                goto out;
            traffic_note(&ri);
            /* The unfused and stream kernels use the tuning of this rule's fused kernel (the
               library's table has rows per kernel), unless --vw/--wg/--ipw fixed one tuning
               for everything. */
            if (!tuning_given) {
                clopt_tuning rt;
                if (clopt_ctx_get_rule_tuning(e.ctx, ri.r->rule, &ri.hp, &rt) == CLOPT_SUCCESS)
                    bench_device_set_tuning(e.bd, &rt);
            }
            if (!rule_runs(&e, &ri))
                continue;
            check_result cr = {NAN, NAN, NAN, NAN, NAN, NAN, -1, {0}};
            for (size_t i = 0; i < MAX_DTYPES; i++)
                cr.storage_err[i] = NAN;
            if (o.check_n && check_rule(&e, &ri, &cr))
                goto out;
            for (size_t ni = 0; ni < o.nsizes; ni++) {
                size_t from = e.res.n;
                if (measure(&e, &ri, o.sizes[ni], &cr))
                    goto out;
                printf("\n");
                print_table(&e.res, from, !header);
                header = 1;
                print_tensors(&e, &ri, o.sizes[ni], from);
            }
            printf("(%s: %.1f s)\n\n", ri.r->name, (bench_now_ms() - t_rule) * 1e-3);
        }
    }
    if (optrun_wall_fallbacks())
        printf("note: %lu optimizer-level timing(s) had no marker profiling times on this "
               "device; their ms is the wall clock\n",
               optrun_wall_fallbacks());
    rc = 0;
    if (o.json && write_json(&e, o.json))
        rc = 1;
    if (o.csv && write_csv(&e, o.csv))
        rc = 1;
    if (o.plot && write_plot(&e, o.plot))
        rc = 1;
    printf("clopt-bench: %.1f s\n", (bench_now_ms() - t_start) * 1e-3);
    if (!rc && e.units_skipped) {
        fprintf(stderr, "clopt-bench: %d tensor-count measurement(s) could not be made (see "
                        "above)\n", e.units_skipped);
        rc = 1;
    }
    if ((!rc || e.units_skipped) && e.check_failed) { /* 3 wins over a skipped count */
        fprintf(stderr, "clopt-bench: the correctness check failed (see above)\n");
        rc = 3;
    }
out:
    if (e.flush_buf)
        clReleaseMemObject(e.flush_buf);
    free(e.flush_host);
    free(e.res.rows);
    free(e.p0);
    free(e.g0);
    bench_device_destroy(e.bd);
    clopt_ctx_destroy(e.ctx);
    return rc;
}
