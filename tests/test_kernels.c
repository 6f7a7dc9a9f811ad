/* SPDX-License-Identifier: MIT */
/*
 * test_kernels: every rule's fused kernel, through clopt_enqueue_step (op level) and
 * clopt_optimizer_* (optimizer level), against the double-precision references of
 * tests/ref; the Philox RNG and Sophia's Hessian estimators. The references themselves are
 * first replayed against the golden vectors (tests/data/golden), so the whole chain is
 * anchored to data that nobody here wrote.
 *
 * Tolerance (float32 device vs double reference)
 * ------------------------------------------------
 * Let u = 2^-24 (float32 unit roundoff) and T the number of steps. For every tracked array
 * x (θ and each state tensor) the reference also tracks, per element, the envelope
 *     E_i = max_t |x_t,i| + Σ_t |x_t,i - x_{t-1},i|
 * (largest magnitude reached plus the total variation of all updates). Each step of a
 * float32 kernel adds a rounding error of a few u relative to the magnitudes it touches
 * (the value and that step's update), and errors of the EMA states feed the next updates
 * with a weight that grows at most linearly in t. So
 *     |x_dev - x_ref| <= ((32 + 8 T) u + 2 δ_hp) E_i + 1e-36,
 * where δ_hp = ref_hparam_coeff_error(): the relative error of (1 - c) when an EMA
 * coefficient c (β1, β2, α, ...) is rounded to float on its way to the kernel (0 for the
 * exactly representable coefficients most cases use; 1.3e-5 for β2 = 0.999). The 1e-36
 * floor absorbs values the float32 range cannot hold (g² of a 1e-30 gradient underflows
 * to 0 in float32; flush-to-zero devices flush below 1.2e-38).
 * Using a per-element envelope (not rms) means one huge element (1e30 gradients) does not
 * loosen the check of its neighbours, and a 1e-30 element is checked at its own scale.
 *
 * Sign rules (Lion, Sophia with h = 0): sign(c) is discontinuous at 0, so before each step
 * the test checks the sign argument c = β1 m + (1-β1) g against the magnitude scale of its
 * terms and, where |c| < 1e-3 of it (within reach of float rounding), replaces that
 * gradient element by one that puts c safely on m's side (as the golden data do).
 *
 * Everything outside each tensor's [offset, offset + n) is a sentinel pattern that must
 * come back bit-identical, and the read-only gradient / Hessian regions must too.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clopt.h"
#include "ref.h"

#ifndef CLOPT_TEST_DATA_DIR
#define CLOPT_TEST_DATA_DIR "tests/data"
#endif

#define U32 (1.0 / 16777216.0) /* 2^-24 */
#define GUARD 37
#define TWO_POW_100 1267650600228229401496703205376.0

static int g_verbose;

/* ================================================================================== */
/* Small helpers                                                                      */
/* ================================================================================== */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

static void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    assert_non_null(p);
    return p;
}

static float sentinel(size_t i) { return -(float)(4096 + (i % 251)) - 0.25f; }

/* ================================================================================== */
/* Golden replay of the references                                                    */
/* ================================================================================== */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = xmalloc((size_t)len + 1);
    size_t got = fread(s, 1, (size_t)len, f);
    fclose(f);
    s[got] = 0;
    return s;
}

/* Whole .f32 file; *count receives the number of floats. NULL if missing. */
static float *read_f32(const char *gcase, const char *file, size_t *count)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/%s/%s", CLOPT_TEST_DATA_DIR, gcase, file);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(len >= 0 && len % 4 == 0);
    float *v = xmalloc((size_t)len);
    size_t got = fread(v, 4, (size_t)len / 4, f);
    fclose(f);
    assert_int_equal(got, (size_t)len / 4);
    *count = got;
    return v; /* the files are little-endian, as is every host this runs on */
}

/* End of the JSON value (object/array/string/scalar) starting at p. */
static const char *json_skip(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++)
            if (*p == '\\' && p[1]) p++;
        return *p ? p + 1 : p;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; *p; p++) {
            if (*p == '"') {
                p = json_skip(p) - 1;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
        }
        return p;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']') p++;
    return p;
}

/* Value of "key" directly inside the object [obj, end); NULL if absent. */
static const char *json_member(const char *obj, const char *end, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = obj;
    while (*p && *p != '{') p++;
    if (!*p) return NULL;
    p++;
    while (p < end && *p) {
        while (p < end && *p && *p != '"' && *p != '}') p++;
        if (p >= end || *p != '"') return NULL;
        const char *kend = json_skip(p);
        int match = (size_t)(kend - p) == strlen(pat) && strncmp(p, pat, strlen(pat)) == 0;
        p = kend;
        while (*p == ' ' || *p == ':') p++;
        if (match) return p;
        p = json_skip(p);
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    }
    return NULL;
}

static int json_number(const char *v, double *out)
{
    if (!v) return 0;
    if (strncmp(v, "true", 4) == 0) {
        *out = 1;
        return 1;
    }
    if (strncmp(v, "false", 5) == 0) {
        *out = 0;
        return 1;
    }
    if (strncmp(v, "null", 4) == 0) return 0;
    char *e;
    *out = strtod(v, &e);
    return e != v;
}

/* hparams from meta.json "hyper"; fields not listed stay 0. */
static void golden_hparams(const char *meta, clopt_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    const char *hy = json_member(meta, meta + strlen(meta), "hyper");
    assert_non_null(hy);
    const char *hend = json_skip(hy);
    struct {
        const char *key;
        double *dst;
    } dk[] = {{"lr", &hp->lr},
              {"beta1", &hp->beta1},
              {"beta2", &hp->beta2},
              {"beta3", &hp->beta3},
              {"eps", &hp->eps},
              {"weight_decay", &hp->weight_decay},
              {"momentum", &hp->momentum},
              {"dampening", &hp->dampening},
              {"alpha", &hp->alpha},
              {"rho", &hp->rho},
              {"bs", &hp->bs},
              {"lr_decay", &hp->lr_decay},
              {"initial_accumulator_value", &hp->initial_accumulator_value},
              {"momentum_decay", &hp->momentum_decay}};
    for (size_t i = 0; i < sizeof dk / sizeof dk[0]; i++) {
        double v;
        if (json_number(json_member(hy, hend, dk[i].key), &v)) *dk[i].dst = v;
    }
    struct {
        const char *key;
        int *dst;
    } ik[] = {{"nesterov", &hp->nesterov},
              {"amsgrad", &hp->amsgrad},
              {"maximize", &hp->maximize},
              {"centered", &hp->centered}};
    for (size_t i = 0; i < sizeof ik / sizeof ik[0]; i++) {
        double v;
        if (json_number(json_member(hy, hend, ik[i].key), &v)) *ik[i].dst = v != 0;
    }
    double v;
    if (json_number(json_member(hy, hend, "hess_interval"), &v)) hp->hess_interval = (unsigned)v;
}

/* rtol/atol of file `name` from meta.json files[]. */
static void golden_file_tol(const char *meta, const char *name, double *rtol, double *atol)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = strstr(meta, pat);
    assert_non_null(p);
    /* back up to the '{' of this files[] entry */
    while (p > meta && *p != '{') p--;
    const char *end = json_skip(p);
    const char *tol = json_member(p, end, "tolerance");
    assert_non_null(tol);
    const char *tend = json_skip(tol);
    assert_true(json_number(json_member(tol, tend, "rtol"), rtol));
    assert_true(json_number(json_member(tol, tend, "atol"), atol));
}

typedef struct golden_case {
    const char *name;
    clopt_rule rule;
} golden_case;

static const golden_case k_golden[] = {
    {"sgd", CLOPT_SGD},         {"sgd_momentum", CLOPT_SGD},
    {"sgd_nesterov", CLOPT_SGD}, {"adagrad", CLOPT_ADAGRAD},
    {"adadelta", CLOPT_ADADELTA}, {"rmsprop", CLOPT_RMSPROP},
    {"rmsprop_centered", CLOPT_RMSPROP}, {"adam", CLOPT_ADAM},
    {"adam_l2", CLOPT_ADAM},    {"amsgrad", CLOPT_ADAM},
    {"adamw", CLOPT_ADAMW},     {"adamax", CLOPT_ADAMAX},
    {"nadam", CLOPT_NADAM},     {"radam", CLOPT_RADAM},
    {"lion", CLOPT_LION},       {"sophia", CLOPT_SOPHIA},
    {"adamod", CLOPT_ADAMOD},   {"diffgrad", CLOPT_DIFFGRAD},
};

/* The double reference must sit far inside the golden tolerance: it computes what the
   golden reference computed (float64 on the same float32 inputs), so only the float32
   rounding of the expected files separates them. */
#define GOLDEN_FRACTION 0.02

static int golden_compare(const char *gcase, const char *meta, const char *file,
                          const double *x, size_t n)
{
    size_t cnt = 0;
    float *e = read_f32(gcase, file, &cnt);
    if (!e) {
        print_error("golden %s: %s missing\n", gcase, file);
        return 1;
    }
    if (cnt != n) {
        print_error("golden %s: %s has %zu values, expected %zu\n", gcase, file, cnt, n);
        free(e);
        return 1;
    }
    double rtol = 0, atol = 0;
    golden_file_tol(meta, file, &rtol, &atol);
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = atol + rtol * fabs((double)e[i]);
        double r = fabs(x[i] - (double)e[i]) / tol;
        if (!(r <= worst)) {
            worst = r;
            wi = i;
        }
    }
    if (g_verbose)
        print_message("golden %-16s %-26s worst %.2e of tolerance (element %zu)\n", gcase, file,
                      worst, wi);
    int bad = !(worst <= GOLDEN_FRACTION);
    if (bad)
        print_error("golden %s %s: reference %.9g vs expected %.9g at element %zu (%.3g of the "
                    "tolerance, limit %.2g)\n",
                    gcase, file, x[wi], (double)e[wi], wi, worst, GOLDEN_FRACTION);
    free(e);
    return bad;
}

