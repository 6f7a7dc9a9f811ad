/* SPDX-License-Identifier: MIT */
/* Engines that own their memory: range groups over one flat parameter buffer (llm.c, KANN),
 * the engine's own state buffers, host memory without copies, the misuse that is refused,
 * and the op-level state allocator. Every update is checked against the double references
 * of tests/ref (independent of the library). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "ref.h"

#define NT 6
/* Sizes cross the 16384-float chunks of a range launch and every vector tail (the third
   crosses one chunk boundary instead of two under CLOPT_TEST_SMALL, see main). */
static size_t sizes[NT] = {7, 1023, 40000, 1, 4099, 33};
static const int two_d[NT] = {1, 0, 1, 0, 1, 0}; /* weights decay, biases do not */

static void assert_close(const char *what, const float *x, const double *ref, size_t n,
                         double rtol, double atol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)x[i] - ref[i]) <= atol + rtol * fabs(ref[i]))) {
            fprintf(stderr, "%s[%zu]: got %.9g, reference %.9g\n", what, i, (double)x[i],
                    ref[i]);
            fail();
        }
}

typedef struct flat {
    size_t off[NT], total; /* offsets in the flat buffer, with gaps between tensors */
    float *p0;
    double *ref_p;
    double *ref_s[CLOPT_MAX_STATE];
} flat;

static void flat_init(flat *f, size_t nstate, const clopt_hparams *hp, clopt_rule rule)
{
    size_t at = 3; /* a gap before the first tensor */
    for (size_t i = 0; i < NT; i++) {
        f->off[i] = at;
        at += sizes[i] + 5; /* gaps between tensors stay untouched */
    }
    f->total = at;
    uint64_t seed = 42;
    f->p0 = malloc(f->total * sizeof *f->p0);
    f->ref_p = malloc(f->total * sizeof *f->ref_p);
    assert_non_null(f->p0);
    for (size_t i = 0; i < f->total; i++)
        f->ref_p[i] = f->p0[i] = (float)ref_normal(&seed);
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++) {
        f->ref_s[k] = NULL;
        if (k < nstate) {
            f->ref_s[k] = malloc(f->total * sizeof(double));
            for (size_t i = 0; i < f->total; i++)
                f->ref_s[k][i] = ref_state_init(rule, hp, k);
        }
    }
}

static void flat_free(flat *f)
{
    free(f->p0);
    free(f->ref_p);
    for (size_t k = 0; k < CLOPT_MAX_STATE; k++)
        free(f->ref_s[k]);
}

/* Gradients of step t: the same pseudo-random values in float and double. */
static void make_grads(size_t total, uint64_t t, float *g, double *gd)
{
    uint64_t seed = 1000 + t;
    for (size_t i = 0; i < total; i++)
        gd[i] = g[i] = (float)(0.5 * ref_normal(&seed));
}

/* Two groups over one flat parameter buffer and one flat gradient buffer (decay on the
   2-D tensors only, as llm.c), `steps` steps of `rule`, against the reference. */
