/* SPDX-License-Identifier: MIT */
/* 16-bit storage, master weights for every element-wise rule (one executable with
 * test_storage.c, which has the references by value of test_storage.h): bf16 θ with an fp32
 * master against the float32 rule bit for bit, the bf16 remainder against the fp32 master,
 * f16 gradients against their float32 values, plain RNE / SR stores against the float32
 * result, exact ties; and the scalar kernels (vector width 1) through conversions, stochastic
 * rounding and master weights. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clopt.h"
#include "fixture.h"
#include "test_storage.h"

/* ---- master weights, for every element-wise rule ------------------------------------------- */

static size_t dsize(clopt_dtype t) { return t == CLOPT_DTYPE_F32 ? 4 : 2; }

enum { MN = 1037, MSTEPS = 10, POFF = 3, GOFF = 5, MOFF = 2, GUARD = 4 };

typedef struct run {
    clopt_dtype pt, gt;
    cl_mem p, g, m;
    size_t pbytes, mbytes;
    clopt_tensor st[CLOPT_MAX_STATE];
    size_t ns;
    clopt_step_args a;
    unsigned char *pinit, *minit; /* the buffers' first contents (the guards) */
} run;

static void run_make(clopt_ctx *ctx, run *r, clopt_rule rule, const clopt_hparams *hp,
                     clopt_dtype pt, clopt_dtype gt, clopt_master mk, const void *theta)
{
    memset(r, 0, sizeof *r);
    r->pt = pt, r->gt = gt;
    const size_t ps = dsize(pt);
    r->pbytes = (POFF + MN + GUARD) * ps;
    r->pinit = xmalloc(r->pbytes);
    memset(r->pinit, 0xA5, r->pbytes);
    memcpy(r->pinit + POFF * ps, theta, MN * ps);
    r->p = buf_new(ctx, r->pbytes, r->pinit);
    r->g = buf_new(ctx, (GOFF + MN) * dsize(gt), NULL);
    clopt_step_args_init(&r->a);
    r->a.param = (clopt_tensor){r->p, POFF};
    r->a.grad = (clopt_tensor){r->g, GOFF};
    r->a.param_dtype = pt;
    r->a.grad_dtype = gt;
    if (mk != CLOPT_MASTER_NONE) {
        const size_t ms = mk == CLOPT_MASTER_F32 ? 4 : 2;
        r->mbytes = (MOFF + MN + GUARD) * ms;
        r->minit = xmalloc(r->mbytes);
        memset(r->minit, 0x5A, r->mbytes);
        if (mk == CLOPT_MASTER_REMAINDER)
            memset(r->minit + MOFF * ms, 0, MN * ms); /* zeros: the master is θ */
        r->m = buf_new(ctx, r->mbytes, r->minit);
        r->a.master_kind = mk;
        r->a.master = (clopt_tensor){r->m, MOFF};
        if (mk == CLOPT_MASTER_F32) { /* the fp32 master from θ, as the header suggests */
            convert_ok(ctx, r->m, MOFF, CLOPT_DTYPE_F32, r->p, POFF, pt, MN, 0, 0, 0, 0);
            assert_int_equal(clFinish(clopt_ctx_cl_queue(ctx)), CL_SUCCESS);
            buf_read(ctx, r->m, 0, r->mbytes, r->minit);
        }
    }
    assert_int_equal(clopt_alloc_state(ctx, rule, hp, MN, r->st, &r->ns), CLOPT_SUCCESS);
    for (size_t k = 0; k < r->ns; k++)
        r->a.state[k] = r->st[k];
}

static void run_free(run *r)
{
    clReleaseMemObject(r->p), clReleaseMemObject(r->g);
    if (r->m)
        clReleaseMemObject(r->m);
    for (size_t k = 0; k < r->ns; k++)
        clReleaseMemObject(r->st[k].buffer);
    free(r->pinit), free(r->minit);
}

static void run_grad(clopt_ctx *ctx, run *r, const void *g)
{
    const size_t gs = dsize(r->gt);
    buf_write(ctx, r->g, GOFF * gs, MN * gs, g);
}

