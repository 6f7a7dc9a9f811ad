/* clopt-bench: how close the fused optimizer kernels come to the memory limit.
 *
 * For every rule and size it measures
 *   fused    clopt_enqueue_step (one launch), timed by its profiling event
 *   unfused  the same step as a chain of one-elementary-operation kernels (rules.c)
 *   c_loop   the same step as an OpenMP C loop over host arrays, timed by wall clock
 *   copy     clEnqueueCopyBuffer moving as many bytes as the fused step (bandwidth roofline)
 *   stream   a kernel reading/writing exactly the rule's arrays, no arithmetic (its limit)
 * and reports the median time over --reps timed steps after --warmup untimed ones.
 * A correctness check at a small n first makes sure fused, unfused and c_loop agree.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- options ------------------------------------------------------------------------------ */

enum { V_FUSED = 0, V_UNFUSED, V_C_LOOP, V_COPY, V_STREAM, V_COUNT };
static const char *const variant_names[V_COUNT] = {"fused", "unfused", "c_loop", "copy",
                                                    "stream"};
/* Measurement order: the references first, so every row of a group can be completed. */
static const int variant_order[V_COUNT] = {V_COPY, V_STREAM, V_FUSED, V_UNFUSED, V_C_LOOP};

#define MAX_LIST 64
#define MAX_N ((size_t)1 << 31)
#define CHECK_STEPS 8
/* Timed runs count steps from here, so that every rule is in its steady state (SGD's first
   step copies g into the buffer, RAdam rectifies from step 6 on). */
#define FIRST_TIMED_STEP 11

typedef struct options {
    const bench_rule *rules[MAX_LIST];
    size_t nrules;
    size_t sizes[MAX_LIST];
    size_t nsizes;
    unsigned tensors[MAX_LIST];
    size_t ntensors;
    unsigned variants; /* bit per V_* */
    long reps, warmup;
    size_t check_n;
    const char *device, *json, *csv, *plot;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clopt-bench [options]\n"
            "Measures clopt's fused optimizer step against an unfused kernel chain, a C loop,\n"
            "a buffer copy and a stream kernel of the same arrays.\n\n"
            "  --rules a,b,...     rules to run (default: the rules marked * below)\n"
            "  --sizes n1,n2,...   parameters per tensor; 1048576, 2^20, 1M, 64K, 1G\n"
            "                      (default 2^20,2^22,2^24)\n"
            "  --tensors t1,...    tensors per step (only 1 is supported for now)\n"
            "  --variants v,...    any of fused,unfused,c_loop,copy,stream (default all)\n"
            "  --reps N            timed repetitions, the median is reported (default 5)\n"
            "  --warmup N          untimed repetitions before them (default 2)\n"
            "  --check-n N         size of the correctness check (default 10007; 0 = skip)\n"
            "  --no-check          same as --check-n 0\n"
            "  --device D          OpenCL device: index or name substring (as CLOPT_DEVICE)\n"
            "  --json FILE         write one JSON object per measurement (an array)\n"
            "  --csv FILE          write one CSV row per measurement\n"
            "  --plot FILE.png     plot GB/s against n per rule and variant (gnuplot)\n"
            "  --list              list the rules and exit\n"
            "  --help              this text\n\n"
            "Fields: rule, variant, n, tensors, ms (median; profiling events for device\n"
            "variants, wall clock for c_loop), wall_ms, bytes_per_param, gbps\n"
            "(= bytes_per_param*n/ms), copy_fraction (gbps / copy gbps), stream_fraction\n"
            "(gbps / the rule's stream gbps), fused_speedup (ms / fused ms), check.\n"
            "Exit status: 0 ok, 1 run-time error, 2 bad options, 3 a variant disagrees\n"
            "with the fused result in the correctness check.\n\nrules:");
    for (size_t i = 0; i < bench_rule_count; i++)
        fprintf(f, " %s%s", bench_rules[i].name, bench_rules[i].in_default_run ? "*" : "");
    fprintf(f, "\n");
}

static int opt_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "clopt-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see clopt-bench --help)\n");
    va_end(ap);
    return 2;
}

/* Unsigned decimal with an optional suffix K/M/G (powers of 1024), or b^e. */
static int parse_count(const char *s, size_t *out)
{
    if (!*s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end == '^') {
        const char *e = end + 1;
        if (!isdigit((unsigned char)*e))
            return -1;
        unsigned long long ex = strtoull(e, &end, 10);
        if (errno || *end || ex > 63)
            return -1;
        unsigned long long r = 1;
        for (unsigned long long i = 0; i < ex; i++) {
            if (v && r > ULLONG_MAX / v)
                return -1;
            r *= v;
        }
        v = r;
    } else if (*end) {
        unsigned long long mul = 0;
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1ULL << 10; break;
        case 'M': mul = 1ULL << 20; break;
        case 'G': mul = 1ULL << 30; break;
        default: return -1;
        }
        if (end[1] || v > ULLONG_MAX / mul)
            return -1;
        v *= mul;
    }
    if (v > SIZE_MAX)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* Splits a comma list into a static copy; calls f on each item. */
typedef int (*item_fn)(options *o, const char *item);

static int for_each_item(options *o, const char *list, const char *what, item_fn f)
{
    char buf[4096];
    if (strlen(list) >= sizeof buf)
        return opt_error("%s list too long", what);
    strcpy(buf, list);
    char *save = buf;
    for (;;) {
        char *comma = strchr(save, ',');
        if (comma)
            *comma = '\0';
        if (!*save)
            return opt_error("empty item in the %s list \"%s\"", what, list);
        int rc = f(o, save);
        if (rc)
            return rc;
        if (!comma)
            break;
        save = comma + 1;
    }
    return 0;
}

static int add_rule(options *o, const char *name)
{
    const bench_rule *r = bench_rule_find(name);
    if (!r)
        return opt_error("unknown rule \"%s\" (--list shows them)", name);
    for (size_t i = 0; i < o->nrules; i++)
        if (o->rules[i] == r)
            return opt_error("rule \"%s\" given twice", name);
    if (o->nrules == MAX_LIST)
        return opt_error("too many rules");
    o->rules[o->nrules++] = r;
    return 0;
}

static int add_size(options *o, const char *s)
{
    size_t n = 0;
    if (parse_count(s, &n))
        return opt_error("bad size \"%s\" (a count such as 1048576, 2^20 or 1M)", s);
    if (n == 0 || n > MAX_N)
        return opt_error("size %s out of range (1 .. 2^31)", s);
    if (o->nsizes == MAX_LIST)
        return opt_error("too many sizes");
    o->sizes[o->nsizes++] = n;
    return 0;
}

