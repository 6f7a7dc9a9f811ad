/* SPDX-License-Identifier: MIT */
/* Every element-wise rule sharded vs the unsharded optimizer, bit for bit, with the
 * gradient reduced by the engine (CLOPT_MPI_GRAD_ENGINE): the full parameter buffer (gaps
 * included) after every step, every state of every piece of the shard against the same
 * slice of the unsharded state, and the state bytes (the ranks' sum is the unsharded
 * optimizer's). Layouts: five tensors of 46 elements (the shards cut tensors) and one
 * vector of world-1 elements (rank 0 owns nothing). Also a change of hyperparameters and
 * a schedule mid-run. Then the rules with per-tensor reductions (LAMB, Adafactor,
 * StableAdamW, cautious, gradient centralization) on tensor-aligned shards, bit for bit, and
 * two parameter groups over one pair of buffers, and Muon on matrices (whole tensors) in a
 * build with CLBlast. */
#include "mpi_fixture.h"

#include <string.h>

#define STEPS 7 /* past RAdam's rectification (t = 6) and Ranger's Lookahead (k = 6) */

typedef struct rule_case {
    const char *name;
    clopt_rule rule;
    void (*tweak)(clopt_hparams *hp);
} rule_case;

static void t_none(clopt_hparams *hp)
{
    (void)hp;
}
static void t_sgd(clopt_hparams *hp)
{
    hp->lr = 0.05;
}
static void t_sgd_nesterov(clopt_hparams *hp)
{
    hp->lr = 0.05;
    hp->momentum = 0.9;
    hp->nesterov = 1;
    hp->weight_decay = 0.01;
}
static void t_adam(clopt_hparams *hp)
{
    hp->amsgrad = 1;
    hp->weight_decay = 0.01;
}
static void t_adamw_la(clopt_hparams *hp)
{
    hp->lookahead_k = 2;
    hp->lookahead_alpha = 0.5;
}
static void t_adamw_bf16(clopt_hparams *hp)
{
    hp->state_dtype = CLOPT_DTYPE_BF16;
}
static void t_rmsprop(clopt_hparams *hp)
{
    hp->momentum = 0.9;
    hp->centered = 1;
}
static void t_ranger(clopt_hparams *hp)
{
    hp->grad_centralization = 0;
}
static void t_maximize(clopt_hparams *hp)
{
    hp->maximize = 1;
}

static const rule_case cases[] = {
    {"sgd", CLOPT_SGD, t_sgd},
    {"sgd nesterov", CLOPT_SGD, t_sgd_nesterov},
    {"adam amsgrad", CLOPT_ADAM, t_adam},
    {"adamw", CLOPT_ADAMW, t_none},
    {"adamw lookahead", CLOPT_ADAMW, t_adamw_la},
    {"adamw bf16 state", CLOPT_ADAMW, t_adamw_bf16},
    {"adagrad", CLOPT_ADAGRAD, t_none},
    {"adadelta", CLOPT_ADADELTA, t_none},
    {"rmsprop centered", CLOPT_RMSPROP, t_rmsprop},
    {"adamax", CLOPT_ADAMAX, t_none},
    {"nadam", CLOPT_NADAM, t_none},
    {"radam", CLOPT_RADAM, t_none},
    {"adamod", CLOPT_ADAMOD, t_none},
    {"diffgrad", CLOPT_DIFFGRAD, t_none},
    {"lion maximize", CLOPT_LION, t_maximize},
    {"ranger (no GC)", CLOPT_RANGER, t_ranger},
    {"schedule_free_adamw", CLOPT_SCHEDULE_FREE_ADAMW, t_none},
    {"schedule_free_sgd", CLOPT_SCHEDULE_FREE_SGD, t_none},
    {"adopt", CLOPT_ADOPT, t_none},
    {"ademamix", CLOPT_ADEMAMIX, t_none},
};

