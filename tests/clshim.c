/* SPDX-License-Identifier: MIT */
/* The OpenCL interposer of the tests: see clshim.h. Every wrapper runs
 *     gate g = enter(F_name);          count the call, maybe hit the fault
 *     if (g.fail) return the error;    without calling the real function
 *     ... the real function, through real(F_name) ...
 * and forwards calls made from inside a wrapper (depth > 0) untouched. */
#define _GNU_SOURCE
#include "clshim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

static const struct {
    const char *name;
    int fallible;
} fn_info[NFN] = {
#define X_INFO(name, fallible) {#name, fallible},
    CLSHIM_FUNCS(X_INFO)
#undef X_INFO
};

/* ---- state ---------------------------------------------------------------------------- */

static atomic_int enabled;
static atomic_uint enable_gen;           /* bumped by clshim_enable(1) */
static _Thread_local unsigned my_gen;    /* == enable_gen on the enabled thread */
static _Thread_local int depth;          /* > 0 inside a wrapper */

static atomic_uint_fast64_t fn_count[NFN];
static atomic_uint_fast64_t n_calls, n_blocking, n_builds;
static atomic_uint_fast64_t obj_created[CLSHIM_NOBJ], obj_released[CLSHIM_NOBJ];

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t fault_left; /* 0: disarmed */
static cl_int fault_err;
static int fault_fired;
static const char *fault_site = "";
static size_t wg_cap; /* clshim_cap_work_group */

/* cl_mem handles seen created by clCreateSubBuffer (and not reused by clCreateBuffer since) */
static cl_mem *subs;
static size_t nsubs, cap_subs;

static _Atomic(void *) real_fn[NFN];

/* The function of every fallible call since the last reset (clshim_call_name), by id. */
static unsigned char *call_log;
static uint64_t call_log_len, call_log_cap;

/* ---- resolution ------------------------------------------------------------------------ */

static void *resolve(int id)
{
    void *p = atomic_load(&real_fn[id]);
    if (p)
        return p;
    p = dlsym(RTLD_NEXT, fn_info[id].name);
    if (!p) {
        /* the executable does not link the ICD loader itself (static libclopt with
           --as-needed): ask it directly */
        static void *icd;
        if (!icd)
            icd = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
        if (icd)
            p = dlsym(icd, fn_info[id].name);
    }
    if (!p) {
        fprintf(stderr, "clshim: cannot find the real %s\n", fn_info[id].name);
        abort();
    }
    atomic_store(&real_fn[id], p);
    return p;
}

__attribute__((constructor)) static void resolve_all(void)
{
    for (int i = 0; i < NFN; i++)
        resolve(i);
}

/* The real function `name`, as a pointer of its own type (through a union: ISO C has no
   conversion between object and function pointers). */
#define REAL(name) (((union { void *p; __typeof__(&name) f; }){.p = resolve(F_##name)}).f)

/* ---- the gate -------------------------------------------------------------------------- */

typedef struct gate {
    int count; /* the call is counted (enabled, not nested) */
    int fail;  /* return err without calling the real function */
    cl_int err;
} gate;

static gate enter(int id)
{
    gate g = {0, 0, CL_SUCCESS};
    if (depth > 0 || !atomic_load(&enabled))
        return g;
    g.count = 1;
    atomic_fetch_add(&fn_count[id], 1);
    if (!fn_info[id].fallible || my_gen != atomic_load(&enable_gen))
        return g;
    atomic_fetch_add(&n_calls, 1);
    pthread_mutex_lock(&lock);
    if (call_log_len == call_log_cap) {
        uint64_t cap = call_log_cap ? 2 * call_log_cap : 4096;
        unsigned char *p = realloc(call_log, cap);
        if (p)
            call_log = p, call_log_cap = cap;
    }
    if (call_log_len < call_log_cap)
        call_log[call_log_len++] = (unsigned char)id;
    if (fault_left > 0 && --fault_left == 0) {
        g.fail = 1;
        g.err = fault_err;
        fault_fired = 1;
        fault_site = fn_info[id].name;
        if (getenv("CLSHIM_TRACE"))
            fprintf(stderr, "clshim: fault %d injected into %s\n", (int)fault_err, fault_site);
    }
    pthread_mutex_unlock(&lock);
    return g;
}

