/* SPDX-License-Identifier: MIT */
/*
 * Trajectories of every clopt rule on two surfaces. See trajectories_lib.h.
 */
#include "trajectories_lib.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Surfaces                                                                              */
/* ------------------------------------------------------------------------------------ */

/*
 * Rosenbrock rather than Beale as the "long curved valley": its valley y = x² is the
 * textbook picture of an ill-conditioned, curved problem (Hessian condition number ~2500 at
 * the minimum), the minimum (1, 1) sits inside the valley at a moderate scale, and the
 * values span a few decades that log-spaced contours show well. Beale's function has a
 * flat plateau and walls that grow like y^6, so a common learning rate for all rules is much
 * harder to pick and most of the figure would be saturated contours.
 */

const char *traj_surface_name(traj_surface s)
{
    switch (s) {
    case TRAJ_ROSENBROCK: return "rosenbrock";
    case TRAJ_SADDLE: return "saddle";
    default: return NULL;
    }
}

const char *traj_surface_formula(traj_surface s)
{
    switch (s) {
    case TRAJ_ROSENBROCK: return "f(x, y) = (1 \xe2\x88\x92 x)\xc2\xb2 + 100 (y \xe2\x88\x92 x\xc2\xb2)\xc2\xb2";
    case TRAJ_SADDLE: return "f(x, y) = x\xc2\xb2 \xe2\x88\x92 y\xc2\xb2";
    default: return "";
    }
}

double traj_f(traj_surface s, double x, double y)
{
    if (s == TRAJ_ROSENBROCK) {
        const double a = 1.0 - x, b = y - x * x;
        return a * a + 100.0 * b * b;
    }
    return x * x - y * y;
}

void traj_grad(traj_surface s, double x, double y, double g[2])
{
    if (s == TRAJ_ROSENBROCK) {
        const double b = y - x * x;
        g[0] = -2.0 * (1.0 - x) - 400.0 * x * b;
        g[1] = 200.0 * b;
    } else {
        g[0] = 2.0 * x;
        g[1] = -2.0 * y;
    }
}

void traj_hess_diag(traj_surface s, double x, double y, double h[2])
{
    if (s == TRAJ_ROSENBROCK) {
        h[0] = 2.0 - 400.0 * y + 1200.0 * x * x;
        h[1] = 200.0;
    } else {
        h[0] = 2.0;
        h[1] = -2.0;
    }
    /* Sophia's estimate must be >= 0 (its EMA divides the momentum); negative curvature,
       like the saddle's y direction, is clamped to 0, so that direction takes sign steps. */
    for (int i = 0; i < 2; i++)
        if (!(h[i] > 0.0))
            h[i] = 0.0;
}

void traj_start(traj_surface s, double xy[2])
{
    if (s == TRAJ_ROSENBROCK) {
        xy[0] = -1.5;
        xy[1] = 2.0;
    } else {
        /* A tiny y: exactly 0 would put the start on the stable manifold of the saddle and
           no rule could ever leave it. */
        xy[0] = -1.0;
        xy[1] = 1e-3;
    }
}

void traj_target(traj_surface s, double xy[2])
{
    xy[0] = s == TRAJ_ROSENBROCK ? 1.0 : 0.0;
    xy[1] = s == TRAJ_ROSENBROCK ? 1.0 : 0.0;
}

void traj_window(traj_surface s, double win[4])
{
    if (s == TRAJ_ROSENBROCK) {
        win[0] = -1.8;
        win[1] = 1.4;
        win[2] = -0.4;
        win[3] = 2.8;
    } else {
        win[0] = -1.5;
        win[1] = 1.5;
        win[2] = -1.5;
        win[3] = 1.5;
    }
}

/* ------------------------------------------------------------------------------------ */
/* The table                                                                             */
/* ------------------------------------------------------------------------------------ */

