/* SPDX-License-Identifier: MIT */
/* clopt-bench: the correctness check. Before a rule is timed, CHECK_STEPS steps at a small n
 * run through every selected variant and each must agree with the reference, fused. */
#include "driver.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_STEPS 8
/* Tensors of the check's arena/separate runs (uneven: the split's remainder is exercised). */
#define CHECK_RTOL 1e-4
#define CHECK_ATOL_REL 1e-4 /* atol = this * rms of the reference array */

/* Worst error of x against ref; *where receives its index, *bad the number of elements out
   of tolerance. */
double check_compare(const float *x, const float *ref, size_t n, size_t *where, size_t *bad)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)ref[i] * ref[i];
    double atol = CHECK_ATOL_REL * sqrt(ss / (double)(n ? n : 1)) + 1e-30;
    double worst = 0.0;
    *where = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - ref[i]);
        double q = d / (atol + CHECK_RTOL * fabs((double)ref[i]));
        if (!(q <= 1.0))
            ++*bad;
        if (!(q <= worst)) { /* NaN counts as the worst */
            worst = isnan(q) ? INFINITY : q;
            *where = i;
        }
    }
    return worst;
}

/* A set of host arrays: parameters, then every state (lengths may differ). */
typedef struct arrays {
    size_t count;
    size_t len[1 + BENCH_MAX_STATE];
    float *x[1 + BENCH_MAX_STATE];
    const char *name[1 + BENCH_MAX_STATE];
} arrays;

static void arrays_free(arrays *a)
{
    for (size_t k = 0; k < 1 + BENCH_MAX_STATE; k++)
        free(a->x[k]);
    memset(a, 0, sizeof *a);
}

/* Arrays of the optimizer-level layout of a split. */
static int arrays_alloc(const rule_info *ri, const bench_split *sp, arrays *a)
{
    memset(a, 0, sizeof *a);
    const char *names[BENCH_MAX_STATE];
    size_t len[BENCH_MAX_STATE];
    for (size_t i = 0; i < sp->T; i++) {
        size_t ns = bench_state_layout(ri->r, &ri->hp, sp->len[i], sp->rows ? sp->rows[i] : 0,
                                       sp->cols, len, names);
        a->count = 1 + ns;
        a->len[0] += sp->len[i];
        a->name[0] = "param";
        for (size_t k = 0; k < ns; k++) {
            a->len[1 + k] += len[k];
            a->name[1 + k] = names[k];
        }
    }
    for (size_t k = 0; k < a->count; k++) {
        a->x[k] = malloc((a->len[k] ? a->len[k] : 1) * sizeof(float));
        if (!a->x[k]) {
            arrays_free(a);
            fprintf(stderr, "clopt-bench: out of host memory\n");
            return -1;
        }
    }
    return 0;
}

/* Compares every array of a variant with the reference. Returns the worst error, or +inf
   when more elements than allowed are out of tolerance: none, except for rules with a sign()
   where rounding may legitimately flip the sign of a value within an ulp of 0 (a 1e-3
   fraction of the elements). Reports the worst element. */
static double compare_all(const rule_info *ri, const char *variant, const char *refname,
                          const arrays *x, const arrays *ref)
{
    if (x->count != ref->count) {
        fprintf(stderr, "clopt-bench: check %s: %s has %zu arrays, %s %zu\n", ri->r->name,
                variant, x->count, refname, ref->count);
        return INFINITY;
    }
    size_t total = 0;
    for (size_t k = 0; k < x->count; k++)
        total += x->len[k];
    const size_t allowed = (ri->r->flags & BENCH_SIGN) ? total / 1000 + 1 : 0;
    double worst = 0.0;
    size_t bad_total = 0;
    for (size_t k = 0; k < x->count; k++) {
        if (x->len[k] != ref->len[k]) {
            fprintf(stderr, "clopt-bench: check %s: %s: %s has %zu elements, %s %zu\n",
                    ri->r->name, variant, x->name[k], x->len[k], refname, ref->len[k]);
            return INFINITY;
        }
        size_t at = 0, bad = 0;
        double q = check_compare(x->x[k], ref->x[k], x->len[k], &at, &bad);
        bad_total += bad;
        if (bad)
            fprintf(allowed ? stdout : stderr,
                    "%s: check %s: %s: %zu element(s) of %s out of tolerance, worst "
                    "[%zu] = %.9g, %s %.9g (%.3g x tolerance)%s\n",
                    allowed ? "note" : "clopt-bench", ri->r->name, variant, bad, x->name[k], at,
                    (double)x->x[k][at], refname, (double)ref->x[k][at], q,
                    allowed ? "; a sign() rule: up to 0.1% flips at 0 are accepted" : "");
        if (!(q <= worst))
            worst = q;
    }
    if (bad_total > allowed)
        return worst > 1.0 ? worst : INFINITY;
    return worst > 1.0 ? 1.0 : worst;
}

