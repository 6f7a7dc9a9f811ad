/* SPDX-License-Identifier: MIT */
/* Shared by test_faults.c (the lives and their sweep, main) and test_faults_prepare.c (the
   sweep of clopt_optimizer_prepare in a fresh context). */
#ifndef CLOPT_TEST_FAULTS_H
#define CLOPT_TEST_FAULTS_H

#include <stdint.h>

#include "clshim.h"

/* totals over the whole test: runs in which the injected fault fired, and of those the ones
   where the operation returned an error or success; runs that leaked an OpenCL object;
   violations (see violation) */
extern uint64_t g_faults, g_failed, g_absorbed, g_leaks, g_errors;
/* a distinct call site hit: (life, operation, OpenCL function) */
void note_site(const char *life, const char *op, const char *fn);
/* A violation: fails the test at once, or with TEST_FAULTS_KEEP_GOING set is printed and
   counted (the test then fails at its end), to list every defect of a sweep in one run. */
__attribute__((format(printf, 1, 2))) void violation(const char *fmt, ...);
/* 1 when an OpenCL object the shim saw created was not released */
int leaked(void);

/* The shim off around the test's own OpenCL calls (not counted, never faulted). */
#define OWN(...)                                                                             \
    do {                                                                                     \
        int on_ = clshim_enabled();                                                          \
        clshim_enable(0);                                                                    \
        __VA_ARGS__;                                                                         \
        if (on_)                                                                             \
            clshim_enable(1);                                                                \
    } while (0)

void test_prepare_fresh_context(void **state);

#endif