/*
 * One row per rule: its learning rate (the same on both surfaces: nothing is tuned per
 * surface) and the step count on each surface. Every other hyperparameter is
 * clopt_hparams_default(rule) with these changes:
 *
 *  - weight_decay = 0 for every rule but AdamW, so that each path follows f itself; AdamW
 *    keeps torch's 0.01 (decoupled decay is what tells it from Adam: its fixed point is
 *    pulled slightly towards the origin, f ≈ 3e-4 where Adam reaches 4e-11);
 *  - Sophia: rho = 0.02, bs = 1 (γ = rho·bs = lr), hess_interval = 10 (the paper's k), with
 *    the exact Hessian diagonal, clamped at 0, as the estimate. With γ = lr an unclipped
 *    step is exactly the diagonal Newton step m/h, clipped to lr per coordinate. clopt's
 *    default γ (0.04·5120) is sized for the batch-size scaling of the GNB estimator; with an
 *    exact Hessian it would shrink every step ~10^4 times;
 *  - Adafactor keeps Hugging Face's defaults: relative step ρ_t = min(1e-2, 1/sqrt(t)) times
 *    max(1e-3, RMS(θ)), hence no lr ("relative step" in the legend), update clipping at 1;
 *  - everything else (betas, eps, Adadelta's rho, RMSprop's alpha, NAdam's ψ, AdaMod's β3,
 *    LAMB's bias correction, Ranger's betas (0.95, 0.999), eps 1e-5, Lookahead and gradient
 *    centralization, which is a no-op on a 1-D tensor) is the default.
 *
 * Learning rates: SGD is plain SGD (momentum 0, torch's default) at 1e-3, about the
 * stability limit 2/λ_max of the valley (λ_max ≈ 1000 at the minimum, ~2000 at the start).
 * The Adam family uses 0.02 (Adamax twice that, as torch's defaults are 2e-3 vs 1e-3).
 * Lion gets a tenth of Adam's: every Lion step moves every coordinate by exactly lr (its
 * paper advises a 3-10x smaller lr than AdamW's). RMSprop also a tenth: without bias
 * correction its first steps are lr·g/sqrt(0.01·g²) = 10·lr per coordinate. Adagrad and
 * Adadelta get what their decaying (Adagrad) or self-scaled (Adadelta: torch's default
 * lr 1) steps need. RAdam's first 5 steps are un-normalised momentum steps lr·m̂ (ρ_t <= 5)
 * with |g| ≈ 160 at the start, so its lr has to stay near SGD's scale: it diverges from
 * lr ≈ 0.012, and of 0.007 .. 0.01 the warm-up at 0.007 lands where the rectified steps get
 * furthest. Ranger has the same warm-up (with β1 = 0.95) and diverges from lr 0.011; at
 * 8e-3 its Lookahead (k = 6, α = 0.5, which undoes half of every 6 steps) makes it the
 * slowest rule here. LAMB's trust ratio makes every
 * step exactly lr·‖θ‖ long: with lr < ~0.005 it stalls where the valley passes the origin,
 * so it gets 0.01 (it then wanders around the minimum with steps of ~0.014).
 *
 * Steps: 3000 on Rosenbrock (the fast rules reach f < 1e-3 within ~500-2800 steps, the
 * slow ones are visibly still in the valley); 600 on the saddle (the adaptive rules have
 * left the window [-1.5, 1.5]², the slow ones are on their way, SGD still creeps towards
 * the saddle point: its escape rate is (1 + 2·lr) per step).
 *
 *  rule       | lr       | steps: Rosenbrock | saddle | notes
 *  -----------+----------+-------------------+--------+------------------------------
 *  sgd        | 1e-3     | 3000              | 600    | plain (momentum 0)
 *  adam       | 0.02     | 3000              | 600    |
 *  adamw      | 0.02     | 3000              | 600    | weight_decay 0.01 (default)
 *  adagrad    | 0.5      | 3000              | 600    |
 *  adadelta   | 1.0      | 3000              | 600    | torch's default
 *  rmsprop    | 2e-3     | 3000              | 600    |
 *  adamax     | 0.04     | 3000              | 600    |
 *  nadam      | 0.02     | 3000              | 600    |
 *  radam      | 7e-3     | 3000              | 600    | 5 un-normalised warm-up steps
 *  adamod     | 0.02     | 3000              | 600    |
 *  diffgrad   | 0.02     | 3000              | 600    |
 *  lion       | 2e-3     | 3000              | 600    |
 *  sophia     | 0.02     | 3000              | 600    | rho 0.02, bs 1, k = 10
 *  adafactor  | relative | 3000              | 600    | HF defaults
 *  lamb       | 0.01     | 3000              | 600    |
 *  ranger     | 8e-3     | 3000              | 600    | lookahead k 6, α 0.5 (default)
 *  schedule_free_adamw | 0.02 | 3000           | 600    | the path is y (train mode)
 *  schedule_free_sgd | 1e-3 | 3000             | 600    | z is plain SGD: SGD's limit
 *  adopt      | 0.02     | 3000              | 600    | step 1 only sets v (no move)
 *  ademamix   | 0.02     | 3000              | 600    | α 2, β3 0.9999 (defaults)
 *  stable_adamw | 0.02   | 3000              | 600    | wd 0 (as every rule but AdamW)
 *  muon       | 0.02     | 3000              | 600    | θ as a 1×2 matrix (below)
 *
 * The rules of 2024-2025 take the Adam family's 0.02 (their updates are normalised as
 * Adam's), except Schedule-Free SGD, whose z sequence is plain SGD and so has SGD's
 * stability limit. Schedule-Free paths are the training point y the parameters hold
 * (gradients are taken there); the averaged x = lerp(y, z, 1 - 1/β) that
 * clopt_optimizer_eval would show lies on the segment from y towards z. Muon needs a 2-D
 * tensor: θ is registered as a 1×2 matrix, whose Newton-Schulz orthogonalisation is the
 * momentum direction scaled to about unit length (a normalised-gradient method with
 * Nesterov momentum: steps of about lr).
 */
