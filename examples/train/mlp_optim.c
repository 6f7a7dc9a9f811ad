/* SPDX-License-Identifier: MIT */
/* The example's optimizer settings: the rule names the command line takes (clopt's plus the
 * cautious variants), the default learning rate and weight decay per rule, Muon's AdamW for
 * the biases, and the storage combinations that go together. */
#include "mlp.h"

#include <string.h>

int mlp_rule_from_name(const char *name, clopt_rule *rule, int *cautious)
{
    static const struct {
        const char *name;
        clopt_rule rule;
    } cautious_names[] = {{"cautious_adam", CLOPT_ADAM},
                          {"cautious_adamw", CLOPT_ADAMW},
                          {"cautious_lion", CLOPT_LION}};
    for (size_t i = 0; i < sizeof cautious_names / sizeof cautious_names[0]; i++)
        if (!strcmp(name, cautious_names[i].name)) {
            *rule = cautious_names[i].rule;
            *cautious = 1;
            return 0;
        }
    *cautious = 0;
    return clopt_rule_from_name(name, rule) == CLOPT_SUCCESS ? 0 : -1;
}

void mlp_muon_bias_hparams(const clopt_hparams *muon, clopt_hparams *out)
{
    clopt_hparams_default(CLOPT_ADAMW, out);
    mlp_default_lr_wd(CLOPT_ADAMW, &out->lr, NULL);
    out->weight_decay = 0.0;
    out->master = muon->master;
    out->stochastic_rounding = muon->stochastic_rounding;
    out->state_dtype = muon->state_dtype;
}

/* Learning rate and weight decay per rule for this MLP with batch 128 and the warmup + cosine
   schedule, from a coarse sweep (2 epochs on 20,000 images, lr in steps of about 3x; the
   smaller of two nearly equal choices is kept, as longer runs prefer it). Weight decay is
   decoupled (θ *= 1 - lr·wd) for AdamW, AdaMod, Lion, Sophia, Adafactor (HF: θ -= wd·lr·θ),
   LAMB (inside the trust ratio), Ranger, AdEMAMix (θ -= lr·wd·θ) and StableAdamW, added to
   the normalised update at y for Schedule-Free AdamW, and L2 (added to g) for the rest. Lion
   and Sophia take a larger wd so that lr·wd stays near AdamW's. The rules of 2024-2025 were
   not swept: they take their papers' or code's defaults where those fit a 10-epoch run
   (see README.md). Cautious variants take their base rule's values. */
void mlp_default_lr_wd(clopt_rule rule, double *lr, double *weight_decay)
{
    double l = 1e-3, wd = 0.0;
    switch (rule) {
    case CLOPT_SGD: l = 0.05; wd = 5e-4; break; /* momentum 0.9 */
    case CLOPT_ADAM: l = 1e-3; break;
    case CLOPT_ADAMW: l = 1e-3; wd = 0.05; break;
    case CLOPT_ADAGRAD: l = 1e-2; break;
    case CLOPT_ADADELTA: l = 1.0; break;
    case CLOPT_RMSPROP: l = 5e-4; break;
    case CLOPT_ADAMAX: l = 2e-3; break;
    case CLOPT_NADAM: l = 2e-3; break;
    case CLOPT_RADAM: l = 2e-3; break;
    case CLOPT_ADAMOD: l = 2e-3; wd = 0.05; break;
    case CLOPT_DIFFGRAD: l = 1e-3; break;
    case CLOPT_LION: l = 3e-4; wd = 0.2; break;
    case CLOPT_SOPHIA: l = 3e-4; wd = 0.2; break;
    case CLOPT_ADAFACTOR: l = 2e-3; break;
    case CLOPT_LAMB: l = 5e-3; wd = 0.01; break;
    case CLOPT_RANGER: l = 3e-3; break;
    /* the rules of 2024-2025: the papers' settings where they fit this run */
    case CLOPT_SCHEDULE_FREE_ADAMW: l = 2.5e-3; wd = 0.01; break; /* the reference's lr; no decay schedule */
    case CLOPT_SCHEDULE_FREE_SGD: l = 0.5; wd = 5e-4; break; /* 10x SGD's, as the authors advise */
    case CLOPT_ADOPT: l = 1e-3; break;
    case CLOPT_ADEMAMIX: l = 1e-3; wd = 0.05; break;
    case CLOPT_STABLE_ADAMW: l = 1e-3; wd = 0.05; break; /* AdamW's: AdamW + update clipping */
    case CLOPT_MUON: l = 0.02; break; /* the weights; biases: AdamW, mlp_muon_bias_hparams */
    default: break;
    }
    if (lr)
        *lr = l;
    if (weight_decay)
        *weight_decay = wd;
}

int mlp_check_storage(clopt_dtype param_dtype, clopt_dtype state_dtype, clopt_master master,
                      int stochastic_rounding, char *err, size_t errlen)
{
    const int p16 = param_dtype == CLOPT_DTYPE_F16 || param_dtype == CLOPT_DTYPE_BF16;
    const char *why = NULL;
    if (!p16 && param_dtype != CLOPT_DTYPE_F32)
        why = "the weights' storage must be f32, f16 or bf16";
    else if (state_dtype != CLOPT_DTYPE_F32 && state_dtype != CLOPT_DTYPE_BF16 &&
             state_dtype != CLOPT_DTYPE_U8)
        why = "the optimizer state's storage must be f32, bf16 or int8 (--state-dtype)";
    else if (master < CLOPT_MASTER_NONE || master > CLOPT_MASTER_REMAINDER)
        why = "--master must be none, f32 or remainder";
    else if (stochastic_rounding != 0 && stochastic_rounding != 1)
        why = "stochastic rounding is on (1) or off (0)";
    else if (master != CLOPT_MASTER_NONE && !p16)
        why = "--master keeps the float32 precision of 16-bit weights: it needs --param-dtype f16 "
              "or bf16 (float32 weights need no master)";
    else if (master == CLOPT_MASTER_REMAINDER && param_dtype != CLOPT_DTYPE_BF16)
        why = "--master remainder needs --param-dtype bf16 (the 16-bit remainder completes a "
              "bf16 weight to float32, not an f16 one); use --master f32 with f16";
    else if (stochastic_rounding && master != CLOPT_MASTER_NONE)
        why = "--stochastic-rounding rounds the weights themselves and needs --master none (a "
              "master copy keeps the update's precision already)";
    else if (stochastic_rounding && !p16)
        why = "--stochastic-rounding needs --param-dtype f16 or bf16 (float32 weights are not "
              "rounded)";
    if (why)
        mlp_put_err(err, errlen, "%s", why);
    return why ? -1 : 0;
}