#define ENTER(name)                                                                          \
    gate g = enter(F_##name);                                                                \
    if (g.fail)                                                                              \
    return g.err
#define ENTER_CREATE(name)                                                                   \
    gate g = enter(F_##name);                                                                \
    if (g.fail) {                                                                            \
        if (errcode_ret)                                                                     \
            *errcode_ret = g.err;                                                            \
        return NULL;                                                                         \
    }
/* Runs the real call with the nesting depth raised. */
#define FORWARD(var, name, ...)                                                              \
    depth++;                                                                                 \
    var = REAL(name)(__VA_ARGS__);                                                           \
    depth--

static void bump(atomic_uint_fast64_t *c, const gate *g)
{
    if (g->count)
        atomic_fetch_add(c, 1);
}

static void note_event(const gate *g, cl_int r, const cl_event *event)
{
    if (g->count && r == CL_SUCCESS && event)
        atomic_fetch_add(&obj_created[CLSHIM_EVENT], 1);
}

static int is_sub(cl_mem m)
{
    for (size_t i = 0; i < nsubs; i++)
        if (subs[i] == m)
            return 1;
    return 0;
}

static void forget_sub(cl_mem m)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nsubs; i++)
        if (subs[i] == m)
            subs[i] = subs[--nsubs];
    pthread_mutex_unlock(&lock);
}

static void remember_sub(cl_mem m)
{
    pthread_mutex_lock(&lock);
    if (!is_sub(m)) {
        if (nsubs == cap_subs) {
            size_t cap = cap_subs ? 2 * cap_subs : 64;
            cl_mem *p = realloc(subs, cap * sizeof *p);
            if (p)
                subs = p, cap_subs = cap;
        }
        if (nsubs < cap_subs)
            subs[nsubs++] = m;
    }
    pthread_mutex_unlock(&lock);
}

static clshim_obj mem_kind(cl_mem m)
{
    pthread_mutex_lock(&lock);
    int s = is_sub(m);
    pthread_mutex_unlock(&lock);
    return s ? CLSHIM_SUBBUFFER : CLSHIM_BUFFER;
}

/* ---- public ---------------------------------------------------------------------------- */

void clshim_enable(int on)
{
    if (on)
        my_gen = atomic_fetch_add(&enable_gen, 1) + 1;
    atomic_store(&enabled, on ? 1 : 0);
}

int clshim_enabled(void) { return atomic_load(&enabled); }

void clshim_reset(void)
{
    for (int i = 0; i < NFN; i++)
        atomic_store(&fn_count[i], 0);
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        atomic_store(&obj_created[k], 0), atomic_store(&obj_released[k], 0);
    atomic_store(&n_calls, 0);
    atomic_store(&n_blocking, 0);
    atomic_store(&n_builds, 0);
    clshim_fail_nth(0, CL_SUCCESS);
    pthread_mutex_lock(&lock);
    call_log_len = 0;
    pthread_mutex_unlock(&lock);
}

const char *clshim_call_name(uint64_t i)
{
    pthread_mutex_lock(&lock);
    const char *name = i >= 1 && i <= call_log_len ? fn_info[call_log[i - 1]].name : "";
    pthread_mutex_unlock(&lock);
    return name;
}

int clshim_wraps(const char *name)
{
    for (int i = 0; i < NFN; i++)
        if (!strcmp(fn_info[i].name, name))
            return 1;
    return 0;
}

uint64_t clshim_count(const char *name)
{
    for (int i = 0; i < NFN; i++)
        if (!strcmp(fn_info[i].name, name))
            return atomic_load(&fn_count[i]);
    return 0;
}

uint64_t clshim_blocking(void) { return atomic_load(&n_blocking); }
uint64_t clshim_builds(void) { return atomic_load(&n_builds); }
uint64_t clshim_calls(void) { return atomic_load(&n_calls); }

