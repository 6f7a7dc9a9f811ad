/* SPDX-License-Identifier: MIT */
/* 8-bit state in work-groups: the shape a GPU's tuning (one vector per work-item) selects,
   a work-group of 256 / VW work-items per block of 256 with the absmax reduced in local
   memory (kernels/storage.cl, Q8WG), run on any device (PoCL's CPU device in CI, whose
   default is the other shape, a work-item per block) by setting the tunings explicitly.
    - every configuration of the one-step test against the double transcription of the
      blockwise algorithm (the test_q8_one_step checks), with vectors of 4 (the GPU row's,
      64 work-items per block), 1 (256), 2, 8 and 16 (16 work-items), and bit for bit the
      result of the work-item shape on the same input: θ, codes and absmaxes;
    - the optimizer level: a range group (a work-group per table row), the same tensors in
      Lookahead (per-tensor launches through the views), and an arena group with a tensor
      kept in float32, with AMP on and a step skipped for an Inf gradient, bit for bit the
      work-item shape's θ (gaps included) and states after every step;
    - with the storage around 8-bit state (gradient centralization, 16-bit θ and g with
      stochastic rounding, an fp32 master or a bf16 remainder; AMSGrad, RMSprop with momentum)
      three steps from clopt_alloc_state_ex's initial state, bit for bit the work-item
      shape's θ, master, codes and absmaxes;
    - clopt_ctx_get_rule_tuning reports the shape (work-group size 256 / VW). */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "ref.h"
#include "test_q8.h"

/* The work-group shapes: vector width, one vector per work-item. */
static const unsigned widths[] = {4, 1, 2, 8, 16};

/* vw with one vector per work-item: a work-group per block; vw 0: a work-item per block */
static void set_shape(clopt_ctx *ctx, unsigned vw)
{
    clopt_tuning t;
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
    t.vector_width = vw ? vw : 16;
    t.items_per_work_item = vw ? 1 : 16;
    t.work_group_size = 0;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
}

/* Back to the device's default table, as the fixture's context. */
static void default_shape(clopt_ctx **ctx)
{
    clopt_ctx_destroy(*ctx);
    assert_int_equal(clopt_ctx_create(ctx), CLOPT_SUCCESS);
}

static size_t same_run(const char *label, unsigned vw, const q8run *a, const q8run *b)
{
    size_t bad = 0;
    if (memcmp(a->theta, b->theta, a->n * 4))
        bad++, print_error("%s n %zu VW %u: θ differs from the work-item shape's\n", label, a->n,
                           vw);
    for (size_t k = 0; k < a->ns; k++)
        if (memcmp(a->st[k].code, b->st[k].code, a->n) ||
            memcmp(a->st[k].amax, b->st[k].amax, nblocks(a->n) * sizeof(float)))
            bad++, print_error("%s n %zu VW %u: state %zu differs from the work-item shape's\n",
                               label, a->n, vw, k);
    return bad;
}