static int golden_replay(const golden_case *gc)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/%s/meta.json", CLOPT_TEST_DATA_DIR, gc->name);
    char *meta = read_text(path);
    if (!meta) {
        print_error("golden %s: cannot read %s\n", gc->name, path);
        return 1;
    }
    clopt_hparams hp;
    golden_hparams(meta, &hp);
    size_t n = 0, ng = 0, nh = 0;
    float *p0 = read_f32(gc->name, "param0.f32", &n);
    float *gr = read_f32(gc->name, "grads.f32", &ng);
    assert_non_null(p0);
    assert_non_null(gr);
    assert_true(n > 0 && ng % n == 0);
    size_t T = ng / n;
    double steps_meta = 0;
    assert_true(json_number(json_member(meta, meta + strlen(meta), "steps"), &steps_meta));
    assert_int_equal(T, (size_t)steps_meta);
    float *hs = gc->rule == CLOPT_SOPHIA ? read_f32(gc->name, "hess.f32", &nh) : NULL;
    if (gc->rule == CLOPT_SOPHIA) {
        assert_non_null(hs);
        assert_true(hp.hess_interval >= 1);
    }

    size_t ns = ref_state_count(gc->rule, &hp);
    double *theta = xmalloc(n * sizeof(double)), *g = xmalloc(n * sizeof(double));
    double *hh = xmalloc(n * sizeof(double));
    double *st[CLOPT_MAX_STATE] = {0};
    for (size_t k = 0; k < ns; k++) {
        st[k] = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) st[k][i] = ref_state_init(gc->rule, &hp, k);
    }
    for (size_t i = 0; i < n; i++) theta[i] = p0[i];
    double mu = 1.0;
    int bad = 0;
    for (size_t t = 1; t <= T; t++) {
        for (size_t i = 0; i < n; i++) g[i] = gr[(t - 1) * n + i];
        const double *hp_est = NULL;
        if (hs && t % hp.hess_interval == 0) {
            size_t j = t / hp.hess_interval - 1;
            assert_true((j + 1) * n <= nh);
            for (size_t i = 0; i < n; i++) hh[i] = hs[j * n + i];
            hp_est = hh;
        }
        ref_step(gc->rule, &hp, t, n, theta, g, st, hp_est, &mu, 1.0);
        if (t == 1) bad += golden_compare(gc->name, meta, "param_1.f32", theta, n);
    }
    bad += golden_compare(gc->name, meta, "param_T.f32", theta, n);
    for (size_t k = 0; k < ns; k++) {
        char file[96];
        snprintf(file, sizeof file, "state_%s.f32", ref_state_name(gc->rule, &hp, k));
        bad += golden_compare(gc->name, meta, file, st[k], n);
    }
    if (gc->rule == CLOPT_NADAM) {
        const char *fs = json_member(meta, meta + strlen(meta), "final_scalar_state");
        double mp = 0;
        assert_true(json_number(json_member(fs, json_skip(fs), "mu_product"), &mp));
        if (fabs(mu - mp) > 1e-12 * fabs(mp)) {
            print_error("golden nadam: mu_product %.17g vs expected %.17g\n", mu, mp);
            bad++;
        }
    }
    for (size_t k = 0; k < ns; k++) free(st[k]);
    free(theta);
    free(g);
    free(hh);
    free(p0);
    free(gr);
    free(hs);
    free(meta);
    return bad;
}

static void test_reference_vs_golden(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t c = 0; c < sizeof k_golden / sizeof k_golden[0]; c++) {
        int b = golden_replay(&k_golden[c]);
        if (b) print_error("golden case %s: %d mismatching files\n", k_golden[c].name, b);
        bad += b;
    }
    assert_int_equal(bad, 0);
}

/* ================================================================================== */
/* Layout and defaults: the library's view vs the reference's                         */
/* ================================================================================== */

static void test_hparams(clopt_rule rule, clopt_hparams *hp);

static void layout_variants(clopt_rule rule, clopt_hparams *v, size_t *count)
{
    size_t k = 0;
    test_hparams(rule, &v[k++]);
    if (rule == CLOPT_SGD) {
        v[k] = v[0];
        v[k++].momentum = 0.9;
        v[k] = v[1];
        v[k++].nesterov = 1;
    }
    if (rule == CLOPT_ADAM || rule == CLOPT_ADAMW) {
        v[k] = v[0];
        v[k++].amsgrad = 1;
    }
    if (rule == CLOPT_RMSPROP) {
        v[k] = v[0];
        v[k++].momentum = 0.9;
        v[k] = v[0];
        v[k++].centered = 1;
        v[k] = v[1];
        v[k++].centered = 1;
    }
    if (rule == CLOPT_ADAGRAD) {
        v[k] = v[0];
        v[k++].initial_accumulator_value = 0.25;
    }
    *count = k;
}

static void test_state_layout_and_defaults(void **state)
{
    (void)state;
    int bad = 0;
    for (int r = 0; r <= CLOPT_SOPHIA; r++) { /* the element-wise rules */
        clopt_rule rule = (clopt_rule)r;
        clopt_hparams lib, ref;
        assert_int_equal(clopt_hparams_default(rule, &lib), CLOPT_SUCCESS);
        ref_hparams_default(rule, &ref);
        const char *why = NULL;
        if (clopt_hparams_validate(rule, &lib, &why) != CLOPT_SUCCESS) {
            print_error("%s: default hparams do not validate (%s)\n", clopt_rule_name(rule),
                        why ? why : "?");
            bad++;
        }
#define CHECK_FIELD(f)                                                                        \
    if (fabs(lib.f - ref.f) > 1e-12 * fabs(ref.f)) {                                          \
        print_error("%s: default " #f " = %g, torch/paper default %g\n", clopt_rule_name(rule), \
                    (double)lib.f, (double)ref.f);                                            \
        bad++;                                                                                \
    }
        /* only the fields each rule reads */
        if (rule != CLOPT_SGD) CHECK_FIELD(lr); /* torch's SGD has no default lr */
        CHECK_FIELD(weight_decay);
        switch (rule) {
        case CLOPT_SGD:
            CHECK_FIELD(momentum);
            CHECK_FIELD(dampening);
            break;
        case CLOPT_ADAGRAD:
            CHECK_FIELD(eps);
            CHECK_FIELD(lr_decay);
            CHECK_FIELD(initial_accumulator_value);
            break;
        case CLOPT_ADADELTA:
            CHECK_FIELD(eps);
            CHECK_FIELD(rho);
            break;
        case CLOPT_RMSPROP:
            CHECK_FIELD(eps);
            CHECK_FIELD(alpha);
            CHECK_FIELD(momentum);
            break;
        case CLOPT_LION:
            CHECK_FIELD(beta1);
            CHECK_FIELD(beta2);
            break;
        case CLOPT_SOPHIA:
            CHECK_FIELD(beta1);
            CHECK_FIELD(beta2);
            CHECK_FIELD(eps);
            CHECK_FIELD(rho);
            break;
        default: /* Adam family, Adamax, NAdam, RAdam, AdaMod, diffGrad */
            CHECK_FIELD(beta1);
            CHECK_FIELD(beta2);
            CHECK_FIELD(eps);
            if (rule == CLOPT_ADAMOD) CHECK_FIELD(beta3);
            if (rule == CLOPT_NADAM) CHECK_FIELD(momentum_decay);
            break;
        }
#undef CHECK_FIELD
        if (rule == CLOPT_SOPHIA && lib.hess_interval != 10) {
            print_error("sophia: default hess_interval %u, official code uses 10\n",
                        lib.hess_interval);
            bad++;
        }
        if (lib.nesterov || lib.amsgrad || lib.maximize || lib.centered) {
            print_error("%s: a default flag is set\n", clopt_rule_name(rule));
            bad++;
        }
        clopt_rule back;
        if (clopt_rule_from_name(clopt_rule_name(rule), &back) != CLOPT_SUCCESS || back != rule) {
            print_error("%s: rule_from_name(rule_name) does not round-trip\n",
                        clopt_rule_name(rule));
            bad++;
        }

        clopt_hparams var[8];
        size_t nv;
        layout_variants(rule, var, &nv);
        for (size_t j = 0; j < nv; j++) {
            size_t ns = ref_state_count(rule, &var[j]);
            size_t ls = clopt_rule_state_count(rule, &var[j]);
            if (ls != ns) {
                print_error("%s variant %zu: library has %zu state tensors, reference %zu\n",
                            clopt_rule_name(rule), j, ls, ns);
                bad++;
                continue;
            }
            for (size_t k = 0; k < ns; k++) {
                const char *ln = clopt_rule_state_name(rule, &var[j], k);
                const char *rn = ref_state_name(rule, &var[j], k);
                if (!ln || strcmp(ln, rn) != 0) {
                    print_error("%s variant %zu: state %zu is '%s', reference '%s'\n",
                                clopt_rule_name(rule), j, k, ln ? ln : "(null)", rn);
                    bad++;
                }
                float li = clopt_rule_state_init(rule, &var[j], k);
                if ((double)li != (double)(float)ref_state_init(rule, &var[j], k)) {
                    print_error("%s variant %zu: state %zu starts at %g, reference %g\n",
                                clopt_rule_name(rule), j, k, (double)li,
                                ref_state_init(rule, &var[j], k));
                    bad++;
                }
            }
            if (clopt_rule_state_name(rule, &var[j], ns) != NULL) {
                print_error("%s: state name past the count is not NULL\n", clopt_rule_name(rule));
                bad++;
            }
            /* θ read+written, g read, every state read+written. Sophia's h is only read when
               no estimate is given (24 B) and read+written plus the ĥ read with one (32 B). */
            size_t bpp = clopt_rule_bytes_per_param(rule, &var[j]);
            size_t expect = 12 + 8 * ns;
            if (bpp != expect && !(rule == CLOPT_SOPHIA && (bpp == expect - 4 || bpp == expect + 4))) {
                print_error("%s variant %zu: bytes_per_param %zu, expected %zu\n",
                            clopt_rule_name(rule), j, bpp, expect);
                bad++;
            }
        }
    }
    /* NAdam's μ product */
    clopt_hparams hp;
    test_hparams(CLOPT_NADAM, &hp);
    double P = 1.0;
    for (uint64_t t = 0; t <= 40; t++) {
        if (t > 0) P *= ref_nadam_mu(&hp, t);
        double lp = clopt_nadam_mu_product(&hp, t);
        if (fabs(lp - P) > 1e-12 * P) {
            print_error("clopt_nadam_mu_product(t=%llu) = %.17g, reference %.17g\n",
                        (unsigned long long)t, lp, P);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* ================================================================================== */
/* Test data                                                                           */
/* ================================================================================== */

enum {
    SP_ZERO = 1,      /* some elements get exactly 0 at every step */
    SP_TINY = 2,      /* some elements get ±1e-30 */
    SP_HUGE = 4,      /* some elements get ±1e30 (rules without g² only) */
    SP_ZERO_STEP = 8, /* step 2 has an all-zero gradient */
    SP_SCHED = 16,    /* gradient magnitude x3 in the first third, x0.3 in the last */
};

typedef struct gen {
    uint64_t rng;
    size_t n;
    unsigned special;
    double gmag, grad_scale;
    unsigned steps;
    double *drift;
} gen;

static void gen_init(gen *G, uint64_t seed, size_t n, unsigned special, double gmag,
                     double grad_scale, unsigned steps)
{
    G->rng = seed * 0x2545F4914F6CDD1Dull + 17;
    G->n = n;
    G->special = special;
    G->gmag = gmag;
    G->grad_scale = grad_scale;
    G->steps = steps;
    G->drift = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) G->drift[i] = 0.5 * ref_normal(&G->rng);
}

static void gen_free(gen *G) { free(G->drift); }

static void gen_param(gen *G, float *theta, double scale)
{
    for (size_t i = 0; i < G->n; i++) theta[i] = (float)(scale * ref_normal(&G->rng));
}

static int elem_class(size_t i) { return (int)(i % 61); }

/* Raw (device-side) gradient of step t: grad_scale * g, g the effective gradient. */
static void gen_grads(gen *G, unsigned t, float *raw)
{
    double f = G->gmag;
    if (G->special & SP_SCHED) {
        if (3 * t <= G->steps)
            f *= 3.0;
        else if (3 * t > 2 * G->steps)
            f *= 0.3;
    }
    for (size_t i = 0; i < G->n; i++) {
        double g = f * (G->drift[i] + ref_normal(&G->rng));
        double sgn = G->drift[i] >= 0 ? 1.0 : -1.0;
        int c = elem_class(i);
        if ((G->special & SP_ZERO) && c == 1) g = 0.0;
        if ((G->special & SP_TINY) && c == 2) g = sgn * 1e-30 * (1.0 + ref_uniform(&G->rng));
        if ((G->special & SP_HUGE) && c == 3) g = sgn * 1e30 * (1.0 + ref_uniform(&G->rng));
        if ((G->special & SP_ZERO_STEP) && t == 2) g = 0.0;
        raw[i] = (float)(g * G->grad_scale);
    }
}

static void gen_hess(gen *G, float *h)
{
    for (size_t i = 0; i < G->n; i++)
        h[i] = (float)exp(log(1e-3) + ref_uniform(&G->rng) * log(1e4));
}

/* Lion / Sophia: keep the sign argument c = β1 m + (1-β1) g clear of 0 (see the header).
   m = the reference's current exp_avg; mag = running EMA of |g| (the magnitude scale of m).
   Updates mag with the final gradient. */
static size_t sign_guard(clopt_rule rule, const clopt_hparams *hp, double grad_scale, size_t n,
                         float *raw, const double *m, double *mag)
{
    if (rule != CLOPT_LION && rule != CLOPT_SOPHIA) return 0;
    const double gs = grad_scale == 0 ? 1.0 : grad_scale;
    const double b1 = hp->beta1;
    const double bm = rule == CLOPT_LION ? hp->beta2 : hp->beta1; /* m's EMA coefficient */
    size_t fixed = 0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)raw[i] / gs;
        if (hp->maximize) g = -g;
        double c = b1 * m[i] + (1.0 - b1) * g;
        double sc = b1 * mag[i] + (1.0 - b1) * fabs(g);
        if (sc > 0 && fabs(c) < 1e-3 * sc) {
            double target = (m[i] >= 0 ? 1.0 : -1.0) * 0.5 * sc;
            g = (target - b1 * m[i]) / (1.0 - b1);
            double r = (hp->maximize ? -g : g) * gs;
            raw[i] = (float)r;
            g = (double)raw[i] / gs;
            if (hp->maximize) g = -g;
            fixed++;
        }
        mag[i] = bm * mag[i] + (1.0 - bm) * fabs(g);
    }
    return fixed;
}