void clshim_fail_nth(uint64_t n, cl_int err)
{
    pthread_mutex_lock(&lock);
    fault_left = n;
    fault_err = err;
    fault_fired = 0;
    fault_site = "";
    pthread_mutex_unlock(&lock);
}

void clshim_cap_work_group(size_t cap)
{
    pthread_mutex_lock(&lock);
    wg_cap = cap;
    pthread_mutex_unlock(&lock);
}

int clshim_fault_fired(void)
{
    pthread_mutex_lock(&lock);
    int f = fault_fired;
    pthread_mutex_unlock(&lock);
    return f;
}

const char *clshim_fault_site(void)
{
    pthread_mutex_lock(&lock);
    const char *s = fault_site;
    pthread_mutex_unlock(&lock);
    return s;
}

uint64_t clshim_created(clshim_obj kind)
{
    return kind < CLSHIM_NOBJ ? atomic_load(&obj_created[kind]) : 0;
}

uint64_t clshim_released(clshim_obj kind)
{
    return kind < CLSHIM_NOBJ ? atomic_load(&obj_released[kind]) : 0;
}

const char *clshim_obj_name(clshim_obj kind)
{
    static const char *names[CLSHIM_NOBJ] = {"buffer", "sub-buffer", "event", "kernel",
                                             "program", "queue",  "context", "device"};
    return kind < CLSHIM_NOBJ ? names[kind] : "?";
}

void clshim_dump(FILE *out)
{
    fprintf(out, "clshim: %llu fallible calls, %llu blocking, %llu builds\n",
            (unsigned long long)clshim_calls(), (unsigned long long)clshim_blocking(),
            (unsigned long long)clshim_builds());
    for (int i = 0; i < NFN; i++)
        if (atomic_load(&fn_count[i]))
            fprintf(out, "  %-30s %llu\n", fn_info[i].name,
                    (unsigned long long)atomic_load(&fn_count[i]));
    for (int k = 0; k < CLSHIM_NOBJ; k++)
        if (clshim_created((clshim_obj)k) || clshim_released((clshim_obj)k))
            fprintf(out, "  %-12s created %llu released %llu\n", clshim_obj_name((clshim_obj)k),
                    (unsigned long long)clshim_created((clshim_obj)k),
                    (unsigned long long)clshim_released((clshim_obj)k));
}

/* ---- platforms, devices, contexts, queues ----------------------------------------------- */