static void run_step(clopt_ctx *ctx, run *r, clopt_rule rule, const clopt_hparams *hp,
                     uint64_t t, const char *label, const char *which)
{
    const clopt_status s = clopt_enqueue_step(ctx, NULL, rule, hp, &r->a, MN, t, 0, NULL, NULL);
    if (s != CLOPT_SUCCESS)
        print_error("%s run %s step %llu: %s (%s)\n", label, which, (unsigned long long)t,
                    clopt_status_name(s), clopt_ctx_last_error(ctx));
    assert_int_equal(s, CLOPT_SUCCESS);
}

static void run_theta(clopt_ctx *ctx, const run *r, void *out)
{
    const size_t ps = dsize(r->pt);
    buf_read(ctx, r->p, POFF * ps, MN * ps, out);
}

static void run_master(clopt_ctx *ctx, const run *r, void *out)
{
    const size_t ms = r->a.master_kind == CLOPT_MASTER_F32 ? 4 : 2;
    buf_read(ctx, r->m, MOFF * ms, MN * ms, out);
}

static void run_states(clopt_ctx *ctx, const run *r, float *out)
{
    for (size_t k = 0; k < r->ns; k++)
        buf_read(ctx, r->st[k].buffer, 0, MN * 4, out + k * MN);
}

/* The guards around θ and the master still hold their first contents. */
static size_t run_guards(clopt_ctx *ctx, const run *r, const char *label, const char *which)
{
    size_t bad = 0;
    unsigned char *b = xmalloc(r->pbytes > r->mbytes ? r->pbytes : r->mbytes);
    const size_t ps = dsize(r->pt);
    buf_read(ctx, r->p, 0, r->pbytes, b);
    if (memcmp(b, r->pinit, POFF * ps) != 0 ||
        memcmp(b + (POFF + MN) * ps, r->pinit + (POFF + MN) * ps, GUARD * ps) != 0)
        bad++, print_error("%s run %s: θ's buffer written outside the tensor\n", label, which);
    if (r->m) {
        const size_t ms = r->a.master_kind == CLOPT_MASTER_F32 ? 4 : 2;
        buf_read(ctx, r->m, 0, r->mbytes, b);
        if (memcmp(b, r->minit, MOFF * ms) != 0 ||
            memcmp(b + (MOFF + MN) * ms, r->minit + (MOFF + MN) * ms, GUARD * ms) != 0)
            bad++, print_error("%s run %s: the master's buffer written outside the tensor\n",
                               label, which);
    }
    free(b);
    return bad;
}

/* Bitwise comparison of n floats, the first few differences printed. */
static size_t cmp_bits(const char *label, const char *what, unsigned t, const float *got,
                       const float *want, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (f2u(got[i]) != f2u(want[i]) && bad++ < 3)
            print_error("%s step %u %s[%zu]: %a (0x%08x), want %a (0x%08x)\n", label, t, what, i,
                        (double)got[i], f2u(got[i]), (double)want[i], f2u(want[i]));
    return bad;
}

/* For rule ci, ten steps (or `steps`) with fresh gradients of nine runs side by side:
     A  f32 θ, f32 g (bf16 values)                      the float32 rule
     B  bf16 θ, bf16 g, fp32 master                     (a) master == A's θ, θ == RNE(master)
     C  bf16 θ, bf16 g, remainder (zeros)               (b) θ with r == B's master
     D  f32 θ, f32 g (f16 values), grad_scale 1024      the float32 rule
     E  f32 θ, f16 g, grad_scale 1024                   (c) == D
     F  f32 θ (G's θ every step), f32 g                 the float32 rule
     G  bf16 θ, f32 g                                   (d) θ == RNE(F's result)
     I  f32 θ (H's θ every step), f32 g                 the float32 rule
     H  bf16 θ, f32 g, stochastic rounding              (d) θ among the neighbours of I's
     K  f32 θ (f16 values), f32 g (bf16 values)         the float32 rule
     J  f16 θ, bf16 g, fp32 master                      master == K's θ, θ == RNE(master)
   and the states of each run equal those of its float32 run. */
