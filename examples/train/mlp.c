/* SPDX-License-Identifier: MIT */
/*
 * The MLP of the training example: the model on the device (CLBlast GEMMs plus the kernels of
 * mlp.cl, weights in float32 or in 16-bit storage with a float32 copy for the GEMMs) and its
 * passes on the device. The training loop is in mlp_train.c, the data in mlp_data.c. See
 * mlp.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "mlp_internal.h"

#include "embedded.h"

#include <clblast_c.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* mlp.cl, embedded at build time (clopt_embed_sources in CMakeLists.txt). */
extern const clopt_embedded_file mlp_cl_sources[];
extern const size_t mlp_cl_sources_count;

/* ------------------------------------------------------------------------------------ */
/* Model                                                                                 */
/* ------------------------------------------------------------------------------------ */

static const char *const KERNEL_NAMES[K_COUNT] = {"gather_batch", "bias_act", "relu_backward",
                                                  "col_sums", "softmax_xent", "batch_stats"};

int mlp_fail(mlp *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return -1;
}

int mlp_fail_cl(mlp *m, cl_int e, const char *what)
{
    return mlp_fail(m, "%s failed: OpenCL error %d", what, (int)e);
}

const char *mlp_last_error(const mlp *m) { return m ? m->err : "no model"; }
const mlp_config *mlp_get_config(const mlp *m) { return &m->cfg; }
clopt_ctx *mlp_get_ctx(const mlp *m) { return m->ctx; }

mlp_config mlp_config_default(size_t batch)
{
    mlp_config c;
    memset(&c, 0, sizeof c);
    c.nlayers = 3;
    c.dims[0] = MLP_IMAGE_DIM;
    c.dims[1] = 256;
    c.dims[2] = 128;
    c.dims[3] = MLP_CLASSES;
    c.batch = batch;
    return c;
}

static cl_mem new_buffer(mlp *m, size_t bytes, int *ok)
{
    cl_int e = CL_SUCCESS;
    cl_mem b = clCreateBuffer(m->cl, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (e != CL_SUCCESS || !b) {
        if (*ok)
            mlp_fail_cl(m, e, "clCreateBuffer");
        *ok = 0;
        return NULL;
    }
    /* Start from zero: the optimizer reads the gradient buffers' contents only after a
       backward pass, but Sophia's Hessian buffers must be defined before the first estimate. */
    const float zero = 0.0f;
    e = clEnqueueFillBuffer(m->queue, b, &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        if (*ok)
            mlp_fail_cl(m, e, "clEnqueueFillBuffer");
        *ok = 0;
    }
    return b;
}

/* A sub-buffer of n floats at element offset off of a flat buffer (off is a multiple of the
   device's base-address alignment: mlp_create's layout). */
static cl_mem sub_buffer(mlp *m, cl_mem parent, size_t off, size_t n, int *ok)
{
    if (!*ok)
        return NULL;
    const cl_buffer_region r = {off * sizeof(float), n * sizeof(float)};
    cl_int e = CL_SUCCESS;
    cl_mem s = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &e);
    if (e != CL_SUCCESS || !s) {
        mlp_fail_cl(m, e, "clCreateSubBuffer");
        *ok = 0;
        return NULL;
    }
    return s;
}

static void release_mem(cl_mem *b)
{
    if (*b)
        clReleaseMemObject(*b);
    *b = NULL;
}