static void run_flat(fixture *fx, clopt_rule rule, const clopt_hparams *hp_in, int steps)
{
    clopt_ctx *ctx = fx->ctx;
    clopt_hparams hp_decay = *hp_in, hp_plain = *hp_in;
    hp_plain.weight_decay = 0;
    const size_t ns = ref_state_count(rule, &hp_decay);
    flat f;
    flat_init(&f, ns, &hp_decay, rule);
    cl_mem P = upload(ctx, f.p0, f.total), G = upload(ctx, NULL, f.total);
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, rule, &hp_decay, &opt), CLOPT_SUCCESS);
    for (int grp = 0; grp < 2; grp++) {
        clopt_param_desc d[NT];
        size_t nd = 0;
        for (size_t i = 0; i < NT; i++) {
            if (two_d[i] != (grp == 0))
                continue;
            memset(&d[nd], 0, sizeof d[nd]);
            d[nd].param = (clopt_tensor){P, f.off[i]};
            d[nd].grad = (clopt_tensor){G, f.off[i]};
            d[nd].ndim = 1;
            d[nd].shape[0] = sizes[i];
            nd++;
        }
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = nd;
        rg.tensors = d;
        size_t gi = 99;
        assert_int_equal(clopt_optimizer_add_range_group(opt, grp == 0 ? &hp_decay : &hp_plain,
                                                         &rg, &gi, NULL),
                         CLOPT_SUCCESS);
        assert_int_equal(gi, (size_t)grp + 1);
    }
    assert_int_equal(clopt_optimizer_param_count(opt), (size_t)NT);
    float *g = malloc(f.total * sizeof *g), *x = malloc(f.total * sizeof *x);
    double *gd = malloc(f.total * sizeof *gd);
    double mu[NT];
    for (size_t i = 0; i < NT; i++)
        mu[i] = 1.0;
    for (int t = 1; t <= steps; t++) {
        make_grads(f.total, (uint64_t)t, g, gd);
        write_at(ctx, (clopt_tensor){G, 0}, g, f.total);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        for (size_t i = 0; i < NT; i++) {
            double *st[CLOPT_MAX_STATE] = {NULL};
            for (size_t k = 0; k < ns; k++)
                st[k] = f.ref_s[k] + f.off[i];
            ref_step(rule, two_d[i] ? &hp_decay : &hp_plain, (uint64_t)t, sizes[i],
                     f.ref_p + f.off[i], gd + f.off[i], st, NULL, &mu[i], 0);
        }
    }
    read_at(ctx, (clopt_tensor){P, 0}, x, f.total);
    /* the gaps hold their initial values, bit for bit; the tensors follow the reference */
    const double rtol = 2e-5 + 50 * ref_hparam_coeff_error(rule, &hp_decay);
    for (size_t i = 0; i < f.total; i++) {
        int inside = 0;
        for (size_t k = 0; k < NT; k++)
            inside |= i >= f.off[k] && i < f.off[k] + sizes[k];
        if (!inside)
            assert_true(x[i] == f.p0[i]);
    }
    assert_close(clopt_rule_name(rule), x, f.ref_p, f.total, rtol, 2e-5);
    /* and the reference moved far beyond that tolerance (Adadelta at lr 1e-2 moved 5e-5:
       an lr 10% off passed) */
    double moved = 0.0;
    for (size_t i = 0; i < f.total; i++)
        moved = fmax(moved, fabs(f.ref_p[i] - (double)f.p0[i]));
    if (!(moved > 100 * 2e-5))
        fail_msg("%s: the reference moved %g at most, too little to test", clopt_rule_name(rule),
                 moved);
    /* the states the optimizer allocated, through its views of each tensor */
    for (size_t i = 0; i < NT; i++)
        for (size_t k = 0; k < ns; k++) {
            /* tensors are registered group by group: find this one's flat index */
            size_t which = 0, seen = 0;
            for (int grp = 0; grp < 2; grp++)
                for (size_t j = 0; j < NT; j++)
                    if (two_d[j] == (grp == 0) && seen++ == i)
                        which = j;
            float *s = malloc(sizes[which] * sizeof *s);
            assert_int_equal(clopt_optimizer_read_state(opt, i, k, s, sizes[which]),
                             CLOPT_SUCCESS);
            assert_close("state", s, f.ref_s[k] + f.off[which], sizes[which], rtol, 2e-5);
            free(s);
        }
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P);
    clReleaseMemObject(G);
    free(g);
    free(x);
    free(gd);
    flat_free(&f);
}

static void test_range_groups_every_rule(void **state)
{
    static const clopt_rule rules[] = {CLOPT_SGD,     CLOPT_ADAM,     CLOPT_ADAMW,
                                       CLOPT_ADAGRAD, CLOPT_ADADELTA, CLOPT_RMSPROP,
                                       CLOPT_ADAMAX,  CLOPT_NADAM,    CLOPT_RADAM,
                                       CLOPT_ADAMOD,  CLOPT_DIFFGRAD, CLOPT_LION};
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        clopt_hparams hp;
        assert_int_equal(clopt_hparams_default(rules[r], &hp), CLOPT_SUCCESS);
        hp.lr = rules[r] == CLOPT_LION       ? 1e-3
                : rules[r] == CLOPT_ADADELTA ? 1.0 /* its default: its steps are lr·~1e-3 */
                                             : 1e-2;
        hp.weight_decay = 0.1;
        if (rules[r] == CLOPT_SGD)
            hp.momentum = 0.9, hp.nesterov = 1;
        if (rules[r] == CLOPT_RMSPROP)
            hp.momentum = 0.5, hp.centered = 1;
        if (rules[r] == CLOPT_ADAM)
            hp.amsgrad = 1;
        run_flat(*state, rules[r], &hp, rules[r] == CLOPT_RADAM ? 7 : 3);
    }
}

/* llm.c's trainer: flat θ, g, m and v arrays laid out alike; the optimizer adopts m and v
   (and the step count) from a run in progress and continues it without changing numbers. */
