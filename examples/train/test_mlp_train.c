/* SPDX-License-Identifier: MIT */
/*
 * A short training run of the Fashion-MNIST MLP (CLBlast + clopt), small enough for CI:
 *
 *  - one epoch of AdamW on the first 5,000 training images (40 steps of 128), evaluated on the
 *    first 2,000 test images: the mean loss of the last quarter of the steps must be below the
 *    first quarter's, and the test accuracy at least 0.75 (a run on this device reaches about
 *    0.78; an untrained model has 0.10, a broken update or gradient stays far below);
 *  - the same epoch again from the same seed gives bit-identical step losses (fixed-order
 *    reductions everywhere, the same CLBlast kernels);
 *  - every rule clopt ships trains a few steps from the example's default hyperparameters
 *    (groups, schedule, Adafactor's factored 2-D weights, Sophia's Hessian estimates) with a
 *    finite loss that goes down;
 *  - a missing dataset folder gives an error that names the Debian package;
 *  - storage: the same AdamW epoch with bf16 weights and a float32 master, and with 8-bit
 *    optimizer state, trains as well (loss falls, test accuracy >= 0.75); the weights the
 *    passes read are bf16 values, the optimizer keeps the "master" state, the state of the
 *    tensors of 4096 elements or more is u8 and the smaller ones' f32; settings that do not
 *    go together (a master of float32 weights, REMAINDER with f16, stochastic rounding with
 *    a master or with float32 weights, a storage type out of range) are refused by
 *    mlp_check_storage and by mlp_optimizer_create, and so is 8-bit state for a rule without
 *    it (the library's refusal). test_cli_storage.sh checks the refusals at the command line.
 *
 * The data come from Debian's dataset-fashion-mnist package (ci/install-deps.sh installs it;
 * $CLOPT_FASHION_MNIST_DIR overrides the folder). Without it the tests FAIL with that message:
 * they are not skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TRAIN_N = 5000, TEST_N = 2000, BATCH = 128 };

typedef struct fixture {
    mlp_dataset train, test;
    clopt_ctx *ctx;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    char err[1024] = "";
    if (mlp_dataset_load(NULL, 1, TRAIN_N, &f->train, err, sizeof err) != 0 ||
        mlp_dataset_load(NULL, 0, TEST_N, &f->test, err, sizeof err) != 0) {
        fprintf(stderr, "test_mlp_train: Fashion-MNIST is required and was not found: %s\n",
                err);
        mlp_dataset_free(&f->train);
        free(f);
        return -1; /* cmocka reports the group setup as failed: every test fails */
    }
    if (clopt_ctx_create(&f->ctx) != CLOPT_SUCCESS) {
        fprintf(stderr, "test_mlp_train: no OpenCL context\n");
        mlp_dataset_free(&f->train);
        mlp_dataset_free(&f->test);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f) {
        clopt_ctx_destroy(f->ctx);
        mlp_dataset_free(&f->train);
        mlp_dataset_free(&f->test);
        free(f);
    }
    return 0;
}

/* Storage of the weights and the optimizer state (NULL: float32). */
typedef struct storage {
    clopt_dtype param;
    clopt_master master;
    int stochastic_rounding;
    clopt_dtype state;
} storage;

typedef struct run {
    float *step_loss;
    size_t steps;
    mlp_epoch_stats stats;    /* the last epoch's */
    double epoch_loss[4];     /* the first epochs' mean training losses */
    double test_loss, test_acc;
} run;

/* With bf16 weights: every weight of layer 0 the passes read is a bf16 value (its low 16
   bits are zero), and with a master the optimizer keeps a state of that name per tensor. */
static void check_bf16_storage(mlp *m, clopt_optimizer *opt, const storage *st)
{
    const mlp_config *cfg = mlp_get_config(m);
    const size_t n = cfg->dims[0] * cfg->dims[1];
    float *w = malloc(n * sizeof *w);
    assert_non_null(w);
    assert_int_equal(mlp_get_layer(m, 0, w, NULL), 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &w[i], sizeof bits);
        assert_int_equal(bits & 0xffffu, 0);
        nonzero += w[i] != 0.0f;
    }
    assert_true(nonzero > n / 2);
    free(w);
    if (st->master == CLOPT_MASTER_NONE)
        return;
    const char *want = st->master == CLOPT_MASTER_F32 ? "master" : "master_remainder";
    for (size_t p = 0; p < clopt_optimizer_param_count(opt); p++) {
        size_t found = 0;
        for (size_t k = 0; k < clopt_optimizer_state_count(opt, p); k++) {
            const char *name = NULL;
            assert_int_equal(clopt_optimizer_state_info(opt, p, k, &name, NULL), CLOPT_SUCCESS);
            found += strcmp(name, want) == 0;
        }
        assert_int_equal(found, 1);
    }
}

