/* SPDX-License-Identifier: MIT */
/* The interposer's wrappers, one per OpenCL function of CLSHIM_FUNCS (clshim_internal.h). */
#define _GNU_SOURCE
#include "clshim_internal.h"

/* ---- platforms, devices, contexts, queues ----------------------------------------------- */

CL_API_ENTRY cl_int CL_API_CALL clRetainDevice(cl_device_id device)
{
    ENTER(clRetainDevice);
    cl_int r;
    FORWARD(r, clRetainDevice, device);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_created_[CLSHIM_DEVICE], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseDevice(cl_device_id device)
{
    ENTER(clReleaseDevice);
    cl_int r;
    FORWARD(r, clReleaseDevice, device);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[CLSHIM_DEVICE], &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_CONTEXT], &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_CONTEXT], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseContext(cl_context context)
{
    ENTER(clReleaseContext);
    cl_int r;
    FORWARD(r, clReleaseContext, context);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[CLSHIM_CONTEXT], &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_QUEUE], &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_QUEUE], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseCommandQueue(cl_command_queue command_queue)
{
    ENTER(clReleaseCommandQueue);
    cl_int r;
    FORWARD(r, clReleaseCommandQueue, command_queue);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[CLSHIM_QUEUE], &g);
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
        clshim_forget_sub_(r); /* a handle reused after a sub-buffer died */
        clshim_bump_(&clshim_obj_created_[CLSHIM_BUFFER], &g);
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
        clshim_remember_sub_(r);
        clshim_bump_(&clshim_obj_created_[CLSHIM_SUBBUFFER], &g);
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
        clshim_bump_(&clshim_obj_created_[clshim_mem_kind_(memobj)], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseMemObject(cl_mem memobj)
{
    ENTER(clReleaseMemObject);
    clshim_obj kind = g.count ? clshim_mem_kind_(memobj) : CLSHIM_BUFFER;
    cl_int r;
    FORWARD(r, clReleaseMemObject, memobj);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[kind], &g);
    return r;
}

