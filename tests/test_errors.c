/* SPDX-License-Identifier: MIT */
/*
 * test_errors: every documented failure returns its status and leaves every buffer
 * bit-identical (read back and memcmp), at the op level and the optimizer level; status
 * strings and names; clopt_ctx_last_error after failures.
 *
 * Where include/clopt.h names the status of a failure, exactly that status is required.
 * Where it does not (grad_scale NaN/negative, step 0, an invalid rule value, a wait list
 * inconsistency, a refused state-layout change), the test accepts the plausible codes
 * listed at the call and requires only that the call fails and changes nothing.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clopt.h"
#include "ref.h"

#define FN 64 /* elements per tensor in the fixture */
#define NBUF 7 /* 0 = param, 1 = grad, 2..5 = states, 6 = hessian */

/* ================================================================================== */
/* Status strings                                                                     */
/* ================================================================================== */

typedef struct code_entry {
    clopt_status s;
    int value;
    const char *name, *text;
} code_entry;

static const code_entry k_codes[] = {
#define X(name, value, text) {name, value, #name, text},
    CLOPT_STATUS_LIST(X)
#undef X
};

static void test_status_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_codes / sizeof k_codes[0]; i++) {
        const code_entry *c = &k_codes[i];
        assert_int_equal((int)c->s, c->value);
        const char *str = clopt_status_str(c->s), *name = clopt_status_name(c->s);
        assert_non_null(str);
        assert_non_null(name);
        if (strcmp(str, c->text) != 0 || strcmp(name, c->name) != 0) {
            print_error("status %d: str '%s' name '%s', expected '%s' / '%s'\n", c->value, str,
                        name, c->text, c->name);
            fail();
        }
        assert_false(clopt_status_is_opencl(c->s));
    }
    /* OpenCL pass-through codes */
    struct {
        cl_int e;
        const char *name;
    } cl[] = {{CL_OUT_OF_RESOURCES, "CL_OUT_OF_RESOURCES"},
              {CL_MEM_OBJECT_ALLOCATION_FAILURE, "CL_MEM_OBJECT_ALLOCATION_FAILURE"},
              {CL_OUT_OF_HOST_MEMORY, "CL_OUT_OF_HOST_MEMORY"},
              {CL_BUILD_PROGRAM_FAILURE, "CL_BUILD_PROGRAM_FAILURE"},
              {CL_INVALID_VALUE, "CL_INVALID_VALUE"},
              {CL_INVALID_MEM_OBJECT, "CL_INVALID_MEM_OBJECT"},
              {CL_INVALID_KERNEL_ARGS, "CL_INVALID_KERNEL_ARGS"},
              {CL_INVALID_WORK_GROUP_SIZE, "CL_INVALID_WORK_GROUP_SIZE"},
              {CL_INVALID_EVENT_WAIT_LIST, "CL_INVALID_EVENT_WAIT_LIST"}};
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++) {
        clopt_status s = (clopt_status)(CLOPT_ERR_OPENCL_BASE + cl[i].e);
        assert_true(clopt_status_is_opencl(s));
        assert_int_equal(clopt_status_cl_error(s), cl[i].e);
        const char *name = clopt_status_name(s), *str = clopt_status_str(s);
        assert_non_null(name);
        assert_non_null(str);
        assert_true(str[0] != 0);
        if (strcmp(name, cl[i].name) != 0) {
            print_error("OpenCL code %d: name '%s', expected '%s'\n", cl[i].e, name, cl[i].name);
            fail();
        }
    }
    assert_int_equal((int)(CLOPT_ERR_OPENCL_BASE + CL_OUT_OF_RESOURCES), -10005);
    /* unknown codes still give text */
    const int odd[] = {-77, 5, 12345, -9999, -10999};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        assert_non_null(clopt_status_str((clopt_status)odd[i]));
        assert_non_null(clopt_status_name((clopt_status)odd[i]));
    }
}

static void test_misc_api_errors(void **state)
{
    (void)state;
    assert_null(clopt_rule_name(CLOPT_RULE_COUNT));
    assert_null(clopt_rule_name((clopt_rule)-1));
    clopt_rule r = CLOPT_LION;
    assert_int_not_equal(clopt_rule_from_name("no-such-rule", &r), CLOPT_SUCCESS);
    assert_int_equal(r, CLOPT_LION);
    assert_int_equal(clopt_rule_from_name(NULL, &r), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_rule_from_name("adam", NULL), CLOPT_ERR_NULL_ARGUMENT);
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_RULE_COUNT, &hp), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_hparams_validate(CLOPT_ADAM, NULL, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    assert_int_equal(clopt_hparams_validate(CLOPT_RULE_COUNT, &hp, NULL), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_ctx_create(NULL), CLOPT_ERR_NULL_ARGUMENT);
    clopt_ctx *c = (clopt_ctx *)&hp;
    assert_int_equal(clopt_ctx_create_device("no such device, surely", &c), CLOPT_ERR_NO_DEVICE);
    assert_null(c);
    clopt_ctx_destroy(NULL);
    clopt_optimizer_destroy(NULL);
}

/* ================================================================================== */
/* Fixture                                                                            */
/* ================================================================================== */