static int add_tensors(options *o, const char *s)
{
    size_t t = 0;
    if (parse_count(s, &t) || t == 0)
        return opt_error("bad tensor count \"%s\"", s);
    if (t != 1)
        return opt_error("--tensors %s: only 1 tensor per step is supported for now", s);
    if (o->ntensors == MAX_LIST)
        return opt_error("too many tensor counts");
    o->tensors[o->ntensors++] = (unsigned)t;
    return 0;
}

static int add_variant(options *o, const char *s)
{
    for (int v = 0; v < V_COUNT; v++)
        if (strcmp(s, variant_names[v]) == 0) {
            o->variants |= 1u << v;
            return 0;
        }
    return opt_error("unknown variant \"%s\" (fused, unfused, c_loop, copy, stream)", s);
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* 0: run; 1: exit 0 (help/list); 2: bad options. */
static int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->warmup = 2;
    o->check_n = 10007;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = NULL;
        char name[64];
        if (strncmp(arg, "--", 2) != 0)
            return opt_error("unexpected argument \"%s\"", arg);
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof name)
            return opt_error("unknown option \"%s\"", arg);
        memcpy(name, arg, len);
        name[len] = '\0';
        if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(name, "--list")) {
            for (size_t k = 0; k < bench_rule_count; k++) {
                const bench_rule *r = &bench_rules[k];
                printf("%-14s %-10s %s%s\n", r->name, clopt_rule_name(r->rule),
                       r->chain ? "unfused chain" : "no unfused chain",
                       r->in_default_run ? ", default" : "");
            }
            return 1;
        }
        if (!strcmp(name, "--no-check")) {
            if (eq)
                return opt_error("%s takes no value", name);
            o->check_n = 0;
            continue;
        }
        static const char *const with_value[] = {"--rules", "--sizes",  "--tensors", "--variants",
                                                 "--reps",  "--warmup", "--check-n", "--device",
                                                 "--json",  "--csv",    "--plot"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
            known |= !strcmp(name, with_value[k]);
        if (!known)
            return opt_error("unknown option \"%s\"", name);
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return opt_error("%s needs a value", name);
        if (!*val)
            return opt_error("%s needs a non-empty value", name);
        int rc = 0;
        long l = 0;
        if (!strcmp(name, "--rules")) {
            o->nrules = 0;
            rc = for_each_item(o, val, "rule", add_rule);
        } else if (!strcmp(name, "--sizes")) {
            o->nsizes = 0;
            rc = for_each_item(o, val, "size", add_size);
        } else if (!strcmp(name, "--tensors")) {
            o->ntensors = 0;
            rc = for_each_item(o, val, "tensor", add_tensors);
        } else if (!strcmp(name, "--variants")) {
            o->variants = 0;
            rc = for_each_item(o, val, "variant", add_variant);
        } else if (!strcmp(name, "--reps")) {
            if (parse_long(val, 1, 100000, &l))
                return opt_error("--reps wants an integer in 1..100000, not \"%s\"", val);
            o->reps = l;
        } else if (!strcmp(name, "--warmup")) {
            if (parse_long(val, 0, 100000, &l))
                return opt_error("--warmup wants an integer in 0..100000, not \"%s\"", val);
            o->warmup = l;
        } else if (!strcmp(name, "--check-n")) {
            size_t n = 0;
            if (parse_count(val, &n) || n > MAX_N)
                return opt_error("--check-n wants a size in 0..2^31, not \"%s\"", val);
            o->check_n = n;
        } else if (!strcmp(name, "--device")) {
            o->device = val;
        } else if (!strcmp(name, "--json")) {
            o->json = val;
        } else if (!strcmp(name, "--csv")) {
            o->csv = val;
        } else if (!strcmp(name, "--plot")) {
            if (strpbrk(val, "\"'\\\n"))
                return opt_error("--plot: file name must not contain quotes or backslashes");
            o->plot = val;
        }
        if (rc)
            return rc;
    }
    if (!o->nrules)
        for (size_t k = 0; k < bench_rule_count; k++)
            if (bench_rules[k].in_default_run)
                o->rules[o->nrules++] = &bench_rules[k];
    if (!o->nsizes) {
        o->sizes[0] = (size_t)1 << 20;
        o->sizes[1] = (size_t)1 << 22;
        o->sizes[2] = (size_t)1 << 24;
        o->nsizes = 3;
    }
    if (!o->ntensors) {
        o->tensors[0] = 1;
        o->ntensors = 1;
    }
    if (!o->variants)
        o->variants = (1u << V_COUNT) - 1;
    return 0;
}

/* ---- results ------------------------------------------------------------------------------ */

typedef struct row {
    const char *rule;
    int variant;
    size_t n;
    unsigned tensors;
    double ms, ms_min, wall_ms, ms_kernels;
    unsigned launches;
    size_t bytes_per_param;
    double gbps;
    double copy_fraction, stream_fraction, fused_speedup; /* NAN = not measured */
    const char *check;
} row;

typedef struct results {
    row *rows;
    size_t n, cap;
} results;

static row *add_row(results *res)
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
    r->check = "-";
    return r;
}

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct env {
    const options *opt;
    clopt_ctx *ctx;
    bench_device *bd;
    cl_context context;
    cl_command_queue queue;
    cl_ulong max_alloc;
    float *p0, *g0; /* host data of the largest size */
    results res;
    int check_failed;
} env;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median (sorts v in place). */
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Deterministic uniform values in [lo, hi): splitmix64 of (seed, index). */
static void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t z = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i * 0xbf58476d1ce4e5b9ULL + 1;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        x[i] = lo + (hi - lo) * u;
    }
}

static int cl_fail(const char *what, cl_int err)
{
    fprintf(stderr, "clopt-bench: %s failed: OpenCL error %d\n", what, (int)err);
    return -1;
}

static int clopt_fail_msg(env *e, const char *what, clopt_status s)
{
    const char *detail = clopt_ctx_last_error(e->ctx);
    fprintf(stderr, "clopt-bench: %s failed: %s (%s)%s%s\n", what, clopt_status_name(s),
            clopt_status_str(s), *detail ? ": " : "", detail);
    if (s == CLOPT_ERR_BUILD_FAILED)
        fprintf(stderr, "%s\n", clopt_ctx_build_log(e->ctx));
    return -1;
}