static int build_program(mlp *m)
{
    const char *src = NULL;
    for (size_t i = 0; i < mlp_cl_sources_count; i++)
        if (strcmp(mlp_cl_sources[i].name, "mlp") == 0)
            src = mlp_cl_sources[i].data;
    if (!src)
        return mlp_fail(m, "mlp.cl is not embedded in this build");
    cl_int e = CL_SUCCESS;
    m->program = clCreateProgramWithSource(m->cl, 1, &src, NULL, &e);
    if (e != CL_SUCCESS)
        return mlp_fail_cl(m, e, "clCreateProgramWithSource(mlp.cl)");
    cl_device_id dev = clopt_ctx_cl_device(m->ctx);
    e = clBuildProgram(m->program, 1, &dev, "-cl-std=CL1.2", NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[768] = "";
        clGetProgramBuildInfo(m->program, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        return mlp_fail(m, "building mlp.cl failed (OpenCL error %d): %s", (int)e, log);
    }
    for (int i = 0; i < K_COUNT; i++) {
        m->k[i] = clCreateKernel(m->program, KERNEL_NAMES[i], &e);
        if (e != CL_SUCCESS)
            return mlp_fail_cl(m, e, KERNEL_NAMES[i]);
    }
    return 0;
}

int mlp_create(clopt_ctx *ctx, const mlp_config *cfg, int hessian, mlp **out, char *err,
               size_t errlen)
{
    if (!ctx || !cfg || !out) {
        mlp_put_err(err, errlen, "mlp_create: NULL argument");
        return -1;
    }
    *out = NULL;
    if (cfg->nlayers < 1 || cfg->nlayers > MLP_MAX_LAYERS || cfg->batch == 0) {
        mlp_put_err(err, errlen, "mlp_create: %zu layers (1..%d) and batch %zu (> 0)",
                    cfg->nlayers, MLP_MAX_LAYERS, cfg->batch);
        return -1;
    }
    for (size_t i = 0; i <= cfg->nlayers; i++)
        if (cfg->dims[i] == 0) {
            mlp_put_err(err, errlen, "mlp_create: dims[%zu] is 0", i);
            return -1;
        }
    if (cfg->param_dtype != CLOPT_DTYPE_F32 && cfg->param_dtype != CLOPT_DTYPE_F16 &&
        cfg->param_dtype != CLOPT_DTYPE_BF16) {
        mlp_put_err(err, errlen, "mlp_create: parameter storage %d is not f32, f16 or bf16",
                    (int)cfg->param_dtype);
        return -1;
    }
    mlp *m = calloc(1, sizeof *m);
    if (!m) {
        mlp_put_err(err, errlen, "out of memory");
        return -1;
    }
    m->ctx = ctx;
    m->cl = clopt_ctx_cl_context(ctx);
    m->queue = clopt_ctx_cl_queue(ctx);
    m->cfg = *cfg;
    m->hessian = hessian != 0;
    m->mean = 0.0f;
    m->inv_std = 1.0f;
    int ok = build_program(m) == 0;
    const size_t B = cfg->batch, L = cfg->nlayers;
    /* The flat layout: W_0 .. W_{L-1}, then b_0 .. b_{L-1}, each starting at a multiple of the
       device's base-address alignment (what clCreateSubBuffer needs; 128 bytes on PoCL, up to
       512 on GPUs), the gaps zero and never read */
    cl_uint align_bits = 0;
    if (ok) {
        const cl_int e = clGetDeviceInfo(clopt_ctx_cl_device(ctx), CL_DEVICE_MEM_BASE_ADDR_ALIGN,
                                         sizeof align_bits, &align_bits, NULL);
        if (e != CL_SUCCESS)
            ok = mlp_fail_cl(m, e, "clGetDeviceInfo(CL_DEVICE_MEM_BASE_ADDR_ALIGN)") == 0;
    }
    const size_t align = align_bits >= 8 * sizeof(float) ? align_bits / (8 * sizeof(float)) : 1;
    size_t pos = 0;
    for (size_t pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < L; i++) {
            const size_t n = pass == 0 ? cfg->dims[i + 1] * cfg->dims[i] : cfg->dims[i + 1];
            *(pass == 0 ? &m->flat.weight_offset[i] : &m->flat.bias_offset[i]) = pos;
            pos = (pos + n + align - 1) / align * align;
        }
    m->flat.floats = pos;
    if (ok) {
        m->flat.params = new_buffer(m, pos * sizeof(float), &ok);
        m->flat.grads = new_buffer(m, pos * sizeof(float), &ok);
        if (cfg->param_dtype != CLOPT_DTYPE_F32) /* 2 bytes each, whole words */
            m->flat.params16 = new_buffer(m, (pos * 2 + 3) / 4 * 4, &ok);
    }
    for (size_t i = 0; ok && i < L; i++) {
        const size_t wn = cfg->dims[i + 1] * cfg->dims[i], bn = cfg->dims[i + 1];
        const size_t wo = m->flat.weight_offset[i], bo = m->flat.bias_offset[i];
        m->w[i] = sub_buffer(m, m->flat.params, wo, wn, &ok);
        m->b[i] = sub_buffer(m, m->flat.params, bo, bn, &ok);
        m->gw[i] = sub_buffer(m, m->flat.grads, wo, wn, &ok);
        m->gb[i] = sub_buffer(m, m->flat.grads, bo, bn, &ok);
        if (hessian) {
            m->hw[i] = new_buffer(m, wn * sizeof(float), &ok);
            m->hb[i] = new_buffer(m, bn * sizeof(float), &ok);
        }
    }
    for (size_t i = 0; ok && i <= L; i++) {
        m->act[i] = new_buffer(m, B * cfg->dims[i] * sizeof(float), &ok);
        if (i > 0)
            m->dact[i] = new_buffer(m, B * cfg->dims[i] * sizeof(float), &ok);
    }
    if (ok) {
        m->y = new_buffer(m, B * sizeof(cl_int), &ok);
        m->row_loss = new_buffer(m, B * sizeof(float), &ok);
        m->row_correct = new_buffer(m, B * sizeof(cl_int), &ok);
    }
    if (ok) {
        const cl_int e = clFinish(m->queue);
        if (e != CL_SUCCESS)
            ok = mlp_fail_cl(m, e, "clFinish") == 0;
    }
    if (!ok) {
        mlp_put_err(err, errlen, "%s", m->err);
        mlp_destroy(m);
        return -1;
    }
    *out = m;
    return 0;
}

void mlp_destroy(mlp *m)
{
    if (!m)
        return;
    if (m->queue)
        clFinish(m->queue);
    clopt_optimizer_destroy(m->aux);
    for (size_t i = 0; i < MLP_MAX_LAYERS; i++) {
        release_mem(&m->w[i]);
        release_mem(&m->b[i]);
        release_mem(&m->gw[i]);
        release_mem(&m->gb[i]);
        release_mem(&m->hw[i]);
        release_mem(&m->hb[i]);
    }
    release_mem(&m->flat.params); /* after their sub-buffers */
    release_mem(&m->flat.params16);
    release_mem(&m->flat.grads);
    for (size_t i = 0; i <= MLP_MAX_LAYERS; i++) {
        release_mem(&m->act[i]);
        release_mem(&m->dact[i]);
    }
    release_mem(&m->y);
    release_mem(&m->row_loss);
    release_mem(&m->row_correct);
    release_mem(&m->stats);
    release_mem(&m->perm);
    for (int i = 0; i < K_COUNT; i++)
        if (m->k[i])
            clReleaseKernel(m->k[i]);
    if (m->program)
        clReleaseProgram(m->program);
    free(m);
}

const mlp_flat *mlp_get_flat(const mlp *m) { return &m->flat; }

void mlp_flat_descs(const mlp *m, clopt_param_desc *weights, clopt_param_desc *biases)
{
    for (size_t i = 0; i < m->cfg.nlayers; i++) {
        clopt_param_desc *w = &weights[i], *b = &biases[i];
        memset(w, 0, sizeof *w);
        memset(b, 0, sizeof *b);
        const int p16 = m->cfg.param_dtype != CLOPT_DTYPE_F32;
        w->param = (clopt_tensor){p16 ? m->flat.params16 : m->flat.params,
                                  m->flat.weight_offset[i]};
        w->param_dtype = b->param_dtype = m->cfg.param_dtype;
        w->grad = (clopt_tensor){m->flat.grads, m->flat.weight_offset[i]};
        w->ndim = 2;
        w->shape[0] = m->cfg.dims[i + 1];
        w->shape[1] = m->cfg.dims[i];
        b->param = (clopt_tensor){p16 ? m->flat.params16 : m->flat.params,
                                  m->flat.bias_offset[i]};
        b->grad = (clopt_tensor){m->flat.grads, m->flat.bias_offset[i]};
        b->ndim = 1;
        b->shape[0] = m->cfg.dims[i + 1];
    }
}

void mlp_set_normalization(mlp *m, double mean, double std)
{
    m->mean = (float)mean;
    m->inv_std = (float)(1.0 / std);
}

static int check_layer(mlp *m, size_t l)
{
    return l < m->cfg.nlayers ? 0 : mlp_fail(m, "layer %zu out of range", l);
}

static int read_pair(mlp *m, cl_mem a, cl_mem b, size_t l, float *ha, float *hb)
{
    const size_t wn = m->cfg.dims[l + 1] * m->cfg.dims[l], bn = m->cfg.dims[l + 1];
    cl_int e = CL_SUCCESS;
    if (ha)
        e = clEnqueueReadBuffer(m->queue, a, CL_TRUE, 0, wn * sizeof(float), ha, 0, NULL, NULL);
    if (e == CL_SUCCESS && hb)
        e = clEnqueueReadBuffer(m->queue, b, CL_TRUE, 0, bn * sizeof(float), hb, 0, NULL, NULL);
    return e == CL_SUCCESS ? 0 : mlp_fail_cl(m, e, "clEnqueueReadBuffer");
}

int mlp_get_layer(mlp *m, size_t l, float *w, float *b)
{
    return check_layer(m, l) ? -1 : read_pair(m, m->w[l], m->b[l], l, w, b);
}

int mlp_get_grads(mlp *m, size_t l, float *gw, float *gb)
{
    return check_layer(m, l) ? -1 : read_pair(m, m->gw[l], m->gb[l], l, gw, gb);
}

/* 16-bit storage: θ of layer l from its float32 copy (to_16: rounded to nearest even), or the
   float32 copy from θ (exact). Enqueued on the model's queue. */
static int convert_layer(mlp *m, size_t l, int to_16)
{
    const size_t n[2] = {m->cfg.dims[l + 1] * m->cfg.dims[l], m->cfg.dims[l + 1]};
    const cl_mem f32[2] = {m->w[l], m->b[l]};
    const size_t at[2] = {m->flat.weight_offset[l], m->flat.bias_offset[l]};
    const clopt_dtype t = m->cfg.param_dtype;
    for (int i = 0; i < 2; i++) {
        const clopt_tensor a = {f32[i], 0}, h = {m->flat.params16, at[i]};
        const clopt_status s =
            to_16 ? clopt_enqueue_convert(m->ctx, m->queue, h, t, a, CLOPT_DTYPE_F32, n[i], 0, 0,
                                          0, 0, 0, NULL, NULL)
                  : clopt_enqueue_convert(m->ctx, m->queue, a, CLOPT_DTYPE_F32, h, t, n[i], 0, 0,
                                          0, 0, 0, NULL, NULL);
        if (s != CLOPT_SUCCESS)
            return mlp_fail(m, "clopt_enqueue_convert: %s (%s)", clopt_status_str(s),
                        clopt_ctx_last_error(m->ctx));
    }
    return 0;
}

/* After an optimizer step: the float32 copies of every layer from the 16-bit θ. */
int mlp_sync_weights(mlp *m)
{
    if (m->cfg.param_dtype == CLOPT_DTYPE_F32)
        return 0;
    for (size_t l = 0; l < m->cfg.nlayers; l++)
        if (convert_layer(m, l, 0))
            return -1;
    return 0;
}

int mlp_set_layer(mlp *m, size_t l, const float *w, const float *b)
{
    if (check_layer(m, l))
        return -1;
    const size_t wn = m->cfg.dims[l + 1] * m->cfg.dims[l], bn = m->cfg.dims[l + 1];
    cl_int e = CL_SUCCESS;
    if (w)
        e = clEnqueueWriteBuffer(m->queue, m->w[l], CL_TRUE, 0, wn * sizeof(float), w, 0, NULL,
                                 NULL);
    if (e == CL_SUCCESS && b)
        e = clEnqueueWriteBuffer(m->queue, m->b[l], CL_TRUE, 0, bn * sizeof(float), b, 0, NULL,
                                 NULL);
    if (e != CL_SUCCESS)
        return mlp_fail_cl(m, e, "clEnqueueWriteBuffer");
    if (m->cfg.param_dtype == CLOPT_DTYPE_F32)
        return 0;
    /* θ rounded to its storage, and the float32 copy the passes read set to exactly θ */
    if (convert_layer(m, l, 1) || convert_layer(m, l, 0))
        return -1;
    e = clFinish(m->queue);
    return e == CL_SUCCESS ? 0 : mlp_fail_cl(m, e, "clFinish");
}

int mlp_init_he(mlp *m, uint64_t seed)
{
    mlp_rng r;
    mlp_rng_seed(&r, seed);
    int rc = 0;
    for (size_t l = 0; rc == 0 && l < m->cfg.nlayers; l++) {
        const size_t in = m->cfg.dims[l], outd = m->cfg.dims[l + 1];
        float *w = malloc(in * outd * sizeof *w), *b = calloc(outd, sizeof *b);
        if (!w || !b) {
            free(w);
            free(b);
            return mlp_fail(m, "out of memory");
        }
        const double sd = sqrt(2.0 / (double)in);
        for (size_t i = 0; i < in * outd; i++)
            w[i] = (float)(sd * mlp_rng_normal(&r));
        rc = mlp_set_layer(m, l, w, b);
        free(w);
        free(b);
    }
    return rc;
}

int mlp_upload(mlp *m, const mlp_dataset *d, mlp_device_data *out)
{
    memset(out, 0, sizeof *out);
    if (!d || d->n == 0 || d->dim != m->cfg.dims[0])
        return mlp_fail(m, "dataset of %zu images of %zu values for a %zu-input model",
                    d ? d->n : 0, d ? d->dim : 0, m->cfg.dims[0]);
    cl_int e = CL_SUCCESS;
    out->pixels = clCreateBuffer(m->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                 d->n * d->dim, d->pixels, &e);
    if (e == CL_SUCCESS)
        out->labels = clCreateBuffer(m->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, d->n,
                                     d->labels, &e);
    if (e != CL_SUCCESS) {
        mlp_device_data_free(out);
        return mlp_fail_cl(m, e, "clCreateBuffer (dataset)");
    }
    out->n = d->n;
    out->dim = d->dim;
    return 0;
}

void mlp_device_data_free(mlp_device_data *d)
{
    if (!d)
        return;
    release_mem(&d->pixels);
    release_mem(&d->labels);
    d->n = d->dim = 0;
}

/* ---- device work ---------------------------------------------------------------------- */

/* Every launch uses a fixed work-group size (the global size rounded up; the kernels check
   their bounds), so PoCL compiles each kernel once instead of once per batch shape. */
static int launch(mlp *m, int k, size_t items)
{
    if (items == 0)
        return 0;
    const size_t local = items == 1 ? 1 : 64, global = (items + local - 1) / local * local;
    const cl_int e = clEnqueueNDRangeKernel(m->queue, m->k[k], 1, NULL, &global, &local, 0,
                                            NULL, NULL);
    return e == CL_SUCCESS ? 0 : mlp_fail_cl(m, e, KERNEL_NAMES[k]);
}

#define SET_ARG(m, kern, i, v)                                                            \
    do {                                                                                  \
        const cl_int e_ = clSetKernelArg((m)->k[kern], (i), sizeof(v), &(v));             \
        if (e_ != CL_SUCCESS)                                                             \
            return mlp_fail_cl((m), e_, "clSetKernelArg");                                    \
    } while (0)

/* C[m x n] = op(A) op(B), row-major, beta 0, on the context's queue. */
static int gemm(mlp *m, int ta, int tb, size_t M, size_t N, size_t K, cl_mem a, size_t lda,
                cl_mem b, size_t ldb, cl_mem c, size_t ldc)
{
    cl_command_queue q = m->queue;
    const CLBlastStatusCode s = CLBlastSgemm(
        CLBlastLayoutRowMajor, ta ? CLBlastTransposeYes : CLBlastTransposeNo,
        tb ? CLBlastTransposeYes : CLBlastTransposeNo, M, N, K, 1.0f, a, 0, lda, b, 0, ldb, 0.0f,
        c, 0, ldc, &q, NULL);
    if (s != CLBlastSuccess)
        return mlp_fail(m, "CLBlastSgemm(%zu x %zu x %zu) failed: CLBlast status %d", M, N, K,
                    (int)s);
    return 0;
}

/* Grow the stats buffer to `slots` slots, keeping what the old one holds. */
int mlp_ensure_stats(mlp *m, size_t slots)
{
    if (slots <= m->stats_slots)
        return 0;
    size_t want = m->stats_slots ? m->stats_slots : 64;
    while (want < slots)
        want *= 2;
    int ok = 1;
    cl_mem nb = new_buffer(m, 2 * want * sizeof(float), &ok);
    if (!ok)
        return -1;
    if (m->stats) {
        const cl_int e = clEnqueueCopyBuffer(m->queue, m->stats, nb, 0, 0,
                                             2 * m->stats_slots * sizeof(float), 0, NULL, NULL);
        if (e != CL_SUCCESS) {
            clReleaseMemObject(nb);
            return mlp_fail_cl(m, e, "clEnqueueCopyBuffer");
        }
    }
    release_mem(&m->stats);
    m->stats = nb;
    m->stats_slots = want;
    return 0;
}

int mlp_ensure_perm(mlp *m, size_t n)
{
    if (n <= m->perm_len)
        return 0;
    release_mem(&m->perm);
    m->perm_len = 0;
    int ok = 1;
    m->perm = new_buffer(m, n * sizeof(cl_int), &ok);
    if (!ok)
        return -1;
    m->perm_len = n;
    return 0;
}

int mlp_pass_gather(mlp *m, const mlp_device_data *d, int use_idx, size_t off, size_t rows)
{
    if (rows == 0 || rows > m->cfg.batch || off + rows > (use_idx ? m->perm_len : d->n))
        return mlp_fail(m, "batch of %zu rows at %zu (batch size %zu, %zu images)", rows, off,
                    m->cfg.batch, d->n);
    const cl_uint ui = (cl_uint)(use_idx != 0), uo = (cl_uint)off, ur = (cl_uint)rows,
                  ud = (cl_uint)d->dim;
    cl_mem idx = m->perm ? m->perm : m->y; /* any valid buffer when unused */
    SET_ARG(m, K_GATHER, 0, d->pixels);
    SET_ARG(m, K_GATHER, 1, d->labels);
    SET_ARG(m, K_GATHER, 2, idx);
    SET_ARG(m, K_GATHER, 3, ui);
    SET_ARG(m, K_GATHER, 4, uo);
    SET_ARG(m, K_GATHER, 5, ur);
    SET_ARG(m, K_GATHER, 6, ud);
    SET_ARG(m, K_GATHER, 7, m->mean);
    SET_ARG(m, K_GATHER, 8, m->inv_std);
    SET_ARG(m, K_GATHER, 9, m->act[0]);
    SET_ARG(m, K_GATHER, 10, m->y);
    m->last_rows = rows;
    return launch(m, K_GATHER, rows * d->dim);
}

int mlp_pass_forward(mlp *m, size_t rows)
{
    const size_t L = m->cfg.nlayers;
    for (size_t i = 0; i < L; i++) {
        const size_t in = m->cfg.dims[i], outd = m->cfg.dims[i + 1];
        if (gemm(m, 0, 1, rows, outd, in, m->act[i], in, m->w[i], in, m->act[i + 1], outd))
            return -1;
        const cl_uint ur = (cl_uint)rows, uc = (cl_uint)outd, relu = (cl_uint)(i + 1 < L);
        SET_ARG(m, K_BIAS_ACT, 0, m->act[i + 1]);
        SET_ARG(m, K_BIAS_ACT, 1, m->b[i]);
        SET_ARG(m, K_BIAS_ACT, 2, ur);
        SET_ARG(m, K_BIAS_ACT, 3, uc);
        SET_ARG(m, K_BIAS_ACT, 4, relu);
        if (launch(m, K_BIAS_ACT, rows * outd))
            return -1;
    }
    return 0;
}

/* Loss gradient of the logits (and per-row loss / correct); sample: Sophia's sampled labels.
   The gradient is that of the loss sum over the rows divided by denom (rows: the batch mean;
   data-parallel shares: see mlp_train_epoch_dp). */
int mlp_pass_loss(mlp *m, size_t rows, double denom, int sample, uint32_t seed)
{
    const size_t L = m->cfg.nlayers;
    const cl_uint ur = (cl_uint)rows, uc = (cl_uint)m->cfg.dims[L], us = (cl_uint)(sample != 0),
                  useed = (cl_uint)seed;
    const float scale = (float)(1.0 / denom);
    SET_ARG(m, K_SOFTMAX, 0, m->act[L]);
    SET_ARG(m, K_SOFTMAX, 1, m->y);
    SET_ARG(m, K_SOFTMAX, 2, ur);
    SET_ARG(m, K_SOFTMAX, 3, uc);
    SET_ARG(m, K_SOFTMAX, 4, scale);
    SET_ARG(m, K_SOFTMAX, 5, us);
    SET_ARG(m, K_SOFTMAX, 6, useed);
    SET_ARG(m, K_SOFTMAX, 7, m->dact[L]);
    SET_ARG(m, K_SOFTMAX, 8, m->row_loss);
    SET_ARG(m, K_SOFTMAX, 9, m->row_correct);
    return launch(m, K_SOFTMAX, rows);
}

int mlp_pass_stats(mlp *m, size_t rows, size_t slot)
{
    if (mlp_ensure_stats(m, slot + 1))
        return -1;
    const cl_uint ur = (cl_uint)rows, us = (cl_uint)slot;
    SET_ARG(m, K_STATS, 0, m->row_loss);
    SET_ARG(m, K_STATS, 1, m->row_correct);
    SET_ARG(m, K_STATS, 2, ur);
    SET_ARG(m, K_STATS, 3, us);
    SET_ARG(m, K_STATS, 4, m->stats);
    return launch(m, K_STATS, 1);
}

int mlp_pass_backward(mlp *m, size_t rows)
{
    const size_t L = m->cfg.nlayers;
    for (size_t i = L; i-- > 0;) {
        const size_t in = m->cfg.dims[i], outd = m->cfg.dims[i + 1];
        /* dW = dZᵀ A_prev: [out x rows] x [rows x in] */
        if (gemm(m, 1, 0, outd, in, rows, m->dact[i + 1], outd, m->act[i], in, m->gw[i], in))
            return -1;
        const cl_uint ur = (cl_uint)rows, uc = (cl_uint)outd;
        SET_ARG(m, K_COL_SUMS, 0, m->dact[i + 1]);
        SET_ARG(m, K_COL_SUMS, 1, ur);
        SET_ARG(m, K_COL_SUMS, 2, uc);
        SET_ARG(m, K_COL_SUMS, 3, m->gb[i]);
        if (launch(m, K_COL_SUMS, outd))
            return -1;
        if (i == 0)
            break;
        /* dA_prev = dZ W: [rows x out] x [out x in], then the ReLU mask of A_prev */
        if (gemm(m, 0, 0, rows, in, outd, m->dact[i + 1], outd, m->w[i], in, m->dact[i], in))
            return -1;
        const cl_uint un = (cl_uint)(rows * in);
        SET_ARG(m, K_RELU_BW, 0, m->dact[i]);
        SET_ARG(m, K_RELU_BW, 1, m->act[i]);
        SET_ARG(m, K_RELU_BW, 2, un);
        if (launch(m, K_RELU_BW, rows * in))
            return -1;
    }
    return 0;
}

int mlp_batch(mlp *m, const mlp_device_data *d, const int *idx, size_t off, size_t rows,
              int backward_pass, size_t slot)
{
    if (!d || !d->pixels)
        return mlp_fail(m, "mlp_batch: no data");
    if (idx) {
        if (rows == 0 || rows > m->cfg.batch)
            return mlp_fail(m, "batch of %zu rows (batch size %zu)", rows, m->cfg.batch);
        for (size_t r = 0; r < rows; r++)
            if (idx[r] < 0 || (size_t)idx[r] >= d->n)
                return mlp_fail(m, "index %d out of range (%zu images)", idx[r], d->n);
        if (mlp_ensure_perm(m, rows))
            return -1;
        const cl_int e = clEnqueueWriteBuffer(m->queue, m->perm, CL_TRUE, 0, rows * sizeof(cl_int),
                                              idx, 0, NULL, NULL);
        if (e != CL_SUCCESS)
            return mlp_fail_cl(m, e, "clEnqueueWriteBuffer (indices)");
    }
    if (mlp_pass_gather(m, d, idx != NULL, idx ? 0 : off, rows) || mlp_pass_forward(m, rows) ||
        mlp_pass_loss(m, rows, (double)rows, 0, 0) || mlp_pass_stats(m, rows, slot))
        return -1;
    return backward_pass ? mlp_pass_backward(m, rows) : 0;
}

int mlp_read_input(mlp *m, float *x, size_t rows)
{
    if (rows > m->last_rows)
        return mlp_fail(m, "the last batch had %zu rows, not %zu", m->last_rows, rows);
    const cl_int e = clEnqueueReadBuffer(m->queue, m->act[0], CL_TRUE, 0,
                                         rows * m->cfg.dims[0] * sizeof(float), x, 0, NULL, NULL);
    return e == CL_SUCCESS ? 0 : mlp_fail_cl(m, e, "clEnqueueReadBuffer (input)");
}

int mlp_read_stats(mlp *m, size_t first, size_t count, float *out)
{
    if (count == 0)
        return 0;
    if (first + count > m->stats_slots)
        return mlp_fail(m, "stats slots %zu..%zu beyond the %zu written", first, first + count - 1,
                    m->stats_slots);
    const cl_int e = clEnqueueReadBuffer(m->queue, m->stats, CL_TRUE, 2 * first * sizeof(float),
                                         2 * count * sizeof(float), out, 0, NULL, NULL);
    return e == CL_SUCCESS ? 0 : mlp_fail_cl(m, e, "clEnqueueReadBuffer (stats)");
}
