/* SPDX-License-Identifier: MIT */
/* clopt-bench: storage rows (--dtypes) of the rules that run at the optimizer level (LAMB,
 * Adafactor, cautious AdamW and Lion, StableAdamW, Ranger on matrices, Adam in Lookahead).
 *
 * A row's fused step is clopt_optimizer_step_on over one caller-owned tensor whose θ and g
 * are stored in the combination's types, in a group with its master, rounding and state type
 * (optrun_create_typed), timed by markers as the float32 row. Its stream kernel moves the
 * float32 row's arrays in the combination's element sizes: θ as stored (with its master or
 * remainder), the written states, g, and the second reads of the multi-pass rules (θ, g or
 * states read again by another pass, bench_traffic's re_*) as read-only arrays of their own;
 * Lookahead's sync (θ as stored and the float32 slow weights) once per period.
 *
 * Each combination is measured on its own: its optimizer and stream buffers are made, fused
 * and stream timed interleaved, then both released (every combination's optimizer at once
 * would not fit in memory at 2^25). So the stream fraction compares like with like; fused_x
 * (against the float32 fused row, timed before) moves with the machine's drift. */
#define _POSIX_C_SOURCE 200809L

#include "driver.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the stream kernel's arrays ---------------------------------------------------------- */

typedef struct opt_plan {
    bench_stream_arrays step, sync; /* sync: Lookahead's, nrw 0 without it */
} opt_plan;

enum { RW, RO, WO };

/* Appends an array of `size`-byte elements to a's list `kind`; -1 when the list is full. */
static int put(bench_stream_arrays *a, int kind, unsigned size)
{
    size_t *count = kind == RW ? &a->nrw : kind == RO ? &a->nro : &a->nwo;
    unsigned *sizes = kind == RW ? a->rw_size : kind == RO ? a->ro_size : a->wo_size;
    const size_t cap = kind == RW   ? BENCH_STREAM_MAX_RW
                       : kind == RO ? BENCH_STREAM_MAX_RO
                                    : BENCH_STREAM_MAX_WO;
    if (*count == cap)
        return -1;
    sizes[(*count)++] = size;
    return 0;
}

/* θ as stored. Read and written: an f32 master (and θ written, never read), or θ and its
   remainder, or θ. Read again: the master, or θ and the remainder, or θ. */
static int put_theta(bench_stream_arrays *a, const storage *c, int again)
{
    const unsigned ps = (unsigned)clopt_dtype_size(c->p);
    const int rem = c->master == CLOPT_MASTER_REMAINDER;
    if (c->master == CLOPT_MASTER_F32)
        return again ? put(a, RO, 4) : (put(a, RW, 4) || put(a, WO, ps) ? -1 : 0);
    if (put(a, again ? RO : RW, ps))
        return -1;
    return rem ? put(a, again ? RO : RW, 2) : 0;
}

static int plan_of(const rule_info *ri, const storage *c, opt_plan *pl)
{
    memset(pl, 0, sizeof *pl);
    const bench_traffic *t = &ri->tr;
    const unsigned gs = (unsigned)clopt_dtype_size(c->g);
    const clopt_dtype sd = storage_state_dtype(c);
    const unsigned ss = (unsigned)clopt_dtype_size(sd);
    int rc = put_theta(&pl->step, c, 0);
    for (size_t k = 1; k < t->rw && !rc; k++) { /* the written states */
        rc = put(&pl->step, RW, ss);
        if (!rc && sd == CLOPT_DTYPE_U8)
            rc = pl->step.nab == BENCH_STREAM_MAX_AB ? -1 : (pl->step.nab++, 0);
    }
    if (!rc)
        rc = put(&pl->step, RO, gs);
    for (size_t k = 0; k < t->re_theta && !rc; k++)
        rc = put_theta(&pl->step, c, 1);
    for (size_t k = 0; k < t->re_grad + (ri->gc ? 1u : 0u) && !rc; k++)
        rc = put(&pl->step, RO, gs);
    for (size_t k = 0; k < t->re_states && !rc; k++)
        rc = put(&pl->step, RO, ss);
    if (!rc && t->la_k)
        rc = put_theta(&pl->sync, c, 0) || put(&pl->sync, RW, 4) ? -1 : 0;
    if (rc) {
        fprintf(stderr, "clopt-bench: %s %s: too many arrays for the stream kernel\n",
                ri->r->name, c->name);
        return -1;
    }
    if (1 + t->re_theta + t->re_grad + t->re_states != t->ro) {
        fprintf(stderr, "clopt-bench: %s: the traffic model's %zu read-only arrays are not g "
                        "and its second reads (bench_rule_traffic)\n",
                ri->r->name, t->ro);
        return -1;
    }
    return 0;
}