static size_t master_rule_run(clopt_ctx *ctx, int ci, unsigned steps, int with_j)
{
    fmt_init(&F16);
    fmt_init(&BF16);
    clopt_rule rule;
    clopt_hparams hp;
    const char *label;
    if (!elementwise_variant(ci, &rule, &hp, &label))
        return 0;
    const size_t n = MN;
    uint16_t *tb = xmalloc(n * 2), *th = xmalloc(n * 2), *gb = xmalloc(n * 2),
             *gh = xmalloc(n * 2), *ob = xmalloc(n * 2), *oc = xmalloc(n * 2),
             *rc = xmalloc(n * 2), *og = xmalloc(n * 2), *ohh = xmalloc(n * 2),
             *oj = xmalloc(n * 2);
    float *tf = xmalloc(n * 4), *tfh = xmalloc(n * 4), *gfb = xmalloc(n * 4),
          *gfh = xmalloc(n * 4), *gf = xmalloc(n * 4), *oa = xmalloc(n * 4),
          *mb = xmalloc(n * 4), *od = xmalloc(n * 4), *oe = xmalloc(n * 4),
          *of = xmalloc(n * 4), *oi = xmalloc(n * 4), *ok = xmalloc(n * 4),
          *mj = xmalloc(n * 4);
    float *sa = xmalloc(CLOPT_MAX_STATE * n * 4), *sx = xmalloc(CLOPT_MAX_STATE * n * 4);
    uint64_t s = 1000 + (uint64_t)ci;
    for (size_t i = 0; i < n; i++) {
        tb[i] = round16(&BF16, (unif(&s) - 0.5) * 4.0, 0);
        tf[i] = (float)val16(&BF16, tb[i]);
        th[i] = round16(&F16, (unif(&s) - 0.5) * 4.0, 0);
        tfh[i] = (float)val16(&F16, th[i]);
    }
    run A, B, C, D, E, F, G, H, I, J, K;
    run_make(ctx, &A, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &B, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, CLOPT_MASTER_F32, tb);
    run_make(ctx, &C, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_BF16, CLOPT_MASTER_REMAINDER,
             tb);
    run_make(ctx, &D, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &E, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F16, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &F, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    run_make(ctx, &G, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tb);
    run_make(ctx, &H, rule, &hp, CLOPT_DTYPE_BF16, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tb);
    run_make(ctx, &I, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tf);
    if (with_j) {
        run_make(ctx, &J, rule, &hp, CLOPT_DTYPE_F16, CLOPT_DTYPE_BF16, CLOPT_MASTER_F32, th);
        run_make(ctx, &K, rule, &hp, CLOPT_DTYPE_F32, CLOPT_DTYPE_F32, CLOPT_MASTER_NONE, tfh);
    }
    /* the masters start as θ's values */
    run_master(ctx, &B, mb);
    assert_memory_equal(mb, tf, n * 4);
    if (with_j) {
        run_master(ctx, &J, mj);
        assert_memory_equal(mj, tfh, n * 4);
    }
    D.a.grad_scale = E.a.grad_scale = 1024.0;
    H.a.stochastic_rounding = 1;
    H.a.sr_seed = 0x5EED0000ull + (uint64_t)ci;
    H.a.sr_stream = 3;
    run *all[] = {&A, &B, &C, &D, &E, &F, &G, &H, &I, &J, &K};
    const char *names = "ABCDEFGHIJK";
    const size_t nruns = with_j ? 11 : 9;
    size_t bad = 0, sr_moved = 0, rne_moved = 0, m_moved = 0;
    for (unsigned t = 1; t <= steps && !bad; t++) {
        for (size_t i = 0; i < n; i++) {
            const int e = (int)(mix(&s) % 10) - 8;
            const int zero = mix(&s) % 37 == 0;
            gb[i] = zero ? 0 : round16(&BF16, (unif(&s) - 0.5) * ldexp(1, e), 0);
            gfb[i] = (float)val16(&BF16, gb[i]);
            gh[i] = zero ? 0 : round16(&F16, (unif(&s) - 0.5) * 1024.0 * ldexp(1, e), 0);
            gfh[i] = (float)val16(&F16, gh[i]);
            gf[i] = zero ? 0.0f : (float)((unif(&s) - 0.5) * ldexp(1, e));
        }
        run_grad(ctx, &A, gfb), run_grad(ctx, &B, gb), run_grad(ctx, &C, gb);
        run_grad(ctx, &D, gfh), run_grad(ctx, &E, gh);
        run_grad(ctx, &F, gf), run_grad(ctx, &G, gf), run_grad(ctx, &H, gf),
            run_grad(ctx, &I, gf);
        if (with_j)
            run_grad(ctx, &J, gb), run_grad(ctx, &K, gfb);
        /* (d): F and I start the step from G's and H's 16-bit θ */
        convert_ok(ctx, F.p, POFF, CLOPT_DTYPE_F32, G.p, POFF, CLOPT_DTYPE_BF16, n, 0, 0, 0,
                   0);
        convert_ok(ctx, I.p, POFF, CLOPT_DTYPE_F32, H.p, POFF, CLOPT_DTYPE_BF16, n, 0, 0, 0,
                   0);
        for (size_t r = 0; r < nruns; r++) {
            all[r]->a.mu_product = clopt_nadam_mu_product(&hp, t - 1);
            const char which[2] = {names[r], 0};
            run_step(ctx, all[r], rule, &hp, t, label, which);
        }
        assert_int_equal(clFinish(clopt_ctx_cl_queue(ctx)), CL_SUCCESS);

        /* (a) the fp32 master follows the float32 rule bit for bit; θ is its RNE */
        run_theta(ctx, &A, oa);
        run_master(ctx, &B, mb);
        run_theta(ctx, &B, ob);
        bad += cmp_bits(label, "B master vs A θ", t, mb, oa, n);
        for (size_t i = 0; i < n; i++) {
            const uint16_t want = round16(&BF16, mb[i], 0);
            if (ob[i] != want && bad++ < 3)
                print_error("%s step %u: B θ[%zu] 0x%04x, RNE of the master %a is 0x%04x\n",
                            label, t, i, ob[i], (double)mb[i], want);
            m_moved += ob[i] != tb[i];
        }
        run_states(ctx, &A, sa);
        run_states(ctx, &B, sx);
        bad += cmp_bits(label, "B states vs A", t, sx, sa, A.ns * n);
        /* (b) the remainder: θ with r is B's master; θ is it rounded ties away */
        run_theta(ctx, &C, oc);
        run_master(ctx, &C, rc);
        for (size_t i = 0; i < n; i++) {
            const uint32_t bits =
                ((uint32_t)oc[i] << 16) + (uint32_t)(int32_t)(int16_t)rc[i];
            const uint16_t want = round16(&BF16, mb[i], 1);
            if ((bits != f2u(mb[i]) || oc[i] != want) && bad++ < 3)
                print_error("%s step %u: C θ[%zu] 0x%04x r 0x%04x (master 0x%08x), B's master "
                            "%a (0x%08x), θ should be 0x%04x\n",
                            label, t, i, oc[i], rc[i], bits, (double)mb[i], f2u(mb[i]), want);
        }
        run_states(ctx, &C, sx);
        bad += cmp_bits(label, "C states vs B", t, sx, sa, A.ns * n);
        /* (c) f16 gradients == their float32 values, with the loss scale */
        run_theta(ctx, &D, od);
        run_theta(ctx, &E, oe);
        bad += cmp_bits(label, "E θ vs D θ", t, oe, od, n);
        run_states(ctx, &D, sa);
        run_states(ctx, &E, sx);
        bad += cmp_bits(label, "E states vs D", t, sx, sa, D.ns * n);
        /* (d) without a master: RNE of the float32 result, or one of its neighbours */
        run_theta(ctx, &F, of);
        run_theta(ctx, &G, og);
        run_theta(ctx, &I, oi);
        run_theta(ctx, &H, ohh);
        for (size_t i = 0; i < n; i++) {
            const uint16_t want = round16(&BF16, of[i], 0);
            if (og[i] != want && bad++ < 3)
                print_error("%s step %u: G θ[%zu] 0x%04x, RNE of %a is 0x%04x\n", label, t, i,
                            og[i], (double)of[i], want);
            uint16_t dn, up;
            neighbours16(&BF16, oi[i], &dn, &up);
            if (ohh[i] != dn && ohh[i] != up && bad++ < 3)
                print_error("%s step %u: H θ[%zu] 0x%04x, not a neighbour of %a\n", label, t,
                            i, ohh[i], (double)oi[i]);
            sr_moved += ohh[i] != round16(&BF16, oi[i], 0);
            rne_moved += og[i] != tb[i];
        }
        run_states(ctx, &F, sa);
        run_states(ctx, &G, sx);
        bad += cmp_bits(label, "G states vs F", t, sx, sa, F.ns * n);
        run_states(ctx, &I, sa);
        run_states(ctx, &H, sx);
        bad += cmp_bits(label, "H states vs I", t, sx, sa, I.ns * n);
        if (with_j) { /* f16 θ with an fp32 master */
            run_theta(ctx, &K, ok);
            run_master(ctx, &J, mj);
            run_theta(ctx, &J, oj);
            bad += cmp_bits(label, "J master vs K θ", t, mj, ok, n);
            for (size_t i = 0; i < n; i++) {
                const uint16_t want = f16_ref(mj[i]);
                if (oj[i] != want && bad++ < 3)
                    print_error("%s step %u: J θ[%zu] 0x%04x, RNE of the master %a is 0x%04x\n",
                                label, t, i, oj[i], (double)mj[i], want);
            }
            run_states(ctx, &K, sa);
            run_states(ctx, &J, sx);
            bad += cmp_bits(label, "J states vs K", t, sx, sa, K.ns * n);
        }
    }
    /* the 16-bit gradients were only read; nothing outside the tensors was written */
    {
        uint16_t *gr = xmalloc(n * 2);
        buf_read(ctx, B.g, GOFF * 2, n * 2, gr);
        if (memcmp(gr, gb, n * 2) != 0)
            bad++, print_error("%s: B's bf16 gradient was modified\n", label);
        buf_read(ctx, E.g, GOFF * 2, n * 2, gr);
        if (memcmp(gr, gh, n * 2) != 0)
            bad++, print_error("%s: E's f16 gradient was modified\n", label);
        free(gr);
    }
    for (size_t r = 0; r < nruns; r++) {
        const char which[2] = {names[r], 0};
        bad += run_guards(ctx, all[r], label, which);
    }
    /* not vacuous: the weights moved, and stochastic rounding did not always agree
       with round to nearest */
    if (!m_moved || !rne_moved || !sr_moved)
        bad++, print_error("%s: vacuous (master θ moved %zu, RNE %zu, SR != RNE %zu)\n",
                           label, m_moved, rne_moved, sr_moved);
    print_message("  %-13s%s %s (θ moved: master %zu, RNE %zu; SR != RNE %zu)\n", label,
                  with_j ? " +f16" : "     ", bad ? "FAILED" : "ok", m_moved, rne_moved, sr_moved);
    for (size_t r = 0; r < nruns; r++)
        run_free(all[r]);
    free(tb), free(th), free(gb), free(gh), free(ob), free(oc), free(rc), free(og), free(ohh),
        free(oj);
    free(tf), free(tfh), free(gfb), free(gfh), free(gf), free(oa), free(mb), free(od),
        free(oe), free(of), free(oi), free(ok), free(mj), free(sa), free(sx);
    return bad;
}

void test_master_rules(void **state)
{
    fixture *f = *state;
    const unsigned steps = test_small() ? 3 : 10;
    size_t bad = 0;
    clopt_rule rule;
    clopt_hparams hp;
    const char *label;
    /* the f16 θ runs J, K on every third rule (each storage variant is a compile) */
    for (int ci = 0; elementwise_variant(ci, &rule, &hp, &label); ci++)
        bad += master_rule_run(f->ctx, ci, steps, ci % 3 == 0);
    assert_int_equal(bad, 0);
}

/* The scalar kernels (vector width 1, three vectors per work-item: the other branch of every
   storage macro and of the random words) on a context of their own. */
void test_scalar_tuning(void **state)
{
    (void)state;
    clopt_ctx *ctx;
    assert_int_equal(clopt_ctx_create(&ctx), CLOPT_SUCCESS);
    clopt_tuning t;
    assert_int_equal(clopt_ctx_get_tuning(ctx, &t), CLOPT_SUCCESS);
    t.vector_width = 1;
    t.work_group_size = 0;
    t.items_per_work_item = 3;
    assert_int_equal(clopt_ctx_set_tuning(ctx, &t), CLOPT_SUCCESS);
    assert_int_equal(check_all_16bit(ctx), 0);
    const sr_case cases[] = {{&BF16, 0x1.01p0f, 0.5}, {&F16, 0x1.001p0f, 0.25}};
    check_sr_words(ctx, cases, 2);
    assert_int_equal(master_rule_run(ctx, 1 /* adam amsgrad */, 3, 1), 0);
    clopt_ctx_destroy(ctx);
}

/* Exact ties, which random runs almost never hit: SGD (lr 1) makes masters that lie halfway
   between two 16-bit neighbours. The remainder's θ rounds them away from zero, an fp32
   master's θ and a plain θ to even; θ with its remainder is the master exactly; an fp32
   master's θ is never read (it starts as NaN). */
void test_master_ties(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    fmt_init(&F16);
    fmt_init(&BF16);
    enum { N = 6 };
    clopt_hparams hp;
    assert_int_equal(clopt_hparams_default(CLOPT_SGD, &hp), CLOPT_SUCCESS);
    hp.lr = 1.0;
    /* θ (bf16) and g: master = θ - g */
    const uint16_t theta[N] = {0x3F80, 0x3F81, 0xBF80, 0xBF81, 0x3F80, 0x4780};
    const float g[N] = {-0x1p-8f, -0x1p-8f, 0x1p-8f, 0x1p-8f, -0x1p-9f, -256.0f};
    /* the masters: 1 + 2^-8, 1 + 3·2^-8, -(1 + 2^-8), -(1 + 3·2^-8), 1 + 2^-9 (a quarter,
       not a tie), 65536 + 256 */
    const uint32_t master[N] = {0x3F808000u, 0x3F818000u, 0xBF808000u,
                                0xBF818000u, 0x3F804000u, 0x47808000u};
    const uint16_t away[N] = {0x3F81, 0x3F82, 0xBF81, 0xBF82, 0x3F80, 0x4781};
    const uint16_t even[N] = {0x3F80, 0x3F82, 0xBF80, 0xBF82, 0x3F80, 0x4780};
    for (int i = 0; i < N; i++) { /* the tables against the value-based references */
        assert_true((double)u2f(master[i]) == val16(&BF16, theta[i]) - (double)g[i]);
        assert_int_equal(away[i], round16(&BF16, u2f(master[i]), 1));
        assert_int_equal(even[i], round16(&BF16, u2f(master[i]), 0));
    }
    cl_mem bg = buf_new(ctx, sizeof g, g);
    for (int kind = 0; kind < 3; kind++) { /* remainder, fp32 master, none */
        uint16_t th[N], r[N];
        const uint16_t nan[N] = {0x7FC0, 0x7FC0, 0xFFC0, 0x7F81, 0x7FC0, 0x7FC0};
        cl_mem bp = buf_new(ctx, sizeof th, kind == 1 ? nan : theta), bm = NULL;
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){bp, 0};
        a.grad = (clopt_tensor){bg, 0};
        a.param_dtype = CLOPT_DTYPE_BF16;
        if (kind == 0) {
            memset(r, 0, sizeof r);
            bm = buf_new(ctx, sizeof r, r);
            a.master_kind = CLOPT_MASTER_REMAINDER;
        } else if (kind == 1) {
            float m0[N];
            for (int i = 0; i < N; i++)
                m0[i] = (float)val16(&BF16, theta[i]);
            bm = buf_new(ctx, sizeof m0, m0);
            a.master_kind = CLOPT_MASTER_F32;
        }
        a.master = (clopt_tensor){bm, 0};
        assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, 1, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        buf_read(ctx, bp, 0, sizeof th, th);
        for (int i = 0; i < N; i++) {
            const uint16_t want = kind == 0 ? away[i] : even[i];
            if (th[i] != want)
                print_error("%s: master 0x%08x gave θ 0x%04x, want 0x%04x\n",
                            kind == 0 ? "remainder" : kind == 1 ? "fp32 master" : "no master",
                            master[i], th[i], want);
            assert_int_equal(th[i], want);
        }
        if (kind == 0) {
            buf_read(ctx, bm, 0, sizeof r, r);
            for (int i = 0; i < N; i++)
                assert_int_equal(((uint32_t)th[i] << 16) + (uint32_t)(int32_t)(int16_t)r[i],
                                 master[i]);
            /* a zero gradient keeps the master and θ with it; then back to θ exactly */
            const float zero[N] = {0};
            cl_mem bz = buf_new(ctx, sizeof zero, zero);
            a.grad = (clopt_tensor){bz, 0};
            assert_int_equal(
                clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, 2, 0, NULL, NULL),
                CLOPT_SUCCESS);
            uint16_t th2[N], r2[N];
            buf_read(ctx, bp, 0, sizeof th2, th2);
            buf_read(ctx, bm, 0, sizeof r2, r2);
            assert_memory_equal(th2, th, sizeof th);
            assert_memory_equal(r2, r, sizeof r);
            float back[N];
            for (int i = 0; i < N; i++)
                back[i] = -g[i];
            buf_write(ctx, bz, 0, sizeof back, back);
            assert_int_equal(
                clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, N, 3, 0, NULL, NULL),
                CLOPT_SUCCESS);
            buf_read(ctx, bp, 0, sizeof th2, th2);
            buf_read(ctx, bm, 0, sizeof r2, r2);
            assert_memory_equal(th2, theta, sizeof th2);
            for (int i = 0; i < N; i++)
                assert_int_equal(r2[i], 0);
            clReleaseMemObject(bz);
        } else if (kind == 1) {
            float m[N];
            buf_read(ctx, bm, 0, sizeof m, m);
            for (int i = 0; i < N; i++)
                assert_int_equal(f2u(m[i]), master[i]);
        }
        clReleaseMemObject(bp);
        if (bm)
            clReleaseMemObject(bm);
    }
    /* f16 θ with an fp32 master: 1 + 2^-11 and 1 + 3·2^-11 round to even */
    {
        const float m0[2] = {1.0f, 1.0f}, g2[2] = {-0x1p-11f, -0x3p-11f};
        const uint16_t nan[2] = {0x7E00, 0xFE00};
        cl_mem bp = buf_new(ctx, sizeof nan, nan), bm = buf_new(ctx, sizeof m0, m0),
               bg2 = buf_new(ctx, sizeof g2, g2);
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){bp, 0};
        a.grad = (clopt_tensor){bg2, 0};
        a.param_dtype = CLOPT_DTYPE_F16;
        a.master_kind = CLOPT_MASTER_F32;
        a.master = (clopt_tensor){bm, 0};
        assert_int_equal(clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, 2, 1, 0, NULL, NULL),
                         CLOPT_SUCCESS);
        uint16_t th[2];
        buf_read(ctx, bp, 0, sizeof th, th);
        assert_int_equal(th[0], round16(&F16, 1.0 + 0x1p-11, 0));
        assert_int_equal(th[1], round16(&F16, 1.0 + 0x3p-11, 0));
        assert_int_equal(th[0], 0x3C00);
        assert_int_equal(th[1], 0x3C02);
        clReleaseMemObject(bp), clReleaseMemObject(bm), clReleaseMemObject(bg2);
    }
    clReleaseMemObject(bg);
}