/* With 8-bit state: every state tensor of 4096 elements or more (the first two layers'
   weights) is stored as u8, the smaller ones (the last layer's 10 x 128 weights, the biases)
   as f32, as bitsandbytes. */
static void check_q8_state(clopt_optimizer *opt)
{
    size_t u8 = 0, all = 0;
    for (size_t i = 0; i < clopt_optimizer_state_entry_count(opt); i++) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(opt, i, &e), CLOPT_SUCCESS);
        if (strcmp(e.name, "exp_avg") != 0 && strcmp(e.name, "exp_avg_sq") != 0)
            continue;
        if (e.dtype != (e.length >= 4096 ? CLOPT_DTYPE_U8 : CLOPT_DTYPE_F32))
            fail_msg("%s: %zu elements stored as %s", e.key, e.length, clopt_dtype_name(e.dtype));
        u8 += e.dtype == CLOPT_DTYPE_U8;
        all++;
    }
    assert_int_equal(all, 12);
    assert_int_equal(u8, 4);
}

/* Cautious masking for the runs of train() (every_rule_trains sets it for its cautious
   variants). */
static int train_cautious;

/* Train `epochs` epochs (only the last one's step losses are kept) of rule on the first
   train_n training images; evaluate on the test images when evaluate != 0 (Schedule-Free:
   at x, between mlp_set_eval_mode's eval and train). st: the weights' storage (NULL:
   float32). */
static void train(fixture *f, clopt_rule rule, size_t train_n, size_t epochs, int evaluate,
                  uint64_t seed, const storage *st, run *out)
{
    memset(out, 0, sizeof *out);
    mlp_dataset tr = f->train;
    tr.n = train_n < f->train.n ? train_n : f->train.n;
    mlp_config cfg = mlp_config_default(BATCH);
    if (st)
        cfg.param_dtype = st->param;
    mlp *m = NULL;
    char err[1024] = "";
    if (mlp_create(f->ctx, &cfg, rule == CLOPT_SOPHIA, &m, err, sizeof err) != 0)
        fail_msg("mlp_create: %s", err);
    double mean, sd;
    mlp_dataset_pixel_stats(&tr, &mean, &sd);
    mlp_set_normalization(m, mean, sd);
    mlp_device_data dtr, dte;
    assert_int_equal(mlp_init_he(m, seed), 0);
    assert_int_equal(mlp_upload(m, &tr, &dtr), 0);
    assert_int_equal(mlp_upload(m, &f->test, &dte), 0);
    out->steps = mlp_steps_per_epoch(tr.n, BATCH);
    mlp_train_config tc = {rule, 0.0, -1.0, out->steps / 20, epochs * out->steps,
                           st ? st->master : CLOPT_MASTER_NONE,
                           st ? st->stochastic_rounding : 0, seed,
                           st ? st->state : CLOPT_DTYPE_F32, train_cautious};
    clopt_optimizer *opt = NULL;
    if (mlp_optimizer_create(m, &tc, &opt) != 0)
        fail_msg("mlp_optimizer_create(%s): %s", clopt_rule_name(rule), mlp_last_error(m));
    /* Muon holds the weights only (the biases are in the model's AdamW of the hybrid) */
    const size_t muon = rule == CLOPT_MUON;
    assert_int_equal(clopt_optimizer_group_count(opt), muon ? 1 : 2);
    assert_int_equal(clopt_optimizer_param_count(opt), (muon ? 1 : 2) * cfg.nlayers);
    out->step_loss = malloc(out->steps * sizeof *out->step_loss);
    assert_non_null(out->step_loss);
    mlp_rng rng;
    mlp_rng_seed(&rng, seed + 99);
    for (size_t e = 0; e < epochs; e++) {
        if (mlp_train_epoch(m, opt, &dtr, &rng, out->step_loss, NULL, NULL, 0, &out->stats))
            fail_msg("%s: %s", clopt_rule_name(rule), mlp_last_error(m));
        if (e < 4)
            out->epoch_loss[e] = out->stats.loss;
    }
    assert_int_equal(clopt_optimizer_step_count(opt), epochs * out->steps);
    if (evaluate && (mlp_set_eval_mode(m, opt, 1) != 0 ||
                     mlp_evaluate(m, &dte, &out->test_loss, &out->test_acc) != 0 ||
                     mlp_set_eval_mode(m, opt, 0) != 0))
        fail_msg("mlp_evaluate: %s", mlp_last_error(m));
    if (st && st->param == CLOPT_DTYPE_BF16)
        check_bf16_storage(m, opt, st);
    if (st && st->state == CLOPT_DTYPE_U8)
        check_q8_state(opt);
    clopt_optimizer_destroy(opt);
    mlp_device_data_free(&dtr);
    mlp_device_data_free(&dte);
    mlp_destroy(m);
}