/* ================================================================================== */
/* Comparison                                                                         */
/* ================================================================================== */

typedef struct track {
    size_t n, na;                    /* elements, arrays (θ + states) */
    double *env[1 + CLOPT_MAX_STATE]; /* max |x| */
    double *var[1 + CLOPT_MAX_STATE]; /* Σ |Δx| */
    double *prev[1 + CLOPT_MAX_STATE];
} track;

static void track_init(track *tr, size_t n, size_t na, double *const *arrays)
{
    memset(tr, 0, sizeof *tr);
    tr->n = n;
    tr->na = na;
    for (size_t a = 0; a < na; a++) {
        tr->env[a] = xmalloc(n * sizeof(double));
        tr->var[a] = xcalloc(n, sizeof(double));
        tr->prev[a] = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) tr->env[a][i] = fabs(arrays[a][i]);
    }
}

static void track_before(track *tr, double *const *arrays)
{
    for (size_t a = 0; a < tr->na; a++) memcpy(tr->prev[a], arrays[a], tr->n * sizeof(double));
}

static void track_after(track *tr, double *const *arrays)
{
    for (size_t a = 0; a < tr->na; a++)
        for (size_t i = 0; i < tr->n; i++) {
            double x = arrays[a][i];
            tr->var[a][i] += fabs(x - tr->prev[a][i]);
            if (fabs(x) > tr->env[a][i]) tr->env[a][i] = fabs(x);
        }
}

static void track_free(track *tr)
{
    for (size_t a = 0; a < tr->na; a++) {
        free(tr->env[a]);
        free(tr->var[a]);
        free(tr->prev[a]);
    }
}

static double tol_rel(clopt_rule rule, const clopt_hparams *hp, unsigned steps)
{
    return (32.0 + 8.0 * steps) * U32 + 2.0 * ref_hparam_coeff_error(rule, hp);
}

/* Number of elements outside tolerance (the first one is printed). */
static size_t compare_tracked(const char *label, const char *what, const float *dev,
                              const double *ref, const double *env, const double *var, size_t n,
                              double rel)
{
    size_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = rel * (env[i] + var[i]) + 1e-36;
        double d = fabs((double)dev[i] - ref[i]);
        int ok = isfinite(dev[i]) ? d <= tol : 0;
        if (ok && d / tol > worst) worst = d / tol;
        if (!ok) {
            if (bad == 0)
                print_error("%s: %s[%zu] = %.9g, reference %.9g (|diff| %.3g > tol %.3g; "
                            "envelope %.3g)\n",
                            label, what, i, (double)dev[i], ref[i], d, tol, env[i] + var[i]);
            bad++;
        }
    }
    if (bad) print_error("%s: %s: %zu of %zu elements outside tolerance\n", label, what, bad, n);
    if (g_verbose && !bad) print_message("  %-44s %-16s worst %.3f of tol\n", label, what, worst);
    return bad;
}

/* ================================================================================== */
/* Op level                                                                           */
/* ================================================================================== */

enum { Q_NULL = 0, Q_CTX_EVENTS = 1, Q_OWN = 2 };

typedef struct kcase {
    const char *label;
    clopt_rule rule;
    clopt_hparams hp;
    size_t n;
    unsigned steps;
    double grad_scale; /* what the kernel divides by (1 = none) */
    unsigned special;
    unsigned hess_mask; /* Sophia: bit t-1 = a Hessian estimate at step t */
    int packed;         /* every tensor in one cl_mem */
    int aligned;        /* every offset 0 */
    int qmode;
    int wrapper; /* use clopt_enqueue_sgd/adam/adamw */
    double gmag;
    uint64_t seed;
} kcase;

static kcase kc_make(clopt_rule rule, const char *label, size_t n, unsigned steps, uint64_t seed)
{
    kcase k;
    memset(&k, 0, sizeof k);
    k.label = label;
    k.rule = rule;
    test_hparams(rule, &k.hp);
    k.n = n;
    k.steps = steps;
    k.grad_scale = 1.0;
    k.gmag = 1.0;
    k.seed = seed;
    return k;
}

/* The library's default struct (so fields this test does not know keep their defaults),
   with every field the reference reads set from the reference's own defaults. */
static void test_hparams(clopt_rule rule, clopt_hparams *hp)
{
    clopt_hparams r;
    ref_hparams_default(rule, &r);
    assert_int_equal(clopt_hparams_default(rule, hp), CLOPT_SUCCESS);
    hp->lr = r.lr;
    hp->beta1 = r.beta1;
    hp->beta2 = r.beta2;
    hp->beta3 = r.beta3;
    hp->eps = r.eps;
    hp->weight_decay = r.weight_decay;
    hp->momentum = r.momentum;
    hp->dampening = r.dampening;
    hp->alpha = r.alpha;
    hp->rho = r.rho;
    hp->bs = r.bs;
    hp->lr_decay = r.lr_decay;
    hp->initial_accumulator_value = r.initial_accumulator_value;
    hp->momentum_decay = r.momentum_decay;
    hp->hess_interval = r.hess_interval;
    hp->nesterov = hp->amsgrad = hp->maximize = hp->centered = 0;
    hp->grad_centralization = 0;
}

typedef struct tensor_slot {
    size_t buf;    /* index into bufs */
    size_t offset; /* elements */
} tensor_slot;

static cl_int write_region(cl_command_queue q, cl_mem mem, size_t off, size_t n, const float *src,
                           int blocking, cl_event *ev)
{
    return clEnqueueWriteBuffer(q, mem, blocking ? CL_TRUE : CL_FALSE, off * sizeof(float),
                                n * sizeof(float), src, 0, NULL, ev);
}

static size_t check_outside(const char *label, const char *what, const float *dev,
                            const float *init, size_t size, size_t off, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < size; i++) {
        if (i >= off && i < off + n) continue;
        if (memcmp(&dev[i], &init[i], sizeof(float)) != 0) {
            if (!bad)
                print_error("%s: %s buffer element %zu outside [%zu, %zu) was changed (%g)\n",
                            label, what, i, off, off + n, (double)dev[i]);
            bad++;
        }
    }
    return bad;
}

