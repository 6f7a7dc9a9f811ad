/* SPDX-License-Identifier: MIT */
/*
 * test_kernels: every rule's fused kernel, through clopt_enqueue_step (op level) and
 * clopt_optimizer_* (optimizer level), against the double-precision references of
 * tests/ref; the Philox RNG and Sophia's Hessian estimators. The references themselves are
 * first replayed against the golden vectors (tests/data/golden), so the whole chain is
 * anchored to data that nobody here wrote.
 *
 * This file: the golden replay, the layouts and defaults against the reference's, and what
 * the kernel runs share (test_kernels.h): the test data, the tolerance below and the
 * comparisons. The op level is in test_kernels_op.c, the optimizer level in
 * test_kernels_opt.c, the RNG and the Hessian estimators in test_kernels_rng.c (one
 * executable).
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

#include <cmocka.h>

#include "clopt.h"
#include "ref.h"
#include "test_kernels.h"

#ifndef CLOPT_TEST_DATA_DIR
#define CLOPT_TEST_DATA_DIR "tests/data"
#endif

int g_verbose;
size_t g_big = BIG_DEFAULT;

/* ================================================================================== */
/* Small helpers                                                                      */
/* ================================================================================== */

void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    assert_non_null(p);
    return p;
}

float sentinel(size_t i) { return -(float)(4096 + (i % 251)) - 0.25f; }

/* The library's default struct (so fields this test does not know keep their defaults),
   with every field the reference reads set from the reference's own defaults. */
void test_hparams(clopt_rule rule, clopt_hparams *hp)
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

cl_int write_region(cl_command_queue q, cl_mem mem, size_t off, size_t n, const float *src,
                    int blocking, cl_event *ev)
{
    return clEnqueueWriteBuffer(q, mem, blocking ? CL_TRUE : CL_FALSE, off * sizeof(float),
                                n * sizeof(float), src, 0, NULL, ev);
}

size_t check_outside(const char *label, const char *what, const float *dev,
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
              {"eps1", &hp->eps}, /* Adafactor's (HF's eps[0]) */
              {"eps2", &hp->eps2},
              {"clip_threshold", &hp->clip_threshold},
              {"decay_rate", &hp->decay_rate},
              {"lookahead_alpha", &hp->lookahead_alpha},
              {"n_sma_threshold", &hp->n_sma_threshold},
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
              {"scale_parameter", &hp->scale_parameter},
              {"relative_step", &hp->relative_step},
              {"warmup_init", &hp->warmup_init},
              {"bias_correction", &hp->bias_correction},
              {"grad_averaging", &hp->grad_averaging},
              {"amsgrad", &hp->amsgrad},
              {"maximize", &hp->maximize},
              {"centered", &hp->centered}};
    for (size_t i = 0; i < sizeof ik / sizeof ik[0]; i++) {
        double v;
        if (json_number(json_member(hy, hend, ik[i].key), &v)) *ik[i].dst = v != 0;
    }
    double v;
    if (json_number(json_member(hy, hend, "hess_interval"), &v)) hp->hess_interval = (unsigned)v;
    if (json_number(json_member(hy, hend, "lookahead_k"), &v)) hp->lookahead_k = (unsigned)v;
    /* Adafactor's beta1: null (no first moment) or a number (use_beta1) */
    hp->use_beta1 = json_number(json_member(hy, hend, "beta1"), &v) && strstr(meta, "adafactor");
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

/* The references of the rules with per-tensor reductions (ref_adafactor_step, ref_lamb_step,
   ref_ranger_step, which test_drift, test_trajectories and test_reductions trust) against
   their golden cases, as golden_replay does for ref_step: θ after step 1 and T, and every
   state. Adafactor's case is a 48 x 70 matrix (factored), Ranger's a 1-D tensor (GC is a
   no-op there, as the reference assumes). */
static int golden_replay_multipass(const char *name, clopt_rule rule)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/%s/meta.json", CLOPT_TEST_DATA_DIR, name);
    char *meta = read_text(path);
    assert_non_null(meta);
    clopt_hparams hp;
    golden_hparams(meta, &hp);
    size_t n = 0, ng = 0;
    float *p0 = read_f32(name, "param0.f32", &n), *gr = read_f32(name, "grads.f32", &ng);
    assert_non_null(p0);
    assert_non_null(gr);
    assert_true(n > 0 && ng % n == 0);
    const size_t R = rule == CLOPT_ADAFACTOR ? 48 : 0, C = rule == CLOPT_ADAFACTOR ? 70 : 0;
    assert_true(!R || R * C == n);
    const char *names[3];
    size_t len[3], ns = 0;
    if (rule == CLOPT_ADAFACTOR)
        names[0] = "exp_avg_sq_row", len[0] = R, names[1] = "exp_avg_sq_col", len[1] = C, ns = 2;
    else
        names[0] = "exp_avg", names[1] = "exp_avg_sq", len[0] = len[1] = n, ns = 2;
    if (rule == CLOPT_RANGER)
        names[2] = "slow_buffer", len[2] = n, ns = 3;
    double *theta = xmalloc(n * sizeof(double)), *g = xmalloc(n * sizeof(double));
    double *st[CLOPT_MAX_STATE] = {0};
    for (size_t k = 0; k < ns; k++) {
        st[k] = xmalloc(len[k] * sizeof(double));
        for (size_t i = 0; i < len[k]; i++)
            st[k][i] = k == 2 ? (double)p0[i] : 0.0; /* φ starts as θ_0 */
    }
    for (size_t i = 0; i < n; i++) theta[i] = p0[i];
    int bad = 0;
    for (size_t t = 1; t <= ng / n; t++) {
        for (size_t i = 0; i < n; i++) g[i] = gr[(t - 1) * n + i];
        if (rule == CLOPT_ADAFACTOR)
            ref_adafactor_step(&hp, t, 1, R, C, n, theta, g, st, 1.0);
        else if (rule == CLOPT_LAMB)
            ref_lamb_step(&hp, t, n, theta, g, st, 1.0);
        else
            ref_ranger_step(&hp, t, n, theta, g, st, 1.0);
        if (t == 1) bad += golden_compare(name, meta, "param_1.f32", theta, n);
    }
    bad += golden_compare(name, meta, "param_T.f32", theta, n);
    for (size_t k = 0; k < ns; k++) {
        char file[96];
        snprintf(file, sizeof file, "state_%s.f32", names[k]);
        bad += golden_compare(name, meta, file, st[k], len[k]);
    }
    for (size_t k = 0; k < ns; k++) free(st[k]);
    free(theta), free(g), free(p0), free(gr), free(meta);
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
    const struct {
        const char *name;
        clopt_rule rule;
    } mp[] = {{"adafactor", CLOPT_ADAFACTOR}, {"lamb", CLOPT_LAMB}, {"ranger", CLOPT_RANGER}};
    for (size_t c = 0; c < sizeof mp / sizeof mp[0]; c++) {
        int b = golden_replay_multipass(mp[c].name, mp[c].rule);
        if (b) print_error("golden case %s: %d mismatching files\n", mp[c].name, b);
        bad += b;
    }
    assert_int_equal(bad, 0);
}

