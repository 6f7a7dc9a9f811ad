/* SPDX-License-Identifier: MIT */
/* Status codes: text and names generated from CLOPT_STATUS_LIST, plus OpenCL pass-through. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Every OpenCL error code we know a name for: the core API up to 3.0 and the KHR, EXT and
   vendor extension codes of the Khronos headers. The values are spelled out because the
   library is built against the 1.2 API (CL_TARGET_OPENCL_VERSION=120), where the 2.x/3.0
   and most extension macros are not defined. X(name, value). */
#define CLOPT_CL_ERRORS(X)                                                                  \
    X(CL_DEVICE_NOT_FOUND, -1)                                                              \
    X(CL_DEVICE_NOT_AVAILABLE, -2)                                                          \
    X(CL_COMPILER_NOT_AVAILABLE, -3)                                                        \
    X(CL_MEM_OBJECT_ALLOCATION_FAILURE, -4)                                                 \
    X(CL_OUT_OF_RESOURCES, -5)                                                              \
    X(CL_OUT_OF_HOST_MEMORY, -6)                                                            \
    X(CL_PROFILING_INFO_NOT_AVAILABLE, -7)                                                  \
    X(CL_MEM_COPY_OVERLAP, -8)                                                              \
    X(CL_IMAGE_FORMAT_MISMATCH, -9)                                                         \
    X(CL_IMAGE_FORMAT_NOT_SUPPORTED, -10)                                                   \
    X(CL_BUILD_PROGRAM_FAILURE, -11)                                                        \
    X(CL_MAP_FAILURE, -12)                                                                  \
    X(CL_MISALIGNED_SUB_BUFFER_OFFSET, -13)                                                 \
    X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST, -14)                                    \
    X(CL_COMPILE_PROGRAM_FAILURE, -15)                                                      \
    X(CL_LINKER_NOT_AVAILABLE, -16)                                                         \
    X(CL_LINK_PROGRAM_FAILURE, -17)                                                         \
    X(CL_DEVICE_PARTITION_FAILED, -18)                                                      \
    X(CL_KERNEL_ARG_INFO_NOT_AVAILABLE, -19)                                                \
    X(CL_INVALID_VALUE, -30)                                                                \
    X(CL_INVALID_DEVICE_TYPE, -31)                                                          \
    X(CL_INVALID_PLATFORM, -32)                                                             \
    X(CL_INVALID_DEVICE, -33)                                                               \
    X(CL_INVALID_CONTEXT, -34)                                                              \
    X(CL_INVALID_QUEUE_PROPERTIES, -35)                                                     \
    X(CL_INVALID_COMMAND_QUEUE, -36)                                                        \
    X(CL_INVALID_HOST_PTR, -37)                                                             \
    X(CL_INVALID_MEM_OBJECT, -38)                                                           \
    X(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR, -39)                                              \
    X(CL_INVALID_IMAGE_SIZE, -40)                                                           \
    X(CL_INVALID_SAMPLER, -41)                                                              \
    X(CL_INVALID_BINARY, -42)                                                               \
    X(CL_INVALID_BUILD_OPTIONS, -43)                                                        \
    X(CL_INVALID_PROGRAM, -44)                                                              \
    X(CL_INVALID_PROGRAM_EXECUTABLE, -45)                                                   \
    X(CL_INVALID_KERNEL_NAME, -46)                                                          \
    X(CL_INVALID_KERNEL_DEFINITION, -47)                                                    \
    X(CL_INVALID_KERNEL, -48)                                                               \
    X(CL_INVALID_ARG_INDEX, -49)                                                            \
    X(CL_INVALID_ARG_VALUE, -50)                                                            \
    X(CL_INVALID_ARG_SIZE, -51)                                                             \
    X(CL_INVALID_KERNEL_ARGS, -52)                                                          \
    X(CL_INVALID_WORK_DIMENSION, -53)                                                       \
    X(CL_INVALID_WORK_GROUP_SIZE, -54)                                                      \
    X(CL_INVALID_WORK_ITEM_SIZE, -55)                                                       \
    X(CL_INVALID_GLOBAL_OFFSET, -56)                                                        \
    X(CL_INVALID_EVENT_WAIT_LIST, -57)                                                      \
    X(CL_INVALID_EVENT, -58)                                                                \
    X(CL_INVALID_OPERATION, -59)                                                            \
    X(CL_INVALID_GL_OBJECT, -60)                                                            \
    X(CL_INVALID_BUFFER_SIZE, -61)                                                          \
    X(CL_INVALID_MIP_LEVEL, -62)                                                            \
    X(CL_INVALID_GLOBAL_WORK_SIZE, -63)                                                     \
    X(CL_INVALID_PROPERTY, -64)                                                             \
    X(CL_INVALID_IMAGE_DESCRIPTOR, -65)                                                     \
    X(CL_INVALID_COMPILER_OPTIONS, -66)                                                     \
    X(CL_INVALID_LINKER_OPTIONS, -67)                                                       \
    X(CL_INVALID_DEVICE_PARTITION_COUNT, -68)                                               \
    /* OpenCL 2.0 / 2.2 */                                                                  \
    X(CL_INVALID_PIPE_SIZE, -69)                                                            \
    X(CL_INVALID_DEVICE_QUEUE, -70)                                                         \
    X(CL_INVALID_SPEC_ID, -71)                                                              \
    X(CL_MAX_SIZE_RESTRICTION_EXCEEDED, -72)                                                \
    /* OpenCL KHR, EXT and vendor extensions */                                             \
    X(CL_INVALID_GL_SHAREGROUP_REFERENCE_KHR, -1000)                                        \
    X(CL_PLATFORM_NOT_FOUND_KHR, -1001)                                                     \
    X(CL_INVALID_D3D10_DEVICE_KHR, -1002)                                                   \
    X(CL_INVALID_D3D10_RESOURCE_KHR, -1003)                                                 \
    X(CL_D3D10_RESOURCE_ALREADY_ACQUIRED_KHR, -1004)                                        \
    X(CL_D3D10_RESOURCE_NOT_ACQUIRED_KHR, -1005)                                            \
    X(CL_INVALID_D3D11_DEVICE_KHR, -1006)                                                   \
    X(CL_INVALID_D3D11_RESOURCE_KHR, -1007)                                                 \
    X(CL_D3D11_RESOURCE_ALREADY_ACQUIRED_KHR, -1008)                                        \
    X(CL_D3D11_RESOURCE_NOT_ACQUIRED_KHR, -1009)                                            \
    X(CL_INVALID_DX9_MEDIA_ADAPTER_KHR, -1010)                                              \
    X(CL_INVALID_DX9_MEDIA_SURFACE_KHR, -1011)                                              \
    X(CL_DX9_MEDIA_SURFACE_ALREADY_ACQUIRED_KHR, -1012)                                     \
    X(CL_DX9_MEDIA_SURFACE_NOT_ACQUIRED_KHR, -1013)                                         \
    X(CL_DEVICE_PARTITION_FAILED_EXT, -1057)                                                \
    X(CL_INVALID_PARTITION_COUNT_EXT, -1058)                                                \
    X(CL_INVALID_PARTITION_NAME_EXT, -1059)                                                 \
    X(CL_EGL_RESOURCE_NOT_ACQUIRED_KHR, -1092)                                              \
    X(CL_INVALID_EGL_OBJECT_KHR, -1093)                                                     \
    X(CL_INVALID_ACCELERATOR_INTEL, -1094)                                                  \
    X(CL_INVALID_ACCELERATOR_TYPE_INTEL, -1095)                                             \
    X(CL_INVALID_ACCELERATOR_DESCRIPTOR_INTEL, -1096)                                       \
    X(CL_ACCELERATOR_TYPE_NOT_SUPPORTED_INTEL, -1097)                                       \
    X(CL_INVALID_VA_API_MEDIA_ADAPTER_INTEL, -1098)                                         \
    X(CL_INVALID_VA_API_MEDIA_SURFACE_INTEL, -1099)                                         \
    X(CL_VA_API_MEDIA_SURFACE_ALREADY_ACQUIRED_INTEL, -1100)                                \
    X(CL_VA_API_MEDIA_SURFACE_NOT_ACQUIRED_INTEL, -1101)                                    \
    X(CL_COMMAND_TERMINATED_ITSELF_WITH_FAILURE_ARM, -1108)                                 \
    X(CL_CONTEXT_TERMINATED_KHR, -1121)                                                     \
    X(CL_INVALID_COMMAND_BUFFER_KHR, -1138)                                                 \
    X(CL_INVALID_SYNC_POINT_WAIT_LIST_KHR, -1139)                                           \
    X(CL_INCOMPATIBLE_COMMAND_QUEUE_KHR, -1140)                                             \
    X(CL_INVALID_MUTABLE_COMMAND_KHR, -1141)                                                \
    X(CL_INVALID_SEMAPHORE_KHR, -1142)                                                      \
    /* end */

static const char *cl_error_name(cl_int err)
{
    switch (err) {
#define CLOPT_X_CASE(name, value) case value: return #name;
        CLOPT_CL_ERRORS(CLOPT_X_CASE)
#undef CLOPT_X_CASE
    default:
        return "CL_UNKNOWN_ERROR";
    }
}

/* "OpenCL error CL_INVALID_VALUE (-30)": clopt_status_str of a pass-through code. */
static const char *cl_error_text(cl_int err)
{
    switch (err) {
#define CLOPT_X_TEXT(name, value) case value: return "OpenCL error " #name " (" #value ")";
        CLOPT_CL_ERRORS(CLOPT_X_TEXT)
#undef CLOPT_X_TEXT
    default:
        return "an OpenCL call failed with an error code this library has no name for";
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
        return cl_error_text(clopt_status_cl_error(s));
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
