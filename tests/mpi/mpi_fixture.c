/* SPDX-License-Identifier: MIT */
#include "mpi_fixture.h"

#include <string.h>

int fx_rank, fx_size;
clopt_ctx *fx_ctx;

void fx_init(int *argc, char ***argv)
{
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &fx_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &fx_size);
    char why[512];
    const clopt_status s = clopt_ctx_create_device_ex(NULL, &fx_ctx, why, sizeof why);
    CHECK(s == CLOPT_SUCCESS, "no OpenCL device: %s", why);
}

int fx_finish(const char *name)
{
    clopt_ctx_destroy(fx_ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    if (fx_rank == 0)
        printf("%s (%d ranks): ok\n", name, fx_size);
    MPI_Finalize();
    return 0;
}

static void finish_layout(fx_layout *L)
{
    size_t p = 5, g = 2;
    L->total = 0;
    for (size_t i = 0; i < L->nt; i++) {
        size_t n = 1;
        for (size_t k = 0; k < L->ndim[i]; k++)
            n *= L->shape[i][k];
        L->n[i] = n;
        L->poff[i] = p;
        L->goff[i] = g;
        p += n + 3;
        g += n;
        L->total += n;
    }
    L->plen = p;
    L->glen = g + 1;
}

void fx_layout_main(fx_layout *L)
{
    static const size_t nd[] = {2, 1, 3, 1, 1};
    static const size_t sh[][3] = {{3, 5, 0}, {7, 0, 0}, {2, 2, 3}, {1, 0, 0}, {11, 0, 0}};
    memset(L, 0, sizeof *L);
    L->nt = 5;
    for (size_t i = 0; i < L->nt; i++) {
        L->ndim[i] = nd[i];
        memcpy(L->shape[i], sh[i], sizeof sh[i]);
    }
    finish_layout(L);
}

void fx_layout_vector(fx_layout *L, size_t n)
{
    memset(L, 0, sizeof *L);
    L->nt = 1;
    L->ndim[0] = 1;
    L->shape[0][0] = n;
    finish_layout(L);
}

void fx_range_group(const fx_layout *L, cl_mem p, cl_mem g, clopt_param_desc *d,
                    clopt_range_group *rg)
{
    for (size_t i = 0; i < L->nt; i++) {
        clopt_param_desc_init(&d[i]);
        d[i].param = (clopt_tensor){p, L->poff[i]};
        d[i].grad = (clopt_tensor){g, L->goff[i]};
        d[i].ndim = L->ndim[i];
        for (size_t k = 0; k < L->ndim[i]; k++)
            d[i].shape[k] = L->shape[i][k];
    }
    clopt_range_group_init(rg);
    rg->ntensors = L->nt;
    rg->tensors = d;
}

cl_mem fx_buffer(size_t n, float fill)
{
    cl_int e;
    cl_mem b = clCreateBuffer(clopt_ctx_cl_context(fx_ctx), CL_MEM_READ_WRITE, n * sizeof(float),
                              NULL, &e);
    CHECK(b != NULL, "clCreateBuffer: %d", (int)e);
    float *h = malloc(n * sizeof *h);
    CHECK(h != NULL, "malloc");
    for (size_t i = 0; i < n; i++)
        h[i] = fill;
    fx_write(b, h, n);
    free(h);
    return b;
}

void fx_write(cl_mem b, const float *host, size_t n)
{
    const cl_int e = clEnqueueWriteBuffer(clopt_ctx_cl_queue(fx_ctx), b, CL_TRUE, 0,
                                          n * sizeof(float), host, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueWriteBuffer: %d", (int)e);
}

void fx_read(cl_mem b, float *host, size_t n)
{
    const cl_int e = clEnqueueReadBuffer(clopt_ctx_cl_queue(fx_ctx), b, CL_TRUE, 0,
                                         n * sizeof(float), host, 0, NULL, NULL);
    CHECK(e == CL_SUCCESS, "clEnqueueReadBuffer: %d", (int)e);
}

void fx_scatter(const fx_layout *L, int grad, cl_mem b, const float *flat)
{
    size_t at = 0;
    for (size_t i = 0; i < L->nt; i++) {
        const size_t off = grad ? L->goff[i] : L->poff[i];
        const cl_int e =
            clEnqueueWriteBuffer(clopt_ctx_cl_queue(fx_ctx), b, CL_TRUE, off * sizeof(float),
                                 L->n[i] * sizeof(float), flat + at, 0, NULL, NULL);
        CHECK(e == CL_SUCCESS, "clEnqueueWriteBuffer: %d", (int)e);
        at += L->n[i];
    }
}

float fx_val(unsigned seed, size_t i)
{
    uint64_t x = (uint64_t)seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull + 1;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return (float)((double)(x >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

clopt_optimizer *fx_reference(clopt_rule rule, const clopt_hparams *hp, const fx_layout *L,
                              cl_mem p, cl_mem g)
{
    clopt_optimizer *o = NULL;
    CHECK_OK(clopt_optimizer_create(fx_ctx, rule, hp, &o));
    clopt_param_desc d[FX_MAX_T];
    clopt_range_group rg;
    fx_range_group(L, p, g, d, &rg);
    const clopt_status s = clopt_optimizer_add_range_group(o, hp, &rg, NULL, NULL);
    CHECK(s == CLOPT_SUCCESS, "reference range group: %s", clopt_ctx_last_error(fx_ctx));
    return o;
}