double storage_opt_bytes(const rule_info *ri, const storage *c)
{
    opt_plan pl;
    if (plan_of(ri, c, &pl))
        return -1.0;
    const double sync = ri->tr.la_k ? bench_stream_bytes(&pl.sync) / ri->tr.la_k : 0.0;
    return bench_stream_bytes(&pl.step) + sync;
}

/* The plan's buffers: n elements of each array's size (absmaxes: one float per block),
   zeros. */
typedef struct plan_bufs {
    cl_mem all[2 * (BENCH_STREAM_MAX_RW + BENCH_STREAM_MAX_RO + BENCH_STREAM_MAX_WO +
                    BENCH_STREAM_MAX_AB)];
    size_t count;
} plan_bufs;

static void plan_bufs_release(plan_bufs *b)
{
    for (size_t i = 0; i < b->count; i++)
        clReleaseMemObject(b->all[i]);
    b->count = 0;
}

static int alloc_list(env *e, plan_bufs *b, cl_mem *out, const unsigned *sizes, size_t count,
                      size_t n)
{
    for (size_t j = 0; j < count; j++) {
        const size_t bytes = sizes ? n * (sizes[j] ? sizes[j] : 4u)
                                   : (n + BENCH_Q8_BLOCK - 1) / BENCH_Q8_BLOCK * sizeof(float);
        cl_int err = CL_SUCCESS;
        out[j] = clCreateBuffer(e->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
        if (!out[j])
            return cl_fail("allocating the stream arrays", err);
        b->all[b->count++] = out[j];
        const cl_uchar zero = 0;
        err = fill_pieces(e->queue, out[j], &zero, 1, bytes);
        if (err != CL_SUCCESS)
            return cl_fail("clEnqueueFillBuffer", err);
    }
    return 0;
}

static int plan_alloc(env *e, opt_plan *pl, size_t n, plan_bufs *b)
{
    b->count = 0;
    bench_stream_arrays *as[2] = {&pl->step, &pl->sync};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        bench_stream_arrays *a = as[i];
        rc = alloc_list(e, b, a->rw, a->rw_size, a->nrw, n) ||
             alloc_list(e, b, a->ro, a->ro_size, a->nro, n) ||
             alloc_list(e, b, a->wo, a->wo_size, a->nwo, n) ||
             alloc_list(e, b, a->ab, NULL, a->nab, n);
    }
    cl_int err = rc ? CL_SUCCESS : clFinish(e->queue);
    if (!rc && err != CL_SUCCESS)
        rc = cl_fail("clFinish", err);
    if (rc)
        plan_bufs_release(b);
    return rc ? -1 : 0;
}

/* One repetition: spr stream kernels of the step's arrays, then the sync's (Lookahead). */
static int stream_rep_of(env *e, const rule_info *ri, const opt_plan *pl, size_t n,
                         bench_timing *t)
{
    cl_event evs[64];
    const unsigned nk = ri->spr + (pl->sync.nrw ? 1u : 0u);
    if (nk > 64) {
        fprintf(stderr, "clopt-bench: %s: Lookahead period too long\n", ri->r->name);
        return -1;
    }
    const double w0 = bench_now_ms();
    unsigned done = 0;
    int rc = 0;
    for (; done < nk; done++)
        if (bench_enqueue_stream(e->bd, done < ri->spr ? &pl->step : &pl->sync, n,
                                 &evs[done]) != CL_SUCCESS) {
            fprintf(stderr, "clopt-bench: %s\n", bench_device_error(e->bd));
            rc = -1;
            break;
        }
    return time_events(evs, done, rc, w0, ri->spr, 1, t);
}

/* ---- what the library takes -------------------------------------------------------------- */

/* The group's hyperparameters for combination c. */
static clopt_hparams hparams_of(const rule_info *ri, const storage *c)
{
    clopt_hparams hp = ri->hp;
    hp.master = (int)c->master;
    hp.stochastic_rounding = c->sr;
    hp.state_dtype = (int)storage_state_dtype(c);
    return hp;
}