/* A remainder master that becomes a NaN whose magnitude bits are 0x7FFF8000 or more (a GPU's
   usual NaN is 0x7FFFFFFF) keeps θ a NaN: rounding by adding 0x8000 carried into the sign
   bit and gave θ -0 or +0 (the weights the model reads), while the same step without a master
   gave a NaN. SGD (lr 1, element-wise store) and LAMB (the chunked store of the multi-pass
   rules), bf16 θ of 1, float32 gradients of NaN bit patterns: every θ is a NaN, θ with its
   remainder too, and at least one θ is 0x7FFF or 0xFFFF (the case that carried). */
void test_remainder_nan(void **state)
{
    fixture *f = *state;
    clopt_ctx *ctx = f->ctx;
    enum { N = 6 };
    const uint32_t gbits[N] = {0xFFFFFFFFu, 0x7FFFFFFFu, 0x7FFF8000u,
                               0xFFFF8000u, 0x7FC00000u, 0xFFC00000u};
    const clopt_rule rules[2] = {CLOPT_SGD, CLOPT_LAMB};
    for (int ri = 0; ri < 2; ri++) {
        clopt_hparams hp;
        assert_int_equal(clopt_hparams_default(rules[ri], &hp), CLOPT_SUCCESS);
        hp.lr = 1.0;
        hp.master = CLOPT_MASTER_REMAINDER;
        uint16_t th[N];
        for (int i = 0; i < N; i++)
            th[i] = 0x3F80u;
        cl_mem bp = buf_new(ctx, sizeof th, th), bg = buf_new(ctx, sizeof gbits, gbits);
        clopt_optimizer *opt;
        assert_int_equal(clopt_optimizer_create(ctx, rules[ri], &hp, &opt), CLOPT_SUCCESS);
        clopt_param_desc d;
        clopt_param_desc_init(&d);
        d.param = (clopt_tensor){bp, 0};
        d.grad = (clopt_tensor){bg, 0};
        d.shape[0] = N;
        d.param_dtype = CLOPT_DTYPE_BF16;
        assert_int_equal(clopt_optimizer_add_param_desc(opt, 0, &d, NULL), CLOPT_SUCCESS);
        assert_int_equal(clopt_optimizer_step(opt, NULL), CLOPT_SUCCESS);
        const size_t ns = clopt_optimizer_state_count(opt, 0);
        clopt_tensor rt = {NULL, 0};
        for (size_t k = 0; k < ns; k++) {
            const char *name;
            assert_int_equal(clopt_optimizer_state_info(opt, 0, k, &name, NULL), CLOPT_SUCCESS);
            if (strcmp(name, "master_remainder") == 0)
                assert_int_equal(clopt_optimizer_state(opt, 0, k, &rt), CLOPT_SUCCESS);
        }
        assert_non_null(rt.buffer);
        uint16_t r[N];
        buf_read(ctx, bp, 0, sizeof th, th);
        buf_read(ctx, rt.buffer, rt.offset * 2, sizeof r, r);
        int carried = 0;
        for (int i = 0; i < N; i++) {
            const uint32_t m = ((uint32_t)th[i] << 16) + (uint32_t)(int32_t)(int16_t)r[i];
            if (!isnan16(&BF16, th[i]) || !isnan(u2f(m)))
                fail_msg("%s, g 0x%08x: θ 0x%04x, master 0x%08x (not NaN)",
                         clopt_rule_name(rules[ri]), gbits[i], th[i], m);
            carried += (th[i] & 0x7FFFu) == 0x7FFFu;
        }
        assert_true(carried > 0);
        clopt_optimizer_destroy(opt);
        clReleaseMemObject(bp), clReleaseMemObject(bg);
    }
}
