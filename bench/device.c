/* SPDX-License-Identifier: MIT */
/* clopt-bench: the benchmark's own OpenCL kernels (bench/kernels, .cl files, embedded at build
 * time), compiled on the clopt context's cl_context/device with the SAME vector width,
 * vectors per work-item and work-group size the library uses (clopt_ctx_get_tuning), and
 * launched with the same geometry as the library's element-wise kernels, so that fused vs
 * unfused vs stream measures fusion only. */
#include "bench.h"
#include "embedded.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const clopt_embedded_file clopt_bench_sources[];
extern const size_t clopt_bench_sources_count;

#define MAX_STREAM_PROGRAMS 512

typedef struct stream_prog {
    char shape[160]; /* the build options of its shape: counts and element sizes */
    unsigned vw, ipw;
    cl_program program;
    cl_kernel kernel;
} stream_prog;

/* The operation kernels of one (vector width, vectors per work-item): programs are kept per
   tuning, as the tuning sweep switches between them in every repetition. */
#define MAX_OPS_PROGRAMS 64
typedef struct ops_prog {
    unsigned vw, ipw;
    cl_program program;
    cl_kernel ops[OP_KIND_COUNT];
} ops_prog;

struct bench_device {
    clopt_ctx *ctx;
    cl_context context;
    cl_device_id device;
    cl_command_queue queue;
    clopt_tuning tuning;
    ops_prog ops[MAX_OPS_PROGRAMS];
    size_t nops;
    stream_prog streams[MAX_STREAM_PROGRAMS];
    size_t nstreams;
    char error[4096];
};

unsigned bench_tuning_ipw(const clopt_tuning *t)
{
    return t->items_per_work_item ? t->items_per_work_item : 1;
}

static const clopt_embedded_file *find_source(const char *name)
{
    for (size_t i = 0; i < clopt_bench_sources_count; i++)
        if (strcmp(clopt_bench_sources[i].name, name) == 0)
            return &clopt_bench_sources[i];
    return NULL;
}

/* family.cl (after bench_common.cl) with tuning t and the options extra. */
static cl_program build(bench_device *bd, const clopt_tuning *t, const char *family,
                        const char *extra)
{
    const clopt_embedded_file *common = find_source("bench_common");
    const clopt_embedded_file *src = find_source(family);
    if (!common || !src) {
        snprintf(bd->error, sizeof bd->error, "no embedded kernel source %s.cl", family);
        return NULL;
    }
    /* the library's division and square root (host/program.c): on NVIDIA the default is
       approximate, which would favour the unfused chain */
    cl_device_fp_config fp = 0;
    const int cr = clGetDeviceInfo(bd->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp,
                                   NULL) == CL_SUCCESS &&
                   (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT);
    char options[320];
    snprintf(options, sizeof options, "-DVW=%u -DIPW=%u%s %s", t->vector_width,
             bench_tuning_ipw(t), cr ? " -cl-fp32-correctly-rounded-divide-sqrt" : "", extra);
    const char *texts[2] = {common->data, src->data};
    size_t lens[2] = {common->size, src->size};
    cl_int err = CL_SUCCESS;
    cl_program prog = clCreateProgramWithSource(bd->context, 2, texts, lens, &err);
    if (!prog) {
        snprintf(bd->error, sizeof bd->error, "clCreateProgramWithSource(%s): %d", family,
                 (int)err);
        return NULL;
    }
    err = clBuildProgram(prog, 1, &bd->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t len = 0;
        int off = snprintf(bd->error, sizeof bd->error, "building %s.cl (%s) failed: %d\n",
                           family, options, (int)err);
        if (clGetProgramBuildInfo(prog, bd->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) ==
                CL_SUCCESS &&
            off > 0 && (size_t)off < sizeof bd->error) {
            size_t room = sizeof bd->error - (size_t)off;
            char *log = malloc(len + 1);
            if (log && clGetProgramBuildInfo(prog, bd->device, CL_PROGRAM_BUILD_LOG, len, log,
                                             NULL) == CL_SUCCESS) {
                log[len] = '\0';
                snprintf(bd->error + off, room, "%s", log);
            }
            free(log);
        }
        clReleaseProgram(prog);
        return NULL;
    }
    return prog;
}

