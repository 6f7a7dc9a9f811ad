/* SPDX-License-Identifier: MIT */
/* clopt-bench: storage combinations (--dtypes): θ and g in f32, f16 or bf16, an fp32 master
 * or a bf16 remainder, stochastic rounding, the states' type. Everything a combination
 * changes is here: its name and validity, its device buffers, the arguments of its
 * clopt_enqueue_step, and the arrays of its stream kernel (which also count its bytes).
 *
 * A storage row is a `fused` step at the op level (one launch, its profiling event) with its
 * `stream` kernel, for the element-wise rules; the f32 combination is the rows of every
 * variant. The states are the instance's (f32) or clopt_alloc_state_ex's (bf16; int8: 8-bit
 * blockwise codes and one absmax per block of 256), for the rules the library takes them
 * for (storage_rule_types asks it). */
#define _POSIX_C_SOURCE 200809L

#include "driver.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The types the states may be stored in (clopt_step_args.state_dtype); the step reads and
   writes clopt_dtype_size(dtype) bytes per element of each. */
static const struct {
    const char *name;
    clopt_dtype dtype;
} state_types[] = {
    {"f32", CLOPT_DTYPE_F32},
    {"bf16", CLOPT_DTYPE_BF16},
    {"int8", CLOPT_DTYPE_U8}, /* blockwise: one code per element and an absmax per block */
};
#define STATE_TYPES (sizeof state_types / sizeof state_types[0])
_Static_assert(STATE_TYPES == STORAGE_STATE_TYPES, "storage_bufs holds a slot per state type");

/* The states that take the signed 8-bit map: those that change sign (clopt.h,
   clopt_step_args.state_dtype); the others take the unsigned one. */
static const char *const q8_signed_states[] = {"exp_avg",         "exp_avg_fast", "exp_avg_slow",
                                                "momentum_buffer", "grad_avg"};

static const clopt_dtype param_types[] = {CLOPT_DTYPE_F32, CLOPT_DTYPE_F16, CLOPT_DTYPE_BF16};
static const char *const master_names[] = {"none", "f32", "remainder"}; /* clopt_master */

/* The key of stochastic rounding (any constant: the runs are deterministic). */
#define SR_SEED 0x5eedc10f7ULL

int storage_is_f32(const storage *c)
{
    return c->p == CLOPT_DTYPE_F32 && c->g == CLOPT_DTYPE_F32 &&
           c->master == CLOPT_MASTER_NONE && !c->sr && c->state == 0;
}

int storage_is_q8(const storage *c) { return state_types[c->state].dtype == CLOPT_DTYPE_U8; }

clopt_dtype storage_state_dtype(const storage *c) { return state_types[c->state].dtype; }

int storage_q8_signed(const char *state)
{
    int sg = 0;
    for (size_t j = 0; j < sizeof q8_signed_states / sizeof q8_signed_states[0]; j++)
        sg |= !strcmp(state, q8_signed_states[j]);
    return sg;
}

static void storage_name(storage *c)
{
    snprintf(c->name, sizeof c->name, "p=%s,g=%s,master=%s%s,state=%s", clopt_dtype_name(c->p),
             clopt_dtype_name(c->g), master_names[c->master], c->sr ? ",sr=1" : "",
             state_types[c->state].name);
}

/* Why the library does not run a combination, NULL when it does. */
static const char *unsupported(const storage *c)
{
    if (c->master != CLOPT_MASTER_NONE && c->p == CLOPT_DTYPE_F32)
        return "a master copy needs a 16-bit p (p=f16 or p=bf16)";
    if (c->master == CLOPT_MASTER_REMAINDER && c->p != CLOPT_DTYPE_BF16)
        return "master=remainder needs p=bf16 (the remainder is the low half of a bf16 "
               "parameter's fp32 master); use master=f32 with p=f16";
    if (c->sr && c->p == CLOPT_DTYPE_F32)
        return "sr=1 rounds a 16-bit p (p=f16 or p=bf16)";
    if (c->sr && c->master != CLOPT_MASTER_NONE)
        return "sr=1 rounds θ without a master (master=none): with a master θ is rounded to "
               "nearest from it";
    return NULL;
}

/* The index of value v among names[0..count), -1 if absent. */
static int lookup(const char *v, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!strcmp(v, names[i]))
            return (int)i;
    return -1;
}