/* ---- programs and kernels ---------------------------------------------------------------- */

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithSource(cl_context context, cl_uint count,
                                                              const char **strings,
                                                              const size_t *lengths,
                                                              cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateProgramWithSource);
    clshim_bump_(&clshim_n_builds_, &g);
    cl_program r;
    FORWARD(r, clCreateProgramWithSource, context, count, strings, lengths, errcode_ret);
    if (r)
        clshim_bump_(&clshim_obj_created_[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_program CL_API_CALL clCreateProgramWithBinary(
    cl_context context, cl_uint num_devices, const cl_device_id *device_list,
    const size_t *lengths, const unsigned char **binaries, cl_int *binary_status,
    cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateProgramWithBinary);
    clshim_bump_(&clshim_n_builds_, &g);
    cl_program r;
    FORWARD(r, clCreateProgramWithBinary, context, num_devices, device_list, lengths, binaries,
            binary_status, errcode_ret);
    if (r)
        clshim_bump_(&clshim_obj_created_[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL
clBuildProgram(cl_program program, cl_uint num_devices, const cl_device_id *device_list,
               const char *options, void(CL_CALLBACK *pfn_notify)(cl_program program,
                                                                  void *user_data),
               void *user_data)
{
    ENTER(clBuildProgram);
    clshim_bump_(&clshim_n_builds_, &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseProgram(cl_program program)
{
    ENTER(clReleaseProgram);
    cl_int r;
    FORWARD(r, clReleaseProgram, program);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[CLSHIM_PROGRAM], &g);
    return r;
}

CL_API_ENTRY cl_kernel CL_API_CALL clCreateKernel(cl_program program, const char *kernel_name,
                                                  cl_int *errcode_ret)
{
    ENTER_CREATE(clCreateKernel);
    cl_kernel r;
    FORWARD(r, clCreateKernel, program, kernel_name, errcode_ret);
    if (r)
        clshim_bump_(&clshim_obj_created_[CLSHIM_KERNEL], &g);
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
        atomic_fetch_add(&clshim_obj_created_[CLSHIM_KERNEL], got);
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
    const size_t cap = clshim_wg_cap_();
    if (r == CL_SUCCESS && cap && param_name == CL_KERNEL_WORK_GROUP_SIZE && param_value &&
        *(size_t *)param_value > cap)
        *(size_t *)param_value = cap;
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clRetainKernel(cl_kernel kernel)
{
    ENTER(clRetainKernel);
    cl_int r;
    FORWARD(r, clRetainKernel, kernel);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_created_[CLSHIM_KERNEL], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseKernel(cl_kernel kernel)
{
    ENTER(clReleaseKernel);
    cl_int r;
    FORWARD(r, clReleaseKernel, kernel);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[CLSHIM_KERNEL], &g);
    return r;
}

/* ---- events ------------------------------------------------------------------------------ */

CL_API_ENTRY cl_int CL_API_CALL clWaitForEvents(cl_uint num_events, const cl_event *event_list)
{
    ENTER(clWaitForEvents);
    clshim_bump_(&clshim_n_blocking_, &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_EVENT], &g);
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
        clshim_bump_(&clshim_obj_created_[CLSHIM_EVENT], &g);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clReleaseEvent(cl_event event)
{
    ENTER(clReleaseEvent);
    cl_int r;
    FORWARD(r, clReleaseEvent, event);
    if (r == CL_SUCCESS)
        clshim_bump_(&clshim_obj_released_[CLSHIM_EVENT], &g);
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
    clshim_bump_(&clshim_n_blocking_, &g);
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
        clshim_bump_(&clshim_n_blocking_, &g);
    cl_int r;
    FORWARD(r, clEnqueueReadBuffer, command_queue, buffer, blocking_read, offset, size, ptr,
            num_events_in_wait_list, event_wait_list, event);
    clshim_note_event_(&g, r, event);
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
        clshim_bump_(&clshim_n_blocking_, &g);
    cl_int r;
    FORWARD(r, clEnqueueReadBufferRect, command_queue, buffer, blocking_read, buffer_origin,
            host_origin, region, buffer_row_pitch, buffer_slice_pitch, host_row_pitch,
            host_slice_pitch, ptr, num_events_in_wait_list, event_wait_list, event);
    clshim_note_event_(&g, r, event);
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
        clshim_bump_(&clshim_n_blocking_, &g);
    cl_int r;
    FORWARD(r, clEnqueueWriteBuffer, command_queue, buffer, blocking_write, offset, size, ptr,
            num_events_in_wait_list, event_wait_list, event);
    clshim_note_event_(&g, r, event);
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
        clshim_bump_(&clshim_n_blocking_, &g);
    cl_int r;
    FORWARD(r, clEnqueueWriteBufferRect, command_queue, buffer, blocking_write, buffer_origin,
            host_origin, region, buffer_row_pitch, buffer_slice_pitch, host_row_pitch,
            host_slice_pitch, ptr, num_events_in_wait_list, event_wait_list, event);
    clshim_note_event_(&g, r, event);
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
    uint_fast64_t was = atomic_load(&clshim_max_fill_);
    while (g.count && size > was && !atomic_compare_exchange_weak(&clshim_max_fill_, &was, size))
        ;
    cl_int r;
    FORWARD(r, clEnqueueFillBuffer, command_queue, buffer, pattern, pattern_size, offset, size,
            num_events_in_wait_list, event_wait_list, event);
    clshim_note_event_(&g, r, event);
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
    clshim_note_event_(&g, r, event);
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
    clshim_note_event_(&g, r, event);
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
        clshim_bump_(&clshim_n_blocking_, &g);
    cl_int err = CL_SUCCESS;
    void *r;
    FORWARD(r, clEnqueueMapBuffer, command_queue, buffer, blocking_map, map_flags, offset, size,
            num_events_in_wait_list, event_wait_list, event, &err);
    if (errcode_ret)
        *errcode_ret = err;
    clshim_note_event_(&g, err, event);
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
    clshim_note_event_(&g, r, event);
    return r;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(
    cl_command_queue command_queue, cl_kernel kernel, cl_uint work_dim,
    const size_t *global_work_offset, const size_t *global_work_size,
    const size_t *local_work_size, cl_uint num_events_in_wait_list,
    const cl_event *event_wait_list, cl_event *event)
{
    ENTER(clEnqueueNDRangeKernel);
    clshim_note_local_(local_work_size);
    cl_int r;
    FORWARD(r, clEnqueueNDRangeKernel, command_queue, kernel, work_dim, global_work_offset,
            global_work_size, local_work_size, num_events_in_wait_list, event_wait_list, event);
    clshim_note_event_(&g, r, event);
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
    clshim_note_event_(&g, r, event);
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
    clshim_note_event_(&g, r, event);
    return r;
}