static int event_ns(cl_event ev, cl_ulong *start, cl_ulong *end)
{
    cl_int err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof *start, start,
                                         NULL);
    if (err == CL_SUCCESS)
        err = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof *end, end, NULL);
    if (err != CL_SUCCESS)
        return cl_fail("clGetEventProfilingInfo", err);
    return 0;
}

/* ---- device arrays of one (rule, n) ---------------------------------------------------- */

typedef struct instance {
    size_t n, nstate;
    cl_mem slot[BA_COUNT];
} instance;

static void instance_release(instance *in)
{
    for (int i = 0; i < BA_COUNT; i++)
        if (in->slot[i])
            clReleaseMemObject(in->slot[i]);
    memset(in, 0, sizeof *in);
}

/* Parameters from p0, gradient from g0, states at their initial values, nslots slots. */
static int instance_create(env *e, const bench_rule *r, const clopt_hparams *hp, size_t n,
                           int nslots, const float *p0, const float *g0, instance *in)
{
    memset(in, 0, sizeof *in);
    in->n = n;
    in->nstate = clopt_rule_state_count(r->rule, hp);
    if (nslots < BA_S0 + (int)in->nstate)
        nslots = BA_S0 + (int)in->nstate;
    for (int i = 0; i < nslots; i++) {
        if (i >= BA_S0 && i < BA_FIRST_TEMP && (size_t)(i - BA_S0) >= in->nstate)
            continue;
        cl_int err = CL_SUCCESS;
        in->slot[i] = clCreateBuffer(e->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL,
                                     &err);
        if (!in->slot[i]) {
            instance_release(in);
            return cl_fail("clCreateBuffer", err);
        }
    }
    cl_int err = clEnqueueWriteBuffer(e->queue, in->slot[BA_P], CL_TRUE, 0, n * sizeof(float),
                                      p0, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueWriteBuffer(e->queue, in->slot[BA_G], CL_TRUE, 0, n * sizeof(float), g0,
                                   0, NULL, NULL);
    for (size_t s = 0; err == CL_SUCCESS && s < in->nstate; s++) {
        float v = clopt_rule_state_init(r->rule, hp, s);
        err = clEnqueueFillBuffer(e->queue, in->slot[BA_S(s)], &v, sizeof v, 0,
                                  n * sizeof(float), 0, NULL, NULL);
    }
    if (err == CL_SUCCESS)
        err = clFinish(e->queue);
    if (err != CL_SUCCESS) {
        instance_release(in);
        return cl_fail("initialising buffers", err);
    }
    return 0;
}

static void step_args(const instance *in, const clopt_hparams *hp, uint64_t step,
                      clopt_step_args *a)
{
    clopt_step_args_init(a);
    a->param.buffer = in->slot[BA_P];
    a->grad.buffer = in->slot[BA_G];
    for (size_t s = 0; s < in->nstate; s++)
        a->state[s].buffer = in->slot[BA_S(s)];
    a->mu_product = clopt_nadam_mu_product(hp, step - 1);
}

/* ---- one step of each variant ---------------------------------------------------------- */

typedef struct timing {
    double dev_ms, wall_ms, kernels_ms;
    unsigned launches;
} timing;

static int fused_step(env *e, const bench_rule *r, const clopt_hparams *hp, const instance *in,
                      uint64_t step, timing *t)
{
    clopt_step_args a;
    step_args(in, hp, step, &a);
    cl_event ev = NULL;
    double w0 = now_ms();
    clopt_status s = clopt_enqueue_step(e->ctx, NULL, r->rule, hp, &a, in->n, step, 0, NULL, &ev);
    if (s != CLOPT_SUCCESS)
        return clopt_fail_msg(e, "clopt_enqueue_step", s);
    cl_int err = clWaitForEvents(1, &ev);
    double w1 = now_ms();
    cl_ulong t0 = 0, t1 = 0;
    int rc = err == CL_SUCCESS ? event_ns(ev, &t0, &t1) : cl_fail("clWaitForEvents", err);
    clReleaseEvent(ev);
    if (t) {
        t->dev_ms = t->kernels_ms = (double)(t1 - t0) * 1e-6;
        t->wall_ms = w1 - w0;
        t->launches = 1;
    }
    return rc;
}

static int unfused_step(env *e, const bench_rule *r, const clopt_hparams *hp,
                        const instance *in, uint64_t step, timing *t)
{
    bench_op ops[BENCH_MAX_OPS];
    cl_event evs[BENCH_MAX_OPS];
    size_t nops = r->chain(hp, step, clopt_nadam_mu_product(hp, step - 1), ops, BENCH_MAX_OPS);
    if (!nops) {
        fprintf(stderr, "clopt-bench: %s: building the unfused chain failed\n", r->name);
        return -1;
    }
    for (size_t i = 0; i < nops; i++) {
        int y = bench_op_arity(ops[i].kind) == 2 ? ops[i].y : ops[i].x;
        if (ops[i].d < 0 || ops[i].x < 0 || y < 0 || ops[i].d >= BA_COUNT ||
            ops[i].x >= BA_COUNT || y >= BA_COUNT || !in->slot[ops[i].d] ||
            !in->slot[ops[i].x] || !in->slot[y]) {
            fprintf(stderr, "clopt-bench: %s: operation %zu of the unfused chain uses an array "
                            "that was not allocated\n",
                    r->name, i);
            return -1;
        }
    }
    size_t done = 0;
    int rc = 0;
    double w0 = now_ms();
    for (; done < nops; done++) {
        cl_int err = bench_enqueue_op(e->bd, &ops[done], in->slot, in->n, &evs[done]);
        if (err != CL_SUCCESS) {
            fprintf(stderr, "clopt-bench: %s\n", bench_device_error(e->bd));
            rc = -1;
            break;
        }
    }
    if (done) {
        cl_int err = clWaitForEvents(1, &evs[done - 1]);
        if (err != CL_SUCCESS)
            rc = cl_fail("clWaitForEvents", err);
    }
    double w1 = now_ms();
    double sum = 0.0;
    cl_ulong first = 0, last = 0;
    for (size_t i = 0; i < done; i++) {
        cl_ulong a = 0, b = 0;
        if (!rc && event_ns(evs[i], &a, &b))
            rc = -1;
        sum += (double)(b - a) * 1e-6;
        if (i == 0)
            first = a;
        if (i == done - 1)
            last = b;
        clReleaseEvent(evs[i]);
    }
    if (t) {
        t->dev_ms = (double)(last - first) * 1e-6;
        t->kernels_ms = sum;
        t->wall_ms = w1 - w0;
        t->launches = (unsigned)nops;
    }
    return rc;
}

static int stream_step(env *e, const bench_rule *r, const instance *in, timing *t)
{
    cl_mem rw[BENCH_STREAM_MAX_RW], ro[BENCH_STREAM_MAX_RO];
    size_t nrw = 0, nro = 0;
    rw[nrw++] = in->slot[BA_P];
    ro[nro++] = in->slot[BA_G];
    for (size_t s = 0; s < in->nstate; s++) {
        int readonly = (r->readonly_states & (1u << s)) != 0;
        if (readonly ? nro == BENCH_STREAM_MAX_RO : nrw == BENCH_STREAM_MAX_RW) {
            fprintf(stderr, "clopt-bench: %s: too many arrays for the stream kernel\n", r->name);
            return -1;
        }
        if (readonly)
            ro[nro++] = in->slot[BA_S(s)];
        else
            rw[nrw++] = in->slot[BA_S(s)];
    }
    cl_event ev = NULL;
    double w0 = now_ms();
    cl_int err = bench_enqueue_stream(e->bd, rw, nrw, ro, nro, in->n, &ev);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "clopt-bench: %s\n", bench_device_error(e->bd));
        return -1;
    }
    err = clWaitForEvents(1, &ev);
    double w1 = now_ms();
    cl_ulong t0 = 0, t1 = 0;
    int rc = err == CL_SUCCESS ? event_ns(ev, &t0, &t1) : cl_fail("clWaitForEvents", err);
    clReleaseEvent(ev);
    if (t) {
        t->dev_ms = t->kernels_ms = (double)(t1 - t0) * 1e-6;
        t->wall_ms = w1 - w0;
        t->launches = 1;
    }
    return rc;
}

