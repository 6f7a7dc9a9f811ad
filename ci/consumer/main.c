/* SPDX-License-Identifier: MIT */
/* Smallest real use of an installed clopt: one AdamW step on the default device, checked
 * against the closed form of a first Adam step (θ - lr·sign(g) for |g| >> eps). */
#include <clopt.h>
#include <math.h>
#include <stdio.h>

int main(void)
{
    clopt_ctx *ctx = NULL;
    clopt_status s = clopt_ctx_create(&ctx);
    if (s != CLOPT_SUCCESS) {
        fprintf(stderr, "clopt_ctx_create: %s\n", clopt_status_str(s));
        return 1;
    }
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {1, -1, 2, -2, 3, -3, 4, -4}, zero[8] = {0};
    cl_context cl = clopt_ctx_cl_context(ctx);
    cl_mem bp = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof p, p, NULL);
    cl_mem bg = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof g, g, NULL);
    cl_mem bm = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zero, zero, NULL);
    cl_mem bv = clCreateBuffer(cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zero, zero, NULL);
    clopt_hparams hp;
    clopt_hparams_default(CLOPT_ADAMW, &hp);
    hp.weight_decay = 0;
    clopt_step_args a;
    clopt_step_args_init(&a);
    a.param = (clopt_tensor){bp, 0};
    a.grad = (clopt_tensor){bg, 0};
    a.state[0] = (clopt_tensor){bm, 0};
    a.state[1] = (clopt_tensor){bv, 0};
    s = clopt_enqueue_adamw(ctx, NULL, &hp, &a, 8, 1, 0, NULL, NULL);
    float out[8];
    clEnqueueReadBuffer(clopt_ctx_cl_queue(ctx), bp, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL);
    int bad = s != CLOPT_SUCCESS;
    for (int i = 0; i < 8; i++)
        bad |= fabsf(out[i] - (p[i] - 1e-3f * (g[i] > 0 ? 1.0f : -1.0f))) > 1e-6f;
    printf("consumer: %s on %s\n", bad ? "FAILED" : "ok", clopt_ctx_device_name(ctx));
    clReleaseMemObject(bp);
    clReleaseMemObject(bg);
    clReleaseMemObject(bm);
    clReleaseMemObject(bv);
    clopt_ctx_destroy(ctx);
    return bad;
}
