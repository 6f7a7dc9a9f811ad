/* SPDX-License-Identifier: MIT */
/*
 * golden: storage types of the golden format (tests/data/golden/README.md, "Storage types"):
 * their names and file extensions, the "storage" object of meta.json, file tolerances (the
 * value form {rtol, atol} and the storage form {ulps, mismatch_fraction}) and the comparison
 * of a result with an expected file.
 */
#include "golden_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The format's names; the extensions are clopt_dtype_name's ("f32", "bf16", ...). */
static const struct dtype_row {
    clopt_dtype dtype;
    const char *name;
} dtype_rows[] = {
    {CLOPT_DTYPE_F32, "float32"}, {CLOPT_DTYPE_F16, "float16"}, {CLOPT_DTYPE_BF16, "bfloat16"},
    {CLOPT_DTYPE_U16, "uint16"},  {CLOPT_DTYPE_U8, "uint8"},
};
#define NDTYPES (sizeof dtype_rows / sizeof dtype_rows[0])

const char *golden_dtype_name(clopt_dtype t)
{
    for (size_t i = 0; i < NDTYPES; i++)
        if (dtype_rows[i].dtype == t)
            return dtype_rows[i].name;
    return NULL;
}

const char *golden_dtype_ext(clopt_dtype t) { return clopt_dtype_name(t); }

int golden_dtype_parse(const char *name, clopt_dtype *t)
{
    for (size_t i = 0; name != NULL && i < NDTYPES; i++)
        if (strcmp(dtype_rows[i].name, name) == 0) {
            *t = dtype_rows[i].dtype;
            return 1;
        }
    return 0;
}

int golden_file_dtype(const char *name, clopt_dtype *t, size_t *stem_len)
{
    if (name == NULL || name[0] == '.' || strchr(name, '/') != NULL ||
        strchr(name, '\\') != NULL)
        return 0;
    const char *dot = strrchr(name, '.');
    if (dot == NULL || dot == name)
        return 0;
    for (size_t i = 0; i < NDTYPES; i++)
        if (strcmp(dot + 1, clopt_dtype_name(dtype_rows[i].dtype)) == 0) {
            *t = dtype_rows[i].dtype;
            *stem_len = (size_t)(dot - name);
            return 1;
        }
    return 0;
}

/* ---- the storage object ---------------------------------------------------------------- */

static int is16(clopt_dtype t) { return t == CLOPT_DTYPE_F16 || t == CLOPT_DTYPE_BF16; }
static int is_float(clopt_dtype t) { return t == CLOPT_DTYPE_F32 || is16(t); }

/* "seed": an integer in [0, 2^53] or a string "0x" + 1 to 16 hex digits. */
static int parse_seed(const cJSON *j, uint64_t *out)
{
    if (golden_json_uint(j, out))
        return 1;
    if (!cJSON_IsString(j) || strncmp(j->valuestring, "0x", 2) != 0)
        return 0;
    const char *h = j->valuestring + 2;
    size_t l = strlen(h);
    if (l == 0 || l > 16 || strspn(h, "0123456789abcdefABCDEF") != l)
        return 0;
    *out = (uint64_t)strtoull(h, NULL, 16);
    return 1;
}

/* A dtype-valued key: 1 when absent or valid (then *t), 0 when malformed. */
static int storage_dtype(const cJSON *s, const char *key, clopt_dtype *t)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(s, key);
    if (j == NULL)
        return 1;
    return cJSON_IsString(j) && golden_dtype_parse(j->valuestring, t);
}