static int copy_step(env *e, cl_mem src, cl_mem dst, size_t bytes, timing *t)
{
    cl_event ev = NULL;
    double w0 = now_ms();
    cl_int err = clEnqueueCopyBuffer(e->queue, src, dst, 0, 0, bytes, 0, NULL, &ev);
    if (err != CL_SUCCESS)
        return cl_fail("clEnqueueCopyBuffer", err);
    err = clWaitForEvents(1, &ev);
    double w1 = now_ms();
    cl_ulong t0 = 0, t1 = 0;
    int rc = err == CL_SUCCESS ? event_ns(ev, &t0, &t1) : cl_fail("clWaitForEvents", err);
    clReleaseEvent(ev);
    if (t) {
        t->dev_ms = t->kernels_ms = (double)(t1 - t0) * 1e-6;
        t->wall_ms = w1 - w0;
        t->launches = 1;
    }
    return rc;
}

/* Host arrays of the C loop. */
typedef struct host_instance {
    size_t n, nstate;
    float *p, *s[CLOPT_MAX_STATE];
    const float *g;
} host_instance;

static void host_release(host_instance *h)
{
    free(h->p);
    for (size_t i = 0; i < CLOPT_MAX_STATE; i++)
        free(h->s[i]);
    memset(h, 0, sizeof *h);
}

static int host_create(const bench_rule *r, const clopt_hparams *hp, size_t n, const float *p0,
                       const float *g0, host_instance *h)
{
    memset(h, 0, sizeof *h);
    h->n = n;
    h->nstate = clopt_rule_state_count(r->rule, hp);
    h->g = g0;
    h->p = malloc(n * sizeof(float));
    int ok = h->p != NULL;
    for (size_t s = 0; ok && s < h->nstate; s++) {
        h->s[s] = malloc(n * sizeof(float));
        ok = h->s[s] != NULL;
        if (ok) {
            float v = clopt_rule_state_init(r->rule, hp, s);
            for (size_t i = 0; i < n; i++)
                h->s[s][i] = v;
        }
    }
    if (!ok) {
        host_release(h);
        fprintf(stderr, "clopt-bench: out of host memory (%zu floats)\n", n);
        return -1;
    }
    memcpy(h->p, p0, n * sizeof(float));
    return 0;
}

static void cloop_step(const bench_rule *r, const clopt_hparams *hp, host_instance *h,
                       uint64_t step, timing *t)
{
    cloop_args a;
    memset(&a, 0, sizeof a);
    a.p = h->p;
    a.g = h->g;
    for (size_t s = 0; s < h->nstate; s++)
        a.s[s] = h->s[s];
    a.n = h->n;
    a.step = step;
    a.mu_product = clopt_nadam_mu_product(hp, step - 1);
    a.hp = hp;
    double w0 = now_ms();
    r->cloop(&a);
    double w1 = now_ms();
    if (t) {
        t->dev_ms = t->wall_ms = t->kernels_ms = w1 - w0;
        t->launches = 0;
    }
}

/* ---- correctness check ------------------------------------------------------------------ */

typedef struct check_result {
    double unfused_err, cloop_err; /* worst |x - fused| / (atol + rtol*|fused|); NAN = not run */
} check_result;

#define CHECK_RTOL 1e-4
#define CHECK_ATOL_REL 1e-4 /* atol = this * rms of the fused array */

/* Worst error of x against ref; *where receives its index, *bad the number of elements out
   of tolerance. */
static double compare(const float *x, const float *ref, size_t n, size_t *where, size_t *bad)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)ref[i] * ref[i];
    double atol = CHECK_ATOL_REL * sqrt(ss / (double)n) + 1e-30;
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

/* Compares every array (parameters, states) of a variant with the fused result. Returns the
   worst error, or +inf when more elements than allowed are out of tolerance: none, except
   for rules with a sign() where rounding may legitimately flip the sign of a value within
   an ulp of 0 (a 1e-3 fraction of the elements). Reports the worst element. */
static double compare_all(const bench_rule *r, const clopt_hparams *hp, const char *variant,
                          float *const *x, float *const *fused, size_t nstate, size_t n)
{
    const size_t allowed = (r->flags & BENCH_SIGN) ? n / 1000 + 1 : 0;
    double worst = 0.0;
    size_t bad_total = 0;
    for (size_t k = 0; k < 1 + nstate; k++) {
        size_t at = 0, bad = 0;
        double q = compare(x[k], fused[k], n, &at, &bad);
        bad_total += bad;
        if (bad)
            fprintf(allowed ? stdout : stderr,
                    "%s: check %s: %s: %zu element(s) of %s out of tolerance, worst "
                    "[%zu] = %.9g, fused %.9g (%.3g x tolerance)%s\n",
                    allowed ? "note" : "clopt-bench", r->name, variant, bad,
                    k ? clopt_rule_state_name(r->rule, hp, k - 1) : "param", at,
                    (double)x[k][at], (double)fused[k][at], q,
                    allowed ? "; a sign() rule: up to 0.1% flips at 0 are accepted" : "");
        if (!(q <= worst))
            worst = q;
    }
    if (bad_total > allowed)
        return worst > 1.0 ? worst : INFINITY;
    return worst > 1.0 ? 1.0 : worst;
}