bench_device *bench_device_create(clopt_ctx *ctx)
{
    bench_device *bd = calloc(1, sizeof *bd);
    if (!bd)
        return NULL;
    bd->ctx = ctx;
    bd->context = clopt_ctx_cl_context(ctx);
    bd->device = clopt_ctx_cl_device(ctx);
    bd->queue = clopt_ctx_cl_queue(ctx);
    if (clopt_ctx_get_tuning(ctx, &bd->tuning) != CLOPT_SUCCESS) {
        free(bd);
        return NULL;
    }
    return bd;
}

void bench_device_destroy(bench_device *bd)
{
    if (!bd)
        return;
    for (size_t v = 0; v < bd->nops; v++) {
        for (size_t i = 0; i < OP_KIND_COUNT; i++)
            if (bd->ops[v].ops[i])
                clReleaseKernel(bd->ops[v].ops[i]);
        clReleaseProgram(bd->ops[v].program);
    }
    for (size_t i = 0; i < bd->nstreams; i++) {
        clReleaseKernel(bd->streams[i].kernel);
        clReleaseProgram(bd->streams[i].program);
    }
    free(bd);
}

unsigned bench_device_vector_width(const bench_device *bd) { return bd->tuning.vector_width; }
unsigned bench_device_items_per_work_item(const bench_device *bd)
{
    return bench_tuning_ipw(&bd->tuning);
}
size_t bench_device_work_group_size(const bench_device *bd) { return bd->tuning.work_group_size; }
const char *bench_device_error(const bench_device *bd) { return bd->error; }
void bench_device_set_tuning(bench_device *bd, const clopt_tuning *t) { bd->tuning = *t; }

/* The library's launch geometry (host/util.c clopt_launch_elementwise) with tuning t: one
   work-item per IPW vectors, the tail counting as one more vector; the tuned work-group size
   unless the kernel cannot take it. */
static cl_int launch(bench_device *bd, const clopt_tuning *t, cl_kernel k, size_t n,
                     cl_event *ev)
{
    size_t vw = t->vector_width, ipw = bench_tuning_ipw(t);
    size_t vectors = n / vw + (n % vw ? 1 : 0);
    size_t items = vectors / ipw + (vectors % ipw ? 1 : 0);
    size_t local = t->work_group_size;
    if (local) {
        size_t kmax = 0;
        if (clGetKernelWorkGroupInfo(k, bd->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax,
                                     &kmax, NULL) != CL_SUCCESS ||
            local > kmax)
            local = 0;
    }
    size_t global = local ? (items + local - 1) / local * local : items;
    cl_int err = clEnqueueNDRangeKernel(bd->queue, k, 1, NULL, &global, local ? &local : NULL,
                                        0, NULL, ev);
    if (err != CL_SUCCESS)
        snprintf(bd->error, sizeof bd->error, "clEnqueueNDRangeKernel: %d", (int)err);
    return err;
}

