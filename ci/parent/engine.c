/* SPDX-License-Identifier: MIT */
/* The parent's own (static) library: one SGD step through clopt's op level. */
#include "engine.h"

#include <clopt.h>

int engine_sgd_step(float *out, float *param, const float *grad, size_t n)
{
    clopt_ctx *ctx = NULL;
    if (clopt_ctx_create(&ctx) != CLOPT_SUCCESS)
        return -1;
    cl_context cl = clopt_ctx_cl_context(ctx);
    cl_int err = CL_SUCCESS;
    cl_mem bp = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * sizeof *param,
                               param, &err);
    cl_mem bg = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, n * sizeof *grad,
                               (void *)grad, &err);
    int rc = -1;
    if (bp && bg) {
        clopt_hparams hp;
        clopt_hparams_default(CLOPT_SGD, &hp);
        hp.lr = 0.5;
        clopt_step_args a;
        clopt_step_args_init(&a);
        a.param = (clopt_tensor){bp, 0};
        a.grad = (clopt_tensor){bg, 0};
        if (clopt_enqueue_step(ctx, NULL, CLOPT_SGD, &hp, &a, n, 1, 0, NULL, NULL) ==
                CLOPT_SUCCESS &&
            clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), bp, CL_TRUE, 0, n * sizeof *out, out, 0,
                                NULL, NULL) == CL_SUCCESS)
            rc = 0;
    }
    if (bp)
        clReleaseMemObject(bp);
    if (bg)
        clReleaseMemObject(bg);
    clopt_ctx_destroy(ctx);
    return rc;
}