typedef struct fx {
    clopt_ctx *ctx;
    cl_command_queue q;
    cl_mem mem[NBUF];
    size_t off[NBUF], size[NBUF];
    float *init[NBUF];
    cl_mem small; /* FN - 1 elements */
    float *small_init;
} fx;

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    if (clopt_ctx_create(&f->ctx) != CLOPT_SUCCESS) {
        free(f);
        return -1;
    }
    f->q = clopt_ctx_cl_queue(f->ctx);
    cl_context clc = clopt_ctx_cl_context(f->ctx);
    uint64_t s = 4242;
    for (int b = 0; b < NBUF; b++) {
        f->off[b] = (size_t)(b * 3 + 1); /* offsets; offset + FN == size exactly */
        f->size[b] = f->off[b] + FN;
        cl_int err;
        f->mem[b] = clCreateBuffer(clc, CL_MEM_READ_WRITE, f->size[b] * sizeof(float), NULL, &err);
        if (err != CL_SUCCESS) return -1;
        f->init[b] = malloc(f->size[b] * sizeof(float));
        for (size_t i = 0; i < f->size[b]; i++)
            f->init[b][i] = b == 6 ? (float)(0.5 + ref_uniform(&s)) : (float)ref_normal(&s);
        if (b >= 2 && b <= 5) /* states that stay valid for every rule (v >= 0, ...) */
            for (size_t i = 0; i < f->size[b]; i++) f->init[b][i] = fabsf(f->init[b][i]);
        if (clEnqueueWriteBuffer(f->q, f->mem[b], CL_TRUE, 0, f->size[b] * sizeof(float),
                                 f->init[b], 0, NULL, NULL) != CL_SUCCESS)
            return -1;
    }
    cl_int err;
    f->small = clCreateBuffer(clc, CL_MEM_READ_WRITE, (FN - 1) * sizeof(float), NULL, &err);
    if (err != CL_SUCCESS) return -1;
    f->small_init = malloc((FN - 1) * sizeof(float));
    for (size_t i = 0; i < FN - 1; i++) f->small_init[i] = (float)i;
    clEnqueueWriteBuffer(f->q, f->small, CL_TRUE, 0, (FN - 1) * sizeof(float), f->small_init, 0,
                         NULL, NULL);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    for (int b = 0; b < NBUF; b++) {
        clReleaseMemObject(f->mem[b]);
        free(f->init[b]);
    }
    clReleaseMemObject(f->small);
    free(f->small_init);
    clopt_ctx_destroy(f->ctx);
    free(f);
    return 0;
}

/* Every fixture buffer still holds exactly its initial bits. */
static void check_unchanged(fx *f, const char *label)
{
    assert_int_equal(clFinish(f->q), CL_SUCCESS);
    for (int b = 0; b < NBUF; b++) {
        float *back = malloc(f->size[b] * sizeof(float));
        assert_non_null(back);
        assert_int_equal(clEnqueueReadBuffer(f->q, f->mem[b], CL_TRUE, 0, f->size[b] * sizeof(float),
                                             back, 0, NULL, NULL),
                         CL_SUCCESS);
        int changed = memcmp(back, f->init[b], f->size[b] * sizeof(float)) != 0;
        free(back);
        if (changed) {
            print_error("%s: buffer %d was modified by a failing call\n", label, b);
            fail();
        }
    }
    float *back = malloc((FN - 1) * sizeof(float));
    assert_int_equal(clEnqueueReadBuffer(f->q, f->small, CL_TRUE, 0, (FN - 1) * sizeof(float), back,
                                         0, NULL, NULL),
                     CL_SUCCESS);
    if (memcmp(back, f->small_init, (FN - 1) * sizeof(float)) != 0) {
        print_error("%s: the small buffer was modified by a failing call\n", label);
        free(back);
        fail();
    }
    free(back);
}

/* Restore initial contents (after a deliberate successful call). */
static void fx_restore(fx *f)
{
    for (int b = 0; b < NBUF; b++)
        assert_int_equal(clEnqueueWriteBuffer(f->q, f->mem[b], CL_TRUE, 0, f->size[b] * sizeof(float),
                                              f->init[b], 0, NULL, NULL),
                         CL_SUCCESS);
}

static clopt_tensor T(fx *f, int b) { clopt_tensor t = {f->mem[b], f->off[b]}; return t; }

/* Valid args for rule/hp (state tensors per ref_state_count). */
static void make_args(fx *f, clopt_rule rule, const clopt_hparams *hp, clopt_step_args *a)
{
    clopt_step_args_init(a);
    a->param = T(f, 0);
    a->grad = T(f, 1);
    size_t ns = ref_state_count(rule, hp);
    for (size_t k = 0; k < ns; k++) a->state[k] = T(f, 2 + (int)k);
}

static int in_set(clopt_status s, const clopt_status *allowed, size_t na)
{
    for (size_t i = 0; i < na; i++)
        if (s == allowed[i]) return 1;
    return 0;
}

/* Failed expectations are counted (and printed) rather than aborting the test, so one
   finding does not hide the others; each test ends with FINISH(). */
static int g_fail;
#define FINISH()                                                                              \
    do {                                                                                      \
        int n_ = g_fail;                                                                      \
        g_fail = 0;                                                                           \
        assert_int_equal(n_, 0);                                                              \
    } while (0)

static void expect_fail_(fx *f, clopt_status got, const clopt_status *allowed, size_t na,
                         const char *label, int have_ctx)
{
    if (!in_set(got, allowed, na)) {
        print_error("%s: returned %s (%d), expected %s%s\n", label, clopt_status_name(got),
                    (int)got, clopt_status_name(allowed[0]), na > 1 ? " (or another listed)" : "");
        g_fail++;
        if (got == CLOPT_SUCCESS) fx_restore(f); /* it ran: undo, so later checks stay valid */
        assert_int_equal(clFinish(f->q), CL_SUCCESS);
        return;
    }
    if (have_ctx) {
        const char *le = clopt_ctx_last_error(f->ctx);
        if (!le || !le[0]) {
            print_error("%s: clopt_ctx_last_error is empty after a failure\n", label);
            g_fail++;
        }
    }
    check_unchanged(f, label);
}

#define EXPECT_FAIL(f, call, label, ...)                                                      \
    do {                                                                                      \
        const clopt_status allowed_[] = {__VA_ARGS__};                                        \
        expect_fail_((f), (call), allowed_, sizeof allowed_ / sizeof allowed_[0], (label), 1); \
    } while (0)
#define EXPECT_FAIL_NOCTX(f, call, label, ...)                                                \
    do {                                                                                      \
        const clopt_status allowed_[] = {__VA_ARGS__};                                        \
        expect_fail_((f), (call), allowed_, sizeof allowed_ / sizeof allowed_[0], (label), 0); \
    } while (0)

/* ================================================================================== */
/* Bad hyperparameters                                                                */
/* ================================================================================== */

typedef struct badhp {
    clopt_rule rule;
    const char *label;
    size_t off; /* offset of a double field; SIZE_MAX = special */
    double value;
    int special;
} badhp;

#define BD(rule, field, val) {rule, #rule " " #field "=" #val, offsetof(clopt_hparams, field), val, 0}

