/* Per-device-type kernel tuning, as CLBlast keeps a table with a default.
 *
 * vector_width: floats per work-item (vloadN/vstoreN); work_group_size: 0 lets the driver pick.
 * The values were chosen from clopt-bench runs (bench/results/): on PoCL's CPU device wide
 * vectors and large work-groups let its work-group loop vectorise and amortise scheduling. */
#include "internal.h"

#include <string.h>

typedef struct tuning_row {
    cl_device_type type;
    const char *name_substring; /* NULL: any device of the type */
    clopt_tuning tuning;
} tuning_row;

static const tuning_row tuning_table[] = {
    {CL_DEVICE_TYPE_CPU, NULL, {16, 256}},
    {CL_DEVICE_TYPE_GPU, NULL, {4, 256}},
};

static const clopt_tuning tuning_default = {4, 0};

clopt_tuning clopt_default_tuning(cl_device_type type, const char *device_name)
{
    for (size_t i = 0; i < sizeof tuning_table / sizeof tuning_table[0]; i++) {
        const tuning_row *r = &tuning_table[i];
        if (!(type & r->type))
            continue;
        if (r->name_substring && (!device_name || !strstr(device_name, r->name_substring)))
            continue;
        return r->tuning;
    }
    return tuning_default;
}