/* Reads parameters and states of a device instance into out[0..1+nstate). */
static int read_instance(env *e, const instance *in, float **out)
{
    for (size_t k = 0; k < 1 + in->nstate; k++) {
        cl_mem b = in->slot[k == 0 ? BA_P : BA_S(k - 1)];
        cl_int err = clEnqueueReadBuffer(e->queue, b, CL_TRUE, 0, in->n * sizeof(float), out[k],
                                         0, NULL, NULL);
        if (err != CL_SUCCESS)
            return cl_fail("clEnqueueReadBuffer", err);
    }
    return 0;
}

static int run_check(env *e, const bench_rule *r, const clopt_hparams *hp, check_result *cr)
{
    const size_t n = e->opt->check_n;
    const size_t ns = clopt_rule_state_count(r->rule, hp);
    cr->unfused_err = cr->cloop_err = NAN;
    int rc = -1;
    float *p0 = malloc(n * sizeof(float));
    float *g = malloc((size_t)CHECK_STEPS * n * sizeof(float));
    float *fused[1 + CLOPT_MAX_STATE] = {0}, *unf[1 + CLOPT_MAX_STATE] = {0};
    int ok = p0 && g;
    for (size_t k = 0; ok && k < 1 + ns; k++) {
        fused[k] = malloc(n * sizeof(float));
        unf[k] = malloc(n * sizeof(float));
        ok = fused[k] && unf[k];
    }
    instance in = {0};
    host_instance h = {0};
    if (!ok) {
        fprintf(stderr, "clopt-bench: out of host memory\n");
        goto done;
    }
    fill_uniform(p0, n, 11, -1.0f, 1.0f);
    for (size_t t = 0; t < CHECK_STEPS; t++)
        fill_uniform(g + t * n, n, 100 + t, -0.5f, 0.5f);

    /* fused */
    if (instance_create(e, r, hp, n, 0, p0, g, &in))
        goto done;
    for (uint64_t t = 1; t <= CHECK_STEPS; t++) {
        cl_int err = clEnqueueWriteBuffer(e->queue, in.slot[BA_G], CL_TRUE, 0, n * sizeof(float),
                                          g + (t - 1) * n, 0, NULL, NULL);
        if (err != CL_SUCCESS) {
            cl_fail("clEnqueueWriteBuffer", err);
            goto done;
        }
        if (fused_step(e, r, hp, &in, t, NULL))
            goto done;
    }
    if (read_instance(e, &in, fused))
        goto done;
    instance_release(&in);

    /* unfused */
    if (r->chain) {
        bench_op ops[BENCH_MAX_OPS];
        int slots = 0;
        for (uint64_t t = 1; t <= CHECK_STEPS; t++) {
            size_t nops = r->chain(hp, t, clopt_nadam_mu_product(hp, t - 1), ops, BENCH_MAX_OPS);
            int sl = bench_chain_slots(ops, nops);
            slots = sl > slots ? sl : slots;
        }
        if (instance_create(e, r, hp, n, slots, p0, g, &in))
            goto done;
        for (uint64_t t = 1; t <= CHECK_STEPS; t++) {
            cl_int err = clEnqueueWriteBuffer(e->queue, in.slot[BA_G], CL_TRUE, 0,
                                              n * sizeof(float), g + (t - 1) * n, 0, NULL, NULL);
            if (err != CL_SUCCESS) {
                cl_fail("clEnqueueWriteBuffer", err);
                goto done;
            }
            if (unfused_step(e, r, hp, &in, t, NULL))
                goto done;
        }
        if (read_instance(e, &in, unf))
            goto done;
        instance_release(&in);
        cr->unfused_err = compare_all(r, hp, "unfused", unf, fused, ns, n);
    }

    /* C loop */
    if (host_create(r, hp, n, p0, g, &h))
        goto done;
    for (uint64_t t = 1; t <= CHECK_STEPS; t++) {
        h.g = g + (t - 1) * n;
        cloop_step(r, hp, &h, t, NULL);
    }
    {
        float *hx[1 + CLOPT_MAX_STATE] = {h.p};
        for (size_t k = 0; k < ns; k++)
            hx[1 + k] = h.s[k];
        cr->cloop_err = compare_all(r, hp, "c_loop", hx, fused, ns, n);
    }
    rc = 0;
done:
    instance_release(&in);
    host_release(&h);
    for (size_t k = 0; k < 1 + CLOPT_MAX_STATE; k++) {
        free(fused[k]);
        free(unf[k]);
    }
    free(p0);
    free(g);
    return rc;
}

/* ---- measuring one (rule, n) ---------------------------------------------------------- */

typedef struct sampler {
    double *dev, *wall, *kern;
    size_t n;
    unsigned launches;
} sampler;

static void record(sampler *s, const timing *t)
{
    s->dev[s->n] = t->dev_ms;
    s->wall[s->n] = t->wall_ms;
    s->kern[s->n] = t->kernels_ms;
    s->launches = t->launches;
    s->n++;
}

static int finish_row(env *e, const bench_rule *r, int variant, size_t n, sampler *s,
                      size_t bytes_per_param, const char *check)
{
    row *w = add_row(&e->res);
    if (!w) {
        fprintf(stderr, "clopt-bench: out of host memory\n");
        return -1;
    }
    w->rule = r->name;
    w->variant = variant;
    w->n = n;
    w->tensors = 1;
    w->launches = s->launches;
    w->ms_kernels = median(s->kern, s->n);
    w->wall_ms = median(s->wall, s->n);
    w->ms = median(s->dev, s->n);
    w->ms_min = s->dev[0]; /* sorted by median() */
    w->bytes_per_param = bytes_per_param;
    w->gbps = w->ms > 0.0 ? (double)bytes_per_param * (double)n / (w->ms * 1e6) : NAN;
    w->check = check;
    return 0;
}

