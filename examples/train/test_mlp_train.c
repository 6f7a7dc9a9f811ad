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
 *  - a missing dataset folder gives an error that names the Debian package.
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

typedef struct run {
    float *step_loss;
    size_t steps;
    mlp_epoch_stats stats;    /* the last epoch's */
    double epoch_loss[4];     /* the first epochs' mean training losses */
    double test_loss, test_acc;
} run;

/* Train `epochs` epochs (only the last one's step losses are kept) of rule on the first
   train_n training images; evaluate on the test images when evaluate != 0. */
static void train(fixture *f, clopt_rule rule, size_t train_n, size_t epochs, int evaluate,
                  uint64_t seed, run *out)
{
    memset(out, 0, sizeof *out);
    mlp_dataset tr = f->train;
    tr.n = train_n < f->train.n ? train_n : f->train.n;
    const mlp_config cfg = mlp_config_default(BATCH);
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
    mlp_train_config tc = {rule, 0.0, -1.0, out->steps / 20, epochs * out->steps};
    clopt_optimizer *opt = NULL;
    if (mlp_optimizer_create(m, &tc, &opt) != 0)
        fail_msg("mlp_optimizer_create(%s): %s", clopt_rule_name(rule), mlp_last_error(m));
    assert_int_equal(clopt_optimizer_group_count(opt), 2);
    assert_int_equal(clopt_optimizer_param_count(opt), 2 * cfg.nlayers);
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
    if (evaluate && mlp_evaluate(m, &dte, &out->test_loss, &out->test_acc) != 0)
        fail_msg("mlp_evaluate: %s", mlp_last_error(m));
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

static void adamw_one_epoch(void **state)
{
    fixture *f = *state;
    run r;
    train(f, CLOPT_ADAMW, TRAIN_N, 1, 1, 1, &r);
    const size_t q = r.steps / 4;
    const double first = mean_of(r.step_loss, 0, q), last = mean_of(r.step_loss, r.steps - q, r.steps);
    print_message("adamw, 1 epoch of %zu steps: loss first quarter %.4f, last quarter %.4f, "
                  "epoch %.4f, train acc %.4f, test acc %.4f (%zu images)\n",
                  r.steps, first, last, r.stats.loss, r.stats.accuracy, r.test_acc, f->test.n);
    for (size_t i = 0; i < r.steps; i++)
        assert_true(isfinite(r.step_loss[i]));
    assert_true(last < first);
    assert_true(r.test_acc >= 0.75);
    assert_true(isfinite(r.test_loss) && r.test_loss < 1.0);
    free(r.step_loss);
}

static void same_seed_same_losses(void **state)
{
    fixture *f = *state;
    run a, b;
    train(f, CLOPT_ADAMW, 1280, 1, 0, 5, &a);
    train(f, CLOPT_ADAMW, 1280, 1, 0, 5, &b);
    assert_int_equal(a.steps, b.steps);
    assert_memory_equal(a.step_loss, b.step_loss, a.steps * sizeof(float));
    free(a.step_loss);
    free(b.step_loss);
}

/* Every rule, two epochs of 10 steps (warmup 0, cosine over the 20 steps): the second
   epoch's mean training loss is below the first's. */
static void every_rule_trains(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < CLOPT_RULE_COUNT; i++) {
        const clopt_rule rule = (clopt_rule)i;
        run r;
        train(f, rule, 10 * BATCH, 2, 0, 3, &r);
        free(r.step_loss);
        print_message("%-10s epoch 1 loss %.4f, epoch 2 loss %.4f\n", clopt_rule_name(rule),
                      r.epoch_loss[0], r.epoch_loss[1]);
        if (!(isfinite(r.epoch_loss[1]) && r.epoch_loss[1] < r.epoch_loss[0]))
            fail_msg("%s does not train: mean loss %.4f in epoch 1, %.4f in epoch 2",
                     clopt_rule_name(rule), r.epoch_loss[0], r.epoch_loss[1]);
    }
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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