cl_int bench_enqueue_op(bench_device *bd, const bench_op *op, cl_mem const *slots, size_t n,
                        cl_event *ev)
{
    if ((unsigned)op->kind >= OP_KIND_COUNT) {
        snprintf(bd->error, sizeof bd->error, "bad operation kind %d", (int)op->kind);
        return CL_INVALID_VALUE;
    }
    const unsigned vw = bd->tuning.vector_width, ipw = bench_tuning_ipw(&bd->tuning);
    ops_prog *op_prog = NULL;
    for (size_t i = 0; i < bd->nops && !op_prog; i++)
        if (bd->ops[i].vw == vw && bd->ops[i].ipw == ipw)
            op_prog = &bd->ops[i];
    if (!op_prog) {
        if (bd->nops == MAX_OPS_PROGRAMS) {
            snprintf(bd->error, sizeof bd->error, "too many tunings");
            return CL_OUT_OF_RESOURCES;
        }
        cl_program prog = build(bd, &bd->tuning, "bench_ops", "");
        if (!prog)
            return CL_BUILD_PROGRAM_FAILURE;
        op_prog = &bd->ops[bd->nops++];
        *op_prog = (ops_prog){.vw = vw, .ipw = ipw, .program = prog};
    }
    cl_int err = CL_SUCCESS;
    cl_kernel k = op_prog->ops[op->kind];
    if (!k) {
        k = clCreateKernel(op_prog->program, bench_op_kernel(op->kind), &err);
        if (!k) {
            snprintf(bd->error, sizeof bd->error, "clCreateKernel(%s): %d",
                     bench_op_kernel(op->kind), (int)err);
            return err;
        }
        op_prog->ops[op->kind] = k;
    }
    cl_mem d = slots[op->d], x = slots[op->x];
    cl_mem y = op->y >= 0 ? slots[op->y] : x; /* unary: y is never read */
    cl_ulong nn = n;
    err = clSetKernelArg(k, 0, sizeof d, &d);
    err |= clSetKernelArg(k, 1, sizeof x, &x);
    err |= clSetKernelArg(k, 2, sizeof y, &y);
    err |= clSetKernelArg(k, 3, sizeof op->a, &op->a);
    err |= clSetKernelArg(k, 4, sizeof op->b, &op->b);
    err |= clSetKernelArg(k, 5, sizeof nn, &nn);
    if (err != CL_SUCCESS) {
        snprintf(bd->error, sizeof bd->error, "clSetKernelArg(%s) failed",
                 bench_op_kernel(op->kind));
        return CL_INVALID_KERNEL_ARGS;
    }
    return launch(bd, &bd->tuning, k, n, ev);
}

static unsigned elem_size(unsigned size) { return size ? size : 4u; }

double bench_stream_bytes(const bench_stream_arrays *a)
{
    double b = 0.0;
    for (size_t j = 0; j < a->nrw; j++)
        b += 2.0 * elem_size(a->rw_size[j]);
    for (size_t j = 0; j < a->nro; j++)
        b += elem_size(a->ro_size[j]);
    for (size_t j = 0; j < a->nwo; j++)
        b += elem_size(a->wo_size[j]);
    return b + (double)a->nab * 2.0 * sizeof(float) / BENCH_Q8_BLOCK;
}

/* -DNRW.. -DNAB and every array's -DT..: the element sizes of the arrays in use, 4 for the
   unused ones (never touched). */
static void stream_shape(const bench_stream_arrays *a, char *buf, size_t len)
{
    int off = snprintf(buf, len, "-DNRW=%zu -DNRO=%zu -DNWO=%zu -DNAB=%zu", a->nrw, a->nro,
                       a->nwo, a->nab);
    static const char *const cls[3] = {"W", "R", "O"};
    const size_t count[3] = {a->nrw, a->nro, a->nwo};
    const size_t cap[3] = {BENCH_STREAM_MAX_RW, BENCH_STREAM_MAX_RO, BENCH_STREAM_MAX_WO};
    const unsigned *size[3] = {a->rw_size, a->ro_size, a->wo_size};
    for (int c = 0; c < 3; c++)
        for (size_t j = 0; j < cap[c] && off > 0 && (size_t)off < len; j++)
            off += snprintf(buf + off, len - (size_t)off, " -DT%s%zu=%u", cls[c], j,
                            j < count[c] ? elem_size(size[c][j]) : 4u);
}