/* The rules with per-tensor reductions, on tensor-aligned shards (shard_tensors = 1). */
static void t_cautious(clopt_hparams *hp)
{
    hp->cautious = 1;
}
static void t_gc(clopt_hparams *hp)
{
    hp->grad_centralization = 1;
}
static void t_adafactor_b1(clopt_hparams *hp)
{
    hp->use_beta1 = 1;
}
static const rule_case whole_cases[] = {
    {"lamb", CLOPT_LAMB, t_none},
    {"adafactor", CLOPT_ADAFACTOR, t_none},
    {"adafactor beta1", CLOPT_ADAFACTOR, t_adafactor_b1},
    {"stable_adamw", CLOPT_STABLE_ADAMW, t_none},
    {"adamw cautious", CLOPT_ADAMW, t_cautious},
    {"lion cautious", CLOPT_LION, t_cautious},
    {"adamw GC", CLOPT_ADAMW, t_gc},
    {"ranger (GC)", CLOPT_RANGER, t_none},
    {"adamw (whole tensors)", CLOPT_ADAMW, t_none},
};

static void run_case(const rule_case *c, const fx_layout *L, int midrun, int whole)
{
    char what[160];
    snprintf(what, sizeof what, "%s, %zu elements%s", c->name, L->total,
             whole ? ", whole tensors" : "");
    clopt_mpi_options o;
    clopt_mpi_options_init(&o);
    o.shard_tensors = whole;
    clopt_hparams hp;
    CHECK_OK(clopt_hparams_default(c->rule, &hp));
    c->tweak(&hp);
    cl_mem p = fx_buffer(L->plen, 1234.5f), g = fx_buffer(L->glen, -77.0f);
    cl_mem rp = fx_buffer(L->plen, 1234.5f), rg = fx_buffer(L->glen, -77.0f);
    float *flat = malloc(L->total * sizeof *flat);
    float *a = malloc(L->plen * sizeof *a), *b = malloc(L->plen * sizeof *b);
    CHECK(flat && a && b, "malloc");
    for (size_t i = 0; i < L->total; i++)
        flat[i] = fx_val(1, i);
    fx_scatter(L, 0, p, flat);
    fx_scatter(L, 0, rp, flat);

    clopt_param_desc d[FX_MAX_T];
    clopt_range_group desc;
    fx_range_group(L, p, g, d, &desc);
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create(fx_ctx, c->rule, &hp, MPI_COMM_WORLD, &desc,
                                                      &o, &sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "%s: create: %s: %s", what, clopt_mpi_status_name(s), why);
    clopt_optimizer *ref = fx_reference(c->rule, &hp, L, rp, rg);

    for (unsigned t = 1; t <= STEPS; t++) {
        if (midrun && t == 4) { /* new hyperparameters and a schedule on both */
            clopt_hparams h2 = hp;
            h2.lr *= 0.5;
            CHECK_OK(clopt_mpi_optimizer_set_hparams(sh, &h2));
            CHECK_OK(clopt_optimizer_set_group_hparams(ref, 1, &h2));
            clopt_schedule sc = {1, {{.kind = CLOPT_SCHED_EXPONENTIAL, .gamma = 0.9}}};
            CHECK_OK(clopt_mpi_optimizer_set_schedule(sh, &sc));
            CHECK_OK(clopt_optimizer_set_group_schedule(ref, 1, &sc));
        }
        for (size_t i = 0; i < L->total; i++)
            flat[i] = fx_val(100 + t, i) * (i % 5 == 0 ? 1e-3f : 1.0f); /* the reduced g */
        fx_scatter(L, 1, g, flat);
        fx_scatter(L, 1, rg, flat);
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == CLOPT_SUCCESS, "%s: step %u: %s: %s", what, t, clopt_mpi_status_name(st),
              clopt_mpi_optimizer_last_error(sh));
        CHECK_OK(clopt_optimizer_step(ref, NULL));
        fx_read(p, a, L->plen);
        fx_read(rp, b, L->plen);
        for (size_t i = 0; i < L->plen; i++)
            CHECK(memcmp(&a[i], &b[i], sizeof *a) == 0,
                  "%s: step %u: element %zu of the buffer: sharded %.9g, unsharded %.9g", what, t,
                  i, (double)a[i], (double)b[i]);
    }
    /* the steps moved every tensor and left the gaps between them alone */
    for (size_t i = 0; i < L->nt; i++) {
        size_t moved = 0;
        for (size_t j = 0; j < L->n[i]; j++)
            moved += a[L->poff[i] + j] != fx_val(1, j + (L->poff[i] - 5 - 3 * i));
        CHECK(moved > 0, "%s: tensor %zu did not move", what, i);
        for (size_t j = L->poff[i] + L->n[i]; j < L->poff[i] + L->n[i] + 3; j++)
            CHECK(a[j] == 1234.5f, "%s: the gap after tensor %zu was written", what, i);
    }
    CHECK(clopt_mpi_optimizer_step_count(sh) == STEPS, "%s: step count", what);
    fx_check_states(what, sh, ref, L);
    if (c->rule == CLOPT_SCHEDULE_FREE_ADAMW || c->rule == CLOPT_SCHEDULE_FREE_SGD) {
        /* eval writes x on every rank's full buffer, train writes y back: as unsharded */
        for (int train = 0; train < 2; train++) {
            CHECK_OK(clopt_mpi_optimizer_set_mode(sh, train));
            CHECK_OK(train ? clopt_optimizer_train(ref) : clopt_optimizer_eval(ref));
            CHECK(clopt_mpi_optimizer_training(sh) == train, "%s: mode", what);
            fx_read(p, a, L->plen);
            fx_read(rp, b, L->plen);
            CHECK(memcmp(a, b, L->plen * sizeof *a) == 0, "%s: %s mode differs", what,
                  train ? "train" : "eval");
            if (!train)
                CHECK_STATUS(clopt_mpi_optimizer_step(sh, NULL), CLOPT_ERR_INVALID_ARGUMENT);
        }
    }
    unsigned long long mine = clopt_mpi_optimizer_state_bytes(sh), sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    CHECK(sum == clopt_optimizer_state_bytes(ref),
          "%s: state bytes %llu over the ranks, %zu "
          "unsharded",
          what, sum, clopt_optimizer_state_bytes(ref));

    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(a);
    free(b);
}