/* ================================================================================== */
/* Layout and defaults: the library's view vs the reference's                         */
/* ================================================================================== */

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
            if (bpp != expect &&
                !(rule == CLOPT_SOPHIA && (bpp == expect - 4 || bpp == expect + 4))) {
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
    /* past the step where 0.96^(tψ) no longer changes μ (step 92 with ψ 10) the product is
       still the chain's (within the chain's own rounding over 10^5 multiplies); and a huge
       count returns at once (one multiply per step took hours): with ψ 1e19 every μ is β1,
       the product β1^t. (β1 near 1: the products stay normal) */
    hp.beta1 = 0.99999;
    hp.momentum_decay = 10.0;
    P = 1.0;
    for (uint64_t t = 1; t <= 100000; t++)
        P *= ref_nadam_mu(&hp, t);
    assert_true(P > 1e-10);
    assert_true(fabs(clopt_nadam_mu_product(&hp, 100000) - P) <= 1e-10 * P);
    hp.beta1 = 1.0 - 1e-12;
    hp.momentum_decay = 1e19;
    const long double want = expl(1e13L * log1pl((long double)hp.beta1 - 1.0L));
    assert_true(fabsl((long double)clopt_nadam_mu_product(&hp, 10000000000000ull) - want) <=
                1e-9L * want);
    assert_int_equal(bad, 0);
}

/* ================================================================================== */
/* Test data                                                                           */
/* ================================================================================== */

void gen_init(gen *G, uint64_t seed, size_t n, unsigned special, double gmag,
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

void gen_free(gen *G) { free(G->drift); }

void gen_param(gen *G, float *theta, double scale)
{
    for (size_t i = 0; i < G->n; i++) theta[i] = (float)(scale * ref_normal(&G->rng));
}

static int elem_class(size_t i) { return (int)(i % 61); }

/* Raw (device-side) gradient of step t: grad_scale * g, g the effective gradient. */
void gen_grads(gen *G, unsigned t, float *raw)
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

void gen_hess(gen *G, float *h)
{
    for (size_t i = 0; i < G->n; i++)
        h[i] = (float)exp(log(1e-3) + ref_uniform(&G->rng) * log(1e4));
}

/* Lion / Sophia: keep the sign argument c = β1 m + (1-β1) g clear of 0 (see the header).
   m = the reference's current exp_avg; mag = running EMA of |g| (the magnitude scale of m).
   Updates mag with the final gradient. */
size_t sign_guard(clopt_rule rule, const clopt_hparams *hp, double grad_scale, size_t n,
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

void track_init(track *tr, size_t n, size_t na, double *const *arrays)
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

void track_before(track *tr, double *const *arrays)
{
    for (size_t a = 0; a < tr->na; a++) memcpy(tr->prev[a], arrays[a], tr->n * sizeof(double));
}

void track_after(track *tr, double *const *arrays)
{
    for (size_t a = 0; a < tr->na; a++)
        for (size_t i = 0; i < tr->n; i++) {
            double x = arrays[a][i];
            tr->var[a][i] += fabs(x - tr->prev[a][i]);
            if (fabs(x) > tr->env[a][i]) tr->env[a][i] = fabs(x);
        }
}

void track_free(track *tr)
{
    for (size_t a = 0; a < tr->na; a++) {
        free(tr->env[a]);
        free(tr->var[a]);
        free(tr->prev[a]);
    }
}

double tol_rel(clopt_rule rule, const clopt_hparams *hp, unsigned steps)
{
    return (32.0 + 8.0 * steps) * U32 + 2.0 * ref_hparam_coeff_error(rule, hp);
}

/* Number of elements outside tolerance (the first one is printed). */
size_t compare_tracked(const char *label, const char *what, const float *dev,
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
        KERNELS_OP_TESTS,
    };
    const struct CMUnitTest opt[] = {
        KERNELS_OPT_TESTS,
    };
    const struct CMUnitTest rng[] = {
        KERNELS_RNG_TESTS,
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
