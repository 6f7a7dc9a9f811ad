/* SPDX-License-Identifier: MIT */
/* Part of test_q8 (tests/test_q8.c has the references and main): bf16 state of every
 * element-wise rule, bit for bit the float32 rule on the same values with the new state
 * rounded to nearest even; the optimizer level (float32 state under 4096 elements, state
 * entries and bytes, bit for bit the op level, checkpoints resuming bit for bit, what is
 * refused); bad op-level arguments refused with every buffer unchanged. */
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
#include "test_q8.h"

/* ---- 5. bf16 state of every element-wise rule ---------------------------------------------- */

enum { BN = 301, BSTEPS = 3 };

/* Steps 4..6 (RAdam and Ranger rectify from step 6 with β2 = 0.999: both branches) of the
   bf16-state kernel against the float32 kernel run from the same θ and the bf16 state's
   values: θ bit for bit, every state the float32 state rounded to nearest even. */
static size_t bf16_rule_run(clopt_ctx *ctx, int ci)
{
    clopt_rule rule = CLOPT_SGD;
    clopt_hparams hp;
    const char *label = "";
    assert_true(elementwise_variant(ci, &rule, &hp, &label));
    const size_t ns = clopt_rule_state_count(rule, &hp);
    uint64_t s = 900u + (uint64_t)ci;
    float theta[BN], g[BN], hess[BN];
    for (size_t i = 0; i < BN; i++)
        theta[i] = (float)ref_normal(&s);
    /* bf16 states: signed ones N(0, 0.1), the others positive; centered RMSprop's square_avg
       above 2·grad_avg² */
    uint16_t st[CLOPT_MAX_STATE][BN];
    for (size_t k = 0; k < ns; k++) {
        const char *name = clopt_rule_state_name(rule, &hp, k);
        for (size_t i = 0; i < BN; i++) {
            double v = state_signed(name) ? 0.1 * ref_normal(&s) : unif(&s, 0.001, 0.05);
            if (strcmp(name, "exp_avg_lr") == 0)
                v = unif(&s, 1e-4, 1e-2);
            st[k][i] = bf16_rne((float)v);
        }
    }
    if (rule == CLOPT_RMSPROP) {
        assert_int_equal(ns, 3);
        for (size_t i = 0; i < BN; i++) {
            const double a = (double)bf16_val(st[2][i]);
            uint16_t w = bf16_rne((float)(2 * a * a + unif(&s, 0.001, 0.02)));
            while ((double)bf16_val(w) < 2 * a * a)
                w++;
            st[0][i] = w;
        }
    }
    /* bf16 run: θ at PO, g at GO, state k at k + 1 (bf16 elements) with guards */
    const size_t so[CLOPT_MAX_STATE] = {1, 2, 3, 4};
    cl_mem pb = buf_new(ctx, (PO + BN) * 4, NULL), gbuf = buf_new(ctx, (GO + BN) * 4, NULL),
           hb = buf_new(ctx, BN * 4, NULL);
    buf_write(ctx, pb, PO * 4, sizeof theta, theta);
    cl_mem sb[CLOPT_MAX_STATE], sf[CLOPT_MAX_STATE];
    uint16_t guard[4 + BN + 8];
    for (size_t i = 0; i < sizeof guard / 2; i++)
        guard[i] = 0x7E7E;
    for (size_t k = 0; k < ns; k++) {
        sb[k] = buf_new(ctx, sizeof guard, guard);
        buf_write(ctx, sb[k], so[k] * 2, BN * 2, st[k]);
        sf[k] = buf_new(ctx, BN * 4, NULL);
    }
    cl_mem pf = buf_new(ctx, BN * 4, NULL);
    clopt_step_args ab, af;
    clopt_step_args_init(&ab);
    clopt_step_args_init(&af);
    ab.param = (clopt_tensor){pb, PO}, ab.grad = (clopt_tensor){gbuf, GO};
    af.param = (clopt_tensor){pf, 0}, af.grad = (clopt_tensor){gbuf, GO};
    ab.state_dtype = CLOPT_DTYPE_BF16;
    for (size_t k = 0; k < ns; k++)
        ab.state[k] = (clopt_tensor){sb[k], so[k]}, af.state[k] = (clopt_tensor){sf[k], 0};
    size_t bad = 0, moved = 0;
    for (uint64_t t = 4; t < 4 + BSTEPS; t++) {
        for (size_t i = 0; i < BN; i++)
            g[i] = (float)(0.1 * ref_normal(&s)), hess[i] = (float)unif(&s, 0.0, 0.1);
        buf_write(ctx, gbuf, GO * 4, sizeof g, g);
        /* the float32 run from the same θ and the bf16 state's values */
        float th0[BN], sv[BN];
        buf_read(ctx, pb, PO * 4, sizeof th0, th0);
        buf_write(ctx, pf, 0, sizeof th0, th0);
        for (size_t k = 0; k < ns; k++) {
            for (size_t i = 0; i < BN; i++)
                sv[i] = bf16_val(st[k][i]);
            buf_write(ctx, sf[k], 0, sizeof sv, sv);
        }
        if (rule == CLOPT_SOPHIA && t == 5) { /* an estimate folded in at this step */
            buf_write(ctx, hb, 0, sizeof hess, hess);
            ab.hessian = af.hessian = (clopt_tensor){hb, 0};
        } else {
            ab.hessian = af.hessian = (clopt_tensor){NULL, 0};
        }
        if (rule == CLOPT_NADAM)
            ab.mu_product = af.mu_product = clopt_nadam_mu_product(&hp, t - 1);
        step_ok(ctx, rule, &hp, &ab, BN, t, label);
        step_ok(ctx, rule, &hp, &af, BN, t, label);
        float thb[BN], thf[BN];
        buf_read(ctx, pb, PO * 4, sizeof thb, thb);
        buf_read(ctx, pf, 0, sizeof thf, thf);
        for (size_t i = 0; i < BN; i++) {
            moved += f2u(thb[i]) != f2u(th0[i]);
            if (f2u(thb[i]) != f2u(thf[i]) && bad++ < 5)
                print_error("%s step %llu θ[%zu]: %a, float32 rule %a\n", label,
                            (unsigned long long)t, i, (double)thb[i], (double)thf[i]);
        }
        for (size_t k = 0; k < ns; k++) {
            uint16_t all[sizeof guard / 2];
            float vf[BN];
            buf_read(ctx, sb[k], 0, sizeof all, all);
            buf_read(ctx, sf[k], 0, sizeof vf, vf);
            for (size_t i = 0; i < sizeof guard / 2; i++)
                if ((i < so[k] || i >= so[k] + BN) && all[i] != guard[i] && bad++ < 5)
                    print_error("%s: state %zu written outside the tensor at %zu\n", label, k, i);
            for (size_t i = 0; i < BN; i++) {
                const uint16_t want = bf16_rne(vf[i]);
                if (all[so[k] + i] != want && bad++ < 5)
                    print_error("%s step %llu %s[%zu]: 0x%04x, float32 rule %a (RNE 0x%04x)\n",
                                label, (unsigned long long)t, clopt_rule_state_name(rule, &hp, k),
                                i, all[so[k] + i], (double)vf[i], want);
                st[k][i] = all[so[k] + i];
            }
        }
    }
    if (moved == 0)
        bad++, print_error("%s: θ never moved (vacuous)\n", label);
    for (size_t k = 0; k < ns; k++)
        clReleaseMemObject(sb[k]), clReleaseMemObject(sf[k]);
    clReleaseMemObject(pb), clReleaseMemObject(pf), clReleaseMemObject(gbuf);
    clReleaseMemObject(hb);
    return bad;
}