static const char *check_word(double err)
{
    if (isnan(err))
        return "-";
    return err <= 1.0 ? "ok" : "FAIL";
}

/* Measures every selected variant of one (rule, n). The device variants are interleaved:
   each repetition runs one step of every one in turn, so a slow drift of the machine (other
   tenants, frequency) hits all of them alike and their ratios stay meaningful. fused,
   unfused and stream work on the same device arrays (the stream kernel leaves them
   unchanged); copy has its own. The C loop runs afterwards on its own host arrays. */
static int measure(env *e, const bench_rule *r, const clopt_hparams *hp, size_t n,
                   const check_result *cr)
{
    const options *o = e->opt;
    const size_t total = (size_t)(o->warmup + o->reps);
    const size_t fused_bytes = clopt_rule_bytes_per_param(r->rule, hp);
    size_t nrw = 0, nro = 0;
    bench_rule_arrays(r, hp, &nrw, &nro);
    const size_t stream_bytes = (2 * nrw + nro) * sizeof(float);
    const size_t copy_bytes = (fused_bytes * n / 2 + 3) / 4 * 4;

    unsigned run = o->variants;
    if (!r->chain)
        run &= ~(1u << V_UNFUSED);
    if ((run & (1u << V_COPY)) && copy_bytes > e->max_alloc) {
        fprintf(stderr,
                "clopt-bench: %s n=%zu: a copy of %zu bytes exceeds the device's maximum "
                "allocation; copy skipped\n",
                r->name, n, copy_bytes);
        run &= ~(1u << V_COPY);
    }

    bench_op ops[BENCH_MAX_OPS];
    size_t chain_bytes = 0;
    int chain_slots = 0;
    if (run & (1u << V_UNFUSED)) {
        for (size_t it = 0; it < total; it++) {
            uint64_t t = FIRST_TIMED_STEP + it;
            size_t nops = r->chain(hp, t, clopt_nadam_mu_product(hp, t - 1), ops, BENCH_MAX_OPS);
            if (!nops) {
                fprintf(stderr, "clopt-bench: %s: building the unfused chain failed\n", r->name);
                return -1;
            }
            int sl = bench_chain_slots(ops, nops);
            chain_slots = sl > chain_slots ? sl : chain_slots;
            size_t b = bench_chain_bytes(ops, nops);
            if (it && b != chain_bytes)
                fprintf(stderr, "clopt-bench: %s: the unfused chain changes between steps\n",
                        r->name);
            chain_bytes = b;
        }
    }

    int rc = 0;
    instance in = {0};
    host_instance h = {0};
    cl_mem cbuf[2] = {NULL, NULL};
    sampler smp[V_COUNT];
    memset(smp, 0, sizeof smp);
    for (int v = 0; v < V_COUNT; v++) {
        smp[v].dev = malloc(o->reps * sizeof(double));
        smp[v].wall = malloc(o->reps * sizeof(double));
        smp[v].kern = malloc(o->reps * sizeof(double));
        if (!smp[v].dev || !smp[v].wall || !smp[v].kern) {
            fprintf(stderr, "clopt-bench: out of host memory\n");
            rc = -1;
        }
    }
    if (!rc && (run & ((1u << V_FUSED) | (1u << V_UNFUSED) | (1u << V_STREAM))))
        rc = instance_create(e, r, hp, n, chain_slots, e->p0, e->g0, &in);
    if (!rc && (run & (1u << V_COPY))) {
        cl_int err = CL_SUCCESS;
        for (int k = 0; k < 2 && err == CL_SUCCESS; k++)
            cbuf[k] = clCreateBuffer(e->context, CL_MEM_READ_WRITE, copy_bytes, NULL, &err);
        float zero = 0.0f;
        for (int k = 0; k < 2 && err == CL_SUCCESS; k++)
            err = clEnqueueFillBuffer(e->queue, cbuf[k], &zero, sizeof zero, 0, copy_bytes, 0,
                                      NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(e->queue);
        if (err != CL_SUCCESS)
            rc = cl_fail("allocating the copy buffers", err);
    }
    if (!rc && (run & (1u << V_C_LOOP)))
        rc = host_create(r, hp, n, e->p0, e->g0, &h);

    /* device variants interleaved; they share the OpenCL device's worker threads */
    for (size_t it = 0; it < total && !rc; it++) {
        const uint64_t step = FIRST_TIMED_STEP + it;
        for (int vi = 0; vi < V_COUNT && !rc; vi++) {
            const int v = variant_order[vi];
            if (!(run & (1u << v)) || v == V_C_LOOP)
                continue;
            timing t;
            switch (v) {
            case V_COPY: rc = copy_step(e, cbuf[0], cbuf[1], copy_bytes, &t); break;
            case V_STREAM: rc = stream_step(e, r, &in, &t); break;
            case V_FUSED: rc = fused_step(e, r, hp, &in, step, &t); break;
            case V_UNFUSED: rc = unfused_step(e, r, hp, &in, step, &t); break;
            default: break;
            }
            if (!rc && it >= (size_t)o->warmup)
                record(&smp[v], &t);
        }
    }
    /* the C loop on its own: its OpenMP threads and the device's worker threads would
       otherwise take the CPUs from each other right after each switch */
    for (size_t it = 0; it < total && !rc && (run & (1u << V_C_LOOP)); it++) {
        timing t;
        cloop_step(r, hp, &h, FIRST_TIMED_STEP + it, &t);
        if (it >= (size_t)o->warmup)
            record(&smp[V_C_LOOP], &t);
    }
    instance_release(&in);
    host_release(&h);
    for (int k = 0; k < 2; k++)
        if (cbuf[k])
            clReleaseMemObject(cbuf[k]);

    const size_t first_row = e->res.n;
    for (int vi = 0; vi < V_COUNT && !rc; vi++) {
        const int v = variant_order[vi];
        if (!(run & (1u << v)))
            continue;
        size_t b = v == V_UNFUSED ? chain_bytes : v == V_STREAM ? stream_bytes : fused_bytes;
        const char *ck = v == V_FUSED || v == V_C_LOOP ? check_word(cr->cloop_err)
                         : v == V_UNFUSED              ? check_word(cr->unfused_err)
                                                       : "-";
        rc = finish_row(e, r, v, n, &smp[v], b, ck);
    }
    for (int v = 0; v < V_COUNT; v++) {
        free(smp[v].dev);
        free(smp[v].wall);
        free(smp[v].kern);
    }
    if (rc)
        return rc;

    /* ratios within the group */
    double copy_gbps = NAN, stream_gbps = NAN, fused_ms = NAN;
    for (size_t i = first_row; i < e->res.n; i++) {
        const row *w = &e->res.rows[i];
        if (w->variant == V_COPY)
            copy_gbps = w->gbps;
        else if (w->variant == V_STREAM)
            stream_gbps = w->gbps;
        else if (w->variant == V_FUSED)
            fused_ms = w->ms;
    }
    for (size_t i = first_row; i < e->res.n; i++) {
        row *w = &e->res.rows[i];
        w->copy_fraction = w->gbps / copy_gbps;
        w->stream_fraction = w->gbps / stream_gbps;
        w->fused_speedup = w->ms / fused_ms;
    }
    if (stream_bytes != fused_bytes && (run & (1u << V_STREAM)) && n == o->sizes[0])
        printf("note: %s: the fused kernel is counted as %zu bytes/param, the rule's arrays "
               "as %zu\n",
               r->name, fused_bytes, stream_bytes);
    return 0;
}

/* ---- output ----------------------------------------------------------------------------- */

static void format_n(size_t n, char *buf, size_t len)
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

static void format_num(double x, const char *fmt, char *buf, size_t len)
{
    if (isnan(x) || isinf(x))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, fmt, x);
}