static stream_prog *stream_kernel(bench_device *bd, const clopt_tuning *t,
                                  const bench_stream_arrays *a)
{
    char shape[sizeof bd->streams[0].shape];
    stream_shape(a, shape, sizeof shape);
    for (size_t i = 0; i < bd->nstreams; i++)
        if (!strcmp(bd->streams[i].shape, shape) && bd->streams[i].vw == t->vector_width &&
            bd->streams[i].ipw == bench_tuning_ipw(t))
            return &bd->streams[i];
    if (bd->nstreams == MAX_STREAM_PROGRAMS) {
        snprintf(bd->error, sizeof bd->error, "too many stream kernel shapes");
        return NULL;
    }
    cl_program prog = build(bd, t, "bench_stream", shape);
    if (!prog)
        return NULL;
    cl_int err = CL_SUCCESS;
    cl_kernel k = clCreateKernel(prog, "bench_stream", &err);
    if (!k) {
        snprintf(bd->error, sizeof bd->error, "clCreateKernel(bench_stream): %d", (int)err);
        clReleaseProgram(prog);
        return NULL;
    }
    stream_prog *sp = &bd->streams[bd->nstreams++];
    snprintf(sp->shape, sizeof sp->shape, "%s", shape);
    sp->vw = t->vector_width;
    sp->ipw = bench_tuning_ipw(t);
    sp->program = prog;
    sp->kernel = k;
    return sp;
}

cl_int bench_enqueue_stream(bench_device *bd, const bench_stream_arrays *a, size_t n,
                            cl_event *ev)
{
    if (a->nrw < 1 || a->nrw > BENCH_STREAM_MAX_RW || a->nro > BENCH_STREAM_MAX_RO ||
        a->nwo > BENCH_STREAM_MAX_WO || a->nab > BENCH_STREAM_MAX_AB) {
        snprintf(bd->error, sizeof bd->error,
                 "stream kernel shape %zu read-write + %zu read-only + %zu write-only + %zu "
                 "absmax arrays not supported",
                 a->nrw, a->nro, a->nwo, a->nab);
        return CL_INVALID_VALUE;
    }
    /* absmax arrays: the geometry of the library's 8-bit kernels (host/rules.c
       clopt_plan_step): with one vector per work-item (a GPU's tuning) a work-group of
       256 / VW work-items per block, else one work-item per block */
    clopt_tuning t = bd->tuning;
    if (a->nab && bench_q8_group(&t)) {
        t.work_group_size = BENCH_Q8_BLOCK / t.vector_width;
    } else if (a->nab) {
        t.vector_width = BENCH_Q8_VW;
        t.items_per_work_item = BENCH_Q8_IPW;
    }
    stream_prog *sp = stream_kernel(bd, &t, a);
    if (!sp)
        return CL_BUILD_PROGRAM_FAILURE;
    cl_int err = CL_SUCCESS;
    cl_uint arg = 0;
    /* unused pointers: the first rw array (never touched) */
    for (size_t j = 0; j < BENCH_STREAM_MAX_RW; j++, arg++)
        err |= clSetKernelArg(sp->kernel, arg, sizeof(cl_mem), j < a->nrw ? &a->rw[j] : &a->rw[0]);
    for (size_t j = 0; j < BENCH_STREAM_MAX_RO; j++, arg++)
        err |= clSetKernelArg(sp->kernel, arg, sizeof(cl_mem), j < a->nro ? &a->ro[j] : &a->rw[0]);
    for (size_t j = 0; j < BENCH_STREAM_MAX_WO; j++, arg++)
        err |= clSetKernelArg(sp->kernel, arg, sizeof(cl_mem), j < a->nwo ? &a->wo[j] : &a->rw[0]);
    for (size_t j = 0; j < BENCH_STREAM_MAX_AB; j++, arg++)
        err |= clSetKernelArg(sp->kernel, arg, sizeof(cl_mem), j < a->nab ? &a->ab[j] : &a->rw[0]);
    const cl_uint zero = 0;
    err |= clSetKernelArg(sp->kernel, arg++, sizeof zero, &zero);
    cl_ulong nn = n;
    err |= clSetKernelArg(sp->kernel, arg, sizeof nn, &nn);
    if (err != CL_SUCCESS) {
        snprintf(bd->error, sizeof bd->error, "clSetKernelArg(bench_stream) failed");
        return CL_INVALID_KERNEL_ARGS;
    }
    return launch(bd, &t, sp->kernel, n, ev);
}