static size_t run_op_case(clopt_ctx *ctx, const kcase *kc)
{
    const clopt_rule rule = kc->rule;
    const clopt_hparams *hp = &kc->hp;
    const size_t n = kc->n, ns = ref_state_count(rule, hp);
    const int has_hess = rule == CLOPT_SOPHIA && kc->hess_mask != 0;
    char label[160];
    snprintf(label, sizeof label, "op %s/%s n=%zu T=%u", clopt_rule_name(rule), kc->label, n,
             kc->steps);
    if (clopt_rule_state_count(rule, hp) != ns) {
        print_error("%s: library state count %zu != reference %zu\n", label,
                    clopt_rule_state_count(rule, hp), ns);
        return 1;
    }

    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_device_id dev = clopt_ctx_cl_device(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx), own = NULL;
    cl_int err;
    if (kc->qmode == Q_OWN) {
        own = clCreateCommandQueue(clc, dev, 0, &err);
        assert_int_equal(err, CL_SUCCESS);
        q = own;
    }

    /* ---- layout: tensors 0 = θ, 1 = g, 2.. = states, last = ĥ ---- */
    const size_t nt = 2 + ns + (has_hess ? 1 : 0);
    tensor_slot slot[2 + CLOPT_MAX_STATE + 1];
    size_t nbufs, bsize[2 + CLOPT_MAX_STATE + 1];
    uint64_t lrng = kc->seed ^ 0xABCDEF12345ull;
    if (kc->packed) {
        nbufs = 1;
        size_t cur = kc->aligned ? 0 : ref_splitmix64(&lrng) % 7;
        for (size_t k = 0; k < nt; k++) {
            slot[k].buf = 0;
            slot[k].offset = cur;
            cur += n + (kc->aligned ? 0 : 1 + ref_splitmix64(&lrng) % 5);
        }
        bsize[0] = cur + GUARD;
    } else {
        nbufs = nt;
        for (size_t k = 0; k < nt; k++) {
            slot[k].buf = k;
            slot[k].offset = kc->aligned ? 0 : (size_t)(ref_splitmix64(&lrng) % 41);
            bsize[k] = slot[k].offset + n + (kc->aligned ? 0 : GUARD);
        }
    }
    cl_mem mem[2 + CLOPT_MAX_STATE + 1];
    float *init[2 + CLOPT_MAX_STATE + 1];
    for (size_t b = 0; b < nbufs; b++) {
        mem[b] = clCreateBuffer(clc, CL_MEM_READ_WRITE, bsize[b] * sizeof(float), NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        init[b] = xmalloc(bsize[b] * sizeof(float));
        for (size_t i = 0; i < bsize[b]; i++) init[b][i] = sentinel(i + 7 * b);
    }

    /* ---- data ---- */
    gen G;
    gen_init(&G, kc->seed, n, kc->special, kc->gmag, kc->grad_scale, kc->steps);
    float *theta0 = xmalloc(n * sizeof(float)), *graw = xmalloc(n * sizeof(float));
    float *hraw = xmalloc(n * sizeof(float));
    gen_param(&G, theta0, 0.5);
    memcpy(init[slot[0].buf] + slot[0].offset, theta0, n * sizeof(float));
    for (size_t i = 0; i < n; i++) init[slot[1].buf][slot[1].offset + i] = 0.0f;
    for (size_t k = 0; k < ns; k++) {
        float v = (float)ref_state_init(rule, hp, k);
        for (size_t i = 0; i < n; i++) init[slot[2 + k].buf][slot[2 + k].offset + i] = v;
    }
    if (has_hess)
        for (size_t i = 0; i < n; i++) init[slot[nt - 1].buf][slot[nt - 1].offset + i] = 0.0f;
    for (size_t b = 0; b < nbufs; b++)
        assert_int_equal(write_region(q, mem[b], 0, bsize[b], init[b], 1, NULL), CL_SUCCESS);

    /* ---- reference ---- */
    double *arr[1 + CLOPT_MAX_STATE];
    arr[0] = xmalloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) arr[0][i] = theta0[i];
    double *st[CLOPT_MAX_STATE] = {0};
    for (size_t k = 0; k < ns; k++) {
        arr[1 + k] = st[k] = xmalloc(n * sizeof(double));
        double v = (double)(float)ref_state_init(rule, hp, k);
        for (size_t i = 0; i < n; i++) st[k][i] = v;
    }
    double *dg = xmalloc(n * sizeof(double)), *dh = xmalloc(n * sizeof(double));
    double *mag = xcalloc(n, sizeof(double));
    track tr;
    track_init(&tr, n, 1 + ns, arr);
    double mu_chain = 1.0;
    size_t bad = 0, guarded = 0;
    int hess_written = 0;

    clopt_step_args args;
    clopt_step_args_init(&args);
    args.param.buffer = mem[slot[0].buf];
    args.param.offset = slot[0].offset;
    args.grad.buffer = mem[slot[1].buf];
    args.grad.offset = slot[1].offset;
    for (size_t k = 0; k < ns; k++) {
        args.state[k].buffer = mem[slot[2 + k].buf];
        args.state[k].offset = slot[2 + k].offset;
    }
    args.grad_scale = kc->grad_scale == 1.0 ? 0.0 : kc->grad_scale; /* 0 is taken as 1 */
    if (kc->grad_scale == 1.0 && (kc->seed & 1)) args.grad_scale = 1.0;

    for (unsigned t = 1; t <= kc->steps; t++) {
        gen_grads(&G, t, graw);
        if (rule == CLOPT_LION || rule == CLOPT_SOPHIA)
            guarded += sign_guard(rule, hp, kc->grad_scale, n, graw, st[0], mag);
        const int hess_now = has_hess && t <= 32 && ((kc->hess_mask >> (t - 1)) & 1u);
        if (hess_now) {
            gen_hess(&G, hraw);
            hess_written = 1;
        }

        cl_event wev[2];
        cl_uint nwait = 0;
        if (kc->qmode == Q_OWN) {
            assert_int_equal(write_region(q, mem[slot[1].buf], slot[1].offset, n, graw, 0, &wev[nwait++]),
                             CL_SUCCESS);
            if (hess_now)
                assert_int_equal(write_region(q, mem[slot[nt - 1].buf], slot[nt - 1].offset, n,
                                              hraw, 0, &wev[nwait++]),
                                 CL_SUCCESS);
        } else {
            assert_int_equal(write_region(q, mem[slot[1].buf], slot[1].offset, n, graw, 1, NULL),
                             CL_SUCCESS);
            if (hess_now)
                assert_int_equal(
                    write_region(q, mem[slot[nt - 1].buf], slot[nt - 1].offset, n, hraw, 1, NULL),
                    CL_SUCCESS);
        }
        args.hessian.buffer = hess_now ? mem[slot[nt - 1].buf] : NULL;
        args.hessian.offset = hess_now ? slot[nt - 1].offset : 0;
        if (rule == CLOPT_NADAM) {
            args.mu_product = mu_chain;
            double lp = clopt_nadam_mu_product(hp, t - 1);
            if (fabs(lp - mu_chain) > 1e-12 * mu_chain) {
                print_error("%s: clopt_nadam_mu_product(t=%u) %.17g vs chain %.17g\n", label,
                            t - 1, lp, mu_chain);
                bad++;
            }
        }

        cl_event ev = NULL;
        cl_command_queue use_q = kc->qmode == Q_NULL ? NULL : q;
        cl_event *evp = kc->qmode == Q_NULL ? NULL : &ev;
        clopt_status s;
        if (kc->wrapper && rule == CLOPT_SGD)
            s = clopt_enqueue_sgd(ctx, use_q, hp, &args, n, t, nwait, nwait ? wev : NULL, evp);
        else if (kc->wrapper && rule == CLOPT_ADAM)
            s = clopt_enqueue_adam(ctx, use_q, hp, &args, n, t, nwait, nwait ? wev : NULL, evp);
        else if (kc->wrapper && rule == CLOPT_ADAMW)
            s = clopt_enqueue_adamw(ctx, use_q, hp, &args, n, t, nwait, nwait ? wev : NULL, evp);
        else
            s = clopt_enqueue_step(ctx, use_q, rule, hp, &args, n, t, nwait, nwait ? wev : NULL,
                                   evp);
        for (cl_uint w = 0; w < nwait; w++) clReleaseEvent(wev[w]);
        if (s != CLOPT_SUCCESS) {
            print_error("%s: step %u returned %s (%s)\n", label, t, clopt_status_name(s),
                        clopt_ctx_last_error(ctx));
            bad++;
            break;
        }
        if (evp) {
            assert_non_null(ev);
            assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
            cl_int es = 0;
            assert_int_equal(clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof es, &es,
                                            NULL),
                             CL_SUCCESS);
            assert_int_equal(es, CL_COMPLETE);
            clReleaseEvent(ev);
        }

        for (size_t i = 0; i < n; i++) dg[i] = graw[i];
        if (hess_now)
            for (size_t i = 0; i < n; i++) dh[i] = hraw[i];
        track_before(&tr, arr);
        ref_step(rule, hp, t, n, arr[0], dg, st, hess_now ? dh : NULL, &mu_chain,
                 kc->grad_scale);
        track_after(&tr, arr);
    }
    assert_int_equal(clFinish(q), CL_SUCCESS);

    /* ---- read back and compare ---- */
    if (!bad) {
        float **out = xmalloc(nbufs * sizeof(float *));
        for (size_t b = 0; b < nbufs; b++) {
            out[b] = xmalloc(bsize[b] * sizeof(float));
            assert_int_equal(clEnqueueReadBuffer(q, mem[b], CL_TRUE, 0, bsize[b] * sizeof(float),
                                                 out[b], 0, NULL, NULL),
                             CL_SUCCESS);
        }
        const double rel = tol_rel(rule, hp, kc->steps);
        bad += compare_tracked(label, "param", out[slot[0].buf] + slot[0].offset, arr[0],
                               tr.env[0], tr.var[0], n, rel);
        for (size_t k = 0; k < ns; k++)
            bad += compare_tracked(label, ref_state_name(rule, hp, k),
                                   out[slot[2 + k].buf] + slot[2 + k].offset, st[k],
                                   tr.env[1 + k], tr.var[1 + k], n, rel);
        /* read-only inputs unchanged */
        if (memcmp(out[slot[1].buf] + slot[1].offset, graw, n * sizeof(float)) != 0) {
            print_error("%s: the gradient tensor was modified\n", label);
            bad++;
        }
        if (hess_written &&
            memcmp(out[slot[nt - 1].buf] + slot[nt - 1].offset, hraw, n * sizeof(float)) != 0) {
            print_error("%s: the hessian estimate tensor was modified\n", label);
            bad++;
        }
        /* nothing outside the tensors touched */
        for (size_t b = 0; b < nbufs; b++) {
            /* copy the regions the device legitimately holds into init so one scan works */
            for (size_t k = 0; k < nt; k++)
                if (slot[k].buf == b)
                    memcpy(init[b] + slot[k].offset, out[b] + slot[k].offset, n * sizeof(float));
            bad += check_outside(label, "a", out[b], init[b], bsize[b], 0, 0);
        }
        for (size_t b = 0; b < nbufs; b++) free(out[b]);
        free(out);
    }
    if (g_verbose && guarded) print_message("  %s: %zu gradient elements sign-guarded\n", label, guarded);

    track_free(&tr);
    for (size_t a = 0; a < 1 + ns; a++) free(arr[a]);
    free(dg);
    free(dh);
    free(mag);
    free(theta0);
    free(graw);
    free(hraw);
    gen_free(&G);
    for (size_t b = 0; b < nbufs; b++) {
        clReleaseMemObject(mem[b]);
        free(init[b]);
    }
    if (own) clReleaseCommandQueue(own);
    return bad;
}

static size_t run_cases(clopt_ctx *ctx, const kcase *cases, size_t count)
{
    size_t bad = 0;
    for (size_t c = 0; c < count; c++) {
        clock_t t0 = clock();
        size_t b = run_op_case(ctx, &cases[c]);
        if (g_verbose)
            print_message("%-10s %-24s n=%-8zu T=%-3u %s (%.2fs cpu)\n",
                          clopt_rule_name(cases[c].rule), cases[c].label, cases[c].n,
                          cases[c].steps, b ? "FAIL" : "ok",
                          (double)(clock() - t0) / CLOCKS_PER_SEC);
        bad += b;
    }
    return bad;
}

#define NCASES(a) (sizeof(a) / sizeof((a)[0]))
/* The "big" cases span many work-groups: 2^20 elements. CLOPT_TEST_SMALL=1 (set by
   ci/oclgrind.sh: a simulated device that checks every memory access runs these kernels
   thousands of times slower than PoCL) shrinks them to 2^13 + 5: 33 work-groups of the
   one-vector tuning (op_level_one_vector, the group that then runs), not a multiple of any
   vector width, so the tail path runs too. */
#define BIG_DEFAULT ((size_t)1 << 20)
static size_t g_big = BIG_DEFAULT;
#define BIG g_big

/* Exactly representable coefficients, so δ_hp = 0 and the tolerance is the tight one. */
#define EXACT_B1 0.875
#define EXACT_B2 0.9990234375 /* 1 - 2^-10 */

