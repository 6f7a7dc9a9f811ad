/* SPDX-License-Identifier: MIT */
/* The rule table: names, defaults, validation, state layout, memory model, and the plan of
 * one step (kernel, -D variant, per-step scalars computed in double on the host). */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Hyperparameters a rule reads (for validation). */
enum {
    U_BETAS = 1 << 0,    /* beta1, beta2 in [0, 1) */
    U_BETA3 = 1 << 1,    /* AdaMod */
    U_EPS = 1 << 2,      /* eps > 0 */
    U_WD = 1 << 3,       /* weight_decay >= 0 */
    U_SGD = 1 << 4,      /* momentum, dampening, nesterov */
    U_ALPHA = 1 << 5,    /* RMSprop alpha in [0, 1), momentum in [0, 1) */
    U_RHO01 = 1 << 6,    /* Adadelta rho in [0, 1) */
    U_ADAGRAD = 1 << 7,  /* lr_decay, initial_accumulator_value >= 0 */
    U_MOMDECAY = 1 << 8, /* NAdam momentum_decay >= 0 */
    U_SOPHIA = 1 << 9,   /* rho > 0, bs > 0, hess_interval >= 1 */
    U_ADAFACTOR = 1 << 10, /* eps2 > 0, clip_threshold > 0, decay_rate <= 0, beta1 if used */
    U_L2 = 1 << 11,      /* weight decay is L2: added to the gradient (GC sees it) */
    U_MULTIPASS = 1 << 12, /* needs reductions over the tensor: optimizer level only */
    U_SF = 1 << 13,      /* Schedule-Free: warmup_steps, r, weight_lr_power */
    U_ADOPT = 1 << 14,   /* clip_exponent >= 0, decouple */
    U_ADEMAMIX = 1 << 15, /* alpha >= 0, beta3 in [0, 1), warmups */
    U_CLIPT = 1 << 16,   /* clip_threshold > 0 */
    U_MUON = 1 << 17,    /* momentum in [0, 1), ns_steps in 1 .. 100 */
    U_CAUTIOUS = 1 << 18 /* takes the cautious option */
};

typedef struct rule_info {
    const char *name;
    const char *family;
    const char *kernel;
    unsigned uses;
} rule_info;

static const rule_info rules[CLOPT_RULE_COUNT] = {
    [CLOPT_SGD] = {"sgd", "sgd", "sgd_step", U_WD | U_SGD | U_L2},
    [CLOPT_ADAM] = {"adam", "adam", "adam_step", U_BETAS | U_EPS | U_WD | U_L2 | U_CAUTIOUS},
    [CLOPT_ADAMW] = {"adamw", "adam", "adam_step", U_BETAS | U_EPS | U_WD | U_CAUTIOUS},
    [CLOPT_ADAGRAD] = {"adagrad", "adaptive", "adagrad_step", U_EPS | U_WD | U_ADAGRAD | U_L2},
    [CLOPT_ADADELTA] = {"adadelta", "adaptive", "adadelta_step", U_EPS | U_WD | U_RHO01 | U_L2},
    [CLOPT_RMSPROP] = {"rmsprop", "adaptive", "rmsprop_step", U_EPS | U_WD | U_ALPHA | U_L2},
    [CLOPT_ADAMAX] = {"adamax", "adam", "adamax_step", U_BETAS | U_EPS | U_WD | U_L2},
    [CLOPT_NADAM] = {"nadam", "adam", "nadam_step", U_BETAS | U_EPS | U_WD | U_MOMDECAY | U_L2},
    [CLOPT_RADAM] = {"radam", "adam", "radam_step", U_BETAS | U_EPS | U_WD | U_L2},
    [CLOPT_ADAMOD] = {"adamod", "adam", "adamod_step", U_BETAS | U_BETA3 | U_EPS | U_WD},
    [CLOPT_DIFFGRAD] = {"diffgrad", "adam", "diffgrad_step", U_BETAS | U_EPS | U_WD | U_L2},
    [CLOPT_LION] = {"lion", "sign", "lion_step", U_BETAS | U_WD | U_CAUTIOUS},
    [CLOPT_SOPHIA] = {"sophia", "sign", "sophia_step", U_BETAS | U_EPS | U_WD | U_SOPHIA},
    [CLOPT_ADAFACTOR] = {"adafactor", "adafactor", NULL, U_EPS | U_WD | U_ADAFACTOR | U_MULTIPASS},
    [CLOPT_LAMB] = {"lamb", "lamb", NULL, U_BETAS | U_EPS | U_WD | U_MULTIPASS},
    [CLOPT_RANGER] = {"ranger", "adam", "radam_step", U_BETAS | U_EPS | U_WD},
    [CLOPT_SCHEDULE_FREE_ADAMW] = {"schedule_free_adamw", "schedule_free", "sf_adamw_step",
                                   U_BETAS | U_EPS | U_WD | U_SF},
    [CLOPT_SCHEDULE_FREE_SGD] = {"schedule_free_sgd", "schedule_free", "sf_sgd_step",
                                 U_WD | U_SF | U_L2},
    [CLOPT_ADOPT] = {"adopt", "adam", "adopt_step", U_BETAS | U_EPS | U_WD | U_ADOPT},
    [CLOPT_ADEMAMIX] = {"ademamix", "adam", "ademamix_step",
                        U_BETAS | U_EPS | U_WD | U_ADEMAMIX},
    [CLOPT_STABLE_ADAMW] = {"stable_adamw", "reduced", NULL,
                            U_BETAS | U_EPS | U_WD | U_CLIPT | U_MULTIPASS},
    [CLOPT_MUON] = {"muon", "muon", NULL, U_WD | U_MUON | U_MULTIPASS},
};