void storage_opt_rule_types(env *e, rule_info *ri)
{
    const options *o = e->opt;
    ri->state_types = 1u;
    for (int st = 1; st < STORAGE_STATE_TYPES; st++) {
        size_t asked = 0;
        const storage *ex = NULL;
        for (size_t i = 0; i < o->ndtypes; i++)
            if (o->dtypes[i].state == st)
                asked++, ex = ex ? ex : &o->dtypes[i];
        if (!asked)
            continue;
        const clopt_hparams hp = hparams_of(ri, ex);
        clopt_optimizer *opt = NULL;
        const clopt_status s = clopt_optimizer_create(e->ctx, ri->r->rule, &hp, &opt);
        clopt_optimizer_destroy(opt);
        if (s == CLOPT_SUCCESS) {
            ri->state_types |= 1u << st;
            continue;
        }
        const char *detail = clopt_ctx_last_error(e->ctx);
        printf("note: %s: %s not measured (%zu combination%s of --dtypes): %s\n", ri->r->name,
               strstr(ex->name, "state="), asked, asked == 1 ? "" : "s",
               *detail ? detail : clopt_status_str(s));
    }
}

/* ---- measurement ------------------------------------------------------------------------- */

/* Fused and stream of combination i, interleaved, then their rows. */
static int measure_one(env *e, const rule_info *ri, size_t n, size_t i, const check_result *cr)
{
    const options *o = e->opt;
    const storage *c = &o->dtypes[i];
    const size_t total = (size_t)(o->warmup + o->reps);
    unit us[2] = {{.variant = V_STREAM, .T = 1, .st = c, .dtype = i},
                  {.variant = V_FUSED, .T = 1, .st = c, .dtype = i}};
    const int want[2] = {(o->variants >> V_STREAM) & 1, (o->variants >> V_FUSED) & 1};
    opt_plan pl;
    plan_bufs pb = {.count = 0};
    bench_split sp;
    int rc = plan_of(ri, c, &pl);
    if (rc || bench_split_make(ri->r, n, 1, &sp))
        return -1;
    for (int k = 0; k < 2 && !rc; k++) {
        us[k].bytes = storage_opt_bytes(ri, c);
        shape_text(&sp, us[k].shape, sizeof us[k].shape);
        rc = unit_samples(&us[k], (size_t)o->reps);
    }
    if (!rc && want[1]) {
        const clopt_hparams hp = hparams_of(ri, c);
        rc = optrun_create_typed(e->ctx, ri->r, &hp, &sp, e->p0, e->g0, c->p, c->g, &us[1].opt);
        if (!rc)
            rc = optrun_warm(e, ri, us[1].opt);
    }
    bench_split_free(&sp);
    if (!rc && want[0])
        rc = plan_alloc(e, &pl, n, &pb);
    const int flush = wants_flush(e, us[0].bytes * (double)n);
    for (size_t it = 0; it < total && !rc; it++)
        for (int k = 0; k < 2 && !rc; k++) {
            if (!want[k])
                continue;
            if (flush && (rc = flush_device(e)) != 0)
                break;
            bench_timing t = {0};
            rc = k ? optrun_step(us[1].opt, ri->spr, &t) : stream_rep_of(e, ri, &pl, n, &t);
            if (!rc && it >= (size_t)o->warmup)
                record(&us[k], &t);
        }
    plan_bufs_release(&pb);
    for (int k = 0; k < 2 && !rc; k++)
        if (want[k])
            rc = finish_row(e, ri, &us[k], n,
                            k ? check_word(cr->storage_err[i]) : "-");
    unit_free(&us[0]);
    unit_free(&us[1]);
    return rc;
}

int storage_opt_measure(env *e, const rule_info *ri, size_t n, const check_result *cr)
{
    const options *o = e->opt;
    if (!ri->opt_level || !(o->variants & ((1u << V_STREAM) | (1u << V_FUSED))))
        return 0;
    int one = 0;
    for (size_t i = 0; i < o->ntensors; i++)
        one |= o->tensors[i] == 1;
    for (size_t i = 0; i < o->ndtypes && one; i++) {
        const storage *c = &o->dtypes[i];
        if (!storage_is_f32(c) && storage_runs(ri, c) && measure_one(e, ri, n, i, cr))
            return -1;
    }
    return 0;
}

/* ---- the check --------------------------------------------------------------------------- */


/* x = x rounded to nearest even to type t and back, on the device (the library's converter,
   which the optimizer's tensors were filled with). */
