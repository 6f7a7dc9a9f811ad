/* SPDX-License-Identifier: MIT */
/*
 * golden: replay one golden-vector case through clopt's optimizer level.
 * See golden.h and tests/data/golden/README.md for the format.
 */
#define _POSIX_C_SOURCE 200809L

#include "golden.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Resource bounds (golden.h): a case is refused, with a message naming the limit, before
   anything larger is allocated, read or replayed. */
#define GOLDEN_MAX_ELEMS GOLDEN_LIMIT_ELEMENTS   /* elements of the parameter */
#define GOLDEN_MAX_STEPS GOLDEN_LIMIT_STEPS      /* steps T */
#define GOLDEN_MAX_FLOATS GOLDEN_LIMIT_FLOATS    /* float32 values of all files of a case */
#define GOLDEN_MAX_FILES GOLDEN_LIMIT_FILES      /* entries of meta.json's files list */
#define GOLDEN_MAX_JSON GOLDEN_LIMIT_JSON_BYTES  /* bytes of meta.json or index.json */
/* Element offsets of the tensors inside their buffers (exercise non-zero offsets), and
   the guard elements after each tensor, which must come back unchanged. */
#define OFF_PARAM 3u
#define OFF_GRAD 5u
#define OFF_HESS 7u
#define GUARD 4u
#define SENTINEL 1234.5f
#define MAX_DIMS 8

/* ------------------------------------------------------------------------------------ */
/* Mapping table: meta.optimizer / meta.hyper -> clopt_rule / clopt_hparams              */
/* ------------------------------------------------------------------------------------ */

/* HK_TRUE: the key must be true (clopt's fixed behaviour); HK_NONE: only null/0 (a feature
   the case leaves off). */
enum hkind { HK_DOUBLE, HK_BOOL, HK_UINT, HK_TRUE, HK_NONE };

enum hkey {
    K_LR, K_BETA1, K_BETA2, K_BETA3, K_EPS, K_WD, K_MOMENTUM, K_DAMPENING, K_NESTEROV,
    K_MAXIMIZE, K_AMSGRAD, K_CENTERED, K_ALPHA, K_RHO, K_BS, K_LR_DECAY, K_IAV,
    K_MOMENTUM_DECAY, K_HESS_INTERVAL, K_EPS1, K_EPS2, K_CLIP_THRESHOLD, K_DECAY_RATE,
    K_SCALE_PARAMETER, K_RELATIVE_STEP, K_WARMUP_INIT, K_BIAS_CORRECTION, K_GRAD_AVERAGING,
    K_USE_GC, K_GC_CONV_ONLY, K_TRUST_RATIO_ALWAYS, K_MAX_GRAD_NORM, K_LOOKAHEAD_K,
    K_LOOKAHEAD_ALPHA, K_N_SMA_THRESHOLD, K_COUNT
};

static const struct hyper_key {
    const char *name;
    enum hkind kind;
    size_t offset;
} hyper_keys[K_COUNT] = {
    [K_LR] = {"lr", HK_DOUBLE, offsetof(clopt_hparams, lr)},
    [K_BETA1] = {"beta1", HK_DOUBLE, offsetof(clopt_hparams, beta1)},
    [K_BETA2] = {"beta2", HK_DOUBLE, offsetof(clopt_hparams, beta2)},
    [K_BETA3] = {"beta3", HK_DOUBLE, offsetof(clopt_hparams, beta3)},
    [K_EPS] = {"eps", HK_DOUBLE, offsetof(clopt_hparams, eps)},
    [K_WD] = {"weight_decay", HK_DOUBLE, offsetof(clopt_hparams, weight_decay)},
    [K_MOMENTUM] = {"momentum", HK_DOUBLE, offsetof(clopt_hparams, momentum)},
    [K_DAMPENING] = {"dampening", HK_DOUBLE, offsetof(clopt_hparams, dampening)},
    [K_NESTEROV] = {"nesterov", HK_BOOL, offsetof(clopt_hparams, nesterov)},
    [K_MAXIMIZE] = {"maximize", HK_BOOL, offsetof(clopt_hparams, maximize)},
    [K_AMSGRAD] = {"amsgrad", HK_BOOL, offsetof(clopt_hparams, amsgrad)},
    [K_CENTERED] = {"centered", HK_BOOL, offsetof(clopt_hparams, centered)},
    [K_ALPHA] = {"alpha", HK_DOUBLE, offsetof(clopt_hparams, alpha)},
    [K_RHO] = {"rho", HK_DOUBLE, offsetof(clopt_hparams, rho)},
    [K_BS] = {"bs", HK_DOUBLE, offsetof(clopt_hparams, bs)},
    [K_LR_DECAY] = {"lr_decay", HK_DOUBLE, offsetof(clopt_hparams, lr_decay)},
    [K_IAV] = {"initial_accumulator_value", HK_DOUBLE,
               offsetof(clopt_hparams, initial_accumulator_value)},
    [K_MOMENTUM_DECAY] = {"momentum_decay", HK_DOUBLE, offsetof(clopt_hparams, momentum_decay)},
    [K_HESS_INTERVAL] = {"hess_interval", HK_UINT, offsetof(clopt_hparams, hess_interval)},
    [K_EPS1] = {"eps1", HK_DOUBLE, offsetof(clopt_hparams, eps)},
    [K_EPS2] = {"eps2", HK_DOUBLE, offsetof(clopt_hparams, eps2)},
    [K_CLIP_THRESHOLD] = {"clip_threshold", HK_DOUBLE, offsetof(clopt_hparams, clip_threshold)},
    [K_DECAY_RATE] = {"decay_rate", HK_DOUBLE, offsetof(clopt_hparams, decay_rate)},
    [K_SCALE_PARAMETER] = {"scale_parameter", HK_BOOL, offsetof(clopt_hparams, scale_parameter)},
    [K_RELATIVE_STEP] = {"relative_step", HK_BOOL, offsetof(clopt_hparams, relative_step)},
    [K_WARMUP_INIT] = {"warmup_init", HK_BOOL, offsetof(clopt_hparams, warmup_init)},
    [K_BIAS_CORRECTION] = {"bias_correction", HK_BOOL, offsetof(clopt_hparams, bias_correction)},
    [K_GRAD_AVERAGING] = {"grad_averaging", HK_BOOL, offsetof(clopt_hparams, grad_averaging)},
    [K_USE_GC] = {"use_gc", HK_BOOL, offsetof(clopt_hparams, grad_centralization)},
    [K_GC_CONV_ONLY] = {"gc_conv_only", HK_BOOL, offsetof(clopt_hparams, gc_conv_only)},
    /* clopt's LAMB always applies the trust ratio: only true is honoured */
    [K_TRUST_RATIO_ALWAYS] = {"trust_ratio_always", HK_TRUE, 0},
    /* LAMB without built-in clipping: only null (or 0) is honoured */
    [K_MAX_GRAD_NORM] = {"max_grad_norm", HK_NONE, 0},
    [K_LOOKAHEAD_K] = {"lookahead_k", HK_UINT, offsetof(clopt_hparams, lookahead_k)},
    [K_LOOKAHEAD_ALPHA] = {"lookahead_alpha", HK_DOUBLE, offsetof(clopt_hparams, lookahead_alpha)},
    [K_N_SMA_THRESHOLD] = {"n_sma_threshold", HK_DOUBLE, offsetof(clopt_hparams, n_sma_threshold)},
};

