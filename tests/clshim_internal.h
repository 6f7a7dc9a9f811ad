/* SPDX-License-Identifier: MIT */
/* The interposer's internals, shared by its two halves: tests/clshim.c (the state, the gate,
 * the counters and the public calls of clshim.h) and tests/clshim_wrap.c (one wrapper per
 * OpenCL function). Every wrapper runs
 *     gate g = clshim_enter_(F_name);   count the call, maybe hit the fault
 *     if (g.fail) return the error;     without calling the real function
 *     ... the real function, through REAL(name) ...
 * and forwards calls made from inside a wrapper (clshim_depth_ > 0) untouched. */
#ifndef CLOPT_TEST_CLSHIM_INTERNAL_H
#define CLOPT_TEST_CLSHIM_INTERNAL_H

#include "clshim.h"

#include <stdatomic.h>

/* X(name, fallible): every wrapped function. clRetain*, clRelease* and clSetUserEventStatus
   are not fallible (see clshim.h). */
#define CLSHIM_FUNCS(X)                                                                      \
    X(clGetPlatformIDs, 1)                                                                   \
    X(clGetPlatformInfo, 1)                                                                  \
    X(clGetDeviceIDs, 1)                                                                     \
    X(clGetDeviceInfo, 1)                                                                    \
    X(clRetainDevice, 0)                                                                     \
    X(clReleaseDevice, 0)                                                                    \
    X(clCreateContext, 1)                                                                    \
    X(clGetContextInfo, 1)                                                                   \
    X(clRetainContext, 0)                                                                    \
    X(clReleaseContext, 0)                                                                   \
    X(clCreateCommandQueue, 1)                                                               \
    X(clGetCommandQueueInfo, 1)                                                              \
    X(clRetainCommandQueue, 0)                                                               \
    X(clReleaseCommandQueue, 0)                                                              \
    X(clCreateBuffer, 1)                                                                     \
    X(clCreateSubBuffer, 1)                                                                  \
    X(clGetMemObjectInfo, 1)                                                                 \
    X(clRetainMemObject, 0)                                                                  \
    X(clReleaseMemObject, 0)                                                                 \
    X(clCreateProgramWithSource, 1)                                                          \
    X(clCreateProgramWithBinary, 1)                                                          \
    X(clBuildProgram, 1)                                                                     \
    X(clGetProgramInfo, 1)                                                                   \
    X(clGetProgramBuildInfo, 1)                                                              \
    X(clRetainProgram, 0)                                                                    \
    X(clReleaseProgram, 0)                                                                   \
    X(clCreateKernel, 1)                                                                     \
    X(clCreateKernelsInProgram, 1)                                                           \
    X(clSetKernelArg, 1)                                                                     \
    X(clGetKernelInfo, 1)                                                                    \
    X(clGetKernelWorkGroupInfo, 1)                                                           \
    X(clRetainKernel, 0)                                                                     \
    X(clReleaseKernel, 0)                                                                    \
    X(clWaitForEvents, 1)                                                                    \
    X(clGetEventInfo, 1)                                                                     \
    X(clGetEventProfilingInfo, 1)                                                            \
    X(clCreateUserEvent, 1)                                                                  \
    X(clSetUserEventStatus, 0)                                                               \
    X(clSetEventCallback, 1)                                                                 \
    X(clRetainEvent, 0)                                                                      \
    X(clReleaseEvent, 0)                                                                     \
    X(clFlush, 1)                                                                            \
    X(clFinish, 1)                                                                           \
    X(clEnqueueReadBuffer, 1)                                                                \
    X(clEnqueueReadBufferRect, 1)                                                            \
    X(clEnqueueWriteBuffer, 1)                                                               \
    X(clEnqueueWriteBufferRect, 1)                                                           \
    X(clEnqueueFillBuffer, 1)                                                                \
    X(clEnqueueCopyBuffer, 1)                                                                \
    X(clEnqueueCopyBufferRect, 1)                                                            \
    X(clEnqueueMapBuffer, 1)                                                                 \
    X(clEnqueueUnmapMemObject, 1)                                                            \
    X(clEnqueueNDRangeKernel, 1)                                                             \
    X(clEnqueueMarkerWithWaitList, 1)                                                        \
    X(clEnqueueBarrierWithWaitList, 1)

enum {
#define X_ENUM(name, fallible) F_##name,
    CLSHIM_FUNCS(X_ENUM)
#undef X_ENUM
        NFN
};

typedef struct gate {
    int count; /* the call is counted (enabled, not nested) */
    int fail;  /* return err without calling the real function */
    cl_int err;
} gate;

/* counting and the fault: see clshim.c */
gate clshim_enter_(int id);
/* the real function id, resolved past the shim (NULL when there is none) */
void *clshim_resolve_(int id);
extern _Thread_local int clshim_depth_;
extern atomic_uint_fast64_t clshim_n_blocking_, clshim_n_builds_, clshim_max_fill_;
extern atomic_uint_fast64_t clshim_obj_created_[CLSHIM_NOBJ], clshim_obj_released_[CLSHIM_NOBJ];
/* c += 1 when the call is counted */
void clshim_bump_(atomic_uint_fast64_t *c, const gate *g);
/* an event an enqueue returned */
void clshim_note_event_(const gate *g, cl_int r, const cl_event *event);
/* sub-buffers: seen created, forgotten, and the kind a released cl_mem counts as */
void clshim_forget_sub_(cl_mem m);
void clshim_remember_sub_(cl_mem m);
clshim_obj clshim_mem_kind_(cl_mem m);
/* clshim_cap_work_group's cap while enabled (0 otherwise) */
size_t clshim_wg_cap_(void);
/* clEnqueueNDRangeKernel's local size (NULL counted apart), while enabled. */
void clshim_note_local_(const size_t *local);

/* The real function `name`, as a pointer of its own type (through a union: ISO C has no
   conversion between object and function pointers). */
#define REAL(name)                                                                           \
    (((union { void *p; __typeof__(&name) f; }){.p = clshim_resolve_(F_##name)}).f)

#define ENTER(name)                                                                          \
    gate g = clshim_enter_(F_##name);                                                        \
    if (g.fail)                                                                              \
    return g.err
#define ENTER_CREATE(name)                                                                   \
    gate g = clshim_enter_(F_##name);                                                        \
    if (g.fail) {                                                                            \
        if (errcode_ret)                                                                     \
            *errcode_ret = g.err;                                                            \
        return NULL;                                                                         \
    }
/* Runs the real call with the nesting depth raised. */
#define FORWARD(var, name, ...)                                                              \
    clshim_depth_++;                                                                         \
    var = REAL(name)(__VA_ARGS__);                                                           \
    clshim_depth_--

#endif