static void test_adopt_engine_state(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    clopt_hparams hp;
    ref_hparams_default(CLOPT_ADAMW, &hp);
    hp.lr = 3e-3;
    hp.weight_decay = 0.0; /* one group for all: the simplest port */
    flat f;
    flat_init(&f, 2, &hp, CLOPT_ADAMW);
    uint64_t seed = 7;
    float *m0 = malloc(f.total * sizeof *m0), *v0 = malloc(f.total * sizeof *v0);
    for (size_t i = 0; i < f.total; i++) {
        f.ref_s[0][i] = m0[i] = (float)(0.01 * ref_normal(&seed));
        f.ref_s[1][i] = v0[i] = (float)(1e-4 * ref_uniform(&seed));
    }
    cl_mem P = upload(ctx, f.p0, f.total), G = upload(ctx, NULL, f.total);
    cl_mem M = upload(ctx, m0, f.total), V = upload(ctx, v0, f.total);
    clopt_param_desc d[NT];
    for (size_t i = 0; i < NT; i++) {
        memset(&d[i], 0, sizeof d[i]);
        d[i].param = (clopt_tensor){P, f.off[i]};
        d[i].grad = (clopt_tensor){G, f.off[i]};
        d[i].ndim = 1;
        d[i].shape[0] = sizes[i];
    }
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = NT;
    rg.tensors = d;
    rg.state[0] = M;
    rg.state[1] = V;
    rg.init_state = 0;
    /* the group's first tensor is at index 0: group 0 is empty, the range group is 1 */
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_step_count(opt, 10), CLOPT_SUCCESS);
    float *g = malloc(f.total * sizeof *g), *x = malloc(f.total * sizeof *x);
    double *gd = malloc(f.total * sizeof *gd);
    for (uint64_t t = 11; t <= 13; t++) {
        make_grads(f.total, t, g, gd);
        write_at(ctx, (clopt_tensor){G, 0}, g, f.total);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        for (size_t i = 0; i < NT; i++) {
            double *st[CLOPT_MAX_STATE] = {f.ref_s[0] + f.off[i], f.ref_s[1] + f.off[i]};
            ref_step(CLOPT_ADAMW, &hp, t, sizes[i], f.ref_p + f.off[i], gd + f.off[i], st, NULL,
                     NULL, 0);
        }
    }
    uint64_t count = 0;
    assert_int_equal(clopt_optimizer_param_step_count(opt, 2, &count), CLOPT_SUCCESS);
    assert_int_equal(count, 13);
    read_at(ctx, (clopt_tensor){P, 0}, x, f.total);
    for (size_t i = 0; i < NT; i++)
        assert_close("param", x + f.off[i], f.ref_p + f.off[i], sizes[i], 2e-5, 2e-6);
    /* the engine's own m and v arrays hold the state */
    read_at(ctx, (clopt_tensor){M, 0}, x, f.total);
    for (size_t i = 0; i < NT; i++)
        assert_close("m", x + f.off[i], f.ref_s[0] + f.off[i], sizes[i], 2e-5, 2e-7);
    read_at(ctx, (clopt_tensor){V, 0}, x, f.total);
    for (size_t i = 0; i < NT; i++)
        assert_close("v", x + f.off[i], f.ref_s[1] + f.off[i], sizes[i], 2e-5, 2e-9);
    clopt_optimizer_destroy(opt);
    cl_mem all[] = {P, G, M, V};
    for (size_t i = 0; i < 4; i++)
        clReleaseMemObject(all[i]);
    free(m0), free(v0), free(g), free(x), free(gd);
    flat_free(&f);
}

/* Arrays in host memory, used by the device without copies (CL_MEM_USE_HOST_PTR), mapped
   around the step: the engine's host arrays are the parameters. */
static void test_host_memory_zero_copy(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    const size_t n = 5000;
    float *hp_arr = NULL, *hg_arr = NULL;
    assert_int_equal(posix_memalign((void **)&hp_arr, 4096, n * sizeof(float)), 0);
    assert_int_equal(posix_memalign((void **)&hg_arr, 4096, n * sizeof(float)), 0);
    double *ref = malloc(n * sizeof *ref), *gd = malloc(n * sizeof *gd), *m = calloc(n, 8);
    uint64_t seed = 3;
    for (size_t i = 0; i < n; i++)
        ref[i] = hp_arr[i] = (float)ref_normal(&seed);
    cl_int err;
    cl_context c = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    cl_mem P = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, n * sizeof(float),
                              hp_arr, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_mem G = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, n * sizeof(float),
                              hg_arr, &err);
    assert_int_equal(err, CL_SUCCESS);
    clopt_hparams hp;
    ref_hparams_default(CLOPT_SGD, &hp);
    hp.lr = 0.1;
    hp.momentum = 0.9;
    clopt_param_desc d;
    memset(&d, 0, sizeof d);
    d.param = (clopt_tensor){P, 0};
    d.grad = (clopt_tensor){G, 0};
    d.ndim = 1;
    d.shape[0] = n;
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_SGD, &hp, &opt), CLOPT_SUCCESS);
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = 1;
    rg.tensors = &d;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    for (uint64_t t = 1; t <= 3; t++) {
        /* the engine writes its gradient into its host array between map and unmap */
        float *gm = clEnqueueMapBuffer(q, G, CL_TRUE, CL_MAP_WRITE, 0, n * sizeof(float), 0,
                                       NULL, NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        for (size_t i = 0; i < n; i++)
            gd[i] = gm[i] = (float)sin((double)(i + t));
        assert_int_equal(clEnqueueUnmapMemObject(q, G, gm, 0, NULL, NULL), CL_SUCCESS);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        double *st[CLOPT_MAX_STATE] = {m};
        ref_step(CLOPT_SGD, &hp, t, n, ref, gd, st, NULL, NULL, 0);
    }
    float *pm = clEnqueueMapBuffer(q, P, CL_TRUE, CL_MAP_READ, 0, n * sizeof(float), 0, NULL,
                                   NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    assert_close("host param", pm, ref, n, 1e-5, 1e-6);
    assert_int_equal(clEnqueueUnmapMemObject(q, P, pm, 0, NULL, NULL), CL_SUCCESS);
    assert_int_equal(clFinish(q), CL_SUCCESS);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P);
    clReleaseMemObject(G);
    free(hp_arr), free(hg_arr), free(ref), free(gd), free(m);
}