typedef struct traj_row {
    clopt_rule rule;
    double lr; /* < 0: keep the default (Adafactor: relative step) */
    unsigned steps[TRAJ_SURFACE_COUNT];
} traj_row;

static const traj_row table[] = {
    {CLOPT_SGD, 1e-3, {3000, 600}},
    {CLOPT_ADAM, 0.02, {3000, 600}},
    {CLOPT_ADAMW, 0.02, {3000, 600}},
    {CLOPT_ADAGRAD, 0.5, {3000, 600}},
    {CLOPT_ADADELTA, 1.0, {3000, 600}},
    {CLOPT_RMSPROP, 2e-3, {3000, 600}},
    {CLOPT_ADAMAX, 0.04, {3000, 600}},
    {CLOPT_NADAM, 0.02, {3000, 600}},
    {CLOPT_RADAM, 7e-3, {3000, 600}},
    {CLOPT_ADAMOD, 0.02, {3000, 600}},
    {CLOPT_DIFFGRAD, 0.02, {3000, 600}},
    {CLOPT_LION, 2e-3, {3000, 600}},
    {CLOPT_SOPHIA, 0.02, {3000, 600}},
    {CLOPT_ADAFACTOR, -1.0, {3000, 600}},
    {CLOPT_LAMB, 0.01, {3000, 600}},
    {CLOPT_RANGER, 8e-3, {3000, 600}},
    {CLOPT_SCHEDULE_FREE_ADAMW, 0.02, {3000, 600}},
    {CLOPT_SCHEDULE_FREE_SGD, 1e-3, {3000, 600}},
    {CLOPT_ADOPT, 0.02, {3000, 600}},
    {CLOPT_ADEMAMIX, 0.02, {3000, 600}},
    {CLOPT_STABLE_ADAMW, 0.02, {3000, 600}},
    {CLOPT_MUON, 0.02, {3000, 600}},
};

static const traj_row *row_of(clopt_rule rule)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].rule == rule)
            return &table[i];
    return NULL;
}