static const badhp k_bad[] = {
    BD(CLOPT_SGD, lr, -1.0),
    BD(CLOPT_SGD, lr, NAN),
    BD(CLOPT_SGD, lr, INFINITY),
    BD(CLOPT_SGD, momentum, 1.0),
    BD(CLOPT_SGD, momentum, -0.1),
    BD(CLOPT_SGD, weight_decay, -1e-3),
    BD(CLOPT_SGD, weight_decay, NAN),
    {CLOPT_SGD, "SGD nesterov with momentum 0", SIZE_MAX, 0, 1},
    {CLOPT_SGD, "SGD nesterov with dampening 0.5", SIZE_MAX, 0, 2},
    BD(CLOPT_ADAM, lr, -1e-3),
    BD(CLOPT_ADAM, lr, NAN),
    BD(CLOPT_ADAM, beta1, 1.0),
    BD(CLOPT_ADAM, beta1, -0.1),
    BD(CLOPT_ADAM, beta1, NAN),
    BD(CLOPT_ADAM, beta2, 1.0),
    BD(CLOPT_ADAM, beta2, NAN),
    BD(CLOPT_ADAM, eps, 0.0),
    BD(CLOPT_ADAM, eps, -1e-8),
    BD(CLOPT_ADAM, eps, NAN),
    BD(CLOPT_ADAM, eps, INFINITY),
    BD(CLOPT_ADAM, weight_decay, -0.01),
    BD(CLOPT_ADAM, weight_decay, INFINITY),
    BD(CLOPT_ADAMW, beta2, 1.5),
    BD(CLOPT_ADAMW, eps, 0.0),
    BD(CLOPT_ADAMW, weight_decay, -1.0),
    BD(CLOPT_ADAGRAD, lr_decay, -0.1),
    BD(CLOPT_ADAGRAD, initial_accumulator_value, -1.0),
    BD(CLOPT_ADAGRAD, eps, 0.0),
    BD(CLOPT_ADAGRAD, lr, -0.01),
    BD(CLOPT_ADADELTA, rho, 1.0),
    BD(CLOPT_ADADELTA, rho, -0.1),
    BD(CLOPT_ADADELTA, eps, 0.0),
    BD(CLOPT_RMSPROP, alpha, 1.0),
    BD(CLOPT_RMSPROP, alpha, -0.01),
    BD(CLOPT_RMSPROP, momentum, 1.0),
    BD(CLOPT_RMSPROP, eps, 0.0),
    BD(CLOPT_ADAMAX, beta2, 1.0),
    BD(CLOPT_ADAMAX, eps, 0.0),
    BD(CLOPT_NADAM, momentum_decay, -0.004),
    BD(CLOPT_NADAM, beta1, 1.0),
    BD(CLOPT_NADAM, eps, -1.0),
    BD(CLOPT_RADAM, beta2, 1.0),
    BD(CLOPT_RADAM, eps, 0.0),
    BD(CLOPT_ADAMOD, beta3, 1.0),
    BD(CLOPT_ADAMOD, beta3, -0.5),
    BD(CLOPT_ADAMOD, eps, 0.0),
    BD(CLOPT_DIFFGRAD, eps, 0.0),
    BD(CLOPT_DIFFGRAD, beta1, 1.0),
    BD(CLOPT_LION, beta1, 1.0),
    BD(CLOPT_LION, beta2, 1.0),
    BD(CLOPT_LION, lr, NAN),
    BD(CLOPT_LION, weight_decay, -0.1),
    BD(CLOPT_SOPHIA, rho, 0.0),
    BD(CLOPT_SOPHIA, rho, -1.0),
    BD(CLOPT_SOPHIA, bs, 0.0),
    BD(CLOPT_SOPHIA, bs, -5.0),
    BD(CLOPT_SOPHIA, eps, 0.0),
    BD(CLOPT_SOPHIA, beta2, 1.0),
    {CLOPT_SOPHIA, "SOPHIA hess_interval=0", SIZE_MAX, 0, 3},
};

static void make_bad(const badhp *b, clopt_hparams *hp)
{
    assert_int_equal(clopt_hparams_default(b->rule, hp), CLOPT_SUCCESS);
    if (b->off != SIZE_MAX) {
        memcpy((char *)hp + b->off, &b->value, sizeof(double));
        return;
    }
    switch (b->special) {
    case 1:
        hp->momentum = 0.0;
        hp->nesterov = 1;
        break;
    case 2:
        hp->momentum = 0.9;
        hp->dampening = 0.5;
        hp->nesterov = 1;
        break;
    case 3:
        hp->hess_interval = 0;
        break;
    }
}

static void test_bad_hparams_op(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        clopt_hparams hp;
        make_bad(&k_bad[i], &hp);
        const char *why = NULL;
        clopt_status v = clopt_hparams_validate(k_bad[i].rule, &hp, &why);
        if (v != CLOPT_ERR_INVALID_HYPERPARAM) {
            print_error("validate %s: %s\n", k_bad[i].label, clopt_status_name(v));
            g_fail++;
        } else if (!why || !why[0]) {
            print_error("validate %s: no reason given\n", k_bad[i].label);
            g_fail++;
        }
        clopt_step_args a;
        make_args(f, k_bad[i].rule, &hp, &a);
        if (k_bad[i].rule == CLOPT_SOPHIA) a.hessian = T(f, 6);
        char label[160];
        snprintf(label, sizeof label, "enqueue_step %s", k_bad[i].label);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, k_bad[i].rule, &hp, &a, FN, 1, 0, NULL, NULL),
                    label, CLOPT_ERR_INVALID_HYPERPARAM);
    }
    /* Adafactor (optimizer level only): Hugging Face raises on warmup_init without
       relative_step (it was taken and ignored); its flags are 0 or 1 */
    clopt_hparams af;
    clopt_hparams_default(CLOPT_ADAFACTOR, &af);
    af.warmup_init = 1;
    assert_int_equal(clopt_hparams_validate(CLOPT_ADAFACTOR, &af, NULL), CLOPT_SUCCESS);
    af.relative_step = 0;
    af.lr = 1e-3;
    assert_int_equal(clopt_hparams_validate(CLOPT_ADAFACTOR, &af, NULL),
                     CLOPT_ERR_INVALID_HYPERPARAM);
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAFACTOR, &af, &opt),
                     CLOPT_ERR_INVALID_HYPERPARAM);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "warmup_init"));
    af.warmup_init = 0;
    af.relative_step = 2;
    assert_int_equal(clopt_hparams_validate(CLOPT_ADAFACTOR, &af, NULL),
                     CLOPT_ERR_INVALID_HYPERPARAM);
    FINISH();
}

