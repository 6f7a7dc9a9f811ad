/* SPDX-License-Identifier: MIT */
/*
 * golden: the optimizer ids of the golden format (meta.optimizer) and their hyperparameters
 * (meta.hyper) mapped to a clopt_rule and clopt_hparams. See golden.h and
 * tests/data/golden/README.md.
 */
#include "golden_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Mapping table: meta.optimizer / meta.hyper -> clopt_rule / clopt_hparams              */
/* ------------------------------------------------------------------------------------ */

/* HK_TRUE: the key must be true (clopt's fixed behaviour); HK_NONE: only null/0 (a feature
   the case leaves off).
   HK_FIXED: only the value `fixed` (a constant of clopt's implementation). A key in
   null0_keys takes null as 0 (the feature off). */
enum hkind { HK_DOUBLE, HK_BOOL, HK_UINT, HK_TRUE, HK_NONE, HK_FIXED };

enum hkey {
    K_LR, K_BETA1, K_BETA2, K_BETA3, K_EPS, K_WD, K_MOMENTUM, K_DAMPENING, K_NESTEROV,
    K_MAXIMIZE, K_AMSGRAD, K_CENTERED, K_ALPHA, K_RHO, K_BS, K_LR_DECAY, K_IAV,
    K_MOMENTUM_DECAY, K_HESS_INTERVAL, K_EPS1, K_EPS2, K_CLIP_THRESHOLD, K_DECAY_RATE,
    K_SCALE_PARAMETER, K_RELATIVE_STEP, K_WARMUP_INIT, K_BIAS_CORRECTION, K_GRAD_AVERAGING,
    K_USE_GC, K_GC_CONV_ONLY, K_TRUST_RATIO_ALWAYS, K_MAX_GRAD_NORM, K_LOOKAHEAD_K,
    K_LOOKAHEAD_ALPHA, K_N_SMA_THRESHOLD, K_WARMUP_STEPS, K_R, K_WEIGHT_LR_POWER,
    K_INNER_MOMENTUM, K_DECOUPLE, K_CLIP_EXPONENT, K_ALPHA_WARMUP, K_BETA3_WARMUP,
    K_CORRECT_BIAS, K_MASK_MEAN_MIN, K_CLIP_THRESH, K_NS_STEPS, K_NS_A, K_NS_B, K_NS_C,
    K_NS_EPS, K_COUNT
};
#define NULL0_KEYS ((1ull << K_CLIP_EXPONENT) | (1ull << K_ALPHA_WARMUP) | (1ull << K_BETA3_WARMUP))