static int rule_ok(clopt_rule r) { return (int)r >= 0 && r < CLOPT_RULE_COUNT; }

int clopt_rule_q8_ok(clopt_rule rule, const clopt_hparams *hp)
{
    if (hp && hp->cautious) /* the two-pass kernels (reduced.cl) read f32 or bf16 state */
        return 0;
    /* centered RMSprop: sqrt(v - a²) of two separately quantized states goes imaginary (NaN
       θ) once the gradient's variance is below their code steps; bitsandbytes refuses it */
    if (rule == CLOPT_RMSPROP && hp && hp->centered)
        return 0;
    return rule == CLOPT_SGD || rule == CLOPT_ADAM || rule == CLOPT_ADAMW ||
           rule == CLOPT_LION || rule == CLOPT_RMSPROP || rule == CLOPT_ADAGRAD ||
           rule == CLOPT_ADEMAMIX; /* bitsandbytes' AdEMAMix8bit: m1, m2 signed, nu not */
}

int clopt_rule_state_signed(clopt_rule rule, const clopt_hparams *hp, size_t k)
{
    const char *name = clopt_rule_state_name(rule, hp, k);
    /* the non-negative states: second moments, accumulators and bounds */
    static const char *unsigned_states[] = {"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg",
                                            "acc_delta", "exp_inf", "exp_avg_lr"};
    for (size_t i = 0; name && i < sizeof unsigned_states / sizeof unsigned_states[0]; i++)
        if (strcmp(name, unsigned_states[i]) == 0)
            return 0;
    return 1;
}

int clopt_rule_is_multipass(clopt_rule rule)
{
    return rule_ok(rule) && (rules[rule].uses & U_MULTIPASS);
}

int clopt_rule_per_tensor(clopt_rule rule, const clopt_hparams *hp)
{
    return clopt_rule_is_multipass(rule) || (hp && hp->cautious);
}

double clopt_rule_l2_decay(clopt_rule rule, const clopt_hparams *hp)
{
    if (rule == CLOPT_ADOPT)
        return hp->decouple ? 0.0 : hp->weight_decay;
    return rule_ok(rule) && (rules[rule].uses & U_L2) ? hp->weight_decay : 0.0;
}

const char *clopt_rule_name(clopt_rule rule) { return rule_ok(rule) ? rules[rule].name : NULL; }

clopt_status clopt_rule_from_name(const char *name, clopt_rule *out)
{
    if (!name || !out)
        return CLOPT_ERR_NULL_ARGUMENT;
    for (int r = 0; r < CLOPT_RULE_COUNT; r++)
        if (strcmp(rules[r].name, name) == 0) {
            *out = (clopt_rule)r;
            return CLOPT_SUCCESS;
        }
    return CLOPT_ERR_INVALID_ARGUMENT;
}