static void test_op_sgd(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[10];
    size_t k = 0;
    c[k] = kc_make(CLOPT_SGD, "plain", 1, 3, 11);
    c[k++].aligned = 1;
    c[k] = kc_make(CLOPT_SGD, "plain_wd_special", 4099, 5, 12);
    c[k].hp.weight_decay = 1e-2;
    c[k++].special = SP_ZERO | SP_TINY | SP_HUGE;
    c[k] = kc_make(CLOPT_SGD, "momentum_huge", 1023, 10, 13);
    c[k].hp.momentum = 0.9;
    c[k].special = SP_HUGE | SP_ZERO;
    c[k++].qmode = Q_CTX_EVENTS;
    c[k] = kc_make(CLOPT_SGD, "momentum_dampening", 7, 6, 14);
    c[k].hp.momentum = 0.875;
    c[k++].hp.dampening = 0.25;
    c[k] = kc_make(CLOPT_SGD, "nesterov_wd_zerostep", 4099, 8, 15);
    c[k].hp.momentum = 0.9;
    c[k].hp.nesterov = 1;
    c[k].hp.weight_decay = 1e-3;
    c[k++].special = SP_ZERO_STEP | SP_TINY;
    c[k] = kc_make(CLOPT_SGD, "maximize_momentum_wd", 1023, 4, 16);
    c[k].hp.momentum = 0.5;
    c[k].hp.maximize = 1;
    c[k].hp.weight_decay = 1e-2;
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_SGD, "grad_scale_2^100", 1023, 5, 17);
    c[k].hp.momentum = 0.9;
    c[k].grad_scale = TWO_POW_100;
    c[k++].special = SP_TINY | SP_ZERO;
    c[k] = kc_make(CLOPT_SGD, "nesterov_big_packed", BIG, 3, 18);
    c[k].hp.momentum = 0.9;
    c[k].hp.nesterov = 1;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_SGD, "grad_scale_0.25_ownqueue", 7, 2, 19);
    c[k].grad_scale = 0.25;
    c[k].hp.momentum = 0.9;
    c[k].hp.dampening = 0.5;
    c[k++].qmode = Q_OWN;
    c[k] = kc_make(CLOPT_SGD, "plain_big", BIG, 2, 20);
    c[k++].wrapper = 1;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_adam(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[11];
    size_t k = 0;
    c[k++] = kc_make(CLOPT_ADAM, "default", 1, 20, 21);
    c[k] = kc_make(CLOPT_ADAM, "special_zerostep", 4099, 12, 22);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_ADAM, "amsgrad_sched", 1023, 15, 23);
    c[k].hp.amsgrad = 1;
    c[k++].special = SP_SCHED;
    c[k] = kc_make(CLOPT_ADAM, "maximize_l2", 7, 10, 24);
    c[k].hp.maximize = 1;
    c[k].hp.weight_decay = 1e-2;
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_ADAM, "exact_eps1e-3", 1023, 6, 25);
    c[k].hp.beta1 = EXACT_B1;
    c[k].hp.beta2 = EXACT_B2;
    c[k].hp.eps = 1e-3;
    c[k++].gmag = 1e-3;
    c[k] = kc_make(CLOPT_ADAM, "amsgrad_grad_scale_2^100", 4099, 6, 26);
    c[k].hp.amsgrad = 1;
    c[k].grad_scale = TWO_POW_100;
    c[k].special = SP_TINY | SP_SCHED;
    c[k++].qmode = Q_OWN;
    c[k++] = kc_make(CLOPT_ADAM, "default_big", BIG, 3, 27);
    c[k] = kc_make(CLOPT_ADAM, "l2_packed", 1023, 5, 28);
    c[k].hp.weight_decay = 0.1;
    c[k].packed = 1;
    c[k++].qmode = Q_CTX_EVENTS;
    c[k] = kc_make(CLOPT_ADAM, "amsgrad_maximize_aligned", 4099, 4, 29);
    c[k].hp.amsgrad = 1;
    c[k].hp.maximize = 1;
    c[k++].aligned = 1;
    c[k] = kc_make(CLOPT_ADAM, "single_step_n7", 7, 1, 30);
    c[k++].hp.weight_decay = 0.5;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_adamw(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAMW, "default_special", 4099, 12, 31);
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_ADAMW, "amsgrad_wd0.1_sched", 1023, 15, 32);
    c[k].hp.amsgrad = 1;
    c[k].hp.weight_decay = 0.1;
    c[k].special = SP_SCHED;
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_ADAMW, "maximize", 7, 5, 33);
    c[k++].hp.maximize = 1;
    c[k] = kc_make(CLOPT_ADAMW, "default_big", BIG, 3, 34);
    c[k++].wrapper = 1;
    c[k] = kc_make(CLOPT_ADAMW, "exact_eps1e-3", 1, 8, 35);
    c[k].hp.beta1 = EXACT_B1;
    c[k].hp.beta2 = EXACT_B2;
    c[k].hp.eps = 1e-3;
    c[k++].gmag = 1e-3;
    c[k] = kc_make(CLOPT_ADAMW, "grad_scale_3", 1023, 4, 36);
    c[k++].grad_scale = 3.0;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_adagrad(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[10];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAGRAD, "default_special", 1023, 10, 41);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_ADAGRAD, "lr_decay_init_acc", 4099, 8, 42);
    c[k].hp.lr_decay = 0.1;
    c[k++].hp.initial_accumulator_value = 0.5;
    c[k] = kc_make(CLOPT_ADAGRAD, "l2_maximize", 7, 6, 43);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.maximize = 1;
    c[k] = kc_make(CLOPT_ADAGRAD, "grad_scale_2^100", 1023, 4, 44);
    c[k].grad_scale = TWO_POW_100;
    c[k++].hp.lr_decay = 0.01;
    c[k++] = kc_make(CLOPT_ADAGRAD, "default_big", BIG, 3, 45);
    c[k] = kc_make(CLOPT_ADAGRAD, "n1_init_packed", 1, 20, 46);
    c[k].hp.initial_accumulator_value = 0.1;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_ADAGRAD, "eps_visible_g1e-9", 1023, 5, 47);
    c[k++].gmag = 1e-9;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_adadelta(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[10];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADADELTA, "default_special", 4099, 10, 51);
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_ADADELTA, "l2_maximize_lr0.5", 1023, 8, 52);
    c[k].hp.weight_decay = 1e-2;
    c[k].hp.maximize = 1;
    c[k++].hp.lr = 0.5;
    c[k] = kc_make(CLOPT_ADADELTA, "exact_rho", 1, 20, 53);
    c[k++].hp.rho = EXACT_B1;
    c[k++] = kc_make(CLOPT_ADADELTA, "default_big", BIG, 2, 54);
    c[k] = kc_make(CLOPT_ADADELTA, "grad_scale_2^100", 7, 5, 55);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_ADADELTA, "eps_visible_g1e-3", 1023, 6, 56);
    c[k++].gmag = 1e-3;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_rmsprop(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[12];
    size_t k = 0;
    c[k] = kc_make(CLOPT_RMSPROP, "plain_special", 1023, 10, 61);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_RMSPROP, "momentum", 4099, 10, 62);
    c[k++].hp.momentum = 0.9;
    c[k] = kc_make(CLOPT_RMSPROP, "centered", 7, 12, 63);
    c[k++].hp.centered = 1;
    c[k] = kc_make(CLOPT_RMSPROP, "momentum_centered_l2", 1023, 15, 64);
    c[k].hp.momentum = 0.9;
    c[k].hp.centered = 1;
    c[k].hp.weight_decay = 1e-2;
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_RMSPROP, "maximize_l2", 1, 5, 65);
    c[k].hp.maximize = 1;
    c[k++].hp.weight_decay = 0.1;
    c[k] = kc_make(CLOPT_RMSPROP, "mom_centered_grad_scale_2^100", 1023, 4, 66);
    c[k].hp.momentum = 0.5;
    c[k].hp.centered = 1;
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_RMSPROP, "mom_centered_big", BIG, 3, 67);
    c[k].hp.momentum = 0.9;
    c[k++].hp.centered = 1;
    c[k] = kc_make(CLOPT_RMSPROP, "centered_maximize_exact_packed", 4099, 6, 68);
    c[k].hp.centered = 1;
    c[k].hp.maximize = 1;
    c[k].hp.alpha = 0.96875;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_RMSPROP, "eps_visible_g1e-7_centered", 1023, 6, 69);
    c[k].hp.centered = 1;
    c[k++].gmag = 1e-7;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_adamax(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAMAX, "default_special", 4099, 12, 71);
    c[k++].special = SP_ZERO | SP_TINY | SP_HUGE;
    c[k] = kc_make(CLOPT_ADAMAX, "l2_maximize", 1023, 8, 72);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.maximize = 1;
    c[k] = kc_make(CLOPT_ADAMAX, "n7_sched", 7, 20, 73);
    c[k++].special = SP_SCHED;
    c[k++] = kc_make(CLOPT_ADAMAX, "default_big", BIG, 3, 74);
    c[k] = kc_make(CLOPT_ADAMAX, "grad_scale_0.5", 1, 4, 75);
    c[k++].grad_scale = 0.5;
    c[k] = kc_make(CLOPT_ADAMAX, "eps_visible_g1e-8", 1023, 6, 76);
    c[k++].gmag = 1e-8;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_nadam(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_NADAM, "default_special", 1023, 20, 81);
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_NADAM, "l2_psi0.01", 4099, 8, 82);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.momentum_decay = 0.01;
    c[k++] = kc_make(CLOPT_NADAM, "n1_chain", 1, 25, 83);
    c[k] = kc_make(CLOPT_NADAM, "grad_scale_2^100", 7, 5, 84);
    c[k++].grad_scale = TWO_POW_100;
    c[k++] = kc_make(CLOPT_NADAM, "default_big", BIG, 3, 85);
    c[k] = kc_make(CLOPT_NADAM, "eps_visible_g1e-8", 1023, 6, 86);
    c[k++].gmag = 1e-8;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_radam(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[9];
    size_t k = 0;
    c[k++] = kc_make(CLOPT_RADAM, "default_threshold", 1023, 10, 91);
    c[k] = kc_make(CLOPT_RADAM, "l2_special", 4099, 8, 92);
    c[k].hp.weight_decay = 1e-2;
    c[k++].special = SP_ZERO | SP_TINY;
    c[k] = kc_make(CLOPT_RADAM, "beta2_0.99", 7, 12, 93);
    c[k++].hp.beta2 = 0.99;
    c[k++] = kc_make(CLOPT_RADAM, "default_big", BIG, 6, 94);
    c[k] = kc_make(CLOPT_RADAM, "grad_scale_2^100", 1023, 7, 95);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_RADAM, "eps_visible_g1e-8", 1023, 8, 96);
    c[k++].gmag = 1e-8;
    c[k++] = kc_make(CLOPT_RADAM, "n1_single_step", 1, 1, 97);
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_adamod(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[9];
    size_t k = 0;
    c[k] = kc_make(CLOPT_ADAMOD, "default_special", 1023, 12, 101);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_ADAMOD, "wd_beta3_0.99", 4099, 8, 102);
    c[k].hp.weight_decay = 1e-2;
    c[k++].hp.beta3 = 0.99;
    c[k++] = kc_make(CLOPT_ADAMOD, "n7", 7, 20, 103);
    c[k++] = kc_make(CLOPT_ADAMOD, "default_big", BIG, 3, 104);
    c[k] = kc_make(CLOPT_ADAMOD, "grad_scale_2^100", 1023, 5, 105);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_ADAMOD, "eps_visible_g1e-8", 1023, 6, 106);
    c[k++].gmag = 1e-8;
    c[k++] = kc_make(CLOPT_ADAMOD, "n1_single_step", 1, 1, 107);
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_diffgrad(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[8];
    size_t k = 0;
    c[k] = kc_make(CLOPT_DIFFGRAD, "default_special", 1023, 12, 111);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_DIFFGRAD, "l2", 4099, 6, 112);
    c[k++].hp.weight_decay = 1e-2;
    c[k++] = kc_make(CLOPT_DIFFGRAD, "n1", 1, 20, 113);
    c[k++] = kc_make(CLOPT_DIFFGRAD, "default_big", BIG, 3, 114);
    c[k] = kc_make(CLOPT_DIFFGRAD, "grad_scale_2^100", 7, 5, 115);
    c[k++].grad_scale = TWO_POW_100;
    c[k] = kc_make(CLOPT_DIFFGRAD, "eps_visible_g1e-8", 1023, 6, 116);
    c[k++].gmag = 1e-8;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_lion(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[7];
    size_t k = 0;
    c[k] = kc_make(CLOPT_LION, "wd0.1_special", 1023, 15, 121);
    c[k].hp.weight_decay = 0.1;
    c[k++].special = SP_ZERO | SP_TINY | SP_HUGE | SP_ZERO_STEP;
    c[k++] = kc_make(CLOPT_LION, "default", 4099, 8, 122);
    c[k] = kc_make(CLOPT_LION, "grad_scale_3", 7, 20, 123);
    c[k].grad_scale = 3.0;
    c[k++].hp.weight_decay = 1e-2;
    c[k] = kc_make(CLOPT_LION, "default_big", BIG, 3, 124);
    c[k++].hp.weight_decay = 0.1;
    c[k] = kc_make(CLOPT_LION, "exact_packed", 1023, 6, 125);
    c[k].hp.beta1 = EXACT_B1;
    c[k].hp.beta2 = 0.96875;
    c[k++].packed = 1;
    c[k] = kc_make(CLOPT_LION, "n1_single_step_wd", 1, 1, 126);
    c[k++].hp.weight_decay = 0.5;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

static void test_op_sophia(void **state)
{
    clopt_ctx *ctx = *state;
    kcase c[11];
    size_t k = 0;
    c[k] = kc_make(CLOPT_SOPHIA, "no_hessian_special", 1023, 8, 131);
    c[k++].special = SP_ZERO | SP_TINY | SP_ZERO_STEP;
    c[k] = kc_make(CLOPT_SOPHIA, "hessian_at_2_4_5", 4099, 6, 132);
    c[k++].hess_mask = (1u << 1) | (1u << 3) | (1u << 4);
    c[k] = kc_make(CLOPT_SOPHIA, "maximize_hessian_at_1", 7, 4, 133);
    c[k].hp.maximize = 1;
    c[k++].hess_mask = 1u;
    c[k] = kc_make(CLOPT_SOPHIA, "huge_tiny_hessian_every", 1023, 6, 134);
    c[k].special = SP_HUGE | SP_TINY | SP_ZERO;
    c[k].hess_mask = 0x3Fu;
    c[k++].qmode = Q_OWN;
    c[k] = kc_make(CLOPT_SOPHIA, "hessian_big", BIG, 3, 135);
    c[k++].hess_mask = 1u << 1;
    c[k] = kc_make(CLOPT_SOPHIA, "grad_scale_0.5_hessian_at_3", 1023, 4, 136);
    c[k].grad_scale = 0.5;
    c[k++].hess_mask = 1u << 2;
    c[k] = kc_make(CLOPT_SOPHIA, "small_gamma_packed", 4099, 8, 137);
    c[k].hp.bs = 1.0; /* γh comparable to |m|: the ratio is not always clipped */
    c[k].hp.rho = 0.5;
    c[k].hess_mask = 0x55u;
    c[k].packed = 1;
    c[k++].qmode = Q_CTX_EVENTS;
    c[k] = kc_make(CLOPT_SOPHIA, "eps_visible_g1e-15", 1023, 4, 138);
    c[k++].gmag = 1e-15;
    c[k] = kc_make(CLOPT_SOPHIA, "n1_hessian_at_1_2", 1, 3, 139);
    c[k++].hess_mask = 3u;
    assert_int_equal(run_cases(ctx, c, k), 0);
}

/* The named wrappers must give bit-identical results to clopt_enqueue_step. */
static void test_op_wrappers_identical(void **state)
{
    clopt_ctx *ctx = *state;
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    const clopt_rule rules[3] = {CLOPT_SGD, CLOPT_ADAM, CLOPT_ADAMW};
    const size_t n = 1029;
    for (int r = 0; r < 3; r++) {
        clopt_hparams hp;
        test_hparams(rules[r], &hp);
        hp.momentum = rules[r] == CLOPT_SGD ? 0.9 : 0.0;
        size_t ns = ref_state_count(rules[r], &hp);
        float *out[2];
        for (int w = 0; w < 2; w++) {
            cl_int err;
            cl_mem m = clCreateBuffer(clc, CL_MEM_READ_WRITE, (2 + ns) * n * sizeof(float), NULL, &err);
            assert_int_equal(err, CL_SUCCESS);
            float *h = xmalloc((2 + ns) * n * sizeof(float));
            uint64_t s = 99;
            for (size_t i = 0; i < 2 * n; i++) h[i] = (float)ref_normal(&s);
            for (size_t i = 2 * n; i < (2 + ns) * n; i++) h[i] = 0;
            assert_int_equal(write_region(q, m, 0, (2 + ns) * n, h, 1, NULL), CL_SUCCESS);
            clopt_step_args a;
            clopt_step_args_init(&a);
            a.param.buffer = m;
            a.grad.buffer = m;
            a.grad.offset = n;
            for (size_t k = 0; k < ns; k++) {
                a.state[k].buffer = m;
                a.state[k].offset = (2 + k) * n;
            }
            for (uint64_t t = 1; t <= 3; t++) {
                clopt_status st;
                if (w == 0)
                    st = clopt_enqueue_step(ctx, NULL, rules[r], &hp, &a, n, t, 0, NULL, NULL);
                else if (rules[r] == CLOPT_SGD)
                    st = clopt_enqueue_sgd(ctx, NULL, &hp, &a, n, t, 0, NULL, NULL);
                else if (rules[r] == CLOPT_ADAM)
                    st = clopt_enqueue_adam(ctx, NULL, &hp, &a, n, t, 0, NULL, NULL);
                else
                    st = clopt_enqueue_adamw(ctx, NULL, &hp, &a, n, t, 0, NULL, NULL);
                assert_int_equal(st, CLOPT_SUCCESS);
            }
            assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, (2 + ns) * n * sizeof(float), h,
                                                 0, NULL, NULL),
                             CL_SUCCESS);
            out[w] = h;
            clReleaseMemObject(m);
        }
        if (memcmp(out[0], out[1], (2 + ns) * n * sizeof(float)) != 0) {
            print_error("wrapper of %s differs from clopt_enqueue_step\n", clopt_rule_name(rules[r]));
            fail();
        }
        free(out[0]);
        free(out[1]);
    }
}