#define B(k) (1ull << (k))
#define KEYS_COMMON (B(K_LR) | B(K_WD) | B(K_MAXIMIZE))
#define KEYS_ADAMLIKE (KEYS_COMMON | B(K_BETA1) | B(K_BETA2) | B(K_EPS))
#define KEYS_SGD (KEYS_COMMON | B(K_MOMENTUM) | B(K_DAMPENING) | B(K_NESTEROV))
#define KEYS_ADAM (KEYS_ADAMLIKE | B(K_AMSGRAD))
#define KEYS_ADAGRAD (KEYS_COMMON | B(K_LR_DECAY) | B(K_IAV) | B(K_EPS))
#define KEYS_ADADELTA (KEYS_COMMON | B(K_RHO) | B(K_EPS))
#define KEYS_RMSPROP (KEYS_COMMON | B(K_ALPHA) | B(K_EPS) | B(K_MOMENTUM) | B(K_CENTERED))
#define KEYS_NADAM (KEYS_ADAMLIKE | B(K_MOMENTUM_DECAY))
#define KEYS_ADAMOD (KEYS_ADAMLIKE | B(K_BETA3))
#define KEYS_LION (KEYS_COMMON | B(K_BETA1) | B(K_BETA2))
#define KEYS_SOPHIA (KEYS_ADAMLIKE | B(K_RHO) | B(K_BS) | B(K_HESS_INTERVAL))
#define KEYS_ADAFACTOR                                                                      \
    (KEYS_COMMON | B(K_BETA1) | B(K_EPS1) | B(K_EPS2) | B(K_CLIP_THRESHOLD) | B(K_DECAY_RATE) | \
     B(K_SCALE_PARAMETER) | B(K_RELATIVE_STEP) | B(K_WARMUP_INIT))
#define KEYS_LOOKAHEAD (B(K_LOOKAHEAD_K) | B(K_LOOKAHEAD_ALPHA))
#define KEYS_RANGER                                                                         \
    (KEYS_ADAMLIKE | KEYS_LOOKAHEAD | B(K_N_SMA_THRESHOLD) | B(K_USE_GC) | B(K_GC_CONV_ONLY))
#define KEYS_LAMB                                                                           \
    (KEYS_ADAMLIKE | B(K_BIAS_CORRECTION) | B(K_GRAD_AVERAGING) | B(K_TRUST_RATIO_ALWAYS) |   \
     B(K_MAX_GRAD_NORM))

/* One row per golden optimizer id. keys: the hyper keys the rule honours (a known key
   outside the set is accepted only with a neutral value: false or 0). variant: the only
   accepted value of hyper.variant (NULL: the key is not accepted). gc: the id implies
   gradient centralization. New rules slot in as new rows. */
static const struct rule_map {
    const char *optimizer;
    clopt_rule rule;
    unsigned long long keys;
    const char *variant;
    int gc;
} rule_map[] = {
    {"sgd", CLOPT_SGD, KEYS_SGD, NULL, 0},
    {"sgd_momentum", CLOPT_SGD, KEYS_SGD, NULL, 0},
    {"sgd_nesterov", CLOPT_SGD, KEYS_SGD, NULL, 0},
    {"adam", CLOPT_ADAM, KEYS_ADAM, NULL, 0},
    {"adam_l2", CLOPT_ADAM, KEYS_ADAM, NULL, 0},
    {"amsgrad", CLOPT_ADAM, KEYS_ADAM, NULL, 0},
    {"adamw", CLOPT_ADAMW, KEYS_ADAM, NULL, 0},
    {"adagrad", CLOPT_ADAGRAD, KEYS_ADAGRAD, NULL, 0},
    {"adadelta", CLOPT_ADADELTA, KEYS_ADADELTA, NULL, 0},
    {"rmsprop", CLOPT_RMSPROP, KEYS_RMSPROP, NULL, 0},
    {"rmsprop_centered", CLOPT_RMSPROP, KEYS_RMSPROP, NULL, 0},
    {"adamax", CLOPT_ADAMAX, KEYS_ADAMLIKE, NULL, 0},
    {"nadam", CLOPT_NADAM, KEYS_NADAM, "dozat", 0},
    {"radam", CLOPT_RADAM, KEYS_ADAMLIKE, NULL, 0},
    {"adamod", CLOPT_ADAMOD, KEYS_ADAMOD, NULL, 0},
    {"diffgrad", CLOPT_DIFFGRAD, KEYS_ADAMLIKE, NULL, 0},
    {"lion", CLOPT_LION, KEYS_LION, NULL, 0},
    {"sophia", CLOPT_SOPHIA, KEYS_SOPHIA, NULL, 0},
    {"adafactor", CLOPT_ADAFACTOR, KEYS_ADAFACTOR, NULL, 0},
    {"lamb", CLOPT_LAMB, KEYS_LAMB, NULL, 0},
    {"adam_gc", CLOPT_ADAM, KEYS_ADAM | B(K_GC_CONV_ONLY), NULL, 1},
    {"lookahead_adam", CLOPT_ADAM, KEYS_ADAM | KEYS_LOOKAHEAD, NULL, 0},
    {"ranger", CLOPT_RANGER, KEYS_RANGER, NULL, 0},
};
#define RULE_MAP_COUNT (sizeof(rule_map) / sizeof(rule_map[0]))

static const struct rule_map *find_rule_map(const char *optimizer)
{
    if (optimizer == NULL)
        return NULL;
    for (size_t i = 0; i < RULE_MAP_COUNT; i++)
        if (strcmp(rule_map[i].optimizer, optimizer) == 0)
            return &rule_map[i];
    return NULL;
}

int golden_optimizer_supported(const char *optimizer, clopt_rule *rule)
{
    const struct rule_map *m = find_rule_map(optimizer);
    if (m == NULL)
        return 0;
    if (rule != NULL)
        *rule = m->rule;
    return 1;
}

size_t golden_optimizer_count(void) { return RULE_MAP_COUNT; }

const char *golden_optimizer_name(size_t i)
{
    return i < RULE_MAP_COUNT ? rule_map[i].optimizer : NULL;
}

const char *golden_verdict_str(golden_verdict v)
{
    switch (v) {
    case GOLDEN_PASS: return "PASS";
    case GOLDEN_FAIL: return "FAIL";
    case GOLDEN_UNSUPPORTED: return "UNSUPPORTED";
    }
    return "?";
}