void test_bf16_rules(void **state)
{
    fixture *f = *state;
    clopt_rule rule;
    clopt_hparams hp;
    const char *label;
    size_t bad = 0;
    for (int ci = 0; elementwise_variant(ci, &rule, &hp, &label); ci++) {
        const size_t b = bf16_rule_run(f->ctx, ci);
        if (b)
            print_error("  bf16 %s: %zu differences\n", label, b);
        bad += b;
    }
    assert_int_equal(bad, 0);
}

/* ---- 6. the optimizer level ---------------------------------------------------------------- */


/* AdamW (lr 1e-2, state_dtype sd) with a 100×100 tensor at OB and a 100-element one at OS of
   the same buffers. */
void orun_make(clopt_ctx *ctx, orun *o, int sd, const float *theta)
{
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    hp.lr = 1e-2;
    hp.state_dtype = sd;
    assert_int_equal(clopt_optimizer_create(ctx, CLOPT_ADAMW, &hp, &o->opt), CLOPT_SUCCESS);
    o->p = buf_new(ctx, PLEN * 4, theta);
    o->g = buf_new(ctx, PLEN * 4, NULL);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){o->p, OB}, d.grad = (clopt_tensor){o->g, OB};
    d.ndim = 2, d.shape[0] = 100, d.shape[1] = 100;
    size_t idx = 9;
    assert_int_equal(clopt_optimizer_add_param_desc(o->opt, 0, &d, &idx), CLOPT_SUCCESS);
    assert_int_equal(idx, 0);
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){o->p, OS}, d.grad = (clopt_tensor){o->g, OS};
    d.ndim = 1, d.shape[0] = SMALL;
    assert_int_equal(clopt_optimizer_add_param_desc(o->opt, 0, &d, &idx), CLOPT_SUCCESS);
    assert_int_equal(idx, 1);
}

void orun_free(orun *o)
{
    clopt_optimizer_destroy(o->opt);
    clReleaseMemObject(o->p);
    clReleaseMemObject(o->g);
}

/* The raw bytes of every state entry, concatenated (*len receives the length). */
unsigned char *orun_states(clopt_ctx *ctx, const orun *o, size_t *len)
{
    const size_t ne = clopt_optimizer_state_entry_count(o->opt);
    size_t total = 0;
    for (size_t i = 0; i < ne; i++) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(o->opt, i, &e), CLOPT_SUCCESS);
        total += e.length * clopt_dtype_size(e.dtype);
    }
    unsigned char *out = xmalloc(total), *at = out;
    for (size_t i = 0; i < ne; i++) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(o->opt, i, &e), CLOPT_SUCCESS);
        const size_t es = clopt_dtype_size(e.dtype);
        buf_read(ctx, e.tensor.buffer, e.tensor.offset * es, e.length * es, at);
        at += e.length * es;
    }
    *len = total;
    return out;
}

static void random_grads(uint64_t *s, float *g)
{
    for (size_t i = 0; i < PLEN; i++)
        g[i] = (float)(0.1 * ref_normal(s));
}

/* The big tensor has u8 codes and f32 absmaxes, the small one f32 state; state_bytes counts
   the real bytes (2.03 per parameter for the big one); the steps equal the op level's with
   clopt_alloc_state_ex bit for bit; the 8-bit states can't be read or written as floats. */
