/* SPDX-License-Identifier: MIT */
/* clopt-bench: the command line (options, usage, parsing). */
#include "driver.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const variant_names[V_COUNT] = {
    "fused", "unfused", "c_loop", "copy", "stream", "arena", "separate", "arena_amp", "ranges"};

#define MAX_N ((size_t)1 << 31)
#define MAX_TENSORS 100000

static const unsigned sweep_vw_default[] = {1, 4, 8, 16};
static const size_t sweep_wg_default[] = {0, 64, 128, 256, 1024};
static const unsigned sweep_ipw_default[] = {1, 16};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clopt-bench [options]\n"
            "Measures clopt's fused optimizer step against an unfused kernel chain, a C loop,\n"
            "a buffer copy and a stream kernel of the same arrays, and the optimizer level\n"
            "with T tensors in one arena group or in T separate buffers.\n\n"
            "  --rules a,b,...     rules to run (default: the rules marked * below)\n"
            "  --sizes n1,n2,...   parameters per step (all tensors together); 1048576, 2^20,\n"
            "                      1M, 64K, 1G (default 2^20,2^22,2^24; sweep: 2^24)\n"
            "  --tensors t1,...    split each size into T equal tensors (default 1); T > 1\n"
            "                      measures arena and separate against arena with 1 tensor\n"
            "  --variants v,...    any of fused,unfused,c_loop,copy,stream,arena,separate,\n"
            "                      arena_amp,ranges (default all; arena_amp and ranges are\n"
            "                      timed with --tensors T > 1)\n"
            "  --dtypes LIST       storage combinations, separated by ';', each of keys\n"
            "                      p, g (f32, f16, bf16), master (none, f32, remainder),\n"
            "                      sr (0, 1: stochastic rounding), state (f32, bf16,\n"
            "                      int8: 8-bit blockwise), e.g.\n"
            "                      'p=bf16,g=bf16,master=remainder;p=f32' (default f32\n"
            "                      only); 'all': every combination the library supports\n"
            "                      (a state type a rule does not take is left out).\n"
            "                      Other than f32: fused and stream of the element-wise\n"
            "                      rules at the op level, with 1 tensor\n"
            "  --reps N            timed repetitions, the median is reported (default 5)\n"
            "  --warmup N          untimed repetitions before them (default 2)\n"
            "  --check-n N         size of the correctness check (default 10007; 0 = skip)\n"
            "  --no-check          same as --check-n 0\n"
            "  --no-flush          do not evict the caches before each timed step (below)\n"
            "  --vw N              kernel vector width 1, 2, 4, 8 or 16 (clopt_ctx_set_tuning,\n"
            "                      before anything is compiled; default: the library's table)\n"
            "  --wg N              work-group size, 0 = the driver's choice (same)\n"
            "  --ipw N             vectors per work-item, 1..1024 (same)\n"
            "  --sweep-tuning      time fused (and stream) over every vector width x\n"
            "                      work-group size x vectors per work-item and print GB/s\n"
            "                      tables (default adamw, 2^24)\n"
            "  --sweep-vw a,b,...  the sweep's vector widths (default 1,4,8,16)\n"
            "  --sweep-wg a,b,...  the sweep's work-group sizes (default 0,64,128,256,1024)\n"
            "  --sweep-ipw a,b,... the sweep's vectors per work-item (default 1,16)\n"
            "  --device D          OpenCL device: index or name substring (as CLOPT_DEVICE)\n"
            "  --json FILE         write one JSON object per measurement (an array)\n"
            "  --csv FILE          write one CSV row per measurement\n"
            "  --plot FILE.png     chart the fraction of the stream kernel per rule and\n"
            "                      variant, one panel per size (gnuplot)\n"
            "  --list              list the rules and exit\n"
            "  --version           print the versions of clopt-bench and the library, exit\n"
            "  --help              this text\n\n"
            "Fields: rule, variant, dtype (the storage combination), n, tensors, ms (median;\n"
            "profiling events for device variants, marker to marker for the optimizer\n"
            "level, wall clock for c_loop), wall_ms, bytes_per_param, gbps\n"
            "(= bytes_per_param*n/ms), copy_fraction (gbps / copy gbps), stream_fraction\n"
            "(gbps / the gbps of the stream kernel of the rule and storage), fused_speedup\n"
            "(ms / f32 fused ms), tensor_ratio (ms / arena ms with 1 tensor), check.\n"
            "Exit status: 0 ok, 1 run-time error, 2 bad options, 3 a variant disagrees\n"
            "with the fused result in the correctness check.\n\nrules:");
    for (size_t i = 0; i < bench_rule_count; i++)
        fprintf(f, " %s%s", bench_rules[i].name, bench_rules[i].in_default_run ? "*" : "");
    fprintf(f, "\n");
}