/* ================================================================================== */
/* Optimizer level                                                                    */
/* ================================================================================== */

typedef struct ocase {
    const char *label;
    clopt_rule rule;
    clopt_hparams hp;
    size_t n[3];
    size_t nparams;
    unsigned steps;
    unsigned special;
    int change_hp_at;   /* step before which set_hparams changes lr/wd (0 = never) */
    int hess_param0;    /* Sophia: parameter 0 gets a hessian buffer; the others none */
    uint64_t seed;
} ocase;

static ocase oc_make(clopt_rule rule, const char *label, size_t n0, size_t n1, unsigned steps,
                     uint64_t seed)
{
    ocase o;
    memset(&o, 0, sizeof o);
    o.label = label;
    o.rule = rule;
    test_hparams(rule, &o.hp);
    o.n[0] = n0;
    o.n[1] = n1;
    o.nparams = n1 ? 2 : 1;
    o.steps = steps;
    o.seed = seed;
    return o;
}

static int hparams_equal(const clopt_hparams *a, const clopt_hparams *b)
{
    return a->lr == b->lr && a->beta1 == b->beta1 && a->beta2 == b->beta2 &&
           a->beta3 == b->beta3 && a->eps == b->eps && a->weight_decay == b->weight_decay &&
           a->momentum == b->momentum && a->dampening == b->dampening && a->alpha == b->alpha &&
           a->rho == b->rho && a->bs == b->bs && a->lr_decay == b->lr_decay &&
           a->initial_accumulator_value == b->initial_accumulator_value &&
           a->momentum_decay == b->momentum_decay && a->hess_interval == b->hess_interval &&
           a->nesterov == b->nesterov && a->amsgrad == b->amsgrad && a->maximize == b->maximize &&
           a->centered == b->centered;
}