void test_opt_q8(void **state)
{
    fixture *f = *state;
    uint64_t s = 606;
    float *theta = xmalloc(PLEN * 4), *g = xmalloc(PLEN * 4), *a = xmalloc(PLEN * 4),
          *b = xmalloc(PLEN * 4);
    for (size_t i = 0; i < PLEN; i++)
        theta[i] = (float)ref_normal(&s);
    orun o;
    orun_make(f->ctx, &o, CLOPT_DTYPE_U8, theta);
    /* the entries */
    assert_int_equal(clopt_optimizer_state_count(o.opt, 0), 4);
    assert_int_equal(clopt_optimizer_state_count(o.opt, 1), 2);
    assert_int_equal(clopt_optimizer_state_entry_count(o.opt), 6);
    static const struct {
        size_t param;
        const char *name;
        clopt_dtype dtype;
        size_t length;
    } want[] = {
        {0, "exp_avg", CLOPT_DTYPE_U8, BIG},          {0, "exp_avg_sq", CLOPT_DTYPE_U8, BIG},
        {0, "exp_avg.absmax", CLOPT_DTYPE_F32, 40},   {0, "exp_avg_sq.absmax", CLOPT_DTYPE_F32, 40},
        {1, "exp_avg", CLOPT_DTYPE_F32, SMALL},       {1, "exp_avg_sq", CLOPT_DTYPE_F32, SMALL},
    };
    size_t idx[6] = {0}; /* entry index of want[j] */
    for (size_t j = 0; j < 6; j++) {
        size_t found = 0;
        for (size_t i = 0; i < 6; i++) {
            clopt_state_entry e;
            assert_int_equal(clopt_optimizer_state_entry(o.opt, i, &e), CLOPT_SUCCESS);
            if (e.param != want[j].param || strcmp(e.name, want[j].name) != 0)
                continue;
            found++, idx[j] = i;
            char key[64];
            snprintf(key, sizeof key, "state.%zu.%s", want[j].param, want[j].name);
            assert_string_equal(e.key, key);
            assert_int_equal(e.dtype, want[j].dtype);
            assert_int_equal(e.length, want[j].length);
            if (want[j].length == BIG) {
                assert_int_equal(e.ndim, 2);
                assert_int_equal(e.shape[0], 100);
                assert_int_equal(e.shape[1], 100);
            } else if (want[j].length == 40) { /* shorter than the tensor: {length} */
                assert_int_equal(e.ndim, 1);
                assert_int_equal(e.shape[0], 40);
            }
            const char *nm = NULL;
            size_t len = 0;
            assert_int_equal(clopt_optimizer_state_info(o.opt, e.param, e.index, &nm, &len),
                             CLOPT_SUCCESS);
            assert_string_equal(nm, want[j].name);
            assert_int_equal(len, want[j].length);
        }
        assert_int_equal(found, 1);
    }
    const size_t bytes = clopt_optimizer_state_bytes(o.opt);
    assert_int_equal(bytes, BIG * 2 + 2 * 40 * 4 + SMALL * 2 * 4);
    assert_true((double)(bytes - SMALL * 2 * 4) / BIG <= 2.1);

    /* the op level on the same data: 8-bit state for the big tensor, float32 for the small */
    clopt_hparams hp;
    assert_int_equal(clopt_optimizer_get_group_hparams(o.opt, 0, &hp), CLOPT_SUCCESS);
    assert_int_equal(hp.state_dtype, CLOPT_DTYPE_U8);
    hp.state_dtype = CLOPT_DTYPE_F32; /* the op level takes the storage from the args */
    clopt_tensor q[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE], sm[CLOPT_MAX_STATE];
    size_t cnt;
    assert_int_equal(
        clopt_alloc_state_ex(f->ctx, CLOPT_ADAMW, &hp, BIG, CLOPT_DTYPE_U8, q, am, &cnt),
        CLOPT_SUCCESS);
    assert_int_equal(cnt, 2);
    assert_int_equal(clopt_alloc_state(f->ctx, CLOPT_ADAMW, &hp, SMALL, sm, &cnt), CLOPT_SUCCESS);
    cl_mem p = buf_new(f->ctx, PLEN * 4, theta), gb = buf_new(f->ctx, PLEN * 4, NULL);
    clopt_step_args big, sml;
    clopt_step_args_init(&big);
    clopt_step_args_init(&sml);
    big.param = (clopt_tensor){p, OB}, big.grad = (clopt_tensor){gb, OB};
    sml.param = (clopt_tensor){p, OS}, sml.grad = (clopt_tensor){gb, OS};
    big.state_dtype = CLOPT_DTYPE_U8;
    for (size_t k = 0; k < 2; k++)
        big.state[k] = q[k], big.state_absmax[k] = am[k], sml.state[k] = sm[k];
    for (uint64_t t = 1; t <= 4; t++) {
        random_grads(&s, g);
        buf_write(f->ctx, o.g, 0, PLEN * 4, g);
        buf_write(f->ctx, gb, 0, PLEN * 4, g);
        assert_int_equal(clopt_optimizer_step(o.opt, NULL), CLOPT_SUCCESS);
        step_ok(f->ctx, CLOPT_ADAMW, &hp, &big, BIG, t, "adamw op level 8-bit");
        step_ok(f->ctx, CLOPT_ADAMW, &hp, &sml, SMALL, t, "adamw op level f32");
        buf_read(f->ctx, o.p, 0, PLEN * 4, a);
        buf_read(f->ctx, p, 0, PLEN * 4, b);
        assert_memory_equal(a, b, PLEN * 4);
    }
    /* the states, bit for bit */
    const struct {
        clopt_tensor t;
        size_t bytes;
    } opst[6] = {{q[0], BIG}, {q[1], BIG}, {am[0], 160}, {am[1], 160}, {sm[0], 400}, {sm[1], 400}};
    for (size_t j = 0; j < 6; j++) {
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(o.opt, idx[j], &e), CLOPT_SUCCESS);
        const size_t es = clopt_dtype_size(e.dtype);
        unsigned char *x = xmalloc(opst[j].bytes), *y = xmalloc(opst[j].bytes);
        buf_read(f->ctx, e.tensor.buffer, e.tensor.offset * es, opst[j].bytes, x);
        buf_read(f->ctx, opst[j].t.buffer, opst[j].t.offset * es, opst[j].bytes, y);
        assert_memory_equal(x, y, opst[j].bytes);
        free(x), free(y);
    }
    assert_true(a[OB] != theta[OB]);

    /* floats in and out: refused for the codes, allowed for the absmaxes and f32 state */
    size_t slen;
    unsigned char *before = orun_states(f->ctx, &o, &slen);
    float *host = xmalloc(BIG * 4);
    memset(host, 0x5C, BIG * 4);
    assert_int_equal(clopt_optimizer_read_state(o.opt, 0, 0, host, BIG), CLOPT_ERR_UNSUPPORTED);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    for (size_t i = 0; i < BIG; i++)
        assert_int_equal(f2u(host[i]), 0x5C5C5C5Cu);
    assert_int_equal(clopt_optimizer_write_state(o.opt, 0, 1, host, BIG), CLOPT_ERR_UNSUPPORTED);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    clopt_state_entry e;
    assert_int_equal(clopt_optimizer_state_entry(o.opt, idx[2], &e), CLOPT_SUCCESS);
    float amx[40], amr[40];
    assert_int_equal(clopt_optimizer_read_state(o.opt, 0, e.index, amx, 40), CLOPT_SUCCESS);
    buf_read(f->ctx, e.tensor.buffer, e.tensor.offset * 4, sizeof amr, amr);
    assert_memory_equal(amx, amr, sizeof amx);
    assert_int_equal(clopt_optimizer_read_state(o.opt, 1, 0, host, SMALL), CLOPT_SUCCESS);
    size_t slen2;
    unsigned char *after = orun_states(f->ctx, &o, &slen2);
    assert_int_equal(slen, slen2);
    assert_memory_equal(before, after, slen);
    /* a change of the state's storage changes the layout of the registered tensors */
    clopt_hparams gh;
    assert_int_equal(clopt_optimizer_get_group_hparams(o.opt, 0, &gh), CLOPT_SUCCESS);
    gh.state_dtype = CLOPT_DTYPE_F32;
    assert_int_equal(clopt_optimizer_set_group_hparams(o.opt, 0, &gh), CLOPT_ERR_STATE_MISMATCH);
    assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
    gh.state_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_optimizer_set_group_hparams(o.opt, 0, &gh), CLOPT_ERR_STATE_MISMATCH);
    assert_int_equal(clopt_optimizer_get_group_hparams(o.opt, 0, &gh), CLOPT_SUCCESS);
    assert_int_equal(gh.state_dtype, CLOPT_DTYPE_U8);
    free(before), free(after), free(host);
    for (size_t k = 0; k < 2; k++)
        clReleaseMemObject(q[k].buffer), clReleaseMemObject(am[k].buffer),
            clReleaseMemObject(sm[k].buffer);
    clReleaseMemObject(p), clReleaseMemObject(gb);
    orun_free(&o);
    free(theta), free(g), free(a), free(b);
}

/* A checkpoint saved after 3 steps and loaded into a fresh optimizer (θ restored by the
   caller) resumes bit for bit for 3 more, with u8 and with bf16 state; it does not load into
   an optimizer whose state is stored otherwise. */