clopt_status clopt_hparams_default(clopt_rule rule, clopt_hparams *hp)
{
    if (!hp)
        return CLOPT_ERR_NULL_ARGUMENT;
    if (!rule_ok(rule))
        return CLOPT_ERR_INVALID_ARGUMENT;
    memset(hp, 0, sizeof *hp);
    hp->lr = 1e-3;
    hp->beta1 = 0.9;
    hp->beta2 = 0.999;
    hp->beta3 = 0.999;
    hp->eps = 1e-8;
    hp->alpha = 0.99;
    hp->rho = 0.9;
    hp->bs = 5120;
    hp->momentum_decay = 4e-3;
    hp->hess_interval = 10;
    hp->eps2 = 1e-3;
    hp->clip_threshold = 1.0;
    hp->decay_rate = -0.8;
    hp->relative_step = 1;
    hp->scale_parameter = 1;
    hp->bias_correction = 1;
    hp->grad_averaging = 1;
    hp->lookahead_alpha = 0.5;
    hp->n_sma_threshold = 5.0;
    switch (rule) {
    case CLOPT_SGD: hp->lr = 1e-2; break; /* torch requires lr; 0.01 is the usual choice */
    case CLOPT_ADAMW: hp->weight_decay = 1e-2; break;
    case CLOPT_ADAGRAD: hp->lr = 1e-2; hp->eps = 1e-10; break;
    case CLOPT_ADADELTA: hp->lr = 1.0; hp->eps = 1e-6; break;
    case CLOPT_RMSPROP: hp->lr = 1e-2; break;
    case CLOPT_ADAMAX: hp->lr = 2e-3; break;
    case CLOPT_NADAM: hp->lr = 2e-3; break;
    case CLOPT_LION: hp->lr = 1e-4; hp->beta2 = 0.99; break;
    case CLOPT_ADAFACTOR: hp->eps = 1e-30; hp->lr = 0.0; break; /* relative_step by default */
    case CLOPT_LAMB: hp->eps = 1e-6; hp->weight_decay = 1e-2; break;
    case CLOPT_RANGER:
        hp->beta1 = 0.95;
        hp->eps = 1e-5;
        hp->lookahead_k = 6;
        hp->grad_centralization = 1;
        break;
    case CLOPT_SOPHIA:
        hp->lr = 1e-4;
        hp->beta1 = 0.965;
        hp->beta2 = 0.99;
        hp->rho = 0.04;
        hp->eps = 1e-15;
        hp->weight_decay = 1e-1;
        break;
    case CLOPT_SCHEDULE_FREE_ADAMW: hp->lr = 0.0025; break;
    case CLOPT_SCHEDULE_FREE_SGD: hp->lr = 1.0; hp->momentum = 0.9; break;
    case CLOPT_ADOPT: hp->beta2 = 0.9999; hp->eps = 1e-6; break;
    case CLOPT_ADEMAMIX: hp->beta3 = 0.9999; hp->alpha = 2.0; break;
    case CLOPT_STABLE_ADAMW: hp->lr = 2e-3; hp->beta2 = 0.99; hp->weight_decay = 0.2; break;
    case CLOPT_MUON: hp->lr = 0.02; hp->momentum = 0.95; hp->nesterov = 1; break;
    default: break;
    }
    hp->weight_lr_power = 2.0;
    hp->clip_exponent = 0.25;
    hp->ns_steps = 5;
    return CLOPT_SUCCESS;
}

static int in01(double x) { return isfinite(x) && x >= 0.0 && x < 1.0; }
static int nonneg(double x) { return isfinite(x) && x >= 0.0; }
static int positive(double x) { return isfinite(x) && x > 0.0; }