/* One key=value of a combination; 0 or 2. */
static int set_key(storage *c, const char *key, const char *val, unsigned *seen)
{
    static const char *const keys[] = {"p", "g", "master", "sr", "state"};
    static const char *const types[] = {"f32", "f16", "bf16"}; /* param_types' names */
    static const char *const bits[] = {"0", "1"};
    const char *states[STATE_TYPES];
    for (size_t i = 0; i < STATE_TYPES; i++)
        states[i] = state_types[i].name;
    const int k = lookup(key, keys, 5);
    if (k < 0)
        return opt_error("--dtypes: unknown key \"%s\" (keys: p, g, master, sr, state)", key);
    if (*seen & (1u << k))
        return opt_error("--dtypes: %s given twice in one combination", key);
    *seen |= 1u << k;
    int v = -1;
    switch (k) {
    case 0:
    case 1:
        if ((v = lookup(val, types, 3)) >= 0)
            *(k ? &c->g : &c->p) = param_types[v];
        break;
    case 2:
        if ((v = lookup(val, master_names, 3)) >= 0)
            c->master = (clopt_master)v;
        break;
    case 3:
        if ((v = lookup(val, bits, 2)) >= 0)
            c->sr = v;
        break;
    default:
        if ((v = lookup(val, states, STATE_TYPES)) >= 0)
            c->state = v;
        break;
    }
    static const char *const allowed[] = {"f32, f16 or bf16", "f32, f16 or bf16",
                                           "none, f32 or remainder", "0 or 1",
                                           "f32, bf16 or int8"};
    return v < 0 ? opt_error("--dtypes: %s=%s: not %s", key, val, allowed[k]) : 0;
}

/* One combination "p=..,g=..,.." (spaces around items ignored); 0 or 2. */
static int parse_one(char *item, storage *c)
{
    memset(c, 0, sizeof *c); /* f32, f32, none, 0, f32 */
    unsigned seen = 0;
    for (char *save = NULL, *kv = strtok_r(item, ",", &save); kv;
         kv = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*kv))
            kv++;
        for (size_t l = strlen(kv); l && isspace((unsigned char)kv[l - 1]); l--)
            kv[l - 1] = '\0';
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1])
            return opt_error("--dtypes: \"%s\" is not key=value", kv);
        *eq = '\0';
        int rc = set_key(c, kv, eq + 1, &seen);
        if (rc)
            return rc;
    }
    storage_name(c);
    const char *why = unsupported(c);
    return why ? opt_error("--dtypes: %s: %s", c->name, why) : 0;
}

/* Every combination the library runs, float32 first, by state type (a rule without a state
   type leaves its combinations out: storage_rule_types). */
static size_t storage_all(storage *out, size_t cap)
{
    size_t count = 0;
    for (size_t st = 0; st < STATE_TYPES; st++)
        for (size_t p = 0; p < 3; p++)
            for (size_t g = 0; g < 3; g++)
                for (int m = CLOPT_MASTER_NONE; m <= CLOPT_MASTER_REMAINDER; m++)
                    for (int sr = 0; sr <= 1; sr++) {
                        storage c = {param_types[p], param_types[g], (clopt_master)m, sr,
                                     (int)st, ""};
                        if (unsupported(&c) || count == cap)
                            continue;
                        storage_name(&c);
                        out[count++] = c;
                    }
    return count;
}

int storage_parse(const char *list, storage *out, size_t cap, size_t *count)
{
    if (!strcmp(list, "all")) {
        *count = storage_all(out, cap);
        return 0;
    }
    char buf[4096];
    if (strlen(list) >= sizeof buf)
        return opt_error("--dtypes: list too long");
    strcpy(buf, list);
    *count = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        if (!strcmp(item, "all"))
            return opt_error("--dtypes: \"all\" stands alone");
        if (*count == cap)
            return opt_error("--dtypes: more than %zu combinations", cap);
        storage *c = &out[*count];
        int rc = parse_one(item, c);
        if (rc)
            return rc;
        for (size_t i = 0; i < *count; i++)
            if (!strcmp(out[i].name, c->name))
                return opt_error("--dtypes: %s given twice", c->name);
        ++*count;
    }
    return *count ? 0 : opt_error("--dtypes: no combination in \"%s\"", list);
}

/* ---- the state types of a rule ------------------------------------------------------------- */

/* Why the library does not take state type st for the rule, NULL when it does: a rule
   without state has nothing to store; otherwise clopt_alloc_state_ex of one element says. */
static const char *state_refusal(env *e, const rule_info *ri, size_t st)
{
    if (!ri->nkernel)
        return "the rule has no state";
    clopt_tensor out[CLOPT_MAX_STATE] = {{0}}, absmax[CLOPT_MAX_STATE] = {{0}};
    size_t count = 0;
    clopt_status s = clopt_alloc_state_ex(e->ctx, ri->r->rule, &ri->hp, 1, state_types[st].dtype,
                                          out, absmax, &count);
    for (size_t k = 0; k < CLOPT_MAX_STATE && s == CLOPT_SUCCESS; k++) {
        if (out[k].buffer)
            clReleaseMemObject(out[k].buffer);
        if (absmax[k].buffer)
            clReleaseMemObject(absmax[k].buffer);
    }
    if (s == CLOPT_SUCCESS)
        return NULL;
    const char *detail = clopt_ctx_last_error(e->ctx);
    return *detail ? detail : clopt_status_str(s);
}

