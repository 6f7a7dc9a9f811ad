/* SPDX-License-Identifier: MIT */
/* Muon at the optimizer level (K. Jordan et al. 2024, KellerJordan/Muon SingleDeviceMuon): per
 * 2-D tensor and step, on the step's queue,
 *   muon_partial (b, U into work buffer X0, ΣU² partials) -> sum_final -> muon_scale (X0 = U/
 *   (‖U‖_F + 1e-7)) -> ns_steps × [A = X·Xᵀ; B = nb·A + na·I (muon_poly); B += nc·A·A;
 *   X' = B·X] -> muon_update (θ -= lr·wd·θ + lr·scale·X),
 * the three products of an iteration through CLBlast (CLBlastSgemm, row-major). The X
 * buffers hold U's layout [rows, cols]: for a tall U (rows > cols) that is Xᵀ, so the products
 * become A = UᵀU and U' = U·Bᵀ (transpose flags, no copies). The work buffers (two of rows ×
 * cols floats, two of min² floats) belong to the optimizer, grown for the largest tensor and
 * reused by every tensor and step (the queue is in order). The GEMMs cannot be skipped on the
 * device: when AMP skips a step they run on the work buffers only, while muon_partial and
 * muon_update (the only writers of b and θ) do nothing. Without CLBlast the rule is refused
 * at registration (clopt_has_muon) and this step reports CLOPT_ERR_UNSUPPORTED. */
#include "optimizer_internal.h"

#include <math.h>
#include <stdlib.h>

#ifndef CLOPT_HAVE_CLBLAST
#define CLOPT_HAVE_CLBLAST 0
#endif

#if CLOPT_HAVE_CLBLAST
#include <clblast_c.h>

/* The quintic's coefficients (zeropower_via_newtonschulz5) and the normalisation's eps. */
#define NS_A 3.4445
#define NS_B (-4.7750)
#define NS_C 2.0315
#define NS_EPS 1e-7

struct clopt_muon_work {
    cl_mem x[2], a, b;
    size_t x_len[2], a_len, b_len;
};

void clopt_o_muon_release(clopt_optimizer *opt)
{
    struct clopt_muon_work *w = opt->muon;
    if (!w)
        return;
    cl_mem *m[] = {&w->x[0], &w->x[1], &w->a, &w->b};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (*m[i])
            clReleaseMemObject(*m[i]);
    free(w);
    opt->muon = NULL;
}

/* Work buffers for a tensor of n elements whose Gram matrix has mm (grown, never shrunk). */
static clopt_status ensure_work(clopt_optimizer *opt, size_t n, size_t mm)
{
    if (!opt->muon) {
        opt->muon = calloc(1, sizeof *opt->muon);
        if (!opt->muon)
            return clopt_fail(opt->ctx, CLOPT_ERR_OUT_OF_MEMORY, "muon: work buffers");
    }
    struct clopt_muon_work *w = opt->muon;
    const char *what = "allocating Muon's Newton-Schulz work buffers";
    clopt_status s;
    if ((s = clopt_o_ensure_buffer(opt, &w->x[0], &w->x_len[0], n, CL_MEM_READ_WRITE, what)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_ensure_buffer(opt, &w->x[1], &w->x_len[1], n, CL_MEM_READ_WRITE, what)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_ensure_buffer(opt, &w->a, &w->a_len, mm, CL_MEM_READ_WRITE, what)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_ensure_buffer(opt, &w->b, &w->b_len, mm, CL_MEM_READ_WRITE, what)) !=
            CLOPT_SUCCESS)
        return s;
    return CLOPT_SUCCESS;
}

static clopt_status blast_failed(clopt_optimizer *opt, CLBlastStatusCode c)
{
    if (c > -1000 && c < 0) /* an OpenCL error passed through */
        return clopt_fail_cl(opt->ctx, (cl_int)c, "CLBlastSgemm (muon)");
    return clopt_fail(opt->ctx, CLOPT_ERR_UNSUPPORTED, "muon: CLBlastSgemm failed with status %d",
                      (int)c);
}