static void print_table(const results *res, size_t from, int header)
{
    if (header)
        printf("%-13s %-8s %6s %10s %10s %6s %5s %8s %6s %6s %7s %5s\n", "rule", "variant", "n",
           "ms", "wall_ms", "launch", "B/p", "GB/s", "copy", "stream", "fused_x", "check");
    for (size_t i = from; i < res->n; i++) {
        const row *w = &res->rows[i];
        char nb[32], ms[32], wall[32], gb[32], cf[32], sf[32], fx[32];
        format_n(w->n, nb, sizeof nb);
        format_num(w->ms, "%.3f", ms, sizeof ms);
        format_num(w->wall_ms, "%.3f", wall, sizeof wall);
        format_num(w->gbps, "%.2f", gb, sizeof gb);
        format_num(w->copy_fraction, "%.2f", cf, sizeof cf);
        format_num(w->stream_fraction, "%.2f", sf, sizeof sf);
        format_num(w->fused_speedup, "%.2f", fx, sizeof fx);
        printf("%-13s %-8s %6s %10s %10s %6u %5zu %8s %6s %6s %7s %5s\n", w->rule,
               variant_names[w->variant], nb, ms, wall, w->launches, w->bytes_per_param, gb, cf,
               sf, fx, w->check);
    }
    fflush(stdout);
}

static void json_num(FILE *f, double x)
{
    if (isnan(x) || isinf(x))
        fprintf(f, "null");
    else
        fprintf(f, "%.6g", x);
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

static int write_json(const env *e, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "clopt-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    const char *dev = clopt_ctx_device_name(e->ctx);
    fprintf(f, "[");
    for (size_t i = 0; i < e->res.n; i++) {
        const row *w = &e->res.rows[i];
        fprintf(f, "%s\n  {\"rule\": ", i ? "," : "");
        json_str(f, w->rule);
        fprintf(f, ", \"variant\": \"%s\", \"n\": %zu, \"tensors\": %u, \"ms\": ",
                variant_names[w->variant], w->n, w->tensors);
        json_num(f, w->ms);
        fprintf(f, ", \"bytes_per_param\": %zu, \"gbps\": ", w->bytes_per_param);
        json_num(f, w->gbps);
        fprintf(f, ", \"copy_fraction\": ");
        json_num(f, w->copy_fraction);
        fprintf(f, ", \"stream_fraction\": ");
        json_num(f, w->stream_fraction);
        fprintf(f, ", \"wall_ms\": ");
        json_num(f, w->wall_ms);
        fprintf(f, ", \"ms_min\": ");
        json_num(f, w->ms_min);
        fprintf(f, ", \"ms_kernels\": ");
        json_num(f, w->ms_kernels);
        fprintf(f, ", \"launches\": %u, \"fused_speedup\": ", w->launches);
        json_num(f, w->fused_speedup);
        fprintf(f, ", \"check\": ");
        json_str(f, w->check);
        fprintf(f, ", \"reps\": %ld, \"device\": ", e->opt->reps);
        json_str(f, dev);
        fprintf(f, ", \"vector_width\": %u, \"work_group_size\": %zu, \"omp_threads\": %d}",
                bench_device_vector_width(e->bd), bench_device_work_group_size(e->bd),
                cloop_threads());
    }
    fprintf(f, "\n]\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "clopt-bench: writing %s failed\n", path);
        return -1;
    }
    return 0;
}

static void csv_num(FILE *f, double x)
{
    if (!isnan(x) && !isinf(x))
        fprintf(f, "%.6g", x);
}

static int write_csv(const env *e, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "clopt-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "rule,variant,n,tensors,ms,bytes_per_param,gbps,copy_fraction,stream_fraction,"
               "wall_ms,ms_min,ms_kernels,launches,fused_speedup,check,reps,vector_width,"
               "work_group_size,omp_threads\n");
    for (size_t i = 0; i < e->res.n; i++) {
        const row *w = &e->res.rows[i];
        fprintf(f, "%s,%s,%zu,%u,", w->rule, variant_names[w->variant], w->n, w->tensors);
        csv_num(f, w->ms);
        fprintf(f, ",%zu,", w->bytes_per_param);
        csv_num(f, w->gbps);
        fputc(',', f);
        csv_num(f, w->copy_fraction);
        fputc(',', f);
        csv_num(f, w->stream_fraction);
        fputc(',', f);
        csv_num(f, w->wall_ms);
        fputc(',', f);
        csv_num(f, w->ms_min);
        fputc(',', f);
        csv_num(f, w->ms_kernels);
        fprintf(f, ",%u,", w->launches);
        csv_num(f, w->fused_speedup);
        fprintf(f, ",%s,%ld,%u,%zu,%d\n", w->check, e->opt->reps,
                bench_device_vector_width(e->bd), bench_device_work_group_size(e->bd),
                cloop_threads());
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "clopt-bench: writing %s failed\n", path);
        return -1;
    }
    return 0;
}