int opt_error(const char *fmt, ...)
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

/* Appends v to a list of at most MAX_LIST items: 0, or 2 after "too many <what>". */
#define APPEND(list, count, v, what)                                                          \
    ((count) < MAX_LIST ? ((list)[(count)++] = (v), 0) : opt_error("too many %s", what))

static int add_rule(options *o, const char *name)
{
    const bench_rule *r = bench_rule_find(name);
    if (!r)
        return opt_error("unknown rule \"%s\" (--list shows them)", name);
    for (size_t i = 0; i < o->nrules; i++)
        if (o->rules[i] == r)
            return opt_error("rule \"%s\" given twice", name);
    return APPEND(o->rules, o->nrules, r, "rules");
}

static int add_size(options *o, const char *s)
{
    size_t n = 0;
    if (parse_count(s, &n))
        return opt_error("bad size \"%s\" (a count such as 1048576, 2^20 or 1M)", s);
    if (n == 0 || n > MAX_N)
        return opt_error("size %s out of range (1 .. 2^31)", s);
    return APPEND(o->sizes, o->nsizes, n, "sizes");
}

static int add_tensors(options *o, const char *s)
{
    size_t t = 0;
    if (parse_count(s, &t) || t == 0 || t > MAX_TENSORS)
        return opt_error("bad tensor count \"%s\" (1 .. %d)", s, MAX_TENSORS);
    for (size_t i = 0; i < o->ntensors; i++)
        if (o->tensors[i] == t)
            return opt_error("tensor count %zu given twice", t);
    return APPEND(o->tensors, o->ntensors, t, "tensor counts");
}

static int add_variant(options *o, const char *s)
{
    for (int v = 0; v < V_COUNT; v++)
        if (strcmp(s, variant_names[v]) == 0) {
            o->variants |= 1u << v;
            return 0;
        }
    char known[256] = "";
    for (int v = 0; v < V_COUNT; v++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", v ? ", " : "",
                 variant_names[v]);
    return opt_error("unknown variant \"%s\" (%s)", s, known);
}

/* A value of a sweep list in lo..hi (a power of 2 when pow2); -1 after printing why. */
static int sweep_value(const char *s, size_t lo, size_t hi, int pow2, const char *bad,
                       size_t *v)
{
    if (parse_count(s, v) || *v < lo || *v > hi || (pow2 && (*v & (*v - 1))))
        return opt_error(bad, s);
    return 0;
}

static int add_sweep_vw(options *o, const char *s)
{
    size_t v = 0;
    return sweep_value(s, 1, 16, 1, "--sweep-vw: \"%s\" is not 1, 2, 4, 8 or 16", &v)
               ? 2
               : APPEND(o->sweep_vw, o->nsweep_vw, (unsigned)v, "vector widths");
}

static int add_sweep_wg(options *o, const char *s)
{
    size_t v = 0;
    return sweep_value(s, 0, 65536, 0, "--sweep-wg: bad work-group size \"%s\"", &v)
               ? 2
               : APPEND(o->sweep_wg, o->nsweep_wg, v, "work-group sizes");
}

