/* SPDX-License-Identifier: MIT */
/*
 * gen_storage_cases: writes the golden cases of clopt's storage modes, tests/data/golden_storage
 * (format and rounding rules: tests/data/golden/README.md, "Storage types"):
 *
 *   gen_storage_cases OUTDIR      OUTDIR/<case>/{meta.json, files} and OUTDIR/index.json
 *
 * Each case runs two models of the same storage semantics over the same inputs
 * (gen_storage_model.c): the reference, whose every step is the rule's update in float64 from
 * the stored values, each stored tensor then rounded once from that result to its storage
 * type; and a float32 model (the rule in float32 as clopt's kernels order it), whose distance
 * to the reference sizes the tolerances, as the float32 rerun sizes those of
 * tests/data/golden. Stochastic rounding is reproduced bit for bit. Exit status 0, or 1 when
 * a self-check fails (Philox's known answers, the 8-bit maps against clopt_q8_map, a Lion
 * momentum too close to 0 for its sign to be well defined in float32).
 */
#include "gen_storage.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STEPS 16

#define SPEC(nm, opt, rule, p, g, st, ms, sr, seed, stream, gs, r, c)                          \
    {nm, opt, rule, CLOPT_DTYPE_##p, CLOPT_DTYPE_##g, CLOPT_DTYPE_##st, CLOPT_MASTER_##ms, sr, \
     seed, stream, gs, r, c, STEPS, 0}
#define SR_SEED 0x0123456789ABCDEFull
/* Every storage mode for one rule: 16-bit θ and g without a master (to nearest even), with
   an fp32 master, with a bf16 remainder, fp16 with an fp32 master and a loss scale (AMP),
   stochastic rounding; bf16 state; 8-bit state (over 4096 elements, as clopt keeps smaller
   tensors' state in float32, and not a multiple of 256: the last block holds 4). */
#define RULE_SPECS(pre, rule)                                                                  \
    SPEC(pre "_bf16", pre, rule, BF16, BF16, F32, NONE, 0, 0, 0, 0, 32, 64),                   \
    SPEC(pre "_bf16_master", pre, rule, BF16, BF16, F32, F32, 0, 0, 0, 0, 32, 64),             \
    SPEC(pre "_bf16_remainder", pre, rule, BF16, BF16, F32, REMAINDER, 0, 0, 0, 0, 32, 64),    \
    SPEC(pre "_f16_master_amp", pre, rule, F16, F16, F32, F32, 0, 0, 0, 65536, 32, 64),        \
    SPEC(pre "_bf16_sr", pre, rule, BF16, BF16, F32, NONE, 1, SR_SEED, 0, 0, 32, 64),          \
    SPEC(pre "_state_bf16", pre, rule, F32, F32, BF16, NONE, 0, 0, 0, 0, 32, 64),              \
    SPEC(pre "_state_u8", pre, rule, F32, F32, U8, NONE, 0, 0, 0, 0, 41, 100)

static const spec k_specs[] = {
    RULE_SPECS("adamw", CLOPT_ADAMW),
    RULE_SPECS("sgd_momentum", CLOPT_SGD),
    RULE_SPECS("lion", CLOPT_LION),
    /* float16 stochastic rounding with a loss scale, as the tensor of index 1 (stream 1) */
    SPEC("adamw_f16_sr_amp_stream1", "adamw", CLOPT_ADAMW, F16, F16, F32, NONE, 1,
         0xFEDCBA9876543210ull, 1, 1024, 32, 64),
    /* bf16 θ and g with an fp32 master and 8-bit state together */
    SPEC("adamw_bf16_master_state_u8", "adamw", CLOPT_ADAMW, BF16, BF16, U8, F32, 0, 0, 0, 0,
         41, 100),
};
#define NCASES (sizeof k_specs / sizeof k_specs[0])

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "gen_storage_cases: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* path = a + "/" + b, or exit when it does not fit. */
static void join(char *path, size_t len, const char *a, const char *b)
{
    if ((size_t)snprintf(path, len, "%s/%s", a, b) >= len)
        die("path too long", a);
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (p == NULL)
        die("out of memory", NULL);
    return p;
}