/* Two groups over the same buffers (tensors 0-1 with weight decay, 2-4 without, as an
   engine's decay / no-decay split): shards cut across the group boundary; a group's lr
   changed mid-run; bit for bit against the unsharded optimizer with the same two groups. */
static void run_groups(clopt_rule rule, int clip)
{
    fx_layout Lm;
    fx_layout_main(&Lm);
    const fx_layout *L = &Lm;
    char what[96];
    snprintf(what, sizeof what, "%s, two groups%s", clopt_rule_name(rule), clip ? ", clip" : "");
    clopt_hparams hps[2];
    CHECK_OK(clopt_hparams_default(rule, &hps[0]));
    hps[0].weight_decay = 0.1;
    hps[1] = hps[0];
    hps[1].weight_decay = 0.0;
    hps[1].lr *= 2;
    cl_mem p = fx_buffer(L->plen, 1234.5f), g = fx_buffer(L->glen, -77.0f);
    cl_mem rp = fx_buffer(L->plen, 1234.5f), rg = fx_buffer(L->glen, -77.0f);
    float *flat = malloc(L->total * sizeof *flat);
    float *a = malloc(L->plen * sizeof *a), *b = malloc(L->plen * sizeof *b);
    CHECK(flat && a && b, "malloc");
    for (size_t i = 0; i < L->total; i++)
        flat[i] = fx_val(2, i);
    fx_scatter(L, 0, p, flat);
    fx_scatter(L, 0, rp, flat);
    clopt_param_desc d[FX_MAX_T], rd[FX_MAX_T];
    clopt_range_group all, rall, descs[2];
    fx_range_group(L, p, g, d, &all);
    fx_range_group(L, rp, rg, rd, &rall);
    descs[0] = all;
    descs[0].ntensors = 2;
    descs[1] = all;
    descs[1].tensors = d + 2;
    descs[1].ntensors = L->nt - 2;
    clopt_mpi_optimizer *sh = NULL;
    char why[512];
    const clopt_status s = clopt_mpi_optimizer_create_groups(fx_ctx, rule, MPI_COMM_WORLD, 2, hps,
                                                             descs, NULL, &sh, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "%s: create: %s: %s", what, clopt_mpi_status_name(s), why);
    clopt_optimizer *ref = NULL;
    CHECK_OK(clopt_optimizer_create(fx_ctx, rule, &hps[0], &ref));
    clopt_range_group r0 = rall, r1 = rall;
    r0.ntensors = 2;
    r1.tensors = rd + 2;
    r1.ntensors = L->nt - 2;
    CHECK_OK(clopt_optimizer_add_range_group(ref, &hps[0], &r0, NULL, NULL));
    CHECK_OK(clopt_optimizer_add_range_group(ref, &hps[1], &r1, NULL, NULL));
    if (clip) { /* an inactive clip: the norm is measured over both groups, bits unchanged */
        CHECK_OK(clopt_mpi_optimizer_set_grad_clip(sh, 1e6));
        CHECK_OK(clopt_optimizer_set_grad_clip(ref, 1e6));
    }
    for (unsigned t = 1; t <= 4; t++) {
        if (t == 3) {
            clopt_hparams h = hps[1];
            h.lr *= 0.25;
            CHECK_OK(clopt_mpi_optimizer_set_group_hparams(sh, 1, &h));
            CHECK_OK(clopt_optimizer_set_group_hparams(ref, 2, &h));
            clopt_hparams back;
            CHECK_OK(clopt_mpi_optimizer_get_group_hparams(sh, 1, &back));
            CHECK(back.lr == h.lr, "%s: get_group_hparams", what);
        }
        for (size_t i = 0; i < L->total; i++)
            flat[i] = fx_val(200 + t, i);
        fx_scatter(L, 1, g, flat);
        fx_scatter(L, 1, rg, flat);
        const clopt_status st = clopt_mpi_optimizer_step(sh, NULL);
        CHECK(st == CLOPT_SUCCESS, "%s: step %u: %s: %s", what, t, clopt_mpi_status_name(st),
              clopt_mpi_optimizer_last_error(sh));
        CHECK_OK(clopt_optimizer_step(ref, NULL));
        fx_read(p, a, L->plen);
        fx_read(rp, b, L->plen);
        CHECK(memcmp(a, b, L->plen * sizeof *a) == 0, "%s: step %u differs from unsharded", what,
              t);
    }
    fx_check_states(what, sh, ref, L);
    CHECK_STATUS(clopt_mpi_optimizer_set_group_hparams(sh, 2, &hps[0]), CLOPT_ERR_INDEX);
    /* a new state layout (Lookahead's slow weights) is refused for each group on every rank,
       also on one that holds none of the group (its internal optimizer saw no tensor to
       refuse it for), by set_hparams too; nothing changes */
    for (size_t gi = 0; gi < 2; gi++) {
        clopt_hparams hl, before, after;
        CHECK_OK(clopt_mpi_optimizer_get_group_hparams(sh, gi, &before));
        hl = before;
        hl.lookahead_k = 5;
        CHECK_STATUS(clopt_mpi_optimizer_set_group_hparams(sh, gi, &hl),
                     CLOPT_ERR_STATE_MISMATCH);
        CHECK_STATUS(clopt_mpi_optimizer_set_hparams(sh, &hl), CLOPT_ERR_STATE_MISMATCH);
        CHECK_OK(clopt_mpi_optimizer_get_group_hparams(sh, gi, &after));
        CHECK(after.lookahead_k == before.lookahead_k && after.lr == before.lr,
              "%s: group %zu changed by a refused call", what, gi);
    }
    fx_release(sh, ref, p, g, rp, rg);
    free(flat);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    fx_init(&argc, &argv);
    fx_layout main_l, tiny;
    fx_layout_main(&main_l);
    fx_layout_vector(&tiny, (size_t)(fx_size > 1 ? fx_size - 1 : 1));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        run_case(&cases[c], &main_l, c == 3, 0);
        run_case(&cases[c], &tiny, 0, 0);
    }
    for (size_t c = 0; c < sizeof whole_cases / sizeof whole_cases[0]; c++) {
        run_case(&whole_cases[c], &main_l, c == 0, 1);
        run_case(&whole_cases[c], &tiny, 0, 1);
    }
    if (clopt_has_muon()) { /* Muon (a CLBlast build): 2-D tensors, each whole on one rank */
        fx_layout mats;
        fx_layout_matrices(&mats);
        const rule_case muon = {"muon", CLOPT_MUON, t_none};
        run_case(&muon, &mats, 1, 1);
    }
    run_groups(CLOPT_ADAMW, 0);
    run_groups(CLOPT_SGD, 1);
    return fx_finish("test_mpi_elementwise");
}