/* Misuse that is refused, each leaving the optimizer as it was. */
static void test_misuse_refused(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    cl_mem B = upload(ctx, NULL, 1000), G = upload(ctx, NULL, 1000);
    clopt_hparams hp;
    ref_hparams_default(CLOPT_ADAM, &hp);
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    /* a step with no tensors */
    assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_step_count(opt), 0);
    clopt_param_desc d[2];
    memset(d, 0, sizeof d);
    d[0] = (clopt_param_desc){.param = {B, 0}, .grad = {G, 0}, .ndim = 1, .shape = {100}};
    d[1] = (clopt_param_desc){.param = {B, 50}, .grad = {G, 100}, .ndim = 1, .shape = {100}};
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = 2;
    rg.tensors = d;
    /* two parameter ranges overlap */
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "overlaps"));
    /* a gradient range inside the parameter range (one buffer for both) */
    d[1] = (clopt_param_desc){.param = {B, 200}, .grad = {B, 250}, .ndim = 1, .shape = {100}};
    d[0].grad = (clopt_tensor){B, 400};
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* the engine's state overlapping a parameter */
    d[0] = (clopt_param_desc){.param = {B, 0}, .grad = {G, 0}, .ndim = 1, .shape = {100}};
    d[1] = (clopt_param_desc){.param = {B, 100}, .grad = {G, 100}, .ndim = 1, .shape = {100}};
    rg.state[0] = B;
    rg.state[1] = G;
    size_t offs[2] = {500, 150}; /* tensor 1's state at 150 overlaps tensor 1's θ in B */
    rg.state_offsets = offs;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* state buffers for only one of Adam's two states */
    rg.state[1] = NULL;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_STATE_MISMATCH);
    assert_int_equal(clopt_optimizer_group_count(opt), 1);
    assert_int_equal(clopt_optimizer_param_count(opt), 0);
    /* fine: library-owned state */
    rg.state[0] = NULL;
    rg.state_offsets = NULL;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    /* the same tensor registered twice, as a range group or with add_param_desc */
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d[1], NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* a tensor added to a range group later (its chunk table is fixed) */
    clopt_param_desc late = {.param = {B, 600}, .grad = {G, 600}, .ndim = 1, .shape = {10}};
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 1, &late, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* a new tensor whose gradient is another tensor's gradient */
    clopt_param_desc e = {.param = {B, 300}, .grad = {G, 150}, .ndim = 1, .shape = {10}};
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &e, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_param_count(opt), 2);
    assert_int_equal(clopt_optimizer_group_count(opt), 2);
    /* an uninitialised descriptor */
    clopt_range_group bad;
    memset(&bad, 0, sizeof bad);
    bad.ntensors = 1;
    bad.tensors = d;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &bad, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    /* a garbage struct_size is refused before anything past the struct is read (any large
       size was accepted: the fields it claimed were never looked at, nor refused when set);
       a newer caller's larger struct is fine when its unknown fields are 0, refused when one
       is set */
    rg.ntensors = 1;
    rg.tensors = &d[0];
    d[0] = (clopt_param_desc){.param = {B, 900}, .grad = {G, 900}, .ndim = 1, .shape = {10}};
    const size_t garbage[] = {(size_t)0xdeadbeefcafe, 1025, (size_t)-1};
    for (int k = 0; k < 3; k++) {
        rg.struct_size = garbage[k];
        assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                         CLOPT_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(clopt_ctx_last_error(ctx), "clopt_range_group_init"));
    }
    unsigned char newer[sizeof rg + 16];
    memset(newer, 0, sizeof newer);
    rg.struct_size = sizeof newer;
    memcpy(newer, &rg, sizeof rg);
    newer[sizeof rg + 9] = 1;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, (clopt_range_group *)newer, NULL,
                                                     NULL),
                     CLOPT_ERR_UNSUPPORTED);
    assert_int_equal(clopt_optimizer_group_count(opt), 2);
    newer[sizeof rg + 9] = 0;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, (clopt_range_group *)newer, NULL,
                                                     NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_group_count(opt), 3);
    rg.struct_size = sizeof rg;
    /* a later tensor's NULL buffer is NULL_ARGUMENT, as the first's (it was the one-cl_mem
       refusal, INVALID_ARGUMENT) */
    clopt_param_desc two[2] = {
        {.param = {B, 700}, .grad = {G, 700}, .ndim = 1, .shape = {10}},
        {.param = {NULL, 0}, .grad = {G, 720}, .ndim = 1, .shape = {10}}};
    rg.ntensors = 2;
    rg.tensors = two;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_NULL_ARGUMENT);
    /* a Hessian estimate for a rule that takes none (it was ignored; add_param_desc refuses) */
    clopt_param_desc h = {.param = {B, 700}, .grad = {G, 700}, .hessian = {G, 800}, .ndim = 1,
                          .shape = {10}};
    rg.ntensors = 1;
    rg.tensors = &h;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_STATE_MISMATCH);
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &h, NULL), CLOPT_ERR_STATE_MISMATCH);
    assert_int_equal(clopt_optimizer_group_count(opt), 3);
    /* a sub-buffer is its parent's bytes: B's first 100 floats (tensor 0's θ) as a new
       tensor's θ, and at the op level a gradient that is a view of θ (both were accepted:
       the checks compared cl_mem handles only) */
    cl_int err;
    const cl_buffer_region head = {0, 100 * sizeof(float)};
    cl_mem sub = clCreateSubBuffer(B, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &head,
                                   &err);
    assert_int_equal(err, CL_SUCCESS);
    clopt_param_desc view = {.param = {sub, 50}, .grad = {G, 950}, .ndim = 1, .shape = {10}};
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &view, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "overlaps"));
    assert_int_equal(clopt_optimizer_param_count(opt), 3);
    clopt_hparams sgd;
    clopt_hparams_default(CLOPT_SGD, &sgd);
    clopt_step_args oa;
    clopt_step_args_init(&oa);
    oa.param = (clopt_tensor){B, 0};
    oa.grad = (clopt_tensor){sub, 40};
    assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &sgd, &oa, 50, 1, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "overlap"));
    oa.grad = (clopt_tensor){sub, 50}; /* bytes [200, 400) of B: disjoint, fine */
    assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &sgd, &oa, 50, 1, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    /* the ops with two tensors: the same range through the view is dst += src in place
       (fine), a shifted one overlaps (it passed), also for a conversion */
    assert_int_equal(clopt_enqueue_axpby_ex(ctx, NULL, (clopt_tensor){B, 0}, CLOPT_DTYPE_F32,
                                            (clopt_tensor){sub, 0}, CLOPT_DTYPE_F32, 50, 1.0,
                                            1.0, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clopt_enqueue_axpby_ex(ctx, NULL, (clopt_tensor){B, 0}, CLOPT_DTYPE_F32,
                                            (clopt_tensor){sub, 10}, CLOPT_DTYPE_F32, 50, 1.0,
                                            1.0, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_enqueue_convert(ctx, NULL, (clopt_tensor){B, 0}, CLOPT_DTYPE_F32,
                                           (clopt_tensor){sub, 5}, CLOPT_DTYPE_BF16, 10, 0, 0,
                                           0, 1, 0, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    clReleaseMemObject(sub);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(B);
    clReleaseMemObject(G);
}

/* The engine's own state buffers, once a range group adopted them, are refused as another
   group's state ranges or as a parameter (they were accepted: a second group's init_state
   refilled the first group's live moments, and both updated one m); the refused calls leave
   m and v as they were. Disjoint state ranges of the same buffers are fine. */
static void test_engine_state_overlap_refused(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    enum { N = 100 };
    float ones[4 * N];
    for (size_t i = 0; i < 4 * N; i++)
        ones[i] = 1.0f;
    cl_mem P = upload(ctx, NULL, 4 * N), G = upload(ctx, NULL, 4 * N);
    cl_mem M = upload(ctx, NULL, 4 * N), V = upload(ctx, NULL, 4 * N);
    clopt_hparams hp;
    ref_hparams_default(CLOPT_ADAM, &hp);
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d = {.param = {P, 0}, .grad = {G, 0}, .ndim = 1, .shape = {N}};
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = 1;
    rg.tensors = &d;
    rg.state[0] = M, rg.state[1] = V;
    size_t off = 0;
    rg.state_offsets = &off;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    /* the first group's moments as an engine that trained a while would have them */
    write_at(ctx, (clopt_tensor){M, 0}, ones, 4 * N);
    write_at(ctx, (clopt_tensor){V, 0}, ones, 4 * N);
    /* a second group over other parameters whose state ranges overlap the first one's */
    d = (clopt_param_desc){.param = {P, N}, .grad = {G, N}, .ndim = 1, .shape = {N}};
    off = N / 2;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "state range"));
    /* a parameter (or a gradient) inside the adopted m */
    clopt_param_desc in_m = {.param = {M, 10}, .grad = {G, 3 * N}, .ndim = 1, .shape = {10}};
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &in_m, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    in_m = (clopt_param_desc){.param = {P, 3 * N}, .grad = {V, 90}, .ndim = 1, .shape = {20}};
    assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &in_m, NULL),
                     CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_param_count(opt), 1);
    float got[4 * N];
    read_at(ctx, (clopt_tensor){M, 0}, got, 4 * N);
    assert_memory_equal(got, ones, sizeof ones);
    read_at(ctx, (clopt_tensor){V, 0}, got, 4 * N);
    assert_memory_equal(got, ones, sizeof ones);
    /* disjoint ranges of the same buffers: accepted, and only they are filled */
    off = N;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    read_at(ctx, (clopt_tensor){M, 0}, got, 4 * N);
    for (size_t i = 0; i < 4 * N; i++)
        assert_true(got[i] == (i >= N && i < 2 * N ? 0.0f : 1.0f));
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P), clReleaseMemObject(G), clReleaseMemObject(M), clReleaseMemObject(V);
}