clopt_status clopt_hparams_validate(clopt_rule rule, const clopt_hparams *hp, const char **why)
{
    const char *w = NULL;
    if (!hp) {
        if (why)
            *why = "hparams is NULL";
        return CLOPT_ERR_NULL_ARGUMENT;
    }
    if (!rule_ok(rule)) {
        if (why)
            *why = "rule is not a clopt_rule";
        return CLOPT_ERR_INVALID_ARGUMENT;
    }
    unsigned u = rules[rule].uses;
    /* Every double field, read by the rule or not: finite, and 0 or of a magnitude whose
       reciprocal and square are finite in float32 (a subnormal eps or lr becomes 0 or loses
       its precision on the device, and its reciprocal overflows). */
#define CLOPT_HP_DOUBLES(X)                                                                  \
    X(lr) X(beta1) X(beta2) X(beta3) X(eps) X(weight_decay) X(momentum) X(dampening) X(alpha) \
    X(rho) X(bs) X(lr_decay) X(initial_accumulator_value) X(momentum_decay) X(eps2)            \
    X(clip_threshold) X(decay_rate) X(lookahead_alpha) X(n_sma_threshold) X(r)                \
    X(weight_lr_power) X(clip_exponent)
#define CLOPT_HP_CHECK(f)                                                                    \
    if (!w && !isfinite(hp->f))                                                              \
        w = #f " must be finite (NaN and Inf are refused in every field)";                   \
    else if (!w && hp->f != 0.0 &&                                                           \
             (fabs(hp->f) < FLT_MIN || fabs(hp->f) > CLOPT_MAX_SETTING))                      \
        w = #f " must be 0 or of magnitude 1.2e-38 .. 1.8e19 (its reciprocal and square "   \
               "finite in float32)";
    CLOPT_HP_DOUBLES(CLOPT_HP_CHECK)
#undef CLOPT_HP_CHECK
#undef CLOPT_HP_DOUBLES
    if (w)
        ;
    else if (!nonneg(hp->lr))
        w = "lr must be finite and >= 0";
    else if ((u & U_BETAS) && !in01(hp->beta1))
        w = "beta1 must be in [0, 1)";
    else if ((u & U_BETAS) && !in01(hp->beta2))
        w = "beta2 must be in [0, 1)";
    else if ((u & U_BETA3) && !in01(hp->beta3))
        w = "beta3 must be in [0, 1)";
    else if ((u & U_EPS) && !positive(hp->eps))
        w = "eps must be finite and > 0";
    else if ((u & U_WD) && !nonneg(hp->weight_decay))
        w = "weight_decay must be finite and >= 0";
    else if ((u & U_SGD) && !in01(hp->momentum))
        w = "momentum must be in [0, 1)";
    else if ((u & U_SGD) && !(isfinite(hp->dampening) && hp->dampening >= 0 && hp->dampening <= 1))
        w = "dampening must be in [0, 1]";
    else if ((u & U_SGD) && hp->nesterov && (hp->momentum <= 0 || hp->dampening != 0))
        w = "nesterov needs momentum > 0 and dampening = 0";
    else if ((u & U_ALPHA) && !in01(hp->alpha))
        w = "alpha must be in [0, 1)";
    else if ((u & U_ALPHA) && !in01(hp->momentum))
        w = "momentum must be in [0, 1)";
    else if ((u & U_RHO01) && !in01(hp->rho))
        w = "rho must be in [0, 1)";
    else if ((u & U_ADAGRAD) && !nonneg(hp->lr_decay))
        w = "lr_decay must be finite and >= 0";
    else if ((u & U_ADAGRAD) && !nonneg(hp->initial_accumulator_value))
        w = "initial_accumulator_value must be finite and >= 0";
    else if ((u & U_MOMDECAY) && !nonneg(hp->momentum_decay))
        w = "momentum_decay must be finite and >= 0";
    else if ((u & U_SOPHIA) && !positive(hp->rho))
        w = "rho must be finite and > 0";
    else if ((u & U_SOPHIA) && !positive(hp->bs))
        w = "bs must be finite and > 0";
    else if ((u & U_SOPHIA) && hp->hess_interval < 1)
        w = "hess_interval must be >= 1";
    else if ((u & U_ADAFACTOR) && !positive(hp->eps2))
        w = "eps2 must be finite and > 0";
    else if ((u & U_ADAFACTOR) && !positive(hp->clip_threshold))
        w = "clip_threshold must be finite and > 0";
    else if ((u & U_ADAFACTOR) && !(isfinite(hp->decay_rate) && hp->decay_rate <= 0))
        w = "decay_rate must be finite and <= 0";
    else if ((u & U_ADAFACTOR) && hp->use_beta1 && !in01(hp->beta1))
        w = "beta1 must be in [0, 1)";
    else if ((u & U_ADAFACTOR) && ((hp->relative_step != 0 && hp->relative_step != 1) ||
                                   (hp->warmup_init != 0 && hp->warmup_init != 1)))
        w = "relative_step and warmup_init must be 0 or 1";
    else if ((u & U_ADAFACTOR) && hp->warmup_init && !hp->relative_step)
        w = "warmup_init needs relative_step (as Hugging Face's Adafactor)";
    else if (!(isfinite(hp->lookahead_alpha) && hp->lookahead_alpha >= 0 &&
               hp->lookahead_alpha <= 1))
        w = "lookahead_alpha must be in [0, 1]";
    else if (hp->master < CLOPT_MASTER_NONE || hp->master > CLOPT_MASTER_REMAINDER)
        w = "master must be a clopt_master (0 none, 1 f32, 2 remainder)";
    else if (hp->stochastic_rounding != 0 && hp->stochastic_rounding != 1)
        w = "stochastic_rounding must be 0 or 1";
    else if (hp->state_dtype != CLOPT_DTYPE_F32 && hp->state_dtype != CLOPT_DTYPE_BF16 &&
             hp->state_dtype != CLOPT_DTYPE_U8)
        w = "state_dtype must be CLOPT_DTYPE_F32, BF16 or U8";
    else if (hp->stochastic_rounding && hp->master != CLOPT_MASTER_NONE)
        w = "stochastic_rounding applies to parameters without a master (master must be 0)";
    else if (rule == CLOPT_RANGER && !(isfinite(hp->n_sma_threshold) && hp->n_sma_threshold >= 4))
        w = "n_sma_threshold must be finite and >= 4 (the rectification needs rho_t > 4)";
    else if (rule == CLOPT_SCHEDULE_FREE_ADAMW && hp->beta1 <= 0)
        w = "beta1 must be in (0, 1): eval mode's x = lerp(y, z, 1 - 1/beta1) needs it";
    else if (rule == CLOPT_SCHEDULE_FREE_SGD && !(in01(hp->momentum) && hp->momentum > 0))
        w = "momentum must be in (0, 1): eval mode's x = lerp(y, z, 1 - 1/momentum) needs it";
    else if ((u & U_SF) && !nonneg(hp->r))
        w = "r must be finite and >= 0";
    else if ((u & U_SF) && !nonneg(hp->weight_lr_power))
        w = "weight_lr_power must be finite and >= 0";
    else if ((u & U_ADOPT) && !nonneg(hp->clip_exponent))
        w = "clip_exponent must be finite and >= 0 (0: no clipping)";
    else if ((u & U_ADOPT) && hp->decouple != 0 && hp->decouple != 1)
        w = "decouple must be 0 or 1";
    else if ((u & U_ADEMAMIX) && !nonneg(hp->alpha))
        w = "alpha must be finite and >= 0";
    else if ((u & U_ADEMAMIX) && !in01(hp->beta3))
        w = "beta3 must be in [0, 1)";
    else if ((u & U_CLIPT) && !positive(hp->clip_threshold))
        w = "clip_threshold must be finite and > 0";
    else if ((u & U_MUON) && !in01(hp->momentum))
        w = "momentum must be in [0, 1)";
    else if ((u & U_MUON) && (hp->ns_steps < 1 || hp->ns_steps > 100))
        w = "ns_steps must be in 1 .. 100";
    else if (hp->cautious != 0 && hp->cautious != 1)
        w = "cautious must be 0 or 1";
    else if (hp->cautious && !(u & U_CAUTIOUS))
        w = "cautious applies to adam, adamw and lion";
    else if (hp->cautious && hp->amsgrad)
        w = "cautious does not combine with amsgrad (C-Optim's AdamW has no amsgrad)";
    if (why)
        *why = w ? w : "";
    return w ? CLOPT_ERR_INVALID_HYPERPARAM : CLOPT_SUCCESS;
}