static int round_to(env *e, float *x, size_t n, clopt_dtype t)
{
    if (t == CLOPT_DTYPE_F32)
        return 0;
    cl_int err = CL_SUCCESS;
    cl_mem a = clCreateBuffer(e->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    cl_mem b = a ? clCreateBuffer(e->context, CL_MEM_READ_WRITE, n * 2, NULL, &err) : NULL;
    int rc = b ? 0 : cl_fail("clCreateBuffer", err);
    if (!rc && (err = clEnqueueWriteBuffer(e->queue, a, CL_FALSE, 0, n * sizeof(float), x, 0,
                                           NULL, NULL)) != CL_SUCCESS)
        rc = cl_fail("clEnqueueWriteBuffer", err);
    clopt_status s = CLOPT_SUCCESS;
    if (!rc)
        s = clopt_enqueue_convert(e->ctx, NULL, (clopt_tensor){b, 0}, t, (clopt_tensor){a, 0},
                                  CLOPT_DTYPE_F32, n, 0, 0, 0, 1, 0, NULL, NULL);
    if (!rc && s == CLOPT_SUCCESS)
        s = clopt_enqueue_convert(e->ctx, NULL, (clopt_tensor){a, 0}, CLOPT_DTYPE_F32,
                                  (clopt_tensor){b, 0}, t, n, 0, 0, 0, 1, 0, NULL, NULL);
    if (!rc && s != CLOPT_SUCCESS)
        rc = clopt_fail_msg(e, "clopt_enqueue_convert", s);
    if (!rc && (err = clEnqueueReadBuffer(e->queue, a, CL_TRUE, 0, n * sizeof(float), x, 0,
                                          NULL, NULL)) != CL_SUCCESS)
        rc = cl_fail("clEnqueueReadBuffer", err);
    if (b)
        clReleaseMemObject(b);
    if (a)
        clReleaseMemObject(a);
    return rc;
}

/* The float32 optimizer's results after one step: θ, then the states (bench_state_layout's
   order and names). */
typedef struct ref_run {
    float *x[1 + BENCH_MAX_STATE];
    size_t len[1 + BENCH_MAX_STATE];
    const char *name[BENCH_MAX_STATE];
    size_t nstate;
    float *before; /* θ before the step (rounded to the combination's type) */
} ref_run;

/* State `name` of the combination against the float32 one (ref, len floats): f32 with the
   check's usual tolerance, bf16 within one bf16 ulp, 8-bit codes within one step of the map
   at the value (the absmax is the state "<name>.absmax"). The error in units of its
   tolerance. */
static double compare_state(optrun *x, const rule_info *ri, const storage *c, const char *name,
                            const float *ref, size_t len, void *buf, float *am)
{
    clopt_dtype dt = CLOPT_DTYPE_F32;
    const long got = optrun_read_state_raw(x, name, buf, len * sizeof(float), &dt);
    if (got < 0)
        return INFINITY;
    size_t at = 0, bad = 0;
    double q = 0.0;
    if (dt == CLOPT_DTYPE_F32) {
        q = check_compare(buf, ref, len, &at, &bad);
    } else if (dt == CLOPT_DTYPE_U8) {
        char amname[64];
        snprintf(amname, sizeof amname, "%s.absmax", name);
        clopt_dtype adt;
        const size_t blocks = (len + BENCH_Q8_BLOCK - 1) / BENCH_Q8_BLOCK;
        if (optrun_read_state_raw(x, amname, am, blocks * sizeof(float), &adt) < 0)
            return INFINITY;
        float map[256];
        clopt_q8_map(storage_q8_signed(name), map);
        const uint8_t *code = buf;
        for (size_t i = 0; i < len; i++) {
            const unsigned k = code[i];
            const double a = am[i / BENCH_Q8_BLOCK];
            const double step = fmax(k < 255 ? map[k + 1] - map[k] : 0.0,
                                     k > 0 ? map[k] - map[k - 1] : 0.0) * a;
            const double d = fabs(map[k] * a - ref[i]) / (step + 1e-30);
            if (!(d <= 1.0) && !bad++)
                at = i;
            q = fmax(q, isnan(d) ? INFINITY : d);
        }
    } else {
        for (size_t i = 0; i < len; i++) {
            const double d = fabs(storage_value_at(buf, i, dt) - ref[i]) /
                             storage_ulp_of(ref[i], dt);
            if (!(d <= 1.0) && !bad++)
                at = i;
            q = fmax(q, isnan(d) ? INFINITY : d);
        }
    }
    if (bad)
        fprintf(stderr, "clopt-bench: check %s %s: %zu element(s) of %s (%s) out of tolerance, "
                        "[%zu] = %.9g, the f32 optimizer's %.9g\n",
                ri->r->name, c->name, bad, name, clopt_dtype_name(dt), at,
                dt == CLOPT_DTYPE_U8 ? NAN : storage_value_at(buf, at, dt), (double)ref[at]);
    return q;
}

/* The master as float32 bits (θ's bits and the sign-extended remainder for a remainder). */
static int master_bits(optrun *x, const storage *c, const void *theta, size_t n, uint32_t *out)
{
    clopt_dtype dt;
    if (c->master == CLOPT_MASTER_F32)
        return optrun_read_state_raw(x, "master", out, n * 4, &dt) < 0 ? -1 : 0;
    uint16_t *rem = malloc(n * sizeof *rem);
    int rc = !rem || optrun_read_state_raw(x, "master_remainder", rem, n * 2, &dt) < 0;
    for (size_t i = 0; i < n && !rc; i++)
        out[i] = ((uint32_t)((const uint16_t *)theta)[i] << 16) +
                 (uint32_t)(int32_t)(int16_t)rem[i];
    free(rem);
    return rc ? -1 : 0;
}

/* The master against the f32 optimizer's θ: bit for bit with f32 states; with bf16 or 8-bit
   states (whose rounding a second pass may read back) within 1/16 of the step plus an f32
   ulp. */
static double compare_master(const rule_info *ri, const storage *c, const uint32_t *bits,
                             const ref_run *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float m;
        memcpy(&m, &bits[i], sizeof m);
        const double ref = r->x[0][i];
        const double tol = c->state ? fabs(ref - r->before[i]) / 16.0 +
                                          storage_ulp_of(ref, CLOPT_DTYPE_F32)
                                    : 0.0;
        if (!(fabs(m - ref) <= tol)) {
            fprintf(stderr, "clopt-bench: check %s %s: master[%zu] = %.9g, the f32 "
                            "optimizer's θ %.9g (%s)\n",
                    ri->r->name, c->name, i, (double)m, ref,
                    c->state ? "beyond 1/16 of the step" : "not bit for bit");
            return INFINITY;
        }
    }
    return 0.0;
}