CL_API_ENTRY cl_int CL_API_CALL clRetainDevice(cl_device_id device)
{
    ENTER(clRetainDevice);
    cl_int r;
    FORWARD(r, clRetainDevice, device);
    if (r == CL_SUCCESS)
        bump(&obj_created[CLSHIM_DEVICE], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseDevice(cl_device_id device)
{
    ENTER(clReleaseDevice);
    cl_int r;
    FORWARD(r, clReleaseDevice, device);
    if (r == CL_SUCCESS)
        bump(&obj_released[CLSHIM_DEVICE], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetPlatformIDs(cl_uint num_entries, cl_platform_id *platforms,
                                                 cl_uint *num_platforms)
{
    ENTER(clGetPlatformIDs);
    cl_int r;
    FORWARD(r, clGetPlatformIDs, num_entries, platforms, num_platforms);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetPlatformInfo(cl_platform_id platform,
                                                  cl_platform_info param_name,
                                                  size_t param_value_size, void *param_value,
                                                  size_t *param_value_size_ret)
{
    ENTER(clGetPlatformInfo);
    cl_int r;
    FORWARD(r, clGetPlatformInfo, platform, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceIDs(cl_platform_id platform,
                                               cl_device_type device_type, cl_uint num_entries,
                                               cl_device_id *devices, cl_uint *num_devices)
{
    ENTER(clGetDeviceIDs);
    cl_int r;
    FORWARD(r, clGetDeviceIDs, platform, device_type, num_entries, devices, num_devices);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetDeviceInfo(cl_device_id device, cl_device_info param_name,
                                                size_t param_value_size, void *param_value,
                                                size_t *param_value_size_ret)
{
    ENTER(clGetDeviceInfo);
    cl_int r;
    FORWARD(r, clGetDeviceInfo, device, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_context CL_API_CALL
clCreateContext(const cl_context_properties *properties, cl_uint num_devices,
                const cl_device_id *devices,
                void(CL_CALLBACK *pfn_notify)(const char *errinfo, const void *private_info,
                                              size_t cb, void *user_data),
                void *user_data, cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateContext);
    cl_context r;
    FORWARD(r, clCreateContext, properties, num_devices, devices, pfn_notify, user_data,
            errcode_ret);
    if (r)
        bump(&obj_created[CLSHIM_CONTEXT], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetContextInfo(cl_context context, cl_context_info param_name,
                                                 size_t param_value_size, void *param_value,
                                                 size_t *param_value_size_ret)
{
    ENTER(clGetContextInfo);
    cl_int r;
    FORWARD(r, clGetContextInfo, context, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainContext(cl_context context)
{
    ENTER(clRetainContext);
    cl_int r;
    FORWARD(r, clRetainContext, context);
    if (r == CL_SUCCESS)
        bump(&obj_created[CLSHIM_CONTEXT], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseContext(cl_context context)
{
    ENTER(clReleaseContext);
    cl_int r;
    FORWARD(r, clReleaseContext, context);
    if (r == CL_SUCCESS)
        bump(&obj_released[CLSHIM_CONTEXT], &g);
    return r;
}

CL_API_ENTRY cl_command_queue CL_API_CALL clCreateCommandQueue(cl_context context,
                                                               cl_device_id device,
                                                               cl_command_queue_properties
                                                                   properties,
                                                               cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateCommandQueue);
    cl_command_queue r;
    FORWARD(r, clCreateCommandQueue, context, device, properties, errcode_ret);
    if (r)
        bump(&obj_created[CLSHIM_QUEUE], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetCommandQueueInfo(cl_command_queue command_queue,
                                                      cl_command_queue_info param_name,
                                                      size_t param_value_size, void *param_value,
                                                      size_t *param_value_size_ret)
{
    ENTER(clGetCommandQueueInfo);
    cl_int r;
    FORWARD(r, clGetCommandQueueInfo, command_queue, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainCommandQueue(cl_command_queue command_queue)
{
    ENTER(clRetainCommandQueue);
    cl_int r;
    FORWARD(r, clRetainCommandQueue, command_queue);
    if (r == CL_SUCCESS)
        bump(&obj_created[CLSHIM_QUEUE], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseCommandQueue(cl_command_queue command_queue)
{
    ENTER(clReleaseCommandQueue);
    cl_int r;
    FORWARD(r, clReleaseCommandQueue, command_queue);
    if (r == CL_SUCCESS)
        bump(&obj_released[CLSHIM_QUEUE], &g);
    return r;
}

/* ---- memory objects ---------------------------------------------------------------------- */

CL_API_ENTRY cl_mem CL_API_CALL clCreateBuffer(cl_context context, cl_mem_flags flags,
                                               size_t size, void *host_ptr, cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateBuffer);
    cl_mem r;
    FORWARD(r, clCreateBuffer, context, flags, size, host_ptr, errcode_ret);
    if (r) {
        forget_sub(r); /* a handle reused after a sub-buffer died */
        bump(&obj_created[CLSHIM_BUFFER], &g);
    }
    return r;
}

CL_API_ENTRY cl_mem CL_API_CALL clCreateSubBuffer(cl_mem buffer, cl_mem_flags flags,
                                                  cl_buffer_create_type buffer_create_type,
                                                  const void *buffer_create_info,
                                                  cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateSubBuffer);
    cl_mem r;
    FORWARD(r, clCreateSubBuffer, buffer, flags, buffer_create_type, buffer_create_info,
            errcode_ret);
    if (r) {
        remember_sub(r);
        bump(&obj_created[CLSHIM_SUBBUFFER], &g);
    }
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetMemObjectInfo(cl_mem memobj, cl_mem_info param_name,
                                                   size_t param_value_size, void *param_value,
                                                   size_t *param_value_size_ret)
{
    ENTER(clGetMemObjectInfo);
    cl_int r;
    FORWARD(r, clGetMemObjectInfo, memobj, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainMemObject(cl_mem memobj)
{
    ENTER(clRetainMemObject);
    cl_int r;
    FORWARD(r, clRetainMemObject, memobj);
    if (r == CL_SUCCESS)
        bump(&obj_created[mem_kind(memobj)], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseMemObject(cl_mem memobj)
{
    ENTER(clReleaseMemObject);
    clshim_obj kind = g.count ? mem_kind(memobj) : CLSHIM_BUFFER;
    cl_int r;
    FORWARD(r, clReleaseMemObject, memobj);
    if (r == CL_SUCCESS)
        bump(&obj_released[kind], &g);
    return r;
}

/* ---- programs and kernels ---------------------------------------------------------------- */

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithSource(cl_context context, cl_uint count,
                                                              const char **strings,
                                                              const size_t *lengths,
                                                              cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateProgramWithSource);
    bump(&n_builds, &g);
    cl_program r;
    FORWARD(r, clCreateProgramWithSource, context, count, strings, lengths, errcode_ret);
    if (r)
        bump(&obj_created[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithBinary(
    cl_context context, cl_uint num_devices, const cl_device_id *device_list,
    const size_t *lengths, const unsigned char **binaries, cl_int *binary_status,
    cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateProgramWithBinary);
    bump(&n_builds, &g);
    cl_program r;
    FORWARD(r, clCreateProgramWithBinary, context, num_devices, device_list, lengths, binaries,
            binary_status, errcode_ret);
    if (r)
        bump(&obj_created[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL
clBuildProgram(cl_program program, cl_uint num_devices, const cl_device_id *device_list,
               const char *options, void(CL_CALLBACK *pfn_notify)(cl_program program,
                                                                  void *user_data),
               void *user_data)
{
    ENTER(clBuildProgram);
    bump(&n_builds, &g);
    cl_int r;
    FORWARD(r, clBuildProgram, program, num_devices, device_list, options, pfn_notify,
            user_data);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetProgramInfo(cl_program program, cl_program_info param_name,
                                                 size_t param_value_size, void *param_value,
                                                 size_t *param_value_size_ret)
{
    ENTER(clGetProgramInfo);
    cl_int r;
    FORWARD(r, clGetProgramInfo, program, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetProgramBuildInfo(cl_program program, cl_device_id device,
                                                      cl_program_build_info param_name,
                                                      size_t param_value_size, void *param_value,
                                                      size_t *param_value_size_ret)
{
    ENTER(clGetProgramBuildInfo);
    cl_int r;
    FORWARD(r, clGetProgramBuildInfo, program, device, param_name, param_value_size,
            param_value, param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainProgram(cl_program program)
{
    ENTER(clRetainProgram);
    cl_int r;
    FORWARD(r, clRetainProgram, program);
    if (r == CL_SUCCESS)
        bump(&obj_created[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseProgram(cl_program program)
{
    ENTER(clReleaseProgram);
    cl_int r;
    FORWARD(r, clReleaseProgram, program);
    if (r == CL_SUCCESS)
        bump(&obj_released[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_kernel CL_API_CALL clCreateKernel(cl_program program, const char *kernel_name,
                                                  cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateKernel);
    cl_kernel r;
    FORWARD(r, clCreateKernel, program, kernel_name, errcode_ret);
    if (r)
        bump(&obj_created[CLSHIM_KERNEL], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clCreateKernelsInProgram(cl_program program, cl_uint num_kernels,
                                                         cl_kernel *kernels,
                                                         cl_uint *num_kernels_ret)
{
    ENTER(clCreateKernelsInProgram);
    cl_uint got = 0;
    cl_int r;
    FORWARD(r, clCreateKernelsInProgram, program, num_kernels, kernels, &got);
    if (num_kernels_ret)
        *num_kernels_ret = got;
    if (r == CL_SUCCESS && kernels && g.count)
        atomic_fetch_add(&obj_created[CLSHIM_KERNEL], got);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clSetKernelArg(cl_kernel kernel, cl_uint arg_index,
                                               size_t arg_size, const void *arg_value)
{
    ENTER(clSetKernelArg);
    cl_int r;
    FORWARD(r, clSetKernelArg, kernel, arg_index, arg_size, arg_value);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetKernelInfo(cl_kernel kernel, cl_kernel_info param_name,
                                                size_t param_value_size, void *param_value,
                                                size_t *param_value_size_ret)
{
    ENTER(clGetKernelInfo);
    cl_int r;
    FORWARD(r, clGetKernelInfo, kernel, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetKernelWorkGroupInfo(cl_kernel kernel, cl_device_id device,
                                                         cl_kernel_work_group_info param_name,
                                                         size_t param_value_size,
                                                         void *param_value,
                                                         size_t *param_value_size_ret)
{
    ENTER(clGetKernelWorkGroupInfo);
    cl_int r;
    FORWARD(r, clGetKernelWorkGroupInfo, kernel, device, param_name, param_value_size,
            param_value, param_value_size_ret);
    pthread_mutex_lock(&lock);
    const size_t cap = wg_cap;
    pthread_mutex_unlock(&lock);
    if (r == CL_SUCCESS && cap && param_name == CL_KERNEL_WORK_GROUP_SIZE && param_value &&
        atomic_load(&enabled) && *(size_t *)param_value > cap)
        *(size_t *)param_value = cap;
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainKernel(cl_kernel kernel)
{
    ENTER(clRetainKernel);
    cl_int r;
    FORWARD(r, clRetainKernel, kernel);
    if (r == CL_SUCCESS)
        bump(&obj_created[CLSHIM_KERNEL], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseKernel(cl_kernel kernel)
{
    ENTER(clReleaseKernel);
    cl_int r;
    FORWARD(r, clReleaseKernel, kernel);
    if (r == CL_SUCCESS)
        bump(&obj_released[CLSHIM_KERNEL], &g);
    return r;
}

/* ---- events ------------------------------------------------------------------------------ */

CL_API_ENTRY cl_int CL_API_CALL clWaitForEvents(cl_uint num_events, const cl_event *event_list)
{
    ENTER(clWaitForEvents);
    bump(&n_blocking, &g);
    cl_int r;
    FORWARD(r, clWaitForEvents, num_events, event_list);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetEventInfo(cl_event event, cl_event_info param_name,
                                               size_t param_value_size, void *param_value,
                                               size_t *param_value_size_ret)
{
    ENTER(clGetEventInfo);
    cl_int r;
    FORWARD(r, clGetEventInfo, event, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clGetEventProfilingInfo(cl_event event,
                                                        cl_profiling_info param_name,
                                                        size_t param_value_size,
                                                        void *param_value,
                                                        size_t *param_value_size_ret)
{
    ENTER(clGetEventProfilingInfo);
    cl_int r;
    FORWARD(r, clGetEventProfilingInfo, event, param_name, param_value_size, param_value,
            param_value_size_ret);
    return r;
}

CL_API_ENTRY cl_event CL_API_CALL clCreateUserEvent(cl_context context, cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateUserEvent);
    cl_event r;
    FORWARD(r, clCreateUserEvent, context, errcode_ret);
    if (r)
        bump(&obj_created[CLSHIM_EVENT], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clSetUserEventStatus(cl_event event, cl_int execution_status)
{
    ENTER(clSetUserEventStatus);
    cl_int r;
    FORWARD(r, clSetUserEventStatus, event, execution_status);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL
clSetEventCallback(cl_event event, cl_int command_exec_callback_type,
                   void(CL_CALLBACK *pfn_notify)(cl_event event, cl_int event_command_status,
                                                 void *user_data),
                   void *user_data)
{
    ENTER(clSetEventCallback);
    cl_int r;
    FORWARD(r, clSetEventCallback, event, command_exec_callback_type, pfn_notify, user_data);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainEvent(cl_event event)
{
    ENTER(clRetainEvent);
    cl_int r;
    FORWARD(r, clRetainEvent, event);
    if (r == CL_SUCCESS)
        bump(&obj_created[CLSHIM_EVENT], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseEvent(cl_event event)
{
    ENTER(clReleaseEvent);
    cl_int r;
    FORWARD(r, clReleaseEvent, event);
    if (r == CL_SUCCESS)
        bump(&obj_released[CLSHIM_EVENT], &g);
    return r;
}

/* ---- queue control and commands ---------------------------------------------------------- */

CL_API_ENTRY cl_int CL_API_CALL clFlush(cl_command_queue command_queue)
{
    ENTER(clFlush);
    cl_int r;
    FORWARD(r, clFlush, command_queue);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clFinish(cl_command_queue command_queue)
{
    ENTER(clFinish);
    bump(&n_blocking, &g);
    cl_int r;
    FORWARD(r, clFinish, command_queue);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueReadBuffer(cl_command_queue command_queue, cl_mem buffer,
                                                    cl_bool blocking_read, size_t offset,
                                                    size_t size, void *ptr,
                                                    cl_uint num_events_in_wait_list,
                                                    const cl_event *event_wait_list,
                                                    cl_event *event)
{
    ENTER(clEnqueueReadBuffer);
    if (blocking_read)
        bump(&n_blocking, &g);
    cl_int r;
    FORWARD(r, clEnqueueReadBuffer, command_queue, buffer, blocking_read, offset, size, ptr,
            num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueReadBufferRect(
    cl_command_queue command_queue, cl_mem buffer, cl_bool blocking_read,
    const size_t *buffer_origin, const size_t *host_origin, const size_t *region,
    size_t buffer_row_pitch, size_t buffer_slice_pitch, size_t host_row_pitch,
    size_t host_slice_pitch, void *ptr, cl_uint num_events_in_wait_list,
    const cl_event *event_wait_list, cl_event *event)
{
    ENTER(clEnqueueReadBufferRect);
    if (blocking_read)
        bump(&n_blocking, &g);
    cl_int r;
    FORWARD(r, clEnqueueReadBufferRect, command_queue, buffer, blocking_read, buffer_origin,
            host_origin, region, buffer_row_pitch, buffer_slice_pitch, host_row_pitch,
            host_slice_pitch, ptr, num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueWriteBuffer(cl_command_queue command_queue,
                                                     cl_mem buffer, cl_bool blocking_write,
                                                     size_t offset, size_t size, const void *ptr,
                                                     cl_uint num_events_in_wait_list,
                                                     const cl_event *event_wait_list,
                                                     cl_event *event)
{
    ENTER(clEnqueueWriteBuffer);
    if (blocking_write)
        bump(&n_blocking, &g);
    cl_int r;
    FORWARD(r, clEnqueueWriteBuffer, command_queue, buffer, blocking_write, offset, size, ptr,
            num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueWriteBufferRect(
    cl_command_queue command_queue, cl_mem buffer, cl_bool blocking_write,
    const size_t *buffer_origin, const size_t *host_origin, const size_t *region,
    size_t buffer_row_pitch, size_t buffer_slice_pitch, size_t host_row_pitch,
    size_t host_slice_pitch, const void *ptr, cl_uint num_events_in_wait_list,
    const cl_event *event_wait_list, cl_event *event)
{
    ENTER(clEnqueueWriteBufferRect);
    if (blocking_write)
        bump(&n_blocking, &g);
    cl_int r;
    FORWARD(r, clEnqueueWriteBufferRect, command_queue, buffer, blocking_write, buffer_origin,
            host_origin, region, buffer_row_pitch, buffer_slice_pitch, host_row_pitch,
            host_slice_pitch, ptr, num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueFillBuffer(cl_command_queue command_queue, cl_mem buffer,
                                                    const void *pattern, size_t pattern_size,
                                                    size_t offset, size_t size,
                                                    cl_uint num_events_in_wait_list,
                                                    const cl_event *event_wait_list,
                                                    cl_event *event)
{
    ENTER(clEnqueueFillBuffer);
    cl_int r;
    FORWARD(r, clEnqueueFillBuffer, command_queue, buffer, pattern, pattern_size, offset, size,
            num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueCopyBuffer(cl_command_queue command_queue,
                                                    cl_mem src_buffer, cl_mem dst_buffer,
                                                    size_t src_offset, size_t dst_offset,
                                                    size_t size, cl_uint num_events_in_wait_list,
                                                    const cl_event *event_wait_list,
                                                    cl_event *event)
{
    ENTER(clEnqueueCopyBuffer);
    cl_int r;
    FORWARD(r, clEnqueueCopyBuffer, command_queue, src_buffer, dst_buffer, src_offset,
            dst_offset, size, num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueCopyBufferRect(
    cl_command_queue command_queue, cl_mem src_buffer, cl_mem dst_buffer,
    const size_t *src_origin, const size_t *dst_origin, const size_t *region,
    size_t src_row_pitch, size_t src_slice_pitch, size_t dst_row_pitch, size_t dst_slice_pitch,
    cl_uint num_events_in_wait_list, const cl_event *event_wait_list, cl_event *event)
{
    ENTER(clEnqueueCopyBufferRect);
    cl_int r;
    FORWARD(r, clEnqueueCopyBufferRect, command_queue, src_buffer, dst_buffer, src_origin,
            dst_origin, region, src_row_pitch, src_slice_pitch, dst_row_pitch, dst_slice_pitch,
            num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY void *CL_API_CALL clEnqueueMapBuffer(cl_command_queue command_queue, cl_mem buffer,
                                                  cl_bool blocking_map, cl_map_flags map_flags,
                                                  size_t offset, size_t size,
                                                  cl_uint num_events_in_wait_list,
                                                  const cl_event *event_wait_list,
                                                  cl_event *event, cl_int *errcode_ret)
{
    ENTER_CREATE(clEnqueueMapBuffer);
    if (blocking_map)
        bump(&n_blocking, &g);
    cl_int err = CL_SUCCESS;
    void *r;
    FORWARD(r, clEnqueueMapBuffer, command_queue, buffer, blocking_map, map_flags, offset, size,
            num_events_in_wait_list, event_wait_list, event, &err);
    if (errcode_ret)
        *errcode_ret = err;
    note_event(&g, err, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueUnmapMemObject(cl_command_queue command_queue,
                                                        cl_mem memobj, void *mapped_ptr,
                                                        cl_uint num_events_in_wait_list,
                                                        const cl_event *event_wait_list,
                                                        cl_event *event)
{
    ENTER(clEnqueueUnmapMemObject);
    cl_int r;
    FORWARD(r, clEnqueueUnmapMemObject, command_queue, memobj, mapped_ptr,
            num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(
    cl_command_queue command_queue, cl_kernel kernel, cl_uint work_dim,
    const size_t *global_work_offset, const size_t *global_work_size,
    const size_t *local_work_size, cl_uint num_events_in_wait_list,
    const cl_event *event_wait_list, cl_event *event)
{
    ENTER(clEnqueueNDRangeKernel);
    cl_int r;
    FORWARD(r, clEnqueueNDRangeKernel, command_queue, kernel, work_dim, global_work_offset,
            global_work_size, local_work_size, num_events_in_wait_list, event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueMarkerWithWaitList(cl_command_queue command_queue,
                                                            cl_uint num_events_in_wait_list,
                                                            const cl_event *event_wait_list,
                                                            cl_event *event)
{
    ENTER(clEnqueueMarkerWithWaitList);
    cl_int r;
    FORWARD(r, clEnqueueMarkerWithWaitList, command_queue, num_events_in_wait_list,
            event_wait_list, event);
    note_event(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueBarrierWithWaitList(cl_command_queue command_queue,
                                                             cl_uint num_events_in_wait_list,
                                                             const cl_event *event_wait_list,
                                                             cl_event *event)
{
    ENTER(clEnqueueBarrierWithWaitList);
    cl_int r;
    FORWARD(r, clEnqueueBarrierWithWaitList, command_queue, num_events_in_wait_list,
            event_wait_list, event);
    note_event(&g, r, event);
    return r;
}