/* ================================================================================== */
/* Op level: arguments                                                                */
/* ================================================================================== */

static void test_op_arguments(void **state)
{
    fx *f = *state;
    clopt_hparams hp;
    clopt_step_args a;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    make_args(f, CLOPT_ADAM, &hp, &a);

    /* sanity: the valid call succeeds and modifies param (so the checks below mean something) */
    {
        cl_event ev = NULL;
        assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, FN, 1, 0, NULL, &ev),
                         CLOPT_SUCCESS);
        assert_non_null(ev);
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
        float back[FN];
        clEnqueueReadBuffer(f->q, f->mem[0], CL_TRUE, f->off[0] * sizeof(float), sizeof back, back,
                            0, NULL, NULL);
        assert_true(memcmp(back, f->init[0] + f->off[0], sizeof back) != 0);
        fx_restore(f);
    }

    /* NULL pointers */
    EXPECT_FAIL_NOCTX(f, clopt_enqueue_step(NULL, NULL, CLOPT_ADAM, &hp, &a, FN, 1, 0, NULL, NULL),
                      "NULL ctx", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, NULL, &a, FN, 1, 0, NULL, NULL),
                "NULL hparams", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, NULL, FN, 1, 0, NULL, NULL),
                "NULL args", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL_NOCTX(f, clopt_enqueue_sgd(NULL, NULL, &hp, &a, FN, 1, 0, NULL, NULL),
                      "sgd wrapper NULL ctx", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_adam(f->ctx, NULL, NULL, &a, FN, 1, 0, NULL, NULL),
                "adam wrapper NULL hparams", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_adamw(f->ctx, NULL, &hp, NULL, FN, 1, 0, NULL, NULL),
                "adamw wrapper NULL args", CLOPT_ERR_NULL_ARGUMENT);
    {
        clopt_step_args b = a;
        b.param.buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &b, FN, 1, 0, NULL, NULL),
                    "NULL param buffer", CLOPT_ERR_NULL_ARGUMENT);
        b = a;
        b.grad.buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &b, FN, 1, 0, NULL, NULL),
                    "NULL grad buffer", CLOPT_ERR_NULL_ARGUMENT);
    }

    /* sizes */
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, 0, 1, 0, NULL, NULL), "n = 0",
                CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, FN + 1, 1, 0, NULL, NULL),
                "n one past every buffer", CLOPT_ERR_OUT_OF_BOUNDS);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, SIZE_MAX, 1, 0, NULL, NULL),
                "n = SIZE_MAX", CLOPT_ERR_OUT_OF_BOUNDS, CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, SIZE_MAX / 4 + 1, 1, 0, NULL, NULL),
                "n*4 overflows size_t", CLOPT_ERR_OUT_OF_BOUNDS, CLOPT_ERR_INVALID_SIZE);

    /* offsets: each tensor in turn */
    const char *tn[5] = {"param", "grad", "exp_avg", "exp_avg_sq", "?"};
    for (int which = 0; which < 4; which++) {
        const int b = which; /* fixture buffer index == tensor order for Adam */
        const size_t bad_offsets[4] = {f->off[b] + 1, f->size[b], f->size[b] + 100, SIZE_MAX};
        const char *what[4] = {"offset+n one past the end", "offset == size", "offset past the end",
                               "offset = SIZE_MAX"};
        for (int k = 0; k < 4; k++) {
            clopt_step_args c = a;
            clopt_tensor *t = which == 0 ? &c.param : which == 1 ? &c.grad : &c.state[which - 2];
            t->offset = bad_offsets[k];
            char label[128];
            snprintf(label, sizeof label, "%s: %s", tn[which], what[k]);
            EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                        label, CLOPT_ERR_OUT_OF_BOUNDS);
        }
    }
    {
        clopt_step_args c = a;
        c.state[1].buffer = f->small;
        c.state[1].offset = 0;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "state buffer too small", CLOPT_ERR_OUT_OF_BOUNDS);
        c = a;
        c.param.buffer = f->small;
        c.param.offset = 0;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "param buffer too small", CLOPT_ERR_OUT_OF_BOUNDS);
    }

    /* tensors sharing bytes (a race between work-items; they were enqueued); disjoint ranges
       of one buffer are fine */
    {
        clopt_step_args c = a;
        c.state[0] = c.param;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "exp_avg = param", CLOPT_ERR_INVALID_ARGUMENT);
        cl_int err;
        cl_mem big = clCreateBuffer(clopt_ctx_cl_context(f->ctx), CL_MEM_READ_WRITE, 3 * FN * sizeof(float), NULL, &err);
        assert_non_null(big);
        const float zero = 0.0f;
        assert_int_equal(clEnqueueFillBuffer(f->q, big, &zero, sizeof zero, 0,
                                             3 * FN * sizeof(float), 0, NULL, NULL),
                         CL_SUCCESS);
        c = a;
        c.param = (clopt_tensor){big, 0};
        c.state[1] = (clopt_tensor){big, FN - 1};
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "exp_avg_sq over param's last float", CLOPT_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "overlap"));
        c.state[1] = a.state[1];
        c.grad = (clopt_tensor){big, FN};
        c.state[0] = (clopt_tensor){big, 2 * FN - 2};
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "exp_avg over grad's last two floats", CLOPT_ERR_INVALID_ARGUMENT);
        c.state[0] = a.state[0];
        assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL,
                                            NULL),
                         CLOPT_SUCCESS);
        assert_int_equal(clFinish(f->q), CL_SUCCESS);
        fx_restore(f);
        clReleaseMemObject(big);
    }

    /* state tensors */
    {
        clopt_step_args c = a;
        c.state[1].buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "missing exp_avg_sq", CLOPT_ERR_STATE_MISMATCH);
        c = a;
        c.state[0].buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "missing exp_avg", CLOPT_ERR_STATE_MISMATCH);
        c = a;
        c.state[2] = T(f, 4);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "extra state (max_exp_avg_sq without amsgrad)", CLOPT_ERR_STATE_MISMATCH);
        c = a;
        c.state[3] = T(f, 5);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "extra state in slot 3", CLOPT_ERR_STATE_MISMATCH);
        clopt_hparams ams = hp;
        ams.amsgrad = 1;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &ams, &a, FN, 1, 0, NULL, NULL),
                    "amsgrad without max_exp_avg_sq", CLOPT_ERR_STATE_MISMATCH);
        c = a;
        c.hessian = T(f, 6);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    "hessian given to Adam", CLOPT_ERR_STATE_MISMATCH);

        clopt_hparams sgd;
        assert_int_equal(clopt_hparams_default(CLOPT_SGD, &sgd), CLOPT_SUCCESS);
        sgd.momentum = 0.0;
        clopt_step_args d;
        make_args(f, CLOPT_SGD, &sgd, &d);
        d.state[0] = T(f, 2);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_SGD, &sgd, &d, FN, 1, 0, NULL, NULL),
                    "SGD without momentum given a momentum buffer", CLOPT_ERR_STATE_MISMATCH);
        sgd.momentum = 0.9;
        make_args(f, CLOPT_SGD, &sgd, &d);
        d.state[0].buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_SGD, &sgd, &d, FN, 1, 0, NULL, NULL),
                    "SGD momentum without buffer", CLOPT_ERR_STATE_MISMATCH);

        clopt_hparams rms;
        assert_int_equal(clopt_hparams_default(CLOPT_RMSPROP, &rms), CLOPT_SUCCESS);
        rms.centered = 1;
        make_args(f, CLOPT_RMSPROP, &rms, &d);
        d.state[1].buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_RMSPROP, &rms, &d, FN, 1, 0, NULL, NULL),
                    "RMSprop centered without grad_avg", CLOPT_ERR_STATE_MISMATCH);

        clopt_hparams lion;
        assert_int_equal(clopt_hparams_default(CLOPT_LION, &lion), CLOPT_SUCCESS);
        make_args(f, CLOPT_LION, &lion, &d);
        d.hessian = T(f, 6);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_LION, &lion, &d, FN, 1, 0, NULL, NULL),
                    "hessian given to Lion", CLOPT_ERR_STATE_MISMATCH);

        clopt_hparams so;
        assert_int_equal(clopt_hparams_default(CLOPT_SOPHIA, &so), CLOPT_SUCCESS);
        make_args(f, CLOPT_SOPHIA, &so, &d);
        d.hessian = T(f, 6);
        d.hessian.offset = f->size[6] - FN + 1;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_SOPHIA, &so, &d, FN, 1, 0, NULL, NULL),
                    "Sophia hessian out of bounds", CLOPT_ERR_OUT_OF_BOUNDS);
        make_args(f, CLOPT_SOPHIA, &so, &d);
        d.state[1].buffer = NULL;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_SOPHIA, &so, &d, FN, 1, 0, NULL, NULL),
                    "Sophia without hessian state", CLOPT_ERR_STATE_MISMATCH);
    }

    /* rule, grad_scale, step, wait list */
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_RULE_COUNT, &hp, &a, FN, 1, 0, NULL, NULL),
                "rule = CLOPT_RULE_COUNT", CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_UNSUPPORTED);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, (clopt_rule)-1, &hp, &a, FN, 1, 0, NULL, NULL),
                "rule = -1", CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_UNSUPPORTED);
    const double bad_gs[4] = {NAN, -1.0, INFINITY, -INFINITY};
    for (int i = 0; i < 4; i++) {
        clopt_step_args c = a;
        c.grad_scale = bad_gs[i];
        char label[64];
        snprintf(label, sizeof label, "grad_scale = %g", bad_gs[i]);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &c, FN, 1, 0, NULL, NULL),
                    label, CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_HYPERPARAM);
    }
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, FN, 0, 0, NULL, NULL),
                "step 0", CLOPT_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, FN, 1, 2, NULL, NULL),
                "num_wait 2 with NULL wait list", CLOPT_ERR_INVALID_ARGUMENT,
                (clopt_status)(CLOPT_ERR_OPENCL_BASE + CL_INVALID_EVENT_WAIT_LIST));
    {
        /* an event of another cl_context: refused before anything is enqueued, at the op
           level and by the optimizer's step_on (CL_INVALID_CONTEXT from its first enqueue) */
        cl_device_id dev = clopt_ctx_cl_device(f->ctx);
        cl_int err;
        cl_context other = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        cl_event foreign = clCreateUserEvent(other, &err);
        assert_int_equal(err, CL_SUCCESS);
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, FN, 1, 1, &foreign,
                                          NULL),
                    "an event of another context", CLOPT_ERR_INVALID_ARGUMENT);
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_add_param(opt, a.param, a.grad, FN, NULL, NULL),
                         CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step_on(opt, f->q, 1, &foreign, NULL),
                         CLOPT_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "another cl_context"));
        assert_int_equal(clopt_optimizer_step_count(opt), 0);
        clopt_optimizer_destroy(opt);
        clSetUserEventStatus(foreign, CL_COMPLETE);
        clReleaseEvent(foreign);
        clReleaseContext(other);
    }
    {
        clopt_hparams nad;
        assert_int_equal(clopt_hparams_default(CLOPT_NADAM, &nad), CLOPT_SUCCESS);
        clopt_step_args c;
        make_args(f, CLOPT_NADAM, &nad, &c);
        c.grad_scale = -2.0;
        EXPECT_FAIL(f, clopt_enqueue_step(f->ctx, NULL, CLOPT_NADAM, &nad, &c, FN, 3, 0, NULL, NULL),
                    "NAdam grad_scale -2", CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_HYPERPARAM);
    }

    /* the last error is cleared or kept, but a successful call still works afterwards */
    assert_int_equal(clopt_enqueue_step(f->ctx, NULL, CLOPT_ADAM, &hp, &a, FN, 2, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clFinish(f->q), CL_SUCCESS);
    fx_restore(f);
    FINISH();
}

