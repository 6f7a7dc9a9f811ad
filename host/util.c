/* SPDX-License-Identifier: MIT */
/* Argument checks and the element-wise launch shared by every op. */
#include "internal.h"
#include "q8_table.h"

#include <math.h>

#include <stdlib.h>
#include <string.h>

char *clopt_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

uint64_t clopt_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void arg_set(clopt_args *a, size_t size, const void *value)
{
    if (a->err == CL_SUCCESS)
        a->err = clSetKernelArg(a->k, a->i, size, value);
    a->i++;
}

void clopt_arg_mem(clopt_args *a, cl_mem m) { arg_set(a, sizeof m, &m); }
void clopt_arg_ulong(clopt_args *a, cl_ulong v) { arg_set(a, sizeof v, &v); }
void clopt_arg_float(clopt_args *a, float v) { arg_set(a, sizeof v, &v); }
void clopt_arg_int(clopt_args *a, cl_int v) { arg_set(a, sizeof v, &v); }

void clopt_arg_tensor(clopt_args *a, clopt_tensor t)
{
    clopt_arg_mem(a, t.buffer);
    clopt_arg_ulong(a, t.offset);
}

/* x rounded up to a multiple of local (x itself for local 0) */
static size_t round_up(size_t x, size_t local)
{
    return local ? (x + local - 1) / local * local : x;
}

/* The work-group size to launch k with: want, halved until the kernel runs it (its kernels
   check their bounds, so the global size is rounded up to it); 0 (the runtime's choice)
   for want 0 or a failed query. Without a local size the runtime may pick any divisor of
   the global size, 1 for a prime one. */
static size_t fitted_local(clopt_ctx *ctx, cl_kernel k, size_t want)
{
    size_t kmax = 0;
    if (!want || clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof kmax, &kmax, NULL) != CL_SUCCESS ||
        kmax == 0)
        return 0;
    while (want > kmax)
        want /= 2;
    return want;
}

clopt_status clopt_launch_items(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                size_t count, cl_uint num_wait, const cl_event *wait_list,
                                cl_event *event)
{
    /* work-groups of 64 */
    size_t local = fitted_local(ctx, k, count > 1 ? 64 : 1);
    const size_t global = round_up(count, local);
    if (global > CLOPT_MAX_ITEMS)
        return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                          "a launch of %zu work-items, over 2^31 - 1 (GPU drivers alias or "
                          "refuse larger launches)",
                          count);
    cl_int err = clEnqueueNDRangeKernel(queue, k, 1, NULL, &global, local ? &local : NULL,
                                        num_wait, wait_list, event);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "clEnqueueNDRangeKernel");
}

clopt_status clopt_check_work_group(clopt_ctx *ctx, cl_kernel k, size_t local)
{
    size_t kmax = 0;
    if (local <= 1 ||
        clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax, &kmax,
                                 NULL) != CL_SUCCESS ||
        kmax == 0 || local <= kmax)
        return CLOPT_SUCCESS; /* a failed query: the launch says what is wrong */
    size_t fit = 1;
    while (2 * fit <= kmax)
        fit *= 2;
    return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                      "a reduction kernel runs at most %zu work-items per work-group on this "
                      "device and the tuning's reduce_local is %zu: set "
                      "clopt_tuning.reduce_local to %zu or less (clopt_ctx_set_tuning)",
                      kmax, local, fit);
}

clopt_status clopt_launch_groups(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                 size_t groups, unsigned local, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event)
{
    size_t l = local ? local : 1, global = groups * l;
    cl_int err = clEnqueueNDRangeKernel(queue, k, 1, NULL, &global, &l, num_wait, wait_list,
                                        event);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "clEnqueueNDRangeKernel");
}

clopt_status clopt_check_tensor(clopt_ctx *ctx, const char *what, clopt_tensor t, size_t n)
{
    return clopt_check_tensor_of(ctx, what, t, n, sizeof(float));
}

clopt_status clopt_check_tensor_of(clopt_ctx *ctx, const char *what, clopt_tensor t, size_t n,
                                   size_t esize)
{
    if (!t.buffer)
        return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "%s: buffer is NULL", what);
    size_t bytes = 0;
    cl_context owner = NULL;
    cl_int err = clGetMemObjectInfo(t.buffer, CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(t.buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err != CL_SUCCESS)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "%s: not a valid cl_mem (%d)", what,
                          (int)err);
    if (owner != ctx->context)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "%s: buffer belongs to another cl_context", what);
    size_t elems = bytes / esize;
    if (t.offset > elems || n > elems - t.offset)
        return clopt_fail(ctx, CLOPT_ERR_OUT_OF_BOUNDS,
                          "%s: offset %zu + n %zu elements runs past the buffer (%zu %s)",
                          what, t.offset, n, elems,
                          esize == sizeof(float) ? "floats" : "16-bit elements");
    return CLOPT_SUCCESS;
}