static const char *dtype_name(clopt_dtype t)
{
    static const char *const names[] = {"float32", "float16", "bfloat16", "uint16", "uint8"};
    return names[t];
}

/* ---- files ------------------------------------------------------------------------------ */

/* A file of the case: values as doubles (codes and words as integers), the reference's and,
   for expected files, the float32 model's. */
typedef struct gfile {
    char name[96];
    clopt_dtype dtype;
    int input;
    size_t dims[3], ndim, count;
    double *ref, *f32;
    const char *desc;
    /* tolerance and what the float32 model used of it */
    double rtol, atol, used;
    double mrtol, matol; /* float32 files: the tight tolerance of all but a fraction (or -1) */
    double ulps, mismatch_fraction, max_dist;
    size_t mismatches;
} gfile;

static void write_raw(const char *dir, const gfile *f)
{
    char path[512];
    join(path, sizeof path, dir, f->name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL)
        die("cannot write", path);
    for (size_t i = 0; i < f->count; i++) {
        unsigned char b[4];
        size_t nb;
        const double v = f->ref[i];
        if (f->dtype == CLOPT_DTYPE_F32) {
            const float x = (float)v;
            uint32_t u;
            memcpy(&u, &x, sizeof u);
            b[0] = (unsigned char)u, b[1] = (unsigned char)(u >> 8);
            b[2] = (unsigned char)(u >> 16), b[3] = (unsigned char)(u >> 24), nb = 4;
        } else if (f->dtype == CLOPT_DTYPE_U8) {
            b[0] = (unsigned char)v, nb = 1;
        } else {
            const uint16_t w = f->dtype == CLOPT_DTYPE_U16 ? (uint16_t)v : gen_word16(v, f->dtype);
            b[0] = (unsigned char)w, b[1] = (unsigned char)(w >> 8), nb = 2;
        }
        if (fwrite(b, 1, nb, fp) != nb)
            die("cannot write", path);
    }
    if (fclose(fp) != 0)
        die("cannot write", path);
}

/* Position in the type's order (the loader's: sign and magnitude of the bits). */
static int64_t ordinal(double v, clopt_dtype t)
{
    if (t == CLOPT_DTYPE_U8 || t == CLOPT_DTYPE_U16)
        return (int64_t)v;
    uint32_t bits, sign = 0x8000u;
    if (t == CLOPT_DTYPE_F32) {
        const float x = (float)v;
        memcpy(&bits, &x, sizeof bits);
        sign = 0x80000000u;
    } else {
        bits = gen_word16(v, t);
    }
    const int64_t mag = (int64_t)(bits & (sign - 1));
    return bits & sign ? -mag : mag;
}

/* The smallest rung of 1, 2, 5 x 10^k from `lo` that is >= x (at most 1, or x past 1). */
static double ladder(double x, double lo)
{
    for (double r = lo; r < 1.0; r *= 10)
        for (int k = 1; k <= 5; k += k == 1 ? 1 : 3)
            if (r * k >= x)
                return r * k;
    return fmax(1.0, x);
}