/* The multi-pass rules in a range group run per tensor with each tensor's own state layout
   (Adafactor's factored statistics for a matrix: rows + cols floats). The same tensors
   registered one by one (add_param_desc, checked against the references in
   test_reductions) must give the same bits. */
static void test_range_group_multipass(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    static const clopt_rule rules[] = {CLOPT_ADAFACTOR, CLOPT_LAMB};
    enum { R = 6, C = 9, V = 11, GAP = 3, TOTAL = GAP + R * C + GAP + V };
    for (size_t r = 0; r < 2; r++) {
        clopt_hparams hp;
        assert_int_equal(clopt_hparams_default(rules[r], &hp), CLOPT_SUCCESS);
        hp.lr = 1e-2;
        float p0[TOTAL], g[TOTAL], a[TOTAL], b[TOTAL];
        uint64_t seed = 5;
        for (int i = 0; i < TOTAL; i++) {
            p0[i] = (float)ref_normal(&seed);
            g[i] = (float)(0.3 * ref_normal(&seed));
        }
        const size_t off[2] = {GAP, GAP + R * C + GAP};
        clopt_param_desc d[2] = {
            {.ndim = 2, .shape = {R, C}},
            {.ndim = 1, .shape = {V}},
        };
        /* a: one range group over flat buffers */
        cl_mem P = upload(ctx, p0, TOTAL), G = upload(ctx, g, TOTAL);
        for (int i = 0; i < 2; i++) {
            d[i].param = (clopt_tensor){P, off[i]};
            d[i].grad = (clopt_tensor){G, off[i]};
        }
        clopt_optimizer *oa = NULL, *ob = NULL;
        assert_int_equal(clopt_optimizer_create(ctx, rules[r], &hp, &oa), CLOPT_SUCCESS);
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = 2;
        rg.tensors = d;
        assert_int_equal(clopt_optimizer_add_range_group(oa, &hp, &rg, NULL, NULL),
                         CLOPT_SUCCESS);
        const char *name = NULL;
        size_t len = 0;
        if (rules[r] == CLOPT_ADAFACTOR) { /* the matrix's factored row statistics */
            assert_int_equal(clopt_optimizer_state_info(oa, 0, 0, &name, &len), CLOPT_SUCCESS);
            assert_string_equal(name, "exp_avg_sq_row");
            assert_int_equal(len, R);
        }
        /* b: the same tensors in buffers of their own */
        cl_mem Pb[2], Gb[2];
        assert_int_equal(clopt_optimizer_create(ctx, rules[r], &hp, &ob), CLOPT_SUCCESS);
        for (int i = 0; i < 2; i++) {
            size_t n = i ? V : R * C;
            Pb[i] = upload(ctx, p0 + off[i], n);
            Gb[i] = upload(ctx, g + off[i], n);
            clopt_param_desc e = d[i];
            e.param = (clopt_tensor){Pb[i], 0};
            e.grad = (clopt_tensor){Gb[i], 0};
            assert_int_equal(clopt_optimizer_add_param_desc(ob, 0, &e, NULL), CLOPT_SUCCESS);
        }
        for (int t = 0; t < 4; t++) {
            assert_int_equal(clopt_optimizer_step(oa, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(ob, NULL), CLOPT_SUCCESS);
        }
        read_at(ctx, (clopt_tensor){P, 0}, a, TOTAL);
        memcpy(b, p0, sizeof b);
        for (int i = 0; i < 2; i++)
            read_at(ctx, (clopt_tensor){Pb[i], 0}, b + off[i], i ? V : R * C);
        assert_memory_equal(a, b, sizeof a); /* the gaps untouched, the tensors alike */
        clopt_optimizer_destroy(oa);
        clopt_optimizer_destroy(ob);
        clReleaseMemObject(P);
        clReleaseMemObject(G);
        for (int i = 0; i < 2; i++) {
            clReleaseMemObject(Pb[i]);
            clReleaseMemObject(Gb[i]);
        }
    }
}

/* set_step_count while AMP steps are still in flight: their verdicts are taken first, and
   the next step uses the new count's bias corrections (the device's count follows). */
static void test_set_step_count_in_flight(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    const size_t n = 3000;
    clopt_hparams hp;
    ref_hparams_default(CLOPT_ADAM, &hp);
    hp.lr = 1e-2;
    float *p0 = malloc(n * sizeof *p0), *g = malloc(n * sizeof *g), *x = malloc(n * sizeof *x);
    double *ref = malloc(n * sizeof *ref), *gd = malloc(n * sizeof *gd);
    double *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    uint64_t seed = 11;
    for (size_t i = 0; i < n; i++) {
        p0[i] = (float)ref_normal(&seed);
        gd[i] = g[i] = (float)(0.1 * ref_normal(&seed));
    }
    cl_mem P = upload(ctx, p0, n), G = upload(ctx, g, n);
    clopt_param_desc d = {.param = {P, 0}, .grad = {G, 0}, .ndim = 1, .shape = {n}};
    clopt_optimizer *opt = NULL;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAM, &hp, &opt), CLOPT_SUCCESS);
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = 1;
    rg.tensors = &d;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(opt, 1.0), CLOPT_SUCCESS);
    for (size_t i = 0; i < n; i++)
        ref[i] = p0[i];
    double *st[CLOPT_MAX_STATE] = {m, v};
    for (uint64_t t = 1; t <= 3; t++) { /* no sync between them */
        assert_int_equal(clopt_optimizer_step_on(opt, NULL, 0, NULL, NULL), CLOPT_SUCCESS);
        ref_step(CLOPT_ADAM, &hp, t, n, ref, gd, st, NULL, NULL, 0);
    }
    assert_int_equal(clopt_optimizer_set_step_count(opt, 50), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_step_on(opt, NULL, 0, NULL, NULL), CLOPT_SUCCESS);
    ref_step(CLOPT_ADAM, &hp, 51, n, ref, gd, st, NULL, NULL, 0);
    read_at(ctx, (clopt_tensor){P, 0}, x, n); /* blocking, on the same queue */
    assert_close("param", x, ref, n, 2e-5, 2e-6);
    float *sm = malloc(n * sizeof *sm);
    assert_int_equal(clopt_optimizer_read_state(opt, 0, 1, sm, n), CLOPT_SUCCESS);
    assert_close("v", sm, v, n, 2e-5, 1e-10);
    uint64_t c = 0;
    assert_int_equal(clopt_optimizer_param_step_count(opt, 0, &c), CLOPT_SUCCESS);
    assert_int_equal(c, 51);
    assert_int_equal(clopt_optimizer_step_count(opt), 51);
    /* a count no checkpoint may hold (2^53 - 64 is the largest): it was taken, saved, and
       the bytes were then refused by load_from ("impossible step count"); 2^64 - 1 wrapped
       the next step's t to 0 */
    const uint64_t top = (UINT64_C(1) << 53) - 64;
    assert_int_equal(clopt_optimizer_set_step_count(opt, top + 1), CLOPT_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "2^53"));
    assert_int_equal(clopt_optimizer_set_step_count(opt, UINT64_MAX), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_step_count(opt), 51);
    assert_int_equal(clopt_optimizer_set_step_count(opt, top), CLOPT_SUCCESS);
    size_t bytes = 0;
    assert_int_equal(clopt_optimizer_state_size(opt, NULL, &bytes), CLOPT_SUCCESS);
    unsigned char *ck = malloc(bytes);
    assert_int_equal(clopt_optimizer_save_to(opt, NULL, ck, bytes, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_load_from(opt, ck, bytes), CLOPT_SUCCESS);
    free(ck);
    /* a NULL out names itself (the previous call's message was left in place) */
    assert_int_equal(clopt_optimizer_set_step_count(opt, UINT64_MAX), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_poll(opt, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "out is NULL"));
    assert_int_equal(clopt_optimizer_set_step_count(opt, UINT64_MAX), CLOPT_ERR_INVALID_ARGUMENT);
    assert_int_equal(clopt_optimizer_get_loss_scaler(opt, NULL), CLOPT_ERR_NULL_ARGUMENT);
    assert_non_null(strstr(clopt_ctx_last_error(ctx), "out is NULL"));
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(P);
    clReleaseMemObject(G);
    free(p0), free(g), free(x), free(ref), free(gd), free(m), free(v), free(sm);
}