static size_t run_opt_case(clopt_ctx *ctx, const ocase *oc)
{
    const clopt_rule rule = oc->rule;
    clopt_hparams hp = oc->hp;
    const size_t ns = ref_state_count(rule, &hp), np = oc->nparams;
    char label[160];
    snprintf(label, sizeof label, "opt %s/%s T=%u", clopt_rule_name(rule), oc->label, oc->steps);
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    cl_int err;

    /* all parameters in one buffer, all gradients in another, Hessian estimates in a third,
       each at its own (odd) offset */
    size_t poff[3], goff[3], hoff[3], ptot = 3, gtot = 8, htot = 1;
    for (size_t p = 0; p < np; p++) {
        poff[p] = ptot;
        ptot += oc->n[p] + 2 * p + 1;
        goff[p] = gtot;
        gtot += oc->n[p] + 3;
        hoff[p] = htot;
        htot += oc->n[p] + 5;
    }
    ptot += GUARD;
    gtot += GUARD;
    htot += GUARD;
    cl_mem pm = clCreateBuffer(clc, CL_MEM_READ_WRITE, ptot * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem gm = clCreateBuffer(clc, CL_MEM_READ_WRITE, gtot * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem hm = clCreateBuffer(clc, CL_MEM_READ_WRITE, htot * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    float *pinit = xmalloc(ptot * sizeof(float)), *ginit = xmalloc(gtot * sizeof(float));
    float *hinit = xcalloc(htot, sizeof(float));
    for (size_t i = 0; i < ptot; i++) pinit[i] = sentinel(i);
    for (size_t i = 0; i < gtot; i++) ginit[i] = 0.0f;

    gen G[3];
    double *arr[3][1 + CLOPT_MAX_STATE];
    double *st[3][CLOPT_MAX_STATE];
    double *dg[3], *dh[3], *mag[3], mu[3];
    float *graw[3], *hraw[3];
    track tr[3];
    for (size_t p = 0; p < np; p++) {
        size_t n = oc->n[p];
        gen_init(&G[p], oc->seed * 31 + p, n, oc->special, 1.0, 1.0, oc->steps);
        float *th = xmalloc(n * sizeof(float));
        gen_param(&G[p], th, 0.5);
        memcpy(pinit + poff[p], th, n * sizeof(float));
        arr[p][0] = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) arr[p][0][i] = th[i];
        free(th);
        memset(st[p], 0, sizeof st[p]);
        for (size_t k = 0; k < ns; k++) {
            arr[p][1 + k] = st[p][k] = xmalloc(n * sizeof(double));
            double v = (double)(float)ref_state_init(rule, &hp, k);
            for (size_t i = 0; i < n; i++) st[p][k][i] = v;
        }
        dg[p] = xmalloc(n * sizeof(double));
        dh[p] = xmalloc(n * sizeof(double));
        mag[p] = xcalloc(n, sizeof(double));
        graw[p] = xmalloc(n * sizeof(float));
        hraw[p] = xmalloc(n * sizeof(float));
        mu[p] = 1.0;
        track_init(&tr[p], n, 1 + ns, arr[p]);
    }
    assert_int_equal(write_region(q, pm, 0, ptot, pinit, 1, NULL), CL_SUCCESS);
    assert_int_equal(write_region(q, gm, 0, gtot, ginit, 1, NULL), CL_SUCCESS);
    assert_int_equal(write_region(q, hm, 0, htot, hinit, 1, NULL), CL_SUCCESS);

    size_t bad = 0;
    clopt_optimizer *opt = NULL;
    clopt_status s = clopt_optimizer_create(ctx, rule, &hp, &opt);
    if (s != CLOPT_SUCCESS || !opt) {
        print_error("%s: create returned %s (%s)\n", label, clopt_status_name(s),
                    clopt_ctx_last_error(ctx));
        bad++;
        goto cleanup;
    }
    if (clopt_optimizer_rule(opt) != rule) {
        print_error("%s: optimizer_rule mismatch\n", label);
        bad++;
    }
    for (size_t p = 0; p < np; p++) {
        clopt_tensor pt = {pm, poff[p]}, gt = {gm, goff[p]}, ht = {hm, hoff[p]};
        size_t idx = 99;
        const int with_h = rule == CLOPT_SOPHIA && oc->hess_param0 && p == 0;
        s = clopt_optimizer_add_param(opt, pt, gt, oc->n[p], with_h ? &ht : NULL, &idx);
        if (s != CLOPT_SUCCESS || idx != p) {
            print_error("%s: add_param %zu returned %s, index %zu (%s)\n", label, p,
                        clopt_status_name(s), idx, clopt_ctx_last_error(ctx));
            bad++;
            goto cleanup;
        }
    }
    if (clopt_optimizer_param_count(opt) != np) {
        print_error("%s: param_count %zu, expected %zu\n", label, clopt_optimizer_param_count(opt), np);
        bad++;
    }
    {
        size_t expect_bytes = 0;
        for (size_t p = 0; p < np; p++) expect_bytes += oc->n[p] * ns * sizeof(float);
        if (clopt_optimizer_state_bytes(opt) < expect_bytes) {
            print_error("%s: state_bytes %zu < %zu\n", label, clopt_optimizer_state_bytes(opt),
                        expect_bytes);
            bad++;
        }
    }

    for (unsigned t = 1; t <= oc->steps && !bad; t++) {
        if (oc->change_hp_at && (int)t == oc->change_hp_at) {
            hp.lr *= 0.5;
            hp.weight_decay = hp.weight_decay > 0 ? hp.weight_decay * 2 : hp.weight_decay;
            s = clopt_optimizer_set_hparams(opt, &hp);
            clopt_hparams back;
            if (s != CLOPT_SUCCESS ||
                clopt_optimizer_get_hparams(opt, &back) != CLOPT_SUCCESS ||
                !hparams_equal(&back, &hp)) {
                print_error("%s: set_hparams/get_hparams round trip failed (%s)\n", label,
                            clopt_status_name(s));
                bad++;
                break;
            }
        }
        const int hess_now =
            rule == CLOPT_SOPHIA && hp.hess_interval > 0 && t % hp.hess_interval == 0;
        for (size_t p = 0; p < np; p++) {
            gen_grads(&G[p], t, graw[p]);
            if (rule == CLOPT_LION || rule == CLOPT_SOPHIA)
                sign_guard(rule, &hp, 1.0, oc->n[p], graw[p], st[p][0], mag[p]);
            assert_int_equal(write_region(q, gm, goff[p], oc->n[p], graw[p], 1, NULL), CL_SUCCESS);
            if (rule == CLOPT_SOPHIA && oc->hess_param0 && p == 0 && hess_now) {
                gen_hess(&G[p], hraw[p]);
                assert_int_equal(write_region(q, hm, hoff[p], oc->n[p], hraw[p], 1, NULL),
                                 CL_SUCCESS);
            }
        }
        cl_event ev = NULL;
        s = clopt_optimizer_step(opt, &ev);
        if (s != CLOPT_SUCCESS) {
            print_error("%s: step %u returned %s (%s)\n", label, t, clopt_status_name(s),
                        clopt_ctx_last_error(ctx));
            bad++;
            break;
        }
        if (ev) {
            assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
            clReleaseEvent(ev);
        } else {
            print_error("%s: step %u gave no event\n", label, t);
            bad++;
        }
        if (clopt_optimizer_step_count(opt) != t) {
            print_error("%s: step_count %llu after %u steps\n", label,
                        (unsigned long long)clopt_optimizer_step_count(opt), t);
            bad++;
        }
        for (size_t p = 0; p < np; p++) {
            for (size_t i = 0; i < oc->n[p]; i++) dg[p][i] = graw[p][i];
            const int with_h = rule == CLOPT_SOPHIA && oc->hess_param0 && p == 0 && hess_now;
            if (with_h)
                for (size_t i = 0; i < oc->n[p]; i++) dh[p][i] = hraw[p][i];
            track_before(&tr[p], arr[p]);
            ref_step(rule, &hp, t, oc->n[p], arr[p][0], dg[p], st[p], with_h ? dh[p] : NULL,
                     &mu[p], 1.0);
            track_after(&tr[p], arr[p]);
        }
    }
    assert_int_equal(clFinish(q), CL_SUCCESS);

    if (!bad) {
        float *pout = xmalloc(ptot * sizeof(float));
        assert_int_equal(clEnqueueReadBuffer(q, pm, CL_TRUE, 0, ptot * sizeof(float), pout, 0,
                                             NULL, NULL),
                         CL_SUCCESS);
        const double rel = tol_rel(rule, &hp, oc->steps);
        for (size_t p = 0; p < np; p++) {
            size_t n = oc->n[p];
            char l2[200];
            snprintf(l2, sizeof l2, "%s param%zu n=%zu", label, p, n);
            bad += compare_tracked(l2, "param", pout + poff[p], arr[p][0], tr[p].env[0],
                                   tr[p].var[0], n, rel);
            memcpy(pinit + poff[p], pout + poff[p], n * sizeof(float));
            float *sv = xmalloc(n * sizeof(float)), *sv2 = xmalloc(n * sizeof(float));
            for (size_t k = 0; k < ns; k++) {
                s = clopt_optimizer_read_state(opt, p, k, sv, n);
                if (s != CLOPT_SUCCESS) {
                    print_error("%s: read_state(%zu, %zu) returned %s\n", l2, p, k,
                                clopt_status_name(s));
                    bad++;
                    continue;
                }
                bad += compare_tracked(l2, ref_state_name(rule, &hp, k), sv, st[p][k],
                                       tr[p].env[1 + k], tr[p].var[1 + k], n, rel);
                clopt_tensor tt = {NULL, 0};
                s = clopt_optimizer_state(opt, p, k, &tt);
                if (s != CLOPT_SUCCESS || !tt.buffer ||
                    clEnqueueReadBuffer(q, tt.buffer, CL_TRUE, tt.offset * sizeof(float),
                                        n * sizeof(float), sv2, 0, NULL, NULL) != CL_SUCCESS ||
                    memcmp(sv, sv2, n * sizeof(float)) != 0) {
                    print_error("%s: optimizer_state(%zu, %zu) does not match read_state\n", l2,
                                p, k);
                    bad++;
                }
            }
            free(sv);
            free(sv2);
        }
        bad += check_outside(label, "param", pout, pinit, ptot, 0, 0);
        free(pout);
    }

cleanup:
    if (opt) clopt_optimizer_destroy(opt);
    for (size_t p = 0; p < np; p++) {
        for (size_t a = 0; a < 1 + ns; a++) free(arr[p][a]);
        free(dg[p]);
        free(dh[p]);
        free(mag[p]);
        free(graw[p]);
        free(hraw[p]);
        track_free(&tr[p]);
        gen_free(&G[p]);
    }
    free(pinit);
    free(ginit);
    free(hinit);
    clReleaseMemObject(pm);
    clReleaseMemObject(gm);
    clReleaseMemObject(hm);
    if (bad) print_error("%s: FAILED\n", label);
    else if (g_verbose) print_message("%s ok\n", label);
    return bad;
}

static void test_optimizer_all_rules(void **state)
{
    clopt_ctx *ctx = *state;
    ocase c[24];
    size_t k = 0;
    c[k] = oc_make(CLOPT_SGD, "nesterov_wd_sethp", 4099, 7, 8, 201);
    c[k].hp.momentum = 0.9;
    c[k].hp.nesterov = 1;
    c[k].hp.weight_decay = 1e-3;
    c[k++].change_hp_at = 5;
    c[k] = oc_make(CLOPT_SGD, "plain", 1023, 0, 3, 202);
    c[k++].special = SP_ZERO;
    c[k] = oc_make(CLOPT_ADAM, "amsgrad_sethp", 4099, 7, 12, 203);
    c[k].hp.amsgrad = 1;
    c[k].special = SP_SCHED;
    c[k++].change_hp_at = 7;
    c[k++] = oc_make(CLOPT_ADAMW, "default", 1023, 1, 10, 204);
    c[k] = oc_make(CLOPT_ADAGRAD, "lr_decay_init_acc", 4099, 7, 8, 205);
    c[k].hp.lr_decay = 0.05;
    c[k++].hp.initial_accumulator_value = 0.25;
    c[k++] = oc_make(CLOPT_ADADELTA, "default", 1023, 7, 8, 206);
    c[k] = oc_make(CLOPT_RMSPROP, "momentum_centered", 4099, 7, 10, 207);
    c[k].hp.momentum = 0.9;
    c[k++].hp.centered = 1;
    c[k] = oc_make(CLOPT_RMSPROP, "plain_sethp", 1023, 0, 6, 208);
    c[k++].change_hp_at = 4;
    c[k++] = oc_make(CLOPT_ADAMAX, "default", 1023, 7, 8, 209);
    c[k] = oc_make(CLOPT_NADAM, "chain20", 4099, 7, 20, 210);
    c[k++].hp.weight_decay = 1e-3;
    c[k++] = oc_make(CLOPT_RADAM, "threshold", 1023, 7, 9, 211);
    c[k++] = oc_make(CLOPT_ADAMOD, "default", 1023, 7, 10, 212);
    c[k] = oc_make(CLOPT_DIFFGRAD, "l2", 1023, 7, 10, 213);
    c[k++].hp.weight_decay = 1e-2;
    c[k] = oc_make(CLOPT_LION, "wd_sethp", 4099, 7, 10, 214);
    c[k].hp.weight_decay = 0.1;
    c[k++].change_hp_at = 6;
    c[k] = oc_make(CLOPT_SOPHIA, "hess_interval3", 4099, 7, 8, 215);
    c[k].hp.hess_interval = 3;
    c[k].hp.bs = 16; /* make the Hessian term matter */
    c[k++].hess_param0 = 1;
    c[k] = oc_make(CLOPT_SOPHIA, "no_hessian_buffer", 1023, 0, 5, 216);
    c[k++].hp.hess_interval = 2;
    c[k] = oc_make(CLOPT_ADAM, "big", BIG, 0, 2, 217);
    c[k++].special = SP_ZERO | SP_TINY;
    size_t bad = 0;
    for (size_t i = 0; i < k; i++) bad += run_opt_case(ctx, &c[i]);
    assert_int_equal(bad, 0);
}

/* ================================================================================== */
/* RNG and Hessian estimators                                                         */
/* ================================================================================== */

static float *randn_read(clopt_ctx *ctx, size_t n, size_t off, uint64_t seed, uint64_t counter,
                         int *guard_ok)
{
    cl_int err;
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    size_t total = off + n + GUARD;
    cl_mem m = clCreateBuffer(clc, CL_MEM_READ_WRITE, total * sizeof(float), NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    float *init = xmalloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++) init[i] = sentinel(i);
    assert_int_equal(write_region(q, m, 0, total, init, 1, NULL), CL_SUCCESS);
    clopt_tensor out = {m, off};
    clopt_status s = clopt_enqueue_randn(ctx, NULL, out, n, seed, counter, 0, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        print_error("randn returned %s (%s)\n", clopt_status_name(s), clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
    float *all = xmalloc(total * sizeof(float));
    assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, total * sizeof(float), all, 0, NULL, NULL),
                     CL_SUCCESS);
    *guard_ok = check_outside("randn", "out", all, init, total, off, n) == 0;
    float *v = xmalloc(n * sizeof(float));
    memcpy(v, all + off, n * sizeof(float));
    free(all);
    free(init);
    clReleaseMemObject(m);
    return v;
}

static void test_randn(void **state)
{
    clopt_ctx *ctx = *state;
    const size_t n = BIG;
    int g1, g2, g3, g4, g5;
    float *a = randn_read(ctx, n, 3, 1234, 0, &g1);
    float *b = randn_read(ctx, n, 0, 1234, 0, &g2);
    assert_true(g1 && g2);
    assert_memory_equal(a, b, n * sizeof(float)); /* same seed+counter: same bits */

    /* a second, independent context on the same device gives the same bits */
    clopt_ctx *ctx2 = NULL;
    assert_int_equal(clopt_ctx_create(&ctx2), CLOPT_SUCCESS);
    float *c = randn_read(ctx2, n, 5, 1234, 0, &g3);
    clopt_ctx_destroy(ctx2);
    assert_true(g3);
    assert_memory_equal(a, c, n * sizeof(float));

    /* a different seed gives different values */
    float *d = randn_read(ctx, n, 0, 1235, 0, &g4);
    assert_true(g4);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += a[i] == d[i];
    if (same > n / 1000) print_error("randn: %zu of %zu equal values for seeds 1234/1235\n", same, n);
    assert_true(same <= n / 1000);

    /* element i uses counter counter_base + i/4: shifting the counter by 10 shifts by 40 */
    const size_t m = 4099;
    float *e = randn_read(ctx, m, 1, 1234, 10, &g5);
    assert_true(g5);
    if (memcmp(e, a + 40, m * sizeof(float)) != 0) {
        size_t i = 0;
        while (i < m && e[i] == a[40 + i]) i++;
        print_error("randn: counter_base 10 element %zu = %g, counter_base 0 element %zu = %g\n",
                    i, (double)e[i], 40 + i, (double)a[40 + i]);
        fail();
    }

    /* moments over 2^20 draws: mean sd 1/1024, var sd sqrt(2)/1024 */
    double sum = 0, sum2 = 0, sum4 = 0;
    size_t tail = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i];
        assert_true(isfinite(x));
        sum += x;
        sum2 += x * x;
        sum4 += x * x * x * x;
        tail += fabs(x) > 3.0;
    }
    double mean = sum / n, var = sum2 / n - mean * mean, kurt = sum4 / n;
    print_message("randn 2^20: mean %.5f var %.5f E[x^4] %.4f P(|x|>3) %.5f\n", mean, var, kurt,
                  (double)tail / n);
    if (n == ((size_t)1 << 20)) { /* too few draws for these bounds under CLOPT_TEST_SMALL */
        assert_true(fabs(mean) < 5e-3);
        assert_true(fabs(var - 1.0) < 1e-2);
        assert_true(fabs(kurt - 3.0) < 0.06);
        assert_true(fabs((double)tail / n - 0.0026998) < 0.00025);
    }
    /* the four lanes of one counter are not all the same distribution's copies */
    size_t lane_eq = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) lane_eq += a[i] == a[i + 1];
    assert_true(lane_eq < n / 4000);
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