static int cmp_desc(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Tolerances from the float32 model's distance to the reference:
   float32 files: rtol on the ladder from 1e-6 such that the model uses at most 1/10 of
     atol + rtol*|e|, atol = rtol * rms(expected), over every element; where the model's
     errors are a few outliers (values fed by a flipped 16-bit or 8-bit rounding: the rtol
     over all but the largest quarter percent is at most a tenth of that), that rtol gives
     mismatch_rtol and mismatch_atol, with mismatch_fraction 0.01;
   16-bit and 8-bit files: ulps the smallest power of two >= 2x the model's largest distance
     (the model uses at most half), mismatch_fraction on the ladder from 0.01 such that the
     model's mismatches are at most a quarter of it;
   uint16 remainders (low halves of the master): ulps the smallest power of two >= 16 and
     >= 10x the model's largest distance, mismatches not limited. */
static void calibrate(gfile *f)
{
    const size_t n = f->count;
    double rms = 0.0;
    double *ratio = xcalloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++)
        rms += f->ref[i] * f->ref[i];
    rms = sqrt(rms / (double)n);
    f->mismatches = 0;
    f->max_dist = 0.0;
    for (size_t i = 0; i < n; i++) {
        int64_t d = ordinal(f->f32[i], f->dtype) - ordinal(f->ref[i], f->dtype);
        double ad = (double)(d < 0 ? -d : d);
        if (f->dtype == CLOPT_DTYPE_U16)
            ad = fmin(ad, 65536.0 - ad);
        f->mismatches += ad > 0;
        f->max_dist = fmax(f->max_dist, ad);
        ratio[i] = fabs(f->f32[i] - f->ref[i]) / (rms + fabs(f->ref[i]));
    }
    f->ulps = f->mismatch_fraction = f->rtol = f->atol = f->mrtol = f->matol = -1.0;
    if (f->dtype == CLOPT_DTYPE_F32) {
        qsort(ratio, n, sizeof *ratio, cmp_desc);
        const double floor_atol = rms > 0 ? rms : 1e-30;
        f->rtol = ladder(10.0 * ratio[0], 1e-6);
        f->atol = f->rtol * floor_atol;
        f->used = ratio[0] / f->rtol;
        const double tight = ladder(10.0 * ratio[(size_t)(0.0025 * (double)n)], 1e-6);
        if (tight <= f->rtol / 10) {
            f->mrtol = tight;
            f->matol = tight * floor_atol;
            f->mismatch_fraction = 0.01;
            f->mismatches = 0;
            for (size_t i = 0; i < n && ratio[i] > tight; i++)
                f->mismatches++;
        }
        free(ratio);
        return;
    }
    free(ratio);
    const double floor_ulps = f->dtype == CLOPT_DTYPE_U16 ? 16.0 : 1.0;
    const double factor = f->dtype == CLOPT_DTYPE_U16 ? 10.0 : 2.0;
    for (f->ulps = floor_ulps; f->ulps < factor * f->max_dist; f->ulps *= 2)
        ;
    f->used = f->max_dist / f->ulps;
    if (f->dtype != CLOPT_DTYPE_U16)
        f->mismatch_fraction = ladder(4.0 * (double)f->mismatches / (double)n, 0.01);
}

/* ---- meta.json -------------------------------------------------------------------------- */

static const char *master_name(clopt_master m)
{
    return m == CLOPT_MASTER_F32 ? "float32" : m == CLOPT_MASTER_REMAINDER ? "remainder" : "none";
}

static void put_tolerance(FILE *m, const gfile *f)
{
    if (f->dtype == CLOPT_DTYPE_F32 && f->mrtol >= 0)
        fprintf(m, "{\"rtol\": %.3g, \"atol\": %.3g, \"mismatch_rtol\": %.3g, "
                   "\"mismatch_atol\": %.3g, \"mismatch_fraction\": %.3g}",
                f->rtol, f->atol, f->mrtol, f->matol, f->mismatch_fraction);
    else if (f->dtype == CLOPT_DTYPE_F32)
        fprintf(m, "{\"rtol\": %.3g, \"atol\": %.3g}", f->rtol, f->atol);
    else if (f->mismatch_fraction < 0)
        fprintf(m, "{\"ulps\": %.17g}", f->ulps);
    else
        fprintf(m, "{\"ulps\": %.17g, \"mismatch_fraction\": %.3g}", f->ulps,
                f->mismatch_fraction);
}