/* C = alpha·op(A)·op(B) + beta·C, row-major, on the step's queue. */
static clopt_status gemm(clopt_optimizer *opt, int ta, int tb, size_t m, size_t n, size_t k,
                         float alpha, cl_mem a, size_t lda, cl_mem b, size_t ldb, float beta,
                         cl_mem c, size_t ldc)
{
    opt->ctx->ran_clblast = 1;
    const CLBlastStatusCode r = CLBlastSgemm(
        CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, alpha, a, 0, lda, b, 0, ldb,
        beta, c, 0, ldc, &opt->q, NULL);
    return r == CLBlastSuccess ? CLOPT_SUCCESS : blast_failed(opt, r);
}

/* One Newton-Schulz iteration from x to y: rows × cols in U's layout, m = min, big = max. */
static clopt_status ns_iteration(clopt_optimizer *opt, cl_kernel kpoly, cl_mem x, cl_mem y,
                                 size_t rows, size_t cols)
{
    struct clopt_muon_work *w = opt->muon;
    const int tall = rows > cols;
    const size_t m = tall ? cols : rows, big = tall ? rows : cols;
    clopt_status s;
    /* A = X·Xᵀ: wide, X [m, big]; tall, U = Xᵀ [big, m] and A = UᵀU */
    if (tall)
        s = gemm(opt, 1, 0, m, m, big, 1.0f, x, m, x, m, 0.0f, w->a, m);
    else
        s = gemm(opt, 0, 1, m, m, big, 1.0f, x, big, x, big, 0.0f, w->a, m);
    if (s != CLOPT_SUCCESS)
        return s;
    clopt_args p = {kpoly, 0, CL_SUCCESS};
    clopt_arg_tensor(&p, (clopt_tensor){w->a, 0});
    clopt_arg_ulong(&p, m);
    clopt_arg_float(&p, (float)NS_B);
    clopt_arg_float(&p, (float)NS_A);
    clopt_arg_tensor(&p, (clopt_tensor){w->b, 0});
    if (p.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &p);
    if ((s = clopt_o_launch_items(opt, kpoly, m)) != CLOPT_SUCCESS ||
        (s = gemm(opt, 0, 0, m, m, m, (float)NS_C, w->a, m, w->a, m, 1.0f, w->b, m)) !=
            CLOPT_SUCCESS)
        return s;
    /* X' = B·X: wide directly; tall, U' = U·Bᵀ = (B·X)ᵀ */
    if (tall)
        return gemm(opt, 0, 1, big, m, m, 1.0f, x, m, w->b, m, 0.0f, y, m);
    return gemm(opt, 0, 0, m, big, m, 1.0f, w->b, m, x, big, 0.0f, y, big);
}