/* gnuplot through a pipe: one panel per rule, GB/s against n, one line per variant. */
static int write_plot(const env *e, const char *path)
{
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("note: gnuplot not found; --plot %s skipped\n", path);
        return 0;
    }
    const options *o = e->opt;
    size_t nmin = SIZE_MAX, nmax = 0;
    for (size_t i = 0; i < o->nsizes; i++) {
        nmin = o->sizes[i] < nmin ? o->sizes[i] : nmin;
        nmax = o->sizes[i] > nmax ? o->sizes[i] : nmax;
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
    fprintf(gp, "set terminal pngcairo noenhanced size %zu,%zu font ',10'\n", 560 * cols,
            430 * rows + 40);
    fprintf(gp, "set output '%s'\n", path);
    fprintf(gp, "set multiplot layout %zu,%zu title 'clopt-bench on %s (median of %ld)'\n", rows,
            cols, dev, o->reps);
    fprintf(gp, "set logscale x 2\nset format x '2^%%L'\nset grid\n");
    fprintf(gp, "set key outside bottom center horizontal maxrows 1 samplen 3\nset bmargin 5\n");
    fprintf(gp, "set xlabel 'n (parameters)'\nset ylabel 'GB/s'\nset yrange [0:*]\n");
    fprintf(gp, "set xrange [%g:%g]\n", (double)nmin / 1.5, (double)nmax * 1.5);
    for (size_t ri = 0; ri < o->nrules; ri++) {
        const char *rule = o->rules[ri]->name;
        fprintf(gp, "set title '%s'\n", rule);
        int present[V_COUNT] = {0};
        for (size_t i = 0; i < e->res.n; i++)
            if (!strcmp(e->res.rows[i].rule, rule))
                present[e->res.rows[i].variant] = 1;
        /* the measured variants solid, the two references dashed */
        static const char *const style[V_COUNT] = {
            [V_FUSED] = "lw 2 lc rgb '#7b2cbf' pt 7", [V_UNFUSED] = "lw 2 lc rgb '#2a9d8f' pt 5",
            [V_C_LOOP] = "lw 2 lc rgb '#1d6fd6' pt 9", [V_COPY] = "lw 2 dt 2 lc rgb '#e07a00' pt 4",
            [V_STREAM] = "lw 2 dt 2 lc rgb '#222222' pt 6"};
        int any = 0;
        for (int v = 0; v < V_COUNT; v++)
            if (present[v]) {
                fprintf(gp, "%s'-' using 1:2 with linespoints %s title '%s'", any ? ", " : "plot ",
                        style[v], variant_names[v]);
                any = 1;
            }
        if (!any) {
            fprintf(gp, "plot NaN notitle\n");
            continue;
        }
        fprintf(gp, "\n");
        for (int v = 0; v < V_COUNT; v++) {
            if (!present[v])
                continue;
            for (size_t i = 0; i < e->res.n; i++) {
                const row *w = &e->res.rows[i];
                if (!strcmp(w->rule, rule) && w->variant == v && !isnan(w->gbps))
                    fprintf(gp, "%zu %.6g\n", w->n, w->gbps);
            }
            fprintf(gp, "e\n");
        }
    }
    fprintf(gp, "unset multiplot\n");
    int st = pclose(gp);
    if (st != 0) {
        printf("note: gnuplot failed (status %d); %s may be incomplete\n", st, path);
        return 0;
    }
    printf("plot written to %s\n", path);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

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
    if (err != CL_SUCCESS) {
        cl_fail("clGetDeviceInfo", err);
        goto out;
    }
    e.bd = bench_device_create(e.ctx);
    if (!e.bd) {
        fprintf(stderr, "clopt-bench: cannot set up the benchmark kernels\n");
        goto out;
    }

    size_t nmax = 0;
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

    printf("clopt-bench: device %s, vector width %u, work-group %zu%s, C loop %d thread(s), "
           "median of %ld after %ld warm-up\n",
           clopt_ctx_device_name(e.ctx), bench_device_vector_width(e.bd),
           bench_device_work_group_size(e.bd),
           bench_device_work_group_size(e.bd) ? "" : " (driver)", cloop_threads(), o.reps,
           o.warmup);
    if (busy)
        printf("note: %d other runnable process(es) at start: they compete for the CPUs and "
               "the timings will be noisy\n",
               busy);
    printf("ms: device time from profiling events (first start to last end for the unfused "
           "chain), wall clock for c_loop; copy/stream: fraction of their GB/s; fused_x: ms / "
           "fused ms\n\n");

    int header = 0;
    for (size_t ri = 0; ri < o.nrules; ri++) {
        const bench_rule *r = o.rules[ri];
        clopt_hparams hp;
        s = bench_rule_hparams(r, &hp);
        if (s != CLOPT_SUCCESS) {
            fprintf(stderr, "clopt-bench: %s: hyperparameters: %s\n", r->name,
                    clopt_status_str(s));
            goto out;
        }
        check_result cr = {NAN, NAN};
        if (o.check_n) {
            if (run_check(&e, r, &hp, &cr))
                goto out;
            int bad = (!isnan(cr.unfused_err) && cr.unfused_err > 1.0) || cr.cloop_err > 1.0;
            printf("check %s (n=%zu, %d steps, |x-fused| <= %g*rms + %g*|fused|): unfused %s "
                   "(%.3g), c_loop %s (%.3g)\n",
                   r->name, o.check_n, CHECK_STEPS, CHECK_ATOL_REL, CHECK_RTOL,
                   check_word(cr.unfused_err), cr.unfused_err, check_word(cr.cloop_err),
                   cr.cloop_err);
            if (bad) {
                fprintf(stderr,
                        "clopt-bench: WARNING: %s: a variant disagrees with the fused kernel; "
                        "its timings do not compare like with like\n",
                        r->name);
                e.check_failed = 1;
            }
        }
        for (size_t ni = 0; ni < o.nsizes; ni++) {
            size_t from = e.res.n;
            if (measure(&e, r, &hp, o.sizes[ni], &cr))
                goto out;
            printf("\n");
            print_table(&e.res, from, !header);
            header = 1;
        }
    }
    rc = 0;
    if (o.json && write_json(&e, o.json))
        rc = 1;
    if (o.csv && write_csv(&e, o.csv))
        rc = 1;
    if (o.plot && write_plot(&e, o.plot))
        rc = 1;
    if (!rc && e.check_failed) {
        fprintf(stderr, "clopt-bench: the correctness check failed (see above)\n");
        rc = 3;
    }
out:
    free(e.res.rows);
    free(e.p0);
    free(e.g0);
    bench_device_destroy(e.bd);
    clopt_ctx_destroy(e.ctx);
    return rc;
}