/* State names of a rule under hp; returns the count. */
static size_t state_names(clopt_rule rule, const clopt_hparams *hp, const char **names)
{
    size_t k = 0;
    switch (rule) {
    case CLOPT_SGD:
        if (hp->momentum != 0)
            names[k++] = "momentum_buffer";
        break;
    case CLOPT_ADAM:
    case CLOPT_ADAMW:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        if (hp->amsgrad)
            names[k++] = "max_exp_avg_sq";
        break;
    case CLOPT_ADAGRAD: names[k++] = "sum"; break;
    case CLOPT_ADADELTA:
        names[k++] = "square_avg";
        names[k++] = "acc_delta";
        break;
    case CLOPT_RMSPROP:
        names[k++] = "square_avg";
        if (hp->momentum != 0)
            names[k++] = "momentum_buffer";
        if (hp->centered)
            names[k++] = "grad_avg";
        break;
    case CLOPT_ADAMAX:
        names[k++] = "exp_avg";
        names[k++] = "exp_inf";
        break;
    case CLOPT_NADAM:
    case CLOPT_RADAM:
    case CLOPT_RANGER:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        break;
    case CLOPT_ADAMOD:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        names[k++] = "exp_avg_lr";
        break;
    case CLOPT_DIFFGRAD:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        names[k++] = "previous_grad";
        break;
    case CLOPT_LION: names[k++] = "exp_avg"; break;
    case CLOPT_SOPHIA:
        names[k++] = "exp_avg";
        names[k++] = "hessian";
        break;
    case CLOPT_ADAFACTOR: /* the matrix layout; see clopt_optimizer_state_info for vectors */
        names[k++] = "exp_avg_sq_row";
        names[k++] = "exp_avg_sq_col";
        if (hp->use_beta1)
            names[k++] = "exp_avg";
        break;
    case CLOPT_LAMB:
    case CLOPT_ADOPT:
    case CLOPT_STABLE_ADAMW:
        names[k++] = "exp_avg";
        names[k++] = "exp_avg_sq";
        break;
    case CLOPT_SCHEDULE_FREE_ADAMW:
        names[k++] = "z";
        names[k++] = "exp_avg_sq";
        break;
    case CLOPT_SCHEDULE_FREE_SGD: names[k++] = "z"; break;
    case CLOPT_ADEMAMIX:
        names[k++] = "exp_avg_fast";
        names[k++] = "exp_avg_slow";
        names[k++] = "exp_avg_sq";
        break;
    case CLOPT_MUON: names[k++] = "momentum_buffer"; break;
    default: break;
    }
    return k;
}

