/* SPDX-License-Identifier: MIT */
/* PLACEHOLDER while Muon is written (not to be committed). */
#include "optimizer_internal.h"
clopt_status clopt_o_step_muon(clopt_optimizer *opt, const clopt_param *e,
                               const clopt_hparams *hp, uint64_t t, float gmul)
{
    (void)e, (void)hp, (void)t, (void)gmul;
    return clopt_fail(opt->ctx, CLOPT_ERR_UNSUPPORTED, "muon: not yet");
}