void storage_rule_types(env *e, rule_info *ri)
{
    const options *o = e->opt;
    ri->state_types = 1u;
    size_t asked[STATE_TYPES] = {0};
    for (size_t i = 0; i < o->ndtypes; i++)
        asked[o->dtypes[i].state]++;
    for (size_t st = 1; st < STATE_TYPES && STORAGE_RULE(ri); st++) {
        const char *why = asked[st] ? state_refusal(e, ri, st) : NULL;
        if (!why)
            ri->state_types |= 1u << st;
        else
            printf("note: %s: state=%s not measured (%zu combination%s of --dtypes): %s\n",
                   ri->r->name, state_types[st].name, asked[st], asked[st] == 1 ? "" : "s", why);
    }
}

int storage_runs(const rule_info *ri, const storage *c)
{
    return ((ri->state_types | 1u) >> c->state) & 1u;
}

/* ---- device buffers and one step ------------------------------------------------------------- */

static cl_mem theta_of(const instance *in, const storage_bufs *sb, const storage *c)
{
    return c->p == CLOPT_DTYPE_F32 ? in->slot[BA_P] : sb->p16[c->p];
}

static cl_mem grad_of(const instance *in, const storage_bufs *sb, const storage *c)
{
    return c->g == CLOPT_DTYPE_F32 ? in->slot[BA_G] : sb->g16[c->g];
}

void storage_bufs_release(storage_bufs *sb)
{
    cl_mem *all[] = {&sb->p16[1], &sb->p16[2], &sb->g16[1], &sb->g16[2],
                     &sb->master, &sb->remainder, &sb->sink};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (*all[i])
            clReleaseMemObject(*all[i]);
    for (size_t st = 0; st < STATE_TYPES; st++)
        for (size_t k = 0; k < CLOPT_MAX_STATE; k++) {
            if (sb->state[st][k])
                clReleaseMemObject(sb->state[st][k]);
            if (sb->absmax[st][k])
                clReleaseMemObject(sb->absmax[st][k]);
        }
    memset(sb, 0, sizeof *sb);
}

/* dst (dst_t) = src (src_t) over n elements, rounded to nearest even. */
static int convert(env *e, cl_mem dst, clopt_dtype dst_t, cl_mem src, clopt_dtype src_t, size_t n)
{
    clopt_status s = clopt_enqueue_convert(e->ctx, NULL, (clopt_tensor){dst, 0}, dst_t,
                                           (clopt_tensor){src, 0}, src_t, n, 0, 0, 0, 1, 0,
                                           NULL, NULL);
    return s == CLOPT_SUCCESS ? 0 : clopt_fail_msg(e, "clopt_enqueue_convert", s);
}

static cl_mem alloc(env *e, size_t bytes, int *rc)
{
    cl_int err = CL_SUCCESS;
    cl_mem m = *rc ? NULL : clCreateBuffer(e->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!*rc && !m)
        *rc = cl_fail("allocating the storage buffers", err);
    return m;
}

/* The states of type st at their initial values (clopt_alloc_state_ex). */
static int alloc_states(env *e, const rule_info *ri, size_t n, size_t st, storage_bufs *sb)
{
    clopt_tensor out[CLOPT_MAX_STATE] = {{0}}, absmax[CLOPT_MAX_STATE] = {{0}};
    size_t count = 0;
    clopt_status s = clopt_alloc_state_ex(e->ctx, ri->r->rule, &ri->hp, n, state_types[st].dtype,
                                          out, absmax, &count);
    if (s != CLOPT_SUCCESS)
        return clopt_fail_msg(e, "clopt_alloc_state_ex", s);
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++) { /* offsets 0: buffers of their own */
        sb->state[st][k] = out[k].buffer;
        sb->absmax[st][k] = absmax[k].buffer;
    }
    return 0;
}