static double mean_of(const float *v, size_t from, size_t to)
{
    double s = 0.0;
    for (size_t i = from; i < to; i++)
        s += v[i];
    return s / (double)(to - from);
}

/* One AdamW epoch on TRAIN_N images with the weights and state in st (NULL: float32): the
   loss falls and the test accuracy is >= 0.75. */
static void one_epoch_trains(fixture *f, const storage *st, const char *what)
{
    run r;
    train(f, CLOPT_ADAMW, TRAIN_N, 1, 1, 1, st, &r);
    const size_t q = r.steps / 4;
    const double first = mean_of(r.step_loss, 0, q),
                 last = mean_of(r.step_loss, r.steps - q, r.steps);
    print_message("adamw%s, 1 epoch of %zu steps: loss first quarter %.4f, last quarter %.4f, "
                  "epoch %.4f, train acc %.4f, test acc %.4f (%zu images)\n",
                  what, r.steps, first, last, r.stats.loss, r.stats.accuracy, r.test_acc,
                  f->test.n);
    for (size_t i = 0; i < r.steps; i++)
        assert_true(isfinite(r.step_loss[i]));
    assert_true(last < first);
    assert_true(r.test_acc >= 0.75);
    assert_true(isfinite(r.test_loss) && r.test_loss < 1.0);
    free(r.step_loss);
}

static void adamw_one_epoch(void **state) { one_epoch_trains(*state, NULL, ""); }

static void same_seed_same_losses(void **state)
{
    fixture *f = *state;
    run a, b;
    train(f, CLOPT_ADAMW, 1280, 1, 0, 5, NULL, &a);
    train(f, CLOPT_ADAMW, 1280, 1, 0, 5, NULL, &b);
    assert_int_equal(a.steps, b.steps);
    assert_memory_equal(a.step_loss, b.step_loss, a.steps * sizeof(float));
    free(a.step_loss);
    free(b.step_loss);
}

/* Every rule, two epochs of 10 steps (warmup 0, cosine over the 20 steps): the second
   epoch's mean training loss is below the first's. Then the cautious variants of Adam,
   AdamW and Lion. Muon (with AdamW for the biases) only in a library built with CLBlast's
   Muon (clopt_has_muon). */
static void every_rule_trains(void **state)
{
    fixture *f = *state;
    static const clopt_rule cautious_rules[] = {CLOPT_ADAM, CLOPT_ADAMW, CLOPT_LION};
    const int n = CLOPT_RULE_COUNT + 3;
    for (int i = 0; i < n; i++) {
        const clopt_rule rule = i < CLOPT_RULE_COUNT ? (clopt_rule)i
                                                     : cautious_rules[i - CLOPT_RULE_COUNT];
        if (rule == CLOPT_MUON && !clopt_has_muon()) {
            print_message("%-10s skipped: the library was built without Muon\n",
                          clopt_rule_name(rule));
            continue;
        }
        train_cautious = i >= CLOPT_RULE_COUNT;
        run r;
        train(f, rule, 10 * BATCH, 2, 0, 3, NULL, &r);
        train_cautious = 0;
        free(r.step_loss);
        print_message("%s%-10s epoch 1 loss %.4f, epoch 2 loss %.4f\n",
                      i >= CLOPT_RULE_COUNT ? "cautious " : "", clopt_rule_name(rule),
                      r.epoch_loss[0], r.epoch_loss[1]);
        if (!(isfinite(r.epoch_loss[1]) && r.epoch_loss[1] < r.epoch_loss[0]))
            fail_msg("%s does not train: mean loss %.4f in epoch 1, %.4f in epoch 2",
                     clopt_rule_name(rule), r.epoch_loss[0], r.epoch_loss[1]);
    }
}

/* The adamw_one_epoch run with other storage trains as well. */
static void bf16_master_f32_trains(void **state)
{
    const storage st = {CLOPT_DTYPE_BF16, CLOPT_MASTER_F32, 0, CLOPT_DTYPE_F32};
    one_epoch_trains(*state, &st, " (bf16 weights, f32 master)");
}

static void int8_state_trains(void **state)
{
    const storage st = {CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, 0, CLOPT_DTYPE_U8};
    one_epoch_trains(*state, &st, " (8-bit state)");
}