/* What the check requires (its line). */
#define OPT_CHECK_RULES                                                                    \
    "θ within 1 ulp of its type (with bf16 or int8 states plus 1/16 of the step); the master " \
    "bit for bit with f32 states, within 1/16 of the step with others; f32 states as above, " \
    "bf16 ones within 1 bf16 ulp, int8 ones within one step of the map"

typedef struct opt_check_out {
    double theta_ulps, update_ulps, err;
} opt_check_out;

static int check_one(env *e, const rule_info *ri, const storage *c, const bench_split *sp,
                     const float *p0, const float *g0, ref_run *r, opt_check_out *out)
{
    const size_t n = sp->n;
    float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    void *theta = malloc(n * sizeof(float)), *buf = malloc(n * sizeof(float));
    float *am = malloc((n / BENCH_Q8_BLOCK + 1) * sizeof(float));
    uint32_t *bits = malloc(n * sizeof(uint32_t));
    double *upd = malloc(n * sizeof(double));
    optrun *ref = NULL, *x = NULL;
    int rc = !p || !g || !theta || !buf || !am || !bits || !upd ? -1 : 0;
    if (rc)
        fprintf(stderr, "clopt-bench: out of host memory\n");
    if (!rc) {
        memcpy(p, p0, n * sizeof(float));
        memcpy(g, g0, n * sizeof(float));
        rc = round_to(e, p, n, c->p) || round_to(e, g, n, c->g) ? -1 : 0;
    }
    if (!rc)
        rc = optrun_create(e->ctx, ri->r, &ri->hp, OPTRUN_SEPARATE, sp, p, g, &ref);
    if (!rc)
        rc = optrun_step(ref, 1, NULL);
    if (!rc)
        r->nstate = optrun_array_count(ref) - 1;
    for (size_t k = 0; !rc && k <= r->nstate; k++) {
        r->len[k] = optrun_array_len(ref, k);
        free(r->x[k]);
        r->x[k] = malloc((r->len[k] ? r->len[k] : 1) * sizeof(float));
        rc = r->x[k] ? 0 : -1;
    }
    if (!rc)
        rc = optrun_read(ref, r->x);
    if (!rc) {
        size_t lens[BENCH_MAX_STATE];
        bench_state_layout(ri->r, &ri->hp, n, sp->rows ? sp->rows[0] : 0, sp->cols, lens,
                           r->name);
        r->before = p;
        const clopt_hparams hp = hparams_of(ri, c);
        rc = optrun_create_typed(e->ctx, ri->r, &hp, sp, p, g, c->p, c->g, &x);
    }
    if (!rc)
        rc = optrun_step(x, 1, NULL);
    if (!rc)
        rc = optrun_read_theta_raw(x, theta);
    /* with bf16 or 8-bit states a second pass (LAMB's update) reads the rounded states: θ
       may move by a fraction of the step more (bf16: ~2^-8) */
    double worst = 0.0, err = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const double ref_i = r->x[0][i], u = storage_ulp_of(ref_i, c->p);
        const double step = fabs(ref_i - (double)p[i]);
        const double q = fabs(storage_value_at(theta, i, c->p) - ref_i) /
                         (u + (c->state ? step / 16.0 : 0.0));
        if (!(q <= worst))
            worst = isnan(q) ? INFINITY : q, at = i;
        upd[i] = step / u;
    }
    if (!rc && worst > 1.0)
        fprintf(stderr, "clopt-bench: check %s %s: θ[%zu] = %.9g, the f32 optimizer's %.9g: "
                        "%.3g x the tolerance (1 ulp of %s%s)\n",
                ri->r->name, c->name, at, storage_value_at(theta, at, c->p),
                (double)r->x[0][at], worst, clopt_dtype_name(c->p),
                c->state ? ", plus 1/16 of the step" : "");
    if (!rc && c->master != CLOPT_MASTER_NONE) {
        rc = master_bits(x, c, theta, n, bits);
        if (!rc)
            err = fmax(err, compare_master(ri, c, bits, r, n));
    }
    for (size_t k = 0; k < r->nstate && !rc; k++)
        err = fmax(err, compare_state(x, ri, c, r->name[k], r->x[1 + k], r->len[1 + k], buf,
                                      am));
    if (!rc) {
        out->theta_ulps = worst;
        out->update_ulps = median(upd, n);
        out->err = fmax(worst, err);
    }
    r->before = NULL;
    optrun_destroy(x);
    optrun_destroy(ref);
    free(p);
    free(g);
    free(theta);
    free(buf);
    free(am);
    free(bits);
    free(upd);
    return rc;
}