/* The op level's state allocator: buffers filled with each state's initial value. */
static void test_alloc_state(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    clopt_hparams hp;
    ref_hparams_default(CLOPT_ADAGRAD, &hp);
    hp.initial_accumulator_value = 0.25;
    clopt_tensor st[CLOPT_MAX_STATE];
    size_t count = 9;
    assert_int_equal(clopt_alloc_state(ctx, CLOPT_ADAGRAD, &hp, 37, st, &count), CLOPT_SUCCESS);
    assert_int_equal(count, 1);
    assert_null(st[1].buffer);
    float x[37];
    read_at(ctx, st[0], x, 37);
    for (size_t i = 0; i < 37; i++)
        assert_true(x[i] == 0.25f);
    clReleaseMemObject(st[0].buffer);
    ref_hparams_default(CLOPT_ADAM, &hp);
    hp.amsgrad = 1;
    assert_int_equal(clopt_alloc_state(ctx, CLOPT_ADAM, &hp, 37, st, &count), CLOPT_SUCCESS);
    assert_int_equal(count, 3);
    for (size_t k = 0; k < 3; k++) {
        read_at(ctx, st[k], x, 37);
        for (size_t i = 0; i < 37; i++)
            assert_true(x[i] == 0.0f);
        clReleaseMemObject(st[k].buffer);
    }
    /* a failed call writes neither out nor count (they were cleared first) */
    static char mark;
    cl_mem const sentinel = (cl_mem)(void *)&mark;
    st[0] = (clopt_tensor){sentinel, 5};
    count = 99;
    ref_hparams_default(CLOPT_LAMB, &hp);
    assert_int_equal(clopt_alloc_state(ctx, CLOPT_LAMB, &hp, 37, st, &count),
                     CLOPT_ERR_UNSUPPORTED);
    ref_hparams_default(CLOPT_ADAM, &hp);
    assert_int_equal(clopt_alloc_state(ctx, CLOPT_ADAM, &hp, 0, st, &count),
                     CLOPT_ERR_INVALID_SIZE);
    hp.lr = -1;
    assert_int_equal(clopt_alloc_state(ctx, CLOPT_ADAM, &hp, 37, st, &count),
                     CLOPT_ERR_INVALID_HYPERPARAM);
    assert_int_equal(count, 99);
    assert_ptr_equal(st[0].buffer, sentinel);
    assert_int_equal(st[0].offset, 5);
}