static void put(char *buf, size_t len, const char *fmt, ...)
{
    if (buf == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* A JSON number that is an integer in [0, 2^53]. */
static int json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0.0 || v > 9007199254740992.0 || v != floor(v))
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static int json_neutral(const cJSON *item)
{
    return cJSON_IsFalse(item) || cJSON_IsNull(item) ||
           (cJSON_IsNumber(item) && item->valuedouble == 0.0);
}

golden_verdict golden_map_hyper(const char *optimizer, const cJSON *hyper, clopt_rule *rule,
                                clopt_hparams *hp, char *reason, size_t len)
{
    const struct rule_map *m = find_rule_map(optimizer);
    if (m == NULL) {
        put(reason, len, "optimizer '%s' is not implemented by clopt",
            optimizer ? optimizer : "(null)");
        return GOLDEN_UNSUPPORTED;
    }
    clopt_hparams h;
    clopt_status st = clopt_hparams_default(m->rule, &h);
    if (st != CLOPT_SUCCESS) {
        put(reason, len, "clopt_hparams_default(%s): %s", clopt_rule_name(m->rule),
            clopt_status_name(st));
        return st == CLOPT_ERR_UNSUPPORTED ? GOLDEN_UNSUPPORTED : GOLDEN_FAIL;
    }
    h.grad_centralization = m->gc;
    if (hyper != NULL && !cJSON_IsNull(hyper)) {
        if (!cJSON_IsObject(hyper)) {
            put(reason, len, "'hyper' is not an object");
            return GOLDEN_FAIL;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, hyper)
        {
            const char *key = it->string ? it->string : "";
            if (strcmp(key, "variant") == 0) {
                if (!cJSON_IsString(it)) {
                    put(reason, len, "hyper.variant is not a string");
                    return GOLDEN_FAIL;
                }
                if (m->variant == NULL || strcmp(m->variant, it->valuestring) != 0) {
                    put(reason, len, "%s variant '%s' is not implemented by clopt%s%s%s",
                        optimizer, it->valuestring, m->variant ? " (it follows '" : "",
                        m->variant ? m->variant : "", m->variant ? "')" : "");
                    return GOLDEN_UNSUPPORTED;
                }
                continue;
            }
            int k = -1;
            for (int i = 0; i < K_COUNT; i++)
                if (strcmp(hyper_keys[i].name, key) == 0)
                    k = i;
            if (k < 0) {
                put(reason, len, "hyper key '%s' of %s is not honoured by clopt", key,
                    optimizer);
                return GOLDEN_UNSUPPORTED;
            }
            if (!(m->keys & B(k))) {
                if (json_neutral(it))
                    continue;
                put(reason, len, "hyper.%s is not honoured by clopt rule %s", key,
                    clopt_rule_name(m->rule));
                return GOLDEN_UNSUPPORTED;
            }
            /* Adafactor: beta1 null = no first moment; lr null = relative step size. */
            if (m->rule == CLOPT_ADAFACTOR && k == K_BETA1) {
                h.use_beta1 = !cJSON_IsNull(it);
                if (cJSON_IsNull(it))
                    continue;
            }
            if (m->rule == CLOPT_ADAFACTOR && k == K_LR && cJSON_IsNull(it))
                continue;
            if (hyper_keys[k].kind == HK_NONE) {
                if (json_neutral(it))
                    continue;
                put(reason, len, "hyper.%s is not honoured by clopt rule %s", key,
                    clopt_rule_name(m->rule));
                return GOLDEN_UNSUPPORTED;
            }
            if (hyper_keys[k].kind == HK_TRUE) {
                if (cJSON_IsTrue(it))
                    continue;
                put(reason, len, "hyper.%s must be true for clopt rule %s", key,
                    clopt_rule_name(m->rule));
                return GOLDEN_UNSUPPORTED;
            }
            if (cJSON_IsNull(it)) {
                put(reason, len, "hyper.%s = null is not supported by clopt", key);
                return GOLDEN_UNSUPPORTED;
            }
            char *field = (char *)&h + hyper_keys[k].offset;
            switch (hyper_keys[k].kind) {
            case HK_DOUBLE:
                if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
                    put(reason, len, "hyper.%s is not a number", key);
                    return GOLDEN_FAIL;
                }
                *(double *)(void *)field = it->valuedouble;
                break;
            case HK_BOOL:
                if (cJSON_IsBool(it)) {
                    *(int *)(void *)field = cJSON_IsTrue(it) ? 1 : 0;
                } else if (cJSON_IsNumber(it) &&
                           (it->valuedouble == 0.0 || it->valuedouble == 1.0)) {
                    *(int *)(void *)field = it->valuedouble != 0.0;
                } else {
                    put(reason, len, "hyper.%s is not a boolean", key);
                    return GOLDEN_FAIL;
                }
                break;
            case HK_TRUE:
            case HK_NONE:
                break;
            case HK_UINT: {
                uint64_t u;
                if (!json_uint(it, &u) || u > 0xFFFFFFFFu) {
                    put(reason, len, "hyper.%s is not a non-negative integer", key);
                    return GOLDEN_FAIL;
                }
                *(unsigned *)(void *)field = (unsigned)u;
                break;
            }
            }
        }
    }
    const char *why = NULL;
    st = clopt_hparams_validate(m->rule, &h, &why);
    if (st != CLOPT_SUCCESS) {
        put(reason, len, "clopt rejects the hyperparameters of %s: %s (%s)", optimizer,
            why ? why : "", clopt_status_name(st));
        return GOLDEN_UNSUPPORTED;
    }
    if (rule != NULL)
        *rule = m->rule;
    if (hp != NULL)
        *hp = h;
    return GOLDEN_PASS;
}