void test_q8_group_one_step(void **state)
{
    fixture *f = *state;
    maps_init();
    static const size_t full[] = {1, 255, 256, 257, 1000, 4095, 4096};
    static const size_t small[] = {1, 257, 1000};
    const size_t *sizes = test_small() ? small : full;
    const size_t nsizes =
        test_small() ? sizeof small / sizeof small[0] : sizeof full / sizeof full[0];
    clopt_rule rule;
    clopt_hparams hp;
    uint64_t t;
    const char *label;
    int nconf = 0;
    while (q8_config(nconf, &rule, &hp, &t, &label))
        nconf++;
    /* the work-item shape's results first */
    q8run *ref = calloc((size_t)nconf * nsizes, sizeof *ref);
    assert_non_null(ref);
    set_shape(f->ctx, 0);
    size_t bad = 0;
    for (int ci = 0; ci < nconf; ci++)
        for (size_t j = 0; j < nsizes; j++) {
            q8stats st = {0};
            bad += q8_one_step_case(f->ctx, ci, sizes[j], 1000u + 17u * (uint64_t)ci + sizes[j],
                                    &st, &ref[(size_t)ci * nsizes + j]);
        }
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        /* all configurations with the GPU row's width; the others on three rules, and
           under the simulator (Oclgrind) two widths */
        if (test_small() && w > 1)
            continue;
        set_shape(f->ctx, widths[w]);
        assert_true(q8_config(1, &rule, &hp, &t, &label));
        hp.state_dtype = CLOPT_DTYPE_U8;
        clopt_tuning rt;
        assert_int_equal(clopt_ctx_get_rule_tuning(f->ctx, rule, &hp, &rt), CLOPT_SUCCESS);
        assert_int_equal(rt.vector_width, widths[w]);
        assert_int_equal(rt.items_per_work_item, 1);
        assert_int_equal(rt.work_group_size, 256 / widths[w]);
        for (int ci = 0; ci < nconf; ci++) {
            if (w > 0 && ci != 1 && ci != 2 && ci != 5)
                continue;
            assert_true(q8_config(ci, &rule, &hp, &t, &label));
            q8stats st = {0};
            size_t b = 0;
            for (size_t j = 0; j < nsizes; j++) {
                q8run got = {0};
                b += q8_one_step_case(f->ctx, ci, sizes[j],
                                      1000u + 17u * (uint64_t)ci + sizes[j], &st, &got);
                b += same_run(label, widths[w], &ref[(size_t)ci * nsizes + j], &got);
                q8run_free(&got);
            }
            print_message("  VW %2u, %3u work-items per block: %-26s worst θ error %.2f u, "
                          "state %.3f code steps%s\n",
                          widths[w], 256 / widths[w], label, st.theta_worst, st.state_worst,
                          b ? "  FAILED" : "");
            bad += b;
        }
    }
    for (size_t i = 0; i < (size_t)nconf * nsizes; i++)
        q8run_free(&ref[i]);
    free(ref);
    default_shape(&f->ctx);
    assert_int_equal(bad, 0);
}

/* ---- the storage around 8-bit state ----------------------------------------------------- */

enum { SR = 40, SC = 129, SN = SR * SC }; /* a 40 x 129 matrix: blocks cut by its end */

typedef struct combo {
    const char *label;
    clopt_rule rule;
    int gc, amsgrad;
    clopt_dtype p, g;
    clopt_master master;
    int sr;
} combo;

static const combo combos[] = {
    {"adamw GC", CLOPT_ADAMW, 1, 0, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, 0},
    {"adamw amsgrad bf16 θ g SR", CLOPT_ADAMW, 0, 1, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16,
     CLOPT_MASTER_NONE, 1},
    {"adamw bf16 θ remainder", CLOPT_ADAMW, 0, 0, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32,
     CLOPT_MASTER_REMAINDER, 0},
    {"rmsprop GC f16 θ f32 master", CLOPT_RMSPROP, 1, 0, CLOPT_DTYPE_F16,
     CLOPT_DTYPE_F16, CLOPT_MASTER_F32, 0},
};

/* n floats into dst, a buffer of type dt: 16-bit ones rounded to nearest even by the
   library's convert (on the context's queue, in order with the steps) */
static void put_typed(clopt_ctx *ctx, cl_mem dst, clopt_dtype dt, const float *x, size_t n)
{
    if (dt == CLOPT_DTYPE_F32) {
        buf_write(ctx, dst, 0, n * 4, x);
        return;
    }
    cl_mem tmp = buf_new(ctx, n * 4, x);
    assert_int_equal(clopt_enqueue_convert(ctx, NULL, (clopt_tensor){dst, 0}, dt,
                                           (clopt_tensor){tmp, 0}, CLOPT_DTYPE_F32, n, 0, 0, 0, 0,
                                           0, NULL, NULL),
                     CLOPT_SUCCESS);
    clReleaseMemObject(tmp);
}