void test_opt_checkpoint(void **state)
{
    fixture *f = *state;
    const int dtypes[] = {CLOPT_DTYPE_U8, CLOPT_DTYPE_BF16};
    for (size_t m = 0; m < 2; m++) {
        uint64_t s = 707 + m;
        float *theta = xmalloc(PLEN * 4), *saved = xmalloc(PLEN * 4), *want = xmalloc(PLEN * 4),
              *got = xmalloc(PLEN * 4), (*g)[PLEN] = xmalloc(6 * sizeof *g);
        for (size_t i = 0; i < PLEN; i++)
            theta[i] = (float)ref_normal(&s);
        for (int k = 0; k < 6; k++)
            random_grads(&s, g[k]);
        orun a, b, c;
        orun_make(f->ctx, &a, dtypes[m], theta);
        for (int k = 0; k < 3; k++) {
            buf_write(f->ctx, a.g, 0, PLEN * 4, g[k]);
            assert_int_equal(clopt_optimizer_step(a.opt, NULL), CLOPT_SUCCESS);
        }
        size_t size = 0, written = 0;
        assert_int_equal(clopt_optimizer_state_size(a.opt, NULL, &size), CLOPT_SUCCESS);
        unsigned char *ck = xmalloc(size);
        assert_int_equal(clopt_optimizer_save_to(a.opt, NULL, ck, size, &written), CLOPT_SUCCESS);
        assert_int_equal(written, size);
        buf_read(f->ctx, a.p, 0, PLEN * 4, saved);
        for (int k = 3; k < 6; k++) {
            buf_write(f->ctx, a.g, 0, PLEN * 4, g[k]);
            assert_int_equal(clopt_optimizer_step(a.opt, NULL), CLOPT_SUCCESS);
        }
        buf_read(f->ctx, a.p, 0, PLEN * 4, want);
        size_t wl, gl;
        unsigned char *wst = orun_states(f->ctx, &a, &wl);

        orun_make(f->ctx, &b, dtypes[m], saved);
        const clopt_status ls = clopt_optimizer_load_from(b.opt, ck, size);
        if (ls != CLOPT_SUCCESS)
            print_error("load (%s state): %s (%s)\n", clopt_dtype_name((clopt_dtype)dtypes[m]),
                        clopt_status_name(ls), clopt_ctx_last_error(f->ctx));
        assert_int_equal(ls, CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step_count(b.opt), 3);
        for (int k = 3; k < 6; k++) {
            buf_write(f->ctx, b.g, 0, PLEN * 4, g[k]);
            assert_int_equal(clopt_optimizer_step(b.opt, NULL), CLOPT_SUCCESS);
        }
        buf_read(f->ctx, b.p, 0, PLEN * 4, got);
        assert_memory_equal(got, want, PLEN * 4);
        unsigned char *gst = orun_states(f->ctx, &b, &gl);
        assert_int_equal(gl, wl);
        assert_memory_equal(gst, wst, wl);
        assert_true(memcmp(want, saved, PLEN * 4) != 0);

        /* not into float32 state (or the other storage), and nothing changes */
        for (int other = 0; other < 2; other++) {
            const int od = other == 0 ? CLOPT_DTYPE_F32 : dtypes[1 - m];
            orun_make(f->ctx, &c, od, saved);
            size_t cl0, cl1;
            unsigned char *c0 = orun_states(f->ctx, &c, &cl0);
            const clopt_status cs = clopt_optimizer_load_from(c.opt, ck, size);
            if (cs != CLOPT_ERR_STATE_MISMATCH && cs != CLOPT_ERR_FORMAT)
                print_error("a %s checkpoint into %s state: %s\n",
                            clopt_dtype_name((clopt_dtype)dtypes[m]),
                            clopt_dtype_name((clopt_dtype)od), clopt_status_name(cs));
            assert_true(cs == CLOPT_ERR_STATE_MISMATCH || cs == CLOPT_ERR_FORMAT);
            assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
            assert_int_equal(clopt_optimizer_step_count(c.opt), 0);
            unsigned char *c1 = orun_states(f->ctx, &c, &cl1);
            assert_int_equal(cl0, cl1);
            assert_memory_equal(c0, c1, cl0);
            free(c0), free(c1);
            orun_free(&c);
        }
        free(wst), free(gst), free(ck);
        orun_free(&a), orun_free(&b);
        free(theta), free(saved), free(want), free(got), free(g);
    }
}

/* 8-bit state in a range group (one launch, a table row per block of 256): tensors of 1,
   255, 256, 257, 4095 and 600 elements at odd offsets of one flat buffer (all 8-bit, as in
   an arena group) equal, bit for bit, the same tensors in an arena group (a launch over the
   arena, blocks by work-item): θ and every state's bytes after 3 steps of AdamW, Lion,
   AdEMAMix (its absmaxes named) and AdamW in Lookahead (k 2: the range group then runs per
   tensor through its views), the gaps between the tensors untouched. Then a checkpoint of the range group resumes bit
   for bit in a new optimizer. */
static const size_t rn[RT] = {1, 255, 256, 257, 4095, 600};

void range_descs(cl_mem p, cl_mem g, clopt_param_desc *d, size_t *at, size_t *len)
{
    size_t off = 5;
    for (size_t i = 0; i < RT; i++) {
        clopt_param_desc_init(&d[i]);
        d[i].shape[0] = rn[i];
        at[i] = off;
        d[i].param = (clopt_tensor){p, off}, d[i].grad = (clopt_tensor){g, off};
        off += rn[i] + RGAP;
    }
    *len = off;
}

clopt_optimizer *range_q8_opt(clopt_ctx *ctx, clopt_rule rule, int la, cl_mem p, cl_mem g)
{
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(rule, &hp), CLOPT_SUCCESS);
    hp.lr = 1e-2;
    hp.weight_decay = 0.01;
    hp.state_dtype = CLOPT_DTYPE_U8;
    if (la)
        hp.lookahead_k = 2, hp.lookahead_alpha = 0.5;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(ctx, rule, &hp, &opt), CLOPT_SUCCESS);
    clopt_param_desc d[RT];
    size_t at[RT], len, first = 9;
    range_descs(p, g, d, at, &len);
    clopt_range_group rg;
    clopt_range_group_init(&rg);
    rg.ntensors = RT;
    rg.tensors = d;
    assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, &first),
                     CLOPT_SUCCESS);
    assert_int_equal(first, 0);
    return opt;
}