static void write_meta(const char *dir, const spec *s, const clopt_hparams *hp,
                       const gfile *files, size_t nfiles, double pscale, double gscale,
                       double moved)
{
    char path[512];
    join(path, sizeof path, dir, "meta.json");
    FILE *m = fopen(path, "w");
    if (m == NULL)
        die("cannot write", path);
    fprintf(m, "{\n \"case\": \"%s\",\n \"optimizer\": \"%s\",\n \"hyper\": {\n", s->name,
            s->optimizer);
    fprintf(m, "  \"lr\": %.17g,\n", hp->lr);
    if (s->rule == CLOPT_SGD)
        fprintf(m, "  \"momentum\": %.17g,\n  \"dampening\": 0,\n  \"nesterov\": false,\n",
                hp->momentum);
    else
        fprintf(m, "  \"beta1\": %.17g,\n  \"beta2\": %.17g,\n", hp->beta1, hp->beta2);
    if (s->rule == CLOPT_ADAMW)
        fprintf(m, "  \"eps\": %.17g,\n  \"amsgrad\": false,\n", hp->eps);
    fprintf(m, "  \"weight_decay\": %.17g,\n  \"maximize\": false\n },\n", hp->weight_decay);
    fprintf(m, " \"steps\": %u,\n \"shape\": [%zu, %zu],\n", s->steps, s->rows, s->cols);
    fprintf(m, " \"storage\": {\n  \"param\": \"%s\",\n  \"grad\": \"%s\",\n  \"master\": \"%s\",\n"
               "  \"state\": \"%s\"",
            dtype_name(s->param), dtype_name(s->grad), master_name(s->master),
            dtype_name(s->state));
    if (s->sr)
        fprintf(m, ",\n  \"stochastic_rounding\": {\"seed\": \"0x%016llx\", \"stream\": %u}",
                (unsigned long long)s->sr_seed, s->sr_stream);
    if (s->grad_scale != 0)
        fprintf(m, ",\n  \"grad_scale\": %.17g", s->grad_scale);
    fprintf(m, "\n },\n");
    fprintf(m, " \"reference\": \"tests/ref/gen_storage_cases.c: the rule in float64 (tests/ref "
               "ref_step) from the stored values, each stored tensor rounded once to its "
               "storage type after every step (tests/data/golden/README.md, Storage types)\",\n");
    fprintf(m, " \"equations\": \"%s\",\n", gen_equations(s->rule));
    const gfile *pt = NULL;
    for (size_t i = 0; i < nfiles; i++)
        if (strncmp(files[i].name, "param_T.", 8) == 0)
            pt = &files[i];
    fprintf(m, " \"tolerance\": ");
    put_tolerance(m, pt);
    fprintf(m, ",\n \"tolerance_rule\": \"every element within the value form |x - e| <= atol "
               "+ rtol*|e| and/or at most ulps apart in its type's order; at most "
               "floor(mismatch_fraction * count) elements not identical to the expected value; "
               "each expected file carries its own tolerance, the top-level one is param_T's\",\n");
    fprintf(m, " \"files\": [\n");
    for (size_t i = 0; i < nfiles; i++) {
        const gfile *f = &files[i];
        fprintf(m, "  {\n   \"name\": \"%s\",\n   \"shape\": [", f->name);
        for (size_t d = 0; d < f->ndim; d++)
            fprintf(m, "%s%zu", d ? ", " : "", f->dims[d]);
        fprintf(m, "],\n   \"dtype\": \"%s\",\n   \"role\": \"%s\",\n   \"desc\": \"%s\"",
                dtype_name(f->dtype), f->input ? "input" : "expected", f->desc);
        if (!f->input) {
            fprintf(m, ",\n   \"tolerance\": ");
            put_tolerance(m, f);
            if (f->dtype == CLOPT_DTYPE_F32)
                fprintf(m, ",\n   \"float32_model_fraction_of_tolerance\": %.3g", f->used);
            if (f->mrtol >= 0)
                fprintf(m, ",\n   \"float32_model_mismatches\": %zu", f->mismatches);
            else
                fprintf(m, ",\n   \"float32_model\": {\"max_ulps\": %.17g, \"mismatches\": %zu}",
                        f->max_dist, f->mismatches);
        }
        fprintf(m, "\n  }%s\n", i + 1 < nfiles ? "," : "");
    }
    fprintf(m, " ],\n \"final_scalar_state\": {\n  \"step\": %u\n },\n", s->steps);
    fprintf(m, " \"data\": {\n  \"seed\": %llu,\n  \"generator\": \"tests/ref ref_splitmix64 / "
               "ref_normal (splitmix64, Box-Muller); values rounded to their storage type "
               "(to nearest even) before use\",\n",
            (unsigned long long)s->seed);
    fprintf(m, "  \"param0\": \"normal(0, 1) * %g\",\n", pscale);
    fprintf(m, "  \"grads\": \"grad_scale * %g * (drift + normal(0, 1)), drift = normal(0, 1) * "
               "0.5 fixed per element; stored: the product rounded to the grad type\",\n",
            gscale);
    fprintf(m, "  \"param_T_differs_from_param0\": %.3g,\n", moved);
    fprintf(m, "  \"gradients_independent_of_theta\": true\n },\n");
    fprintf(m, " \"tolerance_calibration\": \"a float32 model (the rule in float32, ordered as "
               "clopt's kernels, with the same storage rounding) was run on the same inputs: "
               "float32 files: rtol = the smallest of 1e-6, 2e-6, 5e-6, ... such that the model "
               "stays within 1/10 of atol + rtol*|e|, atol = rtol * rms(expected file); where "
               "a few elements fed by a flipped 16-bit or 8-bit rounding dominate (the same over "
               "all but the largest 0.25%% is at most rtol/10), that gives mismatch_rtol and "
               "mismatch_atol, with mismatch_fraction 0.01; 16-bit "
               "and 8-bit files: ulps = the smallest power of two >= 2x the model's largest "
               "distance, mismatch_fraction = the smallest of 0.01, 0.02, 0.05, 0.1, ... >= 4x "
               "the model's fraction of differing elements; uint16 remainders: ulps = the "
               "smallest power of two >= 16 and >= 10x the model's distance (modulo 2^16)\"\n}\n");
    if (fclose(m) != 0)
        die("cannot write", path);
}