static const struct hyper_key {
    const char *name;
    enum hkind kind;
    size_t offset;
    double fixed;
} hyper_keys[K_COUNT] = {
    [K_LR] = {"lr", HK_DOUBLE, offsetof(clopt_hparams, lr), 0.0},
    [K_BETA1] = {"beta1", HK_DOUBLE, offsetof(clopt_hparams, beta1), 0.0},
    [K_BETA2] = {"beta2", HK_DOUBLE, offsetof(clopt_hparams, beta2), 0.0},
    [K_BETA3] = {"beta3", HK_DOUBLE, offsetof(clopt_hparams, beta3), 0.0},
    [K_EPS] = {"eps", HK_DOUBLE, offsetof(clopt_hparams, eps), 0.0},
    [K_WD] = {"weight_decay", HK_DOUBLE, offsetof(clopt_hparams, weight_decay), 0.0},
    [K_MOMENTUM] = {"momentum", HK_DOUBLE, offsetof(clopt_hparams, momentum), 0.0},
    [K_DAMPENING] = {"dampening", HK_DOUBLE, offsetof(clopt_hparams, dampening), 0.0},
    [K_NESTEROV] = {"nesterov", HK_BOOL, offsetof(clopt_hparams, nesterov), 0.0},
    [K_MAXIMIZE] = {"maximize", HK_BOOL, offsetof(clopt_hparams, maximize), 0.0},
    [K_AMSGRAD] = {"amsgrad", HK_BOOL, offsetof(clopt_hparams, amsgrad), 0.0},
    [K_CENTERED] = {"centered", HK_BOOL, offsetof(clopt_hparams, centered), 0.0},
    [K_ALPHA] = {"alpha", HK_DOUBLE, offsetof(clopt_hparams, alpha), 0.0},
    [K_RHO] = {"rho", HK_DOUBLE, offsetof(clopt_hparams, rho), 0.0},
    [K_BS] = {"bs", HK_DOUBLE, offsetof(clopt_hparams, bs), 0.0},
    [K_LR_DECAY] = {"lr_decay", HK_DOUBLE, offsetof(clopt_hparams, lr_decay), 0.0},
    [K_IAV] = {"initial_accumulator_value", HK_DOUBLE,
               offsetof(clopt_hparams, initial_accumulator_value), 0.0},
    [K_MOMENTUM_DECAY] = {"momentum_decay", HK_DOUBLE,
                          offsetof(clopt_hparams, momentum_decay), 0.0},
    [K_HESS_INTERVAL] = {"hess_interval", HK_UINT, offsetof(clopt_hparams, hess_interval), 0.0},
    [K_EPS1] = {"eps1", HK_DOUBLE, offsetof(clopt_hparams, eps), 0.0},
    [K_EPS2] = {"eps2", HK_DOUBLE, offsetof(clopt_hparams, eps2), 0.0},
    [K_CLIP_THRESHOLD] = {"clip_threshold", HK_DOUBLE,
                          offsetof(clopt_hparams, clip_threshold), 0.0},
    [K_DECAY_RATE] = {"decay_rate", HK_DOUBLE, offsetof(clopt_hparams, decay_rate), 0.0},
    [K_SCALE_PARAMETER] = {"scale_parameter", HK_BOOL,
                           offsetof(clopt_hparams, scale_parameter), 0.0},
    [K_RELATIVE_STEP] = {"relative_step", HK_BOOL, offsetof(clopt_hparams, relative_step), 0.0},
    [K_WARMUP_INIT] = {"warmup_init", HK_BOOL, offsetof(clopt_hparams, warmup_init), 0.0},
    [K_BIAS_CORRECTION] = {"bias_correction", HK_BOOL,
                           offsetof(clopt_hparams, bias_correction), 0.0},
    [K_GRAD_AVERAGING] = {"grad_averaging", HK_BOOL, offsetof(clopt_hparams, grad_averaging), 0.0},
    [K_USE_GC] = {"use_gc", HK_BOOL, offsetof(clopt_hparams, grad_centralization), 0.0},
    [K_GC_CONV_ONLY] = {"gc_conv_only", HK_BOOL, offsetof(clopt_hparams, gc_conv_only), 0.0},
    /* clopt's LAMB always applies the trust ratio: only true is honoured */
    [K_TRUST_RATIO_ALWAYS] = {"trust_ratio_always", HK_TRUE, 0, 0.0},
    /* LAMB without built-in clipping: only null (or 0) is honoured */
    [K_MAX_GRAD_NORM] = {"max_grad_norm", HK_NONE, 0, 0.0},
    [K_LOOKAHEAD_K] = {"lookahead_k", HK_UINT, offsetof(clopt_hparams, lookahead_k), 0.0},
    [K_LOOKAHEAD_ALPHA] = {"lookahead_alpha", HK_DOUBLE,
                           offsetof(clopt_hparams, lookahead_alpha), 0.0},
    [K_N_SMA_THRESHOLD] = {"n_sma_threshold", HK_DOUBLE,
                           offsetof(clopt_hparams, n_sma_threshold), 0.0},
    [K_WARMUP_STEPS] = {"warmup_steps", HK_UINT, offsetof(clopt_hparams, warmup_steps), 0.0},
    [K_R] = {"r", HK_DOUBLE, offsetof(clopt_hparams, r), 0.0},
    [K_WEIGHT_LR_POWER] = {"weight_lr_power", HK_DOUBLE,
                           offsetof(clopt_hparams, weight_lr_power), 0.0},
    /* Schedule-Free's optional first moment (2026): not implemented, only 0 */
    [K_INNER_MOMENTUM] = {"inner_momentum", HK_NONE, 0, 0.0},
    [K_DECOUPLE] = {"decouple", HK_BOOL, offsetof(clopt_hparams, decouple), 0.0},
    [K_CLIP_EXPONENT] = {"clip_exponent", HK_DOUBLE, offsetof(clopt_hparams, clip_exponent), 0.0},
    [K_ALPHA_WARMUP] = {"alpha_warmup", HK_UINT, offsetof(clopt_hparams, alpha_warmup), 0.0},
    [K_BETA3_WARMUP] = {"beta3_warmup", HK_UINT, offsetof(clopt_hparams, beta3_warmup), 0.0},
    /* Cautious AdamW: bias correction always on, the mask's floor is C-Optim's 1e-3 */
    [K_CORRECT_BIAS] = {"correct_bias", HK_TRUE, 0, 0.0},
    [K_MASK_MEAN_MIN] = {"mask_mean_min", HK_FIXED, 0, 1e-3},
    [K_CLIP_THRESH] = {"clip_thresh", HK_DOUBLE, offsetof(clopt_hparams, clip_threshold), 0.0},
    [K_NS_STEPS] = {"ns_steps", HK_UINT, offsetof(clopt_hparams, ns_steps), 0.0},
    /* Muon's Newton-Schulz coefficients and normalisation eps: Keller Jordan's constants */
    [K_NS_A] = {"ns_a", HK_FIXED, 0, 3.4445},
    [K_NS_B] = {"ns_b", HK_FIXED, 0, -4.7750},
    [K_NS_C] = {"ns_c", HK_FIXED, 0, 2.0315},
    [K_NS_EPS] = {"ns_eps", HK_FIXED, 0, 1e-7},
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

#define KEYS_SF (B(K_LR) | B(K_WD) | B(K_WARMUP_STEPS) | B(K_R) | B(K_WEIGHT_LR_POWER) | \
                 B(K_INNER_MOMENTUM))