size_t clopt_rule_state_count(clopt_rule rule, const clopt_hparams *hp)
{
    const char *names[CLOPT_MAX_STATE];
    return rule_ok(rule) && hp ? state_names(rule, hp, names) : 0;
}

const char *clopt_rule_state_name(clopt_rule rule, const clopt_hparams *hp, size_t index)
{
    const char *names[CLOPT_MAX_STATE];
    if (!rule_ok(rule) || !hp)
        return NULL;
    size_t k = state_names(rule, hp, names);
    return index < k ? names[index] : NULL;
}

float clopt_rule_state_init(clopt_rule rule, const clopt_hparams *hp, size_t index)
{
    if (rule == CLOPT_ADAGRAD && hp && index == 0)
        return (float)hp->initial_accumulator_value;
    return 0.0f;
}

size_t clopt_rule_bytes_per_param(clopt_rule rule, const clopt_hparams *hp)
{
    if (!rule_ok(rule) || !hp)
        return 0;
    size_t s = clopt_rule_state_count(rule, hp);
    /* reads: θ, g, every state; writes: θ, every state. Sophia without an estimate leaves h
       unwritten; with one it also reads ĥ (counted by the op, not here: steady state is the
       k-1 steps out of k without an estimate). */
    size_t reads = 2 + s, writes = 1 + s;
    if (rule == CLOPT_SOPHIA)
        writes -= 1;
    if (rule == CLOPT_LAMB) /* pass 1: θ g m v -> m v; pass 2: θ m v -> θ */
        reads = 7, writes = 3;
    if (rule == CLOPT_ADAFACTOR) /* (matrix) g for the row and column statistics in one
                                    pass, g θ for the partial sums, then g θ (m) -> θ (m) */
        reads = 5 + (hp->use_beta1 ? 1 : 0), writes = 1 + (hp->use_beta1 ? 1 : 0);
    /* Cautious and StableAdamW: a first pass reads g and one state (the mask's mean, the
       update's RMS), then the fused update */
    if (hp->cautious || rule == CLOPT_STABLE_ADAMW)
        reads += 2;
    /* Muon's element-wise passes (the GEMMs' traffic is not counted): g b -> b U (with the
       norm's partials), U -> X (normalised), then θ X -> θ */
    if (rule == CLOPT_MUON)
        reads = 5, writes = 4;
    return sizeof(float) * (reads + writes);
}

/* ---- one step -------------------------------------------------------------------------- */

double clopt_nadam_mu(const clopt_hparams *hp, double t)
{
    return hp->beta1 * (1.0 - 0.5 * pow(0.96, t * hp->momentum_decay));
}

double clopt_nadam_mu_product(const clopt_hparams *hp, uint64_t t)
{
    double prod = 1.0;
    for (uint64_t i = 1; hp && i <= t && prod != 0.0; i++) { /* 0 stays 0: stop there */
        /* once 0.5·0.96^(iψ) is below half an ulp of 1, every later μ is β1 itself: the
           rest in one pow (set_step_count or a load with a huge count took one multiply
           per step: hours; with ψ 0.004 that is past step 229,000) */
        if (0.5 * pow(0.96, (double)i * hp->momentum_decay) < 0x1p-54)
            return prod * pow(hp->beta1, (double)(t - i + 1));
        prod *= clopt_nadam_mu(hp, (double)i);
    }
    return prod;
}

double clopt_schedule_free_advance(const clopt_hparams *hp, uint64_t t, double *lr_max,
                                   double *weight_sum, double *lr_t)
{
    if (!hp || !lr_max || !weight_sum || t == 0)
        return 0.0;
    const double td = (double)t;
    const double lr = hp->lr * (hp->warmup_steps && td <= hp->warmup_steps
                                    ? td / (double)hp->warmup_steps
                                    : 1.0);
    if (lr > *lr_max)
        *lr_max = lr;
    const double w = pow(td, hp->r) * pow(*lr_max, hp->weight_lr_power);
    *weight_sum += w;
    if (lr_t)
        *lr_t = lr;
    return *weight_sum != 0.0 ? w / *weight_sum : 0.0;
}