golden_verdict golden_parse_storage(const cJSON *s, golden_storage *out, char *reason,
                                    size_t len)
{
    memset(out, 0, sizeof *out);
    out->param = out->grad = out->state = CLOPT_DTYPE_F32;
    out->master = CLOPT_MASTER_NONE;
    out->grad_scale = 1.0;
    if (s == NULL || cJSON_IsNull(s))
        return GOLDEN_PASS;
    if (!cJSON_IsObject(s)) {
        golden_put(reason, len, "\"storage\" is not an object");
        return GOLDEN_FAIL;
    }
    out->present = 1;
    static const char *const keys[] = {"param", "grad", "state", "master",
                                       "stochastic_rounding", "grad_scale"};
    const cJSON *it;
    cJSON_ArrayForEach(it, s)
    {
        size_t k = 0;
        while (k < sizeof keys / sizeof keys[0] && strcmp(keys[k], it->string) != 0)
            k++;
        if (k == sizeof keys / sizeof keys[0]) {
            golden_put(reason, len, "storage key '%s' is not understood", it->string);
            return GOLDEN_UNSUPPORTED;
        }
    }
    if (!storage_dtype(s, "param", &out->param) || !is_float(out->param)) {
        golden_put(reason, len, "storage.param is not \"float32\", \"float16\" or \"bfloat16\"");
        return GOLDEN_FAIL;
    }
    if (!storage_dtype(s, "grad", &out->grad) || !is_float(out->grad)) {
        golden_put(reason, len, "storage.grad is not \"float32\", \"float16\" or \"bfloat16\"");
        return GOLDEN_FAIL;
    }
    if (!storage_dtype(s, "state", &out->state) ||
        (out->state != CLOPT_DTYPE_F32 && out->state != CLOPT_DTYPE_BF16 &&
         out->state != CLOPT_DTYPE_U8)) {
        golden_put(reason, len, "storage.state is not \"float32\", \"bfloat16\" or \"uint8\"");
        return GOLDEN_FAIL;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(s, "master");
    if (m != NULL) {
        const char *v = cJSON_IsString(m) ? m->valuestring : "";
        if (strcmp(v, "none") == 0)
            out->master = CLOPT_MASTER_NONE;
        else if (strcmp(v, "float32") == 0)
            out->master = CLOPT_MASTER_F32;
        else if (strcmp(v, "remainder") == 0)
            out->master = CLOPT_MASTER_REMAINDER;
        else {
            golden_put(reason, len,
                       "storage.master is not \"none\", \"float32\" or \"remainder\"");
            return GOLDEN_FAIL;
        }
    }
    if (out->master != CLOPT_MASTER_NONE && !is16(out->param)) {
        golden_put(reason, len, "storage.master needs a 16-bit storage.param");
        return GOLDEN_FAIL;
    }
    if (out->master == CLOPT_MASTER_REMAINDER && out->param != CLOPT_DTYPE_BF16) {
        golden_put(reason, len, "storage.master \"remainder\" needs storage.param \"bfloat16\"");
        return GOLDEN_FAIL;
    }
    const cJSON *sr = cJSON_GetObjectItemCaseSensitive(s, "stochastic_rounding");
    if (sr != NULL && !cJSON_IsNull(sr) && !cJSON_IsFalse(sr)) {
        const cJSON *seed = cJSON_GetObjectItemCaseSensitive(sr, "seed");
        const cJSON *stream = cJSON_GetObjectItemCaseSensitive(sr, "stream");
        uint64_t st = 0;
        if (!cJSON_IsObject(sr) || !parse_seed(seed, &out->sr_seed) ||
            (stream != NULL && (!golden_json_uint(stream, &st) || st > UINT32_MAX))) {
            golden_put(reason, len, "storage.stochastic_rounding is not {\"seed\": an integer "
                                    "or \"0x\" hex string, \"stream\": an integer < 2^32}");
            return GOLDEN_FAIL;
        }
        if (!is16(out->param) || out->master != CLOPT_MASTER_NONE) {
            golden_put(reason, len, "storage.stochastic_rounding needs a 16-bit storage.param "
                                    "without a master");
            return GOLDEN_FAIL;
        }
        out->stochastic_rounding = 1;
        out->sr_stream = (uint32_t)st;
    }
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(s, "grad_scale");
    if (gs != NULL) {
        if (!cJSON_IsNumber(gs) || !isfinite(gs->valuedouble) || !(gs->valuedouble > 0)) {
            golden_put(reason, len, "storage.grad_scale is not a finite number > 0");
            return GOLDEN_FAIL;
        }
        out->has_grad_scale = 1;
        out->grad_scale = gs->valuedouble;
    }
    return GOLDEN_PASS;
}

/* ---- tolerances ------------------------------------------------------------------------ */

static int number_ge0(const cJSON *j, double *out)
{
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || j->valuedouble < 0)
        return 0;
    *out = j->valuedouble;
    return 1;
}

int golden_parse_tolerance(const cJSON *t, golden_tolerance *out)
{
    memset(out, 0, sizeof *out);
    out->mismatch_fraction = 1.0;
    if (!cJSON_IsObject(t))
        return -1;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(t, "rtol");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(t, "atol");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(t, "ulps");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "mismatch_fraction");
    if (r != NULL || a != NULL) {
        if (!number_ge0(r, &out->rtol) || !number_ge0(a, &out->atol))
            return -1;
        out->has_value = 1;
    }
    if (u != NULL) {
        if (!number_ge0(u, &out->ulps))
            return -1;
        out->has_ulps = 1;
    }
    if (f != NULL && (!number_ge0(f, &out->mismatch_fraction) || out->mismatch_fraction > 1))
        return -1;
    const cJSON *mr = cJSON_GetObjectItemCaseSensitive(t, "mismatch_rtol");
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(t, "mismatch_atol");
    if (mr != NULL || ma != NULL) {
        if (!number_ge0(mr, &out->mismatch_rtol) || !number_ge0(ma, &out->mismatch_atol))
            return -1;
        out->has_mismatch_value = 1;
    }
    return out->has_value || out->has_ulps ? 0 : -1;
}