#define KEYS_ADOPT (KEYS_ADAMLIKE | B(K_DECOUPLE) | B(K_CLIP_EXPONENT))
#define KEYS_ADEMAMIX \
    (KEYS_ADAMLIKE | B(K_BETA3) | B(K_ALPHA) | B(K_ALPHA_WARMUP) | B(K_BETA3_WARMUP))
#define KEYS_MUON                                                                           \
    (B(K_LR) | B(K_WD) | B(K_MOMENTUM) | B(K_NESTEROV) | B(K_NS_STEPS) | B(K_NS_A) |         \
     B(K_NS_B) | B(K_NS_C) | B(K_NS_EPS))

/* One row per golden optimizer id. keys: the hyper keys the rule honours (a known key
   outside the set is accepted only with a neutral value: false or 0). variant: the only
   accepted value of hyper.variant (NULL: the key is not accepted). gc: the id implies
   gradient centralization; cautious: the id implies cautious masking. New rules slot in as
   new rows. */
static const struct rule_map {
    const char *optimizer;
    clopt_rule rule;
    unsigned long long keys;
    const char *variant;
    int gc;
    int cautious;
} rule_map[] = {
    {"sgd", CLOPT_SGD, KEYS_SGD, NULL, 0, 0},
    {"sgd_momentum", CLOPT_SGD, KEYS_SGD, NULL, 0, 0},
    {"sgd_nesterov", CLOPT_SGD, KEYS_SGD, NULL, 0, 0},
    {"adam", CLOPT_ADAM, KEYS_ADAM, NULL, 0, 0},
    {"adam_l2", CLOPT_ADAM, KEYS_ADAM, NULL, 0, 0},
    {"amsgrad", CLOPT_ADAM, KEYS_ADAM, NULL, 0, 0},
    {"adamw", CLOPT_ADAMW, KEYS_ADAM, NULL, 0, 0},
    {"adagrad", CLOPT_ADAGRAD, KEYS_ADAGRAD, NULL, 0, 0},
    {"adadelta", CLOPT_ADADELTA, KEYS_ADADELTA, NULL, 0, 0},
    {"rmsprop", CLOPT_RMSPROP, KEYS_RMSPROP, NULL, 0, 0},
    {"rmsprop_centered", CLOPT_RMSPROP, KEYS_RMSPROP, NULL, 0, 0},
    {"adamax", CLOPT_ADAMAX, KEYS_ADAMLIKE, NULL, 0, 0},
    {"nadam", CLOPT_NADAM, KEYS_NADAM, "dozat", 0, 0},
    {"radam", CLOPT_RADAM, KEYS_ADAMLIKE, NULL, 0, 0},
    {"adamod", CLOPT_ADAMOD, KEYS_ADAMOD, NULL, 0, 0},
    {"diffgrad", CLOPT_DIFFGRAD, KEYS_ADAMLIKE, NULL, 0, 0},
    {"lion", CLOPT_LION, KEYS_LION, NULL, 0, 0},
    {"sophia", CLOPT_SOPHIA, KEYS_SOPHIA, NULL, 0, 0},
    {"adafactor", CLOPT_ADAFACTOR, KEYS_ADAFACTOR, NULL, 0, 0},
    {"lamb", CLOPT_LAMB, KEYS_LAMB, NULL, 0, 0},
    {"adam_gc", CLOPT_ADAM, KEYS_ADAM | B(K_GC_CONV_ONLY), NULL, 1, 0},
    {"lookahead_adam", CLOPT_ADAM, KEYS_ADAM | KEYS_LOOKAHEAD, NULL, 0, 0},
    {"ranger", CLOPT_RANGER, KEYS_RANGER, NULL, 0, 0},
    {"schedule_free_adamw", CLOPT_SCHEDULE_FREE_ADAMW,
     KEYS_SF | B(K_BETA1) | B(K_BETA2) | B(K_EPS), NULL, 0, 0},
    {"schedule_free_sgd", CLOPT_SCHEDULE_FREE_SGD, KEYS_SF | B(K_MOMENTUM), NULL, 0, 0},
    {"adopt", CLOPT_ADOPT, KEYS_ADOPT, NULL, 0, 0},
    {"ademamix", CLOPT_ADEMAMIX, KEYS_ADEMAMIX, NULL, 0, 0},
    {"cautious_adamw", CLOPT_ADAMW, KEYS_ADAMLIKE | B(K_CORRECT_BIAS) | B(K_MASK_MEAN_MIN),
     NULL, 0, 1},
    {"stable_adamw", CLOPT_STABLE_ADAMW, KEYS_ADAMLIKE | B(K_CLIP_THRESH), NULL, 0, 0},
    {"muon", CLOPT_MUON, KEYS_MUON, NULL, 0, 0},
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
        golden_put(reason, len, "optimizer '%s' is not implemented by clopt",
                   optimizer ? optimizer : "(null)");
        return GOLDEN_UNSUPPORTED;
    }
    clopt_hparams h;
    clopt_status st = clopt_hparams_default(m->rule, &h);
    if (st != CLOPT_SUCCESS) {
        golden_put(reason, len, "clopt_hparams_default(%s): %s", clopt_rule_name(m->rule),
                   clopt_status_name(st));
        return st == CLOPT_ERR_UNSUPPORTED ? GOLDEN_UNSUPPORTED : GOLDEN_FAIL;
    }
    h.grad_centralization = m->gc;
    h.cautious = m->cautious;
    if (hyper != NULL && !cJSON_IsNull(hyper)) {
        if (!cJSON_IsObject(hyper)) {
            golden_put(reason, len, "'hyper' is not an object");
            return GOLDEN_FAIL;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, hyper)
        {
            const char *key = it->string ? it->string : "";
            if (strcmp(key, "variant") == 0) {
                if (!cJSON_IsString(it)) {
                    golden_put(reason, len, "hyper.variant is not a string");
                    return GOLDEN_FAIL;
                }
                if (m->variant == NULL || strcmp(m->variant, it->valuestring) != 0) {
                    golden_put(reason, len, "%s variant '%s' is not implemented by clopt%s%s%s",
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
                golden_put(reason, len, "hyper key '%s' of %s is not honoured by clopt", key,
                           optimizer);
                return GOLDEN_UNSUPPORTED;
            }
            if (!(m->keys & B(k))) {
                if (json_neutral(it))
                    continue;
                golden_put(reason, len, "hyper.%s is not honoured by clopt rule %s", key,
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
                golden_put(reason, len, "hyper.%s is not honoured by clopt rule %s", key,
                           clopt_rule_name(m->rule));
                return GOLDEN_UNSUPPORTED;
            }
            if (hyper_keys[k].kind == HK_TRUE) {
                if (cJSON_IsTrue(it))
                    continue;
                golden_put(reason, len, "hyper.%s must be true for clopt rule %s", key,
                           clopt_rule_name(m->rule));
                return GOLDEN_UNSUPPORTED;
            }
            if (hyper_keys[k].kind == HK_FIXED) {
                if (cJSON_IsNumber(it) && it->valuedouble == hyper_keys[k].fixed)
                    continue;
                golden_put(reason, len, "hyper.%s must be %g for clopt rule %s", key,
                           hyper_keys[k].fixed, clopt_rule_name(m->rule));
                return GOLDEN_UNSUPPORTED;
            }
            if (cJSON_IsNull(it) && (NULL0_KEYS & B(k))) {
                char *f0 = (char *)&h + hyper_keys[k].offset;
                if (hyper_keys[k].kind == HK_DOUBLE)
                    *(double *)(void *)f0 = 0.0;
                else
                    *(unsigned *)(void *)f0 = 0;
                continue;
            }
            if (cJSON_IsNull(it)) {
                golden_put(reason, len, "hyper.%s = null is not supported by clopt", key);
                return GOLDEN_UNSUPPORTED;
            }
            char *field = (char *)&h + hyper_keys[k].offset;
            switch (hyper_keys[k].kind) {
            case HK_DOUBLE:
                if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
                    golden_put(reason, len, "hyper.%s is not a number", key);
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
                    golden_put(reason, len, "hyper.%s is not a boolean", key);
                    return GOLDEN_FAIL;
                }
                break;
            case HK_TRUE:
            case HK_NONE:
            case HK_FIXED:
                break;
            case HK_UINT: {
                uint64_t u;
                if (!golden_json_uint(it, &u) || u > 0xFFFFFFFFu) {
                    golden_put(reason, len, "hyper.%s is not a non-negative integer", key);
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
        golden_put(reason, len, "clopt rejects the hyperparameters of %s: %s (%s)", optimizer,
                   why ? why : "", clopt_status_name(st));
        return GOLDEN_UNSUPPORTED;
    }
    if (rule != NULL)
        *rule = m->rule;
    if (hp != NULL)
        *hp = h;
    return GOLDEN_PASS;
}