static void test_hutchinson_gnb(void **state)
{
    clopt_ctx *ctx = *state;
    cl_int err;
    cl_context clc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    const size_t sizes[3] = {1, 7, 4099};
    for (int si = 0; si < 3; si++) {
        const size_t n = sizes[si], ou = 1, oh = 2 + n, oo = 5 + 2 * n, total = 9 + 3 * n + GUARD;
        cl_mem m = clCreateBuffer(clc, CL_MEM_READ_WRITE, total * sizeof(float), NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        float *h = xmalloc(total * sizeof(float)), *back = xmalloc(total * sizeof(float));
        for (size_t i = 0; i < total; i++) h[i] = sentinel(i);
        uint64_t s = 777 + si;
        double *u = xmalloc(n * sizeof(double)), *hv = xmalloc(n * sizeof(double));
        double *r = xmalloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            h[ou + i] = (float)ref_normal(&s);
            h[oh + i] = (float)(3.0 * ref_normal(&s));
            if (i % 13 == 5) h[oh + i] = 0.0f;
            u[i] = h[ou + i];
            hv[i] = h[oh + i];
        }
        /* Hutchinson */
        assert_int_equal(write_region(q, m, 0, total, h, 1, NULL), CL_SUCCESS);
        clopt_tensor tu = {m, ou}, th = {m, oh}, to = {m, oo};
        cl_event ev = NULL;
        assert_int_equal(clopt_enqueue_hutchinson(ctx, NULL, tu, th, to, n, 0, NULL, &ev),
                         CLOPT_SUCCESS);
        assert_non_null(ev);
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
        assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, total * sizeof(float), back, 0, NULL, NULL),
                         CL_SUCCESS);
        ref_hutchinson(n, u, hv, r);
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)back[oo + i] - r[i]);
            if (!(d <= 2 * U32 * fabs(r[i]) + 1e-36)) {
                print_error("hutchinson n=%zu [%zu]: %.9g vs %.9g\n", n, i, (double)back[oo + i], r[i]);
                fail();
            }
        }
        memcpy(h + oo, back + oo, n * sizeof(float));
        assert_int_equal(check_outside("hutchinson", "buffer", back, h, total, 0, 0), 0);

        /* GNB: B * ĝ ⊙ ĝ, ĝ at the u slot */
        const double B[2] = {480.0, 3.0};
        for (int bi = 0; bi < 2; bi++) {
            assert_int_equal(clopt_enqueue_gnb(ctx, q, tu, to, n, B[bi], 0, NULL, NULL), CLOPT_SUCCESS);
            assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, total * sizeof(float), back, 0, NULL, NULL),
                             CL_SUCCESS);
            ref_gnb(n, u, B[bi], r);
            for (size_t i = 0; i < n; i++) {
                double d = fabs((double)back[oo + i] - r[i]);
                if (!(d <= 3 * U32 * fabs(r[i]) + 1e-36)) {
                    print_error("gnb B=%g n=%zu [%zu]: %.9g vs %.9g\n", B[bi], n, i,
                                (double)back[oo + i], r[i]);
                    fail();
                }
            }
            memcpy(h + oo, back + oo, n * sizeof(float));
            assert_int_equal(check_outside("gnb", "buffer", back, h, total, 0, 0), 0);
        }
        free(u);
        free(hv);
        free(r);
        free(h);
        free(back);
        clReleaseMemObject(m);
    }
}

/* ================================================================================== */

static int ctx_setup(void **state)
{
    clopt_ctx *ctx = NULL;
    clopt_status s = clopt_ctx_create(&ctx);
    if (s != CLOPT_SUCCESS) {
        print_error("clopt_ctx_create: %s\n", clopt_status_name(s));
        return -1;
    }
    if (g_verbose) print_message("device: %s\n", clopt_ctx_device_name(ctx));
    *state = ctx;
    return 0;
}

/* The same tests on the one-vector-per-work-item form GPUs use (the CPU default loops over
   16 vectors per work-item; kernels/common.cl has both). */
static int ctx_setup_one_vector(void **state)
{
    if (ctx_setup(state))
        return -1;
    const clopt_tuning t = {.vector_width = 4, .work_group_size = 64, .items_per_work_item = 1};
    clopt_status s = clopt_ctx_set_tuning(*state, &t);
    if (s != CLOPT_SUCCESS) {
        print_error("clopt_ctx_set_tuning: %s\n", clopt_status_name(s));
        clopt_ctx_destroy(*state);
        return -1;
    }
    return 0;
}

static int ctx_teardown(void **state)
{
    clopt_ctx_destroy(*state);
    return 0;
}

int main(void)
{
    const char *v = getenv("CLOPT_TEST_VERBOSE");
    g_verbose = v && *v && *v != '0';
    const char *small = getenv("CLOPT_TEST_SMALL");
    if (small && *small && *small != '0')
        g_big = ((size_t)1 << 13) + 5;

    const struct CMUnitTest reference[] = {
        cmocka_unit_test(test_reference_vs_golden),
        cmocka_unit_test(test_state_layout_and_defaults),
    };
    const struct CMUnitTest op[] = {
        cmocka_unit_test(test_op_sgd),      cmocka_unit_test(test_op_adam),
        cmocka_unit_test(test_op_adamw),    cmocka_unit_test(test_op_adagrad),
        cmocka_unit_test(test_op_adadelta), cmocka_unit_test(test_op_rmsprop),
        cmocka_unit_test(test_op_adamax),   cmocka_unit_test(test_op_nadam),
        cmocka_unit_test(test_op_radam),    cmocka_unit_test(test_op_adamod),
        cmocka_unit_test(test_op_diffgrad), cmocka_unit_test(test_op_lion),
        cmocka_unit_test(test_op_sophia),   cmocka_unit_test(test_op_wrappers_identical),
    };
    const struct CMUnitTest opt[] = {
        cmocka_unit_test(test_optimizer_all_rules),
    };
    const struct CMUnitTest rng[] = {
        cmocka_unit_test(test_randn),
        cmocka_unit_test(test_hutchinson_gnb),
    };
    int fails = 0;
    fails += cmocka_run_group_tests_name("reference", reference, NULL, NULL);
    if (g_big == BIG_DEFAULT) /* under CLOPT_TEST_SMALL (Oclgrind) test_golden and test_flat
                                 run the default tuning's form of every rule */
        fails += cmocka_run_group_tests_name("op_level", op, ctx_setup, ctx_teardown);
    fails += cmocka_run_group_tests_name("op_level_one_vector", op, ctx_setup_one_vector,
                                         ctx_teardown);
    fails += cmocka_run_group_tests_name("optimizer_level", opt, ctx_setup, ctx_teardown);
    fails += cmocka_run_group_tests_name("rng_hessian", rng, ctx_setup, ctx_teardown);
    return fails ? 1 : 0;
}