/* Every byte the three steps write, in one allocation: θ, the master, codes, absmaxes. */
static unsigned char *combo_run(clopt_ctx *ctx, const combo *c, size_t *len)
{
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(c->rule, &hp), CLOPT_SUCCESS);
    hp.lr = 1e-2, hp.weight_decay = 0.01;
    hp.grad_centralization = c->gc, hp.amsgrad = c->amsgrad;
    if (c->rule == CLOPT_RMSPROP)
        hp.momentum = 0.9;
    const size_t ps = c->p == CLOPT_DTYPE_F32 ? 4 : 2, gs = c->g == CLOPT_DTYPE_F32 ? 4 : 2;
    const size_t ms = c->master == CLOPT_MASTER_F32 ? 4 : c->master ? 2 : 0;
    uint64_t s = 71;
    float *x = xmalloc(SN * 4);
    unsigned char *pi = xmalloc(SN * ps), *zero = xmalloc(SN * 4);
    memset(zero, 0, SN * 4);
    for (size_t i = 0; i < SN; i++)
        x[i] = (float)ref_normal(&s);
    /* θ in its type; the master θ widened (fp32) or zero remainders */
    cl_mem p = buf_new(ctx, SN * ps, NULL), g = buf_new(ctx, SN * gs, NULL),
           m = buf_new(ctx, SN * 4, zero), sc = buf_new(ctx, SR * 4, NULL);
    put_typed(ctx, p, c->p, x, SN);
    if (ms == 4)
        assert_int_equal(clopt_enqueue_convert(ctx, NULL, (clopt_tensor){m, 0}, CLOPT_DTYPE_F32,
                                               (clopt_tensor){p, 0}, c->p, SN, 0, 0, 0, 0, 0,
                                               NULL, NULL),
                         CLOPT_SUCCESS);
    buf_read(ctx, p, 0, SN * ps, pi);
    clopt_tensor st[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE];
    size_t ns = 0;
    assert_int_equal(clopt_alloc_state_ex(ctx, c->rule, &hp, SN, CLOPT_DTYPE_U8, st, am, &ns),
                     CLOPT_SUCCESS);
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = (clopt_tensor){p, 0}, a.grad = (clopt_tensor){g, 0};
    a.param_dtype = c->p, a.grad_dtype = c->g, a.master_kind = c->master;
    a.master = (clopt_tensor){c->master ? m : NULL, 0};
    a.stochastic_rounding = c->sr, a.sr_seed = 1234, a.sr_stream = 5;
    a.gc_rows = c->gc ? SR : 0, a.gc_scratch = (clopt_tensor){c->gc ? sc : NULL, 0};
    a.state_dtype = CLOPT_DTYPE_U8;
    for (size_t k = 0; k < ns; k++)
        a.state[k] = st[k], a.state_absmax[k] = am[k];
    for (uint64_t t = 1; t <= 3; t++) {
        for (size_t i = 0; i < SN; i++)
            x[i] = (float)(0.1 * ref_normal(&s) + 0.02 * (double)(i % SC) / SC);
        put_typed(ctx, g, c->g, x, SN);
        step_ok(ctx, c->rule, &hp, &a, SN, t, c->label);
    }
    const size_t nb = nblocks(SN);
    *len = SN * ps + SN * ms + ns * (SN + nb * 4);
    unsigned char *out = xmalloc(*len), *at = out;
    buf_read(ctx, p, 0, SN * ps, at);
    size_t moved = 0; /* the steps moved θ */
    for (size_t i = 0; i < SN; i++)
        moved += memcmp(at + i * ps, pi + i * ps, ps) != 0;
    assert_true(moved > SN * 9 / 10);
    at += SN * ps;
    if (ms)
        buf_read(ctx, m, 0, SN * ms, at), at += SN * ms;
    for (size_t k = 0; k < ns; k++) {
        buf_read(ctx, st[k].buffer, 0, SN, at), at += SN;
        buf_read(ctx, am[k].buffer, 0, nb * 4, at), at += nb * 4;
        clReleaseMemObject(st[k].buffer), clReleaseMemObject(am[k].buffer);
    }
    clReleaseMemObject(p), clReleaseMemObject(g), clReleaseMemObject(m), clReleaseMemObject(sc);
    free(x), free(pi), free(zero);
    return out;
}