int storage_opt_check(env *e, const rule_info *ri_rule, size_t n, double *err)
{
    const options *o = e->opt;
    /* LAMB's step is lr·‖θ‖/‖r‖·r: at lr 1e-3 it moves θ by a fraction of a 16-bit ulp,
       and a step that left θ alone would pass; at 0.05 it moves θ by several */
    rule_info ck = *ri_rule;
    if (ck.r->rule == CLOPT_LAMB)
        ck.hp.lr = 0.05;
    const rule_info *ri = &ck;
    const size_t todo = storage_check_begin(e, ri, err);
    if (!todo || !ri->opt_level)
        return 0;
    bench_split sp;
    if (bench_split_make(ri->r, n, 1, &sp))
        return -1;
    n = sp.n;
    float *p0 = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    ref_run r = {{0}, {0}, {0}, 0, NULL};
    int rc = p0 && g ? 0 : -1;
    if (rc) {
        fprintf(stderr, "clopt-bench: out of host memory\n");
    } else {
        storage_check_inputs(p0, g, n);
    }
    storage_tally t = STORAGE_TALLY_INIT(todo);
    for (size_t i = 0; i < o->ndtypes && !rc; i++) {
        const storage *c = &o->dtypes[i];
        opt_check_out co;
        if (storage_is_f32(c) || !storage_runs(ri, c) ||
            (rc = check_one(e, ri, c, &sp, p0, g, &r, &co)) != 0)
            continue;
        err[i] = co.err;
        storage_tally_add(&t, i, co.err, co.theta_ulps, co.update_ulps);
    }
    if (!rc)
        storage_tally_print(e, ri, n,
                            ri->r->rule == CLOPT_LAMB
                                ? "1 optimizer step of each combination on one tensor against "
                                  "the f32 optimizer on the same rounded θ and g; " OPT_CHECK_RULES
                                  "; lr 0.05"
                                : "1 optimizer step of each combination on one tensor against "
                                  "the f32 optimizer on the same rounded θ and g; " OPT_CHECK_RULES,
                            "x its tolerance", &t);
    for (size_t k = 0; k <= BENCH_MAX_STATE; k++)
        free(r.x[k]);
    bench_split_free(&sp);
    free(p0);
    free(g);
    return rc;
}