/* ------------------------------------------------------------------------------------ */
/* Files and paths                                                                       */
/* ------------------------------------------------------------------------------------ */

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    while (la > 1 && a[la - 1] == '/')
        la--;
    char *p = malloc(la + 1 + lb + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Opens path for reading without blocking (a FIFO or device opens at once) and requires a
   regular file; *size receives its size. Returns the descriptor, or -1 with the reason. */
static int open_regular(const char *path, off_t *size, char *reason, size_t len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        put(reason, len, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        put(reason, len, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    *size = sb.st_size;
    return fd;
}

/* Reads exactly n bytes (fewer: the file shrank, an error). Returns 0 or -1. */
static int read_exactly(int fd, void *buf, size_t n, const char *path, char *reason,
                        size_t len)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k > 0) {
            got += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else {
            put(reason, len, "cannot read %s: %s", path,
                k < 0 ? strerror(errno) : "shorter than its size");
            return -1;
        }
    }
    return 0;
}

/* Read a whole regular file of at most `max` bytes (its size checked before anything is
   read). Returns 0, or -1 with the reason naming path. The buffer gets a terminating NUL
   byte (not counted in *size). */
static int read_all(const char *path, size_t max, char **data, size_t *size, char *reason,
                    size_t len)
{
    *data = NULL;
    *size = 0;
    off_t fsize;
    int fd = open_regular(path, &fsize, reason, len);
    if (fd < 0)
        return -1;
    if (fsize < 0 || (uintmax_t)fsize > (uintmax_t)max) {
        put(reason, len, "%s is too large (%jd bytes, at most %zu)", path, (intmax_t)fsize,
            max);
        close(fd);
        return -1;
    }
    size_t n = (size_t)fsize;
    char *buf = malloc(n + 1);
    if (buf == NULL) {
        put(reason, len, "out of memory reading %s", path);
        close(fd);
        return -1;
    }
    if (read_exactly(fd, buf, n, path, reason, len) != 0) {
        free(buf);
        close(fd);
        return -1;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return 0;
}

static cJSON *read_json(const char *path, char *reason, size_t len)
{
    char *text;
    size_t size;
    if (read_all(path, GOLDEN_MAX_JSON, &text, &size, reason, len) != 0)
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, size, &end, 0);
    if (j == NULL) {
        size_t at = (end != NULL && end >= text && end <= text + size) ? (size_t)(end - text)
                                                                       : 0;
        put(reason, len, "bad JSON in %s (near byte %zu)", path, at);
    }
    free(text);
    return j;
}

/* Load n little-endian float32 values; the file's size (checked before reading) must be
   exactly n*4 bytes. */
static float *load_f32(const char *path, size_t n, char *reason, size_t len)
{
    off_t fsize;
    int fd = open_regular(path, &fsize, reason, len);
    if (fd < 0)
        return NULL;
    if (fsize < 0 || (uintmax_t)fsize != (uintmax_t)n * 4) {
        put(reason, len, "%s holds %jd bytes, expected %zu (%zu float32 values)", path,
            (intmax_t)fsize, n * 4, n);
        close(fd);
        return NULL;
    }
    float *v = malloc((n ? n : 1) * sizeof(float));
    if (v == NULL) {
        put(reason, len, "out of memory loading %s", path);
        close(fd);
        return NULL;
    }
    if (read_exactly(fd, v, n * 4, path, reason, len) != 0) {
        free(v);
        close(fd);
        return NULL;
    }
    close(fd);
    unsigned char *b = (unsigned char *)v;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&v[i], &u, sizeof u);
    }
    return v;
}

/* ------------------------------------------------------------------------------------ */
/* Case list                                                                             */
/* ------------------------------------------------------------------------------------ */

int golden_is_case_dir(const char *dir)
{
    char *p = path_join(dir, "meta.json");
    int r = p != NULL && file_exists(p);
    free(p);
    return r;
}

void golden_case_list_free(golden_case_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->count; i++)
        free(list->dirs[i]);
    free(list->dirs);
    list->dirs = NULL;
    list->count = 0;
}

static int list_push(golden_case_list *l, size_t *cap, char *dir)
{
    if (dir == NULL)
        return -1;
    if (l->count == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        char **nd = realloc(l->dirs, nc * sizeof(char *));
        if (nd == NULL) {
            free(dir);
            return -1;
        }
        l->dirs = nd;
        *cap = nc;
    }
    l->dirs[l->count++] = dir;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int golden_list_cases(const char *dir, golden_case_list *out, char *reason, size_t len)
{
    put(reason, len, "%s", "");
    out->count = 0;
    out->dirs = NULL;
    size_t cap = 0;
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        put(reason, len, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        put(reason, len, "%s is not a directory", dir);
        return -1;
    }
    if (golden_is_case_dir(dir)) {
        char *d = strdup(dir);
        if (list_push(out, &cap, d) != 0)
            goto oom;
        return 0;
    }
    char *index = path_join(dir, "index.json");
    if (index == NULL)
        goto oom;
    if (file_exists(index)) {
        cJSON *j = read_json(index, reason, len);
        if (j == NULL) {
            free(index);
            return -1;
        }
        const cJSON *cases = cJSON_GetObjectItemCaseSensitive(j, "cases");
        if (!cJSON_IsArray(cases)) {
            put(reason, len, "%s: no \"cases\" array", index);
            cJSON_Delete(j);
            free(index);
            return -1;
        }
        const cJSON *c;
        cJSON_ArrayForEach(c, cases)
        {
            if (!cJSON_IsString(c) || c->valuestring[0] == '\0') {
                put(reason, len, "%s: \"cases\" holds a non-string or empty entry", index);
                cJSON_Delete(j);
                free(index);
                golden_case_list_free(out);
                return -1;
            }
            if (list_push(out, &cap, path_join(dir, c->valuestring)) != 0) {
                cJSON_Delete(j);
                free(index);
                goto oom;
            }
        }
        cJSON_Delete(j);
        if (out->count == 0) {
            put(reason, len, "%s lists no cases", index);
            free(index);
            return -1;
        }
        free(index);
        return 0;
    }
    free(index);
    DIR *d = opendir(dir);
    if (d == NULL) {
        put(reason, len, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *sub = path_join(dir, e->d_name);
        if (sub == NULL) {
            closedir(d);
            goto oom;
        }
        if (stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode) && golden_is_case_dir(sub)) {
            if (list_push(out, &cap, sub) != 0) {
                closedir(d);
                goto oom;
            }
        } else {
            free(sub);
        }
    }
    closedir(d);
    if (out->count == 0) {
        put(reason, len, "%s holds no meta.json, index.json or case subdirectory", dir);
        return -1;
    }
    qsort(out->dirs, out->count, sizeof(char *), cmp_str);
    return 0;
oom:
    golden_case_list_free(out);
    put(reason, len, "out of memory listing %s", dir);
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* One case                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct expected_file {
    char *name;    /* "param_T.f32" */
    char *path;
    float *data;   /* count values */
    size_t count;
    double rtol, atol;
} expected_file;

typedef struct gcase {
    const char *dir;
    char *meta_path;
    cJSON *meta;
    clopt_rule rule;
    clopt_hparams hp;
    size_t ndim;
    uint64_t shape[MAX_DIMS];
    size_t n;              /* elements of the parameter */
    size_t steps;          /* T */
    float *param0, *grads, *hess;
    size_t hess_blocks;    /* K */
    expected_file *exp;
    size_t nexp;
    int has_final_step;
    uint64_t final_step;
    int has_mu_product;
    double mu_product;
} gcase;

typedef struct runner {
    golden_result *res;
    size_t more;           /* problems beyond the first one reported */
    int any_nan;
} runner;

static void fail(runner *r, const char *fmt, ...)
{
    r->res->verdict = GOLDEN_FAIL;
    if (r->res->reason[0] != '\0') {
        r->more++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->res->reason, sizeof r->res->reason, fmt, ap);
    va_end(ap);
}

static void unsupported(runner *r, const char *fmt, ...)
{
    if (r->res->verdict == GOLDEN_FAIL)
        return; /* a malformed case stays FAIL */
    r->res->verdict = GOLDEN_UNSUPPORTED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->res->reason, sizeof r->res->reason, fmt, ap);
    va_end(ap);
}

static void gcase_free(gcase *c)
{
    free(c->meta_path);
    cJSON_Delete(c->meta);
    free(c->param0);
    free(c->grads);
    free(c->hess);
    for (size_t i = 0; i < c->nexp; i++) {
        free(c->exp[i].name);
        free(c->exp[i].path);
        free(c->exp[i].data);
    }
    free(c->exp);
}

static void shape_str(char *buf, size_t len, const uint64_t *s, size_t nd)
{
    size_t pos = 0;
    buf[0] = '\0';
    pos += (size_t)snprintf(buf + pos, len - pos, "[");
    for (size_t i = 0; i < nd && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%llu", i ? ", " : "",
                                (unsigned long long)s[i]);
    if (pos < len)
        snprintf(buf + pos, len - pos, "]");
}

/* Parse a JSON shape (array of 1 to maxdims positive integers, at most GOLDEN_MAX_FLOATS
   elements in all). Returns 0 or -1. */
static int parse_shape(const cJSON *a, size_t maxdims, uint64_t *shape, size_t *ndim,
                       size_t *count)
{
    if (!cJSON_IsArray(a))
        return -1;
    size_t nd = 0;
    size_t n = 1;
    const cJSON *d;
    cJSON_ArrayForEach(d, a)
    {
        uint64_t v;
        if (nd >= maxdims || !json_uint(d, &v) || v == 0)
            return -1;
        if (v > GOLDEN_MAX_FLOATS || n > GOLDEN_MAX_FLOATS / v)
            return -1;
        n *= (size_t)v;
        shape[nd++] = v;
    }
    if (nd == 0)
        return -1;
    *ndim = nd;
    *count = n;
    return 0;
}

static int parse_tolerance(const cJSON *t, double *rtol, double *atol)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(t, "rtol");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(t, "atol");
    if (!cJSON_IsObject(t) || !cJSON_IsNumber(r) || !cJSON_IsNumber(a) ||
        !isfinite(r->valuedouble) || !isfinite(a->valuedouble) || r->valuedouble < 0 ||
        a->valuedouble < 0)
        return -1;
    *rtol = r->valuedouble;
    *atol = a->valuedouble;
    return 0;
}