void test_q8_group_storage(void **state)
{
    fixture *f = *state;
    for (size_t c = 0; c < sizeof combos / sizeof combos[0]; c++) {
        size_t la = 0, lb = 0;
        set_shape(f->ctx, 0);
        unsigned char *a = combo_run(f->ctx, &combos[c], &la);
        for (size_t w = 0; w < (test_small() ? 1u : 2u); w++) { /* the simulator: VW 4 */
            set_shape(f->ctx, widths[w]);
            unsigned char *b = combo_run(f->ctx, &combos[c], &lb);
            assert_int_equal(la, lb);
            if (memcmp(a, b, la))
                fail_msg("%s, VW %u: differs from the work-item shape's", combos[c].label,
                         widths[w]);
            free(b);
        }
        print_message("  %-38s 3 steps equal to the work-item shape's (VW 4%s)\n",
                      combos[c].label, test_small() ? "" : ", 1");
        free(a);
    }
    default_shape(&f->ctx);
}

/* θ (the whole buffer) and every state's bytes after each of 4 steps, AMP on (scale 256;
   step 3's gradient holds an Inf: skipped). */
typedef struct orec {
    float *theta[4];
    unsigned char *st[4];
    size_t len, slen;
} orec;

static void run_opt(clopt_ctx *ctx, int kind, orec *r)
{
    uint64_t s = 91u + (uint64_t)kind;
    clopt_param_desc d[RT];
    size_t at[RT], len;
    range_descs(NULL, NULL, d, at, &len);
    if (kind == 2)
        len = PLEN;
    float *theta = xmalloc(len * 4), *g = xmalloc(len * 4);
    for (size_t i = 0; i < len; i++)
        theta[i] = (float)ref_normal(&s);
    orun o = {0};
    if (kind == 2) { /* an arena-free group: a 100×100 tensor with 8-bit state, 100 in f32 */
        orun_make(ctx, &o, CLOPT_DTYPE_U8, theta);
    } else { /* a range group, in Lookahead with kind 1 */
        o.p = buf_new(ctx, len * 4, theta);
        o.g = buf_new(ctx, len * 4, NULL);
        o.opt = range_q8_opt(ctx, CLOPT_ADAMW, kind == 1, o.p, o.g);
    }
    assert_int_equal(clopt_optimizer_set_grad_scale(o.opt, 256.0), CLOPT_SUCCESS);
    r->len = len;
    for (int t = 0; t < 4; t++) {
        for (size_t i = 0; i < len; i++)
            g[i] = (float)(25.6 * ref_normal(&s));
        if (t == 2)
            g[len - 10] = INFINITY;
        buf_write(ctx, o.g, 0, len * 4, g);
        const clopt_status st = clopt_optimizer_step(o.opt, NULL);
        assert_int_equal(st, t == 2 ? CLOPT_STEP_SKIPPED : CLOPT_SUCCESS);
        r->theta[t] = xmalloc(len * 4);
        buf_read(ctx, o.p, 0, len * 4, r->theta[t]);
        r->st[t] = orun_states(ctx, &o, &r->slen);
    }
    assert_memory_equal(r->theta[1], r->theta[2], len * 4); /* the skipped step */
    orun_free(&o);
    free(theta), free(g);
}

static void orec_free(orec *r)
{
    for (int t = 0; t < 4; t++)
        free(r->theta[t]), free(r->st[t]);
}

void test_q8_group_optimizer(void **state)
{
    fixture *f = *state;
    static const char *const kinds[] = {"range group", "range group in Lookahead",
                                        "tensors with 8-bit and f32 state"};
    for (int kind = 0; kind < 3; kind++) {
        if (test_small() && kind == 1)
            continue;
        orec a = {0}, b = {0};
        set_shape(f->ctx, 0);
        run_opt(f->ctx, kind, &a);
        for (size_t w = 0; w < 2; w++) {
            set_shape(f->ctx, widths[w]);
            run_opt(f->ctx, kind, &b);
            assert_int_equal(a.slen, b.slen);
            for (int t = 0; t < 4; t++) {
                if (memcmp(a.theta[t], b.theta[t], a.len * 4) || memcmp(a.st[t], b.st[t], a.slen))
                    fail_msg("%s, VW %u: step %d differs from the work-item shape's", kinds[kind],
                             widths[w], t + 1);
            }
            print_message("  %-34s VW %2u: 4 steps (one skipped) equal to the work-item "
                          "shape's\n",
                          kinds[kind], widths[w]);
            orec_free(&b);
        }
        orec_free(&a);
    }
    default_shape(&f->ctx);
}