/* A plain group's checkpoint whose tensors were added at different steps (counts 4 and 1)
   is refused by a range group of the same shapes, whose fused launch steps every tensor with
   the first one's count (it loaded, and the second tensor then stepped as at step 5);
   tensors added together load. */
static void test_range_group_load_counts(void **state)
{
    fixture *fx = *state;
    clopt_ctx *ctx = fx->ctx;
    float g[40];
    for (int i = 0; i < 40; i++)
        g[i] = 0.01f * (float)(i + 1);
    cl_mem P = upload(ctx, NULL, 40), G = upload(ctx, g, 40);
    cl_mem P2 = upload(ctx, NULL, 40), G2 = upload(ctx, g, 40);
    clopt_hparams hp;
    ref_hparams_default(CLOPT_ADAM, &hp);
    for (int late = 1; late >= 0; late--) {
        clopt_optimizer *a = NULL, *b = NULL;
        size_t g1 = 0;
        assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAM, &hp, &a), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_add_group(a, &hp, &g1), CLOPT_SUCCESS);
        clopt_param_desc x = {.param = {P, 0}, .grad = {G, 0}, .ndim = 1, .shape = {10}};
        clopt_param_desc y = {.param = {P, 20}, .grad = {G, 20}, .ndim = 1, .shape = {10}};
        assert_int_equal(clopt_optimizer_add_param_desc(a, g1, &x, NULL), CLOPT_SUCCESS);
        if (!late)
            assert_int_equal(clopt_optimizer_add_param_desc(a, g1, &y, NULL), CLOPT_SUCCESS);
        for (int t = 0; t < 3; t++)
            assert_int_equal(clopt_optimizer_step(a, NULL), CLOPT_SUCCESS);
        if (late)
            assert_int_equal(clopt_optimizer_add_param_desc(a, g1, &y, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(a, NULL), CLOPT_SUCCESS);
        size_t len = 0;
        assert_int_equal(clopt_optimizer_state_size(a, NULL, &len), CLOPT_SUCCESS);
        unsigned char *bytes = malloc(len);
        assert_int_equal(clopt_optimizer_save_to(a, NULL, bytes, len, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAM, &hp, &b), CLOPT_SUCCESS);
        clopt_param_desc d[2] = {
            {.param = {P2, 0}, .grad = {G2, 0}, .ndim = 1, .shape = {10}},
            {.param = {P2, 20}, .grad = {G2, 20}, .ndim = 1, .shape = {10}}};
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = 2;
        rg.tensors = d;
        assert_int_equal(clopt_optimizer_add_range_group(b, &hp, &rg, NULL, NULL), CLOPT_SUCCESS);
        uint64_t c = 9;
        if (late) {
            assert_int_equal(clopt_optimizer_load_from(b, bytes, len), CLOPT_ERR_STATE_MISMATCH);
            assert_non_null(strstr(clopt_ctx_last_error(ctx), "range group"));
            assert_int_equal(clopt_optimizer_step_count(b), 0);
            assert_int_equal(clopt_optimizer_param_step_count(b, 1, &c), CLOPT_SUCCESS);
            assert_int_equal(c, 0);
        } else {
            assert_int_equal(clopt_optimizer_load_from(b, bytes, len), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_param_step_count(b, 1, &c), CLOPT_SUCCESS);
            assert_int_equal(c, 4);
        }
        free(bytes);
        clopt_optimizer_destroy(a);
        clopt_optimizer_destroy(b);
    }
    clReleaseMemObject(P);
    clReleaseMemObject(G);
    clReleaseMemObject(P2);
    clReleaseMemObject(G2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_groups_every_rule),
        cmocka_unit_test(test_adopt_engine_state),
        cmocka_unit_test(test_host_memory_zero_copy),
        cmocka_unit_test(test_misuse_refused),
        cmocka_unit_test(test_engine_state_overlap_refused),
        cmocka_unit_test(test_range_group_multipass),
        cmocka_unit_test(test_set_step_count_in_flight),
        cmocka_unit_test(test_alloc_state),
        cmocka_unit_test(test_range_group_load_counts),
    };
    if (test_small())
        sizes[2] = 16421;
    return cmocka_run_group_tests(tests, setup, teardown);
}