static int name_ok(const char *s)
{
    size_t l = strlen(s);
    return l > 4 && strcmp(s + l - 4, ".f32") == 0 && strchr(s, '/') == NULL &&
           strchr(s, '\\') == NULL && s[0] != '.';
}

/* Parse meta.json and load every file. Returns 0 when the case can be replayed; on
   failure the verdict (FAIL / UNSUPPORTED) and reason are set. */
static int load_case(runner *r, gcase *c)
{
    char why[GOLDEN_REASON_MAX];
    golden_result *res = r->res;

    c->meta_path = path_join(c->dir, "meta.json");
    if (c->meta_path == NULL) {
        fail(r, "out of memory");
        return -1;
    }
    c->meta = read_json(c->meta_path, why, sizeof why);
    if (c->meta == NULL) {
        fail(r, "%s", why);
        return -1;
    }
    const char *mp = c->meta_path;
    if (!cJSON_IsObject(c->meta)) {
        fail(r, "%s: not a JSON object", mp);
        return -1;
    }
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(c->meta, "optimizer");
    if (!cJSON_IsString(opt)) {
        fail(r, "%s: no string \"optimizer\"", mp);
        return -1;
    }
    snprintf(res->optimizer, sizeof res->optimizer, "%s", opt->valuestring);

    golden_verdict v = golden_map_hyper(opt->valuestring,
                                        cJSON_GetObjectItemCaseSensitive(c->meta, "hyper"),
                                        &c->rule, &c->hp, why, sizeof why);
    if (v == GOLDEN_UNSUPPORTED) {
        unsupported(r, "%s", why);
        return -1;
    }
    if (v == GOLDEN_FAIL) {
        fail(r, "%s: %s", mp, why);
        return -1;
    }
    const int sophia = c->rule == CLOPT_SOPHIA;

    uint64_t steps;
    if (!json_uint(cJSON_GetObjectItemCaseSensitive(c->meta, "steps"), &steps) || steps == 0) {
        fail(r, "%s: \"steps\" is not a positive integer", mp);
        return -1;
    }
    if (steps > GOLDEN_MAX_STEPS) {
        fail(r, "%s: %llu steps, more than the limit of %llu", mp, (unsigned long long)steps,
             (unsigned long long)GOLDEN_MAX_STEPS);
        return -1;
    }
    c->steps = (size_t)steps;
    if (parse_shape(cJSON_GetObjectItemCaseSensitive(c->meta, "shape"), MAX_DIMS, c->shape,
                    &c->ndim, &c->n) != 0) {
        fail(r, "%s: \"shape\" is not a list of 1 to %d positive integers (or too large)", mp,
             MAX_DIMS);
        return -1;
    }
    if (c->n > GOLDEN_MAX_ELEMS) {
        fail(r, "%s: %zu elements, more than the limit of %zu per tensor", mp, c->n,
             (size_t)GOLDEN_MAX_ELEMS);
        return -1;
    }
    if (c->n > GOLDEN_MAX_FLOATS / c->steps) {
        fail(r, "%s: steps * elements = %llu gradient values, more than the limit of %zu", mp,
             (unsigned long long)c->steps * c->n, (size_t)GOLDEN_MAX_FLOATS);
        return -1;
    }

    /* Sophia's Hessian schedule: block j after step (j+1)*hess_interval. */
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(c->meta, "hess_update_after_steps");
    if (hs != NULL) {
        if (!sophia) {
            unsupported(r, "hess_update_after_steps given for %s: only sophia takes "
                           "Hessian estimates", res->optimizer);
            return -1;
        }
        if (!cJSON_IsArray(hs)) {
            fail(r, "%s: \"hess_update_after_steps\" is not a list", mp);
            return -1;
        }
        size_t j = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, hs)
        {
            uint64_t t;
            if (!json_uint(s, &t)) {
                fail(r, "%s: hess_update_after_steps[%zu] is not an integer", mp, j);
                return -1;
            }
            if (t != (uint64_t)(j + 1) * c->hp.hess_interval || t > c->steps) {
                unsupported(r, "hess_update_after_steps[%zu] = %llu: clopt consumes the "
                               "Hessian after every hess_interval-th step (%u) up to T = %zu",
                            j, (unsigned long long)t, c->hp.hess_interval, c->steps);
                return -1;
            }
            j++;
        }
        if (j != c->steps / c->hp.hess_interval) {
            unsupported(r, "hess_update_after_steps has %zu entries; clopt consumes an "
                           "estimate after each of the %zu multiples of %u up to T",
                        j, c->steps / c->hp.hess_interval, c->hp.hess_interval);
            return -1;
        }
        c->hess_blocks = j;
    }

    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(c->meta, "final_scalar_state");
    if (fs != NULL) {
        if (!cJSON_IsObject(fs)) {
            fail(r, "%s: \"final_scalar_state\" is not an object", mp);
            return -1;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(fs, "step");
        if (st != NULL) {
            if (!json_uint(st, &c->final_step)) {
                fail(r, "%s: final_scalar_state.step is not an integer", mp);
                return -1;
            }
            c->has_final_step = 1;
        }
        const cJSON *mu = cJSON_GetObjectItemCaseSensitive(fs, "mu_product");
        if (mu != NULL && c->rule == CLOPT_NADAM) {
            if (!cJSON_IsNumber(mu)) {
                fail(r, "%s: final_scalar_state.mu_product is not a number", mp);
                return -1;
            }
            c->has_mu_product = 1;
            c->mu_product = mu->valuedouble;
        }
    }

    double top_rtol = 0, top_atol = 0;
    const cJSON *tt = cJSON_GetObjectItemCaseSensitive(c->meta, "tolerance");
    int has_top_tol = tt != NULL && parse_tolerance(tt, &top_rtol, &top_atol) == 0;
    if (tt != NULL && !has_top_tol) {
        fail(r, "%s: \"tolerance\" is not {rtol, atol} with finite values >= 0", mp);
        return -1;
    }

    const cJSON *files = cJSON_GetObjectItemCaseSensitive(c->meta, "files");
    if (!cJSON_IsArray(files)) {
        fail(r, "%s: no \"files\" list", mp);
        return -1;
    }
    int nfiles = cJSON_GetArraySize(files);
    if (nfiles > GOLDEN_MAX_FILES) {
        fail(r, "%s: %d entries in files, more than the limit of %d", mp, nfiles,
             GOLDEN_MAX_FILES);
        return -1;
    }
    c->exp = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(expected_file));
    /* The listed names, sorted: duplicates are neighbours, and the folder's files are looked
       up by binary search (n log n, not n^2). */
    const char **listed = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(char *));
    if (c->exp == NULL || listed == NULL) {
        free(listed);
        fail(r, "out of memory");
        return -1;
    }
    size_t nlisted = 0;
    {
        const cJSON *g;
        cJSON_ArrayForEach(g, files)
        {
            const cJSON *gn = cJSON_GetObjectItemCaseSensitive(g, "name");
            if (cJSON_IsString(gn))
                listed[nlisted++] = gn->valuestring;
        }
        qsort(listed, nlisted, sizeof *listed, cmp_str);
        for (size_t k = 1; k < nlisted; k++)
            if (strcmp(listed[k - 1], listed[k]) == 0) {
                fail(r, "%s: %s is listed twice in files", mp, listed[k]);
                free(listed);
                return -1;
            }
    }
    size_t floats = 0; /* float32 values loaded so far */
    int have_param1 = 0, have_paramT = 0;
    size_t idx = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, files)
    {
        size_t i = idx++;
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *jr = cJSON_GetObjectItemCaseSensitive(f, "role");
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(f, "dtype");
        if (!cJSON_IsObject(f) || !cJSON_IsString(jn) || !name_ok(jn->valuestring)) {
            fail(r, "%s: files[%zu] has no valid \"name\" (a plain *.f32 file name)", mp, i);
            continue;
        }
        const char *name = jn->valuestring;
        if (!cJSON_IsString(jr) || (strcmp(jr->valuestring, "input") != 0 &&
                                    strcmp(jr->valuestring, "expected") != 0)) {
            fail(r, "%s: %s has no \"role\" input/expected", mp, name);
            continue;
        }
        if (jd != NULL && (!cJSON_IsString(jd) || strcmp(jd->valuestring, "float32") != 0)) {
            fail(r, "%s: %s has a dtype other than float32", mp, name);
            continue;
        }
        const int input = strcmp(jr->valuestring, "input") == 0;
        /* The shape this file must have, by name. */
        uint64_t want[MAX_DIMS + 1];
        size_t wnd = 0;
        float **dst = NULL;
        if (strcmp(name, "param0.f32") == 0 || strcmp(name, "param_1.f32") == 0 ||
            strcmp(name, "param_T.f32") == 0 || strncmp(name, "state_", 6) == 0) {
            int want_input = strcmp(name, "param0.f32") == 0;
            if (input != want_input) {
                fail(r, "%s: %s should have role \"%s\"", mp, name,
                     want_input ? "input" : "expected");
                continue;
            }
            memcpy(want, c->shape, c->ndim * sizeof(uint64_t));
            wnd = c->ndim;
            if (want_input)
                dst = &c->param0;
        } else if (strcmp(name, "grads.f32") == 0 || strcmp(name, "hess.f32") == 0) {
            int is_hess = name[0] == 'h';
            if (!input) {
                fail(r, "%s: %s should have role \"input\"", mp, name);
                continue;
            }
            if (is_hess && !sophia) {
                unsupported(r, "input %s given for %s: only sophia takes Hessian estimates",
                            name, res->optimizer);
                free(listed);
                return -1;
            }
            if (is_hess && hs == NULL) {
                fail(r, "%s: %s given without \"hess_update_after_steps\"", mp, name);
                continue;
            }
            want[0] = is_hess ? c->hess_blocks : c->steps;
            memcpy(want + 1, c->shape, c->ndim * sizeof(uint64_t));
            wnd = c->ndim + 1;
            dst = is_hess ? &c->hess : &c->grads;
        } else {
            fail(r, "%s: unknown %s file %s", mp, input ? "input" : "expected", name);
            continue;
        }
        uint64_t got[MAX_DIMS + 1];
        size_t gnd = 0, gn = 0;
        int shape_ok = parse_shape(cJSON_GetObjectItemCaseSensitive(f, "shape"), MAX_DIMS + 1,
                                   got, &gnd, &gn) == 0;
        /* A state file has the parameter's shape, except the factored statistics of
           Adafactor (vectors, at most as long as the parameter); a vector's length is then
           checked against the optimizer's state. */
        if (shape_ok && strncmp(name, "state_", 6) == 0 && gnd == 1 && gn <= c->n) {
            memcpy(want, got, gnd * sizeof(uint64_t));
            wnd = gnd;
        }
        if (!shape_ok || gnd != wnd || memcmp(got, want, wnd * sizeof(uint64_t)) != 0) {
            char ws[128], gs[128];
            shape_str(ws, sizeof ws, want, wnd);
            if (shape_ok)
                shape_str(gs, sizeof gs, got, gnd);
            else
                snprintf(gs, sizeof gs, "(invalid)");
            fail(r, "%s: shape %s of %s in files, expected %s", mp, gs, name, ws);
            continue;
        }
        size_t count = gn; /* the file's shape is the wanted one */
        if (count > GOLDEN_MAX_FLOATS - floats) {
            fail(r, "%s: the files hold more than the limit of %zu float32 values in all", mp,
                 (size_t)GOLDEN_MAX_FLOATS);
            free(listed);
            return -1;
        }
        floats += count;
        char *path = path_join(c->dir, name);
        if (path == NULL) {
            fail(r, "out of memory");
            free(listed);
            return -1;
        }
        float *data = load_f32(path, count, why, sizeof why);
        if (data == NULL) {
            fail(r, "%s", why);
            free(path);
            continue;
        }
        if (dst != NULL) {
            *dst = data;
            free(path);
            continue;
        }
        expected_file *e = &c->exp[c->nexp];
        e->data = data;
        e->count = count;
        e->path = path;
        e->name = strdup(name);
        c->nexp++;
        if (e->name == NULL) {
            fail(r, "out of memory");
            free(listed);
            return -1;
        }
        const cJSON *tol = cJSON_GetObjectItemCaseSensitive(f, "tolerance");
        if (tol != NULL) {
            if (parse_tolerance(tol, &e->rtol, &e->atol) != 0) {
                fail(r, "%s: tolerance of %s is not {rtol, atol} with finite values >= 0", mp,
                     name);
                continue;
            }
        } else if (has_top_tol) {
            e->rtol = top_rtol;
            e->atol = top_atol;
        } else {
            fail(r, "%s: no tolerance for %s", mp, name);
            continue;
        }
        if (strcmp(name, "param_1.f32") == 0)
            have_param1 = 1;
        if (strcmp(name, "param_T.f32") == 0)
            have_paramT = 1;
    }
    if (res->verdict != GOLDEN_PASS) {
        free(listed);
        return -1;
    }
    /* Required files. */
    const char *missing = c->param0 == NULL   ? "param0.f32"
                          : c->grads == NULL  ? "grads.f32"
                          : !have_param1      ? "param_1.f32"
                          : !have_paramT      ? "param_T.f32"
                          : (sophia && c->hess_blocks > 0 && c->hess == NULL) ? "hess.f32"
                                                                             : NULL;
    if (missing != NULL) {
        fail(r, "%s: files does not list %s", mp, missing);
        free(listed);
        return -1;
    }
    /* Every .f32 file of the directory must be listed (an unlisted expected file would
       otherwise go unchecked). */
    DIR *d = opendir(c->dir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!name_ok(de->d_name))
                continue;
            const char *key = de->d_name;
            if (bsearch(&key, listed, nlisted, sizeof *listed, cmp_str) == NULL)
                fail(r, "%s/%s is not listed in meta.json files", c->dir, de->d_name);
        }
        closedir(d);
    }
    free(listed);
    return res->verdict == GOLDEN_PASS ? 0 : -1;
}

