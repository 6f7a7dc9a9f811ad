/* SPDX-License-Identifier: MIT */
/*
 * test_two_platforms: device selection with PoCL and Oclgrind registered together (CTest
 * gives it a private OCL_ICD_VENDORS folder with both; skipped where either is missing).
 * Oclgrind, a simulator, reports itself as CPU, GPU and accelerator at once: the default
 * rules and "cpu" take PoCL's CPU device (devices of one type first; the simulator was taken
 * as "the first GPU"), "gpu" the only device that claims to be one, and a name finds either.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "clopt.h"

/* The name of the device `selector` picks (asserted to succeed) into name. */
static void picked(const char *selector, char *name, size_t cap)
{
    char why[1024];
    clopt_ctx *ctx = NULL;
    const clopt_status s = clopt_ctx_create_device_ex(selector, &ctx, why, sizeof why);
    if (s != CLOPT_SUCCESS)
        fail_msg("selector \"%s\": %s (%s)", selector, clopt_status_name(s), why);
    strncpy(name, clopt_ctx_device_name(ctx), cap - 1);
    name[cap - 1] = '\0';
    clopt_ctx_destroy(ctx);
}

static void test_simulator_last(void **state)
{
    (void)state;
    char name[256];
    picked("", name, sizeof name);
    assert_null(strstr(name, "Oclgrind"));
    picked("cpu", name, sizeof name);
    assert_null(strstr(name, "Oclgrind"));
    picked("gpu", name, sizeof name);
    assert_non_null(strstr(name, "Oclgrind"));
    picked("oclgrind", name, sizeof name);
    assert_non_null(strstr(name, "Oclgrind"));
    picked("pocl", name, sizeof name);
    assert_null(strstr(name, "Oclgrind"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_simulator_last)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