int storage_bufs_create(env *e, const rule_info *ri, const instance *in, const storage *combos,
                        size_t count, storage_bufs *sb)
{
    memset(sb, 0, sizeof *sb);
    const size_t n = in->n;
    sb->n = n;
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++) {
        const storage *c = &combos[i];
        if (!storage_runs(ri, c))
            continue;
        if (c->state && !sb->state[c->state][0])
            rc = alloc_states(e, ri, n, (size_t)c->state, sb);
        if (!rc && c->p != CLOPT_DTYPE_F32 && !sb->p16[c->p]) {
            sb->p16[c->p] = alloc(e, n * 2, &rc);
            if (!rc)
                rc = convert(e, sb->p16[c->p], c->p, in->slot[BA_P], CLOPT_DTYPE_F32, n);
        }
        if (c->g != CLOPT_DTYPE_F32 && !sb->g16[c->g]) {
            sb->g16[c->g] = alloc(e, n * 2, &rc);
            if (!rc)
                rc = convert(e, sb->g16[c->g], c->g, in->slot[BA_G], CLOPT_DTYPE_F32, n);
        }
        if (c->master == CLOPT_MASTER_F32 && !sb->master) { /* from θ, as an engine does */
            sb->master = alloc(e, n * sizeof(float), &rc);
            sb->sink = alloc(e, n * 2, &rc);
            if (!rc)
                rc = convert(e, sb->master, CLOPT_DTYPE_F32, sb->p16[c->p], c->p, n);
        }
        if (c->master == CLOPT_MASTER_REMAINDER && !sb->remainder) { /* zeros: master = θ */
            sb->remainder = alloc(e, n * 2, &rc);
            cl_ushort zero = 0;
            cl_int err = rc ? CL_SUCCESS
                            : fill_pieces(e->queue, sb->remainder, &zero, sizeof zero, n * 2);
            if (err != CL_SUCCESS)
                rc = cl_fail("clEnqueueFillBuffer", err);
        }
    }
    cl_int err = rc ? CL_SUCCESS : clFinish(e->queue);
    if (err != CL_SUCCESS)
        rc = cl_fail("clFinish", err);
    if (rc)
        storage_bufs_release(sb);
    return rc;
}

/* The arguments of a step in combination c: the instance's states, θ and g of c's types. */
static void storage_args(const rule_info *ri, const instance *in, const storage_bufs *sb,
                         const storage *c, uint64_t step, clopt_step_args *a)
{
    step_args(in, ri, step, a);
    a->param.buffer = theta_of(in, sb, c);
    a->grad.buffer = grad_of(in, sb, c);
    a->param_dtype = c->p;
    a->grad_dtype = c->g;
    a->master_kind = c->master;
    if (c->master != CLOPT_MASTER_NONE)
        a->master.buffer = c->master == CLOPT_MASTER_F32 ? sb->master : sb->remainder;
    a->stochastic_rounding = c->sr;
    a->sr_seed = SR_SEED;
    a->state_dtype = storage_state_dtype(c);
    for (size_t k = 0; k < ri->nkernel && c->state; k++) {
        a->state[k] = (clopt_tensor){sb->state[c->state][k], 0};
        if (storage_is_q8(c))
            a->state_absmax[k] = (clopt_tensor){sb->absmax[c->state][k], 0};
    }
}

int storage_fused_step(env *e, const rule_info *ri, const instance *in, const storage_bufs *sb,
                       const storage *c, uint64_t step, bench_timing *t)
{
    clopt_step_args a;
    storage_args(ri, in, sb, c, step, &a);
    return fused_launch(e, ri, &a, in->n, step, t);
}

/* The arrays the step reads and writes, with their element sizes: θ (read unless an fp32
   master replaces it, written), the master (f32) or remainder (16-bit) read and written, g
   read, each state read and written (read only: Sophia's h without an estimate), in its type,
   and the absmaxes of 8-bit states read and written (no rule with 8-bit state has a
   read-only one). */
static int stream_arrays(const rule_info *ri, const instance *in, const storage_bufs *sb,
                         const storage *c, bench_stream_arrays *a)
{
    memset(a, 0, sizeof *a);
    const unsigned ps = (unsigned)clopt_dtype_size(c->p);
    if (c->master == CLOPT_MASTER_F32) {
        a->wo[a->nwo] = sb->sink; /* θ is written, never read */
        a->wo_size[a->nwo++] = ps;
        a->rw[a->nrw] = sb->master;
        a->rw_size[a->nrw++] = 4;
    } else {
        a->rw[a->nrw] = theta_of(in, sb, c);
        a->rw_size[a->nrw++] = ps;
        if (c->master == CLOPT_MASTER_REMAINDER) {
            a->rw[a->nrw] = sb->remainder;
            a->rw_size[a->nrw++] = 2;
        }
    }
    a->ro[a->nro] = grad_of(in, sb, c);
    a->ro_size[a->nro++] = (unsigned)clopt_dtype_size(c->g);
    for (size_t k = 0; k < ri->nkernel; k++) {
        const int ro = (ri->r->readonly_states >> k) & 1u;
        if (ro ? a->nro == BENCH_STREAM_MAX_RO : a->nrw == BENCH_STREAM_MAX_RW) {
            fprintf(stderr, "clopt-bench: %s %s: too many arrays for the stream kernel\n",
                    ri->r->name, c->name);
            return -1;
        }
        const cl_mem st = c->state ? sb->state[c->state][k] : in->slot[BA_S((int)k)];
        const unsigned size = (unsigned)clopt_dtype_size(storage_state_dtype(c));
        if (ro) {
            a->ro[a->nro] = st;
            a->ro_size[a->nro++] = size;
        } else {
            a->rw[a->nrw] = st;
            a->rw_size[a->nrw++] = size;
        }
        if (storage_is_q8(c))
            a->ab[a->nab++] = sb->absmax[c->state][k];
    }
    return 0;
}