static int span_cmp(const void *a, const void *b)
{
    const clopt_span *x = a, *y = b;
    if (x->buffer != y->buffer)
        return (uintptr_t)x->buffer < (uintptr_t)y->buffer ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

cl_mem clopt_mem_root(cl_mem m, size_t *origin)
{
    cl_mem parent = NULL;
    *origin = 0;
    if (m &&
        clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) ==
            CL_SUCCESS &&
        parent &&
        clGetMemObjectInfo(m, CL_MEM_OFFSET, sizeof *origin, origin, NULL) == CL_SUCCESS)
        return parent;
    *origin = 0;
    return m;
}

clopt_status clopt_check_disjoint(clopt_ctx *ctx, clopt_span *s, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        size_t origin;
        s[i].buffer = clopt_mem_root(s[i].buffer, &origin);
        s[i].lo += origin;
        s[i].hi += origin;
    }
    qsort(s, count, sizeof *s, span_cmp);
    for (size_t i = 1; i < count; i++) {
        const clopt_span *a = &s[i], *b = &s[i - 1];
        if (a->buffer != b->buffer || a->lo >= b->hi)
            continue;
        if (a->tensor == SIZE_MAX) /* one op's arguments */
            return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                              "%s and %s overlap (bytes [%zu, %zu) and [%zu, %zu) of one buffer)",
                              b->what, a->what, b->lo, b->hi, a->lo, a->hi);
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "the %s range of tensor %zu overlaps the %s range of tensor %zu "
                          "(bytes [%zu, %zu) and [%zu, %zu) of one buffer)",
                          a->what, a->tensor, b->what, b->tensor, a->lo, a->hi, b->lo, b->hi);
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_check_queue(clopt_ctx *ctx, cl_command_queue queue)
{
    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (err != CL_SUCCESS)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT, "queue: not a valid command queue");
    if (qctx != ctx->context || qdev != ctx->device)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "queue: belongs to another context or device than the clopt_ctx");
    return CLOPT_SUCCESS;
}

clopt_status clopt_check_wait_list(clopt_ctx *ctx, cl_uint num_wait, const cl_event *wait_list)
{
    if ((num_wait > 0) != (wait_list != NULL))
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "wait list: num_wait and wait_list must be both zero or both set");
    for (cl_uint i = 0; i < num_wait; i++) {
        if (!wait_list[i])
            return clopt_fail(ctx, CLOPT_ERR_NULL_ARGUMENT, "wait list: event %u is NULL", i);
        /* checked here, not by the first enqueue: a step then fails before anything runs
           with the documented status (CL_INVALID_CONTEXT from its start otherwise) */
        cl_context owner = NULL;
        if (clGetEventInfo(wait_list[i], CL_EVENT_CONTEXT, sizeof owner, &owner, NULL) !=
            CL_SUCCESS)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                              "wait list: event %u is not a valid event", i);
        if (owner != ctx->context)
            return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                              "wait list: event %u belongs to another cl_context", i);
    }
    return CLOPT_SUCCESS;
}

clopt_status clopt_check_struct_size(clopt_ctx *ctx, const void *s, size_t min, size_t known,
                                     const char *what, const char *init)
{
    size_t size;
    memcpy(&size, s, sizeof size);
    if (size < min || size > CLOPT_STRUCT_SIZE_MAX)
        return clopt_fail(ctx, CLOPT_ERR_INVALID_ARGUMENT,
                          "%s: struct_size %zu is no version's size (initialise it with %s)",
                          what, size, init);
    const unsigned char *extra = (const unsigned char *)s + known;
    for (size_t i = 0; i + known < size; i++)
        if (extra[i])
            return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                              "%s: a field past byte %zu is set; this library knows %zu bytes",
                              what, known + i, known);
    return CLOPT_SUCCESS;
}

cl_int clopt_fill(cl_command_queue q, cl_mem buf, const void *pattern, size_t psize,
                  size_t offset, size_t size)
{
    const size_t piece = CLOPT_FILL_PIECE; /* a multiple of every pattern size */
    cl_int err = CL_SUCCESS;
    for (size_t at = 0; err == CL_SUCCESS && at < size; at += piece)
        err = clEnqueueFillBuffer(q, buf, pattern, psize, offset + at,
                                  size - at < piece ? size - at : piece, 0, NULL, NULL);
    return err;
}

/* ceil(n / VW) vectors (the tail is one), ceil(vectors / IPW) items */
static size_t elementwise_items(size_t n, const clopt_tuning *t)
{
    const size_t vw = t->vector_width, ipw = clopt_tuning_ipw(t);
    const size_t vectors = n / vw + (n % vw ? 1 : 0);
    return vectors / ipw + (vectors % ipw ? 1 : 0);
}

/* The refusal of an element-wise launch over n elements of `items` work-items (rounded). */
static clopt_status too_many_items(clopt_ctx *ctx, size_t n, size_t items, const clopt_tuning *t)
{
    return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED,
                      "a launch over %zu elements takes %zu work-items with vector_width %u and "
                      "items_per_work_item %u, over 2^31 - 1 (GPU drivers alias or refuse "
                      "larger launches): use a range group (its launches are chunked), split "
                      "the tensor, or a tuning with more elements per work-item",
                      n, items, t->vector_width, (unsigned)clopt_tuning_ipw(t));
}

