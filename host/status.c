/* Status codes: text and names generated from CLOPT_STATUS_LIST, plus OpenCL pass-through. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* OpenCL 1.2 error codes and names. */
#define CLOPT_CL_ERRORS(X)                                                                   \
    X(CL_DEVICE_NOT_FOUND) X(CL_DEVICE_NOT_AVAILABLE) X(CL_COMPILER_NOT_AVAILABLE)           \
    X(CL_MEM_OBJECT_ALLOCATION_FAILURE) X(CL_OUT_OF_RESOURCES) X(CL_OUT_OF_HOST_MEMORY)      \
    X(CL_PROFILING_INFO_NOT_AVAILABLE) X(CL_MEM_COPY_OVERLAP) X(CL_IMAGE_FORMAT_MISMATCH)    \
    X(CL_IMAGE_FORMAT_NOT_SUPPORTED) X(CL_BUILD_PROGRAM_FAILURE) X(CL_MAP_FAILURE)           \
    X(CL_MISALIGNED_SUB_BUFFER_OFFSET) X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)       \
    X(CL_COMPILE_PROGRAM_FAILURE) X(CL_LINKER_NOT_AVAILABLE) X(CL_LINK_PROGRAM_FAILURE)      \
    X(CL_DEVICE_PARTITION_FAILED) X(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) X(CL_INVALID_VALUE)    \
    X(CL_INVALID_DEVICE_TYPE) X(CL_INVALID_PLATFORM) X(CL_INVALID_DEVICE)                    \
    X(CL_INVALID_CONTEXT) X(CL_INVALID_QUEUE_PROPERTIES) X(CL_INVALID_COMMAND_QUEUE)         \
    X(CL_INVALID_HOST_PTR) X(CL_INVALID_MEM_OBJECT) X(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)    \
    X(CL_INVALID_IMAGE_SIZE) X(CL_INVALID_SAMPLER) X(CL_INVALID_BINARY)                      \
    X(CL_INVALID_BUILD_OPTIONS) X(CL_INVALID_PROGRAM) X(CL_INVALID_PROGRAM_EXECUTABLE)       \
    X(CL_INVALID_KERNEL_NAME) X(CL_INVALID_KERNEL_DEFINITION) X(CL_INVALID_KERNEL)           \
    X(CL_INVALID_ARG_INDEX) X(CL_INVALID_ARG_VALUE) X(CL_INVALID_ARG_SIZE)                   \
    X(CL_INVALID_KERNEL_ARGS) X(CL_INVALID_WORK_DIMENSION) X(CL_INVALID_WORK_GROUP_SIZE)     \
    X(CL_INVALID_WORK_ITEM_SIZE) X(CL_INVALID_GLOBAL_OFFSET) X(CL_INVALID_EVENT_WAIT_LIST)   \
    X(CL_INVALID_EVENT) X(CL_INVALID_OPERATION) X(CL_INVALID_GL_OBJECT)                      \
    X(CL_INVALID_BUFFER_SIZE) X(CL_INVALID_MIP_LEVEL) X(CL_INVALID_GLOBAL_WORK_SIZE)         \
    X(CL_INVALID_PROPERTY) X(CL_INVALID_IMAGE_DESCRIPTOR) X(CL_INVALID_COMPILER_OPTIONS)     \
    X(CL_INVALID_LINKER_OPTIONS) X(CL_INVALID_DEVICE_PARTITION_COUNT)

static const char *cl_error_name(cl_int err)
{
    switch (err) {
#define CLOPT_X_CASE(name) case name: return #name;
        CLOPT_CL_ERRORS(CLOPT_X_CASE)
#undef CLOPT_X_CASE
    default:
        return "CL_UNKNOWN_ERROR";
    }
}

int clopt_status_is_opencl(clopt_status s)
{
    /* OpenCL's codes are -1 .. -9999 (vendor extensions use the -1000s). */
    return (int)s < (int)CLOPT_ERR_OPENCL_BASE && (int)s > (int)CLOPT_ERR_OPENCL_BASE - 10000;
}

cl_int clopt_status_cl_error(clopt_status s)
{
    return clopt_status_is_opencl(s) ? (cl_int)((int)s - (int)CLOPT_ERR_OPENCL_BASE) : CL_SUCCESS;
}

const char *clopt_status_str(clopt_status s)
{
    switch (s) {
#define CLOPT_X_STR(name, value, text) case name: return text;
        CLOPT_STATUS_LIST(CLOPT_X_STR)
#undef CLOPT_X_STR
    default:
        break;
    }
    if (clopt_status_is_opencl(s))
        return "an OpenCL call failed (the OpenCL error is in clopt_status_name)";
    return "unknown status code";
}

const char *clopt_status_name(clopt_status s)
{
    switch (s) {
#define CLOPT_X_NAME(name, value, text) case name: return #name;
        CLOPT_STATUS_LIST(CLOPT_X_NAME)
#undef CLOPT_X_NAME
    default:
        break;
    }
    if (clopt_status_is_opencl(s))
        return cl_error_name(clopt_status_cl_error(s));
    return "CLOPT_UNKNOWN_STATUS";
}

clopt_status clopt_fail(clopt_ctx *ctx, clopt_status s, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
        va_end(ap);
    }
    return s;
}

clopt_status clopt_fail_cl(clopt_ctx *ctx, cl_int err, const char *what)
{
    clopt_status s = (clopt_status)((int)CLOPT_ERR_OPENCL_BASE + (int)err);
    if (err >= 0 || !clopt_status_is_opencl(s))
        s = CLOPT_ERR_INVALID_ARGUMENT; /* never report success for a failure */
    return clopt_fail(ctx, s, "%s: %s (%d)", what, cl_error_name(err), (int)err);
}

void clopt_clear_error(clopt_ctx *ctx)
{
    if (ctx)
        ctx->last_error[0] = '\0';
}