/* ---- one case ---------------------------------------------------------------------------- */

static gfile *add_file(gfile *files, size_t *nf, const char *stem, clopt_dtype t, int input,
                       size_t count, const char *desc)
{
    gfile *f = &files[(*nf)++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s.%s", stem, clopt_dtype_name(t)); /* "f32", ... */
    f->dtype = t;
    f->input = input;
    f->count = count;
    f->ndim = 1;
    f->dims[0] = count;
    f->desc = desc;
    f->ref = xcalloc(count, sizeof(double));
    f->f32 = xcalloc(count, sizeof(double));
    return f;
}

static void shape2(gfile *f, const spec *s)
{
    f->ndim = 2;
    f->dims[0] = s->rows;
    f->dims[1] = s->cols;
}

static void write_case(const char *root, const spec *s)
{
    const size_t n = s->rows * s->cols, T = s->steps;
    clopt_hparams hp;
    double pscale, gscale;
    gen_hyper(s->rule, &hp);
    gen_scales(s->rule, &pscale, &gscale);
    if (s->grad_scale != 0) {
        gscale = ldexp(gscale, -GEN_AMP_SHIFT);
        if (s->rule == CLOPT_SGD)
            hp.lr = ldexp(hp.lr, GEN_AMP_SHIFT);
    }
    const double gs = s->grad_scale != 0 ? s->grad_scale : 1.0;

    gfile files[16];
    size_t nf = 0;
    gfile *p0 = add_file(files, &nf, "param0", s->param, 1, n, "initial parameters theta_0");
    shape2(p0, s);
    gfile *gr = add_file(files, &nf, "grads", s->grad, 1, T * n,
                         "gradients times grad_scale, step-major: block t-1 (0-based) is used "
                         "at step t");
    gr->ndim = 3, gr->dims[0] = T, gr->dims[1] = s->rows, gr->dims[2] = s->cols;
    uint64_t rs = s->seed;
    double *drift = xcalloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++)
        p0->ref[i] = gen_round(pscale * ref_normal(&rs), s->param);
    for (size_t i = 0; i < n; i++)
        drift[i] = 0.5 * ref_normal(&rs);
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < n; i++)
            gr->ref[t * n + i] = gen_round(gs * gscale * (drift[i] + ref_normal(&rs)), s->grad);
    free(drift);

    model ref, f32;
    gen_model_init(&ref, s, &hp, p0->ref);
    gen_model_init(&f32, s, &hp, p0->ref);
    gfile *p1 = add_file(files, &nf, "param_1", s->param, 0, n, "parameters after step 1");
    shape2(p1, s);
    size_t close = 0;
    for (size_t t = 1; t <= T; t++) {
        close += gen_model_step(&ref, s, &hp, t, gr->ref + (t - 1) * n, 0);
        gen_model_step(&f32, s, &hp, t, gr->ref + (t - 1) * n, 1);
        if (t == 1) {
            memcpy(p1->ref, ref.theta, n * sizeof(double));
            memcpy(p1->f32, f32.theta, n * sizeof(double));
        }
    }
    if (close > 0) {
        fprintf(stderr, "gen_storage_cases: %s: %zu Lion momenta too close to 0 for float32\n",
                s->name, close);
        exit(1);
    }
    gfile *pT = add_file(files, &nf, "param_T", s->param, 0, n, "parameters after step T");
    shape2(pT, s);
    memcpy(pT->ref, ref.theta, n * sizeof(double));
    memcpy(pT->f32, f32.theta, n * sizeof(double));
    size_t moved = 0;
    for (size_t i = 0; i < n; i++)
        moved += pT->ref[i] != p0->ref[i];

    const size_t nb = (n + GEN_QBLOCK - 1) / GEN_QBLOCK;
    for (size_t k = 0; k < ref.nstate; k++) {
        char stem[64];
        snprintf(stem, sizeof stem, "state_%s", ref_state_name(s->rule, &hp, k));
        const int q8 = ref.code[k] != NULL;
        gfile *f = add_file(files, &nf, stem, s->state, 0, n,
                            q8 ? "8-bit codes of the state after step T (value: "
                                 "map[code] * absmax of its block of 256)"
                               : "state after step T");
        shape2(f, s);
        for (size_t i = 0; i < n; i++) {
            f->ref[i] = q8 ? ref.code[k][i] : ref.state[k][i];
            f->f32[i] = q8 ? f32.code[k][i] : f32.state[k][i];
        }
        if (q8) {
            strcat(stem, ".absmax");
            gfile *a = add_file(files, &nf, stem, CLOPT_DTYPE_F32, 0, nb,
                                "float32 absmax of each block of 256 elements after step T");
            for (size_t b = 0; b < nb; b++)
                a->ref[b] = ref.absmax[k][b], a->f32[b] = f32.absmax[k][b];
        }
    }
    if (s->master != CLOPT_MASTER_NONE) {
        const int f32m = s->master == CLOPT_MASTER_F32;
        gfile *f = add_file(files, &nf, f32m ? "state_master" : "state_master_remainder",
                            f32m ? CLOPT_DTYPE_F32 : CLOPT_DTYPE_U16, 0, n,
                            f32m ? "float32 master weights after step T"
                                 : "remainders after step T: master bits = (theta bits << 16) + "
                                   "(int16)r");
        shape2(f, s);
        for (size_t i = 0; i < n; i++) {
            f->ref[i] = f32m ? ref.master[i] : ref.rem[i];
            f->f32[i] = f32m ? f32.master[i] : f32.rem[i];
        }
    }
    gen_model_free(&ref);
    gen_model_free(&f32);

    char dir[512];
    join(dir, sizeof dir, root, s->name);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die("cannot create", dir);
    printf("%-30s", s->name);
    for (size_t i = 0; i < nf; i++) {
        if (!files[i].input) {
            calibrate(&files[i]);
            printf(" %s:%.0f/%zu", files[i].name, files[i].max_dist, files[i].mismatches);
        }
        write_raw(dir, &files[i]);
    }
    printf("  moved %.2f\n", (double)moved / (double)n);
    write_meta(dir, s, &hp, files, nf, pscale, gscale, (double)moved / (double)n);
    for (size_t i = 0; i < nf; i++) {
        free(files[i].ref);
        free(files[i].f32);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_storage_cases OUTDIR\n");
        return 2;
    }
    if (gen_check_philox() != 0 || gen_check_maps() != 0)
        return 1;
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST)
        die("cannot create", argv[1]);
    for (size_t c = 0; c < NCASES; c++) {
        spec s = k_specs[c];
        s.seed = 0x5EED0000u + c;
        write_case(argv[1], &s);
    }
    char path[512];
    join(path, sizeof path, argv[1], "index.json");
    FILE *f = fopen(path, "w");
    if (f == NULL)
        die("cannot write", path);
    fprintf(f, "{\n \"format_version\": 1,\n \"cases\": [\n");
    for (size_t c = 0; c < NCASES; c++)
        fprintf(f, "  \"%s\"%s\n", k_specs[c].name, c + 1 < NCASES ? "," : "");
    fprintf(f, " ]\n}\n");
    if (fclose(f) != 0)
        die("cannot write", path);
    return 0;
}