static int arrays_identical(const arrays *a, const arrays *b)
{
    if (a->count != b->count)
        return 0;
    for (size_t k = 0; k < a->count; k++)
        if (a->len[k] != b->len[k] || memcmp(a->x[k], b->x[k], a->len[k] * sizeof(float)))
            return 0;
    return 1;
}

/* The check's gradient of step t (g holds CHECK_STEPS of them) into the instance. */
static int write_step_grad(env *e, instance *in, const float *g, size_t n, uint64_t t)
{
    cl_int err = clEnqueueWriteBuffer(e->queue, in->slot[BA_G], CL_TRUE, 0, n * sizeof(float),
                                      g + (t - 1) * n, 0, NULL, NULL);
    return err == CL_SUCCESS ? 0 : cl_fail("clEnqueueWriteBuffer", err);
}

/* Reads parameters and states of a device instance. */
static int read_instance(env *e, const instance *in, arrays *out)
{
    out->count = 1 + in->nstate;
    for (size_t k = 0; k < out->count; k++) {
        cl_mem b = in->slot[k == 0 ? BA_P : BA_S(k - 1)];
        cl_int err = clEnqueueReadBuffer(e->queue, b, CL_TRUE, 0, in->n * sizeof(float),
                                         out->x[k], 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return cl_fail("clEnqueueReadBuffer", err);
    }
    return 0;
}

static void read_host(const host_instance *h, arrays *out)
{
    memcpy(out->x[0], h->p, h->n * sizeof(float));
    for (size_t k = 0; k < h->nstate; k++)
        memcpy(out->x[1 + k], h->s[k], h->slen[k] * sizeof(float));
}

typedef int (*step_fn)(env *e, const rule_info *ri, const instance *in, uint64_t step,
                       bench_timing *t);

/* CHECK_STEPS steps of an op-level variant on a device instance of the slots in mask,
   gradients g (one n-array per step); its parameters and states into out. */
static int run_instance(env *e, const rule_info *ri, size_t n, unsigned mask, const float *p0,
                        const float *g, step_fn step, arrays *out)
{
    instance in;
    if (instance_create(e, ri, n, mask, p0, g, &in))
        return -1;
    int rc = 0;
    for (uint64_t t = 1; t <= CHECK_STEPS && !rc; t++) {
        rc = write_step_grad(e, &in, g, n, t);
        if (!rc)
            rc = step(e, ri, &in, t, NULL);
    }
    if (!rc)
        rc = read_instance(e, &in, out);
    instance_release(&in);
    return rc;
}

/* CHECK_STEPS optimizer steps of a T-tensor optimizer, gradients g (one n-array per step). */
static int run_optrun(env *e, const rule_info *ri, optrun_mode mode, const bench_split *sp,
                      const float *p0, const float *g, arrays *out)
{
    optrun *o = NULL;
    if (optrun_create(e->ctx, ri->r, &ri->hp, mode, sp, p0, g, &o))
        return -1;
    int rc = 0;
    for (size_t t = 0; t < CHECK_STEPS && !rc; t++) {
        rc = optrun_write_grad(o, g + t * sp->n);
        if (!rc)
            rc = optrun_step(o, 1, NULL);
    }
    if (!rc && optrun_array_count(o) != out->count) {
        fprintf(stderr, "clopt-bench: %s: the optimizer has %zu arrays, the benchmark %zu\n",
                ri->r->name, optrun_array_count(o), out->count);
        rc = -1;
    }
    if (!rc)
        rc = optrun_read(o, out->x);
    optrun_destroy(o);
    return rc;
}

static int run_cloop(const rule_info *ri, size_t n, size_t T, const float *p0, const float *g,
                     arrays *out)
{
    host_instance h;
    if (host_create(ri, n, T, p0, g, &h))
        return -1;
    for (uint64_t t = 1; t <= CHECK_STEPS; t++) {
        h.g = g + (t - 1) * n;
        cloop_step(ri, &h, t, NULL);
    }
    read_host(&h, out);
    host_release(&h);
    return 0;
}

/* 8 steps at a small n: the reference (fused: op level, or the optimizer level with one
   tensor), the unfused chain and the C loop on one tensor; arena with 1 tensor against the
   reference; arena and separate with CHECK_TENSORS tensors against the C loop over the same
   split (and against each other: the library makes them bit-identical). */
static int run_check(env *e, const rule_info *ri, size_t n, int with_opt, check_result *cr)
{
    const bench_rule *r = ri->r;
    cr->unfused_err = cr->cloop_err = cr->arena_err = cr->separate_err = NAN;
    cr->amp_err = cr->ranges_err = NAN;
    cr->arena_identical = -1;
    int rc = -1;
    float *p0 = malloc(n * sizeof(float));
    float *g = malloc((size_t)CHECK_STEPS * n * sizeof(float));
    arrays ref = {0}, x = {0}, xa = {0}, xc = {0};
    bench_split one = {0}, many = {0};
    if (!p0 || !g) {
        fprintf(stderr, "clopt-bench: out of host memory\n");
        goto done;
    }
    fill_uniform(p0, n, 11, -1.0f, 1.0f);
    for (size_t t = 0; t < CHECK_STEPS; t++)
        fill_uniform(g + t * n, n, 100 + t, -0.5f, 0.5f);
    if (bench_split_make(r, n, 1, &one) || arrays_alloc(ri, &one, &ref) ||
        arrays_alloc(ri, &one, &x))
        goto done;

    /* the reference */
    if (ri->opt_level) {
        if (run_optrun(e, ri, OPTRUN_SEPARATE, &one, p0, g, &ref))
            goto done;
    } else if (run_instance(e, ri, n, state_mask(ri), p0, g, fused_step, &ref)) {
        goto done;
    }

    /* unfused */
    if (r->chain && (e->opt->variants & (1u << V_UNFUSED))) {
        bench_op ops[BENCH_MAX_OPS];
        unsigned mask = state_mask(ri);
        for (uint64_t t = 1; t <= CHECK_STEPS; t++) {
            size_t nops = build_chain(ri, t, ops);
            mask |= chain_mask(ops, nops);
        }
        if (run_instance(e, ri, n, mask, p0, g, unfused_step, &x))
            goto done;
        cr->unfused_err = compare_all(ri, "unfused", "fused", &x, &ref);
    }

    /* C loop */
    if (run_cloop(ri, n, 1, p0, g, &x))
        goto done;
    cr->cloop_err = compare_all(ri, "c_loop", "fused", &x, &ref);

    if (with_opt) {
        /* Sophia's arena groups are refused (they would take no Hessian estimates) */
        const int arena = (e->opt->variants & (1u << V_ARENA)) != 0 && r->rule != CLOPT_SOPHIA;
        const int sep = (e->opt->variants & (1u << V_SEPARATE)) != 0;
        const size_t T = CHECK_TENSORS;
        if (arena) {
            if (run_optrun(e, ri, OPTRUN_ARENA, &one, p0, g, &x))
                goto done;
            cr->arena_err = compare_all(ri, "arena (1 tensor)", "fused", &x, &ref);
        }
        if (bench_split_make(r, n, T, &many) || arrays_alloc(ri, &many, &xc) ||
            arrays_alloc(ri, &many, &xa) || run_cloop(ri, n, T, p0, g, &xc))
            goto done;
        if (arena) {
            if (run_optrun(e, ri, OPTRUN_ARENA, &many, p0, g, &xa))
                goto done;
            double q = compare_all(ri, "arena (3 tensors)", "c_loop", &xa, &xc);
            cr->arena_err = isnan(cr->arena_err) || q > cr->arena_err ? q : cr->arena_err;
        }
        if (sep) {
            arrays xs = {0};
            if (arrays_alloc(ri, &many, &xs))
                goto done;
            if (run_optrun(e, ri, OPTRUN_SEPARATE, &many, p0, g, &xs)) {
                arrays_free(&xs);
                goto done;
            }
            cr->separate_err = compare_all(ri, "separate (3 tensors)", "c_loop", &xs, &xc);
            if (arena)
                cr->arena_identical = arrays_identical(&xa, &xs);
            arrays_free(&xs);
        }
        /* AMP (scale 1) and clipping (never reached) change no number; range groups */
        static const int extra[] = {V_ARENA_AMP, V_RANGES};
        for (size_t k = 0; k < 2; k++) {
            const int v = extra[k];
            if (!(e->opt->variants & (1u << v)) || r->rule == CLOPT_SOPHIA ||
                (v == V_RANGES && (r->flags & BENCH_OPT_LEVEL)))
                continue;
            arrays xs = {0};
            if (arrays_alloc(ri, &many, &xs))
                goto done;
            if (run_optrun(e, ri, v == V_RANGES ? OPTRUN_RANGES : OPTRUN_ARENA_AMP, &many, p0, g,
                           &xs)) {
                arrays_free(&xs);
                goto done;
            }
            double q = compare_all(ri, v == V_RANGES ? "ranges (3 tensors)" : "arena_amp (3 tensors)",
                                   "c_loop", &xs, &xc);
            double *err = v == V_RANGES ? &cr->ranges_err : &cr->amp_err;
            *err = q;
            arrays_free(&xs);
        }
    }
    rc = 0;
done:
    arrays_free(&ref);
    arrays_free(&x);
    arrays_free(&xa);
    arrays_free(&xc);
    bench_split_free(&one);
    bench_split_free(&many);
    free(p0);
    free(g);
    return rc;
}

/* The matrix shape of the check for matrix rules: R x (R + 3) (R the largest divisor up to
   the square root, so bench_matrix_shape gives it back), odd columns, near check_n. */
static size_t check_size(const rule_info *ri, size_t n)
{
    if (!(ri->r->flags & BENCH_MATRIX))
        return n;
    size_t R = (size_t)sqrt((double)n);
    R = R > 2 + CHECK_TENSORS ? R - 2 : CHECK_TENSORS;
    return R * (R + 3);
}

const char *check_word(double err)
{
    if (isnan(err))
        return "-";
    return err <= 1.0 ? "ok" : "FAIL";
}

/* The check of the float32 variants (prints its line). */
static int check_f32(env *e, const rule_info *ri, size_t n, check_result *cr)
{
    const options *o = e->opt;
    const int with_opt = (o->variants & V_MANY) != 0;
    if (run_check(e, ri, n, with_opt, cr))
        return -1;
    int bad = cr->unfused_err > 1.0 || cr->cloop_err > 1.0 || cr->arena_err > 1.0 ||
              cr->separate_err > 1.0 || cr->amp_err > 1.0 || cr->ranges_err > 1.0;
    char shape[64] = "";
    if (ri->r->flags & BENCH_MATRIX) {
        size_t R, C;
        bench_matrix_shape(n, &R, &C);
        snprintf(shape, sizeof shape, " = %zux%zu", R, C);
    }
    printf("check %s (n=%zu%s, %d steps, |x-fused| <= %g*rms + %g*|fused|%s): unfused %s "
           "(%.3g), c_loop %s (%.3g)",
           ri->r->name, n, shape, CHECK_STEPS, CHECK_ATOL_REL, CHECK_RTOL,
           ri->opt_level ? "; fused = the optimizer level" : "", check_word(cr->unfused_err),
           cr->unfused_err, check_word(cr->cloop_err), cr->cloop_err);
    if (with_opt)
        printf(", arena %s (%.3g), separate with %d tensors vs the C loop %s (%.3g)%s",
               check_word(cr->arena_err), cr->arena_err, CHECK_TENSORS,
               check_word(cr->separate_err), cr->separate_err,
               cr->arena_identical == 1   ? ", arena = separate bit for bit"
               : cr->arena_identical == 0 ? ", arena and separate NOT bit-identical"
                                          : "");
    if (!isnan(cr->amp_err))
        printf(", arena_amp %s (%.3g)", check_word(cr->amp_err), cr->amp_err);
    if (!isnan(cr->ranges_err))
        printf(", ranges %s (%.3g)", check_word(cr->ranges_err), cr->ranges_err);
    printf("\n");
    if (bad) {
        fprintf(stderr,
                "clopt-bench: WARNING: %s: a variant disagrees with the fused kernel; its "
                "timings do not compare like with like\n",
                ri->r->name);
        e->check_failed = 1;
    }
    return 0;
}

int check_rule(env *e, const rule_info *ri, check_result *cr)
{
    const size_t n = check_size(ri, e->opt->check_n);
    if (e->opt->with_f32 && check_f32(e, ri, n, cr))
        return -1;
    return ri->opt_level ? storage_opt_check(e, ri, n, cr->storage_err)
                         : storage_check(e, ri, n, cr->storage_err);
}
