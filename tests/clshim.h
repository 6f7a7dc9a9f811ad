/* SPDX-License-Identifier: MIT */
/*
 * clshim: an OpenCL interposer for the tests.
 *
 * tests/clshim.c defines functions named like the OpenCL API (clFinish,
 * clEnqueueNDRangeKernel, ...). Linked into a test executable that exports its symbols
 * (CMake ENABLE_EXPORTS, i.e. -rdynamic), the dynamic linker binds libclopt.so's calls to
 * them instead of the ICD loader's; each wrapper counts the call, may inject a fault, and
 * forwards to the real function found with dlsym(RTLD_NEXT, name) (or in libOpenCL.so.1).
 * With a static libclopt the library's references resolve to the wrappers at link time.
 * The test's own OpenCL calls go through the wrappers too: the shim only counts and injects
 * while enabled (clshim_enable), so a test turns it on around the library calls it studies.
 *
 * Calls made from inside a wrapper (the ICD loader calling the API by name) are forwarded
 * untouched. Counters are atomic: calls made by the runtime's threads while enabled (an event
 * callback releasing an event) are counted too, but the sweep counter (clshim_calls) and the
 * fault only concern the thread that last called clshim_enable(1).
 *
 * Every function the library's sources (host, .c files) call is wrapped, plus the ones a
 * step engine is likely to add (events, user events, callbacks, map/unmap, rect transfers,
 * barriers); clshim_wraps() tells whether a name is, so a test can check the library's
 * sources against the list.
 */
#ifndef CLOPT_TEST_CLSHIM_H
#define CLOPT_TEST_CLSHIM_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Count and inject only while enabled (off at start). Enabling makes the calling thread the
   one whose calls clshim_calls counts and the fault may hit. */
void clshim_enable(int on);
int clshim_enabled(void);

/* Zero every counter (calls, blocking calls, per function, objects) and disarm the fault. */
void clshim_reset(void);

/* 1 when `name` ("clFinish") is one of the wrapped functions. */
int clshim_wraps(const char *name);

/* Calls of one wrapped function while enabled, on any thread (0 for unknown names). */
uint64_t clshim_count(const char *name);

/* Blocking calls while enabled: clFinish, clWaitForEvents, and clEnqueueReadBuffer,
   clEnqueueWriteBuffer, clEnqueueReadBufferRect, clEnqueueWriteBufferRect and
   clEnqueueMapBuffer with blocking = CL_TRUE. (clGetEventInfo, clFlush and
   clBuildProgram are not counted here; clshim_builds counts program builds.) */
uint64_t clshim_blocking(void);
/* Program creations and builds while enabled: clCreateProgramWithSource,
   clCreateProgramWithBinary, clBuildProgram. */
uint64_t clshim_builds(void);
/* The largest size of a clEnqueueFillBuffer while enabled, in bytes. */
uint64_t clshim_max_fill(void);

/*
 * Fault injection. The sweep counts the FALLIBLE calls: every wrapped function except
 * clRetain*, clRelease* and clSetUserEventStatus. Those only fail on invalid arguments and
 * nothing can undo their failure: a release that did not happen leaks (the object counts
 * below need them to happen), a user event left unset stalls every command gated on it, so
 * the queue and the test would hang. The fallible calls are every create, build, enqueue,
 * wait, flush, finish, clSetKernelArg, clSetEventCallback and clGet*Info call, made while
 * enabled on the enabled thread.
 *
 * clshim_fail_nth(n, err): the n-th fallible call from now (n >= 1) returns err without
 * calling the real function (create functions and clEnqueueMapBuffer return NULL and store
 * err in *errcode_ret; no event is created). The fault fires once, then disarms.
 * n = 0 disarms. clshim_fault_fired() says whether it fired since it was armed and
 * clshim_fault_site() in which function ("" if not).
 */
void clshim_fail_nth(uint64_t n, cl_int err);
int clshim_fault_fired(void);
const char *clshim_fault_site(void);
/* Fallible calls made while enabled on the enabled thread since the last reset: run an
   operation once, read this, and sweep n = 1..clshim_calls() over every call site. */
uint64_t clshim_calls(void);
/* The function ("clSetKernelArg") of the i-th fallible call (1-based, as clshim_calls counts
   them) since the last reset; "" when there was no such call. */
const char *clshim_call_name(uint64_t i);

/* clGetKernelWorkGroupInfo(CL_KERNEL_WORK_GROUP_SIZE) reports at most cap (0: the real
   value), while enabled: a device whose kernels run fewer work-items per group. */
void clshim_cap_work_group(size_t cap);
/* clEnqueueNDRangeKernel calls without a local size (the runtime picks one: on a GPU possibly
   1 for an odd global size) while enabled since the last reset. */
uint64_t clshim_null_local(void);

/* Objects: references taken (create, or retain) and given back (release) while enabled.
   Events are counted when an enqueue (or clCreateUserEvent) returns one. A released cl_mem
   counts as a sub-buffer when the shim saw it created by clCreateSubBuffer. */
typedef enum clshim_obj {
    CLSHIM_BUFFER = 0,
    CLSHIM_SUBBUFFER,
    CLSHIM_EVENT,
    CLSHIM_KERNEL,
    CLSHIM_PROGRAM,
    CLSHIM_QUEUE,
    CLSHIM_CONTEXT,
    CLSHIM_DEVICE, /* clRetainDevice / clReleaseDevice */
    CLSHIM_NOBJ
} clshim_obj;
uint64_t clshim_created(clshim_obj kind);
uint64_t clshim_released(clshim_obj kind);
const char *clshim_obj_name(clshim_obj kind);

/* Every non-zero per-function counter and object counter, for failure messages. With the
   environment variable CLSHIM_TRACE set, every injected fault is also printed to stderr. */
void clshim_dump(FILE *out);

#endif