/* AdEMAMix's schedulers (apple/ml-ademamix): α_t linear, β3_t linear on the half-life scale
   f(β) = ln(0.5)/ln(β + 1e-8) - 1, both while t < their warmup. */
static double ademamix_alpha(const clopt_hparams *hp, double t)
{
    return hp->alpha_warmup && t < hp->alpha_warmup ? t / hp->alpha_warmup * hp->alpha
                                                    : hp->alpha;
}

static double ademamix_beta3(const clopt_hparams *hp, double t)
{
    if (!(hp->beta3_warmup && t < hp->beta3_warmup))
        return hp->beta3;
    const double a = t / hp->beta3_warmup;
    const double f1 = log(0.5) / log(hp->beta1 + 1e-8) - 1.0;
    const double f3 = log(0.5) / log(hp->beta3 + 1e-8) - 1.0;
    return pow(0.5, 1.0 / ((1.0 - a) * f1 + a * f3 + 1.0));
}

#define PUSH(x) (plan->scalars[plan->nscalars++] = (float)(x))
/* A decay rate and its complement, both rounded from double: 1.0f - (float)0.999 would be
   off by 1.3e-5 relative, which the golden tolerances notice. */
#define PUSH_RATE(x) (PUSH(x), PUSH(1.0 - (x)))