/* Compare n values with an expected file; updates the result's error maxima. */
static void compare(runner *r, const expected_file *e, const float *x, size_t n)
{
    golden_result *res = r->res;
    size_t bad = 0, worst = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < n; i++) {
        double xv = x[i], ev = e->data[i];
        double d = fabs(xv - ev);
        double tol = e->atol + e->rtol * fabs(ev);
        double ratio;
        if (isnan(d)) {
            r->any_nan = 1;
            ratio = INFINITY;
        } else {
            if (d > res->max_abs_err)
                res->max_abs_err = d;
            if (ev != 0.0 && d / fabs(ev) > res->max_rel_err)
                res->max_rel_err = d / fabs(ev);
            ratio = tol > 0 ? d / tol : (d > 0 ? INFINITY : 0.0);
        }
        if (!(d <= tol))
            bad++;
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    res->files_compared++;
    if (bad > 0) {
        res->files_failed++;
        fail(r, "%s: %zu of %zu values out of tolerance; worst [%zu] got %.9g expected %.9g "
                "(|diff| %.3g > atol %.3g + rtol %.3g*|e|)",
             e->path, bad, n, worst, (double)x[worst], (double)e->data[worst],
             fabs((double)x[worst] - (double)e->data[worst]), e->atol, e->rtol);
    }
}