clopt_status traj_setup(clopt_rule rule, traj_surface s, clopt_hparams *hp, unsigned *steps)
{
    if (!hp || !steps)
        return CLOPT_ERR_NULL_ARGUMENT;
    const traj_row *r = row_of(rule);
    if (!r || (unsigned)s >= TRAJ_SURFACE_COUNT)
        return CLOPT_ERR_INVALID_ARGUMENT;
    clopt_status st = clopt_hparams_default(rule, hp);
    if (st != CLOPT_SUCCESS)
        return st;
    if (r->lr >= 0.0)
        hp->lr = r->lr;
    if (rule != CLOPT_ADAMW)
        hp->weight_decay = 0.0;
    if (rule == CLOPT_SOPHIA) {
        hp->rho = 0.02;
        hp->bs = 1.0;
        hp->hess_interval = 10;
    }
    *steps = r->steps[s];
    return clopt_hparams_validate(rule, hp, NULL);
}

const char *traj_setup_label(clopt_rule rule, traj_surface s)
{
    static char buf[96];
    clopt_hparams hp;
    unsigned steps;
    if (traj_setup(rule, s, &hp, &steps) != CLOPT_SUCCESS)
        return "";
    if (rule == CLOPT_ADAFACTOR && hp.relative_step)
        snprintf(buf, sizeof buf, "relative step");
    else
        snprintf(buf, sizeof buf, "lr %g", hp.lr);
    size_t len = strlen(buf);
    if (rule == CLOPT_ADAMW)
        snprintf(buf + len, sizeof buf - len, ", wd %g", hp.weight_decay);
    else if (rule == CLOPT_SOPHIA)
        snprintf(buf + len, sizeof buf - len, ", \xce\xb3 %g, k %u", hp.rho * hp.bs,
                 hp.hess_interval);
    return buf;
}

/* ------------------------------------------------------------------------------------ */
/* Running a path on the device                                                          */
/* ------------------------------------------------------------------------------------ */

static clopt_status cl_status(cl_int err)
{
    return (clopt_status)(CLOPT_ERR_OPENCL_BASE + err);
}

clopt_status traj_run(clopt_ctx *ctx, clopt_rule rule, traj_surface s, const clopt_hparams *hp,
                      unsigned steps, double *xy)
{
    return traj_run_typed(ctx, rule, s, hp, steps, xy, CLOPT_DTYPE_F32);
}

/* θ's two values as stored (es 4: floats; 2: f16 or bf16 words) to floats, and back (the
   16-bit start rounded to nearest even through clopt_enqueue_convert). */
static double half_value(uint16_t h)
{
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000u) ? -v : v;
}

