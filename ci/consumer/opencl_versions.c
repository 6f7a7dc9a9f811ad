/* SPDX-License-Identifier: MIT */
/* clopt.h under every OpenCL API level a consumer may choose: built by ci/check-consumer.sh
 * with -DCL_TARGET_OPENCL_VERSION=120, 200 and 300, and with no definition but <CL/cl.h>
 * included first (the Khronos headers then default to 3.0), all with -Werror. The library
 * itself is built against 1.2; its ABI does not depend on the consumer's choice. */
#ifdef CONSUMER_CL_FIRST
#include <CL/cl.h>
#endif
#include <clopt.h>

#include <stdio.h>
#include <string.h>

#ifdef EXPECT_CL_TARGET
#if CL_TARGET_OPENCL_VERSION != EXPECT_CL_TARGET
#error "clopt.h changed the includer's CL_TARGET_OPENCL_VERSION"
#endif
#endif

int main(void)
{
    /* a few declarations whose types come from the OpenCL headers */
    clopt_status (*create_from)(cl_context, cl_device_id, cl_command_queue, clopt_ctx **) =
        clopt_ctx_create_from;
    cl_int (*cl_error)(clopt_status) = clopt_status_cl_error;
    int ok = create_from != NULL && cl_error(CLOPT_SUCCESS) == CL_SUCCESS &&
             clopt_version_number() == CLOPT_VERSION_NUMBER &&
             strcmp(clopt_status_name((clopt_status)(CLOPT_ERR_OPENCL_BASE - 70)),
                    "CL_INVALID_DEVICE_QUEUE") == 0;
    printf("opencl_versions (CL_TARGET_OPENCL_VERSION %d): clopt %s %s\n",
           (int)CL_TARGET_OPENCL_VERSION, clopt_version(), ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