clopt_status clopt_o_step_muon(clopt_optimizer *opt, const clopt_param *e,
                               const clopt_hparams *hp, uint64_t t, float gmul)
{
    (void)t;
    if (e->ndim != 2) /* refused at registration; kept as a guard */
        return clopt_fail(opt->ctx, CLOPT_ERR_UNSUPPORTED, "muon takes 2-D tensors only");
    const size_t rows = e->shape[0], cols = e->shape[1];
    const size_t m = rows < cols ? rows : cols;
    clopt_status s = ensure_work(opt, e->n, m * m);
    if (s != CLOPT_SUCCESS)
        return s;
    struct clopt_muon_work *w = opt->muon;
    char extra[96] = "";
    clopt_o_storage_extra(e, hp, extra, sizeof extra);
    cl_kernel kp, ks, kpoly, ku;
    if ((s = clopt_o_kernel_of(opt, "muon", hp, 0, extra, "muon_partial", &kp)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_kernel_of(opt, "muon", hp, 0, extra, "muon_scale", &ks)) != CLOPT_SUCCESS ||
        (s = clopt_o_kernel_of(opt, "muon", hp, 0, extra, "muon_poly", &kpoly)) !=
            CLOPT_SUCCESS ||
        (s = clopt_o_kernel_of(opt, "muon", hp, 0, extra, "muon_update", &ku)) != CLOPT_SUCCESS)
        return s;
    const double mu = hp->momentum;
    const size_t items = clopt_o_reduce_groups(opt, e->n);
    clopt_args a = {kp, 0, CL_SUCCESS};
    clopt_arg_tensor(&a, e->grad);
    clopt_arg_tensor(&a, e->state[0]);
    clopt_arg_tensor(&a, (clopt_tensor){w->x[0], 0});
    clopt_arg_ulong(&a, e->n);
    clopt_arg_ulong(&a, items);
    clopt_arg_float(&a, gmul);
    clopt_arg_float(&a, (float)(1.0 - mu));
    clopt_arg_float(&a, (float)mu);
    clopt_arg_float(&a, (float)mu);
    clopt_arg_float(&a, (float)(1.0 - mu));
    clopt_arg_int(&a, hp->nesterov ? 1 : 0);
    clopt_arg_tensor(&a, (clopt_tensor){opt->scratch, 0});
    clopt_arg_ctl(&a, &opt->cur);
    clopt_args b = {ks, 0, CL_SUCCESS};
    clopt_arg_tensor(&b, (clopt_tensor){w->x[0], 0});
    clopt_arg_ulong(&b, e->n);
    clopt_arg_tensor(&b, (clopt_tensor){opt->scratch, SCR_SUMS});
    clopt_arg_float(&b, (float)NS_EPS);
    clopt_arg_ctl(&b, &opt->cur);
    if (a.err != CL_SUCCESS || b.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, a.err != CL_SUCCESS ? &a : &b);
    if ((s = clopt_o_launch_groups(opt, kp, items)) != CLOPT_SUCCESS ||
        (s = clopt_o_enqueue_final(opt, items, 1, SCR_SUMS)) != CLOPT_SUCCESS ||
        (s = clopt_o_launch_update(opt, ks, e->n)) != CLOPT_SUCCESS)
        return s;
    /* nothing of the GEMMs is enqueued in a dry pass: the result lands in x[ns_steps % 2] */
    for (unsigned i = 0; !opt->cur.dry && i < hp->ns_steps; i++)
        if ((s = ns_iteration(opt, kpoly, w->x[i & 1u], w->x[(i & 1u) ^ 1u], rows, cols)) !=
            CLOPT_SUCCESS)
            return s;
    const unsigned cur = hp->ns_steps & 1u;
    const double scale = rows > cols ? sqrt((double)rows / (double)cols) : 1.0;
    clopt_args u = {ku, 0, CL_SUCCESS};
    clopt_arg_tensor(&u, e->param);
    clopt_arg_tensor(&u, (clopt_tensor){w->x[cur], 0});
    clopt_arg_ulong(&u, e->n);
    clopt_arg_float(&u, (float)(hp->lr * hp->weight_decay));
    clopt_arg_float(&u, (float)hp->lr);
    clopt_arg_float(&u, (float)scale);
    clopt_arg_ctl(&u, &opt->cur);
    clopt_o_storage_args(opt, &u, e);
    if (u.err != CL_SUCCESS)
        return clopt_o_set_failed(opt, &u);
    return clopt_o_launch_update(opt, ku, e->n);
}

void clopt_muon_ctx_release(clopt_ctx *ctx)
{
    if (ctx->ran_clblast)
        CLBlastClearCache();
}

#else /* no CLBlast */

void clopt_muon_ctx_release(clopt_ctx *ctx)
{
    (void)ctx;
}

void clopt_o_muon_release(clopt_optimizer *opt)
{
    (void)opt;
}

clopt_status clopt_o_step_muon(clopt_optimizer *opt, const clopt_param *e,
                               const clopt_hparams *hp, uint64_t t, float gmul)
{
    (void)e, (void)hp, (void)t, (void)gmul;
    return clopt_fail(opt->ctx, CLOPT_ERR_UNSUPPORTED,
                      "muon needs CLBlast, and this library was built without it");
}

#endif