static void test_estimator_arguments(void **state)
{
    fx *f = *state;
    clopt_tensor o = T(f, 0), u = T(f, 1), h = T(f, 2), nul = {NULL, 0};
    EXPECT_FAIL_NOCTX(f, clopt_enqueue_randn(NULL, NULL, o, FN, 1, 0, 0, NULL, NULL), "randn NULL ctx",
                      CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_randn(f->ctx, NULL, nul, FN, 1, 0, 0, NULL, NULL),
                "randn NULL buffer", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_randn(f->ctx, NULL, o, 0, 1, 0, 0, NULL, NULL), "randn n = 0",
                CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL(f, clopt_enqueue_randn(f->ctx, NULL, o, FN + 1, 1, 0, 0, NULL, NULL),
                "randn out of bounds", CLOPT_ERR_OUT_OF_BOUNDS);
    EXPECT_FAIL_NOCTX(f, clopt_enqueue_hutchinson(NULL, NULL, u, h, o, FN, 0, NULL, NULL),
                      "hutchinson NULL ctx", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_hutchinson(f->ctx, NULL, nul, h, o, FN, 0, NULL, NULL),
                "hutchinson NULL u", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_hutchinson(f->ctx, NULL, u, h, nul, FN, 0, NULL, NULL),
                "hutchinson NULL out", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_hutchinson(f->ctx, NULL, u, h, o, 0, 0, NULL, NULL),
                "hutchinson n = 0", CLOPT_ERR_INVALID_SIZE);
    {
        clopt_tensor hb = h;
        hb.offset = f->size[2];
        EXPECT_FAIL(f, clopt_enqueue_hutchinson(f->ctx, NULL, u, hb, o, FN, 0, NULL, NULL),
                    "hutchinson hvp out of bounds", CLOPT_ERR_OUT_OF_BOUNDS);
    }
    EXPECT_FAIL_NOCTX(f, clopt_enqueue_gnb(NULL, NULL, u, o, FN, 4.0, 0, NULL, NULL), "gnb NULL ctx",
                      CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_gnb(f->ctx, NULL, nul, o, FN, 4.0, 0, NULL, NULL), "gnb NULL ghat",
                CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_enqueue_gnb(f->ctx, NULL, u, o, 0, 4.0, 0, NULL, NULL), "gnb n = 0",
                CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL(f, clopt_enqueue_gnb(f->ctx, NULL, u, o, FN + 1, 4.0, 0, NULL, NULL),
                "gnb out of bounds", CLOPT_ERR_OUT_OF_BOUNDS);
    const double bad_b[4] = {0.0, -1.0, NAN, 1e300}; /* 1e300: Inf as the kernel's float */
    for (int i = 0; i < 4; i++) {
        char label[64];
        snprintf(label, sizeof label, "gnb batch_size = %g", bad_b[i]);
        EXPECT_FAIL(f, clopt_enqueue_gnb(f->ctx, NULL, u, o, FN, bad_b[i], 0, NULL, NULL), label,
                    CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_INVALID_HYPERPARAM);
    }
    FINISH();
}

static void test_tuning_arguments(void **state)
{
    fx *f = *state;
    clopt_tuning before, t, after;
    assert_int_equal(clopt_ctx_get_tuning(f->ctx, &before), CLOPT_SUCCESS);
    t = before;
    t.vector_width = 3;
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    t.vector_width = 32;
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    t.vector_width = 0;
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    t = before;
    t.items_per_work_item = 4096;
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, &t), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_ctx_set_tuning(f->ctx, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_ctx_set_tuning(NULL, &before), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_ctx_get_tuning(f->ctx, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_ctx_get_tuning(f->ctx, &after), CLOPT_SUCCESS);
    assert_int_equal(after.vector_width, before.vector_width);
    assert_int_equal(after.work_group_size, before.work_group_size);
    assert_int_equal(after.items_per_work_item, before.items_per_work_item);
    assert_true(clopt_ctx_last_error(f->ctx)[0] == 0); /* a successful call clears it */
}

/* ================================================================================== */
/* Optimizer level                                                                    */
/* ================================================================================== */

static int hp_same(const clopt_hparams *a, const clopt_hparams *b)
{
    return a->lr == b->lr && a->beta1 == b->beta1 && a->beta2 == b->beta2 &&
           a->beta3 == b->beta3 && a->eps == b->eps && a->weight_decay == b->weight_decay &&
           a->momentum == b->momentum && a->dampening == b->dampening && a->alpha == b->alpha &&
           a->rho == b->rho && a->bs == b->bs && a->lr_decay == b->lr_decay &&
           a->initial_accumulator_value == b->initial_accumulator_value &&
           a->momentum_decay == b->momentum_decay && a->hess_interval == b->hess_interval &&
           a->nesterov == b->nesterov && a->amsgrad == b->amsgrad && a->maximize == b->maximize &&
           a->centered == b->centered;
}

/* A failed call returns no event (the header's convention): every op-level enqueue sets
   *event to NULL when it fails (they left a stale handle in place, which an engine that
   releases the event it got back then released; the optimizer-level calls set NULL). */
static void test_failed_calls_return_no_event(void **state)
{
    fx *f = *state;
    const clopt_tensor nul = {NULL, 0};
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_SGD, &hp);
    clopt_step_args a;
    clopt_step_args_init(&a);
    cl_event stale = (cl_event)(uintptr_t)0x1234, ev;
#define NO_EVENT(call)                                                                     \
    do {                                                                                   \
        ev = stale;                                                                        \
        assert_int_not_equal((call), CLOPT_SUCCESS);                                       \
        assert_null(ev);                                                                   \
    } while (0)
    NO_EVENT(clopt_enqueue_step(f->ctx, NULL, CLOPT_SGD, &hp, &a, 10, 1, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_sgd(f->ctx, NULL, &hp, &a, 10, 1, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_randn(f->ctx, NULL, nul, 10, 1, 0, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_hutchinson(f->ctx, NULL, nul, nul, nul, 10, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_gnb(f->ctx, NULL, nul, nul, 10, 1.0, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_axpby(f->ctx, NULL, nul, nul, 10, 1.0, 0.0, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_axpby_ex(f->ctx, NULL, nul, CLOPT_DTYPE_F32, nul, CLOPT_DTYPE_F32,
                                    10, 1.0, 0.0, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_convert(f->ctx, NULL, nul, CLOPT_DTYPE_F32, nul, CLOPT_DTYPE_BF16, 10,
                                   0, 0, 0, 1, 0, NULL, &ev));
    NO_EVENT(clopt_enqueue_randn(NULL, NULL, nul, 10, 1, 0, 0, NULL, &ev));
#undef NO_EVENT
}

static void test_optimizer_create_errors(void **state)
{
    fx *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    clopt_optimizer *dummy_target = (clopt_optimizer *)&hp; /* non-NULL marker, never used */
    clopt_optimizer *o = dummy_target;
    assert_int_equal(clopt_optimizer_create(NULL, CLOPT_ADAM, &hp, &o), CLOPT_ERR_NULL_ARGUMENT);
    assert_null(o);
    o = dummy_target;
    EXPECT_FAIL(f, clopt_optimizer_create(f->ctx, CLOPT_ADAM, NULL, &o), "create NULL hparams",
                CLOPT_ERR_NULL_ARGUMENT);
    assert_null(o);
    EXPECT_FAIL(f, clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, NULL), "create NULL out",
                CLOPT_ERR_NULL_ARGUMENT);
    o = dummy_target;
    EXPECT_FAIL(f, clopt_optimizer_create(f->ctx, CLOPT_RULE_COUNT, &hp, &o), "create bad rule",
                CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_UNSUPPORTED);
    assert_null(o);
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        clopt_hparams bad;
        make_bad(&k_bad[i], &bad);
        o = dummy_target;
        char label[160];
        snprintf(label, sizeof label, "optimizer_create %s", k_bad[i].label);
        EXPECT_FAIL(f, clopt_optimizer_create(f->ctx, k_bad[i].rule, &bad, &o), label,
                    CLOPT_ERR_INVALID_HYPERPARAM);
        if (o != NULL && o != dummy_target) clopt_optimizer_destroy(o); /* created anyway */
        else if (o != NULL) {
            print_error("%s: *out not NULL after failure\n", label);
            g_fail++;
        }
    }
    FINISH();
}

static void test_optimizer_errors(void **state)
{
    fx *f = *state;
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    clopt_optimizer *o = NULL;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAM, &hp, &o), CLOPT_SUCCESS);
    assert_non_null(o);
    assert_int_equal(clopt_optimizer_param_count(o), 0);
    assert_int_equal(clopt_optimizer_step_count(o), 0);
    const size_t bytes0 = clopt_optimizer_state_bytes(o);
    clopt_tensor nul = {NULL, 0}, hs = T(f, 6);
    size_t idx = 12345;

    /* add_param */
    EXPECT_FAIL_NOCTX(f, clopt_optimizer_add_param(NULL, T(f, 0), T(f, 1), FN, NULL, &idx),
                      "add_param NULL optimizer", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_optimizer_add_param(o, nul, T(f, 1), FN, NULL, &idx),
                "add_param NULL param buffer", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), nul, FN, NULL, &idx),
                "add_param NULL grad buffer", CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), T(f, 1), 0, NULL, &idx), "add_param n = 0",
                CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), T(f, 1), FN + 1, NULL, &idx),
                "add_param n past the end", CLOPT_ERR_OUT_OF_BOUNDS);
    {
        clopt_tensor p = T(f, 0);
        p.offset = f->size[0];
        EXPECT_FAIL(f, clopt_optimizer_add_param(o, p, T(f, 1), FN, NULL, &idx),
                    "add_param param offset past the end", CLOPT_ERR_OUT_OF_BOUNDS);
        clopt_tensor g = T(f, 1);
        g.offset = f->off[1] + 1;
        EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), g, FN, NULL, &idx),
                    "add_param grad offset+n past the end", CLOPT_ERR_OUT_OF_BOUNDS);
        g.offset = SIZE_MAX;
        EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), g, FN, NULL, &idx),
                    "add_param grad offset SIZE_MAX", CLOPT_ERR_OUT_OF_BOUNDS);
        EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), T(f, 1), SIZE_MAX, NULL, &idx),
                    "add_param n SIZE_MAX", CLOPT_ERR_OUT_OF_BOUNDS, CLOPT_ERR_INVALID_SIZE,
                    CLOPT_ERR_OUT_OF_MEMORY);
    }
    EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), T(f, 1), FN, &hs, &idx),
                "add_param hessian for Adam", CLOPT_ERR_STATE_MISMATCH);
    assert_int_equal(idx, 12345);
    assert_int_equal(clopt_optimizer_param_count(o), 0);
    assert_int_equal(clopt_optimizer_state_bytes(o), bytes0);

    /* set_hparams: bad values and a layout change leave the old ones */
    EXPECT_FAIL_NOCTX(f, clopt_optimizer_set_hparams(NULL, &hp), "set_hparams NULL optimizer",
                      CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_optimizer_set_hparams(o, NULL), "set_hparams NULL hparams",
                CLOPT_ERR_NULL_ARGUMENT);
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        if (k_bad[i].rule != CLOPT_ADAM) continue;
        clopt_hparams bad, now;
        make_bad(&k_bad[i], &bad);
        char label[160];
        snprintf(label, sizeof label, "set_hparams %s", k_bad[i].label);
        EXPECT_FAIL(f, clopt_optimizer_set_hparams(o, &bad), label, CLOPT_ERR_INVALID_HYPERPARAM);
        assert_int_equal(clopt_optimizer_get_hparams(o, &now), CLOPT_SUCCESS);
        if (!hp_same(&now, &hp)) {
            print_error("%s: hyperparameters changed by a failed set_hparams\n", label);
            g_fail++;
            assert_int_equal(clopt_optimizer_set_hparams(o, &hp), CLOPT_SUCCESS);
        }
    }
    assert_int_equal(clopt_optimizer_get_hparams(NULL, &hp), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_get_hparams(o, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_step_count(o), 0);

    /* a real parameter, then state access errors */
    assert_int_equal(clopt_optimizer_add_param(o, T(f, 0), T(f, 1), FN, NULL, &idx), CLOPT_SUCCESS);
    assert_int_equal(idx, 0);
    assert_int_equal(clopt_optimizer_param_count(o), 1);
    {
        /* with a registered tensor, a change of the state layout is refused */
        clopt_hparams ams = hp, now;
        ams.amsgrad = 1;
        EXPECT_FAIL(f, clopt_optimizer_set_hparams(o, &ams), "set_hparams amsgrad (layout change)",
                    CLOPT_ERR_STATE_MISMATCH, CLOPT_ERR_INVALID_HYPERPARAM,
                    CLOPT_ERR_INVALID_ARGUMENT, CLOPT_ERR_UNSUPPORTED);
        assert_int_equal(clopt_optimizer_get_hparams(o, &now), CLOPT_SUCCESS);
        if (!hp_same(&now, &hp)) {
            print_error("set_hparams amsgrad: hyperparameters changed\n");
            g_fail++;
            assert_int_equal(clopt_optimizer_set_hparams(o, &hp), CLOPT_SUCCESS);
        }
    }
    float host[FN];
    clopt_tensor st;
    EXPECT_FAIL(f, clopt_optimizer_read_state(o, 1, 0, host, FN), "read_state param index 1",
                CLOPT_ERR_INDEX);
    EXPECT_FAIL(f, clopt_optimizer_read_state(o, 0, 2, host, FN), "read_state state index 2",
                CLOPT_ERR_INDEX);
    EXPECT_FAIL(f, clopt_optimizer_read_state(o, 0, 0, NULL, FN), "read_state NULL host",
                CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_optimizer_read_state(o, 0, 0, host, FN - 1), "read_state n too small",
                CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL(f, clopt_optimizer_read_state(o, 0, 0, host, 0), "read_state n = 0",
                CLOPT_ERR_INVALID_SIZE);
    EXPECT_FAIL_NOCTX(f, clopt_optimizer_read_state(NULL, 0, 0, host, FN), "read_state NULL optimizer",
                      CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL(f, clopt_optimizer_state(o, 3, 0, &st), "optimizer_state param index 3",
                CLOPT_ERR_INDEX);
    EXPECT_FAIL(f, clopt_optimizer_state(o, 0, 5, &st), "optimizer_state state index 5",
                CLOPT_ERR_INDEX);
    EXPECT_FAIL(f, clopt_optimizer_state(o, 0, 0, NULL), "optimizer_state NULL out",
                CLOPT_ERR_NULL_ARGUMENT);
    EXPECT_FAIL_NOCTX(f, clopt_optimizer_step(NULL, NULL), "step NULL optimizer",
                      CLOPT_ERR_NULL_ARGUMENT);
    assert_int_equal(clopt_optimizer_step_count(o), 0);

    /* one successful step: the count advances by exactly one, param changes, state valid */
    cl_event ev = NULL;
    assert_int_equal(clopt_optimizer_step(o, &ev), CLOPT_SUCCESS);
    if (ev) {
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
    }
    assert_int_equal(clopt_optimizer_step_count(o), 1);
    assert_int_equal(clopt_optimizer_read_state(o, 0, 1, host, FN), CLOPT_SUCCESS);
    for (size_t i = 0; i < FN; i++) assert_true(host[i] >= 0.0f); /* exp_avg_sq */
    /* a failing call after it leaves step count and hyperparameters alone */
    clopt_hparams bad = hp, now;
    bad.lr = -1.0;
    assert_int_equal(clopt_optimizer_set_hparams(o, &bad), CLOPT_ERR_INVALID_HYPERPARAM);
    assert_true(clopt_ctx_last_error(f->ctx)[0] != 0);
    assert_int_equal(clopt_optimizer_get_hparams(o, &now), CLOPT_SUCCESS);
    assert_true(hp_same(&now, &hp));
    assert_int_equal(clopt_optimizer_step_count(o), 1);
    clopt_optimizer_destroy(o);
    fx_restore(f);

    /* Sophia: hessian buffer out of bounds is refused */
    clopt_hparams so;
    assert_int_equal(clopt_hparams_default(CLOPT_SOPHIA, &so), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SOPHIA, &so, &o), CLOPT_SUCCESS);
    clopt_tensor hb = T(f, 6);
    hb.offset += 1;
    EXPECT_FAIL(f, clopt_optimizer_add_param(o, T(f, 0), T(f, 1), FN, &hb, NULL),
                "Sophia add_param hessian out of bounds", CLOPT_ERR_OUT_OF_BOUNDS);
    assert_int_equal(clopt_optimizer_param_count(o), 0);
    clopt_hparams sb = so, snow;
    sb.hess_interval = 0;
    EXPECT_FAIL(f, clopt_optimizer_set_hparams(o, &sb), "Sophia set_hparams hess_interval 0",
                CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(clopt_optimizer_get_hparams(o, &snow), CLOPT_SUCCESS);
    assert_true(hp_same(&snow, &so));
    clopt_optimizer_destroy(o);

    /* SGD: turning momentum on would add a state tensor: refused */
    clopt_hparams sgd;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &sgd), CLOPT_SUCCESS);
    sgd.momentum = 0.0;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_SGD, &sgd, &o), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param(o, T(f, 0), T(f, 1), FN, NULL, NULL), CLOPT_SUCCESS);
    clopt_hparams sm = sgd, gnow;
    sm.momentum = 0.9;
    EXPECT_FAIL(f, clopt_optimizer_set_hparams(o, &sm), "SGD set_hparams momentum on (layout change)",
                CLOPT_ERR_STATE_MISMATCH, CLOPT_ERR_INVALID_HYPERPARAM, CLOPT_ERR_INVALID_ARGUMENT,
                CLOPT_ERR_UNSUPPORTED);
    assert_int_equal(clopt_optimizer_get_hparams(o, &gnow), CLOPT_SUCCESS);
    assert_true(hp_same(&gnow, &sgd));
    assert_int_equal(clopt_optimizer_step_count(o), 0);
    clopt_optimizer_destroy(o);
    FINISH();
}

int main(void)
{
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_misc_api_errors),
    };
    const struct CMUnitTest withctx[] = {
        cmocka_unit_test(test_op_arguments),
        cmocka_unit_test(test_bad_hparams_op),
        cmocka_unit_test(test_estimator_arguments),
        cmocka_unit_test(test_tuning_arguments),
        cmocka_unit_test(test_failed_calls_return_no_event),
        cmocka_unit_test(test_optimizer_create_errors),
        cmocka_unit_test(test_optimizer_errors),
    };
    int fails = 0;
    fails += cmocka_run_group_tests_name("status", plain, NULL, NULL);
    fails += cmocka_run_group_tests_name("errors", withctx, fx_setup, fx_teardown);
    return fails ? 1 : 0;
}