clopt_status clopt_check_items(clopt_ctx *ctx, size_t n, const clopt_tuning *t)
{
    const size_t items = round_up(elementwise_items(n, t), t->work_group_size);
    return items <= CLOPT_MAX_ITEMS ? CLOPT_SUCCESS : too_many_items(ctx, n, items, t);
}

clopt_status clopt_launch_elementwise(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                      size_t n, const clopt_tuning *t, cl_uint num_wait,
                                      const cl_event *wait_list, cl_event *event)
{
    /* One work-item per IPW vectors of VW elements; the n % VW tail counts as one more
       vector (kernels/common.cl). */
    /* the tuning's work-group size, or less for a kernel that runs fewer work-items */
    size_t local = fitted_local(ctx, k, t->work_group_size);
    size_t global = round_up(elementwise_items(n, t), local);
    if (global > CLOPT_MAX_ITEMS)
        return too_many_items(ctx, n, global, t);
    cl_int err = clEnqueueNDRangeKernel(queue, k, 1, NULL, &global, local ? &local : NULL,
                                        num_wait, wait_list, event);
    if (err != CL_SUCCESS)
        return clopt_fail_cl(ctx, err, "clEnqueueNDRangeKernel");
    return CLOPT_SUCCESS;
}

clopt_status clopt_launch_chunks(clopt_ctx *ctx, cl_command_queue queue, cl_kernel k,
                                 size_t nchunks, const clopt_tuning *t, cl_uint num_wait,
                                 const cl_event *wait_list, cl_event *event)
{
    size_t local = t->work_group_size ? t->work_group_size : 64, kmax = 0;
    if (clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax, &kmax,
                                 NULL) == CL_SUCCESS &&
        kmax > 0 && local > kmax)
        local = kmax;
    size_t global = nchunks * local;
    cl_int err = clEnqueueNDRangeKernel(queue, k, 1, NULL, &global, &local, num_wait, wait_list,
                                        event);
    return err == CL_SUCCESS ? CLOPT_SUCCESS : clopt_fail_cl(ctx, err, "clEnqueueNDRangeKernel");
}

size_t clopt_dtype_size(clopt_dtype t)
{
    switch (t) {
    case CLOPT_DTYPE_F32: return 4;
    case CLOPT_DTYPE_F16:
    case CLOPT_DTYPE_BF16:
    case CLOPT_DTYPE_U16: return 2;
    case CLOPT_DTYPE_U8: return 1;
    default: return 0;
    }
}

const char *clopt_dtype_name(clopt_dtype t)
{
    static const char *names[] = {"f32", "f16", "bf16", "u16", "u8"};
    return (int)t >= 0 && (int)t < 5 ? names[t] : NULL;
}

/* bitsandbytes' create_dynamic_map(signed, max_exponent_bits 7, total_bits 8): for i = 0..6
   the midpoints of linspace(0.1, 1, k + 1) (k = 2^i signed, 2^(i+1) unsigned) times
   10^(i-6), mirrored when signed, plus 0 and 1, sorted. */
static int cmp_float(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void clopt_q8_map(int signed_map, float out[256])
{
    if (!out)
        return;
    size_t k = 0;
    for (int i = 0; i < 7; i++) {
        const int items = signed_map ? 1 << i : 1 << (i + 1);
        const double scale = pow(10.0, (double)(i - 6));
        for (int j = 0; j < items; j++) {
            const double lo = 0.1 + 0.9 * (double)j / items, hi = 0.1 + 0.9 * (double)(j + 1) / items;
            const double mean = (lo + hi) / 2.0;
            out[k++] = (float)(scale * mean);
            if (signed_map)
                out[k++] = (float)(-scale * mean);
        }
    }
    out[k++] = 0.0f;
    out[k++] = 1.0f;
    qsort(out, k, sizeof out[0], cmp_float);
}

clopt_status clopt_ctx_qmap(clopt_ctx *ctx, cl_mem *out)
{
    if (!ctx->qmap) {
        const size_t words = 512 + 3 * (size_t)Q8_TN;
        uint32_t *buf = malloc(words * sizeof *buf);
        if (!buf)
            return clopt_fail(ctx, CLOPT_ERR_OUT_OF_MEMORY, "the 8-bit state maps");
        float map[512];
        clopt_q8_map(1, map);
        clopt_q8_map(0, map + 256);
        memcpy(buf, map, sizeof map);
        if (clopt_q8_code_table(map, buf + 512) != 0) {
            free(buf);
            return clopt_fail(ctx, CLOPT_ERR_UNSUPPORTED, "the 8-bit code table: a bucket with two "
                              "changes of code");
        }
        cl_int err = CL_SUCCESS;
        cl_mem m = clCreateBuffer(ctx->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                  words * sizeof *buf, buf, &err);
        free(buf);
        if (!m)
            return clopt_fail_cl(ctx, err, "the 8-bit state maps");
        ctx->qmap = m;
    }
    *out = ctx->qmap;
    return CLOPT_SUCCESS;
}