void test_opt_q8_range(void **state)
{
    fixture *f = *state;
    const clopt_rule rules[] = {CLOPT_ADAMW, CLOPT_LION, CLOPT_ADEMAMIX, CLOPT_ADAMW};
    for (size_t r = 0; r < 4; r++) {
        if (test_small() && r != 0 && r != 3)
            continue; /* the simulator (Oclgrind): AdamW with and without Lookahead */
        const int la = r == 3;
        uint64_t s = 31u + r;
        clopt_param_desc d[RT];
        size_t at[RT], len;
        range_descs(NULL, NULL, d, at, &len);
        float *theta = xmalloc(len * 4), *g = xmalloc(len * 4), *a = xmalloc(len * 4);
        for (size_t i = 0; i < len; i++)
            theta[i] = (float)ref_normal(&s);
        cl_mem P = buf_new(f->ctx, len * 4, theta), G = buf_new(f->ctx, len * 4, NULL);
        clopt_optimizer *ro = range_q8_opt(f->ctx, rules[r], la, P, G);
        /* the arena: the same hyperparameters and tensors, written through its views */
        clopt_hparams hp;
        assert_int_equal(clopt_optimizer_get_group_hparams(ro, 1, &hp), CLOPT_SUCCESS);
        clopt_optimizer *ao;
        assert_int_equal(clopt_optimizer_create(f->ctx, rules[r], &hp, &ao), CLOPT_SUCCESS);
        size_t first = 9;
        assert_int_equal(clopt_optimizer_add_arena_group(ao, &hp, RT, d, NULL, &first),
                         CLOPT_SUCCESS);
        clopt_tensor pv[RT], gv[RT];
        for (size_t i = 0; i < RT; i++) {
            assert_int_equal(clopt_optimizer_param_view(ao, first + i, &pv[i], &gv[i], NULL,
                                                        NULL),
                             CLOPT_SUCCESS);
            buf_write(f->ctx, pv[i].buffer, pv[i].offset * 4, rn[i] * 4, theta + at[i]);
        }
        for (int t = 0; t < 3; t++) {
            for (size_t i = 0; i < len; i++)
                g[i] = (float)(0.1 * ref_normal(&s));
            buf_write(f->ctx, G, 0, len * 4, g);
            for (size_t i = 0; i < RT; i++)
                buf_write(f->ctx, gv[i].buffer, gv[i].offset * 4, rn[i] * 4, g + at[i]);
            assert_int_equal(clopt_optimizer_step(ro, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(ao, NULL), CLOPT_SUCCESS);
        }
        buf_read(f->ctx, P, 0, len * 4, a);
        size_t moved = 0;
        for (size_t i = 0; i < RT; i++) {
            float *b = xmalloc(rn[i] * 4);
            buf_read(f->ctx, pv[i].buffer, pv[i].offset * 4, rn[i] * 4, b);
            assert_memory_equal(a + at[i], b, rn[i] * 4);
            for (size_t j = 0; j < rn[i]; j++)
                moved += a[at[i] + j] != theta[at[i] + j];
            for (size_t j = 0; j < RGAP; j++) /* the gap after the tensor */
                assert_true(a[at[i] + rn[i] + j] == theta[at[i] + rn[i] + j]);
            free(b);
        }
        assert_true(moved > len * 9 / 10);
        for (size_t i = 0; i < 5; i++)
            assert_true(a[i] == theta[i]);
        const size_t ne = clopt_optimizer_state_entry_count(ro);
        assert_int_equal(ne, clopt_optimizer_state_entry_count(ao));
        assert_int_equal(ne, RT * (2 * clopt_rule_state_count(rules[r], &hp) + (size_t)la));
        orun rw = {ro, P, G}, aw = {ao, NULL, NULL};
        size_t rl, al;
        unsigned char *rs = orun_states(f->ctx, &rw, &rl), *as = orun_states(f->ctx, &aw, &al);
        assert_int_equal(rl, al);
        assert_memory_equal(rs, as, rl);
        clopt_state_entry e;
        assert_int_equal(clopt_optimizer_state_entry(ro, 0, &e), CLOPT_SUCCESS);
        assert_int_equal(e.dtype, CLOPT_DTYPE_U8); /* a 1-element tensor: 8-bit in the group */
        if (rules[r] == CLOPT_ADEMAMIX) {
            static const char *const keys[] = {"state.0.exp_avg_fast.absmax",
                                               "state.0.exp_avg_slow.absmax",
                                               "state.0.exp_avg_sq.absmax"};
            for (size_t k = 0; k < 3; k++) {
                assert_int_equal(clopt_optimizer_state_entry(ro, 3 + k, &e), CLOPT_SUCCESS);
                assert_string_equal(e.key, keys[k]);
                assert_int_equal(e.dtype, CLOPT_DTYPE_F32);
            }
        }
        /* a checkpoint of the range group, loaded into a new one over a copy of θ */
        size_t size = 0;
        assert_int_equal(clopt_optimizer_state_size(ro, NULL, &size), CLOPT_SUCCESS);
        unsigned char *ck = xmalloc(size);
        assert_int_equal(clopt_optimizer_save_to(ro, NULL, ck, size, NULL), CLOPT_SUCCESS);
        cl_mem P2 = buf_new(f->ctx, len * 4, a), G2 = buf_new(f->ctx, len * 4, NULL);
        clopt_optimizer *lo = range_q8_opt(f->ctx, rules[r], la, P2, G2);
        assert_int_equal(clopt_optimizer_load_from(lo, ck, size), CLOPT_SUCCESS);
        for (int t = 0; t < 2; t++) {
            for (size_t i = 0; i < len; i++)
                g[i] = (float)(0.1 * ref_normal(&s));
            buf_write(f->ctx, G, 0, len * 4, g);
            buf_write(f->ctx, G2, 0, len * 4, g);
            assert_int_equal(clopt_optimizer_step(ro, NULL), CLOPT_SUCCESS);
            assert_int_equal(clopt_optimizer_step(lo, NULL), CLOPT_SUCCESS);
        }
        float *b = xmalloc(len * 4);
        buf_read(f->ctx, P, 0, len * 4, a);
        buf_read(f->ctx, P2, 0, len * 4, b);
        assert_memory_equal(a, b, len * 4);
        orun lw = {lo, P2, G2};
        free(rs), free(as);
        rs = orun_states(f->ctx, &rw, &rl);
        unsigned char *ls = orun_states(f->ctx, &lw, &al);
        assert_int_equal(rl, al);
        assert_memory_equal(rs, ls, rl);
        free(rs), free(ls), free(ck), free(b);
        clopt_optimizer_destroy(lo);
        clopt_optimizer_destroy(ro);
        clopt_optimizer_destroy(ao);
        clReleaseMemObject(P), clReleaseMemObject(G);
        clReleaseMemObject(P2), clReleaseMemObject(G2);
        free(theta), free(g), free(a);
    }
}

/* An 8-bit range group over 16-bit weights: one tensor of 5000 elements at element 7 of the
   engine's buffers (a range group) equals the same tensor added with add_param_desc (8-bit
   too at this size): θ and every state's bytes (masters included), for bf16 θ without a
   master (nearest and stochastic rounding), with an f32 and a remainder master, f16 θ with
   an f32 master and with stochastic rounding, under AMP (loss scale 4) with an Inf gradient
   at step 3 that both skip; and SGD without momentum (no state, so plain launches) with
   state_dtype U8. */
enum { HN = 5000, HO = 7, HLEN = HO + HN + 3 };

typedef struct half_case {
    clopt_rule rule;
    clopt_dtype pt;
    int master, sr;
} half_case;

static clopt_optimizer *half_q8_opt(clopt_ctx *ctx, const half_case *c, cl_mem p, cl_mem g,
                                    int range)
{
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(c->rule, &hp), CLOPT_SUCCESS);
    hp.lr = c->rule == CLOPT_SGD ? 0.5 : 1e-2; /* SGD's steps lr·g: over half a 16-bit ulp */
    hp.weight_decay = 0.01;
    hp.state_dtype = CLOPT_DTYPE_U8;
    hp.master = c->master;
    hp.stochastic_rounding = c->sr;
    clopt_optimizer *opt;
    assert_int_equal(clopt_optimizer_create(ctx, c->rule, &hp, &opt), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_set_grad_scale(opt, 4.0), CLOPT_SUCCESS);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.shape[0] = HN;
    d.param = (clopt_tensor){p, HO}, d.grad = (clopt_tensor){g, HO};
    d.param_dtype = c->pt;
    size_t first = 9;
    if (range) {
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = 1;
        rg.tensors = &d;
        assert_int_equal(clopt_optimizer_add_range_group(opt, &hp, &rg, NULL, &first),
                         CLOPT_SUCCESS);
    } else {
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, &first), CLOPT_SUCCESS);
    }
    assert_int_equal(first, 0);
    return opt;
}