static const expected_file *find_expected(const gcase *c, const char *name)
{
    for (size_t i = 0; i < c->nexp; i++)
        if (strcmp(c->exp[i].name, name) == 0)
            return &c->exp[i];
    return NULL;
}

static void cl_fail(runner *r, clopt_ctx *ctx, const char *what, cl_int err)
{
    fail(r, "%s failed: %s", what,
         clopt_status_name((clopt_status)(CLOPT_ERR_OPENCL_BASE + err)));
    (void)ctx;
}

static void clopt_fail(runner *r, clopt_ctx *ctx, const char *what, clopt_status st)
{
    const char *detail = clopt_ctx_last_error(ctx);
    if (st == CLOPT_ERR_UNSUPPORTED && r->res->verdict == GOLDEN_PASS) {
        unsupported(r, "%s: %s%s%s", what, clopt_status_name(st), detail[0] ? ": " : "",
                    detail);
        return;
    }
    fail(r, "%s: %s%s%s", what, clopt_status_name(st), detail[0] ? ": " : "", detail);
}

/* Create a buffer of off + n + GUARD floats holding SENTINEL around the data. */
static cl_mem make_buffer(runner *r, clopt_ctx *ctx, size_t off, size_t n, const float *data,
                          float *scratch)
{
    cl_int err;
    size_t total = off + n + GUARD;
    cl_mem m = clCreateBuffer(clopt_ctx_cl_context(ctx), CL_MEM_READ_WRITE,
                              total * sizeof(float), NULL, &err);
    if (m == NULL || err != CL_SUCCESS) {
        cl_fail(r, ctx, "clCreateBuffer", err);
        return NULL;
    }
    for (size_t i = 0; i < total; i++)
        scratch[i] = SENTINEL;
    if (data != NULL)
        memcpy(scratch + off, data, n * sizeof(float));
    else
        memset(scratch + off, 0, n * sizeof(float));
    err = clEnqueueWriteBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0, total * sizeof(float),
                               scratch, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        cl_fail(r, ctx, "clEnqueueWriteBuffer", err);
        clReleaseMemObject(m);
        return NULL;
    }
    return m;
}

/* Read back a whole buffer; check the guard elements and return the tensor part. */
static int read_back(runner *r, clopt_ctx *ctx, cl_mem m, size_t off, size_t n, float *scratch,
                     const char *what)
{
    size_t total = off + n + GUARD;
    cl_int err = clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), m, CL_TRUE, 0,
                                     total * sizeof(float), scratch, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        cl_fail(r, ctx, "clEnqueueReadBuffer", err);
        return -1;
    }
    for (size_t i = 0; i < total; i++) {
        if (i == off)
            i = off + n;
        if (i < total && scratch[i] != SENTINEL) {
            fail(r, "%s buffer: element %zu outside the tensor (offset %zu, %zu elements) was "
                    "overwritten",
                 what, i, off, n);
            return -1;
        }
    }
    return 0;
}