/* Storage settings that do not go together are refused, with a message that names the
   option to change; the valid ones are accepted. */
static void storage_combinations_refused(void **state)
{
    fixture *f = *state;
#define F32 CLOPT_DTYPE_F32
#define F16 CLOPT_DTYPE_F16
#define BF16 CLOPT_DTYPE_BF16
    static const struct {
        clopt_dtype param, state;
        clopt_master master;
        int sr;
        const char *names; /* NULL: valid */
    } cases[] = {
        {F32, F32, CLOPT_MASTER_NONE, 0, NULL},
        {F16, F32, CLOPT_MASTER_NONE, 0, NULL},
        {F16, BF16, CLOPT_MASTER_F32, 0, NULL},
        {F16, CLOPT_DTYPE_U8, CLOPT_MASTER_NONE, 1, NULL},
        {BF16, F32, CLOPT_MASTER_F32, 0, NULL},
        {BF16, CLOPT_DTYPE_U8, CLOPT_MASTER_REMAINDER, 0, NULL},
        {BF16, F32, CLOPT_MASTER_NONE, 1, NULL},
        {F32, F32, CLOPT_MASTER_F32, 0, "--param-dtype"},
        {F32, F32, CLOPT_MASTER_REMAINDER, 0, "--param-dtype"},
        {F16, F32, CLOPT_MASTER_REMAINDER, 0, "--master remainder needs --param-dtype bf16"},
        {BF16, F32, CLOPT_MASTER_F32, 1, "--master none"},
        {BF16, F32, CLOPT_MASTER_REMAINDER, 1, "--master none"},
        {F32, F32, CLOPT_MASTER_NONE, 1, "--stochastic-rounding needs --param-dtype"},
        {CLOPT_DTYPE_U16, F32, CLOPT_MASTER_NONE, 0, "f32, f16 or bf16"},
        {F32, F16, CLOPT_MASTER_NONE, 0, "--state-dtype"},
        {F32, CLOPT_DTYPE_U16, CLOPT_MASTER_NONE, 0, "--state-dtype"},
    };
#undef F32
#undef F16
#undef BF16
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        const int rc = mlp_check_storage(cases[i].param, cases[i].state, cases[i].master,
                                         cases[i].sr, err, sizeof err);
        if (!cases[i].names) {
            assert_int_equal(rc, 0);
            continue;
        }
        assert_int_equal(rc, -1);
        if (!strstr(err, cases[i].names))
            fail_msg("case %zu: '%s' does not mention '%s'", i, err, cases[i].names);
    }
    /* mlp_optimizer_create checks too: f16 weights with bf16 remainders */
    mlp_config cfg = mlp_config_default(BATCH);
    cfg.param_dtype = CLOPT_DTYPE_F16;
    mlp *m = NULL;
    char err[1024] = "";
    if (mlp_create(f->ctx, &cfg, 0, &m, err, sizeof err) != 0)
        fail_msg("mlp_create: %s", err);
    const mlp_train_config tc = {CLOPT_ADAMW, 0.0, -1.0, 0, 10, CLOPT_MASTER_REMAINDER, 0, 1,
                                 CLOPT_DTYPE_F32, 0};
    clopt_optimizer *opt = NULL;
    assert_int_equal(mlp_optimizer_create(m, &tc, &opt), -1);
    assert_null(opt);
    assert_non_null(strstr(mlp_last_error(m), "--master remainder"));
    /* the library's refusal: NAdam has no 8-bit state */
    const mlp_train_config q8 = {CLOPT_NADAM, 0.0, -1.0, 0, 10, CLOPT_MASTER_NONE, 0, 1,
                                 CLOPT_DTYPE_U8, 0};
    assert_int_equal(mlp_optimizer_create(m, &q8, &opt), -1);
    assert_null(opt);
    print_message("nadam with 8-bit state: %s\n", mlp_last_error(m));
    assert_non_null(strstr(mlp_last_error(m), "not supported"));
    mlp_destroy(m);
}

static void missing_dataset_is_an_error(void **state)
{
    (void)state;
    mlp_dataset d;
    char err[1024] = "";
    assert_int_equal(mlp_dataset_load("/nonexistent/fashion-mnist", 1, 10, &d, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "dataset-fashion-mnist"));
    assert_null(d.pixels);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(adamw_one_epoch),
        cmocka_unit_test(same_seed_same_losses),
        cmocka_unit_test(every_rule_trains),
        cmocka_unit_test(missing_dataset_is_an_error),
        cmocka_unit_test(bf16_master_f32_trains),
        cmocka_unit_test(int8_state_trains),
        cmocka_unit_test(storage_combinations_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