void test_opt_q8_range_half(void **state)
{
    fixture *f = *state;
    const half_case cases[] = {
        {CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_MASTER_NONE, 0},
        {CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_MASTER_NONE, 1},
        {CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_MASTER_F32, 0},
        {CLOPT_ADAMW, CLOPT_DTYPE_BF16, CLOPT_MASTER_REMAINDER, 0},
        {CLOPT_ADAMW, CLOPT_DTYPE_F16, CLOPT_MASTER_F32, 0},
        {CLOPT_ADAMW, CLOPT_DTYPE_F16, CLOPT_MASTER_NONE, 1},
        {CLOPT_SGD, CLOPT_DTYPE_BF16, CLOPT_MASTER_NONE, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        if (test_small() && ci != 1 && ci != 4)
            continue; /* the simulator: stochastic rounding, and f16 with an f32 master */
        const half_case *c = &cases[ci];
        uint64_t s = 400u + ci;
        float *t32 = xmalloc(HLEN * 4), *g = xmalloc(HLEN * 4);
        for (size_t i = 0; i < HLEN; i++)
            t32[i] = (float)ref_normal(&s);
        /* θ in its type (converted by the library, the same words in both pairs of buffers) */
        cl_mem T32 = buf_new(f->ctx, HLEN * 4, t32), P[2], G[2];
        uint16_t th[HLEN], a[HLEN], b[HLEN];
        P[0] = buf_new(f->ctx, HLEN * 2, NULL);
        assert_int_equal(clopt_enqueue_convert(f->ctx, NULL, (clopt_tensor){P[0], 0}, c->pt,
                                               (clopt_tensor){T32, 0}, CLOPT_DTYPE_F32, HLEN, 0,
                                               0, 0, 0, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        buf_read(f->ctx, P[0], 0, sizeof th, th);
        P[1] = buf_new(f->ctx, HLEN * 2, th);
        clopt_optimizer *o[2];
        for (int k = 0; k < 2; k++) {
            G[k] = buf_new(f->ctx, HLEN * 4, NULL);
            o[k] = half_q8_opt(f->ctx, c, P[k], G[k], k == 0);
        }
        for (int t = 1; t <= 4; t++) {
            for (size_t i = 0; i < HLEN; i++)
                g[i] = (float)(0.4 * ref_normal(&s)); /* the loss scale 4 times 0.1 */
            if (t == 3)
                g[HO + 1234] = INFINITY;
            for (int k = 0; k < 2; k++) {
                buf_write(f->ctx, G[k], 0, HLEN * 4, g);
                assert_int_equal(clopt_optimizer_step(o[k], NULL),
                                 t == 3 ? CLOPT_STEP_SKIPPED : CLOPT_SUCCESS);
                assert_int_equal(clopt_optimizer_found_inf(o[k]), t == 3);
            }
        }
        buf_read(f->ctx, P[0], 0, sizeof a, a);
        buf_read(f->ctx, P[1], 0, sizeof b, b);
        assert_memory_equal(a, b, sizeof a);
        size_t moved = 0;
        for (size_t i = HO; i < HO + HN; i++)
            moved += a[i] != th[i];
        if (moved <= HN / 2)
            print_error("case %zu: %zu of %d weights moved\n", ci, moved, HN);
        assert_true(moved > HN / 2);
        assert_memory_equal(a, th, HO * 2); /* outside the tensor */
        assert_memory_equal(a + HO + HN, th + HO + HN, 3 * 2);
        assert_int_equal(clopt_optimizer_step_count(o[0]), 3);
        const size_t ne = clopt_optimizer_state_entry_count(o[0]);
        assert_int_equal(ne, clopt_optimizer_state_entry_count(o[1]));
        orun ra = {o[0], P[0], G[0]}, rb = {o[1], P[1], G[1]};
        size_t la, lb;
        unsigned char *sa = orun_states(f->ctx, &ra, &la), *sb = orun_states(f->ctx, &rb, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(sa, sb, la);
        free(sa), free(sb);
        for (int k = 0; k < 2; k++) {
            clopt_optimizer_destroy(o[k]);
            clReleaseMemObject(P[k]), clReleaseMemObject(G[k]);
        }
        clReleaseMemObject(T32);
        free(t32), free(g);
    }
}

/* Refused at the optimizer level with a message, nothing added or changed: a range group
   with the engine's own state buffers and 8-bit state, LAMB and Adafactor with non-f32
   state, 8-bit state for a rule without it, a state_dtype out of range. */
void test_opt_refused(void **state)
{
    fixture *f = *state;
    clopt_hparams hp, bad;
    clopt_optimizer *opt = NULL;
#define REFUSED(call, want)                                                                 \
    do {                                                                                    \
        const clopt_status s_ = (call);                                                     \
        if (s_ != (want))                                                                   \
            print_error("%s: %s (%s), want %s\n", #call, clopt_status_name(s_),             \
                        clopt_ctx_last_error(f->ctx), clopt_status_name(want));             \
        assert_int_equal(s_, (want));                                                       \
        assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);                              \
    } while (0)
    static char sentinel;
    const int narrow[] = {CLOPT_DTYPE_BF16, CLOPT_DTYPE_U8};
    const clopt_rule multipass[] = {CLOPT_LAMB, CLOPT_ADAFACTOR};
    for (size_t r = 0; r < 2; r++) {
        for (size_t j = 0; j < 2; j++) {
            const int sd = narrow[j];
            if (multipass[r] == CLOPT_LAMB && sd == CLOPT_DTYPE_BF16)
                continue; /* LAMB takes bf16 moments (tests/test_storage_opt.c) */
            assert_int_equal(clopt_hparams_default(multipass[r], &hp), CLOPT_SUCCESS);
            hp.state_dtype = sd;
            opt = (clopt_optimizer *)(void *)&sentinel;
            REFUSED(clopt_optimizer_create(f->ctx, multipass[r], &hp, &opt), CLOPT_ERR_UNSUPPORTED);
            assert_null(opt);
            hp.state_dtype = CLOPT_DTYPE_F32;
            assert_int_equal(clopt_optimizer_create(f->ctx, multipass[r], &hp, &opt),
                             CLOPT_SUCCESS);
            bad = hp;
            bad.state_dtype = sd;
            size_t gi = 77;
            REFUSED(clopt_optimizer_add_group(opt, &bad, &gi), CLOPT_ERR_UNSUPPORTED);
            assert_int_equal(clopt_optimizer_group_count(opt), 1);
            /* set_group_hparams: refused (the status is not specified) */
            assert_true(clopt_optimizer_set_group_hparams(opt, 0, &bad) < 0);
            assert_true(strlen(clopt_ctx_last_error(f->ctx)) > 0);
            clopt_hparams now;
            assert_int_equal(clopt_optimizer_get_group_hparams(opt, 0, &now), CLOPT_SUCCESS);
            assert_int_equal(now.state_dtype, CLOPT_DTYPE_F32);
            clopt_optimizer_destroy(opt);
        }
    }
    /* 8-bit state for rules without it; bf16 is fine for them */
    const clopt_rule no8[] = {CLOPT_NADAM, CLOPT_ADADELTA, CLOPT_RADAM, CLOPT_SOPHIA};
    for (size_t r = 0; r < sizeof no8 / sizeof no8[0]; r++) {
        assert_int_equal(clopt_hparams_default(no8[r], &hp), CLOPT_SUCCESS);
        hp.state_dtype = CLOPT_DTYPE_U8;
        REFUSED(clopt_optimizer_create(f->ctx, no8[r], &hp, &opt), CLOPT_ERR_UNSUPPORTED);
        assert_null(opt);
        hp.state_dtype = CLOPT_DTYPE_BF16;
        assert_int_equal(clopt_optimizer_create(f->ctx, no8[r], &hp, &opt), CLOPT_SUCCESS);
        bad = hp;
        bad.state_dtype = CLOPT_DTYPE_U8;
        REFUSED(clopt_optimizer_add_group(opt, &bad, NULL), CLOPT_ERR_UNSUPPORTED);
        assert_int_equal(clopt_optimizer_group_count(opt), 1);
        clopt_optimizer_destroy(opt);
    }
    /* centered RMSprop (sqrt(v - a²) of two quantized states turns NaN): refused by the
       optimizer, the op-level step and the state allocation; bf16 state is taken */
    assert_int_equal(clopt_hparams_default(CLOPT_RMSPROP, &hp), CLOPT_SUCCESS);
    hp.centered = 1;
    hp.state_dtype = CLOPT_DTYPE_U8;
    REFUSED(clopt_optimizer_create(f->ctx, CLOPT_RMSPROP, &hp, &opt), CLOPT_ERR_UNSUPPORTED);
    assert_non_null(strstr(clopt_ctx_last_error(f->ctx), "centered rmsprop"));
    {
        cl_mem pb = buf_new(f->ctx, 8192 * 4, NULL), gb = buf_new(f->ctx, 8192 * 4, NULL);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){pb, 0}, a.grad = (clopt_tensor){gb, 0};
        a.state_dtype = CLOPT_DTYPE_U8;
        REFUSED(clopt_enqueue_step(f->ctx, NULL, CLOPT_RMSPROP, &hp, &a, 8192, 1, 0, NULL, NULL),
                CLOPT_ERR_UNSUPPORTED);
        clopt_tensor st[CLOPT_MAX_STATE], am[CLOPT_MAX_STATE];
        size_t cnt = 0;
        REFUSED(clopt_alloc_state_ex(f->ctx, CLOPT_RMSPROP, &hp, 8192, CLOPT_DTYPE_U8, st, am,
                                     &cnt),
                CLOPT_ERR_UNSUPPORTED);
        clReleaseMemObject(pb), clReleaseMemObject(gb);
    }
    hp.state_dtype = CLOPT_DTYPE_BF16;
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_RMSPROP, &hp, &opt), CLOPT_SUCCESS);
    clopt_optimizer_destroy(opt);
    /* out of range */
    assert_int_equal(clopt_hparams_default(CLOPT_ADAMW, &hp), CLOPT_SUCCESS);
    bad = hp;
    bad.state_dtype = 9;
    REFUSED(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &bad, &opt), CLOPT_ERR_INVALID_HYPERPARAM);
    bad.state_dtype = CLOPT_DTYPE_F16;
    REFUSED(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &bad, &opt), CLOPT_ERR_INVALID_HYPERPARAM);
    bad.state_dtype = -1;
    REFUSED(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &bad, &opt), CLOPT_ERR_INVALID_HYPERPARAM);
    /* a range group over the engine's own state buffers (float32) with 8-bit state (the
       library's own 8-bit state in range groups: tests/test_storage_opt.c) */
    assert_int_equal(clopt_optimizer_create(f->ctx, CLOPT_ADAMW, &hp, &opt), CLOPT_SUCCESS);
    cl_mem p = buf_new(f->ctx, 8192 * 4, NULL), g = buf_new(f->ctx, 8192 * 4, NULL);
    cl_mem m = buf_new(f->ctx, 8192 * 4, NULL), v = buf_new(f->ctx, 8192 * 4, NULL);
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = (clopt_tensor){p, 0}, d.grad = (clopt_tensor){g, 0};
    d.ndim = 1, d.shape[0] = 8192;
    {
        bad = hp;
        bad.state_dtype = CLOPT_DTYPE_U8;
        size_t gi = 77, first = 77;
        clopt_range_group rg;
        clopt_range_group_init(&rg);
        rg.ntensors = 1;
        rg.tensors = &d;
        rg.state[0] = m, rg.state[1] = v;
        REFUSED(clopt_optimizer_add_range_group(opt, &bad, &rg, &gi, &first),
                CLOPT_ERR_UNSUPPORTED);
        assert_int_equal(clopt_optimizer_group_count(opt), 1);
        assert_int_equal(clopt_optimizer_param_count(opt), 0);
        assert_int_equal(clopt_optimizer_state_bytes(opt), 0);
    }
    /* the same tensor in a plain group with 8-bit state is taken */
    bad = hp;
    bad.state_dtype = CLOPT_DTYPE_U8;
    size_t gi;
    assert_int_equal(clopt_optimizer_add_group(opt, &bad, &gi), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_add_param_desc(opt, gi, &d, NULL), CLOPT_SUCCESS);
    assert_int_equal(clopt_optimizer_state_bytes(opt), 8192 * 2 + 2 * 32 * 4);
    clopt_optimizer_destroy(opt);
    clReleaseMemObject(p), clReleaseMemObject(g), clReleaseMemObject(m), clReleaseMemObject(v);