double storage_bytes(const rule_info *ri, const storage *c)
{
    const instance in = {0};
    const storage_bufs sb = {0};
    bench_stream_arrays a;
    return stream_arrays(ri, &in, &sb, c, &a) ? -1.0 : bench_stream_bytes(&a);
}

int storage_stream_step(env *e, const rule_info *ri, const instance *in, const storage_bufs *sb,
                        const storage *c, bench_timing *t)
{
    bench_stream_arrays a;
    if (stream_arrays(ri, in, sb, c, &a))
        return -1;
    cl_event ev = NULL;
    const double w0 = bench_now_ms();
    if (bench_enqueue_stream(e->bd, &a, in->n, &ev) != CL_SUCCESS) {
        fprintf(stderr, "clopt-bench: %s\n", bench_device_error(e->bd));
        return -1;
    }
    return time_events(&ev, 1, 0, w0, 1, 1, t);
}

/* ---- the check ------------------------------------------------------------------------------- */

/* An update below this many ulps (the median over the elements) is reported: the check could
   not tell it from no update. */
#define CHECK_MIN_UPDATE_ULPS 4.0

static double f16_value(uint16_t h)
{
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double v = e == 0    ? ldexp(m, -24)
                     : e == 31 ? (m ? NAN : INFINITY)
                               : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

double storage_value_at(const void *x, size_t i, clopt_dtype t)
{
    if (t == CLOPT_DTYPE_F32)
        return ((const float *)x)[i];
    const uint16_t w = ((const uint16_t *)x)[i];
    if (t == CLOPT_DTYPE_F16)
        return f16_value(w);
    uint32_t b = (uint32_t)w << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

double storage_ulp_of(double x, clopt_dtype t)
{
    int e = 0;
    const double m = frexp(fabs(x), &e);
    const int binade = m == 0.0 ? -1000 : e - 1;
    if (t == CLOPT_DTYPE_F16)
        return ldexp(1.0, (binade > -14 ? binade : -14) - 10);
    return ldexp(1.0, (binade > -126 ? binade : -126) - (t == CLOPT_DTYPE_BF16 ? 7 : 23));
}

static int read_buf(env *e, cl_mem b, size_t bytes, void *out)
{
    cl_int err = clEnqueueReadBuffer(e->queue, b, CL_TRUE, 0, bytes, out, 0, NULL, NULL);
    return err == CL_SUCCESS ? 0 : cl_fail("clEnqueueReadBuffer", err);
}

/* What one combination's check found. */
typedef struct check_out {
    double theta_ulps;  /* worst |θ - f32 θ| in ulps of θ's type */
    double update_ulps; /* median |f32 θ - θ before| in those ulps */
    double err;         /* the worst of everything in units of its tolerance */
} check_out;

/* Host arrays of one run: θ before and after the f32 step, the combination's θ and master
   (raw), with bf16 or int8 states those of the same combination with f32 states (θ0,
   master0), the states of the f32 step and of the combination (f32; raw bf16 words or 8-bit
   codes, with the absmaxes in am). */
typedef struct check_host {
    float *before, *ref, *master, *master0;
    void *theta, *theta0;
    float *state_ref[CLOPT_MAX_STATE], *state[CLOPT_MAX_STATE], *am[CLOPT_MAX_STATE];
    double *upd;
} check_host;

/* bfloat16 bits of x rounded to nearest even (x not NaN). */
static uint16_t bf16_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* The nearest of the 256 increasing entries of map to v, the lower one on a tie. */
static unsigned q8_nearest(const float *map, float v)
{
    unsigned lo = 0, hi = 255; /* the first entry >= v, or the last */
    while (lo < hi) {
        const unsigned mid = (lo + hi) / 2;
        if (map[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && fabsf(v - map[lo - 1]) <= fabsf(v - map[lo]) ? lo - 1 : lo;
}

/* 8-bit state k against the f32 step's: each block's absmax its largest |state| bit for bit,
   each code the nearest map entry to state / absmax (up to the rounding of that quotient,
   which OpenCL does not require to be exact). 0 or INFINITY. */
static double compare_q8(const rule_info *ri, const storage *c, const check_host *h, size_t k,
                         size_t n)
{
    const char *name = clopt_rule_state_name(ri->r->rule, &ri->hp, k);
    float map[256];
    clopt_q8_map(storage_q8_signed(name), map);
    const uint8_t *code = (const uint8_t *)(const void *)h->state[k];
    for (size_t b = 0; b * BENCH_Q8_BLOCK < n; b++) {
        const size_t e0 = b * BENCH_Q8_BLOCK;
        const size_t e1 = n - e0 < BENCH_Q8_BLOCK ? n : e0 + BENCH_Q8_BLOCK;
        float mx = 0.0f;
        for (size_t i = e0; i < e1; i++)
            mx = fmaxf(mx, fabsf(h->state_ref[k][i]));
        const float am = h->am[k][b];
        if (memcmp(&am, &mx, sizeof am)) {
            fprintf(stderr, "clopt-bench: check %s %s: %s absmax of block %zu = %.9g, the "
                            "largest |f32 state| of the block %.9g\n",
                    ri->r->name, c->name, name, b, (double)am, (double)mx);
            return INFINITY;
        }
        for (size_t i = e0; i < e1; i++) {
            const float x = am > 0.0f ? h->state_ref[k][i] / am : 0.0f;
            const unsigned want = q8_nearest(map, x);
            const double slack = 1e-6 * fabs((double)x);
            if (code[i] != want &&
                fabs((double)x - map[code[i]]) > fabs((double)x - map[want]) + slack) {
                fprintf(stderr, "clopt-bench: check %s %s: %s[%zu] has code %u (%.9g), the "
                                "f32 state %.9g / absmax %.9g = %.9g has code %u (%.9g)\n",
                        ri->r->name, c->name, name, i, (unsigned)code[i], (double)map[code[i]] * am,
                        (double)h->state_ref[k][i], (double)am, (double)x, want,
                        (double)map[want] * am);
                return INFINITY;
            }
        }
    }
    return 0.0;
}

/* The states: f32 against the f32 step's with the usual tolerance; bf16 exactly the f32
   step's rounded to nearest even; int8 compare_q8. */
static double compare_states(const rule_info *ri, const storage *c, const check_host *h,
                             size_t n)
{
    double err = 0.0;
    for (size_t k = 0; k < ri->nkernel; k++) {
        const char *name = clopt_rule_state_name(ri->r->rule, &ri->hp, k);
        double q = 0.0;
        size_t at = 0, bad = 0;
        if (storage_is_q8(c)) {
            q = compare_q8(ri, c, h, k, n);
        } else if (c->state) {
            const uint16_t *w = (const uint16_t *)(const void *)h->state[k];
            for (size_t i = 0; i < n; i++)
                if (w[i] != bf16_bits(h->state_ref[k][i]) && !bad++)
                    at = i;
            q = bad ? INFINITY : 0.0;
            if (bad)
                fprintf(stderr, "clopt-bench: check %s %s: %zu element(s) of %s not the f32 "
                                "state rounded to bf16, [%zu] = 0x%04x, f32 step %.9g\n",
                        ri->r->name, c->name, bad, name, at, (unsigned)w[at],
                        (double)h->state_ref[k][at]);
        } else {
            q = check_compare(h->state[k], h->state_ref[k], n, &at, &bad);
            if (bad)
                fprintf(stderr, "clopt-bench: check %s %s: %zu element(s) of %s out of "
                                "tolerance, [%zu] = %.9g, f32 step %.9g\n",
                        ri->r->name, c->name, bad, name, at, (double)h->state[k][at],
                        (double)h->state_ref[k][at]);
        }
        err = q > err || isnan(q) ? (isnan(q) ? INFINITY : q) : err;
    }
    return err;
}

/* The master bit for bit the f32 step's θ; with bf16 or int8 states θ and the master bit for
   bit those of the combination with f32 states. 0 or INFINITY. */
static double compare_bits(const rule_info *ri, const storage *c, const check_host *h, size_t n)
{
    for (size_t i = 0; i < n && c->master != CLOPT_MASTER_NONE; i++) {
        uint32_t ref, got;
        memcpy(&ref, &h->ref[i], sizeof ref);
        if (c->master == CLOPT_MASTER_F32) {
            memcpy(&got, &h->master[i], sizeof got);
        } else { /* (θ bits << 16) + the sign-extended remainder */
            const int16_t r = (int16_t)((const uint16_t *)(const void *)h->master)[i];
            got = ((uint32_t)((const uint16_t *)h->theta)[i] << 16) + (uint32_t)(int32_t)r;
        }
        if (got != ref) {
            fprintf(stderr, "clopt-bench: check %s %s: the master is not the f32 step's: "
                            "[%zu] bits 0x%08x, f32 step 0x%08x\n",
                    ri->r->name, c->name, i, (unsigned)got, (unsigned)ref);
            return INFINITY;
        }
    }
    if (!c->state)
        return 0.0;
    const size_t ps = clopt_dtype_size(c->p), ms = c->master == CLOPT_MASTER_F32 ? 4 : 2;
    const struct {
        const char *what;
        const void *x, *x0;
        size_t size;
    } cmp[2] = {{"θ", h->theta, h->theta0, ps},
                {"the master", h->master, h->master0, c->master ? ms : 0}};
    for (size_t j = 0; j < 2; j++)
        for (size_t i = 0; i < n && cmp[j].size; i++)
            if (memcmp((const char *)cmp[j].x + i * cmp[j].size,
                       (const char *)cmp[j].x0 + i * cmp[j].size, cmp[j].size)) {
                fprintf(stderr, "clopt-bench: check %s %s: %s[%zu] is not bit for bit that of "
                                "state=f32\n",
                        ri->r->name, c->name, cmp[j].what, i);
                return INFINITY;
            }
    return 0.0;
}

/* Arrays of combination c from p0 and g (rounded to its types), for one step. */
static int combo_create(env *e, const rule_info *ri, const storage *c, size_t n, const float *p0,
                        const float *g, instance *x, storage_bufs *sb)
{
    int rc = instance_create(e, ri, n, state_mask(ri), p0, g, x);
    if (!rc)
        rc = storage_bufs_create(e, ri, x, c, 1, sb);
    return rc;
}

/* Reads θ (raw) and the master (raw) of combination c after its step. */
static int read_theta(env *e, const storage *c, const instance *x, const storage_bufs *sb,
                      size_t n, void *theta, void *master)
{
    int rc = read_buf(e, theta_of(x, sb, c), n * clopt_dtype_size(c->p), theta);
    if (!rc && c->master != CLOPT_MASTER_NONE)
        rc = read_buf(e, c->master == CLOPT_MASTER_F32 ? sb->master : sb->remainder,
                      n * (c->master == CLOPT_MASTER_F32 ? 4 : 2), master);
    return rc;
}

/* One step of c, of float32 on the same rounded values and, with bf16 or int8 states, of c
   with f32 states; reads everything into h. */
static int check_run(env *e, const rule_info *ri, const storage *c, size_t n, const float *p0,
                     const float *g, check_host *h)
{
    instance ref = {0}, x = {0}, x0 = {0};
    storage_bufs sb = {0}, sb0 = {0};
    storage c0 = *c; /* c with f32 states */
    c0.state = 0;
    int rc = instance_create(e, ri, n, state_mask(ri), p0, g, &ref);
    if (!rc)
        rc = combo_create(e, ri, c, n, p0, g, &x, &sb);
    if (!rc && c->state)
        rc = combo_create(e, ri, &c0, n, p0, g, &x0, &sb0);
    if (!rc && c->p != CLOPT_DTYPE_F32) /* the f32 step sees the values c's step sees */
        rc = convert(e, ref.slot[BA_P], CLOPT_DTYPE_F32, sb.p16[c->p], c->p, n);
    if (!rc && c->g != CLOPT_DTYPE_F32)
        rc = convert(e, ref.slot[BA_G], CLOPT_DTYPE_F32, sb.g16[c->g], c->g, n);
    if (!rc)
        rc = read_buf(e, ref.slot[BA_P], n * sizeof(float), h->before);
    if (!rc)
        rc = fused_step(e, ri, &ref, 1, NULL);
    if (!rc)
        rc = storage_fused_step(e, ri, &x, &sb, c, 1, NULL);
    if (!rc && c->state)
        rc = storage_fused_step(e, ri, &x0, &sb0, &c0, 1, NULL);
    if (!rc)
        rc = read_buf(e, ref.slot[BA_P], n * sizeof(float), h->ref);
    if (!rc)
        rc = read_theta(e, c, &x, &sb, n, h->theta, h->master);
    if (!rc && c->state)
        rc = read_theta(e, &c0, &x0, &sb0, n, h->theta0, h->master0);
    const size_t blocks = (n + BENCH_Q8_BLOCK - 1) / BENCH_Q8_BLOCK;
    for (size_t k = 0; k < ri->nkernel && !rc; k++) {
        rc = read_buf(e, ref.slot[BA_S((int)k)], n * sizeof(float), h->state_ref[k]);
        if (!rc)
            rc = read_buf(e, c->state ? sb.state[c->state][k] : x.slot[BA_S((int)k)],
                          n * clopt_dtype_size(storage_state_dtype(c)), h->state[k]);
        if (!rc && storage_is_q8(c))
            rc = read_buf(e, sb.absmax[c->state][k], blocks * sizeof(float), h->am[k]);
    }
    storage_bufs_release(&sb0);
    storage_bufs_release(&sb);
    instance_release(&x0);
    instance_release(&x);
    instance_release(&ref);
    return rc;
}

static int check_one(env *e, const rule_info *ri, const storage *c, size_t n, const float *p0,
                     const float *g, check_host *h, check_out *out)
{
    if (check_run(e, ri, c, n, p0, g, h))
        return -1;
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double r = h->ref[i], u = storage_ulp_of(r, c->p);
        const double q = fabs(storage_value_at(h->theta, i, c->p) - r) / u;
        if (!(q <= worst)) {
            worst = isnan(q) ? INFINITY : q;
            at = i;
        }
        h->upd[i] = fabs(r - (double)h->before[i]) / u;
    }
    out->theta_ulps = worst;
    out->update_ulps = median(h->upd, n);
    if (worst > 1.0)
        fprintf(stderr, "clopt-bench: check %s %s: θ[%zu] = %.9g, the f32 step %.9g: %.3g ulp "
                        "of %s apart (at most 1)\n",
                ri->r->name, c->name, at, storage_value_at(h->theta, at, c->p),
                (double)h->ref[at], worst, clopt_dtype_name(c->p));
    const double rest = fmax(compare_states(ri, c, h, n), compare_bits(ri, c, h, n));
    out->err = worst > rest ? worst : rest;
    return 0;
}

static void check_host_free(check_host *h)
{
    free(h->before);
    free(h->ref);
    free(h->master);
    free(h->master0);
    free(h->theta);
    free(h->theta0);
    free(h->upd);
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++) {
        free(h->state_ref[k]);
        free(h->state[k]);
        free(h->am[k]);
    }
}

void storage_check_inputs(float *p0, float *g, size_t n)
{
    fill_uniform(p0, n, 11, -STORAGE_CHECK_P_RANGE, STORAGE_CHECK_P_RANGE);
    fill_uniform(g, n, 100, -0.5f, 0.5f);
}

size_t storage_check_begin(const env *e, const rule_info *ri, double *err)
{
    const options *o = e->opt;
    size_t todo = 0;
    for (size_t i = 0; i < o->ndtypes; i++) {
        err[i] = NAN;
        todo += !storage_is_f32(&o->dtypes[i]) && storage_runs(ri, &o->dtypes[i]);
    }
    return todo;
}

void storage_tally_add(storage_tally *t, size_t i, double err, double theta, double update)
{
    t->ok += err <= 1.0;
    if (!(theta <= t->worst))
        t->worst = theta, t->worst_i = i;
    if (update < t->weakest)
        t->weakest = update, t->weak_i = i;
}

void storage_tally_print(env *e, const rule_info *ri, size_t n, const char *what,
                         const char *unit, const storage_tally *t)
{
    const storage *d = e->opt->dtypes;
    printf("check %s storage (n=%zu, %s): %zu ok%s; worst θ %.3g %s (%s); median update %.3g "
           "ulp or more (least: %s)\n",
           ri->r->name, n, what, t->ok, t->ok == t->todo ? "" : ", some FAIL", t->worst, unit,
           d[t->worst_i].name, t->weakest, d[t->weak_i].name);
    if (t->weakest < CHECK_MIN_UPDATE_ULPS)
        printf("note: check %s storage: the median update of %s is %.3g ulp: a step that left "
               "θ alone might pass\n",
               ri->r->name, d[t->weak_i].name, t->weakest);
    if (t->ok != t->todo)
        e->check_failed = 1;
}

int storage_check(env *e, const rule_info *ri, size_t n, double *err)
{
    const options *o = e->opt;
    const size_t todo = storage_check_begin(e, ri, err);
    if (!todo || !STORAGE_RULE(ri))
        return 0;
    check_host h = {0};
    float *p0 = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    float **f32s[] = {&h.before, &h.ref, &h.master, &h.master0};
    void **raws[] = {&h.theta, &h.theta0};
    int rc = !p0 || !g;
    for (size_t j = 0; j < sizeof f32s / sizeof f32s[0] && !rc; j++)
        rc = !(*f32s[j] = malloc(n * sizeof(float)));
    for (size_t j = 0; j < sizeof raws / sizeof raws[0] && !rc; j++)
        rc = !(*raws[j] = malloc(n * sizeof(float)));
    if (!rc)
        rc = !(h.upd = malloc(n * sizeof(double)));
    for (size_t k = 0; k < ri->nkernel && !rc; k++) {
        h.state_ref[k] = malloc(n * sizeof(float));
        h.state[k] = malloc(n * sizeof(float));
        h.am[k] = malloc((n / BENCH_Q8_BLOCK + 1) * sizeof(float));
        rc = !h.state_ref[k] || !h.state[k] || !h.am[k];
    }
    if (rc) {
        fprintf(stderr, "clopt-bench: out of host memory\n");
        rc = -1;
    } else {
        storage_check_inputs(p0, g, n);
    }
    storage_tally t = STORAGE_TALLY_INIT(todo);
    for (size_t i = 0; i < o->ndtypes && !rc; i++) {
        const storage *c = &o->dtypes[i];
        check_out co;
        if (storage_is_f32(c) || !storage_runs(ri, c) ||
            (rc = check_one(e, ri, c, n, p0, g, &h, &co)) != 0)
            continue;
        err[i] = co.err;
        storage_tally_add(&t, i, co.err, co.theta_ulps, co.update_ulps);
    }
    if (!rc)
        storage_tally_print(e, ri, n,
                            "1 step of each combination against the f32 step on the same "
                            "rounded θ and g; θ within 1 ulp of its type, the master bit for "
                            "bit, f32 states as above; with bf16 or int8 states θ and the "
                            "master bit for bit those of state=f32, bf16 states the f32 ones "
                            "rounded, int8 states their blockwise quantization",
                            "ulp", &t);
    check_host_free(&h);
    free(p0);
    free(g);
    return rc;
}