clopt_status clopt_plan_step(clopt_ctx *ctx, clopt_rule rule, const clopt_hparams *hp,
                             const clopt_step_args *args, uint64_t step, clopt_launch_plan *plan)
{
    const double t = (double)step;
    const double lr = hp->lr, wd = hp->weight_decay, b1 = hp->beta1, b2 = hp->beta2;
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    memset(plan, 0, sizeof *plan);
    plan->family = rules[rule].family;
    plan->kernel = rules[rule].kernel;
    plan->gc = hp->grad_centralization && args->gc_rows > 0;
    plan->tuning = clopt_kernel_tuning(ctx, plan->kernel);
    /* 8-bit state (kernels/storage.cl): a tuning of one vector per work-item (GPUs) gives a
       work-group of 256 / VW work-items per block of 256 elements; any other (the CPU's 16
       vectors per work-item) one work-item per block, VW 16 x IPW 16 */
    const int q8 = args->state_dtype == CLOPT_DTYPE_U8;
    plan->q8_group = q8 && clopt_tuning_ipw(&plan->tuning) == 1;
    /* GC looks up each element's row mean: with 16 elements per work-item that costs one
       integer division per 16 elements instead of one per element (not for the work-group
       shape of 8-bit state, where VW 16 would leave 16 work-items per group) */
    if (plan->gc && !ctx->tuning_fixed && !plan->q8_group && plan->tuning.vector_width < 16)
        plan->tuning.vector_width = 16;
    if (plan->q8_group) {
        plan->tuning.work_group_size = 256 / plan->tuning.vector_width;
    } else if (q8) {
        plan->tuning.vector_width = 16;
        plan->tuning.items_per_work_item = 16;
    }
    int len = snprintf(plan->options, sizeof plan->options,
                       CLOPT_TUNING_OPTIONS " -DMAXIMIZE=%d -DGC=%d",
                       CLOPT_TUNING_ARGS(&plan->tuning), hp->maximize ? 1 : 0, plan->gc);
    char *opt = plan->options + len;
    size_t room = sizeof plan->options - (size_t)len;
    switch (rule) {
    case CLOPT_SGD:
        snprintf(opt, room, " -DMOMENTUM=%d -DNESTEROV=%d", hp->momentum != 0,
                 hp->nesterov != 0);
        plan->has_int_arg = 1;
        plan->int_arg = step == 1;
        PUSH(lr), PUSH(wd), PUSH(hp->momentum), PUSH_RATE(hp->dampening);
        break;
    case CLOPT_ADAM:
    case CLOPT_ADAMW:
        snprintf(opt, room, " -DDECOUPLED=%d -DAMSGRAD=%d", rule == CLOPT_ADAMW,
                 hp->amsgrad != 0);
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(wd), PUSH(lr * wd), PUSH(lr / bc1),
            PUSH(1.0 / sqrt(bc2));
        break;
    case CLOPT_ADAGRAD:
        PUSH(hp->eps), PUSH(wd), PUSH(lr / (1.0 + (t - 1.0) * hp->lr_decay));
        break;
    case CLOPT_ADADELTA:
        PUSH_RATE(hp->rho), PUSH(hp->eps), PUSH(wd), PUSH(lr);
        break;
    case CLOPT_RMSPROP:
        snprintf(opt, room, " -DMOMENTUM=%d -DCENTERED=%d", hp->momentum != 0,
                 hp->centered != 0);
        PUSH_RATE(hp->alpha), PUSH(hp->eps), PUSH(wd), PUSH(hp->momentum), PUSH(lr);
        break;
    case CLOPT_ADAMAX:
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(wd), PUSH(lr / bc1);
        break;
    case CLOPT_NADAM: {
        double mu = clopt_nadam_mu(hp, t), mu_next = clopt_nadam_mu(hp, t + 1.0);
        double prod = args->mu_product * mu;
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(wd), PUSH(1.0 / bc2),
            PUSH(lr * (1.0 - mu) / (1.0 - prod)), PUSH(lr * mu_next / (1.0 - prod * mu_next));
        break;
    }
    case CLOPT_RADAM:
    case CLOPT_RANGER: {
        /* torch rectifies when ρ_t > 5; Ranger when ρ_t > n_sma_threshold (5) */
        const double threshold = rule == CLOPT_RANGER ? hp->n_sma_threshold : 5.0;
        double rho_inf = 2.0 / (1.0 - b2) - 1.0;
        double rho_t = rho_inf - 2.0 * t * pow(b2, t) / bc2;
        snprintf(opt, room, " -DDECOUPLED=%d", rule == CLOPT_RANGER);
        plan->has_int_arg = 1;
        plan->int_arg = rho_t > threshold;
        double c = lr / bc1;
        if (rho_t > threshold)
            c *= sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                      ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) *
                 sqrt(bc2);
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(wd), PUSH(lr * wd), PUSH(c);
        break;
    }
    case CLOPT_ADAMOD:
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH_RATE(hp->beta3), PUSH(hp->eps), PUSH(lr * wd),
            PUSH(lr * sqrt(bc2) / bc1);
        break;
    case CLOPT_DIFFGRAD:
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(wd), PUSH(lr * sqrt(bc2) / bc1);
        break;
    case CLOPT_LION:
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(lr * wd), PUSH(lr);
        break;
    case CLOPT_SOPHIA:
        plan->uses_hessian = args->hessian.buffer != NULL;
        snprintf(opt, room, " -DHESS=%d", plan->uses_hessian);
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(hp->rho * hp->bs), PUSH(lr * wd), PUSH(lr);
        break;
    case CLOPT_SCHEDULE_FREE_ADAMW:
    case CLOPT_SCHEDULE_FREE_SGD: {
        double lr_max = args->sf_lr_max, wsum = args->sf_weight_sum, lr_t;
        const double c = clopt_schedule_free_advance(hp, step, &lr_max, &wsum, &lr_t);
        const double beta = clopt_sf_beta(rule, hp);
        plan->has_int_arg = 1;
        plan->int_arg = step == 1; /* z_0 = θ_0: the kernel takes θ for z */
        if (rule == CLOPT_SCHEDULE_FREE_ADAMW)
            PUSH_RATE(b2), PUSH(hp->eps), PUSH(1.0 / bc2);
        PUSH(wd), PUSH(c), PUSH(1.0 - c), PUSH(lr_t * (beta * (1.0 - c) - 1.0)), PUSH(lr_t);
        break;
    }
    case CLOPT_ADOPT: {
        plan->has_int_arg = 1;
        plan->int_arg = step == 1; /* the first call only sets v = g² */
        const double bound = hp->clip_exponent > 0 ? pow(t - 1.0, hp->clip_exponent) : HUGE_VAL;
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH(hp->eps), PUSH(clopt_rule_l2_decay(rule, hp)),
            PUSH(hp->decouple ? lr * wd : 0.0), PUSH(bound), PUSH(lr);
        break;
    }
    case CLOPT_ADEMAMIX:
        PUSH_RATE(b1), PUSH_RATE(b2), PUSH_RATE(ademamix_beta3(hp, t)), PUSH(hp->eps), PUSH(wd),
            PUSH(lr), PUSH(1.0 / bc1), PUSH(1.0 / sqrt(bc2)), PUSH(ademamix_alpha(hp, t));
        break;
    default:
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "%s has no single-kernel op: use the optimizer level",
                          clopt_rule_name(rule));
    }
    return CLOPT_SUCCESS;
}