#undef REFUSED
}

/* ---- 7. bad op-level arguments ------------------------------------------------------------- */

static cl_mem env_buf(bad_env *e, size_t bytes, uint64_t *s)
{
    unsigned char *init = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++)
        init[i] = (unsigned char)(ref_splitmix64(s) & 0x3F); /* small finite floats */
    return bad_env_buf(e, bytes, init);
}

/* a step at step 2 */
#define expect_step(e, rule, hp, a, n, want, what)                                         \
    bad_env_expect_step(e, rule, hp, a, n, 2, want, what)
#define env_check bad_env_check

void test_bad_args(void **state)
{
    fixture *f = *state;
    bad_env e = {f->ctx, {0}, {0}, {0}, 0};
    uint64_t s = 8086;
    const size_t n = 300, nb = nblocks(n); /* two blocks, the second cut */
    cl_mem p = env_buf(&e, n * 4, &s), g = env_buf(&e, n * 4, &s), c0 = env_buf(&e, n, &s),
           c1 = env_buf(&e, n, &s), a0 = env_buf(&e, nb * 4, &s), a1 = env_buf(&e, nb * 4, &s),
           cshort = env_buf(&e, n - 1, &s), ashort = env_buf(&e, (nb - 1) * 4, &s),
           f0 = env_buf(&e, n * 4, &s), f1 = env_buf(&e, n * 4, &s), h0 = env_buf(&e, n * 2, &s),
           h1 = env_buf(&e, n * 2, &s), hshort = env_buf(&e, n * 2 - 2, &s),
           a2 = env_buf(&e, nb * 4, &s);
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_ADAM, &hp), CLOPT_SUCCESS);
    clopt_step_args base;
    clopt_step_args_init(&base);
    base.param = (clopt_tensor){p, 0};
    base.grad = (clopt_tensor){g, 0};
    base.state[0] = (clopt_tensor){c0, 0};
    base.state[1] = (clopt_tensor){c1, 0};
    base.state_absmax[0] = (clopt_tensor){a0, 0};
    base.state_absmax[1] = (clopt_tensor){a1, 0};
    base.state_dtype = CLOPT_DTYPE_U8;
    clopt_step_args a;
    clopt_rule rule;
    clopt_hparams h;