static int add_sweep_ipw(options *o, const char *s)
{
    size_t v = 0;
    return sweep_value(s, 1, 1024, 0, "--sweep-ipw: \"%s\" is not in 1..1024", &v)
               ? 2
               : APPEND(o->sweep_ipw, o->nsweep_ipw, (unsigned)v, "vectors-per-work-item values");
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

/* Options whose value is a comma list; each one given replaces its list (count: the offset of
   its size_t count in options; the variants are a bit set). */
#define NO_COUNT ((size_t)-1)
static const struct {
    const char *name, *what;
    item_fn add;
    size_t count;
} list_opts[] = {
    {"--rules", "rule", add_rule, offsetof(options, nrules)},
    {"--sizes", "size", add_size, offsetof(options, nsizes)},
    {"--tensors", "tensor", add_tensors, offsetof(options, ntensors)},
    {"--variants", "variant", add_variant, NO_COUNT},
    {"--sweep-vw", "vector width", add_sweep_vw, offsetof(options, nsweep_vw)},
    {"--sweep-wg", "work-group size", add_sweep_wg, offsetof(options, nsweep_wg)},
    {"--sweep-ipw", "vectors per work-item", add_sweep_ipw, offsetof(options, nsweep_ipw)},
};

/* Options whose value is an integer in lo..hi (--vw: a power of 2). */
static const struct {
    const char *name;
    long lo, hi;
    size_t field; /* offset of the long in options */
    const char *want;
} long_opts[] = {
    {"--reps", 1, 100000, offsetof(options, reps), "an integer in 1..100000"},
    {"--warmup", 0, 100000, offsetof(options, warmup), "an integer in 0..100000"},
    {"--vw", 1, 16, offsetof(options, vw), "1, 2, 4, 8 or 16"},
    {"--wg", 0, 65536, offsetof(options, wg),
     "a work-group size in 0..65536 (0 = the driver's choice)"},
    {"--ipw", 1, 1024, offsetof(options, ipw), "vectors per work-item in 1..1024"},
};

/* Options whose value is a string (offset of the const char * in options). */
static const struct {
    const char *name;
    size_t field;
} string_opts[] = {
    {"--device", offsetof(options, device)},
    {"--json", offsetof(options, json)},
    {"--csv", offsetof(options, csv)},
    {"--plot", offsetof(options, plot)},
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static void list_rules(void)
{
    for (size_t k = 0; k < bench_rule_count; k++) {
        const bench_rule *r = &bench_rules[k];
        clopt_hparams hp;
        int opt = bench_rule_hparams(r, &hp) == CLOPT_SUCCESS && bench_rule_opt_level(r, &hp);
        printf("%-14s %-10s %-8s %-16s %s%s\n", r->name, clopt_rule_name(r->rule),
               r->flags & BENCH_MATRIX ? "matrix" : "vector",
               r->chain ? "unfused chain" : "no unfused chain",
               opt ? "optimizer level" : "op level",
               r->in_default_run ? ", default" : "");
    }
}

/* The option `name` with its value: 0, or 2 after printing why not. */
static int set_option(options *o, const char *name, const char *val)
{
    for (size_t k = 0; k < COUNT_OF(list_opts); k++) {
        if (strcmp(name, list_opts[k].name))
            continue;
        if (list_opts[k].count == NO_COUNT) {
            o->variants = 0;
            o->variants_given = 1;
        } else {
            *(size_t *)(void *)((char *)o + list_opts[k].count) = 0;
        }
        return for_each_item(o, val, list_opts[k].what, list_opts[k].add);
    }
    for (size_t k = 0; k < COUNT_OF(long_opts); k++) {
        long l = 0;
        if (strcmp(name, long_opts[k].name))
            continue;
        if (parse_long(val, long_opts[k].lo, long_opts[k].hi, &l) ||
            (!strcmp(name, "--vw") && (l & (l - 1))))
            return opt_error("%s wants %s, not \"%s\"", name, long_opts[k].want, val);
        *(long *)(void *)((char *)o + long_opts[k].field) = l;
        return 0;
    }
    if (!strcmp(name, "--check-n")) {
        size_t n = 0;
        if (parse_count(val, &n) || n > MAX_N || (n > 0 && n < CHECK_TENSORS))
            return opt_error("--check-n wants 0 (no check) or a size in %d..2^31 (the check "
                             "splits it into %d tensors), not \"%s\"",
                             CHECK_TENSORS, CHECK_TENSORS, val);
        o->check_n = n;
        return 0;
    }
    if (!strcmp(name, "--dtypes"))
        return storage_parse(val, o->dtypes, MAX_DTYPES, &o->ndtypes);
    if (!strcmp(name, "--plot") && strpbrk(val, "\"'\\\n"))
        return opt_error("--plot: file name must not contain quotes or backslashes");
    for (size_t k = 0; k < COUNT_OF(string_opts); k++)
        if (!strcmp(name, string_opts[k].name)) {
            *(const char **)(void *)((char *)o + string_opts[k].field) = val;
            return 0;
        }
    return opt_error("unknown option \"%s\"", name);
}

/* Whether option `name` takes a value. */
static int takes_value(const char *name)
{
    int known = !strcmp(name, "--check-n") || !strcmp(name, "--dtypes");
    for (size_t k = 0; k < COUNT_OF(list_opts); k++)
        known |= !strcmp(name, list_opts[k].name);
    for (size_t k = 0; k < COUNT_OF(long_opts); k++)
        known |= !strcmp(name, long_opts[k].name);
    for (size_t k = 0; k < COUNT_OF(string_opts); k++)
        known |= !strcmp(name, string_opts[k].name);
    return known;
}

/* The defaults of the lists left empty. */
static void fill_defaults(options *o)
{
    if (!o->nrules) {
        if (o->sweep)
            o->rules[o->nrules++] = bench_rule_find("adamw");
        else
            for (size_t k = 0; k < bench_rule_count; k++)
                if (bench_rules[k].in_default_run)
                    o->rules[o->nrules++] = &bench_rules[k];
    }
    if (!o->nsizes) {
        if (o->sweep) {
            o->sizes[o->nsizes++] = (size_t)1 << 24;
        } else {
            o->sizes[0] = (size_t)1 << 20;
            o->sizes[1] = (size_t)1 << 22;
            o->sizes[2] = (size_t)1 << 24;
            o->nsizes = 3;
        }
    }
    if (!o->ntensors) {
        o->tensors[0] = 1;
        o->ntensors = 1;
    }
    if (!o->variants)
        o->variants = (1u << V_COUNT) - 1;
    if (!o->ndtypes)
        storage_parse("p=f32", o->dtypes, MAX_DTYPES, &o->ndtypes);
    for (size_t i = 0; i < o->ndtypes; i++)
        o->with_f32 |= storage_is_f32(&o->dtypes[i]);
    if (!o->nsweep_vw) {
        memcpy(o->sweep_vw, sweep_vw_default, sizeof sweep_vw_default);
        o->nsweep_vw = COUNT_OF(sweep_vw_default);
    }
    if (!o->nsweep_wg) {
        memcpy(o->sweep_wg, sweep_wg_default, sizeof sweep_wg_default);
        o->nsweep_wg = COUNT_OF(sweep_wg_default);
    }
    if (!o->nsweep_ipw) {
        memcpy(o->sweep_ipw, sweep_ipw_default, sizeof sweep_ipw_default);
        o->nsweep_ipw = COUNT_OF(sweep_ipw_default);
    }
}

int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->warmup = 2;
    o->check_n = 10007;
    o->vw = o->wg = o->ipw = -1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = NULL;
        char name[64];
        if (!strcmp(arg, "-h")) {
            usage(stdout);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0)
            return opt_error("unexpected argument \"%s\"", arg);
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof name)
            return opt_error("unknown option \"%s\"", arg);
        memcpy(name, arg, len);
        name[len] = '\0';
        if (!strcmp(name, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(name, "--version")) {
            printf("clopt-bench %d.%d.%d (library %s)\n", CLOPT_VERSION_MAJOR,
                   CLOPT_VERSION_MINOR, CLOPT_VERSION_PATCH, clopt_version());
            return 1;
        }
        if (!strcmp(name, "--list")) {
            list_rules();
            return 1;
        }
        if (!strcmp(name, "--no-check") || !strcmp(name, "--sweep-tuning") ||
            !strcmp(name, "--no-flush")) {
            if (eq)
                return opt_error("%s takes no value", name);
            if (!strcmp(name, "--no-check"))
                o->check_n = 0;
            else if (!strcmp(name, "--no-flush"))
                o->no_flush = 1;
            else
                o->sweep = 1;
            continue;
        }
        if (!takes_value(name))
            return opt_error("unknown option \"%s\"", name);
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return opt_error("%s needs a value", name);
        if (!*val)
            return opt_error("%s needs a non-empty value", name);
        int rc = set_option(o, name, val);
        if (rc)
            return rc;
    }
    if (o->sweep && o->ntensors)
        return opt_error("--sweep-tuning times one tensor; --tensors does not apply");
    fill_defaults(o);
    if (o->sweep && (o->ndtypes != 1 || !o->with_f32))
        return opt_error("--sweep-tuning times float32 storage; --dtypes does not apply");
    return 0;
}