/* ---- values and distances -------------------------------------------------------------- */

static double half_value(uint16_t h)
{
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0    ? ldexp(m, -24)
                     : e == 31 ? (m ? NAN : INFINITY)
                               : ldexp(1024 + m, e - 25);
    return h >> 15 ? -v : v;
}

double golden_value(const golden_array *a, size_t i)
{
    switch (a->dtype) {
    case CLOPT_DTYPE_F32:
        return ((const float *)a->data)[i];
    case CLOPT_DTYPE_F16:
        return half_value(((const uint16_t *)a->data)[i]);
    case CLOPT_DTYPE_BF16: {
        const uint32_t u = (uint32_t)((const uint16_t *)a->data)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    case CLOPT_DTYPE_U16:
        return ((const uint16_t *)a->data)[i];
    case CLOPT_DTYPE_U8:
        return ((const uint8_t *)a->data)[i];
    }
    return NAN;
}

/* Position of element i in its type's order: floats by their bits (sign and magnitude, so
   adjacent values differ by 1 and +0 = -0), integers by value. */
static int64_t ordinal(const golden_array *a, size_t i)
{
    uint32_t bits, sign;
    switch (a->dtype) {
    case CLOPT_DTYPE_F32:
        memcpy(&bits, (const float *)a->data + i, sizeof bits);
        sign = 0x80000000u;
        break;
    case CLOPT_DTYPE_F16:
    case CLOPT_DTYPE_BF16:
        bits = ((const uint16_t *)a->data)[i];
        sign = 0x8000u;
        break;
    default:
        return (int64_t)golden_value(a, i);
    }
    const int64_t mag = (int64_t)(bits & (sign - 1));
    return bits & sign ? -mag : mag;
}

/* Distance of element i of a and b in ulps; uint16 words (the low halves of float32
   masters, CLOPT_MASTER_REMAINDER) are compared modulo 2^16. */
static double distance(const golden_array *a, const golden_array *b, size_t i)
{
    const int64_t d = ordinal(a, i) - ordinal(b, i);
    const double ad = (double)(d < 0 ? -d : d);
    return a->dtype == CLOPT_DTYPE_U16 ? fmin(ad, 65536.0 - ad) : ad;
}

void golden_compare(const golden_tolerance *tol, const golden_array *expected,
                    const golden_array *got, golden_comparison *out)
{
    memset(out, 0, sizeof *out);
    const int fl = is_float(expected->dtype);
    const size_t n = expected->count;
    out->max_abs = out->max_rel = fl ? 0.0 : -1.0;
    double worst = -1.0;
    for (size_t i = 0; i < n; i++) {
        const double e = golden_value(expected, i), x = golden_value(got, i);
        double ratio = 0.0;
        int ok = 1;
        if (fl && (isnan(e) || isnan(x))) {
            out->any_nan = 1;
            out->mismatches++;
            ratio = INFINITY;
            ok = 0;
        } else {
            const double dist = distance(expected, got, i);
            const double d = x == e ? 0.0 : fabs(x - e);
            if (fl && tol->has_mismatch_value)
                out->mismatches += d > tol->mismatch_atol + tol->mismatch_rtol * fabs(e);
            else
                out->mismatches += dist > 0;
            if (fl) {
                if (d > out->max_abs)
                    out->max_abs = d;
                if (e != 0.0 && d / fabs(e) > out->max_rel)
                    out->max_rel = d / fabs(e);
                if (tol->has_value) {
                    const double t = tol->atol + tol->rtol * fabs(e);
                    ok = ok && d <= t;
                    ratio = fmax(ratio, t > 0 ? d / t : (d > 0 ? INFINITY : 0.0));
                }
            }
            if (tol->has_ulps) {
                ok = ok && dist <= tol->ulps;
                ratio = fmax(ratio, tol->ulps > 0 ? dist / tol->ulps
                                                  : (dist > 0 ? INFINITY : 0.0));
            }
        }
        if (!ok)
            out->bad++;
        if (ratio > worst) {
            worst = ratio;
            out->worst = i;
        }
    }
    out->used = n > 0 ? worst : 0.0;
    out->allowed = (size_t)floor(tol->mismatch_fraction * (double)n);
}