#define CASE(setup, want, what)                                                             \
    do {                                                                                    \
        a = base;                                                                           \
        rule = CLOPT_ADAM;                                                                  \
        h = hp;                                                                             \
        setup;                                                                              \
        expect_step(&e, rule, &h, &a, n, want, what);                                       \
    } while (0)
    CASE((a.state_dtype = (clopt_dtype)5), CLOPT_ERR_INVALID_ARGUMENT, "state_dtype 5");
    CASE((a.state_dtype = (clopt_dtype)-1), CLOPT_ERR_INVALID_ARGUMENT, "state_dtype -1");
    CASE((a.state_dtype = CLOPT_DTYPE_F16), CLOPT_ERR_INVALID_ARGUMENT, "f16 state");
    CASE((a.state_dtype = CLOPT_DTYPE_U16), CLOPT_ERR_INVALID_ARGUMENT, "u16 state");
    CASE((rule = CLOPT_NADAM, clopt_hparams_default(rule, &h)),
         CLOPT_ERR_UNSUPPORTED, "u8 state for nadam");
    CASE((rule = CLOPT_ADADELTA, clopt_hparams_default(rule, &h)),
         CLOPT_ERR_UNSUPPORTED, "u8 state for adadelta");
    CASE((a.state_absmax[1] = (clopt_tensor){ashort, 0}), CLOPT_ERR_OUT_OF_BOUNDS,
         "absmax of nb - 1 floats");
    CASE((a.state_absmax[0] = (clopt_tensor){a0, 1}), CLOPT_ERR_OUT_OF_BOUNDS,
         "absmax at offset 1 of nb floats");
    CASE((a.state[1] = (clopt_tensor){cshort, 0}), CLOPT_ERR_OUT_OF_BOUNDS, "codes of n - 1 bytes");
    CASE((a.state[0] = (clopt_tensor){c0, 1}), CLOPT_ERR_OUT_OF_BOUNDS,
         "codes at offset 1 of n bytes");
    CASE((a.state_dtype = CLOPT_DTYPE_F32, a.state[0] = (clopt_tensor){f0, 0},
          a.state[1] = (clopt_tensor){f1, 0}, a.state_absmax[1].buffer = NULL),
         CLOPT_ERR_STATE_MISMATCH, "absmax with f32 state");
    CASE((a.state_dtype = CLOPT_DTYPE_BF16, a.state[0] = (clopt_tensor){h0, 0},
          a.state[1] = (clopt_tensor){h1, 0}),
         CLOPT_ERR_STATE_MISMATCH, "absmax with bf16 state");
    CASE((a.state_absmax[2] = (clopt_tensor){a2, 0}), CLOPT_ERR_STATE_MISMATCH,
         "absmax for a third state adam does not have");
    CASE((a.state_dtype = CLOPT_DTYPE_BF16, a.state[0] = (clopt_tensor){h0, 0},
          a.state[1] = (clopt_tensor){hshort, 0}, a.state_absmax[0].buffer = NULL,
          a.state_absmax[1].buffer = NULL),
         CLOPT_ERR_OUT_OF_BOUNDS, "bf16 state of n - 1 elements");
    CASE((a.state_dtype = CLOPT_DTYPE_F32, a.state[0] = (clopt_tensor){h0, 0},
          a.state[1] = (clopt_tensor){h1, 0}, a.state_absmax[0].buffer = NULL,
          a.state_absmax[1].buffer = NULL),
         CLOPT_ERR_OUT_OF_BOUNDS, "f32 state in 2n bytes");
    CASE((h.state_dtype = 9), CLOPT_ERR_INVALID_HYPERPARAM, "hparams state_dtype 9");
    /* a needed buffer NULL: the absmax of an 8-bit state */
    CASE((a.state_absmax[1].buffer = NULL), CLOPT_ERR_NULL_ARGUMENT, "u8 state without its absmax");
#undef CASE
    /* the accepted neighbours (these write) */
    a = base;
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n, 2, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_string_equal(clopt_ctx_last_error(e.ctx), "");
    a.state[1] = (clopt_tensor){cshort, 0};
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n - 1, 2, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    a = base;
    a.state_dtype = CLOPT_DTYPE_BF16;
    a.state[0] = (clopt_tensor){h0, 0}, a.state[1] = (clopt_tensor){h1, 0};
    a.state_absmax[0].buffer = a.state_absmax[1].buffer = NULL;
    assert_int_equal(clopt_enqueue_step(e.ctx, NULL, CLOPT_ADAM, &hp, &a, n, 2, 0, NULL, NULL),
                     CLOPT_SUCCESS);
    assert_int_equal(clFinish(clopt_ctx_cl_queue(e.ctx)), CL_SUCCESS);
    for (size_t b = 0; b < e.nbufs; b++) {
        clReleaseMemObject(e.bufs[b]);
        free(e.snap[b]);
    }
}