static float bf16_value(uint16_t w)
{
    uint32_t b = (uint32_t)w << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static clopt_status theta_read(cl_command_queue q, cl_mem m, clopt_dtype t, float theta[2],
                               cl_int *err)
{
    uint16_t w[2];
    if (t == CLOPT_DTYPE_F32) {
        *err = clEnqueueReadBuffer(q, m, CL_TRUE, 0, 2 * sizeof(float), theta, 0, NULL, NULL);
        return CLOPT_SUCCESS;
    }
    *err = clEnqueueReadBuffer(q, m, CL_TRUE, 0, sizeof w, w, 0, NULL, NULL);
    for (int i = 0; i < 2; i++)
        theta[i] = t == CLOPT_DTYPE_BF16 ? bf16_value(w[i]) : (float)half_value(w[i]);
    return CLOPT_SUCCESS;
}

clopt_status traj_run_typed(clopt_ctx *ctx, clopt_rule rule, traj_surface s,
                            const clopt_hparams *hp, unsigned steps, double *xy,
                            clopt_dtype param_dtype)
{
    if (!ctx || !hp || !xy)
        return CLOPT_ERR_NULL_ARGUMENT;
    if ((unsigned)s >= TRAJ_SURFACE_COUNT || (unsigned)rule >= CLOPT_RULE_COUNT ||
        (param_dtype != CLOPT_DTYPE_F32 && param_dtype != CLOPT_DTYPE_F16 &&
         param_dtype != CLOPT_DTYPE_BF16))
        return CLOPT_ERR_INVALID_ARGUMENT;

    cl_context cc = clopt_ctx_cl_context(ctx);
    cl_command_queue q = clopt_ctx_cl_queue(ctx);
    cl_mem buf[4] = {NULL, NULL, NULL, NULL}; /* θ, gradient, Hessian diagonal, θ's start */
    clopt_optimizer *opt = NULL;
    clopt_status st = CLOPT_SUCCESS;
    cl_int err = CL_SUCCESS;

    double start[2];
    traj_start(s, start);
    float theta[2] = {(float)start[0], (float)start[1]};
    float grad[2], hess[2];
    for (int i = 0; i < 4 && err == CL_SUCCESS; i++)
        buf[i] = clCreateBuffer(cc, CL_MEM_READ_WRITE, sizeof theta, NULL, &err);
    if (err == CL_SUCCESS)
        err = clEnqueueWriteBuffer(q, param_dtype == CLOPT_DTYPE_F32 ? buf[0] : buf[3], CL_TRUE,
                                   0, sizeof theta, theta, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        st = cl_status(err);
        goto done;
    }
    if (param_dtype != CLOPT_DTYPE_F32 && /* the 16-bit start, rounded to nearest */
        ((st = clopt_enqueue_convert(ctx, NULL, (clopt_tensor){buf[0], 0}, param_dtype,
                                     (clopt_tensor){buf[3], 0}, CLOPT_DTYPE_F32, 2, 0, 0, 0, 0,
                                     0, NULL, NULL)) != CLOPT_SUCCESS ||
         (st = theta_read(q, buf[0], param_dtype, theta, &err)) != CLOPT_SUCCESS ||
         err != CL_SUCCESS)) {
        if (err != CL_SUCCESS)
            st = cl_status(err);
        goto done;
    }

    const int sophia = rule == CLOPT_SOPHIA;
    const clopt_tensor tp = {buf[0], 0}, tg = {buf[1], 0}, th = {buf[2], 0};
    clopt_param_desc d;
    clopt_param_desc_init(&d);
    d.param = tp;
    d.grad = tg;
    d.hessian = sophia ? th : (clopt_tensor){NULL, 0};
    d.ndim = 1;
    d.shape[0] = 2;
    if (rule == CLOPT_MUON) { /* 2-D tensors only: a 1×2 matrix */
        d.ndim = 2;
        d.shape[0] = 1;
        d.shape[1] = 2;
    }
    d.param_dtype = param_dtype;
    if ((st = clopt_optimizer_create(ctx, rule, hp, &opt)) != CLOPT_SUCCESS ||
        (st = clopt_optimizer_add_param_desc(opt, 0, &d, NULL)) != CLOPT_SUCCESS)
        goto done;

    xy[0] = theta[0];
    xy[1] = theta[1];
    for (unsigned t = 1; t <= steps; t++) {
        double g[2], h[2];
        traj_grad(s, theta[0], theta[1], g);
        grad[0] = (float)g[0];
        grad[1] = (float)g[1];
        /* Non-blocking writes: the blocking read below completes them before the host
           arrays change again. */
        err = clEnqueueWriteBuffer(q, buf[1], CL_FALSE, 0, sizeof grad, grad, 0, NULL, NULL);
        if (err == CL_SUCCESS && sophia) {
            traj_hess_diag(s, theta[0], theta[1], h);
            hess[0] = (float)h[0];
            hess[1] = (float)h[1];
            err = clEnqueueWriteBuffer(q, buf[2], CL_FALSE, 0, sizeof hess, hess, 0, NULL, NULL);
        }
        if (err != CL_SUCCESS) {
            st = cl_status(err);
            goto done;
        }
        if ((st = clopt_optimizer_step(opt, NULL)) != CLOPT_SUCCESS)
            goto done;
        theta_read(q, buf[0], param_dtype, theta, &err);
        if (err != CL_SUCCESS) {
            st = cl_status(err);
            goto done;
        }
        xy[2 * t] = theta[0];
        xy[2 * t + 1] = theta[1];
    }

done:
    if (st != CLOPT_SUCCESS)
        clFinish(q); /* nothing may still read the host arrays or the buffers */
    clopt_optimizer_destroy(opt);
    for (int i = 0; i < 4; i++)
        if (buf[i])
            clReleaseMemObject(buf[i]);
    return st;
}