static void replay(runner *r, clopt_ctx *ctx, gcase *c)
{
    const size_t n = c->n;
    const int sophia = c->rule == CLOPT_SOPHIA;
    const int use_hess = sophia && c->hess_blocks > 0;
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    clopt_optimizer *opt = NULL;
    cl_mem pbuf = NULL, gbuf = NULL, hbuf = NULL;
    float *scratch = malloc((n + 16 + GUARD) * sizeof(float));
    float *state = malloc(n * sizeof(float));
    if (scratch == NULL || state == NULL) {
        fail(r, "out of memory");
        goto done;
    }
    pbuf = make_buffer(r, ctx, OFF_PARAM, n, c->param0, scratch);
    if (pbuf == NULL)
        goto done;
    gbuf = make_buffer(r, ctx, OFF_GRAD, n, NULL, scratch);
    if (gbuf == NULL)
        goto done;
    if (use_hess) {
        hbuf = make_buffer(r, ctx, OFF_HESS, n, NULL, scratch);
        if (hbuf == NULL)
            goto done;
    }

    clopt_status st = clopt_optimizer_create(ctx, c->rule, &c->hp, &opt);
    if (st != CLOPT_SUCCESS) {
        opt = NULL;
        clopt_fail(r, ctx, "clopt_optimizer_create", st);
        goto done;
    }
    clopt_param_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.param = (clopt_tensor){pbuf, OFF_PARAM};
    desc.grad = (clopt_tensor){gbuf, OFF_GRAD};
    if (use_hess)
        desc.hessian = (clopt_tensor){hbuf, OFF_HESS};
    desc.ndim = c->ndim;
    for (size_t d = 0; d < c->ndim; d++)
        desc.shape[d] = (size_t)c->shape[d];
    size_t index = (size_t)-1;
    st = clopt_optimizer_add_param_desc(opt, 0, &desc, &index);
    if (st != CLOPT_SUCCESS) {
        clopt_fail(r, ctx, "clopt_optimizer_add_param_desc", st);
        goto done;
    }
    if (index != 0) {
        fail(r, "clopt_optimizer_add_param returned index %zu for the first tensor", index);
        goto done;
    }

    for (size_t t = 1; t <= c->steps; t++) {
        cl_int err = clEnqueueWriteBuffer(q, gbuf, CL_TRUE, OFF_GRAD * sizeof(float),
                                          n * sizeof(float), c->grads + (t - 1) * n, 0, NULL,
                                          NULL);
        if (err != CL_SUCCESS) {
            cl_fail(r, ctx, "clEnqueueWriteBuffer (grad)", err);
            goto done;
        }
        if (use_hess && t % c->hp.hess_interval == 0) {
            size_t j = t / c->hp.hess_interval - 1;
            if (j < c->hess_blocks) {
                err = clEnqueueWriteBuffer(q, hbuf, CL_TRUE, OFF_HESS * sizeof(float),
                                           n * sizeof(float), c->hess + j * n, 0, NULL, NULL);
                if (err != CL_SUCCESS) {
                    cl_fail(r, ctx, "clEnqueueWriteBuffer (hess)", err);
                    goto done;
                }
            }
        }
        st = clopt_optimizer_step(opt, NULL);
        if (st != CLOPT_SUCCESS) {
            char what[64];
            snprintf(what, sizeof what, "clopt_optimizer_step (step %zu)", t);
            clopt_fail(r, ctx, what, st);
            goto done;
        }
        if (t == 1) {
            if (read_back(r, ctx, pbuf, OFF_PARAM, n, scratch, "param") != 0)
                goto done;
            compare(r, find_expected(c, "param_1.f32"), scratch + OFF_PARAM, n);
        }
    }
    cl_int err = clFinish(q);
    if (err != CL_SUCCESS) {
        cl_fail(r, ctx, "clFinish", err);
        goto done;
    }
    if (read_back(r, ctx, pbuf, OFF_PARAM, n, scratch, "param") != 0)
        goto done;
    compare(r, find_expected(c, "param_T.f32"), scratch + OFF_PARAM, n);

    /* The gradient buffer is read-only for the library. */
    if (read_back(r, ctx, gbuf, OFF_GRAD, n, scratch, "grad") != 0)
        goto done;
    if (memcmp(scratch + OFF_GRAD, c->grads + (c->steps - 1) * n, n * sizeof(float)) != 0)
        fail(r, "the gradient buffer was modified by the optimizer");

    /* State tensors, matched by the names of clopt_optimizer_state_info. */
    size_t ns = clopt_optimizer_state_count(opt, 0);
    for (size_t i = 0; i < c->nexp; i++) {
        const expected_file *e = &c->exp[i];
        if (strncmp(e->name, "state_", 6) != 0)
            continue;
        size_t nl = strlen(e->name) - 6 - 4;
        size_t k = 0, len = 0;
        for (; k < ns; k++) {
            const char *sn = NULL;
            clopt_optimizer_state_info(opt, 0, k, &sn, &len);
            if (sn != NULL && strlen(sn) == nl && strncmp(sn, e->name + 6, nl) == 0)
                break;
        }
        if (k == ns) {
            fail(r, "%s: clopt rule %s (with these hyperparameters) has no state '%.*s'",
                 e->path, clopt_rule_name(c->rule), (int)nl, e->name + 6);
            continue;
        }
        if (len != e->count) {
            fail(r, "%s: %zu values, the optimizer's state '%.*s' has %zu", e->path, e->count,
                 (int)nl, e->name + 6, len);
            continue;
        }
        st = clopt_optimizer_read_state(opt, 0, k, state, len);
        if (st != CLOPT_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "clopt_optimizer_read_state(%.*s)", (int)nl,
                     e->name + 6);
            clopt_fail(r, ctx, what, st);
            continue;
        }
        compare(r, e, state, len);
    }

    uint64_t count = clopt_optimizer_step_count(opt);
    uint64_t want = c->has_final_step ? c->final_step : (uint64_t)c->steps;
    if (count != want)
        fail(r, "%s: final_scalar_state.step is %llu, clopt_optimizer_step_count gives %llu",
             c->meta_path, (unsigned long long)want, (unsigned long long)count);
    if (c->has_mu_product) {
        double mu = clopt_nadam_mu_product(&c->hp, c->steps);
        if (!(fabs(mu - c->mu_product) <= 1e-9 * fabs(c->mu_product)))
            fail(r, "%s: final_scalar_state.mu_product is %.17g, clopt_nadam_mu_product "
                    "gives %.17g",
                 c->meta_path, c->mu_product, mu);
    }

done:
    if (opt != NULL)
        clopt_optimizer_destroy(opt);
    if (pbuf != NULL)
        clReleaseMemObject(pbuf);
    if (gbuf != NULL)
        clReleaseMemObject(gbuf);
    if (hbuf != NULL)
        clReleaseMemObject(hbuf);
    free(scratch);
    free(state);
}

static void run_case(clopt_ctx *ctx, const char *dir, golden_result *out, int replay_it)
{
    memset(out, 0, sizeof *out);
    out->verdict = GOLDEN_PASS;
    runner r = {out, 0, 0};
    if (dir == NULL) {
        fail(&r, "no case directory given");
        return;
    }
    /* The name: the last non-empty path component. */
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/')
        l--;
    size_t b = l;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(out->name, sizeof out->name, "%.*s", (int)(l - b), dir + b);

    if (ctx == NULL && replay_it) {
        fail(&r, "no clopt context");
        return;
    }
    gcase c;
    memset(&c, 0, sizeof c);
    c.dir = dir;
    if (load_case(&r, &c) == 0 && replay_it)
        replay(&r, ctx, &c);
    gcase_free(&c);

    if (r.any_nan) {
        out->max_abs_err = NAN;
        out->max_rel_err = NAN;
    }
    if (out->verdict == GOLDEN_FAIL && r.more > 0) {
        size_t used = strlen(out->reason);
        if (used < sizeof out->reason)
            snprintf(out->reason + used, sizeof out->reason - used, " (+%zu more problem%s)",
                     r.more, r.more == 1 ? "" : "s");
    }
}

void golden_run_case(clopt_ctx *ctx, const char *dir, golden_result *out)
{
    run_case(ctx, dir, out, 1);
}

void golden_check_case(const char *dir, golden_result *out)
{
    run_case(NULL, dir, out, 0);
}
